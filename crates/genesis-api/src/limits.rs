//! Limits that keep the API standing under load: a bound on concurrent password hashing (each
//! Argon2id hash holds 19 MiB and a core), and a deadline for each request.
//!
//! Hashing runs at most `HASH_CONCURRENCY` at once, on as many threads of its own: a few more
//! requests per slot may queue for a short while, and beyond that the answer is 503 with
//! `Retry-After`, so that a burst of logins costs bounded memory instead of queueing thousands of
//! 19 MiB hashes. Own threads rather than tokio's blocking pool because glibc keeps a freed
//! 19 MiB block in the arena of the thread that used it: hashes spread over a growing pool of
//! blocking threads held 866 MiB at peak under `cargo xtask load`, for two hashes at a time.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{Semaphore, oneshot};

use crate::{ApiError, AppState};

/// How many requests may queue per hashing slot before new ones are turned away.
pub const QUEUE_PER_SLOT: usize = 4;
/// How long a queued request waits for a slot before it is turned away. The queue's length is
/// what bounds memory; this only stops a request waiting on a machine too slow to drain it.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// What `Retry-After` tells a client that was turned away, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

type Job = Box<dyn FnOnce() + Send>;

/// The bound on concurrent password hashing, and the threads that hash.
#[derive(Debug)]
pub struct HashGate {
    slots: Arc<Semaphore>,
    capacity: usize,
    waiting: AtomicUsize,
    rejected: AtomicU64,
    /// Feeds the hashing threads; they end when the gate is dropped.
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// Decrements the queue length however the wait ends (a slot, a timeout, or the request being
/// dropped because its client went away).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashGate {
    pub fn new(capacity: usize) -> HashGate {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..capacity {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("hash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            // A panicking job drops its answer (a 500), not the thread.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot start a password hashing thread");
            }
        }
        HashGate {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            jobs: Mutex::new(jobs),
        }
    }

    /// Runs `work` on the blocking pool once a slot is free, or answers
    /// [`ApiError::Overloaded`] when the queue is full or the wait too long.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.capacity * QUEUE_PER_SLOT {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.reject());
                }
                let _queued = Queued(&self.waiting);
                match tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.slots).acquire_owned())
                    .await
                {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(self.reject()),
                }
            }
        };
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let value = work();
            // The slot is free before the answer arrives, so whoever gets the answer sees it
            // free (a panicking `work` frees it by unwinding).
            drop(permit);
            let _ = done.send(value);
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(ApiError::Internal("the hashing threads are gone".into()));
        }
        // A dropped sender means the job panicked on its thread.
        result
            .await
            .map_err(|_| ApiError::Internal("password hashing failed".into()))
    }

    fn reject(&self) -> ApiError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        ApiError::Overloaded {
            retry_after_secs: RETRY_AFTER_SECS,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn running(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// The middleware that answers 503 when a request outlives `REQUEST_TIMEOUT_SECS`.
pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.request_timeout();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit.as_secs()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_turned_away_and_counted() {
        let gate = Arc::new(HashGate::new(1));
        let (release, hold) = mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        // One slot busy until released, then the queue filled.
        let busy = {
            let gate = Arc::clone(&gate);
            let hold = Arc::clone(&hold);
            tokio::spawn(async move { gate.run(move || hold.lock().unwrap().recv().ok()).await })
        };
        while gate.running() == 0 {
            tokio::task::yield_now().await;
        }
        let mut queued = Vec::new();
        for _ in 0..QUEUE_PER_SLOT {
            let gate = Arc::clone(&gate);
            queued.push(tokio::spawn(async move { gate.run(|| ()).await }));
        }
        while gate.waiting() < QUEUE_PER_SLOT {
            tokio::task::yield_now().await;
        }
        let overflow = gate.run(|| ()).await;
        assert!(
            matches!(
                overflow,
                Err(ApiError::Overloaded {
                    retry_after_secs: 1
                })
            ),
            "{overflow:?}"
        );
        assert_eq!(gate.rejected(), 1);
        release.send(()).unwrap();
        assert!(busy.await.unwrap().is_ok());
        for task in queued {
            assert!(task.await.unwrap().is_ok());
        }
        assert_eq!((gate.running(), gate.waiting()), (0, 0));
    }
}
