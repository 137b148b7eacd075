//! Executions, and the durable async queue they form (rows with status `pending`).

use voltrun_core::{ExecError, Execution, ExecutionStatus, Trigger};

use crate::{get_i64, get_opt_str, get_str, parse_json, Result, Store, StoreError};

/// Filters of `GET /api/executions`.
#[derive(Debug, Default, Clone)]
pub struct ExecutionFilter {
    pub function_id: Option<String>,
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
    /// Durations (ms) of finished runs in the last 24 h, sorted ascending.
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
        status: ExecutionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        trigger: Trigger::parse(&trigger).ok_or_else(|| StoreError::Corrupt(format!("trigger {trigger}")))?,
        input: parse_json(&get_str(row, "input")?, "input")?,
        output: output.map(|o| parse_json(&o, "output")).transpose()?,
        error: error
            .map(|e| serde_json::from_str::<ExecError>(&e).map_err(|e| StoreError::Corrupt(format!("error: {e}"))))
            .transpose()?,
        logs: get_str(row, "logs")?,
        logs_truncated: get_i64(row, "logs_truncated")? != 0,
        duration_ms: sqlx::Row::try_get::<Option<f64>, _>(row, "duration_ms")?,
        attempts: get_i64(row, "attempts")?,
        created_at: get_str(row, "created_at")?,
        started_at: get_opt_str(row, "started_at")?,
        finished_at: get_opt_str(row, "finished_at")?,
    })
}

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).expect("a Value serialises")
}

impl Store {
    /// Stores a new execution (any status). An async run is durable once this returns.
    pub async fn insert_execution(&self, e: &Execution) -> Result<()> {
        sqlx::query(
            "INSERT INTO executions (id, user_id, function_id, function_name, function_version, status, trigger, input, output, error,
             logs, logs_truncated, duration_ms, attempts, created_at, started_at, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&e.id)
        .bind(&e.user_id)
        .bind(&e.function_id)
        .bind(&e.function_name)
        .bind(e.function_version)
        .bind(e.status.as_str())
        .bind(e.trigger.as_str())
        .bind(json_text(&e.input))
        .bind(e.output.as_ref().map(json_text))
        .bind(e.error.as_ref().map(|x| serde_json::to_string(x).expect("ExecError serialises")))
        .bind(&e.logs)
        .bind(e.logs_truncated as i64)
        .bind(e.duration_ms)
        .bind(e.attempts)
        .bind(&e.created_at)
        .bind(&e.started_at)
        .bind(&e.finished_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes an execution's terminal state (or any later state) over its row.
    pub async fn save_execution(&self, e: &Execution) -> Result<()> {
        sqlx::query(
            "UPDATE executions SET function_version = $2, status = $3, output = $4, error = $5, logs = $6, logs_truncated = $7,
             duration_ms = $8, attempts = $9, started_at = $10, finished_at = $11 WHERE id = $1",
        )
        .bind(&e.id)
        .bind(e.function_version)
        .bind(e.status.as_str())
        .bind(e.output.as_ref().map(json_text))
        .bind(e.error.as_ref().map(|x| serde_json::to_string(x).expect("ExecError serialises")))
        .bind(&e.logs)
        .bind(e.logs_truncated as i64)
        .bind(e.duration_ms)
        .bind(e.attempts)
        .bind(&e.started_at)
        .bind(&e.finished_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims a pending run: moves it to `running`, counts the attempt and returns it.
    /// None when another claimer got it first or it is no longer pending.
    pub async fn claim_execution(&self, id: &str, now: &str) -> Result<Option<Execution>> {
        let row = sqlx::query(
            "UPDATE executions SET status = 'running', attempts = attempts + 1, started_at = $2 WHERE id = $1 AND status = 'pending' RETURNING *",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(execution_from).transpose()
    }

    /// Ids of every pending run, oldest first (the queue to resume at start).
    pub async fn pending_execution_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM executions WHERE status = 'pending' ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| get_str(r, "id")).collect()
    }

    /// After a crash: runs left `running` either go back to the queue (async runs with
    /// attempts left) or end as `Interrupted`. Returns (requeued, interrupted).
    pub async fn recover_interrupted(&self, max_attempts: i64, now: &str) -> Result<(u64, u64)> {
        let requeued = sqlx::query("UPDATE executions SET status = 'pending' WHERE status = 'running' AND trigger = 'async' AND attempts < $1")
            .bind(max_attempts)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let err = serde_json::to_string(&ExecError::new(
            voltrun_core::ErrorKind::Interrupted,
            "the server stopped while this run was in flight",
        ))
        .expect("ExecError serialises");
        let interrupted = sqlx::query("UPDATE executions SET status = 'failed', error = $1, finished_at = $2 WHERE status = 'running'")
            .bind(err)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
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

    /// Figures for the dashboard since `since` (RFC 3339).
    pub async fn stats(&self, user_id: &str, since: &str) -> Result<Stats> {
        let mut s = Stats { functions: self.count_functions(user_id).await?, ..Stats::default() };
        let row = sqlx::query("SELECT COUNT(*) AS n FROM executions WHERE user_id = $1").bind(user_id).fetch_one(&self.pool).await?;
        s.executions_total = get_i64(&row, "n")?;
        let rows = sqlx::query(
            "SELECT substr(created_at, 1, 13) AS hour, COUNT(*) AS n,
                    SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS ok,
                    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
                    AVG(duration_ms) AS avg_ms
             FROM executions WHERE user_id = $1 AND id >= $2 GROUP BY substr(created_at, 1, 13) ORDER BY hour",
        )
        .bind(user_id)
        .bind(since_id(since))
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let b = HourBucket {
                hour: get_str(r, "hour")?,
                invocations: get_i64(r, "n")?,
                errors: get_i64(r, "failed")?,
                avg_duration_ms: sqlx::Row::try_get::<Option<f64>, _>(r, "avg_ms")?,
            };
            s.last_24h_total += b.invocations;
            s.last_24h_success += get_i64(r, "ok")?;
            s.last_24h_failed += b.errors;
            s.hourly.push(b);
        }
        let rows = sqlx::query(
            "SELECT duration_ms FROM executions WHERE user_id = $1 AND id >= $2 AND duration_ms IS NOT NULL ORDER BY duration_ms LIMIT 200000",
        )
        .bind(user_id)
        .bind(since_id(since))
        .fetch_all(&self.pool)
        .await?;
        s.durations_ms = rows.iter().map(|r| sqlx::Row::try_get::<f64, _>(r, "duration_ms")).collect::<std::result::Result<_, _>>()?;
        Ok(s)
    }
}

/// The smallest execution id created at or after `since`: ids start with the creation time,
/// so a time window is an id range and uses the primary-key indexes.
fn since_id(since: &str) -> String {
    let ms = chrono_ms(since);
    format!("ex_{:016x}", (ms as u64) << 16)
}

fn chrono_ms(rfc3339: &str) -> i64 {
    voltrun_core::time::parse_ms(rfc3339).unwrap_or(0)
}
