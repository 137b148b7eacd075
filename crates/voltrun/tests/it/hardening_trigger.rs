//! Issue 12, the HTTP trigger and the dashboard session: what a hostile function's response,
//! a stranger on a private route and a squatting tenant could do, each named after what broke.
//! Wire-level checks use a plain `TcpStream` (bounded read timeouts), so what hyper actually
//! framed is what is asserted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{assert_error, Client, Server};

/// One response as it came off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    fn one(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Parses one response from the front of `raw` (Content-Length or chunked framing; no body
/// for 204/304 or when `head`), returning it and the bytes it took.
fn parse_one(raw: &[u8], head: bool) -> Option<(Wire, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    if head || status == 204 || status == 304 {
        return Some((Wire { status, headers, body: Vec::new() }, end));
    }
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut at = end;
        let mut body = Vec::new();
        loop {
            let nl = raw[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size = usize::from_str_radix(String::from_utf8_lossy(&raw[at..nl]).trim(), 16).ok()?;
            at = nl + 2;
            if size == 0 {
                return (raw.len() >= at + 2).then(|| (Wire { status, headers, body }, at + 2));
            }
            if raw.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&raw[at..at + size]);
            at += size + 2;
        }
    }
    let len: usize = get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    (raw.len() >= end + len).then(|| (Wire { status, headers, body: raw[end..end + len].to_vec() }, end + len))
}

/// Writes `requests` pipelined on one kept-alive connection and reads until `expect` responses
/// are parsed, the server closes, or 10 s pass without a byte. Returns the responses and the
/// bytes left over after them.
/// A request: method, path and extra headers.
type Req<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn pipelined(addr: &str, requests: &[Req<'_>], expect: usize) -> (Vec<Wire>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    for (method, path, headers) in requests {
        out.push_str(&format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n"));
        for (k, v) in *headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
    }
    s.write_all(out.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let until = Instant::now() + Duration::from_secs(60);
    while got.len() < expect && Instant::now() < until {
        let head = requests.get(got.len()).is_some_and(|r| r.0 == "HEAD");
        if let Some((w, used)) = parse_one(&raw, head) {
            raw.drain(..used);
            got.push(w);
            continue;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    // Anything more the server sent (a smuggled response would be here).
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    if let Ok(n) = s.read(&mut buf) {
        raw.extend_from_slice(&buf[..n]);
    }
    (got, raw)
}

fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// A public Python function at `route` that returns `resp` (JSON) as it is.
fn answering(c: &Client, name: &str, route: &str, resp: Value) {
    let code = format!("import json\nRESP = json.loads(r'''{resp}''')\n\ndef handler(event, context):\n    return RESP\n");
    c.create_function(name, "python", &code, json!({"route": route, "public": true}));
}

/// A function that echoes what it saw of the request's path, prefix header and cookies.
const ECHO: &str = "import json\ndef handler(event, context):\n    return {'statusCode': 200, 'headers': {'content-type': 'application/json'}, 'body': json.dumps({'rawPath': event['rawPath'], 'path': event['requestContext']['http']['path'], 'prefix': event['headers'].get('x-forwarded-prefix'), 'cookies': event.get('cookies'), 'query': event['rawQueryString']})}\n";

/// A handler's `content-length: 0` used to reach the wire, so its body was read as a second
/// response (with its own Set-Cookie) on the kept-alive connection.
#[test]
fn trigger_content_length_header_cannot_smuggle_a_second_response() {
    let server = Server::start();
    let c = server.user();
    let smuggled = "HTTP/1.1 200 OK\r\nSet-Cookie: pwned=1; Path=/\r\nContent-Length: 2\r\n\r\nhi";
    answering(&c, "smuggle", "smuggle", json!({"statusCode": 200, "headers": {"content-length": "0", "content-type": "text/plain"}, "body": smuggled}));
    let addr = addr_of(&server.base);
    let (got, rest) = pipelined(&addr, &[("GET", "/api/execute/smuggle", &[]), ("GET", "/health", &[])], 2);
    assert_eq!(got.len(), 2, "{got:?} rest {:?}", String::from_utf8_lossy(&rest));
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].text(), smuggled, "the function's text is the first response's body");
    assert_eq!(got[0].one("content-length"), Some(smuggled.len().to_string().as_str()));
    assert!(got.iter().all(|w| w.all("set-cookie").is_empty()), "{got:?}");
    assert_eq!(got[1].json()["status"], "ok", "the second response is /health's: {got:?}");
    assert!(rest.is_empty(), "bytes after the two responses: {:?}", String::from_utf8_lossy(&rest));
}

/// A handler's larger `content-length` left the client waiting for bytes that never came.
#[test]
fn trigger_larger_content_length_does_not_hang_the_client() {
    let server = Server::start();
    let c = server.user();
    answering(&c, "long", "long", json!({"statusCode": 200, "headers": {"Content-Length": "100000"}, "body": "short"}));
    let (got, _) = pipelined(&addr_of(&server.base), &[("GET", "/api/execute/long", &[]), ("GET", "/health", &[])], 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].one("content-length"), got[0].text().as_str()), (Some("5"), "short"));
    assert_eq!(got[1].json()["status"], "ok");
}

/// A 204 (and a HEAD answer) went out with the handler's body, which the client then read as
/// the start of the next response.
#[test]
fn trigger_204_and_head_answers_go_out_without_a_body() {
    let server = Server::start();
    let c = server.user();
    let body = "HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\n\r\n";
    let framed = json!({"content-length": body.len().to_string()});
    answering(&c, "nocontent", "nocontent", json!({"statusCode": 204, "headers": framed, "body": body}));
    answering(&c, "nocontent2", "nocontent2", json!({"statusCode": 204, "headers": {"transfer-encoding": "chunked"}, "body": body}));
    answering(&c, "headed", "headed", json!({"statusCode": 200, "headers": framed, "body": body}));
    let (got, rest) = pipelined(
        &addr_of(&server.base),
        &[("GET", "/api/execute/nocontent", &[]), ("GET", "/api/execute/nocontent2", &[]), ("HEAD", "/api/execute/headed", &[]), ("GET", "/health", &[])],
        4,
    );
    assert_eq!(got.len(), 4, "{got:?} rest {:?}", String::from_utf8_lossy(&rest));
    assert_eq!((got[0].status, got[1].status, got[2].status), (204, 204, 200), "{got:?}");
    assert!(got.iter().all(|w| w.one("x-smuggled").is_none()), "{got:?}");
    assert_eq!(got[3].json()["status"], "ok", "{got:?}");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

/// Framing and hop-by-hop headers a handler returned (transfer-encoding, connection,
/// upgrade, keep-alive, and names listed in its Connection header) reached the wire.
#[test]
fn trigger_hop_by_hop_headers_from_a_handler_are_dropped() {
    let server = Server::start();
    let c = server.user();
    let headers = json!({
        "Transfer-Encoding": "chunked", "Connection": "close, x-secret-hop", "Keep-Alive": "timeout=999",
        "Upgrade": "websocket", "Proxy-Connection": "keep-alive", "TE": "trailers", "Trailer": "x-t",
        "x-secret-hop": "1", "Clear-Site-Data": "\"cookies\"", "x-kept": "yes"
    });
    answering(&c, "hops", "hops", json!({"statusCode": 200, "headers": headers, "body": "ok"}));
    let (got, _) = pipelined(&addr_of(&server.base), &[("GET", "/api/execute/hops", &[]), ("GET", "/health", &[])], 2);
    assert_eq!(got.len(), 2, "the connection stayed open for the second request: {got:?}");
    let w = &got[0];
    assert_eq!((w.status, w.text().as_str(), w.one("x-kept")), (200, "ok", Some("yes")), "{w:?}");
    for h in ["transfer-encoding", "connection", "keep-alive", "upgrade", "proxy-connection", "te", "trailer", "x-secret-hop", "clear-site-data"] {
        assert!(w.one(h).is_none(), "{h} reached the wire: {w:?}");
    }
}

/// Statuses the server owns (1xx, 101) or that are not HTTP, and header names or values with
/// CR/LF, are the function's error (502), never put on the wire.
#[test]
fn trigger_informational_bad_statuses_and_crlf_headers_are_502() {
    let server = Server::start();
    let c = server.user();
    let cases = [
        json!({"statusCode": 100}),
        json!({"statusCode": 101, "headers": {"upgrade": "websocket", "connection": "upgrade"}}),
        json!({"statusCode": 103, "headers": {"link": "</x>"}}),
        json!({"statusCode": 99}),
        json!({"statusCode": 600}),
        json!({"statusCode": -1}),
        json!({"statusCode": "200"}),
        json!({"statusCode": 200, "headers": {"x-a": "1\r\nSet-Cookie: pwned=1"}}),
        json!({"statusCode": 200, "headers": {"x-a\r\nSet-Cookie": "pwned=1"}}),
        json!({"statusCode": 200, "cookies": ["a=1\r\nX-Injected: 1"]}),
    ];
    for (i, resp) in cases.iter().enumerate() {
        answering(&c, &format!("bad{i}"), &format!("bad{i}"), resp.clone());
        let (got, _) = pipelined(&addr_of(&server.base), &[("GET", &format!("/api/execute/bad{i}"), &[])], 1);
        assert_eq!(got.len(), 1, "{resp}");
        assert_eq!(assert_error(got[0].status, &got[0].json(), 502), "invalid_function_response", "{resp}");
        assert!(got[0].all("set-cookie").is_empty() && got[0].one("x-injected").is_none(), "{resp}: {:?}", got[0]);
    }
}

/// A public function's HTML ran with the dashboard's origin: every trigger response (the
/// function's, its error, a 404, a 413) now carries CSP sandbox and nosniff, set after the
/// function's own headers, which cannot remove them.
#[test]
fn trigger_responses_carry_csp_sandbox_and_nosniff_whatever_the_function_sends() {
    let server = Server::start();
    let c = server.user();
    answering(
        &c,
        "page",
        "page",
        json!({"statusCode": 200, "headers": {"content-type": "text/html", "content-security-policy": "default-src 'none'", "x-content-type-options": "sniff"}, "body": "<script>alert(1)</script>"}),
    );
    c.create_function("boom", "python", "def handler(e, c):\n    raise ValueError('no')\n", json!({"route": "boom", "public": true}));
    c.create_function("secret", "python", ECHO, json!({"route": "secret"}));
    let addr = addr_of(&server.base);
    let big = "x".repeat(7 << 20);
    let cl = big.len().to_string();
    let checks = [
        ("GET", "/api/execute/page", 200),
        ("HEAD", "/api/execute/page", 200),
        ("GET", "/api/execute/boom", 502),
        ("GET", "/api/execute/secret", 404),
        ("GET", "/api/execute/nothing/here", 404),
        ("GET", "/api/execute", 404),
        ("GET", "/api/execute/", 404),
    ];
    for (method, path, status) in checks {
        let (got, _) = pipelined(&addr, &[(method, path, &[])], 1);
        let w = &got[0];
        assert_eq!(w.status, status, "{path}: {w:?}");
        assert_eq!(w.all("x-content-type-options"), vec!["nosniff"], "{path}: {w:?}");
        let csp = w.all("content-security-policy");
        assert!(csp.contains(&"sandbox"), "{path}: {w:?}");
        if path == "/api/execute/page" {
            assert!(csp.contains(&"default-src 'none'"), "the function's own CSP stays too: {w:?}");
        }
    }
    // A body over 6 MiB: 413, protected as well.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("POST /api/execute/page HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {cl}\r\nConnection: close\r\n\r\n");
    let mut w = s.try_clone().unwrap();
    // From another thread: the server answers 413 without reading everything.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(head.as_bytes()).and_then(|_| w.write_all(big.as_bytes()));
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while parse_one(&raw, false).is_none() {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let (w, _) = parse_one(&raw, false).unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(&raw)));
    assert_eq!(w.status, 413);
    assert_eq!(w.all("x-content-type-options"), vec!["nosniff"]);
    assert!(w.all("content-security-policy").contains(&"sandbox"), "{w:?}");
}

/// A function's own error page (404 text/html) was replaced by the API's generic JSON error.
#[test]
fn a_functions_own_error_page_is_its_answer() {
    let server = Server::start();
    let c = server.user();
    answering(&c, "missing", "missing", json!({"statusCode": 404, "headers": {"content-type": "text/html"}, "body": "<h1>no such page</h1>"}));
    let r = server.anon().raw("GET", "/api/execute/missing/x", None, &[]);
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (404, "<h1>no such page</h1>"));
}

/// A function routed at `shop` saw `/api/execute/shop/items/42` as its path, so web apps that
/// route on the path matched nothing. Now: the path below the route, on both listeners, with
/// the prefix in `x-forwarded-prefix` (a client's own value is replaced).
#[test]
fn trigger_path_is_the_path_below_the_route_on_both_listeners() {
    let server = Server::start_with(&crate::harness::temp_dir("trig"), &["--trigger-listen", "127.0.0.1:0"], true);
    let triggers = server.stdout_line("voltrun triggers listening on ");
    let c = server.user();
    c.create_function("shop", "python", ECHO, json!({"route": "shop", "public": true}));
    let own = Client { base: triggers.clone(), auth: None };
    let cases = [
        (server.anon(), "/api/execute/shop/items/42?x=1", "/items/42", "/api/execute/shop"),
        (server.anon(), "/api/execute/shop", "/", "/api/execute/shop"),
        (server.anon(), "/api/execute/shop/", "/", "/api/execute/shop"),
        (own.clone(), "/shop/items/42?x=1", "/items/42", "/shop"),
        (own.clone(), "/shop", "/", "/shop"),
    ];
    for (client, path, below, prefix) in cases {
        let r = client.raw("GET", path, None, &[("x-forwarded-prefix", "/forged")]);
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!((v["rawPath"].as_str(), v["path"].as_str(), v["prefix"].as_str()), (Some(below), Some(below), Some(prefix)), "{path}: {v}");
        assert_eq!(v["query"], if path.contains('?') { "x=1" } else { "" }, "{path}");
    }
}

/// The trigger listener is an origin of functions only: no API, no dashboard, no health
/// page; nosniff stays, CSP sandbox is left off (the origin has no session to protect).
#[test]
fn trigger_listener_serves_only_triggers() {
    let server = Server::start_with(&crate::harness::temp_dir("trig"), &["--trigger-listen", "127.0.0.1:0"], true);
    let triggers = server.stdout_line("voltrun triggers listening on ");
    let c = server.user();
    answering(&c, "hello", "hello", json!({"statusCode": 200, "headers": {"content-type": "text/html"}, "body": "<p>hi</p>"}));
    let own = Client { base: triggers.clone(), auth: None };
    let r = own.raw("GET", "/hello", None, &[]);
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (200, "<p>hi</p>"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("content-security-policy"), None);
    for path in ["/", "/health", "/api/functions", "/api/auth/me", "/api/execute/hello", "/login", "/assets/x.js", "/favicon.svg"] {
        let r = own.raw("GET", path, None, &[("accept", "text/html")]);
        assert_eq!(assert_error(r.status, &r.json(), 404), "not_found", "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
    }
    // The user's token works there for their own private functions, as on the API's listener.
    c.create_function("mine", "python", ECHO, json!({"route": "mine"}));
    let token = c.auth.clone().unwrap().1;
    assert_eq!(own.raw("GET", "/mine/a", None, &[("authorization", &token)]).status, 200);
    assert_eq!(own.raw("GET", "/mine/a", None, &[]).status, 404);
}

/// The dashboard's refresh cookie (same host, so also sent to the trigger listener) must not
/// reach a function, and a function must not set it (session fixation).
#[test]
fn session_cookie_never_reaches_a_function_nor_can_be_set_by_one() {
    let server = Server::start_with(&crate::harness::temp_dir("trig"), &["--trigger-listen", "127.0.0.1:0"], true);
    let triggers = server.stdout_line("voltrun triggers listening on ");
    let c = server.user();
    // A route named like the API, so that the cookie's Path=/api/auth matches on the trigger origin.
    c.create_function("api", "python", ECHO, json!({"route": "api", "public": true}));
    let own = Client { base: triggers, auth: None };
    for (client, path) in [(own.clone(), "/api/auth/refresh"), (server.anon(), "/api/execute/api/auth/refresh")] {
        let r = client.raw("GET", path, None, &[("cookie", "voltrun_refresh=secret-token; theme=dark")]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["cookies"], json!(["theme=dark"]), "{path}");
    }
    answering(
        &c,
        "fixer",
        "fixer",
        json!({"statusCode": 200, "headers": {"Set-Cookie": "VOLTRUN_REFRESH=attacker; Path=/api/auth"}, "cookies": ["voltrun_refresh=attacker; Path=/api/auth", " voltrun_refresh =x", "ok=1"], "body": "x"}),
    );
    let (got, _) = pipelined(&addr_of(&server.base), &[("GET", "/api/execute/fixer", &[])], 1);
    assert_eq!(got[0].all("set-cookie"), vec!["ok=1"], "{:?}", got[0]);
}

/// An unauthenticated (or wrongly authenticated) caller got 401 on a private route and 404 on
/// a missing one, which told them which private routes exist.
#[test]
fn private_route_is_indistinguishable_from_a_missing_one() {
    let server = Server::start();
    let (a, b) = (server.user(), server.user());
    a.create_function("hidden", "python", ECHO, json!({"route": "hidden"}));
    let missing = server.anon().raw("GET", "/api/execute/nothing-here", None, &[]);
    assert_eq!(missing.status, 404);
    let bearer_b = b.auth.clone().unwrap().1;
    let callers = [
        ("anonymous", vec![]),
        ("bad token", vec![("authorization", "Bearer garbage")]),
        ("bad key", vec![("x-api-key", "vr_nope")]),
        ("another user", vec![("authorization", bearer_b.as_str())]),
    ];
    for (who, headers) in &callers {
        for path in ["/api/execute/hidden", "/api/execute/hidden/sub"] {
            let r = server.anon().raw("POST", path, Some(b"{}"), headers);
            assert_eq!((r.status, &r.body), (missing.status, &missing.body), "{who} on {path}");
        }
    }
    assert_eq!(a.raw("GET", "/api/execute/hidden", None, &[]).status, 200);
}

/// Bob could create `shop/webhooks/stripe` under Alice's `shop/webhooks` and take her requests.
#[test]
fn route_under_or_over_another_users_route_is_409() {
    let server = Server::start();
    let (alice, bob) = (server.user(), server.user());
    alice.create_function("hooks", "python", ECHO, json!({"route": "shop/webhooks", "public": true}));
    for route in ["shop/webhooks/stripe", "shop", "shop/webhooks/a/b"] {
        let (s, e) = bob.post("/api/functions", &json!({"name": "squat", "runtime": "python", "code": ECHO, "route": route, "public": true}));
        assert_eq!(assert_error(s, &e, 409), "conflict", "{route}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().starts_with("route: "), "{e}");
    }
    // Not a segment prefix: free. The same exact route: the existing unique conflict.
    bob.create_function("near", "python", ECHO, json!({"route": "shop/webhooksx"}));
    bob.create_function("near2", "python", ECHO, json!({"route": "shop_webhooks"}));
    let (s, e) = bob.post("/api/functions", &json!({"name": "same", "runtime": "python", "code": ECHO, "route": "shop/webhooks"}));
    assert_error(s, &e, 409);
    // On update too.
    let (s, e) = bob.put("/api/functions/near", &json!({"route": "shop/webhooks/stripe"}));
    assert_eq!(assert_error(s, &e, 409), "conflict", "{e}");
    assert_eq!(bob.get("/api/functions/near").1["route"], "shop/webhooksx");
    // Alice nests her own routes freely.
    alice.create_function("stripe", "python", ECHO, json!({"route": "shop/webhooks/stripe"}));
    alice.create_function("v2", "python", ECHO, json!({"route": "shop/webhooks/stripe/v2"}));
    // But not over Bob's `shop/webhooksx` either.
    let (s, e) = alice.post("/api/functions", &json!({"name": "root", "runtime": "python", "code": ECHO, "route": "shop"}));
    assert_eq!(assert_error(s, &e, 409), "conflict", "{e}");
    let r = alice.raw("GET", "/api/execute/shop/webhooks/stripe/x", None, &[]);
    assert_eq!(r.json()["prefix"], "/api/execute/shop/webhooks/stripe");

    // Racing creates of nested routes by two users: never both.
    for i in 0..8 {
        let (a, b) = (alice.clone(), bob.clone());
        let outer = format!("race{i}");
        let inner = format!("race{i}/inner");
        let t1 = std::thread::spawn(move || a.post("/api/functions", &json!({"name": format!("ra{i}"), "runtime": "python", "code": ECHO, "route": outer})).0);
        let t2 = std::thread::spawn(move || b.post("/api/functions", &json!({"name": format!("rb{i}"), "runtime": "python", "code": ECHO, "route": inner})).0);
        let (s1, s2) = (t1.join().unwrap(), t2.join().unwrap());
        assert!(matches!((s1, s2), (201, 409) | (409, 201)), "race {i}: {s1} {s2}");
    }
}

fn cookie_of(r: &crate::harness::Resp) -> Option<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.strip_prefix("voltrun_refresh=").map(|rest| rest.split(';').next().unwrap_or("").to_string()))
}

/// The dashboard kept its tokens in localStorage, where any same-origin script read them. Now
/// the refresh token lives in an HttpOnly cookie, spent only by same-origin requests that
/// carry the session header; the JSON API for CLI/SDK users is unchanged.
#[test]
fn dashboard_session_cookie_is_httponly_and_refused_cross_origin() {
    let server = Server::start();
    let anon = server.anon();
    let host = addr_of(&server.base);
    let email = format!("cookie-{}@example.com", std::process::id());
    let cookie_hdr = [("x-voltrun-session", "cookie"), ("content-type", "application/json")];
    let body = serde_json::to_vec(&json!({"email": email, "password": "correct horse", "name": "C"})).unwrap();
    let r = anon.raw("POST", "/api/auth/register", Some(&body), &cookie_hdr);
    assert_eq!(r.status, 201);
    assert!(r.json().get("refresh_token").is_none(), "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["token"].is_string());
    let set = r.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/auth"] {
        assert!(set.contains(attr), "{set}");
    }
    let mut cookie = cookie_of(&r).unwrap();

    // No cookie: no session to restore (the dashboard opened logged out), not an error.
    assert_eq!(anon.raw("POST", "/api/auth/refresh", None, &[("x-voltrun-session", "cookie")]).status, 204);
    // Without the header the cookie is not used (the body is required, as for API clients).
    let r = anon.raw("POST", "/api/auth/refresh", Some(b""), &[("cookie", &format!("voltrun_refresh={cookie}"))]);
    assert_eq!(r.status, 400);
    // Other origins are refused, whatever they send.
    let origin_own = format!("http://{host}");
    for bad in [
        vec![("origin", "null")],
        vec![("origin", "http://evil.example")],
        vec![("origin", "http://127.0.0.1:1")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", origin_own.as_str()), ("sec-fetch-site", "same-site")],
    ] {
        let c = format!("voltrun_refresh={cookie}");
        let mut h = vec![("x-voltrun-session", "cookie"), ("cookie", c.as_str())];
        h.extend(bad.iter().cloned());
        for path in ["/api/auth/refresh", "/api/auth/logout"] {
            let r = anon.raw("POST", path, Some(b""), &h);
            assert_eq!(assert_error(r.status, &r.json(), 403), "cross_origin", "{path} {bad:?}");
        }
    }
    // The same origin refreshes: a new access token, the refresh token rotated in the cookie.
    for _ in 0..2 {
        let c = format!("voltrun_refresh={cookie}");
        let r = anon.raw("POST", "/api/auth/refresh", None, &[("x-voltrun-session", "cookie"), ("cookie", &c), ("origin", &origin_own), ("sec-fetch-site", "same-origin")]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.json().get("refresh_token").is_none());
        let token = r.json()["token"].as_str().unwrap().to_string();
        assert_eq!(anon.raw("GET", "/api/auth/me", None, &[("authorization", &format!("Bearer {token}"))]).status, 200);
        let next = cookie_of(&r).unwrap();
        assert_ne!(next, cookie);
        cookie = next;
    }
    // Logout revokes the family and clears the cookie.
    let c = format!("voltrun_refresh={cookie}");
    let r = anon.raw("POST", "/api/auth/logout", None, &[("x-voltrun-session", "cookie"), ("cookie", &c), ("origin", &origin_own)]);
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = anon.raw("POST", "/api/auth/refresh", None, &[("x-voltrun-session", "cookie"), ("cookie", &c)]);
    assert_eq!(r.status, 401);

    // API clients: the refresh token in the body as before, no cookie; logout by body too.
    let (s, v) = anon.post("/api/auth/login", &json!({"email": email, "password": "correct horse"}));
    assert_eq!(s, 200, "{v}");
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let r = anon.raw("POST", "/api/auth/refresh", Some(json!({"refresh_token": rt}).to_string().as_bytes()), &[("content-type", "application/json")]);
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").is_none());
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(anon.post("/api/auth/logout", &json!({"refresh_token": rt2})).0, 204);
    assert_eq!(anon.post("/api/auth/refresh", &json!({"refresh_token": rt2})).0, 401);
}

/// The dashboard's static files are embedded: no path, encoded or not, reaches the host's files.
#[test]
fn dashboard_static_paths_cannot_traverse_to_host_files() {
    let server = Server::start();
    let addr = addr_of(&server.base);
    for path in [
        "/assets/../../../../etc/passwd",
        "/assets/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/Cargo.toml",
        "/assets/..%5c..%5cCargo.toml",
        "/favicon.svg/../../../../etc/passwd",
        "/assets//etc/passwd",
    ] {
        let (got, _) = pipelined(&addr, &[("GET", path, &[("accept", "*/*")])], 1);
        assert_eq!(got.len(), 1, "{path}");
        let text = got[0].text();
        assert!(!text.contains("root:") && !text.contains("[package]") && !text.contains("[workspace]"), "{path}: {text}");
        assert!(got[0].status == 404 || got[0].status == 400, "{path}: {}", got[0].status);
    }
}
