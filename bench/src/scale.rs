//! Scale behaviour: warm latency and throughput of one function while 1, 10, 100 and 1,000
//! functions are deployed; the server's memory as executions accumulate; and the execution
//! list (`GET /api/executions`, keyset pagination) and dashboard with a million stored
//! executions.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{round, summary, time_ms, wrk_invoke, Server, PY_CODE};

const FAILING: &str = "def handler(event, context):\n    raise ValueError('seeded failure')\n";

pub struct Sizes {
    pub deployed: &'static [usize],
    pub warm_n: usize,
    pub wrk_seconds: u64,
    pub stored: usize,
    pub list_n: usize,
}

pub const FULL: Sizes = Sizes { deployed: &[1, 10, 100, 1000], warm_n: 300, wrk_seconds: 5, stored: 1_000_000, list_n: 50 };
pub const QUICK: Sizes = Sizes { deployed: &[1, 10], warm_n: 20, wrk_seconds: 1, stored: 20_000, list_n: 5 };

pub fn measure(bin: &Path, z: &Sizes) -> Result<Value> {
    // Up to 1,000 deployed functions and a million stored executions: past the default quota
    // and retention (issue 12, item 11), which the measurement must not apply.
    const UNBOUNDED: [&str; 6] = ["--quota-functions", "0", "--retention-per-function", "0", "--retention-per-user", "0"];
    let mut flags = vec!["--function-concurrency", "4", "--function-queue", "10000"];
    flags.extend(UNBOUNDED);
    let s = Server::start_with(bin, "namespace", &flags)?;
    let token = s.register("scale")?;
    let create = |name: &str, code: &str| s.call("POST", "/api/functions", Some(&token), &json!({"name": name, "runtime": "python3.11", "code": code}));
    create("hot", PY_CODE)?;
    s.call("POST", "/api/functions/hot/execute", Some(&token), &json!({}))?;
    let rss_warm = s.rss_mib();
    // The server's memory as executions accumulate: the same load, three times.
    let mut rss_by_load = Vec::new();
    for _ in 0..3 {
        wrk_invoke(&s, &token, "hot", 32, z.wrk_seconds)?;
        let stored = s.call("GET", "/api/dashboard", Some(&token), &Value::Null)?["executions_total"].as_i64().unwrap_or(0);
        rss_by_load.push(json!({"executions_stored": stored, "server_rss_mib": round(s.rss_mib())}));
    }
    let mut deployed = 1;
    let mut by_count = Vec::new();
    let mut rss_after = Vec::new();
    for &n in z.deployed {
        while deployed < n {
            create(&format!("idle-{deployed}"), PY_CODE)?;
            deployed += 1;
        }
        let warm: Vec<f64> = (0..z.warm_n).map(|i| time_ms(|| drop(s.call("POST", "/api/functions/hot/execute", Some(&token), &json!({"i": i}))))).collect();
        let list: Vec<f64> = (0..z.warm_n.min(50)).map(|_| time_ms(|| drop(s.call("GET", "/api/functions?limit=50", Some(&token), &Value::Null)))).collect();
        let (rps, non2xx) = wrk_invoke(&s, &token, "hot", 32, z.wrk_seconds)?;
        let stored = s.call("GET", "/api/dashboard", Some(&token), &Value::Null)?["executions_total"].as_i64().unwrap_or(0);
        rss_after.push(json!({"executions_stored": stored, "server_rss_mib": round(s.rss_mib())}));
        by_count.push(json!({"deployed_functions": n, "warm_invoke": summary(&warm), "list_functions": summary(&list),
                             "invokes_per_s": round(rps), "non_2xx": non2xx}));
    }
    // A failing function, so the stored executions have a second function and status to filter on.
    create("fails", FAILING)?;
    for _ in 0..3 {
        s.call("POST", "/api/functions/fails/execute", Some(&token), &json!({}))?;
    }
    let dir = s.stop_keeping_data();
    let seed_s = seed_executions(&dir.join("voltrun.db"), z.stored)?;
    let s = Server::start_in(bin, "namespace", dir, &UNBOUNDED)?;
    let get = |path: &str| -> Result<Value> { s.call("GET", path, Some(&token), &Value::Null) };
    let first = get("/api/executions?limit=50")?;
    let total = get("/api/dashboard")?["executions_total"].as_i64().unwrap_or(0);
    if total < z.stored as i64 || first["items"].as_array().map_or(0, Vec::len) != 50 {
        bail!("expected {} stored executions and a full first page, got {total}", z.stored);
    }
    // A cursor from the middle of the list: the id of the row half-way down.
    let mid = middle_cursor(&dir_db(&s), z.stored)?;
    let paths = [
        ("first_page", "/api/executions?limit=50".to_string()),
        ("page_in_the_middle", format!("/api/executions?limit=50&cursor={mid}")),
        ("one_function", "/api/executions?limit=50&function_id=fails".to_string()),
        ("status_failed", "/api/executions?limit=50&status=failed".to_string()),
        ("trigger_schedule_none_stored", "/api/executions?limit=50&trigger=schedule".to_string()),
        ("one_execution", format!("/api/executions/{}", first["items"][0]["id"].as_str().context("id")?)),
        ("dashboard", "/api/dashboard".to_string()),
    ];
    let mut list = json!({});
    for (what, path) in &paths {
        let v: Vec<f64> = (0..z.list_n).map(|_| time_ms(|| drop(get(path)))).collect();
        list[*what] = summary(&v);
    }
    Ok(json!({
        "by_deployed_functions": by_count,
        "server_memory": {"after_first_invoke_mib": round(rss_warm), "one_function_after_each_load": rss_by_load, "after_each_load": rss_after},
        "stored_executions": {"rows": total, "seed_seconds": round(seed_s), "latency": list},
    }))
}

fn dir_db(s: &Server) -> std::path::PathBuf {
    s.dir.join("voltrun.db")
}

/// Copies real executions (9 successes of `hot` for each failure of `fails`) under new,
/// older ids until the table holds `total` rows, with the server stopped (the database's
/// triggers count them in the dashboard's per-hour totals). Returns seconds.
fn seed_executions(db: &Path, total: usize) -> Result<f64> {
    const SEED: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
total = int(sys.argv[2])
have = db.execute("SELECT COUNT(*) FROM executions").fetchone()[0]
oldest = db.execute("SELECT MIN(id) FROM executions").fetchone()[0]
prefix, base = oldest[:-24], int(oldest[-24:-8], 16)
cols = [r[1] for r in db.execute("PRAGMA table_info(executions)") if r[1] != "id"]
db.execute("CREATE TEMP TABLE tmpl AS SELECT 0 AS k, * FROM executions WHERE id = (SELECT MAX(id) FROM executions WHERE function_name = 'hot' AND status = 'success')")
db.execute("INSERT INTO tmpl SELECT 1 AS k, * FROM executions WHERE id = (SELECT MAX(id) FROM executions WHERE function_name = 'fails')")
n = total - have
db.execute(f"""WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n})
INSERT INTO executions (id, {", ".join(cols)})
SELECT '{prefix}' || printf('%016llx', {base} - i * 65536) || printf('%08x', i), {", ".join("t." + c for c in cols)}
FROM c JOIN tmpl t ON t.k = (CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END)""")
db.commit()
print(db.execute("SELECT COUNT(*) FROM executions").fetchone()[0])
"#;
    let t = std::time::Instant::now();
    let out = Command::new("python3").arg("-c").arg(SEED).arg(db).arg(total.to_string()).output().context("running python3 to seed executions")?;
    if !out.status.success() {
        bail!("seeding failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The cursor continuing below the execution half-way down the list.
fn middle_cursor(db: &Path, total: usize) -> Result<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT id FROM executions ORDER BY id DESC LIMIT 1 OFFSET ?', (int(sys.argv[2]),)).fetchone()[0])",
        ])
        .arg(db)
        .arg((total / 2).to_string())
        .output()?;
    let id = String::from_utf8(out.stdout)?.trim().to_string();
    if id.is_empty() {
        bail!("no execution half-way down: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(base64_url(id.as_bytes()))
}

/// Unpadded base64url, the cursor encoding of the API.
fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

pub fn markdown(v: &Value) -> String {
    let Some(rows) = v["by_deployed_functions"].as_array() else { return String::new() };
    let mut s = String::from(
        "\n| deployed functions | warm invoke p50 / p99 ms | list functions p50 ms | invokes/s (32 clients) | server RSS after, MiB (executions stored) |\n|---|---|---|---|---|\n",
    );
    for (r, m) in rows.iter().zip(v["server_memory"]["after_each_load"].as_array().into_iter().flatten()) {
        s.push_str(&format!(
            "| {} | {} / {} | {} | {} | {} ({}) |\n",
            r["deployed_functions"],
            r["warm_invoke"]["p50_ms"],
            r["warm_invoke"]["p99_ms"],
            r["list_functions"]["p50_ms"],
            r["invokes_per_s"],
            m["server_rss_mib"],
            m["executions_stored"]
        ));
    }
    let st = &v["stored_executions"];
    let loads: Vec<String> = v["server_memory"]["one_function_after_each_load"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{} MiB ({} stored)", m["server_rss_mib"], m["executions_stored"]))
        .collect();
    s.push_str(&format!("\nServer RSS with one function after three equal loads: {}.\n", loads.join(", ")));
    s.push_str(&format!(
        "\nServer RSS after the first invoke: {} MiB.\n\n| with {} stored executions | p50 ms | p99 ms |\n|---|---|---|\n",
        v["server_memory"]["after_first_invoke_mib"], st["rows"]
    ));
    for (what, x) in st["latency"].as_object().into_iter().flatten() {
        s.push_str(&format!("| GET {} | {} | {} |\n", what.replace('_', " "), x["p50_ms"], x["p99_ms"]));
    }
    s
}
