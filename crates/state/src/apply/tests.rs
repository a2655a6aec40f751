use crate::apply::Refusal;
use crate::cause::{Cause, UserRequest};
use crate::change::Change;
use crate::fixtures::{at, create, desired, group, heartbeat, host, ip, target};
use crate::model::{InstanceHealth, Lifecycle, Snapshot, TargetHealth};
use crate::time::UnixMillis;

fn base() -> Snapshot {
    let mut s = Snapshot::default();
    s.apply_all(&[
        host("host-a", "a", "127.0.0.1"),
        group("proxies", 1, 2, 4),
        create("i-1", "a", "127.10.1.11"),
    ])
    .expect("the base applies");
    s
}

fn lifecycle(id: &str, l: Lifecycle, ms: u64) -> Change {
    Change::ReportLifecycle {
        instance: id.into(),
        lifecycle: l,
        cause: None,
        at: at(ms),
    }
}

fn register(addr: &str, ms: u64) -> Change {
    Change::RegisterTarget {
        target_group: "proxies".into(),
        address: target(addr),
        zone: "a".into(),
        instance: None,
        at: at(ms),
    }
}

fn report(addr: &str, node: &str, health: TargetHealth, ms: u64) -> Change {
    Change::ReportTargetHealth {
        target_group: "proxies".into(),
        address: target(addr),
        node: node.into(),
        health,
        reason: String::new(),
        at: at(ms),
    }
}

#[test]
fn a_batch_with_one_bad_change_leaves_the_snapshot_as_it_was() {
    let mut s = base();
    let before = s.clone();
    let err = s
        .apply_all(&[desired(3), desired(9), heartbeat("host-a", 5)])
        .unwrap_err();
    assert_eq!(
        err,
        (
            1,
            Refusal::OutOfRange {
                group: "proxies".into(),
                desired: 9,
                min: 1,
                max: 4
            }
        )
    );
    assert_eq!(s, before, "the good change before it is not applied either");
}

#[test]
fn lifecycle_moves_only_forward_and_a_repeat_keeps_its_time() {
    let mut s = base();
    s.apply(&lifecycle("i-1", Lifecycle::InService, 10))
        .unwrap();
    s.apply(&lifecycle("i-1", Lifecycle::InService, 20))
        .unwrap();
    assert_eq!(
        s.instances["i-1"].since,
        at(10),
        "the grace period counts from the first"
    );
    assert_eq!(
        s.apply(&lifecycle("i-1", Lifecycle::Pending, 30)),
        Err(Refusal::Backwards {
            instance: "i-1".into(),
            from: Lifecycle::InService,
            to: Lifecycle::Pending
        })
    );
    assert_eq!(
        s.apply(&lifecycle("i-9", Lifecycle::InService, 30)),
        Err(Refusal::UnknownInstance("i-9".into()))
    );
}

#[test]
fn an_address_is_handed_out_once_while_its_instance_lives() {
    let mut s = base();
    assert_eq!(
        s.apply(&create("i-2", "a", "127.10.1.11")),
        Err(Refusal::AddressInUse {
            address: ip("127.10.1.11"),
            instance: "i-1".into()
        })
    );
    assert_eq!(
        s.apply(&create("i-1", "a", "127.10.1.12")),
        Err(Refusal::InstanceExists("i-1".into()))
    );
    s.apply(&lifecycle("i-1", Lifecycle::Terminated, 10))
        .unwrap();
    s.apply(&create("i-2", "a", "127.10.1.11")).unwrap();
    assert_eq!(s.instances["i-2"].lifecycle, Lifecycle::Pending);
    assert_eq!(s.instances["i-2"].host, None);
}

#[test]
fn only_a_pending_instance_is_assigned_and_only_a_terminated_one_forgotten() {
    let mut s = base();
    let assign = |host: &str| Change::AssignInstance {
        instance: "i-1".into(),
        host: host.into(),
    };
    assert_eq!(
        s.apply(&assign("host-z")),
        Err(Refusal::UnknownHost("host-z".into()))
    );
    s.apply(&assign("host-a")).unwrap();
    assert_eq!(s.instances["i-1"].host.as_deref(), Some("host-a"));
    let forget = Change::ForgetInstance {
        instance: "i-1".into(),
    };
    let wrong = |lifecycle, wanted| Refusal::WrongLifecycle {
        instance: "i-1".into(),
        lifecycle,
        wanted,
    };
    assert_eq!(
        s.apply(&forget),
        Err(wrong(Lifecycle::Pending, Lifecycle::Terminated))
    );
    s.apply(&lifecycle("i-1", Lifecycle::InService, 10))
        .unwrap();
    assert_eq!(
        s.apply(&assign("host-a")),
        Err(wrong(Lifecycle::InService, Lifecycle::Pending))
    );
    s.apply(&lifecycle("i-1", Lifecycle::Terminated, 20))
        .unwrap();
    s.apply(&forget).unwrap();
    assert!(s.instances.is_empty());
}

#[test]
fn desired_capacity_stays_within_the_group_bounds() {
    let mut s = base();
    s.apply(&desired(4)).unwrap();
    assert_eq!(s.groups["proxies"].desired, 4);
    assert!(matches!(
        s.apply(&desired(0)),
        Err(Refusal::OutOfRange { .. })
    ));
    assert!(matches!(
        s.apply(&group("other", 3, 2, 4)),
        Err(Refusal::OutOfRange { .. })
    ));
    assert_eq!(
        s.apply(&Change::SetDesired {
            group: "nope".into(),
            desired: 1,
            cause: Cause::User(UserRequest::Scale),
            at: None,
        }),
        Err(Refusal::UnknownGroup("nope".into()))
    );
}

#[test]
fn target_tracking_starts_the_cooldown_of_its_direction_and_new_bounds_keep_it() {
    let mut s = base();
    let tracking = |desired: u32, ms: u64| Change::SetDesired {
        group: "proxies".into(),
        desired,
        cause: Cause::TargetTracking {
            per_instance: 9.0,
            target: 5,
        },
        at: Some(UnixMillis(ms)),
    };
    let before = s.groups["proxies"].desired;
    s.apply(&tracking(before + 1, 10_000)).unwrap();
    assert_eq!(s.groups["proxies"].last_scale_out, Some(UnixMillis(10_000)));
    assert_eq!(s.groups["proxies"].last_scale_in, None);
    s.apply(&tracking(before, 20_000)).unwrap();
    assert_eq!(s.groups["proxies"].last_scale_in, Some(UnixMillis(20_000)));
    // An operator's scale starts no cooldown.
    s.apply(&desired(before + 1)).unwrap();
    assert_eq!(s.groups["proxies"].last_scale_out, Some(UnixMillis(10_000)));
    s.apply(&group("proxies", 1, 2, 5)).unwrap();
    assert_eq!(s.groups["proxies"].last_scale_out, Some(UnixMillis(10_000)));
    assert_eq!(s.groups["proxies"].last_scale_in, Some(UnixMillis(20_000)));
}

#[test]
fn an_unhealthy_verdict_keeps_its_cause_and_healthy_clears_it() {
    let mut s = base();
    let lb = Cause::LoadBalancerHealth {
        target_group: "proxies".into(),
    };
    s.apply(&Change::ReportInstanceHealth {
        instance: "i-1".into(),
        health: InstanceHealth::Unhealthy,
        cause: Some(lb.clone()),
    })
    .unwrap();
    let i = &s.instances["i-1"];
    assert_eq!(i.health, InstanceHealth::Unhealthy);
    assert!(i
        .reason
        .as_ref()
        .is_some_and(Cause::is_load_balancer_health));
    s.apply(&Change::ReportInstanceHealth {
        instance: "i-1".into(),
        health: InstanceHealth::Healthy,
        cause: Some(lb),
    })
    .unwrap();
    assert_eq!(s.instances["i-1"].reason, None);
}

#[test]
fn target_state_follows_its_nodes_until_it_drains() {
    let mut s = base();
    let a = "127.10.1.11:3128";
    s.apply(&register(a, 0)).unwrap();
    assert_eq!(
        s.apply(&register(a, 1)),
        Err(Refusal::TargetRegistered {
            target_group: "proxies".into(),
            address: target(a)
        })
    );
    s.apply(&report(a, "nlb/c", TargetHealth::Initial, 10))
        .unwrap();
    s.apply(&report(a, "nlb/a", TargetHealth::Unhealthy, 11))
        .unwrap();
    let t = s.target("proxies", target(a)).unwrap();
    assert_eq!((t.state, t.since), (TargetHealth::Initial, at(0)));
    s.apply(&report(a, "nlb/c", TargetHealth::Unhealthy, 20))
        .unwrap();
    let t = s.target("proxies", target(a)).unwrap();
    assert_eq!((t.state, t.since), (TargetHealth::Unhealthy, at(20)));
    s.apply(&report(a, "nlb/a", TargetHealth::Healthy, 30))
        .unwrap();
    assert_eq!(
        s.target("proxies", target(a)).unwrap().state,
        TargetHealth::Healthy
    );

    let drain = Change::DrainTarget {
        target_group: "proxies".into(),
        address: target(a),
        at: at(40),
    };
    s.apply(&drain).unwrap();
    s.apply(&report(a, "nlb/c", TargetHealth::Healthy, 50))
        .unwrap();
    let t = s.target("proxies", target(a)).unwrap();
    assert_eq!((t.state, t.since), (TargetHealth::Draining, at(40)));
    // Registered again while draining: a fresh start.
    s.apply(&register(a, 60)).unwrap();
    let t = s.target("proxies", target(a)).unwrap();
    assert_eq!((t.state, t.nodes.len()), (TargetHealth::Initial, 0));

    let remove = Change::RemoveTarget {
        target_group: "proxies".into(),
        address: target(a),
    };
    s.apply(&remove).unwrap();
    assert!(s.targets.is_empty());
    assert_eq!(
        s.apply(&remove),
        Err(Refusal::UnknownTarget {
            target_group: "proxies".into(),
            address: target(a)
        })
    );
    assert!(matches!(
        s.apply(&report(a, "nlb/a", TargetHealth::Healthy, 70)),
        Err(Refusal::UnknownTarget { .. })
    ));
}

#[test]
fn a_nodes_flow_count_is_kept_apart_from_its_verdicts() {
    let mut s = base();
    s.apply(&register("127.10.1.11:3128", 1000)).unwrap();
    let flows = |node: &str, n: u64| Change::ReportTargetFlows {
        target_group: "proxies".into(),
        address: target("127.10.1.11:3128"),
        node: node.into(),
        active_flows: n,
    };
    // Before the node's first verdict: an Initial view, the target's state untouched.
    s.apply(&flows("nlb/a", 3)).unwrap();
    let t = s.target("proxies", target("127.10.1.11:3128")).unwrap();
    assert_eq!(t.nodes["nlb/a"].health, TargetHealth::Initial);
    assert_eq!(t.nodes["nlb/a"].active_flows, 3);
    assert_eq!(t.state, TargetHealth::Initial);
    s.apply(&report(
        "127.10.1.11:3128",
        "nlb/a",
        TargetHealth::Healthy,
        2000,
    ))
    .unwrap();
    s.apply(&flows("nlb/c", 4)).unwrap();
    let t = s.target("proxies", target("127.10.1.11:3128")).unwrap();
    assert_eq!(
        t.nodes["nlb/a"].active_flows, 3,
        "a verdict keeps the count"
    );
    assert_eq!(t.state, TargetHealth::Healthy, "a count changes no state");
    assert_eq!(t.nodes.values().map(|v| v.active_flows).sum::<u64>(), 7);
    assert!(matches!(
        s.apply(&Change::ReportTargetFlows {
            target_group: "proxies".into(),
            address: target("127.10.1.99:3128"),
            node: "nlb/a".into(),
            active_flows: 1,
        }),
        Err(Refusal::UnknownTarget { .. })
    ));
}

#[test]
fn empty_names_are_refused() {
    let mut s = base();
    assert_eq!(
        s.apply(&host("", "a", "127.0.0.1")),
        Err(Refusal::Empty("host id"))
    );
    assert_eq!(
        s.apply(&create("", "a", "127.10.1.20")),
        Err(Refusal::Empty("instance id"))
    );
}

fn request(id: &str) -> Change {
    Change::FileRequest {
        request: crate::model::Request {
            id: id.into(),
            filed_by: "host-a".into(),
            at: at(10),
            ask: crate::model::Ask::Scale {
                group: "proxies".into(),
                desired: 3,
            },
            seq: 0,
        },
    }
}

#[test]
fn a_request_is_filed_once_and_closed_once() {
    let mut s = base();
    s.apply(&request("r-1")).unwrap();
    assert_eq!(
        s.apply(&request("r-1")),
        Err(Refusal::RequestExists("r-1".into()))
    );
    let close = Change::CloseRequest {
        id: "r-1".into(),
        refused: None,
    };
    s.apply(&close).unwrap();
    assert!(s.requests.is_empty());
    assert_eq!(s.apply(&close), Err(Refusal::UnknownRequest("r-1".into())));
    // Filing is anyone's (an API of any agent); closing is the controller's.
    assert!(!request("r-2").needs_leadership());
    assert!(close.needs_leadership());
}

#[test]
fn the_store_numbers_requests_in_filing_order_and_caps_the_open_ones() {
    let mut s = base();
    for i in 0..crate::model::MAX_OPEN_REQUESTS {
        s.apply(&request(&format!("r-{i}"))).unwrap();
    }
    // Numbered as taken, whatever the filer wrote (its clock, its seq).
    assert_eq!(s.requests["r-0"].seq, 1);
    assert_eq!(s.requests["r-9"].seq, 10);
    assert_eq!(
        s.apply(&request("one-too-many")),
        Err(Refusal::TooManyRequests {
            open: crate::model::MAX_OPEN_REQUESTS
        })
    );
    s.apply(&Change::CloseRequest {
        id: "r-0".into(),
        refused: None,
    })
    .unwrap();
    s.apply(&request("next")).unwrap();
    assert_eq!(
        s.requests["next"].seq,
        crate::model::MAX_OPEN_REQUESTS as u64 + 1,
        "never a number twice"
    );
}
