//! Issue 19's targets (performance, round two), measured with wrk, a client nobody here wrote,
//! in every tier installed: sequential warm invokes on one kept-alive connection (wrk's own
//! latency distribution), sixteen connections invoking one function, and bursts of twenty new
//! functions created and invoked back to back. Each figure is printed with its target, met or
//! missed; nothing here fails on a timing.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::{pct, round, Server, NODE_CODE, PY_CODE};

/// One wrk run's figures.
pub(crate) struct Wrk {
    pub rps: f64,
    pub non2xx: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `clients` wrk connections on `threads` threads invoking `function` for `seconds`, with
/// wrk's latency distribution.
pub(crate) fn wrk(s: &Server, token: &str, function: &str, threads: usize, clients: usize, seconds: u64) -> Result<Wrk> {
    let script = std::env::temp_dir().join(format!("voltrun-bench-{}-{function}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!("wrk.method = \"POST\"\nwrk.body = \"{{}}\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"),
    )?;
    let out = std::process::Command::new("wrk")
        .args(["--latency", "-t", &threads.to_string(), "-c", &clients.to_string(), "-d", &format!("{seconds}s"), "-s"])
        .arg(&script)
        .arg(format!("{}/api/functions/{function}/execute", s.base))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps: f64 = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok()).with_context(|| format!("wrk output: {text}"))?;
    let non2xx: u64 = text.lines().find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let at = |p: &str| text.lines().find_map(|l| l.trim().strip_prefix(p)).and_then(wrk_ms).with_context(|| format!("wrk latency {p} in: {text}"));
    Ok(Wrk { rps, non2xx, p50_ms: at("50% ")?, p99_ms: at("99% ")? })
}

/// Milliseconds of a wrk duration (`210.00us`, `3.10ms`, `1.02s`).
fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (v.strip_suffix('s')?, 1000.0)
    };
    Some(round(num.trim().parse::<f64>().ok()? * scale))
}

fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "met"
    } else {
        "missed"
    }
}

/// First invokes of `n` new functions created and invoked back to back, no pause between them.
fn burst(s: &Server, token: &str, rt: &str, code: &str, n: usize, tag: &str) -> Result<Vec<f64>> {
    crate::cold_starts(s, token, rt, code, n, Duration::ZERO, &format!("burst-{tag}"))
}

/// A metric's value from `/metrics` (the first series whose line starts with `series`).
fn metric(s: &Server, token: &str, series: &str) -> Value {
    let text = s.agent.get(&format!("{}/metrics", s.base)).set("authorization", &format!("Bearer {token}")).call().ok().and_then(|r| r.into_string().ok()).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse::<f64>().ok()).map_or(Value::Null, |v| json!(v))
}

/// Every target of issue 19 in one tier.
pub(crate) fn measure(bin: &Path, tier: &str, quick: bool) -> Result<Value> {
    let seconds = if quick { 1 } else { 5 };
    let burst_n = if quick { 4 } else { 20 };
    let mut out = json!({});
    // Sequential warm invokes: one wrk connection (kept alive), one function per runtime.
    {
        let s = Server::start(bin, tier)?;
        let token = s.register(&format!("seq-{tier}"))?;
        for (rt, code) in [("python3.11", PY_CODE), ("nodejs20", NODE_CODE)] {
            let name = format!("seq-{}", &rt[..4]);
            s.call("POST", "/api/functions", Some(&token), &json!({"name": name, "runtime": rt, "code": code}))?;
            s.call("POST", &format!("/api/functions/{name}/execute"), Some(&token), &json!({}))?;
            let w = wrk(&s, &token, &name, 1, 1, seconds)?;
            out["sequential_warm"][rt] = json!({
                "invokes_per_s": round(w.rps), "non_2xx": w.non2xx, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
                "target": "p50 ≤ 0.25 ms, p99 ≤ 1 ms",
                "p50": verdict(w.p50_ms, 0.25), "p99": verdict(w.p99_ms, 1.0),
            });
        }
    }
    // Sixteen connections on one function, at the default per-function concurrency (10) and
    // at one instance per core: which of the two limits makes the tail.
    for (label, extra) in [("default_concurrency", &[][..]), ("concurrency_2", &["--function-concurrency", "2", "--function-queue", "1000"][..])] {
        let s = Server::start_with(bin, tier, extra)?;
        let token = s.register(&format!("c16-{tier}"))?;
        s.call("POST", "/api/functions", Some(&token), &json!({"name": "c16", "runtime": "python3.11", "code": PY_CODE}))?;
        s.call("POST", "/api/functions/c16/execute", Some(&token), &json!({}))?;
        // A short first round starts the instances the load needs; the measured round runs on them.
        wrk(&s, &token, "c16", 2, 16, 1)?;
        let w = wrk(&s, &token, "c16", 2, 16, seconds * 2)?;
        out["sixteen_connections"][label] = json!({
            "invokes_per_s": round(w.rps), "non_2xx": w.non2xx, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
            "instances": metric(&s, &token, "voltrun_instances "),
            "target": "≥ 10,000 invokes/s, p99 ≤ 25 ms",
            "throughput": if w.rps >= 10_000.0 { "met" } else { "missed" }, "p99": verdict(w.p99_ms, 25.0),
        });
    }
    // Bursts of new functions: created and invoked back to back, twice (the second burst shows
    // what a pool that adapted to the first gives).
    {
        let s = Server::start(bin, tier)?;
        let token = s.register(&format!("burst-{tier}"))?;
        for (rt, code, target) in [("python3.11", PY_CODE, 20.0), ("nodejs20", NODE_CODE, 30.0)] {
            // The pool's first spares are started at boot and on the runtime's first use.
            s.call("POST", "/api/functions", Some(&token), &json!({"name": format!("first-{}", &rt[..4]), "runtime": rt, "code": code}))?;
            s.call("POST", &format!("/api/functions/first-{}/execute", &rt[..4]), Some(&token), &json!({}))?;
            std::thread::sleep(Duration::from_secs(if tier == "gvisor" { 3 } else { 1 }));
            let first = burst(&s, &token, rt, code, burst_n, "a")?;
            std::thread::sleep(Duration::from_secs(if tier == "gvisor" { 10 } else { 3 }));
            let second = burst(&s, &token, rt, code, burst_n, "b")?;
            let max = |v: &[f64]| round(v.iter().cloned().fold(0.0, f64::max));
            out["bursts"][rt] = json!({
                "functions": burst_n,
                "first": {"p50_ms": round(pct(&first, 50.0)), "max_ms": max(&first), "over_target": first.iter().filter(|&&x| x > target).count()},
                "second": {"p50_ms": round(pct(&second, 50.0)), "max_ms": max(&second), "over_target": second.iter().filter(|&&x| x > target).count()},
                "target": format!("max ≤ {target} ms"),
                "verdict_first": verdict(max(&first), target), "verdict_second": verdict(max(&second), target),
            });
        }
        out["bursts"]["spares_after"] = json!({
            "ready": metric(&s, &token, "voltrun_spare_instances "),
            "target": metric(&s, &token, "voltrun_spare_target "),
        });
    }
    Ok(out)
}

/// The targets' table for latest.md.
pub(crate) fn markdown(r: &Value) -> String {
    let Some(tiers) = r.as_object() else { return String::new() };
    let mut s = String::from("\nIssue 19 targets (wrk; sequential = one kept-alive connection; 16 connections on one function; bursts of new functions created and invoked back to back):\n\n| tier | sequential warm python p50/p99 ms | node p50/p99 ms | 16 conns, default concurrency: invokes/s, p99 ms | 16 conns, concurrency 2 | burst python max ms (1st / 2nd) | burst node max ms (1st / 2nd) |\n|---|---|---|---|---|---|---|\n");
    for (tier, t) in tiers {
        if let Some(e) = t.get("error") {
            s.push_str(&format!("| {tier} | error: {e} | | | | | |\n"));
            continue;
        }
        let v = |x: &Value| x.as_str().unwrap_or("?").to_string();
        let sq = |rt: &str| {
            let x = &t["sequential_warm"][rt];
            format!("{} / {} ({}, {})", x["p50_ms"], x["p99_ms"], v(&x["p50"]), v(&x["p99"]))
        };
        let c = |l: &str| {
            let x = &t["sixteen_connections"][l];
            format!("{} /s, {} ({}, {})", x["invokes_per_s"], x["p99_ms"], v(&x["throughput"]), v(&x["p99"]))
        };
        let b = |rt: &str| {
            let x = &t["bursts"][rt];
            format!("{} / {} ({} / {})", x["first"]["max_ms"], x["second"]["max_ms"], v(&x["verdict_first"]), v(&x["verdict_second"]))
        };
        s.push_str(&format!(
            "| {tier} | {} | {} | {} | {} | {} | {} |\n",
            sq("python3.11"),
            sq("nodejs20"),
            c("default_concurrency"),
            c("concurrency_2"),
            b("python3.11"),
            b("nodejs20")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::wrk_ms;

    #[test]
    fn wrk_durations_read_in_milliseconds() {
        assert_eq!(wrk_ms("210.00us"), Some(0.21));
        assert_eq!(wrk_ms(" 3.10ms"), Some(3.1));
        assert_eq!(wrk_ms("1.02s"), Some(1020.0));
        assert_eq!(wrk_ms("2.00m"), Some(120000.0));
        assert_eq!(wrk_ms("junk"), None);
    }
}
