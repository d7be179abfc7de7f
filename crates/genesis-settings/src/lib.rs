//! The application's settings: the Rust counterpart of the seed's `settings.py`.
//!
//! Values come from the process environment first, then from the environment's env file
//! (`.env.test`, `.env.local` (with `.env` for the generated dev password), `.env.production`),
//! found in the current folder or the nearest parent that has it, then from the typed model's
//! defaults. Every value remembers where it came from, so that errors and `check-config` name
//! the variable and its source. Passwords never appear in `Debug`, `Display` or errors.

mod env_file;
mod secret;
mod url;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use genesis_model::{self as model, Address, Env, Password};

pub use crate::env_file::{Entry, expand, parse as parse_env_file};
pub use crate::secret::{MASK, Secret, redact};
pub use crate::url::{Scheme, ServiceUrl, UrlProblem};

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
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{var} (from {origin}) is a SQLite URL; Genesis runs on PostgreSQL only: \
         set it to a postgresql:// URL of the server"
    )]
    Sqlite { var: String, origin: Source },
    #[error("{var} (from {origin}) is not a valid {expected} URL: {reason}")]
    InvalidUrl {
        var: String,
        origin: Source,
        expected: &'static str,
        reason: String,
    },
    #[error("{}:{line}: {reason}", path.display())]
    EnvFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot read {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("{var} (from {origin}) is {value:?}; expected {expected}")]
    InvalidValue {
        var: String,
        origin: Source,
        value: String,
        expected: &'static str,
    },
    #[error("{var} (from {origin}) refers to ${{{missing}}}, which is not set")]
    Unresolved {
        var: String,
        origin: Source,
        missing: String,
    },
    #[error("{var} is not set; it is needed to assemble DATABASE_URL from POSTGRES_SERVER")]
    MissingPart { var: &'static str },
    #[error(
        "production requires an explicit DATABASE_URL in the environment \
         (.env.production only refers to it, and POSTGRES_* parts are not accepted there)"
    )]
    ProductionWithoutDatabaseUrl,
    #[error(
        "production requires TOKEN_SECRET: a random value of at least {MIN_SECRET_LEN} characters, \
         not the development default"
    )]
    WeakTokenSecret,
}

/// The shortest token secret production accepts.
pub const MIN_SECRET_LEN: usize = 32;

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
    pub token_secret: Secret,
    pub bind: SocketAddr,
    /// The most connections the API holds to PostgreSQL (`DB_POOL_SIZE`).
    pub pool_size: usize,
    /// How long a request waits for a pooled connection before it is answered 503
    /// (`DB_POOL_TIMEOUT_SECS`).
    pub pool_timeout: Duration,
    /// How long one request may take before it is answered 503 (`REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
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
        Settings::resolve(&process_env(), &cwd, None)
    }

    /// Like [`Settings::load`], for a given environment whatever `ENVIRONMENT` says (the test
    /// suites load [`Env::Test`]).
    pub fn load_for(env: Env) -> Result<Settings, ConfigError> {
        let cwd = std::env::current_dir().map_err(|err| ConfigError::Io {
            path: PathBuf::from("."),
            reason: err.to_string(),
        })?;
        Settings::resolve(&process_env(), &cwd, Some(env))
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
        let mut entries: Vec<(PathBuf, Entry)> = Vec::new();
        let mut names = vec![environment.env_file()];
        if environment == Env::Dev {
            // `.env` holds the generated dev password that `.env.local` refers to.
            names.push(".env");
        }
        for name in names {
            if let Some(path) = find_upwards(dir, name) {
                for entry in env_file::read(&path)? {
                    entries.push((path.clone(), entry));
                }
                files.push(path);
            }
        }
        let vars = Vars { process, entries };

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
                parse_url(test_db.url_var, &raw, origin, Scheme::Postgres)?
            }
            None => {
                sources.insert(test_db.url_var, Source::Default);
                let Password::Public(password) = test_db.password else {
                    unreachable!("the test database's password is public by design")
                };
                let url = test_db.url_with(host_address(test_db.host_address), password);
                ServiceUrl::parse(&url, Scheme::Postgres).expect("the model's test URL is valid")
            }
        };

        let database_url = match vars.get("DATABASE_URL")? {
            Some((raw, origin)) if !raw.is_empty() => {
                sources.insert("DATABASE_URL", origin.clone());
                Some(parse_url("DATABASE_URL", &raw, origin, Scheme::Postgres)?)
            }
            _ => match vars.get("POSTGRES_SERVER")? {
                Some((server, _)) => {
                    sources.insert("DATABASE_URL", Source::Assembled);
                    Some(assemble_database_url(&vars, &server)?)
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
            if secret == model::DEV_TOKEN_SECRET || secret.len() < MIN_SECRET_LEN {
                return Err(ConfigError::WeakTokenSecret);
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
            token_secret,
            bind,
            pool_size,
            pool_timeout,
            request_timeout,
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
            (_, None) => Err(ConfigError::MissingPart {
                var: "DATABASE_URL",
            }),
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
                "TEST_DATABASE_URL",
                self.test_database_url.to_string(),
                source("TEST_DATABASE_URL"),
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

fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn find_upwards(dir: &Path, name: &str) -> Option<PathBuf> {
    dir.ancestors().map(|d| d.join(name)).find(|p| p.is_file())
}

fn host_address(address: Option<Address>) -> Address {
    address.expect("services run by compose have a host address")
}

/// Inside a container, the model's host addresses (`localhost:5433`) mean nothing: translate
/// them to the in-network ones (`test-db:5432`). Any other address is left as the user wrote it.
fn to_network(url: ServiceUrl) -> ServiceUrl {
    let pairs = [model::TEST_DB, model::DEV_DB]
        .iter()
        .filter_map(|db| Some((db.host_address?, db.network_address?)))
        .chain([(model::REDIS.host_address, model::REDIS.network_address)]);
    for (host, network) in pairs {
        let is_local = matches!(url.host(), "localhost" | "127.0.0.1" | "[::1]");
        if is_local && url.port() == Some(host.port) {
            return url.with_address(network.host, network.port);
        }
    }
    url
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
            reason: reason.into(),
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

fn assemble_database_url(vars: &Vars, server: &str) -> Result<ServiceUrl, ConfigError> {
    let required = |var: &'static str| match vars.get(var) {
        Ok(Some((value, _))) if !value.is_empty() => Ok(value),
        Ok(_) => Err(ConfigError::MissingPart { var }),
        Err(err) => Err(err),
    };
    let user = required("POSTGRES_USER")?;
    let db = required("POSTGRES_DB")?;
    let password = vars
        .get("POSTGRES_PASSWORD")?
        .map(|(p, _)| p)
        .unwrap_or_default();
    let port = match vars.get("POSTGRES_PORT")? {
        Some((port, origin)) => port.parse::<u16>().map_err(|_| ConfigError::InvalidValue {
            var: "POSTGRES_PORT".into(),
            origin,
            value: port,
            expected: "a port number",
        })?,
        None => model::POSTGRES_PORT,
    };
    let raw = if password.is_empty() {
        format!("postgresql://{user}@{server}:{port}/{db}")
    } else {
        format!("postgresql://{user}:{password}@{server}:{port}/{db}")
    };
    parse_url("DATABASE_URL", &raw, Source::Assembled, Scheme::Postgres)
}

/// The variables visible to the settings: the process environment over the env files.
struct Vars {
    process: BTreeMap<String, String>,
    entries: Vec<(PathBuf, Entry)>,
}

impl Vars {
    /// The raw value of `name` and where it came from. Env-file values have their `${VAR}`
    /// references expanded; one that cannot be resolved is an error naming it.
    fn get(&self, name: &str) -> Result<Option<(String, Source)>, ConfigError> {
        if let Some(value) = self.process.get(name) {
            return Ok(Some((value.clone(), Source::Environment)));
        }
        let Some((path, entry)) = self.entries.iter().find(|(_, e)| e.key == name) else {
            return Ok(None);
        };
        let origin = Source::File {
            path: path.clone(),
            line: entry.line,
        };
        let lookup = |key: &str| {
            self.process.get(key).cloned().or_else(|| {
                self.entries
                    .iter()
                    .find(|(_, e)| e.key == key && !e.value.contains("${"))
                    .map(|(_, e)| e.value.clone())
            })
        };
        match expand(&entry.value, lookup) {
            Ok(value) => Ok(Some((value, origin))),
            // `KEY=${KEY}` (the production file's placeholders) with KEY unset means unset.
            Err(missing) if entry.value == format!("${{{name}}}") && missing == [name] => Ok(None),
            Err(missing) => Err(ConfigError::Unresolved {
                var: name.into(),
                origin,
                missing: missing.join(", "),
            }),
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
