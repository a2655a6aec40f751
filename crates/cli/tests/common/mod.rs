//! Shared set-up for the `proxyfleet proxy` integration tests: a config file in a temp dir,
//! the real binary started on it, and its bound addresses.

#![allow(dead_code)] // each test binary uses a different part

pub mod drills;
pub mod hosts;
pub mod squid;
pub mod tier;
pub mod up;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use testkit::process::Owned;

pub const BIN: &str = env!("CARGO_BIN_EXE_proxyfleet");
pub const START: Duration = Duration::from_secs(15);

/// An admitted client address and a denied one (DESIGN.md's app network, and outside it).
pub const APP: &str = "127.20.0.5";
pub const OUTSIDER: &str = "127.99.0.5";

/// A running `proxyfleet proxy`.
pub struct ProxyUnderTest {
    pub child: Owned,
    pub dir: tempfile::TempDir,
    /// Bound addresses, in http_port order.
    pub addrs: Vec<SocketAddr>,
}

impl ProxyUnderTest {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The access log's lines, once it has at least `n` of them.
    pub fn access_log(&self, n: usize) -> Vec<String> {
        let path = self.access_log_path();
        testkit::wait::until(
            &format!("{n} access log lines"),
            Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                (lines.len() >= n).then_some(lines)
            },
        )
    }
}

/// The config every test starts from: one port on 127.0.0.1 (kernel-chosen), the app network
/// admitted, an access log in the temp dir, DNS only on loopback (no query ever leaves the
/// machine). `extra` is appended.
pub fn base_config(extra: &str) -> String {
    format!(
        "http_port 127.0.0.1:0\n\
         visible_hostname proxy.test\n\
         dns_nameservers 127.0.0.1\n\
         acl app src 127.20.0.0/16\n\
         {extra}\n"
    )
}

/// Writes `config` (with `ACCESS_LOG` replaced by the log path) and starts the proxy on it.
pub fn start(config: &str) -> ProxyUnderTest {
    start_with_env(config, &[])
}

/// [`start`], with extra environment variables for the proxy.
pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> ProxyUnderTest {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let config = config.replace("ACCESS_LOG", &log.display().to_string());
    let config = if config.contains("access_log") {
        config
    } else {
        format!("{config}access_log {} squid\n", log.display())
    };
    let file = dir.path().join("squid.conf");
    std::fs::write(&file, &config).expect("write config");
    let mut child = Owned::spawn_with_env(
        BIN,
        &["proxy", "-f", file.to_str().expect("utf-8 path")],
        env,
    );
    let ports = config
        .lines()
        .filter(|l| l.starts_with("http_port"))
        .count();
    let addrs = testkit::wait::until("every http_port to listen", START, || {
        assert!(
            !child.has_exited(),
            "proxy exited at start-up: {:?}",
            child.stderr()
        );
        let found: Vec<SocketAddr> = child
            .stdout()
            .iter()
            .filter_map(|l| {
                l.strip_prefix("proxyfleet proxy: serving on ")?
                    .parse()
                    .ok()
            })
            .collect();
        (found.len() == ports).then_some(found)
    });
    ProxyUnderTest { child, dir, addrs }
}

/// A default proxy: the app network allowed, everything else denied.
pub fn start_default() -> ProxyUnderTest {
    start(&base_config("http_access allow app\nhttp_access deny all"))
}

/// `curl` from the admitted client address through `proxy`, with `args` after.
pub fn curl_through(proxy: &ProxyUnderTest, args: &[&str]) -> testkit::client::Curl {
    let url = proxy.url();
    let mut all = vec!["--interface", APP, "-x", url.as_str()];
    all.extend_from_slice(args);
    testkit::client::curl(&all)
}

/// The status of `GET origin` through the proxy node `node` (port 3128) from `source`, by
/// curl (0: no answer).
pub fn get_through(node: &str, origin: &testkit::origin::Origin, source: &str) -> u16 {
    let curl = testkit::client::curl(&[
        "--interface",
        source,
        "-x",
        &format!("http://{node}:3128"),
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &origin.url(),
    ]);
    curl.stdout.trim().parse().unwrap_or(0)
}

/// `GET /metrics` on `port`, directly from this host: the whole reply.
pub fn get_metrics(port: SocketAddr) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(port).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    String::from_utf8_lossy(&testkit::client::read_to_close(
        &mut stream,
        std::time::Duration::from_secs(5),
    ))
    .to_string()
}

/// The value of `name` in the proxy's `/metrics`.
pub fn metric(proxy: &ProxyUnderTest, name: &str) -> u64 {
    let text = get_metrics(proxy.addr());
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}
