//! Scale-out on PostgreSQL: several `serve` nodes and `worker` processes share one database
//! and queue. Needs a PostgreSQL server (`VOLTRUN_TEST_PG_URL`, see scripts/pg-up).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

const SECRET: &str = "scale-out-test-secret-shared-by-every-serve-node-0123456789";

/// A `voltrun worker` process.
struct Worker {
    child: Option<Child>,
    dir: PathBuf,
}

impl Worker {
    fn start(db: &str) -> Worker {
        let dir = temp_dir("worker");
        let mut child = Command::new(env!("CARGO_BIN_EXE_voltrun"))
            .args(["worker", "--database-url", db, "--lease-seconds", "3", "--async-concurrency", "8", "--no-scheduler", "--data-dir"])
            .arg(&dir)
            .args(sandbox_args())
            .env("VOLTRUN_MASTER_KEY", crate::harness::TEST_MASTER_KEY)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.with_extension("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "voltrun worker ready", "worker did not start");
        Worker { child: Some(child), dir }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("stderr.log"));
    }
}

fn serve_node(db: &str) -> Server {
    let args: Vec<String> =
        ["--database-url", db, "--jwt-secret", SECRET, "--lease-seconds", "3", "--async-concurrency", "8", "--invoke-rate", "0"].iter().map(|s| s.to_string()).collect();
    Server::spawn(&temp_dir("node"), &args, true)
}

/// Every execution of a function, through the paginated list.
fn all_executions(c: &Client, function: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = c.get(&format!("/api/executions?function_id={function}&limit=500&cursor={cursor}"));
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return out,
        }
    }
}

#[test]
fn two_serve_nodes_and_two_workers_share_the_queue_and_survive_a_killed_worker() {
    let db = PgDatabase::create();
    let (a, b) = (serve_node(&db.url), serve_node(&db.url));
    let (mut w1, _w2) = (Worker::start(&db.url), Worker::start(&db.url));
    let ca = a.user();
    let cb = Client { base: b.base.clone(), auth: ca.auth.clone() };
    ca.create_function("work", "python", "import time\ndef handler(e, c):\n    time.sleep(0.02)\n    return e['i']\n", json!({}));

    const N: usize = 1000;
    let mut ids = vec![String::new(); N];
    let pushers: Vec<_> = (0..4)
        .map(|t| {
            let c = if t % 2 == 0 { ca.clone() } else { cb.clone() };
            std::thread::spawn(move || {
                (t..N)
                    .step_by(4)
                    .map(|i| {
                        let r = c.raw("POST", "/api/functions/work/execute?async=true", Some(json!({"i": i}).to_string().as_bytes()), &[]);
                        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
                        (i, r.json()["id"].as_str().unwrap().to_string())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Kill one worker while the queue is busy.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, list) = ca.get("/api/executions?function_id=work&status=success&limit=300");
        if list["items"].as_array().unwrap().len() >= 200 {
            break;
        }
        assert!(Instant::now() < until, "the queue is not moving");
        std::thread::sleep(Duration::from_millis(100));
    }
    w1.kill9();
    for p in pushers {
        for (i, id) in p.join().unwrap() {
            ids[i] = id;
        }
    }
    // Every acknowledged run reaches exactly one terminal state.
    let until = Instant::now() + Duration::from_secs(240);
    let runs = loop {
        let runs = all_executions(&ca, "work");
        let done = runs.iter().filter(|e| e["status"] == "success" || e["status"] == "failed").count();
        if done == N || Instant::now() > until {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(runs.len(), N, "every acknowledged run is stored once");
    let by_id: std::collections::HashMap<&str, &Value> = runs.iter().map(|e| (e["id"].as_str().unwrap(), e)).collect();
    let mut rerun = 0;
    for (i, id) in ids.iter().enumerate() {
        let e = by_id.get(id.as_str()).unwrap_or_else(|| panic!("run {i} ({id}) was lost"));
        assert_eq!((e["status"].as_str(), e["output"].as_i64()), (Some("success"), Some(i as i64)), "{e}");
        let attempts = e["attempts"].as_i64().unwrap();
        assert!((1..=2).contains(&attempts), "{e}");
        rerun += (attempts > 1) as usize;
    }
    // Only runs in flight on the killed worker ran again: at most its async concurrency.
    assert!(rerun <= 8, "{rerun} runs were re-run; the killed worker held at most 8");
    eprintln!("{rerun} runs were re-run after the worker was killed");
    // Settled by the lease reaper or finished by a worker: each run counted once.
    ca.assert_dashboard_matches_executions();
}

#[test]
fn a_schedule_fires_once_per_tick_across_nodes_even_when_one_restarts() {
    let db = PgDatabase::create();
    let a = serve_node(&db.url);
    let b = serve_node(&db.url);
    let ca = a.user();
    ca.create_function("tick", "python", "def handler(e, c):\n    return e['time']\n", json!({"schedule": "* * * * * *"}));
    std::thread::sleep(Duration::from_secs(4));
    // Restart node b mid-stream, as a deploy or crash would.
    let b = b.restarted(&["--database-url", &db.url, "--jwt-secret", SECRET, "--lease-seconds", "3"]);
    std::thread::sleep(Duration::from_secs(4));
    ca.put("/api/functions/tick", &json!({"schedule": null}));
    std::thread::sleep(Duration::from_secs(3));
    let runs = all_executions(&ca, "tick");
    let mut ticks: Vec<String> = runs.iter().map(|e| e["input"]["time"].as_str().unwrap().to_string()).collect();
    ticks.sort();
    let n = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick fired more than once: {ticks:?}");
    assert!(n >= 6, "a schedule firing every second for ~8 s fired {n} times: {ticks:?}");
    drop(b);
}
