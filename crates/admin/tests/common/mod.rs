//! A fake `Control` with fixed data that records every call, and the admin API served over
//! it on a real socket.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use proxyfleet_admin::client::{self, Response};
use proxyfleet_admin::{serve_with, AdminHandle, Control, ControlError, Options, TOKEN_FILE};
use proxyfleet_state::report::{Activity, ActivityStatus, GroupStatus, InstanceStatus as Instance};
use proxyfleet_state::report::{
    BalancerStatus, LbStatus, NodeStatus, TargetHealthStatus, TargetStatus,
};
use proxyfleet_state::TargetHealth as Health;
use proxyfleet_state::{InstanceHealth, Lifecycle};
use serde_json::Value;
use tokio::sync::Notify;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A secret in the fake stack's launch template: no answer may contain it.
pub const SECRET: &str = "hunter2-db-password";

/// The fake stack file: a launch template whose environment holds [`SECRET`].
pub const STACK_TEXT: &str = "# the stack\n\
launch_templates:\n\
\x20 proxy:\n\
\x20   command: [proxyfleet, proxy]\n\
\x20   environment:\n\
\x20     DB_PASSWORD: hunter2-db-password   # from the vault\n\
\x20     REGION: \"eu-west-1\"\n";

pub struct Fake {
    calls: Mutex<Vec<String>>,
    stop: Arc<Notify>,
    /// The first target's new-flow total (the others' are fixed).
    flows: AtomicU64,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node_health(node: &str, health: Health, reason: &str) -> TargetHealthStatus {
    TargetHealthStatus {
        node: node.into(),
        health,
        reason: reason.into(),
        since: proxyfleet_state::UnixMillis::now().before(Duration::from_secs(12)),
    }
}

fn target(
    id: &str,
    zone: &str,
    draining: bool,
    health: Vec<TargetHealthStatus>,
    new_flows: u64,
) -> TargetStatus {
    TargetStatus {
        group: "proxies-tg".into(),
        id: id.into(),
        zone: zone.into(),
        draining,
        health,
        active_flows: 3,
        new_flows,
        bytes_to_target: 4096,
        bytes_to_client: 65536,
        connect_failures: 1,
        health_transitions: 2,
        max_flows: Some(8190),
        skipped_full: 5,
        checks_not_run: 0,
    }
}

fn instance(id: &str, zone: &str, address: &str, lifecycle: Lifecycle) -> Instance {
    Instance {
        id: id.into(),
        group: "proxies".into(),
        zone: zone.into(),
        address: ip(address),
        port: 3128,
        pid: 4242,
        start_ticks: 1,
        lifecycle,
        health: InstanceHealth::Healthy,
        reason: None,
        launched_at: proxyfleet_state::report::now() - 60.0,
        dir: format!("/state/instances/{id}"),
        protected: true,
    }
}

impl Control for Fake {
    fn stack_text(&self) -> String {
        STACK_TEXT.into()
    }

    fn balancer(&self) -> BalancerStatus {
        let node = |zone: &str, addr: &str| NodeStatus {
            zone: zone.into(),
            address: ip(addr),
            listeners: vec![(3128, "proxies-tg".into())],
            accepted: 10,
            active: 2,
            refused: 1,
            failed: 0,
            full: 4,
        };
        BalancerStatus {
            load_balancers: vec![LbStatus {
                name: "proxy-lb".into(),
                cross_zone: false,
                nodes: vec![node("a", "127.10.1.10"), node("c", "127.10.2.10")],
            }],
            targets: vec![
                target(
                    "127.10.1.11:3128",
                    "a",
                    false,
                    vec![
                        node_health(
                            "proxy-lb/a",
                            Health::Healthy,
                            "2 consecutive health checks passed",
                        ),
                        node_health(
                            "proxy-lb/c",
                            Health::Healthy,
                            "2 consecutive health checks passed",
                        ),
                    ],
                    self.flows.load(Ordering::Relaxed),
                ),
                target(
                    "127.10.2.11:3128",
                    "c",
                    false,
                    vec![
                        node_health("proxy-lb/a", Health::Healthy, "ok"),
                        node_health(
                            "proxy-lb/c",
                            Health::Unhealthy,
                            "2 consecutive health checks failed: \"timed out\" after 500ms\n",
                        ),
                    ],
                    120,
                ),
                target(
                    "127.10.1.12:3128",
                    "a",
                    true,
                    vec![node_health(
                        "proxy-lb/a",
                        Health::Draining,
                        "deregistered: draining",
                    )],
                    120,
                ),
            ],
        }
    }

    fn groups(&self) -> Vec<GroupStatus> {
        vec![
            GroupStatus {
                name: "proxies".into(),
                min: 1,
                max: 4,
                desired: 2,
                zones: vec!["a".into(), "c".into()],
                instances: vec![
                    instance("i-1", "a", "127.10.1.11", Lifecycle::InService),
                    instance("i-2", "c", "127.10.2.11", Lifecycle::Pending),
                    instance("i-0", "a", "127.10.1.12", Lifecycle::Terminated),
                ],
                backoff_seconds: None,
                replacements_held: None,
                refresh: None,
            },
            GroupStatus {
                name: "broken".into(),
                min: 0,
                max: 1,
                desired: 1,
                zones: vec!["a".into()],
                instances: vec![],
                backoff_seconds: Some(4.0),
                replacements_held: None,
                refresh: None,
            },
        ]
    }

    fn activities(&self, group: Option<&str>, limit: usize) -> Vec<Activity> {
        self.record(format!("activities {group:?} {limit}"));
        let all = [
            (3, "proxies", ActivityStatus::InProgress, None),
            (2, "broken", ActivityStatus::Failed, Some(20.0)),
            (1, "proxies", ActivityStatus::Successful, Some(11.0)),
        ];
        all.iter()
            .filter(|(_, g, _, _)| group.is_none_or(|want| want == *g))
            .take(limit)
            .map(|(id, g, status, end)| Activity {
                id: *id,
                group: g.to_string(),
                description: format!("Launching a new instance: i-{id}"),
                cause: "the desired capacity was raised".into(),
                status: *status,
                start: 10.0,
                end: *end,
            })
            .collect()
    }

    fn scale(&self, group: &str, desired: u32) -> Result<(), ControlError> {
        self.record(format!("scale {group} {desired}"));
        match group {
            "proxies" if desired <= 4 => Ok(()),
            "proxies" => Err(ControlError::Refused(format!(
                "group proxies: desired {desired} is outside min 1 .. max 4"
            ))),
            _ => Err(ControlError::NotFound(format!("no group '{group}'"))),
        }
    }

    fn terminate(&self, instance: &str, decrement_desired: bool) -> Result<(), ControlError> {
        self.record(format!("terminate {instance} {decrement_desired}"));
        if instance.starts_with("i-") {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!(
                "no live instance '{instance}'"
            )))
        }
    }

    fn set_instance_health(&self, instance: &str, healthy: bool) -> Result<(), ControlError> {
        self.record(format!("health {instance} {healthy}"));
        Ok(())
    }

    fn shutdown(&self) {
        self.record("shutdown".into());
        self.stop.notify_one();
    }
}

impl Fake {
    /// `stop` is notified when the API asks `up` to stop.
    pub fn new(stop: Arc<Notify>) -> Fake {
        Fake {
            calls: Mutex::new(Vec::new()),
            stop,
            flows: AtomicU64::new(120),
        }
    }

    /// `n` more flows to the first target.
    pub fn add_flows(&self, n: u64) {
        self.flows.fetch_add(n, Ordering::Relaxed);
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

pub struct Running {
    pub fake: Arc<Fake>,
    pub admin: AdminHandle,
    pub dir: tempfile::TempDir,
    pub token: String,
}

pub async fn start() -> Running {
    start_with(Options::default()).await
}

pub async fn start_with(options: Options) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(Notify::new());
    let fake = Arc::new(Fake::new(stop.clone()));
    let admin = serve_with(fake.clone(), dir.path(), options, async move {
        stop.notified().await
    })
    .await
    .unwrap();
    let token = std::fs::read_to_string(dir.path().join(TOKEN_FILE))
        .unwrap()
        .trim()
        .to_string();
    Running {
        fake,
        admin,
        dir,
        token,
    }
}

impl Running {
    pub async fn get(&self, path: &str) -> Response {
        client::request(self.admin.addr, Method::GET, path, None, None, TIMEOUT)
            .await
            .unwrap()
    }

    pub async fn get_with_token(&self, path: &str) -> Response {
        client::request(
            self.admin.addr,
            Method::GET,
            path,
            Some(&self.token),
            None,
            TIMEOUT,
        )
        .await
        .unwrap()
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        client::request(
            self.admin.addr,
            Method::POST,
            path,
            token,
            body.as_ref(),
            TIMEOUT,
        )
        .await
        .unwrap()
    }

    pub async fn post_with_token(&self, path: &str, body: Option<Value>) -> Response {
        let token = self.token.clone();
        self.post(path, Some(&token), body).await
    }
}

pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}
