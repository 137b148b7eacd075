//! Executions: list with filters, one record, and its logs (also live, as Server-Sent Events;
//! each user may hold a few such streams open, and a stream's task ends with its client).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::{Execution, ExecutionStatus, Trigger};
use voltrun_engine::{Engine, LogStreamSlot};
use voltrun_store::{Dialect, ExecutionFilter};

use crate::error::{ApiError, ApiResult};
use crate::extract::{page_of, Caller, Paged, Query};
use crate::openapi::ErrorBody;
use crate::AppState;

/// Routes under `/api/executions`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(read)).routes(routes!(logs))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this function's runs (its id or name).
    function_id: Option<String>,
    /// Only runs of this function version (a number from 1).
    function_version: Option<String>,
    /// `pending`, `running`, `success` or `failed`.
    status: Option<String>,
    /// `api`, `async`, `http`, `schedule` or `test`.
    trigger: Option<String>,
    /// Items per page: 1 to 500 (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List your executions, newest first.
#[utoipa::path(get, path = "/", tag = "executions", operation_id = "list_executions", security(("bearer" = []), ("apiKey" = [])), params(ListQuery),
    responses((status = 200, description = "A page of executions", body = Paged<Execution>)))]
async fn list(State(st): State<AppState>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<axum::Json<Paged<Execution>>> {
    let (limit, before) = crate::extract::Page { limit: q.limit, cursor: q.cursor }.resolve()?;
    let status = q.status.map(|s| ExecutionStatus::parse(&s).ok_or_else(|| ApiError::bad("invalid_query", "status must be pending, running, success or failed"))).transpose()?;
    let trigger = q.trigger.map(|s| Trigger::parse(&s).ok_or_else(|| ApiError::bad("invalid_query", "trigger must be api, async, http, schedule or test"))).transpose()?;
    // Accept a function's name as well as its id.
    let function_id = match q.function_id {
        Some(f) => match st.store.get_function(&caller.user_id, &f).await? {
            Some(func) => Some(func.id),
            None => Some(f),
        },
        None => None,
    };
    let function_version = match q.function_version.as_deref() {
        None | Some("") => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return Err(ApiError::bad("invalid_query", "function_version must be a version number from 1")),
        },
    };
    let filter = ExecutionFilter { function_id, function_version, status, trigger, before };
    let items = st.store.list_executions(&caller.user_id, &filter, limit).await?;
    Ok(axum::Json(page_of(items, limit, |e| &e.id)))
}

async fn owned(st: &AppState, caller: &Caller, id: &str) -> ApiResult<Execution> {
    st.store.get_execution(&caller.user_id, id).await?.ok_or(ApiError::NotFound("execution"))
}

/// One execution record.
#[utoipa::path(get, path = "/{id}", tag = "executions", operation_id = "get_execution", security(("bearer" = []), ("apiKey" = [])), params(("id" = String, Path, description = "The execution's id")),
    responses((status = 200, description = "The execution", body = Execution), (status = 404, description = "No such execution of yours", body = ErrorBody)))]
async fn read(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<axum::Json<Execution>> {
    let exec = owned(&st, &caller, &id).await?;
    crate::record_execution(&exec.id);
    Ok(axum::Json(exec))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// `true` (or `1`, or empty): stream the log as Server-Sent Events until the run ends.
    follow: Option<String>,
}

/// `GET /api/executions/{id}/logs` without `?follow`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Logs {
    /// Everything the run wrote (stdout and stderr), capped.
    pub logs: String,
    /// True when the log was cut at the cap.
    pub truncated: bool,
}

/// A run's log.
///
/// `?follow=true` streams it as Server-Sent Events: `log` events (`{"text"}`) as the run
/// writes, `lagged` (`{"missed_chunks"}`) when this reader fell behind, and one `end` event
/// (`{"status", "logs_truncated"}`) when it is over.
#[utoipa::path(get, path = "/{id}/logs", tag = "executions", operation_id = "get_execution_logs", security(("bearer" = []), ("apiKey" = [])), params(("id" = String, Path, description = "The execution's id"), LogsQuery),
    responses(
        (status = 200, description = "The log (JSON), or with ?follow=true an event stream",
            content((Logs = "application/json"), (String = "text/event-stream"))),
        (status = 404, description = "No such execution of yours", body = ErrorBody),
        (status = 429, description = "`throttled`: too many open log streams for this account", body = ErrorBody),
    ))]
async fn logs(State(st): State<AppState>, caller: Caller, Path(id): Path<String>, Query(q): Query<LogsQuery>) -> ApiResult<Response> {
    let exec = owned(&st, &caller, &id).await?;
    crate::record_execution(&exec.id);
    let follow = matches!(q.follow.as_deref(), Some("true") | Some("1") | Some(""));
    if !follow {
        return Ok(axum::Json(Logs { logs: exec.logs, truncated: exec.logs_truncated }).into_response());
    }
    let slot = st.log_streams.open(&caller.user_id, &st.engine).ok_or_else(|| ApiError::Throttled {
        message: format!("too many open log streams for this account (at most {}); close one first", st.log_streams.per_user),
        retry_after_s: 1,
    })?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    // The stream's task ends with its client: the body (and with it `rx`) is dropped when the
    // connection goes, which resolves `closed()` whatever the follower is waiting on.
    let gone = tx.clone();
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            _ = gone.closed() => {}
            _ = follow_logs(st, exec, tx) => {}
        }
    });
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Open log streams per user, capped: a stream holds a task and a connection for as long as
/// its run lasts (up to the longest timeout), so one user's streams are bounded. The engine
/// keeps the count ([`Engine::open_log_stream`]).
pub struct LogStreams {
    /// Streams one user may have open at once.
    pub per_user: usize,
}

impl LogStreams {
    /// At most `per_user` open streams per user.
    pub fn new(per_user: usize) -> LogStreams {
        LogStreams { per_user }
    }

    /// A place for one more of the user's streams; None at the cap.
    fn open(&self, user_id: &str, engine: &Engine) -> Option<LogStreamSlot> {
        engine.open_log_stream(user_id, self.per_user)
    }
}

/// How often a follower reads a run it was not told about: runs on other nodes (PostgreSQL)
/// end without this node's engine knowing. On SQLite every run is this node's, and the read
/// is only a safety net.
fn slow_poll(st: &AppState) -> Duration {
    match st.store.dialect() {
        Dialect::Postgres => Duration::from_secs(2),
        Dialect::Sqlite => Duration::from_secs(30),
    }
}

/// Streams a run's log as `log` events (`{"text": …}`) until it ends, then one `end` event
/// (`{"status", "logs_truncated"}`). Waits for a pending run to start; gives up after the
/// function's longest possible run plus a margin. Waits are pushed by the engine (the run
/// started here, its end was stored), with a slow read for runs elsewhere: no polling.
async fn follow_logs(st: AppState, mut exec: Execution, tx: mpsc::Sender<Event>) {
    let send = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let give_up = tokio::time::Instant::now() + Duration::from_secs(900 + 120);
    // Watched before the run is looked at, so a change after the look wakes the wait.
    let mut watch = st.engine.watch_execution(&exec.id);
    let poll = slow_poll(&st);
    let mut sent_live = false;
    while !exec.status.is_terminal() && tokio::time::Instant::now() < give_up {
        if let Some((so_far, mut live)) = st.engine.subscribe_logs(&exec.id) {
            sent_live = true;
            if !so_far.is_empty() && tx.send(send("log", json!({"text": so_far}))).await.is_err() {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(text) => {
                        if tx.send(send("log", json!({"text": text}))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(send("lagged", json!({"missed_chunks": n}))).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        match st.store.execution_by_id(&exec.id).await {
            Ok(Some(e)) => exec = e,
            _ => break,
        }
        if exec.status.is_terminal() {
            break;
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::time::sleep_until(give_up) => {}
        }
    }
    if !sent_live && !exec.logs.is_empty() {
        let _ = tx.send(send("log", json!({"text": exec.logs}))).await;
    }
    let _ = tx.send(send("end", json!({"status": exec.status, "logs_truncated": exec.logs_truncated}))).await;
}
