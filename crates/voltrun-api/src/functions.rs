//! Functions: CRUD, synchronous and async execution, and test runs of unsaved code.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::Value;
use voltrun_core::{id, time, Function, FunctionPatch, NewFunction, Trigger};

use crate::error::{ApiError, ApiResult};
use crate::extract::{page_of, parse_json, Body, Caller, Json, Page, Query};
use crate::AppState;

/// Routes under `/api/functions`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(create))
        // A function may be called `test`: its id-or-name routes still reach it here.
        .route("/test", post(test).get(read_test).put(update_test).delete(remove_test))
        .route("/{id}", get(read).put(update).delete(remove))
        .route("/{id}/execute", post(execute))
}

/// One of the caller's functions by id or name, or 404.
pub async fn owned(st: &AppState, caller: &Caller, id_or_name: &str) -> ApiResult<Function> {
    st.store.get_function(&caller.user_id, id_or_name).await?.ok_or(ApiError::NotFound("function"))
}

/// A page of the caller's functions without their code (`code_bytes` says how much there
/// is): `GET /api/functions/{id}` has it.
async fn list(State(st): State<AppState>, caller: Caller, Query(p): Query<Page>) -> ApiResult<axum::Json<Value>> {
    let (limit, before) = p.resolve()?;
    let items = st.store.list_functions(&caller.user_id, before.as_deref(), limit).await?;
    Ok(axum::Json(page_of(items, limit, |f| &f.id)))
}

async fn create(State(st): State<AppState>, caller: Caller, Json(b): Json<NewFunction>) -> ApiResult<(StatusCode, axum::Json<Function>)> {
    let f = b.into_function(id::new_id("fn_"), caller.user_id, time::now())?;
    st.store.insert_function(&f, &st.quotas).await?;
    Ok((StatusCode::CREATED, axum::Json(f)))
}

async fn read_test(st: State<AppState>, caller: Caller) -> ApiResult<axum::Json<Function>> {
    read(st, caller, Path("test".into())).await
}

async fn update_test(st: State<AppState>, caller: Caller, patch: Json<FunctionPatch>) -> ApiResult<axum::Json<Function>> {
    update(st, caller, Path("test".into()), patch).await
}

async fn remove_test(st: State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    remove(st, caller, Path("test".into())).await
}

async fn read(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<axum::Json<Function>> {
    Ok(axum::Json(owned(&st, &caller, &id).await?))
}

async fn update(State(st): State<AppState>, caller: Caller, Path(id): Path<String>, Json(patch): Json<FunctionPatch>) -> ApiResult<axum::Json<Function>> {
    let old = owned(&st, &caller, &id).await?;
    let (new, changed) = patch.apply(&old, time::now())?;
    if changed {
        if !st.store.update_function(&new, old.version, &st.quotas).await? {
            return Err(ApiError::Conflict("the function was changed by another request; fetch it and retry".into()));
        }
        st.engine.invalidate(&new.id);
    }
    Ok(axum::Json(new))
}

async fn remove(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let f = owned(&st, &caller, &id).await?;
    st.store.delete_function(&caller.user_id, &f.id).await?;
    st.engine.invalidate(&f.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteQuery {
    #[serde(default, rename = "async")]
    is_async: Option<String>,
}

/// Refuses with 429 when the caller invokes faster than the per-user rate.
pub fn check_invoke_rate(st: &AppState, user_id: &str) -> ApiResult<()> {
    st.limits.invoke.take(user_id).map_err(|retry_after_s| {
        st.engine.metrics().throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::Throttled { message: "invocation rate limit exceeded for this account".into(), retry_after_s }
    })
}

/// How deep an event may nest. The engine reads results with serde_json's limit of 128
/// levels and wraps them in an envelope, so an event must stay well below it to come back.
const MAX_EVENT_DEPTH: usize = 100;

/// The event of an execute request: the body as JSON, `{}` when empty.
fn event_of(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    check_depth(parse_json(body)?)
}

/// Refuses events nested deeper than [`MAX_EVENT_DEPTH`].
fn check_depth(v: Value) -> ApiResult<Value> {
    let mut stack = vec![(&v, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_EVENT_DEPTH {
            return Err(ApiError::bad("validation_failed", format!("the event nests deeper than {MAX_EVENT_DEPTH} levels")));
        }
        match node {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    Ok(v)
}

/// The `Idempotency-Key` header: at most 255 visible ASCII characters.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(k.to_string())),
        _ => Err(ApiError::bad("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters")),
    }
}

async fn execute(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ExecuteQuery>,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let is_async = match q.is_async.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(_) => return Err(ApiError::bad("invalid_query", "async must be true or false")),
    };
    let event = event_of(&body)?;
    let key = idempotency_key(&headers)?;
    let f = owned(&st, &caller, &id).await?;
    check_invoke_rate(&st, &caller.user_id)?;
    if is_async {
        let (exec, _new) = st.engine.enqueue(&f, event, key).await?;
        let location = format!("/api/executions/{}", exec.id);
        return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(exec)).into_response());
    }
    let exec = st.engine.execute(&f, Trigger::Api, event, key).await?;
    Ok(axum::Json(exec).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    runtime: String,
    code: String,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    memory: Option<u32>,
    #[serde(default)]
    timeout: Option<u32>,
    #[serde(default)]
    env: Option<std::collections::BTreeMap<String, String>>,
}

async fn test(State(st): State<AppState>, caller: Caller, Json(b): Json<TestBody>) -> ApiResult<axum::Json<Value>> {
    let draft = NewFunction {
        name: "test".into(),
        description: None,
        runtime: b.runtime,
        code: b.code,
        handler: b.handler,
        memory: b.memory,
        timeout: b.timeout,
        env: b.env,
        route: None,
        public: None,
        schedule: None,
        max_retries: None,
        egress: None,
    };
    let f = draft.into_function(id::new_id("test_"), caller.user_id.clone(), time::now())?;
    check_invoke_rate(&st, &caller.user_id)?;
    let event = check_depth(b.event.unwrap_or(Value::Object(Default::default())))?;
    let exec = st.engine.test_run(&f, event).await?;
    Ok(axum::Json(serde_json::to_value(exec).expect("an execution serialises")))
}
