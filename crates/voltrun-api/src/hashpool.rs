//! The bounded pool every password hash and verify runs on. Argon2 takes 19 MiB and tens of
//! milliseconds per call by design; on tokio's blocking pool (up to 512 threads) a flood of
//! registrations or logins ran hundreds at once and the server was OOM-killed. Here at most
//! `concurrency` hashes run at once, at most `queue` more wait, and a caller past both is
//! refused at once ([`PoolError::Busy`], a 429 with `Retry-After`) instead of piling up.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a hash did not run.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every slot and every place in the queue is taken.
    #[error("the server is busy checking passwords; try again shortly")]
    Busy,
    /// The hashing thread panicked or was cancelled.
    #[error("hash task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How many hashes run at once and how many may wait.
#[derive(Debug, Clone, Copy)]
pub struct HashPoolConfig {
    /// Hashes running at once (each on a blocking thread, each ~19 MiB).
    pub concurrency: usize,
    /// Callers that may wait for a slot before the next is refused.
    pub queue: usize,
}

impl Default for HashPoolConfig {
    /// One hash at a time and a short queue: the most restrictive setting that still works.
    fn default() -> Self {
        HashPoolConfig { concurrency: 1, queue: 16 }
    }
}

/// A bounded pool for CPU- and memory-heavy hashing; cheap to clone.
#[derive(Clone)]
pub struct HashPool {
    /// Permits to run: `concurrency`.
    running: Arc<Semaphore>,
    /// Permits to be running or waiting: `concurrency + queue`.
    admitted: Arc<Semaphore>,
}

impl HashPool {
    /// A pool with this configuration (a concurrency of 0 counts as 1).
    pub fn new(cfg: HashPoolConfig) -> HashPool {
        let concurrency = cfg.concurrency.max(1);
        HashPool { running: Arc::new(Semaphore::new(concurrency)), admitted: Arc::new(Semaphore::new(concurrency + cfg.queue)) }
    }

    /// Runs `f` on a blocking thread once a slot is free; [`PoolError::Busy`] at once when
    /// the queue is full. The slot is held until `f` returns, even if the caller goes away.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, PoolError> {
        let admitted: OwnedSemaphorePermit = self.admitted.clone().try_acquire_owned().map_err(|_| PoolError::Busy)?;
        let running = self.running.clone().acquire_owned().await.map_err(|_| PoolError::Busy)?;
        Ok(tokio::task::spawn_blocking(move || {
            let _held = (admitted, running);
            f()
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_concurrency_run_and_a_full_queue_is_refused() {
        let pool = HashPool::new(HashPoolConfig { concurrency: 2, queue: 3 });
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (pool, now, peak) = (pool.clone(), now.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(200));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // Wait (bounded) until the five hold their places: two running, three queued.
        for _ in 0..500 {
            if pool.admitted.available_permits() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(pool.run(|| ()).await, Err(PoolError::Busy)), "a sixth caller is refused");
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        pool.run(|| ()).await.unwrap();
    }
}
