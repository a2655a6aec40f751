//! The `etcd:` section: where the tier's shared state lives when its roles run as separate
//! agents (see `proxyfleet agent`). Without it, state is the embedded SQLite store.
//!
//! ```yaml
//! etcd:
//!   endpoints: [http://127.0.0.1:2379, http://127.0.0.2:2379, http://127.0.0.3:2379]
//!   prefix: /proxyfleet/            # default; several tiers may share one cluster
//! ```
//!
//! Endpoints are etcd's client URLs, plain `http://ADDRESS:PORT`: TLS and authentication to
//! etcd are not supported yet, so the cluster belongs on a network only the tier's hosts reach.

use std::net::SocketAddr;

use serde::de::{Deserialize, Deserializer};

use crate::error::StackError;
use crate::raw::{self, RawStack, Str};
use crate::validate::Ctx;

/// The etcd cluster the roles share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd {
    pub endpoints: Vec<SocketAddr>,
    /// Every key of this tier lives under it.
    pub prefix: String,
}

pub const DEFAULT_PREFIX: &str = "/proxyfleet/";

#[derive(Debug, Default)]
pub(crate) struct RawEtcd(Option<Fields>);

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    endpoints: serde_saphyr::Spanned<Vec<Str>>,
    prefix: Option<Str>,
}

impl<'de> Deserialize<'de> for RawEtcd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        raw::within(".etcd".to_string(), || {
            Option::<Fields>::deserialize(deserializer)
        })
        .map(RawEtcd)
    }
}

pub(crate) fn validate(ctx: &Ctx, raw: &RawStack) -> Result<Option<Etcd>, StackError> {
    let Some(fields) = &raw.etcd.0 else {
        return Ok(None);
    };
    let mut endpoints = Vec::new();
    for e in &fields.endpoints.value {
        let addr = e
            .value
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|rest| rest.parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                ctx.err(
                    &e.referenced,
                    "etcd",
                    format!(
                        "endpoint '{}' is not http://ADDRESS:PORT (an etcd client URL; TLS is not supported)",
                        e.value
                    ),
                )
            })?;
        if endpoints.contains(&addr) {
            return Err(ctx.err(
                &e.referenced,
                "etcd",
                format!("endpoint {addr} is listed twice"),
            ));
        }
        endpoints.push(addr);
    }
    if endpoints.is_empty() {
        return Err(ctx.err(
            &fields.endpoints.referenced,
            "etcd",
            "endpoints is empty: name at least one etcd client URL",
        ));
    }
    let prefix = match &fields.prefix {
        None => DEFAULT_PREFIX.to_string(),
        Some(p) if p.value.starts_with('/') && p.value.ends_with('/') && p.value.len() > 1 => {
            p.value.clone()
        }
        Some(p) => {
            return Err(ctx.err(
                &p.referenced,
                "etcd",
                format!(
                    "prefix '{}' must start and end with '/' (e.g. /proxyfleet/)",
                    p.value
                ),
            ))
        }
    };
    Ok(Some(Etcd { endpoints, prefix }))
}
