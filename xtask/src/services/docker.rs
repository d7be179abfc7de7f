//! Single Docker engine calls on named things that belong to no stack query: a volume by its
//! full name, a throw-away container, a command run in a container.

use anyhow::{Context, Result};
use xshell::{Cmd, Shell, cmd};

use super::engine::Engine;

/// Whether a volume of that exact name exists.
pub fn volume_exists(name: &str) -> bool {
    Engine::get()
        .and_then(|e| e.volume_exists(name))
        .unwrap_or(false)
}

/// Removes the volume of that exact name.
pub fn remove_volume(name: &str) -> Result<()> {
    Engine::get()?
        .remove_volume(name)
        .map(drop)
        .with_context(|| format!("remove volume {name}"))
}

/// Starts and removes a container of `image` that does nothing: the engine's own floor for a
/// container start.
pub fn run_nothing(sh: &Shell, image: &str) -> Result<()> {
    cmd!(sh, "docker run --rm --entrypoint true {image}")
        .quiet()
        .run()
        .with_context(|| format!("docker run --rm of {image}"))
}

/// `docker exec {options...} {container}`, ready for the program and its arguments.
pub fn exec<'a>(sh: &'a Shell, options: &[String], container: &str) -> Cmd<'a> {
    cmd!(sh, "docker exec {options...} {container}")
}
