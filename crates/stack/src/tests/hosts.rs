//! The `hosts:` and `dns:` sections, and what a tier across hosts changes in target groups.

use super::{err, ok};

const ZONES: [&str; 4] = [
    "zones:",
    "  a: {subnet: 198.18.1.0/24}",
    "  b: {subnet: 198.18.2.0/24}",
    "target_groups: {proxies: {port: 3128}}",
];

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut lines: Vec<&str> = ZONES.to_vec();
    lines.extend_from_slice(extra);
    lines
}

#[test]
fn hosts_and_the_dns_name() {
    let stack = ok(&with(&[
        "hosts:",
        "  host-a: {zone: a, address: 198.18.0.1, interface: eth0}",
        "  host-b: {zone: b, address: 198.18.0.2}",
        "dns: {name: Proxy.Tier.Internal.}",
    ]));
    assert_eq!(stack.hosts.len(), 2);
    assert_eq!(stack.hosts[0].id, "host-a");
    assert_eq!(stack.hosts[0].zone, "a");
    assert_eq!(stack.hosts[0].interface.as_deref(), Some("eth0"));
    assert_eq!(stack.hosts[1].interface, None);
    let dns = stack.dns.expect("a dns section");
    assert_eq!(
        dns.name, "proxy.tier.internal",
        "lowercase, no trailing dot"
    );
    assert_eq!(dns.port, 53);
}

#[test]
fn across_hosts_the_client_address_travels_by_proxy_v2() {
    let one_machine = ok(&ZONES);
    assert!(one_machine.target_groups[0].preserve_client_ip);
    assert!(!one_machine.target_groups[0].proxy_protocol_v2);
    let across = ok(&with(&["hosts: {h1: {zone: a, address: 198.18.0.1}}"]));
    assert!(!across.target_groups[0].preserve_client_ip);
    assert!(across.target_groups[0].proxy_protocol_v2);
}

#[test]
fn bad_hosts_and_names_say_where() {
    assert_eq!(
        err(&with(&["hosts: {h1: {zone: z, address: 198.18.0.1}}"])),
        "stack.yaml:5:20: hosts.h1: unknown zone 'z' (the stack has: a, b)"
    );
    assert_eq!(
        err(&with(&[
            "hosts:",
            "  h1: {zone: a, address: 198.18.0.1}",
            "  h2: {zone: b, address: 198.18.0.1}",
        ])),
        "stack.yaml:7:26: hosts.h2: address 198.18.0.1 is host h1's already"
    );
    assert_eq!(
        err(&with(&[
            "hosts: {h1: {zone: a, address: 198.18.0.1, interface: a/b}}"
        ])),
        "stack.yaml:5:55: hosts.h1: interface 'a/b' is not a Linux interface name (1 to 15 \
         characters, no '/', ':' or spaces)"
    );
    assert_eq!(
        err(&with(&["dns: {name: 'proxy..internal'}"])),
        "stack.yaml:5:13: dns: name 'proxy..internal' is not a DNS name (labels of letters, \
         digits and '-', like proxy.tier.internal)"
    );
    let mut lines = ZONES.to_vec();
    lines[3] = "target_groups: {proxies: {port: 3128, preserve_client_ip: true}}";
    lines.push("hosts: {h1: {zone: a, address: 198.18.0.1}}");
    assert!(err(&lines).contains(
        "target_groups.proxies: across hosts (a stack with hosts) preserve_client_ip needs transparent: true"
    ));
}
