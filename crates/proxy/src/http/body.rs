//! Streams one message body from a reader to a writer, framing preserved, never buffered whole.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::chunked::ChunkedScanner;
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
}

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

/// Copies one body.
///
/// `src_buf` holds bytes already read from `src` (the body's start, maybe the next message
/// too); on return it holds only what follows the body. `out` holds bytes to send before the
/// body (usually the head): they go out merged with the first body bytes. Returns the number
/// of bytes written to `dst`, `out` included.
pub async fn copy_body<R, W>(
    framing: Framing,
    src: &mut R,
    src_buf: &mut BytesMut,
    out: &mut BytesMut,
    dst: &mut W,
    idle: Duration,
) -> Result<u64, CopyFailed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut written = 0u64;
    copy_body_inner(framing, src, src_buf, out, dst, idle, &mut written)
        .await
        .map(|()| written)
        .map_err(|error| CopyFailed { error, written })
}

async fn copy_body_inner<R, W>(
    framing: Framing,
    src: &mut R,
    src_buf: &mut BytesMut,
    out: &mut BytesMut,
    dst: &mut W,
    idle: Duration,
    written: &mut u64,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut scanner = (framing == Framing::Chunked).then(ChunkedScanner::new);
    loop {
        if !src_buf.is_empty() && left > 0 {
            let mut take = (left.min(src_buf.len() as u64)) as usize;
            if let Some(s) = scanner.as_mut() {
                take = s
                    .scan(&src_buf[..take])
                    .map_err(|e| CopyError::Malformed(e.0))?;
            }
            if framing != Framing::UntilClose {
                left -= take as u64;
            }
            if out.len() + take <= COALESCE {
                out.extend_from_slice(&src_buf[..take]);
            } else {
                *written += flush(dst, out, idle).await?;
                write_all(dst, &src_buf[..take], idle).await?;
                *written += take as u64;
            }
            src_buf.advance(take);
        }
        let finished = left == 0 || scanner.as_ref().is_some_and(ChunkedScanner::is_done);
        *written += flush(dst, out, idle).await?;
        if finished {
            return Ok(());
        }
        if read_some(src, src_buf, idle).await? == 0 {
            if framing == Framing::UntilClose {
                return Ok(());
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

    async fn run(framing: Framing, input: &[u8], first: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut src = input;
        let mut buf = BytesMut::from(first);
        let mut out = BytesMut::from(&b"HEAD|"[..]);
        let mut dst = Vec::new();
        let n = copy_body(
            framing,
            &mut src,
            &mut buf,
            &mut out,
            &mut dst,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(n as usize, dst.len());
        (dst, buf.to_vec())
    }

    #[tokio::test]
    async fn length_body_stops_at_its_end() {
        let (dst, rest) = run(Framing::Length(5), b"lo NEXT", b"hel").await;
        assert_eq!(dst, b"HEAD|hello");
        assert_eq!(rest, b" NEXT");
    }

    #[tokio::test]
    async fn chunked_body_passes_verbatim() {
        let (dst, rest) = run(Framing::Chunked, b"\r\nhello\r\n0\r\n\r\nNEXT", b"5").await;
        assert_eq!(dst, b"HEAD|5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(rest, b"NEXT");
    }

    #[tokio::test]
    async fn until_close_reads_to_eof() {
        let big = vec![7u8; 100_000];
        let (dst, _) = run(Framing::UntilClose, &big, b"").await;
        assert_eq!(dst.len(), 5 + big.len());
    }

    #[tokio::test]
    async fn truncated_body_is_a_source_error() {
        let mut src: &[u8] = b"abc";
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut dst = Vec::new();
        let err = copy_body(
            Framing::Length(10),
            &mut src,
            &mut buf,
            &mut out,
            &mut dst,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err.error, CopyError::Source(_)));
        assert_eq!(err.written, 3);
    }
}
