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
