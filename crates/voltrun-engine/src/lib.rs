//! Invocations: everything between "run this function with this event" and a finished
//! execution record.
//!
//! The engine keeps warm [`instance::Instance`]s per function version (module state survives
//! between runs, as in Lambda), runs one invocation at a time per instance, allows up to a
//! per-function concurrency limit of instances, queues beyond it and refuses (429) once the
//! queue is full. Idle instances are reaped after a TTL. Async runs are rows in the store
//! (status `pending`) before they are acknowledged; a dispatcher claims and runs them, and on
//! start the engine resumes the queue and settles runs a crash left `running`.
//!
//! Every run is a task of its own, so no caller going away can cut one short, and what a run
//! holds (permits, slots, gauges, its live-log entry) is released by guards on every path. The
//! dispatcher claims only runs that can start and shares its slots between users; followers
//! of an execution are woken by the engine rather than polling the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify, Semaphore};
use tracing::Instrument;
use voltrun_core::{id, time, ErrorKind, ExecError, Execution, ExecutionStatus, Function, Outcome, Runtime, Trigger};
use voltrun_sandbox::{InstanceSpec, Limits, Sandbox};
use voltrun_store::{ClaimSkip, Dialect, NewRun, Store, StoreError};

use counts::{CountUnit, Counts};

mod counts;
pub mod instance;
pub mod metrics;
mod pool;
mod quota;
pub mod runtimes;
mod scheduler;

use instance::{InitParams, Instance, LiveLog};
pub use metrics::Metrics;
use pool::Pools;
pub use runtimes::Runtimes;

/// Engine settings; `Default` are the documented defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where instance code directories live.
    pub data_dir: PathBuf,
    /// Instances one function may run at once.
    pub function_concurrency: usize,
    /// Synchronous invocations that may wait for a free instance before 429.
    pub function_queue: usize,
    /// Idle instances are stopped after this long unused.
    pub idle_ttl: Duration,
    /// Async runs executing at once on this node (0: this node only enqueues; workers run them).
    pub async_concurrency: usize,
    /// Unsaved-code test runs at once on this node (every user's together).
    pub test_concurrency: usize,
    /// Unsaved-code test runs one user may have at once (so one user cannot take the node's).
    pub test_per_user: usize,
    /// Dispatcher slots one user's async runs may hold at once (0: all but an eighth of
    /// `async_concurrency`, keeping at least one free), so one tenant's backlog cannot take
    /// every slot.
    pub async_per_user: usize,
    /// This node's name in leases.
    pub node_id: String,
    /// How long a claimed run stays ours without a heartbeat.
    pub lease: Duration,
    /// Delay before the first retry of a failed async run; doubles with each attempt.
    pub retry_backoff: Duration,
    /// Run the cron scheduler on this node.
    pub scheduler: bool,
    /// Pre-started instances kept ready per runtime (at the default memory), so a new
    /// function's first run only loads its code.
    pub spares: usize,
    /// Runs one user may have in flight on this node (0: unlimited; quota.rs).
    pub user_concurrent_runs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: PathBuf::from("voltrun-data"),
            function_concurrency: 10,
            function_queue: 100,
            idle_ttl: Duration::from_secs(300),
            async_concurrency: 32,
            test_concurrency: 16,
            test_per_user: 2,
            async_per_user: 0,
            node_id: id::new_id("node_"),
            lease: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            scheduler: true,
            spares: 1,
            user_concurrent_runs: voltrun_core::Quotas::default().concurrent_runs,
        }
    }
}

/// Why the engine did not run something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Too many invocations are waiting for this function; retry after the given seconds.
    #[error("too many concurrent invocations of this function; retry later")]
    Throttled { retry_after_s: u64 },
    /// The user has as many runs in flight on this node as their quota allows.
    #[error("this account already has {limit} runs in flight, the most its quota allows; retry when one ends")]
    UserBusy { limit: u64 },
    /// Too many test runs at once: the caller's own (`per_user`) or the node's.
    #[error("too many test runs at once {} (at most {limit}); retry when one finishes", if *per_user { "for this account" } else { "on this server" })]
    TestRunsThrottled { limit: usize, per_user: bool },
    /// The server is stopping: the run's task was cancelled before it ended.
    #[error("the server is shutting down")]
    Stopped,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Ready spares and how many are starting.
type Spares = (Vec<Instance>, usize);

/// The invocation engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sandbox: Arc<dyn Sandbox>,
    runtimes: Runtimes,
    cfg: EngineConfig,
    pools: Pools,
    metrics: Metrics,
    /// Wakes the dispatcher: a run was queued.
    wake: Notify,
    /// Counts the wakes, so the dispatcher knows whether anything was queued since it last
    /// looked.
    wakes: AtomicU64,
    /// Logs of runs in progress on this node, by execution id.
    running: Mutex<HashMap<String, LiveLog>>,
    next_instance: AtomicU64,
    test_slots: Arc<Semaphore>,
    /// Runs in flight per user (the concurrent-runs quota).
    user_runs: quota::UserRuns,
    /// Test runs in progress, by user.
    test_users: Counts,
    /// Open log streams (followers over SSE), by user.
    log_streams: Counts,
    /// Followers of executions (log streams), by execution id: bumped when a run starts on
    /// this node and after its end (or retry) is stored, so they wait without polling.
    watchers: Mutex<HashMap<String, (watch::Sender<u64>, usize)>>,
    /// Pre-started instances per runtime, and how many are being started.
    /// Ready and starting spares by runtime and whether they have a network (egress).
    spares: Mutex<HashMap<(Runtime, bool), Spares>>,
    /// Set at shutdown: results of runs cut short by it are not recorded, so the runs stay
    /// `running` and are settled like any interrupted run (async ones run again).
    stopping: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Builds the engine. Call [`Engine::start`] to resume the async queue and reap idle
    /// instances.
    pub fn new(store: Store, sandbox: Arc<dyn Sandbox>, runtimes: Runtimes, cfg: EngineConfig) -> std::io::Result<Engine> {
        let dir = cfg.data_dir.join("instances");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                sandbox,
                runtimes,
                pools: Pools::new(cfg.function_concurrency, cfg.function_queue),
                test_slots: Arc::new(Semaphore::new(cfg.test_concurrency)),
                user_runs: quota::UserRuns::new(cfg.user_concurrent_runs),
                cfg,
                metrics: Metrics::default(),
                wake: Notify::new(),
                wakes: AtomicU64::new(0),
                running: Mutex::new(HashMap::new()),
                test_users: Counts::default(),
                log_streams: Counts::default(),
                watchers: Mutex::new(HashMap::new()),
                next_instance: AtomicU64::new(0),
                spares: Mutex::new(HashMap::new()),
                stopping: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Settles runs a crash left `running` (SQLite: at once; PostgreSQL: when their lease
    /// expires), and starts the dispatcher, the lease heartbeat and reaper, the scheduler and
    /// the idle-instance reaper.
    pub async fn start(&self) -> Result<(), EngineError> {
        let s = &self.inner.store;
        if s.dialect() == Dialect::Sqlite {
            let (requeued, interrupted) = s.recover_interrupted(&time::now()).await?;
            if requeued + interrupted > 0 {
                tracing::warn!(requeued, interrupted, "settled runs left in flight by the previous process");
            }
        }
        if self.inner.cfg.async_concurrency > 0 {
            tokio::spawn(self.clone().dispatch());
        }
        if let Some(mut listener) = s.listen_queue().await? {
            let engine = self.clone();
            tokio::spawn(async move {
                loop {
                    match listener.recv().await {
                        Ok(()) => engine.wake_dispatcher(),
                        Err(err) => {
                            tracing::warn!(%err, "queue listener failed; polling until it recovers");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        tokio::spawn(self.clone().leases());
        for rt in Runtime::ALL {
            self.replenish(rt);
        }
        if self.inner.cfg.scheduler {
            tokio::spawn(self.clone().schedule());
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let period = (engine.inner.cfg.idle_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                tokio::time::sleep(period).await;
                for inst in engine.inner.pools.reap(engine.inner.cfg.idle_ttl, &engine.inner.metrics) {
                    engine.retire(inst).await;
                }
            }
        });
        Ok(())
    }

    fn lease_until(&self) -> String {
        time::format(chrono_now() + self.inner.cfg.lease)
    }

    /// Renews this node's leases and settles runs of nodes that stopped renewing theirs.
    async fn leases(self) {
        let period = self.inner.cfg.lease / 3;
        loop {
            tokio::time::sleep(period).await;
            let s = &self.inner.store;
            if let Err(err) = s.heartbeat(&self.inner.cfg.node_id, &self.lease_until()).await {
                tracing::warn!(%err, "lease heartbeat failed");
            }
            if let Ok(n) = s.count_pending().await {
                self.inner.metrics.pending.store(n, Relaxed);
            }
            match s.expire_leases(&time::now()).await {
                Ok((0, 0)) => {}
                Ok((requeued, interrupted)) => {
                    tracing::warn!(requeued, interrupted, "settled runs of a node that stopped");
                    self.wake_dispatcher();
                }
                Err(err) => tracing::warn!(%err, "lease reaper failed"),
            }
        }
    }

    /// The sandbox tier's name.
    pub fn sandbox_kind(&self) -> &'static str {
        self.inner.sandbox.kind()
    }

    /// Stops every instance (at server shutdown). Runs still in flight are settled at the
    /// next start: async ones run again, sync ones end `Interrupted`.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Relaxed);
        let spares: Vec<Instance> = self.inner.spares.lock().expect("spares lock").values_mut().flat_map(|(ready, _)| std::mem::take(ready)).collect();
        // All at once: a gVisor instance takes a few runsc calls to stop, and one after the
        // other they could outlast an operator's (or a supervisor's) stop timeout.
        let mut stopping = tokio::task::JoinSet::new();
        for inst in spares.into_iter().chain(self.inner.pools.drain_all(&self.inner.metrics)) {
            let engine = self.clone();
            stopping.spawn(async move { engine.retire(inst).await });
        }
        while stopping.join_next().await.is_some() {}
        let sandbox = self.inner.sandbox.clone();
        let _ = tokio::task::spawn_blocking(move || sandbox.shutdown()).await;
    }

    /// Facts about the sandbox tier (e.g. the cgroup version), for `/health`.
    pub fn sandbox_details(&self) -> Vec<(&'static str, String)> {
        self.inner.sandbox.details()
    }

    /// The runtimes found on this host.
    pub fn runtimes(&self) -> &Runtimes {
        &self.inner.runtimes
    }

    /// The engine's figures.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Runs `f` now and returns the finished, stored execution. Refuses with
    /// [`EngineError::Throttled`] when the function's queue is full. With an idempotency key
    /// already used for `f`, returns that execution (waiting for it to finish) instead.
    ///
    /// The run is a task of its own that the caller awaits: a caller that goes away (an HTTP
    /// client hanging up drops its request's future) does not take the run with it, so the
    /// run goes on to its end and is recorded, as in Lambda.
    pub async fn execute(&self, f: &Function, trigger: Trigger, input: Value, key: Option<String>) -> Result<Execution, EngineError> {
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
        let run = async move {
            let _place = place;
            engine.execute_to_end(&owned, trigger, input, key).await
        };
        match joined(tokio::spawn(run.in_current_span()).await)? {
            Ran::Finished(e) => Ok(e),
            Ran::Duplicate(e) => self.wait_finished(e, f).await,
        }
    }

    async fn execute_to_end(&self, f: &Function, trigger: Trigger, input: Value, key: Option<String>) -> Result<Ran, EngineError> {
        let permit = self.inner.pools.acquire(f, true, &self.inner.metrics).await?;
        let mut exec = new_execution(f, trigger, input, ExecutionStatus::Running);
        exec.attempts = 1;
        exec.started_at = Some(time::now());
        let run = NewRun { idempotency_key: key.clone(), schedule_tick: None, lease: Some((self.inner.cfg.node_id.clone(), self.lease_until())) };
        if let Some(k) = &key {
            // With a key, the insert decides whether this request runs at all: it comes first.
            if !self.inner.store.insert_execution(&exec, &run).await? {
                drop(permit);
                let existing = self.inner.store.execution_by_idempotency_key(&f.id, k).await?;
                return match existing {
                    Some(e) => Ok(Ran::Duplicate(e)),
                    None => Err(StoreError::Corrupt("an idempotent insert conflicted with nothing".into()).into()),
                };
            }
            let outcome = self.run(f, &exec.id, &exec.input).await;
            drop(permit);
            return self.record_end(exec, outcome, true).await.map(Ran::Finished);
        }
        // Without a key, a run that ends within RUNNING_ROW_AFTER is stored once, finished (no
        // one can have seen it yet: its id is in no response). A longer run gets its `running`
        // row then, so lists show it and a crash leaves it to be settled as `Interrupted`.
        let (outcome, stored) = {
            let running = self.run(f, &exec.id, &exec.input);
            tokio::pin!(running);
            tokio::select! {
                outcome = &mut running => (outcome, false),
                _ = tokio::time::sleep(RUNNING_ROW_AFTER) => {
                    let inserted = self.inner.store.begin_insert_execution(&exec, &run);
                    let outcome = running.await;
                    inserted.committed().await?;
                    (outcome, true)
                }
            }
        };
        drop(permit);
        self.record_end(exec, outcome, stored).await.map(Ran::Finished)
    }

    /// A place among the user's runs in flight, or [`EngineError::UserBusy`] (quota.rs).
    fn user_place(&self, user_id: &str) -> Result<Option<quota::RunPlace>, EngineError> {
        self.inner.user_runs.try_enter(user_id).ok_or_else(|| {
            self.inner.metrics.throttled.fetch_add(1, Relaxed);
            EngineError::UserBusy { limit: self.inner.user_runs.limit() }
        })
    }

    /// Records how a synchronous run ended: over its `running` row if it has one, else as a
    /// new, finished row. Nothing is recorded when shutdown cut the run short.
    async fn record_end(&self, mut exec: Execution, outcome: Outcome, stored: bool) -> Result<Execution, EngineError> {
        exec.finish(outcome);
        if self.inner.stopping.load(Relaxed) {
            return Ok(exec);
        }
        if stored {
            self.inner.store.save_execution(&exec).await?;
        } else {
            self.inner.store.insert_execution(&exec, &NewRun::default()).await?;
        }
        self.changed(&exec.id);
        Ok(exec)
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

    /// Stores an async run of `f` as pending (durable when this returns) and queues it.
    /// Returns the execution and whether it is new (false: the idempotency key was used).
    pub async fn enqueue(&self, f: &Function, input: Value, key: Option<String>) -> Result<(Execution, bool), EngineError> {
        let mut exec = new_execution(f, Trigger::Async, input, ExecutionStatus::Pending);
        exec.max_attempts = f.max_retries as i64 + 1;
        let run = NewRun { idempotency_key: key.clone(), ..NewRun::default() };
        if !self.inner.store.insert_execution(&exec, &run).await? {
            let existing = self.inner.store.execution_by_idempotency_key(&f.id, key.as_deref().unwrap_or_default()).await?;
            return existing.map(|e| (e, false)).ok_or_else(|| StoreError::Corrupt("an idempotent insert conflicted with nothing".into()).into());
        }
        self.wake_dispatcher();
        Ok((exec, true))
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
        let run = async move {
            let _held = (place, user_slot, node_slot);
            let mut exec = new_execution(&f, Trigger::Test, input, ExecutionStatus::Running);
            exec.attempts = 1;
            let outcome = match engine.cold_start(&f).await {
                Ok(inst) => engine.invoke_on(&f, inst, &exec.id, &exec.input, false).await,
                Err(o) => o,
            };
            exec.finish(outcome);
            Ok(exec)
        };
        joined(tokio::spawn(run.in_current_span()).await)
    }

    /// Drops the warm instances of a function (after an update or delete), so no later run
    /// sees old code.
    pub fn invalidate(&self, function_id: &str) {
        let stale = self.inner.pools.invalidate(function_id, &self.inner.metrics);
        let engine = self.clone();
        tokio::spawn(async move {
            for inst in stale {
                engine.retire(inst).await;
            }
        });
    }

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
        self.inner.metrics.log_streams.fetch_add(1, Relaxed);
        Some(LogStreamSlot { engine: self.clone(), _unit: unit })
    }

    /// Wakes the followers of an execution (a lock and, when anyone follows, a lookup).
    fn changed(&self, execution_id: &str) {
        let watchers = self.inner.watchers.lock().expect("watchers lock");
        if watchers.is_empty() {
            return;
        }
        if let Some((tx, _)) = watchers.get(execution_id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Tells the dispatcher a run was queued (here, or on another node).
    fn wake_dispatcher(&self) {
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
    async fn dispatch(self) {
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
                    let run = async move {
                        let in_flight = gauge_unit(&engine.inner.metrics.queue_depth);
                        let id = exec.id.clone();
                        if let Err(err) = engine.run_claimed(exec).await {
                            tracing::error!(execution_id = %id, %err, "async run failed to complete");
                        }
                        drop((in_flight, slot));
                        // A run passed over while this one held its user's or function's
                        // share may start now.
                        held.release();
                    };
                    tokio::spawn(run);
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
        let Some(f) = store.function_by_id(&exec.function_id).await? else {
            let now = time::now();
            exec.finish(Outcome {
                result: Err(ExecError::new(ErrorKind::Internal, "the function was deleted before this run started")),
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
        let permit = self.inner.pools.acquire(&f, false, &self.inner.metrics).await?;
        let outcome = self.run(&f, &exec.id, &exec.input).await;
        drop(permit);
        if self.inner.stopping.load(Relaxed) {
            return Ok(()); // cut short by shutdown: left `running` for recovery
        }
        let retry = matches!(&outcome.result, Err(e) if matches!(e.kind, ErrorKind::HandlerError | ErrorKind::Timeout | ErrorKind::OutOfMemory | ErrorKind::Interrupted));
        exec.finish(outcome);
        if retry && exec.attempts < exec.max_attempts {
            let backoff = self.inner.cfg.retry_backoff * 2u32.saturating_pow((exec.attempts - 1).clamp(0, 8) as u32);
            let due = time::format(chrono_now() + backoff.min(Duration::from_secs(300)));
            tracing::info!(execution_id = %exec.id, attempt = exec.attempts, %due, "retrying a failed async run");
            store.requeue(&exec, &due).await?;
            self.changed(&exec.id);
            return Ok(());
        }
        store.save_execution(&exec).await?;
        self.changed(&exec.id);
        Ok(())
    }

    /// Runs one invocation on a warm or new instance (the caller holds a concurrency permit),
    /// in a span that carries the execution id.
    async fn run(&self, f: &Function, exec_id: &str, input: &Value) -> Outcome {
        // Instrument, never `span.enter()` across an await: a guard held over a suspension
        // point corrupts the span stack of whatever else runs on that thread (it panicked
        // the server under load).
        let span = tracing::info_span!("invoke", execution_id = %exec_id, function = %f.name, version = f.version);
        self.run_in_span(f, exec_id, input).instrument(span).await
    }

    async fn run_in_span(&self, f: &Function, exec_id: &str, input: &Value) -> Outcome {
        let (idle, stale) = self.inner.pools.take_idle(f, &self.inner.metrics);
        if !stale.is_empty() {
            let engine = self.clone();
            tokio::spawn(async move {
                for inst in stale {
                    engine.retire(inst).await;
                }
            });
        }
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
        let inst = match idle {
            Some(inst) => inst,
            None => match self.cold_start(f).await {
                Ok(inst) => inst,
                Err(o) => return o,
            },
        };
        self.invoke_on(f, inst, exec_id, input, true).await
    }

    async fn invoke_on(&self, f: &Function, mut inst: Instance, exec_id: &str, input: &Value, keep_warm: bool) -> Outcome {
        let running = RunningEntry::new(self, exec_id, &inst.live);
        let started_at = time::now();
        let t0 = Instant::now();
        let report = inst.invoke(exec_id, input, Duration::from_secs(f.timeout as u64)).await;
        let elapsed = t0.elapsed();
        drop(running);
        self.inner.metrics.record(f.runtime, elapsed.as_secs_f64(), report.result.as_ref().err().map(|e| e.kind));
        if keep_warm && report.reusable {
            if let Some(stale) = self.inner.pools.put_idle(f, inst, &self.inner.metrics) {
                self.retire(stale).await;
            }
        } else {
            self.retire(inst).await;
        }
        Outcome {
            result: report.result,
            logs: log_text(&report.logs.text),
            logs_truncated: report.logs.truncated,
            duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            started_at,
            finished_at: time::now(),
        }
    }

    /// Starts an instance of `f` and loads its code: a pre-started spare when one fits,
    /// else a new one. On failure, the outcome to report.
    async fn cold_start(&self, f: &Function) -> Result<Instance, Outcome> {
        let started_at = time::now();
        let t0 = Instant::now();
        let fail = |error: ExecError, logs: instance::Segment| Outcome {
            result: Err(error),
            logs: log_text(&logs.text),
            logs_truncated: logs.truncated,
            duration_ms: (t0.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            started_at: started_at.clone(),
            finished_at: time::now(),
        };
        let deadline = Instant::now() + Duration::from_secs(f.timeout as u64);
        let (inst, env) = match self.take_spare(f) {
            Some(spare) => {
                if let Err(e) = std::fs::write(spare.code_dir().join(f.runtime.entry_file()), &f.code) {
                    self.retire(spare).await;
                    return Err(fail(ExecError::new(ErrorKind::Internal, format!("writing the function's code: {e}")), Default::default()));
                }
                (spare, function_env(f))
            }
            None => {
                let n = self.inner.next_instance.fetch_add(1, Relaxed);
                let dir = self.inner.cfg.data_dir.join("instances").join(format!("{}-{n}", f.id));
                if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join(f.runtime.entry_file()), &f.code)) {
                    return Err(fail(ExecError::new(ErrorKind::Internal, format!("writing the function's code: {e}")), Default::default()));
                }
                let mut env = base_env(f.runtime, &self.inner.sandbox.task_root(&dir));
                env.extend(function_env(f));
                match self.spawn_instance(f.runtime, f.memory, dir, env, self.network_plan(f)).await {
                    Ok(inst) => (inst, Vec::new()),
                    Err(e) => return Err(fail(e, Default::default())),
                }
            }
        };
        self.inner.metrics.cold_start(f.runtime);
        let init = InitParams {
            env,
            entry: self.inner.sandbox.task_root(inst.code_dir()).join(f.runtime.entry_file()),
            handler: f.handler.clone(),
            function_name: f.name.clone(),
            function_version: f.version,
            memory_mb: f.memory,
        };
        match inst.init(init, deadline).await {
            Ok(inst) => Ok(inst),
            Err(failure) => {
                self.inner.metrics.instances.fetch_sub(1, Relaxed);
                self.inner.metrics.record(f.runtime, t0.elapsed().as_secs_f64(), Some(failure.error.kind));
                Err(fail(failure.error, failure.logs))
            }
        }
    }

    /// Starts a runtime process in the sandbox with `dir` as its code directory; it waits for
    /// its init frame. The directory is removed if the start fails.
    async fn spawn_instance(
        &self,
        runtime: Runtime,
        memory_mb: u32,
        dir: std::path::PathBuf,
        env: Vec<(String, String)>,
        network: Option<Arc<voltrun_sandbox::network::NetworkPlan>>,
    ) -> Result<Instance, ExecError> {
        let rt = &self.inner.runtimes;
        let sandbox = self.inner.sandbox.clone();
        let Some(argv) = rt.argv(runtime, memory_mb, &sandbox.bootstrap_root(rt.bootstrap_dir())) else {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ExecError::new(ErrorKind::RuntimeError, format!("the {} runtime is not installed on this server", runtime.id())));
        };
        let spec = InstanceSpec {
            argv,
            env,
            code_dir: dir.clone(),
            runtime_paths: rt.paths(runtime),
            bootstrap_dir: rt.bootstrap_dir().to_path_buf(),
            limits: Limits {
                memory_bytes: (memory_mb as u64) << 20,
                limit_address_space: Runtimes::limits_address_space(runtime),
                pids: 128,
                open_files: 1024,
                file_size_bytes: 512 << 20,
                // /tmp is RAM-backed and charged to the instance's memory: half of it at most.
                tmp_bytes: ((memory_mb as u64) << 19).min(512 << 20),
                cpu_millis: 1000,
            },
            network,
        };
        let spawned = tokio::task::spawn_blocking(move || sandbox.spawn(&spec)).await.expect("spawn task does not panic");
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                tracing::error!(err = %e, runtime = runtime.id(), "could not start an instance");
                // The sandbox's error names host paths (the data dir, cgroups): the server log
                // has it, the run's record only says what failed.
                return Err(ExecError::new(ErrorKind::Internal, "could not start an instance: the sandbox setup failed (the server log has the details)"));
            }
        };
        self.inner.metrics.instances.fetch_add(1, Relaxed);
        Instance::wrap(spawned, dir).map_err(|failure| {
            self.inner.metrics.instances.fetch_sub(1, Relaxed);
            failure.error
        })
    }

    /// A pre-started instance for `f`, when one fits: spares are started with the default
    /// memory and no function environment, so they serve functions with that memory whose
    /// variables the interpreter does not read at start. Starts a replacement.
    fn take_spare(&self, f: &Function) -> Option<Instance> {
        // A function with egress takes a spare started with a network that admits nothing
        // yet, and gives it its plan (its rules, names, counters) before its code loads.
        let networked = !f.egress.is_empty();
        let fits = f.memory == voltrun_core::function::DEFAULT_MEMORY_MB
            && (!networked || self.inner.sandbox.egress_support().is_ok())
            && !f.env.keys().any(|k| ["PYTHON", "NODE_", "LD_", "GLIBC_", "MALLOC_"].iter().any(|p| k.starts_with(p)));
        if !fits || self.inner.cfg.spares == 0 {
            return None;
        }
        let spare = self.inner.spares.lock().expect("spares lock").entry((f.runtime, networked)).or_default().0.pop();
        if spare.is_some() {
            self.inner.metrics.spare_instances.fetch_sub(1, Relaxed);
        }
        self.replenish_kind(f.runtime, networked);
        let mut spare = spare?;
        if let Some(plan) = self.network_plan(f) {
            if let Err(e) = spare.set_network(plan) {
                tracing::warn!(err = %e, "could not give a spare its function's network");
                let engine = self.clone();
                tokio::spawn(async move { engine.retire(spare).await });
                return None;
            }
        }
        Some(spare)
    }

    /// Starts spares of `runtime` (without a network) until the configured number are ready or starting.
    fn replenish(&self, runtime: Runtime) {
        self.replenish_kind(runtime, false)
    }

    /// Starts spares of `runtime`, with a network (for functions with egress; started once
    /// the first such function ran) or without, until the configured number are ready or starting.
    fn replenish_kind(&self, runtime: Runtime, networked: bool) {
        if self.inner.runtimes.interpreter(runtime).is_none() {
            return;
        }
        let need = {
            let mut spares = self.inner.spares.lock().expect("spares lock");
            let (ready, starting) = spares.entry((runtime, networked)).or_default();
            let need = self.inner.cfg.spares.saturating_sub(ready.len() + *starting);
            *starting += need;
            need
        };
        for _ in 0..need {
            let engine = self.clone();
            tokio::spawn(async move {
                let n = engine.inner.next_instance.fetch_add(1, Relaxed);
                let dir = engine.inner.cfg.data_dir.join("instances").join(format!("spare-{}-{n}", runtime.id()));
                let made = match std::fs::create_dir_all(&dir) {
                    Ok(()) => {
                        let env = base_env(runtime, &engine.inner.sandbox.task_root(&dir));
                        let network = networked.then(|| Arc::new(voltrun_sandbox::network::NetworkPlan { function: String::new(), policy: Default::default(), on_event: None }));
                        engine.spawn_instance(runtime, voltrun_core::function::DEFAULT_MEMORY_MB, dir, env, network).await.ok()
                    }
                    Err(_) => None,
                };
                let mut spares = engine.inner.spares.lock().expect("spares lock");
                let (ready, starting) = spares.entry((runtime, networked)).or_default();
                *starting -= 1;
                if let Some(inst) = made {
                    ready.push(inst);
                    engine.inner.metrics.spare_instances.fetch_add(1, Relaxed);
                }
            });
        }
    }

    /// The network an instance of `f` gets (issue 14): none without an `egress` list.
    fn network_plan(&self, f: &Function) -> Option<Arc<voltrun_sandbox::network::NetworkPlan>> {
        if f.egress.is_empty() {
            return None;
        }
        // Stored lists were validated on the way in; one that no longer parses gets nothing.
        let policy = voltrun_core::egress::EgressPolicy::parse(&f.egress).unwrap_or_default();
        let counts = self.inner.metrics.egress.clone();
        let id = f.id.clone();
        let on_event: Arc<dyn Fn(voltrun_sandbox::network::Verdict) + Send + Sync> =
            Arc::new(move |v| counts.record(&id, v == voltrun_sandbox::network::Verdict::Refused));
        Some(Arc::new(voltrun_sandbox::network::NetworkPlan { function: f.id.clone(), policy, on_event: Some(on_event) }))
    }

    async fn retire(&self, inst: Instance) {
        self.inner.metrics.instances.fetch_sub(1, Relaxed);
        inst.terminate().await;
    }
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

/// One open log stream's place (see [`Engine::open_log_stream`]), given back on every path
/// the stream's task ends by (the run's end, the client leaving, a panic).
pub struct LogStreamSlot {
    engine: Engine,
    _unit: CountUnit,
}

impl Drop for LogStreamSlot {
    fn drop(&mut self) {
        self.engine.inner.metrics.log_streams.fetch_sub(1, Relaxed);
    }
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
struct RunningEntry<'a> {
    engine: &'a Engine,
    id: &'a str,
}

impl<'a> RunningEntry<'a> {
    fn new(engine: &'a Engine, id: &'a str, live: &LiveLog) -> Self {
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

/// One unit of a gauge, given back when dropped.
fn gauge_unit(g: &std::sync::atomic::AtomicI64) -> GaugeUnit<'_> {
    g.fetch_add(1, Relaxed);
    GaugeUnit(g)
}

/// See [`gauge_unit`].
struct GaugeUnit<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for GaugeUnit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The async runs this node's dispatcher has claimed and not finished, by user and by
/// function.
#[derive(Default)]
struct DispatchLoad {
    users: Counts,
    functions: Counts,
    /// A claim passed over some runs: wake the dispatcher (`freed`) when a run ends.
    held_back: std::sync::atomic::AtomicBool,
    /// Wakes the dispatcher: a run ended while claims were passing over runs.
    freed: Notify,
}

/// A claimed run's place in the [`DispatchLoad`].
struct Held {
    load: Arc<DispatchLoad>,
    _units: (CountUnit, CountUnit),
}

impl Held {
    /// Gives the run's place back, and wakes the dispatcher if a claim passed over runs
    /// meanwhile (one of them may start now).
    fn release(self) {
        let load = self.load.clone();
        drop(self);
        if load.held_back.swap(false, Relaxed) {
            load.freed.notify_one();
        }
    }
}

impl DispatchLoad {
    fn hold(load: &Arc<DispatchLoad>, e: &Execution) -> Held {
        Held { load: load.clone(), _units: (load.users.add(&e.user_id), load.functions.add(&e.function_id)) }
    }

    /// What a claim passes over: (at the fair share, at the per-user cap). Both skip the
    /// functions that cannot start another run: at the node's per-function limit counting
    /// the runs claimed here, or with no free pool slot (synchronous runs hold them).
    fn skips(&self, pools: &Pools, per_function: usize, total: usize, cap: usize) -> (ClaimSkip, ClaimSkip) {
        let mut functions = pools.saturated();
        {
            let claimed = self.functions.0.lock().expect("counts lock");
            let at_limit: Vec<String> = claimed.iter().filter(|(id, n)| **n >= per_function && !functions.contains(id)).map(|(id, _)| id.clone()).collect();
            functions.extend(at_limit);
        }
        let users = self.users.0.lock().expect("counts lock");
        let fair = (total / (users.len() + 1)).clamp(1, cap);
        let over = |limit: usize| users.iter().filter(|(_, n)| **n >= limit).map(|(u, _)| u.clone()).collect::<Vec<_>>();
        let capped = ClaimSkip { functions: functions.clone(), users: over(cap) };
        (ClaimSkip { functions, users: over(fair) }, capped)
    }
}

/// A run's output as stored text: invalid UTF-8 and NUL bytes (which PostgreSQL text cannot
/// hold) become U+FFFD.
fn log_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.into_owned()
    }
}

/// The least time between two claims that found nothing while skipping some runs.
const FRUITLESS_CLAIM_PAUSE: Duration = Duration::from_millis(50);

/// How long a synchronous run goes unrecorded before its `running` row is written.
const RUNNING_ROW_AFTER: Duration = Duration::from_millis(50);

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn new_execution(f: &Function, trigger: Trigger, input: Value, status: ExecutionStatus) -> Execution {
    let of = voltrun_core::RunOf { user_id: &f.user_id, function_id: &f.id, function_name: &f.name, function_version: f.version };
    Execution::new_run(of, trigger, input, status, 1)
}

/// Variables every instance of a runtime gets, whatever its function.
fn base_env(runtime: Runtime, task_root: &std::path::Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME".to_string(), "/tmp".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("TZ".to_string(), "UTC".to_string()),
        ("LAMBDA_TASK_ROOT".to_string(), task_root.display().to_string()),
    ];
    if runtime == Runtime::Python311 {
        env.push(("PYTHONUNBUFFERED".to_string(), "1".to_string()));
        env.push(("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()));
    }
    env
}

/// A function's own variables and Lambda's: nothing of the server's. The base variables
/// (PATH, HOME, LANG, TZ, LAMBDA_TASK_ROOT) cannot be overridden.
fn function_env(f: &Function) -> Vec<(String, String)> {
    const BASE: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "LAMBDA_TASK_ROOT"];
    let mut env: Vec<(String, String)> = f.env.iter().filter(|(k, _)| !BASE.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("AWS_LAMBDA_FUNCTION_NAME".to_string(), f.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION".to_string(), f.version.to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_string(), f.memory.to_string()),
        ("AWS_EXECUTION_ENV".to_string(), format!("VoltRun_{}", f.runtime.id())),
        ("VOLTRUN_FUNCTION_ID".to_string(), f.id.clone()),
    ]);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(user: &str, function: &str) -> Execution {
        let mut e = new_execution(&test_function(), Trigger::Async, Value::Null, ExecutionStatus::Running);
        e.user_id = user.into();
        e.function_id = function.into();
        e
    }

    fn test_function() -> Function {
        voltrun_core::NewFunction {
            name: "f".into(),
            description: None,
            runtime: "python".into(),
            code: "def handler(e, c):\n    return 1\n".into(),
            handler: None,
            memory: None,
            timeout: None,
            env: None,
            route: None,
            public: None,
            schedule: None,
            max_retries: None,
            egress: None,
        }
        .into_function("fn_x".into(), "u".into(), time::now())
        .unwrap()
    }

    /// The skips follow the dispatcher's load: a function at its limit is skipped in both
    /// phases; a lone user is held back at the fair share first, then only at the cap; a
    /// second user running lowers the fair share; giving runs back lifts the skips.
    #[test]
    fn claims_skip_functions_at_their_limit_and_users_at_their_share() {
        let load = Arc::new(DispatchLoad::default());
        let pools = Pools::new(2, 10);
        let (total, cap) = (8, 7);
        let mut held = vec![DispatchLoad::hold(&load, &claimed("a", "f1")), DispatchLoad::hold(&load, &claimed("a", "f1"))];
        let (fair, capped) = load.skips(&pools, 2, total, cap);
        assert_eq!((fair.functions.clone(), capped.functions.clone()), (vec!["f1".to_string()], vec!["f1".to_string()]));
        assert!(fair.users.is_empty() && capped.users.is_empty());
        for f in ["f2", "f3"] {
            held.push(DispatchLoad::hold(&load, &claimed("a", f)));
        }
        // Alone, `a` holds 4 of 8: its fair share (8 / 2), not yet its cap.
        let (fair, capped) = load.skips(&pools, 2, total, cap);
        assert_eq!((fair.users, capped.users), (vec!["a".to_string()], vec![]));
        held.push(DispatchLoad::hold(&load, &claimed("b", "g1")));
        // Two users running: the fair share is 8 / 3 = 2; `b` (1) is below it.
        let (fair, _) = load.skips(&pools, 2, total, cap);
        assert_eq!(fair.users, vec!["a".to_string()]);
        for _ in 0..3 {
            held.push(DispatchLoad::hold(&load, &claimed("a", "f4")));
        }
        let (_, capped) = load.skips(&pools, 2, total, cap);
        assert_eq!(capped.users, vec!["a".to_string()], "7 of 8 is the cap");
        held.clear();
        let (fair, capped) = load.skips(&pools, 2, total, cap);
        assert!(fair.users.is_empty() && fair.functions.is_empty() && capped.users.is_empty());
        assert!(load.users.0.lock().unwrap().is_empty() && load.functions.0.lock().unwrap().is_empty(), "nothing left behind");
    }
}
