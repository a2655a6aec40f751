//! Security groups against the connections the load balancers make to the instances.
//!
//! Health checks always come from the nodes' own addresses. Traffic comes from the client's
//! address with `preserve_client_ip`, and from the node's without it. So an instance's
//! security groups must admit the nodes on the health-check port, and on the traffic port
//! either the clients' networks or, again, the nodes. A group with no security groups is
//! not filtered at all.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{list, plural, unique, Findings, Use};
use crate::{Group, IngressRule, Protocol, Source, Stack};

pub(super) fn group(stack: &Stack, group: &Group, uses: &[Use], out: &mut Findings) {
    if group.security_groups.is_empty() {
        return;
    }
    let object = format!("groups.{}", group.name);
    for u in uses {
        nodes(stack, group, u, &object, out);
        if u.tg.preserve_client_ip {
            clients(stack, group, u, &object, out);
        }
    }
}

/// The nodes, on the health-check port and (without client-IP preservation) the traffic port.
fn nodes(stack: &Stack, group: &Group, u: &Use, object: &str, out: &mut Findings) {
    // (port, health checks arrive on it, traffic arrives on it from the nodes)
    let health = u.health_port(group);
    let mut ports = vec![(health, true, false)];
    if !u.tg.preserve_client_ip {
        if health == group.port {
            ports[0].2 = true;
        } else {
            ports.push((group.port, false, true));
        }
    }
    let all = u.nodes();
    for (port, health, traffic) in ports {
        let rules = rules_on(stack, group, port);
        let failing: Vec<_> = all
            .iter()
            .filter(|n| !admits_address(stack, &rules, n.address))
            .collect();
        if failing.is_empty() {
            continue;
        }
        let subnets = unique(
            failing
                .iter()
                .filter_map(|n| stack.zone(&n.zone))
                .map(|z| z.subnet),
        );
        let what = match (traffic, health) {
            (true, true) => "traffic and health checks",
            (true, false) => "traffic",
            _ => "health checks",
        };
        let consequence = match (failing.len() == all.len(), health) {
            (true, true) => format!("{what} will fail and no target will become healthy"),
            (true, false) => format!("{what} will fail"),
            (false, true) => format!(
                "{what} from {} will fail and {} will judge every target unhealthy",
                plural(failing.len(), "that node", "those nodes"),
                plural(failing.len(), "it", "they"),
            ),
            (false, false) => format!(
                "{what} from {} will fail",
                plural(failing.len(), "that node", "those nodes")
            ),
        };
        out.error(
            object,
            format!(
                "{} {} on {port} but not the load balancer {} {} {}: {consequence}",
                security_groups(group),
                admitted(&rules),
                plural(failing.len(), "node's", "nodes'"),
                plural(subnets.len(), "subnet", "subnets"),
                list(subnets),
            ),
        );
    }
}

/// With client-IP preservation the instance sees the client's own address on the traffic
/// port.
fn clients(stack: &Stack, group: &Group, u: &Use, object: &str, out: &mut Findings) {
    let rules = rules_on(stack, group, group.port);
    let missing: Vec<IpNet> = u
        .clients
        .iter()
        .filter(|net| !admits_network(stack, &rules, net))
        .copied()
        .collect();
    if missing.is_empty() {
        return;
    }
    out.error(
        object,
        format!(
            "preserve_client_ip is on for target group {}, but {} {} admit the clients' {} {} \
             on {}: clients' connections will be dropped",
            u.tg.name,
            list(&group.security_groups),
            plural(group.security_groups.len(), "does not", "do not"),
            plural(missing.len(), "network", "networks"),
            list(&missing),
            group.port,
        ),
    );
}

/// `security group proxy-sg admits` or `security groups a, b admit`.
fn security_groups(group: &Group) -> String {
    let n = group.security_groups.len();
    format!(
        "{} {} {}",
        plural(n, "security group", "security groups"),
        list(&group.security_groups),
        plural(n, "admits", "admit"),
    )
}

/// The sources `rules` admit, without repeats: `127.20.0.0/16, lb:front`, or `nothing`.
fn admitted(rules: &[&IngressRule]) -> String {
    let sources = unique(rules.iter().map(|r| match &r.source {
        Source::Cidr { net, .. } => net.to_string(),
        other => other.to_string(),
    }));
    if sources.is_empty() {
        "nothing".to_string()
    } else {
        list(sources)
    }
}

/// The rules of the group's security groups that admit TCP connections to `port`.
pub(super) fn rules_on<'a>(stack: &'a Stack, group: &Group, port: u16) -> Vec<&'a IngressRule> {
    group
        .security_groups
        .iter()
        .filter_map(|name| stack.security_group(name))
        .flat_map(|sg| &sg.ingress)
        .filter(|r| r.protocol != Protocol::Udp && r.ports.0 <= port && port <= r.ports.1)
        .collect()
}

/// Whether some rule admits connections from `addr`.
pub(super) fn admits_address(stack: &Stack, rules: &[&IngressRule], addr: IpAddr) -> bool {
    rules.iter().any(|r| match &r.source {
        Source::Cidr { net, .. } => net.contains(&addr),
        Source::LoadBalancer(name) => stack
            .load_balancer(name)
            .is_some_and(|lb| lb.nodes.iter().any(|n| n.address == addr)),
        Source::SecurityGroup(name) => stack
            .groups
            .iter()
            .filter(|g| g.security_groups.contains(name))
            .any(|g| may_hold(stack, g, addr)),
    })
}

/// Whether the rules together admit every address of `net` (two /17 rules admit a /16).
/// `sg:` and `lb:` sources are single hosts: they count only for a one-address network.
pub(super) fn admits_network(stack: &Stack, rules: &[&IngressRule], net: &IpNet) -> bool {
    if net.prefix_len() == net.max_prefix_len() {
        return admits_address(stack, rules, net.addr());
    }
    let cidrs: Vec<IpNet> = rules
        .iter()
        .filter_map(|r| match &r.source {
            Source::Cidr { net, .. } => Some(net.trunc()),
            _ => None,
        })
        .collect();
    let net = net.trunc();
    IpNet::aggregate(&cidrs).iter().any(|c| c.contains(&net))
}

/// Whether `addr` is one of the addresses the group's instances may get.
fn may_hold(stack: &Stack, group: &Group, addr: IpAddr) -> bool {
    let number = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    group
        .zones
        .iter()
        .filter_map(|z| stack.zone(z))
        .filter(|z| z.subnet.contains(&addr))
        .any(|z| {
            let offset = number(addr) - number(z.subnet.network());
            let first = u128::from(group.first_address);
            offset >= first && offset < first + u128::from(group.max)
        })
}
