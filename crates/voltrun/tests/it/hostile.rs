//! The hostile-function suite: each attack runs through the HTTP API against the real server
//! in the namespace tier, and must be contained while a bystander function keeps answering
//! and the server stays healthy. Run in the tiers that isolate (namespace, and later gvisor
//! and container); the development `process` tier is excluded by the test script on purpose.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::{json, Value};

use crate::harness::*;

/// Invokes a trivial function in a loop until dropped; counts answers and failures.
struct Bystander {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    bad: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Bystander {
    fn start(s: &Server) -> Bystander {
        let c = s.user();
        c.create_function("bystander", "node", "let n = 0; exports.handler = async (e) => ({ n: ++n, echo: e.x });", json!({}));
        let (stop, ok, bad) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (st, o, b) = (stop.clone(), ok.clone(), bad.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !st.load(Ordering::Relaxed) {
                i += 1;
                let (status, e) = c.post("/api/functions/bystander/execute", &json!({"x": i}));
                if status == 200 && e["status"] == "success" && e["output"]["echo"] == i {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("bystander failed: {status} {e}");
                    b.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Bystander { stop, ok, bad, thread: Some(thread) }
    }

    /// Stops and asserts every bystander run succeeded (and that there were some).
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let (ok, bad) = (self.ok.load(Ordering::Relaxed), self.bad.load(Ordering::Relaxed));
        assert!(ok > 0, "the bystander never ran");
        assert_eq!(bad, 0, "{bad} bystander runs failed during the attack ({ok} succeeded)");
    }
}

/// Runs `code` (Python unless it looks like JS) as a new function and returns the record.
fn attack(c: &Client, name: &str, code: &str, extra: Value, event: Value) -> Value {
    let rt = if code.contains("exports.handler") { "node" } else { "python" };
    c.create_function(name, rt, code, extra);
    let (status, e) = c.post(&format!("/api/functions/{name}/execute"), &event);
    assert_eq!(status, 200, "{name}: {e}");
    e
}

fn assert_healthy(s: &Server) {
    let (status, h) = s.anon().get("/health");
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")), "{h}");
}

const PY_SYSCALLS: &str = r#"
import ctypes, ctypes.util, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    r = getattr(libc, name)(*args)
    return [r, ctypes.get_errno()]
"#;

#[test]
fn resource_attacks_are_contained() {
    let s = Server::start();
    let by = Bystander::start(&s);
    let c = s.user();

    // Fork bomb: the pids limit stops it inside; the run ends (Timeout or an error), the host lives.
    let e = attack(
        &c,
        "forkbomb",
        "import os\ndef handler(e, c):\n    n = 0\n    while True:\n        try:\n            os.fork()\n            n += 1\n        except OSError:\n            pass\n",
        json!({"timeout": 3}),
        json!({}),
    );
    assert_eq!(e["status"], "failed", "{e}");
    // Memory bomb.
    let e = attack(&c, "membomb", "def handler(e, c):\n    chunks = []\n    while True:\n        chunks.append(bytearray(16 << 20))\n", json!({"memory": 128}), json!({}));
    assert_eq!(e["error"]["type"], "OutOfMemory", "{e}");
    let e = attack(&c, "membomb-n", "exports.handler = async () => { const a = []; while (true) a.push(Buffer.alloc(16 << 20, 1)); };", json!({"memory": 128}), json!({}));
    assert_eq!(e["error"]["type"], "OutOfMemory", "{e}");
    // CPU loop and sleep: Timeout.
    let e = attack(&c, "spin", "def handler(e, c):\n    while True:\n        pass\n", json!({"timeout": 2}), json!({}));
    assert_eq!(e["error"]["type"], "Timeout", "{e}");
    let e = attack(&c, "nap", "import time\ndef handler(e, c):\n    time.sleep(60)\n", json!({"timeout": 1}), json!({}));
    assert_eq!(e["error"]["type"], "Timeout", "{e}");
    // /tmp fill: the private /tmp is size-limited (ENOSPC), the host disk untouched.
    let e = attack(
        &c,
        "tmpfill",
        "import errno\ndef handler(e, c):\n    n = 0\n    try:\n        with open('/tmp/fill', 'wb') as f:\n            while True:\n                f.write(b'x' * (1 << 20))\n                f.flush()\n                n += 1\n    except OSError as err:\n        return {'mib': n, 'errno': err.errno}\n",
        json!({"memory": 256}),
        json!({}),
    );
    assert_eq!(e["output"]["errno"], 28, "ENOSPC expected: {e}");
    assert!(e["output"]["mib"].as_i64().unwrap() <= 128, "{e}");
    // Output flood: capped at 256 KiB, the run times out, nothing else notices.
    let e = attack(&c, "flood", "def handler(e, c):\n    while True:\n        print('A' * 1000)\n", json!({"timeout": 2}), json!({}));
    assert_eq!((e["error"]["type"].as_str(), e["logs_truncated"].as_bool()), (Some("Timeout"), Some(true)), "{}", e["error"]);
    assert_eq!(e["logs"].as_str().unwrap().len(), 256 * 1024);
    // File descriptors: EMFILE at the instance's own limit.
    let e = attack(&c, "fds", "def handler(e, c):\n    fs = []\n    try:\n        while True:\n            fs.append(open('/dev/null'))\n    except OSError as err:\n        return {'open': len(fs), 'errno': err.errno}\n", json!({}), json!({}));
    assert_eq!(e["output"]["errno"], 24, "EMFILE expected: {e}");
    assert!(e["output"]["open"].as_i64().unwrap() < 1024, "{e}");
    // Threads/processes beyond the pids limit fail inside without hurting anyone.
    let e = attack(&c, "threads", "import threading, time\ndef handler(e, c):\n    n = 0\n    try:\n        while True:\n            threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n            n += 1\n    except RuntimeError:\n        return n\n", json!({}), json!({}));
    assert!(e["output"].as_i64().is_some_and(|n| n < 128), "{e}");

    assert_healthy(&s);
    by.finish();
}

/// In the OCI tiers the runtime is the container's pid 1 (runc starts no init of ours); in
/// the namespace tier pid 1 is our init and the runtime pid 2. A tier difference, not a leak.
fn runtime_is_pid_1() -> bool {
    matches!(crate::harness::sandbox().as_str(), "container" | "gvisor")
}

/// What `/proc` lists in an instance with nothing left behind.
fn pid_list_of_a_fresh_instance() -> serde_json::Value {
    if runtime_is_pid_1() {
        json!([1])
    } else {
        json!([1, 2])
    }
}

#[test]
fn a_daemon_left_behind_is_gone_before_the_next_run() {
    let s = Server::start();
    let c = s.user();
    let code = "import os, time\ndef handler(e, c):\n    if e.get('spawn'):\n        if os.fork() == 0:\n            os.setsid()\n            if os.fork() == 0:\n                while True:\n                    print('DAEMON', flush=True)\n                    time.sleep(0.05)\n            os._exit(0)\n        time.sleep(0.2)\n    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n";
    c.create_function("daemon", "python", code, json!({}));
    let first = c.invoke("daemon", &json!({"spawn": true}));
    assert!(first["output"].as_array().unwrap().len() >= 3, "the daemon should exist during the run: {first}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = c.invoke("daemon", &json!({}));
    assert_eq!(second["output"], pid_list_of_a_fresh_instance(), "only pid 1 and the runtime remain: {second}");
    assert!(!second["logs"].as_str().unwrap().contains("DAEMON"), "{second}");
}

const SNOOP: &str = r#"
import socket, subprocess

def attempt(f):
    try:
        return ['ok', f()]
    except Exception as err:
        return ['denied', type(err).__name__, getattr(err, 'errno', None)]

def connect(host, port):
    s = socket.socket()
    s.settimeout(2)
    s.connect((host, port))
    return 'connected'

def handler(event, context):
    r = {}
    r['shadow'] = attempt(lambda: open('/etc/shadow').read())
    r['data_dir'] = attempt(lambda: os.listdir(event['data_dir']))
    r['environ1'] = attempt(lambda: open('/proc/1/environ').read())
    r['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    r['write_task'] = attempt(lambda: open('/var/task/x', 'w').write('x'))
    r['write_usr'] = attempt(lambda: open('/usr/x', 'w').write('x'))
    r['write_root'] = attempt(lambda: open('/x', 'w').write('x'))
    r['mount'] = call('mount', b'none', b'/tmp', b'tmpfs', 0, None)
    r['unshare'] = call('unshare', 0x10000000)
    r['ptrace'] = call('ptrace', 16, 1, None, None)
    r['setuid0'] = call('setuid', 0)
    r['no_new_privs'] = call('prctl', 39, 0, 0, 0, 0)
    r['su'] = attempt(lambda: subprocess.run(['/usr/bin/su', '-c', 'id -u'], capture_output=True, timeout=5).returncode)
    r['raw'] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    r['api'] = attempt(lambda: connect('127.0.0.1', event['port']))
    r['public'] = attempt(lambda: connect('192.0.2.1', 80))
    r['status'] = {l.split(':')[0]: l.split(':', 1)[1].strip() for l in open('/proc/self/status') if ':' in l}
    r['uid'] = os.getuid()
    r['env_keys'] = sorted(os.environ)
    r['hostname'] = socket.gethostname()
    return r
"#;

#[test]
fn the_host_is_out_of_sight_and_out_of_reach() {
    let s = Server::start();
    let by = Bystander::start(&s);
    let c = s.user();
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let code = format!("{PY_SYSCALLS}{SNOOP}");
    let e = attack(&c, "snoop", &code, json!({}), json!({"data_dir": s.data_dir, "port": port}));
    assert_eq!(e["status"], "success", "{e}");
    let o = &e["output"];
    let denied = |k: &str| assert_eq!(o[k][0], "denied", "{k}: {}", o[k]);
    for k in ["shadow", "data_dir", "write_task", "write_usr", "write_root", "raw", "api", "public"] {
        denied(k);
    }
    if runtime_is_pid_1() {
        // Pid 1 is the function's own runtime: its environ is the function's own environment
        // (checked for server variables below), not a host-side process's.
        let env1 = o["environ1"][1].as_str().unwrap_or_default();
        assert!(!env1.contains("CARGO") && !env1.contains("VOLTRUN_LOG"), "environ1: {}", o["environ1"]);
    } else {
        denied("environ1");
    }
    assert_eq!(o["shadow"][1], "FileNotFoundError", "/etc/shadow does not exist inside");
    assert_eq!(o["data_dir"][1], "FileNotFoundError", "the server's data dir does not exist inside");
    assert_eq!(o["api"][1], "ConnectionRefusedError", "the API port is not reachable: {}", o["api"]);
    // No route at all: ENETUNREACH from the host kernel; gVisor's netstack (loopback only)
    // answers EHOSTUNREACH.
    let unreachable = if sandbox() == "gvisor" { 113 } else { 101 };
    assert_eq!(o["public"][2], unreachable, "there is no network: {}", o["public"]);
    assert_eq!(o["pids"], pid_list_of_a_fresh_instance(), "no host process is visible");
    for k in ["mount", "unshare", "ptrace"] {
        assert_eq!(o[k], json!([-1, 1]), "{k} must fail with EPERM: {}", o[k]);
    }
    assert_eq!(o["setuid0"][0], -1);
    assert!(o["su"][0] == "denied" || o["su"][1] != 0, "a setuid binary must not grant root: {}", o["su"]);
    assert_ne!(o["uid"], 0);
    let st = &o["status"];
    assert_eq!(st["CapEff"], "0000000000000000");
    assert_eq!(st["CapPrm"], "0000000000000000");
    assert_eq!(st["CapBnd"], "0000000000000000");
    assert_eq!(o["no_new_privs"][0], 1, "PR_GET_NO_NEW_PRIVS: {}", o["no_new_privs"]);
    if sandbox() != "gvisor" {
        // gVisor's /proc/self/status has no NoNewPrivs line (prctl above answers).
        assert_eq!(st["NoNewPrivs"], "1");
    }
    assert_eq!(st["Seccomp"], "2");
    assert_eq!(o["hostname"], "voltrun");
    let keys: Vec<&str> = o["env_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(!keys.iter().any(|k| k.starts_with("CARGO") || *k == "VOLTRUN_LOG" || *k == "USER"), "server environment leaked: {keys:?}");
    assert_healthy(&s);
    by.finish();
}

#[test]
fn functions_cannot_see_each_others_tmp() {
    let s = Server::start();
    let a = s.user();
    let b = s.user();
    a.create_function("writer", "python", "def handler(e, c):\n    open('/tmp/secret', 'w').write('a secret')\n    return 'written'\n", json!({}));
    b.create_function("reader", "python", "import os\ndef handler(e, c):\n    return os.listdir('/tmp')\n", json!({}));
    assert_eq!(a.invoke("writer", &json!({}))["output"], "written");
    assert_eq!(b.invoke("reader", &json!({}))["output"], json!([]));
    // Even two functions of the same user have separate /tmp.
    a.create_function("reader", "python", "import os\ndef handler(e, c):\n    return os.listdir('/tmp')\n", json!({}));
    assert_eq!(a.invoke("reader", &json!({}))["output"], json!([]));
}

/// Regression: the sandbox init runs as host root before it enters the namespaces; a
/// function's environment (LD_PRELOAD, LD_DEBUG…) must reach only the function's own process.
#[test]
fn loader_variables_in_a_functions_env_never_reach_the_host_side_init() {
    let s = Server::start();
    let c = s.user();
    let marker = temp_dir("ld-debug");
    let out = marker.join("loader");
    let e = attack(
        &c,
        "ldenv",
        "import os\ndef handler(e, c):\n    return os.environ.get('LD_DEBUG')\n",
        json!({"env": {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": out.display().to_string(), "LD_PRELOAD": "/nonexistent/evil.so"}}),
        json!({}),
    );
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["output"], "files", "the function still gets its own environment");
    let written: Vec<_> = std::fs::read_dir(&marker).unwrap().flatten().map(|f| f.path()).collect();
    assert!(written.is_empty(), "a host-side process honoured the function's LD_DEBUG_OUTPUT: {written:?}");
    let _ = std::fs::remove_dir_all(&marker);
}
