//! Squid-style errors: every error page has its status, `X-Squid-Error` and an HTML body;
//! malformed and smuggling requests are refused and never reach an origin.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{base_config, start, start_default, APP};
use testkit::client::{connect_from, exchange_raw, read_to_close};
use testkit::origin::Origin;

/// Status line and X-Squid-Error of a raw reply.
fn status_and_error(reply: &str) -> (String, String) {
    let status = reply.lines().next().unwrap_or("").to_string();
    let error = reply
        .lines()
        .find_map(|l| l.strip_prefix("X-Squid-Error: "))
        .unwrap_or("")
        .to_string();
    (status, error)
}

#[test]
fn malformed_and_smuggling_requests_are_refused_before_any_origin() {
    let origin = Origin::start("127.30.0.20");
    let proxy = start_default();
    let url = format!("{}/", origin.url());
    let cases: Vec<(String, &str, &str)> = vec![
        ("GARBAGE\r\n\r\n".into(), "HTTP/1.1 400 Bad Request", "ERR_INVALID_REQ 0"),
        (format!("GET {url} HTTP/1.1\r\nBad Header\r\n\r\n"), "HTTP/1.1 400 Bad Request", "ERR_INVALID_REQ 0"),
        // Both Content-Length and Transfer-Encoding is forwarded with the chunked coding
        // winning, as Squid does (tests/proxy_smuggling.rs); an HTTP/1.0 request with a
        // coding is faulty framing.
        (
            format!("POST {url} HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "HTTP/1.1 400 Bad Request",
            "ERR_INVALID_REQ 0",
        ),
        (
            format!("POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef"),
            "HTTP/1.1 400 Bad Request",
            "ERR_INVALID_REQ 0",
        ),
        (
            format!("POST {url} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            "HTTP/1.1 501 Not Implemented",
            "ERR_UNSUP_REQ 0",
        ),
        (
            format!("POST {url} HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 417 Expectation Failed",
            "ERR_INVALID_REQ 0",
        ),
        (format!("GET {url} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), "HTTP/1.1 400 Bad Request", "ERR_INVALID_REQ 0"),
        ("GET http:/// HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(), "HTTP/1.1 400 Bad Request", "ERR_INVALID_URL 0"),
        ("GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(), "HTTP/1.1 400 Bad Request", "ERR_INVALID_URL 0"),
        ("CONNECT host-without-port HTTP/1.1\r\n\r\n".into(), "HTTP/1.1 400 Bad Request", "ERR_INVALID_URL 0"),
        (format!("GET ftp://{}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", origin.addr), "HTTP/1.1 501 Not Implemented", "ERR_UNSUP_REQ 0"),
    ];
    for (request, status, error) in &cases {
        let reply = exchange_raw(APP, proxy.addr(), request.as_bytes());
        assert_eq!(
            status_and_error(&reply),
            (status.to_string(), error.to_string()),
            "request {request:?}"
        );
        assert!(
            reply.contains("Content-Type: text/html;charset=utf-8\r\n"),
            "{reply}"
        );
        assert!(
            reply.contains("<title>ERROR: The requested URL could not be retrieved</title>"),
            "{reply}"
        );
    }
    assert!(
        origin.seen().is_empty(),
        "a refused request reached the origin: {:?}",
        origin.seen()
    );
    let lines = proxy.access_log(cases.len());
    assert!(lines[0].contains(" NONE_NONE/400 "), "{}", lines[0]);
    assert!(
        lines[0].ends_with(" - error:invalid-request - HIER_NONE/- text/html"),
        "{}",
        lines[0]
    );
}

#[test]
fn oversized_request_head_gets_431_too_big() {
    let proxy = start(&base_config(
        "http_access allow app\nrequest_header_max_size 8 KB",
    ));
    let big = "a".repeat(9000);
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        format!("GET http://127.30.0.1/ HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        status_and_error(&reply),
        (
            "HTTP/1.1 431 Request Header Fields Too Large".into(),
            "ERR_TOO_BIG 0".into()
        )
    );
    // Just under the limit is fine as a head (the origin is absent: connect error).
    let ok = "a".repeat(7000);
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        format!("GET http://127.30.0.1:1/ HTTP/1.1\r\nX-Big: {ok}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status_and_error(&reply).1, "ERR_CONNECT_FAIL 111");
    let lines = proxy.access_log(2);
    assert!(
        lines[0].contains(" NONE_NONE/431 ") && lines[0].contains(" error:request-too-large "),
        "{}",
        lines[0]
    );
}

#[test]
fn a_head_that_never_ends_costs_bounded_memory_and_is_cut_off() {
    let proxy = start(&base_config(
        "http_access allow app\nrequest_header_max_size 16 KB",
    ));
    let mut client = connect_from(APP, proxy.addr());
    client
        .write_all(b"GET http://127.30.0.1/ HTTP/1.1\r\n")
        .unwrap();
    // Keep sending header lines; the proxy must answer and close after ~16 KB, not buffer on.
    let line = format!("X-Filler: {}\r\n", "z".repeat(1000));
    let mut sent = 0;
    while sent < 1_000_000 {
        if client.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += line.len();
        if sent > 64 * 1024 {
            break;
        }
    }
    let reply =
        String::from_utf8_lossy(&read_to_close(&mut client, Duration::from_secs(10))).into_owned();
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
}

#[test]
fn names_resolve_through_dns_nameservers_and_unknown_names_get_dns_fail() {
    if !testkit::dns::can_bind_port_53() {
        eprintln!("SKIPPED: a DNS server on port 53 needs root");
        return;
    }
    let origin = Origin::start("127.30.0.24");
    let ip = match origin.addr.ip() {
        std::net::IpAddr::V4(v4) => v4,
        _ => unreachable!(),
    };
    let dns = testkit::dns::DnsServer::start(&[("origin.test", ip)]);
    let config = base_config("http_access allow app").replace(
        "dns_nameservers 127.0.0.1",
        &format!("dns_nameservers {}", dns.ip),
    );
    let proxy = start(&config);
    let port = origin.addr.port();
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        format!(
            "GET http://origin.test:{port}/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert_eq!(
        origin.seen()[0].header("host"),
        Some(format!("origin.test:{port}").as_str())
    );
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        b"GET http://no-such-host.test/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        status_and_error(&reply),
        (
            "HTTP/1.1 503 Service Unavailable".into(),
            "ERR_DNS_FAIL 0".into()
        )
    );
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        b"CONNECT no-such-host.test:443 HTTP/1.1\r\n\r\n",
    );
    assert_eq!(
        status_and_error(&reply),
        (
            "HTTP/1.1 503 Service Unavailable".into(),
            "ERR_DNS_FAIL 0".into()
        )
    );
    let lines = proxy.access_log(3);
    assert!(
        lines[1].contains(" TCP_MISS/503 ") && lines[1].ends_with(" HIER_NONE/- text/html"),
        "{}",
        lines[1]
    );
}

#[test]
fn connect_failure_and_read_timeout_have_squids_pages() {
    let origin = Origin::start("127.30.0.21");
    let proxy = start(&base_config(
        "http_access allow app\nread_timeout 1 second\nconnect_timeout 2 seconds",
    ));
    // Nothing listens on port 1: refused.
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        b"GET http://127.30.0.21:1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        status_and_error(&reply),
        (
            "HTTP/1.1 503 Service Unavailable".into(),
            "ERR_CONNECT_FAIL 111".into()
        )
    );
    // The origin answers after 3 s; read_timeout is 1 s.
    let started = Instant::now();
    let request = format!(
        "GET {}/slow/3000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url()
    );
    let reply = exchange_raw(APP, proxy.addr(), request.as_bytes());
    assert_eq!(
        status_and_error(&reply),
        (
            "HTTP/1.1 504 Gateway Timeout".into(),
            "ERR_READ_TIMEOUT 0".into()
        )
    );
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "took {:?}",
        started.elapsed()
    );
    let lines = proxy.access_log(2);
    assert!(
        lines[0].contains(" TCP_MISS/503 ")
            && lines[0].ends_with(" HIER_DIRECT/127.30.0.21 text/html"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(" TCP_MISS/504 "), "{}", lines[1]);
}

#[test]
fn a_malformed_origin_reply_is_a_502_invalid_resp() {
    let listener = TcpListener::bind("127.30.0.22:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n");
    });
    let proxy = start_default();
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        format!("GET http://{addr}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        status_and_error(&reply),
        (
            "HTTP/1.1 502 Bad Gateway".into(),
            "ERR_INVALID_RESP 0".into()
        )
    );
    server.join().unwrap();
}

#[test]
fn denied_request_never_reaches_the_origin() {
    let origin = Origin::start("127.30.0.23");
    let proxy = start_default();
    let reply = exchange_raw(
        "127.99.0.5",
        proxy.addr(),
        format!(
            "GET {}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            origin.url()
        )
        .as_bytes(),
    );
    assert_eq!(
        status_and_error(&reply),
        (
            "HTTP/1.1 403 Forbidden".into(),
            "ERR_ACCESS_DENIED 0".into()
        )
    );
    assert!(origin.seen().is_empty());
}
