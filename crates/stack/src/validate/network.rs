//! Zones, named networks, security groups, and the sources their rules admit.

use ipnet::IpNet;

use super::{Ctx, Known};
use crate::error::StackError;
use crate::model::{IngressRule, Protocol, SecurityGroup, Source, Zone};
use crate::raw::{RawStack, Str};

pub(crate) fn zones(ctx: &Ctx, raw: &RawStack) -> Result<Vec<Zone>, StackError> {
    let mut zones: Vec<Zone> = Vec::new();
    for (name, zone) in &raw.zones.0 {
        let object = format!("zones.{}", name.value);
        let ok = !name.value.is_empty()
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(ctx.err(
                &name.referenced,
                &object,
                format!(
                    "zone name '{}' may only hold lowercase letters, digits and '-'",
                    name.value
                ),
            ));
        }
        let subnet = ctx.cidr(&object, &zone.subnet, false)?;
        if let Some(other) = zones.iter().find(|z| overlap(&z.subnet, &subnet)) {
            return Err(ctx.err(
                &zone.subnet.referenced,
                &object,
                format!(
                    "subnet {subnet} overlaps zones.{} ({})",
                    other.name, other.subnet
                ),
            ));
        }
        zones.push(Zone {
            name: name.value.clone(),
            subnet,
        });
    }
    Ok(zones)
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub(crate) fn networks(
    ctx: &Ctx,
    raw: &RawStack,
    zones: &[Zone],
) -> Result<Vec<(String, IpNet)>, StackError> {
    let mut networks = Vec::new();
    for (name, network) in &raw.networks.0 {
        let object = format!("networks.{}", name.value);
        ctx.check_name(&object, name, "network")?;
        if zones.iter().any(|z| z.name == name.value) {
            return Err(ctx.err(
                &name.referenced,
                &object,
                format!(
                    "network name '{}' is also a zone's name; rules naming it would be ambiguous",
                    name.value
                ),
            ));
        }
        networks.push((name.value.clone(), ctx.cidr(&object, &network.cidr, false)?));
    }
    Ok(networks)
}

/// `service_networks`: network names or CIDRs, never overlapping a zone (the zones' subnets
/// hold the tier itself, which no client may reach through it).
pub(crate) fn service_networks(
    ctx: &Ctx,
    raw: &RawStack,
    zones: &[Zone],
    networks: &[(String, IpNet)],
) -> Result<Vec<IpNet>, StackError> {
    let mut out = Vec::new();
    for (i, entry) in raw.service_networks.iter().enumerate() {
        let object = format!("service_networks[{i}]");
        let text = entry.value.trim();
        let net = match networks.iter().find(|(n, _)| n == text) {
            Some((_, net)) => *net,
            None if text.contains('/') || text.parse::<std::net::IpAddr>().is_ok() => {
                ctx.cidr(&object, entry, true)?
            }
            None => {
                return Err(ctx.err(
                    &entry.referenced,
                    &object,
                    format!(
                        "unknown network '{}' (expected a name from networks, a CIDR or an \
                         address)",
                        entry.value
                    ),
                ))
            }
        };
        if let Some(zone) = zones.iter().find(|z| overlap(&z.subnet, &net)) {
            return Err(ctx.err(
                &entry.referenced,
                &object,
                format!(
                    "{net} overlaps zone {}'s subnet {}: the zones hold the tier's own nodes and \
                     instances, which are never reachable through the proxies",
                    zone.name, zone.subnet
                ),
            ));
        }
        out.push(net);
    }
    Ok(out)
}

/// What a rule's `from` (or a listener's `allowed_cidrs` entry) may name.
pub(crate) struct Sources<'a> {
    pub zones: &'a [Zone],
    pub networks: &'a [(String, IpNet)],
    pub known: &'a Known<'a>,
}

impl Sources<'_> {
    /// `sg:NAME`, `lb:NAME`, a network's name, a zone's name (its subnet), a CIDR or an
    /// address.
    pub fn source(&self, ctx: &Ctx, object: &str, s: &Str) -> Result<Source, StackError> {
        let text = s.value.trim();
        if let Some(name) = text.strip_prefix("sg:") {
            let named = Str::new(name.to_string(), s.referenced, s.defined);
            let name = ctx.known(
                object,
                &named,
                "security group",
                &self.known.security_groups,
            )?;
            return Ok(Source::SecurityGroup(name));
        }
        if let Some(name) = text.strip_prefix("lb:") {
            let named = Str::new(name.to_string(), s.referenced, s.defined);
            let name = ctx.known(object, &named, "load balancer", &self.known.load_balancers)?;
            return Ok(Source::LoadBalancer(name));
        }
        if let Some((name, net)) = self.networks.iter().find(|(n, _)| n == text) {
            return Ok(Source::Cidr {
                net: *net,
                named: Some(name.clone()),
            });
        }
        if let Some(zone) = self.zones.iter().find(|z| z.name == text) {
            return Ok(Source::Cidr {
                net: zone.subnet,
                named: Some(zone.name.clone()),
            });
        }
        let looks_like_address = text.contains('/') || text.parse::<std::net::IpAddr>().is_ok();
        if looks_like_address {
            let net = ctx.cidr(object, s, true)?;
            return Ok(Source::Cidr { net, named: None });
        }
        Err(ctx.err(
            &s.referenced,
            object,
            format!(
                "unknown source '{}' (expected a network or zone name, a CIDR, sg:NAME or lb:NAME)",
                s.value
            ),
        ))
    }

    /// A listener's `allowed_cidrs` entry: addresses known now, so no `sg:` or `lb:`.
    pub fn cidr(&self, ctx: &Ctx, object: &str, s: &Str) -> Result<IpNet, StackError> {
        match self.source(ctx, object, s)? {
            Source::Cidr { net, .. } => Ok(net),
            Source::SecurityGroup(_) | Source::LoadBalancer(_) => Err(ctx.err(
                &s.referenced,
                object,
                format!(
                    "allowed_cidrs takes CIDRs, network names and zone names, not '{}'",
                    s.value
                ),
            )),
        }
    }
}

pub(crate) fn security_groups(
    ctx: &Ctx,
    raw: &RawStack,
    sources: &Sources,
) -> Result<Vec<SecurityGroup>, StackError> {
    let mut groups = Vec::new();
    for (name, group) in &raw.security_groups.0 {
        let object = format!("security_groups.{}", name.value);
        ctx.check_name(&object, name, "security group")?;
        let mut ingress = Vec::new();
        for (i, rule) in group.ingress.0.iter().enumerate() {
            let object = format!("{object}.ingress[{i}]");
            let rule_at = &rule.referenced;
            let rule = &rule.value;
            let protocol = match rule.protocol.value.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "all" => Protocol::All,
                other => {
                    return Err(ctx.err(
                        &rule.protocol.referenced,
                        &object,
                        format!("unknown protocol '{other}' (expected tcp, udp or all)"),
                    ))
                }
            };
            let ports = match (&rule.ports, protocol) {
                (Some(ports), Protocol::All) => {
                    return Err(ctx.err(
                        &ports.referenced,
                        &object,
                        "ports do not apply to protocol all (it admits every port)",
                    ))
                }
                (None, Protocol::All) => (1, 65535),
                (Some(ports), _) => port_range(ctx, &object, ports)?,
                (None, _) => {
                    return Err(ctx.err(
                        rule_at,
                        &object,
                        format!("missing ports for protocol {}", rule.protocol.value),
                    ))
                }
            };
            let source = sources.source(ctx, &object, &rule.from)?;
            ingress.push(IngressRule {
                protocol,
                ports,
                source,
            });
        }
        groups.push(SecurityGroup {
            name: name.value.clone(),
            ingress,
        });
    }
    Ok(groups)
}

/// `3128` or `3128-3130`.
fn port_range(ctx: &Ctx, object: &str, s: &Str) -> Result<(u16, u16), StackError> {
    let err = |message: String| ctx.err(&s.referenced, object, message);
    let text = s.value.trim();
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let parse = |p: &str| -> Result<u16, StackError> {
        match p.trim().parse::<u64>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(err(format!("port {n} is out of range 1-65535"))),
            Err(_) => Err(err(format!(
                "invalid ports '{}' (expected a port like 3128 or a range like 3128-3130)",
                s.value
            ))),
        }
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        return Err(err(format!("ports {lo}-{hi}: the range is reversed")));
    }
    Ok((lo, hi))
}
