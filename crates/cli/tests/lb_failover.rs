//! The load balancer of `proxyfleet up` in front of real `proxyfleet proxy` processes:
//! a target killed under a steady stream of new connections costs none of them, and a
//! SIGSTOPped (hung) target is found by the HTTP health check's timeout.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::BIN;
use testkit::client::connect_from;
use testkit::process::Owned;

/// (started, ended) of a request, in ms since the test's epoch.
type Span = (u128, u128);

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

/// One request on a new connection through the balancer, to the proxy's health endpoint.
fn one_request(node: SocketAddr, source: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = connect_from(source, node);
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        Ok(reply.starts_with(b"HTTP/1.1 200 OK"))
    };
    attempt().unwrap_or(false)
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
    let mut fleet = start_fleet(
        41,
        "{ protocol: http, path: /healthz, interval: 300ms, timeout: 300ms }",
    );
    wait_healthy(&mut fleet.up, 4);
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    // (started, ended) of every failed request, in ms since `epoch`.
    let failures = Arc::new(Mutex::new(Vec::<Span>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, ok, failures, node) =
                (stop.clone(), ok.clone(), failures.clone(), fleet.node_a);
            std::thread::spawn(move || {
                let source = format!("127.20.1.{}", w + 1);
                while !stop.load(Ordering::Relaxed) {
                    let started = epoch.elapsed().as_millis();
                    if one_request(node, &source) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push((started, epoch.elapsed().as_millis()));
                    }
                }
            })
        })
        .collect();
    testkit::wait::until_true("load running", Duration::from_secs(10), || {
        ok.load(Ordering::Relaxed) > 200
    });
    // kill -9 the zone-a target: node a's own zone is left with none and falls back to c.
    fleet.targets[0].signal(libc::SIGKILL);
    fleet.targets[0].wait_exit(Duration::from_secs(5));
    let dead_at = epoch.elapsed().as_millis();
    let before = ok.load(Ordering::Relaxed);
    testkit::wait::until_true("load after the kill", Duration::from_secs(20), || {
        ok.load(Ordering::Relaxed) > before + 1000
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let (in_flight, after): (Vec<Span>, Vec<Span>) = failures
        .into_iter()
        .partition(|(started, _)| *started < dead_at);
    println!(
        "{} requests on new connections succeeded; {} failed that were already on the dying target (an L4 balancer cannot save those); {} failed that started after its death",
        ok.load(Ordering::Relaxed),
        in_flight.len(),
        after.len()
    );
    assert!(
        after.is_empty(),
        "new connections failed after the target died: {after:?} (died at {dead_at} ms)"
    );
    // Flows the kernel had handed to the target before the process was gone: a few, within
    // the few milliseconds of its death.
    assert!(
        in_flight.iter().all(|(started, _)| dead_at - started < 100),
        "{in_flight:?} (died at {dead_at} ms)"
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
    for _ in 0..20 {
        assert!(one_request(fleet.node_a, "127.20.2.1"));
    }
    fleet.targets[1].signal(libc::SIGCONT);
}
