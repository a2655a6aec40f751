//! proxyfleet's Layer-4 load balancer, with the semantics of a cloud network load balancer.
//!
//! - [`spec`]: what to run (load balancers, nodes, listeners, target groups, health checks);
//! - [`balancer`]: the control plane — binds the listeners of every node it runs (all of
//!   them in `up`, one host's in an agent), registers and drains targets (by hand, or
//!   following a [`discovery`] source), runs a [`health`] check loop per node per target,
//!   publishes every health transition as an [`events`] event, reports [`status`];
//! - [`group`]: a target group's registered targets, their counters, and the [`maglev`]
//!   table over them;
//! - [`routes`]: one node's view of one group — target health from its checks and from the
//!   data path — resolved into the table the data path reads, swapped atomically (ArcSwap);
//! - [`flow`]: the data path — accept, pick by the flow's 5-tuple, connect from the client's
//!   address ([`connect`]) with a PROXY v2 header ([`proxy_header`]) if asked, retry a failed
//!   connect on the next target, then [`relay`] bytes (splice(2) on Linux).

pub mod balancer;
pub mod connect;
pub mod discovery;
pub mod events;
pub mod flow;
pub mod group;
pub mod health;
pub mod maglev;
pub mod proxy_header;
/// The byte relay is its own crate: the proxy's CONNECT tunnels use it too.
pub use proxyfleet_relay as relay;
pub mod routes;
pub mod spec;
pub mod status;

pub use balancer::{Balancer, LbError, Limits, ProcessBudget};
pub use discovery::{DesiredTarget, TargetSource};
pub use events::HealthEvent;
pub use health::Health;
