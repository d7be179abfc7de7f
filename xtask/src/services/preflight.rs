//! Preconditions shared by the commands: each check either passes with what it found or fails
//! with the command that fixes it, before anything touches a container.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Result;
use xshell::{Shell, cmd};

use super::engine::Engine;
use super::ports::port_holder;
use super::stack::Stack;
use crate::tools::util::usage;

/// The Docker client is on the PATH, found without running it (each `docker` run costs a
/// process start; the daemon check that follows runs it anyway).
pub fn docker_installed() -> Result<()> {
    which::which("docker").map(drop).map_err(|_| {
        usage("the docker client is not installed: `apt-get install docker.io` (or Docker's own packages)")
    })
}

/// The Docker client is installed; returns its version (for `doctor`).
pub fn docker_client(sh: &Shell) -> Result<String> {
    cmd!(sh, "docker --version")
        .quiet()
        .ignore_stderr()
        .read()
        .map_err(|_| usage("the docker client is not installed: `apt-get install docker.io` (or Docker's own packages)"))
}

/// The Docker daemon answers; returns its version.
/// Asked on the engine's socket, not through `docker version` (a process start).
pub fn docker_daemon() -> Result<String> {
    Engine::get()?.version()
}

/// Who holds a host port of the default stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortState {
    Free,
    /// Published by a container of this stack.
    Ours(String),
    /// Published by another stack or container: `(container, whose)`.
    Other(String, String),
    /// Held by something else: starting a service on it would fail.
    Taken,
}

/// Whether `port` on the loopback interface can be used by `stack`'s services.
pub fn port_state(port: u16, stack: &Stack) -> PortState {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
        return PortState::Free;
    }
    match port_holder(port) {
        Some(c) if c.project == stack.project() => PortState::Ours(c.name),
        Some(c) => {
            let whose = match c.checkout {
                Some(checkout) => format!("a stack of the checkout {checkout}"),
                None => "not of this project".to_owned(),
            };
            PortState::Other(c.name, whose)
        }
        None => PortState::Taken,
    }
}

/// `cargo-nextest`, which `test` builds and runs the suites with.
pub fn nextest() -> Result<std::path::PathBuf> {
    which::which("cargo-nextest").map_err(|_| {
        usage("cargo-nextest is not installed: run `cargo install cargo-nextest --locked`")
    })
}

/// `mmdebstrap`, which `images` builds the drop-in images with.
pub fn mmdebstrap() -> Result<std::path::PathBuf> {
    which::which("mmdebstrap").map_err(|_| {
        usage("mmdebstrap is not installed (needed to build the images offline): run `apt-get install mmdebstrap`")
    })
}

/// `mmdebstrap`, installed with apt-get (saying so) where it is missing and this process is
/// root; otherwise the command that installs it.
pub fn mmdebstrap_or_install(sh: &Shell) -> Result<std::path::PathBuf> {
    if let Ok(found) = mmdebstrap() {
        return Ok(found);
    }
    crate::tools::apt::install(
        sh,
        &["mmdebstrap"],
        "building the images from Debian packages",
    )?;
    mmdebstrap()
}
