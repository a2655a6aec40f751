//! Target groups and their targets: the registered set, the Maglev table over it, per-target
//! counters, and the token that ends a target's flows when it leaves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::health::{self, HealthCheck};
use crate::maglev;
use crate::spec::TargetGroupSpec;

/// Live counters of one target (shared by every node).
#[derive(Debug, Default)]
pub struct TargetStats {
    pub active_flows: AtomicU64,
    pub new_flows: AtomicU64,
    pub bytes_to_target: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub connect_failures: AtomicU64,
    pub health_transitions: AtomicU64,
}

/// A registered target.
#[derive(Debug)]
pub struct Target {
    /// `ADDRESS:PORT`: the identity the Maglev table hashes.
    pub id: String,
    pub addr: SocketAddr,
    pub zone: String,
    pub stats: TargetStats,
    /// Set by deregistration: no new flows.
    pub draining: AtomicBool,
    /// Cancelled when the target leaves for good: its flows close, its checks stop.
    pub gone: CancellationToken,
    /// Notified whenever one of its flows ends (drain waits on it).
    pub flow_ended: Notify,
}

impl Target {
    pub fn new(addr: SocketAddr, zone: &str) -> Target {
        Target {
            id: addr.to_string(),
            addr,
            zone: zone.to_string(),
            stats: TargetStats::default(),
            draining: AtomicBool::new(false),
            gone: CancellationToken::new(),
            flow_ended: Notify::new(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Marks a flow of `target` active for as long as it lives.
pub struct FlowGuard(pub Arc<Target>);

impl FlowGuard {
    pub fn new(target: Arc<Target>) -> FlowGuard {
        target.stats.active_flows.fetch_add(1, Ordering::SeqCst);
        target.stats.new_flows.fetch_add(1, Ordering::Relaxed);
        FlowGuard(target)
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.0.stats.active_flows.fetch_sub(1, Ordering::SeqCst);
        self.0.flow_ended.notify_waiters();
    }
}

/// The registered targets (draining ones included, sorted by id) and the table over them.
#[derive(Debug)]
pub struct Members {
    pub targets: Vec<Arc<Target>>,
    pub table: maglev::Table,
}

impl Members {
    fn new(mut targets: Vec<Arc<Target>>) -> Members {
        targets.sort_by(|a, b| a.id.cmp(&b.id));
        let keys: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
        Members {
            table: maglev::Table::build(&keys),
            targets,
        }
    }

    pub fn find(&self, id: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.id == id)
    }
}

/// One target group at run time.
pub struct Group {
    pub spec: TargetGroupSpec,
    pub check: Box<dyn HealthCheck>,
    pub members: ArcSwap<Members>,
    /// Serialises membership changes (they rebuild the table).
    edit: Mutex<()>,
}

impl Group {
    pub fn new(spec: TargetGroupSpec) -> Group {
        let check = health::from_spec(&spec.health_check, spec.proxy_protocol_v2);
        Group {
            spec,
            check,
            members: ArcSwap::from_pointee(Members::new(Vec::new())),
            edit: Mutex::new(()),
        }
    }

    /// Adds a target (a no-op returning the existing one if its address is registered).
    pub fn add(&self, addr: SocketAddr, zone: &str) -> (Arc<Target>, bool) {
        let _edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.members.load();
        if let Some(existing) = current.find(&addr.to_string()) {
            if !existing.is_draining() {
                return (existing.clone(), false);
            }
        }
        let target = Arc::new(Target::new(addr, zone));
        let mut targets: Vec<Arc<Target>> = current
            .targets
            .iter()
            .filter(|t| t.id != target.id)
            .cloned()
            .collect();
        targets.push(target.clone());
        self.members.store(Arc::new(Members::new(targets)));
        (target, true)
    }

    /// Removes `target` (after its drain) from the set.
    pub fn remove(&self, target: &Arc<Target>) {
        let _edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.members.load();
        let targets = current
            .targets
            .iter()
            .filter(|t| !Arc::ptr_eq(t, target))
            .cloned()
            .collect();
        self.members.store(Arc::new(Members::new(targets)));
    }
}
