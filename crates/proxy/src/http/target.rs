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
        let host = normalize_host(host);
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

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
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
    let host = normalize_host(host);
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
    fn host_header_omits_default_port() {
        assert_eq!(Target::host_header("a.test", 80, "http"), "a.test");
        assert_eq!(Target::host_header("a.test", 8080, "http"), "a.test:8080");
        assert_eq!(Target::host_header("::1", 8080, "http"), "[::1]:8080");
    }
}
