//! Delay pools (`delay_pools`, `delay_class` 1–5, `delay_parameters`, `delay_access`,
//! `delay_initial_bucket_level`): bandwidth limits on what origins send to clients, with
//! Squid's buckets. Each pool has an aggregate bucket; class 2 adds one per host (the last
//! octet of the client's address, as Squid keys it), class 3 one per network (the third
//! octet) and one per host (the last two octets), class 4 those of class 3 and one per
//! authenticated user; class 5 has one bucket per external ACL `tag=` only. A bucket holds
//! at most `max` bytes and fills at `restore` bytes a second; `-1/-1` is no limit. A
//! transaction takes bytes from every bucket of its pool; reading from the origin waits
//! while any is empty.
//!
//! `client_delay_pools` pace the other way, what clients send (uploads, and the client's
//! side of tunnels): one bucket per client address in each pool.
//!
//! The limit sits in the paced side's reader ([`Throttled`]), so bodies and CONNECT tunnels
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
    /// `client_delay_pools`: one bucket per client address in each.
    client: Vec<(ClientPoolConfig, Mutex<HashMap<IpAddr, Bucket>>)>,
    client_initial: f64,
}

/// One `client_delay_parameters` pool: what clients send (uploads) is paced.
#[derive(Debug, Clone)]
pub struct ClientPoolConfig {
    pub rate: Rate,
    /// `client_delay_access`: no lines, no client uses the pool (Squid's default).
    pub access: AccessRules,
}

#[derive(Default)]
struct PoolBuckets {
    aggregate: Option<Bucket>,
    network: HashMap<u8, Bucket>,
    individual: HashMap<u16, Bucket>,
    /// Class 4: per authenticated user.
    user: HashMap<String, Bucket>,
    /// Class 5: per external ACL `tag=` (untagged requests share the empty tag's).
    tag: HashMap<String, Bucket>,
}

/// Buckets per level at most (an address space's worth for class 3 hosts); the bound that
/// keeps a flood of client addresses (or user names, or tags) from growing them without end.
const MAX_BUCKETS: usize = 65_536;

/// The bucket of `key` in `map`, made (`initial` full) when new; the map is emptied when it
/// would pass [`MAX_BUCKETS`] (every key starts afresh, none grows without end).
fn bucket_in<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Bucket>,
    key: K,
    rate: Rate,
    initial: f64,
) -> &mut Bucket {
    if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
        map.clear();
    }
    map.entry(key).or_insert_with(|| Bucket::new(rate, initial))
}

impl DelayPools {
    /// `initial_percent`: `delay_initial_bucket_level` (Squid's default 50);
    /// `client_initial_percent`: `client_delay_initial_bucket_level` (also 50).
    pub fn new(
        pools: Vec<DelayPoolConfig>,
        initial_percent: u8,
        client: Vec<ClientPoolConfig>,
        client_initial_percent: u8,
    ) -> DelayPools {
        DelayPools {
            pools: pools
                .into_iter()
                .map(|p| (p, Mutex::new(PoolBuckets::default())))
                .collect(),
            initial: f64::from(initial_percent.min(100)) / 100.0,
            client: client
                .into_iter()
                .map(|p| (p, Mutex::new(HashMap::new())))
                .collect(),
            client_initial: f64::from(client_initial_percent.min(100)) / 100.0,
        }
    }

    /// No `delay_pools` (what origins send is not paced).
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// No `client_delay_pools` (what clients send is not paced).
    pub fn no_client_pools(&self) -> bool {
        self.client.is_empty()
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
            which: Which::Pool {
                index,
                network,
                individual,
                user: match f.login {
                    crate::acl::Login::User(user) => Some(user.to_string()),
                    _ => None,
                },
                tag: f.tag.unwrap_or_default().to_string(),
            },
        })
    }

    /// The limit on what the client sends: the first client pool whose
    /// `client_delay_access` allows it, one bucket per client address.
    pub fn client_limit_for(self: &Arc<Self>, f: &Facts) -> Option<Limit> {
        let index = self
            .client
            .iter()
            .position(|(p, _)| !p.access.is_empty() && p.access.allows(f))?;
        Some(Limit {
            pools: Arc::clone(self),
            which: Which::Client {
                index,
                client: f.client,
            },
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
    which: Which,
}

#[derive(Clone)]
enum Which {
    Pool {
        index: usize,
        network: u8,
        individual: [u8; 2],
        user: Option<String>,
        tag: String,
    },
    Client {
        index: usize,
        client: IpAddr,
    },
}

impl Limit {
    /// Calls `visit` on every bucket this transaction draws from (made when new).
    fn each_bucket(&self, visit: &mut dyn FnMut(&mut Bucket)) {
        let (index, network, individual, user, tag) = match &self.which {
            Which::Client { index, client } => {
                let (config, buckets) = &self.pools.client[*index];
                let mut b = buckets.lock().unwrap_or_else(|p| p.into_inner());
                visit(bucket_in(
                    &mut b,
                    *client,
                    config.rate,
                    self.pools.client_initial,
                ));
                return;
            }
            Which::Pool {
                index,
                network,
                individual,
                user,
                tag,
            } => (*index, *network, *individual, user, tag),
        };
        let (config, buckets) = &self.pools.pools[index];
        let mut b = buckets.lock().unwrap_or_else(|p| p.into_inner());
        let initial = self.pools.initial;
        let levels = &config.levels;
        let class = config.class;
        if class == 5 {
            // One level: per tag.
            if let Some(rate) = levels[0] {
                visit(bucket_in(&mut b.tag, tag.clone(), rate, initial));
            }
            return;
        }
        if let Some(rate) = levels[0] {
            visit(
                b.aggregate
                    .get_or_insert_with(|| Bucket::new(rate, initial)),
            );
        }
        if class >= 3 {
            if let Some(rate) = levels[1] {
                visit(bucket_in(&mut b.network, network, rate, initial));
            }
        }
        if class >= 2 {
            let host_level = if class == 2 { levels[1] } else { levels[2] };
            if let Some(rate) = host_level {
                let key = if class == 2 {
                    u16::from(individual[1])
                } else {
                    u16::from_be_bytes(individual)
                };
                visit(bucket_in(&mut b.individual, key, rate, initial));
            }
        }
        if class == 4 {
            // Squid: a request with no authenticated user is not limited at this level.
            if let (Some(rate), Some(user)) = (levels[3], user) {
                visit(bucket_in(&mut b.user, user.clone(), rate, initial));
            }
        }
    }

    /// Bytes that may be read now (all buckets refilled), and if none, how long until a
    /// useful amount may.
    fn available(&self) -> Result<usize, Duration> {
        let now = Instant::now();
        let mut allowed = f64::INFINITY;
        let mut wait = Duration::ZERO;
        self.each_bucket(&mut |bucket| {
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
        });
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
        let n = n as f64;
        self.each_bucket(&mut |bucket| bucket.level -= n);
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
            Vec::new(),
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
    fn class_4_adds_a_bucket_per_user_and_class_5_one_per_tag() {
        let rate = Some(Rate {
            restore: 1000.0,
            max: 10_000.0,
        });
        let p = pools(4, vec![None, None, None, rate]);
        let user = |ip: &str, name: &'static str| Facts {
            login: crate::acl::Login::User(name),
            ..Facts::connection(ip.parse().unwrap())
        };
        let alice = p.limit_for(&user("10.0.0.5", "alice")).unwrap();
        assert_eq!(alice.available(), Ok(5000));
        alice.consume(5000);
        // The same user from another host shares the bucket; another user does not.
        let alice_too = p.limit_for(&user("10.0.9.9", "alice")).unwrap();
        assert!(alice_too.available().is_err());
        let bob = p.limit_for(&user("10.0.0.5", "bob")).unwrap();
        assert_eq!(bob.available(), Ok(5000));
        // No user: no limit at the user level (Squid), and no other level limits here.
        let nobody = p
            .limit_for(&Facts::connection("10.0.0.5".parse().unwrap()))
            .unwrap();
        assert_eq!(nobody.available(), Ok(usize::MAX));

        let p = pools(5, vec![rate]);
        let tagged = |tag: Option<&'static str>| Facts {
            tag,
            ..Facts::connection("10.0.0.5".parse().unwrap())
        };
        let gold = p.limit_for(&tagged(Some("gold"))).unwrap();
        gold.consume(5000);
        assert!(gold.available().is_err());
        assert_eq!(
            p.limit_for(&tagged(Some("blue"))).unwrap().available(),
            Ok(5000)
        );
        // Untagged requests share the empty tag's bucket.
        let untagged = p.limit_for(&tagged(None)).unwrap();
        untagged.consume(5000);
        assert!(p.limit_for(&tagged(None)).unwrap().available().is_err());
    }

    #[test]
    fn client_pools_give_each_client_address_a_bucket() {
        let allow_all = pools(1, vec![None]).pools[0].0.access.clone();
        let p = Arc::new(DelayPools::new(
            Vec::new(),
            50,
            vec![ClientPoolConfig {
                rate: Rate {
                    restore: 100.0,
                    max: 1000.0,
                },
                access: allow_all,
            }],
            100,
        ));
        assert!(p.is_empty() && !p.no_client_pools());
        let f = |ip: &str| Facts::connection(ip.parse().unwrap());
        let a = p.client_limit_for(&f("10.0.0.5")).unwrap();
        assert_eq!(
            a.available(),
            Ok(1000),
            "client_delay_initial_bucket_level 100"
        );
        a.consume(1000);
        assert!(a.available().is_err());
        // The whole address is the key: the same last octet elsewhere is another client.
        let other = p.client_limit_for(&f("10.0.1.5")).unwrap();
        assert_eq!(other.available(), Ok(1000));
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
            Vec::new(),
            50,
        ));
        assert!(p
            .limit_for(&Facts::connection("10.0.0.1".parse().unwrap()))
            .is_none());
    }
}
