//! Invocation: a synchronous run from "run `f` with this event" to its stored execution
//! (execute), the one way its row is written (record), waiting for a run another request
//! started (wait), unsaved-code test runs, and running one invocation on a warm or new
//! instance.
//!
//! Every run is a task of its own, in its own [`invoke_span`], so no caller going away can
//! cut one short; what a run holds (permits, places, its live-log entry) is released by guards
//! on every path.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument;
use voltrun_core::{time, Execution, ExecutionStatus, Function, Outcome, Qualifier, Trigger};
use voltrun_store::{NewRun, StoreError};

use crate::follow::RunningEntry;
use crate::instance::Instance;
use crate::{quota, Engine, EngineError};

/// How long a synchronous run without an idempotency key goes unrecorded before its
/// `running` row is written (see [`Engine::execute_to_end`]).
const RUNNING_ROW_AFTER: Duration = Duration::from_millis(50);

impl Engine {
    /// Runs `f` now and returns the finished, stored execution. Refuses with
    /// [`EngineError::Throttled`] when the function's queue is full. With an idempotency key
    /// already used for `f`, returns that execution (waiting for it to finish) instead.
    ///
    /// The run is a task of its own that the caller awaits: a caller that goes away (an HTTP
    /// client hanging up drops its request's future) does not take the run with it, so the
    /// run goes on to its end and is recorded, as in Lambda.
    pub async fn execute(&self, f: &Function, trigger: Trigger, input: Value, key: Option<String>) -> Result<Execution, EngineError> {
        self.execute_qualified(f, None, trigger, input, key).await
    }

    /// [`Engine::execute`] of `f` as `qualifier` names it (SPEC §13): a version, `latest`
    /// or an alias, resolved for this invocation (an alias's split draws from the new
    /// execution's id). The record carries the version that ran and the qualifier.
    /// [`EngineError::VersionNotFound`] / [`EngineError::AliasNotFound`] when it names
    /// nothing; [`EngineError::NotActive`] when that version's build is pending or failed.
    pub async fn execute_qualified(&self, f: &Function, qualifier: Option<&Qualifier>, trigger: Trigger, input: Value, key: Option<String>) -> Result<Execution, EngineError> {
        let exec_id = voltrun_core::id::new_id("ex_");
        let target = self.resolve(f, qualifier, &exec_id).await?;
        let f = &target;
        self.check_active(f)?;
        // Waiting for another request's run stays in the caller's future: it ends with it.
        if let Some(k) = &key {
            if let Some(existing) = self.inner.store.execution_by_idempotency_key(&f.id, k).await? {
                return self.wait_finished(existing, f).await;
            }
        }
        let engine = self.clone();
        let owned = f.clone();
        // The user's place among their runs in flight goes with the run's task: it is held
        // until the run ends, even when the caller has gone.
        let place = self.user_place(&f.user_id)?;
        let mut exec = new_execution(f, trigger, input, ExecutionStatus::Running);
        exec.id = exec_id;
        exec.qualifier = qualifier.map(|q| q.to_string());
        let span = invoke_span(&exec);
        let run = async move {
            let _place = place;
            engine.execute_to_end(&owned, exec, key).await
        };
        match joined(tokio::spawn(run.instrument(span)).await)? {
            Ran::Finished(e) => Ok(e),
            Ran::Duplicate(e) => self.wait_finished(e, f).await,
        }
    }

    /// A synchronous run's task: a slot of the function, the run, and its row.
    ///
    /// The row is written one way for every synchronous run: inserted `running` (under this
    /// node's lease, so a crash leaves it to be settled `Interrupted`), then its end saved over
    /// it ([`Engine::record_end`]). The one flag is whether the insert is *deferred*:
    ///
    /// - with an idempotency key it is not: the insert comes before the run, since it decides
    ///   whether this request runs at all (a conflict means another request's run, which the
    ///   caller then waits for);
    /// - without a key it waits until the run has lasted [`RUNNING_ROW_AFTER`] (then it is
    ///   written while the run goes on), and a run that ends first is stored by one insert of
    ///   its finished row: no one can have seen its id yet (it is in no response), so the
    ///   short runs that are most of the traffic cost one write instead of two.
    async fn execute_to_end(&self, f: &Function, mut exec: Execution, key: Option<String>) -> Result<Ran, EngineError> {
        let permit = self.inner.pools.acquire(f, true).await?;
        exec.attempts = 1;
        exec.started_at = Some(time::now());
        let run = NewRun { idempotency_key: key.clone(), schedule_tick: None, lease: Some((self.inner.cfg.node_id.clone(), self.lease_until())) };
        let deferred = key.is_none();
        let mut inserted = false;
        if !deferred {
            if !self.inner.store.insert_execution(&exec, &run).await? {
                drop(permit);
                let existing = self.inner.store.execution_by_idempotency_key(&f.id, key.as_deref().unwrap_or_default()).await?;
                return existing.map(Ran::Duplicate).ok_or_else(|| StoreError::Invariant("an idempotent insert conflicted with nothing".into()).into());
            }
            inserted = true;
        }
        let outcome = {
            let running = self.run(f, &exec.id, &exec.input);
            tokio::pin!(running);
            tokio::select! {
                outcome = &mut running => outcome,
                _ = tokio::time::sleep(RUNNING_ROW_AFTER), if !inserted => {
                    let insert = self.inner.store.begin_insert_execution(&exec, &run);
                    let outcome = running.await;
                    insert.committed().await?;
                    inserted = true;
                    outcome
                }
            }
        };
        drop(permit);
        self.record_end(exec, outcome, inserted).await.map(Ran::Finished)
    }

    /// Records how a synchronous run ended: over its `running` row if it has one
    /// (`inserted`), else as one new, finished row (see [`Engine::execute_to_end`]). Nothing
    /// is recorded when shutdown cut the run short.
    async fn record_end(&self, mut exec: Execution, outcome: Outcome, inserted: bool) -> Result<Execution, EngineError> {
        exec.finish(outcome);
        if self.inner.stopping.load(Relaxed) {
            return Ok(exec);
        }
        if inserted {
            self.inner.store.save_execution(&exec).await?;
        } else {
            self.inner.store.insert_execution(&exec, &NewRun::default()).await?;
        }
        self.changed(&exec.id);
        Ok(exec)
    }

    /// Runs unsaved code once on a fresh instance; nothing is stored or kept warm. Each user
    /// has a few test slots of their own within the node's, so one user's test runs never
    /// refuse another's. Runs in a task of its own, like [`Engine::execute`], so a caller
    /// that goes away leaves no instance or slot behind.
    pub async fn test_run(&self, f: &Function, input: Value) -> Result<Execution, EngineError> {
        let place = self.user_place(&f.user_id)?;
        let throttled = |limit, per_user| {
            self.inner.metrics.throttled.fetch_add(1, Relaxed);
            Err(EngineError::TestRunsThrottled { limit, per_user })
        };
        let per_user = self.inner.cfg.test_per_user.max(1);
        let Some(user_slot) = self.inner.test_users.take(&f.user_id, per_user) else {
            return throttled(per_user, true);
        };
        let Ok(node_slot) = self.inner.test_slots.clone().try_acquire_owned() else {
            return throttled(self.inner.cfg.test_concurrency, false);
        };
        let engine = self.clone();
        let f = f.clone();
        let mut exec = new_execution(&f, Trigger::Test, input, ExecutionStatus::Running);
        exec.attempts = 1;
        let span = invoke_span(&exec);
        let run = async move {
            let _held = (place, user_slot, node_slot);
            let outcome = match engine.cold_start(&f).await {
                Ok(inst) => engine.invoke_on(&f, inst, &exec.id, &exec.input, None).await,
                Err(o) => o,
            };
            exec.finish(outcome);
            Ok(exec)
        };
        joined(tokio::spawn(run.instrument(span)).await)
    }

    /// The function `f` as `qualifier` names it, for the invocation `exec_id` (None: `f`).
    pub async fn resolve(&self, f: &Function, qualifier: Option<&Qualifier>, exec_id: &str) -> Result<Function, EngineError> {
        let Some(q) = qualifier else { return Ok(f.clone()) };
        match self.inner.store.resolve_qualifier(f, q, exec_id).await? {
            Ok(target) => Ok(target),
            Err(voltrun_store::Unresolved::Version) => Err(EngineError::VersionNotFound),
            Err(voltrun_store::Unresolved::Alias) => Err(EngineError::AliasNotFound),
        }
    }

    /// A place among the user's runs in flight, or [`EngineError::UserBusy`] (quota.rs).
    fn user_place(&self, user_id: &str) -> Result<Option<quota::RunPlace>, EngineError> {
        self.inner.user_runs.try_enter(user_id).ok_or_else(|| {
            self.inner.metrics.throttled.fetch_add(1, Relaxed);
            EngineError::UserBusy { limit: self.inner.user_runs.limit() }
        })
    }

    /// Polls an execution started elsewhere until it is finished (or the function's timeout
    /// plus a margin has passed), and returns it as it stands.
    async fn wait_finished(&self, mut e: Execution, f: &Function) -> Result<Execution, EngineError> {
        let until = Instant::now() + Duration::from_secs(f.timeout as u64 + 10);
        while !e.status.is_terminal() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.inner.store.execution_by_id(&e.id).await? {
                Some(x) => e = x,
                None => break,
            }
        }
        Ok(e)
    }

    /// Runs one invocation on a warm or new instance (the caller holds a concurrency permit,
    /// and the run's task is in its [`invoke_span`]).
    pub(crate) async fn run(&self, f: &Function, exec_id: &str, input: &Value) -> Outcome {
        let (idle, stale, generation) = self.inner.pools.take_idle(f);
        self.retire_later(stale);
        // An instance whose streams were seen forged after it went back to the pool (its
        // output can reach the host late, as in gVisor) is never used again.
        let idle = match idle {
            Some(inst) if inst.tainted() => {
                tracing::warn!("retiring an idle instance whose log stream was forged after its run");
                self.retire(inst).await;
                None
            }
            other => other,
        };
        // A secret's new value reaches the next run: an instance given an older one (changed
        // through another node, or while this one ran) is retired, not reused.
        let idle = match idle {
            Some(inst) => {
                if self.secrets_changed(f, inst.secrets_revision.clone()).await {
                    self.retire(inst).await;
                    None
                } else {
                    Some(inst)
                }
            }
            None => None,
        };
        let inst = match idle {
            Some(inst) => inst,
            None => match self.cold_start(f).await {
                Ok(inst) => inst,
                Err(o) => return o,
            },
        };
        self.invoke_on(f, inst, exec_id, input, Some(generation)).await
    }

    /// Runs one invocation on `inst`, then keeps it warm (`keep_warm`: the pool generation it
    /// was taken under, and still reusable) or stops it. The run's live log is in the
    /// `running` map meanwhile.
    async fn invoke_on(&self, f: &Function, mut inst: Instance, exec_id: &str, input: &Value, keep_warm: Option<u64>) -> Outcome {
        let running = RunningEntry::new(self, exec_id, &inst.live);
        let started_at = time::now();
        let t0 = Instant::now();
        let report = inst.invoke(exec_id, input, Duration::from_secs(f.timeout as u64)).await;
        let elapsed = t0.elapsed();
        drop(running);
        self.inner.metrics.record(f.runtime, elapsed.as_secs_f64(), report.result.as_ref().err().map(|e| e.kind));
        if let (Some(generation), true) = (keep_warm, report.reusable) {
            if let Some(stale) = self.inner.pools.put_idle(f, inst, generation) {
                self.retire(stale).await;
            }
        } else {
            self.retire(inst).await;
        }
        Outcome {
            result: report.result,
            logs: log_text(&report.logs.text),
            logs_truncated: report.logs.truncated,
            duration_ms: millis(elapsed),
            started_at,
            finished_at: time::now(),
        }
    }
}

/// The span of one invocation, entered by the run's task from its start to its end: every
/// event of the run (the instance's start, its warnings, the retry) carries the execution id.
/// The task is instrumented with it (`Instrument`), never `span.enter()` across an await: a
/// guard held over a suspension point corrupts the span stack of whatever else runs on that
/// thread (it panicked the server under load).
pub(crate) fn invoke_span(e: &Execution) -> tracing::Span {
    tracing::info_span!("invoke", execution_id = %e.id, function_id = %e.function_id, function = %e.function_name, version = e.function_version, trigger = e.trigger.as_str())
}

/// A new execution of `f`, in `status`, with one attempt allowed.
pub(crate) fn new_execution(f: &Function, trigger: Trigger, input: Value, status: ExecutionStatus) -> Execution {
    let of = voltrun_core::RunOf { user_id: &f.user_id, function_id: &f.id, function_name: &f.name, function_version: f.version };
    Execution::new_run(of, trigger, input, status, 1)
}

/// A duration in milliseconds, to the microsecond.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// How a synchronous run's task ended: it ran, or another request with its idempotency key
/// got there first (the caller waits for that one).
enum Ran {
    Finished(Execution),
    Duplicate(Execution),
}

/// The result of a run's own task: its panic goes on in the caller, as if it had run there.
fn joined<T>(r: Result<Result<T, EngineError>, tokio::task::JoinError>) -> Result<T, EngineError> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(EngineError::Stopped),
    }
}

/// A run's output as stored text: invalid UTF-8 and NUL bytes (which PostgreSQL text cannot
/// hold) become U+FFFD.
pub(crate) fn log_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.into_owned()
    }
}
