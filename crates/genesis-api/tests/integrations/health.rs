//! Liveness and readiness in strict and non-strict mode, and start-up with a dependency down.

use super::*;

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
    let port = support::silent_listener().await;
    // Redis's check alone waits 200 ms; PostgreSQL keeps the tests' generous timeout, so that
    // a loaded machine cannot make it miss a timeout that this test is not about.
    let timeout = Duration::from_millis(200);
    let app = TestApp::serve_state_with(
        |s| s.redis_url = support::url(&format!("redis://127.0.0.1:{port}/0"), Scheme::Redis),
        |state| {
            let timeouts = genesis_api::CheckTimeouts {
                redis: timeout,
                ..state.health_check_timeouts()
            };
            state
                .with_health_check_timeouts(timeouts)
                .expect("a state not shared yet")
        },
    )
    .await;
    assert_ne!(app.state.health_check_timeouts().postgres, timeout);
    // The check gave up because of its timeout, not because of an error: no assertion on how
    // long it took, which a loaded machine can stretch. The reason is for the log only (the
    // HTTP answer names the dependency alone), so it is read from the check itself, at the
    // same time as the HTTP answer (each waits for the whole timeout).
    let ((status, ready), internal) =
        tokio::join!(readiness(&app), genesis_api::health::readiness(&app.state));
    assert_eq!((status, ready.status), (200, ReadyStatus::Degraded));
    assert_eq!(ready.failed, ["redis"]);
    let check = &internal.checks["redis"];
    assert_eq!(
        check.error.as_deref(),
        Some(format!("no answer within {} ms", timeout.as_millis()).as_str())
    );
    assert!(check.latency_ms >= timeout.as_millis() as u64, "{check:?}");
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
    let deadline = Instant::now() + support::EFFECT_WAIT;
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
