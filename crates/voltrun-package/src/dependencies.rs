//! Whether a package declares dependencies to build (the contract's "when is there a
//! build"): Python, a root `requirements.txt` with at least one requirement line; Node, a
//! root `package.json` whose `dependencies` object is not empty, unless the package vendors
//! a `node_modules/` (then it is used as is).

use crate::handler::Language;
use crate::Manifest;

/// The dependency file of a package for `language` that needs a build, if any
/// (`"requirements.txt"` or `"package.json"`).
pub fn dependencies_file(manifest: &Manifest, language: Language) -> Option<&'static str> {
    match language {
        Language::Python => {
            let text = manifest.root_files.get("requirements.txt")?;
            has_requirement(&String::from_utf8_lossy(text)).then_some("requirements.txt")
        }
        Language::Node => {
            if manifest.has_dir("node_modules") {
                return None;
            }
            let json: serde_json::Value = serde_json::from_slice(manifest.root_files.get("package.json")?).ok()?;
            json.get("dependencies").and_then(|d| d.as_object()).is_some_and(|d| !d.is_empty()).then_some("package.json")
        }
    }
}

/// True when a requirements file names something to install: a line that is not blank, a
/// comment, or an option other than `-r`/`-e`/`-c` (which bring requirements of their own).
fn has_requirement(text: &str) -> bool {
    text.lines().map(|l| l.split(" #").next().unwrap_or_default().trim()).any(|l| {
        !l.is_empty() && !l.starts_with('#') && (!l.starts_with('-') || ["-r", "-e", "-c", "--requirement", "--editable", "--constraint"].iter().any(|o| l.starts_with(o)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[(&str, &str)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, text) in files {
            m.files.push((p.to_string(), text.len() as u64));
            if crate::archive::CAPTURED.contains(p) {
                m.root_files.insert(p.to_string(), text.as_bytes().to_vec());
            }
        }
        m
    }

    #[test]
    fn python_needs_a_requirement_line() {
        assert_eq!(dependencies_file(&manifest(&[("requirements.txt", "# none\n\n--index-url x\n")]), Language::Python), None);
        assert_eq!(dependencies_file(&manifest(&[("requirements.txt", "requests==2.32.3 # http\n")]), Language::Python), Some("requirements.txt"));
        assert_eq!(dependencies_file(&manifest(&[("sub/requirements.txt", "requests\n")]), Language::Python), None);
    }

    #[test]
    fn node_needs_dependencies_and_no_vendored_modules() {
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"dependencies":{"zod":"^3"}}"#)]), Language::Node), Some("package.json"));
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"dependencies":{}}"#)]), Language::Node), None);
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"name":"x"}"#)]), Language::Node), None);
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"dependencies":{"zod":"^3"}}"#), ("node_modules/zod/index.js", "")]), Language::Node), None);
    }
}
