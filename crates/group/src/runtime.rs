//! Shared run-time state of the controller: the groups, their instances, and the requests
//! the reconcile loops and instance tasks exchange.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use proxyfleet_lb::Balancer;
use proxyfleet_stack::{Group, LaunchTemplate, Stack};
use proxyfleet_state::{Cause, UnixMillis};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::Instance;
use crate::store::Store;

/// What an instance's task can be asked to do.
#[derive(Debug)]
pub enum Command {
    /// Take the instance out of service and stop it. `cause` goes into the activity history
    /// (as [`Cause::activity_text`]).
    Terminate { cause: Cause },
}

/// One live instance as the controller tracks it.
pub struct Tracked {
    pub info: Instance,
    pub commands: mpsc::UnboundedSender<Command>,
    /// Why it was taken out of service by health, if it was (for the no-cascade rule).
    pub replaced_for_lb_health: bool,
    /// The balancer has found it healthy in every target group at least once.
    pub passed_lb_health: bool,
    /// When it became InService (grace period and uptime).
    pub in_service_at: Option<Instant>,
}

pub struct GroupState {
    pub desired: u32,
    pub instances: Vec<Tracked>,
    /// Consecutive failed launches, for the back-off.
    pub failures: u32,
    /// No launch before this (wall-clock, as the planner reads it).
    pub next_launch_at: Option<UnixMillis>,
    /// The target-tracking policy's last changes.
    pub cooldowns: crate::scaling::Cooldowns,
    /// Set while replacements for the balancer's verdict are held (the churn stop).
    pub replacements_held: Option<Held>,
}

/// The churn stop in force: the instance that showed it, and why in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub instance: String,
    pub reason: String,
}

pub struct GroupRuntime {
    pub spec: Group,
    pub template: LaunchTemplate,
    pub state: Mutex<GroupState>,
    /// Wakes the group's reconcile loop.
    pub wake: Notify,
}

impl GroupRuntime {
    pub fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates a tracked instance and saves it.
    pub fn update(&self, store: &Store, id: &str, f: impl FnOnce(&mut Tracked)) {
        let mut state = self.lock();
        if let Some(t) = state.instances.iter_mut().find(|t| t.info.id == id) {
            let before = (t.info.lifecycle, t.info.health);
            f(t);
            if before != (t.info.lifecycle, t.info.health) {
                // One line per transition, so an operator (and the fault drills) can follow
                // an instance through Unhealthy -> Terminating -> Terminated.
                tracing::info!(
                    group = %self.spec.name,
                    instance = id,
                    lifecycle = t.info.lifecycle.as_str(),
                    health = ?t.info.health,
                    reason = %t.info.reason_text(),
                    "instance state changed"
                );
            }
            if let Err(e) = store.save_instance(&t.info) {
                tracing::error!(error = %e, "cannot save instance state");
            }
        }
    }
}

/// Everything the controller's tasks share.
pub struct Shared {
    pub stack: Stack,
    pub balancer: Arc<Balancer>,
    pub store: Store,
    pub state_dir: PathBuf,
    /// Launches, adopts and protects the instances.
    pub launcher: Arc<dyn crate::launcher::Launcher>,
    pub groups: HashMap<String, Arc<GroupRuntime>>,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
    /// Serialises address allocation across groups.
    pub allocation: Mutex<()>,
}

impl Shared {
    /// The addresses of every tracked instance of a group in security group `name`.
    pub fn members(&self, name: &str) -> Vec<IpAddr> {
        self.groups
            .values()
            .filter(|g| g.spec.security_groups.iter().any(|s| s == name))
            .flat_map(|g| {
                g.lock()
                    .instances
                    .iter()
                    .map(|t| t.info.address)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Rewrites what the kernel enforces for the instances now alive.
    pub fn refresh_firewall(&self) {
        if !self.launcher.kernel_firewall() {
            return;
        }
        let mut instances = Vec::new();
        for g in self.groups.values() {
            for t in g.lock().instances.iter() {
                if t.info.lifecycle != crate::model::Lifecycle::Terminated {
                    instances.push((&g.spec, t.info.address));
                }
            }
        }
        let rules = crate::launcher::rules(&self.stack, instances, &|n| self.members(n));
        self.launcher.enforce(&rules);
    }

    /// Every address held by an instance that is not Terminated, in every group but `group`.
    pub fn addresses_in_use_except(&self, group: &str) -> Vec<IpAddr> {
        self.groups
            .values()
            .filter(|g| g.spec.name != group)
            .flat_map(|g| {
                g.lock()
                    .instances
                    .iter()
                    .map(|t| t.info.address)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
