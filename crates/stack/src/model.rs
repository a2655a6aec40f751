//! The validated stack: every reference resolved, every default filled in. Load balancers
//! and target groups are the load balancer crate's own specifications.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use proxyfleet_lb::spec::{LoadBalancerSpec, TargetGroupSpec};

/// A whole stack, in the order of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// The admin API's settings (`admin:`).
    pub admin: crate::Admin,
    /// The etcd cluster the roles share (`etcd:`); `None`: the embedded store.
    pub etcd: Option<crate::Etcd>,
    /// The hosts of a tier across hosts (`hosts:`); empty: one machine.
    pub hosts: Vec<crate::HostSpec>,
    /// The health-checked DNS name every agent answers for (`dns:`).
    pub dns: Option<crate::Dns>,
    pub zones: Vec<Zone>,
    /// Named CIDRs usable in rules (`app`, `service`, ...).
    pub networks: Vec<(String, IpNet)>,
    /// Destinations the proxies may reach although the destination guard protects them
    /// (services on the proxy hosts' loopback or own addresses).
    pub service_networks: Vec<IpNet>,
    pub security_groups: Vec<SecurityGroup>,
    /// Each with its listeners and one node per zone.
    pub load_balancers: Vec<LoadBalancerSpec>,
    pub target_groups: Vec<TargetGroupSpec>,
    pub launch_templates: Vec<LaunchTemplate>,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub subnet: IpNet,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroup {
    pub name: String,
    /// Traffic is admitted when any rule admits it; nothing else is.
    pub ingress: Vec<IngressRule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngressRule {
    pub protocol: Protocol,
    /// Inclusive range; `all` rules cover 1-65535.
    pub ports: (u16, u16),
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    /// Any protocol, any port.
    All,
}

/// Who a rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Addresses: a CIDR as written, or the CIDR of a network or zone `named` in the file.
    Cidr { net: IpNet, named: Option<String> },
    /// `sg:NAME`: the addresses of that security group's instances (known only at run time).
    SecurityGroup(String),
    /// `lb:NAME`: the addresses of that load balancer's nodes.
    LoadBalancer(String),
}

impl fmt::Display for Source {
    /// As written in the file, with the CIDR a name stands for: `app (127.20.0.0/16)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cidr { net, named: None } => write!(f, "{net}"),
            Source::Cidr {
                net,
                named: Some(name),
            } => write!(f, "{name} ({net})"),
            Source::SecurityGroup(name) => write!(f, "sg:{name}"),
            Source::LoadBalancer(name) => write!(f, "lb:{name}"),
        }
    }
}

/// How to start one instance. Every string may hold placeholders (see [`crate::render`]),
/// all of them known to be valid.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplate {
    pub name: String,
    /// argv; `proxyfleet` as `argv[0]` means the running binary itself.
    pub command: Vec<String>,
    pub environment: Vec<(String, String)>,
    /// Relative file names and contents, written into the instance's directory before start.
    pub files: Vec<(String, String)>,
    /// After SIGTERM, how long before SIGKILL (default 10 s).
    pub stop_timeout: Duration,
}

/// A launch template with one instance's placeholders filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub command: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub files: Vec<(String, String)>,
}

impl LaunchTemplate {
    /// The command, environment and files for one instance.
    pub fn render(&self, values: &crate::Placeholders) -> Launch {
        let render = |text: &String| crate::render(text, values);
        Launch {
            command: self.command.iter().map(render).collect(),
            environment: self
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), render(v)))
                .collect(),
            files: self
                .files
                .iter()
                .map(|(k, v)| (k.clone(), render(v)))
                .collect(),
        }
    }
}

/// An auto-scaling group: keeps `desired` instances of a launch template, spread over zones.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub launch_template: String,
    pub min: u32,
    pub max: u32,
    /// Default: `min`.
    pub desired: u32,
    pub zones: Vec<String>,
    /// The port instances listen on (default 3128); what they register with target groups.
    pub port: u16,
    pub target_groups: Vec<String>,
    pub security_groups: Vec<String>,
    pub health_check_type: HealthCheckType,
    /// After launch, how long health check failures are ignored (default 2 s; the cloud's
    /// is 300 s).
    pub grace_period: Duration,
    /// Host offset of the first instance address in each zone's subnet (default 11: the
    /// first instance in 127.10.1.0/24 is 127.10.1.11).
    pub first_address: u32,
    pub scaling: Option<Scaling>,
}

impl Group {
    /// The address of the `index`th instance slot (0-based) in a zone's subnet.
    pub fn instance_address(&self, subnet: &IpNet, index: u32) -> Option<IpAddr> {
        host_address(subnet, u128::from(self.first_address) + u128::from(index))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckType {
    /// An instance is unhealthy when its process has exited (the cloud's EC2 checks).
    Process,
    /// Also when its target group health checks say so.
    Lb,
}

/// Target tracking on the load balancer's active connections per instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    pub target_active_connections_per_instance: u32,
    /// Default 30 s.
    pub scale_out_cooldown: Duration,
    /// Default 60 s.
    pub scale_in_cooldown: Duration,
}

impl Stack {
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    pub fn network(&self, name: &str) -> Option<IpNet> {
        self.networks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, net)| *net)
    }

    pub fn security_group(&self, name: &str) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|g| g.name == name)
    }

    /// The `hosts:` entry of host `id`.
    pub fn host(&self, id: &str) -> Option<&crate::HostSpec> {
        self.hosts.iter().find(|h| h.id == id)
    }

    pub fn load_balancer(&self, name: &str) -> Option<&LoadBalancerSpec> {
        self.load_balancers.iter().find(|lb| lb.name == name)
    }

    pub fn target_group(&self, name: &str) -> Option<&TargetGroupSpec> {
        self.target_groups.iter().find(|tg| tg.name == name)
    }

    pub fn launch_template(&self, name: &str) -> Option<&LaunchTemplate> {
        self.launch_templates.iter().find(|t| t.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// Host `offset` of `subnet` (network address + offset), if it is a usable host address:
/// inside the subnet and, for IPv4 subnets larger than /31, neither the network nor the
/// broadcast address.
pub fn host_address(subnet: &IpNet, offset: u128) -> Option<IpAddr> {
    let addr = match subnet.network() {
        IpAddr::V4(net) => {
            let n = u128::from(u32::from(net)).checked_add(offset)?;
            IpAddr::V4(u32::try_from(n).ok()?.into())
        }
        IpAddr::V6(net) => IpAddr::V6(u128::from(net).checked_add(offset)?.into()),
    };
    let reserved =
        addr.is_ipv4() && subnet.prefix_len() < 31 && (offset == 0 || addr == subnet.broadcast());
    (subnet.contains(&addr) && !reserved).then_some(addr)
}
