//! What the kernel-isolated tiers share around the setup of one instance: the named steps
//! and their typed error ([`Step`], [`SetupError`]), the guard that undoes a half-built
//! instance ([`SetupGuard`]), the server's [`Lifeline`] and the reap loop of an instance's
//! supervising processes ([`reap_until`]).
//!
//! Setup is an ordered list of named steps, each run by one side of the clone (as nsjail's
//! `contain.cc`); [`Step::ALL`] is that list, in order, and docs/ARCHITECTURE.md shows it as a
//! table. A failing step ends setup with a [`SetupError`] naming it; what the error displays
//! reaches execution records and API answers, so it says which step failed and the kind of
//! error, never a host path; the host details (paths, errno) stay in its source, for the
//! server log.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Child;

use crate::cgroup::Cgroup;
use crate::{sys, SandboxError};

/// Which process runs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server (the engine's process).
    Server,
    /// The namespace tier's init: a fresh `voltrun-init` process, host root until it unshares.
    Init,
    /// Pid 1 of the instance's pid namespace (a fork of the init).
    Pid1,
    /// The runtime process, between pid 1's fork and its exec.
    Runtime,
    /// The OCI tiers' guard process and the OCI runtime it runs.
    OciGuard,
}

macro_rules! steps {
    ($($(#[$doc:meta])* $step:ident = $side:ident, $name:literal;)*) => {
        /// One named step of instance setup, in the order they run (see [`Step::ALL`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Step {
            $($(#[$doc])* $step,)*
        }

        impl Step {
            /// Every step, in the order setup runs them.
            pub const ALL: &'static [Step] = &[$(Step::$step,)*];

            /// What the step does, as errors and docs name it (no host path: users see it).
            pub fn name(self) -> &'static str {
                match self {
                    $(Step::$step => $name,)*
                }
            }

            /// The process that runs the step.
            pub fn side(self) -> Side {
                match self {
                    $(Step::$step => Side::$side,)*
                }
            }
        }
    };
}

steps! {
    /// Create the instance's cgroup and write its limits.
    CreateCgroup = Server, "create the cgroup";
    /// Egress: prepare the instance's network namespace, veth and rules (host-owned).
    PrepareNetwork = Server, "prepare the network";
    /// The namespace tier: make the mount point of the instance's root.
    MakeRootDir = Server, "make the root mount point";
    /// The OCI tiers: write the bundle (`rootfs/` with `/etc` and links, `config.json`).
    WriteBundle = Server, "write the OCI bundle";
    /// Make the control, log and sync pipes.
    MakePipes = Server, "make the pipes";
    /// Spawn the init (namespace tier) or the guard (OCI tiers) or the runtime (process tier).
    SpawnInit = Server, "spawn the sandbox init";
    /// Hand the init its configuration over a pipe (never argv: pid 1's cmdline is readable).
    SendConfig = Server, "send the init configuration";
    /// Read the init's configuration.
    ReadConfig = Init, "read the configuration";
    /// Join the instance's cgroup (still host root, with an empty environment).
    JoinCgroup = Init, "join the cgroup";
    /// Egress: join the network namespace the server prepared (instead of a new one).
    JoinNetwork = Init, "join the network namespace";
    /// Unshare every namespace.
    Unshare = Init, "unshare the namespaces";
    /// Open every bind source while still host uid 0 (root-only directories on the way).
    OpenBindSources = Init, "open the bind sources";
    /// Wait for the init to have unshared.
    AwaitUnshare = Server, "wait for the init to unshare";
    /// Write `/proc/<init>/{uid,gid}_map` (only a privileged parent may).
    MapIds = Server, "map the user ids";
    /// Send the function's environment (it is set only at the runtime's exec).
    SendEnvironment = Server, "send the environment";
    /// Wait for the id maps and the environment.
    AwaitIdMaps = Init, "wait for the id maps";
    /// Fork pid 1 of the new pid namespace.
    ForkPid1 = Init, "fork pid 1";
    /// Make every mount private and mount the root tmpfs.
    MountRoot = Pid1, "mount the root tmpfs";
    /// Become root of the user namespace (a mapped id).
    BecomeNamespaceRoot = Pid1, "become namespace root";
    /// Recreate the host's top-level symlinks (merged /usr).
    MakeLinks = Pid1, "make the links";
    /// Bind the runtime's files, the code and the bootstraps read-only.
    BindReadOnly = Pid1, "bind read-only";
    /// Mount `/proc`.
    MountProc = Pid1, "mount /proc";
    /// Mount the tmpfs table (`/tmp`, `/dev`, `/dev/shm`).
    MountTmpfs = Pid1, "mount the tmpfs table";
    /// Bind the devices and link `/dev/fd`, `/dev/std*`.
    MakeDevices = Pid1, "make the devices";
    /// Write `/etc`.
    WriteEtc = Pid1, "write /etc";
    /// pivot_root into the new root and detach the old one.
    PivotRoot = Pid1, "pivot_root";
    /// Remount `/dev` and `/` read-only.
    RemountReadOnly = Pid1, "remount read-only";
    /// Die with the outer init (set after the id change, which clears it).
    ParentDeathSignal = Pid1, "set the parent-death signal";
    /// Set the hostname and bring the loopback interface up (a prepared network namespace's
    /// loopback is up already, and not ours to change).
    Network = Pid1, "set the hostname and loopback";
    /// Fork the runtime process.
    ForkRuntime = Pid1, "fork the runtime";
    /// Set the resource limits (rlimits).
    Rlimits = Runtime, "set the rlimits";
    /// Enter the task root.
    EnterTaskRoot = Runtime, "enter the task root";
    /// Drop every capability and set no_new_privs.
    DropCapabilities = Runtime, "drop capabilities";
    /// Become the function's uid and gid.
    BecomeFunctionUser = Runtime, "become the function user";
    /// Install the seccomp filter.
    Seccomp = Runtime, "install the seccomp filter";
    /// Exec the runtime.
    Exec = Runtime, "exec the runtime";
    /// Wait for the runtime's exec (the sync pipe closes) or a failure report.
    AwaitExec = Server, "wait for the runtime to start";
    /// The OCI tiers: the guard runs the OCI runtime detached and reaps the function.
    RunOciRuntime = OciGuard, "run the OCI runtime";
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Step {
    fn from_index(i: u8) -> Option<Step> {
        Step::ALL.get(i as usize).copied()
    }
}

/// A setup step failed. Its `Display` (what a user sees) names the step and the kind of
/// error only; the source holds the host details (paths, the failing call, errno) for the
/// server log.
#[derive(Debug, thiserror::Error)]
#[error("sandbox setup failed at step `{step}` ({})", source.kind())]
pub struct SetupError {
    /// The step that failed.
    pub step: Step,
    /// What went wrong, with host details.
    #[source]
    pub source: io::Error,
}

impl SetupError {
    /// A failure of `step`, with `context` (e.g. the path involved) added to the source for the
    /// log; the error's kind is kept.
    pub fn new(step: Step, context: impl fmt::Display, e: io::Error) -> SetupError {
        SetupError { step, source: io::Error::new(e.kind(), format!("{context}: {e}")) }
    }

    /// A failure of `step` that is not an I/O error (a protocol or configuration problem).
    pub fn other(step: Step, what: impl Into<String>) -> SetupError {
        SetupError { step, source: io::Error::other(what.into()) }
    }

    /// Tags a sandbox error (e.g. from creating a cgroup) with the step it happened in.
    pub(crate) fn of(step: Step, e: SandboxError) -> SetupError {
        match e {
            SandboxError::Setup(s) => s,
            SandboxError::Sys { call, source } => SetupError::new(step, call, source),
            SandboxError::Unavailable(msg) => SetupError::other(step, msg),
        }
    }
}

/// `map_err` for a step's I/O error, with context for the log.
pub(crate) fn at(step: Step, context: impl fmt::Display) -> impl FnOnce(io::Error) -> SetupError {
    move |e| SetupError::new(step, context, e)
}

/// A failure of one step on the init's side, as it travels on the sync pipe to the server:
/// `E`, the step's index, the errno (4 bytes, little-endian; 0 when there is none), then the
/// detail (host paths included: the server logs it, users never see it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InitFailure {
    pub step: Step,
    pub errno: i32,
    pub detail: String,
}

impl InitFailure {
    /// A failed system call of `step`; `context` names what it was done to.
    pub fn io(step: Step, context: impl fmt::Display, e: io::Error) -> InitFailure {
        InitFailure { step, errno: e.raw_os_error().unwrap_or(0), detail: format!("{context}: {e}") }
    }

    /// A failure of `step` that is no system call.
    pub fn other(step: Step, detail: impl Into<String>) -> InitFailure {
        InitFailure { step, errno: 0, detail: detail.into() }
    }

    /// The message on the sync pipe (after which the init exits).
    pub fn encode(&self) -> Vec<u8> {
        let mut m = vec![b'E', self.step as u8];
        m.extend_from_slice(&self.errno.to_le_bytes());
        m.extend_from_slice(self.detail.as_bytes());
        m
    }

    /// Parses what followed the `E` on the sync pipe.
    pub fn decode(body: &[u8]) -> Option<InitFailure> {
        let step = Step::from_index(*body.first()?)?;
        let errno = i32::from_le_bytes(body.get(1..5)?.try_into().ok()?);
        Some(InitFailure { step, errno, detail: String::from_utf8_lossy(&body[5..]).into_owned() })
    }
}

impl From<InitFailure> for SetupError {
    fn from(f: InitFailure) -> SetupError {
        let kind = if f.errno == 0 { io::ErrorKind::Other } else { io::Error::from_raw_os_error(f.errno).kind() };
        SetupError { step: f.step, source: io::Error::new(kind, f.detail) }
    }
}

/// `map_err` for an init-side step's I/O error.
pub(crate) fn init_at(step: Step, context: impl fmt::Display) -> impl FnOnce(io::Error) -> InitFailure {
    move |e| InitFailure::io(step, context, e)
}

/// Undoes a half-built instance unless disarmed, in the reverse order of setup, as every
/// kernel-isolated tier tears down: the process group (the init, or the OCI guard), then every
/// process left in the cgroup and the cgroup, then the instance's files (the root's mount
/// point, or the OCI bundle).
pub(crate) struct SetupGuard {
    cgroup: Option<Cgroup>,
    child: Option<Child>,
    files: PathBuf,
    /// `fs::remove_dir` for a root's mount point (never descend into what may be mounted
    /// there), `fs::remove_dir_all` for a bundle of files we wrote.
    remove_files: fn(&Path) -> io::Result<()>,
}

impl SetupGuard {
    /// Guards a created cgroup and the instance's files (created next, or not at all).
    pub(crate) fn new(cgroup: Cgroup, files: PathBuf, remove_files: fn(&Path) -> io::Result<()>) -> SetupGuard {
        SetupGuard { cgroup: Some(cgroup), child: None, files, remove_files }
    }

    /// The instance's cgroup.
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

/// A pipe nobody writes to: the server keeps the write end, every instance's supervisor (the
/// namespace tier's pid 1, the OCI guard) inherits the read end at [`Lifeline::FD`], and so
/// sees EOF exactly when the server is gone (even by SIGKILL), and ends its instance instead
/// of leaving a busy handler running unowned.
pub(crate) struct Lifeline {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Lifeline {
    /// Where supervisors find the read end.
    pub(crate) const FD: RawFd = 7;

    /// Makes the pipe.
    pub(crate) fn new() -> Result<Lifeline, SandboxError> {
        let (read, write) = sys::pipe().map_err(|source| SandboxError::Sys { call: "pipe2", source })?;
        Ok(Lifeline { read, _write: write })
    }

    /// The read end, to be placed at [`Lifeline::FD`] in a supervisor.
    pub(crate) fn read_end(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// In a supervisor: runs `on_eof` on a thread of its own once the server is gone.
    pub(crate) fn watch(on_eof: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while matches!(sys::read_fd(Lifeline::FD, &mut b), Ok(n) if n > 0) {}
            on_eof();
        });
    }
}

/// The reap loop of a supervisor that is a reaper (pid 1 of a pid namespace, a child
/// subreaper, or the init whose child is pid 1): reaps every child, orphans re-parented to us
/// included, until `main` ends, then exits as it did (128 + signal for a signal death).
pub(crate) fn reap_until(main: libc::pid_t) -> ! {
    loop {
        match sys::wait_any() {
            Ok((p, st)) if p == main => std::process::exit(sys::exit_code(st)),
            Ok(_) => continue,
            Err(_) => std::process::exit(111),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_init_failure_survives_the_sync_pipe() {
        let f = InitFailure::io(Step::OpenBindSources, "/var/lib/voltrun/functions/f1", io::Error::from_raw_os_error(libc::ENOENT));
        let wire = f.encode();
        assert_eq!(wire[0], b'E');
        let back = InitFailure::decode(&wire[1..]).expect("decodes");
        assert_eq!(back, f);
        let e = SetupError::from(back);
        assert_eq!(e.step, Step::OpenBindSources);
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
        assert!(e.source.to_string().contains("/var/lib/voltrun/functions/f1"), "the log keeps the detail");
    }

    #[test]
    fn what_a_user_sees_of_a_setup_failure_carries_no_host_path() {
        let host = "/var/lib/voltrun/data/functions/f1.root";
        for &step in Step::ALL {
            let errors = [
                SetupError::new(step, host, io::Error::from_raw_os_error(libc::EACCES)),
                SetupError::from(InitFailure::io(step, host, io::Error::from_raw_os_error(libc::ENOENT))),
                SetupError::other(step, format!("{host} is not a directory")),
                SetupError::of(
                    step,
                    SandboxError::Sys { call: "write /sys/fs/cgroup/memory/voltrun/i1-0/memory.limit_in_bytes", source: io::Error::from_raw_os_error(libc::EINVAL) },
                ),
            ];
            for e in errors {
                let shown = SandboxError::Setup(e).to_string();
                assert!(shown.contains(step.name()), "{shown}");
                // The step names an inside path at most (`mount /proc`); nothing else has one.
                assert!(!shown.replace(step.name(), "").contains('/'), "{shown}");
            }
        }
    }

    #[test]
    fn steps_are_listed_once_each_in_order() {
        for (i, s) in Step::ALL.iter().enumerate() {
            assert_eq!(Step::from_index(i as u8), Some(*s));
            assert!(!s.name().is_empty());
        }
        assert_eq!(Step::from_index(Step::ALL.len() as u8), None);
    }
}
