//! Target tracking: keeps the active connections per in-service instance near a value, with
//! separate cooldowns for scaling out and in (the cloud's target-tracking policy, on the
//! load balancer's own flow counters).

use std::net::SocketAddr;
use std::time::Instant;

use proxyfleet_stack::Scaling;

use crate::model::{ActivityStatus, Lifecycle};
use crate::runtime::{GroupRuntime, Shared};

/// When the policy last changed the desired capacity, per direction.
#[derive(Debug, Default)]
pub struct Cooldowns {
    pub last_out: Option<Instant>,
    pub last_in: Option<Instant>,
}

/// The capacity that puts `active` connections at `target` per instance, within bounds.
pub fn wanted(active: u64, target: u32, min: u32, max: u32) -> u32 {
    let target = u64::from(target.max(1));
    let needed = active.div_ceil(target).min(u64::from(u32::MAX)) as u32;
    needed.clamp(min, max)
}

/// One evaluation of the policy; changes the desired capacity when it should.
pub fn evaluate(shared: &Shared, group: &GroupRuntime, policy: &Scaling) {
    let addrs: Vec<String> = group
        .lock()
        .instances
        .iter()
        .filter(|t| t.info.lifecycle == Lifecycle::InService)
        .map(|t| SocketAddr::new(t.info.address, t.info.port).to_string())
        .collect();
    if addrs.is_empty() {
        return;
    }
    let status = shared.balancer.status();
    let active: u64 = status
        .targets
        .iter()
        .filter(|t| group.spec.target_groups.contains(&t.group) && addrs.contains(&t.id))
        .map(|t| t.active_flows)
        .sum();
    let spec = &group.spec;
    let want = wanted(
        active,
        policy.target_active_connections_per_instance,
        spec.min,
        spec.max,
    );
    let mut state = group.lock();
    let now = Instant::now();
    let cooled = |at: Option<Instant>, cooldown| {
        at.is_none_or(|t: Instant| now.duration_since(t) >= cooldown)
    };
    let old = state.desired;
    let change = if want > old && cooled(state.cooldowns.last_out, policy.scale_out_cooldown) {
        state.cooldowns.last_out = Some(now);
        true
    } else if want < old
        && cooled(state.cooldowns.last_in, policy.scale_in_cooldown)
        && cooled(state.cooldowns.last_out, policy.scale_in_cooldown)
    {
        state.cooldowns.last_in = Some(now);
        true
    } else {
        false
    };
    if !change {
        return;
    }
    state.desired = want;
    drop(state);
    let _ = shared.store.set_desired(&spec.name, want);
    let per = active as f64 / addrs.len() as f64;
    let _ = shared.store.record(
        &spec.name,
        &format!("Setting desired capacity from {old} to {want}"),
        &format!(
            "target tracking: {per:.1} active connections per instance against a target of {}",
            policy.target_active_connections_per_instance
        ),
        ActivityStatus::Successful,
    );
    tracing::info!(group = %spec.name, from = old, to = want, active, "target tracking changed the desired capacity");
    group.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn capacity_follows_the_load_within_bounds() {
        assert_eq!(wanted(0, 100, 1, 4), 1);
        assert_eq!(wanted(100, 100, 1, 4), 1);
        assert_eq!(wanted(101, 100, 1, 4), 2);
        assert_eq!(wanted(350, 100, 1, 4), 4);
        assert_eq!(wanted(10_000, 100, 1, 4), 4);
        assert_eq!(
            wanted(5, 0, 2, 4),
            4,
            "a zero target counts as one connection per instance"
        );
    }
}
