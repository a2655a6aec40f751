//! Issue 12's first probe, as a test: one client opening 10,000 idle connections to node a of
//! a running tier. It gets `max_connections_per_source` of them (a quarter of the node); the
//! rest are closed at once. Other clients keep being served through both nodes with no
//! failure, no instance is replaced, and the descriptors the flood costs `up` are printed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::up::{proxy_stack, Up};
use testkit::client::connect_from;
use testkit::load::Load;
use testkit::origin::Origin;
use testkit::process::raise_open_files;

const FLOOD: usize = 10_000;

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn one_client_with_ten_thousand_connections_takes_a_quarter_of_a_node_and_nothing_else() {
    let limit = raise_open_files(FLOOD as u64 + 4_096);
    if limit < FLOOD as u64 + 1_024 {
        eprintln!(
            "SKIPPED: the flood needs {} open files (the limit is {limit})",
            FLOOD + 1_024
        );
        return;
    }
    let origin = Origin::start("127.30.0.91");
    // max_connections 4,000 per node: a quarter, 1,000, per source.
    let stack = proxy_stack(91, 2, 2, 2).replace(
        "  front: { zones: [a, c] }",
        "  front: { zones: [a, c], max_connections: 4000 }",
    );
    let up = Up::start(Some(&stack));
    testkit::wait::until_true("2 healthy targets", Duration::from_secs(20), || {
        up.healthy_targets() == 2
    });
    let before: Vec<String> = up.in_service().into_iter().map(|i| i.0).collect();
    let node_a: SocketAddr = "127.91.1.10:3128".parse().unwrap();
    let node_c: SocketAddr = "127.91.2.10:3128".parse().unwrap();
    let url = format!("{}/small", origin.url());
    let load_a = Load::start(node_a, &["127.20.91.2", "127.20.91.3"], &url);
    let load_c = Load::start(node_c, &["127.20.91.4"], &url);
    load_a.wait_for_more(100, Duration::from_secs(20));
    let up_fds_before = descriptors(up.child.pid());

    // The flood: every connect completes (the kernel accepts), most are closed at once.
    let flood: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|_| connect_from("127.20.91.1", node_a))
        .collect();
    let held = testkit::wait::until("the flood to settle", Duration::from_secs(30), || {
        let status = up.status();
        let node = &status["load_balancers"][0]["nodes"][0];
        let refused = node["refused"].as_u64()?;
        (refused as usize >= FLOOD - 1_000).then_some(refused)
    });
    let status = up.status();
    let active = status["load_balancers"][0]["nodes"][0]["active"]
        .as_u64()
        .unwrap();
    let up_fds = descriptors(up.child.pid());
    load_a.wait_for_more(200, Duration::from_secs(20));
    load_c.wait_for_more(200, Duration::from_secs(20));
    let (report_a, report_c) = (load_a.stop(), load_c.stop());
    println!(
        "flood of {FLOOD} from one client: {held} refused, node a active {active}; up's \
         descriptors {up_fds_before} -> {up_fds}; other clients: {} ok / {} failed via a, {} ok / \
         {} failed via c",
        report_a.ok,
        report_a.failed.len(),
        report_c.ok,
        report_c.failed.len()
    );
    assert!(
        active <= 1_000 + 10,
        "node a holds at most a quarter for one source: {active}"
    );
    assert!(report_a.failed.is_empty(), "{:?}", report_a.failed);
    assert!(report_c.failed.is_empty(), "{:?}", report_c.failed);
    let after: Vec<String> = up.in_service().into_iter().map(|i| i.0).collect();
    assert_eq!(before, after, "no instance was replaced");
    drop(flood);
}
