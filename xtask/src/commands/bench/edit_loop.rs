//! The edit-and-rerun loop as a developer runs it: one test file touched, then
//! `test --both-modes -- auth::login`, cold (services started and removed) and warm
//! (`--keep`, services reused), each against its own floor: the build plus the slower mode's run.

use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use super::Stats;
use crate::services::Stack;
use crate::services::compose::Compose;
use crate::tools::util::project_root;

/// The file the loop touches, as a developer's edit would.
const EDITED: &str = "crates/genesis-api/tests/auth.rs";
/// The one test the loop reruns.
const FILTER: &str = "auth::login";

pub(super) struct EditLoop {
    pub cold: Stats,
    pub warm: Stats,
    /// Each run's build plus its slower mode's run, as the run itself reported them.
    pub cold_floor: Stats,
    pub warm_floor: Stats,
}

/// `reps` cold and warm loops, interleaved; the stack's warm services are removed before
/// each cold loop and at the end.
pub(super) fn bench_loop(
    sh: &Shell,
    compose: &Compose,
    stack: &Stack,
    xtask: &Path,
    reps: usize,
) -> Result<EditLoop> {
    let (mut cold, mut warm, mut cold_floor, mut warm_floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        stack.remove_warm(sh, compose)?;
        let (wall, floor) = one_loop(sh, xtask, false)?;
        cold.push(wall);
        cold_floor.push(floor);
        // The first --keep starts what the next one reuses.
        one_loop(sh, xtask, true)?;
        let (wall, floor) = one_loop(sh, xtask, true)?;
        warm.push(wall);
        warm_floor.push(floor);
        eprintln!(
            "  rep {}: cold {:.1} s (floor {:.1} s), warm {:.1} s (floor {:.1} s)",
            rep + 1,
            cold[rep],
            cold_floor[rep],
            warm[rep],
            warm_floor[rep]
        );
    }
    stack.remove_warm(sh, compose)?;
    Ok(EditLoop {
        cold: Stats::of(cold),
        warm: Stats::of(warm),
        cold_floor: Stats::of(cold_floor),
        warm_floor: Stats::of(warm_floor),
    })
}

/// One touch and rerun: its wall time, and its build plus slower mode's run.
fn one_loop(sh: &Shell, xtask: &Path, keep: bool) -> Result<(f64, f64)> {
    let edited = project_root().join(EDITED);
    std::fs::File::options()
        .append(true)
        .open(&edited)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .with_context(|| format!("touch {}", edited.display()))?;
    let keep = keep.then_some("--keep");
    let started = Instant::now();
    let out = cmd!(sh, "{xtask} test --both-modes {keep...} -- {FILTER}")
        .quiet()
        .ignore_status()
        .output()
        .context("run the loop's test")?;
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("the loop's test failed:\n{}", tail.join("\n"));
    }
    Ok((wall, own_floor(&stderr)?))
}

/// The build and the slower mode's run, from what `test` prints: `built in X s` and
/// `<mode> run finished in Y s`.
fn own_floor(stderr: &str) -> Result<f64> {
    let seconds = |line: &str, prefix: &str| -> Option<f64> {
        line.split(prefix)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let build = stderr
        .lines()
        .find_map(|l| {
            l.starts_with("built in ")
                .then(|| seconds(l, "built in "))?
        })
        .context("the loop's test printed no build time")?;
    let slower = stderr
        .lines()
        .filter(|l| l.contains(" run finished in "))
        .filter_map(|l| seconds(l, " run finished in "))
        .fold(f64::NAN, f64::max);
    if slower.is_nan() {
        bail!("the loop's test printed no run time");
    }
    Ok(build + slower)
}

#[cfg(test)]
mod tests {
    use super::own_floor;

    #[test]
    fn the_floor_is_the_build_plus_the_slower_mode() {
        let stderr = "building the suites\nbuilt in 3.5 s\nstarting test-db\n\
                      host run finished in 0.6 s\ncontainer run finished in 1.2 s\n";
        assert!((own_floor(stderr).unwrap() - 4.7).abs() < 1e-9);
        assert!(own_floor("host run finished in 0.6 s\n").is_err());
        assert!(own_floor("built in 3.5 s\n").is_err());
    }
}
