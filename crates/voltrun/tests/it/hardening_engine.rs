//! Issue 12, engine scheduling: what an HTTP client or a tenant could do to other people's
//! runs. A client hanging up mid-run orphaned it, one user's async backlog took every
//! dispatcher slot, abandoned log followers kept polling, and one user's test runs took the
//! node's test slots.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// Sends a request on a raw connection and returns the connection (nothing read yet).
fn send_raw(base: &str, method: &str, path: &str, auth: Option<&(String, String)>, body: &[u8]) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    if let Some((k, v)) = auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// Reads a response's status line and headers (up to the blank line); returns the status.
fn read_head(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 << 10, "no end of headers: {}", String::from_utf8_lossy(&head));
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("the connection ended in the headers ({other:?}): {}", String::from_utf8_lossy(&head)),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text}"))
}

/// Opens `GET path` as a log stream and returns it with its status.
fn open_stream(c: &Client, path: &str) -> (TcpStream, u16) {
    let mut s = send_raw(&c.base, "GET", path, c.auth.as_ref(), b"");
    let status = read_head(&mut s);
    (s, status)
}

/// A gauge of the server's /metrics.
fn gauge(s: &Server, name: &str) -> Option<i64> {
    let r = s.anon().raw("GET", "/metrics", None, &[]);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok()))
}

/// Waits (bounded) until the gauge reads `want`.
fn wait_gauge(s: &Server, name: &str, want: i64, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let now = gauge(s, name);
        if now == Some(want) {
            return;
        }
        assert!(Instant::now() < until, "{name} is {now:?}, not {want}, after {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server's process id: the process whose command line names its data dir.
fn server_pid(s: &Server) -> u32 {
    let needle = s.data_dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == "serve") && args.contains(&needle) {
            return pid;
        }
    }
    panic!("no server process for {needle}");
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (utime, stime): (f64, f64) = (rest[11].parse().unwrap(), rest[12].parse().unwrap());
    // SAFETY: sysconf takes a plain integer and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (utime + stime) / ticks
}

/// The newest execution of a function, polled (bounded) until it is finished.
fn wait_latest_finished(c: &Client, function: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let (status, list) = c.get(&format!("/api/executions?function_id={function}"));
        assert_eq!(status, 200, "{list}");
        if let Some(e) = list["items"].as_array().and_then(|i| i.first()) {
            if e["status"] == "success" || e["status"] == "failed" {
                return e.clone();
            }
            assert!(Instant::now() < until, "the run of {function} is still {} after {within:?}: {e}", e["status"]);
        } else {
            assert!(Instant::now() < until, "no run of {function} recorded after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Regression: a client that hung up during a synchronous run dropped the request's future
/// and with it the run: the record stayed `running` for ever (its lease renewed by the
/// heartbeat) and its output and logs were lost. The run now goes on to its end and is
/// recorded, through the API's execute and through the HTTP trigger.
#[test]
fn a_client_hanging_up_mid_run_no_longer_leaves_the_run_running_for_ever() {
    let s = Server::start();
    let c = s.user();
    let code = "import time\ndef handler(e, c):\n    time.sleep(2)\n    print('finished after the client left')\n    return {'done': True}\n";
    c.create_function("hangup", "python", code, json!({}));
    c.create_function("hangup-web", "python", code, json!({"route": "hangup-web"}));
    for (function, path) in [("hangup", "/api/functions/hangup/execute"), ("hangup-web", "/api/execute/hangup-web")] {
        let conn = send_raw(&c.base, "POST", path, c.auth.as_ref(), b"{}");
        std::thread::sleep(Duration::from_millis(300));
        conn.shutdown(std::net::Shutdown::Both).unwrap();
        drop(conn);
        let e = wait_latest_finished(&c, function, Duration::from_secs(30));
        assert_eq!(e["status"], "success", "{e}");
        assert!(e["output"].to_string().contains("done"), "{e}");
        assert!(e["logs"].as_str().unwrap_or("").contains("finished after the client left"), "{e}");
        let (_, running) = c.get(&format!("/api/executions?function_id={function}&status=running"));
        assert_eq!(running["items"], json!([]), "{running}");
    }
}

/// Regression (item 10): one user's queued async runs held every dispatcher slot (claimed
/// runs then waited for their function's concurrency limit, holding their slots), and
/// another user's 2 ms run waited behind the whole backlog. Claims now pass over functions at
/// their limit and users at their share of the slots, so B's run starts at once.
#[test]
fn one_users_async_backlog_no_longer_holds_every_slot_and_starves_another_user() {
    let dir = temp_dir("fair");
    let s = Server::start_with(&dir, &["--async-concurrency", "4", "--function-concurrency", "2", "--async-per-user", "3"], true);
    let a = s.user();
    let b = s.user();
    let sleeper = "import time\ndef handler(e, c):\n    time.sleep(5)\n    return e['n']\n";
    a.create_function("sleep-1", "python", sleeper, json!({"max_retries": 0}));
    a.create_function("sleep-2", "python", sleeper, json!({"max_retries": 0}));
    b.create_function("quick", "python", "def handler(e, c):\n    return 'quick'\n", json!({}));
    for n in 0..12 {
        let name = if n % 2 == 0 { "sleep-1" } else { "sleep-2" };
        let r = a.raw("POST", &format!("/api/functions/{name}/execute?async=true"), Some(json!({"n": n}).to_string().as_bytes()), &[]);
        assert_eq!(r.status, 202);
    }
    // A's runs take what they may: two per function, three for the user.
    let running = |f: &str| {
        let (_, l) = a.get(&format!("/api/executions?function_id={f}&status=running"));
        l["items"].as_array().unwrap().len()
    };
    let until = Instant::now() + Duration::from_secs(20);
    while running("sleep-1") + running("sleep-2") < 3 {
        assert!(Instant::now() < until, "A's runs never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = b.raw("POST", "/api/functions/quick/execute?async=true", Some(b"{}"), &[]);
    assert_eq!(r.status, 202);
    let quick = b.wait_done(r.json()["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!((quick["status"].as_str(), quick["output"].as_str()), (Some("success"), Some("quick")), "{quick}");
    let (r1, r2) = (running("sleep-1"), running("sleep-2"));
    assert!(r1 <= 2 && r2 <= 2 && r1 + r2 <= 3, "A holds {r1} + {r2} runs: more than the function limit (2) or the user's share (3)");
    // B's run finished before any of A's (A's first ones were already running when B queued).
    let b_done = quick["finished_at"].as_str().unwrap().to_string();
    for f in ["sleep-1", "sleep-2"] {
        let (_, l) = a.get(&format!("/api/executions?function_id={f}&limit=100"));
        let items = l["items"].as_array().unwrap();
        assert_eq!(items.len(), 6);
        for e in items {
            if let Some(t) = e["finished_at"].as_str() {
                assert!(t > b_done.as_str(), "A's run finished at {t}, before B's at {b_done}: B waited behind A's backlog");
            }
        }
    }
}

/// Regression (item 8): `?follow=true` streams whose client had left kept polling the store
/// (2,000 of them used both cores for minutes). A stream's task now ends with its client, a
/// follower waits for the engine to say the run started or ended instead of polling, and the
/// server counts its open streams.
#[test]
fn abandoned_log_followers_no_longer_keep_polling_the_store() {
    let dir = temp_dir("followers");
    let s = Server::start_with(&dir, &["--async-concurrency", "1", "--max-log-streams-per-user", "64"], true);
    let c = s.user();
    c.create_function("waits", "python", "import time\ndef handler(e, c):\n    time.sleep(e['t'])\n    print('ran', e['t'])\n    return e['t']\n", json!({}));
    let enqueue = |t: u64| {
        let r = c.raw("POST", "/api/functions/waits/execute?async=true", Some(json!({"t": t}).to_string().as_bytes()), &[]);
        assert_eq!(r.status, 202);
        r.json()["id"].as_str().unwrap().to_string()
    };
    // The one async slot is busy for a while, so the second run stays pending: its followers
    // have nothing to read until it starts (the old followers polled it ten times a second).
    let first = enqueue(12);
    let second = enqueue(0);
    let path = format!("/api/executions/{second}/logs?follow=true");
    let (mut kept, status) = open_stream(&c, &path);
    assert_eq!(status, 200);
    let mut dropped = Vec::new();
    for _ in 0..50 {
        let (conn, status) = open_stream(&c, &path);
        assert_eq!(status, 200);
        dropped.push(conn);
    }
    wait_gauge(&s, "voltrun_log_streams", 51, Duration::from_secs(10));
    let pid = server_pid(&s);
    // 51 followers of a pending run: the server stays near idle.
    let cpu = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let open_cost = cpu_seconds(pid) - cpu;
    for conn in dropped.drain(..) {
        conn.shutdown(std::net::Shutdown::Both).unwrap();
    }
    // Their tasks end with their clients: the count falls back to the one kept.
    wait_gauge(&s, "voltrun_log_streams", 1, Duration::from_secs(30));
    let cpu = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let after_cost = cpu_seconds(pid) - cpu;
    assert!(open_cost < 0.15 && after_cost < 0.15, "CPU seconds over 3 s: {open_cost} with 51 followers of a pending run, {after_cost} after 50 left");
    assert_eq!(c.get(&format!("/api/executions/{first}")).1["status"], "running", "the measurement ran while the first run held the slot");
    // The kept follower is woken when its run starts and ends, and gets its log.
    kept.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&body).contains("event: end") {
        assert!(Instant::now() < until, "no end event: {}", String::from_utf8_lossy(&body));
        match kept.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the stream: {e}"),
        }
    }
    let raw = String::from_utf8_lossy(&body);
    let events: Vec<Value> = raw.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let logs: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(logs, "ran 0\n", "{raw}");
    assert_eq!(events.last().map(|e| e["status"].clone()), Some(json!("success")), "{raw}");
    drop(kept);
    wait_gauge(&s, "voltrun_log_streams", 0, Duration::from_secs(30));
}

/// Regression (item 8): nothing bounded how many log streams one user held open; the 17th
/// is now refused with 429 (another user is not), and a closed stream frees its place.
#[test]
fn a_17th_log_stream_of_one_user_is_refused_with_429() {
    let s = Server::start();
    let c = s.user();
    let other = s.user();
    c.create_function("long", "python", "import time\ndef handler(e, c):\n    time.sleep(20)\n", json!({}));
    other.create_function("long", "python", "import time\ndef handler(e, c):\n    time.sleep(20)\n", json!({}));
    let run = |cl: &Client| {
        let r = cl.raw("POST", "/api/functions/long/execute?async=true", Some(b"{}"), &[]);
        assert_eq!(r.status, 202);
        format!("/api/executions/{}/logs?follow=true", r.json()["id"].as_str().unwrap())
    };
    let path = run(&c);
    let mut open: Vec<TcpStream> = (0..16)
        .map(|_| {
            let (conn, status) = open_stream(&c, &path);
            assert_eq!(status, 200);
            conn
        })
        .collect();
    let r = c.raw("GET", &path, None, &[]);
    let code = assert_error(r.status, &r.json(), 429);
    assert_eq!(code, "throttled");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("log streams"), "{message}");
    assert!(r.header("retry-after").is_some());
    let (other_conn, status) = open_stream(&other, &run(&other));
    assert_eq!(status, 200, "another user's stream is not refused");
    // A stream that ends gives its place back.
    open.pop().unwrap().shutdown(std::net::Shutdown::Both).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (conn, status) = open_stream(&c, &path);
        if status == 200 {
            open.push(conn);
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < until, "the closed stream's place never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((open, other_conn));
}

/// Regression (item 12): the test-run slots were the node's: one user's four sleeping test
/// runs took them all, and another user got a 429 that named "this function". Each user now
/// has slots of their own within the node's, and the 429 says the limit is on test runs.
#[test]
fn one_users_sleeping_test_runs_no_longer_refuse_another_users_with_a_429_naming_this_function() {
    let s = Server::start();
    let a = s.user();
    let b = s.user();
    let sleeper = json!({"runtime": "python", "code": "import time\ndef handler(e, c):\n    time.sleep(4)\n    return 'slept'\n"});
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (a, body) = (a.clone(), sleeper.clone());
            std::thread::spawn(move || a.post("/api/functions/test", &body))
        })
        .collect();
    // A's third and fourth are refused at once; wait (bounded) for those two answers.
    let until = Instant::now() + Duration::from_secs(3);
    while threads.iter().filter(|t| t.is_finished()).count() < 2 {
        assert!(Instant::now() < until, "A's test runs beyond its two were not refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, e) = b.post("/api/functions/test", &json!({"runtime": "python", "code": "def handler(e, c):\n    return 'mine'\n"}));
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["output"], "mine", "{e}");
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<&Value> = answers.iter().filter(|(st, _)| *st == 429).map(|(_, b)| b).collect();
    assert_eq!(refused.len(), 2, "{answers:?}");
    for body in refused {
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("test runs") && !message.contains("this function"), "{message}");
    }
    assert_eq!(answers.iter().filter(|(st, e)| *st == 200 && e["output"] == "slept").count(), 2, "{answers:?}");
}

/// The node-wide cap on test runs still holds beside the per-user one, and its 429 names the
/// server's limit (the old message named "this function" whatever the limit was).
#[test]
fn the_node_wide_test_run_cap_says_it_is_the_servers_not_this_functions() {
    let dir = temp_dir("testcap");
    let s = Server::start_with(&dir, &["--test-concurrency", "1", "--test-runs-per-user", "1"], true);
    let (a, b) = (s.user(), s.user());
    let sleeper = json!({"runtime": "python", "code": "import time\ndef handler(e, c):\n    time.sleep(3)\n    return 'slept'\n"});
    // One sleeper each, at once: whichever comes second finds the node's one slot taken.
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|c| {
            let body = sleeper.clone();
            std::thread::spawn(move || c.post("/api/functions/test", &body))
        })
        .collect();
    let mut answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    answers.sort_by_key(|(status, _)| *status);
    assert_eq!((answers[0].0, answers[0].1["output"].as_str()), (200, Some("slept")), "{answers:?}");
    let (status, body) = &answers[1];
    assert_error(*status, body, 429);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("test runs") && message.contains("on this server") && !message.contains("this function"), "{message}");
}
