//! A node as the unit an agent runs: only the nodes it picks are bound, its targets come from
//! a source (a watch channel here; the state store in an agent), and every change of a
//! target's health arrives as an event, with no polling. Addresses: 127.98.0.0/16.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proxyfleet_lb::{Balancer, DesiredTarget, Health, HealthEvent, Limits};
use tokio::sync::broadcast;

fn desired(t: &TestTarget, zone: &str) -> DesiredTarget {
    DesiredTarget {
        group: "g".into(),
        address: t.addr,
        zone: zone.into(),
        capacity: None,
    }
}

/// The next event about `target` that reaches `to`, within `limit`.
async fn event_to(
    events: &mut broadcast::Receiver<HealthEvent>,
    target: SocketAddr,
    to: Health,
    limit: Duration,
) -> HealthEvent {
    let wanted = target.to_string();
    tokio::time::timeout(limit, async {
        loop {
            let e = events.recv().await.expect("the event channel stays open");
            if e.target == wanted && e.to == to {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event: {target} -> {}", to.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_follow_the_source_and_health_changes_arrive_as_events() {
    let t1 = TestTarget::start("127.98.1.11:0", "t1", false).await;
    let t2 = TestTarget::start("127.98.1.12:0", "t2", false).await;
    let port = free_port("127.98.1.10");
    let balancer = std::sync::Arc::new(
        Balancer::start(
            &[lb(&[("a", "127.98.1.10")], port, "g")],
            &[group("g", &[], 50)],
        )
        .await
        .unwrap(),
    );
    let mut events = balancer.health_events();
    let (source, targets) = tokio::sync::watch::channel(BTreeSet::new());
    let following = balancer.follow(targets);
    let node: SocketAddr = format!("127.98.1.10:{port}").parse().unwrap();

    source.send_replace([desired(&t1, "a")].into());
    let e = event_to(
        &mut events,
        t1.addr,
        Health::Healthy,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!((e.node.as_str(), e.group.as_str()), ("front/a", "g"));
    assert_eq!(e.from, Health::Initial);
    assert!(hello("127.98.2.1", 0, node)
        .await
        .unwrap()
        .starts_with("t1 "));

    source.send_replace([desired(&t1, "a"), desired(&t2, "a")].into());
    event_to(
        &mut events,
        t2.addr,
        Health::Healthy,
        Duration::from_secs(5),
    )
    .await;

    // t2's capacity becomes known (its host read its configuration): the cap follows in place,
    // with no new registration (no drain, no checks from scratch).
    let mut capped = desired(&t2, "a");
    capped.capacity = Some(8);
    source.send_replace([desired(&t1, "a"), capped].into());
    let t2_id = t2.addr.to_string();
    wait_for(
        "t2 capped at 8 less its one checker",
        Duration::from_secs(5),
        || {
            balancer
                .status()
                .targets
                .iter()
                .any(|t| t.id == t2_id && t.max_flows == Some(7))
        },
    )
    .await;
    let t2_now = balancer
        .status()
        .targets
        .into_iter()
        .find(|t| t.id == t2_id)
        .unwrap();
    assert!(!t2_now.draining, "a new capacity is not a deregistration");
    assert!(
        t2_now.healthy_everywhere(),
        "and not a new registration: still healthy"
    );
    assert!(
        events.try_recv().is_err(),
        "no health transition for a capacity change"
    );

    // t1 leaves the source: drained, then gone; every new flow goes to t2.
    source.send_replace([desired(&t2, "a")].into());
    event_to(
        &mut events,
        t1.addr,
        Health::Draining,
        Duration::from_secs(5),
    )
    .await;
    for i in 0..20u8 {
        let who = hello(&format!("127.98.2.{}", i + 2), 0, node)
            .await
            .unwrap();
        assert!(who.starts_with("t2 "), "flow {i} went to {who}");
    }
    wait_for(
        "t1 forgotten after its drain",
        Duration::from_secs(5),
        || {
            balancer
                .status()
                .targets
                .iter()
                .all(|t| t.id != t1.addr.to_string())
        },
    )
    .await;

    // A dead target's verdict arrives as an event, with its reason.
    t2.stop();
    let e = event_to(
        &mut events,
        t2.addr,
        Health::Unhealthy,
        Duration::from_secs(5),
    )
    .await;
    assert!(!e.reason.is_empty());
    println!("discovery: t2 unhealthy because {}", e.reason);

    // The source ends (the control plane is gone): the last set stays registered.
    drop(source);
    let still = || balancer.status().targets.iter().any(|t| t.id == t2_id);
    tokio::time::timeout(Duration::from_secs(5), following.ended())
        .await
        .expect("the balancer stops following an ended source");
    assert!(still(), "the last target set must survive the source's end");
    balancer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_runs_only_the_nodes_it_picks() {
    let t1 = TestTarget::start("127.98.3.11:0", "t1", false).await;
    let port = free_port("127.98.3.10");
    let spec = lb(&[("a", "127.98.3.10"), ("c", "127.98.4.10")], port, "g");
    let balancer = Balancer::start_nodes(
        &[spec],
        &[group("g", &[(&t1, "a")], 50)],
        Limits::default(),
        |_, node| node.zone == "c",
    )
    .await
    .unwrap();
    let addrs: Vec<String> = balancer
        .listen_addrs()
        .into_iter()
        .map(|(_, zone, addr)| format!("{zone} {addr}"))
        .collect();
    assert_eq!(addrs, vec![format!("c 127.98.4.10:{port}")]);
    // Zone a's address is free for the process that runs it.
    let other = std::net::TcpListener::bind(("127.98.3.10", port))
        .expect("zone a's node is not bound here");
    drop(other);
    // Node c still routes to zone a's target once healthy (cross-zone off, but its own zone
    // has none: the overflow), and is the only node that checks it here.
    wait_for("t1 healthy on node c", Duration::from_secs(5), || {
        balancer.target_health("g", &t1.addr.to_string())
            == vec![("front/c".to_string(), Health::Healthy)]
    })
    .await;
    let node: SocketAddr = format!("127.98.4.10:{port}").parse().unwrap();
    assert!(hello("127.98.5.1", 0, node)
        .await
        .unwrap()
        .starts_with("t1 "));
    balancer.shutdown().await;
}
