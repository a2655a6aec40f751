//! `http_port ... accel` (Squid's accelerator, a reverse proxy): requests arrive in origin
//! form (`GET /path`) and the URL they stand for is rebuilt the way Squid 5.7 rebuilds it
//! (checked against it):
//!
//! - a `Host` header names the site; `vport=N` replaces its port with N, a bare `vport`
//!   with the port the request arrived on;
//! - without `Host`, `defaultsite=` names it (with the `vport` port, if any);
//! - without either, `vport` alone names the proxy's own address and that port;
//! - otherwise the URL is invalid (400, `ERR_INVALID_URL`).
//!
//! Where the request then goes is the `cache_peer` rules' choice, with going direct
//! forbidden unless the port says `allow-direct` ([`crate::peers`]); `originserver` peers
//! are sent the origin form again.

use std::net::SocketAddr;

use crate::config::{Accel, Vport};
use crate::intercept::host_of;

/// The site an accelerated request is for: its host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub host: String,
    pub port: u16,
}

impl Site {
    /// `http://host[:port]` followed by `path` (the port left out when it is 80).
    pub fn url(&self, path: &str) -> String {
        let authority = crate::http::target::Target::host_header(&self.host, self.port, "http");
        format!("http://{authority}{path}")
    }
}

/// The site of an origin-form request on an accel port; `None` when nothing names one.
pub fn site(accel: &Accel, host_header: Option<&str>, local: Option<SocketAddr>) -> Option<Site> {
    let vport = match accel.vport {
        Some(Vport::Fixed(port)) => Some(port),
        Some(Vport::Listening) => Some(local?.port()),
        None => None,
    };
    let named = |value: &str| {
        let (host, port) = host_of(value)?;
        Some(Site {
            host,
            port: vport.or(port).unwrap_or(80),
        })
    };
    if let Some(site) = host_header.and_then(named) {
        return Some(site);
    }
    if let Some(site) = accel.default_site.as_deref().and_then(named) {
        return Some(site);
    }
    let port = vport?;
    Some(Site {
        host: local?.ip().to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accel(default_site: Option<&str>, vport: Option<Vport>) -> Accel {
        Accel {
            default_site: default_site.map(String::from),
            vport,
            allow_direct: false,
        }
    }

    /// Each case as Squid 5.7 logged its URL (`%ru`) for the same port and request.
    #[test]
    fn urls_as_squid_rebuilds_them() {
        let local: Option<SocketAddr> = Some("127.30.0.90:3130".parse().unwrap());
        let url = |a: &Accel, host: Option<&str>| site(a, host, local).map(|s| s.url("/p"));
        let plain = accel(None, None);
        assert_eq!(
            url(&plain, Some("h.test:9999")).unwrap(),
            "http://h.test:9999/p"
        );
        assert_eq!(url(&plain, Some("H.Test")).unwrap(), "http://h.test/p");
        assert_eq!(url(&plain, None), None, "400 ERR_INVALID_URL");
        let fixed = accel(None, Some(Vport::Fixed(8080)));
        assert_eq!(
            url(&fixed, Some("h.test:9999")).unwrap(),
            "http://h.test:8080/p"
        );
        assert_eq!(url(&fixed, None).unwrap(), "http://127.30.0.90:8080/p");
        let listening = accel(None, Some(Vport::Listening));
        assert_eq!(
            url(&listening, Some("h.test:9999")).unwrap(),
            "http://h.test:3130/p"
        );
        assert_eq!(url(&listening, None).unwrap(), "http://127.30.0.90:3130/p");
        let default = accel(Some("site.test"), None);
        assert_eq!(url(&default, None).unwrap(), "http://site.test/p");
        assert_eq!(
            url(&default, Some("h.test")).unwrap(),
            "http://h.test/p",
            "Host wins"
        );
        let with_port = accel(Some("127.30.0.92:8080"), None);
        assert_eq!(url(&with_port, None).unwrap(), "http://127.30.0.92:8080/p");
        assert_eq!(url(&plain, Some("[::1]:81")).unwrap(), "http://[::1]:81/p");
    }
}
