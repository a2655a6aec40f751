//! Why something happened, as a type: the controller decides on the variant (is this the load
//! balancer's verdict?), and people read its text.
//!
//! The decision is [`Cause::is_load_balancer_health`], never a message's prefix; the sentences
//! come out of `Display` and [`Cause::activity_text`], worded as the activity history has
//! always worded them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a user asked for, through the CLI, the admin API or the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserRequest {
    /// `proxyfleet scale`: a new desired capacity.
    Scale,
    /// `proxyfleet terminate`: with `decrement_desired`, the group does not replace it.
    Terminate { decrement_desired: bool },
    /// Marked unhealthy by hand (the group replaces it).
    MarkUnhealthy,
}

/// The cause of a launch, a termination, a desired-capacity change or an unhealthy verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cause {
    User(UserRequest),
    /// The group had a different number of instances than its desired capacity (a launch, or a
    /// scale-in victim).
    Capacity {
        desired: u32,
        running: u32,
    },
    /// The target-tracking policy moved the desired capacity.
    TargetTracking {
        /// Active connections per instance when it decided.
        per_instance: f64,
        target: u32,
    },
    /// Every node that checks the instance in this target group finds it unhealthy.
    LoadBalancerHealth {
        target_group: String,
    },
    /// The instance's process ended; `status` as the launcher words it ("exited with status 1").
    ProcessExited {
        status: String,
    },
    /// A launch never reached InService; `detail` says how far it got.
    LaunchFailed {
        detail: String,
    },
    /// The host that ran the instance stopped renewing its liveness lease.
    HostLost {
        host: String,
    },
    /// The controller restarted and found the instance's process still running.
    Adopted,
    /// The controller restarted and the recorded pid no longer runs the instance.
    Lost {
        pid: u32,
    },
    /// The controller restarted while the instance was terminating.
    RestartedWhileTerminating,
    /// The controller is stopping (its group left the stack, or it lost its role).
    ControllerStopping,
    /// `proxyfleet up` (or the agent running the instance) is stopping.
    Shutdown,
    /// The group's zones were out of balance (the cloud's AZRebalance): a launch in the least
    /// populated zone, then the surplus taken from the most populated.
    Rebalance {
        from_zone: String,
        to_zone: String,
    },
    /// An instance refresh replaced it (a new instance from the launch template in force
    /// served first).
    InstanceRefresh,
}

impl Cause {
    /// The load balancer's health verdict: such replacements go one at a time and wait for the
    /// replacement to be healthy (the no-cascade rule), and the verdict is withdrawn when the
    /// checks pass again. No other cause is.
    pub fn is_load_balancer_health(&self) -> bool {
        matches!(self, Cause::LoadBalancerHealth { .. })
    }

    /// The activity history's wording when this cause takes an instance out of service.
    pub fn activity_text(&self) -> String {
        match self {
            Cause::LoadBalancerHealth { .. } => format!(
                "an instance was taken out of service in response to a load balancer health check failure ({self})"
            ),
            Cause::ProcessExited { status } => {
                format!("an instance was taken out of service because its process ended ({status})")
            }
            Cause::User(UserRequest::MarkUnhealthy) => {
                format!("an instance was taken out of service because it was {self}")
            }
            Cause::HostLost { host } => format!(
                "an instance was taken out of service because its host {host} stopped renewing its lease"
            ),
            _ => self.to_string(),
        }
    }
}

/// The short form: an instance's `reason` in status, or an activity's cause when no
/// instance is taken out of service.
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::User(UserRequest::Scale) => f.write_str("a user request (proxyfleet scale)"),
            Cause::User(UserRequest::Terminate {
                decrement_desired: true,
            }) => f.write_str(
                "a user request (proxyfleet terminate), decrementing the desired capacity",
            ),
            Cause::User(UserRequest::Terminate {
                decrement_desired: false,
            }) => f.write_str("a user request (proxyfleet terminate); the group will replace it"),
            Cause::User(UserRequest::MarkUnhealthy) => f.write_str("marked unhealthy by hand"),
            Cause::Capacity { desired, running } => write!(
                f,
                "the desired capacity is {desired} and {running} instances were running"
            ),
            Cause::TargetTracking {
                per_instance,
                target,
            } => write!(
                f,
                "target tracking: {per_instance:.1} active connections per instance against a target of {target}"
            ),
            Cause::LoadBalancerHealth { target_group } => write!(
                f,
                "load balancer health checks of target group {target_group} fail on every node"
            ),
            Cause::ProcessExited { status } => write!(f, "process {status}"),
            Cause::LaunchFailed { detail } => write!(f, "the launch failed: {detail}"),
            Cause::HostLost { host } => write!(f, "host {host} stopped renewing its lease"),
            Cause::Adopted => {
                f.write_str("the controller restarted and found the instance still running")
            }
            Cause::InstanceRefresh => f.write_str(
                "an instance refresh: a new instance from the launch template in force passed its health checks and warm-up first",
            ),
            Cause::Rebalance { from_zone, to_zone } => write!(
                f,
                "rebalancing the group's zones: zone {from_zone} had two or more instances more than zone {to_zone}"
            ),
            Cause::Lost { pid } => write!(
                f,
                "the controller restarted and pid {pid} no longer runs it"
            ),
            Cause::RestartedWhileTerminating => {
                f.write_str("the controller restarted while the instance was terminating")
            }
            Cause::ControllerStopping => f.write_str("the controller is stopping"),
            Cause::Shutdown => f.write_str("proxyfleet up is stopping"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_is_the_variant_not_the_text() {
        let lb = Cause::LoadBalancerHealth {
            target_group: "proxies".into(),
        };
        assert!(lb.is_load_balancer_health());
        // A cause whose text happens to start like the balancer's is still not its verdict.
        let exited = Cause::ProcessExited {
            status: "load balancer".into(),
        };
        assert!(!exited.is_load_balancer_health());
        assert!(!Cause::User(UserRequest::MarkUnhealthy).is_load_balancer_health());
    }

    #[test]
    fn words_causes_as_the_activity_history_does_today() {
        let lb = Cause::LoadBalancerHealth {
            target_group: "proxies".into(),
        };
        assert_eq!(
            lb.activity_text(),
            "an instance was taken out of service in response to a load balancer health check \
             failure (load balancer health checks of target group proxies fail on every node)"
        );
        let exited = Cause::ProcessExited {
            status: "exited with status 1".into(),
        };
        assert_eq!(exited.to_string(), "process exited with status 1");
        assert_eq!(
            exited.activity_text(),
            "an instance was taken out of service because its process ended (exited with status 1)"
        );
        assert_eq!(
            Cause::User(UserRequest::MarkUnhealthy).activity_text(),
            "an instance was taken out of service because it was marked unhealthy by hand"
        );
        assert_eq!(
            Cause::Capacity {
                desired: 2,
                running: 1
            }
            .activity_text(),
            "the desired capacity is 2 and 1 instances were running"
        );
        assert_eq!(
            Cause::TargetTracking {
                per_instance: 120.04,
                target: 100
            }
            .to_string(),
            "target tracking: 120.0 active connections per instance against a target of 100"
        );
    }
}
