//! Forwarding through the real binary: methods, bodies both ways, keep-alive on both sides,
//! header rewriting, the source address, and the access log lines.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{base_config, curl_through, start, start_default, APP};
use testkit::client::{connect_from, read_response, read_to_close};
use testkit::origin::Origin;

#[test]
fn get_through_the_proxy_reaches_the_origin_from_the_outgoing_address() {
    let origin = Origin::start("127.30.0.10");
    let proxy = start(&base_config(
        "http_access allow app\ntcp_outgoing_address 127.30.0.99",
    ));
    let out = curl_through(&proxy, &[&format!("{}/small", origin.url())]);
    assert!(out.success, "{out:?}");
    assert_eq!(out.stdout, "x".repeat(100));
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].peer.ip().to_string(),
        "127.30.0.99",
        "tcp_outgoing_address is the source"
    );
    assert_eq!(
        seen[0].uri, "/small",
        "origin-form on the origin's request line"
    );
    assert_eq!(
        seen[0].header("host"),
        Some(origin.addr.to_string().as_str())
    );
    assert_eq!(
        seen[0].header("via"),
        Some("1.1 proxy.test (proxyfleet/0.1.0)")
    );
    assert_eq!(seen[0].header("x-forwarded-for"), Some(APP));
}

#[test]
fn keep_alive_on_both_sides_reuses_connections() {
    let origin = Origin::start("127.30.0.11");
    let proxy = start_default();
    let mut client = connect_from(APP, proxy.addr());
    for i in 0..5 {
        let req = format!(
            "GET {}/small?{i} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url(),
            origin.addr
        );
        client.write_all(req.as_bytes()).unwrap();
        let (head, body) = read_response(&mut client);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: keep-alive\r\n"), "{head}");
        assert_eq!(body.len(), 100);
    }
    let peers: std::collections::HashSet<_> = origin.seen().iter().map(|s| s.peer).collect();
    assert_eq!(
        peers.len(),
        1,
        "five requests, one pooled origin connection: {peers:?}"
    );
}

#[test]
fn request_bodies_stream_both_framings() {
    let origin = Origin::start("127.30.0.12");
    let proxy = start_default();
    let url = format!("{}/echo", origin.url());
    // Content-Length body, 5 MB, echoed back.
    let body_file = proxy.dir.path().join("body");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&body_file, &data).unwrap();
    let out_file = proxy.dir.path().join("echoed");
    let at_file = format!("@{}", body_file.display());
    let r = curl_through(
        &proxy,
        &[
            "--data-binary",
            &at_file,
            "-o",
            out_file.to_str().unwrap(),
            &url,
        ],
    );
    assert!(r.success, "{r:?}");
    assert_eq!(std::fs::read(&out_file).unwrap(), data);
    // Chunked request body.
    let r = curl_through(
        &proxy,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &at_file,
            "-o",
            out_file.to_str().unwrap(),
            &url,
        ],
    );
    assert!(r.success, "{r:?}");
    assert_eq!(std::fs::read(&out_file).unwrap(), data);
    let chunked = origin
        .seen()
        .iter()
        .filter(|s| s.header("transfer-encoding") == Some("chunked"))
        .count();
    assert_eq!(chunked, 1, "the chunked request reached the origin chunked");
}

#[test]
fn expect_100_continue_is_relayed() {
    let origin = Origin::start("127.30.0.13");
    let proxy = start_default();
    // curl waits for 100 Continue before sending the body; --expect100-timeout makes a lost
    // interim response fail the test instead of silently falling back.
    let r = curl_through(
        &proxy,
        &[
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "10",
            "--data-binary",
            "hello",
            "-w",
            "\n%{time_total}",
            &format!("{}/upload", origin.url()),
        ],
    );
    assert!(r.success, "{r:?}");
    let (body, secs) = r.stdout.rsplit_once('\n').unwrap();
    assert_eq!(body, "received 5 bytes");
    assert!(
        secs.parse::<f64>().unwrap() < 5.0,
        "the body waited for the expect timeout: {secs}s"
    );
}

#[test]
fn chunked_and_large_responses_pass_through() {
    let origin = Origin::start("127.30.0.14");
    let proxy = start_default();
    let r = curl_through(&proxy, &[&format!("{}/chunked", origin.url())]);
    assert_eq!(r.stdout, "first second third\n");
    let r = curl_through(
        &proxy,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &format!("{}/bytes/30000000", origin.url()),
        ],
    );
    assert_eq!(r.stdout, "30000000");
}

#[test]
fn http10_client_gets_a_complete_response_and_its_connection_closed() {
    let origin = Origin::start("127.30.0.15");
    let proxy = start_default();
    let mut client = connect_from(APP, proxy.addr());
    let req = format!("GET {}/chunked HTTP/1.0\r\n\r\n", origin.url());
    client.write_all(req.as_bytes()).unwrap();
    let reply = String::from_utf8(read_to_close(&mut client, Duration::from_secs(10))).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        !reply
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "no chunked coding for a 1.0 client: {reply}"
    );
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
    assert!(reply.ends_with("first second third\n"), "{reply}");
    assert_eq!(
        origin.seen()[0].header("host"),
        Some(origin.addr.to_string().as_str()),
        "Host added for 1.0"
    );
}

#[test]
fn hop_by_hop_headers_are_removed_and_end_to_end_ones_kept() {
    let origin = Origin::start("127.30.0.16");
    let proxy = start_default();
    let mut client = connect_from(APP, proxy.addr());
    let req = format!(
        "GET {}/headers HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nUpgrade: websocket\r\nX-End: kept\r\n\r\n",
        origin.url(),
        origin.addr
    );
    client.write_all(req.as_bytes()).unwrap();
    let (_, body) = read_response(&mut client);
    let body = String::from_utf8(body).unwrap();
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te:",
        "upgrade",
    ] {
        assert!(!body.contains(gone), "{gone} was forwarded: {body}");
    }
    assert!(body.contains("x-end: kept"), "{body}");
}

#[test]
fn via_and_forwarded_for_follow_the_config() {
    let origin = Origin::start("127.30.0.17");
    let cases = [
        (
            "via off\nforwarded_for off",
            None,
            Some("10.0.0.1, unknown"),
        ),
        (
            "forwarded_for transparent",
            Some("1.1 proxy.test (proxyfleet/0.1.0)"),
            Some("10.0.0.1"),
        ),
        (
            "forwarded_for delete",
            Some("1.1 proxy.test (proxyfleet/0.1.0)"),
            None,
        ),
        (
            "forwarded_for truncate",
            Some("1.1 proxy.test (proxyfleet/0.1.0)"),
            Some(APP),
        ),
        (
            "forwarded_for on",
            Some("1.1 proxy.test (proxyfleet/0.1.0)"),
            Some("10.0.0.1, 127.20.0.5"),
        ),
    ];
    for (directives, via, xff) in cases {
        let proxy = start(&base_config(&format!(
            "http_access allow app\n{directives}"
        )));
        let r = curl_through(
            &proxy,
            &[
                "-H",
                "X-Forwarded-For: 10.0.0.1",
                &format!("{}/small", origin.url()),
            ],
        );
        assert!(r.success, "{r:?}");
        let seen = origin.seen().pop().unwrap();
        assert_eq!(seen.header("via"), via, "{directives}");
        assert_eq!(seen.header("x-forwarded-for"), xff, "{directives}");
    }
}

/// Splits a log line into its time fields and the rest, checking the time fields' shape:
/// `%ts.%03tu` then `%6tr` (right-aligned in six columns).
fn split_times(line: &str) -> (String, &str) {
    let shape = regex::Regex::new(r"^(\d{10}\.\d{3}) ( {0,5}\d+) (.*)$").unwrap();
    let caps = shape
        .captures(line)
        .unwrap_or_else(|| panic!("not a Squid log line: {line}"));
    assert!(caps[2].len() >= 6, "elapsed not padded to 6: {line}");
    (
        format!("{} {}", &caps[1], &caps[2]),
        caps.get(3).unwrap().as_str(),
    )
}

#[test]
fn access_log_lines_are_byte_for_byte_squids() {
    let origin = Origin::start("127.30.0.18");
    let proxy = start_default();
    let url = format!("{}/", origin.url());
    let received = testkit::client::exchange_raw(
        APP,
        proxy.addr(),
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let denied = testkit::client::exchange_raw(
        "127.99.0.5",
        proxy.addr(),
        format!("GET {url}small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let lines = proxy.access_log(2);
    let (_, rest) = split_times(&lines[0]);
    assert_eq!(
        rest,
        format!(
            "127.20.0.5 TCP_MISS/200 {} GET {url} - HIER_DIRECT/127.30.0.18 text/html",
            received.len()
        )
    );
    let (_, rest) = split_times(&lines[1]);
    assert_eq!(
        rest,
        format!(
            "127.99.0.5 TCP_DENIED/403 {} GET {url}small - HIER_NONE/- text/html",
            denied.len()
        )
    );
    let bytes = std::fs::read(proxy.access_log_path()).unwrap();
    assert!(
        bytes.ends_with(b"text/html\n"),
        "one line per transaction, LF-terminated"
    );
}
