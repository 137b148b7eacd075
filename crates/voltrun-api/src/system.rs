//! Health, metrics, runtimes and the dashboard's figures (the OpenAPI document is openapi.rs).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use voltrun_core::{time, Execution, Runtime};

use crate::error::ApiResult;
use crate::extract::Caller;
use crate::AppState;

/// `GET /health`, as [`health`] builds it (with `json!`, so the sandbox's own details can sit
/// beside the fixed fields): documentation only.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`, or `degraded` when the database does not answer.
    status: String,
    /// The server's version.
    version: String,
    /// `ok` or `unreachable`.
    database: String,
    /// The isolation tier: `namespace`, `gvisor`, `container` or `process`; the tier adds
    /// details of its own (string fields) beside it.
    sandbox: String,
    /// Whether this node can give functions network access (SPEC §11).
    egress: EgressHealth,
    /// The tier's details.
    #[serde(flatten)]
    details: std::collections::BTreeMap<String, String>,
}

/// `egress` of `GET /health`: documentation only, as [`Health`].
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EgressHealth {
    /// True when functions with an egress list can run here.
    available: bool,
    /// Why not, when not.
    reason: Option<String>,
}

/// Liveness and database status.
///
/// `GET /health`: 200 when the database answers, 503 when it does not.
#[utoipa::path(get, path = "/health", tag = "system", operation_id = "health",
    responses(
        (status = 200, description = "Up, the database answers", body = Health),
        (status = 503, description = "Degraded: the database does not answer", body = Health),
    ))]
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

/// Prometheus metrics.
///
/// `GET /metrics`: the Prometheus text format (docs/API.md lists the figures).
#[utoipa::path(get, path = "/metrics", tag = "system", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = st.engine.metrics().render();
    text.push_str(&format!(
        "# HELP voltrun_uptime_seconds Seconds since the server started.\n# TYPE voltrun_uptime_seconds gauge\nvoltrun_uptime_seconds {}\n",
        st.started.elapsed().as_secs()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// One runtime of `GET /api/runtimes`.
#[derive(Serialize, ToSchema)]
pub struct RuntimeInfo {
    pub id: Runtime,
    /// `javascript`, `python`, or `any` (`provided`: the package's own bootstrap).
    pub language: String,
    /// The interpreter's version on this server, or the runtime's nominal one.
    pub version: String,
    /// True when this server has the interpreter.
    pub available: bool,
}

/// `GET /api/runtimes`.
#[derive(Serialize, ToSchema)]
pub struct RuntimeList {
    pub items: Vec<RuntimeInfo>,
}

/// Supported runtimes and whether this server has them.
#[utoipa::path(get, path = "/runtimes", tag = "system", operation_id = "list_runtimes", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every runtime", body = RuntimeList)))]
pub async fn runtimes(State(st): State<AppState>, _caller: Caller) -> axum::Json<RuntimeList> {
    let items = Runtime::ALL
        .iter()
        .map(|r| {
            let interp = st.engine.runtimes().interpreter(*r);
            RuntimeInfo {
                id: *r,
                language: r.language().to_string(),
                version: interp.map(|i| i.version.clone()).unwrap_or_else(|| r.version().to_string()),
                available: st.engine.runtimes().available(*r),
            }
        })
        .collect();
    axum::Json(RuntimeList { items })
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `GET /api/dashboard`.
#[derive(Serialize, ToSchema)]
pub struct Dashboard {
    /// Functions of the account.
    pub functions: i64,
    /// Executions of the account, ever (as retained).
    pub executions_total: i64,
    pub last_24h: Last24h,
    /// Nearest-rank percentiles of recent finished runs of the last 24 hours; null without any.
    pub duration_ms: Percentiles,
    /// The last 24 hours, oldest first, one bucket per hour.
    pub hourly: Vec<HourBucket>,
    /// The 10 most recent executions.
    pub recent: Vec<Execution>,
    pub generated_at: String,
}

/// Invocations of the last 24 hours.
#[derive(Serialize, ToSchema)]
pub struct Last24h {
    pub invocations: i64,
    pub success: i64,
    pub failed: i64,
    /// success / (success + failed); null when none finished.
    #[schema(required)]
    pub success_rate: Option<f64>,
}

/// Duration percentiles in milliseconds.
#[derive(Serialize, ToSchema)]
pub struct Percentiles {
    #[schema(required)]
    pub p50: Option<f64>,
    #[schema(required)]
    pub p95: Option<f64>,
    #[schema(required)]
    pub p99: Option<f64>,
}

/// One hour of `GET /api/dashboard`'s series.
#[derive(Serialize, ToSchema)]
pub struct HourBucket {
    /// `YYYY-MM-DDTHH:00:00Z`.
    pub hour: String,
    pub invocations: i64,
    pub errors: i64,
    #[schema(required)]
    pub avg_duration_ms: Option<f64>,
}

/// Counts, success rate, duration percentiles, hourly series, recent executions.
///
/// `GET /api/dashboard`: counts, success rate, duration percentiles, the last 24 hours by
/// hour, and the most recent executions.
#[utoipa::path(get, path = "/dashboard", tag = "system", operation_id = "dashboard", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "The account's figures", body = Dashboard)))]
pub async fn dashboard(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Dashboard>> {
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::hours(23);
    let since = since.format("%Y-%m-%dT%H:00:00.000Z").to_string();
    let s = st.store.stats(&caller.user_id, &since).await?;
    let mut hourly = Vec::with_capacity(24);
    for h in (0..24).rev() {
        let hour = (now - chrono::Duration::hours(h)).format("%Y-%m-%dT%H").to_string();
        let b = s.hourly.iter().find(|b| b.hour == hour);
        hourly.push(HourBucket {
            hour: format!("{hour}:00:00Z"),
            invocations: b.map_or(0, |b| b.invocations),
            errors: b.map_or(0, |b| b.errors),
            avg_duration_ms: b.and_then(|b| b.avg_duration_ms),
        });
    }
    let finished = s.last_24h_success + s.last_24h_failed;
    let recent = st.store.list_executions(&caller.user_id, &Default::default(), 10).await?;
    Ok(axum::Json(Dashboard {
        functions: s.functions,
        executions_total: s.executions_total,
        last_24h: Last24h {
            invocations: s.last_24h_total,
            success: s.last_24h_success,
            failed: s.last_24h_failed,
            success_rate: (finished > 0).then(|| s.last_24h_success as f64 / finished as f64),
        },
        duration_ms: Percentiles { p50: percentile(&s.durations_ms, 50.0), p95: percentile(&s.durations_ms, 95.0), p99: percentile(&s.durations_ms, 99.0) },
        hourly,
        recent,
        generated_at: time::now(),
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
