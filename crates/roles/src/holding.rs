//! Node addresses that move between hosts (a stack with `hosts:` and an `interface`).
//!
//! Each node (`LB/ZONE`) has one address. The host that should serve it is its zone's
//! live host with the lowest id, or — while the zone has none — the lowest-id live host of
//! the tier (the stand-in); a host that is letting a node go ([`NodeHold::Releasing`]) is
//! passed over. Every agent works this out from the same state and acts only for itself:
//!
//! - **take**: it should serve the node and no other live host reports holding it: bind the
//!   node before the address is here (`IP_FREEBIND`), wait until it has judged a target
//!   healthy, add the address, announce it (gratuitous ARP), report [`NodeHold::Holding`];
//! - **planned move** (the zone's host is back, or this agent stops): report
//!   [`NodeHold::Releasing`] and keep serving until the new holder is heard announcing the
//!   address on the segment (`segment::ClaimWatch`; its report through the store alone may
//!   be one made before it was cut off), then a moment longer (so clients whose ARP entry
//!   has not moved yet still get through), then let go — make before break, so no new
//!   connection finds nobody; meanwhile the new holder passes the old one's connections'
//!   segments back to it (`handover`);
//! - **fencing**: an agent whose liveness renewals have not gone through for half its lease
//!   drops every address at once, before its lease can lapse in the store and another host
//!   take them over. Then, by default (`--isolated serve`), it asks the segment instead of
//!   the store (`isolated`): it serves the node addresses no other host answers ARP probes
//!   for, and lets go of any another host turns out to hold. That trades the store's
//!   guarantee of one owner for the segment's: two hosts that cannot hear each other's ARP
//!   (a split segment with its carrier up) both serve, each to the clients on its side.
//!
//! A dead host cannot report anything: its stale `Holding` is ignored with it, since only
//! live hosts' reports count.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxyfleet_state::{Change, Fence, NodeHold, Snapshot};

use crate::isolated::{witness_after, WhenIsolated};
use crate::nodes::NodeSet;

/// How long a releasing host keeps serving after another reported holding the node: clients
/// whose ARP entry still points here get through meanwhile.
const HANDOVER_GRACE: Duration = Duration::from_millis(200);
/// A planned move no host takes up within this ends anyway (the node is dropped).
const RELEASE_LIMIT: Duration = Duration::from_secs(3);
/// The longest a holdings report may hold the loop up (see `report_holdings`).
const REPORT_WAIT: Duration = Duration::from_millis(300);
/// The longest a released node's flows in progress may take to finish before its address
/// goes: with [`HANDOVER_GRACE`], the most two hosts answer for one address in a planned
/// move (0.6 s).
const DRAIN_LIMIT: Duration = Duration::from_millis(400);
/// The longest a newly bound node waits for a healthy target before it is announced anyway
/// (no target of the group is healthy anywhere, say): a few health-check rounds.
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(1);
/// How often a host whose renewals are late asks whether the store is between leaders (each
/// answer is good for half a lease from when it was asked).
const ELECTION_PROBE: Duration = Duration::from_millis(50);
/// A renewal unanswered for this long is late: a healthy member answers within a few
/// milliseconds, and the keep-alive is raced to the next member after 100 ms.
const RENEWAL_LATE: Duration = Duration::from_millis(100);
/// How often holdings are reconsidered (and on every change of the view).
const TICK: Duration = Duration::from_millis(100);

/// Whether this host's liveness lease certainly still holds in the store: until half its
/// time after the *sending* of the last renewal that went through (the store counts the
/// lease from when it took the renewal, which is later) — or, while renewals fail because
/// the store is between leaders, until half its time after the last probe that found it so
/// (no lease lapses without a leader, and etcd's next leader extends every lease by its
/// whole ttl), for at most [`ELECTION_LIMIT`] after the last renewal.
#[derive(Debug)]
pub struct LeaseClock {
    last_sent: Mutex<Option<Instant>>,
    electing_sent: Mutex<Option<Instant>>,
    /// Since when the renewal now in flight has been waiting for its answer, or — after one
    /// that failed — since when renewals have been failing; `None` while they go through.
    late_since: Mutex<Option<Instant>>,
    ttl: Duration,
}

/// The longest a host keeps its addresses on "the store is electing" alone: an election
/// with any sane timers is over well within this.
pub const ELECTION_LIMIT: Duration = Duration::from_secs(5);

impl LeaseClock {
    pub fn new(ttl: Duration) -> LeaseClock {
        LeaseClock {
            last_sent: Mutex::new(None),
            electing_sent: Mutex::new(None),
            late_since: Mutex::new(None),
            ttl,
        }
    }

    /// A renewal (or a new lease) sent at `sent` went through.
    pub fn renewed(&self, sent: Instant) {
        let mut last = self.last_sent.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(last.map_or(sent, |l| l.max(sent)));
        *self.late_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A renewal is being sent now (its answer is awaited from now on).
    pub fn sending(&self, sent: Instant) {
        self.late_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(sent);
    }

    /// How long renewals have been late: the one in flight unanswered, or failing since.
    pub fn late_for(&self) -> Option<Duration> {
        self.late_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|since| since.elapsed())
    }

    /// The lease is gone (lapsed in the store).
    pub fn lapsed(&self) {
        *self.last_sent.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A probe sent at `sent` found the store between leaders.
    pub fn electing(&self, sent: Instant) {
        let mut last = self.electing_sent.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(last.map_or(sent, |l| l.max(sent)));
    }

    /// How long since the last renewal that went through was sent (`None`: no lease).
    pub fn since_renewal(&self) -> Option<Duration> {
        self.last_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|sent| sent.elapsed())
    }

    pub fn holds(&self) -> bool {
        let Some(renewed) = *self.last_sent.lock().unwrap_or_else(|p| p.into_inner()) else {
            return false;
        };
        let half = self.ttl / 2;
        if renewed.elapsed() < half {
            return true;
        }
        let electing = *self.electing_sent.lock().unwrap_or_else(|p| p.into_inner());
        renewed.elapsed() < ELECTION_LIMIT
            && electing.is_some_and(|e| e > renewed && e.elapsed() < half)
    }
}

/// While this host's renewals are late (one unanswered for [`RENEWAL_LATE`], or failing),
/// asks the store every [`ELECTION_PROBE`] whether it is between leaders, and tells `clock`
/// when it is: a host whose renewals fail because the etcd leader died keeps serving through
/// the election, while a host cut off from the majority (which cannot tell) fences itself as
/// before. While renewals go through, nothing is asked.
pub async fn follow_elections(
    store: Arc<dyn proxyfleet_state::StateStore>,
    clock: Arc<LeaseClock>,
    ttl: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(ELECTION_PROBE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if clock.since_renewal().is_none() || clock.late_for().is_none_or(|d| d < RENEWAL_LATE) {
            continue;
        }
        let sent = Instant::now();
        if store.electing().await {
            if clock.since_renewal().is_some_and(|d| d >= ttl / 2) {
                tracing::info!(
                    "state store between leaders: node addresses kept through the election"
                );
            }
            clock.electing(sent);
        }
    }
}

/// The host that should serve node `node` of `zone`, of the `live` hosts. `me`: a host
/// judged eligible whatever its report says (an agent judging for itself: whether it is
/// letting the node go is its own decision, not its last report's).
pub fn preferred_holder(
    snapshot: &Snapshot,
    live: &std::collections::BTreeSet<String>,
    node: &str,
    zone: &str,
    me: Option<&str>,
) -> Option<String> {
    let eligible = || {
        snapshot
            .hosts
            .values()
            .filter(|h| live.contains(&h.id))
            .filter(|h| {
                Some(h.id.as_str()) == me || h.nodes.get(node) != Some(&NodeHold::Releasing)
            })
    };
    eligible()
        .find(|h| h.zone == zone)
        .or_else(|| eligible().next())
        .map(|h| h.id.clone())
}

/// The address of the live host other than `me` that reports releasing node `node`, if any.
fn releasing_by(
    snapshot: &Snapshot,
    live: &std::collections::BTreeSet<String>,
    node: &str,
    me: &str,
) -> Option<Ipv4Addr> {
    snapshot
        .hosts
        .values()
        .filter(|h| h.id != me && live.contains(&h.id))
        .find(|h| h.nodes.get(node) == Some(&NodeHold::Releasing))
        .and_then(|h| crate::addresses::v4(h.address))
}

/// Where one node stands on this host.
#[derive(Debug, Clone, Copy)]
enum Held {
    Holding,
    /// Since when it has been releasing, and since when another host has held it.
    Releasing {
        since: Instant,
        taken: Option<Instant>,
    },
}

impl NodeSet {
    /// Takes, moves and drops this host's node addresses until the agent stops (see the
    /// module's overview); then releases them, make before break, within [`RELEASE_LIMIT`].
    pub async fn hold(self: Arc<Self>, clock: Arc<LeaseClock>, when_isolated: WhenIsolated) {
        let interface = self
            .interface
            .clone()
            .expect("hold is run for hosts with an interface");
        let mut view = self.view.clone();
        // A hand-over ends when the new holder's gratuitous ARP is heard on the segment.
        let listening = tokio_util::sync::CancellationToken::new();
        let _listening = listening.clone().drop_guard();
        let node_ips: Vec<Ipv4Addr> = self.node_ipv4s().into_iter().map(|(_, ip)| ip).collect();
        let claims = crate::segment::ClaimWatch::start(&interface, node_ips, listening)
            .map_err(|e| tracing::warn!(error = %e, "cannot listen to the segment's ARP: hand-overs end on the new holder's report alone"))
            .ok();
        let mut held: BTreeMap<(String, String), Held> = BTreeMap::new();
        let mut tick = tokio::time::interval(TICK);
        let mut stopping_since: Option<Instant> = None;
        // Since when the lease has not held, and whether the segment was asked since.
        let mut unheld_since: Option<Instant> = None;
        let mut isolated_tried = false;
        let mut last_announced: BTreeMap<(String, String), Instant> = BTreeMap::new();
        loop {
            let stopping = stopping_since.is_some();
            tokio::select! {
                r = view.changed(), if !stopping => if r.is_err() { break },
                _ = tick.tick() => {}
                () = self.stop.cancelled(), if !stopping => {}
            }
            if self.stop.is_cancelled() && stopping_since.is_none() {
                stopping_since = Some(Instant::now());
            }
            if !clock.holds() {
                if !held.is_empty() {
                    tracing::warn!(host = %self.host, "liveness lease not renewed for half its time: dropping every node address (fencing)");
                    for key in std::mem::take(&mut held).into_keys() {
                        self.let_go(&interface, &key).await;
                    }
                }
                if stopping_since.is_some() {
                    break;
                }
                let since = *unheld_since.get_or_insert_with(Instant::now);
                if when_isolated == WhenIsolated::Serve
                    && !isolated_tried
                    && since.elapsed() >= witness_after(clock.ttl)
                {
                    isolated_tried = true;
                    for key in self.hold_isolated(&interface, &clock).await {
                        // Announced again: a host that let go of it meanwhile and now
                        // releases it to this one waits to hear that.
                        self.announce(&interface, &key);
                        held.insert(key, Held::Holding);
                    }
                }
                continue;
            }
            unheld_since = None;
            isolated_tried = false;
            if let Some(since) = stopping_since {
                if held.is_empty() || since.elapsed() > RELEASE_LIMIT {
                    break;
                }
            }
            // A hand-over whose new holder has announced the address ends here, whatever
            // the store says meanwhile: an election must not keep it on two hosts.
            let listening = claims.as_ref().is_some_and(|c| c.listening());
            if let Some(claims) = claims.as_ref().filter(|_| listening) {
                self.end_announced_handovers(&mut held, claims, &interface, &clock)
                    .await;
            }
            let v = view.borrow_and_update().clone();
            if !v.connected {
                continue;
            }
            // Short: a fenced host must reach the check above again soon.
            let live = match tokio::time::timeout(TICK * 2, self.store.live_hosts()).await {
                Ok(Ok(live)) => live,
                _ => continue,
            };
            if !clock.holds() {
                continue;
            }
            for key in self.all_nodes() {
                let name = format!("{}/{}", key.0, key.1);
                let held_by_other = v.snapshot.hosts.values().any(|h| {
                    h.id != self.host
                        && live.contains(&h.id)
                        && h.nodes.get(&name) == Some(&NodeHold::Holding)
                });
                // Judged with this host eligible unless it is stopping.
                let me = stopping_since.is_none().then_some(self.host.as_str());
                let mine = me.is_some()
                    && preferred_holder(&v.snapshot, &live, &name, &key.1, me).as_deref() == me;
                let releasing = releasing_by(&v.snapshot, &live, &name, &self.host);
                match held.get(&key).copied() {
                    None if mine
                        && !held_by_other
                        && self.take(&interface, &key, releasing, Some(&clock)).await =>
                    {
                        last_announced.insert(key.clone(), Instant::now());
                        held.insert(key, Held::Holding);
                    }
                    None => {}
                    Some(Held::Holding) if !mine => {
                        tracing::info!(node = %name, host = %self.host, "releasing the node address to its host (make before break)");
                        held.insert(
                            key,
                            Held::Releasing {
                                since: Instant::now(),
                                taken: None,
                            },
                        );
                    }
                    // Another host releases it to this one (it came back from being cut
                    // off, say) and waits to hear this one announce it: once a second.
                    Some(Held::Holding)
                        if releasing.is_some()
                            && last_announced.get(&key).is_none_or(|at: &Instant| {
                                at.elapsed() >= Duration::from_secs(1)
                            }) =>
                    {
                        self.announce(&interface, &key);
                        last_announced.insert(key.clone(), Instant::now());
                    }
                    Some(Held::Holding) => {}
                    Some(Held::Releasing { since, taken }) => {
                        // Taken up: while the segment is heard, the new holder's announcement
                        // (`end_announced_handovers`, above) — a report alone may be one a
                        // returning host made before it was cut off. Without a listener, the
                        // report is all there is.
                        let reported = !listening && held_by_other;
                        let taken = taken.or(reported.then(Instant::now));
                        let handed_over = taken.is_some_and(|t| t.elapsed() >= HANDOVER_GRACE);
                        if handed_over || since.elapsed() > RELEASE_LIMIT {
                            held.remove(&key);
                            self.let_go_drained(&interface, &key, &clock).await;
                        } else if mine && taken.is_none() {
                            held.insert(key, Held::Holding);
                        } else {
                            held.insert(key, Held::Releasing { since, taken });
                        }
                    }
                }
            }
            self.report_holdings(&v.snapshot, &held).await;
        }
        for key in std::mem::take(&mut held).into_keys() {
            self.let_go_drained(&interface, &key, &clock).await;
        }
        let snapshot = self.view.borrow().snapshot.clone();
        self.report_holdings(&snapshot, &held).await;
    }

    /// Lets go of the nodes being released whose new holder was heard announcing the
    /// address [`HANDOVER_GRACE`] ago or more.
    async fn end_announced_handovers(
        &self,
        held: &mut BTreeMap<(String, String), Held>,
        claims: &crate::segment::ClaimWatch,
        interface: &crate::addresses::Interface,
        clock: &LeaseClock,
    ) {
        for (key, h) in held.clone() {
            let Held::Releasing { since, taken } = h else {
                continue;
            };
            let Some(ip) = self.node_address(&key).and_then(crate::addresses::v4) else {
                continue;
            };
            let taken = taken.or(claims.claimed_since(ip, since).then(Instant::now));
            if taken.is_some_and(|t| t.elapsed() >= HANDOVER_GRACE) {
                held.remove(&key);
                self.let_go_drained(interface, &key, clock).await;
            } else {
                held.insert(key, Held::Releasing { since, taken });
            }
        }
    }

    /// Binds the node (before its address is here), waits until it is ready, adds the
    /// address and announces it.
    /// `old_holder`: the address of the host handing the node over (a planned move), which
    /// the segments of its connections are passed back to meanwhile ([`crate::handover`]).
    pub(crate) async fn take(
        &self,
        interface: &crate::addresses::Interface,
        key: &(String, String),
        old_holder: Option<Ipv4Addr>,
        lease: Option<&LeaseClock>,
    ) -> bool {
        let Some(address) = self.node_address(key) else {
            return false;
        };
        if let Err(e) = self.start_node(&key.0, &key.1).await {
            tracing::warn!(error = %e, %address, "cannot bind the node on its address");
            return false;
        }
        // Added (announced, reported held) once it has a healthy target: until then a
        // planned move's old holder serves on alone, and a taken-over node would only fail
        // open. Its health checks leave from the host's own address, not this one.
        let bound = Instant::now();
        while !self.node_ready(key) && bound.elapsed() < READY_LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Taken under the lease: not if it has stopped holding during the wait (this host
        // must fence, and another may be taking the node over).
        if lease.is_some_and(|l| !l.holds()) {
            self.stop_node(key).await;
            return false;
        }
        if let (Some(old), IpAddr::V4(node)) = (old_holder, address) {
            let ports: Vec<u16> = self
                .stack
                .load_balancer(&key.0)
                .map(|lb| lb.listeners.iter().map(|l| l.port).collect())
                .unwrap_or_default();
            if let Err(e) =
                crate::handover::pass_to_old_holder(interface.name(), node, &ports, old).await
            {
                tracing::warn!(error = %e, %address, "cannot pass the old holder's segments back to it: its connections in progress may be reset at the hand-over");
            }
        }
        if let Err(e) = interface.add(address).await {
            tracing::warn!(error = %e, %address, "cannot add the node address");
            self.stop_node(key).await;
            return false;
        }
        self.announce(interface, key);
        tracing::info!(lb = %key.0, zone = %key.1, %address, host = %self.host, "node address taken");
        true
    }

    /// Sends the node address's gratuitous ARP (and its repeats).
    fn announce(&self, interface: &crate::addresses::Interface, key: &(String, String)) {
        if let Some(v4) = self.node_address(key).and_then(crate::addresses::v4) {
            if let Err(e) = interface.announce(v4) {
                tracing::warn!(error = %e, address = %v4, "gratuitous ARP not sent");
            }
        }
    }

    /// A planned let-go: the node's flows in progress finish first (for at most
    /// [`DRAIN_LIMIT`], and only while the lease holds), since removing the address would
    /// drop their packets silently; then [`NodeSet::let_go`]. The new holder's gratuitous
    /// ARP has moved new connections already.
    async fn let_go_drained(
        &self,
        interface: &crate::addresses::Interface,
        key: &(String, String),
        clock: &LeaseClock,
    ) {
        let since = Instant::now();
        while self.node_active(key) > 0 && since.elapsed() < DRAIN_LIMIT && clock.holds() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.let_go(interface, key).await;
    }

    /// Removes the node's address (at once: nothing more reaches it here), then stops it.
    pub(crate) async fn let_go(
        &self,
        interface: &crate::addresses::Interface,
        key: &(String, String),
    ) {
        if let Some(address) = self.node_address(key) {
            if let Err(e) = interface.remove(address).await {
                tracing::warn!(error = %e, %address, "cannot remove the node address");
            }
            tracing::info!(lb = %key.0, zone = %key.1, %address, host = %self.host, "node address given up");
        }
        self.stop_node(key).await;
    }

    /// Every node of the stack with its IPv4 address (the ones that can move).
    pub(crate) fn node_ipv4s(&self) -> Vec<((String, String), Ipv4Addr)> {
        self.all_nodes()
            .into_iter()
            .filter_map(|key| {
                let ip = crate::addresses::v4(self.node_address(&key)?)?;
                Some((key, ip))
            })
            .collect()
    }

    pub(crate) fn node_address(&self, key: &(String, String)) -> Option<IpAddr> {
        self.stack
            .load_balancer(&key.0)?
            .nodes
            .iter()
            .find(|n| n.zone == key.1)
            .map(|n| n.address)
    }

    /// Writes what this host holds when the state says otherwise.
    async fn report_holdings(&self, snapshot: &Snapshot, held: &BTreeMap<(String, String), Held>) {
        let nodes: BTreeMap<String, NodeHold> = held
            .iter()
            .map(|((lb, zone), h)| {
                let hold = match h {
                    Held::Holding => NodeHold::Holding,
                    Held::Releasing { .. } => NodeHold::Releasing,
                };
                (format!("{lb}/{zone}"), hold)
            })
            .collect();
        let Some(known) = snapshot.hosts.get(&self.host) else {
            return;
        };
        if known.nodes == nodes {
            return;
        }
        let change = Change::ReportNodes {
            host: self.host.clone(),
            nodes,
        };
        // Bounded: the loop that reports also fences, and a write held up by an outage (a
        // call rounds over the members for seconds) must not keep it from dropping its
        // addresses in time. An unfinished report is made again on the next tick.
        match tokio::time::timeout(REPORT_WAIT, self.store.apply(Fence::Unfenced, vec![change]))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "state store: node holdings not reported yet"),
            Err(_) => tracing::warn!(
                "state store: node holdings not reported within {REPORT_WAIT:?}; again next tick"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(ms: u64) -> Instant {
        Instant::now() - Duration::from_millis(ms)
    }

    #[test]
    fn the_lease_clock_holds_half_a_lease_or_through_an_election_seen_since() {
        let clock = LeaseClock::new(Duration::from_secs(1));
        assert!(!clock.holds(), "no lease yet");
        clock.renewed(ago(100));
        assert!(clock.holds());
        let clock = LeaseClock::new(Duration::from_secs(1));
        clock.renewed(ago(600));
        assert!(!clock.holds(), "half a lease without a renewal: fenced");
        clock.electing(ago(700));
        assert!(
            !clock.holds(),
            "an election seen before the last renewal says nothing"
        );
        clock.electing(ago(100));
        assert!(
            clock.holds(),
            "between leaders, seen since: no lease can lapse"
        );
        let clock = LeaseClock::new(Duration::from_secs(1));
        clock.renewed(ago(ELECTION_LIMIT.as_millis() as u64 + 100));
        clock.electing(ago(10));
        assert!(
            !clock.holds(),
            "an election that never ends does not hold forever"
        );
        clock.lapsed();
        assert!(!clock.holds());
    }

    #[test]
    fn renewals_are_late_from_the_first_unanswered_send_until_one_goes_through() {
        let clock = LeaseClock::new(Duration::from_secs(1));
        assert_eq!(clock.late_for(), None, "nothing sent");
        clock.sending(ago(150));
        clock.sending(ago(10));
        assert!(
            clock.late_for().unwrap() >= Duration::from_millis(150),
            "late since the first send still unanswered"
        );
        clock.renewed(ago(10));
        assert_eq!(clock.late_for(), None, "a renewal went through");
    }
}
