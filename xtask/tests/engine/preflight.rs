//! Preflight against the engine: a daemon that does not answer, production's missing
//! service, a stack name, a taken default port.

use super::*;

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
