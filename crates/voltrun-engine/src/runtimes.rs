//! The language runtimes on this host: where their interpreters are, and the bootstrap each
//! instance runs (`runtimes/{python,node}` in the repository, embedded in the binary). The
//! custom runtime (`provided`, SPEC §15) has no interpreter: its instance runs the Runtime API
//! helper ([`crate::runtime_api`], the `voltrun-runtime-api` binary beside `voltrun`), which
//! starts the package's own `bootstrap`.

use std::path::{Path, PathBuf};
use std::process::Command;

use voltrun_core::Runtime;

const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/node/bootstrap.js");

/// An interpreter found on the host.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// Absolute path of the real binary (not a version-manager shim).
    pub path: PathBuf,
    /// The version it reports, e.g. `3.11.7` or `20.20.2`.
    pub version: String,
    /// Directory tree the interpreter needs to read (its prefix).
    pub prefix: PathBuf,
}

/// Interpreters and bootstrap files for every runtime.
#[derive(Debug, Clone)]
pub struct Runtimes {
    python: Option<Interpreter>,
    node: Option<Interpreter>,
    /// The Runtime API helper binary (host path), for `provided`, and the argument it needs
    /// when it is this binary itself ([`RUNTIME_API_ARG`]).
    runtime_api: Option<(PathBuf, Option<&'static str>)>,
    dir: PathBuf,
}

/// The Runtime API helper's file name, looked for beside the running binary.
pub const RUNTIME_API_HELPER: &str = "voltrun-runtime-api";

/// The first argument that makes the `voltrun` binary itself the Runtime API helper, when the
/// helper binary is not installed beside it.
pub const RUNTIME_API_ARG: &str = "__voltrun-runtime-api";

/// Where the helper listens inside an instance with a loopback of its own (Lambda's port).
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";

impl Runtimes {
    /// Finds the interpreters and writes the bootstraps into `dir`.
    pub fn discover(dir: &Path) -> std::io::Result<Runtimes> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("bootstrap.py"), PYTHON_BOOTSTRAP)?;
        std::fs::write(dir.join("bootstrap.js"), NODE_BOOTSTRAP)?;
        let python = ["python3.11", "python3"].iter().find_map(|bin| {
            probe(bin, &["-c", "import sys; print(sys.executable); print(sys.version.split()[0]); print(sys.base_prefix)"]).filter(|i| i.version.starts_with("3.11"))
        });
        let node = probe("node", &["-p", "[process.execPath, process.versions.node, require('path').dirname(require('path').dirname(process.execPath))].join('\\n')"]);
        if python.is_none() {
            tracing::warn!("no python3.11 interpreter found: the python3.11 runtime is unavailable");
        }
        if node.is_none() {
            tracing::warn!("no node interpreter found: the nodejs20 runtime is unavailable");
        }
        // `VOLTRUN_RUNTIME_API_HELPER` names it elsewhere (an install that keeps binaries apart).
        let helper = std::env::var_os("VOLTRUN_RUNTIME_API_HELPER")
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join(RUNTIME_API_HELPER))))
            .and_then(|p| p.canonicalize().ok())
            .filter(|p| p.is_file());
        // Without the small helper binary (`cargo run` builds only the binary it runs), this
        // binary serves as the helper: it dispatches RUNTIME_API_ARG before anything else.
        let runtime_api = match helper {
            Some(p) => Some((p, None)),
            None => {
                let own = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok()).filter(|p| p.is_file());
                if own.is_some() {
                    tracing::info!("no {RUNTIME_API_HELPER} binary beside this one: provided instances run this binary as their Runtime API helper");
                } else {
                    tracing::warn!("no {RUNTIME_API_HELPER} binary beside this one: the provided runtime is unavailable");
                }
                own.map(|p| (p, Some(RUNTIME_API_ARG)))
            }
        };
        // Instances see the helper inside the bootstrap directory (at /var/runtime), not at
        // its host path: a binary under /tmp (a checkout there) would be hidden by the
        // instance's own /tmp, and its host path is none of the function's business.
        let runtime_api = runtime_api.and_then(|(p, arg)| match install_helper(&p, &dir.join(RUNTIME_API_HELPER)) {
            Ok(()) => Some((dir.join(RUNTIME_API_HELPER), arg)),
            Err(e) => {
                tracing::warn!(helper = %p.display(), err = %e, "could not put the Runtime API helper into the bootstrap directory: the provided runtime is unavailable");
                None
            }
        });
        Ok(Runtimes { python, node, runtime_api, dir: dir.to_path_buf() })
    }

    /// True when this server can run instances of `r`.
    pub fn available(&self, r: Runtime) -> bool {
        match r {
            Runtime::Provided => self.runtime_api.is_some(),
            _ => self.interpreter(r).is_some(),
        }
    }

    /// The interpreter of a runtime, if installed.
    pub fn interpreter(&self, r: Runtime) -> Option<&Interpreter> {
        match r {
            Runtime::Nodejs20 => self.node.as_ref(),
            Runtime::Python311 => self.python.as_ref(),
            // The bootstrap is the package's own: nothing to interpret, nothing to build with.
            Runtime::Provided => None,
        }
    }

    /// The host directory holding the bootstraps.
    pub fn bootstrap_dir(&self) -> &Path {
        &self.dir
    }

    /// The command line of a new instance of `r` with `memory_mb` of memory, for an instance
    /// that sees the bootstrap directory at `boot`.
    pub fn argv(&self, r: Runtime, memory_mb: u32, boot: &Path) -> Option<Vec<String>> {
        if r == Runtime::Provided {
            let (_, arg) = self.runtime_api.as_ref()?;
            return Some(std::iter::once(boot.join(RUNTIME_API_HELPER).display().to_string()).chain(arg.map(str::to_string)).collect());
        }
        let interp = self.interpreter(r)?;
        let exe = interp.path.display().to_string();
        Some(match r {
            Runtime::Python311 => vec![exe, "-u".into(), boot.join("bootstrap.py").display().to_string()],
            Runtime::Nodejs20 => vec![
                exe,
                // V8 reserves far more address space than it uses, so RLIMIT_AS cannot cap it;
                // its own heap limit does, leaving room for code, stacks and buffers.
                format!("--max-old-space-size={}", (memory_mb * 3 / 4).max(32)),
                boot.join("bootstrap.js").display().to_string(),
            ],
            Runtime::Provided => unreachable!("returned above"),
        })
    }

    /// Host paths an instance of `r` reads besides the bootstraps: the interpreter's prefix
    /// (`provided`: none, its helper is in the bootstrap directory).
    pub fn paths(&self, r: Runtime) -> Vec<PathBuf> {
        if r == Runtime::Provided {
            // The helper is in the bootstrap directory, which every instance sees already.
            return Vec::new();
        }
        self.interpreter(r).map(|i| vec![i.prefix.clone()]).unwrap_or_default()
    }
}

/// Puts the helper binary `from` at `to` (in the bootstrap directory): a hard link when both
/// are on one filesystem, else a copy; replaced at every start (the binary may be newer).
fn install_helper(from: &Path, to: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    std::fs::copy(from, to)?;
    tracing::info!(ms = t0.elapsed().as_millis() as u64, "copied the Runtime API helper into the bootstrap directory (another filesystem)");
    Ok(())
}

fn probe(bin: &str, args: &[&str]) -> Option<Interpreter> {
    let out = Command::new(bin).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let (path, version, prefix) = (lines.next()?, lines.next()?, lines.next()?);
    Some(Interpreter { path: PathBuf::from(path), version: version.to_string(), prefix: PathBuf::from(prefix) })
}
