//! Layers (SPEC §10): `POST /api/layers` publishes the next immutable version of a name from a
//! zip (checked by the package crate's hostile-archive rules, writing nothing), lists, versions,
//! one version, and delete (409 `layer_in_use` while a function mounts it). Layers are private
//! to their owner: another user's is a 404 here and a 400 when a function names it.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::layer::{is_valid_layer_name, parse_layer_refs, validate_layer_description, MAX_UNPACKED_WITH_LAYERS};
use voltrun_core::{time, Function, Layer};
use voltrun_package::{Limits, PackageError};
use voltrun_store::{DeleteLayer, NewLayer};

use crate::error::{ApiError, ApiResult};
use crate::extract::{page_of, Caller, Json, Page, Paged, Query};
use crate::openapi::ErrorBody;
use crate::AppState;

/// Routes under `/api/layers`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).layer(DefaultBodyLimit::max(crate::functions::PACKAGE_BODY_BYTES)).routes(routes!(versions)).routes(routes!(read, remove))
}

/// `POST /api/layers` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLayerBody {
    /// `^[A-Za-z0-9_-]{1,64}$`; a name you have published before gets its next version.
    pub name: String,
    /// The zip, base64: at most 50 MiB, 250 MiB unpacked. `python/` is on Python's path,
    /// `nodejs/node_modules/` on Node's, as in Lambda.
    pub zip: String,
    /// At most 256 bytes.
    #[serde(default)]
    pub description: Option<String>,
}

/// A refused archive as the API's error, as a function's package is refused: 413 past a size
/// limit, 400 `validation_failed` naming the entry otherwise, 500 for the host's own I/O
/// failure.
pub fn package_error(e: PackageError) -> ApiError {
    match e {
        e if e.is_too_large() => ApiError::TooLarge(format!("zip: {e}")),
        PackageError::Io(io) => ApiError::Internal(format!("checking a zip: {io}")),
        e => ApiError::bad("validation_failed", format!("zip: {e}")),
    }
}

/// Decodes and checks a base64 zip (as [`voltrun_package::inspect_zip`], on a blocking
/// thread: it reads the whole archive): the bytes and what they hold.
pub async fn checked_zip(b64: &str) -> ApiResult<(Vec<u8>, voltrun_package::Manifest)> {
    use base64::Engine as _;
    let limits = Limits::zip();
    // 4 characters of base64 per 3 bytes: refuse an oversized zip before decoding it.
    if (b64.len() as u64) / 4 * 3 > limits.max_zip + 3 {
        return Err(ApiError::TooLarge(format!("zip: the zip archive is larger than the limit of {} bytes", limits.max_zip)));
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| package_error(PackageError::Base64(e.to_string())))?;
    let (bytes, manifest) = tokio::task::spawn_blocking(move || {
        let m = voltrun_package::inspect_zip(&bytes, &limits);
        (bytes, m)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the zip check panicked: {e}")))?;
    Ok((bytes, manifest.map_err(package_error)?))
}

/// Publish a layer version.
///
/// Each upload of a name is its next version (1, 2, …), immutable; the zip counts against
/// the account's code quota.
#[utoipa::path(post, path = "/", tag = "layers", operation_id = "create_layer", security(("bearer" = []), ("apiKey" = [])), request_body = NewLayerBody,
    responses(
        (status = 201, description = "The new version", body = Layer),
        (status = 400, description = "`validation_failed`: a bad name or description, or a refused zip: not base64, not a zip, or an entry that escapes the root, is a link or a device, a duplicate or a bomb (named)", body = ErrorBody),
        (status = 409, description = "`quota_exceeded`: past the account's code quota", body = ErrorBody),
        (status = 413, description = "The zip is over 50 MiB, or over 250 MiB or 20,000 files unpacked, or compresses like a bomb", body = ErrorBody),
    ))]
async fn create(State(st): State<AppState>, caller: Caller, Json(b): Json<NewLayerBody>) -> ApiResult<(StatusCode, axum::Json<Layer>)> {
    if !is_valid_layer_name(&b.name) {
        return Err(ApiError::bad("validation_failed", "name: must match ^[A-Za-z0-9_-]{1,64}$"));
    }
    let description = b.description.unwrap_or_default();
    validate_layer_description(&description)?;
    let (bytes, manifest) = checked_zip(&b.zip).await?;
    let new = NewLayer {
        user_id: caller.user_id,
        name: b.name,
        description,
        size: bytes.len() as u64,
        unpacked_size: manifest.unpacked_size,
        file_count: manifest.files.len() as u64,
        sha256: voltrun_package::sha256_hex(&bytes),
        created_at: time::now(),
    };
    let layer = st.store.insert_layer(&new, &bytes, &st.quotas).await?;
    Ok((StatusCode::CREATED, axum::Json(layer)))
}

/// List your layers.
///
/// The latest version of each of the caller's layers, by name.
#[utoipa::path(get, path = "/", tag = "layers", operation_id = "list_layers", security(("bearer" = []), ("apiKey" = [])), params(Page),
    responses((status = 200, description = "A page of layers (the latest version of each)", body = Paged<Layer>)))]
async fn list(State(st): State<AppState>, caller: Caller, Query(p): Query<Page>) -> ApiResult<axum::Json<Paged<Layer>>> {
    let (limit, after) = p.resolve()?;
    let items = st.store.list_layers(&caller.user_id, after.as_deref(), limit).await?;
    Ok(axum::Json(page_of(items, limit, |l| &l.name)))
}

/// Every version of a layer.
#[utoipa::path(get, path = "/{name}/versions", tag = "layers", operation_id = "list_layer_versions", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The layer's name")),
    responses((status = 200, description = "Its versions, newest first (one page, `next_cursor` null)", body = Paged<Layer>), (status = 404, description = "No such layer of yours", body = ErrorBody)))]
async fn versions(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<axum::Json<Paged<Layer>>> {
    let items = st.store.layer_versions(&caller.user_id, &name).await?;
    if items.is_empty() {
        return Err(ApiError::NotFound("layer"));
    }
    Ok(axum::Json(Paged { items, next_cursor: None }))
}

/// Parses the `{n}` of a version path (a positive integer, else 404: no such version).
fn version_of(n: &str) -> ApiResult<i64> {
    n.parse::<i64>().ok().filter(|v| *v >= 1).ok_or(ApiError::NotFound("layer version"))
}

/// One version of a layer.
#[utoipa::path(get, path = "/{name}/versions/{n}", tag = "layers", operation_id = "get_layer_version", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The layer's name"), ("n" = i64, Path, description = "The version")),
    responses((status = 200, description = "The version", body = Layer), (status = 404, description = "No such version of yours", body = ErrorBody)))]
async fn read(State(st): State<AppState>, caller: Caller, Path((name, n)): Path<(String, String)>) -> ApiResult<axum::Json<Layer>> {
    let v = version_of(&n)?;
    st.store.get_layer(&caller.user_id, &name, v).await?.map(axum::Json).ok_or(ApiError::NotFound("layer version"))
}

/// Delete a version of a layer.
///
/// Refused while one of your functions mounts it; its number is never given again.
#[utoipa::path(delete, path = "/{name}/versions/{n}", tag = "layers", operation_id = "delete_layer_version", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The layer's name"), ("n" = i64, Path, description = "The version")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such version of yours", body = ErrorBody),
        (status = 409, description = "`layer_in_use`: a function mounts it (named)", body = ErrorBody),
    ))]
async fn remove(State(st): State<AppState>, caller: Caller, Path((name, n)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let v = version_of(&n)?;
    match st.store.delete_layer(&caller.user_id, &name, v).await? {
        DeleteLayer::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteLayer::NotFound => Err(ApiError::NotFound("layer version")),
        DeleteLayer::InUse(functions) => Err(ApiError::Conflicting {
            code: "layer_in_use",
            message: format!("layer {name}:{v} is used by function{} {}: remove it from their layers first", if functions.len() == 1 { "" } else { "s" }, functions.join(", ")),
        }),
    }
}

/// Checks the layers a function names before it is stored: each must be one of the caller's
/// (else 400 naming it), and with the package unpacked (a `code` function: its one file)
/// they must fit in 250 MiB (else 413). Returns them in the function's order.
pub async fn check_function_layers(st: &AppState, f: &Function) -> ApiResult<Vec<Layer>> {
    if f.layers.is_empty() {
        return Ok(Vec::new());
    }
    let unpacked = f.package.as_ref().map_or(f.code.len() as u64, |p| p.unpacked_size);
    let refs = parse_layer_refs(&f.layers)?;
    let layers = match st.store.resolve_layers(&f.user_id, &refs).await? {
        Ok(l) => l,
        Err(missing) => {
            return Err(ApiError::bad("validation_failed", format!("layers: layer {missing} does not exist (or is not yours); see GET /api/layers/{}/versions", missing.name)));
        }
    };
    let total = unpacked + layers.iter().map(|l| l.unpacked_size).sum::<u64>();
    if total > MAX_UNPACKED_WITH_LAYERS {
        return Err(ApiError::TooLarge(format!(
            "layers: the function and its layers unpack to {total} bytes, over the {MAX_UNPACKED_WITH_LAYERS} bytes (250 MiB) they may take in all"
        )));
    }
    Ok(layers)
}
