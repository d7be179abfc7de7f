//! Preconditions shared by the commands: each check either passes with what it found or fails
//! with the command that fixes it, before anything touches a container.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Result;
use genesis_model::Image;
use xshell::{Shell, cmd};

use crate::services::{self, Service, Stack};
use crate::tools::util::usage;

/// The Docker client is installed.
pub fn docker_client(sh: &Shell) -> Result<String> {
    cmd!(sh, "docker --version")
        .quiet()
        .ignore_stderr()
        .read()
        .map_err(|_| usage("the docker client is not installed: `apt-get install docker.io` (or Docker's own packages)"))
}

/// The Docker daemon answers; returns its version.
pub fn docker_daemon(sh: &Shell) -> Result<String> {
    let format = "{{.Server.Version}}";
    let out = cmd!(sh, "docker version --format {format}")
        .quiet()
        .ignore_status()
        .output()?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no answer")
        .trim()
        .to_owned();
    Err(usage(format!(
        "the Docker daemon at {host} does not answer ({why}): start it (`systemctl start docker` or \
         `dockerd &`), or point DOCKER_HOST at a running one"
    )))
}

/// A PostgreSQL client tool (`psql`, `pg_dump`, `pg_restore`) and its major version.
pub fn pg_tool(sh: &Shell, tool: &str) -> Result<(String, u32)> {
    // Asked by the preflight and again to find the binary to run: once per command.
    static FOUND: std::sync::Mutex<Vec<(String, (String, u32))>> =
        std::sync::Mutex::new(Vec::new());
    if let Ok(found) = FOUND.lock()
        && let Some((_, known)) = found.iter().find(|(t, _)| t == tool)
    {
        return Ok(known.clone());
    }
    let fix = || {
        usage(format!(
            "`{tool}` is not installed: `apt-get install postgresql-client` (version 15 or newer)"
        ))
    };
    let out = cmd!(sh, "{tool} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .map_err(|_| fix())?;
    // `psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`
    let major = out
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(fix)?;
    let known = (out.trim().to_owned(), major);
    if let Ok(mut found) = FOUND.lock() {
        found.push((tool.to_owned(), known.clone()));
    }
    Ok(known)
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
pub fn port_state(sh: &Shell, port: u16, stack: &Stack) -> PortState {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
        return PortState::Free;
    }
    match services::port_holder(sh, port) {
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

/// A program on the PATH.
pub fn on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `cargo-nextest`, which `test` builds and runs the suites with.
pub fn nextest() -> Result<std::path::PathBuf> {
    on_path("cargo-nextest").ok_or_else(|| {
        usage("cargo-nextest is not installed: run `cargo install cargo-nextest --locked`")
    })
}

/// `mmdebstrap`, which `images` builds the drop-in images with.
pub fn mmdebstrap() -> Result<std::path::PathBuf> {
    on_path("mmdebstrap").ok_or_else(|| {
        usage("mmdebstrap is not installed (needed to build the images offline): run `apt-get install mmdebstrap`")
    })
}

/// Whether an image is present in the local engine.
pub fn image_present(sh: &Shell, image: &str) -> bool {
    // Every compose command asks for the images it may use; an image found once stays for
    // the rest of the command (each answer costs a `docker` call, ~40 ms).
    static PRESENT: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);
    let Ok(mut present) = PRESENT.lock() else {
        return false;
    };
    // The first question asks for every image of the model at once (one docker call), which
    // prints the tags of those it has and fails for the others.
    let present = present.get_or_insert_with(|| {
        let names: Vec<&str> = genesis_model::IMAGES
            .iter()
            .flat_map(|i| [i.local, i.public])
            .collect();
        let format = "{{json .RepoTags}}";
        let asked = names.clone();
        let out = cmd!(sh, "docker image inspect --format {format} {asked...}")
            .quiet()
            .ignore_stderr()
            .ignore_status()
            .read()
            .unwrap_or_default();
        out.lines()
            .filter_map(|line| serde_json::from_str::<Vec<String>>(line).ok())
            .flatten()
            .filter(|tag| names.contains(&tag.as_str()))
            .collect()
    });
    if present.iter().any(|p| p == image) {
        return true;
    }
    let format = "{{.Id}}";
    let found = cmd!(sh, "docker image inspect --format {format} {image}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if found {
        present.push(image.to_owned());
    }
    found
}

/// The image compose will use for `image`, present in the engine: the one its variable names,
/// else the local drop-in, else the public one. Otherwise the command that provides it.
pub fn image_available(sh: &Shell, image: Image) -> Result<String> {
    if let Ok(chosen) = std::env::var(image.var) {
        return if image_present(sh, &chosen) {
            Ok(chosen)
        } else {
            Err(usage(format!(
                "{} names the image {chosen}, which is not in the engine: `docker pull {chosen}`, \
                 or unset {} to use the local drop-in (`cargo xtask images`)",
                image.var, image.var
            )))
        };
    }
    for candidate in [image.local, image.public] {
        if image_present(sh, candidate) {
            return Ok(candidate.to_owned());
        }
    }
    Err(usage(format!(
        "neither {} nor {} is in the engine: run `cargo xtask images` (builds the drop-in from \
         Debian packages, no registry needed) or `docker pull {}`",
        image.local, image.public, image.public
    )))
}

/// The images `services` need, got before anything is built: the ones compose would use are
/// there, or the missing ones are got the way `ci` gets them (pulled where a registry answers,
/// built from Debian packages where none does, with progress). An image the user named in its
/// variable is never replaced.
pub fn images_for(sh: &Shell, services: &[Service]) -> Result<()> {
    let mut missing = Vec::new();
    for service in services {
        let image = service.image();
        if let Err(err) = image_available(sh, image) {
            if std::env::var_os(image.var).is_some() {
                return Err(err);
            }
            if !missing.contains(&image.public) {
                missing.push(image.public);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "missing images: {}; pulling them, or building the drop-ins from Debian packages where no registry answers",
        missing.join(", ")
    );
    let first = missing[0];
    let pulled = cmd!(sh, "docker pull --quiet {first}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !pulled {
        mmdebstrap()?;
    }
    super::images::ensure(sh)
}
