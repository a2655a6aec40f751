//! Parsed HTTP/1 message heads (request and response) and their body framing.
//!
//! Heads are parsed by `httparse` and then kept as the raw bytes plus offsets, so the
//! forwarding code can copy header lines through without re-allocating each one.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Headers beyond this count make the head invalid. Squid has no count limit, only the byte
/// limit (`request_header_max_size`); 256 fields fit any real client.
pub const MAX_HEADERS: usize = 256;

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
    pub fn parse_request(buf: &mut BytesMut, max_size: usize) -> Result<Option<Head>, HeadError> {
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
        if len > max_size {
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
    /// Both Transfer-Encoding and Content-Length: RFC 9112 §6.1 lets a proxy reject it,
    /// and forwarding it is how requests get smuggled past a front end.
    LengthAndEncoding,
    /// Content-Length that is not a number, or several different ones.
    BadLength,
    /// A request Transfer-Encoding whose last coding is not chunked (RFC 9112 §6.3: 400).
    UnsupportedEncoding,
}

fn content_length(head: &Head) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    for value in head.values("content-length") {
        for part in tokens(value) {
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
                return Err(FramingError::BadLength);
            }
            // All digits, at most 19 of them: fits in u64.
            let n: u64 = std::str::from_utf8(part)
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            match found {
                Some(prev) if prev != n => return Err(FramingError::BadLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn is_chunked_last(head: &Head) -> Option<bool> {
    let mut last: Option<&[u8]> = None;
    for value in head.values("transfer-encoding") {
        for t in tokens(value) {
            last = Some(t);
        }
    }
    last.map(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// A request's body framing.
pub fn request_framing(head: &Head) -> Result<Framing, FramingError> {
    let length = content_length(head)?;
    match is_chunked_last(head) {
        Some(_) if length.is_some() => Err(FramingError::LengthAndEncoding),
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Err(FramingError::UnsupportedEncoding),
        None => Ok(Framing::Length(length.unwrap_or(0))),
    }
}

/// A response's body framing, given the request method it answers (RFC 9112 §6.3).
pub fn response_framing(head: &Head, request_method: &str) -> Result<Framing, FramingError> {
    let status = head.status;
    if request_method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Length(0));
    }
    let length = content_length(head)?;
    match is_chunked_last(head) {
        Some(_) if length.is_some() => Err(FramingError::LengthAndEncoding),
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Ok(Framing::UntilClose),
        None => Ok(length.map_or(Framing::UntilClose, Framing::Length)),
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

    #[test]
    fn framing_rejects_smuggling_shapes() {
        let both = req(
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(request_framing(&both), Err(FramingError::LengthAndEncoding));
        let two = req("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(request_framing(&two), Err(FramingError::BadLength));
        let same = req("POST http://a/ HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(request_framing(&same), Ok(Framing::Length(5)));
        let plus = req("POST http://a/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n");
        assert_eq!(request_framing(&plus), Err(FramingError::BadLength));
        let gzip = req("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(
            request_framing(&gzip),
            Err(FramingError::UnsupportedEncoding)
        );
        let chunked = req("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(request_framing(&chunked), Ok(Framing::Chunked));
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
