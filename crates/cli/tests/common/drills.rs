//! Scenarios of the fault drills that more than one stack runs: connectivity end to end
//! (drill 1) and a killed instance under load (drill 3). The built-in stack runs them with
//! `proxyfleet proxy` instances, the Squid stack (drill 9) unchanged with Debian's squid.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use testkit::client::curl_with_env;
use testkit::load::Load;
use testkit::origin::Origin;

use super::up::{s, Up};

/// An InService instance: (id, zone, address).
pub type InService = (String, String, String);

/// Drill 1: through every node (`nodes`, `ADDRESS:PORT`), 100 requests on new connections by
/// a real client pointed at the node with `http_proxy`, from app addresses 127.20.0.x: all
/// succeed, the service sees every instance's address, and every instance's access log shows
/// the app clients' addresses. With `tls`, HTTPS through CONNECT works through every node.
pub fn connectivity(up: &Up, nodes: &[String], origin: &Origin, tls: Option<&Origin>) {
    let instances = up.in_service();
    let seen_before = origin.seen().len();
    let url = format!("{}/small", origin.url());
    for i in 0..100 {
        let node = &nodes[i % nodes.len()];
        let source = format!("127.20.0.{}", 5 + i % 4);
        let proxy = format!("http://{node}");
        let r = curl_with_env(&[("http_proxy", &proxy)], &["--interface", &source, &url]);
        assert!(
            r.success && r.stdout.len() == 100,
            "request {i} via {node}: {r:?}"
        );
    }
    let mut per_peer = BTreeMap::<String, usize>::new();
    for seen in &origin.seen()[seen_before..] {
        *per_peer.entry(seen.peer.ip().to_string()).or_default() += 1;
    }
    println!("drill 1: 100/100 requests through {nodes:?} succeeded; the service saw {per_peer:?}");
    let addresses: BTreeSet<String> = instances.iter().map(|i| i.2.clone()).collect();
    let peers: BTreeSet<String> = per_peer.keys().cloned().collect();
    assert_eq!(
        peers, addresses,
        "the service sees every instance, and only them"
    );

    // Each proxy logged the application servers' own addresses: the client IP is preserved
    // end to end (by the balancer, or by its PROXY v2 header).
    for (id, _, address) in &instances {
        let log = format!("{}/access.log", s(&up.instance(id)["dir"]));
        testkit::wait::until_true(
            &format!("{id}'s access log naming an app client"),
            Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                (5..9).any(|h| text.contains(&format!(" 127.20.0.{h} TCP_MISS/200 ")))
            },
        );
        println!("drill 1: {id} ({address}) logged the app clients' addresses");
    }

    if let Some(tls) = tls {
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), tls.cert_pem.as_deref().unwrap()).unwrap();
        let url = format!("{}/bytes/20000", tls.url());
        for node in nodes {
            let proxy = format!("http://{node}");
            let r = curl_with_env(
                &[("https_proxy", &proxy)],
                &[
                    "--interface",
                    "127.20.0.9",
                    "--cacert",
                    ca.path().to_str().unwrap(),
                    &url,
                ],
            );
            assert!(
                r.success && r.stdout.len() == 20_000,
                "HTTPS via CONNECT through {node}: {r:?}"
            );
        }
        println!(
            "drill 1: HTTPS through CONNECT via every node: certificate verified, 20000 bytes each"
        );
    }
}

/// Drill 3: kill -9 the instance of `zone` while four app servers make requests on new
/// connections through `node` (that zone's node). Returns the replacement.
pub fn instance_killed_under_load(
    up: &mut Up,
    zone: &str,
    node: SocketAddr,
    origin: &Origin,
) -> InService {
    let victim = up
        .in_service()
        .into_iter()
        .find(|i| i.1 == zone)
        .expect("an instance in the zone");
    let pid = up.pid_of(&victim.0);
    let url = format!("{}/small", origin.url());
    let sources = ["127.20.3.1", "127.20.3.2", "127.20.3.3", "127.20.3.4"];
    let load = Load::start(node, &sources, &url);
    load.wait_for_more(200, Duration::from_secs(20));

    let kill_sent = load.now();
    // SAFETY: kill(2) on the instance's pid, which `up` (our child) started and still owns.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // It is dead when its sockets are closed: once it is a zombie (or reaped). Until then its
    // listener still accepts, so a request started a moment after kill() may yet land in it.
    testkit::wait::until_true("the killed process gone", Duration::from_secs(5), || {
        is_dead(pid)
    });
    let killed_at = load.now();
    let replacement = testkit::wait::until(
        &format!("a replacement in zone {zone}"),
        Duration::from_secs(20),
        || {
            up.in_service()
                .into_iter()
                .find(|i| i.1 == zone && i.0 != victim.0)
        },
    );
    let took = load.now() - kill_sent;
    load.wait_for_more(300, Duration::from_secs(20));
    let report = load.stop();
    let after = report.failed_from(killed_at);
    let in_flight = report.failed_before(killed_at);
    println!(
        "drill 3: {} killed; replacement {} InService {} ms after the kill; {} requests on new connections succeeded, {} started after the kill failed, {} already inside the dying process failed",
        victim.0,
        replacement.0,
        took.as_millis(),
        report.ok,
        after.len(),
        in_flight.len()
    );
    let timeline: Vec<String> = up
        .child
        .stderr()
        .into_iter()
        .filter(|l| l.contains(&victim.0) || l.contains(&replacement.0))
        .collect();
    assert!(
        took < Duration::from_secs(2),
        "replacement took {took:?}: {timeline:#?}"
    );
    assert!(after.is_empty(), "new connections failed: {after:?}");
    // Requests the dead process had already accepted: only within moments of its death.
    assert!(
        in_flight
            .iter()
            .all(|f| killed_at - f.started < Duration::from_millis(200)),
        "{in_flight:?} (killed at {killed_at:?})"
    );

    // Its life, as the controller logged it: Unhealthy, then Terminating, then Terminated.
    let states: Vec<String> = up
        .child
        .stderr()
        .into_iter()
        .filter(|l| l.contains("instance state changed") && l.contains(&victim.0))
        .collect();
    let position = |needle: &str| {
        states
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} for {}: {states:#?}", victim.0))
    };
    let unhealthy = position("health=Unhealthy");
    let terminating = position("lifecycle=\"Terminating\"");
    let terminated = position("lifecycle=\"Terminated\"");
    assert!(
        unhealthy <= terminating && terminating < terminated,
        "{states:#?}"
    );

    // The activity history: the termination with its cause, and the launch.
    let activity = up.activity();
    let list = activity.as_array().unwrap();
    let termination = list
        .iter()
        .find(|a| s(&a["description"]).contains(&format!("Terminating instance {}", victim.0)))
        .expect("the termination is recorded");
    assert!(
        s(&termination["cause"]).contains("its process ended"),
        "{termination}"
    );
    assert!(
        list.iter().any(|a| s(&a["description"])
            .contains(&format!("Launching a new instance: {}", replacement.0))
            && a["status"] == "Successful"),
        "{activity:#}"
    );

    // The service then sees the new instance.
    testkit::wait::until_true("the replacement healthy", Duration::from_secs(10), || {
        up.healthy_targets() == 2
    });
    let seen_before = origin.seen().len();
    let load = Load::start(node, &["127.20.3.9"], &url);
    load.wait_for_more(20, Duration::from_secs(10));
    assert!(load.stop().failed.is_empty());
    assert!(
        origin.seen()[seen_before..]
            .iter()
            .any(|seen| seen.peer.ip().to_string() == replacement.2),
        "the service sees the replacement {}",
        replacement.2
    );
    replacement
}

/// Whether `pid` has exited: gone from /proc, or a zombie (its files already closed).
pub fn is_dead(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty()
        || stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
}
