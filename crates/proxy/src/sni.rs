//! Reading the server name a TLS client asks for (SNI), from the ClientHello's bytes, for
//! `ssl_bump peek`. The bytes are only read, never changed: they go on to the server as
//! they came.
//!
//! Hand-written rather than rustls's `Acceptor`: that validates the hello as a rustls server
//! would, refusing ones another server accepts (old versions, unknown extensions in odd
//! places), while the proxy must read whatever it passes on. What is read is bounded: a
//! hello of at most [`MAX_HELLO`] bytes in records of at most 16 KiB + 2 KiB (RFC 8446's
//! ciphertext limit), split over any number of records and TCP segments.

/// The largest ClientHello read (a post-quantum key share and padding fit with room).
pub const MAX_HELLO: usize = 128 * 1024;

/// What the bytes so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// A ClientHello may still be on its way.
    NeedMore,
    /// A whole ClientHello, with the host name it asks for, if any.
    Hello { sni: Option<String> },
    /// Not a TLS ClientHello (or one past the bounds).
    NotTls(&'static str),
}

/// Reads the ClientHello at the start of `bytes`.
pub fn peek(bytes: &[u8]) -> Peek {
    // The handshake message, gathered from the records' fragments.
    let mut message: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + 5) else {
            return if at == 0 && !bytes.is_empty() && bytes[0] != 22 {
                Peek::NotTls("not a TLS handshake record")
            } else {
                Peek::NeedMore
            };
        };
        if header[0] != 22 {
            return Peek::NotTls("not a TLS handshake record");
        }
        if header[1] != 3 {
            return Peek::NotTls("not a TLS record version");
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > 16384 + 2048 {
            return Peek::NotTls("a TLS record of an impossible length");
        }
        let Some(fragment) = bytes.get(at + 5..at + 5 + length) else {
            return if message.len() + length > MAX_HELLO {
                Peek::NotTls("a ClientHello larger than the proxy reads")
            } else {
                Peek::NeedMore
            };
        };
        message.extend_from_slice(fragment);
        at += 5 + length;
        if message.len() >= 4 {
            if message[0] != 1 {
                return Peek::NotTls("the first handshake message is not a ClientHello");
            }
            let wanted = 4
                + (usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]));
            if wanted > MAX_HELLO {
                return Peek::NotTls("a ClientHello larger than the proxy reads");
            }
            if message.len() >= wanted {
                return match server_name(&message[4..wanted]) {
                    Ok(sni) => Peek::Hello { sni },
                    Err(why) => Peek::NotTls(why),
                };
            }
        }
    }
}

/// The `server_name` extension's host name (RFC 6066 §3) of a ClientHello body.
fn server_name(hello: &[u8]) -> Result<Option<String>, &'static str> {
    let bad = "a malformed ClientHello";
    let mut r = Reader(hello);
    r.take(2 + 32).ok_or(bad)?; // version, random
    let session = r.u8().ok_or(bad)?;
    r.take(usize::from(session)).ok_or(bad)?;
    let suites = r.u16().ok_or(bad)?;
    r.take(usize::from(suites)).ok_or(bad)?;
    let compression = r.u8().ok_or(bad)?;
    r.take(usize::from(compression)).ok_or(bad)?;
    if r.0.is_empty() {
        return Ok(None); // no extensions at all (an old client)
    }
    let total = r.u16().ok_or(bad)?;
    let mut ext = Reader(r.take(usize::from(total)).ok_or(bad)?);
    while !ext.0.is_empty() {
        let kind = ext.u16().ok_or(bad)?;
        let len = ext.u16().ok_or(bad)?;
        let body = ext.take(usize::from(len)).ok_or(bad)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(body);
        let list_len = list.u16().ok_or(bad)?;
        let mut names = Reader(list.take(usize::from(list_len)).ok_or(bad)?);
        while !names.0.is_empty() {
            let name_type = names.u8().ok_or(bad)?;
            let len = names.u16().ok_or(bad)?;
            let name = names.take(usize::from(len)).ok_or(bad)?;
            if name_type == 0 {
                let name =
                    std::str::from_utf8(name).map_err(|_| "a server name that is not text")?;
                let name = name.trim_end_matches('.');
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("a server name that is not a host name");
                }
                return Ok(Some(name.to_ascii_lowercase()));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// A ClientHello as a client would send it, for tests: `sni` if any, padded with a
/// padding extension (RFC 7685) of `padding` bytes, split into records of at most
/// `record` bytes.
pub fn client_hello(sni: Option<&str>, padding: usize, record: usize) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        let name = name.as_bytes();
        let entry_len = 3 + name.len();
        extensions.extend_from_slice(&0u16.to_be_bytes());
        extensions.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
        extensions.extend_from_slice(&(entry_len as u16).to_be_bytes());
        extensions.push(0);
        extensions.extend_from_slice(&(name.len() as u16).to_be_bytes());
        extensions.extend_from_slice(name);
    }
    if padding > 0 {
        extensions.extend_from_slice(&21u16.to_be_bytes());
        extensions.extend_from_slice(&(padding as u16).to_be_bytes());
        extensions.extend(std::iter::repeat_n(0u8, padding));
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // no session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut message = vec![1];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in message.chunks(record) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_whole_and_partial_hellos() {
        let hello = client_hello(Some("WWW.Example.TEST"), 0, 16384);
        assert_eq!(
            peek(&hello),
            Peek::Hello {
                sni: Some("www.example.test".into())
            }
        );
        for cut in [0, 1, 4, 5, 20, hello.len() - 1] {
            assert_eq!(peek(&hello[..cut]), Peek::NeedMore, "{cut}");
        }
        assert_eq!(
            peek(&client_hello(None, 0, 16384)),
            Peek::Hello { sni: None }
        );
    }

    #[test]
    fn a_hello_over_several_records_and_larger_than_16_kib() {
        let hello = client_hello(Some("big.example.test"), 40_000, 16384);
        assert!(hello.len() > 40_000);
        assert_eq!(
            peek(&hello),
            Peek::Hello {
                sni: Some("big.example.test".into())
            }
        );
        let tiny_records = client_hello(Some("a.test"), 100, 7);
        assert_eq!(
            peek(&tiny_records),
            Peek::Hello {
                sni: Some("a.test".into())
            }
        );
    }

    #[test]
    fn what_is_not_a_hello() {
        assert!(matches!(peek(b"GET / HTTP/1.1\r\n"), Peek::NotTls(_)));
        assert!(matches!(peek(&[22, 3, 1, 0, 0]), Peek::NotTls(_)));
        let mut too_big = vec![22, 3, 1, 0x40, 0];
        too_big.extend_from_slice(&[1, 0x10, 0, 0]);
        too_big.resize(5 + 0x4000, 0);
        assert!(matches!(peek(&too_big), Peek::NotTls(_)));
        // A hello whose name list is cut short inside its own lengths.
        let mut hello = client_hello(Some("x.test"), 0, 16384);
        let n = hello.len();
        hello[n - 1] = b'\0';
        assert!(matches!(peek(&hello), Peek::NotTls(_)));
        // A name of dots only (found by fuzzing: it read as an empty name).
        assert!(matches!(
            peek(&client_hello(Some(".."), 0, 16384)),
            Peek::NotTls(_)
        ));
    }
}
