//! Per-instance cgroups for memory, pids and CPU, on either hierarchy: cgroup v1 (one tree
//! per controller, as on our build hosts) or the unified v2 tree. Which one is detected at
//! start. Instance cgroups live under `<our own cgroup>/voltrun/`, so whatever limits the
//! server itself runs under also bound its functions.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{ResourceLimits, SandboxError};

/// The cgroup hierarchy of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One directory per controller: memory, pids, cpu; `others` are the `voltrun`
    /// directories of the remaining v1 hierarchies and of hybrid mode's unified one (not
    /// created by us: an OCI runtime may create instance cgroups there, which sweeps and
    /// teardowns then remove).
    V1 { memory: PathBuf, pids: PathBuf, cpu: PathBuf, others: Vec<PathBuf> },
    /// One unified directory.
    V2 { base: PathBuf },
}

const ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn err(call: &'static str, path: &Path, e: io::Error) -> SandboxError {
    SandboxError::Sys { call, source: io::Error::new(e.kind(), format!("{}: {e}", path.display())) }
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(|e| err("write", path, e))
}

/// The server's own cgroup path for a v1 controller (or "" for v2), from /proc/self/cgroup.
fn own_path(controller: &str) -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        if ctrls.split(',').any(|c| c == controller) {
            return path.to_string();
        }
    }
    "/".to_string()
}

/// `<mount point>/<our path>/voltrun` in every cgroup v1 hierarchy mounted here, from
/// /proc/self/mountinfo (fs type `cgroup`, controllers in the super options) and
/// /proc/self/cgroup (our path in the hierarchy with those controllers).
fn v1_hierarchies() -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let mut post = post.split_whitespace();
        let (Some(fs_type), Some(options)) = (post.next(), post.nth(1)) else { continue };
        let Some(mount_point) = pre.split_whitespace().nth(4) else { continue };
        if fs_type == "cgroup2" {
            // Hybrid mode's unified hierarchy (`/sys/fs/cgroup/unified`): the OCI runtimes
            // create an instance's cgroup there too, and a killed server's would stay.
            if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
                out.push(Path::new(mount_point).join(path.trim_start_matches('/')).join("voltrun"));
            }
            continue;
        }
        if fs_type != "cgroup" {
            continue;
        }
        for l in own.lines() {
            let mut parts = l.splitn(3, ':');
            let (ctrls, path) = (parts.nth(1).unwrap_or(""), parts.next().unwrap_or("/"));
            if !ctrls.is_empty() && ctrls.split(',').all(|c| options.split(',').any(|o| o == c)) {
                out.push(Path::new(mount_point).join(path.trim_start_matches('/')).join("voltrun"));
                break;
            }
        }
    }
    out
}

impl Hierarchy {
    /// Finds the hierarchy and prepares `<own cgroup>/voltrun` in it.
    pub fn detect() -> Result<Hierarchy, SandboxError> {
        let mut st: libc::statfs = unsafe_zeroed();
        let root = std::ffi::CString::new(ROOT).expect("no NUL");
        // SAFETY: `root` is a valid C string and `st` a valid statfs buffer.
        if unsafe { libc::statfs(root.as_ptr(), &mut st) } != 0 {
            return Err(SandboxError::Unavailable(format!("no cgroup filesystem at {ROOT}")));
        }
        // f_type's integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let is_v2 = st.f_type as i64 == CGROUP2_SUPER_MAGIC;
        let h = if is_v2 {
            let own = own_path("");
            let base = Path::new(ROOT).join(own.trim_start_matches('/')).join("voltrun");
            prepare_v2(&base)?;
            Hierarchy::V2 { base }
        } else {
            let dir = |c: &str| Path::new(ROOT).join(c).join(own_path(c).trim_start_matches('/')).join("voltrun");
            let (memory, pids, cpu) = (dir("memory"), dir("pids"), dir("cpu"));
            for d in [&memory, &pids, &cpu] {
                if !d.parent().is_some_and(Path::exists) {
                    return Err(SandboxError::Unavailable(format!("cgroup v1 controller missing: {}", d.display())));
                }
                fs::create_dir_all(d).map_err(|e| err("mkdir", d, e))?;
            }
            let managed: Vec<PathBuf> = [&memory, &pids, &cpu].iter().filter_map(|d| fs::canonicalize(d).ok()).collect();
            let others = v1_hierarchies().into_iter().filter(|d| !fs::canonicalize(d).is_ok_and(|c| managed.contains(&c))).collect();
            Hierarchy::V1 { memory, pids, cpu, others }
        };
        h.sweep();
        Ok(h)
    }

    /// `v1` or `v2`.
    pub fn version(&self) -> &'static str {
        match self {
            Hierarchy::V1 { .. } => "v1",
            Hierarchy::V2 { .. } => "v2",
        }
    }

    fn bases(&self) -> Vec<&Path> {
        match self {
            Hierarchy::V1 { memory, pids, cpu, others } => [memory, pids, cpu].into_iter().chain(others).map(PathBuf::as_path).collect(),
            Hierarchy::V2 { base } => vec![base],
        }
    }

    /// Where an instance's cgroup would be in the v1 hierarchies we do not manage.
    pub fn unmanaged_dirs(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Hierarchy::V1 { others, .. } => others.iter().map(|d| d.join(name)).collect(),
            Hierarchy::V2 { .. } => Vec::new(),
        }
    }

    /// Removes instance cgroups a crashed server left behind, killing what is in them.
    /// Cgroups are named `i<server pid>-<n>`; those of a server still running are left alone
    /// (several servers may share a host, as the tests do).
    fn sweep(&self) {
        self.remove_where(|owner| !owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()));
    }

    /// Kills and removes every instance cgroup of the server with this pid.
    pub fn remove_owned_by(&self, pid: u32) {
        self.remove_where(|owner| owner == Some(pid));
    }

    fn remove_where(&self, pred: impl Fn(Option<u32>) -> bool) {
        for base in self.bases() {
            let Ok(entries) = fs::read_dir(base) else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let owner = name.strip_prefix('i').and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
                if !pred(owner) {
                    continue;
                }
                if e.path().is_dir() {
                    let cg = Cgroup { dirs: vec![e.path()], v2: matches!(self, Hierarchy::V2 { .. }) };
                    cg.kill_all();
                    let _ = cg.remove();
                }
            }
        }
    }

    /// Creates the cgroup of one instance with its limits.
    pub fn create(&self, name: &str, l: &ResourceLimits) -> Result<Cgroup, SandboxError> {
        let cg = match self {
            Hierarchy::V1 { memory, pids, cpu, .. } => {
                let cg = Cgroup { dirs: vec![memory.join(name), pids.join(name), cpu.join(name)], v2: false };
                for d in &cg.dirs {
                    fs::create_dir(d).map_err(|e| err("mkdir", d, e))?;
                }
                let (m, p, c) = (&cg.dirs[0], &cg.dirs[1], &cg.dirs[2]);
                write(&m.join("memory.limit_in_bytes"), &l.memory_bytes.to_string())?;
                // Swap would let an instance exceed its memory; memsw exists only with swap accounting.
                let memsw = m.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &l.memory_bytes.to_string())?;
                }
                let _ = fs::write(m.join("memory.swappiness"), "0");
                write(&p.join("pids.max"), &l.pids.to_string())?;
                write(&c.join("cpu.cfs_period_us"), "100000")?;
                write(&c.join("cpu.cfs_quota_us"), &(l.cpu_millis * 100).to_string())?;
                write(&c.join("cpu.shares"), &start_shares(l).to_string())?;
                cg
            }
            Hierarchy::V2 { base } => {
                let d = base.join(name);
                fs::create_dir(&d).map_err(|e| err("mkdir", &d, e))?;
                let cg = Cgroup { dirs: vec![d.clone()], v2: true };
                write(&d.join("memory.max"), &l.memory_bytes.to_string())?;
                let _ = fs::write(d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &l.pids.to_string())?;
                write(&d.join("cpu.max"), &format!("{} 100000", l.cpu_millis * 100))?;
                write(&d.join("cpu.weight"), &v2_weight(start_shares(l)).to_string())?;
                cg
            }
        };
        Ok(cg)
    }
}

/// CPU weight relative to the default 1024 of host processes: proportional to memory, as
/// Lambda allocates CPU, so the server always outweighs a single small function.
pub fn cpu_shares(l: &ResourceLimits) -> u64 {
    ((l.memory_bytes >> 20) * 1024 / 1769).clamp(BACKGROUND_SHARES, 1024)
}

/// The weight of a spare until it is given a function: the least cgroup v1 allows.
const BACKGROUND_SHARES: u64 = 2;

fn start_shares(l: &ResourceLimits) -> u64 {
    if l.background {
        BACKGROUND_SHARES
    } else {
        cpu_shares(l)
    }
}

/// cgroup v2's `cpu.weight` (1-10000, default 100) for v1 shares (2-262144, default 1024).
fn v2_weight(shares: u64) -> u64 {
    (shares * 10_000 / 1024).clamp(1, 10_000)
}

fn unsafe_zeroed<T>() -> T {
    // SAFETY: only used for plain C structs (statfs) for which all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// v2 needs controllers enabled top-down, and a cgroup with processes cannot delegate
/// controllers (the "no internal processes" rule): if our own cgroup holds processes, they
/// move to a `server` leaf first.
fn prepare_v2(base: &Path) -> Result<(), SandboxError> {
    let own = base.parent().expect("base has a parent");
    let procs = fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        let leaf = own.join("server");
        fs::create_dir_all(&leaf).map_err(|e| err("mkdir", &leaf, e))?;
        for pid in procs.lines() {
            let _ = fs::write(leaf.join("cgroup.procs"), pid);
        }
    }
    write(&own.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
    fs::create_dir_all(base).map_err(|e| err("mkdir", base, e))?;
    write(&base.join("cgroup.subtree_control"), "+memory +pids +cpu")
}

/// The cgroup(s) of one instance.
#[derive(Debug)]
pub struct Cgroup {
    /// v1: memory, pids, cpu directories; v2: the one directory.
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Cgroup {
    /// The `cgroup.procs` files a process writes "0" into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Pids of every process in the instance.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dirs[0].join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Sets the instance's CPU weight (v1 shares; v2 gets the same share of its weight range).
    pub fn set_cpu_shares(&self, shares: u64) -> Result<(), SandboxError> {
        if self.v2 {
            write(&self.dirs[0].join("cpu.weight"), &v2_weight(shares).to_string())
        } else {
            write(&self.dirs[2].join("cpu.shares"), &shares.to_string())
        }
    }

    /// Gives a spare started in the background the weight kept for it (`pending`, taken:
    /// once), as `InstanceHandle::give_cpu_weight` does in every tier with cgroups.
    pub fn give_pending_shares(&self, pending: &mut Option<u64>) {
        if let Some(shares) = pending.take() {
            if let Err(e) = self.set_cpu_shares(shares) {
                tracing::warn!(err = %e, "could not give a spare its CPU weight");
            }
        }
    }

    /// True when the kernel OOM-killed a process of the instance.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        fs::read_to_string(self.dirs[0].join(file)).unwrap_or_default().lines().filter_map(|l| l.split_once(' ')).any(|(k, v)| k == key && v.trim().parse::<u64>().unwrap_or(0) > 0)
    }

    /// SIGKILLs every process in the instance.
    pub fn kill_all(&self) {
        if self.v2 && fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            crate::sys::kill_pid(pid);
        }
    }

    /// Removes the cgroup directories once their processes are gone (waits up to 2 s,
    /// killing again meanwhile).
    pub fn remove(&self) -> Result<(), SandboxError> {
        let until = Instant::now() + Duration::from_secs(2);
        for d in &self.dirs {
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < until => {
                        tracing::debug!(path = %d.display(), %e, "cgroup busy; retrying");
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(err("rmdir", d, e)),
                }
            }
        }
        Ok(())
    }
}
