//! A blocking client for the REST API over `ureq`: it authenticates every request, renews an
//! expired access token once with the refresh token (saving the rotated pair), and turns
//! transport failures and the API's error bodies into [`CliError`]s that say what to do.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{Auth, ConfigFile, Session, Source};
use crate::error::{CliError, Result};

/// Largest response body read (an execution record holds at most 6 MiB of output and
/// 256 KiB of logs, plus its input).
const MAX_BODY: u64 = 64 << 20;
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for an ordinary request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence on a log stream; the server sends a keep-alive every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);

fn agent(read_timeout: Option<Duration>) -> ureq::Agent {
    let mut b = ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).user_agent(concat!("voltrun-cli/", env!("CARGO_PKG_VERSION"))).redirects(0);
    if let Some(t) = read_timeout {
        b = b.timeout_read(t);
    }
    b.build()
}

/// Percent-encodes one path segment (ids and names are safe already; this keeps user input
/// such as `a/b` or `x?y` from changing the route).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a request carries.
enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a [u8]),
}

/// Which agent and timeout a request uses.
#[derive(Clone, Copy)]
enum Wait {
    /// An ordinary request: [`REQUEST_TIMEOUT`].
    Normal,
    /// A synchronous invocation: as long as the run takes.
    Unbounded,
    /// A stream: no deadline, but at most [`STREAM_READ_TIMEOUT`] of silence.
    Stream,
}

/// A logged-in client of one server.
pub struct Api {
    session: Session,
    saved: Option<ConfigFile>,
    agent: ureq::Agent,
    long: ureq::Agent,
}

impl Api {
    /// A client for `session`; rotated tokens are saved to `saved` when the credentials came
    /// from it.
    pub fn new(session: Session, saved: Option<ConfigFile>) -> Api {
        let saved = if session.source == Source::Saved { saved } else { None };
        Api { session, saved, agent: agent(Some(STREAM_READ_TIMEOUT)), long: agent(None) }
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.session.server
    }

    /// The credentials in use.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn build(&self, wait: Wait, method: &str, path: &str, query: &[(&str, String)]) -> ureq::Request {
        let url = format!("{}{path}", self.session.server);
        let mut req = match wait {
            Wait::Normal => self.agent.request(method, &url).timeout(REQUEST_TIMEOUT),
            Wait::Stream => self.agent.request(method, &url),
            Wait::Unbounded => self.long.request(method, &url),
        };
        for (k, v) in query {
            req = req.query(k, v);
        }
        match &self.session.auth {
            Auth::Token { token, .. } => req.set("Authorization", &format!("Bearer {token}")),
            Auth::ApiKey(k) => req.set("X-API-Key", k),
        }
    }

    /// Sends a request; on a 401 renews the access token once and tries again.
    fn send(&mut self, wait: Wait, method: &str, path: &str, query: &[(&str, String)], body: Body) -> Result<ureq::Response> {
        let mut renewed = false;
        loop {
            let req = self.build(wait, method, path, query);
            let result = match body {
                Body::None => req.call(),
                Body::Json(v) => req.send_json(v),
                Body::Raw(b) => req.set("Content-Type", "application/json").send_bytes(b),
            };
            match result {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) => {
                    let message = api_error(&self.session.server, 401, r).to_string();
                    match &self.session.auth {
                        Auth::ApiKey(_) => return Err(CliError::KeyRejected { server: self.session.server.clone(), message }),
                        Auth::Token { .. } if renewed => return Err(CliError::LoginExpired { server: self.session.server.clone() }),
                        Auth::Token { .. } => {
                            self.renew()?;
                            renewed = true;
                        }
                    }
                }
                Err(ureq::Error::Status(status, r)) => return Err(api_error(&self.session.server, status, r)),
                Err(ureq::Error::Transport(t)) => return Err(transport_error(&self.session.server, t)),
            }
        }
    }

    /// Gets a new access token with the refresh token and saves the rotated pair. Holds the
    /// config lock so a concurrent `voltrun` never spends the same refresh token: one that
    /// finds the saved token already renewed by another process simply adopts it.
    fn renew(&mut self) -> Result<()> {
        let server = self.session.server.clone();
        let expired = || CliError::LoginExpired { server: server.clone() };
        let Auth::Token { token, refresh_token } = self.session.auth.clone() else {
            return Err(expired());
        };
        let Some(saved) = self.saved.clone() else {
            let Some(rt) = refresh_token else { return Err(expired()) };
            let (new_token, new_refresh) = refresh(&server, &rt)?;
            self.session.auth = Auth::Token { token: new_token, refresh_token: Some(new_refresh) };
            return Ok(());
        };
        let _lock = saved.lock()?;
        let mut cfg = saved.load()?;
        let same_server = cfg.server.as_deref().and_then(|s| crate::config::normalize_server(s).ok()).as_deref() == Some(server.as_str());
        if !same_server || cfg.api_key.is_some() {
            return Err(expired());
        }
        if let Some(t) = cfg.token.clone().filter(|t| *t != token) {
            self.session.auth = Auth::Token { token: t, refresh_token: cfg.refresh_token.clone() };
            return Ok(());
        }
        let Some(rt) = cfg.refresh_token.clone().or(refresh_token) else { return Err(expired()) };
        let (new_token, new_refresh) = refresh(&server, &rt)?;
        cfg.token = Some(new_token.clone());
        cfg.refresh_token = Some(new_refresh.clone());
        saved.save(&cfg)?;
        self.session.auth = Auth::Token { token: new_token, refresh_token: Some(new_refresh) };
        Ok(())
    }

    /// `GET path?query` → the JSON body.
    pub fn get(&mut self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let r = self.send(Wait::Normal, "GET", path, query, Body::None)?;
        read_json(&self.session.server, r)
    }

    /// Follows `next_cursor` from `path` and returns every item (for short lists).
    pub fn get_all(&mut self, path: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec![("limit", "500".to_string())];
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page = self.get(path, &q)?;
            let Some(list) = page["items"].as_array() else {
                return Err(CliError::BadResponse { server: self.session.server.clone(), detail: format!("{path} returned no items list") });
            };
            items.extend(list.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) if !list.is_empty() => cursor = Some(c.to_string()),
                _ => return Ok(items),
            }
        }
    }

    /// `POST path` with a JSON body → the JSON body.
    pub fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        let r = self.send(Wait::Normal, "POST", path, &[], Body::Json(body))?;
        read_json(&self.session.server, r)
    }

    /// `PUT path` with a JSON body → the JSON body.
    pub fn put(&mut self, path: &str, body: &Value) -> Result<Value> {
        let r = self.send(Wait::Normal, "PUT", path, &[], Body::Json(body))?;
        read_json(&self.session.server, r)
    }

    /// `DELETE path`.
    pub fn delete(&mut self, path: &str) -> Result<()> {
        self.send(Wait::Normal, "DELETE", path, &[], Body::None)?;
        Ok(())
    }

    /// Runs a function with `event` (JSON text, sent as given), its `qualifier` (a version,
    /// `latest` or an alias) if one is given. Synchronous calls wait as long as the run takes;
    /// async ones return the pending record.
    pub fn execute(&mut self, function: &str, qualifier: Option<&str>, event: &[u8], is_async: bool) -> Result<Value> {
        let path = format!("/api/functions/{}/execute", seg(function));
        let (wait, mut query) = if is_async { (Wait::Normal, vec![("async", "true".to_string())]) } else { (Wait::Unbounded, vec![]) };
        if let Some(q) = qualifier {
            query.push(("qualifier", q.to_string()));
        }
        let r = self.send(wait, "POST", &path, &query, Body::Raw(event))?;
        read_json(&self.session.server, r)
    }

    /// Opens a Server-Sent Events stream.
    pub fn stream(&mut self, path: &str, query: &[(&str, String)]) -> Result<Sse<Box<dyn BufRead + Send>>> {
        let r = self.send(Wait::Stream, "GET", path, query, Body::None)?;
        Ok(Sse::new(Box::new(BufReader::new(r.into_reader()))))
    }
}

/// `POST path` without credentials (login, refresh).
pub fn post_anonymous(server: &str, path: &str, body: &Value) -> Result<Value> {
    let req = agent(None).post(&format!("{server}{path}")).timeout(REQUEST_TIMEOUT);
    match req.send_json(body) {
        Ok(r) => read_json(server, r),
        Err(ureq::Error::Status(status, r)) => Err(api_error(server, status, r)),
        Err(ureq::Error::Transport(t)) => Err(transport_error(server, t)),
    }
}

/// Spends a refresh token: the new (access token, refresh token).
fn refresh(server: &str, refresh_token: &str) -> Result<(String, String)> {
    let v = match post_anonymous(server, "/api/auth/refresh", &json!({ "refresh_token": refresh_token })) {
        Ok(v) => v,
        Err(CliError::Api { status: 401, .. }) => return Err(CliError::LoginExpired { server: server.to_string() }),
        Err(e) => return Err(e),
    };
    match (v["token"].as_str(), v["refresh_token"].as_str()) {
        (Some(t), Some(r)) => Ok((t.to_string(), r.to_string())),
        _ => Err(CliError::BadResponse { server: server.to_string(), detail: "the refresh answer has no token".into() }),
    }
}

fn read_body(r: ureq::Response) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    r.into_reader().take(MAX_BODY).read_to_end(&mut body)?;
    Ok(body)
}

fn read_json(server: &str, r: ureq::Response) -> Result<Value> {
    let body = read_body(r).map_err(|e| CliError::Unreachable { server: server.to_string(), detail: format!("the connection broke while reading the answer ({e})") })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| CliError::BadResponse { server: server.to_string(), detail: format!("the body is not JSON ({e}); is this a VoltRun server?") })
}

/// The API's `{"error": {"code", "message"}}` as a [`CliError::Api`].
fn api_error(server: &str, status: u16, r: ureq::Response) -> CliError {
    let retry_after = r.header("retry-after").map(str::to_string);
    let body = read_body(r).unwrap_or_default();
    let parsed: Option<(String, String)> = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        let e = &v["error"];
        Some((e["code"].as_str()?.to_string(), e["message"].as_str()?.to_string()))
    });
    let (code, mut message) = match parsed {
        Some(p) => p,
        None => {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(200).collect();
            let what = if text.is_empty() { "no details".to_string() } else { text };
            ("http_error".to_string(), format!("{server} answered {status}: {what}"))
        }
    };
    if let Some(s) = retry_after {
        message.push_str(&format!("; retry after {s} s"));
    }
    CliError::Api { status, code, message }
}

/// A connection failure as [`CliError::Unreachable`], in words.
fn transport_error(server: &str, t: ureq::Transport) -> CliError {
    use std::error::Error as _;
    let io_kind = t.source().and_then(|s| s.downcast_ref::<std::io::Error>()).map(std::io::Error::kind);
    let detail = match (t.kind(), io_kind) {
        (_, Some(std::io::ErrorKind::ConnectionRefused)) => "connection refused".to_string(),
        (_, Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)) => "timed out".to_string(),
        (_, Some(std::io::ErrorKind::ConnectionReset)) => "the connection was reset".to_string(),
        (ureq::ErrorKind::Dns, _) => "the host name does not resolve".to_string(),
        (ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme, _) => {
            return CliError::usage(format!("{server} is not a valid server URL ({t})"));
        }
        _ => match t.source() {
            Some(s) => s.to_string(),
            None => t.to_string(),
        },
    };
    CliError::Unreachable { server: server.to_string(), detail }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name (`message` when none was given).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Reads Server-Sent Events (the WHATWG event-stream format) from a byte stream.
pub struct Sse<R> {
    reader: R,
}

impl<R: BufRead> Sse<R> {
    /// Parses events from `reader`.
    pub fn new(reader: R) -> Sse<R> {
        Sse { reader }
    }
}

impl<R: BufRead> Iterator for Sse<R> {
    type Item = std::io::Result<SseEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut event = String::new();
        let mut data: Option<String> = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => return None, // an event not ended by a blank line is dropped, per the spec
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if line.is_empty() {
                match data.take() {
                    Some(d) => {
                        let event = if event.is_empty() { "message".to_string() } else { event };
                        return Some(Ok(SseEvent { event, data: d }));
                    }
                    None => {
                        event.clear();
                        continue;
                    }
                }
            }
            let text = String::from_utf8_lossy(&line);
            if text.starts_with(':') {
                continue; // a comment: the server's keep-alive
            }
            let (field, value) = match text.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*text, ""),
            };
            match field {
                "event" => event = value.to_string(),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                _ => {} // id, retry and unknown fields do not matter here
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("hello_world-1"), "hello_world-1");
        assert_eq!(seg("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn sse_events_are_parsed() {
        let text =
            ": keep-alive\n\nevent: log\ndata: {\"text\":\"a\"}\n\nevent: log\r\ndata: one\r\ndata:two\r\n\r\ndata: plain\n\nevent: end\ndata: {}\n\nevent: partial\ndata: x\n";
        let events: Vec<SseEvent> = Sse::new(text.as_bytes()).map(Result::unwrap).collect();
        let ev = |e: &str, d: &str| SseEvent { event: e.into(), data: d.into() };
        assert_eq!(events, vec![ev("log", "{\"text\":\"a\"}"), ev("log", "one\ntwo"), ev("message", "plain"), ev("end", "{}")]);
    }
}
