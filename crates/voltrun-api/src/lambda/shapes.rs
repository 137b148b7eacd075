//! AWS's response shapes built from our types: `FunctionConfiguration`, ARNs, runtimes and
//! states in AWS's spelling. Members VoltRun has no notion of are filled with the values a
//! function without them has on AWS (`PackageType: Zip`, `Architectures: [x86_64]`,
//! `TracingConfig: PassThrough`), so SDK code that reads them finds what it expects.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use voltrun_core::build::{FunctionState, UpdateStatus};
use voltrun_core::Function;

use super::errors::{LambdaError, LambdaResult};
use super::LambdaCaller;

/// The Lambda runtime names accepted, each with the VoltRun runtime it maps to.
pub const RUNTIMES: &[(&str, &str)] = &[("python3.11", "python3.11"), ("nodejs20.x", "nodejs20"), ("provided.al2023", "provided"), ("provided.al2", "provided")];

/// Our runtime for a Lambda runtime name (parsed by [`voltrun_core::Runtime::parse`] later,
/// so a runtime this build lacks is refused there, in the same words as natively).
pub fn runtime_in(lambda: &str) -> LambdaResult<&'static str> {
    RUNTIMES.iter().find(|(l, _)| *l == lambda).map(|(_, ours)| *ours).ok_or_else(|| {
        let names: Vec<&str> = RUNTIMES.iter().map(|(l, _)| *l).collect();
        LambdaError::invalid(format!("Value {} at 'runtime' failed to satisfy constraint: Member must be one of {}", lambda.chars().take(64).collect::<String>(), names.join(", ")))
    })
}

/// The Lambda name of one of our runtimes (by id, so a runtime added later maps as well).
pub fn runtime_out(ours: &str) -> &str {
    RUNTIMES.iter().find(|(_, o)| *o == ours).map(|(l, _)| *l).unwrap_or(ours)
}

/// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
pub fn function_arn(caller: &LambdaCaller, name: &str, qualifier: Option<&str>) -> String {
    let base = format!("arn:aws:lambda:{}:{}:function:{name}", caller.region, caller.account_id);
    match qualifier {
        Some(q) => format!("{base}:{q}"),
        None => base,
    }
}

/// A stored time (`2026-12-01T17:00:00.123Z`) as Lambda's `LastModified`
/// (`2026-12-01T17:00:00.123+0000`).
pub fn last_modified(stored: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(stored).map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()).unwrap_or_else(|_| stored.to_string())
}

/// Base64 of the SHA-256 of the code (Lambda's `CodeSha256`): of the stored zip for a
/// package function, of the code text for a one-file function.
pub fn code_sha256(f: &Function) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    match &f.package {
        Some(p) => {
            let bytes: Vec<u8> = (0..p.sha256.len() / 2).filter_map(|i| u8::from_str_radix(&p.sha256[2 * i..2 * i + 2], 16).ok()).collect();
            b64.encode(bytes)
        }
        None => b64.encode(Sha256::digest(f.code.as_bytes())),
    }
}

/// A `RevisionId` for a function at a version: UUID-shaped, from its id and version, so it
/// changes with every update and is the same on every node.
pub fn revision_id(f: &Function) -> String {
    let d = Sha256::digest(format!("{}\0{}", f.id, f.version).as_bytes());
    let h: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn state_name(s: FunctionState) -> &'static str {
    match s {
        FunctionState::Pending => "Pending",
        FunctionState::Active => "Active",
        FunctionState::Failed => "Failed",
    }
}

fn update_status_name(s: UpdateStatus) -> &'static str {
    match s {
        UpdateStatus::InProgress => "InProgress",
        UpdateStatus::Successful => "Successful",
        UpdateStatus::Failed => "Failed",
    }
}

/// Lambda's `FunctionConfiguration` of `f`. `version` is the `Version` member: `$LATEST`
/// for the unqualified function, a number for a published version; `qualifier` goes on the
/// ARN (none for `$LATEST` asked unqualified).
pub fn configuration(caller: &LambdaCaller, f: &Function, version: &str, qualifier: Option<&str>) -> Value {
    let mut c = Map::new();
    c.insert("FunctionName".into(), json!(f.name));
    c.insert("FunctionArn".into(), json!(function_arn(caller, &f.name, qualifier)));
    c.insert("Runtime".into(), json!(runtime_out(f.runtime.id())));
    // Role is accepted and ignored (docs/LAMBDA_API.md): this ARN names no real role.
    c.insert("Role".into(), json!(format!("arn:aws:iam::{}:role/voltrun-ignored", caller.account_id)));
    c.insert("Handler".into(), json!(f.handler));
    c.insert("CodeSize".into(), json!(f.code_bytes()));
    c.insert("Description".into(), json!(f.description));
    c.insert("Timeout".into(), json!(f.timeout));
    c.insert("MemorySize".into(), json!(f.memory));
    c.insert("LastModified".into(), json!(last_modified(&f.updated_at)));
    c.insert("CodeSha256".into(), json!(code_sha256(f)));
    c.insert("Version".into(), json!(version));
    if !f.env.is_empty() {
        c.insert("Environment".into(), json!({"Variables": f.env}));
    }
    c.insert("TracingConfig".into(), json!({"Mode": "PassThrough"}));
    c.insert("RevisionId".into(), json!(revision_id(f)));
    c.insert("Layers".into(), json!([]));
    c.insert("State".into(), json!(state_name(f.states.state)));
    if let Some(r) = &f.states.state_reason {
        c.insert("StateReason".into(), json!(r));
    }
    match f.states.state {
        FunctionState::Pending => {
            c.insert("StateReason".into(), json!("The function is being created."));
            c.insert("StateReasonCode".into(), json!("Creating"));
        }
        FunctionState::Failed => {
            c.insert("StateReasonCode".into(), json!("InternalError"));
        }
        FunctionState::Active => {}
    }
    c.insert("LastUpdateStatus".into(), json!(update_status_name(f.states.last_update_status)));
    if let Some(r) = &f.states.last_update_status_reason {
        c.insert("LastUpdateStatusReason".into(), json!(r));
        c.insert("LastUpdateStatusReasonCode".into(), json!("InternalError"));
    }
    c.insert("PackageType".into(), json!("Zip"));
    c.insert("Architectures".into(), json!(["x86_64"]));
    c.insert("EphemeralStorage".into(), json!({"Size": 512}));
    c.insert("SnapStart".into(), json!({"ApplyOn": "None", "OptimizationStatus": "Off"}));
    c.insert("LoggingConfig".into(), json!({"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", f.name)}));
    Value::Object(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_map_both_ways() {
        assert_eq!(runtime_in("nodejs20.x").unwrap(), "nodejs20");
        assert_eq!(runtime_in("python3.11").unwrap(), "python3.11");
        assert_eq!(runtime_in("provided.al2023").unwrap(), "provided");
        assert_eq!(runtime_in("python3.12").unwrap_err().code, "InvalidParameterValueException");
        assert_eq!(runtime_out("nodejs20"), "nodejs20.x");
        assert_eq!(runtime_out("provided"), "provided.al2023");
    }

    #[test]
    fn last_modified_is_lambdas_spelling() {
        assert_eq!(last_modified("2026-12-01T17:00:00.123Z"), "2026-12-01T17:00:00.123+0000");
    }
}
