//! CPU-heavy work off the async workers.
//!
//! Verifying a SAMLResponse is pure CPU (parse, canonicalise, digest, RSA):
//! about 70 µs for a real IdP's response, but a crafted one under the size
//! cap costs far more, and an async worker that runs it cannot answer any of
//! its other connections meanwhile (the review froze `GET /saml/metadata`
//! for 14 s with two POSTs). So each verification runs on tokio's blocking
//! threads, at most one per core at a time for the whole process (more would
//! only share the same cores), while the worker that asked goes on serving.
//! Requests waiting for a slot are bounded too: past [`MAX_WAITING`] a
//! login is answered 503 `verify_busy` at once instead of queueing without
//! end.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// Most verifications waiting for a slot before new ones are turned away.
pub const MAX_WAITING: usize = 1024;

/// Why [`VerifyPool::run`] did not run the job to the end.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Every slot is busy and [`MAX_WAITING`] jobs already wait.
    #[error("too many sign-ins are being verified at once; try again")]
    Busy,
    /// The job panicked or was cancelled (a bug; the request fails closed).
    #[error("the verification job did not finish")]
    Lost,
}

impl PoolError {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Busy => "verify_busy",
            Self::Lost => "internal_error",
        }
    }
}

/// A bounded set of slots for CPU-heavy jobs, shared by every worker.
#[derive(Debug)]
pub struct VerifyPool {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl VerifyPool {
    /// A pool running at most `slots` jobs at once, with at most
    /// `max_waiting` more waiting.
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        Self {
            slots: Semaphore::new(slots.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// The process's pool: one slot per core.
    pub fn global() -> &'static VerifyPool {
        static POOL: OnceLock<VerifyPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            VerifyPool::new(cores, MAX_WAITING)
        })
    }

    /// Runs `job` on a blocking thread once a slot is free; the caller's
    /// task yields meanwhile.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(PoolError::Busy);
                }
                let p = self.slots.acquire().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                p.map_err(|_| PoolError::Lost)?
            }
        };
        let out = tokio::task::spawn_blocking(job).await;
        drop(permit);
        out.map_err(|_| PoolError::Lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_off_the_worker_and_waiters_are_bounded() {
        let pool = Arc::new(VerifyPool::new(1, 1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // One job holds the only slot until told to finish.
        let busy = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(move || rx.recv().is_ok()).await })
        };
        // The worker is free meanwhile: a timer on it still fires.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One more may wait; the next is turned away at once.
        let waiter = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|| 7).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.run(|| 8).await, Err(PoolError::Busy));
        tx.send(()).ok();
        assert_eq!(busy.await.ok(), Some(Ok(true)));
        assert_eq!(waiter.await.ok(), Some(Ok(7)));
        // Slots and the waiting count are back: a job runs at once.
        assert_eq!(pool.run(|| 9).await, Ok(9));
    }
}
