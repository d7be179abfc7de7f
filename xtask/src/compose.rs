//! Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`), detected at run time.

use anyhow::Result;
use genesis_model::COMPOSE_PROJECT;
use xshell::{Cmd, Shell, cmd};

use crate::util::{project_root, usage};

/// Which compose tool is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// The `docker compose` plugin.
    V2,
    /// The standalone `docker-compose` (Debian's package is this one).
    V1,
}

#[derive(Clone, Debug)]
pub struct Compose {
    pub flavour: Flavour,
    pub version: String,
}

impl Compose {
    /// Probes `docker compose version` first, then `docker-compose version`. `which` cannot
    /// see the v2 plugin, so both are asked directly.
    pub fn detect(sh: &Shell) -> Result<Compose> {
        if let Ok(version) = cmd!(sh, "docker compose version --short")
            .quiet()
            .ignore_stderr()
            .read()
        {
            return Ok(Compose {
                flavour: Flavour::V2,
                version: version.trim().to_owned(),
            });
        }
        if let Ok(version) = cmd!(sh, "docker-compose version --short")
            .quiet()
            .ignore_stderr()
            .read()
        {
            return Ok(Compose {
                flavour: Flavour::V1,
                version: version.trim().to_owned(),
            });
        }
        Err(usage(
            "no Docker Compose found: install the plugin (`apt-get install docker-compose-plugin`) \
             or the standalone tool (`apt-get install docker-compose`)",
        ))
    }

    /// `compose -p genesis -f <root>/docker-compose.yml`, ready for its subcommand.
    pub fn cmd<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        let file = project_root().join("docker-compose.yml");
        let base = match self.flavour {
            Flavour::V2 => cmd!(sh, "docker compose"),
            Flavour::V1 => cmd!(sh, "docker-compose"),
        };
        base.args(["-p", COMPOSE_PROJECT, "-f"]).arg(file)
    }

    pub fn describe(&self) -> String {
        match self.flavour {
            Flavour::V2 => format!("docker compose {} (v2)", self.version),
            Flavour::V1 => format!("docker-compose {} (v1)", self.version),
        }
    }
}
