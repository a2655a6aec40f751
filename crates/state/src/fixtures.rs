//! Sample state for the tests: one of every change, in an order that applies.

use std::net::{IpAddr, SocketAddr};

use crate::cause::{Cause, UserRequest};
use crate::change::{Change, LeadershipEnd};
use crate::model::{
    Group, Host, InstanceHealth, Leadership, Lifecycle, Process, TargetHealth, Term,
};
use crate::time::UnixMillis;

pub(crate) const T0: UnixMillis = UnixMillis(1_700_000_000_000);

pub(crate) fn at(ms: u64) -> UnixMillis {
    UnixMillis(T0.0 + ms)
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

pub(crate) fn target(s: &str) -> SocketAddr {
    s.parse().expect("an address:port")
}

pub(crate) fn host(id: &str, zone: &str, address: &str) -> Change {
    Change::RegisterHost {
        host: Host {
            id: id.to_string(),
            address: ip(address),
            zone: zone.to_string(),
            last_heartbeat: T0,
            nodes: Default::default(),
        },
    }
}

pub(crate) fn group(name: &str, min: u32, desired: u32, max: u32) -> Change {
    Change::DefineGroup {
        group: Group::new(name, min, max, desired),
    }
}

pub(crate) fn create(id: &str, zone: &str, address: &str) -> Change {
    Change::CreateInstance {
        id: id.to_string(),
        group: "proxies".to_string(),
        zone: zone.to_string(),
        address: ip(address),
        port: 3128,
        cause: Cause::Capacity {
            desired: 2,
            running: 0,
        },
        at: T0,
    }
}

pub(crate) fn desired(n: u32) -> Change {
    Change::SetDesired {
        group: "proxies".to_string(),
        desired: n,
        cause: Cause::User(UserRequest::Scale),
        at: None,
    }
}

pub(crate) fn heartbeat(host: &str, ms: u64) -> Change {
    Change::Heartbeat {
        host: host.to_string(),
        at: at(ms),
    }
}

fn leadership(term: u64) -> Leadership {
    Leadership {
        leader: format!("host-{term}"),
        term: Term(term),
        ttl_ms: 1000,
        elected_at: at(term),
    }
}

/// Every variant of [`Change`], applicable in this order to an empty snapshot.
pub(crate) fn every_change() -> Vec<Change> {
    let t1 = target("127.10.1.11:3128");
    let t2 = target("127.10.1.12:3128");
    vec![
        Change::LeaderElected {
            leadership: leadership(1),
        },
        Change::LeadershipEnded {
            term: Term(1),
            end: LeadershipEnd::LeaseExpired,
        },
        Change::LeaderElected {
            leadership: leadership(2),
        },
        host("host-a", "a", "127.0.0.1"),
        heartbeat("host-a", 1000),
        group("proxies", 1, 2, 4),
        desired(3),
        Change::HoldReplacements {
            group: "proxies".into(),
            held: Some("held".into()),
            at: T0,
        },
        Change::HoldReplacements {
            group: "proxies".into(),
            held: None,
            at: T0,
        },
        Change::SetRefresh {
            group: "proxies".into(),
            refresh: Some(crate::model::Refresh {
                started_at: T0,
                min_healthy_percentage: 90,
            }),
            outcome: "started".into(),
            at: T0,
        },
        Change::SetRefresh {
            group: "proxies".into(),
            refresh: None,
            outcome: "successful".into(),
            at: T0,
        },
        Change::StackApplied {
            group: "proxies".into(),
            summary: "group proxies: max 4 -> 6 (in place)".into(),
            at: T0,
        },
        create("i-1", "a", "127.10.1.11"),
        Change::AssignInstance {
            instance: "i-1".into(),
            host: "host-a".into(),
        },
        Change::ReportProcess {
            instance: "i-1".into(),
            process: Process {
                pid: 4242,
                start_ticks: 99,
            },
            capacity: Some(8192),
            protected: true,
            adopted: false,
        },
        Change::ReportLifecycle {
            instance: "i-1".into(),
            lifecycle: Lifecycle::InService,
            cause: None,
            at: at(2000),
        },
        Change::ReportInstanceHealth {
            instance: "i-1".into(),
            health: InstanceHealth::Unhealthy,
            cause: Some(Cause::LoadBalancerHealth {
                target_group: "proxies".into(),
            }),
        },
        Change::RegisterTarget {
            target_group: "proxies".into(),
            address: t1,
            zone: "a".into(),
            instance: Some("i-1".into()),
            at: at(2000),
        },
        Change::ReportTargetHealth {
            target_group: "proxies".into(),
            address: t1,
            node: "nlb/a".into(),
            health: TargetHealth::Unhealthy,
            reason: "connection refused".into(),
            at: at(3000),
        },
        Change::ReportNodes {
            host: "host-a".into(),
            nodes: [
                ("nlb/a".to_string(), crate::model::NodeHold::Holding),
                ("nlb/c".to_string(), crate::model::NodeHold::Releasing),
            ]
            .into(),
        },
        Change::ReportTargetFlows {
            target_group: "proxies".into(),
            address: t1,
            node: "nlb/a".into(),
            active_flows: 7,
        },
        create("i-2", "a", "127.10.1.12"),
        Change::ReportLifecycle {
            instance: "i-2".into(),
            lifecycle: Lifecycle::Terminated,
            cause: Some(Cause::LaunchFailed {
                detail: "it did not listen within 10s".into(),
            }),
            at: at(4000),
        },
        Change::ForgetInstance {
            instance: "i-2".into(),
        },
        Change::RegisterTarget {
            target_group: "proxies".into(),
            address: t2,
            zone: "a".into(),
            instance: None,
            at: at(4000),
        },
        Change::DrainTarget {
            target_group: "proxies".into(),
            address: t2,
            at: at(5000),
        },
        Change::RemoveTarget {
            target_group: "proxies".into(),
            address: t2,
        },
        Change::FileRequest {
            request: crate::model::Request {
                id: "r-1".into(),
                filed_by: "host-a".into(),
                at: at(6000),
                ask: crate::model::Ask::Terminate {
                    instance: "i-1".into(),
                    decrement_desired: true,
                },
                seq: 0,
            },
        },
        Change::CloseRequest {
            id: "r-1".into(),
            refused: None,
        },
    ]
}

/// Every variant of [`Cause`].
pub(crate) fn every_cause() -> Vec<Cause> {
    vec![
        Cause::User(UserRequest::Scale),
        Cause::User(UserRequest::Terminate {
            decrement_desired: true,
        }),
        Cause::User(UserRequest::MarkUnhealthy),
        Cause::Capacity {
            desired: 2,
            running: 1,
        },
        Cause::TargetTracking {
            per_instance: 120.5,
            target: 100,
        },
        Cause::LoadBalancerHealth {
            target_group: "proxies".into(),
        },
        Cause::ProcessExited {
            status: "exited with status 1".into(),
        },
        Cause::LaunchFailed {
            detail: "could not start".into(),
        },
        Cause::HostLost {
            host: "host-a".into(),
        },
        Cause::Adopted,
        Cause::Lost { pid: 7 },
        Cause::RestartedWhileTerminating,
        Cause::ControllerStopping,
        Cause::Shutdown,
        Cause::Rebalance {
            from_zone: "a".into(),
            to_zone: "c".into(),
        },
        Cause::InstanceRefresh,
    ]
}
