//! A container as `docker inspect` describes it.

use anyhow::{Context, Result};
use genesis_model::{self as model};
use xshell::{Shell, cmd};

use super::run::{Owner, owner_of};

// ---- containers ---------------------------------------------------------------------------

/// A container as `docker inspect` describes it.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub service: String,
    pub project: String,
    /// `running`, `exited`, ...
    pub state: String,
    pub health: Option<String>,
    pub checkout: Option<String>,
    run: Option<String>,
    /// `(container port/proto, host ip, host port)` for each published port.
    pub ports: Vec<(String, String, u16)>,
}

impl Container {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    pub fn owner(&self) -> Owner {
        self.run.as_deref().map_or(Owner::Kept, owner_of)
    }

    /// The host port published for `container_port`.
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        let key = format!("{container_port}/tcp");
        self.ports
            .iter()
            .find(|(inner, _, _)| *inner == key)
            .map(|(_, _, port)| *port)
    }

    fn from_json(c: &serde_json::Value) -> Container {
        let labels = &c["Config"]["Labels"];
        let label = |key: &str| {
            labels[key]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut ports = Vec::new();
        if let Some(map) = c["NetworkSettings"]["Ports"].as_object() {
            for (inner, bindings) in map {
                for binding in bindings.as_array().into_iter().flatten() {
                    let ip = binding["HostIp"].as_str().unwrap_or_default().to_owned();
                    if let Some(port) = binding["HostPort"].as_str().and_then(|p| p.parse().ok()) {
                        ports.push((inner.clone(), ip, port));
                    }
                }
            }
        }
        ports.sort();
        Container {
            id: c["Id"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect(),
            name: c["Name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            service: label("com.docker.compose.service").unwrap_or_default(),
            project: label("com.docker.compose.project").unwrap_or_default(),
            state: c["State"]["Status"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            health: c["State"]["Health"]["Status"].as_str().map(str::to_owned),
            checkout: label(model::CHECKOUT_LABEL),
            run: label(model::RUN_LABEL),
            ports,
        }
    }
}

pub(super) fn inspect(sh: &Shell, ids: &[&str]) -> Result<Vec<Container>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = cmd!(sh, "docker inspect {ids...}")
        .quiet()
        .ignore_stderr()
        .ignore_status()
        .read()
        .context("inspect the containers")?;
    // A container removed between the listing and the inspection is simply not there.
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    Ok(list.iter().map(Container::from_json).collect())
}
