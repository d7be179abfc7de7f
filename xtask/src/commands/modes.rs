//! One mode's run of the suites (`cargo nextest run` on the host, or through `docker exec` in
//! the application container) and the wait for every mode: Ctrl-C or a service that dies ends
//! them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use genesis_model as model;
use xshell::{Shell, cmd};

use crate::commands::parity::Target;
use crate::commands::pool::POOL_SOCKET_VAR;
use crate::commands::run_state::{EXTRACTED, Store};
use crate::services::compose::Compose;
use crate::services::{Running, Service, Stack, docker};
use crate::tools::child;
use crate::tools::util::{check_failed, interrupted, project_root, test_threads};

pub struct ModeRun {
    pub target: Target,
    pub child: Child,
    pub log: PathBuf,
    pub junit: PathBuf,
    pub started: Instant,
    pub status: Option<i32>,
    /// How long the run took, once it ended.
    pub took: Option<Duration>,
}

/// What every mode's nextest run gets: the suite's filterset, the partition and name filters,
/// and whether the pool server serves it.
#[derive(Clone, Copy)]
pub struct RunArgs<'a> {
    pub filter: &'a str,
    pub extra: &'a [String],
    pub pool: bool,
}

pub fn spawn_mode(
    sh: &Shell,
    running: &Running<'_>,
    store: &Store,
    target: Target,
    run: &RunArgs<'_>,
    log: &Path,
) -> Result<Child> {
    let RunArgs {
        filter,
        extra,
        pool,
    } = *run;
    let pool_socket = pool.then(|| store.pool_socket(target));
    let threads = test_threads().to_string();
    let root = project_root();
    let profile = target.name();
    let xcmd = match target {
        Target::Host => {
            let extracted = root.join(&store.dir).join(EXTRACTED).join("target");
            let binaries = extracted.join("nextest/binaries-metadata.json");
            let metadata = extracted.join("nextest/cargo-metadata.json");
            let config = store.config_args(&root.display().to_string());
            // The stack's host ports, through the settings' own variables.
            cmd!(sh, "cargo nextest run {config...} --binaries-metadata {binaries} --cargo-metadata {metadata} --workspace-remap {root} --target-dir-remap {extracted} --profile {profile} --test-threads {threads} --no-tests=fail -E {filter} {extra...}")
                .env_remove(model::API.in_container_var)
                .envs(running.host_settings()?)
                .envs(pool_socket.map(|socket| (POOL_SOCKET_VAR, socket)))
                .env(
                    model::TEST_DB_TLS.ca_var,
                    root.join(model::TEST_DB_TLS.dir).join("ca.crt"),
                )
        }
        Target::Container => {
            let workdir = model::API.workdir;
            let extracted = format!("{workdir}/{}/{EXTRACTED}/target", store.dir);
            let nextest = format!("{workdir}/target/xtask/bin/cargo-nextest");
            // Run as the host user so that what the tests write under target/ stays the user's.
            let user = host_user(sh)?;
            let pool_env: Vec<String> = pool_socket
                .map(|socket| vec!["-e".to_owned(), format!("{POOL_SOCKET_VAR}={socket}")])
                .unwrap_or_default();
            let container = running.container(Service::Api);
            let mut options = vec![
                "-u".to_owned(),
                user,
                "-e".to_owned(),
                "HOME=/tmp".to_owned(),
            ];
            options.extend(pool_env);
            options.push("-e".to_owned());
            options.push(format!(
                "{}={workdir}/{}/ca.crt",
                model::TEST_DB_TLS.ca_var,
                model::TEST_DB_TLS.dir
            ));
            docker::exec(sh, &options, container)
                .args([&nextest, "nextest", "run"])
                .args(store.config_args(workdir))
                .args([
                    "--binaries-metadata",
                    &format!("{extracted}/nextest/binaries-metadata.json"),
                    "--cargo-metadata",
                    &format!("{extracted}/nextest/cargo-metadata.json"),
                    "--workspace-remap",
                    workdir,
                    "--target-dir-remap",
                    &extracted,
                ])
                .args([
                    "--profile",
                    profile,
                    "--test-threads",
                    &threads,
                    "--no-tests=fail",
                    "-E",
                    filter,
                ])
                .args(extra)
        }
    };
    child::background(xcmd, log).with_context(|| format!("start the {} run", target.name()))
}

/// The first of `services` whose container is no longer running on `stack`, as an error that
/// names it and shows its last log lines.
pub fn dead_service(
    sh: &Shell,
    stack: &Stack,
    compose: &Compose,
    services: &[Service],
) -> Result<()> {
    let containers = stack.containers()?;
    for service in services {
        let name = service.name();
        let state = containers
            .iter()
            .find(|c| c.service == name)
            .map(|c| (c.running(), c.state.clone()));
        let why = match state {
            Some((true, _)) => continue,
            Some((false, state)) => format!("its container is {state}"),
            None => "its container is gone".to_owned(),
        };
        return Err(check_failed(format!(
            "{name} stopped while the suites ran ({why}); the runs were stopped and the \
             services this run started removed\n--- last 20 log lines of {name} ---\n{}",
            stack.log_tail(sh, compose, name, 20)
        )));
    }
    Ok(())
}

/// How often a run looks at its services' containers while the suites run.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Waits for every mode's run. Ctrl-C kills them and returns; a service of the run found
/// stopped (`watch`, every [`WATCH_EVERY`]) kills them and returns its error, so that a dead
/// database fails the run in seconds instead of every test waiting out its own timeout.
pub fn wait_all(runs: &mut [ModeRun], mut watch: impl FnMut() -> Result<()>) -> Result<()> {
    let tty = std::io::stderr().is_terminal();
    let mut last_note = Instant::now();
    let mut last_watch = Instant::now();
    loop {
        let mut pending = 0;
        for run in runs.iter_mut() {
            if run.status.is_none() {
                match run.child.try_wait()? {
                    Some(status) => {
                        run.status = Some(status.code().unwrap_or(-1));
                        let took = run.started.elapsed();
                        run.took = Some(took);
                        eprintln!(
                            "{} run finished in {:.1} s",
                            run.target.name(),
                            took.as_secs_f64()
                        );
                    }
                    None => pending += 1,
                }
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if interrupted() {
            for run in runs.iter_mut().filter(|r| r.status.is_none()) {
                let _ = run.child.kill();
                let _ = run.child.wait();
            }
            return Ok(());
        }
        if last_watch.elapsed() >= WATCH_EVERY {
            last_watch = Instant::now();
            if let Err(err) = watch() {
                for run in runs.iter_mut().filter(|r| r.status.is_none()) {
                    let _ = run.child.kill();
                    let _ = run.child.wait();
                }
                if tty {
                    eprintln!();
                }
                return Err(err);
            }
        }
        let every = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(15)
        };
        if last_note.elapsed() >= every {
            let state: Vec<String> = runs
                .iter()
                .filter(|r| r.status.is_none())
                .map(|r| {
                    format!(
                        "{} running {:.0} s",
                        r.target.name(),
                        r.started.elapsed().as_secs_f64()
                    )
                })
                .collect();
            if tty {
                eprint!("\r{}   ", state.join(", "));
            } else {
                eprintln!("{}", state.join(", "));
            }
            last_note = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn host_user(sh: &Shell) -> Result<String> {
    let uid = cmd!(sh, "id -u").quiet().read()?;
    let gid = cmd!(sh, "id -g").quiet().read()?;
    Ok(format!("{uid}:{gid}"))
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
