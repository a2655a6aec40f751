//! A load balancer's report: its nodes' and targets' counters and each node's verdict on each
//! target, for the CLI, the admin API and metrics (`proxyfleet-lb` fills it from its nodes; an
//! agent from its own nodes and the shared state).

use std::net::IpAddr;

use crate::model::TargetHealth as Health;
use crate::time::UnixMillis;

#[derive(Debug, Clone)]
pub struct BalancerStatus {
    pub load_balancers: Vec<LbStatus>,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone)]
pub struct LbStatus {
    pub name: String,
    pub cross_zone: bool,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub zone: String,
    pub address: IpAddr,
    /// (port, target group)
    pub listeners: Vec<(u16, String)>,
    pub accepted: u64,
    pub active: u64,
    pub refused: u64,
    pub failed: u64,
    /// Closed because every target the flow could use was full.
    pub full: u64,
}

#[derive(Debug, Clone)]
pub struct TargetHealthStatus {
    /// `LB/ZONE`
    pub node: String,
    pub health: Health,
    pub reason: String,
    pub since: UnixMillis,
}

#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub group: String,
    pub id: String,
    pub zone: String,
    pub draining: bool,
    pub health: Vec<TargetHealthStatus>,
    pub active_flows: u64,
    pub new_flows: u64,
    pub bytes_to_target: u64,
    pub bytes_to_client: u64,
    pub connect_failures: u64,
    pub health_transitions: u64,
    /// Its `target_max_connections` (`None`: no cap).
    pub max_flows: Option<u64>,
    /// New flows that passed it by because it was full.
    pub skipped_full: u64,
    /// Health checks that could not run on the balancer's host (not counted against it).
    pub checks_not_run: u64,
}

impl TargetStatus {
    /// Healthy on every node that checks it.
    pub fn healthy_everywhere(&self) -> bool {
        !self.health.is_empty() && self.health.iter().all(|h| h.health == Health::Healthy)
    }
}
