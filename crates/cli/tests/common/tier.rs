//! A tier of `proxyfleet agent` processes on a real 3-member etcd cluster, owned by a test:
//! three zones a, b, c on 127.NET.{1,2,3}.0/24 with a node each at .10, one agent per zone
//! (host `ha`, `hb`, `hc`), a group of three `proxyfleet proxy` instances, the origin on the
//! service network. Everything the tier starts is stopped when the test ends, however it
//! ends: the agents by pid, the instances (which outlive their agent by design) by the pid
//! the state recorded and, as a last resort, by scanning /proc for this tier's directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::etcd::Cluster;
use testkit::process::{run, Owned};

use super::BIN;

pub const ZONES: [&str; 3] = ["a", "b", "c"];

pub struct Tier {
    pub net: u8,
    pub dir: tempfile::TempDir,
    pub stack: PathBuf,
    pub agents: Vec<Option<Owned>>,
    /// Each agent's read-only API (`--api 127.0.0.1:0`).
    pub apis: Vec<Option<String>>,
    pub etcd: Cluster,
}

/// The stack: three zones, a node per zone, a group of `desired` proxies over the zones.
pub fn stack(net: u8, etcd: &[String], desired: u32) -> String {
    let endpoints = etcd.join(", ");
    format!(
        r#"etcd:
  endpoints: [{endpoints}]
zones:
  a: {{ subnet: 127.{net}.1.0/24 }}
  b: {{ subnet: 127.{net}.2.0/24 }}
  c: {{ subnet: 127.{net}.3.0/24 }}
networks:
  app: 127.20.0.0/16
  service: 127.30.0.0/16
service_networks: [service]
security_groups:
  sg:
    ingress:
      - {{ protocol: tcp, ports: "3128", from: app }}
      - {{ protocol: tcp, ports: "3128", from: a }}
      - {{ protocol: tcp, ports: "3128", from: b }}
      - {{ protocol: tcp, ports: "3128", from: c }}
load_balancers:
  front: {{ zones: [a, b, c] }}
listeners:
  - {{ load_balancer: front, port: 3128, protocol: tcp, target_group: tg }}
target_groups:
  tg:
    protocol: tcp
    port: 3128
    deregistration_delay: 1s
    health_check: {{ protocol: http, path: /healthz, interval: 200ms, timeout: 200ms }}
launch_templates:
  proxy:
    command: [proxyfleet, proxy, -f, "{{dir}}/squid.conf"]
    stop_timeout: 2s
    files:
      squid.conf: |
        http_port {{address}}:{{port}}
        acl ok src 127.0.0.0/8
        http_access allow ok
        access_log none
        dns_nameservers 127.0.0.1
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

impl Tier {
    /// Starts the etcd cluster (on 127.99.NET.1-3) and an agent per zone; waits until every
    /// zone serves.
    pub fn start(net: u8, desired: u32) -> Tier {
        let etcd = Cluster::start([net, 1]);
        let dir = tempfile::tempdir().unwrap();
        let stack = dir.path().join("stack.yaml");
        std::fs::write(&stack, self::stack(net, &etcd.client_urls(), desired)).unwrap();
        let mut tier = Tier {
            net,
            dir,
            stack,
            agents: vec![None, None, None],
            apis: vec![None, None, None],
            etcd,
        };
        for i in 0..3 {
            tier.start_agent(i);
        }
        tier.wait("every zone serving", Duration::from_secs(30), |s| {
            ZONES.iter().all(|z| !serving_in(s, z).is_empty())
        });
        tier
    }

    pub fn host(i: usize) -> String {
        format!("h{}", ZONES[i])
    }

    pub fn node(&self, i: usize) -> std::net::SocketAddr {
        format!("127.{}.{}.10:3128", self.net, i + 1)
            .parse()
            .unwrap()
    }

    pub fn start_agent(&mut self, i: usize) {
        let state = self.dir.path().join(Self::host(i));
        let args = [
            "agent",
            "-f",
            self.stack.to_str().unwrap(),
            "--host",
            &Self::host(i),
            "--zone",
            ZONES[i],
            "--state-dir",
            state.to_str().unwrap(),
            "--api",
            "127.0.0.1:0",
        ];
        let mut agent = Owned::spawn(BIN, &args);
        let api = agent.wait_stdout("agent api", Duration::from_secs(20), |l| {
            l.strip_prefix("proxyfleet agent: api on ")
                .map(str::to_string)
        });
        self.apis[i] = Some(api);
        agent.wait_stdout("agent running", Duration::from_secs(20), |l| {
            l.contains("proxyfleet agent: host").then_some(())
        });
        self.agents[i] = Some(agent);
    }

    /// kill -9 of agent `i` (its instances keep running, as a killed agent's do).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut agent) = self.agents[i].take() {
            agent.signal(libc::SIGKILL);
            agent.wait_exit(Duration::from_secs(5));
        }
    }

    pub fn agent_pid(&self, i: usize) -> u32 {
        self.agents[i].as_ref().expect("agent runs").pid()
    }

    /// `proxyfleet status -f STACK --json`.
    pub fn status(&self) -> Value {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `status`, or why it failed (etcd electing, say).
    pub fn try_status(&self) -> Result<Value, String> {
        let (code, out, err) = run(
            BIN,
            &["status", "-f", self.stack.to_str().unwrap(), "--json"],
            Duration::from_secs(10),
        );
        if !code.success() {
            return Err(format!("status failed: {err}"));
        }
        serde_json::from_str(&out).map_err(|e| format!("status JSON: {e}: {out}"))
    }

    /// `proxyfleet activity -f STACK --json`, newest first.
    pub fn activity(&self) -> Vec<Value> {
        let out = run(
            BIN,
            &[
                "activity",
                "-f",
                self.stack.to_str().unwrap(),
                "--json",
                "--limit",
                "10000",
            ],
            Duration::from_secs(10),
        );
        let (code, out, err) = out;
        assert!(code.success(), "activity failed: {err}");
        serde_json::from_str::<Value>(&out)
            .expect("activity JSON")
            .as_array()
            .unwrap()
            .clone()
    }

    /// Polls `status` until `probe` holds; returns how long it took.
    pub fn wait(&self, what: &str, limit: Duration, probe: impl Fn(&Value) -> bool) -> Duration {
        // A status that fails (the store between leaders, say) is one that did not show it
        // yet.
        let start = Instant::now();
        loop {
            let s = self.try_status();
            if s.as_ref().is_ok_and(&probe) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; status: {}",
                match &s {
                    Ok(s) => format!("{s:#}"),
                    Err(e) => e.clone(),
                }
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every instance pid the state knows of.
    pub fn instance_pids(&self, host: Option<&str>) -> Vec<u32> {
        self.status()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| host.is_none_or(|h| i["host"] == h))
            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
            .collect()
    }
}

/// In-service instances of `zone` whose target is healthy.
pub fn serving_in(s: &Value, zone: &str) -> Vec<String> {
    let healthy: Vec<&str> = s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "healthy")
        .filter_map(|t| t["instance"].as_str())
        .collect();
    s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["zone"] == zone && i["lifecycle"] == "InService")
        .filter_map(|i| i["id"].as_str())
        .filter(|id| healthy.contains(id))
        .map(str::to_string)
        .collect()
}

/// Live (not Terminating or Terminated) instances.
pub fn live(s: &Value) -> Vec<Value> {
    s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["lifecycle"] == "Pending" || i["lifecycle"] == "InService")
        .cloned()
        .collect()
}

pub fn leader(s: &Value) -> Option<(String, u64)> {
    let l = &s["leader"];
    Some((l["host"].as_str()?.to_string(), l["term"].as_u64()?))
}

/// Kills `pid` if its command line mentions `needle` (so only this tier's processes).
fn kill_if_ours(pid: u32, needle: &str) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(needle) {
        // SAFETY: kill(2) on a process of this tier (its command line names the tier's dir).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        let needle = self.dir.path().display().to_string();
        for agent in self.agents.iter_mut().flatten() {
            agent.signal(libc::SIGCONT);
        }
        for agent in self.agents.iter_mut() {
            agent.take();
        }
        // Instances outlive their agents: every process started for this tier names its
        // directory on its command line.
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            {
                kill_if_ours(pid, &needle);
            }
        }
        testkit::firewall::remove_tables_under(self.dir.path());
    }
}
