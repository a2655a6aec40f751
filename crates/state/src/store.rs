//! The [`StateStore`] trait: what every role needs from the shared state, whichever engine
//! keeps it.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::apply::Refusal;
use crate::change::{Change, Fence, Kind};
use crate::model::{Leadership, Revision, Snapshot, Term};
use crate::time::UnixMillis;

/// Changes after a revision, in order: every change of one batch carries that batch's
/// revision. It ends with an error if it cannot go on (its start was compacted away, the
/// store failed) and ends quietly when the store is closed.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<(Revision, Change), StoreError>> + Send>>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// One change broke a rule; nothing of its batch was applied.
    #[error("change {} of {count} ({change}) refused: {refusal}; nothing was applied", .index + 1)]
    Refused {
        /// From 0.
        index: usize,
        count: usize,
        /// `NAME KEY` of the refused change.
        change: String,
        refusal: Refusal,
    },
    /// A desired-state change without the leadership's fence; nothing was applied.
    #[error("change {} of {count} ({change}) is the controller's and needs its leadership's fence; nothing was applied", .index + 1)]
    NotLeader {
        index: usize,
        count: usize,
        change: String,
    },
    /// The fence is not the live leadership (another was elected since, or its lease lapsed):
    /// the writer must stop acting as the leader.
    #[error("write fenced by term {presented} refused: {}", match .current {
        Some(t) => format!("the current leadership is term {t}"),
        None => "no leadership is live".to_string(),
    })]
    Fenced {
        presented: Term,
        current: Option<Term>,
    },
    /// The log before `oldest` is gone: take a new snapshot and watch from after it.
    #[error("cannot watch from revision {from}: the log starts at revision {oldest}; take a new snapshot")]
    Compacted { from: Revision, oldest: Revision },
    /// The engine failed (disk, database, connection).
    #[error("state store {what}: {source}")]
    Backend {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The host's liveness lease lapsed (it was not renewed in time): the tier may already
    /// have judged the host lost. Hold a new one.
    #[error("the liveness lease of host {host} has lapsed")]
    LivenessLapsed { host: String },
    #[error("the state store is closed")]
    Closed,
}

/// A host's liveness: its agent holds it by renewing it within `ttl`; when it lapses the
/// store itself says the host is gone (etcd deletes the host's key with its lease), judged on
/// the store's clock, not on any host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub host: String,
    /// The store's id of the lease.
    pub lease: u64,
    pub ttl: Duration,
}

/// What every store checks of a batch before its rules: no change is the store's own
/// (campaign's, resign's), and desired state comes with a fence.
#[cfg_attr(not(feature = "stores"), allow(dead_code))] // the stores' own
pub(crate) fn check_batch(fence: Fence, changes: &[Change]) -> Result<(), StoreError> {
    let count = changes.len();
    for (index, c) in changes.iter().enumerate() {
        if c.is_reserved() {
            return Err(StoreError::Refused {
                index,
                count,
                change: c.to_string(),
                refusal: Refusal::Reserved,
            });
        }
        if c.needs_leadership() && fence == Fence::Unfenced {
            return Err(StoreError::NotLeader {
                index,
                count,
                change: c.to_string(),
            });
        }
    }
    Ok(())
}

impl StoreError {
    /// Whether the write was refused because the writer no longer leads (stop acting as leader,
    /// campaign again) rather than because of what it wrote.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

/// The shared state of the tier: a snapshot, an ordered log of typed changes, and a leader
/// election whose term fences the controller's writes.
///
/// Object safe (through `async_trait`): each role takes an `Arc<dyn StateStore>` chosen when
/// it starts — the embedded SQLite store for `proxyfleet up`, etcd when the stack names
/// endpoints — so the controller, the agents and the admin API are written once and compiled
/// once, not generic over an engine parameter that every type holding them would carry. A
/// boxed future per call costs nothing next to a commit or a network round trip.
///
/// Contract, for every implementation:
/// - `apply` is atomic: every change of the batch or none, one new revision for all of them.
///   An empty batch writes nothing and returns the current revision.
/// - Revisions strictly increase, across restarts too; `snapshot` at revision R plus the
///   changes of `watch(.., R.next())` gives the state at every later revision.
/// - Terms strictly increase over all campaigns ever granted, restarts included; a write
///   fenced by a term that is not the live leadership is refused with
///   [`StoreError::Fenced`], and a desired-state change with no fence with
///   [`StoreError::NotLeader`].
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Applies `changes` atomically under `fence`; returns their revision.
    async fn apply(&self, fence: Fence, changes: Vec<Change>) -> Result<Revision, StoreError>;

    /// The whole state and the revision it is at.
    async fn snapshot(&self) -> Result<(Snapshot, Revision), StoreError>;

    /// The changes of the given kinds from revision `from` on (inclusive): the logged ones
    /// first, then each new one as it is applied. A `from` beyond the head waits for it.
    async fn watch(&self, kinds: &[Kind], from: Revision) -> Result<WatchStream, StoreError>;

    /// Waits until `candidate` leads, under a new term and a lease of `ttl`. It waits while
    /// any leadership's lease is live, the candidate's own included: a restarted leader does
    /// not get its old term back.
    async fn campaign(&self, candidate: &str, ttl: Duration) -> Result<Leadership, StoreError>;

    /// Extends the leadership's lease by its ttl from now; returns when it now expires.
    /// [`StoreError::Fenced`] if it is no longer the live leadership.
    async fn renew(&self, leadership: &Leadership) -> Result<UnixMillis, StoreError>;

    /// Gives the leadership up at once, so another candidate need not wait for the lease.
    async fn resign(&self, leadership: &Leadership) -> Result<(), StoreError>;

    /// The live leadership, if its lease has not lapsed.
    async fn leader(&self) -> Result<Option<Leadership>, StoreError>;

    /// Says `host` is alive on a fresh lease of `ttl` (replacing any earlier one of the
    /// host, whose lapse then removes nothing).
    async fn hold_liveness(&self, host: &str, ttl: Duration) -> Result<Liveness, StoreError>;

    /// Extends the lease by its ttl from now; [`StoreError::LivenessLapsed`] if it lapsed.
    async fn renew_liveness(&self, liveness: &Liveness) -> Result<(), StoreError>;

    /// The hosts whose liveness lease holds now.
    async fn live_hosts(&self) -> Result<std::collections::BTreeSet<String>, StoreError>;

    /// Whether the store is between leaders now: a majority of its members answer and none
    /// of them leads. No lease can lapse then (only a leader expires leases, and a new
    /// etcd leader extends every lease by its whole ttl), so a host whose renewals fail
    /// meanwhile need not give up what its lease guards. A store that cannot tell (or
    /// has no election, as SQLite) says no.
    async fn electing(&self) -> bool {
        false
    }
}
