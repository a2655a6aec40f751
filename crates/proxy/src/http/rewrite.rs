//! Builds the heads the proxy sends: the request to the origin and the response to the client.
//! Hop-by-hop fields are removed (RFC 9110 §7.6.1), `Via` and `X-Forwarded-For` are added per
//! configuration, and everything else passes through byte for byte.

use std::io::Write;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use super::head::{tokens, Head};
use crate::config::ForwardedFor;

/// Fields that describe one connection, never forwarded. `Transfer-Encoding` is not here:
/// bodies pass through with their framing unchanged, so the field stays true.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "proxy-authorization",
];

/// The fields one head's `Connection` header names: hop-by-hop for that message only.
struct ConnectionTokens<'a>(Vec<&'a [u8]>);

/// Fields that frame the body: a `Connection` header naming them does not remove them, or
/// the next hop would read the body as a message of its own (request smuggling).
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

impl<'a> ConnectionTokens<'a> {
    fn of(head: &'a Head) -> Self {
        let named = head.values("connection").flat_map(tokens);
        ConnectionTokens(
            named
                .filter(|t| !FRAMING.iter().any(|f| f.as_bytes().eq_ignore_ascii_case(t)))
                .collect(),
        )
    }

    fn is_hop_by_hop(&self, name: &[u8]) -> bool {
        HOP_BY_HOP
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
            || self.0.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Per-proxy settings for the request rewrite.
#[derive(Debug, Clone)]
pub struct RequestRewrite {
    /// The `Via` element this proxy adds (e.g. `1.1 host (proxyfleet/0.1.0)`), if `via on`.
    pub via: Option<String>,
    pub forwarded_for: ForwardedFor,
}

/// Writes the request head for the origin into `out`.
///
/// An HTTP/1.0 client's request goes out as HTTP/1.0 with `Connection: keep-alive`, so the
/// origin never answers it with chunked coding (which a 1.0 client cannot read) while the
/// origin connection can still be reused.
pub fn origin_request(
    head: &Head,
    path_and_query: &str,
    host_header: &str,
    client: IpAddr,
    rw: &RequestRewrite,
    out: &mut BytesMut,
) {
    let version = if head.minor_version == 0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    put(
        out,
        &[
            head.method().as_bytes(),
            b" ",
            path_and_query.as_bytes(),
            b" ",
            version.as_bytes(),
        ],
    );
    put(out, &[b"\r\nHost: ", host_header.as_bytes(), b"\r\n"]);
    let mut xff: Option<Vec<u8>> = None;
    let hop = ConnectionTokens::of(head);
    for (name, value) in head.fields() {
        if name.eq_ignore_ascii_case(b"host") || hop.is_hop_by_hop(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for")
            && rw.forwarded_for != ForwardedFor::Transparent
        {
            let acc = xff.get_or_insert_with(Vec::new);
            if !acc.is_empty() {
                acc.extend_from_slice(b", ");
            }
            acc.extend_from_slice(value);
            continue;
        }
        put(out, &[name, b": ", value, b"\r\n"]);
    }
    let client_text = client.to_string();
    let appended: Option<&[u8]> = match rw.forwarded_for {
        ForwardedFor::On => Some(client_text.as_bytes()),
        ForwardedFor::Off => Some(b"unknown"),
        ForwardedFor::Truncate => {
            xff = None;
            Some(client_text.as_bytes())
        }
        ForwardedFor::Delete => {
            xff = None;
            None
        }
        ForwardedFor::Transparent => None,
    };
    if let Some(extra) = appended {
        let mut value = xff.take().unwrap_or_default();
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(extra);
        put(out, &[b"X-Forwarded-For: ", &value, b"\r\n"]);
    }
    if let Some(via) = &rw.via {
        put(out, &[b"Via: ", via.as_bytes(), b"\r\n"]);
    }
    if head.minor_version == 0 {
        out.put_slice(b"Connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Writes the response head for the client into `out`. `keep_alive` says whether the client
/// connection stays open after this response.
pub fn client_response(head: &Head, via: Option<&str>, keep_alive: bool, out: &mut BytesMut) {
    // Like Squid, the proxy speaks HTTP/1.1 to every client.
    let _ = write!((&mut *out).writer(), "HTTP/1.1 {} ", head.status);
    put(out, &[head.reason(), b"\r\n"]);
    let hop = ConnectionTokens::of(head);
    for (name, value) in head.fields() {
        if hop.is_hop_by_hop(name) {
            continue;
        }
        put(out, &[name, b": ", value, b"\r\n"]);
    }
    if let Some(via) = via {
        put(out, &[b"Via: ", via.as_bytes(), b"\r\n"]);
    }
    out.put_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
}

fn put(out: &mut BytesMut, parts: &[&[u8]]) {
    for p in parts {
        out.put_slice(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let mut buf = BytesMut::from(text.as_bytes());
        Head::parse_request(&mut buf, 65536).unwrap().unwrap()
    }

    fn rewrite(text: &str, ff: ForwardedFor) -> String {
        let h = head(text);
        let mut out = BytesMut::new();
        let rw = RequestRewrite {
            via: Some("1.1 px (proxyfleet)".into()),
            forwarded_for: ff,
        };
        origin_request(
            &h,
            "/p",
            "o.test",
            "127.20.0.5".parse().unwrap(),
            &rw,
            &mut out,
        );
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn strips_hop_by_hop_and_adds_via_and_xff() {
        let got = rewrite(
            "GET http://o.test/p HTTP/1.1\r\nHost: wrong\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
            ForwardedFor::On,
        );
        assert_eq!(
            got,
            "GET /p HTTP/1.1\r\nHost: o.test\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1, 127.20.0.5\r\nVia: 1.1 px (proxyfleet)\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_for_modes() {
        let req = "GET http://o.test/p HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
        assert!(rewrite(req, ForwardedFor::Off).contains("X-Forwarded-For: 10.0.0.1, unknown\r\n"));
        assert!(rewrite(req, ForwardedFor::Transparent).contains("X-Forwarded-For: 10.0.0.1\r\n"));
        assert!(!rewrite(req, ForwardedFor::Delete).contains("X-Forwarded-For"));
        assert!(rewrite(req, ForwardedFor::Truncate).contains("X-Forwarded-For: 127.20.0.5\r\n"));
    }

    /// Found by the head fuzz target: `Connection` naming a framing field removed it while
    /// the body was still forwarded, and the origin read the body as a second request.
    #[test]
    fn connection_never_removes_the_framing() {
        let got = rewrite(
            "POST http://o.test/p HTTP/1.1\r\nConnection: close, Transfer-Encoding, \
             content-length\r\nTransfer-Encoding: chunked\r\n\r\n",
            ForwardedFor::Delete,
        );
        assert!(got.contains("\r\nTransfer-Encoding: chunked\r\n"), "{got}");
        let got = rewrite(
            "POST http://o.test/p HTTP/1.1\r\nConnection: Content-Length\r\n\
             Content-Length: 3\r\n\r\n",
            ForwardedFor::Delete,
        );
        assert!(got.contains("\r\nContent-Length: 3\r\n"), "{got}");
        assert!(!got.contains("Connection"), "{got}");
    }

    #[test]
    fn http10_request_asks_for_keep_alive() {
        let got = rewrite("GET http://o.test/p HTTP/1.0\r\n\r\n", ForwardedFor::Delete);
        assert!(got.starts_with("GET /p HTTP/1.0\r\n"));
        assert!(got.ends_with("Connection: keep-alive\r\n\r\n"));
    }
}
