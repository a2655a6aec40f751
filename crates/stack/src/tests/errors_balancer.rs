//! Load balancers, listeners, target groups and their health checks and static targets.

use super::{err, with_zones};

#[test]
fn load_balancer_zones() {
    let lb = |zones: &'static str| err(&with_zones(&["load_balancers:", "  front:", zones]));
    assert_eq!(
        lb("    zones: [a, b]"),
        "stack.yaml:6:16: load_balancers.front: unknown zone 'b' (defined: a, c)"
    );
    assert_eq!(
        lb("    zones: []"),
        "stack.yaml:6:12: load_balancers.front: zones is empty"
    );
    assert_eq!(
        lb("    zones: [a, a]"),
        "stack.yaml:6:16: load_balancers.front: zone 'a' is listed twice"
    );
}

#[test]
fn node_addresses() {
    let lb = |zones: &'static str, nodes: &'static str| {
        err(&with_zones(&["load_balancers:", "  front:", zones, nodes]))
    };
    assert_eq!(
        lb(
            "    zones: [a, c]",
            "    nodes: { a: 127.10.1.10, c: 127.10.1.20 }"
        ),
        "stack.yaml:7:33: load_balancers.front: node address 127.10.1.20 is outside zone c's \
         subnet 127.10.2.0/24"
    );
    assert_eq!(
        lb("    zones: [a]", "    nodes: { c: 127.10.2.10 }"),
        "stack.yaml:7:14: load_balancers.front: node for zone 'c', which is not one of this \
         load balancer's zones (a)"
    );
    assert_eq!(
        lb("    zones: [a]", "    nodes: { a: front-a }"),
        "stack.yaml:7:17: load_balancers.front: invalid address 'front-a' (expected like \
         127.10.1.10)"
    );
}

#[test]
fn a_zone_too_small_for_the_default_node_address() {
    assert_eq!(
        err(&[
            "zones:",
            "  a: { subnet: 127.10.1.0/29 }",
            "load_balancers:",
            "  front:",
            "    zones: [a]",
        ]),
        "stack.yaml:5:13: load_balancers.front: zone a's subnet 127.10.1.0/29 has no host .10 \
         for the default node address; give one in nodes"
    );
}

#[test]
fn node_addresses_are_not_shared_between_load_balancers() {
    assert_eq!(
        err(&with_zones(&[
            "load_balancers:",
            "  front:",
            "    zones: [a]",
            "  back:",
            "    zones: [c, a]",
        ])),
        "stack.yaml:8:16: load_balancers.back: default node address 127.10.1.10 in zone a is \
         already used by load_balancers.front"
    );
    assert_eq!(
        err(&with_zones(&[
            "load_balancers:",
            "  front: { zones: [a] }",
            "  back: { zones: [a], nodes: { a: 127.10.1.10 } }",
        ])),
        "stack.yaml:6:35: load_balancers.back: node address 127.10.1.10 in zone a is already \
         used by load_balancers.front"
    );
}

#[test]
fn load_balancer_limits() {
    let lb = |line: &'static str| {
        err(&with_zones(&[
            "load_balancers:",
            "  front:",
            "    zones: [a]",
            line,
        ]))
    };
    assert_eq!(
        lb("    max_connections: 0"),
        "stack.yaml:7:22: load_balancers.front: max_connections 0 is out of range 1-4294967295"
    );
    assert_eq!(
        lb("    max_connections_per_source: 10001"),
        "stack.yaml:7:33: load_balancers.front: max_connections_per_source 10001 is out of range \
         1-10000"
    );
    assert_eq!(
        lb("    idle_timeout: 0s"),
        "stack.yaml:7:19: load_balancers.front: idle_timeout must be more than 0s"
    );
    assert_eq!(
        lb("    idle_timeout: 350"),
        "stack.yaml:7:19: load_balancers.front: invalid idle_timeout '350': time unit needed, \
         for example 350sec or 350ms"
    );
}

/// A target group `tg`, a load balancer `front` in zone a, and the listeners (line 9 on).
fn listeners(lines: &[&'static str]) -> String {
    let mut doc = with_zones(&[
        "target_groups:",
        "  tg: { port: 3128 }",
        "load_balancers:",
        "  front: { zones: [a] }",
        "listeners:",
    ]);
    doc.extend(lines);
    err(&doc)
}

#[test]
fn listener_references() {
    assert_eq!(
        listeners(&[
            "  - { load_balancer: front, port: 3128, target_group: tg }",
            "  - { load_balancer: back, port: 3128, target_group: tg }",
        ]),
        "stack.yaml:10:22: listeners[1]: unknown load balancer 'back' (defined: front)"
    );
    assert_eq!(
        listeners(&["  - { load_balancer: front, port: 3129, target_group: tgx }"]),
        "stack.yaml:9:55: listeners[0]: unknown target group 'tgx' (defined: tg)"
    );
}

#[test]
fn duplicate_listener() {
    assert_eq!(
        listeners(&[
            "  - { load_balancer: front, port: 3128, target_group: tg }",
            "  - { load_balancer: front, port: 3128, target_group: tg }",
        ]),
        "stack.yaml:10:35: listeners[1]: port 3128 is already used by listeners[0] on load \
         balancer front"
    );
}

#[test]
fn listener_port_and_protocol() {
    assert_eq!(
        listeners(&["  - { load_balancer: front, port: 0, target_group: tg }"]),
        "stack.yaml:9:35: listeners[0]: port 0 is out of range 1-65535"
    );
    assert_eq!(
        listeners(&["  - { load_balancer: front, port: 65536, target_group: tg }"]),
        "stack.yaml:9:35: listeners[0]: port 65536 is out of range 1-65535"
    );
    assert_eq!(
        listeners(&["  - { load_balancer: front, port: 3128, protocol: udp, target_group: tg }"]),
        "stack.yaml:9:51: listeners[0]: unsupported protocol 'udp' (only tcp)"
    );
}

#[test]
fn listener_allowed_cidrs() {
    assert_eq!(
        listeners(&[
            "  - { load_balancer: front, port: 3128, target_group: tg, allowed_cidrs: [a, lb:front] }",
        ]),
        "stack.yaml:9:78: listeners[0]: allowed_cidrs takes CIDRs, network names and zone \
         names, not 'lb:front'"
    );
    assert_eq!(
        listeners(&[
            "  - { load_balancer: front, port: 3128, target_group: tg, allowed_cidrs: [app] }",
        ]),
        "stack.yaml:9:75: listeners[0]: unknown source 'app' (expected a network or zone name, \
         a CIDR, sg:NAME or lb:NAME)"
    );
}

/// A target group `tg` with the given lines from line 4 on.
fn tg(lines: &[&'static str]) -> String {
    let mut doc = vec!["target_groups:", "  tg:", "    port: 3128"];
    doc.extend(lines);
    err(&doc)
}

#[test]
fn health_check_interval_and_timeout() {
    assert_eq!(
        tg(&["    health_check:", "      interval: 50ms"]),
        "stack.yaml:5:17: target_groups.tg: health_check interval 50ms is below the minimum \
         100ms"
    );
    assert_eq!(
        tg(&[
            "    health_check:",
            "      interval: 1s",
            "      timeout: 2s"
        ]),
        "stack.yaml:6:16: target_groups.tg: health_check timeout 2s > interval 1s"
    );
    assert_eq!(
        tg(&["    health_check:", "      timeout: 6s"]),
        "stack.yaml:5:16: target_groups.tg: health_check timeout 6s > interval 5s"
    );
    assert_eq!(
        tg(&["    health_check:", "      interval: soon"]),
        "stack.yaml:5:17: target_groups.tg: invalid health_check interval 'soon': expected \
         number at 0"
    );
}

#[test]
fn health_check_thresholds() {
    assert_eq!(
        tg(&["    health_check:", "      healthy_threshold: 1"]),
        "stack.yaml:5:26: target_groups.tg: health_check healthy_threshold 1 is out of range \
         2-10"
    );
    assert_eq!(
        tg(&["    health_check:", "      unhealthy_threshold: 11"]),
        "stack.yaml:5:28: target_groups.tg: health_check unhealthy_threshold 11 is out of \
         range 2-10"
    );
}

#[test]
fn health_check_http_settings() {
    assert_eq!(
        tg(&[
            "    health_check:",
            "      protocol: http",
            "      matcher: \"200-99\""
        ]),
        "stack.yaml:6:16: target_groups.tg: invalid health_check matcher '200-99' (expected a \
         status like 200 or a range like 200-399, within 100-599)"
    );
    assert_eq!(
        tg(&[
            "    health_check:",
            "      protocol: http",
            "      path: healthz"
        ]),
        "stack.yaml:6:13: target_groups.tg: health_check path 'healthz' must start with '/'"
    );
    assert_eq!(
        tg(&["    health_check:", "      path: /healthz"]),
        "stack.yaml:5:13: target_groups.tg: health_check path applies only to protocol http"
    );
    assert_eq!(
        tg(&["    health_check:", "      protocol: https"]),
        "stack.yaml:5:17: target_groups.tg: unknown health_check protocol 'https' (expected \
         tcp or http)"
    );
    assert_eq!(
        tg(&["    health_check:", "      port: 0"]),
        "stack.yaml:5:13: target_groups.tg: health_check port 0 is out of range 1-65535"
    );
}

#[test]
fn target_group_settings() {
    assert_eq!(
        tg(&["    target_type: alb"]),
        "stack.yaml:4:18: target_groups.tg: unknown target_type 'alb' (expected instance or ip)"
    );
    assert_eq!(
        tg(&["    target_type: ip", "    transparent: true"]),
        "stack.yaml:5:18: target_groups.tg: transparent needs preserve_client_ip: true (it \
         binds the client's address)"
    );
    assert_eq!(
        tg(&["    protocol: udp"]),
        "stack.yaml:4:15: target_groups.tg: unsupported protocol 'udp' (only tcp)"
    );
    assert_eq!(
        tg(&["    deregistration_delay: 30"]),
        "stack.yaml:4:27: target_groups.tg: invalid deregistration_delay '30': time unit \
         needed, for example 30sec or 30ms"
    );
    assert_eq!(
        tg(&["    target_max_connections: 0"]),
        "stack.yaml:4:29: target_groups.tg: target_max_connections 0 is out of range \
         1-4294967295"
    );
    assert_eq!(
        err(&["target_groups:", "  tg:", "    port: 0"]),
        "stack.yaml:3:11: target_groups.tg: port 0 is out of range 1-65535"
    );
}

/// Zones a and c, a target group `tg` whose targets start on line 8.
fn targets(lines: &[&'static str]) -> String {
    let mut doc = with_zones(&["target_groups:", "  tg:", "    port: 3128", "    targets:"]);
    doc.extend(lines);
    err(&doc)
}

#[test]
fn static_targets() {
    assert_eq!(
        targets(&[
            "      - { address: 127.10.1.50 }",
            "      - { address: 127.10.2.50, zone: a }",
        ]),
        "stack.yaml:9:20: target_groups.tg.targets[1]: address 127.10.2.50 is outside zone a's \
         subnet 127.10.1.0/24"
    );
    assert_eq!(
        targets(&["      - { address: 127.99.0.1 }"]),
        "stack.yaml:8:20: target_groups.tg.targets[0]: address 127.99.0.1 is in no zone's \
         subnet"
    );
    assert_eq!(
        targets(&["      - { address: 127.10.1.50, zone: b }"]),
        "stack.yaml:8:39: target_groups.tg.targets[0]: unknown zone 'b' (defined: a, c)"
    );
    assert_eq!(
        targets(&["      - { address: 127.10.1.50, port: 0 }"]),
        "stack.yaml:8:39: target_groups.tg.targets[0]: port 0 is out of range 1-65535"
    );
    assert_eq!(
        targets(&["      - { address: proxy-1 }"]),
        "stack.yaml:8:20: target_groups.tg.targets[0]: invalid address 'proxy-1' (expected \
         like 127.10.1.10)"
    );
}
