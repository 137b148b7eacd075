//! Spare instances: per runtime, instances started ahead (at the default memory, with no
//! function environment) and blocked in the bootstrap before init, so a new function's first
//! run only loads its code. Ready spares hold a unit of the `spare_instances` gauge and
//! spares being started a [`Starting`] place: both are given back on every path.
//!
//! The pool adapts to demand (issue 19: bursts of new functions): each shelf has a target
//! between `--spares` and `--spares-max`. A take that leaves fewer than half the target
//! ready, or finds none, doubles the target; a shelf nobody took from for an idle TTL halves it, and
//! the ready spares past it are retired. At most one spare per core starts at once, so
//! refilling never takes the cores from the runs of the burst it serves. The targets, hits
//! and misses are in `/metrics`.
//!
//! Shelves are keyed by runtime and whether the spares have a network (egress, issue 14): a
//! function with an `egress` list takes a networked spare, whose network admits nothing until
//! it is given the function's plan. Networked spares start once the first such function ran.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voltrun_core::function::DEFAULT_MEMORY_MB;
use voltrun_core::{Function, Runtime};
use voltrun_sandbox::network::NetworkPlan;

use crate::instance::Instance;
use crate::launch::base_env;
use crate::metrics::{Gauge, GaugeUnit};
use crate::{Engine, Metrics};

/// Set in a spare's environment: its bootstrap sends `{"type":"started"}` once its
/// interpreter is up, before it waits for init (docs/RUNTIME_PROTOCOL.md), and unsets it.
pub(crate) const SPARE_VAR: &str = "VOLTRUN_SPARE";

/// How long a spare may take to say it started (gVisor's sandboxes take ~0.5 s here).
const STARTED_WITHIN: Duration = Duration::from_secs(30);

/// A shelf's key: the runtime, and whether its spares have a network.
type Kind = (Runtime, bool);

/// One kind's spares: the ready ones, how many are being started, and how many it aims for.
struct Shelf {
    ready: Vec<(Instance, GaugeUnit)>,
    starting: usize,
    target: usize,
    /// When a spare was last taken (or the target last halved).
    last_take: Instant,
}

type Shelves = Arc<Mutex<HashMap<Kind, Shelf>>>;

/// How the pool's targets move: pure, so the rule is tested apart from any instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SparePolicy {
    /// The least a shelf aims for (`--spares`).
    pub base: usize,
    /// The most (`--spares-max`): bounds the memory idle spares hold.
    pub max: usize,
    /// Spares of one kind started at once (one per core).
    pub at_once: usize,
}

impl SparePolicy {
    /// The target after a take that left `ready_after` spares ready (`hit`: it found one):
    /// doubled when fewer than half the target are left. Every shelf together aims for two
    /// runtimes' worth at most (up to six shelves: three runtimes, with a network or not), so
    /// with `others` the other shelves' targets, the pool's memory stays bounded.
    pub(crate) fn after_take(&self, target: usize, ready_after: usize, hit: bool, others: usize) -> usize {
        let wanted = if !hit || ready_after * 2 < target { (target.max(1) * 2).clamp(self.base, self.max.max(self.base)) } else { target };
        wanted.min((self.max * 2).saturating_sub(others)).max(self.base)
    }

    /// The target once the shelf went an idle period without a take.
    pub(crate) fn after_idle(&self, target: usize) -> usize {
        (target / 2).max(self.base)
    }

    /// How many to start now, with `ready` ready and `starting` being started.
    pub(crate) fn starts_now(&self, target: usize, ready: usize, starting: usize) -> usize {
        target.saturating_sub(ready + starting).min(self.at_once.saturating_sub(starting))
    }
}

/// Every runtime's spares.
pub(crate) struct Spares {
    shelves: Shelves,
    policy: SparePolicy,
    metrics: Arc<Metrics>,
}

/// A spare being started: counted in its runtime's `starting` until it is shelved or its
/// start fails (or its task is dropped).
pub(crate) struct Starting {
    shelves: Shelves,
    kind: Kind,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(shelf) = self.shelves.lock().expect("spares lock").get_mut(&self.kind) {
            shelf.starting -= 1;
        }
    }
}

impl Spares {
    pub(crate) fn new(policy: SparePolicy, metrics: Arc<Metrics>) -> Spares {
        Spares { shelves: Arc::default(), policy, metrics }
    }

    fn shelf<'a>(&self, shelves: &'a mut HashMap<Kind, Shelf>, kind: Kind) -> &'a mut Shelf {
        shelves.entry(kind).or_insert_with(|| {
            self.metrics.spare_target.fetch_add(self.policy.base as i64, Relaxed);
            Shelf { ready: Vec::new(), starting: 0, target: self.policy.base, last_take: Instant::now() }
        })
    }

    /// Moves a shelf's target, keeping the `spare_target` gauge (the sum of every shelf's).
    fn set_target(&self, shelf: &mut Shelf, target: usize) {
        self.metrics.spare_target.fetch_add(target as i64 - shelf.target as i64, Relaxed);
        shelf.target = target;
    }

    /// A ready spare of `kind`, if any; the take (hit or miss) moves the shelf's target.
    fn take(&self, kind: Kind) -> Option<Instance> {
        let mut shelves = self.shelves.lock().expect("spares lock");
        let shelf = self.shelf(&mut shelves, kind);
        // The oldest first: a spare is shelved once its sandbox is up, while its interpreter
        // may still be loading the bootstrap; the one shelved longest ago has most likely
        // finished (and is blocked reading its init frame).
        let spare = (!shelf.ready.is_empty()).then(|| shelf.ready.remove(0).0);
        let (current, ready_after, hit) = (shelf.target, shelf.ready.len(), spare.is_some());
        let others: usize = shelves.iter().filter(|(k, _)| **k != kind).map(|(_, s)| s.target).sum();
        let target = self.policy.after_take(current, ready_after, hit, others);
        let shelf = self.shelf(&mut shelves, kind);
        self.set_target(shelf, target);
        shelf.last_take = Instant::now();
        let counter = if spare.is_some() { &self.metrics.spare_hits } else { &self.metrics.spare_misses };
        counter.fetch_add(1, Relaxed);
        spare
    }

    /// Places for the spares of `kind` to start now, toward the shelf's target.
    fn to_start(&self, kind: Kind) -> Vec<Starting> {
        let mut shelves = self.shelves.lock().expect("spares lock");
        let shelf = self.shelf(&mut shelves, kind);
        let need = self.policy.starts_now(shelf.target, shelf.ready.len(), shelf.starting);
        shelf.starting += need;
        (0..need).map(|_| Starting { shelves: self.shelves.clone(), kind }).collect()
    }

    /// Shelves a started spare (its place is given back as it is shelved).
    fn shelve(&self, place: Starting, inst: Instance) {
        let unit = GaugeUnit::new(&self.metrics, Gauge::SpareInstances);
        let mut shelves = self.shelves.lock().expect("spares lock");
        self.shelf(&mut shelves, place.kind).ready.push((inst, unit));
        drop(shelves);
        drop(place);
    }

    /// Halves the target of every shelf nobody took from for `idle`, and takes the ready
    /// spares past it (to be retired).
    pub(crate) fn shrink_idle(&self, idle: Duration) -> Vec<Instance> {
        let mut shelves = self.shelves.lock().expect("spares lock");
        let mut surplus = Vec::new();
        for shelf in shelves.values_mut() {
            if shelf.last_take.elapsed() < idle {
                continue;
            }
            if shelf.target > self.policy.base {
                self.set_target(shelf, self.policy.after_idle(shelf.target));
                shelf.last_take = Instant::now();
            }
            // Spares still starting when the target fell are trimmed too.
            let target = shelf.target;
            while shelf.ready.len() > target {
                // The oldest first: they have waited longest.
                let (inst, _unit) = shelf.ready.remove(0);
                surplus.push(inst);
            }
        }
        surplus
    }

    /// Takes every ready spare (at shutdown).
    pub(crate) fn drain(&self) -> Vec<Instance> {
        let mut shelves = self.shelves.lock().expect("spares lock");
        shelves.values_mut().flat_map(|s| std::mem::take(&mut s.ready)).map(|(inst, _unit)| inst).collect()
    }
}

impl Engine {
    /// A pre-started instance for `f`, when one fits: spares are started with the default
    /// memory and no function environment, so they serve functions with that memory whose
    /// variables the interpreter does not read at start. Starts a replacement.
    /// A function with egress takes a networked spare and gives it its plan (its rules, names,
    /// counters) before its code loads.
    pub(crate) fn take_spare(&self, f: &Function) -> Option<Instance> {
        let networked = !f.egress.is_empty();
        let fits = f.memory == DEFAULT_MEMORY_MB
            && (!networked || self.inner.sandbox.egress_support().is_ok())
            && !f.env.keys().any(|k| ["PYTHON", "NODE_", "LD_", "GLIBC_", "MALLOC_"].iter().any(|p| k.starts_with(p)));
        if !fits || self.inner.cfg.spares == 0 {
            return None;
        }
        // A spare whose process already ended (the container runtime failed to create it, or
        // it died waiting) is never handed out: retired, and the next one is tried.
        let mut spare = loop {
            let mut spare = self.inner.spares.take((f.runtime, networked));
            self.replenish_kind(f.runtime, networked);
            match spare.as_mut().map(Instance::exited) {
                Some(true) => {
                    tracing::warn!(runtime = f.runtime.id(), "a spare had ended before it was used; trying the next");
                    self.retire_later(spare.into_iter().collect());
                }
                _ => break spare?,
            }
        };
        spare.give_cpu_weight();
        if let Some(plan) = self.network_plan(f) {
            if let Err(e) = spare.set_network(plan) {
                tracing::warn!(err = %e, "could not give a spare its function's network");
                self.retire_later(vec![spare]);
                return None;
            }
        }
        Some(spare)
    }

    /// Starts spares of `runtime` (without a network) toward its shelf's target.
    pub(crate) fn replenish(&self, runtime: Runtime) {
        self.replenish_kind(runtime, false)
    }

    /// Starts spares of `runtime`, with a network whose plan admits nothing yet or without,
    /// toward the shelf's target (a started spare starts the next, `at_once` at a time).
    fn replenish_kind(&self, runtime: Runtime, networked: bool) {
        if !self.inner.runtimes.available(runtime) || self.inner.stopping.load(Relaxed) {
            return;
        }
        for place in self.inner.spares.to_start((runtime, networked)) {
            let engine = self.clone();
            tokio::spawn(async move {
                let n = engine.inner.next_instance.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = engine.inner.cfg.data_dir.join("instances").join(format!("spare-{}-{n}", runtime.id()));
                if voltrun_package::InstanceDir::create(&dir).is_err() {
                    return; // the place goes with `place`
                }
                let mut env = base_env(runtime, &*engine.inner.sandbox, &dir);
                env.push((SPARE_VAR.to_string(), "1".to_string()));
                let network = networked.then(|| Arc::new(NetworkPlan { function: String::new(), policy: Default::default(), on_event: None }));
                if let Ok(mut inst) = engine.spawn_instance(runtime, DEFAULT_MEMORY_MB, dir, env, network, true).await {
                    // Shelved once its interpreter is up: a run given a spare still starting
                    // would wait for the rest of its start.
                    if !inst.started(STARTED_WITHIN).await {
                        // (At shutdown the sandbox stops it first: nothing to say then.)
                        if !engine.inner.stopping.load(Relaxed) {
                            tracing::warn!(runtime = runtime.id(), "a spare did not say it started; retiring it");
                        }
                        inst.terminate().await;
                        return;
                    }
                    engine.inner.spares.shelve(place, inst);
                    // Toward the target, at most `at_once` at a time: the next ones now.
                    engine.replenish_kind(runtime, networked);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SparePolicy;

    const P: SparePolicy = SparePolicy { base: 1, max: 16, at_once: 2 };

    #[test]
    fn a_take_that_leaves_fewer_than_half_or_finds_none_doubles_the_target_up_to_the_max() {
        assert_eq!(P.after_take(1, 0, true, 0), 2);
        assert_eq!(P.after_take(2, 0, false, 0), 4);
        assert_eq!(P.after_take(4, 2, true, 0), 4, "half left: the target holds");
        assert_eq!(P.after_take(8, 3, true, 0), 16, "fewer than half left");
        assert_eq!(P.after_take(16, 0, true, 0), 16);
        assert_eq!(P.after_take(1, 0, true, 0), 2);
        assert_eq!(P.after_take(12, 0, false, 0), 16);
        let zero = SparePolicy { base: 0, max: 0, at_once: 2 };
        assert_eq!(zero.after_take(0, 0, false, 0), 0, "--spares-max 0 keeps none");
        assert_eq!(P.after_take(8, 0, false, 20), 12, "every shelf together: twice the max");
        assert_eq!(P.after_take(8, 0, false, 40), 1, "never below the base");
    }

    #[test]
    fn an_idle_shelf_halves_its_target_down_to_the_base() {
        assert_eq!(P.after_idle(16), 8);
        assert_eq!(P.after_idle(2), 1);
        assert_eq!(P.after_idle(1), 1);
        assert_eq!(SparePolicy { base: 3, ..P }.after_idle(4), 3);
    }

    #[test]
    fn starts_go_toward_the_target_at_most_at_once_at_a_time() {
        assert_eq!(P.starts_now(8, 0, 0), 2);
        assert_eq!(P.starts_now(8, 0, 2), 0);
        assert_eq!(P.starts_now(8, 7, 0), 1);
        assert_eq!(P.starts_now(8, 9, 0), 0);
        assert_eq!(P.starts_now(1, 0, 1), 0);
    }
}
