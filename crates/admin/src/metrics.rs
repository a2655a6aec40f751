//! `GET /metrics`: the balancer's and the groups' snapshots in Prometheus text format.
//!
//! Every scrape fills a fresh registry from fresh snapshots: the numbers already live in the
//! balancer's and controller's own counters, so there is nothing to keep between scrapes,
//! and a target or instance that is gone simply stops being reported.

use std::collections::BTreeMap;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proxyfleet_state::Lifecycle;
use proxyfleet_state::TargetHealth as Health;

use crate::Control;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The most recent activities counted by `proxyfleet_activities`.
const ACTIVITY_WINDOW: usize = 100_000;

type Labels = Vec<(&'static str, String)>;

fn counters() -> Family<Labels, Counter> {
    Family::default()
}

fn gauges() -> Family<Labels, Gauge> {
    Family::default()
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn render(control: &dyn Control) -> Result<String, std::fmt::Error> {
    let balancer = control.balancer();
    let groups = control.groups();
    let activities = control.activities(None, ACTIVITY_WINDOW);

    let mut registry = Registry::with_prefix("proxyfleet");

    let t_active = gauges();
    let t_new = counters();
    let t_sent = counters();
    let t_received = counters();
    let t_connect_failures = counters();
    let t_transitions = counters();
    let t_healthy = gauges();
    let t_max = gauges();
    let t_skipped_full = counters();
    let t_checks_not_run = counters();
    for t in &balancer.targets {
        let labels: Labels = vec![
            ("group", t.group.clone()),
            ("target", t.id.clone()),
            ("zone", t.zone.clone()),
        ];
        t_active.get_or_create(&labels).set(gauge(t.active_flows));
        t_new.get_or_create(&labels).inc_by(t.new_flows);
        t_sent.get_or_create(&labels).inc_by(t.bytes_to_target);
        t_received.get_or_create(&labels).inc_by(t.bytes_to_client);
        t_connect_failures
            .get_or_create(&labels)
            .inc_by(t.connect_failures);
        t_transitions
            .get_or_create(&labels)
            .inc_by(t.health_transitions);
        if let Some(max) = t.max_flows {
            t_max.get_or_create(&labels).set(gauge(max));
        }
        t_skipped_full.get_or_create(&labels).inc_by(t.skipped_full);
        t_checks_not_run
            .get_or_create(&labels)
            .inc_by(t.checks_not_run);
        for h in &t.health {
            let mut with_node = labels.clone();
            with_node.push(("node", h.node.clone()));
            t_healthy
                .get_or_create(&with_node)
                .set(i64::from(h.health == Health::Healthy));
        }
    }
    registry.register("target_active_flows", "Flows open to the target", t_active);
    registry.register(
        "target_new_flows",
        "Flows the load balancer sent to the target",
        t_new,
    );
    registry.register(
        "target_sent_bytes",
        "Bytes forwarded from clients to the target",
        t_sent,
    );
    registry.register(
        "target_received_bytes",
        "Bytes forwarded from the target to clients",
        t_received,
    );
    registry.register(
        "target_connect_failures",
        "Connects to the target that failed on the data path",
        t_connect_failures,
    );
    registry.register(
        "target_health_transitions",
        "Changes of the target's health on any node",
        t_transitions,
    );
    registry.register(
        "target_healthy",
        "1 when the node judges the target healthy, else 0",
        t_healthy,
    );
    registry.register(
        "target_max_flows",
        "The most flows the target takes at once (absent: no cap)",
        t_max,
    );
    registry.register(
        "target_skipped_full",
        "New flows that passed the target by because it was full",
        t_skipped_full,
    );
    registry.register(
        "target_checks_not_run",
        "Health checks this host could not run (no descriptor, no buffer); never counted against the target",
        t_checks_not_run,
    );

    let n_accepted = counters();
    let n_refused = counters();
    let n_failed = counters();
    let n_full = counters();
    let n_active = gauges();
    for lb in &balancer.load_balancers {
        for n in &lb.nodes {
            let labels: Labels = vec![("load_balancer", lb.name.clone()), ("zone", n.zone.clone())];
            n_accepted.get_or_create(&labels).inc_by(n.accepted);
            n_refused.get_or_create(&labels).inc_by(n.refused);
            n_failed.get_or_create(&labels).inc_by(n.failed);
            n_full.get_or_create(&labels).inc_by(n.full);
            n_active.get_or_create(&labels).set(gauge(n.active));
        }
    }
    registry.register(
        "lb_node_accepted_connections",
        "Client connections the node accepted",
        n_accepted,
    );
    registry.register(
        "lb_node_refused_connections",
        "Client connections the node refused (allowed_cidrs, max_connections_per_source)",
        n_refused,
    );
    registry.register(
        "lb_node_failed_connections",
        "Client connections the node could not forward to any target",
        n_failed,
    );
    registry.register(
        "lb_node_full_connections",
        "Client connections the node closed because every target they could use was full",
        n_full,
    );
    registry.register(
        "lb_node_active_connections",
        "Client connections open on the node",
        n_active,
    );

    let i_up = gauges();
    let g_desired = gauges();
    let g_min = gauges();
    let g_max = gauges();
    let g_in_service = gauges();
    for g in &groups {
        let labels: Labels = vec![("group", g.name.clone())];
        g_desired.get_or_create(&labels).set(i64::from(g.desired));
        g_min.get_or_create(&labels).set(i64::from(g.min));
        g_max.get_or_create(&labels).set(i64::from(g.max));
        let in_service = g
            .instances
            .iter()
            .filter(|i| i.lifecycle == Lifecycle::InService)
            .count();
        g_in_service
            .get_or_create(&labels)
            .set(i64::try_from(in_service).unwrap_or(i64::MAX));
        for i in g
            .instances
            .iter()
            .filter(|i| i.lifecycle != Lifecycle::Terminated)
        {
            let labels: Labels = vec![
                ("group", g.name.clone()),
                ("instance", i.id.clone()),
                ("zone", i.zone.clone()),
                ("lifecycle", i.lifecycle.as_str().to_string()),
            ];
            i_up.get_or_create(&labels).set(1);
        }
    }
    registry.register(
        "instance_up",
        "1 for every instance not yet terminated, labelled with its lifecycle state",
        i_up,
    );
    registry.register(
        "group_desired_instances",
        "The group's desired capacity",
        g_desired,
    );
    registry.register("group_min_instances", "The group's minimum size", g_min);
    registry.register("group_max_instances", "The group's maximum size", g_max);
    registry.register(
        "group_in_service_instances",
        "The group's instances in service",
        g_in_service,
    );

    // Activities change status (InProgress -> Successful), so by-status counts are a gauge.
    let mut by_status: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for a in &activities {
        *by_status
            .entry((a.group.clone(), a.status.as_str()))
            .or_default() += 1;
    }
    let a_count = gauges();
    for ((group, status), n) in by_status {
        a_count
            .get_or_create(&vec![("group", group), ("status", status.to_string())])
            .set(n);
    }
    registry.register(
        "activities",
        "Activities in the history (the latest 100000) by group and status",
        a_count,
    );

    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
