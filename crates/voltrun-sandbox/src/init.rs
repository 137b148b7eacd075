//! The namespace tier's child side of the clone, apart from the server side
//! ([`crate::namespace`]) as nsjail splits them: `voltrun __sandbox-init` (a fresh,
//! single-threaded process started by the server) joins the cgroup, unshares, becomes pid 1
//! of the new pid namespace, builds the [`InstanceRoot`] with mount(2) and pivots into it,
//! then forks the runtime, which drops every privilege and execs. Each step is a function
//! named after its [`Step`]; a failing one is reported to the server on the sync pipe as an
//! [`InitFailure`] and the init exits 111.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::root::{relative, InstanceRoot, FUNCTION_UID};
use crate::setup::{init_at, reap_until, InitFailure, Lifeline, Step};
use crate::{seccomp, sys, SandboxError};

/// The first argument that makes the voltrun binary act as a sandbox init.
pub const INIT_ARG: &str = "__sandbox-init";
/// argv[0] of the init (and so of pid 1): nothing of the host.
pub(crate) const INIT_NAME: &str = "voltrun-init";
/// Where the init reports to the server: `U` once unshared, an [`InitFailure`] on failure;
/// the pipe closing at the runtime's exec (it is close-on-exec there) means success.
pub(crate) const FD_SYNC: RawFd = 5;
/// Where the server answers: `M` once the ids are mapped, then the function's environment
/// (`K=V\0`…) until EOF.
pub(crate) const FD_GO: RawFd = 6;
/// The init's [`InitConfig`] as JSON, until EOF. Not argv: pid 1 of the instance is a fork of
/// the init, and its `/proc/1/cmdline` is readable by the function; the host paths in the
/// configuration (the data dir, cgroups) must not be.
pub(crate) const FD_CONFIG: RawFd = 8;
/// The most configuration the init reads.
const CONFIG_MAX: usize = 1 << 20;

/// What the server tells the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    /// The host directory the root tmpfs is mounted on.
    pub mount_point: PathBuf,
    /// What to build there.
    pub root: InstanceRoot,
    /// The instance cgroup's `cgroup.procs` files (one per v1 hierarchy, or the v2 one).
    pub cgroup_procs: Vec<PathBuf>,
    /// Egress: the network namespace the server prepared, to join instead of a new one.
    pub netns: Option<PathBuf>,
    /// The runtime's command.
    pub argv: Vec<String>,
}

type Result<T> = std::result::Result<T, InitFailure>;

enum Never {}

/// Entry point of `voltrun __sandbox-init` (no further arguments: the configuration comes
/// on [`FD_CONFIG`]): builds the sandbox and execs the runtime. Never returns; on failure
/// reports the failed step on the sync pipe and exits 111.
pub fn init_main(_args: &[String]) -> ! {
    let failure = match read_config().and_then(run_init) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let _ = sys::write_fd(FD_SYNC, &failure.encode());
    std::process::exit(111)
}

/// [`Step::ReadConfig`]: reads the configuration from [`FD_CONFIG`] (until EOF) and closes it.
fn read_config() -> Result<InitConfig> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sys::read_fd(FD_CONFIG, &mut chunk).map_err(init_at(Step::ReadConfig, "read fd 8"))? {
            0 => break,
            n if buf.len() + n > CONFIG_MAX => return Err(InitFailure::other(Step::ReadConfig, "configuration too large")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    sys::close(FD_CONFIG);
    let cfg: InitConfig = serde_json::from_slice(&buf).map_err(|e| InitFailure::other(Step::ReadConfig, format!("bad configuration: {e}")))?;
    if cfg.argv.is_empty() {
        return Err(InitFailure::other(Step::ReadConfig, "no command"));
    }
    Ok(cfg)
}

/// The init's steps in order; pid 1's and the runtime's follow in [`pid1`].
fn run_init(cfg: InitConfig) -> Result<Never> {
    join_cgroup(&cfg.cgroup_procs)?;
    join_network(cfg.netns.as_deref())?;
    unshare(cfg.netns.is_none())?;
    let sources = open_bind_sources(&cfg.root)?;
    let env = await_id_maps()?;
    let pid = sys::fork().map_err(init_at(Step::ForkPid1, "fork"))?;
    if pid > 0 {
        // Outer init: the server's child. Holds nothing of the instance; relays pid 1's exit
        // (pid 1 dies with it: see Step::ParentDeathSignal).
        for fd in [0, 1, 2, 3, 4, FD_SYNC, Lifeline::FD] {
            sys::close(fd);
        }
        drop(sources);
        reap_until(pid);
    }
    pid1(&cfg, sources, &env)
}

/// [`Step::JoinCgroup`], still host root (and started with an empty environment: LD_PRELOAD
/// and friends of a function must never run as root on the host).
fn join_cgroup(procs: &[PathBuf]) -> Result<()> {
    for f in procs {
        fs::write(f, "0").map_err(init_at(Step::JoinCgroup, f.display()))?;
    }
    Ok(())
}

/// [`Step::JoinNetwork`] (egress): join the network namespace the server prepared. The host's
/// user namespace owns it, so nothing inside may change its addresses, routes or links.
fn join_network(netns: Option<&Path>) -> Result<()> {
    let Some(path) = netns else { return Ok(()) };
    let f = fs::File::open(path).map_err(init_at(Step::JoinNetwork, format!("open {}", path.display())))?;
    sys::setns(f.as_raw_fd(), libc::CLONE_NEWNET).map_err(init_at(Step::JoinNetwork, "setns"))
}

/// [`Step::Unshare`]: every namespace at once (the network's only when no prepared one was
/// joined).
fn unshare(new_network: bool) -> Result<()> {
    let mut ns = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWCGROUP;
    if new_network {
        ns |= libc::CLONE_NEWNET;
    }
    sys::unshare(ns).map_err(init_at(Step::Unshare, "unshare"))
}

/// [`Step::OpenBindSources`]: after the mount namespace exists (a bind source must be a mount
/// of our own namespace) but before our ids change: we are still host uid 0, so root-only
/// directories on the way (the data dir, /root) can be walked. Pid 1 binds the fds.
fn open_bind_sources(root: &InstanceRoot) -> Result<Vec<OwnedFd>> {
    root.binds
        .iter()
        .map(|b| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                .open(&b.source)
                .map(OwnedFd::from)
                .map_err(init_at(Step::OpenBindSources, format!("open {}", b.source.display())))
        })
        .collect()
}

/// [`Step::AwaitIdMaps`]: tells the server we unshared, then waits for `M` (our ids are
/// mapped) and the function's environment.
fn await_id_maps() -> Result<Vec<(String, String)>> {
    sys::write_fd(FD_SYNC, b"U").map_err(init_at(Step::AwaitIdMaps, "write the sync pipe"))?;
    let mut go = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sys::read_fd(FD_GO, &mut chunk).map_err(init_at(Step::AwaitIdMaps, "read the go pipe"))? {
            0 => break,
            n => go.extend_from_slice(&chunk[..n]),
        }
    }
    sys::close(FD_GO);
    if go.first() != Some(&b'M') {
        return Err(InitFailure::other(Step::AwaitIdMaps, "the server did not map our ids"));
    }
    Ok(go[1..].split(|b| *b == 0).filter(|kv| !kv.is_empty()).filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect())
}

/// Pid 1 of the new pid namespace: builds the root, forks the runtime, then reaps zombies
/// until the runtime exits (its exit ends the namespace) or the server's lifeline reads EOF.
fn pid1(cfg: &InitConfig, sources: Vec<OwnedFd>, env: &[(String, String)]) -> Result<Never> {
    mount_root(&cfg.mount_point)?;
    become_namespace_root()?;
    make_links(&cfg.root)?;
    bind_read_only(&cfg.root, &sources)?;
    drop(sources);
    mount_proc()?;
    mount_tmpfs(&cfg.root)?;
    make_devices(&cfg.root)?;
    write_etc(&cfg.root)?;
    pivot_root()?;
    remount_read_only()?;
    parent_death_signal()?;
    network(cfg.netns.is_none())?;
    let runtime = sys::fork().map_err(init_at(Step::ForkRuntime, "fork"))?;
    if runtime == 0 {
        return exec_runtime(cfg, env);
    }
    for fd in [0, 1, 2, 3, 4, FD_SYNC] {
        sys::close(fd);
    }
    // Pid 1 exiting ends every process of the namespace.
    Lifeline::watch(|| std::process::exit(137));
    reap_until(runtime)
}

use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT};

/// [`Step::MountRoot`]: private mounts, a small tmpfs on the mount point, which becomes cwd.
fn mount_root(mount_point: &Path) -> Result<()> {
    let at = |what: &str| init_at(Step::MountRoot, format!("{what} {}", mount_point.display()));
    sys::mount("", "/", "", MS_REC | MS_PRIVATE, "").map_err(init_at(Step::MountRoot, "make / private"))?;
    let target = mount_point.to_str().ok_or_else(|| InitFailure::other(Step::MountRoot, "mount point is not UTF-8"))?;
    sys::mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755,uid=0,gid=0").map_err(at("mount tmpfs on"))?;
    std::env::set_current_dir(mount_point).map_err(at("chdir"))
}

/// [`Step::BecomeNamespaceRoot`]: from here on root of the user namespace (a mapped id, so we
/// may create files in our tmpfs); the host paths are reached through the fds opened earlier.
fn become_namespace_root() -> Result<()> {
    sys::become_user(0, 0).map_err(init_at(Step::BecomeNamespaceRoot, "setresuid(0)"))
}

fn mkdir_parent(step: Step, rel: &Path) -> Result<()> {
    match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => fs::create_dir_all(p).map_err(init_at(step, format!("mkdir {}", p.display()))),
        _ => Ok(()),
    }
}

/// [`Step::MakeLinks`].
fn make_links(root: &InstanceRoot) -> Result<()> {
    for l in &root.links {
        let rel = relative(&l.path);
        mkdir_parent(Step::MakeLinks, rel)?;
        symlink(&l.to, rel).map_err(init_at(Step::MakeLinks, format!("symlink {}", l.path.display())))?;
    }
    Ok(())
}

/// [`Step::BindReadOnly`]: each source fd onto its target, then remounted read-only.
fn bind_read_only(root: &InstanceRoot, sources: &[OwnedFd]) -> Result<()> {
    for (b, fd) in root.binds.iter().zip(sources) {
        let rel = relative(&b.target);
        let at = |what: &str| init_at(Step::BindReadOnly, format!("{what} {}", b.target.display()));
        if b.dir {
            fs::create_dir_all(rel).map_err(at("mkdir"))?;
        } else {
            mkdir_parent(Step::BindReadOnly, rel)?;
            fs::write(rel, b"").map_err(at("create"))?;
        }
        let rel = rel.to_str().ok_or_else(|| InitFailure::other(Step::BindReadOnly, "target is not UTF-8"))?;
        sys::mount(&format!("/proc/self/fd/{}", fd.as_raw_fd()), rel, "", MS_BIND | MS_REC, "").map_err(at("bind"))?;
        if b.writable {
            sys::remount_writable(rel).map_err(at("remount nosuid,nodev"))?;
        } else {
            sys::remount_readonly(rel).map_err(at("remount read-only"))?;
        }
    }
    Ok(())
}

/// [`Step::MountProc`].
fn mount_proc() -> Result<()> {
    let at = init_at(Step::MountProc, "/proc");
    fs::create_dir_all("proc").map_err(init_at(Step::MountProc, "mkdir /proc"))?;
    sys::mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "").map_err(at)
}

/// [`Step::MountTmpfs`]: the tmpfs table, in order (parents first).
fn mount_tmpfs(root: &InstanceRoot) -> Result<()> {
    for t in &root.tmpfs {
        let rel = t.target.trim_start_matches('/');
        let at = |what: &str| init_at(Step::MountTmpfs, format!("{what} {}", t.target));
        fs::create_dir_all(rel).map_err(at("mkdir"))?;
        let mut flags = MS_NOSUID;
        if t.nodev {
            flags |= MS_NODEV;
        }
        if t.noexec {
            flags |= MS_NOEXEC;
        }
        sys::mount("tmpfs", rel, "tmpfs", flags, &t.data()).map_err(at("mount tmpfs on"))?;
    }
    Ok(())
}

/// [`Step::MakeDevices`]: the host's devices bound onto empty files, and the fd links.
fn make_devices(root: &InstanceRoot) -> Result<()> {
    for d in &root.devices {
        let target = format!("dev/{d}");
        let at = |what: &str| init_at(Step::MakeDevices, format!("{what} /{target}"));
        fs::write(&target, b"").map_err(at("create"))?;
        sys::mount(&format!("/dev/{d}"), &target, "", MS_BIND, "").map_err(at("bind"))?;
    }
    for (name, to) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
        symlink(to, format!("dev/{name}")).map_err(init_at(Step::MakeDevices, format!("symlink /dev/{name}")))?;
    }
    Ok(())
}

/// [`Step::WriteEtc`].
fn write_etc(root: &InstanceRoot) -> Result<()> {
    fs::create_dir_all("etc").map_err(init_at(Step::WriteEtc, "mkdir /etc"))?;
    for (name, text) in &root.etc {
        fs::write(format!("etc/{name}"), text).map_err(init_at(Step::WriteEtc, format!("write /etc/{name}")))?;
    }
    Ok(())
}

/// [`Step::PivotRoot`]: the cwd becomes `/`; the old root is detached.
fn pivot_root() -> Result<()> {
    sys::pivot_root_here().map_err(init_at(Step::PivotRoot, "pivot_root"))?;
    sys::umount(".", libc::MNT_DETACH).map_err(init_at(Step::PivotRoot, "detach the old root"))?;
    std::env::set_current_dir("/").map_err(init_at(Step::PivotRoot, "chdir /"))
}

/// [`Step::RemountReadOnly`]: `/dev`, then `/`.
fn remount_read_only() -> Result<()> {
    sys::mount("", "/dev", "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "").map_err(init_at(Step::RemountReadOnly, "/dev"))?;
    sys::mount("", "/", "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "").map_err(init_at(Step::RemountReadOnly, "/"))
}

/// [`Step::ParentDeathSignal`]: if the outer init is killed, so is pid 1 (and so the whole
/// namespace). Set after our ids changed ([`Step::BecomeNamespaceRoot`]): a credential change
/// clears the parent-death signal.
fn parent_death_signal() -> Result<()> {
    sys::set_parent_death_signal(libc::SIGKILL).map_err(init_at(Step::ParentDeathSignal, "prctl(PR_SET_PDEATHSIG)"))
}

/// [`Step::Network`]: the instance's own hostname and loopback (a prepared namespace's
/// loopback is up already, and not ours to change).
fn network(own_loopback: bool) -> Result<()> {
    sys::sethostname("voltrun").map_err(init_at(Step::Network, "sethostname"))?;
    if own_loopback {
        sys::loopback_up().map_err(init_at(Step::Network, "bring lo up"))?;
    }
    Ok(())
}

/// The runtime process: [`Step::Rlimits`] to [`Step::Exec`], no privileges left at the end.
fn exec_runtime(cfg: &InitConfig, env: &[(String, String)]) -> Result<Never> {
    for &(r, value) in &cfg.root.rlimits {
        sys::set_rlimit(r.resource(), value).map_err(init_at(Step::Rlimits, r.oci_name()))?;
    }
    std::env::set_current_dir(&cfg.root.cwd).map_err(init_at(Step::EnterTaskRoot, cfg.root.cwd.display()))?;
    sys::drop_privileges_for_good().map_err(init_at(Step::DropCapabilities, "prctl"))?;
    sys::become_user(FUNCTION_UID, FUNCTION_UID).map_err(init_at(Step::BecomeFunctionUser, "setresuid"))?;
    sys::set_cloexec(FD_SYNC).map_err(init_at(Step::Exec, "fcntl(FD_CLOEXEC) on the sync pipe"))?;
    sys::close(Lifeline::FD);
    let filter = seccomp::program();
    seccomp::install(&filter).map_err(|e| match e {
        SandboxError::Sys { call, source } => InitFailure::io(Step::Seccomp, call, source),
        e => InitFailure::other(Step::Seccomp, e.to_string()),
    })?;
    let err = Command::new(&cfg.argv[0]).args(&cfg.argv[1..]).env_clear().envs(env.iter().map(|(k, v)| (k, v))).exec();
    Err(InitFailure::io(Step::Exec, format!("exec {}", cfg.argv[0]), err))
}
