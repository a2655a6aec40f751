//! Target health: the checks (a small trait with TCP and HTTP implementations) and the state
//! machine each node keeps per target, with thresholds and a reason for every transition.

mod http;
mod tcp;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

pub use http::HttpCheck;
pub use tcp::TcpCheck;

use crate::spec::{HealthCheckProtocol, HealthCheckSpec};

/// One kind of active health check.
///
/// Contract: `probe` connects to `target` from `source` (the node's own address), decides
/// within `timeout`, and closes what it opened. `Ok` means healthy; `Err` says why not, with a
/// short reason for the transition log ("connect refused", "timed out after 500ms", "status
/// 503") — and whether it was the target's failure or this checker's own
/// ([`ProbeFailure::Local`]: no descriptor, no buffer), which is not counted.
pub trait HealthCheck: Send + Sync {
    fn probe(&self, source: IpAddr, target: SocketAddr, timeout: Duration) -> ProbeFuture<'_>;
}

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ProbeFailure>> + Send + 'a>>;

/// Why a probe did not find its target healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The target failed the check: counts toward its unhealthy threshold.
    Target(String),
    /// The checker could not run the check at all (EMFILE, ENOBUFS, ...): says nothing about
    /// the target, so the target's state stays as it is.
    Local(String),
}

impl From<std::io::Error> for ProbeFailure {
    fn from(e: std::io::Error) -> Self {
        if crate::connect::is_local_failure(&e) {
            ProbeFailure::Local(e.to_string())
        } else {
            ProbeFailure::Target(e.to_string())
        }
    }
}

/// Runs one probe attempt, failing it with "timed out after ..." when it takes too long.
async fn within(
    timeout: Duration,
    attempt: impl Future<Output = Result<(), ProbeFailure>>,
) -> Result<(), ProbeFailure> {
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(ProbeFailure::Target(format!("timed out after {timeout:?}"))))
}

/// The check a target group's spec asks for.
pub fn from_spec(spec: &HealthCheckSpec, proxy_protocol_v2: bool) -> Box<dyn HealthCheck> {
    match &spec.protocol {
        HealthCheckProtocol::Tcp => Box::new(TcpCheck { proxy_protocol_v2 }),
        HealthCheckProtocol::Http { path, matcher } => Box::new(HttpCheck {
            path: path.clone(),
            matcher: *matcher,
            proxy_protocol_v2,
        }),
    }
}

/// A target's health as one node sees it (the cloud's target states): the shared state's
/// own, so what a node reports needs no translation.
pub use proxyfleet_state::TargetHealth as Health;

/// A change of health, for logs, counters and the status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub reason: String,
}

/// One node's view of one target.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub health: Health,
    pub reason: String,
    pub since: Instant,
    successes: u32,
    failures: u32,
}

impl HealthState {
    pub fn new(health: Health, reason: &str) -> Self {
        HealthState {
            health,
            reason: reason.to_string(),
            since: Instant::now(),
            successes: 0,
            failures: 0,
        }
    }

    fn go(&mut self, to: Health, reason: String) -> Option<Transition> {
        if self.health == to {
            return None;
        }
        let t = Transition {
            from: self.health,
            to,
            reason: reason.clone(),
        };
        self.health = to;
        self.reason = reason;
        self.since = Instant::now();
        Some(t)
    }

    /// Counts one active check result against the thresholds.
    pub fn on_probe(
        &mut self,
        result: Result<(), String>,
        spec: &HealthCheckSpec,
    ) -> Option<Transition> {
        if matches!(self.health, Health::Draining | Health::Unused) {
            return None;
        }
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.health != Health::Healthy && self.successes >= spec.healthy_threshold {
                    let reason = format!("{} consecutive health checks passed", self.successes);
                    return self.go(Health::Healthy, reason);
                }
            }
            Err(why) => {
                self.successes = 0;
                self.failures += 1;
                if self.health != Health::Unhealthy && self.failures >= spec.unhealthy_threshold {
                    let reason =
                        format!("{} consecutive health checks failed: {why}", self.failures);
                    return self.go(Health::Unhealthy, reason);
                }
            }
        }
        None
    }

    /// A connect that failed on the data path: unhealthy at once (passive health check).
    pub fn on_connect_failure(&mut self, why: &str) -> Option<Transition> {
        if matches!(
            self.health,
            Health::Draining | Health::Unused | Health::Unhealthy
        ) {
            return None;
        }
        self.successes = 0;
        self.failures = 0;
        self.go(
            Health::Unhealthy,
            format!("connection from the data path failed: {why}"),
        )
    }

    pub fn drain(&mut self) -> Option<Transition> {
        self.go(Health::Draining, "deregistered: draining".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_transitions_and_say_why() {
        let spec = HealthCheckSpec {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            ..Default::default()
        };
        let mut s = HealthState::new(Health::Initial, "registered");
        assert_eq!(s.on_probe(Ok(()), &spec), None);
        let t = s.on_probe(Ok(()), &spec).unwrap();
        assert_eq!((t.from, t.to), (Health::Initial, Health::Healthy));
        assert_eq!(s.on_probe(Err("refused".into()), &spec), None);
        assert_eq!(s.on_probe(Err("refused".into()), &spec), None);
        let t = s.on_probe(Err("refused".into()), &spec).unwrap();
        assert_eq!(t.to, Health::Unhealthy);
        assert_eq!(t.reason, "3 consecutive health checks failed: refused");
        assert_eq!(s.on_connect_failure("refused"), None, "already unhealthy");
        s.on_probe(Ok(()), &spec);
        assert_eq!(s.on_probe(Ok(()), &spec).unwrap().to, Health::Healthy);
        assert_eq!(
            s.on_connect_failure("connection refused").unwrap().to,
            Health::Unhealthy
        );
        assert_eq!(s.drain().unwrap().to, Health::Draining);
        assert_eq!(
            s.on_probe(Ok(()), &spec),
            None,
            "a draining target stays draining"
        );
    }
}
