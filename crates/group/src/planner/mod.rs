//! The group controller's decisions, as a pure function: [`plan`] takes what one pass needs to
//! know about a group ([`PlanInput`]) and returns what to do ([`Action`]s). No processes,
//! sockets, clocks or locks: the caller passes the time, and the executor
//! (`crate::executor`) gathers the input from the running state and carries the actions out.
//! Every time is wall-clock ([`UnixMillis`]), so the same planner can run on a store's
//! snapshot in a controller elected on another host.
//!
//! One pass, in this order (each step sees the input as it was when the pass began; what an
//! earlier action changes shows in the next pass):
//!
//! 1. target tracking (if the group has a policy): the desired capacity that puts the active
//!    connections at the target per in-service instance, within min..max, once the cooldown
//!    of that direction (and, for scaling in, of scaling out) has passed;
//! 2. replacement of unhealthy in-service instances, in tracking order: any cause but the
//!    load balancer's verdict at once; for the load balancer's verdict one per pass, and
//!    none while a launch is pending or an earlier such replacement is still around (the
//!    no-cascade rule: when every proxy fails its checks because something else is wrong,
//!    the origin say, the group does not churn them all; a replacement is "around" until it
//!    has passed the balancer's checks). Nothing after that one is looked at in the same
//!    pass. The churn stop: while an in-service instance that never passed the balancer's
//!    checks fails them, no instance is replaced for the balancer's verdict
//!    ([`replacements_held`], [`Action::HoldReplacements`]);
//! 3. capacity, counting Pending and InService instances as live: below the desired
//!    capacity, every missing instance at once (one per pass while launches are failing, and
//!    none before the back-off's deadline), each in the least populated zone (ties: the
//!    order of the group's zones) at the lowest free slot address of that zone's subnet
//!    (skipping load-balancer nodes and any address an instance still holds, Terminating
//!    ones included); above it, one instance per pass: the newest of the most populated zone
//!    (ties: the zone whose name sorts first; launched in the same millisecond: the one
//!    tracked last).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use proxyfleet_stack::{Group, Zone};
use proxyfleet_state::{Cause, UnixMillis};

use crate::model::Lifecycle;

#[cfg(test)]
mod tests;

/// Everything one pass over a group decides on.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The group as the stack defines it (min, max, zones, first address, scaling policy).
    /// Its `desired` is the stack's default, not the running one: see [`PlanInput::desired`].
    pub spec: &'a Group,
    /// The running desired capacity.
    pub desired: u32,
    /// The group's tracked instances, in the order they were tracked (oldest first); every
    /// lifecycle but Terminated (a Terminated instance is forgotten).
    pub instances: Vec<PlanInstance>,
    /// The zones launches may go to, with their subnets: the stack's (for an elected
    /// controller, those with a live host). A group zone missing here gets no launch; its
    /// share goes to the others.
    pub zones: &'a [Zone],
    /// Load-balancer node addresses: never given to an instance.
    pub node_addresses: Vec<IpAddr>,
    /// Addresses held by other groups' instances.
    pub addresses_in_use: Vec<IpAddr>,
    pub launches: Launches,
    /// Instances the group may run above its desired capacity (an instance refresh's new
    /// instance, launched before an old one goes).
    pub surge: u32,
    /// The target-tracking policy's readings; `None` without a policy.
    pub scaling: Option<ScalingInput>,
}

/// One tracked instance, as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInstance {
    pub id: String,
    pub zone: String,
    pub address: IpAddr,
    pub lifecycle: Lifecycle,
    /// `Some(cause)` when the group found it unhealthy.
    pub unhealthy: Option<Cause>,
    pub launched_at: UnixMillis,
    /// Taken out of service for the load balancer's verdict (for the no-cascade rule).
    pub replaced_for_lb_health: bool,
    /// The load balancer has found it healthy at least once (in every target group): a
    /// replacement is proven only then.
    pub passed_lb_health: bool,
}

impl PlanInstance {
    /// Pending or InService: what counts towards the desired capacity.
    pub fn is_live(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Pending | Lifecycle::InService)
    }
}

/// How launches have been going: the back-off after failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Launches {
    /// Consecutive launches that never reached InService.
    pub failures: u32,
    /// No launch before this time.
    pub next_at: Option<UnixMillis>,
}

/// The target-tracking policy's readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScalingInput {
    /// Active connections summed over the in-service instances' targets.
    pub active_connections: u64,
    /// When the policy last scaled out, and in.
    pub last_out: Option<UnixMillis>,
    pub last_in: Option<UnixMillis>,
}

/// What the executor is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Change the desired capacity (and start the cooldown of `direction`). The rest of the
    /// plan assumes it: if the desired capacity is no longer `from`, drop the plan.
    SetDesired {
        from: u32,
        to: u32,
        direction: Direction,
        cause: Cause,
    },
    /// Launch one instance at `address` in `zone`.
    Launch {
        zone: String,
        address: IpAddr,
        cause: Cause,
    },
    /// Take an instance out of service. A load-balancer health cause marks it
    /// `replaced_for_lb_health`, which the no-cascade rule reads in later passes.
    Terminate { instance: String, cause: Cause },
    /// A launch was due but `zone`'s subnet has no free slot address left: say so.
    NoFreeAddress { zone: String },
    /// Replacements for the load balancer's verdict are held: `instance`, which never passed
    /// the load balancer's health checks, fails them (`cause`), so a replacement would fail
    /// the same way (a security group that drops the nodes, a broken template). Planned in
    /// every pass while it lasts; the executor reports the change of state.
    HoldReplacements { instance: String, cause: Cause },
}

/// Which way the target-tracking policy moved the desired capacity (each has its cooldown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
}

/// One pass over a group: the actions, in the order to carry them out.
pub fn plan(input: &PlanInput<'_>, now: UnixMillis) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut desired = input.desired;
    if let Some(change) = target_tracking(input, now) {
        if let Action::SetDesired { to, .. } = change {
            desired = to;
        }
        actions.push(change);
    }
    replace_unhealthy(input, &mut actions);
    keep_capacity(input, desired + input.surge, now, &mut actions);
    actions
}

fn target_tracking(input: &PlanInput<'_>, now: UnixMillis) -> Option<Action> {
    let policy = input.spec.scaling.as_ref()?;
    let readings = input.scaling?;
    let in_service = input
        .instances
        .iter()
        .filter(|i| i.lifecycle == Lifecycle::InService)
        .count();
    if in_service == 0 {
        return None;
    }
    let target = policy.target_active_connections_per_instance;
    let want = crate::scaling::wanted(
        readings.active_connections,
        target,
        input.spec.min,
        input.spec.max,
    );
    let from = input.desired;
    let cooled =
        |at: Option<UnixMillis>, cooldown: Duration| at.is_none_or(|at| now.since(at) >= cooldown);
    let direction = if want > from && cooled(readings.last_out, policy.scale_out_cooldown) {
        Direction::Out
    } else if want < from
        && cooled(readings.last_in, policy.scale_in_cooldown)
        && cooled(readings.last_out, policy.scale_in_cooldown)
    {
        Direction::In
    } else {
        return None;
    };
    Some(Action::SetDesired {
        from,
        to: want,
        direction,
        cause: Cause::TargetTracking {
            per_instance: readings.active_connections as f64 / in_service as f64,
            target,
        },
    })
}

fn replace_unhealthy(input: &PlanInput<'_>, actions: &mut Vec<Action>) {
    let held = replacements_held(&input.instances);
    // An earlier replacement is in flight until it has passed the balancer's checks.
    let lb_replacement_in_flight = input.instances.iter().any(|i| {
        i.replaced_for_lb_health
            || i.lifecycle == Lifecycle::Pending
            || (i.lifecycle == Lifecycle::InService && !i.passed_lb_health)
    });
    let unhealthy = input
        .instances
        .iter()
        .filter(|i| i.lifecycle == Lifecycle::InService)
        .filter_map(|i| Some((i, i.unhealthy.clone()?)));
    for (instance, cause) in unhealthy {
        let for_lb = cause.is_load_balancer_health();
        if for_lb && (lb_replacement_in_flight || held.is_some()) {
            continue;
        }
        actions.push(Action::Terminate {
            instance: instance.id.clone(),
            cause,
        });
        if for_lb {
            break;
        }
    }
    if let Some((instance, cause)) = held {
        actions.push(Action::HoldReplacements {
            instance: instance.id.clone(),
            cause,
        });
    }
}

/// The churn stop: an in-service instance that has never passed the load balancer's health
/// checks and now fails them (after its grace period) shows that new instances fail them
/// too, so the group stops replacing instances for that verdict (other causes still
/// replace) until an instance passes. The first such instance, and its verdict.
pub fn replacements_held(instances: &[PlanInstance]) -> Option<(&PlanInstance, Cause)> {
    instances.iter().find_map(|i| {
        let cause = i.unhealthy.clone()?;
        (i.lifecycle == Lifecycle::InService
            && !i.passed_lb_health
            && cause.is_load_balancer_health())
        .then_some((i, cause))
    })
}

/// The churn stop's wording, for status and the activity history.
pub fn held_reason(instance: &str, cause: &Cause) -> String {
    let Cause::LoadBalancerHealth { target_group } = cause else {
        return format!("instance {instance} never passed its health checks: {cause}");
    };
    format!(
        "replacing instances for failed load balancer health checks is held: {instance}, a new \
         instance, never passed target group {target_group}'s health checks, so a replacement \
         would fail them the same way (a security group that drops the nodes, a wrong health \
         check, a broken launch template); replacing resumes when an instance passes"
    )
}

fn keep_capacity(input: &PlanInput<'_>, desired: u32, now: UnixMillis, actions: &mut Vec<Action>) {
    let live: Vec<&PlanInstance> = input.instances.iter().filter(|i| i.is_live()).collect();
    let desired = desired as usize;
    if live.len() == desired && actions.is_empty() {
        rebalance(input, &live, now, actions);
    } else if live.len() < desired {
        if input.launches.next_at.is_some_and(|at| at > now) {
            return;
        }
        // Launches that have been failing go one per pass, so the back-off paces them.
        let count = if input.launches.failures > 0 {
            1
        } else {
            desired - live.len()
        };
        launch(input, &live, count, desired, actions);
    } else if live.len() > desired {
        if let Some(victim) = scale_in_victim(&live) {
            actions.push(Action::Terminate {
                instance: victim.id.clone(),
                cause: capacity_cause(desired, live.len()),
            });
        }
    }
}

/// The cloud's AZRebalance: when the group is at its capacity, every instance in service and
/// nothing else going on (no launch pending or backing off, no instance leaving), and a zone
/// launches may go to has two or more instances fewer than another, one launch in the least
/// populated zone; the next pass finds one instance too many and takes the newest of the most
/// populated zone. Launch first, then terminate: the group never dips below its capacity.
fn rebalance(
    input: &PlanInput<'_>,
    live: &[&PlanInstance],
    now: UnixMillis,
    actions: &mut Vec<Action>,
) {
    let settled = input
        .instances
        .iter()
        .all(|i| i.lifecycle == Lifecycle::InService && i.unhealthy.is_none());
    if !settled
        || input.launches.next_at.is_some_and(|at| at > now)
        || live.len() >= input.spec.max as usize
    {
        return;
    }
    let per_zone: Vec<(&str, usize)> = input
        .spec
        .zones
        .iter()
        .filter(|z| input.zones.iter().any(|known| known.name == **z))
        .map(|z| (z.as_str(), live.iter().filter(|i| i.zone == *z).count()))
        .collect();
    let (Some(least), Some(most)) = (
        per_zone.iter().min_by_key(|(_, n)| *n),
        per_zone.iter().max_by_key(|(_, n)| *n),
    ) else {
        return;
    };
    if most.1 < least.1 + 2 {
        return;
    }
    let before = actions.len();
    launch(input, live, 1, live.len() + 1, actions);
    if let Some(Action::Launch { cause, .. }) = actions.get_mut(before) {
        *cause = Cause::Rebalance {
            from_zone: most.0.to_string(),
            to_zone: least.0.to_string(),
        };
    }
}

/// `count` launches, each placed as if the ones before it were already running.
fn launch(
    input: &PlanInput<'_>,
    live: &[&PlanInstance],
    count: usize,
    desired: usize,
    actions: &mut Vec<Action>,
) {
    let spec = input.spec;
    let mut per_zone: Vec<(&str, usize)> = spec
        .zones
        .iter()
        .filter(|z| input.zones.iter().any(|known| known.name == **z))
        .map(|z| (z.as_str(), live.iter().filter(|i| i.zone == *z).count()))
        .collect();
    let mut taken: Vec<IpAddr> = input
        .addresses_in_use
        .iter()
        .copied()
        .chain(input.instances.iter().map(|i| i.address))
        .collect();
    for launched in 0..count {
        // `min_by_key` keeps the first of equals: ties go by the group's zone order.
        let Some((zone, in_zone)) = per_zone.iter_mut().min_by_key(|(_, n)| *n) else {
            return;
        };
        let Some(subnet) = input
            .zones
            .iter()
            .find(|z| z.name == *zone)
            .map(|z| z.subnet)
        else {
            return;
        };
        let slots = spec.max.saturating_mul(2).saturating_add(8);
        let free = (0..slots)
            .filter_map(|i| spec.instance_address(&subnet, i))
            .find(|a| !taken.contains(a) && !input.node_addresses.contains(a));
        let Some(address) = free else {
            actions.push(Action::NoFreeAddress {
                zone: zone.to_string(),
            });
            return;
        };
        actions.push(Action::Launch {
            zone: zone.to_string(),
            address,
            cause: capacity_cause(desired, live.len() + launched),
        });
        *in_zone += 1;
        taken.push(address);
    }
}

/// The newest instance of the most populated zone.
fn scale_in_victim<'i>(live: &[&'i PlanInstance]) -> Option<&'i PlanInstance> {
    let mut by_zone: BTreeMap<&str, Vec<&'i PlanInstance>> = BTreeMap::new();
    for i in live {
        by_zone.entry(i.zone.as_str()).or_default().push(i);
    }
    let (_, in_zone) = by_zone
        .into_iter()
        .max_by_key(|(zone, v)| (v.len(), Reverse(*zone)))?;
    // `max_by_key` keeps the last of equals: the one tracked last.
    in_zone.into_iter().max_by_key(|i| i.launched_at)
}

fn capacity_cause(desired: usize, running: usize) -> Cause {
    Cause::Capacity {
        desired: u32::try_from(desired).unwrap_or(u32::MAX),
        running: u32::try_from(running).unwrap_or(u32::MAX),
    }
}
