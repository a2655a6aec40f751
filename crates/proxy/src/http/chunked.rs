//! Finds where a chunked body ends while its bytes pass through unchanged.
//!
//! Written by hand because the proxy forwards chunked bodies verbatim (no re-encoding, no
//! buffering) and only needs to know where the message ends; the HTTP crates' decoders
//! (hyper, httparse's `parse_chunk_size`) consume and re-frame the data instead. Every line
//! is length-limited so a hostile peer cannot make it scan forever inside one line.

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: usize = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// After the size: extensions until LF.
    SizeLine,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// Expecting the CR (or bare LF) after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Saw CR at the start of a trailer line: expecting the final LF.
    EndLf,
    Done,
}

/// Incremental scanner for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    line_len: usize,
    trailer_len: usize,
}

/// A malformed chunked body.
#[derive(Debug, PartialEq, Eq)]
pub struct ChunkedError(pub &'static str);

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    pub fn new() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            size: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `data`; returns how many bytes of it belong to the body. When that is less than
    /// `data.len()`, the body ended there ([`ChunkedScanner::is_done`] is true).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = left.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data(left - take)
                    };
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            self.step(b)?;
        }
        Ok(i)
    }

    fn line_byte(&mut self) -> Result<(), ChunkedError> {
        self.line_len += 1;
        if self.line_len > MAX_LINE {
            return Err(ChunkedError("chunk line too long"));
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        self.state = match self.state {
            State::Size { digits } => {
                self.line_byte()?;
                match (b as char).to_digit(16) {
                    Some(d) => {
                        if digits >= 15 {
                            return Err(ChunkedError("chunk size too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                        State::Size { digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(ChunkedError("missing chunk size")),
                    None if b == b'\n' => self.end_size_line(),
                    None if b == b';' || b == b'\r' || b == b' ' || b == b'\t' => State::SizeLine,
                    None => return Err(ChunkedError("invalid chunk size")),
                }
            }
            State::SizeLine => {
                self.line_byte()?;
                if b == b'\n' {
                    self.end_size_line()
                } else {
                    State::SizeLine
                }
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                b'\n' => self.next_chunk(),
                _ => return Err(ChunkedError("missing CRLF after chunk data")),
            },
            State::DataLf => match b {
                b'\n' => self.next_chunk(),
                _ => return Err(ChunkedError("missing LF after chunk data")),
            },
            State::TrailerStart => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::EndLf,
                    b'\n' => State::Done,
                    _ => State::Trailer,
                }
            }
            State::Trailer => {
                self.trailer_byte()?;
                if b == b'\n' {
                    State::TrailerStart
                } else {
                    State::Trailer
                }
            }
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(ChunkedError("missing final LF")),
            },
            State::Data(_) | State::Done => unreachable!("handled by scan"),
        };
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkedError("trailer section too large"));
        }
        Ok(())
    }

    fn end_size_line(&mut self) -> State {
        self.line_len = 0;
        let size = std::mem::take(&mut self.size);
        if size == 0 {
            State::TrailerStart
        } else {
            State::Data(size)
        }
    }

    fn next_chunk(&mut self) -> State {
        self.line_len = 0;
        State::Size { digits: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8], step: usize) -> Result<usize, ChunkedError> {
        let mut s = ChunkedScanner::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = s.scan(piece)?;
            used += n;
            if s.is_done() {
                return Ok(used);
            }
        }
        Err(ChunkedError("incomplete"))
    }

    #[test]
    fn finds_the_end_in_any_split() {
        let body =
            b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            assert_eq!(scan_all(body, step).unwrap(), body.len() - 4, "step {step}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(ChunkedScanner::new().scan(b"zz\r\n").is_err());
        assert!(ChunkedScanner::new().scan(b"5\r\nhelloXX").is_err());
        assert!(ChunkedScanner::new()
            .scan(b"ffffffffffffffffff\r\n")
            .is_err());
        assert!(ChunkedScanner::new().scan(&[b'1'; 1]).is_ok());
        let long_ext = [b"1;".as_slice(), &[b'a'; 5000]].concat();
        assert!(ChunkedScanner::new().scan(&long_ext).is_err());
    }
}
