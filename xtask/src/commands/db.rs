//! `db-up`, `db-down`, `db-status`, `db-logs` and `db-shell`: an environment's services on a
//! stack, started until a real connection succeeds, stopped with or without their data, listed,
//! logged and opened in `psql`. Everything they ask of compose and docker goes through
//! `services`.

use std::time::{Duration, Instant};

use anyhow::Result;
use genesis_model::{self as model, Env, Password, Storage};
use genesis_settings::redact;
use serde::Serialize;
use xshell::Shell;

use crate::flags::{self, Extra};
use crate::services::compose::Compose;
use crate::services::preflight;
use crate::services::{Lifetime, Owner, Service, Stack};
use crate::services::{docker, images};
use crate::tools::child;
use crate::tools::pg::{self, PasswordSource, Probe, Target};
use crate::tools::util::{check_failed, project_root, usage};

/// The services of `env` plus the `--with` extras; production has none.
fn services(env: Env, with: &[Extra]) -> Result<Vec<Service>> {
    let Some(database) = Service::database(env) else {
        return Err(usage(format!(
            "--env {env} has no compose service: production runs on a managed PostgreSQL server \
             reached through DATABASE_URL; db-up and db-down manage `test` and `dev` only"
        )));
    };
    let mut services = vec![database];
    if with.contains(&Extra::Redis) {
        services.push(Service::Redis);
    }
    Ok(services)
}

// ---- db-up --------------------------------------------------------------------------------

impl flags::DbUp {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        let services = services(env, &self.with)?;

        preflight::docker_installed()?;
        preflight::docker_daemon()?;
        let compose = Compose::detect(sh)?;
        pg::prefetch("psql")?;
        if let Password::FromEnv(_) = env.database().password {
            let (_, source) = pg::ensure_dev_password(&project_root())?;
            if let PasswordSource::Generated(path) = source {
                eprintln!(
                    "generated a password for the {env} database into {} (owner-only, git-ignored; compose reads it from there)",
                    path.display()
                );
            }
        }

        if stack.is_default() {
            for service in &services {
                note_former_volume(stack, *service)?;
            }
        }

        if services.iter().any(|s| s.env() == Some(env)) {
            crate::services::reset_marker::warn_after_killed_reset(stack, env);
        }
        let started = Instant::now();
        let timeout = Duration::from_secs(self.timeout);
        let running = stack.start(sh, &compose, &services, Lifetime::Kept, timeout)?;
        for service in &services {
            let url = match service.env() {
                Some(env) => running.database(env)?.masked_url(),
                None => {
                    let mut address = model::REDIS.host_address;
                    address.port = running.port(*service);
                    model::REDIS.url(address)
                }
            };
            println!(
                "{} ready in {:.1} s: {url}",
                service.name(),
                started.elapsed().as_secs_f64()
            );
        }
        if !stack.is_default() {
            println!(
                "stack {} (compose project {}); its ports were chosen by the engine",
                stack.name(),
                stack.project()
            );
        }
        running.keep();
        Ok(())
    }
}

/// Before stacks, every checkout was the one compose project `genesis`: its data volume is
/// not this stack's. Said once the new volume is about to be made, with how to carry the data
/// over; nothing is moved without the user.
fn note_former_volume(stack: &Stack, service: Service) -> Result<()> {
    let Storage::Volume(volume) = service.storage() else {
        return Ok(());
    };
    let former = format!("{}_{volume}", model::COMPOSE_PROJECT);
    let new = stack.volume_name(volume);
    let exists = |name: &str| docker::volume_exists(name);
    if exists(&former) && !exists(&new) {
        let image = images::image_available(model::POSTGRES_IMAGE)
            .unwrap_or_else(|_| model::POSTGRES_IMAGE.local.to_owned());
        eprintln!(
            "note: volume {former} holds the data of the former single compose project; this \
             checkout's default stack keeps its data in {new}, which starts empty. To use the \
             former data here: `cargo xtask db-down --env {env} --volumes`, then `docker volume \
             create {new} && docker run --rm -v {former}:/from -v {new}:/to {image} cp -a \
             /from/. /to/`, then `cargo xtask db-up --env {env}` again",
            env = service.env().map_or("dev", Env::name)
        );
    }
    Ok(())
}

// ---- db-down ------------------------------------------------------------------------------

/// What `db-down` stops.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    All,
    Env(Env),
}

/// Whether `db-down` keeps the data volumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Volumes {
    Keep,
    Delete,
}

impl flags::DbDown {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let scope = if self.all {
            Scope::All
        } else {
            Scope::Env(self.env.model())
        };
        let volumes = if self.volumes {
            Volumes::Delete
        } else {
            Volumes::Keep
        };
        let services = match &scope {
            Scope::All => Vec::new(),
            Scope::Env(env) => services(*env, &self.with)?,
        };
        preflight::docker_installed()?;
        preflight::docker_daemon()?;
        let compose = Compose::detect(sh)?;

        match scope {
            Scope::All => {
                stack.remove_all(sh, &compose, volumes == Volumes::Delete)?;
                println!(
                    "stopped and removed every service of stack {} (compose project {}){}",
                    stack.name(),
                    stack.project(),
                    if volumes == Volumes::Delete {
                        " and its volumes"
                    } else {
                        " (volumes kept; `--volumes` deletes them)"
                    }
                );
            }
            Scope::Env(_) => {
                let present = stack.containers()?;
                let there: Vec<&str> = services
                    .iter()
                    .map(|s| s.name())
                    .filter(|n| present.iter().any(|c| c.service == *n))
                    .collect();
                stack.remove(sh, &compose, &there)?;
                for service in &services {
                    report_down(stack, *service, there.contains(&service.name()), volumes)?;
                }
                stack.remove_network_if_empty()?;
            }
        }
        Ok(())
    }
}

fn report_down(stack: &Stack, service: Service, was_there: bool, volumes: Volumes) -> Result<()> {
    let name = service.name();
    let state = if was_there {
        format!("stopped {name}")
    } else {
        format!("{name} was not running")
    };
    match (service.storage(), volumes) {
        (Storage::Volume(volume), Volumes::Keep) => {
            println!(
                "{state}; its data is kept in volume {} (`--volumes` deletes it)",
                stack.volume_name(volume)
            );
        }
        (Storage::Volume(volume), Volumes::Delete) => {
            let removed = stack.remove_volume(volume)?;
            let name = stack.volume_name(volume);
            println!(
                "{state}; {}",
                if removed {
                    format!("deleted volume {name} and its data")
                } else {
                    format!("volume {name} did not exist")
                }
            );
        }
        _ => println!("{state}"),
    }
    Ok(())
}

// ---- db-status ----------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Status {
    stack: String,
    project: String,
    checkout: String,
    services: Vec<ServiceStatus>,
    volumes: Vec<VolumeStatus>,
    /// What runs that were killed left behind, and how to remove it.
    leftovers: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ServiceStatus {
    service: String,
    container: Option<String>,
    /// `running`, `exited`, ... or `absent` when the service has no container; `orphaned`
    /// when the run that started it died without removing it.
    state: String,
    /// `healthy`, `starting`, `unhealthy`, or none without a container or a healthcheck.
    health: Option<String>,
    ports: Vec<String>,
    /// Where the host reaches it while it runs: the test password is public and shown, the
    /// dev password masked.
    url: Option<String>,
    /// Kept warm by `test --keep` for the next run on the stack.
    warm: bool,
}

#[derive(Debug, Serialize)]
struct VolumeStatus {
    volume: String,
    present: bool,
}

impl flags::DbStatus {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        preflight::docker_installed()?;
        preflight::docker_daemon()?;
        let status = status(sh, stack)?;
        for env in [Env::Test, Env::Dev] {
            crate::services::reset_marker::warn_after_killed_reset(stack, env);
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(());
        }
        println!(
            "stack {} (compose project {}) of {}",
            status.stack, status.project, status.checkout
        );
        let rows: Vec<[String; 5]> = status
            .services
            .iter()
            .map(|s| {
                [
                    s.service.clone(),
                    if s.warm {
                        format!("{} (warm)", s.state)
                    } else {
                        s.state.clone()
                    },
                    s.health.clone().unwrap_or_else(|| "-".to_owned()),
                    s.url.clone().unwrap_or_else(|| {
                        if s.ports.is_empty() {
                            "-".to_owned()
                        } else {
                            s.ports.join(", ")
                        }
                    }),
                    s.container.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        let header = ["SERVICE", "STATE", "HEALTH", "URL", "CONTAINER"].map(str::to_owned);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:w$}"))
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
        for volume in &status.volumes {
            println!(
                "volume {}: {}",
                volume.volume,
                if volume.present { "present" } else { "absent" }
            );
        }
        for leftover in &status.leftovers {
            println!("left behind: {leftover}");
        }
        if status.services.iter().any(|s| s.warm) {
            println!(
                "warm: kept by `cargo xtask test --keep` for the next run on this stack; \
                 `cargo xtask db-down --all{}` removes it",
                stack.flag()
            );
        }
        if status.services.iter().any(|s| s.state == "orphaned") {
            println!(
                "orphaned: the run that started it died; the next run on this stack reclaims it, \
                 `cargo xtask db-down --all{}` removes it now",
                stack.flag()
            );
        }
        Ok(())
    }
}

/// The URL the host reaches `service` at on `port`.
fn service_url(service: Service, port: u16) -> String {
    let mut address = model::REDIS.host_address;
    address.port = port;
    match service {
        Service::TestDb => model::TEST_DB.url_with(address, model::TEST_DB_PASSWORD),
        Service::DevDb => model::DEV_DB.url_with(address, "***"),
        Service::Redis => model::REDIS.url(address),
        Service::Api => format!("http://{address}"),
    }
}

fn status(sh: &Shell, stack: &Stack) -> Result<Status> {
    let containers = stack.containers()?;
    let mut services = Vec::new();
    for service in Service::ALL {
        let name = service.name();
        let mine: Vec<_> = containers.iter().filter(|c| c.service == name).collect();
        if mine.is_empty() {
            services.push(ServiceStatus {
                service: name.to_owned(),
                container: None,
                state: "absent".to_owned(),
                health: None,
                ports: Vec::new(),
                url: None,
                warm: false,
            });
        }
        for c in mine {
            services.push(ServiceStatus {
                service: name.to_owned(),
                container: Some(c.name.clone()),
                state: if c.owner() == Owner::Dead {
                    "orphaned".to_owned()
                } else {
                    c.state.clone()
                },
                health: c.health.clone(),
                ports: c
                    .ports
                    .iter()
                    .map(|(inner, ip, port)| format!("{ip}:{port}->{inner}"))
                    .collect(),
                url: c
                    .running()
                    .then(|| c.host_port(service.container_port()))
                    .flatten()
                    .map(|port| service_url(service, port)),
                warm: c.warm_recipe().is_some(),
            });
        }
    }
    let present = stack.volumes()?;
    let volumes = Service::ALL
        .iter()
        .filter_map(|s| match s.storage() {
            Storage::Volume(volume) => Some(stack.volume_name(volume)),
            _ => None,
        })
        .map(|volume| VolumeStatus {
            present: present.contains(&volume),
            volume,
        })
        .collect();
    let leftovers = leftovers(sh, stack, &containers)?;
    Ok(Status {
        stack: stack.name().to_owned(),
        project: stack.project().to_owned(),
        checkout: project_root().display().to_string(),
        services,
        volumes,
        leftovers,
    })
}

/// What killed runs leave that no container shows: the stack's network with no container in
/// it, and in a running database, the test pool's clones and verifications' scratch databases.
fn leftovers(
    sh: &Shell,
    stack: &Stack,
    containers: &[crate::services::container::Container],
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let flag = stack.flag();
    if containers.is_empty() {
        for network in stack.networks()? {
            found.push(format!(
                "network {network}, with no container in it: `cargo xtask db-down --all{flag}` \
                 removes it"
            ));
        }
    }
    for env in [Env::Test, Env::Dev] {
        let Some(service) = Service::database(env) else {
            continue;
        };
        if !containers
            .iter()
            .any(|c| c.service == service.name() && c.running())
        {
            continue;
        }
        let Ok(mut target) = Target::resolve(env, None) else {
            continue;
        };
        if stack.aim(&mut target).is_err() {
            continue;
        }
        let Ok(names) = target.query(
            sh,
            "select datname from pg_catalog.pg_database where datname like 'genesis\\_p\\_%' \
             or datname like 'genesis\\_t\\_%' or datname like 'genesis\\_verify\\_%' \
             order by 1",
        ) else {
            continue;
        };
        let names: Vec<&str> = names.lines().map(str::trim).collect();
        let clones = names.iter().filter(|n| n.starts_with("genesis_p_")).count();
        if clones > 0 {
            found.push(format!(
                "{clones} test pool clones (genesis_p_*) in {}: ready databases a run's pool \
                 did not hand out (a run killed mid-suite leaves them); `cargo xtask db-down \
                 --env {env}{flag}` removes them with the container",
                service.name()
            ));
        }
        let tests = names.iter().filter(|n| n.starts_with("genesis_t_")).count();
        if tests > 0 {
            found.push(format!(
                "{tests} per-test databases (genesis_t_*) in {}: in use by a run now, kept \
                 for inspection, or left by a run that was killed (the suites sweep those \
                 after 30 minutes); `cargo xtask db-down --env {env}{flag}` removes them \
                 with the container",
                service.name()
            ));
        }
        for scratch in names.iter().filter(|n| n.starts_with("genesis_verify_")) {
            found.push(format!(
                "scratch database {scratch} in {}, of a backup's verification: the next \
                 `db-backup` or `db-restore` drops it once its process is gone",
                service.name()
            ));
        }
    }
    Ok(found)
}

// ---- db-logs ------------------------------------------------------------------------------

impl flags::DbLogs {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        if let Some(unknown) = self
            .services
            .iter()
            .find(|s| Service::from_name(s).is_none())
        {
            let known: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
            return Err(usage(format!(
                "no service {unknown:?} in the compose file: choose among {}",
                known.join(", ")
            )));
        }
        preflight::docker_installed()?;
        preflight::docker_daemon()?;
        let compose = Compose::detect(sh)?;
        // Compose prints "Attaching to" and succeeds on a project without a container.
        let containers = stack.containers()?;
        let shown =
            |name: &str| self.services.is_empty() || self.services.iter().any(|s| s == name);
        if !containers.iter().any(|c| shown(&c.service)) {
            let what = if self.services.is_empty() {
                "nothing runs".to_owned()
            } else {
                format!("{} has no container", self.services.join(", "))
            };
            return Err(usage(format!(
                "{what} on stack {} (compose project {}), so there are no logs to show; \
                 `cargo xtask db-up{}` starts the databases",
                stack.name(),
                stack.project(),
                stack.flag()
            )));
        }
        let logs = stack.logs(sh, &compose, self.follow, self.tail, &self.services);
        // Line by line, so that a `--follow` is redacted as it goes.
        let status = child::stream_lines(logs, |line| println!("{}", redact(line)))?;
        if !status.success() {
            return Err(check_failed(format!("compose logs failed ({status})")));
        }
        Ok(())
    }
}

// ---- db-shell -----------------------------------------------------------------------------

impl flags::DbShell {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let env = self.env.model();
        pg::pg_tool(sh, "psql")?;
        let mut target = Target::resolve(env, self.url.as_deref())?;
        stack.aim(&mut target)?;
        if let (Some(service), None) = (Service::database(env), &self.url) {
            if let Probe::NotYet(why) | Probe::AuthFailed(why) | Probe::Missing(why) =
                target.probe(sh)
            {
                return Err(usage(format!(
                    "{} does not accept a connection as {} ({why}): start it with `cargo xtask db-up --env {env}{}`",
                    service.name(),
                    target.user,
                    stack.flag()
                )));
            }
        }
        eprintln!("psql {}", target.masked_url());
        let status = child::interactive(target.tool(sh, "psql"))?;
        if status.success() {
            Ok(())
        } else {
            Err(check_failed(format!("psql ended with {status}")))
        }
    }
}
