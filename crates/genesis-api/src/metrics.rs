//! `GET /metrics` in the Prometheus text format (version 0.0.4): requests by route and status,
//! a latency histogram by route, the pool, readiness per dependency and the hashing queue.
//!
//! Routes are labelled by their template (`/auth/me`), never by the raw path, so that a client
//! cannot grow the label set; anything unrouted is `unmatched`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::health::{self, CheckStatus};

/// The upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label of requests that matched no route, or could not be read at all.
pub(crate) const UNMATCHED: &str = "unmatched";

/// The method label of a request hyper could not read (and answered itself).
pub(crate) const UNREADABLE_METHOD: &str = "unreadable";

#[derive(Default)]
struct Histogram {
    /// Per bucket, not cumulative; rendered cumulatively.
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|&upper| seconds <= upper) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The counters the request middleware feeds.
#[derive(Default)]
pub struct Metrics {
    /// (route, method, status) -> count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route -> latency.
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let key = (route.to_owned(), method.to_owned(), status);
        *lock(&self.requests).entry(key).or_default() += 1;
        lock(&self.latency)
            .entry(route.to_owned())
            .or_default()
            .observe(elapsed.as_secs_f64());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves counters that are still counters.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The middleware that counts every request by its route template.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    state
        .metrics()
        .record(&route, &method, response.status().as_u16(), start.elapsed());
    response
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    let readiness = health::readiness(&state).await;
    let mut body = render(&state);
    family(
        &mut body,
        "genesis_dependency_up",
        "gauge",
        "Whether the dependency answered its readiness check (1) or not (0).",
    );
    for (name, check) in &readiness.checks {
        let up = u8::from(check.status == CheckStatus::Up);
        let _ = writeln!(body, "genesis_dependency_up{{dependency=\"{name}\"}} {up}");
    }
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Everything but readiness, which needs the dependencies.
fn render(state: &AppState) -> String {
    let mut out = String::new();
    let metrics = state.metrics();

    family(
        &mut out,
        "genesis_http_requests_total",
        "counter",
        "HTTP requests answered, by route template, method and status.",
    );
    for ((route, method, status), count) in lock(&metrics.requests).iter() {
        let _ = writeln!(
            out,
            "genesis_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
        );
    }

    family(
        &mut out,
        "genesis_http_request_duration_seconds",
        "histogram",
        "Time to answer an HTTP request, by route template.",
    );
    for (route, histogram) in lock(&metrics.latency).iter() {
        let name = "genesis_http_request_duration_seconds";
        let mut cumulative = 0;
        for (upper, count) in BUCKETS.iter().zip(histogram.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{upper}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", histogram.sum);
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", histogram.count);
    }

    let pool = state.pool().status();
    let gauges = [
        (
            "genesis_db_pool_connections_in_use",
            "Pooled PostgreSQL connections lent to requests.",
            pool.size.saturating_sub(pool.available),
        ),
        (
            "genesis_db_pool_connections_idle",
            "Pooled PostgreSQL connections open and idle.",
            pool.available,
        ),
        (
            "genesis_db_pool_waiting",
            "Requests waiting for a pooled connection.",
            pool.waiting,
        ),
        (
            "genesis_db_pool_max_size",
            "The most connections the pool opens (DB_POOL_SIZE).",
            pool.max_size,
        ),
    ];
    let hashing = state.hashing();
    let hash_gauges = [
        (
            "genesis_password_hashing_in_progress",
            "Password hashes running now.",
            hashing.running(),
        ),
        (
            "genesis_password_hashing_waiting",
            "Requests queued for a hashing slot.",
            hashing.waiting(),
        ),
        (
            "genesis_password_hashing_capacity",
            "Hashes that may run at once (HASH_CONCURRENCY).",
            hashing.capacity(),
        ),
    ];
    for (name, help, value) in gauges.into_iter().chain(hash_gauges) {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "genesis_password_hashing_rejected_total",
        "counter",
        "Requests answered 503 because the hashing queue was full.",
    );
    let _ = writeln!(
        out,
        "genesis_password_hashing_rejected_total {}",
        hashing.rejected()
    );
    out
}
