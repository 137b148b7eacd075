//! `voltrun-bench`: starts the real server (release build) in each sandbox tier and measures
//! cold starts and warm invocations through HTTP, next to baselines taken in the same run on
//! the same machine (spawning the bare interpreters), so results are ratios, not absolute
//! times from somewhere else. Writes `latest.json` and `latest.md` to `bench/results/` (or
//! `--out DIR`); `--quick` is the small smoke run CI does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

mod custom;
mod egress;
mod lambda;
mod packages;
mod scale;
mod targets;

struct Args {
    server_bin: PathBuf,
    quick: bool,
    out: PathBuf,
    /// Only these sections (all when empty): baselines, throughput, workers, tiers, scale,
    /// retention, egress, packages, custom, lambda.
    only: Vec<String>,
    /// Tiers to measure (`--tiers`; default every tier installed).
    tiers: Vec<String>,
}

impl Args {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn parse_args() -> Result<Args> {
    let mut server_bin = PathBuf::from("target/release/voltrun");
    let mut quick = false;
    let mut out = PathBuf::from("bench/results");
    let mut only = Vec::new();
    let mut tiers = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--server-bin" => server_bin = it.next().context("--server-bin needs a path")?.into(),
            "--quick" => quick = true,
            "--out" => out = it.next().context("--out needs a directory")?.into(),
            "--only" => only.extend(it.next().context("--only needs sections")?.split(',').map(str::to_string)),
            "--tiers" => tiers.extend(it.next().context("--tiers needs tier names")?.split(',').map(str::to_string)),
            other => bail!("unknown argument {other}; use --server-bin PATH, --out DIR, --only SECTION,…, --tiers TIER,… and --quick"),
        }
    }
    Ok(Args { server_bin, quick, out, only, tiers })
}

/// Milliseconds at a percentile (nearest rank) of unsorted samples.
fn pct(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn summary(samples: &[f64]) -> Value {
    json!({"n": samples.len(), "p50_ms": round(pct(samples, 50.0)), "p99_ms": round(pct(samples, 99.0)), "min_ms": round(pct(samples, 0.0))})
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// The real interpreter behind a (possibly shimmed) command.
fn real_interpreter(cmd: &str, probe: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(probe).output().with_context(|| format!("running {cmd}"))?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn spawn_baseline(bin: &str, args: &[&str], n: usize) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = Command::new(bin).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
        if !st.success() {
            bail!("{bin} {args:?} failed");
        }
    }
    Ok(v)
}

/// The master key of every bench node (PostgreSQL nodes must be given one; all share it).
const BENCH_MASTER_KEY: &str = "dm9sdHJ1bi1iZW5jaC1tYXN0ZXIta2V5LTMyYnl0ZXM=";
static NEXT_DIR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Server {
    child: Child,
    base: String,
    dir: PathBuf,
    /// Keeps connections alive between calls, as an SDK or a browser does.
    agent: ureq::Agent,
}

impl Server {
    fn start(bin: &Path, tier: &str) -> Result<Server> {
        Self::start_with(bin, tier, &[])
    }

    fn start_with(bin: &Path, tier: &str, extra: &[&str]) -> Result<Server> {
        let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("voltrun-bench-{}-{tier}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::start_in(bin, tier, dir, extra)
    }

    /// A server on an existing (or new) data directory.
    fn start_in(bin: &Path, tier: &str, dir: PathBuf, extra: &[&str]) -> Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--invoke-rate", "0", "--sandbox", tier]).arg("--data-dir").arg(&dir).args(extra);
        if tier == "process" {
            cmd.arg("--insecure");
        }
        let mut child = cmd.env("VOLTRUN_LOG", "warn").env("VOLTRUN_MASTER_KEY", BENCH_MASTER_KEY).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let base = line.trim().strip_prefix("voltrun listening on ").context("server did not start")?.to_string();
        Ok(Server { child, base, dir, agent: ureq::AgentBuilder::new().build() })
    }

    fn register(&self, tag: &str) -> Result<String> {
        let reg = self.call("POST", "/api/auth/register", None, &json!({"email": format!("bench-{tag}@example.com"), "password": "benchmark-pass", "name": "bench"}))?;
        Ok(reg["token"].as_str().context("token")?.to_string())
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        self.call_on(&self.agent, method, path, token, body)
    }

    /// A call on `agent`: a fresh agent opens a new connection.
    fn call_on(&self, agent: &ureq::Agent, method: &str, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        let mut req = agent.request(method, &format!("{}{path}", self.base)).timeout(Duration::from_secs(60));
        if let Some(t) = token {
            req = req.set("authorization", &format!("Bearer {t}"));
        }
        let resp = match req.send_json(body.clone()) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => bail!("{method} {path}: {code} {}", r.into_string().unwrap_or_default()),
            Err(e) => return Err(e.into()),
        };
        Ok(resp.into_json()?)
    }

    /// The server's resident memory, in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(f64::NAN) / 1024.0
    }

    /// Stops the server (SIGTERM: it stops its instances) and keeps its data directory.
    fn stop_keeping_data(mut self) -> PathBuf {
        self.terminate();
        std::mem::take(&mut self.dir)
    }

    fn terminate(&mut self) {
        // SAFETY: kill takes plain integers; SIGTERM lets the server stop its instances.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const PY_CODE: &str = "def handler(event, context):\n    return event\n";
const NODE_CODE: &str = "exports.handler = async (event) => event;";

/// Unique memory (USS: private pages of every process of the instance) of each idle
/// instance of the server with this pid, by runtime, in MiB.
fn instance_memory(server_pid: u32) -> Value {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mem_path = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())).unwrap_or_default();
    let base = Path::new("/sys/fs/cgroup/memory").join(mem_path.trim_start_matches('/')).join("voltrun");
    let uss = |pid: &str| -> f64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        text.lines().filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:")).filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).sum::<f64>()
            / 1024.0
    };
    let (mut py, mut node) = (Vec::new(), Vec::new());
    let prefix = format!("i{server_pid}-");
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<&str> = procs.lines().collect();
        let total: f64 = pids.iter().map(|p| uss(p)).sum();
        let runtime = pids.iter().map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default()).find(|c| c.contains("bootstrap."));
        match runtime {
            Some(c) if c.contains("bootstrap.py") => py.push(total),
            Some(_) => node.push(total),
            None => {}
        }
    }
    let med = |v: &[f64]| if v.is_empty() { Value::Null } else { json!(round(pct(v, 50.0))) };
    json!({"python_uss_mib_p50": med(&py), "node_uss_mib_p50": med(&node), "python_instances": py.len(), "node_instances": node.len(),
           "counts": "every process of the instance: the outer init, pid 1 and the runtime"})
}

/// First invokes of `n` new functions, `gap` apart: the cold-start latency a client sees.
pub(crate) fn cold_starts(s: &Server, token: &str, rt: &str, code: &str, n: usize, gap: Duration, tag: &str) -> Result<Vec<f64>> {
    let mut cold = Vec::new();
    for i in 0..n {
        std::thread::sleep(gap);
        let name = format!("cold-{tag}-{}-{i}", &rt[..4]);
        s.call("POST", "/api/functions", Some(token), &json!({"name": name, "runtime": rt, "code": code}))?;
        let mut e = Value::Null;
        cold.push(time_ms(|| e = s.call("POST", &format!("/api/functions/{name}/execute"), Some(token), &json!({"i": i})).unwrap_or(Value::Null)));
        if e["status"] != "success" {
            bail!("{rt} cold run failed: {e}");
        }
    }
    Ok(cold)
}

/// Cold starts (first invoke of a new function) with a spare instance ready (new functions
/// arriving a few per second) and without spares, and warm invokes, in one tier.
fn measure_tier(bin: &Path, tier: &str, cold_n: usize, warm_n: usize) -> Result<Value> {
    let s = Server::start(bin, tier)?;
    let token = s.register(tier)?;
    let no_spares = Server::start_with(bin, tier, &["--spares", "0"])?;
    let token_ns = no_spares.register(&format!("{tier}-nospare"))?;
    let mut out = json!({});
    for (rt, code) in [("python3.11", PY_CODE), ("nodejs20", NODE_CODE)] {
        // Long enough apart for the spare to be replaced (a runtime start in this tier:
        // about half a second under gVisor).
        let gap = Duration::from_millis(if tier == "gvisor" { 1500 } else { 400 });
        let cold = cold_starts(&s, &token, rt, code, cold_n, gap, "spare")?;
        let cold_fresh = cold_starts(&no_spares, &token_ns, rt, code, cold_n, Duration::from_millis(50), "fresh")?;
        let name = format!("warm-{}", &rt[..4]);
        s.call("POST", "/api/functions", Some(&token), &json!({"name": name, "runtime": rt, "code": code}))?;
        let path = format!("/api/functions/{name}/execute");
        s.call("POST", &path, Some(&token), &json!({}))?;
        let mut warm = Vec::new();
        let mut warm_new_conn = Vec::new();
        for i in 0..warm_n {
            warm.push(time_ms(|| {
                let _ = s.call("POST", &path, Some(&token), &json!({"i": i}));
            }));
            // The same invoke from a client that opens a TCP connection for every request.
            let fresh = ureq::AgentBuilder::new().build();
            warm_new_conn.push(time_ms(|| {
                let _ = s.call_on(&fresh, "POST", &path, Some(&token), &json!({"i": i}));
            }));
        }
        out[rt] = json!({
            "cold_start": summary(&cold),
            "cold_start_without_spares": summary(&cold_fresh),
            "warm_invoke": summary(&warm),
            "warm_invoke_new_connection": summary(&warm_new_conn),
        });
    }
    if tier == "namespace" {
        out["idle_instance_memory"] = instance_memory(s.child.id());
    }
    Ok(out)
}

/// Synchronous invokes per second with `clients` concurrent connections (wrk), every
/// execution stored; also checks the stored count afterwards.
fn throughput(bin: &Path, tier: &str, clients: usize, seconds: u64) -> Result<Value> {
    let s = Server::start_with(bin, tier, &["--function-concurrency", "4", "--function-queue", "10000"])?;
    let token = s.register("tp")?;
    s.call("POST", "/api/functions", Some(&token), &json!({"name": "tp", "runtime": "python3.11", "code": PY_CODE}))?;
    s.call("POST", "/api/functions/tp/execute", Some(&token), &json!({}))?;
    let (rps, non2xx) = wrk_invoke(&s, &token, "tp", clients, seconds)?;
    let stats = s.call("GET", "/api/dashboard", Some(&token), &json!(null)).unwrap_or(Value::Null);
    Ok(json!({"clients": clients, "seconds": seconds, "invokes_per_s": round(rps), "non_2xx": non2xx, "stored_executions": stats["executions_total"]}))
}

/// Sustained synchronous load in three equal rounds under a per-function retention of `keep`
/// runs (issue 12, item 11): invokes/s and the database's size after each round, once a
/// retention pass (every 5 s) and a checkpoint have run. The file stops growing after the
/// first round when retention keeps up.
fn retention(bin: &Path, seconds: u64, keep: u64) -> Result<Value> {
    let keep_arg = keep.to_string();
    let s = Server::start_with(bin, "namespace", &["--function-concurrency", "4", "--function-queue", "10000", "--retention-per-function", &keep_arg])?;
    let token = s.register("retention")?;
    s.call("POST", "/api/functions", Some(&token), &json!({"name": "kept", "runtime": "python3.11", "code": PY_CODE}))?;
    s.call("POST", "/api/functions/kept/execute", Some(&token), &json!({}))?;
    let mib = |f: &str| round(std::fs::metadata(s.dir.join(f)).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0);
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let (rps, non2xx) = wrk_invoke(&s, &token, "kept", 32, seconds)?;
        std::thread::sleep(Duration::from_secs(7));
        let out = Command::new("python3")
            .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM executions').fetchone()[0])"])
            .arg(s.dir.join("voltrun.db"))
            .output()?;
        let stored: i64 = String::from_utf8(out.stdout)?.trim().parse().context("counting stored executions")?;
        rounds.push(json!({"invokes_per_s": round(rps), "non_2xx": non2xx, "stored": stored, "db_mib": mib("voltrun.db"), "wal_mib": mib("voltrun.db-wal")}));
    }
    let invoked = s.call("GET", "/api/dashboard", Some(&token), &Value::Null)?["executions_total"].clone();
    Ok(json!({"retention_per_function": keep, "clients": 32, "seconds_per_round": seconds, "rounds": rounds, "invocations": invoked}))
}

/// Invokes per second and non-2xx answers of `clients` wrk connections invoking one function
/// for `seconds`.
fn wrk_invoke(s: &Server, token: &str, function: &str, clients: usize, seconds: u64) -> Result<(f64, u64)> {
    let w = targets::wrk(s, token, function, 2, clients, seconds)?;
    Ok((w.rps, w.non2xx))
}

/// Async throughput through PostgreSQL with `workers` worker processes: a serve node that
/// only enqueues fills the queue, then the workers start; time until every run finished.
fn workers_run(bin: &Path, pg: &str, workers: usize, runs: usize) -> Result<f64> {
    let db = format!("voltrun_bench_{}_{workers}", std::process::id());
    let admin = |sql: &str| Command::new("psql").arg(pg).args(["-q", "-c", sql]).status();
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    admin(&format!("CREATE DATABASE {db}"))?;
    let url = format!("{}/{db}", pg.rsplit_once('/').context("pg url")?.0);
    let s = Server::start_with(bin, "namespace", &["--database-url", &url, "--async-concurrency", "0"])?;
    let token = s.register("workers")?;
    s.call(
        "POST",
        "/api/functions",
        Some(&token),
        &json!({"name": "io", "runtime": "python3.11", "code": "import time\ndef handler(e, c):\n    time.sleep(0.05)\n    return e\n"}),
    )?;
    // The queue is filled first; the clock starts when the workers do, so the figure is the
    // workers' drain rate, not the enqueue rate.
    for i in 0..runs {
        s.call("POST", "/api/functions/io/execute?async=true", Some(&token), &json!({"i": i}))?;
    }
    let t = Instant::now();
    let mut ws = Vec::new();
    for i in 0..workers {
        let dir = std::env::temp_dir().join(format!("voltrun-bench-worker-{}-{i}", std::process::id()));
        let mut c = Command::new(bin)
            .args(["worker", "--database-url", &url, "--async-concurrency", "8", "--no-scheduler", "--data-dir"])
            .arg(&dir)
            .env("VOLTRUN_MASTER_KEY", BENCH_MASTER_KEY)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(c.stdout.take().context("stdout")?).read_line(&mut line)?;
        ws.push((c, dir));
    }
    loop {
        let d = s.call("GET", "/api/dashboard", Some(&token), &json!(null))?;
        if d["last_24h"]["success"].as_i64().unwrap_or(0) + d["last_24h"]["failed"].as_i64().unwrap_or(0) >= runs as i64 {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("async runs did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rate = runs as f64 / t.elapsed().as_secs_f64();
    for (mut c, dir) in ws {
        // SAFETY: kill takes plain integers.
        unsafe { libc_kill(c.id() as i32, 15) };
        let _ = c.wait();
        let _ = std::fs::remove_dir_all(dir);
    }
    drop(s);
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    Ok(round(rate))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (base_n, cold_n, warm_n) = if args.quick { (5, 3, 20) } else { (40, 25, 300) };
    let python = real_interpreter("python3", &["-c", "import sys; print(sys.executable)"])?;
    let node = real_interpreter("node", &["-p", "process.execPath"])?;
    let py_base = spawn_baseline(&python, &["-c", "pass"], base_n)?;
    let node_base = spawn_baseline(&node, &["-e", "0"], base_n)?;
    let tp_seconds = if args.quick { 2 } else { 10 };
    let skipped = || json!("not run (--only)");
    let tp = if args.runs("throughput") {
        eprintln!("measuring throughput…");
        throughput(&args.server_bin, "namespace", 32, tp_seconds)?
    } else {
        skipped()
    };
    let workers = match std::env::var("VOLTRUN_BENCH_PG_URL") {
        _ if !args.runs("workers") => skipped(),
        Ok(pg) => {
            eprintln!("measuring async throughput with 1, 2 and 4 workers on PostgreSQL…");
            let runs = if args.quick { 40 } else { 800 };
            let one = workers_run(&args.server_bin, &pg, 1, runs)?;
            let two = workers_run(&args.server_bin, &pg, 2, runs)?;
            let four = workers_run(&args.server_bin, &pg, 4, runs)?;
            json!({"runs": runs, "function": "python, sleeps 50 ms", "one_worker_runs_per_s": one, "two_workers_runs_per_s": two, "four_workers_runs_per_s": four,
                   "ratio": round(two / one), "ratio_four": round(four / one)})
        }
        Err(_) => json!("skipped: VOLTRUN_BENCH_PG_URL not set (bench/run sets it)"),
    };
    let retention = if args.runs("retention") {
        eprintln!("measuring retention under sustained load…");
        if args.quick {
            retention(&args.server_bin, 2, 1000)?
        } else {
            retention(&args.server_bin, 10, 10_000)?
        }
    } else {
        skipped()
    };
    let mut tiers = json!({});
    // The OCI tiers when their runtimes are installed (bench/run installs them).
    let installed = |bin: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()));
    let names: Vec<&str> = [("namespace", None), ("container", Some("runc")), ("gvisor", Some("runsc")), ("process", None)]
        .into_iter()
        .filter(|(_, bin)| bin.is_none_or(installed))
        .filter(|(tier, _)| args.tiers.is_empty() || args.tiers.iter().any(|t| t == tier))
        .map(|(tier, _)| tier)
        .collect();
    for &tier in names.iter().filter(|_| args.runs("tiers")) {
        eprintln!("measuring the {tier} tier…");
        tiers[tier] = measure_tier(&args.server_bin, tier, cold_n, warm_n)?;
    }
    let mut targets_r = json!({});
    for &tier in names.iter().filter(|t| **t != "process" && args.runs("targets")) {
        eprintln!("measuring issue 19's targets in the {tier} tier…");
        targets_r[tier] = targets::measure(&args.server_bin, tier, args.quick).unwrap_or_else(|e| json!({"error": e.to_string()}));
        eprintln!("{}", targets_r[tier]);
    }
    let mut egress_r = json!({});
    for &tier in names.iter().filter(|t| **t != "process" && args.runs("egress")) {
        eprintln!("measuring egress in the {tier} tier…");
        egress_r[tier] = egress::measure(&args.server_bin, tier, cold_n).unwrap_or_else(|e| json!({"error": e.to_string()}));
        eprintln!("{}", egress_r[tier]);
    }
    let scale = if args.runs("scale") {
        eprintln!("measuring scale: deployed functions, server memory, a million stored executions…");
        scale::measure(&args.server_bin, if args.quick { &scale::QUICK } else { &scale::FULL })?
    } else {
        skipped()
    };
    let packages_r = if args.runs("packages") {
        eprintln!("measuring packages: cache-hit deploys and the first invoke of a numpy function…");
        packages::measure(&args.server_bin, args.quick)?
    } else {
        skipped()
    };
    let mut custom_r = json!({});
    if args.runs("custom") {
        eprintln!("measuring custom runtimes (building the lambda_runtime function)…");
        match custom::rust_function() {
            Ok(rust_fn) => {
                for &tier in names.iter().filter(|t| **t != "process") {
                    eprintln!("measuring custom runtimes in the {tier} tier…");
                    custom_r[tier] = custom::measure(&args.server_bin, tier, cold_n, warm_n, &rust_fn).unwrap_or_else(|e| json!({"error": e.to_string()}));
                }
            }
            Err(e) => custom_r = json!(e.to_string()),
        }
    }
    let lambda_r = if args.runs("lambda") {
        eprintln!("measuring the Lambda API's warm Invoke against the native execute…");
        lambda::measure(&args.server_bin, warm_n)?
    } else {
        skipped()
    };
    let p = |v: &Value| v["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let py_b = pct(&py_base, 50.0);
    let node_b = pct(&node_base, 50.0);
    let ns = &tiers["namespace"];
    let spawn_rate = machine_cpus() as f64 * 1000.0 / py_b;
    let ratios = json!({
        "namespace_sync_throughput_vs_python3_spawn_per_run": round(tp["invokes_per_s"].as_f64().unwrap_or(0.0) / spawn_rate),
        "namespace_python_cold_vs_python3_spawn": round(p(&ns["python3.11"]["cold_start"]) / py_b),
        "namespace_python_cold_without_spares_vs_python3_spawn": round(p(&ns["python3.11"]["cold_start_without_spares"]) / py_b),
        "namespace_node_cold_without_spares_vs_node_spawn": round(p(&ns["nodejs20"]["cold_start_without_spares"]) / node_b),
        "namespace_node_cold_vs_node_spawn": round(p(&ns["nodejs20"]["cold_start"]) / node_b),
        "namespace_python_warm_vs_python3_spawn": round(p(&ns["python3.11"]["warm_invoke"]) / py_b),
        "namespace_node_warm_vs_node_spawn": round(p(&ns["nodejs20"]["warm_invoke"]) / node_b),
        "lambda_invoke_warm_vs_native_execute_warm": lambda_r["lambda_vs_native_p50"].clone(),
    });
    let machine = json!({
        "cpus": machine_cpus(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "python": python, "node": node,
        "date": String::from_utf8(Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output()?.stdout)?.trim(),
        "quick": args.quick,
    });
    let report = json!({
        "machine": machine,
        "baselines": {"python3 -c pass (spawn)": summary(&py_base), "node -e 0 (spawn)": summary(&node_base)},
        "tiers": tiers,
        "targets": targets_r,
        "throughput": tp,
        "workers": workers,
        "scale": scale,
        "retention": retention,
        "egress": egress_r,
        "packages": packages_r,
        "custom_runtimes": custom_r,
        "lambda": lambda_r,
        "ratios": ratios,
    });
    let dir = args.out.as_path();
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("latest.json"), serde_json::to_string_pretty(&report)?)?;
    let md = markdown(&report);
    std::fs::write(dir.join("latest.md"), &md)?;
    println!("{md}");
    Ok(())
}

fn machine_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    s.push_str(&format!(
        "Machine: {} CPUs, kernel {}, {} — {}{}\n\n",
        m["cpus"],
        m["kernel"].as_str().unwrap_or(""),
        m["date"].as_str().unwrap_or(""),
        "client on the same host",
        if m["quick"] == true { " (quick run)" } else { "" }
    ));
    s.push_str("| what | n | p50 ms | p99 ms |\n|---|---|---|---|\n");
    for (k, v) in r["baselines"].as_object().expect("object") {
        s.push_str(&format!("| baseline: {k} | {} | {} | {} |\n", v["n"], v["p50_ms"], v["p99_ms"]));
    }
    for (tier, rts) in r["tiers"].as_object().into_iter().flatten() {
        for (rt, v) in rts.as_object().into_iter().flatten() {
            if rt == "idle_instance_memory" {
                s.push_str(&format!("| {tier} idle instance unique memory (MiB, p50) | python {} / node {} | | |\n", v["python_uss_mib_p50"], v["node_uss_mib_p50"]));
                continue;
            }
            for kind in ["cold_start", "cold_start_without_spares", "warm_invoke", "warm_invoke_new_connection"] {
                let x = &v[kind];
                s.push_str(&format!("| {tier} {rt} {} (HTTP) | {} | {} | {} |\n", kind.replace('_', " "), x["n"], x["p50_ms"], x["p99_ms"]));
            }
        }
    }
    let tp = &r["throughput"];
    if tp.is_object() {
        s.push_str(&format!(
            "\nSync throughput (namespace tier, python, {} clients, {} s, wrk): **{} invokes/s**, non-2xx {}, executions stored {}\n",
            tp["clients"], tp["seconds"], tp["invokes_per_s"], tp["non_2xx"], tp["stored_executions"]
        ));
    }
    s.push_str(&targets::markdown(&r["targets"]));
    s.push_str(&format!("\nAsync on PostgreSQL, 1, 2 and 4 workers: {}\n", r["workers"]));
    s.push_str(&scale::markdown(&r["scale"]));
    let rt = &r["retention"];
    if let Some(rounds) = rt["rounds"].as_array() {
        s.push_str(&format!(
            "\nRetention ({} runs kept per function, {} clients, three rounds of {} s):\n\n| round | invokes/s | stored | database MiB | WAL MiB |\n|---|---|---|---|---|\n",
            rt["retention_per_function"], rt["clients"], rt["seconds_per_round"]
        ));
        for (i, x) in rounds.iter().enumerate() {
            s.push_str(&format!("| {} | {} | {} | {} | {} |\n", i + 1, x["invokes_per_s"], x["stored"], x["db_mib"], x["wal_mib"]));
        }
    }
    s.push_str(&egress::markdown(&r["egress"]));
    s.push_str(&packages::markdown(&r["packages"]));
    s.push_str(&custom::markdown(&r["custom_runtimes"]));
    let l = &r["lambda"];
    if l.is_object() {
        s.push_str(&format!(
            "\nLambda API (namespace, python, warm, keep-alive, interleaved): Invoke p50 {} ms / p99 {} ms vs native execute p50 {} ms / p99 {} ms with an access token: **{}×** (target ≤ 1.2); with a vr_ API key p50 {} ms: {}×\n",
            l["lambda_invoke_warm"]["p50_ms"], l["lambda_invoke_warm"]["p99_ms"], l["native_execute_warm"]["p50_ms"], l["native_execute_warm"]["p99_ms"], l["lambda_vs_native_p50"],
            l["native_execute_warm_api_key"]["p50_ms"], l["lambda_vs_native_api_key_p50"]
        ));
    }
    s.push_str("\n| ratio (p50) | value |\n|---|---|\n");
    for (k, v) in r["ratios"].as_object().expect("object") {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s
}
