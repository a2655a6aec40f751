//! What changing a running tier from one stack to another takes: [`plan`] compares the
//! running [`Stack`] with the new one, object by object, and says for each change what it
//! costs — done in place, the instances' configuration reloaded, the instances replaced, or
//! refused while the tier runs (with why). `proxyfleet diff` prints it; `proxyfleet apply`
//! prints it and then carries it out, all or nothing.

use std::fmt;

use serde::Serialize;

use crate::{Group, LaunchTemplate, Stack};

/// What one change costs a running tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "why", rename_all = "snake_case")]
pub enum Cost {
    /// Applied to the running tier as it serves.
    InPlace,
    /// The instances' files are rewritten and their processes told to read them again
    /// (SIGHUP); connections stay.
    ReloadInstances,
    /// Every instance of the groups using it must be replaced with one launched from the new
    /// template.
    RollingReplacement,
    /// Cannot be changed while the tier runs: why.
    NotWhileRunning(String),
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cost::InPlace => f.write_str("in place"),
            Cost::ReloadInstances => f.write_str("reload instances"),
            Cost::RollingReplacement => f.write_str("rolling replacement"),
            Cost::NotWhileRunning(why) => write!(f, "not allowed while running: {why}"),
        }
    }
}

/// One change of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `group proxies`, `security group sg`, ...
    pub object: String,
    /// What changes, e.g. `max 4 -> 6`.
    pub change: String,
    pub cost: Cost,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.object, self.change, self.cost)
    }
}

/// Whether every step of `steps` can be applied to a running tier.
pub fn applicable(steps: &[Step]) -> bool {
    !steps
        .iter()
        .any(|s| matches!(s.cost, Cost::NotWhileRunning(_)))
}

/// Why restarting is the way to change the tier's shape.
const SHAPE: &str =
    "it is the running tier's shape (its addresses and who runs what): change it with down and up";
/// Why the balancer's settings need a restart for now.
const BALANCER: &str =
    "the load balancer's nodes take their listeners and target groups at start (only health checks and deregistration delays change live): change them with down and up";

/// The changes from `running` to `next`, in the stack file's order of sections.
pub fn plan(running: &Stack, next: &Stack) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut step = |object: String, change: String, cost: Cost| {
        steps.push(Step {
            object,
            change,
            cost,
        })
    };
    let shape = || Cost::NotWhileRunning(SHAPE.to_string());
    if running.zones != next.zones {
        step("zones".into(), "changed".into(), shape());
    }
    if running.hosts != next.hosts || running.etcd != next.etcd || running.dns != next.dns {
        step("hosts, etcd and dns".into(), "changed".into(), shape());
    }
    if running.admin != next.admin {
        step(
            "admin".into(),
            "changed".into(),
            Cost::NotWhileRunning(
                "the API listens where it started: change it with down and up".into(),
            ),
        );
    }
    if running.networks != next.networks || running.service_networks != next.service_networks {
        step(
            "networks".into(),
            "changed (the security groups and the destination guard that name them are rewritten)"
                .into(),
            Cost::InPlace,
        );
    }
    for (name, old, new) in by_name(&running.security_groups, &next.security_groups, |s| &s.name) {
        let change = match (old, new) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            _ => "ingress rules changed (the firewall is rewritten in one transaction)",
        };
        step(
            format!("security group {name}"),
            change.into(),
            Cost::InPlace,
        );
    }
    for (name, old, new) in by_name(&running.load_balancers, &next.load_balancers, |l| &l.name) {
        if let (Some(o), Some(n)) = (old, new) {
            let same_but_listeners = proxyfleet_lb::spec::LoadBalancerSpec {
                listeners: n.listeners.clone(),
                ..o.clone()
            } == *n;
            if same_but_listeners {
                for (change, cost) in listener_changes(&o.listeners, &n.listeners) {
                    step(format!("load balancer {name}"), change, cost);
                }
                continue;
            }
        }
        let change = match (old, new) {
            (None, Some(_)) => "added".to_string(),
            (Some(_), None) => "removed".to_string(),
            (Some(o), Some(n)) if o.nodes != n.nodes => "nodes changed".to_string(),
            (Some(o), Some(n)) if o.listeners != n.listeners => "listeners changed".to_string(),
            _ => "settings changed".to_string(),
        };
        let cost = match (old, new) {
            (Some(o), Some(n)) if o.nodes == n.nodes => Cost::NotWhileRunning(BALANCER.into()),
            _ => shape(),
        };
        step(format!("load balancer {name}"), change, cost);
    }
    for (name, old, new) in by_name(&running.target_groups, &next.target_groups, |t| &t.name) {
        let object = format!("target group {name}");
        let (Some(o), Some(n)) = (old, new) else {
            let change = if old.is_none() { "added" } else { "removed" };
            step(
                object,
                change.into(),
                Cost::NotWhileRunning(BALANCER.into()),
            );
            continue;
        };
        // The health check and the deregistration delay are retuned on the running nodes.
        let tuned = |t: &proxyfleet_lb::spec::TargetGroupSpec| {
            let mut t = t.clone();
            t.health_check = n.health_check.clone();
            t.deregistration_delay = n.deregistration_delay;
            t
        };
        if o.health_check != n.health_check {
            step(
                object.clone(),
                "health check changed (from each node's next check)".into(),
                Cost::InPlace,
            );
        }
        if o.deregistration_delay != n.deregistration_delay {
            step(
                object.clone(),
                format!(
                    "deregistration delay {:?} -> {:?} (drains that begin from now)",
                    o.deregistration_delay, n.deregistration_delay
                ),
                Cost::InPlace,
            );
        }
        if tuned(o) != *n {
            step(
                object,
                "settings changed".into(),
                Cost::NotWhileRunning(BALANCER.into()),
            );
        }
    }
    for (name, old, new) in by_name(&running.launch_templates, &next.launch_templates, |t| {
        &t.name
    }) {
        let (change, cost) = match (old, new) {
            (None, Some(_)) => ("added".to_string(), Cost::InPlace),
            (Some(_), None) => ("removed".to_string(), Cost::InPlace),
            (Some(o), Some(n)) => template_change(o, n),
            (None, None) => unreachable!("by_name yields one side at least"),
        };
        step(format!("launch template {name}"), change, cost);
    }
    for (name, old, new) in by_name(&running.groups, &next.groups, |g| &g.name) {
        match (old, new) {
            (Some(o), Some(n)) => {
                for (change, cost) in group_changes(o, n) {
                    step(format!("group {name}"), change, cost);
                }
            }
            (None, Some(_)) => step(format!("group {name}"), "added".into(), shape()),
            (Some(_), None) => step(format!("group {name}"), "removed".into(), shape()),
            (None, None) => {}
        }
    }
    steps
}

/// The groups that going from `running` to `next` rolls through by an instance refresh (the
/// plan's "rolling replacement" steps): another template, or their template changed more
/// than a reload can take.
pub fn refreshed_groups(running: &Stack, next: &Stack) -> Vec<String> {
    next.groups
        .iter()
        .filter(|g| {
            let Some(before) = running.group(&g.name) else {
                return false;
            };
            if before.launch_template != g.launch_template {
                return true;
            }
            match (
                running.launch_template(&g.launch_template),
                next.launch_template(&g.launch_template),
            ) {
                (Some(o), Some(n)) if o != n => template_change(o, n).1 == Cost::RollingReplacement,
                _ => false,
            }
        })
        .map(|g| g.name.clone())
        .collect()
}

/// A load balancer's listeners, one step per port: added (to a target group it serves
/// already) and removed are done on the running nodes; anything else is refused.
fn listener_changes(
    old: &[proxyfleet_lb::spec::ListenerSpec],
    new: &[proxyfleet_lb::spec::ListenerSpec],
) -> Vec<(String, Cost)> {
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| o.port == n.port) {
            Some(o) if o == n => {}
            Some(_) => out.push((
                format!("listener {} changed", n.port),
                Cost::NotWhileRunning(
                    "a listener's target group or allowed sources are taken at start: remove it and add it on another port, or down and up".into(),
                ),
            )),
            None if old.iter().any(|o| o.target_group == n.target_group) => out.push((
                format!(
                    "listener {} -> target group {} added (bound on every node first)",
                    n.port, n.target_group
                ),
                Cost::InPlace,
            )),
            None => out.push((
                format!("listener {} -> target group {} added", n.port, n.target_group),
                Cost::NotWhileRunning(format!(
                    "the load balancer does not serve target group {} yet (its nodes check only the groups of their listeners at start): down and up",
                    n.target_group
                )),
            )),
        }
    }
    for o in old {
        if !new.iter().any(|n| n.port == o.port) {
            out.push((
                format!(
                    "listener {} removed (stops accepting at once; its open flows drain)",
                    o.port
                ),
                Cost::InPlace,
            ));
        }
    }
    out
}

/// A template's change: files only, and its instances run a program that reads its
/// configuration again on SIGHUP (proxyfleet's proxy, Squid): reload; anything else: replace.
fn template_change(old: &LaunchTemplate, new: &LaunchTemplate) -> (String, Cost) {
    let files: Vec<&str> = new
        .files
        .iter()
        .filter(|f| !old.files.contains(f))
        .map(|(name, _)| name.as_str())
        .chain(
            old.files
                .iter()
                .filter(|(name, _)| !new.files.iter().any(|(n, _)| n == name))
                .map(|(name, _)| name.as_str()),
        )
        .collect();
    let only_files = old.command == new.command
        && old.environment == new.environment
        && old.stop_timeout == new.stop_timeout;
    if only_files && reloads_on_hup(&new.command) {
        let names = files.join(", ");
        return (
            format!("files {names} changed (rewritten in each instance's directory, then SIGHUP)"),
            Cost::ReloadInstances,
        );
    }
    let mut what = Vec::new();
    if old.command != new.command {
        what.push("command".to_string());
    }
    if old.environment != new.environment {
        what.push("environment".to_string());
    }
    if old.stop_timeout != new.stop_timeout {
        what.push("stop_timeout".to_string());
    }
    if !files.is_empty() {
        what.push(format!("files {}", files.join(", ")));
    }
    (
        format!(
            "{} changed (an instance refresh of every group using it)",
            what.join(", ")
        ),
        Cost::RollingReplacement,
    )
}

/// proxyfleet's own proxy and Squid read their configuration again on SIGHUP.
fn reloads_on_hup(command: &[String]) -> bool {
    let program = |c: &String| {
        std::path::Path::new(c)
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    };
    match command.first().and_then(program).as_deref() {
        Some("proxyfleet") => command.get(1).is_some_and(|a| a == "proxy"),
        Some("squid") => true,
        _ => false,
    }
}

/// A group's changes, one step each.
fn group_changes(o: &Group, n: &Group) -> Vec<(String, Cost)> {
    let mut out = Vec::new();
    let mut bound = |what: &str, a: u32, b: u32| {
        if a != b {
            out.push((format!("{what} {a} -> {b}"), Cost::InPlace));
        }
    };
    bound("min", o.min, n.min);
    bound("max", o.max, n.max);
    bound("desired", o.desired, n.desired);
    if o.scaling != n.scaling {
        out.push(("scaling policy changed".into(), Cost::InPlace));
    }
    if o.health_check_type != n.health_check_type || o.grace_period != n.grace_period {
        out.push((
            "health check type or grace period changed".into(),
            Cost::InPlace,
        ));
    }
    if o.security_groups != n.security_groups {
        out.push((
            format!(
                "security groups [{}] -> [{}] (the firewall is rewritten)",
                o.security_groups.join(", "),
                n.security_groups.join(", ")
            ),
            Cost::InPlace,
        ));
    }
    if o.launch_template != n.launch_template {
        out.push((
            format!(
                "launch template {} -> {} (an instance refresh)",
                o.launch_template, n.launch_template
            ),
            Cost::RollingReplacement,
        ));
    }
    if o.zones != n.zones
        || o.port != n.port
        || o.target_groups != n.target_groups
        || o.first_address != n.first_address
    {
        out.push((
            "zones, port, target groups or first address changed".into(),
            Cost::NotWhileRunning(SHAPE.into()),
        ));
    }
    out
}

/// The objects of two lists matched by name: (name, old, new) where they differ, in the new
/// list's order, then the removed ones.
fn by_name<'a, T: PartialEq>(
    old: &'a [T],
    new: &'a [T],
    name: impl Fn(&T) -> &String,
) -> Vec<(String, Option<&'a T>, Option<&'a T>)> {
    let mut out = Vec::new();
    for n in new {
        let o = old.iter().find(|o| name(o) == name(n));
        if o != Some(n) {
            out.push((name(n).clone(), o, Some(n)));
        }
    }
    for o in old {
        if !new.iter().any(|n| name(n) == name(o)) {
            out.push((name(o).clone(), Some(o), None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Stack {
        crate::parse(crate::BUILTIN, std::path::Path::new("builtin.yaml")).expect("built-in")
    }

    fn edited(edits: &[(&str, &str)]) -> Stack {
        let mut text = crate::BUILTIN.to_string();
        for (from, to) in edits {
            assert!(text.contains(from), "{from}");
            text = text.replacen(from, to, 1);
        }
        crate::parse(&text, std::path::Path::new("edited.yaml")).expect("edited stack")
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(Step::to_string).collect()
    }

    #[test]
    fn the_same_stack_plans_nothing() {
        assert!(plan(&builtin(), &builtin()).is_empty());
    }

    #[test]
    fn bounds_policy_and_security_groups_change_in_place() {
        let next = edited(&[
            ("    max: 2\n", "    max: 4\n"),
            ("      - { protocol: tcp, ports: \"3128\", from: c }\n", ""),
        ]);
        let steps = plan(&builtin(), &next);
        assert_eq!(
            lines(&steps),
            [
                "security group proxy-sg: ingress rules changed (the firewall is rewritten in one transaction) (in place)",
                "group proxies: max 2 -> 4 (in place)",
            ]
        );
        assert!(applicable(&steps));
    }

    #[test]
    fn a_squid_conf_change_reloads_and_a_command_change_needs_a_refresh() {
        let acl = edited(&[("acl app src 127.20.0.0/16", "acl app src 127.20.0.0/24")]);
        assert_eq!(
            lines(&plan(&builtin(), &acl)),
            ["launch template proxy: files squid.conf changed (rewritten in each instance's directory, then SIGHUP) (reload instances)"]
        );
        let command = edited(&[("stop_timeout: 10s", "stop_timeout: 20s")]);
        let steps = plan(&builtin(), &command);
        assert!(applicable(&steps));
        assert_eq!(
            lines(&steps),
            ["launch template proxy: stop_timeout changed (an instance refresh of every group using it) (rolling replacement)"]
        );
        assert_eq!(refreshed_groups(&builtin(), &command), ["proxies"]);
        assert!(
            refreshed_groups(&builtin(), &acl).is_empty(),
            "a reload, no refresh"
        );
    }

    #[test]
    fn listeners_are_added_and_removed_in_place_to_the_groups_served_already() {
        let steps = plan(
            &builtin(),
            &edited(&[(
                "  - { load_balancer: front, port: 3128, protocol: tcp, target_group: proxies }",
                "  - { load_balancer: front, port: 8080, protocol: tcp, target_group: proxies }",
            )]),
        );
        assert_eq!(
            lines(&steps),
            [
                "load balancer front: listener 8080 -> target group proxies added (bound on every node first) (in place)",
                "load balancer front: listener 3128 removed (stops accepting at once; its open flows drain) (in place)",
            ]
        );
    }

    #[test]
    fn the_tiers_shape_and_the_balancers_settings_are_refused_saying_why() {
        let next = edited(&[
            (
                "nodes: { a: 127.10.1.10, c: 127.10.2.10 }",
                "nodes: { a: 127.10.1.9, c: 127.10.2.10 }",
            ),
            ("deregistration_delay: 5s", "deregistration_delay: 3s"),
        ]);
        let steps = plan(&builtin(), &next);
        assert!(!applicable(&steps));
        let text = lines(&steps).join("\n");
        assert!(text.contains("load balancer front: nodes changed (not allowed while running: it is the running tier's shape"), "{text}");
        assert!(text.contains("target group proxies: deregistration delay 5s -> 3s (drains that begin from now) (in place)"), "{text}");
    }
}
