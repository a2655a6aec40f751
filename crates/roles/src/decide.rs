//! What the elected controller writes, decided from a snapshot alone: pure, so every rule is
//! unit-tested without processes, sockets or a store.
//!
//! One pass returns one batch, written under the leadership's fence (a stale leader's batch is
//! refused whole):
//! - groups the stack defines and the state lacks (or whose bounds changed);
//! - instances on a host whose heartbeat stopped: Terminated (cause `HostLost`), targets
//!   drained — there is no agent left to stop them; its returning agent stops them;
//! - Pending instances no host has been given: a live host of their zone;
//! - InService instances: registered with their group's target groups; with
//!   `health_check_type: lb`, past the grace period, unhealthy when a target group's nodes all
//!   find them unhealthy, healthy again when they no longer do;
//! - replacements: an instance unhealthy for any other reason at once; for the load balancer's
//!   verdict one at a time, and not while a launch is pending or another such replacement is
//!   terminating (the no-cascade rule: when every proxy fails its checks because of something
//!   else, the group does not churn them all);
//! - capacity: missing instances in the least populated zone that has a live host (ties: the
//!   group's zone order), at the lowest free address of the zone — not in a new leader's
//!   first host timeout, which gives every host the time to announce itself; extra ones from
//!   the most populated zone, newest first;
//! - clean-up: drained targets removed after their deregistration delay; Terminated instances
//!   forgotten once they have no target left and `forget_after` has passed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proxyfleet_stack::{HealthCheckType, Stack};
use proxyfleet_state::{
    Cause, Change, Group, Instance, InstanceHealth, Lifecycle, Snapshot, TargetHealth, UnixMillis,
};

/// The controller's timings.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// A host whose last heartbeat is older is lost.
    pub host_timeout: Duration,
    /// How long a Pending instance may take to serve.
    pub launch_timeout: Duration,
    /// How long a Terminated instance stays visible (status, console) before it is forgotten.
    pub forget_after: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            host_timeout: Duration::from_millis(1500),
            launch_timeout: Duration::from_secs(30),
            forget_after: Duration::from_secs(60),
        }
    }
}

/// Whether `host` has sent a heartbeat within the timeout, counting from no earlier than
/// `watching_since`: the moment the judge (a newly elected controller) began to watch. Before
/// it, the store may have been unable to take heartbeats at all (quorum lost), so a stale
/// heartbeat there says nothing about the host.
pub fn host_is_live(
    snapshot: &Snapshot,
    host: &str,
    now: UnixMillis,
    t: &Timings,
    watching_since: UnixMillis,
) -> bool {
    snapshot
        .hosts
        .get(host)
        .is_some_and(|h| h.last_heartbeat.max(watching_since).after(t.host_timeout) >= now)
}

/// One pass: the batch the controller writes (empty when nothing is to be done).
/// `watching_since` is when this controller's leadership began (see [`host_is_live`]).
pub fn decide(
    stack: &Stack,
    snapshot: &Snapshot,
    now: UnixMillis,
    t: &Timings,
    watching_since: UnixMillis,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Change> {
    let mut pass = Pass {
        stack,
        snapshot,
        now,
        t,
        watching_since,
        out: Vec::new(),
        terminated: BTreeSet::new(),
        drained: BTreeSet::new(),
        taken: snapshot.live_instances().map(|i| i.address).collect(),
    };
    pass.define_groups();
    pass.lose_instances_of_dead_hosts();
    pass.assign_pending();
    pass.time_out_launches();
    for g in &stack.groups {
        pass.register_and_judge(g);
        pass.replace_unhealthy(g);
        pass.keep_capacity(g, new_id);
    }
    pass.clean_up();
    pass.out
}

struct Pass<'a> {
    stack: &'a Stack,
    snapshot: &'a Snapshot,
    now: UnixMillis,
    t: &'a Timings,
    watching_since: UnixMillis,
    out: Vec<Change>,
    /// Instances this pass takes out of service (no longer counted as live).
    terminated: BTreeSet<String>,
    /// Targets this pass drains.
    drained: BTreeSet<(String, SocketAddr)>,
    /// Addresses of live instances, and of those this pass creates.
    taken: BTreeSet<IpAddr>,
}

impl<'a> Pass<'a> {
    fn define_groups(&mut self) {
        for g in &self.stack.groups {
            let current = self.snapshot.groups.get(&g.name);
            if current.is_some_and(|c| c.min == g.min && c.max == g.max) {
                continue;
            }
            let desired = current.map_or(g.desired, |c| c.desired.clamp(g.min, g.max));
            self.out.push(Change::DefineGroup {
                group: Group {
                    name: g.name.clone(),
                    min: g.min,
                    max: g.max,
                    desired,
                },
            });
        }
    }

    fn desired(&self, group: &str) -> u32 {
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
            .filter(|h| {
                h.zone == zone
                    && host_is_live(self.snapshot, &h.id, self.now, self.t, self.watching_since)
            })
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

    fn lose_instances_of_dead_hosts(&mut self) {
        for i in self.snapshot.live_instances() {
            let Some(host) = &i.host else { continue };
            if host_is_live(self.snapshot, host, self.now, self.t, self.watching_since) {
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

    fn time_out_launches(&mut self) {
        let late: Vec<&Instance> = self
            .snapshot
            .instances
            .values()
            .filter(|i| {
                i.lifecycle == Lifecycle::Pending
                    && !self.terminated.contains(&i.id)
                    && i.launched_at.after(self.t.launch_timeout) < self.now
            })
            .collect();
        for i in late {
            let detail = format!("it did not serve within {:?}", self.t.launch_timeout);
            self.terminate(i, Cause::LaunchFailed { detail });
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
            if g.health_check_type != HealthCheckType::Lb
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
                    self.out.push(Change::ReportInstanceHealth {
                        instance: i.id.clone(),
                        health: InstanceHealth::Unhealthy,
                        cause: Some(Cause::LoadBalancerHealth { target_group }),
                    })
                }
                (None, InstanceHealth::Unhealthy) if lb_verdict => {
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

    fn replace_unhealthy(&mut self, g: &proxyfleet_stack::Group) {
        let lb_replacement_in_flight = self.instances_of(&g.name).into_iter().any(|i| {
            i.lifecycle == Lifecycle::Pending
                || (i.lifecycle == Lifecycle::Terminating
                    && i.reason
                        .as_ref()
                        .is_some_and(Cause::is_load_balancer_health))
        });
        let unhealthy: Vec<&Instance> = self
            .instances_of(&g.name)
            .into_iter()
            .filter(|i| {
                i.lifecycle == Lifecycle::InService && i.health == InstanceHealth::Unhealthy
            })
            .collect();
        let mut lb_replaced = lb_replacement_in_flight;
        for i in unhealthy {
            let cause = i.reason.clone().unwrap_or(Cause::ProcessExited {
                status: "unhealthy".to_string(),
            });
            if cause.is_load_balancer_health() {
                if lb_replaced {
                    continue;
                }
                lb_replaced = true;
            }
            self.terminate(i, cause);
        }
    }

    fn keep_capacity(&mut self, g: &proxyfleet_stack::Group, new_id: &mut dyn FnMut() -> String) {
        let desired = self.desired(&g.name) as usize;
        let live: Vec<&Instance> = self
            .instances_of(&g.name)
            .into_iter()
            .filter(|i| matches!(i.lifecycle, Lifecycle::Pending | Lifecycle::InService))
            .collect();
        let running = live.len() as u32;
        let mut per_zone: BTreeMap<&str, Vec<&Instance>> =
            g.zones.iter().map(|z| (z.as_str(), Vec::new())).collect();
        for i in &live {
            per_zone.entry(i.zone.as_str()).or_default().push(i);
        }
        if live.len() > desired {
            let zone = g
                .zones
                .iter()
                .rev()
                .max_by_key(|z| per_zone.get(z.as_str()).map_or(0, Vec::len))
                .map(String::as_str)
                .unwrap_or_default();
            let victims = per_zone.get(zone).cloned().unwrap_or_default();
            if let Some(victim) = victims.iter().max_by_key(|i| i.launched_at) {
                let cause = Cause::Capacity {
                    desired: desired as u32,
                    running,
                };
                self.terminate(victim, cause);
            }
            return;
        }
        // A new leader first lets every host announce itself (for one host timeout), so that
        // a zone whose agent starts a moment later is not passed over for good.
        if self.now < self.watching_since.after(self.t.host_timeout) {
            return;
        }
        let mut counts: BTreeMap<String, usize> = per_zone
            .iter()
            .map(|(z, v)| (z.to_string(), v.len()))
            .collect();
        for _ in live.len()..desired {
            let Some(zone) = g
                .zones
                .iter()
                .filter(|z| !self.live_hosts_in(z).is_empty())
                .min_by_key(|z| counts.get(*z).copied().unwrap_or(0))
                .cloned()
            else {
                return; // no live host in any of the group's zones
            };
            let Some(address) = self.free_address(g, &zone) else {
                tracing::error!(group = %g.name, zone, "no free address left in the zone for a new instance");
                return;
            };
            let host = self.live_hosts_in(&zone)[0].to_string();
            let id = new_id();
            self.taken.insert(address);
            *counts.entry(zone.clone()).or_default() += 1;
            self.out.push(Change::CreateInstance {
                id: id.clone(),
                group: g.name.clone(),
                zone,
                address,
                port: g.port,
                cause: Cause::Capacity {
                    desired: desired as u32,
                    running,
                },
                at: self.now,
            });
            self.out.push(Change::AssignInstance { instance: id, host });
        }
    }

    /// The lowest address of the zone's subnet, from the group's first instance address on,
    /// that no live instance and no load-balancer node holds.
    fn free_address(&self, g: &proxyfleet_stack::Group, zone: &str) -> Option<IpAddr> {
        let subnet = self.stack.zone(zone)?.subnet;
        let nodes: BTreeSet<IpAddr> = self
            .stack
            .load_balancers
            .iter()
            .flat_map(|lb| lb.nodes.iter().map(|n| n.address))
            .collect();
        (0..g.max * 2 + 8)
            .filter_map(|i| g.instance_address(&subnet, i))
            .find(|a| !self.taken.contains(a) && !nodes.contains(a))
    }

    fn clean_up(&mut self) {
        for (tg, targets) in &self.snapshot.targets {
            let delay = self
                .stack
                .target_group(tg)
                .map_or(Duration::ZERO, |s| s.deregistration_delay);
            for target in targets.values() {
                if target.state == TargetHealth::Draining && target.since.after(delay) <= self.now {
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
            if i.lifecycle == Lifecycle::Terminated
                && !has_targets
                && i.since.after(self.t.forget_after) <= self.now
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
