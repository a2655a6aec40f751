//! The tier across hosts, owned by a test: three hosts `ha`, `hb`, `hc` (zones a, b, c) as
//! network namespaces on one segment (`testkit::netns`), each with its own etcd member and
//! `proxyfleet agent`; an app namespace for the clients and a service namespace for the
//! origin. Nothing runs in the test's own namespace but the test, and nothing is sent from it
//! to 198.18.0.0/16: every look at the tier (`status`, DNS queries, client load) is made from
//! inside a namespace.
//!
//! Addresses (198.18.0.0/16, on the segment only):
//! - hosts 198.18.0.1-3 (etcd on :2379/:2380, the DNS name on :53);
//! - zones a, b, c on 198.18.{1,2,3}.0/24, each zone's node at .10, instances from .11;
//! - the app network 198.18.20.0/24 (clients from .1-.4), the origin on 198.18.30.10.
//!
//! Instances take PROXY v2 from the nodes (`require-proxy-header`, the default across
//! hosts), which connect from their host's own address (node addresses move) and log in Squid's format to their own directory, so a drill can read which client
//! addresses they saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::etcd::Cluster;
use testkit::load::Load;
use testkit::netns::{self, Net};
use testkit::origin::Origin;
use testkit::process::Owned;

use super::BIN;

pub const HOSTS: [&str; 3] = ["ha", "hb", "hc"];
pub const ZONES: [&str; 3] = ["a", "b", "c"];
pub const DNS_NAME: &str = "proxy.tier.test";
/// The connect timeout of the drills' clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

pub fn host_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i as u8 + 1)
}

/// Zone `i`'s node address.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, i as u8 + 1, 10)
}

/// Zone `i`'s node: its address, port 3128.
pub fn node_address(i: usize) -> SocketAddr {
    SocketAddr::from((node_ip(i), 3128))
}

pub fn client_address(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 20, n as u8 + 1)
}

/// Why the drills cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if let Some(why) = netns::unavailable() {
        return Some(why);
    }
    if !testkit::etcd::installed() {
        return Some("etcd not installed (.ci/run installs Debian's etcd-server)".to_string());
    }
    None
}

pub struct Hosts {
    pub dir: tempfile::TempDir,
    pub stack: PathBuf,
    pub agents: Vec<Option<Owned>>,
    pub etcd: Cluster,
    pub origin: Origin,
    /// Last: dropping it kills whatever is left in the namespaces and removes them.
    pub net: Net,
}

/// The stack across the three hosts: a group of `desired` proxies over the zones. Its etcd
/// endpoints start with host `first`'s member (the copy `status` uses on that host: a CLI
/// asks its own host's member first, as `etcdctl` on a member host is pointed at its own).
pub fn stack(desired: u32, first: usize) -> String {
    stack_with(desired, first, ClientAddress::ProxyV2)
}

/// How the client's address reaches the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    /// PROXY v2 from the nodes (the default across hosts).
    ProxyV2,
    /// The nodes connect from the client's own address (`transparent`), the agents routing
    /// the replies back.
    Transparent,
}

/// [`stack`], the client's address passed on as `client`.
pub fn stack_with(desired: u32, first: usize, client: ClientAddress) -> String {
    let (group, http_port, proxy_header) = match client {
        ClientAddress::ProxyV2 => (
            "",
            "http_port {address}:{port} require-proxy-header",
            "        acl lb src 198.18.0.1 198.18.0.2 198.18.0.3\n        proxy_protocol_access allow lb\n        proxy_protocol_access deny all\n",
        ),
        ClientAddress::Transparent => (
            "\n    preserve_client_ip: true\n    transparent: true",
            "http_port {address}:{port}",
            "",
        ),
    };
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("http://{}:2379", host_address((first + i) % 3)))
        .collect();
    let endpoints = endpoints.join(", ");
    format!(
        r#"etcd:
  endpoints: [{endpoints}]
hosts:
  ha: {{ zone: a, address: 198.18.0.1, interface: eth0 }}
  hb: {{ zone: b, address: 198.18.0.2, interface: eth0 }}
  hc: {{ zone: c, address: 198.18.0.3, interface: eth0 }}
dns:
  name: {DNS_NAME}
zones:
  a: {{ subnet: 198.18.1.0/24 }}
  b: {{ subnet: 198.18.2.0/24 }}
  c: {{ subnet: 198.18.3.0/24 }}
networks:
  app: 198.18.20.0/24
  service: 198.18.30.0/24
  hosts: 198.18.0.0/24
service_networks: [service]
security_groups:
  sg:
    ingress:
      - {{ protocol: tcp, ports: "3128", from: app }}
      - {{ protocol: tcp, ports: "3128", from: hosts }}
load_balancers:
  front: {{ zones: [a, b, c] }}
listeners:
  - {{ load_balancer: front, port: 3128, protocol: tcp, target_group: tg }}
target_groups:
  tg:
    protocol: tcp
    port: 3128{group}
    deregistration_delay: 1s
    health_check: {{ protocol: http, path: /healthz, interval: 200ms, timeout: 200ms }}
launch_templates:
  proxy:
    command: [proxyfleet, proxy, -f, "{{dir}}/squid.conf"]
    stop_timeout: 2s
    files:
      squid.conf: |
        {http_port}
{proxy_header}        acl app src 198.18.20.0/24
        http_access allow app
        http_access deny all
        access_log {{dir}}/access.log squid
        dns_nameservers 198.18.0.1
        shutdown_lifetime 1 second
groups:
  g:
    launch_template: proxy
    min: 1
    desired: {desired}
    max: 6
    zones: [a, b, c]
    target_groups: [tg]
    security_groups: [sg]
    health_check_type: lb
    health_check_grace_period: 1s
"#
    )
}

impl Hosts {
    /// Builds the namespaces, starts etcd and an agent on every host and the origin, and
    /// waits until every zone serves through its own host's node.
    pub fn start(desired: u32) -> Hosts {
        Hosts::start_with(desired, ClientAddress::ProxyV2)
    }

    /// [`Hosts::start`], the client's address passed on as `client`.
    pub fn start_with(desired: u32, client: ClientAddress) -> Hosts {
        let mut net = Net::new();
        for (i, host) in HOSTS.iter().enumerate() {
            net.add(host, host_address(i));
        }
        net.add("app", client_address(0));
        for n in 1..4 {
            net.add_address("app", client_address(n));
        }
        net.add("svc", Ipv4Addr::new(198, 18, 30, 10));
        let members: Vec<(String, Ipv4Addr)> = (0..3)
            .map(|i| (net.ns(HOSTS[i]).name.clone(), host_address(i)))
            .collect();
        let etcd = Cluster::start_in(&members);
        let origin = netns::run_in(&net.ns("svc").name, || Origin::start("198.18.30.10"));
        let dir = tempfile::tempdir().unwrap();
        let stack = dir.path().join("stack.yaml");
        std::fs::write(&stack, stack_with(desired, 0, client)).unwrap();
        for i in 0..3 {
            std::fs::write(local_stack(dir.path(), i), stack_with(desired, i, client)).unwrap();
        }
        let mut hosts = Hosts {
            dir,
            stack,
            agents: vec![None, None, None],
            etcd,
            origin,
            net,
        };
        for i in 0..3 {
            hosts.start_agent(i);
        }
        hosts.wait(
            "every zone serving on its own host",
            Duration::from_secs(40),
            // Settled: every zone serving on its own host, and no hand-over from the
            // start-up (a host that came up first serves every node until the others do)
            // still releasing a node.
            |s| {
                let releasing = s["hosts"].as_array().is_some_and(|hs| {
                    hs.iter().any(|h| {
                        h["nodes"].as_array().is_some_and(|n| {
                            n.iter()
                                .any(|x| x.as_str().is_some_and(|x| x.ends_with("(releasing)")))
                        })
                    })
                });
                !releasing
                    && (0..3).all(|i| {
                        !serving_in(s, ZONES[i]).is_empty()
                            && holder(s, &format!("front/{}", ZONES[i])).as_deref()
                                == Some(HOSTS[i])
                    })
            },
        );
        hosts
    }

    pub fn url(&self) -> String {
        format!("{}/", self.origin.url())
    }

    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(HOSTS[i])
    }

    pub fn start_agent(&mut self, i: usize) {
        let state = self.state_dir(i);
        let args = [
            "agent",
            "-f",
            self.stack.to_str().unwrap(),
            "--host",
            HOSTS[i],
            "--state-dir",
            state.to_str().unwrap(),
        ];
        let mut agent = self.net.spawn_with_env(
            HOSTS[i],
            BIN,
            &args,
            &[("RUST_LOG", "info,proxyfleet_roles=debug")],
        );
        agent.wait_stdout("agent running", Duration::from_secs(30), |l| {
            l.contains("proxyfleet agent: host").then_some(())
        });
        self.agents[i] = Some(agent);
    }

    /// SIGTERM to agent `i` and wait until it has exited (a planned stop).
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut agent) = self.agents[i].take() {
            agent.signal(libc::SIGTERM);
            agent.wait_exit(Duration::from_secs(20));
        }
    }

    /// Kills host `i` whole: its switch port down, SIGKILL to every process in it (etcd
    /// member, agent, instances). Nothing of it says goodbye.
    pub fn kill_host(&mut self, i: usize) {
        self.net.kill_host(HOSTS[i]);
        if let Some(mut agent) = self.agents[i].take() {
            agent.wait_exit(Duration::from_secs(5));
        }
        self.etcd.kill(i);
    }

    /// Brings a killed host back: its port up, its etcd member on its data, its agent.
    pub fn revive_host(&mut self, i: usize) {
        self.net.link(HOSTS[i], true);
        self.etcd.restart(i);
        self.start_agent(i);
    }

    /// `proxyfleet status -f STACK --json`, run on a host whose agent runs (etcd is only
    /// reachable inside the segment).
    pub fn status(&self) -> Value {
        let i = (0..3)
            .find(|&i| self.agents[i].is_some())
            .expect("a host that runs");
        self.status_from(i)
    }

    pub fn status_from(&self, i: usize) -> Value {
        status_in(
            &self.net.ns(HOSTS[i]).name,
            &local_stack(self.dir.path(), i),
        )
        .unwrap_or_else(|e| panic!("status on {}: {e}", HOSTS[i]))
    }

    /// What [`status_in`] needs to look from host `i`, for a thread that cannot borrow
    /// the tier.
    pub fn status_args(&self, i: usize) -> (String, PathBuf) {
        (
            self.net.ns(HOSTS[i]).name.clone(),
            local_stack(self.dir.path(), i),
        )
    }

    /// Runs the CLI inside namespace `short`.
    pub fn cli_in(&self, short: &str, args: &[&str]) -> (bool, String, String) {
        cli_in_ns(&self.net.ns(short).name, args)
    }

    /// Polls `status` until `probe` holds; returns how long it took.
    /// Polls `status` until `probe` holds; returns how long it took. Each poll asks the
    /// next host whose agent runs, and a poll that fails (a host cut off from etcd) is
    /// just a poll that did not see it yet.
    pub fn wait(&self, what: &str, limit: Duration, probe: impl Fn(&Value) -> bool) -> Duration {
        let start = Instant::now();
        let mut last = String::new();
        let mut n = 0;
        loop {
            let i = n % 3;
            n += 1;
            if self.agents[i].is_some() {
                let (ns, stack) = self.status_args(i);
                match status_in(&ns, &stack) {
                    Ok(s) if probe(&s) => return start.elapsed(),
                    Ok(s) => last = format!("{s:#}"),
                    Err(e) => last = format!("status on {}: {e}", HOSTS[i]),
                }
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; last: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `f` in the app namespace (a client's view of the segment).
    pub fn in_app<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(&self.net.ns("app").name, f)
    }

    /// One client connection per source in `sources`, each making new connections again and
    /// again to `target()` from the app namespace, with the drills' connect timeout.
    pub fn load(
        &self,
        target: Arc<dyn Fn() -> Result<SocketAddr, String> + Send + Sync>,
        sources: &[usize],
    ) -> Load {
        let sources: Vec<IpAddr> = sources
            .iter()
            .map(|&n| IpAddr::V4(client_address(n)))
            .collect();
        let url = self.url();
        self.in_app(|| Load::start_to(target, &sources, &url, CONNECT_TIMEOUT))
    }

    /// The DNS name resolved the way an app host's stub resolver does: each host's server in
    /// turn until one answers, then one of its addresses (round robin over calls).
    pub fn through_dns() -> Arc<dyn Fn() -> Result<SocketAddr, String> + Send + Sync> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        Arc::new(move || {
            let answer = resolve(DNS_NAME)?;
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(SocketAddr::from((answer[n % answer.len()], 3128)))
        })
    }

    /// The addresses in the DNS name's answer, from the app namespace.
    pub fn dns_answer(&self) -> Result<Vec<Ipv4Addr>, String> {
        self.in_app(|| resolve(DNS_NAME))
    }

    /// Whether `address:3128` accepts a connection now, from the app namespace.
    pub fn answers(&self, address: SocketAddr) -> bool {
        self.in_app(|| std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_ok())
    }

    /// Every access-log line written by instances of this tier so far.
    pub fn access_log_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..3 {
            let instances = self.state_dir(i).join("instances");
            for entry in std::fs::read_dir(&instances)
                .into_iter()
                .flatten()
                .flatten()
            {
                let log = entry.path().join("access.log");
                if let Ok(text) = std::fs::read_to_string(&log) {
                    lines.extend(text.lines().map(str::to_string));
                }
            }
        }
        lines
    }
}

/// With `PROXYFLEET_HOSTS_LOG` set, each agent's output is printed when the tier goes (also
/// when a drill fails): what each host did, with timestamps.
impl Drop for Hosts {
    fn drop(&mut self) {
        if std::env::var_os("PROXYFLEET_HOSTS_LOG").is_none() {
            return;
        }
        for (i, agent) in self.agents.iter().enumerate() {
            if let Some(agent) = agent {
                for line in agent.stdout().iter().chain(agent.stderr().iter()) {
                    println!("{}: {line}", HOSTS[i]);
                }
            }
        }
    }
}

/// The stack copy whose etcd endpoints start with host `i`'s member.
fn local_stack(dir: &std::path::Path, i: usize) -> PathBuf {
    dir.join(format!("stack-{}.yaml", HOSTS[i]))
}

/// Runs the CLI inside namespace `ns` (by name).
pub fn cli_in_ns(ns: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["netns", "exec", ns, BIN];
    all.extend_from_slice(args);
    let (code, out, err) = testkit::process::run("ip", &all, Duration::from_secs(20));
    (code.success(), out, err)
}

/// `proxyfleet status -f STACK --json` inside namespace `ns`.
pub fn status_in(ns: &str, stack: &std::path::Path) -> Result<Value, String> {
    let (ok, out, err) = cli_in_ns(ns, &["status", "-f", stack.to_str().unwrap(), "--json"]);
    if !ok {
        return Err(err);
    }
    serde_json::from_str(&out).map_err(|e| format!("status JSON: {e}: {out}"))
}

/// The host a request to the origin came from: an instance leaves from its own address or
/// from its host's primary one.
pub fn host_of_peer(s: &Value, peer: &str) -> Option<String> {
    (0..3)
        .find(|&i| host_address(i).to_string() == peer)
        .map(|i| HOSTS[i].to_string())
        .or_else(|| {
            super::tier::live(s)
                .iter()
                .find(|i| {
                    i["address"]
                        .as_str()
                        .is_some_and(|a| a.split(':').next() == Some(peer))
                })
                .and_then(|i| i["host"].as_str().map(str::to_string))
        })
}

/// One A query to each host's DNS server in turn (200 ms each), the first answer's addresses.
pub fn resolve(name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut why = Vec::new();
    for i in 0..3 {
        let server = SocketAddr::from((host_address(i), 53));
        match testkit::dns::query_a(server, name, CONNECT_TIMEOUT) {
            Ok((0, records)) if !records.is_empty() => {
                return Ok(records.into_iter().map(|(a, _)| a).collect())
            }
            Ok((code, _)) => why.push(format!("{server}: rcode {code}")),
            Err(e) => why.push(format!("{server}: {e}")),
        }
    }
    Err(format!("no DNS answer for {name}: {}", why.join("; ")))
}

pub use super::tier::serving_in;

/// The host that reports holding node `LB/ZONE`, if exactly one live host does.
pub fn holder(s: &Value, node: &str) -> Option<String> {
    let holders: Vec<String> = s["hosts"]
        .as_array()?
        .iter()
        .filter(|h| h["live"] == true)
        .filter(|h| {
            h["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == node))
        })
        .filter_map(|h| h["id"].as_str().map(str::to_string))
        .collect();
    (holders.len() == 1).then(|| holders[0].clone())
}

/// A long-lived client connection through a node (HTTP keep-alive through the proxy): the
/// drills' "flow", which must not be cut when a host it does not pass through dies.
pub struct Flow {
    stream: std::net::TcpStream,
    url: String,
    pub name: String,
}

impl Flow {
    /// Opens a flow from client `n` through `node` (from the app namespace).
    pub fn open(tier: &Hosts, n: usize, node: SocketAddr, name: &str) -> Result<Flow, String> {
        let source = client_address(n).to_string();
        let stream = tier.in_app(|| {
            testkit::client::try_connect_from(&source, node, Duration::from_secs(2))
                .map_err(|e| format!("connect {node}: {e}"))
        })?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        Ok(Flow {
            stream,
            url: tier.origin.url(),
            name: name.to_string(),
        })
    }

    /// One keep-alive request for `/NAME-SEQ`; the response's status code.
    pub fn request(&mut self, seq: u32) -> Result<u16, String> {
        use std::io::{Read, Write};
        let request = format!(
            "GET {}/{}-{seq} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
            self.url, self.name
        );
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("closed before a response".to_string()),
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status line: {head}"))?;
        let length = testkit::client::content_length(&head);
        let mut body = data.len() - head_end;
        while body < length {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("closed inside a body".to_string()),
                Ok(n) => body += n,
                Err(e) => return Err(format!("read body: {e}")),
            }
        }
        Ok(status)
    }
}

impl Hosts {
    /// The host whose instance served flow `name` (by the origin's record of the request's
    /// peer: an instance's own address or its host's primary one).
    pub fn flow_host(&self, name: &str) -> Option<String> {
        let s = self.status();
        let prefix = format!("/{name}-");
        let peer = self
            .origin
            .seen()
            .iter()
            .rev()
            .find(|r| r.uri.contains(&prefix))
            .map(|r| r.peer.ip().to_string())?;
        host_of_peer(&s, &peer)
    }

    /// A GET through `node` from client `n` answers 200 now.
    pub fn serves_through(&self, n: usize, node: SocketAddr) -> bool {
        serves_through_in(&self.net.ns("app").name, &self.url(), n, node)
    }

    /// Waits (polling, with a deadline) until every node has stopped serving and then served
    /// again; when each served again, since `since`. Each node is probed in its own thread
    /// (client `i + 1` through node `i`), so that one node's failing probes do not delay
    /// another's.
    pub fn each_node_down_then_back(&self, since: Instant, limit: Duration) -> Vec<Duration> {
        let app = self.net.ns("app").name.clone();
        let url = self.url();
        std::thread::scope(|scope| {
            let probes: Vec<_> = (0..3)
                .map(|i| {
                    let (app, url) = (&app, &url);
                    scope.spawn(move || {
                        let mut down = false;
                        loop {
                            let serves = serves_through_in(app, url, i + 1, node_address(i));
                            if serves && down {
                                return since.elapsed();
                            }
                            down |= !serves;
                            assert!(
                                since.elapsed() < limit,
                                "node {} down, then serving again: not within {limit:?}",
                                ZONES[i]
                            );
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                })
                .collect();
            probes
                .into_iter()
                .map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }
}

/// A GET through `node` from client `n` (in namespace `app`) answers 200 now.
fn serves_through_in(app: &str, url: &str, n: usize, node: SocketAddr) -> bool {
    let source = client_address(n).to_string();
    netns::run_in(app, || {
        let Ok(mut s) = testkit::client::try_connect_from(&source, node, CONNECT_TIMEOUT) else {
            return false;
        };
        use std::io::Write;
        let request = format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if s.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let reply = testkit::client::read_to_close(&mut s, Duration::from_secs(2));
        reply.starts_with(b"HTTP/1.1 200")
    })
}
