//! `http_port ... intercept` in network namespaces the test creates: an app namespace whose
//! route to the service network goes through the proxy's namespace, where an nftables rule
//! redirects the app's port-80-style traffic to the proxy's intercept port. The client
//! speaks plain HTTP to the origin's address and never knows a proxy is there; the proxy
//! finds the original destination (SO_ORIGINAL_DST), forwards there whatever `Host` says,
//! and logs the request. A request sent to the intercept port directly is refused; traffic
//! that is not HTTP is tunnelled to its original destination (`on_unsupported_protocol`).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::BIN;
use testkit::client::exchange_raw;
use testkit::netns::{self, Net};
use testkit::origin::Origin;

const PROXY: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
const ORIGIN: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 10);

fn run(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A service on the origin's address inside namespace `ns`: each connection handled by
/// `handle` on a thread of its own; returns its port.
fn serve_in(ns: &str, handle: fn(&mut std::net::TcpStream)) -> u16 {
    netns::run_in(ns, || {
        let listener = std::net::TcpListener::bind((ORIGIN, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                std::thread::spawn(move || handle(&mut s));
            }
        });
        port
    })
}

#[test]
fn intercepted_connections_reach_their_original_destination() {
    if let Some(why) = netns::unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("SKIPPED: nft (nftables) is not installed");
        return;
    }
    let mut net = Net::new();
    let app = net.add("app", CLIENT).name;
    let px = net.add("px", PROXY).name;
    let svc = net.add("svc", ORIGIN).name;
    let origin = netns::run_in(&svc, || Origin::start(&ORIGIN.to_string()));
    let port = origin.addr.port();
    // The app reaches the service network through the proxy's host, which redirects it.
    run(
        &app,
        &[
            "ip",
            "route",
            "add",
            "198.18.30.0/24",
            "via",
            &PROXY.to_string(),
        ],
    );
    run(&px, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // A TLS service on the origin's host: it answers a ClientHello with `server-hello`.
    let tls_port = serve_in(&svc, |s| {
        use std::io::{Read, Write};
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !matches!(
            proxyfleet_proxy::sni::peek(&got),
            proxyfleet_proxy::sni::Peek::Hello { .. }
        ) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(b"server-hello");
    });
    // A service that is not HTTP (an SSH-like banner exchange): it echoes what it gets.
    let echo_port = serve_in(&svc, |s| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            let _ = s.write_all(&[b"echo:", &buf[..n]].concat());
        }
    });
    let rules = format!(
        "table ip intercept {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat;\n\
         \t\tip saddr 198.18.20.0/24 ip daddr {ORIGIN} tcp dport {port} redirect to :3129\n\
         \t\tip saddr 198.18.20.0/24 ip daddr {ORIGIN} tcp dport {tls_port} redirect to :3130\n\
         \t\tip saddr 198.18.20.0/24 ip daddr {ORIGIN} tcp dport {echo_port} redirect to :3129\n\
         \t}}\n\
         }}\n"
    );
    let rules_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules_file.path(), rules).unwrap();
    run(&px, &["nft", "-f", rules_file.path().to_str().unwrap()]);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let conf = dir.path().join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port {PROXY}:3129 intercept\n\
             http_port {PROXY}:3128\n\
             https_port {PROXY}:3130 intercept ssl-bump cert=/etc/squid/unused.pem\n\
             acl allowed_tls ssl::server_name .allowed.test\n\
             acl step1 at_step SslBump1\n\
             ssl_bump peek step1\n\
             ssl_bump splice allowed_tls\n\
             ssl_bump terminate all\n\
             visible_hostname intercept.test\n\
             dns_nameservers 127.0.0.1\n\
             acl apps src 198.18.20.0/24\n\
             acl forbidden dstdomain .forbidden.test\n\
             http_access deny forbidden\n\
             http_access allow apps\n\
             on_unsupported_protocol tunnel apps\n\
             http_access deny all\n\
             access_log {}\n",
            log.display()
        ),
    )
    .unwrap();
    let mut proxy = net.spawn("px", BIN, &["proxy", "-f", conf.to_str().unwrap()]);
    testkit::wait::until("the three ports to listen", Duration::from_secs(15), || {
        assert!(!proxy.has_exited(), "proxy exited: {:?}", proxy.stderr());
        let serving = proxy
            .stdout()
            .iter()
            .filter(|l| l.starts_with("proxyfleet proxy: serving on"))
            .count();
        (serving == 3).then_some(())
    });

    let to_origin = SocketAddr::from((ORIGIN, port));
    let get = |host: &str| {
        netns::run_in(&app, || {
            exchange_raw(
                &CLIENT.to_string(),
                to_origin,
                format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
        })
    };
    let reply = get(&format!("{ORIGIN}:{port}"));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("via: 1.1 intercept.test"),
        "through the proxy: {reply}"
    );
    // A Host naming somewhere else still goes to the original destination.
    let reply = get("elsewhere.test");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("host: elsewhere.test"), "{reply}");
    // ACLs see the Host name.
    let reply = get("www.forbidden.test");
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert_eq!(origin.seen().len(), 2, "the denied request never left");

    // Straight to the intercept port, not redirected: nowhere to forward it.
    let direct = netns::run_in(&app, || {
        exchange_raw(
            &CLIENT.to_string(),
            SocketAddr::from((PROXY, 3129)),
            b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    assert!(direct.starts_with("HTTP/1.1 400"), "{direct}");

    // Intercepted TLS: peeked at, spliced to the original destination by its server name.
    let tls = |sni: &str| {
        netns::run_in(&app, || {
            let hello = proxyfleet_proxy::sni::client_hello(Some(sni), 0, 16384);
            exchange_raw(
                &CLIENT.to_string(),
                SocketAddr::from((ORIGIN, tls_port)),
                &hello,
            )
        })
    };
    assert_eq!(tls("www.allowed.test"), "server-hello");
    assert_eq!(tls("www.elsewhere.test"), "", "terminated");

    // Not HTTP on the intercept port: tunnelled to where it was going
    // (on_unsupported_protocol tunnel), its first bytes included.
    let echoed = netns::run_in(&app, || {
        exchange_raw(
            &CLIENT.to_string(),
            SocketAddr::from((ORIGIN, echo_port)),
            b"SSH-2.0-OpenSSH_9.2\r\n",
        )
    });
    assert_eq!(echoed, "echo:SSH-2.0-OpenSSH_9.2\r\n");

    let lines = testkit::wait::until("7 access log lines", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= 7).then_some(lines)
    });
    assert!(
        lines[0].contains(&format!("{CLIENT} TCP_MISS/200 ")),
        "{lines:#?}"
    );
    assert!(
        lines[0].contains(&format!(
            "GET http://{ORIGIN}:{port}/headers - HIER_DIRECT/{ORIGIN}"
        )),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("GET http://elsewhere.test/headers - HIER_DIRECT/198.18.30.10"),
        "{lines:#?}"
    );
    assert!(lines[2].contains("TCP_DENIED/403"), "{lines:#?}");
    assert!(lines[3].contains("NONE_NONE/400"), "{lines:#?}");
    // The tunnels are logged when they close, so in either order (one run saw them
    // swapped).
    let tunnels = &lines[4..7];
    let has = |what: &str, target: u16| {
        tunnels
            .iter()
            .any(|l| l.contains(what) && l.contains(&format!("CONNECT {ORIGIN}:{target} ")))
    };
    assert!(has("TCP_TUNNEL/200", tls_port), "{lines:#?}");
    assert!(has("TCP_DENIED/000", tls_port), "{lines:#?}");
    assert!(
        has("TCP_TUNNEL/200", echo_port),
        "not HTTP, tunnelled: {lines:#?}"
    );
}
