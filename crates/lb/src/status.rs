//! The balancer's report for the CLI, the admin API and metrics: the types are the shared
//! state's ([`proxyfleet_state::report`]), filled here from the balancer's own counters.

use std::sync::atomic::Ordering;

pub use proxyfleet_state::report::{
    BalancerStatus, LbStatus, NodeStatus, TargetHealthStatus, TargetStatus,
};

use crate::group::Target;

/// A target's counters as they stand, with each node's verdict on it.
pub fn target_status(group: &str, t: &Target, health: Vec<TargetHealthStatus>) -> TargetStatus {
    let s = &t.stats;
    TargetStatus {
        group: group.to_string(),
        id: t.id.clone(),
        zone: t.zone.clone(),
        draining: t.is_draining(),
        health,
        active_flows: s.active_flows.load(Ordering::Relaxed),
        new_flows: s.new_flows.load(Ordering::Relaxed),
        bytes_to_target: s.bytes_to_target.load(Ordering::Relaxed),
        bytes_to_client: s.bytes_to_client.load(Ordering::Relaxed),
        connect_failures: s.connect_failures.load(Ordering::Relaxed),
        health_transitions: s.health_transitions.load(Ordering::Relaxed),
        max_flows: t.max_flows(),
        skipped_full: s.skipped_full.load(Ordering::Relaxed),
        checks_not_run: s.checks_not_run.load(Ordering::Relaxed),
    }
}
