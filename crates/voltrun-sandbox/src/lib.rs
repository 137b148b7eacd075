//! How a function instance is started, contained and killed.
//!
//! The engine describes an instance as an [`InstanceSpec`] (a command, its environment, the
//! host directory holding the function's code, and [`ResourceLimits`]); a [`Sandbox`] backend turns
//! that into a running process wired to three pipes: control in (fd 3 inside), control out
//! (fd 4 inside) and one log pipe for both stdout and stderr (so their order is kept, child
//! processes included). The backend owns containment; the engine owns the protocol.
//!
//! Backends: [`namespace::NamespaceSandbox`] (Linux namespaces, cgroups, seccomp: the
//! default), [`oci::OciSandbox`] (the same root and limits as an OCI bundle run by `runc`:
//! the `container` tier) and [`process::ProcessSandbox`] (rlimits and a process group, no
//! isolation, development only); the gVisor tier runs the same OCI bundle under `runsc`.
//!
//! What the kernel-isolated tiers share has a module of its own: [`root`] (the instance's
//! root as data, which the namespace tier mounts and the OCI tiers write as `config.json`),
//! [`setup`] (the named setup steps and their [`SetupError`], the setup guard, the server's
//! lifeline, the reap loop); [`init`] is the namespace tier's child side of the clone,
//! [`namespace`] its server side; [`cgroup`] and [`seccomp`] the limits and the filter.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub mod cgroup;
pub mod init;
pub mod namespace;
pub mod network;
pub mod oci;
pub mod process;
pub mod root;
pub mod seccomp;
pub mod setup;
mod sys;

pub use setup::{SetupError, Step};

/// Resource limits of one instance: the policy is core's (`voltrun_core::policy`, derived from
/// the function); the tiers enforce it.
pub use voltrun_core::policy::ResourceLimits;

/// What to run in an instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Program and arguments (absolute program path).
    pub argv: Vec<String>,
    /// The complete environment; nothing of the server's is inherited.
    pub env: Vec<(String, String)>,
    /// The instance directory (`voltrun_package::InstanceDir`): its `task/` is the function's
    /// code and the working directory (`/var/task`), `deps/` its dependencies (`/var/deps`),
    /// `opt/` its layers (`/opt`), all read-only inside.
    pub code_dir: PathBuf,
    /// Host paths the runtime needs to read (the interpreter's prefix), seen at the same path.
    pub runtime_paths: Vec<PathBuf>,
    /// Host directory of the runtime bootstraps; seen at [`Sandbox::bootstrap_root`].
    pub bootstrap_dir: PathBuf,
    /// ResourceLimits to enforce.
    pub limits: ResourceLimits,
    /// Network egress (SPEC §11): `None` is no network at all (only loopback).
    pub network: Option<std::sync::Arc<network::NetworkPlan>>,
    /// A job run to completion (a dependency build, issue 15) rather than a function
    /// instance: its writable directories, working directory and pinned host names. `None`
    /// for every function instance.
    pub job: Option<JobSpec>,
}

/// What a run-to-completion job (a dependency build) gets beyond an instance's root. The
/// control pipes exist as for an instance but nothing speaks on them; the job's stdout and
/// stderr are the log pipe and its end is [`InstanceHandle::wait`]'s.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// Host directories bound read-write (`nosuid`, `nodev`): host path, path inside. The
    /// host side must be writable by [`Sandbox::function_host_uid`].
    pub writable: Vec<(PathBuf, PathBuf)>,
    /// Host directories bound read-only at a path of their own (host path, path inside).
    pub read_only: Vec<(PathBuf, PathBuf)>,
    /// The job's working directory inside (else the task root).
    pub cwd: Option<PathBuf>,
    /// Host names pinned in the job's `/etc/hosts` (resolved by the server).
    pub hosts: Vec<(String, std::net::IpAddr)>,
}

/// A started instance: the engine's ends of its pipes and a handle to contain it.
pub struct Spawned {
    /// Write end of the control-in pipe (fd 3 inside).
    pub control_in: OwnedFd,
    /// Read end of the control-out pipe (fd 4 inside).
    pub control_out: OwnedFd,
    /// Read end of the log pipe (fds 1 and 2 inside).
    pub logs: OwnedFd,
    /// Kills and reaps the instance.
    pub handle: Box<dyn InstanceHandle>,
}

/// How an instance's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    /// Exit status, when it exited.
    pub code: Option<i32>,
    /// Signal number, when it was killed.
    pub signal: Option<i32>,
    /// The tier's runtime (runc, runsc) failed to create the instance: the function's process
    /// never ran, so nothing of the function is at fault and a new instance may be tried.
    pub never_started: bool,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            _ if self.never_started => write!(f, "could not be created by the container runtime"),
            (Some(c), _) => write!(f, "exited with status {c}"),
            (_, Some(s)) => write!(f, "killed by signal {s}"),
            _ => write!(f, "ended"),
        }
    }
}

/// Control over one running instance. Dropping it kills every process of the instance.
pub trait InstanceHandle: Send {
    /// Kills every process of the instance at once (SIGKILL). Idempotent.
    fn kill(&mut self);
    /// Waits for the main process to end (blocking) and releases the instance's resources.
    fn wait(&mut self) -> ExitInfo;
    /// True when the instance hit its memory limit (as far as the tier can tell).
    fn out_of_memory(&self) -> bool;
    /// True when processes other than the main one still run (a handler left a child
    /// behind): such an instance is not reused, so nothing of one run reaches another.
    fn has_stray_processes(&self) -> bool;
    /// Gives a spare started in the background (`ResourceLimits::background`) its
    /// function's CPU weight; a no-op for every other instance and for tiers without cgroups.
    fn give_cpu_weight(&mut self) {}
    /// False when the function's processes are out of the host's sight (gVisor: they live
    /// in the Sentry, a user-space kernel); the runtime bootstrap then reports stray processes
    /// in its result frames instead (`"strays": true`, see docs/RUNTIME_PROTOCOL.md).
    fn sees_processes(&self) -> bool {
        true
    }
    /// True once the main process has ended (without blocking; the exit is kept for
    /// [`InstanceHandle::wait`]). Tiers that cannot tell say false until `wait`.
    fn try_exited(&mut self) -> bool {
        false
    }
    /// The instance's network (egress, issue 14), when it was started with one.
    fn network(&self) -> Option<&network::Attached> {
        None
    }
    /// Gives an instance started with a network but an empty plan (a spare) the plan of the
    /// function it now serves.
    fn set_network(&mut self, plan: std::sync::Arc<network::NetworkPlan>) -> Result<(), SandboxError> {
        match self.network() {
            Some(n) => n.set_plan(plan),
            None => Err(SandboxError::Unavailable("this instance has no network".into())),
        }
    }
    /// The lines about connections the egress policy refused since the last call (for the
    /// run that just ended).
    fn take_network_log(&mut self) -> Vec<String> {
        self.network().map(|n| n.take_log()).unwrap_or_default()
    }
}

/// A backend that starts instances.
pub trait Sandbox: Send + Sync + 'static {
    /// The tier's name as `--sandbox` and `/health` spell it.
    fn kind(&self) -> &'static str;
    /// Starts an instance. Blocking, short (fork/exec and setup).
    fn spawn(&self, spec: &InstanceSpec) -> Result<Spawned, SandboxError>;
    /// Where the instance sees its `task/` (its `LAMBDA_TASK_ROOT`); without isolation, the
    /// host path.
    fn task_root(&self, code_dir: &std::path::Path) -> PathBuf {
        voltrun_package::InstanceDir::new(code_dir).task()
    }
    /// Where the instance sees its `deps/`.
    fn deps_root(&self, code_dir: &std::path::Path) -> PathBuf {
        voltrun_package::InstanceDir::new(code_dir).deps()
    }
    /// Where the instance sees its `opt/` (the layers).
    fn opt_root(&self, code_dir: &std::path::Path) -> PathBuf {
        voltrun_package::InstanceDir::new(code_dir).opt()
    }
    /// Where the instance sees the bootstrap directory.
    fn bootstrap_root(&self, bootstrap_dir: &std::path::Path) -> PathBuf {
        bootstrap_dir.to_path_buf()
    }
    /// Kills every instance this process started and releases what they held (at shutdown).
    fn shutdown(&self) {}
    /// The host uid (and gid) the function user's files are created with: a job's writable
    /// directories must belong to it.
    fn function_host_uid(&self) -> u32 {
        root::FUNCTION_UID
    }
    /// Facts about the tier for `/health` (e.g. the cgroup version).
    fn details(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Whether this tier can enforce a function's egress policy on this host (SPEC §11), and
    /// why not when it cannot (for `/health`).
    fn egress_support(&self) -> Result<(), String> {
        Err("not available in this tier".into())
    }
}

/// Why a sandbox could not be built or an instance not started. Every error of
/// [`Sandbox::spawn`] is a [`SandboxError::Setup`], whose message is fit for users (no host
/// path); the others come from building a tier, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A step of an instance's setup failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The tier cannot be used as configured.
    #[error("{0}")]
    Unavailable(String),
}
