//! One node's routing for one target group: its view of each target's health, and the
//! resolved Maglev table built from it, swapped in whole whenever either changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use proxyfleet_relay::throttle::Throttle;

use crate::events::{HealthEvent, HealthEvents};
use crate::group::{Group, Members, Target};
use crate::health::{Health, HealthState, ProbeFailure, Transition};

/// Which targets a node may use: its zone, the balancer's zones, and the cross-zone switch.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `LB/ZONE`, for logs.
    pub node: String,
    pub zone: String,
    pub lb_zones: Vec<String>,
    pub cross_zone: bool,
}

/// What the data path reads: for every Maglev slot, the target a new flow takes.
#[derive(Debug)]
pub struct Routes {
    pub members: Arc<Members>,
    /// Slot → index into `members.targets`; `u32::MAX` = no target at all.
    pub slots: Vec<u32>,
    pub eligible: Vec<bool>,
    /// Taken only when every eligible target has been passed by (full, or its connect
    /// failed): the healthy targets of the balancer's other zones, for a node that keeps to
    /// its own zone while that zone has room.
    pub overflow: Vec<bool>,
    /// No target in scope was healthy: every non-draining one is used (as the cloud does).
    pub fail_open: bool,
}

impl Routes {
    /// The target for a flow, skipping `passed` (targets whose connect already failed or that
    /// were full), in the flow's Maglev preference order: eligible targets first, then the
    /// overflow.
    pub fn pick(&self, flow_hash: u64, passed: &[Arc<Target>]) -> Option<Arc<Target>> {
        let table = &self.members.table;
        if table.is_empty() {
            return None;
        }
        let slot = table.slot(flow_hash);
        let first = self.slots[slot];
        let usable = |set: &[bool], i: usize| {
            let t = &self.members.targets[i];
            set[i] && !passed.iter().any(|x| Arc::ptr_eq(x, t))
        };
        if first != u32::MAX && usable(&self.eligible, first as usize) {
            return Some(self.members.targets[first as usize].clone());
        }
        let found = table.walk(slot).find(|&i| usable(&self.eligible, i));
        let found = found.or_else(|| {
            // Nothing in the overflow when it is empty (cross-zone, fail-open, one zone).
            self.overflow
                .iter()
                .any(|o| *o)
                .then(|| table.walk(slot).find(|&i| usable(&self.overflow, i)))
                .flatten()
        });
        found.map(|i| self.members.targets[i].clone())
    }
}

/// A node's view of one group.
pub struct GroupView {
    pub group: Arc<Group>,
    pub scope: Scope,
    health: Mutex<HashMap<String, HealthState>>,
    /// Where this view's transitions are published.
    events: HealthEvents,
    pub routes: ArcSwap<Routes>,
    failing_open: AtomicBool,
    /// Checks that could not run here: warned about at most once a second.
    local_check_warning: Throttle,
    /// Held from reading the state to publishing the table, so a rebuild that read older
    /// state can never publish after one that read newer state.
    rebuilding: Mutex<()>,
}

impl GroupView {
    pub fn new(group: Arc<Group>, scope: Scope, events: HealthEvents) -> GroupView {
        let members = group.members.load_full();
        let view = GroupView {
            group,
            scope,
            health: Mutex::new(HashMap::new()),
            events,
            routes: ArcSwap::from_pointee(Routes {
                members,
                slots: Vec::new(),
                eligible: Vec::new(),
                overflow: Vec::new(),
                fail_open: false,
            }),
            failing_open: AtomicBool::new(false),
            local_check_warning: Throttle::default(),
            rebuilding: Mutex::new(()),
        };
        view.rebuild();
        view
    }

    /// The initial state of a target newly seen by this node.
    pub fn track(&self, target: &Target) {
        let state = if self.scope.lb_zones.contains(&target.zone) {
            HealthState::new(Health::Initial, "registered: waiting for health checks")
        } else {
            HealthState::new(Health::Unused, "in a zone the load balancer does not serve")
        };
        self.lock().entry(target.id.clone()).or_insert(state);
        self.rebuild();
    }

    pub fn forget(&self, target: &Target) {
        self.lock().remove(&target.id);
        self.rebuild();
    }

    /// A target's health as this node judges it. Waits for a rebuild in progress, so a
    /// reader never sees a verdict before the table that acts on it is published.
    pub fn health_of(&self, id: &str) -> Option<HealthState> {
        let _published = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        self.lock().get(id).cloned()
    }

    /// Applies an active check's result.
    pub fn on_probe(&self, target: &Target, result: Result<(), ProbeFailure>) {
        let result = match result {
            Ok(()) => Ok(()),
            Err(ProbeFailure::Target(why)) => Err(why),
            Err(ProbeFailure::Local(why)) => {
                target.stats.checks_not_run.fetch_add(1, Ordering::Relaxed);
                if let Some(count) = self.local_check_warning.hit() {
                    tracing::warn!(node = %self.scope.node, target = %target.id, error = %why, count, "health check could not run here (not counted against the target; count: since the last such warning)");
                }
                return;
            }
        };
        self.transition(target, |state| {
            state.on_probe(result, &self.group.tuned().health_check)
        });
    }

    /// A connect from the data path failed: the target is unhealthy for this node at once.
    pub fn on_connect_failure(&self, target: &Target, why: &str) {
        self.transition(target, |state| state.on_connect_failure(why));
    }

    pub fn on_drain(&self, target: &Target) {
        self.transition(target, HealthState::drain);
    }

    /// Changes one target's state and, if its health changed, logs the transition and
    /// publishes the new table — all under the rebuild lock, so the change and the table that
    /// acts on it become visible together.
    fn transition(
        &self,
        target: &Target,
        change: impl FnOnce(&mut HealthState) -> Option<Transition>,
    ) {
        let _one_at_a_time = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        let transition = {
            let mut states = self.lock();
            let Some(state) = states.get_mut(&target.id) else {
                return;
            };
            change(state)
        };
        let Some(t) = transition else { return };
        target
            .stats
            .health_transitions
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            node = %self.scope.node,
            group = %self.group.spec.name,
            target = %target.id,
            zone = %target.zone,
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = %t.reason,
            "target health changed"
        );
        self.publish();
        // Still under the rebuild lock: a subscriber sees one view's events in order, and
        // never before the table that acts on them.
        self.events.publish(HealthEvent {
            node: self.scope.node.clone(),
            group: self.group.spec.name.clone(),
            target: target.id.clone(),
            target_zone: target.zone.clone(),
            from: t.from,
            to: t.to,
            reason: t.reason,
            at: std::time::SystemTime::now(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HealthState>> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recomputes which targets take new flows and publishes the resolved table.
    pub fn rebuild(&self) {
        let _one_at_a_time = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        self.publish();
    }

    /// The body of [`rebuild`](Self::rebuild); the caller holds `rebuilding`.
    fn publish(&self) {
        let members = self.group.members.load_full();
        let states = self.lock();
        let health: Vec<Health> = members
            .targets
            .iter()
            .map(|t| {
                if t.is_draining() {
                    Health::Draining
                } else {
                    states.get(&t.id).map_or(Health::Initial, |s| s.health)
                }
            })
            .collect();
        drop(states);
        let Eligibility {
            eligible,
            overflow,
            fail_open,
        } = eligibility(&members.targets, &health, &self.scope);
        let slots = members.table.resolve(&eligible);
        // Every target draining (a stop, a scale to zero) is not an outage worth shouting about.
        let all_draining = members.targets.iter().all(|t| t.is_draining());
        if fail_open && !all_draining && !self.failing_open.swap(true, Ordering::Relaxed) {
            tracing::error!(
                node = %self.scope.node,
                group = %self.group.spec.name,
                "NO HEALTHY TARGET in scope: failing open to every registered target"
            );
        } else if !fail_open && self.failing_open.swap(false, Ordering::Relaxed) {
            tracing::warn!(node = %self.scope.node, group = %self.group.spec.name, "healthy targets again: fail-open over");
        }
        self.routes.store(Arc::new(Routes {
            members,
            slots,
            eligible,
            overflow,
            fail_open,
        }));
    }
}

/// Which targets take new flows (by index into the members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    pub eligible: Vec<bool>,
    /// When every eligible target is passed by (full, failed).
    pub overflow: Vec<bool>,
    /// `eligible` is the fail-open fallback.
    pub fail_open: bool,
}

/// Which targets take new flows, and whether that is the fail-open fallback.
///
/// Healthy targets in the node's zone; with `cross_zone`, healthy targets in every zone the
/// balancer serves; without it, the other zones' healthy targets only when the node's zone
/// has none — or, as the overflow, when every one of the node's zone is full. When no target
/// in scope is healthy the node fails open, like the cloud: to the targets not yet judged
/// (initial), or when every one has been judged unhealthy, to all of them — never to a
/// draining or unused one.
pub fn eligibility(targets: &[Arc<Target>], health: &[Health], scope: &Scope) -> Eligibility {
    let in_scope =
        |i: usize| scope.lb_zones.contains(&targets[i].zone) && health[i] != Health::Draining;
    let healthy = |i: usize| in_scope(i) && health[i] == Health::Healthy;
    let own = |i: usize| healthy(i) && targets[i].zone == scope.zone;
    let n = targets.len();
    let none = vec![false; n];
    let (pick, overflow): (Vec<bool>, Vec<bool>) = if scope.cross_zone {
        ((0..n).map(healthy).collect(), none.clone())
    } else if (0..n).any(own) {
        (
            (0..n).map(own).collect(),
            (0..n).map(|i| healthy(i) && !own(i)).collect(),
        )
    } else {
        ((0..n).map(healthy).collect(), none.clone())
    };
    if pick.iter().any(|p| *p) {
        return Eligibility {
            eligible: pick,
            overflow,
            fail_open: false,
        };
    }
    let unjudged: Vec<bool> = (0..n)
        .map(|i| in_scope(i) && health[i] == Health::Initial)
        .collect();
    let eligible = if unjudged.iter().any(|p| *p) {
        unjudged
    } else {
        (0..n).map(in_scope).collect()
    };
    Eligibility {
        eligible,
        overflow: none,
        fail_open: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(zones: &[&str]) -> Vec<Arc<Target>> {
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                Arc::new(Target::new(
                    format!("127.10.0.{}:3128", i + 1).parse().unwrap(),
                    z,
                    None,
                ))
            })
            .collect()
    }

    fn scope(zone: &str, cross_zone: bool) -> Scope {
        Scope {
            node: format!("front/{zone}"),
            zone: zone.into(),
            lb_zones: vec!["a".into(), "c".into()],
            cross_zone,
        }
    }

    use Health::*;

    fn pick(e: Eligibility) -> (Vec<bool>, bool) {
        (e.eligible, e.fail_open)
    }

    #[test]
    fn own_zone_first_then_other_zones_then_fail_open() {
        let t = targets(&["a", "a", "c", "x"]);
        let e = pick(eligibility(
            &t,
            &[Healthy, Unhealthy, Healthy, Healthy],
            &scope("a", false),
        ));
        assert_eq!(
            e,
            (vec![true, false, false, false], false),
            "own zone only; zone x is unused"
        );
        let e = eligibility(
            &t,
            &[Healthy, Unhealthy, Healthy, Healthy],
            &scope("a", false),
        );
        assert_eq!(
            e.overflow,
            [false, false, true, false],
            "c's healthy target takes what a's cannot (full)"
        );
        let e = eligibility(
            &t,
            &[Healthy, Unhealthy, Healthy, Healthy],
            &scope("a", true),
        );
        assert_eq!(e.overflow, [false; 4], "cross-zone: no overflow");
        let e = pick(eligibility(
            &t,
            &[Unhealthy, Unhealthy, Healthy, Healthy],
            &scope("a", false),
        ));
        assert_eq!(
            e,
            (vec![false, false, true, false], false),
            "no healthy target in a: use c"
        );
        let e = pick(eligibility(
            &t,
            &[Healthy, Unhealthy, Healthy, Healthy],
            &scope("a", true),
        ));
        assert_eq!(
            e,
            (vec![true, false, true, false], false),
            "cross-zone: every served zone"
        );
        let e = pick(eligibility(
            &t,
            &[Unhealthy, Initial, Draining, Healthy],
            &scope("a", false),
        ));
        assert_eq!(
            e,
            (vec![false, true, false, false], true),
            "fail open to the unjudged first"
        );
        let e = pick(eligibility(
            &t,
            &[Unhealthy, Unhealthy, Draining, Healthy],
            &scope("a", false),
        ));
        assert_eq!(
            e,
            (vec![true, true, false, false], true),
            "then to all, never draining or unused"
        );
    }
}
