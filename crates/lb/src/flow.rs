//! The data path: a node's listener accepts a client, the flow's 5-tuple picks a target by
//! Maglev, a full target (at its `target_max_connections`) is passed by and a failed connect
//! is retried on the next target of the flow's preference order, and the bytes are relayed
//! until both sides close. The balancer never reads from a client before the target is
//! connected: at Layer 4 there is nothing to wait for, so no client-controlled read (and no
//! timeout for one) exists here; an idle flow ends at the idle timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use proxyfleet_relay::per_source::PerSourceLimit;
use proxyfleet_relay::throttle::Throttle;
use proxyfleet_relay::PipeBudget;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connect::{connect_from, keepalive};
use crate::group::{FlowGuard, FlowSlot, Target};
use crate::maglev;
use crate::relay::relay;
use crate::routes::GroupView;

/// Connects beyond this fail over to the next target (the peers' `timeout connect 1s`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Targets tried for one flow: the first choice and up to two retries.
pub const ATTEMPTS: usize = 3;

/// Counters of one node.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    /// Refused by a listener's `allowed_cidrs`.
    pub refused: AtomicU64,
    /// No target could be reached after every attempt.
    pub failed: AtomicU64,
    /// Closed at once: every target the flow could use held its `target_max_connections`.
    pub full: AtomicU64,
}

/// Warnings a listener may repeat many times a second, each at most once a second with the
/// count since the last one.
#[derive(Debug, Default)]
pub struct Warnings {
    pub accept: Throttle,
    pub full: Throttle,
    pub failed: Throttle,
    pub local: Throttle,
}

/// One listener of one node.
pub struct Listener {
    pub node: String,
    pub source_check: Option<Vec<IpNet>>,
    pub view: Arc<GroupView>,
    pub stats: Arc<NodeStats>,
    pub limit: Arc<Semaphore>,
    /// Shared by every node of the process: the flows its open-file limit can carry.
    pub process_limit: Arc<Semaphore>,
    /// Shared by the node's listeners: open flows per client address.
    pub per_source: Arc<PerSourceLimit>,
    pub idle: Duration,
    /// Shared by every node of the process: splice pipes that fit in the open-file limit.
    pub pipes: PipeBudget,
    pub warnings: Warnings,
}

/// The flow hash: the 5-tuple (protocol TCP) under the fixed seed, so every node and every
/// restart sends a flow to the same target.
pub fn flow_hash(client: SocketAddr, local: SocketAddr) -> u64 {
    let mut bytes = Vec::with_capacity(37);
    for addr in [client, local] {
        match addr.ip() {
            IpAddr::V4(v4) => bytes.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes.extend_from_slice(&v6.octets()),
        }
        bytes.extend_from_slice(&addr.port().to_be_bytes());
    }
    bytes.push(6);
    maglev::hash(maglev::SEED, &bytes)
}

impl Listener {
    /// Accepts until `accepting` is cancelled (the listener removed: its flows run on; a
    /// child of `stop`, so the balancer stopping ends it too, and its flows with `stop`).
    pub async fn run(
        self: Arc<Self>,
        socket: TcpListener,
        flows: TaskTracker,
        stop: CancellationToken,
        accepting: CancellationToken,
    ) {
        loop {
            let permit = tokio::select! {
                p = self.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                () = accepting.cancelled() => return,
            };
            let process_permit = tokio::select! {
                p = self.process_limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                () = accepting.cancelled() => return,
            };
            let (client, peer) = tokio::select! {
                r = socket.accept() => match r {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning, say it once a second.
                        if let Some(count) = self.warnings.accept.hit() {
                            tracing::warn!(node = %self.node, error = %e, count, "accept failed (count: since the last such warning)");
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = accepting.cancelled() => return,
            };
            if let Some(allowed) = &self.source_check {
                if !allowed.iter().any(|net| net.contains(&peer.ip())) {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = %self.node, %peer, "refused: source not in allowed_cidrs");
                    continue;
                }
            }
            let Some(slot) = self.per_source.admit(peer.ip()) else {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = %self.node, %peer, max = self.per_source.max(), "refused: max_connections_per_source reached");
                continue;
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            self.stats.active.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            let stop = stop.clone();
            flows.spawn(async move {
                tokio::select! {
                    () = me.serve(client, peer) => {}
                    () = stop.cancelled() => {}
                }
                me.stats.active.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
                drop(process_permit);
                drop(permit);
            });
        }
    }

    async fn serve(&self, client: TcpStream, peer: SocketAddr) {
        let Ok(local) = client.local_addr() else {
            return;
        };
        let hash = flow_hash(peer, local);
        let spec = &self.view.group.spec;
        let source = if spec.preserve_client_ip {
            peer.ip()
        } else {
            spec.from_address.unwrap_or(local.ip())
        };
        // Targets this flow has passed by: their connect failed, or they were full.
        let mut passed: Vec<Arc<Target>> = Vec::new();
        let mut attempts = 0;
        let mut full = 0;
        while attempts < ATTEMPTS {
            let routes = self.view.routes.load();
            let Some(target) = routes.pick(hash, &passed) else {
                break;
            };
            drop(routes);
            let Some(slot) = target.admit() else {
                // Like an unhealthy target for this flow: the next in its order, no attempt
                // spent (nothing was tried).
                target.stats.skipped_full.fetch_add(1, Ordering::Relaxed);
                full += 1;
                passed.push(target);
                continue;
            };
            attempts += 1;
            let connected = tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect_from(source, target.addr, spec.transparent),
            )
            .await;
            let upstream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) if crate::connect::is_local_failure(&e) => {
                    // This host is out of descriptors, buffers or ports for this 4-tuple: the
                    // target is not to blame, but another target may still be reachable
                    // (EADDRNOTAVAIL is per destination), so try it without counting this.
                    if let Some(count) = self.warnings.local.hit() {
                        tracing::warn!(node = %self.node, target = %target.id, %peer, error = %e, count, "cannot open a connection to a target here (not counted against it; count: since the last such warning)");
                    }
                    passed.push(target);
                    continue;
                }
                Ok(Err(e)) => {
                    self.fail(&target, &e.to_string());
                    passed.push(target);
                    continue;
                }
                Err(_) if spec.preserve_client_ip => {
                    // From the client's own address a silent drop may be the target's
                    // firewall refusing this one client (a security group), not a dead
                    // target: retry elsewhere, but leave its health to the health checks,
                    // so one unwelcome client cannot take targets out of service.
                    tracing::debug!(node = %self.node, target = %target.id, %peer, "connect from the client's address timed out");
                    passed.push(target);
                    continue;
                }
                Err(_) => {
                    self.fail(
                        &target,
                        &format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                    );
                    passed.push(target);
                    continue;
                }
            };
            self.forward(client, upstream, target, slot, peer, local)
                .await;
            return;
        }
        if full > 0 {
            // Refused rather than queued: the node never holds more flows than its targets
            // take, and the client learns at once (a retry may find a place).
            self.stats.full.fetch_add(1, Ordering::Relaxed);
            if let Some(count) = self.warnings.full.hit() {
                tracing::warn!(node = %self.node, group = %spec.name, %peer, count, "every target that could take the flow is at its target_max_connections: flow closed (count: since the last such warning)");
            }
            return;
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.warnings.failed.hit() {
            tracing::warn!(node = %self.node, %peer, tried = passed.len(), count, "no target could take the flow: closing it (count: since the last such warning)");
        }
    }

    fn fail(&self, target: &Target, why: &str) {
        target
            .stats
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        self.view.on_connect_failure(target, why);
    }

    async fn forward(
        &self,
        client: TcpStream,
        mut upstream: TcpStream,
        target: Arc<Target>,
        slot: FlowSlot,
        peer: SocketAddr,
        local: SocketAddr,
    ) {
        let guard = FlowGuard::new(target.clone());
        // The client socket inherited keepalive and nodelay from the listener.
        keepalive(&upstream);
        if self.view.group.spec.proxy_protocol_v2
            && upstream
                .write_all(&crate::proxy_header::proxied(peer, local))
                .await
                .is_err()
        {
            return;
        }
        let counters = (&target.stats.bytes_to_target, &target.stats.bytes_to_client);
        tokio::select! {
            result = relay(&client, &upstream, self.idle, counters, &self.pipes) => {
                if let Err(e) = result {
                    tracing::debug!(node = %self.node, target = %target.id, error = %e, "flow ended with an error");
                }
            }
            () = target.gone.cancelled() => {
                tracing::info!(node = %self.node, target = %target.id, %peer, "deregistration delay over: flow closed");
            }
        }
        drop(guard);
        // The target's place is free only once both sockets are closed.
        drop(upstream);
        drop(client);
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_five_tuple_hashes_the_same_and_others_differ() {
        let c: SocketAddr = "127.20.0.5:40000".parse().unwrap();
        let l: SocketAddr = "127.10.1.10:3128".parse().unwrap();
        assert_eq!(flow_hash(c, l), flow_hash(c, l));
        assert_ne!(
            flow_hash(c, l),
            flow_hash("127.20.0.5:40001".parse().unwrap(), l)
        );
        assert_ne!(
            flow_hash(c, l),
            flow_hash(c, "127.10.2.10:3128".parse().unwrap())
        );
    }
}
