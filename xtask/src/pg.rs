//! PostgreSQL from the host through the client tools: where an environment's database is, how
//! to run `psql`/`pg_dump`/`pg_restore` against it with the password in the child's environment
//! (never on its command line), readiness probes and exact row counts.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use genesis_model::{self as model, Env, Password};
use genesis_settings::{MASK, Scheme, Secret, ServiceUrl, UrlProblem};
use serde::{Deserialize, Serialize};
use xshell::{Cmd, Shell};

use crate::util::{project_root, usage};

/// Seconds libpq waits for a connection before it gives up (`PGCONNECT_TIMEOUT`).
const CONNECT_TIMEOUT_S: &str = "3";

/// Where a [`Target`]'s address came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The model's host address of the environment's compose service.
    Model,
    /// A URL the user gave: `--url` or `DATABASE_URL`.
    Url(&'static str),
}

/// A database the host can reach: the connection parameters and the password, which only ever
/// travels in the child's `PGPASSWORD`.
#[derive(Clone, Debug)]
pub struct Target {
    pub env: Env,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    password: Option<Secret>,
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
                let password = dev_password(&project_root())?.map(|(secret, _)| secret);
                Ok(Target::model(env, compose.host_address, password))
            }
            (None, _) => match std::env::var("DATABASE_URL") {
                Ok(raw) if !raw.trim().is_empty() => Target::from_url(env, &raw, "DATABASE_URL"),
                _ => Err(usage(format!(
                    "{env} has no compose service (a managed server): set DATABASE_URL in the \
                     environment to its postgresql:// URL, or pass --url"
                ))),
            },
        }
    }

    fn model(env: Env, address: model::Address, password: Option<Secret>) -> Target {
        let db = env.database();
        Target {
            env,
            host: address.host.to_owned(),
            port: address.port,
            user: db.user.to_owned(),
            database: db.name.to_owned(),
            password,
            origin: Origin::Model,
        }
    }

    fn from_url(env: Env, raw: &str, var: &'static str) -> Result<Target> {
        let url = ServiceUrl::parse(raw, Scheme::Postgres).map_err(|problem| {
            let why = match problem {
                UrlProblem::Sqlite => "a SQLite URL; Genesis runs on PostgreSQL only".to_owned(),
                UrlProblem::WrongScheme { found, .. } => format!("a {found}:// URL"),
                UrlProblem::Malformed(why) => why.to_owned(),
            };
            usage(format!("{var} is not a usable postgresql:// URL: {why}"))
        })?;
        Ok(Target {
            env,
            host: url.host().to_owned(),
            port: url.port().unwrap_or(model::POSTGRES_PORT),
            user: url.user().to_owned(),
            database: url.database().to_owned(),
            password: url.password().cloned(),
            origin: Origin::Url(var),
        })
    }

    /// The same server, another database (the scratch database of a verification).
    pub fn with_database(&self, database: &str) -> Target {
        Target {
            database: database.to_owned(),
            ..self.clone()
        }
    }

    /// The libpq URI with the password masked: the only form that is ever printed.
    pub fn masked_url(&self) -> String {
        let secret = if self.password.is_some() {
            format!(":{MASK}")
        } else {
            String::new()
        };
        format!(
            "postgresql://{}{secret}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// Loopback addresses and Unix sockets: a database on this machine.
    pub fn is_local(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.starts_with('/')
            || host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `tool` (`psql`, `pg_dump`, `pg_restore`) aimed at this database through libpq's
    /// variables: the password in the child's `PGPASSWORD`, never on its command line, and
    /// never a prompt. (`pg_restore` still needs `-d` to restore into the database.)
    pub fn tool<'a>(&self, sh: &'a Shell, tool: &str) -> Cmd<'a> {
        let mut cmd = xshell::cmd!(sh, "{tool}")
            .env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.database)
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_S)
            .env("PGAPPNAME", "genesis-xtask")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .quiet();
        if let Some(password) = &self.password {
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
    NotYet(String),
}

/// psql's error, on one line.
fn psql_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "psql failed without a message".to_owned()
    } else {
        lines.join(" ")
    }
}

// ---- row counts ---------------------------------------------------------------------------

/// Exact row counts of every ordinary table outside the system schemas, as one JSON array on
/// one line (jsonb's output has no newlines), so that names with any character survive. `query_to_xml` runs a `count(*)` per table inside the
/// same statement, hence inside the caller's snapshot.
pub const ROW_COUNTS_SQL: &str = r#"select coalesce(jsonb_agg(jsonb_build_object('schema', n.nspname, 'table', c.relname, 'rows', (xpath('/row/n/text()', query_to_xml(format('select count(*) as n from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint) order by n.nspname, c.relname), '[]'::jsonb) from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r' and n.nspname <> 'information_schema' and n.nspname not like 'pg\_%'"#;

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

// ---- the dev password ---------------------------------------------------------------------

/// Where the dev password was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    Environment,
    File(PathBuf),
    /// Generated now and written to this file.
    Generated(PathBuf),
}

/// The dev database's password variable (`POSTGRES_PASSWORD`).
fn dev_password_var() -> &'static str {
    match model::DEV_DB.password {
        Password::FromEnv(var) => var,
        Password::Public(_) => unreachable!("the dev password is never public"),
    }
}

/// The dev password, as compose will see it: the process environment first, then `.env` in
/// `root` (compose reads that file for `${POSTGRES_PASSWORD}`).
pub fn dev_password(root: &Path) -> Result<Option<(Secret, PasswordSource)>> {
    let var = dev_password_var();
    if let Some(value) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Ok(Some((Secret::new(value), PasswordSource::Environment)));
    }
    let path = root.join(".env");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(anyhow::Error::new(err).context(format!("read {}", path.display()))),
    };
    let entries = genesis_settings::parse_env_file(&path, &text)
        .map_err(|err| usage(format!("{err}: fix the line (compose reads this file too)")))?;
    match entries.into_iter().find(|e| e.key == var) {
        Some(entry) if !entry.value.is_empty() => {
            Ok(Some((Secret::new(entry.value), PasswordSource::File(path))))
        }
        Some(entry) => Err(usage(format!(
            "{}:{}: {var} is empty: remove the line to have one generated, or set a password",
            path.display(),
            entry.line
        ))),
        None => Ok(None),
    }
}

/// The dev password, generated into `root/.env` (owner-only permissions) when neither the
/// environment nor `.env` has one. An existing `.env` is appended to, never rewritten.
pub fn ensure_dev_password(root: &Path) -> Result<(Secret, PasswordSource)> {
    if let Some(found) = dev_password(root)? {
        return Ok(found);
    }
    let var = dev_password_var();
    let password = random_hex(24)?;
    let path = root.join(".env");
    let existing = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(anyhow::Error::new(err).context(format!("read {}", path.display()))),
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // `mode` only applies to a new file: an existing one now holds a secret too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {} to its owner", path.display()))?;
    let mut text = String::new();
    if existing
        .as_ref()
        .is_some_and(|b| !b.is_empty() && !b.ends_with(b"\n"))
    {
        text.push('\n');
    }
    text.push_str(&format!(
        "# The dev database's password, generated by `cargo xtask db-up --env dev`. Never commit it.\n{var}={password}\n"
    ));
    file.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    Ok((Secret::new(password), PasswordSource::Generated(path)))
}

/// `bytes` random bytes from the kernel, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-pg-{name}-{}", random_hex(4).unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    // These tests read the process environment; they only hold when POSTGRES_PASSWORD is unset.
    fn env_has_password() -> bool {
        std::env::var_os(dev_password_var()).is_some_and(|v| !v.is_empty())
    }

    #[test]
    fn generates_the_dev_password_into_a_private_dotenv() {
        if env_has_password() {
            return;
        }
        let root = temp_root("new");
        let (secret, source) = ensure_dev_password(&root).unwrap();
        let path = root.join(".env");
        assert_eq!(source, PasswordSource::Generated(path.clone()));
        assert_eq!(secret.expose().len(), 48);
        assert_eq!(mode(&path), 0o600);
        // The second call finds it and changes nothing.
        let before = std::fs::read_to_string(&path).unwrap();
        let (again, source) = ensure_dev_password(&root).unwrap();
        assert_eq!(again, secret);
        assert_eq!(source, PasswordSource::File(path.clone()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn appends_to_an_existing_dotenv_and_tightens_it() {
        if env_has_password() {
            return;
        }
        let root = temp_root("append");
        let path = root.join(".env");
        std::fs::write(&path, "OTHER=1").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (secret, _) = ensure_dev_password(&root).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("OTHER=1\n# "), "{text}");
        assert!(text.ends_with(&format!("POSTGRES_PASSWORD={}\n", secret.expose())));
        assert_eq!(mode(&path), 0o600);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn refuses_a_malformed_or_empty_dotenv() {
        if env_has_password() {
            return;
        }
        let root = temp_root("bad");
        let path = root.join(".env");
        std::fs::write(&path, "A=1\nnot a pair\n").unwrap();
        let err = ensure_dev_password(&root).unwrap_err().to_string();
        assert!(err.contains(".env:2: expected KEY=VALUE"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=1\nnot a pair\n");
        std::fs::write(&path, "POSTGRES_PASSWORD=\n").unwrap();
        let err = ensure_dev_password(&root).unwrap_err().to_string();
        assert!(err.contains(".env:1: POSTGRES_PASSWORD is empty"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn targets_print_masked_and_know_whether_they_are_local() {
        let test = Target::resolve(Env::Test, None).unwrap();
        assert_eq!(
            test.masked_url(),
            "postgresql://test_user:***@localhost:5433/test_db"
        );
        assert!(test.is_local());
        let remote = Target::resolve(
            Env::Prod,
            Some("postgresql+asyncpg://u:s3cret@db.example.com/prod"),
        )
        .unwrap();
        assert_eq!(
            remote.masked_url(),
            "postgresql://u:***@db.example.com:5432/prod"
        );
        assert!(!remote.is_local());
        for local in ["127.0.0.1", "[::1]", "LOCALHOST"] {
            let t =
                Target::resolve(Env::Dev, Some(&format!("postgresql://u:p@{local}:5/d"))).unwrap();
            assert!(t.is_local(), "{local}");
        }
        let err = Target::resolve(Env::Test, Some("sqlite:///x.db")).unwrap_err();
        assert!(err.to_string().contains("SQLite"), "{err}");
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
