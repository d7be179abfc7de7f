//! The suites' shared pool of test databases: the pool server `test` starts on the host, and
//! the socket each mode's tests reach it on.

use anyhow::{Context, Result, bail};
use genesis_model as model;
use xshell::{Shell, cmd};

use crate::services::{Running, Service};
use crate::tools::child;
use crate::tools::util::target_dir;
use crate::tools::util::test_threads;

/// The suites' pool server (`crates/genesis-api/examples/test_db_pool.rs`): one process whose
/// connections hand out every test's database, so that no test process logs in for it.
pub const POOL_SERVER: &str = "test_db_pool";
pub const POOL_SOCKET_VAR: &str = "GENESIS_TEST_DB_POOL_SOCKET";
const POOL_TARGET_VAR: &str = "GENESIS_TEST_DB_POOL";
const POOL_DISPOSABLE_VAR: &str = "GENESIS_TEST_DB_POOL_DISPOSABLE";
const POOL_LEAVE_READY_VAR: &str = "GENESIS_TEST_DB_POOL_LEAVE_READY";
pub const POOL_SOCKET: &str = "test-db-pool.sock";

/// Starts the pool server on the host, against the test database as host-mode tests see it,
/// and waits until it serves. `None` (the tests then use pools of their own) where a Unix
/// socket path would be too long.
/// `sockets` is the socket as the host's tests reach it, then as the container's do. With
/// `keep` (the services stay warm for the next run) the server leaves its ready clones in the
/// test database as it stops, and the next run's server takes them over.
pub fn start_pool_server(
    sh: &Shell,
    running: &Running<'_>,
    sockets: [String; 2],
    keep: bool,
) -> Result<Option<child::Session>> {
    let [socket, in_container] = sockets;
    if socket.len() > 100 || in_container.len() > 100 {
        eprintln!("note: {socket} is too long for a Unix socket; no shared test database pool");
        return Ok(None);
    }
    let server = target_dir().join(format!("debug/examples/{POOL_SERVER}"));
    // Ready clones for two rounds of every test slot of both modes: a round of short tests
    // takes them faster than the workers copy the template on a loaded machine.
    let ready = (4 * test_threads() + 2).to_string();
    let mut cmd = cmd!(sh, "{server} {socket}").env(POOL_TARGET_VAR, ready);
    if running.started(Service::TestDb) {
        // The run removes the test database with its container: nothing to drop at the end.
        cmd = cmd.env(POOL_DISPOSABLE_VAR, "1");
    }
    if keep {
        cmd = cmd.env(POOL_LEAVE_READY_VAR, "1");
    }
    let cmd = cmd
        .env_remove(model::API.in_container_var)
        .envs(running.host_settings()?);
    let mut session = child::Session::spawn(cmd).context("start the test database pool")?;
    let ready = session
        .read_line()
        .context("start the test database pool")?;
    if ready != "ready" {
        bail!("the test database pool server said {ready:?} instead of ready");
    }
    Ok(Some(session))
}
