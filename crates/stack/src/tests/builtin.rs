//! The built-in stack is the reference system of DESIGN.md on loopback.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use proxyfleet_lb::spec::{HealthCheckProtocol, NodeSpec, TargetType};

use crate::{
    builtin, load, parse, render, HealthCheckType, Placeholders, Protocol, Source, StackError,
    BUILTIN,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn builtin_zones_networks_and_security_group() {
    let stack = builtin();
    let zones: Vec<(&str, IpNet)> = stack
        .zones
        .iter()
        .map(|z| (z.name.as_str(), z.subnet))
        .collect();
    assert_eq!(
        zones,
        [("a", net("127.10.1.0/24")), ("c", net("127.10.2.0/24"))]
    );
    assert_eq!(
        stack.networks,
        [
            ("app".to_string(), net("127.20.0.0/16")),
            ("service".to_string(), net("127.30.0.0/16")),
        ]
    );
    let sg = stack.security_group("proxy-sg").unwrap();
    assert_eq!(stack.security_groups.len(), 1);
    let rules: Vec<(Protocol, (u16, u16), String)> = sg
        .ingress
        .iter()
        .map(|r| (r.protocol, r.ports, r.source.to_string()))
        .collect();
    let tcp = |from: &str| (Protocol::Tcp, (3128, 3128), from.to_string());
    assert_eq!(
        rules,
        [
            tcp("app (127.20.0.0/16)"),
            tcp("a (127.10.1.0/24)"),
            tcp("c (127.10.2.0/24)")
        ]
    );
    assert_eq!(
        sg.ingress[0].source,
        Source::Cidr {
            net: net("127.20.0.0/16"),
            named: Some("app".into())
        }
    );
}

#[test]
fn builtin_load_balancer_and_target_group() {
    let stack = builtin();
    assert_eq!(stack.load_balancers.len(), 1);
    let lb = stack.load_balancer("front").unwrap();
    let node = |zone: &str, ip: &str| NodeSpec {
        zone: zone.into(),
        address: ip.parse().unwrap(),
    };
    assert_eq!(
        lb.nodes,
        [node("a", "127.10.1.10"), node("c", "127.10.2.10")]
    );
    assert!(!lb.cross_zone);
    assert_eq!(lb.max_connections, 10_000);
    assert_eq!(lb.max_connections_per_source, 2_500);
    assert_eq!(lb.idle_timeout, Duration::from_secs(350));
    assert_eq!(lb.listeners.len(), 1);
    assert_eq!(lb.listeners[0].port, 3128);
    assert_eq!(lb.listeners[0].target_group, "proxies");
    assert_eq!(lb.listeners[0].allowed_cidrs, None);

    assert_eq!(stack.target_groups.len(), 1);
    let tg = stack.target_group("proxies").unwrap();
    assert_eq!(tg.port, 3128);
    assert_eq!(tg.target_type, TargetType::Instance);
    assert!(tg.preserve_client_ip);
    assert!(!tg.transparent);
    assert!(!tg.proxy_protocol_v2);
    assert_eq!(tg.deregistration_delay, Duration::from_secs(5));
    assert_eq!(
        tg.target_max_connections, None,
        "each proxy's own client cap, from its squid.conf"
    );
    assert!(tg.targets.is_empty());
    let hc = &tg.health_check;
    assert_eq!(
        hc.protocol,
        HealthCheckProtocol::Http {
            path: "/healthz".into(),
            matcher: (200, 399)
        }
    );
    assert_eq!(hc.port, None);
    assert_eq!(hc.interval, Duration::from_millis(500));
    assert_eq!(hc.timeout, Duration::from_millis(500));
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (2, 2));
}

#[test]
fn builtin_group_and_launch_template() {
    let stack = builtin();
    assert_eq!(stack.groups.len(), 1);
    let g = stack.group("proxies").unwrap();
    assert_eq!(g.launch_template, "proxy");
    assert_eq!((g.min, g.max, g.desired), (2, 2, 2));
    assert_eq!(g.zones, ["a", "c"]);
    assert_eq!(g.port, 3128);
    assert_eq!(g.target_groups, ["proxies"]);
    assert_eq!(g.security_groups, ["proxy-sg"]);
    assert_eq!(g.health_check_type, HealthCheckType::Lb);
    assert_eq!(g.grace_period, Duration::from_secs(2));
    assert_eq!(g.first_address, 11);
    assert_eq!(g.scaling, None);
    let zone_a = stack.zone("a").unwrap();
    assert_eq!(
        g.instance_address(&zone_a.subnet, 1),
        Some("127.10.1.12".parse().unwrap())
    );

    let lt = stack.launch_template("proxy").unwrap();
    assert_eq!(
        lt.command,
        ["proxyfleet", "proxy", "-f", "{dir}/squid.conf"]
    );
    assert!(lt.environment.is_empty());
    assert_eq!(lt.stop_timeout, Duration::from_secs(10));
    assert_eq!(lt.files.len(), 1);
    assert_eq!(lt.files[0].0, "squid.conf");
}

#[test]
fn builtin_squid_conf_renders_for_an_instance() {
    let stack = builtin();
    let lt = stack.launch_template("proxy").unwrap();
    let values = Placeholders {
        id: "proxies-a-1".into(),
        zone: "a".into(),
        address: "127.10.1.11".parse().unwrap(),
        port: 3128,
        dir: "/run/pf/proxies-a-1".into(),
        group: "proxies".into(),
    };
    let launch = lt.render(&values);
    assert_eq!(
        launch.command,
        [
            "proxyfleet",
            "proxy",
            "-f",
            "/run/pf/proxies-a-1/squid.conf"
        ]
    );
    let conf = &launch.files[0].1;
    let directives: Vec<&str> = conf
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        directives,
        [
            "http_port 127.10.1.11:3128",
            "tcp_outgoing_address 127.10.1.11",
            "visible_hostname proxies-a-1",
            "acl app src 127.20.0.0/16",
            "acl lb_subnets src 127.10.1.0/24 127.10.2.0/24",
            "acl SSL_ports port 443",
            "acl Safe_ports port 80 21 443 70 210 1025-65535 280 488 591 777",
            "http_access deny !Safe_ports",
            "http_access deny CONNECT !SSL_ports",
            "http_access allow app",
            "http_access allow lb_subnets",
            "http_access deny all",
            "access_log /run/pf/proxies-a-1/access.log squid",
            "dns_nameservers 127.0.0.1",
            "shutdown_lifetime 5 seconds",
            "workers 1",
        ]
    );
    assert!(conf.starts_with("# Instance proxies-a-1 of group proxies, zone a.\n"));
    assert_eq!(render(&lt.files[0].1, &values), *conf);
}

#[test]
fn builtin_text_is_commented_yaml() {
    assert!(BUILTIN.starts_with("# proxyfleet's built-in stack"));
    assert!(BUILTIN.contains("# ") && BUILTIN.lines().filter(|l| l.contains('#')).count() > 20);
    assert_eq!(parse(BUILTIN, Path::new("x.yaml")).unwrap(), builtin());
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("proxyfleet-stack-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, BUILTIN).unwrap();
    assert_eq!(load(&good).unwrap(), builtin());

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "zones:\n  a: { subnet: 127.10.1.0/24, color: red }\n").unwrap();
    let e = load(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:31: zones.a: unknown field `color`, expected one of subnet",
            bad.display()
        )
    );
    assert_eq!((e.line(), e.column()), (2, 31));
    assert_eq!(e.object(), "zones.a");
    assert_eq!(e.message(), "unknown field `color`, expected one of subnet");
    assert_eq!(e.path(), bad);

    let missing = dir.join("missing.yaml");
    let e = load(&missing).unwrap_err();
    assert!(matches!(e, StackError::Read { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: No such file", missing.display())),
        "{e}"
    );
    assert_eq!((e.line(), e.column(), e.object()), (0, 0, "stack"));

    // Over the cap: refused from the file's length, before reading.
    let big = dir.join("big.yaml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(crate::MAX_STACK_FILE_BYTES + 1).unwrap();
    let e = load(&big).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: larger than the 4 MiB limit", big.display())
    );
    // Not a regular file.
    let e = load(&dir).unwrap_err();
    assert!(
        e.to_string().contains("a directory, not a regular file"),
        "{e}"
    );
    let e = load(Path::new("/dev/zero")).unwrap_err();
    assert!(e.to_string().contains("a character device"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn host_addresses_stay_inside_the_subnet() {
    let host = |subnet: &str, offset| crate::host_address(&net(subnet), offset);
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(host("127.10.1.0/24", 10), ip("127.10.1.10"));
    assert_eq!(host("127.10.1.0/24", 254), ip("127.10.1.254"));
    assert_eq!(host("127.10.1.0/24", 255), None, "broadcast");
    assert_eq!(host("127.10.1.0/24", 0), None, "network address");
    assert_eq!(host("127.10.1.0/29", 10), None);
    assert_eq!(host("127.10.1.0/31", 1), ip("127.10.1.1"));
    assert_eq!(host("255.255.255.0/24", 1 << 40), None);
    assert_eq!(host("fd00::/64", 10), ip("fd00::a"));
    assert_eq!(host("fd00::/120", 300), None);
}
