//! Faults: a dump of another source or with a lying sidecar, `kill -9` of a restore, a backup
//! and a reset, a test database that dies while the suites run, logs of an empty stack.

use super::backup::{backup, count, restore, seed, temp_dir};
use super::db::dev_password;
use super::runs::{read, wait};
use super::*;

/// A copy of `file` (and its sidecar) under another name, its sidecar changed by `edit`.
fn dump_copy(file: &Path, name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let copy = file.with_file_name(name);
    std::fs::copy(file, &copy).unwrap();
    let sidecar = |p: &Path| PathBuf::from(format!("{}.meta.json", p.display()));
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sidecar(file)).unwrap()).unwrap();
    meta["file"] = name.into();
    edit(&mut meta);
    std::fs::write(sidecar(&copy), meta.to_string()).unwrap();
    copy
}

#[test]
fn a_restore_of_another_source_is_refused_and_disagreeing_counts_roll_it_back() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let source = OwnDatabase::create("xtask_source");
    seed(&source.url());
    let dir = temp_dir("xtask-source");
    let file = dir.join("source.dump");
    backup(&source, &file).ok();

    // Over another database that has tables: refused, naming both, unless --from names it.
    let other = OwnDatabase::create("xtask_other");
    psql(
        &other.url(),
        "create table mine (id int); insert into mine values (1), (2)",
    );
    restore(&other, &file).fails_with(
        2,
        &[
            "refusing to restore a dump of",
            &source.name,
            &other.name,
            &format!("--from {}", source.name),
            "nothing was restored",
        ],
    );
    assert_eq!(
        psql(&other.url(), "select to_regclass('app.users') is null"),
        "t"
    );
    let url = other.url();
    let target = file.to_str().unwrap();
    xtask(&[
        "db-restore",
        "--yes",
        "--env",
        "test",
        "--url",
        &url,
        "--from",
        "x",
        target,
    ])
    .fails_with(2, &["does not name the dump's source"]);
    let from = source.name.as_str();
    xtask(&[
        "db-restore",
        "--yes",
        "--env",
        "test",
        "--url",
        &url,
        "--from",
        from,
        target,
    ])
    .ok();
    assert_eq!(count(&other.url(), "app.users"), 300);
    assert_eq!(count(&other.url(), "mine"), 2, "tables the dump lacks stay");

    // A dump of another environment, or of another server (cluster), is refused too.
    let dev = dump_copy(&file, "dev.dump", |m| m["env"] = "dev".into());
    restore(&source, &dev).fails_with(2, &["it is a dump of dev, the target is test"]);
    let moved = dump_copy(&file, "moved.dump", |m| m["server_id"] = "1".into());
    restore(&source, &moved).fails_with(2, &["it was taken on another server"]);

    // A sidecar whose counts disagree with what the dump holds: the comparison runs inside
    // the restore's transaction, which is rolled back.
    psql(&source.url(), "delete from app.users where id > 10");
    let lying = dump_copy(&file, "lying.dump", |m| {
        for table in m["tables"].as_array_mut().unwrap() {
            if table["table"] == "users" {
                table["rows"] = 299.into();
            }
        }
    });
    restore(&source, &lying).fails_with(
        1,
        &[
            "app.users: 299 rows at dump time, 300 restored",
            "the transaction was rolled back",
            "is unchanged",
        ],
    );
    assert_eq!(count(&source.url(), "app.users"), 10);
    restore(&source, &file).ok();
    assert_eq!(count(&source.url(), "app.users"), 300);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The xtask started with `args` on the test stack, its output in a log file.
fn spawn_xtask(args: &[&str]) -> (std::process::Child, PathBuf) {
    use std::process::{Command, Stdio};
    let log = std::env::temp_dir().join(unique("genesis_fault") + ".log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(XTASK)
        .args(args)
        .env("GENESIS_STACK", stack())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (child, log)
}

/// The pid of `parent`'s child whose command line matches `needle` (a regular expression, as
/// `pgrep -f` takes it), once there is one; `None` when `parent` ended first.
fn child_running(parent: &mut std::process::Child, needle: &str) -> Option<u32> {
    let sh = Shell::new().unwrap();
    let ppid = parent.id().to_string();
    loop {
        if parent.try_wait().unwrap().is_some() {
            return None;
        }
        let found = cmd!(sh, "pgrep -P {ppid} -f {needle}")
            .quiet()
            .ignore_status()
            .read()
            .unwrap();
        if let Some(pid) = found.lines().next().and_then(|l| l.trim().parse().ok()) {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone (or a zombie) within the run's bound.
fn ends(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if stat.is_empty() || state == Some("Z") {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

fn kill9(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    let sh = Shell::new().unwrap();
    cmd!(sh, "kill -KILL {pid}").quiet().run().unwrap();
    child.wait().unwrap();
}

/// A table big enough that restoring it takes a while on any machine.
fn seed_big(url: &str) {
    psql(
        url,
        "create table big (id int primary key, body text); \
         insert into big select g, repeat(md5(g::text), 4) from generate_series(1, 300000) g",
    );
}

#[test]
fn a_killed_restore_takes_its_tools_along_and_commits_nothing() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let db = OwnDatabase::create("xtask_killed_restore");
    seed_big(&db.url());
    let dir = temp_dir("xtask-killed-restore");
    let file = dir.join("big.dump");
    backup(&db, &file).ok();
    psql(&db.url(), "delete from big where id > 5");

    let url = db.url();
    let (mut child, log) = spawn_xtask(&[
        "db-restore",
        "--yes",
        "--env",
        "test",
        "--url",
        &url,
        file.to_str().unwrap(),
    ]);
    let restorer = child_running(&mut child, "pg_restore.*--file=-")
        .unwrap_or_else(|| panic!("the restore ended before it was killed:\n{}", read(&log)));
    // The session that holds the restore's transaction (started before pg_restore).
    let session = child_running(&mut child, "psql");
    kill9(&mut child);
    assert!(ends(restorer), "pg_restore outlived the killed xtask");
    if let Some(session) = session {
        assert!(ends(session), "psql outlived the killed xtask");
    }
    // The server notices the closed session and rolls its transaction back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while psql(
        &db.admin,
        &format!(
            "select count(*) from pg_stat_activity where datname = '{}'",
            db.name
        ),
    ) != "0"
    {
        assert!(std::time::Instant::now() < deadline, "the session stayed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        count(&db.url(), "big"),
        5,
        "nothing of the killed restore is committed"
    );
    let _ = std::fs::remove_file(&log);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_killed_backup_leaves_only_what_the_next_backup_removes() {
    let _engine = engine();
    xtask(&["db-up"]).ok();
    let db = OwnDatabase::create("xtask_killed_backup");
    seed_big(&db.url());
    let dir = temp_dir("xtask-killed-backup");
    let file = dir.join("big.dump");
    let url = db.url();
    let (mut child, log) = spawn_xtask(&[
        "db-backup",
        "--env",
        "test",
        "--url",
        &url,
        "--output",
        file.to_str().unwrap(),
    ]);
    let pid = child.id();
    // Killed while it restores into its scratch database.
    let restorer = child_running(&mut child, "pg_restore.*genesis_verify_")
        .unwrap_or_else(|| panic!("the backup ended before it was killed:\n{}", read(&log)));
    kill9(&mut child);
    assert!(ends(restorer), "pg_restore outlived the killed xtask");
    let partial = dir.join(format!("big.dump.partial-{pid}"));
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&partial).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600, "a partial dump is owner-only");
    let scratch = format!("genesis_verify_{pid}_%");
    let scratch_count = || {
        psql(
            &db.admin,
            &format!("select count(*) from pg_database where datname like '{scratch}'"),
        )
    };
    assert_eq!(scratch_count(), "1");

    // The next backup on that server removes both, and says so.
    let run = backup(&db, &dir.join("next.dump")).ok();
    assert!(
        run.stderr.contains("left by a backup that was killed"),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("left by a verification that was killed"),
        "{run:#?}"
    );
    assert!(!partial.exists());
    assert_eq!(scratch_count(), "0");
    let _ = std::fs::remove_file(&log);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_reset_killed_after_its_backup_is_reported_with_the_way_back() {
    let _engine = engine();
    xtask(&["db-up", "--env", "dev"]).ok();
    let url = format!(
        "postgresql://genesis_user:{}@localhost:{}/genesis_db",
        dev_password(),
        port("postgres")
    );
    psql(
        &url,
        "create table kept (id int); insert into kept select generate_series(1, 77)",
    );
    let marker = root()
        .join("target/xtask")
        .join(format!("reset-in-progress-{}-dev.json", stack()));
    let (mut child, log) = spawn_xtask(&["db-reset", "--env", "dev", "--yes"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !marker.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the reset ended before it was killed:\n{}",
            read(&log)
        );
        assert!(std::time::Instant::now() < deadline, "{}", read(&log));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    kill9(&mut child);
    let text = read(&log);
    let backup = text
        .split_whitespace()
        .find(|w| w.ends_with(".dump"))
        .unwrap_or_else(|| panic!("no backup was named:\n{text}"))
        .to_owned();

    // Every next command says what happened, with the line that brings the data back.
    let restore_line = format!("db-restore --env dev --stack {} {backup}", stack());
    let status = xtask(&["db-status"]).ok();
    assert!(
        status.stderr.contains("was killed after it began dropping"),
        "{status:#?}"
    );
    assert!(status.stderr.contains(&restore_line), "{status:#?}");
    let run = xtask(&["db-restore", "--yes", "--env", "dev", &backup]).ok();
    assert!(run.stderr.contains(&restore_line), "{run:#?}");
    assert_eq!(count(&url, "kept"), 77);
    assert!(!marker.exists(), "the restore clears the report");
    assert!(!xtask(&["db-status"]).ok().stderr.contains("was killed"));
    let sidecar = format!("{backup}.meta.json");
    std::fs::remove_file(&backup).unwrap();
    std::fs::remove_file(sidecar).unwrap();
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_dead_test_database_fails_the_run_naming_it_and_leaves_nothing() {
    let _engine = engine();
    let (mut child, log) = spawn_xtask(&["test"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !read(&log).contains("running the suites") {
        assert!(child.try_wait().unwrap().is_none(), "{}", read(&log));
        assert!(std::time::Instant::now() < deadline, "{}", read(&log));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let container = service_status("test-db")["container"]
        .as_str()
        .unwrap()
        .to_owned();
    let sh = Shell::new().unwrap();
    cmd!(sh, "docker kill {container}")
        .quiet()
        .ignore_stdout()
        .run()
        .unwrap();
    // Bounded by the helper's two minutes: far less than the suites' own timeouts add up to.
    // The suites take seconds; the kill comes within one of their start.
    let status = wait(&mut child, &log);
    let text = read(&log);
    let _ = std::fs::remove_file(&log);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("test-db stopped while the suites ran"),
        "{text}"
    );
    assert!(text.contains("last 20 log lines of test-db"), "{text}");
    assert!(
        leftovers().is_empty(),
        "left behind: {:?}\n{text}",
        leftovers()
    );
}

#[test]
fn logs_of_a_stack_without_containers_say_that_nothing_runs() {
    let _engine = engine();
    xtask(&["db-down", "--all"]).ok();
    xtask(&["db-logs"]).fails_with(2, &["nothing runs on stack"]);
    xtask(&["db-logs", "--follow"]).fails_with(2, &["nothing runs on stack"]);
}
