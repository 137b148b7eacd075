//! Starts the real `voltrun` binary on a free port with its own data dir, and talks to it over
//! HTTP. The server is killed when the handle drops.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory under the system temp dir. Whatever this test process made there
/// (these dirs, the servers' `.stderr.log` beside them, files tests put next to them) is
/// removed when the process exits: source dirs and CLI homes outlive the test that made them
/// and are never removed by hand (scripts/check-leaks found them left behind).
pub fn temp_dir(tag: &str) -> PathBuf {
    static CLEANUP: std::sync::Once = std::sync::Once::new();
    CLEANUP.call_once(|| {
        // SAFETY: `remove_test_dirs` is a plain `extern "C" fn()` that does not unwind
        // (it catches nothing that panics: it only ignores errors).
        unsafe { libc::atexit(remove_test_dirs) };
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("voltrun-it-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes every `voltrun-it-{pid}-*` entry of this process under the temp dir and
/// `/var/tmp` (the build tests' dist dirs), at exit.
extern "C" fn remove_test_dirs() {
    let prefix = format!("voltrun-it-{}-", std::process::id());
    let dist = format!("voltrun-it-dist-{}", std::process::id());
    for dir in [std::env::temp_dir(), PathBuf::from("/var/tmp")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with(&prefix) || name == dist) {
                continue;
            }
            let path = e.path();
            if path.is_dir() && !path.is_symlink() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The sandbox tier under test: `VOLTRUN_TEST_SANDBOX` (default `namespace`, the tier that
/// ships; `process` is the development tier).
pub fn sandbox() -> String {
    std::env::var("VOLTRUN_TEST_SANDBOX").unwrap_or_else(|_| "namespace".into())
}

pub fn sandbox_args() -> Vec<String> {
    let tier = sandbox();
    let mut args = vec!["--sandbox".to_string(), tier.clone()];
    if tier == "process" {
        args.push("--insecure".into());
    }
    args
}

/// The PostgreSQL server of the scale-out tests (`VOLTRUN_TEST_PG_URL`, set by scripts/test
/// from scripts/pg-up). Tests that need it fail, never skip, without it.
pub fn pg_url() -> String {
    std::env::var("VOLTRUN_TEST_PG_URL").expect("VOLTRUN_TEST_PG_URL must name a PostgreSQL server (run scripts/pg-up)")
}

/// The master key every PostgreSQL node of the tests is given (issue 16: a node on PostgreSQL
/// refuses to start without one); SQLite servers generate their own in the data dir.
pub const TEST_MASTER_KEY: &str = "dm9sdHJ1bi10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXM=";

/// A fresh PostgreSQL database on the test server, dropped with the handle.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("voltrun_it_{}_{n}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql(&format!("CREATE DATABASE {name}"));
        let base = pg_url();
        let url = format!("{}/{name}", base.rsplit_once('/').expect("a URL with a database").0);
        PgDatabase { url, name }
    }
}

impl PgDatabase {
    /// The result of one query on this database, as `psql -tA` prints it (trimmed).
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql").arg(&self.url).args(["-tA", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().expect("psql runs");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn psql(sql: &str) {
    let out = Command::new("psql").arg(pg_url()).args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The database the general suite runs on: `VOLTRUN_TEST_DATABASE=postgres` gives each server
/// its own PostgreSQL database; otherwise the server's SQLite file.
fn suite_database() -> Option<PgDatabase> {
    (std::env::var("VOLTRUN_TEST_DATABASE").as_deref() == Ok("postgres")).then(PgDatabase::create)
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    owns_dir: bool,
    db: Option<PgDatabase>,
    /// The server's stdout after its first line.
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// A server on a new data dir with the development sandbox.
    pub fn start() -> Server {
        Self::start_with(&temp_dir("srv"), &[], true)
    }

    /// A server with extra `serve` arguments on `data_dir`.
    pub fn start_with(data_dir: &Path, extra: &[&str], owns_dir: bool) -> Server {
        let db = suite_database();
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(d) = &db {
            args.extend(["--database-url".to_string(), d.url.clone()]);
        }
        let mut s = Self::spawn(data_dir, &args, owns_dir);
        s.db = db;
        s
    }

    /// Starts the binary with `serve` and these arguments (no database chosen for it).
    pub fn spawn(data_dir: &Path, extra: &[String], owns_dir: bool) -> Server {
        Self::spawn_in(&sandbox_args(), data_dir, extra, owns_dir)
    }

    /// As [`Server::spawn`], in the tier `tier_args` choose rather than the suite's.
    pub fn spawn_in(tier_args: &[String], data_dir: &Path, extra: &[String], owns_dir: bool) -> Server {
        Self::spawn_with_env(tier_args, data_dir, extra, owns_dir, &[])
    }

    /// As [`Server::spawn_in`], with these environment variables set for the server.
    pub fn spawn_with_env(tier_args: &[String], data_dir: &Path, extra: &[String], owns_dir: bool, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voltrun"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(tier_args)
            .args(extra)
            .env("VOLTRUN_LOG", "info")
            .envs(env.iter().copied())
            .envs(extra.iter().any(|a| a.starts_with("postgres")).then_some(("VOLTRUN_MASTER_KEY", TEST_MASTER_KEY)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data_dir.with_extension("stderr.log")).unwrap());
        let mut child = cmd.spawn().expect("start voltrun");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("voltrun listening on ") else {
            // How it ended (an exit code, or the signal that killed it) says why it died silently.
            let status = child.wait();
            line = format!("{line}(the server ended: {status:?})");
            let mut err = String::new();
            let _ = std::fs::File::open(data_dir.with_extension("stderr.log")).and_then(|mut f| f.read_to_string(&mut err));
            panic!("server did not start: {line}\n{err}");
        };
        // Keep draining stdout so the server never blocks on it (the lines after the first are kept).
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = stdout.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(l);
            }
        });
        let s = Server { child: Some(child), base: addr.to_string(), data_dir: data_dir.to_path_buf(), owns_dir, db: None, stdout };
        s.wait_healthy();
        s
    }

    /// The rest of the first stdout line after `prefix` (waiting up to 20 s for it).
    pub fn stdout_line(&self, prefix: &str) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.stdout.lock().unwrap().iter().find_map(|l| l.strip_prefix(prefix)) {
                return l.trim().to_string();
            }
            assert!(Instant::now() < until, "no stdout line starting {prefix:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_healthy(&self) {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(r) = ureq::get(&format!("{}/health", self.base)).call() {
                if r.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server never became healthy");
    }

    /// Starts the server again on the same data dir and database (after [`Server::kill9`]).
    pub fn restarted(mut self, extra: &[&str]) -> Server {
        self.kill9();
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(d) = &self.db {
            args.extend(["--database-url".to_string(), d.url.clone()]);
        }
        let mut s = Self::spawn(&self.data_dir, &args, self.owns_dir);
        s.db = self.db.take();
        self.owns_dir = false;
        s
    }

    /// The server process's id (to read its /proc entries).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// SIGKILLs the server (no cleanup, as a crash would).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An unauthenticated client.
    pub fn anon(&self) -> Client {
        Client { base: self.base.clone(), auth: None }
    }

    /// Registers a new user and returns a client logged in as them.
    pub fn user(&self) -> Client {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let email = format!("user{n}-{}@example.com", rand_suffix());
        let (status, body) = self.anon().post("/api/auth/register", &json!({"email": email, "password": "correct horse", "name": "Test"}));
        assert_eq!(status, 201, "{body}");
        Client { base: self.base.clone(), auth: Some(("authorization".into(), format!("Bearer {}", body["token"].as_str().unwrap()))) }
    }
}

fn rand_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

impl Server {
    /// Stops the server as an operator would (SIGTERM), waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("the server did not stop within 20 s of SIGTERM");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        } else {
            // A failed test shows what the server said: its log is removed with the data dir.
            let log = std::fs::read_to_string(self.data_dir.with_extension("stderr.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last {} lines of the server's log ({}) ---", tail.len(), self.data_dir.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill9();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            let log = self.data_dir.with_extension("stderr.log");
            // VOLTRUN_TEST_KEEP_LOGS=DIR keeps every server's log, to look for what a
            // passing suite still logged (warnings under load).
            if let (Some(keep), Some(name)) = (std::env::var_os("VOLTRUN_TEST_KEEP_LOGS"), log.file_name()) {
                let _ = std::fs::create_dir_all(&keep);
                let _ = std::fs::copy(&log, Path::new(&keep).join(name));
            }
            let _ = std::fs::remove_file(&log);
        }
    }
}

/// An HTTP client for one server, with optional credentials.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    /// (header name, value) sent with every request.
    pub auth: Option<(String, String)>,
}

/// A response: status, headers we care about, and the body.
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    /// The body as JSON (panics with the text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Client {
    /// The same client with other credentials.
    pub fn with_header(&self, name: &str, value: &str) -> Client {
        Client { base: self.base.clone(), auth: Some((name.into(), value.into())) }
    }

    /// Any request with a raw body.
    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Resp {
        let mut req = ureq::request(method, &format!("{}{path}", self.base)).timeout(Duration::from_secs(120));
        if let Some((k, v)) = &self.auth {
            req = req.set(k, v);
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let headers = resp.headers_names().into_iter().filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string()))).collect();
        let mut body = Vec::new();
        resp.into_reader().take(64 << 20).read_to_end(&mut body).unwrap();
        Resp { status, body, headers }
    }

    fn json_req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let r = self.raw(method, path, bytes.as_deref(), &[("content-type", "application/json")]);
        let v = if r.body.is_empty() { Value::Null } else { r.json() };
        (r.status, v)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.json_req("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.json_req("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.json_req("PUT", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.json_req("DELETE", path, None)
    }

    /// Creates a function and returns its record.
    pub fn create_function(&self, name: &str, runtime: &str, code: &str, extra: Value) -> Value {
        let mut body = json!({"name": name, "runtime": runtime, "code": code});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (status, f) = self.post("/api/functions", &body);
        assert_eq!(status, 201, "{f}");
        f
    }

    /// Invokes a function synchronously and returns the execution record (asserting 200).
    pub fn invoke(&self, name: &str, event: &Value) -> Value {
        let (status, e) = self.post(&format!("/api/functions/{name}/execute"), event);
        assert_eq!(status, 200, "{e}");
        e
    }

    /// Polls an execution until it is success or failed.
    pub fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let (status, e) = self.get(&format!("/api/executions/{id}"));
            assert_eq!(status, 200, "{e}");
            if e["status"] == "success" || e["status"] == "failed" {
                return e;
            }
            assert!(Instant::now() < until, "execution {id} still {} after {timeout:?}", e["status"]);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Client {
    /// Asserts the dashboard's totals agree with the execution list, walked page by page
    /// (the dashboard reads a per-hour rollup kept by every write that finishes a run).
    pub fn assert_dashboard_matches_executions(&self) {
        let (mut total, mut ok, mut failed) = (0, 0, 0);
        let mut path = "/api/executions?limit=500".to_string();
        loop {
            let (status, page) = self.get(&path);
            assert_eq!(status, 200, "{page}");
            for e in page["items"].as_array().expect("items") {
                total += 1;
                ok += (e["status"] == "success") as i64;
                failed += (e["status"] == "failed") as i64;
            }
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/api/executions?limit=500&cursor={c}"),
                None => break,
            }
        }
        let (status, d) = self.get("/api/dashboard");
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["executions_total"], total, "{d}");
        assert_eq!(d["last_24h"]["invocations"], total, "{d}");
        assert_eq!((&d["last_24h"]["success"], &d["last_24h"]["failed"]), (&serde_json::json!(ok), &serde_json::json!(failed)), "{d}");
        let hourly = d["hourly"].as_array().expect("hourly");
        assert_eq!(hourly.iter().map(|h| h["invocations"].as_i64().unwrap_or(0)).sum::<i64>(), ok + failed, "{d}");
        assert_eq!(hourly.iter().map(|h| h["errors"].as_i64().unwrap_or(0)).sum::<i64>(), failed, "{d}");
    }
}

/// Asserts the uniform error shape and status, returning the code.
pub fn assert_error(status: u16, body: &Value, expected: u16) -> String {
    assert_eq!(status, expected, "{body}");
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {body}"));
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    code.to_string()
}
