//! A stack: one set of the project's services with its own compose project, network and
//! volumes, owned by one checkout; starting, aiming at and removing it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use genesis_model::{self as model, COMPOSE_PROJECT, Env, Storage};

use super::container::{Container, inspect};
use super::engine::Engine;
use crate::tools::util::{project_root, usage};

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
        let dir = crate::tools::util::xtask_dir();
        match &self.name {
            None => dir,
            Some(name) => dir.join("stacks").join(name),
        }
    }

    /// The label compose puts on everything of this stack.
    fn project_label(&self) -> String {
        format!("com.docker.compose.project={}", self.project)
    }

    /// The stack's containers, running or not, as `docker inspect` describes them.
    pub fn containers(&self) -> Result<Vec<Container>> {
        let listed = Engine::get()?
            .containers(&[&self.project_label()], None, true)
            .context("list the stack's containers")?;
        let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
        inspect(&ids)
    }

    /// The stack's volumes that exist now, by name.
    pub fn volumes(&self) -> Result<Vec<String>> {
        Engine::get()?
            .volumes(&self.project_label())
            .context("list the stack's volumes")
    }

    /// The name compose gives the model's volume `volume` in this stack.
    pub fn volume_name(&self, volume: &str) -> String {
        format!("{}_{volume}", self.project)
    }

    /// The named volumes of the compose file, as compose names them in this stack.
    pub(super) fn model_volumes(&self) -> Vec<String> {
        Env::ALL
            .iter()
            .filter_map(|env| match env.database().compose()?.storage {
                Storage::Volume(name) => Some(self.volume_name(name)),
                _ => None,
            })
            .collect()
    }

    /// The names of the stack's networks.
    pub fn networks(&self) -> Result<Vec<String>> {
        let networks = Engine::get()?
            .networks(&self.project_label())
            .context("list the stack's networks")?;
        Ok(networks.into_iter().map(|(_, name)| name).collect())
    }

    /// Removes the stack's network once no container is left in it, as `compose down` does.
    pub fn remove_network_if_empty(&self) -> Result<()> {
        if !self.containers()?.is_empty() {
            return Ok(());
        }
        let engine = Engine::get()?;
        for (id, _) in engine
            .networks(&self.project_label())
            .context("list the stack's networks")?
        {
            engine
                .remove_network(&id)
                .context("remove the stack's network")?;
        }
        Ok(())
    }

    /// Removes the stack's volume `volume` of the model; whether there was one.
    pub fn remove_volume(&self, volume: &str) -> Result<bool> {
        let name = self.volume_name(volume);
        if !self.volumes()?.contains(&name) {
            return Ok(false);
        }
        Engine::get()?.remove_volume(&name)
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
}
