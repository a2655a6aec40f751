//! Start, check, stop and time limits of the real `proxyfleet proxy` process.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{base_config, start, APP, BIN};
use testkit::client::{connect_from, read_response, read_to_close};
use testkit::origin::Origin;
use testkit::process::run;
use testkit::wait;

fn write_config(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn check_accepts_a_good_file_and_names_file_line_and_column_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "good.conf",
        &base_config("http_access allow app\naccess_log none"),
    );
    let (status, stdout, _) = run(
        BIN,
        &["proxy", "-f", &good, "--check"],
        Duration::from_secs(10),
    );
    assert!(status.success());
    assert!(stdout.contains("configuration OK"), "{stdout}");

    let bad = write_config(
        dir.path(),
        "bad.conf",
        "http_port 127.0.0.1:0\n\nhttp_acess allow all\n",
    );
    let (status, _, stderr) = run(
        BIN,
        &["proxy", "-f", &bad, "--check"],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains(&format!("{bad}:3:1: unknown directive 'http_acess'")),
        "{stderr}"
    );

    let dangling = write_config(
        dir.path(),
        "dangling.conf",
        "http_port 127.0.0.1:0\nhttp_access allow nosuch\n",
    );
    let (status, _, stderr) = run(BIN, &["proxy", "-f", &dangling], Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "not even started: {stderr}");
    assert!(stderr.contains(&format!("{dangling}:2:19:")), "{stderr}");
    assert!(stderr.contains("nosuch"), "{stderr}");
}

#[test]
fn includes_and_cache_directives_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    write_config(
        &dir.path().join("conf.d"),
        "10-acl.conf",
        "acl app src 127.20.0.0/16\n",
    );
    write_config(
        &dir.path().join("conf.d"),
        "20-rules.conf",
        "http_access allow app\nhttp_access deny all\n",
    );
    let main = format!(
        "http_port 127.0.0.1:0\ndns_nameservers 127.0.0.1\ninclude {}/conf.d/*.conf\ncache deny all\ncache_dir ufs /var/spool/squid 100 16 256\nrefresh_pattern . 0 20% 4320\naccess_log none\n",
        dir.path().display()
    );
    let file = write_config(dir.path(), "squid.conf", &main);
    let mut child = testkit::process::Owned::spawn(BIN, &["proxy", "-f", &file]);
    let addr: std::net::SocketAddr = child.wait_stdout("listening", common::START, |l| {
        l.strip_prefix("proxyfleet proxy: serving on ")?
            .parse()
            .ok()
    });
    child.wait_stderr("this proxy never caches", Duration::from_secs(5));
    let notices: Vec<String> = child
        .stderr()
        .into_iter()
        .filter(|l| l.contains("never caches"))
        .collect();
    assert_eq!(notices.len(), 1, "said once: {notices:?}");
    assert!(
        notices[0].contains("cache_dir") && notices[0].contains("refresh_pattern"),
        "{notices:?}"
    );
    // The included ACL and rules are in force.
    let mut ok = connect_from(APP, addr);
    ok.write_all(b"GET http://127.30.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        read_response(&mut ok).0.starts_with("HTTP/1.1 503 "),
        "allowed, origin absent"
    );
    let mut no = connect_from("127.99.0.1", addr);
    no.write_all(b"GET http://127.30.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut no).0.starts_with("HTTP/1.1 403 "));
}

#[test]
fn sigterm_finishes_transactions_in_flight_then_exits_0() {
    let origin = Origin::start("127.30.0.50");
    let mut proxy = start(&base_config("http_access allow app"));
    let mut client = connect_from(APP, proxy.addr());
    // A slow request with a health check pipelined behind it.
    let request = format!(
        "GET {}/slow/1500 HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.url()
    );
    client.write_all(request.as_bytes()).unwrap();
    wait::until_true(
        "the origin to receive the slow request",
        Duration::from_secs(5),
        || !origin.seen().is_empty(),
    );
    proxy.child.signal(libc::SIGTERM);
    // New connections are refused at once.
    wait::until_true("the listener to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(proxy.addr()).is_err()
    });
    let (head, body) = read_response(&mut client);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Connection: close\r\n"),
        "draining: no keep-alive: {head}"
    );
    assert_eq!(body, b"slow\n");
    let status = proxy.child.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let lines = proxy.access_log(1);
    assert!(
        lines[0].contains(" TCP_MISS/200 "),
        "logged before exit: {lines:?}"
    );
}

#[test]
fn a_request_on_an_open_connection_while_draining_sees_healthz_503() {
    let origin = Origin::start("127.30.0.51");
    let mut proxy = start(&base_config("http_access allow app"));
    let mut client = connect_from(APP, proxy.addr());
    // The response head (keep-alive) arrives at once, its body after 1 s.
    client
        .write_all(format!("GET {}/drip/1000 HTTP/1.1\r\nHost: x\r\n\r\n", origin.url()).as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains("Connection: keep-alive"));
    proxy.child.signal(libc::SIGTERM);
    wait::until_true("draining", Duration::from_secs(5), || {
        std::net::TcpStream::connect(proxy.addr()).is_err()
    });
    // Sent while draining, on the busy connection: answered after the body, with 503.
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let rest = String::from_utf8(read_to_close(&mut client, Duration::from_secs(10))).unwrap();
    assert!(
        rest.starts_with("drip\nHTTP/1.1 503 Service Unavailable\r\n"),
        "{rest}"
    );
    assert!(
        rest.contains("Connection: close\r\n") && rest.ends_with("draining\n"),
        "{rest}"
    );
    assert_eq!(
        proxy.child.wait_exit(Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn shutdown_lifetime_bounds_the_wait_and_sigint_does_not_wait() {
    let origin = Origin::start("127.30.0.52");
    for (signal, config, limit) in [
        (
            libc::SIGTERM,
            "http_access allow app\nshutdown_lifetime 1 second",
            Duration::from_millis(3500),
        ),
        (
            libc::SIGINT,
            "http_access allow app",
            Duration::from_millis(2500),
        ),
    ] {
        let mut proxy = start(&base_config(config));
        let mut client = connect_from(APP, proxy.addr());
        client
            .write_all(
                format!("GET {}/slow/8000 HTTP/1.1\r\nHost: x\r\n\r\n", origin.url()).as_bytes(),
            )
            .unwrap();
        let seen = origin.seen().len();
        // A generous deadline: one loaded CI run took over 5 s to get there.
        wait::until_true("the slow request", Duration::from_secs(15), || {
            origin.seen().len() > seen
        });
        let stopped = Instant::now();
        proxy.child.signal(signal);
        let status = proxy.child.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "signal {signal}");
        assert!(
            stopped.elapsed() < limit,
            "signal {signal}: took {:?}",
            stopped.elapsed()
        );
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "the unfinished transaction was cut off: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

#[test]
fn idle_request_and_lifetime_timeouts_close_connections() {
    let origin = Origin::start("127.30.0.53");
    let proxy = start(&base_config(
        "http_access allow app\nclient_idle_pconn_timeout 1 second\nrequest_timeout 1 second\nclient_lifetime 3 seconds",
    ));
    // request_timeout: nothing sent at all, or half a head.
    for opening in [&b""[..], &b"GET http://127.30.0.53/ HTTP/1.1\r\nHo"[..]] {
        let mut c = connect_from(APP, proxy.addr());
        c.write_all(opening).unwrap();
        let t = Instant::now();
        assert!(read_to_close(&mut c, Duration::from_secs(10)).is_empty());
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "request_timeout: {:?}",
            t.elapsed()
        );
    }
    // client_idle_pconn_timeout: idle after one answered request.
    let mut c = connect_from(APP, proxy.addr());
    c.write_all(format!("GET {}/small HTTP/1.1\r\nHost: x\r\n\r\n", origin.url()).as_bytes())
        .unwrap();
    read_response(&mut c);
    let t = Instant::now();
    assert!(read_to_close(&mut c, Duration::from_secs(10)).is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "idle timeout: {:?}",
        t.elapsed()
    );
    // client_lifetime: busy all the time, closed anyway after 3 s.
    let mut c = connect_from(APP, proxy.addr());
    let t = Instant::now();
    let mut answered = 0;
    while t.elapsed() < Duration::from_secs(10) {
        if c.write_all(
            format!("GET {}/slow/100 HTTP/1.1\r\nHost: x\r\n\r\n", origin.url()).as_bytes(),
        )
        .is_err()
        {
            break;
        }
        let mut byte = [0u8; 1];
        match c.peek(&mut byte) {
            Ok(1) => {
                read_response(&mut c);
                answered += 1;
            }
            _ => break,
        }
    }
    assert!(answered >= 5, "served until the lifetime ended: {answered}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "client_lifetime: {:?}",
        t.elapsed()
    );
}

#[test]
fn the_connection_limit_holds_excess_clients_in_the_backlog() {
    // max_filedescriptors 4: two client connections at a time.
    let proxy = start(&base_config("http_access allow app\nmax_filedescriptors 4"));
    let first = connect_from(APP, proxy.addr());
    let second = connect_from(APP, proxy.addr());
    let mut third = connect_from(APP, proxy.addr());
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        third.read(&mut byte).is_err(),
        "a third connection was served beyond the limit"
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (head, _) = read_response(&mut third);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    drop(second);
}

#[test]
fn sigusr1_reopens_the_access_log_after_rotation() {
    let origin = Origin::start("127.30.0.54");
    let proxy = start(&base_config("http_access allow app"));
    let get = format!(
        "GET {}/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url()
    );
    testkit::client::exchange_raw(APP, proxy.addr(), get.as_bytes());
    proxy.access_log(1);
    let rotated = proxy.dir.path().join("access.log.1");
    std::fs::rename(proxy.access_log_path(), &rotated).unwrap();
    proxy.child.signal(libc::SIGUSR1);
    // Requests go on; once the reopen has happened, their lines land in a new file. (The
    // reopen may create it before any line is written there: a request logged just before it
    // went to the rotated file, so requests go on until one is in the new file.)
    wait::until_true(
        "a line in a new access.log",
        Duration::from_secs(10),
        || {
            testkit::client::exchange_raw(APP, proxy.addr(), get.as_bytes());
            std::fs::read_to_string(proxy.access_log_path()).is_ok_and(|t| !t.trim().is_empty())
        },
    );
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("TCP_MISS/200"));
}

#[test]
fn allowed_sources_from_the_group_controller_are_enforced_at_accept() {
    // What `up` sets for a proxyfleet proxy instance when no kernel firewall is available.
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "squid.conf",
        &base_config("acl any_v4 src 0.0.0.0/0\nhttp_access allow any_v4\naccess_log none"),
    );
    let mut child = testkit::process::Owned::spawn_with_env(
        BIN,
        &["proxy", "-f", &file],
        &[("PROXYFLEET_ALLOWED_SOURCES", "127.20.0.0/16,127.10.1.0/24")],
    );
    let addr: std::net::SocketAddr = child.wait_stdout("listening", common::START, |l| {
        l.strip_prefix("proxyfleet proxy: serving on ")?
            .parse()
            .ok()
    });
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(testkit::client::exchange_raw("127.20.0.5", addr, healthz).starts_with("HTTP/1.1 200"));
    assert!(testkit::client::exchange_raw("127.10.1.10", addr, healthz).starts_with("HTTP/1.1 200"));
    assert_eq!(
        testkit::client::exchange_raw("127.99.0.5", addr, healthz),
        "",
        "closed at accept, never served"
    );
}

/// Sends `head` one byte per `gap` until the proxy closes; returns how long that took after
/// the first byte and how many bytes went out.
fn trickle(c: &mut std::net::TcpStream, head: &[u8], gap: Duration) -> (Duration, usize) {
    c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let t = Instant::now();
    for (sent, byte) in head.iter().enumerate() {
        let mut probe = [0u8; 1];
        match c.read(&mut probe) {
            Ok(0) => return (t.elapsed(), sent),
            Ok(_) => panic!("the proxy answered a head that was never finished"),
            Err(_) => {}
        }
        if c.write_all(std::slice::from_ref(byte)).is_err() {
            return (t.elapsed(), sent);
        }
        std::thread::sleep(gap);
    }
    panic!("the whole head went out in {:?}", t.elapsed());
}

#[test]
fn request_timeout_bounds_the_whole_head_however_slowly_it_trickles() {
    let origin = Origin::start("127.30.0.54");
    let proxy = start(&base_config(
        "http_access allow app\nrequest_timeout 3 seconds\nclient_idle_pconn_timeout 10 seconds",
    ));
    // A slowloris: one byte a second of a head that never ends; request_timeout counts from
    // the connection, not from the last byte.
    let head = b"GET http://127.30.0.54/ HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut c = connect_from(APP, proxy.addr());
    let (took, sent) = trickle(&mut c, head, Duration::from_secs(1));
    println!("first head at 1 byte/s: closed after {took:?} ({sent} bytes sent)");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(5000),
        "request_timeout 3 s: {took:?}"
    );
    // After an answered request, the next head may idle up to client_idle_pconn_timeout for
    // its first byte, then must be whole within request_timeout of it.
    let mut c = connect_from(APP, proxy.addr());
    c.write_all(format!("GET {}/small HTTP/1.1\r\nHost: x\r\n\r\n", origin.url()).as_bytes())
        .unwrap();
    read_response(&mut c);
    let (took, sent) = trickle(&mut c, head, Duration::from_secs(1));
    println!("keep-alive head at 1 byte/s: closed after {took:?} ({sent} bytes sent)");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(5000),
        "request_timeout 3 s from the head's first byte: {took:?}"
    );
}

#[test]
fn request_timeout_bounds_a_proxy_header_however_slowly_it_trickles() {
    let proxy = start(&base_config(
        "http_port 127.0.0.1:0 require-proxy-header\n\
         proxy_protocol_access allow app\n\
         http_access allow app\n\
         request_timeout 3 seconds\n\
         client_idle_pconn_timeout 10 seconds",
    ));
    let pp = proxy.addrs[1];
    // v1 and v2 headers that never end, one byte a second: the header must be whole within
    // request_timeout of the connection, not of its last byte.
    let v1 = b"PROXY TCP4 127.20.0.9 127.0.0.1 40000 3128\r\n".to_vec();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[127, 20, 0, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x0c, 0x38]);
    for (what, header) in [("v1", v1), ("v2", v2)] {
        let mut c = connect_from(APP, pp);
        let (took, sent) = trickle(&mut c, &header, Duration::from_secs(1));
        println!("PROXY {what} header at 1 byte/s: closed after {took:?} ({sent} bytes sent)");
        assert!(
            took >= Duration::from_millis(2500) && took < Duration::from_millis(5000),
            "request_timeout 3 s bounds the PROXY {what} header: {took:?}"
        );
    }
}

#[test]
fn client_ip_max_connections_caps_one_client_and_no_other() {
    let origin = Origin::start("127.30.0.55");
    let proxy = start(&base_config(
        "http_access allow app\nclient_ip_max_connections 3",
    ));
    let url = format!("{}/small", origin.url());
    // Three keep-alive connections, each proven admitted by an answered request...
    let held: Vec<_> = (0..3)
        .map(|_| {
            let mut c = connect_from(APP, proxy.addr());
            c.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            let (status, _) = read_response(&mut c);
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            c
        })
        .collect();
    let mut first = connect_from(APP, proxy.addr());
    let t = Instant::now();
    assert!(
        read_to_close(&mut first, Duration::from_secs(5)).is_empty(),
        "a fourth connection from the same client is closed unanswered"
    );
    println!("4th connection from {APP} closed after {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "closed at once: {:?}",
        t.elapsed()
    );
    // ...another client is not affected...
    let mut other = connect_from("127.20.0.6", proxy.addr());
    other
        .write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let (status, _) = read_response(&mut other);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // ...and a closed one gives its place back.
    drop(held);
    wait::until_true("a place again", Duration::from_secs(5), || {
        let mut c = connect_from(APP, proxy.addr());
        c.write_all(
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .is_ok()
            && String::from_utf8_lossy(&read_to_close(&mut c, Duration::from_secs(5)))
                .starts_with("HTTP/1.1 200")
    });
}

#[test]
fn failing_accepts_are_warned_about_once_a_second_with_a_count() {
    // An open-file limit far below max_filedescriptors / 2: clients beyond it make accept
    // fail with EMFILE, and the accept loop retries every 50 ms.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = base_config(&format!(
        "http_access allow app\naccess_log {} squid",
        log.display()
    ));
    let file = write_config(dir.path(), "squid.conf", &config);
    let script = format!("ulimit -n 40 && exec {BIN} proxy -f {file}");
    let mut child = testkit::process::Owned::spawn("sh", &["-c", &script]);
    let addr: std::net::SocketAddr = wait::until("the proxy to listen", common::START, || {
        assert!(!child.has_exited(), "{:?}", child.stderr());
        child.stdout().iter().find_map(|l| {
            l.strip_prefix("proxyfleet proxy: serving on ")?
                .parse()
                .ok()
        })
    });
    let held: Vec<_> = (0..60).map(|_| connect_from(APP, addr)).collect();
    let failing = |child: &testkit::process::Owned| {
        child
            .stderr()
            .into_iter()
            .filter(|l| l.contains("accept failed"))
            .collect::<Vec<String>>()
    };
    wait::until_true("accept to fail", Duration::from_secs(10), || {
        !failing(&child).is_empty()
    });
    let first = Instant::now();
    // Two and a half seconds of a failing accept: some 50 retries, 3 or 4 warnings.
    std::thread::sleep(Duration::from_millis(2500));
    let warnings = failing(&child);
    println!(
        "{} accept warnings in {:?} of failing accepts:\n{}",
        warnings.len(),
        first.elapsed(),
        warnings.join("\n")
    );
    assert!(
        (2..=4).contains(&warnings.len()),
        "about one a second: {warnings:?}"
    );
    let counted = |l: &String| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("count="))
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(counted(&warnings[0]), Some(1), "{}", warnings[0]);
    assert!(
        warnings[1..]
            .iter()
            .all(|l| counted(l).is_some_and(|n| n >= 5)),
        "later warnings count the failures in between: {warnings:?}"
    );
    drop(held);
}
