//! The OCI tiers: each instance is an OCI runtime bundle (a `config.json` and an empty,
//! read-only root directory) run by an OCI runtime's command line: `runc` for the
//! `container` tier, `runsc` for the `gvisor` tier. They differ in a few places, each on
//! [`Runtime`]: runsc's global flags, the limits of the host cgroup (which holds gVisor's
//! own processes too), the process limit as `RLIMIT_NPROC`, the control pipes passed as
//! stdio (runsc has no `--preserve-fds`), and the seccomp section.
//!
//! The bundle composes the same root as the namespace tier: read-only binds of the host's
//! runtime files, the code at `/var/task` (a live bind: a spare instance gets its code
//! later), the bootstraps at `/var/runtime`, a size-limited `/tmp`, `/proc`, a minimal `/dev`
//! and a generated `/etc`; the process runs as uid 1000 with no capabilities,
//! `noNewPrivileges`, rlimits and a seccomp filter generated from [`seccomp::POLICY`].
//!
//! | side | step |
//! |---|---|
//! | server | create the instance cgroup (memory, pids, CPU) with the namespace tier's code |
//! | server | write the bundle: `rootfs/` with `/etc` files, `config.json` |
//! | server | spawn `voltrun __oci-guard`, holding the server's lifeline, with fds 3/4 and the log pipe as stdio |
//! | guard | become a child subreaper; `runc run --detach --preserve-fds 2`; reap the function (re-parented to us) and exit as it did; on lifeline EOF (server gone, even by SIGKILL) kill the cgroup |
//! | runc | join the cgroup (`cgroupsPath` is relative: runc resolves it under its own cgroup, per controller, which is ours), mount, pivot, drop privileges, seccomp, exec |
//! | teardown | kill every process in the cgroup; reap the guard; `runc delete --force`; remove cgroup and bundle |
//!
//! Why detached: a foreground `runc run` without a terminal relays stdout and stderr through
//! two pipes of its own, copied by two goroutines, which loses their order (a run's stderr
//! could land after its end-of-run marker); and it removes the cgroups as soon as the
//! function exits, before the engine could read the OOM counter. Detached, the function
//! gets our log pipe itself as fds 1 and 2, and the cgroup stays until `runc delete`.
//!
//! No user namespace: runc runs as host root and the function as uid 1000 with no
//! capabilities, so inside and outside ids are the same (the namespace tier maps them far
//! away instead). Everything else of a user namespace (root inside that is not root outside)
//! matters only to processes with capabilities, which functions never have.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::cgroup::{Cgroup, Hierarchy};
use crate::root::{InstanceRoot, Rlimit, Tmpfs, BOOTSTRAP_ROOT, FUNCTION_UID, TASK_ROOT};
use crate::seccomp::{self, Action};
use crate::setup::{at, reap_until, Lifeline, SetupError, SetupGuard, Step};
use crate::{sys, ExitInfo, InstanceHandle, InstanceSpec, ResourceLimits, Sandbox, SandboxError, Spawned};

/// The first argument that makes the voltrun binary act as the guard of one OCI instance.
pub const GUARD_ARG: &str = "__oci-guard";

/// Which OCI runtime drives the bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `runc`: the `container` tier.
    Runc,
    /// `runsc`: the `gvisor` tier.
    Runsc,
}

impl Runtime {
    /// The `--sandbox` name of the tier.
    pub fn kind(self) -> &'static str {
        match self {
            Runtime::Runc => "container",
            Runtime::Runsc => "gvisor",
        }
    }

    /// The binary looked up on `PATH` when no path is configured.
    pub fn default_binary(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Runsc => "runsc",
        }
    }

    /// Global flags before the subcommand (after `--root`).
    fn global_flags(self) -> &'static [&'static str] {
        match self {
            Runtime::Runc => &[],
            // No network stack at all (the default needs a network namespace with a veth; in
            // the root network namespace runsc refuses to start), the bundle's seccomp
            // section applied inside the sandbox, and the ptrace platform: the only one that
            // works here (KVM is nested and hangs; this runsc predates systrap).
            Runtime::Runsc => &["--network=none", "--oci-seccomp", "--platform=ptrace"],
        }
    }

    /// The limits of the host cgroup around an instance. runc's cgroup holds only the
    /// function, so it gets the function's limits. runsc's holds the Sentry, the gofer and the
    /// ptrace stubs too: memory gets [`GVISOR_MEMORY_OVERHEAD`] more, and the pids limit is
    /// only a backstop (each guest process costs the Sentry several host threads, and the
    /// Sentry dies if it cannot make one), the function's own limit being `RLIMIT_NPROC`,
    /// which gVisor enforces on processes and threads alike.
    fn host_limits(self, l: &ResourceLimits) -> ResourceLimits {
        match self {
            Runtime::Runc => *l,
            Runtime::Runsc => ResourceLimits { memory_bytes: l.memory_bytes + GVISOR_MEMORY_OVERHEAD, pids: l.pids * 8 + 64, ..*l },
        }
    }
}

/// Memory an idle gVisor sandbox charges to its cgroup beyond the function (measured here:
/// about 16 MiB for the Sentry, gofer and stubs with an idle Python), with room to spare.
pub const GVISOR_MEMORY_OVERHEAD: u64 = 48 << 20;

/// An OCI tier.
pub struct OciSandbox {
    runtime: Runtime,
    binary: PathBuf,
    /// The runtime's `--root` state directory (inside the data dir).
    state: PathBuf,
    cgroups: Hierarchy,
    next: AtomicU64,
    /// Guards see EOF on it when the server dies.
    lifeline: Lifeline,
    /// Egress enforcement, or why this host has none (issue 14).
    network: Result<std::sync::Arc<crate::network::Network>, String>,
}

fn sys_err(call: &'static str) -> impl Fn(std::io::Error) -> SandboxError {
    move |source| SandboxError::Sys { call, source }
}

/// Finds `name` on `PATH` (or takes it as a path when it has a slash).
fn find_binary(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

impl OciSandbox {
    /// Checks the host can run the tier (root, cgroups, the runtime binary) and removes what
    /// a crashed server left in the state directory.
    pub fn new(runtime: Runtime, binary: Option<PathBuf>, data_dir: &Path) -> Result<Self, SandboxError> {
        let kind = runtime.kind();
        if !sys::is_root() {
            return Err(SandboxError::Unavailable(format!("the {kind} sandbox needs root (the OCI runtime creates namespaces and cgroups)")));
        }
        let wanted = binary.unwrap_or_else(|| PathBuf::from(runtime.default_binary()));
        let Some(binary) = find_binary(&wanted) else {
            return Err(SandboxError::Unavailable(format!(
                "the {kind} sandbox needs the {} binary, not found at {:?} (install it, e.g. `apt-get install {}`, or pass --runtime-path)",
                runtime.default_binary(),
                wanted,
                runtime.default_binary()
            )));
        };
        let cgroups = Hierarchy::detect()?;
        let state = data_dir.join("oci-state");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&state).map_err(sys_err("mkdir oci state dir"))?;
        let sb = OciSandbox { runtime, binary, state, cgroups, next: AtomicU64::new(0), lifeline: Lifeline::new()?, network: Err("egress is not configured".into()) };
        sb.remove_containers(|owner| !owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()));
        tracing::info!(kind, binary = %sb.binary.display(), cgroup = sb.cgroups.version(), "OCI sandbox ready");
        Ok(sb)
    }

    /// Enforces egress with `network` (or records why it cannot be).
    pub fn with_network(mut self, network: Result<std::sync::Arc<crate::network::Network>, String>) -> Self {
        self.network = network;
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.state).args(self.runtime.global_flags()).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    }

    /// `delete --force` every container in our state dir whose owning server matches.
    fn remove_containers(&self, pred: impl Fn(Option<u32>) -> bool) {
        let Ok(entries) = fs::read_dir(&self.state) else { return };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if pred(owner_of(&id)) {
                delete_container(self.command(), &id);
            }
        }
    }
}

/// Instance ids are `i<server pid>-<n>`, as the cgroups.
fn owner_of(id: &str) -> Option<u32> {
    id.strip_prefix('i').and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok())
}

fn delete_container(mut cmd: Command, id: &str) {
    let out = cmd.args(["delete", "--force", id]).stdin(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            if !err.contains("does not exist") {
                tracing::warn!(id, err = %err.trim(), "OCI runtime delete failed");
            }
        }
        Err(e) => tracing::warn!(id, %e, "could not run the OCI runtime to delete a container"),
    }
}

impl Sandbox for OciSandbox {
    fn kind(&self) -> &'static str {
        self.runtime.kind()
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
        let me = std::process::id();
        self.cgroups.remove_owned_by(me);
        self.remove_containers(|owner| owner == Some(me));
        if let Ok(n) = &self.network {
            n.shutdown();
        }
    }

    fn egress_support(&self) -> Result<(), String> {
        self.network.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn details(&self) -> Vec<(&'static str, String)> {
        vec![("cgroup", self.cgroups.version().to_string()), ("runtime", self.binary.display().to_string())]
    }

    fn spawn(&self, spec: &InstanceSpec) -> Result<Spawned, SandboxError> {
        Ok(self.setup(spec)?)
    }
}

impl OciSandbox {
    /// The server's steps, in order; the guard's and the OCI runtime's follow.
    fn setup(&self, spec: &InstanceSpec) -> Result<Spawned, SetupError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Fixed width: runsc takes an id that is a prefix of others as ambiguous
        // ("i30042-2" of "i30042-21"), and then refuses to delete it.
        let id = format!("i{}-{n:010}", std::process::id());
        let cgroup = self.cgroups.create(&id, &self.runtime.host_limits(&spec.limits)).map_err(|e| SetupError::of(Step::CreateCgroup, e))?;
        let mut bundle = spec.code_dir.clone().into_os_string();
        bundle.push(".oci");
        let bundle = PathBuf::from(bundle);
        // Declared before the guard: on failure it is torn down after the guard ended the guard process.
        let network;
        let mut guard = SetupGuard::new(cgroup, bundle.clone(), |p| fs::remove_dir_all(p));
        network = crate::network::attach_for(&self.network, spec).map_err(|e| SetupError::of(Step::PrepareNetwork, e))?;
        write_bundle(&bundle, spec, &id, self.runtime, network.as_ref()).map_err(|(what, e)| SetupError::new(Step::WriteBundle, format!("{what} in {}", bundle.display()), e))?;
        let procs = guard.cgroup().procs_files();

        let pipe = || sys::pipe().map_err(at(Step::MakePipes, "pipe2"));
        let (ctl_in_r, ctl_in_w) = pipe()?;
        let (ctl_out_r, ctl_out_w) = pipe()?;
        let (log_r, log_w) = pipe()?;
        let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map_err(at(Step::MakePipes, "dup"));
        let log_w2 = dup(&log_w)?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(GUARD_ARG);
        for p in &procs {
            cmd.arg(format!("cg={}", p.display()));
        }
        cmd.arg(format!("pidfile={}", bundle.join("init.pid").display()));
        // gVisor with egress: the Sentry's sockets are host sockets in the prepared namespace
        // (`--network=host` with the namespace's path in the config: runsc starts the sandbox
        // there). `--network=sandbox` (gVisor's own netstack) would be the stronger choice,
        // but this runsc (2022) refuses every namespace on current kernels: it takes the
        // presence of /proc/sys/net/core/rmem_default, per-namespace since, for the root
        // namespace. Enforcement is the same host-side nftables either way. Without egress,
        // no network stack at all.
        let flags = self.runtime.global_flags().iter().map(|f| if network.is_some() && *f == "--network=none" { "--network=host" } else { f });
        cmd.arg("--").arg(&self.binary).arg("--root").arg(&self.state).args(flags).arg("--log").arg(bundle.join("runtime.log"));
        cmd.arg("run").arg("--detach").arg("--pid-file").arg(bundle.join("init.pid")).arg("--bundle").arg(&bundle);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let lifeline = (self.lifeline.read_end(), Lifeline::FD);
        let fds = match self.runtime {
            Runtime::Runc => {
                cmd.args(["--preserve-fds", "2", "--no-new-keyring"]);
                cmd.stdin(Stdio::null()).stdout(Stdio::from(log_w)).stderr(Stdio::from(log_w2));
                vec![(ctl_in_r.as_raw_fd(), 3), (ctl_out_w.as_raw_fd(), 4), lifeline]
            }
            // runsc passes only stdio through: the control pipes go in as stdin and stdout
            // and a shell in the sandbox moves them to 3 and 4 (see [`STDIO_TO_CONTROL`]).
            Runtime::Runsc => {
                drop(log_w2);
                cmd.stdin(Stdio::from(dup(&ctl_in_r)?));
                cmd.stdout(Stdio::from(dup(&ctl_out_w)?));
                cmd.stderr(Stdio::from(log_w));
                vec![lifeline]
            }
        };
        cmd.arg(&id);
        // SAFETY: runs between fork and exec; only setsid and dup2, both async-signal-safe,
        // on fds that are all >= 10 (see sys::pipe), so no dup2 clobbers a later source.
        unsafe {
            cmd.pre_exec(move || {
                sys::new_session()?;
                for &(from, to) in &fds {
                    sys::dup_onto(from, to)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(at(Step::SpawnInit, "spawn the OCI guard"))?;
        guard.started(child);
        drop((ctl_in_r, ctl_out_w));
        let (cgroup, child, bundle) = guard.disarm();
        Ok(Spawned {
            control_in: ctl_in_w,
            control_out: ctl_out_r,
            logs: log_r,
            handle: Box::new(OciInstance {
                child,
                cgroup,
                bundle,
                runtime: self.runtime,
                unmanaged_cgroups: self.cgroups.unmanaged_dirs(&id),
                id,
                delete: self.command(),
                killed: false,
                reaped: None,
                network,
                foreground_shares: spec.limits.background.then(|| crate::cgroup::cpu_shares(&self.runtime.host_limits(&spec.limits))),
            }),
        })
    }
}

/// Caps the address space at `$1` KiB (soft and hard), then runs the rest (runc only: see
/// `config_json`).
const ADDRESS_SPACE_THEN_EXEC: &str = r#"ulimit -v "$1" && shift && exec "$@""#;

/// How the gVisor tier's process starts: the control pipes arrive as stdin and stdout (runsc
/// has no `--preserve-fds`); they move to fds 3 and 4, stdout joins stderr on the log pipe,
/// stdin becomes /dev/null, and the runtime replaces the shell.
const STDIO_TO_CONTROL: &str = r#"exec 3<&0 4>&1 1>&2 0</dev/null; exec "$@""#;

/// Writes `<bundle>/config.json` and `<bundle>/rootfs` (empty but for `/etc` and the links of
/// the [`InstanceRoot`]). On failure, what was being done and the error.
fn write_bundle(bundle: &Path, spec: &InstanceSpec, id: &str, runtime: Runtime, network: Option<&crate::network::Attached>) -> Result<(), (&'static str, std::io::Error)> {
    let mut root = InstanceRoot::of(spec);
    if let Some(n) = network {
        root = root.with_resolver(&n.dns().to_string());
    }
    let rootfs = bundle.join("rootfs");
    fs::DirBuilder::new().recursive(true).mode(0o700).create(bundle).map_err(|e| ("mkdir the bundle", e))?;
    fs::DirBuilder::new().mode(0o755).create(&rootfs).map_err(|e| ("mkdir rootfs", e))?;
    let etc = rootfs.join("etc");
    fs::DirBuilder::new().mode(0o755).create(&etc).map_err(|e| ("mkdir rootfs/etc", e))?;
    for (name, text) in &root.etc {
        fs::write(etc.join(name), text).map_err(|e| ("write a file of rootfs/etc", e))?;
    }
    // Merged /usr: /bin -> usr/bin etc. stay symlinks, as on the host.
    for l in &root.links {
        let inside = rootfs.join(crate::root::relative(&l.path));
        if let Some(parent) = inside.parent() {
            fs::create_dir_all(parent).map_err(|e| ("mkdir a parent in rootfs", e))?;
        }
        symlink(&l.to, inside).map_err(|e| ("symlink in rootfs", e))?;
    }
    let mut config = config_json(&root, spec, id, runtime);
    if let Some(n) = network {
        // Join the prepared namespace instead of a new, empty one.
        if let Some(ns) = config["linux"]["namespaces"].as_array_mut().and_then(|a| a.iter_mut().find(|n| n["type"] == "network")) {
            *ns = json!({"type": "network", "path": n.netns_path()});
        }
    }
    let text = serde_json::to_vec_pretty(&config).expect("a json! value serializes");
    // The function's environment (it may hold secrets) is in here: owner-only.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(bundle.join("config.json"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, &text))
        .map_err(|e| ("write config.json", e))
}

/// A tmpfs of the table as an OCI mount. `/dev` also gets `strictatime`, as runc's own
/// default `/dev` has.
fn tmpfs_mount(t: &Tmpfs) -> Value {
    let mut options = vec!["nosuid".to_string()];
    if t.noexec {
        options.push("noexec".into());
    }
    if t.nodev {
        options.push("nodev".into());
    }
    if t.target == "/dev" {
        options.push("strictatime".into());
    }
    options.extend([format!("mode={:o}", t.mode), format!("size={}", t.size), format!("nr_inodes={}", t.nr_inodes)]);
    json!({"destination": t.target, "type": "tmpfs", "source": "tmpfs", "options": options})
}

/// The OCI runtime configuration of one instance: the [`InstanceRoot`] rendered as mounts and
/// rlimits (its devices are among those every OCI runtime creates, so they are not listed;
/// a test checks), plus what only the OCI tiers have (namespaces, masked paths, the seccomp section).
fn config_json(root: &InstanceRoot, spec: &InstanceSpec, id: &str, runtime: Runtime) -> Value {
    let l = &spec.limits;
    let mut mounts = vec![json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]})];
    mounts.extend(root.tmpfs.iter().map(tmpfs_mount));
    mounts.extend(
        root.binds
            .iter()
            .map(|b| json!({"destination": b.target, "type": "bind", "source": b.source, "options": ["rbind", if b.writable { "rw" } else { "ro" }, "nosuid", "nodev"]})),
    );
    let rlimit = |r: Rlimit, v: u64| json!({"type": r.oci_name(), "hard": v, "soft": v});
    // runc applies a config's rlimits in `runc init`, a Go process, before it execs the
    // function: under the address-space cap a thread it started then failed
    // ("runtime/cgo: pthread_create failed"), now and then, under load. So runc's cap is
    // set by a shell in the container just before the exec (`ulimit -v`, KiB; soft and hard).
    let address_space = (runtime == Runtime::Runc).then(|| root.rlimits.iter().find(|(r, _)| *r == Rlimit::As).map(|&(_, v)| v)).flatten();
    let mut rlimits: Vec<Value> = root.rlimits.iter().filter(|(r, _)| address_space.is_none() || *r != Rlimit::As).map(|&(r, v)| rlimit(r, v)).collect();
    let mut args = spec.argv.clone();
    if let Some(bytes) = address_space {
        let head = ["/bin/sh".to_string(), "-c".into(), ADDRESS_SPACE_THEN_EXEC.into(), "sh".into(), (bytes / 1024).to_string()];
        args = head.into_iter().chain(args).collect();
    }
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if runtime == Runtime::Runsc {
        // The function's process and thread limit, enforced by the Sentry (EAGAIN inside).
        rlimits.push(rlimit(Rlimit::Nproc, l.pids));
        // The shell runs with no environment while its stdout is still the control pipe:
        // the function's LD_DEBUG with an unwritable LD_DEBUG_OUTPUT would make the shell's
        // loader print to stdout, into the control channel. `env -i` gives the environment
        // to the runtime only, after the pipes have moved.
        let head = ["/bin/sh", "-c", STDIO_TO_CONTROL, "sh", "/usr/bin/env", "-i"].into_iter().map(String::from);
        args = head.chain(std::mem::take(&mut env)).chain(args).collect();
    }
    json!({
        "ociVersion": "1.0.2",
        "hostname": "voltrun",
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "process": {
            "terminal": false,
            "user": {"uid": FUNCTION_UID, "gid": FUNCTION_UID, "additionalGids": []},
            "args": args,
            "env": env,
            "cwd": root.cwd,
            "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
            "rlimits": rlimits,
            "noNewPrivileges": true,
        },
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}],
            // Relative: runc places it under its own cgroup in each controller, which is
            // where the namespace tier's code created it (with the same limits).
            "cgroupsPath": format!("voltrun/{id}"),
            "resources": resources(&runtime.host_limits(l)),
            "seccomp": seccomp_json(runtime),
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// `linux.resources`: the same values the cgroup was created with (runc rewrites them).
fn resources(l: &ResourceLimits) -> Value {
    json!({
        "memory": {"limit": l.memory_bytes},
        "pids": {"limit": l.pids},
        "cpu": {"quota": l.cpu_millis * 100, "period": 100_000},
        "devices": [{"allow": false, "access": "rwm"}],
    })
}

/// [`seccomp::POLICY`] and its argument tables as an OCI seccomp section. Denied calls fail
/// with EPERM, the `NotImplemented` ones (`clone3`, `memfd_secret`, `uselib`) with ENOSYS;
/// `clone` with any namespace flag fails with EPERM (one masked rule per flag: the rules of
/// one syscall are alternatives); socket families and netlink protocols as [`socket_rules`];
/// `personality` from [`seccomp::PERSONA_REFUSED_FROM`] up with EPERM. gVisor applies the
/// section inside the Sentry but answers every match with EPERM, whatever `errnoRet` says
/// (so a refused socket family is EPERM there, not EAFNOSUPPORT): an EPERM `clone3` stops
/// glibc from falling back to `clone` (no thread could start), so that tier leaves the
/// `NotImplemented` calls to the Sentry, which implements none of them and returns ENOSYS
/// itself.
fn seccomp_json(runtime: Runtime) -> Value {
    let mut deny = Vec::new();
    let mut nosys = Vec::new();
    for r in seccomp::POLICY {
        match r.action {
            Action::Deny => deny.push(r.name),
            Action::NotImplemented => nosys.push(r.name),
        }
    }
    let mut syscalls = vec![json!({"names": deny, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM})];
    if runtime == Runtime::Runc {
        syscalls.push(json!({"names": nosys, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    }
    for flag in [libc::CLONE_NEWNS, libc::CLONE_NEWUTS, libc::CLONE_NEWIPC, libc::CLONE_NEWUSER, libc::CLONE_NEWPID, libc::CLONE_NEWNET, libc::CLONE_NEWCGROUP] {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
    }
    syscalls.extend(socket_rules());
    syscalls.push(json!({
        "names": ["personality"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::EPERM,
        "args": [{"index": 0, "value": seccomp::PERSONA_REFUSED_FROM, "op": "SCMP_CMP_GE"}],
    }));
    let arch = if cfg!(target_arch = "aarch64") { "SCMP_ARCH_AARCH64" } else { "SCMP_ARCH_X86_64" };
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch], "syscalls": syscalls})
}

/// [`seccomp::SOCKET_FAMILIES`] and [`seccomp::NETLINK_PROTOCOLS`] as OCI rules. The rule
/// language has no "not one of" (the conditions of one rule on the same argument become
/// alternatives), so the refusals are spelled out (see [`refusals`]): the refused values
/// below the highest allowed one as aligned blocks, one masked rule each, and one rule for
/// everything above it (families a later kernel adds included). Conditions on different
/// arguments of one rule all hold at once (family and protocol).
///
/// Few rules, on purpose: runc compiles the filter after applying the instance's RLIMIT_AS,
/// and libseccomp 2.5 (Debian 12's runc) with some 45 argument rules in all needed about
/// 1 GiB of address space there, so the container did not start (measured: 19 rules need
/// 71 MiB, 50 need 1 GiB). The masks keep only the low 32 bits, which is what the kernel
/// reads of an `int` argument.
fn socket_rules() -> Vec<Value> {
    let refuse = |names: &[&str], errno: i32, args: Vec<Value>| json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno, "args": args});
    let masked = |index: u32, (mask, value): (u32, u32)| json!({"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"});
    let ge = |index: u32, value: u32| json!({"index": index, "value": value, "op": "SCMP_CMP_GE"});
    let families = ["socket", "socketpair"];
    let mut rules = Vec::new();
    let (blocks, above) = refusals(seccomp::SOCKET_FAMILIES);
    for block in blocks {
        rules.push(refuse(&families, libc::EAFNOSUPPORT, vec![masked(0, block)]));
    }
    rules.push(refuse(&families, libc::EAFNOSUPPORT, vec![ge(0, above)]));
    let netlink = masked(0, (u32::MAX, libc::AF_NETLINK as u32));
    let (blocks, above) = refusals(seccomp::NETLINK_PROTOCOLS);
    for block in blocks {
        rules.push(refuse(&["socket"], libc::EPROTONOSUPPORT, vec![netlink.clone(), masked(2, block)]));
    }
    rules.push(refuse(&["socket"], libc::EPROTONOSUPPORT, vec![netlink, ge(2, above)]));
    rules
}

/// How to refuse every value `allowed` does not list: the refused values below the highest
/// allowed one as aligned blocks `(mask, value)` (`x & mask == value` for exactly the
/// block's members; a block may reach past the highest allowed value, whose successors are
/// refused anyway), and the bound from which every value is refused.
fn refusals(allowed: &[seccomp::Named]) -> (Vec<(u32, u32)>, u32) {
    let above = allowed.iter().map(|a| a.value + 1).max().unwrap_or(0);
    let ceiling = above.next_power_of_two();
    let is_allowed = |v: u32| allowed.iter().any(|a| a.value == v);
    let mut blocks = Vec::new();
    let mut v = 0;
    while v < above {
        if is_allowed(v) {
            v += 1;
            continue;
        }
        let mut size = 1;
        while v % (size * 2) == 0 && v + size * 2 <= ceiling && !(v..v + size * 2).any(is_allowed) {
            size *= 2;
        }
        blocks.push((!(size - 1), v));
        v += size;
    }
    (blocks, above)
}

struct OciInstance {
    /// The guard process: it exits as the function's process does.
    child: Child,
    cgroup: Cgroup,
    bundle: PathBuf,
    id: String,
    runtime: Runtime,
    /// The instance's cgroups in the v1 hierarchies we do not manage: the runtime creates
    /// them (runsc in every hierarchy) and `runsc delete` of a sandbox that already exited
    /// leaves them, so teardown removes what is left.
    unmanaged_cgroups: Vec<PathBuf>,
    /// `runc --root …`, to delete the container's state at teardown.
    delete: Command,
    /// Set by `kill`: `wait` keeps killing until the guard is gone (a container still being
    /// created joins the cgroup only after a first kill may have found it empty).
    killed: bool,
    reaped: Option<ExitInfo>,
    /// The instance's network (egress), torn down after the container is deleted.
    network: Option<crate::network::Attached>,
    /// A spare's CPU weight once it is given a function (it starts at the least).
    foreground_shares: Option<u64>,
}

impl InstanceHandle for OciInstance {
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
            // Every process of the container is in the cgroup; the guard then reaps the
            // function and exits with 128+9.
            self.killed = true;
            self.cgroup.kill_all();
        }
    }

    fn wait(&mut self) -> ExitInfo {
        if let Some(info) = self.reaped {
            return info;
        }
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if self.killed {
                self.cgroup.kill_all();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let info = match status {
            // The guard reports a signal death of the function as status 128+signal.
            Ok(st) => match st.code() {
                _ if self.bundle.join(NOT_STARTED).exists() => ExitInfo { code: st.code(), signal: None, never_started: true },
                Some(c) if c > 128 && c < 128 + 65 => ExitInfo { code: None, signal: Some(c - 128), never_started: false },
                code => ExitInfo { code, signal: st.signal(), never_started: false },
            },
            Err(_) => ExitInfo::default(),
        };
        self.cgroup.kill_all();
        let mut delete = Command::new(self.delete.get_program());
        delete.args(self.delete.get_args()).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        delete_container(delete, &self.id);
        if let Err(e) = self.cgroup.remove() {
            tracing::warn!(err = %e, "could not remove an instance cgroup");
        }
        for d in &self.unmanaged_cgroups {
            // Empty by now (every process of the instance is dead): rmdir, not a recursive delete.
            if let Err(e) = fs::remove_dir(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %d.display(), err = %e, "could not remove an instance cgroup");
                }
            }
        }
        let _ = fs::remove_dir_all(&self.bundle);
        self.network.take();
        self.reaped = Some(info);
        info
    }

    fn out_of_memory(&self) -> bool {
        self.cgroup.oom_killed()
    }

    fn has_stray_processes(&self) -> bool {
        // The runtime is the container's pid 1; anything more was left by a handler.
        self.sees_processes() && self.reaped.is_none() && self.cgroup.pids().len() > 1
    }

    fn sees_processes(&self) -> bool {
        // runsc's cgroup holds the Sentry, the gofer and ptrace stubs, not the guest's processes.
        self.runtime == Runtime::Runc
    }
}

impl Drop for OciInstance {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill();
            self.wait();
        }
    }
}

/// The file the guard leaves in the bundle when the OCI runtime could not create the
/// container (see [`ExitInfo::never_started`]).
const NOT_STARTED: &str = "not-started";

/// Entry point of `voltrun __oci-guard cg=<cgroup.procs>… pidfile=<path> -- <runtime argv>`:
/// runs the OCI runtime detached, reaps the container's process (re-parented to us, a child
/// subreaper) and exits as it did; kills the instance's cgroup if the server's lifeline reads
/// EOF first. Never returns.
pub fn guard_main(args: &[String]) -> ! {
    let fail = |what: &str| -> ! {
        eprintln!("voltrun {GUARD_ARG}: {what}");
        std::process::exit(111)
    };
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let opts = &args[..split];
    let procs: Vec<PathBuf> = opts.iter().filter_map(|a| a.strip_prefix("cg=")).map(PathBuf::from).collect();
    let Some(pidfile) = opts.iter().find_map(|a| a.strip_prefix("pidfile=")).map(PathBuf::from) else { fail("no pidfile=") };
    let argv = &args[(split + 1).min(args.len())..];
    if argv.is_empty() {
        fail("no runtime command");
    }
    if let Err(e) = sys::become_subreaper() {
        fail(&format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"));
    }
    // The runtime must not hold the lifeline, or the server's death would go unseen.
    if let Err(e) = sys::set_cloexec(Lifeline::FD) {
        fail(&format!("fcntl(FD_CLOEXEC) on the lifeline: {e}"));
    }
    Lifeline::watch(move || {
        // The server is gone: end the instance, busy or not. Kill until the function is
        // reaped (and this process exits): a container still being created joins late.
        loop {
            for p in &procs {
                for pid in fs::read_to_string(p).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    sys::kill_pid(pid);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let status = match Command::new(&argv[0]).args(&argv[1..]).status() {
        Ok(st) => st,
        Err(e) => fail(&format!("spawn {}: {e}", argv[0])),
    };
    for fd in [0, 1, 2, 3, 4] {
        // The function holds its own copies; ours would keep its pipes open after it died.
        if fd > 2 || status.success() {
            sys::close(fd);
        }
    }
    // `run --detach` failed, or left no pid: the container was never created (its error is on
    // our stderr, the log pipe). The marker tells the server so; an exit status could be the
    // function's own.
    let not_started = || -> ! {
        let _ = fs::write(pidfile.with_file_name(NOT_STARTED), b"");
        std::process::exit(111)
    };
    if !status.success() {
        not_started();
    }
    let init: libc::pid_t = match fs::read_to_string(&pidfile).ok().and_then(|t| t.trim().parse().ok()) {
        Some(p) => p,
        None => not_started(),
    };
    reap_until(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The devices the OCI runtime spec makes every runtime create in `/dev` ("Default
    /// Devices" in the spec's `config-linux.md`; runc and runsc do).
    const OCI_DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

    #[test]
    fn the_runtimes_create_every_device_of_the_instance_root() {
        use crate::root::DEVICES;
        for d in DEVICES {
            assert!(OCI_DEFAULT_DEVICES.contains(d), "{d} is no OCI default device: list it in linux.devices");
        }
    }

    #[test]
    fn config_json_renders_the_instance_root() {
        let spec = InstanceSpec {
            argv: vec!["/usr/bin/true".into()],
            env: vec![("A".into(), "1".into())],
            code_dir: "/data/functions/f1".into(),
            runtime_paths: vec![],
            bootstrap_dir: "/data/bootstraps".into(),
            limits: ResourceLimits::default(),
            network: None,
            job: None,
        };
        let root = InstanceRoot::of(&spec);
        for runtime in [Runtime::Runc, Runtime::Runsc] {
            let c = config_json(&root, &spec, "i1-0", runtime);
            let mounts = c["mounts"].as_array().unwrap();
            for b in &root.binds {
                assert!(mounts.iter().any(|m| m["destination"] == b.target.to_str().unwrap() && m["source"] == b.source.to_str().unwrap()), "{b:?}");
            }
            for t in &root.tmpfs {
                let m = mounts.iter().find(|m| m["destination"] == t.target.as_str()).expect("tmpfs mounted");
                assert!(m["options"].as_array().unwrap().contains(&json!(format!("size={}", t.size))));
            }
            let rlimits = c["process"]["rlimits"].as_array().unwrap();
            for (r, v) in &root.rlimits {
                if runtime == Runtime::Runc && *r == Rlimit::As {
                    // Set by the shell before the exec, not by runc init (a Go process).
                    assert!(!rlimits.iter().any(|x| x["type"] == "RLIMIT_AS"));
                    let args = c["process"]["args"].as_array().unwrap();
                    assert_eq!(args[..5], [json!("/bin/sh"), json!("-c"), json!(ADDRESS_SPACE_THEN_EXEC), json!("sh"), json!((v / 1024).to_string())]);
                    continue;
                }
                assert!(rlimits.contains(&json!({"type": r.oci_name(), "hard": v, "soft": v})), "{r:?}");
            }
            assert_eq!(rlimits.iter().any(|r| r["type"] == "RLIMIT_NPROC"), runtime == Runtime::Runsc);
        }
    }

    #[test]
    fn seccomp_section_carries_every_rule() {
        let s = seccomp_json(Runtime::Runc);
        let text = s.to_string();
        for r in seccomp::POLICY {
            assert!(text.contains(&format!("\"{}\"", r.name)), "{} missing", r.name);
        }
        assert_eq!(s["defaultAction"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn refusals_cover_exactly_the_values_not_listed() {
        for table in [seccomp::SOCKET_FAMILIES, seccomp::NETLINK_PROTOCOLS] {
            let (blocks, above) = refusals(table);
            for v in 0..256u32 {
                let refused = blocks.iter().any(|&(mask, value)| v & mask == value) || v >= above;
                let listed = table.iter().any(|f| f.value == v);
                assert_eq!(refused, !listed, "value {v} of {table:?}");
            }
        }
        // Few rules in all (see socket_rules): the runtime must compile them under RLIMIT_AS.
        let rules = seccomp_json(Runtime::Runc)["syscalls"].as_array().unwrap().len();
        assert!(rules <= 24, "{rules} rules");
    }
}
