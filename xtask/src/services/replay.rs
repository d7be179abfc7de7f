//! Starting a service again as compose started it last time, through the Engine API.
//!
//! Compose's own `up` is most of a start: 0.3 to 0.4 s under v2 and 0.7 to 0.9 s under v1 for
//! one service, about as much as the engine takes to start the container itself. So after
//! compose has made a service's container once, the container's creation as the engine
//! recorded it (its configuration, host configuration, network and aliases, and the volume
//! and network it joined) is kept in the stack's state folder with the key of everything
//! compose read to make it: the compose file, `.env`, the value of every variable the file
//! names, the compose program. While that key and the image hold, the next start creates the
//! same container (same name, labels, mounts and ports, the run label of this run) and starts
//! it with a few engine calls; compose sees its own container (`ps`, `logs`, `exec`, `down`).
//! Anything else (a key that changed, a container of the service that exists, an engine that
//! refuses) goes through compose, which records the container anew.
//!
//! The record holds the container's environment, the dev database's password among it: it
//! is written owner-only beside the other state of the stack (git-ignored), as `.env` is.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use genesis_model::{self as model, Service};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use xshell::Shell;

use super::compose::Compose;
use super::engine::Engine;
use super::stack::Stack;
use crate::tools::util::project_root;

/// Bumped when what a record holds, or how it is read, changes.
const FORMAT: &str = "genesis-replay v1";

/// How one service's container was made, and under which key.
#[derive(Debug, Deserialize, Serialize)]
pub(super) struct Record {
    key: String,
    name: String,
    /// The id of the image the container was made from: a rebuilt image is a new start.
    image_id: String,
    config: Value,
    host_config: Value,
    networks: Vec<NetworkRecord>,
    volumes: Vec<Value>,
}

#[derive(Debug, Deserialize, Serialize)]
struct NetworkRecord {
    name: String,
    aliases: Vec<String>,
    /// The body of the network's creation, from its inspection.
    create: Value,
}

/// The records of one stack under the key of this command's compose.
pub(super) struct Replay {
    dir: PathBuf,
    key: String,
    /// `v1` or `v2`: each flavour's records are its own, so that a machine that runs both
    /// (CI, the bench) does not make each one's records stale for the other.
    flavour: &'static str,
}

impl Replay {
    /// The key of everything compose reads to make the stack's containers.
    pub(super) fn new(sh: &Shell, compose: &Compose, stack: &Stack) -> Result<Replay> {
        let root = project_root();
        let file = root.join("docker-compose.yml");
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let mut hash = Sha256::new();
        hash.update(FORMAT);
        hash.update(compose.identity());
        hash.update(stack.project());
        hash.update(&text);
        hash.update(std::fs::read(root.join(".env")).unwrap_or_default());
        // Every variable the file names, as compose gets it: set or removed by the command
        // compose runs as, else inherited (the run's own label excepted: it is this run's).
        let command = std::process::Command::from(compose.cmd(sh, stack));
        let explicit: BTreeMap<_, _> = command.get_envs().collect();
        for var in referenced_vars(&text) {
            if var == model::RUN_VAR {
                continue;
            }
            let value = match explicit.get(std::ffi::OsStr::new(&var)) {
                Some(set) => set.map(|v| v.to_os_string()),
                None => std::env::var_os(&var),
            };
            hash.update(format!("{var}\0{value:?}\0"));
        }
        let key = hash
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Replay {
            dir: stack.state_dir().join("replay"),
            key,
            flavour: match compose.flavour {
                super::compose::Flavour::V1 => "v1",
                super::compose::Flavour::V2 => "v2",
            },
        })
    }

    fn path(&self, service: Service) -> PathBuf {
        self.dir
            .join(format!("{}.{}.json", service.name(), self.flavour))
    }

    /// The record of `service`, if one was made under this key from the image compose would
    /// use now.
    pub(super) fn load(&self, engine: &Engine, service: Service) -> Option<Record> {
        let text = std::fs::read(self.path(service)).ok()?;
        let record: Record = serde_json::from_slice(&text).ok()?;
        if record.key != self.key {
            return None;
        }
        let image = record.config["Image"].as_str()?;
        let current = engine.image(image).ok()??;
        (current.id == record.image_id).then_some(record)
    }

    /// Records how compose made the container `id` of `service`.
    pub(super) fn capture(&self, engine: &Engine, service: Service, id: &str) -> Result<()> {
        let inspect = engine
            .inspect_json("containers", id)?
            .context("the container compose started is gone")?;
        let full_id = inspect["Id"].as_str().unwrap_or_default();
        let short_id: String = full_id.chars().take(12).collect();
        let mut config = inspect["Config"].clone();
        if let Some(config) = config.as_object_mut() {
            // The engine names the host after the container; compose sets none here.
            config.remove("Hostname");
        }
        let mut networks = Vec::new();
        if let Some(attached) = inspect["NetworkSettings"]["Networks"].as_object() {
            for (name, endpoint) in attached {
                let aliases = endpoint["Aliases"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_str)
                            .filter(|a| *a != short_id && !full_id.starts_with(a))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                let network = engine
                    .inspect_json("networks", name)?
                    .with_context(|| format!("network {name} is gone"))?;
                networks.push(NetworkRecord {
                    name: name.clone(),
                    aliases,
                    create: json!({
                        "Name": name,
                        "CheckDuplicate": true,
                        "Driver": network["Driver"],
                        "Labels": network["Labels"],
                        "Options": network["Options"],
                        "Internal": network["Internal"],
                        "Attachable": network["Attachable"],
                        "EnableIPv6": network["EnableIPv6"],
                    }),
                });
            }
        }
        let mut volumes = Vec::new();
        for mount in inspect["Mounts"].as_array().into_iter().flatten() {
            if mount["Type"] != "volume" {
                continue;
            }
            let Some(name) = mount["Name"].as_str() else {
                continue;
            };
            // Named volumes of compose; an anonymous one comes with the container.
            let Some(volume) = engine.inspect_json("volumes", name)? else {
                continue;
            };
            if volume["Labels"]["com.docker.compose.volume"].is_string() {
                volumes.push(json!({
                    "Name": name,
                    "Driver": volume["Driver"],
                    "Labels": volume["Labels"],
                }));
            }
        }
        let record = Record {
            key: self.key.clone(),
            name: inspect["Name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image_id: inspect["Image"].as_str().unwrap_or_default().to_owned(),
            config,
            host_config: inspect["HostConfig"].clone(),
            networks,
            volumes,
        };
        if record.name.is_empty() || record.image_id.is_empty() {
            bail!("the engine described container {id} without a name or image");
        }
        self.write(service, &record)
    }

    /// Written owner-only, then renamed into place: a reader sees a whole record or none.
    fn write(&self, service: Service, record: &Record) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create {}", self.dir.display()))?;
        let path = self.path(service);
        let tmp = path.with_extension(format!("partial-{}", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&serde_json::to_vec(record)?)?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("write {}", path.display()))
    }

    /// Forgets the record of `service` (its replay failed: compose makes it again).
    pub(super) fn forget(&self, service: Service) {
        let _ = std::fs::remove_file(self.path(service));
    }
}

/// Creates the containers of `records` as their records say, labelled with `run_label`, the
/// network and volumes they need first, and starts them all at once; the ids, by service.
/// On failure, what it created is removed (a network or volume made here stays for compose).
pub(super) fn start(
    engine: &Engine,
    records: &[(Service, Record)],
    run_label: &str,
) -> Result<Vec<(Service, String)>> {
    for (_, record) in records {
        for network in &record.networks {
            if engine.inspect_json("networks", &network.name)?.is_none() {
                engine
                    .create("/networks/create", &network.create)
                    .with_context(|| format!("create network {}", network.name))?;
            }
        }
        for volume in &record.volumes {
            let name = volume["Name"].as_str().unwrap_or_default();
            if !engine.volume_exists(name)? {
                engine
                    .create("/volumes/create", volume)
                    .with_context(|| format!("create volume {name}"))?;
            }
        }
    }
    let mut created: Vec<(Service, String)> = Vec::new();
    let made = (|| -> Result<()> {
        for (service, record) in records {
            let mut body = record.config.clone();
            body["Labels"][model::RUN_LABEL] = json!(run_label);
            body["HostConfig"] = record.host_config.clone();
            // The create call joins one network; any other is joined before the start.
            if let Some(first) = record.networks.first() {
                body["NetworkingConfig"] = json!({
                    "EndpointsConfig": { first.name.clone(): { "Aliases": first.aliases } }
                });
            }
            let path = format!(
                "/containers/create?name={}",
                percent_encoding::utf8_percent_encode(
                    &record.name,
                    percent_encoding::NON_ALPHANUMERIC
                )
            );
            let answer = engine
                .create(&path, &body)
                .with_context(|| format!("create container {}", record.name))?;
            let id = answer["Id"]
                .as_str()
                .context("the engine created a container without an id")?
                .to_owned();
            created.push((*service, id.clone()));
            for network in record.networks.iter().skip(1) {
                engine
                    .create(
                        &format!("/networks/{}/connect", network.name),
                        &json!({ "Container": id, "EndpointConfig": { "Aliases": network.aliases } }),
                    )
                    .with_context(|| format!("join network {}", network.name))?;
            }
        }
        // The compose file's dependencies are `service_started`, which orders the starts and
        // waits for none of them. A database takes longest to be ready after its start (its
        // entrypoint and server, ~0.25 s), so it is started first, alone, and the others
        // while it comes up: all at once, they share the engine and the CPU and the database
        // is ready later (services 1.5 s against 1.2 s of the main job here).
        let (databases, others): (Vec<_>, Vec<_>) =
            created.iter().partition(|(s, _)| s.env().is_some());
        for batch in [databases, others] {
            std::thread::scope(|scope| {
                let starts: Vec<_> = batch
                    .iter()
                    .map(|(_, id)| scope.spawn(move || engine.start_container(id)))
                    .collect();
                starts
                    .into_iter()
                    .try_for_each(|s| s.join().unwrap_or_else(|_| bail!("a start panicked")))
            })?;
        }
        Ok(())
    })();
    if let Err(err) = made {
        for (_, id) in &created {
            let _ = engine.remove_container(id);
        }
        return Err(err);
    }
    Ok(created)
}

/// The variables `${NAME...}` of a compose file.
fn referenced_vars(text: &str) -> Vec<String> {
    let mut vars: Vec<String> = text
        .split("${")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_of_a_compose_file_are_found() {
        let text = "image: ${GENESIS_POSTGRES_IMAGE:-postgres:15}\n\
                    ports: [\"127.0.0.1:${GENESIS_TEST_DB_PORT-5433}:5432\"]\n\
                    password: ${POSTGRES_PASSWORD:?run db-up}\nx: $${NOT_A_VAR} ${GENESIS_RUN:-}";
        assert_eq!(
            referenced_vars(text),
            [
                "GENESIS_POSTGRES_IMAGE",
                "GENESIS_RUN",
                "GENESIS_TEST_DB_PORT",
                "NOT_A_VAR",
                "POSTGRES_PASSWORD"
            ]
        );
    }
}
