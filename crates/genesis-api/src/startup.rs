//! Start-up: check the dependencies, apply the migrations, bind, serve until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use genesis_settings::{ConfigError, Settings, redact};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::db::{BadUrl, error_chain};
use crate::health::{self, CheckStatus, POSTGRES};
use crate::tls::SslMode;
use crate::{ApiError, AppState, MigrateError, auth, limits, logging, metrics, migrate};

/// Why the API did not start. Messages name the dependency and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    BadUrl(BadUrl),
    #[error(
        "DATABASE_URL {url} allows a plaintext connection (sslmode={mode}); production requires \
         sslmode=verify-full with sslrootcert (or require, verify-ca), or a Unix-socket host"
    )]
    PlaintextDatabase { url: String, mode: SslMode },
    #[error(
        "STRICT_HEALTH_CHECKS is on and {}; fix the dependency, or set \
         STRICT_HEALTH_CHECKS=false to serve in degraded mode",
        .failures.join("; ")
    )]
    Unhealthy { failures: Vec<String> },
    #[error("cannot apply the migrations to {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: MigrateError,
    },
    #[error("cannot listen on {addr}: {reason}; set BIND_ADDR to a free address")]
    Bind { addr: SocketAddr, reason: String },
}

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/me", get(auth::me))
        .route("/auth/logout", post(auth::logout))
        .route("/metrics", get(metrics::scrape))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // The last layer is the outermost: a request that times out is still counted and logged.
        .layer(from_fn_with_state(state.clone(), limits::deadline))
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(axum::middleware::from_fn(logging::log_request))
        .with_state(state)
}

/// A started API: dependencies checked, migrations applied, listener bound.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Starts on `settings.bind`.
    pub async fn build(settings: &Settings) -> Result<Server, StartupError> {
        let listener =
            TcpListener::bind(settings.bind)
                .await
                .map_err(|err| StartupError::Bind {
                    addr: settings.bind,
                    reason: err.to_string(),
                })?;
        Server::build_with_listener(settings, listener).await
    }

    /// Starts on a listener the caller bound (the tests bind `127.0.0.1:0`).
    pub async fn build_with_listener(
        settings: &Settings,
        listener: TcpListener,
    ) -> Result<Server, StartupError> {
        let state = AppState::new(settings)?;
        let readiness = health::readiness(&state).await;
        let down: Vec<(&String, &health::Check)> = readiness
            .checks
            .iter()
            .filter(|(name, check)| {
                check.status == CheckStatus::Down && name.as_str() != health::MIGRATIONS
            })
            .collect();
        let describe = |name: &str, check: &health::Check| {
            let url = if name == POSTGRES {
                state.database_url().to_string()
            } else {
                state.redis().url().to_string()
            };
            let why = check.error.as_deref().unwrap_or("down");
            redact(&format!("{name} is unhealthy at {url} ({why})"))
        };
        if !down.is_empty() {
            let failures: Vec<String> = down.iter().map(|(n, c)| describe(n, c)).collect();
            if settings.strict_health_checks {
                return Err(StartupError::Unhealthy { failures });
            }
            for failure in &failures {
                tracing::warn!("{failure}; serving in degraded mode");
            }
        }

        let postgres_up = readiness.checks[POSTGRES].status == CheckStatus::Up;
        if postgres_up {
            apply_migrations(&state).await?;
        } else {
            // Not strict, or the check above would have stopped us: migrate once it is back.
            tokio::spawn(migrate_when_reachable(state.clone()));
        }
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP/1.1 until `shutdown` completes, then finishes the requests in flight.
    ///
    /// hyper's own loop rather than `axum::serve`, which sets no timer and so no header-read
    /// timeout: a client that opens connections and sends headers slowly would hold them forever.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let header_read_timeout = self.state.header_read_timeout();
        let app_state = self.state.clone();
        let app = router(self.state);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of file descriptors, most likely: back off instead of spinning.
                        tracing::warn!(%err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            // A client that half-closes after its request (`printf ... | nc`) still gets its
            // answer: without half-close support hyper drops the request in flight.
            let connection = http1::Builder::new()
                .half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
            let connection = graceful.watch(connection);
            let state = app_state.clone();
            let accepted = Instant::now();
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    // A request hyper could not read (a header name or a request line it
                    // refuses) was answered 400 (431 when too large) by hyper itself, before
                    // the router: it is counted here, as every request is.
                    if err.is_parse() {
                        let status = if err.is_parse_too_large() { 431 } else { 400 };
                        state.metrics().record(
                            metrics::UNMATCHED,
                            metrics::UNREADABLE_METHOD,
                            status,
                            accepted.elapsed(),
                        );
                    }
                    tracing::debug!(%err, "connection closed with an error");
                }
            });
        }
        drop(self.listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// The longest wait between two attempts of a start-up that found the database away.
const MIGRATE_RETRY_MAX: Duration = Duration::from_secs(2);

async fn apply_migrations(state: &AppState) -> Result<(), StartupError> {
    let wrap = |source| StartupError::Migrate {
        url: state.database_url().to_string(),
        source,
    };
    let mut client = state
        .pool()
        .get()
        .await
        .map_err(|err| wrap(MigrateError::Unreachable(redact(&error_chain(&err)))))?;
    let report = migrate::migrate(&mut client).await.map_err(wrap)?;
    tracing::info!(
        applied = report.applied.len(),
        already_applied = report.already_applied,
        "migrations up to date"
    );
    state.mark_migrated();
    Ok(())
}

/// Retries the migrations until the database answers: after 100 ms, then twice as long each
/// time up to every 2 s, so that a database that comes up a moment later is used at once and
/// one that stays away is not hammered.
async fn migrate_when_reachable(state: AppState) {
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MIGRATE_RETRY_MAX);
        match apply_migrations(&state).await {
            Ok(()) => return,
            Err(StartupError::Migrate { source, .. }) if source.is_connection() => continue,
            Err(err) => {
                tracing::error!(error = %redact(&error_chain(&err)), "migrations failed");
                return;
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

#[cfg(test)]
mod tests;
