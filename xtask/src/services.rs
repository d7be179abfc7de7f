//! The service layer: every compose and docker query of the project goes through here.
//!
//! A [`Stack`] is one set of the project's services: its own compose project, network and
//! volumes, labelled with the checkout it belongs to. [`Stack::start`] starts what a command
//! needs, discovers the host ports, waits on one readiness probe per service and returns a
//! [`Running`] guard that removes what it started on error, on drop and on Ctrl-C (`db-up`
//! keeps it). Every container carries the identity of the run that started it, so a run that
//! died (`kill -9`) leaves containers that the next run reclaims instead of adopting.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use genesis_model::{self as model, COMPOSE_PROJECT, Env, Image, Storage};
use genesis_settings::redact;
use xshell::{Shell, cmd};

use crate::compose::Compose;
use crate::pg::{self, Probe};
use crate::preflight;
use crate::util::{Progress, check_failed, interrupted, project_root, usage};

// ---- stacks -------------------------------------------------------------------------------

/// One set of the project's services, owned by one checkout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// `None` for the default stack (the model's host ports).
    name: Option<String>,
    project: String,
    checkout: PathBuf,
}

impl Stack {
    /// The stack `--stack` (or `GENESIS_STACK`) names, else the default one, of this checkout.
    /// A name given is used as it is: an empty one is refused like any other invalid name,
    /// never read as "the default stack" (`default` names that one).
    pub fn select(name: Option<&str>) -> Result<Stack> {
        match name {
            None | Some("default") => Ok(Stack::named(None)),
            Some(name) => {
                let valid = name.len() <= 32
                    && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    });
                if !valid {
                    return Err(usage(format!(
                        "--stack (or {}) {name:?} is not a stack name: use 1 to 32 lowercase \
                         ASCII letters, digits, `-` and `_`, starting with a letter or digit \
                         (`default` selects the default stack)",
                        model::STACK_VAR
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

    /// Where runs on this stack keep their state and reports: `target/xtask` for the default
    /// stack, `target/xtask/stacks/<name>` for the others, so that two stacks tested at once in
    /// one checkout share no pool socket, extracted archive or report.
    pub fn state_dir(&self) -> PathBuf {
        let dir = crate::util::xtask_dir();
        match &self.name {
            None => dir,
            Some(name) => dir.join("stacks").join(name),
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
            crate::certs::ensure_test_db_certs(sh)?;
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
    /// stack's running service: its discovered host port. A service this stack does not run
    /// is refused, on the default stack too: the model's port may then be another checkout's
    /// stack, whose data is never this command's (see [`Stack::not_running`]).
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
            None => return Err(self.not_running(sh, service, target.env)),
        }
        Ok(())
    }

    /// Why a command cannot reach `service` of this stack, which does not run it: the fix is
    /// `db-up`, and on the default stack, when its port is held by another stack or process,
    /// whose it is (that one is never used in its place).
    fn not_running(&self, sh: &Shell, service: Service, env: Env) -> anyhow::Error {
        let name = service.name();
        let start = format!("cargo xtask db-up --env {env}{}", self.flag());
        let port = service.model_port();
        let held = self.is_default() && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err();
        let problem = match port_holder(sh, port).filter(|_| held) {
            Some(holder) => format!(
                "{name} does not run on stack {} of this checkout ({}); port {port} is \
                published by {} of compose project {}{}, which this command never uses in its \
                place: start this checkout's own with `{start}` once that one is stopped, or \
                use a stack of your own with `--stack NAME` (or {}=NAME)",
                self.name(),
                self.checkout.display(),
                holder.name,
                holder.project,
                holder
                    .checkout
                    .map_or(String::new(), |c| format!(", a stack of the checkout {c}")),
                model::STACK_VAR
            ),
            None if held => format!(
                "{name} does not run on stack {} of this checkout ({}); port {port} is held by \
                another process, which this command never uses in its place: start this \
                checkout's own with `{start}` once that port is free (`ss -ltnp 'sport = \
                :{port}'` shows what listens there), or use `--stack NAME` (or {}=NAME)",
                self.name(),
                self.checkout.display(),
                model::STACK_VAR
            ),
            None => format!(
                "{name} does not run on stack {}: start it with `{start}`",
                self.name()
            ),
        };
        usage(problem)
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

// ---- services -----------------------------------------------------------------------------

/// A compose service of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    TestDb,
    DevDb,
    Redis,
    Api,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::TestDb,
        Service::DevDb,
        Service::Redis,
        Service::Api,
    ];

    /// The service that runs `env`'s database; none for a managed one.
    pub fn database(env: Env) -> Option<Service> {
        match env {
            Env::Test => Some(Service::TestDb),
            Env::Dev => Some(Service::DevDb),
            Env::Prod => None,
        }
    }

    pub fn env(self) -> Option<Env> {
        match self {
            Service::TestDb => Some(Env::Test),
            Service::DevDb => Some(Env::Dev),
            Service::Redis | Service::Api => None,
        }
    }

    /// The model's compose database this service runs, if it runs one.
    pub fn compose_db(self) -> Option<model::ComposeDb> {
        match self {
            Service::TestDb => Some(model::TEST_DB_SERVICE),
            Service::DevDb => Some(model::DEV_DB_SERVICE),
            Service::Redis | Service::Api => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::TestDb => model::TEST_DB_SERVICE.service,
            Service::DevDb => model::DEV_DB_SERVICE.service,
            Service::Redis => model::REDIS.service,
            Service::Api => model::API.service,
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn image(self) -> Image {
        match self {
            Service::TestDb | Service::DevDb => model::POSTGRES_IMAGE,
            Service::Redis => model::REDIS_IMAGE,
            Service::Api => model::API_IMAGE,
        }
    }

    /// The host port of the default stack.
    pub fn model_port(self) -> u16 {
        match self {
            Service::Redis => model::REDIS.host_address.port,
            Service::Api => model::API.port,
            Service::TestDb | Service::DevDb => self
                .compose_db()
                .map_or(model::POSTGRES_PORT, |db| db.host_address.port),
        }
    }

    /// The port the service listens on inside its container.
    pub fn container_port(self) -> u16 {
        match self {
            Service::TestDb | Service::DevDb => model::POSTGRES_PORT,
            Service::Redis => model::REDIS.network_address.port,
            Service::Api => model::API.port,
        }
    }

    /// The storage of the service's data.
    pub fn storage(self) -> Storage {
        self.compose_db()
            .map_or(Storage::Disposable, |db| db.storage)
    }
}

/// Whether a run's services outlive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Removed when the run ends (test, verify-migration, ci, bench).
    ThisRun,
    /// Left running on purpose (`db-up`); never an orphan.
    Kept,
}

impl Lifetime {
    fn label(self) -> String {
        match self {
            Lifetime::ThisRun => this_run(),
            Lifetime::Kept => KEPT.to_owned(),
        }
    }
}

const KEPT: &str = "kept";

/// This process as a run identity: `run:<host>:<pid>:<start time in clock ticks>`. The start
/// time tells a live process from a later one that got the same pid.
pub fn this_run() -> String {
    let pid = std::process::id();
    format!(
        "run:{}:{pid}:{}",
        hostname(),
        process_start(pid).unwrap_or_default()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`, after the command name (which may hold spaces).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Who a container belongs to, as far as this machine can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Started by `db-up` (or by hand): left running on purpose.
    Kept,
    /// Started by a run that still lives, or on another machine (cannot tell: treated as alive).
    Alive,
    /// Started by a run that died without removing it.
    Dead,
}

pub fn owner_of(label: &str) -> Owner {
    let parts: Vec<&str> = label.split(':').collect();
    match parts.as_slice() {
        ["run", host, pid, start] => {
            if *host != hostname() {
                return Owner::Alive;
            }
            let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
                return Owner::Alive;
            };
            if process_start(pid) == Some(start) {
                Owner::Alive
            } else {
                Owner::Dead
            }
        }
        _ => Owner::Kept,
    }
}

// ---- containers ---------------------------------------------------------------------------

/// A container as `docker inspect` describes it.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub service: String,
    pub project: String,
    /// `running`, `exited`, ...
    pub state: String,
    pub health: Option<String>,
    pub checkout: Option<String>,
    run: Option<String>,
    /// `(container port/proto, host ip, host port)` for each published port.
    pub ports: Vec<(String, String, u16)>,
}

impl Container {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    pub fn owner(&self) -> Owner {
        self.run.as_deref().map_or(Owner::Kept, owner_of)
    }

    /// The host port published for `container_port`.
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        let key = format!("{container_port}/tcp");
        self.ports
            .iter()
            .find(|(inner, _, _)| *inner == key)
            .map(|(_, _, port)| *port)
    }

    fn from_json(c: &serde_json::Value) -> Container {
        let labels = &c["Config"]["Labels"];
        let label = |key: &str| {
            labels[key]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut ports = Vec::new();
        if let Some(map) = c["NetworkSettings"]["Ports"].as_object() {
            for (inner, bindings) in map {
                for binding in bindings.as_array().into_iter().flatten() {
                    let ip = binding["HostIp"].as_str().unwrap_or_default().to_owned();
                    if let Some(port) = binding["HostPort"].as_str().and_then(|p| p.parse().ok()) {
                        ports.push((inner.clone(), ip, port));
                    }
                }
            }
        }
        ports.sort();
        Container {
            id: c["Id"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect(),
            name: c["Name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            service: label("com.docker.compose.service").unwrap_or_default(),
            project: label("com.docker.compose.project").unwrap_or_default(),
            state: c["State"]["Status"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            health: c["State"]["Health"]["Status"].as_str().map(str::to_owned),
            checkout: label(model::CHECKOUT_LABEL),
            run: label(model::RUN_LABEL),
            ports,
        }
    }
}

fn inspect(sh: &Shell, ids: &[&str]) -> Result<Vec<Container>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = cmd!(sh, "docker inspect {ids...}")
        .quiet()
        .ignore_stderr()
        .ignore_status()
        .read()
        .context("inspect the containers")?;
    // A container removed between the listing and the inspection is simply not there.
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    Ok(list.iter().map(Container::from_json).collect())
}

/// A default-stack port must be free before its service starts: held by another checkout's
/// stack, another container or another process, the start is refused with whose it is.
fn check_port_free(sh: &Shell, service: Service, stack: &Stack) -> Result<()> {
    let port = service.model_port();
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
        return Ok(());
    }
    let name = service.name();
    let problem = match port_holder(sh, port) {
        Some(holder) if holder.project == stack.project => return Ok(()),
        Some(holder) => match &holder.checkout {
            Some(checkout) => format!(
                "port {port} is published by {} of compose project {}, a stack of the checkout \
                 {checkout}, so {name} cannot publish it: stop it there (`cargo xtask db-down --all` \
                 in that checkout), or run here on a stack of your own with `--stack NAME` \
                 (or {}=NAME)",
                holder.name,
                holder.project,
                model::STACK_VAR
            ),
            None => format!(
                "port {port} is published by container {}, which is not of this project, so \
                 {name} cannot publish it: stop it, or run on a stack of your own with \
                 `--stack NAME` (or {}=NAME)",
                holder.name,
                model::STACK_VAR
            ),
        },
        None => format!(
            "port {port} is taken by another process, so {name} cannot publish it on \
             127.0.0.1:{port}: stop what listens there (`ss -ltnp 'sport = :{port}'` shows it), \
             or run on a stack of your own with `--stack NAME` (or {}=NAME)",
            model::STACK_VAR
        ),
    };
    Err(usage(problem))
}

/// The container that publishes `port` on the host, if one does.
pub fn port_holder(sh: &Shell, port: u16) -> Option<Container> {
    let filter = format!("publish={port}");
    let ids = cmd!(sh, "docker ps -q --filter {filter}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    let ids: Vec<&str> = ids.lines().collect();
    inspect(sh, &ids).ok()?.into_iter().next()
}

// ---- a running stack ----------------------------------------------------------------------

/// What a command started on a stack, and where the host reaches each service. Dropping it
/// removes what it started (containers, their anonymous volumes, the network once empty, the
/// named volumes its `up` created), unless [`Running::keep`] was called.
#[derive(Debug)]
pub struct Running<'a> {
    sh: &'a Shell,
    compose: Compose,
    stack: Stack,
    started: Vec<Service>,
    created_volumes: Vec<String>,
    ports: BTreeMap<Service, u16>,
    /// The container id of each service waited for.
    containers: BTreeMap<Service, String>,
}

/// How long a service may take to become ready, unless the command says otherwise.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the wait sleeps between two probes: briefly while a service usually comes up
/// (a probe costs ~10 ms), then every 100 ms.
fn poll_interval(waited: Duration) -> Duration {
    if waited < Duration::from_secs(3) {
        Duration::from_millis(25)
    } else {
        Duration::from_millis(100)
    }
}
/// How often the container's own state is looked at while waiting (a crash ends the wait).
const STATE_EVERY: Duration = Duration::from_secs(2);
/// How long a refused password may persist: a server that is still initialising can refuse
/// briefly, one that keeps refusing holds another password.
const AUTH_GRACE: Duration = Duration::from_secs(3);
/// Log lines shown when a service does not become ready.
const LOG_LINES: u32 = 20;

enum Waiting {
    Ready,
    NotYet(String),
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

    /// One probe per service, one timeout policy, one wording: polls until ready, looks at the
    /// container's state now and then, stops on Ctrl-C, and on failure shows the last logs.
    fn wait_ready(&self, service: Service, timeout: Duration) -> Result<()> {
        let port = self.port(service);
        // The one probe of each service: a real login as the app's role for a database,
        // `PING` for Redis, `GET /health` for the application.
        enum Check {
            Database(Box<pg::Target>),
            Redis,
            Http,
        }
        let check = match (service.env(), service) {
            (Some(env), _) => Check::Database(Box::new(self.database(env)?)),
            (None, Service::Redis) => Check::Redis,
            (None, _) => Check::Http,
        };
        let mut refused_since: Option<Instant> = None;
        let mut probe = || -> std::result::Result<Waiting, String> {
            match &check {
                Check::Database(target) => match target.probe(self.sh) {
                    Probe::Ready => Ok(Waiting::Ready),
                    Probe::NotYet(why) => {
                        refused_since = None;
                        Ok(Waiting::NotYet(why))
                    }
                    Probe::AuthFailed(why) => {
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < AUTH_GRACE {
                            return Ok(Waiting::NotYet(why));
                        }
                        Err(self.refused_password(service, target, &why))
                    }
                },
                Check::Redis => Ok(redis_ping(port)),
                Check::Http => Ok(match http_get(port, "/health") {
                    Ok((200, _)) => Waiting::Ready,
                    Ok((status, _)) => Waiting::NotYet(format!("/health answered {status}")),
                    Err(err) => Waiting::NotYet(err.to_string()),
                }),
            }
        };
        let name = service.name();
        let started = Instant::now();
        let mut progress = Progress::start(&format!("waiting for {name}"), timeout);
        let mut last_state_check = Instant::now();
        let mut last_error: String;
        let failure = loop {
            match probe() {
                Ok(Waiting::Ready) => {
                    progress.finish();
                    return Ok(());
                }
                Ok(Waiting::NotYet(why)) => last_error = why,
                Err(fatal) => break fatal,
            }
            if interrupted() {
                progress.finish();
                return Err(check_failed(format!(
                    "interrupted while waiting for {name}"
                )));
            }
            if last_state_check.elapsed() >= STATE_EVERY {
                last_state_check = Instant::now();
                let containers = self.stack.containers(self.sh).unwrap_or_default();
                if let Some(c) = containers.iter().find(|c| c.service == name) {
                    if c.state == "exited" || c.state == "dead" {
                        break format!("{name} stopped while starting ({})", c.state);
                    }
                }
            }
            if started.elapsed() >= timeout {
                break format!(
                    "{name} was not ready after {} s (last error: {last_error})",
                    timeout.as_secs()
                );
            }
            progress.tick();
            std::thread::sleep(poll_interval(started.elapsed()));
        };
        progress.finish();
        let logs = self.stack.log_tail(self.sh, &self.compose, name, LOG_LINES);
        Err(check_failed(redact(&format!(
            "{failure}\n--- last {LOG_LINES} log lines of {name} ---\n{logs}"
        ))))
    }

    fn refused_password(&self, service: Service, target: &pg::Target, why: &str) -> String {
        let fix = match service.storage() {
            Storage::Volume(volume) => format!(
                "the data in volume {} was initialised with another password; set \
                 POSTGRES_PASSWORD (in your environment or .env) to that one, or start afresh \
                 with `cargo xtask db-down --env {}{} --volumes` (this deletes the data)",
                self.stack.volume_name(volume),
                target.env,
                self.stack.flag()
            ),
            _ => "the server was initialised with another password".to_owned(),
        };
        format!(
            "{} refuses the password of {} ({why}): {fix}",
            service.name(),
            target.user
        )
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
        if let Err(err) = self.stack.remove_network_if_empty(self.sh) {
            eprintln!("warning: could not remove the stack's network: {err}");
        }
        // Only volumes that this run's `up` created, and never one a container still uses.
        let existing = self.stack.volumes(self.sh).unwrap_or_default();
        for volume in self.created_volumes.iter().filter(|v| existing.contains(v)) {
            let _ = cmd!(self.sh, "docker volume rm {volume}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run();
        }
    }
}

impl Running<'_> {
    /// Removes the containers this run started, by id: a service whose data lives in a volume
    /// is stopped first (PostgreSQL shuts down cleanly), the others, whose data is a tmpfs the
    /// removal discards anyway, are removed at once.
    fn remove_started(&self, ids: &[&str]) -> Result<()> {
        let sh = self.sh;
        let graceful: Vec<&str> = self
            .started
            .iter()
            .filter(|s| matches!(s.storage(), Storage::Volume(_)))
            .filter_map(|s| self.containers.get(s).map(String::as_str))
            .collect();
        if !graceful.is_empty() {
            cmd!(sh, "docker stop {graceful...}")
                .quiet()
                .ignore_stdout()
                .run()
                .context("stop the containers")?;
        }
        cmd!(sh, "docker rm --force --volumes {ids...}")
            .quiet()
            .ignore_stdout()
            .run()
            .context("remove the containers")
    }
}

/// Redis answers `PING` with `+PONG` on its published port.
fn redis_ping(port: u16) -> Waiting {
    let answer = (|| -> std::io::Result<String> {
        let timeout = Duration::from_secs(1);
        let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    })();
    match answer {
        Ok(reply) if reply == "+PONG" => Waiting::Ready,
        Ok(reply) => Waiting::NotYet(format!("redis answered {reply:?}")),
        Err(err) => Waiting::NotYet(err.to_string()),
    }
}

/// Whether `GET path` on a loopback port answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_ok_and(|(status, _)| status == 200)
}

/// A minimal HTTP/1.1 GET on the loopback interface: the xtask has no HTTP client on purpose.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, None, Duration::from_secs(3))
}

/// A minimal HTTP/1.1 request on loopback, with a JSON body when `body` is given; the status
/// and the body of the answer.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    read_timeout: Duration,
) -> Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(read_timeout))?;
    let content = match body {
        Some(body) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => "\r\n".to_owned(),
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{content}"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("not an HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
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
        for bad in [
            "",
            " ",
            " a",
            "A",
            "-x",
            "a b",
            "a/b",
            "é",
            "a\u{0}",
            &"x".repeat(33),
        ] {
            assert!(Stack::select(Some(bad)).is_err(), "{bad:?}");
        }
        assert_ne!(
            checkout_id(std::path::Path::new("/tmp/a")),
            checkout_id(std::path::Path::new("/tmp/b"))
        );
    }

    #[test]
    fn a_run_is_alive_while_its_process_is() {
        assert_eq!(owner_of(&this_run()), Owner::Alive);
        assert_eq!(owner_of(KEPT), Owner::Kept);
        let host = hostname();
        // Same pid, another start time: the pid was reused, the run is gone.
        let pid = std::process::id();
        assert_eq!(owner_of(&format!("run:{host}:{pid}:1")), Owner::Dead);
        assert_eq!(owner_of(&format!("run:{host}:4194305:1")), Owner::Dead);
        assert_eq!(owner_of("run:another-host:1:1"), Owner::Alive);
    }
}
