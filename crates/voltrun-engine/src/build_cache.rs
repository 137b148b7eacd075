//! The content-addressed cache of built dependency trees (issue 15): `<data_dir>/deps/<key>`,
//! read-only, owned by root, bounded by size (least recently used first out), with a lock per
//! key so concurrent builds of one key build once, and pins so a tree an instance uses right
//! now is never evicted. Builds happen in `<data_dir>/deps/.building/` and are renamed into
//! place only once sealed, so a tree in the cache is always complete; what a crash leaves in
//! `.building` is removed at the next start.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// The cache of one node.
pub(crate) struct DepsCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Arc<Mutex<State>>,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    next: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Users of a tree right now, by key ([`TreeUse`] guards).
    pins: HashMap<String, usize>,
    /// Trees a live function version runs with (SPEC §13: its dependencies are frozen):
    /// never evicted, refreshed from the store ([`DepsCache::set_referenced`]).
    referenced: std::collections::HashSet<String>,
}

struct Entry {
    bytes: u64,
    last_used: SystemTime,
}

/// A tree in use (by an instance): it is not evicted while this lives.
pub struct TreeUse {
    key: String,
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl TreeUse {
    /// The tree on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TreeUse {
    fn drop(&mut self) {
        let mut s = self.state.lock().expect("cache lock");
        if let Some(n) = s.pins.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                s.pins.remove(&self.key);
            }
        }
    }
}

impl DepsCache {
    /// Opens the cache under `dir` (created), forgetting unfinished builds; the trees already
    /// there are counted, their last use being their directory's mtime.
    pub(crate) fn open(dir: PathBuf, max_bytes: u64) -> std::io::Result<DepsCache> {
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let building = dir.join(".building");
        let _ = fs::remove_dir_all(&building);
        fs::create_dir_all(&building)?;
        let mut state = State::default();
        for e in fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_key(&name) {
                continue;
            }
            let last_used = e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            state.entries.insert(name, Entry { bytes: tree_bytes(&e.path()), last_used });
        }
        Ok(DepsCache { dir, max_bytes, state: Arc::new(Mutex::new(state)), locks: Mutex::new(HashMap::new()), next: AtomicU64::new(0) })
    }

    /// Where the tree of `key` lives (whether or not it is there).
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The tree of `key` when it is cached; marks it used now.
    pub(crate) fn lookup(&self, key: &str) -> Option<PathBuf> {
        let path = self.path(key);
        let mut s = self.state.lock().expect("cache lock");
        let e = s.entries.get_mut(key)?;
        if !path.is_dir() {
            s.entries.remove(key);
            return None;
        }
        e.last_used = SystemTime::now();
        // The mtime carries the last use across restarts (best effort).
        let _ = fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
        Some(path)
    }

    /// Replaces the set of trees live versions refer to (pinned by reference: never evicted
    /// while a version that runs with them exists).
    pub(crate) fn set_referenced(&self, keys: impl IntoIterator<Item = String>) {
        self.state.lock().expect("cache lock").referenced = keys.into_iter().collect();
    }

    /// Pins the tree of `key` for as long as the result lives, or `None` when it is not cached.
    pub(crate) fn pin(&self, key: &str) -> Option<TreeUse> {
        let path = self.lookup(key)?;
        *self.state.lock().expect("cache lock").pins.entry(key.to_string()).or_default() += 1;
        Some(TreeUse { key: key.to_string(), path, state: self.state.clone() })
    }

    /// The lock builders of `key` hold (one build per key at a time).
    pub(crate) fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("locks lock");
        locks.retain(|_, w| w.strong_count() > 0);
        if let Some(l) = locks.get(key).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_string(), Arc::downgrade(&l));
        l
    }

    /// A fresh scratch directory for a build of `key`, removed when the guard drops (also when
    /// the build's task is aborted or its future dropped), or at the next start.
    pub(crate) fn scratch(&self, key: &str) -> std::io::Result<Scratch> {
        let d = self.dir.join(".building").join(format!("{}-{}", &key[..16.min(key.len())], self.next.fetch_add(1, Relaxed)));
        fs::create_dir(&d)?;
        Ok(Scratch(d))
    }

    /// Seals `built` (root-owned, read-only, nothing but files, directories and symlinks)
    /// and moves it into the cache as `key`, then evicts down to the bound. Returns the tree's
    /// path and size. A tree larger than `max_tree` or than the cache's bound is refused before
    /// it enters (and evicts nothing).
    pub(crate) fn insert(&self, key: &str, built: &Path, max_tree: u64) -> std::io::Result<(PathBuf, u64)> {
        let size = tree_bytes(built);
        let cap = max_tree.min(self.max_bytes);
        if size > cap {
            return Err(std::io::Error::other(format!("the tree is {size} bytes, more than the {cap} a tree may have (--build-max-output, --build-cache-size)")));
        }
        let bytes = seal(built)?;
        let dest = self.path(key);
        if dest.exists() {
            // Another node process (or a lost race) put it there: same key, same content.
            let _ = fs::remove_dir_all(&dest);
        }
        fs::rename(built, &dest)?;
        self.state.lock().expect("cache lock").entries.insert(key.to_string(), Entry { bytes, last_used: SystemTime::now() });
        self.evict(key);
        Ok((dest, bytes))
    }

    /// Removes least recently used trees until the cache fits its bound, never one that is
    /// pinned nor `keep` (just built).
    fn evict(&self, keep: &str) {
        let victims: Vec<String> = {
            let mut s = self.state.lock().expect("cache lock");
            let mut total: u64 = s.entries.values().map(|e| e.bytes).sum();
            let mut order: Vec<(SystemTime, String, u64)> =
                s.entries.iter().filter(|(k, _)| k.as_str() != keep && !s.pins.contains_key(k.as_str()) && !s.referenced.contains(k.as_str())).map(|(k, e)| (e.last_used, k.clone(), e.bytes)).collect();
            order.sort();
            let mut out = Vec::new();
            for (_, k, b) in order {
                if total <= self.max_bytes {
                    break;
                }
                total -= b;
                s.entries.remove(&k);
                out.push(k);
            }
            out
        };
        for k in victims {
            // Renamed first, so no lookup finds a half-deleted tree.
            let doomed = self.dir.join(".building").join(format!("evicted-{k}"));
            if fs::rename(self.path(&k), &doomed).is_ok() {
                let _ = fs::remove_dir_all(&doomed);
            }
            tracing::info!(key = %k, "dependency tree evicted from the cache");
        }
    }

    /// Bytes of the cached trees, in all.
    pub(crate) fn bytes(&self) -> u64 {
        self.state.lock().expect("cache lock").entries.values().map(|e| e.bytes).sum()
    }
}

/// A build's scratch directory: removed with everything in it when dropped.
pub(crate) struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), err = %e, "could not remove a build's scratch directory");
            }
        }
    }
}

/// A cache key: 64 lowercase hex digits.
fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Bytes of the regular files under `dir` (symlinks not followed).
pub(crate) fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

/// Makes a finished build's output a tree fit to share: every entry owned by root, files
/// 0444 (0555 when executable by anyone), directories 0555, no set-id bits, symlinks kept as
/// they are (they resolve inside the instance that sees the tree), anything else (fifos,
/// sockets) removed. Runs after every process of the build is gone, so nothing changes under
/// it. Returns the bytes of the regular files.
fn seal(root: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            let m = p.symlink_metadata()?;
            let ft = m.file_type();
            if ft.is_symlink() {
                std::os::unix::fs::lchown(&p, Some(0), Some(0))?;
            } else if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                std::os::unix::fs::lchown(&p, Some(0), Some(0))?;
                let mode = if m.mode() & 0o111 != 0 { 0o555 } else { 0o444 };
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
                total += m.len();
            } else {
                fs::remove_file(&p)?;
            }
        }
        dirs.push(d);
    }
    // Directories last, children first: a read-only directory is still writable by root, but
    // keep the order obvious.
    for d in dirs.iter().rev() {
        std::os::unix::fs::lchown(d, Some(0), Some(0))?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o555))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn built(cache: &DepsCache, k: &str, bytes: usize) -> PathBuf {
        let d = cache.scratch(k).unwrap();
        let tree = d.with_extension("tree");
        fs::create_dir_all(tree.join("pkg")).unwrap();
        fs::write(tree.join("pkg/data.bin"), vec![7u8; bytes]).unwrap();
        tree
    }

    #[test]
    fn the_least_recently_used_unpinned_tree_is_evicted_first() {
        let tmp = std::env::temp_dir().join(format!("voltrun-cache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let cache = DepsCache::open(tmp.clone(), 2500).unwrap();
        let (a, b, c, d) = (key(1), key(2), key(3), key(4));
        cache.insert(&a, &built(&cache, &a, 1000), u64::MAX).unwrap();
        cache.insert(&b, &built(&cache, &b, 1000), u64::MAX).unwrap();
        let pin = cache.pin(&a).expect("a is cached");
        // a is older than b but pinned: c's arrival evicts b.
        cache.insert(&c, &built(&cache, &c, 1000), u64::MAX).unwrap();
        assert!(cache.lookup(&a).is_some(), "a pinned tree stays");
        assert!(cache.lookup(&b).is_none(), "the unpinned least recently used tree goes");
        assert!(cache.lookup(&c).is_some());
        drop(pin);
        cache.lookup(&c);
        cache.insert(&d, &built(&cache, &d, 1000), u64::MAX).unwrap();
        assert!(cache.lookup(&a).is_none(), "unpinned, a is now the least recently used");
        assert!(cache.bytes() <= 2500);
        // Sealed: read-only, root-owned.
        let m = fs::metadata(cache.path(&d).join("pkg/data.bin")).unwrap();
        assert_eq!((m.mode() & 0o777, m.uid()), (0o444, 0));
        // Reopening counts what is there.
        drop(cache);
        let again = DepsCache::open(tmp.clone(), 2500).unwrap();
        assert!(again.lookup(&c).is_some() && again.lookup(&d).is_some());
        assert_eq!(again.bytes(), 2000);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn a_build_writing_past_the_output_cap_is_failed_and_evicts_nothing() {
        let tmp = std::env::temp_dir().join(format!("voltrun-cache-cap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let cache = DepsCache::open(tmp.clone(), 2500).unwrap();
        let (a, b, big, huge) = (key(1), key(2), key(3), key(4));
        cache.insert(&a, &built(&cache, &a, 1000), 1500).unwrap();
        cache.insert(&b, &built(&cache, &b, 1000), 1500).unwrap();
        // Over the per-tree cap: refused, nothing evicted.
        let e = cache.insert(&big, &built(&cache, &big, 2000), 1500).unwrap_err();
        assert!(e.to_string().contains("more than the 1500"), "{e}");
        // Over the cache's bound (whatever the cap): refused too.
        let e = cache.insert(&huge, &built(&cache, &huge, 3000), u64::MAX).unwrap_err();
        assert!(e.to_string().contains("more than the 2500"), "{e}");
        assert!(cache.lookup(&a).is_some() && cache.lookup(&b).is_some(), "a refused tree evicts nothing");
        assert!(cache.lookup(&big).is_none() && cache.lookup(&huge).is_none());
        assert_eq!(cache.bytes(), 2000);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[tokio::test]
    async fn a_cancelled_build_leaves_no_scratch_directory() {
        let tmp = std::env::temp_dir().join(format!("voltrun-cache-scratch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let cache = std::sync::Arc::new(DepsCache::open(tmp.clone(), 2500).unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = cache.clone();
        // A build task holding its scratch directory, aborted mid-build (as cancel_builds and
        // drop_lost_builds do).
        let task = tokio::spawn(async move {
            let scratch = c.scratch(&key(9)).unwrap();
            fs::create_dir_all(scratch.join("out/pkg")).unwrap();
            fs::write(scratch.join("out/pkg/x"), b"x").unwrap();
            tx.send(scratch.to_path_buf()).unwrap();
            std::future::pending::<()>().await;
        });
        let dir = rx.await.unwrap();
        assert!(dir.join("out/pkg/x").exists());
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(!dir.exists(), "the aborted build's scratch directory is removed");
        assert_eq!(fs::read_dir(tmp.join(".building")).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&tmp);
    }
}
