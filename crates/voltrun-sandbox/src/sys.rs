//! The system calls of this crate, each wrapped with its errno named. Every `unsafe` block
//! states why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::SandboxError;

fn sys_err(call: &'static str) -> SandboxError {
    SandboxError::Sys { call, source: io::Error::last_os_error() }
}

/// A pipe whose two ends are close-on-exec and numbered at least 10, so that a child can
/// `dup2` them onto fds 3 and 4 without one clobbering the other.
pub fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys_err("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((renumber(r)?, renumber(w)?))
}

fn renumber(fd: OwnedFd) -> Result<OwnedFd, SandboxError> {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd we own, or -1.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(sys_err("fcntl(F_DUPFD_CLOEXEC)"));
    }
    // SAFETY: n is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// In a forked child before exec: puts `fd` at `target` (clearing close-on-exec).
/// Async-signal-safe.
pub fn dup_onto(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes plain integers; a bad fd yields EBADF, not UB.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a forked child before exec: sets a resource limit (soft = hard). Async-signal-safe.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a forked child before exec: starts a new session so the instance is its own process
/// group, which [`kill_group`] ends at once. Async-signal-safe.
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends SIGKILL to every process of the process group `pgid`. ESRCH (already gone) is fine.
pub fn kill_group(pgid: u32) {
    // SAFETY: kill takes plain integers; a negative pid addresses a process group.
    let rc = unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, %err, "kill(-pgid, SIGKILL) failed");
        }
    }
}

/// True when a process other than `leader` is in process group `pgid`.
///
/// Reads `/proc/<leader>/task/*/children` recursively (CONFIG_PROC_CHILDREN), which is cheap
/// and sees children and grandchildren still attached to the tree. A double-forked daemon that
/// also left the group escapes the process tier; the namespace tier does not have this gap.
pub fn has_descendants(leader: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{leader}/task")) else { return false };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("children")).map(|s| !s.trim().is_empty()).unwrap_or(false)
    })
}
