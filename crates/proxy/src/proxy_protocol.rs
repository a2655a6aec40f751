//! The PROXY protocol (v1 text, v2 binary) on `require-proxy-header` ports.
//!
//! A connection must begin with a valid header from a sender `proxy_protocol_access` allows;
//! otherwise it is closed. After it, the address in the header is the client. A v2 LOCAL
//! header (a load balancer's health check) carries no client: the sender is the client.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::acl::{AccessRules, Facts};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The longest v1 header line, CRLF included (the spec's figure).
const V1_MAX: usize = 107;
/// v2 headers may carry TLVs: bounded here.
const MAX_HEADER: usize = 16 + 4096;

/// Why a connection was refused before its first request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("sender {0} is not allowed by proxy_protocol_access")]
    NotAllowed(IpAddr),
    #[error("no PROXY protocol header")]
    Missing,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("connection closed before the PROXY protocol header ended")]
    Closed,
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
}

/// Reads and removes the header from the front of the stream. `buf` keeps any bytes after it.
/// Room reserved per read while looking for the header.
const HEADER_READ: usize = 512;

pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    sender: IpAddr,
    access: &AccessRules,
    wait: Duration,
) -> Result<IpAddr, ProxyHeaderError> {
    let facts = Facts::connection(sender);
    if !access.allows(&facts) {
        return Err(ProxyHeaderError::NotAllowed(sender));
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some((len, client)) = parse(buf, sender)? {
            buf.advance(len);
            return Ok(client);
        }
        // Small reads: a header is at most a few hundred bytes, and what follows it in the
        // same read (a client's first bytes) stays in this buffer — a full-size read buffer
        // here would be held by every connection whose client is slow to finish its request.
        if buf.capacity() - buf.len() < HEADER_READ / 2 {
            buf.reserve(HEADER_READ);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(ProxyHeaderError::Closed),
            Ok(Ok(_)) => {}
            Err(_) => return Err(ProxyHeaderError::Timeout(wait)),
        }
    }
}

/// The buffer-level step of [`read_header`]: the header at the front of `buf` as its length
/// and the client it names. `Ok(None)`: need more bytes. Public only for the fuzz targets.
#[doc(hidden)]
pub fn parse(buf: &[u8], sender: IpAddr) -> Result<Option<(usize, IpAddr)>, ProxyHeaderError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    let v2 = buf[..n] == V2_SIGNATURE[..n];
    let n1 = buf.len().min(V1_SIGNATURE.len());
    let v1 = buf[..n1] == V1_SIGNATURE[..n1];
    if !v1 && !v2 {
        return Err(ProxyHeaderError::Missing);
    }
    // A v1 header is one line: judge it only when it has ended, since ppp refuses some
    // prefixes of a valid line (`... 40000 ` before the last port) as invalid, and a
    // header split across reads would then close the connection. And give ppp only that
    // line: it takes some `UNKNOWN` lines to end at a bare LF, and the client's first
    // bytes would then be read as the rest of the header or the header's as the request.
    let buf = match memchr::memmem::find(buf, b"\r\n") {
        _ if !v1 || v2 => buf,
        Some(at) if at + 2 <= V1_MAX => &buf[..at + 2],
        None if buf.len() <= V1_MAX => return Ok(None),
        _ => {
            return Err(ProxyHeaderError::Invalid(
                "v1 header longer than 107 bytes".into(),
            ))
        }
    };
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        // ppp reports some malformed v1 lines as incomplete; a v1 line ends at its CRLF.
        let v1_line_done =
            v1 && (memchr::memmem::find(buf, b"\r\n").is_some() || buf.len() > V1_MAX);
        if v1_line_done {
            return Err(ProxyHeaderError::Invalid("malformed v1 header".into()));
        }
        if buf.len() > MAX_HEADER {
            return Err(ProxyHeaderError::Invalid("header too long".into()));
        }
        return Ok(None);
    }
    match result {
        HeaderResult::V2(Ok(h)) => {
            let client = match (h.command, h.addresses) {
                (v2::Command::Local, _) => sender,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => IpAddr::V4(a.source_address),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => IpAddr::V6(a.source_address),
                // UNSPEC or UNIX: no usable address; the spec says use the real connection's.
                (v2::Command::Proxy, _) => sender,
            };
            Ok(Some((h.len(), normalize(client))))
        }
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                v1::Addresses::Tcp4(a) => IpAddr::V4(a.source_address),
                v1::Addresses::Tcp6(a) => IpAddr::V6(a.source_address),
                v1::Addresses::Unknown => sender,
            };
            if h.header.len() != buf.len() {
                return Err(ProxyHeaderError::Invalid(
                    "v1 header does not end at its CRLF".into(),
                ));
            }
            Ok(Some((h.header.len(), normalize(client))))
        }
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Invalid(format!("{e:?}"))),
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Invalid(format!("{e:?}"))),
    }
}

/// IPv4-mapped IPv6 addresses become plain IPv4, so ACLs written for IPv4 match them.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a socket peer, normalized.
pub fn peer_ip(peer: SocketAddr) -> IpAddr {
    normalize(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENDER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 10, 1, 10));

    #[test]
    fn v1_header_gives_the_client() {
        let buf = b"PROXY TCP4 127.20.0.5 127.10.1.11 40000 3128\r\nGET";
        let (len, ip) = parse(buf, SENDER).unwrap().unwrap();
        assert_eq!(&buf[len..], b"GET");
        assert_eq!(ip, "127.20.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn partial_then_garbage() {
        assert!(parse(b"PROXY TCP4 127.", SENDER).unwrap().is_none());
        assert!(parse(b"\r\n\r\n\0", SENDER).unwrap().is_none());
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n", SENDER),
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 nonsense here\r\n", SENDER),
            Err(ProxyHeaderError::Invalid(_))
        ));
    }

    /// Found by the proxy_header fuzz target: a valid v1 line cut before its last port.
    #[test]
    fn v1_header_split_anywhere_waits_for_the_rest() {
        let line = b"PROXY TCP6 ::ffff:127.20.0.5 ::1 40000 3128\r\n";
        for cut in 0..line.len() {
            assert!(
                matches!(parse(&line[..cut], SENDER), Ok(None)),
                "prefix of {cut}"
            );
        }
        let (len, ip) = parse(line, SENDER).unwrap().unwrap();
        assert_eq!(len, line.len());
        assert_eq!(ip, "127.20.0.5".parse::<IpAddr>().unwrap());
    }

    /// Found by the proxy_header fuzz target: ppp ended this `UNKNOWN` header at 37 bytes,
    /// inside the line, so the rest of the line would have been read as the request.
    #[test]
    fn v1_header_ends_at_its_crlf() {
        let line = b"PROXY UNKNOWN ffff::ffff:063.20.0 \n\r=0.5 ::1 67535\r\nGET";
        assert!(matches!(
            parse(line, SENDER),
            Err(ProxyHeaderError::Invalid(_))
        ));
        let (len, ip) = parse(b"PROXY UNKNOWN\r\nGET", SENDER).unwrap().unwrap();
        assert_eq!((len, ip), (15, SENDER));
        let long = [&b"PROXY UNKNOWN "[..], &[b'f'; 100], b"\r\n"].concat();
        assert!(matches!(
            parse(&long, SENDER),
            Err(ProxyHeaderError::Invalid(_))
        ));
    }

    #[test]
    fn v2_local_uses_the_sender() {
        // Hand-assembled per the spec: signature, ver 2 / LOCAL, UNSPEC, length 0.
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        let (len, ip) = parse(&buf, SENDER).unwrap().unwrap();
        assert_eq!(len, 16);
        assert_eq!(ip, SENDER);
    }
}
