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

/// Resource limits of one instance. `Default` is the most restrictive sensible setting;
/// callers raise what a function asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Memory in bytes (the whole instance).
    pub memory_bytes: u64,
    /// Also cap the address space (RLIMIT_AS) at `memory_bytes` plus slack. Runtimes that
    /// reserve large virtual ranges up front (V8) cannot start under it and cap their heap
    /// themselves instead.
    pub limit_address_space: bool,
    /// Processes and threads.
    pub pids: u64,
    /// Open files (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file the instance may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Size of the private /tmp and /dev/shm together (tiers that give them; see
    /// [`ResourceLimits::shm_bytes`]).
    pub tmp_bytes: u64,
    /// CPU time per wall-clock second, in thousandths of a core (1000 = one core).
    pub cpu_millis: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits { memory_bytes: 64 << 20, limit_address_space: true, pids: 32, open_files: 256, file_size_bytes: 64 << 20, tmp_bytes: 64 << 20, cpu_millis: 500 }
    }
}

impl ResourceLimits {
    /// The size of `/dev/shm`, carved out of [`ResourceLimits::tmp_bytes`]: an eighth of it, between
    /// 1 and 8 MiB. POSIX semaphores (Python's `multiprocessing` locks, one page each) and
    /// small shared segments fit; a function that wants RAM-backed files has `/tmp`.
    pub fn shm_bytes(&self) -> u64 {
        (self.tmp_bytes / 8).clamp(1 << 20, 8 << 20)
    }

    /// The size of `/tmp`: the rest of the budget, so that `/tmp` and `/dev/shm` together
    /// hold no more than `tmp_bytes` (1 MiB at least).
    pub fn tmp_only_bytes(&self) -> u64 {
        self.tmp_bytes.saturating_sub(self.shm_bytes()).max(1 << 20)
    }
}

/// What to run in an instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Program and arguments (absolute program path).
    pub argv: Vec<String>,
    /// The complete environment; nothing of the server's is inherited.
    pub env: Vec<(String, String)>,
    /// Host directory with the function's code; the instance's working directory.
    pub code_dir: PathBuf,
    /// Host paths the runtime needs to read (the interpreter's prefix), seen at the same path.
    pub runtime_paths: Vec<PathBuf>,
    /// Host directory of the runtime bootstraps; seen at [`Sandbox::bootstrap_root`].
    pub bootstrap_dir: PathBuf,
    /// ResourceLimits to enforce.
    pub limits: ResourceLimits,
    /// Network egress (SPEC §11): `None` is no network at all (only loopback).
    pub network: Option<std::sync::Arc<network::NetworkPlan>>,
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
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
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
    /// False when the function's processes are out of the host's sight (gVisor: they live
    /// in the Sentry, a user-space kernel); the runtime bootstrap then reports stray processes
    /// in its result frames instead (`"strays": true`, see docs/RUNTIME_PROTOCOL.md).
    fn sees_processes(&self) -> bool {
        true
    }
    /// Gives an instance started with a network but an empty plan (a spare) the plan of the
    /// function it now serves (egress, issue 14).
    fn set_network(&mut self, _plan: std::sync::Arc<network::NetworkPlan>) -> Result<(), SandboxError> {
        Err(SandboxError::Unavailable("this instance has no network".into()))
    }
    /// The lines about connections the egress policy refused since the last call (for the
    /// run that just ended).
    fn take_network_log(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// A backend that starts instances.
pub trait Sandbox: Send + Sync + 'static {
    /// The tier's name as `--sandbox` and `/health` spell it.
    fn kind(&self) -> &'static str;
    /// Starts an instance. Blocking, short (fork/exec and setup).
    fn spawn(&self, spec: &InstanceSpec) -> Result<Spawned, SandboxError>;
    /// Where the instance sees the code directory (its `LAMBDA_TASK_ROOT`).
    fn task_root(&self, code_dir: &std::path::Path) -> PathBuf {
        code_dir.to_path_buf()
    }
    /// Where the instance sees the bootstrap directory.
    fn bootstrap_root(&self, bootstrap_dir: &std::path::Path) -> PathBuf {
        bootstrap_dir.to_path_buf()
    }
    /// Kills every instance this process started and releases what they held (at shutdown).
    fn shutdown(&self) {}
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
