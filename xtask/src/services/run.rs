//! Who started a container: this run, a kept one (`db-up`), or a run that died; told from the
//! run label every container carries and `/proc`.

/// Whether a run's services outlive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Removed when the run ends (test, verify-migration, ci, bench).
    ThisRun,
    /// Left running on purpose (`db-up`); never an orphan.
    Kept,
    /// Left running for the next run to reuse (`test --keep`), labelled with its recipe
    /// (see [`super::warm`]); never an orphan.
    Warm,
}

impl Lifetime {
    /// The run label of what this lifetime starts; `recipe` is the warm services' recipe.
    pub(super) fn label(self, recipe: Option<&str>) -> String {
        match (self, recipe) {
            (Lifetime::ThisRun, _) => this_run(),
            (Lifetime::Warm, Some(recipe)) => warm_label(recipe),
            _ => KEPT.to_owned(),
        }
    }
}

const KEPT: &str = "kept";

/// This process as a run identity: `run:<host>:<pid>:<start time in clock ticks>`. The start
/// time tells a live process from a later one that got the same pid.
pub fn this_run() -> String {
    let pid = std::process::id();
    format!(
        "run:{}:{pid}:{}",
        hostname(),
        process_start(pid).unwrap_or_default()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`, after the command name (which may hold spaces).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Who a container belongs to, as far as this machine can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Started by `db-up` (or by hand): left running on purpose.
    Kept,
    /// Started by a run that still lives, or on another machine (cannot tell: treated as alive).
    Alive,
    /// Started by a run that died without removing it.
    Dead,
}

pub fn owner_of(label: &str) -> Owner {
    let parts: Vec<&str> = label.split(':').collect();
    match parts.as_slice() {
        ["run", host, pid, start] => {
            if *host != hostname() {
                return Owner::Alive;
            }
            let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
                return Owner::Alive;
            };
            if process_start(pid) == Some(start) {
                Owner::Alive
            } else {
                Owner::Dead
            }
        }
        _ => Owner::Kept,
    }
}

/// The run label's prefix of a kept, reusable service (see [`super::warm`]).
pub(super) const WARM: &str = "warm:";

/// The run label of a warm service made from `recipe`.
pub(super) fn warm_label(recipe: &str) -> String {
    format!("{WARM}{recipe}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_alive_while_its_process_is() {
        assert_eq!(owner_of(&this_run()), Owner::Alive);
        assert_eq!(owner_of(KEPT), Owner::Kept);
        let host = hostname();
        // Same pid, another start time: the pid was reused, the run is gone.
        let pid = std::process::id();
        assert_eq!(owner_of(&format!("run:{host}:{pid}:1")), Owner::Dead);
        assert_eq!(owner_of(&format!("run:{host}:4194305:1")), Owner::Dead);
        assert_eq!(owner_of("run:another-host:1:1"), Owner::Alive);
        // Warm services outlive their run on purpose: never reclaimed as orphans.
        let warm = Lifetime::Warm.label(Some("0123abcd"));
        assert_eq!(warm, "warm:0123abcd");
        assert_eq!(owner_of(&warm), Owner::Kept);
    }
}
