//! Delay pools end to end: a class 1 pool of 200,000 bytes a second paces a 1.2 MB download
//! and the same download inside a CONNECT tunnel, each measured within 10 % of the
//! configured rate (after the initial half bucket); a client `delay_access` leaves out goes
//! at full speed; a class 2 pool gives two hosts a bucket each.

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
    let get = format!(
        "GET {}/bytes/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url(),
        SIZE / 2
    );
    let addr = proxy.addr();
    // Two hosts at once: each gets the whole per-host rate (no aggregate limit).
    let a = std::thread::spawn({
        let get = get.clone();
        move || download("127.20.0.5", addr, &get)
    });
    let b = download("127.20.0.6", addr, &get);
    let a = a.join().unwrap();
    for (elapsed, bytes) in [a, b] {
        let measured = rate_of(elapsed, bytes, 0.0);
        println!("class 2 host: {bytes} bytes in {elapsed:?}: {measured:.0} bytes/s");
        assert!(
            (measured - RATE).abs() / RATE < 0.10,
            "{measured:.0} bytes/s, configured {RATE}"
        );
    }
}
