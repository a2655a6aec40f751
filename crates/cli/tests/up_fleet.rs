//! `proxyfleet up` with stack files of the tests' own: scaling, a crash-looping template,
//! a controller restart, security groups, and every class of bad stack file.

mod common;

use std::time::{Duration, Instant};

use common::up::{s, Up};
use common::BIN;
use testkit::process::run;

/// A one-zone-pair stack on 127.NET.x.0/24 running `proxyfleet proxy` instances.
fn stack(net: u8, min: u32, desired: u32, max: u32) -> String {
    format!(
        r#"zones:
  a: {{ subnet: 127.{net}.1.0/24 }}
  c: {{ subnet: 127.{net}.2.0/24 }}
networks:
  app: 127.20.0.0/16
security_groups:
  sg:
    ingress:
      - {{ protocol: tcp, ports: "3128", from: app }}
      - {{ protocol: tcp, ports: "3128", from: a }}
      - {{ protocol: tcp, ports: "3128", from: c }}
load_balancers:
  front: {{ zones: [a, c] }}
listeners:
  - {{ load_balancer: front, port: 3128, protocol: tcp, target_group: tg }}
target_groups:
  tg:
    protocol: tcp
    port: 3128
    deregistration_delay: 1s
    health_check: {{ protocol: http, path: /healthz, interval: 200ms, timeout: 200ms }}
launch_templates:
  proxy:
    command: [proxyfleet, proxy, -f, "{{dir}}/squid.conf"]
    stop_timeout: 5s
    files:
      squid.conf: |
        http_port {{address}}:{{port}}
        acl ok src 127.0.0.0/8
        http_access allow ok
        access_log none
        dns_nameservers 127.0.0.1
        shutdown_lifetime 1 second
groups:
  g:
    launch_template: proxy
    min: {min}
    desired: {desired}
    max: {max}
    zones: [a, c]
    target_groups: [tg]
    security_groups: [sg]
    health_check_type: lb
    health_check_grace_period: 1s
"#
    )
}

fn live_count(up: &Up) -> usize {
    up.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["lifecycle"] == "InService")
        .count()
}

#[test]
fn scale_out_and_in_within_min_and_max() {
    let up = Up::start(Some(&stack(51, 1, 2, 4)));
    assert_eq!(live_count(&up), 2);
    let (code, _, err) = up.cli(&["scale", "g", "4"]);
    assert_eq!(code, 0, "{err}");
    testkit::wait::until_true("4 in service", Duration::from_secs(20), || {
        live_count(&up) == 4
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
        live_count(&up) == 1 && up.status()["instances"].as_array().unwrap().len() == 1
    });
    let activity = up.activity();
    assert!(activity
        .as_array()
        .unwrap()
        .iter()
        .any(|a| s(&a["description"]) == "Setting desired capacity from 2 to 4"));
}

#[test]
fn a_crash_looping_template_backs_off_visibly() {
    let text = stack(52, 1, 1, 1).replace(
        r#"command: [proxyfleet, proxy, -f, "{dir}/squid.conf"]"#,
        r#"command: [sh, -c, "exit 3"]"#,
    );
    let up = Up::start_unready(&text);
    let started = Instant::now();
    testkit::wait::until_true("10 s of crash loop", Duration::from_secs(15), || {
        started.elapsed() > Duration::from_secs(10)
    });
    let activity = up.activity();
    let failed: Vec<String> = activity
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "Failed")
        .map(|a| s(&a["description"]))
        .collect();
    println!("{} failed launches in 10 s: {failed:#?}", failed.len());
    assert!(
        (3..=6).contains(&failed.len()),
        "back-off 1, 2, 4, 8 s: {failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|d| d.contains("exit status: 3") && d.contains("next attempt in")),
        "{failed:?}"
    );
    // Still responsive, and says it is backing off.
    let status = up.status();
    assert!(
        status["groups"][0]["backoff_seconds"].as_f64().is_some()
            || status["instances"].as_array().unwrap().len() <= 1
    );
}

#[test]
fn a_restarted_controller_adopts_its_instances() {
    let up = Up::start(Some(&stack(53, 2, 2, 2)));
    let before: Vec<(String, u64)> = up.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (s(&i["id"]), i["pid"].as_u64().unwrap()))
        .collect();
    let state = up.crash();
    // The instances survived their controller.
    for (_, pid) in &before {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "instance {pid} died with up"
        );
    }
    let up = Up::start_in(state, Some(&stack(53, 2, 2, 2)), "proxyfleet up: ready");
    let mut after: Vec<(String, u64)> = up.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (s(&i["id"]), i["pid"].as_u64().unwrap()))
        .collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(
        before, after,
        "the same instances, adopted: none launched twice, none lost"
    );
    let activity = up.activity();
    assert_eq!(
        activity
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| s(&a["description"]).starts_with("Adopting instance"))
            .count(),
        2
    );
}

#[test]
fn bad_stack_files_name_file_line_column_and_object() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            stack(54, 1, 1, 1).replace(
                "  front: { zones: [a, c] }",
                "  front: { zones: [a, c], colour: red }",
            ),
            "load_balancers.front: unknown field `colour`",
        ),
        (
            "dangling target group",
            stack(54, 1, 1, 1).replace("target_group: tg }", "target_group: nope }"),
            "listeners[0]: unknown target group 'nope'",
        ),
        (
            "unknown zone",
            stack(54, 1, 1, 1).replace(
                "    zones: [a, c]\n    target_groups",
                "    zones: [a, b]\n    target_groups",
            ),
            "groups.g: unknown zone 'b'",
        ),
        (
            "overlapping subnets",
            stack(54, 1, 1, 1).replace("127.54.2.0/24", "127.54.1.128/25"),
            "zones.c: subnet 127.54.1.128/25 overlaps zones.a",
        ),
        (
            "min > desired",
            stack(54, 2, 1, 3),
            "groups.g: min 2 > desired 1",
        ),
        (
            "static address outside its zone",
            stack(54, 1, 1, 1).replace("    deregistration_delay: 1s\n", "    deregistration_delay: 1s\n    targets:\n      - { address: 127.99.0.1, zone: a }\n"),
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
    let up = Up::start(Some(&stack(55, 2, 2, 2)));
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

/// Whether nftables can be driven here (root and `nft`); says SKIPPED otherwise.
fn firewall_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && nft) {
        eprintln!("SKIPPED: security groups need root and nft (root: {root}, nft: {nft})");
    }
    root && nft
}

#[test]
fn security_groups_drop_unadmitted_sources_and_check_explains_the_pitfall() {
    // The classic mistake: the group admits the app network but not the balancer's subnets.
    let pitfall = stack(56, 1, 1, 1).replace("      - { protocol: tcp, ports: \"3128\", from: a }\n      - { protocol: tcp, ports: \"3128\", from: c }\n", "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pitfall.yaml");
    std::fs::write(&file, &pitfall).unwrap();
    let (status, out, _) = run(
        BIN,
        &["check", "-f", file.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("security group sg admits 127.20.0.0/16 on 3128 but not the load balancer nodes' subnets 127.56.1.0/24, 127.56.2.0/24: health checks will fail and no target will become healthy"), "{out}");
    let (status, out, _) = run(BIN, &["check"], Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "the built-in stack is clean: {out}");
    if !firewall_available() {
        return;
    }
    // Run as is: the checks are dropped, the target never turns healthy, and status says why.
    let up = Up::start_unready(&pitfall);
    testkit::wait::until_true("an instance in service", Duration::from_secs(20), || {
        up.in_service().len() == 1
    });
    testkit::wait::until_true(
        "the target judged unhealthy",
        Duration::from_secs(20),
        || {
            let st = up.status();
            st["targets"][0]["health"] == "Unhealthy"
                && s(&st["targets"][0]["nodes"][0]["reason"]).contains("timed out")
        },
    );
    drop(up);

    // A correct stack: the app network passes, 127.99.0.5 never reaches the program.
    let up = Up::start(Some(&stack(57, 1, 1, 1)));
    let addr: std::net::SocketAddr = format!("{}:3128", up.in_service()[0].2).parse().unwrap();
    let ok = std::panic::catch_unwind(|| testkit::client::connect_from("127.20.0.5", addr)).is_ok();
    assert!(ok, "the app network is admitted");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 99, 0, 5], 0)).into())
        .unwrap();
    let refused = socket.connect_timeout(&addr.into(), Duration::from_millis(500));
    assert!(refused.is_err(), "a source no rule admits must not connect");
    let st = up.status();
    assert_eq!(st["instances"][0]["protected"], true);
}

#[test]
fn target_tracking_follows_active_connections() {
    let text = stack(58, 1, 1, 3).replace(
        "    health_check_grace_period: 1s\n",
        "    health_check_grace_period: 1s\n    scaling:\n      target_active_connections_per_instance: 5\n      scale_out_cooldown: 1s\n      scale_in_cooldown: 2s\n",
    );
    let up = Up::start(Some(&text));
    assert_eq!(live_count(&up), 1);
    // 12 open connections through node a: 12 / 5 per instance = 3 instances.
    let node: std::net::SocketAddr = "127.58.1.10:3128".parse().unwrap();
    let held: Vec<_> = (0..12)
        .map(|i| testkit::client::connect_from(&format!("127.20.3.{}", i + 1), node))
        .collect();
    testkit::wait::until_true("scaled out to 3", Duration::from_secs(30), || {
        live_count(&up) == 3
    });
    drop(held);
    testkit::wait::until_true("scaled back in to 1", Duration::from_secs(40), || {
        up.status()["groups"][0]["desired"] == 1 && live_count(&up) == 1
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

#[test]
fn a_hung_instance_is_found_by_health_checks_replaced_and_its_process_reaped() {
    let up = Up::start(Some(&stack(59, 2, 2, 2)));
    let (victim, _, _) = up.in_service()[0].clone();
    let pid = up.pid_of(&victim);
    // SAFETY: kill(2) on an instance process our `up` child started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    testkit::wait::until_true(
        "the hung instance replaced",
        Duration::from_secs(30),
        || {
            let now = up.in_service();
            now.len() == 2 && now.iter().all(|i| i.0 != victim)
        },
    );
    // The stopped process is stopped for good (SIGCONT + SIGTERM, SIGKILL after the timeout),
    // not leaked: its pid leaves /proc (or is only a zombie waiting for its parent).
    testkit::wait::until_true("the hung process gone", Duration::from_secs(20), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty()
            || stat
                .split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
    });
    let activity = up.activity();
    let cause = activity
        .as_array()
        .unwrap()
        .iter()
        .find(|a| s(&a["description"]).starts_with(&format!("Terminating instance {victim}")))
        .map(|a| s(&a["cause"]))
        .unwrap_or_default();
    assert!(
        cause.contains("load balancer health check failure"),
        "{cause}"
    );
}
