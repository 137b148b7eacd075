//! VoltRun's HTTP API: `app(state)` builds every route, so tests can drive the router without
//! a socket and the binary only binds it. One module per resource, each with its `router()`;
//! every error leaves as the uniform JSON of [`error::ApiError`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_engine::Engine;
use voltrun_store::Store;

pub mod auth;
pub mod builds;
pub mod error;
pub mod executions;
pub mod extract;
pub mod functions;
pub mod hashpool;
pub mod keys;
pub mod lambda;
pub mod layers;
pub mod listener;
pub mod openapi;
pub mod ratelimit;
pub mod secrets;
pub mod sys;
pub mod system;
pub mod trigger;
pub mod versions;

use ratelimit::{BucketLimiter, WindowLimiter};

/// Rate limits the API enforces per node.
pub struct RateLimits {
    /// Failed logins per (email, client address).
    pub login_failed_pair: WindowLimiter,
    /// Failed logins per email from all addresses (much higher: one address guessing must
    /// not lock the owner out).
    pub login_failed_email: WindowLimiter,
    /// Login attempts, failed or not, per client address.
    pub login_ip: WindowLimiter,
    /// Registrations per client address.
    pub register_ip: WindowLimiter,
    /// Invocations per user.
    pub invoke: BucketLimiter,
}

/// Registrations allowed per address per minute unless configured.
pub const DEFAULT_REGISTER_RATE: u32 = 20;

impl RateLimits {
    /// Login: 10 failures a minute per (email, address), 100 per email, 30 attempts per
    /// address; registration: [`DEFAULT_REGISTER_RATE`] a minute per address; invocations:
    /// `invoke_rate` per second per user (0 = unlimited).
    pub fn new(invoke_rate: f64) -> RateLimits {
        let minute = Duration::from_secs(60);
        RateLimits {
            login_failed_pair: WindowLimiter::new(10, minute),
            login_failed_email: WindowLimiter::new(100, minute),
            login_ip: WindowLimiter::new(30, minute),
            register_ip: WindowLimiter::new(DEFAULT_REGISTER_RATE, minute),
            invoke: BucketLimiter::new(invoke_rate),
        }
    }

    /// The same limits with `per_minute` registrations per address.
    pub fn with_register_rate(mut self, per_minute: u32) -> RateLimits {
        self.register_ip = WindowLimiter::new(per_minute, Duration::from_secs(60));
        self
    }
}

/// Everything a handler needs; one pointer to clone (axum clones the state for every
/// request: cloning each field's `Arc` cost ~1.5 % of a warm invoke's server CPU, issue 19).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct SharedState {
    pub store: Store,
    pub engine: Engine,
    pub auth: Arc<auth::AuthKeys>,
    pub limits: Arc<RateLimits>,
    /// What one account may hold (functions, code, API keys); the engine enforces the
    /// concurrent-runs figure.
    pub quotas: voltrun_core::Quotas,
    pub started: Instant,
    /// Open log streams per user, and their cap.
    pub log_streams: Arc<executions::LogStreams>,
}

/// Header the server sets to the peer's address (any client-sent value is replaced).
pub(crate) const PEER_HEADER: &str = "x-voltrun-peer";

/// The key per-address rate limits count under: the client's address, or its /64 for IPv6
/// (one host usually holds a whole /64), as the connection caps count.
pub fn client_net(headers: &HeaderMap) -> String {
    let ip = client_ip(headers);
    ip.parse::<std::net::IpAddr>().map_or(ip, |a| listener::ip_key(a).to_string())
}

/// The client's address as seen by this server.
pub fn client_ip(headers: &HeaderMap) -> String {
    headers.get(PEER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_string()
}

/// Refuses URIs with an encoded NUL byte: no id, name or filter contains one, and
/// PostgreSQL text cannot hold it.
async fn refuse_nul(req: Request, next: Next) -> Response {
    let has_nul = req.uri().path_and_query().is_some_and(|pq| pq.as_str().as_bytes().windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0'));
    if has_nul {
        return error::ApiError::bad("invalid_uri", "the URI contains an encoded NUL byte").into_response();
    }
    next.run(req).await
}

async fn stamp_peer(mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let h = req.headers_mut();
    h.remove(PEER_HEADER);
    if let Some(ip) = peer.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(PEER_HEADER, ip);
    }
    next.run(req).await
}

/// Runs every request in a `request` span with its method, path and a request id, and the
/// execution id once a handler knows one ([`record_execution`]), so every event logged while
/// the request is served (and the `answered` event at debug level) carries them.
async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %voltrun_core::id::new_id("req_"),
        execution_id = tracing::field::Empty,
    );
    async move {
        let resp = next.run(req).await;
        tracing::debug!(status = resp.status().as_u16(), "answered");
        resp
    }
    .instrument(span)
    .await
}

/// Records the execution a request is about in its `request` span.
pub fn record_execution(id: &str) {
    tracing::Span::current().record("execution_id", tracing::field::display(id));
}

/// Anything no route matched: a browser navigating to a page gets the dashboard (which has
/// its own "not found"); every other request gets the JSON 404.
async fn not_found(req: Request) -> Response {
    voltrun_web::page(&req).unwrap_or_else(|| error::ApiError::NotFound("route").into_response())
}

/// Every route of the API with its OpenAPI description: each handler is registered with
/// `routes!`, which adds the route and its documented operation together (openapi.rs). A
/// route added here any other way is missing from the document, and a test says so.
pub fn api_routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .nest("/auth", auth::router())
        .nest("/functions", functions::router().merge(builds::router()).merge(versions::router()))
        .nest("/executions", executions::router())
        .nest("/keys", keys::router())
        .nest("/layers", layers::router())
        .nest("/secrets", secrets::router())
        .nest("/execute", trigger::router())
        .routes(routes!(system::runtimes))
        .routes(routes!(system::dashboard))
        .routes(routes!(openapi::serve));
    OpenApiRouter::with_openapi(openapi::base()).routes(routes!(system::health)).routes(routes!(system::metrics)).nest("/api", api)
}

/// Every route the server answers, before state and layers: the API's and the dashboard's.
pub fn routes() -> Router<AppState> {
    let (api, _doc) = api_routes().split_for_parts();
    api.merge(voltrun_web::router())
}

/// Every route of the API.
pub fn app(state: AppState) -> Router {
    routes()
        // AWS's Lambda API at AWS's paths (SPEC §14): outside the OpenAPI document, which
        // describes VoltRun's own API (AWS's model and docs/LAMBDA_API.md describe these).
        .merge(lambda::router())
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(voltrun_core::MAX_PAYLOAD_BYTES))
        .layer(axum::middleware::from_fn(stamp_peer))
        .layer(axum::middleware::from_fn(refuse_nul))
        .layer(axum::middleware::map_response(plain_errors_as_json))
        .layer(axum::middleware::from_fn(protect_triggers))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// The trigger listener (`serve --trigger-listen`): functions' routes at `/{route}/…` on an
/// origin of their own, with nothing of the API or the dashboard beside them.
pub fn trigger_app(state: AppState) -> Router {
    Router::new()
        .merge(trigger::own_origin_router())
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(voltrun_core::MAX_PAYLOAD_BYTES))
        .layer(axum::middleware::from_fn(stamp_peer))
        .layer(axum::middleware::from_fn(refuse_nul))
        .layer(axum::middleware::map_response(plain_errors_as_json))
        .layer(axum::middleware::map_response(|mut resp: Response| async move {
            trigger::protect(&mut resp, trigger::TriggerOrigin::Own);
            resp
        }))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// Every response under `/api/execute` (the function's, an error, a 404 or 413 of ours) leaves
/// with the trigger's protective headers, set last (trigger.rs [`trigger::protect`]).
async fn protect_triggers(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_trigger = path.strip_prefix(trigger::SHARED_PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let mut resp = next.run(req).await;
    if is_trigger {
        trigger::protect(&mut resp, trigger::TriggerOrigin::Shared);
    }
    resp
}

/// Turns the few plain-text responses axum makes itself (e.g. a path that is not UTF-8)
/// into the uniform error JSON.
async fn plain_errors_as_json(resp: Response) -> Response {
    let status = resp.status();
    if resp.extensions().get::<trigger::FunctionAnswer>().is_some() {
        // A function's own 4xx/5xx page is its answer, not ours to rewrite.
        return resp;
    }
    let is_json = resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::NOT_FOUND => "not_found",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        let has_body = resp.headers().get("content-type").is_some();
        if has_body || status != StatusCode::NOT_FOUND {
            return error::error_body(status, code, status.canonical_reason().unwrap_or("error"));
        }
    }
    resp
}

#[cfg(test)]
mod span_tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// A writer the test's subscriber prints into.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Events inside a request carry its method, path, request id and, once recorded, the
    /// execution id.
    #[test]
    fn request_span_carries_method_path_request_and_execution_ids() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_max_level(tracing::Level::DEBUG).with_ansi(false).finish();
        let router = axum::Router::new()
            .route(
                "/api/functions/{id}/execute",
                axum::routing::post(|| async {
                    tracing::info!("inside the handler");
                    super::record_execution("exe_42");
                    "ok"
                }),
            )
            .layer(axum::middleware::from_fn(super::request_span));
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let resp = rt.block_on(router.oneshot(Request::post("/api/functions/f/execute").body(Body::empty()).unwrap())).unwrap();
            assert_eq!(resp.status(), 200);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let inside = text.lines().find(|l| l.contains("inside the handler")).unwrap_or_else(|| panic!("{text}"));
        assert!(inside.contains("request{method=POST path=/api/functions/f/execute request_id=req_"), "{inside}");
        let answered = text.lines().find(|l| l.contains("answered")).unwrap_or_else(|| panic!("{text}"));
        assert!(answered.contains("execution_id=exe_42") && answered.contains("status=200"), "{answered}");
    }
}
