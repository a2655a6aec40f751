//! The load balancer of `proxyfleet up` in front of real `proxyfleet proxy` processes:
//! a target killed under a steady stream of new connections costs none of them, and a
//! SIGSTOPped (hung) target is found by the HTTP health check's timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::BIN;
use testkit::load::Load;
use testkit::origin::Origin;
use testkit::process::Owned;

/// A free port on `ip` (the kernel's choice; the address is this test's own).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `proxyfleet proxy` target on `addr` that admits everyone.
fn start_target(dir: &std::path::Path, addr: SocketAddr) -> Owned {
    let conf = dir.join(format!("target-{}.conf", addr.ip()));
    std::fs::write(
        &conf,
        format!("http_port {addr}\nacl all_v4 src 0.0.0.0/0\nhttp_access allow all_v4\naccess_log none\ndns_nameservers 127.0.0.1\nshutdown_lifetime 0 seconds\n"),
    )
    .unwrap();
    let mut child = Owned::spawn(BIN, &["proxy", "-f", conf.to_str().unwrap()]);
    child.wait_stdout("the target to listen", common::START, |l| {
        l.contains("serving on").then_some(())
    });
    child
}

struct Fleet {
    up: Owned,
    targets: Vec<Owned>,
    node_a: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Fleet {
    /// `up` stops gracefully, so it removes what it set up (its firewall table).
    fn drop(&mut self) {
        self.up.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.up.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `up` with one load balancer (nodes in zones a and c) over two proxies, one per zone.
fn start_fleet(net: u8, health: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(&format!("127.{net}.1.11"));
    let t_a: SocketAddr = format!("127.{net}.1.11:{port}").parse().unwrap();
    let t_c: SocketAddr = format!("127.{net}.2.11:{port}").parse().unwrap();
    let lb_port = free_port(&format!("127.{net}.1.10"));
    let targets = vec![start_target(dir.path(), t_a), start_target(dir.path(), t_c)];
    let stack = format!(
        "zones:\n  a: {{ subnet: 127.{net}.1.0/24 }}\n  c: {{ subnet: 127.{net}.2.0/24 }}\n\
         load_balancers:\n  front: {{ zones: [a, c] }}\n\
         listeners:\n  - {{ load_balancer: front, port: {lb_port}, protocol: tcp, target_group: proxies }}\n\
         target_groups:\n  proxies:\n    protocol: tcp\n    port: {port}\n    target_type: ip\n    deregistration_delay: 1s\n\
         \x20   health_check: {health}\n\
         \x20   targets:\n      - {{ address: 127.{net}.1.11 }}\n      - {{ address: 127.{net}.2.11 }}\n"
    );
    let file = dir.path().join("stack.yaml");
    std::fs::write(&file, stack).unwrap();
    let state = dir.path().join("state");
    let mut up = Owned::spawn(
        BIN,
        &[
            "up",
            "-f",
            file.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let node_a: SocketAddr = up.wait_stdout("node a", common::START, |l| {
        l.strip_prefix("proxyfleet up: load balancer front node a listening on ")?
            .parse()
            .ok()
    });
    Fleet {
        up,
        targets,
        node_a,
        _dir: dir,
    }
}

fn wait_healthy(up: &mut Owned, count: usize) {
    testkit::wait::until_true(
        "targets healthy on every node",
        Duration::from_secs(15),
        || {
            let turned_healthy =
                |l: &&String| l.contains("target health changed") && l.contains("to=\"healthy\"");
            up.stderr().iter().filter(turned_healthy).count() >= count
        },
    );
}

#[test]
fn killing_a_target_under_load_fails_no_new_connection() {
    let origin = Origin::start("127.30.0.41");
    let mut fleet = start_fleet(
        41,
        "{ protocol: http, path: /healthz, interval: 300ms, timeout: 300ms }",
    );
    wait_healthy(&mut fleet.up, 4);
    let url = format!("{}/small", origin.url());
    let sources = ["127.20.1.1", "127.20.1.2", "127.20.1.3", "127.20.1.4"];
    let load = Load::start(fleet.node_a, &sources, &url);
    load.wait_for_more(200, Duration::from_secs(10));
    // kill -9 the zone-a target: node a's own zone is left with none and falls back to c.
    fleet.targets[0].signal(libc::SIGKILL);
    fleet.targets[0].wait_exit(Duration::from_secs(5));
    let dead_at = load.now();
    load.wait_for_more(1000, Duration::from_secs(20));
    let report = load.stop();
    let after = report.failed_from(dead_at);
    let in_flight = report.failed_before(dead_at);
    println!(
        "{} requests on new connections succeeded; {} failed that were already on the dying target (an L4 balancer cannot save those); {} failed that started after its death",
        report.ok,
        in_flight.len(),
        after.len()
    );
    assert!(
        after.is_empty(),
        "new connections failed after the target died: {after:?} (died at {dead_at:?})"
    );
    // Flows the kernel had handed to the target before the process was gone: a few, within
    // the few milliseconds of its death.
    assert!(
        in_flight
            .iter()
            .all(|f| dead_at - f.started < Duration::from_millis(100)),
        "{in_flight:?} (died at {dead_at:?})"
    );
    fleet.up.wait_stderr(
        "connection from the data path failed",
        Duration::from_secs(5),
    );
}

#[test]
fn a_stopped_target_is_found_by_the_http_check_timeout() {
    let mut fleet = start_fleet(
        42,
        "{ protocol: http, path: /healthz, interval: 300ms, timeout: 300ms }",
    );
    wait_healthy(&mut fleet.up, 4);
    fleet.targets[1].signal(libc::SIGSTOP);
    testkit::wait::until_true(
        "the stopped target marked unhealthy",
        Duration::from_secs(10),
        || {
            fleet
                .up
                .stderr()
                .iter()
                .any(|l| l.contains("to=\"unhealthy\"") && l.contains("timed out"))
        },
    );
    let line = fleet
        .up
        .stderr()
        .into_iter()
        .find(|l| l.contains("unhealthy"))
        .unwrap();
    assert!(line.contains("127.42.2.11"), "{line}");
    assert!(line.contains("timed out"), "{line}");
    // New flows from node a keep working (zone a's target is fine).
    let origin = Origin::start("127.30.0.42");
    let load = Load::start(
        fleet.node_a,
        &["127.20.2.1"],
        &format!("{}/small", origin.url()),
    );
    load.wait_for_more(20, Duration::from_secs(10));
    let report = load.stop();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    fleet.targets[1].signal(libc::SIGCONT);
}
