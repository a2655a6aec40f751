//! The tier's scaling activities, as the cloud's activity history shows them and `up`'s group
//! controller records them: one per launch, termination, adoption and desired-capacity
//! change, each with its cause, a status and its start and end — derived from the store's
//! change log (a launch is InProgress until its instance serves, Failed if it never does; a
//! termination waits for its connections to drain until its instance is Terminated).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use proxyfleet_state::report::{Activity, ActivityStatus};
use proxyfleet_state::{Cause, Change, Lifecycle, UnixMillis};

/// How many activities are kept (the oldest go first).
pub const KEPT: usize = 10_000;

/// What an activity needs to know of an instance.
struct Known {
    group: String,
    zone: String,
    address: IpAddr,
    /// Its launch activity while that is in progress.
    launch: Option<i64>,
    /// Its termination activity while that is in progress.
    termination: Option<i64>,
    lifecycle: Lifecycle,
}

#[derive(Default)]
pub struct Scaling {
    activities: VecDeque<Activity>,
    next_id: i64,
    instances: HashMap<String, Known>,
    desired: HashMap<String, u32>,
    /// Launches that failed in a row, by group (the controller's back-off counts the same).
    failures: HashMap<String, u32>,
}

fn seconds(t: UnixMillis) -> f64 {
    t.as_secs_f64()
}

impl Scaling {
    /// Takes one change of the log, in log order.
    pub fn take(&mut self, change: &Change) {
        match change {
            Change::DefineGroup { group } => {
                self.desired.insert(group.name.clone(), group.desired);
            }
            Change::SetDesired {
                group,
                desired,
                cause,
                at,
            } => {
                let old = self.desired.insert(group.clone(), *desired);
                if let Some(old) = old.filter(|old| old != desired) {
                    let at = at.map_or(0.0, seconds);
                    self.push(
                        group,
                        format!("Setting desired capacity from {old} to {desired}"),
                        cause.activity_text(),
                        ActivityStatus::Successful,
                        at,
                        Some(at),
                    );
                }
            }
            Change::SetRefresh {
                group,
                refresh,
                outcome,
                at,
            } => {
                let status = if refresh.is_some() || outcome.starts_with("successful") {
                    ActivityStatus::Successful
                } else if outcome.starts_with("cancelled") {
                    ActivityStatus::Cancelled
                } else {
                    ActivityStatus::Failed
                };
                let description = match refresh {
                    Some(_) => "Starting an instance refresh",
                    None => "Ending the instance refresh",
                };
                let at = seconds(*at);
                self.push(
                    group,
                    description.to_string(),
                    outcome.clone(),
                    status,
                    at,
                    Some(at),
                );
            }
            Change::StackApplied { group, summary, at } => {
                let at = seconds(*at);
                self.push(
                    group,
                    "Applying a changed stack".to_string(),
                    format!("an operator ran proxyfleet apply: {summary}"),
                    ActivityStatus::Successful,
                    at,
                    Some(at),
                );
            }
            Change::HoldReplacements { group, held, at } => {
                let (description, cause, status) = match held {
                    Some(why) => (
                        "Holding replacements for load balancer health",
                        why.clone(),
                        ActivityStatus::Failed,
                    ),
                    None => (
                        "Resuming replacements for load balancer health",
                        "no new instance fails the load balancer's health checks any more"
                            .to_string(),
                        ActivityStatus::Successful,
                    ),
                };
                let at = seconds(*at);
                self.push(group, description.to_string(), cause, status, at, Some(at));
            }
            Change::CreateInstance {
                id,
                group,
                zone,
                address,
                cause,
                at,
                ..
            } => {
                let launch = self.push(
                    group,
                    format!("Launching a new instance: {id} ({address}, zone {zone})"),
                    cause.activity_text(),
                    ActivityStatus::InProgress,
                    seconds(*at),
                    None,
                );
                self.instances.insert(
                    id.clone(),
                    Known {
                        group: group.clone(),
                        zone: zone.clone(),
                        address: *address,
                        launch: Some(launch),
                        termination: None,
                        lifecycle: Lifecycle::Pending,
                    },
                );
            }
            Change::ReportProcess {
                instance,
                process,
                adopted: true,
                ..
            } => {
                let Some(k) = self.instances.get(instance) else {
                    return;
                };
                let (group, description) = (
                    k.group.clone(),
                    format!(
                        "Adopting instance {instance} ({}, zone {}, pid {})",
                        k.address, k.zone, process.pid
                    ),
                );
                let now = seconds(UnixMillis::now());
                self.push(
                    &group,
                    description,
                    Cause::Adopted.activity_text(),
                    ActivityStatus::Successful,
                    now,
                    Some(now),
                );
            }
            Change::ReportLifecycle {
                instance,
                lifecycle,
                cause,
                at,
            } => self.lifecycle(instance, *lifecycle, cause.as_ref(), *at),
            Change::ForgetInstance { instance } => {
                self.instances.remove(instance);
            }
            _ => {}
        }
    }

    fn lifecycle(
        &mut self,
        instance: &str,
        lifecycle: Lifecycle,
        cause: Option<&Cause>,
        at: UnixMillis,
    ) {
        let Some(k) = self.instances.get_mut(instance) else {
            return;
        };
        if lifecycle <= k.lifecycle {
            return;
        }
        k.lifecycle = lifecycle;
        let launch = k.launch.take();
        let termination = k.termination;
        let (group, zone, address) = (k.group.clone(), k.zone.clone(), k.address);
        let at = seconds(at);
        match lifecycle {
            Lifecycle::InService => {
                self.failures.insert(group.clone(), 0);
                self.finish(launch, ActivityStatus::Successful, at);
            }
            Lifecycle::Terminating | Lifecycle::Terminated => {
                // A launch that never served failed; the next one waits for the back-off.
                if launch.is_some() {
                    let failures = self.failures.entry(group.clone()).or_default();
                    *failures += 1;
                    let backoff = proxyfleet_group::instance::backoff_for(*failures);
                    let why = cause.map(|c| format!("{c}")).unwrap_or_default();
                    self.fail_launch(launch, instance, &why, at, backoff);
                }
                if lifecycle == Lifecycle::Terminating {
                    let id = self.push(
                        &group,
                        format!("Terminating instance {instance} ({address}, zone {zone})"),
                        cause.map(Cause::activity_text).unwrap_or_default(),
                        ActivityStatus::WaitingForConnectionDraining,
                        at,
                        None,
                    );
                    if let Some(k) = self.instances.get_mut(instance) {
                        k.termination = Some(id);
                    }
                } else {
                    self.finish(termination, ActivityStatus::Successful, at);
                    if let Some(k) = self.instances.get_mut(instance) {
                        k.termination = None;
                    }
                }
            }
            Lifecycle::Pending => {}
        }
    }

    fn push(
        &mut self,
        group: &str,
        description: String,
        cause: String,
        status: ActivityStatus,
        start: f64,
        end: Option<f64>,
    ) -> i64 {
        self.next_id += 1;
        if self.activities.len() == KEPT {
            self.activities.pop_front();
        }
        self.activities.push_back(Activity {
            id: self.next_id,
            group: group.to_string(),
            description,
            cause,
            status,
            start,
            end,
        });
        self.next_id
    }

    /// Ends activity `id` (if still kept) with `status`.
    fn finish(&mut self, id: Option<i64>, status: ActivityStatus, at: f64) {
        let Some(id) = id else { return };
        if let Some(a) = self.activities.iter_mut().rev().find(|a| a.id == id) {
            a.status = status;
            a.end = Some(at);
        }
    }

    /// Ends launch activity `id` as Failed, saying why, after how long, and when the next
    /// attempt comes (`up`'s words).
    fn fail_launch(
        &mut self,
        id: Option<i64>,
        instance: &str,
        why: &str,
        at: f64,
        backoff: std::time::Duration,
    ) {
        let Some(id) = id else { return };
        if let Some(a) = self.activities.iter_mut().rev().find(|a| a.id == id) {
            a.status = ActivityStatus::Failed;
            a.end = Some(at);
            a.description = format!(
                "Launching a new instance failed: {instance}: {why} (after {:.1} s); next attempt in {:.0} s",
                (at - a.start).max(0.0),
                backoff.as_secs_f64()
            );
        }
    }

    /// The newest `limit` activities (of `group` only, if given), newest first.
    pub fn newest(&self, group: Option<&str>, limit: usize) -> Vec<Activity> {
        self.activities
            .iter()
            .rev()
            .filter(|a| group.is_none_or(|g| a.group == g))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxyfleet_state::{Group, Process};

    fn create(id: &str, at: u64) -> Change {
        Change::CreateInstance {
            id: id.into(),
            group: "g".into(),
            zone: "a".into(),
            address: "127.10.1.11".parse().unwrap(),
            port: 3128,
            cause: Cause::Capacity {
                desired: 1,
                running: 0,
            },
            at: UnixMillis(at),
        }
    }

    fn life(id: &str, lifecycle: Lifecycle, cause: Option<Cause>, at: u64) -> Change {
        Change::ReportLifecycle {
            instance: id.into(),
            lifecycle,
            cause,
            at: UnixMillis(at),
        }
    }

    #[test]
    fn launches_terminations_adoptions_and_capacity_changes_as_the_cloud_shows_them() {
        let mut s = Scaling::default();
        s.take(&Change::DefineGroup {
            group: Group::new("g", 1, 4, 1),
        });
        s.take(&create("i-1", 1_000));
        assert_eq!(s.newest(None, 10)[0].status, ActivityStatus::InProgress);
        s.take(&life("i-1", Lifecycle::InService, None, 2_000));
        let launch = &s.newest(None, 10)[0];
        assert_eq!(
            (launch.status, launch.end),
            (ActivityStatus::Successful, Some(2.0))
        );
        assert_eq!(
            launch.description,
            "Launching a new instance: i-1 (127.10.1.11, zone a)"
        );
        s.take(&Change::ReportProcess {
            instance: "i-1".into(),
            process: Process {
                pid: 42,
                start_ticks: 1,
            },
            capacity: None,
            protected: false,
            adopted: true,
        });
        assert_eq!(
            s.newest(None, 1)[0].description,
            "Adopting instance i-1 (127.10.1.11, zone a, pid 42)"
        );
        s.take(&Change::SetDesired {
            group: "g".into(),
            desired: 3,
            cause: Cause::User(proxyfleet_state::UserRequest::Scale),
            at: Some(UnixMillis(3_000)),
        });
        assert_eq!(
            s.newest(None, 1)[0].description,
            "Setting desired capacity from 1 to 3"
        );
        s.take(&life(
            "i-1",
            Lifecycle::Terminating,
            Some(Cause::Shutdown),
            4_000,
        ));
        assert_eq!(
            s.newest(None, 1)[0].status,
            ActivityStatus::WaitingForConnectionDraining
        );
        s.take(&life("i-1", Lifecycle::Terminated, None, 5_000));
        let t = &s.newest(None, 1)[0];
        assert_eq!(
            (t.description.as_str(), t.status, t.end),
            (
                "Terminating instance i-1 (127.10.1.11, zone a)",
                ActivityStatus::Successful,
                Some(5.0)
            )
        );
        assert_eq!(s.newest(Some("other"), 10).len(), 0);
    }

    #[test]
    fn a_launch_that_never_serves_failed() {
        let mut s = Scaling::default();
        s.take(&create("i-2", 1_000));
        s.take(&life(
            "i-2",
            Lifecycle::Terminating,
            Some(Cause::ProcessExited {
                status: "exit status: 3".into(),
            }),
            1_500,
        ));
        let all = s.newest(None, 10);
        let launch = all
            .iter()
            .find(|a| a.description.starts_with("Launching"))
            .unwrap();
        assert_eq!(launch.status, ActivityStatus::Failed);
        assert_eq!(
            launch.description,
            "Launching a new instance failed: i-2: process exit status: 3 (after 0.5 s); next attempt in 1 s"
        );
    }
}
