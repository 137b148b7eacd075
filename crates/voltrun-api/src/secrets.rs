//! Secrets (SPEC §12): named values a user's functions get as environment variables. The
//! API takes values and never gives them back: every answer carries the name and the
//! timestamps only. Values are sealed by the store (voltrun-store's vault) before they are
//! written, and wiped from this process's buffers once sealed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::secret::{check_value, is_valid_secret_name, SECRET_NAME_RULE};
use voltrun_core::time;
use voltrun_store::{SecretDelete, SecretMeta};
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json, Paged};
use crate::openapi::ErrorBody;
use crate::AppState;

/// Routes under `/api/secrets`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, update, remove))
}

/// `POST /api/secrets` body. No `Debug`: it holds the value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    /// `^[A-Z_][A-Z0-9_]{0,127}$`: also the variable's name in a run's environment.
    name: String,
    /// At most 32 KiB; never shown again.
    value: String,
}

/// `PUT /api/secrets/{name}` body. No `Debug`: it holds the value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    /// The new value (at most 32 KiB); the next run of every function naming it sees it.
    value: String,
}

/// A secret as the API shows it: never its value.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretView {
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

fn view(m: SecretMeta) -> SecretView {
    SecretView { name: m.name, created_at: m.created_at, updated_at: m.updated_at }
}

/// Refuses a value that is too large (413) or holds a NUL (400).
fn checked(value: &str) -> ApiResult<()> {
    check_value(value).map_err(|(too_large, message)| if too_large { ApiError::TooLarge(message) } else { ApiError::bad("validation_failed", message) })
}

/// List your secrets (names and times, never values).
#[utoipa::path(get, path = "/", tag = "secrets", operation_id = "list_secrets", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every secret of the account, by name (one page, `next_cursor` null)", body = Paged<SecretView>)))]
async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Paged<SecretView>>> {
    let items = st.store.list_secrets(&caller.user_id).await?;
    Ok(axum::Json(Paged { items: items.into_iter().map(view).collect(), next_cursor: None }))
}

/// Create a secret.
///
/// The value is sealed at once and never returned by any route.
#[utoipa::path(post, path = "/", tag = "secrets", operation_id = "create_secret", security(("bearer" = []), ("apiKey" = [])), request_body = NewSecret,
    responses(
        (status = 201, description = "Created (no value)", body = SecretView),
        (status = 400, description = "`validation_failed`: a bad name, or a NUL in the value", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken; `quota_exceeded`: past the account's secret quota", body = ErrorBody),
        (status = 413, description = "The value is larger than 32 KiB", body = ErrorBody),
    ))]
async fn create(State(st): State<AppState>, caller: Caller, Json(b): Json<NewSecret>) -> ApiResult<(StatusCode, axum::Json<SecretView>)> {
    let value = Zeroizing::new(b.value);
    if !is_valid_secret_name(&b.name) {
        return Err(ApiError::bad("validation_failed", format!("name: {SECRET_NAME_RULE}")));
    }
    checked(&value)?;
    let meta = st.store.insert_secret(&caller.user_id, &b.name, &value, &time::now(), st.quotas.secrets).await?;
    Ok((StatusCode::CREATED, axum::Json(view(meta))))
}

/// One secret (its name and times, never its value).
#[utoipa::path(get, path = "/{name}", tag = "secrets", operation_id = "get_secret", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The secret's name")),
    responses((status = 200, description = "The secret (no value)", body = SecretView), (status = 404, description = "No such secret of yours", body = ErrorBody)))]
async fn read(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<axum::Json<SecretView>> {
    st.store.get_secret(&caller.user_id, &name).await?.map(|m| axum::Json(view(m))).ok_or(ApiError::NotFound("secret"))
}

/// Replace a secret's value.
///
/// Warm instances of the functions naming it are retired, so their next run sees the new
/// value (on every node: an instance checks the secrets' revision before it is reused).
#[utoipa::path(put, path = "/{name}", tag = "secrets", operation_id = "update_secret", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The secret's name")), request_body = SecretValue,
    responses(
        (status = 200, description = "Updated (no value)", body = SecretView),
        (status = 404, description = "No such secret of yours", body = ErrorBody),
        (status = 413, description = "The value is larger than 32 KiB", body = ErrorBody),
    ))]
async fn update(State(st): State<AppState>, caller: Caller, Path(name): Path<String>, Json(b): Json<SecretValue>) -> ApiResult<axum::Json<SecretView>> {
    let value = Zeroizing::new(b.value);
    checked(&value)?;
    let meta = st.store.update_secret(&caller.user_id, &name, &value, &time::now()).await?.ok_or(ApiError::NotFound("secret"))?;
    for id in st.store.functions_using_secret(&caller.user_id, &name).await? {
        st.engine.invalidate(&id);
    }
    Ok(axum::Json(view(meta)))
}

/// Delete a secret.
///
/// Refused (409) while a function names it in its `secrets`: remove it there first.
#[utoipa::path(delete, path = "/{name}", tag = "secrets", operation_id = "delete_secret", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such secret of yours", body = ErrorBody),
        (status = 409, description = "`conflict`: a function uses it (the message names them)", body = ErrorBody),
    ))]
async fn remove(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    match st.store.delete_secret(&caller.user_id, &name).await? {
        SecretDelete::Deleted => Ok(StatusCode::NO_CONTENT),
        SecretDelete::NotFound => Err(ApiError::NotFound("secret")),
        SecretDelete::InUse(functions) => Err(ApiError::Conflict(format!("secret {name} is in use by function(s) {}; remove it from their `secrets` first", functions.join(", ")))),
    }
}

/// Refuses (400) a function naming secrets the caller does not have (unknown, or another
/// user's: the two are told apart by nobody).
pub async fn check_function_secrets(st: &AppState, user_id: &str, names: &[String]) -> ApiResult<()> {
    let missing = st.store.missing_secrets(user_id, names).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad("validation_failed", format!("secrets: no secret named {} in this account", missing.join(", "))))
}
