//! The built-in stack, whole: `proxyfleet up` with no file brings up the reference system on
//! loopback, a real client reaches a real service through it, a killed proxy is replaced in
//! the same zone within 2 s, and `down` takes everything away. The built-in stack binds
//! fixed addresses (127.10.1.10:3128, ...), so this file's steps run in one test.

mod common;

use std::time::{Duration, Instant};

use common::up::{s, Up};
use testkit::client::curl;
use testkit::origin::Origin;

#[test]
fn the_builtin_stack_serves_heals_and_goes_down() {
    let origin = Origin::start("127.30.0.10");
    let up = Up::start(None);

    // Status: two healthy targets, two InService instances, one per zone.
    testkit::wait::until_true("2 healthy targets", Duration::from_secs(10), || {
        up.healthy_targets() == 2
    });
    let mut instances = up.in_service();
    instances.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert_eq!(
        (instances[0].1.as_str(), instances[1].1.as_str()),
        ("a", "c")
    );
    let status = up.status();
    let nodes: Vec<String> = status["load_balancers"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| s(&n["address"]))
        .collect();
    assert_eq!(nodes, ["127.10.1.10", "127.10.2.10"]);

    // Connectivity: an app server (127.20.0.5) through each node reaches the service; the
    // service sees the proxies' own addresses.
    for node in ["127.10.1.10", "127.10.2.10"] {
        for _ in 0..10 {
            let r = curl(&[
                "--interface",
                "127.20.0.5",
                "-x",
                &format!("http://{node}:3128"),
                "-H",
                "Connection: close",
                &format!("{}/small", origin.url()),
            ]);
            assert!(r.success && r.stdout.len() == 100, "{r:?}");
        }
    }
    let peers: std::collections::BTreeSet<String> = origin
        .seen()
        .iter()
        .map(|s| s.peer.ip().to_string())
        .collect();
    let addresses: std::collections::BTreeSet<String> =
        instances.iter().map(|i| i.2.clone()).collect();
    assert_eq!(
        peers, addresses,
        "each zone's node uses its own zone's proxy"
    );

    // kill -9 the zone a instance: replaced in zone a, InService within 2 s.
    let victim = &instances[0];
    let pid = up.pid_of(&victim.0);
    let killed = Instant::now();
    // SAFETY: kill(2) on the instance's pid, which `up` (our child) started and still owns.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let replacement =
        testkit::wait::until("a replacement in zone a", Duration::from_secs(10), || {
            up.in_service()
                .into_iter()
                .find(|i| i.1 == "a" && i.0 != victim.0)
        });
    let took = killed.elapsed();
    println!(
        "replacement {} InService {:?} after the kill",
        replacement.0, took
    );
    assert!(took < Duration::from_secs(2), "replacement took {took:?}");

    // The activity history: the termination with its cause, and the launch.
    let activity = up.activity();
    let list = activity.as_array().unwrap();
    let terminated = list
        .iter()
        .find(|a| s(&a["description"]).contains(&format!("Terminating instance {}", victim.0)))
        .expect("termination recorded");
    assert!(
        s(&terminated["cause"]).contains("its process"),
        "{terminated}"
    );
    assert!(list.iter().any(|a| s(&a["description"])
        .contains(&format!("Launching a new instance: {}", replacement.0))
        && a["status"] == "Successful"));

    // The service then sees the new proxy.
    testkit::wait::until_true("the new target healthy", Duration::from_secs(10), || {
        up.healthy_targets() == 2
    });
    let r = curl(&[
        "--interface",
        "127.20.0.5",
        "-x",
        "http://127.10.1.10:3128",
        &format!("{}/small", origin.url()),
    ]);
    assert!(r.success, "{r:?}");
    assert_eq!(
        origin.seen().last().unwrap().peer.ip().to_string(),
        replacement.2
    );

    // down: everything stops, exit 0.
    let (code, out, err) = up.cli(&["down"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut up = up;
    assert_eq!(up.child.wait_exit(Duration::from_secs(60)).code(), Some(0));
    assert!(
        std::net::TcpStream::connect("127.10.1.10:3128").is_err(),
        "the balancer is gone"
    );
}
