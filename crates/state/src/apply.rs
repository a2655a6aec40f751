//! The rules: what each change does to a [`Snapshot`], and when it is refused.
//!
//! Pure and shared by every store: the embedded one applies a batch to a copy and commits only
//! if every change passes; an etcd store checks the same rules against the keys it read and
//! commits them in one transaction guarded by their revisions. A watcher applies the same
//! function to keep its own copy current, so the copy equals the store's snapshot.

use std::net::{IpAddr, SocketAddr};

use crate::cause::Cause;
use crate::change::Change;
use crate::model::{
    Group, Instance, InstanceHealth, Lifecycle, NodeView, Snapshot, Target, TargetHealth, Term,
    MAX_OPEN_REQUESTS,
};

/// Why one change cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no host {0}")]
    UnknownHost(String),
    #[error("no group {0}")]
    UnknownGroup(String),
    #[error("no instance {0}")]
    UnknownInstance(String),
    #[error("target group {target_group} has no target {address}")]
    UnknownTarget {
        target_group: String,
        address: SocketAddr,
    },
    #[error("instance {0} already exists")]
    InstanceExists(String),
    #[error("address {address} is taken by live instance {instance}")]
    AddressInUse { address: IpAddr, instance: String },
    #[error("target {address} is already registered with target group {target_group}")]
    TargetRegistered {
        target_group: String,
        address: SocketAddr,
    },
    #[error("desired capacity {desired} of group {group} is outside {min}..={max}")]
    OutOfRange {
        group: String,
        desired: u32,
        min: u32,
        max: u32,
    },
    #[error("instance {instance} cannot go back from {from} to {to}")]
    Backwards {
        instance: String,
        from: Lifecycle,
        to: Lifecycle,
    },
    #[error("instance {instance} is {lifecycle}, not {wanted}")]
    WrongLifecycle {
        instance: String,
        lifecycle: Lifecycle,
        wanted: Lifecycle,
    },
    #[error("request {0} already exists")]
    RequestExists(String),
    #[error("no request {0}")]
    UnknownRequest(String),
    #[error("{open} requests already wait for the controller (is one elected?)")]
    TooManyRequests { open: usize },
    #[error("the {0} is empty")]
    Empty(&'static str),
    #[error("term {term} is not newer than the last granted term {last}")]
    OldTerm { term: Term, last: Term },
    #[error("leadership changes are written only by campaign and resign")]
    Reserved,
}

impl Snapshot {
    /// Applies one change, or refuses it and leaves the snapshot as it was.
    pub fn apply(&mut self, change: &Change) -> Result<(), Refusal> {
        match change {
            Change::RegisterHost { host } => {
                non_empty(&host.id, "host id")?;
                non_empty(&host.zone, "host zone")?;
                // What nodes it holds is its agent's report alone, not an announcement's.
                let nodes = self
                    .hosts
                    .get(&host.id)
                    .map(|h| h.nodes.clone())
                    .unwrap_or_default();
                let mut host = host.clone();
                host.nodes = nodes;
                self.hosts.insert(host.id.clone(), host);
            }
            Change::ReportNodes { host, nodes } => {
                let h = self
                    .hosts
                    .get_mut(host)
                    .ok_or_else(|| Refusal::UnknownHost(host.clone()))?;
                h.nodes = nodes.clone();
            }
            Change::Heartbeat { host, at } => {
                let h = self
                    .hosts
                    .get_mut(host)
                    .ok_or_else(|| Refusal::UnknownHost(host.clone()))?;
                // Reports may cross on the way; the newest stands.
                h.last_heartbeat = h.last_heartbeat.max(*at);
            }
            Change::ReportProcess {
                instance,
                process,
                capacity,
                protected,
                ..
            } => {
                let i = self.instance_mut(instance)?;
                i.process = Some(*process);
                i.capacity = *capacity;
                i.protected = *protected;
            }
            Change::ReportLifecycle {
                instance,
                lifecycle,
                cause,
                at,
            } => {
                let i = self.instance_mut(instance)?;
                if *lifecycle < i.lifecycle {
                    return Err(Refusal::Backwards {
                        instance: instance.clone(),
                        from: i.lifecycle,
                        to: *lifecycle,
                    });
                }
                // The same report twice (an agent re-reporting after a reconnect) changes
                // nothing but the cause.
                if *lifecycle != i.lifecycle {
                    i.lifecycle = *lifecycle;
                    i.since = *at;
                }
                if *lifecycle == Lifecycle::InService && i.in_service_at.is_none() {
                    i.in_service_at = Some(*at);
                }
                if cause.is_some() {
                    i.reason = cause.clone();
                }
            }
            Change::ReportInstanceHealth {
                instance,
                health,
                cause,
            } => {
                let i = self.instance_mut(instance)?;
                i.health = *health;
                i.reason = match health {
                    InstanceHealth::Healthy => None,
                    InstanceHealth::Unhealthy => cause.clone(),
                };
            }
            Change::ReportTargetHealth {
                target_group,
                address,
                node,
                health,
                reason,
                at,
            } => {
                non_empty(node, "node name")?;
                let t = self.target_mut(target_group, *address)?;
                // The node's flow count is its own report's: a verdict keeps it.
                let active_flows = t.nodes.get(node).map_or(0, |v| v.active_flows);
                t.nodes.insert(
                    node.clone(),
                    NodeView {
                        health: *health,
                        reason: reason.clone(),
                        since: *at,
                        active_flows,
                    },
                );
                if t.state != TargetHealth::Draining {
                    let state = Target::summary(&t.nodes);
                    t.ever_healthy |= state == TargetHealth::Healthy;
                    if state != t.state {
                        t.state = state;
                        t.since = *at;
                    }
                }
            }
            Change::ReportTargetFlows {
                target_group,
                address,
                node,
                active_flows,
            } => {
                non_empty(node, "node name")?;
                let t = self.target_mut(target_group, *address)?;
                let since = t.since;
                // A count may arrive before the node's first verdict: its view starts Initial
                // (the target's state is the verdicts' to say, not the counts').
                t.nodes
                    .entry(node.clone())
                    .or_insert_with(|| NodeView {
                        health: TargetHealth::Initial,
                        reason: String::new(),
                        since,
                        active_flows: 0,
                    })
                    .active_flows = *active_flows;
            }
            Change::DefineGroup { group } => {
                non_empty(&group.name, "group name")?;
                in_range(group, group.desired)?;
                // New bounds keep the policy's cooldowns running.
                let mut group = group.clone();
                if let Some(old) = self.groups.get(&group.name) {
                    group.last_scale_out = group.last_scale_out.or(old.last_scale_out);
                    group.last_scale_in = group.last_scale_in.or(old.last_scale_in);
                }
                self.groups.insert(group.name.clone(), group);
            }
            Change::SetRefresh {
                group,
                refresh,
                outcome,
                ..
            } => {
                let g = self.group_mut(group)?;
                if refresh.is_none() {
                    g.last_refresh = Some(outcome.clone());
                }
                g.refresh = refresh.clone();
            }
            Change::StackApplied { group, .. } => {
                self.group_mut(group)?;
            }
            Change::HoldReplacements { group, held, .. } => {
                let g = self.group_mut(group)?;
                g.replacements_held = held.clone();
            }
            Change::SetDesired {
                group,
                desired,
                cause,
                at,
            } => {
                let g = self.group_mut(group)?;
                in_range(g, *desired)?;
                if let (Cause::TargetTracking { .. }, Some(at)) = (cause, at) {
                    if *desired > g.desired {
                        g.last_scale_out = Some(*at);
                    } else if *desired < g.desired {
                        g.last_scale_in = Some(*at);
                    }
                }
                g.desired = *desired;
            }
            Change::CreateInstance {
                id,
                group,
                zone,
                address,
                port,
                cause,
                at,
            } => {
                non_empty(id, "instance id")?;
                non_empty(zone, "instance zone")?;
                if self.instances.contains_key(id) {
                    return Err(Refusal::InstanceExists(id.clone()));
                }
                if !self.groups.contains_key(group) {
                    return Err(Refusal::UnknownGroup(group.clone()));
                }
                if let Some(other) = self.live_instances().find(|i| i.address == *address) {
                    return Err(Refusal::AddressInUse {
                        address: *address,
                        instance: other.id.clone(),
                    });
                }
                self.instances.insert(
                    id.clone(),
                    Instance {
                        id: id.clone(),
                        group: group.clone(),
                        zone: zone.clone(),
                        address: *address,
                        port: *port,
                        host: None,
                        lifecycle: Lifecycle::Pending,
                        since: *at,
                        health: InstanceHealth::Healthy,
                        reason: Some(cause.clone()),
                        launched_at: *at,
                        process: None,
                        in_service_at: None,
                        capacity: None,
                        protected: false,
                    },
                );
            }
            Change::AssignInstance { instance, host } => {
                if !self.hosts.contains_key(host) {
                    return Err(Refusal::UnknownHost(host.clone()));
                }
                let i = self.instance_mut(instance)?;
                // Once running, an instance stays where it runs; a lost host's instances are
                // replaced, not moved.
                lifecycle_is(i, Lifecycle::Pending)?;
                i.host = Some(host.clone());
            }
            Change::ForgetInstance { instance } => {
                lifecycle_is(self.instance_mut(instance)?, Lifecycle::Terminated)?;
                self.instances.remove(instance);
            }
            Change::RegisterTarget {
                target_group,
                address,
                zone,
                instance,
                at,
            } => {
                non_empty(target_group, "target group name")?;
                if let Some(id) = instance {
                    if !self.instances.contains_key(id) {
                        return Err(Refusal::UnknownInstance(id.clone()));
                    }
                }
                let targets = self.targets.entry(target_group.clone()).or_default();
                // A draining target may come back (registered again before its delay ends).
                if targets
                    .get(address)
                    .is_some_and(|t| t.state != TargetHealth::Draining)
                {
                    return Err(Refusal::TargetRegistered {
                        target_group: target_group.clone(),
                        address: *address,
                    });
                }
                targets.insert(
                    *address,
                    Target {
                        target_group: target_group.clone(),
                        address: *address,
                        zone: zone.clone(),
                        instance: instance.clone(),
                        state: TargetHealth::Initial,
                        since: *at,
                        nodes: Default::default(),
                        ever_healthy: false,
                    },
                );
            }
            Change::DrainTarget {
                target_group,
                address,
                at,
            } => {
                let t = self.target_mut(target_group, *address)?;
                if t.state != TargetHealth::Draining {
                    t.state = TargetHealth::Draining;
                    t.since = *at;
                }
            }
            Change::RemoveTarget {
                target_group,
                address,
            } => {
                self.target_mut(target_group, *address)?;
                let targets = self.targets.get_mut(target_group).expect("just found");
                targets.remove(address);
                if targets.is_empty() {
                    self.targets.remove(target_group);
                }
            }
            Change::LeaderElected { leadership } => {
                let last = self.leadership.as_ref().map(|l| l.term).unwrap_or_default();
                if leadership.term <= last {
                    return Err(Refusal::OldTerm {
                        term: leadership.term,
                        last,
                    });
                }
                self.leadership = Some(leadership.clone());
            }
            Change::LeadershipEnded { term, .. } => {
                if self.leadership.as_ref().is_some_and(|l| l.term == *term) {
                    self.leadership = None;
                }
            }
            Change::FileRequest { request } => {
                non_empty(&request.id, "request id")?;
                if self.requests.contains_key(&request.id) {
                    return Err(Refusal::RequestExists(request.id.clone()));
                }
                if self.requests.len() >= MAX_OPEN_REQUESTS {
                    return Err(Refusal::TooManyRequests {
                        open: self.requests.len(),
                    });
                }
                self.requests_filed += 1;
                let mut request = request.clone();
                request.seq = self.requests_filed;
                self.requests.insert(request.id.clone(), request);
            }
            Change::CloseRequest { id, .. } => {
                if self.requests.remove(id).is_none() {
                    return Err(Refusal::UnknownRequest(id.clone()));
                }
            }
        }
        Ok(())
    }

    /// Applies a batch all or nothing: on a refusal, the index of the refused change and the
    /// snapshot as it was.
    pub fn apply_all(&mut self, changes: &[Change]) -> Result<(), (usize, Refusal)> {
        let mut next = self.clone();
        for (i, c) in changes.iter().enumerate() {
            next.apply(c).map_err(|r| (i, r))?;
        }
        *self = next;
        Ok(())
    }

    fn group_mut(&mut self, name: &str) -> Result<&mut Group, Refusal> {
        self.groups
            .get_mut(name)
            .ok_or_else(|| Refusal::UnknownGroup(name.to_string()))
    }

    fn instance_mut(&mut self, id: &str) -> Result<&mut Instance, Refusal> {
        self.instances
            .get_mut(id)
            .ok_or_else(|| Refusal::UnknownInstance(id.to_string()))
    }

    fn target_mut(
        &mut self,
        target_group: &str,
        address: SocketAddr,
    ) -> Result<&mut Target, Refusal> {
        self.targets
            .get_mut(target_group)
            .and_then(|t| t.get_mut(&address))
            .ok_or_else(|| Refusal::UnknownTarget {
                target_group: target_group.to_string(),
                address,
            })
    }
}

fn non_empty(s: &str, what: &'static str) -> Result<(), Refusal> {
    if s.is_empty() {
        Err(Refusal::Empty(what))
    } else {
        Ok(())
    }
}

fn in_range(g: &Group, desired: u32) -> Result<(), Refusal> {
    if (g.min..=g.max).contains(&desired) {
        Ok(())
    } else {
        Err(Refusal::OutOfRange {
            group: g.name.clone(),
            desired,
            min: g.min,
            max: g.max,
        })
    }
}

fn lifecycle_is(i: &Instance, wanted: Lifecycle) -> Result<(), Refusal> {
    if i.lifecycle == wanted {
        Ok(())
    } else {
        Err(Refusal::WrongLifecycle {
            instance: i.id.clone(),
            lifecycle: i.lifecycle,
            wanted,
        })
    }
}

#[cfg(test)]
mod tests;
