//! Starting a stack's services: [`Stack::start`] reclaims what a dead run left, starts what is
//! missing, waits until each service is ready and returns the [`Running`] guard.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use genesis_model::{self as model, Storage};
use xshell::Shell;

use super::certs;
use super::compose::Compose;
use super::container::Container;
use super::engine::Engine;
use super::images;
use super::ports::check_port_free;
use super::replay::{self, Replay};
use super::run::{Lifetime, Owner};
use super::running::Running;
use super::stack::Stack;
use super::warm;
use crate::tools::child::run_checked;
use genesis_model::Service;

/// How long a warm service that fits its recipe may take to answer its probe before it is
/// restarted: it has been up since the last run, so it answers at once or not at all.
const WARM_PROBE: Duration = Duration::from_secs(10);

impl Stack {
    /// Starts the services of `wanted` that do not run yet, reclaims the ones a dead run left,
    /// restarts warm ones whose recipe changed or that do not answer (and scrubs the reused
    /// ones), waits until each is ready and returns the guard that removes what it started
    /// (nothing, once ready, for [`Lifetime::Warm`]).
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
            reused: Vec::new(),
        };
        // One listing serves the reclaim and the start, unless the reclaim removed something.
        let mut present = self.containers()?;
        if self.reclaim_orphans(sh, compose, &present)? {
            present = self.containers()?;
        }
        // Warm services (`test --keep`): reused while their recipe holds, restarted otherwise.
        let warm_here = present.iter().any(|c| c.warm_recipe().is_some());
        let recipe = if lifetime == Lifetime::Warm || warm_here {
            Some(warm::recipe(sh)?)
        } else {
            None
        };
        let mut reused_warm: Vec<Service> = Vec::new();
        if let Some(recipe) = &recipe {
            let mut stale: Vec<(String, String)> = Vec::new();
            for c in present.iter().filter(|c| c.warm_recipe().is_some()) {
                match warm::fits(c, recipe) {
                    Ok(()) => {
                        if let Some(service) = wanted.iter().find(|s| s.name() == c.service) {
                            reused_warm.push(*service);
                        }
                    }
                    Err(why) => stale.push((c.service.clone(), why)),
                }
            }
            reused_warm.sort_by_key(|s| wanted.iter().position(|w| w == s));
            // A warm service that fits must also answer its probe, briefly.
            for service in reused_warm.clone() {
                let Some(c) = present.iter().find(|c| c.service == service.name()) else {
                    continue;
                };
                let Some(port) = c.host_port(service.container_port()) else {
                    stale.push((c.service.clone(), "it publishes no port".to_owned()));
                    reused_warm.retain(|s| *s != service);
                    continue;
                };
                running.ports.insert(service, port);
                running.containers.insert(service, c.id.clone());
                if let Err(err) = running.wait_ready(service, WARM_PROBE) {
                    crate::tools::util::check_interrupted()?;
                    let first = err.to_string();
                    let first = first.lines().next().unwrap_or_default().to_owned();
                    stale.push((c.service.clone(), format!("it does not answer ({first})")));
                    reused_warm.retain(|s| *s != service);
                }
            }
            if !stale.is_empty() {
                for (service, why) in &stale {
                    eprintln!("restarting warm {service} (stack {}): {why}", self.name());
                }
                let names: Vec<&str> = stale.iter().map(|(s, _)| s.as_str()).collect();
                self.remove(sh, compose, &names)?;
                present = self.containers()?;
            }
            if !reused_warm.is_empty() {
                let names: Vec<&str> = reused_warm.iter().map(|s| s.name()).collect();
                eprintln!("reusing warm {} (stack {})", names.join(", "), self.name());
            }
        }
        let missing: Vec<Service> = wanted
            .iter()
            .copied()
            .filter(|s| !present.iter().any(|c| c.service == s.name() && c.running()))
            .collect();
        if self.is_default() {
            for service in &missing {
                check_port_free(*service, self)?;
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
            // Both compose flavours create every volume of the file on `up` (v2 too, as
            // measured): what this `up` makes is told from what was there before it.
            let before = self.volumes()?;
            running.created_volumes = self
                .model_volumes()
                .into_iter()
                .filter(|v| !before.contains(v))
                .collect();
        }
        let containers = if missing.is_empty() {
            // Nothing started: the listing read before still holds.
            present
        } else {
            self.up_or_replay(
                sh,
                compose,
                &missing,
                &present,
                &lifetime.label(recipe.as_deref()),
            )?
        };
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
        // A reused warm service answered its probe a moment ago.
        for service in wanted.iter().filter(|s| !reused_warm.contains(s)) {
            running.wait_ready(*service, timeout)?;
        }
        if !missing.is_empty() {
            // Compose creates every volume of the file on any `up`: the ones no started
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
            let engine = Engine::get()?;
            for volume in unused {
                let _ = engine.remove_volume(&volume);
            }
        }
        // A reused service is scrubbed only once every service answers, so that what a
        // previous run wrote is gone before the suites start.
        running.scrub(&reused_warm)?;
        running.reused = reused_warm;
        if lifetime == Lifetime::Warm {
            // Left for the next run: the guard removes what it started only until here.
            running.started.clear();
            running.created_volumes.clear();
        }
        Ok(running)
    }

    /// Whether [`Stack::start`] could start what of `wanted` does not run yet: on the default
    /// stack, the model's ports of those services must be free. For a command to refuse at
    /// once, before a long build, rather than once the build is done.
    pub fn check_can_start(&self, wanted: &[Service]) -> Result<()> {
        if !self.is_default() {
            return Ok(());
        }
        let present = self.containers()?;
        for service in wanted {
            if !present
                .iter()
                .any(|c| c.service == service.name() && c.running() && c.owner() != Owner::Dead)
            {
                check_port_free(*service, self)?;
            }
        }
        Ok(())
    }

    /// Starts `missing` (none of which runs), labelled with `label`: as compose made them
    /// last time, through the engine ([`replay`]), where every one has a record under the
    /// current key and none has a container; otherwise with compose, recording what it made.
    /// The stack's containers afterwards.
    fn up_or_replay(
        &self,
        sh: &Shell,
        compose: &Compose,
        missing: &[Service],
        present: &[Container],
        label: &str,
    ) -> Result<Vec<Container>> {
        let engine = Engine::get()?;
        let replay = Replay::new(sh, compose, self)?;
        let fresh = missing
            .iter()
            .all(|s| !present.iter().any(|c| c.service == s.name()));
        let records: Option<Vec<_>> = if fresh {
            missing
                .iter()
                .map(|s| replay.load(engine, *s).map(|record| (*s, record)))
                .collect()
        } else {
            None
        };
        let replayed = match records {
            Some(records) => match replay::start(engine, &records, label) {
                Ok(_) => true,
                Err(err) => {
                    crate::tools::util::check_interrupted()?;
                    for service in missing {
                        replay.forget(*service);
                    }
                    eprintln!("note: {err:#}; starting through compose instead");
                    false
                }
            },
            None => false,
        };
        if !replayed {
            let names: Vec<&str> = missing.iter().map(|s| s.name()).collect();
            self.up(sh, compose, label, &names)?;
        }
        let containers = self.containers()?;
        if !replayed {
            for service in missing {
                if let Some(c) = containers.iter().find(|c| c.service == service.name())
                    && let Err(err) = replay.capture(engine, *service, &c.id)
                {
                    // The next start goes through compose again; nothing else depends on it.
                    eprintln!(
                        "note: could not record how compose made {}: {err:#}",
                        c.name
                    );
                }
            }
        }
        Ok(containers)
    }

    /// `compose up -d` of `names`, labelled with this run. Nothing waits on healthchecks
    /// (the compose file's dependencies are `service_started`): the probes of [`Stack::start`]
    /// poll each service far more often than a healthcheck runs.
    fn up(&self, sh: &Shell, compose: &Compose, label: &str, names: &[&str]) -> Result<()> {
        let up = compose
            .cmd(sh, self)
            .env(model::RUN_VAR, label)
            .args(["up", "-d", "--no-recreate"])
            .args(names)
            .quiet();
        let failed = format!("compose could not start {}", names.join(", "));
        run_checked(up, "run compose up", failed)?;
        Ok(())
    }

    /// Removes the containers of this stack (`present`) whose run died, with what they were
    /// started for; whether there were any.
    fn reclaim_orphans(
        &self,
        sh: &Shell,
        compose: &Compose,
        present: &[Container],
    ) -> Result<bool> {
        let orphans: Vec<&Container> = present
            .iter()
            .filter(|c| c.owner() == Owner::Dead)
            .collect();
        if orphans.is_empty() {
            return Ok(false);
        }
        let names: Vec<&str> = orphans.iter().map(|c| c.service.as_str()).collect();
        eprintln!(
            "reclaiming {} of stack {}: the run that started {} is gone",
            names.join(", "),
            self.name(),
            if names.len() == 1 { "it" } else { "them" }
        );
        self.remove(sh, compose, &names)?;
        Ok(true)
    }
}
