//! The seccomp policy of sandboxed functions, kept as data with a reason per rule (as
//! Firecracker's `resources/seccomp/*.json`), and its compilation to a classic-BPF filter.
//!
//! The policy is a deny list on top of the other layers: functions run as an unprivileged
//! uid with no capabilities, so most of these calls would fail anyway; the filter makes the
//! kernel code behind them unreachable, which is what protects against kernel bugs in them.
//! Everything else is allowed so that ordinary Node.js and Python programs run unchanged.

use crate::SandboxError;

/// What the filter does with a matching system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fail with EPERM (programs see an ordinary permission error).
    Deny,
    /// Fail with ENOSYS (programs fall back to an older call).
    NotImplemented,
}

/// One rule: a system call, what happens to it and why.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub action: Action,
    pub reason: &'static str,
}

macro_rules! rules {
    ($($name:ident => $action:ident, $reason:literal;)*) => {
        &[$(Rule { name: stringify!($name), nr: paste_sys!($name), action: Action::$action, reason: $reason }),*]
    };
}

macro_rules! paste_sys {
    (mount) => { libc::SYS_mount };
    (umount2) => { libc::SYS_umount2 };
    (pivot_root) => { libc::SYS_pivot_root };
    (chroot) => { libc::SYS_chroot };
    (unshare) => { libc::SYS_unshare };
    (setns) => { libc::SYS_setns };
    (ptrace) => { libc::SYS_ptrace };
    (process_vm_readv) => { libc::SYS_process_vm_readv };
    (process_vm_writev) => { libc::SYS_process_vm_writev };
    (kexec_load) => { libc::SYS_kexec_load };
    (kexec_file_load) => { libc::SYS_kexec_file_load };
    (init_module) => { libc::SYS_init_module };
    (finit_module) => { libc::SYS_finit_module };
    (delete_module) => { libc::SYS_delete_module };
    (bpf) => { libc::SYS_bpf };
    (keyctl) => { libc::SYS_keyctl };
    (add_key) => { libc::SYS_add_key };
    (request_key) => { libc::SYS_request_key };
    (perf_event_open) => { libc::SYS_perf_event_open };
    (clock_settime) => { libc::SYS_clock_settime };
    (clock_adjtime) => { libc::SYS_clock_adjtime };
    (adjtimex) => { libc::SYS_adjtimex };
    (settimeofday) => { libc::SYS_settimeofday };
    (reboot) => { libc::SYS_reboot };
    (swapon) => { libc::SYS_swapon };
    (swapoff) => { libc::SYS_swapoff };
    (open_by_handle_at) => { libc::SYS_open_by_handle_at };
    (name_to_handle_at) => { libc::SYS_name_to_handle_at };
    (userfaultfd) => { libc::SYS_userfaultfd };
    (acct) => { libc::SYS_acct };
    (quotactl) => { libc::SYS_quotactl };
    (syslog) => { libc::SYS_syslog };
    (sethostname) => { libc::SYS_sethostname };
    (setdomainname) => { libc::SYS_setdomainname };
    (fsopen) => { libc::SYS_fsopen };
    (fsconfig) => { libc::SYS_fsconfig };
    (fsmount) => { libc::SYS_fsmount };
    (fspick) => { libc::SYS_fspick };
    (move_mount) => { libc::SYS_move_mount };
    (open_tree) => { libc::SYS_open_tree };
    (mount_setattr) => { libc::SYS_mount_setattr };
    (io_uring_setup) => { libc::SYS_io_uring_setup };
    (io_uring_enter) => { libc::SYS_io_uring_enter };
    (io_uring_register) => { libc::SYS_io_uring_register };
    (kcmp) => { libc::SYS_kcmp };
    (pidfd_getfd) => { libc::SYS_pidfd_getfd };
    (lookup_dcookie) => { libc::SYS_lookup_dcookie };
    (vhangup) => { libc::SYS_vhangup };
    (iopl) => { libc::SYS_iopl };
    (ioperm) => { libc::SYS_ioperm };
    (clone3) => { libc::SYS_clone3 };
}

/// The policy. `clone` is handled apart: allowed, except with namespace flags.
pub const POLICY: &[Rule] = rules! {
    mount => Deny, "Changing the mount table could undo the read-only root and hidden host paths.";
    umount2 => Deny, "Unmounting could expose what a mount hides.";
    pivot_root => Deny, "Only the sandbox's own setup changes the root.";
    chroot => Deny, "Classic chroot-escape building block; nothing legitimate needs it here.";
    unshare => Deny, "New namespaces (user namespaces especially) reach large amounts of kernel code.";
    setns => Deny, "Joining other namespaces is never needed by a function.";
    ptrace => Deny, "Debugging other processes; also blocks reading their memory.";
    process_vm_readv => Deny, "Reads another process's memory.";
    process_vm_writev => Deny, "Writes another process's memory.";
    kexec_load => Deny, "Loads a new kernel.";
    kexec_file_load => Deny, "Loads a new kernel.";
    init_module => Deny, "Loads kernel modules.";
    finit_module => Deny, "Loads kernel modules.";
    delete_module => Deny, "Unloads kernel modules.";
    bpf => Deny, "eBPF programs are a frequent source of kernel exploits.";
    keyctl => Deny, "The kernel keyring is not namespaced.";
    add_key => Deny, "The kernel keyring is not namespaced.";
    request_key => Deny, "The kernel keyring is not namespaced.";
    perf_event_open => Deny, "Performance counters leak information across processes and reach complex kernel code.";
    clock_settime => Deny, "The clock is the host's.";
    clock_adjtime => Deny, "The clock is the host's.";
    adjtimex => Deny, "The clock is the host's.";
    settimeofday => Deny, "The clock is the host's.";
    reboot => Deny, "Never.";
    swapon => Deny, "Host swap configuration.";
    swapoff => Deny, "Host swap configuration.";
    open_by_handle_at => Deny, "Opens files by handle, bypassing the mount namespace (the 'shocker' escape).";
    name_to_handle_at => Deny, "Companion of open_by_handle_at.";
    userfaultfd => Deny, "Used to widen kernel race windows in exploits.";
    acct => Deny, "Host process accounting.";
    quotactl => Deny, "Host disk quotas.";
    syslog => Deny, "The kernel log leaks host addresses and messages.";
    sethostname => Deny, "The hostname is set once by the sandbox.";
    setdomainname => Deny, "The domain name is set once by the sandbox.";
    fsopen => Deny, "New mount API.";
    fsconfig => Deny, "New mount API.";
    fsmount => Deny, "New mount API.";
    fspick => Deny, "New mount API.";
    move_mount => Deny, "New mount API.";
    open_tree => Deny, "New mount API.";
    mount_setattr => Deny, "New mount API.";
    io_uring_setup => Deny, "io_uring has had many privilege-escalation bugs; runtimes fall back to epoll.";
    io_uring_enter => Deny, "See io_uring_setup.";
    io_uring_register => Deny, "See io_uring_setup.";
    kcmp => Deny, "Compares kernel objects of other processes.";
    pidfd_getfd => Deny, "Steals file descriptors from other processes.";
    lookup_dcookie => Deny, "Kernel profiling interface.";
    vhangup => Deny, "Terminal control of the host.";
    iopl => Deny, "Raw I/O port access.";
    ioperm => Deny, "Raw I/O port access.";
    clone3 => NotImplemented, "Its flags live in memory a filter cannot inspect; ENOSYS makes libc fall back to clone, whose flags it can.";
};

/// Namespace flags `clone` may not carry (they would create namespaces, like unshare).
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// x86_64 syscalls with this bit set are the x32 ABI, which has its own numbers.
const X32_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0: u32 = 16;

const RET_ALLOW: u32 = 0x7fff_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & 0xffff)
}

/// Compiles [`POLICY`] to a BPF program.
pub fn program() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    const JSET: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
    const RET: u32 = libc::BPF_RET | libc::BPF_K;
    let mut p = vec![
        // Another architecture's numbers would mean other calls: kill.
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ, AUDIT_ARCH, 1, 0),
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        p.push(jump(JGE, X32_BIT, 0, 1));
        p.push(stmt(RET, libc::SECCOMP_RET_KILL_PROCESS));
    }
    for rule in POLICY {
        let ret = match rule.action {
            Action::Deny => errno(libc::EPERM),
            Action::NotImplemented => errno(libc::ENOSYS),
        };
        p.push(jump(JEQ, rule.nr as u32, 0, 1));
        p.push(stmt(RET, ret));
    }
    // clone: allowed unless it asks for a namespace.
    p.push(jump(JEQ, libc::SYS_clone as u32, 0, 4));
    p.push(stmt(LD_W_ABS, OFF_ARG0));
    p.push(jump(JSET, CLONE_NAMESPACE_FLAGS, 0, 1));
    p.push(stmt(RET, errno(libc::EPERM)));
    p.push(stmt(RET, RET_ALLOW));
    p.push(stmt(RET, RET_ALLOW));
    p
}

/// Installs the filter on the calling thread (inherited by children and across exec).
/// Requires `no_new_privs` (or CAP_SYS_ADMIN).
pub fn install(program: &[libc::sock_filter]) -> Result<(), SandboxError> {
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog) };
    if rc != 0 {
        return Err(SandboxError::Sys { call: "seccomp(SECCOMP_SET_MODE_FILTER)", source: std::io::Error::last_os_error() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a child that installs the filter and runs `probe`; returns the child's exit code.
    fn in_filtered_child(probe: fn() -> i32) -> i32 {
        let prog = program();
        // SAFETY: the test process may be multi-threaded; the child only makes raw system
        // calls (prctl, seccomp, the probe's syscalls) and _exit, all async-signal-safe.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install(&prog).is_err() {
                    libc::_exit(100);
                }
                libc::_exit(probe());
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status), "child died: {status}");
            libc::WEXITSTATUS(status)
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn denied_calls_fail_with_eperm_and_others_work() {
        // mount: EPERM from the filter (we run as root, so without it this would be allowed to try).
        let code = in_filtered_child(|| {
            // SAFETY: raw syscall with null pointers; it is refused before touching them.
            let rc = unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) };
            if rc == -1 && errno() == libc::EPERM { 0 } else { 1 }
        });
        assert_eq!(code, 0, "mount must fail with EPERM");
        let code = in_filtered_child(|| {
            // SAFETY: unshare takes flags only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
            if rc == -1 && errno() == libc::EPERM { 0 } else { 1 }
        });
        assert_eq!(code, 0, "unshare must fail with EPERM");
        let code = in_filtered_child(|| {
            // SAFETY: raw clone with a namespace flag and no stack: refused before it runs.
            let rc = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_NEWNET | libc::SIGCHLD, 0, 0, 0, 0) };
            if rc == -1 && errno() == libc::EPERM { 0 } else { 1 }
        });
        assert_eq!(code, 0, "clone(CLONE_NEWNET) must fail with EPERM");
        let code = in_filtered_child(|| {
            // SAFETY: clone3 with a null argument: refused before it is read.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
            if rc == -1 && errno() == libc::ENOSYS { 0 } else { 1 }
        });
        assert_eq!(code, 0, "clone3 must fail with ENOSYS");
        // Ordinary calls, fork included, still work.
        let code = in_filtered_child(|| {
            // SAFETY: fork in a single-threaded child; the grandchild exits at once.
            unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(7);
                }
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
                if libc::WEXITSTATUS(st) == 7 && libc::getpid() > 0 { 0 } else { 1 }
            }
        });
        assert_eq!(code, 0, "fork must keep working");
    }

    #[test]
    fn every_rule_has_a_reason() {
        for r in POLICY {
            assert!(!r.reason.is_empty(), "{}", r.name);
        }
    }
}
