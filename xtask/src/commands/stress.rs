//! `cargo xtask test --repeat N [--cpu-load]`: the suites run N times, optionally beside a CPU
//! load, without stopping at the first failure, and a flake report of every test that failed
//! (or differed between the modes, or ran in one mode only) at least once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::commands::parity::{Outcome, Report, Target, TestId};
use crate::services::Stack;
use crate::tools::util::{check_failed, interrupted};

/// What N rounds found.
#[derive(Debug, Default, Serialize)]
pub struct Flakes {
    pub rounds: usize,
    pub cpu_load_threads: usize,
    /// Rounds in which every test passed in every mode, with parity.
    pub clean_rounds: usize,
    /// Every test with a problem in at least one round, most frequent first.
    pub tests: Vec<Flaky>,
    /// Rounds that ended without a report (the services would not start, ...), with why.
    pub broken_rounds: Vec<String>,
    pub seconds: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Flaky {
    #[serde(flatten)]
    pub id: TestId,
    /// In how many rounds it had a problem.
    pub rounds: usize,
    /// How often it failed in each mode.
    pub failed: BTreeMap<Target, usize>,
    /// Its problem in the last round that had one.
    pub last_problem: String,
}

/// Runs the suites `rounds` times on `stack` (Ctrl-C stops after the round it interrupts).
/// `run_round` runs the suites once and returns their report.
pub fn repeat(
    stack: &Stack,
    targets: &[Target],
    rounds: usize,
    cpu_load: bool,
    mut run_round: impl FnMut() -> Result<Report>,
) -> Result<Flakes> {
    let load = cpu_load.then(CpuLoad::start);
    let mut flakes = Flakes {
        rounds: 0,
        cpu_load_threads: load.as_ref().map_or(0, |l| l.threads),
        ..Flakes::default()
    };
    let mut seen: BTreeMap<TestId, Flaky> = BTreeMap::new();
    for round in 1..=rounds {
        eprintln!(
            "round {round} of {rounds}{}",
            if cpu_load { ", beside a CPU load" } else { "" }
        );
        let started = Instant::now();
        let result = run_round();
        flakes.seconds.push(started.elapsed().as_secs_f64());
        flakes.rounds = round;
        if interrupted() {
            return Err(check_failed(format!(
                "interrupted in round {round} of {rounds}"
            )));
        }
        match result {
            Ok(report) => {
                if report.ok {
                    flakes.clean_rounds += 1;
                } else {
                    keep_reports(stack, targets, round);
                }
                note(&mut seen, &report);
                eprintln!(
                    "round {round}: {} tests, {}",
                    report.tests.len(),
                    if report.ok {
                        "all passed".to_owned()
                    } else {
                        format!("{} problem(s)", report.problems.len())
                    }
                );
            }
            Err(err) => {
                eprintln!("round {round} ended without a report: {err:#}");
                flakes.broken_rounds.push(format!(
                    "round {round}: {}",
                    genesis_settings::redact(&format!("{err:#}"))
                ));
            }
        }
    }
    drop(load);
    flakes.tests = seen.into_values().collect();
    flakes
        .tests
        .sort_by(|a, b| b.rounds.cmp(&a.rounds).then(a.id.cmp(&b.id)));
    Ok(flakes)
}

/// Keeps the JUnit reports of a round that had a problem (the next round overwrites them): the
/// failed tests' output is there.
fn keep_reports(stack: &Stack, targets: &[Target], round: usize) {
    let dir = stack.state_dir();
    for target in targets {
        let from = dir.join(format!("junit-{}.xml", target.name()));
        let to = dir.join(format!("junit-{}-round-{round}.xml", target.name()));
        match std::fs::copy(&from, &to) {
            Ok(_) => eprintln!("kept {}", to.display()),
            Err(err) => eprintln!("warning: could not keep {}: {err}", from.display()),
        }
    }
}

/// Counts each test's problems of one round.
fn note(seen: &mut BTreeMap<TestId, Flaky>, report: &Report) {
    let problems: Vec<(&TestId, String)> = report
        .tests
        .iter()
        .filter_map(|row| {
            let outcomes: Vec<Option<Outcome>> = row.outcomes.values().copied().collect();
            let failed = outcomes.contains(&Some(Outcome::Failed));
            let uneven = outcomes.windows(2).any(|w| w[0] != w[1]);
            (failed || uneven).then(|| {
                let words: Vec<String> = row
                    .outcomes
                    .iter()
                    .map(|(t, o)| {
                        let word = match o {
                            Some(Outcome::Passed) => "passed",
                            Some(Outcome::Failed) => "failed",
                            Some(Outcome::Skipped) => "skipped",
                            None => "did not run",
                        };
                        format!("{} {word}", t.name())
                    })
                    .collect();
                (&row.id, words.join(", "))
            })
        })
        .collect();
    for (id, problem) in problems {
        let row = report.tests.iter().find(|r| &r.id == id);
        let flaky = seen.entry(id.clone()).or_insert_with(|| Flaky {
            id: id.clone(),
            rounds: 0,
            failed: BTreeMap::new(),
            last_problem: String::new(),
        });
        flaky.rounds += 1;
        flaky.last_problem = problem;
        for (target, outcome) in row.into_iter().flat_map(|r| &r.outcomes) {
            if *outcome == Some(Outcome::Failed) {
                *flaky.failed.entry(*target).or_default() += 1;
            }
        }
    }
}

pub fn print(flakes: &Flakes) {
    println!(
        "\n{} round(s){}: {} clean, {} with a problem, {} without a report",
        flakes.rounds,
        if flakes.cpu_load_threads > 0 {
            format!(
                " beside a CPU load of {} busy threads",
                flakes.cpu_load_threads
            )
        } else {
            String::new()
        },
        flakes.clean_rounds,
        flakes.rounds - flakes.clean_rounds - flakes.broken_rounds.len(),
        flakes.broken_rounds.len()
    );
    if flakes.tests.is_empty() {
        println!("no test failed in any round");
    } else {
        println!("tests with a problem in at least one round (the flake report):");
        for t in &flakes.tests {
            let modes: Vec<String> = t
                .failed
                .iter()
                .map(|(target, n)| format!("failed {n}x in {}", target.name()))
                .collect();
            println!(
                "  {}: {} of {} rounds ({}); last: {}",
                t.id,
                t.rounds,
                flakes.rounds,
                modes.join(", "),
                t.last_problem
            );
        }
    }
    for broken in &flakes.broken_rounds {
        println!("  {broken}");
    }
}

/// Whether the rounds found nothing: every round clean.
pub fn verdict(flakes: &Flakes) -> Result<()> {
    if flakes.clean_rounds == flakes.rounds {
        Ok(())
    } else {
        Err(check_failed(format!(
            "{} test(s) had a problem and {} round(s) ended without a report, in {} round(s)",
            flakes.tests.len(),
            flakes.broken_rounds.len(),
            flakes.rounds
        )))
    }
}

/// One busy thread per CPU, for as long as it lives: a machine as loaded as a shared CI
/// runner, made inside this process so that nothing of it outlives the command.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    threads: usize,
}

impl CpuLoad {
    fn start() -> CpuLoad {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                            );
                        }
                    }
                })
            })
            .collect();
        CpuLoad {
            stop,
            workers,
            threads,
        }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::parity::{Outcomes, compare};

    fn id(name: &str) -> TestId {
        TestId {
            suite: "integrations".into(),
            name: name.into(),
        }
    }

    fn round(host: &[(&str, Outcome)], container: &[(&str, Outcome)]) -> Report {
        let outcomes = |list: &[(&str, Outcome)]| -> Outcomes {
            list.iter().map(|(n, o)| (id(n), *o)).collect()
        };
        compare(&[
            (Target::Host, outcomes(host)),
            (Target::Container, outcomes(container)),
        ])
    }

    #[test]
    fn every_test_with_a_problem_in_any_round_is_counted_per_round_and_mode() {
        use Outcome::{Failed, Passed};
        let mut seen = BTreeMap::new();
        note(
            &mut seen,
            &round(
                &[("a", Passed), ("b", Failed)],
                &[("a", Passed), ("b", Passed)],
            ),
        );
        note(
            &mut seen,
            &round(
                &[("a", Passed), ("b", Passed)],
                &[("a", Passed), ("b", Passed)],
            ),
        );
        note(
            &mut seen,
            &round(
                &[("a", Failed), ("b", Failed)],
                &[("a", Passed), ("b", Failed)],
            ),
        );
        note(
            &mut seen,
            &round(&[("a", Passed)], &[("a", Passed), ("c", Passed)]),
        );
        assert!(!seen.contains_key(&id("x")));
        let a = &seen[&id("a")];
        assert_eq!((a.rounds, a.failed.get(&Target::Host)), (1, Some(&1)));
        let b = &seen[&id("b")];
        assert_eq!(b.rounds, 2);
        assert_eq!(b.failed[&Target::Host], 2);
        assert_eq!(b.failed[&Target::Container], 1);
        assert_eq!(b.last_problem, "host failed, container failed");
        let c = &seen[&id("c")];
        assert_eq!(c.rounds, 1);
        assert!(c.failed.is_empty());
        assert_eq!(c.last_problem, "host did not run, container passed");
    }
}
