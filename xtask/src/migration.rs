//! `migration new`: the next numbered migration file under `crates/genesis-api/migrations/`.
//!
//! The files are the application's: `build.rs` embeds them and the app's migrator applies them
//! (at start-up, or through `cargo xtask db-migrate`). This module only names and creates them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::Shell;

use crate::flags;
use crate::services::Stack;
use crate::util::{project_root, usage};

/// The folder of the application's migrations, relative to the workspace root.
pub const MIGRATIONS_DIR: &str = "crates/genesis-api/migrations";

/// The longest name a new migration may have.
const MAX_NAME: usize = 60;

impl flags::Migration {
    pub fn run(self, sh: &Shell, _stack: &Stack) -> Result<()> {
        match self.cmd {
            flags::MigrationCmd::New(cmd) => cmd.run(sh),
        }
    }
}

impl flags::MigrationNew {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let dir = project_root().join(MIGRATIONS_DIR);
        let path = create(&dir, &self.name)?;
        let shown = path.strip_prefix(project_root()).unwrap_or(&path);
        println!("created {}", shown.display());
        println!("write its SQL, then `cargo xtask db-migrate --env dev` applies it");
        Ok(())
    }
}

/// Creates the next migration file named `name` in `dir` and returns its path. Refuses a name
/// that is not a plain identifier or that a migration already has; never overwrites a file.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    check_name(name).map_err(|why| usage(format!("migration name {name:?}: {why}")))?;
    let existing = existing(dir)?;
    if let Some((version, _)) = existing.iter().find(|(_, n)| n == name) {
        return Err(usage(format!(
            "migration {version:04}_{name} already exists; choose another name"
        )));
    }
    let version = existing.iter().map(|(v, _)| *v).max().unwrap_or(0) + 1;
    let path = dir.join(format!("{version:04}_{name}.sql"));
    let header = format!(
        "-- Migration {version:04}: {name}.\n\
         -- Applied once, in its own transaction, by the application's migrator (at start-up or\n\
         -- through `cargo xtask db-migrate`). Once applied anywhere, never edit this file: add a\n\
         -- new migration instead.\n\n"
    );
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(header.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !c.is_ascii_lowercase() => {
            return Err("it must start with a lowercase ASCII letter");
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err("use lowercase ASCII letters, digits and underscores only (e.g. add_tags)");
    }
    if name.len() > MAX_NAME {
        return Err("it is longer than 60 characters");
    }
    Ok(())
}

/// The `(version, name)` of every `NNNN_name.sql` in `dir`, as `build.rs` reads them.
fn existing(dir: &Path) -> Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        let file = entry.file_name();
        let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".sql")) else {
            continue;
        };
        let Some((version, name)) = stem.split_once('_') else {
            continue;
        };
        if let Ok(version) = version.parse::<u32>() {
            out.push((version, name.to_owned()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(files: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-migration-{}-{}",
            std::process::id(),
            files.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), "select 1;\n").unwrap();
        }
        dir
    }

    #[test]
    fn numbers_after_the_highest_and_never_overwrites() {
        let dir = scratch(&["0001_a.sql", "0007_b.sql", "README.md"]);
        let path = create(&dir, "add_tags").unwrap();
        assert_eq!(path.file_name().unwrap(), "0008_add_tags.sql");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-- Migration 0008: add_tags."));
        let again = create(&dir, "add_tags").unwrap_err().to_string();
        assert!(again.contains("0008_add_tags already exists"), "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_names_that_are_not_plain_identifiers() {
        for bad in ["", "Add", "1x", "a-b", "a b", "../x", "é", &"x".repeat(61)] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["a", "add_tags", "v2_users"] {
            assert_eq!(check_name(good), Ok(()));
        }
    }

    #[test]
    fn the_first_migration_is_0001() {
        let dir = scratch(&[]);
        let path = create(&dir, "init").unwrap();
        assert_eq!(path.file_name().unwrap(), "0001_init.sql");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
