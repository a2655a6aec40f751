//! What the balancer tests share: targets that say who connected, specs, and waiting.

#![allow(dead_code)] // each test binary uses its own part of it

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxyfleet_lb::spec::{
    HealthCheckSpec, ListenerSpec, LoadBalancerSpec, NodeSpec, TargetGroupSpec, TargetSpec,
    TargetType,
};
use proxyfleet_lb::{Balancer, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A target: answers every connection with `NAME PEER-ADDRESS\n`, then echoes until EOF.
/// With `proxy_v2`, it first decodes a PROXY v2 header with the `proxy-header` crate (not the
/// `ppp` crate the balancer uses) and reports the address inside it instead.
pub struct TestTarget {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl TestTarget {
    pub async fn start(addr: &str, name: &'static str, proxy_v2: bool) -> TestTarget {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, peer)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let mut who = peer.to_string();
                    if proxy_v2 {
                        let mut buf = vec![0u8; 16];
                        if s.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
                        buf.resize(16 + len, 0);
                        if s.read_exact(&mut buf[16..]).await.is_err() {
                            return;
                        }
                        let config = proxy_header::ParseConfig::default();
                        let (header, _) =
                            proxy_header::ProxyHeader::parse(&buf, config).expect("valid PROXY v2");
                        who = match header.proxied_address() {
                            Some(a) => a.source.to_string(),
                            None => "LOCAL".to_string(),
                        };
                    }
                    log.lock().unwrap().push(who.clone());
                    if s.write_all(format!("{name} {who}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TestTarget { addr, task, seen }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

pub fn group(name: &str, targets: &[(&TestTarget, &str)], interval_ms: u64) -> TargetGroupSpec {
    let mut g = TargetGroupSpec::new(name, 0, TargetType::Instance);
    g.health_check = HealthCheckSpec {
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms),
        ..HealthCheckSpec::default()
    };
    g.deregistration_delay = Duration::from_millis(800);
    g.targets = targets
        .iter()
        .map(|(t, zone)| TargetSpec {
            address: t.addr,
            zone: zone.to_string(),
        })
        .collect();
    g
}

pub fn lb(nodes: &[(&str, &str)], port: u16, group: &str) -> LoadBalancerSpec {
    LoadBalancerSpec {
        name: "front".into(),
        nodes: nodes
            .iter()
            .map(|(z, a)| NodeSpec {
                zone: z.to_string(),
                address: a.parse().unwrap(),
            })
            .collect(),
        cross_zone: false,
        listeners: vec![ListenerSpec {
            port,
            target_group: group.into(),
            allowed_cidrs: None,
        }],
        max_connections: 1000,
        max_connections_per_source: 1000,
        idle_timeout: Duration::from_secs(30),
        bind_before_owned: false,
    }
}

/// A free port on `ip`, chosen by the kernel.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects from `source` (port 0 = any) and returns the target's greeting line.
pub async fn hello(source: &str, port: u16, node: SocketAddr) -> std::io::Result<String> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), port))?;
    let mut s: TcpStream =
        tokio::time::timeout(Duration::from_secs(5), socket.connect(node)).await??;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        if s.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8(line).unwrap().trim_end().to_string())
}

pub async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn health(b: &Balancer, target: &TestTarget) -> Vec<Health> {
    b.target_health("g", &target.addr.to_string())
        .into_iter()
        .map(|(_, h)| h)
        .collect()
}

/// Waits until each of `targets` is healthy on each of the `nodes` nodes that check it.
pub async fn all_healthy(b: &Balancer, nodes: usize, targets: &[&TestTarget]) {
    wait_for(
        "targets healthy on every node",
        Duration::from_secs(5),
        || {
            targets
                .iter()
                .all(|t| health(b, t) == vec![Health::Healthy; nodes])
        },
    )
    .await;
}
