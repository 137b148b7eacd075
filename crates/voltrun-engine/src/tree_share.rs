//! Built dependency trees shared between nodes (PostgreSQL): the node that built a tree packs
//! it into one blob of the store, and a node that lacks it unpacks that blob into its own
//! cache before the first run that needs it.
//!
//! The format is ours, small and strict: gzip over a sequence of entries, each a kind byte
//! (`d` directory, `f` file, `x` executable file, `l` symlink), a path (u32 length, UTF-8,
//! relative, no `..`, no empty or `.` component), and for files the bytes (u64 length), for
//! links the target (u32 length). Zip would lose the symlinks and modes a `node_modules` tree
//! has (`.bin/` links, executables). Unpacking writes only below its destination: every
//! parent of an entry must be a directory it created, never a symlink, so a link cannot lead
//! a later entry out of the tree.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The most bytes a tree may unpack to (a built tree larger than this is not shared).
pub(crate) const MAX_TREE_BYTES: u64 = 4 << 30;
/// The most entries a tree may hold.
const MAX_ENTRIES: usize = 1_000_000;

/// Packs the tree at `root` (files, directories, symlinks; anything else is refused).
pub(crate) fn pack(root: &Path) -> io::Result<Vec<u8>> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut stack = vec![PathBuf::new()];
    let mut total = 0u64;
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(root.join(&rel))?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let path = rel.join(&name);
            let full = root.join(&path);
            let meta = fs::symlink_metadata(&full)?;
            let text = path.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a path in the tree is not UTF-8"))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&full)?;
                let target = target.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a link target is not UTF-8"))?;
                entry(&mut out, b'l', text)?;
                string(&mut out, target)?;
            } else if ft.is_dir() {
                entry(&mut out, b'd', text)?;
                stack.push(path);
            } else if ft.is_file() {
                total += meta.len();
                if total > MAX_TREE_BYTES {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the tree is too large to share"));
                }
                entry(&mut out, if meta.permissions().mode() & 0o111 != 0 { b'x' } else { b'f' }, text)?;
                out.write_all(&meta.len().to_le_bytes())?;
                let copied = io::copy(&mut fs::File::open(&full)?.take(meta.len()), &mut out)?;
                if copied != meta.len() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{text} changed while it was packed")));
                }
            } else {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{text}: not a file, directory or link")));
            }
        }
    }
    out.finish()
}

fn entry(out: &mut impl Write, kind: u8, path: &str) -> io::Result<()> {
    out.write_all(&[kind])?;
    string(out, path)
}

fn string(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u32).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn read_string(r: &mut impl Read) -> io::Result<String> {
    let mut n = [0u8; 4];
    r.read_exact(&mut n)?;
    let n = u32::from_le_bytes(n) as usize;
    if n > 64 * 1024 {
        return Err(bad(format!("a name of {n} bytes")));
    }
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|_| bad("a name that is not UTF-8".into()))
}

/// Unpacks a packed tree, read as a stream from `packed` (a file of the fetched blob, never
/// the whole blob in memory), into `dest` (which must not exist); on error `dest` is removed.
pub(crate) fn unpack(packed: impl Read, dest: &Path) -> io::Result<u64> {
    let r = unpack_into(packed, dest);
    if r.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    r
}

fn unpack_into(packed: impl Read, dest: &Path) -> io::Result<u64> {
    fs::create_dir(dest)?;
    let mut r = flate2::read::GzDecoder::new(packed);
    let mut dirs: HashSet<PathBuf> = HashSet::from([PathBuf::new()]);
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let (mut total, mut entries) = (0u64, 0usize);
    loop {
        let mut kind = [0u8; 1];
        match r.read(&mut kind)? {
            0 => return Ok(total),
            _ => entries += 1,
        }
        if entries > MAX_ENTRIES {
            return Err(bad("too many entries".into()));
        }
        let path = read_string(&mut r)?;
        let rel = PathBuf::from(&path);
        if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad(format!("entry {path:?} is not a plain relative path")));
        }
        // Every parent must be a directory of this tree (never a link), and no entry twice.
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if !dirs.contains(&parent) || !taken.insert(rel.clone()) {
            return Err(bad(format!("entry {path:?} is out of order, a duplicate, or under a link")));
        }
        let full = dest.join(&rel);
        match kind[0] {
            b'd' => {
                fs::create_dir(&full)?;
                dirs.insert(rel);
            }
            b'l' => symlink(read_string(&mut r)?, &full)?,
            k @ (b'f' | b'x') => {
                let mut n = [0u8; 8];
                r.read_exact(&mut n)?;
                let n = u64::from_le_bytes(n);
                total += n;
                if total > MAX_TREE_BYTES {
                    return Err(bad("the tree unpacks to too many bytes".into()));
                }
                let mode = if k == b'x' { 0o755 } else { 0o644 };
                let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(&full)?;
                if io::copy(&mut (&mut r).take(n), &mut f)? != n {
                    return Err(bad(format!("entry {path:?} is cut short")));
                }
                f.set_permissions(fs::Permissions::from_mode(mode))?;
            }
            other => return Err(bad(format!("unknown entry kind {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("voltrun-tree-share-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// A tree with the shapes node_modules has (nested dirs, an executable, a relative link)
    /// comes back the same.
    #[test]
    fn a_tree_round_trips_with_links_and_modes() {
        let src = temp("src");
        fs::create_dir_all(src.join("pkg/bin")).unwrap();
        fs::create_dir_all(src.join(".bin")).unwrap();
        fs::write(src.join("pkg/index.js"), "module.exports = 1").unwrap();
        fs::write(src.join("pkg/bin/cli.js"), "#!/usr/bin/env node").unwrap();
        fs::set_permissions(src.join("pkg/bin/cli.js"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../pkg/bin/cli.js", src.join(".bin/cli")).unwrap();
        let packed = pack(&src).unwrap();
        let dest = temp("dest");
        assert_eq!(unpack(&packed[..], &dest).unwrap(), 18 + 19);
        assert_eq!(fs::read_to_string(dest.join("pkg/index.js")).unwrap(), "module.exports = 1");
        assert_eq!(fs::metadata(dest.join("pkg/bin/cli.js")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_link(dest.join(".bin/cli")).unwrap(), PathBuf::from("../pkg/bin/cli.js"));
        let _ = (fs::remove_dir_all(&src), fs::remove_dir_all(&dest));
    }

    /// Entries that escape (`..`, absolute) or pass through a link are refused, and nothing
    /// is left behind.
    #[test]
    fn entries_that_escape_or_go_through_a_link_are_refused() {
        let craft = |entries: &[(u8, &str, &[u8])]| {
            let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for (k, p, body) in entries {
                entry(&mut out, *k, p).unwrap();
                match k {
                    b'l' => string(&mut out, std::str::from_utf8(body).unwrap()).unwrap(),
                    b'f' => {
                        out.write_all(&(body.len() as u64).to_le_bytes()).unwrap();
                        out.write_all(body).unwrap();
                    }
                    _ => {}
                }
            }
            out.finish().unwrap()
        };
        for bad in [
            craft(&[(b'f', "../x", b"1")]),
            craft(&[(b'f', "/tmp/x", b"1")]),
            craft(&[(b'l', "up", b"/tmp"), (b'f', "up/x", b"1")]),
            craft(&[(b'f', "a", b"1"), (b'f', "a", b"2")]),
            craft(&[(b'f', "nodir/x", b"1")]),
        ] {
            let dest = temp("bad");
            assert!(unpack(&bad[..], &dest).is_err());
            assert!(!dest.exists(), "a refused tree leaves nothing");
        }
    }
}
