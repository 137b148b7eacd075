//! The function operations: CreateFunction, GetFunction, GetFunctionConfiguration,
//! ListFunctions, UpdateFunctionCode, UpdateFunctionConfiguration, DeleteFunction and
//! GetAccountSettings (versions and aliases: versions.rs).
//! Each translates AWS's request into the native [`NewFunction`] / [`FunctionPatch`] and calls
//! the same create/update paths as `POST`/`PUT /api/functions` (builds, quotas, validation),
//! so a function made either way is the same row.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use voltrun_core::{id, time, Function, FunctionPatch, NewFunction, Qualifier};

use super::errors::{LambdaError, LambdaResult};
use super::shapes::{self, configuration};
use super::{parse_function_name, LambdaCaller, Signed};
use crate::AppState;
use voltrun_store::DeleteVersion;

/// Largest `MaxItems` honoured (a page is at most this many, as the native list's).
const MAX_PAGE: i64 = 50;

/// `FunctionCode` / the code members of UpdateFunctionCode.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct FunctionCode {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    s3_key: Option<String>,
    image_uri: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Environment {
    variables: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct VpcConfig {
    subnet_ids: Option<Vec<String>>,
    security_group_ids: Option<Vec<String>>,
}

/// The members of CreateFunction and UpdateFunctionConfiguration VoltRun reads; the others
/// (Tags, TracingConfig, DeadLetterConfig, KMSKeyArn, …) are accepted and ignored, and those
/// that would change behaviour we do not have are refused ([`refuse_unsupported`]).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct FunctionRequest {
    function_name: Option<String>,
    runtime: Option<String>,
    handler: Option<String>,
    code: Option<FunctionCode>,
    description: Option<String>,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    layers: Option<Vec<String>>,
    vpc_config: Option<VpcConfig>,
    package_type: Option<String>,
    architectures: Option<Vec<String>>,
    file_system_configs: Option<Vec<Value>>,
    revision_id: Option<String>,
    // UpdateFunctionCode's members.
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    s3_key: Option<String>,
    image_uri: Option<String>,
    dry_run: Option<bool>,
}

pub(crate) fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> LambdaResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| LambdaError::bad_content(format!("Could not parse request body into json: {e}")))
}

/// Refuses what VoltRun cannot honour (instead of silently running differently): container
/// images, S3 code, layers by ARN, VPC attachment, file systems, arm64.
fn refuse_unsupported(r: &FunctionRequest) -> LambdaResult<()> {
    if r.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(LambdaError::invalid("PackageType: VoltRun runs Zip functions only"));
    }
    let code_s3 = r.code.as_ref().is_some_and(|c| c.s3_bucket.is_some() || c.s3_key.is_some()) || r.s3_bucket.is_some() || r.s3_key.is_some();
    if code_s3 {
        return Err(LambdaError::invalid("Code: S3Bucket/S3Key are not supported; send the zip as ZipFile"));
    }
    if r.code.as_ref().is_some_and(|c| c.image_uri.is_some()) || r.image_uri.is_some() {
        return Err(LambdaError::invalid("ImageUri: container images are not supported; send the zip as ZipFile"));
    }
    if r.layers.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(LambdaError::invalid("Layers: layers by ARN are not supported through the Lambda API; attach VoltRun layers with PUT /api/functions/{id}"));
    }
    let vpc = r.vpc_config.as_ref().is_some_and(|v| v.subnet_ids.as_ref().is_some_and(|s| !s.is_empty()) || v.security_group_ids.as_ref().is_some_and(|s| !s.is_empty()));
    if vpc {
        return Err(LambdaError::invalid("VpcConfig: VPC attachment is not supported; VoltRun's egress policy is the function's `egress` list"));
    }
    if r.file_system_configs.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(LambdaError::invalid("FileSystemConfigs: file systems are not supported"));
    }
    if r.architectures.as_ref().is_some_and(|a| a.iter().any(|x| x != "x86_64")) {
        return Err(LambdaError::invalid("Architectures: VoltRun runs x86_64 only"));
    }
    Ok(())
}

/// The caller's function called `name`, or `ResourceNotFoundException` in AWS's words.
pub async fn function_of(st: &AppState, caller: &LambdaCaller, name: &str) -> LambdaResult<Function> {
    let not_found = || LambdaError::not_found(format!("Function not found: {}", shapes::function_arn(caller, name, None)));
    if !voltrun_core::function::is_valid_name(name) {
        return Err(not_found());
    }
    st.store.get_function(&caller.user_id, name).await?.filter(|f| f.name == name).ok_or_else(not_found)
}

/// What a `FunctionName` (and `Qualifier`) names.
pub struct Target {
    /// The function as stored now (its latest version).
    pub latest: Function,
    /// The function as the named version runs it: `latest` unqualified, a version's
    /// snapshot, or the main version of an alias.
    pub f: Function,
    /// The qualifier as given (for ARNs); None unqualified.
    pub qualifier: Option<String>,
    /// The `Version` member: `$LATEST`, or the version's number.
    pub version_label: String,
    /// The qualifier to run: None for `$LATEST` or unqualified.
    pub run_as: Option<Qualifier>,
}

/// Resolves a `FunctionName`, from any form [`parse_function_name`] reads, with the
/// `Qualifier` query parameter (both given and different: invalid): `$LATEST` or none → the
/// function; digits → that version (SPEC §13); anything else → an alias.
pub async fn resolve(st: &AppState, req: &Signed, raw_name: &str) -> LambdaResult<Target> {
    let (name, from_name) = parse_function_name(&req.caller, raw_name)?;
    let qualifier = match (from_name, req.query("Qualifier")) {
        (Some(a), Some(b)) if a != b => return Err(LambdaError::invalid("The derived qualifier from the function name does not match the specified qualifier.")),
        (a, b) => a.or(b.map(str::to_string)),
    };
    let latest = function_of(st, &req.caller, &name).await?;
    let not_found = |q: &str| LambdaError::not_found(format!("Function not found: {}", shapes::function_arn(&req.caller, &name, Some(q))));
    let Some(q) = qualifier else {
        return Ok(Target { f: latest.clone(), latest, qualifier: None, version_label: "$LATEST".into(), run_as: None });
    };
    if q == "$LATEST" {
        return Ok(Target { f: latest.clone(), latest, qualifier: Some(q), version_label: "$LATEST".into(), run_as: None });
    }
    if !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = q.parse().map_err(|_| not_found(&q))?;
        let f = st.store.version_function(&latest, n).await?.ok_or_else(|| not_found(&q))?;
        return Ok(Target { f, latest, version_label: n.to_string(), qualifier: Some(q), run_as: Some(Qualifier::Version(n)) });
    }
    if !voltrun_core::version::is_valid_alias_name(&q) {
        return Err(not_found(&q));
    }
    let alias = st.store.get_alias(&latest.id, &q).await?.ok_or_else(|| not_found(&q))?;
    let f = st.store.version_function(&latest, alias.version).await?.ok_or_else(|| not_found(&q))?;
    Ok(Target { f, latest, version_label: alias.version.to_string(), qualifier: Some(q.clone()), run_as: Some(Qualifier::Alias(q)) })
}

/// The unqualified function, or invalid when a qualifier was given (updates and the
/// version and alias operations take the function itself).
pub async fn unqualified(st: &AppState, req: &Signed, raw: &str, what: &str) -> LambdaResult<Function> {
    let t = resolve(st, req, raw).await?;
    if t.qualifier.as_deref().is_some_and(|q| q != "$LATEST") {
        return Err(LambdaError::invalid(format!("{what} takes the unqualified function, not a version or alias")));
    }
    Ok(t.latest)
}

pub(crate) fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// Maps a conflict on the name to AWS's message.
fn create_conflict(e: crate::error::ApiError, caller: &LambdaCaller, name: &str) -> LambdaError {
    match e {
        crate::error::ApiError::Conflict(m) if m.starts_with("name") => LambdaError::conflict(format!("Function already exist: {}", shapes::function_arn(caller, name, None))),
        other => other.into(),
    }
}

/// CreateFunction's request as the native [`NewFunction`]: what is refused, what maps, what
/// is ignored (pure, so the golden files test it).
pub(crate) fn create_draft(body: &[u8]) -> LambdaResult<NewFunction> {
    let r: FunctionRequest = parse_body(body)?;
    refuse_unsupported(&r)?;
    let name = r.function_name.clone().ok_or_else(|| LambdaError::invalid("FunctionName is required"))?;
    if !voltrun_core::function::is_valid_name(&name) {
        return Err(LambdaError::invalid(format!(
            "FunctionName {}: VoltRun names are 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit (no upper case)",
            name.chars().take(64).collect::<String>()
        )));
    }
    let runtime = r.runtime.as_deref().ok_or_else(|| LambdaError::invalid("Runtime is required for a Zip function"))?;
    let runtime = shapes::runtime_in(runtime)?;
    let zip = r.code.as_ref().and_then(|c| c.zip_file.clone()).ok_or_else(|| LambdaError::invalid("Code.ZipFile is required (base64 of the zip)"))?;
    Ok(NewFunction {
        name,
        description: r.description,
        runtime: runtime.to_string(),
        zip: Some(zip),
        handler: r.handler,
        memory: r.memory_size,
        timeout: r.timeout,
        env: r.environment.and_then(|e| e.variables),
        ..Default::default()
    })
}

/// CreateFunction: `POST /2015-03-31/functions` → 201 `FunctionConfiguration`.
pub async fn create(st: &AppState, req: &Signed) -> LambdaResult<Response> {
    let draft = create_draft(&req.body)?;
    let name = draft.name.clone();
    let _slot = crate::functions::package_write_slot().await?;
    let user = req.caller.user_id.clone();
    let f = crate::functions::blocking(move || draft.into_function(id::new_id("fn_"), user, time::now())).await??;
    let f = crate::builds::create(st, f).await.map_err(|e| create_conflict(e, &req.caller, &name))?;
    Ok(json_response(StatusCode::CREATED, configuration(&req.caller, &f, "$LATEST", None)))
}

/// Where GetFunction says the code is: the native package route (bearer or API key auth),
/// on the host the request was signed for.
fn code_location(req: &Signed, f: &Function) -> String {
    let host = req.header("host").unwrap_or("localhost");
    if f.package.is_some() {
        format!("http://{host}/api/functions/{}/package", f.id)
    } else {
        format!("http://{host}/api/functions/{}", f.id)
    }
}

/// GetFunction: the configuration, where the code is, no tags.
pub async fn get(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let t = resolve(st, req, raw).await?;
    let body = json!({
        "Configuration": configuration(&req.caller, &t.f, &t.version_label, t.qualifier.as_deref()),
        "Code": {"RepositoryType": "S3", "Location": code_location(req, &t.latest)},
        "Tags": {},
    });
    Ok(json_response(StatusCode::OK, body))
}

/// GetFunctionConfiguration.
pub async fn get_configuration(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let t = resolve(st, req, raw).await?;
    Ok(json_response(StatusCode::OK, configuration(&req.caller, &t.f, &t.version_label, t.qualifier.as_deref())))
}

/// ListFunctions: newest first, `Marker` / `MaxItems` (at most 50 a page), `NextMarker`
/// while more remain. `FunctionVersion=ALL` lists the unqualified functions as well.
pub async fn list(st: &AppState, req: &Signed) -> LambdaResult<Response> {
    let limit = match req.query("MaxItems") {
        None => MAX_PAGE,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => n.min(MAX_PAGE),
            _ => return Err(LambdaError::invalid("MaxItems: from 1 to 10000")),
        },
    };
    let marker = req.query("Marker").filter(|m| !m.is_empty());
    if marker.is_some_and(|m| m.len() > 64 || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        return Err(LambdaError::invalid("Marker: not a marker this API returned"));
    }
    let items = st.store.list_functions(&req.caller.user_id, marker, limit + 1).await?;
    let more = items.len() as i64 > limit;
    let mut functions = Vec::new();
    let mut last = None;
    for s in items.iter().take(limit as usize) {
        // The list's summaries lack the code the CodeSha256 of a one-file function needs.
        if let Some(f) = st.store.get_function(&req.caller.user_id, &s.id).await? {
            functions.push(configuration(&req.caller, &f, "$LATEST", None));
        }
        last = Some(s.id.clone());
    }
    let mut body = json!({"Functions": functions});
    if more {
        body["NextMarker"] = json!(last);
    }
    Ok(json_response(StatusCode::OK, body))
}

/// Checks an optional `RevisionId` against the function's current one.
pub(crate) fn check_revision(r: Option<&str>, f: &Function) -> LambdaResult<()> {
    match r {
        Some(rev) if rev != shapes::revision_id(f) => {
            Err(LambdaError::precondition("The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id"))
        }
        _ => Ok(()),
    }
}

/// Applies a patch through the native update path (build, quotas, the version bump).
async fn apply(st: &AppState, old: Function, patch: FunctionPatch, dry_run: bool) -> LambdaResult<Function> {
    let has_zip = patch.zip.is_some();
    let _slot = if has_zip { Some(crate::functions::package_write_slot().await?) } else { None };
    let (new, changed, old) = crate::functions::blocking(move || patch.apply(&old, time::now()).map(|(new, changed)| (new, changed, old))).await??;
    if dry_run || !changed {
        return Ok(if dry_run { new } else { old });
    }
    Ok(crate::builds::update(st, &old, new).await?)
}

/// UpdateFunctionConfiguration's request as a native [`FunctionPatch`], and its `RevisionId`.
pub(crate) fn configuration_patch(body: &[u8]) -> LambdaResult<(FunctionPatch, Option<String>)> {
    let r: FunctionRequest = parse_body(body)?;
    refuse_unsupported(&r)?;
    let runtime = r.runtime.as_deref().map(shapes::runtime_in).transpose()?.map(str::to_string);
    let patch = FunctionPatch {
        handler: r.handler,
        description: r.description.map(Some),
        timeout: r.timeout,
        memory: r.memory_size,
        env: r.environment.map(|e| e.variables.unwrap_or_default()),
        runtime,
        ..Default::default()
    };
    Ok((patch, r.revision_id))
}

/// UpdateFunctionConfiguration: Handler, Description, Timeout, MemorySize, Environment (the
/// whole map, as AWS replaces it), Runtime.
pub async fn update_configuration(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let (patch, revision) = configuration_patch(&req.body)?;
    let f = unqualified(st, req, raw, "An update").await?;
    check_revision(revision.as_deref(), &f)?;
    let f = apply(st, f, patch, false).await?;
    Ok(json_response(StatusCode::OK, configuration(&req.caller, &f, "$LATEST", None)))
}

/// UpdateFunctionCode: a new `ZipFile`. `DryRun` checks the zip and answers the
/// configuration it would give, storing nothing. `Publish` changes nothing: every update
/// already makes a version (SPEC §13).
pub async fn update_code(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let r: FunctionRequest = parse_body(&req.body)?;
    refuse_unsupported(&r)?;
    let f = unqualified(st, req, raw, "An update").await?;
    check_revision(r.revision_id.as_deref(), &f)?;
    let zip = r.zip_file.ok_or_else(|| LambdaError::invalid("ZipFile is required (base64 of the zip)"))?;
    let patch = FunctionPatch { zip: Some(zip), ..Default::default() };
    let f = apply(st, f, patch, r.dry_run.unwrap_or(false)).await?;
    Ok(json_response(StatusCode::OK, configuration(&req.caller, &f, "$LATEST", None)))
}

/// DeleteFunction: unqualified, the whole function (every version and alias with it), as
/// the native delete; with a version number, that version (not the latest, nor one an alias
/// points to).
pub async fn delete(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let t = resolve(st, req, raw).await?;
    let f = t.latest;
    match t.run_as {
        None => {}
        Some(Qualifier::Version(n)) => {
            let arn = shapes::function_arn(&req.caller, &f.name, Some(&n.to_string()));
            return match st.store.delete_version(&f, n).await? {
                DeleteVersion::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
                DeleteVersion::NotFound => Err(LambdaError::not_found(format!("Function not found: {arn}"))),
                DeleteVersion::Latest => Err(LambdaError::conflict(format!("{arn} is the latest version; delete the unqualified function to delete it"))),
                DeleteVersion::InUse => Err(LambdaError::conflict(format!("Unable to delete version because the following aliases reference it: {arn}"))),
            };
        }
        Some(_) => return Err(LambdaError::invalid("Deletion of aliases is not supported through DeleteFunction; use DeleteAlias")),
    }
    st.store.delete_function(&req.caller.user_id, &f.id).await?;
    st.engine.cancel_builds(&f.id);
    st.engine.invalidate(&f.id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// GetAccountSettings: the account's quotas and use, in AWS's members.
pub async fn account_settings(st: &AppState, req: &Signed) -> LambdaResult<Response> {
    let q = &st.quotas;
    let pkg = voltrun_package::Limits::zip();
    let used = st.store.function_code_bytes(&req.caller.user_id).await?;
    let count = st.store.count_functions(&req.caller.user_id).await?;
    let body = json!({
        "AccountLimit": {
            "TotalCodeSize": q.code_bytes,
            "CodeSizeUnzipped": pkg.max_unpacked,
            "CodeSizeZipped": pkg.max_zip,
            "ConcurrentExecutions": q.concurrent_runs,
            "UnreservedConcurrentExecutions": q.concurrent_runs,
        },
        "AccountUsage": {"TotalCodeSize": used, "FunctionCount": count},
    });
    Ok(json_response(StatusCode::OK, body))
}
