//! `db-reset`: drop and recreate a test or dev database on this machine, apply the migrations
//! through the application's migrator, and run the environment's seed file.
//!
//! Every refusal comes before anything is touched: production (by label, or by what the
//! connection is: the guard of `pg::Target::production_reason`), servers on other machines,
//! the server's own databases, and a missing `--yes` without a terminal. Then, in order: the
//! migrator is built (a failed build leaves the database as it was), dev gets a verified backup
//! (`backup::take`), the database is dropped with `FORCE` and recreated from the maintenance
//! database with the connection's user as owner, migrated, and seeded in one transaction.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use genesis_model::Env;
use genesis_settings::redact;
use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::backup;
use crate::flags;
use crate::migration::{self, Migrator};
use crate::pg::Target;
use crate::services::Stack;
use crate::util::{check_failed, project_root, usage, xtask_dir};

/// Where the seed files are, relative to the workspace root: `<env>.sql` (`test.sql`, `dev.sql`).
pub const SEEDS_DIR: &str = "crates/genesis-api/seeds";

/// The database `db-reset` connects to while it drops and recreates the target's.
const MAINTENANCE_DB: &str = "postgres";

/// The server's own databases: never reset, whatever a `--url` says.
const SERVER_DATABASES: &[&str] = &["postgres", "template0", "template1"];

impl flags::DbReset {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let target = resolve(sh, stack, env, self.url.as_deref())?;
        warn_after_killed_reset(stack, env);
        confirm(&target, self.yes, env == Env::Dev && !self.no_backup)?;
        // The server, not the database: a reset also recreates a database that is gone.
        backup::reach(sh, &target.with_database(MAINTENANCE_DB))?;
        let seed = seed_file(env);
        let migrator = Migrator::build(sh)?;

        let backup = if env == Env::Dev && !self.no_backup {
            let taken = backup::take(sh, &target, None)
                .context("the backup before the reset failed; nothing was dropped")?;
            if !self.json {
                println!(
                    "backed up {} tables to {} (verified, {:.1} s)",
                    taken.tables(),
                    taken.output.display(),
                    taken.seconds
                );
            }
            Some(taken.output)
        } else {
            None
        };

        let marker = Marker::write(stack, &target, backup.as_deref())?;
        recreate(sh, &target)?;
        if !self.json {
            println!(
                "dropped and recreated {} (owner {})",
                target.masked_url(),
                target.user
            );
        }
        let applied = migrator.migrate(sh, &target)?;
        if !self.json {
            migration::print_applied(&target, &applied);
        }
        if let Some(seed) = &seed {
            run_seed(sh, &target, seed)?;
            if !self.json {
                println!("seeded from {}", shown(seed));
            }
        } else if !self.json {
            println!("no seed file {}/{env}.sql", SEEDS_DIR);
        }
        marker.remove();
        if self.json {
            let out = serde_json::json!({
                "env": env.name(),
                "database": target.masked_url(),
                "backup": backup.as_ref().map(|p| p.display().to_string()),
                "applied": applied.applied,
                "seed": seed.as_ref().map(|p| shown(p)),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Ok(())
    }
}

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

    fn write(stack: &Stack, target: &Target, backup: Option<&Path>) -> Result<Marker> {
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
        crate::util::ensure_file_contents(
            &path,
            &(serde_json::to_string_pretty(&text)? + "\n"),
            crate::util::Mode::Write,
        )
        .with_context(|| format!("write {}", path.display()))?;
        Ok(Marker { path })
    }

    fn remove(self) {
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

/// The database to reset, or why it may not be: the refusals need nothing but the target.
fn resolve(sh: &Shell, stack: &Stack, env: Env, url: Option<&str>) -> Result<Target> {
    if env == Env::Prod {
        return Err(usage(
            "db-reset never resets production: it drops the database; it resets test and dev \
             databases on this machine",
        ));
    }
    let mut target = Target::resolve(env, url)?;
    stack.aim(sh, &mut target)?;
    refusal(&target, &|key| std::env::var(key).ok()).map_or(Ok(target), |why| Err(usage(why)))
}

/// Why `target` may not be reset, if it may not.
fn refusal(target: &Target, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let url = target.masked_url();
    if let Some(reason) = target.production_reason(env) {
        return Some(format!(
            "db-reset refuses {url}, which is production ({reason}); nothing was touched"
        ));
    }
    if !target.is_local() {
        return Some(format!(
            "db-reset refuses {url}, which is not on this machine: it only resets local test \
             and dev databases; nothing was touched"
        ));
    }
    if SERVER_DATABASES.contains(&target.database.as_str()) {
        return Some(format!(
            "db-reset refuses {url}: {} is one of the server's own databases; nothing was touched",
            target.database
        ));
    }
    None
}

/// `--yes`, or a "y" typed on the terminal; without a terminal and without `--yes`, exit 2.
fn confirm(target: &Target, yes: bool, backup: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(usage(format!(
            "db-reset would drop {} and everything in it; there is no terminal to ask on: pass \
             --yes",
            target.masked_url()
        )));
    }
    let first = if backup {
        "after a verified backup, "
    } else {
        ""
    };
    eprint!(
        "{first}drop and recreate {} (everything in it is lost)? [y/N] ",
        target.masked_url()
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("read the answer")?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(usage("not confirmed: nothing was touched"))
    }
}

/// `crates/genesis-api/seeds/<env>.sql`, when it exists.
fn seed_file(env: Env) -> Option<PathBuf> {
    let path = project_root()
        .join(SEEDS_DIR)
        .join(format!("{}.sql", env.name()));
    path.is_file().then_some(path)
}

fn shown(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A name written into SQL as a quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops `target`'s database (`FORCE`: its sessions are ended) and creates it again, owned by
/// the connection's user, from the maintenance database of the same server. Two statements:
/// neither may run inside a transaction.
fn recreate(sh: &Shell, target: &Target) -> Result<()> {
    let server = target.with_database(MAINTENANCE_DB);
    let db = ident(&target.database);
    server
        .query(sh, &format!("drop database if exists {db} with (force)"))
        .map_err(|err| {
            check_failed(format!(
                "drop {} (through {MAINTENANCE_DB}): {err}",
                target.database
            ))
        })?;
    create(sh, target)
}

/// Creates `target`'s database, owned by the connection's user, from the maintenance database
/// of the same server: the second half of a reset, and what a restore after a killed reset
/// needs first.
pub fn create(sh: &Shell, target: &Target) -> Result<()> {
    let server = target.with_database(MAINTENANCE_DB);
    let db = ident(&target.database);
    server
        .query(
            sh,
            &format!(
                "create database {db} owner {} template template0",
                ident(&target.user)
            ),
        )
        .map_err(|err| {
            check_failed(format!(
                "{} was dropped but could not be created again (through {MAINTENANCE_DB}): \
                 {err}; `cargo xtask db-reset` again once the cause is fixed",
                target.database
            ))
        })?;
    Ok(())
}

/// Runs the seed file in one transaction that stops on its first error.
fn run_seed(sh: &Shell, target: &Target, seed: &Path) -> Result<()> {
    let out = target
        .psql(sh)
        .arg("--single-transaction")
        .arg("--file")
        .arg(seed)
        .ignore_status()
        .output()
        .context("run psql")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(check_failed(format!(
            "the seed {} failed and was rolled back (the database is migrated, not seeded): {}",
            shown(seed),
            redact(&why.join(" "))
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(env: Env, url: &str) -> Target {
        Target::resolve(env, Some(url)).unwrap()
    }

    #[test]
    fn refuses_production_remote_and_server_databases() {
        let none = |_: &str| None;
        let local = target(Env::Dev, "postgresql://u:p@localhost:5432/genesis_db");
        assert_eq!(refusal(&local, &none), None);
        let socket = target(
            Env::Test,
            "postgresql://u@/test_db?host=/var/run/postgresql",
        );
        assert_eq!(refusal(&socket, &none), None);

        let remote = target(Env::Dev, "postgresql://u:p@db.example.com/genesis_db");
        let why = refusal(&remote, &none).unwrap();
        assert!(why.contains("not on this machine"), "{why}");
        assert!(!why.contains(":p@"), "{why}");

        let prod = genesis_model::PROD_DB;
        let named = target(Env::Dev, &format!("postgresql://u@localhost/{}", prod.name));
        assert!(refusal(&named, &none).unwrap().contains("production"));
        // A local host that the production DATABASE_URL names is production's.
        let env = |key: &str| match key {
            "DATABASE_URL" => Some("postgresql://a@10.0.0.5/x".to_owned()),
            "ENVIRONMENT" => Some("production".to_owned()),
            _ => None,
        };
        let shared = target(Env::Dev, "postgresql://u@10.0.0.5/genesis_db");
        assert!(refusal(&shared, &env).unwrap().contains("production"));

        let maintenance = target(Env::Test, "postgresql://u@localhost/postgres");
        assert!(
            refusal(&maintenance, &none)
                .unwrap()
                .contains("server's own")
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("genesis_db"), "\"genesis_db\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
