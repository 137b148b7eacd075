//! Versions and aliases (SPEC §13): the qualifier a run is called by, the alias rules, and the
//! weighted split. Pure: the store keeps the snapshots, the engine resolves and runs them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::function::ValidationError;
use crate::FunctionState;

/// The alias name that always means the latest version (reserved: no alias may take it).
pub const LATEST: &str = "latest";

/// What a call names beyond the function: a version, the latest, or an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier {
    /// `3`: that version.
    Version(i64),
    /// `latest`: the function's latest version (as an unqualified call).
    Latest,
    /// Any other name: an alias of the function.
    Alias(String),
}

impl Qualifier {
    /// Parses a qualifier: digits are a version (1 or more), `latest` is the latest, a valid
    /// alias name is an alias; anything else is refused naming `field`.
    pub fn parse(s: &str, field: &'static str) -> Result<Qualifier, ValidationError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<i64>() {
                Ok(n) if n >= 1 => Ok(Qualifier::Version(n)),
                _ => Err(ValidationError::new(field, "a version is a number from 1")),
            };
        }
        if s == LATEST {
            return Ok(Qualifier::Latest);
        }
        if is_valid_alias_name(s) {
            return Ok(Qualifier::Alias(s.to_string()));
        }
        Err(ValidationError::new(field, "must be a version number, `latest` or an alias name (^[a-z][a-z0-9_-]{0,63}$)"))
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Qualifier::Version(n) => write!(f, "{n}"),
            Qualifier::Latest => f.write_str(LATEST),
            Qualifier::Alias(a) => f.write_str(a),
        }
    }
}

/// `^[a-z][a-z0-9_-]{0,63}$`, and not `latest` (a leading letter means never all digits).
pub fn is_valid_alias_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.len() <= 64 && b[0].is_ascii_lowercase() && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-') && s != LATEST
}

/// Checks an alias name for a create (400 naming `name`).
pub fn check_alias_name(s: &str) -> Result<(), ValidationError> {
    if s == LATEST {
        return Err(ValidationError::new("name", "`latest` is reserved: it always means the latest version"));
    }
    if !is_valid_alias_name(s) {
        return Err(ValidationError::new("name", "must match ^[a-z][a-z0-9_-]{0,63}$"));
    }
    Ok(())
}

/// An alias's one weighted extra version: `(version, share)` with 0 < share < 1.
pub type Weight = (i64, f64);

/// Parses and checks `weights` (`{"<version>": w}`): at most one entry, a version from 1 that
/// is not `main`, 0 < w < 1. `None` for an empty map. Whether the version exists is the
/// store's check.
pub fn parse_weights(w: &BTreeMap<String, f64>, main: i64) -> Result<Option<Weight>, ValidationError> {
    if w.len() > 1 {
        return Err(ValidationError::new("weights", "at most one extra version"));
    }
    let Some((k, share)) = w.iter().next() else { return Ok(None) };
    let v = match Qualifier::parse(k, "weights") {
        Ok(Qualifier::Version(v)) => v,
        _ => return Err(ValidationError::new("weights", format!("{k:?} is not a version number"))),
    };
    if v == main {
        return Err(ValidationError::new("weights", "the extra version must differ from `version`"));
    }
    if !(share.is_finite() && *share > 0.0 && *share < 1.0) {
        return Err(ValidationError::new("weights", "a share is a number strictly between 0 and 1"));
    }
    Ok(Some((v, *share)))
}

/// The uniform draw of an invocation: the first 8 bytes of SHA-256 of its execution id, as a
/// big-endian u64, over 2^64 (in [0, 1)). Deterministic, so a test can recompute it.
pub fn split_draw(execution_id: &str) -> f64 {
    let hex = voltrun_package::sha256_hex(execution_id.as_bytes());
    let n = u64::from_str_radix(&hex[..16], 16).expect("sha256 hex is hex");
    n as f64 / 18_446_744_073_709_551_616.0
}

/// The version an alias sends the invocation `execution_id` to: the weighted extra version
/// when the draw falls under its share, else the main one.
pub fn pick_version(main: i64, weight: Option<Weight>, execution_id: &str) -> i64 {
    match weight {
        Some((extra, share)) if split_draw(execution_id) < share => extra,
        _ => main,
    }
}

/// One immutable version of a function, as `GET /api/functions/{id}/versions` serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Version {
    pub function_id: String,
    pub version: i64,
    pub runtime: crate::Runtime,
    pub handler: String,
    pub memory: u32,
    pub timeout: u32,
    pub env: BTreeMap<String, String>,
    pub egress: Vec<String>,
    /// Secret NAMES (their values are read at each run: the one thing that is not frozen).
    pub secrets: Vec<String>,
    pub layers: Vec<String>,
    pub description: String,
    /// SHA-256 of the single-file code (the empty string's for a package function).
    pub code_sha256: String,
    #[schema(required)]
    pub package_sha256: Option<String>,
    /// `active` (invokable), `pending` (its build runs) or `failed` (its build failed).
    pub state: FunctionState,
    pub created_at: String,
    /// Aliases pointing at it (as main version or as weighted extra).
    pub aliases: Vec<String>,
    /// The single-file code (only in `GET .../versions/{n}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// An alias of a function, as served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Alias {
    pub name: String,
    pub function_id: String,
    pub version: i64,
    /// `{"<version>": share}` or null.
    #[schema(required)]
    pub weights: Option<BTreeMap<String, f64>>,
    pub description: String,
    #[schema(required)]
    pub route: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Alias {
    /// The alias's weighted extra version, if any.
    pub fn weight(&self) -> Option<Weight> {
        let (k, w) = self.weights.as_ref()?.iter().next()?;
        Some((k.parse().ok()?, *w))
    }

    /// The versions it points to.
    pub fn versions(&self) -> Vec<i64> {
        let mut v = vec![self.version];
        v.extend(self.weight().map(|(x, _)| x));
        v
    }
}

/// The weights map of one extra version.
pub fn weights_map(w: Option<Weight>) -> Option<BTreeMap<String, f64>> {
    w.map(|(v, s)| BTreeMap::from([(v.to_string(), s)]))
}

/// `POST /api/functions/{id}/aliases` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAlias {
    pub name: String,
    pub version: i64,
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
}

/// `PUT /api/functions/{id}/aliases/{name}` body: any subset; `weights`, `route` and
/// `description` may be null to clear them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasPatch {
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default, deserialize_with = "crate::function::nullable")]
    #[schema(value_type = Option<BTreeMap<String, f64>>)]
    pub weights: Option<Option<BTreeMap<String, f64>>>,
    #[serde(default, deserialize_with = "crate::function::nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::function::nullable")]
    #[schema(value_type = Option<String>)]
    pub route: Option<Option<String>>,
}

/// Checks the fields of an alias as it will be stored (name checked apart): `version` from
/// 1, the weights, the description and the route. Returns the parsed weight.
pub fn check_alias(version: i64, weights: Option<&BTreeMap<String, f64>>, description: &str, route: Option<&str>) -> Result<Option<Weight>, ValidationError> {
    if version < 1 {
        return Err(ValidationError::new("version", "a version is a number from 1"));
    }
    let w = match weights {
        Some(w) => parse_weights(w, version)?,
        None => None,
    };
    if description.len() > 1024 || description.contains('\0') {
        return Err(ValidationError::new("description", "at most 1024 bytes, no NUL"));
    }
    if let Some(r) = route {
        if !crate::is_valid_route(r) {
            return Err(ValidationError::new("route", "must match ^[a-z0-9][a-z0-9_/-]*$ without empty segments"));
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers_parse_as_version_latest_or_alias() {
        assert_eq!(Qualifier::parse("3", "q").unwrap(), Qualifier::Version(3));
        assert_eq!(Qualifier::parse("latest", "q").unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse("live", "q").unwrap(), Qualifier::Alias("live".into()));
        for bad in ["", "0", "-1", "Live", "a b", "99999999999999999999999", "_x", &"a".repeat(65)] {
            let e = Qualifier::parse(bad, "qualifier").unwrap_err();
            assert_eq!(e.field, "qualifier", "{bad}");
        }
    }

    #[test]
    fn alias_names_refuse_latest_digits_and_bad_characters() {
        assert!(check_alias_name("live").is_ok());
        assert!(check_alias_name("a-1_b").is_ok());
        for bad in ["latest", "1", "12", "", "Live", "-a", &"a".repeat(65)] {
            assert_eq!(check_alias_name(bad).unwrap_err().field, "name", "{bad}");
        }
    }

    #[test]
    fn weights_allow_one_other_version_with_a_share_strictly_inside_0_1() {
        let m = |k: &str, w: f64| BTreeMap::from([(k.to_string(), w)]);
        assert_eq!(parse_weights(&m("2", 0.1), 1).unwrap(), Some((2, 0.1)));
        assert_eq!(parse_weights(&BTreeMap::new(), 1).unwrap(), None);
        for (w, main) in [(m("1", 0.1), 1), (m("2", 0.0), 1), (m("2", 1.0), 1), (m("2", -0.5), 1), (m("x", 0.1), 1), (m("0", 0.1), 1), (m("2", f64::NAN), 1)] {
            assert_eq!(parse_weights(&w, main).unwrap_err().field, "weights");
        }
        let two = BTreeMap::from([("2".to_string(), 0.1), ("3".to_string(), 0.1)]);
        assert_eq!(parse_weights(&two, 1).unwrap_err().field, "weights");
    }

    #[test]
    fn the_split_is_the_hash_formula_and_roughly_uniform() {
        // Recomputed by hand: SHA-256("ex_1") starts with these 8 bytes.
        let hex = voltrun_package::sha256_hex(b"ex_1");
        let want = u64::from_str_radix(&hex[..16], 16).unwrap() as f64 / 2f64.powi(64);
        assert_eq!(split_draw("ex_1"), want);
        let n = 10_000;
        let hits = (0..n).filter(|i| pick_version(1, Some((2, 0.25)), &format!("ex_{i}")) == 2).count();
        // 0.25 ± 5 standard deviations (σ ≈ 0.0043).
        assert!((2280..=2720).contains(&hits), "{hits}");
        assert_eq!(pick_version(1, None, "ex_1"), 1);
    }
}
