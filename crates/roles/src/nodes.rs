//! The agent's load-balancer nodes: those of its zone, bound on this host — and another
//! zone's while that zone has no live host — their targets following the shared state, their
//! health verdicts written back to it.
//!
//! The data plane never waits for the control plane: the nodes serve with the last targets
//! the state gave them and keep checking them while the store is unreachable; verdicts made
//! meanwhile are written once it answers again (each node's latest verdict per target, not
//! every flap in between).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxyfleet_lb::{Balancer, DesiredTarget, Health, HealthEvent, ProcessBudget};
use proxyfleet_stack::Stack;
use proxyfleet_state::{Change, Fence, Snapshot, StateStore, StoreError, TargetHealth, UnixMillis};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::decide::Timings;
use crate::view::View;

/// How long the stand-in check waits for the store's list of live hosts.
const LIVE_HOSTS_WAIT: Duration = Duration::from_millis(500);

/// One node (`LB/ZONE`) run by this agent: its own balancer, following the state.
struct RunningNode {
    balancer: Arc<Balancer>,
    stop: CancellationToken,
}

/// The nodes this agent runs: its own zone's always, another zone's while that zone has no
/// live host (a lost host's node address serves again from a survivor), handed back when one
/// returns.
pub struct NodeSet {
    pub(crate) stack: Stack,
    pub(crate) host: String,
    pub(crate) zone: String,
    budget: ProcessBudget,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) view: watch::Receiver<View>,
    pub(crate) stop: CancellationToken,
    /// What the running nodes' own tasks end with: `stop` on one machine; across hosts the
    /// agent's last token, so a stopping host's nodes serve on until `hold` has handed
    /// their addresses over (make before break) and let each go.
    serving: CancellationToken,
    running: Mutex<BTreeMap<(String, String), RunningNode>>,
    /// Target groups whose health check or deregistration delay `apply` changed: nodes
    /// started later take them too.
    retuned: Mutex<Vec<proxyfleet_lb::spec::TargetGroupSpec>>,
    /// Load balancers whose listeners `apply` changed: nodes started later take them too.
    relistened: Mutex<Vec<proxyfleet_lb::spec::LoadBalancerSpec>>,
    /// Where node addresses are added when this host takes them ([`crate::holding`]);
    /// `None`: they are local already (one machine), and binding is the test of ownership.
    pub(crate) interface: Option<Arc<crate::addresses::Interface>>,
}

impl NodeSet {
    #[allow(clippy::too_many_arguments)] // each is one of the agent's own parts
    pub fn new(
        stack: Stack,
        host: String,
        zone: String,
        budget: ProcessBudget,
        store: Arc<dyn StateStore>,
        view: watch::Receiver<View>,
        stop: CancellationToken,
        serving: CancellationToken,
        interface: Option<Arc<crate::addresses::Interface>>,
    ) -> Arc<NodeSet> {
        Arc::new(NodeSet {
            stack,
            host,
            zone,
            budget,
            store,
            view,
            stop,
            serving,
            running: Mutex::new(BTreeMap::new()),
            retuned: Mutex::new(Vec::new()),
            relistened: Mutex::new(Vec::new()),
            interface,
        })
    }

    /// The host this node set runs on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Every node of the stack, as `(load balancer, zone)`.
    pub(crate) fn all_nodes(&self) -> Vec<(String, String)> {
        self.stack
            .load_balancers
            .iter()
            .flat_map(|lb| lb.nodes.iter().map(|n| (lb.name.clone(), n.zone.clone())))
            .collect()
    }

    /// Binds this host's own nodes, retrying while another agent still holds an address
    /// (it hands it back once it sees this host's liveness lease), for up to `patience`.
    pub async fn start_own(&self, patience: Duration) -> Result<(), proxyfleet_lb::LbError> {
        let deadline = tokio::time::Instant::now() + patience;
        for (lb, zone) in self
            .all_nodes()
            .into_iter()
            .filter(|(_, z)| *z == self.zone)
        {
            loop {
                match self.start_node(&lb, &zone).await {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::info!(error = %e, "node address still held (by the agent that stood in for this host?); trying again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn start_node(
        &self,
        lb: &str,
        zone: &str,
    ) -> Result<(), proxyfleet_lb::LbError> {
        let key = (lb.to_string(), zone.to_string());
        if self.lock().contains_key(&key) {
            return Ok(());
        }
        // Across hosts the nodes reach targets from this host's own address, which never
        // moves (see `TargetGroupSpec::from_address`).
        // And they bind before the address is here: it is added once the node is ready.
        let mut groups = self.stack.target_groups.clone();
        for g in &mut groups {
            let retuned = self.retuned.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = retuned.iter().find(|r| r.name == g.name) {
                g.health_check = r.health_check.clone();
                g.deregistration_delay = r.deregistration_delay;
            }
        }
        let mut lbs = self.stack.load_balancers.clone();
        for l in &mut lbs {
            let relistened = self.relistened.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = relistened.iter().find(|r| r.name == l.name) {
                l.listeners = r.listeners.clone();
            }
        }
        if self.interface.is_some() {
            let host = self.stack.host(&self.host).map(|h| h.address);
            for g in &mut groups {
                g.from_address = host;
            }
            for l in &mut lbs {
                l.bind_before_owned = true;
            }
        }
        let balancer = Arc::new(
            Balancer::start_sharing(&lbs, &groups, &self.budget, |l, n| {
                l.name == lb && n.zone == zone
            })
            .await?,
        );
        let stop = self.serving.child_token();
        let (targets_tx, targets_rx) = watch::channel(BTreeSet::new());
        balancer.follow(targets_rx);
        tokio::spawn(feed_targets(
            self.stack.clone(),
            self.view.clone(),
            targets_tx,
            stop.clone(),
        ));
        tokio::spawn(report_health(
            balancer.health_events(),
            self.store.clone(),
            stop.clone(),
        ));
        tokio::spawn(report_flows(
            balancer.clone(),
            format!("{lb}/{zone}"),
            self.view.clone(),
            self.store.clone(),
            stop.clone(),
        ));
        for (lb, zone, addr) in balancer.listen_addrs() {
            tracing::info!(%lb, %zone, %addr, host = %self.host, "node listening");
        }
        self.lock().insert(key, RunningNode { balancer, stop });
        Ok(())
    }

    pub(crate) async fn stop_node(&self, key: &(String, String)) {
        let node = self.lock().remove(key);
        if let Some(node) = node {
            if self.interface.is_none() {
                tracing::info!(lb = %key.0, zone = %key.1, host = %self.host, "node handed back to its zone's host");
            }
            node.stop.cancel();
            node.balancer.shutdown().await;
        }
    }

    /// Whether node `key` runs here and has judged one of its targets healthy (it can take
    /// flows without failing open).
    pub(crate) fn node_ready(&self, key: &(String, String)) -> bool {
        let name = format!("{}/{}", key.0, key.1);
        let Some(balancer) = self.running_balancer(key) else {
            return false;
        };
        balancer.status().targets.iter().any(|t| {
            t.health
                .iter()
                .any(|h| h.node == name && h.health == proxyfleet_lb::Health::Healthy)
        })
    }

    /// Flows in progress through node `key` here (0 when it does not run).
    pub(crate) fn node_active(&self, key: &(String, String)) -> u64 {
        let Some(balancer) = self.running_balancer(key) else {
            return 0;
        };
        balancer
            .status()
            .load_balancers
            .iter()
            .flat_map(|lb| lb.nodes.iter())
            .map(|n| n.active)
            .sum()
    }

    fn running_balancer(&self, key: &(String, String)) -> Option<Arc<Balancer>> {
        self.lock().get(key).map(|n| n.balancer.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), RunningNode>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(load balancer, zone, address)` of every listener this agent runs now.
    pub fn listen_addrs(&self) -> Vec<(String, String, SocketAddr)> {
        self.lock()
            .values()
            .flat_map(|n| n.balancer.listen_addrs())
            .collect()
    }

    /// Puts the health check and deregistration delay of `groups` in force on every node this
    /// agent runs, and on those it starts later (`apply`).
    pub fn retune(&self, groups: &[proxyfleet_lb::spec::TargetGroupSpec]) {
        {
            let mut retuned = self.retuned.lock().unwrap_or_else(|p| p.into_inner());
            for g in groups {
                retuned.retain(|r| r.name != g.name);
                retuned.push(g.clone());
            }
        }
        for node in self.lock().values() {
            for g in groups {
                node.balancer.retune(g);
            }
        }
    }

    /// Puts the listeners of `lbs` in force on every node this agent runs (new ports bound
    /// first, removed ones drained: see `Balancer::set_listeners`), and on those it starts
    /// later (`apply`).
    pub fn relisten(&self, lbs: &[proxyfleet_lb::spec::LoadBalancerSpec]) {
        {
            let mut relistened = self.relistened.lock().unwrap_or_else(|p| p.into_inner());
            for l in lbs {
                relistened.retain(|r| r.name != l.name);
                relistened.push(l.clone());
            }
        }
        for ((lb, zone), node) in self.lock().iter() {
            let Some(spec) = lbs.iter().find(|l| l.name == *lb) else {
                continue;
            };
            match node.balancer.set_listeners(lb, &spec.listeners) {
                Ok((added, removed)) => {
                    tracing::info!(node = %format!("{lb}/{zone}"), ?added, ?removed, "apply: listeners changed")
                }
                Err(e) => {
                    tracing::error!(node = %format!("{lb}/{zone}"), error = %e, "apply: listeners not changed")
                }
            }
        }
    }

    /// Each node this agent runs now, with its balancer's status (its counters, and its own
    /// health checks' verdicts), keyed `(load balancer, zone)`.
    pub fn statuses(&self) -> Vec<((String, String), proxyfleet_lb::status::BalancerStatus)> {
        self.lock()
            .iter()
            .map(|(key, n)| (key.clone(), n.balancer.status()))
            .collect()
    }

    /// Takes over other zones' nodes while their zone has no live host, and hands them back.
    /// Only on a current view: an agent cut off from the store takes nothing over.
    /// `writing`: since when this agent's own renewals have gone through: a lease missing
    /// in the first two host timeouts after an outage says little (every host was cut off).
    pub async fn stand_in(
        self: Arc<Self>,
        timings: Timings,
        writing: Arc<crate::controller::WritingSince>,
    ) {
        let mut view = self.view.clone();
        let mut watching_since = UnixMillis::now();
        let mut was_connected = true;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                r = view.changed() => if r.is_err() { break },
                _ = tick.tick() => {}
                () = self.stop.cancelled() => break,
            }
            let v = view.borrow_and_update().clone();
            if !v.connected {
                was_connected = false;
                continue;
            }
            if !was_connected {
                watching_since = UnixMillis::now();
                was_connected = true;
            }
            let now = UnixMillis::now();
            // The store's verdict on each host (its liveness lease), asked now; while the
            // store does not answer nothing is taken over or handed back.
            let live = match tokio::time::timeout(LIVE_HOSTS_WAIT, self.store.live_hosts()).await {
                Ok(Ok(live)) => live,
                _ => continue,
            };
            // The stand-in for a zone without a live host: the live host with the lowest id.
            let stand_in = v.snapshot.hosts.keys().find(|h| live.contains(*h)).cloned();
            for key in self.all_nodes() {
                if key.1 == self.zone {
                    continue;
                }
                let hosts_of_zone = || v.snapshot.hosts.values().filter(|h| h.zone == key.1);
                let running = self.lock().contains_key(&key);
                if running {
                    let back = hosts_of_zone().any(|h| live.contains(&h.id));
                    let not_mine = stand_in.as_deref() != Some(self.host.as_str());
                    if back || not_mine {
                        self.stop_node(&key).await;
                    }
                } else {
                    // Not before this agent has watched for a host timeout: a zone whose
                    // agent starts a moment later than this one is not lost.
                    let renewing = writing
                        .get()
                        .is_some_and(|since| now >= since.after(timings.host_timeout * 2));
                    let watched = renewing && now >= watching_since.after(timings.host_timeout);
                    let lost = watched && !hosts_of_zone().any(|h| live.contains(&h.id));
                    if lost && stand_in.as_deref() == Some(self.host.as_str()) {
                        tracing::warn!(lb = %key.0, zone = %key.1, host = %self.host, "zone has no live host: standing in for its node");
                        if let Err(e) = self.start_node(&key.0, &key.1).await {
                            tracing::warn!(error = %e, "cannot stand in for the node yet");
                        }
                    }
                }
            }
        }
        let keys: Vec<_> = self.lock().keys().cloned().collect();
        for key in keys {
            self.stop_node(&key).await;
        }
    }
}

/// The targets every group should have, from a snapshot: all but the draining ones, each an
/// instance's with the capacity its host read from its configuration — less a place for the
/// health checks of every node of the tier but the one it is given to (which keeps a place
/// for its own, as a balancer does for each of its nodes), so that the cap each node applies
/// is the one `up`'s single balancer applies.
pub fn desired_targets(stack: &Stack, snapshot: &Snapshot) -> BTreeSet<DesiredTarget> {
    snapshot
        .targets
        .values()
        .flat_map(|t| t.values())
        .filter(|t| t.state != TargetHealth::Draining)
        .map(|t| DesiredTarget {
            group: t.target_group.clone(),
            address: t.address,
            zone: t.zone.clone(),
            capacity: t
                .instance
                .as_ref()
                .and_then(|id| snapshot.instances.get(id))
                .and_then(|i| i.capacity)
                .map(|c| {
                    let others = checking_nodes(stack, &t.target_group, &t.zone).saturating_sub(1);
                    (c as usize).saturating_sub(others).max(1)
                }),
        })
        .collect()
}

/// The nodes of the tier that health-check a target of `target_group` in `zone`: every node
/// of each load balancer that forwards to the group and has a node in that zone.
fn checking_nodes(stack: &Stack, target_group: &str, zone: &str) -> usize {
    stack
        .load_balancers
        .iter()
        .filter(|lb| lb.listeners.iter().any(|l| l.target_group == target_group))
        .filter(|lb| lb.nodes.iter().any(|n| n.zone == zone))
        .map(|lb| lb.nodes.len())
        .sum()
}

/// How often a node's flow counts are compared with what the state says of them.
const FLOWS_EVERY: Duration = Duration::from_secs(1);

/// Writes the node's flow counts per target (the target-tracking policy's reading) where they
/// differ from what the state holds for this node — which also corrects a count an earlier
/// run of the node (on this host or a stand-in's) left behind. At most once a second, and
/// nothing while the store is out of reach.
async fn report_flows(
    balancer: Arc<Balancer>,
    node: String,
    mut view: watch::Receiver<View>,
    store: Arc<dyn StateStore>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(FLOWS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let counted: BTreeMap<(String, SocketAddr), u64> = balancer
            .status()
            .targets
            .into_iter()
            .filter_map(|t| Some(((t.group, t.id.parse().ok()?), t.active_flows)))
            .collect();
        let mut changed: BTreeMap<(String, SocketAddr), Change> = BTreeMap::new();
        {
            let v = view.borrow_and_update();
            if !v.connected {
                continue;
            }
            for t in v.snapshot.targets.values().flat_map(|t| t.values()) {
                let key = (t.target_group.clone(), t.address);
                let now = counted.get(&key).copied().unwrap_or(0);
                let written = t.nodes.get(&node).map_or(0, |v| v.active_flows);
                if now != written {
                    changed.insert(
                        key,
                        Change::ReportTargetFlows {
                            target_group: t.target_group.clone(),
                            address: t.address,
                            node: node.clone(),
                            active_flows: now,
                        },
                    );
                }
            }
        }
        write_kept(&*store, &mut changed, "flow counts").await;
    }
}

async fn feed_targets(
    stack: Stack,
    mut view: watch::Receiver<View>,
    targets: watch::Sender<BTreeSet<DesiredTarget>>,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        {
            let v = view.borrow_and_update();
            // While disconnected the copy is the last one seen: keep it as it is — except
            // for a node started meanwhile (standing in while cut off from the store), whose
            // targets start as the last ones seen.
            if v.connected || std::mem::take(&mut first) {
                let wanted = desired_targets(&stack, &v.snapshot);
                targets.send_if_modified(|t| {
                    let changed = *t != wanted;
                    *t = wanted;
                    changed
                });
            }
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// Writes each node's verdicts, as one batch of whatever has come since the last write (a
/// burst of verdicts — a zone's targets all failing at once — is one write, not one each);
/// what cannot be written yet is kept (the latest per node and target) and written when the
/// store answers again.
async fn report_health(
    mut events: broadcast::Receiver<HealthEvent>,
    store: Arc<dyn StateStore>,
    stop: CancellationToken,
) {
    let mut pending: BTreeMap<(String, String, SocketAddr), Change> = BTreeMap::new();
    let mut retry = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) => keep(&mut pending, e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "health events: fell behind; later verdicts still reported");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = retry.tick() => {}
            () = stop.cancelled() => return,
        }
        // Whatever else has arrived goes into the same write.
        while let Ok(e) = events.try_recv() {
            keep(&mut pending, e);
        }
        write_kept(&*store, &mut pending, "health reports").await;
    }
}

/// Writes `pending` as one batch, and empties it. A change refused because its target is gone
/// is dropped and the rest written again; when the store does not answer, `pending` is kept
/// for the next try.
async fn write_kept<K: Ord + Clone>(
    store: &dyn StateStore,
    pending: &mut BTreeMap<K, Change>,
    what: &str,
) {
    while !pending.is_empty() {
        let keys: Vec<K> = pending.keys().cloned().collect();
        let batch: Vec<Change> = pending.values().cloned().collect();
        match store.apply(Fence::Unfenced, batch).await {
            Ok(_) => pending.clear(),
            Err(StoreError::Refused { index, .. }) => {
                pending.remove(&keys[index]);
            }
            Err(e) => {
                tracing::debug!(error = %e, kept = pending.len(), "state store: {what} kept for later");
                return;
            }
        }
    }
}

/// Keeps `e` as the latest verdict of its node on its target.
fn keep(pending: &mut BTreeMap<(String, String, SocketAddr), Change>, e: HealthEvent) {
    // Draining is the controller's to say; nodes report what they check.
    if e.to == Health::Draining {
        return;
    }
    let Ok(address) = e.target.parse::<SocketAddr>() else {
        return;
    };
    let change = Change::ReportTargetHealth {
        target_group: e.group.clone(),
        address,
        node: e.node.clone(),
        health: e.to,
        reason: e.reason.clone(),
        at: UnixMillis::from(e.at),
    };
    pending.insert((e.group, e.node, address), change);
}
