//! The real `voltrun` binary deploying packages and publishing layers: `functions deploy
//! --dir` (a `.voltrunignore`'d file and `.git` absent from the package the server stores, an
//! update, a failed dependency build exiting 1 with its log printed) and `layers publish |
//! list | versions | get | delete` with `--layer` on a function. The `build_` tests need
//! dependency builds, which the process tier does not run (scripts/test skips them there, as
//! it skips `builds::`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::harness::*;

/// What a run of the client printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A user's shell: a home, and the server and API key in the environment.
struct Shell {
    home: PathBuf,
    server: String,
    key: String,
}

impl Shell {
    fn new(s: &Server, c: &Client) -> Shell {
        let (status, k) = c.post("/api/keys", &json!({"name": "cli-deploy"}));
        assert_eq!(status, 201, "{k}");
        Shell { home: temp_dir("cli-deploy"), server: s.base.clone(), key: k["key"].as_str().unwrap().to_string() }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
            .args(args)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("xdg"))
            .env("VOLTRUN_SERVER", &self.server)
            .env("VOLTRUN_API_KEY", &self.key)
            .stdin(Stdio::null())
            .output()
            .expect("run voltrun");
        Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "voltrun {}:\n{r}", args.join(" "));
        r
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let r = self.ok(&a);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{r}"))
    }

    /// Writes `files` under `dir` (relative to the home).
    fn tree(&self, dir: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = self.home.join(dir);
        for (p, text) in files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The entry names of the package the server stores for `name`.
fn package_entries(c: &Client, name: &str) -> Vec<String> {
    let r = c.raw("GET", &format!("/api/functions/{name}/package"), None, &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(r.body)).unwrap();
    let mut names: Vec<String> = (0..z.len()).map(|i| z.by_index(i).unwrap().name().to_string()).collect();
    names.sort();
    names
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const MAIN_V1: &str = "import os\nfrom lib.words import shout\n\ndef handler(event, context):\n    data = open('data/greeting.txt').read().strip()\n    return {'msg': shout(data), 'v': 1, 'cwd': os.getcwd()}\n";
const MAIN_V2: &str = "from lib.words import shout\n\ndef handler(event, context):\n    return {'msg': shout('second'), 'v': 2}\n";

#[test]
fn deploy_dir_leaves_out_ignored_files_and_updates() {
    let s = Server::start();
    let c = s.user();
    let sh = Shell::new(&s, &c);
    let src = sh.tree(
        "src",
        &[
            ("main.py", MAIN_V1),
            ("lib/__init__.py", ""),
            ("lib/words.py", "def shout(s):\n    return s.upper() + '!'\n"),
            ("data/greeting.txt", "hello from a package\n"),
            ("secrets.env", "TOKEN=do-not-upload\n"),
            ("lib/__pycache__/words.cpython-311.pyc", "stale"),
            ("notes/todo.md", "x"),
            (".git/HEAD", "ref: refs/heads/main\n"),
            (".git/config", "[core]\n"),
            (".voltrunignore", "# local only\n*.env\n__pycache__/\n/notes\n"),
        ],
    );
    let r = sh.ok(&["functions", "deploy", "pkg", "--dir", p(&src)]);
    assert!(r.stdout.contains("Created function pkg (python3.11, version 1)"), "{r}");
    assert_eq!(package_entries(&c, "pkg"), ["data/greeting.txt", "lib/__init__.py", "lib/words.py", "main.py"], "ignored files, .git and .voltrunignore stay home");
    let (_, f) = c.get("/api/functions/pkg");
    assert_eq!((f["handler"].as_str(), f["package"]["kind"].as_str()), (Some("main.handler"), Some("zip")), "{f}");
    let e = c.invoke("pkg", &json!({}));
    assert_eq!((&e["output"]["msg"], &e["output"]["v"]), (&json!("HELLO FROM A PACKAGE!"), &json!(1)), "{e}");
    // The package is the working directory: /var/task, or in the process tier (no mounts)
    // the instance's task directory on the host.
    let cwd = e["output"]["cwd"].as_str().unwrap();
    assert!(cwd == "/var/task" || (sandbox() == "process" && cwd.ends_with("/task")), "{e}");

    // An update: the new tree replaces the package, a new version serves.
    std::fs::write(src.join("main.py"), MAIN_V2).unwrap();
    std::fs::remove_file(src.join("data/greeting.txt")).unwrap();
    let r = sh.ok(&["functions", "deploy", "pkg", "--dir", p(&src), "--memory", "256"]);
    assert!(r.stdout.contains("Updated function pkg to version 2"), "{r}");
    assert_eq!(package_entries(&c, "pkg"), ["lib/__init__.py", "lib/words.py", "main.py"]);
    assert_eq!(c.invoke("pkg", &json!({}))["output"], json!({"msg": "SECOND!", "v": 2}));
    // The same tree again changes nothing (the zip is byte for byte the same).
    let r = sh.ok(&["functions", "deploy", "pkg", "--dir", p(&src), "--memory", "256"]);
    assert!(r.stdout.contains("unchanged (version 2)"), "{r}");

    // A Node package, runtime told from its files; a directory of nothing but ignored files
    // is a usage error.
    let node = sh.tree("node", &[("index.js", "exports.handler = async (e) => ({ node: true, n: require('./lib/n').n });\n"), ("lib/n.js", "exports.n = 7;\n")]);
    let f = sh.json(&["functions", "deploy", "nodepkg", "--dir", p(&node)]);
    assert_eq!((f["runtime"].as_str(), f["handler"].as_str()), (Some("nodejs20"), Some("index.handler")), "{f}");
    assert_eq!(c.invoke("nodepkg", &json!({}))["output"], json!({"node": true, "n": 7}));
    let empty = sh.tree("empty", &[(".voltrunignore", "*\n"), ("x.py", "")]);
    let r = sh.run(&["functions", "deploy", "nothing", "--dir", p(&empty), "--runtime", "python"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("no files"), "{r}");
}

#[test]
fn build_failure_exits_1_and_prints_its_log() {
    let s = Server::start();
    let c = s.user();
    let sh = Shell::new(&s, &c);
    let src = sh.tree("broken", &[("main.py", "def handler(e, c):\n    return 1\n"), ("requirements.txt", "voltrun-no-such-package-c1e7a9==0.0.1\n")]);
    let r = sh.run(&["functions", "deploy", "broken", "--dir", p(&src)]);
    assert_eq!(r.code, 1, "a failed build is exit code 1:\n{r}");
    assert!(r.stderr.contains("The build of broken failed"), "{r}");
    assert!(r.stderr.contains("voltrun-no-such-package-c1e7a9"), "the build's log is printed:\n{r}");
    assert!(r.stderr.contains("the build failed"), "{r}");
    let (_, f) = c.get("/api/functions/broken");
    assert_eq!(f["state"], "failed", "{f}");
    // `functions build` shows it again, with the same exit code.
    let r = sh.run(&["functions", "build", "broken"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("failed") && r.stdout.contains("voltrun-no-such-package-c1e7a9"), "{r}");
}

#[test]
fn layers_publish_list_versions_delete_and_attach() {
    let s = Server::start();
    let c = s.user();
    let sh = Shell::new(&s, &c);
    let layer = sh.tree("layer", &[("python/shared.py", "WHO = 'layer v1'\n"), ("python/__pycache__/x.pyc", "x"), (".voltrunignore", "__pycache__/\n")]);
    let r = sh.ok(&["layers", "publish", "shared", "--dir", p(&layer), "--description", "helpers"]);
    assert!(r.stdout.contains("Published layer shared:1"), "{r}");
    std::fs::write(layer.join("python/shared.py"), "WHO = 'layer v2'\n").unwrap();
    let l2 = sh.json(&["layers", "publish", "shared", "--dir", p(&layer)]);
    assert_eq!((l2["version"].as_i64(), l2["file_count"].as_u64()), (Some(2), Some(1)), "the ignored file is not in it: {l2}");
    // A zip published as is.
    let zip_path = sh.home.join("other.zip");
    std::fs::write(&zip_path, crate::layers::zip_of(&[("python/other.py", "X = 1\n")])).unwrap();
    sh.ok(&["layers", "publish", "other", "--zip", p(&zip_path)]);

    let list = sh.ok(&["layers", "list"]).stdout;
    assert!(list.starts_with("NAME") && list.contains("shared") && list.contains("other"), "{list}");
    let v = sh.json(&["layers", "versions", "shared"]);
    assert_eq!(v["items"].as_array().unwrap().iter().map(|l| l["version"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 1]);
    let one = sh.ok(&["layers", "get", "shared:1"]).stdout;
    assert!(one.contains("helpers") && one.contains("shared:1"), "{one}");

    // --layer on create and update; the function imports from it.
    let f = sh.tree("fn", &[("h.py", "import shared\ndef handler(e, c):\n    return shared.WHO\n")]);
    sh.ok(&["functions", "create", "uses", "--file", p(&f.join("h.py")), "--layer", "shared:1"]);
    assert_eq!(c.invoke("uses", &json!({}))["output"], "layer v1");
    let r = sh.ok(&["functions", "update", "uses", "--layer", "other:1", "--layer", "shared:2"]);
    assert!(r.stdout.contains("version 2"), "{r}");
    assert_eq!(c.invoke("uses", &json!({}))["output"], "layer v2");
    let r = sh.run(&["functions", "update", "uses", "--layer", "shared"]);
    assert_eq!(r.code, 2, "a reference without a version is a usage error: {r}");

    // Delete: refused while used (exit 3, the server's reason), then allowed.
    let r = sh.run(&["layers", "delete", "shared:2"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("layer_in_use") && r.stderr.contains("uses"), "{r}");
    sh.ok(&["layers", "delete", "shared:1"]);
    let r = sh.run(&["layers", "get", "shared:1"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("not found"), "{r}");
    sh.ok(&["functions", "update", "uses", "--no-layers"]);
    let r = sh.ok(&["layers", "delete", "shared:2"]);
    assert!(r.stdout.contains("Deleted layer shared:2"), "{r}");
    assert!(sh.ok(&["layers", "versions", "other"]).stdout.contains("other"));
    // Completions know the new commands.
    let bash = sh.ok(&["completions", "bash"]).stdout;
    assert!(bash.contains("layers") && bash.contains("publish") && bash.contains("--dir") && bash.contains("--layer"), "bash completions");
}

#[test]
fn build_followed_to_its_end_then_an_update_applies_at_once() {
    let s = Server::start();
    let c = s.user();
    let sh = Shell::new(&s, &c);
    let src = sh.tree("deps", &[("main.py", "import six\ndef handler(e, c):\n    return six.ensure_str('v1')\n"), ("requirements.txt", "six\n")]);
    let r = sh.ok(&["functions", "deploy", "withdeps", "--dir", p(&src)]);
    assert!(r.stderr.contains("Building dependencies of withdeps") && r.stderr.contains("Built dependencies in"), "plain lines off a terminal:\n{r}");
    assert!(r.stdout.contains("Created function withdeps"), "{r}");
    let (_, f) = c.get("/api/functions/withdeps");
    assert_eq!(f["state"], "active", "{f}");
    assert_eq!(c.invoke("withdeps", &json!({}))["output"], "v1");
    // An update with the same dependencies: a cache hit, the new code serves at once.
    std::fs::write(src.join("main.py"), "import six\ndef handler(e, c):\n    return six.ensure_str('v2')\n").unwrap();
    let f = sh.json(&["functions", "deploy", "withdeps", "--dir", p(&src)]);
    assert_eq!((f["version"].as_i64(), f["last_update_status"].as_str()), (Some(2), Some("successful")), "{f}");
    assert_eq!(c.invoke("withdeps", &json!({}))["output"], "v2");
    let b = sh.json(&["functions", "build", "withdeps"]);
    assert_eq!(b["status"], "success", "{b}");
}
