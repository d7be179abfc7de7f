//! `cargo xtask test`: runs the auth and integration suites on the host, inside the
//! `genesis-api` container, or both at once, from one build, and compares them test by test.
//!
//! The suites are compiled once into a nextest archive. Host mode runs it against
//! `localhost:5433`; container mode runs the same archive with the same nextest binary inside
//! the `genesis-api` container (the workspace is mounted at `/workspace`), where
//! `RUNNING_IN_DOCKER=1` makes the settings resolve `test-db:5432`. Outcomes come from nextest's
//! JUnit reports, never from exit codes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use genesis_model as model;
use xshell::Shell;

use crate::commands::archive::{
    ARCHIVE, Zstd, build_archive, build_only, check_archive_file, list_archive,
};
use crate::commands::modes::{ModeRun, RunArgs, dead_service, spawn_mode, tail, wait_all};
use crate::commands::parity::{self, Outcomes, Report, Target};
use crate::commands::pool::start_pool_server;
use crate::commands::run_state::{EXTRACTED, Store, lock_runs};
use crate::commands::timings::{Clock, Timings};
use crate::flags::{self, Suite};
use crate::services::compose::Compose;
use crate::services::preflight;
use crate::services::{Lifetime, Service, Stack};
use crate::services::{docker, images};
use crate::tools::util::{check_failed, interrupted, project_root, usage, xtask_dir};

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
                || run_suites_with(sh, stack, &targets, self.suite, &selection).map(|(r, _)| r),
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
        let (report, timings) = run_suites_with(sh, stack, &targets, self.suite, &selection)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report, stack);
        }
        eprintln!("{}", timings.line());
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
/// Also returns where the time went, which is kept in the stack's `timings.json`.
pub fn run_suites(
    sh: &Shell,
    stack: &Stack,
    targets: &[Target],
    suite: Suite,
) -> Result<(Report, Timings)> {
    run_suites_with(sh, stack, targets, suite, &Selection::default())
}

/// [`run_suites`] on a [`Selection`].
pub fn run_suites_with(
    sh: &Shell,
    stack: &Stack,
    targets: &[Target],
    suite: Suite,
    selection: &Selection,
) -> Result<(Report, Timings)> {
    let mut clock = Clock::start();
    let mut timings = Timings::default();
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
    preflight::docker_daemon()?;
    let compose = Compose::detect(sh)?;
    let needs_container = targets.contains(&Target::Container);
    let mut wanted = vec![Service::TestDb, Service::Redis];
    if needs_container {
        wanted.push(Service::Api);
    }
    images::images_for(sh, &wanted)?;
    stack.check_can_start(&wanted)?;
    let dir = stack.state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::create_dir_all(xtask_dir().join("bin")).context("create target/xtask")?;
    let _one_run = lock_runs(stack, &dir)?;
    let store = Store::of(stack)?;

    timings.checks = clock.lap();

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
        std::thread::spawn(move || {
            let started = Instant::now();
            let listed = match listed_given {
                Some(listed) => Ok(listed),
                None => Shell::new()
                    .context("a shell for listing the tests")
                    .and_then(|sh| {
                        list_archive(&sh, &archive, &extract, &expr, partition, &name_filters)
                    }),
            };
            (listed, started.elapsed().as_secs_f64())
        })
    };
    timings.build = clock.lap();

    crate::tools::util::check_interrupted()?;

    let mut nextest_changed = false;
    if needs_container {
        // The container runs the host's nextest binary from the mounted workspace.
        nextest_changed = copy_if_changed(&nextest, &xtask_dir().join("bin/cargo-nextest"))?;
    }
    // Ctrl-C from here on stops the runs and the guard removes the services this run started.
    let started = stack.start(
        sh,
        &compose,
        &wanted,
        if selection.keep {
            Lifetime::Warm
        } else {
            Lifetime::ThisRun
        },
        crate::services::READY_TIMEOUT,
    );
    timings.services = clock.lap();
    // Joined whatever happened, so that no listing outlives the command.
    let (listed, listing) = lister
        .join()
        .map_err(|_| anyhow::anyhow!("listing the tests of the archive panicked"))?;
    (timings.listing, timings.listing_wait) = (listing, clock.lap());
    let guard = started?;
    let listed = listed?;

    // Beside the pool server's start (each waits on a service, not on the CPU): a reused warm
    // container ran this nextest binary in the run that kept it.
    let checker =
        (needs_container && (nextest_changed || !guard.reused(Service::Api))).then(|| {
            let container = guard.container(Service::Api).to_owned();
            std::thread::spawn(move || {
                let sh = Shell::new().context("a shell for the container's check")?;
                check_container_runs_host_binaries(&sh, &container)
            })
        });
    let checked = || match checker {
        Some(checker) => checker
            .join()
            .map_err(|_| anyhow::anyhow!("the container's check panicked"))?,
        None => Ok(()),
    };
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
            selection.keep,
        ) {
            Ok(server) => server,
            Err(err) => {
                // Joined whatever happened, so that no check outlives the command.
                let _ = checked();
                if interrupted() {
                    bail!("interrupted; the services this run started were stopped")
                }
                return Err(err);
            }
        },
        Some(_) => None,
    };
    checked()?;
    timings.pool = clock.lap();
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
            took: None,
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
    timings.suites = clock.lap();
    for run in &runs {
        let took = run.took.map(|t| t.as_secs_f64());
        match run.target {
            Target::Host => timings.host = took,
            Target::Container => timings.container = took,
        }
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
    timings.teardown = clock.lap();

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
    timings.reports = clock.lap();
    timings.total = clock.total();
    timings.write(&dir)?;
    Ok((report, timings))
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

#[cfg(test)]
mod tests {
    use super::selection_expr;
    use crate::commands::run_state::{NEXTEST_CONFIG, with_store};

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
