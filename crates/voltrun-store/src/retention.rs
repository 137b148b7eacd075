//! Execution history retention: finished runs past the policy's age or count bounds
//! (voltrun_core::Retention) are deleted in the background, in small batches handed to the
//! group-commit writer (writer.rs) with a pause between them, so the hot insert path is never
//! held behind a long delete and never waits on a lock the deleter holds. Pending and
//! running runs are never deleted.
//!
//! Counts are kept per function and per user. Counting every function's runs on every pass
//! would cost as much as the history itself, so each pass looks only at the functions and
//! users with runs created since the previous pass (the first pass: all of them), and for
//! each finds the id of its newest run past the bound with one indexed `OFFSET` read, and
//! that only once the target may be a tenth (at most one batch) past its bound
//! ([`RetentionCursor`]).
//!
//! The dashboard's per-hour totals (migrations/0003, kept by the 1003 triggers, which have
//! no DELETE trigger) are not reduced: they count invocations, which happened, like
//! metrics that outlive the logs they were taken from. SQLite does not shrink the file on
//! delete; the freed pages are reused by later inserts, so under steady load the file stops
//! growing once retention applies.

use std::collections::HashMap;
use std::time::Duration;

use voltrun_core::{time, Retention};

use crate::executions::{since_id, ExecutionWrite, Param};
use crate::{get_opt_str, get_str, Result, Store};

/// Runs one delete statement removes at most.
const BATCH: i64 = 500;
/// Pause after each batch, which leaves the writer to the invocations between batches.
const PAUSE: Duration = Duration::from_millis(10);
/// Time between two passes.
const PERIOD: Duration = Duration::from_secs(5);

const FINISHED: &str = "status IN ('success', 'failed')";
// Placeholders in order of appearance (the SQLite writer binds `$N` by position).
const PURGE_OLD: &str = "DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE id < $1 AND status IN ('success', 'failed') ORDER BY id LIMIT $2)";
// The count bounds spare, for KEYED_KEEP, runs that carry an idempotency key or a schedule
// tick: their rows are what makes a retried key return the first run instead of running
// again, and a tick fire once however many nodes and passes try (the age bound still applies).
const PURGE_FUNCTION: &str = "DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE user_id = $1 AND function_id = $2 AND id <= $3 AND ((idempotency_key IS NULL AND schedule_tick IS NULL) OR id < $4) AND status IN ('success', 'failed') ORDER BY id LIMIT $5)";
const PURGE_USER: &str = "DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE user_id = $1 AND id <= $2 AND ((idempotency_key IS NULL AND schedule_tick IS NULL) OR id < $3) AND status IN ('success', 'failed') ORDER BY id LIMIT $4)";
/// How long the count bounds leave runs with an idempotency key or a schedule tick alone.
const KEYED_KEEP_S: i64 = 24 * 3600;

/// Where a retention task has got to: runs with ids up to `high` have been looked at, and
/// for each function and user checked so far, an upper bound on the runs it has stored.
/// A target is checked again (an `OFFSET` read of up to its bound on an index) only once its
/// bound passes the policy's by [`slack`], so the reads cost a few index steps per new run
/// rather than a full walk of every active target's history on every pass.
#[derive(Debug, Default, Clone)]
pub struct RetentionCursor {
    high: String,
    functions: HashMap<(String, String), u64>,
    users: HashMap<String, u64>,
}

/// Targets remembered at most (then the bounds start over: every target is checked again).
const REMEMBERED: usize = 100_000;

/// How far past `keep` a target's stored runs may go before it is checked again: a tenth of
/// the bound, at most one batch.
fn slack(keep: u64) -> u64 {
    (keep / 10).clamp(1, BATCH as u64)
}

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
                    Ok(n) => tracing::debug!(batches = n, "execution history retention"),
                    Err(err) => tracing::warn!(%err, "execution history retention failed; trying again later"),
                }
                tokio::time::sleep(PERIOD).await;
            }
        });
    }

    /// One pass of the retention policy; returns the batches that deleted something. A
    /// function or user keeps at most its bound plus [`slack`] runs (plus its pending and
    /// running ones) after a pass that saw no new runs.
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
        let keyed_cutoff = since_id(&time::in_seconds(-KEYED_KEEP_S));
        let row = sqlx::query("SELECT MAX(id) AS high FROM executions").fetch_one(&self.pool).await?;
        let Some(high) = get_opt_str(&row, "high")? else { return Ok(batches) };
        if high <= cursor.high {
            return Ok(batches);
        }
        // New runs per function since the last pass.
        let rows = sqlx::query("SELECT user_id, function_id, COUNT(*) AS n FROM executions WHERE id > $1 AND id <= $2 GROUP BY user_id, function_id")
            .bind(&cursor.high)
            .bind(&high)
            .fetch_all(&self.pool)
            .await?;
        let mut active = Vec::with_capacity(rows.len());
        for r in &rows {
            active.push((get_str(r, "user_id")?, get_str(r, "function_id")?, crate::get_i64(r, "n")?.max(0) as u64));
        }
        if cursor.functions.len() > REMEMBERED || cursor.users.len() > REMEMBERED {
            cursor.functions.clear();
            cursor.users.clear();
        }
        if policy.per_function > 0 {
            let keep = policy.per_function;
            for (user, function, new) in &active {
                let key = (user.clone(), function.clone());
                if let Some(bound) = cursor.functions.get_mut(&key) {
                    *bound += new;
                    if *bound <= keep + slack(keep) {
                        continue;
                    }
                }
                let row = sqlx::query("SELECT id FROM executions WHERE user_id = $1 AND function_id = $2 ORDER BY id DESC LIMIT 1 OFFSET $3")
                    .bind(user)
                    .bind(function)
                    .bind(keep.min(i64::MAX as u64) as i64)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(r) = row {
                    let cut = get_str(&r, "id")?;
                    batches += self.purge(PURGE_FUNCTION, vec![text(user), text(function), text(&cut), text(&keyed_cutoff)]).await?;
                }
                cursor.functions.insert(key, keep);
            }
        }
        if policy.per_user > 0 {
            let keep = policy.per_user;
            let mut new_by_user: HashMap<&String, u64> = HashMap::new();
            for (user, _, new) in &active {
                *new_by_user.entry(user).or_default() += new;
            }
            for (user, new) in new_by_user {
                if let Some(bound) = cursor.users.get_mut(user) {
                    *bound += new;
                    if *bound <= keep + slack(keep) {
                        continue;
                    }
                }
                let row = sqlx::query("SELECT id FROM executions WHERE user_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2")
                    .bind(user)
                    .bind(keep.min(i64::MAX as u64) as i64)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(r) = row {
                    let cut = get_str(&r, "id")?;
                    batches += self.purge(PURGE_USER, vec![text(user), text(&cut), text(&keyed_cutoff)]).await?;
                }
                cursor.users.insert(user.clone(), keep);
            }
        }
        cursor.high = high;
        Ok(batches)
    }

    /// Deletes in batches of [`BATCH`] until a batch finds nothing; returns the batches that
    /// deleted something.
    async fn purge(&self, sql: &'static str, mut params: Vec<Param>) -> Result<u64> {
        debug_assert!(sql.contains(FINISHED), "retention deletes finished runs only");
        params.push(Param::Int(BATCH));
        let mut batches = 0;
        while self.write(ExecutionWrite::Purge(sql, params.clone())).await? {
            batches += 1;
            tokio::time::sleep(PAUSE).await;
        }
        Ok(batches)
    }
}

fn text(s: &str) -> Param {
    Param::Text(Some(s.to_string()))
}

#[cfg(test)]
mod tests {
    use sqlx::Row;
    use voltrun_core::{Execution, ExecutionStatus, Retention, Trigger};

    use crate::{NewRun, Store};

    async fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("voltrun-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        (store, dir)
    }

    /// A run of `function` created `days_ago` days ago, the `n`-th of that instant.
    fn run(user: &str, function: &str, days_ago: i64, n: u64, status: ExecutionStatus) -> Execution {
        let ms = voltrun_core::time::parse_ms(&voltrun_core::time::in_seconds(-days_ago * 86_400)).unwrap() as u64;
        Execution {
            id: format!("ex_{:016x}", (ms << 16) + n),
            user_id: user.into(),
            function_id: function.into(),
            function_name: function.into(),
            function_version: 1,
            qualifier: None,
            status,
            trigger: Trigger::Api,
            input: serde_json::json!({}),
            output: None,
            error: None,
            logs: String::new(),
            logs_truncated: false,
            duration_ms: Some(1.0),
            attempts: 1,
            max_attempts: 1,
            created_at: voltrun_core::time::in_seconds(-days_ago * 86_400),
            started_at: None,
            finished_at: None,
        }
    }

    async fn ids_of(store: &Store, cond: &str) -> Vec<String> {
        let rows = sqlx::query(&format!("SELECT id FROM executions WHERE {cond} ORDER BY id")).fetch_all(&store.pool).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>(0)).collect()
    }

    /// Each bound deletes the oldest finished runs past it, never a pending or running one;
    /// the per-hour totals keep counting what was deleted.
    #[tokio::test]
    async fn retention_deletes_the_oldest_finished_runs_past_each_bound_only() {
        use ExecutionStatus::{Failed, Pending, Running, Success};
        let (store, dir) = temp_store("retention").await;
        let mut all: Vec<Execution> = Vec::new();
        let mut add = |user: &str, function: &str, days_ago: i64, status: ExecutionStatus| {
            let n = all.len() as u64;
            all.push(run(user, function, days_ago, n, status));
        };
        // u1/f1: two unfinished runs among the oldest, then 10 finished ones (2..=11).
        add("u1", "f1", 2, Pending);
        add("u1", "f1", 2, Running);
        for i in 0..10 {
            add("u1", "f1", 1, if i % 3 == 0 { Failed } else { Success });
        }
        // u1/f2: 5 finished, newer than f1's (12..=16).
        for _ in 0..5 {
            add("u1", "f2", 0, Success);
        }
        // u2/f3: 3 finished, the first past the age bound (17..=19).
        add("u2", "f3", 40, Success);
        add("u2", "f3", 0, Success);
        add("u2", "f3", 0, Success);
        for e in &all {
            assert!(store.insert_execution(e, &Default::default()).await.unwrap());
        }
        let totals = || async {
            let r = sqlx::query("SELECT CAST(SUM(success + failed) AS BIGINT) FROM execution_hours").fetch_one(&store.pool).await.unwrap();
            r.get::<i64, _>(0)
        };
        assert_eq!(totals().await, 18);

        let policy = Retention { max_age_days: 30, per_function: 4, per_user: 6 };
        let mut cursor = super::RetentionCursor::default();
        assert!(store.apply_retention(&policy, &mut cursor).await.unwrap() > 0);
        // f1 keeps its newest 4 finished runs and its unfinished ones, f2 its newest 4; then
        // u1's bound (6 newest: f2's 4 and f1's 2 newest) takes two more of f1's.
        let f1 = ids_of(&store, "function_id = 'f1'").await;
        let f2 = ids_of(&store, "function_id = 'f2'").await;
        assert_eq!(f2.len(), 4, "{f2:?}");
        assert!(f1.contains(&all[0].id) && f1.contains(&all[1].id), "unfinished runs are never deleted: {f1:?}");
        assert_eq!(&f1[2..], &[all[10].id.clone(), all[11].id.clone()], "{f1:?}");
        let f3 = ids_of(&store, "function_id = 'f3'").await;
        assert_eq!(f3, vec![all[18].id.clone(), all[19].id.clone()], "the 40-day-old run is gone");
        assert_eq!(totals().await, 18, "the totals count deleted runs");

        // Nothing new: the next pass deletes nothing and reads no run.
        assert_eq!(store.apply_retention(&policy, &mut cursor).await.unwrap(), 0);
        // f2 may go one run (a tenth of 4, at least 1) past its bound before it is checked
        // again; the second run past it is deleted.
        assert!(store.insert_execution(&run("u1", "f2", 0, 100, Success), &Default::default()).await.unwrap());
        let loose = Retention { max_age_days: 0, per_function: 4, per_user: 0 };
        assert_eq!(store.apply_retention(&loose, &mut cursor).await.unwrap(), 0);
        assert_eq!(ids_of(&store, "function_id = 'f2'").await.len(), 5);
        assert!(store.insert_execution(&run("u1", "f2", 0, 101, Success), &Default::default()).await.unwrap());
        assert!(store.apply_retention(&loose, &mut cursor).await.unwrap() > 0);
        let f2 = ids_of(&store, "function_id = 'f2'").await;
        assert_eq!(f2.len(), 4, "{f2:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Regression: the count bounds deleted a run with an idempotency key seconds after it
    /// ran, so a client retrying the key ran the function again (and a schedule tick whose
    /// row was gone fired twice).
    #[tokio::test]
    async fn retention_keeps_recent_runs_with_an_idempotency_key_or_a_schedule_tick() {
        let (store, dir) = temp_store("retention-keys").await;
        let keyed = run("u1", "f1", 0, 0, ExecutionStatus::Success);
        let ticked = run("u1", "f1", 0, 1, ExecutionStatus::Success);
        let old_keyed = run("u1", "f1", 2, 2, ExecutionStatus::Success);
        assert!(store.insert_execution(&old_keyed, &NewRun { idempotency_key: Some("k-old".into()), ..NewRun::default() }).await.unwrap());
        assert!(store.insert_execution(&keyed, &NewRun { idempotency_key: Some("k1".into()), ..NewRun::default() }).await.unwrap());
        assert!(store.insert_execution(&ticked, &NewRun { schedule_tick: Some("2026-12-01T00:00:00Z".into()), ..NewRun::default() }).await.unwrap());
        for n in 10..20 {
            assert!(store.insert_execution(&run("u1", "f1", 0, n, ExecutionStatus::Success), &NewRun::default()).await.unwrap());
        }
        let policy = Retention { max_age_days: 30, per_function: 2, per_user: 2 };
        store.apply_retention(&policy, &mut super::RetentionCursor::default()).await.unwrap();
        let left = ids_of(&store, "function_id = 'f1'").await;
        assert!(left.contains(&keyed.id) && left.contains(&ticked.id), "{left:?}");
        assert!(!left.contains(&old_keyed.id), "a keyed run older than a day goes: {left:?}");
        assert_eq!(left.len(), 4, "the two keyed runs and the newest two: {left:?}");
        assert_eq!(store.execution_by_idempotency_key("f1", "k1").await.unwrap().map(|e| e.id), Some(keyed.id.clone()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Regression: the scheduler read every scheduled function whole (code included) every
    /// 2 s; its list and its change check are now answered from an index alone.
    #[tokio::test]
    async fn the_scheduler_reads_schedules_from_the_index_alone() {
        let (store, dir) = temp_store("sched-plan").await;
        for sql in [crate::functions::SCHEDULED, crate::functions::SCHEDULES_FINGERPRINT] {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&store.pool).await.unwrap();
            let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
            assert!(plan.iter().any(|d| d.contains("COVERING INDEX functions_scheduled")), "{sql}: {plan:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
