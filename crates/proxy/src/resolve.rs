//! Host name resolution. Like Squid's internal DNS client it reads /etc/hosts and the name
//! servers of `dns_nameservers` (else /etc/resolv.conf), and caches answers by their TTL.
//! A failed lookup (NXDOMAIN, SERVFAIL, a time-out, no addresses) is remembered for
//! `negative_dns_ttl`, as Squid's ipcache does: asking again within that time fails at once,
//! so a flapping name server cannot give one request two different verdicts.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::expiring::ExpiringMap;

/// A name that did not resolve: Squid's ERR_DNS_FAIL.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    pub host: String,
    pub reason: String,
}

pub struct Resolver {
    inner: TokioResolver,
    negative_ttl: Duration,
    /// Names whose lookup failed, and why.
    failed: ExpiringMap<String>,
}

/// At most this many failed names are remembered: a client asking for endless random names
/// costs bounded memory (when full, expired entries go, then all of them).
const MAX_NEGATIVE: usize = 10_000;

impl Resolver {
    /// `nameservers` empty: the system's resolv.conf. `positive_ttl` caps how long an
    /// answer is cached (`positive_dns_ttl`), whatever its records' TTL.
    pub fn new(
        nameservers: &[IpAddr],
        positive_ttl: Duration,
        negative_ttl: Duration,
    ) -> Result<Resolver, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder(provider.clone()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no usable /etc/resolv.conf: only /etc/hosts and IP addresses will resolve");
                TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], vec![]), provider)
            })
        } else {
            let servers = nameservers
                .iter()
                .map(|ip| NameServerConfig::udp_and_tcp(*ip))
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                provider,
            )
        };
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Always;
        opts.positive_max_ttl = Some(positive_ttl);
        let inner = builder.build().map_err(|e| DnsError {
            host: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Resolver {
            inner,
            negative_ttl,
            failed: ExpiringMap::new(MAX_NEGATIVE),
        })
    }

    /// The addresses of `host` (an IP literal is its own answer, with no lookup).
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fail = |reason: String| DnsError {
            host: host.to_string(),
            reason,
        };
        if let Some(reason) = self.remembered_failure(host) {
            return Err(fail(reason));
        }
        // A trailing dot stops search-domain expansion: the URL's host is already absolute.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let result = match self.inner.lookup_ip(fqdn.as_str()).await {
            Ok(answer) => {
                let ips: Vec<IpAddr> = answer.iter().collect();
                if ips.is_empty() {
                    Err("no addresses".to_string())
                } else {
                    Ok(ips)
                }
            }
            Err(e) => Err(e.to_string()),
        };
        result.map_err(|reason| {
            self.remember_failure(host, &reason);
            fail(reason)
        })
    }

    fn remembered_failure(&self, host: &str) -> Option<String> {
        let reason = self.failed.get(host)?;
        Some(format!("{reason} (remembered for negative_dns_ttl)"))
    }

    fn remember_failure(&self, host: &str, reason: &str) {
        if !self.negative_ttl.is_zero() {
            self.failed
                .insert(host.to_string(), reason.to_string(), self.negative_ttl);
        }
    }
}
