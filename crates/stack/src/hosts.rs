//! The tier across hosts: the `hosts:` section (which machine runs which zone, at what
//! address, with node and instance addresses added to which interface) and the `dns:`
//! section (the health-checked name every agent answers for).
//!
//! ```yaml
//! hosts:
//!   host-a: { zone: a, address: 198.18.0.1, interface: eth0 }
//!   host-b: { zone: b, address: 198.18.0.2, interface: eth0 }
//! dns:
//!   name: proxy.tier.internal   # what app hosts put in http_proxy
//!   port: 53                    # default
//! ```
//!
//! With `interface`, the host's agent adds the addresses it serves to that interface as /32s
//! — its instances' and the node addresses it holds — and removes them when it gives them up,
//! so a node address moves to a surviving host (announced by gratuitous ARP). Without it the
//! addresses must already be local (one machine: the loopback range).
//!
//! A stack with hosts runs across hosts: a target group that does not say otherwise sends
//! the client's address by PROXY v2 (the client's address is not local to the node's host, so
//! it cannot be bound without `transparent`).

use std::net::IpAddr;

use serde::de::{Deserialize, Deserializer};

use crate::error::StackError;
use crate::model::Zone;
use crate::raw::{self, RawStack, Str};
use crate::validate::Ctx;

/// One host of the tier (`hosts.ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub id: String,
    /// The zone whose node and instances it runs.
    pub zone: String,
    /// Its own address: where its agent's DNS answers and etcd member listen, as `status`
    /// shows it.
    pub address: IpAddr,
    /// Where its agent adds the addresses it serves; `None`: they are local already.
    pub interface: Option<String>,
}

/// The health-checked DNS name (`dns:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Lowercase, without a trailing dot.
    pub name: String,
    pub port: u16,
}

pub const DEFAULT_DNS_PORT: u16 = 53;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    zone: Str,
    address: Str,
    interface: Option<Str>,
}

#[derive(Debug, Default)]
pub(crate) struct RawDns(Option<DnsFields>);

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsFields {
    name: Str,
    port: Option<raw::Num>,
}

impl<'de> Deserialize<'de> for RawDns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        raw::within(".dns".to_string(), || {
            Option::<DnsFields>::deserialize(deserializer)
        })
        .map(RawDns)
    }
}

pub(crate) fn hosts(
    ctx: &Ctx,
    raw: &RawStack,
    zones: &[Zone],
) -> Result<Vec<HostSpec>, StackError> {
    let mut hosts: Vec<HostSpec> = Vec::new();
    for (id, h) in &raw.hosts.0 {
        let object = format!("hosts.{}", id.value);
        let object = object.as_str();
        ctx.check_name(object, id, "host")?;
        if !zones.iter().any(|z| z.name == h.zone.value) {
            let known: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
            return Err(ctx.err(
                &h.zone.referenced,
                object,
                format!(
                    "unknown zone '{}' (the stack has: {})",
                    h.zone.value,
                    known.join(", ")
                ),
            ));
        }
        let address = ctx.ip(object, &h.address)?;
        if let Some(other) = hosts.iter().find(|o| o.address == address) {
            return Err(ctx.err(
                &h.address.referenced,
                object,
                format!("address {address} is host {}'s already", other.id),
            ));
        }
        let interface = match &h.interface {
            None => None,
            Some(i) if valid_interface(&i.value) => Some(i.value.clone()),
            Some(i) => {
                return Err(ctx.err(
                    &i.referenced,
                    object,
                    format!(
                        "interface '{}' is not a Linux interface name (1 to 15 characters, no '/', ':' or spaces)",
                        i.value
                    ),
                ))
            }
        };
        hosts.push(HostSpec {
            id: id.value.clone(),
            zone: h.zone.value.clone(),
            address,
            interface,
        });
    }
    Ok(hosts)
}

/// What the kernel takes as an interface name (IFNAMSIZ less its NUL).
fn valid_interface(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':')
}

pub(crate) fn dns(ctx: &Ctx, raw: &RawStack) -> Result<Option<Dns>, StackError> {
    let Some(fields) = &raw.dns.0 else {
        return Ok(None);
    };
    let name = fields
        .name
        .value
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !labels_ok {
        return Err(ctx.err(
            &fields.name.referenced,
            "dns",
            format!(
                "name '{}' is not a DNS name (labels of letters, digits and '-', like proxy.tier.internal)",
                fields.name.value
            ),
        ));
    }
    let port = match &fields.port {
        None => DEFAULT_DNS_PORT,
        Some(p) => ctx.port("dns", "port", p)?,
    };
    Ok(Some(Dns { name, port }))
}
