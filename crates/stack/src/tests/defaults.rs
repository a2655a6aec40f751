//! What a valid file becomes: defaults, resolved names, order.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use proxyfleet_lb::spec::{HealthCheckProtocol, NodeSpec, TargetSpec, TargetType};

use super::{ok, with_zones};
use crate::{HealthCheckType, Protocol, Scaling, Source};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn an_empty_file_is_an_empty_stack() {
    for doc in [&[][..], &["# nothing yet"][..], &["zones:", "groups:"][..]] {
        let stack = ok(doc);
        assert!(stack.zones.is_empty() && stack.groups.is_empty() && stack.networks.is_empty());
        assert!(stack.load_balancers.is_empty() && stack.target_groups.is_empty());
        assert!(stack.security_groups.is_empty() && stack.launch_templates.is_empty());
    }
}

#[test]
fn minimal_objects_get_the_documented_defaults() {
    let stack = ok(&with_zones(&[
        "load_balancers: { front: { zones: [c, a] } }",
        "target_groups: { tg: { port: 8080 } }",
        "launch_templates: { t: { command: [proxyfleet, proxy] } }",
        "groups: { g: { launch_template: t, min: 1, max: 3, zones: [a] } }",
    ]));

    let lb = &stack.load_balancers[0];
    let node = |zone: &str, ip: &str| NodeSpec {
        zone: zone.into(),
        address: ip.parse().unwrap(),
    };
    // One node per zone in the order of `zones`, at host .10 of the zone's subnet.
    assert_eq!(
        lb.nodes,
        [node("c", "127.10.2.10"), node("a", "127.10.1.10")]
    );
    assert!(!lb.cross_zone);
    assert!(lb.listeners.is_empty());
    assert_eq!(lb.max_connections, 10_000);
    assert_eq!(lb.max_connections_per_source, 2_500, "a quarter of a node");
    assert_eq!(lb.idle_timeout, Duration::from_secs(350));

    let tg = &stack.target_groups[0];
    assert_eq!(tg.port, 8080);
    assert_eq!(tg.target_type, TargetType::Instance);
    assert!(tg.preserve_client_ip);
    assert!(!tg.transparent && !tg.proxy_protocol_v2);
    assert_eq!(tg.deregistration_delay, Duration::from_secs(30));
    assert_eq!(
        tg.target_max_connections, None,
        "the instance's own capacity, or none"
    );
    assert_eq!(tg.health_check, Default::default());
    assert_eq!(tg.health_check.interval, Duration::from_secs(5));
    assert_eq!(tg.health_check.timeout, Duration::from_secs(5));

    let lt = &stack.launch_templates[0];
    assert_eq!(lt.command, ["proxyfleet", "proxy"]);
    assert!(lt.environment.is_empty() && lt.files.is_empty());
    assert_eq!(lt.stop_timeout, Duration::from_secs(10));

    let g = &stack.groups[0];
    assert_eq!(
        (g.min, g.max, g.desired),
        (1, 3, 1),
        "desired defaults to min"
    );
    assert_eq!(g.port, 3128);
    assert!(g.target_groups.is_empty() && g.security_groups.is_empty());
    assert_eq!(g.health_check_type, HealthCheckType::Process);
    assert_eq!(g.grace_period, Duration::from_secs(2));
    assert_eq!(g.first_address, 11);
    assert_eq!(g.scaling, None);
}

#[test]
fn ip_targets_do_not_preserve_the_client_ip_by_default() {
    let stack = ok(&[
        "target_groups:",
        "  ip: { port: 1, target_type: ip }",
        "  ip-preserving: { port: 1, target_type: ip, preserve_client_ip: true }",
        "  instance: { port: 1, target_type: instance, preserve_client_ip: false }",
        "  transparent: { port: 1, transparent: true, proxy_protocol_v2: true }",
    ]);
    let flags: Vec<(TargetType, bool, bool, bool)> = stack
        .target_groups
        .iter()
        .map(|t| {
            (
                t.target_type,
                t.preserve_client_ip,
                t.transparent,
                t.proxy_protocol_v2,
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (TargetType::Ip, false, false, false),
            (TargetType::Ip, true, false, false),
            (TargetType::Instance, false, false, false),
            (TargetType::Instance, true, true, true),
        ]
    );
}

#[test]
fn health_check_defaults_follow_the_interval_and_protocol() {
    let stack = ok(&[
        "target_groups:",
        "  short: { port: 1, health_check: { interval: 2s } }",
        "  long: { port: 1, health_check: { interval: 30s, healthy_threshold: 10 } }",
        "  http: { port: 1, health_check: { protocol: http, port: 9000 } }",
        "  custom:",
        "    port: 1",
        "    health_check:",
        "      protocol: http",
        "      path: /healthz",
        "      matcher: \"200\"",
        "      interval: 100ms",
        "      timeout: 50ms",
        "      unhealthy_threshold: 3",
    ]);
    let hc = |i: usize| &stack.target_groups[i].health_check;
    assert_eq!(
        (hc(0).interval, hc(0).timeout),
        (Duration::from_secs(2), Duration::from_secs(2))
    );
    assert_eq!(
        (hc(1).interval, hc(1).timeout),
        (Duration::from_secs(30), Duration::from_secs(5))
    );
    assert_eq!(
        (hc(1).healthy_threshold, hc(1).unhealthy_threshold),
        (10, 2)
    );
    assert_eq!(
        hc(2).protocol,
        HealthCheckProtocol::Http {
            path: "/".into(),
            matcher: (200, 399)
        }
    );
    assert_eq!(hc(2).port, Some(9000));
    assert_eq!(
        hc(3).protocol,
        HealthCheckProtocol::Http {
            path: "/healthz".into(),
            matcher: (200, 200)
        }
    );
    assert_eq!(
        (hc(3).interval, hc(3).timeout),
        (Duration::from_millis(100), Duration::from_millis(50))
    );
    assert_eq!(hc(3).unhealthy_threshold, 3);
}

#[test]
fn static_targets_take_the_group_port_and_their_zone_from_the_address() {
    let stack = ok(&with_zones(&[
        "target_groups:",
        "  tg:",
        "    port: 3128",
        "    targets:",
        "      - { address: 127.10.2.50 }",
        "      - { address: 127.10.1.50, port: 3129, zone: a }",
    ]));
    let target = |addr: &str, zone: &str| TargetSpec {
        address: addr.parse::<SocketAddr>().unwrap(),
        zone: zone.into(),
    };
    assert_eq!(
        stack.target_groups[0].targets,
        [
            target("127.10.2.50:3128", "c"),
            target("127.10.1.50:3129", "a")
        ]
    );
}

#[test]
fn rule_sources_of_every_kind() {
    let stack = ok(&with_zones(&[
        "networks: { app: 127.20.0.0/16 }",
        "load_balancers: { front: { zones: [a] } }",
        "security_groups:",
        "  proxy-sg:",
        "    ingress:",
        "      - { protocol: tcp, ports: 3128, from: app }",
        "      - { protocol: tcp, ports: \"3128-3130\", from: c }",
        "      - { protocol: udp, ports: \"53\", from: 127.30.0.0/16 }",
        "      - { protocol: tcp, ports: 22, from: 127.0.0.1 }",
        "      - { protocol: all, from: sg:proxy-sg }",
        "      - { protocol: tcp, ports: 3128, from: lb:front }",
        "  empty: {}",
    ]));
    let rules: Vec<(Protocol, (u16, u16), &Source)> = stack.security_groups[0]
        .ingress
        .iter()
        .map(|r| (r.protocol, r.ports, &r.source))
        .collect();
    let cidr = |s: &str, named: Option<&str>| Source::Cidr {
        net: net(s),
        named: named.map(String::from),
    };
    assert_eq!(
        rules,
        [
            (
                Protocol::Tcp,
                (3128, 3128),
                &cidr("127.20.0.0/16", Some("app"))
            ),
            (
                Protocol::Tcp,
                (3128, 3130),
                &cidr("127.10.2.0/24", Some("c"))
            ),
            (Protocol::Udp, (53, 53), &cidr("127.30.0.0/16", None)),
            (Protocol::Tcp, (22, 22), &cidr("127.0.0.1/32", None)),
            (
                Protocol::All,
                (1, 65535),
                &Source::SecurityGroup("proxy-sg".into())
            ),
            (
                Protocol::Tcp,
                (3128, 3128),
                &Source::LoadBalancer("front".into())
            ),
        ]
    );
    let shown: Vec<String> = rules.iter().map(|r| r.2.to_string()).collect();
    assert_eq!(
        shown,
        [
            "app (127.20.0.0/16)",
            "c (127.10.2.0/24)",
            "127.30.0.0/16",
            "127.0.0.1/32",
            "sg:proxy-sg",
            "lb:front"
        ]
    );
    assert!(stack.security_group("empty").unwrap().ingress.is_empty());
}

#[test]
fn listeners_join_their_load_balancers_in_file_order() {
    let stack = ok(&with_zones(&[
        "networks: { app: 127.20.0.0/16 }",
        "target_groups: { tg: { port: 3128, target_max_connections: 64 }, other: { port: 80 } }",
        "load_balancers:",
        "  front: { zones: [a, c], cross_zone: true, max_connections: 50, idle_timeout: 2m }",
        "  back: { zones: [a], nodes: { a: 127.10.1.20 } }",
        "listeners:",
        "  - { load_balancer: back, port: 80, target_group: other }",
        "  - { load_balancer: front, port: 3129, target_group: tg, allowed_cidrs: [app, 10.0.0.0/8, c] }",
        "  - { load_balancer: front, port: 3128, protocol: tcp, target_group: tg }",
        "  - { load_balancer: back, port: 3128, target_group: tg }",
    ]));
    assert_eq!(
        stack.target_group("tg").unwrap().target_max_connections,
        Some(64)
    );
    let front = stack.load_balancer("front").unwrap();
    assert!(front.cross_zone);
    assert_eq!(front.max_connections, 50);
    assert_eq!(front.max_connections_per_source, 12);
    assert_eq!(front.idle_timeout, Duration::from_secs(120));
    let ports: Vec<u16> = front.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [3129, 3128]);
    assert_eq!(
        front.listeners[0].allowed_cidrs,
        Some(vec![
            net("127.20.0.0/16"),
            net("10.0.0.0/8"),
            net("127.10.2.0/24")
        ])
    );
    let back = stack.load_balancer("back").unwrap();
    let ports: Vec<(u16, &str)> = back
        .listeners
        .iter()
        .map(|l| (l.port, l.target_group.as_str()))
        .collect();
    assert_eq!(ports, [(80, "other"), (3128, "tg")]);
    assert_eq!(
        back.nodes[0].address,
        "127.10.1.20".parse::<std::net::IpAddr>().unwrap()
    );
}

#[test]
fn group_with_every_field() {
    let stack = ok(&with_zones(&[
        "security_groups: { sg: {} }",
        "target_groups: { tg: { port: 8080 } }",
        "launch_templates:",
        "  t:",
        "    command: [proxyfleet, proxy, -f, \"{dir}/squid.conf\"]",
        "    environment: { RUST_LOG: info, INSTANCE: \"{id}@{zone}\" }",
        "    files: { a.conf: \"{address}:{port}\", b.txt: \"{{literal}\" }",
        "    stop_timeout: 1500ms",
        "groups:",
        "  g:",
        "    launch_template: t",
        "    min: 1",
        "    max: 6",
        "    desired: 4",
        "    zones: [c, a]",
        "    port: 8080",
        "    target_groups: [tg]",
        "    security_groups: [sg]",
        "    health_check_type: lb",
        "    health_check_grace_period: 0s",
        "    first_address: 100",
        "    scaling:",
        "      target_active_connections_per_instance: 100",
        "      scale_in_cooldown: 5m",
    ]));
    let g = &stack.groups[0];
    assert_eq!((g.min, g.max, g.desired), (1, 6, 4));
    assert_eq!(g.zones, ["c", "a"]);
    assert_eq!(g.port, 8080);
    assert_eq!(
        (g.target_groups.as_slice(), g.security_groups.as_slice()),
        (&["tg".to_string()][..], &["sg".to_string()][..])
    );
    assert_eq!(g.health_check_type, HealthCheckType::Lb);
    assert_eq!(g.grace_period, Duration::ZERO);
    assert_eq!(g.first_address, 100);
    assert_eq!(
        g.scaling,
        Some(Scaling {
            target_active_connections_per_instance: 100,
            scale_out_cooldown: Duration::from_secs(30),
            scale_in_cooldown: Duration::from_secs(300),
        })
    );
    let c = stack.zone("c").unwrap();
    assert_eq!(
        g.instance_address(&c.subnet, 5),
        Some("127.10.2.105".parse().unwrap())
    );

    let lt = stack.launch_template("t").unwrap();
    assert_eq!(lt.stop_timeout, Duration::from_millis(1500));
    let launch = lt.render(&crate::Placeholders {
        id: "g-c-1".into(),
        zone: "c".into(),
        address: "127.10.2.100".parse().unwrap(),
        port: 8080,
        dir: "/tmp/g-c-1".into(),
        group: "g".into(),
    });
    assert_eq!(
        launch.command,
        ["proxyfleet", "proxy", "-f", "/tmp/g-c-1/squid.conf"]
    );
    assert_eq!(
        launch.environment,
        [
            ("RUST_LOG".to_string(), "info".to_string()),
            ("INSTANCE".to_string(), "g-c-1@c".to_string())
        ]
    );
    assert_eq!(
        launch.files,
        [
            ("a.conf".to_string(), "127.10.2.100:8080".to_string()),
            ("b.txt".to_string(), "{literal}".to_string())
        ]
    );
}

#[test]
fn anchors_and_aliases_are_followed() {
    let stack = ok(&[
        "target_groups:",
        "  one: { port: 1, health_check: &fast { interval: 1s, timeout: 1s } }",
        "  two: { port: 2, health_check: *fast }",
    ]);
    assert_eq!(
        stack.target_groups[0].health_check,
        stack.target_groups[1].health_check
    );
    assert_eq!(
        stack.target_groups[1].health_check.interval,
        Duration::from_secs(1)
    );
}
