//! The embedded [`StateStore`]: one SQLite file, what `proxyfleet up` keeps its state in.
//!
//! One thread owns the connection and runs the calls in order, each sent to it as a job with a
//! reply channel: async callers never block the runtime on a commit nor hold a lock across
//! one, and the order of the jobs is the order of the revisions. The snapshot is kept in
//! memory beside the tables, so reading it costs no query.
//!
//! Watching: every commit publishes the new head revision on a `tokio::sync::watch`; a watch
//! stream reads the log from its revision up to the head, a window at a time, then waits for
//! the head to move. A slow reader loses nothing (it reads the log, not a bounded queue); one
//! that falls behind the log's retention gets [`StoreError::Compacted`].
//!
//! Leases are wall-clock: the leadership's expiry is stored, so it means the same after a
//! restart. One process opens a database at a time (the state directory's owner); a second
//! store on the same file would not see the first one's commits in its copy in memory.

mod db;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::change::{Change, Fence, Kind};
use crate::model::{Leadership, Revision, Snapshot};
use crate::store::{StateStore, StoreError, WatchStream};
use crate::time::{Clock, SystemClock, UnixMillis};
use db::{Campaign, Db};

/// How many revisions of the log are kept for watchers (at one heartbeat a second from each
/// of three hosts, about nine hours).
pub const LOG_RETENTION: u64 = 100_000;

/// How many revisions a watch reads from the log at a time.
const WATCH_WINDOW: u64 = 256;

/// The longest a campaign sleeps before it looks at the lease again: the clock is wall time
/// and may be stepped.
const CAMPAIGN_POLL: Duration = Duration::from_millis(50);

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// The SQLite state store. Cheap to share behind an `Arc`; its thread ends when the store and
/// every watch stream of it are dropped.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    head: watch::Receiver<Revision>,
    /// Dropped with the store: its watch streams end (and let the thread go).
    _open: watch::Sender<()>,
    open: watch::Receiver<()>,
}

impl SqliteStore {
    /// Opens (or creates, mode 0600) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, Arc::new(SystemClock), LOG_RETENTION)
    }

    pub(crate) fn open_with(
        path: &Path,
        clock: Arc<dyn Clock>,
        retention: u64,
    ) -> Result<SqliteStore, StoreError> {
        let (head_tx, head) = watch::channel(Revision(0));
        let db = Db::open(path, clock, retention, head_tx)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("state-db".to_string())
            .spawn(move || {
                let mut db = db;
                while let Ok(job) = queue.recv() {
                    job(&mut db);
                }
            })
            .map_err(|e| StoreError::Backend {
                what: format!("database {}: cannot start its thread", path.display()),
                source: e.into(),
            })?;
        let (_open, open) = watch::channel(());
        Ok(SqliteStore {
            jobs,
            head,
            _open,
            open,
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        call(&self.jobs, f).await
    }
}

async fn call<T: Send + 'static>(
    jobs: &mpsc::Sender<Job>,
    f: impl FnOnce(&mut Db) -> T + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = oneshot::channel();
    jobs.send(Box::new(move |db| {
        let _ = tx.send(f(db));
    }))
    .map_err(|_| StoreError::Closed)?;
    rx.await.map_err(|_| StoreError::Closed)
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    async fn apply(&self, fence: Fence, changes: Vec<Change>) -> Result<Revision, StoreError> {
        self.call(move |db| db.apply(fence, changes)).await?
    }

    async fn snapshot(&self) -> Result<(Snapshot, Revision), StoreError> {
        self.call(|db| db.snapshot()).await
    }

    async fn watch(&self, kinds: &[Kind], from: Revision) -> Result<WatchStream, StoreError> {
        // Refused now rather than as the stream's first item.
        self.call(move |db| db.check_from(from)).await??;
        let follow = Follow {
            jobs: self.jobs.clone(),
            head: self.head.clone(),
            open: self.open.clone(),
            kinds: kinds.to_vec(),
            next: from.max(Revision(1)),
            ready: VecDeque::new(),
            failed: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(follow, Follow::step)))
    }

    async fn campaign(&self, candidate: &str, ttl: Duration) -> Result<Leadership, StoreError> {
        let mut head = self.head.clone();
        loop {
            head.borrow_and_update();
            let who = candidate.to_string();
            match self.call(move |db| db.campaign(&who, ttl)).await?? {
                Campaign::Elected(leadership) => return Ok(leadership),
                Campaign::Held(left) => {
                    // A resignation is a commit: it moves the head and ends the wait early.
                    tokio::select! {
                        _ = head.changed() => {}
                        () = tokio::time::sleep(left.min(CAMPAIGN_POLL)) => {}
                    }
                }
            }
        }
    }

    async fn renew(&self, leadership: &Leadership) -> Result<UnixMillis, StoreError> {
        let l = leadership.clone();
        self.call(move |db| db.renew(&l)).await?
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), StoreError> {
        let l = leadership.clone();
        self.call(move |db| db.resign(&l)).await?
    }

    async fn leader(&self) -> Result<Option<Leadership>, StoreError> {
        self.call(|db| db.leader()).await
    }

    async fn hold_liveness(
        &self,
        host: &str,
        ttl: Duration,
    ) -> Result<crate::Liveness, StoreError> {
        let host = host.to_string();
        self.call(move |db| db.hold_liveness(&host, ttl)).await
    }

    async fn renew_liveness(&self, liveness: &crate::Liveness) -> Result<(), StoreError> {
        let l = liveness.clone();
        self.call(move |db| db.renew_liveness(&l)).await?
    }

    async fn live_hosts(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        self.call(|db| db.live_hosts()).await
    }
}

/// A watch stream's position.
struct Follow {
    jobs: mpsc::Sender<Job>,
    head: watch::Receiver<Revision>,
    open: watch::Receiver<()>,
    kinds: Vec<Kind>,
    /// The first revision not yet read from the log.
    next: Revision,
    /// Read, not yet yielded.
    ready: VecDeque<(Revision, Change)>,
    failed: bool,
}

impl Follow {
    async fn step(mut self) -> Option<(Result<(Revision, Change), StoreError>, Follow)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            if self.failed {
                return None;
            }
            // Marked seen before reading, so a commit after this line wakes `changed` below.
            let head = *self.head.borrow_and_update();
            if self.next <= head {
                let from = self.next;
                let to = Revision(head.0.min(from.0 + WATCH_WINDOW - 1));
                let kinds = self.kinds.clone();
                match call(&self.jobs, move |db| db.read_log(&kinds, from, to)).await {
                    Ok(Ok(events)) => {
                        self.ready.extend(events);
                        self.next = to.next();
                    }
                    Ok(Err(e)) => {
                        self.failed = true;
                        return Some((Err(e), self));
                    }
                    // The store is gone: the stream ends.
                    Err(_) => return None,
                }
                continue;
            }
            tokio::select! {
                r = self.head.changed() => if r.is_err() { return None },
                // The store was dropped.
                _ = self.open.changed() => return None,
            }
        }
    }
}
