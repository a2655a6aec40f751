//! The controller's rules on hand-made snapshots: no processes, sockets or store.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use proxyfleet_state::{Host, Process, Target};

use super::*;

const STACK: &str = r#"
zones:
  a: { subnet: 127.70.1.0/24 }
  c: { subnet: 127.70.2.0/24 }
load_balancers:
  front: { zones: [a, c] }
listeners:
  - { load_balancer: front, port: 3128, protocol: tcp, target_group: tg }
target_groups:
  tg:
    protocol: tcp
    port: 3128
    target_type: instance
    deregistration_delay: 2s
    health_check: { protocol: tcp, interval: 250ms, timeout: 250ms }
launch_templates:
  t: { command: [sleep, "60"] }
groups:
  g:
    launch_template: t
    min: 0
    max: 6
    desired: 2
    zones: [a, c]
    target_groups: [tg]
    health_check_type: lb
    health_check_grace_period: 1s
"#;

fn stack() -> Stack {
    proxyfleet_stack::parse(STACK, Path::new("test.yaml")).unwrap()
}

const NOW: UnixMillis = UnixMillis(1_000_000);

fn ms(n: u64) -> UnixMillis {
    UnixMillis(NOW.0 - n)
}

fn host(id: &str, zone: &str, beat: UnixMillis) -> Host {
    Host {
        id: id.into(),
        address: "127.0.0.1".parse().unwrap(),
        zone: zone.into(),
        last_heartbeat: beat,
        nodes: Default::default(),
    }
}

fn instance(
    id: &str,
    zone: &str,
    addr: &str,
    lifecycle: Lifecycle,
    launched: UnixMillis,
) -> Instance {
    Instance {
        id: id.into(),
        group: "g".into(),
        zone: zone.into(),
        address: addr.parse().unwrap(),
        port: 3128,
        host: Some(format!("h{zone}")),
        lifecycle,
        since: launched,
        health: InstanceHealth::Healthy,
        reason: None,
        launched_at: launched,
        process: Some(Process {
            pid: 1,
            start_ticks: 1,
        }),
        in_service_at: (lifecycle != Lifecycle::Pending).then_some(launched),
        capacity: None,
        protected: false,
    }
}

fn target(i: &Instance, state: TargetHealth) -> Target {
    Target {
        target_group: "tg".into(),
        address: i.target_address(),
        zone: i.zone.clone(),
        instance: Some(i.id.clone()),
        state,
        since: ms(10_000),
        nodes: Default::default(),
        // These instances served before (a new one's never-healthy target is set apart).
        ever_healthy: true,
    }
}

/// Two live hosts (one per zone), group g defined with `desired`, and `instances` (each with
/// its target in `states`, if given).
fn snapshot(desired: u32, instances: &[(Instance, Option<TargetHealth>)]) -> Snapshot {
    let mut s = Snapshot::default();
    for (id, zone) in [("ha", "a"), ("hc", "c")] {
        s.hosts.insert(id.into(), host(id, zone, ms(100)));
    }
    s.groups.insert("g".into(), Group::new("g", 0, 6, desired));
    for (i, state) in instances {
        if let Some(state) = state {
            s.targets
                .entry("tg".into())
                .or_default()
                .insert(i.target_address(), target(i, *state));
        }
        s.instances.insert(i.id.clone(), i.clone());
    }
    s
}

/// The hosts whose liveness lease holds: in these fixtures, a host's `last_heartbeat` stands
/// for its last renewal (within the 1 s lease of NOW: live).
fn live(s: &Snapshot) -> BTreeSet<String> {
    s.hosts
        .values()
        .filter(|h| h.last_heartbeat.after(Timings::default().host_timeout) >= NOW)
        .map(|h| h.id.clone())
        .collect()
}

fn run(s: &Snapshot) -> Vec<Change> {
    run_on(&stack(), s)
}

/// One pass of `stack` over `s`, at NOW, every host of `s` announced long before.
fn run_on(stack: &Stack, s: &Snapshot) -> Vec<Change> {
    let mut n = 0;
    decide(
        stack,
        s,
        &live(s),
        NOW,
        &Timings::default(),
        UnixMillis(0),
        &mut || {
            n += 1;
            format!("i-new{n}")
        },
    )
}

fn launches(changes: &[Change]) -> Vec<(String, String)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::CreateInstance { zone, address, .. } => {
                Some((zone.clone(), address.to_string()))
            }
            _ => None,
        })
        .collect()
}

fn terminations(changes: &[Change]) -> Vec<(String, Lifecycle, Cause)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::ReportLifecycle {
                instance,
                lifecycle,
                cause: Some(cause),
                ..
            } => Some((instance.clone(), *lifecycle, cause.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_empty_state_gets_its_group_and_one_instance_per_zone_on_that_zones_host() {
    let mut s = snapshot(2, &[]);
    s.groups.clear();
    let changes = run(&s);
    assert!(matches!(&changes[0], Change::DefineGroup { group } if group.desired == 2));
    assert_eq!(
        launches(&changes),
        vec![
            ("a".to_string(), "127.70.1.11".to_string()),
            ("c".to_string(), "127.70.2.11".to_string())
        ]
    );
    let assigned: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AssignInstance { host, .. } => Some(host.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(assigned, vec!["ha", "hc"]);
}

#[test]
fn the_least_populated_zone_and_the_lowest_free_address_are_chosen() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let a2 = instance("i-a2", "a", "127.70.1.13", Lifecycle::InService, ms(50_000));
    let s = snapshot(
        3,
        &[
            (a1, Some(TargetHealth::Healthy)),
            (a2, Some(TargetHealth::Healthy)),
        ],
    );
    assert_eq!(launches(&run(&s)), vec![("c".into(), "127.70.2.11".into())]);
    // Zone c now holds one: the fourth goes to c as well, and zone a's gap (.12) is used when
    // a is the least populated.
    let mut s = s;
    s.groups.get_mut("g").unwrap().desired = 4;
    assert_eq!(
        launches(&run(&s)),
        vec![
            ("c".into(), "127.70.2.11".into()),
            ("c".into(), "127.70.2.12".into())
        ]
    );
}

#[test]
fn a_zone_without_a_live_host_gets_nothing_and_its_share_goes_elsewhere() {
    let mut s = snapshot(2, &[]);
    s.hosts.get_mut("hc").unwrap().last_heartbeat = ms(5_000);
    assert_eq!(
        launches(&run(&s)),
        vec![
            ("a".into(), "127.70.1.11".into()),
            ("a".into(), "127.70.1.12".into())
        ]
    );
    s.hosts.clear();
    assert!(launches(&run(&s)).is_empty());
}

#[test]
fn a_lost_hosts_instances_are_terminated_drained_and_replaced_in_a_surviving_zone() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(
        2,
        &[
            (a1, Some(TargetHealth::Healthy)),
            (c1, Some(TargetHealth::Healthy)),
        ],
    );
    s.hosts.get_mut("ha").unwrap().last_heartbeat = ms(2_000);
    let changes = run(&s);
    assert_eq!(
        terminations(&changes),
        vec![(
            "i-a1".to_string(),
            Lifecycle::Terminated,
            Cause::HostLost { host: "ha".into() }
        )]
    );
    assert!(changes.iter().any(|c| matches!(c, Change::DrainTarget { address, .. } if address.to_string() == "127.70.1.11:3128")));
    assert_eq!(launches(&changes), vec![("c".into(), "127.70.2.12".into())]);
}

#[test]
fn a_lost_hosts_instance_that_a_live_hosts_node_sees_healthy_is_left_serving() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(
        2,
        &[
            (a1.clone(), Some(TargetHealth::Healthy)),
            (c1, Some(TargetHealth::Healthy)),
        ],
    );
    // ha's agent stopped renewing (restarting, say); hc holds node front/c and sees i-a1
    // healthy; ha's own node's view does not count (nobody live holds it).
    s.hosts.get_mut("ha").unwrap().last_heartbeat = ms(2_000);
    s.hosts
        .get_mut("hc")
        .unwrap()
        .nodes
        .insert("front/c".into(), proxyfleet_state::NodeHold::Holding);
    let view = |health| proxyfleet_state::NodeView {
        health,
        reason: String::new(),
        since: ms(10_000),
        active_flows: 0,
    };
    let t = s
        .targets
        .get_mut("tg")
        .unwrap()
        .get_mut(&a1.target_address())
        .unwrap();
    t.nodes
        .insert("front/a".into(), view(TargetHealth::Healthy));
    t.nodes
        .insert("front/c".into(), view(TargetHealth::Healthy));
    let changes = run(&s);
    assert!(terminations(&changes).is_empty(), "{changes:?}");
    assert!(launches(&changes).is_empty(), "{changes:?}");
    // Once hc's node sees it fail, it is written off and replaced.
    let t = s
        .targets
        .get_mut("tg")
        .unwrap()
        .get_mut(&a1.target_address())
        .unwrap();
    t.nodes
        .insert("front/c".into(), view(TargetHealth::Unhealthy));
    let changes = run(&s);
    assert_eq!(
        terminations(&changes),
        vec![(
            "i-a1".to_string(),
            Lifecycle::Terminated,
            Cause::HostLost { host: "ha".into() }
        )]
    );
}

#[test]
fn scale_in_takes_the_newest_of_the_most_populated_zone() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let a2 = instance("i-a2", "a", "127.70.1.12", Lifecycle::InService, ms(40_000));
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(30_000));
    let s = snapshot(
        2,
        &[
            (a1, Some(TargetHealth::Healthy)),
            (a2, Some(TargetHealth::Healthy)),
            (c1, Some(TargetHealth::Healthy)),
        ],
    );
    let t = terminations(&run(&s));
    assert_eq!(
        t,
        vec![(
            "i-a2".to_string(),
            Lifecycle::Terminating,
            Cause::Capacity {
                desired: 2,
                running: 3
            }
        )]
    );
}

#[test]
fn in_service_instances_are_registered_and_judged_after_their_grace_period() {
    let fresh = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(500));
    let s = snapshot(1, &[(fresh.clone(), None)]);
    let changes = run(&s);
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::RegisterTarget { instance: Some(i), .. } if i == "i-a1")));
    // Unhealthy on every node, but still in its grace period: no verdict.
    let s = snapshot(1, &[(fresh, Some(TargetHealth::Unhealthy))]);
    assert!(!run(&s)
        .iter()
        .any(|c| matches!(c, Change::ReportInstanceHealth { .. })));
    let old = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(5_000));
    let s = snapshot(1, &[(old.clone(), Some(TargetHealth::Unhealthy))]);
    assert!(run(&s).iter().any(|c| matches!(
        c,
        Change::ReportInstanceHealth {
            health: InstanceHealth::Unhealthy,
            cause: Some(Cause::LoadBalancerHealth { .. }),
            ..
        }
    )));
    // Healthy again: the load balancer's verdict is withdrawn.
    let mut judged = old;
    judged.health = InstanceHealth::Unhealthy;
    judged.reason = Some(Cause::LoadBalancerHealth {
        target_group: "tg".into(),
    });
    let s = snapshot(1, &[(judged, Some(TargetHealth::Healthy))]);
    assert!(run(&s).iter().any(|c| matches!(
        c,
        Change::ReportInstanceHealth {
            health: InstanceHealth::Healthy,
            ..
        }
    )));
}

fn lb_unhealthy(id: &str, zone: &str, addr: &str) -> Instance {
    let mut i = instance(id, zone, addr, Lifecycle::InService, ms(50_000));
    i.health = InstanceHealth::Unhealthy;
    i.reason = Some(Cause::LoadBalancerHealth {
        target_group: "tg".into(),
    });
    i
}

#[test]
fn load_balancer_verdicts_replace_one_at_a_time_and_not_while_a_replacement_is_pending() {
    let a1 = lb_unhealthy("i-a1", "a", "127.70.1.11");
    let c1 = lb_unhealthy("i-c1", "c", "127.70.2.11");
    let s = snapshot(
        2,
        &[
            (a1.clone(), Some(TargetHealth::Unhealthy)),
            (c1.clone(), Some(TargetHealth::Unhealthy)),
        ],
    );
    let changes = run(&s);
    let t = terminations(&changes);
    assert_eq!(t.len(), 1, "one at a time: {t:?}");
    assert_eq!(t[0].0, "i-a1");
    // Its replacement is launched in the next pass, once it is Terminating.
    assert_eq!(launches(&next_pass(&s, &changes)).len(), 1);
    // While that replacement is Pending, the other one waits.
    let mut pending = instance("i-new", "a", "127.70.1.12", Lifecycle::Pending, ms(100));
    pending.process = None;
    let mut gone = a1;
    gone.lifecycle = Lifecycle::Terminating;
    let s = snapshot(
        2,
        &[
            (gone, Some(TargetHealth::Draining)),
            (c1, Some(TargetHealth::Unhealthy)),
            (pending, None),
        ],
    );
    assert!(terminations(&run(&s)).is_empty());
}

#[test]
fn a_replacement_that_never_passed_and_fails_holds_replacements_and_says_so_once() {
    let a1 = lb_unhealthy("i-a1", "a", "127.70.1.11");
    let c1 = lb_unhealthy("i-c1", "c", "127.70.2.11");
    let mut s = snapshot(
        2,
        &[
            (a1, Some(TargetHealth::Unhealthy)),
            (c1, Some(TargetHealth::Unhealthy)),
        ],
    );
    // i-a1 is the replacement: its target never turned healthy.
    let address = s.instances["i-a1"].target_address();
    s.targets
        .get_mut("tg")
        .unwrap()
        .get_mut(&address)
        .unwrap()
        .ever_healthy = false;
    let changes = run(&s);
    assert!(terminations(&changes).is_empty(), "{changes:?}");
    let held: Vec<&Change> = changes
        .iter()
        .filter(|c| matches!(c, Change::HoldReplacements { .. }))
        .collect();
    let [Change::HoldReplacements {
        held: Some(why), ..
    }] = held.as_slice()
    else {
        panic!("one HoldReplacements with a reason: {changes:?}")
    };
    assert!(why.contains("i-a1, a new instance, never passed target group tg's health checks"));
    // Recorded: the next pass says nothing more.
    let again = next_pass(&s, &changes);
    assert!(!again
        .iter()
        .any(|c| matches!(c, Change::HoldReplacements { .. })));
    assert!(terminations(&again).is_empty());
}

#[test]
fn a_process_verdict_is_replaced_at_once_whatever_else_is_in_flight() {
    let mut a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    a1.health = InstanceHealth::Unhealthy;
    a1.reason = Some(Cause::ProcessExited {
        status: "killed by signal 9".into(),
    });
    let mut c1 = a1.clone();
    c1.id = "i-c1".into();
    c1.zone = "c".into();
    c1.address = "127.70.2.11".parse().unwrap();
    c1.host = Some("hc".into());
    let s = snapshot(
        2,
        &[
            (a1, Some(TargetHealth::Healthy)),
            (c1, Some(TargetHealth::Healthy)),
        ],
    );
    let changes = run(&s);
    assert_eq!(terminations(&changes).len(), 2);
    assert_eq!(launches(&next_pass(&s, &changes)).len(), 2);
}

/// The pass after `changes` were written to `s`.
fn next_pass(s: &Snapshot, changes: &[Change]) -> Vec<Change> {
    let mut after = s.clone();
    after
        .apply_all(changes)
        .unwrap_or_else(|(i, r)| panic!("change {i} ({}) refused: {r}", changes[i]));
    run(&after)
}

#[test]
fn a_launch_that_never_serves_times_out() {
    let late = instance("i-a1", "a", "127.70.1.11", Lifecycle::Pending, ms(31_000));
    let s = snapshot(1, &[(late, None)]);
    let t = terminations(&run(&s));
    assert!(
        matches!(&t[..], [(id, Lifecycle::Terminating, Cause::LaunchFailed { .. })] if id == "i-a1"),
        "{t:?}"
    );
}

#[test]
fn drained_targets_are_removed_after_the_delay_and_terminated_instances_forgotten() {
    let mut done = instance(
        "i-a1",
        "a",
        "127.70.1.11",
        Lifecycle::Terminated,
        ms(120_000),
    );
    done.since = ms(61_000);
    let mut draining = instance(
        "i-c1",
        "c",
        "127.70.2.11",
        Lifecycle::Terminating,
        ms(120_000),
    );
    draining.since = ms(1_000);
    let mut s = snapshot(
        0,
        &[
            (done, None),
            (draining.clone(), Some(TargetHealth::Draining)),
        ],
    );
    let addr: SocketAddr = "127.70.2.11:3128".parse().unwrap();
    s.targets
        .get_mut("tg")
        .unwrap()
        .get_mut(&addr)
        .unwrap()
        .since = ms(1_000);
    let changes = run(&s);
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::ForgetInstance { instance } if instance == "i-a1")));
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::RemoveTarget { .. })),
        "2 s delay not over"
    );
    s.targets
        .get_mut("tg")
        .unwrap()
        .get_mut(&addr)
        .unwrap()
        .since = ms(2_000);
    assert!(run(&s)
        .iter()
        .any(|c| matches!(c, Change::RemoveTarget { address, .. } if *address == addr)));

    // Within the delay, but its instance stopped: no flow can be left, the target goes.
    s.targets
        .get_mut("tg")
        .unwrap()
        .get_mut(&addr)
        .unwrap()
        .since = ms(500);
    s.instances.get_mut("i-c1").unwrap().lifecycle = Lifecycle::Terminated;
    assert!(run(&s)
        .iter()
        .any(|c| matches!(c, Change::RemoveTarget { address, .. } if *address == addr)));
}

#[test]
fn every_batch_applies_to_the_snapshot_it_was_decided_on() {
    // Whatever the pass decides must pass the store's rules, or the whole batch is refused.
    let a1 = lb_unhealthy("i-a1", "a", "127.70.1.11");
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(3, &[(a1, Some(TargetHealth::Unhealthy)), (c1, None)]);
    s.groups.clear();
    let changes = run(&s);
    let mut copy = s.clone();
    copy.apply_all(&changes)
        .unwrap_or_else(|(i, r)| panic!("change {i} ({}) refused: {r}", changes[i]));
}

#[test]
fn a_host_is_judged_by_its_liveness_lease_once_the_judge_has_renewed_for_a_while() {
    // The store's verdict decides, but only two host timeouts after the controller's own
    // renewals resumed: after an outage every host needs a moment to renew.
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let s = snapshot(1, &[(a1, Some(TargetHealth::Healthy))]);
    let judge = |live: &[&str], since: UnixMillis| {
        let live: BTreeSet<String> = live.iter().map(|h| h.to_string()).collect();
        decide(
            &stack(),
            &s,
            &live,
            NOW,
            &Timings::default(),
            since,
            &mut || "i-x".to_string(),
        )
    };
    assert!(terminations(&judge(&["ha", "hc"], ms(60_000))).is_empty());
    assert!(
        terminations(&judge(&["hc"], ms(1_500))).is_empty(),
        "renewing for 1.5 s of 2: no verdict yet"
    );
    assert_eq!(
        terminations(&judge(&["hc"], ms(2_100))),
        vec![(
            "i-a1".to_string(),
            Lifecycle::Terminated,
            Cause::HostLost { host: "ha".into() }
        )],
        "ha's lease lapsed"
    );
}

#[test]
fn a_new_leader_launches_nothing_until_every_host_could_announce_itself() {
    let s = snapshot(2, &[]);
    let early = decide(
        &stack(),
        &s,
        &live(&s),
        NOW,
        &Timings::default(),
        ms(500),
        &mut || "i-x".into(),
    );
    assert!(launches(&early).is_empty());
    let later = decide(
        &stack(),
        &s,
        &live(&s),
        NOW,
        &Timings::default(),
        ms(1_100),
        &mut || "i-x".into(),
    );
    assert_eq!(launches(&later).len(), 2);
}

fn file(s: &mut Snapshot, id: &str, at_ms_ago: u64, ask: Ask) {
    s.requests.insert(
        id.into(),
        Request {
            id: id.into(),
            filed_by: "ha".into(),
            at: ms(at_ms_ago),
            ask,
            // Filed in the order of these times (the store numbers them as it takes them).
            seq: ms(at_ms_ago).0,
        },
    );
}

fn closed(changes: &[Change]) -> Vec<(String, Option<String>)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::CloseRequest { id, refused } => Some((id.clone(), refused.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_scale_request_sets_the_desired_capacity_and_the_planner_launches_for_it() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(1, &[(a1, Some(TargetHealth::Healthy))]);
    file(
        &mut s,
        "r-1",
        10,
        Ask::Scale {
            group: "g".into(),
            desired: 3,
        },
    );
    let changes = run(&s);
    assert!(changes.iter().any(|c| matches!(
        c,
        Change::SetDesired {
            desired: 3,
            cause: Cause::User(UserRequest::Scale),
            ..
        }
    )));
    // Launched in the same pass, for the new capacity: the least populated zone first.
    assert_eq!(launches(&changes).len(), 2);
    assert_eq!(closed(&changes), vec![("r-1".to_string(), None)]);
}

#[test]
fn requests_the_state_no_longer_allows_are_closed_as_refused_and_change_nothing() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(1, &[(a1, Some(TargetHealth::Healthy))]);
    file(
        &mut s,
        "r-1",
        30,
        Ask::Scale {
            group: "g".into(),
            desired: 9,
        },
    );
    file(
        &mut s,
        "r-2",
        20,
        Ask::Terminate {
            instance: "i-gone".into(),
            decrement_desired: false,
        },
    );
    file(
        &mut s,
        "r-3",
        10,
        Ask::Scale {
            group: "nope".into(),
            desired: 1,
        },
    );
    let changes = run(&s);
    assert_eq!(
        closed(&changes),
        vec![
            (
                "r-1".to_string(),
                Some("group g: desired 9 is outside min 0 .. max 6".to_string())
            ),
            (
                "r-2".to_string(),
                Some("no live instance 'i-gone'".to_string())
            ),
            ("r-3".to_string(), Some("no group 'nope'".to_string())),
        ]
    );
    assert!(!changes
        .iter()
        .any(|c| matches!(c, Change::SetDesired { .. })));
    assert!(terminations(&changes).is_empty());
    assert!(launches(&changes).is_empty());
}

#[test]
fn terminate_and_decrement_lowers_the_capacity_so_nothing_replaces_the_instance() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(
        2,
        &[
            (a1, Some(TargetHealth::Healthy)),
            (c1, Some(TargetHealth::Healthy)),
        ],
    );
    file(
        &mut s,
        "r-1",
        10,
        Ask::Terminate {
            instance: "i-a1".into(),
            decrement_desired: true,
        },
    );
    let changes = run(&s);
    let cause = Cause::User(UserRequest::Terminate {
        decrement_desired: true,
    });
    assert_eq!(
        terminations(&changes),
        vec![("i-a1".to_string(), Lifecycle::Terminating, cause)]
    );
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::SetDesired { desired: 1, .. })));
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::DrainTarget { .. })));
    assert!(launches(&changes).is_empty(), "{changes:#?}");

    // Without the decrement, the group replaces it in the same pass.
    let mut s = snapshot(
        2,
        &[
            (
                instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000)),
                Some(TargetHealth::Healthy),
            ),
            (
                instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000)),
                Some(TargetHealth::Healthy),
            ),
        ],
    );
    file(
        &mut s,
        "r-2",
        10,
        Ask::Terminate {
            instance: "i-a1".into(),
            decrement_desired: false,
        },
    );
    let changes = run(&s);
    assert_eq!(launches(&changes), vec![("a".into(), "127.70.1.12".into())]);
}

#[test]
fn an_instance_marked_unhealthy_by_hand_is_replaced() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(1, &[(a1, Some(TargetHealth::Healthy))]);
    file(
        &mut s,
        "r-1",
        10,
        Ask::SetHealth {
            instance: "i-a1".into(),
            healthy: false,
        },
    );
    let changes = run(&s);
    assert!(changes.iter().any(|c| matches!(
        c,
        Change::ReportInstanceHealth {
            health: InstanceHealth::Unhealthy,
            cause: Some(Cause::User(UserRequest::MarkUnhealthy)),
            ..
        }
    )));
    assert!(terminations(&changes)
        .iter()
        .any(|(id, l, _)| id == "i-a1" && *l == Lifecycle::Terminating));
    assert_eq!(closed(&changes), vec![("r-1".to_string(), None)]);
    // Its replacement comes in the next pass, as for any verdict (the request is gone).
    assert_eq!(launches(&next_pass(&s, &changes)).len(), 1);
}

/// A launch that failed: never served, its process ended, Terminated `ended_ms_ago`.
fn failed(id: &str, addr: &str, launched_ms_ago: u64, ended_ms_ago: u64) -> Instance {
    let mut i = instance(id, "a", addr, Lifecycle::Pending, ms(launched_ms_ago));
    i.lifecycle = Lifecycle::Terminated;
    i.since = ms(ended_ms_ago);
    i.in_service_at = None;
    i.health = InstanceHealth::Unhealthy;
    i.reason = Some(Cause::ProcessExited {
        status: "exited with status 1".into(),
    });
    i
}

#[test]
fn failed_launches_back_off_one_at_a_time_as_up_does() {
    // One failure half a second ago: its 1 s back-off has not passed.
    let s = snapshot(2, &[(failed("i-f1", "127.70.1.11", 900, 500), None)]);
    assert_eq!(launch_backoff(&s, "g").failures, 1);
    assert!(
        launches(&run(&s)).is_empty(),
        "launched during the back-off"
    );

    // 1.5 s ago: one launch (not two, though two are missing: failures go one at a time).
    let s = snapshot(2, &[(failed("i-f1", "127.70.1.11", 1900, 1500), None)]);
    assert_eq!(launches(&run(&s)).len(), 1);

    // Two in a row, the newest 1.5 s ago: a 2 s back-off.
    let s = snapshot(
        2,
        &[
            (failed("i-f1", "127.70.1.11", 5000, 4000), None),
            (failed("i-f2", "127.70.2.11", 1900, 1500), None),
        ],
    );
    assert_eq!(launch_backoff(&s, "g").failures, 2);
    assert!(launches(&run(&s)).is_empty());

    // A launch that served since ends the run of failures: no back-off.
    let mut served = instance("i-ok", "c", "127.70.2.12", Lifecycle::InService, ms(1000));
    served.in_service_at = Some(ms(800));
    let s = snapshot(
        2,
        &[
            (failed("i-f1", "127.70.1.11", 5000, 1500), None),
            (served, Some(TargetHealth::Healthy)),
        ],
    );
    assert_eq!(launch_backoff(&s, "g").failures, 0);
    assert_eq!(launches(&run(&s)).len(), 1);
}

#[test]
fn instances_ended_otherwise_are_no_launch_failures() {
    // Taken out by scale-in or a lost host before it served: not the template's fault.
    let mut lost = failed("i-l", "127.70.1.11", 1900, 500);
    lost.reason = Some(Cause::HostLost { host: "ha".into() });
    lost.health = InstanceHealth::Healthy;
    let s = snapshot(1, &[(lost, None)]);
    assert_eq!(launch_backoff(&s, "g").failures, 0);
    assert_eq!(launches(&run(&s)).len(), 1);
}

#[test]
fn a_pending_instance_whose_process_ended_is_terminated_not_left_pending() {
    let mut p = instance("i-p", "a", "127.70.1.11", Lifecycle::Pending, ms(300));
    p.in_service_at = None;
    p.health = InstanceHealth::Unhealthy;
    p.reason = Some(Cause::ProcessExited {
        status: "exit status: 3".into(),
    });
    let s = snapshot(1, &[(p, None)]);
    let changes = run(&s);
    assert_eq!(
        terminations(&changes),
        vec![(
            "i-p".to_string(),
            Lifecycle::Terminating,
            Cause::ProcessExited {
                status: "exit status: 3".into()
            }
        )]
    );
    // Its replacement waits for the back-off the failure starts (1 s after it ended).
    let after = {
        let mut after = s.clone();
        after.apply_all(&changes).unwrap();
        after
    };
    assert_eq!(launch_backoff(&after, "g").failures, 1);
}

/// The stack with a target-tracking policy: 5 connections per instance, 1 s out, 2 s in.
fn tracking_stack() -> Stack {
    let text = STACK.replace(
        "    health_check_grace_period: 1s\n",
        "    health_check_grace_period: 1s\n    scaling:\n      target_active_connections_per_instance: 5\n      scale_out_cooldown: 1s\n      scale_in_cooldown: 2s\n",
    );
    proxyfleet_stack::parse(&text, Path::new("test.yaml")).unwrap()
}

fn run_tracking(s: &Snapshot) -> Vec<Change> {
    run_on(&tracking_stack(), s)
}

/// Sets what node `node` reports of the flows it carries to `i`'s target.
fn flows(s: &mut Snapshot, i: &Instance, node: &str, active_flows: u64) {
    let t = s
        .targets
        .get_mut("tg")
        .and_then(|t| t.get_mut(&i.target_address()))
        .expect("the instance's target");
    t.nodes.insert(
        node.into(),
        proxyfleet_state::NodeView {
            health: TargetHealth::Healthy,
            reason: String::new(),
            since: ms(10_000),
            active_flows,
        },
    );
}

fn desired_set(changes: &[Change]) -> Vec<(u32, Option<UnixMillis>)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::SetDesired {
                desired,
                cause: Cause::TargetTracking { .. },
                at,
                ..
            } => Some((*desired, *at)),
            _ => None,
        })
        .collect()
}

#[test]
fn target_tracking_sums_the_flows_every_node_reports_and_launches_for_them() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000));
    let mut gone = instance(
        "i-a2",
        "a",
        "127.70.1.12",
        Lifecycle::Terminating,
        ms(50_000),
    );
    gone.reason = Some(Cause::User(UserRequest::Scale));
    let mut s = snapshot(
        2,
        &[
            (a1.clone(), Some(TargetHealth::Healthy)),
            (c1.clone(), Some(TargetHealth::Healthy)),
            (gone.clone(), Some(TargetHealth::Draining)),
        ],
    );
    // 12 flows over two nodes to the in-service ones (a draining target's, and a node's the
    // stack no longer has, do not count):
    // 12 / 5 per instance = 3.
    flows(&mut s, &a1, "front/a", 5);
    flows(&mut s, &a1, "front/c", 3);
    flows(&mut s, &c1, "front/c", 4);
    flows(&mut s, &gone, "front/a", 100);
    flows(&mut s, &c1, "removed-lb/a", 100);
    let changes = run_tracking(&s);
    assert_eq!(desired_set(&changes), vec![(3, Some(NOW))]);
    assert_eq!(launches(&changes).len(), 1, "launched for the new capacity");
    // Without a policy the same flows change nothing.
    assert!(desired_set(&run(&s)).is_empty());
}

#[test]
fn target_tracking_waits_out_the_cooldowns_kept_in_the_groups_state() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000));
    let mut s = snapshot(
        2,
        &[
            (a1.clone(), Some(TargetHealth::Healthy)),
            (c1, Some(TargetHealth::Healthy)),
        ],
    );
    flows(&mut s, &a1, "front/a", 20);
    let g = s.groups.get_mut("g").unwrap();
    g.last_scale_out = Some(ms(500));
    assert!(
        desired_set(&run_tracking(&s)).is_empty(),
        "scaled out 0.5 s ago: the 1 s cooldown holds"
    );
    s.groups.get_mut("g").unwrap().last_scale_out = Some(ms(1_000));
    assert_eq!(desired_set(&run_tracking(&s)), vec![(4, Some(NOW))]);

    // No load: scaling in waits for 2 s after the last scale-out and the last scale-in.
    flows(&mut s, &a1, "front/a", 0);
    s.groups.get_mut("g").unwrap().last_scale_out = Some(ms(1_500));
    assert!(desired_set(&run_tracking(&s)).is_empty());
    let g = s.groups.get_mut("g").unwrap();
    g.last_scale_out = Some(ms(5_000));
    g.last_scale_in = Some(ms(1_000));
    assert!(desired_set(&run_tracking(&s)).is_empty());
    s.groups.get_mut("g").unwrap().last_scale_in = Some(ms(2_000));
    assert_eq!(desired_set(&run_tracking(&s)), vec![(0, Some(NOW))]);
}

#[test]
fn the_nodes_cap_an_instances_target_at_the_capacity_its_host_reported() {
    let mut a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    a1.capacity = Some(50);
    let c1 = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(50_000));
    let s = snapshot(
        2,
        &[
            (a1, Some(TargetHealth::Healthy)),
            (c1, Some(TargetHealth::Healthy)),
        ],
    );
    // Two nodes check each target: the one a node is given keeps a place for the other's
    // checks (and its balancer one for its own), as `up`'s balancer does for both.
    let caps: Vec<(String, Option<usize>)> = crate::nodes::desired_targets(&stack(), &s)
        .into_iter()
        .map(|t| (t.address.to_string(), t.capacity))
        .collect();
    assert_eq!(
        caps,
        vec![
            ("127.70.1.11:3128".to_string(), Some(49)),
            ("127.70.2.11:3128".to_string(), None)
        ]
    );
}

#[test]
fn winding_down_takes_every_instance_out_and_launches_nothing() {
    let a1 = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(50_000));
    let mut p1 = instance("i-p1", "c", "127.70.2.11", Lifecycle::Pending, ms(100));
    p1.host = None;
    let mut s = snapshot(4, &[(a1, Some(TargetHealth::Healthy)), (p1, None)]);
    file(
        &mut s,
        "r-1",
        10,
        Ask::Scale {
            group: "g".into(),
            desired: 5,
        },
    );
    let changes = wind_down(&stack(), &s, NOW, &Timings::default());
    assert!(launches(&changes).is_empty(), "{changes:#?}");
    assert_eq!(
        terminations(&changes),
        vec![
            ("i-a1".to_string(), Lifecycle::Terminating, Cause::Shutdown),
            ("i-p1".to_string(), Lifecycle::Terminated, Cause::Shutdown),
        ]
    );
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::DrainTarget { address, .. } if address.to_string() == "127.70.1.11:3128")));
    assert_eq!(
        closed(&changes),
        vec![("r-1".to_string(), Some("the tier is stopping".to_string()))]
    );
}

/// Group g (desired 2) in an instance refresh begun 30 s before NOW, with `instances`.
fn refreshing(instances: &[(Instance, Option<TargetHealth>)]) -> Snapshot {
    let mut s = snapshot(2, instances);
    s.groups.get_mut("g").unwrap().refresh = Some(proxyfleet_state::Refresh {
        started_at: ms(30_000),
        min_healthy_percentage: 90,
    });
    s
}

#[test]
fn an_instance_refresh_launches_first_and_retires_an_old_instance_only_once_the_new_one_is_proven()
{
    let old_a = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(60_000));
    let old_c = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(60_000));
    let olds = [
        (old_a.clone(), Some(TargetHealth::Healthy)),
        (old_c.clone(), Some(TargetHealth::Healthy)),
    ];
    // Two old instances at the desired capacity: one new instance above it, nobody leaves.
    let changes = run(&refreshing(&olds));
    assert_eq!(launches(&changes).len(), 1, "{changes:?}");
    assert!(terminations(&changes).is_empty());
    // The new one in service but not yet found healthy: still nobody leaves.
    let mut new = instance(
        "i-new",
        "a",
        "127.70.1.12",
        Lifecycle::InService,
        ms(10_000),
    );
    new.in_service_at = Some(ms(5_000));
    let mut with_new = olds.to_vec();
    with_new.push((new.clone(), Some(TargetHealth::Initial)));
    let mut s = refreshing(&with_new);
    s.targets
        .get_mut("tg")
        .unwrap()
        .get_mut(&new.target_address())
        .unwrap()
        .ever_healthy = false;
    assert!(terminations(&run(&s)).is_empty());
    assert!(launches(&run(&s)).is_empty(), "one new instance at a time");
    // Healthy and past its warm-up (the 1 s grace period): the oldest old instance goes.
    let s = refreshing(&{
        let mut v = olds.to_vec();
        v.push((new.clone(), Some(TargetHealth::Healthy)));
        v
    });
    let t = terminations(&run(&s));
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].2, Cause::InstanceRefresh);
    // Every instance new: the refresh ends, successful.
    let mut second = instance(
        "i-new2",
        "c",
        "127.70.2.12",
        Lifecycle::InService,
        ms(9_000),
    );
    second.in_service_at = Some(ms(5_000));
    let s = refreshing(&[
        (new, Some(TargetHealth::Healthy)),
        (second, Some(TargetHealth::Healthy)),
    ]);
    let changes = run(&s);
    assert!(changes.iter().any(|c| matches!(c,
        Change::SetRefresh { refresh: None, outcome, .. } if outcome.starts_with("successful"))));
}

#[test]
fn a_failing_new_instance_rolls_the_refresh_back_and_the_old_ones_serve_on() {
    let old_a = instance("i-a1", "a", "127.70.1.11", Lifecycle::InService, ms(60_000));
    let old_c = instance("i-c1", "c", "127.70.2.11", Lifecycle::InService, ms(60_000));
    let mut new = instance(
        "i-new",
        "a",
        "127.70.1.12",
        Lifecycle::InService,
        ms(10_000),
    );
    new.health = InstanceHealth::Unhealthy;
    new.reason = Some(Cause::ProcessExited {
        status: "exited with status 2".into(),
    });
    let s = refreshing(&[
        (old_a, Some(TargetHealth::Healthy)),
        (old_c, Some(TargetHealth::Healthy)),
        (new, Some(TargetHealth::Unhealthy)),
    ]);
    let changes = run(&s);
    assert!(
        changes.iter().any(|c| matches!(c,
        Change::SetRefresh { refresh: None, outcome, .. }
            if outcome.starts_with("rolled back: new instance i-new failed"))),
        "{changes:?}"
    );
    let t = terminations(&changes);
    assert_eq!(
        t.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["i-new"],
        "only the failed new instance goes"
    );
    assert!(
        launches(&changes).is_empty(),
        "no replacement above the desired 2"
    );
}
