//! The OpenAPI 3.1 document of the API, generated from the code: every handler carries a
//! `#[utoipa::path]` annotation and is registered with `utoipa_axum::routes!`, which adds the
//! route to the axum router and the operation to the document in one call (lib.rs
//! [`crate::api_routes`]), so the two cannot drift. The request and response types derive
//! `ToSchema` where they are defined (most in `voltrun-core`), so a new field shows up in the
//! document by itself.
//!
//! Served at `GET /api/openapi.json`, printed by `voltrun openapi`, and committed as
//! `web/openapi.json`, from which the dashboard's build generates its TypeScript types
//! (`web/src/api-types.ts`, by `openapi-typescript`); a test keeps the copy equal.

use std::sync::OnceLock;

use axum::routing::MethodRouter;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::AppState;

/// Every error the API answers: `{"error": {"code", "message"}}` (error.rs).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code: `validation_failed`, `not_found`, `quota_exceeded`, …
    pub code: String,
    /// A message for people.
    pub message: String,
}

/// The name of the bearer scheme (an access token or an API key in `Authorization`).
pub const BEARER: &str = "bearer";
/// The name of the `X-API-Key` header scheme.
pub const API_KEY: &str = "apiKey";

/// The document before any route is added: title, version, security schemes, the error body.
pub fn base() -> OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("VoltRun API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Generated from the server's handlers and types; see docs/API.md for the prose."))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("An access token (login, register, refresh) or an API key")).build()),
    );
    components.add_security_scheme(API_KEY, SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    components.schemas.insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    components.schemas.insert(ErrorDetail::name().into_owned(), ErrorDetail::schema());
    doc
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", utoipa::openapi::ContentBuilder::new().schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody")))).build())
            .build(),
    )
}

/// What every operation may answer besides its own responses: 401 where credentials are
/// required, 400 for a malformed URI or query, 500 and 503 everywhere. Added here once rather
/// than on each handler.
fn add_common_responses(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops: [&mut Option<Operation>; 8] =
            [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch, &mut item.trace];
        for op in ops.into_iter().flatten() {
            // Secured: credentials required (no empty requirement, which would allow none).
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty() && !s.iter().any(|r| *r == Default::default()));
            let r = &mut op.responses.responses;
            if secured {
                r.entry("401".into()).or_insert_with(|| error_response("No, bad or expired credentials"));
            }
            r.entry("400".into()).or_insert_with(|| error_response("Malformed input (URI, query, body)"));
            r.entry("500".into()).or_insert_with(|| error_response("Internal error (details are logged, never sent)"));
            r.entry("503".into()).or_insert_with(|| error_response("The database is unavailable"));
        }
    }
}

/// Makes every `operationId` unique (OpenAPI requires it): an operation registered for several
/// methods (the trigger's) gets the method appended.
fn unique_operation_ids(doc: &mut OpenApi) {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for item in doc.paths.paths.values() {
        for op in operations(item) {
            if let Some(id) = &op.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
    }
    for item in doc.paths.paths.values_mut() {
        let named = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("options", &mut item.options),
            ("head", &mut item.head),
            ("patch", &mut item.patch),
            ("trace", &mut item.trace),
        ];
        for (method, op) in named {
            if let Some(op) = op {
                if let Some(id) = op.operation_id.as_mut().filter(|id| seen.get(id.as_str()).is_some_and(|n| *n > 1)) {
                    *id = format!("{id}_{method}");
                }
            }
        }
    }
}

/// The operations of a path item.
fn operations(item: &utoipa::openapi::PathItem) -> impl Iterator<Item = &Operation> {
    [&item.get, &item.put, &item.post, &item.delete, &item.options, &item.head, &item.patch, &item.trace].into_iter().flatten()
}

/// The whole document, generated once.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = crate::api_routes().into_openapi();
        add_common_responses(&mut doc);
        unique_operation_ids(&mut doc);
        doc
    })
}

/// The document as pretty JSON with a final newline, as `web/openapi.json` holds it.
pub fn document_json() -> String {
    let mut s = document().to_pretty_json().expect("the OpenAPI document serialises");
    s.push('\n');
    s
}

/// Registers a handler that takes every method (`any`) at `axum_path` (which may hold a
/// `{*wildcard}`), documented by the operations of `documented` (its `routes!`), whose path
/// is the OpenAPI spelling of the same route. The method router `routes!` built is dropped:
/// `any` also takes methods OpenAPI cannot name (CONNECT, extensions), as the trigger must.
pub fn any_route(router: OpenApiRouter<AppState>, axum_path: &str, any: MethodRouter<AppState>, documented: UtoipaMethodRouter<AppState>) -> OpenApiRouter<AppState> {
    let (schemas, paths, _) = documented;
    let mut router = router.route(axum_path, any);
    let doc = router.get_openapi_mut();
    for (path, item) in paths.paths {
        doc.paths.paths.insert(path, item);
    }
    doc.components.get_or_insert_with(Default::default).schemas.extend(schemas);
    router
}

/// `GET /api/openapi.json`: the OpenAPI 3.1 document of every route.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(document_json).clone();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Every (method, path) an axum router answers, read from its `Debug` rendering (axum has no
/// other way to list routes): each route's `Allow` set (HEAD dropped where GET answers it, as
/// the document leaves it out), or every method OpenAPI names for an `any` route. Paths in the
/// OpenAPI spelling (`{*rest}` as `{rest}`). Panics when the rendering is not understood, so
/// an axum upgrade that changes it fails loudly instead of comparing nothing.
pub fn router_operations<S>(router: &axum::Router<S>) -> std::collections::BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    let main = text.split(", fallback_router:").next().expect("a router's Debug");
    let (routes, node) = main.split_once(", node: Node { paths: {").expect("axum's Router Debug has `node: Node { paths: {`");
    let mut paths = std::collections::BTreeMap::new();
    for chunk in node.split("RouteId(").skip(1) {
        let (id, rest) = chunk.split_once("): \"").expect("`RouteId(n): \"path\"`");
        let path = rest.split('"').next().expect("a quoted path");
        paths.insert(id.to_string(), path.replace("{*", "{"));
    }
    let mut ops = std::collections::BTreeSet::new();
    for chunk in routes.split("RouteId(").skip(1) {
        let (id, rest) = chunk.split_once("): ").expect("`RouteId(n): endpoint`");
        let allow = rest.split("allow_header: ").nth(1).unwrap_or_else(|| panic!("no allow_header in {rest}"));
        let path = paths.get(id).unwrap_or_else(|| panic!("route {id} has no path"));
        let methods: Vec<String> = if allow.starts_with("Skip") {
            ["get", "put", "post", "delete", "options", "head", "patch", "trace"].map(String::from).to_vec()
        } else {
            let list = allow.strip_prefix("Bytes(b\"").and_then(|a| a.split('"').next()).unwrap_or_else(|| panic!("allow_header {allow}"));
            let list: Vec<String> = list.split(',').map(str::to_ascii_lowercase).collect();
            let has_get = list.iter().any(|m| m == "get");
            list.into_iter().filter(|m| !(has_get && m == "head")).collect()
        };
        for m in methods {
            ops.insert((m, path.clone()));
        }
    }
    assert_eq!(ops.iter().map(|(_, p)| p).collect::<std::collections::BTreeSet<_>>().len(), paths.len(), "every path has a route: {text}");
    ops
}

/// Every (method, path) the document describes.
pub fn document_operations(doc: &OpenApi) -> std::collections::BTreeSet<(String, String)> {
    let mut ops = std::collections::BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        let named = [
            ("get", &item.get),
            ("put", &item.put),
            ("post", &item.post),
            ("delete", &item.delete),
            ("options", &item.options),
            ("head", &item.head),
            ("patch", &item.patch),
            ("trace", &item.trace),
        ];
        for (m, op) in named {
            if op.is_some() {
                ops.insert((m.to_string(), path.clone()));
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes the server answers (less the dashboard's pages and assets) are exactly the
    /// operations the document describes: a route registered without its annotation, or an
    /// annotation without its route, fails here.
    #[test]
    fn document_has_every_route_and_no_other() {
        let served = router_operations(&crate::routes());
        let dashboard = router_operations(&voltrun_web::router::<AppState>());
        let api: std::collections::BTreeSet<_> = served.difference(&dashboard).cloned().collect();
        let documented = document_operations(document());
        let undocumented: Vec<_> = api.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&api).collect();
        assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
        assert!(unrouted.is_empty(), "documented operations no route answers: {unrouted:?}");
        // The parse found the API, not an empty set that compares equal.
        assert!(api.len() > 20 && api.contains(&("post".to_string(), "/api/functions/{id}/execute".to_string())), "{api:?}");
    }

    /// The comparison catches a route added without the document.
    #[test]
    fn a_route_without_its_annotation_is_noticed() {
        let extra = crate::routes().route("/api/sneaky", axum::routing::get(|| async { "" }));
        let served = router_operations(&extra);
        assert!(served.contains(&("get".to_string(), "/api/sneaky".to_string())), "{served:?}");
        assert!(!document_operations(document()).contains(&("get".to_string(), "/api/sneaky".to_string())));
    }

    /// Every operation says who may call it: the trigger and the auth endpoints are open, every
    /// other `/api` route needs credentials, and those answer 401 in the document.
    #[test]
    fn secured_operations_name_their_schemes_and_401() {
        let doc = document();
        for (path, item) in &doc.paths.paths {
            for op in operations(item) {
                let open =
                    path.starts_with("/api/auth/") && path != "/api/auth/me" || path.starts_with("/api/execute") || !path.starts_with("/api/") || path == "/api/openapi.json";
                let required = op.security.as_ref().is_some_and(|s| !s.is_empty() && !s.iter().any(|r| *r == Default::default()));
                assert_eq!(required, !open, "{path} {:?}", op.operation_id);
                if required {
                    assert!(op.responses.responses.contains_key("401"), "{path} {:?}", op.operation_id);
                }
            }
        }
    }
}
