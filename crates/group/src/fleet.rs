//! The group controller: starts every group's reconcile loop (`crate::executor`, which
//! keeps it at its desired size and replaces failed instances as `crate::planner`
//! decides), adopts survivors after a restart, and answers the admin API (scale, terminate,
//! set health, status, activity).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxyfleet_lb::Balancer;
use proxyfleet_stack::Stack;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use proxyfleet_state::{Cause, UnixMillis, UserRequest};

use crate::model::{Activity, ActivityStatus, GroupStatus, Instance, Lifecycle};
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
                        replacements_held: None,
                    }),
                    wake: Notify::new(),
                }),
            );
        }
        let launcher = Arc::new(crate::launcher::LocalLauncher::new(state_dir, self_exe));
        let shared = Arc::new(Shared {
            stack,
            balancer,
            store,
            state_dir: state_dir.to_path_buf(),
            launcher,
            groups,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            allocation: Mutex::new(()),
        });
        adopt_or_retire(&shared)?;
        shared.refresh_firewall();
        for group in shared.groups.values() {
            shared.tasks.spawn(crate::executor::reconcile_loop(
                shared.clone(),
                group.clone(),
            ));
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
                        .map(|at| at.since(UnixMillis::now()).as_secs_f64())
                        .filter(|s| *s > 0.0),
                    replacements_held: state.replacements_held.as_ref().map(|h| h.reason.clone()),
                    refresh: None,
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
            &Cause::User(UserRequest::Scale).activity_text(),
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
            let _ = commands.send(crate::runtime::Command::Terminate {
                cause: Cause::User(UserRequest::Terminate { decrement_desired }),
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
                    if healthy {
                        t.info.mark_healthy();
                    } else {
                        t.info
                            .mark_unhealthy(Cause::User(UserRequest::MarkUnhealthy));
                    }
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
        self.shared.launcher.release();
    }
}

/// Instances a previous run left: the same process (pid and start time) is adopted; any
/// other is recorded as lost and forgotten, and the reconcile loop replaces it.
fn adopt_or_retire(shared: &Arc<Shared>) -> Result<(), FleetError> {
    for mut info in shared.store.live_instances()? {
        let group = shared.groups.get(&info.group).cloned();
        let process = shared.launcher.adopt(info.pid, info.start_ticks);
        match (group, process) {
            (Some(group), Some(process)) => {
                tracing::info!(instance = %info.id, pid = info.pid, "adopted a running instance");
                shared.store.record(
                    &group.spec.name,
                    &format!(
                        "Adopting instance {} ({}, zone {}, pid {})",
                        info.id, info.address, info.zone, info.pid
                    ),
                    &Cause::Adopted.activity_text(),
                    ActivityStatus::Successful,
                )?;
                info.mark_healthy();
                info.protected = shared.launcher.kernel_firewall();
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
                    &Cause::Lost { pid: info.pid }.activity_text(),
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
pub(crate) fn spawn_instance(
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
        passed_lb_health: false,
        in_service_at: None,
    });
    shared.refresh_firewall();
    shared.tasks.spawn(crate::instance::run(
        shared.clone(),
        group.clone(),
        id,
        process,
        rx,
        activity,
    ));
}
