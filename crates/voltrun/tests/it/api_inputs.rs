//! Hostile input: every malformed, mistyped, oversized or unknown request gets a 4xx with the
//! uniform error JSON, never a 5xx or a hang, and the server keeps answering afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const PY_ECHO: &str = "def handler(event, context):\n    return event\n";

/// Asserts a 4xx `expected` with the error JSON for a raw response.
fn assert_raw_error(what: &str, r: &Resp, expected: u16) -> String {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{what}: {} body is not JSON ({e}): {}", r.status, String::from_utf8_lossy(&r.body)));
    assert_eq!(r.status, expected, "{what}: {body}");
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{what}: {:?}", r.headers);
    assert_error(r.status, &body, expected)
}

/// Sends `body` raw with a JSON content type and asserts a 400 error JSON.
fn assert_body_400(c: &Client, method: &str, path: &str, body: &[u8]) {
    let r = c.raw(method, path, Some(body), &[("content-type", "application/json")]);
    assert_raw_error(&format!("{method} {path} {:?}", String::from_utf8_lossy(&body[..body.len().min(80)])), &r, 400);
}

fn assert_healthy(server: &Server) {
    let (status, h) = server.anon().get("/health");
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok");
}

/// A server and a logged-in user owning one Python function `echo`, public at route `echo`.
fn setup() -> (Server, Client) {
    let server = Server::start();
    let user = server.user();
    user.create_function("echo", "python", PY_ECHO, json!({"route": "echo", "public": true}));
    (server, user)
}

/// Every endpoint that takes a JSON body, as (method, path).
fn json_endpoints() -> Vec<(&'static str, &'static str)> {
    vec![
        ("POST", "/api/auth/register"),
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/refresh"),
        ("POST", "/api/functions"),
        ("PUT", "/api/functions/echo"),
        ("POST", "/api/keys"),
        ("POST", "/api/functions/test"),
    ]
}

#[test]
fn malformed_json_is_400() {
    let (server, user) = setup();
    let bodies: &[&[u8]] = &[
        b"{",
        b"{\"name\":",
        b"{\"name\": \"x\",}",
        b"{'name': 'x'}",
        b"not json",
        b"{\"a\":1}{\"b\":2}",
        b"\x00\x01\x02",
        b"[1,2",
        b"{\"name\":\"x\" \"runtime\":\"y\"}",
        b"nul",
    ];
    for (method, path) in json_endpoints() {
        for body in bodies {
            assert_body_400(&user, method, path, body);
        }
    }
    // Execute: the body is the event, so it must be JSON too.
    for body in bodies {
        assert_body_400(&user, "POST", "/api/functions/echo/execute", body);
        assert_body_400(&user, "POST", "/api/functions/echo/execute?async=true", body);
    }
    assert_healthy(&server);
    // Nothing was created by all that.
    let (_, list) = user.get("/api/functions");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (_, execs) = user.get("/api/executions");
    assert_eq!(execs["items"], json!([]), "{execs}");
}

#[test]
fn invalid_utf8_is_400() {
    let (server, user) = setup();
    let bodies: &[&[u8]] = &[b"{\"name\":\"\xff\"}", b"{\"email\":\"\xc3\x28@x.com\",\"password\":\"12345678\"}", b"\xff\xfe{}", b"{\"\xed\xa0\x80\":1}"];
    for (method, path) in json_endpoints() {
        for body in bodies {
            assert_body_400(&user, method, path, body);
        }
    }
    for body in bodies {
        assert_body_400(&user, "POST", "/api/functions/echo/execute", body);
    }
    // A valid-JSON escape of a lone surrogate is not valid UTF-8 either.
    assert_body_400(&user, "POST", "/api/functions", b"{\"name\":\"\\ud800\",\"runtime\":\"python\",\"code\":\"x\"}");
    assert_healthy(&server);
}

#[test]
fn wrong_json_types_are_400() {
    let (server, user) = setup();
    // Arrays are covered by `arrays_are_not_objects` (a known bug).
    let shapes: Vec<Value> = vec![json!(1), json!("string"), json!(null), json!(true)];
    for (method, path) in json_endpoints() {
        for shape in &shapes {
            assert_body_400(&user, method, path, shape.to_string().as_bytes());
        }
    }
    let typed: Vec<(&str, &str, Value)> = vec![
        ("POST", "/api/auth/register", json!({"email": 5, "password": "12345678"})),
        ("POST", "/api/auth/register", json!({"email": "a@b.co", "password": 12345678})),
        ("POST", "/api/auth/register", json!({"email": "a@b.co", "password": "12345678", "name": ["n"]})),
        ("POST", "/api/auth/login", json!({"email": ["a@b.co"], "password": "x"})),
        ("POST", "/api/auth/login", json!({"email": "a@b.co"})),
        ("POST", "/api/auth/refresh", json!({"refresh_token": 1})),
        ("POST", "/api/auth/refresh", json!({})),
        ("POST", "/api/functions", json!({"name": 5, "runtime": "python", "code": PY_ECHO})),
        ("POST", "/api/functions", json!({"name": "x", "runtime": "python", "code": PY_ECHO, "memory": "128"})),
        ("POST", "/api/functions", json!({"name": "x", "runtime": "python", "code": PY_ECHO, "env": "A=1"})),
        ("POST", "/api/functions", json!({"name": "x", "runtime": "python", "code": PY_ECHO, "memory": 1e20})),
        ("POST", "/api/functions", json!({"name": "x", "runtime": "python", "code": PY_ECHO, "timeout": u64::MAX})),
        ("PUT", "/api/functions/echo", json!({"public": "true"})),
        ("PUT", "/api/functions/echo", json!({"timeout": -1})),
        ("POST", "/api/keys", json!({"name": 1})),
        ("POST", "/api/keys", json!({"name": "k", "expires_in_days": 1e10})),
        ("POST", "/api/functions/test", json!({"runtime": "python", "code": 1})),
    ];
    for (method, path, body) in typed {
        assert_body_400(&user, method, path, body.to_string().as_bytes());
    }
    assert_healthy(&server);
}

/// serde's derived structs also accept a JSON array of the fields in order, so `[]` is an
/// empty patch and `["name"]` a whole key request. The API contract is JSON objects.
#[test]
fn arrays_are_not_objects() {
    let (server, user) = setup();
    for (method, path) in json_endpoints() {
        for shape in [json!([]), json!([{"name": "x"}])] {
            assert_body_400(&user, method, path, shape.to_string().as_bytes());
        }
    }
    let positional: Vec<(&str, &str, Value)> = vec![
        ("POST", "/api/keys", json!(["k"])),
        ("POST", "/api/auth/register", json!(["arr@example.com", "12345678", "n"])),
        ("POST", "/api/functions", json!(["arr", null, "python", PY_ECHO])),
        ("PUT", "/api/functions/echo", json!(["renamed"])),
    ];
    for (method, path, body) in positional {
        assert_body_400(&user, method, path, body.to_string().as_bytes());
    }
    assert_eq!(user.get("/api/functions/echo").1["version"], 1);
    assert_healthy(&server);
}

#[test]
fn unknown_fields_are_400() {
    let (server, user) = setup();
    let cases: Vec<(&str, &str, Value)> = vec![
        ("POST", "/api/auth/register", json!({"email": "u@example.com", "password": "12345678", "admin": true})),
        ("POST", "/api/auth/login", json!({"email": "u@example.com", "password": "12345678", "remember": true})),
        ("POST", "/api/auth/refresh", json!({"refresh_token": "x", "extra": 1})),
        ("POST", "/api/functions", json!({"name": "x", "runtime": "python", "code": PY_ECHO, "memroy": 256})),
        ("POST", "/api/functions", json!({"name": "x", "runtime": "python", "code": PY_ECHO, "user_id": "usr_1"})),
        ("PUT", "/api/functions/echo", json!({"memroy": 256})),
        ("PUT", "/api/functions/echo", json!({"owner": "someone"})),
        ("POST", "/api/keys", json!({"name": "k", "scopes": ["all"]})),
        ("POST", "/api/functions/test", json!({"runtime": "python", "code": PY_ECHO, "evnet": {}})),
    ];
    for (method, path, body) in cases {
        let (status, resp) = if method == "PUT" { user.put(path, &body) } else { user.post(path, &body) };
        assert_eq!(status, 400, "{method} {path} {body} -> {resp}");
        assert_error(status, &resp, 400);
    }
    // The registration with an extra field made no account.
    let (status, body) = server.anon().post("/api/auth/register", &json!({"email": "u@example.com", "password": "12345678"}));
    assert_eq!(status, 201, "{body}");
    // The rejected update changed nothing.
    assert_eq!(user.get("/api/functions/echo").1["version"], 1);
    assert_healthy(&server);
}

/// A response read from a raw socket.
struct RawResp {
    status: u16,
    body: Vec<u8>,
}

/// Sends a request with a large body over a plain socket, writing from another thread, so a
/// server that answers before reading everything (as it should for 413) is seen rather than
/// failing the write. Fails if no answer comes within a minute.
fn send_big(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> RawResp {
    send_raw(server, method, path, headers, body, false)
}

/// As [`send_big`], with `Transfer-Encoding: chunked` (no Content-Length) when `chunked`.
fn send_raw(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>, chunked: bool) -> RawResp {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let framing = if chunked { "Transfer-Encoding: chunked".to_string() } else { format!("Content-Length: {}", body.len()) };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{framing}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        // Errors are expected once the server has answered and closed.
        let result = writer.write_all(head.as_bytes()).and_then(|_| {
            if !chunked {
                return writer.write_all(&body);
            }
            for chunk in body.chunks(64 * 1024) {
                writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                writer.write_all(chunk)?;
                writer.write_all(b"\r\n")?;
            }
            writer.write_all(b"0\r\n\r\n")
        });
        let _ = result;
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => panic!("{method} {path}: no response ({e}); got {:?}", String::from_utf8_lossy(&raw)),
        }
        if let Some(r) = parse_response(&raw) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = w.join();
            return r;
        }
    }
    let _ = w.join();
    parse_response(&raw).unwrap_or_else(|| panic!("{method} {path}: incomplete response {:?}", String::from_utf8_lossy(&raw)))
}

/// A complete HTTP/1.1 response with a Content-Length body, if `raw` holds one.
fn parse_response(raw: &[u8]) -> Option<RawResp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse().ok())).flatten()?;
    (raw.len() >= end + len).then(|| RawResp { status, body: raw[end..end + len].to_vec() })
}

fn assert_413(what: &str, r: &RawResp) {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{what}: {} not JSON ({e}): {}", r.status, String::from_utf8_lossy(&r.body)));
    assert_eq!(assert_error(r.status, &body, 413), "payload_too_large", "{what}");
}

#[test]
fn bodies_over_6_mib_are_413() {
    let (server, user) = setup();
    let auth = user.auth.clone().unwrap();
    let json_hdrs = [(auth.0.as_str(), auth.1.as_str()), ("content-type", "application/json")];
    // A valid JSON document of 7 MiB.
    let big_json = || format!("{{\"name\":\"big\",\"runtime\":\"python\",\"code\":\"{}\"}}", "x".repeat(7 << 20)).into_bytes();
    let big_event = || format!("{{\"data\":\"{}\"}}", "x".repeat(7 << 20)).into_bytes();

    let r = send_big(&server, "POST", "/api/functions", &json_hdrs, big_json());
    assert_413("create", &r);
    let r = send_big(&server, "PUT", "/api/functions/echo", &json_hdrs, big_json());
    assert_413("update", &r);
    let r = send_big(&server, "POST", "/api/functions/echo/execute", &json_hdrs, big_event());
    assert_413("execute", &r);
    let r = send_big(&server, "POST", "/api/functions/echo/execute?async=true", &json_hdrs, big_event());
    assert_413("async execute", &r);
    let r = send_big(&server, "POST", "/api/execute/echo", &[("content-type", "application/octet-stream")], vec![b'z'; 7 << 20]);
    assert_413("HTTP trigger", &r);
    let r = send_big(&server, "POST", "/api/auth/register", &[("content-type", "application/json")], big_event());
    assert_413("register", &r);

    // Without a Content-Length, the limit holds as the body streams in.
    let r = send_raw(&server, "POST", "/api/functions", &json_hdrs, big_json(), true);
    assert_413("chunked create", &r);
    let r = send_raw(&server, "POST", "/api/functions/echo/execute", &json_hdrs, big_event(), true);
    assert_413("chunked execute", &r);
    let r = send_raw(&server, "POST", "/api/execute/echo", &[], vec![b'z'; 7 << 20], true);
    assert_413("chunked HTTP trigger", &r);
    // Just over the limit, without a usable JSON body either.
    let r = send_big(&server, "POST", "/api/functions/echo/execute", &json_hdrs, vec![b' '; (6 << 20) + 1]);
    assert_413("execute, 6 MiB + 1", &r);

    // No run was recorded for any of them, and the server is fine.
    let (_, execs) = user.get("/api/executions");
    assert_eq!(execs["items"], json!([]), "{execs}");
    assert_healthy(&server);
    assert_eq!(user.invoke("echo", &json!({"after": true}))["output"], json!({"after": true}));
    // A small chunked body is fine.
    let r = send_raw(&server, "POST", "/api/functions/echo/execute", &json_hdrs, b"{\"chunked\":true}".to_vec(), true);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let e: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(e["output"], json!({"chunked": true}), "{e}");
}

#[test]
fn large_body_under_the_limit_is_accepted() {
    let (server, user) = setup();
    // 5 MiB of event goes through execute and comes back.
    let event = json!({"data": "y".repeat(5 << 20)});
    let e = user.invoke("echo", &event);
    assert_eq!(e["status"], "success", "{}", e["error"]);
    assert_eq!(e["output"]["data"].as_str().map(str::len), Some(5 << 20));
    assert_healthy(&server);
}

#[test]
fn empty_bodies() {
    let (server, user) = setup();
    for (method, path) in json_endpoints() {
        let r = user.raw(method, path, Some(b""), &[("content-type", "application/json")]);
        assert_raw_error(&format!("empty {method} {path}"), &r, 400);
        let r = user.raw(method, path, None, &[]);
        assert_raw_error(&format!("no body {method} {path}"), &r, 400);
    }
    // An execute with no body runs with the event {}.
    for body in [None, Some(&b""[..]), Some(&b"  \n"[..])] {
        let r = user.raw("POST", "/api/functions/echo/execute", body, &[("content-type", "application/json")]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let e = r.json();
        assert_eq!(e["status"], "success", "{e}");
        assert_eq!(e["input"], json!({}), "{e}");
        assert_eq!(e["output"], json!({}), "{e}");
    }
    let r = user.raw("POST", "/api/functions/echo/execute", None, &[]);
    assert_eq!(r.status, 200, "no content type: {}", String::from_utf8_lossy(&r.body));
    assert_healthy(&server);
}

#[test]
fn bad_query_parameters_are_400() {
    let (server, user) = setup();
    let lists = ["/api/functions", "/api/executions"];
    for list in lists {
        for q in ["limit=0", "limit=501", "limit=abc", "limit=-1", "limit=1.5", "limit=99999999999999999999", "cursor=%%%", "cursor=not-a-cursor!", "cursor=%FF%FE"] {
            let r = user.raw("GET", &format!("{list}?{q}"), None, &[]);
            assert_raw_error(&format!("{list}?{q}"), &r, 400);
        }
        for q in ["limit=1", "limit=500", "limit=50&cursor="] {
            let r = user.raw("GET", &format!("{list}?{q}"), None, &[]);
            assert_eq!(r.status, 200, "{list}?{q}: {}", String::from_utf8_lossy(&r.body));
        }
    }
    for q in ["status=bogus", "status=", "status=SUCCESS", "trigger=bogus", "nope=1"] {
        let r = user.raw("GET", &format!("/api/executions?{q}"), None, &[]);
        assert_raw_error(&format!("executions?{q}"), &r, 400);
    }
    for q in ["status=success", "status=failed", "status=pending", "status=running"] {
        let (status, body) = user.get(&format!("/api/executions?{q}"));
        assert_eq!(status, 200, "{q}: {body}");
    }
    let r = user.raw("POST", "/api/functions/echo/execute?async=maybe", Some(b"{}"), &[]);
    assert_raw_error("async=maybe", &r, 400);
    assert_healthy(&server);
}

#[test]
fn unknown_routes_and_methods() {
    let (server, user) = setup();
    for path in ["/nope", "/api", "/api/", "/api/nope", "/api/functions/echo/nope", "/api/auth/nope", "/api/executions/x/y/z", "/health/x"] {
        for c in [server.anon(), user.clone()] {
            let r = c.raw("GET", path, None, &[]);
            assert_raw_error(&format!("GET {path}"), &r, 404);
        }
    }
    let wrong: &[(&str, &str)] = &[
        ("PATCH", "/api/functions"),
        ("DELETE", "/api/functions"),
        ("PUT", "/api/functions"),
        ("PATCH", "/api/functions/echo"),
        ("POST", "/api/functions/echo"),
        ("GET", "/api/functions/echo/execute"),
        ("GET", "/api/auth/login"),
        ("PUT", "/api/auth/register"),
        ("POST", "/api/auth/me"),
        ("POST", "/health"),
        ("DELETE", "/api/keys"),
        ("GET", "/api/keys/key_x"),
        ("POST", "/api/executions"),
        ("DELETE", "/api/executions/ex_x"),
    ];
    for (method, path) in wrong {
        let r = user.raw(method, path, Some(b"{}"), &[("content-type", "application/json")]);
        assert_raw_error(&format!("{method} {path}"), &r, 405);
    }
    assert_healthy(&server);
}

#[test]
fn very_long_ids_are_404() {
    let (server, user) = setup();
    let long = "a".repeat(10 * 1024);
    let long_mixed = format!("fn_{}", "Z9%41".repeat(2048));
    for id in [long.as_str(), long_mixed.as_str()] {
        let cases = [
            ("GET", format!("/api/functions/{id}")),
            ("PUT", format!("/api/functions/{id}")),
            ("DELETE", format!("/api/functions/{id}")),
            ("POST", format!("/api/functions/{id}/execute")),
            ("GET", format!("/api/executions/{id}")),
            ("GET", format!("/api/executions/{id}/logs")),
            ("DELETE", format!("/api/keys/{id}")),
            ("GET", format!("/api/execute/{id}")),
            ("POST", format!("/api/execute/{id}/{id}")),
            ("GET", format!("/{id}")),
        ];
        for (method, path) in &cases {
            let r = user.raw(method, path, Some(b"{}"), &[("content-type", "application/json")]);
            assert_raw_error(&format!("{method} {}…", &path[..40]), &r, 404);
        }
    }
    // Many segments on the trigger.
    let deep = format!("/api/execute/{}", vec!["s"; 2000].join("/"));
    let r = user.raw("GET", &deep, None, &[]);
    assert_raw_error("deep trigger path", &r, 404);
    // A long function_id filter is just no match.
    let (status, body) = user.get(&format!("/api/executions?function_id={long}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([]));
    assert_healthy(&server);
}

#[test]
fn undecodable_path_segments_are_4xx() {
    let (server, user) = setup();
    for path in [
        "/api/functions/%FF",
        "/api/functions/%FF/execute",
        "/api/functions/%00",
        "/api/functions/echo%00",
        "/api/functions/..%2F..%2Fetc",
        "/api/executions/%FF",
        "/api/executions/%FF/logs",
        "/api/keys/%FF",
        "/api/execute/%FF",
        "/api/execute/echo%2F..%2F..",
        "/api/execute/..%2Fecho",
    ] {
        for method in ["GET", "POST", "DELETE"] {
            let r = user.raw(method, path, Some(b"{}"), &[("content-type", "application/json")]);
            assert!((400..500).contains(&r.status), "{method} {path} -> {} {}", r.status, String::from_utf8_lossy(&r.body));
            assert_raw_error(&format!("{method} {path}"), &r, r.status);
        }
    }
    assert_healthy(&server);
}

#[test]
fn deeply_nested_json_is_400() {
    let (server, user) = setup();
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    for n in [10_000, 1_000_000] {
        for (method, path) in
            [("POST", "/api/functions/echo/execute"), ("POST", "/api/functions/echo/execute?async=true"), ("POST", "/api/functions"), ("PUT", "/api/functions/echo")]
        {
            assert_body_400(&user, method, path, &deep(n));
        }
        let obj = format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        assert_body_400(&user, "POST", "/api/functions/echo/execute", obj.as_bytes());
    }
    // Nesting that is accepted runs normally.
    let r = user.raw("POST", "/api/functions/echo/execute", Some(&deep(64)), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "success", "{}", r.json());
    assert_healthy(&server);
}

/// The API takes an event nested up to serde_json's limit (127 levels), but the engine reads
/// the runtime's reply, which wraps the output in an envelope, with the same limit: the reply
/// is unreadable, the instance is killed and the run fails.
#[test]
fn nesting_accepted_at_the_door_can_be_returned() {
    let (_server, user) = setup();
    for n in [126, 127] {
        let body = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let r = user.raw("POST", "/api/functions/echo/execute", Some(body.as_bytes()), &[]);
        if r.status == 400 {
            continue;
        }
        // The record nests the event deeper than serde_json (and so `Resp::json`) reads: look at the text.
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 200, "{text}");
        assert!(text.contains("\"status\":\"success\"") && text.contains("\"error\":null"), "depth {n}: {text}");
        let nested = format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(text.contains(&format!("\"output\":{nested}")), "depth {n}: {text}");
    }
}

#[test]
fn hostile_headers_are_401_not_5xx() {
    let (server, user) = setup();
    let token = user.auth.clone().unwrap().1;
    let long = format!("Bearer {}", "A".repeat(8 * 1024));
    let cases: Vec<(&str, String)> = vec![
        ("authorization", long.clone()),
        ("authorization", "Bearer a.b.c".into()),
        ("authorization", "Bearer ....".into()),
        ("authorization", "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1c3JfMSIsInR5cCI6ImFjY2VzcyIsImV4cCI6OTk5OTk5OTk5OTl9.".into()),
        ("authorization", "Bearer\tx".into()),
        ("authorization", "Digest x".into()),
        ("x-api-key", "vr_".into()),
        ("x-api-key", "v".repeat(8 * 1024)),
    ];
    for (name, value) in cases {
        for path in ["/api/functions", "/api/auth/me", "/api/execute/echo-private"] {
            let r = server.anon().with_header(name, &value).raw("GET", path, None, &[]);
            assert!(r.status == 401 || (path.starts_with("/api/execute") && r.status == 404), "{name}: {}… on {path} -> {}", &value[..value.len().min(40)], r.status);
            assert_raw_error(&format!("{name} on {path}"), &r, r.status);
        }
    }
    // A valid token plus an invalid X-API-Key: the key is checked and rejected.
    let r = server.anon().with_header("x-api-key", "vr_bad").raw("GET", "/api/functions", None, &[("authorization", &token)]);
    assert_raw_error("good token, bad key", &r, 401);
    assert_healthy(&server);
}

#[test]
fn server_survives_a_burst_of_garbage() {
    let (server, user) = setup();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = user.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let body: Vec<u8> = match (t + i) % 5 {
                        0 => b"{".to_vec(),
                        1 => b"\xff\xfe\xfd".to_vec(),
                        2 => b"[]".to_vec(),
                        3 => b"{\"name\":\"x\",\"runtime\":\"python\",\"code\":\"x\",\"bad\":1}".to_vec(),
                        _ => vec![b'9'; 10_000],
                    };
                    let r = c.raw("POST", "/api/functions", Some(&body), &[("content-type", "application/json")]);
                    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_healthy(&server);
    assert_eq!(user.invoke("echo", &json!({"ok": 1}))["output"], json!({"ok": 1}));
}

/// Regression: PostgreSQL text cannot hold NUL bytes; a NUL anywhere in input or output must
/// be a clean 400 (input) or harmless (a function's logs), on every database.
#[test]
fn nul_bytes_are_refused_or_neutralised() {
    let (server, user) = setup();
    for path in ["/api/functions/%00", "/api/executions?function_id=%00", "/api/functions/echo%00x"] {
        let (status, body) = user.get(path);
        assert_error(status, &body, 400);
    }
    for (path, body) in [
        ("/api/functions", json!({"name": "nul", "runtime": "python", "code": "def handler(e, c):\n    return 1\n\u{0}"})),
        ("/api/functions", json!({"name": "nul", "runtime": "python", "code": PY_ECHO, "description": "a\u{0}b"})),
        ("/api/keys", json!({"name": "k\u{0}"})),
    ] {
        let (status, b) = user.post(path, &body);
        assert_error(status, &b, 400);
    }
    user.create_function("nulout", "python", "import sys\ndef handler(e, c):\n    sys.stdout.write('a\\x00b\\n')\n    return e\n", json!({}));
    let e = user.invoke("nulout", &json!({"s": "x\u{0}y"}));
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["logs"], "a\u{FFFD}b\n");
    assert_eq!(e["output"]["s"], "x\u{0}y", "JSON keeps NUL as an escape");
    assert_healthy(&server);
}
