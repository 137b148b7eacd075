//! Dependency builds (SPEC §10, issue 15): `pip install --target` / `npm ci` of a package's
//! dependency files, run to completion inside the function's isolation tier, as the function
//! user, with the build's memory, pids and CPU limits, a timeout, and a network that reaches
//! only the package index (resolved here, pinned in the build's `/etc/hosts`, admitted as
//! `addr/32:port` by the issue-14 egress machinery). The output directory becomes a
//! read-only tree in the content-addressed cache ([`crate::build_cache`]).
//!
//! Build scripts (`setup.py`, npm install scripts) are hostile code: the build gets no more
//! than a run of the function gets, plus two writable directories of its own (`/build/src`,
//! a copy of the package, its working directory; `/build/out`, the output) and scratch space
//! (`/build/tmp`). The `process` tier has no isolation, so it refuses builds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use voltrun_core::Runtime;

/// Where live build log lines go (each call is one chunk of text, as it arrives).
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What to build.
#[derive(Clone)]
pub struct BuildRequest {
    /// The function's runtime: its interpreter runs the build (so wheels match it).
    pub runtime: Runtime,
    /// The function's memory; the build gets at least [`BUILD_MIN_MEMORY_MB`].
    pub memory_mb: u32,
    /// The unpacked package on the host (read only; the build works on a copy).
    pub package_dir: PathBuf,
    /// The dependency files, relative to the package root (`requirements.txt`, or
    /// `package.json` and `package-lock.json` when present): their bytes are the cache key.
    /// [`dependency_files`] says which a package has.
    pub dep_files: Vec<String>,
    /// Receives log lines live (optional).
    pub log: Option<LogSink>,
}

impl std::fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRequest")
            .field("runtime", &self.runtime)
            .field("memory_mb", &self.memory_mb)
            .field("package_dir", &self.package_dir)
            .field("dep_files", &self.dep_files)
            .finish()
    }
}

/// A built (or cached) dependency tree.
#[derive(Debug, Clone)]
pub struct BuiltTree {
    /// The cache key (hex SHA-256 of runtime, platform, index and dependency files).
    pub key: String,
    /// The read-only tree on the host (`<data_dir>/deps/<key>`): for Python the `--target`
    /// directory, for Node the `node_modules` directory.
    pub path: PathBuf,
    /// True when it came from the cache (no build ran, nothing was downloaded).
    pub cached: bool,
    /// The build's stdout and stderr (capped at 256 KiB), or a line saying it was cached.
    pub logs: String,
    /// True when the logs were cut at the cap.
    pub logs_truncated: bool,
}

/// Why a build produced no tree.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct BuildFailure {
    /// One line fit for users (`state_reason`).
    pub reason: String,
    /// What the build printed (capped at 256 KiB).
    pub logs: String,
    /// True when the logs were cut at the cap.
    pub logs_truncated: bool,
}

/// The least memory a build gets, whatever the function's.
pub const BUILD_MIN_MEMORY_MB: u32 = 512;
/// The default build timeout (`--build-timeout`).
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// The default bound of the dependency cache (`--build-cache-size`).
pub const DEFAULT_BUILD_CACHE_BYTES: u64 = 5 << 30;

/// The dependency files of the package at `dir` that call for a build (the contract's "when
/// is there a build"), or `None`: Python, a `requirements.txt` with at least one requirement
/// line; Node, a `package.json` with a non-empty `dependencies` object and no `node_modules/`
/// (plus `package-lock.json` when present).
pub fn dependency_files(runtime: Runtime, dir: &Path) -> Option<Vec<String>> {
    match runtime {
        Runtime::Python311 => {
            let text = std::fs::read_to_string(dir.join("requirements.txt")).ok()?;
            let has_requirement = text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).any(|l| !l.is_empty() && !l.starts_with('-'));
            has_requirement.then(|| vec!["requirements.txt".to_string()])
        }
        Runtime::Nodejs20 => {
            if dir.join("node_modules").exists() {
                return None;
            }
            let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
            let json: serde_json::Value = serde_json::from_str(&text).ok()?;
            if json.get("dependencies").and_then(|d| d.as_object()).is_none_or(|d| d.is_empty()) {
                return None;
            }
            let mut files = vec!["package.json".to_string()];
            if dir.join("package-lock.json").is_file() {
                files.push("package-lock.json".to_string());
            }
            Some(files)
        }
    }
}

impl crate::Engine {
    /// Builds the dependency tree of a package (or finds it in the cache). Concurrent calls
    /// for one key build once; the others wait and get the same tree (`cached: true`).
    pub async fn build_dependencies(&self, req: BuildRequest) -> Result<BuiltTree, BuildFailure> {
        let _ = req;
        Err(BuildFailure { reason: "dependency builds are not implemented yet".into(), logs: String::new(), logs_truncated: false })
    }
}
