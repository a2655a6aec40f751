//! What `proxyfleet status` shows of a tier of agents: hosts with their roles and liveness,
//! the leader, groups, instances and targets, read from the store (no agent is asked: any
//! machine that reaches the store can look).

use std::net::{IpAddr, SocketAddr};

use proxyfleet_state::{Leadership, Revision, Snapshot, UnixMillis};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TierStatus {
    /// The store's revision the snapshot is at.
    pub revision: u64,
    /// The live leadership (`None`: no controller now).
    pub leader: Option<LeaderView>,
    pub hosts: Vec<HostView>,
    pub groups: Vec<GroupView>,
    pub instances: Vec<InstanceView>,
    pub targets: Vec<TargetView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaderView {
    pub host: String,
    pub term: u64,
    pub elected_at: UnixMillis,
    pub lease_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub id: String,
    pub zone: String,
    pub address: IpAddr,
    /// When its agent last announced it (started).
    pub announced_at: UnixMillis,
    pub announced_ms_ago: u64,
    /// Its liveness lease holds.
    pub live: bool,
    /// `agent`, and `controller` for the leader's host.
    pub roles: Vec<String>,
    /// The node addresses it reports holding across hosts (`LB/ZONE`, with ` (releasing)`
    /// while a planned move hands one over).
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub name: String,
    pub min: u32,
    pub desired: u32,
    pub max: u32,
    pub in_service: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub group: String,
    pub zone: String,
    pub host: Option<String>,
    pub address: SocketAddr,
    pub lifecycle: String,
    pub health: String,
    pub reason: String,
    pub pid: Option<u32>,
    pub launched_at: UnixMillis,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub target_group: String,
    pub address: SocketAddr,
    pub zone: String,
    pub instance: Option<String>,
    pub state: String,
    /// Each node's verdict: `(node, health, reason)`.
    pub nodes: Vec<(String, String, String)>,
}

impl TierStatus {
    pub fn build(
        snapshot: &Snapshot,
        revision: Revision,
        leader: Option<&Leadership>,
        live: &std::collections::BTreeSet<String>,
        now: UnixMillis,
    ) -> TierStatus {
        let hosts = snapshot
            .hosts
            .values()
            .map(|h| {
                let mut roles = vec!["agent".to_string()];
                if leader.is_some_and(|l| l.leader == h.id) {
                    roles.push("controller".to_string());
                }
                HostView {
                    id: h.id.clone(),
                    zone: h.zone.clone(),
                    address: h.address,
                    announced_at: h.last_heartbeat,
                    announced_ms_ago: now.0.saturating_sub(h.last_heartbeat.0),
                    live: live.contains(&h.id),
                    roles,
                    nodes: h
                        .nodes
                        .iter()
                        .map(|(node, hold)| match hold {
                            proxyfleet_state::NodeHold::Holding => node.clone(),
                            proxyfleet_state::NodeHold::Releasing => format!("{node} (releasing)"),
                        })
                        .collect(),
                }
            })
            .collect();
        let groups = snapshot
            .groups
            .values()
            .map(|g| GroupView {
                name: g.name.clone(),
                min: g.min,
                desired: g.desired,
                max: g.max,
                in_service: snapshot
                    .instances
                    .values()
                    .filter(|i| {
                        i.group == g.name && i.lifecycle == proxyfleet_state::Lifecycle::InService
                    })
                    .count(),
            })
            .collect();
        let instances = snapshot
            .instances
            .values()
            .map(|i| InstanceView {
                id: i.id.clone(),
                group: i.group.clone(),
                zone: i.zone.clone(),
                host: i.host.clone(),
                address: i.target_address(),
                lifecycle: i.lifecycle.to_string(),
                health: format!("{:?}", i.health),
                reason: i
                    .reason
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                pid: i.process.map(|p| p.pid),
                launched_at: i.launched_at,
            })
            .collect();
        let targets = snapshot
            .targets
            .values()
            .flat_map(|t| t.values())
            .map(|t| TargetView {
                target_group: t.target_group.clone(),
                address: t.address,
                zone: t.zone.clone(),
                instance: t.instance.clone(),
                state: t.state.as_str().to_string(),
                nodes: t
                    .nodes
                    .iter()
                    .map(|(n, v)| (n.clone(), v.health.as_str().to_string(), v.reason.clone()))
                    .collect(),
            })
            .collect();
        TierStatus {
            revision: revision.0,
            leader: leader.map(|l| LeaderView {
                host: l.leader.clone(),
                term: l.term.0,
                elected_at: l.elected_at,
                lease_ms: l.ttl_ms,
            }),
            hosts,
            groups,
            instances,
            targets,
        }
    }
}
