//! The nftables rules, as text for `nft -f -` (one transaction each).
//!
//! One table per server, `inet voltrun_<pid>`, with its own base chains (other tables' chains
//! on the same hooks still run: a packet must pass every table, so ours only ever refuses or
//! marks, and lets everything that is not from or to its own interfaces through untouched):
//!
//! - `input` (packets to the host): from our interfaces only DNS to the instance's own
//!   gateway (`dns` set of interface . address) is accepted; everything else is refused.
//!   (Each resolver's socket is bound to its instance's link, so nothing from elsewhere
//!   reaches it.)
//! - `forward`: nothing from one instance reaches another; into an instance's interface only
//!   replies of connections *that instance* made (`inmap` → `i<slot>`); from our interfaces:
//!   `egress`.
//! - `egress`: the server's deny list first, then the instance's chain `p<slot>` through the
//!   `fnmap` verdict map (keyed by the host-side interface name), else `refuse`.
//! - `p<slot>`: packets of the instance's own established connections; then its rules, each
//!   `goto a<slot>`. `a<slot>` caps the instance's tracked connections, logs a new connection
//!   (NFLOG, prefix `a`, rate-limited per interface) and tags it with the attachment's mark;
//!   `refuse` logs (prefix `r`, rate-limited) and answers with a TCP reset or ICMP
//!   administratively prohibited, so the function's `connect` fails at once.
//!
//! Every attachment has its own conntrack mark ([`tag`]): a slot is reused by the next
//! instance at once, and the kernel keeps a finished instance's connections for minutes (UDP)
//! or days (established TCP). Only packets carrying the current attachment's mark pass as
//! "established", so a new tenant on a reused slot can neither ride nor receive the previous
//! one's flows.
//!
//! Keyed by interface and never by source address: the function may not change its
//! addresses (the namespace is not its own) and, if it could, it would gain nothing.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use voltrun_core::egress::{Cidr, EgressPolicy, EgressTarget, SPECIAL_V4};

/// The top byte of every conntrack mark this table sets: connections carrying it are
/// masqueraded in postrouting. The low 24 bits tell one attachment from the next ([`tag`]).
pub const MARK_PREFIX: u32 = 0x5600_0000;
/// The mask of [`MARK_PREFIX`].
pub const MARK_MASK: u32 = 0xff00_0000;
/// Connections one instance may have tracked at once (the host's conntrack table is shared
/// by everything on it).
pub const MAX_CONNECTIONS: u32 = 2048;
/// Refused or new connections logged per second per instance (NFLOG; the rest are counted
/// by nothing and refused all the same).
pub const LOG_RATE: u32 = 50;
/// Resolved addresses (and address . port pairs) one instance may be given.
pub const MAX_RESOLVED: u32 = 4096;

/// A fresh conntrack mark for one attachment of a slot: [`MARK_PREFIX`] and 24 random bits
/// (never 0, so it never equals a mark left by a table that used none).
pub fn tag() -> u32 {
    MARK_PREFIX | (rand::random::<u32>() % 0x00ff_ffff + 1)
}

fn elements(cidrs: &[Cidr]) -> String {
    cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The whole table for a server (replacing one of the same name). `forward_was_off`: IPv4
/// forwarding was off before this server turned it on, so the table also keeps the host from
/// forwarding anything that is not an instance's.
pub fn table(name: &str, group: u16, deny: &[Cidr], forward_was_off: bool) -> String {
    let deny4: Vec<Cidr> = deny.iter().filter(|c| c.addr.is_ipv4()).copied().collect();
    let deny6: Vec<Cidr> = deny.iter().filter(|c| c.addr.is_ipv6()).copied().collect();
    let set = |n: &str, ty: &str, e: &[Cidr]| {
        let els = if e.is_empty() { String::new() } else { format!("\n    elements = {{ {} }}", elements(e)) };
        format!("  set {n} {{\n    type {ty}\n    flags interval\n    auto-merge{els}\n  }}\n")
    };
    let mut t = format!("table inet {name}\ndelete table inet {name}\ntable inet {name} {{\n");
    t.push_str("  set ifs {\n    type ifname\n  }\n  set dns {\n    type ifname . ipv4_addr\n  }\n  map fnmap {\n    type ifname : verdict\n  }\n  map inmap {\n    type ifname : verdict\n  }\n");
    let _ = writeln!(t, "  set lograte {{\n    type ifname\n    size 65536\n    flags dynamic,timeout\n    timeout 60s\n  }}");
    let _ = writeln!(t, "  set conns {{\n    type ifname\n    size 65536\n    flags dynamic\n  }}");
    let others_forward = if forward_was_off { "    iifname != @ifs oifname != @ifs drop\n" } else { "" };
    t.push_str(&set("special4", "ipv4_addr", SPECIAL_V4));
    t.push_str(&set("deny4", "ipv4_addr", &deny4));
    t.push_str(&set("deny6", "ipv6_addr", &deny6));
    let _ = write!(
        t,
        "  chain input {{
    type filter hook input priority -5; policy accept;
    iifname != @ifs accept
    iifname . ip daddr @dns udp dport 53 accept
    goto refuse
  }}
  chain forward {{
    type filter hook forward priority -5; policy accept;
    oifname @ifs iifname @ifs goto refuse
    oifname vmap @inmap
    oifname @ifs drop
    iifname @ifs jump egress
{others_forward}  }}
  chain egress {{
    ip daddr @deny4 goto refuse
    ip6 daddr @deny6 goto refuse
    meta nfproto ipv6 goto refuse
    iifname vmap @fnmap
    goto refuse
  }}
  chain refuse {{
    ct state new,untracked update @lograte {{ iifname limit rate {LOG_RATE}/second burst {LOG_RATE} packets }} log group {group} prefix \"r\" queue-threshold 1
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }}
  chain nat {{
    type nat hook postrouting priority srcnat; policy accept;
    ct mark and {MARK_MASK:#x} == {MARK_PREFIX:#x} masquerade
  }}
}}
"
    );
    t
}

/// The transport match of a rule's port (`None`: every port).
fn port_match(port: Option<u16>) -> String {
    match port {
        Some(p) => format!("meta l4proto {{ tcp, udp }} th dport {p} "),
        None => String::new(),
    }
}

/// One instance's chains, resolved-address sets and map entries, with `policy`'s rules;
/// `tag` is this attachment's conntrack mark ([`tag`]).
pub fn attach(table: &str, slot: u32, link: &str, gw: Ipv4Addr, tag: u32, group: u16, policy: &EgressPolicy) -> String {
    let (p, a, i) = (format!("p{slot}"), format!("a{slot}"), format!("i{slot}"));
    let mut t = String::new();
    for c in [&p, &a, &i] {
        let _ = writeln!(t, "add chain inet {table} {c}");
    }
    let _ = writeln!(t, "add set inet {table} r{slot} {{ type ipv4_addr; size {MAX_RESOLVED}; }}");
    let _ = writeln!(t, "add set inet {table} rp{slot} {{ type ipv4_addr . inet_service; size {MAX_RESOLVED}; }}");
    // Replies to this attachment's own connections, and nothing else, go in; its own
    // established connections go out; a flow tagged by an earlier tenant of the slot is refused.
    let _ = writeln!(t, "add rule inet {table} {i} ct state established,related ct mark {tag:#x} accept");
    let _ = writeln!(t, "add rule inet {table} {p} ct state established,related ct mark {tag:#x} accept");
    let _ = writeln!(t, "add rule inet {table} {p} ct state established,related goto refuse");
    let _ = writeln!(t, "add rule inet {table} {a} ct state new add @conns {{ iifname ct count over {MAX_CONNECTIONS} }} goto refuse");
    let _ = writeln!(
        t,
        "add rule inet {table} {a} ct state new update @lograte {{ iifname limit rate {LOG_RATE}/second burst {LOG_RATE} packets }} log group {group} prefix \"a\" queue-threshold 1"
    );
    let _ = writeln!(t, "add rule inet {table} {a} ct mark set {tag:#x} accept");
    let _ = writeln!(t, "add rule inet {table} {p} ip daddr @r{slot} goto {a}");
    let _ = writeln!(t, "add rule inet {table} {p} meta l4proto {{ tcp, udp }} ip daddr . th dport @rp{slot} goto {a}");
    t.push_str(&policy_rules(table, slot, policy));
    let _ = writeln!(t, "add element inet {table} ifs {{ \"{link}\" }}");
    let _ = writeln!(t, "add element inet {table} dns {{ \"{link}\" . {gw} }}");
    let _ = writeln!(t, "add element inet {table} inmap {{ \"{link}\" : jump {i} }}");
    let _ = writeln!(t, "add element inet {table} fnmap {{ \"{link}\" : jump {p} }}");
    t
}

/// The rules of `policy`'s address entries in the instance's chain (host-name entries admit
/// what the resolver adds to the instance's sets).
pub fn policy_rules(table: &str, slot: u32, policy: &EgressPolicy) -> String {
    let chain = format!("p{slot}");
    let mut t = String::new();
    for r in &policy.rules {
        let ports = port_match(r.port);
        match &r.target {
            EgressTarget::Cidr(Cidr { addr: IpAddr::V4(_), .. }) => {
                let c = match &r.target {
                    EgressTarget::Cidr(c) => *c,
                    _ => unreachable!(),
                };
                let _ = writeln!(t, "add rule inet {table} {chain} {ports}ip daddr {c} goto a{slot}");
            }
            // Instances have no IPv6 address or route: an IPv6 rule admits nothing yet.
            EgressTarget::Cidr(_) => {}
            EgressTarget::Public => {
                let _ = writeln!(t, "add rule inet {table} {chain} {ports}ip daddr != @special4 goto a{slot}");
            }
            EgressTarget::Host(_) | EgressTarget::Subdomains(_) => {}
        }
    }
    t
}

/// Undoes [`attach`].
pub fn detach(table: &str, slot: u32, link: &str) -> String {
    let (gw, _) = super::slot_addrs(slot);
    let mut t = String::new();
    for m in ["fnmap", "inmap", "ifs"] {
        let _ = writeln!(t, "delete element inet {table} {m} {{ \"{link}\" }}");
    }
    let _ = writeln!(t, "delete element inet {table} dns {{ \"{link}\" . {gw} }}");
    for c in ["p", "a", "i"] {
        let _ = writeln!(t, "delete chain inet {table} {c}{slot}");
    }
    let _ = writeln!(t, "delete set inet {table} r{slot}\ndelete set inet {table} rp{slot}");
    t
}

/// Adds addresses a host-name rule resolved to, each with the ports it may be reached on
/// (`EgressPolicy::ports_for_resolved`; `None`: every port).
pub fn allow_resolved(table: &str, slot: u32, admitted: &[(Ipv4Addr, Option<u16>)]) -> String {
    let mut t = String::new();
    for (a, p) in admitted {
        match p {
            None => {
                let _ = writeln!(t, "add element inet {table} r{slot} {{ {a} }}");
            }
            Some(p) => {
                let _ = writeln!(t, "add element inet {table} rp{slot} {{ {a} . {p} }}");
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_chain_has_a_rule_per_address_entry_and_the_resolved_sets() {
        let p = EgressPolicy::parse(&["198.18.0.0/24", "198.18.1.5:5432", "public:443", "api.test", "2001:db8::/32"]).unwrap();
        let t = attach("voltrun_1", 7, "vre7", Ipv4Addr::new(10, 213, 0, 29), 0x5600_0042, 9, &p);
        assert!(t.contains("add rule inet voltrun_1 p7 ip daddr 198.18.0.0/24 goto a7"));
        assert!(t.contains("add rule inet voltrun_1 p7 meta l4proto { tcp, udp } th dport 5432 ip daddr 198.18.1.5/32 goto a7"));
        assert!(t.contains("th dport 443 ip daddr != @special4 goto a7"));
        assert!(t.contains("ip daddr @r7 goto a7"));
        assert!(t.contains("add rule inet voltrun_1 a7 ct mark set 0x56000042 accept"));
        assert!(!t.contains("2001:db8"), "no IPv6 rules: instances have no IPv6");
        assert!(t.contains("fnmap { \"vre7\" : jump p7 }"));
        assert!(t.contains("inmap { \"vre7\" : jump i7 }"));
    }

    /// A slot is reused at once and conntrack keeps a finished instance's flows for minutes
    /// (UDP) to days (TCP): "established" passed whatever tenant had made the flow.
    #[test]
    fn established_traffic_passes_only_with_the_attachments_own_mark() {
        let t = attach("voltrun_1", 3, "vre3", Ipv4Addr::new(10, 213, 0, 13), 0x5612_3456, 9, &EgressPolicy::default());
        let p: Vec<&str> = t.lines().filter(|l| l.starts_with("add rule inet voltrun_1 p3 ")).collect();
        assert_eq!(p[0], "add rule inet voltrun_1 p3 ct state established,related ct mark 0x56123456 accept");
        assert_eq!(p[1], "add rule inet voltrun_1 p3 ct state established,related goto refuse");
        assert!(t.contains("add rule inet voltrun_1 i3 ct state established,related ct mark 0x56123456 accept"));
        let whole = table("voltrun_1", 9, &[], false);
        assert!(!whole.contains("oifname @ifs ct state established"), "no shared established rule into instances");
        let (a, b) = (tag(), tag());
        assert_eq!(a & MARK_MASK, MARK_PREFIX);
        assert!(a & !MARK_MASK != 0);
        assert!(a != b || tag() != a, "tags differ between attachments");
    }

    #[test]
    fn logs_are_rate_limited_connections_capped_and_sets_bounded() {
        let t = attach("voltrun_1", 3, "vre3", Ipv4Addr::new(10, 213, 0, 13), 0x5600_0001, 9, &EgressPolicy::default());
        assert!(t.contains(&format!("ct count over {MAX_CONNECTIONS}")));
        assert!(t.contains(&format!("limit rate {LOG_RATE}/second")));
        assert!(t.contains(&format!("size {MAX_RESOLVED}")));
        assert!(table("voltrun_1", 9, &[], false).contains(&format!("limit rate {LOG_RATE}/second")));
        assert!(table("voltrun_1", 9, &[], true).contains("iifname != @ifs oifname != @ifs drop"));
        assert!(!table("voltrun_1", 9, &[], false).contains("iifname != @ifs oifname != @ifs drop"));
    }

    #[test]
    fn table_carries_the_deny_list() {
        let t = table("voltrun_1", 9, &[Cidr::parse("198.18.3.0/24").unwrap(), Cidr::parse("2001:db8::/32").unwrap()], false);
        assert!(t.contains("elements = { 198.18.3.0/24 }"));
        assert!(t.contains("elements = { 2001:db8::/32 }"));
        assert!(t.contains("log group 9 prefix \"r\""));
    }
}
