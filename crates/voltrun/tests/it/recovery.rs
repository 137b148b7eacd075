//! Durability: async runs acknowledged with 202 survive `kill -9` of the server.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[test]
fn async_runs_survive_kill_9_and_none_stays_running() {
    let dir = temp_dir("crash");
    // A short lease, so that on PostgreSQL (where runs are settled when their node's lease
    // expires, not at start) the test does not wait long.
    let args = ["--function-concurrency", "2", "--lease-seconds", "3"];
    let mut s = Server::start_with(&dir, &args, true);
    let c = s.user();
    c.create_function("work", "python", "import time\ndef handler(e, c):\n    time.sleep(0.2)\n    return e['i']\n", json!({}));
    c.create_function("hang", "python", "import time\ndef handler(e, c):\n    time.sleep(60)\n    return 'slept'\n", json!({"timeout": 120}));
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = c.raw("POST", "/api/functions/work/execute?async=true", Some(json!({"i": i}).to_string().as_bytes()), &[]);
        assert_eq!(r.status, 202);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    // A synchronous run in flight when the server dies ends as Interrupted.
    let c2 = c.clone();
    let sync_call = std::thread::spawn(move || c2.raw("POST", "/api/functions/hang/execute", Some(b"{}"), &[]).status);
    std::thread::sleep(Duration::from_millis(700));
    s.kill9();
    let _ = sync_call.join();
    // The killed server's instances do not outlive it, busy ones included (the isolating
    // tiers watch the server's lifeline; the development process tier cannot).
    let marker = if sandbox() == "process" { "no-such-process".to_string() } else { dir.display().to_string() };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                let ppid = status.lines().find(|l| l.starts_with("PPid:")).unwrap_or("").to_string();
                let wchan = std::fs::read_to_string(e.path().join("wchan")).unwrap_or_default();
                Some(format!(
                    "{} [{}, {ppid}, wchan {wchan}] {}",
                    e.file_name().to_string_lossy(),
                    status.lines().nth(2).unwrap_or(""),
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ))
            })
            .filter(|c| c.contains(&marker))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "instances outlived the killed server: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let s2 = s.restarted(&args);
    let c = Client { base: s2.base.clone(), auth: c.auth.clone() };
    let until = Instant::now() + Duration::from_secs(60);
    for (i, id) in ids.iter().enumerate() {
        let e = c.wait_done(id, until.saturating_duration_since(Instant::now()));
        assert_eq!(e["status"], "success", "{e}");
        assert_eq!(e["output"], i as i64);
        assert!(e["attempts"].as_i64().unwrap() >= 1);
    }
    let (_, hung) = c.get("/api/executions?function_id=hang");
    let hung = &hung["items"][0];
    assert_eq!(hung["status"], "failed", "{hung}");
    assert_eq!(hung["error"]["type"], "Interrupted", "{hung}");
    let (_, running) = c.get("/api/executions?status=running");
    let (_, pending) = c.get("/api/executions?status=pending");
    assert!(running["items"].as_array().unwrap().is_empty() && pending["items"].as_array().unwrap().is_empty());
    // Runs settled after the crash are in the dashboard's totals, once.
    c.assert_dashboard_matches_executions();
}
