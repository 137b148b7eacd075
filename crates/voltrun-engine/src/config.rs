//! The engine's settings ([`EngineConfig`]); `Default` are the documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use voltrun_core::id;

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
    /// The most spares one runtime's shelf grows to under demand (spares.rs), bounding the
    /// memory idle spares hold.
    pub spares_max: usize,
    /// Runs one user may have in flight on this node (0: unlimited; quota.rs).
    pub user_concurrent_runs: u64,
    /// Dependency builds: timeout, cache bound, package index (build.rs).
    pub build: crate::BuildConfig,
    /// Dependency builds this node runs at once (0: none; other nodes build).
    pub build_concurrency: usize,
    /// Builds one user may have running at once, on every node together (default
    /// [`default_builds_per_user`]: half the build slots, so one user cannot take them all).
    pub builds_per_user: usize,
    /// The account quotas an update's build is applied under (its code counts then).
    pub quotas: voltrun_core::Quotas,
}

/// The default of [`EngineConfig::spares_max`]: a burst of new functions created and invoked
/// back to back, about 5 ms apart, outruns the refills (one runtime start, 40-60 ms per core)
/// by about ten to one, so a burst of twenty is served from the pool; 24 idle Python spares
/// hold about 190 MiB, and only after such a burst (the target halves every idle TTL).
pub const DEFAULT_SPARES_MAX: usize = 24;

/// The default of [`EngineConfig::build_concurrency`]: one build per core.
pub fn default_build_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The default of [`EngineConfig::builds_per_user`] for `build_concurrency` slots:
/// `max(1, build_concurrency / 2)`.
pub fn default_builds_per_user(build_concurrency: usize) -> usize {
    (build_concurrency / 2).max(1)
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
            spares_max: DEFAULT_SPARES_MAX,
            user_concurrent_runs: voltrun_core::Quotas::default().concurrent_runs,
            build_concurrency: default_build_concurrency(),
            builds_per_user: default_builds_per_user(default_build_concurrency()),
            quotas: voltrun_core::Quotas::default(),
            build: crate::BuildConfig::default(),
        }
    }
}
