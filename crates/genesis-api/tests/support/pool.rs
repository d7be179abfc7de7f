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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use genesis_api::db;
use rand_core::{OsRng, RngCore};
use tokio::runtime::Handle;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::{DB_PREFIX, HINT, ident, settings, sweep, template, unique_suffix};

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

/// How many ready clones the pool keeps, from [`TARGET_VAR`].
pub fn target() -> usize {
    match std::env::var(TARGET_VAR) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{TARGET_VAR}={value:?} is not a number of databases")),
        Err(_) => DEFAULT_TARGET,
    }
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
pub struct Pool {
    handout: Client,
    worker: Arc<OnceLock<Client>>,
    runtime: Handle,
    template: String,
    prefix: String,
    refilling: Arc<AtomicBool>,
}

/// A database handed out, and how.
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
                            &template[super::TEMPLATE_PREFIX.len()..]
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
        let sql = format!(
            "create database {} template {}",
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
    fn refill(&'static self) {
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
                        super::literal(&format!("genesis kept: {why}"))
                    );
                    if let Err(err) = client.batch_execute(&sql).await {
                        eprintln!(
                            "warning: cannot mark {name} as kept: {}",
                            db::error_chain(&err)
                        );
                    }
                }
                None => super::drop_database(client, &name).await,
            }
            let _ = tx.send(());
        });
        let _ = rx.recv();
    }
}
