//! Custom runtimes (issue 18), per isolating tier: the first invoke of a new `provided`
//! function with a spare ready (a Rust `lambda_runtime` binary, and AWS's bash + curl tutorial
//! bootstrap), and warm invokes of the Rust function next to the built-in Python runtime's on
//! the same server (the issue's bar: Rust warm ≤ Python warm). The Rust function is the test
//! fixture (`crates/voltrun/tests/fixtures/lambda-rust`), built once into
//! `target/custom-runtime-rust` (shared with the integration tests).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::{round, summary, time_ms, Server, PY_CODE};

const TUTORIAL_BOOTSTRAP: &str = r#"#!/bin/bash
set -euo pipefail
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"
while true; do
  HEADERS="$(mktemp)"
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")
  curl -sS -o /dev/null "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response" -d "$RESPONSE"
done
"#;
const TUTORIAL_FUNCTION: &str = "function handler () {\n  echo \"$1\"\n}\n";

fn zip_of(entries: &[(&str, u32, &[u8])]) -> Result<String> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, mode, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default().unix_permissions(*mode))?;
        w.write_all(data)?;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(w.finish()?.into_inner()))
}

/// The Rust `lambda_runtime` function: built (release) unless already there.
pub fn rust_function() -> Result<PathBuf> {
    let manifest = Path::new("crates/voltrun/tests/fixtures/lambda-rust/Cargo.toml");
    let target = Path::new("target/custom-runtime-rust/target");
    let st = Command::new("cargo").args(["build", "--release", "--quiet", "--manifest-path"]).arg(manifest).env("CARGO_TARGET_DIR", target).status().context("running cargo")?;
    if !st.success() {
        bail!("building the lambda_runtime function failed");
    }
    Ok(target.join("release/lambda-rust-fn"))
}

/// Cold starts of `n` new functions made from `body`, `gap` apart.
fn cold(s: &Server, token: &str, tag: &str, body: &Value, n: usize, gap: Duration) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    for i in 0..n {
        std::thread::sleep(gap);
        let name = format!("{tag}-{i}");
        let mut b = body.clone();
        b["name"] = json!(name);
        s.call("POST", "/api/functions", Some(token), &b)?;
        let mut e = Value::Null;
        v.push(time_ms(|| e = s.call("POST", &format!("/api/functions/{name}/execute"), Some(token), &json!({"i": i})).unwrap_or(Value::Null)));
        if e["status"] != "success" {
            bail!("{tag} cold run failed: {e}");
        }
    }
    Ok(v)
}

fn warm(s: &Server, token: &str, name: &str, n: usize) -> Result<Vec<f64>> {
    let path = format!("/api/functions/{name}/execute");
    let first = s.call("POST", &path, Some(token), &json!({}))?;
    if first["status"] != "success" {
        bail!("{name}: {first}");
    }
    Ok((0..n)
        .map(|i| {
            time_ms(|| {
                let _ = s.call("POST", &path, Some(token), &json!({"i": i}));
            })
        })
        .collect())
}

/// The figures of this section in one tier.
pub fn measure(bin: &Path, tier: &str, cold_n: usize, warm_n: usize, rust_fn: &Path) -> Result<Value> {
    let s = Server::start(bin, tier)?;
    let token = s.register(&format!("custom-{tier}"))?;
    let rust_zip = zip_of(&[("bootstrap", 0o755, &std::fs::read(rust_fn)?)])?;
    let bash_zip = zip_of(&[("bootstrap", 0o755, TUTORIAL_BOOTSTRAP.as_bytes()), ("function.sh", 0o644, TUTORIAL_FUNCTION.as_bytes())])?;
    let rust = json!({"runtime": "provided.al2023", "zip": rust_zip, "handler": "bootstrap"});
    let bash = json!({"runtime": "provided.al2023", "zip": bash_zip, "handler": "function.handler"});
    let gap = Duration::from_millis(if tier == "gvisor" { 1500 } else { 400 });
    let python = json!({"runtime": "python3.11", "code": PY_CODE});
    let rust_cold = cold(&s, &token, "rust-cold", &rust, cold_n, gap)?;
    let bash_cold = cold(&s, &token, "bash-cold", &bash, cold_n, gap)?;
    // The built-in runtime's first invoke, a spare ready, on the same server.
    let py_cold = cold(&s, &token, "py-cold", &python, cold_n, gap)?;
    let mut w = rust.clone();
    w["name"] = json!("rust-warm");
    s.call("POST", "/api/functions", Some(&token), &w)?;
    let mut b = bash.clone();
    b["name"] = json!("bash-warm");
    s.call("POST", "/api/functions", Some(&token), &b)?;
    s.call("POST", "/api/functions", Some(&token), &json!({"name": "py-warm", "runtime": "python3.11", "code": PY_CODE}))?;
    // Interleaved rounds, so drift on a shared machine hits both alike.
    let (mut rw, mut pw, mut bw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        rw.extend(warm(&s, &token, "rust-warm", warm_n / 5)?);
        pw.extend(warm(&s, &token, "py-warm", warm_n / 5)?);
        bw.extend(warm(&s, &token, "bash-warm", (warm_n / 25).max(2))?);
    }
    let p50 = |v: &[f64]| crate::pct(v, 50.0);
    Ok(json!({
        "rust_cold_start": summary(&rust_cold),
        "bash_cold_start": summary(&bash_cold),
        "python_cold_start": summary(&py_cold),
        "rust_warm_invoke": summary(&rw),
        "python_warm_invoke": summary(&pw),
        "bash_warm_invoke": summary(&bw),
        "rust_warm_vs_python_warm_p50": round(p50(&rw) / p50(&pw)),
    }))
}

/// The section of latest.md.
pub fn markdown(r: &Value) -> String {
    let Some(tiers) = r.as_object() else { return format!("\nCustom runtimes: {r}\n") };
    let mut s = String::from(
        "\nCustom runtimes (`provided`; cold = first invoke of a new function, a spare ready; warm = kept-alive connection):\n\n\
         | tier | Rust cold p50 (p99) ms | bash cold p50 (p99) ms | Python (built-in) cold p50 (p99) ms | Rust warm p50 (p99) ms | Python warm p50 (p99) ms | bash warm p50 ms | Rust/Python warm |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (tier, x) in tiers {
        if let Some(e) = x.get("error") {
            s.push_str(&format!("| {tier} | error: {e} | | | | | | |\n"));
            continue;
        }
        let f = |k: &str| format!("{} ({})", x[k]["p50_ms"], x[k]["p99_ms"]);
        s.push_str(&format!(
            "| {tier} | {} | {} | {} | {} | {} | {} | {} |\n",
            f("rust_cold_start"),
            f("bash_cold_start"),
            f("python_cold_start"),
            f("rust_warm_invoke"),
            f("python_warm_invoke"),
            x["bash_warm_invoke"]["p50_ms"],
            x["rust_warm_vs_python_warm_p50"]
        ));
    }
    s
}
