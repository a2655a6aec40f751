//! Instances, their lifecycle and health, and activities: what the store keeps and the status
//! API shows. The types are the shared state's ([`proxyfleet_state::report`]), so the admin
//! API reads what the group controller writes without depending on this crate.

pub use proxyfleet_state::report::{
    now, Activity, ActivityStatus, GroupStatus, InstanceStatus as Instance,
};
pub use proxyfleet_state::{InstanceHealth, Lifecycle};
