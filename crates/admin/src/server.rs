//! Binding, publishing the address and token, serving until shutdown.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::client::AbortOnDrop;
use crate::live::Live;
use crate::{api, token, Control};

/// `STATE_DIR/admin.addr`: `IP:PORT` and a newline.
pub const ADDR_FILE: &str = "admin.addr";
/// `STATE_DIR/admin.token`: the bearer token for mutating calls (mode 0600).
pub const TOKEN_FILE: &str = "admin.token";

/// Connections served at a time; more wait in the kernel's backlog until one closes (an
/// idle one closes after [`HEAD_TIMEOUT`]). The
/// API is for a few operators and a scraper, so this only stops a runaway client from
/// eating `up`'s descriptors, which its load balancer needs. Event streams have their own,
/// lower cap ([`MAX_STREAMS`](crate::live::MAX_STREAMS)), which leaves room for the CLI.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request head, and how long a kept-alive connection
/// may stay idle: the CLI sends its request at once, a browser reuses its connections
/// within seconds.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed accept (out of descriptors), how long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    token::write_file(&addr_path, &addr_text, 0o600).map_err(|source| AdminError::Write {
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
    let task = tokio::spawn(async move {
        // Stops with the server, also when the server task is aborted.
        let _sampler = sampler;
        serve_connections(listener, router, shutdown).await;
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

/// Accepts and serves connections until `shutdown` resolves, then lets the open ones finish
/// (hyper's graceful shutdown: idle connections close at once, requests in flight are
/// answered; event streams end by themselves, see `live`) and returns when all have.
///
/// At most [`MAX_CONNECTIONS`] connections are served at a time: the next is accepted only
/// when one has closed. A client must send each request head within [`HEAD_TIMEOUT`],
/// which also closes a kept-alive connection idle that long, so slow or silent clients
/// cannot hold the connections for good.
async fn serve_connections(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to be freed rather
                    // than spin.
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit: OwnedSemaphorePermit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            // A client that went away or timed out: nothing to tell anyone.
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it is done: all of them back means all done.
    let _ = permits.acquire_many(MAX_CONNECTIONS as u32).await;
}
