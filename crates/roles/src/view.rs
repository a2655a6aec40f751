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
use proxyfleet_state::{Kind, Revision, Snapshot, StateStore};
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
    let mut next = stream.next().await;
    while let Some(item) = next.take() {
        let (rev, change) = match item {
            Ok(x) => x,
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
            next = stream.next().await;
        }
    }
    "the watch ended".to_string()
}
