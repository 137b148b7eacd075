//! One warm instance: a sandboxed runtime process, the framed control protocol over its
//! fds 3/4 (docs/RUNTIME_PROTOCOL.md), and the task that splits its log pipe into runs.
//!
//! Logs and results travel on different pipes, so a result frame can arrive before the tail
//! of the run's output. The bootstrap therefore writes a marker into the log pipe after
//! flushing and before sending the result; the log task cuts the stream at the marker, and a
//! run's logs are exactly the bytes up to it.
//!
//! The function's own code can read whatever the bootstrap holds, the marker included, and
//! write to the log pipe and to fd 4 as the bootstrap does. So nothing here trusts it to
//! behave: each run gets a fresh marker (in its invoke frame), the log task expects exactly
//! one marker per run and keeps at most that run's capped log, output outside a run is
//! dropped, result frames must echo the run's request id, and once the result is in, the
//! engine drains every byte the log pipe held at that moment before it judges the run. Any
//! marker out of place, output outside a run, an extra control byte or a missing marker
//! marks the instance tainted: it finishes the run it is in and is never reused.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use voltrun_core::{ErrorKind, ExecError, MAX_LOG_BYTES, MAX_PAYLOAD_BYTES};
use voltrun_sandbox::{InstanceHandle, Spawned};

/// Largest control frame accepted from an instance: the payload cap plus JSON envelope.
const MAX_FRAME: usize = MAX_PAYLOAD_BYTES + 64 * 1024;
/// How long to wait for a run's log tail once its result (or death) is known. Only a process
/// that keeps the log pipe open without writing the marker can make us wait this long.
const LOG_TAIL_WAIT: Duration = Duration::from_secs(2);
/// What every marker starts with; any occurrence in the log stream is taken for a marker.
const MARKER_PREFIX: &[u8] = b"\x1evoltrun:";
/// A marker: the prefix, 32 hex digits, and a closing `\x1e`.
const MARKER_LEN: usize = MARKER_PREFIX.len() + 32 + 1;

/// A fresh random marker (128 bits), for one run or one init.
fn new_marker() -> String {
    format!("\x1evoltrun:{:032x}\x1e", rand::random::<u128>())
}

/// The logs of one run.
#[derive(Debug, Default)]
pub struct Segment {
    pub text: Vec<u8>,
    pub truncated: bool,
}

/// The log of the run in progress, shared by the log task, the engine and live (SSE)
/// subscribers. Locked only briefly, never across an await.
#[derive(Default)]
pub struct RunLog {
    seg: Segment,
    tx: Option<broadcast::Sender<String>>,
    /// True from the invoke frame until the run's marker (or the end of the pipe).
    active: bool,
    /// Whether output is kept (into `seg`): during init (module-level output belongs to the
    /// first run) and during a run. Output between runs belongs to no run and is dropped.
    keep: bool,
    /// The one marker that may come next: the current run's (or init's) until it is seen.
    expect: Option<Vec<u8>>,
    /// The finished log of the current run, once its marker was seen: the only finished
    /// segment ever held (a slot of one).
    done: Option<Segment>,
    /// Why the instance must not be reused, once its streams were seen to be forged.
    tainted: Option<&'static str>,
}

impl RunLog {
    /// Marks the instance unusable; the first reason is kept.
    fn taint(&mut self, why: &'static str) {
        self.tainted.get_or_insert(why);
    }

    /// The run's log is complete: it moves to the slot and live subscribers are closed.
    fn finish(&mut self) {
        self.tx = None;
        self.active = false;
        self.keep = false;
        self.expect = None;
        self.done = Some(std::mem::take(&mut self.seg));
    }
}

/// Shared handle to an instance's [`RunLog`].
pub type LiveLog = Arc<Mutex<RunLog>>;

/// Subscribes to a run's log: what it wrote so far, and a receiver of what follows. The
/// receiver closes when the run's log is complete; None once it is.
pub fn subscribe(log: &LiveLog) -> Option<(String, broadcast::Receiver<String>)> {
    let mut l = log.lock().expect("run log lock");
    if !l.active {
        return None;
    }
    let so_far = String::from_utf8_lossy(&l.seg.text).into_owned();
    let rx = match &l.tx {
        Some(tx) => tx.subscribe(),
        None => {
            let (tx, rx) = broadcast::channel(1024);
            l.tx = Some(tx);
            rx
        }
    };
    Some((so_far, rx))
}

/// What happened to one invocation on an instance.
pub struct RunReport {
    pub result: Result<Value, ExecError>,
    pub logs: Segment,
    /// False when the instance must not be reused (it died, timed out, left processes or
    /// threads, or its log or control stream was forged).
    pub reusable: bool,
}

/// A started runtime process and the engine's ends of its pipes.
pub struct Instance {
    handle: Box<dyn InstanceHandle>,
    ctl_tx: pipe::Sender,
    ctl_rx: pipe::Receiver,
    /// Asks the log task to take in everything the log pipe holds now (see [`split_logs`]).
    log_sync: mpsc::Sender<oneshot::Sender<()>>,
    /// The log task; it ends at the end of the log pipe.
    log_task: JoinHandle<()>,
    /// The current run's log, for live subscribers.
    pub live: LiveLog,
    code_dir: PathBuf,
    /// The init frame's marker, written only before an `init_error` (runs get their own).
    marker: String,
    /// The function version this instance runs.
    pub version: i64,
    /// When it last finished a run.
    pub last_used: Instant,
}

/// How to start the protocol on a fresh instance.
pub struct InitParams {
    /// Environment added before the code loads (a spare instance's function variables).
    pub env: Vec<(String, String)>,
    pub entry: PathBuf,
    pub handler: String,
    pub function_name: String,
    pub function_version: i64,
    pub memory_mb: u32,
}

/// Why an instance could not be started, with what it printed.
pub struct StartFailure {
    pub error: ExecError,
    pub logs: Segment,
}

impl Instance {
    /// Wraps a spawned process, starts its log task and runs the init handshake (the user's
    /// module is loaded here). Must run inside the tokio runtime.
    pub async fn start(spawned: Spawned, code_dir: PathBuf, init: InitParams, deadline: Instant) -> Result<Instance, StartFailure> {
        Instance::wrap(spawned, code_dir)?.init(init, deadline).await
    }

    /// Wraps a spawned process and starts its log task; the instance then waits (blocked in
    /// the bootstrap) for its init frame, which may come much later (spare instances).
    pub fn wrap(spawned: Spawned, code_dir: PathBuf) -> Result<Instance, StartFailure> {
        let marker = new_marker();
        let (sync_tx, sync_rx) = mpsc::channel(1);
        let live: LiveLog = Arc::new(Mutex::new(RunLog { keep: true, expect: Some(marker.clone().into_bytes()), ..RunLog::default() }));
        let mut handle = spawned.handle;
        let pipes = (|| -> std::io::Result<_> {
            Ok((
                pipe::Receiver::from_owned_fd(spawned.logs)?,
                pipe::Sender::from_owned_fd(spawned.control_in)?,
                pipe::Receiver::from_owned_fd(spawned.control_out)?,
            ))
        })();
        let (logs, ctl_tx, ctl_rx) = match pipes {
            Ok(p) => p,
            Err(e) => {
                handle.kill();
                return Err(StartFailure { error: internal(e), logs: Segment::default() });
            }
        };
        let log_task = tokio::spawn(split_logs(logs, sync_rx, live.clone()));
        Ok(Instance { handle, ctl_tx, ctl_rx, log_sync: sync_tx, log_task, live, code_dir, marker, version: 0, last_used: Instant::now() })
    }

    /// True once its log stream was seen forged (a marker out of place, output between
    /// runs): the instance must not run anything again.
    pub fn tainted(&self) -> bool {
        self.live.lock().expect("run log lock").tainted.is_some()
    }

    /// Gives a spare started with a network (and an empty plan) its function's (issue 14).
    pub fn set_network(&mut self, plan: std::sync::Arc<voltrun_sandbox::network::NetworkPlan>) -> Result<(), voltrun_sandbox::SandboxError> {
        self.handle.set_network(plan)
    }

    /// The host directory the instance sees as its code directory.
    pub fn code_dir(&self) -> &std::path::Path {
        &self.code_dir
    }

    /// The init handshake: the bootstrap loads the function's code.
    pub async fn init(mut self, init: InitParams, deadline: Instant) -> Result<Instance, StartFailure> {
        self.version = init.function_version;
        let env: serde_json::Map<String, Value> = init.env.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let frame = json!({
            "type": "init",
            "entry": init.entry,
            "handler": init.handler,
            "function_name": init.function_name,
            "function_version": init.function_version,
            "memory_limit_in_mb": init.memory_mb,
            "marker": self.marker,
            "env": env,
            "report_strays": !self.handle.sees_processes(),
        });
        let mut inst = self;
        let reply = tokio::time::timeout_at(deadline.into(), async {
            write_frame(&mut inst.ctl_tx, &frame).await?;
            read_frame(&mut inst.ctl_rx).await
        })
        .await;
        match reply {
            Ok(Ok(msg)) if msg["type"] == "ready" => {
                // The init marker is spent: from now on only a run's own marker may appear.
                inst.live.lock().expect("run log lock").expect = None;
                Ok(inst)
            }
            Ok(Ok(msg)) if msg["type"] == "init_error" => {
                let error = serde_json::from_value(msg["error"].clone())
                    .unwrap_or_else(|_| ExecError::new(ErrorKind::RuntimeError, "the function failed to load"));
                let (logs, _) = inst.settle_logs().await;
                inst.terminate().await;
                Err(StartFailure { error, logs })
            }
            Ok(Ok(msg)) => {
                inst.terminate().await;
                Err(StartFailure { error: protocol_error(&msg), logs: Segment::default() })
            }
            Ok(Err(_)) => {
                let (error, logs) = inst.died().await;
                Err(StartFailure { error, logs })
            }
            Err(_) => {
                let logs = inst.kill_and_collect().await;
                Err(StartFailure { error: timeout_error(), logs })
            }
        }
    }

    /// Runs one invocation.
    pub async fn invoke(&mut self, request_id: &str, event: &Value, timeout: Duration) -> RunReport {
        let deadline = Instant::now() + timeout;
        // A marker of its own for every run: one learnt by the function's code in an earlier
        // run is of no use in this one (it is taken for a forgery).
        let marker = new_marker();
        // Refusals from before this run (between runs, or of a run that failed) are not its.
        drop(self.handle.take_network_log());
        {
            let mut l = self.live.lock().expect("run log lock");
            l.active = true;
            l.keep = true;
            l.done = None;
            l.expect = Some(marker.clone().into_bytes());
        }
        let frame = json!({"type": "invoke", "request_id": request_id, "event": event, "timeout_ms": timeout.as_millis() as u64, "marker": marker});
        let reply = tokio::time::timeout_at(deadline.into(), async {
            write_frame(&mut self.ctl_tx, &frame).await?;
            read_frame(&mut self.ctl_rx).await
        })
        .await;
        let report = match reply {
            Ok(Ok(msg)) if msg["type"] == "result" && msg["request_id"] != request_id => {
                // Not this run's answer: a frame forged by the function, or one of an earlier
                // run that a forgery pushed back. Nothing on either pipe can be trusted now,
                // so this run gets neither the frame nor the logs gathered so far.
                tracing::warn!(reason = "a result frame for another run", "retiring an instance whose control stream was forged");
                self.handle.kill();
                self.live.lock().expect("run log lock").finish();
                let error = ExecError::new(ErrorKind::RuntimeError, "the runtime answered for another run; the instance was stopped");
                RunReport { result: Err(error), logs: Segment::default(), reusable: false }
            }
            Ok(Ok(msg)) if msg["type"] == "result" => {
                let result = if msg["ok"] == true {
                    Ok(msg.get("output").cloned().unwrap_or(Value::Null))
                } else {
                    Err(serde_json::from_value(msg["error"].clone())
                        .unwrap_or_else(|_| ExecError::new(ErrorKind::RuntimeError, "the runtime reported a malformed error")))
                };
                let (mut logs, tainted) = self.settle_logs().await;
                // Connections the egress policy refused during the run: one line each.
                for line in self.handle.take_network_log() {
                    logs.text.extend_from_slice(line.as_bytes());
                }
                // Threads, timers or processes the handler left behind, which could print
                // into the next run: reported by the bootstrap, or seen by the host.
                let strays = msg["strays"] == true || (self.handle.sees_processes() && self.handle.has_stray_processes());
                // Another frame already waiting means one of the two was not the bootstrap's.
                let extra = (sys::pending_bytes(&self.ctl_rx) != 0).then_some("more than one result frame");
                if let Some(reason) = tainted.or(extra) {
                    tracing::warn!(reason, "retiring an instance whose log or control stream was forged");
                }
                RunReport { result, logs, reusable: !strays && tainted.is_none() && extra.is_none() }
            }
            Ok(Ok(msg)) => RunReport { result: Err(protocol_error(&msg)), logs: self.kill_and_collect().await, reusable: false },
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                // The process is alive but its answer is unusable (too large, too deep).
                let error = ExecError::new(ErrorKind::RuntimeError, format!("the function's result could not be used: {e}"));
                RunReport { result: Err(error), logs: self.kill_and_collect().await, reusable: false }
            }
            Ok(Err(_)) => {
                let (error, logs) = self.died().await;
                RunReport { result: Err(error), logs, reusable: false }
            }
            Err(_) => RunReport { result: Err(timeout_error_for(timeout)), logs: self.kill_and_collect().await, reusable: false },
        };
        self.last_used = Instant::now();
        report
    }

    /// The logs of the run (or init) that just sent its frame, and whether the streams were
    /// forged. The bootstrap writes its marker before the frame, so once we hold the frame
    /// the marker is in the log pipe: the log task takes in all the pipe holds and then must
    /// have seen this run's marker exactly once and nothing marker-like besides.
    async fn settle_logs(&mut self) -> (Segment, Option<&'static str>) {
        let (ack, synced) = oneshot::channel();
        if self.log_sync.send(ack).await.is_ok() {
            let _ = tokio::time::timeout(LOG_TAIL_WAIT, synced).await;
        }
        let mut l = self.live.lock().expect("run log lock");
        if l.done.is_none() {
            // The marker never came: the function kept the bootstrap from writing it.
            l.taint("no end-of-run marker");
            l.finish();
        }
        (l.done.take().unwrap_or_default(), l.tainted)
    }

    /// Kills the instance and returns whatever the current run had written.
    async fn kill_and_collect(&mut self) -> Segment {
        self.handle.kill();
        self.collect_until_eof().await
    }

    /// The process ended without a result: reap it, gather its output and say why.
    async fn died(&mut self) -> (ExecError, Segment) {
        self.handle.kill();
        let logs = self.collect_until_eof().await;
        let oom_by_tier = self.handle.out_of_memory();
        let exit = self.handle.wait();
        let tail = String::from_utf8_lossy(&logs.text[logs.text.len().saturating_sub(4096)..]).into_owned();
        let error = if oom_by_tier || tail.contains("JavaScript heap out of memory") || tail.contains("MemoryError") {
            ExecError::new(ErrorKind::OutOfMemory, "the function ran out of memory")
        } else {
            ExecError::new(ErrorKind::RuntimeError, format!("the runtime process {exit} before returning a result"))
        };
        (error, logs)
    }

    /// The current run's log once the pipe has closed (or after [`LOG_TAIL_WAIT`]).
    async fn collect_until_eof(&mut self) -> Segment {
        let _ = tokio::time::timeout(LOG_TAIL_WAIT, &mut self.log_task).await;
        let mut l = self.live.lock().expect("run log lock");
        if l.done.is_none() {
            l.finish();
        }
        l.done.take().unwrap_or_default()
    }

    /// Kills every process of the instance and removes its files.
    pub async fn terminate(mut self) {
        // A write end that outlives the kill (the process tier) must not keep the log task.
        self.log_task.abort();
        let dir = std::mem::take(&mut self.code_dir);
        let mut handle = std::mem::replace(&mut self.handle, Box::new(Gone));
        let _ = tokio::task::spawn_blocking(move || {
            handle.kill();
            handle.wait();
            drop(handle);
            if !dir.as_os_str().is_empty() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        })
        .await;
    }
}

/// Stands in for a handle moved out by `terminate`.
struct Gone;

impl InstanceHandle for Gone {
    fn kill(&mut self) {}
    fn wait(&mut self) -> voltrun_sandbox::ExitInfo {
        voltrun_sandbox::ExitInfo::default()
    }
    fn out_of_memory(&self) -> bool {
        false
    }
    fn has_stray_processes(&self) -> bool {
        false
    }
}

impl Drop for Instance {
    /// An instance dropped without [`Instance::terminate`] (a failed start) still takes its
    /// files with it; its handle kills its processes.
    fn drop(&mut self) {
        if !self.code_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.code_dir);
        }
    }
}

fn internal(e: std::io::Error) -> ExecError {
    ExecError::new(ErrorKind::Internal, format!("instance pipe: {e}"))
}

fn protocol_error(msg: &Value) -> ExecError {
    let kind = msg["type"].as_str().unwrap_or("?");
    ExecError::new(ErrorKind::RuntimeError, format!("the runtime sent an unexpected {kind:?} message"))
}

fn timeout_error_for(timeout: Duration) -> ExecError {
    ExecError::new(ErrorKind::Timeout, format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()))
}

fn timeout_error() -> ExecError {
    ExecError::new(ErrorKind::Timeout, "Task timed out while the function was loading")
}

async fn write_frame(tx: &mut pipe::Sender, v: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    tx.write_all(&buf).await
}

async fn read_frame(rx: &mut pipe::Receiver) -> std::io::Result<Value> {
    let mut len = [0u8; 4];
    rx.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "it is larger than 6 MiB"));
    }
    let mut body = vec![0u8; len];
    rx.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("it is not JSON we can read ({e})")))
}

/// Appends `data` to `buf` up to the log cap, noting when something was dropped.
fn append_capped(buf: &mut Vec<u8>, data: &[u8], truncated: &mut bool) -> usize {
    let room = MAX_LOG_BYTES.saturating_sub(buf.len());
    let take = room.min(data.len());
    buf.extend_from_slice(&data[..take]);
    if take < data.len() {
        *truncated = true;
    }
    take
}

/// The log task: reads the pipe until EOF and splits it into runs (see [`RunLog`]), capping
/// each run's log at 256 KiB but always draining (a flooding function never blocks on a
/// full pipe), and copying the kept bytes to live subscribers. A sync request makes it first
/// take in every byte the pipe holds at that moment, then acknowledge.
async fn split_logs(mut rx: pipe::Receiver, mut sync: mpsc::Receiver<oneshot::Sender<()>>, live: LiveLog) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut sync_open = true;
    'pipe: loop {
        tokio::select! {
            biased;
            ack = sync.recv(), if sync_open => match ack {
                Some(ack) => {
                    // Bounded by the pipe's capacity: what was written before the frame.
                    let mut left = sys::pending_bytes(&rx);
                    while left > 0 {
                        let want = left.min(chunk.len());
                        match rx.read(&mut chunk[..want]).await {
                            Ok(0) | Err(_) => {
                                let _ = ack.send(());
                                break 'pipe;
                            }
                            Ok(n) => {
                                split(&mut pending, &chunk[..n], &live);
                                left -= n;
                            }
                        }
                    }
                    let _ = ack.send(());
                }
                None => sync_open = false,
            },
            n = rx.read(&mut chunk) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => split(&mut pending, &chunk[..n], &live),
            },
        }
    }
    let mut l = live.lock().expect("run log lock");
    emit(&mut l, &pending);
    l.tx = None;
    l.active = false;
}

/// Takes `data` into the run log, cutting at markers. `pending` keeps only a tail that could
/// be the start of a marker split across reads (fewer than [`MARKER_LEN`] bytes); everything
/// else goes out at once (live logs stream line by line).
fn split(pending: &mut Vec<u8>, data: &[u8], live: &LiveLog) {
    pending.extend_from_slice(data);
    let mut l = live.lock().expect("run log lock");
    let mut start = 0;
    loop {
        let rest = &pending[start..];
        match find(rest, MARKER_PREFIX) {
            Some(pos) if rest.len() - pos >= MARKER_LEN => {
                emit(&mut l, &rest[..pos]);
                let token = &rest[pos..pos + MARKER_LEN];
                if l.expect.as_deref() == Some(token) {
                    l.finish();
                } else {
                    // A second marker of this run, an earlier run's, one while no run is in
                    // progress, or a made-up one: the stream is forged. What the current run
                    // holds may be an earlier run's tail pushed behind a forged marker, so it
                    // is dropped too.
                    l.taint("a log marker out of place");
                    if l.keep {
                        l.seg.text.clear();
                        l.seg.truncated = true;
                        // The rest of this run's output is dropped too: clearing the log
                        // must not give the cap (and live followers' buffers) room again.
                        l.keep = false;
                    }
                }
                start += pos + MARKER_LEN;
            }
            Some(pos) => {
                // A marker's start whose rest has not arrived yet.
                emit(&mut l, &rest[..pos]);
                start += pos;
                break;
            }
            None => {
                let hold = (1..MARKER_PREFIX.len().min(rest.len() + 1)).rev().find(|&k| rest.ends_with(&MARKER_PREFIX[..k])).unwrap_or(0);
                emit(&mut l, &rest[..rest.len() - hold]);
                start += rest.len() - hold;
                break;
            }
        }
    }
    drop(l);
    pending.drain(..start);
}

/// Where `needle` (which starts with a byte rare in logs) first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|&b| b == needle[0]) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Output of the run in progress is kept; output while no run is in progress belongs to no
/// run: it is dropped, and it means something of an earlier run is still alive.
fn emit(log: &mut RunLog, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if !log.keep {
        log.taint("output outside a run");
        return;
    }
    let kept = append_capped(&mut log.seg.text, data, &mut log.seg.truncated);
    if kept > 0 {
        if let Some(tx) = &log.tx {
            let _ = tx.send(String::from_utf8_lossy(&data[..kept]).into_owned());
        }
    }
}

/// The few system calls this module makes.
mod sys {
    use std::os::fd::AsRawFd;

    /// Bytes waiting in a pipe (`FIONREAD`, see pipe(7)); 0 if the call fails.
    pub(super) fn pending_bytes(fd: &impl AsRawFd) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD stores one c_int through the pointer, which points to a live local;
        // the fd belongs to a pipe end the caller holds, so it is open during the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
        if r < 0 {
            0
        } else {
            n.max(0) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::OwnedFd;

    /// A log task on a fresh pipe: the write end, the sync sender and the shared log.
    fn log_task() -> (std::fs::File, mpsc::Sender<oneshot::Sender<()>>, LiveLog, JoinHandle<()>) {
        let (r, w) = std::io::pipe().unwrap();
        let rx = pipe::Receiver::from_owned_fd(OwnedFd::from(r)).unwrap();
        let (sync_tx, sync_rx) = mpsc::channel(1);
        let live: LiveLog = Arc::new(Mutex::new(RunLog { keep: true, ..RunLog::default() }));
        let task = tokio::spawn(split_logs(rx, sync_rx, live.clone()));
        (std::fs::File::from(OwnedFd::from(w)), sync_tx, live, task)
    }

    /// Starts a run with `marker` as the engine's invoke does.
    fn begin(live: &LiveLog, marker: &str) {
        let mut l = live.lock().unwrap();
        l.active = true;
        l.keep = true;
        l.done = None;
        l.expect = Some(marker.as_bytes().to_vec());
    }

    /// Takes in all the pipe holds, as the engine does once it has the result frame.
    async fn settle(sync: &mpsc::Sender<oneshot::Sender<()>>, live: &LiveLog) -> (Option<Segment>, Option<&'static str>) {
        let (ack, done) = oneshot::channel();
        sync.send(ack).await.unwrap();
        done.await.unwrap();
        let mut l = live.lock().unwrap();
        (l.done.take(), l.tainted)
    }

    /// Regression: the log task held back the marker's length (41 bytes) of every run's
    /// output until the run ended, so short lines never streamed live.
    #[tokio::test]
    async fn logs_stream_at_once_and_split_at_markers_across_reads() {
        let (mut w, sync, live, _task) = log_task();
        let (m1, m2) = (new_marker(), new_marker());
        begin(&live, &m1);
        let (_, mut sub) = subscribe(&live).unwrap();
        w.write_all(b"tick\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await.expect("a short line streams at once").unwrap();
        assert_eq!(got, "tick\n");
        // A marker split across two writes still ends the run exactly there.
        w.write_all(&[b"end\n".as_slice(), &m1.as_bytes()[..5]].concat()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.write_all(&m1.as_bytes()[5..]).unwrap();
        let (seg, tainted) = settle(&sync, &live).await;
        assert_eq!(seg.unwrap().text, b"tick\nend\n");
        assert_eq!(tainted, None);
        begin(&live, &m2);
        w.write_all(&[b"next run".as_slice(), m2.as_bytes()].concat()).unwrap();
        let (seg, tainted) = settle(&sync, &live).await;
        assert_eq!(seg.unwrap().text, b"next run");
        assert_eq!(tainted, None);
    }

    /// Regression (issue 12, item 5): a function that learnt its run's marker wrote
    /// thousands of fake end-of-run segments into an unbounded channel, and later runs were
    /// handed the earlier runs' logs. Now a second marker taints the instance, and nothing
    /// after the first is kept anywhere.
    #[tokio::test]
    async fn repeated_markers_pin_no_memory_and_no_later_run_gets_them() {
        let (mut w, sync, live, _task) = log_task();
        let m1 = new_marker();
        begin(&live, &m1);
        let fake = [vec![b'a'; 64 * 1024], m1.clone().into_bytes()].concat();
        let mut w = tokio::task::spawn_blocking(move || {
            for _ in 0..200 {
                w.write_all(&fake).unwrap();
            }
            w
        })
        .await
        .unwrap();
        let (seg, tainted) = settle(&sync, &live).await;
        assert_eq!(seg.unwrap().text.len(), 64 * 1024, "the run's log ends at its first marker");
        assert!(tainted.is_some(), "the instance must not be reused");
        {
            let l = live.lock().unwrap();
            assert!(l.seg.text.is_empty() && l.done.is_none(), "nothing after the first marker is held");
        }
        // A later run (were the instance reused) sees none of it, and the stale marker,
        // should it come late, wipes what the run holds rather than hand it over; what follows
        // it in that run is dropped too.
        let m2 = new_marker();
        begin(&live, &m2);
        w.write_all(&[b"tail of run 1".as_slice(), m1.as_bytes(), b"run 2".as_slice(), m2.as_bytes()].concat()).unwrap();
        let (seg, _) = settle(&sync, &live).await;
        let seg = seg.unwrap();
        assert!(seg.text.is_empty() && seg.truncated, "{:?}", String::from_utf8_lossy(&seg.text));
    }

    /// Regression (review of item 5): a forged marker cleared the run's log, which gave the
    /// 256 KiB cap room again, so a loop of "64 KiB, forged marker" sent without bound to
    /// live followers (their broadcast buffers hold 1,024 chunks each).
    #[tokio::test]
    async fn forged_markers_do_not_reopen_the_cap_for_live_followers() {
        let (w, sync, live, _task) = log_task();
        let m1 = new_marker();
        begin(&live, &m1);
        let (_, mut sub) = subscribe(&live).unwrap();
        let forged = new_marker();
        let chunk = [vec![0x80u8; 64 * 1024], forged.into_bytes()].concat();
        // Every write off the runtime's one thread: a full pipe blocks the writer until the
        // log task (on that thread) drains it.
        let end = m1.clone();
        let _w = tokio::task::spawn_blocking(move || {
            let mut w = w;
            for _ in 0..64 {
                w.write_all(&chunk).unwrap();
            }
            w.write_all(end.as_bytes()).unwrap();
            w
        })
        .await
        .unwrap();
        let (_, tainted) = settle(&sync, &live).await;
        assert!(tainted.is_some());
        let mut sent = 0usize;
        while let Ok(Ok(chunk)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            sent += chunk.len();
        }
        // Each kept byte may become a 3-byte U+FFFD: at most three times the cap.
        assert!(sent <= 3 * MAX_LOG_BYTES, "{sent} bytes went to a live follower of one run");
    }

    /// Output after a run's marker (a thread or process of that run still alive) belongs to
    /// no run, and a run whose marker never comes is noticed at once rather than waited for.
    #[tokio::test]
    async fn output_between_runs_is_dropped_and_taints() {
        let (mut w, sync, live, _task) = log_task();
        let m1 = new_marker();
        begin(&live, &m1);
        w.write_all(&[b"mine".as_slice(), m1.as_bytes(), b"late line\n".as_slice()].concat()).unwrap();
        let (seg, tainted) = settle(&sync, &live).await;
        assert_eq!(seg.unwrap().text, b"mine");
        assert_eq!(tainted, Some("output outside a run"));
        assert!(live.lock().unwrap().seg.text.is_empty());
    }
}
