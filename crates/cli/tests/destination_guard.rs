//! The destination guard and the other refusals of issue 11, against the real `proxyfleet
//! proxy` binary: the proxy host's own services (a server on 127.0.0.1:PORT), every numeric
//! and IPv4-mapped spelling of them, names that resolve to them (through a loopback DNS
//! server), names with several addresses, names that fail to resolve (fail closed, remembered
//! for negative_dns_ttl), forwarding loops (Via, and CONNECT to the proxy's own port). Each
//! denial is 403 ERR_ACCESS_DENIED, logged TCP_DENIED/403, with its reason on standard error.
//! Only loopback addresses are used: 127.0.0.1 plays "the proxy host", 127.30.x "a service".

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{base_config, start, ProxyUnderTest, APP};
use testkit::client::exchange_raw;
use testkit::dns::{Answer, DnsServer};
use testkit::origin::Origin;

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("origins here are IPv4"),
    }
}

fn status(reply: &str) -> &str {
    reply.lines().next().unwrap_or("")
}

fn get(proxy: &ProxyUnderTest, url: &str) -> String {
    exchange_raw(
        APP,
        proxy.addr(),
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn connect(proxy: &ProxyUnderTest, authority: &str) -> String {
    exchange_raw(
        APP,
        proxy.addr(),
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
    )
}

fn assert_denied(reply: &str, what: &str) {
    assert!(
        reply.starts_with("HTTP/1.1 403 Forbidden\r\n") && reply.contains("ERR_ACCESS_DENIED"),
        "{what}: expected 403 ERR_ACCESS_DENIED, got {reply}"
    );
}

/// A guarded proxy: the app network allowed by http_access, the guard on, 127.30.0.0/16
/// exempted as the service network; DNS from `dns` when given.
fn guarded(extra: &str, dns: Option<&DnsServer>) -> ProxyUnderTest {
    let mut config = base_config(&format!(
        "destination_guard on\n\
         destination_guard_allow 127.30.0.0/16\n\
         {extra}\n\
         http_access allow app\n\
         http_access deny all"
    ));
    if let Some(dns) = dns {
        config = config.replace(
            "dns_nameservers 127.0.0.1",
            &format!("dns_nameservers {}", dns.ip),
        );
    }
    start(&config)
}

#[test]
fn the_proxy_hosts_own_services_are_denied_in_every_spelling() {
    // "A service of the proxy host": listening on 127.0.0.1, which the guard protects.
    let host_service = Origin::start("127.0.0.1");
    let service = Origin::start("127.30.0.40");
    let port = host_service.addr.port();
    let proxy = guarded("", None);

    let reply = get(&proxy, &format!("{}/small", service.url()));
    assert!(
        reply.starts_with("HTTP/1.1 200 OK\r\n"),
        "service network: {reply}"
    );

    let spellings = [
        format!("http://127.0.0.1:{port}/small"),
        format!("http://127.0.0.2:{port}/small"),
        format!("http://localhost:{port}/small"),
        format!("http://2130706433:{port}/small"),
        format!("http://0x7f000001:{port}/small"),
        format!("http://0177.0.0.1:{port}/small"),
        format!("http://127.1:{port}/small"),
        format!("http://[::ffff:127.0.0.1]:{port}/small"),
        format!("http://[::ffff:7f00:1]:{port}/small"),
        format!("http://0.0.0.0:{port}/small"),
        format!("http://0:{port}/small"),
        format!("http://[::1]:{port}/small"),
        format!("http://169.254.169.254:{port}/latest/meta-data/"),
        format!("http://[fe80::1]:{port}/"),
        format!("http://224.0.0.1:{port}/"),
        format!("http://255.255.255.255:{port}/"),
        format!("http://100.100.100.200:{port}/"),
    ];
    for url in &spellings {
        assert_denied(&get(&proxy, url), url);
    }
    for authority in [
        format!("127.0.0.1:{port}"),
        format!("2130706433:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("0.0.0.0:{port}"),
    ] {
        assert_denied(&connect(&proxy, &authority), &authority);
    }
    assert!(
        host_service.seen().is_empty(),
        "nothing reached the host's service: {:?}",
        host_service.seen()
    );

    let denied = spellings.len() + 4;
    let lines = proxy.access_log(denied + 1);
    let tcp_denied = lines
        .iter()
        .filter(|l| l.contains(" TCP_DENIED/403 "))
        .count();
    assert_eq!(tcp_denied, denied, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains(" TCP_DENIED/403 ")
            && l.contains(&format!("http://2130706433:{port}/small"))),
        "the log keeps the URL as the client wrote it: {lines:#?}"
    );
    let stderr = testkit::wait::until("the guard's reasons", Duration::from_secs(5), || {
        let err = proxy.child.stderr().join("\n");
        (err.contains("a loopback address") && err.contains("a cloud metadata address"))
            .then_some(err)
    });
    assert!(
        stderr.contains("destination refused by the destination guard"),
        "{stderr}"
    );
}

#[test]
fn names_are_judged_on_every_address_they_resolve_to_and_failures_fail_closed() {
    if !testkit::dns::can_bind_port_53() {
        eprintln!("SKIPPED: a DNS server on port 53 needs root");
        return;
    }
    let host_service = Origin::start("127.0.0.1");
    let service = Origin::start("127.30.0.41");
    let (svc, port) = (v4(service.addr.ip()), service.addr.port());
    let lo = Ipv4Addr::LOCALHOST;
    let dns = DnsServer::start_scripted(&[
        ("service.test", vec![Answer::Addresses(vec![svc])]),
        // A 127.0.0.1.nip.io-style name and a DNS-rebinding name.
        ("127.0.0.1.nip.test", vec![Answer::Addresses(vec![lo])]),
        ("mixed.test", vec![Answer::Addresses(vec![svc, lo])]),
        // Fails first (the resolver retries a SERVFAIL itself: fail often enough that one
        // lookup fails), then would answer the host itself.
        ("flaky.test", fail_then(Answer::ServFail, lo)),
        ("gone.test", fail_then(Answer::NxDomain, lo)),
    ]);
    let proxy = guarded("negative_dns_ttl 1 minute", Some(&dns));
    let hport = host_service.addr.port();

    let reply = get(&proxy, &format!("http://service.test:{port}/small"));
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert_denied(
        &get(&proxy, &format!("http://127.0.0.1.nip.test:{hport}/small")),
        "a name for loopback",
    );
    assert_denied(
        &get(&proxy, &format!("http://mixed.test:{hport}/small")),
        "one allowed and one protected address",
    );
    assert_denied(
        &connect(&proxy, &format!("mixed.test:{hport}")),
        "CONNECT to a name with a protected address",
    );
    for name in ["flaky.test", "gone.test"] {
        let mut queries = 0;
        for attempt in 0..3 {
            let reply = get(&proxy, &format!("http://{name}:{hport}/small"));
            assert_eq!(
                status(&reply),
                "HTTP/1.1 503 Service Unavailable",
                "{name} attempt {attempt}: {reply}"
            );
            assert!(reply.contains("ERR_DNS_FAIL"), "{reply}");
            if attempt == 0 {
                queries = dns.queries(name);
                assert!(queries > 0);
            }
        }
        assert_eq!(
            dns.queries(name),
            queries,
            "{name}: within negative_dns_ttl the failure is remembered, not asked again"
        );
    }
    assert!(
        host_service.seen().is_empty(),
        "nothing reached the host: {:?}",
        host_service.seen()
    );
}

/// A script that fails six times (more than one lookup's retries), then answers `ip`.
fn fail_then(failure: Answer, ip: Ipv4Addr) -> Vec<Answer> {
    let mut script = vec![failure; 6];
    script.push(Answer::Addresses(vec![ip]));
    script
}

#[test]
fn a_failed_lookup_never_skips_a_deny_line_even_without_the_guard() {
    if !testkit::dns::can_bind_port_53() {
        eprintln!("SKIPPED: a DNS server on port 53 needs root");
        return;
    }
    let host_service = Origin::start("127.0.0.1");
    let dns = DnsServer::start_scripted(&[(
        "rebind.test",
        fail_then(Answer::ServFail, Ipv4Addr::LOCALHOST),
    )]);
    // A hand-written deny of loopback, then allow: the bypass.
    let config = base_config(
        "acl lo dst 127.0.0.1/32\n\
         http_access deny lo\n\
         http_access allow app\n\
         http_access deny all",
    )
    .replace(
        "dns_nameservers 127.0.0.1",
        &format!("dns_nameservers {}", dns.ip),
    );
    let proxy = start(&config);
    let port = host_service.addr.port();
    let reply = get(&proxy, &format!("http://rebind.test:{port}/small"));
    assert_eq!(
        status(&reply),
        "HTTP/1.1 503 Service Unavailable",
        "{reply}"
    );
    // 0.0.0.0 connects to this host: the hand-written deny of 127.0.0.1 covers it.
    assert_denied(
        &get(&proxy, &format!("http://0.0.0.0:{port}/small")),
        "0.0.0.0",
    );
    assert_denied(
        &get(&proxy, &format!("http://[::ffff:127.0.0.1]:{port}/small")),
        "IPv4-mapped",
    );
    assert_denied(
        &get(&proxy, &format!("http://2130706433:{port}/small")),
        "decimal",
    );
    assert!(host_service.seen().is_empty(), "{:?}", host_service.seen());
}

#[test]
fn forwarding_loops_are_refused_even_without_the_guard() {
    let origin = Origin::start("127.30.0.42");
    let proxy = start(&base_config("http_access allow app\nhttp_access deny all"));
    let me = proxy.addr();
    // CONNECT to the proxy itself: no chained tunnels.
    assert_denied(&connect(&proxy, &me.to_string()), "CONNECT to itself");
    assert_denied(
        &get(&proxy, &format!("http://{me}/healthz")),
        "GET to itself",
    );
    // A request that already passed through this proxy (Via names its visible_hostname).
    let url = format!("{}/small", origin.url());
    for via in [
        "1.1 proxy.test",
        "1.0 other, 1.1 proxy.test (proxyfleet/0.1.0)",
        "1.1 PROXY.test:3128",
    ] {
        let reply = exchange_raw(
            APP,
            me,
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nVia: {via}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_denied(&reply, via);
    }
    let reply = exchange_raw(
        APP,
        me,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nVia: 1.1 proxy.test.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(
        reply.starts_with("HTTP/1.1 200 OK\r\n"),
        "another proxy's name: {reply}"
    );
    assert_eq!(origin.seen().len(), 1);
}

#[test]
fn to_protected_is_an_acl_for_hand_written_files() {
    let host_service = Origin::start("127.0.0.1");
    let service = Origin::start("127.30.0.43");
    let proxy = start(&base_config(
        "destination_guard_allow 127.30.0.0/16\n\
         http_access deny to_protected\n\
         http_access allow app\n\
         http_access deny all",
    ));
    let reply = get(&proxy, &format!("{}/small", service.url()));
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert_denied(
        &get(&proxy, &format!("{}/small", host_service.url())),
        "to_protected",
    );
    assert!(host_service.seen().is_empty());
}

#[test]
fn an_ipv4_mapped_literal_is_the_ipv4_address_as_squid_sends_it() {
    let origin = Origin::start("127.30.0.44");
    let proxy = start(&base_config(
        "tcp_outgoing_address 127.44.0.1\nhttp_access allow app\nhttp_access deny all",
    ));
    let port = origin.addr.port();
    let reply = get(&proxy, &format!("http://[::ffff:127.30.0.44]:{port}/small"));
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    let seen = &origin.seen()[0];
    assert_eq!(
        seen.peer.ip().to_string(),
        "127.44.0.1",
        "from tcp_outgoing_address"
    );
    // Squid 5.7 sends the same Host for this URL.
    assert_eq!(
        seen.header("host"),
        Some(format!("127.30.0.44:{port}").as_str())
    );
}
