//! Functions: the stored record, the create and update inputs, and their validation.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use voltrun_package::{handler, Language, Limits, Manifest, PackageError};

use crate::build::FunctionStates;
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
    /// What the schedule runs (SPEC §13): an alias or a version; null: the latest.
    #[serde(default)]
    #[schema(required)]
    pub schedule_qualifier: Option<String>,
    /// Times a failed async or scheduled run is retried (Lambda's default: 2).
    pub max_retries: u32,
    /// Where the function may connect (SPEC §11), canonical entries; empty: no network.
    #[serde(default)]
    pub egress: Vec<String>,
    /// The layers mounted under `/opt`, in order (a later one wins), as `name:version`.
    #[serde(default)]
    pub layers: Vec<String>,
    /// The package of a `files` or `zip` function (SPEC §10); `null` for a `code` function.
    #[serde(default)]
    #[schema(required)]
    pub package: Option<PackageInfo>,
    /// The package's zip when this request brought a new one (to be stored with the record);
    /// never loaded with it: the store's blobs hold it (`Store::get_blob`).
    #[serde(skip)]
    pub package_zip: Option<Arc<Vec<u8>>>,
    /// What the validation of that new package saw at its root (the dependency files'
    /// bytes): a create or update looks its dependency tree up in the cache from this,
    /// without unpacking the package in the request. Never stored.
    #[serde(skip)]
    pub package_root: Option<Arc<PackageRoot>>,
    /// Names of the owner's secrets its runs get as environment variables (SPEC §12).
    #[serde(default)]
    pub secrets: Vec<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    /// `state`, `state_reason`, `last_update_status`, `last_update_status_reason` (SPEC §10).
    #[serde(flatten)]
    pub states: FunctionStates,
}

/// The root of a package as its validation saw it (voltrun-package's [`Manifest`]):
/// the captured dependency files' bytes, those present but too large to capture, and whether
/// it vendors `node_modules/`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PackageRoot {
    /// The bytes of the dependency files at the root (`Manifest::root_files`, each ≤ 1 MiB).
    pub files: BTreeMap<String, Vec<u8>>,
    /// Dependency files at the root that were too large to capture (their bytes are unknown).
    pub uncaptured: Vec<String>,
    /// True when the package has a `node_modules/` directory.
    pub has_node_modules: bool,
}

impl PackageRoot {
    fn of(m: &Manifest) -> PackageRoot {
        PackageRoot {
            files: m.root_files.clone(),
            uncaptured: voltrun_package::archive::CAPTURED.iter().filter(|n| m.has(n) && !m.root_files.contains_key(**n)).map(|n| n.to_string()).collect(),
            has_node_modules: m.has_dir("node_modules"),
        }
    }
}

impl std::fmt::Debug for PackageRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageRoot")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("uncaptured", &self.uncaptured)
            .field("has_node_modules", &self.has_node_modules)
            .finish()
    }
}

/// How a package was given.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// A `files` map, stored as its canonical zip.
    Files,
    /// A zip archive, stored as uploaded.
    Zip,
}

/// What a function's package is (its bytes are in the store, by `sha256`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PackageInfo {
    pub kind: PackageKind,
    /// Lowercase hex SHA-256 of the stored zip.
    pub sha256: String,
    /// Bytes of the stored zip (what counts against the code quota).
    pub size: u64,
    /// Bytes of the files unpacked.
    pub unpacked_size: u64,
    /// Number of files.
    pub file_count: u64,
    /// The root dependency file that needs a build (`requirements.txt`, `package.json`), if any.
    #[schema(required)]
    pub dependencies: Option<String>,
}

impl Function {
    /// Bytes the function holds against the code quota: its package's zip, or its code.
    pub fn code_bytes(&self) -> u64 {
        self.package.as_ref().map(|p| p.size).unwrap_or(self.code.len() as u64)
    }
}

/// The language of a runtime, as the package crate reads handler names.
pub fn language_of(runtime: Runtime) -> Language {
    match runtime {
        Runtime::Nodejs20 => Language::Node,
        Runtime::Python311 => Language::Python,
    }
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
    /// What the schedule runs: an alias or a version; null: the latest.
    #[serde(default)]
    #[schema(required)]
    pub schedule_qualifier: Option<String>,
    pub max_retries: u32,
    /// Where the function may connect, canonical entries; empty: no network.
    #[serde(default)]
    pub egress: Vec<String>,
    /// The layers mounted under `/opt`, in order, as `name:version`.
    #[serde(default)]
    pub layers: Vec<String>,
    /// The package of a `files` or `zip` function; `null` for a `code` function.
    #[serde(default)]
    #[schema(required)]
    pub package: Option<PackageInfo>,
    /// Names of the secrets its runs get (never their values).
    #[serde(default)]
    pub secrets: Vec<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    /// `state`, `state_reason`, `last_update_status`, `last_update_status_reason` (SPEC §10).
    #[serde(flatten)]
    pub states: FunctionStates,
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
    /// A malformed `field` (a 400).
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        ValidationError { field, message: message.into(), too_large: false }
    }
}

/// `POST /api/functions` body: exactly one of `code`, `files` or `zip`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub runtime: String,
    /// The text of one entry file (`handler` names its export).
    #[serde(default)]
    pub code: Option<String>,
    /// A package as `{"relative/path": "text"}` (at most 1,000 files).
    #[serde(default)]
    pub files: Option<BTreeMap<String, String>>,
    /// A package as a base64 zip archive (at most 50 MiB, 250 MiB unpacked).
    #[serde(default)]
    pub zip: Option<String>,
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
    /// What the schedule runs: an alias or a version number; left out: the latest.
    #[serde(default)]
    pub schedule_qualifier: Option<String>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Egress entries (SPEC §11); left out or `null`: none.
    #[serde(default, deserialize_with = "deserialize_egress")]
    pub egress: Vec<String>,
    /// Layers to mount under `/opt`, in order (a later one wins): at most 5 `name:version`
    /// of your own; left out or `null`: none.
    #[serde(default, deserialize_with = "deserialize_layers")]
    pub layers: Vec<String>,
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
    /// Replaces the code or package with one entry file.
    #[serde(default)]
    pub code: Option<String>,
    /// Replaces the code or package with a `files` package.
    #[serde(default)]
    pub files: Option<BTreeMap<String, String>>,
    /// Replaces the code or package with a base64 zip.
    #[serde(default)]
    pub zip: Option<String>,
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
    /// What the schedule runs (alias or version); `null`: the latest.
    #[serde(default, deserialize_with = "nullable")]
    pub schedule_qualifier: Option<Option<String>>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Replaces the egress list; `[]` or `null` removes every entry (no network).
    #[serde(default, deserialize_with = "deserialize_egress_patch")]
    pub egress: Option<Vec<String>>,
    /// Replaces the layer list; `[]` or `null` removes every layer.
    #[serde(default, deserialize_with = "deserialize_layers_patch")]
    pub layers: Option<Vec<String>>,
    /// Replaces the list of secrets the runs get; `[]` removes them all.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
}

/// Tells a field given as `null` (Some(None)) from a field left out (None).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
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

/// Reads a `layers` field: a list of strings, or `null` for none (the entries are checked by
/// [`crate::layer::parse_layer_refs`]).
pub fn deserialize_layers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                other => Err(D::Error::custom(format!("layers: entry {other} is not a \"name:version\" string"))),
            })
            .collect(),
        other => Err(D::Error::custom(format!("layers: must be a list such as [\"deps:1\"], not {}", json_kind(&other)))),
    }
}

fn deserialize_layers_patch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    deserialize_layers(d).map(Some)
}

/// The canonical spelling of a function's layer list (checked: at most 5, `name:version`,
/// each name once).
pub fn canonical_layers(list: &[String]) -> Result<Vec<String>, ValidationError> {
    Ok(crate::layer::parse_layer_refs(list)?.iter().map(ToString::to_string).collect())
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
        let runtime = parse_runtime(&self.runtime)?;
        let explicit_handler = self.handler.is_some();
        let source = Source::of(self.code, self.files, self.zip)?.ok_or_else(|| ValidationError::new("code", "give one of code, files or zip"))?;
        let mut f = Function {
            id,
            user_id,
            name: self.name,
            description: self.description.unwrap_or_default(),
            runtime,
            code: String::new(),
            handler: self.handler.unwrap_or_default(),
            memory: self.memory.unwrap_or(DEFAULT_MEMORY_MB),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT_S),
            env: self.env.unwrap_or_default(),
            route: self.route,
            public: self.public.unwrap_or(false),
            schedule: self.schedule,
            schedule_qualifier: self.schedule_qualifier,
            max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            egress: self.egress,
            layers: canonical_layers(&self.layers)?,
            package: None,
            package_zip: None,
            package_root: None,
            secrets: self.secrets.unwrap_or_default(),
            version: 1,
            created_at: now.clone(),
            updated_at: now,
            states: FunctionStates::default(),
        };
        let manifest = source.install(&mut f, explicit_handler)?;
        f.egress = canonical_egress(&f.egress)?;
        f.secrets = canonical_secrets(&f.secrets)?;
        validate(&f)?;
        check_handler_module(&f, manifest.as_ref())?;
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
        let explicit_handler = self.handler.is_some();
        if let Some(v) = self.handler {
            n.handler = v;
        }
        let mut manifest = None;
        if let Some(source) = Source::of(self.code, self.files, self.zip)? {
            // Switching between a code function and a package resets a handler not given.
            let kind_changes = source.is_package() != f.package.is_some();
            manifest = source.install(&mut n, explicit_handler || !kind_changes)?;
            // The same package again is no change.
            if let (Some(new), Some(old)) = (&n.package, &f.package) {
                if new.sha256 == old.sha256 && new.kind == old.kind {
                    n.package_zip = None;
                    n.package_root = f.package_root.clone();
                }
            }
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
        if let Some(v) = self.schedule_qualifier {
            n.schedule_qualifier = v;
        }
        if let Some(v) = self.max_retries {
            n.max_retries = v;
        }
        if let Some(v) = self.egress {
            n.egress = v;
        }
        if let Some(v) = self.layers {
            n.layers = canonical_layers(&v)?;
        }
        if let Some(v) = self.secrets {
            n.secrets = v;
        }
        // Canonical before the comparison: a list spelled differently but meaning the same is
        // no change (and no new version).
        n.egress = canonical_egress(&n.egress)?;
        n.secrets = canonical_secrets(&n.secrets)?;
        validate(&n)?;
        check_handler_module(&n, manifest.as_ref())?;
        let changed = n != *f;
        if changed {
            n.version += 1;
            n.updated_at = now;
        }
        Ok((n, changed))
    }
}

/// The one code source of a create or update.
enum Source {
    Code(String),
    Files(BTreeMap<String, String>),
    Zip(String),
}

impl Source {
    /// The source given, refusing more than one; `None` when none is.
    fn of(code: Option<String>, files: Option<BTreeMap<String, String>>, zip: Option<String>) -> Result<Option<Source>, ValidationError> {
        let given = [code.is_some(), files.is_some(), zip.is_some()].iter().filter(|g| **g).count();
        if given > 1 {
            let field = if code.is_some() { "code" } else { "files" };
            return Err(ValidationError::new(field, "give only one of code, files or zip"));
        }
        Ok(code.map(Source::Code).or(files.map(Source::Files)).or(zip.map(Source::Zip)))
    }

    fn is_package(&self) -> bool {
        !matches!(self, Source::Code(_))
    }

    /// Puts the source into `f` (code or package, and the default handler unless
    /// `keep_handler`); the package's manifest when it is one.
    fn install(self, f: &mut Function, keep_handler: bool) -> Result<Option<Manifest>, ValidationError> {
        let language = language_of(f.runtime);
        let (kind, zip, manifest) = match self {
            Source::Code(code) => {
                f.code = code;
                f.package = None;
                f.package_zip = None;
                f.package_root = None;
                if !keep_handler {
                    f.handler = "handler".into();
                }
                return Ok(None);
            }
            Source::Files(files) => {
                let limits = Limits::files();
                let zip = voltrun_package::zip_from_files(&files, &limits).map_err(|e| package_error("files", e))?;
                let manifest = voltrun_package::inspect_zip(&zip, &limits).map_err(|e| package_error("files", e))?;
                (PackageKind::Files, zip, manifest)
            }
            Source::Zip(b64) => {
                let limits = Limits::zip();
                // Base64 is 4/3 of the bytes: refuse what cannot fit before decoding it.
                if (b64.len() as u64) / 4 * 3 > limits.max_zip + 3 {
                    return Err(package_error("zip", PackageError::TooLarge { what: "the zip archive".into(), limit: limits.max_zip }));
                }
                use base64::Engine as _;
                let zip = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| package_error("zip", PackageError::Base64(e.to_string())))?;
                let manifest = voltrun_package::inspect_zip(&zip, &limits).map_err(|e| package_error("zip", e))?;
                (PackageKind::Zip, zip, manifest)
            }
        };
        if manifest.files.is_empty() {
            return Err(ValidationError::new(if kind == PackageKind::Files { "files" } else { "zip" }, "the package has no files"));
        }
        let field = if kind == PackageKind::Files { "files" } else { "zip" };
        let dependencies = voltrun_package::dependencies_file(&manifest, language).map_err(|e| ValidationError::new(field, e))?.map(str::to_string);
        f.code = String::new();
        f.package = Some(PackageInfo {
            kind,
            sha256: voltrun_package::sha256_hex(&zip),
            size: zip.len() as u64,
            unpacked_size: manifest.unpacked_size,
            file_count: manifest.files.len() as u64,
            dependencies,
        });
        f.package_zip = Some(Arc::new(zip));
        f.package_root = Some(Arc::new(PackageRoot::of(&manifest)));
        if !keep_handler {
            f.handler = language.default_handler().into();
        }
        Ok(Some(manifest))
    }
}

/// A refused package as the field's validation error (413 when too large).
fn package_error(field: &'static str, e: PackageError) -> ValidationError {
    ValidationError { too_large: e.is_too_large(), ..ValidationError::new(field, e.to_string()) }
}

/// With a new package, the handler's module must be one of its files.
fn check_handler_module(f: &Function, manifest: Option<&Manifest>) -> Result<(), ValidationError> {
    let Some(m) = manifest else { return Ok(()) };
    let language = language_of(f.runtime);
    let h = handler::parse(&f.handler, language).map_err(|e| ValidationError::new("handler", e.to_string()))?;
    let candidates = language.module_files(&h.module);
    if !candidates.iter().any(|c| m.has(c)) {
        return Err(ValidationError::new("handler", format!("handler {:?}: the package has no {}", f.handler, candidates.join(" or "))));
    }
    Ok(())
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
    if f.package.is_some() {
        handler::parse(&f.handler, language_of(f.runtime)).map_err(|e| ValidationError::new("handler", e.to_string()))?;
    } else {
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
    if let Some(q) = &f.schedule_qualifier {
        crate::version::Qualifier::parse(q, "schedule_qualifier")?;
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

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_files_package_gets_its_default_handler_and_package_info() {
        let f = new(serde_json::json!({"name":"p","runtime":"python","files":{"main.py":"def handler(e, c): return 1\n","pkg/__init__.py":"","requirements.txt":"requests\n"}}))
            .unwrap();
        assert_eq!((f.handler.as_str(), f.code.as_str()), ("main.handler", ""));
        let p = f.package.clone().unwrap();
        assert_eq!((p.kind, p.file_count, p.dependencies.as_deref()), (PackageKind::Files, 3, Some("requirements.txt")));
        assert_eq!(p.sha256, voltrun_package::sha256_hex(f.package_zip.as_ref().unwrap()));
        assert_eq!(f.code_bytes(), p.size);
        let out = serde_json::to_value(&f).unwrap();
        assert_eq!(out["package"]["kind"], "files");
        assert!(out.get("package_zip").is_none());
    }

    #[test]
    fn a_zip_package_for_node_defaults_to_index_handler_and_checks_the_module() {
        let zip = voltrun_package::zip_from_files(&[("index.mjs".to_string(), "export const handler = async () => 1;".to_string())].into(), &Limits::files()).unwrap();
        let f = new(serde_json::json!({"name":"n","runtime":"node","zip": b64(&zip)})).unwrap();
        assert_eq!((f.handler.as_str(), f.package.as_ref().unwrap().kind), ("index.handler", PackageKind::Zip));
        let e = new(serde_json::json!({"name":"n","runtime":"node","zip": b64(&zip), "handler": "app.handler"})).unwrap_err();
        assert_eq!(e.field, "handler");
        assert!(e.message.contains("app.js"), "{e}");
        let e = new(serde_json::json!({"name":"n","runtime":"node","zip": b64(&zip), "handler": "handler"})).unwrap_err();
        assert!(e.field == "handler" && e.message.contains("module.function"), "{e}");
    }

    #[test]
    fn exactly_one_source_and_bad_zips_name_the_field() {
        let e = new(serde_json::json!({"name":"n","runtime":"node","code":"x","files":{"index.js":""}})).unwrap_err();
        assert!(e.message.contains("only one"), "{e}");
        assert_eq!(new(serde_json::json!({"name":"n","runtime":"node"})).unwrap_err().field, "code");
        let e = new(serde_json::json!({"name":"n","runtime":"node","zip":"not base64!"})).unwrap_err();
        assert!(e.field == "zip" && e.message.contains("base64"), "{e}");
        let e = new(serde_json::json!({"name":"n","runtime":"node","zip": b64(b"plain text, no zip")})).unwrap_err();
        assert!(e.field == "zip" && e.message.contains("not a zip"), "{e}");
        let e = new(serde_json::json!({"name":"n","runtime":"node","zip": "A".repeat(80 << 20)})).unwrap_err();
        assert!(e.field == "zip" && e.too_large, "{e}");
        let e = new(serde_json::json!({"name":"n","runtime":"python","files":{"../main.py":"x"}})).unwrap_err();
        assert!(e.field == "files" && e.message.contains("\"../main.py\""), "{e}");
    }

    #[test]
    fn a_patch_between_code_and_package_resets_the_handler_and_the_same_package_is_no_change() {
        let f = new(serde_json::json!({"name":"a","runtime":"python","code":"def handler(e,c): return 1"})).unwrap();
        let files = serde_json::json!({"main.py":"def handler(e, c): return 2\n"});
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"files": files})).unwrap();
        let (n, changed) = p.apply(&f, "t2".into()).unwrap();
        assert!(changed && n.handler == "main.handler" && n.code.is_empty() && n.package_zip.is_some());
        let mut stored = n.clone();
        stored.package_zip = None;
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"files": files})).unwrap();
        assert!(!p.apply(&stored, "t3".into()).unwrap().1);
        let p: FunctionPatch = serde_json::from_value(serde_json::json!({"code": "def handler(e,c): return 3"})).unwrap();
        let (back, _) = p.apply(&stored, "t3".into()).unwrap();
        assert!(back.package.is_none() && back.handler == "handler");
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
