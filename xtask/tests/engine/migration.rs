//! `migration status`, `db-migrate` and `db-reset` against the engine.

use super::backup::count;
use super::*;

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
