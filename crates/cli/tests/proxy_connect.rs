//! CONNECT tunnels: 200 only once the origin connection is up, TLS end to end, half-close
//! passed on in both directions, errors when the origin cannot be reached.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::Duration;

use common::{base_config, curl_through, start, start_default, APP};
use testkit::client::{connect_from, exchange_raw, read_to_close};
use testkit::origin::Origin;

#[test]
fn https_through_connect_verifies_the_origins_certificate() {
    let origin = Origin::start_tls("127.30.0.30");
    let proxy = start_default();
    let cert = proxy.dir.path().join("origin.pem");
    std::fs::write(&cert, origin.cert_pem.as_ref().unwrap()).unwrap();
    let url = format!("https://{}/small", origin.addr);
    let r = curl_through(&proxy, &["--cacert", cert.to_str().unwrap(), &url]);
    assert!(r.success, "{r:?}");
    assert_eq!(r.stdout, "x".repeat(100));
    let lines = proxy.access_log(1);
    assert!(
        lines[0].contains(" 127.20.0.5 TCP_TUNNEL/200 "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(&format!(
            " CONNECT {} - HIER_DIRECT/127.30.0.30 -",
            origin.addr
        )),
        "{}",
        lines[0]
    );
}

#[test]
fn half_close_passes_both_ways() {
    // The origin reads until the client's half-close, then answers and closes.
    let listener = TcpListener::bind("127.30.0.31:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .unwrap();
    });
    let proxy = start_default();
    let mut client = connect_from(APP, proxy.addr());
    // The first payload bytes travel in the same segment as the CONNECT head.
    client
        .write_all(format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\nearly-").as_bytes())
        .unwrap();
    let mut head = [0u8; 39];
    client.read_exact(&mut head).unwrap();
    assert_eq!(&head[..], b"HTTP/1.1 200 Connection established\r\n\r\n");
    client.write_all(&vec![b'p'; 100_000]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let reply = read_to_close(&mut client, Duration::from_secs(10));
    assert_eq!(String::from_utf8(reply).unwrap(), "got 100006 bytes");
    server.join().unwrap();
}

#[test]
fn connect_to_a_closed_port_is_503_and_nothing_is_tunnelled() {
    let proxy = start_default();
    let reply = exchange_raw(APP, proxy.addr(), b"CONNECT 127.30.0.32:1 HTTP/1.1\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{reply}"
    );
    assert!(
        reply.contains("X-Squid-Error: ERR_CONNECT_FAIL 111\r\n"),
        "{reply}"
    );
    let lines = proxy.access_log(1);
    assert!(
        lines[0].contains(" NONE_NONE/503 ") && lines[0].contains(" CONNECT 127.30.0.32:1 "),
        "{}",
        lines[0]
    );
}

#[test]
fn an_idle_tunnel_closes_after_read_timeout() {
    let listener = TcpListener::bind("127.30.0.33:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        // Returns 0 when the proxy closes the idle tunnel.
        s.read(&mut buf).unwrap_or(0)
    });
    let proxy = start(&base_config("http_access allow app\nread_timeout 1 second"));
    let mut client = connect_from(APP, proxy.addr());
    client
        .write_all(format!("CONNECT {addr} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let started = std::time::Instant::now();
    let reply = read_to_close(&mut client, Duration::from_secs(10));
    assert_eq!(reply, b"HTTP/1.1 200 Connection established\r\n\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle tunnel lived {:?}",
        started.elapsed()
    );
    assert_eq!(server.join().unwrap(), 0);
}
