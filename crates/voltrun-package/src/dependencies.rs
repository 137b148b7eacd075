//! Whether a package declares dependencies to build (the contract's "when is there a
//! build"): Python, a root `requirements.txt` with at least one requirement line; Node, a
//! root `package.json` whose `dependencies` object is not empty, unless the package vendors
//! a `node_modules/` (then it is used as is).
//!
//! A build sees only the dependency files (never the rest of the package) and installs only
//! from the server's package index: its tree is shared by every function whose dependency
//! files have the same bytes, so nothing else of the package may change what it installs.
//! Dependency files that reference anything else — other files (`-r`, `-e .`, `./lib`,
//! `file:`), other indexes or hosts (`--index-url`, `--find-links`, URLs, VCS), npm
//! workspaces, links, lifecycle scripts of the package itself, a package `.npmrc` or
//! `npm-shrinkwrap.json` — are refused, the error naming the line. (A package can still vendor
//! its dependencies: Python modules next to the handler, or a `node_modules/`.)

use crate::handler::Language;
use crate::Manifest;

/// The dependency file of a package for `language` that needs a build, if any
/// (`"requirements.txt"` or `"package.json"`), or why the dependency files are refused.
pub fn dependencies_file(manifest: &Manifest, language: Language) -> Result<Option<&'static str>, String> {
    match language {
        Language::Python => {
            let Some(text) = manifest.root_files.get("requirements.txt") else { return Ok(None) };
            Ok(check_requirements(&String::from_utf8_lossy(text))?.then_some("requirements.txt"))
        }
        Language::Node => {
            if manifest.has_dir("node_modules") {
                return Ok(None);
            }
            let Some(pkg) = manifest.root_files.get("package.json") else { return Ok(None) };
            let builds = check_package_json(pkg, manifest.root_files.get("package-lock.json").map(Vec::as_slice))?;
            if builds {
                for f in [".npmrc", "npm-shrinkwrap.json"] {
                    if manifest.has(f) {
                        return Err(refused_file(f));
                    }
                }
            }
            Ok(builds.then_some("package.json"))
        }
        // A custom runtime's package carries everything it needs: nothing is installed.
        Language::Provided => Ok(None),
    }
}

/// Why a root `.npmrc` / `npm-shrinkwrap.json` is refused.
pub fn refused_file(name: &str) -> String {
    format!("{name}: a dependency build does not use the package's own {name} (it installs from the server's registry with package.json and package-lock.json only): remove it, or vendor node_modules/")
}

/// Pip options a requirements file may carry on a line of their own: they change which
/// distributions of the index are chosen, never where they come from.
const PIP_GLOBAL_OPTIONS: &[&str] = &["--prefer-binary", "--only-binary", "--no-binary", "--pre", "--require-hashes"];

/// Checks a `requirements.txt`: true when it names something to install; an error naming
/// the first line that references anything but the index (an option other than
/// [`PIP_GLOBAL_OPTIONS`], a path, a URL, a VCS link, an environment variable, a per-requirement
/// option other than `--hash`).
pub fn check_requirements(text: &str) -> Result<bool, String> {
    let mut any = false;
    let mut logical = String::new();
    let mut first = 0;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            first = i + 1;
        }
        // pip joins lines ending in a backslash before anything else.
        if let Some(cont) = raw.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        any |= check_requirement_line(first, &line)?;
    }
    if !logical.is_empty() {
        any |= check_requirement_line(first, &logical)?;
    }
    Ok(any)
}

/// One logical line of a requirements file (pip's comment rule: `#` at the start or after
/// whitespace): true when it is a requirement.
fn check_requirement_line(n: usize, line: &str) -> Result<bool, String> {
    let mut text = line;
    if let Some(p) = line.char_indices().find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with(char::is_whitespace))).map(|(i, _)| i) {
        text = &line[..p];
    }
    let text = text.trim();
    if text.is_empty() {
        return Ok(false);
    }
    let refuse = |why: &str| {
        Err(format!(
            "requirements.txt line {n} ({text:?}): {why}; a dependency build installs only named packages from the server's package index (vendor anything else into the package)"
        ))
    };
    if text.contains("${") {
        return refuse("environment variables are not expanded");
    }
    if text.starts_with('-') {
        let opt = text.split(|c: char| c == '=' || c.is_whitespace()).next().unwrap_or(text);
        if PIP_GLOBAL_OPTIONS.contains(&opt) {
            return Ok(false);
        }
        return refuse(&format!("the pip option {opt} is not allowed"));
    }
    let mut words = text.split_whitespace();
    let spec = words.next().unwrap_or_default();
    for w in words {
        if w.starts_with('-') && !w.starts_with("--hash") {
            return refuse(&format!("the per-requirement option {} is not allowed", w.split('=').next().unwrap_or(w)));
        }
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("://") || lower.contains("file:") || lower.contains("git+") || lower.contains(" @ ") || spec.contains('@') {
        return refuse("URLs and VCS references go outside the index");
    }
    if spec.starts_with(['.', '/', '~']) || spec.contains(['/', '\\']) {
        return refuse("paths are not allowed");
    }
    let spec_lower = spec.to_ascii_lowercase();
    if [".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"].iter().any(|ext| spec_lower.ends_with(ext)) {
        return refuse("archive files are not allowed");
    }
    Ok(true)
}

/// npm lifecycle scripts of the root package that `npm ci` / `npm install` run.
const NPM_ROOT_SCRIPTS: &[&str] = &["preinstall", "install", "postinstall", "prepublish", "preprepare", "prepare", "postprepare", "dependencies"];

/// Checks a `package.json` (and its `package-lock.json`): true when it declares dependencies
/// to build; an error naming the first line that references anything but the registry
/// (`file:`, `link:`, `workspace:`, git, GitHub shorthands, URLs, paths, `workspaces`, root
/// lifecycle scripts, lock entries that are links or resolve outside http(s)).
pub fn check_package_json(pkg: &[u8], lock: Option<&[u8]>) -> Result<bool, String> {
    let text = String::from_utf8_lossy(pkg);
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return Ok(false) };
    let builds = json.get("dependencies").and_then(|d| d.as_object()).is_some_and(|d| !d.is_empty());
    if !builds {
        return Ok(false);
    }
    let refuse = |file: &str, text: &str, needle: &str, why: String| -> String {
        format!("{file} line {}: {why}; a dependency build installs only packages of the server's registry (vendor node_modules/ for anything else)", line_of(text, needle))
    };
    if json.get("workspaces").is_some() {
        return Err(refuse("package.json", &text, "\"workspaces\"", "workspaces are not allowed".into()));
    }
    if let Some(scripts) = json.get("scripts").and_then(|s| s.as_object()) {
        if let Some(s) = NPM_ROOT_SCRIPTS.iter().find(|s| scripts.contains_key(**s)) {
            return Err(refuse("package.json", &text, &format!("\"{s}\""), format!("the lifecycle script {s:?} would run in the build")));
        }
    }
    for field in ["dependencies", "optionalDependencies", "devDependencies", "peerDependencies", "overrides"] {
        let mut specs = Vec::new();
        if let Some(v) = json.get(field) {
            collect_specs(v, &mut specs);
        }
        for (name, spec) in specs {
            if let Some(why) = npm_spec_refused(&spec) {
                return Err(refuse("package.json", &text, &format!("\"{spec}\""), format!("{field} {name:?}: {spec:?}: {why}")));
            }
        }
    }
    if let Some(lock) = lock {
        let ltext = String::from_utf8_lossy(lock);
        if let Ok(l) = serde_json::from_str::<serde_json::Value>(&ltext) {
            let mut entries = Vec::new();
            for key in ["packages", "dependencies"] {
                if let Some(v) = l.get(key) {
                    collect_lock_entries(v, &mut entries);
                }
            }
            for e in entries {
                if e.get("link").and_then(|v| v.as_bool()) == Some(true) {
                    let at = e.get("resolved").and_then(|v| v.as_str()).map(|r| format!("\"{r}\"")).unwrap_or_else(|| "\"link\"".into());
                    return Err(refuse("package-lock.json", &ltext, &at, "an entry is a link to a local directory".into()));
                }
                for k in ["resolved", "version"] {
                    if let Some(v) = e.get(k).and_then(|v| v.as_str()) {
                        let bad = if k == "resolved" { !(v.starts_with("https://") || v.starts_with("http://")) } else { npm_spec_refused(v).is_some() && v.contains(':') };
                        if bad {
                            return Err(refuse("package-lock.json", &ltext, &format!("\"{v}\""), format!("{k} {v:?} is not the registry")));
                        }
                    }
                }
            }
        }
    }
    Ok(true)
}

/// `(name, spec)` of a dependencies object (overrides nest objects).
fn collect_specs(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    if let Some(o) = v.as_object() {
        for (k, v) in o {
            match v {
                serde_json::Value::String(s) => out.push((k.clone(), s.clone())),
                serde_json::Value::Object(_) => collect_specs(v, out),
                _ => {}
            }
        }
    }
}

/// Every object of a lock file's `packages` / `dependencies` (v1 nests `dependencies`).
fn collect_lock_entries<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    if let Some(o) = v.as_object() {
        for e in o.values() {
            if e.is_object() {
                out.push(e);
                if let Some(d) = e.get("dependencies") {
                    collect_lock_entries(d, out);
                }
            }
        }
    }
}

/// Why an npm dependency spec goes outside the registry, or `None` (a version range, a
/// tag, or an `npm:` alias of a registry package).
fn npm_spec_refused(spec: &str) -> Option<&'static str> {
    let s = spec.trim();
    let lower = s.to_ascii_lowercase();
    if let Some(alias) = lower.strip_prefix("npm:") {
        // `npm:name@range` / `npm:@scope/name@range`.
        let rest = alias.strip_prefix('@').map_or(alias, |r| r.split_once('/').map_or(r, |(_, n)| n));
        return (rest.contains(['/', ':']) || rest.starts_with('.')).then_some("an alias that is not a registry package");
    }
    for (p, why) in
        [("file:", "local files are not allowed"), ("link:", "links are not allowed"), ("workspace:", "workspaces are not allowed"), ("portal:", "links are not allowed")]
    {
        if lower.starts_with(p) {
            return Some(why);
        }
    }
    if lower.contains("://") || lower.starts_with("git") || ["github:", "gitlab:", "bitbucket:", "gist:"].iter().any(|p| lower.starts_with(p)) {
        return Some("URLs and git references go outside the registry");
    }
    if s.starts_with(['.', '/', '~']) || s.contains(['/', '\\']) {
        return Some("paths and GitHub shorthands are not allowed");
    }
    None
}

/// The 1-based line of the first `needle` in `text` (1 when absent).
fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(1, |i| text[..i].matches('\n').count() + 1)
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
        assert_eq!(dependencies_file(&manifest(&[("requirements.txt", "# none\n\n--prefer-binary\n")]), Language::Python), Ok(None));
        assert_eq!(dependencies_file(&manifest(&[("requirements.txt", "requests==2.32.3 # http\n")]), Language::Python), Ok(Some("requirements.txt")));
        assert_eq!(
            dependencies_file(
                &manifest(&[(
                    "requirements.txt",
                    "requests==2.32.3 \\\n    --hash=sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6\nnumpy[extra]>=2; python_version >= \"3.9\"\n"
                )]),
                Language::Python
            ),
            Ok(Some("requirements.txt"))
        );
        assert_eq!(dependencies_file(&manifest(&[("sub/requirements.txt", "requests\n")]), Language::Python), Ok(None));
    }

    #[test]
    fn a_requirement_pointing_into_the_package_is_refused() {
        for (text, line) in [
            ("six\n-r other.txt\n", 2),
            ("-c constraints.txt\nsix\n", 1),
            ("-e .\n", 1),
            ("./lib\n", 1),
            ("six\n\nlib/\n", 3),
            ("--find-links ./dist\nevil==0.1\n", 1),
            ("-f dist\nevil\n", 1),
            ("--index-url https://evil.example/simple\nsix\n", 1),
            ("--extra-index-url=https://evil.example/simple\n", 1),
            ("--trusted-host evil.example\n", 1),
            ("file:../x\n", 1),
            ("evil @ file:///build/src/evil\n", 1),
            ("evil-0.1-py3-none-any.whl\n", 1),
            ("six\nevil.tar.gz\n", 2),
            ("six --config-settings=x=y\n", 1),
            ("${HOME}/x\n", 1),
            ("six \\\n  -r other.txt\n", 1),
        ] {
            let e = check_requirements(text).expect_err(text);
            assert!(e.starts_with(&format!("requirements.txt line {line} ")), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_requirement_from_outside_the_index_is_refused() {
        for text in [
            "git+https://github.com/psf/requests\n",
            "https://evil.example/requests-2.32.3-py3-none-any.whl\n",
            "requests @ https://evil.example/r.whl\n",
            "requests@git+https://x/y\n",
        ] {
            let e = check_requirements(text).expect_err(text);
            assert!(e.contains("outside the index"), "{text:?}: {e}");
        }
    }

    #[test]
    fn node_needs_dependencies_and_no_vendored_modules() {
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"dependencies":{"zod":"^3","a":"npm:@s/b@1"}}"#)]), Language::Node), Ok(Some("package.json")));
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"dependencies":{}}"#)]), Language::Node), Ok(None));
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"name":"x"}"#)]), Language::Node), Ok(None));
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"dependencies":{"zod":"^3"}}"#), ("node_modules/zod/index.js", "")]), Language::Node), Ok(None));
        // A package that builds nothing may keep any scripts.
        assert_eq!(dependencies_file(&manifest(&[("package.json", r#"{"scripts":{"postinstall":"x"}}"#)]), Language::Node), Ok(None));
    }

    #[test]
    fn a_package_json_pointing_outside_the_registry_is_refused() {
        for (pkg, line) in [
            ("{\n\"dependencies\": {\n\"zod\": \"^3\",\n\"lib\": \"file:./lib\"\n}\n}", 4),
            ("{\"dependencies\": {\"l\": \"link:../x\"}}", 1),
            ("{\"dependencies\": {\"l\": \"../x\"}}", 1),
            ("{\"dependencies\": {\"l\": \"user/repo\"}}", 1),
            ("{\"dependencies\": {\"l\": \"git+https://x/y.git\"}}", 1),
            ("{\"dependencies\": {\"l\": \"https://evil.example/l.tgz\"}}", 1),
            ("{\"dependencies\": {\"l\": \"github:u/r\"}}", 1),
            ("{\"dependencies\": {\"l\": \"npm:../x\"}}", 1),
            ("{\"dependencies\": {\"zod\": \"^3\"},\n\"workspaces\": [\"a\"]}", 2),
            ("{\"dependencies\": {\"zod\": \"^3\"},\n\"scripts\": {\n\"postinstall\": \"node x.js\"}}", 3),
            ("{\"dependencies\": {\"zod\": \"^3\"},\n\"scripts\": {\"prepare\": \"x\"}}", 2),
            ("{\"dependencies\": {\"zod\": \"^3\"},\n\"overrides\": {\"zod\": \"file:z\"}}", 2),
        ] {
            let e = check_package_json(pkg.as_bytes(), None).expect_err(pkg);
            assert!(e.starts_with(&format!("package.json line {line}:")), "{pkg:?}: {e}");
        }
        let pkg = br#"{"dependencies":{"zod":"^3"}}"#;
        let lock = "{\"packages\": {\n\"\": {},\n\"node_modules/zod\": {\"resolved\": \"file:zod-3.tgz\"}}}";
        assert!(check_package_json(pkg, Some(lock.as_bytes())).unwrap_err().starts_with("package-lock.json line 3:"));
        let lock = "{\"packages\": {\"node_modules/zod\": {\"link\": true, \"resolved\": \"lib/zod\"}}}";
        assert!(check_package_json(pkg, Some(lock.as_bytes())).unwrap_err().contains("link"));
        let lock = r#"{"packages": {"node_modules/zod": {"version": "3.23.8", "resolved": "https://registry.npmjs.org/zod/-/zod-3.23.8.tgz"}}}"#;
        assert_eq!(check_package_json(pkg, Some(lock.as_bytes())), Ok(true));
        for f in [".npmrc", "npm-shrinkwrap.json"] {
            let e = dependencies_file(&manifest(&[("package.json", r#"{"dependencies":{"zod":"^3"}}"#), (f, "x")]), Language::Node).unwrap_err();
            assert!(e.starts_with(f), "{e}");
        }
    }
}
