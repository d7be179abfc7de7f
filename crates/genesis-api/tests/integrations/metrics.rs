//! Monitoring and limits: `/metrics` read by a Prometheus text parser (`prometheus-parse`),
//! readiness without the driver's message, and the bound on concurrent password hashing.

use std::sync::Arc;

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
    // One slot and its short queue hold a few logins; others arriving meanwhile are turned away.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
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
    while let Some(outcome) = tasks.join_next().await {
        let (code, retry_after, body) = outcome.unwrap();
        match code.as_str() {
            "invalid_credentials" => assert_eq!(retry_after, None),
            "overloaded" => {
                assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
                turned_away += 1;
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert!(
        turned_away > 0,
        "64 concurrent logins on one hashing slot were all queued"
    );
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
