//! The nftables rules, as text for `nft -f -` (one transaction each).
//!
//! One table per server, `inet voltrun_<pid>`, with its own base chains (other tables' chains
//! on the same hooks still run: a packet must pass every table, so ours only ever refuses or
//! marks, and lets everything that is not from or to its own interfaces through untouched):
//!
//! - `input` (packets to the host): from our interfaces only DNS to the instance's own
//!   gateway (`dns` set of interface . address) is accepted; everything else is refused.
//! - `forward`: into our interfaces only replies (`established,related`); nothing from one
//!   instance reaches another. From our interfaces: `egress`.
//! - `egress`: the server's deny list first, then the instance's chain `p<slot>` through the
//!   `fnmap` verdict map (keyed by the host-side interface name), else `refuse`.
//! - `allow` logs a new connection (NFLOG, prefix `a`), marks it for masquerade; `refuse`
//!   logs (prefix `r`) and answers with a TCP reset or ICMP administratively prohibited, so
//!   the function's `connect` fails at once.
//!
//! Keyed by interface and never by source address: the function may not change its
//! addresses (the namespace is not its own) and, if it could, it would gain nothing.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use voltrun_core::egress::{Cidr, EgressPolicy, EgressTarget, SPECIAL_V4};

/// The conntrack mark of allowed connections (masqueraded in postrouting).
pub const MARK: u32 = 0x5652_0000;

fn elements(cidrs: &[Cidr]) -> String {
    cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The whole table for a server (replacing one of the same name).
pub fn table(name: &str, group: u16, deny: &[Cidr]) -> String {
    let deny4: Vec<Cidr> = deny.iter().filter(|c| c.addr.is_ipv4()).copied().collect();
    let deny6: Vec<Cidr> = deny.iter().filter(|c| c.addr.is_ipv6()).copied().collect();
    let set = |n: &str, ty: &str, e: &[Cidr]| {
        let els = if e.is_empty() { String::new() } else { format!("\n    elements = {{ {} }}", elements(e)) };
        format!("  set {n} {{\n    type {ty}\n    flags interval\n    auto-merge{els}\n  }}\n")
    };
    let mut t = format!("table inet {name}\ndelete table inet {name}\ntable inet {name} {{\n");
    t.push_str("  set ifs {\n    type ifname\n  }\n  set dns {\n    type ifname . ipv4_addr\n  }\n  map fnmap {\n    type ifname : verdict\n  }\n");
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
    oifname @ifs ct state established,related accept
    oifname @ifs iifname @ifs goto refuse
    oifname @ifs drop
    iifname @ifs jump egress
  }}
  chain egress {{
    ct state established,related accept
    ip daddr @deny4 goto refuse
    ip6 daddr @deny6 goto refuse
    meta nfproto ipv6 goto refuse
    iifname vmap @fnmap
    goto refuse
  }}
  chain allow {{
    ct state new log group {group} prefix \"a\" queue-threshold 1
    ct mark set {MARK:#x} accept
  }}
  chain refuse {{
    ct state new,untracked log group {group} prefix \"r\" queue-threshold 1
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }}
  chain nat {{
    type nat hook postrouting priority srcnat; policy accept;
    ct mark {MARK:#x} masquerade
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

/// One instance's chain, resolved-address sets and map entries, with `policy`'s rules.
pub fn attach(table: &str, slot: u32, link: &str, gw: Ipv4Addr, policy: &EgressPolicy) -> String {
    let chain = format!("p{slot}");
    let mut t = format!("add chain inet {table} {chain}\nadd set inet {table} r{slot} {{ type ipv4_addr; }}\nadd set inet {table} rp{slot} {{ type ipv4_addr . inet_service; }}\n");
    let _ = writeln!(t, "add rule inet {table} {chain} ip daddr @r{slot} goto allow");
    let _ = writeln!(t, "add rule inet {table} {chain} meta l4proto {{ tcp, udp }} ip daddr . th dport @rp{slot} goto allow");
    t.push_str(&policy_rules(table, slot, policy));
    let _ = writeln!(t, "add element inet {table} ifs {{ \"{link}\" }}");
    let _ = writeln!(t, "add element inet {table} dns {{ \"{link}\" . {gw} }}");
    let _ = writeln!(t, "add element inet {table} fnmap {{ \"{link}\" : jump {chain} }}");
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
                let _ = writeln!(t, "add rule inet {table} {chain} {ports}ip daddr {c} goto allow");
            }
            // Instances have no IPv6 address or route: an IPv6 rule admits nothing yet.
            EgressTarget::Cidr(_) => {}
            EgressTarget::Public => {
                let _ = writeln!(t, "add rule inet {table} {chain} {ports}ip daddr != @special4 goto allow");
            }
            EgressTarget::Host(_) | EgressTarget::Subdomains(_) => {}
        }
    }
    t
}

/// Undoes [`attach`].
pub fn detach(table: &str, slot: u32, link: &str) -> String {
    let (gw, _) = super::slot_addrs(slot);
    format!(
        "delete element inet {table} fnmap {{ \"{link}\" }}\ndelete element inet {table} dns {{ \"{link}\" . {gw} }}\ndelete element inet {table} ifs {{ \"{link}\" }}\ndelete chain inet {table} p{slot}\ndelete set inet {table} r{slot}\ndelete set inet {table} rp{slot}\n"
    )
}

/// Adds addresses a host-name rule resolved to, with the ports the name may use.
pub fn allow_resolved(table: &str, slot: u32, addrs: &[Ipv4Addr], ports: &[Option<u16>]) -> String {
    let mut t = String::new();
    for a in addrs {
        for p in ports {
            match p {
                None => {
                    let _ = writeln!(t, "add element inet {table} r{slot} {{ {a} }}");
                }
                Some(p) => {
                    let _ = writeln!(t, "add element inet {table} rp{slot} {{ {a} . {p} }}");
                }
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
        let t = attach("voltrun_1", 7, "vre7", Ipv4Addr::new(10, 213, 0, 29), &p);
        assert!(t.contains("add rule inet voltrun_1 p7 ip daddr 198.18.0.0/24 goto allow"));
        assert!(t.contains("add rule inet voltrun_1 p7 meta l4proto { tcp, udp } th dport 5432 ip daddr 198.18.1.5/32 goto allow"));
        assert!(t.contains("th dport 443 ip daddr != @special4 goto allow"));
        assert!(t.contains("ip daddr @r7 goto allow"));
        assert!(!t.contains("2001:db8"), "no IPv6 rules: instances have no IPv6");
        assert!(t.contains("fnmap { \"vre7\" : jump p7 }"));
    }

    #[test]
    fn table_carries_the_deny_list() {
        let t = table("voltrun_1", 9, &[Cidr::parse("198.18.3.0/24").unwrap(), Cidr::parse("2001:db8::/32").unwrap()]);
        assert!(t.contains("elements = { 198.18.3.0/24 }"));
        assert!(t.contains("elements = { 2001:db8::/32 }"));
        assert!(t.contains("log group 9 prefix \"r\""));
    }
}
