//! The client commands: the real binary run as a user would, against a real server, with its
//! own HOME and XDG_CONFIG_HOME. Covers the deploy → invoke → logs → executions → keys cycle,
//! `--json` output, data from a file and from stdin, exit codes and error messages.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::harness::*;

const PASSWORD: &str = "correct horse";

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

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// A user's shell: a home directory, a config dir, a working dir for files, and env vars.
struct Shell {
    home: PathBuf,
    env: Vec<(String, String)>,
}

impl Shell {
    fn new() -> Shell {
        let home = temp_dir("cli-home");
        Shell { home, env: vec![] }
    }

    fn config_path(&self) -> PathBuf {
        self.home.join("xdg").join("voltrun").join("config.json")
    }

    fn config(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.config_path()).unwrap()).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn with_env(mut self, k: &str, v: &str) -> Shell {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Runs `voltrun ARGS` with `stdin` piped in (or an empty stdin).
    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voltrun"));
        cmd.args(args)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("xdg"))
            .env_remove("VOLTRUN_SERVER")
            .env_remove("VOLTRUN_API_KEY")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run voltrun");
        if let Some(input) = stdin {
            let mut w = child.stdin.take().unwrap();
            w.write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    /// Runs and asserts exit 0.
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "voltrun {}:\n{r}", args.join(" "));
        r
    }

    /// Runs with `--json`, asserts exit 0, and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        self.ok(&a).json()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Registers a user over the API and logs the shell in as them with `--password-stdin`.
fn logged_in(s: &Server) -> (Shell, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let email = format!("cli-{nanos:x}@example.com");
    let (status, body) = s.anon().post("/api/auth/register", &json!({"email": email, "password": PASSWORD, "name": "Ada"}));
    assert_eq!(status, 201, "{body}");
    let sh = Shell::new();
    let r = sh.run_with(&["login", "--server", &s.base, "--email", &email, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains(&format!("Logged in to {} as {email}", s.base)), "{r}");
    (sh, email)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const HELLO_V1: &str = "def handler(event, context):\n    print('hello from', context.function_name)\n    return {'greeting': 'Hello, ' + event.get('name', 'world'), 'v': 1}\n";
const HELLO_V2: &str = "def handler(event, context):\n    print('hello again')\n    return {'greeting': 'Hi, ' + event.get('name', 'world'), 'v': 2}\n";

#[test]
fn deploy_invoke_logs_executions_keys_cycle() {
    let s = Server::start();
    let (sh, email) = logged_in(&s);

    // The credentials file is private, and holds the token pair for this server.
    assert_eq!(mode(&sh.config_path()), 0o600);
    assert_eq!(mode(sh.config_path().parent().unwrap()), 0o700);
    let cfg = sh.config();
    assert_eq!(cfg["server"], s.base.as_str());
    assert!(cfg["token"].is_string() && cfg["refresh_token"].is_string(), "{cfg}");

    let me = sh.json(&["whoami"]);
    assert_eq!((me["user"]["email"].as_str(), me["server"].as_str(), me["auth"].as_str()), (Some(email.as_str()), Some(s.base.as_str()), Some("token")));
    assert!(sh.ok(&["whoami"]).stdout.contains(&email));

    // Deploy creates, deploying again updates (version 2), deploying the same is a no-op.
    let file = sh.write("hello.py", HELLO_V1);
    let f = sh.json(&["functions", "deploy", "hello", "--file", file.to_str().unwrap(), "--env", "GREETING=hi", "--memory", "256"]);
    assert_eq!((f["version"].as_u64(), f["runtime"].as_str(), f["memory"].as_u64()), (Some(1), Some("python3.11"), Some(256)), "{f}");
    assert_eq!(f["env"], json!({"GREETING": "hi"}));
    sh.write("hello.py", HELLO_V2);
    let r = sh.ok(&["functions", "deploy", "hello", "--runtime", "python", "--file", "hello.py"]);
    assert!(r.stdout.contains("Updated function hello to version 2"), "{r}");
    let r = sh.ok(&["functions", "deploy", "hello", "--file", "hello.py"]);
    assert!(r.stdout.contains("unchanged (version 2)"), "{r}");
    let f = sh.json(&["functions", "get", "hello"]);
    assert_eq!((f["version"].as_u64(), f["code"].as_str(), f["memory"].as_u64()), (Some(2), Some(HELLO_V2), Some(256)), "{f}");
    assert_eq!(sh.ok(&["functions", "get", "hello", "--code"]).stdout, HELLO_V2);
    let list = sh.json(&["functions", "list"]);
    assert_eq!(list["items"].as_array().unwrap().iter().map(|f| f["name"].clone()).collect::<Vec<_>>(), vec![json!("hello")]);
    let table = sh.ok(&["functions", "list"]).stdout;
    assert!(table.starts_with("NAME") && table.contains("hello") && table.contains("v2"), "{table}");
    assert!(!table.contains('\x1b'), "no colours when piped: {table:?}");
    let f = sh.json(&["functions", "update", "hello", "--timeout", "5", "--description", "greets", "--schedule", "0 0 1 1 *"]);
    assert_eq!((f["version"].as_u64(), f["timeout"].as_u64(), f["description"].as_str()), (Some(3), Some(5), Some("greets")));
    assert_eq!(f["schedule"], "0 0 1 1 *", "{f}");
    assert!(sh.ok(&["functions", "get", "hello"]).stdout.contains("0 0 1 1 * (UTC)"));
    let r = sh.run(&["functions", "update", "hello"]);
    assert_eq!(r.code, 2, "nothing to update is a usage error: {r}");

    // `functions create` refuses an existing name (409 from the API: exit 3).
    let r = sh.run(&["functions", "create", "hello", "--file", "hello.py"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("already taken"), "{r}");

    // Invoke with --data, with @file, and from stdin: piped output is compact raw JSON.
    let r = sh.ok(&["invoke", "hello", "--data", r#"{"name": "Ada"}"#]);
    assert_eq!(r.stdout, "{\"greeting\":\"Hi, Ada\",\"v\":2}\n", "{r}");
    sh.write("event.json", r#"{"name": "File"}"#);
    assert_eq!(sh.ok(&["invoke", "hello", "--data", "@event.json"]).json()["greeting"], "Hi, File");
    let r = sh.run_with(&["invoke", "hello"], Some(r#"{"name": "Stdin"}"#));
    assert_eq!((r.code, r.json()["greeting"].clone()), (0, json!("Hi, Stdin")), "{r}");
    let r = sh.run_with(&["invoke", "hello", "--data", "@-"], Some(r#"{"name": "Dash"}"#));
    assert_eq!(r.json()["greeting"], "Hi, Dash", "{r}");
    // No data and an empty stdin is the empty event.
    assert_eq!(sh.ok(&["invoke", "hello"]).json()["greeting"], "Hi, world");
    // --logs adds the logs on stderr; --json prints the whole record.
    let r = sh.ok(&["invoke", "hello", "--logs"]);
    assert!(r.stderr.contains("hello again"), "{r}");
    assert!(!r.stdout.contains("hello again"), "{r}");
    let rec = sh.json(&["invoke", "hello", "--data", r#"{"name": "Json"}"#]);
    assert_eq!((rec["status"].as_str(), rec["function_version"].as_u64()), (Some("success"), Some(3)), "{rec}");
    assert_eq!(rec["output"]["greeting"], "Hi, Json");
    let ex_id = rec["id"].as_str().unwrap().to_string();

    // Bad input is a usage error, before any request.
    let r = sh.run(&["invoke", "hello", "--data", "{nope"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("not valid JSON"), "{r}");
    let r = sh.run(&["invoke", "hello", "--data", "@missing.json"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("missing.json"), "{r}");
    let r = sh.run(&["invoke"]);
    assert_eq!(r.code, 2, "clap usage errors are exit 2 too: {r}");

    // A failing run: exit 1, the error type and message on stderr, nothing on stdout.
    sh.write("boom.py", "def handler(event, context):\n    print('about to fail')\n    raise ValueError('boom ' + str(event.get('n')))\n");
    sh.ok(&["functions", "create", "boom", "--runtime", "python", "--file", "boom.py"]);
    let r = sh.run(&["invoke", "boom", "--data", r#"{"n": 7}"#]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("HandlerError") && r.stderr.contains("boom 7"), "{r}");
    assert_eq!(r.stdout, "", "{r}");
    let r = sh.run(&["invoke", "boom", "--json"]);
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(r.json()["error"]["type"], "HandlerError", "{r}");
    let failed_id = r.json()["id"].as_str().unwrap().to_string();

    // Logs of a finished run.
    let r = sh.ok(&["logs", &failed_id]);
    assert_eq!(r.stdout, "about to fail\n", "{r}");
    assert_eq!(sh.json(&["logs", &ex_id]), json!({"logs": "hello again\n", "truncated": false}));
    let r = sh.ok(&["executions", "get", &failed_id]);
    assert!(r.stdout.contains("HandlerError: ValueError: boom None") && r.stdout.contains("about to fail"), "{r}");
    assert_eq!(sh.json(&["executions", "get", &ex_id])["output"]["greeting"], "Hi, Json");

    // An async run, followed live: the id alone on stdout, then the stream until it ends.
    sh.write(
        "slow.py",
        "import time\ndef handler(event, context):\n    print('step one', flush=True)\n    time.sleep(1.5)\n    print('step two', flush=True)\n    return 'slow done'\n",
    );
    sh.ok(&["functions", "deploy", "slow", "--file", "slow.py"]);
    let r = sh.ok(&["invoke", "slow", "--async"]);
    let async_id = r.stdout.trim().to_string();
    assert!(async_id.starts_with("ex_") && !async_id.contains('\n'), "{r}");
    let r = sh.ok(&["logs", &async_id, "--follow"]);
    assert_eq!(r.stdout, "step one\nstep two\n", "{r}");
    let e = sh.json(&["executions", "get", &async_id]);
    assert_eq!((e["status"].as_str(), e["trigger"].as_str(), e["output"].as_str()), (Some("success"), Some("async"), Some("slow done")), "{e}");
    // --follow --json: one JSON event per line, ending with `end`.
    let r = sh.ok(&["logs", &async_id, "--follow", "--json"]);
    let events: Vec<Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.last().unwrap(), &json!({"event": "end", "data": {"status": "success", "logs_truncated": false}}), "{r}");
    // --async --logs follows the run and then reports it as a synchronous call would.
    let r = sh.ok(&["invoke", "slow", "--async", "--logs"]);
    assert_eq!(r.stdout, "\"slow done\"\n", "{r}");
    assert!(r.stderr.contains("step one") && r.stderr.contains("step two"), "{r}");
    let r = sh.run(&["invoke", "boom", "--async", "--logs"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("about to fail") && r.stderr.contains("HandlerError"), "{r}");

    // Executions, filtered, as JSON.
    let failed = sh.json(&["executions", "list", "--status", "failed"]);
    let items = failed["items"].as_array().unwrap();
    assert!(items.len() >= 3 && items.iter().all(|e| e["status"] == "failed" && e["function_name"] == "boom"), "{failed}");
    let slow = sh.json(&["executions", "list", "--function", "slow", "--limit", "1"]);
    assert_eq!(slow["items"].as_array().unwrap().len(), 1, "{slow}");
    assert_eq!(slow["items"][0]["function_name"], "slow");
    let r = sh.ok(&["executions", "list", "--function", "boom"]);
    assert!(r.stdout.starts_with("ID") && r.stdout.contains("failed") && r.stdout.contains("HandlerError"), "{r}");
    let r = sh.run(&["executions", "list", "--function", "nosuch"]);
    assert_eq!(r.code, 3, "an unknown function is a 404, not an empty list: {r}");

    // 404s: exit 3 and a message naming what was missing.
    let r = sh.run(&["invoke", "nosuch"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("function \"nosuch\" not found"), "{r}");
    let r = sh.run(&["logs", "ex_nosuch"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("execution \"ex_nosuch\" not found"), "{r}");
    assert_eq!(sh.run(&["functions", "delete", "nosuch"]).code, 3);

    // API keys: create (shown once), use through VOLTRUN_API_KEY, list, delete, rejected after.
    let k = sh.json(&["keys", "create", "ci", "--expires-in-days", "30"]);
    let (key, key_id) = (k["key"].as_str().unwrap().to_string(), k["id"].as_str().unwrap().to_string());
    assert!(key.starts_with("vr_"), "{k}");
    let r = sh.ok(&["keys", "create", "plain"]);
    assert!(r.stdout.trim().starts_with("vr_") && r.stderr.contains("only time"), "the key alone on stdout: {r}");
    let keyed = Shell::new().with_env("VOLTRUN_API_KEY", &key).with_env("VOLTRUN_SERVER", &s.base);
    let me = keyed.json(&["whoami"]);
    assert_eq!((me["user"]["email"].as_str(), me["auth"].as_str()), (Some(email.as_str()), Some("api_key_env")), "{me}");
    assert_eq!(keyed.ok(&["invoke", "hello", "--data", r#"{"name":"Key"}"#]).json()["greeting"], "Hi, Key");
    let keys = sh.json(&["keys", "list"]);
    let listed: Vec<&str> = keys["items"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(listed, vec!["plain", "ci"], "{keys}");
    assert!(keys["items"].as_array().unwrap().iter().all(|k| k.get("key").is_none()), "{keys}");
    assert!(sh.ok(&["keys", "list"]).stdout.contains(&key_id));
    sh.ok(&["keys", "delete", &key_id]);
    let r = keyed.run(&["whoami"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("rejected the API key"), "{r}");
    assert_eq!(sh.run(&["keys", "delete", &key_id]).code, 3, "deleting twice is a 404");

    // Deleting a function.
    sh.ok(&["functions", "delete", "slow"]);
    assert_eq!(sh.run(&["functions", "get", "slow"]).code, 3);

    // Logout: the saved token is gone, and commands say so. The server revokes the refresh
    // token too (regression: `logout` only forgot it locally, so a copied config file kept
    // working for 30 days).
    let saved_refresh = sh.config()["refresh_token"].as_str().unwrap().to_string();
    let r = sh.ok(&["logout"]);
    let (status, _) = s.anon().post("/api/auth/refresh", &json!({"refresh_token": saved_refresh}));
    assert_eq!(status, 401, "the refresh token still works after logout");
    assert!(r.stdout.contains("Logged out"), "{r}");
    let cfg = sh.config();
    assert!(cfg.get("token").is_none() && cfg.get("refresh_token").is_none(), "{cfg}");
    assert_eq!(mode(&sh.config_path()), 0o600);
    let r = sh.run(&["functions", "list"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("not logged in"), "{r}");
}

#[test]
fn expired_access_token_is_renewed_and_saved() {
    let s = Server::start();
    let (sh, _email) = logged_in(&s);
    let cfg = sh.config();
    let old_refresh = cfg["refresh_token"].as_str().unwrap().to_string();
    // An access token the server no longer accepts, as after its hour is up.
    let mut stale = cfg.clone();
    stale["token"] = json!("eyJhbGciOiJIUzI1NiJ9.e30.invalid");
    std::fs::write(sh.config_path(), serde_json::to_string(&stale).unwrap()).unwrap();
    assert_eq!(sh.json(&["whoami"])["auth"], "token");
    let renewed = sh.config();
    assert_ne!(renewed["token"], stale["token"]);
    assert_ne!(renewed["refresh_token"].as_str(), Some(old_refresh.as_str()), "the rotated refresh token is saved");
    assert_eq!(mode(&sh.config_path()), 0o600);
    sh.ok(&["functions", "list"]);

    // Both tokens dead: a clear "expired" message and exit 3.
    let mut dead = renewed.clone();
    dead["token"] = json!("eyJhbGciOiJIUzI1NiJ9.e30.invalid");
    dead["refresh_token"] = json!("not-a-refresh-token");
    std::fs::write(sh.config_path(), serde_json::to_string(&dead).unwrap()).unwrap();
    let r = sh.run(&["functions", "list"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("login") && r.stderr.contains("expired"), "{r}");

    // A wrong password: exit 3 with the server's message; no terminal and no
    // --password-stdin: exit 2 explaining how.
    let email = sh.config()["email"].as_str().unwrap().to_string();
    let r = sh.run_with(&["login", "--server", &s.base, "--email", &email, "--password-stdin"], Some("wrong password\n"));
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("invalid email or password"), "{r}");
    let r = sh.run(&["login", "--server", &s.base, "--email", &email]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--password-stdin"), "{r}");
    // Saved credentials never go to another server.
    let r = sh.run_with(&["login", "--server", &s.base, "--password-stdin"], Some(PASSWORD));
    assert_eq!(r.code, 0, "login again, with the saved email: {r}");
    let r = sh.run(&["--server", "http://127.0.0.1:1", "functions", "list"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("not logged in to http://127.0.0.1:1"), "{r}");
}

#[test]
fn unreachable_server_usage_errors_and_completions() {
    // No server listens on port 1.
    let sh = Shell::new().with_env("VOLTRUN_SERVER", "http://127.0.0.1:1").with_env("VOLTRUN_API_KEY", "vr_whatever");
    let r = sh.run(&["functions", "list"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("cannot reach the VoltRun server at http://127.0.0.1:1") && r.stderr.contains("connection refused"), "{r}");
    let r = sh.run_with(&["login", "--email", "a@example.com", "--password-stdin"], Some("pw\n"));
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("cannot reach"), "{r}");
    let r = sh.run(&["functions", "deploy", "x"]);
    assert_eq!(r.code, 2, "no --file: {r}");
    let r = sh.run(&["--server", "https://example.com", "whoami"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("plain HTTP"), "{r}");
    drop(sh);

    let sh = Shell::new();
    let r = sh.run(&["whoami"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stderr.contains("not logged in"), "{r}");
    let r = sh.ok(&["completions", "bash"]);
    assert!(r.stdout.contains("_voltrun()") && r.stdout.contains("complete") && r.stdout.contains("invoke"), "{}", &r.stdout[..200.min(r.stdout.len())]);
    assert!(sh.ok(&["completions", "zsh"]).stdout.contains("#compdef voltrun"));
    assert!(sh.ok(&["completions", "fish"]).stdout.contains("complete -c voltrun"));
    assert_eq!(sh.run(&["completions", "tcsh"]).code, 2);
}
