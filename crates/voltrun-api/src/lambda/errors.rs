//! Errors as AWS's Lambda API sends them: the status of the model's error shape, the code in
//! `x-amzn-ErrorType`, and `{"Type": "User"|"Service", "message": …}` (`Message` for the
//! shapes that spell it so), which botocore, the CLI and the JS SDK all read. Every native
//! [`ApiError`] maps to one of them, so the adapter never leaks our own error JSON.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::sigv4::SigError;
use crate::error::ApiError;

/// An error of the Lambda API.
#[derive(Debug)]
pub struct LambdaError {
    pub status: StatusCode,
    /// AWS's error code (`ResourceNotFoundException`, …).
    pub code: &'static str,
    pub message: String,
    /// `Retry-After` seconds (429).
    pub retry_after_s: Option<u64>,
}

/// Result of a Lambda operation.
pub type LambdaResult<T> = Result<T, LambdaError>;

impl LambdaError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        LambdaError { status, code, message: message.into(), retry_after_s: None }
    }

    /// 404 `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// 400 `InvalidParameterValueException`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameterValueException", message)
    }

    /// 400 `InvalidRequestContentException`: the body is not the JSON the operation takes.
    pub fn bad_content(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequestContentException", message)
    }

    /// 409 `ResourceConflictException`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }

    /// 412 `PreconditionFailedException`: a `RevisionId` that is not the current one.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "PreconditionFailedException", message)
    }

    /// 413 `RequestTooLargeException`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", message)
    }

    /// 400 `UnsupportedOperationException`: a Lambda operation (or path) VoltRun does not
    /// implement (docs/LAMBDA_API.md lists those it does).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "UnsupportedOperationException", message)
    }

    /// 403 `UnrecognizedClientException`: no such key (never made, revoked, expired).
    pub fn unrecognized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "UnrecognizedClientException", message)
    }

    /// 500 `ServiceException`: our fault; the detail is logged, never sent.
    pub fn service(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "Lambda API: internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "An internal error occurred; retry the request")
    }

    /// `Type`: `User` for the caller's fault, `Service` for ours.
    fn kind(&self) -> &'static str {
        if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        }
    }
}

impl From<SigError> for LambdaError {
    fn from(e: SigError) -> Self {
        match e {
            SigError::Missing => LambdaError::new(StatusCode::FORBIDDEN, "UnrecognizedClientException", e.to_string()),
            other => LambdaError::new(StatusCode::FORBIDDEN, "InvalidSignatureException", other.to_string()),
        }
    }
}

impl From<ApiError> for LambdaError {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::BadRequest { .. } => LambdaError::invalid(message),
            ApiError::Unauthorized(_) => LambdaError::unrecognized(message),
            ApiError::NotFound(what) => LambdaError::not_found(format!("{}: {what} not found", capitalised(what))),
            ApiError::Missing { message, .. } => LambdaError::not_found(message),
            ApiError::MethodNotAllowed => LambdaError::unsupported(message),
            ApiError::Conflict(_) | ApiError::Conflicting { .. } | ApiError::NotActive(_) | ApiError::UpdateInProgress(_) | ApiError::QuotaExceeded(_) => {
                LambdaError::conflict(message)
            }
            ApiError::TooLarge(_) => LambdaError::too_large(message),
            ApiError::Throttled { retry_after_s, .. } => {
                LambdaError { retry_after_s: Some(retry_after_s), ..LambdaError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", message) }
            }
            ApiError::Unavailable(_) => {
                LambdaError { retry_after_s: Some(crate::error::UNAVAILABLE_RETRY_AFTER_S), ..LambdaError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", message) }
            }
            ApiError::Internal(detail) => LambdaError::service(detail),
        }
    }
}

impl From<voltrun_store::StoreError> for LambdaError {
    fn from(e: voltrun_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<voltrun_engine::EngineError> for LambdaError {
    fn from(e: voltrun_engine::EngineError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<voltrun_core::ValidationError> for LambdaError {
    fn from(e: voltrun_core::ValidationError) -> Self {
        ApiError::from(e).into()
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        // The model spells the member `Message` for these two, `message` for the rest.
        let key = if matches!(self.code, "ResourceNotFoundException" | "ServiceException") { "Message" } else { "message" };
        let mut body = json!({"Type": self.kind(), key: self.message});
        if self.code == "TooManyRequestsException" {
            body["Reason"] = json!("CallerRateLimitExceeded");
            if let Some(s) = self.retry_after_s {
                body["retryAfterSeconds"] = json!(s.to_string());
            }
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Some(s) = self.retry_after_s {
            h.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
