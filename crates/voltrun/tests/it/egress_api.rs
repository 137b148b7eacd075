//! A function's `egress` list (SPEC §11) as the API, the CLI and `/health` carry it: stored in
//! canonical spelling, round-tripped through create, get, list and update, every bad input a
//! 400 that names the entry, and a changed list a new version whose warm instances start
//! fresh. (What the list lets a run reach is the enforcement's, tested elsewhere.)

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::harness::*;

const PY_COUNT: &str = "n = 0\ndef handler(event, context):\n    global n\n    n += 1\n    return {'n': n}\n";

fn list_item(c: &Client, name: &str) -> Value {
    let (status, list) = c.get("/api/functions?limit=500");
    assert_eq!(status, 200, "{list}");
    list["items"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("{name} not listed: {list}")).clone()
}

/// The 400 of a bad egress: code `validation_failed`, a message that starts with the field
/// and quotes what was wrong.
fn assert_names(status: u16, body: &Value, expect: &str) {
    assert_eq!(assert_error(status, body, 400), "validation_failed", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("egress: "), "the message names the field: {msg}");
    assert!(msg.contains(expect), "the message names the entry ({expect}): {msg}");
}

#[test]
fn egress_round_trips_through_create_get_list_and_update() {
    let s = Server::start();
    let c = s.user();

    let plain = c.create_function("plain", "python", PY_COUNT, json!({}));
    assert_eq!(plain["egress"], json!([]), "no network by default: {plain}");
    assert_eq!(list_item(&c, "plain")["egress"], json!([]));

    let given = json!(["198.18.0.0/24", "198.18.1.5:5432", "API.Example.com", "*.svc.test:443", "public", "[2001:db8::/32]:443"]);
    let canonical = json!(["198.18.0.0/24", "198.18.1.5/32:5432", "api.example.com", "*.svc.test:443", "public", "[2001:db8::/32]:443"]);
    let f = c.create_function("net", "python", PY_COUNT, json!({"egress": given}));
    assert_eq!(f["egress"], canonical, "stored canonical: {f}");
    let (status, got) = c.get("/api/functions/net");
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["egress"], canonical);
    assert_eq!(list_item(&c, "net")["egress"], canonical, "lists carry it too");

    // The same list in another spelling is no change; a patch without egress keeps it.
    let (status, same) = c.put("/api/functions/net", &json!({"egress": given}));
    assert_eq!((status, same["version"].as_i64()), (200, Some(1)), "{same}");
    let (status, other) = c.put("/api/functions/net", &json!({"memory": 256}));
    assert_eq!((status, other["version"].as_i64(), &other["egress"]), (200, Some(2), &canonical), "{other}");

    // A new list replaces the old; [] and null clear it.
    let (status, n) = c.put("/api/functions/net", &json!({"egress": ["198.18.2.0/24:80"]}));
    assert_eq!((status, n["version"].as_i64(), &n["egress"]), (200, Some(3), &json!(["198.18.2.0/24:80"])), "{n}");
    assert_eq!(c.get("/api/functions/net").1["egress"], json!(["198.18.2.0/24:80"]));
    assert_eq!(list_item(&c, "net")["egress"], json!(["198.18.2.0/24:80"]));
    let (status, n) = c.put("/api/functions/net", &json!({"egress": []}));
    assert_eq!((status, n["version"].as_i64(), &n["egress"]), (200, Some(4), &json!([])), "{n}");
    c.put("/api/functions/net", &json!({"egress": ["public"]}));
    let (status, n) = c.put("/api/functions/net", &json!({"egress": null}));
    assert_eq!((status, n["version"].as_i64(), &n["egress"]), (200, Some(6), &json!([])), "{n}");
    assert_eq!(c.get("/api/functions/net").1["egress"], json!([]));

    // Exactly 64 entries is the most a list may hold.
    let most: Vec<String> = (0..64).map(|i| format!("198.18.0.{i}/32")).collect();
    let (status, n) = c.put("/api/functions/net", &json!({"egress": most}));
    assert_eq!((status, &n["egress"]), (200, &json!(most)), "{n}");

    // It survives a restart (read back from the database, not a cache).
    let s = s.restarted(&[]);
    let c = Client { base: s.base.clone(), auth: c.auth.clone() };
    assert_eq!(c.get("/api/functions/net").1["egress"], json!(most));
    assert_eq!(c.get("/api/functions/plain").1["egress"], json!([]));
}

#[test]
fn bad_egress_is_400_naming_the_entry_on_create_and_update() {
    let s = Server::start();
    let c = s.user();
    let f = c.create_function("keep", "python", PY_COUNT, json!({"egress": ["198.18.0.0/24"]}));
    let many: Vec<String> = (0..65).map(|i| format!("198.18.0.{i}")).collect();
    for (egress, expect) in [
        (json!(["198.18.0.0/33"]), "\"198.18.0.0/33\""),
        (json!(["198.18.0.1/24"]), "\"198.18.0.1/24\""),
        (json!(["300.1.1.1/8"]), "\"300.1.1.1/8\""),
        (json!(["public", "api.example.com:0"]), "\"api.example.com:0\""),
        (json!(["api.example.com:65536"]), "\"api.example.com:65536\""),
        (json!(["api.example.com:http"]), "\"api.example.com:http\""),
        (json!(["exa_mple.com"]), "\"exa_mple.com\""),
        (json!(["foo.*.com"]), "\"foo.*.com\""),
        (json!([""]), "entry \"\""),
        (json!(["  "]), "entry \"  \""),
        (json!(5), "must be a list of strings"),
        (json!("198.18.0.0/24"), "must be a list of strings"),
        (json!({"cidr": "198.18.0.0/24"}), "must be a list of strings"),
        (json!(["198.18.0.0/24", 7]), "entry 7 (number 2 in the list) is not a string"),
        (json!([["198.18.0.0/24"]]), "is not a string"),
        (json!(many), "at most 64 entries (got 65)"),
    ] {
        let (status, body) = c.post("/api/functions", &json!({"name": "bad", "runtime": "python", "code": PY_COUNT, "egress": egress}));
        assert_names(status, &body, expect);
        let (status, body) = c.put("/api/functions/keep", &json!({"egress": egress}));
        assert_names(status, &body, expect);
        let (status, body) = c.post("/api/functions/test", &json!({"runtime": "python", "code": PY_COUNT, "egress": egress}));
        assert_names(status, &body, expect);
    }
    let (status, body) = c.get("/api/functions/bad");
    assert_error(status, &body, 404);
    let (_, kept) = c.get("/api/functions/keep");
    assert_eq!((&kept["egress"], &kept["version"]), (&json!(["198.18.0.0/24"]), &f["version"]), "a refused update changes nothing: {kept}");
}

#[test]
fn health_says_whether_egress_is_available() {
    let s = Server::start();
    let (status, h) = s.anon().get("/health");
    assert_eq!(status, 200, "{h}");
    let e = h["egress"].as_object().unwrap_or_else(|| panic!("no egress object: {h}"));
    match e.get("available") {
        Some(Value::Bool(true)) => assert!(!e.contains_key("reason"), "a reason only when not available: {h}"),
        Some(Value::Bool(false)) => assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "unavailable says why: {h}"),
        other => panic!("egress.available is not a boolean ({other:?}): {h}"),
    }
}

#[test]
fn changed_egress_retires_warm_instances() {
    let s = Server::start();
    let c = s.user();
    let (_, h) = s.anon().get("/health");
    let available = h["egress"]["available"] == true;
    c.create_function("warm", "python", PY_COUNT, json!({}));
    let ns: Vec<i64> = (0..2).map(|_| c.invoke("warm", &json!({}))["output"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, vec![1, 2], "module state survives on a warm instance");

    let (status, f) = c.put("/api/functions/warm", &json!({"egress": ["198.18.0.0/24"]}));
    assert_eq!((status, f["version"].as_i64()), (200, Some(2)), "{f}");
    if available {
        // The tier enforces egress here: the new list runs on a new instance.
        let e = c.invoke("warm", &json!({}));
        assert_eq!((e["output"]["n"].as_i64(), e["function_version"].as_i64()), (Some(1), Some(2)), "{e}");
    }
    // Back to no network: again a new version, and the instance of version 1 (warm, with
    // n = 2, under the old list) never serves it.
    let (status, f) = c.put("/api/functions/warm", &json!({"egress": []}));
    assert_eq!((status, f["version"].as_i64()), (200, Some(3)), "{f}");
    let e = c.invoke("warm", &json!({}));
    assert_eq!((e["output"]["n"].as_i64(), e["function_version"].as_i64()), (Some(1), Some(3)), "{e}");
    let e = c.invoke("warm", &json!({}));
    assert_eq!(e["output"]["n"].as_i64(), Some(2), "the new version's instance is kept warm: {e}");
}

/// Runs the client binary with its own HOME; returns (exit code, stdout, stderr).
fn cli(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .env_remove("VOLTRUN_SERVER")
        .env_remove("VOLTRUN_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run voltrun");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn cli_json(home: &std::path::Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = cli(home, &a);
    assert_eq!(code, 0, "voltrun {}: {out}\n{err}", args.join(" "));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn cli_sets_shows_and_clears_egress() {
    let s = Server::start();
    let c = s.user();
    let (status, key) = c.post("/api/keys", &json!({"name": "cli"}));
    assert_eq!(status, 201, "{key}");
    let home = temp_dir("egress-cli");
    let api_key = key["key"].as_str().unwrap_or_else(|| panic!("no key: {key}"));
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .args(["login", "--server", &s.base, "--api-key", "-"])
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(format!("{api_key}\n").as_bytes())?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "login: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(home.join("h.py"), PY_COUNT).unwrap();

    let f = cli_json(&home, &["functions", "create", "net", "--file", "h.py", "--egress", "198.18.0.7", "--egress", "API.example.com:443"]);
    assert_eq!(f["egress"], json!(["198.18.0.7/32", "api.example.com:443"]), "{f}");
    assert_eq!(c.get("/api/functions/net").1["egress"], json!(["198.18.0.7/32", "api.example.com:443"]));
    let (code, shown, err) = cli(&home, &["functions", "get", "net"]);
    assert_eq!(code, 0, "{err}");
    let line = shown.lines().find(|l| l.trim_start().starts_with("egress")).unwrap_or_else(|| panic!("no egress line: {shown}"));
    assert!(line.contains("198.18.0.7/32 api.example.com:443"), "{shown}");

    let f = cli_json(&home, &["functions", "update", "net", "--egress", "public"]);
    assert_eq!((&f["egress"], f["version"].as_i64()), (&json!(["public"]), Some(2)), "{f}");
    let f = cli_json(&home, &["functions", "update", "net", "--memory", "256"]);
    assert_eq!(f["egress"], json!(["public"]), "other flags leave it: {f}");
    let f = cli_json(&home, &["functions", "update", "net", "--no-egress"]);
    assert_eq!((&f["egress"], f["version"].as_i64()), (&json!([]), Some(4)), "{f}");
    let (code, shown, _) = cli(&home, &["functions", "get", "net"]);
    assert_eq!(code, 0);
    assert!(shown.lines().any(|l| l.trim_start().starts_with("egress") && l.contains("no network")), "{shown}");

    // A bad entry: the server's 400, naming it, and a non-zero exit; nothing changed.
    let (code, _, err) = cli(&home, &["functions", "update", "net", "--egress", "198.18.0.0/24", "--egress", "198.18.0.0/33"]);
    assert_ne!(code, 0);
    assert!(err.contains("198.18.0.0/33") && err.contains("egress"), "{err}");
    assert_eq!(c.get("/api/functions/net").1["version"], 4);
    let (code, _, err) = cli(&home, &["functions", "update", "net", "--egress", "x", "--no-egress"]);
    assert_eq!(code, 2, "conflicting flags are a usage error: {err}");

    // deploy takes it as well.
    let f = cli_json(&home, &["functions", "deploy", "dep", "--file", "h.py", "--egress", "*.svc.test:443"]);
    assert_eq!(f["egress"], json!(["*.svc.test:443"]), "{f}");
    let _ = std::fs::remove_dir_all(&home);
}
