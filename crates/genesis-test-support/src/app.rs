//! The real API served on an ephemeral port over a test's own database, Redis namespaces
//! per test, and small helpers the suites share (a listener that never answers, a query's
//! text column).

use std::net::SocketAddr;
use std::time::Duration;

use genesis_api::{AppState, Server, router};
use genesis_settings::{ServiceUrl, Settings};
use redis::AsyncCommands;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{EFFECT_WAIT, HINT, TestDb, settings, unique_suffix};

/// The real API, served on `127.0.0.1:<ephemeral>` over a database of its own.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    // Dropped last: the server's connections go with it.
    pub db: TestDb,
}

impl TestApp {
    /// Starts the API through its real start-up path (health checks, migrations).
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// Like [`TestApp::spawn`], with the settings adjusted first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let db = TestDb::new().await;
        let settings = app_settings(&db, adjust);
        require_redis(&settings).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::build_with_listener(&settings, listener)
            .await
            .unwrap_or_else(|err| panic!("the API did not start: {err}"));
        let addr = server.local_addr().expect("local address");
        let state = server.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.run_until(async {
            let _ = rx.await;
        }));
        TestApp::new(addr, state, tx, db)
    }

    /// Serves the router without the start-up checks, for dependencies that are down on
    /// purpose while checks are strict (which the start-up path would refuse).
    pub async fn serve_router_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::serve_state_with(adjust, |state| state).await
    }

    /// Like [`TestApp::serve_router_with`], with the state adjusted before it is served.
    pub async fn serve_state_with(
        adjust: impl FnOnce(&mut Settings),
        adjust_state: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        let db = TestDb::new().await;
        let settings = app_settings(&db, adjust);
        require_redis(&settings).await;
        let state = adjust_state(AppState::new(&settings).expect("state"));
        let (addr, tx) = serve(state.clone()).await;
        TestApp::new(addr, state, tx, db)
    }

    fn new(addr: SocketAddr, state: AppState, tx: oneshot::Sender<()>, db: TestDb) -> TestApp {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client");
        TestApp {
            addr,
            http,
            state,
            shutdown: Some(tx),
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("GET")
    }

    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.post(self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("POST")
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        let body = serde_json::json!({ "email": email, "password": password });
        self.post("/auth/register", Some(body), None).await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        let body = serde_json::json!({ "email": email, "password": password });
        self.post("/auth/login", Some(body), None).await
    }

    /// Registers and logs in; returns the token.
    pub async fn user_token(&self, email: &str, password: &str) -> String {
        assert_eq!(self.register(email, password).await.status(), 201);
        let res = self.login(email, password).await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.expect("a JSON body");
        body["access_token"]
            .as_str()
            .expect("an access_token")
            .to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves the router over `state` (whose database is migrated) on an ephemeral port, until
/// the returned sender is dropped or sent to.
pub async fn serve(state: AppState) -> (SocketAddr, oneshot::Sender<()>) {
    state.mark_migrated();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    (addr, tx)
}

/// The API serves without Redis when checks are not strict, so a suite that never touches
/// Redis itself would pass with it down: fail instead, unless the test pointed Redis elsewhere
/// on purpose.
async fn require_redis(settings: &Settings) {
    let configured = self::settings().redis_url;
    if settings.redis_url == configured {
        drop(redis_connection(&configured).await);
    }
}

fn app_settings(db: &TestDb, adjust: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = settings();
    // In the test environment the API serves from the test database URL: this test's own.
    settings.test_database_url = db.url().clone();
    // The limits a loaded machine can reach (a readiness check, the wait for a pooled
    // connection, the request deadline) are as long as the run lets a test live, unless the
    // test is about one of them and `adjust` sets it.
    settings.health_check_timeout = EFFECT_WAIT;
    settings.pool_timeout = EFFECT_WAIT;
    settings.request_timeout = EFFECT_WAIT;
    adjust(&mut settings);
    settings
}

/// A Redis connection whose keys all start with a prefix of this test's own, deleted when the
/// value is dropped, so that parallel tests and runs never see each other's keys.
pub struct RedisNs {
    pub prefix: String,
    pub conn: redis::aio::MultiplexedConnection,
}

impl std::fmt::Debug for RedisNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisNs({})", self.prefix)
    }
}

impl RedisNs {
    pub async fn new() -> RedisNs {
        let url = settings().redis_url;
        RedisNs {
            prefix: format!("genesis:test:{}:", unique_suffix()),
            conn: redis_connection(&url).await,
        }
    }

    /// `name` inside this test's namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub async fn keys(&mut self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .conn
            .keys(format!("{}*", self.prefix))
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }
}

impl Drop for RedisNs {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        let dropper = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(settings().redis_url.expose()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
        });
        let _ = dropper.join();
    }
}

/// A connection to the Redis at `url`; fails the test, saying how to start it, when it is
/// unreachable.
pub async fn redis_connection(url: &ServiceUrl) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url.expose()).expect("a valid Redis URL");
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5));
    match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(conn) => conn,
        Err(err) => panic!("cannot reach Redis at {url}: {err}\n{HINT}"),
    }
}

/// A listener on loopback that accepts connections and never answers: a dependency that hangs.
/// Returns its port.
pub async fn silent_listener() -> u16 {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    port
}

/// The first column of every row `sql` returns, as text.
pub async fn texts(client: &impl tokio_postgres::GenericClient, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
