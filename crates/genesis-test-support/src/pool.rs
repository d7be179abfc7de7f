//! The pool of ready test databases: clones of the migrated template made ahead of need, so
//! that a test's database is handed out by renaming one, not by copying the template while the
//! test waits.
//!
//! The pool lives in the server, not in a process: a ready clone is a database named
//! `genesis_p_<template digest>_<suffix>`, and handing one out is one `ALTER DATABASE ... RENAME`
//! to the test's `genesis_t_` name, which PostgreSQL makes atomic (a second claimant of the same
//! clone finds it gone and tries the next). So test processes (nextest runs one per test), test
//! threads, and a host run beside a container run all share it without a coordinator.
//!
//! Each process holds two connections on a thread of its own, whichever runtime its tests use:
//! `handout`, persistent, on which tests claim their databases, and `worker`, on which the pool
//! is refilled to [`target`] ready clones and used databases are dropped, off the hand-out path.
//! A clone interrupted by the end of its process is either committed whole or rolled back by
//! the server, so the pool never holds half a database.
//!
//! Under nextest every test is a process of its own, which would pay a login for its hand-out.
//! So `cargo xtask test` also runs a pool server (`examples/test_db_pool.rs`, [`serve`]): one
//! process that keeps clones of its own ready and hands them out to every test process of the
//! run over a Unix socket that [`SOCKET_VAR`] names (the workspace is mounted in the
//! container, so the host's server serves both modes), with no query on the way. Without it,
//! or when it does not answer, a process uses a pool of its own, as above.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use genesis_api::db;
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

mod server;

pub use self::server::{Ready, serve};
use crate::{DB_PREFIX, HINT, ident, settings, sweep, template, unique_suffix};

/// The prefix of ready clones; the template's digest follows it.
pub const POOL_PREFIX: &str = "genesis_p_";
/// The variable that sets how many ready clones the pool keeps (default [`DEFAULT_TARGET`]).
pub const TARGET_VAR: &str = "GENESIS_TEST_DB_POOL";
const DEFAULT_TARGET: usize = 4;
/// The variable that keeps a failed test's database for inspection when set to `1`.
pub const KEEP_VAR: &str = "GENESIS_KEEP_FAILED_DB";
/// The variable naming a file to which each hand-out appends its time in milliseconds and
/// whether a ready clone was there (`2.1 hit`), for `cargo xtask bench`.
pub const TIMINGS_VAR: &str = "GENESIS_TEST_DB_TIMINGS";

/// Set to `1` when the test database goes away with the run (its container is removed): the
/// pool server then leaves its databases to it instead of dropping them as it stops.
pub const DISPOSABLE_VAR: &str = "GENESIS_TEST_DB_POOL_DISPOSABLE";
/// Set to `1` when the test database stays for the next run (`cargo xtask test --keep`): the
/// pool server then leaves its ready clones in it as the pool's (`genesis_p_...`), which the
/// next run's server takes over instead of copying the template again.
pub const LEAVE_READY_VAR: &str = "GENESIS_TEST_DB_POOL_LEAVE_READY";
/// The variable naming the Unix socket of the run's pool server.
pub const SOCKET_VAR: &str = "GENESIS_TEST_DB_POOL_SOCKET";
/// The server keeps more ready clones: it alone refills them, for every process of a run.
const SERVER_TARGET: usize = 8;
static DEFAULT: AtomicUsize = AtomicUsize::new(DEFAULT_TARGET);

/// How many ready clones the pool keeps, from [`TARGET_VAR`].
pub fn target() -> usize {
    match std::env::var(TARGET_VAR) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{TARGET_VAR}={value:?} is not a number of databases")),
        Err(_) => DEFAULT.load(Ordering::Relaxed),
    }
}

/// Hands out a database to one test: from the run's pool server when [`SOCKET_VAR`] names
/// one, otherwise (or when it does not answer) from this process's pool.
pub async fn checkout(start: Instant) -> Handout {
    if let Some(socket) = server_socket() {
        // The server hands out clones of its own build's template: they must be this one's.
        let request = format!("checkout {}", crate::template_digest());
        match ask_async(&socket, &request).await {
            Ok(reply) => {
                let mut words = reply.split_whitespace();
                if let (Some("ok"), Some(name), Some(how)) =
                    (words.next(), words.next(), words.next())
                {
                    return Handout {
                        name: name.to_owned(),
                        hit: how == "hit",
                        elapsed: start.elapsed(),
                    };
                }
                eprintln!(
                    "warning: the test database pool server answered {reply:?}; \
                     using a pool of this process"
                );
            }
            Err(err) => eprintln!(
                "warning: the test database pool server at {} did not answer ({err}); \
                 using a pool of this process",
                socket.display()
            ),
        }
    }
    pool().checkout(start).await
}

/// Gives a test's database back: dropped, or kept with the reason (see [`Pool::release`]).
pub fn release(name: String, keep: Option<String>) {
    if let Some(socket) = server_socket() {
        let request = match &keep {
            Some(why) => format!("keep {name} {why}"),
            None => format!("release {name}"),
        };
        match ask(&socket, &request) {
            Ok(reply) if reply == "ok" => return,
            Ok(reply) => eprintln!("warning: the pool server answered {reply:?} to {request:?}"),
            Err(err) => eprintln!("warning: the pool server did not take {name} back: {err}"),
        }
    }
    pool().release(name, keep);
}

fn server_socket() -> Option<PathBuf> {
    std::env::var_os(SOCKET_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// One request to the pool server at `socket`, one line each way.
pub fn ask(socket: &Path, request: &str) -> std::io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_owned())
}

async fn ask_async(socket: &Path, request: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream.write_all(format!("{request}\n").as_bytes()).await?;
    let mut reply = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut reply)
        .await?;
    Ok(reply.trim_end().to_owned())
}

/// Whether [`KEEP_VAR`] asks to keep failed tests' databases.
pub fn keep_failed() -> bool {
    match std::env::var(KEEP_VAR) {
        Ok(value) => match value.trim() {
            "1" | "true" => true,
            "0" | "false" | "" => false,
            other => panic!("{KEEP_VAR}={other:?}: expected 1 or 0"),
        },
        Err(_) => false,
    }
}

/// This process's view of the pool.
#[derive(Debug)]
pub struct Pool {
    handout: Client,
    worker: Arc<OnceLock<Client>>,
    runtime: Handle,
    template: String,
    prefix: String,
    refilling: Arc<AtomicBool>,
}

/// A database handed out, and how.
#[derive(Debug)]
pub struct Handout {
    pub name: String,
    /// Whether a ready clone was there (otherwise the template was cloned while waiting).
    pub hit: bool,
    pub elapsed: Duration,
}

/// The process's pool, connected on first use. Panics, saying how to start the server, when
/// it cannot be reached.
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Result<Pool, String>> = OnceLock::new();
    match POOL.get_or_init(Pool::start) {
        Ok(pool) => pool,
        Err(err) => panic!("{err}"),
    }
}

impl Pool {
    fn start() -> Result<Pool, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("genesis-test-db-pool".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => return drop(tx.send(Err(format!("a pool runtime: {err}")))),
                };
                runtime.block_on(async move {
                    let url = settings().test_database_url;
                    let started = async {
                        let handout = db::connect(&url).await.map_err(|err| {
                            format!("cannot reach the test database: {err}\n{HINT}")
                        })?;
                        let template = template(&handout).await;
                        Ok::<_, String>((handout, template))
                    }
                    .await;
                    let worker = Arc::new(OnceLock::new());
                    let ok = started.is_ok();
                    let _ = tx.send(started.map(|(handout, template)| Pool {
                        prefix: format!(
                            "{POOL_PREFIX}{}_",
                            &template[crate::TEMPLATE_PREFIX.len()..]
                        ),
                        handout,
                        worker: worker.clone(),
                        runtime: Handle::current(),
                        template,
                        refilling: Arc::new(AtomicBool::new(false)),
                    }));
                    if ok {
                        // The second connection, and the once-per-process sweep, come after
                        // the first hand-out is on its way.
                        if let Ok(client) = db::connect(&url).await {
                            sweep(&client).await;
                            let _ = worker.set(client);
                        }
                    }
                    // Keeps the connections and the refills running until the process ends.
                    std::future::pending::<()>().await
                });
            })
            .map_err(|err| format!("a pool thread: {err}"))?;
        rx.recv()
            .map_err(|_| "the test database pool did not start".to_owned())?
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// Hands out a database of its own to one test: a ready clone renamed, or, when the pool is
    /// empty, a clone made now. Either way the pool is then refilled in the background.
    pub async fn checkout(&'static self, start: Instant) -> Handout {
        let name = format!("{DB_PREFIX}{}", unique_suffix());
        let hit = self.claim(&name).await;
        if !hit {
            self.clone_template(&self.handout, &name).await;
        }
        let elapsed = start.elapsed();
        self.refill();
        Handout { name, hit, elapsed }
    }

    /// Renames a ready clone to `name`; false when none is left.
    async fn claim(&self, name: &str) -> bool {
        let pattern = format!("{}%", self.prefix.replace('_', "\\_"));
        for _ in 0..3 {
            let rows = self
                .handout
                .query(
                    "select datname from pg_database where datname like $1 and not datistemplate",
                    &[&pattern],
                )
                .await
                .unwrap_or_else(|e| panic!("list the pool: {}", db::error_chain(&e)));
            if rows.is_empty() {
                return false;
            }
            let mut ready: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
            // Parallel claimants start at different clones.
            let first = OsRng.next_u32() as usize % ready.len();
            ready.rotate_left(first);
            for candidate in ready {
                let rename = format!(
                    "alter database {} rename to {}",
                    ident(&candidate),
                    ident(name)
                );
                match self.handout.batch_execute(&rename).await {
                    Ok(()) => return true,
                    // Claimed by another test first.
                    Err(err) if err.code() == Some(&SqlState::UNDEFINED_DATABASE) => {}
                    Err(err) => panic!("claim {candidate}: {}", db::error_chain(&err)),
                }
            }
        }
        false
    }

    /// `create database name template <template>`, retried while another session holds the
    /// template for a moment.
    pub async fn clone_template(&self, client: &Client, name: &str) {
        // FILE_COPY copies the template's files instead of writing every page to the WAL
        // (PostgreSQL 15's default): about 11 ms here against 18 ms.
        let sql = format!(
            "create database {} template {} strategy file_copy",
            ident(name),
            ident(&self.template)
        );
        let mut delay = Duration::from_millis(10);
        for attempt in 1.. {
            match client.batch_execute(&sql).await {
                Ok(()) => return,
                // "source database is being accessed by other users": the builder's last
                // connection has not ended yet.
                Err(err) if err.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < 100 => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(err) => panic!(
                    "cannot create the test database {name} from {}: {}",
                    self.template,
                    db::error_chain(&err)
                ),
            }
        }
    }

    /// Tops the pool up to [`target`] ready clones on the worker connection, unless a refill of
    /// this process is already at it.
    pub fn refill(&'static self) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        self.runtime.spawn(async move {
            let target = target();
            let pattern = format!("{}%", self.prefix.replace('_', "\\_"));
            while let Some(worker) = self.worker_client().await {
                let ready: i64 = match worker
                    .query_one(
                        "select count(*) from pg_database where datname like $1",
                        &[&pattern],
                    )
                    .await
                {
                    Ok(row) => row.get(0),
                    Err(_) => break,
                };
                if ready >= target as i64 {
                    break;
                }
                let name = format!("{}{}", self.prefix, unique_suffix());
                self.clone_template(worker, &name).await;
            }
            self.refilling.store(false, Ordering::Release);
        });
    }

    async fn worker_client(&self) -> Option<&Client> {
        // The worker connects right after the first hand-out; wait for it briefly.
        for _ in 0..200 {
            if let Some(client) = self.worker.get() {
                return Some(client);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Drops a used database (or keeps it, with a comment the sweep honours), and waits for
    /// it, so that a test leaves nothing behind even when its process ends right after.
    pub fn release(&'static self, name: String, keep: Option<String>) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let client = match self.worker_client().await {
                Some(client) => client,
                None => &self.handout,
            };
            match keep {
                Some(why) => {
                    let sql = format!(
                        "comment on database {} is {}",
                        ident(&name),
                        crate::literal(&format!("genesis kept: {why}"))
                    );
                    if let Err(err) = client.batch_execute(&sql).await {
                        eprintln!(
                            "warning: cannot mark {name} as kept: {}",
                            db::error_chain(&err)
                        );
                    }
                }
                None => crate::drop_database(client, &name).await,
            }
            let _ = tx.send(());
        });
        let _ = rx.recv();
    }
}
