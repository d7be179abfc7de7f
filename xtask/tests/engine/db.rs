//! `db-up`, `db-status`, `db-logs`, `db-shell` and `db-down` against the engine.

use super::*;

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
    // Where the host reaches it: the test password is public, so the URL is whole.
    assert_eq!(
        test_db["url"],
        format!(
            "postgresql://test_user:test_password@localhost:{}/test_db",
            ports[0]
        )
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
pub(super) fn dev_password() -> String {
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
