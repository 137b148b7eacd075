//! Hardening (issue 12, items 3, 4 and 12's lockout; the shared JWT key): what a client
//! without an account can do to authentication. Huge credentials cannot grow the server,
//! registration floods neither exhaust memory nor go unlimited, one address guessing cannot
//! lock an owner out, nodes on one PostgreSQL database accept each other's tokens; and the
//! attacks already contained stay contained (forged JWTs, refresh reuse, API-key prefixes,
//! spoofed forwarding headers).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::hardening_connections::{connect_from, health_from, server_addr};
use crate::harness::*;

const PASSWORD: &str = "correct horse battery";

/// A response read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()))
    }
}

/// POSTs `body` to `path` from the loopback address `from`, writing from another thread so a
/// server that answers (and closes) before reading everything is seen. None when the server
/// closed without answering.
fn post_from(from: Ipv4Addr, to: SocketAddrV4, path: &str, extra_headers: &[(&str, &str)], body: Vec<u8>) -> Option<Answer> {
    let mut c = connect_from(from, to);
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // Errors are expected once the server has answered and closed.
        let _ = w.write_all(head.as_bytes()).and_then(|_| w.write_all(&body));
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let _ = c.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = serde_json::from_slice(&raw[end..]).unwrap_or(Value::Null);
    Some(Answer { status, head, body })
}

fn login_from(s: &Server, from: Ipv4Addr, email: &str, password: &str) -> Answer {
    post_from(from, server_addr(s), "/api/auth/login", &[], json!({"email": email, "password": password}).to_string().into_bytes())
        .unwrap_or_else(|| panic!("no answer to a login from {from}"))
}

fn register_from(s: &Server, from: Ipv4Addr, email: &str, extra_headers: &[(&str, &str)]) -> Answer {
    let body = json!({"email": email, "password": PASSWORD, "name": "Eve"}).to_string().into_bytes();
    post_from(from, server_addr(s), "/api/auth/register", extra_headers, body).unwrap_or_else(|| panic!("no answer to a registration from {from}"))
}

/// (VmRSS, VmHWM) of a process in bytes, from /proc/<pid>/status.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MB: u64 = 1 << 20;

/// Every login stored `email:<email>` in the rate limiter before any length check: 300
/// logins with 5 MB emails grew the server by 1.8 GB that stayed. Now a large body is refused
/// before it is read and a credential is checked before anything is stored.
#[test]
fn logins_with_megabyte_emails_do_not_grow_server_memory() {
    let s = Server::start();
    let addr = server_addr(&s);
    assert_eq!(health_from(Ipv4Addr::new(127, 0, 10, 1), addr), 200);
    let (before, _) = memory_of(s.pid());
    let email = format!("{}@example.com", "a".repeat(1 << 20));
    for i in 0..200u32 {
        let from = Ipv4Addr::new(127, 0, 10, (i % 200) as u8 + 1);
        let body = json!({"email": format!("{i}{email}"), "password": "x"}).to_string().into_bytes();
        if let Some(a) = post_from(from, addr, "/api/auth/login", &[], body) {
            assert!(a.status == 413 || a.status == 400, "login {i} with a 1 MB email: {} {}", a.status, a.body);
        }
    }
    let (after, _) = memory_of(s.pid());
    let grown = after.saturating_sub(before);
    assert!(grown < 100 * MB, "200 logins with 1 MB emails grew the server by {} MB", grown / MB);
    // Under the body limit, an oversized email is refused as invalid, not looked up.
    let a = login_from(&s, Ipv4Addr::new(127, 0, 10, 250), &format!("{}@example.com", "b".repeat(2000)), "x");
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(s.anon().get("/health").0, 200);
}

/// Registration had no rate limit and each argon2 hash (19 MiB) ran on up to 512 blocking
/// threads: 800 concurrent registrations OOM-killed the server. Now hashes run on a bounded
/// pool whose full queue answers 429 at once, and the server stays up and small.
#[test]
fn concurrent_registrations_cannot_exhaust_server_memory() {
    let s = Server::start_with(&temp_dir("regflood"), &["--hash-concurrency", "2", "--hash-queue", "16"], true);
    let addr = server_addr(&s);
    let (before, _) = memory_of(s.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let health_ok = Arc::new(AtomicUsize::new(0));
    let health = {
        let (stop, ok) = (stop.clone(), health_ok.clone());
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                assert_eq!(health_from(Ipv4Addr::new(127, 0, 11, 250), addr), 200, "/health during the flood");
                ok.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let tag = format!("{}", std::process::id());
    let threads: Vec<_> = (0..150u32)
        .map(|i| {
            let s_addr = addr;
            let tag = tag.clone();
            std::thread::spawn(move || {
                let from = Ipv4Addr::new(127, 0, 11, (i % 150) as u8 + 1);
                let body = json!({"email": format!("flood{i}-{tag}@example.com"), "password": PASSWORD}).to_string().into_bytes();
                let a = post_from(from, s_addr, "/api/auth/register", &[], body).unwrap_or_else(|| panic!("registration {i}: the connection closed without an answer"));
                (a.status, a.header("retry-after"))
            })
        })
        .collect();
    let answers: Vec<(u16, Option<String>)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    health.join().unwrap();
    let (_, peak) = memory_of(s.pid());
    for (i, (status, retry)) in answers.iter().enumerate() {
        assert!([201, 429, 503].contains(status), "registration {i}: {status}");
        if *status != 201 {
            assert!(retry.is_some(), "registration {i}: {status} without Retry-After");
        }
    }
    assert!(answers.iter().any(|a| a.0 == 201), "no registration went through: {answers:?}");
    assert!(health_ok.load(Ordering::Relaxed) > 0, "/health was never asked");
    let grown = peak.saturating_sub(before);
    assert!(grown < 300 * MB, "150 concurrent registrations raised the server's peak memory by {} MB", grown / MB);
    assert_eq!(s.anon().get("/health").0, 200);
}

/// Every password hash left its 19 MiB argon2 buffer resident (glibc's dynamic mmap threshold
/// rose to 19 MiB after the first free; later buffers came from the heap, where small
/// allocations split them): each registration grew the server by ~19 MiB for good, and a
/// concurrent flood by ~300 MiB.
#[test]
fn password_hashes_do_not_stay_resident() {
    let s = Server::start_with(&temp_dir("hashrss"), &["--hash-concurrency", "2"], true);
    let tag = std::process::id();
    // Warm up: the first registration allocates the server's lasting per-user structures.
    assert_eq!(register_from(&s, Ipv4Addr::new(127, 0, 13, 1), &format!("hr0-{tag}@example.com"), &[]).status, 201);
    let (before, _) = memory_of(s.pid());
    for i in 1..=8u8 {
        let a = register_from(&s, Ipv4Addr::new(127, 0, 13, i + 1), &format!("hr{i}-{tag}@example.com"), &[]);
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let (after, _) = memory_of(s.pid());
    let grown = after.saturating_sub(before);
    assert!(grown < 40 * MB, "8 sequential registrations left {} MB more resident", grown / MB);
}

/// Registration had no per-address limit.
#[test]
fn registrations_are_rate_limited_per_address_whatever_forwarding_headers_say() {
    let s = Server::start_with(&temp_dir("regrate"), &["--register-rate", "3"], true);
    let hog = Ipv4Addr::new(127, 0, 12, 1);
    let tag = std::process::id();
    let spoofs = [("X-Forwarded-For", "203.0.113.1"), ("X-Real-IP", "203.0.113.2"), ("X-Voltrun-Peer", "203.0.113.3")];
    for (i, spoof) in spoofs.iter().enumerate() {
        let a = register_from(&s, hog, &format!("rr{i}-{tag}@example.com"), &[*spoof]);
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let a = register_from(&s, hog, &format!("rr9-{tag}@example.com"), &[("X-Forwarded-For", "198.51.100.7")]);
    assert_eq!(a.status, 429, "a fourth registration from one address: {}", a.body);
    let secs: u64 = a.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let a = register_from(&s, Ipv4Addr::new(127, 0, 12, 2), &format!("rr10-{tag}@example.com"), &[]);
    assert_eq!(a.status, 201, "another address: {}", a.body);
}

/// Ten bad logins from one address locked the account for everyone: the limit was per email.
/// Failed attempts now count per (email, address), with a much higher limit per email, and
/// successful logins count toward neither.
#[test]
fn failed_logins_from_one_address_do_not_lock_out_the_owner_from_another() {
    let s = Server::start();
    let email = format!("owner-{}@example.com", std::process::id());
    assert_eq!(register_from(&s, Ipv4Addr::new(127, 0, 13, 9), &email, &[]).status, 201);
    let attacker = Ipv4Addr::new(127, 0, 13, 1);
    for i in 0..10 {
        let a = login_from(&s, attacker, &email, "wrong password");
        assert_eq!(a.status, 401, "bad attempt {i}: {}", a.body);
    }
    let a = login_from(&s, attacker, &email, "wrong password");
    assert_eq!(a.status, 429, "the guessing address is limited: {}", a.body);
    // Spoofed forwarding headers do not give the attacker a fresh address.
    let a = post_from(attacker, server_addr(&s), "/api/auth/login", &[("X-Forwarded-For", "127.0.13.2")], json!({"email": email, "password": "wrong"}).to_string().into_bytes())
        .unwrap();
    assert_eq!(a.status, 429, "{}", a.body);
    let a = login_from(&s, Ipv4Addr::new(127, 0, 13, 2), &email, PASSWORD);
    assert_eq!(a.status, 200, "the owner, from another address: {}", a.body);
    // Successful logins are not failures: a dozen in a row all work.
    for i in 0..12 {
        let a = login_from(&s, Ipv4Addr::new(127, 0, 13, 3), &email, PASSWORD);
        assert_eq!(a.status, 200, "correct login {i}: {}", a.body);
    }
}

/// Credential fields are checked for size before anything is stored or hashed.
#[test]
fn oversized_credential_fields_are_refused_before_use() {
    let s = Server::start();
    let anon = s.anon();
    let long_email = format!("{}@example.com", "e".repeat(300));
    let long_password = "p".repeat(1025);
    for (path, body) in [
        ("/api/auth/register", json!({"email": long_email, "password": PASSWORD})),
        ("/api/auth/login", json!({"email": long_email, "password": PASSWORD})),
        ("/api/auth/register", json!({"email": "ok@example.com", "password": long_password})),
        ("/api/auth/login", json!({"email": "ok@example.com", "password": long_password})),
        ("/api/auth/register", json!({"email": "ok2@example.com", "password": PASSWORD, "name": "n".repeat(101)})),
    ] {
        let (status, b) = anon.post(path, &body);
        assert_eq!(assert_error(status, &b, 400), "validation_failed", "{path}");
    }
    let (status, b) = anon.post("/api/auth/refresh", &json!({"refresh_token": "r".repeat(10_000)}));
    assert_error(status, &b, 401);
    let (status, b) = anon.with_header("x-api-key", &format!("vr_{}", "k".repeat(8000))).get("/api/auth/me");
    assert_error(status, &b, 401);
    // Auth bodies are small: 20 KiB is refused as too large, whatever it holds.
    let big = json!({"email": "ok@example.com", "password": PASSWORD, "pad": "x".repeat(20 << 10)}).to_string().into_bytes();
    let a = post_from(Ipv4Addr::new(127, 0, 14, 1), server_addr(&s), "/api/auth/login", &[], big).expect("an answer");
    assert_eq!(a.status, 413, "{}", a.body);
}

fn sign(key: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

const SECRET: &str = "hardening-test-secret-0123456789abcdef";

/// Contained already; kept: `alg: none`, an empty key, a swapped `sub`, an expired token and
/// a token of another type are all 401; a token we sign right is accepted (so the others
/// fail for what they are, not for how we made them).
#[test]
fn forged_and_expired_jwts_are_refused() {
    let s = Server::start_with(&temp_dir("jwt"), &["--jwt-secret", SECRET], true);
    let anon = s.anon();
    let (_, alice) = anon.post("/api/auth/register", &json!({"email": format!("alice-{}@example.com", std::process::id()), "password": PASSWORD}));
    let (_, bob) = anon.post("/api/auth/register", &json!({"email": format!("bob-{}@example.com", std::process::id()), "password": PASSWORD}));
    let alice_id = alice["user"]["id"].as_str().unwrap();
    let bob_id = bob["user"]["id"].as_str().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    let good = sign(SECRET.as_bytes(), &hs, &json!({"sub": alice_id, "iat": now, "exp": now + 600, "typ": "access"}));
    let me = |t: &str| anon.with_header("authorization", &format!("Bearer {t}")).get("/api/auth/me");
    let (status, body) = me(&good);
    assert_eq!(status, 200, "a token signed as the server does: {body}");
    assert_eq!(body["id"], alice_id);

    let alice_token = alice["token"].as_str().unwrap();
    let parts: Vec<&str> = alice_token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!(bob_id);
    let swapped = format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2]);
    let none = format!("{}.{}.", B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()), B64.encode(json!({"sub": bob_id, "exp": now + 600, "typ": "access"}).to_string()));
    let forged = [
        ("alg none", none.clone()),
        ("alg none with a signature", format!("{none}{}", parts[2])),
        ("empty key", sign(b"", &hs, &json!({"sub": bob_id, "iat": now, "exp": now + 600, "typ": "access"}))),
        ("swapped sub", swapped),
        ("expired", sign(SECRET.as_bytes(), &hs, &json!({"sub": alice_id, "iat": now - 7200, "exp": now - 3600, "typ": "access"}))),
        ("no exp", sign(SECRET.as_bytes(), &hs, &json!({"sub": alice_id, "iat": now, "typ": "access"}))),
        ("not an access token", sign(SECRET.as_bytes(), &hs, &json!({"sub": alice_id, "iat": now, "exp": now + 600, "typ": "refresh"}))),
        ("alg HS512 header", sign(SECRET.as_bytes(), &json!({"alg": "HS512", "typ": "JWT"}), &json!({"sub": alice_id, "exp": now + 600, "typ": "access"}))),
    ];
    for (what, token) in forged {
        let (status, body) = me(&token);
        assert_eq!(status, 401, "{what}: {body}");
        assert_error(status, &body, 401);
    }
}

/// Contained already; kept: presenting a used refresh token again revokes its whole family,
/// so a thief and the owner cannot both keep refreshing.
#[test]
fn reusing_a_refresh_token_revokes_its_family() {
    let s = Server::start();
    let anon = s.anon();
    let (_, reg) = anon.post("/api/auth/register", &json!({"email": format!("fam-{}@example.com", std::process::id()), "password": PASSWORD}));
    let r1 = reg["refresh_token"].as_str().unwrap().to_string();
    let (status, b) = anon.post("/api/auth/refresh", &json!({"refresh_token": r1}));
    assert_eq!(status, 200, "{b}");
    let r2 = b["refresh_token"].as_str().unwrap().to_string();
    let (status, b) = anon.post("/api/auth/refresh", &json!({"refresh_token": r1}));
    assert_error(status, &b, 401);
    let (status, b) = anon.post("/api/auth/refresh", &json!({"refresh_token": r2}));
    assert_error(status, &b, 401);
    // Another login starts a family of its own.
    let (status, b) = anon.post("/api/auth/login", &json!({"email": reg["user"]["email"], "password": PASSWORD}));
    assert_eq!(status, 200, "{b}");
    let (status, b) = anon.post("/api/auth/refresh", &json!({"refresh_token": b["refresh_token"]}));
    assert_eq!(status, 200, "{b}");
}

/// Contained already; kept: an API key's listed prefix is not a key, and a deleted key stops
/// working at once.
#[test]
fn api_key_prefixes_and_deleted_keys_are_refused() {
    let s = Server::start();
    let user = s.user();
    let (status, k) = user.post("/api/keys", &json!({"name": "ci"}));
    assert_eq!(status, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    let prefix = k["prefix"].as_str().unwrap().to_string();
    let anon = s.anon();
    assert_eq!(anon.with_header("x-api-key", &key).get("/api/auth/me").0, 200);
    for bad in [prefix.clone(), format!("{prefix}*"), key[..key.len() - 1].to_string()] {
        let (status, b) = anon.with_header("x-api-key", &bad).get("/api/auth/me");
        assert_error(status, &b, 401);
    }
    let (status, _) = user.delete(&format!("/api/keys/{}", k["id"].as_str().unwrap()));
    assert!(status == 204 || status == 200, "{status}");
    let (status, b) = anon.with_header("authorization", &format!("Bearer {key}")).get("/api/auth/me");
    assert_error(status, &b, 401);
}

/// On PostgreSQL, two `serve` nodes without `--jwt-secret` each generated a key of their own
/// and refused each other's tokens. The key now lives in the shared database.
#[test]
fn a_token_from_one_postgresql_node_works_on_another_without_a_jwt_secret() {
    let db = PgDatabase::create();
    let node = || Server::spawn(&temp_dir("jwtnode"), &["--database-url".to_string(), db.url.clone()], true);
    let (n1, n2) = (node(), node());
    let (status, reg) = n1.anon().post("/api/auth/register", &json!({"email": format!("shared-{}@example.com", std::process::id()), "password": PASSWORD}));
    assert_eq!(status, 201, "{reg}");
    let token = reg["token"].as_str().unwrap();
    let (status, me) = n2.anon().with_header("authorization", &format!("Bearer {token}")).get("/api/auth/me");
    assert_eq!(status, 200, "node 2 refused node 1's token: {me}");
    assert_eq!(me["id"], reg["user"]["id"]);
    // And after a restart (the key is read back, not regenerated).
    let n1 = n1.restarted(&["--database-url", &db.url]);
    let (status, me) = n1.anon().with_header("authorization", &format!("Bearer {token}")).get("/api/auth/me");
    assert_eq!(status, 200, "node 1 after a restart: {me}");
    drop((n1, n2));
}
