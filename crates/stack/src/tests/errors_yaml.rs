//! YAML syntax and schema errors: serde-saphyr's position, our object name.

use super::{err, error};

#[test]
fn syntax_error_has_line_column_and_object() {
    assert_eq!(
        err(&[
            "listeners:",
            "  - { load_balancer: front, port: 3128, target_group: tg }",
            "   - { load_balancer: front, port: 3129, target_group: tg }",
        ]),
        "stack.yaml:3:4: listeners[1]: while parsing a block collection, did not find \
         expected '-' indicator"
    );
}

#[test]
fn unclosed_flow_mapping_is_a_syntax_error() {
    let e = error(&[
        "zones:",
        "  a: { subnet: 127.10.1.0/24",
        "  c: { subnet: 127.10.2.0/24 }",
    ]);
    assert_eq!(e.object(), "zones.a");
    assert_eq!(e.line(), 3, "{e}");
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        err(&["zones: {}", "zone: {}"]),
        "stack.yaml:2:1: stack: unknown field `zone`, expected one of admin, etcd, hosts, dns, zones, \
         networks, service_networks, security_groups, load_balancers, listeners, target_groups, \
         launch_templates, groups"
    );
}

#[test]
fn unknown_key_in_a_nested_mapping_names_the_object() {
    assert_eq!(
        err(&[
            "target_groups:",
            "  tg:",
            "    port: 3128",
            "    health_check:",
            "      protocol: tcp",
            "      intervall: 5s",
        ]),
        "stack.yaml:6:7: target_groups.tg: unknown field `intervall`, expected one of \
         protocol, path, matcher, port, interval, timeout, healthy_threshold, unhealthy_threshold"
    );
}

#[test]
fn unknown_key_in_a_list_entry_names_the_entry() {
    assert_eq!(
        err(&[
            "listeners:",
            "  - { load_balancer: front, port: 3128, target_group: tg }",
            "  - { load_balancer: front, port: 3129, target_group: tg, tls: true }",
        ]),
        "stack.yaml:3:59: listeners[1]: unknown field `tls`, expected one of load_balancer, \
         port, protocol, target_group, allowed_cidrs"
    );
    assert_eq!(
        err(&[
            "security_groups:",
            "  sg:",
            "    ingress:",
            "      - { protocol: tcp, ports: 1, from: a }",
            "      - { protocol: tcp, port: 1, from: a }",
        ]),
        "stack.yaml:5:26: security_groups.sg.ingress[1]: unknown field `port`, expected one \
         of protocol, ports, from"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        err(&["target_groups:", "  tg:", "    port: abc"]),
        "stack.yaml:3:11: target_groups.tg: expected a whole number (0 or more)"
    );
    assert_eq!(
        err(&["groups:", "  g:", "    min: -1"]),
        "stack.yaml:3:10: groups.g: expected a whole number (0 or more)"
    );
    assert_eq!(
        err(&[
            "load_balancers:",
            "  front:",
            "    zones: [a]",
            "    cross_zone: maybe"
        ]),
        "stack.yaml:4:17: load_balancers.front: invalid boolean"
    );
    assert_eq!(
        err(&["zones: [a, c]"]),
        "stack.yaml:1:8: zones: expected mapping start"
    );
    assert_eq!(
        err(&["zones:", "  a:", "    subnet: [127.10.1.0/24]"]),
        "stack.yaml:3:13: zones.a: expected string scalar"
    );
}

#[test]
fn missing_key() {
    let e = error(&["groups:", "  proxies:", "    min: 1", "    max: 1"]);
    assert_eq!(e.object(), "groups.proxies");
    assert_eq!(e.message(), "missing field `launch_template`");
    // serde-saphyr points at the end of the mapping that lacks the key.
    assert_eq!((e.line(), e.column()), (4, 5), "{e}");
}

#[test]
fn duplicate_key() {
    assert_eq!(
        err(&[
            "zones:",
            "  a: { subnet: 127.10.1.0/24 }",
            "  a: { subnet: 127.10.2.0/24 }",
        ]),
        "stack.yaml:3:3: zones: duplicate mapping key `a` is not allowed here"
    );
}

#[test]
fn errors_after_a_failed_parse_do_not_leak_into_the_next() {
    let _ = error(&["zones:", "  a: { subnet: 127.10.1.0/24, x: 1 }"]);
    assert_eq!(
        err(&["zonez: {}"]).split(": ").nth(1),
        Some("stack"),
        "the object of an earlier failure must not stick"
    );
}

#[test]
fn every_truncation_of_the_builtin_stack_is_an_answer_not_a_panic() {
    let text = crate::BUILTIN;
    let mut errors = 0;
    // Every 4th cut keeps the test quick; the builtin is ASCII, so each is a char boundary.
    for (cut, _) in text.char_indices().step_by(4) {
        match crate::parse(&text[..cut], std::path::Path::new("cut.yaml")) {
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                assert!(e.line() >= 1 && e.column() >= 1, "{e}");
                assert!(e.to_string().starts_with("cut.yaml:"), "{e}");
            }
        }
    }
    assert!(errors > 0);
}

#[test]
fn the_admin_section_is_optional_checked_and_named() {
    assert!(!super::ok(&["zones: {}"]).admin.read_requires_token);
    assert!(!super::ok(&["admin:"]).admin.read_requires_token);
    assert!(
        !super::ok(&["admin: { read_requires_token: false }"])
            .admin
            .read_requires_token
    );
    assert!(
        super::ok(&["admin:", "  read_requires_token: true"])
            .admin
            .read_requires_token
    );
    assert_eq!(
        err(&[
            "zones: {}",
            "admin:",
            "  read_requires_token: true",
            "  read_requires: true"
        ]),
        "stack.yaml:4:3: admin: unknown field `read_requires`, expected one of read_requires_token"
    );
    let e = error(&["admin:", "  read_requires_token: maybe"]);
    assert_eq!((e.line(), e.column(), e.object()), (2, 24, "admin"), "{e}");
}
