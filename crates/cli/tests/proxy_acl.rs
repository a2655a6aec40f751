//! Access control end to end: each ACL type decides real requests from real sources.

mod common;

use common::{base_config, start, APP};
use testkit::client::exchange_raw;
use testkit::origin::Origin;

fn status(reply: &str) -> u16 {
    reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn get(source: &str, proxy: std::net::SocketAddr, url: &str) -> u16 {
    status(&exchange_raw(
        source,
        proxy,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    ))
}

/// Sends one request and reads only the response head (a CONNECT tunnel stays open).
fn request(source: &str, proxy: std::net::SocketAddr, method: &str, target: &str) -> u16 {
    let mut s = testkit::client::connect_from(source, proxy);
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    status(&testkit::client::read_response(&mut s).0)
}

#[test]
fn stock_style_rules_safe_ports_ssl_ports_and_localnet() {
    let origin = Origin::start("127.30.0.60");
    let tls_like = Origin::start("127.30.0.61");
    let proxy = start(&base_config(&format!(
        "acl SSL_ports port {tls}\n\
         acl Safe_ports port 80 443 1025-65535\n\
         acl localnet src 127.20.0.0/16 fc00::/7\n\
         http_access deny !Safe_ports\n\
         http_access deny CONNECT !SSL_ports\n\
         http_access allow localhost manager\n\
         http_access deny manager\n\
         http_access allow localnet\n\
         http_access allow localhost\n\
         http_access deny all",
        tls = tls_like.addr.port()
    )));
    let p = proxy.addr();
    assert_eq!(get(APP, p, &format!("{}/small", origin.url())), 200);
    assert_eq!(
        get("127.0.0.1", p, &format!("{}/small", origin.url())),
        200,
        "localhost"
    );
    assert_eq!(
        get("127.99.0.1", p, &format!("{}/small", origin.url())),
        403
    );
    assert_eq!(
        get(APP, p, "http://127.30.0.60:25/"),
        403,
        "port 25 is not a Safe_port"
    );
    assert_eq!(
        request(APP, p, "CONNECT", &origin.addr.to_string()),
        403,
        "CONNECT only to SSL_ports"
    );
    assert_eq!(request(APP, p, "CONNECT", &tls_like.addr.to_string()), 200);
    assert_eq!(
        get(APP, p, "cache_object://127.0.0.1/info"),
        400,
        "manager URL: unsupported scheme after access"
    );
    assert_eq!(
        get(APP, p, &format!("{}/squid-internal-mgr/info", origin.url())),
        403,
        "manager from localnet"
    );
}

#[test]
fn dst_dstdomain_regex_method_and_proto() {
    let a = Origin::start("127.30.0.62");
    let b = Origin::start("127.30.0.63");
    let proxy = start(&base_config(
        "acl blocked_net dst 127.30.0.63/32\n\
         acl evil dstdomain .evil.test\n\
         acl exact dstdomain exact.test\n\
         acl numbered dstdom_regex -i ^NODE[0-9]+\\.test$\n\
         acl writes method POST PUT DELETE\n\
         acl web proto HTTP\n\
         http_access deny evil\n\
         http_access deny exact\n\
         http_access deny numbered\n\
         http_access deny writes\n\
         http_access deny blocked_net\n\
         http_access allow app web\n\
         http_access deny all",
    ));
    let p = proxy.addr();
    assert_eq!(get(APP, p, &format!("{}/small", a.url())), 200);
    assert_eq!(get(APP, p, &format!("{}/small", b.url())), 403, "dst");
    for denied in [
        "http://evil.test/",
        "http://www.evil.test/",
        "http://exact.test/",
        "http://node7.test/",
    ] {
        assert_eq!(get(APP, p, denied), 403, "{denied}");
    }
    // The name rules come before the `dst` rule, so these names are never looked up.
    assert_eq!(
        request(APP, p, "POST", &format!("{}/upload", a.url())),
        403,
        "method"
    );
    assert!(
        b.seen().is_empty() && a.seen().len() == 1,
        "denied requests never reach an origin"
    );
    let lines = proxy.access_log(7);
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("TCP_DENIED/403"))
            .count()
            == 6,
        "{lines:?}"
    );
}

#[test]
fn dst_acl_resolves_names_before_deciding() {
    if !testkit::dns::can_bind_port_53() {
        eprintln!("SKIPPED: a DNS server on port 53 needs root");
        return;
    }
    let origin = Origin::start("127.30.0.64");
    let std::net::IpAddr::V4(ip) = origin.addr.ip() else {
        unreachable!()
    };
    let dns = testkit::dns::DnsServer::start(&[("internal.test", ip), ("sub.exact.test", ip)]);
    let config = base_config(
        "acl internal dst 127.30.0.64\nacl exact dstdomain exact.test\nhttp_access deny internal\nhttp_access deny exact\nhttp_access allow app",
    )
    .replace("dns_nameservers 127.0.0.1", &format!("dns_nameservers {}", dns.ip));
    let proxy = start(&config);
    let port = origin.addr.port();
    assert_eq!(
        get(APP, proxy.addr(), &format!("http://internal.test:{port}/")),
        403,
        "name resolving into a denied dst"
    );
    assert_eq!(
        get(APP, proxy.addr(), &format!("http://sub.exact.test:{port}/")),
        403,
        "resolves to the denied dst too"
    );
    assert!(origin.seen().is_empty());
}
