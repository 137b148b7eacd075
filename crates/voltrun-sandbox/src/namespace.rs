//! The `namespace` tier: each instance in its own user, pid, mount, network, IPC, UTS and
//! cgroup namespaces, on a fresh read-only root, inside a cgroup with memory, pids and CPU
//! limits, as an unprivileged uid with no capabilities, no_new_privs and a seccomp filter.
//!
//! Setup is split between two processes, each step named (as nsjail's `contain.cc`):
//!
//! | side | step |
//! |---|---|
//! | server | create the cgroup and write its limits; make the root mount point |
//! | server | spawn `/proc/self/exe` as `voltrun-init __sandbox-init` (a fresh, single-threaded process); its configuration (host paths) follows on a pipe, never in argv |
//! | init | read the configuration; join the cgroup (started with an empty environment) |
//! | init | unshare every namespace; open the bind-mount sources while still host uid 0 |
//! | init | ask the server for uid/gid maps; receive the function's environment |
//! | server | write `/proc/<init>/{uid,gid}_map` (only a privileged parent may) |
//! | init | fork: the child is pid 1 of the new pid namespace |
//! | pid 1 | private mounts, tmpfs root, read-only binds, /tmp, /proc, /dev, /etc; pivot_root |
//! | pid 1 | fork the runtime, then reap zombies until it exits (its exit ends the namespace) |
//! | runtime | rlimits, drop capabilities, no_new_privs, uid 1000, seccomp, exec |
//! | pid 1 | end the namespace if the server's lifeline pipe reads EOF (the server is gone) |
//!
//! Any failure is reported on a sync pipe as `E<step>: <error>`; the pipe closing at the
//! runtime's exec means success. Teardown kills every process in the cgroup (pid 1 dying
//! takes the whole pid namespace with it), then removes the cgroup and the mount point;
//! mounts vanish with the mount namespace.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cgroup::{Cgroup, Hierarchy};
use crate::{seccomp, sys, ExitInfo, InstanceHandle, InstanceSpec, Sandbox, SandboxError, Spawned};

/// The first argument that makes the voltrun binary act as a sandbox init.
pub const INIT_ARG: &str = "__sandbox-init";
/// Host uid/gid that uid/gid 0 inside maps to; 65536 ids are mapped from there.
pub const HOST_ID_BASE: u32 = 2_000_000_000;
/// The uid/gid functions run as inside.
pub const FUNCTION_UID: u32 = 1000;
/// Where the function's code appears inside.
pub const TASK_ROOT: &str = "/var/task";
/// Where the runtime bootstraps appear inside.
pub const BOOTSTRAP_ROOT: &str = "/opt/voltrun";

/// The instance's `/etc`: the function user, localhost, and name lookups from files first
/// (every tier writes the same files).
pub(crate) fn etc_files() -> [(&'static str, String); 5] {
    [
        ("passwd", format!("root:x:0:0:root:/root:/usr/sbin/nologin\nvoltrun:x:{FUNCTION_UID}:{FUNCTION_UID}:function:/tmp:/usr/sbin/nologin\n")),
        ("group", format!("root:x:0:\nvoltrun:x:{FUNCTION_UID}:\n")),
        ("hosts", "127.0.0.1 localhost voltrun\n::1 localhost\n".into()),
        ("hostname", "voltrun\n".into()),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n".into()),
    ]
}

/// Host paths every instance gets read-only, when they exist.
const SYSTEM_PATHS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/ssl/certs", "/etc/ca-certificates"];
/// Devices every instance gets (bound from the host's).
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

const FD_SYNC: RawFd = 5;
const FD_GO: RawFd = 6;
/// Read end of the server's lifeline: EOF when the server process is gone.
const FD_LIFELINE: RawFd = 7;
/// The init's configuration (`key=value` arguments, NUL-separated, until EOF). Not argv:
/// pid 1 of the instance is a fork of the init, and its `/proc/1/cmdline` is readable by
/// the function; the host paths in the configuration (the data dir, cgroups) must not be.
const FD_CONFIG: RawFd = 8;
/// argv[0] of the init (and so of pid 1): nothing of the host.
const INIT_NAME: &str = "voltrun-init";
/// The most configuration the init reads.
const CONFIG_MAX: usize = 1 << 20;

/// The namespace tier.
pub struct NamespaceSandbox {
    cgroups: Hierarchy,
    next: AtomicU64,
    /// A pipe nobody writes to: every init holds the read end, only this process the write
    /// end, so inits see EOF exactly when the server dies (even by SIGKILL) and kill their
    /// instance instead of leaving a busy handler running.
    lifeline: (OwnedFd, OwnedFd),
    /// Egress enforcement, or why this host has none (issue 14).
    network: Result<std::sync::Arc<crate::network::Network>, String>,
}

impl NamespaceSandbox {
    /// Checks the host can run the tier (root, cgroups) and prepares our cgroup subtree.
    pub fn new() -> Result<Self, SandboxError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(SandboxError::Unavailable(
                "the namespace sandbox needs root (to create cgroups and map user namespaces)".into(),
            ));
        }
        let cgroups = Hierarchy::detect()?;
        tracing::info!(cgroup = cgroups.version(), "namespace sandbox ready");
        Ok(NamespaceSandbox { cgroups, next: AtomicU64::new(0), lifeline: sys::pipe()?, network: Err("egress is not configured".into()) })
    }

    /// Enforces egress with `network` (or records why it cannot be).
    pub fn with_network(mut self, network: Result<std::sync::Arc<crate::network::Network>, String>) -> Self {
        self.network = network;
        self
    }
}

fn sys_err(call: &'static str) -> impl Fn(std::io::Error) -> SandboxError {
    move |source| SandboxError::Sys { call, source }
}

impl Sandbox for NamespaceSandbox {
    fn kind(&self) -> &'static str {
        "namespace"
    }

    fn task_root(&self, _code_dir: &Path) -> PathBuf {
        PathBuf::from(TASK_ROOT)
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

    fn spawn(&self, spec: &InstanceSpec) -> Result<Spawned, SandboxError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("i{}-{n}", std::process::id());
        let cgroup = self.cgroups.create(&name, &spec.limits)?;
        let mut root = spec.code_dir.clone().into_os_string();
        root.push(".root");
        let root = PathBuf::from(root);
        let mut guard = SetupGuard::new(cgroup, root.clone(), |p| fs::remove_dir(p));
        fs::create_dir_all(&root).map_err(sys_err("mkdir root"))?;

        let (ctl_in_r, ctl_in_w) = sys::pipe()?;
        let (ctl_out_r, ctl_out_w) = sys::pipe()?;
        let (log_r, log_w) = sys::pipe()?;
        let (sync_r, sync_w) = sys::pipe()?;
        let (go_r, go_w) = sys::pipe()?;
        let log_w2 = log_w.try_clone().map_err(sys_err("dup"))?;
        let network = crate::network::attach_for(&self.network, spec)?;

        let (cfg_r, cfg_w) = sys::pipe()?;
        let mut args: Vec<String> = vec![format!("root={}", root.display()), format!("task={}", spec.code_dir.display()), format!("boot={}", spec.bootstrap_dir.display())];
        let l = &spec.limits;
        args.push(format!("tmp={}", l.tmp_only_bytes()));
        args.push(format!("shm={}", l.shm_bytes()));
        args.push(format!("nofile={}", l.open_files));
        args.push(format!("fsize={}", l.file_size_bytes));
        args.push(format!("as={}", if l.limit_address_space { l.memory_bytes + (192 << 20) } else { 0 }));
        for p in bind_paths(&spec.runtime_paths) {
            args.push(format!("ro={}", p.display()));
        }
        for f in guard.cgroup().procs_files() {
            args.push(format!("cg={}", f.display()));
        }
        if let Some(n) = &network {
            args.push(format!("netns={}", n.netns_path().display()));
            args.push(format!("dns={}", n.dns()));
        }
        args.push("--".into());
        args.extend(spec.argv.iter().cloned());

        // The init starts as host root: it gets no environment at all (LD_PRELOAD and friends
        // in a function's env would otherwise run code as root on the host). The function's
        // environment travels over the go pipe and is set only at the runtime's exec.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(INIT_NAME)
            .arg(INIT_ARG)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_w))
            .stderr(Stdio::from(log_w2));
        let fds = [
            (ctl_in_r.as_raw_fd(), 3),
            (ctl_out_w.as_raw_fd(), 4),
            (sync_w.as_raw_fd(), FD_SYNC),
            (go_r.as_raw_fd(), FD_GO),
            (self.lifeline.0.as_raw_fd(), FD_LIFELINE),
            (cfg_r.as_raw_fd(), FD_CONFIG),
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
        let child = cmd.spawn().map_err(sys_err("spawn sandbox init"))?;
        let pid = child.id();
        guard.started(child);
        drop((ctl_in_r, ctl_out_w, sync_w, go_r, cfg_r));
        let mut config = Vec::new();
        for a in &args {
            config.extend_from_slice(a.as_bytes());
            config.push(0);
        }
        sys::write_fd(cfg_w.as_raw_fd(), &config).map_err(sys_err("write init configuration"))?;
        drop(cfg_w);

        // The init unshared its namespaces and waits for its id maps.
        match read_sync(&sync_r, 10_000)? {
            Sync::Byte(b'U') => {}
            other => return Err(other.into_error("before the id maps")),
        }
        let map = format!("0 {HOST_ID_BASE} 65536\n");
        fs::write(format!("/proc/{pid}/uid_map"), &map).map_err(sys_err("write uid_map"))?;
        fs::write(format!("/proc/{pid}/gid_map"), &map).map_err(sys_err("write gid_map"))?;
        let mut go = b"M".to_vec();
        for (k, v) in &spec.env {
            go.extend_from_slice(format!("{k}={v}").as_bytes());
            go.push(0);
        }
        sys::write_fd(go_w.as_raw_fd(), &go).map_err(sys_err("write go pipe"))?;
        drop(go_w);
        // EOF once the runtime exec'd (the pipe is close-on-exec there); `E…` on failure.
        match read_sync(&sync_r, 20_000)? {
            Sync::Eof => {}
            other => return Err(other.into_error("during setup")),
        }
        let (cgroup, child, root) = guard.disarm();
        Ok(Spawned {
            control_in: ctl_in_w,
            control_out: ctl_out_r,
            logs: log_r,
            handle: Box::new(NsInstance { child, cgroup, root, reaped: None, network }),
        })
    }
}

/// The host paths to bind: the system's and the runtime's, without ones already covered.
pub(crate) fn bind_paths(runtime: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in SYSTEM_PATHS.iter().map(PathBuf::from).chain(runtime.iter().cloned()) {
        if p.symlink_metadata().is_ok() && !out.iter().any(|o| p.starts_with(o)) {
            out.push(p);
        }
    }
    out
}

enum Sync {
    Byte(u8),
    Error(String),
    Eof,
    Timeout,
}

impl Sync {
    fn into_error(self, when: &str) -> SandboxError {
        SandboxError::Unavailable(match self {
            Sync::Error(msg) => format!("sandbox setup failed {when}: {msg}"),
            Sync::Eof => format!("sandbox init exited {when}"),
            Sync::Timeout => format!("sandbox init did not answer {when}"),
            Sync::Byte(b) => format!("sandbox init sent {b:#x} {when}"),
        })
    }
}

fn read_sync(fd: &OwnedFd, timeout_ms: i32) -> Result<Sync, SandboxError> {
    if !sys::poll_readable(fd.as_raw_fd(), timeout_ms).map_err(sys_err("poll sync pipe"))? {
        return Ok(Sync::Timeout);
    }
    let mut buf = [0u8; 1];
    if sys::read_fd(fd.as_raw_fd(), &mut buf).map_err(sys_err("read sync pipe"))? == 0 {
        return Ok(Sync::Eof);
    }
    if buf[0] != b'E' {
        return Ok(Sync::Byte(buf[0]));
    }
    let mut msg = Vec::new();
    let mut chunk = [0u8; 512];
    while msg.len() < 4096 {
        match sys::read_fd(fd.as_raw_fd(), &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => msg.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(Sync::Error(String::from_utf8_lossy(&msg).into_owned()))
}

/// Undoes a half-built instance unless disarmed, in the order both tiers tear down: the
/// process group (or the OCI guard), then every process left in the cgroup and the cgroup,
/// then the instance's files (the root's mount point, or the OCI bundle).
pub(crate) struct SetupGuard {
    cgroup: Option<Cgroup>,
    child: Option<Child>,
    files: PathBuf,
    /// `fs::remove_dir` for a root's mount point (never descend into what may be mounted
    /// there), `fs::remove_dir_all` for a bundle of files we wrote.
    remove_files: fn(&Path) -> std::io::Result<()>,
}

impl SetupGuard {
    pub(crate) fn new(cgroup: Cgroup, files: PathBuf, remove_files: fn(&Path) -> std::io::Result<()>) -> SetupGuard {
        SetupGuard { cgroup: Some(cgroup), child: None, files, remove_files }
    }

    pub(crate) fn cgroup(&self) -> &Cgroup {
        self.cgroup.as_ref().expect("held until disarmed")
    }

    /// The instance's first process: killed (with its group) and reaped if setup fails.
    pub(crate) fn started(&mut self, child: Child) {
        self.child = Some(child);
    }

    /// Setup succeeded: the instance owns its cgroup, process and files from here.
    pub(crate) fn disarm(mut self) -> (Cgroup, Child, PathBuf) {
        (self.cgroup.take().expect("cgroup"), self.child.take().expect("child"), std::mem::take(&mut self.files))
    }
}

impl Drop for SetupGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sys::kill_group(c.id());
            let _ = c.wait();
        }
        if let Some(cg) = self.cgroup.take() {
            cg.kill_all();
            if let Err(e) = cg.remove() {
                tracing::warn!(err = %e, "could not remove a cgroup");
            }
        }
        if !self.files.as_os_str().is_empty() {
            let _ = (self.remove_files)(&self.files);
        }
    }
}

struct NsInstance {
    child: Child,
    cgroup: Cgroup,
    root: PathBuf,
    reaped: Option<ExitInfo>,
    /// The instance's network (egress), torn down once its processes are gone.
    network: Option<crate::network::Attached>,
}

impl InstanceHandle for NsInstance {
    fn set_network(&mut self, plan: std::sync::Arc<crate::network::NetworkPlan>) -> Result<(), SandboxError> {
        match &self.network {
            Some(n) => n.set_plan(plan),
            None => Err(SandboxError::Unavailable("this instance has no network".into())),
        }
    }

    fn take_network_log(&mut self) -> Vec<String> {
        self.network.as_ref().map(|n| n.take_log()).unwrap_or_default()
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
            Ok(st) => ExitInfo { code: st.code(), signal: st.signal() },
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

// ---------------------------------------------------------------------------------------
// The init side: runs in a fresh process started as `voltrun __sandbox-init …`.

struct InitConfig {
    root: String,
    task: String,
    boot: String,
    tmp_bytes: u64,
    shm_bytes: u64,
    nofile: u64,
    fsize: u64,
    address_space: u64,
    ro: Vec<String>,
    cgroup_procs: Vec<String>,
    /// The prepared network namespace to join (egress), and the resolver it uses.
    netns: Option<String>,
    dns: Option<String>,
    argv: Vec<String>,
}

fn parse(args: &[String]) -> Result<InitConfig, String> {
    let mut c = InitConfig { root: String::new(), task: String::new(), boot: String::new(), tmp_bytes: 0, shm_bytes: 0, nofile: 0, fsize: 0, address_space: 0, ro: vec![], cgroup_procs: vec![], netns: None, dns: None, argv: vec![] };
    let mut it = args.iter();
    for a in it.by_ref() {
        if a == "--" {
            break;
        }
        let (k, v) = a.split_once('=').ok_or_else(|| format!("bad init argument {a:?}"))?;
        let num = || v.parse::<u64>().map_err(|_| format!("bad number in {a:?}"));
        match k {
            "root" => c.root = v.into(),
            "task" => c.task = v.into(),
            "boot" => c.boot = v.into(),
            "tmp" => c.tmp_bytes = num()?,
            "shm" => c.shm_bytes = num()?,
            "nofile" => c.nofile = num()?,
            "fsize" => c.fsize = num()?,
            "as" => c.address_space = num()?,
            "ro" => c.ro.push(v.into()),
            "cg" => c.cgroup_procs.push(v.into()),
            "netns" => c.netns = Some(v.into()),
            "dns" => c.dns = Some(v.into()),
            _ => return Err(format!("unknown init argument {k}")),
        }
    }
    c.argv = it.cloned().collect();
    if c.root.is_empty() || c.task.is_empty() || c.boot.is_empty() || c.argv.is_empty() {
        return Err("init needs root=, task=, boot= and a command".into());
    }
    Ok(c)
}

/// Reads the configuration from [`FD_CONFIG`] (until EOF) and closes it.
fn read_config() -> Result<Vec<String>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match step("read configuration", sys::read_fd(FD_CONFIG, &mut chunk))? {
            0 => break,
            n if buf.len() + n > CONFIG_MAX => return Err("configuration too large".into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    sys::close(FD_CONFIG);
    // Every argument ends in NUL (an empty one included, as an argv element may be).
    let Some(body) = buf.strip_suffix(b"\0") else { return Err("configuration is not NUL-terminated".into()) };
    body.split(|b| *b == 0).map(|a| String::from_utf8(a.to_vec()).map_err(|_| "configuration is not UTF-8".to_string())).collect()
}

/// Entry point of `voltrun __sandbox-init` (no further arguments: the configuration comes
/// on [`FD_CONFIG`]): builds the sandbox and execs the runtime. Never returns; on failure
/// reports `E<step>: <error>` on the sync pipe and exits 111.
pub fn init_main(_args: &[String]) -> ! {
    let err = match read_config().and_then(|args| parse(&args)) {
        Ok(cfg) => match run_init(cfg) {
            Ok(never) => match never {},
            Err(e) => e,
        },
        Err(e) => e,
    };
    let _ = sys::write_fd(FD_SYNC, format!("E{err}").as_bytes());
    std::process::exit(111)
}

enum Never {}

fn step<T>(name: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{name}: {e}"))
}

/// What a bind source is on the host.
enum Source {
    Dir(OwnedFd),
    File(OwnedFd),
    Link(PathBuf),
}

fn open_path(p: &str) -> std::io::Result<OwnedFd> {
    let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW).open(p)?;
    Ok(OwnedFd::from(f))
}

fn open_source(p: &str) -> Result<Source, String> {
    let meta = step(&format!("stat {p}"), fs::symlink_metadata(p))?;
    Ok(if meta.file_type().is_symlink() {
        Source::Link(step(&format!("readlink {p}"), fs::read_link(p))?)
    } else if meta.is_dir() {
        Source::Dir(step(&format!("open {p}"), open_path(p))?)
    } else {
        Source::File(step(&format!("open {p}"), open_path(p))?)
    })
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn run_init(cfg: InitConfig) -> Result<Never, String> {
    // Host side, still root: join the cgroup.
    for f in &cfg.cgroup_procs {
        step(&format!("join cgroup {f}"), fs::write(f, "0"))?;
    }
    let mut ns = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWCGROUP;
    if let Some(path) = &cfg.netns {
        // Egress: join the network namespace the server prepared (owned by the host's user
        // namespace, so nothing inside may change its addresses or routes) instead of a new one.
        let fd = step(&format!("open {path}"), fs::File::open(path))?;
        step("setns network", sys::setns(fd.as_raw_fd(), libc::CLONE_NEWNET))?;
        ns &= !libc::CLONE_NEWNET;
    }
    step("unshare", sys::unshare(ns))?;
    // Opened after the mount namespace exists (a bind source must be a mount of our own
    // namespace) but before our ids change: we are still host uid 0, so root-only
    // directories on the way (the data dir, /root) can be walked.
    let mut sources = Vec::new();
    for p in &cfg.ro {
        sources.push((p.trim_start_matches('/').to_string(), open_source(p)?));
    }
    let task = step("open task dir", open_path(&cfg.task))?;
    let boot = step("open bootstrap dir", open_path(&cfg.boot))?;
    step("signal server", sys::write_fd(FD_SYNC, b"U"))?;
    // 'M' once our ids are mapped, then the function's environment (K=V\0…) until EOF.
    let mut go = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match step("wait for id maps", sys::read_fd(FD_GO, &mut chunk))? {
            0 => break,
            n => go.extend_from_slice(&chunk[..n]),
        }
    }
    sys::close(FD_GO);
    if go.first() != Some(&b'M') {
        return Err("the server did not map our ids".into());
    }
    let env: Vec<(String, String)> = go[1..]
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();

    let pid = step("fork pid 1", sys::fork())?;
    if pid > 0 {
        // Outer init: the server's child. Holds nothing of the instance; relays pid 1's exit.
        for fd in [0, 1, 2, 3, 4, FD_SYNC] {
            sys::close(fd);
        }
        drop((sources, task, boot));
        sys::close(FD_LIFELINE);
        loop {
            match sys::wait_any() {
                Ok((p, st)) if p == pid => std::process::exit(sys::exit_code(st)),
                Ok(_) => continue,
                Err(_) => std::process::exit(111),
            }
        }
    }
    // Pid 1 of the new pid namespace.
    build_root(&cfg, &sources, &[(&task, TASK_ROOT), (&boot, BOOTSTRAP_ROOT)])?;
    // If the outer init is killed, so are we (and so the whole namespace). Set after our
    // ids changed in build_root: a credential change clears the parent-death signal.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    drop((sources, task, boot));
    step("sethostname", sys::sethostname("voltrun"))?;
    if cfg.netns.is_none() {
        // A prepared namespace's loopback is up already (and not ours to change).
        step("loopback up", sys::loopback_up())?;
    }

    let runtime = step("fork runtime", sys::fork())?;
    if runtime == 0 {
        return exec_runtime(&cfg, &env);
    }
    for fd in [0, 1, 2, 3, 4, FD_SYNC] {
        sys::close(fd);
    }
    // The server's lifeline reads EOF when the server is gone (even by SIGKILL): then the
    // instance ends, busy or not, instead of running on unowned. Pid 1 exiting ends every
    // process of the namespace.
    std::thread::spawn(|| {
        let mut b = [0u8; 1];
        while matches!(sys::read_fd(FD_LIFELINE, &mut b), Ok(n) if n > 0) {}
        std::process::exit(137);
    });
    loop {
        match sys::wait_any() {
            Ok((p, st)) if p == runtime => std::process::exit(sys::exit_code(st)),
            Ok(_) => continue, // an orphan re-parented to us: reaped
            Err(_) => std::process::exit(111),
        }
    }
}

/// Pid 1 builds the new root and pivots into it.
fn build_root(cfg: &InitConfig, sources: &[(String, Source)], ours: &[(&OwnedFd, &str)]) -> Result<(), String> {
    use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT};
    step("make mounts private", sys::mount("", "/", "", MS_REC | MS_PRIVATE, ""))?;
    step("mount root tmpfs", sys::mount("tmpfs", &cfg.root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755,uid=0,gid=0"))?;
    step("chdir root", std::env::set_current_dir(&cfg.root))?;
    // From here on, as root of the user namespace (a mapped id, so we may create files in
    // our tmpfs); the host paths are reached through the fds opened earlier.
    step("become namespace root", sys::become_user(0, 0))?;
    let bind_ro = |src: &str, target: &str| -> Result<(), String> {
        step(&format!("bind {target}"), sys::mount(src, target, "", MS_BIND | MS_REC, ""))?;
        step(&format!("remount {target} read-only"), sys::remount_readonly(target))
    };
    for (rel, src) in sources {
        if let Some(parent) = Path::new(rel).parent() {
            step(&format!("mkdir {}", parent.display()), fs::create_dir_all(parent))?;
        }
        match src {
            Source::Link(to) => step(&format!("symlink {rel}"), symlink(to, rel))?,
            Source::Dir(fd) => {
                step(&format!("mkdir {rel}"), fs::create_dir_all(rel))?;
                bind_ro(&fd_path(fd), rel)?;
            }
            Source::File(fd) => {
                step(&format!("create {rel}"), fs::write(rel, b""))?;
                bind_ro(&fd_path(fd), rel)?;
            }
        }
    }
    for (fd, inside) in ours {
        let rel = inside.trim_start_matches('/');
        step(&format!("mkdir {rel}"), fs::create_dir_all(rel))?;
        bind_ro(&fd_path(fd), rel)?;
    }

    step("mkdir tmp", fs::create_dir_all("tmp"))?;
    let tmp_opts = format!("size={},nr_inodes=16384,mode=1777", cfg.tmp_bytes);
    step("mount /tmp", sys::mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, &tmp_opts))?;
    step("mkdir proc", fs::create_dir_all("proc"))?;
    step("mount /proc", sys::mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""))?;

    step("mkdir dev", fs::create_dir_all("dev"))?;
    step("mount /dev", sys::mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=755"))?;
    for d in DEVICES {
        let target = format!("dev/{d}");
        step(&format!("create {target}"), fs::write(&target, b""))?;
        step(&format!("bind {target}"), sys::mount(&format!("/dev/{d}"), &target, "", MS_BIND, ""))?;
    }
    // POSIX shared memory (Python's multiprocessing locks): RAM-backed, charged to the
    // instance's memory, its size taken out of the /tmp budget (Limits::shm_bytes).
    step("mkdir dev/shm", fs::create_dir_all("dev/shm"))?;
    let shm_opts = format!("size={},nr_inodes=256,mode=1777", cfg.shm_bytes);
    step("mount /dev/shm", sys::mount("tmpfs", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, &shm_opts))?;
    for (name, to) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
        step(&format!("symlink dev/{name}"), symlink(to, format!("dev/{name}")))?;
    }

    step("mkdir etc", fs::create_dir_all("etc"))?;
    for (name, text) in etc_files() {
        step(&format!("write /etc/{name}"), fs::write(format!("etc/{name}"), text))?;
    }
    if let Some(dns) = &cfg.dns {
        step("write /etc/resolv.conf", fs::write("etc/resolv.conf", crate::network::resolv_conf(dns)))?;
    }

    step("pivot_root", sys::pivot_root_here())?;
    step("detach old root", sys::umount(".", libc::MNT_DETACH))?;
    step("chdir /", std::env::set_current_dir("/"))?;
    step("remount /dev read-only", sys::mount("", "/dev", "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, ""))?;
    step("remount / read-only", sys::mount("", "/", "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, ""))?;
    Ok(())
}

/// The runtime process: limits, no privileges, then exec.
fn exec_runtime(cfg: &InitConfig, env: &[(String, String)]) -> Result<Never, String> {
    step("rlimit NOFILE", sys::set_rlimit(libc::RLIMIT_NOFILE, cfg.nofile))?;
    step("rlimit FSIZE", sys::set_rlimit(libc::RLIMIT_FSIZE, cfg.fsize))?;
    step("rlimit CORE", sys::set_rlimit(libc::RLIMIT_CORE, 0))?;
    if cfg.address_space > 0 {
        step("rlimit AS", sys::set_rlimit(libc::RLIMIT_AS, cfg.address_space))?;
    }
    step("chdir /var/task", std::env::set_current_dir(TASK_ROOT))?;
    step("drop capabilities", sys::drop_privileges_for_good())?;
    step("become the function user", sys::become_user(FUNCTION_UID, FUNCTION_UID))?;
    step("close-on-exec sync pipe", sys::set_cloexec(FD_SYNC))?;
    sys::close(FD_LIFELINE);
    let filter = seccomp::program();
    seccomp::install(&filter).map_err(|e| e.to_string())?;
    let err = Command::new(&cfg.argv[0]).args(&cfg.argv[1..]).env_clear().envs(env.iter().map(|(k, v)| (k, v))).exec();
    Err(format!("exec {}: {err}", cfg.argv[0]))
}
