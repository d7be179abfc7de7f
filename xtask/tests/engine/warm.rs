//! Warm services (`test --keep`): reused by the next run with nothing of the last one left in
//! them, restarted when their recipe changes, removed by `db-down --all`.

use super::*;

/// `GET key` (or `SET key value`) on the test stack's Redis, the raw reply.
fn redis(command: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port("redis"))).unwrap();
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).trim().to_owned()
}

#[test]
fn a_warm_run_sees_nothing_of_the_last_and_a_changed_recipe_restarts() {
    let _engine = engine();
    let first = xtask(&["test", "--keep", "--", "auth::login"]).ok();
    assert!(
        first.stderr.contains("starting test-db, redis"),
        "{first:#?}"
    );
    assert!(running("test-db") && running("redis"));
    assert_eq!(service_status("test-db")["warm"], true);

    // The pool server left its ready clones in the warm database as the pool's.
    let ready_clones = || {
        psql(
            &test_url_on("postgres"),
            "select string_agg(datname, ' ' order by datname) from pg_database \
             where datname like 'genesis\\_p\\_%'",
        )
    };
    let left_by_first = ready_clones();
    assert!(!left_by_first.is_empty(), "no ready clone left warm");

    // What a test that writes could leave: a table in test_db, a database of its own, a key.
    let leftover_db = unique("genesis_t_left");
    psql(&test_url(), "create table written_by_a_warm_run (x int)");
    psql(
        &test_url_on("postgres"),
        &format!("create database {leftover_db}"),
    );
    assert_eq!(redis("SET written_by_a_warm_run 1"), "+OK");

    let second = xtask(&["test", "--keep", "--", "auth::login"]).ok();
    assert!(
        second.stderr.contains("reusing warm test-db, redis"),
        "{second:#?}"
    );
    assert!(!second.stderr.contains("starting"), "{second:#?}");
    assert_eq!(
        psql(
            &test_url(),
            "select count(*) from pg_tables where tablename = 'written_by_a_warm_run'"
        ),
        "0"
    );
    assert_eq!(
        psql(
            &test_url_on("postgres"),
            &format!("select count(*) from pg_database where datname = '{leftover_db}'")
        ),
        "0"
    );
    assert_eq!(redis("GET written_by_a_warm_run"), "$-1");
    // The second run's server took the first one's ready clones over (renamed them to its
    // own), and left its own ready ones in turn.
    let left_by_second = ready_clones();
    assert!(!left_by_second.is_empty(), "no ready clone left warm");
    for name in left_by_first.split_whitespace() {
        assert!(
            !left_by_second.split_whitespace().any(|n| n == name),
            "{name} was not taken over: {left_by_second}"
        );
    }
    // The migrated template stays warm: that is what the next run saves.
    assert_eq!(
        psql(
            &test_url_on("postgres"),
            "select count(*) > 0 from pg_database where datistemplate and datname like 'genesis\\_%'"
        ),
        "t"
    );

    // A new certificate is a new recipe: the warm test database (which serves it) restarts.
    std::fs::remove_dir_all(root().join("target/xtask/tls")).unwrap();
    let third = xtask(&["test", "--keep", "--", "auth::login"]).ok();
    assert!(
        third.stderr.contains("restarting warm test-db (stack ")
            && third.stderr.contains("its recipe changed"),
        "{third:#?}"
    );
    assert!(third.stderr.contains("starting "), "{third:#?}");

    // A run without --keep uses the warm services and leaves them as they are.
    let plain = xtask(&["test", "--", "auth::login"]).ok();
    assert!(plain.stderr.contains("reusing warm"), "{plain:#?}");
    assert!(running("test-db") && running("redis"));

    xtask(&["db-down", "--all"]).ok();
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}
