//! The few system calls the engine makes.

use std::os::fd::AsRawFd;

/// Bytes waiting in a pipe (`FIONREAD`, see pipe(7)); 0 if the call fails.
pub(crate) fn pending_bytes(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points to a live local;
    // the fd belongs to a pipe end the caller holds, so it is open during the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as usize
    }
}
