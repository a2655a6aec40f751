//! How many file descriptors a stack needs in the process that runs its load balancer (`up`
//! today, an agent later), so that a stack the open-file limit cannot carry gets a cap on its
//! flows, with a warning, before a flood of connections finds out (EMFILE in the middle of
//! serving: health checks that cannot open a socket, flows refused).
//!
//! Two descriptors per balanced flow (client and target), one per health check in flight
//! (every node checks every target of the groups its listeners serve), and a fixed reserve
//! for the admin API, its event streams, the state database, logs and listeners.
//!
//! The checks and the reserve are kept out of what flows may use: when the limit is too low
//! for every node's `max_connections`, flows are capped at what is left after them
//! ([`flow_limit`]), so with every flow open a health check still finds a descriptor and the
//! admin API still answers. splice(2) pipes (two descriptors for each bulk direction) come
//! only from what flows, checks and the reserve leave over ([`limits`]); with none left, bulk
//! flows are copied through a buffer instead.

use proxyfleet_lb::Limits;

use crate::Stack;

/// The admin API's open connections at most: 512 on its TCP port and 64 on its Unix socket
/// (`proxyfleet_admin::MAX_CONNECTIONS` and `SOCKET_LIMITS`, which the `proxyfleet` crate
/// checks against this number; event streams are among them).
pub const ADMIN_CONNECTIONS: u64 = 512 + 64;

/// The admin API's connections, the state database, logs, listeners, the runtime itself.
pub const RESERVED: u64 = ADMIN_CONNECTIONS + 192;

/// What a stack needs, by use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// Two per flow, at every node's `max_connections`.
    pub flows: u64,
    /// One per health check in flight.
    pub checks: u64,
    pub reserved: u64,
}

impl DescriptorBudget {
    pub fn of(stack: &Stack) -> DescriptorBudget {
        let mut flows = 0u64;
        let mut checks = 0u64;
        for lb in &stack.load_balancers {
            let nodes = lb.nodes.len() as u64;
            flows += nodes * lb.max_connections as u64 * 2;
            let mut served: Vec<&str> = lb
                .listeners
                .iter()
                .map(|l| l.target_group.as_str())
                .collect();
            served.dedup();
            for tg in served {
                checks += nodes * targets_at_most(stack, tg);
            }
        }
        DescriptorBudget {
            flows,
            checks,
            reserved: RESERVED,
        }
    }

    pub fn total(&self) -> u64 {
        self.flows + self.checks + self.reserved
    }
}

/// The most targets a target group can have: its static targets and every group's `max`
/// that registers with it.
fn targets_at_most(stack: &Stack, tg: &str) -> u64 {
    let fixed = stack.target_group(tg).map_or(0, |t| t.targets.len() as u64);
    let grouped: u64 = stack
        .groups
        .iter()
        .filter(|g| g.target_groups.iter().any(|t| t == tg))
        .map(|g| u64::from(g.max))
        .sum();
    fixed + grouped
}

/// The most flows the balancer may hold at once, across all its nodes, for a stack needing
/// `budget` to fit in `limit` descriptors: `None` when every node can fill its `max_connections` anyway.
/// Nodes keep their own `max_connections`; only the total is capped, so a busy node may use
/// what idle ones do not.
pub fn flow_limit(budget: &DescriptorBudget, limit: u64) -> Option<usize> {
    if budget.total() <= limit {
        return None;
    }
    let for_flows = limit.saturating_sub(budget.checks + budget.reserved);
    Some(((for_flows / 2) as usize).max(1))
}

/// [`flow_limit`], and the splice pipes that fit beside the flows at their cap (or at every
/// node's `max_connections`), the checks and the reserve.
pub fn limits(budget: &DescriptorBudget, limit: u64) -> Limits {
    let flows = flow_limit(budget, limit);
    let flow_descriptors = flows.map_or(budget.flows, |f| f as u64 * 2);
    let spare = limit.saturating_sub(flow_descriptors + budget.checks + budget.reserved);
    Limits {
        flows,
        pipes: Some(usize::try_from(spare / 2).unwrap_or(usize::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_stack_needs_two_descriptors_per_flow_plus_checks() {
        let stack = crate::builtin();
        let b = DescriptorBudget::of(&stack);
        // 2 nodes x 10,000 flows x 2; 2 nodes x 2 instances checked.
        assert_eq!(b.flows, 40_000);
        assert_eq!(b.checks, 4);
        assert_eq!(b.total(), 40_000 + 4 + RESERVED);
    }

    #[test]
    fn the_flow_limit_fits_the_open_file_limit() {
        let budget = DescriptorBudget::of(&crate::builtin());
        assert_eq!(flow_limit(&budget, 1_000_000), None);
        let flows = flow_limit(&budget, 20_000).expect("40,772 do not fit in 20,000");
        assert_eq!(flows, (20_000 - 4 - RESERVED as usize) / 2);
        assert!(flows as u64 * 2 + 4 + RESERVED <= 20_000);
        assert_eq!(flow_limit(&budget, 10), Some(1), "never zero");
    }

    #[test]
    fn pipes_get_only_what_flows_checks_and_the_reserve_leave() {
        let budget = DescriptorBudget::of(&crate::builtin());
        let l = limits(&budget, 50_000);
        assert_eq!(l.flows, None, "40,772 fit in 50,000");
        assert_eq!(l.pipes, Some((50_000 - budget.total() as usize) / 2));
        let l = limits(&budget, 20_000);
        assert_eq!(l.flows, flow_limit(&budget, 20_000));
        assert_eq!(l.pipes, Some(0), "capped flows leave nothing over");
        assert_eq!(limits(&budget, 10).pipes, Some(0));
    }
}
