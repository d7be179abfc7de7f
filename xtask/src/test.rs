//! `cargo xtask test`: runs the auth and integration suites on the host, inside the
//! `genesis-api` container, or both at once, from one build, and compares them test by test.
//!
//! The suites are compiled once into a nextest archive. Host mode runs it against
//! `localhost:5433`; container mode runs the same archive with the same nextest binary inside
//! the `genesis-api` container (the workspace is mounted at `/workspace`), where
//! `RUNNING_IN_DOCKER=1` makes the settings resolve `test-db:5432`. Outcomes come from nextest's
//! JUnit reports, never from exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use genesis_model as model;
use xshell::{Shell, cmd};

use crate::compose::Compose;
use crate::flags::{self, Suite};
use crate::parity::{self, Outcomes, Report, Target};
use crate::services::{Lifetime, Running, Service, Stack};
use crate::util::{check_failed, interrupted, project_root, target_dir, usage};
use crate::{child, preflight};

/// Kept here for the modules that still import it from `test`; it lives in `util`.
pub use crate::util::xtask_dir;

const ARCHIVE: &str = "genesis-tests.tar.zst";

impl flags::Test {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        let targets = self.targets();
        let report = run_suites(sh, stack, &targets, self.suite)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        if report.ok {
            Ok(())
        } else if report.tests.is_empty() {
            Err(check_failed("no test ran"))
        } else {
            Err(check_failed(format!(
                "{} problem(s): {}",
                report.problems.len(),
                report.problems.join("; ")
            )))
        }
    }

    fn targets(&self) -> Vec<Target> {
        match (self.host, self.container, self.both_modes) {
            (_, _, true) | (true, true, _) => vec![Target::Host, Target::Container],
            (false, true, false) => vec![Target::Container],
            _ => vec![Target::Host],
        }
    }
}

pub fn print_report(report: &Report) {
    let modes: Vec<&str> = report.modes.iter().map(|t| t.name()).collect();
    println!("\n{}", report.table());
    for problem in &report.problems {
        println!("  problem: {problem}");
    }
    let dir = xtask_dir();
    println!(
        "reports: {}, {}",
        dir.join("parity.json").display(),
        modes
            .iter()
            .map(|m| dir.join(format!("junit-{m}.xml")).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    match (report.modes.len(), report.parity, report.ok) {
        (_, _, true) if report.modes.len() > 1 => println!(
            "parity holds: {} tests, same outcomes in {}",
            report.tests.len(),
            modes.join(" and ")
        ),
        (_, _, true) => println!("{} tests passed in {}", report.tests.len(), modes.join("")),
        (2.., false, _) => println!("parity is BROKEN"),
        _ => println!("the suites FAILED"),
    }
}

/// Builds the suites once, brings up what they need, runs them in `targets` (at the same time
/// when there are two), writes the reports under `target/xtask/` and tears down what it started.
pub fn run_suites(sh: &Shell, stack: &Stack, targets: &[Target], suite: Suite) -> Result<Report> {
    // Preflight, then act: every tool and image before the build.
    let nextest = preflight::nextest()?;
    preflight::docker_daemon(sh)?;
    let compose = Compose::detect(sh)?;
    let needs_container = targets.contains(&Target::Container);
    let mut wanted = vec![Service::TestDb, Service::Redis];
    if needs_container {
        wanted.push(Service::Api);
    }
    preflight::images_for(sh, &wanted)?;
    let dir = xtask_dir();
    std::fs::create_dir_all(dir.join("bin")).context("create target/xtask")?;

    let target = target_dir();
    let started = Instant::now();
    eprintln!("building the suites (one archive for every mode)");
    cmd!(
        sh,
        "cargo build --quiet -p genesis-api --bin genesis-api --target-dir {target}"
    )
    .run()
    .context("build genesis-api")?;
    let archive = dir.join(ARCHIVE);
    cmd!(
        sh,
        "cargo nextest archive --cargo-quiet -p genesis-api --target-dir {target} --archive-file {archive}"
    )
    .quiet()
    .run()
    .context("build the test archive")?;
    eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());

    crate::util::check_interrupted()?;

    if needs_container {
        // The container runs the host's nextest binary from the mounted workspace.
        copy_if_changed(&nextest, &dir.join("bin/cargo-nextest"))?;
    }
    // Ctrl-C from here on stops the runs and the guard removes the services this run started.
    let guard = stack.start(
        sh,
        &compose,
        &wanted,
        Lifetime::ThisRun,
        crate::services::READY_TIMEOUT,
    )?;
    if needs_container {
        check_container_runs_host_binaries(sh, &compose, stack)?;
    }

    let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    eprintln!("running the suites: {}", names.join(" and "));
    let filter = suite.filter();
    let mut runs = Vec::new();
    for &target in targets {
        let junit = target_dir().join(format!("nextest/{}/junit.xml", target.name()));
        let _ = std::fs::remove_file(&junit);
        let log = dir.join(format!("{}.log", target.name()));
        let child = spawn_mode(sh, &compose, &guard, target, &archive, filter, &log)?;
        runs.push(ModeRun {
            target,
            child,
            log,
            junit,
            started: Instant::now(),
            status: None,
        });
    }
    wait_all(&mut runs)?;
    drop(guard);
    if interrupted() {
        bail!("interrupted; the services this run started were stopped");
    }

    let mut outcomes: Vec<(Target, Outcomes)> = Vec::new();
    for run in &runs {
        let text = std::fs::read_to_string(&run.junit).map_err(|_| {
            anyhow::anyhow!(
                "the {} run wrote no JUnit report (exit {}); its log is {}:\n{}",
                run.target.name(),
                run.status.map_or("unknown".to_owned(), |c| c.to_string()),
                run.log.display(),
                tail(&run.log, 25)
            )
        })?;
        std::fs::copy(
            &run.junit,
            dir.join(format!("junit-{}.xml", run.target.name())),
        )
        .context("keep the JUnit report")?;
        let parsed =
            parity::parse_junit(&text).with_context(|| format!("read {}", run.junit.display()))?;
        outcomes.push((run.target, parsed));
    }
    let report = parity::compare(&outcomes);
    std::fs::write(
        dir.join("parity.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .context("write parity.json")?;
    Ok(report)
}

struct ModeRun {
    target: Target,
    child: Child,
    log: PathBuf,
    junit: PathBuf,
    started: Instant,
    status: Option<i32>,
}

fn spawn_mode(
    sh: &Shell,
    compose: &Compose,
    running: &Running<'_>,
    target: Target,
    archive: &Path,
    filter: &str,
    log: &Path,
) -> Result<Child> {
    let root = project_root();
    let profile = target.name();
    let xcmd = match target {
        Target::Host => {
            let extract = xtask_dir().join("extract/host");
            std::fs::create_dir_all(&extract)?;
            // The stack's host ports, through the settings' own variables.
            cmd!(sh, "cargo nextest run --archive-file {archive} --workspace-remap {root} --extract-to {extract} --extract-overwrite --profile {profile} --no-tests=fail -E {filter}")
                .env_remove(model::API.in_container_var)
                .envs(running.host_settings()?)
                .env(
                    model::TEST_DB_TLS.ca_var,
                    root.join(model::TEST_DB_TLS.dir).join("ca.crt"),
                )
        }
        Target::Container => {
            let workdir = model::API.workdir;
            let archive = format!("{workdir}/target/xtask/{ARCHIVE}");
            let extract = format!("{workdir}/target/xtask/extract/container");
            std::fs::create_dir_all(xtask_dir().join("extract/container"))?;
            let nextest = format!("{workdir}/target/xtask/bin/cargo-nextest");
            // Run as the host user so that what the tests write under target/ stays the user's.
            let user = host_user(sh)?;
            compose
                .cmd(sh, running.stack())
                .args([
                    "exec",
                    "-T",
                    "-u",
                    &user,
                    "-e",
                    "HOME=/tmp",
                    "-e",
                    &format!(
                        "{}={workdir}/{}/ca.crt",
                        model::TEST_DB_TLS.ca_var,
                        model::TEST_DB_TLS.dir
                    ),
                    model::API.service,
                ])
                .args([
                    &nextest,
                    "nextest",
                    "run",
                    "--archive-file",
                    &archive,
                    "--workspace-remap",
                    workdir,
                ])
                .args([
                    "--extract-to",
                    &extract,
                    "--extract-overwrite",
                    "--profile",
                    profile,
                    "--no-tests=fail",
                    "-E",
                    filter,
                ])
        }
    };
    child::background(xcmd, log).with_context(|| format!("start the {} run", target.name()))
}

fn wait_all(runs: &mut [ModeRun]) -> Result<()> {
    let tty = std::io::stderr().is_terminal();
    let mut last_note = Instant::now();
    loop {
        let mut pending = 0;
        for run in runs.iter_mut() {
            if run.status.is_none() {
                match run.child.try_wait()? {
                    Some(status) => {
                        run.status = Some(status.code().unwrap_or(-1));
                        eprintln!(
                            "{} run finished in {:.1} s",
                            run.target.name(),
                            run.started.elapsed().as_secs_f64()
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

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if size(from) != size(to) {
        std::fs::copy(from, to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

fn host_user(sh: &Shell) -> Result<String> {
    let uid = cmd!(sh, "id -u").quiet().read()?;
    let gid = cmd!(sh, "id -g").quiet().read()?;
    Ok(format!("{uid}:{gid}"))
}

/// The container's base must run binaries built on this host (its C library at least as new).
fn check_container_runs_host_binaries(sh: &Shell, compose: &Compose, stack: &Stack) -> Result<()> {
    let nextest = format!("{}/target/xtask/bin/cargo-nextest", model::API.workdir);
    let out = compose
        .cmd(sh, stack)
        .args(["exec", "-T", model::API.service, &nextest, "--version"])
        .quiet()
        .ignore_status()
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = if stderr.contains("GLIBC") {
        "its C library is older than this host's"
    } else {
        stderr.lines().next().unwrap_or("it did not start")
    };
    Err(usage(format!(
        "the {} container cannot run binaries built on this host ({why}): set {} to an image of \
         your host's distribution release (for example debian:trixie-slim on Debian 13), or run \
         `cargo xtask images` to build a matching base",
        model::API.service,
        model::API_IMAGE.var
    )))
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
