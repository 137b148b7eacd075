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

//!
//! Submodules: [`frames`] (the control protocol's frames and markers) and [`logs`] (the log
//! task and the log of the run in progress).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use voltrun_core::{ErrorKind, ExecError};
use voltrun_sandbox::{InstanceHandle, Spawned};

use crate::metrics::GaugeUnit;
use crate::sys;
use frames::{internal, new_marker, protocol_error, read_frame, timeout_error, timeout_error_for, wipe_env, write_frame, write_frame_wiped};
use logs::split_logs;
pub use logs::{subscribe, LiveLog, RunLog, Segment};

mod frames;
mod logs;

/// How long to wait for a run's log tail once its result (or death) is known. Only a process
/// that keeps the log pipe open without writing the marker can make us wait this long.
const LOG_TAIL_WAIT: Duration = Duration::from_secs(2);

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
    /// The revision of the secrets it was given ([`voltrun_store::SecretEnv::revision`]);
    /// None when its function names none. A run compares it with the stored one first.
    pub secrets_revision: Option<String>,
    /// When it last finished a run.
    pub last_used: Instant,
    /// Its unit of the `instances` gauge, held for as long as the instance lives (see
    /// [`Instance::count_in`]).
    counted: Option<GaugeUnit>,
    /// The pin of the dependency tree the instance sees: the tree is not evicted while the
    /// instance lives.
    tree: Option<crate::TreeUse>,
    /// The instance's processes beyond the runtime's are the function's own between runs (a
    /// custom runtime's bootstrap and its children): the host does not count them as strays.
    own_processes: bool,
}

/// How to start the protocol on a fresh instance.
pub struct InitParams {
    /// Environment added before the code loads (a spare instance's function variables).
    pub env: Vec<(String, String)>,
    /// A code function's file; a package's task root.
    pub entry: PathBuf,
    /// A package's module (`pkg.mod` in Python, `src/app` in Node); `None` for code.
    pub module: Option<String>,
    /// The function to call (a package's after the module's dot).
    pub handler: String,
    pub function_name: String,
    pub function_version: i64,
    pub memory_mb: u32,
    /// The function's secrets, opened: added to the environment in the init frame only (never
    /// in the spawn's environment, which an OCI bundle writes to disk), and wiped after.
    pub secrets: Option<voltrun_store::SecretEnv>,
}

/// Why an instance could not be started, with what it printed.
pub struct StartFailure {
    pub error: ExecError,
    pub logs: Segment,
    /// The tier could not create the instance at all (the function never ran): another
    /// instance may be tried.
    pub never_started: bool,
}

impl Instance {
    /// Keeps `tree` pinned for as long as this instance lives.
    pub(crate) fn hold_tree(&mut self, tree: Option<crate::TreeUse>) {
        self.tree = tree;
    }

    /// Wraps a spawned process and starts its log task; the instance then waits (blocked in
    /// the bootstrap) for its init frame, which may come much later (spare instances).
    pub fn wrap(spawned: Spawned, code_dir: PathBuf) -> Result<Instance, StartFailure> {
        let marker = new_marker();
        let (sync_tx, sync_rx) = mpsc::channel(1);
        let live: LiveLog = Arc::new(Mutex::new(RunLog::for_init(&marker)));
        let mut handle = spawned.handle;
        let pipes = (|| -> std::io::Result<_> {
            Ok((pipe::Receiver::from_owned_fd(spawned.logs)?, pipe::Sender::from_owned_fd(spawned.control_in)?, pipe::Receiver::from_owned_fd(spawned.control_out)?))
        })();
        let (logs, ctl_tx, ctl_rx) = match pipes {
            Ok(p) => p,
            Err(e) => {
                handle.kill();
                return Err(StartFailure { error: internal(e), logs: Segment::default(), never_started: false });
            }
        };
        let log_task = tokio::spawn(split_logs(logs, sync_rx, live.clone()));
        Ok(Instance {
            handle,
            ctl_tx,
            ctl_rx,
            log_sync: sync_tx,
            log_task,
            live,
            code_dir,
            marker,
            version: 0,
            secrets_revision: None,
            last_used: Instant::now(),
            counted: None,
            tree: None,
            own_processes: false,
        })
    }

    /// Counts the instance in a gauge for the rest of its life: the unit goes with it on every
    /// path it ends by (terminated, dropped after a failed init, dropped with a cancelled
    /// future).
    pub(crate) fn count_in(&mut self, unit: GaugeUnit) {
        self.counted = Some(unit);
    }

    /// Marks a custom runtime's instance: its bootstrap (and what it starts) lives between
    /// runs, so only the Runtime API helper's `strays` report retires it.
    pub(crate) fn processes_are_the_functions(&mut self) {
        self.own_processes = true;
    }

    /// True once its log stream was seen forged (a marker out of place, output between
    /// runs): the instance must not run anything again.
    pub fn tainted(&self) -> bool {
        self.live.lock().expect("run log lock").tainted().is_some()
    }

    /// Gives a spare started with a network (and an empty plan) its function's (issue 14).
    /// A spare given a function: its CPU weight becomes the function's (spares.rs).
    pub(crate) fn give_cpu_weight(&mut self) {
        self.handle.give_cpu_weight()
    }

    pub fn set_network(&mut self, plan: std::sync::Arc<voltrun_sandbox::network::NetworkPlan>) -> Result<(), voltrun_sandbox::SandboxError> {
        self.handle.set_network(plan)
    }

    /// True once the instance's main process has ended (a spare the container runtime
    /// failed to create, or one that died while it waited), without blocking.
    pub(crate) fn exited(&mut self) -> bool {
        self.handle.try_exited()
    }

    /// The host directory the instance sees as its code directory.
    pub fn code_dir(&self) -> &std::path::Path {
        &self.code_dir
    }

    /// Waits for a spare's `started` frame (spares.rs): false when anything else comes, the
    /// stream ends, or nothing comes within `within`.
    pub(crate) async fn started(&mut self, within: Duration) -> bool {
        matches!(tokio::time::timeout(within, read_frame(&mut self.ctl_rx)).await, Ok(Ok(msg)) if msg["type"] == "started")
    }

    /// The init handshake: the bootstrap loads the function's code.
    pub async fn init(mut self, init: InitParams, deadline: Instant) -> Result<Instance, StartFailure> {
        self.version = init.function_version;
        let mut env: serde_json::Map<String, Value> = init.env.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        if let Some(secrets) = &init.secrets {
            self.secrets_revision = Some(secrets.revision.clone());
            env.extend(secrets.vars.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))));
        }
        let mut frame = json!({
            "type": "init",
            "entry": init.entry,
            "module": init.module,
            "handler": init.handler,
            "function_name": init.function_name,
            "function_version": init.function_version,
            "memory_limit_in_mb": init.memory_mb,
            "marker": self.marker,
            "report_strays": !self.handle.sees_processes(),
        });
        // Moved in, not copied (json! would serialise a copy and drop the map unwiped): the
        // one copy of the values is the frame's, which wipe_env clears.
        frame["env"] = Value::Object(env);
        let mut inst = self;
        let has_secrets = init.secrets.is_some();
        drop(init.secrets);
        let reply = tokio::time::timeout_at(deadline.into(), async {
            let written = if has_secrets { write_frame_wiped(&mut inst.ctl_tx, &frame).await } else { write_frame(&mut inst.ctl_tx, &frame).await };
            wipe_env(&mut frame);
            written?;
            read_frame(&mut inst.ctl_rx).await
        })
        .await;
        match reply {
            Ok(Ok(msg)) if msg["type"] == "ready" => {
                inst.live.lock().expect("run log lock").init_done();
                Ok(inst)
            }
            Ok(Ok(msg)) if msg["type"] == "init_error" => {
                let error = reported_error(&msg["error"]);
                let (logs, _) = inst.settle_logs().await;
                inst.terminate().await;
                Err(StartFailure { error, logs, never_started: false })
            }
            Ok(Ok(msg)) => {
                inst.terminate().await;
                Err(StartFailure { error: protocol_error(&msg), logs: Segment::default(), never_started: false })
            }
            Ok(Err(_)) => {
                let (error, logs, exit) = inst.died().await;
                Err(StartFailure { error, logs, never_started: exit.never_started })
            }
            Err(_) => {
                let logs = inst.kill_and_collect().await;
                Err(StartFailure { error: timeout_error(), logs, never_started: false })
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
        self.live.lock().expect("run log lock").begin(&marker);
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
                // (The kill count is the instance's whole life's: an instance that saw one is
                // not reused, so a later run is never blamed for it.)
                let oom = msg["ok"] != true && self.handle.out_of_memory();
                let result = if msg["ok"] == true {
                    Ok(msg.get("output").cloned().unwrap_or(Value::Null))
                } else if oom {
                    // The runtime survived a kill of the function's process by the memory
                    // limit (a `provided` helper reports the bootstrap's signal): the run is an
                    // OutOfMemory, as when the runtime itself dies of it.
                    Err(ExecError::new(ErrorKind::OutOfMemory, "the function ran out of memory"))
                } else {
                    Err(reported_error(&msg["error"]))
                };
                let (mut logs, tainted) = self.settle_logs().await;
                // Connections the egress policy refused during the run: one line each.
                for line in self.handle.take_network_log() {
                    logs.text.extend_from_slice(line.as_bytes());
                }
                // Threads, timers or processes the handler left behind, which could print
                // into the next run: reported by the bootstrap, or seen by the host.
                let strays = msg["strays"] == true || (!self.own_processes && self.handle.sees_processes() && self.handle.has_stray_processes());
                // Another frame already waiting means one of the two was not the bootstrap's.
                let extra = (sys::pending_bytes(&self.ctl_rx) != 0).then_some("more than one result frame");
                if let Some(reason) = tainted.or(extra) {
                    tracing::warn!(reason, "retiring an instance whose log or control stream was forged");
                }
                RunReport { result, logs, reusable: !strays && !oom && tainted.is_none() && extra.is_none() }
            }
            Ok(Ok(msg)) => RunReport { result: Err(protocol_error(&msg)), logs: self.kill_and_collect().await, reusable: false },
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                // The process is alive but its answer is unusable (too large, too deep).
                let error = ExecError::new(ErrorKind::RuntimeError, format!("the function's result could not be used: {e}"));
                RunReport { result: Err(error), logs: self.kill_and_collect().await, reusable: false }
            }
            Ok(Err(_)) => {
                let (error, logs, _) = self.died().await;
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
        self.live.lock().expect("run log lock").settled()
    }

    /// Kills the instance and returns whatever the current run had written.
    async fn kill_and_collect(&mut self) -> Segment {
        self.handle.kill();
        self.collect_until_eof().await
    }

    /// The process ended without a result: reap it, gather its output and say why.
    async fn died(&mut self) -> (ExecError, Segment, voltrun_sandbox::ExitInfo) {
        self.handle.kill();
        let logs = self.collect_until_eof().await;
        let oom_by_tier = self.handle.out_of_memory();
        let exit = self.handle.wait();
        let tail = String::from_utf8_lossy(&logs.text[logs.text.len().saturating_sub(4096)..]).into_owned();
        let error = if oom_by_tier || tail.contains("JavaScript heap out of memory") || tail.contains("MemoryError") {
            ExecError::new(ErrorKind::OutOfMemory, "the function ran out of memory")
        } else if exit.never_started {
            ExecError::new(ErrorKind::Internal, "could not start an instance: the container runtime failed to create it")
        } else {
            ExecError::new(ErrorKind::RuntimeError, format!("the runtime process {exit} before returning a result"))
        };
        (error, logs, exit)
    }

    /// The current run's log once the pipe has closed (or after [`LOG_TAIL_WAIT`]).
    async fn collect_until_eof(&mut self) -> Segment {
        let _ = tokio::time::timeout(LOG_TAIL_WAIT, &mut self.log_task).await;
        self.live.lock().expect("run log lock").collected()
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

/// Longest error message or stack taken from a runtime's frame.
const MAX_REPORTED_ERROR: usize = 64 * 1024;

/// An error as a runtime reported it, which the function's code could have written itself (it
/// shares the runtime's process, or in `provided`, its uid): only the kinds a runtime may
/// report (HandlerError, RuntimeError, and OutOfMemory for Python's MemoryError) are taken,
/// anything else is a RuntimeError (a forged `Interrupted`, `Timeout` or `Internal` would be
/// blamed on the server or retried as its fault), and message and stack are cut to 64 KiB.
fn reported_error(v: &Value) -> ExecError {
    let mut e: ExecError = serde_json::from_value(v.clone()).unwrap_or_else(|_| ExecError::new(ErrorKind::RuntimeError, "the runtime reported a malformed error"));
    if !matches!(e.kind, ErrorKind::HandlerError | ErrorKind::RuntimeError | ErrorKind::OutOfMemory) {
        e.kind = ErrorKind::RuntimeError;
    }
    for text in std::iter::once(&mut e.message).chain(e.stack.as_mut()) {
        if text.len() > MAX_REPORTED_ERROR {
            let mut cut = MAX_REPORTED_ERROR;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
    }
    e
}

#[cfg(test)]
mod reported_error_tests {
    use super::*;

    /// Review: a `provided` bootstrap (or a function in a built-in runtime's process) could
    /// report `Interrupted`, `Timeout` or `Internal` (retried, or blamed on the server) and
    /// megabytes of message; only a runtime's own kinds pass, cut to 64 KiB.
    #[test]
    fn a_forged_error_kind_becomes_a_runtime_error_and_long_texts_are_cut() {
        for forged in ["Interrupted", "Timeout", "Internal"] {
            let e = reported_error(&json!({"type": forged, "message": "m", "stack": "s"}));
            assert_eq!(e.kind, ErrorKind::RuntimeError, "{forged}");
        }
        for kept in [ErrorKind::HandlerError, ErrorKind::RuntimeError, ErrorKind::OutOfMemory] {
            let e = reported_error(&serde_json::to_value(ExecError::new(kept, "m")).unwrap());
            assert_eq!(e.kind, kept);
        }
        let long = "é".repeat(MAX_REPORTED_ERROR);
        let e = reported_error(&json!({"type": "HandlerError", "message": long, "stack": long}));
        assert!(e.message.len() <= MAX_REPORTED_ERROR && e.stack.as_ref().unwrap().len() <= MAX_REPORTED_ERROR);
        assert!(e.message.chars().all(|c| c == 'é'));
        assert_eq!(reported_error(&json!("not an error")).kind, ErrorKind::RuntimeError);
    }
}
