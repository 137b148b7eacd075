//! Group commit for execution records, the hot write of every invocation.
//!
//! Each caller hands its write to one writer task and waits for it to be committed; the task
//! takes every write queued at that moment and commits them in one transaction. Under load
//! one commit (one fsync at most) serves many invocations; at rest a write is committed
//! alone at once, so nobody waits for a batch to fill. Callers still return only after their
//! write is durable.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::executions::Write;
use crate::{Result, Store, StoreError};

/// Writes committed together at most.
const MAX_BATCH: usize = 256;

type Job = (Write, oneshot::Sender<std::result::Result<bool, sqlx::Error>>);

/// Handle to the writer task.
#[derive(Clone, Debug)]
pub(crate) struct Writer(mpsc::UnboundedSender<Job>);

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Write::Insert(_) => "Insert",
            Write::Save(_) => "Save",
        })
    }
}

impl Writer {
    /// Starts the writer task on `pool`.
    pub(crate) fn start(pool: AnyPool) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Writer(tx)
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        // A panic while writing one batch fails that batch's callers (their reply channels
        // drop), never the writer: every later write still gets committed.
        let batch = AssertUnwindSafe(write_batch(&pool, &mut rx, first)).catch_unwind().await;
        if batch.is_err() {
            tracing::error!("the execution writer panicked on a batch; continuing");
        }
    }
}

async fn write_batch(pool: &AnyPool, rx: &mut mpsc::UnboundedReceiver<Job>, first: Job) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    if batch.len() == 1 {
        let (w, done) = batch.pop().expect("one job");
        let _ = done.send(w.run(pool).await);
        return;
    }
    match commit_together(pool, &batch).await {
        Ok(results) => {
            for ((_, done), r) in batch.into_iter().zip(results) {
                let _ = done.send(Ok(r));
            }
        }
        // One bad write must not fail the others: fall back to one commit each.
        Err(err) => {
            tracing::warn!(%err, n = batch.len(), "group commit failed; writing one by one");
            for (w, done) in batch {
                let _ = done.send(w.run(pool).await);
            }
        }
    }
}

async fn commit_together(pool: &AnyPool, batch: &[Job]) -> std::result::Result<Vec<bool>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for (w, _) in batch {
        results.push(w.run(&mut *tx).await?);
    }
    tx.commit().await?;
    Ok(results)
}

/// A write handed to the writer and not yet awaited: [`PendingWrite::committed`] waits for it.
pub struct PendingWrite(std::result::Result<oneshot::Receiver<std::result::Result<bool, sqlx::Error>>, ()>);

impl PendingWrite {
    /// Waits until the write is committed; true when a row was inserted or updated.
    pub async fn committed(self) -> Result<bool> {
        let stopped = || StoreError::Corrupt("the writer task stopped".into());
        let rx = self.0.map_err(|_| stopped())?;
        Ok(rx.await.map_err(|_| stopped())??)
    }
}

impl Store {
    /// Hands a write to the writer task; it is committed in order with the writes before it.
    pub(crate) fn begin_write(&self, w: Write) -> PendingWrite {
        let (done, wait) = oneshot::channel();
        PendingWrite(self.writer.0.send((w, done)).map(|_| wait).map_err(|_| ()))
    }

    /// Hands a write to the writer task and waits until it is committed.
    pub(crate) async fn write(&self, w: Write) -> Result<bool> {
        self.begin_write(w).committed().await
    }
}
