//! Launch templates and the groups that run them.

use std::net::IpAddr;
use std::time::Duration;

use proxyfleet_lb::spec::LoadBalancerSpec;
use serde_saphyr::Location;

use super::{zone, Ctx, Known};
use crate::error::StackError;
use crate::model::{Group, HealthCheckType, LaunchTemplate, Scaling, Zone};
use crate::raw::{RawGroup, RawStack, Str};

pub(crate) fn launch_templates(
    ctx: &Ctx,
    raw: &RawStack,
) -> Result<Vec<LaunchTemplate>, StackError> {
    let mut templates = Vec::new();
    for (name, lt) in &raw.launch_templates.0 {
        let object = format!("launch_templates.{}", name.value);
        let object = object.as_str();
        ctx.check_name(object, name, "launch template")?;
        if lt.command.value.is_empty() {
            return Err(ctx.err(&lt.command.referenced, object, "command is empty"));
        }
        for arg in &lt.command.value {
            ctx.placeholders(object, arg)?;
        }
        let environment = lt.environment.as_ref().map_or(&[][..], |e| &e.0[..]);
        for (key, value) in environment {
            if key.value.is_empty() || key.value.contains(['=', '\0']) {
                return Err(ctx.err(
                    &key.referenced,
                    object,
                    format!("invalid environment variable name '{}'", key.value),
                ));
            }
            ctx.placeholders(object, value)?;
        }
        let files = lt.files.as_ref().map_or(&[][..], |f| &f.0[..]);
        for (file, contents) in files {
            let path = std::path::Path::new(&file.value);
            let plain = !file.value.is_empty()
                && path.is_relative()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain {
                return Err(ctx.err(
                    &file.referenced,
                    object,
                    format!(
                        "file name '{}' must be a relative path inside the instance's directory",
                        file.value
                    ),
                ));
            }
            ctx.placeholders(object, contents)?;
        }
        let pairs = |list: &[(Str, Str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.value.clone(), v.value.clone()))
                .collect()
        };
        templates.push(LaunchTemplate {
            name: name.value.clone(),
            command: lt.command.value.iter().map(|a| a.value.clone()).collect(),
            environment: pairs(environment),
            files: pairs(files),
            stop_timeout: ctx.duration(
                object,
                "stop_timeout",
                lt.stop_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
        });
    }
    Ok(templates)
}

pub(crate) fn groups(
    ctx: &Ctx,
    raw: &RawStack,
    known: &Known,
    zones: &[Zone],
    lbs: &[LoadBalancerSpec],
) -> Result<Vec<Group>, StackError> {
    let mut groups: Vec<Group> = Vec::new();
    for (name, g) in &raw.groups.0 {
        let object = format!("groups.{}", name.value);
        let object = object.as_str();
        ctx.check_name(object, name, "group")?;
        let launch_template = ctx.known(
            object,
            &g.launch_template,
            "launch template",
            &known.launch_templates,
        )?;
        let (min, max, desired) = sizes(ctx, object, g)?;
        if g.zones.value.is_empty() {
            return Err(ctx.err(&g.zones.referenced, object, "zones is empty"));
        }
        let group_zones = ctx.known_list(object, &g.zones.value, "zone", &known.zones)?;
        let port = match &g.port {
            Some(p) => ctx.port(object, "port", p)?,
            None => 3128,
        };
        let target_groups = ctx.known_list(
            object,
            &g.target_groups,
            "target group",
            &known.target_groups,
        )?;
        let security_groups = ctx.known_list(
            object,
            &g.security_groups,
            "security group",
            &known.security_groups,
        )?;
        let health_check_type = match g.health_check_type.as_ref() {
            None => HealthCheckType::Process,
            Some(t) if t.value == "process" => HealthCheckType::Process,
            Some(t) if t.value == "lb" && target_groups.is_empty() => {
                return Err(ctx.err(
                    &t.referenced,
                    object,
                    "health_check_type lb needs at least one target group",
                ))
            }
            Some(t) if t.value == "lb" => HealthCheckType::Lb,
            Some(t) => {
                return Err(ctx.err(
                    &t.referenced,
                    object,
                    format!(
                        "unknown health_check_type '{}' (expected process or lb)",
                        t.value
                    ),
                ))
            }
        };
        let grace_period = ctx.duration(
            object,
            "health_check_grace_period",
            g.health_check_grace_period.as_ref(),
            Duration::from_secs(2),
        )?;
        let first_address = match &g.first_address {
            Some(n) => ctx.number(object, "first_address", n, (1, u32::MAX.into()))? as u32,
            None => 11,
        };
        let scaling = match &g.scaling {
            None => None,
            Some(s) if target_groups.is_empty() => {
                return Err(ctx.err(
                    &s.referenced,
                    object,
                    "scaling needs at least one target group (it tracks the load \
                     balancer's active connections)",
                ))
            }
            Some(s) => Some(Scaling {
                target_active_connections_per_instance: ctx.number(
                    object,
                    "target_active_connections_per_instance",
                    &s.value.target_active_connections_per_instance,
                    (1, u32::MAX.into()),
                )? as u32,
                scale_out_cooldown: ctx.duration(
                    object,
                    "scale_out_cooldown",
                    s.value.scale_out_cooldown.as_ref(),
                    Duration::from_secs(30),
                )?,
                scale_in_cooldown: ctx.duration(
                    object,
                    "scale_in_cooldown",
                    s.value.scale_in_cooldown.as_ref(),
                    Duration::from_secs(60),
                )?,
            }),
        };
        let group = Group {
            name: name.value.clone(),
            launch_template,
            min,
            max,
            desired,
            zones: group_zones,
            port,
            target_groups,
            security_groups,
            health_check_type,
            grace_period,
            first_address,
            scaling,
        };
        let at = g
            .first_address
            .as_ref()
            .map_or(&g.max.referenced, |n| &n.referenced);
        addresses(ctx, object, at, &group, zones, lbs, &groups)?;
        groups.push(group);
    }
    Ok(groups)
}

/// min, max and desired (default: min), with min <= desired <= max and max >= 1.
fn sizes(ctx: &Ctx, object: &str, g: &RawGroup) -> Result<(u32, u32, u32), StackError> {
    let count = |field: &str, n: &crate::raw::Num| {
        ctx.number(object, field, n, (0, u32::MAX.into()))
            .map(|n| n as u32)
    };
    let (min, max) = (count("min", &g.min)?, count("max", &g.max)?);
    if max == 0 {
        return Err(ctx.err(&g.max.referenced, object, "max must be at least 1"));
    }
    if min > max {
        return Err(ctx.err(&g.min.referenced, object, format!("min {min} > max {max}")));
    }
    let desired = match &g.desired {
        Some(d) => {
            let desired = count("desired", d)?;
            if min > desired {
                return Err(ctx.err(
                    &d.referenced,
                    object,
                    format!("min {min} > desired {desired}"),
                ));
            }
            if desired > max {
                return Err(ctx.err(
                    &d.referenced,
                    object,
                    format!("desired {desired} > max {max}"),
                ));
            }
            desired
        }
        None => min,
    };
    Ok((min, max, desired))
}

/// Every zone of the group has room for `max` instance addresses from `first_address` on,
/// and they are nobody else's: not a load balancer node's, not an earlier group's.
fn addresses(
    ctx: &Ctx,
    object: &str,
    at: &Location,
    group: &Group,
    zones: &[Zone],
    lbs: &[LoadBalancerSpec],
    earlier: &[Group],
) -> Result<(), StackError> {
    let range = |g: &Group, zone: &Zone| -> Option<(IpAddr, IpAddr)> {
        let first = g.instance_address(&zone.subnet, 0)?;
        let last = g.instance_address(&zone.subnet, g.max - 1)?;
        Some((first, last))
    };
    for name in &group.zones {
        let zone = zone(zones, name);
        let Some((first, last)) = range(group, zone) else {
            return Err(ctx.err(
                at,
                object,
                format!(
                    "zone {name}'s subnet {} has no room for max {} instances from host .{}",
                    zone.subnet, group.max, group.first_address
                ),
            ));
        };
        let node = lbs.iter().find_map(|lb| {
            lb.nodes
                .iter()
                .find(|n| n.address >= first && n.address <= last)
                .map(|n| (lb, n))
        });
        if let Some((lb, node)) = node {
            return Err(ctx.err(
                at,
                object,
                format!(
                    "instance addresses {first}-{last} in zone {name} include load_balancers.{}'s \
                     node {}; set first_address",
                    lb.name, node.address
                ),
            ));
        }
        for other in earlier.iter().filter(|o| o.zones.contains(name)) {
            let Some((o_first, o_last)) = range(other, zone) else {
                continue;
            };
            if first <= o_last && o_first <= last {
                return Err(ctx.err(
                    at,
                    object,
                    format!(
                        "instance addresses {first}-{last} in zone {name} overlap groups.{}'s \
                         ({o_first}-{o_last}); set first_address",
                        other.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
