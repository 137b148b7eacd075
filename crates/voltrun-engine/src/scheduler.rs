//! The cron scheduler: fires each scheduled function's ticks as queued runs.
//!
//! It reads only what it needs (voltrun_store::ScheduledFunction: no code, no environment,
//! served from an index) and reloads that list only when the store's fingerprint of the
//! scheduled functions changes, or every [`FULL_RELOAD`] whatever it says; each second it
//! checks the fingerprint at most every [`CHECK_EVERY`].

use std::time::{Duration, Instant};

use voltrun_core::{cron::Schedule, time, Execution, ExecutionStatus, Qualifier, Trigger};
use voltrun_store::{NewRun, ScheduledFunction};

use crate::Engine;

/// How often the fingerprint of the scheduled functions is read.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often the list is read again even if the fingerprint did not change (a change the
/// fingerprint cannot see: e.g. an update written by a node whose clock lags).
const FULL_RELOAD: Duration = Duration::from_secs(60);

impl Engine {
    /// Fires scheduled runs: each second, every tick of the last few seconds is inserted with
    /// a unique (function, tick) key, so each tick runs once however many nodes try, and a
    /// node restarting mid-tick still fires it.
    pub(crate) async fn schedule(self) {
        const LOOKBACK_S: i64 = 5;
        let mut functions: Vec<(ScheduledFunction, Schedule)> = Vec::new();
        let mut checked_at: Option<Instant> = None;
        let mut loaded_at: Option<Instant> = None;
        let mut fingerprint = None;
        loop {
            tokio::time::sleep(Duration::from_millis(1000 - (chrono::Utc::now().timestamp_subsec_millis() as u64 % 1000)).max(Duration::from_millis(10))).await;
            if checked_at.is_none_or(|t| t.elapsed() >= CHECK_EVERY) {
                checked_at = Some(Instant::now());
                let now_fp = match self.inner.store.schedules_fingerprint().await {
                    Ok(fp) => Some(fp),
                    Err(err) => {
                        tracing::warn!(%err, "checking schedules failed");
                        None
                    }
                };
                let stale = loaded_at.is_none_or(|t| t.elapsed() >= FULL_RELOAD) || now_fp.is_none() || now_fp != fingerprint;
                if stale {
                    match self.inner.store.scheduled_functions().await {
                        Ok(fs) => {
                            functions = fs.into_iter().filter_map(|f| Schedule::parse(&f.schedule).ok().map(|s| (f, s))).collect();
                            loaded_at = Some(Instant::now());
                            fingerprint = now_fp;
                        }
                        Err(err) => tracing::warn!(%err, "loading schedules failed"),
                    }
                }
            }
            let now = chrono::Utc::now().timestamp();
            for (f, sched) in &functions {
                // Never fire ticks from before the schedule was set (or last changed).
                let since = time::parse_ms(&f.updated_at).map_or(now, |ms| (ms + 999) / 1000);
                for t in (now - LOOKBACK_S + 1).max(since)..=now {
                    let Some(tick) = chrono::DateTime::from_timestamp(t, 0) else { continue };
                    if !sched.matches(tick) {
                        continue;
                    }
                    let mut exec = scheduled_run(f, time::format(tick));
                    if let Some(q) = &f.schedule_qualifier {
                        match self.schedule_version(f, q, &exec.id).await {
                            Some(v) => {
                                exec.function_version = v;
                                exec.qualifier = Some(q.clone());
                            }
                            None => continue,
                        }
                    }
                    let run = NewRun { schedule_tick: Some(time::format(tick)), ..NewRun::default() };
                    match self.inner.store.insert_execution(&exec, &run).await {
                        Ok(true) => self.inner.wake.notify_one(),
                        Ok(false) => {}
                        Err(err) => tracing::warn!(%err, function = %f.name, "firing a schedule failed"),
                    }
                }
            }
        }
    }
}

impl Engine {
    /// The version a tick of `f` runs when its schedule names `qualifier` (resolved at the
    /// tick, an alias's split drawn from the run's id); None (the tick is skipped, with a
    /// warning) when it names nothing any more.
    async fn schedule_version(&self, f: &ScheduledFunction, qualifier: &str, exec_id: &str) -> Option<i64> {
        let q = match Qualifier::parse(qualifier, "schedule_qualifier") {
            Ok(q) => q,
            Err(err) => {
                tracing::warn!(%err, function = %f.name, "a schedule's qualifier is invalid");
                return None;
            }
        };
        match q {
            Qualifier::Latest => Some(f.version),
            Qualifier::Version(n) => Some(n),
            Qualifier::Alias(name) => match self.inner.store.get_alias(&f.id, &name).await {
                Ok(Some(a)) => Some(voltrun_core::version::pick_version(a.version, a.weight(), exec_id)),
                Ok(None) => {
                    tracing::warn!(function = %f.name, alias = %name, "a schedule names an alias that is gone; tick skipped");
                    None
                }
                Err(err) => {
                    tracing::warn!(%err, function = %f.name, "resolving a schedule's alias failed; tick skipped");
                    None
                }
            },
        }
    }
}

/// The pending run of one tick.
fn scheduled_run(f: &ScheduledFunction, tick: String) -> Execution {
    let of = voltrun_core::RunOf { user_id: &f.user_id, function_id: &f.id, function_name: &f.name, function_version: f.version };
    let input = serde_json::json!({"time": tick, "source": "voltrun.schedule"});
    Execution::new_run(of, Trigger::Schedule, input, ExecutionStatus::Pending, f.max_retries as i64 + 1)
}
