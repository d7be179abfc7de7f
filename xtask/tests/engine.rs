//! The database commands against the real Docker engine and PostgreSQL: `db-up`, `db-down`,
//! `db-status`, `db-logs`, `db-shell`, `db-backup` and `db-restore`, good cases and bad; and
//! `test --both-modes` interrupted half-way.
//!
//! Every test here shares the one compose project and its fixed ports, so they run one at a
//! time (the `ENGINE` lock). Other suites may need test-db up meanwhile: a test that stops a
//! service puts it back as it found it, and tests that write data use databases of their own.
//! Nothing of their own is left behind: no container, network, volume or database.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use xshell::{Shell, cmd};

static ENGINE: Mutex<()> = Mutex::new(());

fn engine() -> MutexGuard<'static, ()> {
    ENGINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const TEST_URL: &str = "postgresql://test_user:test_password@localhost:5433/test_db";
const TEST_URL_MASKED: &str = "postgresql://test_user:***@localhost:5433/test_db";

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

fn xtask_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let sh = Shell::new().unwrap();
    let mut command = cmd!(sh, "{XTASK} {args...}").quiet().ignore_status();
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

/// The project's containers of `service`, running or not.
fn containers(service: &str) -> Vec<String> {
    let sh = Shell::new().unwrap();
    let project = "label=com.docker.compose.project=genesis";
    let label = format!("label=com.docker.compose.service={service}");
    let ids = cmd!(sh, "docker ps -a -q --filter {project} --filter {label}")
        .quiet()
        .read()
        .unwrap();
    ids.lines().map(str::to_owned).collect()
}

fn running(service: &str) -> bool {
    let sh = Shell::new().unwrap();
    let project = "label=com.docker.compose.project=genesis";
    let label = format!("label=com.docker.compose.service={service}");
    !cmd!(sh, "docker ps -q --filter {project} --filter {label}")
        .quiet()
        .read()
        .unwrap()
        .trim()
        .is_empty()
}

fn dev_volume_ids() -> String {
    let sh = Shell::new().unwrap();
    let project = "label=com.docker.compose.project=genesis";
    let label = "label=com.docker.compose.volume=dev-data";
    cmd!(
        sh,
        "docker volume ls -q --filter {project} --filter {label}"
    )
    .quiet()
    .read()
    .unwrap()
}

/// Puts the project's services back as the test found them: what it started is stopped, what
/// it stopped is started again, and a dev volume that compose v1 created on the way (it creates
/// every declared volume on `up`) is removed when nothing uses it.
struct Restore {
    test_db: bool,
    redis: bool,
    postgres: bool,
    dev_volume: bool,
}

impl Restore {
    fn capture() -> Restore {
        Restore {
            test_db: running("test-db"),
            redis: running("redis"),
            postgres: running("postgres"),
            dev_volume: !dev_volume_ids().trim().is_empty(),
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Redis alone, by container id: `db-down --with redis` would stop test-db as well,
        // and a restarted test-db has lost what other suites put in it.
        if !self.redis {
            for id in containers("redis") {
                let sh = Shell::new().unwrap();
                let _ = cmd!(sh, "docker rm -f -v {id}")
                    .quiet()
                    .ignore_stdout()
                    .run();
            }
        }
        let reconcile = |was: bool, service: &str, up: &[&str], down: &[&str]| {
            let run = match (was, running(service)) {
                (true, false) => xtask(up),
                (false, true) => xtask(down),
                _ => return,
            };
            if run.code != 0 {
                eprintln!("warning: could not put {service} back: {run:#?}");
            }
        };
        reconcile(self.redis, "redis", &["db-up", "--with", "redis"], &[]);
        reconcile(
            self.test_db,
            "test-db",
            &["db-up"],
            &["db-down", "--env", "test"],
        );
        reconcile(
            self.postgres,
            "postgres",
            &["db-up", "--env", "dev"],
            &["db-down", "--env", "dev"],
        );
        if !self.dev_volume && !running("postgres") {
            let ids = dev_volume_ids();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let sh = Shell::new().unwrap();
                let _ = cmd!(sh, "docker volume rm {ids...}")
                    .quiet()
                    .ignore_stdout()
                    .run();
            }
        }
    }
}

/// A database of the test's own on the test-db server, dropped at the end.
struct OwnDatabase {
    name: String,
}

impl OwnDatabase {
    fn create(prefix: &str) -> OwnDatabase {
        let name = unique(prefix);
        psql(TEST_URL, &format!("create database {name}"));
        OwnDatabase { name }
    }

    fn url(&self) -> String {
        format!(
            "postgresql://test_user:test_password@localhost:5433/{}",
            self.name
        )
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let sh = Shell::new().unwrap();
        let sql = format!("drop database if exists {} with (force)", self.name);
        let _ = cmd!(sh, "psql {TEST_URL} -X -q -c {sql}").quiet().run();
    }
}

// ---- preflight ----------------------------------------------------------------------------

#[test]
fn an_unreachable_docker_daemon_is_a_missing_prerequisite_with_the_fix() {
    let _engine = engine();
    let before = Restore::capture();
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
    assert_eq!(running("test-db"), before.test_db);
}

#[test]
fn production_has_no_compose_service() {
    let _engine = engine();
    for args in [
        &["db-up", "--env", "prod"][..],
        &["db-down", "--env", "prod"],
    ] {
        xtask(args).fails_with(2, &["no compose service", "managed PostgreSQL server"]);
    }
}

#[test]
fn a_taken_port_is_named_and_nothing_starts() {
    let _engine = engine();
    let restore = Restore::capture();
    // Port 5433 when test-db is down. When another suite is using test-db, the dev database's
    // port shows the same check without pulling test-db from under it; only when both run is
    // test-db stopped for the few seconds the check takes (and `Restore` starts it again).
    let (service, port, up): (&str, u16, &[&str]) = if !restore.test_db || restore.postgres {
        ("test-db", 5433, &["db-up"])
    } else {
        ("postgres", 5435, &["db-up", "--env", "dev"])
    };
    if running(service) {
        xtask(&["db-down", "--env", "test"]).ok();
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|err| panic!("{port} should be free with {service} down: {err}"));
    xtask(up).fails_with(
        2,
        &[
            &format!("port {port} is taken by another process"),
            service,
            "ss -ltnp",
        ],
    );
    assert!(!running(service), "{service} must not be started");
    drop(listener);
}

// ---- db-up, db-status, db-logs, db-shell ----------------------------------------------------

#[test]
fn db_up_waits_for_a_real_connection_and_is_harmless_twice() {
    let _engine = engine();
    let _restore = Restore::capture();
    for _ in 0..2 {
        let run = xtask(&["db-up"]).ok();
        assert!(run.stdout.contains("test-db ready in "), "{run:#?}");
        assert!(run.stdout.contains(TEST_URL_MASKED), "{run:#?}");
        assert!(
            !run.all().contains("test_password"),
            "the password was printed: {run:#?}"
        );
        assert_eq!(psql(TEST_URL, "select 1"), "1");
    }

    let status = xtask(&["db-status", "--json"]).ok();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
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
    assert_eq!(test_db["ports"][0], "127.0.0.1:5433->5432/tcp");
    let table = xtask(&["db-status"]).ok();
    assert!(table.stdout.starts_with("SERVICE"), "{table:#?}");

    // A line of our own in the server's log, whatever else the server logged before: a
    // connection to a database that does not exist is logged with the database's name.
    let marker = unique("genesis_log_marker");
    let sh = Shell::new().unwrap();
    let missing = TEST_URL.replace("/test_db", &format!("/{marker}"));
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
    assert!(shell.stderr.contains(TEST_URL_MASKED), "{shell:#?}");
}

#[test]
fn redis_is_ready_when_it_answers_ping() {
    let _engine = engine();
    let _restore = Restore::capture();
    let run = xtask(&["db-up", "--with", "redis"]).ok();
    assert!(run.stdout.contains("test-db ready in"), "{run:#?}");
    assert!(run.stdout.contains("redis ready in"), "{run:#?}");
    assert!(run.stdout.contains("redis://localhost:6380/0"), "{run:#?}");
    let status: serde_json::Value =
        serde_json::from_str(&xtask(&["db-status", "--json"]).ok().stdout).unwrap();
    let redis = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "redis")
        .unwrap()
        .clone();
    assert_eq!(redis["state"], "running");
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
    let restore = Restore::capture();
    let dotenv = root().join(".env");
    let had_password = std::env::var_os("POSTGRES_PASSWORD").is_some() || dotenv.exists();

    let up = xtask(&["db-up", "--env", "dev"]).ok();
    let password = dev_password();
    assert!(
        !up.all().contains(&password),
        "the dev password was printed: {up:#?}"
    );
    assert!(
        up.stdout
            .contains("postgresql://genesis_user:***@localhost:5435/genesis_db"),
        "{up:#?}"
    );
    if !had_password {
        assert!(up.stderr.contains("generated a password"), "{up:#?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dotenv).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, ".env must be owner-only");
    }
    let url = format!("postgresql://genesis_user:{password}@localhost:5435/genesis_db");
    // A developer's own dev data is never deleted by this test.
    let had_data = restore.postgres
        || psql(
            &url,
            "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
        ) != "0";
    let table = unique("xtask_persist");
    psql(
        &url,
        &format!("create table {table} (note text); insert into {table} values ('kept')"),
    );

    let down = xtask(&["db-down", "--env", "dev"]).ok();
    assert!(
        down.stdout
            .contains("data is kept in volume genesis_dev-data"),
        "{down:#?}"
    );
    assert!(!running("postgres"));
    xtask(&["db-up", "--env", "dev"]).ok();
    assert_eq!(psql(&url, &format!("select note from {table}")), "kept");

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

    if had_data {
        psql(&url, &format!("drop table {table}"));
    } else {
        let gone = xtask(&["db-down", "--env", "dev", "--volumes"]).ok();
        assert!(
            gone.stdout.contains("deleted volume genesis_dev-data"),
            "{gone:#?}"
        );
        assert!(
            dev_volume_ids().trim().is_empty(),
            "the dev volume is still there"
        );
    }
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
    let _restore = Restore::capture();
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
    let _restore = Restore::capture();
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
fn restore_refuses_production_and_remote_targets_unless_allowed() {
    let _engine = engine();
    let file = "/nonexistent/any.dump";
    xtask(&["db-restore", "--env", "prod", file])
        .fails_with(2, &["refusing to touch production", "--allow-production"]);
    xtask(&["db-backup", "--env", "prod"])
        .fails_with(2, &["refusing to touch production", "--allow-production"]);
    let remote = "postgresql://admin:hunter2@db.example.com:5432/genesis_ai_prod";
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
    let _restore = Restore::capture();
    xtask(&["db-up"]).ok();
    let dir = temp_dir("xtask-failed");
    let file = dir.join("x.dump");
    let missing = "postgresql://test_user:test_password@localhost:5433/no_such_database";
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

#[test]
fn an_interrupted_test_run_removes_the_services_it_started() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let _engine = engine();
    let _restore = Restore::capture();
    // From nothing of the project's, so that the run starts every service it needs.
    xtask(&["db-down", "--all"]).ok();

    let log = std::env::temp_dir().join(unique("genesis_interrupt") + ".log");
    let out = std::fs::File::create(&log).unwrap();
    // A process group of its own, as a terminal's Ctrl-C reaches the xtask and its children.
    let mut child = Command::new(XTASK)
        .args(["test", "--both-modes"])
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
    let sh = Shell::new().unwrap();
    let group = format!("-{}", child.id());
    cmd!(sh, "kill -INT -- {group}").quiet().run().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not stop:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = read(&log);
    let _ = std::fs::remove_file(&log);
    assert!(!status.success(), "an interrupted run must fail:\n{text}");
    assert!(
        text.contains("interrupted; the services this run started were stopped"),
        "{text}"
    );
    for service in ["test-db", "redis", "genesis-api"] {
        assert!(
            containers(service).is_empty(),
            "{service} was left behind:\n{text}"
        );
    }
    let pgid = child.id().to_string();
    let left = cmd!(sh, "pgrep -g {pgid}")
        .quiet()
        .ignore_status()
        .read()
        .unwrap();
    assert!(
        left.trim().is_empty(),
        "processes of the run are left: {left}"
    );
}
