//! The system calls of this crate, each wrapped with its errno named. Every `unsafe` block
//! states why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The last errno, with the call that set it named (for the log).
fn sys_err(call: &'static str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{call}: {e}"))
}

/// True when the effective uid is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Asks the kernel to send `signal` to this process when its parent thread dies
/// (PR_SET_PDEATHSIG; a credential change clears it).
pub fn set_parent_death_signal(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) })
}

/// A pipe whose two ends are close-on-exec and numbered at least 10, so that a child can
/// `dup2` them onto fds 3 and 4 without one clobbering the other.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys_err("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((renumber(r)?, renumber(w)?))
}

fn renumber(fd: OwnedFd) -> io::Result<OwnedFd> {
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
    tasks.flatten().any(|t| std::fs::read_to_string(t.path().join("children")).map(|s| !s.trim().is_empty()).unwrap_or(false))
}

/// Sends SIGKILL to one process. ESRCH (already gone) is fine.
pub fn kill_pid(pid: i32) {
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// unshare(2).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(flags) })
}

/// Sets real, effective and saved uid and gid, and clears supplementary groups.
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments; setgroups with size 0 reads no memory.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))
    }
}

/// fork(2); only call in a single-threaded process.
pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the init process is single-threaded when it forks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// Waits for any child; returns (pid, raw status). EINTR is retried.
pub fn wait_any() -> io::Result<(libc::pid_t, libc::c_int)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int to write.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid >= 0 {
            return Ok((pid, status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Exit code a shell would report for a wait status.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// mount(2) ([man](https://man7.org/linux/man-pages/man2/mount.2.html)).
pub fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let data_ptr = if data.is_empty() { std::ptr::null() } else { d.as_ptr() as *const libc::c_void };
    // SAFETY: all pointers are valid NUL-terminated strings (or null data) for the call.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, data_ptr) })
}

/// Remounts a bind mount read-only (plus nosuid, nodev), keeping the flags the kernel locks
/// in a user namespace (atime, noexec) as they are.
pub fn remount_readonly(target: &str) -> io::Result<()> {
    remount_bind(target, libc::MS_RDONLY)
}

/// Remounts a bind mount writable but nosuid, nodev (a job's directories), keeping the
/// locked flags as [`remount_readonly`] does.
pub fn remount_writable(target: &str) -> io::Result<()> {
    remount_bind(target, 0)
}

fn remount_bind(target: &str, extra: libc::c_ulong) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: statvfs is a plain C struct of integers, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid NUL-terminated string and `st` a writable statvfs, both live
    // for the call.
    check(unsafe { libc::statvfs(t.as_ptr(), &mut st) })?;
    let keep = [(libc::ST_NOEXEC, libc::MS_NOEXEC), (libc::ST_NOATIME, libc::MS_NOATIME), (libc::ST_NODIRATIME, libc::MS_NODIRATIME), (libc::ST_RELATIME, libc::MS_RELATIME)];
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | extra | libc::MS_NOSUID | libc::MS_NODEV;
    for (st_flag, ms_flag) in keep {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount("", target, "", flags, "")
}

/// umount2(2).
pub fn umount(target: &str, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is a valid C string.
    check(unsafe { libc::umount2(t.as_ptr(), flags) })
}

/// pivot_root(".", ".") in the current directory: the new root is the cwd, and the old root
/// ends up stacked on it, ready to be detached ([man](https://man7.org/linux/man-pages/man2/pivot_root.2.html)).
pub fn pivot_root_here() -> io::Result<()> {
    let dot = cstr(".")?;
    // SAFETY: both arguments are the valid C string ".".
    check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } as libc::c_int)
}

/// sethostname(2).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) })
}

/// Drops every capability from the bounding and ambient sets, and sets no_new_privs, so
/// nothing exec'd later can gain privileges (setuid binaries, file capabilities).
pub fn drop_privileges_for_good() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        check(libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))?;
        for cap in 0..=63 {
            let rc = libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            check(rc)?;
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    }
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a socket fd we close below; `req` is a zeroed ifreq with a valid name, the
    // layout SIOCGIFFLAGS/SIOCSIFFLAGS expect.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let e = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// Marks an fd close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })
}

/// Closes an fd, ignoring errors.
pub fn close(fd: RawFd) {
    // SAFETY: closing an fd number we own (or EBADF, harmless).
    unsafe { libc::close(fd) };
}

/// Writes all of `buf` to a raw fd.
pub fn write_fd(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes from a raw fd (0 at EOF).
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Waits until `fd` is readable or `timeout_ms` passes; false on timeout.
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: `p` is one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Makes this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
}

/// Sets O_NONBLOCK on an fd of our own.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })
}

/// Binds a socket to one network interface (SO_BINDTODEVICE, socket(7)): it then receives
/// only what arrives on that interface.
pub fn bind_to_device(sock: &impl AsRawFd, ifname: &str) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: the option value is `name`, a live byte slice whose length we pass; the kernel
    // copies at most that many bytes.
    check(unsafe { libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, name.as_ptr().cast(), name.len() as libc::socklen_t) })
}

/// setns(2) on an open namespace file.
pub fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes an fd and flags only.
    check(unsafe { libc::setns(fd, nstype) })
}

/// Whether a process with this pid exists (kill(2) with signal 0).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 checks existence and permission only; sends nothing.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// A netfilter netlink socket (NETLINK_NETFILTER), bound, close-on-exec.
pub fn netfilter_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned by the OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl (pid 0: the kernel assigns one) of the size passed.
    unsafe {
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        check(libc::bind(fd, &sa as *const libc::sockaddr_nl as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t))?;
        // A larger receive buffer: log messages come in bursts.
        let size: libc::c_int = 1 << 20;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size as *const libc::c_int as *const libc::c_void, std::mem::size_of::<libc::c_int>() as libc::socklen_t);
    }
    Ok(owned)
}

/// send(2) of one whole message on a netlink socket (to the kernel).
pub fn netlink_send(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: msg is a valid buffer of msg.len() bytes.
    let n = unsafe { libc::send(fd, msg.as_ptr() as *const libc::c_void, msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// recv(2) into `buf`; EINTR is retried.
pub fn netlink_recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}
