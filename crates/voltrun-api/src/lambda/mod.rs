//! AWS Lambda API compatibility (SPEC §14): AWS's paths and JSON shapes on the API listener,
//! so boto3, the AWS CLI and the AWS SDKs deploy to and invoke VoltRun with an endpoint URL
//! and an `aws` key. An adapter at the edge: every operation translates to the same core
//! types, store and engine calls as the native API (one function, two doors), and AWS's
//! vocabulary stays in this module.
//!
//! One handler takes every path under AWS's dated prefixes: it reads the body (bounded per
//! operation), verifies the SigV4 signature against the key's sealed secret ([`sigv4`]), and
//! only then dispatches on (method, path). A path no operation here has answers
//! `UnsupportedOperationException`, never a 404 page or a 500.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};

use crate::AppState;

pub mod errors;
pub mod functions;
#[cfg(test)]
mod golden;
pub mod invoke;
pub mod shapes;
pub mod sigv4;
pub mod versions;

use errors::{LambdaError, LambdaResult};

/// The dated prefixes of AWS's Lambda API paths (every one the 2015-03-31 model uses), so
/// an operation we do not implement still answers in AWS's words.
const PREFIXES: &[&str] = &[
    "2014-11-13",
    "2015-03-31",
    "2016-08-19",
    "2017-03-31",
    "2017-10-31",
    "2018-10-31",
    "2019-09-25",
    "2019-09-30",
    "2020-04-22",
    "2020-06-30",
    "2021-07-20",
    "2021-10-31",
    "2021-11-15",
    "2024-08-31",
    "2025-11-30",
    "2025-12-01",
    "2026-07-09",
];

/// Largest body of CreateFunction and UpdateFunctionCode: the native create's (a 50 MiB zip
/// in base64 and the other fields).
const CODE_BODY_BYTES: usize = crate::functions::PACKAGE_BODY_BYTES;
/// Largest body of every other operation: Invoke's synchronous payload limit, 6 MB
/// (6,291,456 bytes), as AWS's.
pub const SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest payload of an `Event` (asynchronous) Invoke: 256 KB, as AWS's.
pub const EVENT_PAYLOAD_BYTES: usize = 256 * 1024;

/// The Lambda API's routes: every path under [`PREFIXES`]. Not in the OpenAPI document
/// (these are AWS's operations, documented by AWS's model and docs/LAMBDA_API.md).
pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for p in PREFIXES {
        r = r.route(&format!("/{p}/{{*rest}}"), axum::routing::any(handle)).route(&format!("/{p}"), axum::routing::any(handle));
    }
    r
}

/// Who a verified request is from, and the region it was signed for (ARNs carry it).
#[derive(Debug, Clone)]
pub struct LambdaCaller {
    pub user_id: String,
    pub region: String,
    /// The user's 12-digit account id ([`account_id`]).
    pub account_id: String,
}

/// The stable 12-digit account id of a user in ARNs: the first 8 bytes of
/// SHA-256("voltrun account id v1\0" ‖ user id) as a big-endian integer, modulo 10^12,
/// zero-padded. Derived, not stored: a user id never changes, so neither does this, on every
/// node; two users sharing one (a 10^-12 chance per pair) would only share the digits in
/// their ARNs, never each other's functions (lookups go by the verified caller).
pub fn account_id(user_id: &str) -> String {
    let d = Sha256::digest(format!("voltrun account id v1\0{user_id}").as_bytes());
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % 1_000_000_000_000;
    format!("{n:012}")
}

/// A request after its signature was verified.
pub struct Signed {
    pub caller: LambdaCaller,
    pub method: Method,
    /// Path segments after the dated prefix, percent-decoded (`["functions", "f", "invocations"]`).
    pub segments: Vec<String>,
    pub prefix: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: axum::body::Bytes,
}

impl Signed {
    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn handle(State(st): State<AppState>, req: Request) -> Response {
    match serve(&st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body limit of the operation at this path: code uploads get the package limit.
fn body_limit(method: &Method, segments: &[String]) -> usize {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, s.as_slice()) {
        (&Method::POST, ["functions"]) | (&Method::PUT, ["functions", _, "code"]) => CODE_BODY_BYTES,
        _ => SYNC_PAYLOAD_BYTES,
    }
}

/// Reads the body within `limit`; more is `RequestTooLargeException` (AWS's words for
/// Invoke's limit). A declared length over the limit is refused before anything is read.
async fn read_body(headers: &HeaderMap, body: axum::body::Body, limit: usize) -> LambdaResult<axum::body::Bytes> {
    let too_large = || LambdaError::too_large(format!("Request must be smaller than {limit} bytes for this operation"));
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // axum wraps http-body-util's `LengthLimitError` ("length limit exceeded").
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = source {
            if s.to_string().contains("length limit exceeded") {
                return too_large();
            }
            source = s.source();
        }
        LambdaError::bad_content(format!("the request body could not be read: {e}"))
    })
}

/// The first half of authentication, before the body is read: a SigV4 `Authorization`, a
/// fresh `X-Amz-Date`, and a known, unexpired `aws` key. So an unsigned or stale request, or
/// one naming no key, never makes the server buffer a body (up to 72 MB for code uploads).
async fn identify(st: &AppState, headers: &HeaderMap) -> LambdaResult<(sigv4::Authorization, voltrun_store::AwsKeyOwner, i64)> {
    let auth = sigv4::parse_authorization(headers)?;
    if headers.contains_key("x-amz-security-token") {
        return Err(LambdaError::unrecognized(
            "The security token included in the request is invalid: VoltRun issues no session tokens; sign with an access key from POST /api/keys {\"type\": \"aws\"}",
        ));
    }
    let now = chrono::Utc::now().timestamp();
    sigv4::check_date(&auth, headers, now)?;
    let owner = st.store.aws_key_owner(&auth.access_key_id).await?.ok_or_else(|| LambdaError::unrecognized("The security token included in the request is invalid."))?;
    if owner.expires_at.as_deref().is_some_and(|e| e <= voltrun_core::time::now().as_str()) {
        return Err(LambdaError::unrecognized("The security token included in the request is expired"));
    }
    Ok((auth, owner, now))
}

async fn serve(st: &AppState, req: Request) -> LambdaResult<Response> {
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let mut segs = raw_path.trim_start_matches('/').split('/');
    let prefix = segs.next().unwrap_or("").to_string();
    let segments: Vec<String> = segs.filter(|s| !s.is_empty()).map(decode).collect();
    let limit = body_limit(&parts.method, &segments);
    // A body declared too large is refused before anything else, signed or not.
    let declared = parts.headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(LambdaError::too_large(format!("Request must be smaller than {limit} bytes for this operation")));
    }
    let (auth, owner, now) = identify(st, &parts.headers).await?;
    let body = read_body(&parts.headers, body, limit).await?;
    sigv4::verify(&auth, &owner.secret, parts.method.as_str(), &raw_path, &raw_query, &parts.headers, &body, now)?;
    let stamp = voltrun_core::time::now();
    let key_owner =
        voltrun_store::KeyOwner { key_id: owner.key_id.clone(), user_id: owner.user_id.clone(), expires_at: owner.expires_at.clone(), last_used_at: owner.last_used_at.clone() };
    crate::keys::note_use(st, &key_owner, &stamp);
    let caller = LambdaCaller { account_id: account_id(&owner.user_id), user_id: owner.user_id.clone(), region: auth.region };
    let query = raw_query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).map(|(k, v)| (decode(k), decode(v))).collect();
    let req = Signed { caller, method: parts.method, segments, prefix, query, headers: parts.headers, body };
    dispatch(st, req).await
}

async fn dispatch(st: &AppState, req: Signed) -> LambdaResult<Response> {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = req.method.clone();
    match (req.prefix.as_str(), &m, s.as_slice()) {
        ("2015-03-31", &Method::GET, ["functions"]) => functions::list(st, &req).await,
        ("2015-03-31", &Method::POST, ["functions"]) => functions::create(st, &req).await,
        ("2015-03-31", &Method::GET, ["functions", f]) => functions::get(st, &req, f).await,
        ("2015-03-31", &Method::DELETE, ["functions", f]) => functions::delete(st, &req, f).await,
        ("2015-03-31", &Method::GET, ["functions", f, "configuration"]) => functions::get_configuration(st, &req, f).await,
        ("2015-03-31", &Method::PUT, ["functions", f, "configuration"]) => functions::update_configuration(st, &req, f).await,
        ("2015-03-31", &Method::PUT, ["functions", f, "code"]) => functions::update_code(st, &req, f).await,
        ("2015-03-31", &Method::POST, ["functions", f, "invocations"]) => invoke::invoke(st, &req, f).await,
        ("2015-03-31", &Method::POST, ["functions", f, "versions"]) => versions::publish_version(st, &req, f).await,
        ("2015-03-31", &Method::GET, ["functions", f, "versions"]) => versions::list_versions(st, &req, f).await,
        ("2015-03-31", &Method::POST, ["functions", f, "aliases"]) => versions::create_alias(st, &req, f).await,
        ("2015-03-31", &Method::GET, ["functions", f, "aliases"]) => versions::list_aliases(st, &req, f).await,
        ("2015-03-31", &Method::GET, ["functions", f, "aliases", a]) => versions::get_alias(st, &req, f, a).await,
        ("2015-03-31", &Method::PUT, ["functions", f, "aliases", a]) => versions::update_alias(st, &req, f, a).await,
        ("2015-03-31", &Method::DELETE, ["functions", f, "aliases", a]) => versions::delete_alias(st, &req, f, a).await,
        ("2016-08-19", &Method::GET, ["account-settings"]) => functions::account_settings(st, &req).await,
        _ => Err(LambdaError::unsupported(format!(
            "VoltRun does not support the Lambda operation at {} /{}/{} (docs/LAMBDA_API.md lists the supported operations)",
            req.method,
            req.prefix,
            req.segments.join("/").chars().take(200).collect::<String>()
        ))),
    }
}

/// A `FunctionName` path parameter: a name, `name:qualifier`, a partial ARN
/// (`<account>:function:<name>[:qualifier]`) or a full one
/// (`arn:aws:lambda:<region>:<account>:function:<name>[:qualifier]`). An ARN of another
/// account is not found (as another user's function is). The region of an ARN is not
/// checked: VoltRun has one region per server, whichever the client signs for.
pub fn parse_function_name(caller: &LambdaCaller, raw: &str) -> LambdaResult<(String, Option<String>)> {
    let not_found = || LambdaError::not_found(format!("Function not found: {}", raw.chars().take(200).collect::<String>()));
    let parts: Vec<&str> = raw.split(':').collect();
    let (account, rest): (Option<&str>, &[&str]) = match parts.as_slice() {
        ["arn", "aws", "lambda", _region, account, "function", rest @ ..] => (Some(*account), rest),
        [account, "function", rest @ ..] if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) => (Some(*account), rest),
        rest => (None, rest),
    };
    if account.is_some_and(|a| a != caller.account_id) {
        return Err(not_found());
    }
    match rest {
        [name] if !name.is_empty() => Ok((name.to_string(), None)),
        [name, q] if !name.is_empty() && !q.is_empty() => Ok((name.to_string(), Some(q.to_string()))),
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> LambdaCaller {
        LambdaCaller { user_id: "usr_1".into(), region: "us-east-1".into(), account_id: account_id("usr_1") }
    }

    #[test]
    fn account_ids_are_twelve_digits_and_stable() {
        let a = account_id("usr_1");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, account_id("usr_1"));
        assert_ne!(a, account_id("usr_2"));
    }

    #[test]
    fn function_names_parse_in_every_form_and_other_accounts_are_not_found() {
        let c = caller();
        let acct = c.account_id.clone();
        assert_eq!(parse_function_name(&c, "hello").unwrap(), ("hello".into(), None));
        assert_eq!(parse_function_name(&c, "hello:live").unwrap(), ("hello".into(), Some("live".into())));
        assert_eq!(parse_function_name(&c, &format!("{acct}:function:hello:3")).unwrap(), ("hello".into(), Some("3".into())));
        assert_eq!(parse_function_name(&c, &format!("arn:aws:lambda:eu-west-1:{acct}:function:hello")).unwrap(), ("hello".into(), None));
        let other = account_id("usr_2");
        assert_eq!(parse_function_name(&c, &format!("arn:aws:lambda:eu-west-1:{other}:function:hello")).unwrap_err().code, "ResourceNotFoundException");
        assert!(parse_function_name(&c, "a:b:c").is_err());
        assert!(parse_function_name(&c, "").is_err());
    }
}
