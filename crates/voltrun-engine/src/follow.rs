//! Following runs: the live logs of runs in progress on this node (the `running` map, kept
//! by [`RunningEntry`] guards), the watches that wake followers when an execution changes, and
//! the open log streams' places.

use tokio::sync::{broadcast, watch};

use crate::counts::CountUnit;
use crate::instance::{self, LiveLog};
use crate::metrics::{Gauge, GaugeUnit};
use crate::Engine;

impl Engine {
    /// Live logs of a run in progress on this node: what it wrote so far and a receiver of
    /// the rest. None when the run is not running here.
    pub fn subscribe_logs(&self, execution_id: &str) -> Option<(String, broadcast::Receiver<String>)> {
        let running = self.inner.running.lock().expect("running lock");
        running.get(execution_id).and_then(instance::subscribe)
    }

    /// Follows an execution's changes on this node: the watch wakes when the run starts here
    /// and after its end (or its retry) is stored. Runs on other nodes do not wake it.
    pub fn watch_execution(&self, execution_id: &str) -> ExecutionWatch {
        let mut watchers = self.inner.watchers.lock().expect("watchers lock");
        let (tx, n) = watchers.entry(execution_id.to_string()).or_insert_with(|| (watch::channel(0).0, 0));
        *n += 1;
        ExecutionWatch { engine: self.clone(), id: execution_id.to_string(), rx: tx.subscribe() }
    }

    /// A place for one more of `user_id`'s open log streams, counted in the `log_streams`
    /// gauge while held; None when they hold `per_user` already.
    pub fn open_log_stream(&self, user_id: &str, per_user: usize) -> Option<LogStreamSlot> {
        let unit = self.inner.log_streams.take(user_id, per_user)?;
        Some(LogStreamSlot { _gauge: GaugeUnit::new(&self.inner.metrics, Gauge::LogStreams), _unit: unit })
    }

    /// Wakes the followers of an execution (a lock and, when anyone follows, a lookup).
    pub(crate) fn changed(&self, execution_id: &str) {
        let watchers = self.inner.watchers.lock().expect("watchers lock");
        if watchers.is_empty() {
            return;
        }
        if let Some((tx, _)) = watchers.get(execution_id) {
            tx.send_modify(|v| *v += 1);
        }
    }
}

/// One open log stream's place (see [`Engine::open_log_stream`]), given back on every path
/// the stream's task ends by (the run's end, the client leaving, a panic).
pub struct LogStreamSlot {
    _gauge: GaugeUnit,
    _unit: CountUnit,
}

/// A follower's view of one execution's changes on this node; see [`Engine::watch_execution`].
pub struct ExecutionWatch {
    engine: Engine,
    id: String,
    rx: watch::Receiver<u64>,
}

impl ExecutionWatch {
    /// Waits for the next change after the last one seen (or after the watch began).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives as long as any watch of the id: this cannot happen.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for ExecutionWatch {
    fn drop(&mut self) {
        let mut watchers = self.engine.inner.watchers.lock().expect("watchers lock");
        if let Some((_, n)) = watchers.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                watchers.remove(&self.id);
            }
        }
    }
}

/// A run's entry in the engine's map of live logs, there from the run's start to its end
/// (or until its future is dropped): its Drop removes it on every path.
pub(crate) struct RunningEntry<'a> {
    engine: &'a Engine,
    id: &'a str,
}

impl<'a> RunningEntry<'a> {
    /// Enters the run's live log and wakes its followers (the run started here).
    pub(crate) fn new(engine: &'a Engine, id: &'a str, live: &LiveLog) -> Self {
        engine.inner.running.lock().expect("running lock").insert(id.to_string(), live.clone());
        engine.changed(id);
        RunningEntry { engine, id }
    }
}

impl Drop for RunningEntry<'_> {
    fn drop(&mut self) {
        self.engine.inner.running.lock().expect("running lock").remove(self.id);
    }
}
