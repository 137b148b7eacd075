//! Versions and aliases (SPEC §13): `GET /api/functions/{id}/versions[/{n}]`,
//! `DELETE /api/functions/{id}/versions/{n}`, and the aliases of a function
//! (`/api/functions/{id}/aliases[/{name}]`). The snapshots and aliases live in the store
//! (voltrun-store versions.rs); qualified invocation is the execute route's (functions.rs).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::version::{check_alias, check_alias_name, weights_map};
use voltrun_core::{time, Alias, AliasPatch, Function, NewAlias, Qualifier, ValidationError, Version};
use voltrun_store::{AliasRefused, DeleteAlias, DeleteVersion};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json, Query};
use crate::functions::owned;
use crate::openapi::ErrorBody;
use crate::AppState;

/// The routes, nested under `/api/functions`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_versions)).routes(routes!(get_version, delete_version)).routes(routes!(list_aliases, create_alias)).routes(routes!(
        get_alias,
        update_alias,
        delete_alias
    ))
}

/// A page of versions: `next_cursor` is the last version number of a full page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct VersionPage {
    pub items: Vec<Version>,
    #[schema(required)]
    pub next_cursor: Option<String>,
}

/// The aliases of a function.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AliasList {
    pub items: Vec<Alias>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VersionQuery {
    /// Items per page: 1 to 500 (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page (a version number).
    cursor: Option<String>,
}

fn version_not_found() -> ApiError {
    ApiError::Missing { code: "version_not_found", message: "the function has no such version".into() }
}

fn alias_not_found() -> ApiError {
    ApiError::Missing { code: "alias_not_found", message: "the function has no such alias".into() }
}

/// A version number from the path (404 `version_not_found` when it is none).
fn version_number(n: &str) -> ApiResult<i64> {
    match Qualifier::parse(n, "version") {
        Ok(Qualifier::Version(v)) => Ok(v),
        _ => Err(version_not_found()),
    }
}

/// List a function's versions, newest first.
///
/// Every version is kept until deleted, except that versions beyond the newest
/// `--version-retention` (default 100) that no alias nor the schedule points to are pruned.
#[utoipa::path(get, path = "/{id}/versions", tag = "versions", operation_id = "list_function_versions", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), VersionQuery),
    responses(
        (status = 200, description = "A page of versions", body = VersionPage),
        (status = 400, description = "A bad limit or cursor", body = ErrorBody),
        (status = 404, description = "No such function of yours", body = ErrorBody),
    ))]
async fn list_versions(State(st): State<AppState>, caller: Caller, Path(id): Path<String>, Query(q): Query<VersionQuery>) -> ApiResult<axum::Json<VersionPage>> {
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => return Err(ApiError::bad("invalid_query", "limit must be an integer from 1 to 500")),
        },
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| ApiError::bad("invalid_cursor", "the cursor is not one this server issued"))?),
    };
    let f = owned(&st, &caller, &id).await?;
    let items = st.store.list_versions(&f.id, before, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|v| v.version.to_string())).flatten();
    Ok(axum::Json(VersionPage { items, next_cursor }))
}

/// One version of a function, with its single-file code (`code`, when it has one).
#[utoipa::path(get, path = "/{id}/versions/{n}", tag = "versions", operation_id = "get_function_version", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), ("n" = i64, Path, description = "The version number")),
    responses(
        (status = 200, description = "The version", body = Version),
        (status = 404, description = "No such function of yours (`not_found`), or no such version (`version_not_found`)", body = ErrorBody),
    ))]
async fn get_version(State(st): State<AppState>, caller: Caller, Path((id, n)): Path<(String, String)>) -> ApiResult<axum::Json<Version>> {
    let f = owned(&st, &caller, &id).await?;
    let n = version_number(&n)?;
    st.store.get_version(&f.id, n).await?.map(axum::Json).ok_or_else(version_not_found)
}

/// Delete a version.
///
/// The latest cannot be deleted (409 `version_is_latest`), nor a version an alias (as its
/// version or its weighted one) or the schedule points to (409 `version_in_use`).
#[utoipa::path(delete, path = "/{id}/versions/{n}", tag = "versions", operation_id = "delete_function_version", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), ("n" = i64, Path, description = "The version number")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such function of yours, or no such version (`version_not_found`)", body = ErrorBody),
        (status = 409, description = "`version_is_latest` or `version_in_use`", body = ErrorBody),
    ))]
async fn delete_version(State(st): State<AppState>, caller: Caller, Path((id, n)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let f = owned(&st, &caller, &id).await?;
    let n = version_number(&n)?;
    match st.store.delete_version(&f, n).await? {
        DeleteVersion::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteVersion::NotFound => Err(version_not_found()),
        DeleteVersion::Latest => Err(ApiError::Conflicting { code: "version_is_latest", message: "the latest version cannot be deleted".into() }),
        DeleteVersion::InUse => {
            Err(ApiError::Conflicting { code: "version_in_use", message: format!("an alias or the schedule of {} points to version {n}; move it first", f.name) })
        }
    }
}

/// The refusal of an alias write as the API answers it.
fn refused(r: AliasRefused) -> ApiError {
    match r {
        AliasRefused::NoVersion => ValidationError::new("version", "the function has no such version").into(),
        AliasRefused::NoWeightVersion => ValidationError::new("weights", "the function has no such version").into(),
        AliasRefused::Exists => ApiError::Conflicting { code: "alias_exists", message: "the function already has an alias of that name".into() },
        AliasRefused::RouteTaken => ApiError::Conflicting { code: "route_taken", message: "route: another function or alias has it".into() },
        AliasRefused::RouteOverlap => ApiError::Conflicting { code: "route_taken", message: "route: lies under or over another account's route".into() },
        AliasRefused::TooMany => ApiError::QuotaExceeded(format!("a function has at most {} aliases", voltrun_store::versions::MAX_ALIASES_PER_FUNCTION)),
    }
}

/// Create an alias: a name for a version, with at most one weighted extra version.
///
/// `weights: {"<version>": w}` sends that share (0 < w < 1) of invocations to the other
/// version, drawn per invocation from its execution id: u = (first 8 bytes of SHA-256 of the
/// id as a big-endian u64) / 2^64, and u < w runs the weighted version. A `route` makes the
/// HTTP trigger run the alias.
#[utoipa::path(post, path = "/{id}/aliases", tag = "versions", operation_id = "create_alias", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name")), request_body = NewAlias,
    responses(
        (status = 201, description = "The alias", body = Alias),
        (status = 400, description = "`validation_failed` naming the field (name, version, weights, route, description)", body = ErrorBody),
        (status = 404, description = "No such function of yours", body = ErrorBody),
        (status = 409, description = "`alias_exists`, `route_taken`, or `quota_exceeded`", body = ErrorBody),
    ))]
async fn create_alias(State(st): State<AppState>, caller: Caller, Path(id): Path<String>, Json(b): Json<NewAlias>) -> ApiResult<(StatusCode, axum::Json<Alias>)> {
    check_alias_name(&b.name)?;
    let description = b.description.unwrap_or_default();
    let w = check_alias(b.version, b.weights.as_ref(), &description, b.route.as_deref())?;
    let f = owned(&st, &caller, &id).await?;
    let now = time::now();
    let a = Alias { name: b.name, function_id: f.id.clone(), version: b.version, weights: weights_map(w), description, route: b.route, created_at: now.clone(), updated_at: now };
    st.store.insert_alias(&caller.user_id, &a).await?.map_err(refused)?;
    Ok((StatusCode::CREATED, axum::Json(a)))
}

/// List a function's aliases, by name.
#[utoipa::path(get, path = "/{id}/aliases", tag = "versions", operation_id = "list_aliases", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name")),
    responses((status = 200, description = "The aliases", body = AliasList), (status = 404, description = "No such function of yours", body = ErrorBody)))]
async fn list_aliases(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<axum::Json<AliasList>> {
    let f = owned(&st, &caller, &id).await?;
    Ok(axum::Json(AliasList { items: st.store.list_aliases(&f.id).await? }))
}

async fn owned_alias(st: &AppState, caller: &Caller, id: &str, name: &str) -> ApiResult<(Function, Alias)> {
    let f = owned(st, caller, id).await?;
    let a = st.store.get_alias(&f.id, name).await?.ok_or_else(alias_not_found)?;
    Ok((f, a))
}

/// One alias.
#[utoipa::path(get, path = "/{id}/aliases/{name}", tag = "versions", operation_id = "get_alias", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), ("name" = String, Path, description = "The alias")),
    responses((status = 200, description = "The alias", body = Alias), (status = 404, description = "No such function of yours, or no such alias (`alias_not_found`)", body = ErrorBody)))]
async fn get_alias(State(st): State<AppState>, caller: Caller, Path((id, name)): Path<(String, String)>) -> ApiResult<axum::Json<Alias>> {
    Ok(axum::Json(owned_alias(&st, &caller, &id, &name).await?.1))
}

/// Change an alias: any subset of its fields.
///
/// `{"version": 4}` is a rollback (or roll-forward): the next call through the alias, its
/// route included, runs version 4. `{"weights": null}` ends a split; `{"route": null}`
/// unbinds its route.
#[utoipa::path(put, path = "/{id}/aliases/{name}", tag = "versions", operation_id = "update_alias", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), ("name" = String, Path, description = "The alias")), request_body = AliasPatch,
    responses(
        (status = 200, description = "The alias as it is now", body = Alias),
        (status = 400, description = "`validation_failed` naming the field", body = ErrorBody),
        (status = 404, description = "No such function of yours, or no such alias (`alias_not_found`)", body = ErrorBody),
        (status = 409, description = "`route_taken`", body = ErrorBody),
    ))]
async fn update_alias(State(st): State<AppState>, caller: Caller, Path((id, name)): Path<(String, String)>, Json(p): Json<AliasPatch>) -> ApiResult<axum::Json<Alias>> {
    let (_f, mut a) = owned_alias(&st, &caller, &id, &name).await?;
    let weights_given = p.weights.is_some();
    if let Some(v) = p.version {
        a.version = v;
    }
    if let Some(w) = p.weights {
        a.weights = w;
    }
    if let Some(d) = p.description {
        a.description = d.unwrap_or_default();
    }
    if let Some(r) = p.route {
        a.route = r;
    }
    // A split whose extra version became the main one ends (nothing left to split).
    if a.weight().is_some_and(|(v, _)| v == a.version) && !weights_given {
        a.weights = None;
    }
    let w = check_alias(a.version, a.weights.as_ref(), &a.description, a.route.as_deref())?;
    a.weights = weights_map(w);
    a.updated_at = time::now();
    match st.store.update_alias(&caller.user_id, &a).await?.map_err(refused)? {
        true => Ok(axum::Json(a)),
        false => Err(alias_not_found()),
    }
}

/// Delete an alias (409 `alias_in_use` while the function's schedule runs it).
#[utoipa::path(delete, path = "/{id}/aliases/{name}", tag = "versions", operation_id = "delete_alias", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The function's id or name"), ("name" = String, Path, description = "The alias")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such function of yours, or no such alias (`alias_not_found`)", body = ErrorBody),
        (status = 409, description = "`alias_in_use`: the schedule runs it", body = ErrorBody),
    ))]
async fn delete_alias(State(st): State<AppState>, caller: Caller, Path((id, name)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let f = owned(&st, &caller, &id).await?;
    match st.store.delete_alias(&caller.user_id, &f.id, &name).await? {
        DeleteAlias::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteAlias::NotFound => Err(alias_not_found()),
        DeleteAlias::InUse => Err(ApiError::Conflicting { code: "alias_in_use", message: "the function's schedule runs this alias; change schedule_qualifier first".into() }),
    }
}

/// Checks a function's `schedule_qualifier` names something it has (400 naming the field).
pub async fn check_schedule_qualifier(st: &AppState, f: &Function) -> ApiResult<()> {
    match st.store.check_schedule_qualifier(f).await? {
        Ok(()) => Ok(()),
        Err(voltrun_store::Unresolved::Version) => Err(ValidationError::new("schedule_qualifier", "the function has no such version").into()),
        Err(voltrun_store::Unresolved::Alias) => Err(ValidationError::new("schedule_qualifier", "the function has no such alias").into()),
    }
}

/// Splits an execute path's `{id}` into the function and its qualifier (`name:live`), and
/// checks it against `?qualifier=` (both given and different: 400).
pub fn split_qualifier(id: &str, query: Option<&str>) -> ApiResult<(String, Option<Qualifier>)> {
    let (name, in_path) = match id.split_once(':') {
        Some((n, q)) => (n.to_string(), Some(q)),
        None => (id.to_string(), None),
    };
    let q = match (in_path, query) {
        (Some(a), Some(b)) if a != b => return Err(ValidationError::new("qualifier", "the path's qualifier and ?qualifier= differ").into()),
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    let q = q.map(|q| Qualifier::parse(q, "qualifier")).transpose()?;
    Ok((name, q))
}
