//! The admin API of `proxyfleet agent` (the same API, console and metrics `up` serves, in the
//! agent's state directory): [`AgentControl`] answers it from the agent's copy of the shared
//! state, its own nodes' counters and the history it follows, and turns `scale`, `terminate`
//! and marking an instance's health into requests filed in the store, which the elected
//! controller — wherever it runs — carries out.
//!
//! What one agent's API shows: the whole tier's groups, instances, targets and every node's
//! health verdicts (from the store); of the flow counters, every node's active flows per
//! target (as the nodes report them to the store, live for this agent's own nodes) but the
//! other counters only for the nodes this agent runs (other nodes show zeros: ask their
//! agents).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxyfleet_admin::view::{TierHostView, TierLeaderView, TierView};
use proxyfleet_admin::{Control, ControlError};
use proxyfleet_roles::history::Recent;
use proxyfleet_roles::nodes::NodeSet;
use proxyfleet_roles::report::TierStatus;
use proxyfleet_roles::view::View;
use proxyfleet_state::report::{
    Activity, ActivityStatus, BalancerStatus, GroupStatus, InstanceStatus, LbStatus, NodeStatus,
    TargetHealthStatus, TargetStatus,
};
use proxyfleet_state::{
    Ask, Change, Fence, Leadership, Lifecycle, Request, StateStore, TargetHealth, UnixMillis,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a call waits for the controller to carry out its request before answering 504
/// (the request stays filed and is carried out when a controller is elected).
pub const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// How often the leadership and the etcd members' health are asked (status and the console
/// read the last answers, never wait for the store).
const REFRESH: Duration = Duration::from_secs(1);

pub struct AgentControl {
    pub host: String,
    /// The stack in force and its text (`apply` replaces both).
    stack: Arc<Mutex<InForce>>,
    /// What `apply` changes: the stack the agents of this process follow (`up`); `None` for
    /// an agent across hosts, where `apply` does not change a running tier yet.
    live: Option<proxyfleet_roles::LiveStack>,
    pub store: Arc<dyn StateStore>,
    pub view: watch::Receiver<View>,
    /// The node sets this process runs (an agent's one; `up` on the roles runs one per zone).
    pub nodes: Vec<Arc<NodeSet>>,
    /// The state directory of each host this process runs, by host id: instances' own
    /// directories are under it (other hosts' are shown by host id).
    pub host_dirs: std::collections::BTreeMap<String, std::path::PathBuf>,
    pub recent: Arc<Recent>,
    /// Present the tier as `up` does: Terminated instances not shown (`up`'s
    /// group controller forgets them at once) and the activity history as scaling activities
    /// (launches, terminations, adoptions, capacity changes, with their status); otherwise as
    /// an agent: Terminated instances until the controller forgets them, and the store's log
    /// (hosts, elections, requests, verdicts) as the history.
    pub as_up: bool,
    /// Cancelled by `down`: the agent stops (its instances keep running).
    pub stop: CancellationToken,
    pub runtime: tokio::runtime::Handle,
    seen: Arc<Mutex<Seen>>,
    next_request: AtomicU64,
}

/// The stack in force, and its text.
type InForce = (Arc<proxyfleet_stack::Stack>, String);

/// What the refresher last heard from the store.
#[derive(Default)]
struct Seen {
    leader: Option<Leadership>,
    /// The hosts whose liveness lease held.
    live: std::collections::BTreeSet<String>,
    etcd: Vec<proxyfleet_state::etcd::MemberHealth>,
}

impl AgentControl {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        host: String,
        stack: proxyfleet_stack::Stack,
        stack_text: String,
        store: Arc<dyn StateStore>,
        view: watch::Receiver<View>,
        nodes: Vec<Arc<NodeSet>>,
        host_dirs: std::collections::BTreeMap<String, std::path::PathBuf>,
        recent: Arc<Recent>,
        as_up: bool,
        stop: CancellationToken,
        live: Option<proxyfleet_roles::LiveStack>,
    ) -> Arc<AgentControl> {
        let control = Arc::new(AgentControl {
            host,
            stack: Arc::new(Mutex::new((Arc::new(stack), stack_text))),
            live,
            store,
            view,
            nodes,
            host_dirs,
            recent,
            as_up,
            stop,
            runtime: tokio::runtime::Handle::current(),
            seen: Arc::default(),
            next_request: AtomicU64::new(0),
        });
        tokio::spawn(refresh(control.clone()));
        control
    }

    fn snapshot(&self) -> View {
        self.view.borrow().clone()
    }

    /// Files `ask` and waits (at most [`REQUEST_WAIT`]) for the controller to close it.
    fn request(&self, ask: Ask) -> Result<(), ControlError> {
        let now = UnixMillis::now();
        let id = format!(
            "{}-{}-{}",
            self.host,
            now.0,
            self.next_request.fetch_add(1, Ordering::Relaxed)
        );
        let request = Request {
            id: id.clone(),
            filed_by: self.host.clone(),
            at: now,
            ask: ask.clone(),
            seq: 0,
        };
        let filed = self.runtime.block_on(
            self.store
                .apply(Fence::Unfenced, vec![Change::FileRequest { request }]),
        );
        if let Err(e) = filed {
            return Err(ControlError::Unavailable(format!(
                "the tier's state store did not take the request ({ask}): {e}"
            )));
        }
        tracing::info!(request = %id, %ask, "operator request filed");
        let deadline = Instant::now() + REQUEST_WAIT;
        // Polled with a deadline: this runs on a blocking thread of the admin API.
        loop {
            match self.recent.outcome(&id) {
                Some(None) => return Ok(()),
                Some(Some(why)) => return Err(ControlError::Refused(why)),
                None if Instant::now() >= deadline => {
                    return Err(ControlError::Pending(format!(
                        "request {id} ({ask}) is filed, but no controller carried it out within \
                         {REQUEST_WAIT:?} (is one elected? see `proxyfleet status`); it will be \
                         carried out when one is"
                    )))
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// A live (Pending or InService) instance, as the API's errors name it.
    fn live_instance(&self, id: &str) -> Result<proxyfleet_state::Instance, ControlError> {
        self.snapshot()
            .snapshot
            .instances
            .get(id)
            .filter(|i| matches!(i.lifecycle, Lifecycle::Pending | Lifecycle::InService))
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("no live instance '{id}'")))
    }

    fn desired(&self, view: &View, group: &proxyfleet_stack::Group) -> u32 {
        view.snapshot
            .groups
            .get(&group.name)
            .map_or(group.desired, |g| g.desired)
    }

    /// The stack in force.
    fn stack(&self) -> Arc<proxyfleet_stack::Stack> {
        self.stack
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn group(&self, name: &str) -> Result<proxyfleet_stack::Group, ControlError> {
        self.stack()
            .group(name)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("no group '{name}'")))
    }

    /// The stack in `text`, and the plan of changing the running tier to it.
    fn plan_for(
        &self,
        text: &str,
    ) -> Result<(proxyfleet_stack::Stack, Vec<proxyfleet_stack::plan::Step>), ControlError> {
        let next = proxyfleet_stack::parse(text, std::path::Path::new("STACK"))
            .map_err(|e| ControlError::Refused(e.to_string()))?;
        // `up` runs without the stack's etcd (see `up_roles`): compared as it runs.
        let mut compared = next.clone();
        if self.as_up {
            compared.etcd = None;
        }
        let steps = proxyfleet_stack::plan::plan(&self.stack(), &compared);
        Ok((compared, steps))
    }

    fn out_of_range(g: &proxyfleet_stack::Group, desired: u32) -> ControlError {
        ControlError::Refused(format!(
            "group {}: desired {desired} is outside min {} .. max {}",
            g.name, g.min, g.max
        ))
    }
}

/// Asks the store for the live leadership and etcd for its members' health, every
/// [`REFRESH`], until the agent stops.
async fn refresh(control: Arc<AgentControl>) {
    let etcd = control
        .stack()
        .etcd
        .as_ref()
        .map(|e| proxyfleet_state::EtcdStore::new(e.endpoints.clone(), &e.prefix));
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = control.stop.cancelled() => return,
        }
        let leader = tokio::time::timeout(REFRESH, control.store.leader()).await;
        let live = tokio::time::timeout(REFRESH, control.store.live_hosts()).await;
        let members = match &etcd {
            Some(e) => e.health().await,
            None => Vec::new(),
        };
        let mut seen = control.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Unknown while the store does not answer: shown as the last answer.
        if let Ok(Ok(leader)) = leader {
            seen.leader = leader;
        }
        if let Ok(Ok(live)) = live {
            seen.live = live;
        }
        seen.etcd = members;
    }
}

fn seconds(t: UnixMillis) -> f64 {
    t.0 as f64 / 1000.0
}

/// Every port a new listener needs is free on its nodes' addresses (the nodes bind them
/// once the stack is in force; a port in use would leave that listener out): checked first,
/// so that `apply` stays all or nothing.
fn free_new_listener_ports(
    old: &proxyfleet_stack::Stack,
    next: &proxyfleet_stack::Stack,
) -> Result<(), ControlError> {
    for lb in &next.load_balancers {
        let before = old.load_balancers.iter().find(|o| o.name == lb.name);
        for listener in &lb.listeners {
            if before.is_some_and(|b| b.listeners.iter().any(|l| l.port == listener.port)) {
                continue;
            }
            for node in &lb.nodes {
                let addr = std::net::SocketAddr::new(node.address, listener.port);
                if let Err(e) = std::net::TcpListener::bind(addr) {
                    return Err(ControlError::Refused(format!(
                        "nothing applied: load balancer {} node {}: cannot listen on {addr}: {e}",
                        lb.name, node.zone
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The cloud's automatic rollback: when an instance refresh that `apply` started ends rolled
/// back, the stack in force before that `apply` is put back (unless another `apply` has
/// replaced it since), so that replacements launch from the template that worked.
async fn roll_back_if_refresh_fails(
    mut view: watch::Receiver<View>,
    in_force: Arc<Mutex<InForce>>,
    live: proxyfleet_roles::LiveStack,
    store: Arc<dyn StateStore>,
    groups: Vec<String>,
    applied: Arc<proxyfleet_stack::Stack>,
    previous: InForce,
) {
    // The refreshes are requests: they start once the controller carries them out.
    let mut started = std::collections::BTreeSet::new();
    let begun = std::time::Instant::now();
    loop {
        let snapshot = view.borrow_and_update().snapshot.clone();
        for g in &groups {
            if snapshot.groups.get(g).is_some_and(|s| s.refresh.is_some()) {
                started.insert(g.clone());
            }
        }
        let running = groups
            .iter()
            .any(|g| snapshot.groups.get(g).is_some_and(|s| s.refresh.is_some()));
        if started.is_empty() && begun.elapsed() > Duration::from_secs(60) {
            return;
        }
        if !started.is_empty() && !running {
            let rolled_back = started.iter().find(|g| {
                snapshot.groups.get(*g).is_some_and(|s| {
                    s.last_refresh
                        .as_deref()
                        .is_some_and(|o| o.starts_with("rolled back"))
                })
            });
            let Some(group) = rolled_back else { return };
            {
                let mut now = in_force.lock().unwrap_or_else(|p| p.into_inner());
                if !Arc::ptr_eq(&now.0, &applied) {
                    return;
                }
                *now = previous.clone();
            }
            live.set((*previous.0).clone());
            tracing::warn!(
                group,
                "instance refresh rolled back: the stack before the apply is in force again"
            );
            let changes = groups
                .iter()
                .map(|g| proxyfleet_state::Change::StackApplied {
                    group: g.clone(),
                    summary: format!(
                        "the instance refresh of {group} rolled back, so the stack in force before the apply is again (its launch template included)"
                    ),
                    at: UnixMillis::now(),
                })
                .collect();
            let _ = store
                .apply(proxyfleet_state::Fence::Unfenced, changes)
                .await;
            return;
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// An instance refresh's progress, for status: how many of the group's instances still run
/// from before it began.
fn refresh_progress(snapshot: &proxyfleet_state::Snapshot, group: &str) -> Option<String> {
    let refresh = snapshot.groups.get(group)?.refresh.as_ref()?;
    let live: Vec<_> = snapshot
        .instances
        .values()
        .filter(|i| i.group == group)
        .filter(|i| matches!(i.lifecycle, Lifecycle::Pending | Lifecycle::InService))
        .collect();
    let old = live
        .iter()
        .filter(|i| i.launched_at < refresh.started_at)
        .count();
    Some(format!(
        "instance refresh in progress: {old} old instance(s) left, {} new (min healthy {} %)",
        live.len() - old,
        refresh.min_healthy_percentage
    ))
}

impl Control for AgentControl {
    fn stack_text(&self) -> String {
        self.stack
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn refresh(
        &self,
        group: &str,
        cancel: bool,
        min_healthy_percentage: u32,
    ) -> Result<(), ControlError> {
        self.group(group)?;
        let refreshing = self
            .snapshot()
            .snapshot
            .groups
            .get(group)
            .is_some_and(|g| g.refresh.is_some());
        match (cancel, refreshing) {
            (true, false) => Err(ControlError::Refused(format!(
                "group {group}: no instance refresh is in progress"
            ))),
            (false, true) => Err(ControlError::Refused(format!(
                "group {group}: an instance refresh is in progress (--cancel ends it)"
            ))),
            (true, true) => self.request(Ask::CancelRefresh {
                group: group.to_string(),
            }),
            (false, false) => self.request(Ask::Refresh {
                group: group.to_string(),
                min_healthy_percentage,
            }),
        }
    }

    fn plan(&self, text: &str) -> Result<Vec<proxyfleet_stack::plan::Step>, ControlError> {
        Ok(self.plan_for(text)?.1)
    }

    fn apply(&self, text: &str) -> Result<Vec<proxyfleet_stack::plan::Step>, ControlError> {
        let Some(live) = &self.live else {
            return Err(ControlError::Refused(
                "this tier's agents run on separate hosts: apply does not change such a tier while it runs yet (change the stack file on every host and restart the agents one at a time)".into(),
            ));
        };
        let (next, steps) = self.plan_for(text)?;
        if !proxyfleet_stack::plan::applicable(&steps) {
            let refused: Vec<String> = steps
                .iter()
                .filter(|s| matches!(s.cost, proxyfleet_stack::plan::Cost::NotWhileRunning(_)))
                .map(ToString::to_string)
                .collect();
            return Err(ControlError::Refused(format!(
                "nothing applied: {}",
                refused.join("; ")
            )));
        }
        if steps.is_empty() {
            return Ok(steps);
        }
        free_new_listener_ports(&self.stack(), &next)?;
        let previous = self.stack.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let old = previous.0.clone();
        let applied = Arc::new(next.clone());
        *self.stack.lock().unwrap_or_else(|p| p.into_inner()) = (applied.clone(), text.to_string());
        live.set(next.clone());
        tracing::info!(
            changes = steps.len(),
            "apply: the running tier follows the new stack"
        );
        let summary: Vec<String> = steps.iter().map(ToString::to_string).collect();
        let at = UnixMillis::now();
        let changes = next
            .groups
            .iter()
            .map(|g| proxyfleet_state::Change::StackApplied {
                group: g.name.clone(),
                summary: summary.join("; "),
                at,
            })
            .collect();
        let store = self.store.clone();
        if let Err(e) = self.runtime.block_on(async move {
            store
                .apply(proxyfleet_state::Fence::Unfenced, changes)
                .await
        }) {
            tracing::warn!(error = %e, "apply: cannot record the change in the activity history");
        }
        // A template that changes more than its files rolls through its groups.
        let mut refreshed = Vec::new();
        for group in proxyfleet_stack::plan::refreshed_groups(&old, &next) {
            match self.refresh(&group, false, 90) {
                Ok(()) => refreshed.push(group),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "apply: the instance refresh did not start")
                }
            }
        }
        if !refreshed.is_empty() {
            self.runtime.spawn(roll_back_if_refresh_fails(
                self.view.clone(),
                self.stack.clone(),
                live.clone(),
                self.store.clone(),
                refreshed,
                applied,
                previous,
            ));
        }
        // A desired capacity the new stack changes is set as `scale` would (within the new
        // bounds, which the controller defines first).
        for g in &next.groups {
            let before = old.group(&g.name).map(|o| o.desired);
            if before.is_some_and(|d| d != g.desired) {
                self.request(Ask::Scale {
                    group: g.name.clone(),
                    desired: g.desired,
                })?;
            }
        }
        Ok(steps)
    }

    fn balancer(&self) -> BalancerStatus {
        let view = self.snapshot();
        let local: Vec<_> = self.nodes.iter().flat_map(|n| n.statuses()).collect();
        let local_node = |lb: &str, zone: &str| {
            local
                .iter()
                .filter(|((l, z), _)| l == lb && z == zone)
                .flat_map(|(_, s)| &s.load_balancers)
                .filter(|s| s.name == lb)
                .flat_map(|s| &s.nodes)
                .find(|n| n.zone == zone)
                .cloned()
        };
        let load_balancers = self
            .stack()
            .load_balancers
            .iter()
            .map(|lb| LbStatus {
                name: lb.name.clone(),
                cross_zone: lb.cross_zone,
                nodes: lb
                    .nodes
                    .iter()
                    .map(|n| {
                        local_node(&lb.name, &n.zone).unwrap_or_else(|| NodeStatus {
                            zone: n.zone.clone(),
                            address: n.address,
                            listeners: lb
                                .listeners
                                .iter()
                                .map(|l| (l.port, l.target_group.clone()))
                                .collect(),
                            accepted: 0,
                            active: 0,
                            refused: 0,
                            failed: 0,
                            full: 0,
                        })
                    })
                    .collect(),
            })
            .collect();
        let local_names: std::collections::BTreeSet<String> = local
            .iter()
            .map(|((lb, zone), _)| format!("{lb}/{zone}"))
            .collect();
        let mut targets = Vec::new();
        for (tg, members) in &view.snapshot.targets {
            for t in members.values() {
                let id = t.address.to_string();
                let mut status = TargetStatus {
                    group: tg.clone(),
                    id: id.clone(),
                    zone: t.zone.clone(),
                    draining: t.state == TargetHealth::Draining,
                    health: t
                        .nodes
                        .iter()
                        .map(|(node, v)| TargetHealthStatus {
                            node: node.clone(),
                            health: v.health,
                            reason: v.reason.clone(),
                            since: v.since,
                        })
                        .collect(),
                    // Other nodes' flows as they last reported them (the target-tracking
                    // reading); this agent's own nodes' are added live below.
                    active_flows: t
                        .nodes
                        .iter()
                        .filter(|(node, _)| !local_names.contains(node.as_str()))
                        .map(|(_, v)| v.active_flows)
                        .sum(),
                    new_flows: 0,
                    bytes_to_target: 0,
                    bytes_to_client: 0,
                    connect_failures: 0,
                    health_transitions: 0,
                    max_flows: None,
                    skipped_full: 0,
                    checks_not_run: 0,
                };
                // This agent's nodes' counters for it.
                for (_, s) in &local {
                    for l in s.targets.iter().filter(|l| &l.group == tg && l.id == id) {
                        status.active_flows += l.active_flows;
                        status.new_flows += l.new_flows;
                        status.bytes_to_target += l.bytes_to_target;
                        status.bytes_to_client += l.bytes_to_client;
                        status.connect_failures += l.connect_failures;
                        status.health_transitions += l.health_transitions;
                        status.skipped_full += l.skipped_full;
                        status.checks_not_run += l.checks_not_run;
                        status.max_flows = status.max_flows.or(l.max_flows);
                    }
                }
                targets.push(status);
            }
        }
        BalancerStatus {
            load_balancers,
            targets,
        }
    }

    fn groups(&self) -> Vec<GroupStatus> {
        let view = self.snapshot();
        self.stack()
            .groups
            .iter()
            .map(|g| GroupStatus {
                name: g.name.clone(),
                min: g.min,
                max: g.max,
                desired: self.desired(&view, g),
                zones: g.zones.clone(),
                instances: view
                    .snapshot
                    .instances
                    .values()
                    .filter(|i| i.group == g.name)
                    .filter(|i| !self.as_up || i.lifecycle != Lifecycle::Terminated)
                    .map(|i| InstanceStatus {
                        id: i.id.clone(),
                        group: i.group.clone(),
                        zone: i.zone.clone(),
                        address: i.address,
                        port: i.port,
                        pid: i.process.map_or(0, |p| p.pid),
                        start_ticks: i.process.map_or(0, |p| p.start_ticks),
                        lifecycle: i.lifecycle,
                        health: i.health,
                        reason: i.reason.clone(),
                        launched_at: seconds(i.launched_at),
                        // On its host, under that agent's state directory.
                        dir: match i.host.as_ref().and_then(|h| self.host_dirs.get(h)) {
                            Some(dir) => dir.join("instances").join(&i.id).display().to_string(),
                            None => i.host.clone().unwrap_or_default(),
                        },
                        protected: i.protected,
                    })
                    .collect(),
                backoff_seconds: proxyfleet_roles::decide::launch_backoff(&view.snapshot, &g.name)
                    .next_at
                    .and_then(|at| at.0.checked_sub(UnixMillis::now().0))
                    .map(|ms| ms as f64 / 1000.0),
                replacements_held: view
                    .snapshot
                    .groups
                    .get(&g.name)
                    .and_then(|s| s.replacements_held.clone()),
                refresh: refresh_progress(&view.snapshot, &g.name),
            })
            .collect()
    }

    fn activities(&self, group: Option<&str>, limit: usize) -> Vec<Activity> {
        if self.as_up {
            return self.recent.scaling_activities(group, limit);
        }
        self.recent
            .lines(group, limit)
            .into_iter()
            .map(|(g, a)| {
                let at = a.at.map(seconds).unwrap_or_default();
                Activity {
                    id: a.revision as i64,
                    group: g.unwrap_or_default(),
                    description: a.description,
                    cause: a.cause,
                    status: ActivityStatus::Successful,
                    start: at,
                    end: Some(at),
                }
            })
            .collect()
    }

    fn scale(&self, group: &str, desired: u32) -> Result<(), ControlError> {
        let g = self.group(group)?;
        if !(g.min..=g.max).contains(&desired) {
            return Err(Self::out_of_range(&g, desired));
        }
        self.request(Ask::Scale {
            group: group.to_string(),
            desired,
        })
    }

    fn terminate(&self, instance: &str, decrement_desired: bool) -> Result<(), ControlError> {
        let i = self.live_instance(instance)?;
        if decrement_desired {
            let g = self.group(&i.group)?;
            let desired = self.desired(&self.snapshot(), &g);
            if desired <= g.min {
                return Err(Self::out_of_range(&g, desired.saturating_sub(1)));
            }
        }
        self.request(Ask::Terminate {
            instance: instance.to_string(),
            decrement_desired,
        })
    }

    fn set_instance_health(&self, instance: &str, healthy: bool) -> Result<(), ControlError> {
        self.live_instance(instance)?;
        self.request(Ask::SetHealth {
            instance: instance.to_string(),
            healthy,
        })
    }

    fn shutdown(&self) {
        self.stop.cancel();
    }

    fn tier(&self) -> Option<TierView> {
        let view = self.snapshot();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let status = TierStatus::build(
            &view.snapshot,
            view.revision,
            seen.leader.as_ref(),
            &seen.live,
            UnixMillis::now(),
        );
        let nodes_of = |host: &str| -> Vec<String> {
            self.nodes
                .iter()
                .filter(|n| n.host() == host)
                .flat_map(|n| n.statuses())
                .map(|((lb, zone), _)| format!("{lb}/{zone}"))
                .collect()
        };
        Some(TierView {
            this_host: self.host.clone(),
            store: if self.stack().etcd.is_some() {
                "etcd"
            } else {
                "sqlite"
            }
            .to_string(),
            revision: view.revision.0,
            connected: view.connected,
            leader: status.leader.map(|l| TierLeaderView {
                host: l.host,
                term: l.term,
                lease_ms: l.lease_ms,
            }),
            hosts: status
                .hosts
                .into_iter()
                .map(|h| TierHostView {
                    nodes: nodes_of(&h.id),
                    id: h.id,
                    zone: h.zone,
                    address: h.address,
                    roles: h.roles,
                    live: h.live,
                    announced_ms_ago: h.announced_ms_ago,
                })
                .collect(),
            etcd: seen.etcd.iter().map(crate::tier::member_view).collect(),
        })
    }
}
