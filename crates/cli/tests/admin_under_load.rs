//! The admin API of a real `proxyfleet up` under hostile client load (issue 12): 64 idle TCP
//! connections (the old connection cap), then 1,000 (twice the cap: the longest idle make
//! room for new ones), then 1,000 event streams that never read (32 are served, the 33rd
//! is refused at once). Throughout, `proxyfleet status` (over the Unix socket) and a fresh
//! TCP `GET /api/status` each answer within a second; the test prints what it measured.
//!
//! Networks: 127.92.x.0/24 (zones).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::up::{proxy_stack, Up};
use proxyfleet_admin::{MAX_CONNECTIONS, MAX_STREAMS};

/// Each answer must come within this, CLI process start included.
const LIMIT: Duration = Duration::from_secs(1);
/// Measurements per phase and client; all fit well inside the idle timeout (5 s), so the
/// load is still there when the last one is taken.
const RUNS: usize = 8;

fn admin_addr(up: &Up) -> SocketAddr {
    std::fs::read_to_string(up.dir().join("admin.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `n` idle connections: even ones connect and say nothing, odd ones ask once with
/// keep-alive (`GET /api/token`, a small 401) and then say nothing.
fn idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 1 {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(s, "GET /api/token HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 401"), "{:?}", &buf[..n]);
            }
            s
        })
        .collect()
}

/// How many of `streams` the server has not closed: what it sent is read (and dropped)
/// until nothing more is there (open) or the end (closed).
fn still_open(streams: &[TcpStream]) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    streams
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let open = loop {
                match Read::read(&mut &**s, &mut buf) {
                    Ok(0) => break false,
                    Ok(_) => continue,
                    Err(e) => break e.kind() == ErrorKind::WouldBlock,
                }
            };
            s.set_nonblocking(false).unwrap();
            open
        })
        .count()
}

/// One `GET /api/status` on a fresh TCP connection; the time to the whole answer.
fn tcp_status(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    started.elapsed()
}

/// `proxyfleet status` once; its wall time.
fn cli_status(up: &Up) -> Duration {
    let started = Instant::now();
    let (code, out, err) = up.cli(&["status"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "status failed: {err}");
    assert!(out.contains("LOAD BALANCER"), "{out}");
    took
}

/// (median, max) of `times`.
fn spread(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

/// Runs the CLI's `status` and a TCP `GET /api/status` [`RUNS`] times each, prints the
/// latencies and asserts each is under [`LIMIT`].
fn measure(up: &Up, phase: &str) {
    let addr = admin_addr(up);
    let mut cli = Vec::new();
    let mut tcp = Vec::new();
    for _ in 0..RUNS {
        cli.push(cli_status(up));
        tcp.push(tcp_status(addr));
    }
    let slow: Vec<String> = cli
        .iter()
        .chain(&tcp)
        .filter(|t| **t >= LIMIT)
        .map(|t| format!("{t:?}"))
        .collect();
    let (cli_median, cli_max) = spread(&mut cli);
    let (tcp_median, tcp_max) = spread(&mut tcp);
    println!(
        "{phase}: proxyfleet status median {cli_median:.1?} max {cli_max:.1?}; \
         TCP GET /api/status median {tcp_median:.1?} max {tcp_max:.1?} ({RUNS} each)"
    );
    assert!(slow.is_empty(), "{phase}: answers took {slow:?}");
}

/// `GET /api/events` on a fresh connection, head sent, nothing read.
fn open_stream(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    s
}

/// Reads `s` until the end of the answer's head; returns the head.
fn read_head(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before the head");
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn status_answers_within_a_second_under_idle_connections_and_event_streams() {
    // 1,000 client sockets here, up to 512 on up's side plus its balancer.
    assert!(testkit::process::raise_open_files(8192) >= 4096);
    let up = Up::start(Some(&proxy_stack(92, 1, 1, 1)));
    let addr = admin_addr(&up);
    let pid = up.child.pid();
    measure(&up, "no load");

    // The old cap: 64 idle connections used to lock every client out.
    let held = idle(addr, 64);
    measure(&up, "64 idle connections");
    assert_eq!(still_open(&held), 64, "64 is under the cap: none is closed");
    drop(held);

    // Twice the cap. Each connection over it closes the longest idle one.
    let before = testkit::process::rss_kib(pid);
    let opened = Instant::now();
    let held = idle(addr, 1000);
    // The last evictions may still be under way.
    let open = testkit::wait::until("the connection cap", Duration::from_secs(5), || {
        let open = still_open(&held);
        (open <= MAX_CONNECTIONS).then_some(open)
    });
    let after = testkit::process::rss_kib(pid);
    let per_connection = after.saturating_sub(before) as f64 / open as f64;
    println!(
        "1,000 idle connections opened in {:.0?}: {open} still open (cap {MAX_CONNECTIONS}); \
         up's resident memory {before} KiB -> {after} KiB, {per_connection:.1} KiB per open \
         connection",
        opened.elapsed(),
    );
    assert!(
        per_connection < 64.0,
        "{per_connection:.1} KiB per idle connection"
    );
    assert!(
        open >= MAX_CONNECTIONS - 16,
        "{open} open: more closed than needed"
    );
    measure(&up, "1,000 idle connections");
    let open = still_open(&held);
    println!("after measuring: {open} of the idle connections still open");
    assert!(
        open >= MAX_CONNECTIONS / 2,
        "the load was gone before the measurements ended"
    );
    drop(held);

    // Event streams: the first MAX_STREAMS are served, the next is refused at once.
    let mut streams: Vec<TcpStream> = (0..MAX_STREAMS)
        .map(|_| {
            let mut s = open_stream(addr);
            let head = read_head(&mut s);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            s
        })
        .collect();
    let asked = Instant::now();
    let mut refused = open_stream(addr);
    let head = read_head(&mut refused);
    let took = asked.elapsed();
    println!("stream {} refused in {took:.1?}", MAX_STREAMS + 1);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 10"),
        "{head}"
    );
    assert!(took < LIMIT, "refused after {took:?}");
    streams.push(refused);
    // The rest of 1,000, reading nothing.
    let opened = Instant::now();
    streams.extend((streams.len()..1000).map(|_| open_stream(addr)));
    println!("1,000 event streams asked for in {:.0?}", opened.elapsed());
    measure(&up, "1,000 event streams");
    let served = still_open(&streams[..MAX_STREAMS]);
    let refused = streams.len() - MAX_STREAMS - still_open(&streams[MAX_STREAMS..]);
    println!(
        "after measuring: {served} of the {MAX_STREAMS} served streams still open, \
         {refused} of the {} refused ones closed by up",
        streams.len() - MAX_STREAMS
    );
    assert_eq!(served, MAX_STREAMS, "a served stream was closed");
    assert_eq!(
        refused,
        streams.len() - MAX_STREAMS,
        "up keeps refused streams open"
    );
}
