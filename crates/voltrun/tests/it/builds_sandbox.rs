//! Dependency builds in the sandbox (issue 15, the engine side) through the real binary's
//! hidden `voltrun __build` command, in the tier under test: real pip and npm against the
//! configured index (this machine's resolver maps the registries to a mirror; nothing is
//! hard-coded), the tree checked by importing it in the sandbox from `/var/deps`, the cache,
//! hostile build scripts, the timeout. The HTTP flow (deploy → build → invoke) is the
//! buildflow helper's `it/builds.rs`.
//!
//! The `process` tier refuses builds (no isolation for hostile build scripts): under it each
//! test checks that refusal instead.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::harness::{sandbox, sandbox_args, temp_dir};

/// Runs `voltrun __build` on `pkg` with a data dir of its own (or `data`), returns its JSON.
fn build(data: &Path, runtime: &str, pkg: &Path, extra: &[&str]) -> Value {
    build_env(data, runtime, pkg, extra, &[])
}

/// [`build`] with more environment for `voltrun __build` (`PIP_FIND_LINKS`).
pub(crate) fn build_env(data: &Path, runtime: &str, pkg: &Path, extra: &[&str], env: &[(&str, String)]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("__build")
        .arg("--data-dir")
        .arg(data)
        .args(sandbox_args())
        .args(["--runtime", runtime, "--dir"])
        .arg(pkg)
        .args(extra)
        .env("VOLTRUN_LOG", "warn")
        .output()
        .expect("run voltrun __build");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("__build printed no JSON ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr)))
}

fn isolating() -> bool {
    sandbox() != "process"
}

/// Under the process tier every build is refused, naming why.
fn assert_refused_in_process_tier(r: &Value) {
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("process tier has no isolation"), "{r}");
}

fn logs(r: &Value) -> &str {
    r["logs"].as_str().unwrap_or("")
}

#[test]
fn python_native_wheels_build_import_from_a_read_only_tree_and_hit_the_cache() {
    let dir = temp_dir("build-py");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("requirements.txt"), "numpy\npydantic>=2\nrequests\n").unwrap();
    let check = r#"
import numpy, pydantic, pydantic_core, requests, os
class M(pydantic.BaseModel):
    x: int
print("sum", int(numpy.arange(10).sum()), M(x="3").x, requests.__version__)
print("from", numpy.__file__, pydantic_core.__file__)
try:
    open("/var/deps/planted", "w")
    print("tree writable")
except OSError as e:
    print("tree read-only", e.errno)
"#;
    let data = dir.join("data");
    let r = build(&data, "python3.11", &pkg, &["--check", check]);
    if !isolating() {
        return assert_refused_in_process_tier(&r);
    }
    assert_eq!(r["ok"], true, "{}", logs(&r));
    assert_eq!(r["cached"], false);
    let out = r["check"]["output"].as_str().unwrap_or_default();
    assert_eq!(r["check"]["ok"], true, "{r}");
    assert!(out.contains("sum 45 3 "), "{out}");
    assert!(out.contains("from /var/deps/numpy/") && out.contains("/var/deps/pydantic_core/"), "imported from the built tree: {out}");
    // EROFS; gVisor checks the mode first (EACCES): either way nothing is written.
    assert!(out.contains("tree read-only 30") || out.contains("tree read-only 13"), "{out}");
    assert!(logs(&r).contains("Successfully installed"), "{}", logs(&r));
    // The tree on the host: sealed, root-owned, read-only.
    let tree = Path::new(r["path"].as_str().unwrap());
    let meta = std::fs::metadata(tree.join("numpy/__init__.py")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o222, 0);
    eprintln!("cold build numpy+pydantic+requests: {} ms, tree {} bytes", r["duration_ms"], r["tree_bytes"]);

    // The same dependencies again: the cache, no build, no download.
    let again = build(&data, "python3.11", &pkg, &[]);
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["key"], r["key"]);
    assert!(!logs(&again).contains("Downloading") && logs(&again).contains("no build, no download"), "{}", logs(&again));
    assert!(again["duration_ms"].as_u64().unwrap() < 1000, "a cache hit takes well under a second: {again}");
    eprintln!("cache hit: {} ms", again["duration_ms"]);
}

#[test]
fn concurrent_builds_of_one_key_build_once() {
    let dir = temp_dir("build-once");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("requirements.txt"), "idna\n").unwrap();
    let r = build(&dir.join("data"), "python3.11", &pkg, &["--parallel", "4"]);
    if !isolating() {
        return assert_refused_in_process_tier(&r);
    }
    assert_eq!(r["ok"], true, "{}", logs(&r));
    let all: Vec<&Value> = std::iter::once(&r).chain(r["parallel"].as_array().unwrap()).collect();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|x| x["ok"] == true && x["key"] == r["key"]), "{r}");
    assert_eq!(all.iter().filter(|x| x["cached"] == false).count(), 1, "exactly one of four identical builds ran: {r}");
}

#[test]
fn node_sharp_and_zod_build_and_load_their_prebuilt_binaries() {
    let dir = temp_dir("build-node");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("package.json"), r#"{"name":"t","version":"1.0.0","dependencies":{"sharp":"^0.33.5","zod":"^3.23.8"}}"#).unwrap();
    let check = r#"
const sharp = require("sharp"), { z } = require("zod");
sharp({ create: { width: 4, height: 4, channels: 3, background: "red" } }).png().toBuffer()
  .then(b => console.log("png", b.length > 0, z.object({ n: z.number() }).parse({ n: 7 }).n, require.resolve("sharp")));
"#;
    let r = build(&dir.join("data"), "nodejs20", &pkg, &["--check", check]);
    if !isolating() {
        return assert_refused_in_process_tier(&r);
    }
    assert_eq!(r["ok"], true, "{}", logs(&r));
    let out = r["check"]["output"].as_str().unwrap_or_default();
    assert_eq!(r["check"]["ok"], true, "{r}");
    assert!(out.contains("png true 7 /var/deps/sharp/"), "{out}");
    let tree = Path::new(r["path"].as_str().unwrap());
    assert!(tree.join("@img").is_dir(), "sharp's prebuilt @img/* optional dependency is in the tree (a node_modules directory)");
    assert!(tree.join("zod/package.json").is_file());
}

#[test]
fn an_unknown_package_fails_with_pips_message_in_the_logs() {
    let dir = temp_dir("build-unknown");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("requirements.txt"), "voltrun-no-such-package-4c1e9\n").unwrap();
    let r = build(&dir.join("data"), "python3.11", &pkg, &[]);
    if !isolating() {
        return assert_refused_in_process_tier(&r);
    }
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().starts_with("pip install failed"), "{r}");
    assert!(logs(&r).contains("No matching distribution found for voltrun-no-such-package-4c1e9"), "{}", logs(&r));
    assert!(!dir.join("data/deps").read_dir().unwrap().flatten().any(|e| e.file_name().len() == 64), "a failed build leaves no tree");
}

/// A source distribution named `evil` whose `setup.py` is `body`, in a directory of the host
/// (below /var/tmp), required by name; returns the environment that makes that directory one of
/// the server's find-links (`PIP_FIND_LINKS`: a package's own `--find-links` is refused). pip
/// builds it from source: the script runs inside the build.
pub(crate) fn hostile_package(pkg: &Path, body: &str) -> Vec<(&'static str, String)> {
    let src = pkg.parent().unwrap().join("sdist/evil-0.1");
    // Not below /tmp: the build has a /tmp of its own, mounted over the host paths it is
    // given, which hides them (the target dir of a checkout under /tmp, as on a fresh clone
    // there, would be). /var/tmp is not covered.
    let dist = Path::new("/var/tmp").join(format!("voltrun-it-dist-{}", std::process::id())).join(pkg.parent().unwrap().file_name().unwrap()).join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(src.join("setup.py"), body).unwrap();
    std::fs::write(src.join("PKG-INFO"), "Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n").unwrap();
    let st = Command::new("tar").arg("-czf").arg(dist.join("evil-0.1.tar.gz")).arg("-C").arg(src.parent().unwrap()).arg("evil-0.1").status().unwrap();
    assert!(st.success());
    std::fs::write(pkg.join("requirements.txt"), "evil==0.1\n").unwrap();
    let host = std::env::var("PIP_FIND_LINKS").unwrap_or_default();
    vec![("PIP_FIND_LINKS", format!("{host} {}", dist.display()).trim().to_string())]
}

#[test]
fn a_hostile_setup_py_is_refused_and_contained_and_says_so_in_the_log() {
    // A stand-in for the API port: listening on every host address; nothing may reach it.
    let api = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = api.local_addr().unwrap().port();
    api.set_nonblocking(true).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    // The host's own address on its default route (a UDP connect sends nothing).
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    udp.connect("198.18.0.1:9").unwrap();
    let host_ip = udp.local_addr().unwrap().ip();
    let marker = format!("/tmp/voltrun-hostile-{}-{port}", std::process::id());
    let dir = temp_dir("build-hostile");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let body = format!(
        r#"
import os, socket, stat, sys, time
# pip keeps a setup.py's output to itself unless the build fails in its own way: write each
# line to the build's log directly too (the stderr of the oldest ancestor that has a pipe).
def build_log():
    chain, pid = [], os.getpid()
    while pid > 0:
        chain.append(pid)
        try:
            pid = int([l for l in open("/proc/%d/status" % pid) if l.startswith("PPid:")][0].split()[1])
        except (OSError, IndexError):
            break
    for p in reversed(chain):
        try:
            f = open("/proc/%d/fd/2" % p, "w")
            if stat.S_ISFIFO(os.fstat(f.fileno()).st_mode):
                return f
        except OSError:
            pass
    return sys.stdout
LOG = build_log()
def say(line):
    for f in {{LOG, sys.stdout}}:
        f.write(line + "\n"); f.flush()
def report(what, f):
    try:
        say("HOSTILE %s: ALLOWED %r" % (what, f()))
    except Exception as e:
        say("HOSTILE %s: refused (%s: %s)" % (what, type(e).__name__, e))
def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
def connect(host):
    s = socket.create_connection((host, {port}), timeout=5); s.close(); return host
report("read /etc/shadow", lambda: open("/etc/shadow").read()[:10])
report("connect to the api port on 127.0.0.1", lambda: connect("127.0.0.1"))
report("connect to the api port on the gateway", lambda: connect(gateway()))
report("connect to the api port on the host address", lambda: connect("{host_ip}"))
report("connect to a test address", lambda: socket.create_connection(("198.18.0.1", 80), timeout=5).close())
report("write the host's /tmp", lambda: open("{marker}", "w").write("x"))
report("write the package", lambda: open("/var/task/planted", "w").write("x"))
report("uid", lambda: os.getuid())
def forks():
    kids = []
    try:
        for _ in range(1000):
            pid = os.fork()
            if pid == 0:
                os.execv("/bin/sleep", ["sleep", "30"])
            kids.append(pid)
        return "forked %d" % len(kids)
    finally:
        say("HOSTILE forked %d before the limit" % len(kids))
        for k in kids: os.kill(k, 9)
        for k in kids: os.waitpid(k, 0)
report("fork 1000 processes", forks)
sys.exit("hostile setup.py: done")
"#
    );
    let env = hostile_package(&pkg, &body);
    let counter = accepted.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let watcher = std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            if api.accept().is_ok() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let r = build_env(&dir.join("data"), "python3.11", &pkg, &[], &env);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    if !isolating() {
        return assert_refused_in_process_tier(&r);
    }
    let l = logs(&r);
    assert_eq!(r["ok"], false, "{r}");
    // pip fails (the script exits 1; under gVisor the fork loop can take pip down first).
    assert!(r["reason"].as_str().unwrap().starts_with("pip install failed"), "{r}");
    for what in [
        "read /etc/shadow",
        "connect to the api port on 127.0.0.1",
        "connect to the api port on the gateway",
        "connect to the api port on the host address",
        "connect to a test address",
        "write the package",
    ] {
        assert!(l.contains(&format!("HOSTILE {what}: refused")), "{what} must be refused:\n{l}");
    }
    // 1,000 processes never start. Under gVisor the Sentry's process limit takes the whole
    // build down with the fork loop (pip exits 2 before the script reports); elsewhere the
    // fork fails with EAGAIN at the pid limit and the script says so.
    assert!(!l.contains("HOSTILE fork 1000 processes: ALLOWED"), "{l}");
    if sandbox() != "gvisor" {
        assert!(l.contains("HOSTILE fork 1000 processes: refused (BlockingIOError"), "{l}");
    }
    assert!(l.contains("HOSTILE uid: ALLOWED 1000"), "the build runs as the function user:\n{l}");
    assert!(l.contains("[voltrun] egress refused: tcp connection to 198.18.0.1:80"), "refused connections are in the build log:\n{l}");
    // Writing /tmp succeeds inside (the build's own /tmp), never on the host.
    assert!(!Path::new(&marker).exists(), "the build wrote the host's /tmp");
    assert_eq!(accepted.load(Ordering::Relaxed), 0, "the build reached the host's listener");
}

#[test]
fn a_build_past_its_timeout_is_killed_whole() {
    let dir = temp_dir("build-timeout");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let tag = format!("{}.{}", 700 + std::process::id() % 100, std::process::id());
    let env = hostile_package(&pkg, &format!("import subprocess, time\nprint('started', flush=True)\nsubprocess.Popen(['/bin/sleep', '{tag}'])\ntime.sleep(3600)\n"));
    let r = build_env(&dir.join("data"), "python3.11", &pkg, &["--build-timeout", "20"], &env);
    if !isolating() {
        return assert_refused_in_process_tier(&r);
    }
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("longer than its timeout (20s)"), "{r}");
    let left = Command::new("pgrep").args(["-f", &format!("sleep {tag}")]).output().unwrap();
    assert!(left.stdout.is_empty(), "the build's processes outlived it: {}", String::from_utf8_lossy(&left.stdout));
}

#[test]
fn a_build_that_writes_past_its_output_cap_is_stopped() {
    let dir = temp_dir("build-disk");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    // 128 MiB in 16 MiB files (each under RLIMIT_FSIZE), then it waits to be stopped.
    let env = hostile_package(
        &pkg,
        "import time\nblock = b'x' * (16 << 20)\nfor i in range(8):\n    open('/build/tmp/fill-%d' % i, 'wb').write(block)\nfor _ in range(600):\n    time.sleep(1)\n",
    );
    let r = build_env(&dir.join("data"), "python3.11", &pkg, &["--build-max-output", "64M", "--build-timeout", "600"], &env);
    if !isolating() {
        return assert_refused_in_process_tier(&r);
    }
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("wrote more than 67108864 bytes (--build-max-output)"), "{r}");
    assert!(!dir.join("data/deps/.building").read_dir().unwrap().any(|_| true), "the scratch directory is removed");
}

#[test]
fn the_process_tier_refuses_builds() {
    let dir = temp_dir("build-process");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("requirements.txt"), "idna\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .args(["__build", "--sandbox", "process", "--insecure", "--runtime", "python3.11", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--dir")
        .arg(&pkg)
        .env("VOLTRUN_LOG", "warn")
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_refused_in_process_tier(&r);
}
