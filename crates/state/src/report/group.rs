//! A group's report: its instances as shown (and as `up`'s group controller keeps them in its
//! SQLite file), and its activities. Lifecycle and health are the state's own
//! ([`Lifecycle`], [`InstanceHealth`]).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cause::Cause;
use crate::model::{InstanceHealth, Lifecycle};

/// One instance, as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub group: String,
    pub zone: String,
    pub address: IpAddr,
    pub port: u16,
    /// 0 until the process exists.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (/proc/PID/stat field 22): with
    /// the pid, it tells a surviving instance from an unrelated process that reused the pid.
    pub start_ticks: u64,
    pub lifecycle: Lifecycle,
    pub health: InstanceHealth,
    /// Why it is unhealthy (set together with `health`: see [`InstanceStatus::mark_unhealthy`]).
    /// Shown, and serialized, as its text ("" for none).
    #[serde(serialize_with = "reason_text")]
    pub reason: Option<Cause>,
    /// Seconds since the Unix epoch.
    pub launched_at: f64,
    /// The instance's own directory (rendered files, logs).
    pub dir: String,
    /// Whether a kernel firewall enforces its security groups.
    pub protected: bool,
}

impl InstanceStatus {
    /// Unhealthy, for `cause`.
    pub fn mark_unhealthy(&mut self, cause: Cause) {
        self.health = InstanceHealth::Unhealthy;
        self.reason = Some(cause);
    }

    pub fn mark_healthy(&mut self) {
        self.health = InstanceHealth::Healthy;
        self.reason = None;
    }

    /// The cause of the group's unhealthy verdict; `None` while healthy.
    pub fn unhealthy_cause(&self) -> Option<&Cause> {
        self.reason
            .as_ref()
            .filter(|_| self.health == InstanceHealth::Unhealthy)
    }

    /// `reason` as people read it ("" for none).
    pub fn reason_text(&self) -> String {
        self.reason
            .as_ref()
            .map(Cause::to_string)
            .unwrap_or_default()
    }
}

fn reason_text<S: serde::Serializer>(reason: &Option<Cause>, s: S) -> Result<S::Ok, S::Error> {
    match reason {
        Some(cause) => s.collect_str(cause),
        None => s.serialize_str(""),
    }
}

/// The status of an activity (the cloud's activity statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActivityStatus {
    InProgress,
    WaitingForConnectionDraining,
    Successful,
    Failed,
    Cancelled,
}

impl ActivityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityStatus::InProgress => "InProgress",
            ActivityStatus::WaitingForConnectionDraining => "WaitingForConnectionDraining",
            ActivityStatus::Successful => "Successful",
            ActivityStatus::Failed => "Failed",
            ActivityStatus::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ActivityStatus> {
        Some(match s {
            "InProgress" => ActivityStatus::InProgress,
            "WaitingForConnectionDraining" => ActivityStatus::WaitingForConnectionDraining,
            "Successful" => ActivityStatus::Successful,
            "Failed" => ActivityStatus::Failed,
            "Cancelled" => ActivityStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One launch, termination or failure, with why it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub id: i64,
    pub group: String,
    /// e.g. "Launching a new instance: i-0a1b2c3d (127.10.1.12, zone a)".
    pub description: String,
    /// e.g. "an instance was taken out of service in response to a load balancer health
    /// check failure".
    pub cause: String,
    pub status: ActivityStatus,
    /// Seconds since the Unix epoch.
    pub start: f64,
    pub end: Option<f64>,
}

/// A group as the status API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub zones: Vec<String>,
    pub instances: Vec<InstanceStatus>,
    /// Set while launches back off after failures: seconds until the next attempt.
    pub backoff_seconds: Option<f64>,
    /// Set while replacements for the load balancer's verdict are held (the churn stop):
    /// why, in the activity history's words.
    pub replacements_held: Option<String>,
    /// Set while an instance refresh runs: its progress.
    pub refresh: Option<String>,
}

/// Seconds since the Unix epoch, the reports' time.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
