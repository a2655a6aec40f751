//! What a host cut off from the state store's majority serves: the node addresses nobody
//! else on the segment answers for.
//!
//! A host whose liveness renewals fail fences itself (`holding`): it drops its node
//! addresses before its lease can lapse and another host take them over. From inside, a host
//! cannot tell "the others are partitioned away" from "the others are dead", and the fence is
//! right for the first. For the second — two of three hosts lost, the third left without a
//! majority — fencing alone would leave nothing serving at all.
//!
//! So, once the lease has been gone long enough that any host that still reaches a majority
//! has taken this host's addresses over and announced them ([`witness_after`]), the host asks
//! the segment instead: an ARP probe for each node address (RFC 5227's address conflict
//! detection). An address some host answers for is someone's; one nobody answers for is
//! taken, served and announced like any other. While it serves so, the host listens to the
//! segment's ARP and probes the addresses it serves again: another host sending from one of
//! them (the majority's new holder announcing it) or answering for it makes it let that
//! address go at once. It stops as soon as its lease holds again, handing what it serves to the normal
//! holding loop (which hands each node back to its preferred holder, make before break), and
//! never serves while its interface has no carrier (no client could reach it then, and it
//! could not hear a holder).
//!
//! `--isolated fence` on the agent keeps the plain fence (serve nothing without a majority),
//! like Pacemaker's `no-quorum-policy=stop`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::addresses::Interface;
use crate::holding::{LeaseClock, READY_LIMIT};
use crate::nodes::NodeSet;
use crate::segment::ArpWitness;

/// How often addresses not served yet are probed again (a holder may have died since).
const REPROBE: Duration = Duration::from_secs(1);
/// How often the loop looks at the lease and the carrier.
const TICK: Duration = Duration::from_millis(100);
/// Other zones' nodes are probed this long after the host's own: when every host is cut off
/// at once (the etcd majority lost, the hosts themselves alive), each takes its own zone's
/// node first and then finds the others answered for.
const STAND_IN_AFTER: Duration = Duration::from_millis(500);
/// The longest random wait before a round of probes (RFC 5227's `PROBE_WAIT`, shortened):
/// hosts cut off at the same moment do not probe in step.
const PROBE_JITTER: Duration = Duration::from_millis(200);

/// What an agent does while it cannot reach the store's majority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenIsolated {
    /// Serve the node addresses nobody else on the segment answers for (the module's
    /// overview).
    #[default]
    Serve,
    /// Serve nothing.
    Fence,
}

/// How long after its lease stopped holding (half a lease after the last renewal went out) a
/// host asks the segment: the lease has lapsed in the store (another half), any host of a
/// majority has noticed (a holding tick), taken the address and waited for a healthy target
/// ([`READY_LIMIT`]) before announcing it; the rest is margin.
pub fn witness_after(ttl: Duration) -> Duration {
    ttl / 2 + READY_LIMIT + Duration::from_millis(500)
}

impl NodeSet {
    /// Serves the node addresses nobody else on the segment answers for (the module's
    /// overview) until this host's lease holds again or the agent stops; returns the nodes
    /// it serves then, for the holding loop to carry on with.
    pub(crate) async fn hold_isolated(
        &self,
        interface: &Interface,
        clock: &LeaseClock,
    ) -> Vec<(String, String)> {
        // Opened now, not kept: what the segment said before this host was cut off is old news.
        let witness = match ArpWitness::open(interface.name()) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cut off from the state store's majority, and cannot listen to the segment's ARP: serving nothing");
                return Vec::new();
            }
        };
        let nodes = self.node_ipv4s();
        // This host's own zone's nodes are its home — unless another host of the zone has a
        // lower id (the one the zone's node prefers): then it asks like a stand-in.
        let first_of_zone = self
            .stack
            .hosts
            .iter()
            .filter(|h| h.zone == self.zone)
            .map(|h| h.id.as_str())
            .min()
            .is_none_or(|first| first == self.host());
        let home: Vec<Ipv4Addr> = nodes
            .iter()
            .filter(|(key, _)| key.1 == self.zone && first_of_zone)
            .map(|(_, ip)| *ip)
            .collect();
        let mut held: BTreeMap<(String, String), Ipv4Addr> = BTreeMap::new();
        let since = Instant::now();
        let mut next_probe = since + jitter(PROBE_JITTER);
        let mut stand_ins_asked = false;
        tracing::warn!(host = %self.host(), "cut off from the state store's majority: serving the node addresses nobody else on the segment answers for (ARP probes)");
        loop {
            if clock.holds() || self.stop.is_cancelled() {
                break;
            }
            if !witness.carrier() {
                if !held.is_empty() {
                    tracing::warn!(host = %self.host(), "no carrier on the interface: dropping the node addresses served while cut off");
                }
                for key in std::mem::take(&mut held).into_keys() {
                    self.let_go(interface, &key).await;
                }
            } else if Instant::now() >= next_probe {
                let with_stand_ins = since.elapsed() >= STAND_IN_AFTER;
                stand_ins_asked |= with_stand_ins;
                let wanted: Vec<Ipv4Addr> = nodes
                    .iter()
                    .filter(|(key, _)| !held.contains_key(key))
                    .filter(|(key, _)| key.1 == self.zone || with_stand_ins)
                    .map(|(_, ip)| *ip)
                    .collect();
                let held_ips: Vec<Ipv4Addr> = held.values().copied().collect();
                tracing::debug!(?wanted, "probing node addresses");
                match witness.probe(&wanted, &home, &held_ips).await {
                    Ok((free, contested)) => {
                        tracing::debug!(?free, "nobody answers for these");
                        // Held here and answered for elsewhere too (a holder this host did not
                        // hear announce): let go, as on hearing a claim.
                        let lost: Vec<_> = held
                            .iter()
                            .filter(|(_, ip)| contested.contains(ip))
                            .map(|(key, _)| key.clone())
                            .collect();
                        for key in lost {
                            tracing::warn!(lb = %key.0, zone = %key.1, "another host answers for the node address served while cut off: letting it go");
                            held.remove(&key);
                            self.let_go(interface, &key).await;
                        }
                        // At once: each take waits for a healthy target of its own.
                        let takes = nodes.iter().filter(|(_, ip)| free.contains(ip)).map(
                            |(key, ip)| async move {
                                self.take(interface, key, None, None)
                                    .await
                                    .then_some((key, ip))
                            },
                        );
                        for (key, ip) in futures_util::future::join_all(takes)
                            .await
                            .into_iter()
                            .flatten()
                        {
                            tracing::warn!(lb = %key.0, zone = %key.1, address = %ip, "node address served while cut off from the store: no other host answers for it");
                            held.insert(key.clone(), *ip);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot probe the node addresses"),
                }
                // Soon again while other zones' nodes are still to be asked for.
                next_probe = if !stand_ins_asked {
                    since + STAND_IN_AFTER
                } else {
                    Instant::now() + REPROBE + jitter(PROBE_JITTER)
                };
            }
            tokio::select! {
                seen = witness.next() => {
                    let Ok(seen) = seen else { continue };
                    let lost: Vec<_> = held
                        .iter()
                        .filter(|(_, ip)| seen.claims(**ip, false))
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in lost {
                        tracing::warn!(lb = %key.0, zone = %key.1, "another host claims the node address served while cut off: letting it go");
                        let ip = held.remove(&key);
                        self.let_go(interface, &key).await;
                        // Not probed again before the claimant's announcements are over; a
                        // home address sooner than a stand-in's, so that two hosts that took
                        // one address at once do not give it up and take it again in step.
                        let back_off = if ip.is_some_and(|ip| home.contains(&ip)) {
                            REPROBE / 2
                        } else {
                            REPROBE * 2
                        };
                        next_probe = Instant::now() + back_off + jitter(PROBE_JITTER);
                    }
                }
                () = tokio::time::sleep(TICK) => {}
            }
        }
        held.into_keys().collect()
    }
}

/// A random duration below `most`: from the standard library's per-process random hash keys
/// and the clock (no dependency for a jitter that needs no quality).
fn jitter(most: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    most.mul_f64((h.finish() % 1_000_000) as f64 / 1_000_000.0)
}
