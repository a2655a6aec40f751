//! The admin API and the instances of a real `proxyfleet up`, as a hostile neighbour sees
//! them: `up` is started with a secret in its environment and an inherited descriptor
//! without close-on-exec, its launch template has a secret in `environment`; no endpoint
//! (nor the proxy, nor the logs) shows the secrets or the token, and the instance holds
//! none of it: not in /proc/PID/environ, not on its command line, not among its
//! descriptors. With `admin.read_requires_token`, every read needs the token, and the CLI
//! and the console's event stream still work.
//!
//! Networks: 127.83.x.0/24 and 127.84.x.0/24 (zones), app clients from 127.20.0.0/16.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::up::{proxy_stack, Up};

const UP_SECRET: &str = "up-env-secret-6b1f";
const TEMPLATE_SECRET: &str = "template-secret-93ac";
/// What group/process.rs gives every instance.
const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `proxy_stack(net)` with a secret in the launch template's environment and `admin_yaml`
/// (an `admin:` section, or nothing) at the top.
fn stack(net: u8, admin_yaml: &str) -> String {
    let text = proxy_stack(net, 1, 1, 1);
    let marker = "    stop_timeout: 5s\n";
    assert!(text.contains(marker));
    let text = text.replace(
        marker,
        &format!(
            "{marker}    environment:\n      DB_PASSWORD: {TEMPLATE_SECRET}\n      \
             GREETING: \"hello\"\n"
        ),
    );
    format!("{admin_yaml}{text}")
}

/// Starts `up` on `text` the way a careless shell would: with `UP_SECRET` exported and
/// descriptor 9 open without close-on-exec.
fn start_leaky_up(text: &str) -> Up {
    Up::start_through_shell(
        tempfile::tempdir().unwrap(),
        "exec 9</dev/null",
        text,
        &[("UP_SECRET", UP_SECRET)],
    )
}

fn admin_addr(up: &Up) -> SocketAddr {
    std::fs::read_to_string(up.dir().join("admin.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn token(up: &Up) -> String {
    std::fs::read_to_string(up.dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// One request (`Connection: close`); the status and the whole answer (head and body).
fn http(addr: SocketAddr, path: &str, host: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The event stream's head and first events, up to the first `tick` and its data.
fn first_events(addr: SocketAddr, target: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let tick_done = text
            .find("event: tick")
            .is_some_and(|at| text[at..].contains("\n\n"));
        if tick_done || (status != 0 && status != 200 && text.contains("\r\n\r\n{")) {
            return (status, text);
        }
        assert!(Instant::now() < deadline, "no tick: {text}");
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return (status, text);
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Every descriptor of `pid` as (number, what it points at).
fn fds(pid: u64) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.display().to_string()))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn instances_inherit_nothing_from_up_and_no_endpoint_shows_a_secret() {
    let up = start_leaky_up(&stack(83, ""));
    let token = token(&up);
    let addr = admin_addr(&up);
    let up_pid = u64::from(up.child.pid());
    assert!(
        fds(up_pid).iter().any(|(n, t)| *n == 9 && t == "/dev/null"),
        "the test's premise: up holds the inherited descriptor 9"
    );
    let (id, _, _) = up.in_service().into_iter().next().expect("one instance");
    let pid = up.pid_of(&id);

    // The environment: PATH, HOME, LANG, the template's variables, and what proxyfleet
    // itself sets.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8(environ).unwrap();
    let vars: BTreeSet<&str> = environ.split_terminator('\0').collect();
    let names: BTreeSet<&str> = vars.iter().filter_map(|v| v.split('=').next()).collect();
    let allowed: BTreeSet<&str> = [
        "PATH",
        "HOME",
        "LANG",
        "DB_PASSWORD",
        "GREETING",
        "PROXYFLEET_ALLOWED_SOURCES",
        "PROXYFLEET_DESTINATION_GUARD",
        "PROXYFLEET_GUARD_ALLOW",
        "PROXYFLEET_GUARD_DENY",
    ]
    .into_iter()
    .collect();
    assert!(names.is_subset(&allowed), "instance environment: {vars:?}");
    assert!(
        vars.contains(format!("PATH={BASE_PATH}").as_str()),
        "{vars:?}"
    );
    assert!(
        vars.contains(format!("DB_PASSWORD={TEMPLATE_SECRET}").as_str()),
        "the template's own variables are given: {vars:?}"
    );
    assert!(!environ.contains(UP_SECRET) && !environ.contains(&token));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    for secret in [UP_SECRET, TEMPLATE_SECRET, token.as_str()] {
        assert!(!cmdline.contains(secret), "command line: {cmdline}");
    }

    // Descriptors: 0, 1 and 2, and what the proxy opened itself: nothing it shares with up
    // (a socket, a file, a pipe of up's would be the same inode). Anonymous inodes
    // (eventpoll, eventfd) are one shared inode per kind on every process, so not compared.
    let instance = fds(pid);
    assert_eq!(
        instance.iter().take(3).map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 1, 2],
        "{instance:?}"
    );
    let ups: BTreeSet<String> = fds(up_pid).into_iter().map(|(_, t)| t).collect();
    let shared: Vec<&(u32, String)> = instance
        .iter()
        .filter(|(n, t)| *n > 2 && !t.starts_with("anon_inode:") && ups.contains(t))
        .collect();
    assert!(
        shared.is_empty(),
        "inherited from up: {shared:?}; all: {instance:?}"
    );
    assert!(
        !instance.iter().any(|(n, t)| *n > 2 && t == "/dev/null"),
        "the descriptor up inherited reached the instance: {instance:?}"
    );

    // No endpoint shows a secret or the token; the stack file only names the variables.
    let host = addr.to_string();
    for path in [
        "/api/status",
        "/api/activity?limit=1000",
        "/api/history",
        "/metrics",
        "/",
        "/console/console.js",
        "/api/token",
    ] {
        let (status, text) = http(addr, path, &host, None);
        assert!(status == 200 || path == "/api/token", "{path}: {text}");
        for secret in [UP_SECRET, TEMPLATE_SECRET, token.as_str()] {
            assert!(!text.contains(secret), "{path} shows a secret:\n{text}");
        }
    }
    let (status, text) = http(addr, "/api/stack", &host, None);
    assert_eq!(status, 401, "{text}");
    let (status, text) = http(addr, "/api/stack", &host, Some(&token));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("DB_PASSWORD: <redacted>\n"), "{text}");
    assert!(text.contains("GREETING: <redacted>\n"), "{text}");
    assert!(!text.contains(TEMPLATE_SECRET), "{text}");
    let (status, events) = first_events(addr, "/api/events", None);
    assert_eq!(status, 200, "{events}");
    for secret in [UP_SECRET, TEMPLATE_SECRET, token.as_str()] {
        assert!(!events.contains(secret), "the event stream shows a secret");
    }

    // A rebinding page's Host is refused by the real server too.
    let (status, text) = http(addr, "/api/status", "rebind.evil.example", None);
    assert_eq!(status, 421, "{text}");

    // The case: an app client asks the load balancer for the admin API. Whatever
    // the proxy does with it, no secret comes back.
    let status = up.status();
    let node = status["load_balancers"][0]["nodes"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let proxy = format!("http://{node}:3128");
    let target = format!("http://{addr}/api/stack");
    let through =
        testkit::client::curl(&["--interface", "127.20.0.5", "-x", &proxy, "-i", &target]);
    assert!(
        !through.stdout.contains(TEMPLATE_SECRET) && !through.stdout.contains("200 OK"),
        "through the proxy: {through:?}"
    );

    // Nothing logged the token or a secret: up's output, the instance's logs.
    let mut logs = up.child.stdout();
    logs.extend(up.child.stderr());
    let dir = status["instances"][0]["dir"].as_str().unwrap().to_string();
    for name in ["stdout.log", "stderr.log"] {
        logs.push(std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_default());
    }
    for line in &logs {
        assert!(
            !line.contains(&token) && !line.contains(UP_SECRET),
            "logged: {line}"
        );
    }
}

#[test]
fn read_requires_token_locks_every_read_and_the_cli_and_console_stream_still_work() {
    let up = start_leaky_up(&stack(84, "admin:\n  read_requires_token: true\n"));
    let token = token(&up);
    let addr = admin_addr(&up);
    let host = addr.to_string();
    for path in [
        "/api/status",
        "/api/activity",
        "/api/history",
        "/metrics",
        "/api/stack",
        "/api/events",
    ] {
        let (status, text) = http(addr, path, &host, None);
        assert_eq!(status, 401, "{path}: {text}");
    }
    for path in ["/api/status", "/api/history", "/metrics"] {
        let (status, text) = http(addr, path, &host, Some(&token));
        assert_eq!(status, 200, "{path}: {text}");
    }
    // The console's page loads without the token (it holds no data) ...
    let (status, _) = http(addr, "/", &host, None);
    assert_eq!(status, 200);
    // ... and its EventSource reads the stream with the token in the URL.
    let (status, events) = first_events(addr, &format!("/api/events?access_token={token}"), None);
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("event: history"), "{events}");
    // The CLI reads the token from the state directory for reads too.
    assert_eq!(up.in_service().len(), 1);
    let (code, out, err) = up.cli(&["activity"]);
    assert_eq!(code, 0, "{out}{err}");
    // The token never reaches up's output, although it was in a request target.
    let mut logs = up.child.stdout();
    logs.extend(up.child.stderr());
    assert!(logs.iter().all(|l| !l.contains(&token)), "{logs:?}");
}
