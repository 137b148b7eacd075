//! Secrets and the master key (SPEC §12, issue 16): CRUD over HTTP, values in runs and never
//! anywhere else (responses, records, metrics, logs, the data dir, the database), a new value
//! reaching the next run, 409 on deleting a secret in use, BOLA, the CLI, and PostgreSQL nodes
//! that share a key while a node with another key (or none) refuses to start.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;

/// A Python function returning the SHA-256 of `API_TOKEN` (never the value itself, so the
/// execution record holds no plaintext).
const PY_SHA: &str =
    "import hashlib, os\n\ndef handler(event, context):\n    v = os.environ.get('API_TOKEN')\n    return {'sha': None if v is None else hashlib.sha256(v.encode()).hexdigest()}\n";
/// The same in Node.
const NODE_SHA: &str = "const crypto = require('crypto');\nexports.handler = async () => {\n  const v = process.env.API_TOKEN;\n  return { sha: v === undefined ? null : crypto.createHash('sha256').update(v).digest('hex') };\n};\n";

fn sha(v: &str) -> String {
    format!("{:x}", Sha256::digest(v.as_bytes()))
}

/// A value no other test or file holds.
fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("vr-secret-{tag}-{n:x}-{}", std::process::id())
}

fn run_sha(c: &Client, function: &str) -> Value {
    let e = c.invoke(function, &json!({}));
    assert_eq!(e["status"], "success", "{e}");
    e["output"]["sha"].clone()
}

/// Asserts `needle` is nowhere in `haystack` (a response body, a log, a dump).
fn assert_absent(haystack: &[u8], needle: &str, what: &str) {
    let found = haystack.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!found, "the plaintext value was found in {what}");
}

/// Every regular file under `dir` (symlinks not followed; instance root mount points, which
/// hold the instance's view of host directories while it runs, left out).
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let p = e.path();
        if t.is_dir() && !p.to_string_lossy().ends_with(".root") {
            files_under(&p, out);
        } else if t.is_file() {
            out.push(p);
        }
    }
}

/// Searches every file of the data dir, and the server's log, for the plaintext; returns how
/// many files were read (so a search of nothing cannot pass).
fn search_data_dir(s: &Server, needle: &str) -> usize {
    let mut files = Vec::new();
    files_under(&s.data_dir, &mut files);
    files.push(s.data_dir.with_extension("stderr.log"));
    let mut read = 0;
    for f in &files {
        if let Ok(bytes) = std::fs::read(f) {
            read += 1;
            assert_absent(&bytes, needle, &f.display().to_string());
        }
    }
    read
}

#[test]
fn secrets_crud_over_http_never_shows_a_value() {
    let s = Server::start_with(&temp_dir("secrets-crud"), &["--quota-secrets", "3"], true);
    let c = s.user();
    let value = unique("crud");
    let (status, created) = c.post("/api/secrets", &json!({"name": "API_TOKEN", "value": value}));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "API_TOKEN");
    assert!(created["created_at"].is_string() && created["updated_at"] == created["created_at"], "{created}");
    assert!(created.get("value").is_none(), "{created}");

    let (status, list) = c.get("/api/secrets");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["name"], "API_TOKEN");
    let (status, one) = c.get("/api/secrets/API_TOKEN");
    assert_eq!((status, &one["name"]), (200, &json!("API_TOKEN")), "{one}");
    let (status, updated) = c.put("/api/secrets/API_TOKEN", &json!({"value": format!("{value}-2")}));
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["created_at"], created["created_at"]);
    for body in [&created, &list, &one, &updated] {
        assert_absent(body.to_string().as_bytes(), &value, "an API response");
    }

    // Validation: the name rule, the 32 KiB cap (413), a NUL, unknown fields, a taken name.
    for bad in ["lower", "1ABC", "A-B", "", &format!("A{}", "B".repeat(128))] {
        let (status, body) = c.post("/api/secrets", &json!({"name": bad, "value": "x"}));
        assert_eq!(assert_error(status, &body, 400), "validation_failed", "{bad:?}");
    }
    let (status, body) = c.post("/api/secrets", &json!({"name": "BIG", "value": "x".repeat(32 * 1024 + 1)}));
    assert_error(status, &body, 413);
    let (status, body) = c.post("/api/secrets", &json!({"name": "EXACT", "value": "x".repeat(32 * 1024)}));
    assert_eq!(status, 201, "exactly 32 KiB is allowed: {body}");
    let (status, body) = c.post("/api/secrets", &json!({"name": "NUL", "value": "a\u{0}b"}));
    assert_error(status, &body, 400);
    let (status, body) = c.post("/api/secrets", &json!({"name": "X", "value": "v", "extra": 1}));
    assert_error(status, &body, 400);
    let (status, body) = c.post("/api/secrets", &json!({"name": "API_TOKEN", "value": "again"}));
    assert_eq!(assert_error(status, &body, 409), "conflict");
    let (status, body) = c.put("/api/secrets/API_TOKEN", &json!({"value": "x".repeat(32 * 1024 + 1)}));
    assert_error(status, &body, 413);

    // The quota (3 here): API_TOKEN, EXACT, then one more, then refused.
    let (status, body) = c.post("/api/secrets", &json!({"name": "THIRD", "value": "v"}));
    assert_eq!(status, 201, "{body}");
    let (status, body) = c.post("/api/secrets", &json!({"name": "FOURTH", "value": "v"}));
    assert_eq!(assert_error(status, &body, 409), "quota_exceeded");

    let (status, _) = c.delete("/api/secrets/THIRD");
    assert_eq!(status, 204);
    let (status, body) = c.delete("/api/secrets/THIRD");
    assert_error(status, &body, 404);
    let (status, body) = c.get("/api/secrets/THIRD");
    assert_error(status, &body, 404);
    let (status, body) = c.put("/api/secrets/NEVER", &json!({"value": "v"}));
    assert_error(status, &body, 404);
    let (status, body) = s.anon().get("/api/secrets");
    assert_error(status, &body, 401);
}

#[test]
fn a_run_sees_the_value_and_an_update_reaches_the_next_run() {
    let s = Server::start();
    let c = s.user();
    let first = unique("run-1");
    let (status, body) = c.post("/api/secrets", &json!({"name": "API_TOKEN", "value": first}));
    assert_eq!(status, 201, "{body}");
    let py = c.create_function("sees-py", "python", PY_SHA, json!({"secrets": ["API_TOKEN"]}));
    assert_eq!(py["secrets"], json!(["API_TOKEN"]), "{py}");
    c.create_function("sees-node", "node", NODE_SHA, json!({"secrets": ["API_TOKEN"]}));
    c.create_function("sees-none", "python", PY_SHA, json!({}));
    for f in ["sees-py", "sees-node"] {
        assert_eq!(run_sha(&c, f), json!(sha(&first)), "{f}: cold");
        assert_eq!(run_sha(&c, f), json!(sha(&first)), "{f}: warm");
    }
    assert_eq!(run_sha(&c, "sees-none"), Value::Null, "a function that names no secret gets none");

    let second = unique("run-2");
    let (status, body) = c.put("/api/secrets/API_TOKEN", &json!({"value": second}));
    assert_eq!(status, 200, "{body}");
    for f in ["sees-py", "sees-node"] {
        assert_eq!(run_sha(&c, f), json!(sha(&second)), "{f}: the run after the update sees the new value");
        assert_eq!(run_sha(&c, f), json!(sha(&second)), "{f}: and the one after");
    }
    // An async run gets it too.
    let (status, queued) = c.post("/api/functions/sees-py/execute?async=true", &json!({}));
    assert_eq!(status, 202, "{queued}");
    let done = c.wait_done(queued["id"].as_str().unwrap(), std::time::Duration::from_secs(60));
    assert_eq!(done["output"]["sha"], json!(sha(&second)), "{done}");

    // Adding a secret to a function later (an update) gives the next run the value.
    let (status, body) = c.put("/api/functions/sees-none", &json!({"secrets": ["API_TOKEN"]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(run_sha(&c, "sees-none"), json!(sha(&second)));

    // No response, record or metric carries either value.
    let (_, f) = c.get("/api/functions/sees-py");
    let (_, list) = c.get("/api/functions");
    let (_, execs) = c.get("/api/executions?limit=500");
    let metrics = c.raw("GET", "/metrics", None, &[]).body;
    for v in [&first, &second] {
        assert_absent(f.to_string().as_bytes(), v, "GET /api/functions/{id}");
        assert_absent(list.to_string().as_bytes(), v, "GET /api/functions");
        assert_absent(execs.to_string().as_bytes(), v, "the execution records");
        assert_absent(&metrics, v, "/metrics");
    }
}

#[test]
fn deleting_a_secret_in_use_is_409_until_no_function_or_kept_version_names_it() {
    let s = Server::start();
    let c = s.user();
    for name in ["USED_A", "USED_B", "USED_AB"] {
        let (status, body) = c.post("/api/secrets", &json!({"name": name, "value": "v"}));
        assert_eq!(status, 201, "{body}");
    }
    c.create_function("holder", "python", PY_SHA, json!({"secrets": ["USED_AB"]}));
    // USED_A and USED_B are not named (a prefix or a LIKE wildcard must not match).
    let (status, body) = c.delete("/api/secrets/USED_A");
    assert_eq!(status, 204, "{body}");
    let (status, body) = c.delete("/api/secrets/USED_AB");
    assert_eq!(assert_error(status, &body, 409), "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("holder"), "{body}");
    let (status, body) = c.put("/api/functions/holder", &json!({"secrets": []}));
    assert_eq!(status, 200, "{body}");
    // Version 1 is kept and still runs with it (`holder:1`): still in use, until that
    // version is deleted.
    let (status, body) = c.delete("/api/secrets/USED_AB");
    assert_eq!(assert_error(status, &body, 409), "conflict");
    let (status, body) = c.delete("/api/functions/holder/versions/1");
    assert_eq!(status, 204, "{body}");
    let (status, body) = c.delete("/api/secrets/USED_AB");
    assert_eq!(status, 204, "{body}");
    // Deleting the function frees its secrets too.
    c.create_function("holder2", "python", PY_SHA, json!({"secrets": ["USED_B"]}));
    let (status, body) = c.delete("/api/secrets/USED_B");
    assert_error(status, &body, 409);
    let (status, _) = c.delete("/api/functions/holder2");
    assert_eq!(status, 204);
    let (status, body) = c.delete("/api/secrets/USED_B");
    assert_eq!(status, 204, "{body}");
}

#[test]
fn functions_naming_unknown_reserved_or_bad_secrets_are_400() {
    let s = Server::start();
    let c = s.user();
    let (status, body) = c.post("/api/secrets", &json!({"name": "OK_NAME", "value": "v"}));
    assert_eq!(status, 201, "{body}");
    for (secrets, env) in [
        (json!(["MISSING"]), json!({})),
        (json!(["OK_NAME", "MISSING"]), json!({})),
        (json!(["lower"]), json!({})),
        (json!(["VOLTRUN_FUNCTION_ID"]), json!({})),
        (json!(["PATH"]), json!({})),
        (json!(["OK_NAME"]), json!({"OK_NAME": "plain"})),
        (json!("OK_NAME"), json!({})),
    ] {
        let (status, body) = c.post("/api/functions", &json!({"name": "f", "runtime": "python", "code": PY_SHA, "secrets": secrets, "env": env}));
        assert_error(status, &body, 400);
    }
    c.create_function("f", "python", PY_SHA, json!({"secrets": ["OK_NAME", "OK_NAME"]}));
    let (status, body) = c.put("/api/functions/f", &json!({"secrets": ["MISSING"]}));
    assert_error(status, &body, 400);
    let (_, f) = c.get("/api/functions/f");
    assert_eq!(f["secrets"], json!(["OK_NAME"]), "duplicates folded, the failed update changed nothing: {f}");
}

/// BOLA: another user's secret is a 404 on every route that names it, a 400 when a function
/// names it, and a name of one's own never reaches another's value.
#[test]
fn another_users_secret_is_404_and_naming_it_is_400() {
    let s = Server::start();
    let (alice, bob) = (s.user(), s.user());
    let alices = unique("alice");
    let (status, body) = alice.post("/api/secrets", &json!({"name": "API_TOKEN", "value": alices}));
    assert_eq!(status, 201, "{body}");
    let (status, body) = bob.get("/api/secrets/API_TOKEN");
    assert_error(status, &body, 404);
    let (status, body) = bob.put("/api/secrets/API_TOKEN", &json!({"value": "bob's overwrite"}));
    assert_error(status, &body, 404);
    let (status, body) = bob.delete("/api/secrets/API_TOKEN");
    assert_error(status, &body, 404);
    let (status, list) = bob.get("/api/secrets");
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (200, Some(0)), "{list}");
    let (status, body) = bob.post("/api/functions", &json!({"name": "steal", "runtime": "python", "code": PY_SHA, "secrets": ["API_TOKEN"]}));
    assert_error(status, &body, 400);
    bob.create_function("steal", "python", PY_SHA, json!({}));
    let (status, body) = bob.put("/api/functions/steal", &json!({"secrets": ["API_TOKEN"]}));
    assert_error(status, &body, 400);

    // Bob's own API_TOKEN is his: his function sees his value, Alice's sees hers.
    let bobs = unique("bob");
    let (status, body) = bob.post("/api/secrets", &json!({"name": "API_TOKEN", "value": bobs}));
    assert_eq!(status, 201, "{body}");
    let (status, body) = bob.put("/api/functions/steal", &json!({"secrets": ["API_TOKEN"]}));
    assert_eq!(status, 200, "{body}");
    alice.create_function("mine", "python", PY_SHA, json!({"secrets": ["API_TOKEN"]}));
    assert_eq!(run_sha(&bob, "steal"), json!(sha(&bobs)));
    assert_eq!(run_sha(&alice, "mine"), json!(sha(&alices)));
    // Bob deleting his own does not touch Alice's (and his is in use: 409).
    let (status, _) = bob.delete("/api/secrets/API_TOKEN");
    assert_eq!(status, 409);
    let (status, _) = alice.get("/api/secrets/API_TOKEN");
    assert_eq!(status, 200);
}

/// The whole data dir (the SQLite file, its WAL, instance dirs, bundles) and the server's log
/// hold no plaintext value after it was set, updated and used; the generated master key file
/// is private.
#[test]
fn no_plaintext_value_in_the_data_dir_or_the_server_log() {
    let dir = temp_dir("secrets-plain");
    // SQLite whatever the suite's database: this test is about the data dir.
    let mut s = Server::spawn(&dir, &["--spares".to_string(), "1".to_string()], true);
    let c = s.user();
    let (first, second) = (unique("plain-1"), unique("plain-2"));
    let (status, body) = c.post("/api/secrets", &json!({"name": "API_TOKEN", "value": first}));
    assert_eq!(status, 201, "{body}");
    c.create_function("plain-py", "python", PY_SHA, json!({"secrets": ["API_TOKEN"]}));
    c.create_function("plain-node", "node", NODE_SHA, json!({"secrets": ["API_TOKEN"]}));
    assert_eq!(run_sha(&c, "plain-py"), json!(sha(&first)));
    assert_eq!(run_sha(&c, "plain-node"), json!(sha(&first)));
    let (status, body) = c.put("/api/secrets/API_TOKEN", &json!({"value": second}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(run_sha(&c, "plain-py"), json!(sha(&second)));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("master.key")).expect("master.key generated").permissions());
    assert_eq!(mode & 0o777, 0o600);
    // While instances are warm (their dirs exist), then after a clean stop.
    for v in [&first, &second] {
        assert!(search_data_dir(&s, v) >= 3, "the search read the database, the key and the log at least");
    }
    s.stop();
    for v in [&first, &second] {
        search_data_dir(&s, v);
    }
}

/// The CLI sets (stdin or --value), lists and deletes; it never prints a value.
#[test]
fn cli_sets_lists_and_deletes_secrets() {
    let s = Server::start();
    let c = s.user();
    let (status, key) = c.post("/api/keys", &json!({"name": "cli"}));
    assert_eq!(status, 201, "{key}");
    let home = temp_dir("secrets-cli");
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voltrun"))
            .args(args)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("xdg"))
            .env("VOLTRUN_SERVER", &s.base)
            .env("VOLTRUN_API_KEY", key["key"].as_str().unwrap())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let value = unique("cli");
    let (code, out, err) = cli(&["secrets", "set", "CLI_TOKEN"], Some(&format!("{value}\n")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Created secret"), "{out}");
    c.create_function("cli-fn", "python", &PY_SHA.replace("API_TOKEN", "CLI_TOKEN"), json!({"secrets": ["CLI_TOKEN"]}));
    assert_eq!(run_sha(&c, "cli-fn"), json!(sha(&value)), "stdin less its final newline");
    let (code, out, err) = cli(&["secrets", "set", "CLI_TOKEN", "--value", "second value"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Updated secret"), "{out}");
    assert_eq!(run_sha(&c, "cli-fn"), json!(sha("second value")));
    let (code, out, _) = cli(&["secrets", "list"], None);
    assert_eq!(code, 0);
    assert!(out.contains("CLI_TOKEN") && !out.contains("second value") && !out.contains(&value), "{out}");
    let (code, out, _) = cli(&["secrets", "list", "--json"], None);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["items"][0]["name"], "CLI_TOKEN", "{listed}");
    let (code, _, err) = cli(&["secrets", "delete", "CLI_TOKEN"], None);
    assert_eq!(code, 3, "in use: the server's 409 is exit 3: {err}");
    assert!(err.contains("in use"), "{err}");
    let (status, _) = c.delete("/api/functions/cli-fn");
    assert_eq!(status, 204);
    let (code, out, err) = cli(&["secrets", "delete", "CLI_TOKEN"], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&["secrets", "delete", "CLI_TOKEN"], None);
    assert_eq!(code, 3);
    assert!(err.contains("not found"), "{err}");
}

/// Starts `serve` on `url` and returns (exit code, stderr) once it exits (it must, within
/// 60 s: a node that starts would be killed and the test fail).
fn refused_start(url: &str, key: Option<&str>) -> (i32, String) {
    refused_start_with(url, key, &[])
}

/// [`refused_start`] with more arguments (a previous key).
fn refused_start_with(url: &str, key: Option<&str>, more: &[&str]) -> (i32, String) {
    let dir = temp_dir("secrets-refused");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voltrun"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", url, "--data-dir"])
        .arg(&dir)
        .args(sandbox_args())
        .env_remove("VOLTRUN_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(k) = key {
        cmd.args(["--master-key", k]);
    }
    cmd.args(more);
    let mut child = cmd.spawn().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started (or hung) instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (status.code().unwrap_or(-1), err)
}

/// Two PostgreSQL nodes given the same key both run a function with a secret, and a new value
/// set through one reaches the next run on the other (its warm instance is not reused); a node
/// with another key, or none, refuses to start; no table of the database, nor `pg_dump`, holds
/// a plaintext value, nor the shared JWT signing key.
#[test]
fn postgres_nodes_share_the_master_key_and_a_wrong_key_refuses_to_start() {
    let db = PgDatabase::create();
    let args = ["--database-url".to_string(), db.url.clone()];
    let a = Server::spawn(&temp_dir("secrets-pg-a"), &args, true);
    let b = Server::spawn(&temp_dir("secrets-pg-b"), &args, true);
    let ca = a.user();
    let cb = Client { base: b.base.clone(), auth: ca.auth.clone() };
    let first = unique("pg-1");
    let (status, body) = ca.post("/api/secrets", &json!({"name": "API_TOKEN", "value": first}));
    assert_eq!(status, 201, "{body}");
    ca.create_function("pg-py", "python", PY_SHA, json!({"secrets": ["API_TOKEN"]}));
    assert_eq!(run_sha(&ca, "pg-py"), json!(sha(&first)), "node A");
    assert_eq!(run_sha(&cb, "pg-py"), json!(sha(&first)), "node B (the token signed by A is good on B too)");
    let second = unique("pg-2");
    let (status, body) = ca.put("/api/secrets/API_TOKEN", &json!({"value": second}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(run_sha(&cb, "pg-py"), json!(sha(&second)), "node B's warm instance held the old value: not reused");
    assert_eq!(run_sha(&ca, "pg-py"), json!(sha(&second)), "node A");

    let wrong = "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=";
    let (code, err) = refused_start(&db.url, Some(wrong));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not the key this database was set up with"), "{err}");
    assert!(!err.contains(TEST_MASTER_KEY) && !err.contains(wrong), "a key in the message: {err}");
    let (code, err) = refused_start(&db.url, None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("every node must be given the same master key"), "{err}");
    let (code, err) = refused_start(&db.url, Some("not-a-key"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("32 bytes"), "{err}");
    // The nodes with the right key are still serving.
    assert_eq!(run_sha(&cb, "pg-py"), json!(sha(&second)));

    // Every row of every table, then a full dump.
    let psql = |sql: &str| {
        let out = Command::new("psql").arg(&db.url).args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().expect("psql runs");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let tables = String::from_utf8(psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).unwrap();
    let tables: Vec<&str> = tables.lines().filter(|t| !t.is_empty()).collect();
    assert!(tables.contains(&"secrets") && tables.contains(&"server_secrets"), "{tables:?}");
    let mut rows = Vec::new();
    for t in &tables {
        rows.extend(psql(&format!("SELECT row_to_json(t)::text FROM \"{t}\" t")));
    }
    let dump = Command::new("pg_dump").arg(&db.url).output().expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    assert!(dump.stdout.len() > 1000 && rows.len() > 100, "the dump and the rows hold the database");
    for v in [&first, &second] {
        assert_absent(&rows, v, "a table row");
        assert_absent(&dump.stdout, v, "pg_dump");
    }
    let names = String::from_utf8(psql("SELECT name FROM server_secrets ORDER BY name")).unwrap();
    assert_eq!(names.lines().collect::<Vec<_>>(), ["jwt_signing_key.sealed", "master_key_check"], "the JWT key is kept sealed, not in plain text");
    drop((a, b));
}

/// The key id in an envelope (`v1.<id>.<body>`).
fn key_id(envelope: &str) -> String {
    envelope.split('.').nth(1).unwrap_or_else(|| panic!("not an envelope: {envelope}")).to_string()
}

/// `voltrun secrets rotate-master-key` re-seals every secret and the JWT key under a new key
/// while nodes serve: a node holding both keys serves throughout (before, during and after),
/// the key check value changes last, and afterwards a node with the new key alone starts and
/// one with the old key alone refuses.
#[test]
fn rotating_the_master_key_online_reseals_everything_and_moves_the_check_value_last() {
    let db = PgDatabase::create();
    let url_args = ["--database-url".to_string(), db.url.clone()];
    let old_node = Server::spawn(&temp_dir("rotate-old"), &url_args, true);
    let c = old_node.user();
    let values: Vec<String> = (0..5).map(|i| unique(&format!("rot-{i}"))).collect();
    for (i, v) in values.iter().enumerate() {
        let (status, body) = c.post("/api/secrets", &json!({"name": format!("ROT_{i}"), "value": v}));
        assert_eq!(status, 201, "{body}");
    }
    c.create_function("rot", "python", &PY_SHA.replace("API_TOKEN", "ROT_0"), json!({"secrets": ["ROT_0"]}));
    assert_eq!(run_sha(&c, "rot"), json!(sha(&values[0])));
    let psql = |sql: &str| {
        let out = Command::new("psql").arg(&db.url).args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().expect("psql runs");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let old_id = key_id(psql("SELECT value FROM server_secrets WHERE name = 'master_key_check'").trim());

    // Step 1: a node with the new key and the old one as previous (a rolled node).
    let new_key = "bmV3LW1hc3Rlci1rZXktZm9yLXJvdGF0aW9uLXRlc3Q=";
    let mut both = url_args.to_vec();
    both.extend(["--master-key".into(), new_key.into(), "--previous-master-key".into(), TEST_MASTER_KEY.into()]);
    let rolled = Server::spawn(&temp_dir("rotate-rolled"), &both, true);
    let cr = Client { base: rolled.base.clone(), auth: c.auth.clone() };
    assert_eq!(run_sha(&cr, "rot"), json!(sha(&values[0])), "the rolled node opens values sealed under the old key");
    let (status, body) = cr.put("/api/secrets/ROT_1", &json!({"value": format!("{}-new", values[1])}));
    assert_eq!(status, 200, "{body}");
    // A node given a mistyped new key beside the right previous one refuses: every node of
    // the rotation must hold the key the first rolled node brought (it would seal values no
    // other node can open).
    let typo = "dHlwby1tYXN0ZXIta2V5LWZvci1yb3RhdGlvbi10c3Q=";
    let (code, err) = refused_start_with(&db.url, Some(typo), &["--previous-master-key", TEST_MASTER_KEY]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not the key this database was set up with"), "{err}");
    drop(old_node);

    // Step 2: the command, with a batch smaller than the table.
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .args(["secrets", "rotate-master-key", "--database-url", &db.url, "--batch", "2"])
        .env("VOLTRUN_MASTER_KEY", new_key)
        .env("VOLTRUN_PREVIOUS_MASTER_KEY", TEST_MASTER_KEY)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("4 secrets and 1 server values re-encrypted, 1 already under the new key"), "{stdout}");
    assert!(!stdout.contains(new_key) && !stderr.contains(new_key) && !stderr.contains(TEST_MASTER_KEY), "a key was printed");

    // Every envelope and the check value now name the new key.
    let new_id = key_id(psql("SELECT value FROM server_secrets WHERE name = 'master_key_check'").trim());
    assert_ne!(new_id, old_id);
    for envelope in psql("SELECT value FROM secrets UNION ALL SELECT value FROM server_secrets WHERE name <> 'master_key_retired'").lines() {
        assert_eq!(key_id(envelope), new_id, "{envelope}");
    }
    assert_eq!(run_sha(&cr, "rot"), json!(sha(&values[0])), "the rolled node serves throughout");

    // Step 3: the new key alone starts and sees every value (the JWT key moved too: the
    // token from before the rotation still works there); the old key alone refuses.
    let mut new_only = url_args.to_vec();
    new_only.extend(["--master-key".into(), new_key.into()]);
    let fresh = Server::spawn(&temp_dir("rotate-new"), &new_only, true);
    let cf = Client { base: fresh.base.clone(), auth: c.auth.clone() };
    assert_eq!(run_sha(&cf, "rot"), json!(sha(&values[0])));
    let (status, body) = cf.put("/api/functions/rot", &json!({"secrets": ["ROT_1"], "code": PY_SHA.replace("API_TOKEN", "ROT_1")}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(run_sha(&cf, "rot"), json!(sha(&format!("{}-new", values[1]))));
    let (code, err) = refused_start(&db.url, Some(TEST_MASTER_KEY));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not the key this database was set up with"), "{err}");
    // The keys swapped (the retired one as current) refuse too: values sealed under it would
    // be lost to every other node.
    let (code, err) = refused_start_with(&db.url, Some(TEST_MASTER_KEY), &["--previous-master-key", new_key]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("was retired by a rotation"), "{err}");
    // A second run has nothing left to do.
    let again = Command::new(env!("CARGO_BIN_EXE_voltrun"))
        .args(["secrets", "rotate-master-key", "--database-url", &db.url])
        .env("VOLTRUN_MASTER_KEY", new_key)
        .env("VOLTRUN_PREVIOUS_MASTER_KEY", TEST_MASTER_KEY)
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 secrets and 0 server values re-encrypted, 5 already under the new key"));
    drop((rolled, fresh));
}

/// A master key file others can read (a backup restored 0644) or a symlink planted in its
/// place is refused at start with the fix, not used silently.
#[test]
fn a_master_key_file_readable_by_others_or_a_symlink_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("key-perms");
    let mut first = Server::spawn(&dir, &[], false);
    first.stop();
    drop(first);
    let key = dir.join("master.key");
    let refused = |dir: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_voltrun"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(sandbox_args())
            .env_remove("VOLTRUN_MASTER_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = refused(&dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("readable by others (mode 644)") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let elsewhere = dir.with_extension("real.key");
    std::fs::rename(&key, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
    let (code, err) = refused(&dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("master key file"), "{err}");
    let _ = std::fs::remove_file(&elsewhere);
    let _ = std::fs::remove_dir_all(&dir);
}
