//! Logs: one line per request (method, path, status, latency) and never a header, a query
//! string or a body, so that tokens and passwords cannot reach the log.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use genesis_settings::{Settings, redact};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber: `RUST_LOG` when it parses (`info,genesis_api=debug`), else
/// `info`, or `debug` for the API's own events when `DEBUG` is on.
pub fn init(settings: &Settings) {
    let default = if settings.debug {
        Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("genesis_api", LevelFilter::DEBUG)
    } else {
        Targets::new().with_default(LevelFilter::INFO)
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or(default);
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_ansi(false))
        .with(filter)
        .try_init();
}

/// The request-logging middleware.
pub async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // The path only: a query string may carry anything a client chose to put there.
    let mut path = redact(req.uri().path());
    if path.len() > 200 {
        let end = (0..=200)
            .rev()
            .find(|&i| path.is_char_boundary(i))
            .unwrap_or(0);
        path.truncate(end);
    }
    let start = Instant::now();
    let response = next.run(req).await;
    tracing::info!(
        target: "genesis_api::http",
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = start.elapsed().as_millis() as u64,
    );
    response
}
