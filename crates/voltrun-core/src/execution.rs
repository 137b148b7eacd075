//! Executions: one run of a function, from acceptance to its terminal state.

use serde::{Deserialize, Serialize};

/// Where a run stands. `pending → running → success | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Pending,
    Running,
    Success,
    Failed,
}

impl ExecutionStatus {
    /// The stored and served name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored or query-string value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "success" => Self::Success,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// True once the run can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Api,
    Async,
    Http,
    Schedule,
    Test,
}

impl Trigger {
    /// The stored and served name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Async => "async",
            Self::Http => "http",
            Self::Schedule => "schedule",
            Self::Test => "test",
        }
    }

    /// Parses a stored or query-string value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "api" => Self::Api,
            "async" => Self::Async,
            "http" => Self::Http,
            "schedule" => Self::Schedule,
            "test" => Self::Test,
            _ => return None,
        })
    }
}

/// Why a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ErrorKind {
    /// The handler threw or rejected.
    HandlerError,
    /// The code could not be loaded, the handler is missing, or its result is not JSON.
    RuntimeError,
    /// The run outlived its timeout; the instance was killed.
    Timeout,
    /// The run went over its memory limit.
    OutOfMemory,
    /// The node running it died (crash, restart) before it finished.
    Interrupted,
    /// Our fault: the sandbox could not start, the store failed.
    Internal,
}

/// The `error` of a failed execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecError {
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default)]
    #[schema(required)]
    pub stack: Option<String>,
}

impl ExecError {
    /// An error without a stack.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ExecError { kind, message: message.into(), stack: None }
    }
}

/// An execution record, as stored and served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Execution {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub function_id: String,
    pub function_name: String,
    pub function_version: i64,
    /// What the call named (SPEC §13): `"3"`, `"live"`, `"latest"`; null: unqualified.
    #[serde(default)]
    #[schema(required)]
    pub qualifier: Option<String>,
    pub status: ExecutionStatus,
    pub trigger: Trigger,
    pub input: serde_json::Value,
    #[schema(required)]
    pub output: Option<serde_json::Value>,
    #[schema(required)]
    pub error: Option<ExecError>,
    pub logs: String,
    pub logs_truncated: bool,
    #[schema(required)]
    pub duration_ms: Option<f64>,
    /// Attempts made so far (retries and re-runs after a node died count).
    pub attempts: i64,
    /// Attempts this run may take in all (1 + the function's max_retries for async runs).
    pub max_attempts: i64,
    pub created_at: String,
    #[schema(required)]
    pub started_at: Option<String>,
    #[schema(required)]
    pub finished_at: Option<String>,
}

/// How a run ended, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `Ok(output)` or the error.
    pub result: Result<serde_json::Value, ExecError>,
    /// Everything the run wrote, capped.
    pub logs: String,
    pub logs_truncated: bool,
    /// Wall time of the run in milliseconds (handler time, not queueing).
    pub duration_ms: f64,
    pub started_at: String,
    pub finished_at: String,
}

/// Which function version an execution runs, as its record names it.
pub struct RunOf<'a> {
    pub user_id: &'a str,
    pub function_id: &'a str,
    pub function_name: &'a str,
    pub function_version: i64,
}

impl Execution {
    /// A new record with a fresh id, not started: `attempts` 0 of `max_attempts`.
    pub fn new_run(of: RunOf<'_>, trigger: Trigger, input: serde_json::Value, status: ExecutionStatus, max_attempts: i64) -> Execution {
        Execution {
            id: crate::id::new_id("ex_"),
            user_id: of.user_id.to_string(),
            function_id: of.function_id.to_string(),
            function_name: of.function_name.to_string(),
            function_version: of.function_version,
            qualifier: None,
            status,
            trigger,
            input,
            output: None,
            error: None,
            logs: String::new(),
            logs_truncated: false,
            duration_ms: None,
            attempts: 0,
            max_attempts,
            created_at: crate::time::now(),
            started_at: None,
            finished_at: None,
        }
    }

    /// Records a finished outcome on this execution.
    pub fn finish(&mut self, o: Outcome) {
        self.status = if o.result.is_ok() { ExecutionStatus::Success } else { ExecutionStatus::Failed };
        // A retried run carries its previous attempt's error until this one ends.
        (self.output, self.error) = match o.result {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        self.logs = o.logs;
        self.logs_truncated = o.logs_truncated;
        self.duration_ms = Some(o.duration_ms);
        self.started_at = Some(o.started_at);
        self.finished_at = Some(o.finished_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_serialises_with_type_field() {
        let e = ExecError::new(ErrorKind::OutOfMemory, "too big");
        assert_eq!(serde_json::to_value(&e).unwrap(), serde_json::json!({"type":"OutOfMemory","message":"too big","stack":null}));
    }

    #[test]
    fn finishing_replaces_the_previous_attempts_result() {
        let mut e: Execution = serde_json::from_value(serde_json::json!({
            "id": "ex_1", "function_id": "fn_1", "function_name": "f", "function_version": 1, "status": "running",
            "trigger": "async", "input": {}, "output": null, "error": {"type": "HandlerError", "message": "first", "stack": null},
            "logs": "", "logs_truncated": false, "duration_ms": null, "attempts": 2, "max_attempts": 3,
            "created_at": "t", "started_at": null, "finished_at": null
        }))
        .unwrap();
        e.finish(Outcome { result: Ok(serde_json::json!(1)), logs: String::new(), logs_truncated: false, duration_ms: 1.0, started_at: "t".into(), finished_at: "t".into() });
        assert_eq!((e.status, e.error.is_none(), e.output), (ExecutionStatus::Success, true, Some(serde_json::json!(1))));
    }

    #[test]
    fn status_and_trigger_round_trip() {
        for s in ["pending", "running", "success", "failed"] {
            assert_eq!(ExecutionStatus::parse(s).unwrap().as_str(), s);
        }
        for t in ["api", "async", "http", "schedule", "test"] {
            assert_eq!(Trigger::parse(t).unwrap().as_str(), t);
        }
    }
}
