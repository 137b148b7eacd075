//! Invoke: `POST /2015-03-31/functions/{FunctionName}/invocations`. `RequestResponse` runs
//! the function as the native execute does and answers its result as the body;
//! `Event` queues it (202, at most 256 KB of payload); `DryRun` checks that it could run
//! (204). A handler's error is a 200 with `X-Amz-Function-Error: Unhandled` and
//! `{errorMessage, errorType, stackTrace}`, as AWS sends it. `LogType: Tail` returns the last
//! 4 KB of the run's log, between AWS's START and END/REPORT lines, base64 in
//! `X-Amz-Log-Result`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};
use voltrun_core::execution::{ErrorKind, ExecutionStatus};
use voltrun_core::{Execution, Trigger};

use super::errors::{LambdaError, LambdaResult};
use super::functions::resolve;
use super::{Signed, EVENT_PAYLOAD_BYTES};
use crate::AppState;

/// Bytes of log `LogType: Tail` returns, as AWS's.
pub const TAIL_BYTES: usize = 4096;

/// The Invoke operation.
pub async fn invoke(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let kind = req.header("x-amz-invocation-type").unwrap_or("RequestResponse");
    let tail = match req.header("x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(_) => return Err(LambdaError::invalid("X-Amz-Log-Type must be None or Tail")),
    };
    if !matches!(kind, "RequestResponse" | "Event" | "DryRun") {
        return Err(LambdaError::invalid("X-Amz-Invocation-Type must be RequestResponse, Event or DryRun"));
    }
    if kind == "Event" && req.body.len() > EVENT_PAYLOAD_BYTES {
        return Err(LambdaError::too_large(format!("Request must be smaller than {EVENT_PAYLOAD_BYTES} bytes for the InvokeAsync operation")));
    }
    let t = resolve(st, req, raw).await?;
    let event = crate::functions::event_of(&req.body).map_err(|e| LambdaError::bad_content(format!("Could not parse request body into json: {e}")))?;
    if kind == "DryRun" {
        st.engine.check_active(&t.f).map_err(LambdaError::from)?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    crate::functions::check_invoke_rate(st, &req.caller.user_id)?;
    if kind == "Event" {
        let (exec, _) = st.engine.enqueue_qualified(&t.latest, t.run_as.as_ref(), event, None).await?;
        crate::record_execution(&exec.id);
        let mut resp = StatusCode::ACCEPTED.into_response();
        resp.headers_mut().insert("x-amzn-requestid", header(&exec.id));
        return Ok(resp);
    }
    let exec = st.engine.execute_qualified(&t.latest, t.run_as.as_ref(), Trigger::Api, event, None).await?;
    crate::record_execution(&exec.id);
    // Unqualified (or `$LATEST`) runs report `$LATEST`, as AWS's; a version or an alias, the
    // number that ran (an alias's split may pick its extra version).
    let executed = if t.run_as.is_none() { "$LATEST".to_string() } else { exec.function_version.to_string() };
    answer(&exec, &executed, tail, t.f.memory)
}

fn header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The response of a finished synchronous run.
fn answer(exec: &Execution, executed: &str, tail: bool, memory: u32) -> LambdaResult<Response> {
    let (body, function_error) = match (&exec.status, &exec.error) {
        (ExecutionStatus::Success, _) => (exec.output.clone().unwrap_or(Value::Null), false),
        (_, Some(err)) => match err.kind {
            ErrorKind::Internal | ErrorKind::Interrupted => return Err(LambdaError::service(format!("execution {} failed: {}", exec.id, err.message))),
            kind => (error_payload(kind, &err.message, err.stack.as_deref()), true),
        },
        (status, None) => return Err(LambdaError::service(format!("execution {} ended {status:?} without an error", exec.id))),
    };
    let bytes = serde_json::to_vec(&body).map_err(LambdaError::service)?;
    let mut resp = (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response();
    let h = resp.headers_mut();
    h.insert("x-amz-executed-version", header(executed));
    h.insert("x-amzn-requestid", header(&exec.id));
    if function_error {
        h.insert("x-amz-function-error", HeaderValue::from_static("Unhandled"));
    }
    if tail {
        let log = tail_log(exec, executed, memory);
        h.insert("x-amz-log-result", header(&base64::engine::general_purpose::STANDARD.encode(log)));
    }
    Ok(resp)
}

/// `{errorMessage, errorType, stackTrace}` of a failed run. Our runtimes report a handler's
/// exception as `Type: message`; the type becomes `errorType`. Platform failures take AWS's
/// names (`Sandbox.Timedout`, `Runtime.OutOfMemory`, `Runtime.Error`).
pub fn error_payload(kind: ErrorKind, message: &str, stack: Option<&str>) -> Value {
    let (error_type, error_message) = match kind {
        ErrorKind::Timeout => ("Sandbox.Timedout".to_string(), message.to_string()),
        ErrorKind::OutOfMemory => ("Runtime.OutOfMemory".to_string(), message.to_string()),
        ErrorKind::RuntimeError => ("Runtime.Error".to_string(), message.to_string()),
        _ => match message.split_once(": ") {
            Some((t, m)) if !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.$".contains(&b)) => (t.to_string(), m.to_string()),
            _ => ("Error".to_string(), message.to_string()),
        },
    };
    let trace: Vec<&str> = stack.unwrap_or("").lines().filter(|l| !l.trim().is_empty()).collect();
    json!({"errorMessage": error_message, "errorType": error_type, "stackTrace": trace})
}

/// The run's log between AWS's START and END/REPORT lines, cut to its last [`TAIL_BYTES`]
/// (on a character boundary). `Max Memory Used` is left out: VoltRun does not measure it.
pub fn tail_log(exec: &Execution, executed: &str, memory: u32) -> String {
    let id = &exec.id;
    let ms = exec.duration_ms.unwrap_or(0.0);
    let mut log = format!("START RequestId: {id} Version: {executed}\n{}", exec.logs);
    if !log.ends_with('\n') {
        log.push('\n');
    }
    log.push_str(&format!("END RequestId: {id}\nREPORT RequestId: {id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory} MB\t\n", ms.ceil() as u64));
    if log.len() <= TAIL_BYTES {
        return log;
    }
    let mut start = log.len() - TAIL_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_exception_splits_into_type_and_message() {
        let v = error_payload(ErrorKind::HandlerError, "ValueError: boom: twice", Some("Traceback\n  line 1\n"));
        assert_eq!(v, json!({"errorMessage": "boom: twice", "errorType": "ValueError", "stackTrace": ["Traceback", "  line 1"]}));
        assert_eq!(error_payload(ErrorKind::HandlerError, "a plain string thrown", None)["errorType"], "Error");
        assert_eq!(error_payload(ErrorKind::Timeout, "timed out after 3 s", None)["errorType"], "Sandbox.Timedout");
    }
}
