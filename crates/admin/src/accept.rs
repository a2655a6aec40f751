//! Serving one listener (the loopback TCP port or the Unix socket): the accept loop, a task
//! per connection, and what wraps the router on each connection.
//!
//! Per connection, in the order bytes meet them: the connection waits without hyper until
//! its first byte (hyper allocates its buffers, some 16 KiB, when it takes a connection, so
//! a silent one costs only its task); [`Watched`] tells the pool's [`Slot`] whenever a byte
//! moves; hyper reads the head within [`HEAD_TIMEOUT`]; [`Served`] holds a request permit
//! while the router answers (at most [`REQUEST_TIMEOUT`], event streams excepted) and marks
//! the connection busy until the answer's body is done ([`Finished`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use crate::client::AbortOnDrop;
use crate::pool::{Busy, Limits, Pool, Slot};
use crate::server::{HEAD_TIMEOUT, REQUEST_TIMEOUT};
use crate::view::ErrorView;

/// After a failed accept (out of descriptors), how long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a graceful stop waits for connections to finish before closing the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The route whose answer never ends; it has its own cap instead of a request permit.
const EVENTS: &str = "/api/events";

/// A listener the API serves: TCP or Unix.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Readable + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// A stream that can say when it has something to read, without reading it.
pub trait Readable {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Readable for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self).await
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Readable for UnixStream {
    async fn readable(&self) -> io::Result<()> {
        UnixStream::readable(self).await
    }
}

/// Accepts and serves connections within `limits` until `stop` turns true, then lets the
/// open ones finish (hyper's graceful shutdown: idle connections close at once, requests in
/// flight are answered; event streams end by themselves, see `live`), closes what is left
/// after [`DRAIN_TIMEOUT`], and returns when all are closed.
pub async fn serve<L: Listener>(
    listener: L,
    router: axum::Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let pool = Pool::new(limits);
    let reaper = AbortOnDrop(tokio::spawn(pool.clone().reap()));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to be freed rather
                    // than spin.
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Accepted first, admitted then: at the cap, the longest idle connection makes
        // room for this one, which has just arrived and is about to speak.
        let admitted = tokio::select! {
            admitted = pool.admit() => admitted,
            () = stopped(&mut stop) => break,
        };
        let served = Served {
            router: TowerToHyperService::new(router.clone()),
            slot: admitted.slot.clone(),
            requests: pool.requests(),
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(stream, served, stop).await;
            drop(admitted);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, pool.drained())
        .await
        .is_err()
    {
        tracing::warn!("admin API: connections still open after {DRAIN_TIMEOUT:?}; closing them");
        pool.close_all();
        pool.drained().await;
    }
    drop(reaper);
}

/// Resolves when `stop` turns true (or its sender is gone). The watch's guard is dropped
/// here, not held across the caller's awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection until the client leaves, the pool closes it, or the graceful stop
/// finishes it.
async fn connection<S>(stream: S, served: Served, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Readable + Unpin + Send + 'static,
{
    let slot = served.slot.clone();
    tokio::select! {
        ready = stream.readable() => if ready.is_err() { return },
        () = slot.closed() => return,
        () = stopped(&mut stop) => return,
    }
    let io = TokioIo::new(Watched {
        inner: stream,
        slot: slot.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    let mut conn = pin!(builder.serve_connection(io, served));
    let mut stopping = false;
    loop {
        tokio::select! {
            // A client that went away or timed out: nothing to tell anyone.
            _ = conn.as_mut() => return,
            // Idle the longest at the cap, or quiet too long: dropped, not drained (an
            // idle connection has nothing to finish, a stalled one never would).
            () = slot.closed() => return,
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The router as one connection's hyper service.
struct Served {
    router: TowerToHyperService<axum::Router>,
    slot: Arc<Slot>,
    requests: Arc<Semaphore>,
}

type Answer = Response<Finished>;

impl hyper::service::Service<Request<Incoming>> for Served {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.slot.clone());
        let stream = request.uri().path() == EVENTS;
        let answer = self.router.call(request);
        let requests = self.requests.clone();
        Box::pin(async move {
            let response = if stream {
                answer.await?
            } else {
                let bounded = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let _permit = requests.acquire_owned().await.expect("never closed");
                    answer.await
                });
                match bounded.await {
                    Ok(response) => response?,
                    Err(_) => overloaded(),
                }
            };
            Ok(response.map(|body| Finished { body, _busy: busy }))
        })
    }
}

/// 503 for a request that got no answer within [`REQUEST_TIMEOUT`] (waiting for a permit
/// or for the group controller).
fn overloaded() -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
            (header::CONNECTION, HeaderValue::from_static("close")),
        ],
        Json(ErrorView {
            error: format!("the admin API could not answer within {REQUEST_TIMEOUT:?}; try again"),
        }),
    )
        .into_response()
}

/// An answer's body that keeps its connection busy until hyper drops it (written, or the
/// client gone).
pub struct Finished {
    body: axum::body::Body,
    _busy: Busy,
}

impl Body for Finished {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's stream that tells its slot whenever a byte moves, so the reaper knows
/// which connections went quiet.
struct Watched<S> {
    inner: S,
    slot: Arc<Slot>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.slot.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
