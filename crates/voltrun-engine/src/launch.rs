//! Launching an instance: its code directory, its environment (the runtime's base variables
//! and the function's own), its resource limits (voltrun_core::policy, converted for the
//! sandbox), the sandbox spawn, and the init handshake that loads the function's code. A
//! launched instance holds its unit of the `instances` gauge for the rest of its life.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use voltrun_core::{time, ErrorKind, ExecError, Function, Outcome, ResourceLimits, Runtime};
use voltrun_sandbox::network::{NetworkPlan, Verdict};
use voltrun_sandbox::InstanceSpec;

use crate::instance::{self, InitParams, Instance};
use crate::invocation::{log_text, millis};
use crate::metrics::{Gauge, GaugeUnit};
use crate::Engine;

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
        // Opened before anything starts, so a failure costs no instance; given to the init
        // frame only (InitParams::secrets).
        let secrets = match self.open_secrets(f).await {
            Ok(s) => s,
            Err(e) => return Err(fail(e, Default::default())),
        };
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
            secrets,
        };
        match inst.init(init, deadline).await {
            Ok(inst) => Ok(inst),
            Err(failure) => {
                // The instance is gone, and its gauge unit with it.
                self.inner.metrics.record(f.runtime, t0.elapsed().as_secs_f64(), Some(failure.error.kind));
                Err(fail(failure.error, failure.logs))
            }
        }
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
            limits: ResourceLimits::for_function(runtime, memory_mb),
            network,
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
                Err(ExecError::new(ErrorKind::Internal, format!("could not read the function's secrets: {e}")))
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

/// Variables every instance of a runtime gets, whatever its function.
pub(crate) fn base_env(runtime: Runtime, task_root: &Path) -> Vec<(String, String)> {
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
