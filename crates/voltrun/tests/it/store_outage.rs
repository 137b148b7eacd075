//! A database outage under load (issue 13): a server on a PostgreSQL server of this test's
//! own answers 503 (with `Retry-After`), never 500 and never a hang, while PostgreSQL is
//! down, and recovers when it is back, with nothing it acknowledged lost.
//!
//! Always runs, whatever `VOLTRUN_TEST_DATABASE` says: it needs only Debian's PostgreSQL
//! binaries (scripts/pg-up installs them) and fails, never skips, without them. It never
//! touches the shared server of the other tests: its server has its own data directory, port
//! and socket directory, and is stopped with `pg_ctl stop -m immediate`, as a crash would.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// Threads putting load on the server.
const THREADS: usize = 4;
/// Answers each thread collects before PostgreSQL is stopped, after it is back, and (at
/// least) while it is down.
const BEFORE: usize = 10;
const DURING: usize = 2;
const AFTER: usize = 5;
/// Requests one thread may send in all: the loop is bounded even if a phase never ends.
const MAX_REQUESTS: usize = 400;
/// A client gives up on a request after this long; the server must answer well within it
/// (an outage costs a request at most the pool's 10 s acquire timeout, twice when it waits
/// behind a group commit that met the same outage).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

/// A PostgreSQL server of this test's own.
struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// initdb and start a new server on a free loopback port.
    fn start() -> OwnPostgres {
        let bin = pg_bin_dir();
        let dir = temp_dir("pg");
        if is_root() {
            // initdb refuses to run as root: the server runs as Debian's `postgres` user.
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().expect("chown runs");
            assert!(st.success(), "chown of {}", dir.display());
        }
        let port = free_port();
        let pg = OwnPostgres { bin, dir, port };
        pg.run("initdb", &["-D", &pg.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]);
        pg.pg_ctl_start();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when we are root), asserting success.
    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(&self.dir).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        assert!(out.status.success(), "{program} {args:?}: {}\n{}\nserver log:\n{log}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server (again) and waits until it accepts connections (`-w`, bounded by `-t`).
    fn pg_ctl_start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60", self.port, self.dir.display());
        let log = self.dir.join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "-t", "120", "start"]);
    }

    /// Stops the server at once: every backend is killed, as in a crash.
    fn stop_immediate(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "-t", "60", "stop"]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // Stopped already, when the test ended between a stop and a start: nothing to do.
        let _ = cmd.args(["-D", &data, "-m", "immediate", "-w", "-t", "60", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The newest installed PostgreSQL's `bin` directory (Debian: /usr/lib/postgresql/N/bin).
fn pg_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("pg_ctl").exists() && bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).expect("no PostgreSQL under /usr/lib/postgresql/*/bin: run scripts/pg-up, which installs Debian's postgresql")
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Prints the end of the server's log when the test fails (dropped before the server, which
/// removes the file).
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" INFO ")).collect();
            eprintln!("server log (warnings and errors, last 60):\n{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
    }
}

/// One answer the load got.
#[derive(Debug)]
struct Answer {
    sent: Instant,
    answered: Instant,
    path: String,
    /// The status, or why there was none (a timeout is a hang).
    status: Result<u16, String>,
    retry_after: Option<String>,
    /// The execution's id, on a 200 or 202.
    id: Option<String>,
    /// The execution's status in the answer, on a 200 or 202.
    exec_status: Option<String>,
}

fn send(base: &str, token: &str, path: &str) -> Answer {
    let sent = Instant::now();
    let r = ureq::post(&format!("{base}{path}")).timeout(CLIENT_TIMEOUT).set("authorization", token).send_json(json!({"n": 1}));
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Answer { sent, answered: Instant::now(), path: path.into(), status: Err(e.to_string()), retry_after: None, id: None, exec_status: None },
    };
    let status = resp.status();
    let retry_after = resp.header("retry-after").map(str::to_string);
    let body: Value = resp.into_json().unwrap_or(Value::Null);
    let acked = status == 200 || status == 202;
    Answer {
        sent,
        answered: Instant::now(),
        path: path.into(),
        status: Ok(status),
        retry_after,
        id: acked.then(|| body["id"].as_str().unwrap_or_default().to_string()),
        exec_status: acked.then(|| body["status"].as_str().unwrap_or_default().to_string()),
    }
}

/// Regression (issue 13): a lost PostgreSQL connection on the hot path was a 500 (the
/// writer turned sqlx's error into a `Protocol` one); every answer of the outage is now a
/// 503 with `Retry-After`, the server recovers when PostgreSQL returns, and every execution
/// it acknowledged (200 or 202) is stored.
#[test]
fn postgres_stopped_under_load_is_503_and_the_server_recovers() {
    // Declared first, dropped last: the server goes before its database.
    let pg = OwnPostgres::start();
    let server = Server::spawn(&temp_dir("outage"), &["--database-url".to_string(), pg.url(), "--invoke-rate".to_string(), "0".to_string()], true);
    let _log = LogOnPanic(server.data_dir.with_extension("stderr.log"));
    let c = server.user();
    c.create_function("echo", "node", "exports.handler = async (event) => ({ got: event.n });", json!({}));
    assert_eq!(c.invoke("echo", &json!({"n": 1}))["output"], json!({"got": 1}));
    let token = c.auth.clone().expect("a logged-in client").1;

    let done = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<Vec<Answer>>>> = Arc::new(Mutex::new((0..THREADS).map(|_| Vec::new()).collect()));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (base, token, done, answers) = (server.base.clone(), token.clone(), done.clone(), answers.clone());
            std::thread::spawn(move || {
                for i in 0..MAX_REQUESTS {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    // Alternately synchronous and queued: both write through the writer.
                    let path = if (i + t) % 2 == 0 { "/api/functions/echo/execute" } else { "/api/functions/echo/execute?async=true" };
                    let a = send(&base, &token, path);
                    answers.lock().unwrap()[t].push(a);
                }
            })
        })
        .collect();

    // Waits until every thread has `n` answers sent after `since` (or a bound passes).
    let wait_for = |n: usize, since: Instant, what: &str| {
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            let counts: Vec<usize> = answers.lock().unwrap().iter().map(|a| a.iter().filter(|a| a.sent >= since).count()).collect();
            if counts.iter().all(|&k| k >= n) {
                return;
            }
            assert!(Instant::now() < until, "{what}: answers per thread {counts:?}, wanted {n} each");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let start = Instant::now();
    wait_for(BEFORE, start, "before the outage");
    pg.stop_immediate();
    let stopped = Instant::now();
    wait_for(DURING, stopped, "during the outage");
    // /health says so too.
    let health = ureq::get(&format!("{}/health", server.base)).timeout(CLIENT_TIMEOUT).call();
    let health_status = match health {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("/health during the outage: {e}"),
    };
    let restarting = Instant::now();
    pg.pg_ctl_start();
    let restarted = Instant::now();

    // Recovered: some invoke sent after the restart succeeds, then every later one does.
    let until = Instant::now() + Duration::from_secs(120);
    let recovered = loop {
        let first_ok = answers.lock().unwrap().iter().flatten().filter(|a| a.sent >= restarted && a.id.is_some()).map(|a| a.answered).min();
        if let Some(t) = first_ok {
            break t;
        }
        assert!(Instant::now() < until, "no invoke succeeded within 120 s of PostgreSQL's restart");
        std::thread::sleep(Duration::from_millis(50));
    };
    wait_for(AFTER, recovered, "after recovery");
    done.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("a load thread panicked");
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let all: Vec<&Answer> = answers.iter().flatten().collect();

    // Every answer: a status (no hang), and only 200, 202 or 503 (no 500).
    for a in &all {
        let status = a.status.as_ref().unwrap_or_else(|e| panic!("{} sent {:?} after the start got no answer: {e}", a.path, a.sent - start));
        assert!(
            [200, 202, 503].contains(status),
            "{} answered {status} at {:?} (stopped at {:?}, restarted at {:?})",
            a.path,
            a.answered - start,
            stopped - start,
            restarted - start
        );
        if *status == 503 {
            let secs: u64 = a.retry_after.as_deref().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("a 503 without a Retry-After in seconds: {:?}", a.retry_after));
            assert!(secs >= 1, "Retry-After {secs}");
        }
    }
    // Sent while PostgreSQL was down and answered before it came back: 503, every one.
    let during: Vec<&&Answer> = all.iter().filter(|a| a.sent >= stopped && a.answered <= restarting).collect();
    assert!(during.len() >= THREADS * DURING, "{} answers fell within the outage", during.len());
    for a in &during {
        assert_eq!(a.status, Ok(503), "{} during the outage: {a:?}", a.path);
    }
    assert_eq!(health_status, 503, "/health during the outage");
    // After recovery: every invoke succeeds.
    let after: Vec<&&Answer> = all.iter().filter(|a| a.sent >= recovered).collect();
    assert!(after.len() >= THREADS * AFTER);
    for a in &after {
        assert!(a.id.is_some(), "{} after recovery: {a:?}", a.path);
    }

    // Nothing acknowledged is lost: every execution answered 200 or 202 (before, during or
    // after the outage) is stored; a synchronous one as it was answered, a queued one runs.
    let acked: Vec<&&Answer> = all.iter().filter(|a| a.id.is_some()).collect();
    let before_outage = acked.iter().filter(|a| a.answered <= stopped).count();
    assert!(before_outage >= THREADS * BEFORE, "{before_outage} acknowledged before the outage");
    let mut failed_queued = 0;
    for a in &acked {
        let id = a.id.as_deref().unwrap();
        assert!(!id.is_empty(), "{a:?}");
        if a.status == Ok(200) {
            let (status, e) = c.get(&format!("/api/executions/{id}"));
            assert_eq!(status, 200, "execution {id} answered 200 at {:?} is lost: {e}", a.answered - start);
            assert_eq!(e["status"].as_str(), a.exec_status.as_deref(), "{e}");
            assert_eq!(e["output"], json!({"got": 1}), "{e}");
        } else {
            let e = c.wait_done(id, Duration::from_secs(120));
            if e["status"] == "failed" {
                // Only a run its node lost (its lease lapsed while the database was down).
                assert_eq!(e["error"]["type"], "Interrupted", "queued {id}: {e}");
                failed_queued += 1;
            }
        }
    }
    let count = |s: u16| all.iter().filter(|a| a.status == Ok(s)).count();
    eprintln!(
        "store_outage: {} answers: {} x 200, {} x 202, {} x 503 ({} within the outage, {failed_queued} queued runs interrupted); outage {:?}",
        all.len(),
        count(200),
        count(202),
        count(503),
        during.len(),
        restarting - stopped
    );
    drop(server);
    drop(pg);
}
