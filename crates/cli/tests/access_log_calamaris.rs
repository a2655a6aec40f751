//! calamaris (Debian's Squid log analyser) reads proxyfleet's access log without a single
//! invalid line.

mod common;

use std::process::{Command, Stdio};

use common::{curl_through, start_default, APP};
use testkit::client::{curl, exchange_raw};
use testkit::origin::Origin;

#[test]
fn calamaris_parses_every_line() {
    if Command::new("calamaris")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIPPED: calamaris is not installed (the test command installs it)");
        return;
    }
    let origin = Origin::start("127.30.0.71");
    let tls = Origin::start_tls("127.30.0.72");
    let proxy = start_default();
    for _ in 0..3 {
        curl_through(&proxy, &[&format!("{}/small", origin.url())]);
    }
    curl(&[
        "--interface",
        "127.99.0.5",
        "-x",
        &proxy.url(),
        &format!("{}/small", origin.url()),
    ]);
    curl_through(&proxy, &["-k", &format!("https://{}/small", tls.addr)]);
    exchange_raw(APP, proxy.addr(), b"GARBAGE\r\n\r\n");
    let lines = proxy.access_log(6);
    let out = Command::new("calamaris")
        .arg("-a")
        .stdin(std::fs::File::open(proxy.access_log_path()).unwrap())
        .output()
        .expect("calamaris runs");
    let report = String::from_utf8_lossy(&out.stdout);
    let number = |label: &str| -> u64 {
        let line = report
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} in {report}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!(number("lines parsed:"), lines.len() as u64, "{report}");
    assert_eq!(number("invalid lines:"), 0, "{report}");
    assert!(report.contains("CONNECT"), "{report}");
}
