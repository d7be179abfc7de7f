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

/// The name the application connects under when the URL gives no `application_name`.
pub const APPLICATION_NAME: &str = "genesis-api";

/// The URL parameters the driver reads with another unit or default than libpq
/// (`tcp_user_timeout` is milliseconds to libpq and seconds to the driver; a `connect_timeout`
/// of 1 is 2 seconds to libpq) and those the application gives a value of its own when the
/// URL has none: taken out of the driver's URL and applied with libpq's meaning.
pub const APPLIED_PARAMS: [&str; 3] = ["connect_timeout", "tcp_user_timeout", "application_name"];

/// What the application sets on every connection itself, each with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub connect_timeout: Duration,
    pub tcp_user_timeout: Option<Duration>,
    pub application_name: String,
    /// `(parameter, value, why)`, for `check-config`.
    pub rows: Vec<(&'static str, String, &'static str)>,
}

impl Applied {
    /// libpq's reading of `url`'s parameters, where the settings have checked that each is
    /// a plain integer (`check_app_support`).
    pub fn of(url: &ServiceUrl) -> Applied {
        let int = |key: &str| url.param(key).and_then(|v| v.parse::<i64>().ok());
        let mut rows = Vec::new();
        let connect_timeout = match int("connect_timeout") {
            // libpq waits at least 2 seconds.
            Some(secs) if secs > 0 => {
                let secs = secs.max(2) as u64;
                rows.push((
                    "connect_timeout",
                    format!("{secs} s"),
                    "from the URL, in seconds, at least 2 as libpq reads it",
                ));
                Duration::from_secs(secs)
            }
            _ => {
                rows.push((
                    "connect_timeout",
                    format!("{} s", CONNECT_TIMEOUT.as_secs()),
                    "the application's bound: the URL gives none",
                ));
                CONNECT_TIMEOUT
            }
        };
        let tcp_user_timeout = match int("tcp_user_timeout") {
            Some(ms) if ms > 0 => {
                rows.push((
                    "tcp_user_timeout",
                    format!("{ms} ms"),
                    "from the URL, in milliseconds as libpq reads it",
                ));
                Some(Duration::from_millis(ms as u64))
            }
            _ => None,
        };
        let application_name = match url.param("application_name") {
            Some(name) if !name.is_empty() => {
                rows.push(("application_name", name.to_owned(), "from the URL"));
                name.to_owned()
            }
            _ => {
                rows.push((
                    "application_name",
                    APPLICATION_NAME.to_owned(),
                    "the application's own: the URL gives none",
                ));
                APPLICATION_NAME.to_owned()
            }
        };
        Applied {
            connect_timeout,
            tcp_user_timeout,
            application_name,
            rows,
        }
    }

    /// One line for `check-config`.
    pub fn describe(&self) -> String {
        self.rows
            .iter()
            .map(|(key, value, why)| format!("{key}={value} ({why})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How to reach the database of `url`: its TLS settings as libpq reads them, and a connector
/// holding the driver's configuration (with [`Applied`]'s values).
pub fn pg_target(url: &ServiceUrl) -> Result<(PgTls, PgConnect), BadUrl> {
    // A value that is not UTF-8 is read lossily, so that it is refused as a bad value (libpq
    // would read the bytes) rather than skipped as if unset.
    let env = |var: &str| std::env::var_os(var).map(|value| value.to_string_lossy().into_owned());
    let (tls, rest) = tls::split_url(url, &env).map_err(|e| BadUrl::new(url, e))?;
    let mut config: tokio_postgres::Config = rest
        .without_params(&APPLIED_PARAMS)
        .expose()
        .parse()
        .map_err(|err: tokio_postgres::Error| BadUrl::new(url, err.to_string()))?;
    let applied = Applied::of(url);
    config.connect_timeout(applied.connect_timeout);
    if let Some(timeout) = applied.tcp_user_timeout {
        config.tcp_user_timeout(timeout);
    }
    config.application_name(&applied.application_name);
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

#[cfg(test)]
mod tests {
    use genesis_settings::Scheme;

    use super::*;

    /// What the driver is given means what libpq makes of the URL: `tcp_user_timeout` in
    /// milliseconds, `connect_timeout` at least 2 seconds, the URL's `application_name` first.
    #[test]
    fn parameters_with_units_mean_what_they_mean_to_libpq() {
        let check = |query: &str, connect: u64, tcp_ms: Option<u64>, name: &str| {
            let raw = format!("postgresql://u@db.example.com/d?sslmode=disable{query}");
            let url = ServiceUrl::parse(&raw, Scheme::Postgres).unwrap();
            url.check_app_support().unwrap();
            let (_, connector) = pg_target(&url).unwrap();
            let config = connector.config();
            assert_eq!(
                (
                    config.get_connect_timeout().copied(),
                    config.get_tcp_user_timeout().copied(),
                    config.get_application_name(),
                ),
                (
                    Some(Duration::from_secs(connect)),
                    tcp_ms.map(Duration::from_millis),
                    Some(name),
                ),
                "{raw}"
            );
        };
        check("", 2, None, APPLICATION_NAME);
        check("&tcp_user_timeout=5000", 2, Some(5000), APPLICATION_NAME);
        check("&tcp_user_timeout=0", 2, None, APPLICATION_NAME);
        check("&connect_timeout=1", 2, None, APPLICATION_NAME);
        check(
            "&connect_timeout=30&application_name=batch",
            30,
            None,
            "batch",
        );
        check("&application_name=", 2, None, APPLICATION_NAME);
        let url = ServiceUrl::parse("postgresql://u@h/d?tcp_user_timeout=5000", Scheme::Postgres)
            .unwrap();
        assert_eq!(
            Applied::of(&url).describe(),
            "connect_timeout=2 s (the application's bound: the URL gives none), \
             tcp_user_timeout=5000 ms (from the URL, in milliseconds as libpq reads it), \
             application_name=genesis-api (the application's own: the URL gives none)"
        );
    }
}
