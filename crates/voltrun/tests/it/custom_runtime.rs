//! Custom runtimes (SPEC §15, issue 18): `runtime: "provided"` packages whose executable
//! `bootstrap` speaks the Lambda Runtime API, as users bring them: AWS's bash + curl tutorial
//! bootstrap, AWS's Python runtime interface client (`awslambdaric` from the package index)
//! and a Rust function built with the `lambda_runtime` crate; then the failures: an error
//! post, a timeout, a bootstrap that exits, an init error, malformed requests, a second
//! response, a response for another request id. Run in every tier (VOLTRUN_TEST_SANDBOX).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{json, Value};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::harness::{assert_error, sandbox_args, temp_dir, Client, Server};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A zip of `(name, unix mode, content)` entries.
fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, mode, data) in entries {
        let o = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).unix_permissions(*mode).large_file(data.len() > (1 << 30));
        w.start_file(*name, o).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A zip of a directory tree (files keep their executable bit).
fn zip_dir(root: &Path) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                walk(root, &p, out);
            } else if meta.is_file() {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, meta.permissions().mode() & 0o777, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(root, root, &mut files);
    let entries: Vec<(&str, u32, &[u8])> = files.iter().map(|(n, m, d)| (n.as_str(), *m, d.as_slice())).collect();
    zip_of(&entries)
}

/// Creates a `provided` function from a zip and returns its record.
fn create(c: &Client, name: &str, zip: &[u8], extra: Value) -> Value {
    let mut body = json!({"name": name, "runtime": "provided.al2023", "zip": b64(zip), "handler": "function.handler"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    let (status, f) = c.post("/api/functions", &body);
    assert_eq!(status, 201, "{f}");
    f
}

/// Instances the server started for `provided` functions (`/metrics`).
fn cold_starts(c: &Client) -> u64 {
    let m = String::from_utf8(c.raw("GET", "/metrics", None, &[]).body).unwrap();
    let line = m.lines().find(|l| l.starts_with("voltrun_cold_starts_total{runtime=\"provided\"}")).unwrap_or_else(|| panic!("no provided cold starts in {m}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A bash bootstrap: `$1` is the body of the loop, run with EVENT, REQUEST_ID and API set.
fn bash_bootstrap(init: &str, body: &str) -> String {
    format!(
        r#"#!/bin/bash
set -euo pipefail
API="http://${{AWS_LAMBDA_RUNTIME_API}}/2018-06-01/runtime"
{init}
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -LD "$HEADERS" "$API/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$HEADERS"
  {body}
done
"#
    )
}

/// AWS's custom-runtime tutorial, as published: `bootstrap` sources the handler's script and
/// echoes the event back as text.
const TUTORIAL_BOOTSTRAP: &str = r#"#!/bin/bash
set -euo pipefail

# Initialization - load function handler
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

# Processing
while true
do
  HEADERS="$(mktemp)"
  # Get an event. The HTTP request will block until one is received
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")

  # Extract request ID by scraping response headers received above
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)

  # Run the handler function from the script
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")

  # Send the response
  curl "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response"  -d "$RESPONSE"
done
"#;

const TUTORIAL_FUNCTION: &str = r#"function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2;
  RESPONSE="Echoing request: '$EVENT_DATA'"

  echo $RESPONSE
}
"#;

/// Deploys AWS's tutorial bootstrap as `tutorial` and runs it three times: each run echoes
/// its event, its handler's stderr is the run's log, and the same bootstrap served every
/// event (warm reuse: one cold start).
fn the_tutorial_runs_warm(c: &Client) {
    let zip = zip_of(&[("bootstrap", 0o755, TUTORIAL_BOOTSTRAP.as_bytes()), ("function.sh", 0o644, TUTORIAL_FUNCTION.as_bytes())]);
    create(c, "tutorial", &zip, json!({}));
    for i in 0..3 {
        let e = c.invoke("tutorial", &json!({"n": i}));
        assert_eq!(e["status"], "success", "{e}");
        assert_eq!(e["output"], json!(format!("Echoing request: '{{\"n\":{i}}}'")), "{e}");
        let logs = e["logs"].as_str().unwrap();
        assert!(logs.contains(&format!("{{\"n\":{i}}}")), "the handler's stderr is the run's log: {logs}");
    }
    assert_eq!(cold_starts(c), 1);
}

#[test]
fn the_aws_tutorial_bash_bootstrap_runs_unchanged_and_stays_warm() {
    let srv = Server::start();
    the_tutorial_runs_warm(&srv.user());
}

/// Without the `voltrun-runtime-api` binary (`cargo run` builds only the binary it runs),
/// `voltrun` itself is each instance's Runtime API helper: the tutorial bootstrap runs the
/// same, warm, and the server says which helper it chose.
#[test]
fn without_the_helper_binary_the_server_binary_serves_the_runtime_api() {
    let dir = temp_dir("nohelper");
    let srv = Server::spawn_with_env(&sandbox_args(), &dir, &[], true, &[("VOLTRUN_RUNTIME_API_HELPER", "/nonexistent/voltrun-runtime-api")]);
    the_tutorial_runs_warm(&srv.user());
    let log = std::fs::read_to_string(dir.with_extension("stderr.log")).unwrap_or_default();
    assert!(log.contains("provided instances run this binary as their Runtime API helper"), "{log}");
}

#[test]
fn the_bootstrap_gets_lambdas_environment_and_headers_and_a_read_only_usr() {
    let srv = Server::start();
    let c = srv.user();
    let body = r#"
  DEADLINE=$(grep -Fi Lambda-Runtime-Deadline-Ms "$HEADERS.keep" | tr -d '[:space:]' | cut -d: -f2 || true)
  ARN=$(grep -Fi Lambda-Runtime-Invoked-Function-Arn "$HEADERS.keep" | tr -d '[:space:]' | cut -d: -f2- || true)
  TRACE=$(grep -Fi Lambda-Runtime-Trace-Id "$HEADERS.keep" | tr -d '[:space:]' | cut -d: -f2- || true)
  if touch /usr/voltrun-probe 2>/dev/null; then USR=writable; else USR=read-only; fi
  OUT=$(printf '{"api":"%s","handler":"%s","root":"%s","name":"%s","version":"%s","memory":"%s","group":"%s","stream":"%s","region":"%s","tz":"%s","cwd":"%s","own":"%s","deadline":"%s","arn":"%s","trace":"%s","event":%s,"usr":"%s"}' \
    "$AWS_LAMBDA_RUNTIME_API" "$_HANDLER" "$LAMBDA_TASK_ROOT" "$AWS_LAMBDA_FUNCTION_NAME" "$AWS_LAMBDA_FUNCTION_VERSION" \
    "$AWS_LAMBDA_FUNCTION_MEMORY_SIZE" "$AWS_LAMBDA_LOG_GROUP_NAME" "$AWS_LAMBDA_LOG_STREAM_NAME" "$AWS_REGION" "$TZ" "$PWD" "${MY_VAR:-}" \
    "$DEADLINE" "$ARN" "$TRACE" "$EVENT" "$USR")
  rm -f "$HEADERS.keep"
  curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d "$OUT"
"#;
    // Keep the headers for the body (the loop removes its own copy).
    let script = bash_bootstrap("", body).replace("rm -f \"$HEADERS\"", "mv \"$HEADERS\" \"$HEADERS.keep\"; HEADERS=\"$HEADERS\"");
    let zip = zip_of(&[("bootstrap", 0o755, script.as_bytes())]);
    create(&c, "envcheck", &zip, json!({"memory": 256, "env": {"MY_VAR": "mine"}}));
    let e = c.invoke("envcheck", &json!({"k": "v"}));
    assert_eq!(e["status"], "success", "{e}");
    let o = &e["output"];
    let api = o["api"].as_str().unwrap();
    assert!(api.starts_with("127.0.0.1:"), "{o}");
    if crate::harness::sandbox() != "process" {
        assert_eq!(api, "127.0.0.1:9001", "Lambda's port on the instance's own loopback");
        assert_eq!(o["root"], "/var/task");
        assert_eq!(o["cwd"], "/var/task");
        assert_eq!(o["usr"], "read-only");
    }
    assert_eq!((&o["handler"], &o["name"], &o["version"], &o["memory"]), (&json!("function.handler"), &json!("envcheck"), &json!("1"), &json!("256")), "{o}");
    assert_eq!(o["group"], "/voltrun/envcheck");
    assert!(o["stream"].as_str().unwrap().contains("/[1]"), "{o}");
    assert_eq!((&o["region"], &o["tz"], &o["own"]), (&json!("us-east-1"), &json!("UTC"), &json!("mine")), "{o}");
    assert_eq!(o["event"], json!({"k": "v"}));
    assert!(o["deadline"].as_str().unwrap().parse::<u64>().unwrap() > 1_600_000_000_000, "{o}");
    assert!(o["arn"].as_str().unwrap().ends_with(":function:envcheck"), "{o}");
    assert!(o["trace"].as_str().unwrap().starts_with("Root=1-"), "{o}");
}

#[test]
fn an_error_post_is_a_handler_error_with_the_posted_type_and_message() {
    let srv = Server::start();
    let c = srv.user();
    let body = r#"
  if [ "$EVENT" = '"fail"' ]; then
    curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/error" -H 'Lambda-Runtime-Function-Error-Type: Unhandled' \
      -d '{"errorMessage":"the input was bad","errorType":"InvalidInput","stackTrace":["at line 1","at line 2"]}'
  else
    curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d '{"ok":true}'
  fi
"#;
    create(&c, "errs", &zip_of(&[("bootstrap", 0o755, bash_bootstrap("", body).as_bytes())]), json!({}));
    let e = c.invoke("errs", &json!("fail"));
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["error"]["type"], "HandlerError", "{e}");
    assert_eq!(e["error"]["message"], "InvalidInput: the input was bad", "{e}");
    assert_eq!(e["error"]["stack"], "at line 1\nat line 2", "{e}");
    // The instance survives an error post, as after a handler error.
    let ok = c.invoke("errs", &json!("fine"));
    assert_eq!((&ok["status"], &ok["output"]), (&json!("success"), &json!({"ok": true})), "{ok}");
    assert_eq!(cold_starts(&c), 1);
}

#[test]
fn a_bootstrap_that_never_answers_times_out_and_one_that_exits_is_a_runtime_error() {
    let srv = Server::start();
    let c = srv.user();
    let body = r#"
  case "$EVENT" in
    '"hang"') sleep 30 ;;
    '"exit"') echo "leaving now" >&2; exit 3 ;;
    *) curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d '"ok"' ;;
  esac
"#;
    create(&c, "badboot", &zip_of(&[("bootstrap", 0o755, bash_bootstrap("", body).as_bytes())]), json!({"timeout": 2}));
    let e = c.invoke("badboot", &json!("hang"));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("Timeout")), "{e}");
    let e = c.invoke("badboot", &json!("exit"));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("RuntimeError")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("exit status 3"), "{e}");
    assert!(e["logs"].as_str().unwrap().contains("leaving now"), "{e}");
    // Each failure cost its instance; the next run gets a new one and works.
    let e = c.invoke("badboot", &json!("again"));
    assert_eq!((&e["status"], &e["output"]), (&json!("success"), &json!("ok")), "{e}");
}

#[test]
fn init_failures_are_runtime_errors_with_the_bootstraps_words() {
    let srv = Server::start();
    let c = srv.user();
    // An init error posted the way runtime clients post it.
    let init = r#"echo "loading config" >&2
curl -sS -o /dev/null "$API/init/error" -H 'Lambda-Runtime-Function-Error-Type: Runtime.ConfigError' -d '{"errorMessage":"no config file","errorType":"ConfigError"}'
exit 1"#;
    create(&c, "initerr", &zip_of(&[("bootstrap", 0o755, bash_bootstrap(init, "").as_bytes())]), json!({}));
    let e = c.invoke("initerr", &json!({}));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("RuntimeError")), "{e}");
    assert_eq!(e["error"]["message"], "ConfigError: no config file", "{e}");
    assert!(e["logs"].as_str().unwrap().contains("loading config"), "{e}");
    // A bootstrap that exits before asking for work.
    create(&c, "initexit", &zip_of(&[("bootstrap", 0o755, b"#!/bin/sh\necho bye >&2\nexit 7\n")]), json!({}));
    let e = c.invoke("initexit", &json!({}));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("RuntimeError")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("exit status 7"), "{e}");
    assert!(e["logs"].as_str().unwrap().contains("bye"), "{e}");
    // A bootstrap that is not a program (no interpreter for its #! line).
    create(&c, "noexec", &zip_of(&[("bootstrap", 0o755, b"#!/nonexistent/interpreter\n")]), json!({}));
    let e = c.invoke("noexec", &json!({}));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("RuntimeError")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("could not be started"), "{e}");
}

#[test]
fn the_package_must_hold_an_executable_bootstrap_and_code_is_refused() {
    let srv = Server::start();
    let c = srv.user();
    let refused = |body: Value, words: &str| {
        let (s, b) = c.post("/api/functions", &body);
        assert_eq!(assert_error(s, &b, 400), "validation_failed");
        assert!(b["error"]["message"].as_str().unwrap().contains(words), "{b}");
    };
    refused(json!({"name": "p1", "runtime": "provided", "zip": b64(&zip_of(&[("main.sh", 0o755, b"#!/bin/sh\n")]))}), "no file named bootstrap");
    refused(json!({"name": "p2", "runtime": "provided", "zip": b64(&zip_of(&[("bootstrap", 0o644, b"#!/bin/sh\n")]))}), "not executable");
    refused(json!({"name": "p3", "runtime": "provided", "code": "echo hi"}), "give files or zip");
    refused(json!({"name": "p5", "runtime": "provided", "zip": b64(&zip_of(&[("bootstrap", 0o755, b"#!/bin/sh\n")])), "handler": "has space"}), "printable");
    // `files` are text: a root `bootstrap` among them is made executable; requirements.txt
    // is not built for a custom runtime.
    let script = bash_bootstrap("", r#"curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d '"from files"'"#);
    let (s, f) = c.post("/api/functions", &json!({"name": "p4", "runtime": "provided.al2", "files": {"bootstrap": script, "requirements.txt": "requests==2.32.3\n"}}));
    assert_eq!(s, 201, "{f}");
    assert_eq!((&f["runtime"], &f["state"], &f["handler"]), (&json!("provided"), &json!("active"), &json!("function.handler")), "{f}");
    let e = c.invoke("p4", &json!({}));
    assert_eq!((&e["status"], &e["output"]), (&json!("success"), &json!("from files")), "{e}");
    // The runtime list names it.
    let (_, r) = c.get("/api/runtimes");
    let provided = r["items"].as_array().unwrap().iter().find(|i| i["id"] == "provided").cloned().unwrap_or_default();
    assert_eq!((&provided["available"], &provided["language"]), (&json!(true), &json!("any")), "{r}");
}

/// A bootstrap in Python that drives the Runtime API by hand, to probe what a hostile or
/// broken client gets: each probe prints `name=status`, then the run is answered.
const PROBE_BOOTSTRAP: &str = r#"#!/usr/bin/python3
import http.client, json, os, socket, sys
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
P = "/2018-06-01/runtime"
def call(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r
def raw(data):
    s = socket.create_connection((host, int(port)), timeout=10)
    out = b""
    try:
        s.sendall(data)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except ConnectionError:
        pass  # the helper closes on what it refuses unread
    s.close()
    return out.split(b" ", 2)[1].decode() if out.startswith(b"HTTP/1.1 ") else "closed"
while True:
    st, ev, r = call("GET", P + "/invocation/next")
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(ev)
    res = {}
    if event == "probe":
        res["wrong_id"] = call("POST", P + "/invocation/not-" + rid + "/response", b'"x"')[0]
        res["wrong_id_type"] = json.loads(call("POST", P + "/invocation/nope/response", b'"x"')[1])["errorType"]
        res["not_utf8"] = call("POST", P + "/invocation/" + rid + "/response", b"\xff\xfe")[0]
        res["bad_line"] = raw(b"NONSENSE\r\n\r\n")
        res["bad_length"] = raw(b"POST " + (P + "/invocation/" + rid + "/response").encode() + b" HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
        res["huge_head"] = raw(b"GET " + P.encode() + b"/invocation/next HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n")
        res["unknown_path"] = call("GET", "/2018-06-01/runtime/whatever")[0]
        res["wrong_method"] = call("DELETE", P + "/invocation/next")[0]
        res["init_error_late"] = call("POST", P + "/init/error", b"{}")[0]
        st1 = call("POST", P + "/invocation/" + rid + "/response", json.dumps(res).encode())[0]
        st2 = call("POST", P + "/invocation/" + rid + "/response", b'"second"')[0]
        st3 = call("POST", P + "/invocation/" + rid + "/error", b'{"errorMessage":"late"}')[0]
        print("answers", st1, st2, st3, flush=True)
    elif event == "big":
        st = call("POST", P + "/invocation/" + rid + "/response", b'"' + b"a" * (6 * 1024 * 1024 + 10) + b'"')[0]
        print("big answer", st, flush=True)
    elif event == "chunked":
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("POST", P + "/invocation/" + rid + "/response", body=iter([b'{"chunked":', b'true}']), encode_chunked=True)
        print("chunked answer", c.getresponse().status, flush=True)
    else:
        call("POST", P + "/invocation/" + rid + "/response", json.dumps({"echo": event}).encode())
"#;

#[test]
fn malformed_requests_a_second_response_and_a_wrong_request_id_are_refused_and_the_server_carries_on() {
    let srv = Server::start();
    let c = srv.user();
    create(&c, "probe", &zip_of(&[("bootstrap", 0o755, PROBE_BOOTSTRAP.as_bytes())]), json!({}));
    let e = c.invoke("probe", &json!("probe"));
    assert_eq!(e["status"], "success", "{e}");
    let o = &e["output"];
    assert_eq!((&o["wrong_id"], &o["wrong_id_type"]), (&json!(400), &json!("InvalidRequestID")), "{o}");
    assert_eq!(o["not_utf8"], 400, "{o}");
    assert_eq!((&o["bad_line"], &o["bad_length"]), (&json!("400"), &json!("400")), "{o}");
    // A head past 16 KiB is refused unread: a 400, or a reset when the close beats it.
    assert!(o["huge_head"] == "400" || o["huge_head"] == "closed", "{o}");
    assert_eq!((&o["unknown_path"], &o["wrong_method"], &o["init_error_late"]), (&json!(404), &json!(405), &json!(403)), "{o}");
    // The first answer counts; the second and a late error post are refused (403).
    assert!(e["logs"].as_str().unwrap().contains("answers 202 403 403"), "{e}");
    // The same instance serves the next run: nothing above upset it.
    let e2 = c.invoke("probe", &json!({"after": 1}));
    assert_eq!((&e2["status"], &e2["output"]), (&json!("success"), &json!({"echo": {"after": 1}})), "{e2}");
    assert_eq!(cold_starts(&c), 1);
    // A chunked body is read as any other.
    let e3 = c.invoke("probe", &json!("chunked"));
    assert_eq!((&e3["status"], &e3["output"]), (&json!("success"), &json!({"chunked": true})), "{e3}");
    assert!(e3["logs"].as_str().unwrap().contains("chunked answer 202"), "{e3}");
    // A response past 6 MB fails the run (413 to the bootstrap), as on Lambda.
    let e4 = c.invoke("probe", &json!("big"));
    assert_eq!((&e4["status"], &e4["error"]["type"]), (&json!("failed"), &json!("RuntimeError")), "{e4}");
    assert!(e4["error"]["message"].as_str().unwrap().contains("ResponseSizeTooLarge"), "{e4}");
    assert!(e4["logs"].as_str().unwrap().contains("big answer 413"), "{e4}");
    let e5 = c.invoke("probe", &json!(5));
    assert_eq!((&e5["status"], &e5["output"]), (&json!("success"), &json!({"echo": 5})), "{e5}");
    let (s, h) = c.get("/health");
    assert_eq!(s, 200, "{h}");
}

/// `pip install --target` into the package directory (the test's, never the server's).
fn pip_install_target(pkg: &str, dir: &Path) {
    let out = Command::new("/usr/bin/python3").args(["-m", "pip", "--version"]).output();
    let pip: Vec<&str> = if out.map(|o| o.status.success()).unwrap_or(false) { vec!["/usr/bin/python3", "-m", "pip"] } else { vec!["python3", "-m", "pip"] };
    let status = Command::new(pip[0])
        .args(&pip[1..])
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux2014_x86_64",
            "--implementation",
            "cp",
            "--target",
        ])
        .arg(dir)
        .arg(pkg)
        .status()
        .expect("pip runs");
    assert!(status.success(), "pip install {pkg} failed");
}

#[test]
fn awslambdaric_from_the_package_index_runs_under_debians_python() {
    let work = crate::harness::temp_dir("ric");
    let pkg = work.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    pip_install_target("awslambdaric==4.2.2", &pkg);
    std::fs::write(pkg.join("handler.py"), "import os\ncalls = 0\ndef fn(event, context):\n    global calls\n    calls += 1\n    if event.get('fail'):\n        raise ValueError('asked to fail')\n    print('handling', event)\n    return {'echo': event, 'calls': calls, 'request_id': context.aws_request_id, 'name': context.function_name, 'left_ms': context.get_remaining_time_in_millis()}\n").unwrap();
    let boot = pkg.join("bootstrap");
    std::fs::write(&boot, "#!/bin/sh\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT\"\nexec /usr/bin/python3 -m awslambdaric \"$_HANDLER\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&boot, std::fs::Permissions::from_mode(0o755)).unwrap();
    let zip = zip_dir(&pkg);
    let _ = std::fs::remove_dir_all(&work);
    let srv = Server::start();
    let c = srv.user();
    create(&c, "ric", &zip, json!({"handler": "handler.fn", "memory": 256}));
    let e = c.invoke("ric", &json!({"a": 1}));
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!((&e["output"]["echo"], &e["output"]["calls"], &e["output"]["name"]), (&json!({"a": 1}), &json!(1), &json!("ric")), "{e}");
    assert_eq!(e["output"]["request_id"], e["id"], "{e}");
    assert!(e["output"]["left_ms"].as_u64().unwrap() > 0, "{e}");
    assert!(e["logs"].as_str().unwrap().contains("handling {'a': 1}"), "{e}");
    let e = c.invoke("ric", &json!({"fail": true}));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("HandlerError")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("ValueError") && e["error"]["message"].as_str().unwrap().contains("asked to fail"), "{e}");
    // Module state survives: the same interpreter served all three.
    let e = c.invoke("ric", &json!({"b": 2}));
    assert_eq!(e["output"]["calls"], 3, "{e}");
    assert_eq!(cold_starts(&c), 1);
}

/// The Rust function (tests/fixtures/lambda-rust), built under target/ with a target dir
/// shared between runs (and with bench/), so CI builds `lambda_runtime` once.
fn rust_function() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lambda-rust/Cargo.toml");
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/custom-runtime-rust/target");
    let t0 = std::time::Instant::now();
    let status =
        Command::new(env!("CARGO")).args(["build", "--release", "--quiet", "--manifest-path"]).arg(&manifest).env("CARGO_TARGET_DIR", &target).status().expect("cargo runs");
    assert!(status.success(), "building the lambda_runtime function failed");
    eprintln!("lambda_runtime function built in {:?}", t0.elapsed());
    target.join("release/lambda-rust-fn")
}

#[test]
fn a_rust_function_built_with_lambda_runtime_runs_warm() {
    let bin = rust_function();
    let zip = zip_of(&[("bootstrap", 0o755, &std::fs::read(&bin).unwrap())]);
    let srv = Server::start();
    let c = srv.user();
    create(&c, "rustfn", &zip, json!({"handler": "bootstrap"}));
    let e = c.invoke("rustfn", &json!({"x": 1}));
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!((&e["output"]["echo"], &e["output"]["request_id"]), (&json!({"x": 1}), &e["id"]), "{e}");
    assert!(e["logs"].as_str().unwrap().contains("rust handling {\"x\":1}"), "{e}");
    let e = c.invoke("rustfn", &json!({"fail": 1}));
    assert_eq!((&e["status"], &e["error"]["type"]), (&json!("failed"), &json!("HandlerError")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("asked to fail"), "{e}");
    let e = c.invoke("rustfn", &json!({"x": 2}));
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(cold_starts(&c), 1);
}

#[test]
fn one_invocation_at_a_time_per_instance_and_concurrent_runs_get_their_own() {
    let srv = Server::start();
    let c = srv.user();
    let body = r#"
  sleep 0.3
  curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d "{\"id\":\"$REQUEST_ID\",\"event\":$EVENT}"
"#;
    create(&c, "conc", &zip_of(&[("bootstrap", 0o755, bash_bootstrap("", body).as_bytes())]), json!({}));
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || c.invoke("conc", &json!(i)))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let e = h.join().unwrap();
        assert_eq!(e["status"], "success", "{e}");
        // Every run got its own event and answered with its own request id.
        assert_eq!((&e["output"]["event"], &e["output"]["id"]), (&json!(i), &e["id"]), "{e}");
    }
}

/// The spare gauges, from /metrics: (ready, aimed for), every runtime together.
fn spares(c: &Client) -> (u64, u64) {
    let m = String::from_utf8(c.raw("GET", "/metrics", None, &[]).body).unwrap();
    let gauge = |name: &str| m.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().last()).and_then(|v| v.parse().ok()).unwrap_or(0);
    (gauge("voltrun_spare_instances "), gauge("voltrun_spare_target "))
}

/// Waits (60 s at most) until every shelf holds the spares it aims for and more than `above`
/// (if given) are ready; how many are.
fn spares_settled(c: &Client, above: Option<u64>) -> u64 {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (ready, target) = spares(c);
        if ready >= target && above.is_none_or(|a| ready > a) {
            return ready;
        }
        assert!(std::time::Instant::now() < until, "spares did not settle in 60 s: {ready} ready of {target}, wanted more than {above:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_provided_spare_serves_the_next_new_function_with_its_own_environment() {
    let srv = Server::start();
    let c = srv.user();
    // The built-in runtimes' spares first: one shelved after this point (slow in gVisor)
    // would pass for the provided one (seen in CI).
    let before = spares_settled(&c, None);
    // The helper (the bootstrap's parent) of a spare was started before its function was
    // known: the function's variables are not in its own environment.
    let body = r#"if grep -qz AWS_LAMBDA_FUNCTION_NAME= /proc/$PPID/environ; then SPARE=no; else SPARE=yes; fi
  curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d "{\"name\":\"$AWS_LAMBDA_FUNCTION_NAME\",\"greeting\":\"${GREETING:-}\",\"spare\":\"$SPARE\"}""#;
    let zip = zip_of(&[("bootstrap", 0o755, bash_bootstrap("", body).as_bytes())]);
    create(&c, "first", &zip, json!({}));
    assert_eq!(c.invoke("first", &json!({}))["output"], json!({"name": "first", "greeting": "", "spare": "no"}));
    // The first provided run starts the runtime's spares (none before: most servers never run one).
    spares_settled(&c, Some(before));
    let starts = cold_starts(&c);
    create(&c, "second", &zip, json!({"env": {"GREETING": "hej"}}));
    let e = c.invoke("second", &json!({}));
    assert_eq!(e["output"], json!({"name": "second", "greeting": "hej", "spare": "yes"}), "a spare served it, its bootstrap with the function's variables: {e}");
    assert_eq!(cold_starts(&c), starts + 1);
}

#[test]
fn the_cli_deploys_a_directory_with_a_bootstrap_as_a_custom_runtime() {
    use std::os::unix::fs::PermissionsExt;
    let srv = Server::start();
    let c = srv.user();
    let (status, k) = c.post("/api/keys", &json!({"name": "cli-custom"}));
    assert_eq!(status, 201, "{k}");
    let home = crate::harness::temp_dir("cli-custom");
    let dir = home.join("fn");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bootstrap"), TUTORIAL_BOOTSTRAP).unwrap();
    std::fs::set_permissions(dir.join("bootstrap"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("function.sh"), TUTORIAL_FUNCTION).unwrap();
    // No --runtime: a directory with a root bootstrap and no Python or Node files is `provided`.
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .args(["functions", "deploy", "echo", "--dir"])
        .arg(&dir)
        .args(["--handler", "function.handler"])
        .current_dir(&home)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .env("VOLTRUN_SERVER", &srv.base)
        .env("VOLTRUN_API_KEY", k["key"].as_str().unwrap())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&home);
    let (_, f) = c.get("/api/functions/echo");
    assert_eq!(f["runtime"], "provided", "{f}");
    let e = c.invoke("echo", &json!("hi"));
    assert_eq!((&e["status"], &e["output"]), (&json!("success"), &json!("Echoing request: '\"hi\"'")), "{e}");
}
