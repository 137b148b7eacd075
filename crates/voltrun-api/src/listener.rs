//! The HTTP/1.1 accept loop every listener of `voltrun serve` runs (the API, and any other
//! Router such as a trigger origin of its own). It owns what a slow or hostile client can do
//! to connections, which `axum::serve` left open:
//!
//! - an unfinished request head, and a kept-alive connection idle between requests, are
//!   closed after [`ListenerConfig::header_timeout`] (hyper's header-read timer runs
//!   whenever the connection waits for a head; it never runs while a response, such as a
//!   long SSE stream, is being sent);
//! - a request body must arrive whole within [`ListenerConfig::body_timeout`] of its head;
//! - a response write that makes no progress for [`ListenerConfig::write_timeout`] (a client
//!   that never reads) fails the connection; an idle stream with nothing to send is untouched;
//! - at most [`ListenerConfig::max_connections_per_ip`] connections per client address (per
//!   /64 for IPv6) and [`ListenerConfig::max_connections`] in all, counted over every
//!   listener that shares one [`Connections`] table; past either a new connection is closed
//!   at once, so file descriptors are never exhausted;
//! - accept errors (EMFILE, ENFILE, ENOBUFS) back off instead of spinning.
//!
//! Each request carries `ConnectInfo<SocketAddr>` as `into_make_service_with_connect_info`
//! gave it. Shutdown stops accepting, lets in-flight requests finish and closes idle
//! connections; the caller bounds how long that may take.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// What the listener allows each client.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Longest wait for a request head: an unfinished one, and an idle kept-alive
    /// connection, are closed after it.
    pub header_timeout: Duration,
    /// Longest time from a request's head to the end of its body.
    pub body_timeout: Duration,
    /// Longest time a response write may wait for the client to read.
    pub write_timeout: Duration,
    /// Open connections allowed in all.
    pub max_connections: usize,
    /// Open connections allowed per client address (per /64 for IPv6).
    pub max_connections_per_ip: usize,
}

impl Default for ListenerConfig {
    /// Short timeouts and few connections: the most restrictive setting that still serves.
    fn default() -> Self {
        ListenerConfig {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_ip: 16,
        }
    }
}

/// Connections allowed in all by default: half the open-file limit (the rest is for the
/// database, instances and their pipes), at least 64.
pub fn default_max_connections() -> usize {
    (crate::sys::nofile_limit() / 2).clamp(64, 1 << 20) as usize
}

/// Errors `serve` can end with.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The listening socket has no address.
    #[error("listener address: {0}")]
    Addr(#[from] std::io::Error),
}

/// The connection table of one or more listeners: the caps count every connection of every
/// listener given the same table (the API and the trigger origin share one, so together
/// they stay under the open-file limit).
#[derive(Clone)]
pub struct Connections(Arc<Conns>);

impl Connections {
    /// An empty table with `cfg`'s caps and timeouts.
    pub fn new(cfg: ListenerConfig) -> Connections {
        let (idle, _) = watch::channel(0usize);
        Connections(Arc::new(Conns { cfg, open: Mutex::new((0, HashMap::new())), idle }))
    }
}

/// Open connections, in all and per address.
struct Conns {
    cfg: ListenerConfig,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Changes whenever the last connection closes.
    idle: watch::Sender<usize>,
}

/// A connection's place; frees it on drop.
struct Slot {
    conns: Arc<Conns>,
    ip: IpAddr,
}

/// The key a per-address cap or rate limit counts under: the address, or its /64 for IPv6
/// (one host usually holds a whole /64).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Conns {
    /// A slot for a connection from `ip`, or None past a cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip_key(ip);
        let mut open = self.open.lock().expect("connection table lock");
        let per_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.cfg.max_connections || per_ip >= self.cfg.max_connections_per_ip {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot { conns: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().expect("connection table lock");
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        let total = open.0;
        drop(open);
        self.conns.idle.send_replace(total);
    }
}

/// A request body that fails once its deadline passes, so a trickled body cannot hold a
/// connection (and the handler reading it) open.
struct TimedBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    /// Created on the first read that has to wait, so a body that is already here costs no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A request body was not received within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within the time allowed")]
pub struct BodyTimeout;

impl HttpBody for TimedBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail once one has waited [`ListenerConfig::write_timeout`]
/// without progress: a client that stops reading cannot hold its connection (and the
/// response it pins) for ever. Reads are untouched (the header and body timeouts bound them).
struct StallGuard {
    inner: tokio::net::TcpStream,
    timeout: Duration,
    /// Armed when a write first has to wait; disarmed by any progress.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.sleep = None;
                Poll::Ready(v)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading the response"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl tokio::io::AsyncRead for StallGuard {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallGuard {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, r)
    }
}

/// True for accept errors that concern one connection only (retry at once); anything else
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM) calls for a pause.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// open connections: in-flight requests finish, idle connections close. Bound the wait from
/// outside (e.g. a grace period) if long streams may be open.
pub async fn serve(listener: TcpListener, app: Router, table: &Connections, shutdown: impl Future<Output = ()>) -> Result<(), ListenerError> {
    listener.local_addr()?;
    let conns = table.0.clone();
    let cfg = conns.cfg.clone();
    let mut idle_rx = conns.idle.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(cfg.header_timeout).keep_alive(true);
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        let Some(slot) = conns.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: over the connection cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let body_timeout = cfg.body_timeout;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let deadline = tokio::time::Instant::now() + body_timeout;
            let mut req = req.map(|inner| TimedBody { inner, deadline, sleep: None });
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let stream = StallGuard { inner: stream, timeout: cfg.write_timeout, sleep: None };
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // (The watched count may be stale before the first change: read the table itself.)
    let _ = idle_rx.wait_for(|_| conns.open.lock().expect("connection table lock").0 == 0).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_all() {
        let cfg = ListenerConfig { max_connections: 3, max_connections_per_ip: 2, ..ListenerConfig::default() };
        let conns = Connections::new(cfg).0;
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = conns.admit(a).unwrap();
        let _s2 = conns.admit(a).unwrap();
        assert!(conns.admit(a).is_none(), "third from one address");
        let _s3 = conns.admit(b).unwrap();
        assert!(conns.admit(b).is_none(), "over the total");
        drop(s1);
        assert!(conns.admit(a).is_some(), "a freed slot is reusable");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let x: IpAddr = "2001:db8::1".parse().unwrap();
        let y: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(ip_key(x), ip_key(y));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_key(m), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
