//! Network egress policy (SPEC §11) as data and pure functions: what a function's `egress`
//! list may say, how each entry is parsed and validated, and which destination (address, port,
//! host name) a policy admits. The default policy admits nothing. Enforcement (network
//! namespaces, host-side filter rules, the resolver) is the sandbox's; it only reads this.
//!
//! Entries: a CIDR (`198.18.0.0/24`, `10.0.0.5/32`, `2001:db8::/32`, or a bare address meaning
//! one host), a host name (`api.example.com`) or all subdomains of one (`*.example.com`), or
//! `public` (any public unicast address); each optionally followed by `:port`. An IPv6 CIDR with
//! a port is written in brackets: `[2001:db8::/32]:443`.
//!
//! Special-purpose ranges (private, loopback, link-local with the cloud metadata address,
//! multicast, documentation, benchmarking, reserved; IANA's special-purpose registries) are
//! admitted only by a CIDR that covers them: never by `public`, and never as the answer to a
//! host-name rule (a name that resolves into them is refused, so DNS cannot rebind past the
//! policy).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most entries an `egress` list may hold.
pub const MAX_EGRESS_ENTRIES: usize = 64;
/// Longest entry (a host name is at most 253 characters, plus `*.` and `:65535`).
pub const MAX_EGRESS_ENTRY_CHARS: usize = 262;

/// A function's egress policy: the destinations it may connect to. `Default` is no network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub rules: Vec<EgressRule>,
}

/// One entry of the list: a destination and, when given, the one port it is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    pub target: EgressTarget,
    /// `None`: every port.
    pub port: Option<u16>,
}

/// What an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressTarget {
    /// Every address in the block, special-purpose ones included.
    Cidr(Cidr),
    /// Exactly this host name (lower case, no trailing dot).
    Host(String),
    /// Every name below this one (`*.example.com` stores `example.com`; the name itself is not
    /// included, as with TLS wildcards).
    Subdomains(String),
    /// Every public unicast address.
    Public,
}

/// An entry that is not valid, with the entry as given and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress entry {entry:?}: {reason}")]
pub struct EgressError {
    pub entry: String,
    pub reason: String,
}

fn invalid(entry: &str, reason: impl Into<String>) -> EgressError {
    let mut shown: String = entry.chars().take(80).collect();
    if shown.len() < entry.len() {
        shown.push('…');
    }
    EgressError { entry: shown, reason: reason.into() }
}

impl EgressPolicy {
    /// Parses and validates a list as the API receives it. The first bad entry is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<EgressPolicy, EgressError> {
        if entries.len() > MAX_EGRESS_ENTRIES {
            return Err(invalid(entries[MAX_EGRESS_ENTRIES].as_ref(), format!("at most {MAX_EGRESS_ENTRIES} entries")));
        }
        let rules = entries.iter().map(|e| EgressRule::parse(e.as_ref())).collect::<Result<Vec<_>, _>>()?;
        Ok(EgressPolicy { rules })
    }

    /// No entries: the function has no network at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The entries in their canonical spelling (what the API stores and returns).
    pub fn entries(&self) -> Vec<String> {
        self.rules.iter().map(ToString::to_string).collect()
    }

    /// Whether a connection to `ip:port` is admitted by an address rule (a CIDR or `public`).
    /// Host-name rules admit only the addresses their names resolved to: see
    /// [`EgressPolicy::admits_resolved`].
    pub fn admits_addr(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical_ip(ip);
        self.rules.iter().any(|r| r.port.is_none_or(|p| p == port) && r.target.admits_addr(ip))
    }

    /// Whether a DNS question for `name` may be answered at all (some host-name rule names it).
    pub fn admits_name(&self, name: &str) -> bool {
        let name = normalise_name(name);
        self.rules.iter().any(|r| r.target.matches_name(&name))
    }

    /// The ports a resolved name may be reached on: `None` in the list means every port.
    /// Empty when no host rule names it.
    pub fn ports_for_name(&self, name: &str) -> Vec<Option<u16>> {
        let name = normalise_name(name);
        let mut ports: Vec<Option<u16>> = self.rules.iter().filter(|r| r.target.matches_name(&name)).map(|r| r.port).collect();
        if ports.contains(&None) {
            return vec![None];
        }
        ports.sort();
        ports.dedup();
        ports
    }

    /// Whether an address that `name` resolved to may be given to the function: the name must
    /// be named by a host rule, and the address must be public unicast unless a CIDR rule
    /// covers it (on a port the name may also use; see [`EgressPolicy::ports_for_resolved`]).
    pub fn admits_resolved(&self, name: &str, ip: IpAddr) -> bool {
        !self.ports_for_resolved(name, ip).is_empty()
    }

    /// The ports `ip`, an answer for `name`, may be reached on (`None`: every port); empty
    /// when it may not be reached at all. A public address gets the name's ports. Any other
    /// address only the ports both the name's rules and a CIDR rule covering it admit, so
    /// `["10.0.0.5/32:5432", "*.example.com"]` never opens 10.0.0.5 beyond 5432 through a
    /// name that resolves there.
    pub fn ports_for_resolved(&self, name: &str, ip: IpAddr) -> Vec<Option<u16>> {
        let ip = canonical_ip(ip);
        let by_name = self.ports_for_name(name);
        if by_name.is_empty() || is_public(ip) {
            return by_name;
        }
        let by_cidr: Vec<Option<u16>> = self.rules.iter().filter(|r| matches!(&r.target, EgressTarget::Cidr(c) if c.contains(ip))).map(|r| r.port).collect();
        if by_cidr.contains(&None) {
            return by_name;
        }
        let mut ports: Vec<Option<u16>> = Vec::new();
        for p in by_name {
            match p {
                None => ports.extend(by_cidr.iter().copied()),
                Some(p) if by_cidr.contains(&Some(p)) => ports.push(Some(p)),
                Some(_) => {}
            }
        }
        ports.sort();
        ports.dedup();
        ports
    }

    /// Whether any rule is a host-name rule (the instance then needs the resolver).
    pub fn has_host_rules(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.target, EgressTarget::Host(_) | EgressTarget::Subdomains(_)))
    }
}

impl EgressRule {
    /// Parses one entry.
    pub fn parse(entry: &str) -> Result<EgressRule, EgressError> {
        if entry.trim().is_empty() {
            return Err(invalid(entry, "empty entry"));
        }
        if entry.chars().count() > MAX_EGRESS_ENTRY_CHARS {
            return Err(invalid(entry, format!("longer than {MAX_EGRESS_ENTRY_CHARS} characters")));
        }
        if entry != entry.trim() {
            return Err(invalid(entry, "leading or trailing spaces"));
        }
        let (target, port) = split_port(entry).map_err(|r| invalid(entry, r))?;
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).map_err(|r| invalid(entry, r))?),
        };
        let target = EgressTarget::parse(target).map_err(|r| invalid(entry, r))?;
        Ok(EgressRule { target, port })
    }
}

/// Splits `target[:port]`; `[v6cidr]:port` for IPv6 with a port; a bare IPv6 CIDR has no port.
fn split_port(entry: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or("an opening '[' without ']'")?;
        return match after {
            "" => Ok((inner, None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((inner, Some(p))),
                None => Err("expected ':port' after ']'".into()),
            },
        };
    }
    match entry.matches(':').count() {
        0 => Ok((entry, None)),
        1 => {
            let (t, p) = entry.split_once(':').expect("one colon");
            Ok((t, Some(p)))
        }
        // Several colons: an IPv6 address or CIDR without a port.
        _ => Ok((entry, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a number from 1 to 65535"));
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
    }
}

impl EgressTarget {
    fn parse(t: &str) -> Result<EgressTarget, String> {
        if t.is_empty() {
            return Err("missing destination before ':'".into());
        }
        if t.eq_ignore_ascii_case("public") {
            return Ok(EgressTarget::Public);
        }
        if t.contains('/') || t.parse::<IpAddr>().is_ok() {
            return Cidr::parse(t).map(EgressTarget::Cidr);
        }
        if let Some(base) = t.strip_prefix("*.") {
            validate_host(base)?;
            return Ok(EgressTarget::Subdomains(base.to_ascii_lowercase()));
        }
        if t.contains('*') {
            return Err("a wildcard is allowed only as a leading '*.'".into());
        }
        validate_host(t)?;
        Ok(EgressTarget::Host(t.to_ascii_lowercase()))
    }

    fn admits_addr(&self, ip: IpAddr) -> bool {
        match self {
            EgressTarget::Cidr(c) => c.contains(ip),
            EgressTarget::Public => is_public(ip),
            EgressTarget::Host(_) | EgressTarget::Subdomains(_) => false,
        }
    }

    fn matches_name(&self, name: &str) -> bool {
        match self {
            EgressTarget::Host(h) => h == name,
            EgressTarget::Subdomains(base) => name.len() > base.len() + 1 && name.ends_with(base.as_str()) && name.as_bytes()[name.len() - base.len() - 1] == b'.',
            EgressTarget::Cidr(_) | EgressTarget::Public => false,
        }
    }
}

fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A host name as DNS allows it: labels of letters, digits and inner hyphens, 1 to 63
/// characters each, 253 in all, and not all digits (which would be an address).
fn validate_host(h: &str) -> Result<(), String> {
    if h.len() > 253 {
        return Err("host name longer than 253 characters".into());
    }
    for label in h.split('.') {
        if label.is_empty() {
            return Err("host name with an empty label".into());
        }
        if label.len() > 63 {
            return Err("host name label longer than 63 characters".into());
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("host name label {label:?} may hold only letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("host name label {label:?} starts or ends with '-'"));
        }
    }
    if h.split('.').next_back().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err("not a valid address, CIDR or host name".into());
    }
    Ok(())
}

/// An address block: an address and a prefix length. Host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n`, or a bare address (a block of one).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') && (p == "0" || !p.starts_with('0')) => n,
                _ => return Err(format!("prefix length {p:?} must be 0 to {max}")),
            },
        };
        let c = Cidr { addr, prefix };
        if c.network() != addr {
            return Err(format!("host bits set: did you mean {}?", Cidr { addr: c.network(), prefix }));
        }
        Ok(c)
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr { addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr { addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), prefix }
    }

    /// The block's first address.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.target {
            EgressTarget::Cidr(c) => c.to_string(),
            EgressTarget::Host(h) => h.clone(),
            EgressTarget::Subdomains(b) => format!("*.{b}"),
            EgressTarget::Public => "public".into(),
        };
        match (self.port, &self.target) {
            (None, _) => f.write_str(&target),
            (Some(p), EgressTarget::Cidr(c)) if c.addr.is_ipv6() => write!(f, "[{target}]:{p}"),
            (Some(p), _) => write!(f, "{target}:{p}"),
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it carries.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// IPv4 special-purpose blocks (RFC 6890 and IANA's registry): never "public".
pub const SPECIAL_V4: &[Cidr] = &[
    Cidr::v4(0, 0, 0, 0, 8),       // "this network"
    Cidr::v4(10, 0, 0, 0, 8),      // private
    Cidr::v4(100, 64, 0, 0, 10),   // shared address space (carrier-grade NAT)
    Cidr::v4(127, 0, 0, 0, 8),     // loopback
    Cidr::v4(169, 254, 0, 0, 16),  // link-local (the cloud metadata address among them)
    Cidr::v4(172, 16, 0, 0, 12),   // private
    Cidr::v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    Cidr::v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    Cidr::v4(192, 88, 99, 0, 24),  // 6to4 relay anycast (deprecated)
    Cidr::v4(192, 168, 0, 0, 16),  // private
    Cidr::v4(198, 18, 0, 0, 15),   // benchmarking (our test hosts live here)
    Cidr::v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    Cidr::v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    Cidr::v4(224, 0, 0, 0, 4),     // multicast
    Cidr::v4(240, 0, 0, 0, 4),     // reserved, and the limited broadcast address
];

/// IPv6 special-purpose blocks. Everything outside 2000::/3 (global unicast) is special too.
pub const SPECIAL_V6: &[Cidr] = &[
    Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),  // NAT64 (carries IPv4 addresses)
    Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // local-use NAT64
    Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),     // IETF protocol assignments (Teredo among them)
    Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),     // 6to4 (carries IPv4 addresses)
    Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation
    Cidr::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),     // segment routing
];

/// The IPv6 global unicast block; addresses outside it are never public.
pub const GLOBAL_UNICAST_V6: Cidr = Cidr::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// Whether `ip` is a public unicast address: in no special-purpose block.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        v4 @ IpAddr::V4(_) => !SPECIAL_V4.iter().any(|c| c.contains(v4)),
        v6 @ IpAddr::V6(_) => GLOBAL_UNICAST_V6.contains(v6) && !SPECIAL_V6.iter().any(|c| c.contains(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(e: &[&str]) -> EgressPolicy {
        EgressPolicy::parse(e).unwrap()
    }

    #[test]
    fn default_policy_admits_nothing() {
        let p = EgressPolicy::default();
        assert!(p.is_empty());
        assert!(!p.admits_addr(ip("198.18.0.1"), 80));
        assert!(!p.admits_addr(ip("8.8.8.8"), 53));
        assert!(!p.admits_name("example.com"));
    }

    #[test]
    fn spec_example_parses_and_round_trips() {
        let e = ["198.18.0.0/24", "10.0.0.5/32:5432", "api.example.com", "*.example.com:443", "public"];
        let p = policy(&e);
        assert_eq!(p.entries(), e);
        assert_eq!(policy(&["[2001:db8::/32]:443"]).entries(), ["[2001:db8::/32]:443"]);
        assert_eq!(policy(&["198.18.0.7", "API.Example.COM"]).entries(), ["198.18.0.7/32", "api.example.com"]);
    }

    #[test]
    fn cidr_and_port_rules() {
        let p = policy(&["198.18.0.0/24", "198.18.1.5/32:5432"]);
        assert!(p.admits_addr(ip("198.18.0.200"), 1));
        assert!(!p.admits_addr(ip("198.18.2.1"), 80), "neighbour block refused");
        assert!(p.admits_addr(ip("198.18.1.5"), 5432));
        assert!(!p.admits_addr(ip("198.18.1.5"), 5433), "other port refused");
        assert!(p.admits_addr(ip("::ffff:198.18.0.9"), 80), "mapped v4 counts as v4");
    }

    #[test]
    fn public_never_admits_special_ranges() {
        let p = policy(&["public"]);
        for s in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(!p.admits_addr(ip(s), 443), "{s} must not be public");
        }
        for s in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(p.admits_addr(ip(s), 443), "{s} is public");
        }
    }

    #[test]
    fn host_rules_admit_names_and_only_public_or_named_answers() {
        let p = policy(&["api.example.com:443", "*.svc.test", "198.18.5.0/24"]);
        assert!(p.admits_name("API.example.com."));
        assert!(!p.admits_name("example.com"));
        assert!(p.admits_name("a.b.svc.test"));
        assert!(!p.admits_name("svc.test"), "the wildcard does not include the base name");
        assert!(!p.admits_name("evilsvc.test"));
        assert_eq!(p.ports_for_name("api.example.com"), vec![Some(443)]);
        assert_eq!(p.ports_for_name("x.svc.test"), vec![None]);
        assert!(p.admits_resolved("api.example.com", ip("8.8.4.4")));
        assert!(!p.admits_resolved("api.example.com", ip("169.254.169.254")), "rebinding to metadata refused");
        assert!(!p.admits_resolved("api.example.com", ip("10.0.0.1")));
        assert!(p.admits_resolved("x.svc.test", ip("198.18.5.9")), "a CIDR rule names that range");
        assert!(!p.admits_resolved("other.test", ip("8.8.8.8")));
        assert!(p.has_host_rules());
        assert_eq!(p.ports_for_resolved("x.svc.test", ip("198.18.5.9")), vec![None]);
        assert!(!p.admits_addr(ip("8.8.4.4"), 443), "host rules do not admit addresses by themselves");
    }

    /// A CIDR rule's port was ignored when a host name resolved into the CIDR: the name's
    /// (every) port was opened on a private address.
    #[test]
    fn a_name_resolving_into_a_cidr_gets_only_the_ports_both_admit() {
        let p = policy(&["10.0.0.5/32:5432", "*.example.com", "api.other.test:443"]);
        assert_eq!(p.ports_for_resolved("db.example.com", ip("10.0.0.5")), vec![Some(5432)]);
        assert!(p.ports_for_resolved("api.other.test", ip("10.0.0.5")).is_empty(), "443 is not open on 10.0.0.5");
        assert!(!p.admits_resolved("api.other.test", ip("10.0.0.5")));
        assert_eq!(p.ports_for_resolved("api.other.test", ip("8.8.8.8")), vec![Some(443)]);
        assert!(p.ports_for_resolved("db.example.com", ip("10.0.0.6")).is_empty());
    }

    #[test]
    fn bad_entries_name_the_entry() {
        for (e, why) in [
            ("", "empty"),
            (" ", "empty"),
            ("198.18.0.0/33", "prefix"),
            ("198.18.0.1/24", "host bits"),
            ("300.1.1.1/8", "address"),
            ("example.com:0", "port"),
            ("example.com:65536", "port"),
            ("example.com:http", "port"),
            ("example.com:", "port"),
            (":80", "missing destination"),
            ("exa_mple.com", "letters"),
            ("foo.*.com", "wildcard"),
            ("-a.com", "starts or ends"),
            ("a..com", "empty label"),
            ("10.0.0", "not a valid"),
            ("[2001:db8::/32", "']'"),
            (" example.com", "spaces"),
        ] {
            let err = EgressPolicy::parse(&["public", e]).unwrap_err();
            assert_eq!(err.entry, e.chars().take(80).collect::<String>());
            assert!(err.reason.contains(why), "{e:?}: {} lacks {why:?}", err.reason);
        }
        let many: Vec<String> = (0..65).map(|i| format!("198.18.0.{i}")).collect();
        assert!(EgressPolicy::parse(&many).unwrap_err().reason.contains("at most"));
        let long = format!("{}.com", "a".repeat(300));
        assert!(EgressPolicy::parse(&[long]).is_err());
    }
}
