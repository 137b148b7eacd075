//! An instance's log pipe split into runs: the log task (see the module doc of
//! [`crate::instance`]), the log of the run in progress ([`RunLog`]) and its live subscribers.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot};
use voltrun_core::MAX_LOG_BYTES;

use super::frames::{MARKER_LEN, MARKER_PREFIX};
use crate::sys;

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
    /// True while the engine waits on a run (or the init): from [`RunLog::begin`] until it
    /// takes the run's log. Unlike `active`, a marker written early (a forgery) does not
    /// end it: the run is still going.
    in_flight: bool,
}

impl RunLog {
    /// Marks the instance unusable; the first reason is kept.
    fn taint(&mut self, why: &'static str) {
        self.tainted.get_or_insert(why);
    }

    /// The run's log is complete: it moves to the slot and live subscribers are closed.
    pub(super) fn finish(&mut self) {
        self.tx = None;
        self.active = false;
        self.keep = false;
        self.expect = None;
        self.done = Some(std::mem::take(&mut self.seg));
    }

    /// The log of a fresh instance: output is kept (module-level output belongs to the first
    /// run) until the init marker.
    pub(super) fn for_init(marker: &str) -> RunLog {
        RunLog { keep: true, expect: Some(marker.as_bytes().to_vec()), in_flight: true, ..RunLog::default() }
    }

    /// The init marker is spent: from now on only a run's own marker may appear.
    pub(super) fn init_done(&mut self) {
        self.expect = None;
        self.in_flight = false;
    }

    /// A run begins: its output is kept until `marker`.
    pub(super) fn begin(&mut self, marker: &str) {
        self.in_flight = true;
        self.active = true;
        self.keep = true;
        self.done = None;
        self.expect = Some(marker.as_bytes().to_vec());
    }

    /// Why the instance must not be reused, if its streams were seen forged.
    pub(super) fn tainted(&self) -> Option<&'static str> {
        self.tainted
    }

    /// True when the instance is tainted while the engine waits on nothing (output between
    /// runs): it will never run again, so its log pipe need not be read any more. During a
    /// run the pipe is read to the end (the run's frame comes after its output).
    fn flooded_between_runs(&self) -> bool {
        self.tainted.is_some() && !self.in_flight
    }

    /// The log of the run whose frame just came, once the pipe was drained; a missing marker
    /// (the function kept the bootstrap from writing it) taints the instance.
    pub(super) fn settled(&mut self) -> (Segment, Option<&'static str>) {
        if self.done.is_none() {
            self.taint("no end-of-run marker");
            self.finish();
        }
        self.in_flight = false;
        (self.done.take().unwrap_or_default(), self.tainted)
    }

    /// The current run's log as it stands (the pipe closed or the wait ended).
    pub(super) fn collected(&mut self) -> Segment {
        if self.done.is_none() {
            self.finish();
        }
        self.in_flight = false;
        self.done.take().unwrap_or_default()
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
pub(super) async fn split_logs(mut rx: pipe::Receiver, mut sync: mpsc::Receiver<oneshot::Sender<()>>, live: LiveLog) {
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
                Ok(n) => {
                    split(&mut pending, &chunk[..n], &live);
                    // Output between runs taints the instance for good: stop reading, so a
                    // function that floods its pipe while idle blocks (or gets EPIPE) instead
                    // of keeping this task busy until the instance is reaped.
                    if live.lock().expect("run log lock").flooded_between_runs() {
                        pending.clear();
                        break;
                    }
                }
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

#[cfg(test)]
mod tests;
