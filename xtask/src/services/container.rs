//! A container as `docker inspect` describes it.

use std::collections::BTreeMap;

use anyhow::Result;
use genesis_model::{self as model};
use serde::Deserialize;

use super::engine::Engine;
use super::run::{Owner, owner_of};

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

    /// The run label: who started the container (see [`super::run`]).
    pub(super) fn run_label(&self) -> Option<&str> {
        self.run.as_deref()
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

    fn from_inspect(c: Inspect) -> Container {
        let mut labels = c.config.labels.unwrap_or_default();
        let mut label = |key: &str| labels.remove(key).filter(|v| !v.is_empty());
        let service = label("com.docker.compose.service").unwrap_or_default();
        let project = label("com.docker.compose.project").unwrap_or_default();
        let checkout = label(model::CHECKOUT_LABEL);
        let run = label(model::RUN_LABEL);
        let mut ports = Vec::new();
        for (inner, bindings) in c.network_settings.ports.unwrap_or_default() {
            for binding in bindings.unwrap_or_default() {
                if let Ok(port) = binding.host_port.parse() {
                    ports.push((inner.clone(), binding.host_ip.clone(), port));
                }
            }
        }
        ports.sort();
        Container {
            id: c.id.chars().take(12).collect(),
            name: c.name.trim_start_matches('/').to_owned(),
            service,
            project,
            state: c.state.status.unwrap_or_else(|| "unknown".to_owned()),
            health: c.state.health.map(|h| h.status),
            checkout,
            run,
            ports,
        }
    }
}

/// The containers of `ids` as the engine describes them now. A container removed between
/// the listing and the inspection is simply not there.
pub(super) fn inspect(ids: &[&str]) -> Result<Vec<Container>> {
    let engine = Engine::get()?;
    let mut found = Vec::new();
    for id in ids {
        if let Some(c) = engine.inspect_container::<Inspect>(id)? {
            found.push(Container::from_inspect(c));
        }
    }
    Ok(found)
}

/// The part of `docker inspect`'s JSON that the xtask reads (Docker Engine API, `ContainerInspect`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Inspect {
    id: String,
    name: String,
    config: InspectConfig,
    state: InspectState,
    network_settings: InspectNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct InspectConfig {
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct InspectState {
    status: Option<String>,
    health: Option<InspectHealth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct InspectHealth {
    status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct InspectNetwork {
    /// `"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5433"}]`, `null` where nothing is
    /// published for that port.
    ports: Option<BTreeMap<String, Option<Vec<InspectBinding>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct InspectBinding {
    host_ip: String,
    host_port: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_json_is_read_into_a_container() {
        let json = r#"[{"Id": "0123456789abcdef", "Name": "/genesis-x-test-db-1",
            "Config": {"Labels": {"com.docker.compose.service": "test-db",
                "com.docker.compose.project": "genesis-x", "genesis.run": ""}},
            "State": {"Status": "running", "Health": {"Status": "healthy"}},
            "NetworkSettings": {"Ports": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}],
                "9000/tcp": null}}},
            {"Id": "fedcba", "Name": "/other", "Config": {"Labels": null}, "State": {},
             "NetworkSettings": {"Ports": {}}}]"#;
        let list: Vec<Inspect> = serde_json::from_str(json).unwrap();
        let c: Vec<Container> = list.into_iter().map(Container::from_inspect).collect();
        assert_eq!(c[0].id, "0123456789ab");
        assert_eq!(c[0].name, "genesis-x-test-db-1");
        assert_eq!(
            (c[0].service.as_str(), c[0].project.as_str()),
            ("test-db", "genesis-x")
        );
        assert_eq!(c[0].health.as_deref(), Some("healthy"));
        assert!(c[0].running());
        assert_eq!(c[0].host_port(5432), Some(49153));
        assert_eq!(c[0].host_port(9000), None);
        assert_eq!(c[1].state, "unknown");
        assert!(c[1].service.is_empty() && c[1].ports.is_empty());
    }
}
