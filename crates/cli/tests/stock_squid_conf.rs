//! Debian's stock /etc/squid/squid.conf (package `squid`, comments and include of conf.d)
//! starts unchanged. It listens on 0.0.0.0:3128, so this file is its own test binary: nothing
//! else of the suite runs beside it.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::BIN;
use testkit::client::{connect_from, read_response};
use testkit::origin::Origin;
use testkit::process::{run, Owned};

const STOCK: &str = "/etc/squid/squid.conf";
const LOG: &str = "/var/log/squid/access.log";

fn available() -> bool {
    if !Path::new(STOCK).exists() {
        eprintln!("SKIPPED: {STOCK} is absent (the test command installs Debian's squid package)");
        return false;
    }
    if std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG)
        .is_err()
    {
        eprintln!("SKIPPED: {LOG} is not writable by this user (the stock file logs there)");
        return false;
    }
    true
}

#[test]
fn debians_stock_squid_conf_checks_and_serves_unchanged() {
    if !available() {
        return;
    }
    let (status, stdout, stderr) = run(
        BIN,
        &["proxy", "-f", STOCK, "--check"],
        Duration::from_secs(10),
    );
    assert!(status.success(), "{stdout}\n{stderr}");

    let origin = Origin::start("127.30.0.70");
    let log_start = std::fs::metadata(LOG).map(|m| m.len()).unwrap_or(0);
    let mut proxy = Owned::spawn(BIN, &["proxy", "-f", STOCK]);
    let addr: std::net::SocketAddr = proxy.wait_stdout("the stock port", common::START, |l| {
        l.strip_prefix("proxyfleet proxy: serving on ")?
            .parse()
            .ok()
    });
    assert_eq!(addr.to_string(), "0.0.0.0:3128");
    let port = std::net::SocketAddr::from(([127, 0, 0, 1], 3128));
    let ask = |source: &str, request: String| {
        let mut s = connect_from(source, port);
        s.write_all(request.as_bytes()).unwrap();
        read_response(&mut s).0
    };
    // `http_access allow localhost` admits 127.0.0.1; nothing else is allowed.
    let get = format!(
        "GET {}/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url()
    );
    assert!(ask("127.0.0.1", get.clone()).starts_with("HTTP/1.1 200 OK"));
    assert!(ask("127.20.0.5", get).starts_with("HTTP/1.1 403 Forbidden"));
    // `http_access deny CONNECT !SSL_ports`.
    let connect = format!("CONNECT {} HTTP/1.1\r\n\r\n", origin.addr);
    assert!(ask("127.0.0.1", connect).starts_with("HTTP/1.1 403 Forbidden"));
    // `http_access deny !Safe_ports`.
    assert!(ask(
        "127.0.0.1",
        "GET http://127.30.0.70:25/ HTTP/1.1\r\n\r\n".into()
    )
    .starts_with("HTTP/1.1 403"));
    // The stock file's cache and refresh directives are said once to have no effect.
    proxy.wait_stderr("this proxy never caches", Duration::from_secs(5));
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit(Duration::from_secs(35)).code(), Some(0));
    let log = std::fs::read(LOG).unwrap();
    let ours = String::from_utf8_lossy(&log[log_start as usize..]).into_owned();
    assert!(
        ours.contains(" 127.0.0.1 TCP_MISS/200 "),
        "Squid's default access log path: {ours}"
    );
    assert!(ours.contains(" 127.20.0.5 TCP_DENIED/403 "), "{ours}");
}
