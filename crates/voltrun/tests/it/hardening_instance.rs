//! Hardening of the instance protocol (issue 12, item 5 and the lingering-threads part of
//! item 12): a function's code can read the bootstrap's log marker and write to the log pipe
//! and the result fd as the bootstrap does, and it can leave threads and timers running. None
//! of that may grow the server's memory without bound, or put one run's logs or result into
//! another run.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

/// The server's peak resident memory so far (VmHWM), in bytes.
fn peak_rss(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).expect("the server's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn run(c: &Client, name: &str, event: Value) -> Value {
    let (status, e) = c.post(&format!("/api/functions/{name}/execute"), &event);
    assert_eq!(status, 200, "{name}: {e}");
    e
}

/// Python: the marker is in the bootstrap's frame locals; 2,000 fake segments of 256 KiB.
const PY_MARKER_FLOOD: &str = r#"
import os, sys
runs = 0
def handler(event, context):
    global runs
    runs += 1
    if event.get("attack"):
        f, marker = sys._getframe(), None
        while f is not None:
            v = f.f_locals.get("marker")
            if isinstance(v, str) and v.startswith("\x1evoltrun:"):
                marker = v
            f = f.f_back
        assert marker, "marker not found"
        seg = b"F" * (256 * 1024) + marker.encode()
        for _ in range(2000):
            view = memoryview(seg)
            while view:  # a pipe write may be partial (gVisor's are): write it all
                view = view[os.write(1, view):]
        return {"found": True, "runs": runs}
    print(f"own line of run {event['n']}")
    return {"n": event["n"], "runs": runs}
"#;

/// Node: wraps the writes the bootstrap could use to learn its marker; the bootstrap keeps
/// its own references, so it learns nothing and forges marker-shaped tokens instead.
const NODE_MARKER_FLOOD: &str = r#"
const fs = require('fs');
let captured = null, runs = 0;
const origWriteSync = fs.writeSync;
fs.writeSync = function (fd, buf, ...rest) {
  const s = String(buf);
  if (fd === 1 && s.startsWith('\x1evoltrun:')) captured = s;
  return origWriteSync.call(this, fd, buf, ...rest);
};
const origWrite = process.stdout.write;
process.stdout.write = function (chunk, ...rest) {
  if (String(chunk).startsWith('\x1evoltrun:')) captured = String(chunk);
  return origWrite.call(this, chunk, ...rest);
};
exports.handler = async (event) => {
  runs++;
  if (event.attack) {
    const marker = captured || '\x1evoltrun:' + require('crypto').randomBytes(16).toString('hex') + '\x1e';
    const seg = Buffer.concat([Buffer.alloc(256 * 1024, 'F'), Buffer.from(marker)]);
    for (let k = 0; k < 2000; k++) {
      let off = 0;
      while (off < seg.length) {
        try { off += origWriteSync(1, seg, off, seg.length - off); } catch (e) { if (e.code !== 'EAGAIN') throw e; }
      }
    }
    return { found: captured !== null, runs };
  }
  console.log(`own line of run ${event.n}`);
  return { n: event.n, runs };
};
"#;

fn marker_flood_is_bounded_and_stays_in_its_run(runtime: &str, code: &str) {
    let s = Server::start();
    let c = s.user();
    let name = format!("flood-{runtime}");
    c.create_function(&name, runtime, code, json!({"timeout": 120}));
    // Warm up the instance and the server, then take the baseline.
    assert_eq!(run(&c, &name, json!({"n": 0}))["output"]["n"], 0);
    let before = peak_rss(&s);
    let e = run(&c, &name, json!({"attack": true}));
    assert_eq!(e["status"], "success", "{e}");
    if runtime == "python" {
        assert_eq!(e["output"]["found"], true, "the attack must really have found the marker: {e}");
    }
    let attack_logs = e["logs"].as_str().unwrap();
    assert!(attack_logs.len() <= 256 * 1024 + 64, "one run's logs are capped: {} bytes", attack_logs.len());
    let grown = peak_rss(&s).saturating_sub(before);
    assert!(grown < 200 << 20, "the server grew by {} MiB while a function wrote 500 MiB of fake segments", grown >> 20);
    for n in 1..=3 {
        let e = run(&c, &name, json!({"n": n}));
        assert_eq!(e["status"], "success", "{e}");
        assert_eq!(e["output"]["n"], n, "run {n} got another run's result: {e}");
        let logs = e["logs"].as_str().unwrap();
        assert_eq!(logs, format!("own line of run {n}\n"), "run {n}'s logs hold another run's output");
        if n == 1 {
            assert_eq!(e["output"]["runs"], 1, "the instance whose log stream was forged was reused");
        }
    }
    let grown = peak_rss(&s).saturating_sub(before);
    assert!(grown < 200 << 20, "the server grew by {} MiB", grown >> 20);
}

/// Regression (issue 12, item 5): a Python function read its marker from the bootstrap's
/// frames and pinned 1 GB of server memory in fake end-of-run segments; later runs were
/// handed the earlier runs' logs.
#[test]
fn python_marker_flood_pins_no_server_memory_and_later_runs_get_only_their_own_logs() {
    marker_flood_is_bounded_and_stays_in_its_run("python", PY_MARKER_FLOOD);
}

/// Regression (issue 12, item 5), Node: the same flood with marker-shaped tokens.
#[test]
fn node_marker_flood_pins_no_server_memory_and_later_runs_get_only_their_own_logs() {
    marker_flood_is_bounded_and_stays_in_its_run("node", NODE_MARKER_FLOOD);
}

/// A handler that writes a forged result frame to fd 4 (and, with `marker`, also the run's
/// marker, so the forgery looks complete), waits `sleep` seconds, then returns its own value.
const PY_FORGED_RESULT: &str = r#"
import json, os, struct, sys, time
def handler(event, context):
    if event.get("forge"):
        if event.get("marker"):
            f = sys._getframe()
            while f is not None and not ("marker" in f.f_locals and "request_id" in f.f_locals):
                f = f.f_back
            os.write(1, b"forging\n" + f.f_locals["marker"].encode())
        body = json.dumps({"type": "result", "ok": True, "output": {"forged": event["n"]}, "request_id": context.aws_request_id}).encode()
        os.write(4, struct.pack(">I", len(body)) + body)
        time.sleep(event.get("sleep", 0))
        print(f"tail of run {event['n']}")
    else:
        print(f"own line of run {event['n']}")
    return {"n": event["n"]}
"#;

const NODE_FORGED_RESULT: &str = r#"
const fs = require('fs');
exports.handler = async (event, context) => {
  if (event.forge) {
    const body = Buffer.from(JSON.stringify({ type: 'result', ok: true, output: { forged: event.n }, request_id: context.awsRequestId }));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length, 0);
    fs.writeSync(4, Buffer.concat([head, body]));
    if (event.marker) fs.writeSync(1, 'forging\n\x1evoltrun:' + require('crypto').randomBytes(16).toString('hex') + '\x1e');
    await new Promise((r) => setTimeout(r, (event.sleep || 0) * 1000));
    console.log(`tail of run ${event.n}`);
  } else {
    console.log(`own line of run ${event.n}`);
  }
  return { n: event.n };
};
"#;

fn forged_result_frames_never_reach_another_run(runtime: &str, code: &str) {
    let s = Server::start();
    let c = s.user();
    let name = format!("forge-{runtime}");
    c.create_function(&name, runtime, code, json!({"timeout": 30}));
    let mut n = 0;
    for (marker, sleep) in [(false, 0.0), (false, 0.3), (true, 0.0), (true, 0.3), (false, 0.0), (true, 0.3)] {
        n += 1;
        let forger = n;
        let e = run(&c, &name, json!({"forge": true, "n": forger, "marker": marker, "sleep": sleep}));
        // The forging run may be given its own forgery: it is its own code's doing.
        assert!(e["output"] == json!({"n": forger}) || e["output"] == json!({"forged": forger}) || e["status"] == "failed", "{e}");
        // The next run: its own result and logs, or (if it went to the forged instance
        // before the forgery could be seen) a clear error with no logs; never the forger's.
        n += 1;
        let e = run(&c, &name, json!({"n": n}));
        let logs = e["logs"].as_str().unwrap_or("");
        assert!(!logs.contains("tail of run") && !logs.contains("forging"), "run {n} shows the forging run's logs: {e}");
        if e["status"] == "success" {
            assert_eq!(e["output"], json!({"n": n}), "run {n} got another run's result: {e}");
            assert_eq!(logs, format!("own line of run {n}\n"), "{e}");
        } else {
            assert_eq!(e["error"]["type"], "RuntimeError", "{e}");
            assert!(e["error"]["message"].as_str().unwrap().contains("another run"), "{e}");
            assert_eq!(logs, "", "{e}");
            // The instance was stopped: the run after gets a fresh one and its own answer.
            n += 1;
            let e = run(&c, &name, json!({"n": n}));
            assert_eq!((e["status"].as_str(), &e["output"]), (Some("success"), &json!({"n": n})), "{e}");
        }
        if !marker && sleep > 0.0 {
            // The forged frame came while the handler still ran: its marker cannot have been
            // in the log pipe yet, so the instance was retired and the next run got its own.
            assert_eq!(e["status"], "success", "{e}");
        }
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// Regression (issue 12, item 5): a forged frame on the result fd shifted every later
/// result by one run.
#[test]
fn python_forged_result_frame_never_becomes_the_next_runs_result() {
    forged_result_frames_never_reach_another_run("python", PY_FORGED_RESULT);
}

/// Regression (issue 12, item 5), Node.
#[test]
fn node_forged_result_frame_never_becomes_the_next_runs_result() {
    forged_result_frames_never_reach_another_run("node", NODE_FORGED_RESULT);
}

const PY_LINGER: &str = r#"
import threading, time
def handler(event, context):
    if event.get("linger"):
        threading.Thread(target=lambda: (time.sleep(0.3), print("LINGERING output of run", event["n"]))).start()
    else:
        print("own line")
        time.sleep(0.8)
    return event["n"]
"#;

const NODE_LINGER: &str = r#"
exports.handler = async (event) => {
  if (event.linger) setTimeout(() => console.log('LINGERING output of run', event.n), 300);
  else {
    console.log('own line');
    await new Promise((r) => setTimeout(r, 800));
  }
  return event.n;
};
"#;

fn lingering_output_stays_out_of_the_next_run(runtime: &str, code: &str) {
    let s = Server::start();
    let c = s.user();
    let name = format!("linger-{runtime}");
    c.create_function(&name, runtime, code, json!({"timeout": 10}));
    for round in 0..2 {
        let e = run(&c, &name, json!({"linger": true, "n": round}));
        assert_eq!(e["output"], round, "{e}");
        // This run lasts past the moment the lingering thread or timer prints.
        let e = run(&c, &name, json!({"n": 100 + round}));
        assert_eq!(e["output"], 100 + round, "{e}");
        assert_eq!(e["logs"], "own line\n", "the next run's logs hold the lingering output of the run before");
    }
}

/// Regression (issue 12, item 12): a thread started by a run printed into the next run's logs.
#[test]
fn python_thread_that_outlives_its_run_does_not_print_into_the_next_runs_logs() {
    lingering_output_stays_out_of_the_next_run("python", PY_LINGER);
}

/// Regression (issue 12, item 12): a timer set by a run printed into the next run's logs.
#[test]
fn node_timer_that_outlives_its_run_does_not_print_into_the_next_runs_logs() {
    lingering_output_stays_out_of_the_next_run("node", NODE_LINGER);
}
