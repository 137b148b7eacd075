//! Accounts and credentials over HTTP: register, login, refresh rotation, `/api/auth/me`,
//! the login rate limit, and API keys (creation, listing, use, revocation, ownership).

use serde_json::{json, Value};

use crate::harness::*;

const PASSWORD: &str = "correct horse";

/// A unique email for one test.
fn email(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{nanos:x}@example.com")
}

fn register(server: &Server, email: &str, password: &str) -> (u16, Value) {
    server.anon().post("/api/auth/register", &json!({"email": email, "password": password, "name": "Ada"}))
}

fn login(server: &Server, email: &str, password: &str) -> (u16, Value) {
    server.anon().post("/api/auth/login", &json!({"email": email, "password": password}))
}

fn bearer(server: &Server, token: &str) -> Client {
    server.anon().with_header("authorization", &format!("Bearer {token}"))
}

/// Asserts `{token, refresh_token, expires_in}` and returns (token, refresh_token).
fn assert_tokens(body: &Value) -> (String, String) {
    let token = body["token"].as_str().unwrap_or_else(|| panic!("no token: {body}"));
    let refresh = body["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh_token: {body}"));
    assert!(!token.is_empty() && !refresh.is_empty(), "{body}");
    assert_ne!(token, refresh, "{body}");
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0), "expires_in: {body}");
    (token.to_string(), refresh.to_string())
}

/// Asserts the user shape `{id, email, name, created_at}`.
fn assert_user(user: &Value, email: &str) {
    assert!(user["id"].as_str().is_some_and(|s| !s.is_empty()), "{user}");
    assert_eq!(user["email"].as_str().map(str::to_lowercase), Some(email.to_lowercase()), "{user}");
    assert_eq!(user["name"], "Ada", "{user}");
    let created = user["created_at"].as_str().unwrap_or_else(|| panic!("no created_at: {user}"));
    assert!(created.len() >= 20 && created.as_bytes()[10] == b'T' && created.ends_with('Z'), "created_at not RFC 3339 UTC: {created}");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none(), "user leaks the password: {user}");
}

#[test]
fn register_returns_tokens_and_user() {
    let server = Server::start();
    let e = email("reg");
    let (status, body) = register(&server, &e, PASSWORD);
    assert_eq!(status, 201, "{body}");
    let (token, _) = assert_tokens(&body);
    assert_user(&body["user"], &e);
    let (status, me) = bearer(&server, &token).get("/api/auth/me");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], body["user"]["id"]);
}

#[test]
fn register_duplicate_email_is_409_even_in_another_case() {
    let server = Server::start();
    let e = email("dup");
    assert_eq!(register(&server, &e, PASSWORD).0, 201);
    let (status, body) = register(&server, &e, PASSWORD);
    assert_eq!(assert_error(status, &body, 409), "conflict");
    let (status, body) = register(&server, &e.to_uppercase(), PASSWORD);
    assert_error(status, &body, 409);
    let (status, body) = register(&server, &format!("  {e}  "), PASSWORD);
    assert!(status == 409 || status == 400, "padded duplicate email: {status} {body}");
}

#[test]
fn register_rejects_bad_email_and_short_password() {
    let server = Server::start();
    for bad in ["", "plainaddress", "a@b", "@example.com", "a b@example.com", "a@example.com."] {
        let (status, body) = register(&server, bad, PASSWORD);
        assert_error(status, &body, 400);
    }
    for short in ["", "1234567", "short"] {
        let (status, body) = register(&server, &email("short"), short);
        assert_error(status, &body, 400);
    }
    // Exactly 8 characters is enough.
    assert_eq!(register(&server, &email("eight"), "12345678").0, 201);
}

#[test]
fn login_returns_tokens_and_user() {
    let server = Server::start();
    let e = email("login");
    assert_eq!(register(&server, &e, PASSWORD).0, 201);
    let (status, body) = login(&server, &e, PASSWORD);
    assert_eq!(status, 200, "{body}");
    let (token, _) = assert_tokens(&body);
    assert_user(&body["user"], &e);
    assert_eq!(bearer(&server, &token).get("/api/auth/me").0, 200);
    // The email is not case-sensitive.
    let (status, body) = login(&server, &e.to_uppercase(), PASSWORD);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn login_failure_says_the_same_for_unknown_email_and_wrong_password() {
    let server = Server::start();
    let e = email("same");
    assert_eq!(register(&server, &e, PASSWORD).0, 201);
    let (s1, wrong_password) = login(&server, &e, "not the password");
    let (s2, unknown_email) = login(&server, &email("nobody"), PASSWORD);
    assert_error(s1, &wrong_password, 401);
    assert_error(s2, &unknown_email, 401);
    assert_eq!(wrong_password, unknown_email, "the two failures must not tell which part was wrong");
}

#[test]
fn refresh_rotates_tokens() {
    let server = Server::start();
    let e = email("refresh");
    let (_, body) = register(&server, &e, PASSWORD);
    let (_, r1) = assert_tokens(&body);

    let (status, body) = server.anon().post("/api/auth/refresh", &json!({"refresh_token": r1}));
    assert_eq!(status, 200, "{body}");
    let (t2, r2) = assert_tokens(&body);
    assert_ne!(r1, r2, "the refresh token must rotate");
    let (status, me) = bearer(&server, &t2).get("/api/auth/me");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"].as_str().map(str::to_lowercase), Some(e.to_lowercase()));

    // The new refresh token works once too.
    let (status, body) = server.anon().post("/api/auth/refresh", &json!({"refresh_token": r2}));
    assert_eq!(status, 200, "{body}");
    let (t3, _) = assert_tokens(&body);
    assert_eq!(bearer(&server, &t3).get("/api/auth/me").0, 200);

    // Used ones stop working.
    for used in [&r1, &r2] {
        let (status, body) = server.anon().post("/api/auth/refresh", &json!({"refresh_token": used}));
        assert_error(status, &body, 401);
    }
    for garbage in ["", "garbage", "vr_notarefresh", &"A".repeat(4096)] {
        let (status, body) = server.anon().post("/api/auth/refresh", &json!({"refresh_token": garbage}));
        assert_error(status, &body, 401);
    }
    // An access token is not a refresh token.
    let (status, body) = server.anon().post("/api/auth/refresh", &json!({"refresh_token": t3}));
    assert_error(status, &body, 401);
}

#[test]
fn me_requires_valid_credentials() {
    let server = Server::start();
    let (_, body) = register(&server, &email("me"), PASSWORD);
    let (token, _) = assert_tokens(&body);
    let (status, me) = bearer(&server, &token).get("/api/auth/me");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me, body["user"], "me is the registered user");

    let (status, body) = server.anon().get("/api/auth/me");
    assert_eq!(assert_error(status, &body, 401), "unauthorized");

    // One character of the signature changed.
    let sig_start = token.rfind('.').unwrap() + 1;
    let mut tampered = token.clone().into_bytes();
    tampered[sig_start + 5] = if tampered[sig_start + 5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_ne!(tampered, token);

    // The payload changed, signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);

    let headers = [
        ("authorization", "Bearer garbage".to_string()),
        ("authorization", "Bearer ".to_string()),
        ("authorization", format!("Bearer {tampered}")),
        ("authorization", format!("Bearer {forged_payload}")),
        ("authorization", format!("Bearer {token}.extra")),
        ("authorization", "Basic x".to_string()),
        ("authorization", format!("Basic {token}")),
        ("authorization", token.clone()),
        ("x-api-key", "garbage".to_string()),
    ];
    for (name, value) in headers {
        let (status, body) = server.anon().with_header(name, &value).get("/api/auth/me");
        assert_eq!(status, 401, "{name}: {value} -> {body}");
        assert_error(status, &body, 401);
    }
}

#[test]
fn login_is_rate_limited_per_email() {
    let server = Server::start();
    let e = email("limit");
    assert_eq!(register(&server, &e, PASSWORD).0, 201);
    for i in 0..10 {
        let (status, body) = login(&server, &e, "wrong password");
        assert_eq!(status, 401, "attempt {i}: {body}");
    }
    let r = server.anon().raw("POST", "/api/auth/login", Some(json!({"email": e, "password": "wrong password"}).to_string().as_bytes()), &[("content-type", "application/json")]);
    assert_eq!(assert_error(r.status, &r.json(), 429), "throttled");
    let retry_after = r.header("retry-after").unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers));
    let secs: u64 = retry_after.parse().unwrap_or_else(|_| panic!("Retry-After not a number of seconds: {retry_after}"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");

    // Another email is not throttled.
    let other = email("other");
    assert_eq!(register(&server, &other, PASSWORD).0, 201);
    assert_eq!(login(&server, &other, PASSWORD).0, 200);
}

/// Creates an API key and returns the 201 body.
fn create_key(c: &Client, name: &str) -> Value {
    let (status, k) = c.post("/api/keys", &json!({"name": name}));
    assert_eq!(status, 201, "{k}");
    k
}

#[test]
fn api_key_create_list_use() {
    let server = Server::start();
    let user = server.user();
    let (_, me) = user.get("/api/auth/me");

    let k = create_key(&user, "ci");
    let key = k["key"].as_str().unwrap_or_else(|| panic!("no key: {k}")).to_string();
    assert!(key.starts_with("vr_") && key.len() >= 24, "{key}");
    let prefix = k["prefix"].as_str().unwrap_or_else(|| panic!("no prefix: {k}")).to_string();
    assert!(prefix.starts_with("vr_") && key.starts_with(&prefix) && prefix.len() < key.len(), "prefix {prefix} of {key}");
    assert!(k["id"].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    assert_eq!(k["name"], "ci");
    assert!(k["created_at"].as_str().is_some(), "{k}");
    assert!(k["expires_at"].is_null(), "{k}");

    let (status, list) = user.get("/api/keys");
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap_or_else(|| panic!("no items: {list}"));
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], k["id"]);
    assert_eq!(items[0]["prefix"], prefix.as_str());
    assert!(items[0].get("key").is_none(), "the list shows the key: {list}");
    assert!(!list.to_string().contains(&key), "the list leaks the key: {list}");

    for (name, value) in [("authorization", format!("Bearer {key}")), ("x-api-key", key.clone())] {
        let (status, body) = server.anon().with_header(name, &value).get("/api/auth/me");
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["id"], me["id"]);
    }
    // A key can do what a token can.
    let by_key = server.anon().with_header("x-api-key", &key);
    by_key.create_function("made-by-key", "python", "def handler(event, context):\n    return event\n", json!({}));
    let (status, f) = user.get("/api/functions/made-by-key");
    assert_eq!(status, 200, "{f}");
}

#[test]
fn api_key_revoked_at_once() {
    let server = Server::start();
    let user = server.user();
    let k = create_key(&user, "temp");
    let key = k["key"].as_str().unwrap().to_string();
    let by_key = server.anon().with_header("authorization", &format!("Bearer {key}"));
    assert_eq!(by_key.get("/api/auth/me").0, 200);

    let (status, body) = user.delete(&format!("/api/keys/{}", k["id"].as_str().unwrap()));
    assert_eq!(status, 204, "{body}");
    let (status, body) = by_key.get("/api/auth/me");
    assert_error(status, &body, 401);
    let (status, body) = server.anon().with_header("x-api-key", &key).get("/api/functions");
    assert_error(status, &body, 401);
    let (_, list) = user.get("/api/keys");
    assert_eq!(list["items"], json!([]), "{list}");
    // A second delete finds nothing.
    let (status, body) = user.delete(&format!("/api/keys/{}", k["id"].as_str().unwrap()));
    assert_error(status, &body, 404);
}

#[test]
fn api_key_of_another_user_is_404() {
    let server = Server::start();
    let (a, b) = (server.user(), server.user());
    let k = create_key(&a, "mine");
    let id = k["id"].as_str().unwrap();
    let (status, body) = b.delete(&format!("/api/keys/{id}"));
    assert_eq!(assert_error(status, &body, 404), "not_found");
    let (_, list) = b.get("/api/keys");
    assert_eq!(list["items"], json!([]), "B sees A's keys: {list}");
    // A's key still works.
    let key = k["key"].as_str().unwrap();
    assert_eq!(server.anon().with_header("x-api-key", key).get("/api/auth/me").0, 200);
}

#[test]
fn invalid_api_keys_are_401() {
    let server = Server::start();
    let user = server.user();
    let key = create_key(&user, "real")["key"].as_str().unwrap().to_string();
    let mut altered = key.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'a' { b'b' } else { b'a' };
    let altered = String::from_utf8(altered).unwrap();
    for bad in ["vr_", "vr_invalid", altered.as_str(), &format!("{key}x"), &format!("vr_{}", "z".repeat(5000))] {
        for (name, value) in [("authorization", format!("Bearer {bad}")), ("x-api-key", bad.to_string())] {
            let (status, body) = server.anon().with_header(name, &value).get("/api/auth/me");
            assert_eq!(status, 401, "{name}: {bad} -> {body}");
            assert_error(status, &body, 401);
        }
    }
}

#[test]
fn api_key_input_validation() {
    let server = Server::start();
    let user = server.user();
    for body in [
        json!({"name": "k", "expires_in_days": 0}),
        json!({"name": "k", "expires_in_days": -1}),
        json!({"name": "k", "expires_in_days": "7"}),
        json!({"name": "k", "expires_in_days": 1.5}),
        json!({"name": ""}),
        json!({"name": "k", "scope": "all"}),
        json!({}),
    ] {
        let (status, resp) = user.post("/api/keys", &body);
        assert_eq!(status, 400, "{body} -> {resp}");
        assert_error(status, &resp, 400);
    }
    let (status, k) = user.post("/api/keys", &json!({"name": "week", "expires_in_days": 7}));
    assert_eq!(status, 201, "{k}");
    let expires = k["expires_at"].as_str().unwrap_or_else(|| panic!("no expires_at: {k}"));
    let created = k["created_at"].as_str().unwrap();
    assert!(expires > created, "{k}");
    assert_eq!(server.anon().with_header("x-api-key", k["key"].as_str().unwrap()).get("/api/auth/me").0, 200);
    // The key list needs authentication.
    let (status, body) = server.anon().get("/api/keys");
    assert_error(status, &body, 401);
    let (status, body) = server.anon().post("/api/keys", &json!({"name": "k"}));
    assert_error(status, &body, 401);
}
