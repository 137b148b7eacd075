//! Content-addressed unpacked trees under `<data_dir>/trees/<sha256>`: a package (or a
//! dependency tree, or a layer) is unpacked once per server, whatever the number of functions
//! and instances using it. A tree is made in a scratch directory (`trees/.tmp/`) and renamed
//! into place, so it appears whole or not at all; concurrent creators of the same tree each
//! build their own and the first rename wins (the others' copies are removed). A tree is
//! never changed once in place. Instances get a tree as a hard-link farm ([`link_into`]):
//! the same inodes, no copies.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The trees of one data directory.
#[derive(Debug, Clone)]
pub struct Trees {
    root: PathBuf,
}

/// Why [`Trees::ensure`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E: std::error::Error + 'static> {
    /// The key is not a lowercase hex SHA-256.
    #[error("{0:?} is not a SHA-256 in hex")]
    BadKey(String),
    /// Filling the tree failed (its scratch directory is removed).
    #[error(transparent)]
    Fill(E),
    /// The trees directory could not be used.
    #[error("the trees directory: {0}")]
    Io(#[from] io::Error),
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Trees {
    /// The trees of `data_dir` (`<data_dir>/trees`; nothing is created yet).
    pub fn new(data_dir: &Path) -> Trees {
        Trees { root: data_dir.join("trees") }
    }

    /// The directory of the tree `sha` (which may not exist).
    pub fn path(&self, sha: &str) -> PathBuf {
        self.root.join(sha)
    }

    /// Where trees are built before they are renamed into place; empty when no build runs.
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }

    /// True when the tree `sha` is in place.
    pub fn has(&self, sha: &str) -> bool {
        is_sha256_hex(sha) && self.path(sha).is_dir()
    }

    /// The tree `sha`, made by `fill` when it is not there yet. `fill` gets a path that does
    /// not exist (its parent does) and must create it; on error it is removed. Safe under
    /// concurrent callers for the same key: every caller gets the one tree in place.
    pub fn ensure<E, F>(&self, sha: &str, fill: F) -> Result<PathBuf, TreeError<E>>
    where
        E: std::error::Error + 'static,
        F: FnOnce(&Path) -> Result<(), E>,
    {
        if !is_sha256_hex(sha) {
            return Err(TreeError::BadKey(sha.to_string()));
        }
        let dest = self.path(sha);
        if dest.is_dir() {
            return Ok(dest);
        }
        let scratch = self.scratch_dir();
        fs::DirBuilder::new().mode(0o755).recursive(true).create(&scratch)?;
        let tmp = scratch.join(format!("{sha}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&tmp);
        if let Err(e) = fill(&tmp) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(TreeError::Fill(e));
        }
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(dest),
            // Another creator won (rename(2) onto a non-empty directory: ENOTEMPTY/EEXIST).
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(dest)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(TreeError::Io(e))
            }
        }
    }

    /// Removes the tree `sha` (for caches that evict); instances already linked keep their
    /// files (hard links).
    pub fn remove(&self, sha: &str) -> io::Result<()> {
        if !is_sha256_hex(sha) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a SHA-256"));
        }
        // Renamed away first so nobody links a half-removed tree.
        let doomed = self.scratch_dir().join(format!("rm-{sha}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        fs::DirBuilder::new().mode(0o755).recursive(true).create(self.scratch_dir())?;
        match fs::rename(self.path(sha), &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Mirrors the tree `src` into the directory `dst` (which exists): directories are made,
/// files hard-linked (copied only when `dst` is on another filesystem), symlinks recreated
/// (dependency trees have them: `node_modules/.bin`). An existing file in `dst` is replaced
/// (later layers win). Returns the number of files linked.
pub fn link_into(src: &Path, dst: &Path) -> io::Result<u64> {
    // Into an empty directory (every instance's first tree) nothing needs replacing: no
    // lookups before each link.
    let empty = fs::read_dir(dst)?.next().is_none();
    link_tree(src, dst, empty)
}

fn link_tree(src: &Path, dst: &Path, fresh: bool) -> io::Result<u64> {
    let mut n = 0;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let ty = entry.file_type()?;
        if ty.is_dir() {
            let made = match if fresh { Err(io::ErrorKind::NotFound.into()) } else { fs::symlink_metadata(&to) } {
                Ok(m) if m.is_dir() => false,
                Ok(_) => {
                    fs::remove_file(&to)?;
                    fs::DirBuilder::new().mode(0o755).create(&to)?;
                    true
                }
                Err(_) => {
                    fs::DirBuilder::new().mode(0o755).create(&to)?;
                    true
                }
            };
            n += link_tree(&from, &to, made)?;
        } else {
            if !fresh {
                match fs::symlink_metadata(&to) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&to)?,
                    Ok(_) => fs::remove_file(&to)?,
                    Err(_) => {}
                }
            }
            if ty.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            } else {
                match fs::hard_link(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(18) => {
                        // EXDEV: another filesystem; a copy is the only way.
                        fs::copy(&from, &to)?;
                    }
                    Err(e) => return Err(e),
                }
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::{scratch, zip_of};
    use crate::{unpack_zip, Limits, PackageError};
    use std::os::unix::fs::MetadataExt;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_tree_is_made_once_and_linked_not_copied() {
        let data = scratch();
        let trees = Trees::new(&data);
        let zip = zip_of(&[("main.py", 0o644, b"x = 1\n"), ("pkg/mod.py", 0o644, b"y = 2\n")]);
        let t = trees.ensure(SHA, |p| unpack_zip(&zip, p, &Limits::zip()).map(drop)).unwrap();
        let again = trees.ensure::<PackageError, _>(SHA, |_| panic!("made twice")).unwrap();
        assert_eq!(t, again);
        let inst = data.join("inst");
        fs::create_dir(&inst).unwrap();
        assert_eq!(link_into(&t, &inst).unwrap(), 2);
        assert_eq!(fs::metadata(inst.join("pkg/mod.py")).unwrap().ino(), fs::metadata(t.join("pkg/mod.py")).unwrap().ino());
        assert_eq!(fs::read_dir(trees.scratch_dir()).unwrap().count(), 0);
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_failed_fill_leaves_nothing() {
        let data = scratch();
        let trees = Trees::new(&data);
        let bomb = zip_of(&[("bomb", 0o644, &vec![0u8; 8 << 20])]);
        assert!(matches!(trees.ensure(SHA, |p| unpack_zip(&bomb, p, &Limits::zip()).map(drop)), Err(TreeError::Fill(_))));
        assert!(!trees.has(SHA));
        assert_eq!(fs::read_dir(trees.scratch_dir()).unwrap().count(), 0);
        assert!(matches!(trees.ensure(SHA, |p| unpack_zip(&bomb, p, &Limits::zip()).map(drop)), Err(TreeError::Fill(_))));
        assert!(matches!(trees.ensure::<PackageError, _>("../x", |_| Ok(())), Err(TreeError::BadKey(_))));
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn concurrent_creators_get_one_tree() {
        let data = scratch();
        let trees = Trees::new(&data);
        let zip = zip_of(&[("a", 0o644, b"1"), ("b/c", 0o644, b"2")]);
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| trees.ensure(SHA, |p| unpack_zip(&zip, p, &Limits::zip()).map(drop)).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(paths.iter().all(|p| *p == trees.path(SHA)));
        assert_eq!(fs::read(trees.path(SHA).join("b/c")).unwrap(), b"2");
        assert_eq!(fs::read_dir(trees.scratch_dir()).unwrap().count(), 0);
        trees.remove(SHA).unwrap();
        assert!(!trees.has(SHA));
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn later_trees_win_when_linked_over_earlier_ones() {
        let data = scratch();
        let (a, b, dst) = (data.join("a"), data.join("b"), data.join("dst"));
        for d in [&a, &b, &dst] {
            fs::create_dir_all(d.join("python")).unwrap();
        }
        fs::write(a.join("python/x.py"), "a").unwrap();
        fs::write(a.join("python/only_a.py"), "a").unwrap();
        fs::write(b.join("python/x.py"), "b").unwrap();
        std::os::unix::fs::symlink("x.py", b.join("python/link.py")).unwrap();
        link_into(&a, &dst).unwrap();
        link_into(&b, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("python/x.py")).unwrap(), "b");
        assert_eq!(fs::read_to_string(dst.join("python/only_a.py")).unwrap(), "a");
        assert_eq!(fs::read_to_string(dst.join("python/link.py")).unwrap(), "b");
        fs::remove_dir_all(&data).unwrap();
    }
}
