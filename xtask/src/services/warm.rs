//! Warm services for the edit-and-rerun loop: `test --keep` leaves its services running with a
//! `warm:<recipe>` run label, and the next run on the stack reuses them only when the recipe
//! (the compose file, the images compose would use, the test database's certificates) is
//! the same, the container runs, and its probe answers; otherwise it is removed and started
//! afresh. A reused test database and Redis are scrubbed before the suites run, so a warm run
//! sees what a fresh one sees: the migrated templates stay (they are named after the
//! migrations' digest and never written by a test), every other test database goes, `test_db`
//! is made anew, and Redis is flushed.

use anyhow::{Context, Result};
use genesis_model::{self as model, IMAGES};
use sha2::{Digest, Sha256};
use xshell::Shell;

use super::engine::Engine;

use super::certs;
use super::container::Container;
use super::images;
use super::run::WARM;
use super::running::Running;
use crate::tools::child::{check_output, run_checked};
use crate::tools::util::project_root;
use genesis_model::Service;

impl Container {
    /// The recipe a warm service was started from; `None` for any other container.
    pub fn warm_recipe(&self) -> Option<&str> {
        self.run_label()?.strip_prefix(WARM)
    }
}

/// What a stack's services are made from, as a short hash: the compose file, each image
/// compose would use (name and id), and the test database's certificates (made here if they
/// are missing, as the start would). Any change to one of them makes warm services stale.
pub(super) fn recipe(sh: &Shell) -> Result<String> {
    let mut hash = Sha256::new();
    let compose = project_root().join("docker-compose.yml");
    hash.update(std::fs::read(&compose).with_context(|| format!("read {}", compose.display()))?);
    let chosen: Vec<String> = IMAGES
        .iter()
        .map(|image| images::image_available(*image).unwrap_or_default())
        .filter(|name| !name.is_empty())
        .collect();
    let engine = Engine::get()?;
    let mut ids = String::new();
    for name in &chosen {
        if let Some(image) = engine.image(name)? {
            ids.push_str(&image.id);
            ids.push('\n');
        }
    }
    hash.update(chosen.join("\n"));
    hash.update(ids);
    let dir = certs::ensure_test_db_certs(sh)?;
    for file in ["ca.crt", "server.crt", "server.key"] {
        let path = dir.join(file);
        hash.update(std::fs::read(&path).with_context(|| format!("read {}", path.display()))?);
    }
    Ok(hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Whether a warm container can serve a run made from `recipe`: same recipe, this checkout,
/// running and not reported unhealthy by its healthcheck.
pub(super) fn fits(container: &Container, recipe: &str) -> Result<(), String> {
    let checkout = project_root().display().to_string();
    if container.warm_recipe() != Some(recipe) {
        return Err("its recipe changed".to_owned());
    }
    if container.checkout.as_deref() != Some(checkout.as_str()) {
        return Err("it belongs to another checkout".to_owned());
    }
    if !container.running() {
        return Err(format!("it is {}", container.state));
    }
    if container.health.as_deref() == Some("unhealthy") {
        return Err("its healthcheck fails".to_owned());
    }
    Ok(())
}

impl Running<'_> {
    /// Leaves a reused test database and Redis as a fresh start would: drops every database
    /// but the maintenance ones, the templates and the pool's ready clones, makes `test_db`
    /// anew, flushes Redis (at the same time as the database is scrubbed). A ready clone
    /// (`genesis_p_<template digest>_...`, `genesis_test_support::pool::POOL_PREFIX`) is a copy
    /// of a template that no test has had: a hand-out renames it first, atomically.
    pub(super) fn scrub(&self, reused: &[Service]) -> Result<()> {
        let flush = if reused.contains(&Service::Redis) {
            let cmd = super::docker::exec(self.sh, &[], self.container(Service::Redis))
                .args(["redis-cli", "FLUSHALL"])
                .quiet();
            Some(
                std::process::Command::from(cmd)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .context("flush the warm Redis")?,
            )
        } else {
            None
        };
        let scrubbed = if reused.contains(&Service::TestDb) {
            self.scrub_test_db()
        } else {
            Ok(())
        };
        // Waited for whatever the database said, so that no flush outlives the command.
        let flushed = match flush {
            Some(flush) => {
                let out = flush.wait_with_output().context("flush the warm Redis")?;
                check_output(&out, "could not flush the warm Redis")
            }
            None => Ok(()),
        };
        scrubbed.and(flushed)
    }

    fn scrub_test_db(&self) -> Result<()> {
        let db = model::TEST_DB;
        let (name, user) = (db.name, db.user);
        // One statement per database: DROP DATABASE runs in no transaction block, and
        // `\gexec` runs each generated statement on its own.
        let sql = format!(
            "select format('drop database %I with (force)', datname) from pg_database \
             where not datistemplate and datname not in ('postgres') \
             and datname not like 'genesis\\_p\\_%' \\gexec\n\
             create database {name} owner {user};\n"
        );
        let options = vec!["-i".to_owned()];
        let scrub = super::docker::exec(self.sh, &options, self.container(Service::TestDb))
            .args([
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                user,
                "-d",
                "postgres",
            ])
            .stdin(sql)
            .quiet();
        run_checked(
            scrub,
            "scrub the warm test database",
            "could not scrub the warm test database",
        )?;
        Ok(())
    }
}

impl super::Stack {
    /// Removes this stack's warm services (`test --keep`) and leaves every other container;
    /// the names of the services removed.
    pub fn remove_warm(
        &self,
        sh: &Shell,
        compose: &super::compose::Compose,
    ) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.warm_recipe().is_some())
            .map(|c| c.service)
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.remove(sh, compose, &refs)?;
        self.remove_network_if_empty()?;
        Ok(names)
    }
}
