//! Every type survives serde (JSON, what both stores keep) unchanged.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cause::{Cause, UserRequest};
use crate::change::{Change, Fence, Kind, LeadershipEnd};
use crate::fixtures::{every_cause, every_change};
use crate::model::{Revision, Snapshot, TargetHealth, Term};
use crate::time::UnixMillis;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) {
    let json = serde_json::to_string(v).expect("serializes");
    let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(&back, v, "{json}");
}

/// Fails to compile when a variant is added, so the fixtures cannot silently miss one.
fn change_index(c: &Change) -> usize {
    match c {
        Change::RegisterHost { .. } => 0,
        Change::Heartbeat { .. } => 1,
        Change::ReportProcess { .. } => 2,
        Change::ReportLifecycle { .. } => 3,
        Change::ReportInstanceHealth { .. } => 4,
        Change::ReportTargetHealth { .. } => 5,
        Change::DefineGroup { .. } => 6,
        Change::SetDesired { .. } => 7,
        Change::CreateInstance { .. } => 8,
        Change::AssignInstance { .. } => 9,
        Change::ForgetInstance { .. } => 10,
        Change::RegisterTarget { .. } => 11,
        Change::DrainTarget { .. } => 12,
        Change::RemoveTarget { .. } => 13,
        Change::LeaderElected { .. } => 14,
        Change::LeadershipEnded { .. } => 15,
        Change::FileRequest { .. } => 16,
        Change::CloseRequest { .. } => 17,
        Change::ReportTargetFlows { .. } => 18,
        Change::ReportNodes { .. } => 19,
        Change::HoldReplacements { .. } => 20,
        Change::StackApplied { .. } => 21,
        Change::SetRefresh { .. } => 22,
    }
}
const CHANGE_VARIANTS: usize = 23;

fn cause_index(c: &Cause) -> usize {
    match c {
        Cause::User(UserRequest::Scale) => 0,
        Cause::User(UserRequest::Terminate { .. }) => 1,
        Cause::User(UserRequest::MarkUnhealthy) => 2,
        Cause::Capacity { .. } => 3,
        Cause::TargetTracking { .. } => 4,
        Cause::LoadBalancerHealth { .. } => 5,
        Cause::ProcessExited { .. } => 6,
        Cause::LaunchFailed { .. } => 7,
        Cause::HostLost { .. } => 8,
        Cause::Adopted => 9,
        Cause::Lost { .. } => 10,
        Cause::RestartedWhileTerminating => 11,
        Cause::ControllerStopping => 12,
        Cause::Shutdown => 13,
        Cause::Rebalance { .. } => 14,
        Cause::InstanceRefresh => 15,
    }
}
const CAUSE_VARIANTS: usize = 16;

#[test]
fn every_change_round_trips() {
    let changes = every_change();
    let mut seen: Vec<usize> = changes.iter().map(change_index).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..CHANGE_VARIANTS).collect::<Vec<_>>());
    for c in &changes {
        round_trip(c);
    }
}

#[test]
fn every_cause_round_trips() {
    let causes = every_cause();
    let mut seen: Vec<usize> = causes.iter().map(cause_index).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..CAUSE_VARIANTS).collect::<Vec<_>>());
    for c in &causes {
        round_trip(c);
    }
}

#[test]
fn a_full_snapshot_and_its_parts_round_trip() {
    let mut s = Snapshot::default();
    for c in every_change() {
        s.apply(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    assert!(!s.hosts.is_empty() && !s.groups.is_empty() && !s.instances.is_empty());
    assert!(!s.targets.is_empty() && s.leadership.is_some());
    round_trip(&s);
    for h in s.hosts.values() {
        round_trip(h);
    }
    for g in s.groups.values() {
        round_trip(g);
    }
    for i in s.instances.values() {
        round_trip(i);
        round_trip(&i.lifecycle);
        round_trip(&i.health);
        round_trip(&i.process);
    }
    for t in s.targets.values().flat_map(|t| t.values()) {
        round_trip(t);
        for v in t.nodes.values() {
            round_trip(v);
        }
    }
    round_trip(&s.leadership);
    for h in [
        TargetHealth::Initial,
        TargetHealth::Healthy,
        TargetHealth::Unhealthy,
        TargetHealth::Draining,
        TargetHealth::Unused,
    ] {
        round_trip(&h);
    }
    for k in Kind::ALL {
        round_trip(k);
    }
    round_trip(&Fence::Unfenced);
    round_trip(&Fence::Leader(Term(7)));
    round_trip(&LeadershipEnd::Resigned);
    round_trip(&Revision(42));
    round_trip(&UnixMillis(1_700_000_000_000));
}

#[test]
fn ids_and_times_are_plain_json() {
    // Another process (or an operator with sqlite3 or etcdctl) reads these without our types.
    assert_eq!(serde_json::to_string(&Revision(3)).unwrap(), "3");
    assert_eq!(serde_json::to_string(&Term(4)).unwrap(), "4");
    assert_eq!(serde_json::to_string(&UnixMillis(5)).unwrap(), "5");
    let mut s = Snapshot::default();
    for c in every_change() {
        s.apply(&c).unwrap();
    }
    let json = serde_json::to_value(&s).unwrap();
    assert!(
        json["targets"]["proxies"]["127.10.1.11:3128"].is_object(),
        "{json}"
    );
}
