//! The HTTP trigger: a request to a function's route becomes a Lambda function-URL (payload
//! 2.0) event, and the handler's answer is mapped back to an HTTP response.
//!
//! Triggers are served at `/api/execute/{route}/…` on the API's listener ([`router`]) and, with
//! `serve --trigger-listen`, at `/{route}/…` on a listener of their own ([`own_origin_router`]),
//! as a Lambda function URL lives on a domain of its own. Either way the function sees the path
//! below its route (`rawPath` = `/items/42`, `/` for the route itself) and the part above it in
//! `x-forwarded-prefix`.
//!
//! A function's response is someone else's content (SPEC §4): it never frames the exchange
//! (framing and hop-by-hop headers are dropped, 1xx refused, no body where the status or method
//! forbids one), never touches the dashboard's session cookie, and on the API's listener it runs
//! under `Content-Security-Policy: sandbox` ([`protect`]), so a page it serves cannot script the
//! dashboard's origin.

use axum::body::Body as HttpBody;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::{is_valid_route, ErrorKind, Execution, Function, Qualifier, Trigger, MAX_PAYLOAD_BYTES};

use crate::error::{error_body, ApiError, ApiResult};
use crate::openapi::{any_route, ErrorBody};
use crate::AppState;

/// Where a trigger request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerOrigin {
    /// Under `/api/execute` on the API's (and the dashboard's) listener.
    Shared,
    /// At the root of the trigger listener (`--trigger-listen`), an origin of its own.
    Own,
}

impl TriggerOrigin {
    /// The path above every route on this origin.
    fn prefix(self) -> &'static str {
        match self {
            TriggerOrigin::Shared => SHARED_PREFIX,
            TriggerOrigin::Own => "",
        }
    }
}

/// Where triggers live on the API's listener.
pub const SHARED_PREFIX: &str = "/api/execute";

/// The header that carries the path above the function's route (its "base path").
pub const PREFIX_HEADER: &str = "x-forwarded-prefix";

/// Headers a handler may not send: they frame the HTTP exchange (a false `content-length`
/// smuggles a second response onto a kept-alive connection) or belong to one hop, so only the
/// server sets them. `clear-site-data` is here too: its `cookies` directive would clear the
/// dashboard's session cookie for the whole site. Names listed in the handler's own
/// `Connection` header are dropped as well (RFC 9110 §7.6.1).
const DROPPED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "clear-site-data",
];

/// Marks a response as the function's own (so the API's error rewriting leaves it alone).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FunctionAnswer;

/// Routes under `/api/execute`: every method, as a Lambda function URL takes them.
pub fn router() -> OpenApiRouter<AppState> {
    let r = any_route(OpenApiRouter::new(), "/", any(shared_root), routes!(shared_root));
    any_route(r, "/{*path}", any(shared), routes!(shared))
}

/// Every route of the trigger listener: `/{route}/…` only, nothing of the API or dashboard.
pub fn own_origin_router() -> Router<AppState> {
    Router::new().route("/", any(own)).route("/{*path}", any(own))
}

/// The headers every trigger response carries, set after the function's own so a function
/// cannot remove them: `nosniff` always, and on the shared origin `Content-Security-Policy:
/// sandbox` appended (a function's own CSP stays; browsers enforce every CSP header), which
/// gives the page an opaque origin without scripts, so it cannot read or act with the
/// dashboard's session.
pub fn protect(resp: &mut Response, origin: TriggerOrigin) {
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if origin == TriggerOrigin::Shared {
        h.append(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    }
}

/// The answer to a path with no route, or a private route the caller does not own: the same
/// 404 either way, so a stranger cannot tell a private route from a missing one.
fn no_route() -> ApiError {
    ApiError::NotFound("route")
}

/// Finds the function or alias whose route is the longest segment-prefix of `path`: the
/// function (its `route` the one matched) and, for an alias's route, the alias to run.
async fn resolve(st: &AppState, path: &str) -> ApiResult<Option<(Function, Option<Qualifier>)>> {
    let segments: Vec<&str> = path.split('/').take(16).collect();
    for n in (1..=segments.len()).rev() {
        let candidate = segments[..n].join("/");
        if !is_valid_route(&candidate) {
            continue;
        }
        if let Some(f) = st.store.function_by_route(&candidate).await? {
            return Ok(Some((f, None)));
        }
        // A route bound to an alias runs the alias (SPEC §13): a rollback is one PUT of it.
        if let Some((mut f, a)) = st.store.alias_by_route(&candidate).await? {
            f.route = Some(candidate);
            return Ok(Some((f, Some(Qualifier::Alias(a.name)))));
        }
    }
    Ok(None)
}

/// HTTP trigger: call a function at its route.
///
/// Any method. The request becomes a Lambda function-URL (payload 2.0) event for the
/// function whose route is the longest segment-prefix of `path` (which may hold `/`); the
/// handler's answer is the response. Credentials are needed unless the function is public;
/// a private route of someone else is the same 404 as a missing one.
#[utoipa::path(method(get, put, post, delete, options, head, patch, trace), path = "/{path}", tag = "trigger", operation_id = "trigger",
    security((), ("bearer" = []), ("apiKey" = [])),
    params(("path" = String, Path, description = "The function's route and the path below it, e.g. `hello/items/42`")),
    request_body(content = Option<String>, description = "Any body, passed to the handler (base64 when it is not text)", content_type = "*/*"),
    responses(
        (status = "default", description = "The function's own answer (status, headers, body)"),
        (status = 404, description = "No route matches, or it is a private route the caller does not own", body = ErrorBody),
        (status = 413, description = "The body is larger than 6 MiB", body = ErrorBody),
        (status = 429, description = "`throttled`: past the owner's invocation rate or concurrency", body = ErrorBody),
        (status = 502, description = "The function failed, or answered something that is not an HTTP response", body = ErrorBody),
        (status = 504, description = "The function ran past its timeout", body = ErrorBody),
    ))]
async fn shared(State(st): State<AppState>, req: Request) -> ApiResult<Response> {
    run(st, req, TriggerOrigin::Shared).await
}

/// HTTP trigger without a route.
///
/// No function has the empty route: always the trigger's 404, whatever the method.
#[utoipa::path(method(get, put, post, delete, options, head, patch, trace), path = "/", tag = "trigger", operation_id = "trigger_root",
    responses((status = 404, description = "No route matches", body = ErrorBody)))]
async fn shared_root(st: State<AppState>, req: Request) -> ApiResult<Response> {
    shared(st, req).await
}

async fn own(State(st): State<AppState>, req: Request) -> ApiResult<Response> {
    run(st, req, TriggerOrigin::Own).await
}

async fn run(st: AppState, req: Request, origin: TriggerOrigin) -> ApiResult<Response> {
    let (mut parts, body) = req.into_parts();
    // Nesting strips the `/api/execute` prefix; resolve on the path as the client sent it.
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get::<axum::extract::OriginalUri>() {
        parts.uri = uri.clone();
    }
    let path = parts.uri.path().strip_prefix(origin.prefix()).and_then(|p| p.strip_prefix('/')).unwrap_or("").to_string();
    let (f, qualifier) = resolve(&st, &path).await?.ok_or_else(no_route)?;
    let invoker = if f.public {
        // A public function runs as its owner; bad credentials are simply ignored.
        f.user_id.clone()
    } else {
        match crate::auth::authenticate(&parts.headers, &st).await {
            Ok(Some(c)) if c.user_id == f.user_id => c.user_id,
            // No, bad or someone else's credentials: as if there were no route.
            Ok(_) | Err(ApiError::Unauthorized(_)) => return Err(no_route()),
            Err(other) => return Err(other),
        }
    };
    let route = f.route.as_deref().unwrap_or_default();
    // resolve matched `route` as whole segments at the start of `path`.
    let below = path.get(route.len()..).filter(|b| !b.is_empty()).unwrap_or("/");
    let prefix = format!("{}/{route}", origin.prefix());
    let bytes = axum::body::to_bytes(body, MAX_PAYLOAD_BYTES).await.map_err(|_| ApiError::TooLarge("the request body is larger than 6 MiB".into()))?;
    let key = crate::functions::idempotency_key(&parts.headers)?;
    crate::functions::check_invoke_rate(&st, &invoker)?;
    let target = Target { path: below, prefix: &prefix, query: parts.uri.query().unwrap_or("") };
    let event = event(&parts.method, &target, &parts.headers, &bytes, &f);
    let exec = st.engine.execute_qualified(&f, qualifier.as_ref(), Trigger::Http, event, key).await?;
    crate::record_execution(&exec.id);
    Ok(respond(&exec, parts.method == Method::HEAD))
}

/// The request's path as the function sees it.
struct Target<'a> {
    /// Below the route: `/items/42`, or `/` for the route itself.
    path: &'a str,
    /// Above it, route included: `/api/execute/shop` (or `/shop` on the trigger listener).
    prefix: &'a str,
    /// The raw query string.
    query: &'a str,
}

/// The Lambda function-URL 2.0 event of a request. Credentials sent to VoltRun (including the
/// dashboard's session cookie) are not passed on to the function.
fn event(method: &Method, target: &Target<'_>, headers: &HeaderMap, body: &[u8], f: &Function) -> Value {
    let mut hs = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n == "authorization" || n == "x-api-key" || n == crate::PEER_HEADER || n == PREFIX_HEADER {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if n == "cookie" {
            cookies.extend(v.split(';').map(|c| c.trim().to_string()).filter(|c| !c.is_empty() && !crate::auth::is_session_cookie(c)));
            continue;
        }
        match hs.get_mut(n) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                hs.insert(n.to_string(), Value::String(v));
            }
        }
    }
    hs.insert(PREFIX_HEADER.to_string(), Value::String(target.prefix.to_string()));
    let raw_query = target.query.to_string();
    let mut qs = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        match qs.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                qs.insert(k, Value::String(v));
            }
        }
    }
    let now = chrono::Utc::now();
    let mut ev = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": target.path,
        "rawQueryString": raw_query,
        "headers": hs,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": f.route,
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or(""),
            "http": {
                "method": method.as_str(),
                "path": target.path,
                "protocol": "HTTP/1.1",
                "sourceIp": crate::client_ip(headers),
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": voltrun_core::id::new_id("req_"),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        ev["cookies"] = json!(cookies);
    }
    if !qs.is_empty() {
        ev["queryStringParameters"] = Value::Object(qs);
    }
    if !body.is_empty() {
        match std::str::from_utf8(body) {
            Ok(text) => ev["body"] = json!(text),
            Err(_) => {
                ev["body"] = json!(B64.encode(body));
                ev["isBase64Encoded"] = json!(true);
            }
        }
    }
    ev
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The HTTP response of a finished execution (no body for a HEAD request).
fn respond(exec: &Execution, head: bool) -> Response {
    let output = match (&exec.output, &exec.error) {
        (_, Some(err)) => {
            let status = if err.kind == ErrorKind::Timeout { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
            let body = json!({"error": {
                "code": if err.kind == ErrorKind::Timeout { "function_timeout" } else { "function_error" },
                "message": err.message,
                "type": err.kind,
                "stack": err.stack,
                "execution_id": exec.id,
            }});
            return (status, axum::Json(body)).into_response();
        }
        (Some(v), None) => v,
        (None, None) => &Value::Null,
    };
    let Some(obj) = output.as_object().filter(|o| o.contains_key("statusCode")) else {
        let text = output.to_string();
        if text.len() > MAX_PAYLOAD_BYTES {
            return too_large();
        }
        let body = if head { String::new() } else { text };
        return ([("content-type", "application/json")], body).into_response();
    };
    shaped_response(obj, head).unwrap_or_else(|msg| error_body(StatusCode::BAD_GATEWAY, "invalid_function_response", &msg))
}

fn too_large() -> Response {
    error_body(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the function's response is larger than 6 MiB")
}

/// A header value as the handler wrote it (non-strings as JSON).
fn header_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `{statusCode, headers, body, isBase64Encoded, cookies}` answer as a response; `Err` (a
/// 502) when it cannot be one: a status outside 200–599 (1xx and 101 are the server's), a
/// header name or value that is not valid HTTP (CR/LF included).
fn shaped_response(obj: &Map<String, Value>, head: bool) -> Result<Response, String> {
    let status =
        obj["statusCode"].as_u64().filter(|s| (200..=599).contains(s)).and_then(|s| StatusCode::from_u16(s as u16).ok()).ok_or("statusCode must be an integer from 200 to 599")?;
    let body: Vec<u8> = match obj.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if obj.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            B64.decode(s).map_err(|_| "body is not valid base64 although isBase64Encoded is true")?
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    if body.len() > MAX_PAYLOAD_BYTES {
        return Ok(too_large());
    }
    // RFC 9110 §6.4.1: no content in a 204 or 304, nor in the answer to a HEAD.
    let bodiless = head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut resp = Response::new(if bodiless { HttpBody::empty() } else { HttpBody::from(body) });
    *resp.status_mut() = status;
    resp.extensions_mut().insert(FunctionAnswer);
    let h = resp.headers_mut();
    if !bodiless {
        h.insert("content-type", HeaderValue::from_static("application/json"));
    }
    if let Some(Value::Object(headers)) = obj.get("headers") {
        let listed: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| header_text(v).split(',').map(|n| n.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .collect();
        for (k, v) in headers {
            let v = header_text(v);
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("invalid header name {k:?}"))?;
            let value = HeaderValue::from_str(&v).map_err(|_| format!("invalid value for header {k}"))?;
            if DROPPED_HEADERS.contains(&name.as_str()) || listed.iter().any(|l| l == name.as_str()) {
                tracing::debug!(header = %name, "dropped a framing or hop-by-hop header from a function's response");
                continue;
            }
            if name == header::SET_COOKIE && crate::auth::is_session_cookie(&v) {
                continue;
            }
            h.insert(name, value);
        }
    }
    if let Some(Value::Array(cookies)) = obj.get("cookies") {
        for c in cookies.iter().filter_map(Value::as_str) {
            let value = HeaderValue::from_str(c).map_err(|_| "invalid cookie".to_string())?;
            if !crate::auth::is_session_cookie(c) {
                h.append(header::SET_COOKIE, value);
            }
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaped(v: Value, head: bool) -> Result<Response, String> {
        shaped_response(v.as_object().unwrap(), head)
    }

    /// Framing and hop-by-hop headers, and those the handler's Connection names, are dropped.
    #[test]
    fn framing_headers_from_a_handler_are_dropped() {
        let r = shaped(
            json!({"statusCode": 200, "headers": {"Content-Length": "0", "transfer-encoding": "chunked", "Connection": "x-a, keep-alive", "x-a": "1", "x-b": "2"}, "body": "hello"}),
            false,
        )
        .unwrap();
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-type", "x-b"]);
    }

    #[test]
    fn informational_statuses_are_refused() {
        for s in [100, 101, 103, 199, 99, 600] {
            assert!(shaped(json!({"statusCode": s}), false).is_err(), "{s}");
        }
        assert_eq!(shaped(json!({"statusCode": 200}), false).unwrap().status(), 200);
    }

    #[tokio::test]
    async fn no_body_for_204_304_and_head() {
        for (status, head) in [(204, false), (304, false), (200, true)] {
            let r = shaped(json!({"statusCode": status, "body": "x"}), head).unwrap();
            assert!(axum::body::to_bytes(r.into_body(), 64).await.unwrap().is_empty(), "{status} {head}");
        }
    }

    #[test]
    fn the_session_cookie_cannot_be_set_by_a_function() {
        let r = shaped(json!({"statusCode": 200, "headers": {"set-cookie": "Voltrun_Refresh=x"}, "cookies": ["voltrun_refresh=y; Path=/api/auth", "a=1"]}), false).unwrap();
        let set: Vec<&str> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(set, vec!["a=1"]);
    }

    #[test]
    fn protection_is_appended_after_the_functions_headers() {
        let mut r = shaped(json!({"statusCode": 200, "headers": {"content-security-policy": "img-src *", "x-content-type-options": "no"}}), false).unwrap();
        protect(&mut r, TriggerOrigin::Shared);
        let csp: Vec<&str> = r.headers().get_all("content-security-policy").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(csp, vec!["img-src *", "sandbox"]);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let mut own = shaped(json!({"statusCode": 200}), false).unwrap();
        protect(&mut own, TriggerOrigin::Own);
        assert!(own.headers().get("content-security-policy").is_none());
        assert_eq!(own.headers()["x-content-type-options"], "nosniff");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%e2%9c%93"), "✓");
    }
}
