//! A role's own copy of the shared state, kept current from the store: one snapshot, then
//! the changes after it, applied with the same rules the store uses.
//!
//! The copy outlives the store's outages: when a watch ends with an error (a member died, the
//! store lost quorum, the log was compacted past our revision), the last copy stays published
//! and the follower takes a new snapshot and watches again, pausing between tries. Readers
//! never wait for the store: the data plane decides on the last state it saw.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use proxyfleet_state::{Kind, Revision, Snapshot, StateStore, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The latest copy, and whether it is current (`false` while the store is unreachable).
#[derive(Debug, Clone, Default)]
pub struct View {
    pub snapshot: Arc<Snapshot>,
    pub revision: Revision,
    pub connected: bool,
}

/// Follows the store until `stop`; the receiver always holds the latest [`View`].
pub fn follow(store: Arc<dyn StateStore>, stop: CancellationToken) -> watch::Receiver<View> {
    let (tx, rx) = watch::channel(View::default());
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(50);
        while !stop.is_cancelled() {
            let ended = tokio::select! {
                r = follow_once(&*store, &tx) => r,
                () = stop.cancelled() => return,
            };
            tx.send_modify(|v| v.connected = false);
            tracing::warn!(error = %ended, retry_in = ?pause, "state store: lost the watch; serving the last state seen");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    });
    rx
}

/// One snapshot and the watch after it; returns why it ended.
async fn follow_once(store: &dyn StateStore, tx: &watch::Sender<View>) -> String {
    let (mut snapshot, revision) = match store.snapshot().await {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    let mut stream = match store.watch(Kind::ALL, revision.next()).await {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    tx.send_replace(View {
        snapshot: Arc::new(snapshot.clone()),
        revision,
        connected: true,
    });
    let mut at = revision;
    let mut next = match next_or_stalled(&mut stream, store, at).await {
        Ok(n) => n,
        Err(e) => return e,
    };
    while let Some(item) = next.take() {
        let (rev, change) = match item {
            Ok(x) => x,
            // A quiet tier: nothing was written since the snapshot's revision (every batch
            // rewrites the snapshot key, whose revision it is), while other keys moved etcd
            // on and compaction passed it. Once the store confirms nothing was written
            // meanwhile, watch from where the log still is.
            Err(StoreError::Compacted { oldest, .. }) if at == revision && oldest > at => {
                match store.snapshot().await {
                    Ok((_, now)) if now == revision => {}
                    Ok(_) => return "written to while the watch was compacted".to_string(),
                    Err(e) => return e.to_string(),
                }
                tracing::debug!(%revision, %oldest, "watch start compacted with no change since the snapshot: watching from the compaction");
                stream = match store.watch(Kind::ALL, oldest).await {
                    Ok(s) => s,
                    Err(e) => return e.to_string(),
                };
                next = match next_or_stalled(&mut stream, store, at).await {
                    Ok(n) => n,
                    Err(e) => return e,
                };
                continue;
            }
            Err(e) => return e.to_string(),
        };
        if rev > revision {
            if let Err(refusal) = snapshot.apply(&change) {
                // The store applied it, so the copy has drifted: start again from a snapshot.
                return format!(
                    "change {change} at revision {rev} does not apply to the copy: {refusal}"
                );
            }
            at = rev;
        }
        // Publish once the batch is whole (the changes of one batch share a revision and
        // arrive together), so no reader sees half of one.
        next = stream.next().now_or_never().flatten();
        let batch_goes_on = matches!(&next, Some(Ok((r, _))) if *r == at);
        if !batch_goes_on {
            tx.send_replace(View {
                snapshot: Arc::new(snapshot.clone()),
                revision: at,
                connected: true,
            });
        }
        if next.is_none() {
            next = match next_or_stalled(&mut stream, store, at).await {
                Ok(n) => n,
                Err(e) => return e,
            };
        }
    }
    "the watch ended".to_string()
}

/// How long a watch may be quiet before the store is asked whether it has moved on.
const QUIET: Duration = Duration::from_secs(1);

/// The stream's next item — or an error when the watch has stalled: a member that hangs
/// (stopped, partitioned) keeps its connection open and delivers nothing, while the store,
/// through the other members, has moved on. Seen twice in a row (a write may be on its way),
/// that ends the watch, and the follower watches again through a member that answers.
pub(crate) async fn next_or_stalled(
    stream: &mut proxyfleet_state::WatchStream,
    store: &dyn StateStore,
    at: Revision,
) -> Result<
    Option<Result<(Revision, proxyfleet_state::Change), proxyfleet_state::StoreError>>,
    String,
> {
    let mut suspect: Option<Revision> = None;
    loop {
        tokio::select! {
            item = stream.next() => return Ok(item),
            () = tokio::time::sleep(QUIET) => {
                let head = tokio::time::timeout(2 * QUIET, store.snapshot()).await;
                let Ok(Ok((_, head))) = head else {
                    // The store does not answer either: nothing to compare with; wait on.
                    continue;
                };
                if head <= at {
                    suspect = None;
                } else if suspect.is_some_and(|s| s <= head) {
                    return Err(format!(
                        "the watch stalled at revision {at} while the store is at {head}"
                    ));
                } else {
                    suspect = Some(head);
                }
            }
        }
    }
}
