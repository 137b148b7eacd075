//! VoltRun's durable state: users, refresh tokens, API keys, functions and executions.
//!
//! One [`Store`] over a sqlx `AnyPool`, so the same queries serve the embedded SQLite file and,
//! later, PostgreSQL: every query uses `$N` placeholders (both engines accept them), every
//! column is TEXT, BIGINT or DOUBLE PRECISION, and booleans are stored as 0/1. Migrations are
//! numbered per dialect and run at start.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod aws_keys;
mod blobs;
pub(crate) mod builds;
mod executions;
pub(crate) mod functions;
mod layers;
mod retention;
#[cfg(test)]
mod review_tests;
mod secrets;
mod users;
pub mod vault;
pub mod versions;
mod writer;

pub use aws_keys::AwsKeyOwner;
pub use blobs::BLOB_CHUNK_BYTES;
pub use builds::{cap_logs, BuildPhase, BuildRecord};
pub use executions::{ClaimSkip, ExecutionFilter, HourBucket, NewRun, Stats};
pub use functions::{ScheduledFunction, SchedulesFingerprint};
pub use layers::{DeleteLayer, NewLayer};
pub use retention::RetentionCursor;
pub use secrets::{Rotation, SecretDelete, SecretEnv, SecretMeta};
pub use users::{ApiKey, KeyOwner, User};
pub use vault::{KeyError, Keyring, MasterKey, SealError};
pub use versions::{AliasRefused, DeleteAlias, DeleteVersion, Unresolved, DEFAULT_VERSION_RETENTION};
pub use writer::PendingWrite;

/// Why a store operation failed.
///
/// Callers decide by variant: [`StoreError::is_unavailable`] (the database or the writer
/// could not be used: answer 503 and let the client retry), a refused request (`Conflict`,
/// `RouteOverlap`, `Quota`, `Constraint`: the caller's 409), or our bug (the rest: 500).
/// Every variant is `Clone` (sources are shared), so one failure of a group commit reaches
/// each of its callers as itself.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated; the string names the field.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The route lies under or over another user's route (functions.rs: route squatting).
    #[error("route: lies under or over another account's route; routes nest only within one account")]
    RouteOverlap,
    /// A per-user quota (voltrun_core::Quotas) would be exceeded; says which and by how much.
    #[error("{0}")]
    Quota(String),
    /// The database refused a statement on a constraint not named by [`StoreError::Conflict`]
    /// (a unique key no caller maps, a foreign key, a check, a NOT NULL): a race with a
    /// concurrent change or delete.
    #[error("constraint violated: {0}")]
    Constraint(#[source] Shared),
    /// The database could not be used: no connection could be made, one broke, none came
    /// free in time, or the SQLite file stayed locked. Nothing is wrong with the request;
    /// it may succeed when retried (a 503). A write that failed at its COMMIT this way may or
    /// may not have been stored.
    #[error("the database is unavailable ({reason}): {source}")]
    Unavailable {
        /// What failed.
        reason: Outage,
        /// The database library's error.
        #[source]
        source: Shared,
    },
    /// The execution writer (writer.rs) is gone, so no execution can be stored by this
    /// process (a 503: another node can take the request).
    #[error("the execution writer stopped")]
    WriterStopped,
    /// The writer's thread could not be started (at open).
    #[error("starting the {name} thread")]
    Spawn {
        /// The thread's name.
        name: &'static str,
        /// The OS's error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// A stored value could not be decoded (a corrupted row, or a bug).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Something the store relies on did not hold (a bug): a write's parameters do not match
    /// its statement, a transaction ended behind the writer's back, an insert conflicted with
    /// no row.
    #[error("store invariant broken: {0}")]
    Invariant(String),
    /// The database failed a statement for another reason (a bug, most likely).
    #[error(transparent)]
    Db(std::sync::Arc<sqlx::Error>),
    /// The SQLite writer's connection failed for another reason (docs/ARCHITECTURE.md: the
    /// writer thread).
    #[error(transparent)]
    Sqlite(std::sync::Arc<rusqlite::Error>),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(std::sync::Arc<sqlx::migrate::MigrateError>),
    /// A secret was to be sealed or opened, but the store was opened without a master key
    /// ([`Store::unlock`]): a bug of the caller.
    #[error("this server has no master key, so it cannot seal or open secrets")]
    NoMasterKey,
    /// The master key given is not the one the database's sealed values were sealed with
    /// (the key check value, vault.rs, does not open under it).
    #[error("the master key given (id {ours}) is not the key this database was set up with (id {sealed_with}); give every node the same --master-key / VOLTRUN_MASTER_KEY")]
    WrongMasterKey {
        /// The id of the key given.
        ours: String,
        /// The id of the key the check value was sealed with.
        sealed_with: String,
    },
    /// The master key given was rotated away from: values sealed under it again would be
    /// lost to every node that has the new key.
    #[error("the master key given (id {ours}) was retired by a rotation; give every node the current --master-key (and, during a rotation, the retired one only as --previous-master-key)")]
    RetiredMasterKey {
        /// The id of the key given.
        ours: String,
    },
    /// A sealed value in the database did not open: altered, moved, or of an unknown format.
    /// Names what it was, never the plaintext.
    #[error("sealed {what} did not open: {source}")]
    Unsealable {
        /// The secret or server value.
        what: String,
        /// Why.
        #[source]
        source: SealError,
    },
    /// A rotation was asked of a store given no previous key, or left values sealed under the
    /// previous key (written meanwhile by a node without the new key).
    #[error("{0}")]
    Rotation(String),
    /// The URL names a database VoltRun does not support.
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://…")]
    Unsupported(String),
}

/// The source of a [`StoreError`], shared by every caller the failure reached.
pub type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// Why the database could not be used ([`StoreError::Unavailable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// No connection could be made: refused, or the server is starting up, shutting down
    /// or has no connection slot free.
    Refused,
    /// An open connection broke: closed, reset, or ended by the server.
    ConnectionLost,
    /// No pooled connection came free within the pool's acquire timeout (the server did not
    /// answer connects, or every connection was busy).
    PoolTimedOut,
    /// The pool was closed (the store is shutting down).
    PoolClosed,
    /// The SQLite file stayed locked past the busy timeout.
    Busy,
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outage::Refused => "no connection could be made",
            Outage::ConnectionLost => "the connection was lost",
            Outage::PoolTimedOut => "no connection came free in time",
            Outage::PoolClosed => "the connection pool is closed",
            Outage::Busy => "the database file stayed locked",
        })
    }
}

impl From<sqlx::Error> for StoreError {
    /// Sorts sqlx's error by what failed: the connection ([`StoreError::Unavailable`]), a
    /// constraint, or anything else ([`StoreError::Db`]).
    fn from(e: sqlx::Error) -> Self {
        let outage = outage(&e);
        if let Some(reason) = outage {
            return StoreError::Unavailable { reason, source: std::sync::Arc::new(e) };
        }
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() || db.is_foreign_key_violation() || db.is_check_violation() || matches!(db.kind(), sqlx::error::ErrorKind::NotNullViolation) {
                return StoreError::Constraint(std::sync::Arc::new(e));
            }
        }
        StoreError::Db(std::sync::Arc::new(e))
    }
}

/// The outage sqlx's error reports, if it is one (see [`StoreError::Unavailable`]).
pub(crate) fn outage(e: &sqlx::Error) -> Option<Outage> {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Some(Outage::Refused),
        sqlx::Error::Io(_) => Some(Outage::ConnectionLost),
        sqlx::Error::PoolTimedOut => Some(Outage::PoolTimedOut),
        sqlx::Error::PoolClosed => Some(Outage::PoolClosed),
        // SQLite (through sqlx): SQLITE_BUSY or SQLITE_LOCKED, in any extended form.
        sqlx::Error::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            let primary = db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
            matches!(primary, Some(5 | 6)).then_some(Outage::Busy)
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // SQLSTATE class 08, connection exception: 08001 and 08004 mean the
            // connection was never made, the others that it broke.
            Some("08001" | "08004") => Some(Outage::Refused),
            Some(c) if c.starts_with("08") => Some(Outage::ConnectionLost),
            // admin_shutdown, crash_shutdown: the server ended the session as it stopped.
            Some("57P01" | "57P02") => Some(Outage::ConnectionLost),
            // cannot_connect_now (starting up, in recovery), too_many_connections.
            Some("57P03" | "53300") => Some(Outage::Refused),
            _ => None,
        },
        _ => None,
    }
}

impl From<rusqlite::Error> for StoreError {
    /// Sorts the SQLite writer's error as [`From<sqlx::Error>`] sorts sqlx's.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{ConstraintViolation, DatabaseBusy, DatabaseLocked};
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked) => {
                StoreError::Unavailable { reason: Outage::Busy, source: std::sync::Arc::new(e) }
            }
            rusqlite::Error::SqliteFailure(f, _) if f.code == ConstraintViolation => StoreError::Constraint(std::sync::Arc::new(e)),
            _ => StoreError::Sqlite(std::sync::Arc::new(e)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            // A lost connection while migrating is an outage like any other.
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => StoreError::Migrate(std::sync::Arc::new(other)),
        }
    }
}

/// Result of a store call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded file: one node.
    Sqlite,
    /// A shared server: any number of nodes.
    Postgres,
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    writer: writer::Writer,
    /// Function lookups by (user, id or name), on SQLite only: there every function write
    /// goes through this process, which clears the cache, so it is never stale. With
    /// PostgreSQL other nodes write too, so every lookup reads the database.
    function_cache: Option<FunctionCache>,
    /// The master key everything sealed is sealed under, and during a rotation the previous
    /// one (vault.rs); set by [`Store::unlock`].
    vault: Option<std::sync::Arc<Keyring>>,
    /// Versions kept per function beyond those aliases hold (versions.rs; 0: all).
    version_retention: i64,
    /// AWS access keys by access key id, opened, on SQLite only (aws_keys.rs): every key
    /// write (create, revoke, use) goes through this process, which updates the cache, so a
    /// revoked key stops at once; with PostgreSQL every request reads the database.
    aws_key_cache: Option<aws_keys::AwsKeyCache>,
}

/// Functions by (user id, id or name).
type FunctionCache = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), voltrun_core::Function>>>;

impl StoreError {
    /// True when the database or the execution writer could not be used: not the request's
    /// fault nor (as far as we know) a bug, so a 503 the client may retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::WriterStopped)
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if url.starts_with("sqlite:") {
            (Dialect::Sqlite, if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            return Err(StoreError::Unsupported(url.to_string()));
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let mut pool_opts = AnyPoolOptions::new().max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 }).acquire_timeout(Duration::from_secs(10));
        if dialect == Dialect::Sqlite {
            // A pooled connection is pinged before each use by default: for SQLite that is a
            // round trip to the connection's thread before every query, and a local file has
            // no network to have dropped it.
            pool_opts = pool_opts.test_before_acquire(false).after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in SQLITE_PRAGMAS {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = pool_opts.connect_with(opts).await?;
        // The portable migrations, then the dialect's own (the triggers that keep the
        // dashboard's per-hour totals). They share sqlx's table of applied versions, so each
        // ignores the versions only the other knows.
        let mut common = sqlx::migrate!("./migrations");
        common.set_ignore_missing(true);
        common.run(&pool).await?;
        let mut own = match dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations-sqlite"),
            Dialect::Postgres => sqlx::migrate!("./migrations-postgres"),
        };
        own.set_ignore_missing(true);
        own.run(&pool).await?;
        let writer = match dialect {
            Dialect::Sqlite => writer::Writer::start_sqlite(&sqlite_path(&url)?)?,
            Dialect::Postgres => writer::Writer::start_on_pool(pool.clone()),
        };
        let function_cache = (dialect == Dialect::Sqlite).then(Default::default);
        let aws_key_cache = (dialect == Dialect::Sqlite).then(Default::default);
        let store = Store { pool, dialect, url, writer, function_cache, vault: None, version_retention: versions::DEFAULT_VERSION_RETENTION, aws_key_cache };
        // Functions made before versions existed get their current definition as a version.
        store.backfill_versions().await?;
        Ok(store)
    }

    /// Checks the database answers (for `/health`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The database's kind.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A transaction that writes. On SQLite it takes the file's write lock at its start
    /// (`BEGIN IMMEDIATE`, waiting up to the busy timeout for another writer): a deferred
    /// transaction that read first and wrote second got SQLITE_BUSY at once, without waiting,
    /// whenever another connection had committed in between, and the request a 503 (a
    /// function update while its schedule fired, seen in CI).
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// Waits for queue notifications from other nodes (PostgreSQL LISTEN); None on SQLite,
    /// where every producer is in this process.
    pub async fn listen_queue(&self) -> Result<Option<QueueListener>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
        l.listen(QUEUE_CHANNEL).await?;
        Ok(Some(QueueListener(l)))
    }
}

/// Binds an optional f64 so that PostgreSQL sees float8 when it is NULL too. sqlx 0.8.6's Any
/// driver swaps the two float kinds for NULLs (`sqlx-core` any/arguments.rs sends a NULL of
/// kind `Double` as float4, of kind `Real` as float8), so a statement a connection first
/// prepared with a NULL f64 refused every later value ("incorrect binary data format in bind
/// parameter"). f32's kind is `Real`, so a NULL f32 goes as float8. Re-check on a sqlx upgrade:
/// `it/versions.rs` sets and clears alias weights on PostgreSQL.
pub(crate) fn bind_opt_f64<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    v: Option<f64>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    match v {
        Some(x) => q.bind(x),
        None => q.bind(None::<f32>),
    }
}

const QUEUE_CHANNEL: &str = "voltrun_queue";

/// A PostgreSQL LISTEN connection on the queue channel.
pub struct QueueListener(sqlx::postgres::PgListener);

impl QueueListener {
    /// Waits for the next notification (reconnecting as needed).
    pub async fn recv(&mut self) -> Result<()> {
        self.0.recv().await?;
        Ok(())
    }
}

/// The settings of every connection to the SQLite file: the pool's and the writer's own
/// (writer.rs).
pub(crate) const SQLITE_PRAGMAS: [&str; 6] = [
    // WAL lets readers run beside the one writer; NORMAL fsyncs at checkpoints, which in WAL
    // mode never corrupts the file and loses nothing on a process crash (only the last
    // commits on a power loss).
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    // Statement journals (an insert that fires a trigger needs one) in memory, not in a
    // temporary file per statement.
    "PRAGMA temp_store=MEMORY",
    "PRAGMA foreign_keys=ON",
    // Freed cells (a replaced or deleted secret's envelope) are zeroed where that costs no
    // extra I/O, so a copy of the file holds fewer old envelopes.
    "PRAGMA secure_delete=FAST",
];

/// The file of a `sqlite:` URL, parsed as sqlx parses it (percent-decoded, options after `?`
/// aside), for the writer's own connection.
fn sqlite_path(url: &str) -> Result<std::path::PathBuf> {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let path = opts.get_filename();
    let memory = path.to_str().is_some_and(|p| p.starts_with("file:sqlx-in-memory-")) || url.contains("mode=memory");
    if memory || path.as_os_str().is_empty() {
        // An in-memory database cannot be shared with the writer's own connection.
        return Err(StoreError::Unsupported(url.to_string()));
    }
    Ok(path.to_path_buf())
}

/// Maps a unique violation to [`StoreError::Conflict`] naming the field, by the constraint
/// text the database reports.
fn conflict_or(e: sqlx::Error, fields: &[&'static str]) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            let msg = db.message().to_string();
            let field = fields.iter().find(|f| msg.contains(*f)).copied().unwrap_or(fields[0]);
            return StoreError::Conflict(field);
        }
    }
    e.into()
}

fn get_str(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}

fn get_opt_str(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

fn get_i64(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost or refused connection, a pool timeout and a locked SQLite file are outages
    /// (503s); a protocol error or a refused statement is not.
    #[test]
    fn connection_failures_are_outages_and_nothing_else_is() {
        use std::io::{Error, ErrorKind};
        let reason = |e: StoreError| match e {
            StoreError::Unavailable { reason, .. } => Some(reason),
            _ => None,
        };
        assert_eq!(reason(sqlx::Error::Io(Error::from(ErrorKind::ConnectionRefused)).into()), Some(Outage::Refused));
        assert_eq!(reason(sqlx::Error::Io(Error::from(ErrorKind::UnexpectedEof)).into()), Some(Outage::ConnectionLost));
        assert_eq!(reason(sqlx::Error::Io(Error::from(ErrorKind::ConnectionReset)).into()), Some(Outage::ConnectionLost));
        assert_eq!(reason(sqlx::Error::PoolTimedOut.into()), Some(Outage::PoolTimedOut));
        assert_eq!(reason(sqlx::Error::PoolClosed.into()), Some(Outage::PoolClosed));
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert_eq!(reason(busy.into()), Some(Outage::Busy));
        let constraint = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY), None);
        assert!(matches!(StoreError::from(constraint), StoreError::Constraint(_)));
        let protocol: StoreError = sqlx::Error::Protocol("unexpected message".into()).into();
        assert!(matches!(protocol, StoreError::Db(_)) && !protocol.is_unavailable());
        assert!(StoreError::WriterStopped.is_unavailable());
        assert!(!StoreError::Invariant("x".into()).is_unavailable());
    }

    /// A write handed to a writer that is gone fails with `WriterStopped` (a 503), not a
    /// made-up corrupt-row error.
    #[tokio::test]
    async fn a_stopped_writer_is_an_outage() {
        let dir = std::env::temp_dir().join(format!("voltrun-store-stopped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        let stopped = Store { writer: writer::Writer::from_sender(tx), ..store.clone() };
        let e = crate::executions::ExecutionWrite::Purge("DELETE FROM executions WHERE id = $1", vec![crate::executions::Param::Text(Some("x".into()))]);
        let err = stopped.write(e).await.unwrap_err();
        assert!(matches!(err, StoreError::WriterStopped), "{err}");
        assert!(err.is_unavailable());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The writer's own connection opens the file sqlx opens: percent-decoded, options
    /// aside; an in-memory database (which it could not share) is refused.
    #[test]
    fn the_writer_opens_the_file_sqlx_opens() {
        let p = |u: &str| sqlite_path(u).map(|p| p.display().to_string());
        assert_eq!(p("sqlite:///data/voltrun.db?mode=rwc").unwrap(), "/data/voltrun.db");
        assert_eq!(p("sqlite:///data/with%20space.db?mode=rwc").unwrap(), "/data/with space.db");
        assert_eq!(p("sqlite://relative/v.db").unwrap(), "relative/v.db");
        assert!(matches!(sqlite_path("sqlite::memory:"), Err(StoreError::Unsupported(_))));
        assert!(matches!(sqlite_path("sqlite://file.db?mode=memory"), Err(StoreError::Unsupported(_))));
    }
}
