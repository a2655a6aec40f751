//! Listening sockets, the connection limit, and the two ways to stop.
//!
//! Graceful stop (SIGTERM): listeners close at once, `/healthz` answers 503, idle keep-alive
//! connections close, and transactions in flight get up to `shutdown_lifetime` to finish.
//! Fast stop (SIGINT): the same, with no wait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use proxyfleet_relay::per_source::PerSourceLimit;
use proxyfleet_relay::throttle::Throttle;

use crate::access_log::AccessLogger;
use crate::config::{Config, HttpPort};
use crate::conn::ClientConn;
use crate::http::rewrite::RequestRewrite;
use crate::origin::Pool;
use crate::resolve::Resolver;

/// Counters for operators (and, later, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub requests: AtomicU64,
}

/// What every connection shares: one configuration's parts, and the process's (counters,
/// idle origin connections, draining), which a reload carries over to the next one.
pub struct Shared {
    pub config: Config,
    pub resolver: Resolver,
    pub pool: Arc<Pool>,
    pub log: AccessLogger,
    pub rewrite: RequestRewrite,
    pub draining: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    /// The sockets this proxy listens on (ports resolved): no request may be sent to them.
    pub own_addrs: Vec<SocketAddr>,
    /// `client_ip_max_connections`.
    pub per_client: Option<Arc<PerSourceLimit>>,
}

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (http_port at {location}): {source}")]
    Bind {
        addr: SocketAddr,
        location: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::OpenError),
    #[error(transparent)]
    Dns(#[from] crate::resolve::DnsError),
}

/// How the proxy is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Finish transactions in flight, for up to `shutdown_lifetime`.
    Graceful,
    /// Close everything now.
    Fast,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("http_port lines changed ({before} before, {after} now): ports are not reloaded yet, restart to change them; nothing changed")]
    Ports { before: String, after: String },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A bound, not yet serving proxy: binding is separate so callers learn about port
/// conflicts before they report readiness.
pub struct Proxy {
    current: Arc<ArcSwap<Shared>>,
    listeners: Vec<(TcpListener, Arc<HttpPort>)>,
}

/// Swaps in a new configuration for a running proxy ([`Proxy::reloader`]).
#[derive(Clone)]
pub struct Reloader {
    current: Arc<ArcSwap<Shared>>,
}

impl Reloader {
    /// Makes `config` the one new requests are judged by (requests in progress and tunnels
    /// keep theirs): access logs reopened as it names them, the resolver as it sets it up.
    /// Nothing changes when it cannot be put in force.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let old = self.current.load_full();
        let ports = |c: &Config| {
            c.http_ports
                .iter()
                .map(|p| format!("{:?}", (p.addr, p.require_proxy_header)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if ports(&old.config) != ports(&config) {
            return Err(ReloadError::Ports {
                before: ports(&old.config),
                after: ports(&config),
            });
        }
        let next = Shared::build(config, old.own_addrs.clone(), Some(&old))?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Shared> {
        self.current.load_full()
    }
}

impl Proxy {
    pub fn bind(config: Config) -> Result<Proxy, StartError> {
        let mut listeners = Vec::new();
        for port in &config.http_ports {
            let listener = bind_port(port.addr).map_err(|source| StartError::Bind {
                addr: port.addr,
                location: port.location.to_string(),
                source,
            })?;
            listeners.push((listener, Arc::new(port.clone())));
        }
        let own_addrs = listeners
            .iter()
            .filter_map(|(l, _): &(TcpListener, _)| l.local_addr().ok())
            .collect();
        let shared = Shared::build(config, own_addrs, None)?;
        Ok(Proxy {
            current: Arc::new(ArcSwap::from_pointee(shared)),
            listeners,
        })
    }

    /// What reloads this proxy's configuration while it serves.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            current: self.current.clone(),
        }
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The configuration in force now (a reload replaces it).
    pub fn shared(&self) -> Arc<Shared> {
        self.current.load_full()
    }

    /// Serves until `stop` yields, then stops the way it says.
    pub async fn serve(self, stop: impl std::future::Future<Output = Stop>) {
        let current = self.current;
        let shared = current.load_full();
        // Each client connection may hold a second descriptor for its origin.
        let limit = Arc::new(Semaphore::new(shared.config.client_cap()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let connections = Connections {
            tracker: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        };
        let mut acceptors = JoinSet::new();
        for (listener, port) in self.listeners {
            acceptors.spawn(accept_loop(
                listener,
                port,
                current.clone(),
                limit.clone(),
                shutdown_rx.clone(),
                connections.clone(),
            ));
        }
        let sweeper = tokio::spawn({
            let shared = shared.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    shared.pool.sweep();
                }
            }
        });
        let how = stop.await;
        // The configuration in force at the stop says how long the stop may take.
        let shared = current.load_full();
        shared.draining.store(true, Ordering::SeqCst);
        acceptors.abort_all();
        while acceptors.join_next().await.is_some() {}
        let _ = shutdown_tx.send(true);
        let lifetime = if how == Stop::Graceful {
            shared.config.shutdown_lifetime
        } else {
            Duration::ZERO
        };
        tracing::info!(
            active = shared.stats.connections_active.load(Ordering::Relaxed),
            wait = ?lifetime,
            "stopping: listeners closed, waiting for transactions in flight"
        );
        connections.tracker.close();
        if tokio::time::timeout(lifetime, connections.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                active = shared.stats.connections_active.load(Ordering::Relaxed),
                "shutdown_lifetime passed: closing the remaining connections"
            );
        }
        connections.hard_stop.cancel();
        connections.tracker.wait().await;
        sweeper.abort();
        shared.pool.clear();
    }
}

impl Shared {
    /// One configuration's parts; `carry`: the configuration it replaces, whose counters,
    /// idle origin connections and draining flag go on.
    fn build(
        config: Config,
        own_addrs: Vec<SocketAddr>,
        carry: Option<&Shared>,
    ) -> Result<Shared, StartError> {
        let log = AccessLogger::open(&config.access_logs, config.logfile_error_policy)?;
        let resolver = Resolver::new(&config.dns_nameservers, config.negative_dns_ttl)?;
        let via = config.via.then(|| {
            format!(
                "1.1 {} (proxyfleet/{})",
                config.visible_hostname,
                env!("CARGO_PKG_VERSION")
            )
        });
        let rewrite = RequestRewrite {
            via,
            forwarded_for: config.forwarded_for,
        };
        // The same limit goes on counting the connections already admitted.
        let per_client = match carry {
            Some(c) if c.config.client_ip_max_connections == config.client_ip_max_connections => {
                c.per_client.clone()
            }
            _ => config.client_ip_max_connections.map(PerSourceLimit::new),
        };
        Ok(Shared {
            config,
            resolver,
            pool: carry.map_or_else(Arc::default, |c| c.pool.clone()),
            log,
            rewrite,
            draining: carry.map_or_else(Arc::default, |c| c.draining.clone()),
            stats: carry.map_or_else(Arc::default, |c| c.stats.clone()),
            per_client,
            own_addrs,
        })
    }

    /// The proxy's counters in Prometheus' text format (`GET /metrics`). Written out by
    /// hand: six numbers do not need a registry.
    pub fn metrics(&self) -> String {
        let log = &self.log;
        let rows: [(&str, &str, &str, u64); 6] = [
            (
                "proxyfleet_proxy_connections_accepted_total",
                "counter",
                "Client connections accepted.",
                self.stats.connections_accepted.load(Ordering::Relaxed),
            ),
            (
                "proxyfleet_proxy_connections_active",
                "gauge",
                "Client connections open now.",
                self.stats.connections_active.load(Ordering::Relaxed),
            ),
            (
                "proxyfleet_proxy_requests_total",
                "counter",
                "Requests read.",
                self.stats.requests.load(Ordering::Relaxed),
            ),
            (
                "proxyfleet_proxy_access_log_lines_written_total",
                "counter",
                "Access log lines written (one per file a transaction is logged to).",
                log.lines_written.load(Ordering::Relaxed),
            ),
            (
                "proxyfleet_proxy_access_log_lines_dropped_total",
                "counter",
                "Access log lines dropped because their write failed (disk full, I/O error).",
                log.lines_dropped.load(Ordering::Relaxed),
            ),
            (
                "proxyfleet_proxy_access_log_refusing",
                "gauge",
                "1 while requests are refused because the access log is not writable (logfile_error_policy refuse).",
                u64::from(log.refuses()),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        out
    }
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

/// Every client connection's task: tracked so stopping can wait for them, and cancelled
/// together when the wait is over.
#[derive(Clone)]
struct Connections {
    tracker: TaskTracker,
    hard_stop: CancellationToken,
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

async fn accept_loop(
    listener: TcpListener,
    port: Arc<HttpPort>,
    current: Arc<ArcSwap<Shared>>,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    connections: Connections,
) {
    // A failing accept repeats twenty times a second: one warning a second, with the count.
    let accept_failures = Throttle::default();
    let local = listener.local_addr().map_or(port.addr, |a| a);
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
            port.clone(),
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
