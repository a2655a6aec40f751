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
use proxyfleet_relay::per_source::PerSourceLimit;

use crate::access_log::AccessLogger;
use crate::config::Config;
use crate::http::rewrite::RequestRewrite;
use crate::listeners::{self, Listeners, PortChanges};
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
    /// `proxyfleet/VERSION` (or without the version: `httpd_suppress_version_string`).
    pub product: String,
    pub resolver: Resolver,
    /// `auth_param basic`, with its helpers running.
    pub auth: Option<Arc<crate::auth::Schemes>>,
    /// `url_rewrite_program`, with its helpers running.
    pub rewriter: Option<crate::url_rewrite::UrlRewriter>,
    /// `external_acl_type` helpers, running.
    pub external: crate::external_acl::ExternalAcls,
    /// `delay_pools`' buckets (a reload starts them afresh).
    pub delay: Arc<crate::delay::DelayPools>,
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
    #[error("cannot run helper {program} ({location}): {source}")]
    Helper {
        program: String,
        location: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::OpenError),
    /// Squid 5.7 parses such a file too, and then will not run: "No forward-proxy ports
    /// configured".
    #[error("no http_port configured: nothing to serve")]
    NoPorts,
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
    #[error("the proxy is stopping")]
    Stopping,
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A bound, not yet serving proxy: binding is separate so callers learn about port
/// conflicts before they report readiness.
pub struct Proxy {
    current: Arc<ArcSwap<Shared>>,
    listeners: Arc<Listeners>,
}

/// Swaps in a new configuration for a running proxy ([`Proxy::reloader`]).
#[derive(Clone)]
pub struct Reloader {
    current: Arc<ArcSwap<Shared>>,
    listeners: Arc<Listeners>,
}

impl Reloader {
    /// Makes `config` the one new requests are judged by (requests in progress and tunnels
    /// keep theirs): access logs reopened as it names them, the resolver as it sets it up,
    /// ports added and removed. Nothing changes when it cannot all be put in force.
    pub fn reload(&self, config: Config) -> Result<PortChanges, ReloadError> {
        if config.http_ports.is_empty() {
            return Err(StartError::NoPorts.into());
        }
        let wanted = config.http_ports.clone();
        self.listeners.change(&wanted, |own_addrs| {
            let old = self.current.load_full();
            let next = Shared::build(config, own_addrs, Some(&old))?;
            self.current.store(Arc::new(next));
            Ok(())
        })
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Shared> {
        self.current.load_full()
    }
}

impl Proxy {
    pub fn bind(config: Config) -> Result<Proxy, StartError> {
        if config.http_ports.is_empty() {
            return Err(StartError::NoPorts);
        }
        let bound = config
            .http_ports
            .iter()
            .map(listeners::bind)
            .collect::<Result<Vec<_>, _>>()?;
        let listeners = Listeners::new(bound, config.client_cap());
        let shared = Shared::build(config, listeners.local_addrs(), None)?;
        Ok(Proxy {
            current: Arc::new(ArcSwap::from_pointee(shared)),
            listeners: Arc::new(listeners),
        })
    }

    /// What reloads this proxy's configuration while it serves.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            current: self.current.clone(),
            listeners: self.listeners.clone(),
        }
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.local_addrs()
    }

    /// The configuration in force now (a reload replaces it).
    pub fn shared(&self) -> Arc<Shared> {
        self.current.load_full()
    }

    /// Serves until `stop` yields, then stops the way it says.
    pub async fn serve(self, stop: impl std::future::Future<Output = Stop>) {
        let current = self.current;
        let listeners = self.listeners;
        listeners.start(current.clone());
        let sweeper = tokio::spawn({
            let current = current.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    current.load().pool.sweep();
                }
            }
        });
        let how = stop.await;
        // The configuration in force at the stop says how long the stop may take.
        let shared = current.load_full();
        shared.draining.store(true, Ordering::SeqCst);
        listeners.stop();
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
        let connections = &listeners.connections;
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
        let mut log = AccessLogger::open(&config.access_logs, config.logfile_error_policy)?
            .stripping_query_terms(config.strip_query_terms);
        if let Some(previous) = carry {
            log = log.counting_on(&previous.log);
        }
        let resolver = Resolver::new(
            &config.dns_nameservers,
            config.positive_dns_ttl,
            config.negative_dns_ttl,
        )?;
        let product = config.product();
        let helper_exists = |argv: &[String], location: String| {
            std::fs::metadata(&argv[0])
                .map(|_| ())
                .map_err(|e| StartError::Helper {
                    program: argv[0].clone(),
                    location,
                    source: e,
                })
        };
        let basic = match &config.basic_auth {
            Some(basic) => {
                let at = basic
                    .location
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string);
                helper_exists(
                    &basic.helper.argv,
                    format!("auth_param basic program at {at}"),
                )?;
                Some(crate::auth::BasicScheme::start(basic.clone()))
            }
            None => None,
        };
        let digest = match &config.digest_auth {
            Some(digest) => {
                helper_exists(&digest.helper.argv, "auth_param digest program".into())?;
                Some(crate::digest::DigestScheme::start(digest.clone()))
            }
            None => None,
        };
        let auth = (basic.is_some() || digest.is_some())
            .then(|| Arc::new(crate::auth::Schemes { basic, digest }));
        let rewriter = match &config.url_rewrite {
            Some(rewrite) => {
                let program = &rewrite.helper.argv[0];
                if let Err(e) = std::fs::metadata(program) {
                    return Err(StartError::Helper {
                        program: program.clone(),
                        location: "url_rewrite_program".into(),
                        source: e,
                    });
                }
                Some(crate::url_rewrite::UrlRewriter::start(rewrite.clone()))
            }
            None => None,
        };
        for ty in &config.external_acl_types {
            let program = &ty.helper.argv[0];
            if let Err(e) = std::fs::metadata(program) {
                return Err(StartError::Helper {
                    program: program.clone(),
                    location: format!("external_acl_type {}", ty.name),
                    source: e,
                });
            }
        }
        let external = crate::external_acl::ExternalAcls::start(&config.external_acl_types);
        let delay = Arc::new(crate::delay::DelayPools::new(
            config.delay_pools.clone(),
            config.delay_initial_bucket_level,
            config.client_delay_pools.clone(),
            config.client_delay_initial_bucket_level,
        ));
        let via = config
            .via
            .then(|| format!("1.1 {} ({product})", config.visible_hostname));
        let rewrite = RequestRewrite {
            via,
            forwarded_for: config.forwarded_for,
        };
        // The same limit goes on counting the connections already admitted.
        // `maxconn` ACLs need the count even without a limit.
        let per_client = match carry {
            Some(c)
                if c.config.client_ip_max_connections == config.client_ip_max_connections
                    && c.config.uses_maxconn == config.uses_maxconn =>
            {
                c.per_client.clone()
            }
            _ => config
                .client_ip_max_connections
                .map(PerSourceLimit::new)
                .or_else(|| config.uses_maxconn.then(|| PerSourceLimit::new(usize::MAX))),
        };
        let pool = carry.map_or_else(Arc::default, |c: &Shared| c.pool.clone());
        pool.set_idle_timeout(config.server_idle_pconn_timeout);
        Ok(Shared {
            config,
            product,
            resolver,
            auth,
            rewriter,
            external,
            delay,
            pool,
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
