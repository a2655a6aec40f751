//! The shared state: hosts, groups, instances, targets and the leadership, as one
//! [`Snapshot`] at a [`Revision`].
//!
//! Names and states are the ones `proxyfleet-group` (`model.rs`) and `proxyfleet-lb`
//! (`health`, `status.rs`) use, so the controller and the balancer move onto these types
//! without renaming anything. Every time is wall-clock ([`UnixMillis`]); nothing here holds an
//! `Instant`, which would mean nothing in another process.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::cause::Cause;
use crate::time::UnixMillis;

/// A position in the store's history: every atomic [`apply`](crate::StateStore::apply) gets
/// the next one (etcd: the transaction's revision). 0 is the empty store.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision after this one: where a watch starts after a snapshot at `self`.
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A leadership's fencing token: strictly increasing over every campaign the store ever
/// granted, restarts included, so a token is never handed out twice.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A machine that runs an agent (on one machine, `up`'s single host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub id: String,
    pub address: IpAddr,
    pub zone: String,
    pub last_heartbeat: UnixMillis,
    /// The load-balancer nodes (`LB/ZONE`) whose address this host serves, as its agent last
    /// reported them ([`Change::ReportNodes`](crate::Change::ReportNodes)): what hands a node
    /// address from host to host without two holding it at once.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeHold>,
}

/// How a host holds a node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeHold {
    /// It serves the address.
    Holding,
    /// It serves the address until another host takes it (a planned move: make before
    /// break).
    Releasing,
}

/// What an operator asked of the tier through an agent's API (`scale`, `terminate`, marking
/// an instance's health). Any agent files it; the controller, the only writer of desired
/// state, carries it out and closes it in one fenced batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    /// The agent whose API took it.
    pub filed_by: String,
    /// The filing agent's clock: shown, never ordered by (hosts' clocks differ).
    pub at: UnixMillis,
    pub ask: Ask,
    /// Its place in the filing order, given by the store when it takes the request
    /// (whatever the filer wrote): requests are carried out in this order.
    #[serde(default)]
    pub seq: u64,
}

/// At most this many requests wait for the controller at once; the next is refused (the
/// state stays small while no controller is elected and scripts retry).
pub const MAX_OPEN_REQUESTS: usize = 256;

/// The operator's ask (the cloud's SetDesiredCapacity, TerminateInstanceInAutoScalingGroup,
/// SetInstanceHealth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    Scale {
        group: String,
        desired: u32,
    },
    Terminate {
        instance: String,
        decrement_desired: bool,
    },
    SetHealth {
        instance: String,
        healthy: bool,
    },
    /// Start an instance refresh of `group` (the cloud's StartInstanceRefresh).
    Refresh {
        group: String,
        min_healthy_percentage: u32,
    },
    /// Cancel the group's instance refresh (the instances replaced so far stay).
    CancelRefresh {
        group: String,
    },
}

impl fmt::Display for Ask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ask::Scale { group, desired } => write!(f, "scale {group} to {desired}"),
            Ask::Terminate {
                instance,
                decrement_desired: false,
            } => write!(f, "terminate {instance}"),
            Ask::Terminate {
                instance,
                decrement_desired: true,
            } => write!(f, "terminate {instance} and decrement the desired capacity"),
            Ask::SetHealth {
                instance,
                healthy: true,
            } => write!(f, "mark {instance} healthy"),
            Ask::SetHealth {
                instance,
                healthy: false,
            } => write!(f, "mark {instance} unhealthy"),
            Ask::Refresh {
                group,
                min_healthy_percentage,
            } => write!(
                f,
                "refresh the instances of {group} (min healthy {min_healthy_percentage} %)"
            ),
            Ask::CancelRefresh { group } => write!(f, "cancel the instance refresh of {group}"),
        }
    }
}

/// A group's capacity (the stack's group plus the desired capacity the controller keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// When the target-tracking policy last raised the desired capacity (its scale-out
    /// cooldown counts from here), and last lowered it.
    #[serde(default)]
    pub last_scale_out: Option<UnixMillis>,
    #[serde(default)]
    pub last_scale_in: Option<UnixMillis>,
    /// Set while the churn stop holds replacements for the load balancer's verdict: why.
    #[serde(default)]
    pub replacements_held: Option<String>,
    /// Set while an instance refresh runs.
    #[serde(default)]
    pub refresh: Option<Refresh>,
    /// How the last instance refresh ended.
    #[serde(default)]
    pub last_refresh: Option<String>,
}

/// An instance refresh in progress: every instance launched before `started_at` is replaced,
/// one at a time, by one launched from the template in force, which must pass the load
/// balancer's health checks and the group's warm-up (its grace period) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    pub started_at: UnixMillis,
    pub min_healthy_percentage: u32,
}

impl Group {
    /// A group with these bounds that the policy has not yet scaled.
    pub fn new(name: &str, min: u32, max: u32, desired: u32) -> Group {
        Group {
            name: name.to_string(),
            min,
            max,
            desired,
            last_scale_out: None,
            last_scale_in: None,
            replacements_held: None,
            refresh: None,
            last_refresh: None,
        }
    }
}

/// An instance's place in its life (the cloud's lifecycle states). It only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Launched; its process is starting and not yet serving.
    Pending,
    /// Serving and registered with its target groups.
    InService,
    /// Deregistered and draining, then stopped.
    Terminating,
    Terminated,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Pending => "Pending",
            Lifecycle::InService => "InService",
            Lifecycle::Terminating => "Terminating",
            Lifecycle::Terminated => "Terminated",
        }
    }

    /// The inverse of [`Lifecycle::as_str`].
    pub fn parse(s: &str) -> Option<Lifecycle> {
        Some(match s {
            "Pending" => Lifecycle::Pending,
            "InService" => Lifecycle::InService,
            "Terminating" => Lifecycle::Terminating,
            "Terminated" => Lifecycle::Terminated,
            _ => return None,
        })
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The group's verdict on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceHealth {
    Healthy,
    Unhealthy,
}

/// The process that runs an instance on its host: with the pid, the start time (clock ticks
/// since boot) tells a surviving instance from an unrelated process that reused the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub start_ticks: u64,
}

/// One instance of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub group: String,
    pub zone: String,
    pub address: IpAddr,
    pub port: u16,
    /// The host that runs it; `None` until the controller assigns one.
    pub host: Option<String>,
    pub lifecycle: Lifecycle,
    /// When `lifecycle` last changed (the grace period counts from InService).
    pub since: UnixMillis,
    pub health: InstanceHealth,
    /// Why it is unhealthy, or what last happened to it.
    pub reason: Option<Cause>,
    pub launched_at: UnixMillis,
    /// Reported by its host once the process exists.
    pub process: Option<Process>,
    /// When it first reached InService (`None`: it never served — after it is Terminated,
    /// a failed launch, which the group's launch back-off counts).
    #[serde(default)]
    pub in_service_at: Option<UnixMillis>,
    /// The most connections it takes at once, as its host read it from the configuration it
    /// was started with (a `proxyfleet proxy`'s client cap); `None`: not known. The nodes
    /// cap its target at this unless its target group sets `target_max_connections`.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Whether its security groups are enforced (by the kernel on its host, or by a
    /// `proxyfleet proxy` instance itself), as its host reported.
    #[serde(default)]
    pub protected: bool,
}

impl Instance {
    /// Its address and port: its id as a target.
    pub fn target_address(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// A target's health (the cloud's target states; `proxyfleet-lb`'s `Health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TargetHealth {
    /// Registered; not yet enough checks passed.
    Initial,
    Healthy,
    Unhealthy,
    /// Deregistered: no new flows; existing flows run until they end or the delay passes.
    Draining,
    /// In a zone the load balancer does not serve.
    Unused,
}

impl TargetHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetHealth::Initial => "initial",
            TargetHealth::Healthy => "healthy",
            TargetHealth::Unhealthy => "unhealthy",
            TargetHealth::Draining => "draining",
            TargetHealth::Unused => "unused",
        }
    }
}

/// One load-balancer node's view of a target (`proxyfleet-lb`'s `TargetHealthStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub health: TargetHealth,
    /// The check's own words ("connection refused"); shown, never decided on.
    pub reason: String,
    pub since: UnixMillis,
    /// The flows this node carries to the target, as last reported (the target-tracking
    /// policy sums them over the nodes).
    #[serde(default)]
    pub active_flows: u64,
}

/// A registered target of a target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub target_group: String,
    pub address: SocketAddr,
    pub zone: String,
    /// The instance it is, if a group registered it.
    pub instance: Option<String>,
    /// Draining once deregistered; otherwise what the nodes see, summed up by
    /// [`Target::summary`].
    pub state: TargetHealth,
    /// When `state` last changed.
    pub since: UnixMillis,
    /// Each node's view, by node (`LB/ZONE`).
    pub nodes: BTreeMap<String, NodeView>,
    /// Some node has found it healthy since it was registered (a replacement is proven only
    /// then: the group's churn stop reads it).
    #[serde(default)]
    pub ever_healthy: bool,
}

impl Target {
    /// The target's state from its nodes' views: Healthy if any node sees it healthy (a flow
    /// can reach it), Unhealthy only if every node that checks it finds it unhealthy (the
    /// group's rule for replacing it), Unused if no node serves its zone, else Initial.
    pub fn summary(nodes: &BTreeMap<String, NodeView>) -> TargetHealth {
        let checked: Vec<TargetHealth> = nodes
            .values()
            .map(|v| v.health)
            .filter(|h| *h != TargetHealth::Unused)
            .collect();
        if checked.contains(&TargetHealth::Healthy) {
            TargetHealth::Healthy
        } else if !checked.is_empty() && checked.iter().all(|h| *h == TargetHealth::Unhealthy) {
            TargetHealth::Unhealthy
        } else if checked.is_empty() && !nodes.is_empty() {
            TargetHealth::Unused
        } else {
            TargetHealth::Initial
        }
    }
}

/// Who leads the controller role, under which fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The candidate's id (an agent's host id; `up` for the embedded default).
    pub leader: String,
    pub term: Term,
    /// The lease's time to live: the leader must renew within it.
    pub ttl_ms: u64,
    pub elected_at: UnixMillis,
}

impl Leadership {
    /// The fence for this leadership's writes.
    pub fn fence(&self) -> crate::Fence {
        crate::Fence::Leader(self.term)
    }
}

/// The whole shared state at one revision. Applying the changes logged after that revision
/// ([`Snapshot::apply`]) gives the state at any later one: a watcher keeps its copy current
/// that way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hosts: BTreeMap<String, Host>,
    pub groups: BTreeMap<String, Group>,
    pub instances: BTreeMap<String, Instance>,
    /// By target group, then address.
    pub targets: BTreeMap<String, BTreeMap<SocketAddr, Target>>,
    /// The last leadership granted. Whether its lease is still alive is the store's to say
    /// ([`StateStore::leader`](crate::StateStore::leader)): a lapse is not a change.
    pub leadership: Option<Leadership>,
    /// Operators' requests not yet carried out, by id.
    #[serde(default)]
    pub requests: BTreeMap<String, Request>,
    /// How many requests were ever filed: the next one's [`Request::seq`].
    #[serde(default)]
    pub requests_filed: u64,
}

impl Snapshot {
    pub fn target(&self, target_group: &str, address: SocketAddr) -> Option<&Target> {
        self.targets.get(target_group)?.get(&address)
    }

    /// Instances not yet Terminated (what a restarted controller must adopt or replace).
    pub fn live_instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances
            .values()
            .filter(|i| i.lifecycle != Lifecycle::Terminated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(health: TargetHealth) -> NodeView {
        NodeView {
            health,
            reason: String::new(),
            since: UnixMillis(0),
            active_flows: 0,
        }
    }

    fn nodes(views: &[TargetHealth]) -> BTreeMap<String, NodeView> {
        views
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("lb/{i}"), view(*h)))
            .collect()
    }

    #[test]
    fn a_target_is_unhealthy_only_when_every_checking_node_says_so() {
        use TargetHealth::*;
        assert_eq!(Target::summary(&nodes(&[])), Initial);
        assert_eq!(Target::summary(&nodes(&[Initial, Unhealthy])), Initial);
        assert_eq!(Target::summary(&nodes(&[Healthy, Unhealthy])), Healthy);
        assert_eq!(Target::summary(&nodes(&[Unhealthy, Unhealthy])), Unhealthy);
        assert_eq!(Target::summary(&nodes(&[Unhealthy, Unused])), Unhealthy);
        assert_eq!(Target::summary(&nodes(&[Unused, Unused])), Unused);
    }

    #[test]
    fn lifecycle_orders_as_it_moves() {
        assert!(Lifecycle::Pending < Lifecycle::InService);
        assert!(Lifecycle::InService < Lifecycle::Terminating);
        assert!(Lifecycle::Terminating < Lifecycle::Terminated);
    }
}
