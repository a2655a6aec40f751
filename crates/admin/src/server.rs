//! Binding the TCP port and the Unix socket, publishing the address and token, serving
//! both until shutdown, and the limits each listener is served within.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::AbortOnDrop;
use crate::guard::Guard;
use crate::live::Live;
pub use crate::pool::{Limits, IDLE_TIMEOUT, STALL_TIMEOUT};
use crate::{accept, api, socket, token, Control};

/// `STATE_DIR/admin.addr`: `IP:PORT` and a newline.
pub const ADDR_FILE: &str = "admin.addr";
/// `STATE_DIR/admin.token`: the bearer token for mutating calls (mode 0600).
pub const TOKEN_FILE: &str = "admin.token";
/// `STATE_DIR/admin.sock`: the API on a Unix socket (mode 0600), the CLI's way in.
pub const SOCKET_FILE: &str = "admin.sock";

/// Connections open at a time on the TCP port. An idle one holds no request slot, and at
/// the cap the one idle the longest is closed to admit the next, so this only bounds the
/// descriptors and memory that clients can take from `up` (whose load balancer needs them).
pub const MAX_CONNECTIONS: usize = 512;

/// Requests in flight at a time on the TCP port; more wait for one to finish (within
/// [`REQUEST_TIMEOUT`]). Event streams do not count: they have their own cap,
/// [`MAX_STREAMS`](crate::live::MAX_STREAMS).
pub const MAX_REQUESTS: usize = 64;

/// The Unix socket's own limits: only the tier's owner connects there, so hostile TCP
/// clients never touch them.
pub const SOCKET_LIMITS: Limits = Limits {
    connections: 64,
    requests: 16,
};

/// Connections the kernel queues for the accept loop. Not the 128 of a plain bind: a
/// client opening connections in a loop outpaces the accept loop's turns on a busy
/// runtime, and every connection past the queue waits a second for its SYN to be sent
/// again.
const BACKLOG: u32 = 1024;

/// How long a client may take to send a request head once its first byte came (a
/// connection that sends nothing is idle and closed after
/// [`IDLE_TIMEOUT`](crate::pool::IDLE_TIMEOUT)).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may take from its head to its answer, waiting for a permit included
/// (503 then); event streams excepted. Below the CLI's own 30 s, so the CLI hears why.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

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
    #[error("admin API: cannot listen on {}: {source}", path.display())]
    Socket {
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
    /// `STATE_DIR/admin.sock`, or why the API does not listen there.
    pub socket: Result<PathBuf, AdminError>,
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

/// 127.0.0.1 on a port the kernel chooses, with a backlog of [`BACKLOG`].
fn bind_tcp() -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
    socket.listen(BACKLOG)
}

/// Serves the admin API on 127.0.0.1 (a port the kernel chooses) until `shutdown`
/// resolves, with the default [`Options`] (reads open). Writes `STATE_DIR/admin.token` (a
/// fresh token, mode 0600) and then `STATE_DIR/admin.addr`, replacing what an earlier run
/// left, and listens on `STATE_DIR/admin.sock`; removes all three when it stops.
pub async fn serve(
    control: Arc<dyn Control>,
    state_dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<AdminHandle, AdminError> {
    serve_with(control, state_dir, Options::default(), shutdown).await
}

/// [`serve`] with `options`. Listens on `STATE_DIR/admin.sock` too (mode 0600); when that
/// fails (a path longer than a socket address holds, say) the API runs on TCP alone and
/// [`AdminHandle::socket`] says why.
pub async fn serve_with(
    control: Arc<dyn Control>,
    state_dir: &Path,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<AdminHandle, AdminError> {
    let listener = bind_tcp().map_err(AdminError::Bind)?;
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
    let socket_path = state_dir.join(SOCKET_FILE);
    let unix = socket::bind(&socket_path).map_err(|source| AdminError::Socket {
        path: socket_path.clone(),
        source,
    });
    // One signal stops both listeners and the console's event streams, which never end by
    // themselves: they watch it too, and end before the graceful stop waits for them.
    let (closing_tx, closing) = watch::channel(false);
    let live = Live::new(control.clone(), closing.clone());
    let sampler = AbortOnDrop(tokio::spawn(live.clone().run()));
    let api = |check_host| {
        let guard = Guard {
            listen: addr,
            check_host,
        };
        api::router(control.clone(), token.clone(), live.clone(), options, guard)
    };
    let tcp = accept::serve(
        listener,
        api(true),
        Limits {
            connections: MAX_CONNECTIONS,
            requests: MAX_REQUESTS,
        },
        closing.clone(),
    );
    // No Host check on the socket: DNS rebinding needs a browser, and no browser connects
    // to a Unix socket; `curl --unix-socket` sends whatever name its URL has.
    let (unix, socket) = match unix {
        Ok((listener, file)) => {
            let serving = accept::serve(listener, api(false), SOCKET_LIMITS, closing);
            (Some((serving, file)), Ok(socket_path))
        }
        Err(e) => (None, Err(e)),
    };
    let task = tokio::spawn(async move {
        // Stop with the server, also when the server task is aborted.
        let _sampler = sampler;
        let tcp = AbortOnDrop(tokio::spawn(tcp));
        let (unix, file) = match unix {
            Some((serving, file)) => (Some(AbortOnDrop(tokio::spawn(serving))), Some(file)),
            None => (None, None),
        };
        shutdown.await;
        let _ = closing_tx.send(true);
        for mut serving in std::iter::once(tcp).chain(unix) {
            let _ = (&mut serving.0).await;
        }
        // Only our own files: a newer `up` on the same directory may have replaced them.
        if std::fs::read_to_string(&addr_path).is_ok_and(|a| a == addr_text) {
            let _ = std::fs::remove_file(&addr_path);
            let _ = std::fs::remove_file(&token_path);
        }
        if let Some(file) = file {
            file.remove_if_ours();
        }
        tracing::info!(%addr, "admin API stopped");
    });
    tracing::info!(%addr, socket = ?socket, "admin API listening");
    Ok(AdminHandle {
        addr,
        socket,
        task: Some(task),
    })
}
