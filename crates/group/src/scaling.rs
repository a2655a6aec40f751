//! Target tracking: keeps the active connections per in-service instance near a value, with
//! separate cooldowns for scaling out and in (the cloud's target-tracking policy, on the
//! load balancer's own flow counters). The decision is the planner's (`crate::planner`);
//! here are the capacity rule and the reading of the counters.

use std::net::SocketAddr;

use proxyfleet_lb::Balancer;
use proxyfleet_state::UnixMillis;

/// When the policy last changed the desired capacity, per direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cooldowns {
    pub last_out: Option<UnixMillis>,
    pub last_in: Option<UnixMillis>,
}

/// The capacity that puts `active` connections at `target` per instance, within bounds.
pub fn wanted(active: u64, target: u32, min: u32, max: u32) -> u32 {
    let target = u64::from(target.max(1));
    let needed = active.div_ceil(target).min(u64::from(u32::MAX)) as u32;
    needed.clamp(min, max)
}

/// The active flows to `targets` in the group's target groups, as the balancer counts them.
pub fn active_connections(
    balancer: &Balancer,
    target_groups: &[String],
    targets: &[SocketAddr],
) -> u64 {
    let ids: Vec<String> = targets.iter().map(SocketAddr::to_string).collect();
    balancer
        .status()
        .targets
        .iter()
        .filter(|t| target_groups.contains(&t.group) && ids.contains(&t.id))
        .map(|t| t.active_flows)
        .sum()
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
