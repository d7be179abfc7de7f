//! `cargo xtask ci`: everything CI needs, in order, on private stacks of its own that are
//! removed at the end whatever happened, under each Compose flavour.

use std::time::Instant;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::commands::parity::{Report, Target};
use crate::commands::{codegen, test, verify};
use crate::flags::{self, Suite};
use crate::services::compose::{Compose, Flavour, V2_VAR};
use crate::services::{Lifetime, READY_TIMEOUT, Service, Stack};
use crate::services::{images, preflight};
use crate::tools::util::{Style, check_failed, usage};

impl flags::Ci {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let mut steps = Steps::default();
        steps.step("formatting", || {
            cmd!(sh, "cargo fmt --all -- --check")
                .run()
                .context("run `cargo fmt --all` and commit")
        })?;
        steps.step("clippy", || {
            cmd!(
                sh,
                "cargo clippy --quiet --workspace --all-targets -- -D warnings"
            )
            .run()
            .context("clippy found problems")
        })?;
        steps.step("unit tests", || {
            cmd!(sh, "cargo test --quiet --workspace --lib --bins")
                .run()
                .context("unit tests failed")?;
            cmd!(sh, "cargo test --quiet -p xtask --test tidy")
                .run()
                .context("the tidy checks failed")
        })?;
        steps.step("codegen --check", codegen::check)?;
        preflight::docker_daemon()?;
        steps.step("images", || images::ensure(sh))?;

        // The machine's own compose first, then v2 from its private DOCKER_CONFIG.
        let v2 = std::env::var_os(V2_VAR).filter(|v| !v.is_empty());
        let default = Compose::detect(sh)?;
        let passed = flavour(sh, &mut steps, &default, "ci")?;
        let mut total = passed;
        match v2 {
            _ if default.flavour == Flavour::V2 => {
                println!("the machine's compose is already v2: one flavour ran")
            }
            Some(dir) => {
                let _config = sh.push_env("DOCKER_CONFIG", &dir);
                let compose = Compose::detect(sh)?;
                if compose.flavour != Flavour::V2 {
                    return Err(usage(format!(
                        "{V2_VAR}={} holds no Compose v2 plugin: `bash .ci/install-compose-v2` makes one",
                        dir.to_string_lossy()
                    )));
                }
                total += flavour(sh, &mut steps, &compose, "ci-v2")?;
            }
            None if std::env::var("CI").is_ok_and(|v| v == "true") => {
                steps.print();
                return Err(usage(format!(
                    "CI must exercise Compose v2 as well: set {V2_VAR} to the DOCKER_CONFIG folder \
                     of the v2 plugin (`bash .ci/install-compose-v2` prints it; `.ci/run` does this)"
                )));
            }
            None => println!(
                "{}",
                Style::stdout().red(&format!(
                    "skipped: Compose v2 ({V2_VAR} is not set; `bash .ci/install-compose-v2` prints the folder)"
                ))
            ),
        }
        steps.print();
        println!("tests: {total} passed, 0 failed");
        Ok(())
    }
}

/// The service tests, db-up, `test --both-modes`, `verify-migration` and db-down under one
/// Compose flavour, on a private stack removed at the end whatever happened. Returns the
/// number of test runs that passed.
fn flavour(sh: &Shell, steps: &mut Steps, compose: &Compose, purpose: &str) -> Result<usize> {
    let tag = match compose.flavour {
        Flavour::V1 => "v1",
        Flavour::V2 => "v2",
    };
    let stack = Stack::private(purpose);
    let private = PrivateStack {
        sh,
        compose: compose.clone(),
        stack: stack.clone(),
    };
    steps.run(tag, "service tests", || {
        cmd!(sh, "cargo test --quiet -p xtask --test engine")
            .run()
            .context("service tests failed")
    })?;
    let running = steps.run(tag, "db-up", || {
        stack.start(
            sh,
            compose,
            &[Service::TestDb, Service::Redis],
            Lifetime::ThisRun,
            READY_TIMEOUT,
        )
    })?;
    let report = steps.run(tag, "test --both-modes", || {
        let (report, timings) =
            test::run_suites(sh, &stack, &[Target::Host, Target::Container], Suite::All)?;
        test::print_report(&report, &stack);
        eprintln!("{}", timings.line());
        if report.ok {
            Ok(report)
        } else {
            Err(check_failed(report.problems.join("; ")))
        }
    })?;
    let passed = passed(&report);
    // The checklist's other items do not depend on the flavour: once is enough.
    if purpose == "ci" {
        steps.run(tag, "verify-migration", || {
            verify::report(&verify::checklist(sh, &stack, Some(report))?, false)
        })?;
    }
    steps.run(tag, "db-down", || {
        drop(running);
        drop(private);
        Ok(())
    })?;
    Ok(passed)
}

/// Every test run in both modes (the suites passed, or the step failed).
fn passed(report: &Report) -> usize {
    report
        .suites
        .values()
        .flat_map(|s| s.modes.values())
        .map(|c| c.passed)
        .sum()
}

/// Removes a private stack entirely (containers, network, volumes) when dropped.
struct PrivateStack<'a> {
    sh: &'a Shell,
    compose: Compose,
    stack: Stack,
}

impl Drop for PrivateStack<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.stack.remove_all(self.sh, &self.compose, true) {
            eprintln!(
                "warning: could not remove the private stack {}: {err:#}",
                self.stack.project()
            );
        }
        // Its build (the archive, extracted) is of no use to any later run; its reports stay.
        crate::commands::run_state::remove_build(&self.stack);
    }
}

#[derive(Default)]
struct Steps {
    done: Vec<(String, f64)>,
}

impl Steps {
    /// A step of one Compose flavour, named `name (v1)`.
    fn run<T>(&mut self, tag: &str, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        self.step(&format!("{name} ({tag})"), step)
    }

    fn step<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        // Ctrl-C during a step that is not a wait (a build, a test run) still ends `ci` here.
        crate::tools::util::check_interrupted().with_context(|| format!("ci step `{name}`"))?;
        let style = Style::stdout();
        println!("{}", style.green(&format!("== {name}")));
        let started = Instant::now();
        let result = step().with_context(|| format!("ci step `{name}`"));
        let seconds = started.elapsed().as_secs_f64();
        self.done.push((name.to_owned(), seconds));
        if result.is_err() {
            self.print();
            println!(
                "{}",
                style.red(&format!("FAILED: {name} after {seconds:.1} s"))
            );
        }
        result
    }

    fn print(&self) {
        println!("\nci steps:");
        for (name, seconds) in &self.done {
            println!("  {name:<28} {seconds:>7.1} s");
        }
        let total: f64 = self.done.iter().map(|(_, s)| s).sum();
        println!("  {:<28} {total:>7.1} s", "total");
    }
}
