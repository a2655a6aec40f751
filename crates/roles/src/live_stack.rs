//! The stack a running tier follows: what `proxyfleet apply` changes. The controller reads it
//! on every pass (groups' bounds, scaling policies, health-check type and grace period) and
//! each host's instances follow it (security groups rewritten in the firewall, changed
//! template files rewritten and the instances told with SIGHUP), and each host's nodes take
//! target groups' new health checks and deregistration delays, and load balancers' listeners
//! added and removed ([`retune_nodes`]). The rest of the balancer keeps the stack it started
//! with (see `proxyfleet_stack::plan` for what that refuses).
//!
//! One process's agents share one ([`AgentConfig::live_stack`](crate::AgentConfig)); agents
//! on separate hosts each have their own and are not changed live yet.

use std::sync::Arc;

use proxyfleet_stack::Stack;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct LiveStack {
    sender: Arc<watch::Sender<Arc<Stack>>>,
}

impl LiveStack {
    pub fn new(stack: Stack) -> LiveStack {
        LiveStack {
            sender: Arc::new(watch::channel(Arc::new(stack)).0),
        }
    }

    /// The stack in force now.
    pub fn get(&self) -> Arc<Stack> {
        self.sender.borrow().clone()
    }

    /// Puts `stack` in force; everything following it is woken.
    pub fn set(&self, stack: Stack) {
        self.sender.send_replace(Arc::new(stack));
    }

    /// Wakes when the stack changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Stack>> {
        self.sender.subscribe()
    }
}

/// Follows `live` until `stop`: a target group whose health check or deregistration delay
/// changes is retuned on every node of `nodes`, a load balancer whose listeners change gets
/// them there.
pub async fn retune_nodes(
    live: LiveStack,
    nodes: Arc<crate::nodes::NodeSet>,
    stop: CancellationToken,
) {
    let mut changes = live.subscribe();
    let mut followed = live.get();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
        let now = live.get();
        let retuned: Vec<_> = now
            .target_groups
            .iter()
            .filter(|g| {
                followed.target_group(&g.name).is_some_and(|before| {
                    before.health_check != g.health_check
                        || before.deregistration_delay != g.deregistration_delay
                })
            })
            .cloned()
            .collect();
        let relistened: Vec<_> = now
            .load_balancers
            .iter()
            .filter(|l| {
                followed
                    .load_balancers
                    .iter()
                    .find(|b| b.name == l.name)
                    .is_some_and(|before| before.listeners != l.listeners)
            })
            .cloned()
            .collect();
        if !relistened.is_empty() {
            nodes.relisten(&relistened);
        }
        if !retuned.is_empty() {
            tracing::info!(
                groups = retuned.len(),
                "apply: target groups' health checks and deregistration delays retuned"
            );
            nodes.retune(&retuned);
        }
        followed = now;
    }
}
