//! What a stack's test runs keep in its state folder (`Stack::state_dir`): the archive's
//! extraction, nextest's store, the pool socket and the reports, and the lock that lets one run
//! at a time use them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use genesis_model as model;

use crate::commands::archive::ARCHIVE;
use crate::commands::parity::Target;
use crate::commands::pool::POOL_SOCKET;
use crate::services::Stack;
use crate::services::run::Owner;
use crate::tools::util::{project_root, usage};

/// Where the archive is extracted, once: the listing extracts it, and both modes run the
/// extracted binaries (nextest's reuse of a build), the container through the mounted
/// workspace. Each extraction of the archive costs ~0.3 s of CPU.
pub const EXTRACTED: &str = "extract/suites";

/// Removes the test archive of `stack` and its extraction, keeping its reports: for a private
/// stack that no later run uses.
pub fn remove_build(stack: &Stack) {
    let dir = stack.state_dir();
    let _ = std::fs::remove_dir_all(dir.join(EXTRACTED));
    let _ = std::fs::remove_file(dir.join(ARCHIVE));
    let _ = std::fs::remove_file(crate::commands::archive::built_from_stamp(
        &dir.join(ARCHIVE),
    ));
}

/// Where a stack's runs keep what a run of another stack must not see, relative to the
/// workspace (the container sees it under its mount): the extracted archive, the pool socket,
/// nextest's store (its JUnit reports) and the xtask's own reports.
pub struct Store {
    /// The stack's state folder, relative to the workspace root.
    pub dir: String,
    /// Nextest's store, relative to the workspace root.
    pub nextest: String,
    /// The nextest configuration naming that store, when it is not the workspace's own.
    pub config: Option<String>,
}

impl Store {
    pub fn of(stack: &Stack) -> Result<Store> {
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
    pub fn config_args(&self, root: &str) -> Vec<String> {
        self.config
            .iter()
            .flat_map(|c| ["--config-file".to_owned(), format!("{root}/{c}")])
            .collect()
    }

    /// Where `target`'s run writes its JUnit report, relative to the workspace root.
    pub fn junit(&self, target: Target) -> String {
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
pub const NEXTEST_CONFIG: &str = ".config/nextest.toml";

pub const NEXTEST_STORE: &str = "target/nextest";

/// The workspace's nextest configuration with its store moved to `store`: the profiles stay
/// the workspace's own.
pub fn with_store(config: &str, store: &str) -> Result<String> {
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
pub struct RunLock(PathBuf);

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn lock_runs(stack: &Stack, dir: &Path) -> Result<RunLock> {
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
