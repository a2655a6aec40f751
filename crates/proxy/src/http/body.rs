//! Streams one message body from a reader to a writer, never buffered whole, re-framed: the
//! body is read by the sender's framing and written in the proxy's own (a chunked body is
//! decoded and encoded again), so the next hop can only read the message the proxy read.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::chunked::{put_chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use super::head::Framing;

/// Bytes read per call; also the most a body copy holds in memory at once.
pub const READ_CHUNK: usize = 32 * 1024;
/// Pending output up to this size is merged into one write (head + small body = one syscall).
const COALESCE: usize = 16 * 1024;

/// Which side of a copy failed, so callers can tell a client abort from an origin failure.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed or it closed before the body ended.
    Source(io::Error),
    /// Writing the destination failed.
    Sink(io::Error),
    /// No progress in either direction for the idle timeout.
    SourceTimeout,
    SinkTimeout,
    /// The source sent a malformed chunked body.
    Malformed(&'static str),
    /// The body's end was held back because its log line could not be written
    /// (`logfile_error_policy refuse`): the destination must not take it for complete.
    Unrecorded,
}

/// Called once, just before a body's last bytes go out (for a body that ends at close:
/// when the source closed, before the destination is closed), with the bytes the copy will
/// have written by then. The access log line is written here, so a proxy killed at any
/// moment has logged every response a client holds whole. Returning false withholds the end
/// ([`CopyError::Unrecorded`]).
pub type BeforeEnd<'a> = &'a mut (dyn FnMut(u64) -> bool + Send);

/// Reads more bytes from `src` into `buf`, bounded by `idle`. Returns 0 at end of stream.
pub async fn read_some<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<usize, CopyError> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    match timeout(idle, src.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(CopyError::Source(e)),
        Err(_) => Err(CopyError::SourceTimeout),
    }
}

/// Writes all of `data`, bounded by `idle`.
pub async fn write_all<W: AsyncWrite + Unpin>(
    dst: &mut W,
    data: &[u8],
    idle: Duration,
) -> Result<(), CopyError> {
    match timeout(idle, dst.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CopyError::Sink(e)),
        Err(_) => Err(CopyError::SinkTimeout),
    }
}

/// A body copy that failed after writing `written` bytes.
#[derive(Debug)]
pub struct CopyFailed {
    pub error: CopyError,
    pub written: u64,
}

/// How the body is written to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    /// The data as it is: the head carries a Content-Length, or the body ends at close.
    Identity,
    /// Chunked, with the proxy's own chunk sizes, no extensions, no trailers.
    Chunked,
}

/// Copies one body.
///
/// `framing` is how the source delimits it, `encode` how it goes out. `src_buf` holds bytes
/// already read from `src` (the body's start, maybe the next message too); on return it
/// holds only what follows the body. `out` holds bytes to send before the body (usually the
/// head): they go out merged with the first body bytes. Returns the number of bytes written
/// to `dst`, `out` included. `before_end` runs just before the last bytes go out.
#[allow(clippy::too_many_arguments)]
pub async fn copy_body<R, W>(
    framing: Framing,
    encode: Encode,
    src: &mut R,
    src_buf: &mut BytesMut,
    out: &mut BytesMut,
    dst: &mut W,
    idle: Duration,
    before_end: BeforeEnd<'_>,
) -> Result<u64, CopyFailed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sink = Sink {
        dst,
        out,
        idle,
        written: 0,
        before_end,
    };
    match copy_body_inner(framing, encode, src, src_buf, &mut sink).await {
        Ok(()) => Ok(sink.written),
        Err(error) => Err(CopyFailed {
            error,
            written: sink.written,
        }),
    }
}

/// The destination side of a copy: small writes are merged in `out` (up to [`COALESCE`]).
struct Sink<'a, W> {
    dst: &'a mut W,
    out: &'a mut BytesMut,
    idle: Duration,
    written: u64,
    before_end: BeforeEnd<'a>,
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    /// Passes on body data; `last` when it ends the body (then its last byte stays in
    /// `out`, to go out after `before_end`).
    async fn data(&mut self, data: &[u8], encode: Encode, last: bool) -> Result<(), CopyError> {
        if data.is_empty() {
            return Ok(());
        }
        if encode == Encode::Chunked {
            put_chunk_header(data.len(), self.out);
        }
        if self.out.len() + data.len() <= COALESCE {
            self.out.extend_from_slice(data);
        } else {
            self.flush().await?;
            let direct = if last { data.len() - 1 } else { data.len() };
            write_all(self.dst, &data[..direct], self.idle).await?;
            self.written += direct as u64;
            self.out.extend_from_slice(&data[direct..]);
        }
        if encode == Encode::Chunked {
            self.out.extend_from_slice(CHUNK_END);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CopyError> {
        self.written += flush(self.dst, self.out, self.idle).await?;
        Ok(())
    }

    /// Runs `before_end`, then sends what is held back.
    async fn finish(&mut self) -> Result<(), CopyError> {
        let total = self.written + self.out.len() as u64;
        if !(self.before_end)(total) {
            return Err(CopyError::Unrecorded);
        }
        self.flush().await
    }
}

async fn copy_body_inner<R, W>(
    framing: Framing,
    encode: Encode,
    src: &mut R,
    src_buf: &mut BytesMut,
    sink: &mut Sink<'_, W>,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut decoder = (framing == Framing::Chunked).then(ChunkedDecoder::new);
    let finished = |left: u64, decoder: &Option<ChunkedDecoder>| {
        left == 0 || decoder.as_ref().is_some_and(ChunkedDecoder::is_done)
    };
    loop {
        while !src_buf.is_empty() && !finished(left, &decoder) {
            match decoder.as_mut() {
                Some(d) => {
                    let (used, data) = d.decode(src_buf).map_err(|e| CopyError::Malformed(e.0))?;
                    if let Some(range) = data {
                        // The last chunk's terminator always follows: never the end.
                        sink.data(&src_buf[range], encode, false).await?;
                    }
                    src_buf.advance(used);
                }
                None => {
                    let take = left.min(src_buf.len() as u64) as usize;
                    let last = framing != Framing::UntilClose && take as u64 == left;
                    sink.data(&src_buf[..take], encode, last).await?;
                    if framing != Framing::UntilClose {
                        left -= take as u64;
                    }
                    src_buf.advance(take);
                }
            }
        }
        if finished(left, &decoder) {
            if encode == Encode::Chunked {
                sink.out.extend_from_slice(LAST_CHUNK);
            }
            return sink.finish().await;
        }
        // Whatever is pending goes out before waiting for more: a slow sender's data is
        // passed on as it comes.
        sink.flush().await?;
        if read_some(src, src_buf, sink.idle).await? == 0 {
            if framing == Framing::UntilClose {
                // The end is the close the caller makes after this.
                return sink.finish().await;
            }
            return Err(CopyError::Source(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Writes and empties `out`; returns how many bytes went out.
pub async fn flush<W: AsyncWrite + Unpin>(
    dst: &mut W,
    out: &mut BytesMut,
    idle: Duration,
) -> Result<u64, CopyError> {
    if out.is_empty() {
        return Ok(0);
    }
    write_all(dst, out, idle).await?;
    let n = out.len() as u64;
    out.clear();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        framing: Framing,
        encode: Encode,
        input: &[u8],
        first: &[u8],
    ) -> (Vec<u8>, Vec<u8>) {
        let mut src = input;
        let mut buf = BytesMut::from(first);
        let mut out = BytesMut::from(&b"HEAD|"[..]);
        let mut dst = Vec::new();
        let n = copy_body(
            framing,
            encode,
            &mut src,
            &mut buf,
            &mut out,
            &mut dst,
            Duration::from_secs(1),
            &mut |_| true,
        )
        .await
        .unwrap();
        assert_eq!(n as usize, dst.len());
        (dst, buf.to_vec())
    }

    #[tokio::test]
    async fn length_body_stops_at_its_end() {
        let (dst, rest) = run(Framing::Length(5), Encode::Identity, b"lo NEXT", b"hel").await;
        assert_eq!(dst, b"HEAD|hello");
        assert_eq!(rest, b" NEXT");
    }

    #[tokio::test]
    async fn chunked_body_is_re_encoded() {
        let (dst, rest) = run(
            Framing::Chunked,
            Encode::Chunked,
            b"\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT",
            b"5",
        )
        .await;
        assert_eq!(dst, b"HEAD|5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(rest, b"NEXT");
    }

    #[tokio::test]
    async fn chunked_body_decoded_for_a_reader_of_identity() {
        let (dst, rest) = run(
            Framing::Chunked,
            Encode::Identity,
            b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n",
            b"",
        )
        .await;
        assert_eq!(dst, b"HEAD|hello!");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn large_chunks_stream_without_holding_the_body() {
        // 200 KB in one chunk: it goes out in pieces of at most one read.
        let mut input = b"30d40\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200_000));
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (dst, _) = run(Framing::Chunked, Encode::Identity, &input, b"").await;
        assert_eq!(dst.len(), 5 + 200_000);
    }

    #[tokio::test]
    async fn until_close_reads_to_eof() {
        let big = vec![7u8; 100_000];
        let (dst, _) = run(Framing::UntilClose, Encode::Identity, &big, b"").await;
        assert_eq!(dst.len(), 5 + big.len());
    }

    #[tokio::test]
    async fn malformed_chunked_body_stops_before_the_last_chunk() {
        let mut src: &[u8] = b"2\r\nxx\r\n0\n\n";
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut dst = Vec::new();
        let err = copy_body(
            Framing::Chunked,
            Encode::Chunked,
            &mut src,
            &mut buf,
            &mut out,
            &mut dst,
            Duration::from_secs(1),
            &mut |_| true,
        )
        .await
        .unwrap_err();
        assert!(matches!(err.error, CopyError::Malformed(_)), "{err:?}");
        assert!(
            !dst.ends_with(LAST_CHUNK),
            "the next hop never sees a complete body: {dst:?}"
        );
    }

    #[tokio::test]
    async fn truncated_body_is_a_source_error() {
        let mut src: &[u8] = b"abc";
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut dst = Vec::new();
        let err = copy_body(
            Framing::Length(10),
            Encode::Identity,
            &mut src,
            &mut buf,
            &mut out,
            &mut dst,
            Duration::from_secs(1),
            &mut |_| true,
        )
        .await
        .unwrap_err();
        assert!(matches!(err.error, CopyError::Source(_)));
        assert_eq!(err.written, 3);
    }

    /// The hook runs before the last byte: refusing there leaves the destination one byte
    /// (or, when the body fitted in one write, the whole response) short.
    #[tokio::test]
    async fn before_end_runs_before_the_last_byte() {
        for size in [10usize, 100_000] {
            let body = vec![b'x'; size];
            // The small body was read with the head; the large one streams in.
            let small = size < COALESCE;
            let mut src: &[u8] = if small { &[] } else { &body };
            let mut buf = BytesMut::from(if small { &body[..] } else { &[][..] });
            let (mut out, mut dst) = (BytesMut::new(), Vec::new());
            out.extend_from_slice(b"HEAD");
            let mut seen = None;
            let err = copy_body(
                Framing::Length(size as u64),
                Encode::Identity,
                &mut src,
                &mut buf,
                &mut out,
                &mut dst,
                Duration::from_secs(1),
                &mut |total| {
                    seen = Some(total);
                    false
                },
            )
            .await
            .unwrap_err();
            assert!(matches!(err.error, CopyError::Unrecorded), "{err:?}");
            assert_eq!(
                seen,
                Some(size as u64 + 4),
                "the hook is told the whole length"
            );
            assert!(
                dst.len() < size + 4,
                "body of {size}: the end was held back"
            );
            if small {
                assert!(
                    dst.is_empty(),
                    "a small response goes out in one write, after the hook"
                );
            }
        }
    }
}
