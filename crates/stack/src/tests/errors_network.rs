//! Zones, networks and security group rules.

use super::{err, ok, with_zones, ZONES};

#[test]
fn zone_name_must_be_lowercase_letters_digits_and_dashes() {
    assert_eq!(
        err(&["zones:", "  Zone_A: { subnet: 127.10.1.0/24 }"]),
        "stack.yaml:2:3: zones.Zone_A: zone name 'Zone_A' may only hold lowercase letters, \
         digits and '-'"
    );
}

#[test]
fn zone_subnet_must_be_a_cidr_without_host_bits() {
    assert_eq!(
        err(&["zones:", "  a: { subnet: not-a-cidr }"]),
        "stack.yaml:2:16: zones.a: invalid CIDR 'not-a-cidr' (expected like 127.10.1.0/24)"
    );
    assert_eq!(
        err(&["zones:", "  a: { subnet: 127.10.1.10 }"]),
        "stack.yaml:2:16: zones.a: invalid CIDR '127.10.1.10' (expected like 127.10.1.0/24)"
    );
    assert_eq!(
        err(&["zones:", "  a: { subnet: 127.10.1.5/24 }"]),
        "stack.yaml:2:16: zones.a: 127.10.1.5/24 has host bits set (did you mean \
         127.10.1.0/24?)"
    );
}

#[test]
fn zone_subnets_must_not_overlap() {
    assert_eq!(
        err(&[
            "zones:",
            "  a: { subnet: 127.10.0.0/16 }",
            "  c: { subnet: 127.10.2.0/24 }",
        ]),
        "stack.yaml:3:16: zones.c: subnet 127.10.2.0/24 overlaps zones.a (127.10.0.0/16)"
    );
    assert_eq!(
        err(&[
            "zones:",
            "  a: { subnet: 127.10.1.0/24 }",
            "  c:",
            "    subnet: 127.0.0.0/8",
        ]),
        "stack.yaml:4:13: zones.c: subnet 127.0.0.0/8 overlaps zones.a (127.10.1.0/24)"
    );
}

#[test]
fn network_names_and_cidrs() {
    assert_eq!(
        err(&with_zones(&["networks:", "  a: 127.20.0.0/16"])),
        "stack.yaml:5:3: networks.a: network name 'a' is also a zone's name; rules naming it \
         would be ambiguous"
    );
    assert_eq!(
        err(&with_zones(&["networks:", "  app: 127.20.0.0/33"])),
        "stack.yaml:5:8: networks.app: invalid CIDR '127.20.0.0/33' (expected like \
         127.10.1.0/24)"
    );
    assert_eq!(
        err(&["networks:", "  app.net: 127.20.0.0/16"]),
        "stack.yaml:2:3: networks.app.net: network name 'app.net' may only hold letters, \
         digits, '-' and '_'"
    );
}

/// A security group `sg` whose first rule is fine and whose second is `rule` (line 5).
fn second_rule(rule: &'static str) -> String {
    err(&[
        "security_groups:",
        "  sg:",
        "    ingress:",
        "      - { protocol: tcp, ports: \"3128\", from: 127.20.0.0/16 }",
        rule,
    ])
}

#[test]
fn unknown_names_in_from() {
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: \"3128\", from: ap }"),
        "stack.yaml:5:47: security_groups.sg.ingress[1]: unknown source 'ap' (expected a \
         network or zone name, a CIDR, sg:NAME or lb:NAME)"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: \"3128\", from: sg:nope }"),
        "stack.yaml:5:47: security_groups.sg.ingress[1]: unknown security group 'nope' \
         (defined: sg)"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: \"3128\", from: lb:front }"),
        "stack.yaml:5:47: security_groups.sg.ingress[1]: unknown load balancer 'front' \
         (none are defined)"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: \"3128\", from: 10.0.0.0/33 }"),
        "stack.yaml:5:47: security_groups.sg.ingress[1]: invalid CIDR '10.0.0.0/33' \
         (expected like 127.10.1.0/24)"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: \"3128\", from: 10.0.0.1/8 }"),
        "stack.yaml:5:47: security_groups.sg.ingress[1]: 10.0.0.1/8 has host bits set (did \
         you mean 10.0.0.0/8?)"
    );
}

#[test]
fn rule_ports() {
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: \"0\", from: 127.20.0.0/16 }"),
        "stack.yaml:5:33: security_groups.sg.ingress[1]: port 0 is out of range 1-65535"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: 3128-70000, from: 127.20.0.0/16 }"),
        "stack.yaml:5:33: security_groups.sg.ingress[1]: port 70000 is out of range 1-65535"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: 3130-3128, from: 127.20.0.0/16 }"),
        "stack.yaml:5:33: security_groups.sg.ingress[1]: ports 3130-3128: the range is \
         reversed"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, ports: http, from: 127.20.0.0/16 }"),
        "stack.yaml:5:33: security_groups.sg.ingress[1]: invalid ports 'http' (expected a \
         port like 3128 or a range like 3128-3130)"
    );
    assert_eq!(
        second_rule("      - { protocol: tcp, from: 127.20.0.0/16 }"),
        "stack.yaml:5:9: security_groups.sg.ingress[1]: missing ports for protocol tcp"
    );
    assert_eq!(
        second_rule("      - { protocol: all, ports: 1-2, from: 127.20.0.0/16 }"),
        "stack.yaml:5:33: security_groups.sg.ingress[1]: ports do not apply to protocol all \
         (it admits every port)"
    );
}

#[test]
fn rule_protocol() {
    assert_eq!(
        second_rule("      - { protocol: icmp, ports: \"1\", from: 127.20.0.0/16 }"),
        "stack.yaml:5:21: security_groups.sg.ingress[1]: unknown protocol 'icmp' (expected \
         tcp, udp or all)"
    );
}

#[test]
fn rules_in_block_style_point_at_the_value() {
    assert_eq!(
        err(&[
            "security_groups:",
            "  sg:",
            "    ingress:",
            "      - protocol: tcp",
            "        ports: 3128",
            "        from: sg:other",
        ]),
        "stack.yaml:6:15: security_groups.sg.ingress[0]: unknown security group 'other' \
         (defined: sg)"
    );
}

#[test]
fn service_networks_name_networks_or_cidrs() {
    let stack = ok(&[
        ZONES[0],
        ZONES[1],
        ZONES[2],
        "networks: { svc: 127.30.0.0/16 }",
        "service_networks: [svc, 127.31.0.0/16, 127.0.0.53]",
    ]);
    let nets: Vec<String> = stack
        .service_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["127.30.0.0/16", "127.31.0.0/16", "127.0.0.53/32"]);
    assert!(
        ok(&ZONES).service_networks.is_empty(),
        "none unless declared"
    );
}

#[test]
fn service_networks_errors() {
    let doc = |entry: &str| {
        err(&[
            ZONES[0],
            ZONES[1],
            ZONES[2],
            "networks: { svc: 127.30.0.0/16 }",
            &format!("service_networks: [svc, {entry}]"),
        ])
    };
    assert_eq!(
        doc("nope"),
        "stack.yaml:5:25: service_networks[1]: unknown network 'nope' (expected a name from \
         networks, a CIDR or an address)"
    );
    assert_eq!(
        doc("127.10.0.0/16"),
        "stack.yaml:5:25: service_networks[1]: 127.10.0.0/16 overlaps zone a's subnet \
         127.10.1.0/24: the zones hold the tier's own nodes and instances, which are never \
         reachable through the proxies"
    );
    assert_eq!(
        doc("127.30.0.1/16"),
        "stack.yaml:5:25: service_networks[1]: 127.30.0.1/16 has host bits set (did you mean \
         127.30.0.0/16?)"
    );
}
