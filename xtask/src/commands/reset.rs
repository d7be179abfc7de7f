//! `db-reset`: drop and recreate a test or dev database on this machine, apply the migrations
//! through the application's migrator, and run the environment's seed file.
//!
//! Every refusal comes before anything is touched: production (by label, or by what the
//! connection is: the guard of `pg::Target::production_reason`), servers on other machines,
//! the server's own databases, and a missing `--yes` without a terminal. Then, in order: the
//! migrator is built (a failed build leaves the database as it was), dev gets a verified backup
//! (`backup::take`), the database is dropped with `FORCE` and recreated from the maintenance
//! database with the connection's user as owner, migrated, and seeded in one transaction.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use genesis_model::Env;
use genesis_settings::redact;
use xshell::Shell;

use crate::commands::backup;
use crate::commands::migration::{self, Migrator};
use crate::flags;
use crate::services::Stack;
use crate::tools::pg::{MAINTENANCE_DB, Target, create_database, ident};
use crate::tools::util::{check_failed, confirm as util_confirm, one_line, project_root, usage};

/// Where the seed files are, relative to the workspace root: `<env>.sql` (`test.sql`, `dev.sql`).
pub const SEEDS_DIR: &str = "crates/genesis-api/seeds";

/// The server's own databases: never reset, whatever a `--url` says.
const SERVER_DATABASES: &[&str] = &["postgres", "template0", "template1"];

impl flags::DbReset {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let target = resolve(stack, env, self.url.as_deref())?;
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

pub use crate::services::reset_marker::{Marker, warn_after_killed_reset};

/// The database to reset, or why it may not be: the refusals need nothing but the target.
fn resolve(stack: &Stack, env: Env, url: Option<&str>) -> Result<Target> {
    if env == Env::Prod {
        return Err(usage(
            "db-reset never resets production: it drops the database; it resets test and dev \
             databases on this machine",
        ));
    }
    let mut target = Target::resolve(env, url)?;
    stack.aim(&mut target)?;
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

/// Asks before the drop, or needs `--yes` without a terminal (`util::confirm`).
fn confirm(target: &Target, yes: bool, backup: bool) -> Result<()> {
    let first = if backup {
        "take a verified backup, then "
    } else {
        ""
    };
    util_confirm(
        &format!(
            "db-reset would {first}drop and recreate {} (everything in it is lost)",
            target.masked_url()
        ),
        yes,
        "nothing was touched",
    )
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
    create_database(sh, target)
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
        return Err(check_failed(format!(
            "the seed {} failed and was rolled back (the database is migrated, not seeded): {}",
            shown(seed),
            redact(&one_line(&out.stderr))
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
