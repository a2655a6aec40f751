//! `proxyfleet up` with stack files of the tests' own: scaling within bounds, every class of
//! bad stack file, terminate and set-health through the API, target tracking. (The fault
//! drills are in drills.rs.)

mod common;

use std::time::Duration;

use common::up::{proxy_stack, s, Up};
use common::BIN;
use testkit::process::run;

#[test]
fn scale_out_and_in_within_min_and_max() {
    let up = Up::start(Some(&proxy_stack(51, 1, 2, 4)));
    assert_eq!(up.in_service().len(), 2);
    // No target_max_connections: each proxy takes its own client cap (max_filedescriptors
    // 16384 / 2) less a place for each of the two nodes' health checks.
    let caps: Vec<_> = up.status()["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["max_flows"].as_u64())
        .collect();
    assert_eq!(
        caps,
        [Some(8190), Some(8190)],
        "each instance's own capacity"
    );
    let (code, _, err) = up.cli(&["scale", "g", "4"]);
    assert_eq!(code, 0, "{err}");
    testkit::wait::until_true("4 in service", Duration::from_secs(20), || {
        up.in_service().len() == 4
    });
    let zones: Vec<String> = up.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| s(&i["zone"]))
        .collect();
    assert_eq!(
        zones.iter().filter(|z| *z == "a").count(),
        2,
        "balanced across zones: {zones:?}"
    );
    let (code, _, err) = up.cli(&["scale", "g", "5"]);
    assert_ne!(code, 0);
    assert!(err.contains("desired 5 is outside min 1 .. max 4"), "{err}");
    let (code, _, err) = up.cli(&["scale", "g", "1"]);
    assert_eq!(code, 0, "{err}");
    testkit::wait::until_true("1 in service", Duration::from_secs(30), || {
        up.in_service().len() == 1 && up.status()["instances"].as_array().unwrap().len() == 1
    });
    let activity = up.activity();
    assert!(activity
        .as_array()
        .unwrap()
        .iter()
        .any(|a| s(&a["description"]) == "Setting desired capacity from 2 to 4"));
}

#[test]
fn bad_stack_files_name_file_line_column_and_object() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            proxy_stack(54, 1, 1, 1).replace(
                "  front: { zones: [a, c] }",
                "  front: { zones: [a, c], colour: red }",
            ),
            "load_balancers.front: unknown field `colour`",
        ),
        (
            "dangling target group",
            proxy_stack(54, 1, 1, 1).replace("target_group: tg }", "target_group: nope }"),
            "listeners[0]: unknown target group 'nope'",
        ),
        (
            "unknown zone",
            proxy_stack(54, 1, 1, 1).replace(
                "    zones: [a, c]\n    target_groups",
                "    zones: [a, b]\n    target_groups",
            ),
            "groups.g: unknown zone 'b'",
        ),
        (
            "overlapping subnets",
            proxy_stack(54, 1, 1, 1).replace("127.54.2.0/24", "127.54.1.128/25"),
            "zones.c: subnet 127.54.1.128/25 overlaps zones.a",
        ),
        (
            "min > desired",
            proxy_stack(54, 2, 1, 3),
            "groups.g: min 2 > desired 1",
        ),
        (
            "static address outside its zone",
            proxy_stack(54, 1, 1, 1).replace("    deregistration_delay: 1s\n", "    deregistration_delay: 1s\n    targets:\n      - { address: 127.99.0.1, zone: a }\n"),
            "target_groups.tg.targets[0]: address 127.99.0.1 is outside zone a's subnet 127.54.1.0/24",
        ),
    ];
    for (what, text, expected) in cases {
        let file = dir.path().join("stack.yaml");
        std::fs::write(&file, &text).unwrap();
        let f = file.display().to_string();
        let (status, _, err) = run(
            BIN,
            &[
                "up",
                "-f",
                &f,
                "--state-dir",
                &dir.path().join("state").display().to_string(),
            ],
            Duration::from_secs(20),
        );
        assert_eq!(status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(&f) && err.contains(expected),
            "{what}: expected `{expected}` in: {err}"
        );
        let line_col = regex::Regex::new(&format!(r"{}:\d+:\d+: ", regex::escape(&f))).unwrap();
        assert!(line_col.is_match(&err), "{what}: no line:column in {err}");
        let (status, _, err2) = run(BIN, &["check", "-f", &f], Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "check too: {err2}");
        assert!(
            !dir.path().join("state").join("state.db").exists(),
            "nothing started for {what}"
        );
    }
}

#[test]
fn terminate_and_set_health_replace_instances_and_need_the_token() {
    let up = Up::start(Some(&proxy_stack(55, 2, 2, 2)));
    let first = up.in_service();
    let victim = first[0].0.clone();
    let (code, _, err) = up.cli(&["terminate", &victim]);
    assert_eq!(code, 0, "{err}");
    testkit::wait::until_true("a replacement", Duration::from_secs(20), || {
        let now = up.in_service();
        now.len() == 2 && now.iter().all(|i| i.0 != victim)
    });
    // The API refuses mutating calls without the token, and takes them with it.
    let addr = std::fs::read_to_string(up.dir().join("admin.addr"))
        .unwrap()
        .trim()
        .to_string();
    let token = std::fs::read_to_string(up.dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let target = up.in_service()[0].0.clone();
    let url = format!("http://{addr}/api/instances/{target}/health");
    let no_token = testkit::client::curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"healthy":false}"#,
        &url,
    ]);
    assert_eq!(no_token.stdout, "401");
    let with_token = testkit::client::curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        &format!("authorization: Bearer {token}"),
        "-d",
        r#"{"healthy":false}"#,
        &url,
    ]);
    assert_eq!(with_token.stdout, "200");
    testkit::wait::until_true(
        "the unhealthy instance replaced",
        Duration::from_secs(20),
        || {
            let now = up.in_service();
            now.len() == 2 && now.iter().all(|i| i.0 != target)
        },
    );
    let activity = up.activity();
    assert!(activity
        .as_array()
        .unwrap()
        .iter()
        .any(|a| s(&a["cause"]).contains("marked unhealthy by hand")));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(up.dir().join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn target_tracking_follows_active_connections() {
    let text = proxy_stack(58, 1, 1, 3).replace(
        "    health_check_grace_period: 1s\n",
        "    health_check_grace_period: 1s\n    scaling:\n      target_active_connections_per_instance: 5\n      scale_out_cooldown: 1s\n      scale_in_cooldown: 2s\n",
    );
    let up = Up::start(Some(&text));
    assert_eq!(up.in_service().len(), 1);
    // 12 open connections through node a: 12 / 5 per instance = 3 instances.
    let node: std::net::SocketAddr = "127.58.1.10:3128".parse().unwrap();
    let held: Vec<_> = (0..12)
        .map(|i| testkit::client::connect_from(&format!("127.20.3.{}", i + 1), node))
        .collect();
    testkit::wait::until_true("scaled out to 3", Duration::from_secs(30), || {
        up.in_service().len() == 3
    });
    drop(held);
    testkit::wait::until_true("scaled back in to 1", Duration::from_secs(40), || {
        up.status()["groups"][0]["desired"] == 1 && up.in_service().len() == 1
    });
    let activity = up.activity();
    let causes: Vec<String> = activity
        .as_array()
        .unwrap()
        .iter()
        .map(|a| s(&a["cause"]))
        .collect();
    assert!(
        causes.iter().any(|c| c.starts_with("target tracking:")),
        "{causes:?}"
    );
}
