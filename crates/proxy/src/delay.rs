//! Delay pools (`delay_pools`, `delay_class` 1–3, `delay_parameters`, `delay_access`,
//! `delay_initial_bucket_level`): bandwidth limits on what origins send to clients, with
//! Squid's buckets. Each pool has an aggregate bucket; class 2 adds one per host (the last
//! octet of the client's address, as Squid keys it), class 3 one per network (the third
//! octet) and one per host (the last two octets). A bucket holds at most `max` bytes and
//! fills at `restore` bytes a second; `-1/-1` is no limit. A transaction takes bytes from
//! every bucket of its pool; reading from the origin waits while any is empty.
//!
//! The limit sits in the origin side's reader ([`Throttled`]), so bodies and CONNECT tunnels
//! are both paced without the copy loops knowing.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

use crate::acl::{AccessRules, Facts};

/// `restore/max` of one level; `None` is `-1/-1` (no limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bytes a second.
    pub restore: f64,
    /// Bytes.
    pub max: f64,
}

/// One configured pool.
#[derive(Debug, Clone)]
pub struct DelayPoolConfig {
    /// 1, 2 or 3.
    pub class: u8,
    /// Aggregate, then (class 3) network, then (class 2, 3) individual.
    pub levels: Vec<Option<Rate>>,
    /// `delay_access`: no lines, no request uses the pool (Squid's default).
    pub access: AccessRules,
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    rate: Rate,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: Rate, initial: f64) -> Bucket {
        Bucket {
            rate,
            level: rate.max * initial,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate.restore).min(self.rate.max);
        self.at = now;
    }
}

/// Every pool's buckets.
pub struct DelayPools {
    pools: Vec<(DelayPoolConfig, Mutex<PoolBuckets>)>,
    initial: f64,
}

#[derive(Default)]
struct PoolBuckets {
    aggregate: Option<Bucket>,
    network: HashMap<u8, Bucket>,
    individual: HashMap<u16, Bucket>,
}

/// Buckets per level at most (an address space's worth for class 3 hosts); the bound that
/// keeps a flood of client addresses from growing them without end.
const MAX_BUCKETS: usize = 65_536;

impl DelayPools {
    /// `initial_percent`: `delay_initial_bucket_level` (Squid's default 50).
    pub fn new(pools: Vec<DelayPoolConfig>, initial_percent: u8) -> DelayPools {
        DelayPools {
            pools: pools
                .into_iter()
                .map(|p| (p, Mutex::new(PoolBuckets::default())))
                .collect(),
            initial: f64::from(initial_percent.min(100)) / 100.0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The limit of the first pool whose `delay_access` allows the transaction.
    pub fn limit_for(self: &Arc<Self>, f: &Facts) -> Option<Limit> {
        let index = self
            .pools
            .iter()
            .position(|(p, _)| !p.access.is_empty() && p.access.allows(f))?;
        let (network, individual) = keys(f.client);
        Some(Limit {
            pools: Arc::clone(self),
            index,
            network,
            individual,
        })
    }
}

/// Squid's bucket keys: the third octet (network) and the last octet (class 2) or the last
/// two octets (class 3) of an IPv4 address; the corresponding bytes of an IPv6 one.
fn keys(client: IpAddr) -> (u8, [u8; 2]) {
    let octets: Vec<u8> = match client {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let n = octets.len();
    (octets[n - 2], [octets[n - 2], octets[n - 1]])
}

/// One transaction's share of a pool.
#[derive(Clone)]
pub struct Limit {
    pools: Arc<DelayPools>,
    index: usize,
    network: u8,
    individual: [u8; 2],
}

impl Limit {
    /// Bytes that may be read now (all buckets refilled), and if none, how long until a
    /// useful amount may.
    fn available(&self) -> Result<usize, Duration> {
        let (config, buckets) = &self.pools.pools[self.index];
        let mut b = buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let initial = self.pools.initial;
        let mut allowed = f64::INFINITY;
        let mut wait = Duration::ZERO;
        let mut visit = |bucket: &mut Bucket| {
            bucket.refill(now);
            allowed = allowed.min(bucket.level.floor());
            if bucket.level < 1.0 {
                // Wait for a read's worth (at most the bucket), not for one byte at a time.
                let want = bucket.rate.max.min(4096.0) - bucket.level;
                let secs = if bucket.rate.restore > 0.0 {
                    want / bucket.rate.restore
                } else {
                    1.0
                };
                wait = wait.max(Duration::from_secs_f64(secs.max(0.001)));
            }
        };
        let class = config.class;
        let levels = &config.levels;
        if let Some(rate) = levels[0] {
            let agg = b
                .aggregate
                .get_or_insert_with(|| Bucket::new(rate, initial));
            visit(agg);
        }
        if class == 3 {
            if let Some(rate) = levels[1] {
                if b.network.len() >= MAX_BUCKETS {
                    b.network.clear();
                }
                let net = b
                    .network
                    .entry(self.network)
                    .or_insert_with(|| Bucket::new(rate, initial));
                visit(net);
            }
        }
        if class >= 2 {
            let rate = *levels.last().expect("a level per class");
            if let Some(rate) = rate {
                let key = if class == 3 {
                    u16::from_be_bytes(self.individual)
                } else {
                    u16::from(self.individual[1])
                };
                if b.individual.len() >= MAX_BUCKETS {
                    b.individual.clear();
                }
                let host = b
                    .individual
                    .entry(key)
                    .or_insert_with(|| Bucket::new(rate, initial));
                visit(host);
            }
        }
        if allowed >= 1.0 {
            Ok(if allowed.is_finite() {
                allowed as usize
            } else {
                usize::MAX
            })
        } else {
            Err(wait)
        }
    }

    /// Takes `n` bytes from every bucket.
    fn consume(&self, n: usize) {
        let (config, buckets) = &self.pools.pools[self.index];
        let mut b = buckets.lock().unwrap_or_else(|p| p.into_inner());
        let n = n as f64;
        if let Some(agg) = &mut b.aggregate {
            agg.level -= n;
        }
        if config.class == 3 {
            if let Some(net) = b.network.get_mut(&self.network) {
                net.level -= n;
            }
        }
        let key = if config.class == 3 {
            u16::from_be_bytes(self.individual)
        } else {
            u16::from(self.individual[1])
        };
        if let Some(host) = b.individual.get_mut(&key) {
            host.level -= n;
        }
    }
}

/// A reader paced by a [`Limit`] (or not at all).
pub struct Throttled<R> {
    inner: R,
    limit: Option<Limit>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    scratch: Vec<u8>,
}

impl<R> Throttled<R> {
    pub fn new(inner: R, limit: Option<Limit>) -> Throttled<R> {
        Throttled {
            inner,
            limit,
            sleep: None,
            scratch: Vec::new(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Throttled<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let Some(limit) = &this.limit else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if let Some(sleep) = &mut this.sleep {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match limit.available() {
                Ok(allowed) => {
                    let want = allowed.min(buf.remaining()).min(64 * 1024);
                    this.scratch.resize(want, 0);
                    let mut sub = ReadBuf::new(&mut this.scratch);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
                    let n = sub.filled().len();
                    limit.consume(n);
                    buf.put_slice(&this.scratch[..n]);
                    return Poll::Ready(Ok(()));
                }
                Err(wait) => this.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(class: u8, levels: Vec<Option<Rate>>) -> Arc<DelayPools> {
        let allow_all = AccessRules {
            rules: vec![crate::acl::AccessRule {
                allow: true,
                acls: crate::acl::AclList::default(),
                location: crate::config::Location {
                    file: "t".into(),
                    line: 1,
                    column: 1,
                },
            }],
        };
        Arc::new(DelayPools::new(
            vec![DelayPoolConfig {
                class,
                levels,
                access: allow_all,
            }],
            50,
        ))
    }

    #[test]
    fn buckets_start_half_full_and_are_shared_per_key() {
        let rate = Some(Rate {
            restore: 1000.0,
            max: 10_000.0,
        });
        let p = pools(2, vec![None, rate]);
        let f = |ip: &str| Facts::connection(ip.parse().unwrap());
        let a = p.limit_for(&f("10.0.0.5")).unwrap();
        assert_eq!(a.available(), Ok(5000));
        a.consume(5000);
        assert!(a.available().is_err(), "empty");
        // Another host with the same last octet shares the bucket (Squid's class 2 key).
        let same = p.limit_for(&f("10.9.9.5")).unwrap();
        assert!(same.available().is_err());
        let other = p.limit_for(&f("10.0.0.6")).unwrap();
        assert_eq!(other.available(), Ok(5000));
    }

    #[test]
    fn no_access_lines_no_pool() {
        let p = Arc::new(DelayPools::new(
            vec![DelayPoolConfig {
                class: 1,
                levels: vec![None],
                access: AccessRules::default(),
            }],
            50,
        ));
        assert!(p
            .limit_for(&Facts::connection("10.0.0.1".parse().unwrap()))
            .is_none());
    }
}
