//! proxyfleet's roles as separate processes, on a shared [`StateStore`](proxyfleet_state::StateStore):
//!
//! - [`agent`]: one per host — announces the host and holds its liveness lease, runs its zone's
//!   load-balancer [`nodes`] (targets from the state, verdicts back to it) and the
//!   [`instances`] the controller assigned to it;
//! - [`controller`]: elected among the agents, the only writer of desired state, every write
//!   fenced by its leadership; what it writes is [`decide`]d from a snapshot, purely;
//! - [`dns`]: the stack's DNS name: the load-balancer nodes whose zone has healthy targets,
//!   served over UDP and TCP by every agent across hosts;
//! - [`holding`] (across hosts): node addresses that move between hosts, owned through the
//!   liveness lease, fenced when it cannot be renewed; [`isolated`]: what a host cut off from
//!   the store's majority serves meanwhile (addresses nobody on the segment answers for);
//!   [`addresses`]: adding, removing and announcing them;
//! - [`history`]: the activity history, read from the store's change log (continuous across
//!   leaders);
//! - [`report`]: the tier as `status` shows it, from a snapshot;
//! - [`view`]: each role's own copy of the state, current while the store answers and kept as
//!   it was while it does not — the data plane never waits for the control plane.
//!
//! `proxyfleet up` runs these same roles in one process (one agent per zone, an embedded
//! store).

pub mod activities;
pub mod addresses;
pub mod agent;
mod commands;
pub mod controller;
pub mod decide;
pub mod dns;
pub mod handover;
pub mod history;
pub mod holding;
pub mod instances;
pub mod isolated;
pub mod live_stack;
pub mod nodes;
pub mod report;
pub mod return_routes;
pub mod segment;
pub mod view;

pub use agent::{Agent, AgentConfig, AgentError};
pub use live_stack::LiveStack;
