//! Executions: list with filters, one record, and its logs (also live, as Server-Sent Events).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use voltrun_core::{Execution, ExecutionStatus, Trigger};
use voltrun_store::ExecutionFilter;

use crate::error::{ApiError, ApiResult};
use crate::extract::{page_of, Caller, Query};
use crate::AppState;

/// Routes under `/api/executions`.
pub fn router() -> Router<AppState> {
    Router::new().route("/", get(list)).route("/{id}", get(read)).route("/{id}/logs", get(logs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    function_id: Option<String>,
    status: Option<String>,
    trigger: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(State(st): State<AppState>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<axum::Json<Value>> {
    let (limit, before) = crate::extract::Page { limit: q.limit, cursor: q.cursor }.resolve()?;
    let status = q
        .status
        .map(|s| ExecutionStatus::parse(&s).ok_or_else(|| ApiError::bad("invalid_query", "status must be pending, running, success or failed")))
        .transpose()?;
    let trigger = q
        .trigger
        .map(|s| Trigger::parse(&s).ok_or_else(|| ApiError::bad("invalid_query", "trigger must be api, async, http, schedule or test")))
        .transpose()?;
    // Accept a function's name as well as its id.
    let function_id = match q.function_id {
        Some(f) => match st.store.get_function(&caller.user_id, &f).await? {
            Some(func) => Some(func.id),
            None => Some(f),
        },
        None => None,
    };
    let filter = ExecutionFilter { function_id, status, trigger, before };
    let items = st.store.list_executions(&caller.user_id, &filter, limit).await?;
    Ok(axum::Json(page_of(items, limit, |e| &e.id)))
}

async fn owned(st: &AppState, caller: &Caller, id: &str) -> ApiResult<Execution> {
    st.store.get_execution(&caller.user_id, id).await?.ok_or(ApiError::NotFound("execution"))
}

async fn read(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<axum::Json<Execution>> {
    Ok(axum::Json(owned(&st, &caller, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    follow: Option<String>,
}

async fn logs(State(st): State<AppState>, caller: Caller, Path(id): Path<String>, Query(q): Query<LogsQuery>) -> ApiResult<Response> {
    let exec = owned(&st, &caller, &id).await?;
    let follow = matches!(q.follow.as_deref(), Some("true") | Some("1") | Some(""));
    if !follow {
        return Ok(axum::Json(json!({"logs": exec.logs, "truncated": exec.logs_truncated})).into_response());
    }
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(follow_logs(st, exec, tx));
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Streams a run's log as `log` events (`{"text": …}`) until it ends, then one `end` event
/// (`{"status", "logs_truncated"}`). Waits for a pending run to start; gives up after the
/// function's longest possible run plus a margin.
async fn follow_logs(st: AppState, mut exec: Execution, tx: mpsc::Sender<Event>) {
    let send = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let give_up = tokio::time::Instant::now() + Duration::from_secs(900 + 120);
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
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match st.store.execution_by_id(&exec.id).await {
            Ok(Some(e)) => exec = e,
            _ => break,
        }
    }
    if !sent_live && !exec.logs.is_empty() {
        let _ = tx.send(send("log", json!({"text": exec.logs}))).await;
    }
    let _ = tx.send(send("end", json!({"status": exec.status, "logs_truncated": exec.logs_truncated}))).await;
}
