//! The migration runner: applied once with checksums, idempotent, edits and newer databases
//! refused, concurrent migrators, a failing migration rolled back alone.

use super::*;

#[tokio::test]
async fn every_migration_is_applied_with_its_checksum() {
    let (_db, client) = database().await;
    let rows = client
        .query(
            "select version, name, checksum from schema_migrations order by version",
            &[],
        )
        .await
        .unwrap();
    let applied: Vec<(i64, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(i64, String, String)> = MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned(), m.checksum()))
        .collect();
    assert_eq!(applied, expected);
    for table in ["users", "auth_tokens", "documents"] {
        let found: Option<String> = client
            .query_one("select to_regclass($1)::text", &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(found.as_deref(), Some(table));
    }
}

#[tokio::test]
async fn re_running_the_migrations_is_a_no_op() {
    let (_db, mut client) = database().await;
    let before = support::texts(
        &client,
        "select applied_at::text from schema_migrations order by version",
    )
    .await;
    for _ in 0..2 {
        let report = migrate::migrate(&mut client).await.unwrap();
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(report.already_applied, MIGRATIONS.len());
    }
    let after = support::texts(
        &client,
        "select applied_at::text from schema_migrations order by version",
    )
    .await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn an_edited_migration_is_detected_by_its_checksum() {
    let (db, mut client) = database().await;
    client
        .execute(
            "update schema_migrations set checksum = 'edited' where version = 1",
            &[],
        )
        .await
        .unwrap();
    match migrate::migrate(&mut client).await {
        Err(MigrateError::ChecksumMismatch {
            version, recorded, ..
        }) => {
            assert_eq!((version, recorded.as_str()), (1, "edited"));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    // The API refuses to start on such a database, saying which migration.
    let mut settings = support::settings();
    settings.test_database_url = db.url().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Server::build_with_listener(&settings, listener)
        .await
        .expect_err("start-up must fail");
    assert!(
        err.to_string()
            .contains("migration 1 (users_and_tokens) was edited"),
        "{err}"
    );
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused() {
    let (_db, mut client) = database().await;
    client
        .execute(
            "insert into schema_migrations (version, name, checksum) values (9999, 'future', 'x')",
            &[],
        )
        .await
        .unwrap();
    let err = migrate::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::UnknownApplied { version: 9999, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = db.url().clone();
        tasks.spawn(async move {
            let mut client = genesis_api::db::connect(&url).await.unwrap();
            migrate::migrate(&mut client).await
        });
    }
    let mut applied: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|report| report.expect("every migrator succeeds").applied)
        .collect();
    applied.sort();
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        applied,
        [vec![], vec![], vec![], all],
        "exactly one applied them"
    );
    let client = db.client().await;
    let count: i64 = client
        .query_one("select count(*) from schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count as usize, MIGRATIONS.len());
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_alone() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    let first = Migration {
        version: 1,
        name: "first",
        sql: "create table a (id int primary key)",
    };
    let broken = Migration {
        version: 2,
        name: "second",
        sql: "create table b (id int primary key); insert into b values (1); select 1 / 0",
    };
    let err = migrate::run(&mut client, &[first, broken])
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::Failed { version: 2, .. }),
        "{err}"
    );
    let tables: Vec<Option<String>> = client
        .query_one("select to_regclass('a')::text, to_regclass('b')::text", &[])
        .await
        .unwrap()
        .pipe(|row| vec![row.get(0), row.get(1)]);
    assert_eq!(tables, [Some("a".to_owned()), None]);

    let fixed = Migration {
        sql: "create table b (id int primary key)",
        ..broken
    };
    let report = migrate::run(&mut client, &[first, fixed]).await.unwrap();
    assert_eq!((report.applied, report.already_applied), (vec![2], 1));
}
