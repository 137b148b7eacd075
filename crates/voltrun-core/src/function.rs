//! Functions: the stored record, the create and update inputs, and their validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Runtime, MAX_CODE_BYTES};

/// Memory and time a function may use per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in MiB (64–4096).
    pub memory_mb: u32,
    /// Wall-clock timeout in seconds (1–900).
    pub timeout_s: u32,
}

impl Default for Limits {
    /// The smallest sensible allowance; callers raise it explicitly.
    fn default() -> Self {
        Limits { memory_mb: DEFAULT_MEMORY_MB, timeout_s: DEFAULT_TIMEOUT_S }
    }
}

/// Memory given when a function does not say (MiB).
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// Timeout when a function does not say (seconds).
pub const DEFAULT_TIMEOUT_S: u32 = 30;
/// Retries of a failed async run when a function does not say (as Lambda).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
const MAX_RETRIES: u32 = 10;
const MEMORY_RANGE: std::ops::RangeInclusive<u32> = 64..=4096;
const TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1..=900;
const MAX_ENV_BYTES: usize = 32 * 1024;
const MAX_DESCRIPTION: usize = 1024;

/// A stored function, as served by the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Function {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub runtime: Runtime,
    pub code: String,
    pub handler: String,
    pub memory: u32,
    pub timeout: u32,
    pub env: BTreeMap<String, String>,
    pub route: Option<String>,
    pub public: bool,
    /// Cron expression (UTC) of scheduled runs, if any.
    pub schedule: Option<String>,
    /// Times a failed async or scheduled run is retried (Lambda's default: 2).
    pub max_retries: u32,
    /// Network egress allow-list (SPEC §11), canonical entries; empty = no network.
    #[serde(default)]
    pub egress: Vec<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A function as lists show it: every field but the code, and the code's size. A list never
/// carries code (a user's functions may hold hundreds of MiB of it); `GET /api/functions/{id}`
/// does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionSummary {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub runtime: Runtime,
    /// Bytes of the function's code (UTF-8).
    pub code_bytes: u64,
    pub handler: String,
    pub memory: u32,
    pub timeout: u32,
    pub env: BTreeMap<String, String>,
    pub route: Option<String>,
    pub public: bool,
    pub schedule: Option<String>,
    pub max_retries: u32,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Function {
    /// The run limits this function asks for.
    pub fn limits(&self) -> Limits {
        Limits { memory_mb: self.memory, timeout_s: self.timeout }
    }
}

/// A field that failed validation, with a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The input field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
    /// True when the field is too large rather than malformed (413 rather than 400).
    pub too_large: bool,
}

impl ValidationError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        ValidationError { field, message: message.into(), too_large: false }
    }
}

/// `POST /api/functions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub runtime: String,
    pub code: String,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub memory: Option<u32>,
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub egress: Option<Vec<String>>,
}

/// `PUT /api/functions/{id}` body: any subset of fields; `route` and `description` may be
/// `null` to clear them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub memory: Option<u32>,
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub route: Option<Option<String>>,
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub schedule: Option<Option<String>>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub egress: Option<Vec<String>>,
}

/// Tells a field given as `null` (Some(None)) from a field left out (None).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl NewFunction {
    /// Validates every field and builds the record to store (id and timestamps given).
    pub fn into_function(self, id: String, user_id: String, now: String) -> Result<Function, ValidationError> {
        let f = Function {
            id,
            user_id,
            name: self.name,
            description: self.description.unwrap_or_default(),
            runtime: parse_runtime(&self.runtime)?,
            code: self.code,
            handler: self.handler.unwrap_or_else(|| "handler".into()),
            memory: self.memory.unwrap_or(DEFAULT_MEMORY_MB),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT_S),
            env: self.env.unwrap_or_default(),
            route: self.route,
            public: self.public.unwrap_or(false),
            schedule: self.schedule,
            max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            egress: canonical_egress(self.egress.unwrap_or_default())?,
            version: 1,
            created_at: now.clone(),
            updated_at: now,
        };
        validate(&f)?;
        Ok(f)
    }
}

impl FunctionPatch {
    /// Applies the patch to a copy of `f`, validates it, and bumps the version when anything
    /// changed. Returns the new record and whether it differs from the old one.
    pub fn apply(self, f: &Function, now: String) -> Result<(Function, bool), ValidationError> {
        let mut n = f.clone();
        if let Some(v) = self.name {
            n.name = v;
        }
        if let Some(v) = self.description {
            n.description = v.unwrap_or_default();
        }
        if let Some(v) = self.runtime {
            n.runtime = parse_runtime(&v)?;
        }
        if let Some(v) = self.code {
            n.code = v;
        }
        if let Some(v) = self.handler {
            n.handler = v;
        }
        if let Some(v) = self.memory {
            n.memory = v;
        }
        if let Some(v) = self.timeout {
            n.timeout = v;
        }
        if let Some(v) = self.env {
            n.env = v;
        }
        if let Some(v) = self.route {
            n.route = v;
        }
        if let Some(v) = self.public {
            n.public = v;
        }
        if let Some(v) = self.schedule {
            n.schedule = v;
        }
        if let Some(v) = self.max_retries {
            n.max_retries = v;
        }
        if let Some(v) = self.egress {
            n.egress = canonical_egress(v)?;
        }
        validate(&n)?;
        let changed = n != *f;
        if changed {
            n.version += 1;
            n.updated_at = now;
        }
        Ok((n, changed))
    }
}

/// Validates an `egress` list and returns its canonical spelling (SPEC §11).
fn canonical_egress(entries: Vec<String>) -> Result<Vec<String>, ValidationError> {
    crate::egress::EgressPolicy::parse(&entries).map(|p| p.entries()).map_err(|e| ValidationError::new("egress", e.to_string()))
}

fn parse_runtime(s: &str) -> Result<Runtime, ValidationError> {
    Runtime::parse(s).ok_or_else(|| {
        ValidationError::new("runtime", format!("unknown runtime {s:?}; use nodejs20 or python3.11"))
    })
}

/// `^[a-z0-9][a-z0-9_-]{0,63}$`
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// `^[a-z0-9][a-z0-9_/-]*$`, at most 256 bytes, no empty segment.
pub fn is_valid_route(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_/-".contains(c))
        && !s.contains("//")
        && !s.ends_with('/')
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && s.len() <= 128
}

fn validate(f: &Function) -> Result<(), ValidationError> {
    if !is_valid_name(&f.name) {
        return Err(ValidationError::new(
            "name",
            "must match ^[a-z0-9][a-z0-9_-]{0,63}$ (lowercase letters, digits, _ and -)",
        ));
    }
    if f.description.len() > MAX_DESCRIPTION {
        return Err(ValidationError::new("description", format!("at most {MAX_DESCRIPTION} bytes")));
    }
    if f.description.contains('\0') {
        return Err(ValidationError::new("description", "must not contain NUL bytes"));
    }
    if f.code.contains('\0') {
        return Err(ValidationError::new("code", "must not contain NUL bytes"));
    }
    if f.code.trim().is_empty() {
        return Err(ValidationError::new("code", "must not be empty"));
    }
    if f.code.len() > MAX_CODE_BYTES {
        return Err(ValidationError { too_large: true, ..ValidationError::new("code", "at most 1 MiB") });
    }
    if !is_identifier(&f.handler) {
        return Err(ValidationError::new("handler", "must be an identifier such as `handler`"));
    }
    if !MEMORY_RANGE.contains(&f.memory) {
        return Err(ValidationError::new("memory", "must be between 64 and 4096 (MiB)"));
    }
    if !TIMEOUT_RANGE.contains(&f.timeout) {
        return Err(ValidationError::new("timeout", "must be between 1 and 900 (seconds)"));
    }
    let mut env_bytes = 0;
    for (k, v) in &f.env {
        let valid_key = is_identifier(k) && !k.contains('$');
        if !valid_key {
            return Err(ValidationError::new("env", format!("invalid variable name {k:?}")));
        }
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("VOLTRUN_") || upper.starts_with("AWS_LAMBDA_") || upper == "LAMBDA_TASK_ROOT" {
            return Err(ValidationError::new("env", format!("{k} is reserved")));
        }
        if v.contains('\0') {
            return Err(ValidationError::new("env", format!("value of {k} contains a NUL byte")));
        }
        env_bytes += k.len() + v.len();
    }
    if env_bytes > MAX_ENV_BYTES {
        return Err(ValidationError::new("env", "at most 32 KiB in all"));
    }
    if let Some(r) = &f.route {
        if !is_valid_route(r) {
            return Err(ValidationError::new("route", "must match ^[a-z0-9][a-z0-9_/-]*$ without empty segments"));
        }
    }
    if let Some(s) = &f.schedule {
        crate::cron::Schedule::parse(s).map_err(|e| ValidationError::new("schedule", e))?;
    }
    if f.max_retries > MAX_RETRIES {
        return Err(ValidationError::new("max_retries", format!("at most {MAX_RETRIES}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(json: serde_json::Value) -> Result<Function, ValidationError> {
        let n: NewFunction = serde_json::from_value(json).unwrap();
        n.into_function("fn_1".into(), "usr_1".into(), "t".into())
    }

    #[test]
    fn defaults_and_canonical_runtime() {
        let f = new(serde_json::json!({"name":"hello","runtime":"python","code":"def handler(e,c): return 1"})).unwrap();
        assert_eq!((f.memory, f.timeout, f.handler.as_str(), f.runtime), (128, 30, "handler", Runtime::Python311));
        assert_eq!(f.version, 1);
    }

    #[test]
    fn rejects_each_bad_field() {
        let base = serde_json::json!({"name":"ok","runtime":"node","code":"x"});
        for (field, value) in [
            ("name", serde_json::json!("Bad Name")),
            ("name", serde_json::json!("-x")),
            ("runtime", serde_json::json!("ruby")),
            ("memory", serde_json::json!(32)),
            ("memory", serde_json::json!(5000)),
            ("timeout", serde_json::json!(0)),
            ("timeout", serde_json::json!(901)),
            ("route", serde_json::json!("Bad")),
            ("route", serde_json::json!("a//b")),
            ("handler", serde_json::json!("1x")),
            ("env", serde_json::json!({"AWS_LAMBDA_X": "1"})),
            ("env", serde_json::json!({"A-B": "1"})),
            ("code", serde_json::json!("   ")),
            ("schedule", serde_json::json!("every minute")),
            ("max_retries", serde_json::json!(11)),
        ] {
            let mut j = base.clone();
            j[field] = value.clone();
            let err = new(j).unwrap_err();
            assert_eq!(err.field, field, "{value}");
        }
        let mut j = base.clone();
        j["code"] = serde_json::json!("x".repeat(MAX_CODE_BYTES + 1));
        assert!(new(j).unwrap_err().too_large);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<NewFunction, _> = serde_json::from_value(serde_json::json!({"name":"a","runtime":"node","code":"x","bogus":1}));
        assert!(r.is_err());
    }

    #[test]
    fn patch_bumps_version_only_on_change_and_clears_route() {
        let f = new(serde_json::json!({"name":"a","runtime":"node","code":"x","route":"r"})).unwrap();
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"code":"x"})).unwrap();
        let (same, changed) = p.apply(&f, "t2".into()).unwrap();
        assert!(!changed);
        assert_eq!(same.version, 1);
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"route": null, "memory": 256})).unwrap();
        let (n, changed) = p.apply(&f, "t2".into()).unwrap();
        assert!(changed);
        assert_eq!((n.version, n.route.clone(), n.memory, n.updated_at.as_str()), (2, None, 256, "t2"));
    }
}
