//! The JSON the admin API speaks. The server builds these from [`Control`](crate::Control)'s
//! snapshots; clients deserialize the same types. Clients must ignore fields they do not
//! know: the API may grow.

use std::net::{IpAddr, SocketAddr};

use proxyfleet_state::report::{Activity, GroupStatus};
use proxyfleet_state::report::{BalancerStatus, TargetStatus};
use proxyfleet_state::TargetHealth as Health;
use proxyfleet_state::{InstanceHealth, Lifecycle};
use serde::{Deserialize, Serialize};

/// `GET /api/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub load_balancers: Vec<LoadBalancerView>,
    pub targets: Vec<TargetView>,
    /// Every instance not yet Terminated.
    pub instances: Vec<InstanceView>,
    pub groups: Vec<GroupView>,
    /// A tier of agents only (`proxyfleet agent`): its hosts, roles, controller and store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<TierView>,
}

/// `GET /api/tier` (and [`StatusView::tier`]): the tier of agents this API's agent is part of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierView {
    /// The host whose agent answers.
    pub this_host: String,
    /// `etcd` or `sqlite`.
    pub store: String,
    /// The revision of the state this agent serves from.
    pub revision: u64,
    /// Whether that state is current (`false`: the store is unreachable and the agent serves
    /// from the last state it saw).
    pub connected: bool,
    pub leader: Option<TierLeaderView>,
    pub hosts: Vec<TierHostView>,
    /// Each etcd member as this agent last saw it (empty on SQLite).
    pub etcd: Vec<EtcdMemberView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierLeaderView {
    pub host: String,
    pub term: u64,
    pub lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierHostView {
    pub id: String,
    pub zone: String,
    pub address: IpAddr,
    /// `agent`, and `controller` for the leader's host.
    pub roles: Vec<String>,
    /// Its liveness lease holds (the store's verdict).
    pub live: bool,
    /// How long ago its agent announced it (started).
    pub announced_ms_ago: u64,
    /// The load-balancer nodes (`LB/ZONE`) it runs, its own zone's and any it stands in for.
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtcdMemberView {
    pub endpoint: String,
    pub reachable: bool,
    pub leader: bool,
    pub revision: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancerView {
    pub name: String,
    pub cross_zone: bool,
    pub nodes: Vec<NodeView>,
}

/// One load balancer node (one per zone) and its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub zone: String,
    pub address: IpAddr,
    pub listeners: Vec<ListenerView>,
    pub accepted: u64,
    pub active: u64,
    pub refused: u64,
    pub failed: u64,
    /// Flows closed because every target they could use was full.
    #[serde(default)]
    pub full: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerView {
    pub port: u16,
    pub target_group: String,
}

/// A registered target: its health on every node that checks it, and its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetView {
    /// `ADDRESS:PORT`.
    pub id: String,
    /// The target group.
    pub group: String,
    /// The IP address of `id`.
    pub address: String,
    pub zone: String,
    /// The verdict over all nodes, see [`aggregate_health`].
    pub health: String,
    pub draining: bool,
    pub nodes: Vec<TargetNodeView>,
    pub active_flows: u64,
    pub new_flows: u64,
    pub bytes_to_target: u64,
    pub bytes_to_client: u64,
    pub connect_failures: u64,
    pub health_transitions: u64,
    /// Its `target_max_connections`; `null`: no cap.
    #[serde(default)]
    pub max_flows: Option<u64>,
    /// New flows that passed it by because it was full.
    #[serde(default)]
    pub skipped_full: u64,
    /// Health checks the balancer's host could not run (never counted against the target).
    #[serde(default)]
    pub checks_not_run: u64,
}

/// One node's view of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetNodeView {
    /// `LB/ZONE`.
    pub node: String,
    /// Initial, Healthy, Unhealthy, Draining or Unused.
    pub health: String,
    /// Why it is in that state (the last transition's reason).
    pub reason: String,
    /// How long it has been in that state.
    pub for_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub group: String,
    pub zone: String,
    pub address: IpAddr,
    pub port: u16,
    /// 0 until the process exists.
    pub pid: u32,
    /// Pending, InService, Terminating (Terminated instances are not listed).
    pub lifecycle: String,
    /// Healthy or Unhealthy.
    pub health: String,
    pub reason: String,
    pub uptime_seconds: f64,
    /// Whether a kernel firewall enforces its security groups.
    pub protected: bool,
    pub dir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub zones: Vec<String>,
    /// Set while launches back off after failures: seconds until the next attempt.
    pub backoff_seconds: Option<f64>,
    /// Set while replacements for the load balancer's verdict are held (the churn stop): why.
    pub replacements_held: Option<String>,
    /// Set while an instance refresh runs: its progress.
    pub refresh: Option<String>,
}

/// One entry of `GET /api/activity` (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityView {
    pub id: i64,
    pub group: String,
    pub description: String,
    pub cause: String,
    /// InProgress, WaitingForConnectionDraining, Successful, Failed or Cancelled.
    pub status: String,
    /// Seconds since the Unix epoch.
    pub start: f64,
    pub end: Option<f64>,
}

/// `GET /api/history`: the last five minutes of the balancer, one sample per second, oldest
/// first. A console opened now draws its charts from this at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryView {
    /// Seconds between samples.
    pub interval_seconds: f64,
    /// The most samples kept (older ones are dropped).
    pub capacity: usize,
    pub samples: Vec<SampleView>,
}

/// The balancer at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleView {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// Every registered target at that instant.
    pub targets: Vec<TargetSampleView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSampleView {
    /// The target group.
    pub group: String,
    /// `ADDRESS:PORT`.
    pub id: String,
    /// Flows the balancer opened to the target since the previous sample, per second.
    pub new_flows_per_second: f64,
    /// Flows open to the target at that instant.
    pub active_flows: u64,
}

/// One event of `GET /api/events` (server-sent events, `event: tick`, once per second).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickView {
    pub status: StatusView,
    /// The sample taken with this status; `None` in the first tick of a stream, whose
    /// `history` event already ends with the latest sample.
    pub sample: Option<SampleView>,
    /// The newest activities, newest first.
    pub activity: Vec<ActivityView>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: String,
}

/// `POST /api/groups/{name}/scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub desired: u32,
}

/// `POST /api/instances/{id}/terminate` (the body may be empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    #[serde(default)]
    pub decrement_desired: bool,
}

/// `POST /api/instances/{id}/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthRequest {
    pub healthy: bool,
}

/// The body of every successful mutating call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OkView {
    pub ok: bool,
}

impl StatusView {
    /// `now` is seconds since the Unix epoch (for instance uptimes).
    pub fn build(balancer: &BalancerStatus, groups: &[GroupStatus], now: f64) -> StatusView {
        let load_balancers = balancer
            .load_balancers
            .iter()
            .map(|lb| LoadBalancerView {
                name: lb.name.clone(),
                cross_zone: lb.cross_zone,
                nodes: lb
                    .nodes
                    .iter()
                    .map(|n| NodeView {
                        zone: n.zone.clone(),
                        address: n.address,
                        listeners: n
                            .listeners
                            .iter()
                            .map(|(port, tg)| ListenerView {
                                port: *port,
                                target_group: tg.clone(),
                            })
                            .collect(),
                        accepted: n.accepted,
                        active: n.active,
                        refused: n.refused,
                        failed: n.failed,
                        full: n.full,
                    })
                    .collect(),
            })
            .collect();
        let targets = balancer.targets.iter().map(TargetView::build).collect();
        let instances = groups
            .iter()
            .flat_map(|g| &g.instances)
            .filter(|i| i.lifecycle != Lifecycle::Terminated)
            .map(|i| InstanceView::build(i, now))
            .collect();
        let groups = groups
            .iter()
            .map(|g| GroupView {
                name: g.name.clone(),
                min: g.min,
                max: g.max,
                desired: g.desired,
                zones: g.zones.clone(),
                backoff_seconds: g.backoff_seconds,
                replacements_held: g.replacements_held.clone(),
                refresh: g.refresh.clone(),
            })
            .collect();
        StatusView {
            tier: None,
            load_balancers,
            targets,
            instances,
            groups,
        }
    }
}

impl TargetView {
    pub fn build(t: &TargetStatus) -> TargetView {
        let address = match t.id.parse::<SocketAddr>() {
            Ok(a) => a.ip().to_string(),
            // Not ADDRESS:PORT: show the id rather than nothing.
            Err(_) => t.id.clone(),
        };
        TargetView {
            id: t.id.clone(),
            group: t.group.clone(),
            address,
            zone: t.zone.clone(),
            health: aggregate_health(t).to_string(),
            draining: t.draining,
            nodes: t
                .health
                .iter()
                .map(|h| TargetNodeView {
                    node: h.node.clone(),
                    health: health_name(h.health).to_string(),
                    reason: h.reason.clone(),
                    for_seconds: proxyfleet_state::UnixMillis::now()
                        .since(h.since)
                        .as_secs_f64(),
                })
                .collect(),
            active_flows: t.active_flows,
            new_flows: t.new_flows,
            bytes_to_target: t.bytes_to_target,
            bytes_to_client: t.bytes_to_client,
            connect_failures: t.connect_failures,
            health_transitions: t.health_transitions,
            max_flows: t.max_flows,
            skipped_full: t.skipped_full,
            checks_not_run: t.checks_not_run,
        }
    }
}

impl InstanceView {
    pub fn build(i: &proxyfleet_state::report::InstanceStatus, now: f64) -> InstanceView {
        InstanceView {
            id: i.id.clone(),
            group: i.group.clone(),
            zone: i.zone.clone(),
            address: i.address,
            port: i.port,
            pid: i.pid,
            lifecycle: i.lifecycle.as_str().to_string(),
            health: match i.health {
                InstanceHealth::Healthy => "Healthy",
                InstanceHealth::Unhealthy => "Unhealthy",
            }
            .to_string(),
            reason: i.reason_text(),
            uptime_seconds: (now - i.launched_at).max(0.0),
            protected: i.protected,
            dir: i.dir.clone(),
        }
    }
}

impl From<&Activity> for ActivityView {
    fn from(a: &Activity) -> ActivityView {
        ActivityView {
            id: a.id,
            group: a.group.clone(),
            description: a.description.clone(),
            cause: a.cause.clone(),
            status: a.status.as_str().to_string(),
            start: a.start,
            end: a.end,
        }
    }
}

/// A node's verdict, spelled as the API spells it.
pub fn health_name(h: Health) -> &'static str {
    match h {
        Health::Initial => "Initial",
        Health::Healthy => "Healthy",
        Health::Unhealthy => "Unhealthy",
        Health::Draining => "Draining",
        Health::Unused => "Unused",
    }
}

/// One word for a target over all nodes: "Draining" once deregistered; otherwise, over the
/// nodes that use it (not "Unused"), "Healthy" when every one says healthy, "Initial" when
/// none has judged it yet, else "Unhealthy"; "Unused" when no node uses it.
pub fn aggregate_health(t: &TargetStatus) -> &'static str {
    if t.draining {
        return "Draining";
    }
    let used: Vec<Health> = t
        .health
        .iter()
        .map(|h| h.health)
        .filter(|h| *h != Health::Unused)
        .collect();
    if used.is_empty() {
        "Unused"
    } else if used.iter().all(|h| *h == Health::Healthy) {
        "Healthy"
    } else if used.iter().all(|h| *h == Health::Initial) {
        "Initial"
    } else if used.iter().all(|h| *h == Health::Draining) {
        "Draining"
    } else {
        "Unhealthy"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxyfleet_state::report::TargetHealthStatus;

    fn target(draining: bool, health: &[Health]) -> TargetStatus {
        TargetStatus {
            group: "tg".into(),
            id: "127.10.1.11:3128".into(),
            zone: "a".into(),
            draining,
            health: health
                .iter()
                .enumerate()
                .map(|(i, h)| TargetHealthStatus {
                    node: format!("lb/{i}"),
                    health: *h,
                    reason: String::new(),
                    since: proxyfleet_state::UnixMillis::now(),
                })
                .collect(),
            active_flows: 0,
            new_flows: 0,
            bytes_to_target: 0,
            bytes_to_client: 0,
            connect_failures: 0,
            health_transitions: 0,
            max_flows: None,
            skipped_full: 0,
            checks_not_run: 0,
        }
    }

    #[test]
    fn aggregate_health_over_nodes() {
        use Health::*;
        let cases: &[(bool, &[Health], &str)] = &[
            (false, &[Healthy, Healthy], "Healthy"),
            (false, &[Healthy, Unused], "Healthy"),
            (false, &[Healthy, Unhealthy], "Unhealthy"),
            (false, &[Healthy, Initial], "Unhealthy"),
            (false, &[Initial, Initial], "Initial"),
            (false, &[Unused, Unused], "Unused"),
            (false, &[], "Unused"),
            (true, &[Healthy, Healthy], "Draining"),
            (false, &[Draining, Draining], "Draining"),
        ];
        for (draining, nodes, want) in cases {
            assert_eq!(
                aggregate_health(&target(*draining, nodes)),
                *want,
                "{draining} {nodes:?}"
            );
        }
    }

    #[test]
    fn target_address_is_the_ip_of_its_id() {
        let v = TargetView::build(&target(false, &[Health::Healthy]));
        assert_eq!(v.address, "127.10.1.11");
        assert_eq!(v.nodes[0].health, "Healthy");
    }
}
