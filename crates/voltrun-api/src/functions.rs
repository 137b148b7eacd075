//! Functions: CRUD, synchronous and async execution, and test runs of unsaved code.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::{id, time, Execution, Function, FunctionPatch, NewFunction, Trigger};

use crate::error::{ApiError, ApiResult};
use crate::extract::{page_of, parse_json, Body, Caller, Json, Page, Paged, Query};
use crate::openapi::ErrorBody;
use crate::AppState;

/// The largest body of a function create or update: a 50 MiB zip in base64 (4/3 of it)
/// and the other fields. Every other route keeps the 6 MiB limit.
pub const PACKAGE_BODY_BYTES: usize = 72 << 20;

/// Routes under `/api/functions`.
pub fn router() -> OpenApiRouter<AppState> {
    let writes = OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, update, remove)).layer(axum::extract::DefaultBodyLimit::max(PACKAGE_BODY_BYTES));
    OpenApiRouter::new()
        .merge(writes)
        // A function may be called `test`: its id-or-name routes still reach it here.
        .routes(routes!(test, read_test, update_test, remove_test))
        .routes(routes!(execute))
        .routes(routes!(package))
}

/// One of the caller's functions by id or name, or 404.
pub async fn owned(st: &AppState, caller: &Caller, id_or_name: &str) -> ApiResult<Function> {
    st.store.get_function(&caller.user_id, id_or_name).await?.ok_or(ApiError::NotFound("function"))
}

/// List your functions.
///
/// A page of the caller's functions, newest first, without their code (`code_bytes` says how
/// much there is): `GET /api/functions/{id}` has it.
#[utoipa::path(get, path = "/", tag = "functions", operation_id = "list_functions", security(("bearer" = []), ("apiKey" = [])), params(Page),
    responses((status = 200, description = "A page of functions", body = Paged<voltrun_core::FunctionSummary>)))]
async fn list(State(st): State<AppState>, caller: Caller, Query(p): Query<Page>) -> ApiResult<axum::Json<Paged<voltrun_core::FunctionSummary>>> {
    let (limit, before) = p.resolve()?;
    let items = st.store.list_functions(&caller.user_id, before.as_deref(), limit).await?;
    Ok(axum::Json(page_of(items, limit, |f| &f.id)))
}

/// Create a function.
///
/// Exactly one of `code` (one entry file), `files` (`{"path": "text"}`, at most 1,000) or
/// `zip` (base64, at most 50 MiB, 250 MiB unpacked). For `files` and `zip`, `handler` is
/// `module.function` (default `main.handler` for Python, `index.handler` for Node). A refused
/// package is a 400 (413 when too large) naming the entry at fault.
#[utoipa::path(post, path = "/", tag = "functions", operation_id = "create_function", security(("bearer" = []), ("apiKey" = [])), request_body = NewFunction,
    responses(
        (status = 201, description = "The new function", body = Function),
        (status = 400, description = "`validation_failed`: a field is invalid (a refused package names the entry)", body = ErrorBody),
        (status = 409, description = "`conflict`: the name or route is taken; `quota_exceeded`: past the account's function or code-size quota", body = ErrorBody),
        (status = 413, description = "The code, the package or another field is too large", body = ErrorBody),
        (status = 429, description = "`throttled`: too many packages are being checked on this server (see Retry-After)", body = ErrorBody),
    ))]
async fn create(State(st): State<AppState>, caller: Caller, Json(b): Json<NewFunction>) -> ApiResult<(StatusCode, axum::Json<Function>)> {
    // A package is decoded and checked (inflated, up to 250 MiB) off the async workers, a
    // few at a time on the whole server; the slot is held until it is stored.
    let _slot = if b.files.is_some() || b.zip.is_some() { Some(package_write_slot().await?) } else { None };
    let user = caller.user_id;
    let f = blocking(move || b.into_function(id::new_id("fn_"), user, time::now())).await??;
    crate::layers::check_function_layers(&st, &f).await?;
    crate::secrets::check_function_secrets(&st, &f.user_id, &f.secrets).await?;
    crate::versions::check_schedule_qualifier(&st, &f).await?;
    let f = crate::builds::create(&st, f).await?;
    Ok((StatusCode::CREATED, axum::Json(f)))
}

/// The function named `test`.
///
/// `GET /api/functions/{id}` with `test` as the name (the path is taken by test runs).
#[utoipa::path(get, path = "/test", tag = "functions", operation_id = "get_function_named_test", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "The function", body = Function), (status = 404, description = "No function named test", body = ErrorBody)))]
async fn read_test(st: State<AppState>, caller: Caller) -> ApiResult<axum::Json<Function>> {
    read(st, caller, Path("test".into())).await
}

/// Update the function named `test`.
#[utoipa::path(put, path = "/test", tag = "functions", operation_id = "update_function_named_test", security(("bearer" = []), ("apiKey" = [])), request_body = FunctionPatch,
    responses(
        (status = 200, description = "The updated function", body = Function),
        (status = 404, description = "No function named test", body = ErrorBody),
        (status = 409, description = "Changed by another request, a name or route taken, or past a quota", body = ErrorBody),
    ))]
async fn update_test(st: State<AppState>, caller: Caller, patch: Json<FunctionPatch>) -> ApiResult<axum::Json<Function>> {
    update(st, caller, Path("test".into()), patch).await
}

/// Delete the function named `test`.
#[utoipa::path(delete, path = "/test", tag = "functions", operation_id = "delete_function_named_test", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No function named test", body = ErrorBody)))]
async fn remove_test(st: State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    remove(st, caller, Path("test".into())).await
}

/// One function, by id or name, with its code.
#[utoipa::path(get, path = "/{id}", tag = "functions", operation_id = "get_function", security(("bearer" = []), ("apiKey" = [])), params(("id" = String, Path, description = "The function's id or name")),
    responses((status = 200, description = "The function", body = Function), (status = 404, description = "No such function of yours", body = ErrorBody)))]
async fn read(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<axum::Json<Function>> {
    Ok(axum::Json(owned(&st, &caller, &id).await?))
}

/// Update any subset of a function's fields.
///
/// `description`, `route` and `schedule` may be `null` to clear them. One of `code`, `files`
/// or `zip` replaces the code or package. Bumps `version` when anything changed.
#[utoipa::path(put, path = "/{id}", tag = "functions", operation_id = "update_function", security(("bearer" = []), ("apiKey" = [])), params(("id" = String, Path, description = "The function's id or name")), request_body = FunctionPatch,
    responses(
        (status = 200, description = "The updated function", body = Function),
        (status = 404, description = "No such function of yours", body = ErrorBody),
        (status = 409, description = "Changed by another request, a name or route taken, or past a quota", body = ErrorBody),
        (status = 413, description = "The code, the package or another field is too large", body = ErrorBody),
        (status = 429, description = "`throttled`: too many packages are being checked on this server (see Retry-After)", body = ErrorBody),
    ))]
async fn update(State(st): State<AppState>, caller: Caller, Path(id): Path<String>, Json(patch): Json<FunctionPatch>) -> ApiResult<axum::Json<Function>> {
    let old = owned(&st, &caller, &id).await?;
    let _slot = if patch.files.is_some() || patch.zip.is_some() { Some(package_write_slot().await?) } else { None };
    let (new, changed, old) = blocking(move || patch.apply(&old, time::now()).map(|(new, changed)| (new, changed, old))).await??;
    if !changed {
        return Ok(axum::Json(new));
    }
    if new.secrets != old.secrets {
        crate::secrets::check_function_secrets(&st, &new.user_id, &new.secrets).await?;
    }
    crate::layers::check_function_layers(&st, &new).await?;
    if new.schedule_qualifier != old.schedule_qualifier {
        crate::versions::check_schedule_qualifier(&st, &new).await?;
    }
    Ok(axum::Json(crate::builds::update(&st, &old, new).await?))
}

/// A package function's zip.
///
/// The stored archive: the upload of a `zip` function, the canonical zip of a `files` one.
#[utoipa::path(get, path = "/{id}/package", tag = "functions", operation_id = "get_function_package", security(("bearer" = []), ("apiKey" = [])), params(("id" = String, Path, description = "The function's id or name")),
    responses(
        (status = 200, description = "The package", content_type = "application/zip", body = Vec<u8>),
        (status = 404, description = "No such function of yours, or a `code` function (no package)", body = ErrorBody),
    ))]
async fn package(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let f = owned(&st, &caller, &id).await?;
    let Some(p) = &f.package else { return Err(ApiError::NotFound("package")) };
    let size = st.store.blob_size(&p.sha256).await?.ok_or_else(|| ApiError::Internal(format!("the package {} of {} is missing from the store", p.sha256, f.id)))?;
    let disposition = format!("attachment; filename=\"{}.zip\"", f.name);
    let body = axum::body::Body::from_stream(blob_stream(st.store.clone(), p.sha256.clone(), size));
    Ok(([(header::CONTENT_TYPE, "application/zip".to_string()), (header::CONTENT_DISPOSITION, disposition), (header::CONTENT_LENGTH, size.to_string())], body).into_response())
}

/// The blob `sha` (of `size` bytes) as a stream of its stored chunks, one read from the
/// store at a time (never the whole zip in memory). The last chunk goes out only once the
/// bytes matched the SHA-256; a missing chunk or a mismatch ends the stream with an error
/// (the client sees a cut response, never wrong bytes as a whole one).
fn blob_stream(store: voltrun_store::Store, sha: String, size: u64) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    use sha2::Digest;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let fail = |what: String| Err(std::io::Error::other(format!("package {sha}: {what}")));
        let mut hasher = sha2::Sha256::new();
        let (mut n, mut seq) = (0u64, 0u64);
        let mut held: Option<Vec<u8>> = None;
        while n < size {
            let data = match store.blob_chunk(&sha, seq).await {
                Ok(Some(d)) if !d.is_empty() => d,
                Ok(_) => {
                    let _ = tx.send(fail(format!("chunk {seq} is missing"))).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(err = %e, %sha, "reading a package chunk failed");
                    let _ = tx.send(fail("reading it failed".into())).await;
                    return;
                }
            };
            hasher.update(&data);
            n += data.len() as u64;
            seq += 1;
            if let Some(prev) = held.replace(data) {
                if tx.send(Ok(prev.into())).await.is_err() {
                    return; // the client went away
                }
            }
        }
        let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if n != size || got != sha {
            tracing::error!(%sha, "a stored package does not match its SHA-256");
            let _ = tx.send(fail("the stored bytes do not match it".into())).await;
            return;
        }
        if let Some(last) = held {
            let _ = tx.send(Ok(last.into())).await;
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// How many package writes (create, update, layer upload with a `files` map or a zip) the
/// server decodes and checks at once: each holds up to ~250 MiB while it inflates the zip.
pub const PACKAGE_WRITES_AT_ONCE: usize = 3;

/// How long a package write waits for a slot before it is refused with 429.
const PACKAGE_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A slot of the server's package writes (see [`PACKAGE_WRITES_AT_ONCE`]), or 429 after
/// waiting [`PACKAGE_WRITE_WAIT`] for one.
pub(crate) async fn package_write_slot() -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(PACKAGE_WRITES_AT_ONCE))).clone();
    match tokio::time::timeout(PACKAGE_WRITE_WAIT, slots.acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::Throttled { message: "too many package uploads are being checked on this server; retry shortly".into(), retry_after_s: 5 }),
    }
}

/// Runs CPU-bound request work (decoding and checking a package) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal(format!("a package check panicked: {e}")))
}

/// Delete a function.
#[utoipa::path(delete, path = "/{id}", tag = "functions", operation_id = "delete_function", security(("bearer" = []), ("apiKey" = [])), params(("id" = String, Path, description = "The function's id or name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such function of yours", body = ErrorBody)))]
async fn remove(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let f = owned(&st, &caller, &id).await?;
    // Its builds go with it (the store's cascade); one running here stops now, one on
    // another node at that node's next lease heartbeat.
    st.store.delete_function(&caller.user_id, &f.id).await?;
    st.engine.cancel_builds(&f.id);
    st.engine.invalidate(&f.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExecuteQuery {
    /// `true` (or `1`, or empty) queues the run and answers 202 at once; `false` (default)
    /// waits for the result.
    #[serde(default, rename = "async")]
    is_async: Option<String>,
    /// A version number, `latest` or an alias (as `{name}:{qualifier}` in the path; both
    /// given and different is a 400).
    #[serde(default)]
    qualifier: Option<String>,
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
pub(crate) fn event_of(body: &[u8]) -> ApiResult<Value> {
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

/// Run a function with the request body as its event.
///
/// Synchronous by default (200 with the finished execution); `?async=true` queues it (202,
/// `Location: /api/executions/{id}`). An empty body is the event `{}`.
#[utoipa::path(post, path = "/{id}/execute", tag = "functions", operation_id = "execute_function", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), ExecuteQuery, ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a retry with the same key returns the first run")),
    request_body(content = Option<serde_json::Value>, description = "The event: any JSON (nested at most 100 levels); empty means {}", content_type = "application/json"),
    responses(
        (status = 200, description = "The finished execution (success or failed)", body = Execution),
        (status = 202, description = "Queued: the pending execution", body = Execution,
            headers(("Location" = String, description = "/api/executions/{id} of the run"))),
        (status = 404, description = "No such function of yours", body = ErrorBody),
        (status = 413, description = "The body is larger than 6 MiB", body = ErrorBody),
        (status = 429, description = "`throttled`: past the invocation rate or concurrency of the account (see Retry-After)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
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
    let (id, qualifier) = crate::versions::split_qualifier(&id, q.qualifier.as_deref())?;
    let f = owned(&st, &caller, &id).await?;
    check_invoke_rate(&st, &caller.user_id)?;
    if is_async {
        let (exec, _new) = st.engine.enqueue_qualified(&f, qualifier.as_ref(), event, key).await?;
        crate::record_execution(&exec.id);
        let location = format!("/api/executions/{}", exec.id);
        return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(exec)).into_response());
    }
    let exec = st.engine.execute_qualified(&f, qualifier.as_ref(), Trigger::Api, event, key).await?;
    crate::record_execution(&exec.id);
    Ok(axum::Json(exec).into_response())
}

/// `POST /api/functions/test` body: unsaved code and the event to run it with once.
#[derive(Deserialize, utoipa::ToSchema)]
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
    /// The draft's egress list, as a saved function's (SPEC §11).
    #[serde(default, deserialize_with = "voltrun_core::function::deserialize_egress")]
    egress: Vec<String>,
}

/// Run unsaved code once.
///
/// Nothing is stored but the execution record (trigger `test`).
#[utoipa::path(post, path = "/test", tag = "functions", operation_id = "test_function", security(("bearer" = []), ("apiKey" = [])), request_body = TestBody,
    responses(
        (status = 200, description = "The finished test execution", body = Execution),
        (status = 413, description = "The code or event is too large", body = ErrorBody),
        (status = 429, description = "`throttled`: past the invocation rate or the test-run slots", body = ErrorBody),
    ))]
async fn test(State(st): State<AppState>, caller: Caller, Json(b): Json<TestBody>) -> ApiResult<axum::Json<Value>> {
    let draft = NewFunction {
        name: "test".into(),
        description: None,
        runtime: b.runtime,
        code: Some(b.code),
        handler: b.handler,
        memory: b.memory,
        timeout: b.timeout,
        env: b.env,
        egress: b.egress,
        ..Default::default()
    };
    let f = draft.into_function(id::new_id("test_"), caller.user_id.clone(), time::now())?;
    check_invoke_rate(&st, &caller.user_id)?;
    let event = check_depth(b.event.unwrap_or(Value::Object(Default::default())))?;
    let exec = st.engine.test_run(&f, event).await?;
    crate::record_execution(&exec.id);
    Ok(axum::Json(serde_json::to_value(exec).expect("an execution serialises")))
}
