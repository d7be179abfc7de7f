//! `migration new`, `migration status` and `db-migrate`: the application's migrations as
//! commands.
//!
//! The files are the application's: `build.rs` embeds them and the app's migrator applies them,
//! at start-up or as `genesis-api migrate`. The xtask has no database driver: it builds that
//! binary from this tree and runs it ([`Migrator`]), the target handed over in the child's
//! environment only, and reads its JSON.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use genesis_model as model;
use genesis_settings::redact;
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::commands::backup;
use crate::flags;
use crate::services::Stack;
use crate::tools::pg::Target;
use crate::tools::util::{check_failed, project_root, target_dir, usage};

/// The folder of the application's migrations, relative to the workspace root.
pub const MIGRATIONS_DIR: &str = "crates/genesis-api/migrations";

/// The longest name a new migration may have.
const MAX_NAME: usize = 60;

impl flags::Migration {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        match self.cmd {
            flags::MigrationCmd::New(cmd) => cmd.run(sh),
            flags::MigrationCmd::Status(cmd) => cmd.run(sh, stack),
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

impl flags::MigrationStatus {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        // Reading only: any environment, any server.
        let mut target = Target::resolve(env, self.url.as_deref())?;
        stack.aim(&mut target)?;
        let report = Migrator::build(sh)?.status(sh, &target)?;
        let problems = report.problems();
        if self.json {
            let out = serde_json::json!({
                "env": env.name(),
                "database": target.masked_url(),
                "migrations": report.migrations,
                "counts": report.counts(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print_status(&target, &report);
        }
        if !problems.is_empty() {
            return Err(check_failed(problems.join("; ")));
        }
        Ok(())
    }
}

impl flags::DbMigrate {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let target = backup::resolve_allowed(
            stack,
            env,
            &self.server,
            "db-migrate changes the schema of that database",
        )?;
        crate::services::reset_marker::warn_after_killed_reset(stack, env);
        let report = Migrator::build(sh)?.migrate(sh, &target)?;
        if self.json {
            let out = serde_json::json!({
                "env": env.name(),
                "database": target.masked_url(),
                "applied": report.applied,
                "already_applied": report.already_applied,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print_applied(&target, &report);
        }
        Ok(())
    }
}

/// Prints what a migrator run applied.
pub fn print_applied(target: &Target, report: &Applied) {
    for m in &report.applied {
        println!("applied {}", m.file());
    }
    println!(
        "{} applied, {} already applied, at {}",
        report.applied.len(),
        report.already_applied,
        target.masked_url()
    );
}

fn print_status(target: &Target, report: &Status) {
    println!("migrations of {} ({})", target.masked_url(), target.env);
    let width = report
        .migrations
        .iter()
        .map(|m| m.file().len())
        .max()
        .unwrap_or(0)
        .max("MIGRATION".len());
    println!(
        "  {:width$}  {:8}  {:20}  CHECKSUM",
        "MIGRATION", "STATE", "APPLIED AT (UTC)"
    );
    let short = |sum: &str| sum.get(..12).unwrap_or(sum).to_owned();
    for m in &report.migrations {
        let checksum = match &m.recorded_checksum {
            Some(recorded) => format!("{} (applied as {})", short(&m.checksum), short(recorded)),
            None => short(&m.checksum),
        };
        println!(
            "  {:width$}  {:8}  {:20}  {checksum}",
            m.file(),
            m.state,
            m.applied_at.as_deref().unwrap_or("-"),
        );
    }
    let counts = report.counts();
    println!(
        "{} applied, {} pending, {} edited, {} unknown",
        counts.applied, counts.pending, counts.edited, counts.unknown
    );
}

// ---- the application's migrator ------------------------------------------------------------

/// One migration as `genesis-api migrate --status --json` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub version: i64,
    pub name: String,
    /// `applied`, `pending`, `edited` or `unknown`.
    pub state: String,
    pub checksum: String,
    pub recorded_checksum: Option<String>,
    pub applied_at: Option<String>,
}

impl Row {
    /// The file name the migration has (or had) in the tree.
    pub fn file(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }
}

/// Where a database stands.
#[derive(Debug, Deserialize)]
pub struct Status {
    pub migrations: Vec<Row>,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    applied: usize,
    pending: usize,
    edited: usize,
    unknown: usize,
}

impl Status {
    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for m in &self.migrations {
            match m.state.as_str() {
                "applied" => counts.applied += 1,
                "pending" => counts.pending += 1,
                "edited" => counts.edited += 1,
                _ => counts.unknown += 1,
            }
        }
        counts
    }

    /// What stops `db-migrate`, one sentence per migration naming its file.
    pub fn problems(&self) -> Vec<String> {
        self.migrations
            .iter()
            .filter_map(|m| match m.state.as_str() {
                "applied" | "pending" => None,
                "edited" => Some(format!(
                    "{} was edited after it was applied (applied as {}, now {}): restore the \
                     file and add a new migration instead",
                    m.file(),
                    m.recorded_checksum.as_deref().unwrap_or("?"),
                    m.checksum
                )),
                "unknown" => Some(format!(
                    "{} is applied in the database but not in this tree (migrated by a newer \
                     build)",
                    m.file()
                )),
                other => Some(format!("{} is in an unknown state {other:?}", m.file())),
            })
            .collect()
    }
}

/// One migration a run applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedOne {
    pub version: i64,
    pub name: String,
}

impl AppliedOne {
    pub fn file(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }
}

/// What `genesis-api migrate --json` did.
#[derive(Debug, Deserialize)]
pub struct Applied {
    pub applied: Vec<AppliedOne>,
    pub already_applied: usize,
}

/// `genesis-api migrate`, built from this tree into `<workspace>/target`.
pub struct Migrator {
    bin: PathBuf,
}

impl Migrator {
    pub fn build(sh: &Shell) -> Result<Migrator> {
        let target = target_dir();
        let cargo = crate::tools::util::cargo();
        cmd!(
            sh,
            "{cargo} build --quiet -p genesis-api --bin genesis-api --target-dir {target}"
        )
        .quiet()
        .run()
        .map_err(|err| check_failed(format!("build genesis-api: {err}")))?;
        Ok(Migrator {
            bin: target.join("debug/genesis-api"),
        })
    }

    /// Where `target`'s database stands; reads only.
    pub fn status(&self, sh: &Shell, target: &Target) -> Result<Status> {
        let out = self.run(sh, target, &["--status", "--json"])?;
        serde_json::from_str(&out).context("read the output of `genesis-api migrate --status`")
    }

    /// Applies the pending migrations to `target`'s database. An edited or unknown migration
    /// is refused first, with its file's name (the migrator checks again under its lock). When
    /// one fails, those applied before it in the same run stay applied (each has its own
    /// transaction): the error names them, from a status read afterwards.
    pub fn migrate(&self, sh: &Shell, target: &Target) -> Result<Applied> {
        let before = self.status(sh, target)?;
        let problems = before.problems();
        if !problems.is_empty() {
            return Err(check_failed(format!(
                "nothing applied: {}",
                problems.join("; ")
            )));
        }
        match self.run(sh, target, &["--json"]) {
            Ok(out) => {
                serde_json::from_str(&out).context("read the output of `genesis-api migrate`")
            }
            Err(err) => {
                let Ok(after) = self.status(sh, target) else {
                    return Err(err);
                };
                let applied = newly_applied(&before, &after);
                if applied.is_empty() {
                    return Err(err);
                }
                Err(err.context(format!("applied {} before the failure", applied.join(", "))))
            }
        }
    }

    /// Runs `genesis-api migrate ARGS` on `target`: `ENVIRONMENT` and the environment's URL
    /// variable set in the child's environment (the password never on its command line), and
    /// nothing of the caller's that would point it elsewhere. Its exit codes keep their
    /// meaning: 2 (settings or connection) is a usage error, any other failure a failed check.
    fn run(&self, sh: &Shell, target: &Target, args: &[&str]) -> Result<String> {
        let bin = &self.bin;
        let mut cmd = cmd!(sh, "{bin} migrate {args...}").quiet();
        let (var, url) = child_database(target);
        for key in child_env_removals(std::env::vars_os().map(|(k, _)| k), var) {
            cmd = cmd.env_remove(key);
        }
        let out = cmd
            .env(model::ENVIRONMENT_VAR, target.env.environment_value())
            .env(var, url)
            .secret()
            .ignore_status()
            .output()
            .context("run genesis-api migrate")?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr
            .lines()
            .map(|l| l.trim().trim_start_matches("error: "))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        // In production the migrator loads the production settings, as the API does.
        let hint = match (out.status.code(), target.env) {
            (Some(2), model::Env::Prod) => {
                ", which in production needs the settings the API starts with (a \
                 TOKEN_SECRET in the environment or .env.production)"
            }
            _ => "",
        };
        let message = redact(&format!(
            "genesis-api migrate on {} ({var}){hint}: {message}",
            target.masked_url()
        ));
        Err(match out.status.code() {
            Some(2) => usage(message),
            _ => check_failed(message),
        })
    }
}

/// The files pending in `before` and applied in `after`.
fn newly_applied(before: &Status, after: &Status) -> Vec<String> {
    after
        .migrations
        .iter()
        .filter(|m| m.state == "applied")
        .filter(|m| {
            before
                .migrations
                .iter()
                .any(|b| b.version == m.version && b.state == "pending")
        })
        .map(Row::file)
        .collect()
}

/// The variable the application reads `target`'s URL from in its environment, and the URL.
fn child_database(target: &Target) -> (&'static str, String) {
    (target.env.database().url_var, target.exposed_url())
}

/// The inherited variables removed from the migrator's environment (of `keys`, the caller's):
/// every `PG*` (libpq's defaults), the container flag (it would rewrite the host to the
/// compose network's name), and the database URL variable other than `set` (the target's,
/// which the caller sets).
fn child_env_removals(keys: impl Iterator<Item = OsString>, set: &str) -> Vec<OsString> {
    let fixed = [
        model::API.in_container_var,
        "DATABASE_URL",
        model::TEST_DB.url_var,
    ];
    let mut out: Vec<OsString> = keys
        .filter(|k| k.to_string_lossy().starts_with("PG"))
        .collect();
    out.extend(
        fixed
            .iter()
            .filter(|k| **k != set)
            .map(|k| OsString::from(*k)),
    );
    out
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
    fn the_migrator_gets_only_the_target_of_the_xtask() {
        let keys = [
            "PGHOST",
            "PGPASSWORD",
            "PATH",
            "DATABASE_URL",
            "TOKEN_SECRET",
        ]
        .map(OsString::from)
        .into_iter();
        let removed = child_env_removals(keys.clone(), "DATABASE_URL");
        assert_eq!(
            removed,
            [
                "PGHOST",
                "PGPASSWORD",
                "RUNNING_IN_DOCKER",
                "TEST_DATABASE_URL"
            ]
            .map(OsString::from)
        );
        let removed = child_env_removals(keys, "TEST_DATABASE_URL");
        assert!(removed.contains(&OsString::from("DATABASE_URL")));
        assert!(!removed.contains(&OsString::from("TEST_DATABASE_URL")));
        let target = Target::resolve(
            model::Env::Test,
            Some("postgresql://u:s3cret@localhost:1/d"),
        )
        .unwrap();
        let (var, url) = child_database(&target);
        assert_eq!(var, "TEST_DATABASE_URL");
        assert!(url.contains("s3cret"), "the child needs the password");
    }

    #[test]
    fn status_names_edited_and_unknown_files() {
        let row = |version, state: &str, recorded: Option<&str>| Row {
            version,
            name: format!("m{version}"),
            state: state.to_owned(),
            checksum: "new".to_owned(),
            recorded_checksum: recorded.map(str::to_owned),
            applied_at: None,
        };
        let status = Status {
            migrations: vec![
                row(1, "applied", None),
                row(2, "edited", Some("old")),
                row(3, "pending", None),
                row(9, "unknown", None),
            ],
        };
        let problems = status.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let mut after = Status {
            migrations: status.migrations.clone(),
        };
        after.migrations[2].state = "applied".to_owned();
        assert_eq!(newly_applied(&status, &after), ["0003_m3.sql"]);
        assert!(
            problems[0].starts_with("0002_m2.sql was edited"),
            "{problems:?}"
        );
        assert!(problems[0].contains("applied as old, now new"));
        assert!(
            problems[1].starts_with("0009_m9.sql is applied in the database but not in this tree")
        );
        assert_eq!(
            status.counts(),
            Counts {
                applied: 1,
                pending: 1,
                edited: 1,
                unknown: 1
            }
        );
    }

    #[test]
    fn the_first_migration_is_0001() {
        let dir = scratch(&[]);
        let path = create(&dir, "init").unwrap();
        assert_eq!(path.file_name().unwrap(), "0001_init.sql");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
