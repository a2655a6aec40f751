//! Zones and sizes: where instances are against where the load balancer nodes are.

use proxyfleet_lb::spec::{LoadBalancerSpec, TargetGroupSpec};

use super::{list, plural, unique, Findings};
use crate::{Group, Stack};

/// Fewer instances than zones, and zones no load balancer of the group's target groups
/// serves.
pub(super) fn group(stack: &Stack, group: &Group, out: &mut Findings) {
    let object = format!("groups.{}", group.name);
    let zones = group.zones.len();
    if (group.desired as usize) < zones {
        out.warning(
            &object,
            format!(
                "desired {} is fewer than its {zones} zones ({}): at least one zone has no \
                 instance",
                group.desired,
                list(&group.zones)
            ),
        );
    }
    for lb in &stack.load_balancers {
        let sends_here = lb
            .listeners
            .iter()
            .any(|l| group.target_groups.contains(&l.target_group));
        if !sends_here {
            continue;
        }
        let served: Vec<&str> = lb.nodes.iter().map(|n| n.zone.as_str()).collect();
        let unserved: Vec<&String> = group
            .zones
            .iter()
            .filter(|z| !served.contains(&z.as_str()))
            .collect();
        if unserved.is_empty() {
            continue;
        }
        out.warning(
            &object,
            format!(
                "{} {} {} not one of load balancer {}'s zones ({}): its instances there get no \
                 traffic from it",
                plural(unserved.len(), "zone", "zones"),
                list(&unserved),
                plural(unserved.len(), "is", "are"),
                lb.name,
                list(&served),
            ),
        );
    }
}

/// Without cross-zone balancing, a node whose zone holds no target of a target group sends
/// every flow to other zones: it works, but the zone's redundancy is gone.
pub(super) fn load_balancer(stack: &Stack, lb: &LoadBalancerSpec, out: &mut Findings) {
    if lb.cross_zone {
        return;
    }
    let object = format!("load_balancers.{}", lb.name);
    let target_groups = unique(lb.listeners.iter().map(|l| &l.target_group));
    for tg in target_groups
        .into_iter()
        .filter_map(|n| stack.target_group(n))
    {
        let zones = target_zones(stack, tg);
        if zones.is_empty() {
            continue; // no targets at all: see target_group
        }
        for node in lb
            .nodes
            .iter()
            .filter(|n| !zones.contains(&n.zone.as_str()))
        {
            out.warning(
                &object,
                format!(
                    "node {} ({}) has no target of target group {} in its zone and cross_zone \
                     is false: it always falls back to the other zones' targets",
                    node.zone, node.address, tg.name
                ),
            );
        }
    }
}

/// A target group that listeners forward to but nothing registers with.
pub(super) fn target_group(stack: &Stack, tg: &TargetGroupSpec, out: &mut Findings) {
    let listeners: Vec<String> = stack
        .load_balancers
        .iter()
        .flat_map(|lb| {
            lb.listeners
                .iter()
                .filter(|l| l.target_group == tg.name)
                .map(|l| format!("{}:{}", lb.name, l.port))
        })
        .collect();
    if listeners.is_empty() || !target_zones(stack, tg).is_empty() {
        return;
    }
    out.error(
        &format!("target_groups.{}", tg.name),
        format!(
            "{} {} {} to it, but it has no targets (no group registers with it and it lists \
             none): every connection will be closed",
            plural(listeners.len(), "listener", "listeners"),
            list(&listeners),
            plural(listeners.len(), "forwards", "forward"),
        ),
    );
}

/// The zones a target group's targets are in: its listed targets' and the zones of the
/// groups that register with it.
fn target_zones<'a>(stack: &'a Stack, tg: &'a TargetGroupSpec) -> Vec<&'a str> {
    let listed = tg.targets.iter().map(|t| t.zone.as_str());
    let registered = stack
        .groups
        .iter()
        .filter(|g| g.target_groups.contains(&tg.name))
        .flat_map(|g| g.zones.iter().map(String::as_str));
    unique(listed.chain(registered))
}
