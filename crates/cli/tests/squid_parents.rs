//! `cache_peer` parents end to end: two real `proxyfleet proxy` processes, a child whose
//! squid.conf names the other as its parent, and a real origin. Requests and CONNECT
//! tunnels through the parent (`never_direct`), Squid's choice between parents and direct
//! (GET through the hierarchy, POST direct, `always_direct`), failover from a dead parent,
//! `login=` to a parent that asks for credentials, and no parent left.

mod common;

use std::net::SocketAddr;

use common::{base_config, start, ProxyUnderTest, APP};
use testkit::client::exchange_raw;
use testkit::origin::Origin;

const NCSA: &str = "/usr/lib/squid/basic_ncsa_auth";

fn status(reply: &str) -> u16 {
    reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn request(proxy: SocketAddr, method: &str, url: &str) -> String {
    exchange_raw(
        APP,
        proxy,
        format!(
            "{method} {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// Sends a CONNECT and returns the proxy's answer head (the tunnel stays open until the
/// stream is dropped, so reading to the close would only wait).
fn connect_answer(proxy: SocketAddr, to: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = testkit::client::connect_from(APP, proxy);
    write!(s, "CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A parent proxy that serves the child (which connects from 127.0.0.1).
fn parent(extra: &str) -> ProxyUnderTest {
    start(&base_config(&format!(
        "visible_hostname parent.test\n\
         acl children src 127.0.0.1\n\
         {extra}\n\
         http_access allow children\n\
         http_access deny all"
    )))
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn requests_and_tunnels_go_through_the_parent() {
    let origin = Origin::start("127.30.0.65");
    let up = parent("");
    let child = start(&base_config(&format!(
        "cache_peer 127.0.0.1 parent {} 0 no-query default\n\
         never_direct allow all\n\
         http_access allow app",
        up.addr().port()
    )));
    let reply = request(child.addr(), "GET", &format!("{}/headers", origin.url()));
    assert_eq!(status(&reply), 200, "{reply}");
    let lower = reply.to_ascii_lowercase();
    assert!(
        lower.contains("via: 1.1 proxy.test") && lower.contains("1.1 parent.test"),
        "both proxies on the way: {reply}"
    );
    // CONNECT through the parent, with a request right behind it inside the tunnel.
    let tunnel = exchange_raw(
        APP,
        child.addr(),
        format!(
            "CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\nGET /small HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n",
            o = origin.addr
        )
        .as_bytes(),
    );
    assert!(
        tunnel.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
        "{tunnel}"
    );
    assert!(tunnel.ends_with(&"x".repeat(100)), "{tunnel}");
    let log = child.access_log(2);
    assert!(
        log[0].contains("TCP_MISS/200") && log[0].contains("DEFAULT_PARENT/127.0.0.1"),
        "{log:#?}"
    );
    assert!(
        log[1].contains("TCP_TUNNEL/200") && log[1].contains("DEFAULT_PARENT/127.0.0.1"),
        "{log:#?}"
    );
    // The parent did the work: its own log has both.
    let parent_log = up.access_log(2);
    assert!(
        parent_log[0].contains("HIER_DIRECT/127.30.0.65"),
        "{parent_log:#?}"
    );
    assert!(parent_log[1].contains("TCP_TUNNEL/200"), "{parent_log:#?}");
}

#[test]
fn squid_sends_get_through_the_hierarchy_and_post_direct() {
    let origin = Origin::start("127.30.0.66");
    let up = parent("");
    let child = start(&base_config(&format!(
        "cache_peer 127.0.0.1 parent {} 0 no-query\n\
         acl direct_path urlpath_regex ^/headers/direct\n\
         always_direct allow direct_path\n\
         http_access allow app",
        up.addr().port()
    )));
    let via_parent = |reply: &str| reply.to_ascii_lowercase().contains("1.1 parent.test");
    let get = request(child.addr(), "GET", &format!("{}/headers", origin.url()));
    assert!(via_parent(&get), "GET is hierarchical: {get}");
    let post = request(child.addr(), "POST", &format!("{}/headers", origin.url()));
    assert_eq!(status(&post), 200, "{post}");
    assert!(
        !via_parent(&post),
        "POST goes direct (nonhierarchical_direct): {post}"
    );
    let always = request(
        child.addr(),
        "GET",
        &format!("{}/headers/direct", origin.url()),
    );
    assert!(!via_parent(&always), "always_direct: {always}");
    let log = child.access_log(3);
    assert!(log[0].contains("FIRSTUP_PARENT/127.0.0.1"), "{log:#?}");
    assert!(log[1].contains("HIER_DIRECT/127.30.0.66"), "{log:#?}");
}

#[test]
fn a_dead_parent_is_skipped_and_no_parent_left_fails() {
    let origin = Origin::start("127.30.0.67");
    let up = parent("");
    let dead = dead_port();
    let child = start(&base_config(&format!(
        "cache_peer 127.0.0.1 parent {dead} 0 no-query name=dead\n\
         cache_peer 127.0.0.1 parent {} 0 no-query name=live\n\
         never_direct allow all\n\
         http_access allow app",
        up.addr().port()
    )));
    let reply = request(child.addr(), "GET", &format!("{}/small", origin.url()));
    assert_eq!(status(&reply), 200, "{reply}");
    let tunnel = connect_answer(child.addr(), origin.addr);
    assert!(
        tunnel.starts_with("HTTP/1.1 200 Connection established"),
        "{tunnel}"
    );

    let lonely = start(&base_config(&format!(
        "cache_peer 127.0.0.1 parent {dead} 0 no-query\n\
         never_direct allow all\n\
         http_access allow app"
    )));
    let reply = request(lonely.addr(), "GET", &format!("{}/small", origin.url()));
    assert_eq!(status(&reply), 503, "{reply}");
    assert!(
        reply.contains("X-Squid-Error: ERR_CONNECT_FAIL 111"),
        "{reply}"
    );
    assert!(origin.seen().iter().all(|s| s.uri == "/small"));
}

#[test]
fn login_credentials_for_a_parent_that_asks() {
    if !std::path::Path::new(NCSA).exists() {
        eprintln!("note: {NCSA} is missing (install squid): skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hash = std::process::Command::new("openssl")
        .args(["passwd", "-1", "wonderland"])
        .output()
        .expect("openssl");
    let passwd = dir.path().join("passwd");
    std::fs::write(
        &passwd,
        format!("alice:{}", String::from_utf8(hash.stdout).unwrap()),
    )
    .unwrap();
    let origin = Origin::start("127.30.0.68");
    let up = start(&base_config(&format!(
        "visible_hostname parent.test\n\
         auth_param basic program {NCSA} {}\n\
         acl authed proxy_auth REQUIRED\n\
         http_access allow authed\n\
         http_access deny all",
        passwd.display()
    )));
    let with_login = start(&base_config(&format!(
        "cache_peer 127.0.0.1 parent {} 0 no-query login=alice:wonderland\n\
         never_direct allow all\n\
         http_access allow app",
        up.addr().port()
    )));
    let without = start(&base_config(&format!(
        "cache_peer 127.0.0.1 parent {} 0 no-query\n\
         never_direct allow all\n\
         http_access allow app",
        up.addr().port()
    )));
    let url = format!("{}/small", origin.url());
    assert_eq!(status(&request(with_login.addr(), "GET", &url)), 200);
    let refused = request(without.addr(), "GET", &url);
    assert_eq!(
        status(&refused),
        407,
        "the parent's answer passes on: {refused}"
    );
    let tunnel = connect_answer(with_login.addr(), origin.addr);
    assert!(
        tunnel.starts_with("HTTP/1.1 200 Connection established"),
        "{tunnel}"
    );
    let tunnel = exchange_raw(
        APP,
        without.addr(),
        format!("CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\n", o = origin.addr).as_bytes(),
    );
    assert_eq!(status(&tunnel), 407, "{tunnel}");
    let log = up.access_log(4);
    assert!(log.iter().any(|l| l.contains(" alice ")), "{log:#?}");
}
