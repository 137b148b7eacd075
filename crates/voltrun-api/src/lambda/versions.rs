//! PublishVersion, ListVersionsByFunction and the alias operations over the versions store
//! (SPEC §13). Every create and update already makes an immutable version, so PublishVersion
//! publishes nothing new: it answers the latest version's configuration. Aliases are the
//! native ones (the same rows `/api/functions/{id}/aliases` serves); `RoutingConfig`'s
//! `AdditionalVersionWeights` is the native `weights`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use voltrun_core::version::{check_alias, check_alias_name, weights_map};
use voltrun_core::{time, Alias, Function};
use voltrun_store::{AliasRefused, DeleteAlias};

use super::errors::{LambdaError, LambdaResult};
use super::functions::{check_revision, json_response, parse_body, unqualified};
use super::shapes::{self, configuration};
use super::{LambdaCaller, Signed};
use crate::AppState;

/// Largest page of versions or aliases (`MaxItems` above it is cut to it).
const MAX_PAGE: i64 = 50;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PublishRequest {
    code_sha256: Option<String>,
    revision_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfig {
    additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct AliasRequest {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingConfig>,
    revision_id: Option<String>,
}

fn max_items(req: &Signed) -> LambdaResult<i64> {
    match req.query("MaxItems") {
        None => Ok(MAX_PAGE),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n.min(MAX_PAGE)),
            _ => Err(LambdaError::invalid("MaxItems: from 1 to 10000")),
        },
    }
}

/// PublishVersion (201): the latest version's configuration. `CodeSha256` and `RevisionId`,
/// when given, must be the current ones; `Description` is not kept (a version's description
/// is the function's at that version).
pub async fn publish_version(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let r: PublishRequest = parse_body(&req.body)?;
    let f = unqualified(st, req, raw, "PublishVersion").await?;
    check_revision(r.revision_id.as_deref(), &f)?;
    if let Some(sha) = &r.code_sha256 {
        let current = shapes::code_sha256(&f);
        if *sha != current {
            return Err(LambdaError::invalid(format!(
                "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({current}). Please try again with the current CodeSHA256."
            )));
        }
    }
    if f.states.building() {
        return Err(LambdaError::conflict(format!(
            "The operation cannot be performed at this time. An update is in progress for resource: {}",
            shapes::function_arn(&req.caller, &f.name, None)
        )));
    }
    let v = f.version.to_string();
    Ok(json_response(StatusCode::CREATED, configuration(&req.caller, &f, &v, Some(&v))))
}

/// ListVersionsByFunction: `$LATEST` first, then the kept versions newest first, `Marker`
/// being the last version number of the previous page.
pub async fn list_versions(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let f = unqualified(st, req, raw, "ListVersionsByFunction").await?;
    let limit = max_items(req)?;
    let before = match req.query("Marker").filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(m.parse::<i64>().map_err(|_| LambdaError::invalid("Marker: not a marker this API returned"))?),
    };
    let mut out = Vec::new();
    if before.is_none() {
        out.push(configuration(&req.caller, &f, "$LATEST", Some("$LATEST")));
    }
    let versions = st.store.list_versions(&f.id, before, limit + 1).await?;
    let more = versions.len() as i64 > limit;
    let mut last = None;
    for v in versions.iter().take(limit as usize) {
        if let Some(vf) = st.store.version_function(&f, v.version).await? {
            let n = v.version.to_string();
            out.push(configuration(&req.caller, &vf, &n, Some(&n)));
        }
        last = Some(v.version);
    }
    let mut body = json!({"Versions": out});
    if more {
        body["NextMarker"] = json!(last.map(|v| v.to_string()));
    }
    Ok(json_response(StatusCode::OK, body))
}

/// A `RevisionId` of an alias: UUID-shaped, from the function, name and last change.
fn alias_revision(a: &Alias) -> String {
    let d = Sha256::digest(format!("{}\0{}\0{}", a.function_id, a.name, a.updated_at).as_bytes());
    let h: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Lambda's `AliasConfiguration`.
fn alias_configuration(caller: &LambdaCaller, f: &Function, a: &Alias) -> Value {
    let mut v = json!({
        "AliasArn": shapes::function_arn(caller, &f.name, Some(&a.name)),
        "Name": a.name,
        "FunctionVersion": a.version.to_string(),
        "Description": a.description,
        "RevisionId": alias_revision(a),
    });
    if let Some(w) = &a.weights {
        v["RoutingConfig"] = json!({"AdditionalVersionWeights": w});
    }
    v
}

/// A `FunctionVersion`: a version number. `$LATEST` is refused: a VoltRun alias names a
/// version, and the unqualified function already is the moving latest.
fn function_version(v: &str) -> LambdaResult<i64> {
    match v.parse::<i64>() {
        Ok(n) if n >= 1 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ if v == "$LATEST" => {
            Err(LambdaError::invalid("FunctionVersion: an alias names a published version number; an alias to $LATEST is not supported (call the function unqualified)"))
        }
        _ => Err(LambdaError::invalid("FunctionVersion: a version number")),
    }
}

fn refused(caller: &LambdaCaller, f: &Function, a: &Alias, r: AliasRefused) -> LambdaError {
    match r {
        AliasRefused::NoVersion => LambdaError::not_found(format!("Function not found: {}", shapes::function_arn(caller, &f.name, Some(&a.version.to_string())))),
        AliasRefused::NoWeightVersion => LambdaError::invalid("RoutingConfig: the additional version does not exist"),
        AliasRefused::Exists => LambdaError::conflict(format!("Alias already exists: {}", shapes::function_arn(caller, &f.name, Some(&a.name)))),
        AliasRefused::TooMany => LambdaError::conflict(format!("a function has at most {} aliases", voltrun_store::versions::MAX_ALIASES_PER_FUNCTION)),
        AliasRefused::RouteTaken | AliasRefused::RouteOverlap => LambdaError::conflict("the alias's route is taken"),
    }
}

fn alias_not_found(caller: &LambdaCaller, f: &Function, name: &str) -> LambdaError {
    LambdaError::not_found(format!("Alias not found: {}", shapes::function_arn(caller, &f.name, Some(&name.chars().take(64).collect::<String>()))))
}

/// CreateAlias (201).
pub async fn create_alias(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let r: AliasRequest = parse_body(&req.body)?;
    let f = unqualified(st, req, raw, "CreateAlias").await?;
    let name = r.name.ok_or_else(|| LambdaError::invalid("Name is required"))?;
    check_alias_name(&name)?;
    let version = function_version(r.function_version.as_deref().ok_or_else(|| LambdaError::invalid("FunctionVersion is required"))?)?;
    let description = r.description.unwrap_or_default();
    let weights = r.routing_config.and_then(|c| c.additional_version_weights).filter(|w| !w.is_empty());
    let w = check_alias(version, weights.as_ref(), &description, None)?;
    let now = time::now();
    let a = Alias { name, function_id: f.id.clone(), version, weights: weights_map(w), description, route: None, created_at: now.clone(), updated_at: now };
    st.store.insert_alias(&req.caller.user_id, &a).await?.map_err(|e| refused(&req.caller, &f, &a, e))?;
    Ok(json_response(StatusCode::CREATED, alias_configuration(&req.caller, &f, &a)))
}

/// GetAlias.
pub async fn get_alias(st: &AppState, req: &Signed, raw: &str, name: &str) -> LambdaResult<Response> {
    let f = unqualified(st, req, raw, "GetAlias").await?;
    let a = st.store.get_alias(&f.id, name).await?.ok_or_else(|| alias_not_found(&req.caller, &f, name))?;
    Ok(json_response(StatusCode::OK, alias_configuration(&req.caller, &f, &a)))
}

/// UpdateAlias: any of `FunctionVersion`, `Description`, `RoutingConfig` (an empty
/// `AdditionalVersionWeights` ends the split), checked against `RevisionId` when given.
pub async fn update_alias(st: &AppState, req: &Signed, raw: &str, name: &str) -> LambdaResult<Response> {
    let r: AliasRequest = parse_body(&req.body)?;
    let f = unqualified(st, req, raw, "UpdateAlias").await?;
    let mut a = st.store.get_alias(&f.id, name).await?.ok_or_else(|| alias_not_found(&req.caller, &f, name))?;
    if r.revision_id.as_deref().is_some_and(|rev| rev != alias_revision(&a)) {
        return Err(LambdaError::precondition("The Revision Id provided does not match the latest Revision Id. Call the GetAlias API to retrieve the latest Revision Id"));
    }
    let routing_given = r.routing_config.is_some();
    if let Some(v) = r.function_version.as_deref() {
        a.version = function_version(v)?;
    }
    if let Some(d) = r.description {
        a.description = d;
    }
    if let Some(c) = r.routing_config {
        a.weights = c.additional_version_weights.filter(|w| !w.is_empty());
    }
    if a.weight().is_some_and(|(v, _)| v == a.version) && !routing_given {
        a.weights = None;
    }
    let w = check_alias(a.version, a.weights.as_ref(), &a.description, a.route.as_deref())?;
    a.weights = weights_map(w);
    a.updated_at = time::now();
    match st.store.update_alias(&req.caller.user_id, &a).await?.map_err(|e| refused(&req.caller, &f, &a, e))? {
        true => Ok(json_response(StatusCode::OK, alias_configuration(&req.caller, &f, &a))),
        false => Err(alias_not_found(&req.caller, &f, name)),
    }
}

/// DeleteAlias (204).
pub async fn delete_alias(st: &AppState, req: &Signed, raw: &str, name: &str) -> LambdaResult<Response> {
    let f = unqualified(st, req, raw, "DeleteAlias").await?;
    match st.store.delete_alias(&req.caller.user_id, &f.id, name).await? {
        DeleteAlias::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        DeleteAlias::NotFound => Err(alias_not_found(&req.caller, &f, name)),
        DeleteAlias::InUse => Err(LambdaError::conflict("the function's schedule runs this alias; change its schedule_qualifier first")),
    }
}

/// ListAliases: by name, `FunctionVersion` keeps those pointing at that version,
/// `Marker` is the last name of the previous page.
pub async fn list_aliases(st: &AppState, req: &Signed, raw: &str) -> LambdaResult<Response> {
    let f = unqualified(st, req, raw, "ListAliases").await?;
    let limit = max_items(req)? as usize;
    let only = req.query("FunctionVersion").map(function_version).transpose()?;
    let marker = req.query("Marker").filter(|m| !m.is_empty());
    let mut aliases = st.store.list_aliases(&f.id).await?;
    aliases.sort_by(|a, b| a.name.cmp(&b.name));
    let page: Vec<&Alias> = aliases.iter().filter(|a| only.is_none_or(|v| a.versions().contains(&v))).filter(|a| marker.is_none_or(|m| a.name.as_str() > m)).collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let mut body = json!({"Aliases": page.iter().map(|a| alias_configuration(&req.caller, &f, a)).collect::<Vec<_>>()});
    if more {
        body["NextMarker"] = json!(page.last().map(|a| a.name.clone()));
    }
    Ok(json_response(StatusCode::OK, body))
}
