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
    /// A custom runtime (SPEC §15): the package's executable `bootstrap`, any language,
    /// speaking the Lambda Runtime API.
    #[serde(rename = "provided")]
    Provided,
}

impl Runtime {
    /// Every runtime, in the order `/api/runtimes` lists them.
    pub const ALL: [Runtime; 3] = [Runtime::Nodejs20, Runtime::Python311, Runtime::Provided];

    /// Accepts the canonical id or one of its aliases (Lambda's names among them: this is the
    /// one place that knows them).
    pub fn parse(s: &str) -> Option<Runtime> {
        match s {
            "nodejs20" | "nodejs" | "node" | "nodejs20.x" => Some(Runtime::Nodejs20),
            "python3.11" | "python" | "python3" => Some(Runtime::Python311),
            "provided" | "provided.al2023" | "provided.al2" => Some(Runtime::Provided),
            _ => None,
        }
    }

    /// The canonical id (`nodejs20`, `python3.11`).
    pub fn id(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "nodejs20",
            Runtime::Python311 => "python3.11",
            Runtime::Provided => "provided",
        }
    }

    /// The language name.
    pub fn language(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "javascript",
            Runtime::Python311 => "python",
            Runtime::Provided => "any",
        }
    }

    /// The major(.minor) version the runtime promises.
    pub fn version(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "20",
            Runtime::Python311 => "3.11",
            // Lambda's current OS-only runtime, whose aliases it answers to.
            Runtime::Provided => "al2023",
        }
    }

    /// File name the function's code is written to inside its instance (Lambda's defaults).
    pub fn entry_file(self) -> &'static str {
        match self {
            Runtime::Nodejs20 => "index.js",
            Runtime::Python311 => "lambda_function.py",
            // Never written: a custom runtime takes packages only (its file is the package's).
            Runtime::Provided => "bootstrap",
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
        for alias in ["provided", "provided.al2023", "provided.al2"] {
            assert_eq!(Runtime::parse(alias), Some(Runtime::Provided));
        }
        assert!(Runtime::parse("ruby").is_none());
        assert!(Runtime::parse("provided.al1").is_none());
    }
}
