//! Starting a stack's services: [`Stack::start`] reclaims what a dead run left, starts what is
//! missing, waits until each service is ready and returns the [`Running`] guard.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use genesis_model::{self as model, Storage};
use genesis_settings::redact;
use xshell::{Shell, cmd};

use super::certs;
use super::compose::Compose;
use super::container::Container;
use super::images;
use super::ports::check_port_free;
use super::run::{Lifetime, Owner};
use super::running::Running;
use super::stack::Stack;
use crate::tools::util::check_failed;
use genesis_model::Service;

impl Stack {
    /// Starts the services of `wanted` that do not run yet, reclaims the ones a dead run left,
    /// waits until each is ready and returns the guard that removes what it started.
    pub fn start<'a>(
        &self,
        sh: &'a Shell,
        compose: &Compose,
        wanted: &[Service],
        lifetime: Lifetime,
        timeout: Duration,
    ) -> Result<Running<'a>> {
        let mut running = Running {
            sh,
            compose: compose.clone(),
            stack: self.clone(),
            started: Vec::new(),
            created_volumes: Vec::new(),
            ports: BTreeMap::new(),
            containers: BTreeMap::new(),
        };
        self.reclaim_orphans(sh, compose)?;
        let present = self.containers(sh)?;
        let missing: Vec<Service> = wanted
            .iter()
            .copied()
            .filter(|s| !present.iter().any(|c| c.service == s.name() && c.running()))
            .collect();
        if self.is_default() {
            for service in &missing {
                check_port_free(sh, *service, self)?;
            }
        }
        images::images_for(sh, &missing)?;
        if missing.contains(&Service::TestDb) {
            certs::ensure_test_db_certs(sh)?;
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.name()).collect();
            eprintln!("starting {} (stack {})", names.join(", "), self.name());
            // Recorded before `up`, so a failure or Ctrl-C half-way still removes what was made.
            running.started = missing.clone();
            let before = self.volumes(sh)?;
            running.created_volumes = self
                .model_volumes()
                .into_iter()
                .filter(|v| !before.contains(v))
                .collect();
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.name()).collect();
            self.up(sh, compose, lifetime, &names)?;
        }
        let containers = self.containers(sh)?;
        for service in wanted {
            let container = containers
                .iter()
                .find(|c| c.service == service.name())
                .with_context(|| format!("compose started no {} container", service.name()))?;
            let port = container
                .host_port(service.container_port())
                .with_context(|| format!("{} publishes no host port", service.name()))?;
            running.ports.insert(*service, port);
            running.containers.insert(*service, container.id.clone());
        }
        for service in wanted {
            running.wait_ready(*service, timeout)?;
        }
        if !missing.is_empty() {
            // Compose v1 creates every volume of the file on any `up`: the ones no started
            // service uses go at once, so `db-up --env test` leaves no dev volume behind.
            let used: Vec<String> = missing
                .iter()
                .filter_map(|s| match s.storage() {
                    Storage::Volume(volume) => Some(self.volume_name(volume)),
                    _ => None,
                })
                .collect();
            let (keep, unused): (Vec<String>, Vec<String>) = running
                .created_volumes
                .drain(..)
                .partition(|v| used.contains(v));
            running.created_volumes = keep;
            for volume in unused {
                let _ = cmd!(sh, "docker volume rm {volume}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run();
            }
        }
        Ok(running)
    }

    /// Whether [`Stack::start`] could start what of `wanted` does not run yet: on the default
    /// stack, the model's ports of those services must be free. For a command to refuse at
    /// once, before a long build, rather than once the build is done.
    pub fn check_can_start(&self, sh: &Shell, wanted: &[Service]) -> Result<()> {
        if !self.is_default() {
            return Ok(());
        }
        let present = self.containers(sh)?;
        for service in wanted {
            if !present
                .iter()
                .any(|c| c.service == service.name() && c.running() && c.owner() != Owner::Dead)
            {
                check_port_free(sh, *service, self)?;
            }
        }
        Ok(())
    }

    /// `compose up -d` of `names`, labelled with this run. Nothing waits on healthchecks
    /// (the compose file's dependencies are `service_started`): the probes of [`Stack::start`]
    /// poll each service far more often than a healthcheck runs.
    fn up(&self, sh: &Shell, compose: &Compose, lifetime: Lifetime, names: &[&str]) -> Result<()> {
        let out = compose
            .cmd(sh, self)
            .env(model::RUN_VAR, lifetime.label())
            .args(["up", "-d", "--no-recreate"])
            .args(names)
            .quiet()
            .ignore_status()
            .output()
            .context("run compose up")?;
        if out.status.success() {
            return Ok(());
        }
        Err(check_failed(format!(
            "compose could not start {}: {}",
            names.join(", "),
            redact(String::from_utf8_lossy(&out.stderr).trim())
        )))
    }

    /// Removes the containers of this stack whose run died, with what they were started for.
    fn reclaim_orphans(&self, sh: &Shell, compose: &Compose) -> Result<()> {
        let orphans: Vec<Container> = self
            .containers(sh)?
            .into_iter()
            .filter(|c| c.owner() == Owner::Dead)
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = orphans.iter().map(|c| c.service.as_str()).collect();
        eprintln!(
            "reclaiming {} of stack {}: the run that started {} is gone",
            names.join(", "),
            self.name(),
            if names.len() == 1 { "it" } else { "them" }
        );
        self.remove(sh, compose, &names)
    }
}
