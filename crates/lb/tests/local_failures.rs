//! A checker's own resource failure is never the target's: with this process out of file
//! descriptors, health checks cannot even open a socket — the target must stay Healthy, and
//! once descriptors are back a real failure is still seen. Its own test binary, because it
//! lowers the process's open-file limit.

use std::time::{Duration, Instant};

use proxyfleet_lb::spec::{
    HealthCheckSpec, ListenerSpec, LoadBalancerSpec, NodeSpec, TargetGroupSpec, TargetSpec,
    TargetType,
};
use proxyfleet_lb::{Balancer, Health};
use tokio::net::TcpListener;

fn health(b: &Balancer, target: &str) -> Vec<Health> {
    b.target_health("g", target)
        .into_iter()
        .map(|(_, h)| h)
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens /dev/null until the process has no descriptor left (under a lowered soft limit).
fn exhaust_descriptors() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("unexpected error while exhausting descriptors: {e}"),
        }
        assert!(held.len() < 100_000, "the open-file limit was not lowered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_out_of_descriptors_does_not_fail_a_healthy_target() {
    let listener = TcpListener::bind("127.10.9.21:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let mut g = TargetGroupSpec::new("g", 0, TargetType::Instance);
    g.health_check = HealthCheckSpec {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(50),
        ..HealthCheckSpec::default()
    };
    g.targets = vec![TargetSpec {
        address: target,
        zone: "a".into(),
    }];
    let port = std::net::TcpListener::bind("127.10.9.20:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lb = LoadBalancerSpec {
        name: "front".into(),
        nodes: vec![NodeSpec {
            zone: "a".into(),
            address: "127.10.9.20".parse().unwrap(),
        }],
        cross_zone: false,
        listeners: vec![ListenerSpec {
            port,
            target_group: "g".into(),
            allowed_cidrs: None,
        }],
        max_connections: 100,
        max_connections_per_source: 100,
        idle_timeout: Duration::from_secs(30),
        bind_before_owned: false,
    };
    let b = Balancer::start(&[lb], &[g]).await.unwrap();
    let id = target.to_string();
    wait_for("healthy", Duration::from_secs(5), || {
        health(&b, &id) == [Health::Healthy]
    })
    .await;

    // A soft limit just above what is open now, then every descriptor taken.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer; only this test binary's process.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let lowered = libc::rlimit {
        rlim_cur: open_now + 32,
        rlim_max: limit.rlim_max,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let held = exhaust_descriptors();
    // 20 check intervals with no descriptor to check with: never Unhealthy.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            health(&b, &id),
            [Health::Healthy],
            "a local EMFILE counted against the target"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "held {} descriptors for 1 s of 50 ms checks: the target stayed Healthy",
        held.len()
    );
    drop(held);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

    // Real failures still count.
    server.abort();
    wait_for(
        "unhealthy once the target is gone",
        Duration::from_secs(5),
        || health(&b, &id) == [Health::Unhealthy],
    )
    .await;
}
