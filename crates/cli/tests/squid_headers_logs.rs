//! squid.conf header rules, reply rules, header ACLs and log formats end to end, through the
//! real binary to a real origin: `request_header_access` / `_replace` / `_add` as the origin
//! sees them, `reply_header_access` / `_add` as the client sees them, `http_reply_access`
//! with `rep_mime_type`, `req_header` / `browser` ACLs, and `logformat` lines (and the
//! built-in `combined`) as written to the access logs.

mod common;

use common::{base_config, start, APP};
use testkit::client::exchange_raw;
use testkit::origin::Origin;

fn status(reply: &str) -> u16 {
    reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn get(proxy: std::net::SocketAddr, url: &str, fields: &str) -> String {
    exchange_raw(
        APP,
        proxy,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn header_rules_reply_rules_and_log_formats() {
    let origin = Origin::start("127.30.0.63");
    let proxy = start(&base_config(
        "acl red_team req_header X-Team -i ^red$\n\
         acl bots browser -i ^badbot\n\
         acl html rep_mime_type -i ^text/html\n\
         acl teapot http_status 418\n\
         http_access deny red_team\n\
         http_access deny bots\n\
         http_access allow app\n\
         http_access deny all\n\
         http_reply_access deny html\n\
         http_reply_access allow all\n\
         request_header_access User-Agent deny all\n\
         request_header_replace User-Agent Hidden/1.0\n\
         request_header_access X-Secret deny all\n\
         request_header_access Via deny all\n\
         request_header_access X-Forwarded-For deny all\n\
         request_header_add X-Client \"%>a via %la\" app\n\
         reply_header_access Date deny all\n\
         reply_header_add X-Egress \"checked\" teapot\n\
         logformat mine %>a %rm %ru %>Hs %Ss \"%{User-Agent}>h\" [%<h{Content-Type}] %la\n\
         access_log ACCESS_LOG mine\n\
         access_log ACCESS_LOG.combined combined\n",
    ));
    let p = proxy.addr();
    let base = origin.url();

    let reply = get(
        p,
        &format!("{base}/headers"),
        "User-Agent: curl/8.0\r\nX-Secret: s3cret\r\nX-Team: blue\r\nX-Forwarded-For: 10.9.9.9\r\n",
    );
    assert_eq!(status(&reply), 200, "{reply}");
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        body.contains("user-agent: hidden/1.0\n"),
        "replaced: {body}"
    );
    assert!(!body.contains("x-secret"), "denied: {body}");
    assert!(!body.contains("via:"), "Via denied: {body}");
    assert!(!body.contains("x-forwarded-for"), "XFF denied: {body}");
    assert!(body.contains("x-team: blue\n"), "other fields pass: {body}");
    assert!(
        body.contains(&format!("x-client: {APP} via 127.0.0.1\n")),
        "added with format codes: {body}"
    );
    assert!(
        !reply.to_ascii_lowercase().contains("\r\ndate:"),
        "reply Date denied: {reply}"
    );
    assert!(!reply.contains("X-Egress"), "only for 418: {reply}");

    let teapot = get(p, &format!("{base}/status/418"), "");
    assert_eq!(status(&teapot), 418, "{teapot}");
    assert!(teapot.contains("\r\nX-Egress: checked\r\n"), "{teapot}");

    // The origin's default page is text/html: the reply is refused.
    let html = get(p, &format!("{base}/page"), "");
    assert_eq!(status(&html), 403, "{html}");
    assert!(html.contains("X-Squid-Error: ERR_ACCESS_DENIED"), "{html}");

    assert_eq!(
        status(&get(p, &format!("{base}/small"), "X-Team: Red\r\n")),
        403
    );
    assert_eq!(
        status(&get(
            p,
            &format!("{base}/small"),
            "User-Agent: BadBot/2\r\n"
        )),
        403
    );

    let log = proxy.access_log(5);
    assert_eq!(
        log[0],
        format!("{APP} GET {base}/headers 200 TCP_MISS \"curl/8.0\" [text/plain] 127.0.0.1"),
        "{log:#?}"
    );
    assert!(
        log[1].starts_with(&format!("{APP} GET {base}/status/418 418 TCP_MISS \"-\"")),
        "{log:#?}"
    );
    assert!(log[2].contains(" 403 TCP_DENIED_REPLY "), "{log:#?}");
    assert!(log[3].contains(" 403 TCP_DENIED "), "{log:#?}");

    let combined_path = format!("{}.combined", proxy.access_log_path().display());
    let combined = std::fs::read_to_string(&combined_path).unwrap();
    let first = combined.lines().next().unwrap();
    // `%>a %[ui %[un [%tl] "%rm %ru HTTP/%rv" %>Hs %<st "%{Referer}>h" "%{User-Agent}>h" %Ss:%Sh`
    let pattern = regex::Regex::new(&format!(
        r#"^{} - - \[\d\d/[A-Z][a-z]{{2}}/\d{{4}}:\d\d:\d\d:\d\d [+-]\d{{4}}\] "GET {}/headers HTTP/1\.1" 200 \d+ "-" "curl/8\.0" TCP_MISS:HIER_DIRECT$"#,
        regex::escape(APP),
        regex::escape(&base)
    ))
    .unwrap();
    assert!(pattern.is_match(first), "{first}");
}

/// `miss_access` is a second `http_access` here (every request is a miss), and
/// `never_direct` without a parent cannot be forwarded: Squid's pages for both, and the
/// origin never sees either request.
#[test]
fn miss_access_and_never_direct() {
    let origin = Origin::start("127.30.0.64");
    let proxy = start(&base_config(
        "acl nd urlpath_regex ^/nd\n\
         acl miss urlpath_regex ^/miss\n\
         http_access allow app\n\
         miss_access deny miss\n\
         miss_access allow all\n\
         never_direct allow nd\n\
         prefer_direct off\n",
    ));
    let p = proxy.addr();
    let base = origin.url();
    let nd = get(p, &format!("{base}/nd"), "");
    // What Squid 5.7 answers (squid_differential checks it against Squid itself).
    assert_eq!(status(&nd), 502, "{nd}");
    assert!(nd.contains("X-Squid-Error: ERR_READ_ERROR 0"), "{nd}");
    let miss = get(p, &format!("{base}/miss"), "");
    assert_eq!(status(&miss), 403, "{miss}");
    assert!(
        miss.contains("X-Squid-Error: ERR_FORWARDING_DENIED 0"),
        "{miss}"
    );
    assert_eq!(status(&get(p, &format!("{base}/small"), "")), 200);
    let seen: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(seen, ["/small"]);
    let log = proxy.access_log(3);
    assert!(log[0].contains(" TCP_MISS/502 "), "{log:#?}");
    assert!(log[1].contains(" TCP_MISS/403 "), "{log:#?}");
}

/// `access_log udp://ADDRESS:PORT`: each line one datagram, in the format asked for.
#[test]
fn access_log_to_a_udp_log_host() {
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let origin = Origin::start("127.30.0.69");
    let proxy = start(&base_config(&format!(
        "http_access allow app\n\
         access_log udp://{} common\n\
         access_log ACCESS_LOG squid\n",
        collector.local_addr().unwrap()
    )));
    let url = format!("{}/small", origin.url());
    assert_eq!(status(&get(proxy.addr(), &url, "")), 200);
    let mut buf = [0u8; 2048];
    let n = collector.recv(&mut buf).expect("a datagram");
    let line = String::from_utf8_lossy(&buf[..n]);
    assert!(line.starts_with(&format!("{APP} - - [")), "{line}");
    assert!(
        line.ends_with(&format!(
            "] \"GET {url} HTTP/1.1\" 200 {} TCP_MISS:HIER_DIRECT\n",
            {
                let file_line = &proxy.access_log(1)[0];
                file_line.split_whitespace().nth(4).unwrap().to_string()
            }
        )),
        "{line}"
    );
}

/// An origin that switches protocols when asked (`Upgrade: websocket`) and then echoes
/// what it reads; without an `Upgrade` it answers 200 `no upgrade`. Reports the request
/// heads it saw.
fn upgrading_origin(ip: &str) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let upgrade = head.to_ascii_lowercase().contains("\r\nupgrade: websocket");
                let _ = tx.send(head);
                if !upgrade {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nno upgrade");
                    return;
                }
                let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// `http_upgrade_request_protocols`: WebSockets through the proxy to a `ws://`-style URL
/// when allowed (the 101 passed on, then bytes both ways), `Upgrade` removed otherwise.
#[test]
fn websocket_upgrades_when_allowed() {
    use std::io::{Read, Write};
    let (origin, heads) = upgrading_origin("127.30.0.80");
    let proxy = start(&base_config(
        "acl sockets urlpath_regex ^/socket\n\
         http_access allow app\n\
         http_upgrade_request_protocols WebSocket allow sockets\n\
         http_upgrade_request_protocols OTHER deny all\n",
    ));
    let ask = |path: &str, connection: &str| {
        format!(
            "GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nUpgrade: websocket, h2c\r\nConnection: {connection}\r\n\r\n"
        )
    };
    let mut s = testkit::client::connect_from(APP, proxy.addr());
    s.write_all(ask("/socket", "Upgrade").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
    s.write_all(b"ping over the socket").unwrap();
    let mut echo = [0u8; 20];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping over the socket");
    drop(s);
    let seen = heads
        .recv_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let lower = seen.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nupgrade: websocket\r\n"),
        "only the allowed protocol: {seen}"
    );
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{seen}");

    // Not allowed for this path: the origin sees no Upgrade, and answers the plain request.
    let reply = exchange_raw(
        APP,
        proxy.addr(),
        ask("/other", "Upgrade, close").as_bytes(),
    );
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("no upgrade"),
        "{reply}"
    );
    let seen = heads
        .recv_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    assert!(!seen.to_ascii_lowercase().contains("upgrade:"), "{seen}");
    let log = proxy.access_log(2);
    assert!(log.iter().any(|l| l.contains("TCP_MISS/101")), "{log:#?}");
}

/// `access_log syslog:FACILITY.PRIORITY`: each line one message to the system log's socket
/// (here one the test binds), as syslog(3) writes them.
#[test]
fn access_log_to_syslog() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let origin = Origin::start("127.30.0.82");
    let proxy = common::start_with_env(
        &base_config(
            "http_access allow app\n\
             access_log syslog:local5.notice squid\n\
             access_log ACCESS_LOG squid\n",
        ),
        &[("PROXYFLEET_SYSLOG_SOCKET", socket_path.to_str().unwrap())],
    );
    let url = format!("{}/small", origin.url());
    assert_eq!(status(&get(proxy.addr(), &url, "")), 200);
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a syslog message");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    // local5 (21) × 8 + notice (5) = 173.
    let prefix = format!("<173>squid[{}]: ", proxy.child.pid());
    assert!(message.starts_with(&prefix), "{message}");
    let file_line = proxy.access_log(1)[0].clone();
    assert_eq!(
        &message[prefix.len()..],
        file_line,
        "the same line as the file's"
    );
}

/// `access_log tcp://ADDR:PORT`: the lines arrive over one connection, in order.
#[test]
fn access_log_to_a_tcp_log_receiver() {
    use std::io::BufRead;
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = Origin::start("127.30.0.84");
    let proxy = start(&base_config(&format!(
        "http_access allow app\n\
         access_log tcp://{} squid\n\
         access_log ACCESS_LOG squid\n",
        receiver.local_addr().unwrap()
    )));
    let url = format!("{}/small", origin.url());
    for _ in 0..2 {
        assert_eq!(status(&get(proxy.addr(), &url, "")), 200);
    }
    let (stream, _) = receiver.accept().unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut lines = std::io::BufReader::new(stream).lines();
    let file = proxy.access_log(2);
    for expected in &file[..2] {
        assert_eq!(&lines.next().unwrap().unwrap(), expected);
    }
}
