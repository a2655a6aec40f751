//! Address sets for `src` and `dst` ACLs.
//!
//! Every Squid address form (`a`, `a/len`, `a/255.255.0.0`, `a-b`, `a-b/len`, `all`) is reduced
//! to one shape, "the address ANDed with `mask` lies in `lo..=hi`", the way Squid's
//! `aclIpAddrNetworkCompare` does it. A network is then just `lo == hi == network`, and matching
//! is a few integer operations per entry with no allocation.

use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry<T> {
    lo: T,
    hi: T,
    mask: T,
}

/// A set of IPv4 and IPv6 addresses, ranges and networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<Entry<u32>>,
    v6: Vec<Entry<u128>>,
}

impl IpSet {
    /// Adds one value in Squid's syntax; the error says what is wrong with it.
    pub fn add(&mut self, value: &str) -> Result<(), String> {
        if value == "all" {
            // Squid's `all` covers both families.
            self.v4.push(Entry {
                lo: 0,
                hi: 0,
                mask: 0,
            });
            self.v6.push(Entry {
                lo: 0,
                hi: 0,
                mask: 0,
            });
            return Ok(());
        }
        let (range, mask) = match value.split_once('/') {
            Some((range, mask)) => (range, Some(mask)),
            None => (value, None),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (parse_addr(lo, value)?, Some(parse_addr(hi, value)?)),
            None => (parse_addr(range, value)?, None),
        };
        match (lo, hi) {
            (IpAddr::V4(lo), hi) => {
                let hi = match hi {
                    None => lo,
                    Some(IpAddr::V4(hi)) => hi,
                    Some(IpAddr::V6(_)) => return Err(mixed_families(value)),
                };
                let bits = mask.map(|m| prefix_len(m, 32, value)).transpose()?;
                let mask = bits.map_or(u32::MAX, |b| u32::MAX.checked_shl(32 - b).unwrap_or(0));
                self.v4
                    .push(entry(u32::from(lo), u32::from(hi), mask, value)?);
            }
            (IpAddr::V6(lo), hi) => {
                let hi = match hi {
                    None => lo,
                    Some(IpAddr::V6(hi)) => hi,
                    Some(IpAddr::V4(_)) => return Err(mixed_families(value)),
                };
                if mask.is_some_and(|m| m.contains('.')) {
                    return Err(format!(
                        "'{value}': a dotted netmask only fits an IPv4 address; use /LEN"
                    ));
                }
                let bits = mask.map(|m| prefix_len(m, 128, value)).transpose()?;
                let mask = bits.map_or(u128::MAX, |b| u128::MAX.checked_shl(128 - b).unwrap_or(0));
                self.v6
                    .push(entry(u128::from(lo), u128::from(hi), mask, value)?);
            }
        }
        Ok(())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // Callers normalize already; doing it again is free and keeps `::ffff:a.b.c.d` from
        // silently missing IPv4 entries.
        match ip.to_canonical() {
            IpAddr::V4(ip) => hit(&self.v4, u32::from(ip)),
            IpAddr::V6(ip) => hit(&self.v6, u128::from(ip)),
        }
    }
}

fn hit<T: Copy + Ord + std::ops::BitAnd<Output = T>>(entries: &[Entry<T>], ip: T) -> bool {
    entries.iter().any(|e| {
        let x = ip & e.mask;
        e.lo <= x && x <= e.hi
    })
}

/// Squid masks the bounds too (with a warning when that changes them); so do we, silently.
fn entry<T>(lo: T, hi: T, mask: T, value: &str) -> Result<Entry<T>, String>
where
    T: Copy + Ord + std::ops::BitAnd<Output = T>,
{
    let (lo, hi) = (lo & mask, hi & mask);
    if lo > hi {
        return Err(format!("'{value}': the range ends before it starts"));
    }
    Ok(Entry { lo, hi, mask })
}

fn parse_addr(text: &str, value: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| {
        format!("'{value}' is not an IP address, network (ADDR/LEN) or range (ADDR-ADDR)")
    })
}

fn mixed_families(value: &str) -> String {
    format!("'{value}': both ends of a range must be of the same address family")
}

/// `/24` or, for IPv4, a dotted netmask such as `/255.255.255.0`.
fn prefix_len(mask: &str, width: u32, value: &str) -> Result<u32, String> {
    if mask.contains('.') {
        let bits = match mask.parse::<Ipv4Addr>() {
            Ok(m) => u32::from(m),
            Err(_) => return Err(format!("'{value}': invalid netmask '{mask}'")),
        };
        // Squid "guesses" a prefix for holes in a dotted mask; refusing is less surprising.
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(format!(
                "'{value}': netmask '{mask}' is not contiguous; use /LEN"
            ));
        }
        return Ok(bits.leading_ones());
    }
    match mask.parse::<u32>() {
        Ok(bits) if bits <= width && !mask.starts_with('+') => Ok(bits),
        _ => Err(format!(
            "'{value}': invalid prefix length '{mask}' (expected 0-{width})"
        )),
    }
}

/// For the built-in ACLs, whose values are known to be valid.
pub(super) fn builtin(values: &[&str]) -> IpSet {
    let mut set = IpSet::default();
    for v in values {
        set.add(v).expect("built-in ACL value");
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> IpSet {
        let mut s = IpSet::default();
        for v in values {
            s.add(v).unwrap();
        }
        s
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_address_is_exact() {
        let s = set(&["10.0.0.1"]);
        assert!(s.contains(ip("10.0.0.1")));
        assert!(!s.contains(ip("10.0.0.2")));
    }

    #[test]
    fn cidr_and_dotted_mask() {
        let s = set(&["10.1.0.0/16", "192.168.0.0/255.255.255.0"]);
        assert!(s.contains(ip("10.1.200.3")));
        assert!(!s.contains(ip("10.2.0.1")));
        assert!(s.contains(ip("192.168.0.77")));
        assert!(!s.contains(ip("192.168.1.1")));
    }

    #[test]
    fn host_bits_in_network_are_masked_away() {
        let s = set(&["10.1.2.3/8"]);
        assert!(s.contains(ip("10.200.0.1")));
    }

    #[test]
    fn ranges_with_and_without_mask() {
        // Debian's "this network" line.
        let s = set(&["0.0.0.1-0.255.255.255"]);
        assert!(s.contains(ip("0.0.0.1")));
        assert!(s.contains(ip("0.255.255.255")));
        assert!(!s.contains(ip("0.0.0.0")));
        assert!(!s.contains(ip("1.0.0.0")));

        // Squid masks the address, then compares with the range: 10.0.1.0/24 .. 10.0.3.0/24.
        let s = set(&["10.0.1.0-10.0.3.0/24"]);
        assert!(s.contains(ip("10.0.2.200")));
        assert!(s.contains(ip("10.0.3.255")));
        assert!(!s.contains(ip("10.0.4.0")));
        assert!(!s.contains(ip("10.0.0.255")));
    }

    #[test]
    fn ipv6_networks_and_ranges() {
        let s = set(&["fc00::/7", "2001:db8::1-2001:db8::9", "::1"]);
        assert!(s.contains(ip("fd12::1")));
        assert!(s.contains(ip("2001:db8::5")));
        assert!(!s.contains(ip("2001:db8::a")));
        assert!(s.contains(ip("::1")));
        assert!(!s.contains(ip("fe80::1")));
        // Families never cross.
        assert!(!s.contains(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_ipv6_matches_ipv4_entries() {
        let s = set(&["127.0.0.0/8"]);
        assert!(s.contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn all_covers_both_families() {
        let s = set(&["all"]);
        assert!(s.contains(ip("8.8.8.8")));
        assert!(s.contains(ip("2001:db8::1")));
        let s = set(&["0.0.0.0/0"]);
        assert!(!s.contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_values_say_why() {
        let mut s = IpSet::default();
        assert_eq!(
            s.add("example.com").unwrap_err(),
            "'example.com' is not an IP address, network (ADDR/LEN) or range (ADDR-ADDR)"
        );
        assert_eq!(
            s.add("10.0.0.0/33").unwrap_err(),
            "'10.0.0.0/33': invalid prefix length '33' (expected 0-32)"
        );
        assert_eq!(
            s.add("10.0.0.0/255.0.255.0").unwrap_err(),
            "'10.0.0.0/255.0.255.0': netmask '255.0.255.0' is not contiguous; use /LEN"
        );
        assert_eq!(
            s.add("10.0.0.9-10.0.0.1").unwrap_err(),
            "'10.0.0.9-10.0.0.1': the range ends before it starts"
        );
        assert_eq!(
            s.add("10.0.0.1-::1").unwrap_err(),
            "'10.0.0.1-::1': both ends of a range must be of the same address family"
        );
        assert_eq!(
            s.add("::/255.0.0.0").unwrap_err(),
            "'::/255.0.0.0': a dotted netmask only fits an IPv4 address; use /LEN"
        );
        assert_eq!(s, IpSet::default(), "nothing was added");
    }
}
