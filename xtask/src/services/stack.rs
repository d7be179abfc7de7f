//! A stack: one set of the project's services with its own compose project, network and
//! volumes, owned by one checkout; starting, aiming at and removing it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use genesis_model::{self as model, COMPOSE_PROJECT, Env, Storage};
use genesis_settings::redact;
use xshell::{Shell, cmd};

use super::certs;
use super::compose::Compose;
use super::container::{Container, inspect};
use super::ports::check_port_free;
use super::preflight;
use super::run::{Lifetime, Owner};
use super::{Running, Service};
use crate::tools::pg;
use crate::tools::util::{check_failed, project_root, usage};

// ---- stacks -------------------------------------------------------------------------------

/// One set of the project's services, owned by one checkout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// `None` for the default stack (the model's host ports).
    pub(super) name: Option<String>,
    pub(super) project: String,
    pub(super) checkout: PathBuf,
}

impl Stack {
    /// The stack `--stack` (or `GENESIS_STACK`) names, else the default one, of this checkout.
    pub fn select(name: Option<&str>) -> Result<Stack> {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            None | Some("default") => Ok(Stack::named(None)),
            Some(name) => {
                let valid = name.len() <= 32
                    && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    });
                if !valid {
                    return Err(usage(format!(
                        "--stack {name:?} is not a stack name: use up to 32 lowercase letters, digits, `-` and `_`, starting with a letter or digit"
                    )));
                }
                Ok(Stack::named(Some(name.to_owned())))
            }
        }
    }

    fn named(name: Option<String>) -> Stack {
        let checkout = project_root();
        let id = checkout_id(&checkout);
        let project = match &name {
            None => format!("{COMPOSE_PROJECT}-{id}"),
            Some(name) => format!("{COMPOSE_PROJECT}-{id}-{name}"),
        };
        Stack {
            name,
            project,
            checkout,
        }
    }

    /// The default stack of this checkout: the model's host ports.
    pub fn default_stack() -> Stack {
        Stack::named(None)
    }

    /// A private stack for one run (`ci`), named after it.
    pub fn private(purpose: &str) -> Stack {
        Stack::named(Some(format!("{purpose}-{}", std::process::id())))
    }

    pub fn is_default(&self) -> bool {
        self.name.is_none()
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// How a command line selects this stack again, for messages: `` or ` --stack NAME`.
    pub fn flag(&self) -> String {
        match &self.name {
            None => String::new(),
            Some(name) => format!(" --stack {name}"),
        }
    }

    fn project_filter(&self) -> String {
        format!("label=com.docker.compose.project={}", self.project)
    }

    /// The stack's containers, running or not, as `docker inspect` describes them.
    pub fn containers(&self, sh: &Shell) -> Result<Vec<Container>> {
        let filter = self.project_filter();
        let ids = cmd!(sh, "docker ps -a -q --filter {filter}")
            .quiet()
            .read()
            .context("list the stack's containers")?;
        let ids: Vec<&str> = ids.lines().filter(|l| !l.trim().is_empty()).collect();
        inspect(sh, &ids)
    }

    /// The stack's volumes that exist now, by name.
    pub fn volumes(&self, sh: &Shell) -> Result<Vec<String>> {
        let filter = self.project_filter();
        let out = cmd!(sh, "docker volume ls -q --filter {filter}")
            .quiet()
            .read()
            .context("list the stack's volumes")?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The name compose gives the model's volume `volume` in this stack.
    pub fn volume_name(&self, volume: &str) -> String {
        format!("{}_{volume}", self.project)
    }

    /// The named volumes of the compose file, as compose names them in this stack.
    fn model_volumes(&self) -> Vec<String> {
        Env::ALL
            .iter()
            .filter_map(|env| match env.database().compose()?.storage {
                Storage::Volume(name) => Some(self.volume_name(name)),
                _ => None,
            })
            .collect()
    }

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
        preflight::images_for(sh, &missing)?;
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

    /// Stops and removes the named services' containers and their anonymous volumes.
    pub fn remove(&self, sh: &Shell, compose: &Compose, names: &[&str]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let out = compose
            .cmd(sh, self)
            .args(["rm", "--stop", "--force", "-v"])
            .args(names)
            .quiet()
            .ignore_status()
            .output()
            .context("run compose rm")?;
        if out.status.success() {
            Ok(())
        } else {
            Err(check_failed(format!(
                "compose could not remove {}: {}",
                names.join(", "),
                redact(String::from_utf8_lossy(&out.stderr).trim())
            )))
        }
    }

    /// Removes the stack's network once no container is left in it, as `compose down` does.
    pub fn remove_network_if_empty(&self, sh: &Shell) -> Result<()> {
        if !self.containers(sh)?.is_empty() {
            return Ok(());
        }
        let filter = self.project_filter();
        let networks = cmd!(sh, "docker network ls -q --filter {filter}")
            .quiet()
            .read()
            .context("list the stack's networks")?;
        let networks: Vec<&str> = networks.split_whitespace().collect();
        if !networks.is_empty() {
            cmd!(sh, "docker network rm {networks...}")
                .quiet()
                .ignore_stdout()
                .run()
                .context("remove the stack's network")?;
        }
        Ok(())
    }

    /// Removes the stack's volume `volume` of the model; whether there was one.
    pub fn remove_volume(&self, sh: &Shell, volume: &str) -> Result<bool> {
        let name = self.volume_name(volume);
        if !self.volumes(sh)?.contains(&name) {
            return Ok(false);
        }
        cmd!(sh, "docker volume rm {name}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("remove volume {name}"))?;
        Ok(true)
    }

    /// Every container, the network and, with `volumes`, every volume of the stack.
    pub fn remove_all(&self, sh: &Shell, compose: &Compose, volumes: bool) -> Result<()> {
        let mut down = compose.cmd(sh, self).arg("down");
        if volumes {
            down = down.arg("--volumes");
        }
        let out = down
            .quiet()
            .ignore_status()
            .output()
            .context("run compose down")?;
        if !out.status.success() {
            return Err(check_failed(format!(
                "compose down failed: {}",
                redact(String::from_utf8_lossy(&out.stderr).trim())
            )));
        }
        // Containers of services no longer in the compose file, by the stack's own label.
        let left: Vec<String> = self.containers(sh)?.into_iter().map(|c| c.id).collect();
        if !left.is_empty() {
            cmd!(sh, "docker rm -f -v {left...}")
                .quiet()
                .ignore_stdout()
                .run()
                .context("remove the stack's containers")?;
        }
        if volumes {
            for volume in self.volumes(sh)? {
                cmd!(sh, "docker volume rm {volume}")
                    .quiet()
                    .ignore_stdout()
                    .run()
                    .with_context(|| format!("remove volume {volume}"))?;
            }
        }
        Ok(())
    }

    /// Points a database target the model placed (not a `--url` or `DATABASE_URL`) at this
    /// stack's running service: its discovered host port. The default stack's service that
    /// does not run keeps the model's port, so the caller's own "start it" message applies;
    /// on any other stack there is no port to guess.
    pub fn aim(&self, sh: &Shell, target: &mut pg::Target) -> Result<()> {
        if target.origin != pg::Origin::Model {
            return Ok(());
        }
        let Some(service) = Service::database(target.env) else {
            return Ok(());
        };
        let port = self
            .containers(sh)?
            .into_iter()
            .find(|c| c.service == service.name() && c.running())
            .and_then(|c| c.host_port(service.container_port()));
        match port {
            Some(port) => target.set_port(port),
            None if self.is_default() => {}
            None => {
                return Err(usage(format!(
                    "{} does not run on stack {}: start it with `cargo xtask db-up --env {}{}`",
                    service.name(),
                    self.name(),
                    target.env,
                    self.flag()
                )));
            }
        }
        Ok(())
    }

    /// The last `lines` log lines of a service, passwords masked.
    pub fn log_tail(&self, sh: &Shell, compose: &Compose, service: &str, lines: u32) -> String {
        let lines = lines.to_string();
        let logs = compose
            .cmd(sh, self)
            .args(["logs", "--no-color", "--tail", &lines, service])
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .read()
            .unwrap_or_default();
        redact(logs.trim_end())
    }
}

/// A short, stable id of a checkout: FNV-1a of its path, so the same checkout always gets the
/// same compose projects and two checkouts never share one.
fn checkout_id(path: &std::path::Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", (hash >> 32) ^ (hash & 0xffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names_are_checked_and_projects_are_per_checkout() {
        let default = Stack::select(None).unwrap();
        assert!(default.is_default());
        assert_eq!(Stack::select(Some("default")).unwrap(), default);
        let a = Stack::select(Some("a")).unwrap();
        assert_eq!(a.project(), format!("{}-a", default.project()));
        assert!(a.project().starts_with("genesis-"));
        for bad in ["A", "-x", "a b", "a/b", &"x".repeat(33)] {
            assert!(Stack::select(Some(bad)).is_err(), "{bad:?}");
        }
        assert_ne!(
            checkout_id(std::path::Path::new("/tmp/a")),
            checkout_id(std::path::Path::new("/tmp/b"))
        );
    }
}
