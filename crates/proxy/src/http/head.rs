//! Parsed HTTP/1 message heads (request and response) and their body framing.
//!
//! Heads are parsed by `httparse` and then kept as the raw bytes plus offsets, so the
//! forwarding code can copy header lines through without re-allocating each one.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Headers beyond this count make the head invalid. Squid has no count limit, only the byte
/// limit (`request_header_max_size`); 256 fields fit any real client.
pub const MAX_HEADERS: usize = 256;

/// Header fields a client's request may have: fewer than [`MAX_HEADERS`] by the fields the
/// proxy may add when it forwards it (`Host`, `X-Forwarded-For`, `Via`, and one spare), so
/// that every request it accepts is forwarded as one its own parser — and an origin with the
/// same limit — accepts too. (Found by the `head` fuzz target: 255 client fields became 258.)
pub const MAX_REQUEST_FIELDS: usize = MAX_HEADERS - 4;

/// One header field: offsets into [`Head::raw`].
#[derive(Debug, Clone)]
pub struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// A request or response head: the raw bytes up to and including the empty line.
#[derive(Debug, Clone)]
pub struct Head {
    raw: Bytes,
    fields: Vec<Field>,
    /// Request: method. Response: empty.
    method: Range<usize>,
    /// Request: target. Response: reason phrase.
    target: Range<usize>,
    /// Response status code; 0 for requests.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
}

/// Why a head could not be parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// More bytes than the configured limit arrived without the end of the head.
    TooLarge,
    /// Not HTTP/1.x or otherwise malformed.
    Invalid(&'static str),
}

fn offset(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

impl Head {
    /// Parses a request head from the front of `buf`. On success the head bytes are split off
    /// `buf` (what follows stays for the body or the next request). `Ok(None)`: need more bytes.
    /// At most [`MAX_REQUEST_FIELDS`] fields: a client's request, which the proxy forwards.
    pub fn parse_request(buf: &mut BytesMut, max_size: usize) -> Result<Option<Head>, HeadError> {
        Head::parse_request_with(buf, max_size, MAX_REQUEST_FIELDS)
    }

    /// [`Head::parse_request`] with at most `max_fields` fields (up to [`MAX_HEADERS`]): how
    /// an origin with proxyfleet's parser reads what the proxy forwards.
    pub fn parse_request_with(
        buf: &mut BytesMut,
        max_size: usize,
        max_fields: usize,
    ) -> Result<Option<Head>, HeadError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut storage);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > max_size {
                    Err(HeadError::TooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Invalid(parse_error_text(e))),
        };
        if len > max_size || req.headers.len() > max_fields {
            return Err(HeadError::TooLarge);
        }
        let base = &buf[..];
        let method = offset(base, req.method.unwrap_or_default().as_bytes());
        let target = offset(base, req.path.unwrap_or_default().as_bytes());
        let minor_version = req.version.unwrap_or(1);
        let fields = collect_fields(base, req.headers);
        let raw = buf.split_to(len).freeze();
        Ok(Some(Head {
            raw,
            fields,
            method,
            target,
            status: 0,
            minor_version,
        }))
    }

    /// Parses a response head; same contract as [`Head::parse_request`].
    pub fn parse_response(buf: &mut BytesMut, max_size: usize) -> Result<Option<Head>, HeadError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut storage);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > max_size {
                    Err(HeadError::TooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Invalid(parse_error_text(e))),
        };
        if len > max_size {
            return Err(HeadError::TooLarge);
        }
        let base = &buf[..];
        let target = offset(base, resp.reason.unwrap_or_default().as_bytes());
        let status = resp.code.unwrap_or(0);
        let minor_version = resp.version.unwrap_or(1);
        let fields = collect_fields(base, resp.headers);
        let raw = buf.split_to(len).freeze();
        Ok(Some(Head {
            raw,
            fields,
            method: 0..0,
            target,
            status,
            minor_version,
        }))
    }

    pub fn method(&self) -> &str {
        // httparse only accepts token characters in the method: always ASCII.
        std::str::from_utf8(&self.raw[self.method.clone()]).unwrap_or("")
    }

    pub fn target(&self) -> &str {
        // httparse accepts only visible ASCII in the target.
        std::str::from_utf8(&self.raw[self.target.clone()]).unwrap_or("")
    }

    /// The response's reason phrase.
    pub fn reason(&self) -> &[u8] {
        &self.raw[self.target.clone()]
    }

    /// Size of the head on the wire.
    pub fn wire_len(&self) -> usize {
        self.raw.len()
    }

    /// Every field, in order, as (name, value). Names are bytes: httparse admits only token
    /// characters in them, and comparing bytes spares a UTF-8 check per field per lookup.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (&self.raw[f.name.clone()], &self.raw[f.value.clone()]))
    }

    /// Values of every field called `name` (case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`.
    pub fn value<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// Whether any comma-separated element of any `name` field equals `token`
    /// (case-insensitive), e.g. `has_token("connection", "close")`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
    }

    /// Whether the sender wants the connection kept open after this message
    /// (HTTP/1.1 default yes unless `close`; HTTP/1.0 only with `keep-alive`).
    pub fn wants_keep_alive(&self) -> bool {
        if self.has_token("connection", "close") || self.has_token("proxy-connection", "close") {
            return false;
        }
        self.minor_version >= 1
            || self.has_token("connection", "keep-alive")
            || self.has_token("proxy-connection", "keep-alive")
    }
}

fn collect_fields(base: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Field> {
    headers
        .iter()
        .map(|h| Field {
            name: offset(base, h.name.as_bytes()),
            value: offset(base, h.value),
        })
        .collect()
}

/// Comma-separated list elements with surrounding white space removed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn parse_error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0 = no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a message's framing is unacceptable (the request-smuggling defences).
#[derive(Debug, PartialEq, Eq)]
pub enum FramingError {
    /// Both Transfer-Encoding and Content-Length in a response: RFC 9112 §6.3 lets a
    /// recipient treat it as an error, and the proxy does (a request's Transfer-Encoding
    /// wins instead, as in Squid).
    LengthAndEncoding,
    /// A Content-Length that is not a number, or several different ones.
    BadLength,
    /// A Transfer-Encoding other than a lone `chunked` (Squid: 501, as the proxy decodes no
    /// other coding and cannot tell where such a body ends).
    UnsupportedEncoding,
    /// Transfer-Encoding in an HTTP/1.0 message: RFC 9112 §6.1 says to treat its framing as
    /// faulty (a 1.0 hop before this one would not have read it as chunked).
    EncodingInHttp10,
    /// An `Expect` other than `100-continue` (RFC 9110 §10.1.1: 417, as Squid answers).
    UnsupportedExpectation,
}

/// The elements of a comma-separated list, white space trimmed, empty ones kept (an empty
/// element is malformed where [`tokens`] would skip it).
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// The message's Content-Length: every element of every field must be the same decimal
/// number (RFC 9110 §8.6 lets a recipient merge identical duplicates; anything else is 400).
fn content_length(head: &Head) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    for value in head.values("content-length") {
        for part in elements(value) {
            // Digits only: no sign, no white space inside, no hex; at most Squid's int64.
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::BadLength);
            }
            let n = std::str::from_utf8(part)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|n| *n <= i64::MAX as u64)
                .ok_or(FramingError::BadLength)?;
            match found {
                Some(prev) if prev != n => return Err(FramingError::BadLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// `Some(())` when the message has a Transfer-Encoding and it is exactly one `chunked`
/// (the only coding the proxy decodes); `None` without one.
fn transfer_encoding(head: &Head) -> Result<Option<()>, FramingError> {
    if head.value("transfer-encoding").is_none() {
        return Ok(None);
    }
    if head.minor_version == 0 {
        return Err(FramingError::EncodingInHttp10);
    }
    let mut codings = head.values("transfer-encoding").flat_map(elements);
    match (codings.next(), codings.next()) {
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => Ok(Some(())),
        _ => Err(FramingError::UnsupportedEncoding),
    }
}

/// A request's body framing, and the other checks a request passes before it is forwarded.
///
/// With both Transfer-Encoding and Content-Length the Transfer-Encoding wins (RFC 9112 §6.3,
/// what Squid 5.7 does): the body is read as chunked and forwarded re-chunked, the
/// Content-Length never reaches the origin, and the client connection closes after the
/// response ([`closes_after`]).
pub fn request_framing(head: &Head) -> Result<Framing, FramingError> {
    if head.value("expect").is_some() {
        let mut values = head.values("expect").flat_map(elements);
        match (values.next(), values.next()) {
            (Some(only), None) if only.eq_ignore_ascii_case(b"100-continue") => {}
            _ => return Err(FramingError::UnsupportedExpectation),
        }
    }
    let chunked = transfer_encoding(head)?;
    let length = content_length(head);
    match chunked {
        Some(()) => Ok(Framing::Chunked),
        None => Ok(Framing::Length(length?.unwrap_or(0))),
    }
}

/// Whether the connection must close after answering this request although it is otherwise
/// reusable: RFC 9112 §6.3 requires it after a request with both Transfer-Encoding and
/// Content-Length, which is how smuggling attempts look.
pub fn closes_after(head: &Head) -> bool {
    head.value("transfer-encoding").is_some() && head.value("content-length").is_some()
}

/// Whether a response to `request_method` with this status has no body whatever its fields
/// say (RFC 9112 §6.3: HEAD, 1xx, 204, 304).
pub fn response_has_no_body(head: &Head, request_method: &str) -> bool {
    let status = head.status;
    request_method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304
}

/// A response's body framing, given the request method it answers (RFC 9112 §6.3). Stricter
/// than a client must be: a response the proxy could frame differently from the next hop
/// (both fields, a coding other than a lone `chunked`, a 1.0 response with a coding, a bad
/// length) is refused as invalid rather than passed on.
pub fn response_framing(head: &Head, request_method: &str) -> Result<Framing, FramingError> {
    if response_has_no_body(head, request_method) {
        return Ok(Framing::Length(0));
    }
    let chunked = transfer_encoding(head)?;
    let length = content_length(head)?;
    match (chunked, length) {
        (Some(()), Some(_)) => Err(FramingError::LengthAndEncoding),
        (Some(()), None) => Ok(Framing::Chunked),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::UntilClose),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Head {
        let mut buf = BytesMut::from(text.as_bytes());
        Head::parse_request(&mut buf, 65536).unwrap().unwrap()
    }

    #[test]
    fn parses_request_and_leaves_the_rest() {
        let mut buf = BytesMut::from(&b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\nBODY"[..]);
        let head = Head::parse_request(&mut buf, 65536).unwrap().unwrap();
        assert_eq!(head.method(), "GET");
        assert_eq!(head.target(), "http://a/");
        assert_eq!(head.value("host"), Some(&b"a"[..]));
        assert_eq!(&buf[..], b"BODY");
    }

    #[test]
    fn a_request_has_room_left_for_the_fields_the_proxy_adds() {
        let head = |fields: usize| {
            let mut text = String::from("GET http://a/ HTTP/1.1\r\n");
            for i in 0..fields {
                text.push_str(&format!("X-{i}: v\r\n"));
            }
            text.push_str("\r\n");
            Head::parse_request(&mut BytesMut::from(text.as_bytes()), 1 << 20)
        };
        assert!(matches!(head(MAX_REQUEST_FIELDS), Ok(Some(_))));
        assert_eq!(
            head(MAX_REQUEST_FIELDS + 1).unwrap_err(),
            HeadError::TooLarge
        );
        // A response may use every field.
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..MAX_HEADERS {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        let mut buf = BytesMut::from(text.as_bytes());
        assert!(matches!(
            Head::parse_response(&mut buf, 1 << 20),
            Ok(Some(_))
        ));
    }

    #[test]
    fn partial_head_waits_then_fails_past_the_limit() {
        let mut buf = BytesMut::from(&b"GET http://a/ HTTP/1.1\r\nHost: a\r\n"[..]);
        assert_eq!(
            Head::parse_request(&mut buf, 65536).unwrap().map(|_| ()),
            None
        );
        assert_eq!(
            Head::parse_request(&mut buf, 10).unwrap_err(),
            HeadError::TooLarge
        );
    }

    fn framing(fields: &str) -> Result<Framing, FramingError> {
        request_framing(&req(&format!("POST http://a/ HTTP/1.1\r\n{fields}\r\n")))
    }

    #[test]
    fn content_length_rules() {
        use FramingError::BadLength;
        assert_eq!(framing(""), Ok(Framing::Length(0)));
        assert_eq!(framing("Content-Length: 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(framing("Content-Length: 005\r\n"), Ok(Framing::Length(5)));
        // Identical duplicates merge, in one field or several.
        assert_eq!(framing("Content-Length: 5, 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(Framing::Length(5))
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 5 5\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length: 5a\r\n",
            "Content-Length:\r\n",
            "Content-Length: 5,\r\n",
            "Content-Length: 9223372036854775808\r\n",
            "Content-Length: 99999999999999999999999\r\n",
        ] {
            assert_eq!(framing(bad), Err(BadLength), "{bad:?}");
        }
        assert_eq!(
            framing("Content-Length: 9223372036854775807\r\n"),
            Ok(Framing::Length(i64::MAX as u64))
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        use FramingError::*;
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n"),
            Ok(Framing::Chunked)
        );
        for unsupported in [
            "Transfer-Encoding: identity, chunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
            "Transfer-Encoding:\r\n",
            "Transfer-Encoding: ,chunked\r\n",
        ] {
            assert_eq!(
                framing(unsupported),
                Err(UnsupportedEncoding),
                "{unsupported:?}"
            );
        }
        // Both: Transfer-Encoding wins (even over a malformed length), and the connection
        // closes after the response.
        let both = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n";
        assert_eq!(framing(both), Ok(Framing::Chunked));
        assert_eq!(
            framing("Content-Length: x\r\nTransfer-Encoding: chunked\r\n"),
            Ok(Framing::Chunked)
        );
        assert!(closes_after(&req(&format!(
            "POST http://a/ HTTP/1.1\r\n{both}\r\n"
        ))));
        assert!(!closes_after(&req(
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
        )));
        // HTTP/1.0 with a Transfer-Encoding: faulty framing.
        let old = req("POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(request_framing(&old), Err(EncodingInHttp10));
        let old = req("POST http://a/ HTTP/1.0\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(request_framing(&old), Ok(Framing::Length(2)));
    }

    #[test]
    fn only_100_continue_is_expected() {
        use FramingError::UnsupportedExpectation;
        assert_eq!(framing("Expect: 100-continue\r\n"), Ok(Framing::Length(0)));
        assert_eq!(framing("Expect: 100-Continue\r\n"), Ok(Framing::Length(0)));
        for bad in [
            "Expect: 100-continue, foo\r\n",
            "Expect: 100-continue\r\nExpect: 100-continue\r\n",
            "Expect: 200-ok\r\n",
            "Expect:\r\n",
            "Expect: 100-continue; x=1\r\n",
        ] {
            assert_eq!(framing(bad), Err(UnsupportedExpectation), "{bad:?}");
        }
    }

    #[test]
    fn header_syntax_rules() {
        let parse = |text: &str| {
            let mut buf = BytesMut::from(text.as_bytes());
            Head::parse_request(&mut buf, 65536).map(|h| h.is_some())
        };
        // obs-fold, white space before the colon, a bare CR, a NUL in a value, an empty name.
        for bad in [
            "GET http://a/ HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX: 1\r\n\tfolded\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nContent-Length\t: 5\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n Content-Length: 5\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n: 5\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX-A\r\n\r\n",
            "GET  http://a/ HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/1.2\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Invalid(_))),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        // A bare LF ending a head line is accepted (RFC 9112 §2.2 allows it): the head is
        // written out again with CRLF, so the next hop never sees it.
        assert_eq!(parse("GET http://a/ HTTP/1.1\nHost: a\n\n"), Ok(true));
        let h = req("GET http://a/ HTTP/1.1\r\nContent-Length: 5  \r\n\r\n");
        assert_eq!(
            h.value("content-length"),
            Some(&b"5"[..]),
            "trailing OWS trimmed"
        );
    }

    #[test]
    fn response_framing_rules() {
        let resp = |text: &str| {
            let mut buf = BytesMut::from(text.as_bytes());
            let head = Head::parse_response(&mut buf, 65536).unwrap().unwrap();
            response_framing(&head, "GET")
        };
        assert_eq!(
            resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            resp("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n"),
            Ok(Framing::Length(3))
        );
        assert_eq!(
            resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(FramingError::LengthAndEncoding)
        );
        assert_eq!(
            resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(FramingError::UnsupportedEncoding)
        );
        assert_eq!(
            resp("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(FramingError::EncodingInHttp10)
        );
        assert_eq!(
            resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(FramingError::BadLength)
        );
    }

    #[test]
    fn keep_alive_defaults_follow_the_version() {
        assert!(req("GET http://a/ HTTP/1.1\r\n\r\n").wants_keep_alive());
        assert!(!req("GET http://a/ HTTP/1.1\r\nConnection: close\r\n\r\n").wants_keep_alive());
        assert!(!req("GET http://a/ HTTP/1.0\r\n\r\n").wants_keep_alive());
        assert!(req("GET http://a/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").wants_keep_alive());
    }

    #[test]
    fn response_framing_by_status_and_method() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"[..]);
        let head = Head::parse_response(&mut buf, 65536).unwrap().unwrap();
        assert_eq!(response_framing(&head, "GET"), Ok(Framing::Length(0)));
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..]);
        let head = Head::parse_response(&mut buf, 65536).unwrap().unwrap();
        assert_eq!(response_framing(&head, "HEAD"), Ok(Framing::Length(0)));
        assert_eq!(response_framing(&head, "GET"), Ok(Framing::Length(10)));
        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        let head = Head::parse_response(&mut buf, 65536).unwrap().unwrap();
        assert_eq!(response_framing(&head, "GET"), Ok(Framing::UntilClose));
    }
}
