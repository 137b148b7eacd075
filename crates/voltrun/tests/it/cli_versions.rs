//! The client's commands for secrets on functions, versions and aliases (issue 16): the real
//! binary against a real server, logged in with an API key. `functions --secret`, `functions
//! versions|version|delete-version`, `aliases create|get|list|update|delete` with a canary
//! weight and a route, `invoke NAME:QUALIFIER` / `--qualifier`, and the executions list's
//! version and qualifier. Each check reads what the server did, over HTTP, too.

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

/// The client, logged in to `s` with a fresh user's API key, in its own HOME.
struct Cli {
    base: String,
    key: String,
    home: std::path::PathBuf,
}

impl Cli {
    fn new(s: &Server, c: &Client) -> Cli {
        let (status, key) = c.post("/api/keys", &json!({"name": "cli-versions"}));
        assert_eq!(status, 201, "{key}");
        Cli { base: s.base.clone(), key: key["key"].as_str().unwrap().to_string(), home: temp_dir("cli-versions") }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
            .args(args)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("xdg"))
            .env("VOLTRUN_SERVER", &self.base)
            .env("VOLTRUN_API_KEY", &self.key)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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

    /// Runs, asserts the exit code, and returns the run.
    fn fails(&self, args: &[&str], code: i32) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, code, "voltrun {}:\n{r}", args.join(" "));
        r
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.home.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

const PY_SECRET: &str = "import os\ndef handler(event, context):\n    return {'has': os.environ.get('CLI_SECRET_A') is not None}\n";
const V1: &str = "def handler(event, context):\n    return {'v': 1}\n";
const V2: &str = "def handler(event, context):\n    return {'v': 2}\n";

/// `--secret` names secrets on create and update (replacing the list), `--no-secrets` clears
/// it, `functions get` shows the names, and an unknown name is the API's 400 (exit 3).
#[test]
fn functions_secret_flag_sets_replaces_and_clears_the_list() {
    let s = Server::start();
    let c = s.user();
    let cli = Cli::new(&s, &c);
    for name in ["CLI_SECRET_A", "CLI_SECRET_B"] {
        let (status, body) = c.post("/api/secrets", &json!({"name": name, "value": "not shown"}));
        assert_eq!(status, 201, "{body}");
    }
    let file = cli.write("h.py", PY_SECRET);
    let f = cli.json(&["functions", "create", "sec", "--file", &file, "--secret", "CLI_SECRET_A", "--secret", "CLI_SECRET_B"]);
    assert_eq!(f["secrets"], json!(["CLI_SECRET_A", "CLI_SECRET_B"]), "{f}");
    assert_eq!(c.invoke("sec", &json!({}))["output"], json!({"has": true}));
    let r = cli.ok(&["functions", "get", "sec"]);
    assert!(r.stdout.lines().any(|l| l.starts_with("secrets:") && l.contains("CLI_SECRET_A CLI_SECRET_B")), "{r}");
    assert!(!r.stdout.contains("not shown"), "{r}");

    let f = cli.json(&["functions", "update", "sec", "--secret", "CLI_SECRET_B"]);
    assert_eq!(f["secrets"], json!(["CLI_SECRET_B"]), "the list is replaced: {f}");
    assert_eq!(c.invoke("sec", &json!({}))["output"], json!({"has": false}));
    let f = cli.json(&["functions", "update", "sec", "--no-secrets"]);
    assert_eq!(f["secrets"], json!([]), "{f}");
    let (_, got) = c.get("/api/functions/sec");
    assert_eq!(got["secrets"], json!([]));

    let r = cli.fails(&["functions", "update", "sec", "--secret", "NO_SUCH_SECRET"], 3);
    assert!(r.stderr.contains("secrets: no secret named NO_SUCH_SECRET") && r.stderr.contains("HTTP 400"), "{r}");
    let r = cli.fails(&["functions", "update", "sec", "--secret", "A", "--no-secrets"], 2);
    assert!(r.stderr.contains("cannot be used with"), "{r}");
}

/// Two versions, an alias on the first, qualified invocations, a canary split, a route bound
/// to the alias, a rollback, the deletes the API refuses, and the executions list.
#[test]
fn versions_aliases_qualified_invoke_and_rollback() {
    let s = Server::start();
    let c = s.user();
    let cli = Cli::new(&s, &c);
    let v1 = cli.write("v1.py", V1);
    let v2 = cli.write("v2.py", V2);
    cli.ok(&["functions", "deploy", "app", "--file", &v1]);
    let r = cli.ok(&["functions", "deploy", "app", "--file", &v2]);
    assert!(r.stdout.contains("to version 2"), "{r}");

    // versions: newest first, both kept; a version's code is the code it had.
    let page = cli.json(&["functions", "versions", "app"]);
    let nums: Vec<i64> = page["items"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(nums, vec![2, 1], "{page}");
    let r = cli.ok(&["functions", "versions", "app"]);
    assert!(r.stdout.starts_with("VERSION") && r.stdout.contains("ALIASES"), "{r}");
    assert_eq!(cli.ok(&["functions", "version", "app", "1", "--code"]).stdout, V1);
    let shown = cli.json(&["functions", "version", "app", "2"]);
    assert_eq!((shown["version"].as_i64(), shown["code"].as_str()), (Some(2), Some(V2)), "{shown}");
    let r = cli.fails(&["functions", "version", "app", "9"], 3);
    assert!(r.stderr.contains("has no version 9") && r.stderr.contains("HTTP 404"), "{r}");

    // An alias on v1; NAME:QUALIFIER and --qualifier run what they name.
    let a = cli.json(&["aliases", "create", "app", "live", "--version", "1", "--description", "prod"]);
    assert_eq!((a["name"].as_str(), a["version"].as_i64()), (Some("live"), Some(1)), "{a}");
    assert_eq!(cli.ok(&["invoke", "app:live"]).stdout.trim(), r#"{"v":1}"#);
    assert_eq!(cli.ok(&["invoke", "app", "--qualifier", "1"]).stdout.trim(), r#"{"v":1}"#);
    assert_eq!(cli.ok(&["invoke", "app:latest"]).stdout.trim(), r#"{"v":2}"#);
    assert_eq!(cli.ok(&["invoke", "app"]).stdout.trim(), r#"{"v":2}"#);
    let rec = cli.json(&["invoke", "app:live"]);
    assert_eq!((rec["function_version"].as_i64(), rec["qualifier"].as_str()), (Some(1), Some("live")), "{rec}");
    let r = cli.fails(&["invoke", "app:live", "--qualifier", "2"], 2);
    assert!(r.stderr.contains("give one"), "{r}");
    let r = cli.fails(&["invoke", "app:nope"], 3);
    assert!(r.stderr.contains("has no alias \"nope\"") && r.stderr.contains("alias_not_found"), "{r}");
    let r = cli.fails(&["invoke", "app:77"], 3);
    assert!(r.stderr.contains("has no version \"77\"") && r.stderr.contains("version_not_found"), "{r}");
    let r = cli.fails(&["aliases", "create", "app", "live", "--version", "2"], 3);
    assert!(r.stderr.contains("alias_exists"), "{r}");
    let r = cli.fails(&["aliases", "create", "app", "other"], 2);
    assert!(r.stderr.contains("--version is required"), "{r}");

    // The versions list names the alias on its version.
    let page = cli.json(&["functions", "versions", "app"]);
    assert_eq!(page["items"][1]["aliases"], json!(["live"]), "{page}");

    // A canary: half the calls to v2. The split hashes the execution id, so 40 calls run both
    // (the chance that they all run one version is 2^-39).
    let a = cli.json(&["aliases", "update", "app", "live", "--weight", "2=0.5"]);
    assert_eq!(a["weights"], json!({"2": 0.5}), "{a}");
    assert!(cli.ok(&["aliases", "get", "app", "live"]).stdout.contains("1 (50%) + 2 (50%)"));
    let mut ran = std::collections::BTreeMap::<i64, u32>::new();
    for _ in 0..40 {
        let rec = cli.json(&["invoke", "app:live"]);
        assert_eq!(rec["output"]["v"], rec["function_version"], "the version that ran is recorded: {rec}");
        *ran.entry(rec["function_version"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(ran.keys().copied().collect::<Vec<_>>(), vec![1, 2], "{ran:?}");
    let r = cli.fails(&["aliases", "update", "app", "live", "--weight", "1=0.5"], 3);
    assert!(r.stderr.contains("weights") && r.stderr.contains("HTTP 400"), "a weight on the alias's own version: {r}");
    let a = cli.json(&["aliases", "update", "app", "live", "--no-weights"]);
    assert!(a["weights"].is_null() || a["weights"] == json!({}), "{a}");

    // A route bound to the alias runs the alias; a rollback is one update.
    let a = cli.json(&["aliases", "update", "app", "live", "--version", "2", "--route", "shop"]);
    assert_eq!((a["version"].as_i64(), a["route"].as_str()), (Some(2), Some("shop")), "{a}");
    let hit = |want: i64| {
        let r = c.raw("POST", "/api/execute/shop", Some(b"{}"), &[("content-type", "application/json")]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["v"], want);
    };
    hit(2);
    let r = cli.ok(&["aliases", "update", "app", "live", "--version", "1"]);
    assert!(r.stdout.contains("Updated alias app:live → version 1."), "{r}");
    hit(1);
    let r = cli.ok(&["aliases", "list", "app"]);
    assert!(r.stdout.starts_with("ALIAS") && r.stdout.lines().any(|l| l.starts_with("live") && l.contains("shop")), "{r}");
    cli.json(&["aliases", "update", "app", "live", "--no-route"]);
    let r = c.raw("POST", "/api/execute/shop", Some(b"{}"), &[("content-type", "application/json")]);
    assert_eq!(r.status, 404, "an unbound route is gone");
    let r = cli.fails(&["aliases", "update", "app", "live"], 2);
    assert!(r.stderr.contains("nothing to change"), "{r}");

    // Executions list: the version that ran and the qualifier used; filtered by version.
    let page = cli.json(&["executions", "list", "-f", "app", "-n", "500"]);
    let items = page["items"].as_array().unwrap();
    assert!(items.iter().any(|e| e["qualifier"] == "live" && e["function_version"] == 1), "{page}");
    assert!(items.iter().any(|e| e["qualifier"].is_null() && e["function_version"] == 2), "{page}");
    let r = cli.ok(&["executions", "list", "-f", "app"]);
    assert!(r.stdout.starts_with("ID") && r.stdout.contains("QUALIFIER") && r.stdout.contains(" live "), "{r}");
    let only1 = cli.json(&["executions", "list", "-f", "app", "--function-version", "1", "-n", "500"]);
    let only1 = only1["items"].as_array().unwrap();
    assert!(!only1.is_empty() && only1.iter().all(|e| e["function_version"] == 1), "{only1:?}");

    // Deletes: the latest and a version an alias uses are refused; then they go.
    let r = cli.fails(&["functions", "delete-version", "app", "2"], 3);
    assert!(r.stderr.contains("version_is_latest"), "{r}");
    let r = cli.fails(&["functions", "delete-version", "app", "1"], 3);
    assert!(r.stderr.contains("version_in_use"), "{r}");
    let r = cli.fails(&["aliases", "get", "app", "gone"], 3);
    assert!(r.stderr.contains("has no alias \"gone\""), "{r}");
    cli.ok(&["aliases", "delete", "app", "live"]);
    let r = cli.ok(&["functions", "delete-version", "app", "1"]);
    assert!(r.stdout.contains("Deleted version 1 of app."), "{r}");
    let (status, body) = c.get("/api/functions/app/versions/1");
    assert_eq!(status, 404, "{body}");
    let r = cli.fails(&["invoke", "app:1"], 3);
    assert!(r.stderr.contains("version_not_found"), "{r}");
    let r = cli.ok(&["aliases", "list", "app"]);
    assert!(r.stdout.contains("No aliases"), "{r}");
}

/// Another user's function, versions and aliases are "not found" to the client, and it cannot
/// point an alias of its own function at them.
#[test]
fn another_users_versions_and_aliases_are_not_found() {
    let s = Server::start();
    let owner = s.user();
    owner.create_function("mine", "python", V1, json!({}));
    let (status, body) = owner.post("/api/functions/mine/aliases", &json!({"name": "live", "version": 1}));
    assert_eq!(status, 201, "{body}");
    let other = s.user();
    let cli = Cli::new(&s, &other);
    for args in [
        vec!["functions", "versions", "mine"],
        vec!["functions", "version", "mine", "1"],
        vec!["functions", "delete-version", "mine", "1"],
        vec!["aliases", "list", "mine"],
        vec!["aliases", "get", "mine", "live"],
        vec!["aliases", "update", "mine", "live", "--version", "1"],
        vec!["aliases", "delete", "mine", "live"],
        vec!["invoke", "mine:live"],
    ] {
        let r = cli.fails(&args, 3);
        assert!(r.stderr.contains("function \"mine\" not found") && r.stderr.contains("HTTP 404"), "voltrun {}:\n{r}", args.join(" "));
    }
    let (status, a) = owner.get("/api/functions/mine/aliases/live");
    assert_eq!((status, a["version"].as_i64()), (200, Some(1)), "{a}");
}

/// `--schedule-qualifier` names what the schedule runs: checked by the API, shown by
/// `functions get`, and an alias the schedule runs cannot be deleted until it is cleared.
#[test]
fn schedule_qualifier_flag_is_checked_shown_and_guards_its_alias() {
    let s = Server::start();
    let c = s.user();
    let cli = Cli::new(&s, &c);
    let v1 = cli.write("v1.py", V1);
    cli.ok(&["functions", "deploy", "cron", "--file", &v1, "--schedule", "0 3 * * *"]);
    let r = cli.fails(&["functions", "update", "cron", "--schedule-qualifier", "nightly"], 3);
    assert!(r.stderr.contains("schedule_qualifier") && r.stderr.contains("HTTP 400"), "{r}");
    cli.ok(&["aliases", "create", "cron", "nightly", "--version", "1"]);
    let f = cli.json(&["functions", "update", "cron", "--schedule-qualifier", "nightly"]);
    assert_eq!(f["schedule_qualifier"], "nightly", "{f}");
    let r = cli.ok(&["functions", "get", "cron"]);
    assert!(r.stdout.lines().any(|l| l.starts_with("schedule:") && l.contains("0 3 * * * (UTC), runs nightly")), "{r}");
    let r = cli.fails(&["aliases", "delete", "cron", "nightly"], 3);
    assert!(r.stderr.contains("alias_in_use"), "{r}");
    let f = cli.json(&["functions", "update", "cron", "--no-schedule-qualifier"]);
    assert!(f["schedule_qualifier"].is_null(), "{f}");
    cli.ok(&["aliases", "delete", "cron", "nightly"]);
}
