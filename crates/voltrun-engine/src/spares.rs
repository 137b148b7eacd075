//! Spare instances: per runtime, a few instances started ahead (at the default memory, with
//! no function environment) and blocked in the bootstrap before init, so a new function's
//! first run only loads its code. Ready spares hold a unit of the `spare_instances` gauge and
//! spares being started a [`Starting`] place: both are given back on every path.
//!
//! Shelves are keyed by runtime and whether the spares have a network (egress, issue 14): a
//! function with an `egress` list takes a networked spare, whose network admits nothing until
//! it is given the function's plan. Networked spares start once the first such function ran.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use voltrun_core::function::DEFAULT_MEMORY_MB;
use voltrun_core::{Function, Runtime};
use voltrun_sandbox::network::NetworkPlan;

use crate::instance::Instance;
use crate::launch::base_env;
use crate::metrics::{Gauge, GaugeUnit};
use crate::{Engine, Metrics};

/// A shelf's key: the runtime, and whether its spares have a network.
type Kind = (Runtime, bool);

/// One kind's spares: the ready ones and how many are being started.
#[derive(Default)]
struct Shelf {
    ready: Vec<(Instance, GaugeUnit)>,
    starting: usize,
}

type Shelves = Arc<Mutex<HashMap<Kind, Shelf>>>;

/// Every runtime's spares.
pub(crate) struct Spares {
    shelves: Shelves,
    /// Spares kept per runtime.
    per_runtime: usize,
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
    pub(crate) fn new(per_runtime: usize, metrics: Arc<Metrics>) -> Spares {
        Spares { shelves: Arc::default(), per_runtime, metrics }
    }

    /// A ready spare of `kind`, if any.
    fn take(&self, kind: Kind) -> Option<Instance> {
        let mut shelves = self.shelves.lock().expect("spares lock");
        shelves.get_mut(&kind).and_then(|s| s.ready.pop()).map(|(inst, _unit)| inst)
    }

    /// Places for the spares of `kind` to start now, so that the configured number are
    /// ready or starting.
    fn to_start(&self, kind: Kind) -> Vec<Starting> {
        let mut shelves = self.shelves.lock().expect("spares lock");
        let shelf = shelves.entry(kind).or_default();
        let need = self.per_runtime.saturating_sub(shelf.ready.len() + shelf.starting);
        shelf.starting += need;
        (0..need).map(|_| Starting { shelves: self.shelves.clone(), kind }).collect()
    }

    /// Shelves a started spare (its place is given back as it is shelved).
    fn shelve(&self, place: Starting, inst: Instance) {
        let unit = GaugeUnit::new(&self.metrics, Gauge::SpareInstances);
        let mut shelves = self.shelves.lock().expect("spares lock");
        shelves.entry(place.kind).or_default().ready.push((inst, unit));
        drop(shelves);
        drop(place);
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
        if let Some(plan) = self.network_plan(f) {
            if let Err(e) = spare.set_network(plan) {
                tracing::warn!(err = %e, "could not give a spare its function's network");
                self.retire_later(vec![spare]);
                return None;
            }
        }
        Some(spare)
    }

    /// Starts spares of `runtime` (without a network) until the configured number are ready
    /// or starting.
    pub(crate) fn replenish(&self, runtime: Runtime) {
        self.replenish_kind(runtime, false)
    }

    /// Starts spares of `runtime`, with a network whose plan admits nothing yet or without,
    /// until the configured number are ready or starting.
    fn replenish_kind(&self, runtime: Runtime, networked: bool) {
        if !self.inner.runtimes.available(runtime) {
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
                let env = base_env(runtime, &*engine.inner.sandbox, &dir);
                let network = networked.then(|| Arc::new(NetworkPlan { function: String::new(), policy: Default::default(), on_event: None }));
                if let Ok(inst) = engine.spawn_instance(runtime, DEFAULT_MEMORY_MB, dir, env, network).await {
                    engine.inner.spares.shelve(place, inst);
                }
            });
        }
    }
}
