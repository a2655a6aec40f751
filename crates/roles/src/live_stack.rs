//! The stack a running tier follows: what `proxyfleet apply` changes. The controller reads it
//! on every pass (groups' bounds, scaling policies, health-check type and grace period) and
//! each host's instances follow it (security groups rewritten in the firewall, changed
//! template files rewritten and the instances told with SIGHUP). The load balancer's nodes
//! keep the stack they started with (see `proxyfleet_stack::plan` for what that refuses).
//!
//! One process's agents share one ([`AgentConfig::live_stack`](crate::AgentConfig)); agents
//! on separate hosts each have their own and are not changed live yet.

use std::sync::Arc;

use proxyfleet_stack::Stack;
use tokio::sync::watch;

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
