//! What the elected controller writes, decided from a snapshot alone: pure, so every rule is
//! unit-tested without processes, sockets or a store.
//!
//! One pass returns one batch, written under the leadership's fence (a stale leader's batch is
//! refused whole):
//! - groups the stack defines and the state lacks (or whose bounds changed);
//! - operators' requests (scale, terminate, mark health), carried out and closed in filing
//!   order — or closed as refused, saying why, when the state no longer allows them;
//! - instances on a host whose liveness lease lapsed (and that no node of a live host sees
//!   healthy): Terminated (cause `HostLost`), targets
//!   drained — there is no agent left to stop them; its returning agent stops them;
//! - Pending instances no host has been given: a live host of their zone;
//! - InService instances: registered with their group's target groups; with
//!   `health_check_type: lb`, past the grace period, unhealthy when a target group's nodes all
//!   find them unhealthy, healthy again when they no longer do;
//! - replacements and capacity by the group controller's own pure planner
//!   (`proxyfleet_group::planner`, the rules `up` runs: target tracking and its cooldowns, the
//!   no-cascade rule, least populated zone, lowest free address, newest of the most populated
//!   zone on scale-in) — target tracking on the flows the nodes report ([`Change::ReportTargetFlows`],
//!   summed over the nodes) and cooldowns kept in the group's state — with launches
//!   only in zones that have a live host, and none in the first host timeout after the store
//!   began taking the controller's writes, which gives every host the time to announce itself;
//! - launch back-off, from the state alone ([`launch_backoff`]): launches that failed in a row (never
//!   served: their process ended or they timed out) pace the next ones, one at a time, after
//!   1, 2, 4 … 16, then 30 s, as `up` does;
//! - clean-up: drained targets removed after their deregistration delay; Terminated instances
//!   forgotten once they have no target left and `forget_after` has passed (failed launches
//!   after [`FAILED_LAUNCH_KEPT`]: the back-off counts them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proxyfleet_stack::{HealthCheckType, Stack};
use proxyfleet_state::{
    Ask, Cause, Change, Group, Instance, InstanceHealth, Lifecycle, Request, Snapshot,
    TargetHealth, UnixMillis, UserRequest,
};

/// The controller's timings.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The hosts' liveness lease: a host that does not renew it within this is lost
    /// (etcd counts whole seconds: rounded up there).
    pub host_timeout: Duration,
    /// How long a Pending instance may take to serve.
    pub launch_timeout: Duration,
    /// How long a Terminated instance stays visible (status, console) before it is forgotten.
    pub forget_after: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            host_timeout: Duration::from_secs(1),
            launch_timeout: Duration::from_secs(30),
            forget_after: Duration::from_secs(60),
        }
    }
}

/// How long a failed launch stays in the state: status shows it, and the launch back-off
/// counts it (long enough for the longest back-off several times over).
pub const FAILED_LAUNCH_KEPT: Duration = Duration::from_secs(300);

/// Whether `i` is a launch that failed: it never served, and its process ended or it timed out.
fn failed_launch(i: &Instance) -> bool {
    i.in_service_at.is_none()
        && matches!(
            i.reason,
            Some(Cause::ProcessExited { .. } | Cause::LaunchFailed { .. })
        )
        && (i.lifecycle >= Lifecycle::Terminating || i.health == InstanceHealth::Unhealthy)
}

/// The group's launch back-off from the state alone: the launches that failed in a row,
/// newest first, back to the newest one that served; no launch before the newest failure
/// plus `up`'s back-off for that many (1, 2, 4 … 16, then 30 s).
/// Whether some node has found `i` healthy in every target group of `g` (since each
/// registration); a target no node serves (Unused) cannot be judged and holds nothing back.
fn passed_lb_health(snapshot: &Snapshot, g: &proxyfleet_stack::Group, i: &Instance) -> bool {
    g.target_groups.iter().all(|tg| {
        snapshot
            .target(tg, i.target_address())
            .is_some_and(|t| t.ever_healthy || t.state == TargetHealth::Unused)
    })
}

pub fn launch_backoff(snapshot: &Snapshot, group: &str) -> proxyfleet_group::planner::Launches {
    let mut of_group: Vec<&Instance> = snapshot
        .instances
        .values()
        .filter(|i| i.group == group)
        .collect();
    of_group.sort_by_key(|i| std::cmp::Reverse(i.launched_at));
    let mut failures = 0;
    let mut newest_failure: Option<UnixMillis> = None;
    for i in of_group {
        if i.in_service_at.is_some() {
            break;
        }
        if failed_launch(i) {
            failures += 1;
            newest_failure = Some(newest_failure.map_or(i.since, |t| t.max(i.since)));
        }
    }
    proxyfleet_group::planner::Launches {
        failures,
        next_at: newest_failure.map(|t| t.after(proxyfleet_group::instance::backoff_for(failures))),
    }
}

/// One pass: the batch the controller writes (empty when nothing is to be done).
/// `live`: the hosts whose liveness lease holds (the store's verdict); `watching_since`:
/// since when the store has taken this controller's writes without a break (no launch in
/// the first host timeout of it, so every host has had the time to announce itself).
pub fn decide(
    stack: &Stack,
    snapshot: &Snapshot,
    live: &BTreeSet<String>,
    now: UnixMillis,
    t: &Timings,
    watching_since: UnixMillis,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Change> {
    let mut pass = Pass::new(stack, snapshot, live, now, t, watching_since);
    pass.define_groups();
    pass.lose_instances_of_dead_hosts();
    pass.carry_out_requests();
    pass.assign_pending();
    pass.end_failed_launches();
    for g in &stack.groups {
        pass.register_and_judge(g);
        pass.plan_group(g, new_id);
    }
    pass.clean_up();
    pass.out
}

/// The tier is stopping (`up` on the roles, stopping as `up` does): every instance taken out
/// of service (cause `Shutdown`, its targets drained; its host stops it once they have
/// drained), nothing launched or replaced, operators' requests closed as refused. Pure, like
/// [`decide`]; one pass after another until every instance is Terminated.
pub fn wind_down(stack: &Stack, snapshot: &Snapshot, now: UnixMillis, t: &Timings) -> Vec<Change> {
    let live = BTreeSet::new();
    let mut pass = Pass::new(stack, snapshot, &live, now, t, now);
    let mut requests: Vec<&Request> = snapshot.requests.values().collect();
    requests.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    for r in requests {
        pass.out.push(Change::CloseRequest {
            id: r.id.clone(),
            refused: Some("the tier is stopping".to_string()),
        });
    }
    for i in snapshot.live_instances() {
        if i.lifecycle >= Lifecycle::Terminating {
            continue;
        }
        if i.host.is_none() {
            // Never given to a host: nothing runs to be stopped.
            pass.terminated.insert(i.id.clone());
            pass.out.push(Change::ReportLifecycle {
                instance: i.id.clone(),
                lifecycle: Lifecycle::Terminated,
                cause: Some(Cause::Shutdown),
                at: now,
            });
        } else {
            pass.terminate(i, Cause::Shutdown);
        }
    }
    pass.clean_up();
    pass.out
}

struct Pass<'a> {
    stack: &'a Stack,
    snapshot: &'a Snapshot,
    live: &'a BTreeSet<String>,
    now: UnixMillis,
    t: &'a Timings,
    watching_since: UnixMillis,
    out: Vec<Change>,
    /// Instances this pass takes out of service (no longer counted as live).
    terminated: BTreeSet<String>,
    /// Targets this pass drains.
    drained: BTreeSet<(String, SocketAddr)>,
    /// Addresses of the instances this pass creates.
    created: BTreeSet<IpAddr>,
    /// Verdicts this pass reached (`Some`: unhealthy, `None`: healthy again).
    judged: BTreeMap<String, Option<Cause>>,
    /// Desired capacities this pass set.
    desired_now: BTreeMap<String, u32>,
    /// Instance refreshes started and ended in this pass.
    refreshes_started: BTreeSet<String>,
    refreshes_ended: BTreeSet<String>,
}

impl<'a> Pass<'a> {
    fn new(
        stack: &'a Stack,
        snapshot: &'a Snapshot,
        live: &'a BTreeSet<String>,
        now: UnixMillis,
        t: &'a Timings,
        watching_since: UnixMillis,
    ) -> Pass<'a> {
        Pass {
            stack,
            snapshot,
            live,
            now,
            t,
            watching_since,
            out: Vec::new(),
            terminated: BTreeSet::new(),
            drained: BTreeSet::new(),
            created: BTreeSet::new(),
            judged: BTreeMap::new(),
            desired_now: BTreeMap::new(),
            refreshes_started: BTreeSet::new(),
            refreshes_ended: BTreeSet::new(),
        }
    }

    fn define_groups(&mut self) {
        for g in &self.stack.groups {
            let current = self.snapshot.groups.get(&g.name);
            if current.is_some_and(|c| c.min == g.min && c.max == g.max) {
                continue;
            }
            let desired = current.map_or(g.desired, |c| c.desired.clamp(g.min, g.max));
            self.out.push(Change::DefineGroup {
                group: Group::new(&g.name, g.min, g.max, desired),
            });
        }
    }

    fn desired(&self, group: &str) -> u32 {
        if let Some(d) = self.desired_now.get(group) {
            return *d;
        }
        match (self.snapshot.groups.get(group), self.stack.group(group)) {
            (Some(g), Some(spec)) => g.desired.clamp(spec.min, spec.max),
            (None, Some(spec)) => spec.desired,
            _ => 0,
        }
    }

    fn live_hosts_in(&self, zone: &str) -> Vec<&str> {
        self.snapshot
            .hosts
            .values()
            .filter(|h| h.zone == zone && self.live.contains(&h.id))
            .map(|h| h.id.as_str())
            .collect()
    }

    /// Drains every target of `instance` not already draining.
    fn drain_targets_of(&mut self, instance: &str) {
        for (tg, targets) in &self.snapshot.targets {
            for target in targets.values() {
                if target.instance.as_deref() == Some(instance)
                    && target.state != TargetHealth::Draining
                    && self.drained.insert((tg.clone(), target.address))
                {
                    self.out.push(Change::DrainTarget {
                        target_group: tg.clone(),
                        address: target.address,
                        at: self.now,
                    });
                }
            }
        }
    }

    /// The group's instance refresh in progress (not one ended in this pass).
    fn refresh_of(&self, group: &str) -> Option<proxyfleet_state::Refresh> {
        if self.refreshes_ended.contains(group) {
            return None;
        }
        self.snapshot.groups.get(group)?.refresh.clone()
    }

    fn end_refresh(&mut self, group: &str, outcome: String) {
        tracing::info!(group, outcome, "instance refresh ended");
        self.refreshes_ended.insert(group.to_string());
        self.out.push(Change::SetRefresh {
            group: group.to_string(),
            refresh: None,
            outcome,
            at: self.now,
        });
    }

    /// One step of `g`'s instance refresh, if one runs; the instances the group may run above
    /// its desired capacity meanwhile (one: the new instance launched before an old one
    /// goes). An old instance (launched before the refresh began) is taken out of service
    /// only once every new one has passed the load balancer's health checks and served for
    /// the warm-up (the group's grace period), and never below `min_healthy_percentage` of
    /// the desired capacity in service. A new instance that fails (unhealthy, or its launch
    /// failed) ends the refresh as rolled back: the new instances that failed go, the old
    /// ones keep serving.
    fn refresh_step(&mut self, g: &proxyfleet_stack::Group) -> u32 {
        let Some(refresh) = self.refresh_of(&g.name) else {
            return 0;
        };
        let started = refresh.started_at;
        let of_group: Vec<&Instance> = self
            .snapshot
            .instances
            .values()
            .filter(|i| i.group == g.name)
            .collect();
        let failed = of_group.iter().find(|i| {
            i.launched_at >= started
                && (i.health == InstanceHealth::Unhealthy
                    || matches!(i.reason, Some(Cause::LaunchFailed { .. })))
                && !matches!(
                    i.reason,
                    Some(
                        Cause::InstanceRefresh
                            | Cause::User(_)
                            | Cause::Shutdown
                            | Cause::HostLost { .. }
                            | Cause::ControllerStopping
                    )
                )
        });
        if let Some(i) = failed {
            let why = i
                .reason
                .as_ref()
                .map_or_else(|| "unhealthy".to_string(), ToString::to_string);
            let failed_new: Vec<Instance> = of_group
                .iter()
                .filter(|n| n.launched_at >= started && n.health == InstanceHealth::Unhealthy)
                .filter(|n| matches!(n.lifecycle, Lifecycle::Pending | Lifecycle::InService))
                .map(|n| (*n).clone())
                .collect();
            self.end_refresh(
                &g.name,
                format!(
                    "rolled back: new instance {} failed ({why}); the old instances keep serving",
                    i.id
                ),
            );
            for n in failed_new {
                let cause = n.reason.clone().unwrap_or(Cause::InstanceRefresh);
                self.terminate(&n, cause);
            }
            return 0;
        }
        let live = |i: &&&Instance| {
            matches!(i.lifecycle, Lifecycle::Pending | Lifecycle::InService)
                && !self.terminated.contains(&i.id)
        };
        let old: Vec<&Instance> = of_group
            .iter()
            .filter(live)
            .filter(|i| i.launched_at < started)
            .copied()
            .collect();
        if old.is_empty() {
            self.end_refresh(
                &g.name,
                "successful: every instance runs the launch template in force".into(),
            );
            return 0;
        }
        let warmup = g.grace_period;
        let new: Vec<&Instance> = of_group
            .iter()
            .filter(live)
            .filter(|i| i.launched_at >= started)
            .copied()
            .collect();
        let proven = |i: &Instance| {
            i.lifecycle == Lifecycle::InService
                && i.health == InstanceHealth::Healthy
                && passed_lb_health(self.snapshot, g, i)
                && i.in_service_at
                    .is_some_and(|at| at.after(warmup) <= self.now)
        };
        let desired = self.desired(&g.name);
        let serving = old.len() + new.len();
        let in_service_after = (serving - 1) as u64;
        let floor = (u64::from(desired) * u64::from(refresh.min_healthy_percentage)).div_ceil(100);
        let leaving = of_group.iter().any(|i| {
            i.lifecycle == Lifecycle::Terminating && i.reason == Some(Cause::InstanceRefresh)
        });
        if new.iter().all(|i| proven(i))
            && serving > desired as usize
            && in_service_after >= floor
            && !leaving
        {
            // The oldest old instance goes; its replacement is already serving.
            if let Some(victim) = old.iter().min_by_key(|i| i.launched_at) {
                let victim = (*victim).clone();
                self.terminate(&victim, Cause::InstanceRefresh);
            }
            // That was the last: no further new instance.
            if old.len() == 1 {
                return 0;
            }
        }
        1
    }

    fn terminate(&mut self, instance: &Instance, cause: Cause) {
        if !self.terminated.insert(instance.id.clone()) {
            return;
        }
        self.drain_targets_of(&instance.id);
        self.out.push(Change::ReportLifecycle {
            instance: instance.id.clone(),
            lifecycle: Lifecycle::Terminating,
            cause: Some(cause),
            at: self.now,
        });
    }

    /// A host whose lease is missing is written off — but not in the first two host
    /// timeouts after this controller's own renewals resumed (an outage of the store, or of
    /// this host's path to it): the other hosts were cut off too, and need a moment to renew
    /// or, finding their lease lapsed, hold a new one.
    fn lose_instances_of_dead_hosts(&mut self) {
        if self.now < self.watching_since.after(self.t.host_timeout * 2) {
            return;
        }
        // Across hosts, the nodes live hosts hold check every instance: one they see healthy
        // is serving, whatever its agent does (an agent restarting, say), and is left alone
        // until they see it fail (a dead host's instance, within a few health checks).
        let watching: BTreeSet<&str> = self
            .snapshot
            .hosts
            .values()
            .filter(|h| self.live.contains(&h.id))
            .flat_map(|h| h.nodes.iter())
            .filter(|(_, hold)| **hold == proxyfleet_state::NodeHold::Holding)
            .map(|(node, _)| node.as_str())
            .collect();
        for i in self.snapshot.live_instances() {
            let Some(host) = &i.host else { continue };
            if self.live.contains(host) || self.seen_serving(&i.id, &watching) {
                continue;
            }
            self.terminated.insert(i.id.clone());
            self.drain_targets_of(&i.id);
            self.out.push(Change::ReportLifecycle {
                instance: i.id.clone(),
                lifecycle: Lifecycle::Terminated,
                cause: Some(Cause::HostLost { host: host.clone() }),
                at: self.now,
            });
        }
    }

    /// Whether one of `nodes` sees a target of `instance` healthy.
    fn seen_serving(&self, instance: &str, nodes: &BTreeSet<&str>) -> bool {
        self.snapshot
            .targets
            .values()
            .flat_map(|t| t.values())
            .filter(|t| t.instance.as_deref() == Some(instance))
            .any(|t| {
                t.nodes.iter().any(|(node, view)| {
                    nodes.contains(node.as_str()) && view.health == TargetHealth::Healthy
                })
            })
    }

    fn set_desired(&mut self, group: &str, desired: u32, cause: Cause) {
        self.desired_now.insert(group.to_string(), desired);
        self.out.push(Change::SetDesired {
            group: group.to_string(),
            desired,
            cause,
            at: Some(self.now),
        });
    }

    fn carry_out_requests(&mut self) {
        let mut requests: Vec<&Request> = self.snapshot.requests.values().collect();
        requests.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        for r in requests {
            let refused = self.carry_out(&r.ask).err();
            if let Some(why) = &refused {
                tracing::warn!(request = %r.id, ask = %r.ask, why, "operator request refused");
            }
            self.out.push(Change::CloseRequest {
                id: r.id.clone(),
                refused,
            });
        }
    }

    /// One request; `Err`: why it cannot be done now (the API checked it when it was filed,
    /// but the state may have moved on since).
    fn carry_out(&mut self, ask: &Ask) -> Result<(), String> {
        match ask {
            Ask::Scale { group, desired } => {
                let g = self.group_bounds(group)?;
                if !(g.min..=g.max).contains(desired) {
                    return Err(format!(
                        "group {group}: desired {desired} is outside min {} .. max {}",
                        g.min, g.max
                    ));
                }
                self.set_desired(group, *desired, Cause::User(UserRequest::Scale));
            }
            Ask::Terminate {
                instance,
                decrement_desired,
            } => {
                let i = self.serving_instance(instance)?;
                let cause = Cause::User(UserRequest::Terminate {
                    decrement_desired: *decrement_desired,
                });
                if *decrement_desired {
                    let g = self.group_bounds(&i.group)?;
                    let desired = self.desired(&i.group);
                    if desired <= g.min {
                        return Err(format!(
                            "group {}: desired {} is outside min {} .. max {}",
                            i.group,
                            desired.saturating_sub(1),
                            g.min,
                            g.max
                        ));
                    }
                    self.set_desired(&i.group, desired - 1, cause.clone());
                }
                self.terminate(i, cause);
            }
            Ask::Refresh {
                group,
                min_healthy_percentage,
            } => {
                self.group_bounds(group)?;
                if self.refresh_of(group).is_some() || self.refreshes_started.contains(group) {
                    return Err(format!("group {group}: an instance refresh is in progress"));
                }
                self.out.push(Change::SetRefresh {
                    group: group.clone(),
                    refresh: Some(proxyfleet_state::Refresh {
                        started_at: self.now,
                        min_healthy_percentage: *min_healthy_percentage,
                    }),
                    outcome: format!(
                        "an operator asked; every instance launched before now is replaced, one at a time, never fewer than {min_healthy_percentage} % of the desired capacity in service"
                    ),
                    at: self.now,
                });
                self.refreshes_started.insert(group.clone());
            }
            Ask::CancelRefresh { group } => {
                if self.refresh_of(group).is_none() {
                    return Err(format!("group {group}: no instance refresh is in progress"));
                }
                self.end_refresh(
                    group,
                    "cancelled by an operator: the instances replaced so far stay".into(),
                );
            }
            Ask::SetHealth { instance, healthy } => {
                let i = self.serving_instance(instance)?;
                let (health, cause) = if *healthy {
                    (InstanceHealth::Healthy, None)
                } else {
                    (
                        InstanceHealth::Unhealthy,
                        Some(Cause::User(UserRequest::MarkUnhealthy)),
                    )
                };
                self.judged.insert(i.id.clone(), cause.clone());
                self.out.push(Change::ReportInstanceHealth {
                    instance: i.id.clone(),
                    health,
                    cause,
                });
            }
        }
        Ok(())
    }

    fn group_bounds(&self, group: &str) -> Result<proxyfleet_stack::Group, String> {
        self.stack
            .group(group)
            .cloned()
            .ok_or_else(|| format!("no group '{group}'"))
    }

    /// A live instance this pass has not taken out of service, not already terminating.
    fn serving_instance(&self, id: &str) -> Result<&'a Instance, String> {
        let snapshot: &'a Snapshot = self.snapshot;
        snapshot
            .instances
            .get(id)
            .filter(|i| {
                matches!(i.lifecycle, Lifecycle::Pending | Lifecycle::InService)
                    && !self.terminated.contains(&i.id)
            })
            .ok_or_else(|| format!("no live instance '{id}'"))
    }

    fn assign_pending(&mut self) {
        for i in self.snapshot.instances.values() {
            if i.lifecycle != Lifecycle::Pending || i.host.is_some() {
                continue;
            }
            if let Some(host) = self.live_hosts_in(&i.zone).first() {
                self.out.push(Change::AssignInstance {
                    instance: i.id.clone(),
                    host: host.to_string(),
                });
            }
        }
    }

    /// Pending instances that will not serve: their process ended (or could not start), or
    /// they did not serve within the launch timeout. Terminated here, so the group replaces
    /// them — after the launch back-off, which counts them.
    fn end_failed_launches(&mut self) {
        let failed: Vec<(&Instance, Cause)> = self
            .snapshot
            .instances
            .values()
            .filter(|i| i.lifecycle == Lifecycle::Pending && !self.terminated.contains(&i.id))
            .filter_map(|i| {
                if i.health == InstanceHealth::Unhealthy {
                    let cause = i.reason.clone().unwrap_or(Cause::LaunchFailed {
                        detail: "it was found unhealthy before it served".to_string(),
                    });
                    return Some((i, cause));
                }
                (i.launched_at.after(self.t.launch_timeout) < self.now).then(|| {
                    let detail = format!("it did not serve within {:?}", self.t.launch_timeout);
                    (i, Cause::LaunchFailed { detail })
                })
            })
            .collect();
        for (i, cause) in failed {
            self.terminate(i, cause);
        }
    }

    /// The group's instances this pass has not taken out of service.
    fn instances_of(&self, group: &str) -> Vec<&'a Instance> {
        let snapshot: &'a Snapshot = self.snapshot;
        snapshot
            .instances
            .values()
            .filter(|i| i.group == group && !self.terminated.contains(&i.id))
            .collect()
    }

    fn register_and_judge(&mut self, g: &proxyfleet_stack::Group) {
        let in_service: Vec<&Instance> = self
            .instances_of(&g.name)
            .into_iter()
            .filter(|i| i.lifecycle == Lifecycle::InService)
            .collect();
        for i in in_service {
            let judged_by_request = self.judged.contains_key(&i.id);
            let mut failing = None;
            for tg in &g.target_groups {
                match self.snapshot.target(tg, i.target_address()) {
                    None => self.out.push(Change::RegisterTarget {
                        target_group: tg.clone(),
                        address: i.target_address(),
                        zone: i.zone.clone(),
                        instance: Some(i.id.clone()),
                        at: self.now,
                    }),
                    Some(t) if t.state == TargetHealth::Unhealthy && failing.is_none() => {
                        failing = Some(tg.clone());
                    }
                    Some(_) => {}
                }
            }
            if judged_by_request
                || g.health_check_type != HealthCheckType::Lb
                || i.since.after(g.grace_period) > self.now
            {
                continue;
            }
            let lb_verdict = i
                .reason
                .as_ref()
                .is_some_and(Cause::is_load_balancer_health);
            match (failing, i.health) {
                (Some(target_group), InstanceHealth::Healthy) => {
                    let cause = Cause::LoadBalancerHealth { target_group };
                    self.judged.insert(i.id.clone(), Some(cause.clone()));
                    self.out.push(Change::ReportInstanceHealth {
                        instance: i.id.clone(),
                        health: InstanceHealth::Unhealthy,
                        cause: Some(cause),
                    })
                }
                (None, InstanceHealth::Unhealthy) if lb_verdict => {
                    self.judged.insert(i.id.clone(), None);
                    self.out.push(Change::ReportInstanceHealth {
                        instance: i.id.clone(),
                        health: InstanceHealth::Healthy,
                        cause: None,
                    })
                }
                _ => {}
            }
        }
    }

    /// Replacements and capacity: the group controller's own planner
    /// (`proxyfleet_group::planner`, the same rules `up` runs), on this snapshot. Launches go
    /// only to zones with a live host, and not in the first host timeout of `watching_since`, which
    /// gives every host the time to announce itself.
    fn plan_group(&mut self, g: &proxyfleet_stack::Group, new_id: &mut dyn FnMut() -> String) {
        use proxyfleet_group::planner::{self, Action, PlanInput, PlanInstance};
        let surge = self.refresh_step(g);
        let instances: Vec<PlanInstance> = self
            .snapshot
            .instances
            .values()
            .filter(|i| i.group == g.name && i.lifecycle != Lifecycle::Terminated)
            .map(|i| {
                let terminating =
                    self.terminated.contains(&i.id) || i.lifecycle == Lifecycle::Terminating;
                let lifecycle = match i.lifecycle {
                    _ if terminating => Lifecycle::Terminating,
                    Lifecycle::Pending => Lifecycle::Pending,
                    _ => Lifecycle::InService,
                };
                let unhealthy = match self.judged.get(&i.id) {
                    Some(verdict) => verdict.clone(),
                    None if i.health == InstanceHealth::Unhealthy => {
                        Some(i.reason.clone().unwrap_or(Cause::ProcessExited {
                            status: "unhealthy".to_string(),
                        }))
                    }
                    None => None,
                };
                PlanInstance {
                    id: i.id.clone(),
                    zone: i.zone.clone(),
                    address: i.address,
                    lifecycle,
                    replaced_for_lb_health: terminating
                        && i.reason
                            .as_ref()
                            .is_some_and(Cause::is_load_balancer_health),
                    passed_lb_health: passed_lb_health(self.snapshot, g, i),
                    unhealthy,
                    launched_at: i.launched_at,
                }
            })
            .collect();
        let zones: Vec<proxyfleet_stack::Zone> = self
            .stack
            .zones
            .iter()
            .filter(|z| !self.live_hosts_in(&z.name).is_empty())
            .cloned()
            .collect();
        let addresses_in_use = self
            .snapshot
            .live_instances()
            .filter(|i| i.group != g.name)
            .map(|i| i.address)
            .chain(self.created.iter().copied())
            .collect();
        let node_addresses = self
            .stack
            .load_balancers
            .iter()
            .flat_map(|lb| lb.nodes.iter().map(|n| n.address))
            .collect();
        let input = PlanInput {
            spec: g,
            desired: self.desired(&g.name),
            instances,
            zones: &zones,
            node_addresses,
            addresses_in_use,
            launches: launch_backoff(self.snapshot, &g.name),
            surge,
            scaling: g.scaling.as_ref().map(|_| {
                let state = self.snapshot.groups.get(&g.name);
                planner::ScalingInput {
                    active_connections: self.active_connections(g),
                    last_out: state.and_then(|s| s.last_scale_out),
                    last_in: state.and_then(|s| s.last_scale_in),
                }
            }),
        };
        let settling = self.now < self.watching_since.after(self.t.host_timeout);
        let actions = planner::plan(&input, self.now);
        let held = actions.iter().find_map(|a| match a {
            Action::HoldReplacements { instance, cause } => {
                Some(planner::held_reason(instance, cause))
            }
            _ => None,
        });
        let recorded = self
            .snapshot
            .groups
            .get(&g.name)
            .and_then(|s| s.replacements_held.clone());
        if held != recorded {
            self.out.push(Change::HoldReplacements {
                group: g.name.clone(),
                held,
                at: self.now,
            });
        }
        for action in actions {
            match action {
                Action::Terminate { instance, cause } => {
                    if let Some(i) = self.snapshot.instances.get(&instance) {
                        self.terminate(i, cause);
                    }
                }
                Action::Launch { .. } if settling => {}
                Action::Launch {
                    zone,
                    address,
                    cause,
                } => {
                    let Some(host) = self.live_hosts_in(&zone).first().map(|h| h.to_string())
                    else {
                        continue;
                    };
                    let id = new_id();
                    self.created.insert(address);
                    self.out.push(Change::CreateInstance {
                        id: id.clone(),
                        group: g.name.clone(),
                        zone,
                        address,
                        port: g.port,
                        cause,
                        at: self.now,
                    });
                    self.out.push(Change::AssignInstance { instance: id, host });
                }
                Action::NoFreeAddress { zone } => {
                    tracing::error!(group = %g.name, zone, "no free address left in the zone for a new instance");
                }
                // Recorded above, when it starts and ends.
                Action::HoldReplacements { .. } => {}
                Action::SetDesired { to, cause, .. } => {
                    tracing::info!(group = %g.name, to, %cause, "target tracking changed the desired capacity");
                    self.set_desired(&g.name, to, cause);
                }
            }
        }
    }

    /// The target-tracking policy's reading: the flows every node of the stack reports to the
    /// targets of the group's in-service instances in its target groups, summed (a node the
    /// stack no longer defines left its last counts behind: not counted).
    fn active_connections(&self, g: &proxyfleet_stack::Group) -> u64 {
        let nodes: BTreeSet<String> = self
            .stack
            .load_balancers
            .iter()
            .flat_map(|lb| lb.nodes.iter().map(|n| format!("{}/{}", lb.name, n.zone)))
            .collect();
        let in_service: BTreeSet<SocketAddr> = self
            .snapshot
            .instances
            .values()
            .filter(|i| i.group == g.name && i.lifecycle == Lifecycle::InService)
            .filter(|i| !self.terminated.contains(&i.id))
            .map(Instance::target_address)
            .collect();
        g.target_groups
            .iter()
            .filter_map(|tg| self.snapshot.targets.get(tg))
            .flat_map(|targets| targets.values())
            .filter(|t| in_service.contains(&t.address))
            .flat_map(|t| t.nodes.iter())
            .filter(|(node, _)| nodes.contains(*node))
            .map(|(_, v)| v.active_flows)
            .sum()
    }

    fn clean_up(&mut self) {
        for (tg, targets) in &self.snapshot.targets {
            let delay = self
                .stack
                .target_group(tg)
                .map_or(Duration::ZERO, |s| s.deregistration_delay);
            for target in targets.values() {
                // Its instance stopped: no flow to it can be left, whatever the delay says.
                let instance_gone = target.instance.as_ref().is_some_and(|id| {
                    self.snapshot
                        .instances
                        .get(id)
                        .is_some_and(|i| i.lifecycle == Lifecycle::Terminated)
                });
                if target.state == TargetHealth::Draining
                    && (instance_gone || target.since.after(delay) <= self.now)
                {
                    self.out.push(Change::RemoveTarget {
                        target_group: tg.clone(),
                        address: target.address,
                    });
                }
            }
        }
        for i in self.snapshot.instances.values() {
            let has_targets = self
                .snapshot
                .targets
                .values()
                .flat_map(|t| t.values())
                .any(|t| t.instance.as_deref() == Some(&i.id));
            let kept = if failed_launch(i) {
                FAILED_LAUNCH_KEPT.max(self.t.forget_after)
            } else {
                self.t.forget_after
            };
            if i.lifecycle == Lifecycle::Terminated
                && !has_targets
                && i.since.after(kept) <= self.now
            {
                self.out.push(Change::ForgetInstance {
                    instance: i.id.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
