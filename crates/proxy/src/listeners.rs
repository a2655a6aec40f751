//! The proxy's listening sockets, one per `http_port`, and how a reload changes them: ports
//! a new file adds are bound before anything else changes (a port that cannot be bound
//! fails the whole reload), ports it drops stop accepting at once while their connections
//! finish (their idle keep-alive connections close, requests already sent are answered with
//! `Connection: close`), and a port whose options change keeps its socket, new connections
//! getting the new options.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use proxyfleet_relay::throttle::Throttle;

use crate::config::HttpPort;
use crate::conn::ClientConn;
use crate::server::{Shared, StartError};

/// One `http_port` as its connections see it: the line's options, and whether a reload has
/// removed the port (its connections then finish and close).
pub struct OpenPort {
    pub spec: HttpPort,
    closing: watch::Sender<bool>,
}

impl OpenPort {
    fn new(spec: HttpPort) -> Arc<OpenPort> {
        Arc::new(OpenPort {
            spec,
            closing: watch::channel(false).0,
        })
    }

    /// Becomes true when a reload removes the port.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Every client connection's task: tracked so stopping can wait for them, and cancelled
/// together when the wait is over.
#[derive(Clone)]
pub(crate) struct Connections {
    pub tracker: TaskTracker,
    pub hard_stop: CancellationToken,
}

/// A bound socket and, once serving, the task accepting on it.
struct Listener {
    /// The address its `http_port` line names (`:0` keeps its port across reloads).
    line: SocketAddr,
    local: SocketAddr,
    /// Replaced when a reload changes the port's options (connections keep theirs).
    port: Arc<ArcSwap<OpenPort>>,
    /// Before serving starts.
    unstarted: Option<TcpListener>,
    acceptor: Option<AbortHandle>,
}

/// What a reload did to the ports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PortChanges {
    /// Newly listening (addresses as bound, port 0 resolved).
    pub added: Vec<SocketAddr>,
    /// No longer accepting; their connections finish.
    pub removed: Vec<SocketAddr>,
}

/// A new port, bound but not yet accepting.
pub(crate) struct Bound {
    spec: HttpPort,
    listener: TcpListener,
}

/// The ports a proxy listens on, and what every acceptor shares.
pub(crate) struct Listeners {
    ports: Mutex<Ports>,
    /// Each client connection may hold a second descriptor for its origin.
    limit: Arc<Semaphore>,
    shutdown_tx: watch::Sender<bool>,
    pub connections: Connections,
}

#[derive(Default)]
struct Ports {
    open: Vec<Listener>,
    serving: Option<Arc<ArcSwap<Shared>>>,
    stopped: bool,
}

impl Listeners {
    pub fn new(ports: Vec<Bound>, client_cap: usize) -> Listeners {
        let open = ports
            .into_iter()
            .map(|Bound { spec, listener }| Listener {
                line: spec.addr,
                local: listener.local_addr().unwrap_or(spec.addr),
                port: Arc::new(ArcSwap::new(OpenPort::new(spec))),
                unstarted: Some(listener),
                acceptor: None,
            })
            .collect();
        Listeners {
            ports: Mutex::new(Ports {
                open,
                ..Ports::default()
            }),
            limit: Arc::new(Semaphore::new(client_cap)),
            shutdown_tx: watch::channel(false).0,
            connections: Connections {
                tracker: TaskTracker::new(),
                hard_stop: CancellationToken::new(),
            },
        }
    }

    /// The addresses bound now.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let ports = self.ports.lock().expect("ports lock");
        ports.open.iter().map(|l| l.local).collect()
    }

    /// Starts accepting on every port.
    pub fn start(&self, current: Arc<ArcSwap<Shared>>) {
        let mut ports = self.ports.lock().expect("ports lock");
        for listener in &mut ports.open {
            if let Some(socket) = listener.unstarted.take() {
                listener.acceptor = Some(self.spawn(socket, listener.port.clone(), &current));
            }
        }
        ports.serving = Some(current);
    }

    /// Puts `wanted` in force: binds the new ports first (any failure: nothing changes), then
    /// calls `commit` with the addresses that will be listening; only when it succeeds are
    /// the new ports started and the removed ones closed.
    pub fn change(
        &self,
        wanted: &[HttpPort],
        commit: impl FnOnce(Vec<SocketAddr>) -> Result<(), crate::server::ReloadError>,
    ) -> Result<PortChanges, crate::server::ReloadError> {
        let mut ports = self.ports.lock().expect("ports lock");
        if ports.stopped {
            return Err(crate::server::ReloadError::Stopping);
        }
        // Each wanted line keeps an open socket its line names (the one with its options,
        // if any); the lines left over are new, the sockets left over are removed.
        let mut kept: Vec<Option<usize>> = vec![None; wanted.len()];
        for (i, spec) in wanted.iter().enumerate() {
            let free = |j: &usize| ports.open[*j].line == spec.addr && !kept.contains(&Some(*j));
            let same = (0..ports.open.len())
                .filter(free)
                .find(|j| ports.open[*j].port.load().spec == *spec);
            kept[i] = same.or_else(|| (0..ports.open.len()).find(free));
        }
        let mut fresh = Vec::new();
        for (spec, kept) in wanted.iter().zip(&kept) {
            if kept.is_none() {
                fresh.push(bind(spec)?);
            }
        }
        let mut own: Vec<SocketAddr> = kept
            .iter()
            .flatten()
            .map(|&j| ports.open[j].local)
            .collect();
        own.extend(fresh.iter().filter_map(|b| b.listener.local_addr().ok()));
        commit(own)?;

        for (spec, kept) in wanted.iter().zip(&kept) {
            if let Some(listener) = kept.map(|j| &ports.open[j]) {
                if listener.port.load().spec != *spec {
                    listener.port.store(OpenPort::new(spec.clone()));
                }
            }
        }
        let mut changes = PortChanges::default();
        let mut index = 0;
        ports.open.retain(|listener| {
            let keep = kept.contains(&Some(index));
            index += 1;
            if !keep {
                if let Some(acceptor) = &listener.acceptor {
                    // Dropping the task drops its socket: the port stops accepting now.
                    acceptor.abort();
                }
                listener.port.load().closing.send_replace(true);
                changes.removed.push(listener.local);
            }
            keep
        });
        for Bound { spec, listener } in fresh {
            let local = listener.local_addr().unwrap_or(spec.addr);
            let port = Arc::new(ArcSwap::new(OpenPort::new(spec.clone())));
            let (unstarted, acceptor) = match &ports.serving {
                Some(current) => (None, Some(self.spawn(listener, port.clone(), current))),
                None => (Some(listener), None),
            };
            ports.open.push(Listener {
                line: spec.addr,
                local,
                port,
                unstarted,
                acceptor,
            });
            changes.added.push(local);
        }
        Ok(changes)
    }

    /// Stops accepting everywhere and tells idle connections to close.
    pub fn stop(&self) {
        let mut ports = self.ports.lock().expect("ports lock");
        ports.stopped = true;
        for listener in &mut ports.open {
            if let Some(acceptor) = listener.acceptor.take() {
                acceptor.abort();
            }
            listener.unstarted = None;
        }
        self.shutdown_tx.send_replace(true);
    }

    fn spawn(
        &self,
        socket: TcpListener,
        port: Arc<ArcSwap<OpenPort>>,
        current: &Arc<ArcSwap<Shared>>,
    ) -> AbortHandle {
        tokio::spawn(accept_loop(
            socket,
            port,
            current.clone(),
            self.limit.clone(),
            self.shutdown_tx.subscribe(),
            self.connections.clone(),
        ))
        .abort_handle()
    }
}

/// Binds one `http_port`.
pub(crate) fn bind(spec: &HttpPort) -> Result<Bound, StartError> {
    let listener = bind_port(spec.addr).map_err(|source| StartError::Bind {
        addr: spec.addr,
        location: spec.location.to_string(),
        source,
    })?;
    Ok(Bound {
        spec: spec.clone(),
        listener,
    })
}

/// The listening socket: SO_REUSEADDR so a restart does not wait out TIME_WAIT.
fn bind_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Sources admitted by the instance's security groups, set by the group controller in
/// `PROXYFLEET_ALLOWED_SOURCES` (comma-separated CIDRs) when no kernel firewall enforces them.
/// Unset: every source may connect (access control is http_access's job).
static ALLOWED_SOURCES: std::sync::LazyLock<Option<Vec<ipnet::IpNet>>> = std::sync::LazyLock::new(
    || {
        let text = std::env::var("PROXYFLEET_ALLOWED_SOURCES").ok()?;
        let nets: Vec<ipnet::IpNet> = text
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        tracing::info!(sources = %text, "security groups enforced in-process: other sources are refused at accept");
        Some(nets)
    },
);

async fn accept_loop(
    listener: TcpListener,
    port: Arc<ArcSwap<OpenPort>>,
    current: Arc<ArcSwap<Shared>>,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    connections: Connections,
) {
    // A failing accept repeats twenty times a second: one warning a second, with the count.
    let accept_failures = Throttle::default();
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| port.load().spec.addr);
    loop {
        // Waiting for a permit before accepting leaves excess clients in the kernel's
        // backlog instead of costing memory here.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                if let Some(count) = accept_failures.hit() {
                    tracing::warn!(port = %local, error = %e, count, "accept failed (count: since the last such warning)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(allowed) = &*ALLOWED_SOURCES {
            let ip = crate::proxy_protocol::peer_ip(peer);
            if !allowed.iter().any(|net| net.contains(&ip)) {
                tracing::debug!(%peer, "refused: not admitted by the instance's security groups");
                continue;
            }
        }
        let shared = current.load_full();
        shared
            .stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .connections_active
            .fetch_add(1, Ordering::SeqCst);
        let conn = ClientConn::new(
            current.clone(),
            stream,
            peer,
            port.load_full(),
            shutdown.clone(),
        );
        let hard_stop = connections.hard_stop.clone();
        connections.tracker.spawn(async move {
            tokio::select! {
                () = conn.serve() => {}
                () = hard_stop.cancelled() => {}
            }
            shared
                .stats
                .connections_active
                .fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
}
