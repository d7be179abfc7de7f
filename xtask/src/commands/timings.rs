//! Where a `test` run's wall time went, phase by phase: one line at the end of the run and
//! `timings.json` in the stack's state folder, which `cargo xtask bench` reads.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The file in the stack's state folder that holds the last run's [`Timings`].
pub const TIMINGS: &str = "timings.json";

/// A run's phases in seconds, in the order they happen. `listing` runs beside `services`
/// (it is not part of the sum); `host` and `container` are each mode's own run inside `suites`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Tools, the Docker daemon, Compose, images and the stack's state, before anything starts.
    pub checks: f64,
    /// The build check of the application, the pool server and the archive (or the given
    /// archive's check, listing and copy).
    pub build: f64,
    /// Starting the services until each answers.
    pub services: f64,
    /// Extracting and listing the archive, on a thread beside `services`.
    pub listing: f64,
    /// What `services` waited for the listing after the services were up.
    pub listing_wait: f64,
    /// Starting the pool server until it serves, and beside it the container's check that it
    /// runs the host's binaries.
    pub pool: f64,
    /// From the first mode's start until the last mode's end.
    pub suites: f64,
    pub host: Option<f64>,
    pub container: Option<f64>,
    /// Stopping the pool server and removing the services the run started.
    pub teardown: f64,
    /// Reading the JUnit reports, comparing the modes and writing the reports.
    pub reports: f64,
    /// The whole of `run_suites`, from its first check to its last report.
    pub total: f64,
}

impl Timings {
    /// One line: `time: checks 0.3 s, build 0.9 s, ...; total 9.0 s`.
    pub fn line(&self) -> String {
        format!("time: {}", self.phases())
    }

    /// The phases as [`Timings::line`] shows them, without its `time: `.
    pub fn phases(&self) -> String {
        let modes: Vec<String> = [("host", self.host), ("container", self.container)]
            .iter()
            .filter_map(|(name, s)| s.map(|s| format!("{name} {s:.1}")))
            .collect();
        let modes = if modes.is_empty() {
            String::new()
        } else {
            format!(" ({})", modes.join(", "))
        };
        let wait = if self.listing_wait >= 0.05 {
            format!(", then waited {:.1} s for it", self.listing_wait)
        } else {
            String::new()
        };
        format!(
            "checks {:.2} s, build {:.1} s, services {:.1} s (beside the listing {:.1} s{wait}), \
             pool {:.2} s, suites {:.1} s{modes}, teardown {:.1} s, reports {:.2} s; total {:.1} s \
             (harness {:.1} s)",
            self.checks,
            self.build,
            self.services,
            self.listing,
            self.pool,
            self.suites,
            self.teardown,
            self.reports,
            self.total,
            self.harness(),
        )
    }

    /// Everything but the suites' own run.
    pub fn harness(&self) -> f64 {
        (self.total - self.suites).max(0.0)
    }

    /// Each phase's median over `runs` (none: all zero).
    pub fn median(runs: &[Timings]) -> Timings {
        let median = |f: fn(&Timings) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            match v.len() {
                0 => 0.0,
                n if n % 2 == 1 => v[n / 2],
                n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
            }
        };
        let mode = |f: fn(&Timings) -> Option<f64>| {
            let ran: Vec<Timings> = runs
                .iter()
                .filter_map(|t| {
                    f(t).map(|total| Timings {
                        total,
                        ..Timings::default()
                    })
                })
                .collect();
            (!ran.is_empty()).then(|| Timings::median(&ran).total)
        };
        Timings {
            checks: median(|t| t.checks),
            build: median(|t| t.build),
            services: median(|t| t.services),
            listing: median(|t| t.listing),
            listing_wait: median(|t| t.listing_wait),
            pool: median(|t| t.pool),
            suites: median(|t| t.suites),
            host: mode(|t| t.host),
            container: mode(|t| t.container),
            teardown: median(|t| t.teardown),
            reports: median(|t| t.reports),
            total: median(|t| t.total),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let file = dir.join(TIMINGS);
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(&file, json).with_context(|| format!("write {}", file.display()))
    }

    pub fn read(dir: &Path) -> Result<Timings> {
        let file = dir.join(TIMINGS);
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("read {}", file.display()))
    }
}

/// A stopwatch for consecutive phases: each [`Clock::lap`] is the time since the previous one.
pub struct Clock {
    start: Instant,
    last: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            last: now,
        }
    }

    pub fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let lap = now - self.last;
        self.last = now;
        lap.as_secs_f64()
    }

    pub fn total(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::Timings;

    #[test]
    fn the_line_names_every_phase_and_only_the_modes_that_ran() {
        let t = Timings {
            checks: 0.31,
            build: 0.94,
            services: 1.42,
            listing: 1.01,
            listing_wait: 0.0,
            pool: 0.3,
            suites: 5.2,
            host: Some(5.0),
            container: None,
            teardown: 0.4,
            reports: 0.05,
            total: 8.6,
        };
        assert_eq!(
            t.line(),
            "time: checks 0.31 s, build 0.9 s, services 1.4 s (beside the listing 1.0 s), \
             pool 0.30 s, suites 5.2 s (host 5.0), teardown 0.4 s, reports 0.05 s; total 8.6 s \
             (harness 3.4 s)"
        );
        let waited = Timings {
            listing_wait: 0.4,
            ..t.clone()
        };
        assert!(
            waited
                .line()
                .contains("(beside the listing 1.0 s, then waited 0.4 s for it)")
        );
    }

    #[test]
    fn the_median_is_taken_phase_by_phase() {
        let run = |build: f64, host: Option<f64>| Timings {
            build,
            host,
            ..Timings::default()
        };
        let median = Timings::median(&[run(3.0, Some(1.0)), run(1.0, None), run(2.0, Some(2.0))]);
        assert_eq!(median.build, 2.0);
        assert_eq!(median.host, Some(1.5));
        assert_eq!(median.container, None);
        assert_eq!(Timings::median(&[]), Timings::default());
    }

    #[test]
    fn timings_survive_their_file() {
        let dir = std::env::temp_dir().join(format!("xtask-timings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Timings {
            suites: 4.0,
            total: 6.5,
            host: Some(3.9),
            ..Timings::default()
        };
        t.write(&dir).unwrap();
        assert_eq!(Timings::read(&dir).unwrap(), t);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
