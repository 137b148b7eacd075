//! Unpacking an untrusted zip archive safely. Every entry is checked before anything of it is
//! written: its name (UTF-8, relative, no `..`, `.`, empty components, backslashes or NULs),
//! its type (regular files and directories only: a symlink, device, FIFO or socket, told by
//! the unix mode in the central directory, is refused), duplicates (the exact same path twice,
//! or a path that is both a file and a directory; names differing only in case are allowed, as
//! `/var/task` is case-sensitive like Lambda's) and encryption. The size limits are counted on
//! the decompressed stream as it is read, never taken from the headers: the whole archive, the
//! unpacked total, the number of files, and each entry's ratio of unpacked to compressed bytes
//! (with an allowance for small files, which compress far better than large ones).
//!
//! [`unpack_zip`] writes into a new directory that is removed on any error; [`inspect_zip`]
//! runs the same checks writing nothing (validation at deploy time).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use zip::ZipArchive;

/// One MiB.
const MIB: u64 = 1 << 20;

/// The limits a package is held to (SPEC §10, Lambda's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of the zip archive itself.
    pub max_zip: u64,
    /// Most bytes of all files unpacked.
    pub max_unpacked: u64,
    /// Most files (directories are not counted).
    pub max_files: usize,
    /// Most unpacked bytes per compressed byte of one entry…
    pub max_ratio: u64,
    /// …for entries that unpack to more than this many bytes (small files may compress
    /// better: a 100 KiB file of spaces is not a bomb).
    pub ratio_allowance: u64,
}

impl Limits {
    /// A `zip` package: 50 MiB zipped, 250 MiB unpacked, 20,000 files, 200:1 above 1 MiB.
    pub const fn zip() -> Limits {
        Limits { max_zip: 50 * MIB, max_unpacked: 250 * MIB, max_files: 20_000, max_ratio: 200, ratio_allowance: MIB }
    }

    /// A `files` package: as [`Limits::zip`] but at most 1,000 files.
    pub const fn files() -> Limits {
        Limits { max_files: 1_000, ..Limits::zip() }
    }
}

impl Default for Limits {
    /// The most restrictive: [`Limits::files`].
    fn default() -> Limits {
        Limits::files()
    }
}

/// Why a package was refused or could not be unpacked. Display names the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// One entry is refused (its name, type, a duplicate, its ratio, its content).
    #[error("archive entry {entry:?} {problem}")]
    Entry {
        /// The entry's name as stored (lossily decoded when it is not UTF-8).
        entry: String,
        /// What is wrong with it, as a phrase (`"escapes the package root (..)"`).
        problem: String,
    },
    /// The archive, or what it unpacks to, is past a size limit (413).
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What is too large (`"the zip archive"`, `"the unpacked package (at entry \"x\")"`).
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// More files than the limit (413).
    #[error("the package has more than {limit} files")]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a zip archive (or its central directory is corrupt).
    #[error("not a zip archive: {0}")]
    NotAZip(String),
    /// The text that should carry the zip is not base64 (for callers that decode it).
    #[error("zip is not valid base64: {0}")]
    Base64(String),
    /// Writing the unpacked files failed (the host's problem, not the package's).
    #[error("writing the unpacked package: {0}")]
    Io(#[from] io::Error),
}

impl PackageError {
    /// True for the errors that are the package being too large (HTTP 413); every other one
    /// but [`PackageError::Io`] is a bad package (400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, PackageError::TooLarge { .. } | PackageError::TooManyFiles { .. })
    }

    fn entry(entry: &str, problem: impl Into<String>) -> PackageError {
        PackageError::Entry { entry: entry.to_string(), problem: problem.into() }
    }
}

/// What a package holds: its files (path, size) in archive order and their total size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every regular file: its relative path and unpacked size.
    pub files: Vec<(String, u64)>,
    /// The sum of the files' sizes.
    pub unpacked_size: u64,
    /// The content of the dependency files at the root ([`CAPTURED`]), when present and at
    /// most 1 MiB: what decides whether the package needs a build.
    pub root_files: std::collections::BTreeMap<String, Vec<u8>>,
    /// The regular files the archive marks executable (a custom runtime's `bootstrap`).
    pub executables: std::collections::BTreeSet<String>,
}

/// Root files whose content [`Manifest::root_files`] keeps.
pub const CAPTURED: &[&str] = &["requirements.txt", "package.json", "package-lock.json"];

impl Manifest {
    /// True when the package has a file at `path` (relative, `/`-separated).
    pub fn has(&self, path: &str) -> bool {
        self.files.iter().any(|(p, _)| p == path)
    }

    /// True when the package has an executable file at `path`.
    pub fn is_executable(&self, path: &str) -> bool {
        self.executables.contains(path)
    }

    /// True when some file is under the directory `dir` (relative, no trailing `/`).
    pub fn has_dir(&self, dir: &str) -> bool {
        self.files.iter().any(|(p, _)| p.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')))
    }
}

/// Unpacks `zip` into `dest`, which must not exist (its parent must); on any error `dest` and
/// everything written into it are removed. Files are 0644 (0755 when the archive marks them
/// executable), directories 0755.
pub fn unpack_zip(zip: &[u8], dest: &Path, limits: &Limits) -> Result<Manifest, PackageError> {
    fs::DirBuilder::new().mode(0o755).create(dest)?;
    let result = walk(zip, Some(dest), limits);
    if result.is_err() {
        if let Err(e) = fs::remove_dir_all(dest) {
            tracing_free_warn(dest, &e);
        }
    }
    result
}

/// Runs every check of [`unpack_zip`], decompressing everything, writing nothing.
pub fn inspect_zip(zip: &[u8], limits: &Limits) -> Result<Manifest, PackageError> {
    walk(zip, None, limits)
}

/// The crate has no logger: a failed cleanup goes to stderr (it is rare and worth seeing).
fn tracing_free_warn(dest: &Path, e: &io::Error) {
    eprintln!("voltrun-package: could not remove {} after a refused archive: {e}", dest.display());
}

/// What an entry is, from its name and unix mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File { executable: bool },
    Dir,
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

fn kind_of(name_is_dir: bool, mode: Option<u32>) -> Result<Kind, &'static str> {
    let mode = mode.unwrap_or(0);
    match mode & S_IFMT {
        0 | S_IFREG if name_is_dir => Ok(Kind::Dir),
        0 | S_IFREG => Ok(Kind::File { executable: mode & 0o111 != 0 }),
        S_IFDIR => Ok(Kind::Dir),
        S_IFLNK => Err("is a symbolic link (links are not allowed)"),
        S_IFCHR | S_IFBLK => Err("is a device file"),
        S_IFIFO => Err("is a FIFO"),
        S_IFSOCK => Err("is a socket"),
        _ => Err("has an unknown file type"),
    }
}

/// The checked, normalised path of an entry name (no trailing `/`) and whether the name marks
/// a directory; else what is wrong with it.
pub(crate) fn check_name(raw: &[u8]) -> Result<(String, bool), &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "has a name that is not UTF-8")?;
    if name.contains('\0') {
        return Err("has a NUL byte in its name");
    }
    if name.contains('\\') {
        return Err("has a backslash in its name (paths are separated by /)");
    }
    if name.starts_with('/') {
        return Err("is an absolute path");
    }
    let is_dir = name.ends_with('/');
    let path = name.strip_suffix('/').unwrap_or(name);
    if path.is_empty() {
        return Err("has an empty name");
    }
    if path.len() > 1024 {
        return Err("has a path longer than 1024 bytes");
    }
    let first = path.split('/').next().unwrap_or_default();
    if first.len() == 2 && first.ends_with(':') && first.as_bytes()[0].is_ascii_alphabetic() {
        return Err("is an absolute path (a drive letter)");
    }
    for c in path.split('/') {
        match c {
            "" => return Err("has an empty path component (//)"),
            "." => return Err("has a . path component"),
            ".." => return Err("escapes the package root (..)"),
            c if c.len() > 255 => return Err("has a path component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok((path.to_string(), is_dir))
}

/// The paths seen so far, to refuse duplicates and file/directory clashes.
#[derive(Default)]
pub(crate) struct Seen {
    files: HashSet<String>,
    /// Directories, explicit or implied by a file under them; true when explicit.
    dirs: HashMap<String, bool>,
}

impl Seen {
    /// Records `path`, or says why it clashes with one recorded before.
    pub(crate) fn add(&mut self, path: &str, dir: bool) -> Result<(), String> {
        if self.files.contains(path) || (dir && self.dirs.get(path) == Some(&true)) {
            return Err("is a duplicate (the same path twice)".into());
        }
        if !dir && self.dirs.contains_key(path) {
            return Err("is both a file and a directory".into());
        }
        let mut ancestor = path;
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if self.files.contains(parent) {
                return Err(format!("is inside {parent:?}, which is a file"));
            }
            ancestor = parent;
        }
        let mut ancestor = path;
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            self.dirs.entry(parent.to_string()).or_insert(false);
            ancestor = parent;
        }
        if dir {
            self.dirs.insert(path.to_string(), true);
        } else {
            self.files.insert(path.to_string());
        }
        Ok(())
    }
}

fn walk(zip: &[u8], dest: Option<&Path>, limits: &Limits) -> Result<Manifest, PackageError> {
    if zip.len() as u64 > limits.max_zip {
        return Err(PackageError::TooLarge { what: "the zip archive".into(), limit: limits.max_zip });
    }
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(|e| PackageError::NotAZip(e.to_string()))?;
    // Directories are entries too; a package has fewer of them than files. Fail fast on an
    // archive that cannot fit, before reading any of it.
    if archive.len() > limits.max_files.saturating_mul(2) {
        return Err(PackageError::TooManyFiles { limit: limits.max_files });
    }

    // The zip crate keeps one entry per name: duplicates would vanish unseen. Read the names
    // from the central directory ourselves and refuse any repeated one first.
    let raw_names = central_names(zip).map_err(PackageError::NotAZip)?;
    let mut once = HashSet::new();
    for raw in &raw_names {
        if !once.insert(raw.as_slice()) {
            return Err(PackageError::entry(&String::from_utf8_lossy(raw), "is a duplicate (the same path twice)"));
        }
    }
    if raw_names.len() != archive.len() {
        return Err(PackageError::NotAZip(format!("the central directory lists {} entries, the archive {}", raw_names.len(), archive.len())));
    }

    // Pass 1: names, types, clashes, counts, declared sizes (a fast refusal only: the real
    // limits are counted while reading, below).
    let mut seen = Seen::default();
    let mut entries = Vec::with_capacity(archive.len());
    let mut n_files = 0usize;
    let mut declared = 0u64;
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).map_err(|e| PackageError::NotAZip(format!("entry {i}: {e}")))?;
        let shown = String::from_utf8_lossy(f.name_raw()).into_owned();
        let (path, name_is_dir) = check_name(f.name_raw()).map_err(|p| PackageError::entry(&shown, p))?;
        let kind = kind_of(name_is_dir || f.is_dir(), f.unix_mode()).map_err(|p| PackageError::entry(&shown, p))?;
        if f.encrypted() {
            return Err(PackageError::entry(&shown, "is encrypted"));
        }
        seen.add(&path, kind == Kind::Dir).map_err(|p| PackageError::entry(&shown, p))?;
        if kind != Kind::Dir {
            n_files += 1;
            if n_files > limits.max_files {
                return Err(PackageError::TooManyFiles { limit: limits.max_files });
            }
            declared = declared.saturating_add(f.size());
            if declared > limits.max_unpacked {
                return Err(PackageError::TooLarge { what: format!("the unpacked package (at entry {shown:?})"), limit: limits.max_unpacked });
            }
        }
        // The compressed bytes an entry can really have: no more than the archive holds.
        entries.push((path, shown, kind, f.compressed_size().min(zip.len() as u64)));
    }

    // Pass 2: decompress, counting.
    let mut manifest = Manifest::default();
    let mut buf = vec![0u8; 64 << 10];
    // Directories made so far (each parent is made once, not stat'ed per file).
    let mut made: HashSet<std::path::PathBuf> = HashSet::new();
    for (i, (path, shown, kind, compressed)) in entries.into_iter().enumerate() {
        let target = dest.map(|d| d.join(&path));
        let executable = match kind {
            Kind::File { executable } => executable,
            Kind::Dir => {
                if let Some(t) = &target {
                    fs::DirBuilder::new().mode(0o755).recursive(true).create(t)?;
                    made.insert(t.clone());
                }
                // A directory entry with content is not a directory.
                let mut f = archive.by_index(i).map_err(|e| PackageError::entry(&shown, format!("cannot be read: {e}")))?;
                if f.read(&mut buf[..1]).map_err(|e| PackageError::entry(&shown, format!("is corrupt: {e}")))? != 0 {
                    return Err(PackageError::entry(&shown, "is a directory with content"));
                }
                continue;
            }
        };
        let mut out: Box<dyn Write> = match &target {
            Some(t) => {
                if let Some(parent) = t.parent() {
                    if made.insert(parent.to_path_buf()) {
                        fs::DirBuilder::new().mode(0o755).recursive(true).create(parent)?;
                    }
                }
                // create_new: O_EXCL, so nothing existing (nor a link) is written through.
                // Unbuffered: the reads below are 64 KiB already.
                Box::new(fs::OpenOptions::new().write(true).create_new(true).mode(if executable { 0o755 } else { 0o644 }).open(t)?)
            }
            None => Box::new(io::sink()),
        };
        let remaining = limits.max_unpacked - manifest.unpacked_size;
        let by_ratio = compressed.saturating_mul(limits.max_ratio).max(limits.ratio_allowance);
        let cap = remaining.min(by_ratio);
        let mut f = archive.by_index(i).map_err(|e| PackageError::entry(&shown, format!("cannot be read: {e}")))?;
        let mut n = 0u64;
        let mut captured = CAPTURED.contains(&path.as_str()).then(Vec::new);
        loop {
            let got = f.read(&mut buf).map_err(|e| PackageError::entry(&shown, format!("is corrupt: {e}")))?;
            if got == 0 {
                break;
            }
            n += got as u64;
            if n > cap {
                return Err(if cap == by_ratio && by_ratio < remaining {
                    PackageError::entry(&shown, format!("unpacks to more than {} times its compressed size (a zip bomb?)", limits.max_ratio))
                } else {
                    PackageError::TooLarge { what: format!("the unpacked package (at entry {shown:?})"), limit: limits.max_unpacked }
                });
            }
            out.write_all(&buf[..got])?;
            if let Some(c) = &mut captured {
                if c.len() as u64 + got as u64 <= MIB {
                    c.extend_from_slice(&buf[..got]);
                } else {
                    captured = None;
                }
            }
        }
        if let Some(c) = captured {
            manifest.root_files.insert(path.clone(), c);
        }
        out.flush()?;
        manifest.unpacked_size += n;
        if executable {
            manifest.executables.insert(path.clone());
        }
        manifest.files.push((path, n));
    }
    Ok(manifest)
}

fn u16_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?) as u64)
}
fn u32_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as u64)
}
fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// The raw names of every central directory record, in order (zip64 aware; the archive must
/// start at offset 0, as every zip tool writes them).
fn central_names(zip: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const EOCD64_LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    const EOCD64: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    const CENTRAL: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
    let bad = || "the central directory is unreadable".to_string();
    let from = zip.len().saturating_sub(22 + 65535);
    let eocd = (from..zip.len().saturating_sub(21)).rev().find(|&i| zip[i..i + 4] == EOCD).ok_or_else(bad)?;
    let (mut count, mut offset) = (u16_at(zip, eocd + 10).ok_or_else(bad)?, u32_at(zip, eocd + 16).ok_or_else(bad)?);
    if count == 0xffff || offset == 0xffff_ffff {
        let loc = eocd.checked_sub(20).filter(|&l| zip[l..l + 4] == EOCD64_LOCATOR).ok_or_else(bad)?;
        let at = usize::try_from(u64_at(zip, loc + 8).ok_or_else(bad)?).map_err(|_| bad())?;
        if zip.get(at..at + 4) != Some(&EOCD64[..]) {
            return Err(bad());
        }
        count = u64_at(zip, at + 32).ok_or_else(bad)?;
        offset = u64_at(zip, at + 48).ok_or_else(bad)?;
    }
    let mut at = usize::try_from(offset).map_err(|_| bad())?;
    // Each record is at least 46 bytes: a count past what fits is a lie.
    if count > (zip.len() / 46) as u64 {
        return Err(bad());
    }
    let mut names = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if zip.get(at..at + 4) != Some(&CENTRAL[..]) {
            return Err(bad());
        }
        let (n, m, k) = (u16_at(zip, at + 28).ok_or_else(bad)? as usize, u16_at(zip, at + 30).ok_or_else(bad)? as usize, u16_at(zip, at + 32).ok_or_else(bad)? as usize);
        names.push(zip.get(at + 46..at + 46 + n).ok_or_else(bad)?.to_vec());
        at += 46 + n + m + k;
    }
    Ok(names)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    /// A zip of `(name, unix mode, content)` entries, deflated.
    pub(crate) fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, mode, data) in entries {
            let o = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).unix_permissions(*mode);
            if mode & S_IFMT == S_IFDIR {
                w.add_directory(*name, o).unwrap();
            } else if mode & S_IFMT == S_IFLNK {
                w.add_symlink(*name, std::str::from_utf8(data).unwrap(), o).unwrap();
            } else {
                w.start_file(*name, o).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    /// Rewrites a stored name of the same length (to make names zip's writer refuses).
    pub(crate) fn patch_name(mut zip: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let mut i = 0;
        while i + from.len() <= zip.len() {
            if &zip[i..i + from.len()] == from {
                zip[i..i + from.len()].copy_from_slice(to);
            }
            i += 1;
        }
        zip
    }

    /// Sets the unix file type of every entry in the central directory (`external attributes`).
    fn patch_modes(mut zip: Vec<u8>, mode: u32) -> Vec<u8> {
        let sig = [0x50, 0x4b, 0x01, 0x02];
        let mut i = 0;
        while i + 46 <= zip.len() {
            if zip[i..i + 4] == sig {
                zip[i + 5] = 3; // made by: unix
                zip[i + 38..i + 42].copy_from_slice(&(mode << 16).to_le_bytes());
            }
            i += 1;
        }
        zip
    }

    fn refused(zip: &[u8], limits: &Limits) -> String {
        let dir = scratch();
        let dest = dir.join("out");
        let err = unpack_zip(zip, &dest, limits).unwrap_err();
        assert!(!dest.exists(), "a refused archive leaves nothing behind");
        assert!(inspect_zip(zip, limits).is_err());
        let _ = fs::remove_dir_all(&dir);
        err.to_string()
    }

    pub(crate) fn scratch() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!("voltrun-package-test-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_good_archive_unpacks_with_modes_and_a_manifest() {
        let zip = zip_of(&[("pkg/", S_IFDIR | 0o755, b""), ("pkg/__init__.py", 0o644, b""), ("main.py", 0o644, b"x = 1\n"), ("bin/run", 0o755, b"#!/bin/sh\n")]);
        let dir = scratch();
        let m = unpack_zip(&zip, &dir.join("t"), &Limits::zip()).unwrap();
        assert_eq!(m.files.len(), 3);
        assert_eq!(m.unpacked_size, 16);
        assert!(m.has("main.py") && m.has_dir("pkg") && !m.has_dir("pk"));
        assert_eq!(fs::read(dir.join("t/main.py")).unwrap(), b"x = 1\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(dir.join("t/bin/run")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::metadata(dir.join("t/main.py")).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(inspect_zip(&zip, &Limits::zip()).unwrap(), m);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dot_dot_is_refused_naming_the_entry() {
        let zip = patch_name(zip_of(&[("ok.py", 0o644, b""), ("aa/evil.py", 0o644, b"x")]), b"aa/evil.py", b"../evil.py");
        let e = refused(&zip, &Limits::zip());
        assert!(e.contains("\"../evil.py\"") && e.contains("escapes"), "{e}");
    }

    #[test]
    fn absolute_paths_backslashes_and_dots_are_refused() {
        for (bad, word) in [(&b"/etc/passwd"[..], "absolute"), (b"C:/x/passwd", "drive"), (b"a\\..\\passw", "backslash"), (b"a/./passwd", ". path"), (b"a//passwdd", "empty path")]
        {
            let zip = patch_name(zip_of(&[("xxxxxxxxxxx"[..bad.len()].as_ref(), 0o644, b"x")]), &b"xxxxxxxxxxx"[..bad.len()], bad);
            let e = refused(&zip, &Limits::zip());
            assert!(e.contains(word), "{bad:?}: {e}");
        }
    }

    #[test]
    fn symlinks_are_refused() {
        let e = refused(&zip_of(&[("link", S_IFLNK | 0o777, b"/etc/shadow")]), &Limits::zip());
        assert!(e.contains("\"link\"") && e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn devices_fifos_and_sockets_are_refused() {
        for (mode, word) in [(S_IFCHR | 0o666, "device"), (S_IFBLK | 0o666, "device"), (S_IFIFO | 0o644, "FIFO"), (S_IFSOCK | 0o644, "socket")] {
            let e = refused(&patch_modes(zip_of(&[("dev", 0o644, b"")]), mode), &Limits::zip());
            assert!(e.contains("\"dev\"") && e.contains(word), "{e}");
        }
    }

    #[test]
    fn duplicates_and_file_directory_clashes_are_refused_but_case_differences_are_not() {
        let dup = patch_name(zip_of(&[("a.py", 0o644, b"1"), ("b.py", 0o644, b"2")]), b"b.py", b"a.py");
        let e = refused(&dup, &Limits::zip());
        assert!(e.contains("\"a.py\"") && e.contains("duplicate"), "{e}");
        let clash = zip_of(&[("a", 0o644, b"1"), ("a/b", 0o644, b"2")]);
        assert!(refused(&clash, &Limits::zip()).contains("which is a file"));
        let clash = zip_of(&[("a/b", 0o644, b"1"), ("a", 0o644, b"2")]);
        assert!(refused(&clash, &Limits::zip()).contains("both a file and a directory"));
        assert!(inspect_zip(&zip_of(&[("A.py", 0o644, b"1"), ("a.py", 0o644, b"2")]), &Limits::zip()).is_ok());
    }

    #[test]
    fn names_that_are_not_utf8_are_refused() {
        let zip = patch_name(zip_of(&[("n-x.py", 0o644, b"")]), b"n-x.py", b"n-\xff.py");
        let e = refused(&zip, &Limits::zip());
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn encrypted_entries_are_refused() {
        let mut zip = zip_of(&[("s.py", 0o644, b"secret")]);
        // General purpose flag bit 0 (encrypted), in the local header and the central directory.
        let (local, central) = (zip.windows(4).position(|w| w == [0x50, 0x4b, 3, 4]).unwrap(), zip.windows(4).position(|w| w == [0x50, 0x4b, 1, 2]).unwrap());
        zip[local + 6] |= 1;
        zip[central + 8] |= 1;
        assert!(refused(&zip, &Limits::zip()).contains("encrypted"));
    }

    #[test]
    fn too_many_files_is_too_large() {
        let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, u32, &[u8])> = names.iter().map(|n| (n.as_str(), 0o644, &b""[..])).collect();
        let limits = Limits { max_files: 4, ..Limits::zip() };
        let err = inspect_zip(&zip_of(&entries), &limits).unwrap_err();
        assert!(err.is_too_large() && err.to_string().contains("more than 4 files"), "{err}");
        assert!(inspect_zip(&zip_of(&entries[..4]), &limits).is_ok());
    }

    #[test]
    fn an_archive_past_the_zip_limit_is_too_large() {
        let zip = zip_of(&[("a", 0o644, b"hello")]);
        let err = inspect_zip(&zip, &Limits { max_zip: zip.len() as u64 - 1, ..Limits::zip() }).unwrap_err();
        assert!(err.is_too_large() && err.to_string().contains("zip archive"), "{err}");
    }

    #[test]
    fn a_zip_bomb_is_refused_by_its_ratio_while_reading() {
        let zeros = vec![0u8; 8 << 20];
        let e = refused(&zip_of(&[("bomb.bin", 0o644, &zeros)]), &Limits::zip());
        assert!(e.contains("\"bomb.bin\"") && e.contains("times its compressed size"), "{e}");
        // A small file that compresses well is fine.
        assert!(inspect_zip(&zip_of(&[("spaces.txt", 0o644, &[b' '; 100 << 10])]), &Limits::zip()).is_ok());
    }

    #[test]
    fn the_unpacked_limit_is_counted_on_the_stream_not_the_header() {
        let data = vec![7u8; 4096];
        let mut zip = zip_of(&[("big.bin", 0o644, &data)]);
        // Lie in both headers: uncompressed size 10 (offset 22 local, 24 central).
        let (local, central) = (zip.windows(4).position(|w| w == [0x50, 0x4b, 3, 4]).unwrap(), zip.windows(4).position(|w| w == [0x50, 0x4b, 1, 2]).unwrap());
        zip[local + 22..local + 26].copy_from_slice(&10u32.to_le_bytes());
        zip[central + 24..central + 28].copy_from_slice(&10u32.to_le_bytes());
        let limits = Limits { max_unpacked: 1000, ..Limits::zip() };
        let e = refused(&zip, &limits);
        assert!(e.contains("unpacked package") && e.contains("big.bin"), "{e}");
    }

    #[test]
    fn bytes_that_are_not_a_zip_are_refused() {
        assert!(matches!(inspect_zip(b"hello, not a zip", &Limits::zip()), Err(PackageError::NotAZip(_))));
        assert!(matches!(inspect_zip(b"", &Limits::zip()), Err(PackageError::NotAZip(_))));
    }

    #[test]
    fn an_existing_destination_is_not_written_into_nor_removed() {
        let dir = scratch();
        fs::write(dir.join("keep"), b"x").unwrap();
        assert!(matches!(unpack_zip(&zip_of(&[("a", 0o644, b"1")]), &dir, &Limits::zip()), Err(PackageError::Io(_))));
        assert!(dir.join("keep").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
