//! Typed changes to the shared state, who may write them, and the key each one touches.
//!
//! Agents report what they see on their host (lifecycle, process, target health, their own
//! heartbeat) unfenced; the controller alone writes desired state, and the store refuses such
//! a change unless it comes with the fence of the current leadership ([`Change::needs_leadership`]).
//! The leadership changes themselves are written only by the store's campaign and resign.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::cause::Cause;
use crate::model::{
    Group, Host, InstanceHealth, Leadership, Lifecycle, Process, Request, TargetHealth, Term,
};
use crate::time::UnixMillis;

/// One change; a batch of them is applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    // An agent's reports.
    /// An agent announces its host (again, after a restart: the address may have changed).
    RegisterHost {
        host: Host,
    },
    /// A host's sign of life in the state itself. Agents now hold a liveness lease instead
    /// ([`StateStore::hold_liveness`](crate::StateStore::hold_liveness)), which writes
    /// nothing; kept so that logs written before still read.
    Heartbeat {
        host: String,
        at: UnixMillis,
    },
    /// The node addresses the host serves now (replacing what it reported before).
    ReportNodes {
        host: String,
        nodes: std::collections::BTreeMap<String, crate::model::NodeHold>,
    },
    /// The instance's process exists on its host, and takes at most `capacity` connections
    /// at once (read from its configuration; `None`: not known).
    ReportProcess {
        instance: String,
        process: Process,
        #[serde(default)]
        capacity: Option<u32>,
        /// Its security groups are enforced (kernel firewall, or the proxy's own).
        #[serde(default)]
        protected: bool,
        /// Its host adopted the running process (after the agent restarted) rather than
        /// launching it.
        #[serde(default)]
        adopted: bool,
    },
    /// The instance moved on in its life (never back).
    ReportLifecycle {
        instance: String,
        lifecycle: Lifecycle,
        cause: Option<Cause>,
        at: UnixMillis,
    },
    /// The group's verdict on the instance (its process ended, the balancer's checks fail, a
    /// user marked it); `Healthy` clears the cause.
    ReportInstanceHealth {
        instance: String,
        health: InstanceHealth,
        cause: Option<Cause>,
    },
    /// A load-balancer node's view of a target changed.
    ReportTargetHealth {
        target_group: String,
        address: SocketAddr,
        /// `LB/ZONE`
        node: String,
        health: TargetHealth,
        reason: String,
        at: UnixMillis,
    },
    /// The flows a load-balancer node carries to a target now (written when the count
    /// changed, at most once a second: the target-tracking policy's reading).
    ReportTargetFlows {
        target_group: String,
        address: SocketAddr,
        /// `LB/ZONE`
        node: String,
        active_flows: u64,
    },

    /// `proxyfleet apply` changed the stack the tier follows (`summary`: the plan's steps):
    /// for the group's activity history; nothing else changes in the state.
    StackApplied {
        group: String,
        summary: String,
        at: UnixMillis,
    },

    // The controller's desired state (fenced).
    /// A group as the stack defines it (created, or its bounds changed).
    DefineGroup {
        group: Group,
    },
    /// An instance refresh started (`refresh`) or ended (`None`); `outcome` says how, in the
    /// activity history's words.
    SetRefresh {
        group: String,
        refresh: Option<crate::model::Refresh>,
        outcome: String,
        at: UnixMillis,
    },
    SetDesired {
        group: String,
        desired: u32,
        cause: Cause,
        /// When it was decided: a target-tracking change starts its direction's cooldown here.
        #[serde(default)]
        at: Option<UnixMillis>,
    },
    /// The group's churn stop started (`held`: why, in the activity history's words) or
    /// ended (`None`): replacements for the load balancer's verdict are held while an
    /// in-service instance that never passed the balancer's checks fails them.
    HoldReplacements {
        group: String,
        held: Option<String>,
        at: UnixMillis,
    },
    /// A new instance, Pending, not yet on any host.
    CreateInstance {
        id: String,
        group: String,
        zone: String,
        address: IpAddr,
        port: u16,
        cause: Cause,
        at: UnixMillis,
    },
    /// The host that is to run a Pending instance.
    AssignInstance {
        instance: String,
        host: String,
    },
    /// Drops a Terminated instance from the state (its history stays in the log).
    ForgetInstance {
        instance: String,
    },
    RegisterTarget {
        target_group: String,
        address: SocketAddr,
        zone: String,
        instance: Option<String>,
        at: UnixMillis,
    },
    /// Deregistered: no new flows, existing ones drain.
    DrainTarget {
        target_group: String,
        address: SocketAddr,
        at: UnixMillis,
    },
    RemoveTarget {
        target_group: String,
        address: SocketAddr,
    },

    // Operators' requests: any agent's API files one (unfenced); the controller carries it
    // out and closes it in the same fenced batch.
    FileRequest {
        request: Request,
    },
    /// The request was carried out (`refused: None`), or found impossible by then.
    CloseRequest {
        id: String,
        refused: Option<String>,
    },

    // The store's own, from campaign and resign; refused from `apply`.
    LeaderElected {
        leadership: Leadership,
    },
    LeadershipEnded {
        term: Term,
        end: LeadershipEnd,
    },
}

/// How a leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeadershipEnd {
    Resigned,
    /// Its lease was not renewed in time; recorded when the next leader is elected.
    LeaseExpired,
}

/// What a change is about: what a watch selects (etcd: a key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Host,
    Group,
    Instance,
    Target,
    Leadership,
    Request,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Host,
        Kind::Group,
        Kind::Instance,
        Kind::Target,
        Kind::Leadership,
        Kind::Request,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Host => "host",
            Kind::Group => "group",
            Kind::Instance => "instance",
            Kind::Target => "target",
            Kind::Leadership => "leadership",
            Kind::Request => "request",
        }
    }

    #[cfg_attr(not(feature = "stores"), allow(dead_code))] // the stores' own
    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// The one object a change touches: a row of the embedded store, a key under the etcd prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Host(String),
    Group(String),
    Instance(String),
    Target(String, SocketAddr),
    Leadership,
    Request(String),
}

impl Key {
    pub fn kind(&self) -> Kind {
        match self {
            Key::Host(_) => Kind::Host,
            Key::Group(_) => Kind::Group,
            Key::Instance(_) => Kind::Instance,
            Key::Target(..) => Kind::Target,
            Key::Leadership => Kind::Leadership,
            Key::Request(_) => Kind::Request,
        }
    }
}

/// The key as a path: `hosts/ID`, `groups/NAME`, `instances/ID`, `targets/GROUP/ADDR:PORT`,
/// `leadership`, `requests/ID`.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Host(id) => write!(f, "hosts/{id}"),
            Key::Group(name) => write!(f, "groups/{name}"),
            Key::Instance(id) => write!(f, "instances/{id}"),
            Key::Target(group, addr) => write!(f, "targets/{group}/{addr}"),
            Key::Leadership => f.write_str("leadership"),
            Key::Request(id) => write!(f, "requests/{id}"),
        }
    }
}

/// What a write is fenced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fence {
    /// An agent's report of its own facts: no leadership needed.
    Unfenced,
    /// The writer leads under this term; refused unless it is still the live leadership.
    Leader(Term),
}

impl Change {
    pub fn key(&self) -> Key {
        match self {
            Change::RegisterHost { host } => Key::Host(host.id.clone()),
            Change::Heartbeat { host, .. } | Change::ReportNodes { host, .. } => {
                Key::Host(host.clone())
            }
            Change::DefineGroup { group } => Key::Group(group.name.clone()),
            Change::SetDesired { group, .. }
            | Change::HoldReplacements { group, .. }
            | Change::StackApplied { group, .. }
            | Change::SetRefresh { group, .. } => Key::Group(group.clone()),
            Change::CreateInstance { id, .. } => Key::Instance(id.clone()),
            Change::ReportProcess { instance, .. }
            | Change::ReportLifecycle { instance, .. }
            | Change::ReportInstanceHealth { instance, .. }
            | Change::AssignInstance { instance, .. }
            | Change::ForgetInstance { instance } => Key::Instance(instance.clone()),
            Change::ReportTargetHealth {
                target_group,
                address,
                ..
            }
            | Change::ReportTargetFlows {
                target_group,
                address,
                ..
            }
            | Change::RegisterTarget {
                target_group,
                address,
                ..
            }
            | Change::DrainTarget {
                target_group,
                address,
                ..
            }
            | Change::RemoveTarget {
                target_group,
                address,
            } => Key::Target(target_group.clone(), *address),
            Change::LeaderElected { .. } | Change::LeadershipEnded { .. } => Key::Leadership,
            Change::FileRequest { request } => Key::Request(request.id.clone()),
            Change::CloseRequest { id, .. } => Key::Request(id.clone()),
        }
    }

    pub fn kind(&self) -> Kind {
        self.key().kind()
    }

    /// Desired state: only the controller writes it, fenced by its leadership.
    pub fn needs_leadership(&self) -> bool {
        matches!(
            self,
            Change::DefineGroup { .. }
                | Change::SetDesired { .. }
                | Change::HoldReplacements { .. }
                | Change::SetRefresh { .. }
                | Change::CreateInstance { .. }
                | Change::AssignInstance { .. }
                | Change::ForgetInstance { .. }
                | Change::RegisterTarget { .. }
                | Change::DrainTarget { .. }
                | Change::RemoveTarget { .. }
                | Change::CloseRequest { .. }
        )
    }

    /// Written only by the store itself (campaign, resign).
    pub fn is_reserved(&self) -> bool {
        matches!(
            self,
            Change::LeaderElected { .. } | Change::LeadershipEnded { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Change::RegisterHost { .. } => "RegisterHost",
            Change::Heartbeat { .. } => "Heartbeat",
            Change::ReportNodes { .. } => "ReportNodes",
            Change::ReportProcess { .. } => "ReportProcess",
            Change::ReportLifecycle { .. } => "ReportLifecycle",
            Change::ReportInstanceHealth { .. } => "ReportInstanceHealth",
            Change::ReportTargetHealth { .. } => "ReportTargetHealth",
            Change::ReportTargetFlows { .. } => "ReportTargetFlows",
            Change::DefineGroup { .. } => "DefineGroup",
            Change::SetDesired { .. } => "SetDesired",
            Change::HoldReplacements { .. } => "HoldReplacements",
            Change::StackApplied { .. } => "StackApplied",
            Change::SetRefresh { .. } => "SetRefresh",
            Change::CreateInstance { .. } => "CreateInstance",
            Change::AssignInstance { .. } => "AssignInstance",
            Change::ForgetInstance { .. } => "ForgetInstance",
            Change::RegisterTarget { .. } => "RegisterTarget",
            Change::DrainTarget { .. } => "DrainTarget",
            Change::RemoveTarget { .. } => "RemoveTarget",
            Change::LeaderElected { .. } => "LeaderElected",
            Change::LeadershipEnded { .. } => "LeadershipEnded",
            Change::FileRequest { .. } => "FileRequest",
            Change::CloseRequest { .. } => "CloseRequest",
        }
    }
}

/// `NAME KEY`, e.g. `SetDesired groups/proxies`: what an error names.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name(), self.key())
    }
}
