//! `proxyfleet proxy` reads its configuration again on SIGHUP (`squid -k reconfigure`): a
//! good file judges every request that arrives from then on — on new connections and on
//! keep-alive connections already open — while a CONNECT tunnel open across the reloads goes
//! on, and a bad file changes nothing (its error names file:line:column).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{base_config, metric, start, ProxyUnderTest, APP};
use testkit::origin::Origin;

/// A client that the reloads admit and refuse in turn (inside the app network).
const TOGGLED: &str = "127.20.1.7";

/// The rules with `TOGGLED` refused or admitted, and the access log at `log`.
fn config(log: &str, refuse_toggled: bool) -> String {
    let deny = if refuse_toggled {
        "http_access deny toggled\n"
    } else {
        ""
    };
    let text = base_config(&format!(
        "acl toggled src {TOGGLED}\n{deny}http_access allow app\nhttp_access deny all"
    ));
    format!("{text}access_log {log} squid\n")
}

/// Writes `text` as the proxy's configuration, sends SIGHUP and waits until the proxy says
/// it took it (`reloads` such lines so far) or refused it.
fn reload(proxy: &ProxyUnderTest, text: &str, reloads: usize, refused: usize) {
    std::fs::write(proxy.dir.path().join("squid.conf"), text).unwrap();
    proxy.child.signal(libc::SIGHUP);
    testkit::wait::until_true("the reload answered", Duration::from_secs(10), || {
        let taken = count(&proxy.child.stdout(), "configuration reloaded");
        let refusals = count(&proxy.child.stderr(), "configuration not reloaded");
        taken >= reloads && refusals >= refused && taken + refusals >= reloads + refused
    });
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// One keep-alive GET on `stream`: the status code.
fn get_on(stream: &mut TcpStream, url: &str) -> u16 {
    stream
        .write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let (head, _) = testkit::client::read_response(stream);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn reloads_judge_new_requests_by_the_new_rules_and_a_bad_file_changes_nothing() {
    let origin = Origin::start("127.30.0.61");
    let url = format!("{}/small", origin.url());
    // `start` writes the file (ACCESS_LOG: its log path); every reload rewrites it.
    let proxy = start(&config("ACCESS_LOG", false));
    let log = proxy.access_log_path().display().to_string();
    let write = |refuse: bool| config(&log, refuse);

    // Load from always-admitted clients through all the reloads: 20 workers on new
    // connections, 20 on connections they keep alive.
    let sources: Vec<&str> = [APP, "127.20.0.6"].repeat(10);
    let fresh_load = testkit::load::Load::start(proxy.addr(), &sources, &url);
    let kept_load = testkit::load::Load::start_keep_alive(proxy.addr(), &sources, &url);
    // A keep-alive connection from the toggled client, and a tunnel, both open throughout.
    let mut kept = testkit::client::connect_from(TOGGLED, proxy.addr());
    assert_eq!(get_on(&mut kept, &url), 200);
    let mut tunnel = testkit::client::connect_from(APP, proxy.addr());
    let target = origin.url().trim_start_matches("http://").to_string();
    tunnel
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    let (head, _) = testkit::client::read_response(&mut tunnel);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let through_tunnel = |tunnel: &mut TcpStream| {
        tunnel
            .write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (head, _) = testkit::client::read_response(tunnel);
        head.starts_with("HTTP/1.1 200")
    };
    assert!(through_tunnel(&mut tunnel));

    let started = Instant::now();
    let rounds = 100;
    let (mut reloads, mut refused) = (0, 0);
    let mut misjudged = Vec::new();
    for round in 0..rounds {
        let refuse = round % 2 == 0;
        if round == rounds / 2 {
            // A bad file mid-way: refused, saying where; the rules in force stay.
            let bad = format!("{}acl broken nosuchtype x\n", write(!refuse));
            refused += 1;
            reload(&proxy, &bad, reloads, refused);
            let said = proxy.child.stderr().join("\n");
            assert!(
                said.contains("squid.conf:") && said.contains("nosuchtype"),
                "the refusal names the file, line and column: {said}"
            );
            let expected = if round % 2 == 1 { 403 } else { 200 };
            assert_eq!(
                testkit::client::status_of(TOGGLED, proxy.addr(), &url),
                expected,
                "after the bad file"
            );
        }
        reloads += 1;
        reload(&proxy, &write(refuse), reloads, refused);
        let expected = if refuse { 403 } else { 200 };
        let fresh = testkit::client::status_of(TOGGLED, proxy.addr(), &url);
        let on_kept = get_on(&mut kept, &url);
        if fresh != expected || on_kept != expected {
            misjudged.push(format!(
                "round {round}: new connection {fresh}, kept connection {on_kept}, expected {expected}"
            ));
        }
    }
    let tunnel_alive = through_tunnel(&mut tunnel);
    let fresh = fresh_load.stop();
    let kept_alive = kept_load.stop();
    println!(
        "proxy reload: {rounds} reloads and 1 refused in {} ms; the toggled client judged by the rule in force: {} misjudged; from admitted clients meanwhile {} requests on new connections ({} failed) and {} on kept-alive ones ({} failed); the tunnel open across all: {}",
        started.elapsed().as_millis(),
        misjudged.len(),
        fresh.ok,
        fresh.failed.len(),
        kept_alive.ok,
        kept_alive.failed.len(),
        if tunnel_alive { "served" } else { "broken" }
    );
    assert!(misjudged.is_empty(), "{misjudged:#?}");
    assert!(fresh.failed.is_empty(), "{:?}", fresh.failed);
    assert!(kept_alive.failed.is_empty(), "{:?}", kept_alive.failed);
    assert!(kept_alive.ok > 0 && fresh.ok > 0, "both loads ran");
    // The access-log counters count on across the reloads: every request above was logged.
    let logged = metric(&proxy, "proxyfleet_proxy_access_log_lines_written_total");
    assert!(
        logged >= fresh.ok + kept_alive.ok + 2 * rounds as u64,
        "{logged} lines counted"
    );
    assert!(tunnel_alive, "the tunnel survives the reloads");
}

/// The address a `serving on` line after `after` such lines names.
fn serving_on(proxy: &ProxyUnderTest, after: usize) -> std::net::SocketAddr {
    testkit::wait::until("a new port's serving line", Duration::from_secs(10), || {
        proxy
            .child
            .stdout()
            .iter()
            .filter_map(|l| l.strip_prefix("proxyfleet proxy: serving on "))
            .nth(after)
            .and_then(|a| a.parse().ok())
    })
}

#[test]
fn a_reload_adds_ports_first_and_a_removed_port_stops_accepting_while_its_connections_finish() {
    let origin = Origin::start("127.30.0.62");
    let rules = "http_access allow app\nhttp_access deny all";
    let proxy = start(&base_config(rules));
    let first = proxy.addr();
    let text = std::fs::read_to_string(proxy.dir.path().join("squid.conf")).unwrap();
    let with_second = text.replace(
        "http_port 127.0.0.1:0",
        "http_port 127.0.0.1:0\nhttp_port 127.0.0.2:0",
    );
    reload(&proxy, &with_second, 1, 0);
    let second = serving_on(&proxy, 1);
    assert_eq!(second.ip().to_string(), "127.0.0.2");
    let small = format!("{}/small", origin.url());
    let on = |addr| {
        let reply = testkit::client::exchange_raw(
            APP,
            addr,
            format!("GET {small} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        reply.starts_with("HTTP/1.1 200")
    };
    assert!(on(first) && on(second), "both ports serve");

    // A port that cannot be bound fails the whole reload: nothing changes, it says where.
    let taken = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let conflicting = format!(
        "{with_second}http_port {}\nacl later src 127.0.0.0/8\n",
        taken.local_addr().unwrap()
    );
    reload(&proxy, &conflicting, 1, 1);
    let said = proxy.child.stderr().join("\n");
    assert!(
        said.contains("cannot listen on 127.0.0.3") && said.contains("squid.conf:"),
        "{said}"
    );
    assert!(on(first) && on(second), "a refused reload changes nothing");

    // Open on the first port: a kept-alive connection with a slow response in flight, and a
    // tunnel. Then a file without the first port.
    let mut kept = testkit::client::connect_from(APP, first);
    assert_eq!(get_on(&mut kept, &small), 200);
    let mut tunnel = testkit::client::connect_from(APP, first);
    let target = origin.url().trim_start_matches("http://").to_string();
    tunnel
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    assert!(testkit::client::read_response(&mut tunnel)
        .0
        .starts_with("HTTP/1.1 200"));
    kept.write_all(
        format!("GET {}/slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n", origin.url()).as_bytes(),
    )
    .unwrap();
    let without_first = with_second.replace("http_port 127.0.0.1:0\n", "");
    reload(&proxy, &without_first, 2, 1);
    assert!(
        proxy
            .child
            .stdout()
            .iter()
            .any(|l| l.contains(&format!("no longer listening on {first}"))),
        "{:?}",
        proxy.child.stdout()
    );
    testkit::wait::until_true(
        "the removed port to refuse connections",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(first).is_err(),
    );
    let (head, body) = testkit::client::read_response(&mut kept);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the transfer in flight finishes: {head}"
    );
    assert_eq!(body, b"slow\n");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "and closes its connection: {head}"
    );
    tunnel
        .write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, _) = testkit::client::read_response(&mut tunnel);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the tunnel goes on: {head}"
    );
    assert!(on(second), "the kept port serves");
}

/// `proxyfleet proxy -k ACTION -f FILE`, as an operator types it: success, stdout, stderr.
fn k(file: &std::path::Path, action: &str) -> (bool, String, String) {
    let (code, out, err) = testkit::process::run(
        common::BIN,
        &["proxy", "-k", action, "-f", file.to_str().unwrap()],
        Duration::from_secs(10),
    );
    (code.success(), out, err)
}

#[test]
fn k_reconfigure_signals_the_running_proxy_found_by_its_pid_file() {
    let origin = Origin::start("127.30.0.62");
    let url = format!("{}/small", origin.url());
    let rules = |refuse: bool| {
        let deny = if refuse { "http_access deny app\n" } else { "" };
        base_config(&format!(
            "pid_filename proxy.pid\n{deny}http_access allow app\nhttp_access deny all"
        ))
    };
    let proxy = start(&rules(false));
    let file = proxy.dir.path().join("squid.conf");
    let pid_file = proxy.dir.path().join("proxy.pid");
    testkit::wait::until_true("the pid file", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.trim() == proxy.child.pid().to_string())
    });
    assert_eq!(testkit::client::status_of(APP, proxy.addr(), &url), 200);
    let log = format!("access_log {} squid\n", proxy.access_log_path().display());
    std::fs::write(&file, format!("{}{log}", rules(true))).unwrap();
    let (ok, out, err) = k(&file, "reconfigure");
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("reconfigure sent to pid {}", proxy.child.pid())),
        "{out}"
    );
    testkit::wait::until_true("the new rules in force", Duration::from_secs(10), || {
        testkit::client::status_of(APP, proxy.addr(), &url) == 403
    });
    // A file that does not parse is not sent: the running proxy is not even asked.
    std::fs::write(
        &file,
        format!("{}{log}http_acess allow all\n", rules(false)),
    )
    .unwrap();
    let (ok, _, err) = k(&file, "reconfigure");
    assert!(!ok);
    assert!(
        err.contains("squid.conf:") && err.contains("http_acess"),
        "{err}"
    );
    assert_eq!(
        testkit::client::status_of(APP, proxy.addr(), &url),
        403,
        "the rules in force stay"
    );
    std::fs::write(&file, format!("{}{log}", rules(false))).unwrap();
    assert!(k(&file, "check").0, "running");
    // shutdown: SIGTERM; the proxy exits 0 and removes its pid file.
    assert!(k(&file, "shutdown").0);
    let mut child = proxy.child;
    assert!(child.wait_exit(Duration::from_secs(40)).success());
    assert!(!pid_file.exists(), "the pid file goes with the proxy");
    let (ok, _, err) = k(&file, "check");
    assert!(!ok && err.contains("no running proxy"), "{err}");
}
