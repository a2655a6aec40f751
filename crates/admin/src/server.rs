//! Binding, publishing the address and token, serving until shutdown.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::client::AbortOnDrop;
use crate::live::Live;
use crate::{api, token, Control};

/// `STATE_DIR/admin.addr`: `IP:PORT` and a newline.
pub const ADDR_FILE: &str = "admin.addr";
/// `STATE_DIR/admin.token`: the bearer token for mutating calls (mode 0600).
pub const TOKEN_FILE: &str = "admin.token";

/// Connections served at a time; more wait in the kernel's backlog until one closes. The
/// API is for a few operators and a scraper, so this only stops a runaway client from
/// eating `up`'s descriptors, which its load balancer needs. Event streams have their own,
/// lower cap ([`MAX_STREAMS`](crate::live::MAX_STREAMS)), which leaves room for the CLI.
pub const MAX_CONNECTIONS: usize = 64;

/// How the API treats requests, from the stack file's `admin:` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Reads (status, activity, history, events, metrics) need the bearer token too.
    pub read_requires_token: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin API: cannot bind 127.0.0.1: {0}")]
    Bind(#[source] io::Error),
    #[error("admin API: cannot create a token: {0}")]
    Token(#[source] io::Error),
    #[error("admin API: cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The running admin API. Dropping it stops the server at once; [`AdminHandle::wait`] waits
/// for the graceful stop that the shutdown future starts.
#[derive(Debug)]
pub struct AdminHandle {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl AdminHandle {
    /// Resolves when the server has stopped (after the shutdown future resolved and the
    /// requests in flight were answered).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "admin API task panicked");
                }
            }
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves the admin API on 127.0.0.1 (a port the kernel chooses) until `shutdown`
/// resolves, with the default [`Options`] (reads open). Writes `STATE_DIR/admin.token` (a
/// fresh token, mode 0600) and then `STATE_DIR/admin.addr`, replacing what an earlier run
/// left; removes both when it stops.
pub async fn serve(
    control: Arc<dyn Control>,
    state_dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<AdminHandle, AdminError> {
    serve_with(control, state_dir, Options::default(), shutdown).await
}

/// [`serve`] with `options`.
pub async fn serve_with(
    control: Arc<dyn Control>,
    state_dir: &Path,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<AdminHandle, AdminError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(AdminError::Bind)?;
    let addr = listener.local_addr().map_err(AdminError::Bind)?;
    let token = token::generate().map_err(AdminError::Token)?;
    let token_path = state_dir.join(TOKEN_FILE);
    let addr_path = state_dir.join(ADDR_FILE);
    // The token first: whoever finds the address can then find the token too.
    token::write_file(&token_path, &format!("{token}\n"), 0o600).map_err(|source| {
        AdminError::Write {
            path: token_path.clone(),
            source,
        }
    })?;
    let addr_text = format!("{addr}\n");
    token::write_file(&addr_path, &addr_text, 0o644).map_err(|source| AdminError::Write {
        path: addr_path.clone(),
        source,
    })?;
    // The console's event streams never end by themselves: they watch `closing`, which the
    // graceful stop sets before it waits for connections to finish.
    let (closing_tx, closing) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = closing_tx.send(true);
    };
    let live = Live::new(control.clone(), closing);
    let sampler = AbortOnDrop(tokio::spawn(live.clone().run()));
    let router = api::router(control, token, live, options, addr);
    let listener = Limited {
        inner: listener,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let task = tokio::spawn(async move {
        // Stops with the server, also when the server task is aborted.
        let _sampler = sampler;
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "admin API stopped with an error");
        }
        // Only our own files: a newer `up` on the same directory may have replaced them.
        if std::fs::read_to_string(&addr_path).is_ok_and(|a| a == addr_text) {
            let _ = std::fs::remove_file(&addr_path);
            let _ = std::fs::remove_file(&token_path);
        }
        tracing::info!(%addr, "admin API stopped");
    });
    tracing::info!(%addr, "admin API listening");
    Ok(AdminHandle {
        addr,
        task: Some(task),
    })
}

/// A listener that holds a permit per open connection.
struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for Limited {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedIo, SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            LimitedIo {
                stream,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct LimitedIo {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
