//! Where a setting came from, and the errors that name the variable and its source.

use std::fmt;
use std::path::PathBuf;

use crate::{MIN_SECRET_BITS, MIN_SECRET_LEN, PASSWORD_HASH_COST};

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
