//! The root an instance sees, as data: what is bound read-only from the host, the tmpfs table,
//! the devices, the generated `/etc` and the rlimits. [`InstanceRoot::of`] computes it once
//! from an [`InstanceSpec`]; the namespace tier's pid 1 builds it with mount(2) (in
//! [`crate::init`]) and the OCI tiers render it as `config.json` (in [`crate::oci`]), so the
//! tiers cannot drift apart. Mechanism code only reads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{InstanceSpec, ResourceLimits};

/// The uid/gid functions run as inside.
pub const FUNCTION_UID: u32 = 1000;
/// Where the function's code appears inside.
pub const TASK_ROOT: &str = voltrun_package::layout::TASK_ROOT;
/// Where the dependency tree appears inside.
pub const DEPS_ROOT: &str = voltrun_package::layout::DEPS_ROOT;
/// Where the layers appear inside.
pub const OPT_ROOT: &str = voltrun_package::layout::OPT_ROOT;
/// Where the runtime bootstraps appear inside (Lambda's runtime directory; `/opt` is the
/// layers').
pub const BOOTSTRAP_ROOT: &str = "/var/runtime";
/// Host paths every instance gets read-only, when they exist.
const SYSTEM_PATHS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/ssl/certs", "/etc/ca-certificates"];
/// Devices every instance gets (the host's, bound in the namespace tier; the OCI runtimes
/// create these by default, see [`crate::oci`]).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// Memory an interpreter maps beyond what the function asked for: `RLIMIT_AS` counts virtual
/// memory, always above what is resident.
pub const ADDRESS_SPACE_SLACK: u64 = 192 << 20;

/// A host path bound read-only into the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// The host path.
    pub source: PathBuf,
    /// Where the instance sees it (absolute).
    pub target: PathBuf,
    /// A directory (else a file).
    pub dir: bool,
    /// Bound read-write (a job's directories only; see [`crate::JobSpec`]).
    #[serde(default)]
    pub writable: bool,
}

/// A symlink of the host recreated inside (merged /usr: `/bin -> usr/bin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The link's path (absolute, the same inside as on the host).
    pub path: PathBuf,
    /// What it points to.
    pub to: PathBuf,
}

/// One RAM-backed filesystem of the instance (always `nosuid`), charged to its memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Where it is mounted (absolute).
    pub target: String,
    /// Size in bytes.
    pub size: u64,
    /// Most inodes.
    pub nr_inodes: u64,
    /// Permissions of its root.
    pub mode: u32,
    /// No device files (all but `/dev`).
    pub nodev: bool,
    /// Nothing executable (all but `/tmp`).
    pub noexec: bool,
}

impl Tmpfs {
    /// The mount(2) data string.
    pub fn data(&self) -> String {
        format!("size={},nr_inodes={},mode={:o}", self.size, self.nr_inodes, self.mode)
    }
}

/// A resource limit of the instance's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rlimit {
    /// Open files.
    Nofile,
    /// Largest file written.
    Fsize,
    /// Core dumps (always 0).
    Core,
    /// Address space.
    As,
    /// Processes and threads of the user (gVisor's own limit; see [`crate::oci`]).
    Nproc,
}

impl Rlimit {
    /// The name OCI's `process.rlimits` uses.
    pub fn oci_name(self) -> &'static str {
        match self {
            Rlimit::Nofile => "RLIMIT_NOFILE",
            Rlimit::Fsize => "RLIMIT_FSIZE",
            Rlimit::Core => "RLIMIT_CORE",
            Rlimit::As => "RLIMIT_AS",
            Rlimit::Nproc => "RLIMIT_NPROC",
        }
    }

    /// The resource number for setrlimit(2).
    pub fn resource(self) -> libc::__rlimit_resource_t {
        match self {
            Rlimit::Nofile => libc::RLIMIT_NOFILE,
            Rlimit::Fsize => libc::RLIMIT_FSIZE,
            Rlimit::Core => libc::RLIMIT_CORE,
            Rlimit::As => libc::RLIMIT_AS,
            Rlimit::Nproc => libc::RLIMIT_NPROC,
        }
    }
}

/// The rlimits every tier sets (soft = hard), from the instance's limits. A limit the
/// function is not given (`limit_address_space: false`) is absent, not 0.
pub fn rlimits(l: &ResourceLimits) -> Vec<(Rlimit, u64)> {
    let mut out = vec![(Rlimit::Nofile, l.open_files), (Rlimit::Fsize, l.file_size_bytes), (Rlimit::Core, 0)];
    if l.limit_address_space {
        out.push((Rlimit::As, l.memory_bytes + ADDRESS_SPACE_SLACK));
    }
    out
}

/// Everything an instance's root is made of, in the order it is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRoot {
    /// Host symlinks recreated inside.
    pub links: Vec<Link>,
    /// Read-only binds: the system's and the runtime's files, then the code and bootstraps.
    pub binds: Vec<Bind>,
    /// The tmpfs table, parents before children.
    pub tmpfs: Vec<Tmpfs>,
    /// Device names under `/dev`.
    pub devices: Vec<String>,
    /// `/etc` files: name and content.
    pub etc: Vec<(String, String)>,
    /// Resource limits of the function's processes.
    pub rlimits: Vec<(Rlimit, u64)>,
    /// The process's working directory inside.
    pub cwd: PathBuf,
}

impl InstanceRoot {
    /// The root of the instance `spec` describes. Stats the host's system and runtime paths
    /// (those missing are left out, symlinks become [`Link`]s).
    pub fn of(spec: &InstanceSpec) -> InstanceRoot {
        let mut links = Vec::new();
        let mut binds = Vec::new();
        for p in bind_paths(&spec.runtime_paths) {
            let Ok(meta) = p.symlink_metadata() else { continue };
            if meta.file_type().is_symlink() {
                match std::fs::read_link(&p) {
                    Ok(to) => links.push(Link { path: p, to }),
                    Err(err) => tracing::warn!(path = %p.display(), %err, "readlink failed; left out of the instance root"),
                }
            } else {
                binds.push(Bind { target: p.clone(), source: p, dir: meta.is_dir(), writable: false });
            }
        }
        // The instance directory's task/, deps/ and opt/ (voltrun_package::layout), bound
        // whole so that files linked in later (a spare's) appear inside.
        for (source, target) in voltrun_package::InstanceDir::new(&spec.code_dir).binds() {
            if target == OPT_ROOT && binds.iter().any(|b| b.target.starts_with(OPT_ROOT)) {
                tracing::warn!(runtime = ?spec.runtime_paths, "the runtime lives under /opt: the instance gets no layers");
                continue;
            }
            binds.push(Bind { source, target: target.into(), dir: true, writable: false });
        }
        binds.push(Bind { source: spec.bootstrap_dir.clone(), target: BOOTSTRAP_ROOT.into(), dir: true, writable: false });
        let l = &spec.limits;
        let mut etc: Vec<(String, String)> = etc_files().into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        let mut cwd = PathBuf::from(TASK_ROOT);
        if let Some(job) = &spec.job {
            binds.extend(job.read_only.iter().map(|(source, target)| Bind { source: source.clone(), target: target.clone(), dir: true, writable: false }));
            binds.extend(job.writable.iter().map(|(source, target)| Bind { source: source.clone(), target: target.clone(), dir: true, writable: true }));
            if let Some(hosts) = etc.iter_mut().find(|(n, _)| n == "hosts") {
                for (name, ip) in &job.hosts {
                    hosts.1.push_str(&format!("{ip} {name}\n"));
                }
            }
            if let Some(c) = &job.cwd {
                cwd = c.clone();
            }
        }
        InstanceRoot { links, binds, tmpfs: tmpfs_table(l), devices: DEVICES.iter().map(|d| d.to_string()).collect(), etc, rlimits: rlimits(l), cwd }
    }

    /// Egress: the instance resolves names through `dns`, its gateway's resolver.
    pub fn with_resolver(mut self, dns: &str) -> InstanceRoot {
        self.etc.push(("resolv.conf".into(), crate::network::resolv_conf(dns)));
        self
    }
}

/// The tmpfs table: `/tmp` and `/dev/shm` share the function's tmp budget
/// ([`ResourceLimits::tmp_only_bytes`], [`ResourceLimits::shm_bytes`]); `/dev` holds only the
/// devices and links.
pub fn tmpfs_table(l: &ResourceLimits) -> Vec<Tmpfs> {
    vec![
        Tmpfs { target: "/tmp".into(), size: l.tmp_only_bytes(), nr_inodes: 16384, mode: 0o1777, nodev: true, noexec: false },
        Tmpfs { target: "/dev".into(), size: 64 << 10, nr_inodes: 64, mode: 0o755, nodev: false, noexec: true },
        // POSIX shared memory (Python's multiprocessing locks).
        Tmpfs { target: "/dev/shm".into(), size: l.shm_bytes(), nr_inodes: 256, mode: 0o1777, nodev: true, noexec: true },
    ]
}

/// The instance's `/etc`: the function user, localhost, and name lookups from files first.
pub fn etc_files() -> [(&'static str, String); 5] {
    [
        ("passwd", format!("root:x:0:0:root:/root:/usr/sbin/nologin\nvoltrun:x:{FUNCTION_UID}:{FUNCTION_UID}:function:/tmp:/usr/sbin/nologin\n")),
        ("group", format!("root:x:0:\nvoltrun:x:{FUNCTION_UID}:\n")),
        ("hosts", "127.0.0.1 localhost voltrun\n::1 localhost\n".into()),
        ("hostname", "voltrun\n".into()),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n".into()),
    ]
}

/// The host paths to bind: the system's and the runtime's that exist, without ones already
/// covered by an earlier one.
fn bind_paths(runtime: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in SYSTEM_PATHS.iter().map(PathBuf::from).chain(runtime.iter().cloned()) {
        if p.symlink_metadata().is_ok() && !out.iter().any(|o| p.starts_with(o)) {
            out.push(p);
        }
    }
    out
}

/// `target` relative to the new root (mount(2) calls run with the new root as cwd).
pub(crate) fn relative(target: &Path) -> &Path {
    target.strip_prefix("/").unwrap_or(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            argv: vec!["/usr/bin/true".into()],
            env: vec![],
            code_dir: "/data/functions/f1".into(),
            runtime_paths: vec!["/usr/lib".into(), "/nonexistent/runtime".into()],
            bootstrap_dir: "/data/bootstraps".into(),
            limits: ResourceLimits::default(),
            network: None,
            job: None,
        }
    }

    #[test]
    fn the_root_binds_code_and_bootstraps_last_and_skips_what_is_covered_or_missing() {
        let root = InstanceRoot::of(&spec());
        let n = root.binds.len();
        assert_eq!(root.binds[n - 4], Bind { source: "/data/functions/f1/task".into(), target: TASK_ROOT.into(), dir: true, writable: false });
        assert_eq!(root.binds[n - 3], Bind { source: "/data/functions/f1/deps".into(), target: DEPS_ROOT.into(), dir: true, writable: false });
        assert_eq!(root.binds[n - 2], Bind { source: "/data/functions/f1/opt".into(), target: OPT_ROOT.into(), dir: true, writable: false });
        assert_eq!(root.binds[n - 1].target, Path::new(BOOTSTRAP_ROOT));
        assert!(root.binds.iter().all(|b| b.source != Path::new("/usr/lib") && b.source != Path::new("/nonexistent/runtime")));
        assert!(root.binds.iter().any(|b| b.source == Path::new("/usr") && b.dir));
    }

    #[test]
    fn tmp_and_shm_share_the_tmp_budget() {
        let l = ResourceLimits { tmp_bytes: 256 << 20, ..ResourceLimits::default() };
        let t = tmpfs_table(&l);
        let size = |target: &str| t.iter().find(|m| m.target == target).unwrap().size;
        assert_eq!(size("/tmp") + size("/dev/shm"), 256 << 20);
        assert!(t.iter().position(|m| m.target == "/dev") < t.iter().position(|m| m.target == "/dev/shm"));
        assert_eq!(t[0].data(), format!("size={},nr_inodes=16384,mode=1777", l.tmp_only_bytes()));
    }

    #[test]
    fn address_space_is_limited_only_when_asked() {
        let on = ResourceLimits::default();
        assert!(rlimits(&on).contains(&(Rlimit::As, on.memory_bytes + ADDRESS_SPACE_SLACK)));
        let off = ResourceLimits { limit_address_space: false, ..on };
        assert!(rlimits(&off).iter().all(|(r, _)| *r != Rlimit::As));
    }
}
