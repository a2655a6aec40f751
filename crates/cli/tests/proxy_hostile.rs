//! Slow and hostile clients cost bounded memory and time, and never stop normal clients.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{base_config, start, ProxyUnderTest, APP};
use testkit::client::{connect_from, exchange_raw, read_to_close};
use testkit::origin::Origin;
use testkit::process::rss_kib;

fn normal_request_works(proxy: &ProxyUnderTest, origin: &Origin) {
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        format!(
            "GET {}/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            origin.url()
        )
        .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}

#[test]
fn slowloris_connections_are_cheap_and_cut_off_by_request_timeout() {
    let origin = Origin::start("127.30.0.80");
    let proxy = start(&base_config(
        "http_access allow app\nrequest_timeout 3 seconds",
    ));
    normal_request_works(&proxy, &origin);
    let before = rss_kib(proxy.child.pid());
    let mut slow = Vec::new();
    for i in 0..500u32 {
        let source = format!("127.20.{}.{}", 1 + i / 250, 1 + i % 250);
        let mut s = connect_from(&source, proxy.addr());
        s.write_all(b"GET http://127.30.0.80/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        slow.push(s);
    }
    let opened = Instant::now();
    normal_request_works(&proxy, &origin);
    let during = rss_kib(proxy.child.pid());
    let per_connection = (during.saturating_sub(before)) * 1024 / 500;
    println!(
        "RSS {before} KiB idle, {during} KiB with 500 slow clients: {per_connection} bytes each"
    );
    assert!(
        per_connection < 16 * 1024,
        "a slow client costs {per_connection} bytes"
    );
    for s in &mut slow {
        assert!(read_to_close(s, Duration::from_secs(10)).is_empty());
    }
    assert!(
        opened.elapsed() < Duration::from_secs(8),
        "cut off after {:?}",
        opened.elapsed()
    );
    normal_request_works(&proxy, &origin);
}

#[test]
fn a_malformed_request_storm_leaves_the_proxy_serving() {
    let origin = Origin::start("127.30.0.81");
    let proxy = start(&base_config("http_access allow app\naccess_log none"));
    normal_request_works(&proxy, &origin);
    let before = rss_kib(proxy.child.pid());
    let junk: [&[u8]; 5] = [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET http://127.30.0.81/ HTTP/9.9\r\n\r\n",
        b"GET http://127.30.0.81/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST http://127.30.0.81/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"CONNECT :0 HTTP/1.1\r\n\r\n",
    ];
    for i in 0..2000 {
        let mut s = connect_from(APP, proxy.addr());
        let _ = s.write_all(junk[i % junk.len()]);
        drop(s);
    }
    normal_request_works(&proxy, &origin);
    let after = rss_kib(proxy.child.pid());
    println!("RSS {before} KiB before, {after} KiB after 2000 malformed requests");
    assert!(
        after < before + 32 * 1024,
        "memory grew from {before} to {after} KiB"
    );
}
