//! The application's settings: the Rust counterpart of the seed's `settings.py`.
//!
//! Values come from the process environment first, then from the environment's env files
//! (`.env.test`; `.env`, then `.env.local`, in development; `.env.production`), read the way
//! Docker Compose reads them and found in the current folder or the nearest parent that has
//! them, never above the workspace root; then from the typed model's defaults. Every value remembers where it came from, so that errors and `check-config` name
//! the variable and its source. Passwords never appear in `Debug`, `Display` or errors.

mod env_file;
mod error;
#[cfg(any(test, feature = "libpq-oracle"))]
#[doc(hidden)]
pub mod libpq_oracle;
mod rules;
mod secret;
mod sources;
mod url;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use genesis_model::{self as model, Env};

pub use crate::env_file::{
    Entry, Resolved, expand, parse as parse_env_file, read as read_env_file,
    resolve as resolve_env_file,
};
pub use crate::error::{ConfigError, Source};
pub use crate::rules::{MIN_SECRET_BITS, MIN_SECRET_LEN, PASSWORD_HASH_COST, secret_bits};
pub use crate::secret::{MASK, Secret, install_panic_hook, redact};
use crate::sources::parse_bool;
use crate::sources::{Vars, process_env, register_file_secrets};
pub use crate::sources::{find_env_file, is_secret_key, workspace_root};
pub use crate::url::{APP_PARAMETERS, AppValues, LIBPQ_KEYWORDS, Scheme, ServiceUrl, UrlProblem};
use crate::values::{assemble_database_url, parse_app_url, parse_url, to_network};

/// Whether the process runs on the host or inside a container of the compose network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Host,
    Container,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub environment: Env,
    pub runtime: Runtime,
    /// The application's database; `None` when neither `DATABASE_URL` nor `POSTGRES_SERVER` is set.
    pub database_url: Option<ServiceUrl>,
    /// The test database, translated to its in-network address inside a container.
    pub test_database_url: ServiceUrl,
    pub redis_url: ServiceUrl,
    pub debug: bool,
    pub testing_mode: bool,
    pub strict_health_checks: bool,
    /// The Argon2id cost of password hashing (`PASSWORD_HASH_COST`): the minimum in the test
    /// environment, production's everywhere else.
    pub password_cost: model::PasswordCost,
    pub token_secret: Secret,
    pub bind: SocketAddr,
    /// The most connections the API holds to PostgreSQL (`DB_POOL_SIZE`).
    pub pool_size: usize,
    /// How long a request waits for a pooled connection before it is answered 503
    /// (`DB_POOL_TIMEOUT_SECS`).
    pub pool_timeout: Duration,
    /// How long one request may take before it is answered 503 (`REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection is kept (`HEADER_READ_TIMEOUT_SECS`).
    pub header_read_timeout: Duration,
    /// How long readiness waits for each dependency to answer (`HEALTH_CHECK_TIMEOUT_MS`):
    /// below the probe timeout of whatever asks (Kubernetes' default is 1 s).
    pub health_check_timeout: Duration,
    /// How many password hashes run at once (`HASH_CONCURRENCY`); each holds 19 MiB.
    pub hash_concurrency: usize,
    /// The env files that were read, in the order they were read.
    pub files: Vec<PathBuf>,
    /// Where each setting came from, by variable name.
    pub sources: BTreeMap<&'static str, Source>,
}

impl Settings {
    /// Reads the process environment and the env files of the environment `ENVIRONMENT` names
    /// (development when unset), starting from the current folder.
    pub fn load() -> Result<Settings, ConfigError> {
        let cwd = std::env::current_dir().map_err(|err| ConfigError::Io {
            path: PathBuf::from("."),
            reason: err.to_string(),
        })?;
        Settings::resolve(&process_env()?, &cwd, None)
    }

    /// Like [`Settings::load`], for a given environment whatever `ENVIRONMENT` says (the test
    /// suites load [`Env::Test`]).
    pub fn load_for(env: Env) -> Result<Settings, ConfigError> {
        let cwd = std::env::current_dir().map_err(|err| ConfigError::Io {
            path: PathBuf::from("."),
            reason: err.to_string(),
        })?;
        Settings::resolve(&process_env()?, &cwd, Some(env))
    }

    /// Resolves settings from explicit inputs: `process` stands for the process environment and
    /// `dir` for the folder the env files are searched from. Pure apart from reading the files.
    pub fn resolve(
        process: &[(String, String)],
        dir: &Path,
        env: Option<Env>,
    ) -> Result<Settings, ConfigError> {
        let process: BTreeMap<String, String> = process.iter().cloned().collect();
        let environment = match env {
            Some(env) => env,
            None => match process.get("ENVIRONMENT") {
                Some(value) => Env::parse(value).ok_or_else(|| ConfigError::InvalidValue {
                    var: "ENVIRONMENT".into(),
                    origin: Source::Environment,
                    value: value.clone(),
                    expected: "development, test or production",
                })?,
                None => Env::Dev,
            },
        };

        let mut files = Vec::new();
        let mut resolved: Vec<Resolved> = Vec::new();
        // In development `.env` comes first: Compose reads it (and only it) for the dev
        // database, so a key set in both files must mean what Compose makes of it.
        let names: &[&str] = match environment {
            Env::Dev => &[".env", environment.env_file()],
            _ => &[environment.env_file()],
        };
        let lookup = |key: &str| process.get(key).cloned();
        for name in names {
            if let Some(path) = find_env_file(dir, name)? {
                let entries = env_file::read(&path)?;
                let mut read = env_file::resolve(&path, entries, &lookup, &resolved);
                resolved.append(&mut read);
                files.push(path);
            }
        }
        register_file_secrets(&resolved);
        for (key, value) in &process {
            if is_secret_key(key) {
                secret::register(value);
            }
        }
        let vars = Vars { process, resolved };

        let runtime = match vars.get(model::API.in_container_var)? {
            Some((value, origin)) if !value.is_empty() => {
                if parse_bool(model::API.in_container_var, &value, &origin)? {
                    Runtime::Container
                } else {
                    Runtime::Host
                }
            }
            _ => Runtime::Host,
        };

        let mut sources = BTreeMap::new();
        let test_db = &model::TEST_DB;
        let test_database_url = match vars.get(test_db.url_var)? {
            Some((raw, origin)) => {
                sources.insert(test_db.url_var, origin.clone());
                parse_app_url(test_db.url_var, &raw, origin)?
            }
            None => {
                sources.insert(test_db.url_var, Source::Default);
                let url =
                    test_db.url_with(model::TEST_DB_SERVICE.host_address, model::TEST_DB_PASSWORD);
                ServiceUrl::parse(&url, Scheme::Postgres).expect("the model's test URL is valid")
            }
        };

        let database_url = match vars.get("DATABASE_URL")? {
            Some((raw, origin)) if !raw.is_empty() => {
                sources.insert("DATABASE_URL", origin.clone());
                Some(parse_app_url("DATABASE_URL", &raw, origin)?)
            }
            _ => match vars.get("POSTGRES_SERVER")? {
                Some((server, _)) => {
                    sources.insert("DATABASE_URL", Source::Assembled);
                    Some(assemble_database_url(&vars, &server, environment)?)
                }
                None => None,
            },
        };

        let redis_url = match vars.get(model::REDIS.url_var)? {
            Some((raw, origin)) => {
                sources.insert(model::REDIS.url_var, origin.clone());
                parse_url(model::REDIS.url_var, &raw, origin, Scheme::Redis)?
            }
            None => {
                sources.insert(model::REDIS.url_var, Source::Default);
                let url = model::REDIS.url(model::REDIS.host_address);
                ServiceUrl::parse(&url, Scheme::Redis).expect("the model's Redis URL is valid")
            }
        };

        let debug = vars.flag("DEBUG", environment == Env::Dev, &mut sources)?;
        let testing_mode = vars.flag("TESTING_MODE", environment == Env::Test, &mut sources)?;
        let strict_health_checks = vars.flag(
            "STRICT_HEALTH_CHECKS",
            environment == Env::Prod,
            &mut sources,
        )?;

        let password_cost = match vars.get(PASSWORD_HASH_COST)? {
            Some((value, origin)) => {
                let cost = model::PASSWORD_COSTS
                    .into_iter()
                    .find(|cost| cost.name == value.trim())
                    .ok_or_else(|| ConfigError::InvalidValue {
                        var: PASSWORD_HASH_COST.into(),
                        origin: origin.clone(),
                        value: value.clone(),
                        expected: "production or minimum",
                    })?;
                if environment == Env::Prod && cost != model::PASSWORD_COST_PRODUCTION {
                    return Err(ConfigError::WeakPasswordCost { origin });
                }
                sources.insert(PASSWORD_HASH_COST, origin);
                cost
            }
            None => {
                sources.insert(PASSWORD_HASH_COST, Source::Default);
                environment.password_cost()
            }
        };

        let token_secret = match vars.get("TOKEN_SECRET")? {
            Some((value, origin)) if !value.is_empty() => {
                sources.insert("TOKEN_SECRET", origin);
                Secret::new(value)
            }
            _ => {
                sources.insert("TOKEN_SECRET", Source::Default);
                Secret::new(model::DEV_TOKEN_SECRET)
            }
        };

        let bind = match vars.get("BIND_ADDR")? {
            Some((value, origin)) => {
                sources.insert("BIND_ADDR", origin.clone());
                value.parse().map_err(|_| ConfigError::InvalidValue {
                    var: "BIND_ADDR".into(),
                    origin,
                    value,
                    expected: "an address such as 127.0.0.1:8000",
                })?
            }
            None => {
                sources.insert("BIND_ADDR", Source::Default);
                // Inside a container the API must be reachable from the compose network.
                let ip = if runtime == Runtime::Container {
                    [0, 0, 0, 0]
                } else {
                    [127, 0, 0, 1]
                };
                SocketAddr::from((ip, model::API.port))
            }
        };

        let pool_size = vars.number("DB_POOL_SIZE", 10, 1..=1000, &mut sources)?;
        let pool_timeout =
            Duration::from_secs(
                vars.number("DB_POOL_TIMEOUT_SECS", 5, 1..=600, &mut sources)? as u64,
            );
        let request_timeout =
            Duration::from_secs(
                vars.number("REQUEST_TIMEOUT_SECS", 30, 1..=3600, &mut sources)? as u64,
            );
        let header_read_timeout = Duration::from_secs(vars.number(
            "HEADER_READ_TIMEOUT_SECS",
            10,
            1..=600,
            &mut sources,
        )? as u64);
        let health_check_timeout = Duration::from_millis(vars.number(
            "HEALTH_CHECK_TIMEOUT_MS",
            1500,
            50..=60_000,
            &mut sources,
        )? as u64);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let hash_concurrency = vars.number("HASH_CONCURRENCY", cores, 1..=256, &mut sources)?;

        if environment == Env::Prod {
            let explicit = matches!(
                sources.get("DATABASE_URL"),
                Some(Source::Environment | Source::File { .. })
            );
            if database_url.is_none() || !explicit {
                return Err(ConfigError::ProductionWithoutDatabaseUrl);
            }
            let secret = token_secret.expose();
            if secret == model::DEV_TOKEN_SECRET
                || secret.chars().count() < MIN_SECRET_LEN
                || secret_bits(secret) < MIN_SECRET_BITS
            {
                return Err(ConfigError::WeakTokenSecret);
            }
            let local = matches!(redis_url.host(), "localhost" | "::1")
                || redis_url
                    .host()
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !redis_url.tls() && !local {
                return Err(ConfigError::PlaintextRedis {
                    origin: sources
                        .get(model::REDIS.url_var)
                        .cloned()
                        .unwrap_or(Source::Default),
                });
            }
        }

        let (test_database_url, database_url, redis_url) = match runtime {
            Runtime::Host => (test_database_url, database_url, redis_url),
            Runtime::Container => (
                to_network(test_database_url),
                database_url.map(to_network),
                to_network(redis_url),
            ),
        };

        Ok(Settings {
            environment,
            runtime,
            database_url,
            test_database_url,
            redis_url,
            debug,
            testing_mode,
            strict_health_checks,
            password_cost,
            token_secret,
            bind,
            pool_size,
            pool_timeout,
            request_timeout,
            header_read_timeout,
            health_check_timeout,
            hash_concurrency,
            files,
            sources,
        })
    }

    /// The database the application serves from: the test database in the test environment,
    /// `DATABASE_URL` otherwise.
    pub fn app_database_url(&self) -> Result<&ServiceUrl, ConfigError> {
        match (self.environment, &self.database_url) {
            (Env::Test, _) => Ok(&self.test_database_url),
            (_, Some(url)) => Ok(url),
            (Env::Prod, None) => Err(ConfigError::ProductionWithoutDatabaseUrl),
            (_, None) => Err(ConfigError::NoDatabaseUrl),
        }
    }

    /// The resolved settings as `(name, value, source)` rows, secrets masked, for `check-config`.
    pub fn report(&self) -> Vec<(&'static str, String, String)> {
        let source = |name: &str| {
            self.sources
                .get(name)
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into())
        };
        let runtime = match self.runtime {
            Runtime::Host => "host",
            Runtime::Container => "container",
        };
        let secret = if self.token_secret.expose() == model::DEV_TOKEN_SECRET {
            format!("{MASK} (development default)")
        } else {
            MASK.to_owned()
        };
        let files = self
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            (
                "ENVIRONMENT",
                self.environment.environment_value().into(),
                "-".into(),
            ),
            (
                "runtime",
                runtime.into(),
                model::API.in_container_var.to_owned(),
            ),
            (
                "DATABASE_URL",
                self.database_url
                    .as_ref()
                    .map_or("(not set)".into(), ToString::to_string),
                source("DATABASE_URL"),
            ),
            (
                "  as libpq reads it",
                self.database_url
                    .as_ref()
                    .map_or("-".into(), ServiceUrl::describe),
                "-".into(),
            ),
            (
                "TEST_DATABASE_URL",
                self.test_database_url.to_string(),
                source("TEST_DATABASE_URL"),
            ),
            (
                "  as libpq reads it",
                self.test_database_url.describe(),
                "-".into(),
            ),
            ("REDIS_URL", self.redis_url.to_string(), source("REDIS_URL")),
            ("DEBUG", self.debug.to_string(), source("DEBUG")),
            (
                "TESTING_MODE",
                self.testing_mode.to_string(),
                source("TESTING_MODE"),
            ),
            (
                "STRICT_HEALTH_CHECKS",
                self.strict_health_checks.to_string(),
                source("STRICT_HEALTH_CHECKS"),
            ),
            (
                PASSWORD_HASH_COST,
                format!(
                    "{} (argon2id m={} KiB, t={}, p={})",
                    self.password_cost.name,
                    self.password_cost.memory_kib,
                    self.password_cost.iterations,
                    self.password_cost.parallelism
                ),
                source(PASSWORD_HASH_COST),
            ),
            ("TOKEN_SECRET", secret, source("TOKEN_SECRET")),
            ("BIND_ADDR", self.bind.to_string(), source("BIND_ADDR")),
            (
                "DB_POOL_SIZE",
                self.pool_size.to_string(),
                source("DB_POOL_SIZE"),
            ),
            (
                "DB_POOL_TIMEOUT_SECS",
                self.pool_timeout.as_secs().to_string(),
                source("DB_POOL_TIMEOUT_SECS"),
            ),
            (
                "REQUEST_TIMEOUT_SECS",
                self.request_timeout.as_secs().to_string(),
                source("REQUEST_TIMEOUT_SECS"),
            ),
            (
                "HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout.as_secs().to_string(),
                source("HEADER_READ_TIMEOUT_SECS"),
            ),
            (
                "HEALTH_CHECK_TIMEOUT_MS",
                self.health_check_timeout.as_millis().to_string(),
                source("HEALTH_CHECK_TIMEOUT_MS"),
            ),
            (
                "HASH_CONCURRENCY",
                self.hash_concurrency.to_string(),
                source("HASH_CONCURRENCY"),
            ),
            (
                "env files",
                if files.is_empty() {
                    "(none found)".into()
                } else {
                    files
                },
                "-".into(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests;
