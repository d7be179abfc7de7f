//! The integration suite: what the API relies on, against the real PostgreSQL and Redis. Each
//! test has a database of its own (cloned from the migrated template) and a Redis namespace of
//! its own, so the suite runs in parallel, and beside another run, on the host or in a container.

#[path = "integrations/metrics.rs"]
mod metrics;
mod support;
#[path = "integrations/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use genesis_api::health::{CheckStatus, Readiness, ReadyStatus};
use genesis_api::migrate::{self, MIGRATIONS, Migration};
use genesis_api::{MigrateError, Server};
use genesis_model::Env;
use genesis_settings::{Runtime, Scheme, ServiceUrl, Settings};
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{RedisNs, TestApp, TestDb};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

// ---------------------------------------------------------------------------------------------
// Helpers

async fn database() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    (db, client)
}

async fn readiness(app: &TestApp) -> (u16, Readiness) {
    let res = app.get("/health/ready", None).await;
    let status = res.status().as_u16();
    (status, res.json().await.expect("a readiness body"))
}

/// Inserts a document and returns its id.
async fn document(client: &Client, title: &str, body: &str, metadata: &Value) -> i64 {
    client
        .query_one(
            "insert into documents (title, body, metadata) values ($1, $2, $3) returning id",
            &[&title, &body, metadata],
        )
        .await
        .expect("insert a document")
        .get(0)
}

/// A document's revision counter.
async fn revision(client: &Client, id: i64) -> i32 {
    client
        .query_one("select revision from documents where id = $1", &[&id])
        .await
        .expect("read a revision")
        .get(0)
}

/// Waits for every task (a panic in one fails the test) and returns their results.
async fn join_all<T: 'static>(mut tasks: tokio::task::JoinSet<T>) -> Vec<T> {
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.expect("a task of the test panicked"));
    }
    results
}

async fn ids(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<i64> {
    client
        .query(sql, params)
        .await
        .expect("query")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The SQLSTATE and constraint of a failed statement.
fn violation(err: tokio_postgres::Error) -> (SqlState, Option<String>) {
    let db = err.as_db_error().expect("an error from the server");
    (db.code().clone(), db.constraint().map(str::to_owned))
}

async fn user(client: &Client, email: &str) -> i64 {
    client
        .query_one(
            "insert into users (email, password_hash) values ($1, '$argon2id$test') returning id",
            &[&email],
        )
        .await
        .expect("insert a user")
        .get(0)
}

// ---------------------------------------------------------------------------------------------
// Health

#[tokio::test]
async fn liveness_answers_without_touching_dependencies() {
    let app = TestApp::serve_router_with(|s| {
        s.test_database_url = support::closed_postgres_url();
        s.redis_url = support::closed_redis_url();
    })
    .await;
    let res = app.get("/health", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn readiness_is_ok_when_postgres_and_redis_are_up() {
    let app = TestApp::spawn_with(|s| s.strict_health_checks = true).await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200);
    assert_eq!(ready.status, ReadyStatus::Ok);
    assert!(ready.strict);
    assert!(ready.failed.is_empty(), "{ready:?}");
    for name in ["postgres", "redis"] {
        assert_eq!(ready.checks[name].status, CheckStatus::Up, "{name}");
    }
}

#[tokio::test]
async fn strict_readiness_answers_503_when_redis_is_down() {
    let app = TestApp::serve_router_with(|s| {
        s.strict_health_checks = true;
        s.redis_url = support::closed_redis_url();
    })
    .await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 503);
    assert_eq!(ready.status, ReadyStatus::Unavailable);
    assert_eq!(ready.failed, ["redis"]);
    assert_eq!(ready.checks["postgres"].status, CheckStatus::Up);
    // The unauthenticated answer names the dependency, not the driver's message.
    assert!(ready.checks["redis"].error.is_none());
}

#[tokio::test]
async fn non_strict_readiness_is_degraded_when_redis_is_down() {
    let app = TestApp::serve_router_with(|s| {
        s.strict_health_checks = false;
        s.redis_url = support::closed_redis_url();
    })
    .await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200);
    assert_eq!(ready.status, ReadyStatus::Degraded);
    assert!(!ready.strict);
    assert_eq!(ready.failed, ["redis"]);
}

#[tokio::test]
async fn strict_readiness_answers_503_when_postgres_is_down() {
    let app = TestApp::serve_router_with(|s| {
        s.strict_health_checks = true;
        s.test_database_url = support::closed_postgres_url();
    })
    .await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 503);
    assert_eq!(ready.failed, ["postgres"]);
    assert_eq!(ready.checks["redis"].status, CheckStatus::Up);
    // A request that needs the database says so in the API's error shape.
    let res = app.login("someone@example.com", "a password").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
}

#[tokio::test]
async fn readiness_checks_give_up_after_their_timeout() {
    // A "Redis" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let app = TestApp::serve_router_with(|s| {
        s.redis_url = support::url(&format!("redis://127.0.0.1:{port}/0"), Scheme::Redis);
    })
    .await;
    let start = Instant::now();
    let (status, ready) = readiness(&app).await;
    let elapsed = start.elapsed();
    assert_eq!((status, ready.status), (200, ReadyStatus::Degraded));
    assert_eq!(ready.failed, ["redis"]);
    assert!(
        elapsed < genesis_api::health::CHECK_TIMEOUT + Duration::from_secs(2),
        "readiness took {elapsed:?}"
    );
}

/// A TCP relay to `upstream` (`host:port`) that can be cut and restored on the same port: a
/// dependency going away and coming back, without touching the shared services.
async fn relay(listener: tokio::net::TcpListener, upstream: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Dropped with the task: cutting the relay also cuts the open connections.
        let mut links = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            links.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

fn address_of(url: &ServiceUrl, default_port: u16) -> String {
    format!("{}:{}", url.host(), url.port().unwrap_or(default_port))
}

#[tokio::test]
async fn readiness_follows_redis_going_away_and_coming_back() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let redis = address_of(&support::settings().redis_url, 6379);
    let link = relay(listener, redis.clone()).await;
    let app = TestApp::spawn_with(|s| {
        s.strict_health_checks = true;
        s.redis_url = support::url(&format!("redis://{addr}/0"), Scheme::Redis);
    })
    .await;
    assert_eq!(readiness(&app).await.0, 200);

    link.abort();
    let _ = link.await;
    let (status, ready) = readiness(&app).await;
    assert_eq!((status, ready.failed), (503, vec!["redis".to_owned()]));

    let link = relay(tokio::net::TcpListener::bind(addr).await.unwrap(), redis).await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(
        (status, ready.status),
        (200, ReadyStatus::Ok),
        "seen at once: {ready:?}"
    );
    link.abort();
}

#[tokio::test]
async fn non_strict_start_up_without_postgres_migrates_once_it_is_reachable() {
    // A port with nothing behind it yet; the relay opens there later.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let app = TestApp::spawn_with(|s| {
        s.strict_health_checks = false;
        s.test_database_url = s
            .test_database_url
            .with_address(&addr.ip().to_string(), addr.port());
    })
    .await;
    let (status, ready) = readiness(&app).await;
    assert_eq!((status, ready.status), (200, ReadyStatus::Degraded));
    assert_eq!(ready.failed, ["migrations", "postgres"]);
    assert_eq!(app.login("a@example.com", "a password").await.status(), 503);

    let postgres = address_of(&support::settings().test_database_url, 5432);
    let link = relay(tokio::net::TcpListener::bind(addr).await.unwrap(), postgres).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, ready) = readiness(&app).await;
        if ready.status == ReadyStatus::Ok {
            assert_eq!(status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {ready:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(app.state.migrated());
    assert_eq!(
        app.register("back@example.com", "long enough")
            .await
            .status(),
        201
    );
    link.abort();
}

#[tokio::test]
async fn strict_start_up_fails_naming_the_dependency_without_its_password() {
    let db = TestDb::new().await;
    let mut settings = support::settings();
    settings.test_database_url = db.url().clone();
    settings.strict_health_checks = true;
    settings.redis_url = support::url("redis://:canary-Pw7x@127.0.0.1:1/0", Scheme::Redis);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Server::build_with_listener(&settings, listener)
        .await
        .expect_err("strict start-up with Redis down must fail");
    let message = err.to_string();
    assert!(
        message.contains("redis is unhealthy at redis://"),
        "{message}"
    );
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("STRICT_HEALTH_CHECKS"), "{message}");
    assert!(
        !message.contains("canary-Pw7x"),
        "the password leaked: {message}"
    );
    assert!(!format!("{err:?}").contains("canary-Pw7x"));
}

#[tokio::test]
async fn non_strict_start_up_serves_degraded_without_redis() {
    let app = TestApp::spawn_with(|s| {
        s.strict_health_checks = false;
        s.redis_url = support::closed_redis_url();
    })
    .await;
    let (status, ready) = readiness(&app).await;
    assert_eq!((status, ready.status), (200, ReadyStatus::Degraded));
    assert_eq!(ready.failed, ["redis"]);
    // The API still serves what does not need Redis.
    assert_eq!(
        app.register("degraded@example.com", "long enough")
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let res = app.get("/no/such/route", None).await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].is_string());

    let res = app.get("/auth/login", None).await;
    assert_eq!(res.status(), 405);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

// ---------------------------------------------------------------------------------------------
// Migrations

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
    let before: Vec<String> = client
        .query(
            "select applied_at::text from schema_migrations order by version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for _ in 0..2 {
        let report = migrate::migrate(&mut client).await.unwrap();
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(report.already_applied, MIGRATIONS.len());
    }
    let after: Vec<String> = client
        .query(
            "select applied_at::text from schema_migrations order by version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
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

/// `value.pipe(f)`: keeps a chain of calls readable.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

// ---------------------------------------------------------------------------------------------
// JSONB

#[tokio::test]
async fn jsonb_round_trips_nested_values() {
    let (_db, client) = database().await;
    let metadata = json!({
        "tags": ["rust", "postgres"],
        "nested": {"depth": {"level": 3, "ok": true, "none": null}},
        "unicode": "héllo wörld ✓",
        "big": 9_007_199_254_740_993_i64,
        "ratio": 0.25,
    });
    let id = document(&client, "round trip", "", &metadata).await;
    let stored: Value = client
        .query_one("select metadata from documents where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, metadata);
}

#[tokio::test]
async fn jsonb_containment_and_key_queries() {
    let (_db, client) = database().await;
    let a = document(
        &client,
        "a",
        "",
        &json!({"tags": ["rust", "db"], "draft": true}),
    )
    .await;
    let b = document(&client, "b", "", &json!({"tags": ["rust"], "lang": "en"})).await;
    let c = document(&client, "c", "", &json!({"tags": ["go"], "lang": "fr"})).await;

    let contains = "select id from documents where metadata @> $1 order by id";
    assert_eq!(
        ids(&client, contains, &[&json!({"tags": ["rust"]})]).await,
        [a, b]
    );
    assert_eq!(
        ids(&client, contains, &[&json!({"tags": ["rust", "db"]})]).await,
        [a]
    );
    assert_eq!(ids(&client, contains, &[&json!({"lang": "fr"})]).await, [c]);
    assert!(
        ids(&client, contains, &[&json!({"tags": ["java"]})])
            .await
            .is_empty()
    );

    let has_key = "select id from documents where jsonb_exists(metadata, $1) order by id";
    assert_eq!(ids(&client, has_key, &[&"draft"]).await, [a]);
    assert_eq!(ids(&client, has_key, &[&"lang"]).await, [b, c]);
    let by_field = "select id from documents where metadata ->> 'lang' = $1";
    assert_eq!(ids(&client, by_field, &[&"en"]).await, [b]);
}

#[tokio::test]
async fn jsonb_path_queries() {
    let (_db, client) = database().await;
    let popular = document(
        &client,
        "popular",
        "",
        &json!({"stats": {"views": 250}, "authors": [{"name": "ada"}, {"name": "grace"}]}),
    )
    .await;
    document(
        &client,
        "quiet",
        "",
        &json!({"stats": {"views": 3}, "authors": [{"name": "alan"}]}),
    )
    .await;

    let over = "select id from documents where jsonb_path_exists(metadata, \
                '$.stats.views ? (@ > $min)', jsonb_build_object('min', $1::int)) order by id";
    assert_eq!(ids(&client, over, &[&100_i32]).await, [popular]);
    assert_eq!(ids(&client, over, &[&1000_i32]).await, Vec::<i64>::new());

    let row = client
        .query_one(
            "select jsonb_path_query_array(metadata, '$.authors[*].name'),
                    metadata #>> '{stats,views}'
             from documents where id = $1",
            &[&popular],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Value>(0), json!(["ada", "grace"]));
    assert_eq!(row.get::<_, String>(1), "250");
}

#[tokio::test]
async fn jsonb_updates_in_place_and_only_objects_are_accepted() {
    let (_db, client) = database().await;
    let id = document(
        &client,
        "edit",
        "",
        &json!({"a": 1, "b": {"c": 2}, "drop": true}),
    )
    .await;
    let updated: Value = client
        .query_one(
            "update documents
             set metadata = (jsonb_set(metadata, '{b,c}', $2) || $3) - 'drop'::text
             where id = $1 returning metadata",
            &[&id, &json!(20), &json!({"added": "yes"})],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(updated, json!({"a": 1, "b": {"c": 20}, "added": "yes"}));

    for not_an_object in [json!([1, 2]), json!("text"), json!(42)] {
        let err = client
            .execute(
                "insert into documents (title, metadata) values ('bad', $1)",
                &[&not_an_object],
            )
            .await
            .unwrap_err();
        assert_eq!(
            violation(err),
            (
                SqlState::CHECK_VIOLATION,
                Some("documents_metadata_object".into())
            )
        );
    }
}

#[tokio::test]
async fn jsonb_containment_is_served_by_the_gin_index() {
    let (_db, client) = database().await;
    for i in 0..50 {
        document(
            &client,
            &format!("doc {i}"),
            "",
            &json!({"n": i, "even": i % 2 == 0}),
        )
        .await;
    }
    client
        .batch_execute("analyze documents; set enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            r#"explain select id from documents where metadata @> '{"n": 7}'"#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("documents_metadata_idx"), "{plan}");
    let found = ids(
        &client,
        "select id from documents where metadata @> $1",
        &[&json!({"n": 7})],
    )
    .await;
    assert_eq!(found.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Full-text search

const ARTICLES: [(&str, &str); 4] = [
    (
        "Running PostgreSQL in containers",
        "How the test database runs beside the API.",
    ),
    (
        "Caching with Redis",
        "Redis keeps sessions; PostgreSQL keeps everything else.",
    ),
    ("Gardening notes", "Tomatoes need sun, water and patience."),
    (
        "Release checklist",
        "Run the database migrations before deploying.",
    ),
];

async fn articles(client: &Client) -> Vec<i64> {
    let mut ids = Vec::new();
    for (title, body) in ARTICLES {
        ids.push(document(client, title, body, &json!({})).await);
    }
    ids
}

const SEARCH: &str = "select id from documents
    where search @@ websearch_to_tsquery('english', $1)
    order by ts_rank(search, websearch_to_tsquery('english', $1)) desc, id";

#[tokio::test]
async fn full_text_search_matches_stemmed_words() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    // "run" matches "Running", "runs" and "Run"; "databases" matches "database".
    let mut found = self::ids(&client, SEARCH, &[&"run"]).await;
    found.sort();
    assert_eq!(found, [ids[0], ids[3]]);
    let mut found = self::ids(&client, SEARCH, &[&"databases"]).await;
    found.sort();
    assert_eq!(found, [ids[0], ids[3]]);
    assert!(
        self::ids(&client, SEARCH, &[&"kubernetes"])
            .await
            .is_empty()
    );
    // Stop words alone match nothing rather than everything.
    assert!(self::ids(&client, SEARCH, &[&"the and"]).await.is_empty());
}

#[tokio::test]
async fn full_text_search_ranks_title_matches_first() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    // "redis" is in the title of article 1 and only in the body of none else;
    // "postgresql" is in the title of article 0 and the body of article 1.
    assert_eq!(
        self::ids(&client, SEARCH, &[&"postgresql"]).await,
        [ids[0], ids[1]]
    );
    assert_eq!(self::ids(&client, SEARCH, &[&"redis"]).await, [ids[1]]);
}

#[tokio::test]
async fn web_search_syntax_supports_phrases_or_and_exclusion() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    assert_eq!(
        self::ids(&client, SEARCH, &[&"postgresql -redis"]).await,
        [ids[0]]
    );
    assert_eq!(
        self::ids(&client, SEARCH, &[&"\"database migrations\""]).await,
        [ids[3]]
    );
    let mut either = self::ids(&client, SEARCH, &[&"tomatoes or sessions"]).await;
    either.sort();
    assert_eq!(either, [ids[1], ids[2]]);
}

#[tokio::test]
async fn the_search_vector_follows_updates_and_uses_its_index() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    client
        .execute(
            "update documents set body = $2, revision = revision + 1 where id = $1",
            &[&ids[2], &"Compost and bees."],
        )
        .await
        .unwrap();
    assert!(self::ids(&client, SEARCH, &[&"tomatoes"]).await.is_empty());
    assert_eq!(self::ids(&client, SEARCH, &[&"bees"]).await, [ids[2]]);

    client
        .batch_execute("analyze documents; set enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            "explain select id from documents where search @@ to_tsquery('english', 'bee')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.join("\n").contains("documents_search_idx"), "{plan:?}");
}

// ---------------------------------------------------------------------------------------------
// Transactions

async fn count_users(client: &Client) -> i64 {
    client
        .query_one("select count(*) from users", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn committed_work_persists_and_rolled_back_work_vanishes() {
    let (db, mut client) = database().await;
    let tx = client.transaction().await.unwrap();
    user(tx.client(), "kept@example.com").await;
    tx.commit().await.unwrap();

    let tx = client.transaction().await.unwrap();
    user(tx.client(), "undone@example.com").await;
    assert_eq!(
        count_users(tx.client()).await,
        2,
        "visible inside the transaction"
    );
    tx.rollback().await.unwrap();

    {
        // Dropped without commit: rolled back too.
        let tx = client.transaction().await.unwrap();
        user(tx.client(), "dropped@example.com").await;
    }
    assert_eq!(
        count_users(&client).await,
        1,
        "the dropped transaction rolled back"
    );
    // Another connection sees only the committed row.
    let other = db.client().await;
    let emails: Vec<String> = other
        .query("select email from users", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(emails, ["kept@example.com"]);
}

#[tokio::test]
async fn uncommitted_work_is_invisible_to_other_connections() {
    let (db, mut client) = database().await;
    let other = db.client().await;
    let tx = client.transaction().await.unwrap();
    user(tx.client(), "pending@example.com").await;
    assert_eq!(count_users(&other).await, 0);
    tx.commit().await.unwrap();
    assert_eq!(count_users(&other).await, 1);
}

#[tokio::test]
async fn savepoints_roll_back_part_of_a_transaction() {
    let (_db, mut client) = database().await;
    let mut tx = client.transaction().await.unwrap();
    user(tx.client(), "outer@example.com").await;
    {
        let inner = tx.savepoint("sp_inner").await.unwrap();
        user(inner.client(), "inner@example.com").await;
        inner.rollback().await.unwrap();
    }
    {
        let kept = tx.savepoint("sp_kept").await.unwrap();
        user(kept.client(), "kept@example.com").await;
        kept.commit().await.unwrap();
    }
    tx.commit().await.unwrap();
    let emails: Vec<String> = client
        .query("select email from users order by email", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(emails, ["kept@example.com", "outer@example.com"]);
}

#[tokio::test]
async fn an_error_aborts_the_transaction_until_it_is_rolled_back() {
    let (_db, mut client) = database().await;
    user(&client, "taken@example.com").await;
    let tx = client.transaction().await.unwrap();
    user(tx.client(), "first@example.com").await;
    let err = tx
        .execute(
            "insert into users (email, password_hash) values ('taken@example.com', '$argon2id$x')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(violation(err).0, SqlState::UNIQUE_VIOLATION);
    let err = tx.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    tx.rollback().await.unwrap();
    assert_eq!(
        count_users(&client).await,
        1,
        "first@ went with the rollback"
    );
}

// ---------------------------------------------------------------------------------------------
// Constraints

#[tokio::test]
async fn unique_and_not_null_constraints_are_enforced() {
    let (_db, client) = database().await;
    user(&client, "once@example.com").await;
    let err = client
        .execute(
            "insert into users (email, password_hash) values ('once@example.com', '$argon2id$y')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        violation(err),
        (SqlState::UNIQUE_VIOLATION, Some("users_email_key".into()))
    );

    let err = client
        .execute(
            "insert into users (email, password_hash) values ($1, null)",
            &[&"n@example.com"],
        )
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(
        (db.code(), db.column()),
        (&SqlState::NOT_NULL_VIOLATION, Some("password_hash"))
    );
    let err = client
        .execute("insert into documents (title) values (null)", &[])
        .await
        .unwrap_err();
    assert_eq!(violation(err).0, SqlState::NOT_NULL_VIOLATION);
}

#[tokio::test]
async fn check_constraints_are_enforced() {
    let (_db, client) = database().await;
    let owner = user(&client, "owner@example.com").await;
    let long_title = "t".repeat(201);
    let cases: [(&str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>, &str); 6] = [
        (
            "insert into users (email, password_hash) values ('Upper@Example.com', '$argon2id$x')",
            vec![],
            "users_email_normalised",
        ),
        (
            "insert into users (email, password_hash) values ('no-at-sign', '$argon2id$x')",
            vec![],
            "users_email_shape",
        ),
        (
            "insert into users (email, password_hash) values ('plain@example.com', 'plaintext')",
            vec![],
            "users_password_hash_phc",
        ),
        (
            "insert into documents (title) values ($1)",
            vec![&long_title],
            "documents_title_length",
        ),
        (
            "insert into documents (title, revision) values ('r', 0)",
            vec![],
            "documents_revision_positive",
        ),
        (
            "insert into auth_tokens (user_id, token_hash, expires_at) \
             values ($1, '\\x01', now() + interval '1 hour')",
            vec![&owner],
            "auth_tokens_token_hash_len",
        ),
    ];
    for (sql, params, constraint) in cases {
        let err = client.execute(sql, &params).await.unwrap_err();
        assert_eq!(
            violation(err),
            (SqlState::CHECK_VIOLATION, Some(constraint.to_owned())),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn foreign_keys_are_enforced_and_cascade() {
    let (_db, client) = database().await;
    let err = client
        .execute(
            "insert into auth_tokens (user_id, token_hash, expires_at)
             values (424242, decode(repeat('ab', 32), 'hex'), now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(violation(err).0, SqlState::FOREIGN_KEY_VIOLATION);

    let owner = user(&client, "cascade@example.com").await;
    client
        .execute(
            "insert into auth_tokens (user_id, token_hash, expires_at)
             values ($1, decode(repeat('cd', 32), 'hex'), now() + interval '1 hour')",
            &[&owner],
        )
        .await
        .unwrap();
    client
        .execute(
            "insert into documents (owner_id, title) values ($1, 'mine')",
            &[&owner],
        )
        .await
        .unwrap();
    client
        .execute("delete from users where id = $1", &[&owner])
        .await
        .unwrap();
    let left: (i64, i64) = client
        .query_one(
            "select (select count(*) from auth_tokens), (select count(*) from documents)",
            &[],
        )
        .await
        .unwrap()
        .pipe(|r| (r.get(0), r.get(1)));
    assert_eq!(left, (0, 0));
}

// ---------------------------------------------------------------------------------------------
// Concurrent writers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_under_row_locks_lose_nothing() {
    const WRITERS: i32 = 8;
    const EACH: i32 = 10;
    let (db, client) = database().await;
    let id = document(&client, "counter", "", &json!({})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let url = db.url().clone();
        tasks.spawn(async move {
            let mut client = genesis_api::db::connect(&url).await.unwrap();
            for _ in 0..EACH {
                // Read, compute in the application, write: safe only because of the row lock.
                let tx = client.transaction().await.unwrap();
                let revision: i32 = tx
                    .query_one(
                        "select revision from documents where id = $1 for update",
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0);
                tokio::task::yield_now().await;
                tx.execute(
                    "update documents set revision = $2 where id = $1",
                    &[&id, &(revision + 1)],
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        });
    }
    join_all(tasks).await;
    assert_eq!(revision(&client, id).await, 1 + WRITERS * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_writers_retry_and_lose_nothing() {
    const WRITERS: i32 = 6;
    const EACH: i32 = 5;
    let (db, client) = database().await;
    let id = document(&client, "serial", "", &json!({})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let url = db.url().clone();
        tasks.spawn(async move {
            let mut client = genesis_api::db::connect(&url).await.unwrap();
            let mut retries = 0_u32;
            for _ in 0..EACH {
                loop {
                    let attempt = async {
                        let tx = client
                            .build_transaction()
                            .isolation_level(tokio_postgres::IsolationLevel::Serializable)
                            .start()
                            .await?;
                        let revision: i32 = tx
                            .query_one("select revision from documents where id = $1", &[&id])
                            .await?
                            .get(0);
                        tokio::task::yield_now().await;
                        tx.execute(
                            "update documents set revision = $2 where id = $1",
                            &[&id, &(revision + 1)],
                        )
                        .await?;
                        tx.commit().await
                    };
                    match attempt.await {
                        Ok(()) => break,
                        Err(err) if err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => {
                            retries += 1;
                            assert!(retries < 1000, "no progress");
                        }
                        Err(err) => panic!("unexpected error: {err}"),
                    }
                }
            }
            retries
        });
    }
    join_all(tasks).await;
    assert_eq!(revision(&client, id).await, 1 + WRITERS * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_create_one_account() {
    let app = TestApp::spawn().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let http = app.http.clone();
        let url = app.url("/auth/register");
        tasks.spawn(async move {
            http.post(url)
                .json(&json!({"email": "race@example.com", "password": "long enough"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut statuses = join_all(tasks).await;
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409]);
}

// ---------------------------------------------------------------------------------------------
// Redis

#[tokio::test]
async fn redis_set_get_and_expiry() {
    let mut ns = RedisNs::new().await;
    let (kept, fleeting) = (ns.key("kept"), ns.key("fleeting"));
    let () = ns.conn.set_ex(&kept, "value", 60).await.unwrap();
    let () = ns.conn.pset_ex(&fleeting, "soon gone", 150).await.unwrap();
    let got: Option<String> = ns.conn.get(&kept).await.unwrap();
    assert_eq!(got.as_deref(), Some("value"));
    let ttl: i64 = ns.conn.pttl(&fleeting).await.unwrap();
    assert!((1..=150).contains(&ttl), "pttl {ttl}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let gone: Option<String> = ns.conn.get(&fleeting).await.unwrap();
    assert_eq!(gone, None);
    let missing: Option<String> = ns.conn.get(ns.key("never-set")).await.unwrap();
    assert_eq!(missing, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_incr_is_atomic_across_tasks() {
    let ns = RedisNs::new().await;
    let key = ns.key("hits");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut conn = ns.conn.clone();
        let key = key.clone();
        tasks.spawn(async move {
            for _ in 0..25 {
                let _: i64 = conn.incr(&key, 1).await.unwrap();
            }
        });
    }
    join_all(tasks).await;
    let mut conn = ns.conn.clone();
    let total: i64 = conn.get(&key).await.unwrap();
    assert_eq!(total, 200);
}

#[tokio::test]
async fn redis_atomic_pipelines_apply_together() {
    let mut ns = RedisNs::new().await;
    let (name, count, profile) = (ns.key("name"), ns.key("count"), ns.key("profile"));
    // HMSET answers OK, not a count.
    let (set, incremented, fields): ((), i64, ()) = redis::pipe()
        .atomic()
        .set_ex(&name, "genesis", 60)
        .incr(&count, 5)
        .hset_multiple(&profile, &[("lang", "rust"), ("db", "postgres")])
        .query_async(&mut ns.conn)
        .await
        .unwrap();
    assert_eq!((set, incremented, fields), ((), 5, ()));
    let size: i64 = ns.conn.hlen(&profile).await.unwrap();
    assert_eq!(size, 2);
    let profile_map: std::collections::BTreeMap<String, String> =
        ns.conn.hgetall(&profile).await.unwrap();
    assert_eq!(profile_map["db"], "postgres");
    let () = ns.conn.expire(&count, 60).await.unwrap();
    let () = ns.conn.expire(&profile, 60).await.unwrap();
    assert_eq!(ns.keys().await, {
        let mut all = vec![count, name, profile];
        all.sort();
        all
    });
}

#[tokio::test]
async fn redis_namespaces_keep_tests_apart_and_are_cleaned_up() {
    let mut first = RedisNs::new().await;
    let mut second = RedisNs::new().await;
    assert_ne!(first.prefix, second.prefix);
    let () = first
        .conn
        .set_ex(first.key("shared"), "first", 60)
        .await
        .unwrap();
    let () = second
        .conn
        .set_ex(second.key("shared"), "second", 60)
        .await
        .unwrap();
    let got: String = second.conn.get(second.key("shared")).await.unwrap();
    assert_eq!(got, "second");
    assert_eq!(first.keys().await, [first.key("shared")]);

    let first_key = first.key("shared");
    drop(first);
    let gone: Option<String> = second.conn.get(&first_key).await.unwrap();
    assert_eq!(gone, None, "dropping a namespace deletes its keys");
}

// ---------------------------------------------------------------------------------------------
// Host or container

/// The settings this process would resolve with `RUNNING_IN_DOCKER` set to `flag`.
fn resolve_with_flag(flag: &str) -> Settings {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != "RUNNING_IN_DOCKER")
        .collect();
    vars.push(("RUNNING_IN_DOCKER".into(), flag.into()));
    let cwd = std::env::current_dir().unwrap();
    Settings::resolve(&vars, &cwd, Some(Env::Test)).unwrap()
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[test]
fn the_runtime_is_container_exactly_when_running_in_docker_is_set() {
    let flag = std::env::var("RUNNING_IN_DOCKER").unwrap_or_default();
    let truthy = matches!(
        flag.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    );
    let settings = support::settings();
    assert_eq!(
        settings.runtime == Runtime::Container,
        truthy,
        "RUNNING_IN_DOCKER={flag:?}"
    );
    assert_eq!(resolve_with_flag("1").runtime, Runtime::Container);
    assert_eq!(resolve_with_flag("0").runtime, Runtime::Host);
    assert_eq!(settings.environment, Env::Test);
}

#[test]
fn service_addresses_follow_the_runtime() {
    let host = resolve_with_flag("0");
    let container = resolve_with_flag("1");
    let check = |on_host: &ServiceUrl,
                 in_network: &ServiceUrl,
                 model_host: genesis_model::Address,
                 model_network: genesis_model::Address| {
        // Only the address may change between the modes.
        assert_eq!(
            on_host.with_address("x", 1),
            in_network.with_address("x", 1)
        );
        if is_loopback(on_host.host()) && on_host.port() == Some(model_host.port) {
            assert_eq!(
                (in_network.host(), in_network.port()),
                (model_network.host, Some(model_network.port))
            );
        } else {
            assert_eq!(
                on_host, in_network,
                "an address the user chose is left alone"
            );
        }
    };
    let db = genesis_model::TEST_DB;
    check(
        &host.test_database_url,
        &container.test_database_url,
        db.host_address.unwrap(),
        db.network_address.unwrap(),
    );
    let redis = genesis_model::REDIS;
    check(
        &host.redis_url,
        &container.redis_url,
        redis.host_address,
        redis.network_address,
    );

    // This process uses the URL of its own runtime.
    let current = support::settings();
    let expected = match current.runtime {
        Runtime::Host => &host,
        Runtime::Container => &container,
    };
    assert_eq!(current.test_database_url, expected.test_database_url);
    assert_eq!(current.redis_url, expected.redis_url);
    match current.runtime {
        // A compose service name does not resolve on the host ...
        Runtime::Host => assert_ne!(current.test_database_url.host(), "test-db"),
        // ... and inside a container, loopback is the container itself.
        Runtime::Container => assert!(!is_loopback(current.test_database_url.host())),
    }
}

#[tokio::test]
async fn the_resolved_urls_really_connect() {
    let settings = support::settings();
    let client = support::admin().await;
    let row = client
        .query_one(
            "select current_database(), current_user, current_setting('server_version_num')::int",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        settings.test_database_url.database()
    );
    assert_eq!(row.get::<_, String>(1), settings.test_database_url.user());
    let version: i32 = row.get(2);
    assert!(
        (150_000..160_000).contains(&version),
        "PostgreSQL 15 everywhere, got {version}"
    );

    let mut redis = support::redis_connection(&settings.redis_url).await;
    let pong: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn each_test_database_is_private_and_dropped_afterwards() {
    let (a, b) = (TestDb::new().await, TestDb::new().await);
    assert!(a.name().starts_with(support::DB_PREFIX));
    assert_ne!(a.name(), b.name());
    user(&a.client().await, "only-in-a@example.com").await;
    assert_eq!(count_users(&b.client().await).await, 0);

    let name = a.name().to_owned();
    drop(a);
    let admin = support::admin().await;
    let left = admin
        .query_opt("select 1 from pg_database where datname = $1", &[&name])
        .await
        .unwrap();
    assert!(left.is_none(), "{name} was not dropped");
}
