//! The durable queue's promises on any database: async retries with backoff and a visible
//! final failure, idempotency keys, and cron schedules.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[test]
fn failed_async_runs_are_retried_then_left_visible() {
    let dir = temp_dir("retry");
    let s = Server::start_with(&dir, &["--retry-backoff-ms", "100"], true);
    let c = s.user();
    // Fails on its first two attempts (module state survives on the warm instance).
    c.create_function(
        "flaky",
        "python",
        "n = 0\ndef handler(e, c):\n    global n\n    n += 1\n    if n < 3:\n        raise RuntimeError(f'attempt {n} failed')\n    return n\n",
        json!({}),
    );
    let r = c.raw("POST", "/api/functions/flaky/execute?async=true", Some(b"{}"), &[]);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["max_attempts"], 3, "max_retries defaults to 2, as Lambda");
    let e = c.wait_done(r.json()["id"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!((e["status"].as_str(), e["output"].as_i64(), e["attempts"].as_i64()), (Some("success"), Some(3), Some(3)), "{e}");

    c.create_function("doomed", "node", "exports.handler = async () => { throw new Error('always'); };", json!({"max_retries": 1}));
    let r = c.raw("POST", "/api/functions/doomed/execute?async=true", Some(b"{}"), &[]);
    let e = c.wait_done(r.json()["id"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!((e["status"].as_str(), e["attempts"].as_i64(), e["error"]["type"].as_str()), (Some("failed"), Some(2), Some("HandlerError")), "{e}");
    // The dead-letter view: failed async runs.
    let (_, dead) = c.get("/api/executions?status=failed&trigger=async");
    let ids: Vec<&str> = dead["items"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![e["id"].as_str().unwrap()]);
    // Synchronous runs are never retried: the caller sees the failure.
    let e = c.invoke("doomed", &json!({}));
    assert_eq!((e["status"].as_str(), e["attempts"].as_i64()), (Some("failed"), Some(1)));
    // max_retries is validated.
    let (status, body) = c.put("/api/functions/doomed", &json!({"max_retries": 11}));
    assert_error(status, &body, 400);
}

#[test]
fn an_idempotency_key_returns_the_same_execution_and_runs_once() {
    let s = Server::start();
    let c = s.user();
    c.create_function("once", "python", "n = 0\ndef handler(e, c):\n    global n\n    n += 1\n    return n\n", json!({}));
    let key = [("idempotency-key", "order-42")];
    let a = c.raw("POST", "/api/functions/once/execute", Some(b"{}"), &key).json();
    let b = c.raw("POST", "/api/functions/once/execute", Some(b"{}"), &key).json();
    assert_eq!(a["id"], b["id"]);
    assert_eq!((a["output"].as_i64(), b["output"].as_i64()), (Some(1), Some(1)), "the function ran once");
    // A different key is a new run on the same warm instance.
    let other = c.raw("POST", "/api/functions/once/execute", Some(b"{}"), &[("idempotency-key", "order-43")]).json();
    assert_eq!(other["output"], 2);
    // Async: the second request gets the first's execution.
    let key = [("idempotency-key", "async-1")];
    let a = c.raw("POST", "/api/functions/once/execute?async=true", Some(b"{}"), &key);
    let b = c.raw("POST", "/api/functions/once/execute?async=true", Some(b"{}"), &key);
    assert_eq!((a.status, b.status), (202, 202));
    assert_eq!(a.json()["id"], b.json()["id"]);
    c.wait_done(a.json()["id"].as_str().unwrap(), Duration::from_secs(30));
    let (_, list) = c.get("/api/executions?function_id=once&trigger=async");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Keys are validated.
    let r = c.raw("POST", "/api/functions/once/execute", Some(b"{}"), &[("idempotency-key", &"k".repeat(300))]);
    assert_eq!(r.status, 400);
}

#[test]
fn a_schedule_fires_once_per_tick() {
    let s = Server::start();
    let c = s.user();
    let (status, f) = c.post("/api/functions", &json!({"name": "tick", "runtime": "python", "code": "def handler(e, c):\n    return e['time']\n", "schedule": "*/2 * * * * *"}));
    assert_eq!(status, 201, "{f}");
    assert_eq!(f["schedule"], "*/2 * * * * *");
    std::thread::sleep(Duration::from_secs(7));
    let (status, _) = c.put("/api/functions/tick", &json!({"schedule": null}));
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let (_, list) = c.get("/api/executions?function_id=tick&trigger=schedule&limit=100");
    let mut ticks: Vec<String> = list["items"].as_array().unwrap().iter().map(|e| e["input"]["time"].as_str().unwrap().to_string()).collect();
    ticks.sort();
    let n = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick fired twice: {ticks:?}");
    assert!((3..=6).contains(&n), "expected a run every 2 s for ~7 s, got {ticks:?}");
    for t in &ticks {
        let secs: u32 = t[17..19].parse().unwrap();
        assert_eq!(secs % 2, 0, "{t}");
    }
    let (status, body) = c.post("/api/functions", &json!({"name": "badcron", "runtime": "python", "code": "x", "schedule": "61 * * * *"}));
    assert_error(status, &body, 400);
}
