//! What the running parts report of themselves, as the admin API, `proxyfleet status`, the
//! console and `/metrics` show it: a load balancer's counters and verdicts ([`balancer`]), a
//! group's instances and activities ([`group`]). `up` fills these from its balancer and group
//! controller, an agent from its own nodes and the shared state; the admin API reads only
//! these, never the data path's own types.

pub mod balancer;
pub mod group;

pub use balancer::{BalancerStatus, LbStatus, NodeStatus, TargetHealthStatus, TargetStatus};
pub use group::{now, Activity, ActivityStatus, GroupStatus, InstanceStatus};
