//! Host name resolution. Like Squid's internal DNS client it reads /etc/hosts and the name
//! servers of `dns_nameservers` (else /etc/resolv.conf), and caches answers by their TTL.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// A name that did not resolve: Squid's ERR_DNS_FAIL.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    pub host: String,
    pub reason: String,
}

pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// `nameservers` empty: the system's resolv.conf.
    pub fn new(nameservers: &[IpAddr]) -> Result<Resolver, DnsError> {
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
        let inner = builder.build().map_err(|e| DnsError {
            host: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Resolver { inner })
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
        // A trailing dot stops search-domain expansion: the URL's host is already absolute.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let answer = self
            .inner
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let ips: Vec<IpAddr> = answer.iter().collect();
        if ips.is_empty() {
            return Err(fail("no addresses".into()));
        }
        Ok(ips)
    }
}
