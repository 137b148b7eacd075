//! The language runtimes a function can use.

use serde::{Deserialize, Serialize};

/// A supported runtime. Stored and served by its canonical id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Runtime {
    /// Node.js 20, CommonJS or ES module handler in `index.js`.
    #[serde(rename = "nodejs20")]
    Nodejs20,
    /// CPython 3.11, handler in `lambda_function.py`.
    #[serde(rename = "python3.11")]
    Python311,
}

impl Runtime {
    /// Every runtime, in the order `/api/runtimes` lists them.
    pub const ALL: [Runtime; 2] = [Runtime::Nodejs20, Runtime::Python311];

    /// Accepts the canonical id or one of its aliases.
    pub fn parse(s: &str) -> Option<Runtime> {
        match s {
            "nodejs20" | "nodejs" | "node" | "nodejs20.x" => Some(Runtime::Nodejs20),
            "python3.11" | "python" | "python3" => Some(Runtime::Python311),
            _ => None,
        }
    }

    /// The canonical id (`nodejs20`, `python3.11`).
    pub fn id(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "nodejs20",
            Runtime::Python311 => "python3.11",
        }
    }

    /// The language name.
    pub fn language(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "javascript",
            Runtime::Python311 => "python",
        }
    }

    /// The major(.minor) version the runtime promises.
    pub fn version(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "20",
            Runtime::Python311 => "3.11",
        }
    }

    /// File name the function's code is written to inside its instance (Lambda's defaults).
    pub fn entry_file(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "index.js",
            Runtime::Python311 => "lambda_function.py",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_canonical_ids() {
        for (alias, id) in [("node", "nodejs20"), ("nodejs", "nodejs20"), ("python", "python3.11"), ("python3", "python3.11")] {
            assert_eq!(Runtime::parse(alias).unwrap().id(), id);
        }
        assert!(Runtime::parse("ruby").is_none());
    }
}
