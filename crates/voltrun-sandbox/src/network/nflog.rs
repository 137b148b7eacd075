//! The NFLOG reader: nftables' `log group N` messages over netfilter netlink
//! (`nfnetlink_log`, see libnetfilter_log), one message per new allowed connection (prefix
//! `a`) and per refused attempt (prefix `r`), with the host-side input interface (which
//! instance) and the packet's first bytes (which destination).
//!
//! Chosen over reading rule counters after each run: a message is queued as the packet is
//! judged (before the function sees its connection refused), it says which destination was
//! refused (for the run's log line), and no run pays for a counter read (one nft process).
//! A thread reads as messages come; [`Reader::drain`] reads what is queued at once, so the
//! lines of a run are all there when it ends.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::{LinkInfo, Verdict};
use crate::sys;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// Bytes of each packet copied to us: an IPv4 header with options and the ports.
const COPY_RANGE: u32 = 96;

fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn config_msg(group: u16, seq: u32, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0u8, 0u8]; // nfgenmsg: family AF_UNSPEC, version 0
    body.extend_from_slice(&group.to_be_bytes());
    for (t, d) in attrs {
        attr(&mut body, *t, d);
    }
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

/// Sends one config request and reads its acknowledgement.
fn request(fd: &OwnedFd, msg: &[u8]) -> std::io::Result<()> {
    sys::netlink_send(fd.as_raw_fd(), msg)?;
    let mut buf = [0u8; 512];
    let n = sys::netlink_recv(fd.as_raw_fd(), &mut buf)?;
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(std::io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}

/// Binds a free NFLOG group (trying from one derived from `seed`: every server on a host
/// needs its own), set to copy packets and deliver each at once.
pub fn bind_group(seed: u32) -> std::io::Result<(OwnedFd, u16)> {
    let mut last = None;
    for i in 0..64u32 {
        let group = (1000 + (seed.wrapping_add(i * 7919)) % 60000) as u16;
        let fd = sys::netfilter_socket()?;
        let bind = config_msg(group, 1, &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])]);
        match request(&fd, &bind) {
            Ok(()) => {}
            Err(e) => {
                last = Some(e);
                continue;
            }
        }
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        request(&fd, &config_msg(group, 2, &[(NFULA_CFG_MODE, mode)]))?;
        request(&fd, &config_msg(group, 3, &[(NFULA_CFG_QTHRESH, 1u32.to_be_bytes().to_vec())]))?;
        request(&fd, &config_msg(group, 4, &[(NFULA_CFG_TIMEOUT, 0u32.to_be_bytes().to_vec())]))?;
        return Ok((fd, group));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free NFLOG group")))
}

/// One logged packet.
#[derive(Debug, PartialEq, Eq)]
pub struct Logged {
    pub verdict: Verdict,
    pub ifindex: u32,
    /// Protocol name, destination address and port (when TCP or UDP).
    pub proto: &'static str,
    pub dst: Option<Ipv4Addr>,
    pub port: Option<u16>,
}

/// Parses the packet messages of one netlink read.
pub fn parse(buf: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            break;
        }
        if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && len >= 20 {
            if let Some(l) = parse_packet(&buf[off + 20..off + len]) {
                out.push(l);
            }
        }
        off += (len + 3) & !3;
    }
    out
}

fn parse_packet(mut attrs: &[u8]) -> Option<Logged> {
    let (mut prefix, mut ifindex, mut payload) = (None, 0u32, &[][..]);
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match ty {
            NFULA_PREFIX => prefix = data.first().copied(),
            NFULA_IFINDEX_INDEV if data.len() == 4 => ifindex = u32::from_be_bytes(data.try_into().ok()?),
            NFULA_PAYLOAD => payload = data,
            _ => {}
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    let verdict = match prefix? {
        b'a' => Verdict::Allowed,
        b'r' => Verdict::Refused,
        _ => return None,
    };
    let (mut proto, mut dst, mut port) = ("ip", None, None);
    if payload.len() >= 20 && payload[0] >> 4 == 4 {
        let ihl = usize::from(payload[0] & 0xf) * 4;
        dst = Some(Ipv4Addr::new(payload[16], payload[17], payload[18], payload[19]));
        proto = match payload[9] {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            _ => "ip",
        };
        if matches!(payload[9], 6 | 17) && payload.len() >= ihl + 4 {
            port = Some(u16::from_be_bytes([payload[ihl + 2], payload[ihl + 3]]));
        }
    } else if payload.first().is_some_and(|b| b >> 4 == 6) {
        proto = "ipv6";
    }
    Some(Logged { verdict, ifindex, proto, dst, port })
}

/// The line a refused connection writes into the run's logs.
pub fn refused_line(l: &Logged) -> String {
    let to = match (l.dst, l.port) {
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        _ => "an IPv6 address".into(),
    };
    format!("[voltrun] egress refused: {} connection to {to} (not in this function's egress list)\n", l.proto)
}

/// The group's socket (non-blocking) and who reads it: a thread as messages come, and
/// [`Reader::drain`] on demand; one at a time.
pub(crate) struct Reader {
    fd: OwnedFd,
    links: Arc<Mutex<HashMap<u32, Arc<LinkInfo>>>>,
    buf: Mutex<Vec<u8>>,
}

/// Most reads of one [`Reader::drain`].
const DRAIN_MAX: usize = 256;

impl Reader {
    /// Starts the reading thread (for the server's lifetime).
    pub(crate) fn start(fd: OwnedFd, links: Arc<Mutex<HashMap<u32, Arc<LinkInfo>>>>) -> std::io::Result<Arc<Reader>> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        let r = Arc::new(Reader { fd, links, buf: Mutex::new(vec![0u8; 1 << 16]) });
        let t = r.clone();
        std::thread::Builder::new().name("egress-nflog".into()).spawn(move || loop {
            match sys::poll_readable(t.fd.as_raw_fd(), -1) {
                Ok(_) => t.drain(),
                Err(e) => {
                    tracing::error!(err = %e, "the egress log reader stopped");
                    return;
                }
            }
        })?;
        Ok(r)
    }

    /// Reads and handles the messages queued now, at most [`DRAIN_MAX`] reads (the rules
    /// log at most `nft::LOG_RATE` a second per instance, so that is all of them unless
    /// something floods; what is left is read by the reader thread).
    pub(crate) fn drain(&self) {
        let mut buf = self.buf.lock().expect("nflog buffer lock");
        for _ in 0..DRAIN_MAX {
            let n = match sys::netlink_recv(self.fd.as_raw_fd(), &mut buf) {
                Ok(n) => n,
                // ENOBUFS: the kernel dropped messages under load; go on.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(_) => return, // EAGAIN: nothing more queued
            };
            for l in parse(&buf[..n]) {
                self.handle(&l);
            }
        }
    }

    fn handle(&self, l: &Logged) {
        let Some(link) = self.links.lock().expect("links lock").get(&l.ifindex).cloned() else {
            return;
        };
        let plan = link.plan.lock().expect("plan lock").clone();
        if let Some(cb) = &plan.on_event {
            cb(l.verdict);
        }
        if l.verdict == Verdict::Refused {
            tracing::debug!(function = %plan.function, dst = ?l.dst, port = ?l.port, "egress refused");
            let mut log = link.log.lock().expect("log lock");
            if log.0.len() < super::LOG_LINES_MAX {
                log.0.push(refused_line(l));
            } else {
                log.1 += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One NFULNL_MSG_PACKET as the kernel sends it: prefix, input interface, payload.
    fn message(prefix: &[u8], ifindex: u32, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![2u8, 0, 0, 7];
        attr(&mut body, NFULA_PREFIX, prefix);
        attr(&mut body, NFULA_IFINDEX_INDEV, &ifindex.to_be_bytes());
        attr(&mut body, NFULA_PAYLOAD, payload);
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn packet_messages_give_verdict_interface_and_destination() {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 213, 0, 2, 198, 18, 0, 9];
        ip.extend_from_slice(&[0x9c, 0x40, 0, 80]);
        let mut buf = message(b"r\0", 42, &ip);
        buf.extend(message(b"a\0", 43, &ip));
        let got = parse(&buf);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Logged { verdict: Verdict::Refused, ifindex: 42, proto: "tcp", dst: Some(Ipv4Addr::new(198, 18, 0, 9)), port: Some(80) });
        assert_eq!(got[1].verdict, Verdict::Allowed);
        assert_eq!(refused_line(&got[0]), "[voltrun] egress refused: tcp connection to 198.18.0.9:80 (not in this function's egress list)\n");
        assert!(parse(&buf[..buf.len() - 3]).len() == 1, "a cut message is not parsed");
    }
}
