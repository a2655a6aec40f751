//! The etcd store against a real 3-member cluster on loopback (127.99.{201..205}.x): the
//! store's contract, a member's death under an open watch, the raft leader's death, a lapsed
//! leadership fenced, and quorum lost and regained. Without etcd: `SKIPPED`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proxyfleet_state::model::Host;
use proxyfleet_state::{
    Change, EtcdStore, Fence, Kind, Refusal, Revision, StateStore, StoreError, UnixMillis,
};
use testkit::etcd::Cluster;

fn skip() -> bool {
    if !testkit::etcd::installed() {
        println!("SKIPPED: etcd not installed (scripts/test installs Debian's etcd-server)");
        return true;
    }
    false
}

fn store(cluster: &Cluster) -> EtcdStore {
    let endpoints: Vec<SocketAddr> = cluster
        .client_urls()
        .iter()
        .map(|u| u.trim_start_matches("http://").parse().unwrap())
        .collect();
    EtcdStore::new(endpoints, "/test/")
}

fn host(id: &str) -> Change {
    Change::RegisterHost {
        host: Host {
            id: id.into(),
            address: "127.0.0.1".parse().unwrap(),
            zone: "a".into(),
            last_heartbeat: UnixMillis::now(),
            nodes: Default::default(),
        },
    }
}

fn beat(id: &str) -> Change {
    Change::Heartbeat {
        host: id.into(),
        at: UnixMillis::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_etcd() {
    if skip() {
        return;
    }
    let cluster = Cluster::start([201, 1]);
    let s = store(&cluster);
    let (empty, r0) = s.snapshot().await.unwrap();
    assert!(empty.hosts.is_empty());
    // A rule broken: nothing applied.
    let e = s
        .apply(Fence::Unfenced, vec![beat("h1")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Refused {
                refusal: Refusal::UnknownHost(_),
                ..
            }
        ),
        "{e}"
    );
    let r1 = s
        .apply(Fence::Unfenced, vec![host("h1"), beat("h1")])
        .await
        .unwrap();
    assert!(r1 > r0);
    let (snap, at) = s.snapshot().await.unwrap();
    assert_eq!(at, r1);
    // The log entry lives on a lease (the keyspace keeps about half an hour of the log).
    let range = format!(
        r#"{{"key":"{}","range_end":"{}"}}"#,
        b64("/test/log/"),
        b64("/test/log0")
    );
    let url = format!("{}/v3/kv/range", cluster.client_url(0));
    let curl = testkit::client::curl(&["-s", "-m", "5", "-d", &range, &url]);
    assert!(
        curl.stdout.contains("\"lease\":\""),
        "log entries without a lease: {}",
        curl.stdout
    );
    assert!(snap.hosts.contains_key("h1"));
    // Desired state needs the leadership.
    let group = Change::DefineGroup {
        group: proxyfleet_state::model::Group::new("g", 0, 2, 1),
    };
    assert!(matches!(
        s.apply(Fence::Unfenced, vec![group.clone()])
            .await
            .unwrap_err(),
        StoreError::NotLeader { .. }
    ));
    let lead = s.campaign("h1", Duration::from_secs(1)).await.unwrap();
    assert_eq!(s.leader().await.unwrap().unwrap().term, lead.term);
    s.apply(lead.fence(), vec![group.clone()]).await.unwrap();
    // The watch from just after the first snapshot sees every change, in order.
    let mut w = s.watch(Kind::ALL, r0.next()).await.unwrap();
    let mut names = Vec::new();
    while names.len() < 4 {
        let (_, c) = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        names.push(c.name());
    }
    assert_eq!(
        names,
        ["RegisterHost", "Heartbeat", "LeaderElected", "DefineGroup"]
    );
    // Another candidate waits while the lease is renewed...
    let s2 = store(&cluster);
    let waiting = tokio::spawn(async move {
        let l = s2.campaign("h2", Duration::from_secs(1)).await.unwrap();
        (l, s2)
    });
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.renew(&lead).await.unwrap();
    }
    assert!(
        !waiting.is_finished(),
        "a live leadership is not taken over"
    );
    // ... and wins once the lease lapses; the old leader's writes are fenced.
    let lapsed = Instant::now();
    let (second, s2) = waiting.await.unwrap();
    println!(
        "etcd: a lapsed 1 s lease was taken over after {} ms",
        lapsed.elapsed().as_millis()
    );
    assert!(second.term > lead.term);
    let e = s
        .apply(lead.fence(), vec![group.clone()])
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(s.renew(&lead).await.unwrap_err().is_fenced());
    s2.apply(second.fence(), vec![group]).await.unwrap();
    s2.resign(&second).await.unwrap();
    assert!(s.leader().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_costs_no_write_and_the_watch_resumes_without_loss_or_repeat() {
    if skip() {
        return;
    }
    let mut cluster = Cluster::start([202, 1]);
    let s = store(&cluster);
    s.apply(Fence::Unfenced, vec![host("h1")]).await.unwrap();
    let (_, start) = s.snapshot().await.unwrap();
    let mut w = s.watch(&[Kind::Host], start.next()).await.unwrap();
    let mut seen: Vec<Revision> = Vec::new();
    let mut written: Vec<Revision> = Vec::new();
    // The client talks to member 0 first: kill it midway.
    for i in 0..20 {
        if i == 10 {
            cluster.kill(0);
        }
        written.push(s.apply(Fence::Unfenced, vec![beat("h1")]).await.unwrap());
    }
    // Read until the stream breaks (member 0 died), then watch again from after the last.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
            Ok(Some(Ok((r, _)))) => seen.push(r),
            Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
        }
        if seen.len() == written.len() {
            break;
        }
    }
    if seen.len() < written.len() {
        let from = seen.last().copied().unwrap_or(start).next();
        let mut w = s.watch(&[Kind::Host], from).await.unwrap();
        while seen.len() < written.len() {
            let (r, _) = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push(r);
        }
    }
    assert_eq!(seen, written, "every write seen once, in order");
    println!("etcd: 20 writes across a member's death, all watched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_the_raft_leader_dies() {
    if skip() {
        return;
    }
    let mut cluster = Cluster::start([203, 1]);
    let s = store(&cluster);
    s.apply(Fence::Unfenced, vec![host("h1")]).await.unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(5));
    let killed = Instant::now();
    cluster.kill(leader);
    loop {
        if s.apply(Fence::Unfenced, vec![beat("h1")]).await.is_ok() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "writes never resumed"
        );
    }
    let gap = killed.elapsed();
    println!(
        "etcd: writes resumed {} ms after the raft leader's death",
        gap.as_millis()
    );
    let health = s.health().await;
    assert_eq!(
        health.iter().filter(|m| m.reachable).count(),
        2,
        "{health:?}"
    );
    assert_eq!(health.iter().filter(|m| m.leader).count(), 1, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_in_bounded_time_and_succeed_again_after() {
    if skip() {
        return;
    }
    let cluster = Cluster::start([204, 1]);
    let s = store(&cluster);
    s.apply(Fence::Unfenced, vec![host("h1")]).await.unwrap();
    cluster.stop(1);
    cluster.stop(2);
    let started = Instant::now();
    let e = s
        .apply(Fence::Unfenced, vec![beat("h1")])
        .await
        .unwrap_err();
    let took = started.elapsed();
    println!(
        "etcd: without quorum a write failed after {} ms: {e}",
        took.as_millis()
    );
    assert!(matches!(e, StoreError::Backend { .. }), "{e}");
    assert!(took < Duration::from_secs(8), "bounded: {took:?}");
    cluster.cont(1);
    cluster.cont(2);
    let back = Instant::now();
    while s.apply(Fence::Unfenced, vec![beat("h1")]).await.is_err() {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "writes never came back"
        );
    }
    println!(
        "etcd: quorum back: writes again after {} ms",
        back.elapsed().as_millis()
    );
}

/// Base64, as etcd's JSON gateway wants keys.
fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_liveness_lease_lapses_is_gone_by_etcds_own_verdict() {
    if skip() {
        return;
    }
    let cluster = Cluster::start([205, 1]);
    let s = store(&cluster);
    let ttl = Duration::from_secs(1);
    let a = s.hold_liveness("ha", ttl).await.unwrap();
    let c = s.hold_liveness("hc", ttl).await.unwrap();
    let held = Instant::now();
    let live = s.live_hosts().await.unwrap();
    assert!(live.contains("ha") && live.contains("hc"), "{live:?}");
    // ha renews every 250 ms, hc stops: etcd removes hc once its lease lapses.
    let gone = loop {
        s.renew_liveness(&a).await.unwrap();
        let live = s.live_hosts().await.unwrap();
        assert!(live.contains("ha"), "a renewed lease lapsed: {live:?}");
        if !live.contains("hc") {
            break held.elapsed();
        }
        assert!(
            held.elapsed() < Duration::from_secs(5),
            "hc's lapsed lease still holds"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "etcd: a 1 s liveness lease not renewed: the host gone after {} ms",
        gone.as_millis()
    );
    assert!(
        gone >= Duration::from_millis(900),
        "gone too early: {gone:?}"
    );
    assert!(matches!(
        s.renew_liveness(&c).await,
        Err(StoreError::LivenessLapsed { .. })
    ));
    s.hold_liveness("hc", ttl).await.unwrap();
    assert!(s.live_hosts().await.unwrap().contains("hc"));
}
