//! Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`), detected at run time, and
//! aimed at one stack.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use genesis_model::{self as model, IMAGES};
use xshell::{Cmd, Shell, cmd};

use super::engine::client_config_dir_of;
use super::images;
use super::stack::Stack;
use crate::tools::util::{project_root, usage};
use genesis_model::Service;

/// The DOCKER_CONFIG folder holding the Compose v2 plugin where the machine's `docker` has
/// none (`.ci/run` sets it), so that CI and the oracle tests run both flavours.
pub const V2_VAR: &str = "GENESIS_COMPOSE_V2_DOCKER_CONFIG";

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
    /// The v2 plugin's version, where its probe printed it; otherwise asked only when shown.
    version: Option<String>,
    /// The v2 plugin's own program, where it was found where the `docker` client looks for
    /// it: run directly, it is the same Compose without the client's start in front of every
    /// call (about 50 ms each).
    plugin: Option<PathBuf>,
}

impl Compose {
    /// Looks for the v2 plugin where the `docker` client does (its configuration folder's
    /// `cli-plugins`, then the system's), then for `docker-compose` (v1) on the PATH, and
    /// only then asks `docker compose version`. Neither is run just to be found: v1 is a
    /// Python program that takes a quarter of a second to start.
    pub fn detect(sh: &Shell) -> Result<Compose> {
        let compose = Compose::find(sh)?;
        // What compose typed by hand in the checkout reads too (see `dotenv`).
        crate::services::dotenv::sync()?;
        Ok(compose)
    }

    /// Compose v2 as the `docker` client with the configuration folder `config` finds it,
    /// if that folder or the system holds the plugin (`bench` measures it beside v1).
    pub fn v2_of(config: &Path) -> Option<Compose> {
        v2_plugin(config).map(|plugin| Compose {
            flavour: Flavour::V2,
            version: None,
            plugin: Some(plugin),
        })
    }

    fn find(sh: &Shell) -> Result<Compose> {
        // The folder the compose commands will run with: the shell's, which may set its own.
        if let Some(plugin) = v2_plugin(&client_config_dir_of(sh.var_os("DOCKER_CONFIG"))) {
            return Ok(Compose {
                flavour: Flavour::V2,
                version: None,
                plugin: Some(plugin),
            });
        }
        // The standalone v1 before asking `docker compose`: the plugin is not in the
        // client's folders, so the probe (a process start) only finds one placed elsewhere.
        if which::which("docker-compose").is_ok() {
            return Ok(Compose {
                flavour: Flavour::V1,
                version: None,
                plugin: None,
            });
        }
        if let Ok(version) = cmd!(sh, "docker compose version --short")
            .quiet()
            .ignore_stderr()
            .read()
        {
            return Ok(Compose {
                flavour: Flavour::V2,
                version: Some(version.trim().to_owned()),
                plugin: None,
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
        let mut base = self.program(sh);
        for image in IMAGES {
            if std::env::var_os(image.var).is_none() && images::image_present(image.local) {
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
            .env(
                model::TEST_DB_TLS.dir_var,
                crate::services::dotenv::tls_dir_value(),
            )
            .env(model::USER_VAR, super::dotenv::checkout_owner(&root))
            .env_remove(model::RUN_VAR)
            .args(["-p", stack.project(), "-f"])
            .arg(file)
    }

    /// Which compose program this is, for a key that changes when compose does: its flavour,
    /// and the path, size and modification time of its program.
    pub(super) fn identity(&self) -> String {
        let program = match (self.flavour, &self.plugin) {
            (_, Some(plugin)) => Some(plugin.clone()),
            (Flavour::V1, None) => which::which("docker-compose").ok(),
            (Flavour::V2, None) => which::which("docker").ok(),
        };
        let stamp = program.as_ref().and_then(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.len(), meta.modified().ok()?))
        });
        format!(
            "{:?} {program:?} {stamp:?} {:?}",
            self.flavour, self.version
        )
    }

    /// Whether compose accepts the stack's `docker-compose.yml` (`compose config -q`).
    pub fn check_file(&self, sh: &Shell, stack: &Stack) -> Result<()> {
        self.cmd(sh, stack)
            .args(["config", "-q"])
            .quiet()
            .ignore_stderr()
            .run()
            .context("compose config")
    }

    /// The flavour and version, for reports. v1 is run to ask its version, which also tells
    /// whether the program found on the PATH works.
    pub fn describe(&self, sh: &Shell) -> Result<String> {
        match (self.flavour, &self.version) {
            (Flavour::V2, Some(version)) => Ok(format!("docker compose {version} (v2)")),
            (Flavour::V2, None) => {
                let version = self
                    .program(sh)
                    .args(["version", "--short"])
                    .quiet()
                    .ignore_stderr()
                    .read()
                    .map_err(|_| {
                        usage(format!(
                            "the Compose v2 plugin {} does not run: reinstall it \
                             (`apt-get install --reinstall docker-compose-plugin`)",
                            self.plugin.as_deref().unwrap_or(Path::new("?")).display()
                        ))
                    })?;
                Ok(format!("docker compose {} (v2)", version.trim()))
            }
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
        // The file requires the dev password; its shape does not depend on it, and the real
        // one has no business in this read.
        let config = self.config(
            sh,
            self.cmd(sh, &Stack::default_stack())
                .env(model::PASSWORD_VAR, "not-the-password"),
            "docker-compose.yml",
        )?;
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

    /// `docker compose` or `docker-compose`, with nothing else set.
    fn program<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        match (self.flavour, &self.plugin) {
            (Flavour::V2, Some(plugin)) => cmd!(sh, "{plugin}"),
            (Flavour::V2, None) => cmd!(sh, "docker compose"),
            (Flavour::V1, _) => cmd!(sh, "docker-compose"),
        }
    }

    /// What compose makes of `file`, which `compose` (a compose command up to its subcommand)
    /// names: the output of its `config`, as JSON. v2 prints JSON itself; v1 prints only YAML,
    /// which is read with v1's own YAML library (PyYAML, through the Python that runs v1), so
    /// that the reading is compose's own.
    fn config(&self, sh: &Shell, compose: Cmd<'_>, file: &str) -> Result<serde_json::Value> {
        let rejected = || format!("compose rejected {file}");
        let json = match self.flavour {
            Flavour::V2 => compose
                .args(["config", "--format", "json"])
                .quiet()
                .read()
                .with_context(rejected)?,
            Flavour::V1 => {
                let yaml = compose
                    .arg("config")
                    .quiet()
                    .read()
                    .with_context(rejected)?;
                v1_yaml_to_json(sh, &yaml)?
            }
        };
        serde_json::from_str(&json).context("compose config printed no JSON")
    }
}

/// The Compose v2 plugin where the `docker` client finds it on Linux: `cli-plugins` of its
/// configuration folder, the extra folders its `config.json` names (`cliPluginsExtraDirs`),
/// then the system's folders, in that order.
fn v2_plugin(config: &Path) -> Option<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "cliPluginsExtraDirs", default)]
        extra: Vec<PathBuf>,
    }
    let extra = std::fs::read(config.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<Config>(&text).ok())
        .map(|c| c.extra)
        .unwrap_or_default();
    let system = [
        "/usr/local/lib/docker/cli-plugins",
        "/usr/local/libexec/docker/cli-plugins",
        "/usr/lib/docker/cli-plugins",
        "/usr/libexec/docker/cli-plugins",
    ];
    std::iter::once(config.join("cli-plugins"))
        .chain(extra)
        .chain(system.iter().map(PathBuf::from))
        .map(|dir| dir.join("docker-compose"))
        .find(|program| {
            std::fs::metadata(program)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `yaml` as JSON, read by PyYAML under the Python interpreter of the `docker-compose` script
/// (its `#!` line).
fn v1_yaml_to_json(sh: &Shell, yaml: &str) -> Result<String> {
    const SCRIPT: &str = "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)";
    let script = which::which("docker-compose").context("docker-compose is not on the PATH")?;
    let shebang = interpreter_line(&script)?;
    let mut words = shebang.split_whitespace();
    let interpreter = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let out = cmd!(sh, "{interpreter} {args...} -c {SCRIPT}")
        .stdin(yaml)
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run {shebang}, the Python of {}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(usage(format!(
            "{shebang} (the Python of {}) cannot read its `config` output with PyYAML: {}",
            script.display(),
            stderr.trim().lines().last().unwrap_or("no message")
        )));
    }
    String::from_utf8(out.stdout).context("PyYAML printed no UTF-8")
}

/// The `#!` line of `script` (without the `#!`), or an error saying it is no script.
fn interpreter_line(script: &Path) -> Result<String> {
    use std::io::Read;

    let mut head = Vec::new();
    std::fs::File::open(script)
        .and_then(|file| file.take(512).read_to_end(&mut head))
        .with_context(|| format!("read {}", script.display()))?;
    head.split(|&b| b == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .and_then(|line| line.strip_prefix("#!"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            usage(format!(
                "{} is not a Python script (a PyInstaller build?), so its `config` output cannot \
                 be read with its own YAML library: install Debian's docker-compose \
                 (`apt-get install docker-compose`) or the Compose v2 plugin",
                script.display()
            ))
        })
}

/// The compose oracle of the tests: every installed flavour, each with a shell that runs it.
#[cfg(test)]
pub(crate) mod oracle {
    use std::path::Path;

    use super::*;

    /// v1 and v2, each with a shell that runs it, or only those installed outside CI; with
    /// `CI=true` a missing one fails the test.
    pub(crate) fn flavours() -> Vec<(Shell, Compose)> {
        let mut found = Vec::new();
        for flavour in [Flavour::V1, Flavour::V2] {
            let sh = Shell::new().unwrap();
            sh.change_dir(project_root());
            let probe = match flavour {
                Flavour::V1 => cmd!(sh, "docker-compose version --short"),
                Flavour::V2 => {
                    if let Some(dir) = std::env::var_os(V2_VAR).filter(|d| !d.is_empty()) {
                        sh.set_var("DOCKER_CONFIG", dir);
                    }
                    cmd!(sh, "docker compose version --short")
                }
            };
            let major = match flavour {
                Flavour::V1 => "1.",
                Flavour::V2 => "2.",
            };
            let version = probe.quiet().ignore_stderr().read().ok();
            match version {
                Some(v) if v.trim().trim_start_matches('v').starts_with(major) => {
                    let compose = Compose {
                        flavour,
                        version: Some(v.trim().to_owned()),
                        plugin: None,
                    };
                    found.push((sh, compose));
                }
                other => {
                    assert!(
                        std::env::var("CI").as_deref() != Ok("true"),
                        "Compose {flavour:?} is needed as the oracle in CI (found {other:?}); \
                         `.ci/run` installs both (v2 through {V2_VAR})"
                    );
                    eprintln!("note: the Compose {flavour:?} oracle is skipped outside CI");
                }
            }
        }
        found
    }

    /// What `compose` makes of the compose file at `file`, as JSON.
    pub(crate) fn config(sh: &Shell, compose: &Compose, file: &Path) -> Result<serde_json::Value> {
        let dir = file.parent().unwrap();
        let cmd = compose
            .program(sh)
            .args(["-p", "genesis-oracle", "--project-directory"])
            .arg(dir)
            .arg("-f")
            .arg(file);
        compose.config(sh, cmd, &file.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v2 plugin is looked for in the `DOCKER_CONFIG` of the shell the compose commands
    /// run from (`ci` sets its own for the v2 round), found without being run.
    #[test]
    fn the_v2_plugin_is_found_in_the_shells_docker_config() {
        let dir = std::env::temp_dir().join(format!("xtask-plugins-{}", std::process::id()));
        let plugin = dir.join("cli-plugins/docker-compose");
        std::fs::create_dir_all(plugin.parent().unwrap()).unwrap();
        // Never run: finding it only looks at the file.
        std::fs::write(&plugin, b"#!/bin/false\n").unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sh = Shell::new().unwrap();
        let found = {
            let _config = sh.push_env("DOCKER_CONFIG", &dir);
            Compose::find(&sh).unwrap()
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.flavour, Flavour::V2);
        assert_eq!(found.plugin.as_deref(), Some(plugin.as_path()));
    }

    #[test]
    fn v1_is_read_through_the_python_of_its_script() {
        let dir = std::env::temp_dir().join(format!("xtask-shebang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |contents: &[u8]| {
            let file = dir.join("docker-compose");
            std::fs::write(&file, contents).unwrap();
            interpreter_line(&file).map_err(|e| e.to_string())
        };
        let script = check(b"#!/usr/bin/python3\nimport re\n");
        let env = check(b"#! /usr/bin/env python3 -s\n");
        let binary = check(b"\x7fELF\x02\x01\x01\0\0\0");
        let empty = check(b"");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(script.unwrap(), "/usr/bin/python3");
        assert_eq!(env.unwrap(), "/usr/bin/env python3 -s");
        assert!(
            binary
                .unwrap_err()
                .contains("is not a Python script (a PyInstaller build?)")
        );
        assert!(empty.unwrap_err().contains("is not a Python script"));
    }

    /// Compose typed by hand before the xtask has written `.env` fails at once, under both
    /// flavours, with the command that sets it up; with `.env` written it reads the file.
    #[test]
    fn compose_without_the_xtasks_dotenv_says_what_sets_it_up() {
        let dir = std::env::temp_dir().join(format!("xtask-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("docker-compose.yml"),
            crate::commands::codegen::render_compose(),
        )
        .unwrap();
        for (sh, compose) in oracle::flavours() {
            let _dir = sh.push_dir(&dir);
            let config = || {
                compose
                    .program(&sh)
                    .arg("config")
                    .env_remove(model::PASSWORD_VAR)
                    .env_remove(model::TEST_DB_TLS.dir_var)
                    .quiet()
                    .ignore_status()
                    .output()
                    .unwrap()
            };
            let _ = std::fs::remove_file(dir.join(".env"));
            let bare = config();
            let stderr = String::from_utf8_lossy(&bare.stderr);
            assert!(!bare.status.success(), "{:?}", compose.flavour);
            assert!(
                stderr.contains("run: cargo xtask db-up"),
                "{:?}: {stderr}",
                compose.flavour
            );
            std::fs::write(
                dir.join(".env"),
                format!(
                    "{}=x\n{}=./tls\n",
                    model::PASSWORD_VAR,
                    model::TEST_DB_TLS.dir_var
                ),
            )
            .unwrap();
            let set_up = config();
            assert!(
                set_up.status.success(),
                "{:?}: {}",
                compose.flavour,
                String::from_utf8_lossy(&set_up.stderr)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compose_accepts_the_file_and_publishes_the_model_ports() {
        let flavours = oracle::flavours();
        assert!(
            !flavours.is_empty(),
            "this test needs Docker Compose installed"
        );
        for (sh, compose) in flavours {
            let ports = compose.published_ports(&sh).unwrap();
            let get = |service: &str| {
                ports
                    .iter()
                    .find(|(s, _)| s == service)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_default()
            };
            let flavour = compose.flavour;
            assert_eq!(get("test-db"), [5433], "{flavour:?}");
            assert_eq!(get("postgres"), [5435], "{flavour:?}");
            assert_eq!(
                get("redis"),
                [model::REDIS.host_address.port],
                "{flavour:?}"
            );
        }
    }
}
