//! `db-backup` and `db-restore`: verified backups, dumps cut short or with CR LF line endings,
//! refused targets, failed backups that leave nothing behind.

use super::*;

pub(super) fn seed(url: &str) {
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

pub(super) fn count(url: &str, table: &str) -> i64 {
    psql(url, &format!("select count(*) from {table}"))
        .parse()
        .unwrap()
}

pub(super) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(super) fn backup(db: &OwnDatabase, file: &Path) -> Run {
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

pub(super) fn restore(db: &OwnDatabase, file: &Path) -> Run {
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
