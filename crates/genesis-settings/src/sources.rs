//! Where the settings read their variables: the process environment, the env files found
//! from the current folder up to the workspace root, and which keys name secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use genesis_model as model;

use crate::{ConfigError, PASSWORD_HASH_COST, Resolved, Source, secret};

/// The process environment as text. A variable the settings read whose value is not UTF-8
/// is refused by name (its value is never shown: it may be a secret), never skipped as if
/// it were unset; other variables that are not UTF-8 are left out.
pub(crate) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
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
pub(crate) fn read_by_settings(key: &str) -> bool {
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
pub(crate) fn register_file_secrets(resolved: &[Resolved]) {
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

/// The variables visible to the settings: the process environment over the env files, which
/// are in the order of their precedence.
pub(crate) struct Vars {
    pub(crate) process: BTreeMap<String, String>,
    pub(crate) resolved: Vec<Resolved>,
}

impl Vars {
    /// The value of `name` and where it came from. Env-file values have their references
    /// expanded; one that cannot be resolved is an error naming it.
    pub(crate) fn get(&self, name: &str) -> Result<Option<(String, Source)>, ConfigError> {
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
    pub(crate) fn number(
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

    pub(crate) fn flag(
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

/// A boolean setting as the settings accept it: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`/empty.
pub(crate) fn parse_bool(var: &str, value: &str, origin: &Source) -> Result<bool, ConfigError> {
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
