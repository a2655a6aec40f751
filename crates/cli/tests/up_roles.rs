//! `proxyfleet up` runs the tier as the roles (one agent per zone, the elected controller) in
//! one process on SQLite, end to end with the real binary: both zones serve, the hosts and the
//! controller show in `status`, `scale` goes through the controller, and `down` drains and
//! stops every instance; instances the previous group controller (`up --fleet`) left running
//! are refused until it has stopped them. Addresses: 127.104.x and 127.105.x (zones), clients
//! 127.20.104.x, the origin on 127.30.104.1.

mod common;

use std::time::Duration;

use common::up::{proxy_stack, s, Up};

#[test]
fn up_on_the_roles_serves_scales_and_stops_like_up() {
    let origin = testkit::origin::Origin::start("127.30.104.1");
    let mut up = Up::start_on_roles(&proxy_stack(104, 1, 2, 4));
    assert_eq!(up.in_service().len(), 2);
    for (i, node) in ["127.104.1.10", "127.104.2.10"].iter().enumerate() {
        assert_eq!(
            common::get_through(node, &origin, &format!("127.20.104.{}", i + 1)),
            200,
            "through node {node}"
        );
    }
    let status = up.status();
    let hosts: Vec<String> = status["tier"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} {}", s(&h["id"]), s(&h["zone"])))
        .collect();
    assert_eq!(hosts, ["up-a a", "up-c c"], "{status}");
    assert_eq!(status["tier"]["leader"]["host"], "up-a");

    let (code, _, err) = up.cli(&["scale", "g", "3"]);
    assert_eq!(code, 0, "{err}");
    testkit::wait::until_true("3 in service", Duration::from_secs(20), || {
        up.in_service().len() == 3
    });
    let pids: Vec<u64> = up
        .in_service()
        .iter()
        .map(|(id, _, _)| up.pid_of(id))
        .collect();

    let (code, out, err) = up.cli(&["down"]);
    assert_eq!(code, 0, "{out}{err}");
    up.child.wait_exit(Duration::from_secs(20));
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))),
            "instance {pid} outlived up"
        );
    }
    println!("up: served through both nodes, scaled 2 -> 3, stopped every instance");
}

/// `up --fleet` (the previous group controller) killed with its instances running: `up` on the
/// roles refuses the state directory, saying how to end them; `up --fleet` adopts them and
/// `down` stops them; then `up` starts.
#[test]
fn instances_the_previous_controller_left_running_are_refused_until_it_stops_them() {
    use common::BIN;
    use testkit::process::{run, Owned};
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("stack.yaml");
    std::fs::write(&file, proxy_stack(105, 1, 1, 2)).unwrap();
    let (dir, file) = (
        state.path().display().to_string(),
        file.display().to_string(),
    );
    let fleet = |what: &str| {
        let mut child = Owned::spawn(BIN, &["up", "--fleet", "--state-dir", &dir, "-f", &file]);
        child.wait_stdout(what, Duration::from_secs(60), |l| {
            l.contains("proxyfleet up: ready").then_some(())
        });
        child
    };
    let mut first = fleet("up --fleet ready");
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10));

    let (status, out, err) = run(
        BIN,
        &["up", "--state-dir", &dir, "-f", &file],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("still recorded as running") && err.contains("up --fleet"),
        "{err}"
    );

    let mut second = fleet("up --fleet adopting");
    let (status, _, err) = run(BIN, &["down", "--state-dir", &dir], Duration::from_secs(30));
    assert!(status.success(), "{err}");
    second.wait_exit(Duration::from_secs(30));
    let mut roles = Up::start_in(
        state,
        Some(&proxy_stack(105, 1, 1, 2)),
        "proxyfleet up: ready",
    );
    assert_eq!(roles.in_service().len(), 1);
    let (code, _, err) = roles.cli(&["down"]);
    assert_eq!(code, 0, "{err}");
    roles.child.wait_exit(Duration::from_secs(20));
    println!("up: refused the previous controller's running instances until `up --fleet` + down ended them");
}
