//! Target groups and their targets: the registered set, the Maglev table over it, per-target
//! counters and capacity, and the token that ends a target's flows when it leaves.

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
    /// New flows that passed this target by because it held `max_flows` already.
    pub skipped_full: AtomicU64,
    /// Health checks that could not run on this host (EMFILE, ENOBUFS...): never counted
    /// against the target, but counted here so a starved checker shows.
    pub checks_not_run: AtomicU64,
}

/// `max_flows` of a target without a cap.
const NO_CAP: u64 = u64::MAX;

/// A registered target.
#[derive(Debug)]
pub struct Target {
    /// `ADDRESS:PORT`: the identity the Maglev table hashes.
    pub id: String,
    pub addr: SocketAddr,
    pub zone: String,
    pub stats: TargetStats,
    /// The most flows it may hold at once (from every node together); [`NO_CAP`]: no cap.
    /// Atomic: an instance's capacity may become known, or change, while it is registered.
    max_flows: AtomicU64,
    /// Flows holding a [`FlowSlot`]: connecting or open.
    admitted: AtomicU64,
    /// Set by deregistration: no new flows.
    pub draining: AtomicBool,
    /// Cancelled when the target leaves for good: its flows close, its checks stop.
    pub gone: CancellationToken,
    /// Notified whenever one of its flows ends (drain waits on it).
    pub flow_ended: Notify,
}

impl Target {
    pub fn new(addr: SocketAddr, zone: &str, max_flows: Option<u64>) -> Target {
        Target {
            id: addr.to_string(),
            addr,
            zone: zone.to_string(),
            stats: TargetStats::default(),
            max_flows: AtomicU64::new(max_flows.unwrap_or(NO_CAP)),
            admitted: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            gone: CancellationToken::new(),
            flow_ended: Notify::new(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The most flows it may hold at once; `None`: no cap.
    pub fn max_flows(&self) -> Option<u64> {
        Some(self.max_flows.load(Ordering::Acquire)).filter(|m| *m != NO_CAP)
    }

    /// A new cap, for flows admitted from now on (flows already open above it run on).
    pub fn set_max_flows(&self, max_flows: Option<u64>) {
        self.max_flows
            .store(max_flows.unwrap_or(NO_CAP), Ordering::Release);
    }

    /// A place for one more flow, taken before the connect so that flows connecting at once
    /// on every node can never together pass `max_flows`; `None` when it is full.
    pub fn admit(self: &Arc<Self>) -> Option<FlowSlot> {
        let max = self.max_flows.load(Ordering::Acquire);
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(FlowSlot(self.clone()))
    }

    /// Flows connecting or open now.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Acquire)
    }
}

/// One flow's place in its target's `max_flows`, given back when the flow ends (or its
/// connect fails).
pub struct FlowSlot(Arc<Target>);

impl Drop for FlowSlot {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
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

/// The settings of a target group that may change while it runs (`proxyfleet apply`): the
/// health check and the deregistration delay. The `spec`'s own copies are those it started
/// with.
pub struct Tuned {
    pub health_check: crate::spec::HealthCheckSpec,
    pub check: Box<dyn HealthCheck>,
    pub deregistration_delay: std::time::Duration,
}

impl Tuned {
    fn of(spec: &TargetGroupSpec) -> Tuned {
        Tuned {
            health_check: spec.health_check.clone(),
            check: health::from_spec(&spec.health_check, spec.proxy_protocol_v2),
            deregistration_delay: spec.deregistration_delay,
        }
    }
}

/// One target group at run time.
pub struct Group {
    pub spec: TargetGroupSpec,
    tuned: ArcSwap<Tuned>,
    pub members: ArcSwap<Members>,
    /// Serialises membership changes (they rebuild the table).
    edit: Mutex<()>,
}

impl Group {
    pub fn new(spec: TargetGroupSpec) -> Group {
        Group {
            tuned: ArcSwap::from_pointee(Tuned::of(&spec)),
            spec,
            members: ArcSwap::from_pointee(Members::new(Vec::new())),
            edit: Mutex::new(()),
        }
    }

    /// The health check and deregistration delay in force.
    pub fn tuned(&self) -> Arc<Tuned> {
        self.tuned.load_full()
    }

    /// Puts `spec`'s health check and deregistration delay in force: checks from their next
    /// round, drains that begin from now.
    pub fn retune(&self, spec: &TargetGroupSpec) {
        self.tuned.store(Arc::new(Tuned::of(&TargetGroupSpec {
            proxy_protocol_v2: self.spec.proxy_protocol_v2,
            ..spec.clone()
        })));
    }

    /// Adds a target (a no-op returning the existing one if its address is registered), which
    /// may hold `max_flows` at once.
    pub fn add(&self, addr: SocketAddr, zone: &str, max_flows: Option<u64>) -> (Arc<Target>, bool) {
        let _edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.members.load();
        if let Some(existing) = current.find(&addr.to_string()) {
            if !existing.is_draining() {
                return (existing.clone(), false);
            }
        }
        let target = Arc::new(Target::new(addr, zone, max_flows));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_admits_up_to_its_max_flows_and_takes_more_as_flows_end() {
        let t = Arc::new(Target::new(
            "127.94.0.1:3128".parse().unwrap(),
            "a",
            Some(2),
        ));
        let first = t.admit().expect("1 of 2");
        let _second = t.admit().expect("2 of 2");
        assert!(t.admit().is_none(), "full");
        assert_eq!(t.admitted(), 2);
        drop(first);
        assert!(t.admit().is_some(), "a place again");
        let open = Arc::new(Target::new("127.94.0.2:3128".parse().unwrap(), "a", None));
        let held: Vec<FlowSlot> = (0..1000).map(|_| open.admit().unwrap()).collect();
        assert_eq!(open.admitted(), 1000, "no cap");
        drop(held);
        assert_eq!(open.admitted(), 0);
    }
}
