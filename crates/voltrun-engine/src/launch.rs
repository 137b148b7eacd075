//! Launching an instance: its code directory, its environment (the runtime's base variables
//! and the function's own), its resource limits (voltrun_core::policy, converted for the
//! sandbox), the sandbox spawn, and the init handshake that loads the function's code. A
//! launched instance holds its unit of the `instances` gauge for the rest of its life.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use voltrun_core::{time, ErrorKind, ExecError, Function, Outcome, ResourceLimits, Runtime};
use voltrun_package::{InstanceDir, InstanceFiles, Trees};
use voltrun_sandbox::network::{NetworkPlan, Verdict};
use voltrun_sandbox::InstanceSpec;

use crate::instance::{self, InitParams, Instance};
use crate::invocation::{log_text, millis};
use crate::metrics::{Gauge, GaugeUnit};
use crate::{Engine, TreeUse};

/// New instances tried after the container runtime failed to create one (the function never
/// ran), before the run is reported as an internal error.
const CREATE_RETRIES: u32 = 3;

impl Engine {
    /// Starts an instance of `f` and loads its code: a pre-started spare when one fits,
    /// else a new one. On failure, the outcome to report.
    pub(crate) async fn cold_start(&self, f: &Function) -> Result<Instance, Outcome> {
        let started_at = time::now();
        let t0 = Instant::now();
        let fail = |error: ExecError, logs: instance::Segment| Outcome {
            result: Err(error),
            logs: log_text(&logs.text),
            logs_truncated: logs.truncated,
            duration_ms: millis(t0.elapsed()),
            started_at: started_at.clone(),
            finished_at: time::now(),
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(f.timeout as u64);
        // A tier that fails to create an instance (the function never ran: runsc refusing a
        // sandbox on a loaded host) gets more tries, each with a new instance, after a short
        // pause that grows (a loaded host's failures come in runs).
        let mut attempt = 0u32;
        loop {
            let retry_allowed = attempt < CREATE_RETRIES;
            // Opened before anything starts, so a failure costs no instance; given to the init
            // frame only (InitParams::secrets).
            let secrets = match self.open_secrets(f).await {
                Ok(s) => s,
                Err(e) => return Err(fail(e, Default::default())),
            };
            // A retry may take a spare too (another one: a failed one is gone).
            let spare = self.take_spare(f);
            let (inst, env) = match spare {
                Some(mut spare) => {
                    // The spare binds its (empty) directories already: the files appear inside.
                    match self.materialise(f, spare.code_dir()).await {
                        Ok(tree) => spare.hold_tree(tree),
                        Err(e) => {
                            self.retire(spare).await;
                            return Err(fail(e, Default::default()));
                        }
                    }
                    (spare, function_env(f))
                }
                None => {
                    let n = self.inner.next_instance.fetch_add(1, Relaxed);
                    let dir = self.inner.cfg.data_dir.join("instances").join(format!("{}-{n}", f.id));
                    if let Err(e) = InstanceDir::create(&dir) {
                        return Err(fail(ExecError::new(ErrorKind::Internal, format!("making the instance directory: {e}")), Default::default()));
                    }
                    let tree = match self.materialise(f, &dir).await {
                        Ok(tree) => tree,
                        Err(e) => {
                            let _ = std::fs::remove_dir_all(&dir);
                            return Err(fail(e, Default::default()));
                        }
                    };
                    let mut env = base_env(f.runtime, &*self.inner.sandbox, &dir);
                    env.extend(function_env(f));
                    match self.spawn_instance(f.runtime, f.memory, dir, env, self.network_plan(f), false).await {
                        Ok(mut inst) => {
                            inst.hold_tree(tree);
                            (inst, Vec::new())
                        }
                        Err(e) => return Err(fail(e, Default::default())),
                    }
                }
            };
            self.inner.metrics.cold_start(f.runtime);
            let task_root = self.inner.sandbox.task_root(inst.code_dir());
            // A package's handler is `module.function` (validated on the way in); a code
            // function's is the export of its one file.
            let (entry, module, handler) = match &f.package {
                None => (task_root.join(f.runtime.entry_file()), None, f.handler.clone()),
                Some(_) => match voltrun_package::handler::parse(&f.handler, voltrun_core::function::language_of(f.runtime)) {
                    Ok(h) => (task_root, Some(h.module), h.function),
                    Err(e) => {
                        self.retire(inst).await;
                        return Err(fail(ExecError::new(ErrorKind::RuntimeError, e.to_string()), Default::default()));
                    }
                },
            };
            let init = InitParams { env, entry, module, handler, function_name: f.name.clone(), function_version: f.version, memory_mb: f.memory, secrets };
            match inst.init(init, deadline).await {
                Ok(inst) => return Ok(inst),
                Err(failure) if failure.never_started && retry_allowed && Instant::now() < deadline => {
                    let tail = String::from_utf8_lossy(&failure.logs.text[failure.logs.text.len().saturating_sub(512)..]).into_owned();
                    tracing::warn!(function = %f.id, attempt, runtime_said = %tail.trim(), "the container runtime could not create an instance; trying a new one");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(failure) => {
                    // The instance is gone, and its gauge unit with it.
                    self.inner.metrics.record(f.runtime, t0.elapsed().as_secs_f64(), Some(failure.error.kind));
                    return Err(fail(failure.error, failure.logs));
                }
            }
        }
    }

    /// Puts `f`'s files into the instance directory `dir` (new, or a spare's, already bound):
    /// a code function's one file, or its package's tree hard-linked from the trees of the
    /// data directory (unpacked from the store's blob the first time on this node), and the
    /// dependency tree and layers of [`Engine::instance_files`]. Returns the pin of the
    /// dependency tree, which the instance holds for its lifetime.
    pub(crate) async fn materialise(&self, f: &Function, dir: &Path) -> Result<Option<TreeUse>, ExecError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| ExecError::new(ErrorKind::Internal, format!("{what}: {e}"));
        let layout = InstanceDir::new(dir);
        if f.package.is_none() {
            std::fs::write(layout.task().join(f.runtime.entry_file()), &f.code).map_err(|e| internal("writing the function's code", &e))?;
            if f.layers.is_empty() {
                return Ok(None);
            }
        }
        let (files, tree) = self.instance_files(f).await?;
        let node = f.runtime == Runtime::Nodejs20;
        tokio::task::spawn_blocking(move || layout.materialise(&files, node))
            .await
            .expect("materialise does not panic")
            .map_err(|e| internal("linking the package into the instance", &e))?;
        Ok(tree)
    }

    /// The trees an instance of `f` is made of: its package's (made on first use; none for a
    /// code function, whose one file is written), its built dependency tree (fetched from the
    /// store when another node built it: `Engine::dependency_tree`), and its layers' in its
    /// order ([`Engine::layer_trees`]; code functions get them too).
    /// The dependency tree comes with its pin (kept by the instance).
    pub(crate) async fn instance_files(&self, f: &Function) -> Result<(InstanceFiles, Option<TreeUse>), ExecError> {
        let opt = self.layer_trees(f).await?;
        let Some(p) = &f.package else { return Ok((InstanceFiles { task: None, deps: None, opt }, None)) };
        let task = Some(self.package_tree(&p.sha256).await?);
        let deps = self.dependency_tree(f).await.map_err(|e| ExecError::new(ErrorKind::Internal, format!("the function's dependencies: {e}")))?;
        Ok((InstanceFiles { task, deps: deps.as_ref().map(|t| t.path().to_path_buf()), opt }, deps))
    }

    /// The unpacked tree of the package blob `sha` on this node, unpacked from the store
    /// the first time (concurrent first uses each unpack; one tree is kept).
    pub(crate) async fn package_tree(&self, sha: &str) -> Result<PathBuf, ExecError> {
        let trees = Trees::new(&self.inner.cfg.data_dir);
        if trees.has(sha) {
            return Ok(trees.path(sha));
        }
        let internal = |what: &str, e: &dyn std::fmt::Display| ExecError::new(ErrorKind::Internal, format!("{what}: {e}"));
        let zip = match self.inner.store.get_blob(sha).await {
            Ok(Some(zip)) => zip,
            Ok(None) => return Err(ExecError::new(ErrorKind::Internal, format!("the package {sha} is missing from the store"))),
            Err(e) => return Err(internal("reading the package", &e)),
        };
        let sha = sha.to_string();
        tokio::task::spawn_blocking(move || trees.ensure(&sha, |dest| voltrun_package::unpack_zip(&zip, dest, &voltrun_package::Limits::zip()).map(drop)))
            .await
            .expect("unpacking does not panic")
            .map_err(|e| internal("unpacking the package", &e))
    }

    /// Starts a runtime process in the sandbox with `dir` as its code directory; it waits for
    /// its init frame. The directory is removed if the start fails.
    pub(crate) async fn spawn_instance(
        &self,
        runtime: Runtime,
        memory_mb: u32,
        dir: PathBuf,
        env: Vec<(String, String)>,
        network: Option<Arc<NetworkPlan>>,
        background: bool,
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
            limits: ResourceLimits { background, ..ResourceLimits::for_function(runtime, memory_mb) },
            network,
            job: None,
        };
        let spawned = tokio::task::spawn_blocking(move || sandbox.spawn(&spec)).await.expect("spawn task does not panic");
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                // What a sandbox error displays names the failed setup step and never a host
                // path: the run's record gets it; its source (paths, errno) only the log.
                let cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
                tracing::error!(err = %e, %cause, runtime = runtime.id(), "could not start an instance");
                return Err(ExecError::new(ErrorKind::Internal, format!("could not start an instance: {e}")));
            }
        };
        let mut inst = Instance::wrap(spawned, dir).map_err(|failure| failure.error)?;
        if runtime == Runtime::Provided {
            inst.processes_are_the_functions();
        }
        inst.count_in(GaugeUnit::new(&self.inner.metrics, Gauge::Instances));
        Ok(inst)
    }

    /// The secrets `f` names, opened (None when it names none). The error says which secret
    /// could not be read, never a value.
    async fn open_secrets(&self, f: &Function) -> Result<Option<voltrun_store::SecretEnv>, ExecError> {
        if f.secrets.is_empty() {
            return Ok(None);
        }
        match self.inner.store.open_secrets(&f.user_id, &f.secrets).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                tracing::error!(err = %e, function_id = %f.id, "could not open a function's secrets");
                // The record names the secret at most: a database error's text (hosts, users,
                // key ids) is for the server's log only.
                let which = match &e {
                    voltrun_store::StoreError::Unsealable { what, .. } => format!(": {what} did not open under this server's master key"),
                    voltrun_store::StoreError::Corrupt(what) => format!(": {what}"),
                    _ => " (the database failed; the server's log says why)".to_string(),
                };
                Err(ExecError::new(ErrorKind::Internal, format!("could not read the function's secrets{which}")))
            }
        }
    }

    /// True when an instance given `f`'s secrets at `given` (its `secrets_revision`) holds
    /// older values than the stored ones (or they cannot be read now): it must not serve
    /// another run.
    pub(crate) async fn secrets_changed(&self, f: &Function, given: Option<String>) -> bool {
        if f.secrets.is_empty() {
            return false;
        }
        match self.inner.store.secrets_revision(&f.user_id, &f.secrets).await {
            Ok(now) => given.as_deref() != Some(now.as_str()),
            Err(e) => {
                tracing::warn!(err = %e, "could not read the revision of a function's secrets; not reusing its instance");
                true
            }
        }
    }

    /// The network an instance of `f` gets (issue 14): none without an `egress` list.
    pub(crate) fn network_plan(&self, f: &Function) -> Option<Arc<NetworkPlan>> {
        if f.egress.is_empty() {
            return None;
        }
        // Stored lists were validated on the way in; one that no longer parses admits nothing.
        let policy = voltrun_core::egress::EgressPolicy::parse(&f.egress).unwrap_or_default();
        let counts = self.inner.metrics.egress.clone();
        let id = f.id.clone();
        let on_event: Arc<dyn Fn(Verdict) + Send + Sync> = Arc::new(move |v| counts.record(&id, v == Verdict::Refused));
        Some(Arc::new(NetworkPlan { function: f.id.clone(), policy, on_event: Some(on_event) }))
    }
}

/// Variables every instance of a runtime gets, whatever its function: with the instance's
/// view of its task, deps and opt directories (the process tier sees the host paths).
pub(crate) fn base_env(runtime: Runtime, sandbox: &dyn voltrun_sandbox::Sandbox, dir: &Path) -> Vec<(String, String)> {
    let opt = sandbox.opt_root(dir);
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME".to_string(), "/tmp".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("TZ".to_string(), "UTC".to_string()),
        ("LAMBDA_TASK_ROOT".to_string(), sandbox.task_root(dir).display().to_string()),
        ("VOLTRUN_DEPS_ROOT".to_string(), sandbox.deps_root(dir).display().to_string()),
        ("VOLTRUN_OPT_ROOT".to_string(), opt.display().to_string()),
    ];
    if runtime == Runtime::Nodejs20 {
        // Layers' modules (Lambda's /opt/nodejs/node_modules); read when node starts.
        env.push(("NODE_PATH".to_string(), opt.join("nodejs/node_modules").display().to_string()));
    }
    if runtime == Runtime::Provided {
        // The Runtime API helper's address: Lambda's port on the instance's own loopback; any
        // free port in the process tier, which shares the host's.
        let addr = if sandbox.kind() == "process" { "127.0.0.1:0" } else { crate::runtimes::RUNTIME_API_ADDR };
        env.push((crate::runtime_api::LISTEN_VAR.to_string(), addr.to_string()));
    }
    if runtime == Runtime::Python311 {
        env.push(("PYTHONUNBUFFERED".to_string(), "1".to_string()));
        env.push(("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()));
    }
    env
}

/// A function's own variables and Lambda's: nothing of the server's. The base variables
/// (PATH, HOME, LANG, TZ, LAMBDA_TASK_ROOT, NODE_PATH) cannot be overridden.
fn function_env(f: &Function) -> Vec<(String, String)> {
    const BASE: [&str; 6] = ["PATH", "HOME", "LANG", "TZ", "LAMBDA_TASK_ROOT", "NODE_PATH"];
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
