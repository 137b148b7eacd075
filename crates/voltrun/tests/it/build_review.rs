//! The fixes of the security review of the dependency builds (issue 15, build execution and
//! cache side): what each finding broke, checked through the real binary in the tier under
//! test (`voltrun __build`) or the public API.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

/// Runs `voltrun __build` on `pkg` with the data dir `data` (extra flags after), its JSON.
fn build(data: &Path, runtime: &str, pkg: &Path, extra: &[&str]) -> Value {
    crate::builds_sandbox::build_env(data, runtime, pkg, extra, &[])
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (p, text) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Finding 1: the key is the dependency files, so nothing else of a package may take part in
/// its build. A's package carries a `pip/__main__.py` (what `python -m pip` ran first, from the
/// working directory) and a `sitecustomize.py` that plant a backdoored `six`; B deploys the same
/// `requirements.txt` and gets the shared tree: it must be the genuine `six`.
#[test]
fn a_package_cannot_replace_pip_and_poison_another_users_cache() {
    let dir = temp_dir("review-poison");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let plant = "import os\nos.makedirs('/build/out', exist_ok=True)\nopen('/build/out/six.py', 'w').write('POISONED = True\\n')\nprint('POISON planted', flush=True)\n";
    write(
        &a,
        &[
            ("requirements.txt", "six\n"),
            ("main.py", "def handler(e, c):\n    return 1\n"),
            ("pip/__init__.py", ""),
            ("pip/__main__.py", &format!("{plant}raise SystemExit(0)\n")),
            ("sitecustomize.py", plant),
            ("logging/__init__.py", plant),
        ],
    );
    write(&b, &[("requirements.txt", "six\n"), ("main.py", "import six\ndef handler(e, c):\n    return six.ensure_str('b')\n")]);
    let data = dir.join("data");
    let check = "import six\nassert not hasattr(six, 'POISONED'), 'the tree is poisoned'\nprint('six', six.__version__, six.__file__)";
    let ra = build(&data, "python3.11", &a, &["--check", check]);
    if sandbox() == "process" {
        assert_eq!(ra["ok"], false, "{ra}");
        return assert!(ra["reason"].as_str().unwrap().contains("process tier has no isolation"), "{ra}");
    }
    assert_eq!(ra["ok"], true, "{ra}");
    assert!(!ra["logs"].as_str().unwrap().contains("POISON planted"), "the package's own code ran in its build: {}", ra["logs"]);
    assert_eq!(ra["check"]["ok"], true, "A's tree: {ra}");
    let rb = build(&data, "python3.11", &b, &["--check", check]);
    assert_eq!(rb["ok"], true, "{rb}");
    assert_eq!((&rb["cached"], &rb["key"]), (&json!(true), &ra["key"]), "B shares A's tree (one key): {rb}");
    assert_eq!(rb["check"]["ok"], true, "B's tree must be the index's six: {rb}");
    assert!(rb["check"]["output"].as_str().unwrap().contains("six 1."), "{rb}");
    // Nothing of A's package is in the tree.
    let tree = Path::new(rb["path"].as_str().unwrap());
    for planted in ["pip", "sitecustomize.py", "logging", "main.py"] {
        assert!(!tree.join(planted).exists(), "{planted} of A's package is in the shared tree");
    }
}

/// Finding 1: dependency files that reference the package's other files, other indexes or
/// hosts are refused at create and update (400 on the package's field, naming the line), never
/// built.
#[test]
fn a_requirement_pointing_into_the_package_is_refused() {
    let s = Server::start();
    let c = s.user();
    let cases = [
        ("python", json!({"main.py": "def handler(e, c):\n    return 1\n", "requirements.txt": "six\n-r more.txt\n", "more.txt": "evil\n"}), "requirements.txt line 2"),
        ("python", json!({"main.py": "def handler(e, c):\n    return 1\n", "requirements.txt": "-e .\n", "setup.py": ""}), "requirements.txt line 1"),
        ("python", json!({"main.py": "def handler(e, c):\n    return 1\n", "requirements.txt": "six\n\n--find-links ./dist\n"}), "requirements.txt line 3"),
        ("python", json!({"main.py": "def handler(e, c):\n    return 1\n", "requirements.txt": "requests @ git+https://github.com/psf/requests\n"}), "outside the index"),
        ("node", json!({"index.js": "exports.handler = () => 1;", "package.json": "{\n  \"dependencies\": {\n    \"lib\": \"file:./lib\"\n  }\n}"}), "package.json line 3"),
        (
            "node",
            json!({"index.js": "exports.handler = () => 1;", "package.json": "{\"dependencies\": {\"zod\": \"^3\"},\n\"scripts\": {\"postinstall\": \"node index.js\"}}"}),
            "package.json line 2",
        ),
        ("node", json!({"index.js": "exports.handler = () => 1;", "package.json": "{\"dependencies\": {\"zod\": \"^3\"}}", ".npmrc": "script-shell=/bin/evil\n"}), ".npmrc"),
    ];
    for (i, (runtime, files, expect)) in cases.iter().enumerate() {
        let (status, body) = c.post("/api/functions", &json!({"name": format!("refused-{i}"), "runtime": runtime, "files": files}));
        assert_eq!(assert_error(status, &body, 400), "validation_failed");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("files: ") && msg.contains(expect), "case {i}: {msg}");
    }
    // An update is checked the same way, and the old version stays.
    let (status, f) = c.post("/api/functions", &json!({"name": "ok-fn", "runtime": "python", "files": {"main.py": "def handler(e, c):\n    return 'v1'\n"}}));
    assert_eq!(status, 201, "{f}");
    let (status, body) = c.put("/api/functions/ok-fn", &json!({"files": {"main.py": "def handler(e, c):\n    return 'v2'\n", "requirements.txt": "./lib\n"}}));
    assert_eq!(assert_error(status, &body, 400), "validation_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("requirements.txt line 1"), "{body}");
    assert_eq!(c.invoke("ok-fn", &json!({}))["output"], "v1");
}

/// Finding 2: a build's writable directories are on the data disk and only each file was
/// bounded; a build writing past `--build-max-output` is now killed and failed, and the trees
/// already cached stay.
#[test]
fn a_build_writing_past_the_output_cap_is_killed_and_evicts_nothing() {
    let dir = temp_dir("review-cap");
    let data = dir.join("data");
    let small = dir.join("small");
    write(&small, &[("requirements.txt", "six\n")]);
    let r = build(&data, "python3.11", &small, &["--build-max-output", "40M"]);
    if sandbox() == "process" {
        return assert_eq!(r["ok"], false, "{r}");
    }
    assert_eq!(r["ok"], true, "{r}");
    let kept = r["path"].as_str().unwrap().to_string();
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    // 8 MiB files, each under any per-file limit, 200 MiB in all; then it would sleep.
    let body = "import os, time\nos.makedirs('/build/out/fill', exist_ok=True)\nfor i in range(25):\n    open('/build/out/fill/%d' % i, 'wb').write(os.urandom(8 << 20))\n    print('wrote', i, flush=True)\ntime.sleep(600)\n";
    let env = crate::builds_sandbox::hostile_package(&pkg, body);
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .arg("__build")
        .arg("--data-dir")
        .arg(&data)
        .args(sandbox_args())
        .args(["--runtime", "python3.11", "--dir"])
        .arg(&pkg)
        .args(["--build-max-output", "40M", "--build-timeout", "300"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("VOLTRUN_LOG", "warn")
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("wrote more than 41943040 bytes"), "{r}");
    assert!(!r["logs"].as_str().unwrap().contains("wrote 24"), "the build was stopped before it wrote it all: {r}");
    assert!(Path::new(&kept).join("six.py").is_file(), "the cached tree stays");
    let building: Vec<_> = std::fs::read_dir(data.join("deps/.building")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(building.is_empty(), "the killed build's scratch is removed: {building:?}");
}

/// Polls the function until its build is over (state not pending, update not in progress).
fn wait_built(c: &Client, name: &str) -> Value {
    for _ in 0..2400 {
        let (status, f) = c.get(&format!("/api/functions/{name}"));
        assert_eq!(status, 200, "{f}");
        if f["state"] != "pending" && f["last_update_status"] != "in_progress" {
            return f;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("the build of {name} never ended");
}

/// Finding 4: a cold start whose dependency tree was evicted (one node, no shared blob) built
/// it again inline, outside the build slots and inside the run's deadline. Now the run fails
/// at once saying so, the tree is rebuilt in the background, and a later run gets it. (On
/// PostgreSQL the tree comes back from the store instead.)
#[test]
fn a_cold_start_never_builds_an_evicted_tree_inline() {
    let s = Server::start();
    let c = s.user();
    let files = json!({"main.py": "import six\ndef handler(e, c):\n    return six.ensure_str('ok')\n", "requirements.txt": "six\n"});
    let (status, f) = c.post("/api/functions", &json!({"name": "evicted", "runtime": "python", "files": files}));
    assert_eq!(status, 201, "{f}");
    let built = wait_built(&c, "evicted");
    if sandbox() == "process" {
        // The process tier runs no builds.
        assert_eq!(built["state"], "failed", "{built}");
        return assert!(built["state_reason"].as_str().unwrap().contains("process tier has no isolation"), "{built}");
    }
    assert_eq!(built["state"], "active", "{built}");
    let shared = std::env::var("VOLTRUN_TEST_DATABASE").as_deref() == Ok("postgres");
    assert_eq!(c.invoke("evicted", &json!({}))["output"], "ok");
    // The tree goes (as an eviction would); a new version (no dependency change) cold-starts.
    let deps = s.data_dir.join("deps");
    let trees: Vec<_> = std::fs::read_dir(&deps).unwrap().flatten().filter(|e| e.file_name().len() == 64).map(|e| e.path()).collect();
    assert_eq!(trees.len(), 1, "{trees:?}");
    std::fs::remove_dir_all(&trees[0]).unwrap();
    let (status, u) = c.put("/api/functions/evicted", &json!({"timeout": 17}));
    assert_eq!(u["version"], 2, "{u}");
    assert_eq!(status, 200, "{u}");
    assert_eq!(wait_built(&c, "evicted")["state"], "active");
    let e = c.invoke("evicted", &json!({}));
    if shared {
        // On PostgreSQL the building node stored the tree: the cold start fetches it from the
        // store (a chunk at a time, unpacked streaming) and runs.
        assert_eq!(e["output"], "ok", "{e}");
        return assert!(trees[0].is_dir(), "the tree was fetched back under its key");
    }
    assert_eq!(e["status"], "failed", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("is being built again"), "{e}");
    // A later run finds the rebuilt tree.
    let mut last = Value::Null;
    for _ in 0..600 {
        last = c.invoke("evicted", &json!({}));
        if last["status"] == "success" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(last["output"], "ok", "{last}");
    assert!(trees[0].is_dir(), "the tree was rebuilt under its key");
}
