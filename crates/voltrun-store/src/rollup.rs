//! Per-user, per-hour totals of finished executions (`execution_hours`), so the dashboard
//! reads a few dozen rows instead of every execution of the last day. Every write that moves
//! a run into or out of a finished state adds its delta here, and the deltas are written in
//! the same transaction as the runs.

use std::collections::HashMap;

use voltrun_core::ExecutionStatus;

#[derive(Default, Debug, Clone, Copy, PartialEq)]
struct Totals {
    success: i64,
    failed: i64,
    duration_sum: f64,
    duration_n: i64,
}

/// Deltas gathered over one transaction.
#[derive(Default, Debug)]
pub(crate) struct HourDeltas(HashMap<(String, String), Totals>);

impl HourDeltas {
    /// Counts a run (`sign` 1) or takes it back out (`sign` -1), if its status is final.
    pub(crate) fn add(&mut self, user_id: &str, created_at: &str, status: ExecutionStatus, duration_ms: Option<f64>, sign: i64) {
        let (ok, failed) = match status {
            ExecutionStatus::Success => (1, 0),
            ExecutionStatus::Failed => (0, 1),
            ExecutionStatus::Pending | ExecutionStatus::Running => return,
        };
        let t = self.0.entry((user_id.to_string(), hour_of(created_at).to_string())).or_default();
        t.success += sign * ok;
        t.failed += sign * failed;
        if let Some(d) = duration_ms {
            t.duration_sum += sign as f64 * d;
            t.duration_n += sign;
        }
    }

    /// Writes the deltas on `conn` (inside the caller's transaction).
    pub(crate) async fn flush(self, conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
        for ((user, hour), t) in self.0 {
            if t == Totals::default() {
                continue;
            }
            sqlx::query(
                "INSERT INTO execution_hours (user_id, hour, success, failed, duration_sum, duration_n) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id, hour) DO UPDATE SET success = execution_hours.success + excluded.success,
                 failed = execution_hours.failed + excluded.failed, duration_sum = execution_hours.duration_sum + excluded.duration_sum,
                 duration_n = execution_hours.duration_n + excluded.duration_n",
            )
            .bind(user)
            .bind(hour)
            .bind(t.success)
            .bind(t.failed)
            .bind(t.duration_sum)
            .bind(t.duration_n)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DDTHH` of an RFC 3339 time.
pub(crate) fn hour_of(rfc3339: &str) -> &str {
    rfc3339.get(..13).unwrap_or(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_count_finished_runs_per_hour_and_cancel_out() {
        let mut d = HourDeltas::default();
        d.add("u", "2026-11-23T22:10:00.000Z", ExecutionStatus::Success, Some(2.0), 1);
        d.add("u", "2026-11-23T22:59:59.999Z", ExecutionStatus::Failed, None, 1);
        d.add("u", "2026-11-23T22:00:00.000Z", ExecutionStatus::Running, Some(9.0), 1);
        let t = d.0[&("u".to_string(), "2026-11-23T22".to_string())];
        assert_eq!((t.success, t.failed, t.duration_sum, t.duration_n), (1, 1, 2.0, 1));
        d.add("u", "2026-11-23T22:10:00.000Z", ExecutionStatus::Success, Some(2.0), -1);
        d.add("u", "2026-11-23T22:59:59.999Z", ExecutionStatus::Failed, None, -1);
        assert_eq!(d.0[&("u".to_string(), "2026-11-23T22".to_string())], Totals::default());
    }
}
