//! The HTTP layer answers every request, whatever its path or headers hold, and counts it:
//! raw bytes over TCP to the real server loop, and arbitrary requests through the router.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use genesis_model::Env;
use genesis_settings::Settings;
use proptest::prelude::*;
use tower::ServiceExt;

use super::*;

/// A state whose dependencies are unreachable (nothing listens on port 1): the HTTP layer
/// needs none of them to answer.
fn state() -> AppState {
    let dir = std::env::temp_dir().join(format!("genesis-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let process = [
        (
            "TEST_DATABASE_URL",
            "postgresql://u:http-canary-pw@127.0.0.1:1/db?sslmode=disable",
        ),
        ("REDIS_URL", "redis://127.0.0.1:1/0"),
        ("HEALTH_CHECK_TIMEOUT_MS", "200"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let settings = Settings::resolve(&process, &dir, Some(Env::Test)).unwrap();
    AppState::new(&settings).unwrap()
}

/// Writes `request` as raw bytes and returns the status line of the answer (`Connection:
/// close`, or hyper closing after a 400, ends it).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    raw_answer(addr, request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn raw_bytes_in_the_path_or_headers_get_an_answer_and_are_counted() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server {
            listener,
            state: state(),
        };
        tokio::spawn(server.run_until(std::future::pending()));
        addr
    });
    let requests: [(&[u8], &str); 7] = [
        (
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "404",
        ),
        (
            b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "404",
        ),
        (
            b"GET /\xff\xfe%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "4",
        ),
        (
            b"GET /password=s3cret\xc3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "4",
        ),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Odd: \xff\xc3\xa9\r\nConnection: close\r\n\r\n",
            "200",
        ),
        (b"GET /x HTTP/1.1\r\nBad Header: x\r\n\r\n", "400"),
        (b"G\xc3\xa9T / HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    ];
    let mut unmatched = 0;
    for (request, expected) in requests {
        let status = raw(addr, request);
        assert!(
            status.starts_with(&format!("HTTP/1.1 {expected}")),
            "{:?}: {status}",
            String::from_utf8_lossy(request)
        );
        if expected != "200" {
            unmatched += 1;
        }
    }
    // Every request but /health is counted under `unmatched`, the ones hyper itself refused
    // included: those are counted when their connection ends, which may be just after the
    // client read the answer, so the count is awaited (bounded by the test run's timeout).
    loop {
        let metrics = raw_answer(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let counted: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("genesis_http_requests_total{route=\"unmatched\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(!metrics.contains("http-canary-pw"), "{metrics}");
        if counted == unmatched {
            break;
        }
        assert!(counted < unmatched, "{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(runtime);
}

/// Writes `request` and half-closes, as `printf ... | nc` does: the answer still comes.
fn raw_answer(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any path and header the HTTP types can hold gets an answer from the router: a route's,
    /// or 404/405 for anything else; never a panic.
    #[test]
    fn the_router_answers_any_path_and_header(
        path in "/[^?#]{0,40}",
        header in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let app = router(state());
        let Ok(uri) = axum::http::Uri::try_from(path.as_bytes()) else {
            return Ok(());
        };
        let mut req = Request::get(uri).body(Body::empty()).unwrap();
        if let Ok(value) = axum::http::HeaderValue::from_bytes(&header) {
            req.headers_mut().insert("x-any", value);
        }
        let known = ["/health", "/health/ready", "/metrics", "/auth/me"];
        let response = runtime.block_on(app.oneshot(req)).unwrap();
        let status = response.status().as_u16();
        if !known.contains(&path.as_str()) {
            prop_assert!(matches!(status, 404 | 405), "{path:?}: {status}");
        }
    }
}
