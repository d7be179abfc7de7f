//! The marker a `db-reset` leaves under `target/xtask` while it drops and recreates a
//! database: a command that finds one left by a killed reset says what happened and how to get
//! the data back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use genesis_model::Env;
use serde::{Deserialize, Serialize};

use super::stack::Stack;
use crate::tools::pg::Target;
use crate::tools::util::{Mode, ensure_file_contents, xtask_dir};

/// What a reset in progress leaves under `target/xtask`: written before the drop, removed once
/// the database is migrated and seeded, so that when a kill stops the reset in between, the
/// next command on the stack says what happened and where the data is.
#[derive(Debug, Serialize, Deserialize)]
struct MarkerText {
    env: String,
    /// The database's URL, password masked.
    database: String,
    /// The verified backups taken before (dev), oldest first: a reset run again after a
    /// killed one keeps the first, which holds the data.
    backups: Vec<PathBuf>,
    pid: u32,
}

pub struct Marker {
    path: PathBuf,
}

impl Marker {
    fn path(stack: &Stack, env: Env) -> PathBuf {
        xtask_dir().join(format!("reset-in-progress-{}-{env}.json", stack.name()))
    }

    pub fn write(stack: &Stack, target: &Target, backup: Option<&Path>) -> Result<Marker> {
        let path = Marker::path(stack, target.env);
        let mut backups = read_marker(&path).map(|m| m.backups).unwrap_or_default();
        backups.extend(backup.map(Path::to_path_buf));
        let text = MarkerText {
            env: target.env.name().to_owned(),
            database: target.masked_url(),
            backups,
            pid: std::process::id(),
        };
        std::fs::create_dir_all(xtask_dir()).context("create target/xtask")?;
        ensure_file_contents(
            &path,
            &(serde_json::to_string_pretty(&text)? + "\n"),
            Mode::Write,
        )
        .with_context(|| format!("write {}", path.display()))?;
        Ok(Marker { path })
    }

    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The marker a reset of `target` on `stack` left when it was killed after its drop
    /// began, removed: a restore brought the data back.
    pub fn clear(stack: &Stack, target: &Target) {
        let path = Marker::path(stack, target.env);
        if read_marker(&path).is_some_and(|m| m.database == target.masked_url()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a killed reset of `env` on `stack` left, and how to get the data back, if one did.
pub fn after_killed_reset(stack: &Stack, env: Env) -> Option<String> {
    let marker = read_marker(&Marker::path(stack, env))?;
    if Path::new("/proc").join(marker.pid.to_string()).exists() && std::process::id() != marker.pid
    {
        // The reset is still running (another terminal).
        return None;
    }
    let flag = stack.flag();
    let again = format!("`cargo xtask db-reset --env {env}{flag}` makes it empty again");
    Some(match marker.backups.iter().find(|b| b.is_file()) {
        Some(backup) => format!(
            "a `db-reset --env {env}` of {} was killed after it began dropping the database, \
             so its data may be gone; the verified backup taken before is {}: \
             `cargo xtask db-restore --env {env}{flag} {}` brings the data back, or {again}",
            marker.database,
            backup.display(),
            backup.display()
        ),
        None => format!(
            "a `db-reset --env {env}` of {} was killed after it began dropping the database, \
             so the database may be missing or empty; no backup was taken (test, or \
             --no-backup): {again}",
            marker.database
        ),
    })
}

fn read_marker(path: &Path) -> Option<MarkerText> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Prints [`after_killed_reset`]'s warning, if there is one.
pub fn warn_after_killed_reset(stack: &Stack, env: Env) {
    if let Some(warning) = after_killed_reset(stack, env) {
        eprintln!("warning: {warning}");
    }
}
