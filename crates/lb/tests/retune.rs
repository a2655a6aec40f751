//! A running target group takes a new health check and deregistration delay
//! (`Balancer::retune`, what `proxyfleet apply` does): checks run at the new interval from
//! their next round, and a drain that begins afterwards ends after the new delay. Addresses:
//! 127.98.7.0/24.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{all_healthy, free_port, group, hello, lb, wait_for, TestTarget};
use proxyfleet_lb::Balancer;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retuned_group_checks_at_its_new_interval_and_drains_for_its_new_delay() {
    let target = TestTarget::start("127.98.7.11:0", "t1", false).await;
    let port = free_port("127.98.7.10");
    let mut slow = group("g", &[(&target, "a")], 100);
    slow.deregistration_delay = Duration::from_secs(30);
    let balancer = Balancer::start(&[lb(&[("a", "127.98.7.10")], port, "g")], &[slow.clone()])
        .await
        .unwrap();
    all_healthy(&balancer, 1, &[&target]).await;
    // Checks every 2 s now: none more in the next second.
    let mut sparse = slow.clone();
    sparse.health_check.interval = Duration::from_secs(2);
    sparse.health_check.timeout = Duration::from_secs(1);
    assert!(balancer.retune(&sparse));
    // The round under way finishes at the old interval.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = target.seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = target.seen.lock().unwrap().len() - before;
    assert!(during <= 1, "{during} checks in 1 s at a 2 s interval");
    // Back to 100 ms, and a 200 ms deregistration delay.
    let mut quick = slow.clone();
    quick.deregistration_delay = Duration::from_millis(200);
    assert!(balancer.retune(&quick));
    let counted = target.seen.lock().unwrap().len();
    wait_for("checks at 100 ms again", Duration::from_secs(5), || {
        target.seen.lock().unwrap().len() >= counted + 5
    })
    .await;

    // A flow open through the node; the target deregistered: the flow is closed after the
    // new delay, not the 30 s it started with.
    let node: SocketAddr = format!("127.98.7.10:{port}").parse().unwrap();
    let mut flow = tokio::net::TcpStream::connect(node).await.unwrap();
    let mut greeting = [0u8; 3];
    flow.read_exact(&mut greeting).await.unwrap();
    assert!(hello("127.98.7.20", 0, node).await.is_ok());
    let began = Instant::now();
    let drained = balancer.deregister("g", &target.addr.to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("drained within the new delay")
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), flow.read_to_end(&mut rest)).await;
    println!(
        "retune: 2 s interval -> {during} check(s) in 1 s; drain after the retuned 200 ms delay took {} ms",
        began.elapsed().as_millis()
    );
    assert!(began.elapsed() < Duration::from_secs(3));
    assert!(
        !balancer.retune(&common::group("other", &[], 100)),
        "no such group"
    );
}
