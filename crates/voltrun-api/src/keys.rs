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
    /// `voltrun` (default): a bearer key; `aws`: an access key id and a secret access key
    /// for the Lambda API's SigV4 signatures (SPEC §14).
    #[serde(default, rename = "type")]
    key_type: Option<String>,
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
    /// The key itself: only in the answer to its creation (a `voltrun` key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `voltrun` or `aws`.
    #[serde(rename = "type")]
    pub key_type: String,
    /// An `aws` key's access key id (`AKIA…`, 20 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// An `aws` key's secret access key (40 characters): only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
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
        key_type: k.key_type.clone(),
        access_key_id: k.access_key_id.clone(),
        secret_access_key: None,
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
        (status = 201, description = "The new key, with `key` (type `voltrun`) or `access_key_id` and `secret_access_key` (type `aws`)", body = KeyView),
        (status = 400, description = "`validation_failed`; `no_master_key` for an `aws` key on a server without a master key", body = ErrorBody),
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
    let expires_at = b.expires_in_days.map(|d| time::in_seconds(d as i64 * 86400));
    match b.key_type.as_deref() {
        None | Some("voltrun") => {}
        Some("aws") => return create_aws(&st, &caller, name, expires_at).await,
        Some(_) => return Err(ApiError::bad("validation_failed", "type: `voltrun` or `aws`")),
    }
    let secret = format!("{KEY_PREFIX}{}", random_token(30).replace(['-', '_'], "x"));
    let key = ApiKey {
        id: id::new_id("key_"),
        name: name.to_string(),
        prefix: secret[..VISIBLE].to_string(),
        created_at: time::now(),
        expires_at,
        last_used_at: None,
        key_type: "voltrun".into(),
        access_key_id: None,
    };
    st.store.insert_api_key(&caller.user_id, &key, &sha256_hex(&secret), st.quotas.api_keys).await?;
    let body = KeyView { key: Some(secret), ..key_view(&key) };
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// Characters of an access key id after `AKIA` (base32's, as AWS's ids).
const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Characters of a secret access key (AWS's are base64-like; these need no escaping anywhere).
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters drawn uniformly from `alphabet` (rejection sampling: no modulo bias).
fn random_from(alphabet: &[u8], n: usize) -> String {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let b = rand::random::<u8>() as usize;
        if b < limit {
            out.push(alphabet[b % alphabet.len()] as char);
        }
    }
    out
}

/// Creates an `aws` key: `AKIA` + 16 base32 characters (80 random bits), and a 40-character
/// secret (~238 random bits) that the store seals under the master key.
async fn create_aws(st: &AppState, caller: &Caller, name: &str, expires_at: Option<String>) -> ApiResult<(StatusCode, axum::Json<KeyView>)> {
    let access_key_id = format!("AKIA{}", random_from(ACCESS_KEY_ALPHABET, 16));
    let secret = zeroize::Zeroizing::new(random_from(SECRET_ALPHABET, 40));
    let key = ApiKey {
        id: id::new_id("key_"),
        name: name.to_string(),
        prefix: access_key_id.clone(),
        created_at: time::now(),
        expires_at,
        last_used_at: None,
        key_type: "aws".into(),
        access_key_id: Some(access_key_id.clone()),
    };
    st.store.insert_aws_key(&caller.user_id, &key, &access_key_id, &secret, st.quotas.api_keys).await?;
    let body = KeyView { secret_access_key: Some(secret.to_string()), ..key_view(&key) };
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
