//! Request extractors that turn every malformed input into an [`ApiError`] (never axum's
//! plain-text rejections): JSON bodies, query strings, pagination and the caller's identity.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// The raw body, with an oversized body as 413.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Function writes carry packages (crate::functions::PACKAGE_BODY_BYTES).
        let package_write = matches!(*req.method(), axum::http::Method::POST | axum::http::Method::PUT)
            && req.uri().path().strip_prefix("/api/functions").is_some_and(|rest| rest.is_empty() || rest == "/" || (rest[1..].find('/').is_none() && rest != "/test"));
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE && package_write => {
                Err(ApiError::TooLarge(format!("the request body is larger than {} MiB (a zip is at most 50 MiB)", crate::functions::PACKAGE_BODY_BYTES >> 20)))
            }
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge("the request body is larger than 6 MiB".into())),
            Err(rej) => Err(ApiError::bad("bad_body", rej.body_text())),
        }
    }
}

/// A JSON body deserialised into `T` (strict: unknown fields and wrong types are 400).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, state).await?;
        // serde's derive also accepts a struct as an array of its fields in order; the API
        // takes objects only.
        if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            if *first != b'{' && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
                return Err(ApiError::bad("validation_failed", "the request body must be a JSON object"));
            }
        }
        parse_json(&bytes).map(Json)
    }
}

/// Parses JSON with a message that says where it went wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad("invalid_json", "the request body is empty; expected JSON"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let code = match e.classify() {
            Category::Data => "validation_failed",
            _ => "invalid_json",
        };
        ApiError::bad(code, format!("invalid request body: {e}"))
    })
}

/// A query string deserialised into `T`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri).map(|axum::extract::Query(v)| Query(v)).map_err(|e| ApiError::bad("invalid_query", e.body_text()))
    }
}

/// `?limit=&cursor=` of every list.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page: 1 to 500 (default 50).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Page {
    /// The limit (default 50, 1–500) and the id to continue below, if any.
    pub fn resolve(&self) -> Result<(i64, Option<String>), ApiError> {
        let limit = match &self.limit {
            None => 50,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=500).contains(&n) => n,
                _ => return Err(ApiError::bad("invalid_query", "limit must be an integer from 1 to 500")),
            },
        };
        let cursor = match &self.cursor {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| ApiError::bad("invalid_cursor", "the cursor is not one this server issued"))?),
        };
        Ok((limit, cursor))
    }
}

/// The opaque cursor for continuing after the item with id `last_id`.
pub fn encode_cursor(last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_id)
}

fn decode_cursor(c: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?;
    let s = String::from_utf8(bytes).ok()?;
    // Ids, and layer names (which may hold `-`).
    (s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')).then_some(s)
}

/// One page of a list: `{items, next_cursor}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

/// Wraps a page of items: a cursor only when the page is full.
pub fn page_of<T: serde::Serialize>(items: Vec<T>, limit: i64, id_of: impl Fn(&T) -> &str) -> Paged<T> {
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|i| encode_cursor(id_of(i)))).flatten();
    Paged { items, next_cursor }
}

/// The authenticated caller: a user id from an access token or an API key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match crate::auth::authenticate(&parts.headers, state).await? {
            Some(c) => Ok(c),
            None => Err(ApiError::Unauthorized("authentication required: send Authorization: Bearer <token or API key> or X-API-Key".into())),
        }
    }
}
