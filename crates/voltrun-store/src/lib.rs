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

mod executions;
mod functions;
mod users;

pub use executions::{ExecutionFilter, HourBucket, Stats};
pub use users::{ApiKey, KeyOwner, User};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated; the string names the field.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A stored value could not be decoded (a bug or a corrupted row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names a database VoltRun does not support (yet).
    #[error("unsupported database url {0:?}: use a sqlite:// path")]
    Unsupported(String),
}

/// Result of a store call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        if !url.starts_with("sqlite:") {
            return Err(StoreError::Unsupported(url.to_string()));
        }
        let url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; NORMAL fsyncs at checkpoints,
                    // which in WAL mode still never corrupts the file on power loss.
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous=NORMAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys=ON").execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Checks the database answers (for `/health`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The database's kind (`sqlite`).
    pub fn dialect(&self) -> &'static str {
        "sqlite"
    }
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
    StoreError::Db(e)
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
