//! Counters, gauges and histograms the engine keeps, rendered in the Prometheus text format.
//! Plain atomics: the hot path pays a few relaxed increments, nothing more.
//!
//! A gauge of things the engine holds (instances, idle or spare ones, claimed runs, open log
//! streams) is kept by [`GaugeUnit`]s: each thing counted holds one, and dropping it gives the
//! unit back, so no path (an error, a dropped future, a panic) leaves the gauge wrong.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use voltrun_core::{ErrorKind, Runtime};

/// Upper bounds (seconds) of the duration histogram buckets.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];
const KINDS: [ErrorKind; 6] = [ErrorKind::HandlerError, ErrorKind::RuntimeError, ErrorKind::Timeout, ErrorKind::OutOfMemory, ErrorKind::Interrupted, ErrorKind::Internal];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (integer so it can be atomic).
    sum_us: AtomicU64,
}

/// The engine's figures.
#[derive(Default)]
pub struct Metrics {
    invocations: [AtomicU64; 3],
    errors: [AtomicU64; KINDS.len()],
    duration: [Histogram; 3],
    cold_starts: [AtomicU64; 3],
    /// Live instances (idle or busy).
    pub instances: AtomicI64,
    /// Idle warm instances.
    pub idle_instances: AtomicI64,
    /// Pre-started instances not yet given to a function.
    pub spare_instances: AtomicI64,
    /// Spares every shelf aims for together (spares.rs: it follows demand).
    pub spare_target: AtomicI64,
    /// New instances served by a spare, and those that found none (spares.rs).
    pub spare_hits: AtomicU64,
    pub spare_misses: AtomicU64,
    /// Async and scheduled runs this node has claimed and not finished
    /// (`voltrun_async_in_flight`).
    pub async_in_flight: AtomicI64,
    /// Runs waiting in the durable queue (all nodes), refreshed every lease period
    /// (`voltrun_queue_depth`).
    pub queue_depth: AtomicI64,
    /// Invocations refused with 429.
    pub throttled: AtomicU64,
    /// Open `?follow=true` log streams (the API keeps it).
    pub log_streams: AtomicI64,
    /// Egress connections per function (issue 14); shared with the sandbox's log reader.
    pub egress: Arc<EgressCounts>,
    /// Dependency builds this node runs now (`voltrun_builds_in_flight`; build_queue.rs).
    pub builds_in_flight: AtomicI64,
    /// Builds this node ended, stored: [success, failed] (`voltrun_builds_total{status}`).
    pub builds_total: [AtomicU64; 2],
}

/// Most functions the egress counters keep (then new functions count under `function="other"`).
pub const EGRESS_FUNCTIONS_MAX: usize = 10_000;

/// `voltrun_egress_connections_total{function, verdict}`: new allowed connections and refused
/// attempts, per function id; bounded to [`EGRESS_FUNCTIONS_MAX`] keys.
#[derive(Default)]
pub struct EgressCounts {
    by_function: Mutex<BTreeMap<String, [u64; 2]>>,
}

impl EgressCounts {
    /// Counts one connection of `function` (`refused`: the policy refused it).
    pub fn record(&self, function: &str, refused: bool) {
        let mut m = self.by_function.lock().expect("egress counts lock");
        let key = if m.contains_key(function) || m.len() < EGRESS_FUNCTIONS_MAX { function } else { "other" };
        m.entry(key.to_string()).or_default()[usize::from(refused)] += 1;
    }

    /// (allowed, refused) of `function` so far.
    pub fn get(&self, function: &str) -> (u64, u64) {
        let c = self.by_function.lock().expect("egress counts lock").get(function).copied().unwrap_or_default();
        (c[0], c[1])
    }

    fn render(&self, o: &mut String) {
        o.push_str(
            "# HELP voltrun_egress_connections_total Network connections of functions with egress, by the policy's verdict.\n# TYPE voltrun_egress_connections_total counter\n",
        );
        for (f, c) in self.by_function.lock().expect("egress counts lock").iter() {
            let _ = writeln!(o, "voltrun_egress_connections_total{{function=\"{f}\",verdict=\"allowed\"}} {}", c[0]);
            let _ = writeln!(o, "voltrun_egress_connections_total{{function=\"{f}\",verdict=\"refused\"}} {}", c[1]);
        }
    }
}

fn rt_index(r: Runtime) -> usize {
    match r {
        Runtime::Nodejs20 => 0,
        Runtime::Python311 => 1,
        Runtime::Provided => 2,
    }
}

impl Metrics {
    /// Records one finished invocation.
    pub fn record(&self, r: Runtime, seconds: f64, error: Option<ErrorKind>) {
        let i = rt_index(r);
        self.invocations[i].fetch_add(1, Relaxed);
        if let Some(k) = error {
            let k = KINDS.iter().position(|x| *x == k).expect("every kind is listed");
            self.errors[k].fetch_add(1, Relaxed);
        }
        let h = &self.duration[i];
        if let Some(b) = BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[b].fetch_add(1, Relaxed);
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_us.fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    /// Records a cold start (a new instance).
    pub fn cold_start(&self, r: Runtime) {
        self.cold_starts[rt_index(r)].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every figure.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let rts = Runtime::ALL;
        o.push_str("# HELP voltrun_invocations_total Finished invocations.\n# TYPE voltrun_invocations_total counter\n");
        for r in rts {
            let _ = writeln!(o, "voltrun_invocations_total{{runtime=\"{}\"}} {}", r.id(), self.invocations[rt_index(r)].load(Relaxed));
        }
        o.push_str("# HELP voltrun_invocation_errors_total Failed invocations by error type.\n# TYPE voltrun_invocation_errors_total counter\n");
        for (i, k) in KINDS.iter().enumerate() {
            let _ = writeln!(o, "voltrun_invocation_errors_total{{type=\"{k:?}\"}} {}", self.errors[i].load(Relaxed));
        }
        o.push_str("# HELP voltrun_invocation_duration_seconds Handler run time.\n# TYPE voltrun_invocation_duration_seconds histogram\n");
        for r in rts {
            let h = &self.duration[rt_index(r)];
            let mut cumulative = 0;
            for (b, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[b].load(Relaxed);
                let _ = writeln!(o, "voltrun_invocation_duration_seconds_bucket{{runtime=\"{}\",le=\"{bound}\"}} {cumulative}", r.id());
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(o, "voltrun_invocation_duration_seconds_bucket{{runtime=\"{}\",le=\"+Inf\"}} {count}", r.id());
            let _ = writeln!(o, "voltrun_invocation_duration_seconds_sum{{runtime=\"{}\"}} {}", r.id(), h.sum_us.load(Relaxed) as f64 / 1e6);
            let _ = writeln!(o, "voltrun_invocation_duration_seconds_count{{runtime=\"{}\"}} {count}", r.id());
        }
        o.push_str("# HELP voltrun_cold_starts_total Instances started.\n# TYPE voltrun_cold_starts_total counter\n");
        for r in rts {
            let _ = writeln!(o, "voltrun_cold_starts_total{{runtime=\"{}\"}} {}", r.id(), self.cold_starts[rt_index(r)].load(Relaxed));
        }
        for (name, help, v) in [
            ("voltrun_instances", "Live instances, idle or busy.", self.instances.load(Relaxed)),
            ("voltrun_idle_instances", "Warm idle instances in the pools.", self.idle_instances.load(Relaxed)),
            ("voltrun_spare_instances", "Pre-started instances waiting for a function.", self.spare_instances.load(Relaxed)),
            ("voltrun_spare_target", "Spares the pool aims for now, every runtime together (it follows demand).", self.spare_target.load(Relaxed)),
            ("voltrun_async_in_flight", "Async runs this node has claimed and not finished.", self.async_in_flight.load(Relaxed)),
            ("voltrun_queue_depth", "Runs waiting in the durable queue (every node's), refreshed every lease period.", self.queue_depth.load(Relaxed)),
            ("voltrun_log_streams", "Open log streams (GET /api/executions/{id}/logs?follow=true).", self.log_streams.load(Relaxed)),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP voltrun_throttled_total Invocations refused with 429.\n# TYPE voltrun_throttled_total counter\nvoltrun_throttled_total {}",
            self.throttled.load(Relaxed)
        );
        let _ = writeln!(o, "# HELP voltrun_spare_takes_total New instances a function needed, by whether a spare served it.\n# TYPE voltrun_spare_takes_total counter");
        let _ = writeln!(o, "voltrun_spare_takes_total{{result=\"hit\"}} {}", self.spare_hits.load(Relaxed));
        let _ = writeln!(o, "voltrun_spare_takes_total{{result=\"miss\"}} {}", self.spare_misses.load(Relaxed));
        let _ = writeln!(
            o,
            "# HELP voltrun_builds_in_flight Dependency builds this node runs.\n# TYPE voltrun_builds_in_flight gauge\nvoltrun_builds_in_flight {}",
            self.builds_in_flight.load(Relaxed)
        );
        let _ = writeln!(o, "# HELP voltrun_builds_total Dependency builds this node ended, by status.\n# TYPE voltrun_builds_total counter");
        for (i, status) in ["success", "failed"].iter().enumerate() {
            let _ = writeln!(o, "voltrun_builds_total{{status=\"{status}\"}} {}", self.builds_total[i].load(Relaxed));
        }
        self.egress.render(&mut o);
        o
    }
}

/// The gauges kept by [`GaugeUnit`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gauge {
    /// [`Metrics::instances`]: held by every live [`crate::instance::Instance`].
    Instances,
    /// [`Metrics::idle_instances`]: held by each instance in a warm pool.
    IdleInstances,
    /// [`Metrics::spare_instances`]: held by each ready spare.
    SpareInstances,
    /// [`Metrics::async_in_flight`]: held by each claimed async run's task.
    AsyncInFlight,
    /// [`Metrics::log_streams`]: held by each open log stream.
    LogStreams,
}

impl Metrics {
    fn gauge(&self, g: Gauge) -> &AtomicI64 {
        match g {
            Gauge::Instances => &self.instances,
            Gauge::IdleInstances => &self.idle_instances,
            Gauge::SpareInstances => &self.spare_instances,
            Gauge::AsyncInFlight => &self.async_in_flight,
            Gauge::LogStreams => &self.log_streams,
        }
    }
}

/// One unit of a gauge, held by the thing it counts and given back when dropped.
pub(crate) struct GaugeUnit {
    metrics: Arc<Metrics>,
    gauge: Gauge,
}

impl GaugeUnit {
    /// Adds one to `gauge` until the unit is dropped.
    pub(crate) fn new(metrics: &Arc<Metrics>, gauge: Gauge) -> GaugeUnit {
        metrics.gauge(gauge).fetch_add(1, Relaxed);
        GaugeUnit { metrics: metrics.clone(), gauge }
    }
}

impl Drop for GaugeUnit {
    fn drop(&mut self) {
        self.metrics.gauge(self.gauge).fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_units_are_given_back_when_dropped() {
        let m = Arc::new(Metrics::default());
        let units: Vec<GaugeUnit> = [Gauge::Instances, Gauge::Instances, Gauge::IdleInstances, Gauge::LogStreams].into_iter().map(|g| GaugeUnit::new(&m, g)).collect();
        assert_eq!((m.instances.load(Relaxed), m.idle_instances.load(Relaxed), m.log_streams.load(Relaxed)), (2, 1, 1));
        drop(units);
        assert_eq!((m.instances.load(Relaxed), m.idle_instances.load(Relaxed), m.log_streams.load(Relaxed)), (0, 0, 0));
    }
}
