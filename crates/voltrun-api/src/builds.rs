//! Dependency builds (SPEC §10): how a create or update of a function that needs a build is
//! stored (queued with its build, or applied at once on a cache hit), and
//! `GET /api/functions/{id}/build`, the latest build, also live (`?follow=true`, SSE).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::{time, Build, Function, FunctionState, FunctionStates};
use voltrun_store::{BuildRecord, Dialect};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Query};
use crate::openapi::ErrorBody;
use crate::AppState;

/// The build route, nested under `/api/functions`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(latest))
}

/// A finished build of `f` whose tree came from the cache (inside the request).
fn cache_hit(f: &Function, base_version: i64, key: String, logs: String) -> BuildRecord {
    let now = time::now();
    let mut b = BuildRecord::queued(f, base_version, &now);
    b.started_at = Some(now);
    b.attempts = 1;
    b.finish(Ok(key), logs, false, true);
    b
}

/// Stores a new function: as it is when it needs no build; with a finished build and
/// `active` when its dependencies are in the cache; else `pending` with its build queued.
pub async fn create(st: &AppState, mut f: Function) -> ApiResult<Function> {
    if !st.engine.needs_build(&f) {
        st.store.insert_function(&f, &st.quotas).await?;
        return Ok(f);
    }
    match st.engine.cached_dependencies(&f).await {
        Some(tree) => {
            f.states = FunctionStates::default();
            st.store.insert_function_with_build(&f, &st.quotas, &cache_hit(&f, 0, tree.key.clone(), tree.logs.clone())).await?;
            st.engine.share_cached_tree(tree);
        }
        None => {
            f.states = FunctionStates::first_build();
            st.store.insert_function_with_build(&f, &st.quotas, &BuildRecord::queued(&f, 0, &time::now())).await?;
            st.engine.wake_builds();
        }
    }
    Ok(f)
}

/// Stores an update (`new` is `old` patched, its version bumped) and returns the function as
/// it now serves. A change that needs no new build is applied as always. One that does (a
/// new package or runtime of a function with dependencies):
/// - of an `active` function: applied at once on a cache hit; else queued, and the old
///   definition keeps serving with `last_update_status: in_progress` until the build ends;
/// - of a `failed` function (nothing serves): the new definition replaces it, `pending`
///   until its build ends (or `active` at once on a cache hit).
///
/// While a build is in progress, other updates are refused (409 `update_in_progress`, as
/// Lambda's `ResourceConflictException`): the build would apply over them.
pub async fn update(st: &AppState, old: &Function, mut new: Function) -> ApiResult<Function> {
    if old.states.building() {
        return Err(ApiError::UpdateInProgress("a build of this function is in progress; wait for it to end (GET /api/functions/{id}/build), then retry".into()));
    }
    let rebuild = st.engine.needs_build(&new) && (old.states.state != FunctionState::Active || st.engine.dependencies_changed(old, &new));
    if !rebuild {
        if !st.store.update_function(&new, old.version, &st.quotas).await? {
            return Err(changed_meanwhile());
        }
        st.engine.invalidate(&new.id);
        return Ok(new);
    }
    let cached = st.engine.cached_dependencies(&new).await;
    let active = old.states.state == FunctionState::Active;
    match cached {
        Some(tree) => {
            new.states = FunctionStates::default();
            let b = cache_hit(&new, if active { old.version } else { 0 }, tree.key.clone(), tree.logs.clone());
            if !st.store.update_function_with_build(&new, old.version, &st.quotas, &b).await? {
                return Err(changed_meanwhile());
            }
            st.engine.share_cached_tree(tree);
            st.engine.invalidate(&new.id);
            Ok(new)
        }
        None if active => {
            let b = BuildRecord::queued(&new, old.version, &time::now());
            if !st.store.queue_update_build(&b).await? {
                return Err(changed_meanwhile());
            }
            st.engine.wake_builds();
            let mut serving = old.clone();
            serving.states.last_update_status = voltrun_core::UpdateStatus::InProgress;
            serving.states.last_update_status_reason = None;
            Ok(serving)
        }
        None => {
            new.states = FunctionStates::first_build();
            let b = BuildRecord::queued(&new, 0, &time::now());
            if !st.store.update_function_with_build(&new, old.version, &st.quotas, &b).await? {
                return Err(changed_meanwhile());
            }
            st.engine.invalidate(&new.id);
            st.engine.wake_builds();
            Ok(new)
        }
    }
}

fn changed_meanwhile() -> ApiError {
    ApiError::Conflict("the function was changed by another request; fetch it and retry".into())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BuildQuery {
    /// `true` (or `1`, or empty): stream the build's log as Server-Sent Events until it ends.
    follow: Option<String>,
}

/// The latest dependency build of a function.
///
/// `?follow=true` streams it as Server-Sent Events: `log` events (`{"text"}`) as the build
/// writes, `lagged` (`{"missed_chunks"}`) when this reader fell behind, and one `end` event
/// whose data is the finished build.
#[utoipa::path(get, path = "/{id}/build", tag = "functions", operation_id = "get_function_build", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), BuildQuery),
    responses(
        (status = 200, description = "The build (JSON), or with ?follow=true an event stream", content((Build = "application/json"), (String = "text/event-stream"))),
        (status = 404, description = "No such function of yours, or it never had a build", body = ErrorBody),
        (status = 429, description = "`throttled`: too many open log streams for this account", body = ErrorBody),
    ))]
async fn latest(State(st): State<AppState>, caller: Caller, Path(id): Path<String>, Query(q): Query<BuildQuery>) -> ApiResult<Response> {
    let f = crate::functions::owned(&st, &caller, &id).await?;
    let b = st.store.latest_build(&caller.user_id, &f.id).await?.ok_or(ApiError::NotFound("build"))?;
    let follow = matches!(q.follow.as_deref(), Some("true") | Some("1") | Some(""));
    if !follow {
        return Ok(axum::Json(b.to_api()).into_response());
    }
    let per_user = st.log_streams.per_user;
    let slot = st
        .engine
        .open_log_stream(&caller.user_id, per_user)
        .ok_or_else(|| ApiError::Throttled { message: format!("too many open log streams for this account (at most {per_user}); close one first"), retry_after_s: 1 })?;
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let gone = tx.clone();
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            _ = gone.closed() => {}
            _ = follow_build(st, b, tx) => {}
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Streams a build's log until it ends, then the `end` event with the build. Live from this
/// node's build when it runs here; otherwise from the progress the building node stores
/// (read every second on PostgreSQL). Gives up after the longest build plus its queueing.
async fn follow_build(st: AppState, mut b: BuildRecord, tx: mpsc::Sender<Event>) {
    let send = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30 * 60);
    let poll = match st.store.dialect() {
        Dialect::Postgres => Duration::from_secs(1),
        Dialect::Sqlite => Duration::from_secs(5),
    };
    let mut watch = st.engine.watch_execution(&b.id);
    // Bytes of the current attempt's log already sent.
    let mut sent = 0usize;
    let unsent = |logs: &str, sent: &mut usize| -> Option<String> {
        if logs.len() < *sent {
            *sent = 0; // a new attempt started over
        }
        let rest = logs.get(*sent..).filter(|r| !r.is_empty())?.to_string();
        *sent = logs.len();
        Some(rest)
    };
    while !b.to_api().status.is_terminal() && tokio::time::Instant::now() < give_up {
        if let Some((so_far, mut live)) = st.engine.subscribe_build_logs(&b.id) {
            if let Some(text) = unsent(&so_far, &mut sent) {
                if tx.send(send("log", json!({"text": text}))).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(text) => {
                        sent += text.len();
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
        match st.store.build_by_id(&b.id).await {
            Ok(Some(now)) => b = now,
            _ => break,
        }
        if b.to_api().status.is_terminal() {
            break;
        }
        if let Some(text) = unsent(&b.logs, &mut sent) {
            if tx.send(send("log", json!({"text": text}))).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::time::sleep_until(give_up) => {}
        }
    }
    if let Some(text) = unsent(&b.logs, &mut sent) {
        let _ = tx.send(send("log", json!({"text": text}))).await;
    }
    let _ = tx.send(send("end", serde_json::to_value(b.to_api()).expect("a build serialises"))).await;
}
