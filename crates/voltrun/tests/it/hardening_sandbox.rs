//! Issue 12, the sandbox's share (findings 6 and part of 12): socket families past the
//! network namespace, `/dev/shm`, host paths in pid 1's `/proc` files, and kernel
//! attack-surface calls (modify_ldt, memfd_secret…). Every test is a real Python (or Node)
//! function probing from inside, in whichever tier `VOLTRUN_TEST_SANDBOX` names.
//!
//! The tests sit in a `hostile` module so that the development `process` tier, which isolates
//! nothing and is run with `--skip hostile::`, skips them as it skips the hostile suite.

mod hostile {
    use serde_json::{json, Value};

    use crate::harness::*;

    const EPERM: i64 = 1;
    const ENOSYS: i64 = 38;
    const EPROTONOSUPPORT: i64 = 93;
    const EAFNOSUPPORT: i64 = 97;

    /// A Python function's address space is capped at its memory plus 192 MiB, soft and hard,
    /// in every tier. The container tier sets it from a shell just before the exec: set by
    /// `runc init` (a Go process) it made thread starts in runc fail now and then under load
    /// (a build failed with "runtime/cgo: pthread_create failed" in CI).
    #[test]
    fn a_python_functions_address_space_cap_is_its_memory_and_it_cannot_raise_it() {
        let s = Server::start();
        let c = s.user();
        let code = "import resource\ndef handler(e, c):\n    soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n    try:\n        resource.setrlimit(resource.RLIMIT_AS, (hard + 1, hard + 1))\n        raised = True\n    except (ValueError, OSError):\n        raised = False\n    return [soft, hard, raised]\n";
        let o = run(&c, "aspace", "python", code, json!({"memory": 256}), json!({}));
        let cap = (256u64 << 20) + (192 << 20);
        assert_eq!(o, json!([cap, cap, false]), "{o}");
    }

    fn run(c: &Client, name: &str, runtime: &str, code: &str, extra: Value, event: Value) -> Value {
        c.create_function(name, runtime, code, extra);
        let e = c.invoke(name, &event);
        assert_eq!(e["status"], "success", "{name}: {e}");
        e["output"].clone()
    }

    /// gVisor applies the OCI seccomp section in its Sentry but answers every refusal with
    /// EPERM, whatever errno the section names (see oci.rs): the refusal holds, its errno
    /// differs there.
    fn refused_with(o: &Value, errno: i64) -> bool {
        o[0] == -1 && (o[1] == errno || (sandbox() == "gvisor" && o[1] == EPERM))
    }

    const FAMILIES: &str = r#"
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)

def open_errno(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return [0, 0]
    except OSError as err:
        return [-1, err.errno]

def handler(event, context):
    r = {}
    for name, family, kind, proto in [
        ('vsock', 40, socket.SOCK_STREAM, 0),
        ('vsock_dgram', 40, socket.SOCK_DGRAM, 0),
        ('packet', 17, socket.SOCK_RAW, 0),
        ('packet_dgram', 17, socket.SOCK_DGRAM, 0),
        ('bluetooth', 31, socket.SOCK_STREAM, 0),
        ('alg', 38, socket.SOCK_SEQPACKET, 0),
        ('key', 15, socket.SOCK_RAW, 2),
        ('xdp', 44, socket.SOCK_RAW, 0),
        ('tipc', 30, socket.SOCK_RDM, 0),
        ('can', 29, socket.SOCK_RAW, 1),
    ]:
        r[name] = open_errno(family, kind, proto)
    # A raw socket() whose 64-bit domain register has high bits set: the kernel reads an int.
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(41), ctypes.c_ulong((1 << 32) | 40), ctypes.c_long(1), ctypes.c_long(0))
    r['vsock_high_bits'] = [-1 if fd < 0 else 0, ctypes.get_errno() if fd < 0 else 0]
    pair = (ctypes.c_int * 2)()
    rc = libc.socketpair(40, 1, 0, pair)
    r['vsock_pair'] = [rc, ctypes.get_errno() if rc < 0 else 0]
    r['netlink_audit'] = open_errno(16, socket.SOCK_RAW, 9)
    r['netlink_sock_diag'] = open_errno(16, socket.SOCK_RAW, 4)
    return r
"#;

    /// Regression: AF_VSOCK (and every other address family) passed the network namespace;
    /// a function bound vsock ports on the host's side.
    #[test]
    fn vsock_and_other_socket_families_are_refused_past_the_network_namespace() {
        let s = Server::start();
        let c = s.user();
        let o = run(&c, "families", "python", FAMILIES, json!({}), json!({}));
        for k in ["vsock", "vsock_dgram", "packet", "packet_dgram", "bluetooth", "alg", "key", "xdp", "tipc", "can", "vsock_high_bits", "vsock_pair"] {
            assert!(refused_with(&o[k], EAFNOSUPPORT), "{k} must fail with EAFNOSUPPORT: {} (all: {o})", o[k]);
        }
        for k in ["netlink_audit", "netlink_sock_diag"] {
            assert!(refused_with(&o[k], EPROTONOSUPPORT), "{k} must fail with EPROTONOSUPPORT: {} (all: {o})", o[k]);
        }
    }

    const USEFUL_SOCKETS: &str = r#"
import socket, multiprocessing

def echo(family, addr):
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind(addr)
    srv.listen(1)
    cli = socket.socket(family, socket.SOCK_STREAM)
    cli.settimeout(5)
    cli.connect(srv.getsockname())
    conn, _ = srv.accept()
    conn.sendall(b'ping')
    got = cli.recv(4)
    for s in (conn, cli, srv):
        s.close()
    return got.decode()

def handler(event, context):
    r = {}
    r['inet'] = echo(socket.AF_INET, ('127.0.0.1', 0))
    r['inet6'] = echo(socket.AF_INET6, ('::1', 0))
    r['unix'] = echo(socket.AF_UNIX, '/tmp/echo.sock')
    a, b = socket.socketpair()
    a.sendall(b'pair')
    r['pair'] = b.recv(4).decode()
    a.close(); b.close()
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    nl.close()
    r['interfaces'] = sorted(name for _, name in socket.if_nameindex())
    r['resolve'] = sorted({ai[4][0] for ai in socket.getaddrinfo('localhost', 80, proto=socket.IPPROTO_TCP)})
    # POSIX semaphores live in /dev/shm: multiprocessing's locks need it.
    lock = multiprocessing.Lock()
    with lock:
        r['lock'] = 'held'
    return r
"#;

    const NODE_SOCKETS: &str = r#"
const net = require('net'), os = require('os');
function echo(listenArgs, connectArgs) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((c) => { c.end('ping'); });
    srv.on('error', reject);
    srv.listen(...listenArgs, () => {
      const addr = connectArgs || [srv.address().port, '127.0.0.1'];
      const cli = net.connect(...addr);
      let got = '';
      cli.on('data', (d) => { got += d; });
      cli.on('error', reject);
      cli.on('end', () => { srv.close(); resolve(got); });
    });
  });
}
exports.handler = async () => ({
  inet: await echo([0, '127.0.0.1']),
  unix: await echo(['/tmp/echo.sock'], ['/tmp/echo.sock']),
  // libuv reads the interfaces over netlink (NETLINK_ROUTE).
  interfaces: Object.keys(os.networkInterfaces()).sort(),
});
"#;

    /// The families a function needs keep working: TCP over IPv4 and IPv6 loopback, Unix
    /// sockets and socketpair, netlink route queries (interfaces, getaddrinfo), and
    /// multiprocessing's semaphores in /dev/shm; in Node too.
    #[test]
    fn unix_inet_inet6_and_netlink_route_sockets_still_work() {
        let s = Server::start();
        let c = s.user();
        let o = run(&c, "sockets", "python", USEFUL_SOCKETS, json!({}), json!({}));
        for k in ["inet", "inet6", "unix"] {
            assert_eq!(o[k], "ping", "{k}: {o}");
        }
        assert_eq!(o["pair"], "pair", "{o}");
        assert!(o["interfaces"].as_array().unwrap().iter().any(|i| i == "lo"), "the loopback interface over netlink: {o}");
        assert!(o["resolve"].as_array().unwrap().iter().any(|a| a == "127.0.0.1"), "{o}");
        assert_eq!(o["lock"], "held", "{o}");
        let o = run(&c, "sockets-node", "node", NODE_SOCKETS, json!({}), json!({}));
        assert_eq!((&o["inet"], &o["unix"]), (&json!("ping"), &json!("ping")), "{o}");
        assert!(o["interfaces"].as_array().unwrap().iter().any(|i| i == "lo"), "{o}");
    }

    const FILL: &str = r#"
import os

def fill(path):
    n = 0
    try:
        with open(path, 'wb') as f:
            while n < 1024:
                f.write(b'x' * (1 << 20))
                f.flush()
                n += 1
    except OSError as err:
        return [n, err.errno]
    return [n, 0]

def handler(event, context):
    shm = fill('/dev/shm/fill')
    tmp = fill('/tmp/fill')
    st = os.statvfs('/dev/shm')
    return {'shm': shm, 'tmp': tmp, 'shm_size_mib': st.f_blocks * st.f_frsize / (1 << 20)}
"#;

    /// Regression: /dev/shm was a 16 MiB tmpfs on top of the /tmp budget (RAM-backed storage
    /// nobody had sized). It is now carved out of that budget: at most 8 MiB, and /tmp and
    /// /dev/shm together hold no more than the instance's tmp allowance (half its memory).
    #[test]
    fn dev_shm_is_a_small_tmpfs_inside_the_tmp_budget() {
        let s = Server::start();
        let c = s.user();
        // 128 MB of memory: a 64 MiB tmp allowance, 8 MiB of it /dev/shm.
        let o = run(&c, "shmfill", "python", FILL, json!({"memory": 128}), json!({}));
        assert_eq!(o["shm"][1], 28, "/dev/shm fills up with ENOSPC: {o}");
        assert_eq!(o["tmp"][1], 28, "/tmp fills up with ENOSPC: {o}");
        let (shm, tmp) = (o["shm"][0].as_i64().unwrap(), o["tmp"][0].as_i64().unwrap());
        assert!(shm <= 8, "/dev/shm holds at most 8 MiB: {o}");
        assert!(shm + tmp <= 64, "/tmp and /dev/shm together stay within the 64 MiB tmp allowance: {o}");
        assert!(shm >= 1 && tmp >= 32, "both still usable: {o}");
    }

    const PROC_FILES: &str = r#"
import os

def read(path):
    try:
        with open(path, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError as err:
        return 'denied %d' % err.errno

def handler(event, context):
    r = {}
    for p in ['/proc/1/cmdline', '/proc/1/environ', '/proc/1/comm', '/proc/self/cmdline', '/proc/self/environ']:
        r[p] = read(p)
    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    r['all_cmdlines'] = {str(p): read('/proc/%d/cmdline' % p) for p in pids}
    return r
"#;

    /// Regression: the namespace tier's pid 1 is the sandbox init (this binary re-executed),
    /// and its argv carried host paths (the data dir, the code dir, cgroup files) for any
    /// function to read in /proc/1/cmdline.
    #[test]
    fn pid_1_cmdline_shows_no_host_path() {
        let s = Server::start();
        let c = s.user();
        let o = run(&c, "procfiles", "python", PROC_FILES, json!({}), json!({}));
        let data_dir = s.data_dir.display().to_string();
        let tmp = std::env::temp_dir().display().to_string();
        let forbidden = [data_dir.as_str(), "voltrun-it-", "/sys/fs/cgroup", "/work", "root=", "cg="];
        let mut texts: Vec<(String, String)> =
            o.as_object().unwrap().iter().filter(|(k, _)| k.starts_with('/')).map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
        texts.extend(o["all_cmdlines"].as_object().unwrap().iter().map(|(k, v)| (format!("/proc/{k}/cmdline"), v.as_str().unwrap().to_string())));
        for (path, text) in &texts {
            for f in forbidden {
                assert!(!text.contains(f), "{path} shows the host's {f:?}: {text:?}");
            }
            if tmp != "/tmp" {
                assert!(!text.contains(&tmp), "{path} shows the host's temp dir: {text:?}");
            }
        }
        assert!(!o["/proc/1/cmdline"].as_str().unwrap().trim().is_empty(), "{o}");
    }

    const ATTACK_SURFACE: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sys(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == 0 and nr == 56:
        os._exit(0)  # a clone that was not refused: the child leaves at once
    return [r, ctypes.get_errno()]

def handler(event, context):
    return {name: sys(*call) for name, call in event['calls'].items()}
"#;

    /// Regression: modify_ldt and memfd_secret were allowed (with the other calls below kept
    /// refused): each reaches kernel code no function needs.
    #[test]
    fn modify_ldt_memfd_secret_and_other_kernel_attack_surface_calls_are_refused() {
        let s = Server::start();
        let c = s.user();
        // x86_64 numbers; each call with harmless arguments (a read, null pointers).
        let calls: &[(&str, Value, i64)] = &[
            ("modify_ldt", json!([154, 0, 0, 0]), EPERM),
            ("memfd_secret", json!([447, 0]), ENOSYS),
            ("userfaultfd", json!([323, 0]), EPERM),
            ("perf_event_open", json!([298, 0, 0, -1, -1, 0]), EPERM),
            ("bpf", json!([321, 0, 0, 0]), EPERM),
            ("kexec_load", json!([246, 0, 0, 0, 0]), EPERM),
            ("keyctl", json!([250, 0, 0]), EPERM),
            ("add_key", json!([248, 0, 0, 0, 0, 0]), EPERM),
            ("request_key", json!([249, 0, 0, 0, 0]), EPERM),
            ("io_uring_setup", json!([425, 1, 0]), EPERM),
            ("ptrace", json!([101, 16, 1, 0, 0]), EPERM),
            ("process_vm_readv", json!([310, 1, 0, 0, 0, 0, 0]), EPERM),
            ("open_by_handle_at", json!([304, -100, 0, 0]), EPERM),
            ("name_to_handle_at", json!([303, -100, 0, 0, 0, 0]), EPERM),
            ("pidfd_getfd", json!([438, 0, 0, 0]), EPERM),
            ("mount", json!([165, 0, 0, 0, 0, 0]), EPERM),
            ("unshare", json!([272, 0x1000_0000]), EPERM),
            ("setns", json!([308, 0, 0]), EPERM),
            ("clone_newuser", json!([56, 0x1000_0000 | 17, 0, 0, 0, 0]), EPERM),
            ("personality_no_aslr", json!([135, 0x0040000]), EPERM),
            ("personality_read_implies_exec", json!([135, 0x0400000]), EPERM),
        ];
        let event = json!({"calls": calls.iter().map(|(n, a, _)| (n.to_string(), a.clone())).collect::<serde_json::Map<_, _>>()});
        let o = run(&c, "surface", "python", ATTACK_SURFACE, json!({}), event);
        for (name, _, errno) in calls {
            // gVisor implements neither memfd_secret nor modify_ldt: ENOSYS from the Sentry
            // is as good a refusal as ours.
            let ok = refused_with(&o[name], *errno) || (sandbox() == "gvisor" && o[name] == json!([-1, ENOSYS]));
            assert!(ok, "{name} must fail with errno {errno}: {} (all: {o})", o[name]);
        }
    }
}
