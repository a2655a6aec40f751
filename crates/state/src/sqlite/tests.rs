use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::SqliteStore;
use crate::apply::Refusal;
use crate::change::{Change, Fence, Kind, LeadershipEnd};
use crate::fixtures::{create, desired, group, heartbeat, host, target, T0};
use crate::model::{Leadership, Revision, Snapshot, Term};
use crate::store::{StateStore, StoreError, WatchStream};
use crate::time::ManualClock;

/// Long enough for any step on a loaded machine; events normally arrive in microseconds.
const DEADLINE: Duration = Duration::from_secs(10);

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Fixture {
            path: dir.path().join("state.db"),
            _dir: dir,
            clock: Arc::new(ManualClock::new(T0)),
        }
    }

    /// The store as the roles see it: behind the trait object.
    fn open(&self) -> Arc<dyn StateStore> {
        Arc::new(self.open_sqlite(super::LOG_RETENTION))
    }

    fn open_sqlite(&self, retention: u64) -> SqliteStore {
        SqliteStore::open_with(&self.path, self.clock.clone(), retention).expect("opens")
    }
}

async fn next(stream: &mut WatchStream) -> (Revision, Change) {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("an event before the deadline")
        .expect("the stream goes on")
        .expect("no error")
}

/// Every event up to and including revision `to`.
async fn until(stream: &mut WatchStream, to: Revision) -> Vec<(Revision, Change)> {
    let mut out = Vec::new();
    while out.last().is_none_or(|(r, _)| *r < to) {
        out.push(next(stream).await);
    }
    out
}

async fn elect(store: &dyn StateStore, who: &str) -> Leadership {
    tokio::time::timeout(DEADLINE, store.campaign(who, Duration::from_secs(1)))
        .await
        .expect("elected before the deadline")
        .expect("a campaign")
}

fn setup() -> Vec<Change> {
    vec![
        host("host-a", "a", "127.0.0.1"),
        group("proxies", 1, 2, 4),
        create("i-1", "a", "127.10.1.11"),
    ]
}

#[tokio::test]
async fn one_bad_change_and_none_of_its_batch_is_applied() {
    let f = Fixture::new();
    let store = f.open();
    let l = elect(&*store, "up").await;
    let r = store.apply(l.fence(), setup()).await.unwrap();
    assert_eq!(r, Revision(2), "the campaign was revision 1");

    let bad = vec![
        desired(3),
        Change::AssignInstance {
            instance: "i-1".into(),
            host: "nowhere".into(),
        },
        heartbeat("host-a", 5000),
    ];
    let err = store.apply(l.fence(), bad).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused { index: 1, count: 3, refusal: Refusal::UnknownHost(h), .. } if h == "nowhere"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "change 2 of 3 (AssignInstance instances/i-1) refused: no host nowhere; nothing was applied"
    );
    // Unfenced, a desired-state change is refused before anything else is looked at.
    let err = store
        .apply(Fence::Unfenced, vec![heartbeat("host-a", 6000), desired(3)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotLeader { index: 1, .. }),
        "{err:?}"
    );
    // Only campaign and resign write the leadership.
    let err = store
        .apply(
            l.fence(),
            vec![Change::LeadershipEnded {
                term: l.term,
                end: LeadershipEnd::Resigned,
            }],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Refused {
                refusal: Refusal::Reserved,
                ..
            }
        ),
        "{err:?}"
    );

    let (s, r) = store.snapshot().await.unwrap();
    assert_eq!(r, Revision(2), "no revision was used");
    assert_eq!(s.groups["proxies"].desired, 2);
    assert_eq!(s.instances["i-1"].host, None);
    assert_eq!(s.hosts["host-a"].last_heartbeat, T0);

    // The next good batch takes the next revision, and the log shows no trace of the others.
    let r = store
        .apply(Fence::Unfenced, vec![heartbeat("host-a", 7000)])
        .await
        .unwrap();
    assert_eq!(r, Revision(3));
    let mut w = store.watch(Kind::ALL, Revision(0)).await.unwrap();
    let logged: Vec<(u64, &str)> = until(&mut w, r)
        .await
        .iter()
        .map(|(r, c)| (r.0, c.name()))
        .collect();
    assert_eq!(
        logged,
        [
            (1, "LeaderElected"),
            (2, "RegisterHost"),
            (2, "DefineGroup"),
            (2, "CreateInstance"),
            (3, "Heartbeat")
        ]
    );
    drop(store);
    let (after, _) = f.open().snapshot().await.unwrap();
    assert_eq!(
        after.hosts["host-a"].last_heartbeat,
        crate::fixtures::at(7000)
    );
    assert_eq!(after.groups["proxies"].desired, 2);
}

#[tokio::test]
async fn a_watch_from_an_old_revision_replays_then_follows() {
    let f = Fixture::new();
    let store = f.open();
    let l = elect(&*store, "up").await;
    store.apply(l.fence(), setup()).await.unwrap(); // 2
    store.apply(l.fence(), vec![desired(3)]).await.unwrap(); // 3
    let reg = Change::RegisterTarget {
        target_group: "proxies".into(),
        address: target("127.10.1.11:3128"),
        zone: "a".into(),
        instance: Some("i-1".into()),
        at: T0,
    };
    store
        .apply(l.fence(), vec![reg.clone(), heartbeat("host-a", 1)])
        .await
        .unwrap(); // 4

    let mut all = store.watch(Kind::ALL, Revision(3)).await.unwrap();
    let mut targets = store.watch(&[Kind::Target], Revision(0)).await.unwrap();
    assert_eq!(next(&mut all).await, (Revision(3), desired(3)));
    assert_eq!(next(&mut all).await, (Revision(4), reg.clone()));
    assert_eq!(next(&mut all).await, (Revision(4), heartbeat("host-a", 1)));
    assert_eq!(next(&mut targets).await, (Revision(4), reg));

    // Now caught up: the next commit arrives as it happens, from another task.
    let writer = store.clone();
    let fence = l.fence();
    let drain = Change::DrainTarget {
        target_group: "proxies".into(),
        address: target("127.10.1.11:3128"),
        at: T0,
    };
    let later = drain.clone();
    let task = tokio::spawn(async move {
        writer.apply(fence, vec![desired(4)]).await.unwrap();
        writer.apply(fence, vec![later]).await.unwrap()
    });
    assert_eq!(next(&mut all).await, (Revision(5), desired(4)));
    assert_eq!(next(&mut all).await, (Revision(6), drain.clone()));
    assert_eq!(
        next(&mut targets).await,
        (Revision(6), drain),
        "kinds filter"
    );
    assert_eq!(task.await.unwrap(), Revision(6));

    // A snapshot plus the watch after it equals the store: the watcher's copy is exact.
    let mut copy = Snapshot::default();
    let mut from_zero = store.watch(Kind::ALL, Revision(0)).await.unwrap();
    for (_, c) in until(&mut from_zero, Revision(6)).await {
        copy.apply(&c).unwrap();
    }
    assert_eq!(copy, store.snapshot().await.unwrap().0);

    // A watch ahead of the head waits for it.
    let mut ahead = store.watch(Kind::ALL, Revision(8)).await.unwrap();
    store.apply(l.fence(), vec![desired(3)]).await.unwrap(); // 7
    store.apply(l.fence(), vec![desired(2)]).await.unwrap(); // 8
    assert_eq!(next(&mut ahead).await, (Revision(8), desired(2)));
}

#[tokio::test]
async fn a_stale_leader_is_refused_after_a_new_campaign() {
    let f = Fixture::new();
    let store = f.open();
    let a = elect(&*store, "agent-a").await;
    assert_eq!((a.term, a.leader.as_str()), (Term(1), "agent-a"));
    store.apply(a.fence(), setup()).await.unwrap();

    // While a's lease is live, b's campaign waits.
    let campaigner = store.clone();
    let mut b =
        tokio::spawn(async move { campaigner.campaign("agent-b", Duration::from_secs(1)).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut b)
            .await
            .is_err(),
        "b must not be elected while a's lease is live"
    );
    // a renews within its ttl, so at 1.5 s after its election it still leads.
    f.clock.advance(Duration::from_millis(700));
    store.renew(&a).await.unwrap();
    f.clock.advance(Duration::from_millis(800));
    store.apply(a.fence(), vec![desired(3)]).await.unwrap();
    assert_eq!(store.leader().await.unwrap(), Some(a.clone()));

    // a lets its lease lapse (a pause, a partition): b is elected on its own.
    f.clock.advance(Duration::from_millis(1500));
    let b = tokio::time::timeout(DEADLINE, b)
        .await
        .expect("b elected once a's lease lapsed")
        .unwrap()
        .unwrap();
    assert_eq!(b.term, Term(2));
    let err = store.apply(a.fence(), vec![desired(4)]).await.unwrap_err();
    assert!(err.is_fenced());
    assert_eq!(
        err.to_string(),
        "write fenced by term 1 refused: the current leadership is term 2"
    );
    assert!(store.renew(&a).await.unwrap_err().is_fenced());
    assert!(store.resign(&a).await.unwrap_err().is_fenced());
    // Agents' reports need no leadership and still go in.
    store
        .apply(Fence::Unfenced, vec![heartbeat("host-a", 9000)])
        .await
        .unwrap();
    assert_eq!(
        store.snapshot().await.unwrap().0.groups["proxies"].desired,
        3
    );

    // b resigns: no leader at all, so even b's term is refused, and c needs no wait.
    store.resign(&b).await.unwrap();
    assert_eq!(store.leader().await.unwrap(), None);
    let err = store.apply(b.fence(), vec![desired(4)]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                presented: Term(2),
                current: None
            }
        ),
        "{err:?}"
    );
    let c = elect(&*store, "agent-c").await;
    assert_eq!(c.term, Term(3));

    // The log tells how each leadership ended.
    let mut w = store.watch(&[Kind::Leadership], Revision(0)).await.unwrap();
    let (_, head) = store.snapshot().await.unwrap();
    let ends: Vec<Change> = until(&mut w, head)
        .await
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| matches!(c, Change::LeadershipEnded { .. }))
        .collect();
    assert_eq!(
        ends,
        [
            Change::LeadershipEnded {
                term: Term(1),
                end: LeadershipEnd::LeaseExpired
            },
            Change::LeadershipEnded {
                term: Term(2),
                end: LeadershipEnd::Resigned
            }
        ]
    );
}

#[tokio::test]
async fn a_restart_keeps_revisions_and_terms_monotonic() {
    let f = Fixture::new();
    let (before, head, term) = {
        let store = f.open();
        let a = elect(&*store, "agent-a").await;
        store.apply(a.fence(), setup()).await.unwrap();
        store.resign(&a).await.unwrap();
        let b = elect(&*store, "agent-b").await;
        store.apply(b.fence(), vec![desired(3)]).await.unwrap();
        let (s, r) = store.snapshot().await.unwrap();
        (s, r, b.term)
    };
    assert_eq!((head, term), (Revision(5), Term(2)));

    let store = f.open();
    let (after, r) = store.snapshot().await.unwrap();
    assert_eq!(
        (&after, r),
        (&before, head),
        "the same state at the same revision"
    );
    // b's lease is wall-clock and outlives the restart: b still leads, c waits for it.
    let b = store.leader().await.unwrap().expect("b's lease is live");
    assert_eq!(b.term, term);
    let r = store.apply(b.fence(), vec![desired(4)]).await.unwrap();
    assert_eq!(r, Revision(6), "revisions go on from the last one");
    f.clock.advance(Duration::from_secs(2));
    let c = elect(&*store, "agent-c").await;
    assert_eq!(c.term, Term(3), "a term is never granted twice");

    // A restart after a resignation (no leadership in the state) still goes on from the
    // last term.
    store.resign(&c).await.unwrap();
    drop(store);
    let store = f.open();
    assert_eq!(elect(&*store, "agent-d").await.term, Term(4));
    // And the log from before the restarts replays in full.
    let mut w = store.watch(Kind::ALL, Revision(0)).await.unwrap();
    let (_, head) = store.snapshot().await.unwrap();
    let revisions: Vec<u64> = until(&mut w, head).await.iter().map(|(r, _)| r.0).collect();
    assert_eq!(revisions.first(), Some(&1));
    assert!(revisions.windows(2).all(|p| p[0] <= p[1]));
    assert_eq!(revisions.last(), Some(&head.0));
}

#[tokio::test]
async fn a_watch_from_before_the_retained_log_is_told_to_take_a_snapshot() {
    let f = Fixture::new();
    let store = f.open_sqlite(8);
    store
        .apply(Fence::Unfenced, vec![host("host-a", "a", "127.0.0.1")])
        .await
        .unwrap();
    let mut head = Revision(1);
    for ms in 0..20 {
        head = store
            .apply(Fence::Unfenced, vec![heartbeat("host-a", ms)])
            .await
            .unwrap();
    }
    assert_eq!(head, Revision(21));
    let err = store
        .watch(Kind::ALL, Revision(1))
        .await
        .err()
        .expect("compacted");
    let StoreError::Compacted { from, oldest } = err else {
        panic!("{err:?}");
    };
    assert_eq!(from, Revision(1));
    assert!(
        oldest > Revision(1) && oldest.0 + 8 <= head.0 + 1,
        "{oldest}"
    );
    // The last `retention` revisions are always there.
    let mut w = store.watch(Kind::ALL, Revision(head.0 - 7)).await.unwrap();
    assert_eq!(until(&mut w, head).await.len(), 8);
    // The snapshot keeps what the trimmed log said.
    assert!(store
        .snapshot()
        .await
        .unwrap()
        .0
        .hosts
        .contains_key("host-a"));
}

#[tokio::test]
async fn watches_end_when_the_store_is_dropped() {
    let f = Fixture::new();
    let store = f.open();
    let mut w = store.watch(Kind::ALL, Revision(0)).await.unwrap();
    drop(store);
    let end = tokio::time::timeout(DEADLINE, w.next())
        .await
        .expect("ends");
    assert!(end.is_none());
}

#[test]
fn the_database_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    drop(f.open_sqlite(16));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.path), 0o600);
}

#[tokio::test]
async fn a_host_is_live_while_it_renews_its_liveness_and_lost_when_it_lapses() {
    let f = Fixture::new();
    let store = f.open();
    let ttl = Duration::from_secs(1);
    let a = store.hold_liveness("ha", ttl).await.unwrap();
    let c = store.hold_liveness("hc", ttl).await.unwrap();
    assert_eq!(
        store
            .live_hosts()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["ha", "hc"]
    );
    // a renews, c does not: past the ttl only a is live.
    f.clock.advance(Duration::from_millis(600));
    store.renew_liveness(&a).await.unwrap();
    f.clock.advance(Duration::from_millis(600));
    assert_eq!(
        store
            .live_hosts()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["ha"]
    );
    // c's renewal now fails: it must hold a new lease (and is live again once it does).
    assert!(matches!(
        store.renew_liveness(&c).await,
        Err(StoreError::LivenessLapsed { host }) if host == "hc"
    ));
    let c2 = store.hold_liveness("hc", ttl).await.unwrap();
    assert_ne!(c2.lease, c.lease);
    assert!(store.live_hosts().await.unwrap().contains("hc"));
    // An old lease of the host renews nothing.
    assert!(store.renew_liveness(&c).await.is_err());
}
