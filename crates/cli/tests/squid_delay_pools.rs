//! Delay pools end to end: a class 1 pool of 200,000 bytes a second paces a 1.2 MB download
//! and the same download inside a CONNECT tunnel, each measured within 10 % of the
//! configured rate (after the initial half bucket); a client `delay_access` leaves out goes
//! at full speed; a class 2 pool gives two hosts a bucket each; `client_delay_pools` pace
//! uploads (a POST body and the client's side of a CONNECT tunnel), measured at the
//! receiving end.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{base_config, start};
use testkit::client::connect_from;
use testkit::origin::Origin;

const RATE: f64 = 200_000.0;
const SIZE: usize = 1_200_000;

/// Reads a whole response of `SIZE` body bytes (after `skip` bytes of earlier heads),
/// returning how long it took.
fn download(source: &str, proxy: std::net::SocketAddr, request: &str) -> (Duration, usize) {
    let mut s = connect_from(source, proxy);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t0 = Instant::now();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::with_capacity(SIZE + 4096);
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (t0.elapsed(), got.len())
}

fn rate_of(elapsed: Duration, bytes: usize, initial: f64) -> f64 {
    (bytes as f64 - initial) / elapsed.as_secs_f64()
}

#[test]
fn a_class_1_pool_paces_downloads_and_tunnels() {
    let origin = Origin::start("127.30.0.77");
    let proxy = start(&base_config(&format!(
        "acl slow src 127.20.0.5\n\
         http_access allow app\n\
         delay_pools 1\n\
         delay_class 1 1\n\
         delay_parameters 1 {RATE}/{RATE}\n\
         delay_access 1 allow slow\n\
         delay_access 1 deny all\n"
    )));
    let url = format!("{}/bytes/{SIZE}", origin.url());
    let get = format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // Not in the pool: as fast as loopback goes.
    let (fast, bytes) = download("127.20.0.6", proxy.addr(), &get);
    assert!(bytes > SIZE, "{bytes}");
    assert!(fast < Duration::from_secs(2), "unpaced: {fast:?}");

    let (elapsed, bytes) = download("127.20.0.5", proxy.addr(), &get);
    assert!(bytes > SIZE, "{bytes}");
    // The bucket starts half full (delay_initial_bucket_level 50).
    let measured = rate_of(elapsed, bytes, RATE / 2.0);
    println!("delay pool: {bytes} bytes in {elapsed:?}: {measured:.0} bytes/s for {RATE}");
    assert!(
        (measured - RATE).abs() / RATE < 0.10,
        "{measured:.0} bytes/s, configured {RATE}"
    );

    // A tunnel, through the same (by now drained) aggregate bucket.
    let o = origin.addr;
    let connect = format!(
        "CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\nGET /bytes/{SIZE} HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n"
    );
    let (elapsed, bytes) = download("127.20.0.5", proxy.addr(), &connect);
    assert!(bytes > SIZE, "{bytes}");
    let measured = rate_of(elapsed, bytes, 0.0);
    println!("delay pool, CONNECT: {bytes} bytes in {elapsed:?}: {measured:.0} bytes/s");
    assert!(
        (measured - RATE).abs() / RATE < 0.10,
        "{measured:.0} bytes/s, configured {RATE}"
    );
}

#[test]
fn a_class_2_pool_gives_each_host_its_bucket() {
    let origin = Origin::start("127.30.0.78");
    let proxy = start(&base_config(&format!(
        "http_access allow app\n\
         delay_pools 1\n\
         delay_class 1 2\n\
         delay_parameters 1 -1/-1 {RATE}/{RATE}\n\
         delay_access 1 allow app\n\
         delay_initial_bucket_level 0\n"
    )));
    // Two hosts at once: each gets the whole per-host rate (no aggregate limit).
    two_clients_each_at_the_rate(&origin, proxy.addr(), "class 2 host");
}

/// Two clients (127.20.0.5 and .6) download half of `SIZE` each at the same time; each is
/// measured within 10 % of `RATE` (their buckets start empty).
fn two_clients_each_at_the_rate(origin: &Origin, addr: std::net::SocketAddr, what: &str) {
    let get = format!(
        "GET {}/bytes/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url(),
        SIZE / 2
    );
    let a = std::thread::spawn({
        let get = get.clone();
        move || download("127.20.0.5", addr, &get)
    });
    let b = download("127.20.0.6", addr, &get);
    let a = a.join().unwrap();
    for (elapsed, bytes) in [a, b] {
        let measured = rate_of(elapsed, bytes, 0.0);
        println!("{what}: {bytes} bytes in {elapsed:?}: {measured:.0} bytes/s");
        assert!(
            (measured - RATE).abs() / RATE < 0.10,
            "{measured:.0} bytes/s, configured {RATE}"
        );
    }
}

/// A server that reads one connection to its end (or, for an HTTP request, to the end of a
/// `body`-byte body, then answers 200): the body bytes and the time from the first of them
/// to the last.
fn sink(
    ip: &str,
    body: Option<usize>,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<(usize, Duration)>,
) {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut head = Vec::new();
        let mut count = 0usize;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut data = &buf[..n];
            if body.is_some() && count == 0 {
                // Skip the request head (the proxy sends it in one piece before the body).
                head.extend_from_slice(data);
                let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let rest = head.split_off(end + 4);
                data = &[];
                count = rest.len();
                if count > 0 {
                    first = Some(Instant::now());
                }
            }
            if !data.is_empty() {
                first.get_or_insert_with(Instant::now);
                count += data.len();
            }
            last = Instant::now();
            if body.is_some_and(|b| count >= b) {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                break;
            }
        }
        (count, last.duration_since(first.unwrap_or(last)))
    });
    (addr, handle)
}

/// Sends `head`, then (after `wait_for` has arrived, if given) `size` bytes, then ends the
/// sending side and reads to the end.
fn upload(
    source: &str,
    proxy: std::net::SocketAddr,
    head: &str,
    wait_for: Option<&str>,
    size: usize,
) {
    let mut s = connect_from(source, proxy);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    if let Some(expected) = wait_for {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "tunnel answer: {got:?}");
            got.push(byte[0]);
        }
        assert!(String::from_utf8_lossy(&got).contains(expected), "{got:?}");
    }
    let chunk = vec![b'u'; 16 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        s.write_all(&chunk[..n]).unwrap();
        sent += n;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn client_delay_pools_pace_uploads() {
    const UP: usize = 600_000;
    let proxy = start(&base_config(&format!(
        "http_access allow app\n\
         client_delay_pools 1\n\
         client_delay_parameters 1 {RATE} {RATE}\n\
         client_delay_access 1 allow app\n"
    )));
    // A POST body, each client its own bucket (starting half full).
    let (addr, received) = sink("127.30.0.88", Some(UP));
    let post = format!(
        "POST http://{addr}/up HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {UP}\r\nConnection: close\r\n\r\n"
    );
    upload("127.20.0.5", proxy.addr(), &post, None, UP);
    let (bytes, elapsed) = received.join().unwrap();
    assert_eq!(bytes, UP);
    let measured = rate_of(elapsed, bytes, RATE / 2.0);
    println!(
        "client delay pool, POST: {bytes} bytes in {elapsed:?}: {measured:.0} bytes/s for {RATE}"
    );
    assert!(
        (measured - RATE).abs() / RATE < 0.10,
        "{measured:.0} bytes/s, configured {RATE}"
    );

    // The client's side of a tunnel, from another client (a bucket of its own).
    let (addr, received) = sink("127.30.0.88", None);
    let connect = format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    upload("127.20.0.7", proxy.addr(), &connect, Some(" 200 "), UP);
    let (bytes, elapsed) = received.join().unwrap();
    assert_eq!(bytes, UP);
    let measured = rate_of(elapsed, bytes, RATE / 2.0);
    println!("client delay pool, CONNECT: {bytes} bytes in {elapsed:?}: {measured:.0} bytes/s");
    assert!(
        (measured - RATE).abs() / RATE < 0.10,
        "{measured:.0} bytes/s, configured {RATE}"
    );
}

#[test]
fn a_class_5_pool_gives_each_external_acl_tag_its_bucket() {
    let origin = Origin::start("127.30.0.89");
    let dir = tempfile::tempdir().unwrap();
    // Tags each client by its address: two clients, two tags, two buckets. (Were the tags
    // lost, both would share the untagged bucket and get half the rate each.)
    let helper = dir.path().join("tagger.sh");
    std::fs::write(
        &helper,
        "#!/bin/sh\nwhile read src; do echo \"OK tag=t$src\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let proxy = start(&base_config(&format!(
        "external_acl_type tagger %SRC {}\n\
         acl tagged external tagger\n\
         http_access allow app tagged\n\
         delay_pools 1\n\
         delay_class 1 5\n\
         delay_parameters 1 {RATE}/{RATE}\n\
         delay_access 1 allow all\n\
         delay_initial_bucket_level 0\n",
        helper.display()
    )));
    two_clients_each_at_the_rate(&origin, proxy.addr(), "class 5 tag");
}
