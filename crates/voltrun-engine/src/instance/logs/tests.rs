//! The log task against a real pipe.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::*;
use crate::instance::frames::new_marker;

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
    live.lock().unwrap().begin(marker);
}

/// Takes in all the pipe holds, as the engine does once it has the result frame.
async fn settle(sync: &mpsc::Sender<oneshot::Sender<()>>, live: &LiveLog) -> (Option<Segment>, Option<&'static str>) {
    let (ack, done) = oneshot::channel();
    // A log task that stopped (a pipe tainted between runs) holds nothing more to drain.
    if sync.send(ack).await.is_ok() {
        let _ = done.await;
    }
    let mut l = live.lock().unwrap();
    // The engine has taken the run's log (as RunLog::settled does).
    l.in_flight = false;
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
        // The log task stops reading once the instance is tainted between runs: the
        // writer then gets EPIPE, as a flooding function would.
        for _ in 0..200 {
            if w.write_all(&fake).is_err() {
                break;
            }
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
    // The instance is never reused: once the engine took the run's log, the log task stops
    // reading its tainted pipe at the next output, so whatever the function writes then fails
    // (EPIPE) instead of keeping the server's log task busy (review: a flood between runs
    // burnt server CPU).
    let _ = w.write_all(&[b"tail of run 1".as_slice(), m1.as_bytes()].concat());
    tokio::time::timeout(Duration::from_secs(5), _task).await.expect("the log task stops reading a pipe tainted between runs").unwrap();
    assert!(w.write_all(b"more").is_err(), "the pipe is no longer read");
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
        // (EPIPE once the log task stopped reading a tainted instance's pipe.)
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return w;
            }
        }
        let _ = w.write_all(end.as_bytes());
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
