//! What a command started on a stack: the guard that knows the host ports and containers and
//! removes what it started.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use genesis_model::{self as model, Env, Storage};
use genesis_settings::redact;
use xshell::Shell;

use super::compose::Compose;
use super::engine::Engine;
use super::stack::Stack;
use crate::tools::child::run_checked;
use crate::tools::pg;
use genesis_model::Service;

// ---- a running stack ----------------------------------------------------------------------

/// How long a stopped database gets to shut down before it is killed (`docker stop`'s own).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes containers with their anonymous volumes, all at once as `docker rm -f -v` does.
fn remove_all_at_once(engine: &Engine, ids: &[&str]) -> Result<()> {
    std::thread::scope(|scope| {
        let removals: Vec<_> = ids
            .iter()
            .map(|id| scope.spawn(move || engine.remove_container(id)))
            .collect();
        let mut first = Ok(());
        for removal in removals {
            let done = removal
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a container removal panicked")));
            if first.is_ok() {
                first = done;
            }
        }
        first
    })
}

/// What a command started on a stack, and where the host reaches each service. Dropping it
/// removes what it started (containers, their anonymous volumes, the network once empty, the
/// named volumes its `up` created), unless [`Running::keep`] was called.
#[derive(Debug)]
pub struct Running<'a> {
    pub(super) sh: &'a Shell,
    pub(super) compose: Compose,
    pub(super) stack: Stack,
    pub(super) started: Vec<Service>,
    pub(super) created_volumes: Vec<String>,
    pub(super) ports: BTreeMap<Service, u16>,
    /// The container id of each service waited for.
    pub(super) containers: BTreeMap<Service, String>,
    /// The warm services (`test --keep`) this run reused, scrubbed.
    pub(super) reused: Vec<Service>,
}

impl Running<'_> {
    /// The host port of a service this run waited for.
    pub fn port(&self, service: Service) -> u16 {
        self.ports[&service]
    }

    /// The container of a service this run waited for, for `docker exec` (which starts in a
    /// few milliseconds where `compose exec` v1 takes half a second).
    pub fn container(&self, service: Service) -> &str {
        &self.containers[&service]
    }

    /// Whether this run reused `service` warm, as a previous `test --keep` left it.
    pub fn reused(&self, service: Service) -> bool {
        self.reused.contains(&service)
    }

    /// Whether this run started `service` (and so removes it when the guard goes).
    pub fn started(&self, service: Service) -> bool {
        self.started.contains(&service)
    }

    /// Leaves everything running when the guard goes (`db-up`).
    pub fn keep(mut self) {
        self.started.clear();
        self.created_volumes.clear();
    }

    /// The database of `env` as the host reaches it on this stack.
    pub fn database(&self, env: Env) -> Result<pg::Target> {
        let service = Service::database(env).context("a managed database has no service")?;
        let mut target = pg::Target::resolve(env, None)?;
        target.set_port(self.port(service));
        Ok(target)
    }

    /// The settings' variables that point the suites (and the application) at this stack's
    /// test database and Redis from the host.
    pub fn host_settings(&self) -> Result<Vec<(&'static str, String)>> {
        let db = model::TEST_DB;
        let mut address = model::TEST_DB_SERVICE.host_address;
        address.port = self.port(Service::TestDb);
        let mut vars = vec![(db.url_var, db.url_with(address, model::TEST_DB_PASSWORD))];
        if let Some(port) = self.ports.get(&Service::Redis) {
            let mut redis = model::REDIS.host_address;
            redis.port = *port;
            vars.push((model::REDIS.url_var, model::REDIS.url(redis)));
        }
        Ok(vars)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.started.is_empty() && self.created_volumes.is_empty() {
            return;
        }
        let names: Vec<&str> = self.started.iter().map(|s| s.name()).collect();
        if !names.is_empty() {
            eprintln!(
                "stopping {} (stack {})",
                names.join(", "),
                self.stack.name()
            );
        }
        let ids: Vec<&str> = self
            .started
            .iter()
            .filter_map(|s| self.containers.get(s).map(String::as_str))
            .collect();
        let removed = if ids.len() == names.len() {
            self.remove_started(&ids)
        } else {
            // Started only in part: compose finds what there is by name.
            self.stack.remove(self.sh, &self.compose, &names)
        };
        if let Err(err) = removed {
            eprintln!("warning: {err}");
        }
        if let Err(err) = self.stack.remove_network_if_empty() {
            eprintln!("warning: could not remove the stack's network: {err}");
        }
        // Only volumes that this run's `up` created, and never one a container still uses.
        let existing = self.stack.volumes().unwrap_or_default();
        if let Ok(engine) = Engine::get() {
            for volume in self.created_volumes.iter().filter(|v| existing.contains(v)) {
                let _ = engine.remove_volume(volume);
            }
        }
    }
}

impl Running<'_> {
    /// Removes the containers this run started, by id: a service whose data lives in a volume
    /// is stopped first (PostgreSQL shuts down cleanly), the others, whose data is a tmpfs the
    /// removal discards anyway, are removed at once.
    fn remove_started(&self, ids: &[&str]) -> Result<()> {
        let engine = Engine::get()?;
        let graceful: Vec<&str> = self
            .started
            .iter()
            .filter(|s| matches!(s.storage(), Storage::Volume(_)))
            .filter_map(|s| self.containers.get(s).map(String::as_str))
            .collect();
        for id in graceful {
            // `docker stop`'s own grace.
            engine
                .stop_container(id, STOP_GRACE)
                .context("stop the containers")?;
        }
        remove_all_at_once(engine, ids).context("remove the containers")
    }
}

impl Stack {
    /// Stops and removes the named services' containers and their anonymous volumes.
    pub fn remove(&self, sh: &Shell, compose: &Compose, names: &[&str]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let rm = compose
            .cmd(sh, self)
            .args(["rm", "--stop", "--force", "-v"])
            .args(names)
            .quiet();
        let failed = format!("compose could not remove {}", names.join(", "));
        run_checked(rm, "run compose rm", failed)?;
        Ok(())
    }

    /// Every container, the network and, with `volumes`, every volume of the stack.
    pub fn remove_all(&self, sh: &Shell, compose: &Compose, volumes: bool) -> Result<()> {
        let mut down = compose.cmd(sh, self).arg("down");
        if volumes {
            down = down.arg("--volumes");
        }
        run_checked(down.quiet(), "run compose down", "compose down failed")?;
        // Containers of services no longer in the compose file, by the stack's own label.
        let left: Vec<String> = self.containers()?.into_iter().map(|c| c.id).collect();
        let left: Vec<&str> = left.iter().map(String::as_str).collect();
        let engine = Engine::get()?;
        remove_all_at_once(engine, &left).context("remove the stack's containers")?;
        if volumes {
            for volume in self.volumes()? {
                engine
                    .remove_volume(&volume)
                    .with_context(|| format!("remove volume {volume}"))?;
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

    /// `compose up -d` of `names` as compose alone does it, with no check and no wait (what
    /// `bench` measures the xtask's start against).
    pub fn up_plain(&self, sh: &Shell, compose: &Compose, names: &[&str]) -> Result<()> {
        compose
            .cmd(sh, self)
            .args(["up", "-d"])
            .args(names)
            .quiet()
            .ignore_stderr()
            .run()
            .context("run compose up")
    }

    /// `compose logs` of `services` (all when empty), followed or not, from the last `tail`
    /// lines; the caller streams it.
    pub fn logs<'a>(
        &self,
        sh: &'a Shell,
        compose: &Compose,
        follow: bool,
        tail: Option<u32>,
        services: &[String],
    ) -> xshell::Cmd<'a> {
        let mut logs = compose.cmd(sh, self).args(["logs", "--no-color"]);
        if follow {
            logs = logs.arg("--follow");
        }
        if let Some(tail) = tail {
            logs = logs.args(["--tail", &tail.to_string()]);
        }
        logs.args(services).quiet()
    }
}
