//! API keys: long random secrets with a visible `vr_` prefix, stored only as a hash, shown
//! once at creation, revocable at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::{id, time};
use voltrun_store::{ApiKey, KeyOwner};

use crate::auth::{random_token, sha256_hex};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json, Paged};
use crate::openapi::ErrorBody;
use crate::AppState;

/// Every API key starts with this, so scanners and people can tell what it is.
pub const KEY_PREFIX: &str = "vr_";
/// Characters of the key shown in lists (the prefix and a few more).
const VISIBLE: usize = 11;

/// Routes under `/api/keys`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(remove))
}

/// `POST /api/keys` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// 1 to 100 characters, no control characters.
    name: String,
    /// 1 to 3650; no expiry when left out.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// An API key as lists show it: never the key itself.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key (`vr_` and a few more), to tell keys apart.
    pub prefix: String,
    pub created_at: String,
    #[schema(required)]
    pub expires_at: Option<String>,
    #[schema(required)]
    pub last_used_at: Option<String>,
    /// The key itself: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn key_view(k: &ApiKey) -> KeyView {
    KeyView {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: k.created_at.clone(),
        expires_at: k.expires_at.clone(),
        last_used_at: k.last_used_at.clone(),
        key: None,
    }
}

/// List your API keys (never the key itself).
#[utoipa::path(get, path = "/", tag = "keys", operation_id = "list_keys", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every key of the account (one page, `next_cursor` null)", body = Paged<KeyView>)))]
async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Paged<KeyView>>> {
    let keys = st.store.list_api_keys(&caller.user_id).await?;
    Ok(axum::Json(Paged { items: keys.iter().map(key_view).collect(), next_cursor: None }))
}

/// Create an API key.
///
/// The answer is the only time the key is shown.
#[utoipa::path(post, path = "/", tag = "keys", operation_id = "create_key", security(("bearer" = []), ("apiKey" = [])), request_body = NewKey,
    responses(
        (status = 201, description = "The new key, with `key`", body = KeyView),
        (status = 409, description = "`quota_exceeded`: past the account's key quota", body = ErrorBody),
    ))]
async fn create(State(st): State<AppState>, caller: Caller, Json(b): Json<NewKey>) -> ApiResult<(StatusCode, axum::Json<KeyView>)> {
    let name = b.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad("validation_failed", "name: 1 to 100 characters, no control characters"));
    }
    if b.expires_in_days.is_some_and(|d| d == 0 || d > 3650) {
        return Err(ApiError::bad("validation_failed", "expires_in_days: from 1 to 3650"));
    }
    let secret = format!("{KEY_PREFIX}{}", random_token(30).replace(['-', '_'], "x"));
    let key = ApiKey {
        id: id::new_id("key_"),
        name: name.to_string(),
        prefix: secret[..VISIBLE].to_string(),
        created_at: time::now(),
        expires_at: b.expires_in_days.map(|d| time::in_seconds(d as i64 * 86400)),
        last_used_at: None,
    };
    st.store.insert_api_key(&caller.user_id, &key, &sha256_hex(&secret), st.quotas.api_keys).await?;
    let body = KeyView { key: Some(secret), ..key_view(&key) };
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// Revoke an API key, at once.
#[utoipa::path(delete, path = "/{id}", tag = "keys", operation_id = "delete_key", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such key of yours", body = ErrorBody)))]
async fn remove(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if st.store.delete_api_key(&caller.user_id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("API key"))
    }
}

/// Records a key's use, at most once a minute per key, off the request's path.
pub fn note_use(st: &AppState, owner: &KeyOwner, now: &str) {
    let fresh = owner.last_used_at.as_deref().and_then(time::parse_ms).zip(time::parse_ms(now)).is_some_and(|(last, now)| now - last < 60_000);
    if fresh {
        return;
    }
    let (store, id, now) = (st.store.clone(), owner.key_id.clone(), now.to_string());
    tokio::spawn(async move {
        if let Err(err) = store.touch_api_key(&id, &now).await {
            tracing::warn!(%err, "could not record API key use");
        }
    });
}
