//! Functions over HTTP: CRUD, defaults, pagination, validation, the system endpoints, the
//! dashboard, and that no user ever reaches another's functions or executions (BOLA).

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::*;

const PY_ECHO: &str = "def handler(event, context):\n    return event\n";
const NODE_ECHO: &str = "exports.handler = async (e) => e;\n";

fn ids(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap_or_else(|| panic!("no items: {list}")).iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn create_applies_defaults_and_canonical_runtimes() {
    let server = Server::start();
    let user = server.user();
    let f = user.create_function("py-fn", "python", PY_ECHO, json!({}));
    assert!(f["id"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    assert_eq!(f["name"], "py-fn");
    assert_eq!(f["runtime"], "python3.11");
    assert_eq!(f["code"], PY_ECHO);
    assert_eq!(f["handler"], "handler");
    assert_eq!(f["memory"], 128);
    assert_eq!(f["timeout"], 30);
    assert_eq!(f["version"], 1);
    assert_eq!(f["public"], false);
    assert_eq!(f["env"], json!({}));
    assert!(f["route"].is_null(), "{f}");
    let created = f["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.as_bytes()[10] == b'T', "{created}");
    assert_eq!(f["created_at"], f["updated_at"]);
    assert!(f.get("user_id").is_none(), "{f}");

    let n = user.create_function("node-fn", "node", NODE_ECHO, json!({}));
    assert_eq!(n["runtime"], "nodejs20");
    for (name, alias, canonical) in [("a1", "nodejs", "nodejs20"), ("a2", "nodejs20", "nodejs20"), ("a3", "python3", "python3.11"), ("a4", "python3.11", "python3.11")] {
        let code = if canonical == "nodejs20" { NODE_ECHO } else { PY_ECHO };
        assert_eq!(user.create_function(name, alias, code, json!({}))["runtime"], canonical, "{alias}");
    }

    let full = user.create_function(
        "full",
        "nodejs20",
        "exports.main = async (e) => e;\n",
        json!({"description": "d", "handler": "main", "memory": 256, "timeout": 5, "env": {"A": "1"}, "route": "full/api", "public": true}),
    );
    for (k, v) in [
        ("description", json!("d")),
        ("handler", json!("main")),
        ("memory", json!(256)),
        ("timeout", json!(5)),
        ("env", json!({"A": "1"})),
        ("route", json!("full/api")),
        ("public", json!(true)),
    ] {
        assert_eq!(full[k], v, "{k}: {full}");
    }
}

#[test]
fn get_by_id_and_by_name() {
    let server = Server::start();
    let user = server.user();
    let f = user.create_function("lookup", "python", PY_ECHO, json!({}));
    let id = f["id"].as_str().unwrap();
    let (status, by_id) = user.get(&format!("/api/functions/{id}"));
    assert_eq!(status, 200, "{by_id}");
    let (status, by_name) = user.get("/api/functions/lookup");
    assert_eq!(status, 200, "{by_name}");
    assert_eq!(by_id, f);
    assert_eq!(by_name, f);
    let (status, body) = user.get("/api/functions/missing");
    assert_eq!(assert_error(status, &body, 404), "not_found");
    let (status, body) = server.anon().get(&format!("/api/functions/{id}"));
    assert_error(status, &body, 401);
}

#[test]
fn list_is_newest_first_and_paginates() {
    let server = Server::start();
    let user = server.user();
    let (status, empty) = user.get("/api/functions");
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));

    let created: Vec<String> = (0..5).map(|i| user.create_function(&format!("f{i}"), "python", PY_ECHO, json!({}))["id"].as_str().unwrap().to_string()).collect();
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let (status, all) = user.get("/api/functions");
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), newest_first);
    assert!(all["next_cursor"].is_null(), "{all}");
    // Lists carry no code (issue 12, item 11: hardening_quotas.rs); the function's own GET does.
    assert!(all["items"][0].get("code").is_none(), "{all}");

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/api/functions?limit=2".to_string();
    loop {
        let (status, page) = user.get(&path);
        assert_eq!(status, 200, "{page}");
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2, "{page}");
        seen.extend(page_ids);
        pages += 1;
        assert!(pages <= 4, "pagination does not end: {seen:?}");
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert!(!c.is_empty());
                path = format!("/api/functions?limit=2&cursor={c}");
            }
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                break;
            }
        }
    }
    assert_eq!(seen, newest_first, "every function once, newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);

    // Exactly a page's worth left still ends with null (possibly after an empty page).
    let (_, p) = user.get("/api/functions?limit=5");
    assert_eq!(ids(&p).len(), 5);
    if let Some(c) = p["next_cursor"].as_str() {
        let (status, rest) = user.get(&format!("/api/functions?limit=5&cursor={c}"));
        assert_eq!(status, 200, "{rest}");
        assert_eq!(rest, json!({"items": [], "next_cursor": null}));
    }
}

#[test]
fn update_is_partial_and_bumps_version_only_on_change() {
    let server = Server::start();
    let user = server.user();
    let f = user.create_function("upd", "python", PY_ECHO, json!({"route": "upd-route", "env": {"K": "v"}}));
    let id = f["id"].as_str().unwrap();

    let (status, u) = user.put(&format!("/api/functions/{id}"), &json!({"memory": 256}));
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["version"], 2);
    assert_eq!(u["memory"], 256);
    for k in ["name", "runtime", "code", "handler", "timeout", "env", "route", "public", "created_at"] {
        assert_eq!(u[k], f[k], "{k} changed by a partial update");
    }
    assert!(u["updated_at"].as_str().unwrap() >= f["updated_at"].as_str().unwrap());

    // The same values again: nothing changes.
    let (status, same) = user.put(&format!("/api/functions/{id}"), &json!({"memory": 256}));
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["version"], 2, "{same}");
    let (status, same) = user.put("/api/functions/upd", &json!({}));
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["version"], 2, "{same}");

    // Code changes count too, by name as well as by id.
    let code = "def handler(event, context):\n    return {'v': 3}\n";
    let (status, u) = user.put("/api/functions/upd", &json!({"code": code, "runtime": "python3"}));
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["version"], 3);
    assert_eq!(u["code"], code);
    assert_eq!(u["runtime"], "python3.11");
    let e = user.invoke("upd", &json!({}));
    assert_eq!(e["output"], json!({"v": 3}), "{e}");
    assert_eq!(e["function_version"], 3, "{e}");

    // route: null clears the route.
    let (status, u) = user.put(&format!("/api/functions/{id}"), &json!({"route": null}));
    assert_eq!(status, 200, "{u}");
    assert!(u["route"].is_null(), "{u}");
    assert_eq!(u["version"], 4);
    let (_, got) = user.get(&format!("/api/functions/{id}"));
    assert!(got["route"].is_null(), "{got}");
    assert_eq!(got, u);
    // The route is free again.
    let other = server.user();
    other.create_function("takes-route", "python", PY_ECHO, json!({"route": "upd-route"}));

    // Rename: the new name finds it, the old one does not.
    let (status, u) = user.put(&format!("/api/functions/{id}"), &json!({"name": "renamed"}));
    assert_eq!(status, 200, "{u}");
    assert_eq!(user.get("/api/functions/renamed").0, 200);
    assert_eq!(user.get("/api/functions/upd").0, 404);
}

#[test]
fn names_are_unique_per_user_and_routes_globally() {
    let server = Server::start();
    let (a, b) = (server.user(), server.user());
    a.create_function("same", "python", PY_ECHO, json!({"route": "shared"}));
    let (status, body) = a.post("/api/functions", &json!({"name": "same", "runtime": "python", "code": PY_ECHO}));
    assert_eq!(assert_error(status, &body, 409), "conflict");
    // Another user may use the name.
    let fb = b.create_function("same", "node", NODE_ECHO, json!({}));
    assert_eq!(fb["name"], "same");
    // Each sees their own.
    assert_eq!(a.get("/api/functions/same").1["runtime"], "python3.11");
    assert_eq!(b.get("/api/functions/same").1["runtime"], "nodejs20");

    // Routes are global.
    let (status, body) = b.post("/api/functions", &json!({"name": "other", "runtime": "python", "code": PY_ECHO, "route": "shared"}));
    assert_error(status, &body, 409);
    let (status, body) = a.post("/api/functions", &json!({"name": "other", "runtime": "python", "code": PY_ECHO, "route": "shared"}));
    assert_error(status, &body, 409);
    // Also through an update.
    let (status, body) = b.put("/api/functions/same", &json!({"route": "shared"}));
    assert_error(status, &body, 409);
    a.create_function("second", "python", PY_ECHO, json!({}));
    let (status, body) = a.put("/api/functions/second", &json!({"name": "same"}));
    assert_error(status, &body, 409);
    // A failed create left nothing behind.
    let (_, list) = b.get("/api/functions");
    assert_eq!(ids(&list).len(), 1, "{list}");
}

#[test]
fn delete_then_404() {
    let server = Server::start();
    let user = server.user();
    let f = user.create_function("doomed", "python", PY_ECHO, json!({"route": "doomed"}));
    let id = f["id"].as_str().unwrap();
    let (status, body) = user.delete(&format!("/api/functions/{id}"));
    assert_eq!(status, 204, "{body}");
    assert!(body.is_null(), "204 with a body: {body}");
    for path in [format!("/api/functions/{id}"), "/api/functions/doomed".to_string()] {
        let (status, body) = user.get(&path);
        assert_error(status, &body, 404);
    }
    let (status, body) = user.delete(&format!("/api/functions/{id}"));
    assert_error(status, &body, 404);
    let (status, body) = user.post(&format!("/api/functions/{id}/execute"), &json!({}));
    assert_error(status, &body, 404);
    let r = user.raw("GET", "/api/execute/doomed", None, &[]);
    assert_error(r.status, &r.json(), 404);
    // The name and the route can be used again.
    user.create_function("doomed", "python", PY_ECHO, json!({"route": "doomed"}));
}

#[test]
fn create_validates_every_field() {
    let server = Server::start();
    let user = server.user();
    let base = json!({"name": "ok", "runtime": "python", "code": PY_ECHO});
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!("Bad Name")),
        ("name", json!("UPPER")),
        ("name", json!("-leading")),
        ("name", json!("_leading")),
        ("name", json!("")),
        ("name", json!("a".repeat(65))),
        ("name", json!("dot.name")),
        ("name", json!("slash/name")),
        ("name", json!("ünï")),
        ("name", json!(5)),
        ("name", json!(null)),
        ("runtime", json!("ruby")),
        ("runtime", json!("")),
        ("runtime", json!("python2")),
        ("runtime", json!(20)),
        ("code", json!("")),
        ("code", json!(42)),
        ("handler", json!("")),
        ("handler", json!("1abc")),
        ("handler", json!("a b")),
        ("memory", json!(63)),
        ("memory", json!(4097)),
        ("memory", json!(0)),
        ("memory", json!(-128)),
        ("memory", json!(128.5)),
        ("memory", json!("128")),
        ("timeout", json!(0)),
        ("timeout", json!(901)),
        ("timeout", json!("30")),
        ("route", json!("/leading")),
        ("route", json!("trailing/")),
        ("route", json!("a//b")),
        ("route", json!("UPPER")),
        ("route", json!("sp ace")),
        ("route", json!("")),
        ("route", json!(7)),
        ("env", json!({"AWS_LAMBDA_X": "1"})),
        ("env", json!({"VOLTRUN_SECRET": "1"})),
        ("env", json!({"1BAD": "1"})),
        ("env", json!({"A": 1})),
        ("env", json!(["A=1"])),
        ("public", json!("yes")),
        ("description", json!(["d"])),
    ];
    for (field, value) in &cases {
        let mut body = base.clone();
        body[*field] = value.clone();
        let (status, resp) = user.post("/api/functions", &body);
        assert_eq!(status, 400, "{field} = {value} -> {status} {resp}");
        assert_error(status, &resp, 400);
    }
    // Missing required fields.
    for field in ["name", "runtime", "code"] {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        let (status, resp) = user.post("/api/functions", &body);
        assert_eq!(status, 400, "without {field} -> {resp}");
        assert_error(status, &resp, 400);
    }
    // Boundaries are accepted.
    let mut edge = base.clone();
    edge["name"] = json!("a".repeat(64));
    edge["memory"] = json!(64);
    edge["timeout"] = json!(900);
    let (status, resp) = user.post("/api/functions", &edge);
    assert_eq!(status, 201, "{resp}");
    let mut edge = base.clone();
    edge["name"] = json!("0-x_y");
    edge["memory"] = json!(4096);
    edge["timeout"] = json!(1);
    edge["route"] = json!("a/b-c_d/0");
    let (status, resp) = user.post("/api/functions", &edge);
    assert_eq!(status, 201, "{resp}");
    // Nothing invalid was stored.
    let (_, list) = user.get("/api/functions");
    assert_eq!(ids(&list).len(), 2, "{list}");
}

#[test]
fn update_validates_and_leaves_the_function_unchanged() {
    let server = Server::start();
    let user = server.user();
    let f = user.create_function("stay", "python", PY_ECHO, json!({}));
    for body in [
        json!({"memory": 63}),
        json!({"memory": 4097}),
        json!({"timeout": 0}),
        json!({"timeout": 901}),
        json!({"name": "Bad Name"}),
        json!({"runtime": "ruby"}),
        json!({"route": "/x"}),
        json!({"env": {"AWS_LAMBDA_X": "1"}}),
        json!({"memory": "128"}),
        json!({"code": ""}),
        json!({"id": "fn_other"}),
        json!({"version": 9}),
        json!({"user_id": "usr_x"}),
    ] {
        let (status, resp) = user.put("/api/functions/stay", &body);
        assert_eq!(status, 400, "{body} -> {resp}");
        assert_error(status, &resp, 400);
    }
    let (_, got) = user.get("/api/functions/stay");
    assert_eq!(got, f, "a rejected update changed the function");
}

#[test]
fn code_over_1_mib_is_413() {
    let server = Server::start();
    let user = server.user();
    let big = format!("{PY_ECHO}#{}\n", "x".repeat(1024 * 1024));
    let (status, body) = user.post("/api/functions", &json!({"name": "big", "runtime": "python", "code": big}));
    assert_eq!(assert_error(status, &body, 413), "payload_too_large");
    let f = user.create_function("small", "python", PY_ECHO, json!({}));
    let (status, body) = user.put("/api/functions/small", &json!({"code": big}));
    assert_error(status, &body, 413);
    assert_eq!(user.get("/api/functions/small").1, f);
    // Just under the limit is fine.
    let fits = format!("{PY_ECHO}#{}\n", "x".repeat(1024 * 1024 - PY_ECHO.len() - 2));
    assert_eq!(fits.len(), 1024 * 1024);
    let (status, body) = user.post("/api/functions", &json!({"name": "fits", "runtime": "python", "code": fits}));
    assert_eq!(status, 201, "{}", body["error"]);
}

#[test]
fn runtimes_health_metrics_openapi() {
    let server = Server::start();
    let user = server.user();

    let (status, rts) = user.get("/api/runtimes");
    assert_eq!(status, 200, "{rts}");
    let items = rts["items"].as_array().unwrap_or_else(|| panic!("{rts}"));
    for id in ["nodejs20", "python3.11"] {
        let rt = items.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("{id} missing: {rts}"));
        assert_eq!(rt["available"], true, "{rt}");
        assert!(rt["language"].as_str().is_some_and(|s| !s.is_empty()), "{rt}");
        assert!(rt["version"].as_str().is_some_and(|s| !s.is_empty()), "{rt}");
    }
    let (status, body) = server.anon().get("/api/runtimes");
    assert_error(status, &body, 401);

    let (status, h) = server.anon().get("/health");
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"], "ok");
    assert_eq!(h["sandbox"], crate::harness::sandbox().as_str());
    if h["sandbox"] == "namespace" {
        assert!(h["cgroup"] == "v1" || h["cgroup"] == "v2", "{h}");
    }
    assert!(h["version"].as_str().is_some_and(|v| !v.is_empty()), "{h}");

    user.create_function("m", "python", PY_ECHO, json!({}));
    user.invoke("m", &json!({}));
    let r = server.anon().raw("GET", "/metrics", None, &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("voltrun_invocations_total"), "{text}");
    assert!(text.contains("# TYPE voltrun_invocations_total counter"), "{text}");
    let python_count: f64 = text
        .lines()
        .find(|l| l.starts_with("voltrun_invocations_total") && l.contains("python"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no python sample: {text}"));
    assert!(python_count >= 1.0, "{text}");

    let (status, doc) = server.anon().get("/api/openapi.json");
    assert_eq!(status, 200, "{doc}");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "{doc}");
    let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("no paths: {doc}"));
    for p in ["/api/functions", "/api/functions/{id}", "/api/functions/{id}/execute", "/api/executions", "/api/executions/{id}/logs", "/api/keys", "/api/auth/login", "/health"] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI paths");
    }
    assert!(paths["/api/functions/{id}/execute"].get("post").is_some(), "{doc}");
}

#[test]
fn dashboard_after_invocations() {
    let server = Server::start();
    let user = server.user();
    let (status, d) = user.get("/api/dashboard");
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["last_24h"]["invocations"], 0, "{d}");
    assert_eq!(d["recent"], json!([]), "{d}");

    user.create_function("dash", "python", PY_ECHO, json!({}));
    let e1 = user.invoke("dash", &json!({"n": 1}));
    let e2 = user.invoke("dash", &json!({"n": 2}));
    let (status, d) = user.get("/api/dashboard");
    assert_eq!(status, 200, "{d}");
    assert!(d["last_24h"]["invocations"].as_u64().is_some_and(|n| n >= 2), "{d}");
    let hourly = d["hourly"].as_array().unwrap_or_else(|| panic!("no hourly: {d}"));
    assert_eq!(hourly.len(), 24, "{d}");
    let in_series: u64 = hourly.iter().map(|h| h["invocations"].as_u64().unwrap_or(0)).sum();
    assert!(in_series >= 2, "the hourly series misses the runs: {d}");
    assert!(d["duration_ms"]["p50"].is_number(), "{d}");
    let recent = d["recent"].as_array().unwrap_or_else(|| panic!("no recent: {d}"));
    assert!(!recent.is_empty(), "{d}");
    let recent_ids: Vec<&Value> = recent.iter().map(|e| &e["id"]).collect();
    assert!(recent_ids.contains(&&e1["id"]) && recent_ids.contains(&&e2["id"]), "{d}");
    assert_eq!(recent[0]["id"], e2["id"], "recent is newest first");
    user.assert_dashboard_matches_executions();
    // Failures, an async run and a run that writes its record twice (running, then
    // finished, because it outlasts the one-write window) are all counted once.
    user.create_function("dash-fail", "python", "def handler(e, c):\n    raise ValueError('no')\n", json!({}));
    user.create_function("dash-slow", "python", "import time\ndef handler(e, c):\n    time.sleep(0.2)\n    return 1\n", json!({}));
    assert_eq!(user.invoke("dash-fail", &json!({}))["status"], "failed");
    assert_eq!(user.invoke("dash-slow", &json!({}))["status"], "success");
    let (status, a) = user.post("/api/functions/dash/execute?async=true", &json!({}));
    assert_eq!(status, 202, "{a}");
    user.wait_done(a["id"].as_str().unwrap(), std::time::Duration::from_secs(30));
    user.assert_dashboard_matches_executions();
    let (_, d) = user.get("/api/dashboard");
    assert_eq!((&d["executions_total"], &d["last_24h"]["failed"]), (&json!(5), &json!(1)), "{d}");

    // Another user's dashboard is empty.
    let (_, other) = server.user().get("/api/dashboard");
    assert_eq!(other["last_24h"]["invocations"], 0, "{other}");
    assert_eq!(other["recent"], json!([]), "{other}");
    let (status, body) = server.anon().get("/api/dashboard");
    assert_error(status, &body, 401);
}

/// Asserts `status` is 404 with the error JSON (not 403, not 200).
fn assert_404(what: &str, status: u16, body: &Value) {
    assert_eq!(status, 404, "{what}: expected 404, got {status} {body}");
    assert_error(status, body, 404);
}

#[test]
fn other_users_functions_and_executions_are_404() {
    let server = Server::start();
    let (a, b) = (server.user(), server.user());
    let f = a.create_function("secret", "python", PY_ECHO, json!({"env": {"TOKEN": "s3cr3t"}}));
    let fid = f["id"].as_str().unwrap().to_string();
    let exec = a.invoke("secret", &json!({"private": true}));
    let eid = exec["id"].as_str().unwrap().to_string();
    let (status, pending) = a.post("/api/functions/secret/execute?async=true", &json!({"async": 1}));
    assert_eq!(status, 202, "{pending}");
    let async_id = pending["id"].as_str().unwrap().to_string();

    for target in [fid.as_str(), "secret"] {
        let (s, body) = b.get(&format!("/api/functions/{target}"));
        assert_404(&format!("GET {target}"), s, &body);
        let (s, body) = b.put(&format!("/api/functions/{target}"), &json!({"memory": 256}));
        assert_404(&format!("PUT {target}"), s, &body);
        let (s, body) = b.post(&format!("/api/functions/{target}/execute"), &json!({}));
        assert_404(&format!("execute {target}"), s, &body);
        let (s, body) = b.post(&format!("/api/functions/{target}/execute?async=true"), &json!({}));
        assert_404(&format!("async execute {target}"), s, &body);
        let (s, body) = b.delete(&format!("/api/functions/{target}"));
        assert_404(&format!("DELETE {target}"), s, &body);
    }
    for id in [&eid, &async_id] {
        let (s, body) = b.get(&format!("/api/executions/{id}"));
        assert_404("GET execution", s, &body);
        let (s, body) = b.get(&format!("/api/executions/{id}/logs"));
        assert_404("GET logs", s, &body);
        let r = b.raw("GET", &format!("/api/executions/{id}/logs?follow=true"), None, &[]);
        assert_404("follow logs", r.status, &r.json());
    }

    // B's lists hold none of A's items.
    let (_, fl) = b.get("/api/functions");
    assert_eq!(fl["items"], json!([]), "{fl}");
    let (_, el) = b.get("/api/executions");
    assert_eq!(el["items"], json!([]), "{el}");
    for filter in [fid.as_str(), "secret"] {
        let (s, el) = b.get(&format!("/api/executions?function_id={filter}"));
        assert_eq!(s, 200, "{el}");
        assert_eq!(el["items"], json!([]), "function_id={filter}: {el}");
    }
    let (_, d) = b.get("/api/dashboard");
    assert_eq!(d["recent"], json!([]), "{d}");
    assert!(!d.to_string().contains(&fid), "{d}");

    // Nothing B did changed A's function, and A still sees everything.
    let (s, still) = a.get(&format!("/api/functions/{fid}"));
    assert_eq!(s, 200, "{still}");
    assert_eq!(still, f);
    assert_eq!(a.get(&format!("/api/executions/{eid}")).0, 200);
    let (_, al) = a.get(&format!("/api/executions?function_id={fid}"));
    assert!(ids(&al).contains(&eid), "{al}");
    a.wait_done(&async_id, std::time::Duration::from_secs(60));
}

#[test]
fn http_trigger_requires_the_owner_unless_public() {
    let server = Server::start();
    let (a, b) = (server.user(), server.user());
    let code = "def handler(event, context):\n    return {'path': event['rawPath'], 'method': event['requestContext']['http']['method']}\n";
    a.create_function("private-fn", "python", code, json!({"route": "private"}));
    a.create_function("public-fn", "python", code, json!({"route": "open", "public": true}));

    // A stranger cannot tell a private route from a missing one (hardening_trigger.rs).
    let r = server.anon().raw("GET", "/api/execute/private", None, &[]);
    assert_404("anonymous on A's private route", r.status, &r.json());
    let r = b.raw("GET", "/api/execute/private", None, &[]);
    assert_404("B on A's private route", r.status, &r.json());
    let r = b.raw("POST", "/api/execute/private/sub/path", Some(b"{}"), &[]);
    assert_404("B on a sub-path", r.status, &r.json());
    let r = server.anon().with_header("authorization", "Bearer garbage").raw("GET", "/api/execute/private", None, &[]);
    assert_404("a bad token on A's private route", r.status, &r.json());

    let r = a.raw("GET", "/api/execute/private", None, &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"path": "/", "method": "GET"}));
    let r = a.raw("POST", "/api/execute/private/x/y?q=1", Some(b"hi"), &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/x/y");

    for client in [server.anon(), b.clone(), a.clone()] {
        let r = client.raw("GET", "/api/execute/open", None, &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["path"], "/");
    }
    let r = server.anon().raw("GET", "/api/execute/nothing-here", None, &[]);
    assert_404("unknown route", r.status, &r.json());

    // The HTTP runs are A's; B sees none of them.
    let (_, el) = b.get("/api/executions");
    assert_eq!(el["items"], json!([]), "{el}");
    let (_, al) = a.get("/api/executions?trigger=http");
    assert!(ids(&al).len() >= 5, "{al}");
}
