//! The reconcile loop: per group, a pass gathers the [`PlanInput`] from the running state,
//! asks the pure [`planner`](crate::planner) what to do, and does it — launches (an instance
//! task per instance), terminations (a command to the instance's task), desired-capacity
//! changes of the target-tracking policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_state::UnixMillis;

use crate::model::{now, ActivityStatus, Instance, InstanceHealth, Lifecycle};
use crate::planner::{self, Action, Direction, Launches, PlanInput, PlanInstance, ScalingInput};
use crate::runtime::{Command, GroupRuntime, GroupState, Shared};

/// Keeps one group at its desired size; woken by every change, and every half second.
pub(crate) async fn reconcile_loop(shared: Arc<Shared>, group: Arc<GroupRuntime>) {
    loop {
        reconcile(&shared, &group);
        tokio::select! {
            () = group.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

/// One pass. Address allocation is serialised across groups: the addresses another group
/// holds are read and this group's launches tracked under the same lock.
fn reconcile(shared: &Arc<Shared>, group: &Arc<GroupRuntime>) {
    if shared.stop.is_cancelled() {
        return;
    }
    let _allocation = shared.allocation.lock().unwrap_or_else(|p| p.into_inner());
    let now = UnixMillis::now();
    let input = plan_input(shared, group);
    let actions = planner::plan(&input, now);
    if !actions
        .iter()
        .any(|a| matches!(a, Action::HoldReplacements { .. }))
    {
        resume_replacements(shared, group);
    }
    for action in actions {
        if !execute(shared, group, action, now) {
            // The plan rested on a state that changed meanwhile: the next pass plans again.
            group.wake.notify_one();
            return;
        }
    }
}

/// Starts the churn stop, saying so once.
fn hold_replacements(
    shared: &Shared,
    group: &GroupRuntime,
    instance: &str,
    cause: &proxyfleet_state::Cause,
) {
    let reason = planner::held_reason(instance, cause);
    let held = crate::runtime::Held {
        instance: instance.to_string(),
        reason: reason.clone(),
    };
    {
        let mut state = group.lock();
        if state.replacements_held.as_ref() == Some(&held) {
            return;
        }
        state.replacements_held = Some(held);
    }
    tracing::warn!(group = %group.spec.name, instance, "{reason}");
    let _ = shared.store.record(
        &group.spec.name,
        "Holding replacements for load balancer health",
        &reason,
        ActivityStatus::Failed,
    );
}

/// Ends the churn stop, if it was in force, saying so.
fn resume_replacements(shared: &Shared, group: &GroupRuntime) {
    let Some(held) = group.lock().replacements_held.take() else {
        return;
    };
    tracing::info!(group = %group.spec.name, instance = held.instance, "replacements for load balancer health resume");
    let _ = shared.store.record(
        &group.spec.name,
        "Resuming replacements for load balancer health",
        &format!(
            "no new instance fails the load balancer's health checks any more (held since {} failed them)",
            held.instance
        ),
        ActivityStatus::Successful,
    );
}

fn node_addresses(shared: &Shared) -> Vec<IpAddr> {
    shared
        .stack
        .load_balancers
        .iter()
        .flat_map(|lb| lb.nodes.iter().map(|n| n.address))
        .collect()
}

fn plan_input<'a>(shared: &'a Shared, group: &'a GroupRuntime) -> PlanInput<'a> {
    let (desired, instances, launches, cooldowns, in_service) = {
        let state = group.lock();
        let in_service: Vec<SocketAddr> = state
            .instances
            .iter()
            .filter(|t| t.info.lifecycle == Lifecycle::InService)
            .map(|t| SocketAddr::new(t.info.address, t.info.port))
            .collect();
        (
            state.desired,
            plan_instances(&state),
            Launches {
                failures: state.failures,
                next_at: state.next_launch_at,
            },
            state.cooldowns,
            in_service,
        )
    };
    // The balancer is read outside the group's lock.
    let scaling = group.spec.scaling.as_ref().map(|_| ScalingInput {
        active_connections: crate::scaling::active_connections(
            &shared.balancer,
            &group.spec.target_groups,
            &in_service,
        ),
        last_out: cooldowns.last_out,
        last_in: cooldowns.last_in,
    });
    PlanInput {
        spec: &group.spec,
        desired,
        instances,
        zones: &shared.stack.zones,
        node_addresses: node_addresses(shared),
        addresses_in_use: shared.addresses_in_use_except(&group.spec.name),
        launches,
        surge: 0,
        scaling,
    }
}

fn plan_instances(state: &GroupState) -> Vec<PlanInstance> {
    state
        .instances
        .iter()
        .map(|t| PlanInstance {
            id: t.info.id.clone(),
            zone: t.info.zone.clone(),
            address: t.info.address,
            lifecycle: t.info.lifecycle,
            unhealthy: t.info.unhealthy_cause().cloned(),
            launched_at: UnixMillis((t.info.launched_at * 1000.0) as u64),
            replaced_for_lb_health: t.replaced_for_lb_health,
            passed_lb_health: t.passed_lb_health,
        })
        .collect()
}

/// Carries out one action; `false` when the plan is stale and the rest must not run.
fn execute(
    shared: &Arc<Shared>,
    group: &Arc<GroupRuntime>,
    action: Action,
    now: UnixMillis,
) -> bool {
    match action {
        Action::SetDesired {
            from,
            to,
            direction,
            cause,
        } => {
            {
                let mut state = group.lock();
                if state.desired != from {
                    return false;
                }
                state.desired = to;
                match direction {
                    Direction::Out => state.cooldowns.last_out = Some(now),
                    Direction::In => state.cooldowns.last_in = Some(now),
                }
            }
            let name = &group.spec.name;
            let _ = shared.store.set_desired(name, to);
            let _ = shared.store.record(
                name,
                &format!("Setting desired capacity from {from} to {to}"),
                &cause.activity_text(),
                ActivityStatus::Successful,
            );
            tracing::info!(group = %name, from, to, %cause, "target tracking changed the desired capacity");
            group.wake.notify_one();
        }
        Action::Launch {
            zone,
            address,
            cause,
        } => launch(shared, group, zone, address, &cause),
        Action::Terminate { instance, cause } => {
            if cause.is_load_balancer_health() {
                group.update(&shared.store, &instance, |t| {
                    t.replaced_for_lb_health = true
                });
            }
            let state = group.lock();
            if let Some(t) = state.instances.iter().find(|t| t.info.id == instance) {
                let _ = t.commands.send(Command::Terminate { cause });
            }
        }
        Action::HoldReplacements { instance, cause } => {
            hold_replacements(shared, group, &instance, &cause);
        }
        Action::NoFreeAddress { zone } => {
            tracing::error!(group = %group.spec.name, zone, "no free address left in the zone for a new instance");
        }
    }
    true
}

/// Tracks a new Pending instance at `address` and starts its task, which launches it.
fn launch(
    shared: &Arc<Shared>,
    group: &Arc<GroupRuntime>,
    zone: String,
    address: IpAddr,
    cause: &proxyfleet_state::Cause,
) {
    let spec = &group.spec;
    let id = new_id();
    let dir = shared.state_dir.join("instances").join(&id);
    let info = Instance {
        id: id.clone(),
        group: spec.name.clone(),
        zone: zone.clone(),
        address,
        port: spec.port,
        pid: 0,
        start_ticks: 0,
        lifecycle: Lifecycle::Pending,
        health: InstanceHealth::Healthy,
        reason: None,
        launched_at: now(),
        dir: dir.display().to_string(),
        // Kernel-enforced, or (without nftables) enforced in-process by proxyfleet's own proxy.
        protected: shared.launcher.kernel_firewall()
            || crate::firewall::runs_own_proxy(&group.template.command),
    };
    let description = format!("Launching a new instance: {id} ({address}, zone {zone})");
    let activity = shared
        .store
        .begin(&spec.name, &description, &cause.activity_text())
        .ok();
    tracing::info!(group = %spec.name, instance = %id, %address, zone, "launching");
    crate::fleet::spawn_instance(shared, group, info, None, activity);
}

/// `i-` and 12 hex digits from the clock and a counter: unique within a state directory.
fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = proxyfleet_lb::maglev::hash(
        nanos,
        &COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes(),
    );
    format!("i-{:012x}", mixed & 0xffff_ffff_ffff)
}
