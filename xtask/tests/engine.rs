//! The database commands against the real Docker engine and PostgreSQL: `db-up`, `db-down`,
//! `db-status`, `db-logs`, `db-shell`, `db-backup`, `db-restore`, `migration status`,
//! `db-migrate` and `db-reset`, good cases and bad (an empty database included); and `test` interrupted half-way, by Ctrl-C and by `kill -9`.
//!
//! Every test works on a stack of this test binary's own (`GENESIS_STACK=engine<pid>`), with
//! ports the engine chooses, so a developer's default stack, another checkout's stacks and CI
//! jobs on the same engine are never touched. The tests share that stack, so they run one at a
//! time (the `ENGINE` lock), and each removes the whole stack when it ends.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use xshell::{Shell, cmd};

static ENGINE: Mutex<()> = Mutex::new(());

/// The lock, and on release the whole stack removed: containers, network and volumes.
struct Engine {
    _lock: MutexGuard<'static, ()>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let run = xtask(&["db-down", "--all", "--volumes"]);
        if run.code != 0 {
            eprintln!("warning: could not remove the test stack: {run:#?}");
        }
    }
}

fn engine() -> Engine {
    let lock = ENGINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Engine { _lock: lock }
}

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// `engine<pid>`, or the name in `GENESIS_ENGINE_STACK` (for a machine where each user may
/// only start stacks under names of their own).
fn stack() -> String {
    std::env::var("GENESIS_ENGINE_STACK")
        .unwrap_or_else(|_| format!("engine{}", std::process::id()))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success:\n{self:#?}");
        self
    }

    fn fails_with(self, code: i32, needles: &[&str]) -> Run {
        assert_eq!(self.code, code, "expected exit {code}:\n{self:#?}");
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}:\n{self:#?}"
            );
        }
        self
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The xtask on this binary's stack (`GENESIS_STACK` in `env` overrides it).
fn xtask_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let sh = Shell::new().unwrap();
    let mut command = cmd!(sh, "{XTASK} {args...}")
        .quiet()
        .ignore_status()
        .env("GENESIS_STACK", stack());
    for (key, value) in env {
        command = command.env(key, value);
    }
    if let Some(input) = stdin {
        command = command.stdin(input);
    }
    let out = command.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn xtask(args: &[&str]) -> Run {
    xtask_with(args, &[], None)
}

/// One SQL statement through psql (the URL is the test's own, never the xtask's output).
fn psql(url: &str, sql: &str) -> String {
    let sh = Shell::new().unwrap();
    cmd!(sh, "psql {url} -X -q -A -t -v ON_ERROR_STOP=1 -c {sql}")
        .quiet()
        .read()
        .unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// `db-status --json` of the test stack.
fn status() -> serde_json::Value {
    serde_json::from_str(&xtask(&["db-status", "--json"]).ok().stdout).unwrap()
}

fn service_status(service: &str) -> serde_json::Value {
    status()["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .unwrap()
        .clone()
}

/// The host port the engine chose for a service of the test stack.
fn port(service: &str) -> u16 {
    let status = service_status(service);
    let published = status["ports"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{service} publishes no port: {status}"));
    published
        .split("->")
        .next()
        .and_then(|host| host.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap()
}

fn running(service: &str) -> bool {
    service_status(service)["state"] == "running"
}

fn test_url_on(database: &str) -> String {
    format!(
        "postgresql://test_user:test_password@localhost:{}/{database}",
        port("test-db")
    )
}

fn test_url() -> String {
    test_url_on("test_db")
}

/// Every container, network and volume of the test stack's compose project, by name.
fn leftovers() -> Vec<String> {
    let project = status()["project"].as_str().unwrap().to_owned();
    let filter = format!("label=com.docker.compose.project={project}");
    let sh = Shell::new().unwrap();
    let mut left = Vec::new();
    for kind in [&["ps", "-a"][..], &["network", "ls"], &["volume", "ls"]] {
        let out = cmd!(sh, "docker {kind...} -q --filter {filter}")
            .quiet()
            .read()
            .unwrap();
        left.extend(out.lines().map(|l| format!("{} {l}", kind[0])));
    }
    left
}

/// A database of the test's own on the test-db server, dropped at the end.
struct OwnDatabase {
    name: String,
    admin: String,
}

impl OwnDatabase {
    fn create(prefix: &str) -> OwnDatabase {
        let name = unique(prefix);
        let admin = test_url();
        psql(&admin, &format!("create database {name}"));
        OwnDatabase { name, admin }
    }

    fn url(&self) -> String {
        test_url_on(&self.name)
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let sh = Shell::new().unwrap();
        let sql = format!("drop database if exists {} with (force)", self.name);
        let admin = &self.admin;
        let _ = cmd!(sh, "psql {admin} -X -q -c {sql}").quiet().run();
    }
}

// ---- preflight ----------------------------------------------------------------------------

#[test]
fn an_unreachable_docker_daemon_is_a_missing_prerequisite_with_the_fix() {
    let _engine = engine();
    for args in [&["db-up"][..], &["db-down"], &["db-status"], &["db-logs"]] {
        xtask_with(args, &[("DOCKER_HOST", "unix:///nonexistent.sock")], None).fails_with(
            2,
            &[
                "Docker daemon at unix:///nonexistent.sock does not answer",
                "start it",
            ],
        );
    }
    // Nothing was touched.
    assert!(!running("test-db"));
}

#[test]
fn production_has_no_compose_service_and_a_stack_name_is_checked() {
    let _engine = engine();
    for args in [
        &["db-up", "--env", "prod"][..],
        &["db-down", "--env", "prod"],
    ] {
        xtask(args).fails_with(2, &["no compose service", "managed PostgreSQL server"]);
    }
    xtask(&["db-status", "--stack", "Not/A/Name"]).fails_with(2, &["is not a stack name"]);
    // An empty or non-ASCII name is refused too, never read as the default stack, over
    // GENESIS_STACK or from it.
    for name in ["", "caf\u{e9}", " "] {
        xtask(&["db-status", "--stack", name])
            .fails_with(2, &["is not a stack name", "`default` selects"]);
        xtask_with(&["db-status"], &[("GENESIS_STACK", name)], None)
            .fails_with(2, &["is not a stack name"]);
    }
}

/// The default stack's fixed port, held by something else: the start is refused with whose it
/// is and how to choose another stack, and nothing starts. A developer's own default stack of
/// this checkout may hold it: then `db-up` is harmless and changes nothing.
#[test]
fn a_taken_default_port_is_named_and_nothing_starts() {
    let _engine = engine();
    let default = [("GENESIS_STACK", "default")];
    let status: serde_json::Value = serde_json::from_str(
        &xtask_with(&["db-status", "--json"], &default, None)
            .ok()
            .stdout,
    )
    .unwrap();
    let ours_running = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["service"] == "test-db" && s["state"] == "running");
    if ours_running {
        let before = xtask_with(&["db-status"], &default, None).ok().stdout;
        xtask_with(&["db-up"], &default, None).ok();
        assert_eq!(
            xtask_with(&["db-status"], &default, None).ok().stdout,
            before
        );
        return;
    }
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 5433)) {
        Ok(listener) => {
            xtask_with(&["db-up"], &default, None).fails_with(
                2,
                &[
                    "port 5433 is taken by another process",
                    "test-db",
                    "ss -ltnp",
                    "--stack NAME",
                ],
            );
            drop(listener);
        }
        // Another checkout's stack, or another container, holds it.
        Err(_) => {
            xtask_with(&["db-up"], &default, None)
                .fails_with(2, &["port 5433 is published by", "--stack NAME"]);
        }
    }
    let after: serde_json::Value = serde_json::from_str(
        &xtask_with(&["db-status", "--json"], &default, None)
            .ok()
            .stdout,
    )
    .unwrap();
    assert!(
        after["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "absent"),
        "nothing may start: {after}"
    );
}

// ---- another checkout's stack -------------------------------------------------------------

/// A fresh `git clone` of this repository: another checkout, with stacks of its own.
struct Checkout {
    dir: PathBuf,
}

impl Checkout {
    fn clone_of_this_one(name: &str) -> Checkout {
        let dir = std::env::temp_dir().join(unique(&format!("genesis-checkout-{name}")));
        let sh = Shell::new().unwrap();
        let root = root();
        cmd!(sh, "git clone --quiet --no-hardlinks {root} {dir}")
            .quiet()
            .run()
            .unwrap();
        Checkout { dir }
    }

    /// The xtask (this build of it) run in that checkout, on its default stack: the workspace
    /// is found from the current folder, as for any `cargo xtask` there.
    fn xtask(&self, args: &[&str]) -> Run {
        let sh = Shell::new().unwrap();
        sh.change_dir(&self.dir);
        let out = cmd!(sh, "{XTASK} {args...}")
            .quiet()
            .ignore_status()
            .env_remove("CARGO_MANIFEST_DIR")
            .env("GENESIS_STACK", "default")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let run = self.xtask(&["db-down", "--all", "--volumes"]);
        if run.code != 0 {
            eprintln!("warning: could not remove the clone's stack: {run:#?}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every container publishing `port`, with when it started: what must not change.
fn publishers(port: u16) -> String {
    let sh = Shell::new().unwrap();
    let filter = format!("publish={port}");
    let ids = cmd!(sh, "docker ps -q --filter {filter}")
        .quiet()
        .read()
        .unwrap();
    let ids: Vec<&str> = ids.lines().collect();
    if ids.is_empty() {
        return String::new();
    }
    let format = "{{.Id}} {{.State.StartedAt}}";
    cmd!(sh, "docker inspect -f {format} {ids...}")
        .quiet()
        .read()
        .unwrap()
}

/// Checkout B's default stack holds the model's port; checkout A, whose own default stack does
/// not run, reads, writes and drops nothing of it: every database command refuses, naming the
/// port's holder. B's rows and containers are unchanged. Where the port is already held (a
/// developer's default stack, another checkout's), that holder plays B and is only looked at.
#[test]
fn a_checkout_never_uses_the_default_stack_of_another() {
    let _engine = engine();
    let a = Checkout::clone_of_this_one("a");
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 5433))
        .is_ok()
        .then(|| Checkout::clone_of_this_one("b"));
    let b_url = "postgresql://test_user:test_password@localhost:5433/test_db";
    if let Some(b) = &b {
        b.xtask(&["db-up"]).ok();
        psql(
            b_url,
            "create table b_rows (id int); insert into b_rows select generate_series(1, 42)",
        );
    }
    let before = publishers(5433);
    assert!(
        !before.is_empty() || b.is_none(),
        "B's test-db publishes 5433"
    );
    for args in [
        &["db-shell"][..],
        &["db-reset", "--yes"],
        &[
            "db-restore",
            "--yes",
            "--env",
            "test",
            "/nonexistent/any.dump",
        ],
        &["db-backup", "--env", "test"],
        &["migration", "status"],
        &["db-migrate"],
    ] {
        let run = a.xtask(args);
        let needles: &[&str] = if before.is_empty() {
            // Nothing holds the port any more: still refused, with the fix.
            &["test-db does not run on stack default", "cargo xtask db-up"]
        } else {
            &[
                "test-db does not run on stack default",
                "port 5433 is",
                "--stack NAME",
            ]
        };
        run.fails_with(2, needles);
    }
    assert_eq!(publishers(5433), before, "the port's holder is untouched");
    if b.is_some() {
        assert_eq!(psql(b_url, "select count(*) from b_rows"), "42");
        let shown = a.xtask(&["db-status", "--json"]).ok().stdout;
        assert!(
            !shown.contains("\"running\""),
            "A's own stack runs nothing: {shown}"
        );
    }
}

// ---- db-up, db-status, db-logs, db-shell ----------------------------------------------------

#[test]
fn db_up_waits_for_a_real_connection_and_is_harmless_twice() {
    let _engine = engine();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let run = xtask(&["db-up"]).ok();
        assert!(run.stdout.contains("test-db ready in "), "{run:#?}");
        let masked = format!(
            "postgresql://test_user:***@localhost:{}/test_db",
            port("test-db")
        );
        assert!(run.stdout.contains(&masked), "{run:#?}");
        assert!(
            run.stdout.contains("ports were chosen by the engine"),
            "{run:#?}"
        );
        assert!(
            !run.all().contains("test_password"),
            "the password was printed: {run:#?}"
        );
        assert_eq!(psql(&test_url(), "select 1"), "1");
        ports.push(port("test-db"));
    }
    assert_eq!(ports[0], ports[1], "the second db-up adopted the first's");

    let status = status();
    assert_eq!(status["stack"].as_str().unwrap(), stack());
    assert_eq!(
        status["checkout"].as_str().unwrap(),
        root().canonicalize().unwrap().to_str().unwrap()
    );
    let services = status["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    for name in ["test-db", "postgres", "redis", "genesis-api"] {
        assert!(names.contains(&name), "db-status lacks {name}: {names:?}");
    }
    let test_db = services.iter().find(|s| s["service"] == "test-db").unwrap();
    assert_eq!(test_db["state"], "running");
    assert_eq!(
        test_db["ports"][0],
        format!("127.0.0.1:{}->5432/tcp", ports[0])
    );
    // `db-up --env test` leaves no dev volume behind, under either compose flavour.
    assert_eq!(status["volumes"][0]["present"], false, "{status}");
    let table = xtask(&["db-status"]).ok();
    assert!(table.stdout.starts_with("stack "), "{table:#?}");
    assert!(table.stdout.contains("SERVICE"), "{table:#?}");

    // A line of our own in the server's log, whatever else the server logged before: a
    // connection to a database that does not exist is logged with the database's name.
    let marker = unique("genesis_log_marker");
    let sh = Shell::new().unwrap();
    let missing = test_url_on(&marker);
    let _ = cmd!(sh, "psql {missing} -X -c 'select 1'")
        .quiet()
        .ignore_stderr()
        .ignore_status()
        .run();
    let logs = xtask(&["db-logs", "--tail", "50", "test-db"]).ok();
    assert!(logs.stdout.contains(&marker), "{logs:#?}");
    xtask(&["db-logs", "no-such-service"]).fails_with(2, &["no service \"no-such-service\""]);

    let shell = xtask_with(&["db-shell"], &[], Some("select 'via ' || current_user;\n")).ok();
    assert!(shell.stdout.contains("via test_user"), "{shell:#?}");
    assert!(
        shell.stderr.contains(&format!(":{}/test_db", ports[0])),
        "{shell:#?}"
    );

    xtask(&["db-down", "--all"]).ok();
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

#[test]
fn redis_is_ready_when_it_answers_ping_and_leaves_no_volume() {
    let _engine = engine();
    let run = xtask(&["db-up", "--with", "redis"]).ok();
    assert!(run.stdout.contains("test-db ready in"), "{run:#?}");
    assert!(run.stdout.contains("redis ready in"), "{run:#?}");
    let url = format!("redis://localhost:{}/0", port("redis"));
    assert!(run.stdout.contains(&url), "{run:#?}");
    assert_eq!(service_status("redis")["state"], "running");
    // Down without `--volumes`: nothing of the stack is left, not even an anonymous volume.
    xtask(&["db-down", "--all"]).ok();
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

/// The dev password as compose sees it: the environment, else the git-ignored `.env`.
fn dev_password() -> String {
    if let Some(value) = std::env::var("POSTGRES_PASSWORD")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return value;
    }
    let path = root().join(".env");
    let text = std::fs::read_to_string(&path).unwrap();
    genesis_settings::parse_env_file(&path, &text)
        .unwrap()
        .into_iter()
        .find(|e| e.key == "POSTGRES_PASSWORD")
        .expect("db-up --env dev writes POSTGRES_PASSWORD")
        .value
}

#[test]
fn dev_data_survives_down_and_up_and_a_wrong_password_fails_fast() {
    let _engine = engine();
    let dotenv = root().join(".env");
    let had_password = std::env::var_os("POSTGRES_PASSWORD").is_some() || dotenv.exists();

    let up = xtask(&["db-up", "--env", "dev"]).ok();
    let password = dev_password();
    assert!(
        !up.all().contains(&password),
        "the dev password was printed: {up:#?}"
    );
    let dev_port = port("postgres");
    assert!(
        up.stdout.contains(&format!(
            "postgresql://genesis_user:***@localhost:{dev_port}/genesis_db"
        )),
        "{up:#?}"
    );
    if !had_password {
        assert!(up.stderr.contains("generated a password"), "{up:#?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dotenv).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, ".env must be owner-only");
    }
    let url =
        |port: u16| format!("postgresql://genesis_user:{password}@localhost:{port}/genesis_db");
    let table = unique("xtask_persist");
    psql(
        &url(dev_port),
        &format!("create table {table} (note text); insert into {table} values ('kept')"),
    );

    let volume = format!("{}_dev-data", status()["project"].as_str().unwrap());
    let down = xtask(&["db-down", "--env", "dev"]).ok();
    assert!(
        down.stdout
            .contains(&format!("data is kept in volume {volume}")),
        "{down:#?}"
    );
    assert!(!running("postgres"));
    xtask(&["db-up", "--env", "dev"]).ok();
    assert_eq!(
        psql(&url(port("postgres")), &format!("select note from {table}")),
        "kept"
    );

    // The volume holds another password than the one given: a clear error within seconds,
    // with the service's logs, instead of a minute of waiting.
    let wrong = xtask_with(
        &["db-up", "--env", "dev", "--timeout", "40"],
        &[("POSTGRES_PASSWORD", "not-the-volume-password")],
        None,
    )
    .fails_with(
        1,
        &[
            "refuses the password of genesis_user",
            "--volumes",
            "last 20 log lines of postgres",
        ],
    );
    assert!(
        !wrong.all().contains("not-the-volume-password"),
        "{wrong:#?}"
    );
    xtask(&["db-up", "--env", "dev"]).ok();

    let gone = xtask(&["db-down", "--env", "dev", "--volumes"]).ok();
    assert!(
        gone.stdout.contains(&format!("deleted volume {volume}")),
        "{gone:#?}"
    );
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

// ---- db-backup, db-restore ----------------------------------------------------------------

fn seed(url: &str) {
    psql(
        url,
        "create schema app; \
         create table app.users (id serial primary key, email text unique, doc jsonb); \
         insert into app.users (email, doc) select 'u' || g || '@example.com', jsonb_build_object('n', g) from generate_series(1, 300) g; \
         create table \"Odd | name\" (id int primary key, body text); \
         insert into \"Odd | name\" select g, repeat(md5(g::text), 20) from generate_series(1, 2000) g; \
         create table empty_one (id int)",
    );
}

fn count(url: &str, table: &str) -> i64 {
    psql(url, &format!("select count(*) from {table}"))
        .parse()
        .unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn backup(db: &OwnDatabase, file: &Path) -> Run {
    let url = db.url();
    xtask(&[
        "db-backup",
        "--env",
        "test",
        "--url",
        &url,
        "--output",
        file.to_str().unwrap(),
    ])
}

fn restore(db: &OwnDatabase, file: &Path) -> Run {
    let url = db.url();
    xtask(&[
        "db-restore",
        "--yes",
        "--env",
        "test",
        "--url",
        &url,
        file.to_str().unwrap(),
    ])
}

#[test]
fn a_backup_is_verified_and_restores_with_equal_row_counts() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let db = OwnDatabase::create("xtask_backup");
    seed(&db.url());
    let dir = temp_dir("xtask-backup");
    let file = dir.join("seeded.dump");

    let run = backup(&db, &file).ok();
    assert!(
        run.stdout.contains("verified header, table of contents"),
        "{run:#?}"
    );
    assert!(!run.all().contains("test_password"), "{run:#?}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["seeded.dump", "seeded.dump.meta.json"],
        "no partial file is left"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..5], b"PGDMP");
    for name in &names {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name} holds the database's data: owner-only");
    }

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("seeded.dump.meta.json")).unwrap())
            .unwrap();
    let sh = Shell::new().unwrap();
    let sum = cmd!(sh, "sha256sum {file}").quiet().read().unwrap();
    assert_eq!(meta["sha256"].as_str().unwrap(), &sum[..64]);
    assert_eq!(meta["size_bytes"].as_u64().unwrap(), bytes.len() as u64);
    assert!(
        meta["server_version"].as_str().unwrap().starts_with("15."),
        "{meta}"
    );
    assert_eq!(meta["env"], "test");
    assert_eq!(meta["database"].as_str().unwrap(), db.name);
    let tables: Vec<(String, i64)> = meta["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                format!(
                    "{}.{}",
                    t["schema"].as_str().unwrap(),
                    t["table"].as_str().unwrap()
                ),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        [
            ("app.users".to_owned(), 300),
            ("public.Odd | name".to_owned(), 2000),
            ("public.empty_one".to_owned(), 0)
        ]
    );

    // Restored over changed data: one transaction, and the counts of the dump come back.
    psql(
        &db.url(),
        "delete from app.users where id > 10; insert into empty_one values (1)",
    );
    // Not without `--yes` when there is no terminal to ask on; the refusal changes nothing.
    let url = db.url();
    xtask(&[
        "db-restore",
        "--env",
        "test",
        "--url",
        &url,
        file.to_str().unwrap(),
    ])
    .fails_with(
        2,
        &[
            "db-restore would overwrite",
            "pass --yes",
            "nothing was restored",
        ],
    );
    assert_eq!(count(&db.url(), "app.users"), 10);
    assert_eq!(count(&db.url(), "empty_one"), 1);
    let run = restore(&db, &file).ok();
    assert!(
        run.stdout.contains("row counts equal for 3 tables"),
        "{run:#?}"
    );
    assert_eq!(count(&db.url(), "app.users"), 300);
    assert_eq!(count(&db.url(), "empty_one"), 0);

    // And into a fresh database.
    let fresh = OwnDatabase::create("xtask_restore");
    restore(&fresh, &file).ok();
    assert_eq!(count(&fresh.url(), "\"Odd | name\""), 2000);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_dump_cut_short_or_with_crlf_line_endings_is_rejected_before_the_target_is_touched() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let db = OwnDatabase::create("xtask_corrupt");
    seed(&db.url());
    let dir = temp_dir("xtask-corrupt");
    let good = dir.join("good.dump");
    backup(&db, &good).ok();
    let bytes = std::fs::read(&good).unwrap();
    let sidecar = std::fs::read_to_string(dir.join("good.dump.meta.json")).unwrap();
    psql(&db.url(), "delete from app.users");

    let truncated = dir.join("truncated.dump");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let crlf = dir.join("crlf.dump");
    let mut rewritten = Vec::new();
    for &b in &bytes {
        if b == b'\n' {
            rewritten.push(b'\r');
        }
        rewritten.push(b);
    }
    std::fs::write(&crlf, &rewritten).unwrap();
    let checks = [
        (&truncated, "it is cut short"),
        (&crlf, "its line endings were rewritten"),
    ];
    for (file, why) in checks {
        let meta = format!("{}.meta.json", file.display());
        std::fs::write(&meta, &sidecar).unwrap();
        restore(&db, file).fails_with(
            1,
            &["does not match the checksum", why, "nothing was restored"],
        );
        // With a sidecar that matches the damaged file, the archive itself gives it away.
        let sh = Shell::new().unwrap();
        let sum = cmd!(sh, "sha256sum {file}").quiet().read().unwrap();
        let mut forged: serde_json::Value = serde_json::from_str(&sidecar).unwrap();
        forged["sha256"] = sum[..64].into();
        forged["size_bytes"] = std::fs::metadata(file).unwrap().len().into();
        std::fs::write(&meta, forged.to_string()).unwrap();
        let run = restore(&db, file);
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(
            run.stderr.contains("cannot be read to its end")
                || run.stderr.contains("unreadable table of contents"),
            "{run:#?}"
        );
    }
    assert_eq!(
        count(&db.url(), "app.users"),
        0,
        "the target was not touched"
    );

    // No sidecar: nothing to verify against.
    let orphan = dir.join("orphan.dump");
    std::fs::write(&orphan, &bytes).unwrap();
    restore(&db, &orphan).fails_with(2, &["orphan.dump.meta.json is missing"]);
    // Not a dump at all.
    let text = dir.join("text.dump");
    std::fs::write(&text, "select 1;\n").unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&sidecar).unwrap();
    let sh = Shell::new().unwrap();
    let sum = cmd!(sh, "sha256sum {text}").quiet().read().unwrap();
    meta["sha256"] = sum[..64].into();
    meta["size_bytes"] = 10.into();
    std::fs::write(dir.join("text.dump.meta.json"), meta.to_string()).unwrap();
    restore(&db, &text).fails_with(1, &["does not start with PGDMP"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_empty_database_backs_up_and_restores_and_its_dump_cut_short_is_still_rejected() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let db = OwnDatabase::create("xtask_empty");
    let dir = temp_dir("xtask-empty");
    let good = dir.join("empty.dump");
    let run = backup(&db, &good).ok();
    assert!(run.stdout.contains("row counts of 0 tables"), "{run:#?}");
    restore(&db, &good).ok();

    // Cut short, with a sidecar forged to match: the archive itself gives it away.
    let bytes = std::fs::read(&good).unwrap();
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("empty.dump.meta.json")).unwrap())
            .unwrap();
    let cut = dir.join("cut.dump");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let sh = Shell::new().unwrap();
    let sum = cmd!(sh, "sha256sum {cut}").quiet().read().unwrap();
    let mut forged = sidecar.clone();
    forged["sha256"] = sum[..64].into();
    forged["size_bytes"] = (bytes.len() - 3).into();
    std::fs::write(dir.join("cut.dump.meta.json"), forged.to_string()).unwrap();
    let run = restore(&db, &cut);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("cannot be read to its end")
            || run.stderr.contains("unreadable table of contents"),
        "{run:#?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn migrations_are_shown_applied_refused_when_edited_and_a_reset_is_backed_up() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let db = OwnDatabase::create("xtask_reset");
    let url = db.url();
    let status = |code: i32| {
        let run = xtask(&["migration", "status", "--url", &url, "--json"]);
        assert_eq!(run.code, code, "{run:#?}");
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        report["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["state"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let states = status(0);
    assert!(
        !states.is_empty() && states.iter().all(|s| s == "pending"),
        "{states:?}"
    );
    xtask(&["db-migrate", "--url", &url]).ok();
    assert!(status(0).iter().all(|s| s == "applied"));

    // An applied migration whose file no longer matches what was recorded.
    psql(
        &url,
        "update schema_migrations set checksum = 'old' where version = 1",
    );
    assert_eq!(status(1)[0], "edited");
    xtask(&["db-migrate", "--url", &url]).fails_with(1, &["nothing applied", "0001_"]);
    psql(&url, "truncate schema_migrations");

    // Without a terminal and without --yes, or aimed at production: nothing is touched.
    psql(
        &url,
        "create table hand_made (id int); insert into hand_made values (1), (2)",
    );
    xtask(&["db-reset", "--env", "dev", "--url", &url]).fails_with(2, &["pass --yes"]);
    xtask(&["db-reset", "--env", "prod", "--yes"]).fails_with(2, &["never resets production"]);
    let remote = "postgresql://u:p@db.example.com/x";
    xtask(&["db-reset", "--yes", "--url", remote]).fails_with(2, &["not on this machine"]);
    assert_eq!(count(&url, "hand_made"), 2);

    // Dev: a verified backup first, then the table is gone and the migrations are applied.
    let run = xtask(&["db-reset", "--env", "dev", "--yes", "--url", &url, "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let dump = PathBuf::from(report["backup"].as_str().unwrap());
    assert!(
        !report["applied"].as_array().unwrap().is_empty(),
        "{run:#?}"
    );
    assert_eq!(
        psql(&url, "select to_regclass('hand_made') is null"),
        "t",
        "the hand-made table survived the reset"
    );
    assert!(status(0).iter().all(|s| s == "applied"));
    let restored = xtask(&[
        "db-restore",
        "--yes",
        "--env",
        "dev",
        "--url",
        &url,
        dump.to_str().unwrap(),
    ]);
    let sidecar = PathBuf::from(format!("{}.meta.json", dump.display()));
    std::fs::remove_file(&dump).unwrap();
    std::fs::remove_file(&sidecar).unwrap();
    restored.ok();
    assert_eq!(count(&url, "hand_made"), 2);
}

#[test]
fn restore_refuses_production_and_remote_targets_unless_allowed() {
    let _engine = engine();
    let file = "/nonexistent/any.dump";
    xtask(&["db-restore", "--env", "prod", file])
        .fails_with(2, &["refusing to touch production", "--allow-production"]);
    xtask(&["db-backup", "--env", "prod"])
        .fails_with(2, &["refusing to touch production", "--allow-production"]);
    // Production is judged by the real target: its database, whatever `--env` says.
    let prod = "postgresql://admin:hunter2@db.example.com:5432/genesis_ai_prod";
    let run = xtask(&["db-restore", "--env", "dev", "--url", prod, file])
        .fails_with(2, &["which is production", "--allow-production"]);
    assert!(!run.all().contains("hunter2"), "{run:#?}");
    let remote = "postgresql://admin:hunter2@db.example.com:5432/genesis_db";
    let run = xtask(&["db-restore", "--env", "dev", "--url", remote, file]).fails_with(
        2,
        &[
            "not on this machine",
            "--allow-remote",
            "postgresql://admin:***@db.example.com",
        ],
    );
    assert!(!run.all().contains("hunter2"), "{run:#?}");
}

#[test]
fn a_failed_backup_leaves_nothing_behind_and_never_overwrites() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let dir = temp_dir("xtask-failed");
    let file = dir.join("x.dump");
    let missing = test_url_on("no_such_database");
    let missing = missing.as_str();
    xtask(&[
        "db-backup",
        "--env",
        "test",
        "--url",
        missing,
        "--output",
        file.to_str().unwrap(),
    ])
    .fails_with(2, &["cannot connect", "no_such_database"]);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing is written"
    );

    std::fs::write(&file, "precious").unwrap();
    xtask(&[
        "db-backup",
        "--env",
        "test",
        "--output",
        file.to_str().unwrap(),
    ])
    .fails_with(2, &["already exists"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- test --both-modes, interrupted ---------------------------------------------------------

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `test --both-modes` on the test stack in a process group of its own (as a terminal's Ctrl-C
/// reaches the xtask and its children), returned once the suites run, with its log.
fn suites_running() -> (std::process::Child, PathBuf) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let log = std::env::temp_dir().join(unique("genesis_interrupt") + ".log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(XTASK)
        .args(["test", "--both-modes"])
        .env("GENESIS_STACK", stack())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !read(&log).contains("running the suites") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted:\n{}",
            read(&log)
        );
        assert!(
            Instant::now() < deadline,
            "the suites never started:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    (child, log)
}

fn wait(child: &mut std::process::Child, log: &Path) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not stop:\n{}",
            read(log)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn group_left(pgid: u32) -> String {
    let sh = Shell::new().unwrap();
    let pgid = pgid.to_string();
    cmd!(sh, "pgrep -g {pgid}")
        .quiet()
        .ignore_status()
        .read()
        .unwrap()
}

/// Two runs of the suites on one stack of one checkout would share its pool socket, extracted
/// archive and reports: the second refuses at once, naming the first, and starts nothing.
#[test]
fn a_second_test_run_on_the_same_stack_refuses_at_once() {
    let _engine = engine();
    let dir = root().join("target/xtask/stacks").join(stack());
    std::fs::create_dir_all(&dir).unwrap();
    // A live run holds the lock: this test process, written as the xtask writes a run.
    let pid = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = dir.join("run.lock");
    std::fs::write(&lock, format!("run:{}:{pid}:{start}", host.trim())).unwrap();
    xtask(&["test", "--both-modes"]).fails_with(
        2,
        &[
            &format!("another run (pid {pid})"),
            &format!("stack {}", stack()),
            "--stack NAME",
        ],
    );
    assert!(leftovers().is_empty(), "nothing started: {:?}", leftovers());
    assert!(lock.is_file(), "the live run's lock is left alone");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_interrupted_test_run_removes_the_services_it_started() {
    let _engine = engine();
    let (mut child, log) = suites_running();
    let sh = Shell::new().unwrap();
    let group = format!("-{}", child.id());
    cmd!(sh, "kill -INT -- {group}").quiet().run().unwrap();
    let status = wait(&mut child, &log);
    let text = read(&log);
    let _ = std::fs::remove_file(&log);
    assert!(!status.success(), "an interrupted run must fail:\n{text}");
    assert!(
        text.contains("interrupted; the services this run started were stopped"),
        "{text}"
    );
    assert!(
        leftovers().is_empty(),
        "left behind: {:?}\n{text}",
        leftovers()
    );
    let left = group_left(child.id());
    assert!(
        left.trim().is_empty(),
        "processes of the run are left: {left}"
    );
}

/// `kill -9` of the xtask (a CI time-out): its containers stay, marked with a run that is
/// gone. `db-status` shows them orphaned, and the next run reclaims them instead of adopting.
#[test]
fn a_killed_run_leaves_orphans_that_the_next_run_reclaims() {
    let _engine = engine();
    let (mut child, log) = suites_running();
    let pid = child.id().to_string();
    let sh = Shell::new().unwrap();
    cmd!(sh, "kill -KILL {pid}").quiet().run().unwrap();
    wait(&mut child, &log);
    // The rest of its process group (nextest, compose exec) goes as a time-out would take it.
    let group = format!("-{pid}");
    let _ = cmd!(sh, "kill -KILL -- {group}")
        .quiet()
        .ignore_stderr()
        .run();
    let _ = std::fs::remove_file(&log);
    for service in ["test-db", "redis", "genesis-api"] {
        assert_eq!(
            service_status(service)["state"],
            "orphaned",
            "{service}: {}",
            status()
        );
    }
    let table = xtask(&["db-status"]).ok();
    assert!(
        table
            .stdout
            .contains("the next run on this stack reclaims it"),
        "{table:#?}"
    );

    let run = xtask(&["db-up"]).ok();
    let reclaimed = run
        .stderr
        .lines()
        .find(|l| l.starts_with("reclaiming "))
        .unwrap_or_else(|| panic!("nothing reclaimed: {run:#?}"));
    for service in ["test-db", "redis", "genesis-api"] {
        assert!(reclaimed.contains(service), "{run:#?}");
    }
    assert_eq!(service_status("test-db")["state"], "running");
    assert_eq!(service_status("genesis-api")["state"], "absent");
    assert_eq!(psql(&test_url(), "select 1"), "1");
    xtask(&["db-down", "--all"]).ok();
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}
