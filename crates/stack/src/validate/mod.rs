//! Raw stack → [`Stack`]: names and references resolved, defaults filled in, every rule of
//! the schema checked. The first problem found is the error; it points at the key or value
//! at fault and names its object (`groups.proxies`).
//!
//! - `network`: zones, networks, security groups and the sources their rules admit;
//! - `balancer`: target groups, load balancers (nodes) and listeners;
//! - `fleet`: launch templates (placeholders) and groups.

mod balancer;
mod fleet;
mod network;

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Location;

use crate::error::{Pos, StackError};
use crate::model::{Stack, Zone};
use crate::raw::{Num, RawStack, Str};

pub(crate) fn validate(raw: &RawStack, ctx: &Ctx) -> Result<Stack, StackError> {
    let known = Known::of(raw);
    let zones = network::zones(ctx, raw)?;
    let networks = network::networks(ctx, raw, &zones)?;
    let service_networks = network::service_networks(ctx, raw, &zones, &networks)?;
    let sources = network::Sources {
        zones: &zones,
        networks: &networks,
        known: &known,
    };
    let security_groups = network::security_groups(ctx, raw, &sources)?;
    let hosts = crate::hosts::hosts(ctx, raw, &zones)?;
    let target_groups = balancer::target_groups(ctx, raw, &zones, !hosts.is_empty())?;
    let load_balancers = balancer::load_balancers(ctx, raw, &sources)?;
    let launch_templates = fleet::launch_templates(ctx, raw)?;
    let groups = fleet::groups(ctx, raw, &known, &zones, &load_balancers)?;
    Ok(Stack {
        admin: crate::admin::validate(raw),
        etcd: crate::etcd::validate(ctx, raw)?,
        hosts,
        dns: crate::hosts::dns(ctx, raw)?,
        zones,
        networks,
        service_networks,
        security_groups,
        load_balancers,
        target_groups,
        launch_templates,
        groups,
    })
}

/// The file being validated, for positions and messages.
pub(crate) struct Ctx<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Ctx<'_> {
    pub fn err(&self, at: &Location, object: &str, message: impl Into<String>) -> StackError {
        StackError::invalid(self.path, Pos::of(*at), object, message.into())
    }

    /// Where `text`'s placeholder problem is in the file: at the offending `{` itself when
    /// the scalar's source shows it as written (plain, quoted and literal block scalars),
    /// else at the start of the scalar.
    pub fn placeholders(&self, object: &str, s: &Str) -> Result<(), StackError> {
        let Some((_, message)) = crate::render::first_problem(&s.value) else {
            return Ok(());
        };
        let span = s.referenced.span();
        let source = span
            .byte_offset()
            .zip(span.byte_len())
            .and_then(|(at, len)| {
                let (at, len) = (usize::try_from(at).ok()?, usize::try_from(len).ok()?);
                Some((at, self.text.get(at..at.checked_add(len)?)?))
            });
        if let Some((start, source)) = source {
            if let Some((at, again)) = crate::render::first_problem(source) {
                if again == message {
                    let pos = Pos::at_byte(self.text, start + at);
                    return Err(StackError::invalid(self.path, pos, object, message));
                }
            }
        }
        Err(self.err(&s.referenced, object, message))
    }

    /// A name as used in the file: `what` names its kind in messages.
    pub fn check_name(&self, object: &str, name: &Str, what: &str) -> Result<(), StackError> {
        let ok = !name.value.is_empty()
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(self.err(
                &name.referenced,
                object,
                format!(
                    "{what} name '{}' may only hold letters, digits, '-' and '_'",
                    name.value
                ),
            ))
        }
    }

    /// An address as a CIDR (`127.10.1.0/24`) or, with `bare_ip`, a single address.
    pub fn cidr(&self, object: &str, s: &Str, bare_ip: bool) -> Result<IpNet, StackError> {
        let text = s.value.trim();
        if let Ok(net) = IpNet::from_str(text) {
            if net.trunc() != net {
                return Err(self.err(
                    &s.referenced,
                    object,
                    format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                ));
            }
            return Ok(net);
        }
        if bare_ip {
            if let Ok(ip) = IpAddr::from_str(text) {
                return Ok(IpNet::from(ip));
            }
        }
        Err(self.err(
            &s.referenced,
            object,
            format!("invalid CIDR '{}' (expected like 127.10.1.0/24)", s.value),
        ))
    }

    pub fn ip(&self, object: &str, s: &Str) -> Result<IpAddr, StackError> {
        IpAddr::from_str(s.value.trim()).map_err(|_| {
            self.err(
                &s.referenced,
                object,
                format!("invalid address '{}' (expected like 127.10.1.10)", s.value),
            )
        })
    }

    /// A humantime duration (`5s`, `100ms`, `2m`), or `default` when absent.
    pub fn duration(
        &self,
        object: &str,
        field: &str,
        s: Option<&Str>,
        default: Duration,
    ) -> Result<Duration, StackError> {
        let Some(s) = s else { return Ok(default) };
        humantime::parse_duration(s.value.trim()).map_err(|e| {
            self.err(
                &s.referenced,
                object,
                format!("invalid {field} '{}': {e}", s.value),
            )
        })
    }

    /// A number within `lo..=hi`.
    pub fn number(
        &self,
        object: &str,
        field: &str,
        n: &Num,
        (lo, hi): (u64, u64),
    ) -> Result<u64, StackError> {
        if (lo..=hi).contains(&n.value) {
            Ok(n.value)
        } else {
            Err(self.err(
                &n.referenced,
                object,
                format!("{field} {} is out of range {lo}-{hi}", n.value),
            ))
        }
    }

    pub fn port(&self, object: &str, field: &str, n: &Num) -> Result<u16, StackError> {
        self.number(object, field, n, (1, 65535)).map(|p| p as u16)
    }

    /// A reference to a `kind` defined in the file, e.g. a load balancer's zone.
    pub fn known(
        &self,
        object: &str,
        s: &Str,
        kind: &str,
        names: &[&str],
    ) -> Result<String, StackError> {
        if names.contains(&s.value.as_str()) {
            return Ok(s.value.clone());
        }
        let defined = if names.is_empty() {
            "none are defined".to_string()
        } else {
            format!("defined: {}", names.join(", "))
        };
        Err(self.err(
            &s.referenced,
            object,
            format!("unknown {kind} '{}' ({defined})", s.value),
        ))
    }

    /// A list of references with no repeats (zones of a group, target groups, ...).
    pub fn known_list(
        &self,
        object: &str,
        list: &[Str],
        kind: &str,
        names: &[&str],
    ) -> Result<Vec<String>, StackError> {
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        for s in list {
            let name = self.known(object, s, kind, names)?;
            if out.contains(&name) {
                return Err(self.err(
                    &s.referenced,
                    object,
                    format!("{kind} '{name}' is listed twice"),
                ));
            }
            out.push(name);
        }
        Ok(out)
    }
}

/// The names each section defines, so that references can be checked in any order.
pub(crate) struct Known<'r> {
    pub zones: Vec<&'r str>,
    pub security_groups: Vec<&'r str>,
    pub load_balancers: Vec<&'r str>,
    pub target_groups: Vec<&'r str>,
    pub launch_templates: Vec<&'r str>,
}

impl<'r> Known<'r> {
    fn of(raw: &'r RawStack) -> Self {
        fn names<T>(entries: &[(Str, T)]) -> Vec<&str> {
            entries.iter().map(|(k, _)| k.value.as_str()).collect()
        }
        Known {
            zones: names(&raw.zones.0),
            security_groups: names(&raw.security_groups.0),
            load_balancers: names(&raw.load_balancers.0),
            target_groups: names(&raw.target_groups.0),
            launch_templates: names(&raw.launch_templates.0),
        }
    }
}

pub(crate) fn zone<'z>(zones: &'z [Zone], name: &str) -> &'z Zone {
    zones
        .iter()
        .find(|z| z.name == name)
        .expect("zone names are checked before use")
}

/// `protocol: tcp` where only TCP is supported (listeners, target groups).
pub(crate) fn tcp_only(ctx: &Ctx, object: &str, protocol: Option<&Str>) -> Result<(), StackError> {
    match protocol {
        Some(p) if p.value != "tcp" => Err(ctx.err(
            &p.referenced,
            object,
            format!("unsupported protocol '{}' (only tcp)", p.value),
        )),
        _ => Ok(()),
    }
}
