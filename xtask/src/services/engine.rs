//! The Docker engine asked directly, over its API socket: the listings, inspections and
//! removals that every command makes several times. A `docker` call costs a process start
//! (15 to 60 ms here, more on a loaded machine); the same question on the socket costs about a
//! millisecond. What streams (`run`, `exec`, `logs`, `build`, `import`, `pull`) stays with the
//! `docker` client, and compose with compose.
//!
//! The engine is the one the `docker` client would use: `DOCKER_HOST`, else the context named by
//! `DOCKER_CONTEXT` or the client configuration's `currentContext`, else the default socket.
//! Only plain endpoints are spoken here, a Unix socket or `tcp://` without TLS: the services
//! publish their ports on this machine's loopback, which a remote engine (`ssh://`, TLS) would
//! not, so such an engine is refused with the reason rather than half-used.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::http::exchange;
use crate::tools::util::usage;

/// How long a question may take: the engine answers listings at once, even when busy.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a removal may take (a `--force` removal stops the container first).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Characters left as they are in a path segment or a query value; the rest is escaped.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// An image reference keeps its `/`, `:` and `@` (the engine's route takes the rest of the path).
const KEEP_IN_IMAGE: &AsciiSet = &KEEP.remove(b'/').remove(b':').remove(b'@');

/// Where the engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

/// The Docker engine of this machine, as the `docker` client would reach it.
#[derive(Debug)]
pub struct Engine {
    endpoint: Endpoint,
    /// How the engine was chosen, for messages: its address, and the context that names it.
    described: String,
}

/// One answer: its status and its body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!("the Docker engine's answer to {what} is not what was expected")
        })
    }

    /// The engine's own message (`{"message": "..."}`), or the body as it is.
    fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Message {
            message: String,
        }
        serde_json::from_slice::<Message>(&self.body).map_or_else(
            |_| String::from_utf8_lossy(&self.body).trim().to_owned(),
            |m| m.message,
        )
    }
}

/// A container of a listing: its id.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Listed {
    pub id: String,
}

/// An image as the engine describes it: its id and the labels of its configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub config: ImageConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    pub labels: Option<BTreeMap<String, String>>,
}

impl ImageInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.config.labels.as_ref()?.get(key).map(String::as_str)
    }
}

impl Engine {
    /// The engine, resolved once per command.
    pub fn get() -> Result<&'static Engine> {
        static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
        ENGINE
            .get_or_init(|| Engine::resolve().map_err(|err| format!("{err:#}")))
            .as_ref()
            .map_err(|err| usage(err.clone()))
    }

    fn resolve() -> Result<Engine> {
        if let Some(host) = std::env::var_os("DOCKER_HOST").filter(|h| !h.is_empty()) {
            let host = host.to_string_lossy().into_owned();
            let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
            return Engine::of_host(&host, tls, host.clone());
        }
        let config = client_config_dir();
        let context = std::env::var("DOCKER_CONTEXT")
            .ok()
            .filter(|c| !c.is_empty())
            .or_else(|| current_context(&config));
        match context.as_deref() {
            None | Some("default") => Ok(Engine {
                endpoint: Endpoint::Unix(PathBuf::from("/var/run/docker.sock")),
                described: "unix:///var/run/docker.sock".to_owned(),
            }),
            Some(name) => {
                let (host, tls) = context_host(&config, name)?;
                Engine::of_host(&host, tls, format!("{host} (context {name})"))
            }
        }
    }

    fn of_host(host: &str, tls: bool, described: String) -> Result<Engine> {
        let endpoint = if let Some(path) = host.strip_prefix("unix://") {
            Endpoint::Unix(PathBuf::from(path))
        } else if let Some(address) = host.strip_prefix("tcp://") {
            if tls {
                bail!(
                    "the Docker engine at {described} is reached over TLS, which the xtask does \
                     not speak: point DOCKER_HOST at the engine's Unix socket on this machine \
                     (the services publish their ports on its loopback)"
                );
            }
            Endpoint::Tcp(address.trim_end_matches('/').to_owned())
        } else {
            bail!(
                "the Docker engine at {described} is not one the xtask can use: the services \
                 publish their ports on this machine's loopback, so the engine must run here, \
                 reached through a Unix socket (`unix:///var/run/docker.sock`) or plain `tcp://`"
            );
        };
        Ok(Engine {
            endpoint,
            described,
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer> {
        let answer = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = UnixStream::connect(socket).map_err(|err| self.unreachable(&err))?;
                stream.set_read_timeout(Some(timeout))?;
                exchange(stream, method, path, body)
            }
            Endpoint::Tcp(address) => {
                let stream =
                    std::net::TcpStream::connect(address).map_err(|err| self.unreachable(&err))?;
                stream.set_read_timeout(Some(timeout))?;
                exchange(stream, method, path, body)
            }
        };
        let (status, body) = answer.with_context(|| {
            format!("{method} {path} on the Docker engine at {}", self.described)
        })?;
        Ok(Answer { status, body })
    }

    /// `method path` with no body, an answer of one of `ok` being success; any other is an
    /// error saying `what` could not be done, with the engine's own message.
    fn call(
        &self,
        method: &str,
        path: &str,
        timeout: Duration,
        ok: &[u16],
        what: &str,
    ) -> Result<()> {
        let answer = self.request(method, path, None, timeout)?;
        if ok.contains(&answer.status) {
            return Ok(());
        }
        bail!("could not {what} ({}: {})", answer.status, answer.message())
    }

    fn unreachable(&self, err: &std::io::Error) -> anyhow::Error {
        usage(format!(
            "the Docker daemon at {} does not answer ({err}): start it (`systemctl start docker` \
             or `dockerd &`), or point DOCKER_HOST at a running one",
            self.described
        ))
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str, what: &str) -> Result<T> {
        let answer = self.request("GET", path, None, QUERY_TIMEOUT)?;
        if answer.status != 200 {
            bail!(
                "the Docker engine refused to {what} ({}: {})",
                answer.status,
                answer.message()
            );
        }
        answer.json(what)
    }

    /// The engine's version: also the proof that it answers.
    pub fn version(&self) -> Result<String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Version {
            version: String,
        }
        Ok(self
            .get_json::<Version>("/version", "tell its version")?
            .version)
    }

    /// The containers carrying every label of `labels` (`key=value`, or a bare key), running
    /// or not with `all`, and publishing `publish` when given.
    pub fn containers(
        &self,
        labels: &[&str],
        publish: Option<u16>,
        all: bool,
    ) -> Result<Vec<Listed>> {
        let mut filters = serde_json::Map::new();
        if !labels.is_empty() {
            filters.insert("label".into(), serde_json::json!(labels));
        }
        if let Some(port) = publish {
            filters.insert("publish".into(), serde_json::json!([port.to_string()]));
        }
        let path = format!(
            "/containers/json?all={}&filters={}",
            if all { 1 } else { 0 },
            escape(&serde_json::Value::Object(filters).to_string())
        );
        self.get_json(&path, "list the containers")
    }

    /// A container as `docker inspect` shows it (the same JSON); `None` once it is gone.
    pub fn inspect_container<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>> {
        let path = format!("/containers/{}/json", escape(id));
        let answer = self.request("GET", &path, None, QUERY_TIMEOUT)?;
        match answer.status {
            200 => answer.json("inspect a container").map(Some),
            404 => Ok(None),
            status => bail!(
                "the Docker engine could not inspect container {id} ({status}: {})",
                answer.message()
            ),
        }
    }

    /// The engine's JSON of one object (`kind` is `containers`, `networks` or `volumes`), as
    /// `docker inspect` prints it; `None` when there is no such object.
    pub fn inspect_json(&self, kind: &str, name: &str) -> Result<Option<serde_json::Value>> {
        let path = match kind {
            "containers" => format!("/containers/{}/json", escape(name)),
            _ => format!("/{kind}/{}", escape(name)),
        };
        let answer = self.request("GET", &path, None, QUERY_TIMEOUT)?;
        match answer.status {
            200 => answer.json("inspect an object").map(Some),
            404 => Ok(None),
            status => bail!(
                "the Docker engine could not inspect {kind} {name} ({status}: {})",
                answer.message()
            ),
        }
    }

    /// `POST path` with a JSON body, for the engine's `create` calls; the JSON it answers.
    pub fn create(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let answer = self.request("POST", path, Some(&body.to_string()), QUERY_TIMEOUT)?;
        match answer.status {
            200 | 201 => answer.json("a create call"),
            status => bail!(
                "the Docker engine refused {path} ({status}: {})",
                answer.message()
            ),
        }
    }

    /// Starts a created container.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let path = format!("/containers/{}/start", escape(id));
        // 304: it runs already.
        let what = format!("start container {id}");
        self.call("POST", &path, REMOVE_TIMEOUT, &[204, 304], &what)
    }

    /// Stops a container, giving it `grace` before the kill (`docker stop -t`).
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let path = format!("/containers/{}/stop?t={}", escape(id), grace.as_secs());
        // 304: it was not running; 404: it is gone.
        let what = format!("stop container {id}");
        self.call(
            "POST",
            &path,
            REMOVE_TIMEOUT + grace,
            &[204, 304, 404],
            &what,
        )
    }

    /// Removes a container, running or not, with its anonymous volumes (`docker rm -f -v`).
    /// One that is already gone, or already being removed, is no error.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let path = format!("/containers/{}?force=1&v=1", escape(id));
        let answer = self.request("DELETE", &path, None, REMOVE_TIMEOUT)?;
        match answer.status {
            204 | 404 => Ok(()),
            409 if answer.message().contains("already in progress") => Ok(()),
            status => bail!(
                "could not remove container {id} ({status}: {})",
                answer.message()
            ),
        }
    }

    /// The names of the volumes carrying the label `label`.
    pub fn volumes(&self, label: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Volumes {
            volumes: Option<Vec<Volume>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Volume {
            name: String,
        }
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let path = format!("/volumes?filters={}", escape(&filters));
        let list: Volumes = self.get_json(&path, "list the volumes")?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// Whether a volume of that exact name exists.
    pub fn volume_exists(&self, name: &str) -> Result<bool> {
        let path = format!("/volumes/{}", escape(name));
        let answer = self.request("GET", &path, None, QUERY_TIMEOUT)?;
        match answer.status {
            200 => Ok(true),
            404 => Ok(false),
            status => bail!(
                "the Docker engine could not inspect volume {name} ({status}: {})",
                answer.message()
            ),
        }
    }

    /// Removes the volume of that exact name; whether there was one. A volume a container
    /// still uses is refused by the engine, with its message.
    pub fn remove_volume(&self, name: &str) -> Result<bool> {
        let path = format!("/volumes/{}", escape(name));
        let answer = self.request("DELETE", &path, None, REMOVE_TIMEOUT)?;
        match answer.status {
            204 => Ok(true),
            404 => Ok(false),
            status => bail!(
                "could not remove volume {name} ({status}: {})",
                answer.message()
            ),
        }
    }

    /// `(id, name)` of the networks carrying the label `label`.
    pub fn networks(&self, label: &str) -> Result<Vec<(String, String)>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Network {
            id: String,
            name: String,
        }
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let path = format!("/networks?filters={}", escape(&filters));
        let list: Vec<Network> = self.get_json(&path, "list the networks")?;
        Ok(list.into_iter().map(|n| (n.id, n.name)).collect())
    }

    /// Removes a network; one already gone is no error.
    pub fn remove_network(&self, id: &str) -> Result<()> {
        let path = format!("/networks/{}", escape(id));
        let what = format!("remove network {id}");
        self.call("DELETE", &path, REMOVE_TIMEOUT, &[204, 404], &what)
    }

    /// An image by reference (`name:tag`, or an id); `None` when the engine has none.
    pub fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        let path = format!(
            "/images/{}/json",
            utf8_percent_encode(reference, KEEP_IN_IMAGE)
        );
        let answer = self.request("GET", &path, None, QUERY_TIMEOUT)?;
        match answer.status {
            200 => answer.json("inspect an image").map(Some),
            // 400: not a valid reference, so no such image either.
            404 | 400 => Ok(None),
            status => bail!(
                "the Docker engine could not inspect image {reference} ({status}: {})",
                answer.message()
            ),
        }
    }

    /// Removes an image by id or reference, unless a container uses it; whether it went.
    pub fn remove_image(&self, reference: &str) -> Result<bool> {
        let path = format!("/images/{}", utf8_percent_encode(reference, KEEP_IN_IMAGE));
        let answer = self.request("DELETE", &path, None, REMOVE_TIMEOUT)?;
        Ok(answer.status == 200)
    }
}

fn escape(value: &str) -> String {
    utf8_percent_encode(value, KEEP).to_string()
}

/// The `docker` client's configuration folder: `DOCKER_CONFIG`, else `~/.docker`.
pub(super) fn client_config_dir() -> PathBuf {
    client_config_dir_of(std::env::var_os("DOCKER_CONFIG"))
}

/// The same, for the value of `DOCKER_CONFIG` a command runs with (a shell may set its own).
pub(super) fn client_config_dir_of(docker_config: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dir) = docker_config.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".docker")
}

/// The `currentContext` of the client's `config.json`, if it names one.
fn current_context(config: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(rename = "currentContext", default)]
        current_context: Option<String>,
    }
    let text = std::fs::read(config.join("config.json")).ok()?;
    serde_json::from_slice::<Config>(&text)
        .ok()?
        .current_context
        .filter(|c| !c.is_empty())
}

/// The Docker endpoint of the context `name`, and whether it carries TLS material: the
/// client keeps it in `contexts/meta/<sha256 of the name>/meta.json`.
fn context_host(config: &Path, name: &str) -> Result<(String, bool)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Meta {
        endpoints: BTreeMap<String, ContextEndpoint>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ContextEndpoint {
        host: Option<String>,
    }
    let digest = hex(&Sha256::digest(name.as_bytes()));
    let meta = config.join("contexts/meta").join(&digest).join("meta.json");
    let text = std::fs::read(&meta).with_context(|| {
        format!(
            "the Docker context {name:?} (DOCKER_CONTEXT or currentContext in {}) has no \
             metadata at {}: `docker context ls` lists the contexts",
            config.join("config.json").display(),
            meta.display()
        )
    })?;
    let meta: Meta = serde_json::from_slice(&text)
        .with_context(|| format!("read the Docker context {name:?} at {}", meta.display()))?;
    let host = meta
        .endpoints
        .get("docker")
        .and_then(|e| e.host.clone())
        .with_context(|| format!("the Docker context {name:?} names no docker endpoint"))?;
    let tls = config
        .join("contexts/tls")
        .join(&digest)
        .join("docker")
        .is_dir();
    Ok((host, tls))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_as_the_docker_client_reads_them() {
        let unix = Engine::of_host("unix:///run/user/1000/docker.sock", false, String::new());
        assert_eq!(
            unix.unwrap().endpoint,
            Endpoint::Unix(PathBuf::from("/run/user/1000/docker.sock"))
        );
        let tcp = Engine::of_host("tcp://127.0.0.1:2375", false, String::new());
        assert_eq!(
            tcp.unwrap().endpoint,
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert!(Engine::of_host("tcp://127.0.0.1:2376", true, "x".into()).is_err());
        assert!(Engine::of_host("ssh://me@far", false, "x".into()).is_err());
        assert!(Engine::of_host("npipe:////./pipe/docker_engine", false, "x".into()).is_err());
    }

    #[test]
    fn a_context_is_found_under_the_digest_of_its_name() {
        let dir = std::env::temp_dir().join(format!("genesis-ctx-{}", std::process::id()));
        let digest = hex(&Sha256::digest(b"desk"));
        let meta = dir.join("contexts/meta").join(&digest);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"desk","Metadata":{},"Endpoints":{"docker":{"Host":"unix:///home/u/.docker/desktop/docker.sock","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("config.json"), r#"{"currentContext":"desk"}"#).unwrap();
        assert_eq!(current_context(&dir).as_deref(), Some("desk"));
        assert_eq!(
            context_host(&dir, "desk").unwrap(),
            (
                "unix:///home/u/.docker/desktop/docker.sock".to_owned(),
                false
            )
        );
        assert!(context_host(&dir, "other").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn filters_and_names_are_escaped_for_the_path() {
        assert_eq!(
            escape(r#"{"label":["a=b c"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%20c%22%5D%7D"
        );
        assert_eq!(
            utf8_percent_encode("genesis-local/postgres:15", KEEP_IN_IMAGE).to_string(),
            "genesis-local/postgres:15"
        );
    }
}
