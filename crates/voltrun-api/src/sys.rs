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

/// Every allocation of 1 MiB or more gets its own mapping, returned to the system when freed
/// (mallopt(3) `M_MMAP_THRESHOLD`; call once at startup, before threads allocate).
///
/// glibc's default threshold is dynamic: after the first 19 MiB argon2 buffer was freed it rose
/// to 19 MiB, later buffers came from the arena, small allocations split the freed block, and
/// every password hash left ~19 MiB resident (six sequential registrations: +117 MiB; a flood:
/// +300 MiB). A fixed threshold also turns the dynamic adjustment off.
pub fn return_large_allocations_to_the_system() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes allocator parameters; it takes no pointers.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
        if ok != 1 {
            tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed; large freed buffers may stay resident");
        }
    }
}
