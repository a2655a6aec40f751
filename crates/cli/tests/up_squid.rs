//! A group of Debian's Squid 5.7 under proxyfleet's balancer, with PROXY v2: the same stack
//! machinery runs a third-party server with no code change.

mod common;

use std::time::{Duration, Instant};

use common::up::Up;
use testkit::client::curl;
use testkit::origin::Origin;

const STACK: &str = r#"zones:
  a: { subnet: 127.61.1.0/24 }
  c: { subnet: 127.61.2.0/24 }
networks:
  app: 127.20.0.0/16
security_groups:
  squid-sg:
    ingress:
      - { protocol: tcp, ports: "3128", from: app }
      - { protocol: tcp, ports: "3128", from: a }
      - { protocol: tcp, ports: "3128", from: c }
load_balancers:
  front: { zones: [a, c] }
listeners:
  - { load_balancer: front, port: 3128, protocol: tcp, target_group: squids }
target_groups:
  squids:
    protocol: tcp
    port: 3128
    target_type: instance
    preserve_client_ip: false
    proxy_protocol_v2: true
    deregistration_delay: 1s
    health_check: { protocol: tcp, interval: 250ms, timeout: 250ms }
launch_templates:
  squid:
    # Squid drops to user proxy and must write its files: the instance directory is its.
    command: [sh, -c, "chown proxy {dir} && exec squid -N -f {dir}/squid.conf"]
    stop_timeout: 5s
    files:
      squid.conf: |
        http_port {address}:{port} require-proxy-header
        acl lb src 127.61.0.0/16
        acl app src 127.20.0.0/16
        proxy_protocol_access allow lb
        proxy_protocol_access deny all
        http_access allow app
        http_access deny all
        tcp_outgoing_address {address}
        visible_hostname {id}
        cache deny all
        cache_mem 0 MB
        cache_effective_user proxy
        pid_filename {dir}/squid.pid
        cache_log {dir}/cache.log
        access_log {dir}/access.log squid
        coredump_dir {dir}
        netdb_filename none
        dns_nameservers 127.0.0.1
        pinger_enable off
        icp_port 0
        htcp_port 0
        snmp_port 0
        workers 1
        shutdown_lifetime 1 seconds
groups:
  squids:
    launch_template: squid
    min: 2
    max: 2
    zones: [a, c]
    target_groups: [squids]
    security_groups: [squid-sg]
    health_check_type: process
"#;

fn squid_available() -> bool {
    let ok = std::process::Command::new("squid")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !ok || !root {
        eprintln!("SKIPPED: needs Debian's squid package and root (squid -v: {ok}, root: {root}); the test command installs squid when it can");
    }
    ok && root
}

#[test]
fn squid_instances_serve_through_the_balancer_and_are_replaced() {
    if !squid_available() {
        return;
    }
    let origin = Origin::start("127.30.0.61");
    let up = Up::start(Some(STACK));
    testkit::wait::until_true("both squids healthy", Duration::from_secs(30), || {
        up.healthy_targets() == 2
    });
    let url = format!("{}/small", origin.url());
    for _ in 0..10 {
        let r = curl(&[
            "--interface",
            "127.20.0.5",
            "-x",
            "http://127.61.1.10:3128",
            "-H",
            "Connection: close",
            &url,
        ]);
        assert!(r.success && r.stdout.len() == 100, "{r:?}");
    }
    // Squid logged the app client, carried to it in the PROXY v2 header.
    let instances = up.in_service();
    let a = instances.iter().find(|i| i.1 == "a").unwrap().clone();
    let dir = up.instance(&a.0)["dir"].as_str().unwrap().to_string();
    testkit::wait::until_true("squid's access log line", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("{dir}/access.log"))
            .unwrap_or_default()
            .contains(" 127.20.0.5 TCP_MISS/200 ")
    });
    // kill -9 the zone-a squid: replaced in zone a.
    let pid = up.pid_of(&a.0);
    let killed = Instant::now();
    // SAFETY: kill(2) on a process our `up` child started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let replacement =
        testkit::wait::until("a new squid in zone a", Duration::from_secs(20), || {
            up.in_service()
                .into_iter()
                .find(|i| i.1 == "a" && i.0 != a.0)
        });
    println!(
        "squid replacement {} InService {:?} after the kill",
        replacement.0,
        killed.elapsed()
    );
    for _ in 0..5 {
        let r = curl(&[
            "--interface",
            "127.20.0.6",
            "-x",
            "http://127.61.1.10:3128",
            "-H",
            "Connection: close",
            &url,
        ]);
        assert!(r.success, "{r:?}");
    }
    let (code, _, _) = up.cli(&["down"]);
    assert_eq!(code, 0);
}
