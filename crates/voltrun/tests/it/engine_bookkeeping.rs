//! Issue 13, engine: the instance bookkeeping (the `instances`, `idle_instances` and
//! `spare_instances` gauges, claimed async runs, open log streams) is kept by guards, so runs
//! whose callers went away mid-run (a sync caller, a test-run caller, a log follower hanging
//! up) and runs whose instance died (a module that does not load, a timeout) leave nothing
//! counted once they are over. Checked through /metrics.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// Sends a request on a raw connection and returns it unread (the caller hangs up on it).
fn send_raw(c: &Client, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let addr = c.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    if let Some((k, v)) = &c.auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// The engine's gauges, read from one /metrics answer.
fn gauges(s: &Server) -> [i64; 5] {
    let text = String::from_utf8_lossy(&s.anon().raw("GET", "/metrics", None, &[]).body).into_owned();
    let read = |name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok())).unwrap_or(-1);
    ["voltrun_instances", "voltrun_spare_instances", "voltrun_idle_instances", "voltrun_async_in_flight", "voltrun_log_streams"].map(read)
}

/// Waits (bounded) until the gauges satisfy `ok`; returns them.
fn wait_gauges(s: &Server, what: &str, ok: impl Fn([i64; 5]) -> bool) -> [i64; 5] {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let g = gauges(s);
        if ok(g) {
            return g;
        }
        assert!(Instant::now() < until, "{what}: [instances, spares, idle, async in flight, log streams] = {g:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls (bounded) until a run of `function` has been recorded as `status`; returns it.
fn wait_recorded(c: &Client, function: &str, status: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, list) = c.get(&format!("/api/executions?function_id={function}&status={status}"));
        assert_eq!(code, 200, "{list}");
        if let Some(e) = list["items"].as_array().and_then(|i| i.first()) {
            return e.clone();
        }
        assert!(Instant::now() < until, "no {status} run of {function}: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn gauges_and_counts_return_to_zero_after_cancelled_and_failed_runs() {
    let s = Server::start();
    let c = s.user();
    let slow = "import time\ndef handler(e, c):\n    print('started', flush=True)\n    time.sleep(2)\n    return {'done': True}\n";
    c.create_function("slow", "python", slow, json!({}));
    c.create_function("broken", "python", "def handler(e, c)\n    return 1\n", json!({}));
    c.create_function("stuck", "python", "import time\ndef handler(e, c):\n    time.sleep(30)\n", json!({"timeout": 1}));

    // A synchronous caller hangs up mid-run: the run goes on and is recorded.
    let conn = send_raw(&c, "POST", "/api/functions/slow/execute", b"{}");
    wait_recorded(&c, "slow", "running");
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(conn);
    let e = wait_recorded(&c, "slow", "success");
    assert!(e["output"].to_string().contains("done"), "{e}");

    // Its instance is warm: counted once live and once idle, beside the ready spares.
    wait_gauges(&s, "one warm instance", |g| g[0] == g[1] + 1 && g[2] == 1);

    // An async run whose log follower hangs up mid-run.
    let r = c.raw("POST", "/api/functions/slow/execute?async=true", Some(b"{}"), &[]);
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let follower = send_raw(&c, "GET", &format!("/api/executions/{id}/logs?follow=true"), b"");
    wait_gauges(&s, "the follower counted", |g| g[4] == 1);
    follower.shutdown(std::net::Shutdown::Both).unwrap();
    drop(follower);
    let done = c.wait_done(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");

    // A test run whose caller hangs up mid-run: its fresh instance is stopped at its end.
    let body = serde_json::to_vec(&json!({"runtime": "python", "code": slow, "event": {}})).unwrap();
    let conn = send_raw(&c, "POST", "/api/functions/test", &body);
    std::thread::sleep(Duration::from_millis(300));
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(conn);

    // Instances that die: a module that does not load, a run past its timeout.
    let (code, broken) = c.post("/api/functions/broken/execute", &json!({}));
    assert_eq!(broken["error"]["type"], "RuntimeError", "{code} {broken}");
    let (code, stuck) = c.post("/api/functions/stuck/execute", &json!({}));
    assert_eq!(stuck["error"]["type"], "Timeout", "{code} {stuck}");

    // Everything over: only the warm instance of `slow` is left, nothing in flight.
    wait_gauges(&s, "only the warm instance left", |g| g[0] == g[1] + 1 && g[2] == 1 && g[3] == 0 && g[4] == 0);

    // Deleting the function stops its warm instance: nothing but the spares is counted.
    let (code, _) = c.delete("/api/functions/slow");
    assert!(code == 200 || code == 204, "{code}");
    wait_gauges(&s, "nothing but spares", |g| g[0] == g[1] && g[2] == 0 && g[3] == 0 && g[4] == 0);
}

/// The server log without ANSI colour sequences (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Issue 13: every event of a run is logged in its `invoke` span, which carries the execution
/// id and the function id; the retry of a failed async run (logged by the run's own task) is one.
#[test]
fn a_runs_events_are_logged_in_its_invoke_span_with_the_execution_id() {
    let s = Server::start_with(&temp_dir("span"), &["--retry-backoff-ms", "100"], true);
    let c = s.user();
    let f = c.create_function("flaky", "python", "def handler(e, c):\n    raise ValueError('no')\n", json!({"max_retries": 1}));
    let r = c.raw("POST", "/api/functions/flaky/execute?async=true", Some(b"{}"), &[]);
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let done = c.wait_done(&id, Duration::from_secs(60));
    assert_eq!((done["status"].as_str(), done["attempts"].as_i64()), (Some("failed"), Some(2)), "{done}");
    let log = plain(&std::fs::read_to_string(s.data_dir.with_extension("stderr.log")).unwrap());
    let line = log.lines().find(|l| l.contains("retrying a failed async run")).unwrap_or_else(|| panic!("no retry logged:\n{log}"));
    assert!(line.contains("invoke{") && line.contains(&format!("execution_id={id}")), "{line}");
    assert!(line.contains(&format!("function_id={}", f["id"].as_str().unwrap())), "{line}");
}
