//! The `namespace` tier, server side: each instance in its own user, pid, mount, network,
//! IPC, UTS and cgroup namespaces, on a fresh read-only root, inside a cgroup with memory,
//! pids and CPU limits, as an unprivileged uid with no capabilities, no_new_privs and a
//! seccomp filter.
//!
//! Setup is the ordered list of [`Step`]s, split between the server (this module) and the
//! child side of the clone ([`crate::init`]: the init, pid 1 and the runtime), as nsjail
//! splits `subproc.cc` from `contain.cc`. The server creates the cgroup and the root's mount
//! point, spawns `/proc/self/exe` as `voltrun-init __sandbox-init` (a fresh, single-threaded
//! process) and sends it its configuration (host paths and the [`InstanceRoot`]) on a pipe,
//! never in argv; once the init has unshared, the server writes its id maps (only a
//! privileged parent may) and sends the function's environment. A failing step on the init's
//! side is reported on the sync pipe; the pipe closing at the runtime's exec means success.
//! Until then a [`SetupGuard`] undoes what was built. Teardown kills every process in the
//! cgroup (pid 1 dying takes the whole pid namespace with it), then removes the cgroup and
//! the mount point; mounts vanish with the mount namespace.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cgroup::{Cgroup, Hierarchy};
use crate::init::{InitConfig, FD_CONFIG, FD_GO, FD_SYNC, INIT_ARG, INIT_NAME};
use crate::root::{InstanceRoot, BOOTSTRAP_ROOT, TASK_ROOT};
use crate::setup::{at, InitFailure, Lifeline, SetupError, SetupGuard, Step};
use crate::{sys, ExitInfo, InstanceHandle, InstanceSpec, Sandbox, SandboxError, Spawned};

/// Host uid/gid that uid/gid 0 inside maps to; 65536 ids are mapped from there.
pub const HOST_ID_BASE: u32 = 2_000_000_000;

/// The namespace tier.
pub struct NamespaceSandbox {
    cgroups: Hierarchy,
    next: AtomicU64,
    lifeline: Lifeline,
    /// Egress enforcement, or why this host has none (issue 14).
    network: Result<std::sync::Arc<crate::network::Network>, String>,
}

impl NamespaceSandbox {
    /// Checks the host can run the tier (root, cgroups) and prepares our cgroup subtree.
    pub fn new() -> Result<Self, SandboxError> {
        if !sys::is_root() {
            return Err(SandboxError::Unavailable("the namespace sandbox needs root (to create cgroups and map user namespaces)".into()));
        }
        let cgroups = Hierarchy::detect()?;
        tracing::info!(cgroup = cgroups.version(), "namespace sandbox ready");
        Ok(NamespaceSandbox { cgroups, next: AtomicU64::new(0), lifeline: Lifeline::new()?, network: Err("egress is not configured".into()) })
    }

    /// Enforces egress with `network` (or records why it cannot be).
    pub fn with_network(mut self, network: Result<std::sync::Arc<crate::network::Network>, String>) -> Self {
        self.network = network;
        self
    }
}

impl Sandbox for NamespaceSandbox {
    fn kind(&self) -> &'static str {
        "namespace"
    }

    fn task_root(&self, _code_dir: &Path) -> PathBuf {
        PathBuf::from(TASK_ROOT)
    }

    fn deps_root(&self, _code_dir: &Path) -> PathBuf {
        PathBuf::from(crate::root::DEPS_ROOT)
    }

    fn opt_root(&self, _code_dir: &Path) -> PathBuf {
        PathBuf::from(crate::root::OPT_ROOT)
    }

    fn bootstrap_root(&self, _bootstrap_dir: &Path) -> PathBuf {
        PathBuf::from(BOOTSTRAP_ROOT)
    }

    fn shutdown(&self) {
        self.cgroups.remove_owned_by(std::process::id());
        if let Ok(n) = &self.network {
            n.shutdown();
        }
    }

    fn egress_support(&self) -> Result<(), String> {
        self.network.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn details(&self) -> Vec<(&'static str, String)> {
        vec![("cgroup", self.cgroups.version().to_string())]
    }

    fn function_host_uid(&self) -> u32 {
        HOST_ID_BASE + crate::root::FUNCTION_UID
    }

    fn spawn(&self, spec: &InstanceSpec) -> Result<Spawned, SandboxError> {
        Ok(self.setup(spec)?)
    }
}

/// The server's ends of an instance's pipes, and the init's ends until it is spawned.
struct Pipes {
    ctl_in: (OwnedFd, OwnedFd),
    ctl_out: (OwnedFd, OwnedFd),
    log: (OwnedFd, OwnedFd),
    sync: (OwnedFd, OwnedFd),
    go: (OwnedFd, OwnedFd),
    config: (OwnedFd, OwnedFd),
}

impl Pipes {
    /// [`Step::MakePipes`].
    fn new() -> Result<Pipes, SetupError> {
        let pipe = || sys::pipe().map_err(at(Step::MakePipes, "pipe2"));
        Ok(Pipes { ctl_in: pipe()?, ctl_out: pipe()?, log: pipe()?, sync: pipe()?, go: pipe()?, config: pipe()? })
    }
}

impl NamespaceSandbox {
    /// The server's steps, in order; the init's run between [`Step::SendConfig`] and
    /// [`Step::AwaitExec`].
    fn setup(&self, spec: &InstanceSpec) -> Result<Spawned, SetupError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("i{}-{n}", std::process::id());
        let cgroup = self.cgroups.create(&name, &spec.limits).map_err(|e| SetupError::of(Step::CreateCgroup, e))?;
        let mut mount_point = spec.code_dir.clone().into_os_string();
        mount_point.push(".root");
        let mount_point = PathBuf::from(mount_point);
        // Declared before the guard: on failure it is torn down after the guard ended the init.
        let network;
        let mut guard = SetupGuard::new(cgroup, mount_point.clone(), |p| fs::remove_dir(p));
        network = crate::network::attach_for(&self.network, spec).map_err(|e| SetupError::of(Step::PrepareNetwork, e))?;
        fs::create_dir_all(&mount_point).map_err(at(Step::MakeRootDir, mount_point.display()))?;
        let pipes = Pipes::new()?;
        let mut root = InstanceRoot::of(spec);
        if let Some(n) = &network {
            root = root.with_resolver(&n.dns().to_string());
        }
        let netns = network.as_ref().map(|n| n.netns_path());
        let cfg = InitConfig { mount_point, root, cgroup_procs: guard.cgroup().procs_files(), netns, argv: spec.argv.clone() };
        let Pipes { ctl_in, ctl_out, log, sync, go, config } = pipes;

        let child = self.spawn_init(&ctl_in.0, &ctl_out.1, log.1, &sync.1, &go.0, &config.0)?;
        let pid = child.id();
        guard.started(child);
        drop((ctl_in.0, ctl_out.1, sync.1, go.0, config.0));
        send_config(config.1, &cfg)?;
        match read_sync(&sync.0, 10_000)? {
            SyncMessage::Byte(b'U') => {}
            other => return Err(other.into_error(Step::AwaitUnshare)),
        }
        map_ids(pid)?;
        send_environment(go.1, &spec.env)?;
        // EOF once the runtime exec'd (the pipe is close-on-exec there); a failure otherwise.
        match read_sync(&sync.0, 20_000)? {
            SyncMessage::Eof => {}
            other => return Err(other.into_error(Step::AwaitExec)),
        }
        let (cgroup, child, root) = guard.disarm();
        Ok(Spawned {
            control_in: ctl_in.1,
            control_out: ctl_out.0,
            logs: log.0,
            handle: Box::new(NsInstance { child, cgroup, root, reaped: None, network, foreground_shares: spec.limits.background.then(|| crate::cgroup::cpu_shares(&spec.limits)) }),
        })
    }

    /// [`Step::SpawnInit`]. The init starts as host root: it gets no environment at all
    /// (LD_PRELOAD and friends in a function's env would otherwise run code as root on the
    /// host); the function's environment comes on the go pipe and is set only at the exec.
    fn spawn_init(&self, ctl_in: &OwnedFd, ctl_out: &OwnedFd, log: OwnedFd, sync: &OwnedFd, go: &OwnedFd, config: &OwnedFd) -> Result<Child, SetupError> {
        let log2 = log.try_clone().map_err(at(Step::SpawnInit, "dup"))?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(INIT_NAME).arg(INIT_ARG).env_clear().stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
        let fds = [
            (ctl_in.as_raw_fd(), 3),
            (ctl_out.as_raw_fd(), 4),
            (sync.as_raw_fd(), FD_SYNC),
            (go.as_raw_fd(), FD_GO),
            (self.lifeline.read_end(), Lifeline::FD),
            (config.as_raw_fd(), FD_CONFIG),
        ];
        // SAFETY: runs between fork and exec; only setsid and dup2, both async-signal-safe,
        // on fds that are all >= 10 (see sys::pipe), so no dup2 clobbers a later source.
        unsafe {
            cmd.pre_exec(move || {
                sys::new_session()?;
                for (from, to) in fds {
                    sys::dup_onto(from, to)?;
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(at(Step::SpawnInit, "spawn /proc/self/exe"))
    }
}

/// [`Step::SendConfig`].
fn send_config(w: OwnedFd, cfg: &InitConfig) -> Result<(), SetupError> {
    let text = serde_json::to_vec(cfg).map_err(|e| SetupError::other(Step::SendConfig, e.to_string()))?;
    sys::write_fd(w.as_raw_fd(), &text).map_err(at(Step::SendConfig, "write the config pipe"))
}

/// [`Step::MapIds`]: the init's uid and gid 0 map to [`HOST_ID_BASE`].
fn map_ids(pid: u32) -> Result<(), SetupError> {
    let map = format!("0 {HOST_ID_BASE} 65536\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &map).map_err(at(Step::MapIds, path))?;
    }
    Ok(())
}

/// [`Step::SendEnvironment`]: `M` (the ids are mapped), then `K=V\0`… and EOF.
fn send_environment(w: OwnedFd, env: &[(String, String)]) -> Result<(), SetupError> {
    let mut go = b"M".to_vec();
    for (k, v) in env {
        go.extend_from_slice(format!("{k}={v}").as_bytes());
        go.push(0);
    }
    sys::write_fd(w.as_raw_fd(), &go).map_err(at(Step::SendEnvironment, "write the go pipe"))
}

/// What the init said on the sync pipe.
enum SyncMessage {
    Byte(u8),
    Failed(InitFailure),
    Garbled,
    Eof,
    Timeout,
}

impl SyncMessage {
    /// The error of a message that was not the one expected at `step`.
    fn into_error(self, step: Step) -> SetupError {
        match self {
            SyncMessage::Failed(f) => f.into(),
            SyncMessage::Garbled => SetupError::other(step, "the sandbox init sent a garbled failure report"),
            SyncMessage::Eof => SetupError::new(step, "the sandbox init exited", std::io::ErrorKind::UnexpectedEof.into()),
            SyncMessage::Timeout => SetupError::new(step, "the sandbox init did not answer", std::io::ErrorKind::TimedOut.into()),
            SyncMessage::Byte(b) => SetupError::other(step, format!("the sandbox init sent {b:#x}")),
        }
    }
}

fn read_sync(fd: &OwnedFd, timeout_ms: i32) -> Result<SyncMessage, SetupError> {
    let fail = |what| at(Step::AwaitExec, what);
    if !sys::poll_readable(fd.as_raw_fd(), timeout_ms).map_err(fail("poll the sync pipe"))? {
        return Ok(SyncMessage::Timeout);
    }
    let mut buf = [0u8; 1];
    if sys::read_fd(fd.as_raw_fd(), &mut buf).map_err(fail("read the sync pipe"))? == 0 {
        return Ok(SyncMessage::Eof);
    }
    if buf[0] != b'E' {
        return Ok(SyncMessage::Byte(buf[0]));
    }
    let mut msg = Vec::new();
    let mut chunk = [0u8; 512];
    while msg.len() < 4096 {
        match sys::read_fd(fd.as_raw_fd(), &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => msg.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(InitFailure::decode(&msg).map_or(SyncMessage::Garbled, SyncMessage::Failed))
}

struct NsInstance {
    child: Child,
    cgroup: Cgroup,
    root: PathBuf,
    reaped: Option<ExitInfo>,
    /// The instance's network (egress), torn down once its processes are gone.
    network: Option<crate::network::Attached>,
    /// A spare's CPU weight once it is given a function (it starts at the least).
    foreground_shares: Option<u64>,
}

impl InstanceHandle for NsInstance {
    fn give_cpu_weight(&mut self) {
        self.cgroup.give_pending_shares(&mut self.foreground_shares);
    }

    fn try_exited(&mut self) -> bool {
        self.reaped.is_some() || matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn network(&self) -> Option<&crate::network::Attached> {
        self.network.as_ref()
    }

    fn kill(&mut self) {
        if self.reaped.is_none() {
            sys::kill_group(self.child.id());
            self.cgroup.kill_all();
        }
    }

    fn wait(&mut self) -> ExitInfo {
        if let Some(info) = self.reaped {
            return info;
        }
        let info = match self.child.wait() {
            Ok(st) => ExitInfo { code: st.code(), signal: st.signal(), never_started: false },
            Err(_) => ExitInfo::default(),
        };
        self.cgroup.kill_all();
        if let Err(e) = self.cgroup.remove() {
            tracing::warn!(err = %e, "could not remove an instance cgroup");
        }
        let _ = fs::remove_dir(&self.root);
        self.network.take();
        self.reaped = Some(info);
        info
    }

    fn out_of_memory(&self) -> bool {
        self.cgroup.oom_killed()
    }

    fn has_stray_processes(&self) -> bool {
        // The outer init, pid 1 and the runtime; anything more was left by a handler.
        self.reaped.is_none() && self.cgroup.pids().len() > 3
    }
}

impl Drop for NsInstance {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill();
            self.wait();
        }
    }
}
