//! The few system calls the API crate makes.

/// The soft limit on open files of this process (RLIMIT_NOFILE; 1024 if it cannot be read).
/// See getrlimit(2).
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own and pass by pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        tracing::warn!(errno = %std::io::Error::last_os_error(), "getrlimit(RLIMIT_NOFILE) failed; assuming 1024");
        return 1024;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    lim.rlim_cur
}
