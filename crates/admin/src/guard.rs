//! What every request meets before any route: the Host check against DNS rebinding, the
//! refusal of cross-origin mutating calls, preflights answered without CORS, and the request
//! body limit.
//!
//! Why: the API listens on loopback, but a web page in the operator's browser can reach
//! loopback too. With DNS rebinding (a name the attacker controls, re-pointed at 127.0.0.1)
//! the browser treats the API as the attacker's own origin and lets the page read it; the
//! request then carries the attacker's name in `Host`, so the API answers only Hosts that
//! are its own: its listening address, `localhost`, `127.0.0.1` or `[::1]`, with any port
//! (an SSH tunnel or port forward changes the port, not the name). Anything else gets
//! `421 Misdirected Request` with a plain-text reason. The Unix socket skips this check: no
//! browser connects to a Unix socket, so no page can rebind a name to it. A request without `Host` is refused
//! with 400 in HTTP/1.1 (RFC 9112 §3.2 requires it) and accepted in HTTP/1.0: no browser
//! sends one, and old command-line clients may.
//!
//! The API never sends `Access-Control-Allow-*` headers, so browsers keep other origins'
//! pages from reading it; a preflight `OPTIONS` gets `204` with `Allow` and nothing else
//! (which the browser takes as "no"). A mutating request (any method but GET, HEAD, OPTIONS)
//! whose `Origin` is not the API's own (`http://` and the request's own Host or the
//! listening address) is refused with 403 before its token is even looked at: a form
//! another site posts cannot act, whatever the browser lets through.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The largest request body accepted (413 above it). Every body the API takes is a small
/// JSON object; this only keeps a client from making `up` buffer megabytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The methods that only read; every other method is a mutating call.
const SAFE: [Method; 3] = [Method::GET, Method::HEAD, Method::OPTIONS];

/// What the guard compares requests with.
#[derive(Debug)]
pub struct Guard {
    /// The address the API listens on.
    pub listen: SocketAddr,
    /// Whether Host is checked: on TCP, yes; on the Unix socket, which no browser can
    /// reach, no.
    pub check_host: bool,
}

pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if guard.check_host {
        if let Err((status, reason)) = guard.host(&request) {
            return refuse(status, reason);
        }
    }
    if request.method() == Method::OPTIONS {
        // No Access-Control-Allow-*: a browser's preflight fails, as it must.
        return (
            StatusCode::NO_CONTENT,
            [(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"))],
        )
            .into_response();
    }
    if !SAFE.contains(request.method()) {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            if !guard.own_origin(origin, request.headers()) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "403 Forbidden: the admin API refuses {} from another origin ({}); \
                         only its own pages may call it",
                        request.method(),
                        shown(origin.as_bytes())
                    ),
                );
            }
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return crate::api::too_large();
    }
    next.run(request).await
}

impl Guard {
    /// `Err`: the status and reason to refuse the request with.
    fn host(&self, request: &Request) -> Result<(), (StatusCode, String)> {
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err((
                StatusCode::BAD_REQUEST,
                "400 Bad Request: more than one Host header".to_string(),
            ));
        }
        // An absolute-form target (`GET http://name/...`) names the host too, and wins over
        // Host (RFC 9112 §3.2.2): both must be ours.
        let mut names: Vec<&[u8]> = host.iter().map(|h| h.as_bytes()).collect();
        if let Some(authority) = request.uri().authority() {
            names.push(authority.as_str().as_bytes());
        }
        if names.is_empty() {
            return if request.version() >= Version::HTTP_11 {
                Err((
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: an HTTP/1.1 request needs a Host header".to_string(),
                ))
            } else {
                Ok(())
            };
        }
        for name in names {
            if !self.allowed_host(name) {
                let mut own = vec!["127.0.0.1".to_string(), "localhost".into(), "[::1]".into()];
                let listen = match self.listen.ip() {
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                };
                if !own.contains(&listen) {
                    own.insert(0, listen);
                }
                return Err((
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "421 Misdirected Request: the admin API answers only for Host {} \
                         (any port), not {} (a guard against DNS rebinding: use one of those \
                         names)",
                        own.join(", "),
                        shown(name)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether `host` (`name` or `name:port`, as in a Host header) names this API.
    fn allowed_host(&self, host: &[u8]) -> bool {
        let Ok(host) = std::str::from_utf8(host) else {
            return false;
        };
        let Some(name) = split_port(host) else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        if name == "localhost" {
            return true;
        }
        let ip = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
            // Only the dotted quad as written: `127.1` or `2130706433` are not names a
            // browser sends for this API, and IpAddr's parser refuses them anyway.
            None => name.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        };
        ip.is_some_and(|ip| {
            ip == self.listen.ip()
                || ip == IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                || ip == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        })
    }

    /// Whether `origin` is `http://` and the request's own Host or the listening address.
    fn own_origin(&self, origin: &HeaderValue, headers: &HeaderMap) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Some(authority) = origin
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &origin[7..])
        else {
            return false;
        };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let own = [host.map(str::to_string), Some(self.listen.to_string())];
        own.iter()
            .flatten()
            .any(|own| own.eq_ignore_ascii_case(authority) && self.allowed_host(own.as_bytes()))
    }
}

/// `name` of `name:port` (`[v6]:port` keeps its brackets); `None` when the port is not a
/// number.
fn split_port(host: &str) -> Option<&str> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')? + 1;
        (&host[..end], host[end..].strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        port.parse::<u16>().ok()?;
    }
    (!name.is_empty()).then_some(name)
}

/// A header's value as a quoted, printable, bounded string for a message.
fn shown(value: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(value)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(100)
        .collect();
    format!("'{text}'")
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CONNECTION, HeaderValue::from_static("close")),
        ],
        format!("{reason}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            listen: "127.0.0.1:4000".parse().unwrap(),
            check_host: true,
        }
    }

    #[test]
    fn own_names_with_any_port_pass_and_others_do_not() {
        let g = guard();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:4000",
            "127.0.0.1:8080",
            "localhost",
            "LocalHost:4000",
            "[::1]",
            "[::1]:4000",
        ] {
            assert!(g.allowed_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:4000",
            "localhost.",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "127.0.0.2",
            "127.1",
            "2130706433",
            "0x7f000001",
            "[::2]",
            "[::ffff:127.0.0.1]",
            "127.0.0.1:port",
            "127.0.0.1:99999",
            "localhost:",
            ":4000",
            "[::1",
        ] {
            assert!(!g.allowed_host(bad.as_bytes()), "{bad}");
        }
        let other = Guard {
            listen: "127.0.0.9:4000".parse().unwrap(),
            check_host: true,
        };
        assert!(other.allowed_host(b"127.0.0.9:4000"), "its own address");
    }

    #[test]
    fn the_own_origin_is_the_request_s_host_or_the_listening_address() {
        let g = guard();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("localhost:8080"));
        let origin = |o: &'static str| HeaderValue::from_static(o);
        assert!(g.own_origin(&origin("http://localhost:8080"), &headers));
        assert!(g.own_origin(&origin("HTTP://LOCALHOST:8080"), &headers));
        assert!(g.own_origin(&origin("http://127.0.0.1:4000"), &headers));
        for bad in [
            "http://localhost:3000",
            "https://localhost:8080",
            "http://evil.example",
            "null",
            "http://127.0.0.1:4001",
            "",
        ] {
            assert!(!g.own_origin(&origin(bad), &headers), "{bad}");
        }
    }
}
