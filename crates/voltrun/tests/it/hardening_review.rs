//! Hardening (issue 12): holes a security review of the first round of fixes found at the
//! seams between them — listeners that did not share their connection caps, a client that
//! never reads holding its connection for ever, and session cookies a function could plant
//! under an empty name.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::hardening_connections::{connect_from, connect_with, server_addr};
use crate::harness::*;

/// Each listener (the API's and the trigger origin's) kept a connection table of its own,
/// so together they allowed twice the cap, enough to exhaust the open-file limit.
#[test]
fn the_trigger_listener_and_the_api_share_one_connection_cap() {
    let s = Server::start_with(&temp_dir("sharedcap"), &["--trigger-listen", "127.0.0.1:0", "--max-connections-per-ip", "4", "--header-timeout", "60"], true);
    let triggers: SocketAddrV4 = s.stdout_line("voltrun triggers listening on ").trim_start_matches("http://").parse().expect("an IPv4 address");
    let hog = Ipv4Addr::new(127, 0, 7, 1);
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect_from(hog, server_addr(&s))).collect();
    for c in held.iter_mut() {
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    let mut fifth = connect_from(hog, triggers);
    let _ = fifth.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    fifth.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = fifth.read_to_end(&mut out);
    assert!(out.is_empty(), "a fifth connection from one address was served on the trigger listener: {:?}", String::from_utf8_lossy(&out));
    let mut other = connect_from(Ipv4Addr::new(127, 0, 7, 2), triggers);
    other.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    other.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = other.read_to_end(&mut out);
    assert!(out.starts_with(b"HTTP/1.1 404"), "another address is served: {:?}", String::from_utf8_lossy(&out));
}

/// A client that asked for a large response and never read it held its connection (and the
/// response in memory) for as long as it liked; the write now fails after the write timeout.
#[test]
fn a_client_that_never_reads_its_response_is_cut_at_the_write_timeout() {
    let s = Server::start_with(&temp_dir("stall"), &["--body-timeout", "1"], true);
    let c = s.user();
    const SIZE: usize = 5_000_000;
    let code = format!("def handler(event, context):\n    return {{'statusCode': 200, 'headers': {{'content-type': 'text/plain'}}, 'body': 'x' * {SIZE}}}\n");
    c.create_function("big", "python", &code, json!({"route": "big", "public": true}));
    // A receive buffer of a few KiB: a client that does not read makes the server's writes wait at once.
    let mut conn = connect_with(Ipv4Addr::LOCALHOST, server_addr(&s), Some(4096));
    conn.write_all(b"GET /api/execute/big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Not reading, for well past the write timeout.
    std::thread::sleep(Duration::from_secs(5));
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = loop {
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
            Err(_) => break true,
        }
        assert!(Instant::now() < until, "still reading after 60 s");
    };
    assert!(ended, "the connection is still open");
    assert!(got < SIZE, "the whole response ({got} bytes) was sent to a client that stopped reading");
    assert_eq!(s.anon().get("/health").0, 200);
}

/// The head of a raw response: its status line and headers, lower-cased names.
fn raw_head(to: SocketAddrV4, request: &str) -> (u16, Vec<(String, String)>) {
    let mut c = TcpStream::connect(to).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    (status, headers)
}

/// `Set-Cookie: =voltrun_refresh=X` (no name) passed the filter that keeps functions off the
/// session cookie; a browser stores it under the empty name and sends it back as
/// `voltrun_refresh=X`, planting a session (a forged one, or the attacker's own) in the
/// dashboard of whoever opened the page.
#[test]
fn a_function_cannot_plant_a_nameless_session_cookie() {
    let s = Server::start();
    let c = s.user();
    let resp = json!({"statusCode": 200, "headers": {"set-cookie": "=voltrun_refresh=X; Path=/api/auth/refresh; Secure"},
        "cookies": ["=voltrun_refresh=Y; Path=/api/auth/refresh", "voltrun_refresh", "VOLTRUN_REFRESH=Z", "theme=dark; Path=/"], "body": "ok"});
    let code = format!("import json\nRESP = json.loads(r'''{resp}''')\n\ndef handler(event, context):\n    return RESP\n");
    c.create_function("planter", "python", &code, json!({"route": "planter", "public": true}));
    let (status, headers) = raw_head(server_addr(&s), "GET /api/execute/planter HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    let set: Vec<&str> = headers.iter().filter(|(k, _)| k == "set-cookie").map(|(_, v)| v.as_str()).collect();
    assert_eq!(set, vec!["theme=dark; Path=/"], "only the function's own named cookie goes out");
}

/// With a planted session cookie next to the dashboard's, the first one sent won; two
/// session cookies in one request are now refused as tampering and every copy is cleared.
#[test]
fn two_session_cookies_in_one_refresh_are_refused_and_cleared() {
    let s = Server::start();
    let req = "POST /api/auth/refresh HTTP/1.1\r\nHost: x\r\nX-VoltRun-Session: cookie\r\nCookie: voltrun_refresh=planted; voltrun_refresh=mine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (status, headers) = raw_head(server_addr(&s), req);
    assert_eq!(status, 401);
    let cleared: Vec<&str> = headers.iter().filter(|(k, v)| k == "set-cookie" && v.contains("Max-Age=0")).map(|(_, v)| v.as_str()).collect();
    for path in ["Path=/api/auth;", "Path=/api/auth/refresh;", "Path=/;"] {
        assert!(cleared.iter().any(|c| c.starts_with("voltrun_refresh=;") && c.contains(path)), "{path} not cleared: {cleared:?}");
        assert!(cleared.iter().any(|c| c.starts_with("=x;") && c.contains(path)), "nameless copy at {path} not cleared: {cleared:?}");
    }
}
