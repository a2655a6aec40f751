//! The chunked body decoder: the same answer (where the body ends, and the data it carries)
//! however the bytes are split, and every valid encoding built from the input decodes back to
//! exactly its payload, ending at its last byte and not one byte further.

use proxyfleet_proxy::http::chunked::ChunkedDecoder;

/// What decoding a whole input in pieces came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body ended after this many bytes and carried this data.
    Done(usize, Vec<u8>),
    /// All bytes belong to a body that has not ended.
    NeedMore,
    /// Malformed.
    Error,
}

/// Decodes `data` in pieces whose sizes cycle through `splits` (1..=256 bytes each).
fn scan(data: &[u8], splits: &[u8]) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut used = 0;
    let mut sizes = splits.iter().cycle();
    while used < data.len() {
        let size = if splits.is_empty() {
            data.len()
        } else {
            usize::from(*sizes.next().unwrap()) + 1
        };
        let piece = &data[used..data.len().min(used + size)];
        // One call stops after one run of data: call until the piece is used up.
        let mut taken = 0;
        while taken < piece.len() && !decoder.is_done() {
            let (n, range) = match decoder.decode(&piece[taken..]) {
                Ok(step) => step,
                Err(_) => return Outcome::Error,
            };
            assert!(
                n > 0,
                "a non-empty input must be consumed until the body is done"
            );
            assert!(
                taken + n <= piece.len(),
                "decode used more than it was given"
            );
            if let Some(range) = range {
                assert!(range.end <= n, "data outside what was consumed");
                payload.extend_from_slice(&piece[taken + range.start..taken + range.end]);
            }
            taken += n;
        }
        used += taken;
        if decoder.is_done() {
            return Outcome::Done(used, payload);
        }
    }
    if decoder.is_done() {
        Outcome::Done(used, payload)
    } else {
        Outcome::NeedMore
    }
}

/// A valid chunked body for `payload`: chunks of the sizes `cuts` gives, extensions on some
/// chunk-size lines and a trailer section when asked.
fn encode(payload: &[u8], cuts: &[u8], extensions: bool, trailers: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = payload;
    let mut sizes = cuts.iter().cycle();
    let mut index = 0usize;
    while !rest.is_empty() {
        let size = sizes.next().map_or(rest.len(), |s| usize::from(*s) + 1);
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        // Upper and lower case hex, and leading zeros, are all valid sizes.
        match index % 3 {
            0 => out.extend_from_slice(format!("{:x}", chunk.len()).as_bytes()),
            1 => out.extend_from_slice(format!("{:X}", chunk.len()).as_bytes()),
            _ => out.extend_from_slice(format!("00{:x}", chunk.len()).as_bytes()),
        }
        if extensions && index % 2 == 0 {
            out.extend_from_slice(b";name=\"quoted value\";flag");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
        index += 1;
    }
    out.extend_from_slice(b"0");
    if extensions {
        out.extend_from_slice(b";last");
    }
    out.extend_from_slice(b"\r\n");
    if trailers {
        out.extend_from_slice(b"X-Checksum: 0\r\nX-Other: a b c\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn run(data: &[u8]) {
    // The input as a body, whole and in pieces (the split sizes come from its own last
    // bytes, so the fuzzer steers them with the rest of the input).
    let whole = scan(data, &[]);
    if let Outcome::Done(n, _) = &whole {
        assert!(*n <= data.len());
    }
    let splits = &data[data.len().saturating_sub(8)..];
    assert_eq!(scan(data, splits), whole, "depends on how it was split");
    assert_eq!(scan(data, &[0]), whole, "differs byte by byte");

    // The input as a payload: its valid encodings decode to it and end exactly at their end.
    let (flags, payload) = data.split_first().unwrap_or((&0, &[]));
    let cuts = &payload[..payload.len().min(4)];
    let body = encode(payload, cuts, flags & 1 != 0, flags & 2 != 0);
    let mut stream = body.clone();
    stream.extend_from_slice(b"GET http://next/ HTTP/1.1\r\n\r\n");
    for splits in [
        &[][..],
        &[0],
        cuts,
        &payload[payload.len().saturating_sub(3)..],
    ] {
        assert_eq!(
            scan(&stream, splits),
            Outcome::Done(body.len(), payload.to_vec()),
            "valid body not taken whole (splits {splits:?}): {:?}",
            String::from_utf8_lossy(&body)
        );
        // Every proper prefix of it is a body still going.
        let cut = body.len() - 1 - usize::from(*flags) % body.len();
        assert_eq!(
            scan(&body[..cut], splits),
            Outcome::NeedMore,
            "prefix of {cut}"
        );
    }
}
