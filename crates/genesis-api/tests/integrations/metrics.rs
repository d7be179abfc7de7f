//! Monitoring and limits: `/metrics` read by a Prometheus text parser (`prometheus-parse`),
//! readiness without the driver's message, and the bound on concurrent password hashing.

use std::sync::Arc;

use genesis_api::limits::QUEUE_PER_SLOT;
use genesis_settings::Scheme;
use prometheus_parse::{Scrape, Value};

use crate::support::{self, TestApp};

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .unwrap_or_else(|err| panic!("not the Prometheus text format: {err}\n{text}"))
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(f64::NAN, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_pool_readiness_and_hashing() {
    let app = TestApp::spawn_with(|s| {
        s.pool_size = 7;
        s.hash_concurrency = 3;
    })
    .await;
    assert_eq!(app.get("/health", None).await.status(), 200);
    assert_eq!(app.get("/auth/me", None).await.status(), 401);
    assert_eq!(app.get("/auth/me", None).await.status(), 401);
    // Unrouted paths share one label, whatever the path.
    assert_eq!(app.get("/no/such/route/12345", None).await.status(), 404);

    let scrape = scrape(&app).await;
    let requests = |labels: &[(&str, &str)]| value(&scrape, "genesis_http_requests_total", labels);
    assert_eq!(
        requests(&[("route", "/auth/me"), ("method", "GET"), ("status", "401")]),
        Some(2.0)
    );
    assert_eq!(
        requests(&[("route", "/health"), ("status", "200")]),
        Some(1.0)
    );
    assert_eq!(
        requests(&[("route", "unmatched"), ("status", "404")]),
        Some(1.0)
    );
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.labels.values().any(|v| v.contains("12345"))),
        "a raw path became a label"
    );
    // The histogram's +Inf bucket holds every request of the route.
    let latency = "genesis_http_request_duration_seconds";
    assert_eq!(value(&scrape, latency, &[("route", "/auth/me")]), Some(2.0));
    assert!(scrape.docs.contains_key(latency), "no HELP for {latency}");

    for dependency in ["postgres", "redis"] {
        assert_eq!(
            value(
                &scrape,
                "genesis_dependency_up",
                &[("dependency", dependency)]
            ),
            Some(1.0),
            "{dependency}"
        );
    }
    assert_eq!(value(&scrape, "genesis_db_pool_max_size", &[]), Some(7.0));
    assert!(value(&scrape, "genesis_db_pool_connections_idle", &[]).is_some());
    assert!(value(&scrape, "genesis_db_pool_connections_in_use", &[]).is_some());
    assert_eq!(value(&scrape, "genesis_db_pool_waiting", &[]), Some(0.0));
    assert_eq!(
        value(&scrape, "genesis_password_hashing_capacity", &[]),
        Some(3.0)
    );
    assert_eq!(
        value(&scrape, "genesis_password_hashing_rejected_total", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn readiness_names_the_failed_dependency_without_the_driver_message() {
    let canary = "canary-Rd9q";
    let app = TestApp::serve_router_with(|s| {
        s.strict_health_checks = true;
        let wrong =
            s.test_database_url
                .expose()
                .replacen(":test_password@", &format!(":{canary}@"), 1);
        s.test_database_url = support::url(&wrong, Scheme::Postgres);
    })
    .await;
    let response = app.get("/health/ready", None).await;
    assert_eq!(response.status(), 503);
    let text = response.text().await.unwrap();
    assert!(text.contains(r#""failed":["postgres"]"#), "{text}");
    for leak in ["password authentication", "test_user", canary, "error"] {
        assert!(
            !text.contains(leak),
            "{leak:?} in the readiness answer: {text}"
        );
    }
    let scrape = scrape(&app).await;
    assert_eq!(
        value(
            &scrape,
            "genesis_dependency_up",
            &[("dependency", "postgres")]
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hashing_queue_answers_503_with_retry_after() {
    let app = Arc::new(TestApp::spawn_with(|s| s.hash_concurrency = 1).await);
    // The one hashing slot is held by the test until every login has arrived, so that the
    // outcome depends on the queue's length, not on how fast a loaded machine hashes: the queue
    // takes QUEUE_PER_SLOT logins and the others are turned away at once.
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let busy = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.state.hashing().run(move || hold.recv().ok()).await })
    };
    while app.state.hashing().running() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    const LOGINS: usize = 12;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..LOGINS {
        let app = Arc::clone(&app);
        tasks.spawn(async move {
            let response = app
                .login(&format!("nobody{i}@example.com"), "wrong password")
                .await;
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (response_status(&body), retry_after, body)
        });
    }
    let mut turned_away = 0;
    let mut answered = 0;
    // The turned-away logins answer while the slot is still held; then the queue drains.
    while turned_away < LOGINS - QUEUE_PER_SLOT {
        let (code, retry_after, body) = tasks.join_next().await.unwrap().unwrap();
        assert_eq!(code, "overloaded", "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
        turned_away += 1;
    }
    assert_eq!(app.state.hashing().waiting(), QUEUE_PER_SLOT);
    release.send(()).unwrap();
    assert!(busy.await.unwrap().is_ok());
    while let Some(outcome) = tasks.join_next().await {
        let (code, retry_after, body) = outcome.unwrap();
        assert_eq!(code, "invalid_credentials", "{body}");
        assert_eq!(retry_after, None);
        answered += 1;
    }
    assert_eq!(answered, QUEUE_PER_SLOT);
    let turned_away = u32::try_from(turned_away).unwrap();
    let scrape = scrape(&app).await;
    assert_eq!(
        value(&scrape, "genesis_password_hashing_rejected_total", &[]),
        Some(f64::from(turned_away))
    );
    assert_eq!(
        value(
            &scrape,
            "genesis_http_requests_total",
            &[("route", "/auth/login"), ("status", "503")]
        ),
        Some(f64::from(turned_away))
    );
}

fn response_status(body: &serde_json::Value) -> String {
    body["error"]["code"]
        .as_str()
        .unwrap_or("(no error code)")
        .to_owned()
}

#[tokio::test]
async fn a_request_past_its_deadline_answers_503() {
    // Readiness waits up to 10 s on a Redis that never answers; the deadline is 200 ms (the
    // settings' type takes any duration; the variable counts whole seconds).
    let port = support::silent_listener().await;
    let app = TestApp::serve_router_with(|s| {
        s.request_timeout = std::time::Duration::from_millis(200);
        s.health_check_timeout = std::time::Duration::from_secs(10);
        s.redis_url = support::url(&format!("redis://127.0.0.1:{port}/0"), Scheme::Redis);
    })
    .await;
    let response = app.get("/health/ready", None).await;
    assert_eq!(response.status(), 503);
    // The code says the deadline answered, not the readiness check giving up (which answers
    // 200 degraded): no assertion on wall-clock time, which a loaded machine can stretch.
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 250 ms rather than the 10 s default (the settings' type takes any duration; the
    // variable counts whole seconds).
    let limit = std::time::Duration::from_millis(250);
    let app = TestApp::spawn_with(|s| s.header_read_timeout = limit).await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    // The server closes at `limit`; a loaded machine may be late to notice, so the read is
    // bounded only by how long the run lets a test live.
    let read =
        tokio::time::timeout(limit + support::EFFECT_WAIT, socket.read_to_end(&mut rest)).await;
    let elapsed = start.elapsed();
    assert!(read.is_ok(), "still connected after {elapsed:?}");
    assert!(
        elapsed >= limit.mul_f32(0.9),
        "closed after {elapsed:?}, before the header timeout"
    );
    // Whatever hyper says on the way out, it is not the answer to the request.
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "{rest:?}"
    );
}
