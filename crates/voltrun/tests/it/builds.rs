//! Dependency builds as durable work (SPEC §10, issue 15), through the public API against the
//! real package index: `pending` → `active` | `failed`, the last good version serving while an
//! update builds or after its build failed, the cache hit inside the request, 409
//! `function_not_active`, the build's log (also live), a server killed mid-build, and on
//! PostgreSQL a build on one node and its runs on another, and the packed tree freed with the
//! last function that runs with it.
//!
//! The index is reached through pip and npm as configured on the host (CI may differ:
//! nothing here names an address).

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// The longest a real build may take here (numpy and pydantic wheels, sharp's binaries).
const BUILD_WAIT: Duration = Duration::from_secs(600);

/// Creates a `files` package function and returns its record (asserting 201).
fn create_package(c: &Client, name: &str, runtime: &str, files: Value, extra: Value) -> Value {
    let mut body = json!({"name": name, "runtime": runtime, "files": files});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    let (status, f) = c.post("/api/functions", &body);
    assert_eq!(status, 201, "{f}");
    f
}

/// Polls the function until its build is over (state not pending, update not in progress).
fn wait_built(c: &Client, name: &str) -> Value {
    let until = Instant::now() + BUILD_WAIT;
    loop {
        let (status, f) = c.get(&format!("/api/functions/{name}"));
        assert_eq!(status, 200, "{f}");
        if f["state"] != "pending" && f["last_update_status"] != "in_progress" {
            return f;
        }
        assert!(Instant::now() < until, "the build of {name} is still going after {BUILD_WAIT:?}: {f}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The latest build of a function (asserting 200).
fn build_of(c: &Client, name: &str) -> Value {
    let (status, b) = c.get(&format!("/api/functions/{name}/build"));
    assert_eq!(status, 200, "{b}");
    b
}

/// Follows a build with `?follow=true` until its `end` event: (the text of the `log` events,
/// the build in the `end` event).
fn follow_build(s: &Server, c: &Client, name: &str) -> (String, Value) {
    let (k, v) = c.auth.clone().unwrap();
    let resp = ureq::get(&format!("{}/api/functions/{name}/build?follow=true", s.base)).timeout(BUILD_WAIT).set(&k, &v).call().unwrap();
    assert!(resp.header("content-type").unwrap().starts_with("text/event-stream"));
    let (mut text, mut event) = (String::new(), String::new());
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.unwrap();
        if let Some(ev) = line.strip_prefix("event: ") {
            event = ev.to_string();
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            match event.as_str() {
                "log" => text.push_str(v["text"].as_str().unwrap()),
                "end" => return (text, v),
                _ => {}
            }
        }
    }
    panic!("the build stream of {name} ended without an end event; log so far:\n{text}");
}

/// Asserts a 409 `function_not_active` for every door a user has: sync and async execute.
fn assert_not_active(c: &Client, name: &str) {
    for path in [format!("/api/functions/{name}/execute"), format!("/api/functions/{name}/execute?async=true")] {
        let (status, body) = c.post(&path, &json!({}));
        assert_eq!(assert_error(status, &body, 409), "function_not_active", "{path}: {body}");
    }
}

const PY_IMPORTS: &str = "import numpy, pydantic, requests\n\nclass Point(pydantic.BaseModel):\n    x: int\n    y: int\n\ndef handler(event, context):\n    p = Point(x=event['x'], y=2)\n    return {'sum': int(numpy.array([p.x, p.y]).sum()), 'pydantic': pydantic.VERSION.split('.')[0], 'requests': requests.__version__ != ''}\n";

/// Python with native wheels (numpy, pydantic-core) and a plain one (requests): pending with
/// a live build log, 409 while pending, then active and importing all three; a second
/// function with the same requirements is a cache hit inside its create request; another
/// user sees neither build (404).
#[test]
fn python_requirements_build_then_the_function_imports_them_and_the_cache_serves_the_next() {
    let s = Server::start();
    let c = s.user();
    let files = json!({"main.py": PY_IMPORTS, "requirements.txt": "numpy\npydantic>=2\nrequests\n"});
    let f = create_package(&c, "pyimports", "python", files.clone(), json!({}));
    assert_eq!((&f["state"], &f["last_update_status"]), (&json!("pending"), &json!("in_progress")), "{f}");
    assert_not_active(&c, "pyimports");
    let (live, end) = follow_build(&s, &c, "pyimports");
    assert_eq!(end["status"], "success", "{end}\n{live}");
    assert_eq!((end["cached"].as_bool(), end["function_version"].as_i64()), (Some(false), Some(1)), "{end}");
    assert!(live.to_lowercase().contains("numpy"), "the live log names what it installs: {live}");
    assert!(end["duration_ms"].as_f64().is_some() && end["finished_at"].is_string(), "{end}");
    let f = wait_built(&c, "pyimports");
    assert_eq!((&f["state"], &f["state_reason"], &f["last_update_status"]), (&json!("active"), &Value::Null, &json!("successful")), "{f}");
    let e = c.invoke("pyimports", &json!({"x": 40}));
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["output"], json!({"sum": 42, "pydantic": "2", "requests": true}), "{e}");

    // The same dependencies again: built from the cache inside the request.
    let t0 = Instant::now();
    let g = create_package(&c, "pyimports2", "python", files, json!({}));
    let took = t0.elapsed();
    assert_eq!((&g["state"], &g["last_update_status"]), (&json!("active"), &json!("successful")), "{g}");
    let b = build_of(&c, "pyimports2");
    assert_eq!((&b["status"], &b["cached"]), (&json!("success"), &json!(true)), "{b}");
    println!("cache-hit create of a numpy/pydantic/requests function: {} ms", took.as_millis());
    assert_eq!(c.invoke("pyimports2", &json!({"x": 1}))["output"]["sum"], 3);

    // Another user's build is a 404, by id and by name, followed or not.
    let other = s.user();
    for path in [format!("/api/functions/{}/build", f["id"].as_str().unwrap()), "/api/functions/pyimports/build".into(), "/api/functions/pyimports/build?follow=true".into()] {
        let (status, body) = other.get(&path);
        assert_eq!(assert_error(status, &body, 404), "not_found", "{path}");
    }
    // A code function never builds: no build to show.
    c.create_function("plain", "python", "def handler(e, c):\n    return 1\n", json!({}));
    let (status, body) = c.get("/api/functions/plain/build");
    assert_eq!(assert_error(status, &body, 404), "not_found");
    let (_, list) = c.get("/api/functions");
    assert!(list["items"].as_array().unwrap().iter().all(|i| i["state"] == "active" && i["last_update_status"] == "successful"), "{list}");
}

/// Node with sharp (prebuilt binaries as optional dependencies) and zod: built, active, and a
/// run uses both.
#[test]
fn node_package_json_with_sharp_and_zod_builds_and_a_run_uses_both() {
    let s = Server::start();
    let c = s.user();
    let index = "const sharp = require('sharp');\nconst { z } = require('zod');\nexports.handler = async (event) => {\n  const n = z.object({ size: z.number().int() }).parse(event).size;\n  const png = await sharp({ create: { width: n, height: n, channels: 3, background: 'red' } }).png().toBuffer();\n  const meta = await sharp(png).metadata();\n  return { width: meta.width, format: meta.format };\n};\n";
    let pkg = json!({"name": "imgfn", "version": "1.0.0", "dependencies": {"sharp": "^0.33.0", "zod": "^3.23.0"}}).to_string();
    let f = create_package(&c, "imgfn", "nodejs20", json!({"index.js": index, "package.json": pkg}), json!({"memory": 512}));
    assert_eq!(f["state"], "pending", "{f}");
    let f = wait_built(&c, "imgfn");
    assert_eq!(f["state"], "active", "{f}\n{}", build_of(&c, "imgfn"));
    let e = c.invoke("imgfn", &json!({"size": 3}));
    assert_eq!(e["output"], json!({"width": 3, "format": "png"}), "{e}");
    // zod's refusal is the handler's error, not a build problem.
    let e = c.invoke("imgfn", &json!({"size": "big"}));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("HandlerError")), "{e}");
}

/// A requirement that does not exist: the first build fails with a reason and the pip log,
/// the function is `failed` and refuses runs; an update that fixes it builds and serves.
#[test]
fn an_unknown_package_fails_the_build_with_its_reason_and_logs() {
    let s = Server::start();
    let c = s.user();
    let files = json!({"main.py": "def handler(e, c):\n    return 'fixed'\n", "requirements.txt": "voltrun-no-such-package-4f1c9a\n"});
    create_package(&c, "nopkg", "python", files, json!({}));
    let f = wait_built(&c, "nopkg");
    assert_eq!((&f["state"], &f["last_update_status"]), (&json!("failed"), &json!("failed")), "{f}");
    let reason = f["state_reason"].as_str().unwrap_or_else(|| panic!("no state_reason: {f}"));
    assert!(!reason.is_empty() && f["last_update_status_reason"] == json!(reason), "{f}");
    let b = build_of(&c, "nopkg");
    assert_eq!((&b["status"], &b["reason"]), (&json!("failed"), &json!(reason)), "{b}");
    assert!(b["logs"].as_str().unwrap().contains("voltrun-no-such-package-4f1c9a"), "the log shows pip's complaint: {b}");
    assert_not_active(&c, "nopkg");
    // An update of a failed function replaces it and builds again.
    let (status, u) = c.put("/api/functions/nopkg", &json!({"files": {"main.py": "def handler(e, c):\n    return 'fixed'\n", "requirements.txt": "six\n"}}));
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["state"], "pending", "{u}");
    let f = wait_built(&c, "nopkg");
    assert_eq!((&f["state"], &f["state_reason"], f["version"].as_i64()), (&json!("active"), &Value::Null, Some(2)), "{f}");
    assert_eq!(c.invoke("nopkg", &json!({}))["output"], "fixed");
    // The node's figures: one build failed, one succeeded, none left running.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8(s.anon().raw("GET", "/metrics", None, &[]).body).unwrap();
        let counted =
            ["voltrun_builds_total{status=\"success\"} 1", "voltrun_builds_total{status=\"failed\"} 1", "voltrun_builds_in_flight 0"].iter().all(|l| text.lines().any(|x| x == *l));
        if counted {
            break;
        }
        assert!(Instant::now() < until, "build metrics: {}", text.lines().filter(|l| l.contains("build")).collect::<Vec<_>>().join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An update with a broken requirement: the last good version keeps serving while it builds
/// and after it failed (same version, same result), with `last_update_status: failed` and
/// the reason; other updates wait for the build (409 `update_in_progress`).
#[test]
fn a_broken_update_leaves_the_last_good_version_serving() {
    let s = Server::start();
    let c = s.user();
    let v1 = json!({"main.py": "import six\ndef handler(e, c):\n    return 'v1'\n", "requirements.txt": "six\n"});
    create_package(&c, "good", "python", v1, json!({}));
    let f1 = wait_built(&c, "good");
    assert_eq!(f1["state"], "active", "{f1}\n{}", build_of(&c, "good"));
    assert_eq!(c.invoke("good", &json!({}))["output"], "v1");

    let v2 = json!({"main.py": "def handler(e, c):\n    return 'v2'\n", "requirements.txt": "six\nvoltrun-no-such-package-77d2e0\n"});
    let (status, u) = c.put("/api/functions/good", &json!({"files": v2}));
    assert_eq!(status, 200, "{u}");
    assert_eq!((&u["last_update_status"], &u["version"], &u["package"]), (&json!("in_progress"), &f1["version"], &f1["package"]), "the old definition serves: {u}");
    let (status, body) = c.put("/api/functions/good", &json!({"memory": 256}));
    if status == 409 {
        assert_eq!(assert_error(status, &body, 409), "update_in_progress");
    } else {
        // The build had already failed: the change applies as usual.
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(c.invoke("good", &json!({}))["output"], "v1", "the last good version serves while the update builds");
    let f = wait_built(&c, "good");
    assert_eq!((&f["state"], &f["last_update_status"]), (&json!("active"), &json!("failed")), "{f}");
    assert!(f["last_update_status_reason"].as_str().is_some_and(|r| !r.is_empty()), "{f}");
    assert_eq!(f["package"], f1["package"], "nothing of the update was applied: {f}");
    let e = c.invoke("good", &json!({}));
    assert_eq!((&e["output"], &e["function_version"]), (&json!("v1"), &f["version"]), "{e}");
    let b = build_of(&c, "good");
    assert_eq!((&b["status"], b["function_version"].as_i64()), (&json!("failed"), f1["version"].as_i64().map(|v| v + 1)), "{b}");
}

/// Regression guard for durability: a server SIGKILLed while a build runs comes back and the
/// build finishes (run again) or fails with a reason; it never stays `building` and the
/// function never stays `pending`.
#[test]
fn a_server_killed_mid_build_finishes_or_fails_the_build_after_restart() {
    let dir = temp_dir("build-crash");
    let args = ["--lease-seconds", "3"];
    let s = Server::start_with(&dir, &args, true);
    let c = s.user();
    let files = json!({"main.py": "import numpy\ndef handler(e, c):\n    return int(numpy.int64(7))\n", "requirements.txt": "numpy\npydantic\n"});
    create_package(&c, "crashy", "python", files, json!({}));
    // Wait until a node has the build (its log has started), then kill the server.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let b = build_of(&c, "crashy");
        if b["status"] != "building" {
            panic!("the build ended before the server could be killed: {b}");
        }
        if !b["logs"].as_str().unwrap_or("").is_empty() {
            break;
        }
        assert!(Instant::now() < until, "the build never started: {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = s.restarted(&args);
    let c = Client { base: s.base.clone(), auth: c.auth.clone() };
    let f = wait_built(&c, "crashy");
    let b = build_of(&c, "crashy");
    assert!(b["status"] == "success" || b["status"] == "failed", "{b}");
    match f["state"].as_str() {
        Some("active") => assert_eq!(c.invoke("crashy", &json!({}))["output"], 7),
        Some("failed") => assert!(f["state_reason"].as_str().is_some_and(|r| !r.is_empty()), "{f}"),
        other => panic!("state {other:?}: {f}"),
    }
}

/// PostgreSQL: the build runs on node A (node B builds nothing) and node B, which never had
/// the tree, runs the function (it fetches the tree from the store before its first run);
/// both nodes see the build.
#[test]
fn postgres_a_build_on_node_a_runs_on_node_b() {
    let db = PgDatabase::create();
    let secret = "builds-test-secret-shared-by-both-nodes-0123456789abcdef";
    let node = |builds: &str| {
        let args: Vec<String> = ["--database-url", &db.url, "--jwt-secret", secret, "--lease-seconds", "3", "--build-concurrency", builds].iter().map(|s| s.to_string()).collect();
        Server::spawn(&temp_dir("bnode"), &args, true)
    };
    let (a, b) = (node("1"), node("0"));
    let ca = a.user();
    let cb = Client { base: b.base.clone(), auth: ca.auth.clone() };
    let files = json!({"main.py": "import six\ndef handler(e, c):\n    return six.ensure_str('from ' + e['node'])\n", "requirements.txt": "six\n"});
    // Created through B, which builds nothing: A claims the build.
    let f = create_package(&cb, "shared", "python", files, json!({}));
    assert_eq!(f["state"], "pending", "{f}");
    let f = wait_built(&cb, "shared");
    assert_eq!(f["state"], "active", "{f}\n{}", build_of(&cb, "shared"));
    assert_eq!(build_of(&ca, "shared"), build_of(&cb, "shared"), "both nodes serve the same build");
    let e = cb.invoke("shared", &json!({"node": "b"}));
    assert_eq!(e["output"], "from b", "{e}");
    assert_eq!(ca.invoke("shared", &json!({"node": "a"}))["output"], "from a");
    // B fetched the tree A stored (it did not build it again: it builds nothing).
    let log_of = |s: &Server| std::fs::read_to_string(s.data_dir.with_extension("stderr.log")).unwrap_or_default();
    let (la, lb) = (log_of(&a), log_of(&b));
    assert!(la.contains("built tree stored for other nodes"), "A stored its tree:\n{la}");
    let fetched = lb.lines().find(|l| l.contains("fetched a dependency tree another node built"));
    assert!(fetched.is_some(), "B fetched the tree:\n{lb}");
    println!("{}\n{}", la.lines().find(|l| l.contains("built tree stored")).unwrap_or(""), fetched.unwrap_or(""));
}

/// PostgreSQL: the tree a node packed for the others stays while any live version runs with
/// it, findable, and is freed with the last. Packs were never freed (every deleted function's
/// tree stayed in the database for ever), and deleting the function whose build named the pack
/// left other nodes unable to find it for the functions still running with it.
#[test]
fn postgres_a_packed_tree_is_freed_with_the_last_function_that_runs_with_it() {
    let db = PgDatabase::create();
    let args: Vec<String> = ["--database-url", &db.url, "--jwt-secret", "packed-tree-test-secret-0123456789abcdef-0123456789"].iter().map(|s| s.to_string()).collect();
    let s = Server::spawn(&temp_dir("bpack"), &args, true);
    let c = s.user();
    let files = json!({"main.py": "import six\ndef handler(e, c):\n    return six.ensure_str('ok')\n", "requirements.txt": "six\n"});
    for name in ["first", "second"] {
        create_package(&c, name, "python", files.clone(), json!({}));
        let f = wait_built(&c, name);
        assert_eq!(f["state"], "active", "{f}\n{}", build_of(&c, name));
        assert_eq!(c.invoke(name, &json!({}))["output"], "ok");
    }
    let packs = || db.query("SELECT count(*) FROM blobs b WHERE EXISTS (SELECT 1 FROM builds t WHERE t.tree_blob = b.sha256)");
    let sha = db.query("SELECT DISTINCT tree_blob FROM builds WHERE tree_blob IS NOT NULL");
    assert_eq!(sha.lines().count(), 1, "both builds name the one pack (the second was a cache hit): {sha}");
    assert_eq!(packs(), "1");
    let stored = |table: &str| db.query(&format!("SELECT count(*) FROM {table} WHERE sha256 = '{sha}'"));

    let (status, body) = c.delete("/api/functions/first");
    assert_eq!(status, 204, "{body}");
    assert_eq!(stored("blobs"), "1", "the second function still runs with the tree");
    // Its build (a cache hit, which packed nothing) names the pack now, so a node without the
    // tree still finds it.
    assert_eq!(db.query(&format!("SELECT count(*) FROM builds WHERE tree_blob = '{sha}'")), "1");
    assert_eq!(c.invoke("second", &json!({}))["output"], "ok");

    let (status, body) = c.delete("/api/functions/second");
    assert_eq!(status, 204, "{body}");
    assert_eq!(stored("blobs"), "0", "the last function that ran with the tree is gone, and so is its pack");
    assert_eq!(stored("blob_chunks"), "0");
}
