//! The reachability check behind `proxyfleet check`: what in a valid [`Stack`] will not work
//! once it runs, explained with the concrete CIDRs and ports. Validation has already refused
//! what is malformed; this finds what is well formed but wrong, the mistakes that otherwise
//! show up only as targets that never turn healthy or clients that time out.
//!
//! - `firewall`: do the instances' security groups admit the load balancer nodes (health
//!   checks, and traffic without client-IP preservation) and the clients (with it)?
//! - `proxy_conf`: the instances' rendered squid.conf — does it parse, listen where the
//!   target group connects, agree on the PROXY header, and let the clients through its
//!   `http_access` (and `proxy_protocol_access`)?
//! - `launch`: a launch template whose `sh -c` script interpolates a placeholder (the value
//!   is parsed as shell code; passed as an argument it would not be);
//! - `placement`: zones and sizes — a node with no target in its zone, a group zone no load
//!   balancer serves, fewer instances than zones, a target group with no targets.
//!
//! [`check`] walks the groups in file order (placement, firewall, squid.conf, then launch
//! template findings for each), then the load balancers, then the target groups, so the same stack always gives
//! the same findings in the same order.

mod firewall;
mod launch;
mod placement;
mod proxy_conf;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use proxyfleet_lb::spec::{LoadBalancerSpec, NodeSpec, TargetGroupSpec};

use crate::{Group, Stack};

/// How bad a finding is: an error means something will not work; a warning, that it works
/// worse than it might (less redundancy, more cross-zone traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One thing that will not work (or not work well), and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    pub severity: Severity,
    /// The object the finding is about, named as in validation errors: `groups.proxies`,
    /// `load_balancers.front`, `target_groups.proxies`.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Finding {
    /// `error: groups.proxies: security group proxy-sg admits ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.severity, self.object, self.message)
    }
}

/// Everything that will not work in `stack`, in a stable order; empty when all is well.
pub fn check(stack: &Stack) -> Vec<Finding> {
    let mut out = Findings::default();
    for group in &stack.groups {
        let uses = uses(stack, group);
        placement::group(stack, group, &mut out);
        firewall::group(stack, group, &uses, &mut out);
        proxy_conf::group(stack, group, &uses, &mut out);
        launch::group(stack, group, &mut out);
    }
    for lb in &stack.load_balancers {
        placement::load_balancer(stack, lb, &mut out);
    }
    for tg in &stack.target_groups {
        placement::target_group(stack, tg, &mut out);
    }
    out.0
}

/// Findings in the order found; an exact repeat (say, two target groups of one group with
/// the same problem) is kept once.
#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, severity: Severity, object: &str, message: String) {
        let finding = Finding {
            severity,
            object: object.to_string(),
            message,
        };
        if !self.0.contains(&finding) {
            self.0.push(finding);
        }
    }

    fn error(&mut self, object: &str, message: String) {
        self.push(Severity::Error, object, message);
    }

    fn warning(&mut self, object: &str, message: String) {
        self.push(Severity::Warning, object, message);
    }
}

/// One target group a group's instances register with, as the load balancers use it.
struct Use<'a> {
    tg: &'a TargetGroupSpec,
    /// The load balancers with a listener forwarding to `tg` that serve at least one of the
    /// group's zones (a balancer whose zones hold none of the instances never connects to
    /// them: their target state is `unused`).
    lbs: Vec<&'a LoadBalancerSpec>,
    /// Who connects through those listeners; see [`clients`].
    clients: Vec<IpNet>,
}

impl Use<'_> {
    /// Every node of those load balancers: each health-checks every target, and without
    /// client-IP preservation any of them may connect to any target.
    fn nodes(&self) -> Vec<&NodeSpec> {
        self.lbs.iter().flat_map(|lb| &lb.nodes).collect()
    }

    /// The port health checks go to: the check's own, or the instances' traffic port.
    fn health_port(&self, group: &Group) -> u16 {
        self.tg.health_check.port.unwrap_or(group.port)
    }
}

/// The target groups of `group` that some load balancer sends to, in the group's order.
fn uses<'a>(stack: &'a Stack, group: &Group) -> Vec<Use<'a>> {
    let mut uses = Vec::new();
    for name in &group.target_groups {
        let Some(tg) = stack.target_group(name) else {
            continue;
        };
        let mut lbs: Vec<&LoadBalancerSpec> = Vec::new();
        let mut nets: Vec<IpNet> = Vec::new();
        for lb in &stack.load_balancers {
            let serves = lb.nodes.iter().any(|n| group.zones.contains(&n.zone));
            for listener in lb.listeners.iter().filter(|l| &l.target_group == name) {
                if !serves {
                    continue;
                }
                if !lbs.iter().any(|l| l.name == lb.name) {
                    lbs.push(lb);
                }
                for net in clients(stack, listener.allowed_cidrs.as_deref()) {
                    if !nets.contains(&net) {
                        nets.push(net);
                    }
                }
            }
        }
        if !lbs.is_empty() {
            uses.push(Use {
                tg,
                lbs,
                clients: nets,
            });
        }
    }
    uses
}

/// The networks a listener's clients come from. A listener with `allowed_cidrs` accepts
/// those and nothing else, so they are exactly its clients. Without it, the stack does not
/// say who connects; we take every named network except the service networks (those in
/// `service_networks`, and one named `service`, the conventional name of the destinations the
/// proxies forward to: a stack's networks are its app networks and its destinations). Zones are not clients: they hold the nodes and the instances themselves.
fn clients(stack: &Stack, allowed_cidrs: Option<&[IpNet]>) -> Vec<IpNet> {
    match allowed_cidrs {
        Some(cidrs) => cidrs.to_vec(),
        None => stack
            .networks
            .iter()
            .filter(|(name, net)| name != SERVICE && !stack.service_networks.contains(net))
            .map(|(_, net)| *net)
            .collect(),
    }
}

/// The name of the destinations' network.
const SERVICE: &str = "service";

/// An address that stands for a whole network in ACL evaluation: host .5, or the first
/// host of a network too small for it.
fn representative(net: &IpNet) -> IpAddr {
    crate::host_address(net, 5)
        .or_else(|| crate::host_address(net, 1))
        .unwrap_or_else(|| net.network())
}

/// `a, b, c`.
fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `one` or `many` by count.
fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `items` without repeats, in first-seen order.
fn unique<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
