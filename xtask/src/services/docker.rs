//! Single Docker engine calls on named things that belong to no stack query: a volume by its
//! full name, a throw-away container, a command run in a container.

use anyhow::{Context, Result};
use xshell::{Cmd, Shell, cmd};

/// Whether a volume of that exact name exists.
pub fn volume_exists(sh: &Shell, name: &str) -> bool {
    cmd!(sh, "docker volume inspect {name}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// Removes the volume of that exact name.
pub fn remove_volume(sh: &Shell, name: &str) -> Result<()> {
    cmd!(sh, "docker volume rm {name}")
        .quiet()
        .ignore_stdout()
        .run()
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
