//! PostgreSQL from the host through the client tools: where an environment's database is, how
//! to run `psql`/`pg_dump`/`pg_restore` against it (the connection as libpq reads it, the
//! password only in the child's environment, no inherited `PG*` variable), whether a target is
//! local or production, readiness probes and exact row counts.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use genesis_model::{self as model, Env, Password};
use genesis_settings::{Scheme, Secret, ServiceUrl, UrlProblem};
use serde::{Deserialize, Serialize};
use xshell::{Cmd, Shell, cmd};

use crate::tools::child::{OnOurDeath, tied};
pub use crate::tools::devpass::{PasswordSource, ensure_dev_password_here as ensure_dev_password};
use crate::tools::util::{check_failed, one_line, project_root, usage};

/// Seconds libpq waits for a connection before it gives up (`connect_timeout`), unless the URL
/// says otherwise.
const CONNECT_TIMEOUT_S: &str = "3";

/// libpq parameters that hold a secret: they would land on the command line, so a URL with one
/// is refused rather than passed on.
const SECRET_PARAMS: &[&str] = &["sslpassword"];

/// Where a [`Target`]'s address came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The model's host address of the environment's compose service.
    Model,
    /// A URL the user gave: `--url` or `DATABASE_URL`.
    Url(&'static str),
}

/// A database the host can reach: the connection as libpq reads it. The password only ever
/// travels in the child's `PGPASSWORD`.
#[derive(Clone, Debug)]
pub struct Target {
    pub env: Env,
    pub user: String,
    pub database: String,
    url: ServiceUrl,
    pub origin: Origin,
}

impl Target {
    /// The database of `env` as the host sees it. Test and dev are the compose services at the
    /// model's host addresses; production is whatever `DATABASE_URL` says. `url` overrides both.
    /// For dev, the password comes from `POSTGRES_PASSWORD` or the git-ignored `.env`.
    pub fn resolve(env: Env, url: Option<&str>) -> Result<Target> {
        if let Some(raw) = url {
            return Target::from_url(env, raw, "--url");
        }
        let db = env.database();
        match (db.compose(), db.password) {
            (Some(compose), Password::Public(password)) => Ok(Target::model(
                env,
                compose.host_address,
                Some(Secret::new(password)),
            )),
            (Some(compose), Password::FromEnv(_)) => {
                let password = crate::tools::devpass::dev_password(
                    &project_root(),
                    &crate::tools::devpass::process_env,
                )?
                .map(|(secret, _)| secret);
                Ok(Target::model(env, compose.host_address, password))
            }
            (None, _) => match std::env::var(model::DATABASE_URL_VAR) {
                Ok(raw) if !raw.trim().is_empty() => {
                    Target::from_url(env, &raw, model::DATABASE_URL_VAR)
                }
                _ => Err(usage(format!(
                    "{env} has no compose service (a managed server): set DATABASE_URL in the \
                     environment to its postgresql:// URL, or pass --url"
                ))),
            },
        }
    }

    fn model(env: Env, address: model::Address, password: Option<Secret>) -> Target {
        let db = env.database();
        let url = ServiceUrl::postgres(address.host, address.port, db.user, db.name, password);
        Target {
            env,
            user: db.user.to_owned(),
            database: db.name.to_owned(),
            url,
            origin: Origin::Model,
        }
    }

    fn from_url(env: Env, raw: &str, var: &'static str) -> Result<Target> {
        let url = ServiceUrl::parse(raw, Scheme::Postgres).map_err(|problem| {
            let why = match problem {
                UrlProblem::Sqlite => "a SQLite URL; Genesis runs on PostgreSQL only".to_owned(),
                UrlProblem::WrongScheme { found, .. } => format!("a {found}:// URL"),
                UrlProblem::Malformed(why) => why,
            };
            usage(format!("{var} is not a usable postgresql:// URL: {why}"))
        })?;
        if let Some((key, _)) = url
            .params()
            .iter()
            .find(|(k, _)| SECRET_PARAMS.contains(&k.as_str()))
        {
            return Err(usage(format!(
                "{var} holds {key}, which the client tools could only get on their command \
                 line: give it through a service file instead"
            )));
        }
        Ok(Target {
            env,
            user: url.user().to_owned(),
            database: url.database().to_owned(),
            url,
            origin: Origin::Url(var),
        })
    }

    /// The same server, another database (the scratch database of a verification).
    pub fn with_database(&self, database: &str) -> Target {
        Target {
            database: database.to_owned(),
            url: self.url.with_database(database),
            ..self.clone()
        }
    }

    /// The same single-host target on another port (a stack's discovered host port).
    pub fn set_port(&mut self, port: u16) {
        let host = self.url.host().to_owned();
        self.url = self.url.with_address(&host, port);
    }

    /// The full URI, password included: only ever handed to a child through its environment
    /// (the application's `DATABASE_URL`), never printed or put on a command line.
    pub fn exposed_url(&self) -> String {
        self.url.expose()
    }

    /// The libpq URI with the password masked: the only form that is ever printed.
    pub fn masked_url(&self) -> String {
        self.url.to_string()
    }

    /// Whether libpq will connect to this machine: through a Unix socket, or to a loopback
    /// address. With `hostaddr`, libpq connects to those addresses whatever the host names say.
    pub fn is_local(&self) -> bool {
        let addresses: Vec<&str> = match self.url.param("hostaddr") {
            Some(list) => list.split(',').collect(),
            None => self.url.hosts().iter().map(String::as_str).collect(),
        };
        addresses.iter().all(|host| {
            host.is_empty()
                || host.starts_with('/')
                || host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    }

    /// Why this connection is production's, whatever label it was given: the production
    /// model's database or user, or a host of the production `DATABASE_URL` (the one in
    /// `env` when `ENVIRONMENT` is production, or one naming the production database or user).
    pub fn production_reason(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let prod = model::PROD_DB;
        if self.database == prod.name {
            return Some(format!("its database is {}", prod.name));
        }
        if self.user == prod.user {
            return Some(format!("its user is {}", prod.user));
        }
        let raw = env(model::DATABASE_URL_VAR)?;
        let url = ServiceUrl::parse(&raw, Scheme::Postgres).ok()?;
        let labelled = env(model::ENVIRONMENT_VAR)
            .and_then(|e| Env::parse(&e))
            .is_some_and(|e| e == Env::Prod);
        let is_prod = labelled || url.database() == prod.name || url.user() == prod.user;
        let shared = url.hosts().iter().find(|h| {
            self.url
                .hosts()
                .iter()
                .any(|mine| mine.eq_ignore_ascii_case(h))
        });
        match (is_prod, shared) {
            (true, Some(host)) if !host.starts_with('/') && host != "localhost" => {
                Some(format!("its host {host} is the production DATABASE_URL's"))
            }
            _ => None,
        }
    }

    /// The connection as a libpq keyword/value string, without the password: what the client
    /// tools get as `--dbname`, so that every parameter the URL holds reaches them as libpq
    /// read it, and nothing is expanded a second time.
    fn conninfo(&self) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut parts: Vec<String> = Vec::new();
        if !self.url.hosts().is_empty() {
            parts.push(format!("host={}", quote(&self.url.hosts().join(","))));
        }
        if !self.url.ports().is_empty() {
            let ports: Vec<String> = self
                .url
                .ports()
                .iter()
                .map(|p| p.map(|p| p.to_string()).unwrap_or_default())
                .collect();
            parts.push(format!("port={}", quote(&ports.join(","))));
        }
        if !self.user.is_empty() {
            parts.push(format!("user={}", quote(&self.user)));
        }
        parts.push(format!("dbname={}", quote(&self.database)));
        for (key, value) in self.url.params() {
            parts.push(format!("{key}={}", quote(value)));
        }
        if self.url.param("connect_timeout").is_none() {
            parts.push(format!("connect_timeout={CONNECT_TIMEOUT_S}"));
        }
        parts.push("fallback_application_name=genesis-xtask".to_owned());
        parts.join(" ")
    }

    /// `tool` (`psql`, `pg_dump`, `pg_restore`) aimed at this database: the connection as
    /// `--dbname`, the password in the child's `PGPASSWORD`, never on its command line, never a
    /// prompt, and every `PG*` variable of this process's environment removed, so that none
    /// (`PGHOSTADDR`, `PGSSLMODE`, `PGSERVICE`, ...) changes where or how it connects.
    pub fn tool<'a>(&self, sh: &'a Shell, tool: &str) -> Cmd<'a> {
        let program = program(sh, tool);
        let mut cmd = tied(sh, program, OnOurDeath::Kill).quiet();
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd = cmd.env_remove(key);
            }
        }
        cmd = cmd.arg(format!("--dbname={}", self.conninfo()));
        if let Some(password) = self.url.password() {
            cmd = cmd.env("PGPASSWORD", password.expose()).secret();
        }
        cmd
    }
    /// `psql` without the user's `.psqlrc`, unaligned and tuples only, stopping on the first error.
    pub fn psql<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        self.tool(sh, "psql")
            .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
    }

    /// Runs one SQL statement and returns its output, trimmed. The error carries psql's own
    /// message (psql never sees the password on its command line, so it cannot print it).
    pub fn query(&self, sh: &Shell, sql: &str) -> Result<String> {
        let out = self.psql(sh).arg("-c").arg(sql).ignore_status().output()?;
        if !out.status.success() {
            anyhow::bail!("{}", psql_error(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// One readiness probe: a real connection as the app's role to the app's database.
    pub fn probe(&self, sh: &Shell) -> Probe {
        match self
            .psql(sh)
            .args(["-c", "select 1"])
            .ignore_status()
            .output()
        {
            Ok(out)
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" =>
            {
                Probe::Ready
            }
            Ok(out) => {
                let why = psql_error(&out.stderr);
                if why.contains("password authentication failed") {
                    Probe::AuthFailed(why)
                } else if why.contains("database") && why.contains("does not exist") {
                    // Over TCP the server answers only once its initialisation is done, so
                    // the database is not about to appear (a reset killed after its drop).
                    Probe::Missing(why)
                } else {
                    Probe::NotYet(why)
                }
            }
            Err(err) => Probe::NotYet(err.to_string()),
        }
    }

    /// `server_version` and its major number (`server_version_num / 10000`).
    pub fn server_version(&self, sh: &Shell) -> Result<(String, u32)> {
        let out = self.query(sh, "select current_setting('server_version') || '|' || current_setting('server_version_num')")?;
        let (version, num) = out
            .split_once('|')
            .context("unexpected answer to `show server_version`")?;
        let num: u32 = num
            .trim()
            .parse()
            .context("server_version_num is not a number")?;
        Ok((version.to_owned(), num / 10_000))
    }
}

/// What one readiness probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Ready,
    /// The server answered and refused the password: waiting longer will not help.
    AuthFailed(String),
    /// The server answered that the database does not exist.
    Missing(String),
    NotYet(String),
}

/// The program that runs `tool`. Debian's `/usr/bin/psql` (and `pg_dump`, ...) is
/// `pg_wrapper`, a Perl script that picks a version and then runs it: 30 to 80 ms per call,
/// paid by every probe of a start. The version it picks is the one `tool --version` reports
/// through it, so that version's binary is run directly; anything else is run as found.
pub fn program(sh: &Shell, tool: &str) -> String {
    await_prefetch(tool);
    program_now(sh, tool)
}

/// Started by [`prefetch`], joined by the first caller that needs the answer.
static PREFETCHED: std::sync::Mutex<Vec<(String, std::thread::JoinHandle<()>)>> =
    std::sync::Mutex::new(Vec::new());

/// Finds `tool` on the PATH now and asks its version (and the program to run) in the
/// background: through Debian's `pg_wrapper` that costs 40 ms or more, which a command that
/// starts a container pays while compose works instead of before. A tool that is missing is
/// refused here, before anything starts; one that does not run is refused when first used.
pub fn prefetch(tool: &'static str) -> Result<()> {
    which::which(tool).map_err(|_| {
        usage(format!(
            "`{tool}` is not installed: `apt-get install postgresql-client` (version 15 or newer)"
        ))
    })?;
    let handle = std::thread::spawn(move || {
        if let Ok(sh) = Shell::new() {
            let _ = program_now(&sh, tool);
        }
    });
    if let Ok(mut pending) = PREFETCHED.lock() {
        pending.push((tool.to_owned(), handle));
    }
    Ok(())
}

fn await_prefetch(tool: &str) {
    let handle = PREFETCHED.lock().ok().and_then(|mut pending| {
        let at = pending.iter().position(|(t, _)| t == tool)?;
        Some(pending.remove(at).1)
    });
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

fn program_now(sh: &Shell, tool: &str) -> String {
    static PROGRAMS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    if let Ok(programs) = PROGRAMS.lock()
        && let Some((_, program)) = programs.iter().find(|(t, _)| t == tool)
    {
        return program.clone();
    }
    let wrapped = which::which(tool)
        .ok()
        .and_then(|path| std::fs::canonicalize(path).ok())
        .is_some_and(|path| path.file_name().is_some_and(|name| name == "pg_wrapper"));
    let direct = wrapped
        .then(|| pg_tool_now(sh, tool).ok())
        .flatten()
        .map(|(_, major)| format!("/usr/lib/postgresql/{major}/bin/{tool}"))
        .filter(|path| std::path::Path::new(path).is_file());
    let program = direct.unwrap_or_else(|| tool.to_owned());
    if let Ok(mut programs) = PROGRAMS.lock() {
        programs.push((tool.to_owned(), program.clone()));
    }
    program
}

/// psql's error, on one line.
fn psql_error(stderr: &[u8]) -> String {
    let line = one_line(stderr);
    if line.is_empty() {
        "psql failed without a message".to_owned()
    } else {
        line
    }
}

// ---- row counts ---------------------------------------------------------------------------

/// Exact row counts of every ordinary table outside the system schemas, as one JSON array on
/// one line (jsonb's output has no newlines), so that names with any character survive. `query_to_xml` runs a `count(*)` per table inside the
/// same statement, hence inside the caller's snapshot.
pub const ROW_COUNTS_SQL: &str = r#"select coalesce(jsonb_agg(jsonb_build_object('schema', n.nspname, 'table', c.relname, 'rows', (xpath('/row/n/text()', query_to_xml(format('select count(*) as n from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint) order by n.nspname, c.relname), '[]'::jsonb) from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r' and n.nspname <> 'information_schema' and n.nspname not like 'pg\_%'"#;

/// What a database is, beyond its name, as one line `SERVER|SCHEMA`: the cluster's system
/// identifier (set by `initdb`: one server, whatever port it is published on) and the latest
/// migration in `schema_migrations` (empty when there is none, or no such table).
pub const IDENTITY_SQL: &str = r#"select (select system_identifier::text from pg_catalog.pg_control_system()) || '|' || coalesce(case when pg_catalog.to_regclass('public.schema_migrations') is null then null else (pg_catalog.xpath('/row/v/text()', pg_catalog.query_to_xml('select max(version) as v from public.schema_migrations', false, true, '')))[1]::text end, '')"#;

/// A database's server and schema, from [`IDENTITY_SQL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub server: String,
    /// The latest applied migration, if any.
    pub schema: Option<String>,
}

impl Identity {
    pub fn parse(line: &str) -> Result<Identity> {
        let (server, schema) = line
            .trim()
            .split_once('|')
            .with_context(|| format!("unexpected identity line {line:?}"))?;
        Ok(Identity {
            server: server.to_owned(),
            schema: (!schema.is_empty()).then(|| schema.to_owned()),
        })
    }

    pub fn of(sh: &Shell, target: &Target) -> Result<Identity> {
        Identity::parse(&target.query(sh, IDENTITY_SQL)?)
    }
}

/// One table's exact row count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

impl TableRows {
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

pub fn parse_row_counts(json: &str) -> Result<Vec<TableRows>> {
    serde_json::from_str(json.trim()).context("read the row counts")
}

/// The row counts of `target`'s database now.
pub fn row_counts(sh: &Shell, target: &Target) -> Result<Vec<TableRows>> {
    parse_row_counts(&target.query(sh, ROW_COUNTS_SQL)?)
}

/// Compares counts by table: `(table, expected, found)` for every table of `expected`.
pub fn compare_counts(
    expected: &[TableRows],
    found: &[TableRows],
) -> Vec<(String, i64, Option<i64>)> {
    let found: BTreeMap<(&str, &str), i64> = found
        .iter()
        .map(|t| ((t.schema.as_str(), t.table.as_str()), t.rows))
        .collect();
    expected
        .iter()
        .map(|t| {
            let got = found.get(&(t.schema.as_str(), t.table.as_str())).copied();
            (t.name(), t.rows, got)
        })
        .collect()
}

/// A PostgreSQL client tool (`psql`, `pg_dump`, `pg_restore`) and its major version.
pub fn pg_tool(sh: &Shell, tool: &str) -> Result<(String, u32)> {
    await_prefetch(tool);
    pg_tool_now(sh, tool)
}

fn pg_tool_now(sh: &Shell, tool: &str) -> Result<(String, u32)> {
    // Asked by the preflight and again to find the binary to run: once per command.
    static FOUND: std::sync::Mutex<Vec<(String, (String, u32))>> =
        std::sync::Mutex::new(Vec::new());
    if let Ok(found) = FOUND.lock()
        && let Some((_, known)) = found.iter().find(|(t, _)| t == tool)
    {
        return Ok(known.clone());
    }
    let fix = || {
        usage(format!(
            "`{tool}` is not installed: `apt-get install postgresql-client` (version 15 or newer)"
        ))
    };
    let out = cmd!(sh, "{tool} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .map_err(|_| fix())?;
    // `psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`
    let major = out
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(fix)?;
    let known = (out.trim().to_owned(), major);
    if let Ok(mut found) = FOUND.lock() {
        found.push((tool.to_owned(), known.clone()));
    }
    Ok(known)
}

/// The database `db-reset` connects to while it drops and recreates the target's.
pub const MAINTENANCE_DB: &str = "postgres";

/// A name written into SQL as a quoted identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates `target`'s database, owned by the connection's user, from the maintenance database
/// of the same server: the second half of a reset, and what a restore after a killed reset
/// needs first.
pub fn create_database(sh: &Shell, target: &Target) -> Result<()> {
    let server = target.with_database(MAINTENANCE_DB);
    let db = ident(&target.database);
    server
        .query(
            sh,
            &format!(
                "create database {db} owner {} template template0",
                ident(&target.user)
            ),
        )
        .map_err(|err| {
            check_failed(format!(
                "{} was dropped but could not be created again (through {MAINTENANCE_DB}): \
                 {err}; `cargo xtask db-reset` again once the cause is fixed",
                target.database
            ))
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_line_gives_the_server_and_the_schema() {
        assert_eq!(
            Identity::parse("7716128302135083024|2\n").unwrap(),
            Identity {
                server: "7716128302135083024".into(),
                schema: Some("2".into())
            }
        );
        assert_eq!(Identity::parse("77|").unwrap().schema, None);
        assert!(Identity::parse("no separator").is_err());
    }

    fn url_target(env: Env, raw: &str) -> Target {
        Target::resolve(env, Some(raw)).unwrap()
    }

    #[test]
    fn the_model_url_is_what_libpq_reads_from_its_text() {
        for env in [Env::Test, Env::Dev] {
            let db = env.database();
            let address = db.compose().unwrap().host_address;
            let raw = format!(
                "postgresql://{}@{}:{}/{}",
                db.user, address.host, address.port, db.name
            );
            let password = Some(Secret::new("p@ss word"));
            assert_eq!(
                ServiceUrl::postgres(
                    address.host,
                    address.port,
                    db.user,
                    db.name,
                    password.clone()
                ),
                ServiceUrl::parse(&raw, Scheme::Postgres)
                    .unwrap()
                    .with_password(password),
                "{env}"
            );
        }
    }

    #[test]
    fn targets_print_masked_and_know_whether_they_are_local() {
        let test = Target::resolve(Env::Test, None).unwrap();
        assert_eq!(
            test.masked_url(),
            "postgresql://test_user:***@localhost:5433/test_db"
        );
        assert!(test.is_local());
        let remote = url_target(
            Env::Prod,
            "postgresql+asyncpg://u:s3cret@db.example.com/prod",
        );
        assert_eq!(
            remote.masked_url(),
            "postgresql://u:***@db.example.com/prod"
        );
        assert!(!remote.is_local());
        for local in ["127.0.0.1", "[::1]", "LOCALHOST"] {
            let t = url_target(Env::Dev, &format!("postgresql://u:p@{local}:5/d"));
            assert!(t.is_local(), "{local}");
        }
        assert!(url_target(Env::Dev, "postgresql:///d?host=/var/run/postgresql").is_local());
        // libpq connects to hostaddr, whatever the host says.
        let t = url_target(Env::Dev, "postgresql://u@localhost/d?hostaddr=192.0.2.10");
        assert!(!t.is_local());
        let t = url_target(Env::Dev, "postgresql://u@localhost,db.example.com/d");
        assert!(!t.is_local());
        let err = Target::resolve(Env::Test, Some("sqlite:///x.db")).unwrap_err();
        assert!(err.to_string().contains("SQLite"), "{err}");
    }

    #[test]
    fn production_is_recognised_by_the_connection_not_the_label() {
        let none = |_: &str| None;
        let t = url_target(Env::Dev, "postgresql://u@localhost:6000/genesis_ai_prod");
        assert_eq!(
            t.production_reason(&none).as_deref(),
            Some("its database is genesis_ai_prod")
        );
        let t = url_target(Env::Dev, "postgresql://genesis_prod_user@localhost/x");
        assert!(t.production_reason(&none).is_some());
        let prod_env = |k: &str| match k {
            "DATABASE_URL" => Some("postgresql://a:b@db.cloud.example/app".to_owned()),
            "ENVIRONMENT" => Some("production".to_owned()),
            _ => None,
        };
        let t = url_target(Env::Test, "postgresql://u@DB.cloud.example/other");
        assert_eq!(
            t.production_reason(&prod_env).as_deref(),
            Some("its host db.cloud.example is the production DATABASE_URL's")
        );
        let t = url_target(Env::Test, "postgresql://u@localhost/other");
        assert_eq!(t.production_reason(&prod_env), None);
    }

    #[test]
    fn tools_get_the_decoded_connection_and_no_password_in_argv() {
        let t = url_target(
            Env::Dev,
            "postgresql://us%27er:p%40ss%3A%25@[::1]:5501,h2/d%20b?sslmode=verify-full&sslrootcert=%2Fca%20x.pem",
        );
        assert_eq!(
            t.conninfo(),
            "host='::1,h2' port='5501,' user='us\\'er' dbname='d b' sslmode='verify-full' \
             sslrootcert='/ca x.pem' connect_timeout=3 fallback_application_name=genesis-xtask"
        );
        let sh = Shell::new().unwrap();
        let shown = t.tool(&sh, "psql").to_string();
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        let err = Target::resolve(Env::Dev, Some("postgresql://u@h/d?sslpassword=x")).unwrap_err();
        assert!(err.to_string().contains("sslpassword"), "{err}");
    }

    /// libpq's own `PQconninfoParse` (the settings' URL oracle) reads the `--dbname` string
    /// the tools get as the target's decoded parts, whatever characters they hold.
    #[test]
    fn libpq_reads_the_conninfo_as_the_target() {
        use genesis_settings::libpq_oracle::Oracle;

        let Some(oracle) = Oracle::build() else {
            return;
        };
        let targets = [
            "postgresql://us%27er%5C:p%40ss@[::1]:5501,h2/d%20b%27%5C?sslmode=verify-full&sslrootcert=%2Fca%20x.pem",
            "postgresql://u@/genesis_db?host=/var/run/postgresql&application_name=a%20%27b%27",
            "postgresql://u@h/port%3D1%20dbname%3Dx?options=-c%20search_path%3D%22s%22",
        ];
        let targets: Vec<Target> = targets.iter().map(|u| url_target(Env::Dev, u)).collect();
        let conninfos: Vec<String> = targets.iter().map(Target::conninfo).collect();
        for (t, reading) in targets.iter().zip(oracle.read(&conninfos)) {
            let read =
                reading.unwrap_or_else(|err| panic!("libpq refuses {}: {err}", t.conninfo()));
            assert_eq!(read["host"], t.url.hosts().join(","));
            assert_eq!(read["user"], t.user);
            assert_eq!(read["dbname"], t.database);
            for (k, v) in t.url.params() {
                assert_eq!(&read[k], v, "{k}");
            }
            assert!(!read.contains_key("password"));
        }
    }

    #[test]
    fn compares_counts_by_table() {
        let t = |table: &str, rows| TableRows {
            schema: "public".into(),
            table: table.into(),
            rows,
        };
        let cmp = compare_counts(&[t("a", 1), t("b", 2)], &[t("b", 3), t("c", 4)]);
        assert_eq!(
            cmp,
            vec![
                ("public.a".to_owned(), 1, None),
                ("public.b".to_owned(), 2, Some(3))
            ]
        );
    }
}
