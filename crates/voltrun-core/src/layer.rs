//! Layers (SPEC §10): immutable, numbered versions of a zip that a function mounts under
//! `/opt`. What a layer version is, its name rule, and how a function names the layers it
//! mounts (`"name:version"`, at most [`MAX_FUNCTION_LAYERS`]).

use serde::{Deserialize, Serialize};

use crate::function::ValidationError;

/// Layers one function may mount (Lambda's limit).
pub const MAX_FUNCTION_LAYERS: usize = 5;
/// Bytes a function's package and its layers may take unpacked, in all (Lambda's limit).
pub const MAX_UNPACKED_WITH_LAYERS: u64 = 250 << 20;
const MAX_LAYER_DESCRIPTION: usize = 256;

/// One version of a layer, as the API serves it (never the zip: `size` and `sha256` say
/// which bytes it is).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Layer {
    #[serde(skip)]
    pub user_id: String,
    /// `^[A-Za-z0-9_-]{1,64}$`.
    pub name: String,
    /// 1, 2, …: each upload of a name is the next version; a deleted number is never reused.
    pub version: i64,
    pub description: String,
    /// Bytes of the (canonical) zip; counts against the account's code quota.
    pub size: u64,
    /// Bytes of its files unpacked; counts towards a function's 250 MiB.
    pub unpacked_size: u64,
    /// Files in it.
    pub file_count: u64,
    /// SHA-256 of the zip, hex.
    pub sha256: String,
    pub created_at: String,
}

impl Layer {
    /// `name:version`, as a function names it.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// `^[A-Za-z0-9_-]{1,64}$`
pub fn is_valid_layer_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Checks a layer's description: at most 256 bytes, no control characters.
pub fn validate_layer_description(d: &str) -> Result<(), ValidationError> {
    if d.len() > MAX_LAYER_DESCRIPTION || d.chars().any(char::is_control) {
        return Err(ValidationError::new("description", format!("at most {MAX_LAYER_DESCRIPTION} bytes, no control characters")));
    }
    Ok(())
}

/// A function's reference to one layer version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerRef {
    pub name: String,
    pub version: i64,
}

impl LayerRef {
    /// Parses `name:version` (version a positive integer).
    pub fn parse(s: &str) -> Option<LayerRef> {
        let (name, v) = s.rsplit_once(':')?;
        let version: i64 = v.parse().ok().filter(|n| *n >= 1)?;
        (is_valid_layer_name(name) && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0')).then(|| LayerRef { name: name.to_string(), version })
    }
}

impl std::fmt::Display for LayerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
}

/// Checks a function's `layers` list: at most [`MAX_FUNCTION_LAYERS`] `name:version` entries,
/// each name at most once (two versions of one layer would shadow each other). Whether each
/// exists and is the caller's is the store's question (the API asks it).
pub fn parse_layer_refs(list: &[String]) -> Result<Vec<LayerRef>, ValidationError> {
    if list.len() > MAX_FUNCTION_LAYERS {
        return Err(ValidationError::new("layers", format!("at most {MAX_FUNCTION_LAYERS} layers (got {})", list.len())));
    }
    let mut refs: Vec<LayerRef> = Vec::with_capacity(list.len());
    for s in list {
        let r = LayerRef::parse(s).ok_or_else(|| ValidationError::new("layers", format!("{s:?} is not name:version (a name of A-Z a-z 0-9 _ -, a version from 1)")))?;
        if refs.iter().any(|o| o.name == r.name) {
            return Err(ValidationError::new("layers", format!("layer {:?} is listed twice", r.name)));
        }
        refs.push(r);
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_references() {
        assert!(is_valid_layer_name("numpy_1-x"));
        assert!(is_valid_layer_name("A"));
        assert!(!is_valid_layer_name(""));
        assert!(!is_valid_layer_name("a.b"));
        assert!(!is_valid_layer_name(&"a".repeat(65)));
        assert_eq!(LayerRef::parse("deps:3"), Some(LayerRef { name: "deps".into(), version: 3 }));
        for bad in ["deps", "deps:", "deps:0", "deps:-1", "deps:+1", "deps:01", ":1", "a b:1", "deps:1.5", "x:99999999999999999999"] {
            assert_eq!(LayerRef::parse(bad), None, "{bad}");
        }
        assert_eq!(LayerRef::parse("deps:12").unwrap().to_string(), "deps:12");
    }

    #[test]
    fn a_function_lists_at_most_five_distinct_layers() {
        let l = |v: &[&str]| parse_layer_refs(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&["a:1", "b:2"]).unwrap().len(), 2);
        assert!(l(&[]).unwrap().is_empty());
        let e = l(&["a:1", "b:1", "c:1", "d:1", "e:1", "f:1"]).unwrap_err();
        assert_eq!(e.field, "layers");
        assert!(e.message.contains("at most 5"), "{e}");
        assert!(l(&["a:1", "a:2"]).unwrap_err().message.contains("twice"));
        assert!(l(&["a"]).unwrap_err().message.contains("\"a\" is not name:version"));
    }
}
