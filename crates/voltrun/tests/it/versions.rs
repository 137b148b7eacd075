//! Versions and aliases (SPEC §13, issue 16) over HTTP on the real server: every version
//! invokable by number until deleted, the latest undeletable, a version's code and
//! configuration frozen while a secret's new value reaches it, aliases (canary split checked
//! against the hash formula, rollback through a route in one PUT), async runs and schedules
//! with a qualifier, records carrying the version and qualifier, BOLA, 400s naming the
//! field, package versions sharing their dependency tree, and retention.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;

/// A Python handler that says which code it is (`tag`) and what its environment holds.
fn code(tag: &str) -> String {
    format!("import os\n\ndef handler(event, context):\n    return {{'code': '{tag}', 'x': os.environ.get('X'), 'tok': os.environ.get('TOK')}}\n")
}

/// A route no other test uses.
fn unique_route(tag: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{n:x}-{}", std::process::id())
}

/// The version the split sends execution `id` to: u = first 8 bytes of SHA-256(id) as a
/// big-endian u64 / 2^64; u < w → `extra`.
fn expected_version(id: &str, main: i64, extra: i64, w: f64) -> i64 {
    let d = Sha256::digest(id.as_bytes());
    let u = u64::from_be_bytes(d[..8].try_into().unwrap()) as f64 / 2f64.powi(64);
    if u < w {
        extra
    } else {
        main
    }
}

fn run(c: &Client, path: &str) -> Value {
    let (status, e) = c.post(path, &json!({}));
    assert_eq!(status, 200, "{path}: {e}");
    assert_eq!(e["status"], "success", "{e}");
    e
}

fn error_code(c: &Client, method: &str, path: &str, body: &Value, status: u16) -> String {
    let (got, b) = match method {
        "POST" => c.post(path, body),
        "PUT" => c.put(path, body),
        "DELETE" => c.delete(path),
        _ => c.get(path),
    };
    assert_error(got, &b, status)
}

/// The message of a 400, which names the field.
fn bad_field(c: &Client, method: &str, path: &str, body: &Value, field: &str) {
    let (got, b) = if method == "POST" { c.post(path, body) } else { c.put(path, body) };
    assert_eq!(assert_error(got, &b, 400), "validation_failed", "{path} {body}: {b}");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with(&format!("{field}:")), "{path} {body}: the message names {field}: {msg}");
}

#[test]
fn every_version_runs_by_number_frozen_until_deleted_and_the_latest_stays() {
    let s = Server::start();
    let c = s.user();
    let (status, b) = c.post("/api/secrets", &json!({"name": "TOK", "value": "first"}));
    assert_eq!(status, 201, "{b}");
    let f = c.create_function("ver", "python", &code("one"), json!({"env": {"X": "a"}, "secrets": ["TOK"]}));
    assert_eq!(f["version"], 1);
    let (status, u) = c.put("/api/functions/ver", &json!({"code": code("two"), "env": {"X": "b"}}));
    assert_eq!((status, &u["version"]), (200, &json!(2)), "{u}");
    let (status, u) = c.put("/api/functions/ver", &json!({"memory": 256}));
    assert_eq!((status, &u["version"]), (200, &json!(3)), "{u}");

    // Each version runs its own code and configuration; the record says which ran and how
    // it was called.
    for (q, want_code, want_x, want_v) in [("1", "one", "a", 1), ("2", "two", "b", 2), ("3", "two", "b", 3), ("latest", "two", "b", 3)] {
        let e = run(&c, &format!("/api/functions/ver:{q}/execute"));
        assert_eq!((&e["output"]["code"], &e["output"]["x"], &e["function_version"], &e["qualifier"]), (&json!(want_code), &json!(want_x), &json!(want_v), &json!(q)), "{e}");
    }
    let e = run(&c, "/api/functions/ver/execute?qualifier=1");
    assert_eq!((&e["function_version"], &e["qualifier"], &e["output"]["code"]), (&json!(1), &json!("1"), &json!("one")), "{e}");
    let e = run(&c, "/api/functions/ver/execute");
    assert_eq!((&e["function_version"], &e["qualifier"]), (&json!(3), &Value::Null), "{e}");
    let (_, stored) = c.get(&format!("/api/executions/{}", e["id"].as_str().unwrap()));
    assert_eq!((&stored["function_version"], &stored["qualifier"]), (&json!(3), &Value::Null), "{stored}");

    // A secret's new value is the one thing that reaches an old version.
    assert_eq!(run(&c, "/api/functions/ver:1/execute")["output"]["tok"], "first");
    let (status, b) = c.put("/api/secrets/TOK", &json!({"value": "second"}));
    assert_eq!(status, 200, "{b}");
    let e = run(&c, "/api/functions/ver:1/execute");
    assert_eq!((&e["output"]["tok"], &e["output"]["code"], &e["output"]["x"]), (&json!("second"), &json!("one"), &json!("a")), "{e}");

    // The list, newest first; versions that did not change the code share it.
    let (status, list) = c.get("/api/functions/ver/versions");
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|v| v["version"].as_i64().unwrap()).collect::<Vec<_>>(), vec![3, 2, 1], "{list}");
    assert_eq!(items[0]["code_sha256"], items[1]["code_sha256"], "{list}");
    assert_ne!(items[1]["code_sha256"], items[2]["code_sha256"], "{list}");
    assert_eq!((&items[0]["memory"], &items[2]["env"], &items[2]["secrets"], &items[2]["state"]), (&json!(256), &json!({"X": "a"}), &json!(["TOK"]), &json!("active")), "{list}");
    assert!(items[0].get("code").is_none(), "lists carry no code: {list}");
    let (status, page) = c.get("/api/functions/ver/versions?limit=2");
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 2), "{page}");
    let (_, rest) = c.get(&format!("/api/functions/ver/versions?limit=2&cursor={}", page["next_cursor"].as_str().unwrap()));
    assert_eq!(rest["items"][0]["version"], 1, "{rest}");
    let (status, v1) = c.get("/api/functions/ver/versions/1");
    assert_eq!((status, &v1["code"]), (200, &json!(code("one"))), "{v1}");

    // Filter the records by version.
    let (_, runs) = c.get("/api/executions?function_id=ver&function_version=1");
    let runs = runs["items"].as_array().unwrap();
    assert!(runs.len() >= 4 && runs.iter().all(|e| e["function_version"] == 1), "{runs:?}");

    // The latest cannot be deleted; another can, and then it is gone.
    assert_eq!(error_code(&c, "DELETE", "/api/functions/ver/versions/3", &json!({}), 409), "version_is_latest");
    let (status, _) = c.delete("/api/functions/ver/versions/1");
    assert_eq!(status, 204);
    assert_eq!(error_code(&c, "POST", "/api/functions/ver:1/execute", &json!({}), 404), "version_not_found");
    assert_eq!(error_code(&c, "DELETE", "/api/functions/ver/versions/1", &json!({}), 404), "version_not_found");
    assert_eq!(error_code(&c, "GET", "/api/functions/ver/versions/1", &json!({}), 404), "version_not_found");
    assert_eq!(run(&c, "/api/functions/ver:2/execute")["output"]["code"], "two", "the others stay");

    // Bad and unknown qualifiers.
    for q in ["Bad", "0", "a%20b", "-1"] {
        let (status, b) = c.post(&format!("/api/functions/ver:{q}/execute"), &json!({}));
        assert_eq!(assert_error(status, &b, 400), "validation_failed", "{q}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().starts_with("qualifier:"), "{b}");
    }
    bad_field(&c, "POST", "/api/functions/ver:2/execute?qualifier=3", &json!({}), "qualifier");
    assert_eq!(error_code(&c, "POST", "/api/functions/ver:99/execute", &json!({}), 404), "version_not_found");
    assert_eq!(error_code(&c, "POST", "/api/functions/ver:nope/execute", &json!({}), 404), "alias_not_found");
    assert_eq!(error_code(&c, "POST", "/api/functions/ver:nope/execute?async=true", &json!({}), 404), "alias_not_found");

    // Another user sees none of it.
    let other = s.user();
    let id = f["id"].as_str().unwrap();
    for path in [format!("/api/functions/{id}/versions"), format!("/api/functions/{id}/versions/2"), "/api/functions/ver/versions".into()] {
        assert_eq!(error_code(&other, "GET", &path, &json!({}), 404), "not_found", "{path}");
    }
    assert_eq!(error_code(&other, "DELETE", &format!("/api/functions/{id}/versions/2"), &json!({}), 404), "not_found");
    assert_eq!(error_code(&other, "POST", &format!("/api/functions/{id}:2/execute"), &json!({}), 404), "not_found");
    assert_eq!(run(&c, "/api/functions/ver:2/execute")["function_version"], 2, "untouched");
}

#[test]
fn aliases_split_deterministically_and_a_route_rolls_back_in_one_put() {
    let s = Server::start();
    let c = s.user();
    let f = c.create_function("shop", "python", &code("one"), json!({}));
    let (status, _) = c.put("/api/functions/shop", &json!({"code": code("two")}));
    assert_eq!(status, 200);
    let route = unique_route("shop");
    let (status, a) = c.post("/api/functions/shop/aliases", &json!({"name": "live", "version": 1, "route": route, "description": "prod"}));
    assert_eq!(status, 201, "{a}");
    assert_eq!((&a["name"], &a["version"], &a["weights"], &a["route"], &a["function_id"]), (&json!("live"), &json!(1), &Value::Null, &json!(route), &f["id"]), "{a}");

    // Refusals name the field.
    let p = "/api/functions/shop/aliases";
    bad_field(&c, "POST", p, &json!({"name": "latest", "version": 1}), "name");
    bad_field(&c, "POST", p, &json!({"name": "12", "version": 1}), "name");
    bad_field(&c, "POST", p, &json!({"name": "Bad", "version": 1}), "name");
    bad_field(&c, "POST", p, &json!({"name": "x", "version": 9}), "version");
    bad_field(&c, "POST", p, &json!({"name": "x", "version": 1, "weights": {"1": 0.5}}), "weights");
    bad_field(&c, "POST", p, &json!({"name": "x", "version": 1, "weights": {"9": 0.5}}), "weights");
    bad_field(&c, "POST", p, &json!({"name": "x", "version": 1, "weights": {"2": 1.5}}), "weights");
    bad_field(&c, "POST", p, &json!({"name": "x", "version": 1, "weights": {"2": 0}}), "weights");
    bad_field(&c, "POST", p, &json!({"name": "x", "version": 1, "weights": {"2": 0.1, "1": 0.1}}), "weights");
    bad_field(&c, "POST", p, &json!({"name": "x", "version": 1, "route": "Bad Route"}), "route");
    bad_field(&c, "PUT", "/api/functions/shop/aliases/live", &json!({"weights": {"abc": 0.2}}), "weights");
    assert_eq!(error_code(&c, "POST", p, &json!({"name": "live", "version": 2}), 409), "alias_exists");
    assert_eq!(error_code(&c, "POST", p, &json!({"name": "other", "version": 2, "route": route}), 409), "route_taken");
    let g_route = unique_route("fnroute");
    c.create_function("routed", "python", &code("r"), json!({"route": g_route}));
    assert_eq!(error_code(&c, "POST", p, &json!({"name": "other", "version": 2, "route": g_route}), 409), "route_taken");
    let (status, b) = c.put("/api/functions/routed", &json!({"route": route}));
    assert_eq!(status, 409, "a function cannot take an alias's route: {b}");

    // The route runs the alias; one PUT moves it, and the next trigger call sees it.
    let trigger = |want: &str| {
        let r = c.raw("POST", &format!("/api/execute/{route}"), Some(b"{}"), &[("content-type", "application/json")]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["code"], want, "{}", String::from_utf8_lossy(&r.body));
    };
    trigger("one");
    let (status, a) = c.put("/api/functions/shop/aliases/live", &json!({"version": 2}));
    assert_eq!((status, &a["version"]), (200, &json!(2)), "{a}");
    trigger("two");
    let (status, _) = c.put("/api/functions/shop/aliases/live", &json!({"version": 1}));
    assert_eq!(status, 200);
    trigger("one");
    let (_, runs) = c.get("/api/executions?function_id=shop&trigger=http&limit=3");
    let runs = runs["items"].as_array().unwrap();
    assert_eq!(runs.iter().map(|e| (e["function_version"].as_i64().unwrap(), e["qualifier"].as_str().unwrap())).collect::<Vec<_>>(), vec![(1, "live"), (2, "live"), (1, "live")]);

    // A canary: 30% to version 2, each invocation where the hash formula says.
    let (status, a) = c.put("/api/functions/shop/aliases/live", &json!({"weights": {"2": 0.3}}));
    assert_eq!((status, &a["weights"]), (200, &json!({"2": 0.3})), "{a}");
    let n = 80;
    let mut to_two = 0;
    for _ in 0..n {
        let e = run(&c, "/api/functions/shop:live/execute");
        let want = expected_version(e["id"].as_str().unwrap(), 1, 2, 0.3);
        assert_eq!(e["function_version"], want, "{e}");
        assert_eq!(e["output"]["code"], if want == 2 { "two" } else { "one" }, "{e}");
        to_two += (want == 2) as u32;
    }
    println!("canary 0.3 over {n} runs: {to_two} to version 2");
    assert!(to_two > 0 && to_two < n, "both versions ran: {to_two}/{n}");
    // Versions an alias points to cannot be deleted.
    assert_eq!(error_code(&c, "DELETE", "/api/functions/shop/versions/1", &json!({}), 409), "version_in_use");
    let (status, _) = c.put("/api/functions/shop", &json!({"memory": 256}));
    assert_eq!(status, 200, "version 3");
    assert_eq!(error_code(&c, "DELETE", "/api/functions/shop/versions/2", &json!({}), 409), "version_in_use");
    let (status, a) = c.put("/api/functions/shop/aliases/live", &json!({"weights": null}));
    assert_eq!((status, &a["weights"]), (200, &Value::Null), "{a}");
    let (status, _) = c.delete("/api/functions/shop/versions/2");
    assert_eq!(status, 204, "no alias holds version 2 any more");
    let (_, one) = c.get("/api/functions/shop/versions/1");
    assert_eq!(one["aliases"], json!(["live"]), "{one}");

    // Another user: every alias route is a 404, and their own alias names stay theirs.
    let other = s.user();
    let id = f["id"].as_str().unwrap();
    for (m, path, body) in [
        ("GET", format!("/api/functions/{id}/aliases"), json!({})),
        ("GET", format!("/api/functions/{id}/aliases/live"), json!({})),
        ("PUT", format!("/api/functions/{id}/aliases/live"), json!({"version": 3})),
        ("DELETE", format!("/api/functions/{id}/aliases/live"), json!({})),
        ("POST", format!("/api/functions/{id}/aliases"), json!({"name": "mine", "version": 1})),
        ("POST", format!("/api/functions/{id}:live/execute"), json!({})),
    ] {
        assert_eq!(error_code(&other, m, &path, &body, 404), "not_found", "{m} {path}");
    }
    let r = other.raw("POST", &format!("/api/execute/{route}"), Some(b"{}"), &[]);
    assert_eq!(r.status, 404, "a private alias route is another user's 404");
    let (_, a) = c.get("/api/functions/shop/aliases/live");
    assert_eq!(a["version"], 1, "{a}");

    // Unbind the route, then delete the alias.
    let (status, a) = c.put("/api/functions/shop/aliases/live", &json!({"route": null}));
    assert_eq!((status, &a["route"]), (200, &Value::Null), "{a}");
    let r = c.raw("POST", &format!("/api/execute/{route}"), Some(b"{}"), &[]);
    assert_eq!(r.status, 404);
    let (status, list) = c.get("/api/functions/shop/aliases");
    assert_eq!((status, list["items"].as_array().unwrap().len()), (200, 1), "{list}");
    let (status, _) = c.delete("/api/functions/shop/aliases/live");
    assert_eq!(status, 204);
    assert_eq!(error_code(&c, "GET", "/api/functions/shop/aliases/live", &json!({}), 404), "alias_not_found");
    assert_eq!(error_code(&c, "POST", "/api/functions/shop:live/execute", &json!({}), 404), "alias_not_found");
    let (status, _) = c.delete("/api/functions/shop/versions/1");
    assert_eq!(status, 204, "free once no alias holds it");
}

#[test]
fn async_runs_and_schedules_run_the_qualified_version() {
    let s = Server::start();
    let c = s.user();
    c.create_function("job", "python", &code("one"), json!({}));
    let (status, _) = c.put("/api/functions/job", &json!({"code": code("two")}));
    assert_eq!(status, 200);
    let (status, a) = c.post("/api/functions/job/aliases", &json!({"name": "stable", "version": 1}));
    assert_eq!(status, 201, "{a}");

    // Async: the alias resolves at enqueue; the run is that version.
    let (status, q) = c.post("/api/functions/job:stable/execute?async=true", &json!({}));
    assert_eq!(status, 202, "{q}");
    assert_eq!((&q["function_version"], &q["qualifier"]), (&json!(1), &json!("stable")), "{q}");
    let (status, a) = c.put("/api/functions/job/aliases/stable", &json!({"version": 2}));
    assert_eq!(status, 200, "{a}");
    let done = c.wait_done(q["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(
        (&done["status"], &done["output"]["code"], &done["function_version"], &done["qualifier"]),
        (&json!("success"), &json!("one"), &json!(1), &json!("stable")),
        "{done}"
    );
    let (status, q) = c.post("/api/functions/job/execute?async=1&qualifier=1", &json!({}));
    assert_eq!(status, 202, "{q}");
    let done = c.wait_done(q["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!((&done["output"]["code"], &done["function_version"], &done["qualifier"]), (&json!("one"), &json!(1), &json!("1")), "{done}");
    let (status, _) = c.put("/api/functions/job/aliases/stable", &json!({"version": 1}));
    assert_eq!(status, 200);

    // A schedule with a qualifier: validated, and its ticks run that version.
    bad_field(&c, "PUT", "/api/functions/job", &json!({"schedule_qualifier": "nope"}), "schedule_qualifier");
    bad_field(&c, "PUT", "/api/functions/job", &json!({"schedule_qualifier": "77"}), "schedule_qualifier");
    bad_field(&c, "PUT", "/api/functions/job", &json!({"schedule_qualifier": "Bad!"}), "schedule_qualifier");
    let (status, f) = c.put("/api/functions/job", &json!({"schedule": "* * * * * *", "schedule_qualifier": "stable"}));
    assert_eq!((status, &f["schedule_qualifier"]), (200, &json!("stable")), "{f}");
    assert_eq!(error_code(&c, "DELETE", "/api/functions/job/aliases/stable", &json!({}), 409), "alias_in_use");
    let until = Instant::now() + Duration::from_secs(30);
    let tick = loop {
        let (_, runs) = c.get("/api/executions?function_id=job&trigger=schedule&status=success");
        if let Some(e) = runs["items"].as_array().and_then(|r| r.first()).cloned() {
            break e;
        }
        assert!(Instant::now() < until, "no scheduled run finished in 30 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((&tick["output"]["code"], &tick["function_version"], &tick["qualifier"]), (&json!("one"), &json!(1), &json!("stable")), "{tick}");
    // Version 1 is held by the alias; the version the schedule names is held too.
    let (status, f) = c.put("/api/functions/job", &json!({"schedule": null, "schedule_qualifier": "2"}));
    assert_eq!(status, 200, "{f}");
    assert_eq!(error_code(&c, "DELETE", "/api/functions/job/versions/2", &json!({}), 409), "version_in_use");
    let (status, _) = c.delete("/api/functions/job/aliases/stable");
    assert_eq!(status, 204, "the schedule no longer runs it");
}

#[test]
fn retention_prunes_the_oldest_versions_no_alias_holds() {
    let s = Server::start_with(&temp_dir("versions-retention"), &["--version-retention", "3"], true);
    let c = s.user();
    c.create_function("many", "python", &code("v1"), json!({}));
    let (status, _) = c.post("/api/functions/many/aliases", &json!({"name": "pinned", "version": 1}));
    assert_eq!(status, 201);
    for v in 2..=7 {
        let (status, u) = c.put("/api/functions/many", &json!({"code": code(&format!("v{v}"))}));
        assert_eq!((status, &u["version"]), (200, &json!(v)), "{u}");
    }
    let (_, list) = c.get("/api/functions/many/versions");
    let kept: Vec<i64> = list["items"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(kept, vec![7, 6, 5, 1], "the newest 3 and the one an alias holds: {list}");
    assert_eq!(run(&c, "/api/functions/many:pinned/execute")["output"]["code"], "v1");
    assert_eq!(error_code(&c, "POST", "/api/functions/many:3/execute", &json!({}), 404), "version_not_found");
    assert_eq!(run(&c, "/api/functions/many:5/execute")["output"]["code"], "v5");
}

/// The dependency build of a `six` package: versions that change no dependency file share
/// its tree (no rebuild), and they keep running after a later update whose build failed.
#[test]
fn package_versions_share_the_tree_and_survive_a_failed_update() {
    let s = Server::start();
    let c = s.user();
    let files = json!({"main.py": "import six\ndef handler(e, c):\n    return {'code': 'one', 'six': six.__version__}\n", "requirements.txt": "six\n"});
    let (status, f) = c.post("/api/functions", &json!({"name": "pkg", "runtime": "python", "files": files}));
    assert_eq!(status, 201, "{f}");
    let until = Instant::now() + Duration::from_secs(600);
    let wait_built = || loop {
        let (_, f) = c.get("/api/functions/pkg");
        if f["state"] != "pending" && f["last_update_status"] != "in_progress" {
            return f;
        }
        assert!(Instant::now() < until, "build still going: {f}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(wait_built()["state"], "active");
    let (_, b1) = c.get("/api/functions/pkg/build");
    let (status, u) = c.put("/api/functions/pkg", &json!({"memory": 256}));
    assert_eq!((status, &u["version"], &u["state"]), (200, &json!(2), &json!("active")), "{u}");
    let (_, b2) = c.get("/api/functions/pkg/build");
    assert_eq!(b1["id"], b2["id"], "no rebuild for a change of memory");
    let six = run(&c, "/api/functions/pkg:1/execute")["output"]["six"].clone();
    assert!(six.is_string(), "{six}");
    assert_eq!(run(&c, "/api/functions/pkg:2/execute")["output"]["six"], six);
    let (_, list) = c.get("/api/functions/pkg/versions");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items[0]["package_sha256"], items[1]["package_sha256"], "one package for both: {list}");

    // A broken update: its build fails, nothing of it becomes a version, both versions run.
    let broken = json!({"main.py": "def handler(e, c):\n    return {'code': 'broken'}\n", "requirements.txt": "six\nvoltrun-no-such-package-77d2e0\n"});
    let (status, u) = c.put("/api/functions/pkg", &json!({"files": broken}));
    assert_eq!(status, 200, "{u}");
    let f = wait_built();
    assert_eq!((&f["state"], &f["last_update_status"], &f["version"]), (&json!("active"), &json!("failed"), &json!(2)), "{f}");
    let (_, list) = c.get("/api/functions/pkg/versions");
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    for q in ["1", "2", "latest"] {
        let e = run(&c, &format!("/api/functions/pkg:{q}/execute"));
        assert_eq!((&e["output"]["code"], &e["output"]["six"]), (&json!("one"), &six), "{q}: {e}");
    }
}
