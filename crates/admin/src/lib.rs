//! proxyfleet's admin HTTP API (and metrics): what `status`, `activity`, `scale`,
//! `terminate` and `down` talk to.
//!
//! The API serves whatever implements [`Control`]: `up` implements it over the running
//! balancer and group controller; tests implement it with fixed data.

use proxyfleet_group::model::{Activity, GroupStatus};
use proxyfleet_lb::status::BalancerStatus;

/// What the admin API can ask of a running stack. Errors are messages for the caller.
pub trait Control: Send + Sync + 'static {
    /// The stack file's text (or the built-in stack's).
    fn stack_text(&self) -> String;
    fn balancer(&self) -> BalancerStatus;
    fn groups(&self) -> Vec<GroupStatus>;
    /// Newest first.
    fn activities(&self, group: Option<&str>, limit: usize) -> Vec<Activity>;
    fn scale(&self, group: &str, desired: u32) -> Result<(), String>;
    /// Terminates an instance; the group replaces it unless `decrement_desired`.
    fn terminate(&self, instance: &str, decrement_desired: bool) -> Result<(), String>;
    /// Marks an instance healthy or unhealthy by hand (the cloud's SetInstanceHealth).
    fn set_instance_health(&self, instance: &str, healthy: bool) -> Result<(), String>;
    /// Asks `up` to stop (what `proxyfleet down` does).
    fn shutdown(&self);
}
