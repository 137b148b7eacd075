//! Dependency builds as durable work (SPEC §10): the build dispatcher that claims queued
//! builds while this node has build slots, one build's task under this node's lease (its live
//! log, its progress stored for followers on other nodes, its end applied by the store in one
//! transaction), cancelling the builds of a deleted or superseded function, and the gate that
//! refuses runs of a function that is not `active`.
//!
//! The rows are the queue (voltrun-store builds.rs), as the executions are the run queue:
//! claimed with a lease, renewed by the lease heartbeat (leases.rs), settled by the lease
//! reaper or at start on SQLite (re-queued, or failed with a reason after
//! `BUILD_MAX_ATTEMPTS` claims). Running the build itself (pip or npm in the function's tier,
//! the content-addressed cache) is [`Engine::build_dependencies`]'s.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Notify, Semaphore};
use tracing::Instrument;
use voltrun_core::{time, Function, FunctionState, MAX_LOG_BYTES};
use voltrun_store::{BuildPhase, BuildRecord};

use std::path::PathBuf;

use crate::{BuildFailure, BuildRequest, BuiltTree, Engine, EngineError, LogSink};

/// How often a running build's log so far is stored (for followers on other nodes).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The builds of this node: its slots, its wake, and the live logs of the builds it runs.
pub(crate) struct BuildQueue {
    /// Wakes the build dispatcher: a build was queued (here or, through NOTIFY, elsewhere).
    pub(crate) wake: Notify,
    slots: Arc<Semaphore>,
    /// Builds running on this node, by build id.
    running: Mutex<HashMap<String, RunningBuild>>,
}

struct RunningBuild {
    function_id: String,
    log: LiveBuildLog,
    task: tokio::task::AbortHandle,
}

impl BuildQueue {
    pub(crate) fn new(concurrency: usize) -> BuildQueue {
        BuildQueue { wake: Notify::new(), slots: Arc::new(Semaphore::new(concurrency.max(1))), running: Mutex::new(HashMap::new()) }
    }
}

/// A build's log as it is written: capped at [`MAX_LOG_BYTES`] like a run's, shared with live
/// followers (a broadcast of each new chunk).
#[derive(Clone)]
pub struct LiveBuildLog {
    inner: Arc<Mutex<(String, bool)>>,
    tx: broadcast::Sender<String>,
}

impl Default for LiveBuildLog {
    fn default() -> Self {
        LiveBuildLog { inner: Arc::new(Mutex::new((String::new(), false))), tx: broadcast::channel(256).0 }
    }
}

impl LiveBuildLog {
    /// Appends output (the part past the cap is dropped and the log marked truncated).
    pub fn write(&self, text: &str) {
        // PostgreSQL's text refuses NUL: a tool printing one must not make the log unstorable.
        let text = &text.replace('\0', "\u{fffd}");
        let mut g = self.inner.lock().expect("build log lock");
        let room = MAX_LOG_BYTES.saturating_sub(g.0.len());
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        if take < text.len() {
            g.1 = true;
        }
        if take > 0 {
            g.0.push_str(&text[..take]);
            let _ = self.tx.send(text[..take].to_string());
        }
    }

    /// The log so far and whether it was cut.
    pub fn snapshot(&self) -> (String, bool) {
        self.inner.lock().expect("build log lock").clone()
    }

    fn subscribe(&self) -> (String, broadcast::Receiver<String>) {
        // Under the lock: no chunk falls between the snapshot and the subscription.
        let g = self.inner.lock().expect("build log lock");
        (g.0.clone(), self.tx.subscribe())
    }
}

impl Engine {
    /// Refuses a run of a function that is not `active` (pending first build, or failed):
    /// every door (sync, async, HTTP trigger, schedule) asks this first.
    pub fn check_active(&self, f: &Function) -> Result<(), EngineError> {
        match f.states.state {
            FunctionState::Active => Ok(()),
            state => Err(EngineError::NotActive { state, reason: f.states.state_reason.clone() }),
        }
    }

    /// Whether a function has dependencies to build (SPEC §10: a package whose root holds
    /// a `requirements.txt` or `package.json` that declares some).
    pub fn needs_build(&self, f: &Function) -> bool {
        f.package.as_ref().is_some_and(|p| p.dependencies.is_some())
    }

    /// Whether an update changes what the dependency build of a function depends on (its
    /// package, its runtime).
    pub fn dependencies_changed(&self, old: &Function, new: &Function) -> bool {
        old.runtime != new.runtime || old.package.as_ref().map(|p| &p.sha256) != new.package.as_ref().map(|p| &p.sha256)
    }

    /// The dependency tree of `f` when this node's cache has it already (a build would be a
    /// cache hit), so a create or update completes inside its request.
    ///
    /// Nothing is unpacked here: the key comes from the dependency files' bytes the package's
    /// validation captured (`package_root`), or from this node's unpacked tree when it has it
    /// (an update that keeps the package); otherwise there is no lookup and the build, queued,
    /// finds the tree in the cache itself.
    pub async fn cached_dependencies(&self, f: &Function) -> Option<BuiltTree> {
        let p = f.package.as_ref()?;
        let files = match &f.package_root {
            Some(root) => dependency_files_of_root(f.runtime, root),
            None => {
                let trees = voltrun_package::Trees::new(&self.inner.cfg.data_dir);
                if !trees.has(&p.sha256) {
                    tracing::debug!("no cache lookup: the package is not unpacked on this node");
                    return None;
                }
                let dir = trees.path(&p.sha256);
                let runtime = f.runtime;
                tokio::task::spawn_blocking(move || {
                    let names = crate::build::dependency_files(runtime, &dir)?;
                    names.into_iter().map(|n| std::fs::read(dir.join(&n)).ok().map(|b| (n, b))).collect::<Option<Vec<_>>>()
                })
                .await
                .ok()
                .flatten()
            }
        };
        let Some(files) = files else {
            tracing::debug!("no cache lookup for this package");
            return None;
        };
        let key = self.dependency_key_of(f.runtime, &files).await.ok()?;
        let tree = self.use_dependency_tree(&key)?;
        let logs = format!("[voltrun] dependencies found in the cache ({}): no build, no download\n", &key[..key.len().min(12)]);
        Some(BuiltTree { key, path: tree.path().to_path_buf(), cached: true, logs, logs_truncated: false })
    }

    /// On PostgreSQL, packs a tree this node built into a blob of the store, so every node
    /// can run the function (docs/ARCHITECTURE.md, "Builds"); a tree in the store already
    /// (built before, here or elsewhere) is not packed again. None on SQLite (one node) or
    /// when packing failed (the tree stays this node's; others build it themselves).
    async fn share_tree(&self, t: &BuiltTree) -> Option<String> {
        let store = &self.inner.store;
        if store.dialect() != voltrun_store::Dialect::Postgres {
            return None;
        }
        if let Ok(Some(blob)) = store.tree_blob(&t.key).await {
            return Some(blob);
        }
        self.pack_tree(t).await
    }

    /// Packs the tree `t` and stores the pack as a blob (once: the same bytes are one blob);
    /// its SHA-256, or None when packing or storing failed.
    async fn pack_tree(&self, t: &BuiltTree) -> Option<String> {
        let store = &self.inner.store;
        let t0 = std::time::Instant::now();
        let path = t.path.clone();
        let packed = match tokio::task::spawn_blocking(move || crate::tree_share::pack(&path)).await {
            Ok(Ok(p)) => p,
            Ok(Err(err)) => {
                tracing::warn!(%err, "could not pack a built tree for other nodes");
                return None;
            }
            Err(_) => return None,
        };
        match store.put_blob(&packed).await {
            Ok(sha) => {
                tracing::info!(key = %t.key, bytes = packed.len(), ms = t0.elapsed().as_millis() as u64, "built tree stored for other nodes");
                Some(sha)
            }
            Err(err) => {
                tracing::warn!(%err, "could not store a built tree for other nodes");
                None
            }
        }
    }

    /// On PostgreSQL, makes sure a tree this node found in its cache for a new build (a
    /// cache hit inside the request, which packs nothing) is packed for the other nodes: when
    /// no build names a pack of it (its last pack was freed with the versions that ran with
    /// it), this node packs it again, in the background, and a live build of it names the pack.
    pub fn share_cached_tree(&self, t: BuiltTree) {
        if self.inner.store.dialect() != voltrun_store::Dialect::Postgres {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            // Named already (the usual case): nothing to do.
            if !matches!(engine.inner.store.tree_blob(&t.key).await, Ok(None)) {
                return;
            }
            if let Some(sha) = engine.pack_tree(&t).await {
                if let Err(err) = engine.inner.store.name_tree_pack(&t.key, &sha).await {
                    tracing::warn!(%err, key = %t.key, "could not name a packed tree for other nodes");
                }
            }
        });
    }

    /// The built dependency tree an instance of `f` uses: `None` for a function without
    /// dependencies; else the tree in this node's cache, fetched first from the blob the
    /// building node stored when this node lacks it (another node built it, or it was
    /// evicted here). The launch hook (`instance_files`) calls this.
    pub async fn dependency_tree(&self, f: &Function) -> Result<Option<crate::TreeUse>, String> {
        if !self.needs_build(f) {
            return Ok(None);
        }
        let req = self.build_request(f, None).await?;
        let key = self.dependency_key(&req).await?;
        if let Some(tree) = self.use_dependency_tree(&key) {
            return Ok(Some(tree));
        }
        let blob = self.inner.store.tree_blob(&key).await.map_err(|e| format!("looking the dependency tree up: {e}"))?;
        let Some(blob) = blob else {
            // Not built anywhere (evicted on a single node). Never built on the launch path
            // (outside the build slots and within the run's deadline): this run fails, and
            // the tree is built again in the background under a build slot of this node.
            self.rebuild_in_background(req, key);
            return Err("the function's dependency tree is no longer cached on this node and is being built again: retry the run once it is built".into());
        };
        let t0 = std::time::Instant::now();
        self.insert_fetched_tree(&key, &blob).await?;
        tracing::info!(%key, ms = t0.elapsed().as_millis() as u64, "fetched a dependency tree another node built");
        self.use_dependency_tree(&key).map(Some).ok_or_else(|| "the fetched dependency tree was evicted at once".into())
    }

    /// Builds `req` (of cache key `key`) under one of this node's build slots
    /// (`--build-concurrency`) and the build timeout, once per key however many runs ask.
    fn rebuild_in_background(&self, req: BuildRequest, key: String) {
        if !self.inner.builds.rebuilding.lock().expect("rebuilding lock").insert(key.clone()) {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let slot = engine.inner.build_queue.slots.clone().acquire_owned().await;
            tracing::info!(%key, "rebuilding an evicted dependency tree");
            if let Err(e) = engine.build_dependencies(req).await {
                tracing::warn!(%key, reason = %e.reason, "the rebuild of an evicted dependency tree failed");
            }
            drop(slot);
            engine.inner.builds.rebuilding.lock().expect("rebuilding lock").remove(&key);
        });
    }

    /// Fetches the blob `blob` of a tree another node packed and unpacks it into this node's
    /// dependency cache as `key`: the blob goes a chunk at a time to a file of the scratch
    /// directory and is unpacked streaming from it (never whole in memory).
    async fn insert_fetched_tree(&self, key: &str, blob: &str) -> Result<(), String> {
        let cache = &self.inner.builds.cache;
        let lock = cache.key_lock(key);
        let _one = lock.lock().await;
        if cache.lookup(key).is_some() {
            return Ok(());
        }
        let scratch = cache.scratch(key).map_err(|e| format!("preparing the dependency tree: {e}"))?;
        let packed = scratch.join("tree.gz");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&packed).map_err(|e| format!("preparing the dependency tree: {e}"))?);
        self.inner.store.copy_blob_to(blob, &mut file).await.map_err(|e| format!("fetching the dependency tree: {e}"))?.ok_or("the dependency tree's blob is missing")?;
        std::io::Write::flush(&mut file).map_err(|e| format!("fetching the dependency tree: {e}"))?;
        drop(file);
        let (engine, key) = (self.clone(), key.to_string());
        // The scratch guard goes with the blocking task: removed when it ends, even when this
        // future is dropped first.
        let r = tokio::task::spawn_blocking(move || {
            let tree = scratch.join("tree");
            crate::tree_share::unpack(std::io::BufReader::new(std::fs::File::open(&packed)?), &tree)?;
            std::fs::remove_file(&packed)?;
            engine.inner.builds.cache.insert(&key, &tree, engine.inner.cfg.build.max_output).map(drop)
        })
        .await;
        r.map_err(|e| format!("unpacking the dependency tree: {e}"))?.map_err(|e| format!("unpacking the dependency tree: {e}"))
    }

    /// The unpacked package of `f` on this host (`<data_dir>/trees/<sha256>`), unpacked from
    /// the store's blob when this node does not have it yet.
    pub async fn package_dir(&self, f: &Function) -> Result<PathBuf, String> {
        let p = f.package.as_ref().ok_or("a code function has no package")?;
        // A stored package: the launch path's tree (unpacked from the store once per node).
        let Some(zip) = f.package_zip.clone() else {
            return self.package_tree(&p.sha256).await.map_err(|e| e.message);
        };
        // A package this request brought, not stored yet: unpacked from its bytes.
        let trees = voltrun_package::Trees::new(&self.inner.cfg.data_dir);
        if trees.has(&p.sha256) {
            return Ok(trees.path(&p.sha256));
        }
        let sha = p.sha256.clone();
        tokio::task::spawn_blocking(move || trees.ensure(&sha, |dest| voltrun_package::unpack_zip(&zip, dest, &voltrun_package::Limits::zip()).map(|_| ())))
            .await
            .map_err(|e| format!("unpacking the package: {e}"))?
            .map_err(|e| format!("unpacking the package: {e}"))
    }

    /// At start: removes the unpacked packages (`<data_dir>/trees/<sha>`) no function and
    /// no build still to run refers to (deleted or replaced since they were unpacked). Returns
    /// how many were removed. A tree unpacked meanwhile for a new function is kept: only names
    /// listed before the store is read are candidates, and the store read comes after.
    pub(crate) async fn sweep_package_trees(&self) -> Result<usize, EngineError> {
        let trees = voltrun_package::Trees::new(&self.inner.cfg.data_dir);
        let root = trees.path("x").parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let listed: Vec<String> = match std::fs::read_dir(&root) {
            Ok(rd) => rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())).collect(),
            Err(_) => return Ok(0),
        };
        if listed.is_empty() {
            return Ok(0);
        }
        let keep = self.inner.store.referenced_packages().await?;
        let mut removed = 0;
        for sha in listed.iter().filter(|s| !keep.contains(*s)) {
            match trees.remove(sha) {
                Ok(()) => removed += 1,
                Err(err) => tracing::warn!(%err, %sha, "could not remove an unreferenced package tree"),
            }
        }
        Ok(removed)
    }

    /// What to build for `f`: its runtime, memory, unpacked package and dependency files.
    async fn build_request(&self, f: &Function, log: Option<LogSink>) -> Result<BuildRequest, String> {
        let dir = self.package_dir(f).await?;
        let probe = dir.clone();
        let runtime = f.runtime;
        let dep_files = tokio::task::spawn_blocking(move || crate::build::dependency_files(runtime, &probe))
            .await
            .map_err(|e| format!("reading the dependency files: {e}"))?
            .ok_or("the package declares no dependencies to build")?;
        Ok(BuildRequest { runtime: f.runtime, memory_mb: f.memory, package_dir: dir, dep_files, log })
    }

    /// Tells the build dispatcher a build was queued.
    pub fn wake_builds(&self) {
        self.inner.build_queue.wake.notify_one();
    }

    /// Live log of a build running on this node: what it wrote so far and the rest as it
    /// comes. None when the build does not run here.
    pub fn subscribe_build_logs(&self, build_id: &str) -> Option<(String, broadcast::Receiver<String>)> {
        let running = self.inner.build_queue.running.lock().expect("builds lock");
        running.get(build_id).map(|b| b.log.subscribe())
    }

    /// Stops this node's builds of a function (deleted: its build rows went with it).
    pub fn cancel_builds(&self, function_id: &str) {
        let running = self.inner.build_queue.running.lock().expect("builds lock");
        for (id, b) in running.iter().filter(|(_, b)| b.function_id == function_id) {
            tracing::info!(build_id = %id, "cancelling the build of a deleted function");
            b.task.abort();
        }
    }

    /// The ids of the builds this node's tasks run now (the heartbeat renews these only).
    pub(crate) fn running_builds(&self) -> Vec<String> {
        self.inner.build_queue.running.lock().expect("builds lock").keys().cloned().collect()
    }

    /// After a build-lease heartbeat of `asked`: stops the builds among them that the store
    /// no longer has as this node's (deleted with their function, superseded, or settled by
    /// another node's reaper). A build claimed after `asked` was taken is left alone.
    pub(crate) fn drop_lost_builds(&self, asked: &[String], held: &[String]) {
        let running = self.inner.build_queue.running.lock().expect("builds lock");
        for (id, b) in running.iter().filter(|(id, _)| asked.contains(id) && !held.contains(id)) {
            tracing::info!(build_id = %id, "a build this node ran is no longer its own; stopping it");
            b.task.abort();
        }
    }

    /// Claims queued builds while this node has build slots (`--build-concurrency`, each
    /// user at most `--builds-per-user` on every node together); sleeps until woken or for a
    /// second.
    pub(crate) async fn dispatch_builds(self) {
        let slots = self.inner.build_queue.slots.clone();
        loop {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            if self.inner.stopping.load(Relaxed) {
                return;
            }
            let claimed = self.inner.store.claim_build(&self.inner.cfg.node_id, &time::now(), &self.lease_until(), self.inner.cfg.builds_per_user).await;
            match claimed {
                Ok(Some(b)) => {
                    let engine = self.clone();
                    let span = tracing::info_span!("build", build_id = %b.id, function_id = %b.function_id, version = b.function_version, attempt = b.attempts);
                    let log = LiveBuildLog::default();
                    let (id, function_id) = (b.id.clone(), b.function_id.clone());
                    let (task_log, entry) = (log.clone(), BuildEntry { engine: self.clone(), id: id.clone() });
                    // Registered under the lock, before the task can end and remove itself.
                    let mut running = self.inner.build_queue.running.lock().expect("builds lock");
                    let task = tokio::spawn(
                        async move {
                            let _held = (slot, entry, InFlight::new(&engine));
                            engine.run_claimed_build(b, task_log).await;
                        }
                        .instrument(span),
                    );
                    running.insert(id.clone(), RunningBuild { function_id, log, task: task.abort_handle() });
                    drop(running);
                    self.changed(&id);
                }
                Ok(None) => {
                    drop(slot);
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.build_queue.wake.notified()).await;
                }
                Err(err) => {
                    drop(slot);
                    tracing::warn!(%err, "claiming queued builds failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One claimed build: runs it (storing its log as it goes), then stores its end, which
    /// applies it. A build cut short by shutdown stays `building` for the reaper (or the
    /// next start) to queue again.
    async fn run_claimed_build(&self, mut b: BuildRecord, log: LiveBuildLog) {
        let store = &self.inner.store;
        let node = self.inner.cfg.node_id.clone();
        let built = {
            let work = self.run_dependency_build(&b.definition, &log);
            tokio::pin!(work);
            let mut progress = tokio::time::interval(PROGRESS_EVERY);
            progress.tick().await;
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = progress.tick() => {
                        let (logs, cut) = log.snapshot();
                        if let Err(err) = store.save_build_progress(&b.id, &node, &logs, cut).await {
                            tracing::warn!(%err, "storing a build's progress failed");
                        }
                    }
                }
            }
        };
        if self.inner.stopping.load(Relaxed) {
            return;
        }
        // The builder's own log is the whole one (capped head and tail); the live one is
        // what followers saw.
        let (live, live_cut) = log.snapshot();
        let pick = |logs: String, cut: bool| if logs.is_empty() { (live.clone(), live_cut) } else { (logs, cut) };
        match built {
            Ok(t) => {
                let shared = self.share_tree(&t).await;
                let (logs, cut) = pick(t.logs, t.logs_truncated);
                b.finish(Ok(t.key), logs, cut, t.cached);
                b.tree_blob = shared;
            }
            Err(f) => {
                let (logs, cut) = pick(f.logs, f.logs_truncated);
                b.finish(Err(f.reason), logs, cut, false);
            }
        }
        // The end must be stored, or the function would stay pending/in progress until the
        // lease reaper re-runs the build: try again while the database is unavailable.
        let mut pause = Duration::from_millis(500);
        let stored = loop {
            match store.finish_build(&b, &node, &self.inner.cfg.quotas).await {
                Ok(s) => break s,
                Err(e) if e.is_unavailable() && !self.inner.stopping.load(Relaxed) => {
                    tracing::warn!(err = %e, "storing a build's end failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(err) => {
                    // Not the database being away: this end cannot be stored. Store the build
                    // failed with the reason and without the log; if even that fails, the
                    // task ends, the heartbeat stops renewing its lease and the reaper settles
                    // it (queued again, failed after its last attempt), never `building` for ever.
                    tracing::error!(%err, "storing a build's end failed; storing it failed without its log");
                    let mut failed = b.clone();
                    failed.tree_blob = None;
                    failed.finish(Err(format!("the build's end could not be stored: {err}")), String::new(), false, false);
                    match store.finish_build(&failed, &node, &self.inner.cfg.quotas).await {
                        Ok(s) => break s,
                        Err(err) => {
                            tracing::error!(%err, "storing a build's failure failed too; its lease will run out and the reaper settles it");
                            return;
                        }
                    }
                }
            }
        };
        if let Some(s) = &stored {
            let i = if s.phase == BuildPhase::Success { 0 } else { 1 };
            self.inner.metrics.builds_total[i].fetch_add(1, Relaxed);
        }
        match stored {
            Some(s) if s.phase == BuildPhase::Success => {
                tracing::info!(cached = s.cached, "build succeeded");
                self.invalidate(&s.function_id);
            }
            Some(s) => tracing::info!(reason = s.reason.as_deref().unwrap_or(""), "build failed"),
            None => tracing::info!("the build was cancelled or taken over; its end was not stored"),
        }
        self.changed(&b.id);
    }

    /// Runs a function's dependency build (or finds it in the cache) in its isolation tier,
    /// through the dependency builder. `Err` is the reason it failed, for people.
    async fn run_dependency_build(&self, f: &Function, log: &LiveBuildLog) -> Result<BuiltTree, BuildFailure> {
        let live = log.clone();
        let sink: LogSink = Arc::new(move |text: &str| live.write(text));
        let req = self.build_request(f, Some(sink)).await.map_err(|reason| BuildFailure { reason, logs: String::new(), logs_truncated: false })?;
        self.build_dependencies(req).await
    }
}

/// The dependency files of a package (name, bytes) from what its validation captured at the
/// root, by the rules [`crate::build::dependency_files`] applies to an unpacked package (both
/// call [`voltrun_package::dependencies`]): Python, a `requirements.txt` with a requirement line; Node, a
/// `package.json` with dependencies and no `node_modules/`, plus `package-lock.json`. `None`
/// when there is no build, or when a file the key needs was too large to capture (no lookup).
fn dependency_files_of_root(runtime: voltrun_core::Runtime, root: &voltrun_core::PackageRoot) -> Option<Vec<(String, Vec<u8>)>> {
    let text = |name: &str| -> Option<&str> { std::str::from_utf8(root.files.get(name)?).ok() };
    let uncaptured = |name: &str| root.uncaptured.iter().any(|u| u == name);
    match runtime {
        voltrun_core::Runtime::Provided => None,
        voltrun_core::Runtime::Python311 => {
            if uncaptured("requirements.txt") {
                return None;
            }
            let has_requirement = voltrun_package::dependencies::check_requirements(text("requirements.txt")?) != Ok(false);
            has_requirement.then(|| vec![("requirements.txt".to_string(), root.files["requirements.txt"].clone())])
        }
        voltrun_core::Runtime::Nodejs20 => {
            if root.has_node_modules || uncaptured("package.json") || uncaptured("package-lock.json") {
                return None;
            }
            let lock = root.files.get("package-lock.json").map(Vec::as_slice);
            if voltrun_package::dependencies::check_package_json(root.files.get("package.json")?, lock) == Ok(false) {
                return None;
            }
            let mut files = vec![("package.json".to_string(), root.files["package.json"].clone())];
            if let Some(lock) = root.files.get("package-lock.json") {
                files.push(("package-lock.json".to_string(), lock.clone()));
            }
            Some(files)
        }
    }
}

/// A running build's unit of `voltrun_builds_in_flight`, given back on every path.
struct InFlight(Arc<crate::Metrics>);

impl InFlight {
    fn new(engine: &Engine) -> InFlight {
        engine.inner.metrics.builds_in_flight.fetch_add(1, Relaxed);
        InFlight(engine.inner.metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.builds_in_flight.fetch_sub(1, Relaxed);
    }
}

/// A build's place in the map of running builds, removed on every path its task ends by
/// (its end, an abort, a panic).
struct BuildEntry {
    engine: Engine,
    id: String,
}

impl Drop for BuildEntry {
    fn drop(&mut self) {
        self.engine.inner.build_queue.running.lock().expect("builds lock").remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voltrun_core::{PackageRoot, Runtime};

    /// Finding 6: a NUL a build printed went into the log as is, and PostgreSQL refused to
    /// store it (the build then stayed `building`); followers and the stored log get U+FFFD.
    #[test]
    fn a_build_log_with_a_nul_byte_is_stored_without_it() {
        let log = LiveBuildLog::default();
        let (_, mut live) = log.subscribe();
        log.write("npm error Invalid package name \"a\0b\"\n");
        let (text, cut) = log.snapshot();
        assert_eq!((text.as_str(), cut), ("npm error Invalid package name \"a\u{fffd}b\"\n", false));
        assert!(!live.try_recv().unwrap().contains('\0'));
    }

    /// The lookup in a create or update must agree with the build's own reading of the
    /// unpacked package, or a request would find another dependency set's tree.
    #[test]
    fn the_dependency_files_of_the_root_match_those_of_the_unpacked_package() {
        let dir = std::env::temp_dir().join(format!("voltrun-root-files-{}", std::process::id()));
        let cases: Vec<(Runtime, Vec<(&str, &str)>)> = vec![
            (Runtime::Python311, vec![("requirements.txt", "six==1.16.0\n")]),
            (Runtime::Python311, vec![("requirements.txt", "# nothing\n-r other.txt\n")]),
            (Runtime::Nodejs20, vec![("package.json", r#"{"dependencies":{"ms":"2.1.3"}}"#)]),
            (Runtime::Nodejs20, vec![("package.json", r#"{"dependencies":{"ms":"2.1.3"}}"#), ("package-lock.json", "{}")]),
            (Runtime::Nodejs20, vec![("package.json", r#"{"dependencies":{}}"#)]),
            (Runtime::Nodejs20, vec![("package.json", r#"{"dependencies":{"ms":"2.1.3"}}"#), ("node_modules/ms/index.js", "")]),
        ];
        for (runtime, files) in cases {
            let _ = std::fs::remove_dir_all(&dir);
            let mut root = PackageRoot::default();
            for (name, text) in &files {
                let path = dir.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, text).unwrap();
                if name.starts_with("node_modules/") {
                    root.has_node_modules = true;
                } else {
                    root.files.insert(name.to_string(), text.as_bytes().to_vec());
                }
            }
            let on_disk =
                crate::build::dependency_files(runtime, &dir).map(|names| names.into_iter().map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap())).collect::<Vec<_>>());
            assert_eq!(dependency_files_of_root(runtime, &root), on_disk, "{files:?}");
            root.uncaptured = root.files.keys().cloned().collect();
            root.files.clear();
            assert_eq!(dependency_files_of_root(runtime, &root), None, "an uncaptured file means no lookup");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
