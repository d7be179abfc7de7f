//! The pool server: one process that keeps clones of its own ready and hands them out to
//! every test process of a run over a Unix socket, dropping what tests give back behind the
//! answer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use genesis_api::db;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use super::{DEFAULT, DISPOSABLE_VAR, Handout, LEAVE_READY_VAR, Pool, SERVER_TARGET, pool, target};
use crate::{DB_PREFIX, settings, unique_suffix};

/// When the pool server calls its `ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// Once its ready clones are made: the first hand-outs find clones waiting (for measuring
    /// a hand-out).
    Filled,
    /// Once it listens: the workers make the clones while the test processes start (which
    /// takes longer than the fill), and a hand-out that comes first waits for the next clone.
    Listening,
}

/// The pool server: listens on `socket`, calls `ready` as `when` says, and serves until
/// `until` completes (for `examples/test_db_pool.rs`, until its standard input
/// ends: the xtask that started it closes it, or dies).
/// Requests: `checkout <template digest>` → `ok <name> hit|miss` (or an error when the
/// client's migrations are not the server's); `release <name>` → `ok` at once, the database
/// being dropped behind the answer; `keep <name> <why>` → `ok` once the database is marked.
///
/// The server's ready clones are its own, named as tests' databases from the start and kept
/// in memory: a hand-out takes the next one, without a query. Clones are made by workers on
/// connections of their own, and drops run on another, after the test's own connections are
/// gone (a `DROP DATABASE ... WITH (FORCE)` that has to end a session waits 100 ms in the
/// server); the server drops what is pending and what no test took before it exits.
pub async fn serve(
    socket: &Path,
    when: Ready,
    ready: impl FnOnce(),
    until: impl Future<Output = ()>,
) -> std::io::Result<()> {
    DEFAULT.store(SERVER_TARGET, Ordering::Relaxed);
    let pool = pool();
    let server = Server::start(pool, when).await;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    ready();
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => break,
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(answer(server.clone(), stream));
            }
        }
    }
    let _ = std::fs::remove_file(socket);
    server.finish().await;
    Ok(())
}

/// What the pool server holds beside the process's [`Pool`]: its ready clones, the workers
/// that make them, and the queue of databases to drop.
#[derive(Clone)]
struct Server {
    pool: &'static Pool,
    /// Ready clones, oldest first; a hand-out that finds none waits here for the next one.
    ready_tx: tokio::sync::mpsc::UnboundedSender<String>,
    ready_rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Clones ready, and ready or being made.
    ready: Arc<AtomicUsize>,
    stock: Arc<AtomicUsize>,
    /// Wakes a worker when a clone was taken.
    wanted: Arc<tokio::sync::Notify>,
    /// Set when the server stops: the workers make no more clones, the dropper no longer waits.
    stopping: Arc<AtomicBool>,
    /// `None` once the server stops: the dropper then ends with the last queued drop.
    drops: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>>,
    dropper: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Connections that make clones: a test run takes databases faster than one can copy them.
const FILL_WORKERS: usize = 2;
/// How long a hand-out waits for the workers before it makes its clone itself.
const FILL_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting hand-out looks whether the server's connection is still there.
const CONNECTION_CHECK_EVERY: Duration = Duration::from_millis(100);
/// The pool server's answer once its connection to the test database is gone.
const LOST: &str = "the pool server lost its connection to the test database (stopped or killed?)";

impl Server {
    /// Starts the workers that keep the pool filled, and with [`Ready::Filled`] waits until
    /// they have filled it.
    async fn start(pool: &'static Pool, when: Ready) -> Server {
        let (drops, queue) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let server = Server {
            pool,
            ready_tx,
            ready_rx: Arc::new(tokio::sync::Mutex::new(ready_rx)),
            ready: Arc::new(AtomicUsize::new(0)),
            stock: Arc::new(AtomicUsize::new(0)),
            wanted: Arc::new(tokio::sync::Notify::new()),
            stopping: Arc::new(AtomicBool::new(false)),
            drops: Arc::new(std::sync::Mutex::new(Some(drops))),
            dropper: Arc::new(tokio::sync::Mutex::new(None)),
        };
        // Ready clones a kept run left (`LEAVE_READY_VAR`) are this server's first: one rename
        // each on the hand-out connection, which is open already.
        for name in server.take_over().await {
            server.stock.fetch_add(1, Ordering::AcqRel);
            server.add_ready(name);
        }
        // Each connection is made on the task that uses it, so that the server listens without
        // waiting for three logins one after the other.
        let url = settings().test_database_url;
        let unconnected = Arc::new(AtomicUsize::new(0));
        for _ in 0..FILL_WORKERS {
            let (server, url, unconnected) = (server.clone(), url.clone(), unconnected.clone());
            tokio::spawn(async move {
                match db::connect(&url).await {
                    Ok(client) => server.fill(client).await,
                    Err(_) => drop(unconnected.fetch_add(1, Ordering::AcqRel)),
                }
            });
        }
        let dropper = tokio::spawn({
            let server = server.clone();
            async move {
                match db::connect(&url).await {
                    Ok(client) => server.drop_each(client, queue).await,
                    // Without a connection of its own the dropper shares a hand-out one.
                    Err(_) => drop_each_on(&pool.handout, queue, None).await,
                }
            }
        });
        *server.dropper.lock().await = Some(dropper);
        // The first hand-outs of a run come all at once, one per test slot of both modes.
        let deadline = Instant::now() + FILL_WAIT;
        while when == Ready::Filled
            && unconnected.load(Ordering::Acquire) < FILL_WORKERS
            && server.ready.load(Ordering::Acquire) < target()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server
    }

    /// Renames the pool's ready clones of this template (`genesis_p_<digest>_...`, left by
    /// the previous run's server) to test databases of this server's, up to its target. A
    /// rename is atomic, so a clone another claimant took first is simply not there.
    async fn take_over(&self) -> Vec<String> {
        let pattern = format!("{}%", self.pool.prefix.replace('_', "\\_"));
        let Ok(rows) = self
            .pool
            .handout
            .query(
                "select datname from pg_database where datname like $1 and not datistemplate",
                &[&pattern],
            )
            .await
        else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for row in rows.iter().take(target()) {
            let candidate: String = row.get(0);
            let name = format!("{DB_PREFIX}{}", unique_suffix());
            let rename = format!(
                "alter database {} rename to {}",
                crate::ident(&candidate),
                crate::ident(&name)
            );
            if self.pool.handout.batch_execute(&rename).await.is_ok() {
                taken.push(name);
            }
        }
        taken
    }

    /// Leaves the ready clones as the pool's (`genesis_p_<digest>_...`) for the next run's
    /// server, once the workers have stopped: the database stays ([`LEAVE_READY_VAR`]).
    async fn leave_ready(&self) {
        let mut ready = self.ready_rx.lock().await;
        ready.close();
        while let Ok(name) = ready.try_recv() {
            let Some(suffix) = name.strip_prefix(DB_PREFIX) else {
                continue;
            };
            let rename = format!(
                "alter database {} rename to {}",
                crate::ident(&name),
                crate::ident(&format!("{}{suffix}", self.pool.prefix))
            );
            if self.pool.handout.batch_execute(&rename).await.is_err() {
                // Not left as the pool's: dropped with the others.
                if let Some(queue) = self.drops.lock().expect("the drop queue").as_ref() {
                    let _ = queue.send(name);
                }
            }
        }
    }

    fn add_ready(&self, name: String) {
        self.ready.fetch_add(1, Ordering::AcqRel);
        let _ = self.ready_tx.send(name);
    }

    /// Clones the template on its own connection whenever the pool is below its target.
    async fn fill(self, client: Client) {
        while !self.stopping.load(Ordering::Acquire) {
            if self.stock.fetch_add(1, Ordering::AcqRel) >= target() {
                self.stock.fetch_sub(1, Ordering::AcqRel);
                self.wanted.notified().await;
                continue;
            }
            // Named as a test's database from the start: the server's clones are its own, so
            // a hand-out needs no claim (no rename) on the way.
            let name = format!("{DB_PREFIX}{}", unique_suffix());
            self.pool.clone_template(&client, &name).await;
            self.add_ready(name);
        }
    }

    /// The next ready clone. When none is ready the hand-out waits for the workers' next one
    /// (the clone being made is no slower than one made now, and a clone made on the hand-out
    /// connection would hold up every other hand-out behind it).
    /// A lost connection to the test database is an error at once, not a wait for workers
    /// that cannot clone any more.
    async fn checkout(&self, start: Instant) -> Result<Handout, String> {
        if self.pool.handout.is_closed() {
            return Err(LOST.to_owned());
        }
        let mut ready = self.ready_rx.lock().await;
        let (name, hit) = match ready.try_recv() {
            Ok(name) => (name, true),
            Err(_) => {
                let since = Instant::now();
                let mut next = None;
                while next.is_none() && since.elapsed() < FILL_WAIT {
                    if self.pool.handout.is_closed() {
                        return Err(LOST.to_owned());
                    }
                    match tokio::time::timeout(CONNECTION_CHECK_EVERY, ready.recv()).await {
                        Ok(Some(name)) => next = Some(name),
                        Ok(None) => break,
                        Err(_) => {}
                    }
                }
                match next {
                    Some(name) => (name, false),
                    // No worker answers: make it here.
                    None => {
                        let name = format!("{DB_PREFIX}{}", unique_suffix());
                        self.pool.clone_template(&self.pool.handout, &name).await;
                        return Ok(Handout {
                            name,
                            hit: false,
                            elapsed: start.elapsed(),
                        });
                    }
                }
            }
        };
        self.ready.fetch_sub(1, Ordering::AcqRel);
        self.stock.fetch_sub(1, Ordering::AcqRel);
        self.wanted.notify_one();
        Ok(Handout {
            name,
            hit,
            elapsed: start.elapsed(),
        })
    }

    /// Drops the given-back databases on `client`, after the pool is full again: making the
    /// next hand-outs comes first.
    async fn drop_each(self, client: Client, queue: tokio::sync::mpsc::UnboundedReceiver<String>) {
        drop_each_on(&client, queue, Some(&self)).await;
    }

    /// Drops what is still queued and the clones no test took, for up to [`FINISH_WITHIN`];
    /// nothing when the test database goes away with the run ([`DISPOSABLE_VAR`]).
    async fn finish(self) {
        if std::env::var(DISPOSABLE_VAR).is_ok_and(|v| v == "1") {
            self.stopping.store(true, Ordering::Release);
            return;
        }
        let dropper = self.dropper.lock().await.take();
        self.stopping.store(true, Ordering::Release);
        self.wanted.notify_waiters();
        // The clones being made are dropped (or left) with the others once they are ready.
        let since = Instant::now();
        while self.stock.load(Ordering::Acquire) > self.ready.load(Ordering::Acquire)
            && since.elapsed() < FINISH_WITHIN
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if std::env::var(LEAVE_READY_VAR).is_ok_and(|v| v == "1") {
            self.leave_ready().await;
        }
        {
            let mut ready = self.ready_rx.lock().await;
            ready.close();
            let drops = self.drops.lock().expect("the drop queue");
            while let Ok(name) = ready.try_recv() {
                if let Some(queue) = drops.as_ref() {
                    let _ = queue.send(name);
                }
            }
        }
        self.drops.lock().expect("the drop queue").take();
        if let Some(dropper) = dropper
            && tokio::time::timeout(FINISH_WITHIN, dropper).await.is_err()
        {
            eprintln!(
                "warning: the test database pool server stopped with drops pending; \
                 the next run sweeps them"
            );
        }
    }
}

/// How long a stopping pool server keeps dropping the databases given back last.
const FINISH_WITHIN: Duration = Duration::from_secs(20);
/// How long a drop waits for the test's own sessions to end before it ends them.
const SESSIONS_GRACE: Duration = Duration::from_secs(2);
/// How long a drop gives way to the workers filling the pool.
const DROP_YIELDS: Duration = Duration::from_millis(250);

async fn drop_each_on(
    client: &Client,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<String>,
    server: Option<&Server>,
) {
    while let Some(name) = queue.recv().await {
        if let Some(server) = server {
            let since = Instant::now();
            while server.ready.load(Ordering::Acquire) < target()
                && !server.stopping.load(Ordering::Acquire)
                && since.elapsed() < DROP_YIELDS
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The test process closes its connections as it ends; dropping before that would
        // end them by force, which PostgreSQL follows with a 100 ms sleep.
        let since = Instant::now();
        while since.elapsed() < SESSIONS_GRACE {
            let sessions: i64 = match client
                .query_one(
                    "select count(*) from pg_stat_activity where datname = $1",
                    &[&name],
                )
                .await
            {
                Ok(row) => row.get(0),
                Err(_) => break,
            };
            if sessions == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        crate::drop_database(client, &name).await;
    }
}

async fn answer(server: Server, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if tokio::io::BufReader::new(read)
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let line = line.trim_end();
    let reply = match line.split_once(' ').unwrap_or((line, "")) {
        ("checkout", digest) if digest != crate::template_digest() => {
            format!(
                "error: this server hands out clones of template {}",
                server.pool.template
            )
        }
        ("checkout", _) => match server.checkout(Instant::now()).await {
            Ok(handout) => {
                let how = if handout.hit { "hit" } else { "miss" };
                format!("ok {} {how}", handout.name)
            }
            Err(why) => format!("error: {why}"),
        },
        ("release", name) if name.starts_with(DB_PREFIX) => {
            let queue = server.drops.lock().expect("the drop queue");
            match queue.as_ref().map(|q| q.send(name.to_owned())) {
                Some(Ok(())) => "ok".to_owned(),
                _ => "error: the server is stopping".to_owned(),
            }
        }
        ("keep", rest) if rest.starts_with(DB_PREFIX) => {
            let (name, why) = rest.split_once(' ').unwrap_or((rest, "kept"));
            let (name, why) = (name.to_owned(), why.to_owned());
            let pool = server.pool;
            let _ = tokio::task::spawn_blocking(move || pool.release(name, Some(why))).await;
            "ok".to_owned()
        }
        _ => format!("error: unknown request {line:?}"),
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
}
