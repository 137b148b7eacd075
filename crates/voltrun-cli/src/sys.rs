//! The few system calls the client needs: is a stream a terminal, turning echo off for a
//! password prompt, and an advisory lock around the credentials file. Every `unsafe` block
//! says why it is sound.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// Whether `fd` is a terminal ([isatty(3)](https://man7.org/linux/man-pages/man3/isatty.3.html)).
pub fn isatty(fd: i32) -> bool {
    // SAFETY: isatty takes a plain integer; a closed fd yields 0 (EBADF), not UB.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal settings before echo was turned off, for the signal handler to put back.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Echo turned off on a terminal; dropping it (or SIGINT/SIGTERM/SIGHUP) turns it back on.
pub struct EchoOff {
    fd: i32,
    original: libc::termios,
    old_handlers: Vec<(i32, libc::sighandler_t)>,
}

const RESTORE_ON: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn restore_and_reraise(sig: i32) {
    if let Some(t) = SAVED.get() {
        // SAFETY: tcsetattr, signal and raise are async-signal-safe
        // ([signal-safety(7)](https://man7.org/linux/man-pages/man7/signal-safety.7.html)); `t`
        // points to a termios that lives for the whole process.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t);
        }
    }
    // SAFETY: as above; resetting to the default action then raising ends the process as the
    // signal would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

impl EchoOff {
    /// Turns echo off on standard input, which must be a terminal
    /// ([termios(3)](https://man7.org/linux/man-pages/man3/termios.3.html)).
    pub fn stdin() -> io::Result<EchoOff> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios is plain data; an all-zero value is valid and tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::other(format!("tcgetattr: {}", io::Error::last_os_error())));
        }
        let original = t;
        let _ = SAVED.set(original);
        let mut old_handlers = Vec::new();
        for sig in RESTORE_ON {
            // SAFETY: installs a handler that only makes async-signal-safe calls.
            let old = unsafe { libc::signal(sig, restore_and_reraise as extern "C" fn(i32) as libc::sighandler_t) };
            old_handlers.push((sig, old));
        }
        t.c_lflag &= !libc::ECHO;
        // Keep ICANON so the line is edited as usual, and ECHONL so Enter still moves the cursor.
        t.c_lflag |= libc::ECHONL;
        // SAFETY: `t` is a valid termios read from this fd and then modified.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &t) } != 0 {
            let e = io::Error::other(format!("tcsetattr: {}", io::Error::last_os_error()));
            drop(EchoOff { fd, original, old_handlers });
            return Err(e);
        }
        Ok(EchoOff { fd, original, old_handlers })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: `original` is the termios this fd had; restoring it cannot be unsound.
        unsafe { libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.original) };
        for (sig, old) in self.old_handlers.drain(..) {
            // SAFETY: puts back the handler that was installed before ours.
            unsafe { libc::signal(sig, old) };
        }
    }
}

/// Holds an exclusive advisory lock on `file` until dropped
/// ([flock(2)](https://man7.org/linux/man-pages/man2/flock.2.html)).
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the lock is ours.
    pub fn exclusive(file: File) -> io::Result<FileLock> {
        loop {
            // SAFETY: flock takes an open fd and a flag; the File keeps the fd open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::other(format!("flock: {e}")));
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocks an fd this struct owns; closing it would unlock as well.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Lets a closed pipe end the process quietly (`voltrun executions list | head -1`), as for
/// other command-line tools; Rust ignores SIGPIPE by default, which turns it into a panic
/// in `println!`.
pub fn default_sigpipe() {
    // SAFETY: restores the default action of one signal; no handler runs our code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
