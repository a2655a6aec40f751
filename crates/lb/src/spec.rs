//! What a load balancer is asked to be: validated specifications, built by the stack file
//! parser (or by tests directly). Defaults follow the cloud network load balancer unless a
//! comment says otherwise.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// One load balancer: a node per zone, each with the same listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancerSpec {
    pub name: String,
    /// One node per zone, listening on its own address from that zone's subnet.
    pub nodes: Vec<NodeSpec>,
    /// false (the default): a node routes to healthy targets of its own zone, and only when
    /// its zone has none, to the other zones' healthy targets.
    pub cross_zone: bool,
    pub listeners: Vec<ListenerSpec>,
    /// Open client connections per node at most (default 10,000); further connections wait in
    /// the kernel's backlog.
    pub max_connections: usize,
    /// Open client connections per node from one source address at most (default a quarter
    /// of `max_connections`); more from that source are closed at once.
    pub max_connections_per_source: usize,
    /// A flow with no bytes either way for this long is closed (default 350 s, the cloud's).
    pub idle_timeout: Duration,
    /// Bind the nodes' listeners even while their address is not on this host yet
    /// (`IP_FREEBIND`; not from the stack file). Across hosts a node address moves: the new
    /// holder binds and health-checks first (from its own address), and adds the address
    /// only once the node is ready, so that it is on two hosts for the hand-over alone. On
    /// one machine it stays off: there a bind that fails is the sign that another process
    /// has the address.
    pub bind_before_owned: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub zone: String,
    pub address: IpAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub port: u16,
    /// The target group new flows are forwarded to.
    pub target_group: String,
    /// When set, only these sources may connect; others are refused and counted.
    pub allowed_cidrs: Option<Vec<IpNet>>,
}

/// `instance` targets see the client's address by default; `ip` targets do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Instance,
    Ip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroupSpec {
    pub name: String,
    /// The traffic port of targets registered without one.
    pub port: u16,
    pub target_type: TargetType,
    /// Connect to the target from the client's own address (default: true for instance
    /// targets, false for ip targets).
    pub preserve_client_ip: bool,
    /// Use IP_TRANSPARENT for that source-address binding, needed when the client's address
    /// is not local to this host (across hosts). On loopback every 127.x address is local
    /// and a plain bind suffices.
    pub transparent: bool,
    /// Send a PROXY v2 header before the data (health checks send a v2 LOCAL header).
    pub proxy_protocol_v2: bool,
    /// Health-check from this address — the host's own — rather than the node's, and
    /// without `preserve_client_ip` connect flows from it too. Across hosts a node's address moves: during a
    /// hand-over two hosts have it, and a target's replies to it would go to whichever host
    /// announced it last; a host's own address never moves. (Not the kernel's choice: to an
    /// instance on this same host that would be the instance's own address.)
    pub from_address: Option<IpAddr>,
    /// How long a deregistered target's existing flows may continue (default 30 s; the
    /// cloud's is 300 s).
    pub deregistration_delay: Duration,
    /// The most flows one target takes at once, from every node together (HAProxy's
    /// `server ... maxconn`, a cloud target's capacity). A full target is passed by like an
    /// unhealthy one; when every target a flow could use is full, the flow is closed.
    /// `None`: a target registered with a capacity of its own (an instance running
    /// `proxyfleet proxy`: its client cap) has that one, any other none.
    pub target_max_connections: Option<usize>,
    pub health_check: HealthCheckSpec,
    /// Targets listed in the stack file; more are registered at run time.
    pub targets: Vec<TargetSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub address: SocketAddr,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheckProtocol {
    Tcp,
    /// GET `path`; healthy when the status is within `matcher` (default 200-399).
    Http {
        path: String,
        matcher: (u16, u16),
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSpec {
    pub protocol: HealthCheckProtocol,
    /// Default: the target's traffic port.
    pub port: Option<u16>,
    /// Default 5 s; accepted down to 100 ms.
    pub interval: Duration,
    /// Default: the interval, capped at 5 s; never more than the interval.
    pub timeout: Duration,
    /// Consecutive successes to turn healthy (default 2).
    pub healthy_threshold: u32,
    /// Consecutive failures to turn unhealthy (default 2).
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        HealthCheckSpec {
            protocol: HealthCheckProtocol::Tcp,
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

impl TargetGroupSpec {
    /// A group with the defaults for its target type.
    pub fn new(name: &str, port: u16, target_type: TargetType) -> Self {
        TargetGroupSpec {
            name: name.to_string(),
            port,
            target_type,
            preserve_client_ip: target_type == TargetType::Instance,
            transparent: false,
            proxy_protocol_v2: false,
            from_address: None,
            deregistration_delay: Duration::from_secs(30),
            target_max_connections: None,
            health_check: HealthCheckSpec::default(),
            targets: Vec::new(),
        }
    }
}

/// The smallest health check interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
