//! The destination guard: addresses an egress proxy must never connect to on a client's
//! behalf, whatever `http_access` says — the proxy host itself (loopback and every address of
//! its interfaces), link-local and the cloud metadata endpoints (instance credentials),
//! `0.0.0.0/8`, multicast and broadcast — plus the addresses of the proxy tier itself (so no
//! client can chain tunnels through it).
//!
//! It judges the addresses that will actually be dialed, after resolution and after
//! [`canonical`] (an IPv4-mapped IPv6 address is the IPv4 address it connects to; `0.0.0.0`
//! and `::` connect to this host). Order of precedence, first match wins:
//!
//! 1. `destination_guard_deny` (and, for instances of a stack, the tier's own addresses):
//!    always refused;
//! 2. `destination_guard_allow` (a stack's `service_networks`): reachable on purpose;
//! 3. the protected categories of [`Protected`].
//!
//! The same predicate is the built-in ACL `to_protected`, so a hand-written squid.conf can say
//! `http_access deny to_protected` wherever it wants; `destination_guard on` applies it before
//! `http_access` (Smokescreen's default-deny of internal destinations).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Environment variables through which `proxyfleet up` turns the guard on for the instances
/// it launches, with the stack's service networks and the tier's own addresses.
pub const ENV_GUARD: &str = "PROXYFLEET_DESTINATION_GUARD";
pub const ENV_ALLOW: &str = "PROXYFLEET_GUARD_ALLOW";
pub const ENV_DENY: &str = "PROXYFLEET_GUARD_DENY";

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// `destination_guard_deny`, or the proxy tier's own nodes, instances and admin API.
    Denied,
    /// One of this proxy's own listening sockets: a forwarding loop (refused even when the
    /// guard is off).
    ProxyItself,
    Loopback,
    /// An address of one of this host's interfaces.
    ThisHost,
    /// `0.0.0.0/8` ("this network").
    ThisNetwork,
    LinkLocal,
    /// A cloud provider's instance metadata service.
    Metadata,
    Multicast,
    Broadcast,
}

impl fmt::Display for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protected::Denied => {
                "denied by destination_guard_deny (the proxy tier's own addresses)"
            }
            Protected::ProxyItself => "this proxy's own listening address (forwarding loop)",
            Protected::Loopback => "a loopback address",
            Protected::ThisHost => "an address of the proxy host",
            Protected::ThisNetwork => "in 0.0.0.0/8",
            Protected::LinkLocal => "link-local",
            Protected::Metadata => "a cloud metadata address",
            Protected::Multicast => "multicast",
            Protected::Broadcast => "broadcast",
        })
    }
}

/// The cloud metadata endpoints outside link-local: AWS's IPv6 one, Alibaba's, Azure's wire
/// server. (169.254.169.254, AWS/GCP/Azure/OpenStack's IPv4 one, is link-local.)
const METADATA: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
];

/// The address a connection to `ip` really reaches: an IPv4-mapped IPv6 address is the IPv4
/// address, and on Linux the unspecified addresses connect to this host's loopback.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => canonical(IpAddr::V4(v4)),
            None if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            None => ip,
        },
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => ip,
    }
}

/// What the guard refuses, and whether it runs before `http_access`.
#[derive(Debug, Clone, Default)]
pub struct DestinationGuard {
    /// `destination_guard on`: refuse protected destinations before `http_access`.
    pub enabled: bool,
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
    /// This host's interface addresses when the configuration was read.
    host_addrs: Vec<IpAddr>,
}

impl DestinationGuard {
    pub fn new(enabled: bool, deny: Vec<IpNet>, allow: Vec<IpNet>) -> DestinationGuard {
        DestinationGuard {
            enabled,
            deny,
            allow,
            host_addrs: host_addresses(),
        }
    }

    /// Whether `ip` (already [`canonical`]) is protected, and why; the guard's switch does not
    /// matter here (this is also the `to_protected` ACL).
    pub fn protects(&self, ip: IpAddr) -> Option<Protected> {
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Some(Protected::Denied);
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        category(ip).or_else(|| self.host_addrs.contains(&ip).then_some(Protected::ThisHost))
    }

    /// The first address of `ips` (canonical) that must not be dialed for a connection to
    /// `port`, with the reason: one of `own` (this proxy's bound sockets: a forwarding loop)
    /// always; a protected address when the guard is on. Every address is judged, so that a
    /// name whose answers mix allowed and protected addresses is refused as a whole.
    pub fn refuses(
        &self,
        ips: &[IpAddr],
        port: u16,
        own: &[SocketAddr],
    ) -> Option<(IpAddr, Protected)> {
        ips.iter().find_map(|&ip| {
            if self.is_own_port(ip, port, own) {
                return Some((ip, Protected::ProxyItself));
            }
            if self.enabled {
                return self.protects(ip).map(|why| (ip, why));
            }
            None
        })
    }

    /// An unspecified listening address listens on every local address.
    fn is_own_port(&self, ip: IpAddr, port: u16, own: &[SocketAddr]) -> bool {
        own.iter().any(|own| {
            own.port() == port
                && (canonical(own.ip()) == ip
                    || (own.ip().is_unspecified()
                        && (ip.is_loopback() || self.host_addrs.contains(&ip))))
        })
    }

    /// The exempted networks (`destination_guard_allow`), for `--check` and messages.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// The always-denied networks (`destination_guard_deny`).
    pub fn denied(&self) -> &[IpNet] {
        &self.deny
    }
}

/// The fixed protected categories (everything but this host's interface addresses).
fn category(ip: IpAddr) -> Option<Protected> {
    if METADATA.contains(&ip) {
        return Some(Protected::Metadata);
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some(Protected::Loopback)
            } else if v4.octets()[0] == 0 {
                Some(Protected::ThisNetwork)
            } else if v4.is_link_local() {
                Some(Protected::LinkLocal)
            } else if v4.is_multicast() {
                Some(Protected::Multicast)
            } else if v4.is_broadcast() {
                Some(Protected::Broadcast)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some(Protected::Loopback)
            } else if v6.is_unspecified() {
                Some(Protected::ThisNetwork)
            } else if v6.is_unicast_link_local() {
                Some(Protected::LinkLocal)
            } else if v6.is_multicast() {
                Some(Protected::Multicast)
            } else if let Some(v4) = nat64_embedded(v6) {
                // The well-known NAT64 prefix reaches the IPv4 address it embeds.
                category(IpAddr::V4(v4))
            } else {
                None
            }
        }
    }
}

/// The IPv4 address inside an address of the well-known NAT64 prefix 64:ff9b::/96.
fn nat64_embedded(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let o = v6.octets();
        Ipv4Addr::new(o[12], o[13], o[14], o[15])
    })
}

/// Every address of this host's interfaces; empty (with a warning) when they cannot be read.
fn host_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|i| canonical(i.ip())).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses: the destination guard protects loopback but not the other interface addresses");
            Vec::new()
        }
    }
}

/// `CIDR,CIDR,...` from one of the guard's environment variables; bad entries are reported
/// and skipped (the variable is written by `up`, not by hand).
pub fn nets_from_env(name: &str) -> Vec<IpNet> {
    let Ok(text) = std::env::var(name) else {
        return Vec::new();
    };
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| match parse_net(s) {
            Some(net) => Some(net),
            None => {
                tracing::warn!(
                    variable = name,
                    value = s,
                    "not an address or CIDR: ignored"
                );
                None
            }
        })
        .collect()
}

/// An address (a host route) or a CIDR.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard(deny: &[&str], allow: &[&str]) -> DestinationGuard {
        let nets = |v: &[&str]| v.iter().map(|s| parse_net(s).unwrap()).collect();
        DestinationGuard {
            enabled: true,
            deny: nets(deny),
            allow: nets(allow),
            host_addrs: vec![ip("198.51.100.7")],
        }
    }

    const OWN: [SocketAddr; 2] = [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 10, 1, 11)), 3128),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080),
    ];

    #[test]
    fn canonical_forms_are_what_a_connect_reaches() {
        assert_eq!(canonical(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::ffff:0.0.0.0")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("0.0.0.0")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::")), ip("::1"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(canonical(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn protected_categories() {
        let g = guard(&[], &[]);
        let cases = [
            ("127.0.0.1", Some(Protected::Loopback)),
            ("127.255.0.3", Some(Protected::Loopback)),
            ("::1", Some(Protected::Loopback)),
            ("0.1.2.3", Some(Protected::ThisNetwork)),
            ("169.254.169.254", Some(Protected::Metadata)),
            ("169.254.10.1", Some(Protected::LinkLocal)),
            ("fe80::1", Some(Protected::LinkLocal)),
            ("fd00:ec2::254", Some(Protected::Metadata)),
            ("100.100.100.200", Some(Protected::Metadata)),
            ("168.63.129.16", Some(Protected::Metadata)),
            ("224.0.0.1", Some(Protected::Multicast)),
            ("ff02::1", Some(Protected::Multicast)),
            ("255.255.255.255", Some(Protected::Broadcast)),
            ("64:ff9b::7f00:1", Some(Protected::Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Protected::Metadata)),
            ("198.51.100.7", Some(Protected::ThisHost)),
            ("10.0.0.1", None),
            ("192.0.2.10", None),
            ("2001:db8::1", None),
            ("100.100.100.201", None),
        ];
        for (addr, want) in cases {
            assert_eq!(g.protects(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn deny_beats_allow_beats_categories() {
        let g = guard(&["127.10.0.0/16", "203.0.113.9"], &["127.0.0.0/8"]);
        assert_eq!(g.protects(ip("127.30.0.10")), None, "allowed on purpose");
        assert_eq!(g.protects(ip("127.10.1.10")), Some(Protected::Denied));
        assert_eq!(g.protects(ip("203.0.113.9")), Some(Protected::Denied));
        assert_eq!(g.protects(ip("::1")), Some(Protected::Loopback));
    }

    #[test]
    fn every_address_is_judged_and_loops_are_refused_even_when_off() {
        let mut g = guard(&[], &[]);
        let mixed = [ip("192.0.2.1"), ip("127.0.0.1")];
        assert_eq!(
            g.refuses(&mixed, 80, &OWN),
            Some((ip("127.0.0.1"), Protected::Loopback))
        );
        assert_eq!(g.refuses(&[ip("192.0.2.1")], 80, &OWN), None);
        g.enabled = false;
        assert_eq!(g.refuses(&mixed, 80, &OWN), None);
        assert_eq!(
            g.refuses(&[ip("127.10.1.11")], 3128, &OWN),
            Some((ip("127.10.1.11"), Protected::ProxyItself))
        );
        assert_eq!(g.refuses(&[ip("127.10.1.11")], 3129, &OWN), None);
        // A wildcard listener is reached through any local address.
        assert_eq!(
            g.refuses(&[ip("198.51.100.7")], 8080, &OWN),
            Some((ip("198.51.100.7"), Protected::ProxyItself))
        );
        assert_eq!(g.refuses(&[ip("192.0.2.1")], 8080, &OWN), None);
    }

    #[test]
    fn nets_parse_addresses_and_cidrs() {
        assert_eq!(
            parse_net("127.0.0.1"),
            Some("127.0.0.1/32".parse().unwrap())
        );
        assert_eq!(parse_net("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse_net("10.0.0.0/8"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_net("nope"), None);
    }
}
