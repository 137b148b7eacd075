//! Group commit for execution records, the hot write of every invocation.
//!
//! Each caller hands its write to one writer and waits for it to be committed; the writer
//! takes every write queued at that moment and commits them in one transaction. Under load
//! one commit (one fsync at most) serves many invocations; at rest a write is committed
//! alone at once, so nobody waits for a batch to fill. Callers still return only after their
//! write is durable.
//!
//! On SQLite the writer is an OS thread with its own connection (rusqlite, prepared
//! statements kept): sqlx runs each SQLite connection on a thread of its own and hands every
//! statement to it and back, and those hand-offs, not SQLite, were most of the cost of a
//! write (docs/BENCHMARKS.md). Reads stay on the sqlx pool. On PostgreSQL the writer is a
//! task on the pool, holding one connection between batches.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::executions::{ExecutionWrite, Param};
use crate::{Result, Store, StoreError};

/// Writes committed together at most.
const MAX_BATCH: usize = 256;

type Job = (ExecutionWrite, oneshot::Sender<Result<bool>>);

/// Handle to the writer (thread or task).
#[derive(Clone, Debug)]
pub(crate) struct Writer(mpsc::UnboundedSender<Job>);

impl std::fmt::Debug for ExecutionWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExecutionWrite::Insert(_) => "Insert",
            ExecutionWrite::Save(_) => "Save",
            ExecutionWrite::Purge(..) => "Purge",
        })
    }
}

impl Writer {
    /// Starts the writer task on `pool` (PostgreSQL).
    pub(crate) fn start_on_pool(pool: AnyPool) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_on_pool(pool, rx));
        Writer(tx)
    }

    /// Starts the writer thread on its own connection to the SQLite file at `path` (already
    /// migrated).
    pub(crate) fn start_sqlite(path: &std::path::Path) -> Result<Writer> {
        let conn = open_sqlite(path)?;
        // Checkpoints (copying the WAL back into the database file, with an fsync) are the
        // checkpointer thread's: run inline by the writer, one commit in ~100 paid for them.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0")?;
        let checkpointer = open_sqlite(path)?;
        // A RESTART holds writers off while it waits for readers: never for long (a reader
        // that keeps a snapshot open, a backup, only postpones the restart to a later wake).
        checkpointer.busy_timeout(std::time::Duration::from_millis(RESTART_WAIT_MS))?;
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| StoreError::Corrupt(format!("starting the {name} thread: {e}")))
        };
        spawn("voltrun-sqlite-checkpointer", Box::new(move || run_checkpointer(checkpointer, woken)))?;
        spawn("voltrun-sqlite-writer", Box::new(move || run_sqlite(conn, rx, wake)))?;
        Ok(Writer(tx))
    }
}

/// Takes the jobs queued behind `first`, up to [`MAX_BATCH`], without waiting.
fn fill_batch(rx: &mut mpsc::UnboundedReceiver<Job>, first: Job) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch
}

// ---------------------------------------------------------------------------------------
// SQLite: a thread and its connection.

fn open_sqlite(path: &std::path::Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    // The same settings as the pool's connections, which share the file.
    for pragma in crate::SQLITE_PRAGMAS {
        conn.execute_batch(pragma)?;
    }
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

/// Commits between two wake-ups of the checkpointer.
const COMMITS_PER_CHECKPOINT: u32 = 64;
/// WAL frames (pages) past which the checkpointer makes the writer wait for the WAL to
/// restart. Under sustained writes a checkpoint that runs beside the writer never finds the
/// WAL fully copied (frames keep arriving), so the file would otherwise grow without bound.
const RESTART_FRAMES: i64 = 8192;
/// How long a RESTART checkpoint may wait for readers (and so hold the writer off).
const RESTART_WAIT_MS: u64 = 100;

fn run_sqlite(conn: rusqlite::Connection, mut rx: mpsc::UnboundedReceiver<Job>, checkpoint: std::sync::mpsc::SyncSender<()>) {
    let mut commits = 0u32;
    while let Some(first) = rx.blocking_recv() {
        commits += 1;
        if commits == COMMITS_PER_CHECKPOINT {
            commits = 0;
            // Full means a wake-up is already pending: nothing to add.
            let _ = checkpoint.try_send(());
        }
        let batch = fill_batch(&mut rx, first);
        // A panic while writing one batch fails that batch's callers (their reply channels
        // drop), never the writer: every later write still gets committed.
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| write_batch_sqlite(&conn, batch)));
        if done.is_err() {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            tracing::error!("the execution writer panicked on a batch; continuing");
        }
    }
}

/// Copies the WAL into the database beside the writer (PASSIVE: it waits for nobody) when
/// woken, and at least once a second; past [`RESTART_FRAMES`] it waits for the writer and
/// readers (RESTART) so the next commit starts the WAL file over.
fn run_checkpointer(conn: rusqlite::Connection, woken: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    // (busy, frames in the WAL): busy is 1 when a RESTART gave up waiting.
    let checkpoint = |mode: &str| conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)));
    loop {
        if let Err(RecvTimeoutError::Disconnected) = woken.recv_timeout(std::time::Duration::from_secs(1)) {
            // The writer is gone (the store was dropped): leave the WAL copied back.
            let _ = checkpoint("TRUNCATE");
            return;
        }
        match checkpoint("PASSIVE") {
            Ok((_, frames)) if frames >= RESTART_FRAMES => match checkpoint("RESTART") {
                Ok((0, _)) => {}
                Ok(_) => tracing::debug!(frames, "WAL restart postponed: a reader holds an older snapshot"),
                Err(err) => tracing::warn!(%err, frames, "WAL checkpoint (restart) failed"),
            },
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "WAL checkpoint failed"),
        }
    }
}

fn write_batch_sqlite(conn: &rusqlite::Connection, batch: Vec<Job>) {
    if batch.len() == 1 {
        for (w, done) in batch {
            let _ = done.send(run_sqlite_write(conn, &w));
        }
        return;
    }
    // Nothing is written when the batch cannot start (the file stayed locked past the busy
    // timeout): every caller gets that error, none waits a second timeout of its own.
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::warn!(%err, n = batch.len(), "could not start a group commit");
        for (_, done) in batch {
            let _ = done.send(Err(copy_error(&err)));
        }
        return;
    }
    // A statement that fails on a constraint undoes only itself, so its caller gets the error
    // and the others are still committed. One that makes SQLite roll the whole transaction
    // back (disk full, I/O error) leaves nothing of the batch stored; so does a failed
    // COMMIT. Then, and only then, every write is tried again alone.
    let together = (|| -> Result<Vec<Result<bool>>> {
        let mut results = Vec::with_capacity(batch.len());
        for (w, _) in &batch {
            let r = run_sqlite_write(conn, w);
            if conn.is_autocommit() {
                return Err(r.err().unwrap_or_else(|| StoreError::Corrupt("the group commit's transaction ended early".into())));
            }
            results.push(r);
        }
        conn.execute_batch("COMMIT")?;
        Ok(results)
    })();
    match together {
        Ok(results) => {
            for ((_, done), r) in batch.into_iter().zip(results) {
                let _ = done.send(r);
            }
        }
        Err(err) => {
            tracing::warn!(%err, n = batch.len(), "group commit failed; writing one by one");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            for (w, done) in batch {
                let _ = done.send(run_sqlite_write(conn, &w));
            }
        }
    }
}

/// The same failure for each caller of a batch (rusqlite's errors are not `Clone`).
fn copy_error(err: &rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(e, msg) => StoreError::Sqlite(rusqlite::Error::SqliteFailure(*e, msg.clone())),
        other => StoreError::Corrupt(format!("SQLite writer: {other}")),
    }
}

fn run_sqlite_write(conn: &rusqlite::Connection, w: &ExecutionWrite) -> Result<bool> {
    let (sql, params) = w.statement();
    let mut stmt = conn.prepare_cached(sql)?;
    // SQLite numbers `$N` parameters by their first appearance in the text; every write's
    // statement names them in order (`$1` first), so `$N` is index N: bound by position.
    if stmt.parameter_count() != params.len() {
        return Err(StoreError::Corrupt(format!("a write binds {} parameters to a statement of {}", params.len(), stmt.parameter_count())));
    }
    for (i, p) in params.into_iter().enumerate() {
        let idx = i + 1;
        debug_assert_eq!(stmt.parameter_name(idx), Some(format!("${idx}").as_str()), "placeholders out of order in {sql}");
        match p {
            Param::Text(v) => stmt.raw_bind_parameter(idx, v)?,
            Param::Int(v) => stmt.raw_bind_parameter(idx, v)?,
            Param::Real(v) => stmt.raw_bind_parameter(idx, v)?,
        }
    }
    Ok(stmt.raw_execute()? > 0)
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: a task on the pool.

/// A held connection idle longer than this is pinged before its next write (the pool does
/// that before every use; a server restart or an idle timeout may have closed it).
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The writer's own connection and when it was last used.
type Held = Option<(PoolConnection<Any>, std::time::Instant)>;

async fn run_on_pool(pool: AnyPool, mut rx: mpsc::UnboundedReceiver<Job>) {
    // The writer keeps one connection between batches: taking it from the pool for every
    // commit costs a ping (a network round trip) per write.
    let mut held: Held = None;
    while let Some(first) = rx.recv().await {
        let batch = fill_batch(&mut rx, first);
        let done = AssertUnwindSafe(write_batch_on_pool(&pool, &mut held, batch)).catch_unwind().await;
        if done.is_err() {
            held = None;
            tracing::error!("the execution writer panicked on a batch; continuing");
        }
    }
}

/// The held connection if it is (still) good, else a new one from the pool.
async fn connection(pool: &AnyPool, held: &mut Held) -> std::result::Result<PoolConnection<Any>, sqlx::Error> {
    if let Some((mut conn, last)) = held.take() {
        if last.elapsed() < PING_AFTER_IDLE || conn.ping().await.is_ok() {
            return Ok(conn);
        }
    }
    pool.acquire().await
}

async fn write_batch_on_pool(pool: &AnyPool, held: &mut Held, mut batch: Vec<Job>) {
    let mut conn = match connection(pool, held).await {
        Ok(c) => c,
        Err(err) => {
            // Nothing was written: each caller gets the error; the next batch tries again.
            let msg = err.to_string();
            for (_, done) in batch {
                let _ = done.send(Err(sqlx::Error::Protocol(format!("no database connection for the write: {msg}")).into()));
            }
            return;
        }
    };
    if batch.len() == 1 {
        let (w, done) = batch.pop().expect("one job");
        let r = w.run(&mut *conn).await;
        // After any failure the connection goes back to the pool's care: it may be what
        // broke (a refused statement is rare enough not to matter).
        if r.is_ok() {
            *held = Some((conn, std::time::Instant::now()));
        }
        let _ = done.send(r.map_err(Into::into));
        return;
    }
    match commit_together(&mut conn, &batch).await {
        Ok(results) => {
            *held = Some((conn, std::time::Instant::now()));
            for ((_, done), r) in batch.into_iter().zip(results) {
                let _ = done.send(Ok(r));
            }
        }
        // A statement failed: the transaction did not commit, so each write is tried again
        // alone (one bad write must not fail the others), on pool connections.
        Err(Failed::Statement(err)) => {
            tracing::warn!(%err, n = batch.len(), "group commit failed; writing one by one");
            drop(conn);
            for (w, done) in batch {
                let _ = done.send(w.run(pool).await.map_err(Into::into));
            }
        }
        // The COMMIT failed: whether it happened is unknown (the reply may be what was
        // lost), so every caller gets the error rather than a guess, and nothing is written
        // twice.
        Err(Failed::Commit(err)) => {
            tracing::error!(%err, n = batch.len(), "the group commit's COMMIT failed; its outcome is unknown");
            let msg = err.to_string();
            for (_, done) in batch {
                let _ = done.send(Err(sqlx::Error::Protocol(format!("the commit of this write failed: {msg}")).into()));
            }
        }
    }
}

/// Where a group commit on the pool failed.
enum Failed {
    /// Before COMMIT: nothing of the batch is stored.
    Statement(sqlx::Error),
    /// At COMMIT: it may or may not have been stored.
    Commit(sqlx::Error),
}

async fn commit_together(conn: &mut PoolConnection<Any>, batch: &[Job]) -> std::result::Result<Vec<bool>, Failed> {
    let mut tx = conn.begin().await.map_err(Failed::Statement)?;
    let mut results = Vec::with_capacity(batch.len());
    for (w, _) in batch {
        results.push(w.run(&mut *tx).await.map_err(Failed::Statement)?);
    }
    tx.commit().await.map_err(Failed::Commit)?;
    Ok(results)
}

/// A write handed to the writer and not yet awaited: [`PendingWrite::committed`] waits for it.
pub struct PendingWrite(std::result::Result<oneshot::Receiver<Result<bool>>, ()>);

impl PendingWrite {
    /// Waits until the write is committed; true when a row was inserted or updated.
    pub async fn committed(self) -> Result<bool> {
        let stopped = || StoreError::Corrupt("the writer stopped".into());
        let rx = self.0.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Store {
    /// Hands a write to the writer; it is committed in order with the writes before it.
    pub(crate) fn begin_write(&self, w: ExecutionWrite) -> PendingWrite {
        let (done, wait) = oneshot::channel();
        PendingWrite(self.writer.0.send((w, done)).map(|_| wait).map_err(|_| ()))
    }

    /// Hands a write to the writer and waits until it is committed.
    pub(crate) async fn write(&self, w: ExecutionWrite) -> Result<bool> {
        self.begin_write(w).committed().await
    }
}
