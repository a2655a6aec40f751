//! `require-proxy-header` ports: headers built by an independent implementation (the
//! `proxy-header` crate; proxyfleet parses with `ppp`), v1, v2, v2 LOCAL, garbage, absent,
//! and senders `proxy_protocol_access` does not allow.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::{base_config, start, ProxyUnderTest};
use proxy_header::{ProxiedAddress, ProxyHeader};
use testkit::client::{connect_from, read_response, read_to_close};
use testkit::origin::Origin;

/// The load balancer's node address, as in DESIGN.md.
const LB: &str = "127.10.1.10";

fn start_pp() -> ProxyUnderTest {
    start(&base_config(
        "http_port 127.0.0.1:0 require-proxy-header\n\
         acl lb src 127.10.0.0/16\n\
         proxy_protocol_access allow lb\n\
         proxy_protocol_access deny all\n\
         http_access allow app\n\
         http_access deny all",
    ))
}

fn v1(client: &str, proxy: SocketAddr) -> Vec<u8> {
    let header = ProxyHeader::with_address(ProxiedAddress::stream(
        format!("{client}:40000").parse().unwrap(),
        proxy,
    ));
    let mut buf = Vec::new();
    header.encode_v1(&mut buf).unwrap();
    buf
}

fn v2(client: &str, proxy: SocketAddr) -> Vec<u8> {
    let header = ProxyHeader::with_address(ProxiedAddress::stream(
        format!("{client}:40000").parse().unwrap(),
        proxy,
    ));
    let mut buf = Vec::new();
    header.encode_v2(&mut buf).unwrap();
    buf
}

fn v2_local() -> Vec<u8> {
    let mut buf = Vec::new();
    ProxyHeader::with_local().encode_v2(&mut buf).unwrap();
    buf
}

/// Sends header + request from `sender`; returns the raw reply (empty when closed unanswered).
fn send(sender: &str, proxy: SocketAddr, header: &[u8], request: &str) -> String {
    let mut s = connect_from(sender, proxy);
    // A refused connection may be closed before the writes: that is the behaviour tested.
    let _ = s
        .write_all(header)
        .and_then(|()| s.write_all(request.as_bytes()));
    String::from_utf8_lossy(&read_to_close(&mut s, Duration::from_secs(10))).into_owned()
}

#[test]
fn the_headers_client_is_the_client_for_acls_and_logs() {
    let origin = Origin::start("127.30.0.40");
    let proxy = start_pp();
    let pp = proxy.addrs[1];
    let get = format!(
        "GET {}/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url()
    );
    assert!(send(LB, pp, &v1("127.20.0.7", pp), &get).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(send(LB, pp, &v2("127.20.0.8", pp), &get).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(send(LB, pp, &v2("127.99.0.9", pp), &get).starts_with("HTTP/1.1 403 Forbidden\r\n"));
    let lines = proxy.access_log(3);
    assert!(
        lines[0].contains(" 127.20.0.7 TCP_MISS/200 "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(" 127.20.0.8 TCP_MISS/200 "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(" 127.99.0.9 TCP_DENIED/403 "),
        "{}",
        lines[2]
    );
    assert_eq!(
        origin.seen()[0].header("x-forwarded-for"),
        Some("127.20.0.7")
    );
}

#[test]
fn v2_local_is_a_health_check_from_the_sender() {
    let proxy = start_pp();
    let pp = proxy.addrs[1];
    let reply = send(
        LB,
        pp,
        &v2_local(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("ok\n"),
        "{reply}"
    );
    // A proxied request after LOCAL comes from the sender itself, which `app` does not admit.
    let reply = send(
        LB,
        pp,
        &v2_local(),
        "GET http://127.30.0.41/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    let lines = proxy.access_log(1);
    assert!(
        lines[0].contains(" 127.10.1.10 TCP_DENIED/403 "),
        "{}",
        lines[0]
    );
}

#[test]
fn absent_garbage_and_unallowed_headers_close_the_connection_unanswered() {
    let proxy = start_pp();
    let pp = proxy.addrs[1];
    let get = "GET http://127.30.0.42/ HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(send(LB, pp, b"", get), "", "no header");
    assert_eq!(
        send(LB, pp, b"PROXY TCP4 not-an-address\r\n", get),
        "",
        "garbage v1"
    );
    assert_eq!(
        send(LB, pp, b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x00", get),
        "",
        "bad v2 version"
    );
    assert_eq!(
        send("127.20.0.5", pp, &v1("127.20.0.5", pp), get),
        "",
        "sender not in proxy_protocol_access"
    );
    // The plain port still serves clients without a header.
    let mut s = connect_from("127.20.0.5", proxy.addrs[0]);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, b"ok\n");
}

#[test]
fn without_proxy_protocol_access_lines_every_sender_is_denied() {
    // Squid's default: PROXY headers are refused unless proxy_protocol_access allows them.
    let proxy = start(&base_config(
        "http_port 127.0.0.1:0 require-proxy-header\nhttp_access allow app",
    ));
    let pp = proxy.addrs[1];
    assert_eq!(
        send(
            LB,
            pp,
            &v1("127.20.0.7", pp),
            "GET /healthz HTTP/1.1\r\n\r\n"
        ),
        ""
    );
}
