//! `http_port ... accel` (a reverse proxy), differential against Debian's Squid 5.7: the same
//! squid.conf body and the same requests through both, with the same answers expected —
//! the status and `X-Squid-Error`, which backend was reached with which request target,
//! `Host` and `Surrogate-Capability`, and the access log's `%ru` and `%Sh`.

mod common;

use std::net::SocketAddr;

use common::squid::{self, Squid};
use common::{start, ProxyUnderTest, APP};
use testkit::client::exchange_raw;
use testkit::origin::Origin;

/// What is compared of one answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    squid_error: Option<String>,
    /// The backend that got the request (its name in the test), its request target, and
    /// its `Host` and `Surrogate-Capability` fields.
    reached: Option<(&'static str, String, Option<String>, Option<String>)>,
}

struct Backends {
    named: Vec<(&'static str, Origin)>,
}

impl Backends {
    fn counts(&self) -> Vec<usize> {
        self.named.iter().map(|(_, o)| o.seen().len()).collect()
    }

    /// The one request that arrived since `before`, if any.
    fn arrived(
        &self,
        before: &[usize],
    ) -> Option<(&'static str, String, Option<String>, Option<String>)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        loop {
            for ((name, origin), was) in self.named.iter().zip(before) {
                if let Some(seen) = origin.seen().get(*was) {
                    return Some((
                        name,
                        seen.uri.clone(),
                        seen.header("host").map(String::from),
                        seen.header("surrogate-capability").map(String::from),
                    ));
                }
            }
            // The answer came back already, so a request that reached a backend has been
            // recorded; the short grace only covers the recording thread.
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::yield_now();
        }
    }
}

fn answer(proxy: SocketAddr, backends: &Backends, request: &str) -> Answer {
    let before = backends.counts();
    let raw = exchange_raw(APP, proxy, request.as_bytes());
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let squid_error = head.lines().find_map(|l| {
        l.strip_prefix("X-Squid-Error: ")
            .map(|v| v.split(' ').next().unwrap_or("").to_string())
    });
    Answer {
        status,
        squid_error,
        reached: (status == 200).then(|| backends.arrived(&before)).flatten(),
    }
}

fn both(body: &str, port_options: &str) -> Option<(Squid, ProxyUnderTest)> {
    if let Some(why) = squid::unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let shared = format!(
        "visible_hostname diff.test\ndns_nameservers 127.0.0.1\ncache deny all\n\
         logformat diff %>a %rm %ru %>Hs %Ss %Sh\naccess_log ACCESS_LOG diff\n{body}"
    );
    let squid = Squid::start_on(&shared, port_options);
    let ours = start(&format!("http_port 127.0.0.1:0 {port_options}\n{shared}"));
    Some((squid, ours))
}

/// Sends each request to both and compares the answers, then the log lines.
fn compare(squid: &Squid, ours: &ProxyUnderTest, backends: &Backends, cases: &[(&str, String)]) {
    let mut differences = Vec::new();
    for (what, request) in cases {
        let theirs = answer(squid.addr, backends, request);
        let mine = answer(ours.addr(), backends, request);
        if theirs != mine {
            differences.push(format!(
                "{what}:\n  squid:      {theirs:?}\n  proxyfleet: {mine:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} differ:\n{}",
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
    let read = |path: std::path::PathBuf| {
        testkit::wait::until("every log line", std::time::Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Not Squid's readiness probe from 127.0.0.1 (the client is elsewhere).
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with("127.0.0.1 "))
                .map(str::to_string)
                .collect();
            (lines.len() >= cases.len()).then_some(lines)
        })
    };
    assert_eq!(
        read(squid.access_log_path()),
        read(ours.access_log_path()),
        "the access logs differ"
    );
}

fn get(target: &str, host: Option<&str>) -> String {
    match host {
        Some(host) => format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        None => format!("GET {target} HTTP/1.0\r\n\r\n"),
    }
}

#[test]
fn an_accel_vhost_port_sends_sites_to_their_origin_servers() {
    let backends = Backends {
        named: vec![
            ("one", Origin::start("127.30.0.85")),
            ("two", Origin::start("127.30.0.86")),
        ],
    };
    let (one, two) = (backends.named[0].1.addr, backends.named[1].1.addr);
    let Some((squid, ours)) = both(
        &format!(
            "acl all_src src all\n\
             http_access allow all\n\
             cache_peer {} parent {} 0 no-query no-digest originserver name=one login=alice:s3cret\n\
             cache_peer {} parent {} 0 no-query no-digest originserver name=two forceddomain=forced.test\n\
             acl site_two dstdomain .two.test\n\
             cache_peer_access one deny site_two\n\
             cache_peer_access two allow site_two\n",
            one.ip(),
            one.port(),
            two.ip(),
            two.port()
        ),
        "accel vhost",
    ) else {
        return;
    };
    let cases = [
        ("a site of the first backend", get("/x?q=1", Some("www.one.test"))),
        ("Host with a port", get("/p", Some("www.one.test:8081"))),
        ("the second backend, its forced Host", get("/y", Some("www.two.test"))),
        ("absolute form on an accel port", get("http://abs.test/z", Some("abs.test"))),
        ("no Host: no site", get("/n", None)),
        (
            "CONNECT on an accel port",
            "CONNECT www.one.test:443 HTTP/1.1\r\nHost: www.one.test:443\r\n\r\n".into(),
        ),
        (
            "a POST goes to the backend too (no direct)",
            "POST /form HTTP/1.1\r\nHost: www.one.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                .into(),
        ),
    ];
    compare(&squid, &ours, &backends, &cases);
    // Squid shows an origin server login= as Authorization (not Proxy-Authorization).
    let one_saw = backends.named[0].1.seen();
    assert_eq!(one_saw.len(), 8, "{one_saw:?}");
    assert!(
        one_saw.iter().all(
            |s| s.header("authorization") == Some("Basic YWxpY2U6czNjcmV0")
                && s.header("proxy-authorization").is_none()
        ),
        "{one_saw:?}"
    );
    // Not vacuous: both proxies reached the second backend in origin form, its Host forced.
    let two_saw = backends.named[1].1.seen();
    assert_eq!(two_saw.len(), 2, "{two_saw:?}");
    assert!(two_saw.iter().all(|s| s.uri == "/y"
        && s.header("host") == Some("forced.test")
        && s.header("surrogate-capability") == Some("diff.test=\"Surrogate/1.0\"")));
}

#[test]
fn accel_defaultsite_vport_and_allow_direct_as_squid() {
    let backends = Backends {
        named: vec![("origin", Origin::start("127.30.0.87"))],
    };
    let origin = backends.named[0].1.addr;
    let body = "acl all_src src all\nhttp_access allow all\n";
    // No cache_peer and no allow-direct: nowhere to go (502 ERR_READ_ERROR), whatever names
    // the site.
    // (A defaultsite= with a port of its own and vport=N: Squid 5.7 appends ':N' to it,
    // making `http://a:1:N/`; proxyfleet replaces the port instead. Not compared.)
    let site = origin.to_string();
    let Some((squid, ours)) = both(body, "accel defaultsite=site.test vport=8080") else {
        return;
    };
    let cases = [
        ("defaultsite without Host", get("/d", None)),
        ("Host with vport=8080", get("/h", Some("h.test:9999"))),
    ];
    compare(&squid, &ours, &backends, &cases);
    drop((squid, ours));
    // allow-direct: the URL's own origin, the port of Host (no vport) or of defaultsite=.
    let Some((squid, ours)) = both(body, &format!("accel defaultsite={site} allow-direct")) else {
        return;
    };
    let cases = [
        ("defaultsite, direct", get("/d", None)),
        ("Host, direct", get("/h", Some(&site))),
    ];
    compare(&squid, &ours, &backends, &cases);
    let saw: Vec<String> = backends.named[0]
        .1
        .seen()
        .iter()
        .map(|s| s.uri.clone())
        .collect();
    assert_eq!(
        saw,
        ["/d", "/d", "/h", "/h"],
        "both went direct, in origin form"
    );
}
