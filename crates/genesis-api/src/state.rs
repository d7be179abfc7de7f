//! What every request handler shares: the database pool, Redis, and the settings they need.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use genesis_model::PasswordCost;
use genesis_settings::{Secret, ServiceUrl, Settings};

use crate::db::{self, BadUrl, Redis};
use crate::limits::HashGate;
use crate::metrics::Metrics;
use crate::tls::PgTls;

/// The shared state, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    pool: Pool,
    database_url: ServiceUrl,
    database_tls: PgTls,
    redis: Redis,
    strict_health_checks: bool,
    password_cost: PasswordCost,
    token_secret: Secret,
    migrated: AtomicBool,
    metrics: Metrics,
    hashing: HashGate,
    request_timeout: Duration,
    header_read_timeout: Duration,
    health_check_timeouts: CheckTimeouts,
}

/// How long readiness waits for each dependency: `HEALTH_CHECK_TIMEOUT_MS` for both, unless
/// [`AppState::with_health_check_timeouts`] sets one apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckTimeouts {
    pub postgres: Duration,
    pub redis: Duration,
}

impl AppState {
    /// Builds the state from `settings` without connecting to anything: the application's
    /// database ([`Settings::app_database_url`]), `REDIS_URL`, `STRICT_HEALTH_CHECKS` and
    /// `TOKEN_SECRET`.
    pub fn new(settings: &Settings) -> Result<AppState, crate::StartupError> {
        crate::tls::install_crypto_provider();
        let database_url = settings.app_database_url()?.clone();
        let database_tls = db::check_database_tls(settings)?;
        let (_, connect) = db::pg_target(&database_url)?;
        Ok(AppState(Arc::new(Inner {
            pool: db::pool(
                &database_url,
                connect,
                settings.pool_size,
                settings.pool_timeout,
            )?,
            database_url,
            database_tls,
            redis: Redis::open(&settings.redis_url)?,
            strict_health_checks: settings.strict_health_checks,
            password_cost: settings.password_cost,
            token_secret: settings.token_secret.clone(),
            migrated: AtomicBool::new(false),
            metrics: Metrics::default(),
            hashing: HashGate::new(settings.hash_concurrency),
            request_timeout: settings.request_timeout,
            header_read_timeout: settings.header_read_timeout,
            health_check_timeouts: CheckTimeouts {
                postgres: settings.health_check_timeout,
                redis: settings.health_check_timeout,
            },
        })))
    }

    pub fn pool(&self) -> &Pool {
        &self.0.pool
    }

    pub fn database_url(&self) -> &ServiceUrl {
        &self.0.database_url
    }

    /// The database connection's TLS, as its `sslmode` and certificates say.
    pub fn database_tls(&self) -> &PgTls {
        &self.0.database_tls
    }

    pub fn redis(&self) -> &Redis {
        &self.0.redis
    }

    pub fn strict_health_checks(&self) -> bool {
        self.0.strict_health_checks
    }

    /// The Argon2id cost new password hashes are made with (`PASSWORD_HASH_COST`).
    pub fn password_cost(&self) -> PasswordCost {
        self.0.password_cost
    }

    pub(crate) fn token_secret(&self) -> &Secret {
        &self.0.token_secret
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The bound on concurrent password hashing.
    pub fn hashing(&self) -> &HashGate {
        &self.0.hashing
    }

    pub fn request_timeout(&self) -> Duration {
        self.0.request_timeout
    }

    /// How long a client may take to send a request's headers (`HEADER_READ_TIMEOUT_SECS`).
    pub fn header_read_timeout(&self) -> Duration {
        self.0.header_read_timeout
    }

    /// How long readiness waits for each dependency (`HEALTH_CHECK_TIMEOUT_MS`).
    pub fn health_check_timeouts(&self) -> CheckTimeouts {
        self.0.health_check_timeouts
    }

    /// The state with readiness waiting `timeouts`, one per dependency (so that a check of one
    /// dependency can be bounded without bounding the others). Only before the state is
    /// shared: `None` once it has been cloned.
    pub fn with_health_check_timeouts(mut self, timeouts: CheckTimeouts) -> Option<AppState> {
        Arc::get_mut(&mut self.0)?.health_check_timeouts = timeouts;
        Some(self)
    }

    /// Whether this process has seen the database fully migrated.
    pub fn migrated(&self) -> bool {
        self.0.migrated.load(Ordering::Acquire)
    }

    /// Records that the migrations are applied (by [`crate::Server::build`], or by a test that
    /// serves a database cloned from a migrated template).
    pub fn mark_migrated(&self) {
        self.0.migrated.store(true, Ordering::Release);
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("database_url", &self.0.database_url)
            .field("redis", &self.0.redis)
            .field("strict_health_checks", &self.0.strict_health_checks)
            .field("password_cost", &self.0.password_cost.name)
            .field("migrated", &self.migrated())
            .finish_non_exhaustive()
    }
}

impl From<BadUrl> for crate::StartupError {
    fn from(err: BadUrl) -> crate::StartupError {
        crate::StartupError::BadUrl(err)
    }
}
