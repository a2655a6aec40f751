//! Builds the heads the proxy sends: the request to the origin and the response to the client.
//! Hop-by-hop fields are removed (RFC 9110 §7.6.1), `Via` and `X-Forwarded-For` are added per
//! configuration, the framing fields are the proxy's own (it re-frames every body), and
//! everything else passes through byte for byte.

use std::io::Write;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use super::head::{tokens, Framing, Head};
use crate::config::ForwardedFor;

/// Fields that describe one connection, never forwarded. The framing fields are not here:
/// the proxy writes its own (see [`FRAMING`]).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "proxy-authorization",
];

/// The fields that say where a body ends. A message's own are never copied: the proxy
/// writes the framing of the body it sends ([`Framing`] of the body it read, re-encoded), so
/// no field can describe one body to the proxy and another to the next hop. `Trailer` goes
/// with them because trailers are dropped when a chunked body is re-encoded.
const FRAMING: &[&str] = &["content-length", "transfer-encoding", "trailer"];

/// Fields a `Connection` header may never remove: dropping a framing field while the body is
/// forwarded makes the next hop read the body as a second request (request smuggling);
/// `Host` is how the next hop knows the target.
const NEVER_HOP_BY_HOP: &[&str] = &["content-length", "transfer-encoding", "host"];

fn is_one_of(list: &[&str], name: &[u8]) -> bool {
    list.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// The fields one head's `Connection` header names: hop-by-hop for that message only.
struct ConnectionTokens<'a>(Vec<&'a [u8]>);

impl<'a> ConnectionTokens<'a> {
    fn of(head: &'a Head) -> Self {
        ConnectionTokens(
            head.values("connection")
                .flat_map(tokens)
                .filter(|t| !is_one_of(NEVER_HOP_BY_HOP, t))
                .collect(),
        )
    }

    fn is_hop_by_hop(&self, name: &[u8]) -> bool {
        is_one_of(HOP_BY_HOP, name) || self.0.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// What header rules (`request_header_access` and friends) decide for one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldAction<'a> {
    Keep,
    Drop,
    /// Keep the name, send this value instead.
    Replace(&'a str),
}

/// Decides what happens to a field, by name.
pub type FieldDecider<'a> = dyn Fn(&[u8]) -> FieldAction<'a> + Sync + 'a;

/// Header rules applied to one message: a decision per field, and fields added at the end.
#[derive(Default)]
pub struct Edits<'a> {
    pub decide: Option<&'a FieldDecider<'a>>,
    pub add: Vec<(String, String)>,
}

impl Edits<'_> {
    /// Writes `name: value` unless the rules drop it.
    fn put_field(&self, out: &mut BytesMut, name: &[u8], value: &[u8]) {
        match self.decide.map_or(FieldAction::Keep, |d| d(name)) {
            FieldAction::Keep => put(out, &[name, b": ", value, b"\r\n"]),
            FieldAction::Drop => {}
            FieldAction::Replace(v) => put(out, &[name, b": ", v.as_bytes(), b"\r\n"]),
        }
    }

    fn put_added(&self, out: &mut BytesMut) {
        for (name, value) in &self.add {
            put(out, &[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"]);
        }
    }
}

/// Per-proxy settings for the request rewrite.
#[derive(Debug, Clone)]
pub struct RequestRewrite {
    /// The `Via` element this proxy adds (e.g. `1.1 host (proxyfleet/0.1.0)`), if `via on`.
    pub via: Option<String>,
    pub forwarded_for: ForwardedFor,
}

/// Where the request goes and for whom.
pub struct Outgoing<'a> {
    pub path_and_query: &'a str,
    pub host_header: &'a str,
    /// The client, for `X-Forwarded-For`.
    pub client: IpAddr,
}

/// Writes the request head for the origin into `out`; `framing` is the request body's (as
/// [`super::head::request_framing`] found it).
///
/// The request always goes out as HTTP/1.1, the proxy's own version (RFC 9110 §6.2), with
/// the proxy's framing: one `Content-Length` when the client sent one (duplicates merged), or
/// `Transfer-Encoding: chunked` for a body that is re-chunked — never a coding to a 1.0 hop.
/// An HTTP/1.0 client's `Expect` is dropped (RFC 9110 §10.1.1: ignored for 1.0, whose
/// clients cannot read the 100 response it asks for).
pub fn origin_request(
    head: &Head,
    framing: Framing,
    to: &Outgoing<'_>,
    rw: &RequestRewrite,
    edits: &Edits<'_>,
    out: &mut BytesMut,
) {
    put(
        out,
        &[
            head.method().as_bytes(),
            b" ",
            to.path_and_query.as_bytes(),
            b" HTTP/1.1",
        ],
    );
    put(out, &[b"\r\nHost: ", to.host_header.as_bytes(), b"\r\n"]);
    let mut xff: Option<Vec<u8>> = None;
    let hop = ConnectionTokens::of(head);
    let http10 = head.minor_version == 0;
    for (name, value) in head.fields() {
        if name.eq_ignore_ascii_case(b"host")
            || hop.is_hop_by_hop(name)
            || is_one_of(FRAMING, name)
            || (http10 && name.eq_ignore_ascii_case(b"expect"))
        {
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
        edits.put_field(out, name, value);
    }
    let client_text = to.client.to_string();
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
        edits.put_field(out, b"X-Forwarded-For", &value);
    }
    if let Some(via) = &rw.via {
        edits.put_field(out, b"Via", via.as_bytes());
    }
    edits.put_added(out);
    match framing {
        Framing::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Length(n) if n > 0 || head.value("content-length").is_some() => {
            let _ = write!((&mut *out).writer(), "Content-Length: {n}\r\n");
        }
        Framing::Length(_) | Framing::UntilClose => {}
    }
    out.put_slice(b"\r\n");
}

/// Which framing fields the response to the client carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// A response without a body (to HEAD, 1xx, 204, 304): its fields pass as they are, as
    /// they describe the representation, not this message.
    NoBody,
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (the body is re-chunked).
    Chunked,
    /// No framing field: the body ends when the proxy closes the connection.
    Close,
}

/// Writes the response head for the client into `out`. `keep_alive` says whether the client
/// connection stays open after this response; `framing` which framing fields it carries.
pub fn client_response(
    head: &Head,
    via: Option<&str>,
    keep_alive: bool,
    framing: ResponseFraming,
    edits: &Edits<'_>,
    out: &mut BytesMut,
) {
    // Like Squid, the proxy speaks HTTP/1.1 to every client.
    let _ = write!((&mut *out).writer(), "HTTP/1.1 {} ", head.status);
    put(out, &[head.reason(), b"\r\n"]);
    let hop = ConnectionTokens::of(head);
    for (name, value) in head.fields() {
        if hop.is_hop_by_hop(name)
            || (framing != ResponseFraming::NoBody && is_one_of(FRAMING, name))
        {
            continue;
        }
        edits.put_field(out, name, value);
    }
    match framing {
        ResponseFraming::Length(n) => {
            let _ = write!((&mut *out).writer(), "Content-Length: {n}\r\n");
        }
        ResponseFraming::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
        ResponseFraming::NoBody | ResponseFraming::Close => {}
    }
    if let Some(via) = via {
        edits.put_field(out, b"Via", via.as_bytes());
    }
    edits.put_added(out);
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
    use crate::http::head::request_framing;

    fn head(text: &str) -> Head {
        let mut buf = BytesMut::from(text.as_bytes());
        Head::parse_request(&mut buf, 65536).unwrap().unwrap()
    }

    fn rewrite(text: &str, ff: ForwardedFor) -> String {
        let h = head(text);
        let framing = request_framing(&h).unwrap();
        let mut out = BytesMut::new();
        let rw = RequestRewrite {
            via: Some("1.1 px (proxyfleet)".into()),
            forwarded_for: ff,
        };
        origin_request(
            &h,
            framing,
            &Outgoing {
                path_and_query: "/p",
                host_header: "o.test",
                client: "127.20.0.5".parse().unwrap(),
            },
            &rw,
            &Edits::default(),
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

    #[test]
    fn connection_never_removes_framing_or_host() {
        for connection in [
            "Content-Length",
            "close, Content-Length",
            "Transfer-Encoding",
            "close, Transfer-Encoding",
            "Host",
        ] {
            let got = rewrite(
                &format!("POST http://o.test/p HTTP/1.1\r\nConnection: {connection}\r\nContent-Length: 5\r\n\r\n"),
                ForwardedFor::Delete,
            );
            assert!(
                got.contains("\r\nContent-Length: 5\r\n"),
                "{connection}: {got}"
            );
            assert!(got.contains("\r\nHost: o.test\r\n"), "{connection}: {got}");
            let got = rewrite(
                &format!("POST http://o.test/p HTTP/1.1\r\nConnection: {connection}\r\nTransfer-Encoding: chunked\r\n\r\n"),
                ForwardedFor::Delete,
            );
            assert!(
                got.contains("\r\nTransfer-Encoding: chunked\r\n"),
                "{connection}: {got}"
            );
        }
    }

    #[test]
    fn framing_fields_are_the_proxys_own() {
        let merged = rewrite(
            "POST http://o.test/p HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5, 5\r\n\r\n",
            ForwardedFor::Delete,
        );
        assert_eq!(merged.matches("ontent-").count(), 1, "{merged}");
        assert!(
            merged.ends_with("\r\nContent-Length: 5\r\n\r\n"),
            "{merged}"
        );
        // Both fields: chunked wins, the length never reaches the origin.
        let both = rewrite(
            "POST http://o.test/p HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n",
            ForwardedFor::Delete,
        );
        assert!(
            !both.to_ascii_lowercase().contains("content-length"),
            "{both}"
        );
        assert!(!both.contains("Trailer:"), "trailers are dropped: {both}");
        assert!(
            both.ends_with("\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "{both}"
        );
        let zero = rewrite(
            "POST http://o.test/p HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            ForwardedFor::Delete,
        );
        assert!(zero.ends_with("\r\nContent-Length: 0\r\n\r\n"), "{zero}");
        let none = rewrite("GET http://o.test/p HTTP/1.1\r\n\r\n", ForwardedFor::Delete);
        assert!(!none.contains("Content-Length"), "{none}");
    }

    #[test]
    fn http10_request_goes_out_as_http11() {
        let got = rewrite(
            "POST http://o.test/p HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            ForwardedFor::Delete,
        );
        assert!(got.starts_with("POST /p HTTP/1.1\r\n"), "{got}");
        assert!(got.ends_with("\r\nContent-Length: 2\r\n\r\n"), "{got}");
        assert!(!got.contains("Expect"), "{got}");
        let got = rewrite(
            "POST http://o.test/p HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            ForwardedFor::Delete,
        );
        assert!(got.contains("\r\nExpect: 100-continue\r\n"), "{got}");
    }

    #[test]
    fn response_framing_fields() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 3, 3\r\nTrailer: X\r\nX-A: 1\r\n\r\n"[..],
        );
        let resp = Head::parse_response(&mut buf, 65536).unwrap().unwrap();
        let text = |framing| {
            let mut out = BytesMut::new();
            client_response(&resp, None, true, framing, &Edits::default(), &mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(
            text(ResponseFraming::Length(3)),
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            text(ResponseFraming::Chunked),
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        );
        assert!(text(ResponseFraming::NoBody).contains("\r\nContent-Length: 3, 3\r\n"));
    }
}
