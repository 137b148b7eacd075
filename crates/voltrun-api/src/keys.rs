//! API keys: long random secrets with a visible `vr_` prefix, stored only as a hash, shown
//! once at creation, revocable at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use voltrun_core::{id, time};
use voltrun_store::{ApiKey, KeyOwner};

use crate::auth::{random_token, sha256_hex};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json};
use crate::AppState;

/// Every API key starts with this, so scanners and people can tell what it is.
pub const KEY_PREFIX: &str = "vr_";
/// Characters of the key shown in lists (the prefix and a few more).
const VISIBLE: usize = 11;

/// Routes under `/api/keys`.
pub fn router() -> Router<AppState> {
    Router::new().route("/", get(list).post(create)).route("/{id}", delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

fn key_json(k: &ApiKey) -> Value {
    json!({"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": k.created_at, "expires_at": k.expires_at, "last_used_at": k.last_used_at})
}

async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    let keys = st.store.list_api_keys(&caller.user_id).await?;
    Ok(axum::Json(json!({"items": keys.iter().map(key_json).collect::<Vec<_>>(), "next_cursor": null})))
}

async fn create(State(st): State<AppState>, caller: Caller, Json(b): Json<NewKey>) -> ApiResult<(StatusCode, axum::Json<Value>)> {
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
    let mut body = key_json(&key);
    body["key"] = json!(secret);
    Ok((StatusCode::CREATED, axum::Json(body)))
}

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
