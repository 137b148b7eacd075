//! Health, metrics, runtimes, the dashboard's figures and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use voltrun_core::{time, Runtime};

use crate::error::ApiResult;
use crate::extract::Caller;
use crate::AppState;

/// `GET /health`: 200 when the database answers, 503 when it does not.
pub async fn health(State(st): State<AppState>) -> Response {
    let db_ok = st.store.ping().await.is_ok();
    let mut body = json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": if db_ok { "ok" } else { "unreachable" },
        "sandbox": st.engine.sandbox_kind(),
    });
    for (k, v) in st.engine.sandbox_details() {
        body[k] = json!(v);
    }
    // The tier may probe the host to answer (nftables, namespaces): off the async threads.
    let engine = st.engine.clone();
    body["egress"] = match tokio::task::spawn_blocking(move || engine.egress_support()).await {
        Ok(Ok(())) => json!({"available": true}),
        Ok(Err(reason)) => json!({"available": false, "reason": reason}),
        Err(e) => json!({"available": false, "reason": format!("the check failed: {e}")}),
    };
    let status = if db_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = st.engine.metrics().render();
    text.push_str(&format!(
        "# HELP voltrun_uptime_seconds Seconds since the server started.\n# TYPE voltrun_uptime_seconds gauge\nvoltrun_uptime_seconds {}\n",
        st.started.elapsed().as_secs()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /api/runtimes`.
pub async fn runtimes(State(st): State<AppState>, _caller: Caller) -> axum::Json<Value> {
    let items: Vec<Value> = Runtime::ALL
        .iter()
        .map(|r| {
            let interp = st.engine.runtimes().interpreter(*r);
            json!({
                "id": r.id(),
                "language": r.language(),
                "version": interp.map(|i| i.version.clone()).unwrap_or_else(|| r.version().to_string()),
                "available": interp.is_some(),
            })
        })
        .collect();
    axum::Json(json!({"items": items}))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `GET /api/dashboard`: counts, success rate, duration percentiles, the last 24 hours by
/// hour, and the most recent executions.
pub async fn dashboard(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::hours(23);
    let since = since.format("%Y-%m-%dT%H:00:00.000Z").to_string();
    let s = st.store.stats(&caller.user_id, &since).await?;
    let mut hourly = Vec::with_capacity(24);
    for h in (0..24).rev() {
        let hour = (now - chrono::Duration::hours(h)).format("%Y-%m-%dT%H").to_string();
        let b = s.hourly.iter().find(|b| b.hour == hour);
        hourly.push(json!({
            "hour": format!("{hour}:00:00Z"),
            "invocations": b.map_or(0, |b| b.invocations),
            "errors": b.map_or(0, |b| b.errors),
            "avg_duration_ms": b.and_then(|b| b.avg_duration_ms),
        }));
    }
    let finished = s.last_24h_success + s.last_24h_failed;
    let recent = st.store.list_executions(&caller.user_id, &Default::default(), 10).await?;
    Ok(axum::Json(json!({
        "functions": s.functions,
        "executions_total": s.executions_total,
        "last_24h": {
            "invocations": s.last_24h_total,
            "success": s.last_24h_success,
            "failed": s.last_24h_failed,
            "success_rate": (finished > 0).then(|| s.last_24h_success as f64 / finished as f64),
        },
        "duration_ms": {
            "p50": percentile(&s.durations_ms, 50.0),
            "p95": percentile(&s.durations_ms, 95.0),
            "p99": percentile(&s.durations_ms, 99.0),
        },
        "hourly": hourly,
        "recent": recent,
        "generated_at": time::now(),
    })))
}

/// Every route: (method, path, auth required, summary).
const ROUTES: &[(&str, &str, bool, &str)] = &[
    ("get", "/health", false, "Liveness and database status"),
    ("get", "/metrics", false, "Prometheus metrics"),
    ("get", "/api/openapi.json", false, "This document"),
    ("post", "/api/auth/register", false, "Create an account: {email, password, name} -> 201 {token, refresh_token, expires_in, user}"),
    ("post", "/api/auth/login", false, "Log in: {email, password} -> {token, refresh_token, expires_in, user}"),
    ("post", "/api/auth/refresh", false, "Rotate a refresh token: {refresh_token} -> {token, refresh_token, expires_in} (or the cookie session)"),
    ("post", "/api/auth/logout", false, "Revoke a session: {refresh_token}, or the cookie session -> 204"),
    ("get", "/api/auth/me", true, "The current user"),
    ("get", "/api/functions", true, "List your functions (?limit, ?cursor); items carry no code, only its size (code_bytes): GET /api/functions/{id} has it"),
    ("post", "/api/functions", true, "Create a function -> 201; 409 quota_exceeded past the account's function or code-size quota"),
    ("get", "/api/functions/{id}", true, "One function, by id or name"),
    ("put", "/api/functions/{id}", true, "Update any subset of a function's fields"),
    ("delete", "/api/functions/{id}", true, "Delete a function -> 204"),
    ("post", "/api/functions/{id}/execute", true, "Run a function with the body as event; ?async=true -> 202 pending"),
    ("post", "/api/functions/test", true, "Run unsaved code once: {runtime, code, handler?, event, memory?, timeout?}"),
    ("get", "/api/execute/{route}", false, "HTTP trigger (any method; auth unless the function is public)"),
    ("post", "/api/execute/{route}", false, "HTTP trigger (any method; auth unless the function is public)"),
    ("get", "/api/executions", true, "List your executions (?function_id, ?status, ?trigger, ?limit, ?cursor)"),
    ("get", "/api/executions/{id}", true, "One execution record"),
    ("get", "/api/executions/{id}/logs", true, "{logs, truncated}; ?follow=true streams Server-Sent Events"),
    ("get", "/api/keys", true, "List your API keys (never the key itself)"),
    ("post", "/api/keys", true, "Create an API key {name, expires_in_days?} -> 201, the only time the key is shown; 409 quota_exceeded past the account's key quota"),
    ("delete", "/api/keys/{id}", true, "Revoke an API key -> 204"),
    ("get", "/api/runtimes", true, "Supported runtimes and whether this server has them"),
    ("get", "/api/dashboard", true, "Counts, success rate, duration percentiles, hourly series, recent executions"),
];

/// `GET /api/openapi.json`: an OpenAPI 3.1 document of every route.
pub async fn openapi() -> axum::Json<Value> {
    let mut paths = serde_json::Map::new();
    for (method, path, auth, summary) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "Success"},
                "4XX": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if *auth {
            op["security"] = json!([{"bearer": []}, {"apiKey": []}]);
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[*method] = op;
    }
    axum::Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "VoltRun API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
                },
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
