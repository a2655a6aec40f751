//! The control plane: builds nodes, listeners and target groups from their specs, runs the
//! health checks, registers and drains targets at run time, and reports status.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use proxyfleet_relay::per_source::PerSourceLimit;
use proxyfleet_relay::PipeBudget;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::discovery::{DesiredTarget, TargetSource};
use crate::events::{HealthEvent, HealthEvents};
use crate::flow::{Listener, NodeStats};
use crate::group::{Group, Target};
use crate::health::Health;
use crate::routes::{GroupView, Scope};
use crate::spec::{ListenerSpec, LoadBalancerSpec, NodeSpec, TargetGroupSpec};
use crate::status::{target_status, BalancerStatus, LbStatus, NodeStatus, TargetHealthStatus};

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("load balancer {lb}: listener {port} forwards to unknown target group '{group}'")]
    UnknownGroup {
        lb: String,
        port: u16,
        group: String,
    },
    #[error("load balancer {lb} node {zone}: cannot listen on {addr}: {source}")]
    Bind {
        lb: String,
        zone: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no target group '{0}'")]
    NoSuchGroup(String),
    #[error("target group '{group}' has no target {target}")]
    NoSuchTarget { group: String, target: String },
}

/// What the process's open-file limit lets the balancer hold at once, across all its nodes
/// (see `proxyfleet_stack::budget`): the default is no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Flows (two descriptors each); more wait in the kernel's backlog. Each node's
    /// `max_connections` still holds.
    pub flows: Option<usize>,
    /// splice(2) pipes (two descriptors each); a bulk flow that finds none copies through
    /// its buffer instead.
    pub pipes: Option<usize>,
}

/// A process's flows and splice pipes ([`Limits`]), shared by every balancer that is started
/// with it (`Clone` shares it): an agent's nodes — its own and those it stands in for — and
/// `up`'s, each its own balancer, together stay within what the open-file limit allows.
#[derive(Debug, Clone)]
pub struct ProcessBudget {
    flows: Arc<Semaphore>,
    pipes: PipeBudget,
}

impl ProcessBudget {
    pub fn new(limits: Limits) -> ProcessBudget {
        ProcessBudget {
            flows: Arc::new(Semaphore::new(
                limits
                    .flows
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            pipes: limits
                .pipes
                .map_or_else(PipeBudget::unlimited, PipeBudget::new),
        }
    }
}

/// One node of one load balancer.
struct Node {
    lb: String,
    zone: String,
    address: IpAddr,
    stats: Arc<NodeStats>,
    /// group name → this node's view of it.
    views: HashMap<String, Arc<GroupView>>,
    /// Its listeners: port, target group, and what stops that one accepting (`apply` may
    /// add and remove them while the node runs).
    listeners: std::sync::Mutex<Vec<(u16, String, CancellationToken)>>,
    /// What every listener of the node shares.
    limit: Arc<Semaphore>,
    per_source: Arc<PerSourceLimit>,
}

impl Node {
    fn ports(&self) -> Vec<(u16, String)> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(port, group, _)| (*port, group.clone()))
            .collect()
    }
}

/// Every load balancer of a stack, running.
pub struct Balancer {
    groups: HashMap<String, Arc<Group>>,
    nodes: Vec<Node>,
    specs: Vec<LoadBalancerSpec>,
    tasks: TaskTracker,
    flows: TaskTracker,
    stop: CancellationToken,
    pipes: PipeBudget,
    /// The process's flow budget (listeners added later draw on it too).
    process_limit: Arc<Semaphore>,
    events: HealthEvents,
}

impl Balancer {
    /// Binds every node's listeners and starts checking the static targets. Listening
    /// sockets are bound before anything is reported ready, so a port conflict fails here.
    pub async fn start(
        lbs: &[LoadBalancerSpec],
        groups: &[TargetGroupSpec],
    ) -> Result<Balancer, LbError> {
        Self::start_limited(lbs, groups, Limits::default()).await
    }

    /// [`Balancer::start`], holding at most what `limits` allow at once across all nodes
    /// (each node's `max_connections` still holds): what the process's open-file limit can
    /// carry beside its health checks and reserve. Connections beyond the flow limit wait in
    /// the kernel's backlog; bulk flows beyond the pipe limit are copied, not spliced.
    pub async fn start_limited(
        lbs: &[LoadBalancerSpec],
        groups: &[TargetGroupSpec],
        limits: Limits,
    ) -> Result<Balancer, LbError> {
        Self::start_nodes(lbs, groups, limits, |_, _| true).await
    }

    /// [`Balancer::start_limited`] for the nodes `runs_here` picks (by load balancer and
    /// node), the others being some other process's (an agent runs its own host's nodes
    /// only). A node still routes over every zone of its load balancer, and its checks
    /// still cover those zones' targets; a node not run here is simply absent from
    /// [`status`](Self::status) and [`listen_addrs`](Self::listen_addrs).
    pub async fn start_nodes(
        lbs: &[LoadBalancerSpec],
        groups: &[TargetGroupSpec],
        limits: Limits,
        runs_here: impl Fn(&LoadBalancerSpec, &NodeSpec) -> bool,
    ) -> Result<Balancer, LbError> {
        Self::start_sharing(lbs, groups, &ProcessBudget::new(limits), runs_here).await
    }

    /// [`Balancer::start_nodes`] within `budget`, which other balancers of this process
    /// share: together they stay within what it allows.
    pub async fn start_sharing(
        lbs: &[LoadBalancerSpec],
        groups: &[TargetGroupSpec],
        budget: &ProcessBudget,
        runs_here: impl Fn(&LoadBalancerSpec, &NodeSpec) -> bool,
    ) -> Result<Balancer, LbError> {
        let process_limit = budget.flows.clone();
        let pipes = budget.pipes.clone();
        let groups: HashMap<String, Arc<Group>> = groups
            .iter()
            .map(|g| (g.name.clone(), Arc::new(Group::new(g.clone()))))
            .collect();
        let mut balancer = Balancer {
            groups,
            nodes: Vec::new(),
            specs: lbs.to_vec(),
            tasks: TaskTracker::new(),
            flows: TaskTracker::new(),
            stop: CancellationToken::new(),
            pipes: pipes.clone(),
            process_limit: process_limit.clone(),
            events: HealthEvents::default(),
        };
        let mut bound = Vec::new();
        for lb in lbs {
            let lb_zones: Vec<String> = lb.nodes.iter().map(|n| n.zone.clone()).collect();
            for node_spec in lb.nodes.iter().filter(|n| runs_here(lb, n)) {
                let limit = Arc::new(Semaphore::new(lb.max_connections.max(1)));
                let per_source = PerSourceLimit::new(lb.max_connections_per_source);
                let mut node = Node {
                    lb: lb.name.clone(),
                    zone: node_spec.zone.clone(),
                    address: node_spec.address,
                    stats: Arc::new(NodeStats::default()),
                    views: HashMap::new(),
                    listeners: Default::default(),
                    limit: limit.clone(),
                    per_source: per_source.clone(),
                };
                for listener in &lb.listeners {
                    let group = balancer
                        .groups
                        .get(&listener.target_group)
                        .cloned()
                        .ok_or_else(|| LbError::UnknownGroup {
                            lb: lb.name.clone(),
                            port: listener.port,
                            group: listener.target_group.clone(),
                        })?;
                    let view = node
                        .views
                        .entry(group.spec.name.clone())
                        .or_insert_with(|| {
                            let scope = Scope {
                                node: format!("{}/{}", lb.name, node_spec.zone),
                                zone: node_spec.zone.clone(),
                                lb_zones: lb_zones.clone(),
                                cross_zone: lb.cross_zone,
                            };
                            Arc::new(GroupView::new(
                                group.clone(),
                                scope,
                                balancer.events.clone(),
                            ))
                        })
                        .clone();
                    let addr = SocketAddr::new(node_spec.address, listener.port);
                    let socket =
                        bind(addr, lb.bind_before_owned).map_err(|source| LbError::Bind {
                            lb: lb.name.clone(),
                            zone: node_spec.zone.clone(),
                            addr,
                            source,
                        })?;
                    let runner = Arc::new(Listener {
                        node: format!("{}/{}", lb.name, node_spec.zone),
                        source_check: listener.allowed_cidrs.clone(),
                        view,
                        stats: node.stats.clone(),
                        limit: limit.clone(),
                        process_limit: process_limit.clone(),
                        per_source: per_source.clone(),
                        idle: lb.idle_timeout,
                        pipes: pipes.clone(),
                        warnings: Default::default(),
                    });
                    let accepting = balancer.stop.child_token();
                    bound.push((runner, socket, accepting.clone()));
                    node.listeners
                        .get_mut()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((listener.port, listener.target_group.clone(), accepting));
                }
                balancer.nodes.push(node);
            }
        }
        for (runner, socket, accepting) in bound {
            balancer.tasks.spawn(runner.run(
                socket,
                balancer.flows.clone(),
                balancer.stop.clone(),
                accepting,
            ));
        }
        let statics: Vec<(String, SocketAddr, String)> = balancer
            .groups
            .values()
            .flat_map(|g| {
                g.spec
                    .targets
                    .iter()
                    .map(|t| (g.spec.name.clone(), t.address, t.zone.clone()))
            })
            .collect();
        for (group, addr, zone) in statics {
            balancer.register(&group, addr, &zone, None)?;
        }
        Ok(balancer)
    }

    /// splice(2) pipes that may still be opened (`None`: no budget).
    pub fn spare_pipes(&self) -> Option<usize> {
        self.pipes.available()
    }

    /// The listening addresses, as `(load balancer, zone, address)`.
    pub fn listen_addrs(&self) -> Vec<(String, String, SocketAddr)> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.ports().into_iter().map(|(port, _)| {
                    (
                        n.lb.clone(),
                        n.zone.clone(),
                        SocketAddr::new(n.address, port),
                    )
                })
            })
            .collect()
    }

    /// Makes load balancer `lb`'s listeners on the nodes this balancer runs those of `wanted`
    /// (`apply`): new ports are bound on every node first (any failure: nothing changes);
    /// then removed ones stop accepting while their flows run on. A listener may only go to
    /// a target group the node already serves. The ports added and removed.
    pub fn set_listeners(
        &self,
        lb: &str,
        wanted: &[ListenerSpec],
    ) -> Result<(Vec<u16>, Vec<u16>), LbError> {
        let Some(spec) = self.specs.iter().find(|s| s.name == lb) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let nodes: Vec<&Node> = self.nodes.iter().filter(|n| n.lb == lb).collect();
        let mut fresh = Vec::new();
        for node in &nodes {
            let have = node.ports();
            for listener in wanted {
                if have.iter().any(|(port, _)| *port == listener.port) {
                    continue;
                }
                let view = node
                    .views
                    .get(&listener.target_group)
                    .cloned()
                    .ok_or_else(|| LbError::UnknownGroup {
                        lb: lb.to_string(),
                        port: listener.port,
                        group: listener.target_group.clone(),
                    })?;
                let addr = SocketAddr::new(node.address, listener.port);
                let socket =
                    bind(addr, spec.bind_before_owned).map_err(|source| LbError::Bind {
                        lb: lb.to_string(),
                        zone: node.zone.clone(),
                        addr,
                        source,
                    })?;
                let runner = Arc::new(Listener {
                    node: format!("{lb}/{}", node.zone),
                    source_check: listener.allowed_cidrs.clone(),
                    view,
                    stats: node.stats.clone(),
                    limit: node.limit.clone(),
                    process_limit: self.process_limit.clone(),
                    per_source: node.per_source.clone(),
                    idle: spec.idle_timeout,
                    pipes: self.pipes.clone(),
                    warnings: Default::default(),
                });
                fresh.push((*node, listener.clone(), runner, socket));
            }
        }
        let mut added = Vec::new();
        for (node, listener, runner, socket) in fresh {
            let accepting = self.stop.child_token();
            self.tasks.spawn(runner.run(
                socket,
                self.flows.clone(),
                self.stop.clone(),
                accepting.clone(),
            ));
            node.listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((listener.port, listener.target_group.clone(), accepting));
            tracing::info!(node = %format!("{lb}/{}", node.zone), port = listener.port, group = %listener.target_group, "listener added");
            added.push(listener.port);
        }
        let mut removed = Vec::new();
        for node in &nodes {
            node.listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(port, _, accepting)| {
                    let keep = wanted.iter().any(|l| l.port == *port);
                    if !keep {
                        // Its socket closes with the accept loop; its flows run on.
                        accepting.cancel();
                        tracing::info!(node = %format!("{lb}/{}", node.zone), port, "listener removed: no new flows, open ones drain");
                        removed.push(*port);
                    }
                    keep
                });
        }
        added.dedup();
        removed.dedup();
        Ok((added, removed))
    }

    fn group(&self, name: &str) -> Result<&Arc<Group>, LbError> {
        self.groups
            .get(name)
            .ok_or_else(|| LbError::NoSuchGroup(name.to_string()))
    }

    /// The nodes that check a target of `group` in `zone`.
    fn checkers(&self, group: &str, zone: &str) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|n| {
                n.views
                    .get(group)
                    .is_some_and(|v| v.scope.lb_zones.iter().any(|z| z == zone))
            })
            .collect()
    }

    /// A registered target's own capacity became known or changed (see [`Balancer::register`]):
    /// its cap follows in place, without a new registration (which would drain it and check
    /// it from scratch).
    pub fn set_capacity(
        &self,
        group: &str,
        addr: SocketAddr,
        capacity: Option<usize>,
    ) -> Result<(), LbError> {
        let g = self.group(group)?.clone();
        let id = addr.to_string();
        let members = g.members.load();
        let Some(target) = members.find(&id) else {
            return Err(LbError::NoSuchTarget {
                group: group.to_string(),
                target: id,
            });
        };
        let cap = max_flows(&g.spec, capacity, self.checkers(group, &target.zone).len());
        target.set_max_flows(cap);
        tracing::info!(group, target = %id, max_flows = cap, "target capacity changed");
        Ok(())
    }

    /// Registers a target: every node starts checking it (from the node's own address) and
    /// routes to it once it is healthy.
    ///
    /// `capacity` is the most connections the target itself takes (an instance's own client
    /// cap); it counts when the group sets no `target_max_connections`, less one place per
    /// node whose health checks reach it, so that a target full of flows still answers its
    /// checks.
    pub fn register(
        &self,
        group: &str,
        addr: SocketAddr,
        zone: &str,
        capacity: Option<usize>,
    ) -> Result<Arc<Target>, LbError> {
        let g = self.group(group)?.clone();
        let checkers = self.checkers(group, zone);
        let max_flows = max_flows(&g.spec, capacity, checkers.len());
        let (target, added) = g.add(addr, zone, max_flows);
        if !added {
            return Ok(target);
        }
        tracing::info!(group, target = %target.id, zone, max_flows, "target registered");
        for node in &self.nodes {
            let Some(view) = node.views.get(group) else {
                continue;
            };
            view.track(&target);
            if !checkers.iter().any(|c| std::ptr::eq(*c, node)) {
                continue;
            }
            let source = g.spec.from_address.unwrap_or(node.address);
            self.tasks.spawn(check_loop(
                view.clone(),
                target.clone(),
                source,
                self.stop.clone(),
            ));
        }
        Ok(target)
    }

    /// Deregisters a target: no new flows at once; its flows continue until they end or the
    /// group's deregistration delay passes, then are closed and the target is forgotten.
    /// The returned handle finishes when that has happened.
    pub fn deregister(
        &self,
        group: &str,
        id: &str,
    ) -> Result<tokio::task::JoinHandle<()>, LbError> {
        let g = self.group(group)?.clone();
        let target = g
            .members
            .load()
            .find(id)
            .cloned()
            .ok_or_else(|| LbError::NoSuchTarget {
                group: group.to_string(),
                target: id.to_string(),
            })?;
        target.draining.store(true, Ordering::SeqCst);
        let views: Vec<Arc<GroupView>> = self
            .nodes
            .iter()
            .filter_map(|n| n.views.get(group).cloned())
            .collect();
        for view in &views {
            view.on_drain(&target);
        }
        let delay = g.tuned().deregistration_delay;
        tracing::info!(group, target = %target.id, ?delay, "target deregistered: draining");
        Ok(tokio::spawn(async move {
            let flows_ended = async {
                while target.stats.active_flows.load(Ordering::SeqCst) > 0 {
                    let ended = target.flow_ended.notified();
                    if target.stats.active_flows.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    ended.await;
                }
            };
            let early = tokio::time::timeout(delay, flows_ended).await.is_ok();
            target.gone.cancel();
            g.remove(&target);
            for view in &views {
                view.forget(&target);
            }
            tracing::info!(
                group = %g.spec.name,
                target = %target.id,
                "drained: {}",
                if early { "every flow had ended" } else { "deregistration delay over, remaining flows closed" }
            );
        }))
    }

    /// Puts the health check and deregistration delay of `spec`'s target group in force (see
    /// [`Group::retune`]); `false` if this balancer has no such group.
    pub fn retune(&self, spec: &TargetGroupSpec) -> bool {
        match self.groups.get(&spec.name) {
            Some(g) => {
                g.retune(spec);
                true
            }
            None => false,
        }
    }

    /// Keeps the targets `source` speaks for equal to its latest set (see [`discovery`]):
    /// registers new ones, deregisters (drains) missing ones. Targets registered otherwise
    /// (static ones, [`register`](Self::register) calls) are left alone. When the source
    /// ends, the last set stays registered. The task ends with the balancer.
    ///
    /// [`discovery`]: crate::discovery
    pub fn follow(self: &Arc<Self>, mut source: TargetSource) -> Following {
        let balancer = Arc::downgrade(self);
        let stop = self.stop.clone();
        let ended = CancellationToken::new();
        let on_end = ended.clone().drop_guard();
        self.tasks.spawn(async move {
            // Cancelled however the task ends (the source gone, the balancer stopped).
            let _on_end = on_end;
            let mut current: BTreeSet<DesiredTarget> = BTreeSet::new();
            loop {
                let wanted = source.borrow_and_update().clone();
                let Some(b) = balancer.upgrade() else { return };
                let delta = crate::discovery::delta(&current, &wanted);
                for t in &delta.deregister {
                    current.remove(t);
                    if let Err(e) = b.deregister(&t.group, &t.address.to_string()) {
                        tracing::debug!(error = %e, "target source: already gone");
                    }
                }
                for t in delta.recap {
                    match b.set_capacity(&t.group, t.address, t.capacity) {
                        Ok(()) => {
                            current.retain(|c| !c.same_target(&t));
                            current.insert(t);
                        }
                        Err(e) => tracing::debug!(error = %e, "target source: already gone"),
                    }
                }
                for t in delta.register {
                    match b.register(&t.group, t.address, &t.zone, t.capacity) {
                        Ok(_) => {
                            current.insert(t);
                        }
                        // Not kept in `current`: tried again on the source's next change.
                        Err(e) => tracing::error!(error = %e, "target source: cannot register"),
                    }
                }
                drop(b);
                tokio::select! {
                    changed = source.changed() => if changed.is_err() {
                        tracing::warn!(targets = current.len(), "target source ended: serving its last targets");
                        return;
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
        Following { ended }
    }

    /// Every change of a target's health on any node of this balancer, from now on.
    pub fn health_events(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    /// Every node's view of a target's health (the group controller's "lb" health check).
    pub fn target_health(&self, group: &str, id: &str) -> Vec<(String, Health)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let state = n.views.get(group)?.health_of(id)?;
                Some((format!("{}/{}", n.lb, n.zone), state.health))
            })
            .collect()
    }

    pub fn status(&self) -> BalancerStatus {
        let load_balancers = self
            .specs
            .iter()
            .map(|lb| LbStatus {
                name: lb.name.clone(),
                cross_zone: lb.cross_zone,
                nodes: self
                    .nodes
                    .iter()
                    .filter(|n| n.lb == lb.name)
                    .map(|n| NodeStatus {
                        zone: n.zone.clone(),
                        address: n.address,
                        listeners: n.ports(),
                        accepted: n.stats.accepted.load(Ordering::Relaxed),
                        active: n.stats.active.load(Ordering::Relaxed),
                        refused: n.stats.refused.load(Ordering::Relaxed),
                        failed: n.stats.failed.load(Ordering::Relaxed),
                        full: n.stats.full.load(Ordering::Relaxed),
                    })
                    .collect(),
            })
            .collect();
        let mut targets = Vec::new();
        let now = proxyfleet_state::UnixMillis::now();
        let mut names: Vec<&String> = self.groups.keys().collect();
        names.sort();
        for name in names {
            let g = &self.groups[name];
            for t in &g.members.load().targets {
                let health = self
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        let s = n.views.get(name)?.health_of(&t.id)?;
                        Some(TargetHealthStatus {
                            node: format!("{}/{}", n.lb, n.zone),
                            health: s.health,
                            reason: s.reason,
                            since: now.before(s.since.elapsed()),
                        })
                    })
                    .collect();
                targets.push(target_status(name, t, health));
            }
        }
        BalancerStatus {
            load_balancers,
            targets,
        }
    }

    /// Stops accepting, closes every flow and check, and waits for the tasks to end.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.flows.close();
        self.tasks.wait().await;
        self.flows.wait().await;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Checks one target from one node every interval until the target leaves or the balancer
/// stops.
async fn check_loop(
    view: Arc<GroupView>,
    target: Arc<Target>,
    source: IpAddr,
    stop: CancellationToken,
) {
    let mut interval = view.group.tuned().health_check.interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = target.gone.cancelled() => return,
            () = stop.cancelled() => return,
        }
        // Read every round: `apply` may change the check while the group runs.
        let tuned = view.group.tuned();
        let spec = &tuned.health_check;
        if spec.interval != interval {
            interval = spec.interval;
            tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let port = spec.port.unwrap_or(target.addr.port());
        let addr = SocketAddr::new(target.addr.ip(), port);
        let result = tokio::select! {
            r = tuned.check.probe(source, addr, spec.timeout) => r,
            () = target.gone.cancelled() => return,
            () = stop.cancelled() => return,
        };
        view.on_probe(&target, result);
    }
}

/// A listening socket with SO_REUSEADDR (restarts need not wait out TIME_WAIT), and the
/// client-side options every accepted flow needs; `freebind`: bound even while `addr` is not
/// on this host yet ([`LoadBalancerSpec::bind_before_owned`]).
fn bind(addr: SocketAddr, freebind: bool) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if freebind {
        match addr {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        }
    }
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit these from the listener: set once here, not per flow.
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&crate::connect::keepalive_params())?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// A [`Balancer::follow`] in progress.
pub struct Following {
    ended: CancellationToken,
}

impl Following {
    /// Resolves once the balancer no longer follows the source (it ended, or the balancer
    /// stopped); the targets it last registered stay.
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }
}

/// A target's cap: its group's `target_max_connections`, else its own capacity less one place
/// per node whose health checks reach it (so that a target full of flows still answers its
/// checks), else none.
fn max_flows(spec: &TargetGroupSpec, capacity: Option<usize>, checkers: usize) -> Option<u64> {
    match (spec.target_max_connections, capacity) {
        (Some(max), _) => Some(max as u64),
        (None, Some(cap)) => Some(cap.saturating_sub(checkers).max(1) as u64),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_flows_inherit_keepalive_and_nodelay_from_the_listener() {
        let listener = super::bind("127.10.9.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.keepalive().unwrap());
        assert!(sock.tcp_nodelay().unwrap());
        assert_eq!(
            sock.tcp_keepalive_time().unwrap(),
            std::time::Duration::from_secs(60)
        );
    }
}
