//! The group controller: keeps every group at its desired size across its zones, replaces
//! failed instances (never all at once), adopts survivors after a restart, and answers the
//! admin API (scale, terminate, set health, status, activity).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxyfleet_lb::Balancer;
use proxyfleet_stack::Stack;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{
    now, Activity, ActivityStatus, GroupStatus, Instance, InstanceHealth, Lifecycle,
};
use crate::process::InstanceProcess;
use crate::runtime::{GroupRuntime, GroupState, Shared, Tracked};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("no group '{0}'")]
    NoSuchGroup(String),
    #[error("no live instance '{0}'")]
    NoSuchInstance(String),
    #[error("group {group}: desired {desired} is outside min {min} .. max {max}")]
    OutOfRange {
        group: String,
        desired: u32,
        min: u32,
        max: u32,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot prepare the state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("group {group}: launch template '{template}' is not in the stack")]
    NoTemplate { group: String, template: String },
}

/// The running controller.
pub struct Fleet {
    shared: Arc<Shared>,
}

impl Fleet {
    /// Opens the state, adopts or retires what a previous run left, and starts every
    /// group's reconcile loop.
    pub async fn start(
        stack: Stack,
        balancer: Arc<Balancer>,
        state_dir: &Path,
        self_exe: PathBuf,
    ) -> Result<Fleet, FleetError> {
        let state_err = |source| FleetError::StateDir {
            path: state_dir.display().to_string(),
            source,
        };
        // 0711 and 0600 (see `files`): instance directories hold who visited what, the store
        // every instance's address. SQLite gives its -wal and -shm files the database's mode,
        // so creating state.db 0600 before it opens covers them; older ones are tightened.
        crate::files::state_dir(&state_dir.join("instances")).map_err(state_err)?;
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            let path = state_dir.join(name);
            if name == "state.db" || path.exists() {
                crate::files::private_file(&path, crate::files::STATE_FILE_MODE)
                    .map_err(state_err)?;
            }
        }
        let store = Store::open(&state_dir.join("state.db"))?;
        let cancelled = store.cancel_unfinished()?;
        if cancelled > 0 {
            tracing::warn!(
                cancelled,
                "activities left in progress by a previous run were cancelled"
            );
        }
        let mut groups = HashMap::new();
        for g in &stack.groups {
            let template = stack
                .launch_template(&g.launch_template)
                .cloned()
                .ok_or_else(|| FleetError::NoTemplate {
                    group: g.name.clone(),
                    template: g.launch_template.clone(),
                })?;
            let desired = store
                .desired(&g.name)?
                .filter(|d| (g.min..=g.max).contains(d))
                .unwrap_or(g.desired);
            groups.insert(
                g.name.clone(),
                Arc::new(GroupRuntime {
                    spec: g.clone(),
                    template,
                    state: Mutex::new(GroupState {
                        desired,
                        instances: Vec::new(),
                        failures: 0,
                        next_launch_at: None,
                        cooldowns: Default::default(),
                    }),
                    wake: Notify::new(),
                }),
            );
        }
        let firewall = crate::firewall::Firewall::open(state_dir);
        let shared = Arc::new(Shared {
            stack,
            balancer,
            store,
            state_dir: state_dir.to_path_buf(),
            self_exe,
            groups,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            firewall,
            allocation: Mutex::new(()),
        });
        adopt_or_retire(&shared)?;
        crate::firewall::refresh(&shared);
        for group in shared.groups.values() {
            shared
                .tasks
                .spawn(reconcile_loop(shared.clone(), group.clone()));
        }
        Ok(Fleet { shared })
    }

    pub fn groups(&self) -> Vec<GroupStatus> {
        let mut out: Vec<GroupStatus> = self
            .shared
            .groups
            .values()
            .map(|g| {
                let state = g.lock();
                GroupStatus {
                    name: g.spec.name.clone(),
                    min: g.spec.min,
                    max: g.spec.max,
                    desired: state.desired,
                    zones: g.spec.zones.clone(),
                    instances: state.instances.iter().map(|t| t.info.clone()).collect(),
                    backoff_seconds: state
                        .next_launch_at
                        .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64())
                        .filter(|s| *s > 0.0),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn activities(
        &self,
        group: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Activity>, FleetError> {
        Ok(self.shared.store.activities(group, limit)?)
    }

    pub fn scale(&self, group: &str, desired: u32) -> Result<(), FleetError> {
        let g = self
            .shared
            .groups
            .get(group)
            .ok_or_else(|| FleetError::NoSuchGroup(group.to_string()))?;
        if !(g.spec.min..=g.spec.max).contains(&desired) {
            return Err(FleetError::OutOfRange {
                group: group.to_string(),
                desired,
                min: g.spec.min,
                max: g.spec.max,
            });
        }
        let old = std::mem::replace(&mut g.lock().desired, desired);
        self.shared.store.set_desired(group, desired)?;
        self.shared.store.record(
            group,
            &format!("Setting desired capacity from {old} to {desired}"),
            "a user request (proxyfleet scale)",
            ActivityStatus::Successful,
        )?;
        g.wake.notify_one();
        Ok(())
    }

    /// Takes an instance out of service; the group replaces it unless `decrement_desired`.
    pub fn terminate(&self, id: &str, decrement_desired: bool) -> Result<(), FleetError> {
        for g in self.shared.groups.values() {
            let mut state = g.lock();
            let Some(t) = state
                .instances
                .iter()
                .find(|t| t.info.id == id && t.info.lifecycle != Lifecycle::Terminating)
            else {
                continue;
            };
            let commands = t.commands.clone();
            if decrement_desired {
                if state.desired <= g.spec.min {
                    return Err(FleetError::OutOfRange {
                        group: g.spec.name.clone(),
                        desired: state.desired.saturating_sub(1),
                        min: g.spec.min,
                        max: g.spec.max,
                    });
                }
                state.desired -= 1;
                self.shared.store.set_desired(&g.spec.name, state.desired)?;
            }
            drop(state);
            let cause = if decrement_desired {
                "a user request (proxyfleet terminate), decrementing the desired capacity"
            } else {
                "a user request (proxyfleet terminate); the group will replace it"
            };
            let _ = commands.send(crate::runtime::Command::Terminate {
                cause: cause.to_string(),
            });
            return Ok(());
        }
        Err(FleetError::NoSuchInstance(id.to_string()))
    }

    /// Marks an instance healthy or unhealthy by hand; an unhealthy one is replaced.
    pub fn set_instance_health(&self, id: &str, healthy: bool) -> Result<(), FleetError> {
        for g in self.shared.groups.values() {
            if g.lock().instances.iter().any(|t| t.info.id == id) {
                g.update(&self.shared.store, id, |t| {
                    t.info.health = if healthy {
                        InstanceHealth::Healthy
                    } else {
                        InstanceHealth::Unhealthy
                    };
                    t.info.reason = if healthy {
                        String::new()
                    } else {
                        "marked unhealthy by hand".to_string()
                    };
                });
                g.wake.notify_one();
                return Ok(());
            }
        }
        Err(FleetError::NoSuchInstance(id.to_string()))
    }

    /// Takes every instance out of service (deregister, drain, stop) and stops the loops.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        if let Some(fw) = &self.shared.firewall {
            fw.remove();
        }
    }
}

/// Instances a previous run left: the same process (pid and start time) is adopted; any
/// other is recorded as lost and forgotten, and the reconcile loop replaces it.
fn adopt_or_retire(shared: &Arc<Shared>) -> Result<(), FleetError> {
    for mut info in shared.store.live_instances()? {
        let group = shared.groups.get(&info.group).cloned();
        let process = InstanceProcess::adopt(info.pid, info.start_ticks);
        match (group, process) {
            (Some(group), Some(process)) => {
                tracing::info!(instance = %info.id, pid = info.pid, "adopted a running instance");
                shared.store.record(
                    &group.spec.name,
                    &format!(
                        "Adopting instance {} ({}, zone {}, pid {})",
                        info.id, info.address, info.zone, info.pid
                    ),
                    "the controller restarted and found the instance still running",
                    ActivityStatus::Successful,
                )?;
                info.health = InstanceHealth::Healthy;
                info.protected = shared.firewall.is_some();
                spawn_instance(shared, &group, info, Some(process), None);
            }
            (group, process) => {
                if let Some(p) = process {
                    // Its group is gone from the stack: stop it rather than leak it.
                    let mut p = p;
                    shared
                        .tasks
                        .spawn(async move { p.stop(Duration::from_secs(10)).await });
                }
                let group_name = group
                    .map(|g| g.spec.name.clone())
                    .unwrap_or(info.group.clone());
                shared.store.record(
                    &group_name,
                    &format!(
                        "Instance {} ({}, zone {}) was lost",
                        info.id, info.address, info.zone
                    ),
                    &format!(
                        "the controller restarted and pid {} no longer runs it",
                        info.pid
                    ),
                    ActivityStatus::Successful,
                )?;
                info.lifecycle = Lifecycle::Terminated;
                shared.store.save_instance(&info)?;
            }
        }
    }
    Ok(())
}

/// Tracks an instance and starts its task.
fn spawn_instance(
    shared: &Arc<Shared>,
    group: &Arc<GroupRuntime>,
    info: Instance,
    process: Option<InstanceProcess>,
    activity: Option<i64>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let id = info.id.clone();
    if let Err(e) = shared.store.save_instance(&info) {
        tracing::error!(error = %e, "cannot save instance state");
    }
    group.lock().instances.push(Tracked {
        info,
        commands: tx,
        replaced_for_lb_health: false,
        in_service_at: None,
    });
    crate::firewall::refresh(shared);
    shared.tasks.spawn(crate::instance::run(
        shared.clone(),
        group.clone(),
        id,
        process,
        rx,
        activity,
    ));
}

/// Keeps one group at its desired size; woken by every change, and every half second.
async fn reconcile_loop(shared: Arc<Shared>, group: Arc<GroupRuntime>) {
    loop {
        reconcile(&shared, &group);
        tokio::select! {
            () = group.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

fn reconcile(shared: &Arc<Shared>, group: &Arc<GroupRuntime>) {
    if shared.stop.is_cancelled() {
        return;
    }
    if let Some(policy) = &group.spec.scaling {
        crate::scaling::evaluate(shared, group, policy);
    }
    replace_unhealthy(shared, group);
    let (live, desired, waiting) = {
        let state = group.lock();
        let live: Vec<(String, String, f64)> = state
            .instances
            .iter()
            .filter(|t| Shared::is_live(t))
            .map(|t| (t.info.id.clone(), t.info.zone.clone(), t.info.launched_at))
            .collect();
        (
            live,
            state.desired as usize,
            state.next_launch_at.filter(|at| *at > Instant::now()),
        )
    };
    if live.len() < desired {
        if waiting.is_some() {
            return;
        }
        // All missing instances at once, unless launches have been failing: then one per
        // pass, so the back-off paces them.
        let failing = group.lock().failures > 0;
        let count = if failing { 1 } else { desired - live.len() };
        for i in 0..count {
            launch(shared, group, live.len() + i, desired);
        }
    } else if live.len() > desired {
        // Scale in: from the most populated zone, the newest instance.
        let mut by_zone: HashMap<&str, Vec<&(String, String, f64)>> = HashMap::new();
        for i in &live {
            by_zone.entry(i.1.as_str()).or_default().push(i);
        }
        let zone = by_zone
            .iter()
            .max_by_key(|(z, v)| (v.len(), std::cmp::Reverse(**z)))
            .map(|(z, _)| *z)
            .unwrap_or("");
        if let Some(victim) = by_zone
            .get(zone)
            .and_then(|v| v.iter().max_by(|a, b| a.2.total_cmp(&b.2)))
        {
            let cause = format!(
                "the desired capacity is {desired} and {} instances were running",
                live.len()
            );
            send_terminate(group, &victim.0, cause);
        }
    }
}

/// Replaces instances found unhealthy — never more than one at a time for load-balancer
/// health, and not again until the replacement is healthy: when the proxies all fail their
/// checks because something else is wrong (the origin), the group does not churn them all.
fn replace_unhealthy(shared: &Arc<Shared>, group: &Arc<GroupRuntime>) {
    let state = group.lock();
    let lb_replacement_in_flight = state
        .instances
        .iter()
        .any(|t| t.replaced_for_lb_health || (t.info.lifecycle == Lifecycle::Pending));
    let candidates: Vec<(String, String, bool)> = state
        .instances
        .iter()
        .filter(|t| {
            t.info.lifecycle == Lifecycle::InService && t.info.health == InstanceHealth::Unhealthy
        })
        .map(|t| {
            (
                t.info.id.clone(),
                t.info.reason.clone(),
                t.info.reason.starts_with("load balancer"),
            )
        })
        .collect();
    drop(state);
    for (id, reason, for_lb) in candidates {
        if for_lb {
            if lb_replacement_in_flight {
                continue;
            }
            let cause = format!("an instance was taken out of service in response to a load balancer health check failure ({reason})");
            group.update(&shared.store, &id, |t| t.replaced_for_lb_health = true);
            send_terminate(group, &id, cause);
            return;
        }
        send_terminate(
            group,
            &id,
            format!("an instance was taken out of service because it was {reason}"),
        );
    }
}

fn send_terminate(group: &GroupRuntime, id: &str, cause: String) {
    let state = group.lock();
    if let Some(t) = state.instances.iter().find(|t| t.info.id == id) {
        let _ = t
            .commands
            .send(crate::runtime::Command::Terminate { cause });
    }
}

/// Launches one instance in the least populated zone, at the lowest free address.
fn launch(shared: &Arc<Shared>, group: &Arc<GroupRuntime>, live: usize, desired: usize) {
    let _alloc = shared.allocation.lock().unwrap_or_else(|p| p.into_inner());
    let spec = &group.spec;
    let counts: HashMap<String, usize> = {
        let state = group.lock();
        let mut c: HashMap<String, usize> = spec.zones.iter().map(|z| (z.clone(), 0)).collect();
        for t in state.instances.iter().filter(|t| Shared::is_live(t)) {
            *c.entry(t.info.zone.clone()).or_default() += 1;
        }
        c
    };
    let Some(zone) = spec
        .zones
        .iter()
        .min_by_key(|z| counts.get(*z).copied().unwrap_or(0))
        .cloned()
    else {
        return;
    };
    let Some(subnet) = shared.stack.zone(&zone).map(|z| z.subnet) else {
        return;
    };
    let taken = shared.addresses_in_use();
    let nodes: Vec<IpAddr> = shared
        .stack
        .load_balancers
        .iter()
        .flat_map(|lb| lb.nodes.iter().map(|n| n.address))
        .collect();
    let address = (0..spec.max * 2 + 8)
        .filter_map(|i| spec.instance_address(&subnet, i))
        .find(|a| !taken.contains(a) && !nodes.contains(a));
    let Some(address) = address else {
        tracing::error!(group = %spec.name, zone, "no free address left in the zone for a new instance");
        return;
    };
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
        reason: String::new(),
        launched_at: now(),
        dir: dir.display().to_string(),
        // Kernel-enforced, or (without nftables) enforced in-process by proxyfleet's own proxy.
        protected: shared.firewall.is_some()
            || crate::firewall::runs_own_proxy(&group.template.command),
    };
    let description = format!("Launching a new instance: {id} ({address}, zone {zone})");
    let cause = format!("the desired capacity is {desired} and {live} instances were running");
    let activity = shared.store.begin(&spec.name, &description, &cause).ok();
    tracing::info!(group = %spec.name, instance = %id, %address, zone, "launching");
    drop(_alloc);
    spawn_instance(shared, group, info, None, activity);
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
