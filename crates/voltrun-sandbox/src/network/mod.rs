//! Network egress enforcement (SPEC §11, issue 14), shared by every isolation tier.
//!
//! An instance whose function has an `egress` list gets a network namespace of its own,
//! prepared by the server before the instance starts and owned by the host's user namespace
//! (so nothing inside, root of the instance's user namespace included, may change its
//! addresses, routes or interfaces): a veth pair, `eth0` inside with a /30 out of
//! [`INSTANCE_NET`], the host end `vre<slot>` outside. Everything is decided on the host, in
//! an nftables table this server owns (`inet voltrun_<pid>`), keyed by the host-side interface
//! (never by source address: see [`nft`]):
//!
//! - to the host itself (any of its addresses, every listener): refused, except the DNS
//!   resolver on the instance's own gateway address;
//! - to other instances: refused;
//! - `--egress-deny` blocks: refused, whatever the function's list says;
//! - otherwise the function's rules (CIDRs, `public`, the addresses its host-name rules
//!   resolved to), each with its port; allowed traffic is masqueraded;
//! - anything else: refused at once (`tcp reset`, or ICMP administratively prohibited).
//!
//! DNS ([`dns`]): the instance's `/etc/resolv.conf` names its gateway, where the server
//! answers only names the policy admits, with only the addresses `admits_resolved` allows,
//! adding each to the instance's allowed set before the answer leaves.
//!
//! Observability ([`nflog`]): new allowed and refused connections are logged by nftables to
//! an NFLOG group this server reads; each one counts for the function (`/metrics`) and each
//! refused one leaves a line that the engine adds to the run's logs when the run ends
//! ([`Attached::take_log`] first reads every message already queued: the kernel queues it
//! as it judges the packet, before the function even sees the refusal).
//!
//! Every resource carries a host-wide slot number taken by creating `/run/voltrun/egress/<slot>`
//! exclusively (several servers share a host: the tests run many). A server starting removes
//! what servers no longer alive left behind: slots, links, namespaces and tables.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use voltrun_core::egress::{Cidr, EgressPolicy};

use crate::{sys, SandboxError};

pub mod dns;
pub mod nflog;
pub mod nft;

/// Where instance addresses come from: a /30 per slot (gateway `.1`, instance `.2`).
pub const INSTANCE_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 213, 0, 0), 16);
/// Slots (one per instance with a network, host-wide).
pub const SLOTS: u32 = 1 << 14;
/// Where slots are claimed.
pub const SLOT_DIR: &str = "/run/voltrun/egress";
/// Prefix of host-side interface names (`vre<slot>`).
pub const LINK_PREFIX: &str = "vre";
/// Prefix of named network namespaces (`/run/netns/vrn<slot>`).
pub const NETNS_PREFIX: &str = "vrn";
/// Prefix of this crate's nftables tables (`inet voltrun_<pid>`).
pub const TABLE_PREFIX: &str = "voltrun_";

/// Server-wide egress settings (`--egress-deny`, `--egress-dns-upstream`).
#[derive(Debug, Clone, Default)]
pub struct EgressConfig {
    /// Blocks no function may reach, whatever its list says.
    pub deny: Vec<Cidr>,
    /// The resolver host names are asked of; `None`: the first `nameserver` of the host's
    /// `/etc/resolv.conf`.
    pub dns_upstream: Option<SocketAddr>,
}

/// What a connection attempt was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused,
}

/// One instance's network: whose it is, its policy, and who hears of its connections.
pub struct NetworkPlan {
    /// The function's id (for logs).
    pub function: String,
    /// What it may reach.
    pub policy: EgressPolicy,
    /// Called once per new connection (allowed) or refused attempt.
    pub on_event: Option<Arc<dyn Fn(Verdict) + Send + Sync>>,
}

impl std::fmt::Debug for NetworkPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkPlan").field("function", &self.function).field("policy", &self.policy.entries()).finish()
    }
}

/// An instance's current plan: a spare starts with an empty one and gets its function's
/// when it is given to the function ([`Attached::set_plan`]).
pub(crate) type PlanCell = Arc<Mutex<Arc<NetworkPlan>>>;

/// What the NFLOG reader needs of a live instance (looked up by host interface index).
pub(crate) struct LinkInfo {
    plan: PlanCell,
    /// Refused-connection lines not yet given to a run (at most [`LOG_LINES_MAX`]), and how
    /// many more were left out.
    log: Mutex<(Vec<String>, u64)>,
}

/// Most refused-connection lines kept for one run.
pub const LOG_LINES_MAX: usize = 20;

/// The server's egress machinery: its nftables table, its NFLOG reader, its resolvers.
pub struct Network {
    table: String,
    upstream: SocketAddr,
    links: Arc<Mutex<HashMap<u32, Arc<LinkInfo>>>>,
    group: u16,
    log: Arc<nflog::Reader>,
}

fn unavailable(msg: impl Into<String>) -> SandboxError {
    SandboxError::Unavailable(msg.into())
}

/// Runs a command with `input` on stdin; its stderr is the error.
pub(crate) fn run(program: &str, args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().map_err(|e| format!("{program}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first `nameserver` of the host's resolv.conf.
fn host_resolver() -> Option<SocketAddr> {
    let text = fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok()).map(|ip| SocketAddr::new(ip, 53)).next()
}

/// The addresses of a slot: (gateway on the host end, the instance's).
pub fn slot_addrs(slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(INSTANCE_NET.0) + slot * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

impl Network {
    /// Checks the host can enforce egress (root, `nft`, `ip`, NFLOG), removes what dead
    /// servers left, turns IPv4 forwarding on, and installs this server's table.
    pub fn new(cfg: EgressConfig) -> Result<Arc<Network>, SandboxError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(unavailable("egress needs root (network namespaces and nftables)"));
        }
        for (p, pkg) in [("nft", "nftables"), ("ip", "iproute2")] {
            if Command::new(p).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
                return Err(unavailable(format!("egress needs the {p} command (Debian package {pkg})")));
            }
        }
        let upstream = cfg.dns_upstream.or_else(host_resolver).ok_or_else(|| unavailable("no DNS upstream: give --egress-dns-upstream or a nameserver in /etc/resolv.conf"))?;
        fs::create_dir_all(SLOT_DIR).map_err(|e| unavailable(format!("mkdir {SLOT_DIR}: {e}")))?;
        remove_stale();
        // Forwarding is host-wide: when it was off, the table also keeps the host from
        // forwarding anything that is not an instance's (nft::table).
        let forward_was_off = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").map(|v| v.trim() == "0").unwrap_or(true);
        fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| unavailable(format!("enable IPv4 forwarding: {e}")))?;
        let links: Arc<Mutex<HashMap<u32, Arc<LinkInfo>>>> = Arc::default();
        let (sock, group) = nflog::bind_group(std::process::id()).map_err(|e| unavailable(format!("NFLOG: {e}")))?;
        let table = format!("{TABLE_PREFIX}{}", std::process::id());
        run("nft", &["-f", "-"], &nft::table(&table, group, &cfg.deny, forward_was_off)).map_err(|e| unavailable(format!("install the nftables table: {e}")))?;
        let log = nflog::Reader::start(sock, links.clone()).map_err(|e| unavailable(format!("NFLOG reader: {e}")))?;
        tracing::info!(table = %table, group, upstream = %upstream, deny = cfg.deny.len(), "egress enforcement ready");
        Ok(Arc::new(Network { table, upstream, links, group, log }))
    }

    /// Gives an instance a network under `plan`: a namespace to join (or put in the OCI
    /// config), its resolver. Dropping the result tears it all down.
    pub fn attach(self: &Arc<Self>, plan: Arc<NetworkPlan>) -> Result<Attached, SandboxError> {
        let slot = claim_slot()?;
        let cell: PlanCell = Arc::new(Mutex::new(plan.clone()));
        let mut a = Attached { net: self.clone(), slot, ifindex: 0, resolver: None, nft_installed: false, plan: cell.clone() };
        let (gw, addr) = slot_addrs(slot);
        let link = format!("{LINK_PREFIX}{slot}");
        let ns = format!("{NETNS_PREFIX}{slot}");
        let host = format!(
            "netns add {ns}\nlink add {link} type veth peer name eth0 netns {ns}\nlink set dev {link} addrgenmode none\naddr add {gw}/30 dev {link}\nlink set dev {link} up\n"
        );
        run("ip", &["-b", "-"], &host).map_err(unavailable)?;
        let inside = format!("link set dev lo up\nlink set dev eth0 addrgenmode none\naddr add {addr}/30 dev eth0\nlink set dev eth0 up\nroute add default via {gw} dev eth0\n");
        run("ip", &["-n", &ns, "-b", "-"], &inside).map_err(unavailable)?;
        a.ifindex =
            fs::read_to_string(format!("/sys/class/net/{link}/ifindex")).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| unavailable(format!("no ifindex for {link}")))?;
        self.links.lock().expect("links lock").insert(a.ifindex, Arc::new(LinkInfo { plan: cell.clone(), log: Mutex::new((Vec::new(), 0)) }));
        run("nft", &["-f", "-"], &nft::attach(&self.table, slot, &link, gw, nft::tag(), self.group, &plan.policy)).map_err(unavailable)?;
        a.nft_installed = true;
        // Started for every instance: without host-name rules it refuses every name at once
        // (rather than letting lookups time out).
        a.resolver = Some(dns::Resolver::start(gw, self.upstream, self.table.clone(), slot, cell)?);
        Ok(a)
    }

    /// Removes this server's table (at shutdown; instances tear their own parts down).
    pub fn shutdown(&self) {
        let _ = run("nft", &["delete", "table", "inet", &self.table], "");
    }

    /// The NFLOG group this server reads.
    pub fn log_group(&self) -> u16 {
        self.group
    }
}

/// One instance's network, torn down on drop: the resolver, the nftables elements and chain,
/// the veth pair and the namespace, the slot.
pub struct Attached {
    net: Arc<Network>,
    slot: u32,
    ifindex: u32,
    resolver: Option<dns::Resolver>,
    nft_installed: bool,
    plan: PlanCell,
}

impl Attached {
    /// Gives a spare's network (started with an empty plan: nothing admitted) the plan of
    /// the function it now serves: its rules, its resolver's names, its counters. Once.
    pub fn set_plan(&self, plan: Arc<NetworkPlan>) -> Result<(), SandboxError> {
        let mut cur = self.plan.lock().expect("plan lock");
        if !cur.policy.is_empty() {
            return Err(unavailable("this instance's network already serves a function"));
        }
        let rules = nft::policy_rules(&self.net.table, self.slot, &plan.policy);
        if !rules.is_empty() {
            run("nft", &["-f", "-"], &rules).map_err(unavailable)?;
        }
        *cur = plan;
        Ok(())
    }

    /// The named network namespace the instance must join.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{NETNS_PREFIX}{}", self.slot))
    }

    /// The resolver address for the instance's `/etc/resolv.conf`.
    pub fn dns(&self) -> Ipv4Addr {
        slot_addrs(self.slot).0
    }

    /// The instance's `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        resolv_conf(&self.dns().to_string())
    }

    /// The refused-connection lines since the last call (one per refused attempt), after
    /// reading every log message the kernel has queued: called when a run ends.
    pub fn take_log(&self) -> Vec<String> {
        self.net.log.drain();
        let Some(l) = self.net.links.lock().expect("links lock").get(&self.ifindex).cloned() else {
            return Vec::new();
        };
        let (mut lines, more) = std::mem::take(&mut *l.log.lock().expect("log lock"));
        if more > 0 {
            lines.push(format!("[voltrun] egress refused: {more} more connections\n"));
        }
        lines
    }
}

impl Drop for Attached {
    /// The link goes first (nothing can send through the rules while they are removed), the
    /// slot last (the next instance to claim it finds it clean).
    fn drop(&mut self) {
        self.resolver.take();
        remove_links(self.slot);
        if self.nft_installed {
            if let Err(e) = run("nft", &["-f", "-"], &nft::detach(&self.net.table, self.slot, &format!("{LINK_PREFIX}{}", self.slot))) {
                tracing::warn!(err = %e, slot = self.slot, "could not remove an instance's nftables rules");
            }
        }
        self.net.links.lock().expect("links lock").remove(&self.ifindex);
        let _ = fs::remove_file(slot_file(self.slot));
    }
}

/// An instance's `/etc/resolv.conf` naming its resolver.
pub fn resolv_conf(dns: &str) -> String {
    format!("nameserver {dns}\noptions timeout:2 attempts:2\n")
}

/// The tiers' hook: the network of an instance whose spec asks for one (`Ok(None)` when it
/// does not).
pub fn attach_for(network: &Result<Arc<Network>, String>, spec: &crate::InstanceSpec) -> Result<Option<Attached>, SandboxError> {
    // An empty plan too: a spare's network, which admits nothing until it gets its function's.
    let Some(plan) = spec.network.as_ref() else {
        return Ok(None);
    };
    let net = network.as_ref().map_err(|why| unavailable(format!("this function has an egress list, but egress is not available: {why}")))?;
    net.attach(plan.clone()).map(Some)
}

fn slot_file(slot: u32) -> PathBuf {
    Path::new(SLOT_DIR).join(slot.to_string())
}

/// Claims a free slot host-wide (O_EXCL create), starting from a spot that depends on our pid
/// so concurrent servers rarely collide.
fn claim_slot() -> Result<u32, SandboxError> {
    let pid = std::process::id();
    let start = pid.wrapping_mul(2_654_435_761) % SLOTS;
    for i in 0..SLOTS {
        let slot = (start + i) % SLOTS;
        match fs::OpenOptions::new().write(true).create_new(true).open(slot_file(slot)) {
            Ok(mut f) => {
                let _ = write!(f, "{pid}");
                return Ok(slot);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(unavailable(format!("claim an egress slot in {SLOT_DIR}: {e}"))),
        }
    }
    Err(unavailable("every egress slot is taken"))
}

/// Deletes a slot's link and namespace.
fn remove_links(slot: u32) {
    let _ = run("ip", &["-b", "-", "-force"], &format!("link del {LINK_PREFIX}{slot}\nnetns del {NETNS_PREFIX}{slot}\n"));
}

/// Deletes a slot's link and namespace, then frees the slot.
fn remove_slot(slot: u32) {
    remove_links(slot);
    let _ = fs::remove_file(slot_file(slot));
}

/// Removes what servers that are gone left behind: their slots (with links and namespaces),
/// links and namespaces without a slot, and their tables.
fn remove_stale() {
    let owner = |slot: u32| fs::read_to_string(slot_file(slot)).ok().and_then(|s| s.trim().parse::<i32>().ok());
    // A slot file without a pid yet is being claimed right now (unless it is old).
    let old = |slot: u32| fs::metadata(slot_file(slot)).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age.as_secs() > 10);
    let dead = |slot: u32| match owner(slot) {
        Some(p) => !sys::pid_alive(p),
        None => old(slot),
    };
    if let Ok(rd) = fs::read_dir(SLOT_DIR) {
        for e in rd.flatten() {
            if let Some(slot) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if dead(slot) {
                    tracing::info!(slot, "removing a dead server's egress slot");
                    remove_slot(slot);
                }
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            if let Some(slot) = e.file_name().to_str().and_then(|n| n.strip_prefix(LINK_PREFIX)).and_then(|s| s.parse::<u32>().ok()) {
                if !slot_file(slot).exists() {
                    let _ = run("ip", &["link", "del", &format!("{LINK_PREFIX}{slot}")], "");
                }
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            if let Some(slot) = e.file_name().to_str().and_then(|n| n.strip_prefix(NETNS_PREFIX)).and_then(|s| s.parse::<u32>().ok()) {
                if !slot_file(slot).exists() {
                    let _ = run("ip", &["netns", "del", &format!("{NETNS_PREFIX}{slot}")], "");
                }
            }
        }
    }
    if let Ok(list) = output("nft", &["list", "tables"]) {
        for l in list.lines() {
            if let Some(pid) = l.trim().strip_prefix("table inet ").and_then(|t| t.strip_prefix(TABLE_PREFIX)).and_then(|p| p.parse::<i32>().ok()) {
                if !sys::pid_alive(pid) {
                    let _ = run("nft", &["delete", "table", "inet", &format!("{TABLE_PREFIX}{pid}")], "");
                }
            }
        }
    }
}
