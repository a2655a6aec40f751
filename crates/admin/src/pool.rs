//! The open connections of one listener and what bounds them.
//!
//! Two different things are scarce, so they are bounded apart. A connection that is open but
//! idle costs a descriptor and a little memory; a request in flight costs a worker and may
//! block on the group controller's database. So a [`Pool`] caps open connections at
//! [`Limits::connections`] and requests in flight at [`Limits::requests`] (a permit per
//! request, not per connection): a client that keeps connections open without asking
//! anything holds no request slot. When the connections are at their cap, the one idle the
//! longest is closed to admit the next (a kept-alive HTTP connection may be closed whenever
//! it is idle; clients reconnect), so a crowd of idle connections cannot lock anyone out.
//!
//! A reaper wakes every [`REAP_INTERVAL`] and closes connections that went quiet (no byte
//! read or written): idle ones after [`IDLE_TIMEOUT`], ones with a request in flight (an
//! event stream, an answer the client does not read) after [`STALL_TIMEOUT`]. One task
//! scanning a few hundred entries a second is cheaper than a timer per connection, and the
//! same scan finds the longest idle one to evict.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A connection with no request in flight and nothing read or written for this long is
/// closed: the CLI sends its request at once, a browser reuses its connections within
/// seconds.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with a request in flight that moves no byte for this long is closed: an
/// event stream sends every second and a handler answers within
/// [`REQUEST_TIMEOUT`](crate::server::REQUEST_TIMEOUT), so only a client that stopped
/// reading gets here.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the reaper looks.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// What one listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at a time.
    pub connections: usize,
    /// Requests in flight at a time (event streams excepted: they have their own cap).
    pub requests: usize,
}

/// The open connections of one listener.
pub struct Pool {
    limits: Limits,
    epoch: Instant,
    /// A permit per open connection.
    room: Arc<Semaphore>,
    /// A permit per request in flight.
    requests: Arc<Semaphore>,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    open: HashMap<u64, Arc<Slot>>,
}

/// What the pool knows of one connection. Written by the connection's IO and service,
/// read by the reaper; atomics, so neither waits for the other.
pub struct Slot {
    epoch: Instant,
    /// Requests whose answer is not finished yet (0 or 1 in HTTP/1.1).
    in_flight: AtomicUsize,
    /// When a byte last moved (or a request ended), in microseconds since `epoch`.
    last_io: AtomicU64,
    /// Chosen for closing already: not chosen twice.
    closing: AtomicBool,
    /// Tells the connection's task to close it now.
    close: Notify,
}

impl Slot {
    fn new(epoch: Instant) -> Slot {
        let slot = Slot {
            epoch,
            in_flight: AtomicUsize::new(0),
            last_io: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        };
        slot.touch();
        slot
    }

    /// Something was read or written.
    pub fn touch(&self) {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.last_io.store(now, Ordering::Relaxed);
    }

    /// Resolves when the pool wants this connection closed.
    pub async fn closed(&self) {
        self.close.notified().await;
    }

    fn ask_to_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        // A stored permit if the task is not waiting yet: the request is never lost.
        self.close.notify_one();
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// How long since a byte last moved, as of `now` (microseconds since the epoch).
    fn quiet(&self, now: u64) -> Duration {
        Duration::from_micros(now.saturating_sub(self.last_io.load(Ordering::Relaxed)))
    }
}

/// Marks a request in flight on its connection for as long as it lives: the service holds
/// it until the answer's body is finished (dropped), so an event stream stays busy.
pub struct Busy(Arc<Slot>);

impl Busy {
    pub fn new(slot: Arc<Slot>) -> Busy {
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Idle from now, not from the last byte: the idle clock starts when the answer is done.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open connection's place in the pool; dropping it frees the place.
pub struct Admitted {
    pool: Arc<Pool>,
    id: u64,
    pub slot: Arc<Slot>,
    _room: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.pool.lock().open.remove(&self.id);
    }
}

impl Pool {
    pub fn new(limits: Limits) -> Arc<Pool> {
        Arc::new(Pool {
            limits,
            epoch: Instant::now(),
            room: Arc::new(Semaphore::new(limits.connections)),
            requests: Arc::new(Semaphore::new(limits.requests)),
            slots: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request permits, for the service.
    pub fn requests(&self) -> Arc<Semaphore> {
        self.requests.clone()
    }

    /// A place for one more connection: at once while there is room; at the cap, after the
    /// longest idle connection was closed to make room, or, when every connection has a
    /// request in flight, once one closes.
    pub async fn admit(self: &Arc<Self>) -> Admitted {
        let room = loop {
            if let Ok(room) = self.room.clone().try_acquire_owned() {
                break room;
            }
            self.evict_longest_idle();
            // Retried now and then: a busy connection may turn idle rather than close.
            tokio::select! {
                room = self.room.clone().acquire_owned() => break room.expect("never closed"),
                () = tokio::time::sleep(REAP_INTERVAL / 4) => {}
            }
        };
        let slot = Arc::new(Slot::new(self.epoch));
        let mut slots = self.lock();
        let id = slots.next;
        slots.next += 1;
        slots.open.insert(id, slot.clone());
        Admitted {
            pool: self.clone(),
            id,
            slot,
            _room: room,
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Asks the connection idle the longest to close, unless one is closing already (its
    /// place is about to be free).
    fn evict_longest_idle(&self) {
        let now = self.now();
        let slots = self.lock();
        if slots
            .open
            .values()
            .any(|s| s.closing.load(Ordering::Relaxed))
        {
            return;
        }
        let chosen = longest_idle(
            slots
                .open
                .iter()
                .map(|(id, s)| ((*id, s), s.busy(), s.quiet(now))),
        );
        if let Some((_, slot)) = chosen {
            tracing::debug!(idle = ?slot.quiet(now), "admin API: at the connection cap, closing the longest idle");
            slot.ask_to_close();
        }
    }

    /// Closes every connection that [`overdue`] says has been quiet too long; runs until
    /// aborted.
    pub async fn reap(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.now();
            for slot in self.lock().open.values() {
                if overdue(slot.busy(), slot.quiet(now)) && !slot.closing.load(Ordering::Relaxed) {
                    slot.ask_to_close();
                }
            }
        }
    }

    /// Asks every connection to close now (the end of a graceful stop that took too long).
    pub fn close_all(&self) {
        for slot in self.lock().open.values() {
            slot.ask_to_close();
        }
    }

    /// Resolves when no connection is open.
    pub async fn drained(&self) {
        let all = u32::try_from(self.limits.connections).expect("a small cap");
        let _ = self.room.acquire_many(all).await;
    }
}

/// Whether a connection quiet for `quiet` is closed: idle ones after [`IDLE_TIMEOUT`],
/// ones with a request in flight after [`STALL_TIMEOUT`].
pub fn overdue(busy: bool, quiet: Duration) -> bool {
    quiet >= if busy { STALL_TIMEOUT } else { IDLE_TIMEOUT }
}

/// Of `((id, connection), busy, quiet for)`, the idle connection quiet the longest; of
/// two as quiet, the one admitted first (the lower id).
fn longest_idle<T>(
    connections: impl Iterator<Item = ((u64, T), bool, Duration)>,
) -> Option<(u64, T)> {
    connections
        .filter(|(_, busy, _)| !busy)
        .max_by_key(|((id, _), _, quiet)| (*quiet, std::cmp::Reverse(*id)))
        .map(|(c, _, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn idle_connections_close_sooner_than_busy_ones() {
        assert!(!overdue(false, IDLE_TIMEOUT - S));
        assert!(overdue(false, IDLE_TIMEOUT));
        assert!(!overdue(true, IDLE_TIMEOUT));
        assert!(!overdue(true, STALL_TIMEOUT - S));
        assert!(overdue(true, STALL_TIMEOUT));
    }

    #[test]
    fn the_longest_idle_is_evicted_and_a_busy_one_never() {
        let conns = [
            ((1, "a"), false, 2 * S),
            ((2, "b"), true, 9 * S),
            ((3, "c"), false, 3 * S),
            ((4, "d"), false, 3 * S),
        ];
        assert_eq!(
            longest_idle(conns.into_iter()),
            Some((3, "c")),
            "c: as quiet as d, older"
        );
        let busy = [((2, "b"), true, 9 * S)];
        assert_eq!(longest_idle(busy.into_iter()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_idle_makes_room_and_busy_ones_are_kept() {
        let pool = Pool::new(Limits {
            connections: 3,
            requests: 1,
        });
        let oldest = pool.admit().await;
        tokio::time::advance(S).await;
        let busy = pool.admit().await;
        let request = Busy::new(busy.slot.clone());
        tokio::time::advance(S).await;
        let young = pool.admit().await;
        // The fourth: `oldest` is asked to close (the busy one is older than `young` but
        // in a request), and the place is free once it has.
        let fourth = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit().await }
        });
        tokio::time::timeout(S, oldest.slot.closed())
            .await
            .expect("the oldest idle is asked to close");
        assert!(!busy.slot.closing.load(Ordering::Relaxed));
        assert!(!young.slot.closing.load(Ordering::Relaxed));
        assert!(!fourth.is_finished());
        drop(oldest);
        let _fourth = fourth.await.unwrap();
        drop(request);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reaper_closes_quiet_connections() {
        let pool = Pool::new(Limits {
            connections: 4,
            requests: 1,
        });
        let _reaper = tokio::spawn(pool.clone().reap());
        let idle = pool.admit().await;
        let busy = pool.admit().await;
        let _request = Busy::new(busy.slot.clone());
        let started = Instant::now();
        idle.slot.closed().await;
        let waited = started.elapsed();
        assert!(
            waited >= IDLE_TIMEOUT && waited <= IDLE_TIMEOUT + REAP_INTERVAL,
            "{waited:?}"
        );
        busy.slot.closed().await;
        let waited = started.elapsed();
        assert!(
            waited >= STALL_TIMEOUT && waited <= STALL_TIMEOUT + REAP_INTERVAL,
            "{waited:?}"
        );
    }
}
