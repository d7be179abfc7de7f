//! `cargo xtask ci`: everything CI needs, in order, with the services removed at the end
//! whatever happened.

use std::time::Instant;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::compose::Compose;
use crate::flags::{self, Suite};
use crate::parity::Target;
use crate::services::{Service, Session};
use crate::util::{Style, check_failed};
use crate::{codegen, images, preflight, test, verify};

impl flags::Ci {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let mut steps = Steps::default();
        steps.run("formatting", || {
            cmd!(sh, "cargo fmt --all -- --check")
                .run()
                .context("run `cargo fmt --all` and commit")
        })?;
        steps.run("clippy", || {
            cmd!(
                sh,
                "cargo clippy --quiet --workspace --all-targets -- -D warnings"
            )
            .run()
            .context("clippy found problems")
        })?;
        steps.run("unit tests", || {
            cmd!(sh, "cargo test --quiet --workspace --lib --bins")
                .run()
                .context("unit tests failed")
        })?;
        steps.run("codegen --check", codegen::check)?;
        preflight::docker_daemon(sh)?;
        steps.run("images", || images::ensure(sh))?;
        steps.run("service tests", || {
            cmd!(sh, "cargo test --quiet -p xtask --test engine")
                .run()
                .context("service tests failed")
        })?;
        let compose = Compose::detect(sh)?;
        // The session removes the services it started when it is dropped, on success, on a
        // failed step and on Ctrl-C alike.
        let session = steps.run("db-up", || {
            Session::up(sh, &compose, &[Service::TestDb, Service::Redis])
        })?;
        let report = steps.run("test --both-modes", || {
            let report = test::run_suites(sh, &[Target::Host, Target::Container], Suite::All)?;
            test::print_report(&report);
            if report.ok {
                Ok(report)
            } else {
                Err(check_failed(report.problems.join("; ")))
            }
        })?;
        // Every test run in both modes (the suites passed, or the step above failed).
        let passed: usize = report
            .suites
            .values()
            .flat_map(|s| s.modes.values())
            .map(|c| c.passed)
            .sum();
        steps.run("verify-migration", || {
            verify::report(&verify::checklist(sh, Some(report))?, false)
        })?;
        steps.run("db-down", || {
            drop(session);
            Ok(())
        })?;
        steps.print();
        println!("tests: {passed} passed, 0 failed");
        Ok(())
    }
}

#[derive(Default)]
struct Steps {
    done: Vec<(&'static str, f64)>,
}

impl Steps {
    fn run<T>(&mut self, name: &'static str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        let style = Style::stdout();
        println!("{}", style.green(&format!("== {name}")));
        let started = Instant::now();
        let result = step().with_context(|| format!("ci step `{name}`"));
        let seconds = started.elapsed().as_secs_f64();
        self.done.push((name, seconds));
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
            println!("  {name:<20} {seconds:>7.1} s");
        }
        let total: f64 = self.done.iter().map(|(_, s)| s).sum();
        println!("  {:<20} {total:>7.1} s", "total");
    }
}
