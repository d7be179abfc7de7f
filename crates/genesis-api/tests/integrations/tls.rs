//! TLS to the test database: `verify-full` against the CA the test set-up made, refused with
//! another CA or another host name, and `require` refused by a server without TLS.
//!
//! The test database serves TLS with a certificate for `localhost`, `127.0.0.1` and `test-db`,
//! signed by a CA that `cargo xtask test` makes for the run; `TEST_DATABASE_CA` names that CA's
//! file as this process sees it (on the host or in the container).

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use genesis_api::health::ReadyStatus;
use genesis_api::{Server, db};
use genesis_settings::{Scheme, ServiceUrl};

use crate::support::{self, TestApp, TestDb};

/// The variable naming the test database's CA file.
const CA_VAR: &str = genesis_model::TEST_DB_TLS.ca_var;

/// A CA certificate that signed nothing the tests meet (its key was thrown away). Embedded and
/// written out at run time: the source tree's path differs on the host and in the container.
const OTHER_CA_PEM: &str = include_str!("other-ca.pem");

fn other_ca() -> String {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let path = PATH.get_or_init(|| {
        // One file for every run, replaced atomically so that parallel runs never read half.
        let path = std::env::temp_dir().join("genesis-tests-other-ca.pem");
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, OTHER_CA_PEM).expect("write the other CA");
        std::fs::rename(&tmp, &path).expect("move the other CA into place");
        path
    });
    path.to_str().expect("a UTF-8 temp path").to_owned()
}

/// The test database's CA: `TEST_DATABASE_CA`, else the one the xtask made for this checkout's
/// stacks (`target/xtask/tls/ca.crt` under the workspace, as this process sees it), so that
/// plain `cargo test` after `cargo xtask db-up` needs nothing set.
fn test_ca() -> PathBuf {
    if let Some(path) = std::env::var_os(CA_VAR).map(PathBuf::from) {
        assert!(path.is_file(), "{CA_VAR}={} is not a file", path.display());
        return path;
    }
    // Cargo and nextest give a test its package's folder (nextest remapped to the workspace
    // the archive runs in); the workspace is two folders up.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = manifest
        .join("../..")
        .join(genesis_model::TEST_DB_TLS.dir)
        .join("ca.crt");
    assert!(
        path.is_file(),
        "{CA_VAR} is not set and {} does not exist: these tests need the test database to \
         serve TLS; `cargo xtask db-up` (or `cargo xtask test`) makes its CA there, or set \
         {CA_VAR} to the CA of a test server that serves TLS (see the README, section TLS)",
        path.display()
    );
    path
}

/// `url` with libpq parameters added.
fn with_params(url: &ServiceUrl, params: &str) -> ServiceUrl {
    let raw = url.expose();
    let sep = if raw.contains('?') { '&' } else { '?' };
    support::url(&format!("{raw}{sep}{params}"), Scheme::Postgres)
}

fn verify(url: &ServiceUrl, mode: &str, ca: &str) -> ServiceUrl {
    with_params(url, &format!("sslmode={mode}&sslrootcert={ca}"))
}

/// Whether the session behind `client` is encrypted, as the server sees it.
async fn server_says_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("read pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn verify_full_with_the_test_ca_serves_ready_over_tls() {
    let ca = test_ca();
    let ca = ca.to_str().unwrap();
    let app = TestApp::spawn_with(|s| {
        s.strict_health_checks = true;
        s.test_database_url = verify(&s.test_database_url, "verify-full", ca);
    })
    .await;
    let (status, body) = {
        let response = app.get("/health/ready", None).await;
        (
            response.status().as_u16(),
            response
                .json::<genesis_api::health::Readiness>()
                .await
                .unwrap(),
        )
    };
    assert_eq!((status, body.status), (200, ReadyStatus::Ok), "{body:?}");
    let client = app.state.pool().get().await.unwrap();
    assert!(
        server_says_ssl(&client).await,
        "the pool's session is not encrypted"
    );
}

#[tokio::test]
async fn another_ca_stops_strict_start_up_naming_tls_and_the_host() {
    let db = TestDb::new().await;
    let mut settings = support::settings();
    settings.strict_health_checks = true;
    settings.test_database_url = verify(db.url(), "verify-full", &other_ca());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Server::build_with_listener(&settings, listener)
        .await
        .expect_err("another CA must not be trusted");
    let message = err.to_string();
    assert!(message.contains("TLS"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains(db.url().host()), "{message}");
    assert!(!message.contains("test_password"), "{message}");
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let ca = test_ca();
    let ca = ca.to_str().unwrap();
    let db = TestDb::new().await;
    // The same server under a name its certificate does not carry: `hostaddr` says where to
    // connect, `host` what to expect.
    let url = db.url();
    let port = url.port().unwrap_or(5432);
    let ip = (url.host(), port)
        .to_socket_addrs()
        .expect("resolve the test database")
        .find(|a| a.is_ipv4())
        .expect("an IPv4 address")
        .ip();
    let renamed = with_params(
        &url.with_address("not-in-the-certificate.invalid", port),
        &format!("hostaddr={ip}"),
    );

    let err = db::connect(&verify(&renamed, "verify-full", ca))
        .await
        .expect_err("verify-full must refuse a name the certificate does not hold");
    let message = err.to_string();
    assert!(message.contains("not valid for name"), "{message}");
    assert!(
        message.contains("not-in-the-certificate.invalid"),
        "{message}"
    );

    let client = db::connect(&verify(&renamed, "verify-ca", ca))
        .await
        .unwrap_or_else(|err| panic!("verify-ca checks the chain only: {err}"));
    assert!(server_says_ssl(&client).await);
    let err = db::connect(&verify(&renamed, "verify-ca", &other_ca()))
        .await
        .expect_err("verify-ca still checks the chain");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn disable_stays_plaintext_and_prefer_encrypts() {
    let db = TestDb::new().await;
    let plain = db::connect(&with_params(db.url(), "sslmode=disable"))
        .await
        .unwrap();
    assert!(!server_says_ssl(&plain).await);
    let preferred = db::connect(&with_params(db.url(), "sslmode=prefer"))
        .await
        .unwrap();
    assert!(
        server_says_ssl(&preferred).await,
        "prefer must use the server's TLS"
    );
}

/// A server without TLS answers the client's SSLRequest with the single byte `N`; that is all
/// of PostgreSQL's side of it (`ProcessStartupPacket` with `ssl=off`).
async fn server_without_tls() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                // Length 8, code 80877103: an SSLRequest.
                assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
                let _ = socket.write_all(b"N").await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn require_is_refused_by_a_server_without_tls() {
    let addr = server_without_tls().await;
    let url = support::url(
        &format!("postgresql://test_user:test_password@{addr}/test_db?sslmode=require"),
        Scheme::Postgres,
    );
    let err = db::connect(&url)
        .await
        .expect_err("require must not fall back to plaintext");
    assert!(
        err.to_string().contains("server does not support TLS"),
        "{err}"
    );
}
