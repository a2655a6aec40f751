//! Health checks keep descriptors of their own (issue 12): with the process's open-file
//! limit just big enough for the flow cap, the checks in flight and the splice pipe budget —
//! the budget `up` derives — and every flow open and moving bulk data (so each would splice,
//! a pipe per direction, if it could), health checks still run and pass: none fails for want
//! of a descriptor and no target leaves service. Its own test binary, because it lowers the
//! process's open-file limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxyfleet_lb::spec::{
    HealthCheckSpec, ListenerSpec, LoadBalancerSpec, NodeSpec, TargetGroupSpec, TargetSpec,
    TargetType,
};
use proxyfleet_lb::{Balancer, Health, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Flows at the process cap.
const FLOWS: usize = 16;
/// splice pipes the budget allows (fewer than the 2 x FLOWS the flows would take).
const PIPES: usize = 2;
/// Bytes each flow sends and gets back: several full 16 KiB reads, so every direction is
/// bulk and asks for a pipe.
const BULK: usize = 256 * 1024;

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn set_soft_limit(soft: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers; only this test binary's process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let before = limit.rlim_cur;
        limit.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        before
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_flow_open_and_bulk_health_checks_still_find_descriptors() {
    // An echo target that counts the connections it accepts (flows and checks alike).
    let listener = TcpListener::bind("127.95.1.11:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counted = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut g = TargetGroupSpec::new("g", 0, TargetType::Instance);
    g.health_check = HealthCheckSpec {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..HealthCheckSpec::default()
    };
    g.targets = vec![TargetSpec {
        address: target,
        zone: "a".into(),
    }];
    let port = std::net::TcpListener::bind("127.95.1.10:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lb = LoadBalancerSpec {
        name: "front".into(),
        nodes: vec![NodeSpec {
            zone: "a".into(),
            address: "127.95.1.10".parse().unwrap(),
        }],
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
    };
    let limits = Limits {
        flows: Some(FLOWS),
        pipes: Some(PIPES),
    };
    let b = Balancer::start_limited(&[lb], &[g], limits).await.unwrap();
    let id = target.to_string();
    let health = |b: &Balancer| -> Vec<Health> {
        b.target_health("g", &id)
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(&b) != [Health::Healthy] {
        assert!(Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let node: SocketAddr = format!("127.95.1.10:{port}").parse().unwrap();

    // What this process may hold from now on: per flow its two balancer sockets, and here in
    // the same process the client's socket and the target's; the pipes; one client waiting in
    // the backlog; one check in flight (the balancer's socket and the target's); and a few
    // for the runtime. Exactly the reserve `up` keeps for checks, scaled to this one target.
    let soft = open_descriptors() + 4 * FLOWS as u64 + 2 * PIPES as u64 + 1 + 2 + 4;
    let before = set_soft_limit(soft);

    let connect = |i: usize| async move {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(
            format!("127.95.2.{}", i + 1).parse().unwrap(),
            0,
        ))
        .unwrap();
        s.connect(node).await.unwrap()
    };
    let bulk: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
    let mut flows: Vec<TcpStream> = Vec::new();
    for i in 0..FLOWS {
        let mut s = connect(i).await;
        let (mut r, mut w) = s.split();
        let mut back = vec![0u8; BULK];
        let (wrote, read) = tokio::join!(w.write_all(&bulk), r.read_exact(&mut back));
        wrote.unwrap();
        read.unwrap();
        assert!(back == bulk, "flow {i}: the bulk data came back intact");
        flows.push(s);
    }
    // One more waits in the backlog (its client socket is counted above).
    let mut extra = connect(FLOWS).await;
    extra.write_all(b"ping").await.unwrap();

    // 15 check intervals with every flow open: checks run, pass, and none is starved.
    let checks_before = accepted.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if health(&b) != [Health::Healthy] {
            set_soft_limit(before);
            panic!(
                "the target left service at the flow cap: {:?}",
                b.status().targets
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let checks = accepted.load(Ordering::SeqCst) - checks_before;
    let status = b.status();
    let not_run = status.targets[0].checks_not_run;
    // The flow cap still holds, and the flows hold every pipe of the budget.
    let mut one = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(300), extra.read(&mut one)).await;
    let spare_pipes = b.spare_pipes();
    set_soft_limit(before);
    println!(
        "{FLOWS} bulk flows open (cap {FLOWS}, {PIPES} pipes) under a soft limit of {soft}: \
         {checks} health checks reached the target in 1.5 s, {not_run} could not run"
    );
    assert_eq!(not_run, 0, "a health check found no descriptor");
    assert!(checks >= 10, "only {checks} checks in 15 intervals");
    assert!(
        waited.is_err(),
        "a flow beyond the cap must wait: {waited:?}"
    );
    assert_eq!(
        spare_pipes,
        Some(0),
        "the bulk flows took every pipe of the budget"
    );
    assert_eq!(status.load_balancers[0].nodes[0].active, FLOWS as u64);
    drop(flows);
    drop(extra);
    server.abort();
    b.shutdown().await;
}
