//! Execution history retention: finished runs past the policy's age or count bounds
//! (voltrun_core::Retention) are deleted in the background, in small batches handed to the
//! group-commit writer (writer.rs) with a pause between them, so the hot insert path is never
//! held behind a long delete and never waits on a lock the deleter holds. Pending and
//! running runs are never deleted.
//!
//! Counts are kept per function and per user. Counting every function's runs on every pass
//! would cost as much as the history itself, so each pass looks only at the functions and
//! users with runs created since the previous pass (the first pass: all of them), and for
//! each finds the id of its newest run past the bound with one indexed `OFFSET` read.
//!
//! The dashboard's per-hour totals (migrations/0003, kept by the 1003 triggers, which have
//! no DELETE trigger) are not reduced: they count invocations, which happened, like
//! metrics that outlive the logs they were taken from. SQLite does not shrink the file on
//! delete; the freed pages are reused by later inserts, so under steady load the file stops
//! growing once retention applies.

use std::time::Duration;

use voltrun_core::{time, Retention};

use crate::executions::{since_id, Param, Write};
use crate::{get_opt_str, get_str, Result, Store};

/// Runs one delete statement removes at most.
pub const BATCH: i64 = 500;
/// Pause after each batch, which leaves the writer to the invocations between batches.
const PAUSE: Duration = Duration::from_millis(10);
/// Time between two passes.
pub const PERIOD: Duration = Duration::from_secs(5);

const FINISHED: &str = "status IN ('success', 'failed')";
// Placeholders in order of appearance (the SQLite writer binds `$N` by position).
const PURGE_OLD: &str = "DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE id < $1 AND status IN ('success', 'failed') ORDER BY id LIMIT $2)";
const PURGE_FUNCTION: &str = "DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE user_id = $1 AND function_id = $2 AND id <= $3 AND status IN ('success', 'failed') ORDER BY id LIMIT $4)";
const PURGE_USER: &str = "DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE user_id = $1 AND id <= $2 AND status IN ('success', 'failed') ORDER BY id LIMIT $3)";

/// Where a retention task has got to: runs with ids up to here have been looked at.
#[derive(Debug, Default, Clone)]
pub struct RetentionCursor(String);

impl Store {
    /// Starts the retention task on this node (nothing when the policy keeps everything).
    /// Several nodes may run it on one PostgreSQL database: their deletes overlap harmlessly.
    pub fn spawn_retention(&self, policy: Retention) {
        if policy.keeps_everything() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let mut cursor = RetentionCursor::default();
            loop {
                match store.apply_retention(&policy, &mut cursor).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "execution history retention"),
                    Err(err) => tracing::warn!(%err, "execution history retention failed; trying again later"),
                }
                tokio::time::sleep(PERIOD).await;
            }
        });
    }

    /// One pass of the retention policy; returns the batches that deleted something.
    pub async fn apply_retention(&self, policy: &Retention, cursor: &mut RetentionCursor) -> Result<u64> {
        let mut batches = 0;
        if policy.max_age_days > 0 {
            let days = policy.max_age_days.min(100 * 365) as i64;
            let cutoff = since_id(&time::in_seconds(-days * 86_400));
            batches += self.purge(PURGE_OLD, vec![text(&cutoff)]).await?;
        }
        if policy.per_function == 0 && policy.per_user == 0 {
            return Ok(batches);
        }
        let row = sqlx::query("SELECT MAX(id) AS high FROM executions").fetch_one(&self.pool).await?;
        let Some(high) = get_opt_str(&row, "high")? else { return Ok(batches) };
        if high <= cursor.0 {
            return Ok(batches);
        }
        let rows = sqlx::query("SELECT user_id, function_id FROM executions WHERE id > $1 AND id <= $2 GROUP BY user_id, function_id")
            .bind(&cursor.0)
            .bind(&high)
            .fetch_all(&self.pool)
            .await?;
        let mut active = Vec::with_capacity(rows.len());
        for r in &rows {
            active.push((get_str(r, "user_id")?, get_str(r, "function_id")?));
        }
        if policy.per_function > 0 {
            for (user, function) in &active {
                let row = sqlx::query("SELECT id FROM executions WHERE user_id = $1 AND function_id = $2 ORDER BY id DESC LIMIT 1 OFFSET $3")
                    .bind(user)
                    .bind(function)
                    .bind(policy.per_function.min(i64::MAX as u64) as i64)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(r) = row {
                    let cut = get_str(&r, "id")?;
                    batches += self.purge(PURGE_FUNCTION, vec![text(user), text(function), text(&cut)]).await?;
                }
            }
        }
        if policy.per_user > 0 {
            let mut users: Vec<&String> = active.iter().map(|(u, _)| u).collect();
            users.sort();
            users.dedup();
            for user in users {
                let row = sqlx::query("SELECT id FROM executions WHERE user_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2")
                    .bind(user)
                    .bind(policy.per_user.min(i64::MAX as u64) as i64)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(r) = row {
                    let cut = get_str(&r, "id")?;
                    batches += self.purge(PURGE_USER, vec![text(user), text(&cut)]).await?;
                }
            }
        }
        cursor.0 = high;
        Ok(batches)
    }

    /// Deletes in batches of [`BATCH`] until a batch finds nothing; returns the batches that
    /// deleted something.
    async fn purge(&self, sql: &'static str, mut params: Vec<Param>) -> Result<u64> {
        debug_assert!(sql.contains(FINISHED), "retention deletes finished runs only");
        params.push(Param::Int(BATCH));
        let mut batches = 0;
        while self.write(Write::Purge(sql, params.clone())).await? {
            batches += 1;
            tokio::time::sleep(PAUSE).await;
        }
        Ok(batches)
    }

    /// Finished and unfinished runs of a function stored now (for tests and benchmarks).
    pub async fn count_executions_of(&self, function_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM executions WHERE function_id = $1").bind(function_id).fetch_one(&self.pool).await?;
        crate::get_i64(&row, "n")
    }
}

fn text(s: &str) -> Param {
    Param::Text(Some(s.to_string()))
}
