//! The VoltRun dashboard, served from the binary itself. `web/` (Vite + React + TypeScript) is
//! built by this crate's build script and embedded with `rust-embed`, so `voltrun serve` needs
//! no files beside it and loads nothing from a CDN.
//!
//! [`router`] serves the assets and the dashboard's client-side routes; [`page`] answers a
//! browser navigation to any other path with the dashboard (which shows its own "not found"),
//! while API clients keep getting the API's JSON 404 from the caller's fallback.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "$VOLTRUN_WEB_DIST"]
struct Assets;

/// Paths the dashboard routes on the client; each serves `index.html`.
pub const CLIENT_ROUTES: &[&str] = &["/login", "/register", "/functions", "/functions/{*rest}", "/executions", "/executions/{*rest}", "/keys", "/secrets", "/stats"];

/// Prefixes that belong to the server, never to the dashboard.
const RESERVED: &[&str] = &["/api", "/health", "/metrics"];

/// Hashed build output: safe to cache for ever.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else (index.html, favicon): revalidate every time (cheap with the ETag).
const REVALIDATE: &str = "no-cache";

/// Only same-origin code and connections; Monaco needs inline styles and module workers.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; \
    object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes: `/`, its client-side routes, `/assets/…` and the other files at the
/// root of the build (such as `/favicon.svg`). Merge it into the application's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new().route("/", get(index)).route("/assets/{*file}", get(file));
    for route in CLIENT_ROUTES {
        r = r.route(route, get(index));
    }
    for name in Assets::iter() {
        if !name.starts_with("assets/") && name != "index.html" && !name.contains('{') {
            r = r.route(&format!("/{name}"), get(file));
        }
    }
    r
}

/// The dashboard page for a browser navigation (a GET or HEAD that accepts `text/html`) to a
/// path outside `/api`, `/health` and `/metrics`; `None` for anything else, which the caller
/// answers itself (the API's JSON 404).
pub fn page(req: &Request) -> Option<Response> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let path = req.extensions().get::<axum::extract::OriginalUri>().map_or_else(|| req.uri().path(), |u| u.0.path());
    if RESERVED.iter().any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))) {
        return None;
    }
    let html = req.headers().get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.split(',').any(|t| t.trim().starts_with("text/html")));
    html.then(|| serve("index.html", req.headers()).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response()))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

async fn file(uri: Uri, headers: HeaderMap) -> Response {
    let name = uri.path().trim_start_matches('/');
    serve(name, &headers).unwrap_or_else(|| (StatusCode::NOT_FOUND, "no such file").into_response())
}

/// One embedded file with its content type, cache policy and ETag; 304 when the client's
/// copy is current.
fn serve(name: &str, req: &HeaderMap) -> Option<Response> {
    let f = Assets::get(name)?;
    let etag = format!("\"{}\"", hex(&f.metadata.sha256_hash()[..16]));
    let mime = f.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime == "application/javascript" || mime == "image/svg+xml" { format!("{mime}; charset=utf-8") } else { mime.to_string() };
    let cache = if name.starts_with("assets/") { IMMUTABLE } else { REVALIDATE };
    let fresh = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = match f.data {
            Cow::Borrowed(b) => Body::from(b),
            Cow::Owned(v) => Body::from(v),
        };
        let mut r = Response::new(body);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).ok()?);
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).ok()?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if name == "index.html" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    Some(resp)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use tower::ServiceExt;

    /// The wiring voltrun-api uses: the dashboard's routes, then `page` or a JSON 404.
    fn app() -> Router {
        Router::new()
            .route("/api/ping", get(|| async { "pong" }))
            .merge(router())
            .fallback(|req: Request| async move { page(&req).unwrap_or_else(|| (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], "{}").into_response()) })
    }

    async fn get_with(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::builder().uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    fn header_of<'a>(r: &'a Response, name: &str) -> &'a str {
        r.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    fn an_asset(ext: &str) -> String {
        Assets::iter().find(|n| n.starts_with("assets/") && n.ends_with(ext)).expect("a built asset").into_owned()
    }

    #[tokio::test]
    async fn root_serves_index_uncached_with_csp() {
        let r = get_with("/", &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header_of(&r, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header_of(&r, "cache-control"), "no-cache");
        assert!(header_of(&r, "content-security-policy").contains("default-src 'self'"));
        let body = to_bytes(r.into_body(), usize::MAX).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("<div id=\"root\">"));
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_with_their_type() {
        for (ext, mime) in [(".js", "javascript"), (".css", "text/css")] {
            let r = get_with(&format!("/{}", an_asset(ext)), &[]).await;
            assert_eq!(r.status(), 200, "{ext}");
            assert!(header_of(&r, "content-type").contains(mime), "{ext}: {:?}", r.headers());
            assert_eq!(header_of(&r, "cache-control"), IMMUTABLE);
        }
        let r = get_with("/favicon.svg", &[]).await;
        assert_eq!(r.status(), 200);
        assert!(header_of(&r, "content-type").starts_with("image/svg+xml"));
        assert_eq!(header_of(&r, "cache-control"), "no-cache");
    }

    #[tokio::test]
    async fn etag_gives_304() {
        let path = format!("/{}", an_asset(".js"));
        let r = get_with(&path, &[]).await;
        let etag = header_of(&r, "etag").to_string();
        assert!(etag.starts_with('"'));
        let r = get_with(&path, &[("if-none-match", &etag)]).await;
        assert_eq!(r.status(), 304);
        assert!(to_bytes(r.into_body(), usize::MAX).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn client_routes_serve_index() {
        for path in ["/login", "/register", "/functions", "/functions/fn_1/edit", "/executions", "/keys", "/secrets", "/stats"] {
            let r = get_with(path, &[]).await;
            assert_eq!(r.status(), 200, "{path}");
            assert!(header_of(&r, "content-type").starts_with("text/html"), "{path}");
        }
    }

    #[tokio::test]
    async fn missing_asset_is_404() {
        let r = get_with("/assets/nope-123.js", &[("accept", "text/html")]).await;
        assert_eq!(r.status(), 404);
    }

    /// Browsers navigating to an unknown page get the dashboard; API clients get JSON.
    #[tokio::test]
    async fn unknown_paths_by_accept() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let r = get_with("/somewhere/else", &[("accept", browser)]).await;
        assert_eq!(r.status(), 200);
        assert!(header_of(&r, "content-type").starts_with("text/html"));
        for (path, accept) in [("/somewhere", "*/*"), ("/api/nope", browser), ("/api", browser), ("/health/x", browser), ("/metrics/x", browser)] {
            let r = get_with(path, &[("accept", accept)]).await;
            assert_eq!(r.status(), 404, "{path}");
            assert_eq!(header_of(&r, "content-type"), "application/json", "{path}");
        }
        let r = app().oneshot(Request::builder().method("POST").uri("/elsewhere").header("accept", browser).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(r.status(), 404);
    }
}
