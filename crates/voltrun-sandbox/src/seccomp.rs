//! The seccomp policy of sandboxed functions, kept as data with a reason per rule (as
//! Firecracker's `resources/seccomp/*.json`), and its compilation to a classic-BPF filter.
//!
//! The policy is a deny list on top of the other layers: functions run as an unprivileged
//! uid with no capabilities, so most of these calls would fail anyway; the filter makes the
//! kernel code behind them unreachable, which is what protects against kernel bugs in them.
//! Everything else is allowed so that ordinary Node.js and Python programs run unchanged.
//!
//! Three calls are filtered on their arguments, each by its own table: `clone` (no namespace
//! flags), `socket` and `socketpair` (only the address families in [`SOCKET_FAMILIES`], and
//! netlink only with the protocols in [`NETLINK_PROTOCOLS`]), and `personality` (no flag
//! from [`PERSONA_REFUSED_FROM`] up). Families are an allow list: a family the kernel adds later is
//! refused without a change here. A refused family fails with EAFNOSUPPORT, what a kernel
//! built without it answers, so libraries that probe families (Python's `socket` module,
//! libuv, glibc's `getaddrinfo`) take their ordinary fallback instead of dying.

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
    (mount) => {
        libc::SYS_mount
    };
    (umount2) => {
        libc::SYS_umount2
    };
    (pivot_root) => {
        libc::SYS_pivot_root
    };
    (chroot) => {
        libc::SYS_chroot
    };
    (unshare) => {
        libc::SYS_unshare
    };
    (setns) => {
        libc::SYS_setns
    };
    (ptrace) => {
        libc::SYS_ptrace
    };
    (process_vm_readv) => {
        libc::SYS_process_vm_readv
    };
    (process_vm_writev) => {
        libc::SYS_process_vm_writev
    };
    (kexec_load) => {
        libc::SYS_kexec_load
    };
    (kexec_file_load) => {
        libc::SYS_kexec_file_load
    };
    (init_module) => {
        libc::SYS_init_module
    };
    (finit_module) => {
        libc::SYS_finit_module
    };
    (delete_module) => {
        libc::SYS_delete_module
    };
    (bpf) => {
        libc::SYS_bpf
    };
    (keyctl) => {
        libc::SYS_keyctl
    };
    (add_key) => {
        libc::SYS_add_key
    };
    (request_key) => {
        libc::SYS_request_key
    };
    (perf_event_open) => {
        libc::SYS_perf_event_open
    };
    (clock_settime) => {
        libc::SYS_clock_settime
    };
    (clock_adjtime) => {
        libc::SYS_clock_adjtime
    };
    (adjtimex) => {
        libc::SYS_adjtimex
    };
    (settimeofday) => {
        libc::SYS_settimeofday
    };
    (reboot) => {
        libc::SYS_reboot
    };
    (swapon) => {
        libc::SYS_swapon
    };
    (swapoff) => {
        libc::SYS_swapoff
    };
    (open_by_handle_at) => {
        libc::SYS_open_by_handle_at
    };
    (name_to_handle_at) => {
        libc::SYS_name_to_handle_at
    };
    (userfaultfd) => {
        libc::SYS_userfaultfd
    };
    (acct) => {
        libc::SYS_acct
    };
    (quotactl) => {
        libc::SYS_quotactl
    };
    (syslog) => {
        libc::SYS_syslog
    };
    (sethostname) => {
        libc::SYS_sethostname
    };
    (setdomainname) => {
        libc::SYS_setdomainname
    };
    (fsopen) => {
        libc::SYS_fsopen
    };
    (fsconfig) => {
        libc::SYS_fsconfig
    };
    (fsmount) => {
        libc::SYS_fsmount
    };
    (fspick) => {
        libc::SYS_fspick
    };
    (move_mount) => {
        libc::SYS_move_mount
    };
    (open_tree) => {
        libc::SYS_open_tree
    };
    (mount_setattr) => {
        libc::SYS_mount_setattr
    };
    (io_uring_setup) => {
        libc::SYS_io_uring_setup
    };
    (io_uring_enter) => {
        libc::SYS_io_uring_enter
    };
    (io_uring_register) => {
        libc::SYS_io_uring_register
    };
    (kcmp) => {
        libc::SYS_kcmp
    };
    (pidfd_getfd) => {
        libc::SYS_pidfd_getfd
    };
    (lookup_dcookie) => {
        libc::SYS_lookup_dcookie
    };
    (vhangup) => {
        libc::SYS_vhangup
    };
    (iopl) => {
        libc::SYS_iopl
    };
    (ioperm) => {
        libc::SYS_ioperm
    };
    (clone3) => {
        libc::SYS_clone3
    };
    (memfd_secret) => {
        libc::SYS_memfd_secret
    };
    (process_madvise) => {
        libc::SYS_process_madvise
    };
    (uselib) => {
        libc::SYS_uselib
    };
    (modify_ldt) => {
        libc::SYS_modify_ldt
    };
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
    memfd_secret => NotImplemented, "Secret memory is unmapped from the kernel's direct map (a rarely exercised mm path) and pins pages outside the memory accounting runtimes expect; ENOSYS is what a kernel without it answers.";
    process_madvise => Deny, "Acts on another process's memory through a pidfd.";
    uselib => NotImplemented, "The a.out library loader: obsolete, and old kernel code.";
    modify_ldt => Deny, "16-bit segments in a per-process LDT: only DOS/Wine emulation needs them, and the LDT code has had privilege-escalation bugs (CVE-2015-5157, CVE-2017-17053).";
};

/// One value of a filtered argument, with the reason it is listed.
#[derive(Debug, Clone, Copy)]
pub struct Named {
    pub name: &'static str,
    pub value: u32,
    pub reason: &'static str,
}

/// The address families `socket` and `socketpair` may ask for; every other fails with
/// EAFNOSUPPORT. Outside this list are AF_VSOCK (reaches the host or hypervisor past the
/// network namespace), AF_PACKET (raw frames), AF_BLUETOOTH, AF_ALG (the kernel crypto API),
/// AF_KEY (IPsec keys), AF_XDP, AF_RDS, AF_TIPC, AF_CAN… none of which a function needs, and
/// most of which have had kernel exploits of their own.
pub const SOCKET_FAMILIES: &[Named] = &[
    Named { name: "AF_UNIX", value: libc::AF_UNIX as u32, reason: "Local sockets (socketpair, the runtimes' own IPC, multiprocessing)." },
    Named { name: "AF_INET", value: libc::AF_INET as u32, reason: "TCP and UDP over IPv4 (the instance's network namespace decides where they reach)." },
    Named { name: "AF_INET6", value: libc::AF_INET6 as u32, reason: "TCP and UDP over IPv6." },
    Named {
        name: "AF_NETLINK",
        value: libc::AF_NETLINK as u32,
        reason: "Route and address queries (getaddrinfo's AI_ADDRCONFIG, if_nameindex, Node's os.networkInterfaces); protocols limited by NETLINK_PROTOCOLS.",
    },
];

/// The netlink protocols an `AF_NETLINK` socket may use; others fail with EPROTONOSUPPORT
/// (audit, uevents, sock_diag, netfilter and xfrm reach kernel code no function needs).
pub const NETLINK_PROTOCOLS: &[Named] =
    &[Named { name: "NETLINK_ROUTE", value: libc::NETLINK_ROUTE as u32, reason: "Interfaces, addresses and routes of the instance's own network namespace." }];

/// `personality` fails with EPERM for a persona with any flag at or above this one
/// (ADDR_NO_RANDOMIZE and every flag after it, [`PERSONA_FLAGS_REFUSED`]); the execution
/// domains below it (PER_LINUX, PER_LINUX32, UNAME26…) stay allowed. One bound because every
/// tier can express it in one rule. It also refuses the query `personality(0xffffffff)`, which
/// the OCI rule language cannot tell apart from a persona with every flag set; no runtime we
/// ship asks.
pub const PERSONA_REFUSED_FROM: u32 = 0x0004_0000;

/// The persona flags [`PERSONA_REFUSED_FROM`] refuses that matter, and why.
pub const PERSONA_FLAGS_REFUSED: &[Named] = &[
    Named { name: "ADDR_NO_RANDOMIZE", value: 0x0004_0000, reason: "Turns ASLR off for what the process execs next." },
    Named { name: "MMAP_PAGE_ZERO", value: 0x0010_0000, reason: "Maps page zero at exec: the classic way to exploit a kernel NULL dereference." },
    Named { name: "ADDR_COMPAT_LAYOUT", value: 0x0020_0000, reason: "The legacy, predictable mmap layout." },
    Named { name: "READ_IMPLIES_EXEC", value: 0x0040_0000, reason: "Makes every readable mapping executable." },
    Named { name: "ADDR_LIMIT_32BIT", value: 0x0080_0000, reason: "Old address-space limits: old, little-exercised kernel paths." },
    Named { name: "ADDR_LIMIT_3GB", value: 0x0800_0000, reason: "As ADDR_LIMIT_32BIT." },
];

/// A family above every one this kernel's headers know (AF_MAX): the OCI rendering refuses
/// `domain >= FAMILY_LIMIT` in one rule and the families below it one by one.
pub const FAMILY_LIMIT: u32 = 46;

/// Namespace flags `clone` may not carry (they would create namespaces, like unshare).
const CLONE_NAMESPACE_FLAGS: u32 =
    (libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWCGROUP) as u32;

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

/// Appends `if nr == nr { body }` (the body must end in a return on every path, so that
/// the accumulator still holds the syscall number for what follows when it is skipped).
fn guarded(p: &mut Vec<libc::sock_filter>, nr: libc::c_long, body: &[libc::sock_filter]) {
    p.push(jump(JEQ, nr as u32, 0, body.len() as u8));
    p.extend_from_slice(body);
}

const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JSET: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

/// Offset of the low 32 bits of argument `i` (little-endian): the kernel reads the `int`
/// arguments filtered here (a family, a protocol, a persona) from those bits only.
const fn arg(i: u32) -> u32 {
    OFF_ARG0 + 8 * i
}

/// `ld arg; if A == allowed[0] || … { allow } else { return errno }`.
fn allow_values(arg_off: u32, allowed: &[Named], refused: i32) -> Vec<libc::sock_filter> {
    let n = allowed.len();
    let mut b = vec![stmt(LD_W_ABS, arg_off)];
    for (i, a) in allowed.iter().enumerate() {
        // Jump over the remaining comparisons and the refusal, onto the allow.
        b.push(jump(JEQ, a.value, (n - i) as u8, 0));
    }
    b.push(stmt(RET, errno(refused)));
    b.push(stmt(RET, RET_ALLOW));
    b
}

/// The body for `socket` and `socketpair`: families from [`SOCKET_FAMILIES`]; netlink only
/// with a protocol from [`NETLINK_PROTOCOLS`].
fn socket_body() -> Vec<libc::sock_filter> {
    let mut b = vec![stmt(LD_W_ABS, arg(0))];
    for f in SOCKET_FAMILIES {
        let then = if f.value == libc::AF_NETLINK as u32 { allow_values(arg(2), NETLINK_PROTOCOLS, libc::EPROTONOSUPPORT) } else { vec![stmt(RET, RET_ALLOW)] };
        // Not this family: skip its block (the accumulator still holds the family).
        b.push(jump(JEQ, f.value, 0, then.len() as u8));
        b.extend(then);
    }
    b.push(stmt(RET, errno(libc::EAFNOSUPPORT)));
    b
}

/// Compiles [`POLICY`] and the argument tables to a BPF program.
pub fn program() -> Vec<libc::sock_filter> {
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
    guarded(&mut p, libc::SYS_clone, &[stmt(LD_W_ABS, arg(0)), jump(JSET, CLONE_NAMESPACE_FLAGS, 0, 1), stmt(RET, errno(libc::EPERM)), stmt(RET, RET_ALLOW)]);
    let socket = socket_body();
    guarded(&mut p, libc::SYS_socket, &socket);
    guarded(&mut p, libc::SYS_socketpair, &socket);
    guarded(&mut p, libc::SYS_personality, &[stmt(LD_W_ABS, arg(0)), jump(JGE, PERSONA_REFUSED_FROM, 0, 1), stmt(RET, errno(libc::EPERM)), stmt(RET, RET_ALLOW)]);
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
            if rc == -1 && errno() == libc::EPERM {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0, "mount must fail with EPERM");
        let code = in_filtered_child(|| {
            // SAFETY: unshare takes flags only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
            if rc == -1 && errno() == libc::EPERM {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0, "unshare must fail with EPERM");
        let code = in_filtered_child(|| {
            // SAFETY: raw clone with a namespace flag and no stack: refused before it runs.
            let rc = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_NEWNET | libc::SIGCHLD, 0, 0, 0, 0) };
            if rc == -1 && errno() == libc::EPERM {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0, "clone(CLONE_NEWNET) must fail with EPERM");
        let code = in_filtered_child(|| {
            // SAFETY: clone3 with a null argument: refused before it is read.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
            if rc == -1 && errno() == libc::ENOSYS {
                0
            } else {
                1
            }
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
                if libc::WEXITSTATUS(st) == 7 && libc::getpid() > 0 {
                    0
                } else {
                    1
                }
            }
        });
        assert_eq!(code, 0, "fork must keep working");
    }

    #[test]
    fn every_rule_has_a_reason() {
        for r in POLICY {
            assert!(!r.reason.is_empty(), "{}", r.name);
        }
        for a in SOCKET_FAMILIES.iter().chain(NETLINK_PROTOCOLS).chain(PERSONA_FLAGS_REFUSED) {
            assert!(!a.reason.is_empty(), "{}", a.name);
        }
        assert!(SOCKET_FAMILIES.iter().all(|f| f.value < FAMILY_LIMIT));
    }

    #[test]
    fn every_refused_persona_flag_is_at_or_above_the_bound() {
        assert!(PERSONA_FLAGS_REFUSED.iter().all(|f| f.value >= PERSONA_REFUSED_FROM));
    }

    /// `socket(domain, type, protocol)` as a raw call (the full 64-bit domain register);
    /// returns 0 when it succeeded (and closes it), else the errno.
    fn socket_errno(domain: u64, ty: i32, protocol: i32) -> i32 {
        // SAFETY: socket takes integers only; the fd, if any, is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_socket, domain, ty, protocol) };
        if fd < 0 {
            return errno();
        }
        // SAFETY: `fd` was just returned to us.
        unsafe { libc::close(fd as i32) };
        0
    }

    /// Regression: AF_VSOCK (and every other family) passed the network namespace; we run
    /// as root here, so without the filter AF_PACKET and the netlink audit socket would open.
    #[test]
    fn socket_families_outside_the_list_fail_with_eafnosupport() {
        let code = in_filtered_child(|| {
            let refused: [(u64, i32, i32); 6] = [
                (libc::AF_VSOCK as u64, libc::SOCK_STREAM, 0),
                (libc::AF_PACKET as u64, libc::SOCK_RAW, 0),
                (libc::AF_ALG as u64, libc::SOCK_SEQPACKET, 0),
                (libc::AF_KEY as u64, libc::SOCK_RAW, 2),
                (libc::AF_BLUETOOTH as u64, libc::SOCK_STREAM, 0),
                // The kernel reads an int: high bits must not smuggle a family past the filter.
                ((1 << 32) | libc::AF_VSOCK as u64, libc::SOCK_STREAM, 0),
            ];
            for (i, (domain, ty, proto)) in refused.into_iter().enumerate() {
                if socket_errno(domain, ty, proto) != libc::EAFNOSUPPORT {
                    return 10 + i as i32;
                }
            }
            let mut pair = [0; 2];
            // SAFETY: `pair` has room for the two fds.
            let rc = unsafe { libc::socketpair(libc::AF_VSOCK, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
            if rc != -1 || errno() != libc::EAFNOSUPPORT {
                return 20;
            }
            // Netlink: routes yes, audit and sock_diag no.
            if socket_errno(libc::AF_NETLINK as u64, libc::SOCK_RAW, libc::NETLINK_AUDIT) != libc::EPROTONOSUPPORT {
                return 30;
            }
            if socket_errno(libc::AF_NETLINK as u64, libc::SOCK_RAW, libc::NETLINK_SOCK_DIAG) != libc::EPROTONOSUPPORT {
                return 31;
            }
            0
        });
        assert_eq!(code, 0, "a refused socket family was not refused with EAFNOSUPPORT (probe {code})");
        let code = in_filtered_child(|| {
            let allowed = [
                (libc::AF_UNIX, libc::SOCK_STREAM, 0),
                (libc::AF_INET, libc::SOCK_STREAM, 0),
                (libc::AF_INET6, libc::SOCK_DGRAM, 0),
                (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            ];
            for (i, (domain, ty, proto)) in allowed.into_iter().enumerate() {
                // IPv6 may be off on a host: EAFNOSUPPORT from the kernel then, which this
                // test cannot tell from the filter's; every host we run on has it.
                if socket_errno(domain as u64, ty, proto) != 0 {
                    return 10 + i as i32;
                }
            }
            let mut pair = [0; 2];
            // SAFETY: `pair` has room for the two fds, closed below.
            unsafe {
                if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
                    return 20;
                }
                libc::close(pair[0]);
                libc::close(pair[1]);
            }
            0
        });
        assert_eq!(code, 0, "an allowed socket family was refused (probe {code})");
    }

    #[test]
    fn modify_ldt_memfd_secret_and_risky_personas_are_refused() {
        let code = in_filtered_child(|| {
            // SAFETY: modify_ldt(0 = read, null, 0) and memfd_secret(0): refused before they run.
            unsafe {
                if libc::syscall(libc::SYS_modify_ldt, 0, 0, 0) != -1 || errno() != libc::EPERM {
                    return 1;
                }
                if libc::syscall(libc::SYS_memfd_secret, 0) != -1 || errno() != libc::ENOSYS {
                    return 2;
                }
                // ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC: EPERM; the default persona: fine.
                if libc::personality(0x0040000) != -1 || errno() != libc::EPERM {
                    return 3;
                }
                if libc::personality(0x0400000) != -1 || errno() != libc::EPERM {
                    return 4;
                }
                if libc::personality(0) == -1 || libc::personality(0x0008) == -1 || libc::personality(0) == -1 {
                    return 5;
                }
            }
            0
        });
        assert_eq!(code, 0, "probe {code} was not refused as the policy says");
    }
}
