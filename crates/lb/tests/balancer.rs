//! The balancer on real loopback sockets: targets are TCP servers in this process that say
//! who they are and who connected, so each test can see where every flow went and as whom.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use proxyfleet_lb::{Balancer, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_target_that_stops_and_starts() {
    let t1 = TestTarget::start("127.10.1.31:0", "t1", false).await;
    let t2 = TestTarget::start("127.10.1.32:0", "t2", false).await;
    let port = free_port("127.10.1.30");
    let b = Balancer::start(
        &[lb(&[("a", "127.10.1.30")], port, "g")],
        &[group("g", &[(&t1, "a"), (&t2, "a")], 100)],
    )
    .await
    .unwrap();
    all_healthy(&b, 1, &[&t1, &t2]).await;
    t1.stop();
    wait_for("t1 unhealthy", Duration::from_secs(5), || {
        health(&b, &t1) == [Health::Unhealthy]
    })
    .await;
    let status = b.status();
    let t1s = status
        .targets
        .iter()
        .find(|t| t.id == t1.addr.to_string())
        .unwrap();
    assert!(
        t1s.health[0]
            .reason
            .contains("consecutive health checks failed"),
        "{:?}",
        t1s.health
    );
    // Every new flow now reaches t2.
    let node: SocketAddr = format!("127.10.1.30:{port}").parse().unwrap();
    for _ in 0..20 {
        assert!(hello("127.20.0.5", 0, node)
            .await
            .unwrap()
            .starts_with("t2 "));
    }
    // The same address comes back.
    let t1b = TestTarget::start(&t1.addr.to_string(), "t1", false).await;
    wait_for("t1 healthy again", Duration::from_secs(5), || {
        health(&b, &t1b) == [Health::Healthy]
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_keeps_its_target_and_the_target_sees_the_client() {
    let targets = [
        TestTarget::start("127.10.1.41:0", "t1", false).await,
        TestTarget::start("127.10.1.42:0", "t2", false).await,
        TestTarget::start("127.10.1.43:0", "t3", false).await,
    ];
    let port = free_port("127.10.1.40");
    // Checks at a relaxed pace: a flap under a loaded test machine would move flows.
    let g = group(
        "g",
        &[(&targets[0], "a"), (&targets[1], "a"), (&targets[2], "a")],
        300,
    );
    let b = Balancer::start(&[lb(&[("a", "127.10.1.40")], port, "g")], &[g])
        .await
        .unwrap();
    all_healthy(&b, 1, &targets.iter().collect::<Vec<_>>()).await;
    let node: SocketAddr = format!("127.10.1.40:{port}").parse().unwrap();
    let mut first = Vec::new();
    for i in 0..30u16 {
        first.push(hello("127.20.0.7", 41000 + i, node).await.unwrap());
    }
    // preserve_client_ip: the target saw the client's own address and port-independent IP.
    assert!(
        first
            .iter()
            .all(|l| l.split(' ').nth(1).unwrap().starts_with("127.20.0.7:")),
        "{first:?}"
    );
    let names: std::collections::HashSet<&str> =
        first.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(names.len() >= 2, "30 flows spread over targets: {names:?}");
    // The same 5-tuples again: the same targets.
    for i in 0..30u16 {
        let again = hello("127.20.0.7", 41000 + i, node).await.unwrap();
        assert_eq!(
            again.split(' ').next(),
            first[i as usize].split(' ').next(),
            "flow {i} moved: {:#?}",
            b.status().targets
        );
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_retried_on_another_target_before_the_client_notices() {
    let alive = TestTarget::start("127.10.1.51:0", "alive", false).await;
    let dead = TestTarget::start("127.10.1.52:0", "dead", false).await;
    let port = free_port("127.10.1.50");
    // Checks every 10 s: only the data path can notice the death in time.
    let mut g = group("g", &[(&alive, "a"), (&dead, "a")], 10_000);
    g.health_check.healthy_threshold = 2;
    let b = Balancer::start(&[lb(&[("a", "127.10.1.50")], port, "g")], &[g])
        .await
        .unwrap();
    // Neither target is judged yet: the node fails open to both, which is what this test
    // needs — the dead one is still a choice until a connect to it fails.
    dead.stop();
    let node: SocketAddr = format!("127.10.1.50:{port}").parse().unwrap();
    for _ in 0..50 {
        let line = hello("127.20.0.8", 0, node)
            .await
            .expect("no client saw a failure");
        assert!(line.starts_with("alive "), "{line}");
    }
    assert_eq!(
        health(&b, &dead),
        [Health::Unhealthy],
        "passive health marked it at once"
    );
    let s = b.status();
    let d = s
        .targets
        .iter()
        .find(|t| t.id == dead.addr.to_string())
        .unwrap();
    assert_eq!(
        d.connect_failures, 1,
        "one failed connect, then no more flows sent there"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_header_carries_the_client_and_checks_send_local() {
    let t = TestTarget::start("127.10.1.61:0", "t", true).await;
    let port = free_port("127.10.1.60");
    let mut g = group("g", &[(&t, "a")], 100);
    g.proxy_protocol_v2 = true;
    g.preserve_client_ip = false;
    let b = Balancer::start(&[lb(&[("a", "127.10.1.60")], port, "g")], &[g])
        .await
        .unwrap();
    all_healthy(&b, 1, &[&t]).await;
    let node: SocketAddr = format!("127.10.1.60:{port}").parse().unwrap();
    let line = hello("127.20.0.9", 42000, node).await.unwrap();
    assert_eq!(
        line, "t 127.20.0.9:42000",
        "the header's source is the client, port included"
    );
    assert!(
        t.seen.lock().unwrap().iter().any(|w| w == "LOCAL"),
        "health checks send LOCAL"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_keeps_old_flows_avoids_new_ones_then_closes_them() {
    let t1 = TestTarget::start("127.10.1.71:0", "t1", false).await;
    let t2 = TestTarget::start("127.10.1.72:0", "t2", false).await;
    let port = free_port("127.10.1.70");
    let b = Balancer::start(
        &[lb(&[("a", "127.10.1.70")], port, "g")],
        &[group("g", &[(&t1, "a"), (&t2, "a")], 100)],
    )
    .await
    .unwrap();
    all_healthy(&b, 1, &[&t1, &t2]).await;
    let node: SocketAddr = format!("127.10.1.70:{port}").parse().unwrap();
    // Open flows until one lands on t1, and keep it.
    let mut kept = None;
    for i in 0..50u16 {
        let mut s = TcpStream::connect(node).await.unwrap();
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).await.unwrap();
        if &greeting == b"t1 " {
            kept = Some(s);
            break;
        }
        assert!(i < 49, "no flow reached t1");
    }
    let mut kept = kept.unwrap();
    let mut rest = [0u8; 64];
    let n = kept.read(&mut rest).await.unwrap();
    assert!(rest[..n].ends_with(b"\n"));
    let drained = b.deregister("g", &t1.addr.to_string()).unwrap();
    let started = Instant::now();
    // The existing flow still works...
    kept.write_all(b"ping\n").await.unwrap();
    let mut echo = [0u8; 5];
    kept.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping\n");
    // ...new flows avoid the draining target...
    for _ in 0..20 {
        assert!(hello("127.20.0.10", 0, node)
            .await
            .unwrap()
            .starts_with("t2 "));
    }
    assert_eq!(health(&b, &t1), [Health::Draining]);
    // ...and after the delay (800 ms) the old flow is closed.
    let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed by the balancer");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        started.elapsed()
    );
    drained.await.unwrap();
    assert!(
        b.target_health("g", &t1.addr.to_string()).is_empty(),
        "forgotten after draining"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_zone_off_keeps_flows_in_zone_until_the_zone_has_none() {
    let ta = TestTarget::start("127.10.1.81:0", "ta", false).await;
    let tc = TestTarget::start("127.10.2.81:0", "tc", false).await;
    let pa = free_port("127.10.1.80");
    let mut spec = lb(&[("a", "127.10.1.80"), ("c", "127.10.2.80")], pa, "g");
    // The same port must be free on both nodes' addresses: try the one chosen on a.
    let _ = free_port("127.10.2.80");
    for cross in [false, true] {
        spec.cross_zone = cross;
        let b = Balancer::start(
            &[spec.clone()],
            &[group("g", &[(&ta, "a"), (&tc, "c")], 100)],
        )
        .await
        .unwrap();
        all_healthy(&b, 2, &[&ta, &tc]).await;
        let node_a: SocketAddr = format!("127.10.1.80:{pa}").parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            seen.insert(
                hello("127.20.0.11", 0, node_a)
                    .await
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        if cross {
            assert_eq!(
                seen.len(),
                2,
                "cross-zone on: both zones' targets: {seen:?}"
            );
        } else {
            assert_eq!(
                seen,
                ["ta".to_string()].into(),
                "cross-zone off: own zone only"
            );
        }
        b.shutdown().await;
    }
    // Zone a's target fails: node a falls back to zone c.
    spec.cross_zone = false;
    let b = Balancer::start(
        &[spec.clone()],
        &[group("g", &[(&ta, "a"), (&tc, "c")], 100)],
    )
    .await
    .unwrap();
    all_healthy(&b, 2, &[&tc]).await;
    ta.stop();
    wait_for("ta unhealthy", Duration::from_secs(5), || {
        health(&b, &ta) == [Health::Unhealthy, Health::Unhealthy]
    })
    .await;
    let node_a: SocketAddr = format!("127.10.1.80:{pa}").parse().unwrap();
    assert!(hello("127.20.0.11", 0, node_a)
        .await
        .unwrap()
        .starts_with("tc "));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_cidrs_refuse_and_count_other_sources() {
    let t = TestTarget::start("127.10.1.91:0", "t", false).await;
    let port = free_port("127.10.1.90");
    let mut spec = lb(&[("a", "127.10.1.90")], port, "g");
    spec.listeners[0].allowed_cidrs = Some(vec!["127.20.0.0/16".parse().unwrap()]);
    let b = Balancer::start(&[spec], &[group("g", &[(&t, "a")], 100)])
        .await
        .unwrap();
    all_healthy(&b, 1, &[&t]).await;
    let node: SocketAddr = format!("127.10.1.90:{port}").parse().unwrap();
    assert!(hello("127.20.0.12", 0, node).await.is_ok());
    assert!(hello("127.99.0.12", 0, node).await.is_err(), "refused");
    let refused = b.status().load_balancers[0].nodes[0].refused;
    assert_eq!(refused, 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_crosses_intact_both_ways_with_half_close() {
    let t = TestTarget::start("127.10.1.101:0", "t", false).await;
    let port = free_port("127.10.1.100");
    let b = Balancer::start(
        &[lb(&[("a", "127.10.1.100")], port, "g")],
        &[group("g", &[(&t, "a")], 100)],
    )
    .await
    .unwrap();
    let node: SocketAddr = format!("127.10.1.100:{port}").parse().unwrap();
    let mut s = TcpStream::connect(node).await.unwrap();
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while !greeting.ends_with(b"\n") {
        s.read_exact(&mut byte).await.unwrap();
        greeting.push(byte[0]);
    }
    // 4 MiB: well past the 16 KiB that switches a flow to splice.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let (mut r, mut w) = s.into_split();
    let send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&send).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    r.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "bytes changed on the way");
    let stats = b.status();
    assert_eq!(stats.targets[0].bytes_to_target, data.len() as u64);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holds_at_most_max_connections_per_source() {
    let t1 = TestTarget::start("127.10.1.81:0", "t1", false).await;
    let port = free_port("127.10.1.80");
    let mut spec = lb(&[("a", "127.10.1.80")], port, "g");
    spec.max_connections_per_source = 2;
    let b = Balancer::start(&[spec], &[group("g", &[(&t1, "a")], 100)])
        .await
        .unwrap();
    all_healthy(&b, 1, &[&t1]).await;
    let node: SocketAddr = format!("127.10.1.80:{port}").parse().unwrap();
    // Two flows from one client, each greeted by the target, and held open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = TcpSocket::new_v4().unwrap();
        s.bind("127.20.8.1:0".parse().unwrap()).unwrap();
        let mut stream = s.connect(node).await.unwrap();
        let mut greeting = [0u8; 2];
        stream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"t1");
        held.push(stream);
    }
    // The third from that client is closed at once; another client is served.
    let third = hello("127.20.8.1", 0, node).await;
    assert!(third.is_err(), "a third flow from one source: {third:?}");
    assert!(hello("127.20.8.2", 0, node)
        .await
        .unwrap()
        .starts_with("t1 "));
    let refused = b.status().load_balancers[0].nodes[0].refused;
    assert!(refused >= 1, "counted as refused: {refused}");
    // A flow that ends gives its place back (once the node has seen the close).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match hello("127.20.8.1", 0, node).await {
            Ok(greeting) => break assert!(greeting.starts_with("t1 ")),
            Err(e) => assert!(Instant::now() < deadline, "no place again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_wide_flow_limit_holds_across_nodes() {
    let t1 = TestTarget::start("127.10.1.91:0", "t1", false).await;
    let t2 = TestTarget::start("127.10.2.91:0", "t2", false).await;
    let port = free_port("127.10.1.90");
    let b = Balancer::start_limited(
        &[lb(&[("a", "127.10.1.90"), ("c", "127.10.2.90")], port, "g")],
        &[group("g", &[(&t1, "a"), (&t2, "c")], 100)],
        proxyfleet_lb::Limits {
            flows: Some(2),
            pipes: None,
        },
    )
    .await
    .unwrap();
    all_healthy(&b, 2, &[&t1, &t2]).await;
    let node_a: SocketAddr = format!("127.10.1.90:{port}").parse().unwrap();
    let node_c: SocketAddr = format!("127.10.2.90:{port}").parse().unwrap();
    let open = |node: SocketAddr, source: &'static str| async move {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
        s.connect(node).await.unwrap()
    };
    let greeting = |mut s: TcpStream| async move {
        let mut g = [0u8; 2];
        let r = tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut g)).await;
        (r.is_ok(), s)
    };
    let (ok_a, held_a) = greeting(open(node_a, "127.20.9.1").await).await;
    let (ok_c, _held_c) = greeting(open(node_c, "127.20.9.2").await).await;
    assert!(ok_a && ok_c, "one flow on each node");
    // A third, on either node, waits: the process holds two flows at most.
    let third = open(node_a, "127.20.9.3").await;
    let (served, third) = greeting(third).await;
    assert!(!served, "a third flow beyond the process's limit must wait");
    drop(held_a);
    let mut third = third;
    let mut g = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut g))
        .await
        .expect("served once a flow ended")
        .unwrap();
    assert_eq!(&g, b"t1");
}
