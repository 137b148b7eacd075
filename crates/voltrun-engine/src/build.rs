//! Dependency builds (SPEC §10, issue 15): `pip install --target` / `npm ci` of a package's
//! dependency files, run to completion inside the function's isolation tier, as the function
//! user, with the build's memory, pids and CPU limits, a timeout, and a network that reaches
//! only the package index (resolved here, pinned in the build's `/etc/hosts`, admitted as
//! `addr/32:port` by the issue-14 egress machinery). The output directory becomes a
//! read-only tree in the content-addressed cache ([`crate::build_cache`]).
//!
//! Build scripts (`setup.py`, npm install scripts) are hostile code: the build gets no more
//! than a run of the function gets, plus two writable directories of its own (`/build/src`,
//! a copy of the dependency files only, its working directory; `/build/out`, the output) and
//! scratch space (`/build/tmp`). The tree is shared by every function with the same key, so
//! nothing but the key's inputs may take part: the rest of the package never reaches the build,
//! pip runs isolated (`python -I`: the working directory is not on `sys.path`), and dependency
//! files that reference anything but the index are refused ([`refusal`]). The `process` tier
//! has no isolation, so it refuses builds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use voltrun_core::{ResourceLimits, Runtime, MAX_LOG_BYTES};
use voltrun_sandbox::network::NetworkPlan;
use voltrun_sandbox::{InstanceSpec, JobSpec};

use crate::build_cache::{DepsCache, TreeUse};
use crate::Engine;

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
/// The default bound of what one build may write (`--build-max-output`).
pub const DEFAULT_BUILD_MAX_OUTPUT: u64 = 1 << 30;

/// The dependency files of the package at `dir` that call for a build (the contract's "when
/// is there a build"), or `None`: Python, a `requirements.txt` with at least one requirement
/// line; Node, a `package.json` with a non-empty `dependencies` object and no `node_modules/`
/// (plus `package-lock.json` when present). The same rule as the API's
/// ([`voltrun_package::dependencies`]); files it refuses are returned too, and their build
/// fails naming the line ([`refusal`]).
pub fn dependency_files(runtime: Runtime, dir: &Path) -> Option<Vec<String>> {
    match runtime {
        Runtime::Python311 => {
            let text = std::fs::read_to_string(dir.join("requirements.txt")).ok()?;
            (voltrun_package::dependencies::check_requirements(&text) != Ok(false)).then(|| vec!["requirements.txt".to_string()])
        }
        Runtime::Nodejs20 => {
            if dir.join("node_modules").exists() {
                return None;
            }
            let pkg = std::fs::read(dir.join("package.json")).ok()?;
            let lock = std::fs::read(dir.join("package-lock.json")).ok();
            if voltrun_package::dependencies::check_package_json(&pkg, lock.as_deref()) == Ok(false) {
                return None;
            }
            let mut files = vec!["package.json".to_string()];
            if dir.join("package-lock.json").is_file() {
                files.push("package-lock.json".to_string());
            }
            Some(files)
        }
        // A custom runtime's package carries what it needs (SPEC §15): nothing is built.
        Runtime::Provided => None,
    }
}

/// Why the dependency files of the package at `dir` cannot be built, if they cannot: they
/// reference something besides the index (the API refuses such packages; this guards
/// packages stored before it did). A build sees only its dependency files.
pub fn refusal(runtime: Runtime, dir: &Path) -> Option<String> {
    use voltrun_package::dependencies as d;
    match runtime {
        Runtime::Python311 => d::check_requirements(&std::fs::read_to_string(dir.join("requirements.txt")).ok()?).err(),
        Runtime::Nodejs20 => {
            let pkg = std::fs::read(dir.join("package.json")).ok()?;
            let lock = std::fs::read(dir.join("package-lock.json")).ok();
            if let Err(e) = d::check_package_json(&pkg, lock.as_deref()) {
                return Some(e);
            }
            [".npmrc", "npm-shrinkwrap.json"].into_iter().find(|f| dir.join(f).symlink_metadata().is_ok()).map(d::refused_file)
        }
        Runtime::Provided => None,
    }
}

/// Processes and threads a build may have (npm's and pip's workers, compilers).
pub const BUILD_PIDS: u64 = 256;
/// Where the build's writable directories appear inside.
const SRC: &str = "/build/src";
const OUT: &str = "/build/out";
const TMP: &str = "/build/tmp";
/// Where [`Engine::try_dependency_tree`] shows the tree (as instances see theirs).
const CHECK_TREE: &str = "/var/deps";

/// Server-wide build settings (`--build-timeout`, `--build-cache-size`, `--pip-index-url`,
/// `--npm-registry`); `Default` are the documented defaults with none of the host's settings.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// A build running longer is killed (every process of it) and fails.
    pub timeout: Duration,
    /// Bound of the dependency cache in bytes (least recently used trees go first).
    pub cache_bytes: u64,
    /// The most bytes one build may write (its source copy, output and scratch together): a
    /// build past it is killed and fails, and no larger tree enters the cache.
    pub max_output: u64,
    /// The pip index (`--index-url`).
    pub pip_index_url: String,
    /// The npm registry.
    pub npm_registry: String,
    /// The host's pip settings passed to Python builds (`PIP_CERT`, `PIP_DEFAULT_TIMEOUT`,
    /// `PIP_FIND_LINKS` when it names local directories): never credentials.
    pub pip_env: Vec<(String, String)>,
    /// The host's npm/Node TLS settings passed to Node builds (`NODE_EXTRA_CA_CERTS`).
    pub npm_env: Vec<(String, String)>,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            timeout: DEFAULT_BUILD_TIMEOUT,
            cache_bytes: DEFAULT_BUILD_CACHE_BYTES,
            max_output: DEFAULT_BUILD_MAX_OUTPUT,
            pip_index_url: "https://pypi.org/simple".into(),
            npm_registry: "https://registry.npmjs.org/".into(),
            pip_env: Vec::new(),
            npm_env: Vec::new(),
        }
    }
}

impl BuildConfig {
    /// The defaults with what matters of this host's pip and npm configuration: the index
    /// (`PIP_INDEX_URL`, `npm config get registry`), the CA bundle, pip's timeout and local
    /// find-links directories. Credentials (`~/.netrc`, `~/.npmrc` tokens) are never read.
    pub fn from_host() -> BuildConfig {
        let mut c = BuildConfig::default();
        if let Ok(u) = std::env::var("PIP_INDEX_URL") {
            if !u.trim().is_empty() {
                c.pip_index_url = u.trim().to_string();
            }
        }
        if let Ok(out) = std::process::Command::new("npm").args(["config", "get", "registry"]).stderr(std::process::Stdio::null()).output() {
            let r = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && (r.starts_with("https://") || r.starts_with("http://")) {
                c.npm_registry = r;
            }
        }
        let bundle = "/etc/ssl/certs/ca-certificates.crt";
        let cert = std::env::var("PIP_CERT").ok().filter(|p| Path::new(p).is_file()).or_else(|| Path::new(bundle).is_file().then(|| bundle.to_string()));
        if let Some(cert) = cert {
            c.pip_env.push(("PIP_CERT".into(), cert));
        }
        if let Ok(t) = std::env::var("PIP_DEFAULT_TIMEOUT") {
            c.pip_env.push(("PIP_DEFAULT_TIMEOUT".into(), t));
        }
        if let Ok(links) = std::env::var("PIP_FIND_LINKS") {
            let local: Vec<&str> = links.split_whitespace().filter(|l| l.starts_with('/') && Path::new(l).is_dir()).collect();
            if !local.is_empty() {
                c.pip_env.push(("PIP_FIND_LINKS".into(), local.join(" ")));
            }
        }
        let ca = std::env::var("NODE_EXTRA_CA_CERTS").ok().filter(|p| Path::new(p).is_file()).or_else(|| Path::new(bundle).is_file().then(|| bundle.to_string()));
        if let Some(ca) = ca {
            c.npm_env.push(("NODE_EXTRA_CA_CERTS".into(), ca));
        }
        c
    }

    /// The index a runtime's builds use (part of the cache key).
    fn index(&self, runtime: Runtime) -> String {
        match runtime {
            Runtime::Python311 => {
                let links = self.pip_env.iter().find(|(k, _)| k == "PIP_FIND_LINKS").map(|(_, v)| v.as_str()).unwrap_or("");
                if links.is_empty() {
                    self.pip_index_url.clone()
                } else {
                    format!("{} find-links={links}", self.pip_index_url)
                }
            }
            Runtime::Nodejs20 => self.npm_registry.clone(),
            Runtime::Provided => String::new(),
        }
    }

    /// Host paths (files or directories) the build reads besides the runtime: the CA bundle
    /// and find-links directories named by the settings.
    fn host_paths(&self, runtime: Runtime) -> Vec<PathBuf> {
        let env = match runtime {
            Runtime::Python311 => &self.pip_env,
            Runtime::Nodejs20 => &self.npm_env,
            Runtime::Provided => return Vec::new(),
        };
        env.iter().flat_map(|(_, v)| v.split_whitespace()).filter(|p| p.starts_with('/') && Path::new(p).exists()).map(PathBuf::from).collect()
    }
}

/// The builds' shared state: the cache and the platform strings of the interpreters.
pub(crate) struct Builds {
    pub(crate) cache: DepsCache,
    platforms: Mutex<HashMap<Runtime, String>>,
    /// Keys of evicted trees being built again in the background (one rebuild per key).
    pub(crate) rebuilding: Mutex<std::collections::HashSet<String>>,
}

impl Builds {
    pub(crate) fn open(data_dir: &Path, cfg: &BuildConfig) -> std::io::Result<Builds> {
        Ok(Builds { cache: DepsCache::open(data_dir.join("deps"), cfg.cache_bytes)?, platforms: Mutex::new(HashMap::new()), rebuilding: Default::default() })
    }
}

/// The cache key: SHA-256 over the runtime id, the platform string, the index and each
/// dependency file's name and bytes (lengths first, so no two inputs run together).
pub fn cache_key(runtime: Runtime, platform: &str, index: &str, files: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    // Version 2: builds see only the dependency files, and pip runs isolated (`-I`); trees
    // of version 1 saw the whole package and are never reused.
    part(b"voltrun-deps-2");
    part(runtime.id().as_bytes());
    part(platform.as_bytes());
    part(index.as_bytes());
    for (name, bytes) in files {
        part(name.as_bytes());
        part(bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The platform string of an interpreter: `cp311-linux-x86_64-glibc2.36`,
/// `node20-linux-x64-glibc2.36` (what decides which wheels and prebuilt binaries fit).
fn probe_platform(runtime: Runtime, exe: &Path) -> Option<String> {
    let (args, ok): (&[&str], fn(&str) -> bool) = match runtime {
        Runtime::Python311 => (
            &["-c", "import sys, sysconfig, platform; l = platform.libc_ver(); print('cp%d%d-%s-%s%s' % (sys.version_info[0], sys.version_info[1], sysconfig.get_platform(), l[0], l[1]))"],
            |s| s.starts_with("cp"),
        ),
        Runtime::Nodejs20 => (
            &["-p", "'node' + process.versions.node.split('.')[0] + '-' + process.platform + '-' + process.arch + '-glibc' + (process.report.getReport().header.glibcVersionRuntime || 'none')"],
            |s| s.starts_with("node"),
        ),
        Runtime::Provided => return None,
    };
    let out = std::process::Command::new(exe).args(args).env_clear().env("PATH", "/usr/bin:/bin").output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && ok(&s)).then_some(s)
}

/// `(host, port)` of an http(s) URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.is_empty() => (h, p.parse().ok()?),
        _ => (authority, default),
    };
    (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_ascii_lowercase(), port))
}

/// Logs capped at [`MAX_LOG_BYTES`], keeping the head and the tail (pip and npm print the
/// error last), and the live sink fed whole lines until the cap.
struct BuildLog {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: u64,
    pending: Vec<u8>,
    sent: usize,
    sink: Option<LogSink>,
}

impl BuildLog {
    const HALF: usize = MAX_LOG_BYTES / 2;

    fn new(sink: Option<LogSink>) -> BuildLog {
        BuildLog { head: Vec::new(), tail: Default::default(), dropped: 0, pending: Vec::new(), sent: 0, sink }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = Self::HALF.saturating_sub(self.head.len());
        let (h, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(h);
        self.tail.extend(rest);
        while self.tail.len() > Self::HALF {
            self.tail.pop_front();
            self.dropped += 1;
        }
        if let Some(sink) = &self.sink {
            if self.sent < MAX_LOG_BYTES {
                self.pending.extend_from_slice(bytes);
                if let Some(nl) = self.pending.iter().rposition(|b| *b == b'\n') {
                    let lines: Vec<u8> = self.pending.drain(..=nl).collect();
                    self.sent += lines.len();
                    sink(&String::from_utf8_lossy(&lines));
                    if self.sent >= MAX_LOG_BYTES {
                        sink("[voltrun] the build log is longer than 256 KiB: the rest is not shown live\n");
                    }
                }
            }
        }
    }

    fn line(&mut self, text: &str) {
        let mut t = text.to_string();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        if !self.pending.is_empty() {
            let mut p = std::mem::take(&mut self.pending);
            p.push(b'\n');
            self.push_raw_sink(&p);
        }
        self.push(t.as_bytes());
    }

    fn push_raw_sink(&mut self, bytes: &[u8]) {
        if let Some(sink) = &self.sink {
            sink(&String::from_utf8_lossy(bytes));
        }
    }

    fn finish(mut self) -> (String, bool) {
        if !self.pending.is_empty() {
            let p = std::mem::take(&mut self.pending);
            self.push_raw_sink(&p);
        }
        let mut out = self.head;
        if self.dropped > 0 {
            out.extend_from_slice(format!("\n[voltrun] … {} bytes of build log left out …\n", self.dropped).as_bytes());
        }
        out.extend(self.tail);
        (String::from_utf8_lossy(&out).into_owned(), self.dropped > 0)
    }
}

/// What a finished build process left: how it ended.
struct Ended {
    exit: voltrun_sandbox::ExitInfo,
    oom: bool,
    timed_out: bool,
    /// Killed because its writable directories grew past [`OutputCap::max`].
    over_output: bool,
    refused: Vec<String>,
}

impl Engine {
    /// Builds the dependency tree of a package (or finds it in the cache). Concurrent calls
    /// for one key build once; the others wait and get the same tree (`cached: true`).
    pub async fn build_dependencies(&self, req: BuildRequest) -> Result<BuiltTree, BuildFailure> {
        let t0 = Instant::now();
        let fail = |reason: String| BuildFailure { reason, logs: String::new(), logs_truncated: false };
        let key = self.dependency_key(&req).await.map_err(fail)?;
        let cache = &self.inner.builds.cache;
        let hit = |path: PathBuf, key: &str| {
            let logs = format!("[voltrun] dependencies found in the cache ({}): no build, no download\n", &key[..12]);
            if let Some(sink) = &req.log {
                sink(&logs);
            }
            BuiltTree { key: key.to_string(), path, cached: true, logs, logs_truncated: false }
        };
        if let Some(path) = cache.lookup(&key) {
            return Ok(hit(path, &key));
        }
        let lock = cache.key_lock(&key);
        let _building = lock.lock().await;
        if let Some(path) = cache.lookup(&key) {
            return Ok(hit(path, &key));
        }
        let scratch = cache.scratch(&key).map_err(|e| fail(format!("could not prepare the build directory: {e}")))?;
        let result = self.run_build(&req, &key, &scratch).await;
        let result = match result {
            Ok((built, logs, truncated)) => match cache.insert(&key, &built, self.inner.cfg.build.max_output) {
                Ok((path, bytes)) => {
                    tracing::info!(key = %key, bytes, ms = t0.elapsed().as_millis() as u64, runtime = req.runtime.id(), "dependencies built");
                    Ok(BuiltTree { key: key.clone(), path, cached: false, logs, logs_truncated: truncated })
                }
                Err(e) => Err(BuildFailure { reason: format!("could not store the built dependencies: {e}"), logs, logs_truncated: truncated }),
            },
            Err(f) => Err(f),
        };
        drop(scratch);
        result
    }

    /// The cache key of a request: reads its dependency files and the runtime's platform.
    pub async fn dependency_key(&self, req: &BuildRequest) -> Result<String, String> {
        if req.dep_files.is_empty() {
            return Err("no dependency files to build".into());
        }
        let mut files = Vec::new();
        for name in &req.dep_files {
            if name.contains("..") || name.starts_with('/') {
                return Err(format!("{name}: not a file of the package"));
            }
            let bytes = tokio::fs::read(req.package_dir.join(name)).await.map_err(|e| format!("reading {name}: {e}"))?;
            files.push((name.clone(), bytes));
        }
        self.dependency_key_of(req.runtime, &files).await
    }

    /// The cache key of the dependency files `files` (name, bytes) for `runtime`: what
    /// [`Engine::dependency_key`] computes once it read them, also from a package's validated
    /// root files (a create or update, without unpacking the package). Everything the key
    /// depends on goes here, so both paths agree.
    pub(crate) async fn dependency_key_of(&self, runtime: Runtime, files: &[(String, Vec<u8>)]) -> Result<String, String> {
        let Some(interp) = self.inner.runtimes.interpreter(runtime) else {
            return Err(format!("the {} runtime is not installed on this server", runtime.id()));
        };
        if files.is_empty() {
            return Err("no dependency files to build".into());
        }
        let cached = self.inner.builds.platforms.lock().expect("platforms lock").get(&runtime).cloned();
        let platform = match cached {
            Some(p) => p,
            None => {
                let (rt, exe) = (runtime, interp.path.clone());
                let p = tokio::task::spawn_blocking(move || probe_platform(rt, &exe))
                    .await
                    .ok()
                    .flatten()
                    .ok_or_else(|| format!("could not tell the {} interpreter's platform", runtime.id()))?;
                self.inner.builds.platforms.lock().expect("platforms lock").insert(runtime, p.clone());
                p
            }
        };
        Ok(cache_key(runtime, &platform, &self.inner.cfg.build.index(runtime), files))
    }

    /// Pins a cached dependency tree for an instance that uses it: it is not evicted while
    /// the result lives. `None` when the key is not cached (build it first).
    pub fn use_dependency_tree(&self, key: &str) -> Option<TreeUse> {
        self.inner.builds.cache.pin(key)
    }

    /// Bytes of the dependency trees in this node's cache.
    pub fn dependency_cache_bytes(&self) -> u64 {
        self.inner.builds.cache.bytes()
    }

    /// Runs the build of `req` in `scratch`; on success the finished output directory (to
    /// be sealed into the cache), its logs and whether they were cut.
    async fn run_build(&self, req: &BuildRequest, key: &str, scratch: &Path) -> Result<(PathBuf, String, bool), BuildFailure> {
        let mut log = BuildLog::new(req.log.clone());
        macro_rules! fail {
            ($log:expr, $($arg:tt)*) => {{
                let reason = format!($($arg)*);
                let mut l = $log;
                l.line(&format!("[voltrun] build failed: {reason}"));
                let (logs, logs_truncated) = l.finish();
                return Err(BuildFailure { reason, logs, logs_truncated });
            }};
        }
        let sandbox = self.inner.sandbox.clone();
        if sandbox.kind() == "process" {
            fail!(
                log,
                "dependency builds need an isolating sandbox tier (namespace, container or gvisor): the process tier has no isolation, and build scripts are untrusted code"
            );
        }
        if let Err(why) = sandbox.egress_support() {
            fail!(log, "dependency builds need network egress to the package index, which this server cannot enforce: {why}");
        }
        let rt = &self.inner.runtimes;
        let Some(interp) = rt.interpreter(req.runtime).cloned() else {
            fail!(log, "the {} runtime is not installed on this server", req.runtime.id());
        };
        let cfg = &self.inner.cfg.build;
        let memory_mb = req.memory_mb.max(BUILD_MIN_MEMORY_MB);
        log.line(&format!(
            "[voltrun] building dependencies ({}) in the {} tier with {memory_mb} MiB, timeout {}s, key {}",
            req.dep_files.join(", "),
            sandbox.kind(),
            cfg.timeout.as_secs(),
            &key[..12]
        ));

        // The build's directories, the function user's own.
        let (src, out, tmp) = (scratch.join("src"), scratch.join("out"), scratch.join("tmp"));
        let uid = sandbox.function_host_uid();
        if let Some(why) = refusal(req.runtime, &req.package_dir) {
            fail!(log, "{why}");
        }
        let prepared = (|| -> std::io::Result<()> {
            // Only the dependency files: they alone are the cache key, so nothing else of the
            // package may take part in the build (a `pip/` module, a `.npmrc`, `./lib`).
            std::fs::create_dir(&src)?;
            for name in &req.dep_files {
                let from = req.package_dir.join(name);
                if !from.symlink_metadata()?.is_file() {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{name} is not a regular file")));
                }
                std::fs::copy(&from, src.join(name))?;
            }
            // The instance directory every sandbox binds (task/, deps/, opt/): empty for a
            // build, whose dependency files are the writable copy at /build/src.
            voltrun_package::InstanceDir::create(scratch.join("inst"))?;
            std::fs::create_dir(&out)?;
            std::fs::create_dir_all(tmp.join("home"))?;
            for d in [&src, &out, &tmp] {
                chown_tree(d, uid)?;
            }
            Ok(())
        })();
        if let Err(e) = prepared {
            fail!(log, "could not prepare the build directory: {e}");
        }

        // The network: the index hosts, resolved here, pinned and admitted by address.
        let hosts = index_hosts(req.runtime, cfg);
        let mut pinned: Vec<(String, IpAddr)> = Vec::new();
        let mut rules: Vec<String> = Vec::new();
        for (host, port) in &hosts {
            let addrs = match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(a) => a.map(|a| a.ip()).filter(IpAddr::is_ipv4).collect::<Vec<_>>(),
                Err(e) => fail!(log, "could not resolve the package index host {host}: {e}"),
            };
            if addrs.is_empty() {
                fail!(log, "the package index host {host} has no IPv4 address");
            }
            for a in addrs {
                if !pinned.iter().any(|(h, p)| h == host && *p == a) {
                    pinned.push((host.clone(), a));
                }
                let rule = format!("{a}/32:{port}");
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        let policy = match voltrun_core::egress::EgressPolicy::parse(&rules) {
            Ok(p) => p,
            Err(e) => fail!(log, "the package index's addresses make no egress policy: {e}"),
        };
        log.line(&format!("[voltrun] network: only {}", pinned.iter().map(|(h, a)| format!("{h} ({a})")).collect::<Vec<_>>().join(", ")));
        let plan = Arc::new(NetworkPlan { function: format!("build-{}", &key[..12]), policy, on_event: None });

        let has_lock = req.dep_files.iter().any(|f| f == "package-lock.json");
        let (argv, env) = build_command(req.runtime, &interp, memory_mb, cfg, has_lock);
        let mut limits = ResourceLimits::for_function(req.runtime, memory_mb);
        limits.pids = BUILD_PIDS;
        let mut runtime_paths = rt.paths(req.runtime);
        runtime_paths.extend(cfg.host_paths(req.runtime));
        let spec = InstanceSpec {
            argv,
            env,
            code_dir: scratch.join("inst"),
            runtime_paths,
            bootstrap_dir: rt.bootstrap_dir().to_path_buf(),
            limits,
            network: Some(plan),
            job: Some(JobSpec {
                writable: vec![(src.clone(), SRC.into()), (out.clone(), OUT.into()), (tmp.clone(), TMP.into())],
                cwd: Some(SRC.into()),
                read_only: Vec::new(),
                hosts: pinned,
            }),
        };
        let deadline = Instant::now() + cfg.timeout;
        let cap = OutputCap { dirs: vec![src.clone(), out.clone(), tmp.clone()], max: cfg.max_output };
        let ended = match self.run_job(spec, deadline, Some(cap), &mut log).await {
            Ok(e) => e,
            Err(why) => fail!(log, "{why}"),
        };
        for line in &ended.refused {
            log.push(line.as_bytes());
        }
        let tool = match req.runtime {
            Runtime::Python311 => "pip install",
            Runtime::Nodejs20 => "npm",
            Runtime::Provided => "the build",
        };
        if ended.over_output {
            fail!(log, "the build wrote more than {} bytes (--build-max-output) and was stopped", cfg.max_output);
        }
        if ended.timed_out {
            fail!(log, "the build took longer than its timeout ({}s) and was stopped", cfg.timeout.as_secs());
        }
        if ended.oom {
            fail!(log, "the build ran out of memory ({memory_mb} MiB)");
        }
        if ended.exit.code != Some(0) {
            fail!(log, "{tool} failed ({})", ended.exit);
        }
        let tree = match req.runtime {
            Runtime::Python311 | Runtime::Provided => out,
            Runtime::Nodejs20 => {
                let nm = src.join("node_modules");
                if !nm.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
                    fail!(log, "npm left no node_modules directory");
                }
                let _ = std::fs::remove_dir(&out);
                if let Err(e) = std::fs::rename(&nm, &out) {
                    fail!(log, "could not move node_modules: {e}");
                }
                out
            }
        };
        log.line(&format!("[voltrun] build succeeded ({})", ended.exit));
        let (logs, truncated) = log.finish();
        Ok((tree, logs, truncated))
    }
}

impl Engine {
    /// Runs a job to its end (or `deadline`, when every process of it is killed), its output
    /// into `log`. With `cap`, the job's writable directories are measured every
    /// [`OutputCap::EVERY`] and the job killed as soon as they hold more than the cap.
    async fn run_job(&self, spec: InstanceSpec, deadline: Instant, cap: Option<OutputCap>, log: &mut BuildLog) -> Result<Ended, String> {
        let sandbox = self.inner.sandbox.clone();
        let spawned = match tokio::task::spawn_blocking(move || sandbox.spawn(&spec)).await.expect("spawn task does not panic") {
            Ok(s) => s,
            Err(e) => {
                let cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
                tracing::error!(err = %e, %cause, "could not start a dependency build");
                return Err(format!("could not start the build: {e}"));
            }
        };
        let voltrun_sandbox::Spawned { control_in, control_out, logs, mut handle } = spawned;
        drop((control_in, control_out));
        let mut timed_out = false;
        let mut over_output = false;
        let cap = cap.map(Arc::new);
        match pipe::Receiver::from_owned_fd(logs) {
            Ok(mut rx) => {
                let mut chunk = vec![0u8; 64 * 1024];
                let mut next_check = Instant::now() + OutputCap::EVERY;
                loop {
                    let until = if cap.is_some() { deadline.min(next_check) } else { deadline };
                    // `read` is cancel safe: a timeout loses no output.
                    match tokio::time::timeout_at(until.into(), rx.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => log.push(&chunk[..n]),
                        Err(_) if Instant::now() >= deadline => {
                            timed_out = true;
                            break;
                        }
                        Err(_) => {}
                    }
                    if let Some(cap) = cap.as_ref().filter(|_| Instant::now() >= next_check) {
                        let c = cap.clone();
                        if tokio::task::spawn_blocking(move || c.exceeded()).await.unwrap_or(false) {
                            over_output = true;
                            break;
                        }
                        next_check = Instant::now() + OutputCap::EVERY;
                    }
                }
            }
            Err(e) => {
                handle.kill();
                let _ = tokio::task::spawn_blocking(move || handle.wait()).await;
                return Err(format!("could not read the build's output: {e}"));
            }
        }
        let ended = tokio::task::spawn_blocking(move || {
            // The output ended; the process may still be on its way out (or hold on without
            // its output, writing): it gets until the deadline, within the cap, then everything
            // of it is killed.
            let mut next_check = Instant::now() + OutputCap::EVERY;
            while !timed_out && !over_output && !handle.try_exited() {
                if Instant::now() >= deadline {
                    timed_out = true;
                    break;
                }
                if let Some(cap) = cap.as_ref().filter(|_| Instant::now() >= next_check) {
                    over_output = cap.exceeded();
                    next_check = Instant::now() + OutputCap::EVERY;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if timed_out || over_output {
                handle.kill();
            }
            let refused = handle.take_network_log();
            let oom = handle.out_of_memory();
            let exit = handle.wait();
            // What it wrote between the last look and the kill counts too.
            let over_output = over_output || cap.as_ref().is_some_and(|c| c.exceeded());
            Ended { exit, oom, timed_out, over_output, refused }
        })
        .await
        .expect("the build's wait does not panic");
        Ok(ended)
    }

    /// Runs `code` (`python -c` / `node -e`) in the sandbox as the function user with the
    /// built `tree` read-only at `/var/deps` on the module path (`PYTHONPATH`, `NODE_PATH`) and no network:
    /// a check that the tree loads on the runtime it was built for. Its output, or why not.
    pub async fn try_dependency_tree(&self, runtime: Runtime, tree: &Path, code: &str) -> Result<String, String> {
        let rt = &self.inner.runtimes;
        let interp = rt.interpreter(runtime).ok_or("the runtime is not installed")?;
        let dir = self.inner.cfg.data_dir.join("instances").join(format!("check-{}", self.inner.next_instance.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        voltrun_package::InstanceDir::create(&dir).map_err(|e| e.to_string())?;
        let flag = if runtime == Runtime::Python311 { "-c" } else { "-e" };
        let mut env = crate::launch::base_env(runtime, &*self.inner.sandbox, &dir);
        env.push((if runtime == Runtime::Python311 { "PYTHONPATH" } else { "NODE_PATH" }.to_string(), CHECK_TREE.to_string()));
        let spec = InstanceSpec {
            argv: vec![interp.path.display().to_string(), flag.into(), code.into()],
            env,
            code_dir: dir.clone(),
            runtime_paths: rt.paths(runtime),
            bootstrap_dir: rt.bootstrap_dir().to_path_buf(),
            limits: ResourceLimits::for_function(runtime, BUILD_MIN_MEMORY_MB),
            network: None,
            job: Some(JobSpec { read_only: vec![(tree.to_path_buf(), CHECK_TREE.into())], ..JobSpec::default() }),
        };
        let mut log = BuildLog::new(None);
        let ended = self.run_job(spec, Instant::now() + Duration::from_secs(60), None, &mut log).await;
        let _ = std::fs::remove_dir_all(&dir);
        let ended = ended?;
        let (out, _) = log.finish();
        if ended.exit.code == Some(0) {
            Ok(out)
        } else {
            Err(format!("{}: {out}", ended.exit))
        }
    }
}

/// The bound of what a build writes: its writable directories (bind mounts of the data
/// disk) together hold at most `max` bytes. Each entry counts its length or its blocks,
/// whichever is more (sparse files count whole), and at least one block (so empty files
/// are not free).
struct OutputCap {
    dirs: Vec<PathBuf>,
    max: u64,
}

impl OutputCap {
    /// How often a running build is measured.
    const EVERY: Duration = Duration::from_millis(250);

    /// True once the directories hold more than the cap (stops counting there).
    fn exceeded(&self) -> bool {
        let mut total = 0u64;
        let mut stack = self.dirs.clone();
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let Ok(m) = e.path().symlink_metadata() else { continue };
                use std::os::unix::fs::MetadataExt;
                total += m.len().max(m.blocks() * 512).max(512);
                if total > self.max {
                    return true;
                }
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        false
    }
}

/// The hosts a runtime's builds reach: the index, and for PyPI its file host.
fn index_hosts(runtime: Runtime, cfg: &BuildConfig) -> Vec<(String, u16)> {
    let url = match runtime {
        Runtime::Python311 => &cfg.pip_index_url,
        Runtime::Nodejs20 => &cfg.npm_registry,
        Runtime::Provided => return Vec::new(),
    };
    let mut out: Vec<(String, u16)> = host_port(url).into_iter().collect();
    if out.iter().any(|(h, _)| h == "pypi.org") {
        out.push(("files.pythonhosted.org".into(), 443));
    }
    out
}

/// The build's command line and complete environment (the contract's build command).
fn build_command(runtime: Runtime, interp: &crate::runtimes::Interpreter, memory_mb: u32, cfg: &BuildConfig, has_lock: bool) -> (Vec<String>, Vec<(String, String)>) {
    let exe = interp.path.display().to_string();
    let bin_dir = interp.path.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), format!("{bin_dir}:/usr/local/bin:/usr/bin:/bin")),
        ("HOME".into(), format!("{TMP}/home")),
        ("TMPDIR".into(), TMP.into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TZ".into(), "UTC".into()),
    ];
    let argv = match runtime {
        Runtime::Python311 => {
            env.extend(
                [("PYTHONUNBUFFERED", "1"), ("PIP_NO_CACHE_DIR", "1"), ("PIP_PROGRESS_BAR", "off"), ("PIP_ROOT_USER_ACTION", "ignore"), ("PIP_NO_WARN_SCRIPT_LOCATION", "1")]
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            env.extend(cfg.pip_env.iter().cloned());
            [
                exe.as_str(),
                // Isolated: neither the working directory nor PYTHON* variables reach sys.path.
                "-I",
                "-m",
                "pip",
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--target",
                OUT,
                "-r",
                "requirements.txt",
                "--index-url",
                cfg.pip_index_url.as_str(),
            ]
            .map(String::from)
            .to_vec()
        }
        Runtime::Nodejs20 => {
            env.extend(
                [
                    ("npm_config_cache", format!("{TMP}/npm-cache")),
                    ("npm_config_userconfig", format!("{TMP}/home/.npmrc")),
                    ("npm_config_update_notifier", "false".into()),
                    ("npm_config_progress", "false".into()),
                    ("npm_config_registry", cfg.npm_registry.clone()),
                    ("NODE_OPTIONS", format!("--max-old-space-size={}", (memory_mb * 3 / 4).max(64))),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
            env.extend(cfg.npm_env.iter().cloned());
            let cli = interp.prefix.join("lib/node_modules/npm/bin/npm-cli.js").display().to_string();
            let verb = if has_lock { "ci" } else { "install" };
            vec![exe, cli, verb.into(), "--omit=dev".into(), "--no-audit".into(), "--no-fund".into()]
        }
        // Never built (no dependency files, no interpreter): an empty command fails at spawn.
        Runtime::Provided => Vec::new(),
    };
    (argv, env)
}

/// Gives a build directory to the function user (`uid`, same gid): directories 0755, files
/// writable by their owner.
fn chown_tree(dir: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
    let m = dir.symlink_metadata()?;
    if m.is_dir() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        for e in std::fs::read_dir(dir)? {
            chown_tree(&e?.path(), uid)?;
        }
    } else if m.is_file() {
        let mode = m.permissions().mode() & 0o777;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_urls_give_their_host_and_port() {
        assert_eq!(host_port("https://pypi.org/simple"), Some(("pypi.org".into(), 443)));
        assert_eq!(host_port("http://user:pw@mirror.example:8080/simple/"), Some(("mirror.example".into(), 8080)));
        assert_eq!(host_port("https://registry.npmjs.org/"), Some(("registry.npmjs.org".into(), 443)));
        assert_eq!(host_port("file:///wheels"), None);
    }

    #[test]
    fn the_key_changes_with_each_part() {
        let files = vec![("requirements.txt".to_string(), b"numpy\n".to_vec())];
        let k = cache_key(Runtime::Python311, "cp311-linux-x86_64", "https://pypi.org/simple", &files);
        assert_eq!(k.len(), 64);
        assert_ne!(k, cache_key(Runtime::Python311, "cp311-linux-aarch64", "https://pypi.org/simple", &files));
        assert_ne!(k, cache_key(Runtime::Python311, "cp311-linux-x86_64", "https://mirror/simple", &files));
        assert_ne!(k, cache_key(Runtime::Python311, "cp311-linux-x86_64", "https://pypi.org/simple", &[("requirements.txt".into(), b"numpy==2\n".to_vec())]));
        assert_eq!(k, cache_key(Runtime::Python311, "cp311-linux-x86_64", "https://pypi.org/simple", &files));
    }

    #[test]
    fn logs_keep_head_and_tail_past_the_cap() {
        let mut l = BuildLog::new(None);
        l.push(b"first line\n");
        l.push(&vec![b'x'; MAX_LOG_BYTES * 2]);
        l.push(b"\nERROR: the last line\n");
        let (text, truncated) = l.finish();
        assert!(truncated);
        assert!(text.starts_with("first line\n") && text.ends_with("ERROR: the last line\n"));
        assert!(text.len() <= MAX_LOG_BYTES + 100);
    }
}
