//! The engine value: what it holds ([`Inner`]), building it, starting its background tasks
//! (dispatcher, queue listener, leases, spares, scheduler, idle reaper) and stopping it, and
//! the small accessors the API and the binary read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use voltrun_core::{RetryPolicy, Runtime};
use voltrun_sandbox::Sandbox;
use voltrun_store::Store;

use crate::counts::Counts;
use crate::instance::{Instance, LiveLog};
use crate::pool::Pools;
use crate::spares::{SparePolicy, Spares};
use crate::{quota, EngineConfig, EngineError, Metrics, Runtimes};

/// The invocation engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// What every clone of an [`Engine`] shares.
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) sandbox: Arc<dyn Sandbox>,
    pub(crate) runtimes: Runtimes,
    pub(crate) cfg: EngineConfig,
    /// When failed async runs are tried again (from `cfg.retry_backoff`).
    pub(crate) retry: RetryPolicy,
    pub(crate) pools: Pools,
    pub(crate) metrics: Arc<Metrics>,
    /// Wakes the dispatcher: a run was queued.
    pub(crate) wake: Notify,
    /// Counts the wakes, so the dispatcher knows whether anything was queued since it last
    /// looked.
    pub(crate) wakes: AtomicU64,
    /// Logs of runs in progress on this node, by execution id (entries are
    /// [`crate::follow::RunningEntry`] guards).
    pub(crate) running: Mutex<HashMap<String, LiveLog>>,
    pub(crate) next_instance: AtomicU64,
    pub(crate) test_slots: Arc<Semaphore>,
    /// Runs in flight per user (the concurrent-runs quota).
    pub(crate) user_runs: quota::UserRuns,
    /// Test runs in progress, by user.
    pub(crate) test_users: Counts,
    /// Open log streams (followers over SSE), by user.
    pub(crate) log_streams: Counts,
    /// Followers of executions (log streams), by execution id: bumped when a run starts on
    /// this node and after its end (or retry) is stored, so they wait without polling.
    pub(crate) watchers: Mutex<HashMap<String, (watch::Sender<u64>, usize)>>,
    /// Pre-started instances per runtime.
    pub(crate) spares: Spares,
    /// Set at shutdown: results of runs cut short by it are not recorded, so the runs stay
    /// `running` and are settled like any interrupted run (async ones run again).
    pub(crate) stopping: AtomicBool,
    /// Dependency builds: the build dispatcher's slots and wake, the builds running here.
    pub(crate) build_queue: crate::build_queue::BuildQueue,
    /// Dependency builds: the tree cache, the interpreters' platforms (build.rs).
    pub(crate) builds: crate::build::Builds,
}

/// How often the trees of live versions are read again ([`Engine::pin_live_trees`]).
const LIVE_TREES_EVERY: Duration = Duration::from_secs(10);

/// How old a packed tree that no build row names must be before it is freed: the node that
/// stored it may still be ending its build (which then finds it gone and names none).
const ORPHAN_PACK_GRACE_SECS: i64 = 600;

impl Engine {
    /// Builds the engine. Call [`Engine::start`] to resume the async queue and reap idle
    /// instances.
    pub fn new(store: Store, sandbox: Arc<dyn Sandbox>, runtimes: Runtimes, cfg: EngineConfig) -> std::io::Result<Engine> {
        let dir = cfg.data_dir.join("instances");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // Package trees half made when the last server died (the finished ones are kept).
        let _ = std::fs::remove_dir_all(voltrun_package::Trees::new(&cfg.data_dir).scratch_dir());
        let metrics = Arc::new(Metrics::default());
        let builds = crate::build::Builds::open(&cfg.data_dir, &cfg.build)?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                sandbox,
                runtimes,
                retry: RetryPolicy::new(cfg.retry_backoff),
                pools: Pools::new(cfg.function_concurrency, cfg.function_queue, metrics.clone()),
                test_slots: Arc::new(Semaphore::new(cfg.test_concurrency)),
                user_runs: quota::UserRuns::new(cfg.user_concurrent_runs),
                spares: Spares::new(SparePolicy { base: cfg.spares, max: cfg.spares_max.max(cfg.spares), at_once: crate::config::default_build_concurrency() }, metrics.clone()),
                build_queue: crate::build_queue::BuildQueue::new(cfg.build_concurrency),
                cfg,
                metrics,
                wake: Notify::new(),
                wakes: AtomicU64::new(0),
                running: Mutex::new(HashMap::new()),
                test_users: Counts::default(),
                log_streams: Counts::default(),
                watchers: Mutex::new(HashMap::new()),
                next_instance: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                builds,
            }),
        })
    }

    /// Settles runs a crash left `running` (SQLite: at once; PostgreSQL: when their lease
    /// expires), and starts the dispatcher, the lease heartbeat and reaper, the scheduler and
    /// the idle-instance reaper.
    pub async fn start(&self) -> Result<(), EngineError> {
        self.recover_interrupted().await?;
        match self.sweep_package_trees().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed unpacked packages no function refers to any more"),
            Err(err) => tracing::warn!(%err, "could not sweep the unpacked packages"),
        }
        if self.inner.cfg.async_concurrency > 0 {
            tokio::spawn(self.clone().dispatch());
        }
        if self.inner.cfg.build_concurrency > 0 {
            tokio::spawn(self.clone().dispatch_builds());
        }
        self.listen_queue().await?;
        tokio::spawn(self.clone().leases());
        // Custom runtimes' spares start once the first `provided` function ran (as networked
        // spares do): most servers never run one, and every spare is a sandbox.
        for rt in Runtime::ALL.into_iter().filter(|r| *r != Runtime::Provided) {
            self.replenish(rt);
        }
        if self.inner.cfg.scheduler {
            tokio::spawn(self.clone().schedule());
        }
        tokio::spawn(self.clone().pin_live_trees());
        let engine = self.clone();
        tokio::spawn(async move {
            let period = (engine.inner.cfg.idle_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                tokio::time::sleep(period).await;
                for inst in engine.inner.pools.reap(engine.inner.cfg.idle_ttl) {
                    engine.retire(inst).await;
                }
                // Spares nobody took for an idle TTL: the pool shrinks back toward `--spares`.
                for inst in engine.inner.spares.shrink_idle(engine.inner.cfg.idle_ttl) {
                    engine.retire(inst).await;
                }
            }
        });
        Ok(())
    }

    /// Keeps the build cache's set of trees live versions run with current (SPEC §13: a
    /// version's built dependencies are frozen, so its tree is never evicted while the
    /// version exists): read from the store at start and every [`LIVE_TREES_EVERY`].
    ///
    /// On PostgreSQL it also frees, as often, the trees packed for other nodes that no live
    /// version runs with any more ([`voltrun_store::Store::free_unused_tree_blobs`]; a pack
    /// no build names waits [`ORPHAN_PACK_GRACE_SECS`], as its build may still be ending),
    /// and code rows no version names (`Store::free_unused_code`).
    pub(crate) async fn pin_live_trees(self) {
        let store = &self.inner.store;
        loop {
            match store.live_tree_keys().await {
                Ok(keys) => self.inner.builds.cache.set_referenced(keys),
                Err(err) => tracing::warn!(%err, "reading the dependency trees of live versions failed"),
            }
            if store.dialect() == voltrun_store::Dialect::Postgres {
                match store.free_unused_tree_blobs(&voltrun_core::time::in_seconds(-ORPHAN_PACK_GRACE_SECS), 100).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(n, "freed dependency trees packed for other nodes that no live version runs with"),
                    Err(err) => tracing::warn!(%err, "freeing packed dependency trees failed"),
                }
                if let Err(err) = store.free_unused_code(100).await {
                    tracing::warn!(%err, "freeing unused version code failed");
                }
            }
            tokio::time::sleep(LIVE_TREES_EVERY).await;
        }
    }

    /// Stops every instance (at server shutdown). Runs still in flight are settled at the
    /// next start: async ones run again, sync ones end `Interrupted`.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Relaxed);
        let spares = self.inner.spares.drain();
        // All at once: a gVisor instance takes a few runsc calls to stop, and one after the
        // other they could outlast an operator's (or a supervisor's) stop timeout.
        let mut stopping = tokio::task::JoinSet::new();
        for inst in spares.into_iter().chain(self.inner.pools.drain_all()) {
            let engine = self.clone();
            stopping.spawn(async move { engine.retire(inst).await });
        }
        while stopping.join_next().await.is_some() {}
        let sandbox = self.inner.sandbox.clone();
        let _ = tokio::task::spawn_blocking(move || sandbox.shutdown()).await;
    }

    /// Drops the warm instances of a function (after an update or delete), so no later run
    /// sees old code.
    pub fn invalidate(&self, function_id: &str) {
        let stale = self.inner.pools.invalidate(function_id);
        self.retire_later(stale);
    }

    /// Stops an instance; its unit of the `instances` gauge goes with it.
    pub(crate) async fn retire(&self, inst: Instance) {
        inst.terminate().await;
    }

    /// Stops instances in a task of their own (the caller does not wait).
    pub(crate) fn retire_later(&self, stale: Vec<Instance>) {
        if stale.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for inst in stale {
                inst.terminate().await;
            }
        });
    }

    /// The sandbox tier's name.
    pub fn sandbox_kind(&self) -> &'static str {
        self.inner.sandbox.kind()
    }

    /// Facts about the sandbox tier (e.g. the cgroup version), for `/health`.
    pub fn sandbox_details(&self) -> Vec<(&'static str, String)> {
        self.inner.sandbox.details()
    }

    /// Whether the sandbox tier can enforce egress policies here, or why not (for `/health`).
    pub fn egress_support(&self) -> Result<(), String> {
        self.inner.sandbox.egress_support()
    }

    /// The runtimes found on this host.
    pub fn runtimes(&self) -> &Runtimes {
        &self.inner.runtimes
    }

    /// The engine's figures.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}
