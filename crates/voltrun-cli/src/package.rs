//! Turning a directory into the zip `functions deploy --dir` and `layers publish --dir`
//! upload: every regular file under it, minus what `.voltrunignore` files leave out
//! (gitignore syntax, read by the `ignore` crate: `#` comments, `!` negation, a trailing `/`
//! for directories, `**`, nested `.voltrunignore` files for their own subtree) and minus
//! `.git`, always. Entries are sorted and carry no timestamps, so the same tree makes the
//! same bytes (and the server's content hash does not change on a redeploy).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// The ignore file's name.
pub const IGNORE_FILE: &str = ".voltrunignore";
/// Largest zip the server takes (SPEC §10).
pub const MAX_ZIP: u64 = 50 << 20;
/// Most bytes unpacked (SPEC §10).
pub const MAX_UNPACKED: u64 = 250 << 20;

/// A directory zipped: the bytes, and what went in.
#[derive(Debug)]
pub struct Zipped {
    /// The zip.
    pub bytes: Vec<u8>,
    /// The files, relative, `/`-separated, sorted.
    pub files: Vec<String>,
    /// Their bytes unpacked.
    pub unpacked: u64,
}

/// The files to package under `root`: (relative `/` path, absolute path), sorted.
pub fn collect(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let meta = std::fs::metadata(root).map_err(|e| CliError::io(format!("reading {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(CliError::usage(format!("{} is not a directory", root.display())));
    }
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|e| e.file_name() != ".git")
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| CliError::usage(format!("reading {}: {e}", root.display())))?;
        if entry.depth() == 0 {
            continue;
        }
        let path = entry.path();
        let rel = path.strip_prefix(root).expect("the walk stays under its root");
        let name = rel_name(rel)?;
        let Some(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() {
            return Err(CliError::usage(format!("{name} is a symbolic link, which packages cannot hold: copy the file in, or list it in {IGNORE_FILE}")));
        }
        if !kind.is_file() {
            return Err(CliError::usage(format!("{name} is not a regular file (a socket, FIFO or device): list it in {IGNORE_FILE}")));
        }
        if name == IGNORE_FILE || name.ends_with(&format!("/{IGNORE_FILE}")) {
            continue;
        }
        out.push((name, path.to_path_buf()));
    }
    out.sort();
    Ok(out)
}

/// A relative path as a zip entry name: UTF-8, `/`-separated.
fn rel_name(rel: &Path) -> Result<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/")).ok_or_else(|| CliError::usage(format!("{} is not a UTF-8 name, which packages cannot hold", rel.display())))
}

/// Zips `root` (see the module's notes), refusing past the server's limits before uploading.
pub fn zip_dir(root: &Path) -> Result<Zipped> {
    let files = collect(root)?;
    if files.is_empty() {
        return Err(CliError::usage(format!("{} has no files to deploy (after {IGNORE_FILE})", root.display())));
    }
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut unpacked = 0u64;
    for (name, path) in &files {
        let data = std::fs::read(path).map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
        unpacked += data.len() as u64;
        if unpacked > MAX_UNPACKED {
            return Err(CliError::usage(format!("{} holds more than 250 MiB (the most a package may unpack to): list what is not needed in {IGNORE_FILE}", root.display())));
        }
        let mode = executable_mode(path);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(mode)
            .large_file(data.len() as u64 >= u32::MAX as u64);
        w.start_file(name.as_str(), opts).map_err(|e| CliError::usage(format!("zipping {name}: {e}")))?;
        w.write_all(&data).map_err(|e| CliError::io(format!("zipping {name}"), e))?;
    }
    let bytes = w.finish().map_err(|e| CliError::usage(format!("zipping {}: {e}", root.display())))?.into_inner();
    if bytes.len() as u64 > MAX_ZIP {
        return Err(CliError::usage(format!(
            "the zip of {} is {} MiB, over the 50 MiB a package may be: list what is not needed in {IGNORE_FILE}",
            root.display(),
            bytes.len() >> 20
        )));
    }
    Ok(Zipped { bytes, files: files.into_iter().map(|(n, _)| n).collect(), unpacked })
}

/// 0755 for a file anyone may execute, else 0644.
fn executable_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o111 != 0 => 0o755,
        _ => 0o644,
    }
}

/// Reads a zip file to upload as is (checked to be at most 50 MiB).
pub fn read_zip(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
    if meta.len() > MAX_ZIP {
        return Err(CliError::usage(format!("{} is {} MiB, over the 50 MiB a zip may be", path.display(), meta.len() >> 20)));
    }
    std::fs::read(path).map_err(|e| CliError::io(format!("reading {}", path.display()), e))
}

/// Base64 (standard, padded) of `bytes`, as the API takes a zip.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The runtime a package directory implies: Python for `requirements.txt` or `main.py`,
/// Node for `package.json` or `index.js`/`index.mjs`, else a custom runtime (`provided`) for
/// a root `bootstrap`; None when it says neither or both.
pub fn runtime_of_dir(root: &Path) -> Option<&'static str> {
    let has = |f: &str| root.join(f).is_file();
    let python = has("requirements.txt") || has("main.py");
    let node = has("package.json") || has("index.js") || has("index.mjs") || has("index.cjs");
    match (python, node) {
        (true, false) => Some("python3.11"),
        (false, true) => Some("nodejs20"),
        (false, false) if has("bootstrap") => Some("provided"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("voltrun-cli-pkg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (p, text) in files {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        collect(dir).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn voltrunignore_patterns_and_git_are_left_out() {
        let dir = tree(&[
            ("main.py", "x"),
            ("lib/util.py", "x"),
            ("lib/__pycache__/util.cpython-311.pyc", "x"),
            ("secrets.env", "x"),
            ("notes/a.md", "x"),
            ("notes/keep.md", "x"),
            ("build/out.bin", "x"),
            (".git/HEAD", "x"),
            (".git/objects/ab/cd", "x"),
            ("sub/.voltrunignore", "local.txt\n"),
            ("sub/local.txt", "x"),
            ("sub/other.txt", "x"),
            (".hidden.cfg", "x"),
            (IGNORE_FILE, "# comment\n*.env\n__pycache__/\nnotes/*\n!notes/keep.md\n/build\n"),
        ]);
        assert_eq!(names(&dir), [".hidden.cfg", "lib/util.py", "main.py", "notes/keep.md", "sub/other.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_same_tree_zips_to_the_same_bytes() {
        let dir = tree(&[("index.js", "exports.handler = async () => 1;\n"), ("data/x.json", "{}")]);
        let a = zip_dir(&dir).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(dir.join("index.js"), "exports.handler = async () => 1;\n").unwrap();
        let b = zip_dir(&dir).unwrap();
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.files, ["data/x.json", "index.js"]);
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(a.bytes)).unwrap();
        assert_eq!(z.len(), 2);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut z.by_name("index.js").unwrap(), &mut s).unwrap();
        assert!(s.contains("exports.handler"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_and_empty_dirs_are_refused_with_the_name() {
        let dir = tree(&[("main.py", "x")]);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("pw")).unwrap();
        let e = collect(&dir).unwrap_err().to_string();
        assert!(e.contains("pw is a symbolic link"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let dir = tree(&[(IGNORE_FILE, "*\n")]);
        assert!(zip_dir(&dir).unwrap_err().to_string().contains("no files"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runtimes_from_directories() {
        let py = tree(&[("requirements.txt", "requests\n"), ("app.py", "")]);
        assert_eq!(runtime_of_dir(&py), Some("python3.11"));
        let node = tree(&[("index.mjs", "")]);
        assert_eq!(runtime_of_dir(&node), Some("nodejs20"));
        let both = tree(&[("main.py", ""), ("package.json", "{}")]);
        assert_eq!(runtime_of_dir(&both), None);
        let custom = tree(&[("bootstrap", "#!/bin/sh\n"), ("function.sh", "")]);
        assert_eq!(runtime_of_dir(&custom), Some("provided"));
        for d in [py, node, both, custom] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
