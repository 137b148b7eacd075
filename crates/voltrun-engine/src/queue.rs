//! The durable queue of async and scheduled runs: enqueueing (a `pending` row before the
//! caller is answered), the dispatcher that claims runs while this node has async slots (with
//! the fair shares of [`crate::fairness`]), the run of a claimed execution, and its retry
//! after a retryable failure (voltrun_core::policy).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;
use voltrun_core::{policy, time, ErrorKind, ExecError, Execution, ExecutionStatus, Function, Outcome, Qualifier, Trigger};
use voltrun_store::{NewRun, StoreError};

use crate::fairness::DispatchLoad;
use crate::invocation::{invoke_span, new_execution};
use crate::metrics::{Gauge, GaugeUnit};
use crate::{Engine, EngineError};

/// The least time between two claims that found nothing while skipping some runs.
const FRUITLESS_CLAIM_PAUSE: Duration = Duration::from_millis(50);

impl Engine {
    /// Stores an async run of `f` as pending (durable when this returns) and queues it.
    /// Returns the execution and whether it is new (false: the idempotency key was used).
    pub async fn enqueue(&self, f: &Function, input: Value, key: Option<String>) -> Result<(Execution, bool), EngineError> {
        self.enqueue_qualified(f, None, input, key).await
    }

    /// [`Engine::enqueue`] of `f` as `qualifier` names it: the qualifier is resolved now,
    /// at enqueue (an alias's split too), so the record carries the version from the start
    /// and every attempt (retries, re-runs after a node died) runs that same version.
    pub async fn enqueue_qualified(&self, f: &Function, qualifier: Option<&Qualifier>, input: Value, key: Option<String>) -> Result<(Execution, bool), EngineError> {
        let exec_id = voltrun_core::id::new_id("ex_");
        let target = self.resolve(f, qualifier, &exec_id).await?;
        let f = &target;
        self.check_active(f)?;
        let mut exec = new_execution(f, Trigger::Async, input, ExecutionStatus::Pending);
        exec.id = exec_id;
        exec.qualifier = qualifier.map(|q| q.to_string());
        exec.max_attempts = f.max_retries as i64 + 1;
        let run = NewRun { idempotency_key: key.clone(), ..NewRun::default() };
        if !self.inner.store.insert_execution(&exec, &run).await? {
            let existing = self.inner.store.execution_by_idempotency_key(&f.id, key.as_deref().unwrap_or_default()).await?;
            return existing.map(|e| (e, false)).ok_or_else(|| StoreError::Invariant("an idempotent insert conflicted with nothing".into()).into());
        }
        self.wake_dispatcher();
        Ok((exec, true))
    }

    /// Wakes the dispatcher on NOTIFYs of runs queued by other nodes (PostgreSQL).
    pub(crate) async fn listen_queue(&self) -> Result<(), EngineError> {
        if let Some(mut listener) = self.inner.store.listen_queue().await? {
            let engine = self.clone();
            tokio::spawn(async move {
                loop {
                    match listener.recv().await {
                        Ok(()) => {
                            engine.wake_dispatcher();
                            engine.wake_builds();
                        }
                        Err(err) => {
                            tracing::warn!(%err, "queue listener failed; polling until it recovers");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        Ok(())
    }

    /// Tells the dispatcher a run was queued (here, or on another node).
    pub(crate) fn wake_dispatcher(&self) {
        self.inner.wakes.fetch_add(1, Relaxed);
        self.inner.wake.notify_one();
    }

    /// Claims queued runs while this node has async capacity; sleeps until woken (a local
    /// enqueue, a NOTIFY from another node, a run held back by the skips below ending) or for
    /// a second (runs waiting out a backoff).
    ///
    /// A claim passes over the runs that could not start at once (functions at their
    /// concurrency limit: such a run would hold a slot while it waits for the function) and
    /// the runs of users who hold their share of the slots: first the fair share
    /// (`slots / (users running + 1)`, room kept for a newcomer), and when nobody else has
    /// work, up to the per-user cap. One tenant's backlog therefore never takes every slot.
    pub(crate) async fn dispatch(self) {
        let total = self.inner.cfg.async_concurrency;
        let cap = match self.inner.cfg.async_per_user {
            // An eighth of the slots (at least one) stays free for other users' runs.
            0 => total.saturating_sub((total / 8).max(1)).max(1),
            n => n.min(total),
        };
        let slots = Arc::new(Semaphore::new(total));
        let load = Arc::new(DispatchLoad::default());
        // When the fair-share claim last found nothing (no other user had work), and the wake
        // count then: until something is queued, or for a second (runs coming due after a
        // backoff wake no one), the claim goes straight to the per-user cap.
        let mut others_idle: Option<(u64, Instant)> = None;
        loop {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            if self.inner.stopping.load(Relaxed) {
                return;
            }
            let (fair, capped) = load.skips(&self.inner.pools, self.inner.cfg.function_concurrency, total, cap);
            let (now, lease) = (time::now(), self.lease_until());
            if !(fair.functions.is_empty() && fair.users.is_empty()) {
                // Set before the claim, so a run ending during it wakes the wait below.
                load.held_back.store(true, Relaxed);
            }
            let wakes = self.inner.wakes.load(Relaxed);
            let two_phases = fair.users.len() > capped.users.len();
            let skip_fair = two_phases && others_idle.is_some_and(|(w, t)| w == wakes && t.elapsed() < Duration::from_secs(1));
            let mut claimed = if skip_fair { Ok(None) } else { self.inner.store.claim_next(&self.inner.cfg.node_id, &now, &lease, &fair).await };
            if matches!(claimed, Ok(None)) && two_phases {
                if !skip_fair {
                    others_idle = Some((wakes, Instant::now()));
                }
                claimed = self.inner.store.claim_next(&self.inner.cfg.node_id, &now, &lease, &capped).await;
            }
            match claimed {
                Ok(Some(exec)) => {
                    let held = DispatchLoad::hold(&load, &exec);
                    let engine = self.clone();
                    let span = invoke_span(&exec);
                    let run = async move {
                        let in_flight = GaugeUnit::new(&engine.inner.metrics, Gauge::AsyncInFlight);
                        if let Err(err) = engine.run_claimed(exec).await {
                            tracing::error!(%err, "async run failed to complete");
                        }
                        drop((in_flight, slot));
                        // A run passed over while this one held its user's or function's
                        // share may start now.
                        held.release();
                    };
                    tokio::spawn(run.instrument(span));
                }
                Ok(None) if fair.functions.is_empty() && fair.users.is_empty() => {
                    drop(slot);
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.wake.notified()).await;
                }
                Ok(None) => {
                    drop(slot);
                    // The claim stepped over skipped runs to find nothing. A skipped run ending
                    // makes room at once; other wakes (a skipped user's every enqueue is one)
                    // run the claim again at most every FRUITLESS_CLAIM_PAUSE.
                    let woken = async {
                        tokio::time::sleep(FRUITLESS_CLAIM_PAUSE).await;
                        self.inner.wake.notified().await;
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        tokio::select! {
                            _ = load.freed.notified() => {}
                            _ = woken => {}
                        }
                    })
                    .await;
                }
                Err(err) => {
                    drop(slot);
                    tracing::warn!(%err, "claiming queued runs failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Runs a claimed async or scheduled run; a retryable failure with attempts left goes
    /// back to the queue after a backoff.
    async fn run_claimed(&self, mut exec: Execution) -> Result<(), EngineError> {
        let store = &self.inner.store;
        // The database failing right after the claim: the row goes back to the queue (store: `give_back`).
        let found = store.function_by_id(&exec.function_id).await.inspect_err(|e| {
            if e.is_unavailable() {
                store.give_back(&exec, &self.inner.cfg.node_id)
            }
        });
        let found = found?;
        // A qualified run runs the version it was given at enqueue (or at its schedule tick),
        // whatever the function's latest is now.
        let found = match (found, &exec.qualifier) {
            (Some(current), Some(_)) => store.version_function(&current, exec.function_version).await?.ok_or(format!("version {} was deleted before this run started", exec.function_version)),
            (Some(current), None) => Ok(current),
            (None, _) => Err("the function was deleted before this run started".to_string()),
        };
        // A queued run of a function that is not active (its definition was replaced by one
        // still building) fails without running: there is no built version to run.
        let refused = match &found {
            Err(why) => Some(ExecError::new(ErrorKind::Internal, why.clone())),
            Ok(f) => self.check_active(f).err().map(|e| ExecError::new(ErrorKind::RuntimeError, e.to_string())),
        };
        let found = found.ok();
        let (Some(f), None) = (found, refused.clone()) else {
            let now = time::now();
            exec.finish(Outcome {
                result: Err(refused.expect("set when there is no function")),
                logs: String::new(),
                logs_truncated: false,
                duration_ms: 0.0,
                started_at: now.clone(),
                finished_at: now,
            });
            store.save_execution(&exec).await?;
            self.changed(&exec.id);
            return Ok(());
        };
        exec.function_version = f.version;
        let _place = self.inner.user_runs.enter(&f.user_id);
        let permit = self.inner.pools.acquire(&f, false).await?;
        let outcome = self.run(&f, &exec.id, &exec.input).await;
        drop(permit);
        if self.inner.stopping.load(Relaxed) {
            return Ok(()); // cut short by shutdown: left `running` for recovery
        }
        let retry = matches!(&outcome.result, Err(e) if policy::is_retryable(e.kind));
        exec.finish(outcome);
        if retry && exec.attempts < exec.max_attempts {
            let due = time::format(chrono::Utc::now() + self.inner.retry.backoff(exec.attempts));
            tracing::info!(attempt = exec.attempts, %due, "retrying a failed async run");
            store.requeue(&exec, &due).await?;
            self.changed(&exec.id);
            return Ok(());
        }
        store.save_execution(&exec).await?;
        self.changed(&exec.id);
        Ok(())
    }
}
