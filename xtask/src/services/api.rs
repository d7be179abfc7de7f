//! The application run as a process on the host for one command (`verify-migration`, `load`):
//! started in the background, waited for on `/health/ready` with the one readiness timeout,
//! the wait ended by Ctrl-C or by the process exiting, and killed when the guard goes.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xshell::Cmd;

use super::http::http_ok;
use crate::tools::child;
use crate::tools::util::{check_failed, interrupted};

/// A running `genesis-api serve`; dropping it kills the process.
#[derive(Debug)]
pub struct ApiProcess {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl ApiProcess {
    /// Starts `serve` (which listens on loopback `port`) with its output in `log` and waits
    /// until `/health/ready` answers 200, at most `timeout`. On any failure the process is
    /// already gone when the error returns.
    pub fn start(serve: Cmd<'_>, port: u16, log: &Path, timeout: Duration) -> Result<ApiProcess> {
        let child = child::background(serve, log).context("start genesis-api")?;
        let mut api = ApiProcess {
            child,
            port,
            log: log.to_owned(),
        };
        api.wait_ready(timeout)?;
        Ok(api)
    }

    /// The process id, for what `/proc` tells of it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(check_failed(genesis_settings::redact(&format!(
                    "genesis-api exited ({status}) before it was ready; its log ({}):\n{}",
                    self.log.display(),
                    text.trim_end()
                ))));
            }
            if http_ok(self.port, "/health/ready") {
                return Ok(());
            }
            if interrupted() {
                return Err(check_failed("interrupted while waiting for genesis-api"));
            }
            if started.elapsed() >= timeout {
                return Err(check_failed(format!(
                    "genesis-api was not ready after {} s (/health/ready did not answer 200); see {}",
                    timeout.as_secs(),
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
