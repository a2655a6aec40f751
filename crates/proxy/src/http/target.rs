//! The request target: absolute-form (forward), authority-form (CONNECT) or origin-form.

use http::Uri;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET http://host:port/path?q`: forwarded to the origin.
    Absolute {
        /// Lowercase URL scheme.
        scheme: String,
        /// Lowercase host, IPv6 without brackets.
        host: String,
        port: u16,
        /// What goes on the origin's request line (`/` when the URL has no path).
        path_and_query: String,
    },
    /// `CONNECT host:port`.
    Authority { host: String, port: u16 },
    /// `GET /path`: addressed to the proxy itself.
    Origin { path: String },
}

/// The target cannot be used: Squid's ERR_INVALID_URL.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidTarget(pub &'static str);

impl Target {
    pub fn parse(method: &str, target: &str) -> Result<Target, InvalidTarget> {
        if method == "CONNECT" {
            return parse_authority(target);
        }
        if target.starts_with('/') {
            return Ok(Target::Origin {
                path: target.to_string(),
            });
        }
        if target == "*" {
            return Err(InvalidTarget("asterisk-form is not for a proxy"));
        }
        let uri: Uri = target.parse().map_err(|_| InvalidTarget("malformed URL"))?;
        let scheme = uri
            .scheme_str()
            .ok_or(InvalidTarget("URL without a scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(InvalidTarget("URL without a host"))?;
        let port = match uri.port_u16() {
            Some(0) => return Err(InvalidTarget("port 0")),
            Some(p) => p,
            None => default_port(&scheme),
        };
        let path_and_query = match uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.as_str().to_string(),
            Some(pq) => format!("/{}", pq.as_str()),
            None => "/".to_string(),
        };
        // `http://.../` has the host `...`, which is nothing once its trailing dots go.
        let host = normalize_host(host)?;
        if host.is_empty() {
            return Err(InvalidTarget("URL without a host"));
        }
        Ok(Target::Absolute {
            scheme,
            host,
            port,
            path_and_query,
        })
    }

    /// The `Host` header value for the origin: the URL's authority without user info, with
    /// the port only when it is not the scheme's default.
    pub fn host_header(host: &str, port: u16, scheme: &str) -> String {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        if port == default_port(scheme) {
            host
        } else {
            format!("{host}:{port}")
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    match scheme {
        "https" | "wss" => 443,
        "ftp" => 21,
        "gopher" => 70,
        _ => 80,
    }
}

/// Lowercase, without brackets or a trailing dot; IPv4-mapped IPv6 as IPv4; a host written as a number in any of the
/// forms browsers and inet_aton(3) accept (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`)
/// becomes the dotted IPv4 address it stands for, so that ACLs, the destination guard and the
/// connect all see the same address.
fn normalize_host(host: &str) -> Result<String, InvalidTarget> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.contains(':') {
        // An IPv4-mapped IPv6 literal is the IPv4 address it reaches; Squid writes it so in
        // the Host header too (`[::ffff:127.30.0.9]:8080` becomes `127.30.0.9:8080`).
        return Ok(match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => v6.to_ipv4_mapped().map_or(host, |v4| v4.to_string()),
            Err(_) => host,
        });
    }
    match numeric_ipv4(&host) {
        None => Ok(host),
        Some(Some(ip)) => Ok(ip.to_string()),
        Some(None) => Err(InvalidTarget(
            "host ends in a number but is not an IPv4 address",
        )),
    }
}

/// The WHATWG URL Standard's IPv4 parser (written out here because the `url` crate would
/// bring IDNA tables the proxy does not otherwise need): `None` when the host is a name (its
/// last label is not a number), `Some(None)` when it ends in a number but is no valid address.
fn numeric_ipv4(host: &str) -> Option<Option<std::net::Ipv4Addr>> {
    let parts: Vec<&str> = host.split('.').collect();
    let last = parts.last()?;
    if last.is_empty() || parse_ipv4_number(last).is_none() {
        return None;
    }
    if parts.len() > 4 {
        return Some(None);
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in &parts {
        match parse_ipv4_number(part) {
            Some(n) => numbers.push(n),
            None => return Some(None),
        }
    }
    let (last, init) = numbers.split_last()?;
    if init.iter().any(|&n| n > 255) || *last >= 256u64.pow(5 - numbers.len() as u32) {
        return Some(None);
    }
    let mut addr = *last;
    for (i, n) in init.iter().enumerate() {
        addr += n << (8 * (3 - i));
    }
    // Every part is in range here, so the sum fits in 32 bits.
    Some(u32::try_from(addr).ok().map(std::net::Ipv4Addr::from))
}

/// One part of a numeric host: `0x`-prefixed hex (`0x` alone is 0), `0`-prefixed octal, or
/// decimal.
fn parse_ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        return (radix != 10).then_some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Too large for u64 is still a number (and too large for any part of an address).
    Some(u64::from_str_radix(digits, radix).unwrap_or(u64::MAX))
}

fn parse_authority(target: &str) -> Result<Target, InvalidTarget> {
    let uri: Uri = target
        .parse()
        .map_err(|_| InvalidTarget("malformed CONNECT authority"))?;
    if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(InvalidTarget("CONNECT needs host:port"));
    }
    let authority = uri
        .authority()
        .ok_or(InvalidTarget("CONNECT needs host:port"))?;
    if authority.as_str().contains('@') {
        return Err(InvalidTarget("user info in CONNECT authority"));
    }
    let host = authority.host();
    let port = authority
        .port_u16()
        .ok_or(InvalidTarget("CONNECT needs a port"))?;
    let host = normalize_host(host)?;
    if host.is_empty() || port == 0 {
        return Err(InvalidTarget("CONNECT needs host:port"));
    }
    Ok(Target::Authority { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form() {
        let t = Target::parse("GET", "http://Example.COM:8080/a/b?q=1").unwrap();
        assert_eq!(
            t,
            Target::Absolute {
                scheme: "http".into(),
                host: "example.com".into(),
                port: 8080,
                path_and_query: "/a/b?q=1".into()
            }
        );
        let t = Target::parse("GET", "http://[::1]").unwrap();
        assert!(
            matches!(t, Target::Absolute { ref host, port: 80, ref path_and_query, .. }
            if host == "::1" && path_and_query == "/")
        );
    }

    #[test]
    fn authority_and_origin_forms() {
        assert_eq!(
            Target::parse("CONNECT", "host.test:443").unwrap(),
            Target::Authority {
                host: "host.test".into(),
                port: 443
            }
        );
        assert!(Target::parse("CONNECT", "host.test").is_err());
        assert!(Target::parse("CONNECT", "http://host.test:443/").is_err());
        assert_eq!(
            Target::parse("GET", "/healthz").unwrap(),
            Target::Origin {
                path: "/healthz".into()
            }
        );
        assert!(Target::parse("GET", "http:///").is_err());
        assert!(Target::parse("GET", "http://h:0/").is_err());
    }

    /// Found by the head fuzz target: a host of only dots became the empty host, which
    /// ACLs read as "unknown".
    #[test]
    fn a_host_of_dots_is_no_host() {
        assert!(Target::parse("GET", "http://a@.../").is_err());
        assert!(Target::parse("GET", "http://./").is_err());
        assert!(Target::parse("CONNECT", "..:443").is_err());
        assert!(Target::parse("GET", "http://a.test./").is_ok());
    }

    #[test]
    fn numeric_hosts_are_the_addresses_they_stand_for() {
        let host = |url: &str| match Target::parse("GET", url) {
            Ok(Target::Absolute { host, .. }) => Ok(host),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0X7F000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://0x7f.1/",
            "http://127.0.0.1./",
            "http://017700000001/",
        ] {
            assert_eq!(host(url).as_deref(), Ok("127.0.0.1"), "{url}");
        }
        assert_eq!(host("http://0/").as_deref(), Ok("0.0.0.0"));
        assert_eq!(
            host("http://[::ffff:127.0.0.1]/").as_deref(),
            Ok("127.0.0.1")
        );
        assert_eq!(host("http://[::FFFF:7f00:1]/").as_deref(), Ok("127.0.0.1"));
        assert_eq!(host("http://[2001:DB8::1]/").as_deref(), Ok("2001:db8::1"));
        assert_eq!(host("http://4294967295/").as_deref(), Ok("255.255.255.255"));
        assert_eq!(host("http://0x/").as_deref(), Ok("0.0.0.0"));
        for bad in [
            "http://4294967296/",
            "http://1.2.3.4.5/",
            "http://256.0.0.1/",
            "http://1.2.65536/",
            "http://example.123/",
            "http://09.0.0.1/",
        ] {
            assert!(host(bad).is_err(), "{bad}");
        }
        for name in [
            "http://example.com/",
            "http://1.2.3.example/",
            "http://0x7f.test/",
            "http://0x1g/",
        ] {
            assert_eq!(host(name).unwrap(), name[7..name.len() - 1], "{name}");
        }
        assert_eq!(
            Target::parse("CONNECT", "0x7f000001:443").unwrap(),
            Target::Authority {
                host: "127.0.0.1".into(),
                port: 443
            }
        );
    }

    #[test]
    fn host_header_omits_default_port() {
        assert_eq!(Target::host_header("a.test", 80, "http"), "a.test");
        assert_eq!(Target::host_header("a.test", 8080, "http"), "a.test:8080");
        assert_eq!(Target::host_header("::1", 8080, "http"), "[::1]:8080");
    }
}
