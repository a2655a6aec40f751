//! The chunked transfer coding (RFC 9112 §7.1): a strict streaming decoder and the encoder.
//!
//! The proxy never relays a chunked body byte for byte: it decodes what the sender wrote and
//! encodes the data again with its own chunk sizes, no extensions and no trailers. So the next
//! hop reads exactly the message this decoder read, whatever leniency that hop has — a bare
//! LF, a space after the size, a stray byte after the data cannot mean one thing here and
//! another there, because none of them is ever passed on.
//!
//! Written by hand because the decoder must stream (never hold a body), report where the body
//! ended inside a buffer that may already hold the next request, and be stricter than the
//! HTTP crates: hyper's decoder accepts white space after the size and owns the connection;
//! `httparse::parse_chunk_size` accepts a bare LF. Every line is length-limited so a hostile
//! peer cannot make it scan forever inside one line.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

/// Longest chunk-size line (size and extensions) accepted.
const MAX_LINE: usize = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: usize = 65536;
/// Largest chunk size accepted: Squid's limit (a signed 64-bit size).
const MAX_CHUNK: u64 = i64::MAX as u64;

/// The bytes that end a chunked body with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes the size line of a chunk of `len` bytes (which must not be 0: that is the last
/// chunk, [`LAST_CHUNK`]). The data and then [`CHUNK_END`] follow it.
pub fn put_chunk_header(len: usize, out: &mut BytesMut) {
    debug_assert!(len > 0, "a zero-size chunk ends the body");
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

/// What follows every chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` read so far).
    Size {
        digits: u8,
    },
    /// After `;`: chunk extensions, until CR.
    Ext,
    /// Saw the CR that ends the size line: LF must follow.
    SizeLf,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// At the start of a trailer line or the final empty line.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value, until CR.
    TrailerValue,
    /// After a trailer line's CR: LF must follow.
    TrailerLf,
    /// After the final empty line's CR: LF must follow.
    EndLf,
    Done,
}

/// A malformed chunked body: what was wrong, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedError(pub &'static str);

/// Streaming decoder for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    line_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// `tchar` of RFC 9110 §5.6.2: the characters of a field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Control characters other than HTAB may not appear in extensions or field values.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// Whether the whole body (last chunk and trailer section) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`. Returns how many bytes were consumed and, when some
    /// of them are chunk data, where that data is in `input`. It stops after one run of data,
    /// at the end of `input`, or at the end of the body: call again with the rest. Consumes
    /// at least one byte of a non-empty input unless the body is done.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Range<usize>>), ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data(left) => {
                    let take = left.min((input.len() - i) as u64) as usize;
                    self.state = if take as u64 == left {
                        State::DataCr
                    } else {
                        State::Data(left - take as u64)
                    };
                    return Ok((i + take, Some(i..i + take)));
                }
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok((i, None))
    }

    fn line_byte(&mut self) -> Result<(), ChunkedError> {
        self.line_len += 1;
        if self.line_len > MAX_LINE {
            return Err(ChunkedError("chunk-size line too long"));
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkedError("trailer section too large"));
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        self.state = match self.state {
            State::Size { digits } => {
                self.line_byte()?;
                match (b as char).to_digit(16) {
                    Some(d) => {
                        if self.size > MAX_CHUNK >> 4 {
                            return Err(ChunkedError("chunk size too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                        State::Size {
                            digits: digits.saturating_add(1),
                        }
                    }
                    None if digits == 0 => return Err(ChunkedError("missing chunk size")),
                    None => match b {
                        b';' => State::Ext,
                        b'\r' => State::SizeLf,
                        b'\n' => return Err(ChunkedError("bare LF after chunk size")),
                        b' ' | b'\t' => return Err(ChunkedError("white space after chunk size")),
                        _ => return Err(ChunkedError("invalid chunk size")),
                    },
                }
            }
            State::Ext => {
                self.line_byte()?;
                match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkedError("bare LF in chunk extension")),
                    b if is_ctl(b) => {
                        return Err(ChunkedError("control character in chunk extension"))
                    }
                    _ => State::Ext,
                }
            }
            State::SizeLf => match b {
                b'\n' => {
                    self.line_len = 0;
                    match std::mem::take(&mut self.size) {
                        0 => State::TrailerStart,
                        size => State::Data(size),
                    }
                }
                _ => return Err(ChunkedError("bare CR in chunk-size line")),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkedError("chunk data not followed by CRLF")),
            },
            State::DataLf => match b {
                b'\n' => State::Size { digits: 0 },
                _ => return Err(ChunkedError("bare CR after chunk data")),
            },
            State::TrailerStart => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkedError("bare LF ending the chunked body")),
                    b' ' | b'\t' => return Err(ChunkedError("obsolete line folding in trailer")),
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkedError("invalid trailer field name")),
                }
            }
            State::TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => State::TrailerValue,
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkedError("invalid trailer field name")),
                }
            }
            State::TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkedError("bare LF in trailer")),
                    b if is_ctl(b) => return Err(ChunkedError("control character in trailer")),
                    _ => State::TrailerValue,
                }
            }
            State::TrailerLf => {
                self.trailer_byte()?;
                match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkedError("bare CR in trailer")),
                }
            }
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(ChunkedError("bare CR ending the chunked body")),
            },
            State::Data(_) | State::Done => unreachable!("handled by decode"),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: (data, bytes consumed by the body).
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let mut at = 0;
            while at < piece.len() && !d.is_done() {
                let (n, range) = d.decode(&piece[at..])?;
                assert!(n > 0, "no progress");
                if let Some(r) = range {
                    data.extend_from_slice(&piece[at..][r]);
                }
                at += n;
            }
            used += at;
            if d.is_done() {
                return Ok((data, used));
            }
        }
        Err(ChunkedError("incomplete"))
    }

    #[test]
    fn decodes_in_any_split_and_stops_at_the_end() {
        let body = b"5\r\nhello\r\n1A;ext=1;q=\"a b\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\nY:\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (data, used) = decode_all(body, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(used, body.len() - 4, "step {step}");
        }
        assert_eq!(decode_all(b"0\r\n\r\n", 1).unwrap(), (vec![], 5));
        assert_eq!(
            decode_all(b"00000000000000000001\r\nx\r\n0\r\n\r\n", 3)
                .unwrap()
                .0,
            b"x"
        );
    }

    #[test]
    fn only_crlf_ends_a_line() {
        let bad: &[(&[u8], &str)] = &[
            (b"2;a\nxx\r\n0\r\n\r\n", "bare LF in chunk extension"),
            (b"2\nxx\r\n0\r\n\r\n", "bare LF after chunk size"),
            (b"2\rxx\r\n0\r\n\r\n", "bare CR in chunk-size line"),
            (b"2\r\nxx\n0\r\n\r\n", "chunk data not followed by CRLF"),
            (b"2\r\nxx\r0\r\n\r\n", "bare CR after chunk data"),
            (b"2\r\nxx\r\n0\n\n", "bare LF after chunk size"),
            (b"2\r\nxx\r\n0\r\n\n", "bare LF ending the chunked body"),
            (b"0\r\n\rX", "bare CR ending the chunked body"),
            (b"0\r\nA: 1\n\r\n", "bare LF in trailer"),
            (b"0\r\nA: 1\rX\r\n\r\n", "bare CR in trailer"),
        ];
        for (input, why) in bad {
            assert_eq!(decode_all(input, 64), Err(ChunkedError(why)), "{input:?}");
        }
    }

    #[test]
    fn rejects_bad_sizes_data_and_trailers() {
        let bad: &[(&[u8], &str)] = &[
            (b"zz\r\n", "missing chunk size"),
            (b"\r\n", "missing chunk size"),
            (b"-1\r\n", "missing chunk size"),
            (b"2 \r\nxx\r\n0\r\n\r\n", "white space after chunk size"),
            (b"2\t;a\r\nxx\r\n0\r\n\r\n", "white space after chunk size"),
            (b"0x2\r\n", "invalid chunk size"),
            (b"2g\r\n", "invalid chunk size"),
            (b"8000000000000000\r\n", "chunk size too large"),
            (b"ffffffffffffffffff\r\n", "chunk size too large"),
            (b"5\r\nhelloXX", "chunk data not followed by CRLF"),
            (b"1;a\x00b\r\n", "control character in chunk extension"),
            (b"0\r\n folded\r\n\r\n", "obsolete line folding in trailer"),
            (b"0\r\nA : 1\r\n\r\n", "invalid trailer field name"),
            (b"0\r\n:1\r\n\r\n", "invalid trailer field name"),
            (b"0\r\nA: 1\x01\r\n\r\n", "control character in trailer"),
        ];
        for (input, why) in bad {
            assert_eq!(decode_all(input, 64), Err(ChunkedError(why)), "{input:?}");
        }
        assert_eq!(
            decode_all(b"7fffffffffffffff\r\n", 64),
            Err(ChunkedError("incomplete")),
            "the largest size Squid accepts is a size"
        );
        let long_ext = [b"1;".as_slice(), &[b'a'; 5000]].concat();
        assert_eq!(
            decode_all(&long_ext, 64),
            Err(ChunkedError("chunk-size line too long"))
        );
        let many_trailers = [b"0\r\n".as_slice(), &b"A: 1\r\n".repeat(20_000)].concat();
        assert_eq!(
            decode_all(&many_trailers, 4096),
            Err(ChunkedError("trailer section too large"))
        );
    }

    #[test]
    fn encodes_chunk_headers_in_hex() {
        let mut out = BytesMut::new();
        for len in [1usize, 15, 16, 32768, usize::MAX >> 4] {
            out.clear();
            put_chunk_header(len, &mut out);
            assert_eq!(&out[..], format!("{len:x}\r\n").as_bytes());
        }
        // What the encoder writes, the decoder reads back.
        let mut out = BytesMut::new();
        put_chunk_header(3, &mut out);
        out.put_slice(b"abc");
        out.put_slice(CHUNK_END);
        out.put_slice(LAST_CHUNK);
        assert_eq!(decode_all(&out, 2).unwrap(), (b"abc".to_vec(), out.len()));
    }
}
