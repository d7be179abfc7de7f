//! A session of compose services for a command that needs them (`test`, `verify-migration`):
//! it starts what is not running yet, waits until each is really ready, and on drop stops and
//! removes only what it started, also after an error or Ctrl-C.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use genesis_model::{self as model, COMPOSE_PROJECT, Env, Image, Storage};
use xshell::{Shell, cmd};

use crate::compose::Compose;
use crate::pg;
use crate::preflight::{self, PortState};
use crate::util::{check_failed, usage};

/// The services a command can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    TestDb,
    Redis,
    Api,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::TestDb => model::TEST_DB
                .service
                .expect("test-db is a compose service"),
            Service::Redis => model::REDIS.service,
            Service::Api => model::API.service,
        }
    }

    fn image(self) -> Image {
        match self {
            Service::TestDb => model::POSTGRES_IMAGE,
            Service::Redis => model::REDIS_IMAGE,
            Service::Api => model::API_IMAGE,
        }
    }

    fn host_port(self) -> u16 {
        match self {
            Service::TestDb => {
                model::TEST_DB
                    .host_address
                    .expect("test-db is published")
                    .port
            }
            Service::Redis => model::REDIS.host_address.port,
            Service::Api => model::API.port,
        }
    }
}

/// How long a service may take to become ready before the command gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether a service of the project has a running container.
pub fn is_running(sh: &Shell, service: &str) -> bool {
    let project = format!("label=com.docker.compose.project={COMPOSE_PROJECT}");
    let label = format!("label=com.docker.compose.service={service}");
    cmd!(sh, "docker ps -q --filter {project} --filter {label}")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|ids| !ids.trim().is_empty())
}

/// The services of one command; dropping it removes the ones it started.
pub struct Session<'a> {
    sh: &'a Shell,
    compose: Compose,
    started: Vec<Service>,
    /// The project's named volumes that `compose up` created in this session: compose creates
    /// every volume of the file on any `up`, so starting test-db makes the dev volume too.
    created_volumes: Vec<String>,
}

impl<'a> Session<'a> {
    pub fn up(sh: &'a Shell, compose: &Compose, wanted: &[Service]) -> Result<Session<'a>> {
        let mut session = Session {
            sh,
            compose: compose.clone(),
            started: Vec::new(),
            created_volumes: Vec::new(),
        };
        let missing: Vec<Service> = wanted
            .iter()
            .copied()
            .filter(|s| !is_running(sh, s.name()))
            .collect();
        for service in &missing {
            preflight::image_available(sh, service.image())?;
            if preflight::port_state(sh, service.host_port()) == PortState::Taken {
                return Err(usage(format!(
                    "port {} is taken by another process, so {} cannot be published: stop what listens on it",
                    service.host_port(),
                    service.name()
                )));
            }
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.name()).collect();
            eprintln!("starting {}", names.join(", "));
            // Recorded before `up`, so a failure half-way still removes what was created.
            session.started = missing.clone();
            let before = project_volumes(sh);
            session.created_volumes = model_volumes()
                .into_iter()
                .filter(|v| !before.contains(v))
                .collect();
            compose
                .cmd(sh)
                .args(["up", "-d", "--no-recreate"])
                .args(&names)
                .quiet()
                .run()
                .context("compose up")?;
        }
        for service in wanted {
            session.wait_ready(*service)?;
        }
        Ok(session)
    }

    fn wait_ready(&self, service: Service) -> Result<()> {
        let started = Instant::now();
        loop {
            let ready = match service {
                Service::TestDb => test_db_accepts_the_app_role(self.sh),
                Service::Redis => self.compose_exec_ok(service, &["redis-cli", "ping"]),
                Service::Api => http_ok(model::API.port, "/health"),
            };
            if ready {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let logs = self
                    .compose
                    .cmd(self.sh)
                    .args(["logs", "--no-color", "--tail", "20", service.name()])
                    .quiet()
                    .ignore_status()
                    .read()
                    .unwrap_or_default();
                return Err(check_failed(format!(
                    "{} was not ready after {} s; its last log lines:\n{}",
                    service.name(),
                    READY_TIMEOUT.as_secs(),
                    genesis_settings::redact(&logs)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn compose_exec_ok(&self, service: Service, command: &[&str]) -> bool {
        self.compose
            .cmd(self.sh)
            .args(["exec", "-T", service.name()])
            .args(command)
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.started.is_empty() {
            return;
        }
        let names: Vec<&str> = self.started.iter().map(|s| s.name()).collect();
        eprintln!("stopping {}", names.join(", "));
        let removed = self
            .compose
            .cmd(self.sh)
            .args(["rm", "--stop", "--force", "-v"])
            .args(&names)
            .quiet()
            .ignore_stderr()
            .run();
        if let Err(err) = removed {
            eprintln!("warning: could not remove {}: {err}", names.join(", "));
        }
        // The network goes with the last container; `down` then removes only the network.
        let label = format!("label=com.docker.compose.project={COMPOSE_PROJECT}");
        let left = cmd!(self.sh, "docker ps -a -q --filter {label}")
            .quiet()
            .ignore_stderr()
            .read()
            .unwrap_or_default();
        if left.trim().is_empty() {
            let _ = self
                .compose
                .cmd(self.sh)
                .arg("down")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run();
        }
        // Only volumes that this session's `up` created, and never one a container uses.
        for volume in self
            .created_volumes
            .iter()
            .filter(|v| project_volumes(self.sh).contains(v))
        {
            let _ = cmd!(self.sh, "docker volume rm {volume}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run();
        }
    }
}

/// The named volumes of the compose file, as compose names them (`genesis_dev-data`).
fn model_volumes() -> Vec<String> {
    Env::ALL
        .iter()
        .filter_map(|env| match env.database().storage {
            Storage::Volume(name) => Some(format!("{COMPOSE_PROJECT}_{name}")),
            _ => None,
        })
        .collect()
}

/// The volumes of this compose project that exist now.
fn project_volumes(sh: &Shell) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={COMPOSE_PROJECT}");
    cmd!(sh, "docker volume ls -q --filter {label}")
        .quiet()
        .ignore_stderr()
        .read()
        .map(|out| out.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A real connection as the application's role to the application's test database: the same
/// probe `db-up` waits on.
fn test_db_accepts_the_app_role(sh: &Shell) -> bool {
    pg::Target::resolve(Env::Test, None).is_ok_and(|db| db.probe(sh) == pg::Probe::Ready)
}

/// Whether `GET path` on a loopback port answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_ok_and(|(status, _)| status == 200)
}

/// A minimal HTTP/1.1 GET on the loopback interface: the xtask has no HTTP client on purpose.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(3);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
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
