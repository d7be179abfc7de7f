//! Runs that end badly: `test --both-modes` interrupted, and one killed whose orphans the
//! next run reclaims.

use super::*;

pub(super) fn read(path: &Path) -> String {
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

pub(super) fn wait(child: &mut std::process::Child, log: &Path) -> std::process::ExitStatus {
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
