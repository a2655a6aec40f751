//! `proxyfleet status [--json]`: load balancer nodes, targets with each node's verdict,
//! groups and instances of the running `up`.

use clap::Args;
use proxyfleet_admin::view::{StatusView, TierView};

use crate::client::{block_on, human_duration, table, Api, StateDir};
use crate::Failure;

#[derive(Args)]
pub struct StatusArgs {
    /// Print the admin API's JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// A tier of agents: read its state from the store this stack names (etcd), or from a
    /// lone agent's --state-dir, instead of asking an `up`.
    #[arg(short = 'f', long = "file")]
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    dir: StateDir,
}

pub fn run(args: StatusArgs) -> Result<(), Failure> {
    if let Some(file) = &args.file {
        let stack = crate::tier::load_stack(file)?;
        let store = crate::tier::open_store(&stack, &args.dir.state_dir, false)?;
        let status = block_on(async { crate::tier::status(&stack, &*store).await })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{}", crate::tier::render(&status));
        }
        return Ok(());
    }
    let api = Api::locate(&args.dir.state_dir)?;
    let status: StatusView = block_on(api.get_json("/api/status"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

/// A tier of agents' part of `status`: the etcd members, the controller, the hosts.
pub fn render_tier(t: &TierView) -> String {
    let mut out = String::new();
    if !t.etcd.is_empty() {
        let rows: Vec<Vec<String>> = t
            .etcd
            .iter()
            .map(|m| {
                vec![
                    m.endpoint.clone(),
                    if m.reachable {
                        "reachable"
                    } else {
                        "unreachable"
                    }
                    .to_string(),
                    if m.leader { "leader" } else { "" }.to_string(),
                    m.revision.to_string(),
                    m.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["ETCD MEMBER", "STATE", "RAFT", "REVISION", "ERROR"],
            &rows,
        ));
        out.push('\n');
    }
    match &t.leader {
        Some(l) => out.push_str(&format!(
            "controller: {} (term {}, lease {} ms)\n",
            l.host, l.term, l.lease_ms
        )),
        None => out.push_str("controller: none (no live leadership)\n"),
    }
    if !t.connected {
        out.push_str(&format!(
            "state: the store does not answer; shown as {} last saw it (revision {})\n",
            t.this_host, t.revision
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = t
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.zone.clone(),
                h.address.to_string(),
                h.roles.join(","),
                if h.live { "live" } else { "lost" }.to_string(),
                human_duration(h.announced_ms_ago as f64 / 1000.0),
                h.nodes.join(","),
            ]
        })
        .collect();
    out.push_str(&table(
        &["HOST", "ZONE", "ADDRESS", "ROLES", "STATE", "UP", "NODES"],
        &rows,
    ));
    out.push('\n');
    out
}

/// The tables `status` prints.
pub fn render(s: &StatusView) -> String {
    let mut out = String::new();
    if let Some(tier) = &s.tier {
        out.push_str(&render_tier(tier));
    }

    let rows: Vec<Vec<String>> = s
        .load_balancers
        .iter()
        .flat_map(|lb| {
            lb.nodes.iter().map(move |n| {
                let listeners = n
                    .listeners
                    .iter()
                    .map(|l| format!("{}->{}", l.port, l.target_group))
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    lb.name.clone(),
                    n.zone.clone(),
                    n.address.to_string(),
                    listeners,
                    if lb.cross_zone { "yes" } else { "no" }.to_string(),
                    n.accepted.to_string(),
                    n.active.to_string(),
                    n.refused.to_string(),
                    n.failed.to_string(),
                    n.full.to_string(),
                ]
            })
        })
        .collect();
    out.push_str(&table(
        &[
            "LOAD BALANCER",
            "ZONE",
            "ADDRESS",
            "LISTENERS",
            "CROSS-ZONE",
            "ACCEPTED",
            "ACTIVE",
            "REFUSED",
            "FAILED",
            "FULL",
        ],
        &rows,
    ));

    // Each target, then one indented line per node that checks it, with the reason.
    let mut rows = Vec::new();
    for t in &s.targets {
        rows.push(vec![
            t.id.clone(),
            t.group.clone(),
            t.zone.clone(),
            t.health.clone(),
            String::new(),
            // Open flows, out of the most it takes when it has a cap.
            match t.max_flows {
                Some(max) => format!("{}/{max}", t.active_flows),
                None => t.active_flows.to_string(),
            },
            t.new_flows.to_string(),
            t.connect_failures.to_string(),
            String::new(),
        ]);
        for n in &t.nodes {
            rows.push(vec![
                format!("  {}", n.node),
                String::new(),
                String::new(),
                n.health.clone(),
                human_duration(n.for_seconds),
                String::new(),
                String::new(),
                String::new(),
                n.reason.replace('\n', " ").trim().to_string(),
            ]);
        }
    }
    out.push('\n');
    out.push_str(&table(
        &[
            "TARGET",
            "TARGET GROUP",
            "ZONE",
            "HEALTH",
            "FOR",
            "ACTIVE",
            "FLOWS",
            "CONNECT FAILURES",
            "REASON",
        ],
        &rows,
    ));

    let rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            let in_service = s
                .instances
                .iter()
                .filter(|i| i.group == g.name && i.lifecycle == "InService")
                .count();
            vec![
                g.name.clone(),
                g.desired.to_string(),
                g.min.to_string(),
                g.max.to_string(),
                in_service.to_string(),
                g.zones.join(","),
                g.backoff_seconds
                    .map(|b| format!("next launch in {b:.0}s"))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "GROUP",
            "DESIRED",
            "MIN",
            "MAX",
            "IN SERVICE",
            "ZONES",
            "BACK-OFF",
        ],
        &rows,
    ));
    for g in &s.groups {
        if let Some(held) = &g.replacements_held {
            out.push_str(&format!("group {}: {held}\n", g.name));
        }
        if let Some(refresh) = &g.refresh {
            out.push_str(&format!("group {}: {refresh}\n", g.name));
        }
    }

    let rows: Vec<Vec<String>> = s
        .instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.group.clone(),
                i.zone.clone(),
                format!("{}:{}", i.address, i.port),
                i.lifecycle.clone(),
                i.health.clone(),
                human_duration(i.uptime_seconds),
                if i.pid == 0 {
                    "-".to_string()
                } else {
                    i.pid.to_string()
                },
                if i.protected { "yes" } else { "NO" }.to_string(),
                i.reason.replace('\n', " ").trim().to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "INSTANCE",
            "GROUP",
            "ZONE",
            "ADDRESS",
            "LIFECYCLE",
            "HEALTH",
            "UPTIME",
            "PID",
            "FIREWALLED",
            "REASON",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxyfleet_admin::view::{
        GroupView, InstanceView, ListenerView, LoadBalancerView, NodeView, TargetNodeView,
        TargetView,
    };

    #[test]
    fn renders_every_table() {
        let s = StatusView {
            tier: None,
            load_balancers: vec![LoadBalancerView {
                name: "proxy-lb".into(),
                cross_zone: false,
                nodes: vec![NodeView {
                    zone: "a".into(),
                    address: "127.10.1.10".parse().unwrap(),
                    listeners: vec![ListenerView {
                        port: 3128,
                        target_group: "proxies".into(),
                    }],
                    accepted: 7,
                    active: 1,
                    refused: 0,
                    failed: 0,
                    full: 3,
                }],
            }],
            targets: vec![TargetView {
                id: "127.10.1.11:3128".into(),
                group: "proxies".into(),
                address: "127.10.1.11".into(),
                zone: "a".into(),
                health: "Unhealthy".into(),
                draining: false,
                nodes: vec![TargetNodeView {
                    node: "proxy-lb/a".into(),
                    health: "Unhealthy".into(),
                    reason: "2 consecutive health checks failed: status 503".into(),
                    for_seconds: 75.0,
                }],
                active_flows: 0,
                new_flows: 9,
                bytes_to_target: 0,
                bytes_to_client: 0,
                connect_failures: 2,
                health_transitions: 2,
                max_flows: Some(8190),
                skipped_full: 0,
                checks_not_run: 0,
            }],
            instances: vec![InstanceView {
                id: "i-0a1b".into(),
                group: "proxies".into(),
                zone: "a".into(),
                address: "127.10.1.11".parse().unwrap(),
                port: 3128,
                pid: 0,
                lifecycle: "Pending".into(),
                health: "Healthy".into(),
                reason: String::new(),
                uptime_seconds: 3.0,
                protected: false,
                dir: "/s/instances/i-0a1b".into(),
            }],
            groups: vec![GroupView {
                name: "proxies".into(),
                min: 2,
                max: 2,
                desired: 2,
                zones: vec!["a".into(), "c".into()],
                backoff_seconds: Some(4.2),
                replacements_held: None,
                refresh: None,
            }],
        };
        let out = render(&s);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("LOAD BALANCER  ZONE  ADDRESS"),
            "{out}"
        );
        assert!(
            lines[1].starts_with("proxy-lb       a     127.10.1.10  3128->proxies"),
            "{out}"
        );
        assert!(out.contains("127.10.1.11:3128  proxies"), "{out}");
        assert!(lines[0].ends_with("FAILED  FULL"), "{out}");
        assert!(lines[1].ends_with(" 3"), "{out}");
        assert!(out.contains(" 0/8190 "), "active out of max_flows: {out}");
        assert!(
            lines.iter().any(|l| l.starts_with("  proxy-lb/a")
                && l.contains("Unhealthy")
                && l.contains("1m15s")
                && l.ends_with("2 consecutive health checks failed: status 503")),
            "{out}"
        );
        assert!(out.contains("next launch in 4s"), "{out}");
        assert!(
            lines.iter().any(|l| l.starts_with("i-0a1b")
                && l.contains("127.10.1.11:3128")
                && l.contains("Pending")
                && l.contains("3s")
                && l.contains(" -  ")
                && l.contains("NO")),
            "{out}"
        );
    }
}
