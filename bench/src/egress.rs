//! Network egress (issue 14): cold starts of functions with an `egress` list against ones
//! without (a spare ready in both cases), and the time to set up a TCP connection to an
//! allowed test host from inside a function against the same connection (same Python code)
//! from the host. The test host lives in a network namespace this bench creates, at
//! 198.18.250.2 (benchmarking range); nothing else is contacted.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{pct, round, summary, time_ms, Server, PY_CODE};

const NS: &str = "vrtbench";
const LINK: &str = "vttbench";
const HOST: &str = "198.18.250.2";
/// Connections timed per measurement.
const CONNECTS: usize = 200;

/// Times `n` connections to HOST:8080 (connect only, then close): milliseconds each.
const CONNECT_PY: &str = r#"
import socket, time
def handler(event, context):
    out = []
    for _ in range(event["n"]):
        t = time.perf_counter()
        s = socket.create_connection((event["host"], 8080), timeout=5)
        out.append((time.perf_counter() - t) * 1000.0)
        s.close()
    return out
if __name__ == "__main__":
    import json, sys
    print(json.dumps(handler({"n": int(sys.argv[1]), "host": sys.argv[2]}, None)))
"#;

/// The test host: a namespace with a veth to the host and a TCP server on 8080.
struct TestHost(Option<Child>);

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl TestHost {
    fn start() -> Result<TestHost> {
        let _ = Command::new("ip").args(["link", "del", LINK]).output();
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
        ip(&["netns", "add", NS])?;
        let mut h = TestHost(None);
        ip(&["link", "add", LINK, "type", "veth", "peer", "name", "eth0", "netns", NS])?;
        ip(&["addr", "add", "198.18.250.1/24", "dev", LINK])?;
        ip(&["link", "set", LINK, "up"])?;
        ip(&["-n", NS, "addr", "add", &format!("{HOST}/24"), "dev", "eth0"])?;
        ip(&["-n", NS, "link", "set", "eth0", "up"])?;
        ip(&["-n", NS, "link", "set", "lo", "up"])?;
        ip(&["-n", NS, "route", "add", "default", "via", "198.18.250.1"])?;
        let server = "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('198.18.250.2', 8080)); s.listen(512)\nprint('ready', flush=True)\nwhile True:\n    c,_=s.accept(); c.close()\n";
        let mut child = Command::new("ip").args(["netns", "exec", NS, "python3", "-c", server]).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().context("stdout")?), &mut line)?;
        h.0 = Some(child);
        if line.trim() != "ready" {
            bail!("the test host did not start");
        }
        Ok(h)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["link", "del", LINK]).output();
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
    }
}

fn cold(s: &Server, token: &str, tag: &str, egress: &Value, n: usize, gap: Duration) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..n {
        std::thread::sleep(gap);
        let name = format!("eg-{tag}-{i}");
        s.call("POST", "/api/functions", Some(token), &json!({"name": name, "runtime": "python3.11", "code": PY_CODE, "egress": egress}))?;
        let mut e = Value::Null;
        out.push(time_ms(|| e = s.call("POST", &format!("/api/functions/{name}/execute"), Some(token), &json!({"i": i})).unwrap_or(Value::Null)));
        if e["status"] != "success" {
            bail!("egress cold run failed: {e}");
        }
        // Its warm instance is not needed again: deleting the function frees it (dozens of
        // idle containers exhaust the host's threads in the container tier).
        let _ = s.call("DELETE", &format!("/api/functions/{name}"), Some(token), &Value::Null);
    }
    Ok(out)
}

/// The egress figures of one tier.
pub fn measure(bin: &std::path::Path, tier: &str, n: usize) -> Result<Value> {
    let _host = TestHost::start()?;
    let s = Server::start_with(bin, tier, &["--egress-dns-upstream", "198.18.250.2:53"])?;
    let token = s.register(&format!("egress-{tier}"))?;
    let allow = json!([format!("{HOST}/32")]);
    let gap = Duration::from_millis(if tier == "gvisor" { 1500 } else { 400 });
    // The first function with egress starts the networked spares: one run first.
    cold(&s, &token, "prime", &allow, 1, gap)?;
    let off = cold(&s, &token, "off", &json!([]), n, gap)?;
    let on = cold(&s, &token, "on", &allow, n, gap)?;
    s.call("POST", "/api/functions", Some(&token), &json!({"name": "eg-connect", "runtime": "python3.11", "code": CONNECT_PY, "egress": allow}))?;
    let e = s.call("POST", "/api/functions/eg-connect/execute", Some(&token), &json!({"n": CONNECTS, "host": HOST}))?;
    let inside: Vec<f64> = e["output"].as_array().context("connect timings")?.iter().filter_map(Value::as_f64).collect();
    let host_out = Command::new("python3").args(["-c", CONNECT_PY, &CONNECTS.to_string(), HOST]).output()?;
    let from_host: Vec<f64> = serde_json::from_slice::<Vec<f64>>(&host_out.stdout).context("host connect timings")?;
    if inside.len() != CONNECTS || from_host.len() != CONNECTS {
        bail!("connect timings missing");
    }
    Ok(json!({
        "cold_start_egress_off": summary(&off),
        "cold_start_egress_on": summary(&on),
        "cold_on_vs_off_p50": round(pct(&on, 50.0) / pct(&off, 50.0)),
        "connect_inside_function": summary(&inside),
        "connect_from_host": summary(&from_host),
        "connect_extra_ms_p50": round(pct(&inside, 50.0) - pct(&from_host, 50.0)),
    }))
}

/// The section of latest.md.
pub fn markdown(r: &Value) -> String {
    let mut s = String::from("\nEgress (python; cold starts with a spare ready; TCP connect to an allowed test host in a netns):\n\n| tier | cold off p50 ms | cold on p50 ms | on/off | connect inside p50 ms | from host p50 ms | extra ms |\n|---|---|---|---|---|---|---|\n");
    for (tier, v) in r.as_object().into_iter().flatten() {
        s.push_str(&format!(
            "| {tier} | {} | {} | {} | {} | {} | {} |\n",
            v["cold_start_egress_off"]["p50_ms"],
            v["cold_start_egress_on"]["p50_ms"],
            v["cold_on_vs_off_p50"],
            v["connect_inside_function"]["p50_ms"],
            v["connect_from_host"]["p50_ms"],
            v["connect_extra_ms_p50"]
        ));
    }
    s
}
