//! Warm instances per function, and the per-function concurrency limit with its queue. An
//! idle instance holds a unit of the `idle_instances` gauge while it is in a pool, so the gauge
//! follows it out on every path (taken, made stale, reaped, drained).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use voltrun_core::Function;

use crate::instance::Instance;
use crate::metrics::{Gauge, GaugeUnit};
use crate::{EngineError, Metrics};

/// An instance in a pool, counted as idle.
struct Idle {
    inst: Instance,
    _counted: GaugeUnit,
}

struct FnPool {
    /// The newest version seen; instances of older versions are never reused.
    version: i64,
    /// Bumped by [`Pools::invalidate`]: an instance taken out under an older generation is
    /// not taken back (its function changed or a secret it holds did).
    generation: u64,
    idle: Vec<Idle>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

/// One caller waiting for a function's slot, counted while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Every function's pool.
pub(crate) struct Pools {
    map: Mutex<HashMap<String, FnPool>>,
    concurrency: usize,
    queue: usize,
    metrics: Arc<Metrics>,
}

/// The instances of idle entries (their gauge units are given back).
fn instances(idle: Vec<Idle>) -> Vec<Instance> {
    idle.into_iter().map(|i| i.inst).collect()
}

impl Pools {
    pub(crate) fn new(concurrency: usize, queue: usize, metrics: Arc<Metrics>) -> Pools {
        Pools { map: Mutex::new(HashMap::new()), concurrency, queue, metrics }
    }

    /// A permit to run `f` (at most `concurrency` at once). With `throttle`, refuses when
    /// `queue` callers already wait; without, waits as long as it takes (async runs).
    pub(crate) async fn acquire(&self, f: &Function, throttle: bool) -> Result<OwnedSemaphorePermit, EngineError> {
        let (slots, waiting) = {
            let mut map = self.map.lock().expect("pool lock");
            let p = map.entry(f.id.clone()).or_insert_with(|| FnPool {
                version: f.version,
                generation: 0,
                idle: Vec::new(),
                slots: Arc::new(Semaphore::new(self.concurrency)),
                waiting: Arc::new(AtomicUsize::new(0)),
            });
            (p.slots.clone(), p.waiting.clone())
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if throttle && waiting.load(Relaxed) >= self.queue {
            self.metrics.throttled.fetch_add(1, Relaxed);
            return Err(EngineError::Throttled { retry_after_s: 1 });
        }
        // Counted as waiting until the permit comes or the wait is dropped (a guard, so a
        // cancelled wait cannot leave the count, and with it the 429 threshold, too high).
        let _waiting = Waiting::new(&waiting);
        Ok(slots.acquire_owned().await.expect("pool semaphores are never closed"))
    }

    /// The functions with no free slot: every instance they may run is busy.
    pub(crate) fn saturated(&self) -> Vec<String> {
        let map = self.map.lock().expect("pool lock");
        map.iter().filter(|(_, p)| p.slots.available_permits() == 0).map(|(id, _)| id.clone()).collect()
    }

    /// A warm instance of exactly `f`'s version, if one is idle, and the pool's generation
    /// (to give back to [`Pools::put_idle`]). Instances are keyed by (function, version):
    /// two versions never share one (SPEC §13), and several versions may be warm at once
    /// (an alias's split). Seeing a newer version than any seen before makes the idle
    /// instances of the previous newest stale (the unqualified calls moved on), returned
    /// for the caller to retire; older versions' idle instances age out with the reaper.
    pub(crate) fn take_idle(&self, f: &Function) -> (Option<Instance>, Vec<Instance>, u64) {
        let mut map = self.map.lock().expect("pool lock");
        let Some(p) = map.get_mut(&f.id) else { return (None, Vec::new(), 0) };
        let mut stale = Vec::new();
        if f.version > p.version {
            let previous = p.version;
            p.version = f.version;
            let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut p.idle).into_iter().partition(|i| i.inst.version == previous);
            p.idle = keep;
            stale = instances(old);
        }
        let found = p.idle.iter().rposition(|i| i.inst.version == f.version).map(|at| p.idle.remove(at).inst);
        (found, stale, p.generation)
    }

    /// Returns an instance after a run. Gives it back when it may not be kept (its version
    /// is stale or its function is gone), for the caller to retire.
    pub(crate) fn put_idle(&self, f: &Function, inst: Instance, generation: u64) -> Option<Instance> {
        let mut map = self.map.lock().expect("pool lock");
        match map.get_mut(&f.id) {
            Some(p) if p.generation == generation && inst.version == f.version => {
                p.idle.push(Idle { inst, _counted: GaugeUnit::new(&self.metrics, Gauge::IdleInstances) });
                None
            }
            _ => Some(inst),
        }
    }

    /// Makes every instance of a function stale (after an update or delete): returns its
    /// idle instances to retire, and refuses the busy ones when they come back. The pool
    /// itself stays (with its concurrency slots) until the reaper finds it empty.
    pub(crate) fn invalidate(&self, function_id: &str) -> Vec<Instance> {
        let mut map = self.map.lock().expect("pool lock");
        let Some(p) = map.get_mut(function_id) else { return Vec::new() };
        p.generation += 1;
        instances(std::mem::take(&mut p.idle))
    }

    /// Takes every idle instance of every function.
    pub(crate) fn drain_all(&self) -> Vec<Instance> {
        let mut map = self.map.lock().expect("pool lock");
        instances(map.values_mut().flat_map(|p| std::mem::take(&mut p.idle)).collect())
    }

    /// Takes every instance idle for longer than `ttl`, and forgets pools with nothing in
    /// them.
    pub(crate) fn reap(&self, ttl: Duration) -> Vec<Instance> {
        let mut map = self.map.lock().expect("pool lock");
        let mut out = Vec::new();
        map.retain(|_, p| {
            let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut p.idle).into_iter().partition(|i| i.inst.last_used.elapsed() > ttl);
            p.idle = keep;
            out.extend(instances(old));
            !(p.idle.is_empty() && p.slots.available_permits() == self.concurrency && p.waiting.load(Relaxed) == 0)
        });
        out
    }
}
