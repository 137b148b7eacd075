//! The HTTP trigger: `/api/execute/{route}/…` as a Lambda function-URL (payload 2.0) event,
//! and the handler's answer mapped back to an HTTP response.

use axum::body::Body as HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use voltrun_core::{is_valid_route, ErrorKind, Execution, Function, Trigger, MAX_PAYLOAD_BYTES};

use crate::error::{error_body, ApiError, ApiResult};
use crate::AppState;

/// Routes under `/api/execute`.
pub fn router() -> Router<AppState> {
    Router::new().route("/{*path}", any(trigger))
}

/// Finds the function whose route is the longest segment-prefix of `path`.
async fn resolve(st: &AppState, path: &str) -> ApiResult<Option<Function>> {
    let segments: Vec<&str> = path.split('/').take(16).collect();
    for n in (1..=segments.len()).rev() {
        let candidate = segments[..n].join("/");
        if !is_valid_route(&candidate) {
            continue;
        }
        if let Some(f) = st.store.function_by_route(&candidate).await? {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

async fn trigger(State(st): State<AppState>, req: Request) -> ApiResult<Response> {
    let (mut parts, body) = req.into_parts();
    // Nesting strips the `/api/execute` prefix; the event wants the path as the client sent it.
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get::<axum::extract::OriginalUri>() {
        parts.uri = uri.clone();
    }
    let path = parts.uri.path().strip_prefix("/api/execute/").unwrap_or("").to_string();
    let f = resolve(&st, &path).await?.ok_or(ApiError::NotFound("route"))?;
    let caller = crate::auth::authenticate(&parts.headers, &st).await;
    let invoker = if f.public {
        // A public function runs as its owner; bad credentials are simply ignored.
        f.user_id.clone()
    } else {
        match caller? {
            Some(c) if c.user_id == f.user_id => c.user_id,
            Some(_) => return Err(ApiError::NotFound("route")),
            None => return Err(ApiError::Unauthorized("this function is not public: authenticate as its owner".into())),
        }
    };
    let bytes = axum::body::to_bytes(body, MAX_PAYLOAD_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge("the request body is larger than 6 MiB".into()))?;
    let key = crate::functions::idempotency_key(&parts.headers)?;
    crate::functions::check_invoke_rate(&st, &invoker)?;
    let event = event(&parts.method, &parts.uri, &parts.headers, &bytes, &f);
    let exec = st.engine.execute(&f, Trigger::Http, event, key).await?;
    Ok(respond(&exec))
}

/// The Lambda function-URL 2.0 event of a request. Credentials sent to VoltRun are not
/// passed on to the function.
fn event(method: &Method, uri: &axum::http::Uri, headers: &HeaderMap, body: &[u8], f: &Function) -> Value {
    let mut hs = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n == "authorization" || n == "x-api-key" || n == crate::PEER_HEADER {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if n == "cookie" {
            cookies.extend(v.split(';').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()));
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
    let raw_query = uri.query().unwrap_or("").to_string();
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
        "rawPath": uri.path(),
        "rawQueryString": raw_query,
        "headers": hs,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": f.route,
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or(""),
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
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
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The HTTP response of a finished execution.
fn respond(exec: &Execution) -> Response {
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
        return ([("content-type", "application/json")], text).into_response();
    };
    shaped_response(obj).unwrap_or_else(|msg| error_body(StatusCode::BAD_GATEWAY, "invalid_function_response", &msg))
}

fn too_large() -> Response {
    error_body(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the function's response is larger than 6 MiB")
}

/// A `{statusCode, headers, body, isBase64Encoded, cookies}` answer as a response.
fn shaped_response(obj: &Map<String, Value>) -> Result<Response, String> {
    let status = obj["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok().filter(|_| (100..=599).contains(&s)))
        .ok_or("statusCode must be an integer from 100 to 599")?;
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
    let mut resp = Response::new(HttpBody::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(Value::Object(headers)) = obj.get("headers") {
        for (k, v) in headers {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("invalid header name {k:?}"))?;
            let value = HeaderValue::from_str(&v).map_err(|_| format!("invalid value for header {k}"))?;
            h.insert(name, value);
        }
    }
    if let Some(Value::Array(cookies)) = obj.get("cookies") {
        for c in cookies.iter().filter_map(Value::as_str) {
            h.append("set-cookie", HeaderValue::from_str(c).map_err(|_| "invalid cookie".to_string())?);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%e2%9c%93"), "✓");
    }
}
