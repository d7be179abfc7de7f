//! Connections to PostgreSQL and Redis, built from the settings' URLs, with short timeouts so
//! that an unreachable dependency fails fast instead of hanging a request or a health check.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use genesis_model::Env;
use genesis_settings::{ServiceUrl, Settings, redact};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::StartupError;
use crate::tls::{self, PgConnect, PgTls};

/// How long connecting to a dependency may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A URL the drivers refused. The message never holds the password.
#[derive(Debug, thiserror::Error)]
#[error("{url} cannot be used: {reason}")]
pub struct BadUrl {
    /// The URL as displayed: password masked.
    url: String,
    reason: String,
}

impl BadUrl {
    fn new(url: &ServiceUrl, reason: impl AsRef<str>) -> BadUrl {
        BadUrl {
            url: url.to_string(),
            reason: redact(reason.as_ref()),
        }
    }
}

/// How to reach the database of `url`: its TLS settings as libpq reads them, and a connector
/// holding the driver's configuration (connect timeout and application name set).
pub fn pg_target(url: &ServiceUrl) -> Result<(PgTls, PgConnect), BadUrl> {
    let env = |var: &str| std::env::var(var).ok();
    let (tls, rest) = tls::split_url(url, &env).map_err(|e| BadUrl::new(url, e))?;
    let mut config: tokio_postgres::Config = rest
        .expose()
        .parse()
        .map_err(|err: tokio_postgres::Error| BadUrl::new(url, err.to_string()))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("genesis-api");
    let connect = tls.connector(config).map_err(|e| BadUrl::new(url, e))?;
    Ok((tls, connect))
}

/// The TLS of the application's database, refused in production when it may travel in
/// plaintext over a network (`sslmode` below `require` and a host that is not a Unix socket).
pub fn check_database_tls(settings: &Settings) -> Result<PgTls, StartupError> {
    let url = settings.app_database_url()?;
    let (tls, connect) = pg_target(url).map_err(StartupError::BadUrl)?;
    if settings.environment == Env::Prod && tls.plaintext_over_network(connect.config()) {
        let source = settings
            .sources
            .get("DATABASE_URL")
            .map_or_else(String::new, |s| format!(" (from {s})"));
        return Err(StartupError::PlaintextDatabase {
            url: format!("{url}{source}"),
            mode: tls.mode,
        });
    }
    Ok(tls)
}

/// A pool of at most `max_size` connections through `connect`, in which a request waits at most
/// `wait` for a connection; it connects lazily.
pub fn pool(
    url: &ServiceUrl,
    connect: PgConnect,
    max_size: usize,
    wait: Duration,
) -> Result<Pool, BadUrl> {
    let manager = Manager::from_connect(
        connect.config().clone(),
        connect,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|err| BadUrl::new(url, err.to_string()))
}

/// A connection to PostgreSQL that could not be made. The message never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Url(#[from] BadUrl),
    #[error("cannot connect to {url}: {reason}")]
    Postgres { url: ServiceUrl, reason: String },
}

/// One connection to `url` (TLS as its `sslmode` says), its connection task spawned on the
/// current runtime.
pub async fn connect(url: &ServiceUrl) -> Result<tokio_postgres::Client, ConnectError> {
    let (_, connect) = pg_target(url)?;
    let (client, _task) = connect.open().await.map_err(|err| ConnectError::Postgres {
        url: url.clone(),
        reason: redact(&error_chain(&err)),
    })?;
    Ok(client)
}

/// `err` and its sources on one line: tokio-postgres keeps the useful part ("connection
/// refused", "password authentication failed") in the source.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Redis, connected on first use and reconnected by the connection manager afterwards, so
/// that the API can start while Redis is down (non-strict mode) and recover when it returns.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    url: ServiceUrl,
    manager: std::sync::Arc<OnceCell<ConnectionManager>>,
}

impl Redis {
    /// Parses `url`; does not connect.
    pub fn open(url: &ServiceUrl) -> Result<Redis, BadUrl> {
        let client = redis::Client::open(url.expose()).map_err(|err| BadUrl {
            url: url.to_string(),
            reason: redact(&err.to_string()),
        })?;
        Ok(Redis {
            client,
            url: url.clone(),
            manager: Default::default(),
        })
    }

    /// The shared connection, made on first use.
    pub async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                // No retries inside one attempt: the default backoff sleeps for seconds, which
                // would hide a refused connection behind the health check's timeout. The next
                // use tries again.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(CONNECT_TIMEOUT)
                    .set_number_of_retries(0);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(manager.clone())
    }

    pub fn url(&self) -> &ServiceUrl {
        &self.url
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .field("connected", &self.manager.initialized())
            .finish()
    }
}
