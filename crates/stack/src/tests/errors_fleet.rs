//! Launch templates (placeholders) and groups.

use super::{err, ok};

/// A launch template `proxy` with the given lines from line 3 on.
fn lt(lines: &[&'static str]) -> String {
    let mut doc = vec!["launch_templates:", "  proxy:"];
    doc.extend(lines);
    err(&doc)
}

#[test]
fn unknown_placeholder_in_command_points_at_it() {
    assert_eq!(
        lt(&["    command: [proxyfleet, proxy, -f, \"{dir}/{conf}\"]"]),
        "stack.yaml:3:45: launch_templates.proxy: unknown placeholder {conf} (known: {id} \
         {zone} {address} {port} {dir} {group}; write {{ for a literal {)"
    );
}

#[test]
fn unknown_placeholder_in_environment_points_at_it() {
    assert_eq!(
        lt(&[
            "    command: [x]",
            "    environment:",
            "      LOG: \"{level}\""
        ]),
        "stack.yaml:5:13: launch_templates.proxy: unknown placeholder {level} (known: {id} \
         {zone} {address} {port} {dir} {group}; write {{ for a literal {)"
    );
}

#[test]
fn unknown_placeholder_in_a_file_points_at_its_line() {
    assert_eq!(
        lt(&[
            "    command: [x]",
            "    files:",
            "      squid.conf: |",
            "        http_port {address}:{port}",
            "        acl x src {{127.0.0.1}",
            "        visible_hostname {host}",
        ]),
        "stack.yaml:8:26: launch_templates.proxy: unknown placeholder {host} (known: {id} \
         {zone} {address} {port} {dir} {group}; write {{ for a literal {)"
    );
}

#[test]
fn unclosed_placeholder() {
    assert_eq!(
        lt(&["    command: [\"{id\"]"]),
        "stack.yaml:3:16: launch_templates.proxy: '{' without a closing '}' on the same line \
         (write {{ for a literal {)"
    );
}

#[test]
fn placeholder_written_with_escapes_points_at_the_scalar() {
    // The source shows no brace, so the position falls back to the string's start.
    assert_eq!(
        lt(&["    command: [x, \"\\x7Bbad}\"]"]),
        "stack.yaml:3:18: launch_templates.proxy: unknown placeholder {bad} (known: {id} \
         {zone} {address} {port} {dir} {group}; write {{ for a literal {)"
    );
}

#[test]
fn launch_template_fields() {
    assert_eq!(
        lt(&["    command: []"]),
        "stack.yaml:3:14: launch_templates.proxy: command is empty"
    );
    assert_eq!(
        lt(&["    command: [x]", "    files:", "      ../etc/passwd: x"]),
        "stack.yaml:5:7: launch_templates.proxy: file name '../etc/passwd' must be a relative \
         path inside the instance's directory"
    );
    assert_eq!(
        lt(&["    command: [x]", "    files:", "      /etc/passwd: x"]),
        "stack.yaml:5:7: launch_templates.proxy: file name '/etc/passwd' must be a relative \
         path inside the instance's directory"
    );
    assert_eq!(
        lt(&["    command: [x]", "    environment:", "      \"A=B\": x"]),
        "stack.yaml:5:7: launch_templates.proxy: invalid environment variable name 'A=B'"
    );
    assert_eq!(
        lt(&["    command: [x]", "    stop_timeout: forever"]),
        "stack.yaml:4:19: launch_templates.proxy: invalid stop_timeout 'forever': expected \
         number at 0"
    );
}

/// Zones a and c, a launch template, a target group, a load balancer `front` in zone a and
/// the start of group `proxies` (lines 1-12); the group's fields follow from line 13.
const GROUP: [&str; 12] = [
    "zones:",
    "  a: { subnet: 127.10.1.0/24 }",
    "  c: { subnet: 127.10.2.0/24 }",
    "launch_templates:",
    "  proxy: { command: [proxyfleet] }",
    "target_groups:",
    "  tg: { port: 3128 }",
    "load_balancers:",
    "  front: { zones: [a] }",
    "groups:",
    "  proxies:",
    "    launch_template: proxy",
];

fn group(lines: &[&'static str]) -> Vec<&'static str> {
    GROUP.iter().chain(lines).copied().collect()
}

#[test]
fn min_desired_max() {
    let sizes = |min, max, desired| err(&group(&[min, max, desired, "    zones: [a, c]"]));
    assert_eq!(
        sizes("    min: 3", "    max: 4", "    desired: 2"),
        "stack.yaml:15:14: groups.proxies: min 3 > desired 2"
    );
    assert_eq!(
        sizes("    min: 1", "    max: 4", "    desired: 5"),
        "stack.yaml:15:14: groups.proxies: desired 5 > max 4"
    );
    assert_eq!(
        sizes("    min: 5", "    max: 4", "    desired: 4"),
        "stack.yaml:13:10: groups.proxies: min 5 > max 4"
    );
    assert_eq!(
        sizes("    min: 0", "    max: 0", "    desired: 0"),
        "stack.yaml:14:10: groups.proxies: max must be at least 1"
    );
}

/// min 1, max 2, then `lines` from line 15.
fn sized(lines: &[&'static str]) -> String {
    let mut doc = group(&["    min: 1", "    max: 2"]);
    doc.extend(lines);
    err(&doc)
}

#[test]
fn group_references() {
    assert_eq!(
        err(&[
            "launch_templates: { proxy: { command: [x] } }",
            "groups:",
            "  g: { launch_template: squid, min: 1, max: 1, zones: [a] }",
        ]),
        "stack.yaml:3:25: groups.g: unknown launch template 'squid' (defined: proxy)"
    );
    assert_eq!(
        sized(&["    zones: [a, b]"]),
        "stack.yaml:15:16: groups.proxies: unknown zone 'b' (defined: a, c)"
    );
    assert_eq!(
        sized(&["    zones: []"]),
        "stack.yaml:15:12: groups.proxies: zones is empty"
    );
    assert_eq!(
        sized(&["    zones: [a]", "    target_groups: [tg, other]"]),
        "stack.yaml:16:25: groups.proxies: unknown target group 'other' (defined: tg)"
    );
    assert_eq!(
        sized(&["    zones: [a]", "    target_groups: [tg, tg]"]),
        "stack.yaml:16:25: groups.proxies: target group 'tg' is listed twice"
    );
    assert_eq!(
        sized(&["    zones: [a]", "    security_groups: [proxy-sg]"]),
        "stack.yaml:16:23: groups.proxies: unknown security group 'proxy-sg' (none are defined)"
    );
}

#[test]
fn health_check_type() {
    assert_eq!(
        sized(&["    zones: [a]", "    health_check_type: lb"]),
        "stack.yaml:16:24: groups.proxies: health_check_type lb needs at least one target group"
    );
    assert_eq!(
        sized(&["    zones: [a]", "    health_check_type: elb"]),
        "stack.yaml:16:24: groups.proxies: unknown health_check_type 'elb' (expected process or \
         lb)"
    );
    assert_eq!(
        sized(&["    zones: [a]", "    health_check_grace_period: 2"]),
        "stack.yaml:16:32: groups.proxies: invalid health_check_grace_period '2': time unit \
         needed, for example 2sec or 2ms"
    );
}

#[test]
fn scaling() {
    assert_eq!(
        sized(&[
            "    zones: [a]",
            "    scaling: { target_active_connections_per_instance: 100 }",
        ]),
        "stack.yaml:16:14: groups.proxies: scaling needs at least one target group (it tracks \
         the load balancer's active connections)"
    );
    assert_eq!(
        sized(&[
            "    zones: [a]",
            "    target_groups: [tg]",
            "    scaling:",
            "      target_active_connections_per_instance: 0",
        ]),
        "stack.yaml:18:47: groups.proxies: target_active_connections_per_instance 0 is out of \
         range 1-4294967295"
    );
}

#[test]
fn instance_addresses() {
    assert_eq!(
        sized(&["    zones: [a]", "    first_address: 0"]),
        "stack.yaml:16:20: groups.proxies: first_address 0 is out of range 1-4294967295"
    );
    assert_eq!(
        sized(&["    zones: [a]", "    first_address: 9"]),
        "stack.yaml:16:20: groups.proxies: instance addresses 127.10.1.9-127.10.1.10 in zone a \
         include load_balancers.front's node 127.10.1.10; set first_address"
    );
    assert_eq!(
        sized(&["    zones: [c]", "    first_address: 254"]),
        "stack.yaml:16:20: groups.proxies: zone c's subnet 127.10.2.0/24 has no room for max 2 \
         instances from host .254"
    );
    assert_eq!(
        err(&group(&["    min: 1", "    max: 300", "    zones: [c]"])),
        "stack.yaml:14:10: groups.proxies: zone c's subnet 127.10.2.0/24 has no room for max \
         300 instances from host .11"
    );
}

#[test]
fn groups_sharing_a_zone_need_distinct_addresses() {
    let mut doc = group(&["    min: 1", "    max: 2", "    zones: [a, c]", "  more:"]);
    doc.extend([
        "    launch_template: proxy",
        "    min: 1",
        "    max: 2",
        "    zones: [c]",
        "    first_address: 12",
    ]);
    assert_eq!(
        err(&doc),
        "stack.yaml:21:20: groups.more: instance addresses 127.10.2.12-127.10.2.13 in zone c \
         overlap groups.proxies's (127.10.2.11-127.10.2.12); set first_address"
    );
    let last = doc.len() - 1;
    doc[last] = "    first_address: 13";
    let stack = ok(&doc);
    assert_eq!(stack.groups.len(), 2);
}

#[test]
fn group_zones_need_not_be_load_balancer_zones() {
    // The load balancer `front` is only in zone a; the group also runs in zone c.
    let stack = ok(&group(&[
        "    min: 2",
        "    max: 2",
        "    zones: [a, c]",
        "    target_groups: [tg]",
    ]));
    assert_eq!(stack.groups[0].zones, ["a", "c"]);
    assert_eq!(stack.load_balancers[0].nodes.len(), 1);
}
