//! Target groups, load balancers and their listeners, as the load balancer crate's specs.

use std::net::SocketAddr;
use std::time::Duration;

use proxyfleet_lb::spec::{
    HealthCheckProtocol, HealthCheckSpec, ListenerSpec, LoadBalancerSpec, NodeSpec,
    TargetGroupSpec, TargetSpec, TargetType, MIN_INTERVAL,
};

use super::network::Sources;
use super::{tcp_only, zone, Ctx};
use crate::error::StackError;
use crate::model::{host_address, Zone};
use crate::raw::{RawHealthCheck, RawLoadBalancer, RawStack, Str};

/// The default node address of a load balancer in a zone: host .10 of its subnet.
const NODE_HOST: u128 = 10;

pub(crate) fn target_groups(
    ctx: &Ctx,
    raw: &RawStack,
    zones: &[Zone],
    across_hosts: bool,
) -> Result<Vec<TargetGroupSpec>, StackError> {
    let mut groups = Vec::new();
    for (name, tg) in &raw.target_groups.0 {
        let object = format!("target_groups.{}", name.value);
        let object = object.as_str();
        ctx.check_name(object, name, "target group")?;
        tcp_only(ctx, object, tg.protocol.as_ref())?;
        let port = ctx.port(object, "port", &tg.port)?;
        let target_type = match tg.target_type.as_ref().map(|t| (t, t.value.as_str())) {
            None | Some((_, "instance")) => TargetType::Instance,
            Some((_, "ip")) => TargetType::Ip,
            Some((t, other)) => {
                return Err(ctx.err(
                    &t.referenced,
                    object,
                    format!("unknown target_type '{other}' (expected instance or ip)"),
                ))
            }
        };
        let mut spec = TargetGroupSpec::new(&name.value, port, target_type);
        // Across hosts the client's address is not local to the node's host: it reaches
        // the target by PROXY v2 unless the group says otherwise (the cloud's IP targets).
        let proxy_v2_default = across_hosts && tg.preserve_client_ip.is_none();
        if proxy_v2_default {
            spec.preserve_client_ip = false;
        }
        if let Some(preserve) = tg.preserve_client_ip {
            spec.preserve_client_ip = preserve;
        }
        if let Some(transparent) = &tg.transparent {
            if transparent.value && !spec.preserve_client_ip {
                return Err(ctx.err(
                    &transparent.referenced,
                    object,
                    "transparent needs preserve_client_ip: true (it binds the client's address)",
                ));
            }
            spec.transparent = transparent.value;
        }
        if across_hosts && spec.preserve_client_ip && !spec.transparent {
            return Err(ctx.err(
                &name.referenced,
                object,
                "across hosts (a stack with hosts) preserve_client_ip needs transparent: true (the agents then route the instances' replies back through the node's host; see the README), or leave it unset for PROXY v2, the default",
            ));
        }
        spec.proxy_protocol_v2 = tg.proxy_protocol_v2.unwrap_or(proxy_v2_default);
        spec.deregistration_delay = ctx.duration(
            object,
            "deregistration_delay",
            tg.deregistration_delay.as_ref(),
            Duration::from_secs(30),
        )?;
        if let Some(n) = &tg.target_max_connections {
            spec.target_max_connections =
                Some(
                    ctx.number(object, "target_max_connections", n, (1, u32::MAX.into()))? as usize,
                );
        }
        if let Some(hc) = &tg.health_check {
            spec.health_check = health_check(ctx, object, hc)?;
        }
        for (i, target) in tg.targets.0.iter().enumerate() {
            let object = format!("{object}.targets[{i}]");
            let target = &target.value;
            let ip = ctx.ip(&object, &target.address)?;
            let port = match &target.port {
                Some(p) => ctx.port(&object, "port", p)?,
                None => port,
            };
            let zone = match &target.zone {
                Some(z) => {
                    let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
                    let zone = zone(zones, &ctx.known(&object, z, "zone", &names)?);
                    if !zone.subnet.contains(&ip) {
                        return Err(ctx.err(
                            &target.address.referenced,
                            &object,
                            format!(
                                "address {ip} is outside zone {}'s subnet {}",
                                zone.name, zone.subnet
                            ),
                        ));
                    }
                    zone.name.clone()
                }
                None => match zones.iter().find(|z| z.subnet.contains(&ip)) {
                    Some(zone) => zone.name.clone(),
                    None => {
                        return Err(ctx.err(
                            &target.address.referenced,
                            &object,
                            format!("address {ip} is in no zone's subnet"),
                        ))
                    }
                },
            };
            spec.targets.push(TargetSpec {
                address: SocketAddr::new(ip, port),
                zone,
            });
        }
        groups.push(spec);
    }
    Ok(groups)
}

fn health_check(
    ctx: &Ctx,
    object: &str,
    hc: &RawHealthCheck,
) -> Result<HealthCheckSpec, StackError> {
    let http_only = |field: &str, s: &Option<Str>| match s {
        Some(s) => Err(ctx.err(
            &s.referenced,
            object,
            format!("health_check {field} applies only to protocol http"),
        )),
        None => Ok(()),
    };
    let protocol = match hc.protocol.as_ref().map(|p| (p, p.value.as_str())) {
        None | Some((_, "tcp")) => {
            http_only("path", &hc.path)?;
            http_only("matcher", &hc.matcher)?;
            HealthCheckProtocol::Tcp
        }
        Some((_, "http")) => HealthCheckProtocol::Http {
            path: match &hc.path {
                Some(p) if !p.value.starts_with('/') => {
                    return Err(ctx.err(
                        &p.referenced,
                        object,
                        format!("health_check path '{}' must start with '/'", p.value),
                    ))
                }
                Some(p) => p.value.clone(),
                None => "/".to_string(),
            },
            matcher: match &hc.matcher {
                Some(m) => matcher(ctx, object, m)?,
                None => (200, 399),
            },
        },
        Some((p, other)) => {
            return Err(ctx.err(
                &p.referenced,
                object,
                format!("unknown health_check protocol '{other}' (expected tcp or http)"),
            ))
        }
    };
    let port = match &hc.port {
        Some(p) => Some(ctx.port(object, "health_check port", p)?),
        None => None,
    };
    let interval = ctx.duration(
        object,
        "health_check interval",
        hc.interval.as_ref(),
        Duration::from_secs(5),
    )?;
    if interval < MIN_INTERVAL {
        let at = &hc.interval.as_ref().expect("the default is 5 s").referenced;
        return Err(ctx.err(
            at,
            object,
            format!(
                "health_check interval {} is below the minimum {}",
                humantime::format_duration(interval),
                humantime::format_duration(MIN_INTERVAL)
            ),
        ));
    }
    let timeout = ctx.duration(
        object,
        "health_check timeout",
        hc.timeout.as_ref(),
        interval.min(Duration::from_secs(5)),
    )?;
    if let Some(t) = hc.timeout.as_ref().filter(|_| timeout > interval) {
        return Err(ctx.err(
            &t.referenced,
            object,
            format!(
                "health_check timeout {} > interval {}",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
    let threshold = |field: &str, n: &Option<crate::raw::Num>| match n {
        Some(n) => ctx
            .number(object, &format!("health_check {field}"), n, (2, 10))
            .map(|n| n as u32),
        None => Ok(2),
    };
    Ok(HealthCheckSpec {
        protocol,
        port,
        interval,
        timeout,
        healthy_threshold: threshold("healthy_threshold", &hc.healthy_threshold)?,
        unhealthy_threshold: threshold("unhealthy_threshold", &hc.unhealthy_threshold)?,
    })
}

/// `200` or `200-399`.
fn matcher(ctx: &Ctx, object: &str, s: &Str) -> Result<(u16, u16), StackError> {
    let text = s.value.trim();
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let code = |c: &str| {
        c.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    match (code(lo), code(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
        _ => Err(ctx.err(
            &s.referenced,
            object,
            format!(
                "invalid health_check matcher '{}' (expected a status like 200 or a range \
                 like 200-399, within 100-599)",
                s.value
            ),
        )),
    }
}

pub(crate) fn load_balancers(
    ctx: &Ctx,
    raw: &RawStack,
    sources: &Sources,
) -> Result<Vec<LoadBalancerSpec>, StackError> {
    let mut lbs: Vec<LoadBalancerSpec> = Vec::new();
    for (name, lb) in &raw.load_balancers.0 {
        let object = format!("load_balancers.{}", name.value);
        ctx.check_name(&object, name, "load balancer")?;
        let nodes = nodes(ctx, &object, lb, sources.zones, &lbs)?;
        let max_connections = match &lb.max_connections {
            Some(n) => ctx.number(&object, "max_connections", n, (1, u32::MAX.into()))? as usize,
            None => 10_000,
        };
        // One client may hold a quarter of a node: a single host (or one runaway pool) can
        // no longer take every slot, while a few NATed clients still fit.
        let max_connections_per_source = match &lb.max_connections_per_source {
            Some(n) => ctx.number(
                &object,
                "max_connections_per_source",
                n,
                (1, max_connections as u64),
            )? as usize,
            None => (max_connections / 4).max(1),
        };
        let idle_timeout = ctx.duration(
            &object,
            "idle_timeout",
            lb.idle_timeout.as_ref(),
            Duration::from_secs(350),
        )?;
        if idle_timeout.is_zero() {
            let at = &lb
                .idle_timeout
                .as_ref()
                .expect("the default is 350 s")
                .referenced;
            return Err(ctx.err(at, &object, "idle_timeout must be more than 0s"));
        }
        lbs.push(LoadBalancerSpec {
            name: name.value.clone(),
            nodes,
            cross_zone: lb.cross_zone.unwrap_or(false),
            listeners: Vec::new(),
            max_connections,
            max_connections_per_source,
            idle_timeout,
            bind_before_owned: false,
        });
    }
    listeners(ctx, raw, sources, &mut lbs)?;
    Ok(lbs)
}

/// One node per zone of the load balancer, in the order of its `zones`: the address from
/// `nodes`, or host .10 of the zone's subnet. No two load balancers share a node address.
fn nodes(
    ctx: &Ctx,
    object: &str,
    lb: &RawLoadBalancer,
    zones: &[Zone],
    earlier: &[LoadBalancerSpec],
) -> Result<Vec<NodeSpec>, StackError> {
    if lb.zones.value.is_empty() {
        return Err(ctx.err(&lb.zones.referenced, object, "zones is empty"));
    }
    let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
    let own = ctx.known_list(object, &lb.zones.value, "zone", &names)?;
    let given = lb.nodes.as_ref().map_or(&[][..], |n| &n.0[..]);
    if let Some((z, _)) = given.iter().find(|(z, _)| !own.contains(&z.value)) {
        return Err(ctx.err(
            &z.referenced,
            object,
            format!(
                "node for zone '{}', which is not one of this load balancer's zones ({})",
                z.value,
                own.join(", ")
            ),
        ));
    }
    let mut nodes: Vec<NodeSpec> = Vec::new();
    for (zone_ref, name) in lb.zones.value.iter().zip(&own) {
        let zone = zone(zones, name);
        let (address, at, default) = match given.iter().find(|(z, _)| &z.value == name) {
            Some((_, address)) => {
                let ip = ctx.ip(object, address)?;
                if !zone.subnet.contains(&ip) {
                    return Err(ctx.err(
                        &address.referenced,
                        object,
                        format!(
                            "node address {ip} is outside zone {name}'s subnet {}",
                            zone.subnet
                        ),
                    ));
                }
                (ip, &address.referenced, "")
            }
            None => match host_address(&zone.subnet, NODE_HOST) {
                Some(ip) => (ip, &zone_ref.referenced, "default "),
                None => {
                    return Err(ctx.err(
                        &zone_ref.referenced,
                        object,
                        format!(
                            "zone {name}'s subnet {} has no host .{NODE_HOST} for the default \
                             node address; give one in nodes",
                            zone.subnet
                        ),
                    ))
                }
            },
        };
        let taken = earlier
            .iter()
            .find(|lb| lb.nodes.iter().any(|n| n.address == address));
        if let Some(other) = taken {
            return Err(ctx.err(
                at,
                object,
                format!(
                    "{default}node address {address} in zone {name} is already used by \
                     load_balancers.{}",
                    other.name
                ),
            ));
        }
        nodes.push(NodeSpec {
            zone: name.clone(),
            address,
        });
    }
    Ok(nodes)
}

fn listeners(
    ctx: &Ctx,
    raw: &RawStack,
    sources: &Sources,
    lbs: &mut [LoadBalancerSpec],
) -> Result<(), StackError> {
    // (load balancer, port) → the listener that has it.
    let mut ports: Vec<(String, u16, usize)> = Vec::new();
    for (i, listener) in raw.listeners.0.iter().enumerate() {
        let object = format!("listeners[{i}]");
        let object = object.as_str();
        let l = &listener.value;
        let lb_name = ctx.known(
            object,
            &l.load_balancer,
            "load balancer",
            &sources.known.load_balancers,
        )?;
        let port = ctx.port(object, "port", &l.port)?;
        tcp_only(ctx, object, l.protocol.as_ref())?;
        let target_group = ctx.known(
            object,
            &l.target_group,
            "target group",
            &sources.known.target_groups,
        )?;
        let allowed_cidrs = match &l.allowed_cidrs {
            Some(list) => Some(
                list.iter()
                    .map(|s| sources.cidr(ctx, object, s))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        if let Some((_, _, first)) = ports.iter().find(|(lb, p, _)| *lb == lb_name && *p == port) {
            return Err(ctx.err(
                &l.port.referenced,
                object,
                format!(
                    "port {port} is already used by listeners[{first}] on load balancer {lb_name}"
                ),
            ));
        }
        ports.push((lb_name.clone(), port, i));
        let lb = lbs
            .iter_mut()
            .find(|lb| lb.name == lb_name)
            .expect("load balancer names are checked");
        lb.listeners.push(ListenerSpec {
            port,
            target_group,
            allowed_cidrs,
        });
    }
    Ok(())
}
