//! One warm instance: a sandboxed runtime process, the framed control protocol over its
//! fds 3/4 (docs/RUNTIME_PROTOCOL.md), and the task that splits its log pipe into runs.
//!
//! Logs and results travel on different pipes, so a result frame can arrive before the tail
//! of the run's output. The bootstrap therefore writes a per-instance random marker into the
//! log pipe after flushing and before sending the result; the log task cuts the stream at each
//! marker, and a run's logs are exactly the bytes up to its marker.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc};
use voltrun_core::{ErrorKind, ExecError, MAX_LOG_BYTES, MAX_PAYLOAD_BYTES};
use voltrun_sandbox::{InstanceHandle, Spawned};

/// Largest control frame accepted from an instance: the payload cap plus JSON envelope.
const MAX_FRAME: usize = MAX_PAYLOAD_BYTES + 64 * 1024;
/// How long to wait for a run's log tail once its result (or death) is known. Only a process
/// that keeps the log pipe open without writing the marker can make us wait this long.
const LOG_TAIL_WAIT: Duration = Duration::from_secs(2);

/// The logs of one run.
#[derive(Debug, Default)]
pub struct Segment {
    pub text: Vec<u8>,
    pub truncated: bool,
}

/// The log of the run in progress, shared by the log task and live (SSE) subscribers.
#[derive(Default)]
pub struct RunLog {
    seg: Segment,
    tx: Option<broadcast::Sender<String>>,
    /// True from the invoke frame until the run's marker (or the end of the pipe).
    active: bool,
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
    /// False when the instance must not be reused (it died, timed out, or left processes).
    pub reusable: bool,
}

/// A started runtime process and the engine's ends of its pipes.
pub struct Instance {
    handle: Box<dyn InstanceHandle>,
    ctl_tx: pipe::Sender,
    ctl_rx: pipe::Receiver,
    logs: mpsc::UnboundedReceiver<Segment>,
    /// The current run's log, for live subscribers.
    pub live: LiveLog,
    code_dir: PathBuf,
    /// Written to the log pipe by the bootstrap at the end of each run.
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
        let marker = format!("\x1evoltrun:{:032x}\x1e", rand::random::<u128>());
        let (seg_tx, seg_rx) = mpsc::unbounded_channel();
        let live: LiveLog = Arc::new(Mutex::new(RunLog::default()));
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
        tokio::spawn(split_logs(logs, marker.clone().into_bytes(), seg_tx, live.clone()));
        Ok(Instance { handle, ctl_tx, ctl_rx, logs: seg_rx, live, code_dir, marker, version: 0, last_used: Instant::now() })
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
            Ok(Ok(msg)) if msg["type"] == "ready" => Ok(inst),
            Ok(Ok(msg)) if msg["type"] == "init_error" => {
                let error = serde_json::from_value(msg["error"].clone())
                    .unwrap_or_else(|_| ExecError::new(ErrorKind::RuntimeError, "the function failed to load"));
                let logs = inst.end_logs().await;
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
        self.live.lock().expect("run log lock").active = true;
        let frame = json!({"type": "invoke", "request_id": request_id, "event": event, "timeout_ms": timeout.as_millis() as u64});
        let reply = tokio::time::timeout_at(deadline.into(), async {
            write_frame(&mut self.ctl_tx, &frame).await?;
            read_frame(&mut self.ctl_rx).await
        })
        .await;
        let report = match reply {
            Ok(Ok(msg)) if msg["type"] == "result" => {
                let result = if msg["ok"] == true {
                    Ok(msg.get("output").cloned().unwrap_or(Value::Null))
                } else {
                    Err(serde_json::from_value(msg["error"].clone())
                        .unwrap_or_else(|_| ExecError::new(ErrorKind::RuntimeError, "the runtime reported a malformed error")))
                };
                let logs = self.end_logs().await;
                // Processes a handler left behind: seen by the host, or (gVisor) reported by
                // the bootstrap, which lists the sandbox's /proc after each run.
                let strays = if self.handle.sees_processes() { self.handle.has_stray_processes() } else { msg["strays"] == true };
                let reusable = !strays;
                RunReport { result, logs, reusable }
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

    /// The logs of the run that just returned its result (up to the marker).
    async fn end_logs(&mut self) -> Segment {
        match tokio::time::timeout(LOG_TAIL_WAIT, self.logs.recv()).await {
            Ok(Some(seg)) => seg,
            _ => Segment::default(),
        }
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

    /// Everything the log task still holds for the current run, until the pipe closes.
    async fn collect_until_eof(&mut self) -> Segment {
        let mut all = Segment::default();
        let until = Instant::now() + LOG_TAIL_WAIT;
        while let Ok(Some(seg)) = tokio::time::timeout_at(until.into(), self.logs.recv()).await {
            append_capped(&mut all.text, &seg.text, &mut all.truncated);
            all.truncated |= seg.truncated;
        }
        all
    }

    /// Kills every process of the instance and removes its files.
    pub async fn terminate(mut self) {
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

/// The log task: reads the pipe until EOF, cutting it into one [`Segment`] per run at each
/// marker, capping each at 256 KiB but always draining (a flooding function never blocks on
/// a full pipe), and copying the kept bytes to live subscribers.
async fn split_logs(mut rx: pipe::Receiver, marker: Vec<u8>, out: mpsc::UnboundedSender<Segment>, live: LiveLog) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let keep = marker.len() - 1;
    loop {
        let n = match rx.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        loop {
            if let Some(pos) = pending.windows(marker.len()).position(|w| w == marker.as_slice()) {
                let seg = {
                    let mut l = live.lock().expect("run log lock");
                    push(&mut l, &pending[..pos]);
                    l.tx = None;
                    l.active = false;
                    std::mem::take(&mut l.seg)
                };
                let _ = out.send(seg);
                pending.drain(..pos + marker.len());
                continue;
            }
            // Hold back only a tail that could be the start of a marker split across reads;
            // everything else goes out at once (live logs stream line by line).
            let hold = (1..=keep.min(pending.len())).rev().find(|&k| pending.ends_with(&marker[..k])).unwrap_or(0);
            let flush = pending.len() - hold;
            push(&mut live.lock().expect("run log lock"), &pending[..flush]);
            pending.drain(..flush);
            break;
        }
    }
    let seg = {
        let mut l = live.lock().expect("run log lock");
        push(&mut l, &pending);
        l.tx = None;
        l.active = false;
        std::mem::take(&mut l.seg)
    };
    let _ = out.send(seg);
}

fn push(log: &mut RunLog, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let kept = append_capped(&mut log.seg.text, data, &mut log.seg.truncated);
    if kept > 0 {
        if let Some(tx) = &log.tx {
            let _ = tx.send(String::from_utf8_lossy(&data[..kept]).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    /// Regression: the log task held back the marker's length (41 bytes) of every run's
    /// output until the run ended, so short lines never streamed live.
    #[tokio::test]
    async fn logs_stream_at_once_and_split_at_markers_across_reads() {
        let (r, w) = std::io::pipe().unwrap();
        let rx = pipe::Receiver::from_owned_fd(OwnedFd::from(r)).unwrap();
        let mut w = std::fs::File::from(OwnedFd::from(w));
        let marker = b"\x1evoltrun:0123456789abcdef0123456789abcdef\x1e".to_vec();
        let (tx, mut segs) = mpsc::unbounded_channel();
        let live: LiveLog = Arc::new(Mutex::new(RunLog { active: true, ..RunLog::default() }));
        let (_, mut sub) = subscribe(&live).unwrap();
        tokio::spawn(split_logs(rx, marker.clone(), tx, live.clone()));
        use std::io::Write;
        w.write_all(b"tick\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await.expect("a short line streams at once").unwrap();
        assert_eq!(got, "tick\n");
        // A marker split across two writes still ends the run exactly there.
        w.write_all(&[b"end\n".as_slice(), &marker[..10]].concat()).unwrap();
        w.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.write_all(&[&marker[10..], b"next run".as_slice()].concat()).unwrap();
        drop(w);
        let first = segs.recv().await.unwrap();
        assert_eq!(first.text, b"tick\nend\n");
        let second = segs.recv().await.unwrap();
        assert_eq!(second.text, b"next run");
    }
}
