//! `db-up`, `db-down`, `db-status`, `db-logs` and `db-shell`: an environment's compose services,
//! started until a real connection succeeds, stopped with or without their data, listed, logged
//! and opened in `psql`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use genesis_model::{self as model, COMPOSE_PROJECT, Env, Image, Password, Storage};
use genesis_settings::redact;
use serde::Serialize;
use xshell::{Shell, cmd};

use crate::child;
use crate::compose::Compose;
use crate::flags::{self, Extra};
use crate::pg::{self, PasswordSource, Probe, Target};
use crate::preflight::{self, PortState};
use crate::util::{Progress, check_failed, project_root, usage};

/// How long `db-up` waits between two probes.
const POLL: Duration = Duration::from_millis(100);
/// How often the container's own state is looked at while waiting (a crash ends the wait).
const STATE_EVERY: Duration = Duration::from_secs(2);
/// How long a refused password may persist before the wait gives up: a server that is still
/// initialising can refuse briefly, one that keeps refusing holds another password.
const AUTH_GRACE: Duration = Duration::from_secs(3);
/// Log lines shown when a service does not become ready.
const LOG_LINES: &str = "20";

/// A compose service `db-up` and `db-down` manage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Database(Env),
    Redis,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Database(env) => env.database().service.expect("checked by `services`"),
            Service::Redis => model::REDIS.service,
        }
    }

    fn host_port(self) -> u16 {
        match self {
            Service::Database(env) => {
                env.database()
                    .host_address
                    .expect("compose databases are published")
                    .port
            }
            Service::Redis => model::REDIS.host_address.port,
        }
    }

    fn image(self) -> Image {
        match self {
            Service::Database(_) => model::POSTGRES_IMAGE,
            Service::Redis => model::REDIS_IMAGE,
        }
    }
}

/// The services of `env` plus the `--with` extras; production has none.
fn services(env: Env, with: &[Extra]) -> Result<Vec<Service>> {
    if env.database().service.is_none() {
        return Err(usage(format!(
            "--env {env} has no compose service: production runs on a managed PostgreSQL server \
             reached through DATABASE_URL; db-up and db-down manage `test` and `dev` only"
        )));
    }
    let mut services = vec![Service::Database(env)];
    if with.contains(&Extra::Redis) {
        services.push(Service::Redis);
    }
    Ok(services)
}

/// Every service of the compose file, in the model's order.
fn all_service_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Env::ALL
        .iter()
        .filter_map(|env| env.database().service)
        .collect();
    names.push(model::REDIS.service);
    names.push(model::API.service);
    names
}

fn project_label() -> String {
    format!("label=com.docker.compose.project={COMPOSE_PROJECT}")
}

/// The project's containers of `service` (running or not), by id.
fn containers(sh: &Shell, service: Option<&str>) -> Result<Vec<String>> {
    let project = project_label();
    let mut cmd = cmd!(sh, "docker ps -a -q --filter {project}").quiet();
    if let Some(service) = service {
        cmd = cmd
            .arg("--filter")
            .arg(format!("label=com.docker.compose.service={service}"));
    }
    let out = cmd.read().context("list the project's containers")?;
    Ok(out.lines().map(str::to_owned).collect())
}

// ---- db-up --------------------------------------------------------------------------------

impl flags::DbUp {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let env = self.env.model();
        let services = services(env, &self.with)?;

        preflight::docker_client(sh)?;
        preflight::docker_daemon(sh)?;
        let compose = Compose::detect(sh)?;
        preflight::pg_tool(sh, "psql")?;
        for service in &services {
            preflight::image_available(sh, service.image())?;
        }
        for service in &services {
            let port = service.host_port();
            if preflight::port_state(sh, port) == PortState::Taken {
                return Err(usage(format!(
                    "port {port} is taken by another process, so {} cannot publish it on \
                     127.0.0.1:{port}: stop what listens there (`ss -ltnp 'sport = :{port}'` \
                     shows it) and run this again",
                    service.name()
                )));
            }
        }
        if let Password::FromEnv(_) = env.database().password {
            let (_, source) = pg::ensure_dev_password(&project_root())?;
            if let PasswordSource::Generated(path) = source {
                eprintln!(
                    "generated a password for the {env} database into {} (owner-only, git-ignored; compose reads it from there)",
                    path.display()
                );
            }
        }

        let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
        let started = Instant::now();
        let out = compose
            .cmd(sh)
            .args(["up", "-d"])
            .args(&names)
            .quiet()
            .ignore_status()
            .output()
            .context("run compose up")?;
        if !out.status.success() {
            return Err(check_failed(format!(
                "compose could not start {}: {}",
                names.join(", "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }

        let timeout = Duration::from_secs(self.timeout);
        for service in services {
            let url = match service {
                Service::Database(env) => {
                    let target = Target::resolve(env, None)?;
                    wait_for_database(sh, &compose, &target, service, timeout)?;
                    target.masked_url()
                }
                Service::Redis => {
                    wait_for(sh, &compose, service, timeout, redis_ping)?;
                    model::REDIS.url(model::REDIS.host_address)
                }
            };
            println!(
                "{} ready in {:.1} s: {url}",
                service.name(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

/// Polls `target` until a real connection as the app's role to the app's database succeeds.
fn wait_for_database(
    sh: &Shell,
    compose: &Compose,
    target: &Target,
    service: Service,
    timeout: Duration,
) -> Result<()> {
    let mut refused_since: Option<Instant> = None;
    wait_for(sh, compose, service, timeout, |_| match target.probe(sh) {
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
            let fix = match target.env.database().storage {
                Storage::Volume(volume) => format!(
                    "the data in volume {COMPOSE_PROJECT}_{volume} was initialised with another \
                     password: set POSTGRES_PASSWORD (in your environment or .env) to that one, or \
                     start afresh with `cargo xtask db-down --env {} --volumes` (this deletes the data)",
                    target.env
                ),
                _ => "the server was initialised with another password".to_owned(),
            };
            Err(format!(
                "{} refuses the password of {} ({why}): {fix}",
                service.name(),
                target.user
            ))
        }
    })
}

enum Waiting {
    Ready,
    NotYet(String),
}

/// The waiting loop: `probe` until ready, the container's state looked at now and then, a live
/// line of elapsed seconds on a terminal, and on failure the service's last log lines.
fn wait_for(
    sh: &Shell,
    compose: &Compose,
    service: Service,
    timeout: Duration,
    mut probe: impl FnMut(&Shell) -> std::result::Result<Waiting, String>,
) -> Result<()> {
    let name = service.name();
    let container = containers(sh, Some(name))?.into_iter().next();
    let started = Instant::now();
    let mut progress = Progress::start(&format!("waiting for {name}"), timeout);
    let mut last_state_check = Instant::now();
    let mut last_error: String;
    let failure = loop {
        match probe(sh) {
            Ok(Waiting::Ready) => {
                progress.finish();
                return Ok(());
            }
            Ok(Waiting::NotYet(why)) => last_error = why,
            Err(fatal) => break fatal,
        }
        if last_state_check.elapsed() >= STATE_EVERY {
            last_state_check = Instant::now();
            if let Some(id) = &container {
                let format = "{{.State.Status}} {{.State.ExitCode}}";
                let state = cmd!(sh, "docker inspect --format {format} {id}")
                    .quiet()
                    .ignore_stderr()
                    .read()
                    .unwrap_or_default();
                if state.starts_with("exited") || state.starts_with("dead") {
                    break format!("{name} stopped while starting ({state})");
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
        std::thread::sleep(POLL);
    };
    progress.finish();
    let logs = compose
        .cmd(sh)
        .args(["logs", "--no-color", "--tail", LOG_LINES, name])
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    Err(check_failed(redact(&format!(
        "{failure}\n--- last {LOG_LINES} log lines of {name} ---\n{}",
        logs.trim_end()
    ))))
}

/// Redis answers `PING` with `+PONG` on its published port.
fn redis_ping(_: &Shell) -> std::result::Result<Waiting, String> {
    let port = model::REDIS.host_address.port;
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
        Ok(reply) if reply == "+PONG" => Ok(Waiting::Ready),
        Ok(reply) => Ok(Waiting::NotYet(format!("redis answered {reply:?}"))),
        Err(err) => Ok(Waiting::NotYet(err.to_string())),
    }
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
    pub fn run(self, sh: &Shell) -> Result<()> {
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
        preflight::docker_client(sh)?;
        preflight::docker_daemon(sh)?;
        let compose = Compose::detect(sh)?;

        match scope {
            Scope::All => {
                let mut down = compose.cmd(sh).args(["down", "--remove-orphans"]);
                if volumes == Volumes::Delete {
                    down = down.arg("--volumes");
                }
                run_compose(down, "compose down")?;
                println!(
                    "stopped and removed every {COMPOSE_PROJECT} service{}",
                    if volumes == Volumes::Delete {
                        " and its volumes"
                    } else {
                        " (volumes kept; `--volumes` deletes them)"
                    }
                );
            }
            Scope::Env(_) => {
                let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
                let running: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|n| containers(sh, Some(n)).is_ok_and(|ids| !ids.is_empty()))
                    .collect();
                if !running.is_empty() {
                    run_compose(compose.cmd(sh).arg("stop").args(&running), "compose stop")?;
                    // `-v` removes the anonymous volumes only; named ones are handled below.
                    run_compose(
                        compose.cmd(sh).args(["rm", "-f", "-v"]).args(&running),
                        "compose rm",
                    )?;
                }
                for service in &services {
                    report_down(sh, *service, running.contains(&service.name()), volumes)?;
                }
                // The network goes with the last container, as with `compose down`.
                if containers(sh, None)?.is_empty() {
                    run_compose(compose.cmd(sh).arg("down"), "compose down")?;
                }
            }
        }
        Ok(())
    }
}

fn report_down(sh: &Shell, service: Service, was_there: bool, volumes: Volumes) -> Result<()> {
    let name = service.name();
    let state = if was_there {
        format!("stopped {name}")
    } else {
        format!("{name} was not running")
    };
    let storage = match service {
        Service::Database(env) => env.database().storage,
        Service::Redis => Storage::Disposable,
    };
    match (storage, volumes) {
        (Storage::Volume(volume), Volumes::Keep) => {
            println!(
                "{state}; its data is kept in volume {COMPOSE_PROJECT}_{volume} (`--volumes` deletes it)"
            );
        }
        (Storage::Volume(volume), Volumes::Delete) => {
            let removed = remove_volume(sh, volume)?;
            println!(
                "{state}; {}",
                if removed {
                    format!("deleted volume {COMPOSE_PROJECT}_{volume} and its data")
                } else {
                    format!("volume {COMPOSE_PROJECT}_{volume} did not exist")
                }
            );
        }
        _ => println!("{state}"),
    }
    Ok(())
}

/// Removes the project's named volume `volume` (found by its compose labels, so the naming
/// scheme of the compose flavour does not matter). Returns whether there was one.
fn remove_volume(sh: &Shell, volume: &str) -> Result<bool> {
    let project = project_label();
    let label = format!("label=com.docker.compose.volume={volume}");
    let ids = cmd!(
        sh,
        "docker volume ls -q --filter {project} --filter {label}"
    )
    .quiet()
    .read()
    .context("list the project's volumes")?;
    let ids: Vec<&str> = ids.lines().collect();
    if ids.is_empty() {
        return Ok(false);
    }
    cmd!(sh, "docker volume rm {ids...}")
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("remove volume {COMPOSE_PROJECT}_{volume}"))?;
    Ok(true)
}

fn run_compose(cmd: xshell::Cmd<'_>, what: &str) -> Result<()> {
    let out = cmd
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run {what}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(check_failed(format!(
            "{what} failed: {}",
            redact(String::from_utf8_lossy(&out.stderr).trim())
        )))
    }
}

// ---- db-status ----------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Status {
    services: Vec<ServiceStatus>,
    volumes: Vec<VolumeStatus>,
}

#[derive(Debug, Serialize)]
struct ServiceStatus {
    service: String,
    container: Option<String>,
    /// `running`, `exited`, ... or `absent` when the service has no container.
    state: String,
    /// `healthy`, `starting`, `unhealthy`, or none without a container or a healthcheck.
    health: Option<String>,
    ports: Vec<String>,
}

#[derive(Debug, Serialize)]
struct VolumeStatus {
    volume: String,
    present: bool,
}

impl flags::DbStatus {
    pub fn run(self, sh: &Shell) -> Result<()> {
        preflight::docker_client(sh)?;
        preflight::docker_daemon(sh)?;
        let status = status(sh)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(());
        }
        let rows: Vec<[String; 5]> = status
            .services
            .iter()
            .map(|s| {
                [
                    s.service.clone(),
                    s.state.clone(),
                    s.health.clone().unwrap_or_else(|| "-".to_owned()),
                    if s.ports.is_empty() {
                        "-".to_owned()
                    } else {
                        s.ports.join(", ")
                    },
                    s.container.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        let header = ["SERVICE", "STATE", "HEALTH", "PORTS", "CONTAINER"].map(str::to_owned);
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
        Ok(())
    }
}

fn status(sh: &Shell) -> Result<Status> {
    let ids = containers(sh, None)?;
    let inspected: Vec<serde_json::Value> = if ids.is_empty() {
        Vec::new()
    } else {
        let out = cmd!(sh, "docker inspect {ids...}")
            .quiet()
            .read()
            .context("inspect the project's containers")?;
        serde_json::from_str(&out).context("read `docker inspect`")?
    };
    let mut services = Vec::new();
    for name in all_service_names() {
        let mine: Vec<&serde_json::Value> = inspected
            .iter()
            .filter(|c| c["Config"]["Labels"]["com.docker.compose.service"] == name)
            .collect();
        if mine.is_empty() {
            services.push(ServiceStatus {
                service: name.to_owned(),
                container: None,
                state: "absent".to_owned(),
                health: None,
                ports: Vec::new(),
            });
        }
        for c in mine {
            services.push(ServiceStatus {
                service: name.to_owned(),
                container: c["Name"]
                    .as_str()
                    .map(|n| n.trim_start_matches('/').to_owned()),
                state: c["State"]["Status"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
                health: c["State"]["Health"]["Status"].as_str().map(str::to_owned),
                ports: published_ports(&c["NetworkSettings"]["Ports"]),
            });
        }
    }
    let mut volumes = Vec::new();
    for env in Env::ALL {
        if let Storage::Volume(volume) = env.database().storage {
            let project = project_label();
            let label = format!("label=com.docker.compose.volume={volume}");
            let found = cmd!(
                sh,
                "docker volume ls -q --filter {project} --filter {label}"
            )
            .quiet()
            .read()
            .context("list the project's volumes")?;
            volumes.push(VolumeStatus {
                volume: format!("{COMPOSE_PROJECT}_{volume}"),
                present: !found.trim().is_empty(),
            });
        }
    }
    Ok(Status { services, volumes })
}

/// `127.0.0.1:5433->5432/tcp` for each published port of a running container.
fn published_ports(ports: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(map) = ports.as_object() {
        for (inner, bindings) in map {
            for binding in bindings.as_array().into_iter().flatten() {
                let ip = binding["HostIp"].as_str().unwrap_or("");
                let port = binding["HostPort"].as_str().unwrap_or("");
                out.push(format!("{ip}:{port}->{inner}"));
            }
        }
    }
    out.sort();
    out
}

// ---- db-logs ------------------------------------------------------------------------------

impl flags::DbLogs {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let known = all_service_names();
        if let Some(unknown) = self.services.iter().find(|s| !known.contains(&s.as_str())) {
            return Err(usage(format!(
                "no service {unknown:?} in the compose file: choose among {}",
                known.join(", ")
            )));
        }
        preflight::docker_client(sh)?;
        preflight::docker_daemon(sh)?;
        let compose = Compose::detect(sh)?;
        let mut logs = compose.cmd(sh).args(["logs", "--no-color"]);
        if self.follow {
            logs = logs.arg("--follow");
        }
        if let Some(tail) = self.tail {
            logs = logs.args(["--tail", &tail.to_string()]);
        }
        let logs = logs.args(&self.services).quiet();
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
    pub fn run(self, sh: &Shell) -> Result<()> {
        let env = self.env.model();
        preflight::pg_tool(sh, "psql")?;
        let target = Target::resolve(env, None)?;
        if let Some(service) = env.database().service {
            if let Probe::NotYet(why) | Probe::AuthFailed(why) = target.probe(sh) {
                return Err(usage(format!(
                    "{service} does not accept a connection as {} ({why}): start it with `cargo xtask db-up --env {env}`",
                    target.user
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
