//! The access log as an audit record (issue 12, item 4): a line is written before its
//! response's last byte, so kill -9 loses no line of an answered request; on a full disk
//! lines are whole or absent, never replayed, counted and reported once a second; and
//! `logfile_error_policy refuse` serves nothing it cannot log.
//!
//! The full-disk drills mount a 64 KiB tmpfs (root only; otherwise they say SKIPPED).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{base_config, get_metrics, metric, start, ProxyUnderTest, APP};
use testkit::origin::Origin;

const ORIGIN_IP: &str = "127.96.0.10";

/// A tmpfs of a fixed size on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            other => {
                println!("SKIPPED: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// How one request went, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// The whole response: its status.
    Whole(u16),
    /// The connection ended before the response did.
    Cut,
}

/// A keep-alive client from the app network; reconnects after a close.
struct Client {
    proxy: SocketAddr,
    stream: Option<TcpStream>,
}

impl Client {
    fn new(proxy: SocketAddr) -> Client {
        Client {
            proxy,
            stream: None,
        }
    }

    fn get(&mut self, url: &str) -> Got {
        let stream = self
            .stream
            .get_or_insert_with(|| testkit::client::connect_from(APP, self.proxy));
        let request = format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n");
        let got = if stream.write_all(request.as_bytes()).is_ok() {
            read_whole(stream)
        } else {
            None
        };
        match got {
            Some((status, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Got::Whole(status)
            }
            None => {
                self.stream = None;
                Got::Cut
            }
        }
    }
}

/// Reads one response with a Content-Length body; `None` unless it arrived whole.
/// Returns the status and whether the connection stays open.
fn read_whole(stream: &mut TcpStream) -> Option<(u16, bool)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&chunk[..n]);
    }
    Some((status, !head.contains("connection: close")))
}

/// The `/m=MARKER` (a path: `strip_query_terms` would cut a query) of every access log line, checking that each line is whole: ten fields,
/// ended by a newline.
fn logged_markers(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the log ends in a cut line: {:?}",
        text.lines().last()
    );
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 10, "not a whole Squid line: {line:?}");
            fields[6]
                .split_once("/m=")
                .map(|(_, m)| m.to_string())
                .unwrap_or_else(|| fields[6].to_string())
        })
        .collect()
}

fn proxy_logging_to(log: &Path, policy: &str) -> ProxyUnderTest {
    start(&base_config(&format!(
        "http_access allow app\nhttp_access deny all\naccess_log {} squid\nlogfile_error_policy {policy}",
        log.display()
    )))
}

/// `GET /healthz`'s status code.
fn healthz(proxy: &ProxyUnderTest) -> u16 {
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    read_whole(&mut stream).map_or(0, |(status, _)| status)
}

/// A filler file that leaves the log `room` bytes of the tmpfs; removing it frees space.
fn fill(fs: &Tmpfs, total: usize, room: usize) -> PathBuf {
    let filler = fs.path("filler");
    std::fs::write(&filler, vec![b'f'; total - room]).expect("filler");
    filler
}

#[test]
fn full_disk_drops_whole_lines_counts_them_and_never_replays() {
    let Some(fs) = Tmpfs::mount("64k") else {
        return;
    };
    let filler = fill(&fs, 64 * 1024, 24 * 1024);
    let log = fs.path("access.log");
    let origin = Origin::start(ORIGIN_IP);
    let mut proxy = proxy_logging_to(&log, "drop");
    let mut client = Client::new(proxy.addr());
    let started = Instant::now();
    let requests = 2_000;
    let mut served = 0;
    for i in 0..requests {
        if client.get(&format!("{}/m=before-{i}", origin.url())) == Got::Whole(200) {
            served += 1;
        }
    }
    let logged = logged_markers(&log);
    let dropped = metric(&proxy, "proxyfleet_proxy_access_log_lines_dropped_total");
    println!(
        "full disk, policy drop: {served}/{requests} served, {} logged, {dropped} dropped (metric)",
        logged.len()
    );
    assert_eq!(served, requests, "the drop policy keeps serving");
    assert!(
        logged.len() > 50 && logged.len() < requests,
        "some lines fit, most did not: {}",
        logged.len()
    );
    assert_eq!(
        dropped as usize + logged.len(),
        requests,
        "every line is written or counted as dropped"
    );
    let unique: HashSet<&String> = logged.iter().collect();
    assert_eq!(unique.len(), logged.len(), "no line twice");
    let reports = proxy
        .child
        .stderr()
        .iter()
        .filter(|l| l.contains("access log write failed"))
        .count();
    let seconds = started.elapsed().as_secs() as usize;
    println!("error reports: {reports} in {seconds} s");
    assert!(
        (1..=seconds + 1).contains(&reports),
        "once a second at most, at least once: {reports} in {seconds} s"
    );

    // Space comes back: new lines are whole and only the new ones (nothing buffered is
    // replayed).
    std::fs::remove_file(&filler).expect("free space");
    for i in 0..20 {
        assert_eq!(
            client.get(&format!("{}/m=after-{i}", origin.url())),
            Got::Whole(200)
        );
    }
    let now = logged_markers(&log);
    let after: Vec<&String> = now[logged.len()..].iter().collect();
    assert_eq!(now[..logged.len()], logged[..], "old lines untouched");
    let expected: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    assert_eq!(
        after,
        expected.iter().collect::<Vec<_>>(),
        "after space came back"
    );
    proxy.child.wait_stderr(
        "access log writable again after dropping lines",
        Duration::from_secs(5),
    );
}

#[test]
fn full_disk_with_refuse_serves_nothing_unlogged() {
    let Some(fs) = Tmpfs::mount("64k") else {
        return;
    };
    let filler = fill(&fs, 64 * 1024, 16 * 1024);
    let log = fs.path("access.log");
    let origin = Origin::start(ORIGIN_IP);
    let proxy = proxy_logging_to(&log, "refuse");
    let mut client = Client::new(proxy.addr());
    let (mut whole_200, mut refused, mut cut) = (Vec::new(), 0, 0);
    for i in 0..2_000 {
        match client.get(&format!("{}/m=r-{i}", origin.url())) {
            Got::Whole(200) => whole_200.push(format!("r-{i}")),
            Got::Whole(503) => refused += 1,
            Got::Whole(other) => panic!("unexpected status {other}"),
            Got::Cut => cut += 1,
        }
    }
    let logged: HashSet<String> = logged_markers(&log).into_iter().collect();
    println!(
        "full disk, policy refuse: {} served whole, {refused} refused (503), {cut} cut, {} lines logged",
        whole_200.len(),
        logged.len()
    );
    assert!(refused > 1_000, "refused once the log was full: {refused}");
    let unlogged: Vec<&String> = whole_200.iter().filter(|m| !logged.contains(*m)).collect();
    assert!(unlogged.is_empty(), "served without a line: {unlogged:?}");
    assert_eq!(
        healthz(&proxy),
        503,
        "an instance that cannot log fails its check"
    );
    assert_eq!(metric(&proxy, "proxyfleet_proxy_access_log_refusing"), 1);

    std::fs::remove_file(&filler).expect("free space");
    // The first request after space returns is refused (its line is the probe), then serving
    // resumes.
    testkit::wait::until_true("serving to resume", Duration::from_secs(5), || {
        client.get(&format!("{}/m=back", origin.url())) == Got::Whole(200)
    });
    assert!(logged_markers(&log).contains(&"back".to_string()));
    assert_eq!(healthz(&proxy), 200);
}

/// Clients on keep-alive connections until the proxy is killed; every response a client
/// got whole must have its line.
#[test]
fn kill_9_loses_no_line_of_an_answered_request() {
    let origin = Origin::start("127.96.0.11");
    for (round, policy) in ["drop", "refuse", "drop"].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("access.log");
        let mut proxy = proxy_logging_to(&log, policy);
        let answered = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|t| {
                let (answered, stop) = (answered.clone(), stop.clone());
                let (proxy, url) = (proxy.addr(), origin.url());
                std::thread::spawn(move || {
                    let mut client = Client::new(proxy);
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let marker = format!("k{t}-{i}");
                        match client.get(&format!("{url}/m={marker}")) {
                            Got::Whole(200) => answered.lock().unwrap().push(marker),
                            Got::Whole(other) => panic!("status {other}"),
                            Got::Cut => break,
                        }
                    }
                })
            })
            .collect();
        testkit::wait::until_true("2,000 answers", Duration::from_secs(30), || {
            answered.lock().unwrap().len() >= 2_000
        });
        proxy.child.signal(libc::SIGKILL);
        proxy.child.wait_exit(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client thread");
        }
        let logged: HashSet<String> = logged_markers(&log).into_iter().collect();
        let answered = answered.lock().unwrap();
        let lost: Vec<&String> = answered.iter().filter(|m| !logged.contains(*m)).collect();
        println!(
            "kill -9 round {round} (policy {policy}): {} answered, {} logged, {} answered but not logged",
            answered.len(),
            logged.len(),
            lost.len()
        );
        assert!(lost.is_empty(), "lines lost: {lost:?}");
    }
}

/// `GET /metrics` is for this host's monitoring, not for application clients arriving through
/// a balancer's PROXY header; what it prints is valid Prometheus text.
#[test]
fn metrics_are_for_direct_local_connections_only() {
    let proxy = start(&format!(
        "{}http_port 127.0.0.1:0 require-proxy-header\nproxy_protocol_access allow localhost\n",
        base_config("http_access allow app\nhttp_access deny all")
    ));
    let text = get_metrics(proxy.addrs[0]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &text[text.find("\r\n\r\n").expect("head end") + 4..];
    assert!(body.contains("proxyfleet_proxy_access_log_lines_dropped_total 0"));
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())
                .expect("promtool stdin");
            let out = child.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => println!("SKIPPED: promtool check metrics ({e})"),
    }

    let mut stream = TcpStream::connect(proxy.addrs[1]).expect("connect");
    stream
        .write_all(
            b"PROXY TCP4 127.20.0.5 127.0.0.1 4000 3128\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .expect("write");
    let refused = String::from_utf8_lossy(&testkit::client::read_to_close(
        &mut stream,
        Duration::from_secs(5),
    ))
    .to_string();
    assert!(
        refused.starts_with("HTTP/1.1 400") && refused.contains("ERR_INVALID_URL"),
        "through a balancer: {refused}"
    );
}
