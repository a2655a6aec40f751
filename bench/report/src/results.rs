//! `bench/out/results.json` as `bench/run` writes it: every single run, nothing aggregated.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The schema version this report reads.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Deserialize)]
pub struct Results {
    pub schema: u32,
    /// When the measurements started (UTC, as text).
    pub date: String,
    /// The command line that produced the file, environment included.
    pub command: String,
    pub settings: Settings,
    pub machine: Machine,
    /// Program name -> version string.
    pub versions: BTreeMap<String, String>,
    /// How the two sides were configured, one line each (Markdown).
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub noise: Noise,
    #[serde(default)]
    pub wrk: Vec<WrkRun>,
    #[serde(default)]
    pub bulk: Vec<BulkRun>,
    #[serde(default)]
    pub idle: Vec<IdleRun>,
    #[serde(default)]
    pub failover: Vec<FailoverRun>,
}

#[derive(Debug, Deserialize)]
pub struct Settings {
    pub duration_s: u64,
    pub runs: u64,
    pub conns: u64,
    pub big_count: u64,
    pub idle_conns: u64,
    pub fail_conns: u64,
    pub fail_duration_s: u64,
    pub kill_at_s: u64,
    pub hap_splice: String,
    pub access_log: String,
    pub quiet_max: f64,
}

#[derive(Debug, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: u64,
    pub kernel: String,
    #[serde(default)]
    pub mem_total_mib: u64,
}

#[derive(Debug, Default, Deserialize)]
pub struct Noise {
    /// Measurements thrown away and redone because other programs were busy.
    #[serde(default)]
    pub redone: u64,
    /// Median and worst "other" cores busy over the kept measurements.
    #[serde(default)]
    pub median_other_cores: Option<f64>,
    #[serde(default)]
    pub worst_other_cores: Option<f64>,
}

/// Who a measurement ran against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Straight at the nginx origin: the ceiling of this machine.
    Direct,
    HaproxySquid,
    /// HAProxy in front of Apache Traffic Server: the fast peer.
    HaproxyAts,
    Proxyfleet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WrkMode {
    /// 50 persistent connections.
    Keepalive,
    /// `Connection: close`: one request per connection.
    Close,
}

#[derive(Debug, Deserialize)]
pub struct WrkRun {
    pub side: Side,
    pub mode: WrkMode,
    pub round: u64,
    pub requests: u64,
    pub duration_us: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub errors: u64,
    /// CPU time of every process of the side (none for direct).
    #[serde(default)]
    pub side_cpu_s: f64,
    #[serde(default)]
    pub other_cpu_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BulkMode {
    /// `GET http://origin/big` through the proxy.
    Http,
    /// `CONNECT origin:port`, then `GET /big` inside the tunnel.
    Connect,
}

#[derive(Debug, Deserialize)]
pub struct BulkRun {
    pub side: Side,
    pub mode: BulkMode,
    pub round: u64,
    /// Bytes of the transfers that completed whole.
    pub bytes: u64,
    pub wall_us: u64,
    pub failed: u64,
    #[serde(default)]
    pub side_cpu_s: f64,
}

impl BulkRun {
    /// 10^6 bytes per second.
    pub fn mb_per_s(&self) -> Option<f64> {
        (self.wall_us > 0 && self.bytes > 0).then(|| self.bytes as f64 / self.wall_us as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleMode {
    /// Connected, nothing sent.
    Silent,
    /// A request line and one header sent, the head not finished.
    Partial,
}

/// Proportional set size (KiB), summed over a side's processes by role.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Memory {
    /// The balancer: HAProxy, or `proxyfleet up`.
    pub lb_kib: u64,
    /// The proxies: both Squids, or both `proxyfleet proxy` instances.
    pub proxies_kib: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.lb_kib + self.proxies_kib
    }
}

#[derive(Debug, Deserialize)]
pub struct IdleRun {
    pub side: Side,
    pub mode: IdleMode,
    pub round: u64,
    /// Connections asked for.
    pub conns: u64,
    /// Connections the client opened.
    pub opened: u64,
    /// Connections that reached the proxies (seen established on their ports).
    pub reached: u64,
    pub before: Memory,
    pub after: Memory,
}

impl IdleRun {
    /// Growth of the whole side per 1,000 open connections, in MiB.
    pub fn mib_per_1000(&self) -> Option<f64> {
        self.per_1000(|m| m.total())
    }

    pub fn per_1000(&self, part: impl Fn(&Memory) -> u64) -> Option<f64> {
        (self.opened > 0).then(|| {
            (part(&self.after) as f64 - part(&self.before) as f64) / 1024.0 * 1000.0
                / self.opened as f64
        })
    }
}

/// What `proxyfleet-bench-client churn` printed.
#[derive(Debug, Default, Deserialize)]
pub struct Churn {
    pub requests: u64,
    pub ok: u64,
    pub failed_before_kill: u64,
    pub failed_after_kill: u64,
    #[serde(default)]
    pub failed_before_kinds: BTreeMap<String, u64>,
    #[serde(default)]
    pub failed_after_kinds: BTreeMap<String, u64>,
    #[serde(default)]
    pub last_failure_after_kill_ms: Option<f64>,
    pub stalled: u64,
    pub stall_ms: u64,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    #[serde(default)]
    pub max_ms: Option<f64>,
    #[serde(default)]
    pub kill_error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FailoverRun {
    pub side: Side,
    pub round: u64,
    /// Which proxy was killed, e.g. `squid1 127.32.1.11`.
    pub victim: String,
    pub client: Churn,
    /// From the kill to the balancer taking the proxy out (its log).
    pub detect_s: Option<f64>,
    /// From the kill to a replacement proxy in service (proxyfleet's group).
    #[serde(default)]
    pub replacement_in_service_s: Option<f64>,
    /// From the kill to the balancer sending new connections to the replacement (healthy).
    #[serde(default)]
    pub replacement_serving_s: Option<f64>,
    /// What brought the tier back to two proxies: `group` (proxyfleet's own replacement) or
    /// `harness` (the benchmark restarted the Squid; HAProxy + Squid has no replacement).
    pub restored_by: String,
}
