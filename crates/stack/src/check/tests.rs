//! Each finding on a small stack that has exactly that mistake, with its message, and the
//! corrected stack clean. `BASE` is the built-in stack without comments; each test states
//! its change to it as text replacements.

use std::path::Path;

use super::{check, Finding, Severity};
use crate::{builtin, parse, Stack};

const BASE: &str = r#"
zones:
  a: { subnet: 127.10.1.0/24 }
  c: { subnet: 127.10.2.0/24 }
networks:
  app: 127.20.0.0/16
  service: 127.30.0.0/16
security_groups:
  proxy-sg:
    ingress:
      - { protocol: tcp, ports: "3128", from: app }
      - { protocol: tcp, ports: "3128", from: a }
      - { protocol: tcp, ports: "3128", from: c }
load_balancers:
  front:
    zones: [a, c]
    cross_zone: false
listeners:
  - { load_balancer: front, port: 3128, protocol: tcp, target_group: proxies }
target_groups:
  proxies:
    port: 3128
    preserve_client_ip: true
    proxy_protocol_v2: false
    health_check: { protocol: http, path: /healthz, interval: 500ms }
launch_templates:
  proxy:
    command: [proxyfleet, proxy, -f, "{dir}/squid.conf"]
    files:
      squid.conf: |
        http_port {address}:{port}
        acl app src 127.20.0.0/16
        http_access allow app
        http_access deny all
groups:
  proxies:
    launch_template: proxy
    min: 2
    max: 2
    zones: [a, c]
    target_groups: [proxies]
    security_groups: [proxy-sg]
    health_check_type: lb
"#;

/// `BASE` with each `(from, to)` replaced once (each `from` must occur).
fn stack(edits: &[(&str, &str)]) -> Stack {
    let mut text = BASE.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "not in BASE: {from}");
        text = text.replacen(from, to, 1);
    }
    parse(&text, Path::new("stack.yaml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The findings, as `proxyfleet check` prints them.
fn findings(edits: &[(&str, &str)]) -> Vec<String> {
    check(&stack(edits))
        .iter()
        .map(Finding::to_string)
        .collect()
}

const RULE_A: &str = "      - { protocol: tcp, ports: \"3128\", from: a }\n";
const RULE_C: &str = "      - { protocol: tcp, ports: \"3128\", from: c }\n";
const RULE_APP: &str = "      - { protocol: tcp, ports: \"3128\", from: app }\n";
const PRESERVE: &str = "preserve_client_ip: true";
const ACL_APP: &str = "        acl app src 127.20.0.0/16\n";
const HTTP_PORT: &str = "        http_port {address}:{port}\n";

#[test]
fn the_builtin_stack_is_clean() {
    assert_eq!(check(&builtin()), []);
}

#[test]
fn the_base_stack_is_clean() {
    assert_eq!(findings(&[]), Vec::<String>::new());
}

#[test]
fn display_and_severity() {
    let f = Finding {
        severity: Severity::Warning,
        object: "groups.proxies".into(),
        message: "desired 1 is fewer than its 2 zones (a, c)".into(),
    };
    assert_eq!(
        f.to_string(),
        "warning: groups.proxies: desired 1 is fewer than its 2 zones (a, c)"
    );
    assert_eq!(Severity::Error.to_string(), "error");
}

#[test]
fn security_group_without_the_nodes_fails_health_checks() {
    assert_eq!(
        findings(&[(RULE_A, ""), (RULE_C, "")]),
        [
            "error: groups.proxies: security group proxy-sg admits 127.20.0.0/16 on 3128 but not \
          the load balancer nodes' subnets 127.10.1.0/24, 127.10.2.0/24: health checks will \
          fail and no target will become healthy"
        ]
    );
}

#[test]
fn security_group_without_one_node() {
    assert_eq!(
        findings(&[(RULE_C, "")]),
        ["error: groups.proxies: security group proxy-sg admits 127.20.0.0/16, 127.10.1.0/24 on \
          3128 but not the load balancer node's subnet 127.10.2.0/24: health checks from that \
          node will fail and it will judge every target unhealthy"]
    );
}

#[test]
fn lb_source_admits_the_nodes() {
    let lb = "      - { protocol: tcp, ports: \"3128\", from: \"lb:front\" }\n";
    assert_eq!(
        findings(&[(RULE_A, lb), (RULE_C, "")]),
        Vec::<String>::new()
    );
    // sg: admits the instances, not the nodes.
    let sg = "      - { protocol: tcp, ports: \"3128\", from: \"sg:proxy-sg\" }\n";
    assert_eq!(
        findings(&[(RULE_A, sg), (RULE_C, "")]),
        [
            "error: groups.proxies: security group proxy-sg admits 127.20.0.0/16, sg:proxy-sg on \
          3128 but not the load balancer nodes' subnets 127.10.1.0/24, 127.10.2.0/24: health \
          checks will fail and no target will become healthy"
        ]
    );
}

#[test]
fn health_checks_on_their_own_port() {
    let edits = [
        ("interval: 500ms", "interval: 500ms, port: 8080"),
        (
            HTTP_PORT,
            "        http_port {address}:{port}\n        http_port 8080\n",
        ),
    ];
    assert_eq!(
        findings(&edits),
        [
            "error: groups.proxies: security group proxy-sg admits nothing on 8080 but not the \
          load balancer nodes' subnets 127.10.1.0/24, 127.10.2.0/24: health checks will fail \
          and no target will become healthy"
        ]
    );
    let all = "      - { protocol: tcp, ports: \"3128-8080\", from: a }\n";
    let fixed = [
        edits[0],
        edits[1],
        (RULE_A, all),
        (RULE_C, all.replace("a }", "c }").leak()),
    ];
    assert_eq!(findings(&fixed), Vec::<String>::new());
}

#[test]
fn without_client_ip_preservation_the_nodes_carry_the_traffic() {
    assert_eq!(
        findings(&[
            (PRESERVE, "preserve_client_ip: false"),
            (RULE_A, ""),
            (RULE_C, "")
        ]),
        [
            "error: groups.proxies: security group proxy-sg admits 127.20.0.0/16 on 3128 but \
             not the load balancer nodes' subnets 127.10.1.0/24, 127.10.2.0/24: traffic and \
             health checks will fail and no target will become healthy",
            "error: groups.proxies: the instances' proxy config squid.conf does not admit the \
             load balancer nodes 127.10.1.10, 127.10.2.10 in http_access, and with \
             preserve_client_ip off on target group proxies (and no PROXY header) the proxies \
             see their addresses: every request will be denied (403)",
        ]
    );
    // Admitting the nodes, and no longer the clients, is right here.
    let acl = "        acl app src 127.10.1.10 127.10.2.10\n";
    assert_eq!(
        findings(&[
            (PRESERVE, "preserve_client_ip: false"),
            (RULE_APP, ""),
            (ACL_APP, acl)
        ]),
        Vec::<String>::new()
    );
}

#[test]
fn security_group_without_the_clients_drops_their_connections() {
    assert_eq!(
        findings(&[(RULE_APP, "")]),
        [
            "error: groups.proxies: preserve_client_ip is on for target group proxies, but \
          proxy-sg does not admit the clients' network 127.20.0.0/16 on 3128: clients' \
          connections will be dropped"
        ]
    );
}

#[test]
fn listener_allowed_cidrs_are_the_clients() {
    let listener = "target_group: proxies }";
    let allowed = "target_group: proxies, allowed_cidrs: [127.21.0.0/16] }";
    assert_eq!(
        findings(&[(listener, allowed)]),
        [
            "error: groups.proxies: preserve_client_ip is on for target group proxies, but \
             proxy-sg does not admit the clients' network 127.21.0.0/16 on 3128: clients' \
             connections will be dropped",
            "error: groups.proxies: the instances' proxy config squid.conf does not admit the \
             clients' network 127.21.0.0/16 in http_access: their requests will be denied (403)",
        ]
    );
    // Two rules that together cover the network admit it.
    let halves = "      - { protocol: tcp, ports: \"3128\", from: 127.21.0.0/17 }\n      \
                  - { protocol: tcp, ports: \"3128\", from: 127.21.128.0/17 }\n";
    let acl = "        acl app src 127.21.0.0/16\n";
    assert_eq!(
        findings(&[(listener, allowed), (RULE_APP, halves), (ACL_APP, acl)]),
        Vec::<String>::new()
    );
}

#[test]
fn a_group_without_security_groups_admits_everything() {
    assert_eq!(
        findings(&[
            (RULE_A, ""),
            (RULE_C, ""),
            (RULE_APP, ""),
            ("    security_groups: [proxy-sg]\n", "")
        ]),
        Vec::<String>::new()
    );
}

#[test]
fn http_access_that_denies_the_clients() {
    assert_eq!(
        findings(&[(ACL_APP, "        acl app src 127.21.0.0/16\n")]),
        [
            "error: groups.proxies: the instances' proxy config squid.conf does not admit the \
          clients' network 127.20.0.0/16 in http_access: their requests will be denied (403)"
        ]
    );
}

#[test]
fn proxy_header_required_but_not_sent() {
    let required = "        http_port {address}:{port} require-proxy-header\n";
    assert_eq!(
        findings(&[(HTTP_PORT, required)]),
        ["error: groups.proxies: the instances' proxy config squid.conf requires a PROXY header \
          on port 3128 (require-proxy-header) that the load balancer will not send (target \
          group proxies has proxy_protocol_v2 false): connections without one are closed, so \
          every request will fail"]
    );
}

#[test]
fn proxy_header_sent_but_not_expected() {
    assert_eq!(
        findings(&[("proxy_protocol_v2: false", "proxy_protocol_v2: true")]),
        [
            "error: groups.proxies: target group proxies sends a PROXY v2 header \
          (proxy_protocol_v2 true) that the instances' proxy config squid.conf does not expect \
          on port 3128 (no require-proxy-header): the proxy takes it for a malformed request, \
          so every request will fail"
        ]
    );
}

#[test]
fn proxy_header_senders_must_be_admitted() {
    let v2 = ("proxy_protocol_v2: false", "proxy_protocol_v2: true");
    let required = (
        HTTP_PORT,
        "        http_port {address}:{port} require-proxy-header\n",
    );
    // proxy_protocol_access with no lines denies every sender (Squid's default).
    assert_eq!(
        findings(&[v2, required]),
        [
            "error: groups.proxies: the instances' proxy config squid.conf does not admit the \
             load balancer nodes 127.10.1.10, 127.10.2.10 in proxy_protocol_access: connections \
             from them will be refused",
            "error: groups.proxies: the instances' proxy config squid.conf does not admit the \
             clients' network 127.20.0.0/16 in proxy_protocol_access, but with \
             preserve_client_ip on target group proxies their connections come from their own \
             addresses: they will be refused",
        ]
    );
    let access = "        acl lbs src 127.10.1.10 127.10.2.10\n        \
                  proxy_protocol_access allow lbs\n        proxy_protocol_access allow app\n";
    assert_eq!(
        findings(&[v2, required, ("        http_access allow app\n", access)]),
        [
            "error: groups.proxies: the instances' proxy config squid.conf does not admit the \
             clients' network 127.20.0.0/16 in http_access: their requests will be denied (403)",
        ],
        "http_access now has only `deny all`"
    );
    let access = format!("{access}        http_access allow app\n");
    assert_eq!(
        findings(&[v2, required, ("        http_access allow app\n", &access)]),
        Vec::<String>::new()
    );
    // Trusting the zones' whole subnets trusts the instances too.
    let subnets = access.replace("127.10.1.10 127.10.2.10", "127.10.1.0/24 127.10.2.0/24");
    assert_eq!(
        findings(&[v2, required, ("        http_access allow app\n", &subnets)]),
        [
            "warning: groups.proxies: the instances' proxy config squid.conf trusts PROXY headers \
          from the instances' own addresses 127.10.1.11, 127.10.2.11 (proxy_protocol_access): a \
          connection an instance makes to another could claim any client address; trust only \
          the load balancer nodes"
        ]
    );
    // Without client-IP preservation only the nodes connect; the header still carries the
    // client, whom http_access must admit.
    let access = "        acl lbs src 127.10.1.10 127.10.2.10\n        \
                  proxy_protocol_access allow lbs\n        http_access allow app\n";
    assert_eq!(
        findings(&[
            v2,
            required,
            ("        http_access allow app\n", access),
            (PRESERVE, "preserve_client_ip: false"),
            (RULE_APP, ""),
        ]),
        Vec::<String>::new()
    );
}

#[test]
fn a_config_that_does_not_parse() {
    assert_eq!(
        findings(&[("http_access allow app", "http_acess allow app")]),
        [
            "error: groups.proxies: launch template proxy's squid.conf does not parse: \
          squid.conf:3:1: unknown directive 'http_acess': proxyfleet does not support it (see \
          the README's directive table)"
        ]
    );
}

#[test]
fn a_config_for_squid_itself_may_be_outside_the_subset() {
    let squid = (
        "command: [proxyfleet, proxy, -f,",
        "command: [squid, -N, -f,",
    );
    assert_eq!(
        findings(&[
            squid,
            (ACL_APP, "        auth_param ntlm program /usr/bin/ntlm_auth\n        acl app src 127.20.0.0/16\n")
        ]),
        ["warning: groups.proxies: launch template proxy's squid.conf is outside the squid.conf \
          subset proxyfleet reads, so it was not checked: squid.conf:2:12: auth_param: the \
          'ntlm' scheme is not supported (basic and digest are): its clients would never \
          authenticate"]
    );
    // What proxyfleet can read is checked all the same; Squid has no destination guard.
    assert_eq!(
        findings(&[squid]),
        [
            "warning: groups.proxies: the instances' proxy config squid.conf lets clients reach \
          the proxy host's own services (http://127.0.0.1/ is allowed) and any port (GET and \
          CONNECT to port 25 are allowed): add Squid's stock `http_access deny !Safe_ports`, \
          `http_access deny CONNECT !SSL_ports` and `http_access deny to_localhost`, or run \
          `proxyfleet proxy`, whose destination guard `up` turns on"
        ]
    );
    let stock = "        acl SSL_ports port 443\n        http_access deny CONNECT !SSL_ports\n\
                 \x20       http_access allow app\n";
    assert_eq!(
        findings(&[squid, ("        http_access allow app\n", stock)]),
        Vec::<String>::new(),
        "any one of the stock protections"
    );
    let off = (
        HTTP_PORT,
        "        http_port {address}:{port}\n        destination_guard off\n",
    );
    assert_eq!(
        findings(&[off]).len(),
        1,
        "proxyfleet with the guard turned off"
    );
    assert_eq!(
        findings(&[squid, (ACL_APP, "        acl app src 127.21.0.0/16\n")]),
        [
            "error: groups.proxies: the instances' proxy config squid.conf does not admit the \
          clients' network 127.20.0.0/16 in http_access: their requests will be denied (403)"
        ]
    );
}

#[test]
fn other_files_are_written_alongside_and_unnamed_ones_may_fail() {
    let include = "        include acls.conf\n";
    let files = "      acls.conf: |\n        acl app src 127.20.0.0/16\n      \
                 notes.conf: |\n        not squid at all\n      squid.conf: |\n";
    assert_eq!(
        findings(&[(ACL_APP, include), ("      squid.conf: |\n", files)]),
        Vec::<String>::new()
    );
    // The included file is missing: the instance would fail the same way.
    assert_eq!(
        findings(&[(ACL_APP, "        include {dir}/acls.conf\n")]),
        [
            "error: groups.proxies: launch template proxy's squid.conf does not parse: \
          squid.conf:2:9: include: cannot read '{dir}/acls.conf': No such file or directory \
          (os error 2)"
        ]
    );
}

#[test]
fn a_config_that_listens_elsewhere() {
    assert_eq!(
        findings(&[(HTTP_PORT, "        http_port 127.0.0.1:3128\n")]),
        [
            "error: groups.proxies: the instances' proxy config squid.conf does not listen on \
          127.10.1.11:3128 (http_port 127.0.0.1:3128): traffic and health checks from target \
          group proxies will be refused"
        ]
    );
    assert_eq!(
        findings(&[(HTTP_PORT, "        http_port 3128\n")]),
        Vec::<String>::new(),
        "every address"
    );
}

#[test]
fn proxyfleet_proxy_serves_only_healthz() {
    assert_eq!(
        findings(&[("path: /healthz", "path: /status")]),
        [
            "error: groups.proxies: target group proxies checks GET /status, which `proxyfleet \
          proxy` answers with 400 (it serves only /healthz; matcher 200-399): no instance of \
          group proxies will become healthy"
        ]
    );
    assert_eq!(
        findings(&[("path: /healthz", "path: /healthz?full=1")]),
        Vec::<String>::new()
    );
}

#[test]
fn a_zone_with_no_target() {
    // Every node checks every target: node c still needs rule c.
    let one_zone = [(
        "    min: 2\n    max: 2\n    zones: [a, c]",
        "    min: 1\n    max: 1\n    zones: [a]",
    )];
    assert_eq!(
        findings(&one_zone),
        [
            "warning: load_balancers.front: node c (127.10.2.10) has no target of target group \
          proxies in its zone and cross_zone is false: it always falls back to the other \
          zones' targets"
        ]
    );
    let cross = [one_zone[0], ("cross_zone: false", "cross_zone: true")];
    assert_eq!(findings(&cross), Vec::<String>::new());
}

#[test]
fn fewer_instances_than_zones() {
    assert_eq!(
        findings(&[("    min: 2\n", "    min: 1\n")]),
        [
            "warning: groups.proxies: desired 1 is fewer than its 2 zones (a, c): at least one \
          zone has no instance"
        ]
    );
}

#[test]
fn a_group_zone_the_load_balancer_does_not_serve() {
    assert_eq!(
        findings(&[(
            "    zones: [a, c]\n    cross_zone",
            "    zones: [a]\n    cross_zone"
        )]),
        [
            "warning: groups.proxies: zone c is not one of load balancer front's zones (a): its \
          instances there get no traffic from it"
        ]
    );
}

#[test]
fn a_target_group_with_no_targets() {
    assert_eq!(
        findings(&[
            ("    target_groups: [proxies]\n", ""),
            ("    health_check_type: lb\n", "")
        ]),
        [
            "error: target_groups.proxies: listener front:3128 forwards to it, but it has no \
          targets (no group registers with it and it lists none): every connection will be \
          closed"
        ]
    );
}

#[test]
fn findings_come_in_a_stable_order() {
    let broken = stack(&[
        (RULE_A, ""),
        (RULE_APP, ""),
        ("    min: 2\n", "    min: 1\n"),
        (ACL_APP, "        acl app src 127.21.0.0/16\n"),
    ]);
    let first = check(&broken);
    assert_eq!(first.len(), 4, "{first:#?}");
    assert_eq!(check(&broken), first);
    let severities: Vec<_> = first.iter().map(|f| f.severity).collect();
    assert_eq!(
        severities,
        [
            Severity::Warning,
            Severity::Error,
            Severity::Error,
            Severity::Error
        ]
    );
}

const COMMAND: &str = "    command: [proxyfleet, proxy, -f, \"{dir}/squid.conf\"]\n";

/// The launch template findings with `COMMAND` replaced by `command` (a command that is not
/// `proxyfleet proxy` also draws squid.conf findings, not the subject here).
fn launch_findings(command: &str) -> Vec<String> {
    findings(&[(COMMAND, command)])
        .into_iter()
        .filter(|f| f.contains("launch_templates."))
        .collect()
}

#[test]
fn a_placeholder_spliced_into_a_shell_script() {
    let got = launch_findings(
        "    command: [/bin/sh, -c, \"exec proxyfleet proxy -f {dir}/squid.conf # {zone} {dir}\"]\n",
    );
    assert_eq!(
        got,
        [
            "warning: launch_templates.proxy: the /bin/sh -c script interpolates {dir}, {zone}: \
             the value is parsed as shell code (a name with ';' or a space would run or split); \
             pass it as an argument after the script and use \"$1\": [/bin/sh, -c, 'exec ... \
             \"$1\"', /bin/sh, \"{dir}\"]"
        ],
        "{got:#?}"
    );
    let got = launch_findings(
        "    command: [bash, -ec, \"echo {group}; exec proxyfleet proxy -f squid.conf\"]\n",
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("the bash -c script interpolates {group}"),
        "{got:#?}"
    );
}

#[test]
fn placeholders_after_the_script_or_without_a_shell_are_arguments() {
    // The way out the warning names: the value is the script's $1, never parsed.
    let got = launch_findings(
        "    command: [sh, -c, 'exec proxyfleet proxy -f \"$1\"', sh, \"{dir}/squid.conf\"]\n",
    );
    assert!(got.is_empty(), "{got:#?}");
    // A script without placeholders, and a literal {{ in it.
    let got = launch_findings(
        "    command: [sh, -c, 'echo {{zone}; exec proxyfleet proxy -f squid.conf']\n",
    );
    assert!(got.is_empty(), "{got:#?}");
    assert!(findings(&[]).is_empty(), "BASE passes placeholders as argv");
}
