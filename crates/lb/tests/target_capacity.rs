//! A node never admits more flows than its targets take (issue 12): with
//! `target_max_connections`, a full target is passed by like an unhealthy one (next in the
//! flow's Maglev order, then the other zones' healthy targets), and when every target the
//! flow could use is full the flow is closed at once and counted. Real sockets: each target
//! counts the flows it holds (connections that sent a byte; health checks send none).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxyfleet_lb::spec::{
    HealthCheckSpec, ListenerSpec, LoadBalancerSpec, NodeSpec, TargetGroupSpec, TargetSpec,
    TargetType,
};
use proxyfleet_lb::{Balancer, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A target that says its name once a flow has sent a byte, then holds the flow until EOF,
/// keeping count of the flows it holds and the most it ever held.
struct CountingTarget {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl CountingTarget {
    async fn start(addr: &str, name: &'static str) -> CountingTarget {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (o, m) = (open.clone(), most.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (open, most) = (o.clone(), m.clone());
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    if !matches!(s.read(&mut byte).await, Ok(1)) {
                        return; // a health check: connect and close
                    }
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                    let mut rest = [0u8; 64];
                    while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        CountingTarget {
            addr,
            open,
            most,
            task,
        }
    }
}

impl Drop for CountingTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn group(targets: &[(&CountingTarget, &str)], cap: usize) -> TargetGroupSpec {
    let mut g = TargetGroupSpec::new("g", 0, TargetType::Instance);
    g.health_check = HealthCheckSpec {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..HealthCheckSpec::default()
    };
    g.target_max_connections = Some(cap);
    g.targets = targets
        .iter()
        .map(|(t, zone)| TargetSpec {
            address: t.addr,
            zone: zone.to_string(),
        })
        .collect();
    g
}

fn lb(nodes: &[(&str, &str)], port: u16) -> LoadBalancerSpec {
    LoadBalancerSpec {
        name: "front".into(),
        nodes: nodes
            .iter()
            .map(|(z, a)| NodeSpec {
                zone: z.to_string(),
                address: a.parse().unwrap(),
            })
            .collect(),
        cross_zone: false,
        listeners: vec![ListenerSpec {
            port,
            target_group: "g".into(),
            allowed_cidrs: None,
        }],
        max_connections: 1000,
        max_connections_per_source: 1000,
        idle_timeout: Duration::from_secs(30),
        bind_before_owned: false,
    }
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn all_healthy(b: &Balancer, targets: &[&CountingTarget]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !targets.iter().all(|t| {
        let h = b.target_health("g", &t.addr.to_string());
        !h.is_empty() && h.iter().all(|(_, h)| *h == Health::Healthy)
    }) {
        assert!(Instant::now() < deadline, "targets never turned healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a flow from `source` and sends a byte: `Ok((name, stream))` when a target answered,
/// `Err(how long the node took to close it))` when it was closed unanswered.
async fn flow(source: &str, node: SocketAddr) -> Result<(String, TcpStream), Duration> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut s = socket.connect(node).await.unwrap();
    let t = Instant::now();
    let _ = s.write_all(b"x").await;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == b'\n' => {
                return Ok((String::from_utf8(line).unwrap(), s));
            }
            Ok(Ok(1)) => line.push(byte[0]),
            Ok(_) => return Err(t.elapsed()),
            Err(_) => panic!("neither served nor closed within 5 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_beyond_every_targets_cap_are_closed_at_once_and_targets_never_see_more() {
    const N: usize = 5;
    const K: usize = 3;
    let t1 = CountingTarget::start("127.94.1.11:0", "t1").await;
    let t2 = CountingTarget::start("127.94.1.12:0", "t2").await;
    let port = free_port("127.94.1.10");
    let b = Balancer::start(
        &[lb(&[("a", "127.94.1.10")], port)],
        &[group(&[(&t1, "a"), (&t2, "a")], N)],
    )
    .await
    .unwrap();
    all_healthy(&b, &[&t1, &t2]).await;
    let node: SocketAddr = format!("127.94.1.10:{port}").parse().unwrap();

    let mut held = Vec::new();
    let mut refused = Vec::new();
    for i in 0..2 * N + K {
        match flow(&format!("127.94.2.{}", i + 1), node).await {
            Ok((name, s)) => held.push((name, s)),
            Err(took) => refused.push(took),
        }
    }
    let on = |name: &str| held.iter().filter(|(n, _)| n == name).count();
    println!(
        "{} flows against 2 targets of cap {N}: {} served (t1 {}, t2 {}), {} closed after {:?}",
        2 * N + K,
        held.len(),
        on("t1"),
        on("t2"),
        refused.len(),
        refused
    );
    assert_eq!(
        (on("t1"), on("t2")),
        (N, N),
        "each target filled to its cap"
    );
    assert_eq!(refused.len(), K, "the extra flows are refused");
    assert!(
        refused.iter().all(|t| *t < Duration::from_millis(500)),
        "refused at once, not after a timeout: {refused:?}"
    );
    assert!(t1.most.load(Ordering::SeqCst) <= N && t2.most.load(Ordering::SeqCst) <= N);
    let status = b.status();
    assert_eq!(status.load_balancers[0].nodes[0].full, K as u64);
    assert_eq!(status.load_balancers[0].nodes[0].failed, 0);
    for t in &status.targets {
        assert_eq!(t.max_flows, Some(N as u64));
        assert!(
            t.healthy_everywhere(),
            "a full target is not unhealthy: {t:?}"
        );
    }

    // A flow that ends gives its target's place back.
    let (name, s) = held.pop().unwrap();
    drop(s);
    let target = if name == "t1" { &t1 } else { &t2 };
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        // The node frees the place once it has seen the close and closed its side.
        if target.open.load(Ordering::SeqCst) < N {
            if let Ok((name, s)) = flow("127.94.2.200", node).await {
                break (name, s);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no place again after a flow ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again.0, name, "the freed place is the one taken");
    assert!(t1.most.load(Ordering::SeqCst) <= N && t2.most.load(Ordering::SeqCst) <= N);
    drop(held);
    drop(again);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_zone_is_full_overflows_to_the_other_zone_then_refuses() {
    let a1 = CountingTarget::start("127.94.3.11:0", "a1").await;
    let c1 = CountingTarget::start("127.94.4.11:0", "c1").await;
    let port = free_port("127.94.3.10");
    let b = Balancer::start(
        &[lb(&[("a", "127.94.3.10"), ("c", "127.94.4.10")], port)],
        &[group(&[(&a1, "a"), (&c1, "c")], 2)],
    )
    .await
    .unwrap();
    all_healthy(&b, &[&a1, &c1]).await;
    let node_a: SocketAddr = format!("127.94.3.10:{port}").parse().unwrap();
    let mut served = Vec::new();
    for i in 0..4 {
        let (name, s) = flow(&format!("127.94.5.{}", i + 1), node_a)
            .await
            .expect("room in zone a, then in zone c");
        served.push((name, s));
    }
    let names: Vec<&str> = served.iter().map(|(n, _)| n.as_str()).collect();
    println!("node a, cross_zone off, caps 2: flows went to {names:?}");
    assert_eq!(&names[..2], ["a1", "a1"], "its own zone first");
    assert_eq!(
        &names[2..],
        ["c1", "c1"],
        "then the other zone's healthy target"
    );
    let took = flow("127.94.5.9", node_a)
        .await
        .expect_err("both zones are full");
    assert!(
        took < Duration::from_millis(500),
        "refused at once: {took:?}"
    );
    assert!(a1.most.load(Ordering::SeqCst) <= 2 && c1.most.load(Ordering::SeqCst) <= 2);
    drop(served);
    b.shutdown().await;
}
