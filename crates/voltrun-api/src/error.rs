//! The one error type of the API and how each variant becomes a response:
//! `{"error": {"code": "snake_case", "message": "human text"}}` with the status below.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use voltrun_engine::EngineError;
use voltrun_store::StoreError;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input is malformed or invalid.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no, bad or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such resource, or not the caller's.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 404 with its own code: `version_not_found`, `alias_not_found` (SPEC §13).
    #[error("{message}")]
    Missing { code: &'static str, message: String },
    /// 405: the path exists without this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: a unique field is taken.
    #[error("{0}")]
    Conflict(String),
    /// 409 with its own code: the request conflicts with the resource's state (`layer_in_use`).
    #[error("{message}")]
    Conflicting { code: &'static str, message: String },
    /// 409 `quota_exceeded`: the account holds as much as its quota allows (functions, code,
    /// API keys); retrying does not help until something is deleted.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 409 `function_not_active`: the function's first build is pending or failed, so it
    /// cannot run (SPEC §10).
    #[error("{0}")]
    NotActive(String),
    /// 409 `update_in_progress`: a build of the function is in progress (Lambda's
    /// `ResourceConflictException`); retry once it ended.
    #[error("{0}")]
    UpdateInProgress(String),
    /// 413: the body or a field is too large.
    #[error("{0}")]
    TooLarge(String),
    /// 429: throttled; retry after this many seconds.
    #[error("{message}")]
    Throttled { message: String, retry_after_s: u64 },
    /// 503 with `Retry-After`: a dependency (the database, the execution writer) is
    /// unavailable, or the server is stopping; the request may succeed when retried.
    #[error("{0}")]
    Unavailable(String),
    /// 500: our fault. The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with a code and message.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Missing { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Conflicting { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::QuotaExceeded(_) => (StatusCode::CONFLICT, "quota_exceeded"),
            ApiError::NotActive(_) => (StatusCode::CONFLICT, "function_not_active"),
            ApiError::UpdateInProgress(_) => (StatusCode::CONFLICT, "update_in_progress"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Builds the uniform error body.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = error_body(status, code, &message);
        match self {
            ApiError::Throttled { retry_after_s, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            ApiError::Unavailable(_) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_AFTER_S));
            }
            _ => {}
        }
        resp
    }
}

/// The `Retry-After` (seconds) of a 503: a database restart or fail-over takes seconds, and
/// a request that met the outage has already waited up to the pool's acquire timeout.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 2;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(field) => ApiError::Conflict(format!("{field} is already taken")),
            e @ StoreError::RouteOverlap => ApiError::Conflict(e.to_string()),
            StoreError::Quota(message) => ApiError::QuotaExceeded(message),
            // The constraint's own text names tables and columns: logged, not sent.
            StoreError::Constraint(source) => {
                tracing::warn!(%source, "a statement was refused on a constraint");
                ApiError::Conflict("the request conflicts with a concurrent change; retry it".into())
            }
            e @ (StoreError::Unavailable { .. } | StoreError::WriterStopped) => {
                // The source (sqlx's words) goes to the log; the client learns what failed.
                tracing::warn!(err = %e, "store unavailable");
                let what = match &e {
                    StoreError::Unavailable { reason, .. } => format!("the database is unavailable ({reason}); retry later"),
                    _ => "executions cannot be stored on this server right now; retry later".to_string(),
                };
                ApiError::Unavailable(what)
            }
            other => ApiError::Internal(format!("store: {:#}", ErrorChain(&other))),
        }
    }
}

/// An error and its sources, for the log of a 500.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Throttled { retry_after_s } => ApiError::Throttled { message: e.to_string(), retry_after_s },
            EngineError::UserBusy { .. } => ApiError::Throttled { message: e.to_string(), retry_after_s: 1 },
            EngineError::TestRunsThrottled { .. } => ApiError::Throttled { message: e.to_string(), retry_after_s: 1 },
            EngineError::Stopped => ApiError::Unavailable(e.to_string()),
            EngineError::NotActive { .. } => ApiError::NotActive(e.to_string()),
            EngineError::VersionNotFound => ApiError::Missing { code: "version_not_found", message: e.to_string() },
            EngineError::AliasNotFound => ApiError::Missing { code: "alias_not_found", message: e.to_string() },
            EngineError::Store(s) => s.into(),
        }
    }
}

impl From<voltrun_core::ValidationError> for ApiError {
    fn from(e: voltrun_core::ValidationError) -> Self {
        if e.too_large {
            ApiError::TooLarge(e.to_string())
        } else {
            ApiError::bad("validation_failed", e.to_string())
        }
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
