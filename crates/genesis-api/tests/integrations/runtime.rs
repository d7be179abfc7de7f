//! Host or container: the runtime detection and the addresses it resolves, and the isolation each
//! test gets.

use super::*;

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
    matches!(host, "localhost" | "127.0.0.1" | "::1")
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
    let db = genesis_model::TEST_DB_SERVICE;
    check(
        &host.test_database_url,
        &container.test_database_url,
        db.host_address,
        db.network_address,
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
    // The run's pool server drops it behind its answer, once the test's sessions are gone.
    assert!(
        support::dropped(&admin, &name).await,
        "{name} was not dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_server_hands_out_takes_back_and_refuses_what_is_not_its_own() {
    use support::pool;
    let socket = std::env::temp_dir().join(format!("genesis-{}.sock", support::unique_suffix()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.clone();
        async move {
            let ready = move || {
                let _ = ready_tx.send(());
            };
            let stop = async { drop(stop_rx.await) };
            pool::serve(&socket, pool::Ready::Listening, ready, stop).await
        }
    });
    ready_rx.await.expect("the server is ready");
    let ask = |request: String| {
        let socket = socket.clone();
        async move {
            tokio::task::spawn_blocking(move || pool::ask(&socket, &request))
                .await
                .unwrap()
                .expect("the server answers")
        }
    };

    let reply = ask(format!("checkout {}", support::template_digest())).await;
    let words: Vec<&str> = reply.split(' ').collect();
    assert!(
        words.len() == 3 && words[0] == "ok" && ["hit", "miss"].contains(&words[2]),
        "{reply}"
    );
    let db = TestDb::adopt(words[1].to_owned());
    assert!(db.name().starts_with(support::DB_PREFIX));
    assert_eq!(count_users(&db.client().await).await, 0, "a migrated clone");

    // Another build's tests get no clone of this build's template.
    let reply = ask("checkout 0000000000000000".into()).await;
    assert!(
        reply.starts_with("error: this server hands out clones of "),
        "{reply}"
    );
    // Nothing but test databases is taken back, and nothing else is understood.
    assert!(ask("release test_db".into()).await.starts_with("error:"));
    assert!(ask("drop everything".into()).await.starts_with("error:"));

    let name = db.name().to_owned();
    assert_eq!(ask(format!("keep {name} failed test x")).await, "ok");
    let admin = support::admin().await;
    let comment: Option<String> = admin
        .query_one(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("genesis kept: failed test x"));
    assert_eq!(ask(format!("release {name}")).await, "ok");
    assert!(
        support::dropped(&admin, &name).await,
        "{name} was not dropped"
    );
    drop(db); // Given back once more: a database already gone is left alone.

    stop_tx.send(()).unwrap();
    server.await.unwrap().expect("the server stops cleanly");
    assert!(!socket.exists(), "the socket is removed");
}
