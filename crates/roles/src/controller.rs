//! The controller role: elected among the agents, the only writer of desired state.
//!
//! Each agent that may lead campaigns; the one elected renews its lease every third of its
//! time to live and, while it leads, writes [`decide`](crate::decide::decide)'s batches under
//! its leadership's fence. When a renewal or a write is fenced (another was elected since, or
//! the lease lapsed while this process was stopped), it stops acting at once and campaigns
//! again. A store that does not answer makes it write nothing: no decision is taken on a copy
//! it cannot confirm, and the lease lapses on its own if the outage outlasts it.

use std::sync::Arc;
use std::time::Duration;

use proxyfleet_state::{Leadership, Revision, StateStore, StoreError, UnixMillis};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::decide::{decide, Timings};
use crate::view::View;

/// How often the leader looks at the state when nothing changed.
const TICK: Duration = Duration::from_millis(250);

/// How long a pass waits for the store's list of live hosts before it gives up (and decides
/// nothing this time).
const LIVE_HOSTS_WAIT: Duration = Duration::from_secs(2);

pub struct Controller {
    pub candidate: String,
    /// Read on every pass: `apply` may change it.
    pub stack: crate::LiveStack,
    pub store: Arc<dyn StateStore>,
    pub lease: Duration,
    pub timings: Timings,
    /// Since when this agent's own liveness renewals have gone through without a break
    /// ([`WritingSince`]): nothing is launched in the first host timeout of it.
    pub writing_since: Arc<WritingSince>,
    /// Set when the tier is to stop (`up` stopping): the leader winds it down
    /// ([`wind_down`](crate::decide::wind_down)) instead of keeping it up.
    pub stopping: std::sync::atomic::AtomicBool,
}

/// Since when the store has taken this agent's liveness renewals without a break (`None`: it
/// does not now). The controller decides nothing while it is `None`, and launches nothing in
/// the first host timeout after it, so that every host has had the time to announce itself.
#[derive(Debug)]
pub struct WritingSince {
    since: std::sync::atomic::AtomicU64,
    /// The last write that went through.
    last: std::sync::atomic::AtomicU64,
    /// A break longer than this (the host timeout) ends the run of writes, even if no write
    /// failed: a process that did not run (stopped, paused, its runtime stalled) has had its
    /// lease lapse without ever seeing a write fail.
    gap: Duration,
}

impl WritingSince {
    const NOT_WRITING: u64 = u64::MAX;

    pub fn new(gap: Duration) -> WritingSince {
        WritingSince {
            since: std::sync::atomic::AtomicU64::new(Self::NOT_WRITING),
            last: std::sync::atomic::AtomicU64::new(Self::NOT_WRITING),
            gap,
        }
    }

    fn gap_ms(&self) -> u64 {
        u64::try_from(self.gap.as_millis()).unwrap_or(u64::MAX)
    }

    /// A write went through at `at`.
    pub fn wrote(&self, at: UnixMillis) {
        use std::sync::atomic::Ordering::SeqCst;
        let last = self.last.swap(at.0, SeqCst);
        if last == Self::NOT_WRITING || at.0.saturating_sub(last) > self.gap_ms() {
            self.since.store(at.0, SeqCst);
        }
    }

    /// A write failed.
    pub fn failed(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.since.store(Self::NOT_WRITING, SeqCst);
        self.last.store(Self::NOT_WRITING, SeqCst);
    }

    /// Since when writes have gone through without a break, as of now; `None` after a
    /// failed write, or when the last one is older than the gap.
    pub fn get(&self) -> Option<UnixMillis> {
        use std::sync::atomic::Ordering::SeqCst;
        let last = self.last.load(SeqCst);
        if last == Self::NOT_WRITING || UnixMillis::now().0.saturating_sub(last) > self.gap_ms() {
            return None;
        }
        match self.since.load(SeqCst) {
            Self::NOT_WRITING => None,
            at => Some(UnixMillis(at)),
        }
    }
}

/// Campaigns, leads, and campaigns again, until `stop`.
pub async fn run(c: Arc<Controller>, view: watch::Receiver<View>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let leadership = tokio::select! {
            r = c.store.campaign(&c.candidate, c.lease) => r,
            () = stop.cancelled() => return,
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "controller: campaign failed; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        tracing::info!(candidate = %c.candidate, term = %leadership.term, "controller: elected");
        let term_over = stop.child_token();
        let renewing = tokio::spawn(renew(c.clone(), leadership.clone(), term_over.clone()));
        lead(&c, &leadership, view.clone(), &term_over).await;
        term_over.cancel();
        let _ = renewing.await;
        if stop.is_cancelled() {
            let _ = c.store.resign(&leadership).await;
            return;
        }
        tracing::warn!(term = %leadership.term, "controller: no longer the leader");
    }
}

/// Renews the lease until fenced (or stopped); a renewal failing for another reason is tried
/// again while the lease may still be alive.
async fn renew(c: Arc<Controller>, leadership: Leadership, over: CancellationToken) {
    let every = c.lease / 3;
    let mut expires = UnixMillis::now().after(c.lease);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = over.cancelled() => return,
        }
        // Bounded by the lease itself: a store that does not answer (no quorum) must not keep
        // this controller acting past the moment its lease may have lapsed.
        let renewed = tokio::time::timeout(every, c.store.renew(&leadership))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Backend {
                    what: "renew".to_string(),
                    source: format!("no answer within {every:?}").into(),
                })
            });
        match renewed {
            Ok(until) => expires = until,
            Err(e) if e.is_fenced() => {
                tracing::warn!(error = %e, "controller: lease lost");
                over.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "controller: cannot renew the lease");
                if UnixMillis::now() >= expires {
                    // The lease has lapsed by now, wherever the store is: stop acting.
                    over.cancel();
                    return;
                }
            }
        }
    }
}

/// Writes decisions while the term lasts.
async fn lead(
    c: &Controller,
    leadership: &Leadership,
    mut view: watch::Receiver<View>,
    over: &CancellationToken,
) {
    let fence = leadership.fence();
    let mut written = Revision::default();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            () = over.cancelled() => return,
        }
        let v = view.borrow_and_update().clone();
        // Decide only on a copy that holds this controller's own last write: on an older
        // one it would decide the same things again.
        if !v.connected || v.revision < written {
            continue;
        }
        // No decision while the store does not take this agent's writes.
        let Some(watching_since) = c.writing_since.get() else {
            continue;
        };
        // The store's verdict on every host, asked now (etcd: the live `alive/` keys).
        let Ok(Ok(mut live)) = tokio::time::timeout(LIVE_HOSTS_WAIT, c.store.live_hosts()).await
        else {
            continue;
        };
        // This host runs the controller: it is not lost, whatever its lease says (its own
        // renewal may just not have run yet after a pause).
        live.insert(c.candidate.clone());
        if c.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let changes = crate::decide::wind_down(
                &c.stack.get(),
                &v.snapshot,
                UnixMillis::now(),
                &c.timings,
            );
            if !changes.is_empty() {
                match c.store.apply(fence, changes).await {
                    Ok(revision) => written = revision,
                    Err(e) if e.is_fenced() => {
                        over.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "controller: winding down: write failed"),
                }
            }
            continue;
        }
        let stack = c.stack.get();
        let mut changes = decide(
            &stack,
            &v.snapshot,
            &live,
            UnixMillis::now(),
            &c.timings,
            watching_since,
            &mut new_id,
        );
        // Writing a host off is the one decision a copy that lags behind (a watch slow to
        // catch up after an outage) could get badly wrong: made again on a fresh snapshot.
        if changes.iter().any(writes_a_host_off) {
            let Ok((fresh, _)) = c.store.snapshot().await else {
                continue;
            };
            let Ok(mut live) = c.store.live_hosts().await else {
                continue;
            };
            live.insert(c.candidate.clone());
            changes = decide(
                &stack,
                &fresh,
                &live,
                UnixMillis::now(),
                &c.timings,
                watching_since,
                &mut new_id,
            );
        }
        // A refused change is dropped and the rest tried again: one decision that the state
        // has overtaken must not hold back every other.
        while !changes.is_empty() {
            match c.store.apply(fence, changes.clone()).await {
                Ok(revision) => {
                    written = revision;
                    break;
                }
                Err(StoreError::Refused { index, refusal, .. }) => {
                    tracing::debug!(change = %changes[index], %refusal, "controller: decision overtaken");
                    changes.remove(index);
                }
                Err(e) if e.is_fenced() => {
                    tracing::warn!(error = %e, "controller: write fenced");
                    over.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "controller: write failed");
                    break;
                }
            }
        }
    }
}

fn writes_a_host_off(change: &proxyfleet_state::Change) -> bool {
    matches!(
        change,
        proxyfleet_state::Change::ReportLifecycle {
            cause: Some(proxyfleet_state::Cause::HostLost { .. }),
            ..
        }
    )
}

/// `i-` and 12 hex digits from the clock, this process and a counter: unique across
/// controllers, which may follow each other within a millisecond.
fn new_id() -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::DefaultHasher::new();
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    format!("i-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_break_in_the_writes_starts_a_new_run_even_if_none_failed() {
        let w = WritingSince::new(Duration::from_secs(1));
        assert_eq!(w.get(), None);
        let now = UnixMillis::now();
        w.wrote(UnixMillis(now.0 - 900));
        w.wrote(UnixMillis(now.0 - 600));
        assert_eq!(w.get(), Some(UnixMillis(now.0 - 900)));
        // The process did not run for 1.5 s (stopped, paused): a new run.
        w.wrote(UnixMillis(now.0 + 900));
        assert_eq!(w.get(), Some(UnixMillis(now.0 + 900)));
        w.failed();
        assert_eq!(w.get(), None);
        // A last write older than the gap: not writing now.
        w.wrote(UnixMillis(now.0 - 1500));
        assert_eq!(w.get(), None);
    }
}
