//! One instance's task: launch (or adopt), wait until it serves, register it with its target
//! groups, watch its process and its load-balancer health, and on request take it out of
//! service — deregister, wait for its flows to drain, SIGTERM, SIGKILL after the stop timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxyfleet_lb::Health;
use proxyfleet_stack::{HealthCheckType, Placeholders};
use proxyfleet_state::{Cause, UnixMillis};
use tokio::sync::mpsc;

use crate::model::{ActivityStatus, InstanceHealth, Lifecycle};
use crate::process::InstanceProcess;
use crate::runtime::{Command, GroupRuntime, Shared};

/// How long a new instance may take to start serving.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness and load-balancer health are looked at.
const POLL: Duration = Duration::from_millis(25);

/// Runs an instance from launch (or adoption) to Terminated.
pub async fn run(
    shared: Arc<Shared>,
    group: Arc<GroupRuntime>,
    id: String,
    mut process: Option<InstanceProcess>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    launch_activity: Option<i64>,
) {
    let info = match group.lock().instances.iter().find(|t| t.info.id == id) {
        Some(t) => t.info.clone(),
        None => return,
    };
    let addr = SocketAddr::new(info.address, info.port);
    let started = Instant::now();
    let values = Placeholders {
        id: id.clone(),
        zone: info.zone.clone(),
        address: info.address,
        port: info.port,
        dir: info.dir.clone().into(),
        group: group.spec.name.clone(),
    };

    if process.is_none() {
        let launch = crate::launcher::prepare(
            group.template.render(&values),
            &shared.stack,
            &group.spec,
            &*shared.launcher,
            &|n| shared.members(n),
        );
        match shared
            .launcher
            .launch(&launch, std::path::Path::new(&info.dir))
        {
            Ok(p) => {
                group.update(&shared.store, &id, |t| {
                    t.info.pid = p.pid;
                    t.info.start_ticks = p.start_ticks;
                });
                process = Some(p);
            }
            Err(e) => {
                launch_failed(
                    &shared,
                    &group,
                    &id,
                    launch_activity,
                    &format!("could not start: {e}"),
                    started,
                )
                .await;
                return;
            }
        }
    }
    let mut process = process.expect("launched or adopted");

    // Pending → InService once it accepts connections on its address.
    let lifecycle = group
        .lock()
        .instances
        .iter()
        .find(|t| t.info.id == id)
        .map(|t| t.info.lifecycle);
    if lifecycle == Some(Lifecycle::Pending) {
        let ready = async {
            loop {
                if crate::process::is_listening(addr) {
                    return true;
                }
                tokio::time::sleep(POLL).await;
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(LAUNCH_TIMEOUT, ready) => r.is_ok(),
            () = process.exited() => false,
            () = shared.stop.cancelled() => { process.stop(group.template.stop_timeout).await; finish(&shared, &group, &id); return; }
        };
        if !outcome {
            let why = match process.exit_status() {
                Some(status) => format!("its process ended ({status}) before serving"),
                None if crate::process::start_ticks(process.pid).is_none() => {
                    "its process exited before serving".to_string()
                }
                None => format!("it did not listen on {addr} within {LAUNCH_TIMEOUT:?}"),
            };
            process.stop(Duration::from_secs(1)).await;
            launch_failed(&shared, &group, &id, launch_activity, &why, started).await;
            return;
        }
    }
    if lifecycle != Some(Lifecycle::Terminating) {
        // Its configuration is on disk by now (written at launch, or by the earlier run that
        // launched an adopted instance); read off the runtime's threads.
        let command = group.template.render(&values).command;
        let dir = std::path::PathBuf::from(&info.dir);
        let capacity =
            tokio::task::spawn_blocking(move || crate::capacity::client_cap(&command, &dir))
                .await
                .unwrap_or(None);
        register(&shared, &group, &id, addr, &info.zone, capacity);
        group.update(&shared.store, &id, |t| {
            // An instance marked unhealthy while Pending keeps its verdict (and its cause).
            t.info.lifecycle = Lifecycle::InService;
            t.in_service_at = Some(Instant::now());
        });
        {
            let mut state = group.lock();
            state.failures = 0;
            state.next_launch_at = None;
        }
        if let Some(a) = launch_activity {
            let _ = shared.store.update(a, ActivityStatus::Successful, None);
        }
        tracing::info!(group = %group.spec.name, instance = %id, %addr, after = ?started.elapsed(), "instance in service");
        group.wake.notify_one();
    }

    // In service: watch the process, the load balancer's view, and commands.
    let cause = if lifecycle == Some(Lifecycle::Terminating) {
        Cause::RestartedWhileTerminating
    } else {
        watch(&shared, &group, &id, &mut process, &mut commands).await
    };
    terminate(&shared, &group, &id, &mut process, &cause).await;
}

/// Watches an in-service instance; returns why it must go. The balancer's verdict is
/// re-judged when one of the instance's targets changes health on some node (the balancer
/// publishes every transition as an event; nothing is polled), and once when the grace
/// period ends.
async fn watch(
    shared: &Arc<Shared>,
    group: &Arc<GroupRuntime>,
    id: &str,
    process: &mut InstanceProcess,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Cause {
    let spec = &group.spec;
    let judged_by_lb = spec.health_check_type == HealthCheckType::Lb;
    let mut events = shared.balancer.health_events();
    let (target, in_service_at) = {
        let state = group.lock();
        let t = state.instances.iter().find(|t| t.info.id == id);
        (
            t.map(|t| SocketAddr::new(t.info.address, t.info.port).to_string())
                .unwrap_or_default(),
            t.and_then(|t| t.in_service_at).unwrap_or_else(Instant::now),
        )
    };
    let grace_over = tokio::time::sleep_until((in_service_at + spec.grace_period).into());
    tokio::pin!(grace_over);
    let mut in_grace = true;
    loop {
        let judge_now = tokio::select! {
            () = process.exited() => {
                let status = process.exit_status().unwrap_or_else(|| "exited".to_string());
                let cause = Cause::ProcessExited { status };
                group.update(&shared.store, id, |t| t.info.mark_unhealthy(cause.clone()));
                return cause;
            }
            cmd = commands.recv() => match cmd {
                Some(Command::Terminate { cause }) => return cause,
                None => return Cause::ControllerStopping,
            },
            () = shared.stop.cancelled() => return Cause::Shutdown,
            () = &mut grace_over, if in_grace => {
                in_grace = false;
                true
            }
            event = events.recv(), if judged_by_lb => match event {
                Ok(e) => e.target == target,
                // Fell behind: judge on the views as they are now.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Cause::ControllerStopping
                }
            },
        };
        if judge_now && judged_by_lb && lb_passed(shared, group, id) {
            // Also in the grace period: a replacement is proven once it has passed.
            let mut first = false;
            group.update(&shared.store, id, |t| {
                first = !t.passed_lb_health;
                t.passed_lb_health = true;
            });
            if first {
                // A held or waiting replacement may go now.
                group.wake.notify_one();
            }
        }
        if !judge_now || in_grace || !judged_by_lb {
            continue;
        }
        if let Some(cause) = lb_unhealthy(shared, group, id) {
            let changed = {
                let state = group.lock();
                state
                    .instances
                    .iter()
                    .any(|t| t.info.id == id && t.info.health == InstanceHealth::Healthy)
            };
            if changed {
                group.update(&shared.store, id, |t| t.info.mark_unhealthy(cause));
                // The group decides when to replace it (never all at once).
                group.wake.notify_one();
            }
        } else {
            // The balancer's verdict is withdrawn when its checks pass again; no other is.
            group.update(&shared.store, id, |t| {
                if t.info
                    .unhealthy_cause()
                    .is_some_and(Cause::is_load_balancer_health)
                {
                    t.info.mark_healthy();
                }
            });
        }
    }
}

/// `Some(cause)` when every node checking the instance in any of its target groups finds it
/// unhealthy.
fn lb_unhealthy(shared: &Shared, group: &GroupRuntime, id: &str) -> Option<Cause> {
    let info = group
        .lock()
        .instances
        .iter()
        .find(|t| t.info.id == id)
        .map(|t| t.info.clone())?;
    let target = SocketAddr::new(info.address, info.port).to_string();
    for tg in &group.spec.target_groups {
        let views = shared.balancer.target_health(tg, &target);
        if !views.is_empty() && views.iter().all(|(_, h)| *h == Health::Unhealthy) {
            return Some(Cause::LoadBalancerHealth {
                target_group: tg.clone(),
            });
        }
    }
    None
}

/// Whether some node finds the instance healthy in every one of its target groups (a target
/// group no node checks it in cannot judge it: it does not hold it back either).
fn lb_passed(shared: &Shared, group: &GroupRuntime, id: &str) -> bool {
    let Some(target) = group
        .lock()
        .instances
        .iter()
        .find(|t| t.info.id == id)
        .map(|t| SocketAddr::new(t.info.address, t.info.port).to_string())
    else {
        return false;
    };
    group.spec.target_groups.iter().all(|tg| {
        let views = shared.balancer.target_health(tg, &target);
        views.is_empty() || views.iter().any(|(_, h)| *h == Health::Healthy)
    })
}

fn register(
    shared: &Shared,
    group: &GroupRuntime,
    id: &str,
    addr: SocketAddr,
    zone: &str,
    capacity: Option<usize>,
) {
    for tg in &group.spec.target_groups {
        if let Err(e) = shared.balancer.register(tg, addr, zone, capacity) {
            tracing::error!(instance = id, error = %e, "cannot register with target group");
        }
    }
}

/// Terminating: deregister, drain, stop; then Terminated.
async fn terminate(
    shared: &Arc<Shared>,
    group: &Arc<GroupRuntime>,
    id: &str,
    process: &mut InstanceProcess,
    cause: &Cause,
) {
    let (addr, zone) = match group.lock().instances.iter().find(|t| t.info.id == id) {
        Some(t) => (
            SocketAddr::new(t.info.address, t.info.port),
            t.info.zone.clone(),
        ),
        None => return,
    };
    group.update(&shared.store, id, |t| {
        t.info.lifecycle = Lifecycle::Terminating
    });
    // The replacement may start now: a Terminating instance no longer counts.
    group.wake.notify_one();
    let description = format!("Terminating instance {id} ({}, zone {zone})", addr.ip());
    let activity = shared
        .store
        .begin(&group.spec.name, &description, &cause.activity_text())
        .ok();
    if let Some(a) = activity {
        let _ = shared
            .store
            .update(a, ActivityStatus::WaitingForConnectionDraining, None);
    }
    let drains: Vec<_> = group
        .spec
        .target_groups
        .iter()
        .filter_map(|tg| shared.balancer.deregister(tg, &addr.to_string()).ok())
        .collect();
    for drain in drains {
        let _ = drain.await;
    }
    process.stop(group.template.stop_timeout).await;
    if let Some(a) = activity {
        let _ = shared.store.update(a, ActivityStatus::Successful, None);
    }
    tracing::info!(group = %group.spec.name, instance = id, %cause, "instance terminated");
    finish(shared, group, id);
}

/// Marks the instance Terminated and forgets it.
fn finish(shared: &Shared, group: &GroupRuntime, id: &str) {
    group.update(&shared.store, id, |t| {
        t.info.lifecycle = Lifecycle::Terminated
    });
    group.lock().instances.retain(|t| t.info.id != id);
    group.wake.notify_one();
}

/// A launch that never reached InService: recorded, and the group backs off.
async fn launch_failed(
    shared: &Shared,
    group: &GroupRuntime,
    id: &str,
    activity: Option<i64>,
    why: &str,
    started: Instant,
) {
    let backoff = {
        let mut state = group.lock();
        state.failures += 1;
        let backoff = backoff_for(state.failures);
        state.next_launch_at = Some(UnixMillis::now().after(backoff));
        backoff
    };
    let description = format!(
        "Launching a new instance failed: {id}: {why} (after {:.1} s); next attempt in {:.0} s",
        started.elapsed().as_secs_f64(),
        backoff.as_secs_f64()
    );
    tracing::warn!(group = %group.spec.name, instance = id, "{description}");
    if let Some(a) = activity {
        let _ = shared
            .store
            .update(a, ActivityStatus::Failed, Some(&description));
    }
    finish(shared, group, id);
}

/// 1 s, 2 s, 4 s, ... capped at 30 s.
pub fn backoff_for(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs.min(30))
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_caps() {
        let b: Vec<u64> = (1..=8).map(|f| super::backoff_for(f).as_secs()).collect();
        assert_eq!(b, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
