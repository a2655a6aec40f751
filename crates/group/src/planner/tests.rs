//! The planner's rules, on plain data: no processes, sockets or clocks.

use std::net::IpAddr;
use std::time::Duration;

use proxyfleet_stack::{Group, HealthCheckType, Scaling, Zone};
use proxyfleet_state::{Cause, UnixMillis, UserRequest};

use super::*;

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn group(zones: &[&str], min: u32, max: u32) -> Group {
    Group {
        name: "proxies".into(),
        launch_template: "proxy".into(),
        min,
        max,
        desired: min,
        zones: zones.iter().map(|z| z.to_string()).collect(),
        port: 3128,
        target_groups: vec!["proxies-tg".into()],
        security_groups: vec![],
        health_check_type: HealthCheckType::Lb,
        grace_period: Duration::from_secs(2),
        first_address: 11,
        scaling: None,
    }
}

/// Zone a is 127.10.1.0/24, b 127.10.2.0/24, c 127.10.3.0/24.
fn zones() -> Vec<Zone> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(n, z)| Zone {
            name: z.to_string(),
            subnet: format!("127.10.{}.0/24", n + 1).parse().unwrap(),
        })
        .collect()
}

fn instance(id: &str, zone: &str, address: &str, lifecycle: Lifecycle) -> PlanInstance {
    PlanInstance {
        id: id.into(),
        zone: zone.into(),
        address: ip(address),
        lifecycle,
        unhealthy: None,
        launched_at: UnixMillis(NOW.0 - 60_000),
        replaced_for_lb_health: false,
        passed_lb_health: true,
    }
}

fn in_service(id: &str, zone: &str, address: &str) -> PlanInstance {
    instance(id, zone, address, Lifecycle::InService)
}

fn lb_unhealthy(mut i: PlanInstance) -> PlanInstance {
    i.unhealthy = Some(Cause::LoadBalancerHealth {
        target_group: "proxies-tg".into(),
    });
    i
}

fn input<'a>(spec: &'a Group, zones: &'a [Zone], desired: u32) -> PlanInput<'a> {
    PlanInput {
        spec,
        desired,
        instances: vec![],
        zones,
        node_addresses: vec![ip("127.10.1.10"), ip("127.10.2.10"), ip("127.10.3.10")],
        addresses_in_use: vec![],
        launches: Launches::default(),
        surge: 0,
        scaling: None,
    }
}

/// The launches of a plan, as (zone, address).
fn launches(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch { zone, address, .. } => Some((zone.clone(), address.to_string())),
            _ => None,
        })
        .collect()
}

/// The instances a plan terminates.
fn terminated(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Terminate { instance, .. } => Some(instance.clone()),
            _ => None,
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(z, a)| (z.to_string(), a.to_string()))
        .collect()
}

#[test]
fn all_missing_instances_at_once_spread_over_zones_in_their_order() {
    let spec = group(&["a", "c"], 4, 4);
    let zones = zones();
    let actions = plan(&input(&spec, &zones, 4), NOW);
    assert_eq!(
        launches(&actions),
        pairs(&[
            ("a", "127.10.1.11"),
            ("c", "127.10.3.11"),
            ("a", "127.10.1.12"),
            ("c", "127.10.3.12"),
        ]),
        "ties go by the group's zone order, and each launch counts for the next"
    );
    let causes: Vec<String> = actions
        .iter()
        .map(|a| match a {
            Action::Launch { cause, .. } => cause.activity_text(),
            other => panic!("only launches expected, got {other:?}"),
        })
        .collect();
    assert_eq!(
        causes[0],
        "the desired capacity is 4 and 0 instances were running"
    );
    assert_eq!(
        causes[3],
        "the desired capacity is 4 and 3 instances were running"
    );
}

#[test]
fn the_zone_order_not_the_name_breaks_ties() {
    let spec = group(&["c", "a"], 1, 1);
    let zones = zones();
    assert_eq!(
        launches(&plan(&input(&spec, &zones, 1), NOW)),
        pairs(&[("c", "127.10.3.11")])
    );
}

#[test]
fn uneven_zones_fill_the_least_populated_first() {
    let spec = group(&["a", "b", "c"], 1, 6);
    let zones = zones();
    let mut i = input(&spec, &zones, 5);
    i.instances = vec![
        in_service("i-1", "a", "127.10.1.11"),
        in_service("i-2", "a", "127.10.1.12"),
        instance("i-3", "b", "127.10.2.11", Lifecycle::Pending),
    ];
    assert_eq!(
        launches(&plan(&i, NOW)),
        pairs(&[("c", "127.10.3.11"), ("b", "127.10.2.12")]),
        "c is empty, then b and c have one each and b comes first"
    );
}

#[test]
fn terminating_instances_do_not_count_but_keep_their_address() {
    let spec = group(&["a"], 1, 2);
    let zones = zones();
    let mut i = input(&spec, &zones, 1);
    i.instances = vec![instance("i-1", "a", "127.10.1.11", Lifecycle::Terminating)];
    assert_eq!(launches(&plan(&i, NOW)), pairs(&[("a", "127.10.1.12")]));
}

#[test]
fn the_lowest_free_address_skips_nodes_and_addresses_in_use() {
    let mut spec = group(&["a"], 1, 3);
    spec.first_address = 9;
    let zones = zones();
    let mut i = input(&spec, &zones, 3);
    // .9 is another group's, .10 the node's, .12 this group's.
    i.addresses_in_use = vec![ip("127.10.1.9")];
    i.instances = vec![in_service("i-1", "a", "127.10.1.12")];
    assert_eq!(
        launches(&plan(&i, NOW)),
        pairs(&[("a", "127.10.1.11"), ("a", "127.10.1.13")]),
        "a freed lower address is reused first"
    );
}

#[test]
fn a_full_zone_is_reported_not_launched_into() {
    let mut spec = group(&["a"], 1, 1);
    spec.first_address = 250;
    let zones = zones();
    let mut i = input(&spec, &zones, 1);
    // Slots .250 .. .254 exist (the subnet ends there); all held.
    i.addresses_in_use = (250..=254).map(|h| ip(&format!("127.10.1.{h}"))).collect();
    assert_eq!(
        plan(&i, NOW),
        vec![Action::NoFreeAddress { zone: "a".into() }]
    );
}

#[test]
fn a_zone_launches_may_not_go_to_passes_its_share_to_the_others() {
    let spec = group(&["a", "c"], 2, 2);
    let zones: Vec<Zone> = zones().into_iter().filter(|z| z.name != "a").collect();
    assert_eq!(
        launches(&plan(&input(&spec, &zones, 2), NOW)),
        pairs(&[("c", "127.10.3.11"), ("c", "127.10.3.12")])
    );
}

#[test]
fn empty_zones_launch_nothing() {
    let spec = group(&[], 2, 2);
    let zones = zones();
    assert_eq!(plan(&input(&spec, &zones, 2), NOW), vec![]);
    // A group zone the stack does not define: nothing either.
    let spec = group(&["x"], 2, 2);
    assert_eq!(plan(&input(&spec, &zones, 2), NOW), vec![]);
}

#[test]
fn scale_in_takes_the_newest_of_the_most_populated_zone() {
    let spec = group(&["a", "c"], 1, 4);
    let zones = zones();
    let mut i = input(&spec, &zones, 2);
    let mut newest_in_c = in_service("i-c2", "c", "127.10.3.12");
    newest_in_c.launched_at = NOW;
    let mut newer_in_a = in_service("i-a2", "a", "127.10.1.12");
    newer_in_a.launched_at = UnixMillis(NOW.0 - 1_000);
    i.instances = vec![
        in_service("i-a1", "a", "127.10.1.11"),
        newer_in_a,
        in_service("i-a3", "a", "127.10.1.13"),
        in_service("i-c1", "c", "127.10.3.11"),
        newest_in_c,
    ];
    let actions = plan(&i, NOW);
    assert_eq!(
        actions,
        vec![Action::Terminate {
            instance: "i-a2".into(),
            cause: Cause::Capacity {
                desired: 2,
                running: 5
            },
        }],
        "one per pass, from a (3 live) although c holds the newest"
    );
}

#[test]
fn scale_in_ties_go_to_the_zone_that_sorts_first_and_the_last_tracked() {
    let spec = group(&["c", "a"], 1, 4);
    let zones = zones();
    let mut i = input(&spec, &zones, 1);
    i.instances = vec![
        in_service("i-c1", "c", "127.10.3.11"),
        in_service("i-a1", "a", "127.10.1.11"),
        in_service("i-a2", "a", "127.10.1.12"),
        in_service("i-c2", "c", "127.10.3.12"),
    ];
    assert_eq!(terminated(&plan(&i, NOW)), ["i-a2"]);
}

#[test]
fn desired_below_and_above_the_live_count() {
    let spec = group(&["a", "c"], 0, 4);
    let zones = zones();
    let mut i = input(&spec, &zones, 2);
    let mut pending = instance("i-2", "a", "127.10.1.12", Lifecycle::Pending);
    pending.launched_at = NOW;
    i.instances = vec![in_service("i-1", "a", "127.10.1.11"), pending];
    assert_eq!(plan(&i, NOW), vec![], "at the desired capacity: nothing");
    i.desired = 3;
    assert_eq!(launches(&plan(&i, NOW)), pairs(&[("c", "127.10.3.11")]));
    i.desired = 0;
    assert_eq!(
        terminated(&plan(&i, NOW)),
        ["i-2"],
        "a Pending instance counts as live and may be the victim"
    );
}

#[test]
fn no_launch_before_the_back_off_deadline_and_one_per_pass_while_failing() {
    let spec = group(&["a", "c"], 3, 3);
    let zones = zones();
    let mut i = input(&spec, &zones, 3);
    i.launches = Launches {
        failures: 2,
        next_at: Some(NOW.after(Duration::from_millis(1))),
    };
    assert_eq!(plan(&i, NOW), vec![], "backing off");
    i.launches.next_at = Some(NOW);
    assert_eq!(
        launches(&plan(&i, NOW)),
        pairs(&[("a", "127.10.1.11")]),
        "the deadline reached: one launch, as launches are failing"
    );
    i.launches.failures = 0;
    i.launches.next_at = None;
    assert_eq!(launches(&plan(&i, NOW)).len(), 3);
}

#[test]
fn back_off_does_not_hold_back_replacements() {
    let spec = group(&["a"], 1, 1);
    let zones = zones();
    let mut i = input(&spec, &zones, 1);
    let mut sick = in_service("i-1", "a", "127.10.1.11");
    sick.unhealthy = Some(Cause::User(UserRequest::MarkUnhealthy));
    i.instances = vec![sick];
    i.launches = Launches {
        failures: 1,
        next_at: Some(NOW.after(Duration::from_secs(5))),
    };
    assert_eq!(terminated(&plan(&i, NOW)), ["i-1"]);
}

#[test]
fn process_unhealthy_instances_are_all_replaced_at_once() {
    let spec = group(&["a", "c"], 3, 3);
    let zones = zones();
    let mut i = input(&spec, &zones, 3);
    let exited = |mut i: PlanInstance| {
        i.unhealthy = Some(Cause::ProcessExited {
            status: "exited with status 1".into(),
        });
        i
    };
    i.instances = vec![
        exited(in_service("i-1", "a", "127.10.1.11")),
        instance("i-2", "c", "127.10.3.11", Lifecycle::Pending),
        exited(in_service("i-3", "a", "127.10.1.12")),
    ];
    let actions = plan(&i, NOW);
    assert_eq!(
        terminated(&actions),
        ["i-1", "i-3"],
        "a pending launch holds back only load-balancer replacements"
    );
    let Action::Terminate { cause, .. } = &actions[0] else {
        unreachable!()
    };
    assert_eq!(
        cause.activity_text(),
        "an instance was taken out of service because its process ended (exited with status 1)"
    );
    assert!(
        launches(&actions).is_empty(),
        "the replacements come once they are Terminating"
    );
}

#[test]
fn no_cascade_one_load_balancer_replacement_at_a_time() {
    let spec = group(&["a", "c"], 2, 2);
    let zones = zones();
    let mut i = input(&spec, &zones, 2);
    i.instances = vec![
        lb_unhealthy(in_service("i-1", "a", "127.10.1.11")),
        lb_unhealthy(in_service("i-2", "c", "127.10.3.11")),
    ];
    let actions = plan(&i, NOW);
    assert_eq!(terminated(&actions), ["i-1"], "two unhealthy: one replaced");
    let Action::Terminate { cause, .. } = &actions[0] else {
        unreachable!()
    };
    assert_eq!(
        cause.activity_text(),
        "an instance was taken out of service in response to a load balancer health check \
         failure (load balancer health checks of target group proxies-tg fail on every node)"
    );

    // The executor marked it; it still serves until its task takes it out of service.
    i.instances[0].replaced_for_lb_health = true;
    assert_eq!(terminated(&plan(&i, NOW)), Vec::<String>::new());
    // Terminating (still draining, still holding its address): its replacement launches,
    // and the second unhealthy one waits.
    i.instances[0].lifecycle = Lifecycle::Terminating;
    let actions = plan(&i, NOW);
    assert_eq!(terminated(&actions), Vec::<String>::new());
    assert_eq!(launches(&actions), pairs(&[("a", "127.10.1.12")]));
    // The old one gone, the replacement Pending: still waiting.
    i.instances.remove(0);
    i.instances
        .push(instance("i-3", "a", "127.10.1.12", Lifecycle::Pending));
    assert_eq!(plan(&i, NOW), vec![]);
    // The replacement in service but not yet found healthy by the balancer: still waiting.
    i.instances[1].lifecycle = Lifecycle::InService;
    i.instances[1].passed_lb_health = false;
    assert_eq!(plan(&i, NOW), vec![]);
    // Once it has passed, the second one goes.
    i.instances[1].passed_lb_health = true;
    assert_eq!(terminated(&plan(&i, NOW)), ["i-2"]);
}

#[test]
fn a_replacement_that_fails_the_load_balancer_checks_holds_further_replacements() {
    let spec = group(&["a", "c"], 2, 2);
    let zones = zones();
    let mut i = input(&spec, &zones, 2);
    // i-1 served, then failed (say a security group now drops the nodes) and was replaced by
    // i-3, which fails the same way without ever passing; i-2 fails too.
    let mut replacement = lb_unhealthy(in_service("i-3", "a", "127.10.1.12"));
    replacement.passed_lb_health = false;
    i.instances = vec![
        lb_unhealthy(in_service("i-2", "c", "127.10.3.11")),
        replacement,
    ];
    let actions = plan(&i, NOW);
    assert_eq!(
        terminated(&actions),
        Vec::<String>::new(),
        "no further replacement"
    );
    assert_eq!(
        actions,
        vec![Action::HoldReplacements {
            instance: "i-3".into(),
            cause: Cause::LoadBalancerHealth {
                target_group: "proxies-tg".into()
            },
        }]
    );
    // Other causes still replace.
    i.instances[0].unhealthy = Some(Cause::User(UserRequest::MarkUnhealthy));
    assert_eq!(terminated(&plan(&i, NOW)), ["i-2"]);
    // Once the replacement passes (the cause fixed), replacing resumes.
    i.instances[0].unhealthy = i.instances[1].unhealthy.clone();
    i.instances[1].passed_lb_health = true;
    i.instances[1].unhealthy = None;
    assert_eq!(terminated(&plan(&i, NOW)), ["i-2"]);
}

#[test]
fn a_load_balancer_replacement_ends_the_replacements_of_its_pass() {
    let spec = group(&["a", "c"], 2, 2);
    let zones = zones();
    let mut i = input(&spec, &zones, 2);
    let mut by_hand = in_service("i-2", "c", "127.10.3.11");
    by_hand.unhealthy = Some(Cause::User(UserRequest::MarkUnhealthy));
    i.instances = vec![lb_unhealthy(in_service("i-1", "a", "127.10.1.11")), by_hand];
    assert_eq!(terminated(&plan(&i, NOW)), ["i-1"]);
    // Tracked the other way round, both go.
    i.instances.reverse();
    assert_eq!(terminated(&plan(&i, NOW)), ["i-2", "i-1"]);
}

#[test]
fn unhealthy_instances_not_in_service_are_not_replaced_here() {
    let spec = group(&["a"], 1, 1);
    let zones = zones();
    let mut i = input(&spec, &zones, 1);
    i.instances = vec![lb_unhealthy(instance(
        "i-1",
        "a",
        "127.10.1.11",
        Lifecycle::Pending,
    ))];
    assert_eq!(plan(&i, NOW), vec![]);
}

#[test]
fn target_tracking_moves_desired_within_bounds_and_cooldowns() {
    let mut spec = group(&["a", "c"], 1, 4);
    spec.scaling = Some(Scaling {
        target_active_connections_per_instance: 100,
        scale_out_cooldown: Duration::from_secs(30),
        scale_in_cooldown: Duration::from_secs(60),
    });
    let zones = zones();
    let mut i = input(&spec, &zones, 1);
    i.instances = vec![in_service("i-1", "a", "127.10.1.11")];
    i.scaling = Some(ScalingInput {
        active_connections: 250,
        last_out: None,
        last_in: None,
    });
    let actions = plan(&i, NOW);
    assert_eq!(
        actions[0],
        Action::SetDesired {
            from: 1,
            to: 3,
            direction: Direction::Out,
            cause: Cause::TargetTracking {
                per_instance: 250.0,
                target: 100
            },
        }
    );
    assert_eq!(
        launches(&actions),
        pairs(&[("c", "127.10.3.11"), ("a", "127.10.1.12")]),
        "the same pass launches for the new desired capacity"
    );

    // Scaled out 10 s ago: no further scale-out yet.
    i.scaling = Some(ScalingInput {
        active_connections: 1000,
        last_out: Some(UnixMillis(NOW.0 - 10_000)),
        last_in: None,
    });
    i.desired = 3;
    assert!(!plan(&i, NOW)
        .iter()
        .any(|a| matches!(a, Action::SetDesired { .. })));

    // Scaling in waits for the scale-in cooldown after a scale-out too.
    i.instances.push(in_service("i-2", "c", "127.10.3.11"));
    i.instances.push(in_service("i-3", "a", "127.10.1.12"));
    i.scaling = Some(ScalingInput {
        active_connections: 0,
        last_out: Some(UnixMillis(NOW.0 - 40_000)),
        last_in: None,
    });
    assert_eq!(plan(&i, NOW), vec![]);
    i.scaling.as_mut().unwrap().last_out = Some(UnixMillis(NOW.0 - 60_000));
    let actions = plan(&i, NOW);
    assert!(matches!(
        actions[0],
        Action::SetDesired {
            from: 3,
            to: 1,
            direction: Direction::In,
            ..
        }
    ));
    assert_eq!(
        terminated(&actions),
        ["i-3"],
        "one scale-in victim per pass"
    );
}

#[test]
fn target_tracking_needs_an_instance_in_service() {
    let mut spec = group(&["a"], 1, 4);
    spec.scaling = Some(Scaling {
        target_active_connections_per_instance: 10,
        scale_out_cooldown: Duration::ZERO,
        scale_in_cooldown: Duration::ZERO,
    });
    let zones = zones();
    let mut i = input(&spec, &zones, 1);
    i.instances = vec![instance("i-1", "a", "127.10.1.11", Lifecycle::Pending)];
    i.scaling = Some(ScalingInput {
        active_connections: 500,
        ..Default::default()
    });
    assert_eq!(plan(&i, NOW), vec![]);
}

#[test]
fn zones_two_apart_are_rebalanced_launch_first_then_the_surplus_goes() {
    let spec = group(&["a", "c"], 1, 6);
    let zones = zones();
    let mut p = input(&spec, &zones, 4);
    p.instances = vec![
        in_service("i-a1", "a", "127.10.1.11"),
        in_service("i-a2", "a", "127.10.1.12"),
        in_service("i-a3", "a", "127.10.1.13"),
        in_service("i-c1", "c", "127.10.3.11"),
    ];
    let actions = plan(&p, NOW);
    assert_eq!(launches(&actions), pairs(&[("c", "127.10.3.12")]));
    assert!(matches!(
        &actions[0],
        Action::Launch { cause: Cause::Rebalance { from_zone, to_zone }, .. }
            if from_zone == "a" && to_zone == "c"
    ));
    // The launch served: one too many, the newest of the most populated zone goes.
    let mut newest = in_service("i-a3", "a", "127.10.1.13");
    newest.launched_at = NOW;
    p.instances[2] = newest;
    p.instances.push(in_service("i-c2", "c", "127.10.3.12"));
    assert_eq!(terminated(&plan(&p, NOW)), vec!["i-a3"]);
}

#[test]
fn no_rebalance_one_apart_or_while_anything_else_goes_on() {
    let spec = group(&["a", "c"], 1, 6);
    let zones = zones();
    let mut p = input(&spec, &zones, 3);
    p.instances = vec![
        in_service("i-a1", "a", "127.10.1.11"),
        in_service("i-a2", "a", "127.10.1.12"),
        in_service("i-c1", "c", "127.10.3.11"),
    ];
    assert!(plan(&p, NOW).is_empty(), "one apart: balanced enough");
    p.desired = 4;
    p.instances
        .push(instance("i-a3", "a", "127.10.1.13", Lifecycle::Pending));
    assert!(plan(&p, NOW).is_empty(), "a launch pending");
    p.instances[3].lifecycle = Lifecycle::InService;
    p.instances[0] = lb_unhealthy(in_service("i-a1", "a", "127.10.1.11"));
    assert!(launches(&plan(&p, NOW)).is_empty(), "a replacement first");
    // A zone launches may not go to (its host is not live) is not rebalanced into.
    p.instances[0] = in_service("i-a1", "a", "127.10.1.11");
    let only_a: Vec<Zone> = zones.iter().filter(|z| z.name == "a").cloned().collect();
    p.zones = &only_a;
    assert!(plan(&p, NOW).is_empty());
}
