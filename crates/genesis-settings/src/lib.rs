//! The application's settings: the Rust counterpart of the seed's `settings.py`.
//!
//! Values come from the process environment first, then from the environment's env files
//! (`.env.test`; `.env`, then `.env.local`, in development; `.env.production`), read the way
//! Docker Compose reads them and found in the current folder or the nearest parent that has
//! them, never above the workspace root; then from the typed model's defaults. Every value remembers where it came from, so that errors and `check-config` name
//! the variable and its source. Passwords never appear in `Debug`, `Display` or errors.

mod env_file;
mod secret;
mod url;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use genesis_model::{self as model, Env};

pub use crate::env_file::{
    Entry, Resolved, expand, parse as parse_env_file, read as read_env_file,
    resolve as resolve_env_file,
};
pub use crate::secret::{MASK, Secret, install_panic_hook, redact};
pub use crate::url::{APP_PARAMETERS, AppValues, LIBPQ_KEYWORDS, Scheme, ServiceUrl, UrlProblem};

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The process environment.
    Environment,
    /// A line of an env file.
    File { path: PathBuf, line: usize },
    /// Assembled from the `POSTGRES_*` variables.
    Assembled,
    /// The typed model's default for this environment.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Environment => f.write_str("the environment"),
            Source::File { path, line } => write!(f, "{}:{line}", path.display()),
            Source::Assembled => f.write_str("the POSTGRES_* variables"),
            Source::Default => f.write_str("the model's default"),
        }
    }
}

/// A configuration the application must not start with. Messages name the variable and its
/// source and never contain a secret.
#[derive(Clone, Debug)]
pub enum ConfigError {
    Sqlite {
        var: String,
        origin: Source,
    },
    InvalidUrl {
        var: String,
        origin: Source,
        expected: &'static str,
        reason: String,
    },
    EnvFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    Io {
        path: PathBuf,
        reason: String,
    },
    InvalidValue {
        var: String,
        origin: Source,
        value: String,
        expected: &'static str,
    },
    Unresolved {
        var: String,
        origin: Source,
        missing: String,
    },
    MissingPart {
        var: &'static str,
    },
    ProductionWithoutDatabaseUrl,
    NoDatabaseUrl,
    WeakTokenSecret,
    PlaintextRedis {
        origin: Source,
    },
    WeakPasswordCost {
        origin: Source,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Sqlite { var, origin } => write!(
                f,
                "{var} (from {origin}) is a SQLite URL; Genesis runs on PostgreSQL only: \
                 set it to a postgresql:// URL of the server"
            ),
            ConfigError::InvalidUrl {
                var,
                origin,
                expected,
                reason,
            } => write!(
                f,
                "{var} (from {origin}) is not a valid {expected} URL: {reason}"
            ),
            ConfigError::EnvFile { path, line, reason } => {
                write!(f, "{}:{line}: {reason}", path.display())
            }
            ConfigError::Io { path, reason } => {
                write!(f, "cannot read {}: {reason}", path.display())
            }
            ConfigError::InvalidValue {
                var,
                origin,
                value,
                expected,
            } => write!(f, "{var} (from {origin}) is {value:?}; expected {expected}"),
            ConfigError::Unresolved {
                var,
                origin,
                missing,
            } => write!(
                f,
                "{var} (from {origin}) refers to ${{{missing}}}, which is not set"
            ),
            ConfigError::MissingPart { var } => write!(
                f,
                "{var} is not set; it is needed to assemble DATABASE_URL from POSTGRES_SERVER"
            ),
            ConfigError::ProductionWithoutDatabaseUrl => f.write_str(
                "production requires an explicit DATABASE_URL in the environment \
                 (.env.production only refers to it, and POSTGRES_* parts are not accepted there)",
            ),
            ConfigError::NoDatabaseUrl => f.write_str(
                "DATABASE_URL is not set, nor POSTGRES_SERVER to assemble it from: set it to \
                 the postgresql:// URL of the database (`cargo xtask db-up --env dev` starts \
                 the development one and prints its URL)",
            ),
            ConfigError::WeakTokenSecret => write!(
                f,
                "production requires a TOKEN_SECRET of at least {MIN_SECRET_LEN} random \
                 characters holding at least {MIN_SECRET_BITS} bits of entropy, not the \
                 development default nor a repeated pattern: generate one with \
                 `openssl rand -hex 32`"
            ),
            ConfigError::PlaintextRedis { origin } => write!(
                f,
                "REDIS_URL (from {origin}) is a plaintext redis:// URL to a host that is not \
                 this machine; production requires TLS: write it rediss://"
            ),
            ConfigError::WeakPasswordCost { origin } => write!(
                f,
                "{PASSWORD_HASH_COST} (from {origin}) lowers the password hashing cost; \
                 production keeps `production`"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The variable that names the password hashing cost.
pub const PASSWORD_HASH_COST: &str = "PASSWORD_HASH_COST";

/// The shortest token secret production accepts.
pub const MIN_SECRET_LEN: usize = 32;

/// The least entropy production accepts in a token secret, estimated from the frequency of
/// its characters (32 hexadecimal digits from `openssl rand -hex 16` hold about 110 bits by
/// this estimate; 32 times the same letter none).
pub const MIN_SECRET_BITS: f64 = 96.0;

/// An estimate of the entropy of `secret`, in bits: its length times the Shannon entropy of
/// the frequencies of its characters. It cannot see every pattern (`abcabc...` passes), but
/// it refuses the repeated and near-constant secrets a person types.
pub fn secret_bits(secret: &str) -> f64 {
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    for c in secret.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let total = secret.chars().count() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum();
    per_char * total
}

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

/// The process environment as text. A variable the settings read whose value is not UTF-8
/// is refused by name (its value is never shown: it may be a secret), never skipped as if
/// it were unset; other variables that are not UTF-8 are left out.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Ok(key) = key.into_string() else { continue };
        match value.into_string() {
            Ok(value) => vars.push((key, value)),
            Err(_) if read_by_settings(&key) => {
                return Err(ConfigError::InvalidValue {
                    var: key,
                    origin: Source::Environment,
                    value: "(bytes that are not UTF-8)".into(),
                    expected: "UTF-8 text",
                });
            }
            Err(_) => {}
        }
    }
    Ok(vars)
}

/// Whether the settings read the variable `key`.
fn read_by_settings(key: &str) -> bool {
    const READ: &[&str] = &[
        "ENVIRONMENT",
        "DATABASE_URL",
        "DEBUG",
        "TESTING_MODE",
        "STRICT_HEALTH_CHECKS",
        PASSWORD_HASH_COST,
        "TOKEN_SECRET",
        "BIND_ADDR",
        "DB_POOL_SIZE",
        "DB_POOL_TIMEOUT_SECS",
        "REQUEST_TIMEOUT_SECS",
        "HEADER_READ_TIMEOUT_SECS",
        "HEALTH_CHECK_TIMEOUT_MS",
        "HASH_CONCURRENCY",
    ];
    READ.contains(&key)
        || key.starts_with("POSTGRES_")
        || [
            model::API.in_container_var,
            model::TEST_DB.url_var,
            model::REDIS.url_var,
        ]
        .contains(&key)
}

/// The env file `name` in `dir` or the nearest parent that has one, never above the workspace
/// root (the nearest folder with a `Cargo.toml` declaring `[workspace]`, or a `.git`); with no
/// workspace above `dir`, only `dir` itself. Something named like an env file that is not a
/// readable file (a folder, a broken link) is an error, not a file to skip.
pub fn find_env_file(dir: &Path, name: &str) -> Result<Option<PathBuf>, ConfigError> {
    let root = workspace_root(dir);
    for folder in dir.ancestors() {
        let path = folder.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {
                return match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => Ok(Some(path)),
                    Ok(_) => Err(ConfigError::Io {
                        path,
                        reason: "it is not a file".into(),
                    }),
                    Err(err) => Err(ConfigError::Io {
                        path,
                        reason: err.to_string(),
                    }),
                };
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(ConfigError::Io {
                    path,
                    reason: err.to_string(),
                });
            }
        }
        if root.as_deref().is_none_or(|root| folder == root) {
            break;
        }
    }
    Ok(None)
}

/// The workspace `dir` belongs to: the nearest folder with a `.git` or a `Cargo.toml` that
/// declares `[workspace]`.
pub fn workspace_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            d.join(".git").exists()
                || std::fs::read_to_string(d.join("Cargo.toml"))
                    .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_owned)
}

/// Every value of a key that names a secret is masked by value wherever it is printed.
fn register_file_secrets(resolved: &[Resolved]) {
    for r in resolved {
        if is_secret_key(&r.key) {
            if let Ok(Some(value)) = &r.value {
                secret::register(value);
            }
        }
    }
}

/// Keys whose values are secrets: `*PASSWORD*`, `*SECRET*`, `*TOKEN*`.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    // Settings of ours whose names hold such a word but whose values are public switches:
    // masking `PASSWORD_HASH_COST=production` by value would hide the word "production" in
    // every message.
    if [PASSWORD_HASH_COST].contains(&key.as_str()) {
        return false;
    }
    ["PASSWORD", "SECRET", "TOKEN"]
        .iter()
        .any(|word| key.contains(word))
}

/// Inside a container, the model's host addresses (`localhost:5433`) mean nothing: translate
/// them to the in-network ones (`test-db:5432`). Any other address is left as the user wrote it.
fn to_network(url: ServiceUrl) -> ServiceUrl {
    let pairs = [model::TEST_DB, model::DEV_DB]
        .iter()
        .filter_map(|db| db.compose())
        .map(|db| (db.host_address, db.network_address))
        .chain([(model::REDIS.host_address, model::REDIS.network_address)]);
    for (host, network) in pairs {
        let is_local = matches!(url.host(), "localhost" | "127.0.0.1" | "::1");
        if url.hosts().len() == 1 && is_local && url.port() == Some(host.port) {
            return url.with_address(network.host, network.port);
        }
    }
    url
}

/// A URL of the application's database: read as libpq reads it, then refused if the
/// application's driver would refuse it or read it differently.
fn parse_app_url(var: &str, raw: &str, origin: Source) -> Result<ServiceUrl, ConfigError> {
    let url = parse_url(var, raw, origin.clone(), Scheme::Postgres)?;
    url.check_app_support()
        .map_err(|problem| ConfigError::InvalidUrl {
            var: var.into(),
            origin,
            expected: "PostgreSQL",
            reason: match problem {
                UrlProblem::Malformed(reason) => reason,
                other => format!("{other:?}"),
            },
        })?;
    Ok(url)
}

fn parse_url(
    var: &str,
    raw: &str,
    origin: Source,
    scheme: Scheme,
) -> Result<ServiceUrl, ConfigError> {
    let expected = match scheme {
        Scheme::Postgres => "PostgreSQL",
        Scheme::Redis => "Redis",
    };
    ServiceUrl::parse(raw, scheme).map_err(|problem| match problem {
        UrlProblem::Sqlite => ConfigError::Sqlite {
            var: var.into(),
            origin,
        },
        UrlProblem::WrongScheme { found, .. } => ConfigError::InvalidUrl {
            var: var.into(),
            origin,
            expected,
            reason: format!("the scheme {found}:// is not accepted"),
        },
        UrlProblem::Malformed(reason) => ConfigError::InvalidUrl {
            var: var.into(),
            origin,
            expected,
            reason,
        },
    })
}

fn parse_bool(var: &str, value: &str, origin: &Source) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            var: var.into(),
            origin: origin.clone(),
            value: value.into(),
            expected: "true or false",
        }),
    }
}

fn assemble_database_url(
    vars: &Vars,
    server: &str,
    environment: Env,
) -> Result<ServiceUrl, ConfigError> {
    let required = |var: &'static str| match vars.get(var) {
        Ok(Some((value, _))) if !value.is_empty() => Ok(value),
        Ok(_) => Err(ConfigError::MissingPart { var }),
        Err(err) => Err(err),
    };
    let user = required("POSTGRES_USER")?;
    let db = required("POSTGRES_DB")?;
    // The dev database always has a password (its compose service needs one): without it the
    // URL would only fail later, at login.
    let password = if environment == Env::Dev {
        required("POSTGRES_PASSWORD")?
    } else {
        vars.get("POSTGRES_PASSWORD")?
            .map(|(p, _)| p)
            .unwrap_or_default()
    };
    let port = match vars.get("POSTGRES_PORT")? {
        Some((port, origin)) => port.parse::<u16>().map_err(|_| ConfigError::InvalidValue {
            var: "POSTGRES_PORT".into(),
            origin,
            value: port,
            expected: "a port number",
        })?,
        None => model::POSTGRES_PORT,
    };
    // Every part is percent-encoded: a password with `@`, `:`, `/` or `%` means itself.
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, secret::URL_PART).to_string();
    let host = if server.contains(':') {
        format!("[{server}]")
    } else {
        enc(server)
    };
    let raw = if password.is_empty() {
        format!("postgresql://{}@{host}:{port}/{}", enc(&user), enc(&db))
    } else {
        format!(
            "postgresql://{}:{}@{host}:{port}/{}",
            enc(&user),
            enc(&password),
            enc(&db)
        )
    };
    parse_app_url("DATABASE_URL", &raw, Source::Assembled)
}

/// The variables visible to the settings: the process environment over the env files, which
/// are in the order of their precedence.
struct Vars {
    process: BTreeMap<String, String>,
    resolved: Vec<Resolved>,
}

impl Vars {
    /// The value of `name` and where it came from. Env-file values have their references
    /// expanded; one that cannot be resolved is an error naming it.
    fn get(&self, name: &str) -> Result<Option<(String, Source)>, ConfigError> {
        if let Some(value) = self.process.get(name) {
            return Ok(Some((value.clone(), Source::Environment)));
        }
        let Some(found) = self.resolved.iter().find(|r| r.key == name) else {
            return Ok(None);
        };
        let origin = Source::File {
            path: found.path.clone(),
            line: found.line,
        };
        match &found.value {
            Ok(Some(value)) => Ok(Some((value.clone(), origin))),
            Ok(None) => Ok(None),
            Err(err) => Err(err.clone()),
        }
    }

    /// A whole number within `range`, or `default` when unset.
    fn number(
        &self,
        name: &'static str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
        sources: &mut BTreeMap<&'static str, Source>,
    ) -> Result<usize, ConfigError> {
        match self.get(name)? {
            Some((value, origin)) => {
                let number = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| ConfigError::InvalidValue {
                        var: name.into(),
                        origin: origin.clone(),
                        value: value.clone(),
                        expected: "a whole number in its range (see the README)",
                    })?;
                sources.insert(name, origin);
                Ok(number)
            }
            None => {
                sources.insert(name, Source::Default);
                Ok(default)
            }
        }
    }

    fn flag(
        &self,
        name: &'static str,
        default: bool,
        sources: &mut BTreeMap<&'static str, Source>,
    ) -> Result<bool, ConfigError> {
        match self.get(name)? {
            Some((value, origin)) => {
                let flag = parse_bool(name, &value, &origin)?;
                sources.insert(name, origin);
                Ok(flag)
            }
            None => {
                sources.insert(name, Source::Default);
                Ok(default)
            }
        }
    }
}

#[cfg(test)]
mod tests;
