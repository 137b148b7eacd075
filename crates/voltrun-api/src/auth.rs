//! Accounts and credentials: registration, login, refresh-token rotation, access tokens
//! (HS256 JWTs), and resolving a request's credentials to a user.
//!
//! Two ways to hold a session. API clients (CLI, SDKs) get the refresh token in the JSON body
//! and send it back in the body. The dashboard asks with `X-VoltRun-Session: cookie` and gets
//! it in an `HttpOnly; Secure; SameSite=Strict; Path=/api/auth` cookie instead, which no
//! script can read (a function's page on the same host included); its access token lives only
//! in the page's memory. Requests that spend the cookie (refresh, logout) must carry that
//! header, which a cross-origin page cannot send without a CORS preflight we never grant, and
//! are refused when `Origin` or `Sec-Fetch-Site` says they come from another origin.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voltrun_core::{id, time};
use voltrun_store::User;

use crate::error::{error_body, ApiError, ApiResult};
use crate::extract::{parse_json, Body, Caller, Json};
use crate::hashpool::{HashPool, HashPoolConfig, PoolError};
use crate::openapi::ErrorBody;
use crate::AppState;

/// Lifetime of an access token.
pub const ACCESS_TTL_S: i64 = 3600;
/// Lifetime of a refresh token.
const REFRESH_TTL_S: i64 = 30 * 24 * 3600;
/// Longest password accepted: argon2 time grows with input, so cap what a caller can make us hash.
const MAX_PASSWORD: usize = 1024;
/// Longest email accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// Longest refresh token or API key looked at: ours are 43 and 43 characters.
const MAX_TOKEN: usize = 256;
/// Largest request body on `/api/auth/*`: credentials are small, so a large body is refused
/// before it is read.
pub const MAX_AUTH_BODY: usize = 16 * 1024;
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}

/// Routes under `/api/auth`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_AUTH_BODY))
}

/// `POST /api/auth/register` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    /// At most 254 characters.
    email: String,
    /// 8 characters to 1024 bytes.
    password: String,
    /// At most 100 characters.
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/auth/login` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

/// `POST /api/auth/refresh` and `/logout` body (API clients; the dashboard sends none and
/// uses the cookie).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// An account, as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView { id: u.id.clone(), email: u.email.clone(), name: u.name.clone(), created_at: u.created_at.clone() }
    }
}

/// The answer of register, login and refresh (built by `issue_tokens`, `with_user` and
/// `session_response`).
#[derive(Serialize, ToSchema)]
pub struct SessionTokens {
    /// The access token (HS256 JWT) for `Authorization: Bearer`.
    pub token: String,
    /// The single-use refresh token; absent with the cookie session (it is in the cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds the access token is valid.
    pub expires_in: i64,
    /// The account: register and login only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
}

fn user_json(u: &User) -> Value {
    serde_json::to_value(UserView::from(u)).expect("a user serialises")
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else { return false };
    !local.is_empty()
        && e.len() <= MAX_EMAIL
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

/// Refuses an email or password no account can have, before anything is stored or hashed.
fn check_credential_sizes(email: &str, password: &str) -> ApiResult<()> {
    if email.trim().len() > MAX_EMAIL {
        return Err(ApiError::bad("validation_failed", "email: at most 254 characters"));
    }
    if password.len() > MAX_PASSWORD {
        return Err(ApiError::bad("validation_failed", "password: at most 1024 bytes"));
    }
    Ok(())
}

fn throttled(what: &str, retry_after_s: u64) -> ApiError {
    ApiError::Throttled { message: format!("too many {what}; try again later"), retry_after_s }
}

/// Create an account.
///
/// Logs it in: the answer holds the tokens and the user.
#[utoipa::path(post, path = "/register", tag = "auth", operation_id = "register", params(("X-VoltRun-Session" = Option<String>, Header, description = "`cookie`: the refresh token travels in an HttpOnly cookie instead of the body (the dashboard)")), request_body = RegisterBody,
    responses(
        (status = 201, description = "The new account's session", body = SessionTokens),
        (status = 409, description = "An account with this email exists", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 429, description = "`throttled`: too many registrations from this address", body = ErrorBody),
    ))]
async fn register(State(st): State<AppState>, headers: HeaderMap, Json(b): Json<RegisterBody>) -> ApiResult<Response> {
    check_credential_sizes(&b.email, &b.password)?;
    let email = b.email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(ApiError::bad("validation_failed", "email: not a valid email address"));
    }
    if b.password.chars().count() < 8 {
        return Err(ApiError::bad("validation_failed", "password: must be at least 8 characters"));
    }
    if b.password.len() > MAX_PASSWORD {
        return Err(ApiError::bad("validation_failed", "password: at most 1024 bytes"));
    }
    let name = b.name.unwrap_or_default().trim().to_string();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad("validation_failed", "name: at most 100 characters, no control characters"));
    }
    // Every valid registration counts against its address: each costs an argon2 hash.
    let ip = crate::client_net(&headers);
    st.limits.register_ip.hit(&ip).map_err(|s| throttled("registrations from this address", s))?;
    let password_hash = hash_password(&st, b.password).await?;
    let user = User { id: id::new_id("usr_"), email, name, password_hash, created_at: time::now() };
    st.store.insert_user(&user).await.map_err(|e| match e {
        voltrun_store::StoreError::Conflict(_) => ApiError::Conflict("an account with this email already exists".into()),
        other => other.into(),
    })?;
    let tokens = issue_tokens(&st, &user.id, None).await?;
    Ok(session_response(&headers, StatusCode::CREATED, with_user(tokens, &user)))
}

fn with_user(mut tokens: Value, u: &User) -> Value {
    tokens["user"] = user_json(u);
    tokens
}

/// Log in.
#[utoipa::path(post, path = "/login", tag = "auth", operation_id = "login", params(("X-VoltRun-Session" = Option<String>, Header, description = "`cookie`: the refresh token travels in an HttpOnly cookie instead of the body (the dashboard)")), request_body = LoginBody,
    responses(
        (status = 200, description = "The session", body = SessionTokens),
        (status = 401, description = "Invalid email or password", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 429, description = "`throttled`: too many login attempts", body = ErrorBody),
    ))]
async fn login(State(st): State<AppState>, headers: HeaderMap, Json(b): Json<LoginBody>) -> ApiResult<Response> {
    check_credential_sizes(&b.email, &b.password)?;
    let email = b.email.trim().to_lowercase();
    let wrong = || ApiError::Unauthorized("invalid email or password".into());
    if !valid_email(&email) {
        return Err(wrong());
    }
    let ip = crate::client_net(&headers);
    // Every attempt counts against its address (each costs an argon2 verify). Only failed
    // attempts count against the email, per address and (much higher) in all, so someone
    // guessing from one address cannot lock the owner out from another.
    let pair = format!("{email}\n{ip}");
    let too_many = |s| throttled("login attempts", s);
    st.limits.login_failed_pair.check(&pair).map_err(too_many)?;
    st.limits.login_failed_email.check(&email).map_err(too_many)?;
    st.limits.login_ip.hit(&ip).map_err(too_many)?;
    let user = st.store.user_by_email(&email).await?;
    // Verify against a fixed hash when the email is unknown, so timing does not tell.
    let stored = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| st.auth.dummy_hash.clone());
    let ok = verify_password(&st, b.password, stored).await?;
    match user {
        Some(u) if ok => {
            let tokens = issue_tokens(&st, &u.id, None).await?;
            Ok(session_response(&headers, StatusCode::OK, with_user(tokens, &u)))
        }
        _ => {
            st.limits.login_failed_pair.record(&pair);
            st.limits.login_failed_email.record(&email);
            Err(wrong())
        }
    }
}

/// Rotate a refresh token.
///
/// `{refresh_token}` in the body, or with `X-VoltRun-Session: cookie` the cookie session
/// (from the dashboard's own origin only). A spent token revokes its whole family.
#[utoipa::path(post, path = "/refresh", tag = "auth", operation_id = "refresh", params(("X-VoltRun-Session" = Option<String>, Header, description = "`cookie`: the refresh token travels in an HttpOnly cookie instead of the body (the dashboard)")),
    request_body(content = Option<RefreshBody>, description = "API clients: the refresh token; the cookie session sends no body", content_type = "application/json"),
    responses(
        (status = 200, description = "A new access token and refresh token (no `user`)", body = SessionTokens),
        (status = 204, description = "Cookie session: there is no session to restore"),
        (status = 401, description = "Invalid, spent or expired refresh token, or a planted session cookie", body = ErrorBody),
        (status = 403, description = "`cross_origin`: the cookie session from another origin", body = ErrorBody),
    ))]
async fn refresh(State(st): State<AppState>, headers: HeaderMap, Body(body): Body) -> ApiResult<Response> {
    let token = if cookie_mode(&headers) {
        if let Err(why) = same_origin(&headers) {
            return Ok(error_body(StatusCode::FORBIDDEN, "cross_origin", why));
        }
        match session_cookie(&headers) {
            SessionCookie::One(t) => t,
            // No session to restore (a dashboard opened while logged out): not an error.
            SessionCookie::None => return Ok(StatusCode::NO_CONTENT.into_response()),
            SessionCookie::Tampered => return Ok(tampered_session()),
        }
    } else {
        refresh_body(&body)?
    };
    if token.len() > MAX_TOKEN {
        return Err(ApiError::Unauthorized("invalid or expired refresh token".into()));
    }
    let hash = sha256_hex(&token);
    match st.store.use_refresh_token(&hash, &time::now()).await? {
        Some((user_id, family)) => Ok(session_response(&headers, StatusCode::OK, issue_tokens(&st, &user_id, Some(family)).await?)),
        None => {
            let resp = ApiError::Unauthorized("invalid or expired refresh token".into()).into_response();
            Ok(if cookie_mode(&headers) { without_cookie(resp) } else { resp })
        }
    }
}

/// Log out.
///
/// `POST /api/auth/logout`: revokes the refresh family of the session cookie (dashboard, with
/// `X-VoltRun-Session: cookie`) or of the body's `refresh_token` (API clients), and clears the
/// cookie. 204 even when there was nothing to revoke.
#[utoipa::path(post, path = "/logout", tag = "auth", operation_id = "logout", params(("X-VoltRun-Session" = Option<String>, Header, description = "`cookie`: the refresh token travels in an HttpOnly cookie instead of the body (the dashboard)")),
    request_body(content = Option<RefreshBody>, description = "API clients: the refresh token; the cookie session sends no body", content_type = "application/json"),
    responses(
        (status = 204, description = "Revoked (also when there was nothing to revoke); the cookie is cleared"),
        (status = 403, description = "`cross_origin`: the cookie session from another origin", body = ErrorBody),
    ))]
async fn logout(State(st): State<AppState>, headers: HeaderMap, Body(body): Body) -> ApiResult<Response> {
    let token = if cookie_mode(&headers) {
        if let Err(why) = same_origin(&headers) {
            return Ok(error_body(StatusCode::FORBIDDEN, "cross_origin", why));
        }
        match session_cookie(&headers) {
            SessionCookie::One(t) => Some(t),
            SessionCookie::None => None,
            SessionCookie::Tampered => return Ok(without_any_session_cookie(StatusCode::NO_CONTENT.into_response())),
        }
    } else {
        Some(refresh_body(&body)?)
    };
    if let Some(t) = token {
        st.store.revoke_refresh_family(&sha256_hex(&t), &time::now()).await?;
    }
    Ok(without_cookie(StatusCode::NO_CONTENT.into_response()))
}

/// The `refresh_token` of a `{"refresh_token": …}` body (an object, as every body of the API).
fn refresh_body(body: &[u8]) -> ApiResult<String> {
    let not_object = body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{');
    if not_object && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return Err(ApiError::bad("validation_failed", "the request body must be a JSON object"));
    }
    let b: RefreshBody = parse_json(body)?;
    Ok(b.refresh_token)
}

/// The name of the dashboard's refresh-token cookie.
pub const SESSION_COOKIE: &str = "voltrun_refresh";
/// The header by which the dashboard asks for (and presents) the cookie session.
pub const SESSION_HEADER: &str = "x-voltrun-session";
const COOKIE_ATTRS: &str = "HttpOnly; Secure; SameSite=Strict; Path=/api/auth";

/// True when a `Cookie` pair or `Set-Cookie` value names the session cookie, or has no name
/// (what a function must neither see nor set). A nameless cookie counts: a browser stores
/// `Set-Cookie: =voltrun_refresh=X` under the empty name and sends it back as
/// `voltrun_refresh=X`, which would plant a session (a forged or the attacker's own) in the
/// dashboard.
pub fn is_session_cookie(pair: &str) -> bool {
    let name_value = pair.split(';').next().unwrap_or("").trim();
    match name_value.split_once('=') {
        None => true,
        Some((name, _)) => {
            let name = name.trim();
            name.is_empty() || name.to_ascii_lowercase().contains(SESSION_COOKIE)
        }
    }
}

/// The client asks for the cookie session (`X-VoltRun-Session: cookie`).
fn cookie_mode(headers: &HeaderMap) -> bool {
    headers.get(SESSION_HEADER).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cookie"))
}

/// What a request's cookies say about the session.
#[derive(Debug, PartialEq)]
enum SessionCookie {
    None,
    One(String),
    /// More than one session pair, or one under another spelling: cookies planted by someone
    /// else (a page on the same host, another port). Never trusted.
    Tampered,
}

/// The refresh token of the session cookie, if sent exactly once as we set it.
fn session_cookie(headers: &HeaderMap) -> SessionCookie {
    let mut found = SessionCookie::None;
    let pairs = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';'));
    let names_session = |p: &&str| p.split_once('=').is_some_and(|(name, _)| name.trim().to_ascii_lowercase().contains(SESSION_COOKIE));
    for pair in pairs.map(str::trim).filter(names_session) {
        let exact = pair.split_once('=').filter(|(name, _)| *name == SESSION_COOKIE).map(|(_, v)| v.trim().to_string());
        found = match (found, exact) {
            (SessionCookie::None, Some(v)) if !v.is_empty() => SessionCookie::One(v),
            (SessionCookie::None, Some(_)) => SessionCookie::None,
            _ => SessionCookie::Tampered,
        };
    }
    found
}

/// Paths where a planted session cookie could shadow ours (a more specific path comes first
/// in the `Cookie` header): cleared, named and nameless, when one is seen.
const SESSION_COOKIE_PATHS: [&str; 5] = ["/", "/api", "/api/auth", "/api/auth/refresh", "/api/auth/logout"];

/// `resp` with every session cookie a browser may hold for us cleared, planted ones included.
fn without_any_session_cookie(mut resp: Response) -> Response {
    for path in SESSION_COOKIE_PATHS {
        for cookie in [format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path={path}; Max-Age=0"), format!("=x; Secure; Path={path}; Max-Age=0")] {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
    resp
}

fn tampered_session() -> Response {
    let resp = error_body(StatusCode::UNAUTHORIZED, "unauthorized", "the session cookie was set by someone else; sign in again");
    without_any_session_cookie(resp)
}

/// Refuses a cookie-authenticated request from another origin: `Sec-Fetch-Site` other than
/// `same-origin`, or an `Origin` that is `null` or not this request's own (`http(s)://` + Host).
/// Clients that send neither header (not a browser) pass; a browser always sends `Origin` on a
/// POST.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err("the session cookie is only accepted from the dashboard's own origin");
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("null");
    let own = !host.is_empty() && (origin.strip_prefix("http://") == Some(host) || origin.strip_prefix("https://") == Some(host));
    if own {
        Ok(())
    } else {
        Err("the session cookie is only accepted from the dashboard's own origin")
    }
}

/// The answer of register, login and refresh: the tokens as JSON, or for the cookie session
/// the refresh token moved from the body into the cookie.
fn session_response(headers: &HeaderMap, status: StatusCode, mut body: Value) -> Response {
    if !cookie_mode(headers) {
        return (status, axum::Json(body)).into_response();
    }
    let refresh = body.as_object_mut().and_then(|o| o.remove("refresh_token"));
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(cookie) =
        refresh.as_ref().and_then(Value::as_str).and_then(|t| HeaderValue::from_str(&format!("{SESSION_COOKIE}={t}; {COOKIE_ATTRS}; Max-Age={REFRESH_TTL_S}")).ok())
    {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `resp` with the session cookie cleared.
fn without_cookie(mut resp: Response) -> Response {
    let clear = HeaderValue::from_str(&format!("{SESSION_COOKIE}=; {COOKIE_ATTRS}; Max-Age=0")).expect("a valid header");
    resp.headers_mut().append(header::SET_COOKIE, clear);
    resp
}

/// The current user.
#[utoipa::path(get, path = "/me", tag = "auth", operation_id = "me", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "The caller's account", body = UserView), (status = 404, description = "The account is gone", body = ErrorBody)))]
async fn me(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<UserView>> {
    let u = st.store.user_by_id(&caller.user_id).await?.ok_or(ApiError::NotFound("user"))?;
    Ok(axum::Json(UserView::from(&u)))
}

/// A new access token and a new refresh token (in `family`, or a new family).
async fn issue_tokens(st: &AppState, user_id: &str, family: Option<String>) -> ApiResult<Value> {
    let refresh = random_token(32);
    let family = family.unwrap_or_else(|| id::new_id("rtf_"));
    let now = time::now();
    st.store.insert_refresh_token(&sha256_hex(&refresh), user_id, &family, &time::in_seconds(REFRESH_TTL_S), &now).await?;
    Ok(json!({
        "token": st.auth.sign(user_id),
        "refresh_token": refresh,
        "expires_in": ACCESS_TTL_S,
    }))
}

/// Secrets and fixed values of authentication.
pub struct AuthKeys {
    jwt_key: Vec<u8>,
    dummy_hash: String,
    /// Where every argon2 hash and verify runs (bounded: see [`HashPool`]).
    hash_pool: HashPool,
}

impl AuthKeys {
    /// Builds the keys from the JWT signing secret.
    pub fn new(jwt_key: Vec<u8>) -> AuthKeys {
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = Argon2::default().hash_password(b"not a real password", &salt).expect("argon2 hashes").to_string();
        AuthKeys { jwt_key, dummy_hash, hash_pool: HashPool::new(HashPoolConfig::default()) }
    }

    /// The same keys, hashing on a pool of this size.
    pub fn with_hash_pool(mut self, cfg: HashPoolConfig) -> AuthKeys {
        self.hash_pool = HashPool::new(cfg);
        self
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.jwt_key).expect("HMAC takes any key length")
    }

    /// An access token for `user_id`, valid for [`ACCESS_TTL_S`].
    pub fn sign(&self, user_id: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"sub": user_id, "iat": now, "exp": now + ACCESS_TTL_S, "typ": "access"});
        let signing_input = format!("{JWT_HEADER}.{}", B64.encode(claims.to_string()));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// The user id of a valid, unexpired access token.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (signing_input, sig) = token.rsplit_once('.')?;
        let (header, claims) = signing_input.split_once('.')?;
        if header != JWT_HEADER {
            return None;
        }
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&B64.decode(sig).ok()?).ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(claims).ok()?).ok()?;
        if claims["typ"] != "access" || claims["exp"].as_i64()? <= chrono::Utc::now().timestamp() {
            return None;
        }
        claims["sub"].as_str().map(str::to_string)
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy => ApiError::Throttled { message: e.to_string(), retry_after_s: 1 },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

async fn hash_password(st: &AppState, password: String) -> ApiResult<String> {
    st.auth
        .hash_pool
        .run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
        })
        .await?
        .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
}

async fn verify_password(st: &AppState, password: String, stored: String) -> ApiResult<bool> {
    st.auth
        .hash_pool
        .run(move || {
            let parsed = PasswordHash::new(&stored).map_err(|e| ApiError::Internal(format!("stored hash: {e}")))?;
            Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await?
}

/// Hex SHA-256, used for tokens and API keys (high-entropy secrets need no slow hash).
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A random URL-safe token of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    B64.encode(buf)
}

/// Resolves the request's credentials: `Authorization: Bearer <JWT | vr_ key>` or
/// `X-API-Key`. None when there are none; 401 when they are present but invalid.
pub async fn authenticate(headers: &HeaderMap, st: &AppState) -> ApiResult<Option<Caller>> {
    let bad = |m: &str| ApiError::Unauthorized(m.to_string());
    let credential = if let Some(v) = headers.get("x-api-key") {
        Some(v.to_str().map_err(|_| bad("malformed X-API-Key header"))?.trim().to_string())
    } else if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| bad("malformed Authorization header"))?;
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).ok_or_else(|| bad("Authorization must be `Bearer <token>`"))?;
        Some(token.trim().to_string())
    } else {
        None
    };
    let Some(credential) = credential else { return Ok(None) };
    if credential.len() > MAX_TOKEN * 8 {
        return Err(bad("invalid credentials"));
    }
    if credential.starts_with(crate::keys::KEY_PREFIX) {
        let owner = st.store.api_key_owner(&sha256_hex(&credential)).await?.ok_or_else(|| bad("invalid API key"))?;
        let now = time::now();
        if owner.expires_at.as_deref().is_some_and(|e| e <= now.as_str()) {
            return Err(bad("this API key has expired"));
        }
        crate::keys::note_use(st, &owner, &now);
        return Ok(Some(Caller { user_id: owner.user_id }));
    }
    match st.auth.verify(&credential) {
        Some(user_id) => Ok(Some(Caller { user_id })),
        None => Err(bad("invalid or expired token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    /// Regression: `Set-Cookie: =voltrun_refresh=X` (no name) passed the filter, and the
    /// browser then sent it back as `voltrun_refresh=X`: a function could plant a session.
    #[test]
    fn nameless_and_respelled_session_cookies_from_a_function_are_refused() {
        for planted in ["=voltrun_refresh=X; Path=/api/auth/refresh", "voltrun_refresh", " =x", "Voltrun_Refresh=x", "__Host-voltrun_refresh=x; Path=/"] {
            assert!(is_session_cookie(planted), "{planted}");
        }
        assert!(!is_session_cookie("theme=dark; Path=/"));
    }

    /// Regression: with a planted session cookie next to ours, the first one sent won.
    #[test]
    fn two_session_cookies_in_one_request_are_tampering_not_a_session() {
        assert_eq!(session_cookie(&cookies("voltrun_refresh=a; voltrun_refresh=b")), SessionCookie::Tampered);
        assert_eq!(session_cookie(&cookies("theme=dark; voltrun_refresh=a")), SessionCookie::One("a".into()));
        assert_eq!(session_cookie(&cookies("theme=dark; other")), SessionCookie::None);
        assert_eq!(session_cookie(&cookies("VOLTRUN_REFRESH=a")), SessionCookie::Tampered);
    }

    #[test]
    fn tokens_round_trip_and_tampering_fails() {
        let k = AuthKeys::new(b"k".repeat(32));
        let t = k.sign("usr_1");
        assert_eq!(k.verify(&t).as_deref(), Some("usr_1"));
        let other = AuthKeys::new(b"x".repeat(32));
        assert!(other.verify(&t).is_none());
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(json!({"sub":"usr_2","exp": i64::MAX,"typ":"access"}).to_string());
        parts[1] = &forged;
        assert!(k.verify(&parts.join(".")).is_none());
        assert!(k.verify("garbage").is_none());
    }

    #[test]
    fn email_validation() {
        for ok in ["a@b.co", "first.last+tag@example.org"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a@.co", "a b@c.co", "a@b.co."] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
