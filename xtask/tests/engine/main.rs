//! The database commands against the real Docker engine and PostgreSQL: `db-up`, `db-down`,
//! `db-status`, `db-logs`, `db-shell`, `db-backup`, `db-restore`, `migration status`,
//! `db-migrate` and `db-reset`, good cases and bad (an empty database included); and `test` interrupted half-way, by Ctrl-C and by `kill -9`.
//!
//! Every test works on a stack of this test binary's own (`GENESIS_STACK=engine<pid>`), with
//! ports the engine chooses, so a developer's default stack, another checkout's stacks and CI
//! jobs on the same engine are never touched. The tests share that stack, so they run one at a
//! time (the `ENGINE` lock), and each removes the whole stack when it ends.

mod backup;
mod db;
mod faults;
mod migration;
mod preflight;
mod replay;
mod runs;
mod warm;

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
