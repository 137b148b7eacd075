//! Executions, and the durable async queue they form (rows with status `pending`).

use voltrun_core::{ExecError, Execution, ExecutionStatus, Trigger};

use crate::{get_i64, get_opt_str, get_str, parse_json, Dialect, Result, Store, StoreError};

/// How a new execution enters the store, beyond its record.
#[derive(Debug, Default, Clone)]
pub struct NewRun {
    /// The caller's `Idempotency-Key`: a second insert with it (same function) is refused.
    pub idempotency_key: Option<String>,
    /// The schedule tick that fired it: one execution per (function, tick).
    pub schedule_tick: Option<String>,
    /// The node running it (synchronous runs) and until when its lease holds.
    pub lease: Option<(String, String)>,
}

/// Queued runs a claim passes over: those of these functions and of these users.
#[derive(Debug, Default, Clone)]
pub struct ClaimSkip {
    /// Functions at their concurrency limit on the claiming node.
    pub functions: Vec<String>,
    /// Users holding their share of the claiming node's dispatcher slots.
    pub users: Vec<String>,
}

/// Filters of `GET /api/executions`.
#[derive(Debug, Default, Clone)]
pub struct ExecutionFilter {
    pub function_id: Option<String>,
    /// Only runs of this version (SPEC §13).
    pub function_version: Option<i64>,
    pub status: Option<ExecutionStatus>,
    pub trigger: Option<Trigger>,
    /// Only ids below this one (keyset cursor).
    pub before: Option<String>,
}

/// Aggregate figures for the dashboard.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub functions: i64,
    pub executions_total: i64,
    pub last_24h_total: i64,
    pub last_24h_success: i64,
    pub last_24h_failed: i64,
    /// Durations (ms) of the last [`DURATION_SAMPLE`] finished runs of the last 24 h, sorted ascending.
    pub durations_ms: Vec<f64>,
    pub hourly: Vec<HourBucket>,
}

/// One hour of the last day.
#[derive(Debug, Default, Clone)]
pub struct HourBucket {
    /// `YYYY-MM-DDTHH`.
    pub hour: String,
    pub invocations: i64,
    pub errors: i64,
    pub avg_duration_ms: Option<f64>,
}

fn execution_from(row: &sqlx::any::AnyRow) -> Result<Execution> {
    let status = get_str(row, "status")?;
    let trigger = get_str(row, "trigger")?;
    let output = get_opt_str(row, "output")?;
    let error = get_opt_str(row, "error")?;
    Ok(Execution {
        id: get_str(row, "id")?,
        user_id: get_str(row, "user_id")?,
        function_id: get_str(row, "function_id")?,
        function_name: get_str(row, "function_name")?,
        function_version: get_i64(row, "function_version")?,
        qualifier: get_opt_str(row, "qualifier")?,
        status: ExecutionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        trigger: Trigger::parse(&trigger).ok_or_else(|| StoreError::Corrupt(format!("trigger {trigger}")))?,
        input: parse_json(&get_str(row, "input")?, "input")?,
        output: output.map(|o| parse_json(&o, "output")).transpose()?,
        error: error.map(|e| serde_json::from_str::<ExecError>(&e).map_err(|e| StoreError::Corrupt(format!("error: {e}")))).transpose()?,
        logs: get_str(row, "logs")?,
        logs_truncated: get_i64(row, "logs_truncated")? != 0,
        duration_ms: sqlx::Row::try_get::<Option<f64>, _>(row, "duration_ms")?,
        attempts: get_i64(row, "attempts")?,
        max_attempts: get_i64(row, "max_attempts")?,
        created_at: get_str(row, "created_at")?,
        started_at: get_opt_str(row, "started_at")?,
        finished_at: get_opt_str(row, "finished_at")?,
    })
}

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).expect("a Value serialises")
}

impl Store {
    /// Stores a new execution (any status); it is durable once this returns (the write is
    /// group-committed with others in flight). False when its idempotency key or schedule
    /// tick was already used (nothing stored).
    pub async fn insert_execution(&self, e: &Execution, run: &NewRun) -> Result<bool> {
        let inserted = self.write(ExecutionWrite::Insert(Box::new((e.clone(), run.clone())))).await?;
        if inserted && e.status == ExecutionStatus::Pending {
            self.notify_queue().await?;
        }
        Ok(inserted)
    }

    /// Starts storing a new running execution without waiting: the caller runs it meanwhile
    /// and awaits [`crate::PendingWrite::committed`] before saving its end (writes are
    /// committed in order). Not for pending runs or idempotency keys, whose insert must be
    /// known to have happened before anything else.
    pub fn begin_insert_execution(&self, e: &Execution, run: &NewRun) -> crate::PendingWrite {
        debug_assert!(e.status != ExecutionStatus::Pending && run.idempotency_key.is_none());
        self.begin_write(ExecutionWrite::Insert(Box::new((e.clone(), run.clone()))))
    }

    /// Wakes dispatchers on other nodes (PostgreSQL NOTIFY); nothing to do on SQLite.
    async fn notify_queue(&self) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify('voltrun_queue', '')").execute(&self.pool).await?;
        }
        Ok(())
    }

    /// The execution of a function created with this idempotency key.
    pub async fn execution_by_idempotency_key(&self, function_id: &str, key: &str) -> Result<Option<Execution>> {
        let row = sqlx::query("SELECT * FROM executions WHERE function_id = $1 AND idempotency_key = $2").bind(function_id).bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(execution_from).transpose()
    }

    /// Writes an execution's terminal state (or any later state) over its row (group-committed).
    ///
    /// When the database is unavailable the caller gets the error, and the save is tried
    /// again in the background ([`Store::keep_trying`]): the run's end is known, and its row
    /// would otherwise stay `running` under this node's lease, which the node's heartbeat
    /// renews, so nothing would ever settle it.
    pub async fn save_execution(&self, e: &Execution) -> Result<()> {
        let r = self.write(ExecutionWrite::Save(Box::new(e.clone()))).await.map(|_| ());
        if matches!(r, Err(StoreError::Unavailable { .. })) {
            let saved = e.clone();
            self.keep_trying("save", &e.id, move |store| {
                let w = ExecutionWrite::Save(Box::new(saved.clone()));
                async move { store.write(w).await.map(|_| ()) }
            });
        }
        r
    }

    /// Gives a run this node claimed back to the queue as it was before the claim (the
    /// attempt not counted), when the node could not start it: the database failed right
    /// after the claim. Without this the row would stay `running` under this node's lease,
    /// which its heartbeat renews, and nothing would ever run or settle it. Done in a task of
    /// its own, tried again while the database stays unavailable. Not through the writer:
    /// rare, and the writer's callers wait for it, which nothing here does.
    pub fn give_back(&self, e: &Execution, node: &str) {
        let (store, id, node) = (self.clone(), e.id.clone(), node.to_string());
        tokio::spawn(async move {
            match store.give_back_now(&id, &node).await {
                Ok(()) => {}
                Err(StoreError::Unavailable { .. }) => store.keep_trying("give back", &id.clone(), move |store| {
                    let (id, node) = (id.clone(), node.clone());
                    async move { store.give_back_now(&id, &node).await }
                }),
                Err(err) => tracing::error!(execution_id = %id, %err, "could not give a claimed run back to the queue"),
            }
        });
    }

    async fn give_back_now(&self, id: &str, node: &str) -> Result<()> {
        // Only while this node still holds it: the lease reaper may have settled it meanwhile.
        let r = sqlx::query(
            "UPDATE executions SET status = 'pending', attempts = attempts - 1, lease_owner = NULL, lease_expires = NULL
             WHERE id = $1 AND status = 'running' AND lease_owner = $2",
        )
        .bind(id)
        .bind(node)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() > 0 {
            self.notify_queue().await?;
        }
        Ok(())
    }

    /// Tries `attempt` again in a task of its own, with a growing pause, while the database
    /// stays unavailable (for up to [`KEEP_TRYING_FOR`]): for the end of a run whose first
    /// write met an outage, which nothing else would store. Not for SQLite's stopped writer,
    /// which does not come back.
    ///
    /// On PostgreSQL with several nodes, another node's lease reaper can settle the row first
    /// (when the outage outlasted this node's lease); the late write then overwrites that
    /// settling with the run's real end, which is what happened.
    fn keep_trying<F, Fut>(&self, what: &'static str, id: &str, attempt: F)
    where
        F: Fn(Store) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        let (store, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let until = std::time::Instant::now() + KEEP_TRYING_FOR;
            let mut pause = std::time::Duration::from_millis(500);
            loop {
                tokio::time::sleep(pause).await;
                match attempt(store.clone()).await {
                    Ok(()) => {
                        tracing::info!(execution_id = %id, what, "an execution write that met an outage is stored");
                        return;
                    }
                    Err(StoreError::Unavailable { .. }) if std::time::Instant::now() < until => {
                        pause = (pause * 2).min(std::time::Duration::from_secs(10));
                    }
                    Err(err) => {
                        tracing::error!(execution_id = %id, what, %err, "gave up storing an execution write that met an outage");
                        return;
                    }
                }
            }
        });
    }

    /// Claims the oldest pending run that is due and that `skip` does not hold back: moves it
    /// to `running` under this node's lease and counts the attempt. The dispatcher skips the
    /// functions at their concurrency limit and the users at their share of its slots, so a
    /// claimed run can start at once instead of holding a slot while it waits (and one
    /// tenant's backlog cannot take every slot). On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets
    /// any number of nodes claim at once without waiting on each other.
    ///
    /// Not through the writer: the claim must return its row, with the lock clause in the same
    /// statement, and the one dispatcher claims one at a time (docs/ARCHITECTURE.md, execution
    /// writes outside the writer).
    pub async fn claim_next(&self, node: &str, now: &str, lease_until: &str, skip: &ClaimSkip) -> Result<Option<Execution>> {
        // The skip lists travel as one JSON array each, so the statement text (and its prepared
        // statement) is the same whatever their length.
        let sql = match self.dialect {
            Dialect::Postgres => {
                "UPDATE executions SET status = 'running', attempts = attempts + 1, started_at = $1, lease_owner = $2, lease_expires = $3
                 WHERE id = (SELECT id FROM executions WHERE status = 'pending' AND (not_before IS NULL OR not_before <= $1)
                   AND function_id NOT IN (SELECT json_array_elements_text($4::json)) AND user_id NOT IN (SELECT json_array_elements_text($5::json))
                   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 AND status = 'pending' RETURNING *"
            }
            Dialect::Sqlite => {
                "UPDATE executions SET status = 'running', attempts = attempts + 1, started_at = $1, lease_owner = $2, lease_expires = $3
                 WHERE id = (SELECT id FROM executions WHERE status = 'pending' AND (not_before IS NULL OR not_before <= $1)
                   AND function_id NOT IN (SELECT value FROM json_each($4)) AND user_id NOT IN (SELECT value FROM json_each($5))
                   ORDER BY id LIMIT 1)
                 AND status = 'pending' RETURNING *"
            }
        };
        let list = |ids: &[String]| serde_json::to_string(ids).expect("strings serialise");
        let row = sqlx::query(sql).bind(now).bind(node).bind(lease_until).bind(list(&skip.functions)).bind(list(&skip.users)).fetch_optional(&self.pool).await?;
        row.as_ref().map(execution_from).transpose()
    }

    /// Runs waiting in the queue.
    pub async fn count_pending(&self) -> Result<i64> {
        // Ordered by id so SQLite walks the queue's partial index (pending rows only) instead of
        // the larger (user_id, status, id) index over every row.
        let row = sqlx::query("SELECT COUNT(*) AS n FROM (SELECT id FROM executions WHERE status = 'pending' ORDER BY id) AS pending").fetch_one(&self.pool).await?;
        get_i64(&row, "n")
    }

    /// Extends the leases of every run this node holds. Not through the writer: one
    /// statement per node every lease/3, not one per invocation.
    pub async fn heartbeat(&self, node: &str, lease_until: &str) -> Result<u64> {
        let r = sqlx::query("UPDATE executions SET lease_expires = $2 WHERE lease_owner = $1 AND status = 'running'").bind(node).bind(lease_until).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    /// Puts a failed attempt back in the queue, due at `not_before`; keeps its last error
    /// and logs visible meanwhile. Not through the writer: see docs/ARCHITECTURE.md (the
    /// writes outside the writer). When the database is unavailable the caller gets the error
    /// and the requeue is tried again in the background, as [`Store::save_execution`] is.
    pub async fn requeue(&self, e: &Execution, not_before: &str) -> Result<()> {
        let r = self.requeue_now(e, not_before).await;
        if matches!(r, Err(StoreError::Unavailable { .. })) {
            let (e, not_before) = (e.clone(), not_before.to_string());
            self.keep_trying("requeue", &e.id.clone(), move |store| {
                let (e, not_before) = (e.clone(), not_before.clone());
                async move { store.requeue_now(&e, &not_before).await }
            });
        }
        r
    }

    async fn requeue_now(&self, e: &Execution, not_before: &str) -> Result<()> {
        sqlx::query(
            "UPDATE executions SET status = 'pending', error = $2, logs = $3, logs_truncated = $4, duration_ms = $5, not_before = $6,
             lease_owner = NULL, lease_expires = NULL WHERE id = $1",
        )
        .bind(&e.id)
        .bind(e.error.as_ref().map(|x| serde_json::to_string(x).expect("ExecError serialises")))
        .bind(&e.logs)
        .bind(e.logs_truncated as i64)
        .bind(e.duration_ms)
        .bind(not_before)
        .execute(&self.pool)
        .await?;
        self.notify_queue().await
    }

    /// Settles runs whose node stopped renewing its lease (it died): async and scheduled
    /// runs with attempts left go back to the queue, the rest end `Interrupted`.
    /// Returns (requeued, interrupted).
    pub async fn expire_leases(&self, now: &str) -> Result<(u64, u64)> {
        self.settle_running("lease_expires < $1", now).await
    }

    /// At start on SQLite (one node): every run left `running` belonged to a process that
    /// is gone, so it is settled at once. Returns (requeued, interrupted).
    pub async fn recover_interrupted(&self, now: &str) -> Result<(u64, u64)> {
        self.settle_running("$1 = $1", now).await
    }

    /// Not through the writer: set-based updates of every row a dead node left, rare, many
    /// rows in one statement already.
    async fn settle_running(&self, cond: &str, now: &str) -> Result<(u64, u64)> {
        let requeued = sqlx::query(&format!(
            "UPDATE executions SET status = 'pending', lease_owner = NULL, lease_expires = NULL, not_before = $1
             WHERE status = 'running' AND {cond} AND trigger IN ('async', 'schedule') AND attempts < max_attempts"
        ))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let err = serde_json::to_string(&ExecError::new(voltrun_core::ErrorKind::Interrupted, "the node running this execution stopped before it finished"))
            .expect("ExecError serialises");
        let interrupted = sqlx::query(&format!(
            "UPDATE executions SET status = 'failed', error = $2, finished_at = $1, lease_owner = NULL, lease_expires = NULL
             WHERE status = 'running' AND {cond}"
        ))
        .bind(now)
        .bind(err)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if requeued > 0 {
            self.notify_queue().await?;
        }
        Ok((requeued, interrupted))
    }

    /// One of the user's executions.
    pub async fn get_execution(&self, user_id: &str, id: &str) -> Result<Option<Execution>> {
        let row = sqlx::query("SELECT * FROM executions WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(execution_from).transpose()
    }

    /// An execution by id alone (the engine's view).
    pub async fn execution_by_id(&self, id: &str) -> Result<Option<Execution>> {
        let row = sqlx::query("SELECT * FROM executions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(execution_from).transpose()
    }

    /// A page of the user's executions, newest first.
    pub async fn list_executions(&self, user_id: &str, f: &ExecutionFilter, limit: i64) -> Result<Vec<Execution>> {
        let mut sql = String::from("SELECT * FROM executions WHERE user_id = $1");
        let mut binds: Vec<String> = vec![user_id.to_string()];
        let mut add = |cond: &str, value: String| {
            binds.push(value);
            sql.push_str(&format!(" AND {cond} ${}", binds.len()));
        };
        if let Some(v) = &f.function_id {
            add("function_id =", v.clone());
        }
        if let Some(v) = f.function_version {
            add("CAST(function_version AS TEXT) =", v.to_string());
        }
        if let Some(v) = f.status {
            add("status =", v.as_str().to_string());
        }
        if let Some(v) = f.trigger {
            add("trigger =", v.as_str().to_string());
        }
        if let Some(v) = &f.before {
            add("id <", v.clone());
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(execution_from).collect()
    }

    /// Figures for the dashboard since `since` (RFC 3339, the start of an hour): totals from
    /// the per-hour table of finished runs (kept by triggers, migrations-sqlite/ and
    /// migrations-postgres/) plus the runs not finished yet, and the durations of the last
    /// [`DURATION_SAMPLE`] finished runs for percentiles.
    pub async fn stats(&self, user_id: &str, since: &str) -> Result<Stats> {
        let mut s = Stats { functions: self.count_functions(user_id).await?, ..Stats::default() };
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(success + failed), 0) AS BIGINT) AS n FROM execution_hours WHERE user_id = $1").bind(user_id).fetch_one(&self.pool).await?;
        let finished = get_i64(&row, "n")?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN id >= $2 THEN 1 ELSE 0 END), 0) AS recent
             FROM executions WHERE user_id = $1 AND status IN ('pending', 'running')",
        )
        .bind(user_id)
        .bind(since_id(since))
        .fetch_one(&self.pool)
        .await?;
        s.executions_total = finished + get_i64(&row, "n")?;
        s.last_24h_total = get_i64(&row, "recent")?;
        let rows = sqlx::query("SELECT hour, success, failed, duration_sum, duration_n FROM execution_hours WHERE user_id = $1 AND hour >= $2 ORDER BY hour")
            .bind(user_id)
            .bind(since.get(..13).unwrap_or(since).to_string())
            .fetch_all(&self.pool)
            .await?;
        for r in &rows {
            let (ok, failed, n) = (get_i64(r, "success")?, get_i64(r, "failed")?, get_i64(r, "duration_n")?);
            let sum: f64 = sqlx::Row::try_get(r, "duration_sum")?;
            s.last_24h_total += ok + failed;
            s.last_24h_success += ok;
            s.last_24h_failed += failed;
            s.hourly.push(HourBucket { hour: get_str(r, "hour")?, invocations: ok + failed, errors: failed, avg_duration_ms: (n > 0).then(|| sum / n as f64) });
        }
        let rows = sqlx::query("SELECT duration_ms FROM executions WHERE user_id = $1 AND id >= $2 AND duration_ms IS NOT NULL ORDER BY id DESC LIMIT $3")
            .bind(user_id)
            .bind(since_id(since))
            .bind(DURATION_SAMPLE)
            .fetch_all(&self.pool)
            .await?;
        s.durations_ms = rows.iter().map(|r| sqlx::Row::try_get::<f64, _>(r, "duration_ms")).collect::<std::result::Result<_, _>>()?;
        s.durations_ms.sort_by(f64::total_cmp);
        Ok(s)
    }
}

/// How long [`Store::keep_trying`] tries a write again: longer than most outages, short
/// enough that a node does not pile up retries forever.
const KEEP_TRYING_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Finished runs whose durations make the dashboard's percentiles: the most recent ones of
/// the last day.
pub const DURATION_SAMPLE: i64 = 10_000;

/// The smallest execution id created at or after `since`: ids start with the creation time,
/// so a time window is an id range and uses the primary-key indexes.
pub(crate) fn since_id(since: &str) -> String {
    let ms = chrono_ms(since);
    format!("ex_{:016x}", (ms as u64) << 16)
}

fn chrono_ms(rfc3339: &str) -> i64 {
    voltrun_core::time::parse_ms(rfc3339).unwrap_or(0)
}

macro_rules! insert_execution_sql {
    ($tail:literal) => {
        concat!(
            "INSERT INTO executions (id, user_id, function_id, function_name, function_version, status, trigger, input, output, error,
             logs, logs_truncated, duration_ms, attempts, created_at, started_at, finished_at, max_attempts, idempotency_key, schedule_tick,
             lease_owner, lease_expires, qualifier)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)
             ON CONFLICT DO NOTHING",
            $tail
        )
    };
}
const INSERT_NEW: &str = insert_execution_sql!("");
const INSERT_FINISHED: &str = insert_execution_sql!(" -- finished run");

/// A write the group-commit writer performs.
pub(crate) enum ExecutionWrite {
    Insert(Box<(Execution, NewRun)>),
    Save(Box<Execution>),
    /// A batch of the retention task (retention.rs): a statement and its parameters.
    Purge(&'static str, Vec<Param>),
}

/// A value bound to a write's `$N` placeholder, kept apart from either database library so
/// both writers (sqlx on PostgreSQL, the SQLite writer thread) bind the same list.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(Option<String>),
    Int(i64),
    Real(Option<f64>),
}

// Placeholders in order of appearance (the SQLite writer binds `$N` by position).
const SAVE: &str = "UPDATE executions SET function_version = $1, status = $2, output = $3, error = $4, logs = $5, logs_truncated = $6,
     duration_ms = $7, attempts = $8, started_at = $9, finished_at = $10, lease_owner = NULL, lease_expires = NULL WHERE id = $11";

/// How a run ended, as both statements bind it: output, error, logs, logs_truncated,
/// duration_ms, attempts (consecutive placeholders in each).
fn outcome_params(e: &Execution) -> [Param; 6] {
    [
        Param::Text(e.output.as_ref().map(json_text)),
        Param::Text(e.error.as_ref().map(|x| serde_json::to_string(x).expect("ExecError serialises"))),
        Param::Text(Some(e.logs.clone())),
        Param::Int(e.logs_truncated as i64),
        Param::Real(e.duration_ms),
        Param::Int(e.attempts),
    ]
}

impl ExecutionWrite {
    /// The statement, and its parameters in `$1, $2, …` order.
    pub(crate) fn statement(&self) -> (&'static str, Vec<Param>) {
        use Param::*;
        let text = |s: &str| Text(Some(s.to_string()));
        match self {
            ExecutionWrite::Insert(b) => {
                let (e, run) = &**b;
                let (owner, expires) = run.lease.clone().unzip();
                // Two statement texts: PostgreSQL prepared statements keep the parameter types
                // of their first use, and `duration_ms` is NULL for a new run but a number for
                // a finished one (a shared statement then fails with "incorrect binary data
                // format in bind parameter 13").
                let sql = if e.duration_ms.is_some() { INSERT_FINISHED } else { INSERT_NEW };
                let mut params = vec![
                    text(&e.id),
                    text(&e.user_id),
                    text(&e.function_id),
                    text(&e.function_name),
                    Int(e.function_version),
                    text(e.status.as_str()),
                    text(e.trigger.as_str()),
                    Text(Some(json_text(&e.input))),
                ];
                params.extend(outcome_params(e));
                params.extend([
                    text(&e.created_at),
                    Text(e.started_at.clone()),
                    Text(e.finished_at.clone()),
                    Int(e.max_attempts),
                    Text(run.idempotency_key.clone()),
                    Text(run.schedule_tick.clone()),
                    Text(owner),
                    Text(expires),
                    Text(e.qualifier.clone()),
                ]);
                (sql, params)
            }
            ExecutionWrite::Save(e) => {
                let mut params = vec![Int(e.function_version), text(e.status.as_str())];
                params.extend(outcome_params(e));
                params.extend([Text(e.started_at.clone()), Text(e.finished_at.clone()), text(&e.id)]);
                (SAVE, params)
            }
            ExecutionWrite::Purge(sql, params) => (sql, params.clone()),
        }
    }

    /// Runs the write on `ex` through sqlx; true when a row was inserted or updated.
    pub(crate) async fn run<'e, E>(&self, ex: E) -> std::result::Result<bool, sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let (sql, params) = self.statement();
        let mut q = sqlx::query(sql);
        for p in params {
            q = match p {
                Param::Text(v) => q.bind(v),
                Param::Int(v) => q.bind(v),
                Param::Real(v) => q.bind(v),
            };
        }
        Ok(q.execute(ex).await?.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    /// A store on a new SQLite file of its own; the directory goes with the test's end.
    async fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("voltrun-store-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        (store, dir)
    }

    /// The triggers keep `execution_hours` equal to a count over `executions`, through
    /// inserts and through updates into, out of and between finished states.
    #[tokio::test]
    async fn hour_totals_follow_every_change_of_status() {
        let (store, dir) = temp_store("hours").await;
        let exec = |sql: String| {
            let pool = store.pool.clone();
            async move { sqlx::query(&sql).execute(&pool).await.unwrap() }
        };
        let row = |id: &str, status: &str, ms: &str| {
            format!(
                "INSERT INTO executions (id, user_id, function_id, function_name, function_version, status, trigger, input, logs, logs_truncated, duration_ms, attempts, created_at)
                 VALUES ('{id}', 'u', 'f', 'f', 1, '{status}', 'api', '{{}}', '', 0, {ms}, 1, '2026-11-23T22:10:00.000Z')"
            )
        };
        let totals = || {
            let pool = store.pool.clone();
            async move {
                let r = sqlx::query("SELECT success, failed, duration_sum, duration_n FROM execution_hours WHERE user_id = 'u' AND hour = '2026-11-23T22'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                use sqlx::Row;
                (r.get::<i64, _>(0), r.get::<i64, _>(1), r.get::<f64, _>(2), r.get::<i64, _>(3))
            }
        };
        exec(row("a", "success", "2.0")).await;
        exec(row("b", "pending", "NULL")).await;
        assert_eq!(totals().await, (1, 0, 2.0, 1));
        exec("UPDATE executions SET status = 'running' WHERE id = 'b'".into()).await;
        exec("UPDATE executions SET status = 'failed', duration_ms = 5.0 WHERE id = 'b'".into()).await;
        assert_eq!(totals().await, (1, 1, 7.0, 2));
        // A failed run queued again is not finished any more; finishing it counts it once.
        exec("UPDATE executions SET status = 'pending' WHERE id = 'b'".into()).await;
        assert_eq!(totals().await, (1, 0, 2.0, 1));
        exec("UPDATE executions SET status = 'success', duration_ms = 1.0 WHERE id = 'b'".into()).await;
        // Finished twice (settled as interrupted, then saved by a slow node): counted once.
        exec("UPDATE executions SET status = 'failed', duration_ms = NULL WHERE id = 'a'".into()).await;
        assert_eq!(totals().await, (1, 1, 1.0, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn run(id: &str, status: voltrun_core::ExecutionStatus) -> voltrun_core::Execution {
        voltrun_core::Execution {
            id: id.into(),
            user_id: "u".into(),
            function_id: "f".into(),
            function_name: "f".into(),
            function_version: 1,
            qualifier: None,
            status,
            trigger: voltrun_core::Trigger::Api,
            input: serde_json::json!({"n": id}),
            output: None,
            error: None,
            logs: String::new(),
            logs_truncated: false,
            duration_ms: None,
            attempts: 1,
            max_attempts: 1,
            created_at: "2026-12-01T01:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
        }
    }

    /// Writes handed over together are committed as one batch by the SQLite writer thread:
    /// each caller gets its own answer (a used idempotency key: not inserted; a save of an
    /// unknown id: nothing updated), and the pool's connections read what it committed.
    #[tokio::test]
    async fn a_batch_of_writes_answers_each_caller_and_is_read_back_through_the_pool() {
        use voltrun_core::ExecutionStatus::{Running, Success};
        let (store, dir) = temp_store("batch").await;
        let keyed = crate::NewRun { idempotency_key: Some("k".into()), ..Default::default() };
        let mut pending = Vec::new();
        for i in 0..50 {
            pending.push(store.begin_insert_execution(&run(&format!("ex_{i:03}"), Running), &crate::NewRun::default()));
        }
        let first_key = store.begin_write(super::ExecutionWrite::Insert(Box::new((run("ex_k1", Running), keyed.clone()))));
        let second_key = store.begin_write(super::ExecutionWrite::Insert(Box::new((run("ex_k2", Running), keyed))));
        let mut done = run("ex_007", Success);
        done.output = Some(serde_json::json!({"ok": true}));
        done.duration_ms = Some(1.5);
        let saved = store.begin_write(super::ExecutionWrite::Save(Box::new(done)));
        let unknown = store.begin_write(super::ExecutionWrite::Save(Box::new(run("ex_none", Success))));
        for p in pending {
            assert!(p.committed().await.unwrap());
        }
        assert!(first_key.committed().await.unwrap());
        assert!(!second_key.committed().await.unwrap(), "a used idempotency key inserts nothing");
        assert!(saved.committed().await.unwrap());
        assert!(!unknown.committed().await.unwrap(), "a save of an unknown id updates nothing");
        let e = store.execution_by_id("ex_007").await.unwrap().expect("stored");
        assert_eq!((e.status, e.output, e.duration_ms), (Success, Some(serde_json::json!({"ok": true})), Some(1.5)));
        assert!(store.execution_by_id("ex_049").await.unwrap().is_some());
        assert!(store.execution_by_id("ex_k2").await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Regression (2026-11-23): checkpoints run beside the writer never found the WAL fully
    /// copied under back-to-back commits, so it never started over and grew by every commit
    /// (1.6 GB in a minute). 15,000 commits of ~9 frames each would leave a WAL of ~550 MB;
    /// the checkpointer's RESTART past 8,192 frames keeps it to a few tens.
    #[tokio::test]
    async fn the_wal_stays_bounded_under_back_to_back_commits() {
        let (store, dir) = temp_store("wal").await;
        let wal = dir.join("t.db-wal");
        let mut largest = 0;
        for i in 0..15_000 {
            let mut e = run(&format!("ex_{i:08}"), voltrun_core::ExecutionStatus::Success);
            e.duration_ms = Some(1.0);
            assert!(store.insert_execution(&e, &crate::NewRun::default()).await.unwrap());
            if i % 500 == 0 {
                largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            }
        }
        assert!(largest < 200 << 20, "the WAL reached {} MiB", largest >> 20);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
