//! The resolver an instance's `/etc/resolv.conf` points at: a UDP socket on the instance's
//! gateway address (port 53), one per instance, so the socket a question arrives on says whose
//! policy applies (no source address is trusted). A question for a name the policy admits is
//! forwarded to the upstream resolver as a query rebuilt from its question alone (our id, no
//! other sections); of the answer only IPv4 addresses `ports_for_resolved` admits are kept,
//! added to the instance's allowed sets (nftables, each with its ports) and only then answered.
//! Every other question gets `REFUSED` at once. AAAA questions get an empty answer (instances
//! have no IPv6). DNS over TCP is not served (answers are kept under 512 bytes).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{nft, run, NetworkPlan, PlanCell};
use crate::{sys, SandboxError};

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_REFUSED: u8 = 5;
/// Most addresses put in one answer.
const MAX_ANSWERS: usize = 16;
/// Longest time-to-live handed out (seconds).
const MAX_TTL: u32 = 300;

/// A running resolver; dropping it stops its thread.
pub struct Resolver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Resolver {
    /// Binds `gw:53` and serves questions until dropped.
    pub(crate) fn start(gw: Ipv4Addr, upstream: SocketAddr, table: String, slot: u32, plan: PlanCell) -> Result<Resolver, SandboxError> {
        let sock = UdpSocket::bind((gw, 53)).map_err(|source| SandboxError::Sys { call: "bind the instance's DNS resolver", source })?;
        // Only the instance's own link reaches it (the table also drops packets for the
        // instances' addresses that come from elsewhere).
        sys::bind_to_device(&sock, &format!("{}{slot}", super::LINK_PREFIX)).map_err(|source| SandboxError::Sys { call: "setsockopt SO_BINDTODEVICE", source })?;
        sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(|source| SandboxError::Sys { call: "setsockopt SO_RCVTIMEO", source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("egress-dns-{slot}"))
            .spawn(move || {
                let mut buf = [0u8; 1500];
                // What this instance was already given: a repeated answer adds nothing (and
                // starts no `nft`); bounded by the sets' own size.
                let mut given: HashSet<(Ipv4Addr, Option<u16>)> = HashSet::new();
                while !s2.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let current = plan.lock().expect("plan lock").clone();
                    if let Some(reply) = answer(&buf[..n], &current, upstream, &table, slot, &mut given) {
                        let _ = sock.send_to(&reply, from);
                    }
                }
            })
            .map_err(|source| SandboxError::Sys { call: "spawn the DNS resolver thread", source })?;
        Ok(Resolver { stop, thread: Some(thread) })
    }
}

/// A parsed question: its id, flags' RD bit, the name, its type, and where it ends.
#[derive(Debug)]
pub struct Question {
    pub id: u16,
    pub rd: bool,
    pub name: String,
    pub qtype: u16,
    pub end: usize,
}

/// Parses a query with exactly one question (no compression in questions).
pub fn parse_question(q: &[u8]) -> Option<Question> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = q.get(i..i + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let class = u16::from_be_bytes([*q.get(i + 2)?, *q.get(i + 3)?]);
    // A standard query (opcode 0) of class IN: nothing else is forwarded.
    if (q[2] >> 3) & 0x0f != 0 || class != CLASS_IN {
        return None;
    }
    Some(Question { id: u16::from_be_bytes([q[0], q[1]]), rd: q[2] & 1 != 0, name: labels.join("."), qtype, end: i + 4 })
}

/// A response to `query` (its question echoed) with `rcode` and these A records.
pub fn response(query: &[u8], q: &Question, rcode: u8, addrs: &[(Ipv4Addr, u32)]) -> Vec<u8> {
    let mut r = Vec::with_capacity(q.end + addrs.len() * 16);
    r.extend_from_slice(&q.id.to_be_bytes());
    r.push(0x80 | u8::from(q.rd)); // QR, opcode 0, RD copied
    r.push(0x80 | rcode); // RA, rcode
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&query[12..q.end]);
    for (a, ttl) in addrs {
        r.extend_from_slice(&[0xc0, 12]); // the question's name
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&a.octets());
    }
    r
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let b = *m.get(i)?;
        if b == 0 {
            return Some(i + 1);
        }
        if b & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + b as usize;
    }
}

/// The upstream's rcode and A records (address, ttl) of an answer to question id `id`.
pub fn parse_answer(m: &[u8], id: u16) -> Option<(u8, Vec<(Ipv4Addr, u32)>)> {
    if m.len() < 12 || u16::from_be_bytes([m[0], m[1]]) != id || m[2] & 0x80 == 0 {
        return None;
    }
    let rcode = m[3] & 0x0f;
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(m, i)?;
        let ty = u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]);
        let ttl = u32::from_be_bytes(m.get(i + 4..i + 8)?.try_into().ok()?);
        let len = u16::from_be_bytes([*m.get(i + 8)?, *m.get(i + 9)?]) as usize;
        let data = m.get(i + 10..i + 10 + len)?;
        if ty == TYPE_A && len == 4 {
            out.push((Ipv4Addr::new(data[0], data[1], data[2], data[3]), ttl));
        }
        i += 10 + len;
    }
    Some((rcode, out))
}

/// The query the upstream gets for `q`: rebuilt from the parsed question alone, with an id
/// of ours (nothing of the function's header, EDNS options or other sections is passed on).
pub fn upstream_query(query: &[u8], q: &Question) -> (u16, Vec<u8>) {
    let id: u16 = rand::random();
    let mut m = Vec::with_capacity(q.end);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00]); // a standard query, recursion desired
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question, nothing else
    m.extend_from_slice(&query[12..q.end]);
    (id, m)
}

/// Asks the upstream (UDP, two tries of 2 s).
fn ask_upstream(query: &[u8], id: u16, upstream: SocketAddr) -> Option<(u8, Vec<(Ipv4Addr, u32)>)> {
    let bind: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(upstream).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 4096];
    for _ in 0..2 {
        s.send(query).ok()?;
        // Skip stray datagrams (a bounded number) until ours comes.
        for _ in 0..8 {
            match s.recv(&mut buf) {
                Ok(n) => {
                    if let Some(a) = parse_answer(&buf[..n], id) {
                        return Some(a);
                    }
                }
                Err(_) => break,
            }
        }
    }
    None
}

/// The reply to one datagram, or nothing for what is not a query. `given`: what this
/// instance's sets already hold.
fn answer(query: &[u8], plan: &NetworkPlan, upstream: SocketAddr, table: &str, slot: u32, given: &mut HashSet<(Ipv4Addr, Option<u16>)>) -> Option<Vec<u8>> {
    let q = parse_question(query)?;
    if !plan.policy.admits_name(&q.name) {
        // Debug-formatted: the name is the function's, control characters and all.
        tracing::debug!(function = %plan.function, name = ?q.name, "egress: name refused");
        return Some(response(query, &q, RCODE_REFUSED, &[]));
    }
    if q.qtype != TYPE_A {
        // AAAA and the rest: no records (instances have IPv4 only).
        return Some(response(query, &q, 0, &[]));
    }
    let (id, ask) = upstream_query(query, &q);
    let Some((rcode, addrs)) = ask_upstream(&ask, id, upstream) else {
        return Some(response(query, &q, RCODE_SERVFAIL, &[]));
    };
    let mut kept: Vec<(Ipv4Addr, u32)> = Vec::new();
    let mut new: Vec<(Ipv4Addr, Option<u16>)> = Vec::new();
    for (a, ttl) in addrs {
        if kept.len() == MAX_ANSWERS {
            break;
        }
        let ports = plan.policy.ports_for_resolved(&q.name, a.into());
        if ports.is_empty() {
            continue;
        }
        kept.push((a, ttl.min(MAX_TTL)));
        new.extend(ports.into_iter().map(|p| (a, p)).filter(|e| !given.contains(e)));
    }
    if !new.is_empty() {
        if given.len() + new.len() > nft::MAX_RESOLVED as usize {
            tracing::warn!(function = %plan.function, "egress: the instance was given as many resolved addresses as it may hold");
            return Some(response(query, &q, RCODE_SERVFAIL, &[]));
        }
        if let Err(e) = run("nft", &["-f", "-"], &nft::allow_resolved(table, slot, &new)) {
            tracing::warn!(err = %e, "egress: could not admit resolved addresses");
            return Some(response(query, &q, RCODE_SERVFAIL, &[]));
        }
        given.extend(new);
    }
    Some(response(query, &q, rcode, &kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn question_and_answer_round_trip() {
        let raw = query("Api.Example.test", TYPE_A);
        let q = parse_question(&raw).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype, q.end), (0x1234, "api.example.test", TYPE_A, raw.len()));
        let r = response(&raw, &q, 0, &[(Ipv4Addr::new(198, 18, 0, 2), 60)]);
        let (rcode, addrs) = parse_answer(&r, 0x1234).unwrap();
        assert_eq!((rcode, addrs), (0, vec![(Ipv4Addr::new(198, 18, 0, 2), 60)]));
        assert!(parse_answer(&r, 0x9999).is_none(), "another id is not our answer");
        let refused = response(&raw, &q, RCODE_REFUSED, &[]);
        assert_eq!(parse_answer(&refused, 0x1234).unwrap(), (RCODE_REFUSED, vec![]));
    }

    #[test]
    fn malformed_questions_are_ignored() {
        assert!(parse_question(&[0; 5]).is_none());
        let mut raw = query("a.test", TYPE_A);
        raw.truncate(raw.len() - 2);
        assert!(parse_question(&raw).is_none());
    }

    /// The function's query went to the upstream byte for byte: its id, its flags and any
    /// EDNS or other sections it added.
    #[test]
    fn the_upstream_gets_a_query_rebuilt_from_the_question_alone() {
        let mut raw = query("a.test", TYPE_A);
        raw[11] = 1; // claims one additional record
        raw.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]); // an EDNS OPT record
        let q = parse_question(&raw).unwrap();
        let (id, m) = upstream_query(&raw, &q);
        assert_eq!(u16::from_be_bytes([m[0], m[1]]), id);
        assert_eq!(&m[2..12], &[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0], "standard query, one question, nothing else");
        assert_eq!(&m[12..], &raw[12..q.end], "the question itself");
    }

    #[test]
    fn only_standard_queries_of_class_in_are_answered() {
        let mut notify = query("a.test", TYPE_A);
        notify[2] |= 4 << 3; // opcode NOTIFY
        assert!(parse_question(&notify).is_none());
        let mut chaos = query("version.bind", 16);
        let n = chaos.len();
        chaos[n - 1] = 3; // class CH
        assert!(parse_question(&chaos).is_none());
    }
}
