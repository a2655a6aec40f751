//! `ssl_bump` peek / splice / terminate on an `http_port ... ssl-bump`, without decrypting:
//! CONNECT tunnels whose ClientHello names an allowed server are spliced to the origin with
//! the client's bytes unchanged; others (another name, no name, not TLS) are terminated and
//! logged with their server name. ClientHellos split over many TCP segments and larger than
//! 16 KiB (several TLS records) are read whole.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use common::{base_config, start, APP};
use proxyfleet_proxy::sni::client_hello;
use testkit::client::connect_from;

/// An origin that reads what arrives until the client stops sending a ClientHello's worth
/// (`expect` bytes), reports it, and answers `server-hello`.
fn echo_origin(ip: &str) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 65536];
                // The hello's own lengths say when it is whole.
                while !matches!(
                    proxyfleet_proxy::sni::peek(&got),
                    proxyfleet_proxy::sni::Peek::Hello { .. }
                ) {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(got);
                let _ = s.write_all(b"server-hello");
            });
        }
    });
    (addr, rx)
}

/// CONNECT, then the hello in pieces of `piece` bytes; returns what came back after the
/// CONNECT's answer (until the proxy or origin closes, or 5 s).
fn tunnel(proxy: SocketAddr, to: SocketAddr, hello: &[u8], piece: usize) -> (String, Vec<u8>) {
    let mut s = connect_from(APP, proxy);
    s.set_nodelay(true).unwrap();
    write!(s, "CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    for chunk in hello.chunks(piece) {
        if s.write_all(chunk).is_err() {
            break;
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    while !rest.ends_with(b"server-hello") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), rest)
}

#[test]
fn peek_then_splice_by_server_name_or_terminate() {
    let (origin, seen) = echo_origin("127.30.0.79");
    let proxy = start(&base_config(
        "http_port 127.0.0.1:0 ssl-bump cert=/etc/squid/unused.pem generate-host-certificates=on\n\
         acl allowed ssl::server_name .allowed.test\n\
         acl step1 at_step SslBump1\n\
         http_access allow app\n\
         ssl_bump peek step1\n\
         ssl_bump splice allowed\n\
         ssl_bump terminate all\n\
         logformat sni %>a %rm %ru %>Hs %Ss %ssl::>sni\n\
         access_log ACCESS_LOG sni\n",
    ));
    // The first port has no ssl-bump: the second does.
    let bump = proxy.addrs[1];

    let hello = client_hello(Some("www.allowed.test"), 0, 16384);
    let (head, back) = tunnel(bump, origin, &hello, 7);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(back, b"server-hello", "spliced");
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(5)).unwrap(),
        hello,
        "the hello unchanged, though it came 7 bytes at a time"
    );

    let big = client_hello(Some("big.allowed.test"), 40_000, 16384);
    assert!(big.len() > 16 * 1024 + 5);
    let (_, back) = tunnel(bump, origin, &big, 1500);
    assert_eq!(back, b"server-hello", "a 40 KB hello over three records");
    assert_eq!(seen.recv_timeout(Duration::from_secs(5)).unwrap(), big);

    for (what, hello) in [
        (
            "another name",
            client_hello(Some("www.elsewhere.test"), 0, 16384),
        ),
        ("no name", client_hello(None, 0, 16384)),
        ("not TLS", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ] {
        let (head, back) = tunnel(bump, origin, &hello, 16384);
        assert!(head.starts_with("HTTP/1.1 200"), "{what}: {head}");
        assert!(back.is_empty(), "{what}: terminated, got {back:?}");
    }
    assert!(
        seen.try_recv().is_err(),
        "nothing terminated reached the origin"
    );

    // The port without ssl-bump tunnels whatever is sent.
    let (_, back) = tunnel(
        proxy.addr(),
        origin,
        &client_hello(Some("www.elsewhere.test"), 0, 16384),
        16384,
    );
    assert_eq!(back, b"server-hello");

    // A tunnel's line is written when it has closed both ways, so the lines of tunnels that
    // overlap come in either order: compared as a set.
    let log = proxy.access_log(6);
    let o = origin.to_string();
    let mut got: Vec<String> = log[..6].to_vec();
    got.sort();
    let mut expected: Vec<String> = [
        "200 TCP_TUNNEL www.allowed.test",
        "200 TCP_TUNNEL big.allowed.test",
        "200 TCP_DENIED www.elsewhere.test",
        "200 TCP_DENIED -",
        "200 TCP_DENIED -",
        // The port without ssl-bump: not peeked, so no name.
        "200 TCP_TUNNEL -",
    ]
    .iter()
    .map(|tail| format!("{APP} CONNECT {o} {tail}"))
    .collect();
    expected.sort();
    assert_eq!(got, expected, "{log:#?}");
}

#[test]
fn bump_is_refused_with_a_bump_port_and_ignored_without() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("squid.conf");
    let check = |text: &str| {
        std::fs::write(&conf, text).unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["proxy", "--check", "-f", conf.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) =
        check("http_port 3128 ssl-bump cert=/x.pem\nssl_bump bump all\nhttp_access deny all\n");
    assert!(!ok);
    assert!(
        err.contains("2:10: ssl_bump: bump (and client-first, server-first, allow) decrypts TLS"),
        "{err}"
    );
    let (ok, err) = check("http_port 3128\nssl_bump server-first all\nhttp_access deny all\n");
    assert!(ok, "{err}");
    assert!(err.contains("ssl_bump lines have no effect"), "{err}");
    let (ok, err) = check("https_port 3130 cert=/x.pem\nhttp_access deny all\n");
    assert!(!ok);
    assert!(
        err.contains("https_port is supported only as 'intercept ssl-bump'"),
        "{err}"
    );
}
