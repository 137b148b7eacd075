//! The bounded pool every password hash and verify runs on. Argon2 takes 19 MiB and tens of
//! milliseconds per call by design; on tokio's blocking pool (up to 512 threads) a flood of
//! registrations or logins ran hundreds at once and the server was OOM-killed. Here at most
//! `concurrency` hashes run at once, at most `queue` more wait, and a caller past both is
//! refused at once ([`PoolError::Busy`], a 429 with `Retry-After`) instead of piling up.
//!
//! The hashes run on `concurrency` threads of the pool's own, started once, not on tokio's
//! blocking pool, so hashing never adds threads (or the malloc arenas glibc gives new threads).
//! That each freed 19 MiB buffer goes back to the system is
//! [`crate::sys::return_large_allocations_to_the_system`]'s job.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Why a hash did not run.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every slot and every place in the queue is taken.
    #[error("the server is busy checking passwords; try again shortly")]
    Busy,
    /// The hash panicked (its thread carries on with the next one).
    #[error("the hash did not finish")]
    Lost,
}

/// How many hashes run at once and how many may wait.
#[derive(Debug, Clone, Copy)]
pub struct HashPoolConfig {
    /// Hashes running at once (each on a thread of the pool's, each ~19 MiB).
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

/// One queued hash: the work and the admission permit it holds until it has run.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// A bounded pool for CPU- and memory-heavy hashing; cheap to clone.
#[derive(Clone)]
pub struct HashPool {
    /// Permits to be running or waiting: `concurrency + queue`.
    admitted: Arc<Semaphore>,
    /// Where the pool's threads take work from.
    jobs: mpsc::Sender<Job>,
}

impl HashPool {
    /// A pool with this configuration (a concurrency of 0 counts as 1). Starts its threads,
    /// which end when the last clone of the pool is dropped.
    pub fn new(cfg: HashPoolConfig) -> HashPool {
        let concurrency = cfg.concurrency.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("voltrun-hash-{n}"))
                .spawn(move || loop {
                    // The lock is held only to take the next job, not while it runs.
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawn a password-hash thread");
        }
        HashPool { admitted: Arc::new(Semaphore::new(concurrency + cfg.queue)), jobs }
    }

    /// Runs `f` on one of the pool's threads once one is free; [`PoolError::Busy`] at once
    /// when the queue is full. The place is held until `f` returns, even if the caller goes away.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, PoolError> {
        let admitted: OwnedSemaphorePermit = self.admitted.clone().try_acquire_owned().map_err(|_| PoolError::Busy)?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _held = admitted;
            // A panicking hash must not end the thread: the pool would shrink for good.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if let Ok(out) = out {
                let _ = done.send(out);
            }
        });
        self.jobs.send(job).map_err(|_| PoolError::Lost)?;
        result.await.map_err(|_| PoolError::Lost)
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

    /// Hashes ran on tokio's blocking pool, up to 512 threads of it over a flood.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_on_the_pools_own_fixed_threads() {
        let pool = HashPool::new(HashPoolConfig { concurrency: 2, queue: 64 });
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let name = pool.run(|| std::thread::current().name().map(String::from)).await.unwrap();
            names.insert(name.expect("named thread"));
        }
        assert!(names.len() <= 2 && names.iter().all(|n| n.starts_with("voltrun-hash-")), "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_hash_is_lost_but_the_pool_goes_on() {
        let pool = HashPool::new(HashPoolConfig { concurrency: 1, queue: 4 });
        assert!(matches!(pool.run(|| panic!("boom")).await, Err(PoolError::Lost)));
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
