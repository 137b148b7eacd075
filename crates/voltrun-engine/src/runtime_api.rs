//! The Lambda Runtime API inside a `provided` instance (SPEC §15): the `voltrun-runtime-api`
//! helper binary runs this as the instance's runtime process. It speaks the frame protocol
//! of docs/RUNTIME_PROTOCOL.md with the engine on fds 3/4, exactly as the Python and Node
//! bootstraps do, serves `http://127.0.0.1:9001/2018-06-01/runtime/…` on the instance's own
//! loopback, and starts the package's `bootstrap` with Lambda's environment.
//!
//! Why in the instance: the gVisor tier has no host network namespace to put a listener in
//! (`--network=none`, its own netstack), and a loopback listener in the instance works the
//! same in every tier with no bridge to the server at all. The server trusts the helper no
//! more than it trusts a bootstrap (the function runs as the same user and can kill or
//! impersonate it): its frames are checked as any runtime's, its limits are the instance's.
//!
//! One run at a time. A run starts when the engine's `invoke` frame arrives (the event goes
//! to the bootstrap's pending or next `GET …/invocation/next`) and ends, as on Lambda, when
//! the bootstrap asks for the next event after answering; then the helper writes the run's
//! marker to the log pipe and the `result` frame. So the bootstrap's own output after its
//! answer (curl's, a logger's flush) is that run's log, and between runs it is blocked in
//! `/next`. A bootstrap that answers but never asks again ends its run after
//! [`ANSWER_GRACE`] (or just before the deadline).
//!
//! std only: threads, blocking sockets, a small HTTP/1.1 reader (Content-Length or chunked
//! bodies, `Expect: 100-continue`, keep-alive). Everything the bootstrap sends is bounded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The variable the engine sets to the address to listen on (127.0.0.1:9001; port 0 in the
/// process tier, which shares the host's loopback).
pub const LISTEN_VAR: &str = "VOLTRUN_RUNTIME_API_LISTEN";
/// The API's version prefix.
const PREFIX: &str = "/2018-06-01/runtime/";
/// Largest response or error body a bootstrap may post (Lambda's 6 MB).
pub const MAX_BODY: usize = voltrun_core::MAX_PAYLOAD_BYTES;
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 << 10;
/// The largest refused body read to its end (so its sender sees the 413).
const MAX_DISCARD: u64 = 64 << 20;
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 16;
/// Largest frame the engine sends (an event is at most 6 MiB, plus the envelope).
const MAX_FRAME: usize = MAX_BODY + (64 << 10);
/// How long a run that has its answer waits for the bootstrap's next `/next`.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);
/// A run with its answer ends at the latest this long before its deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);
/// The longest error message or stack kept from an error post.
const MAX_ERROR_TEXT: usize = 64 << 10;

/// What a bootstrap answered for a run.
enum Answer {
    Output(Value),
    Error {
        message: String,
        stack: String,
    },
    /// The run failed for a reason of the runtime's own (RuntimeError).
    Failed(String),
}

/// The run in progress.
struct Run {
    id: String,
    event: Vec<u8>,
    deadline: Instant,
    deadline_ms: u128,
    marker: String,
    delivered: bool,
    answer: Option<(Answer, Instant)>,
}

#[derive(PartialEq)]
enum Phase {
    /// The bootstrap has not asked for work yet.
    Init,
    Ready,
}

struct State {
    phase: Phase,
    run: Option<Run>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// fd 4.
    frames: Mutex<File>,
    /// fd 1, the log pipe (markers).
    log: Mutex<ManuallyDrop<File>>,
    init_marker: String,
    function_arn: String,
    connections: AtomicUsize,
}

/// The helper's entry point (`voltrun-runtime-api`, no arguments). Never returns. Exit
/// status: 0 when the engine closed fd 3 or the bootstrap ended, 1 after an init error, 2 on
/// a frame it cannot trust, 3 when it cannot listen.
pub fn main() -> ! {
    // fds 3/4 are the engine's: the bootstrap must not inherit them.
    for fd in [3, 4] {
        // SAFETY: fcntl on fds this process owns; no memory is involved.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: fds 3 and 4 are the control pipes the sandbox gives every runtime process,
    // owned by these Files alone from here on.
    let (mut ctl_in, ctl_out) = unsafe { (File::from_raw_fd(3), File::from_raw_fd(4)) };
    // SAFETY: fd 1 is the log pipe; ManuallyDrop never closes it (the bootstrap shares it).
    let log = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let addr = std::env::var(LISTEN_VAR).unwrap_or_else(|_| crate::runtimes::RUNTIME_API_ADDR.to_string());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("voltrun-runtime-api: cannot listen on {addr}: {e}");
            std::process::exit(3)
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    // A spare says when it is up (as the built-in bootstraps do; docs/RUNTIME_PROTOCOL.md).
    if std::env::var_os(crate::spares::SPARE_VAR).is_some_and(|v| v == "1") {
        let body = br#"{"type":"started"}"#;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        if (&ctl_out).write_all(&frame).is_err() {
            std::process::exit(0);
        }
    }
    let init = match read_frame(&mut ctl_in) {
        Frame::Eof => std::process::exit(0),
        Frame::Bad => std::process::exit(2),
        Frame::Ok(v) if v["type"] == "init" => v,
        Frame::Ok(_) => std::process::exit(2),
    };
    let text = |k: &str| init[k].as_str().unwrap_or_default().to_string();
    let function_name = text("function_name");
    let shared = Arc::new(Shared {
        state: Mutex::new(State { phase: Phase::Init, run: None }),
        cv: Condvar::new(),
        frames: Mutex::new(ctl_out),
        log: Mutex::new(log),
        init_marker: text("marker"),
        function_arn: format!("arn:voltrun:lambda:local:000000000000:function:{function_name}"),
        connections: AtomicUsize::new(0),
    });
    let root = std::path::PathBuf::from(text("entry"));
    let env = bootstrap_env(&init, &local);
    drop(init);
    let child = Command::new(root.join(voltrun_package::handler::BOOTSTRAP_FILE)).current_dir(&root).env_clear().envs(env).stdin(Stdio::null()).spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => init_failed(&shared, &format!("Runtime.InvalidEntrypoint: the bootstrap could not be started: {e}")),
    };
    {
        let s = shared.clone();
        std::thread::spawn(move || watch_bootstrap(s, child));
    }
    {
        let s = shared.clone();
        std::thread::spawn(move || accept(s, listener));
    }
    {
        let s = shared.clone();
        std::thread::spawn(move || end_answered_runs(s));
    }
    // The engine's frames: one invoke at a time; EOF ends the instance.
    loop {
        let frame = match read_frame(&mut ctl_in) {
            Frame::Eof => std::process::exit(0),
            Frame::Bad => std::process::exit(2),
            Frame::Ok(v) => v,
        };
        let (Some(id), Some(marker)) = (frame["request_id"].as_str(), frame["marker"].as_str()) else { std::process::exit(2) };
        if frame["type"] != "invoke" {
            std::process::exit(2);
        }
        let timeout = Duration::from_millis(frame["timeout_ms"].as_u64().unwrap_or(3000));
        let event = serde_json::to_vec(&frame["event"]).unwrap_or_else(|_| b"null".to_vec());
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let mut st = lock(&shared.state);
        if st.run.is_some() {
            // The engine sends one invoke at a time; a second is not the engine's.
            std::process::exit(2);
        }
        st.run = Some(Run {
            id: id.to_string(),
            event,
            deadline: Instant::now() + timeout,
            deadline_ms: now_ms + timeout.as_millis(),
            marker: marker.to_string(),
            delivered: false,
            answer: None,
        });
        drop(st);
        shared.cv.notify_all();
    }
}

/// The bootstrap's environment: the instance's (less the helper's own variable), the init
/// frame's (a spare's function variables, the secrets), and Lambda's.
fn bootstrap_env(init: &Value, addr: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k != LISTEN_VAR && k != crate::spares::SPARE_VAR).collect();
    if let Some(extra) = init["env"].as_object() {
        for (k, v) in extra {
            if let Some(v) = v.as_str() {
                env.retain(|(e, _)| e != k);
                env.push((k.clone(), v.to_string()));
            }
        }
    }
    let name = init["function_name"].as_str().unwrap_or_default();
    let version = init["function_version"].as_i64().unwrap_or(0);
    let date = chrono::Utc::now().format("%Y/%m/%d");
    let set = [
        ("AWS_LAMBDA_RUNTIME_API", addr.to_string()),
        ("_HANDLER", init["handler"].as_str().unwrap_or_default().to_string()),
        ("LAMBDA_RUNTIME_DIR", voltrun_sandbox::root::BOOTSTRAP_ROOT.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", version.to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", init["memory_limit_in_mb"].as_u64().unwrap_or(128).to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/voltrun/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", format!("{date}/[{version}]{:032x}", rand::random::<u128>())),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
    ];
    for (k, v) in set {
        env.retain(|(e, _)| e != k);
        env.push((k.to_string(), v));
    }
    // Defaults a function's own variables may override.
    for (k, v) in [("AWS_REGION", "us-east-1"), ("AWS_DEFAULT_REGION", "us-east-1")] {
        if !env.iter().any(|(e, _)| e == k) {
            env.push((k.to_string(), v.to_string()));
        }
    }
    env
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Frame {
    Ok(Value),
    Eof,
    Bad,
}

fn read_frame(r: &mut File) -> Frame {
    let mut len = [0u8; 4];
    if r.read_exact(&mut len).is_err() {
        return Frame::Eof;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Frame::Bad;
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return Frame::Eof;
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.is_object() => Frame::Ok(v),
        _ => Frame::Bad,
    }
}

fn write_frame(s: &Shared, v: &Value) {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    if lock(&s.frames).write_all(&buf).is_err() {
        // The engine is gone: nothing left to serve.
        std::process::exit(0);
    }
}

fn write_marker(s: &Shared, marker: &str) {
    let _ = lock(&s.log).write_all(marker.as_bytes());
}

/// Reports an init failure (after the init marker, so the engine reads the init's logs) and
/// exits 1; the sandbox kills what is left.
fn init_failed(s: &Shared, message: &str) -> ! {
    write_marker(s, &s.init_marker);
    write_frame(s, &json!({"type": "init_error", "error": {"type": "RuntimeError", "message": message, "stack": ""}}));
    std::process::exit(1)
}

/// Ends the run in `st` (which has its answer or a failure): its marker, then its frame.
/// `retire` asks the engine not to reuse the instance (`strays`: the bootstrap is gone or
/// still busy with something).
fn finish(s: &Shared, st: &mut State, retire: bool) {
    let Some(run) = st.run.take() else { return };
    let (answer, _) = run.answer.unwrap_or((Answer::Failed("the bootstrap ended the run without answering".into()), Instant::now()));
    let id = run.id;
    write_marker(s, &run.marker);
    let mut frame = match answer {
        Answer::Output(v) => json!({"type": "result", "ok": true, "output": v, "request_id": id}),
        Answer::Error { message, stack } => json!({"type": "result", "ok": false, "error": {"type": "HandlerError", "message": message, "stack": stack}, "request_id": id}),
        Answer::Failed(message) => json!({"type": "result", "ok": false, "error": {"type": "RuntimeError", "message": message, "stack": ""}, "request_id": id}),
    };
    // The engine refuses a frame past the payload cap plus its envelope (and then kills the
    // instance): a text answer that escaping made larger fails here, as on Lambda.
    if serde_json::to_vec(&frame).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_BODY + (60 << 10) {
        let message = format!("Function.ResponseSizeTooLarge: the response is larger than the limit ({MAX_BODY} bytes)");
        frame = json!({"type": "result", "ok": false, "error": {"type": "RuntimeError", "message": message, "stack": ""}, "request_id": id});
    }
    if retire {
        frame["strays"] = json!(true);
    }
    write_frame(s, &frame);
}

/// Waits for the bootstrap to end: before it asked for work, an init error; during a run, the
/// run's end (a `RuntimeError` unless it had answered); then the helper exits.
fn watch_bootstrap(s: Arc<Shared>, mut child: Child) {
    let status = child.wait();
    let how = match status {
        Ok(st) => match (st.code(), std::os::unix::process::ExitStatusExt::signal(&st)) {
            (Some(c), _) => format!("exit status {c}"),
            (_, Some(sig)) => format!("signal {sig}"),
            _ => "ended".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    };
    let mut st = lock(&s.state);
    if st.phase == Phase::Init {
        init_failed(&s, &format!("Runtime.ExitError: the bootstrap exited before asking for an event (Runtime exited with error: {how})"));
    }
    if let Some(run) = st.run.as_mut() {
        if run.answer.is_none() {
            run.answer = Some((Answer::Failed(format!("Runtime.ExitError: the bootstrap exited before answering (Runtime exited with error: {how})")), Instant::now()));
        }
        finish(&s, &mut st, true);
    }
    std::process::exit(0)
}

/// Ends runs whose bootstrap answered but did not ask again within [`ANSWER_GRACE`] (or
/// by just before the deadline).
fn end_answered_runs(s: Arc<Shared>) {
    let mut st = lock(&s.state);
    loop {
        let due = st.run.as_ref().and_then(|r| r.answer.as_ref().map(|(_, at)| (*at + ANSWER_GRACE).min(r.deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(r.deadline))));
        match due {
            Some(due) if Instant::now() >= due => finish(&s, &mut st, false),
            Some(due) => st = s.cv.wait_timeout(st, due.saturating_duration_since(Instant::now())).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0),
            None => st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

fn accept(s: Arc<Shared>, listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if s.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            s.connections.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let s = s.clone();
        std::thread::spawn(move || {
            let _ = serve(&s, conn);
            s.connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Result<Vec<u8>, BodyError>,
    close: bool,
}

#[derive(Debug)]
enum BodyError {
    TooLarge,
}

/// A response: status, JSON body, extra headers.
struct Response {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    close: bool,
}

fn reply(status: u16, body: Value) -> Response {
    Response { status, body: serde_json::to_vec(&body).unwrap_or_default(), headers: Vec::new(), close: false }
}

fn error_reply(status: u16, error_type: &str, message: &str) -> Response {
    reply(status, json!({"errorMessage": message, "errorType": error_type}))
}

fn serve(s: &Shared, conn: TcpStream) -> std::io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut out = conn.try_clone()?;
    let mut r = BufReader::with_capacity(64 << 10, conn);
    loop {
        let req = match read_request(&mut r, &mut out)? {
            Some(Ok(req)) => req,
            Some(Err(msg)) => {
                let mut resp = error_reply(400, "InvalidRequestFormat", msg);
                resp.close = true;
                return write_response(&mut out, resp);
            }
            None => return Ok(()),
        };
        let close = req.close;
        let mut resp = route(s, req);
        resp.close |= close;
        let end = resp.close;
        write_response(&mut out, resp)?;
        if end {
            return Ok(());
        }
    }
}

fn write_response(out: &mut TcpStream, resp: Response) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", resp.status, resp.body.len());
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if resp.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut buf = head.into_bytes();
    buf.extend_from_slice(&resp.body);
    out.write_all(&buf)?;
    out.flush()
}

/// Reads one request: `None` at a clean end of the connection, `Some(Err)` for one that
/// cannot be read (the connection is then closed).
fn read_request(r: &mut BufReader<TcpStream>, out: &mut TcpStream) -> std::io::Result<Option<Result<Request, &'static str>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.by_ref().take((MAX_HEAD - head.len().min(MAX_HEAD)) as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(if head.is_empty() { None } else { Some(Err("the request ended in its head")) });
        }
        if head.len() + line.len() > MAX_HEAD {
            return Ok(Some(Err("the request head is larger than 16 KiB")));
        }
        if head.is_empty() && (line == b"\r\n" || line == b"\n") {
            continue; // tolerated between requests
        }
        let end = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if end {
            break;
        }
        if !line.ends_with(b"\n") {
            return Ok(Some(Err("the request ended in its head")));
        }
    }
    let Ok(text) = std::str::from_utf8(&head) else { return Ok(Some(Err("the request head is not UTF-8"))) };
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Ok(Some(Err("malformed request line")));
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") || method.is_empty() || !path.starts_with('/') {
        return Ok(Some(Err("malformed request line")));
    }
    let mut headers = HashMap::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((k, v)) = l.split_once(':') else { return Ok(Some(Err("malformed header"))) };
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() || k.contains(' ') {
            return Ok(Some(Err("malformed header")));
        }
        if headers.insert(k.clone(), v.trim().to_string()).is_some() && (k == "content-length" || k == "transfer-encoding") {
            return Ok(Some(Err("a repeated Content-Length or Transfer-Encoding")));
        }
    }
    let conn_hdr = headers.get("connection").map(|c| c.to_ascii_lowercase()).unwrap_or_default();
    let close = conn_hdr == "close" || (version == "HTTP/1.0" && conn_hdr != "keep-alive");
    let chunked = match headers.get("transfer-encoding").map(|t| t.to_ascii_lowercase()) {
        None => false,
        Some(t) if t == "chunked" => true,
        Some(_) => return Ok(Some(Err("unsupported Transfer-Encoding"))),
    };
    let length = match headers.get("content-length") {
        None => None,
        Some(_) if chunked => return Ok(Some(Err("both Content-Length and Transfer-Encoding"))),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Ok(Some(Err("malformed Content-Length"))),
        },
    };
    if let Some(n) = length.filter(|n| *n > MAX_BODY as u64) {
        // Refused. Read to its end (up to a bound) so the client sees the answer rather than
        // a reset; past the bound the connection closes unread.
        if n <= MAX_DISCARD {
            if headers.get("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
                out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink())?;
        }
        let req = Request { method: method.into(), path: path.into(), headers, body: Err(BodyError::TooLarge), close: n > MAX_DISCARD || close };
        return Ok(Some(Ok(req)));
    }
    let has_body = chunked || length.is_some_and(|n| n > 0);
    if has_body && headers.get("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if chunked {
        match read_chunked(r)? {
            Ok(b) => Ok(b),
            Err(Some(e)) => return Ok(Some(Err(e))),
            Err(None) => Err(BodyError::TooLarge),
        }
    } else {
        let mut b = vec![0u8; length.unwrap_or(0) as usize];
        r.read_exact(&mut b)?;
        Ok(b)
    };
    let close = close || body.is_err();
    Ok(Some(Ok(Request { method: method.into(), path: path.into(), headers, body, close })))
}

/// A chunked body: `Err(None)` once it passes [`MAX_BODY`], `Err(Some)` when malformed.
fn read_chunked(r: &mut BufReader<TcpStream>) -> std::io::Result<Result<Vec<u8>, Option<&'static str>>> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        r.by_ref().take(1024).read_until(b'\n', &mut line)?;
        let Ok(text) = std::str::from_utf8(&line) else { return Ok(Err(Some("malformed chunk size"))) };
        let size = text.trim().split(';').next().unwrap_or_default();
        let Ok(n) = usize::from_str_radix(size, 16) else { return Ok(Err(Some("malformed chunk size"))) };
        if n == 0 {
            // Trailers, up to the empty line (a few at most).
            for _ in 0..64 {
                let mut t = Vec::new();
                let got = r.by_ref().take(MAX_HEAD as u64).read_until(b'\n', &mut t)?;
                if got == 0 || t == b"\r\n" || t == b"\n" {
                    return Ok(Ok(body));
                }
            }
            return Ok(Err(Some("too many trailers")));
        }
        if n > MAX_BODY - body.len() {
            return Ok(Err(None));
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Ok(Err(Some("malformed chunk")));
        }
    }
}

fn route(s: &Shared, req: Request) -> Response {
    let path = req.path.clone();
    let Some(rest) = path.strip_prefix(PREFIX) else { return error_reply(404, "NotFound", "unknown path") };
    let rest = rest.split('?').next().unwrap_or_default();
    let post = req.method == "POST";
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["invocation", "next"] if req.method == "GET" => next(s),
        ["invocation", id, "response"] if post => answer(s, id, req, false),
        ["invocation", id, "error"] if post => answer(s, id, req, true),
        ["init", "error"] if post => init_error(s, req),
        ["invocation", "next"] | ["invocation", _, "response" | "error"] | ["init", "error"] => error_reply(405, "MethodNotAllowed", "method not allowed"),
        _ => error_reply(404, "NotFound", "unknown path"),
    }
}

/// `GET …/invocation/next`: ends the answered run, then waits for the next event.
fn next(s: &Shared) -> Response {
    let mut st = lock(&s.state);
    if st.phase == Phase::Init {
        st.phase = Phase::Ready;
        write_frame(s, &json!({"type": "ready"}));
    }
    if let Some(run) = st.run.as_mut() {
        if run.delivered {
            if run.answer.is_none() {
                let msg = format!("Runtime.InvalidStateTransition: the bootstrap asked for the next event without answering request {}", run.id);
                run.answer = Some((Answer::Failed(msg), Instant::now()));
            }
            finish(s, &mut st, false);
        }
    }
    loop {
        if let Some(run) = st.run.as_mut() {
            if !run.delivered {
                run.delivered = true;
                let trace = format!("Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0", run.deadline_ms / 1000, rand::random::<u128>() >> 32, rand::random::<u64>());
                let headers = vec![
                    ("Lambda-Runtime-Aws-Request-Id", run.id.clone()),
                    ("Lambda-Runtime-Deadline-Ms", run.deadline_ms.to_string()),
                    ("Lambda-Runtime-Invoked-Function-Arn", s.function_arn.clone()),
                    ("Lambda-Runtime-Trace-Id", trace),
                ];
                return Response { status: 200, body: run.event.clone(), headers, close: false };
            }
        }
        st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// `POST …/invocation/{id}/response` and `…/error`.
fn answer(s: &Shared, id: &str, req: Request, is_error: bool) -> Response {
    let mut st = lock(&s.state);
    let Some(run) = st.run.as_mut().filter(|r| r.delivered) else {
        return error_reply(403, "InvalidStateTransition", "no invocation is in progress");
    };
    if run.id != id {
        return error_reply(400, "InvalidRequestID", "Invalid request ID");
    }
    if run.answer.is_some() {
        return error_reply(403, "InvalidStateTransition", "the invocation has already been answered");
    }
    let body = match req.body {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            // As on Lambda: the run fails, the bootstrap is told.
            let msg = format!("Function.ResponseSizeTooLarge: the response is larger than the limit ({MAX_BODY} bytes)");
            run.answer = Some((Answer::Failed(msg), Instant::now()));
            drop(st);
            s.cv.notify_all();
            return error_reply(413, "RequestEntityTooLarge", &format!("Exceeded maximum allowed payload size ({MAX_BODY} bytes)."));
        }
    };
    let result = if is_error { Ok(error_answer(&body, req.headers.get("lambda-runtime-function-error-type"))) } else { output_answer(&body) };
    match result {
        Ok(a) => {
            run.answer = Some((a, Instant::now()));
            drop(st);
            s.cv.notify_all();
            reply(202, json!({"status": "OK"}))
        }
        Err(msg) => error_reply(400, "InvalidRequestFormat", msg),
    }
}

/// A response body as the run's output: JSON as is; other UTF-8 text as a JSON string (a
/// run's output is JSON; Lambda's may be any bytes).
fn output_answer(body: &[u8]) -> Result<Answer, &'static str> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(Answer::Output(v));
    }
    match std::str::from_utf8(body) {
        Ok(t) => Ok(Answer::Output(Value::String(t.to_string()))),
        Err(_) => Err("the response is neither JSON nor UTF-8 text"),
    }
}

/// An error body (`{errorMessage, errorType, stackTrace}`, or any text) as a HandlerError.
fn error_answer(body: &[u8], header_type: Option<&String>) -> Answer {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let cap = |t: &str| -> String {
        let mut end = t.len().min(MAX_ERROR_TEXT);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t[..end].to_string()
    };
    let (error_type, message, stack) = if v.is_object() {
        let stack = match &v["stackTrace"] {
            Value::Array(lines) => lines.iter().map(|l| l.as_str().map(str::to_string).unwrap_or_else(|| l.to_string())).collect::<Vec<_>>().join("\n"),
            Value::String(t) => t.clone(),
            _ => String::new(),
        };
        let msg = match &v["errorMessage"] {
            Value::String(m) => m.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (v["errorType"].as_str().map(str::to_string), msg, stack)
    } else {
        (None, String::from_utf8_lossy(body).into_owned(), String::new())
    };
    let error_type = error_type.or_else(|| header_type.cloned()).filter(|t| !t.is_empty());
    let message = match error_type {
        Some(t) if message.is_empty() => t,
        Some(t) => format!("{t}: {message}"),
        None if message.is_empty() => "Unhandled".to_string(),
        None => message,
    };
    Answer::Error { message: cap(&message), stack: cap(&stack) }
}

/// `POST /runtime/init/error`: before the first `/next`, the instance's init fails with it.
fn init_error(s: &Shared, req: Request) -> Response {
    let st = lock(&s.state);
    if st.phase != Phase::Init {
        return error_reply(403, "InvalidStateTransition", "the runtime has already initialised");
    }
    let Answer::Error { message, .. } = error_answer(req.body.as_deref().unwrap_or_default(), req.headers.get("lambda-runtime-function-error-type")) else {
        unreachable!("error_answer gives an error")
    };
    // The bootstrap gets its 202 first: Lambda's runtime clients exit after it.
    drop(st);
    write_marker(s, &s.init_marker);
    write_frame(s, &json!({"type": "init_error", "error": {"type": "RuntimeError", "message": message, "stack": ""}}));
    // The sandbox ends the instance once the helper exits; give the answer a moment to go out.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(50));
        std::process::exit(1)
    });
    reply(202, json!({"status": "OK"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_post_becomes_a_handler_error_with_its_type_and_message() {
        let Answer::Error { message, stack } = error_answer(br#"{"errorMessage":"bad input","errorType":"ValueError","stackTrace":["a","b"]}"#, None) else { panic!() };
        assert_eq!((message.as_str(), stack.as_str()), ("ValueError: bad input", "a\nb"));
        let Answer::Error { message, .. } = error_answer(b"plain text", Some(&"Custom".to_string())) else { panic!() };
        assert_eq!(message, "Custom: plain text");
        let Answer::Error { message, .. } = error_answer(b"", None) else { panic!() };
        assert_eq!(message, "Unhandled");
    }

    #[test]
    fn a_response_is_json_or_else_text() {
        assert!(matches!(output_answer(br#"{"a":1}"#), Ok(Answer::Output(v)) if v == json!({"a": 1})));
        assert!(matches!(output_answer(b"Echoing request: 'x'"), Ok(Answer::Output(Value::String(t))) if t == "Echoing request: 'x'"));
        assert!(output_answer(&[0xff, 0xfe]).is_err());
    }
}
