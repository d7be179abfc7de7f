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

use crate::commands::parity::{self, Outcomes, Report, Target};
use crate::commands::pool::{POOL_SERVER, POOL_SOCKET, POOL_SOCKET_VAR, start_pool_server};
use crate::flags::{self, Suite};
use crate::services::compose::Compose;
use crate::services::preflight;
use crate::services::{Lifetime, Owner, Running, Service, Stack};
use crate::services::{docker, images};
use crate::tools::child;
use crate::tools::util::{
    check_failed, interrupted, project_root, target_dir, test_threads, usage, xtask_dir,
};

pub const ARCHIVE: &str = "genesis-tests.tar.zst";
/// Where `--build-archive-only` leaves the archive, from the workspace root.
pub const ARCHIVE_PATH: &str = "target/xtask/genesis-tests.tar.zst";
/// The application binary the container serves, which a shard needs beside the archive.
pub const API_BINARY_PATH: &str = "target/debug/genesis-api";

impl flags::Test {
    pub fn run(self, sh: &Shell, stack: &Stack) -> Result<()> {
        if self.build_archive_only {
            return build_only(sh);
        }
        let targets = self.targets();
        let selection = Selection {
            archive: self.archive.clone(),
            partition: self.partition.clone(),
            filters: self.filters.clone(),
            keep: self.keep,
        };
        if self.repeat > 1 || self.cpu_load {
            let flakes = crate::commands::stress::repeat(
                stack,
                &targets,
                self.repeat as usize,
                self.cpu_load,
                || run_suites_with(sh, stack, &targets, self.suite, &selection),
            )?;
            let json = serde_json::to_string_pretty(&flakes)?;
            let file = stack.state_dir().join("flakes.json");
            std::fs::write(&file, &json).with_context(|| format!("write {}", file.display()))?;
            if self.json {
                println!("{json}");
            } else {
                crate::commands::stress::print(&flakes);
            }
            return crate::commands::stress::verdict(&flakes);
        }
        let report = run_suites_with(sh, stack, &targets, self.suite, &selection)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report, stack);
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

pub fn print_report(report: &Report, stack: &Stack) {
    let modes: Vec<&str> = report.modes.iter().map(|t| t.name()).collect();
    println!("\n{}", report.table());
    for problem in &report.problems {
        println!("  problem: {problem}");
    }
    print_failures(report);
    let dir = stack.state_dir();
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

/// Each failed test's panic message under its name, per mode, from the kept JUnit reports.
fn print_failures(report: &Report) {
    const LINES: usize = 12;
    for target in &report.modes {
        let path = xtask_dir().join(format!("junit-{}.xml", target.name()));
        let Ok(xml) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (id, message) in parity::failures(&xml).unwrap_or_default() {
            println!("\n--- {id} failed ({}) ---", target.name());
            let lines: Vec<&str> = message.lines().collect();
            for line in lines.iter().take(LINES) {
                println!("    {}", genesis_settings::redact(line));
            }
            if lines.len() > LINES {
                println!(
                    "    ... ({} more lines in {})",
                    lines.len() - LINES,
                    path.display()
                );
            }
        }
    }
}

/// What of the suites a run takes: an archive built elsewhere, one partition of it, and name
/// filters. The default builds the archive here and runs every test of the suite.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub archive: Option<PathBuf>,
    pub partition: Option<String>,
    pub filters: Vec<String>,
    /// Keep the services warm for the next run (`test --keep`).
    pub keep: bool,
}

/// Builds the suites once, brings up what they need, runs them in `targets` (at the same time
/// when there are two), writes the reports under `target/xtask/` and tears down what it started.
pub fn run_suites(sh: &Shell, stack: &Stack, targets: &[Target], suite: Suite) -> Result<Report> {
    run_suites_with(sh, stack, targets, suite, &Selection::default())
}

/// [`run_suites`] on a [`Selection`].
pub fn run_suites_with(
    sh: &Shell,
    stack: &Stack,
    targets: &[Target],
    suite: Suite,
    selection: &Selection,
) -> Result<Report> {
    // Preflight, then act: every tool and image before the build.
    let nextest = preflight::nextest()?;
    if let Some(given) = &selection.archive
        && !given.is_file()
    {
        return Err(usage(format!(
            "the archive {} does not exist",
            given.display()
        )));
    }
    preflight::docker_daemon(sh)?;
    let compose = Compose::detect(sh)?;
    let needs_container = targets.contains(&Target::Container);
    let mut wanted = vec![Service::TestDb, Service::Redis];
    if needs_container {
        wanted.push(Service::Api);
    }
    images::images_for(sh, &wanted)?;
    stack.check_can_start(sh, &wanted)?;
    let dir = stack.state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::create_dir_all(xtask_dir().join("bin")).context("create target/xtask")?;
    let _one_run = lock_runs(stack, &dir)?;
    let store = Store::of(stack)?;

    let archive = dir.join(ARCHIVE);
    let (expr, name_filters) = selection_expr(suite.filter(), &selection.filters);
    // An archive from elsewhere is read in full before it replaces ours or a service starts.
    let mut listed_given = None;
    if let Some(given) = &selection.archive {
        check_archive_file(given)?;
        let listed = list_archive(
            sh,
            given,
            &dir.join(EXTRACTED),
            &expr,
            selection.partition.clone(),
            &name_filters,
        )
        .map_err(|err| {
            usage(format!(
                "{} is not a usable nextest archive: {err:#}; nothing was replaced or started",
                given.display()
            ))
        })?;
        listed_given = Some(listed);
        // The container finds the archive under the mounted target/xtask.
        if std::fs::canonicalize(given).ok() != std::fs::canonicalize(&archive).ok() {
            let tmp = archive.with_extension(format!("partial-{}", std::process::id()));
            std::fs::copy(given, &tmp)
                .and_then(|_| std::fs::rename(&tmp, &archive))
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
                .with_context(|| format!("copy {} to {}", given.display(), archive.display()))?;
        }
    } else {
        build_archive(sh, &archive, Zstd::Fastest)?;
    }
    let filter: &str = &expr;
    // Listing the archive's tests extracts it and asks every binary: about a second that runs
    // while the services start (an archive from elsewhere was listed already).
    let lister = {
        let (archive, partition) = (archive.clone(), selection.partition.clone());
        let (expr, name_filters) = (expr.clone(), name_filters.clone());
        let extract = dir.join(EXTRACTED);
        std::thread::spawn(move || match listed_given {
            Some(listed) => Ok(listed),
            None => {
                let sh = Shell::new().context("a shell for listing the tests")?;
                list_archive(&sh, &archive, &extract, &expr, partition, &name_filters)
            }
        })
    };

    crate::tools::util::check_interrupted()?;

    let mut nextest_changed = false;
    if needs_container {
        // The container runs the host's nextest binary from the mounted workspace.
        nextest_changed = copy_if_changed(&nextest, &xtask_dir().join("bin/cargo-nextest"))?;
    }
    // Ctrl-C from here on stops the runs and the guard removes the services this run started.
    let started = stack
        .start(
            sh,
            &compose,
            &wanted,
            if selection.keep {
                Lifetime::Warm
            } else {
                Lifetime::ThisRun
            },
            crate::services::READY_TIMEOUT,
        )
        .and_then(|guard| {
            // A reused warm container ran this nextest binary in the run that kept it.
            if needs_container && (nextest_changed || !guard.reused(Service::Api)) {
                check_container_runs_host_binaries(sh, guard.container(Service::Api))?;
            }
            Ok(guard)
        });
    // Joined whatever happened, so that no listing outlives the command.
    let listed = lister
        .join()
        .map_err(|_| anyhow::anyhow!("listing the tests of the archive panicked"))?;
    let guard = started?;
    let listed = listed?;

    // An archive built elsewhere comes without the pool server: its tests use pools of their
    // own (slower hand-outs, same results). A Ctrl-C reaches the server too (one process
    // group): its death is then the interruption, not a failure of its own.
    let pool_server = match selection.archive {
        None => match start_pool_server(
            sh,
            &guard,
            [
                store.pool_socket(Target::Host),
                store.pool_socket(Target::Container),
            ],
        ) {
            Ok(server) => server,
            Err(_) if interrupted() => {
                bail!("interrupted; the services this run started were stopped")
            }
            Err(err) => return Err(err),
        },
        Some(_) => None,
    };
    let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    eprintln!(
        "running the suites: {}{}",
        names.join(" and "),
        selection
            .partition
            .as_ref()
            .map_or(String::new(), |p| format!(
                ", partition {p}: {} of {} tests",
                listed.shard.len(),
                listed.tests.len()
            ))
    );
    let mut extra: Vec<String> = Vec::new();
    if let Some(partition) = &selection.partition {
        extra.extend(["--partition".to_owned(), partition.clone()]);
    }
    if !name_filters.is_empty() {
        extra.push("--".to_owned());
        extra.extend(name_filters.iter().cloned());
    }
    let mut runs = Vec::new();
    for &target in targets {
        let junit = project_root().join(store.junit(target));
        let _ = std::fs::remove_file(&junit);
        let log = dir.join(format!("{}.log", target.name()));
        let args = RunArgs {
            filter,
            extra: &extra,
            pool: pool_server.is_some(),
        };
        let child = spawn_mode(sh, &guard, &store, target, &args, &log)?;
        runs.push(ModeRun {
            target,
            child,
            log,
            junit,
            started: Instant::now(),
            status: None,
        });
    }
    let watch = || dead_service(sh, stack, &compose, &wanted);
    if let Err(err) = wait_all(&mut runs, watch) {
        // The pool server cannot drop its clones on a dead server: it is stopped, not waited
        // for, and the guard removes what the run started.
        if let Some(server) = pool_server {
            server.stop(Duration::from_secs(2));
        }
        drop(guard);
        return Err(err);
    }
    if interrupted() {
        // Ctrl-C ends the run in seconds: the pool server gets two to drop its clones.
        if let Some(server) = pool_server {
            server.stop(Duration::from_secs(2));
        }
        drop(guard);
        bail!("interrupted; the services this run started were stopped");
    }
    if selection.keep {
        let names: Vec<&str> = wanted.iter().map(|s| s.name()).collect();
        eprintln!(
            "kept {} warm on stack {}: the next `cargo xtask test --keep{}` reuses them; \
             `cargo xtask db-down --all{}` removes them",
            names.join(", "),
            stack.name(),
            stack.flag(),
            stack.flag()
        );
    }
    drop(pool_server);
    drop(guard);

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
        let kept = dir.join(format!("junit-{}.xml", run.target.name()));
        if selection.partition.is_some() {
            // A shard's report lists the archive's other tests too, as skipped.
            let full = parity::junit_with_other_shards(&text, &listed, "genesis-api")?;
            std::fs::write(&kept, full).context("keep the JUnit report")?;
        } else {
            std::fs::copy(&run.junit, &kept).context("keep the JUnit report")?;
        }
        let parsed =
            parity::parse_junit(&text).with_context(|| format!("read {}", run.junit.display()))?;
        outcomes.push((run.target, parsed));
    }
    let mut report = parity::compare(&outcomes);
    parity::check_shard(&mut report, listed);
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(dir.join("parity.json"), &json).context("write parity.json")?;
    if let Some(partition) = &selection.partition {
        // Shards run one after another on one machine keep their reports apart.
        let name = format!("parity-{}.json", partition.replace([':', '/'], "-"));
        std::fs::write(dir.join(&name), &json).with_context(|| format!("write {name}"))?;
    }
    Ok(report)
}

/// Builds the application, the pool server and the suites' nextest archive at `archive`,
/// showing cargo's own progress (a first build takes minutes).
/// How hard the archive is compressed: the fastest level for one that stays on this machine
/// (it halves the archiving, 0.45 s against 0.9-1.2 s on 2 loaded cores, for 62 MB against
/// 34 MB, and speeds the extraction); nextest's default for one that other machines download.
#[derive(Debug, Clone, Copy)]
enum Zstd {
    Fastest,
    Default,
}

fn build_archive(sh: &Shell, archive: &Path, zstd: Zstd) -> Result<()> {
    let level = match zstd {
        Zstd::Fastest => "-7",
        Zstd::Default => "0",
    };
    let target = target_dir();
    let started = Instant::now();
    eprintln!("building the suites (one archive for every mode)");
    let cargo = crate::tools::util::cargo();
    cmd!(
        sh,
        "{cargo} build -p genesis-api --bin genesis-api --example {POOL_SERVER} --target-dir {target}"
    )
    .quiet()
    .run()
    .context("build genesis-api")?;
    cmd!(
        sh,
        "cargo nextest archive -p genesis-api --target-dir {target} --archive-file {archive} --zstd-level={level}"
    )
    .quiet()
    .run()
    .context("build the test archive")?;
    eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `test --build-archive-only`: what a shard on another machine needs, built once here: the
/// suites' archive and the application binary the container serves (`target/debug/genesis-api`).
fn build_only(sh: &Shell) -> Result<()> {
    preflight::nextest()?;
    let dir = xtask_dir();
    std::fs::create_dir_all(&dir).context("create target/xtask")?;
    let archive = dir.join(ARCHIVE);
    build_archive(sh, &archive, Zstd::Default)?;
    println!(
        "built {} and {}: run them elsewhere with `cargo xtask test --archive {ARCHIVE_PATH} --partition slice:M/N`",
        archive.display(),
        target_dir().join("debug/genesis-api").display()
    );
    Ok(())
}

/// The run's filterset and the name filters nextest gets as they are. A name filter made of
/// test-path characters joins the filterset as "the test's name contains it"; one that starts
/// with a suite's name (`auth::login`) also selects that suite's tests whose names contain the
/// rest, since nextest's test names carry no binary prefix (`login_returns_a_bearer_token` in
/// `auth`, `health::readiness_...` in `integrations`). Any other filter goes to nextest as is.
fn selection_expr(suite: &str, filters: &[String]) -> (String, Vec<String>) {
    let simple = |f: &String| {
        !f.is_empty()
            && f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    };
    if filters.is_empty() || !filters.iter().all(simple) {
        return (suite.to_owned(), filters.to_vec());
    }
    let clauses: Vec<String> = filters
        .iter()
        .map(|f| {
            let prefixed = ["auth", "integrations"].iter().find_map(|binary| {
                f.strip_prefix(binary)
                    .and_then(|rest| rest.strip_prefix("::"))
                    .filter(|rest| !rest.is_empty())
                    .map(|rest| format!("(binary(={binary}) & test(~{rest}))"))
            });
            match prefixed {
                Some(clause) => format!("{clause} | test(~{f})"),
                None => format!("test(~{f})"),
            }
        })
        .collect();
    (format!("({suite}) & ({})", clauses.join(" | ")), Vec::new())
}

/// Every test the run selects from the archive, and this partition's share, from
/// `cargo nextest list` (which needs no services).
fn list_archive(
    sh: &Shell,
    archive: &Path,
    extract: &Path,
    filter: &str,
    partition: Option<String>,
    filters: &[String],
) -> Result<parity::ArchiveTests> {
    let root = project_root();
    std::fs::create_dir_all(extract)?;
    let partition_args = partition
        .as_ref()
        .map(|p| vec!["--partition".to_owned(), p.clone()])
        .unwrap_or_default();
    let out = cmd!(sh, "cargo nextest list --archive-file {archive} --workspace-remap {root} --extract-to {extract} --extract-overwrite -E {filter} {partition_args...} --message-format json -- {filters...}")
        .quiet()
        .ignore_status()
        .output()
        .context("list the tests of the archive")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        bail!(
            "`cargo nextest list` cannot read {}: {}",
            archive.display(),
            why.join(" ")
        );
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let (tests, shard) = parity::parse_list(&json)?;
    let binaries = binaries_digest(sh, &parity::list_binaries(&json)?)?;
    let mut all_filters = vec![filter.to_owned()];
    all_filters.extend(filters.iter().cloned());
    Ok(parity::ArchiveTests {
        file: archive
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        bytes: std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0),
        binaries,
        partition,
        filters: all_filters,
        tests,
        shard,
    })
}

/// One SHA-256 over the test binaries' own digests, each beside its binary id: what two
/// archives of the same build share, whatever their tar headers say.
fn binaries_digest(sh: &Shell, binaries: &[(String, String)]) -> Result<String> {
    let paths: Vec<&str> = binaries.iter().map(|(_, path)| path.as_str()).collect();
    let sums = cmd!(sh, "sha256sum --binary {paths...}")
        .quiet()
        .read()
        .context("checksum the test binaries")?;
    let mut lines = Vec::new();
    for ((id, _), line) in binaries.iter().zip(sums.lines()) {
        let sum = line.split_whitespace().next().unwrap_or_default();
        lines.push(format!("{sum}  {id}\n"));
    }
    let all = cmd!(sh, "sha256sum")
        .quiet()
        .stdin(lines.concat())
        .read()
        .context("checksum the test binaries")?;
    Ok(all.split_whitespace().next().unwrap_or_default().to_owned())
}

/// Refuses a file that is not a nextest archive before anything is replaced or started: its
/// first bytes (zstd's frame), then its listing (which reads every binary's test list).
fn check_archive_file(given: &Path) -> Result<()> {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let mut head = [0u8; 4];
    let read = std::fs::File::open(given)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .with_context(|| format!("read {}", given.display()))?;
    if read < head.len() || head != ZSTD_MAGIC {
        return Err(usage(format!(
            "{} is not a nextest archive (not a .tar.zst: it does not start with zstd's \
             magic number); make one with `cargo nextest archive -p genesis-api \
             --archive-file FILE`; nothing was replaced or started",
            given.display()
        )));
    }
    Ok(())
}

struct ModeRun {
    target: Target,
    child: Child,
    log: PathBuf,
    junit: PathBuf,
    started: Instant,
    status: Option<i32>,
}

/// What every mode's nextest run gets: the suite's filterset, the partition and name filters,
/// and whether the pool server serves it.
#[derive(Clone, Copy)]
struct RunArgs<'a> {
    filter: &'a str,
    extra: &'a [String],
    pool: bool,
}

fn spawn_mode(
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

/// Where the archive is extracted, once: the listing extracts it, and both modes run the
/// extracted binaries (nextest's reuse of a build), the container through the mounted
/// workspace. Each extraction of the archive costs ~0.3 s of CPU.
const EXTRACTED: &str = "extract/suites";

/// The first of `services` whose container is no longer running on `stack`, as an error that
/// names it and shows its last log lines.
fn dead_service(sh: &Shell, stack: &Stack, compose: &Compose, services: &[Service]) -> Result<()> {
    let containers = stack.containers(sh)?;
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
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Removes the test archive of `stack` and its extraction, keeping its reports: for a private
/// stack that no later run uses.
pub fn remove_build(stack: &Stack) {
    let dir = stack.state_dir();
    let _ = std::fs::remove_dir_all(dir.join(EXTRACTED));
    let _ = std::fs::remove_file(dir.join(ARCHIVE));
}

/// Where a stack's runs keep what a run of another stack must not see, relative to the
/// workspace (the container sees it under its mount): the extracted archive, the pool socket,
/// nextest's store (its JUnit reports) and the xtask's own reports.
pub struct Store {
    /// The stack's state folder, relative to the workspace root.
    dir: String,
    /// Nextest's store, relative to the workspace root.
    nextest: String,
    /// The nextest configuration naming that store, when it is not the workspace's own.
    config: Option<String>,
}

impl Store {
    fn of(stack: &Stack) -> Result<Store> {
        let root = project_root();
        let dir = stack
            .state_dir()
            .strip_prefix(&root)
            .context("the stack's state folder is outside the workspace")?
            .display()
            .to_string();
        if stack.is_default() {
            return Ok(Store {
                dir,
                nextest: NEXTEST_STORE.to_owned(),
                config: None,
            });
        }
        let nextest = format!("{dir}/nextest");
        let config = format!("{dir}/nextest.toml");
        let ours = std::fs::read_to_string(root.join(NEXTEST_CONFIG))
            .with_context(|| format!("read {NEXTEST_CONFIG}"))?;
        crate::tools::util::ensure_file_contents(
            &root.join(&config),
            &with_store(&ours, &nextest)?,
            crate::tools::util::Mode::Write,
        )?;
        Ok(Store {
            dir,
            nextest,
            config: Some(config),
        })
    }

    /// `--config-file` of the stack's nextest configuration, as a process under `root` sees it.
    fn config_args(&self, root: &str) -> Vec<String> {
        self.config
            .iter()
            .flat_map(|c| ["--config-file".to_owned(), format!("{root}/{c}")])
            .collect()
    }

    /// Where `target`'s run writes its JUnit report, relative to the workspace root.
    fn junit(&self, target: Target) -> String {
        format!("{}/{}/junit.xml", self.nextest, target.name())
    }

    /// The pool server's socket as `target`'s tests reach it, in the stack's state folder.
    pub fn pool_socket(&self, target: Target) -> String {
        let root = match target {
            Target::Host => project_root().display().to_string(),
            Target::Container => model::API.workdir.to_owned(),
        };
        format!("{root}/{}/{POOL_SOCKET}", self.dir)
    }
}

/// The workspace's nextest configuration, and the store it names (relative to the root).
const NEXTEST_CONFIG: &str = ".config/nextest.toml";
const NEXTEST_STORE: &str = "target/nextest";

/// The workspace's nextest configuration with its store moved to `store`: the profiles stay
/// the workspace's own.
fn with_store(config: &str, store: &str) -> Result<String> {
    let line = format!("dir = \"{NEXTEST_STORE}\"");
    if config.lines().filter(|l| l.trim() == line).count() != 1 {
        bail!("{NEXTEST_CONFIG} no longer has the one line `{line}` that a stack's store replaces");
    }
    Ok(config
        .lines()
        .map(|l| {
            if l.trim() == line {
                format!("dir = \"{store}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// One test run per stack of a checkout at a time: a second run on the same stack would share
/// the first's socket, extracted archive and reports, so it refuses at once, naming the first.
/// The lock is a file holding the run's identity, made in one step (a hard link, which fails
/// when the file exists) and removed with the guard; one left by a run that died is taken over.
struct RunLock(PathBuf);

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn lock_runs(stack: &Stack, dir: &Path) -> Result<RunLock> {
    let path = dir.join("run.lock");
    let me = crate::services::run::this_run();
    let tmp = dir.join(format!("run.lock.{}", std::process::id()));
    std::fs::write(&tmp, &me).with_context(|| format!("write {}", tmp.display()))?;
    let result = loop {
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => break Ok(RunLock(path)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                // Written whole before it is linked into place: anything but a live run's
                // identity is a lock nobody holds.
                if crate::services::run::owner_of(&holder) != Owner::Alive {
                    eprintln!(
                        "taking over the run lock of stack {}: its run is gone",
                        stack.name()
                    );
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                let pid = holder.split(':').nth(2).unwrap_or("unknown");
                break Err(usage(format!(
                    "another run (pid {pid}) is running the suites on stack {} of this \
                     checkout, and two runs on one stack would share its services, pool socket \
                     and reports: wait for it, or run on another stack with `--stack NAME` (or \
                     {}=NAME)",
                    stack.name(),
                    model::STACK_VAR
                )));
            }
            Err(err) => break Err(err).with_context(|| format!("lock {}", path.display())),
        }
    };
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Waits for every mode's run. Ctrl-C kills them and returns; a service of the run found
/// stopped (`watch`, every [`WATCH_EVERY`]) kills them and returns its error, so that a dead
/// database fails the run in seconds instead of every test waiting out its own timeout.
fn wait_all(runs: &mut [ModeRun], mut watch: impl FnMut() -> Result<()>) -> Result<()> {
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

/// Copies `from` over `to` unless they have the same size; whether it copied.
fn copy_if_changed(from: &Path, to: &Path) -> Result<bool> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if size(from) == size(to) {
        return Ok(false);
    }
    // Beside it, then renamed: a run of another stack may be starting the old copy.
    let tmp = to.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copy {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("move {} into place", to.display()))?;
    Ok(true)
}

fn host_user(sh: &Shell) -> Result<String> {
    let uid = cmd!(sh, "id -u").quiet().read()?;
    let gid = cmd!(sh, "id -g").quiet().read()?;
    Ok(format!("{uid}:{gid}"))
}

/// The container's base must run binaries built on this host (its C library at least as new).
fn check_container_runs_host_binaries(sh: &Shell, container: &str) -> Result<()> {
    let nextest = format!("{}/target/xtask/bin/cargo-nextest", model::API.workdir);
    let out = docker::exec(sh, &[], container)
        .args([&nextest, "--version"])
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

#[cfg(test)]
mod tests {
    use super::{NEXTEST_CONFIG, selection_expr, with_store};

    #[test]
    fn a_stack_gets_the_workspace_nextest_profiles_with_a_store_of_its_own() {
        let ours = std::fs::read_to_string(crate::tools::util::project_root().join(NEXTEST_CONFIG))
            .unwrap();
        let theirs = with_store(&ours, "target/xtask/stacks/a/nextest").unwrap();
        assert!(theirs.contains("\ndir = \"target/xtask/stacks/a/nextest\"\n"));
        assert!(!theirs.contains("\"target/nextest\""));
        assert_eq!(theirs.lines().count(), ours.lines().count());
        assert!(with_store("[store]\n", "x").is_err());
    }

    #[test]
    fn name_filters_join_the_filterset_and_a_suite_prefix_selects_that_suite() {
        let suite = "binary(=auth) | binary(=integrations)";
        assert_eq!(selection_expr(suite, &[]), (suite.to_owned(), vec![]));
        let (expr, names) = selection_expr(suite, &["auth::login".into(), "health::".into()]);
        assert_eq!(
            expr,
            "(binary(=auth) | binary(=integrations)) & ((binary(=auth) & test(~login)) | \
             test(~auth::login) | test(~health::))"
        );
        assert!(names.is_empty());
        // Anything a filterset would read differently goes to nextest untouched.
        let odd = vec!["a b".to_owned(), "login".to_owned()];
        assert_eq!(selection_expr(suite, &odd), (suite.to_owned(), odd.clone()));
    }
}
