//! Packages and dependency builds (issue 15): a deploy whose dependencies are already in the
//! build cache, end to end (create request to `active`); the first invoke of a function that
//! imports numpy, with a spare ready, next to `python3 -c "import numpy"` from the host on the
//! same files (numpy installed by pip into a scratch dir in this run); and the unique memory of
//! an idle instance of that function. The quick run uses a small pure-Python package instead.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::{instance_memory, pct, round, summary, time_ms, Server};

/// The function: imports its dependency at module level (the import is part of the cold start).
fn handler_code(module: &str) -> String {
    format!("import {module}\n\ndef handler(event, context):\n    return {{'version': {module}.__version__, 'i': event['i']}}\n")
}

/// Polls the function until it leaves `pending` (or a timeout): its final state.
fn wait_active(s: &Server, token: &str, name: &str, timeout: Duration) -> Result<Value> {
    let until = Instant::now() + timeout;
    loop {
        let f = s.call("GET", &format!("/api/functions/{name}"), Some(token), &Value::Null)?;
        if f["state"] != "pending" && f["last_update_status"] != "in_progress" {
            return Ok(f);
        }
        if Instant::now() > until {
            bail!("{name} still pending after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The figures of this section (namespace tier).
pub fn measure(bin: &Path, quick: bool) -> Result<Value> {
    let (requirement, module, n) = if quick { ("six==1.16.0", "six", 3) } else { ("numpy", "numpy", 15) };
    // The baseline: the same package, installed by the host's pip, imported by the host's python.
    let scratch = std::env::temp_dir().join(format!("voltrun-bench-pkg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let pip = Command::new("python3").args(["-m", "pip", "install", "-q", "--no-input", "--disable-pip-version-check", "--target"]).arg(&scratch).arg(requirement).output()?;
    if !pip.status.success() {
        bail!("pip install {requirement} for the baseline: {}", String::from_utf8_lossy(&pip.stderr));
    }
    let import = format!("import {module}");
    let mut baseline = Vec::new();
    for _ in 0..n.max(10) {
        baseline.push(time_ms(|| {
            let _ = Command::new("python3").args(["-c", &import]).env("PYTHONPATH", &scratch).status();
        }));
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let s = Server::start(bin, "namespace")?;
    let token = s.register("packages")?;
    // Every function has the same dependency files: the first builds, the others hit the cache.
    let same = json!({"main.py": handler_code(module), "requirements.txt": format!("{requirement}\n")});
    let t = Instant::now();
    s.call("POST", "/api/functions", Some(&token), &json!({"name": "pkg-first", "runtime": "python3.11", "files": same, "handler": "main.handler"}))?;
    let first = wait_active(&s, &token, "pkg-first", Duration::from_secs(900))?;
    let first_build_ms = t.elapsed().as_secs_f64() * 1e3;
    if first["state"] != "active" {
        bail!("the first build failed: {first}");
    }
    let build = s.call("GET", "/api/functions/pkg-first/build", Some(&token), &Value::Null)?;
    let (mut deploys, mut invokes, mut cached) = (Vec::new(), Vec::new(), 0);
    for i in 0..n {
        // Let the spare be replenished: new functions arrive a few per second.
        std::thread::sleep(Duration::from_millis(400));
        let name = format!("pkg-hit-{i}");
        let mut f = Value::Null;
        deploys.push(time_ms(|| {
            f = s.call("POST", "/api/functions", Some(&token), &json!({"name": name, "runtime": "python3.11", "files": same, "handler": "main.handler"})).unwrap_or(Value::Null);
            if f["state"] == "pending" {
                f = wait_active(&s, &token, &name, Duration::from_secs(120)).unwrap_or(Value::Null);
            }
        }));
        if f["state"] != "active" {
            bail!("a cache-hit deploy did not become active: {f}");
        }
        let b = s.call("GET", &format!("/api/functions/{name}/build"), Some(&token), &Value::Null)?;
        cached += usize::from(b["cached"] == true);
        let mut e = Value::Null;
        invokes.push(time_ms(|| e = s.call("POST", &format!("/api/functions/{name}/execute"), Some(&token), &json!({"i": i})).unwrap_or(Value::Null)));
        if e["status"] != "success" {
            bail!("first invoke failed: {e}");
        }
    }
    if cached != n {
        bail!("{cached} of {n} deploys with the first one's dependencies hit the cache");
    }
    std::thread::sleep(Duration::from_millis(500));
    let memory = instance_memory(s.child.id());
    let b50 = pct(&baseline, 50.0);
    Ok(json!({
        "package": requirement,
        "first_build_ms": round(first_build_ms),
        "first_build_reported_ms": build["duration_ms"],
        "cache_hit_deploy": summary(&deploys),
        "cache_hits": cached,
        "deploys": n,
        "first_invoke_with_spare": summary(&invokes),
        "baseline_python3_import": summary(&baseline),
        "first_invoke_vs_python3_import_p50": round(pct(&invokes, 50.0) / b50),
        "idle_instance_memory": memory,
        "idle_memory_note": "python instances of the server: the warm instances of these functions and one spare",
    }))
}

/// The section of latest.md.
pub fn markdown(r: &Value) -> String {
    if !r.is_object() {
        return format!("\nPackages: {r}\n");
    }
    format!(
        "\nPackages ({}, namespace tier): first build {} ms; cache-hit deploy (create → active) p50 {} ms / p99 {} ms ({} of {} cached); \
         first invoke with a spare p50 {} ms vs `python3 -c \"import …\"` p50 {} ms: **{}×**; idle instance unique memory p50 {} MiB\n",
        r["package"],
        r["first_build_ms"],
        r["cache_hit_deploy"]["p50_ms"],
        r["cache_hit_deploy"]["p99_ms"],
        r["cache_hits"],
        r["deploys"],
        r["first_invoke_with_spare"]["p50_ms"],
        r["baseline_python3_import"]["p50_ms"],
        r["first_invoke_vs_python3_import_p50"],
        r["idle_instance_memory"]["python_uss_mib_p50"],
    )
}
