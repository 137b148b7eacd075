//! Network egress (SPEC §11, issue 14) through the public API, in the tier under test: each
//! test builds its own test hosts in a network namespace it creates (198.18.N.0/24, a veth to
//! the host, TCP servers and a DNS server of its own) and removes them on drop. No traffic
//! goes anywhere else: the servers under test resolve names only with the test's DNS server.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{temp_dir, Server};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The test hosts: in their namespace, `.2` and `.3` serve TCP on 8080 and 8081 (answering
/// `hello <addr>:<port>`) and echo UDP on 9999 (`pong <datagram>`), `.2` answers DNS for the names given; the host end of the link is `.1`.
struct TestNet {
    ns: String,
    link: String,
    prefix: String,
    servers: Option<Child>,
}

const TEST_HOST_PY: &str = r#"
import socket, struct, sys, threading
addrs = sys.argv[1].split(",")
names = dict(kv.split("=") for kv in sys.argv[2].split(",") if kv)
def tcp(a, p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((a, p)); s.listen(64)
    while True:
        c, _ = s.accept()
        try: c.sendall(("hello %s:%d\n" % (a, p)).encode())
        finally: c.close()
def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addrs[0], 53))
    while True:
        q, peer = s.recvfrom(1500)
        i, labels = 12, []
        while q[i]:
            labels.append(q[i+1:i+1+q[i]].decode().lower()); i += 1 + q[i]
        qtype = struct.unpack("!H", q[i+1:i+3])[0]; end = i + 5
        ip = names.get(".".join(labels)) if qtype == 1 else None
        an = 1 if ip else 0
        rcode = 0 if ".".join(labels) in names else 3
        r = q[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, an, 0, 0) + q[12:end]
        if ip: r += struct.pack("!HHHIH", 0xc00c, 1, 1, 60, 4) + socket.inet_aton(ip)
        s.sendto(r, peer)
def udp_echo(a, p):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((a, p))
    while True:
        m, peer = s.recvfrom(1500); s.sendto(b"pong " + m, peer)
for a in addrs:
    for p in (8080, 8081):
        threading.Thread(target=tcp, args=(a, p), daemon=True).start()
    threading.Thread(target=udp_echo, args=(a, 9999), daemon=True).start()
threading.Thread(target=dns, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl TestNet {
    /// `names`: host name and which test host (2 or 3) it resolves to.
    fn new(names: &[(&str, u8)]) -> TestNet {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // One /24 per test of this process (15 > the tests here), apart from other processes'.
        let third = 100 + (std::process::id() % 10) * 15 + n % 15;
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let mut net = TestNet { ns: format!("vrt{tag}"), link: format!("vtt{tag}"), prefix: format!("198.18.{third}"), servers: None };
        let _ = Command::new("ip").args(["netns", "del", &net.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &net.link]).output();
        ip(&["netns", "add", &net.ns]);
        ip(&["link", "add", &net.link, "type", "veth", "peer", "name", "eth0", "netns", &net.ns]);
        ip(&["addr", "add", &format!("{}.1/24", net.prefix), "dev", &net.link]);
        ip(&["link", "set", &net.link, "up"]);
        for a in [net.host(2), net.host(3)] {
            ip(&["-n", &net.ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
        }
        ip(&["-n", &net.ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &net.ns, "link", "set", "lo", "up"]);
        ip(&["-n", &net.ns, "route", "add", "default", "via", &net.host(1)]);
        let names = names.iter().map(|(k, i)| format!("{k}={}", net.host(*i))).collect::<Vec<_>>().join(",");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.ns, "python3", "-c", TEST_HOST_PY, &format!("{},{}", net.host(2), net.host(3)), &names])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test hosts");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        net.servers = Some(child);
        net
    }

    fn host(&self, i: u8) -> String {
        format!("{}.{i}", self.prefix)
    }

    /// `--egress-dns-upstream` at the test's DNS server.
    fn dns_arg(&self) -> String {
        format!("{}:53", self.host(2))
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Some(mut c) = self.servers.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["link", "del", &self.link]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A Python function that tries each connection and lookup of its event and reports what
/// happened: `ok:<first line>` or `err:<errno name>`; `mutate` first tries to give itself
/// the host's address and a route of its own (it must not be able to).
const PROBE: &str = r#"
import errno, socket, subprocess
def attempt(h, p):
    try:
        s = socket.create_connection((h, p), timeout=10)
        data = s.recv(100).decode().strip(); s.close(); return "ok:" + data
    except OSError as e:
        return "err:" + (errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__)
def lookup(n):
    try: return socket.gethostbyname(n)
    except OSError as e: return "err:" + type(e).__name__
def handler(event, context):
    out = {}
    for m in event.get("mutate", []):
        r = subprocess.run(["/usr/sbin/ip"] + m, capture_output=True, text=True)
        out["mutate " + " ".join(m)] = r.returncode
    for h, p in event.get("connect", []):
        out["%s:%d" % (h, p)] = attempt(h, p)
    for h, p, sp in event.get("udp", []):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        try:
            s.bind(("0.0.0.0", sp)); s.connect((h, p)); s.send(b"ping")
            out["udp %s:%d" % (h, p)] = "ok:" + s.recv(100).decode()
        except socket.timeout:
            out["udp %s:%d" % (h, p)] = "err:timeout"
        except OSError as e:
            out["udp %s:%d" % (h, p)] = "err:" + errno.errorcode.get(e.errno, str(e.errno))
        finally:
            s.close()
    for n in event.get("resolve", []):
        out["resolve " + n] = lookup(n)
    if event.get("gateway"):
        gw = open("/proc/net/route").read().split("\n")[1].split()[2]
        gw = socket.inet_ntoa(bytes.fromhex(gw)[::-1])
        out["gateway"] = attempt(gw, event["gateway"])
    return out
"#;

fn server(net: &TestNet, extra: &[&str]) -> Server {
    let dns = net.dns_arg();
    let mut args = vec!["--egress-dns-upstream", dns.as_str()];
    args.extend_from_slice(extra);
    Server::start_with(&temp_dir("egress"), &args, true)
}

fn run(c: &crate::harness::Client, name: &str, event: Value) -> (Value, String) {
    let e = c.invoke(name, &event);
    assert_eq!(e["status"], "success", "{e}");
    (e["output"].clone(), e["logs"].as_str().unwrap_or_default().to_string())
}

fn refused(v: &Value) -> bool {
    // TCP reset: ECONNREFUSED; ICMP administratively prohibited: EHOSTUNREACH or EACCES.
    matches!(v.as_str(), Some("err:ECONNREFUSED" | "err:EACCES" | "err:EHOSTUNREACH"))
}

/// The value of one `/metrics` sample line.
fn metric(c: &crate::harness::Client, line_start: &str) -> Option<u64> {
    let m = String::from_utf8(c.raw("GET", "/metrics", None, &[]).body).unwrap();
    m.lines().find_map(|l| l.strip_prefix(line_start)).and_then(|v| v.trim().parse().ok())
}

#[test]
fn no_network_without_an_egress_list() {
    let net = TestNet::new(&[]);
    let s = server(&net, &[]);
    let c = s.user();
    c.create_function("plain", "python", PROBE, json!({}));
    let (out, _) = run(&c, "plain", json!({"connect": [[net.host(2), 8080]]}));
    let r = out[format!("{}:8080", net.host(2))].as_str().unwrap();
    // No route at all (gVisor's empty netstack says EHOSTUNREACH).
    assert!(r == "err:ENETUNREACH" || r == "err:EHOSTUNREACH", "no network without egress: {out}");
}

#[test]
fn allowed_cidr_and_port_reachable_everything_else_refused_at_once() {
    let net = TestNet::new(&[]);
    let s = server(&net, &[]);
    let c = s.user();
    let (a, b) = (net.host(2), net.host(3));
    let f = c.create_function("net", "python", PROBE, json!({"egress": [format!("{a}/32"), format!("{b}:8081")]}));
    assert_eq!(f["egress"], json!([format!("{a}/32"), format!("{b}/32:8081")]), "stored canonical");
    // The host's own address on the test link, with a listener of the test's own.
    let own = TcpListener::bind(format!("{}:0", net.host(1))).unwrap();
    let own_port = own.local_addr().unwrap().port();
    let api_port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let event = json!({
        "connect": [[a, 8080], [a, 8081], [b, 8081], [b, 8080], [net.host(4), 8080], [net.host(1), own_port]],
        "gateway": api_port,
    });
    let (out, logs) = run(&c, "net", event);
    assert_eq!(out[format!("{a}:8080")], format!("ok:hello {a}:8080"), "{out}");
    assert_eq!(out[format!("{a}:8081")], format!("ok:hello {a}:8081"), "{out}");
    assert_eq!(out[format!("{b}:8081")], format!("ok:hello {b}:8081"), "the port rule admits its port: {out}");
    assert!(refused(&out[format!("{b}:8080")]), "the port rule admits no other port: {out}");
    assert!(refused(&out[format!("{}:8080", net.host(4))]), "a neighbour address is refused: {out}");
    assert!(refused(&out[format!("{}:{own_port}", net.host(1))]), "the host's own address: {out}");
    assert!(refused(&out["gateway"]), "the API port through the gateway: {out}");
    assert!(logs.contains(&format!("egress refused: tcp connection to {b}:8080")), "one line per refusal in the run's logs: {logs}");

    // The counters come from the kernel's log messages: wait (bounded) for them to arrive.
    let id = f["id"].as_str().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let (allowed, refused_n) = loop {
        let a = metric(&c, &format!("voltrun_egress_connections_total{{function=\"{id}\",verdict=\"allowed\"}}")).unwrap_or(0);
        let r = metric(&c, &format!("voltrun_egress_connections_total{{function=\"{id}\",verdict=\"refused\"}}")).unwrap_or(0);
        if (a >= 3 && r >= 4) || Instant::now() > until {
            break (a, r);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(allowed, 3, "three connections were allowed");
    assert!(refused_n >= 4, "four connections (and their retries) were refused: {refused_n}");
}

#[test]
fn a_function_that_changes_its_addresses_or_routes_gains_nothing() {
    let net = TestNet::new(&[]);
    let s = server(&net, &[]);
    let c = s.user();
    let (a, b) = (net.host(2), net.host(3));
    c.create_function("sneaky", "python", PROBE, json!({"egress": [format!("{a}/32")]}));
    let event = json!({
        "mutate": [["addr", "add", format!("{}/32", net.host(1)), "dev", "eth0"], ["route", "add", format!("{b}/32"), "dev", "eth0"], ["link", "set", "eth0", "down"]],
        "connect": [[a, 8080], [b, 8080]],
    });
    let (out, _) = run(&c, "sneaky", event);
    for (k, v) in out.as_object().unwrap() {
        if k.starts_with("mutate") {
            assert_ne!(v, &json!(0), "{k} must fail: {out}");
        }
    }
    assert_eq!(out[format!("{a}:8080")], format!("ok:hello {a}:8080"), "{out}");
    assert!(refused(&out[format!("{b}:8080")]), "{out}");
}

#[test]
fn public_does_not_reach_special_ranges() {
    let net = TestNet::new(&[]);
    let s = server(&net, &[]);
    let c = s.user();
    c.create_function("pub", "python", PROBE, json!({"egress": ["public"]}));
    let (out, _) = run(&c, "pub", json!({"connect": [[net.host(2), 8080]]}));
    assert!(refused(&out[format!("{}:8080", net.host(2))]), "198.18.0.0/15 is special, not public: {out}");
}

#[test]
fn egress_deny_wins_over_the_function() {
    let net = TestNet::new(&[]);
    let deny = format!("{}/32", net.host(2));
    let s = server(&net, &["--egress-deny", &deny]);
    let c = s.user();
    c.create_function("denied", "python", PROBE, json!({"egress": [format!("{}.0/24", net.prefix)]}));
    let (out, _) = run(&c, "denied", json!({"connect": [[net.host(2), 8080], [net.host(3), 8080]]}));
    assert!(refused(&out[format!("{}:8080", net.host(2))]), "{out}");
    assert_eq!(out[format!("{}:8080", net.host(3))], format!("ok:hello {}:8080", net.host(3)), "{out}");
}

#[test]
fn host_names_resolve_through_the_policy_and_only_to_admitted_addresses() {
    let net = TestNet::new(&[("api.egress.test", 2), ("rebind.egress.test", 3), ("other.egress.test", 2)]);
    let (a, b) = (net.host(2), net.host(3));
    let s = server(&net, &[]);
    let c = s.user();
    // The CIDR entry (port 8080 only) makes `a`, a special-purpose address, one the name may
    // resolve to, and only on the ports both admit: the host rule once opened every port of it.
    let egress = json!(["api.egress.test", "rebind.egress.test", format!("{a}/32:8080")]);
    c.create_function("names", "python", PROBE, json!({"egress": egress}));
    let (before, _) = run(&c, "names", json!({"connect": [[a, 8081]]}));
    assert!(refused(&before[format!("{a}:8081")]), "not named by the CIDR entry: {before}");
    let (out, _) = run(
        &c,
        "names",
        json!({"resolve": ["api.egress.test", "other.egress.test", "rebind.egress.test"], "connect": [["api.egress.test", 8080], ["api.egress.test", 8081], [b, 8080]]}),
    );
    assert_eq!(out["resolve api.egress.test"], json!(a), "{out}");
    assert!(out["resolve other.egress.test"].as_str().unwrap().starts_with("err:"), "a name outside the policy gets no answer: {out}");
    assert!(out["resolve rebind.egress.test"].as_str().unwrap().starts_with("err:"), "an answer the policy does not admit is dropped: {out}");
    assert_eq!(out["api.egress.test:8080"], format!("ok:hello {a}:8080"), "{out}");
    assert!(refused(&out["api.egress.test:8081"]), "a port the CIDR entry does not name stays refused: {out}");
    assert!(refused(&out[format!("{b}:8080")]), "the rebinding target stays refused: {out}");
}

/// Regression guard (issue 14): a server killed with instances holding networks leaves their
/// slots, veths, namespaces and its table behind; the next server to start removes them.
#[test]
fn a_killed_servers_networks_are_removed_at_the_next_start() {
    let net = TestNet::new(&[]);
    let mut s = server(&net, &[]);
    let c = s.user();
    c.create_function("left", "python", PROBE, json!({"egress": [format!("{}/32", net.host(2))]}));
    let (out, _) = run(&c, "left", json!({"connect": [[net.host(2), 8080]]}));
    assert_eq!(out[format!("{}:8080", net.host(2))], format!("ok:hello {}:8080", net.host(2)), "{out}");
    let dead = s.pid().to_string();
    let slots_of = |pid: &str| -> Vec<String> {
        std::fs::read_dir("/run/voltrun/egress")
            .map(|rd| rd.flatten().filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|p| p.trim() == pid)).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let table = format!("table inet voltrun_{dead}");
    let tables = || String::from_utf8(Command::new("nft").args(["list", "tables"]).output().unwrap().stdout).unwrap();
    let left = slots_of(&dead);
    assert!(!left.is_empty(), "the warm instance (and the networked spare) hold slots");
    s.kill9();
    assert!(tables().lines().any(|l| l == table), "a SIGKILLed server cannot clean up");
    let again = server(&net, &[]);
    assert!(slots_of(&dead).is_empty(), "the dead server's slots are freed");
    assert!(!tables().lines().any(|l| l == table), "its table is removed");
    for slot in left {
        assert!(!std::path::Path::new(&format!("/sys/class/net/vre{slot}")).exists(), "its veth vre{slot} is removed");
        assert!(!std::path::Path::new(&format!("/run/netns/vrn{slot}")).exists(), "its namespace vrn{slot} is removed");
    }
    drop(again);
}

/// A function with egress takes a spare started with a network that admits nothing, and the
/// spare gets that function's rules: not an empty policy, not another function's.
#[test]
fn a_networked_spare_serves_with_its_new_functions_policy() {
    let net = TestNet::new(&[]);
    let s = server(&net, &[]);
    let c = s.user();
    let (a, b) = (net.host(2), net.host(3));
    c.create_function("first", "python", PROBE, json!({"egress": [format!("{a}/32")]}));
    let (out, _) = run(&c, "first", json!({"connect": [[a, 8080]]}));
    assert_eq!(out[format!("{a}:8080")], format!("ok:hello {a}:8080"), "{out}");
    // The first run with egress started a networked spare: wait (bounded) for it, beside the
    // two runtimes' plain spares.
    let until = Instant::now() + Duration::from_secs(30);
    while metric(&c, "voltrun_spare_instances ").unwrap_or(0) < 3 {
        assert!(Instant::now() < until, "no networked spare started");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.create_function("second", "python", PROBE, json!({"egress": [format!("{b}/32")]}));
    let (out, _) = run(&c, "second", json!({"connect": [[b, 8080], [a, 8080]]}));
    assert_eq!(out[format!("{b}:8080")], format!("ok:hello {b}:8080"), "the spare got its function's rules: {out}");
    assert!(refused(&out[format!("{a}:8080")]), "and not another function's: {out}");
}

/// A finished instance's slot goes to the next instance at once, and the kernel keeps the
/// old instance's connections (UDP for a minute, TCP for days): "established" passed whatever
/// tenant had made the flow, so the next tenant on the slot could send through a flow of the
/// previous one's to a host its own policy refuses, and receive its late replies.
#[test]
fn a_reused_slot_does_not_inherit_the_previous_instances_connections() {
    let net = TestNet::new(&[]);
    // No spares: the second function's instance takes the slot the first one's freed.
    let s = server(&net, &["--spares", "0"]);
    let c = s.user();
    let (a, b) = (net.host(2), net.host(3));
    c.create_function("first", "python", PROBE, json!({"egress": [format!("{a}/32")]}));
    let (out, _) = run(&c, "first", json!({"udp": [[a, 9999, 40001]]}));
    assert_eq!(out[format!("udp {a}:9999")], "ok:pong ping", "the first function's own flow: {out}");
    assert_eq!(c.delete("/api/functions/first").0, 204);
    let until = Instant::now() + Duration::from_secs(20);
    while metric(&c, "voltrun_instances ").unwrap_or(1) != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&c, "voltrun_instances "), Some(0), "the first instance is gone");
    c.create_function("second", "python", PROBE, json!({"egress": [format!("{b}/32")]}));
    let (out, _) = run(&c, "second", json!({"udp": [[a, 9999, 40001], [b, 9999, 40002]]}));
    assert_eq!(out[format!("udp {b}:9999")], "ok:pong ping", "the second function's own policy works: {out}");
    let old = out[format!("udp {a}:9999")].as_str().unwrap();
    assert!(!old.starts_with("ok:"), "the second tenant rode the first one's flow to a host its policy refuses: {out}");
}
