//! Functions: the stored record, the create and update inputs, and their validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::egress::{EgressPolicy, MAX_EGRESS_ENTRIES};
use crate::{Runtime, MAX_CODE_BYTES};

/// Memory given when a function does not say (MiB).
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// Timeout when a function does not say (seconds).
pub const DEFAULT_TIMEOUT_S: u32 = 30;
/// Retries of a failed async run when a function does not say (as Lambda).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
const MAX_RETRIES: u32 = 10;
pub(crate) const MEMORY_RANGE: std::ops::RangeInclusive<u32> = 64..=4096;
const TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1..=900;
const MAX_ENV_BYTES: usize = 32 * 1024;
const MAX_DESCRIPTION: usize = 1024;

/// A stored function, as served by the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
    #[schema(required)]
    pub route: Option<String>,
    pub public: bool,
    /// Cron expression (UTC) of scheduled runs, if any.
    #[schema(required)]
    pub schedule: Option<String>,
    /// Times a failed async or scheduled run is retried (Lambda's default: 2).
    pub max_retries: u32,
    /// Where the function may connect (SPEC §11), canonical entries; empty: no network.
    #[serde(default)]
    pub egress: Vec<String>,
    /// Names of the owner's secrets its runs get as environment variables (SPEC §12).
    #[serde(default)]
    pub secrets: Vec<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A function as lists show it: every field but the code, and the code's size. A list never
/// carries code (a user's functions may hold hundreds of MiB of it); `GET /api/functions/{id}`
/// does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
    #[schema(required)]
    pub route: Option<String>,
    pub public: bool,
    #[schema(required)]
    pub schedule: Option<String>,
    pub max_retries: u32,
    /// Where the function may connect, canonical entries; empty: no network.
    #[serde(default)]
    pub egress: Vec<String>,
    /// Names of the secrets its runs get (never their values).
    #[serde(default)]
    pub secrets: Vec<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
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
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
    /// Egress entries (SPEC §11); left out or `null`: none.
    #[serde(default, deserialize_with = "deserialize_egress")]
    pub egress: Vec<String>,
    /// Names of your secrets to give its runs as environment variables; left out: none.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
}

/// `PUT /api/functions/{id}` body: any subset of fields; `route` and `description` may be
/// `null` to clear them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
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
    /// Replaces the egress list; `[]` or `null` removes every entry (no network).
    #[serde(default, deserialize_with = "deserialize_egress_patch")]
    pub egress: Option<Vec<String>>,
    /// Replaces the list of secrets the runs get; `[]` removes them all.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
}

/// Tells a field given as `null` (Some(None)) from a field left out (None).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Reads an `egress` field: a list of strings, or `null` for none. Anything else (a number, an
/// object, a list holding a non-string) is an error that names the field and the entry, so the
/// API's 400 says what to fix. The entries themselves are checked by [`validate`].
pub fn deserialize_egress<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    let items = match v {
        serde_json::Value::Null => return Ok(Vec::new()),
        serde_json::Value::Array(items) => items,
        other => return Err(D::Error::custom(format!("egress: must be a list of strings such as [\"198.18.0.0/24\", \"api.example.com:443\"], not {}", json_kind(&other)))),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            serde_json::Value::String(s) => Ok(s),
            other => Err(D::Error::custom(format!("egress: entry {other} (number {} in the list) is not a string", i + 1))),
        })
        .collect()
}

fn deserialize_egress_patch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    deserialize_egress(d).map(Some)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

impl NewFunction {
    /// Validates every field and builds the record to store (id and timestamps given).
    pub fn into_function(self, id: String, user_id: String, now: String) -> Result<Function, ValidationError> {
        let mut f = Function {
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
            egress: self.egress,
            secrets: self.secrets.unwrap_or_default(),
            version: 1,
            created_at: now.clone(),
            updated_at: now,
        };
        f.egress = canonical_egress(&f.egress)?;
        f.secrets = canonical_secrets(&f.secrets)?;
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
            n.egress = v;
        }
        if let Some(v) = self.secrets {
            n.secrets = v;
        }
        // Canonical before the comparison: a list spelled differently but meaning the same is
        // no change (and no new version).
        n.egress = canonical_egress(&n.egress)?;
        n.secrets = canonical_secrets(&n.secrets)?;
        validate(&n)?;
        let changed = n != *f;
        if changed {
            n.version += 1;
            n.updated_at = now;
        }
        Ok((n, changed))
    }
}

/// Validates an egress list (SPEC §11) and returns it in canonical spelling. The error names
/// the first bad entry and says why.
pub fn canonical_egress(entries: &[String]) -> Result<Vec<String>, ValidationError> {
    if entries.len() > MAX_EGRESS_ENTRIES {
        return Err(ValidationError::new("egress", format!("at most {MAX_EGRESS_ENTRIES} entries (got {})", entries.len())));
    }
    let policy = EgressPolicy::parse(entries).map_err(|e| ValidationError::new("egress", format!("entry {:?}: {}", e.entry, e.reason)))?;
    Ok(policy.entries())
}

/// Validates a function's `secrets` list (names only: whether the caller has them is the
/// API's check) and returns it sorted, without duplicates.
pub fn canonical_secrets(names: &[String]) -> Result<Vec<String>, ValidationError> {
    use crate::secret::{is_reserved_variable, is_valid_secret_name, MAX_FUNCTION_SECRETS, SECRET_NAME_RULE};
    let mut out: Vec<String> = names.to_vec();
    out.sort();
    out.dedup();
    if out.len() > MAX_FUNCTION_SECRETS {
        return Err(ValidationError::new("secrets", format!("at most {MAX_FUNCTION_SECRETS} names (got {})", out.len())));
    }
    for n in &out {
        if !is_valid_secret_name(n) {
            return Err(ValidationError::new("secrets", format!("{n:?} {SECRET_NAME_RULE}")));
        }
        if is_reserved_variable(n) {
            return Err(ValidationError::new("secrets", format!("{n} is reserved")));
        }
    }
    Ok(out)
}

fn parse_runtime(s: &str) -> Result<Runtime, ValidationError> {
    Runtime::parse(s).ok_or_else(|| ValidationError::new("runtime", format!("unknown runtime {s:?}; use nodejs20 or python3.11")))
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
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') && s.len() <= 128
}

fn validate(f: &Function) -> Result<(), ValidationError> {
    if !is_valid_name(&f.name) {
        return Err(ValidationError::new("name", "must match ^[a-z0-9][a-z0-9_-]{0,63}$ (lowercase letters, digits, _ and -)"));
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
    if let Some(both) = f.secrets.iter().find(|s| f.env.contains_key(s.as_str())) {
        return Err(ValidationError::new("secrets", format!("{both} is also in env; a variable comes from one or the other")));
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

    fn new_err(json: serde_json::Value) -> String {
        match serde_json::from_value::<NewFunction>(json) {
            Err(e) => e.to_string(),
            Ok(n) => n.into_function("fn_1".into(), "usr_1".into(), "t".into()).unwrap_err().to_string(),
        }
    }

    #[test]
    fn egress_defaults_to_none_and_is_stored_canonical() {
        let f = new(serde_json::json!({"name":"a","runtime":"node","code":"x"})).unwrap();
        assert!(f.egress.is_empty());
        let f = new(serde_json::json!({"name":"a","runtime":"node","code":"x","egress":null})).unwrap();
        assert!(f.egress.is_empty());
        let f = new(serde_json::json!({"name":"a","runtime":"node","code":"x","egress":["198.18.0.7","API.Example.com:443","*.svc.test","PUBLIC"]})).unwrap();
        assert_eq!(f.egress, ["198.18.0.7/32", "api.example.com:443", "*.svc.test", "public"]);
        let out = serde_json::to_value(&f).unwrap();
        assert_eq!(out["egress"], serde_json::json!(["198.18.0.7/32", "api.example.com:443", "*.svc.test", "public"]));
    }

    #[test]
    fn egress_bad_input_names_the_field_and_the_entry() {
        let base = serde_json::json!({"name":"ok","runtime":"node","code":"x"});
        let many: Vec<String> = (0..65).map(|i| format!("198.18.0.{i}")).collect();
        for (value, expect) in [
            (serde_json::json!(["198.18.0.0/33"]), "\"198.18.0.0/33\""),
            (serde_json::json!(["public", "300.1.1.1/8"]), "\"300.1.1.1/8\""),
            (serde_json::json!(["198.18.0.1/24"]), "host bits"),
            (serde_json::json!(["example.com:0"]), "\"example.com:0\""),
            (serde_json::json!(["example.com:65536"]), "\"example.com:65536\""),
            (serde_json::json!(["example.com:http"]), "\"example.com:http\""),
            (serde_json::json!(["exa_mple.com"]), "\"exa_mple.com\""),
            (serde_json::json!([""]), "entry \"\": empty entry"),
            (serde_json::json!(5), "must be a list of strings"),
            (serde_json::json!("198.18.0.0/24"), "must be a list of strings"),
            (serde_json::json!({"a": 1}), "not an object"),
            (serde_json::json!(["public", 5]), "entry 5 (number 2 in the list) is not a string"),
            (serde_json::json!(many), "at most 64 entries (got 65)"),
        ] {
            let mut j = base.clone();
            j["egress"] = value.clone();
            let msg = new_err(j);
            assert!(msg.starts_with("egress: "), "{value}: {msg}");
            assert!(msg.contains(expect), "{value}: {msg} lacks {expect}");
            let p = serde_json::from_value::<FunctionPatch>(serde_json::json!({"egress": value}));
            let f = new(base.clone()).unwrap();
            let msg = match p {
                Err(e) => e.to_string(),
                Ok(p) => p.apply(&f, "t2".into()).unwrap_err().to_string(),
            };
            assert!(msg.starts_with("egress: ") && msg.contains(expect), "patch {value}: {msg}");
        }
        let e = new(serde_json::json!({"name":"ok","runtime":"node","code":"x","egress":["x.com:0"]})).unwrap_err();
        assert_eq!((e.field, e.too_large), ("egress", false));
    }

    #[test]
    fn egress_change_is_a_new_version_and_same_meaning_is_not() {
        let f = new(serde_json::json!({"name":"a","runtime":"node","code":"x","egress":["198.18.0.0/24"]})).unwrap();
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"memory": 256})).unwrap();
        let (n, _) = p.apply(&f, "t2".into()).unwrap();
        assert_eq!(n.egress, ["198.18.0.0/24"], "left out: unchanged");
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"egress": ["198.18.0.0/24"]})).unwrap();
        assert!(!p.apply(&f, "t2".into()).unwrap().1);
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"egress": ["198.18.0.5"]})).unwrap();
        let (n, changed) = p.apply(&f, "t2".into()).unwrap();
        assert!(changed);
        assert_eq!((n.version, n.egress.clone()), (2, vec!["198.18.0.5/32".to_string()]));
        for clear in [serde_json::json!([]), serde_json::Value::Null] {
            let p: FunctionPatch = serde_json::from_value(serde_json::json!({"egress": clear})).unwrap();
            let (n, changed) = p.apply(&f, "t2".into()).unwrap();
            assert!(changed && n.egress.is_empty() && n.version == 2);
        }
    }

    #[test]
    fn secrets_are_sorted_deduplicated_and_checked() {
        let f = new(serde_json::json!({"name":"a","runtime":"node","code":"x","secrets":["B_2","A_1","B_2"]})).unwrap();
        assert_eq!(f.secrets, ["A_1", "B_2"]);
        assert!(new(serde_json::json!({"name":"a","runtime":"node","code":"x"})).unwrap().secrets.is_empty());
        let many: Vec<String> = (0..51).map(|i| format!("S{i}")).collect();
        for bad in [serde_json::json!(["lower"]), serde_json::json!(["PATH"]), serde_json::json!(["VOLTRUN_X"]), serde_json::json!(["AWS_LAMBDA_X"]), serde_json::json!(many)] {
            let e = new(serde_json::json!({"name":"a","runtime":"node","code":"x","secrets": bad})).unwrap_err();
            assert_eq!(e.field, "secrets", "{bad}");
        }
        let e = new(serde_json::json!({"name":"a","runtime":"node","code":"x","secrets":["TOKEN"],"env":{"TOKEN":"plain"}})).unwrap_err();
        assert_eq!(e.field, "secrets");
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"secrets": ["A_1"]})).unwrap();
        let (n, changed) = p.apply(&f, "t2".into()).unwrap();
        assert!(changed && n.secrets == ["A_1"] && n.version == 2);
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"secrets": ["B_2", "A_1"]})).unwrap();
        assert!(!p.apply(&f, "t2".into()).unwrap().1, "the same set in another order is no change");
    }
}
