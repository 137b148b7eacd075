//! Hardening (issue 12, item 9): slow and hostile clients against the listener. Half-sent
//! heads, idle kept-alive connections and trickled bodies are closed at their timeouts, and
//! connections past the per-address cap are closed at once, while other clients are served.
//! Every client here connects from a loopback address of its own (127.0.0.x) so the
//! per-address cap can be seen.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The server's address.
pub fn server_addr(s: &Server) -> SocketAddrV4 {
    s.base.trim_start_matches("http://").parse().expect("an IPv4 address")
}

/// A TCP connection to `to` from the loopback address `from` (any 127.0.0.0/8 address is ours).
pub fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> TcpStream {
    connect_with(from, to, None)
}

/// As [`connect_from`], with the socket's receive buffer set to `rcvbuf` bytes before it
/// connects (so the window it advertises is that small).
pub fn connect_with(from: Ipv4Addr, to: SocketAddrV4, rcvbuf: Option<libc::c_int>) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor we own; the values passed by pointer live on
    // the stack for the duration of each call and their sizes are passed alongside.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        if let Some(size) = rcvbuf {
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let r = libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size as *const _ as *const libc::c_void, len);
            assert_eq!(r, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        }
        let sin = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let src = sin(SocketAddrV4::new(from, 0));
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &src as *const _ as *const libc::sockaddr, len), 0, "bind {from}: {}", std::io::Error::last_os_error());
        let dst = sin(to);
        assert_eq!(libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len), 0, "connect {to}: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// Sends one `GET /health` from `from` and returns the status line's code.
pub fn health_from(from: Ipv4Addr, to: SocketAddrV4) -> u16 {
    let mut c = connect_from(from, to);
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no response from {to} for {from}: {text:?}"))
}

/// Waits (up to `limit`) for the server to close `c`: true on EOF or reset, false when the
/// connection is still open at the end.
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        c.set_read_timeout(Some(until.saturating_duration_since(Instant::now()).max(Duration::from_millis(10)))).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 or 400 before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
    false
}

/// Half a request line on each of 300 connections used to hold them (and their descriptors)
/// for ever; 1,100 took the server down. They are now closed at the header timeout, and a
/// normal request is served meanwhile.
#[test]
fn half_sent_request_heads_are_closed_at_the_header_timeout_and_others_are_served() {
    let s = Server::start_with(&temp_dir("slowheads"), &["--header-timeout", "2"], true);
    let addr = server_addr(&s);
    // 300 connections over ten addresses (under the per-address cap of 64).
    let mut stalled: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut c = connect_from(Ipv4Addr::new(127, 0, 1, (i % 10) as u8 + 1), addr);
            c.write_all(b"GET /api/functions HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            c
        })
        .collect();
    assert_eq!(health_from(Ipv4Addr::new(127, 0, 2, 1), addr), 200, "a normal request during the attack");
    let (status, _) = s.anon().get("/health");
    assert_eq!(status, 200);
    for (i, c) in stalled.iter_mut().enumerate() {
        assert!(closed_within(c, Duration::from_secs(20)), "stalled connection {i} still open 20 s after a 2 s header timeout");
    }
    assert_eq!(health_from(Ipv4Addr::new(127, 0, 2, 1), addr), 200, "after the attack");
}

/// A kept-alive connection that sends nothing after its first request stayed open for ever.
#[test]
fn an_idle_kept_alive_connection_is_closed_and_an_active_stream_is_not() {
    let s = Server::start_with(&temp_dir("idle"), &["--header-timeout", "2"], true);
    let addr = server_addr(&s);
    let mut c = connect_from(Ipv4Addr::new(127, 0, 3, 1), addr);
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(closed_within(&mut c, Duration::from_secs(20)), "idle kept-alive connection still open 20 s after a 2 s timeout");

    // A log stream that runs longer than the timeout is not cut: the timer only runs while
    // the connection waits for a request head.
    let user = s.user();
    user.create_function(
        "slowlog",
        "python",
        "import time\ndef handler(e, c):\n    for i in range(4):\n        print('tick', i)\n        time.sleep(1.5)\n    return 'ok'\n",
        serde_json::json!({}),
    );
    let r = user.raw("POST", "/api/functions/slowlog/execute?async=true", Some(b"{}"), &[]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let (k, v) = user.auth.clone().unwrap();
    let resp = ureq::get(&format!("{}/api/executions/{id}/logs?follow=true", s.base)).timeout(Duration::from_secs(60)).set(&k, &v).call().unwrap();
    let body = std::io::read_to_string(resp.into_reader()).unwrap();
    // Output may come in pieces: join the texts of the log events.
    let text: String =
        body.lines().filter_map(|l| l.strip_prefix("data: ")).filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok()?["text"].as_str().map(str::to_string)).collect();
    assert!(text.contains("tick 3") && body.contains("event: end"), "the stream was cut: {body}");
}

/// Past the per-address cap a new connection is closed at once, while other addresses are
/// served, and a freed place can be used again.
#[test]
fn connections_past_the_per_address_cap_are_closed_at_once() {
    let s = Server::start_with(&temp_dir("percap"), &["--max-connections-per-ip", "5", "--header-timeout", "60"], true);
    let addr = server_addr(&s);
    let hog = Ipv4Addr::new(127, 0, 4, 1);
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect_from(hog, addr)).collect();
    // The held five are served (the server has counted them once it answers).
    for c in held.iter_mut() {
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let mut sixth = connect_from(hog, addr);
    let _ = sixth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = Vec::new();
    sixth.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = sixth.read_to_end(&mut out);
    assert!(out.is_empty(), "the sixth connection from one address was served: {:?}", String::from_utf8_lossy(&out));
    assert_eq!(health_from(Ipv4Addr::new(127, 0, 4, 2), addr), 200, "another address is served");
    drop(held.pop());
    // The place is freed when the server sees the close: retry for a bounded time.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = connect_from(hog, addr);
        let _ = c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        if out.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < until, "a freed place was never reusable");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A body trickled a byte at a time held the connection and its handler for as long as the
/// client liked; it is now cut at the body timeout.
#[test]
fn a_trickled_request_body_is_cut_at_the_body_timeout() {
    let s = Server::start_with(&temp_dir("trickle"), &["--body-timeout", "2"], true);
    let addr = server_addr(&s);
    let mut c = connect_from(Ipv4Addr::new(127, 0, 5, 1), addr);
    c.write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = c.try_clone().unwrap();
    let st = stop.clone();
    // One byte every 200 ms: 1,000 bytes would take 200 s; the loop ends by itself after 30 s.
    let w = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while !st.load(Ordering::Relaxed) && Instant::now() < until {
            if writer.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(20);
    let mut ended = false;
    while Instant::now() < until {
        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        match c.read(&mut buf) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = w.join();
    let text = String::from_utf8_lossy(&out);
    assert!(ended || text.starts_with("HTTP/1.1 4"), "a trickled body was still being read 20 s after a 2 s body timeout: {text:?}");
    if !text.is_empty() {
        assert!(text.starts_with("HTTP/1.1 4"), "{text:?}");
    }
    let (status, _) = s.anon().get("/health");
    assert_eq!(status, 200);
}
