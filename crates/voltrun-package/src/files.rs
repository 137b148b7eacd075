//! A `files` package (`{"relative/path": "text", …}`) made into its canonical zip: entries in
//! path order, all dated 1980-01-01, mode 0644 (0755 for a root `bootstrap`, the one file a
//! custom runtime executes, which text cannot mark executable), deflated (stored when deflating would pass
//! the ratio limit, so the canonical zip always unpacks under [`crate::unpack_zip`]'s checks).
//! The same map always gives the same bytes, so the same SHA-256.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::archive::{check_name, Limits, PackageError, Seen};

/// The canonical zip of a file map, after the same checks an archive gets (names, clashes,
/// file count, sizes).
pub fn zip_from_files(files: &BTreeMap<String, String>, limits: &Limits) -> Result<Vec<u8>, PackageError> {
    if files.len() > limits.max_files {
        return Err(PackageError::TooManyFiles { limit: limits.max_files });
    }
    let mut seen = Seen::default();
    let mut total = 0u64;
    for (path, text) in files {
        let entry = |p: String| PackageError::Entry { entry: path.clone(), problem: p };
        let (normal, is_dir) = check_name(path.as_bytes()).map_err(|p| entry(p.to_string()))?;
        if is_dir || normal != *path {
            return Err(entry("is not a file path (no trailing /)".into()));
        }
        seen.add(path, false).map_err(entry)?;
        total += text.len() as u64;
        if total > limits.max_unpacked {
            return Err(PackageError::TooLarge { what: format!("the unpacked package (at file {path:?})"), limit: limits.max_unpacked });
        }
    }
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let base = SimpleFileOptions::default().last_modified_time(DateTime::default()).unix_permissions(0o644);
    for (path, text) in files {
        let method = if compresses_past(text.as_bytes(), limits) { CompressionMethod::Stored } else { CompressionMethod::Deflated };
        let mode = if path == crate::handler::BOOTSTRAP_FILE { 0o755 } else { 0o644 };
        w.start_file(path.as_str(), base.compression_method(method).unix_permissions(mode)).map_err(|e| PackageError::Io(std::io::Error::other(e)))?;
        w.write_all(text.as_bytes())?;
    }
    let zip = w.finish().map_err(|e| PackageError::Io(std::io::Error::other(e)))?.into_inner();
    if zip.len() as u64 > limits.max_zip {
        return Err(PackageError::TooLarge { what: "the package's zip archive".into(), limit: limits.max_zip });
    }
    Ok(zip)
}

/// True when deflating `data` would give an entry past the ratio limit.
fn compresses_past(data: &[u8], limits: &Limits) -> bool {
    if (data.len() as u64) <= limits.ratio_allowance {
        return false;
    }
    let mut enc = flate2::write::DeflateEncoder::new(Counter(0), flate2::Compression::default());
    // Writing into a counter cannot fail.
    let _ = enc.write_all(data);
    let compressed = enc.finish().map(|c| c.0).unwrap_or(0);
    compressed.saturating_mul(limits.max_ratio) < data.len() as u64
}

/// A writer that only counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{inspect_zip, sha256_hex};

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_same_files_give_the_same_zip_which_unpacks_to_them() {
        let files = map(&[("main.py", "import pkg.mod\n"), ("pkg/__init__.py", ""), ("pkg/mod.py", "X = 1\n"), ("data/words.txt", "hello\n")]);
        let a = zip_from_files(&files, &Limits::files()).unwrap();
        let b = zip_from_files(&files.clone(), &Limits::files()).unwrap();
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
        let m = inspect_zip(&a, &Limits::files()).unwrap();
        assert_eq!(m.files.len(), 4);
        assert_eq!(m.unpacked_size, files.values().map(|v| v.len() as u64).sum::<u64>());
    }

    #[test]
    fn bad_paths_are_refused_naming_the_file() {
        for (bad, word) in [("../x.py", "escapes"), ("/abs.py", "absolute"), ("dir/", "not a file path"), ("a//b.py", "empty path"), ("a\\b.py", "backslash"), ("", "empty name")] {
            let err = zip_from_files(&map(&[(bad, "x")]), &Limits::files()).unwrap_err().to_string();
            assert!(err.contains(word) && err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let err = zip_from_files(&map(&[("a", "1"), ("a/b", "2")]), &Limits::files()).unwrap_err().to_string();
        assert!(err.contains("which is a file"), "{err}");
    }

    #[test]
    fn more_than_the_file_limit_is_too_large() {
        let files: BTreeMap<String, String> = (0..1001).map(|i| (format!("f{i}.py"), String::new())).collect();
        let err = zip_from_files(&files, &Limits::files()).unwrap_err();
        assert!(err.is_too_large(), "{err}");
        let files: BTreeMap<String, String> = (0..1000).map(|i| (format!("f{i}.py"), String::new())).collect();
        assert!(zip_from_files(&files, &Limits::files()).is_ok());
    }

    #[test]
    fn more_than_the_unpacked_limit_is_too_large() {
        let limits = Limits { max_unpacked: 10, ..Limits::files() };
        let err = zip_from_files(&map(&[("a", "123456"), ("b", "123456")]), &limits).unwrap_err();
        assert!(err.is_too_large() && err.to_string().contains("\"b\""), "{err}");
    }

    #[test]
    fn a_file_that_compresses_too_well_is_stored_and_still_unpacks() {
        let files = map(&[("zeros.txt", &"0".repeat(4 << 20))]);
        let zip = zip_from_files(&files, &Limits::files()).unwrap();
        assert!(zip.len() > 4 << 20);
        assert_eq!(inspect_zip(&zip, &Limits::files()).unwrap().unpacked_size, 4 << 20);
    }
}
