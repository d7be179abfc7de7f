//! Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`), detected at run time, and
//! aimed at one stack.

use anyhow::{Context, Result};
use genesis_model::{self as model, IMAGES};
use xshell::{Cmd, Shell, cmd};

use crate::preflight;
use crate::services::{Service, Stack};
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
    /// The v2 plugin's version, which its probe prints anyway; v1's is asked only when shown.
    version: Option<String>,
}

impl Compose {
    /// Probes `docker compose version` first (`which` cannot see the v2 plugin), then looks
    /// for `docker-compose` on the PATH. v1 is a Python program that takes a quarter of a
    /// second to start, so it is not run just to be found.
    pub fn detect(sh: &Shell) -> Result<Compose> {
        if let Ok(version) = cmd!(sh, "docker compose version --short")
            .quiet()
            .ignore_stderr()
            .read()
        {
            return Ok(Compose {
                flavour: Flavour::V2,
                version: Some(version.trim().to_owned()),
            });
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        if std::env::split_paths(&path).any(|dir| dir.join("docker-compose").is_file()) {
            return Ok(Compose {
                flavour: Flavour::V1,
                version: None,
            });
        }
        Err(usage(
            "no Docker Compose found: install the plugin (`apt-get install docker-compose-plugin`) \
             or the standalone tool (`apt-get install docker-compose`)",
        ))
    }

    /// `compose -p <the stack's project> -f <root>/docker-compose.yml`, ready for its
    /// subcommand, with the stack's variables: the checkout label, and the host ports (the
    /// model's on the default stack, chosen by the engine on any other).
    ///
    /// Where the user has not chosen an image and the local drop-in built by `cargo xtask images`
    /// exists, the image variable points compose at the drop-in, so the same compose file works
    /// with public images on a normal machine and with local ones where no registry is reachable.
    pub fn cmd<'a>(&self, sh: &'a Shell, stack: &Stack) -> Cmd<'a> {
        let root = project_root();
        let file = root.join("docker-compose.yml");
        let mut base = match self.flavour {
            Flavour::V2 => cmd!(sh, "docker compose"),
            Flavour::V1 => cmd!(sh, "docker-compose"),
        };
        for image in IMAGES {
            if std::env::var_os(image.var).is_none() && preflight::image_present(sh, image.local) {
                base = base.env(image.var, image.local);
            }
        }
        for service in Service::ALL {
            let var = model::host_port_var(service.name());
            base = if stack.is_default() {
                base.env_remove(var)
            } else {
                base.env(var, "")
            };
        }
        base.env(model::CHECKOUT_VAR, &root)
            .env(model::USER_VAR, checkout_owner(&root))
            .env_remove(model::RUN_VAR)
            .args(["-p", stack.project(), "-f"])
            .arg(file)
    }

    /// The flavour and version, for reports. v1 is run to ask its version, which also tells
    /// whether the program found on the PATH works.
    pub fn describe(&self, sh: &Shell) -> Result<String> {
        match (self.flavour, &self.version) {
            (Flavour::V2, version) => Ok(format!(
                "docker compose {} (v2)",
                version.as_deref().unwrap_or("?")
            )),
            (Flavour::V1, _) => {
                let version = cmd!(sh, "docker-compose version --short").quiet().ignore_stderr().read().map_err(|_| {
                    usage("docker-compose is on the PATH but does not run: reinstall it (`apt-get install --reinstall docker-compose`)")
                })?;
                Ok(format!("docker-compose {} (v1)", version.trim()))
            }
        }
    }

    /// The host ports of every service of the default stack as the installed compose reads
    /// `docker-compose.yml` (`compose config`), so a quoting mistake that makes compose misread a
    /// port shows up here.
    pub fn published_ports(&self, sh: &Shell) -> Result<Vec<(String, Vec<u16>)>> {
        let out = self
            .cmd(sh, &Stack::default_stack())
            .arg("config")
            .quiet()
            .read()
            .context("compose rejected docker-compose.yml")?;
        let config: serde_json::Value =
            serde_saphyr::from_str(&out).context("compose config printed no YAML")?;
        let services = config["services"]
            .as_object()
            .context("compose config shows no services")?;
        let mut ports = Vec::new();
        for (name, service) in services {
            let published = service["ports"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|port| match port {
                            // v1 prints `127.0.0.1:5433:5432/tcp`, v2 the long syntax.
                            serde_json::Value::String(short) => {
                                short.split(':').rev().nth(1)?.parse().ok()
                            }
                            long => long["published"].to_string().trim_matches('"').parse().ok(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ports.push((name.clone(), published));
        }
        Ok(ports)
    }
}

/// `uid:gid` of the checkout's owner, whom the `genesis-api` container runs as.
fn checkout_owner(root: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(root) {
        Ok(meta) => format!("{}:{}", meta.uid(), meta.gid()),
        // Unreadable root: compose's own default (root) rather than a guess.
        Err(_) => "0:0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_accepts_the_file_and_publishes_the_model_ports() {
        let sh = Shell::new().unwrap();
        let compose = Compose::detect(&sh).expect("this test needs Docker Compose installed");
        let ports = compose.published_ports(&sh).unwrap();
        let get = |service: &str| {
            ports
                .iter()
                .find(|(s, _)| s == service)
                .map(|(_, p)| p.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("test-db"), [5433]);
        assert_eq!(get("postgres"), [5435]);
        assert_eq!(get("redis"), [model::REDIS.host_address.port]);
    }
}
