//! The agent's instances: the ones the controller assigned to this host, as local processes.
//!
//! For each instance assigned here the agent runs one task: launch (or adopt, after an agent
//! restart: same pid and start time), report the process, report InService once it listens,
//! report the process's end as an unhealthy verdict, and when the controller marks it
//! Terminating, wait for its targets to drain, stop it and report Terminated. An instance the
//! state no longer gives this host (Terminated by the controller after the host was thought
//! lost, or forgotten) is stopped: it is never adopted twice.
//!
//! Processes are launched, adopted and protected through the host's
//! [`Launcher`](proxyfleet_group::launcher::Launcher), as `up`'s are: the kernel firewall (one
//! nftables table per agent state directory, when the agent runs as root with `nft`) is
//! rewritten whenever the instances on this host change, with security-group sources resolved
//! from the shared state; without it a `proxyfleet proxy` instance enforces its security
//! groups itself (`PROXYFLEET_ALLOWED_SOURCES`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_group::launcher::{self, Launcher};
use proxyfleet_group::process::is_listening;
use proxyfleet_stack::{Placeholders, Stack};
use proxyfleet_state::{
    Cause, Change, Fence, Instance, InstanceHealth, Lifecycle, Process, Snapshot, StateStore,
    UnixMillis,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::view::View;

/// How often a starting instance is looked at.
const POLL: Duration = Duration::from_millis(25);

/// What the instance tasks share.
pub struct HostInstances {
    pub host: String,
    /// Followed as it changes (`apply`).
    pub stack: crate::LiveStack,
    pub store: Arc<dyn StateStore>,
    pub state_dir: PathBuf,
    pub launcher: Arc<dyn Launcher>,
    /// Where instance addresses are added before launch and removed once stopped (a stack
    /// across hosts); `None`: they are local already.
    pub interface: Option<Arc<crate::addresses::Interface>>,
}

impl HostInstances {
    /// The addresses of the live instances in security group `name`, anywhere in the tier.
    fn members(&self, snapshot: &Snapshot, name: &str) -> Vec<IpAddr> {
        let stack = self.stack.get();
        snapshot
            .live_instances()
            .filter(|i| {
                stack
                    .group(&i.group)
                    .is_some_and(|g| g.security_groups.iter().any(|s| s == name))
            })
            .map(|i| i.address)
            .collect()
    }

    /// The kernel's rules for the instances this host runs (not yet Terminated).
    fn rules(&self, snapshot: &Snapshot) -> Vec<proxyfleet_group::firewall::InstanceRules> {
        let mine = snapshot.instances.values().filter(|i| {
            i.host.as_deref() == Some(&self.host) && i.lifecycle != Lifecycle::Terminated
        });
        let stack = self.stack.get();
        let groups = mine.filter_map(|i| Some((stack.group(&i.group)?, i.address)));
        launcher::rules(&stack, groups, &|n| self.members(snapshot, n))
    }
}

/// Runs this host's instances until `stop`; then stops them all.
pub async fn run(
    launcher: Arc<HostInstances>,
    mut view: watch::Receiver<View>,
    stop: CancellationToken,
) {
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut ours: HashMap<String, watch::Sender<Option<Instance>>> = HashMap::new();
    let mut stale_checked = std::collections::HashSet::new();
    let mut enforced = None;
    let mut stack_changes = launcher.stack.subscribe();
    let mut followed = launcher.stack.get();
    loop {
        let snapshot = view.borrow_and_update().snapshot.clone();
        let stack = launcher.stack.get();
        if !Arc::ptr_eq(&stack, &followed) {
            reload_changed_templates(&launcher, &followed, &stack, &snapshot);
            followed = stack;
        }
        if view.borrow().connected {
            if launcher.launcher.kernel_firewall() {
                let rules = launcher.rules(&snapshot);
                if enforced.as_ref() != Some(&rules) {
                    launcher.launcher.enforce(&rules);
                    enforced = Some(rules);
                }
            }
            for i in snapshot.instances.values() {
                if i.host.as_deref() != Some(&launcher.host) {
                    continue;
                }
                if i.lifecycle == Lifecycle::Terminated {
                    if !tasks.contains_key(&i.id) && stale_checked.insert(i.id.clone()) {
                        stop_if_still_running(&launcher, i, &view);
                    }
                    continue;
                }
                if tasks.contains_key(&i.id) {
                    continue;
                }
                let (tx, rx) = watch::channel(Some(i.clone()));
                let handle = tokio::spawn(instance_task(
                    launcher.clone(),
                    i.clone(),
                    rx,
                    snapshot.clone(),
                    view.clone(),
                    stop.clone(),
                ));
                ours.insert(i.id.clone(), tx);
                tasks.insert(i.id.clone(), handle);
            }
            // What the state now says of each: the task follows it (None: no longer ours).
            for (id, tx) in &ours {
                let now = snapshot
                    .instances
                    .get(id)
                    .filter(|i| i.host.as_deref() == Some(&launcher.host))
                    .cloned();
                tx.send_if_modified(|old| {
                    let changed = *old != now;
                    *old = now;
                    changed
                });
            }
        }
        tasks.retain(|id, handle| {
            let running = !handle.is_finished();
            if !running {
                ours.remove(id);
            }
            running
        });
        tokio::select! {
            r = view.changed() => if r.is_err() { break },
            // `apply`: the firewall is recomputed at once, changed files reloaded.
            r = stack_changes.changed() => if r.is_err() { break },
            () = stop.cancelled() => break,
        }
    }
    for (_, handle) in tasks {
        let _ = handle.await;
    }
}

/// After `apply`: a launch template whose files alone changed (the plan's "reload
/// instances") has them rewritten in the directory of each of this host's running instances
/// of its groups, which are then sent SIGHUP. Instances launched from now on get them anyway.
fn reload_changed_templates(l: &HostInstances, old: &Stack, new: &Stack, snapshot: &Snapshot) {
    for template in &new.launch_templates {
        let Some(before) = old.launch_template(&template.name) else {
            continue;
        };
        if before.files == template.files {
            continue;
        }
        let running = snapshot.instances.values().filter(|i| {
            i.host.as_deref() == Some(&l.host)
                && matches!(i.lifecycle, Lifecycle::Pending | Lifecycle::InService)
                && new
                    .group(&i.group)
                    .is_some_and(|g| g.launch_template == template.name)
        });
        for i in running {
            let Some(p) = i.process else { continue };
            let dir = l.state_dir.join("instances").join(&i.id);
            let launch = template.render(&placeholders(i, &dir));
            let written = launch.files.iter().try_for_each(|(name, text)| {
                proxyfleet_group::files::write_file(&dir.join(name), text.as_bytes(), 0o600)
            });
            if let Err(e) = written {
                tracing::error!(instance = %i.id, error = %e, "apply: cannot rewrite the instance's files; not reloaded");
                continue;
            }
            match l.launcher.adopt(p.pid, p.start_ticks) {
                Some(process) => {
                    process.reload();
                    tracing::info!(instance = %i.id, pid = p.pid, template = %template.name, "apply: files rewritten, SIGHUP sent");
                }
                None => {
                    tracing::warn!(instance = %i.id, "apply: the instance's process is gone; not reloaded")
                }
            }
        }
    }
}

/// The placeholders of `info`'s template, its directory `dir`.
fn placeholders(info: &Instance, dir: &std::path::Path) -> Placeholders {
    Placeholders {
        id: info.id.clone(),
        zone: info.zone.clone(),
        address: info.address,
        port: info.port,
        dir: dir.to_path_buf(),
        group: info.group.clone(),
    }
}

/// An instance written off while this agent was away (its host thought lost) whose process
/// still runs here: the group has replaced it, so it is stopped, never adopted again.
fn stop_if_still_running(
    launcher: &Arc<HostInstances>,
    i: &Instance,
    view: &watch::Receiver<View>,
) {
    let Some(p) = i.process else { return };
    let stack = launcher.stack.get();
    let stop_timeout = stack
        .group(&i.group)
        .and_then(|g| stack.launch_template(&g.launch_template))
        .map_or(Duration::from_secs(10), |t| t.stop_timeout);
    let (l, info, view) = (launcher.clone(), i.clone(), view.clone());
    tokio::spawn(async move {
        if let Some(mut process) = l.launcher.adopt(p.pid, p.start_ticks) {
            tracing::warn!(instance = %info.id, pid = p.pid, "a written-off instance still runs here: stopping it");
            process.stop(stop_timeout).await;
            release_address(&l, &info, &view).await;
        }
    });
}

async fn report(store: &dyn StateStore, change: Change) {
    let what = change.to_string();
    if let Err(e) = store.apply(Fence::Unfenced, vec![change]).await {
        tracing::warn!(change = %what, error = %e, "state store: report not written");
    }
}

/// One instance, from launch (or adoption) to Terminated.
async fn instance_task(
    l: Arc<HostInstances>,
    info: Instance,
    mut state: watch::Receiver<Option<Instance>>,
    snapshot: Arc<Snapshot>,
    view: watch::Receiver<View>,
    stop: CancellationToken,
) {
    let store = &*l.store;
    let dir = l.state_dir.join("instances").join(&info.id);
    let stack = l.stack.get();
    let group = stack.group(&info.group).cloned();
    let template = group
        .as_ref()
        .and_then(|g| stack.launch_template(&g.launch_template))
        .cloned();
    let (Some(group), Some(template)) = (group, template) else {
        tracing::error!(instance = %info.id, group = %info.group, "instance of a group this stack does not define: not run");
        return;
    };
    let values = placeholders(&info, &dir);
    if let Some(interface) = &l.interface {
        match interface.add(info.address).await {
            Err(e) => {
                tracing::warn!(instance = %info.id, address = %info.address, error = %e, "cannot add the instance's address")
            }
            // Announced at once: the nodes reach it only once it listens (health checks).
            Ok(()) => {
                if let IpAddr::V4(v4) = info.address {
                    let _ = interface.announce(v4);
                }
            }
        }
    }
    let adopted = info
        .process
        .and_then(|p| l.launcher.adopt(p.pid, p.start_ticks));
    let was_adopted = adopted.is_some();
    let mut process = match adopted {
        Some(p) => {
            tracing::info!(instance = %info.id, pid = p.pid, "adopted a running instance");
            p
        }
        None if info.lifecycle != Lifecycle::Pending => {
            // It ran here before this agent restarted and its process is gone.
            report(
                store,
                Change::ReportInstanceHealth {
                    instance: info.id.clone(),
                    health: InstanceHealth::Unhealthy,
                    cause: Some(Cause::Lost {
                        pid: info.process.map_or(0, |p| p.pid),
                    }),
                },
            )
            .await;
            wait_terminating(&mut state, &stop).await;
            report_terminated(store, &info.id, None).await;
            release_address(&l, &info, &view).await;
            return;
        }
        None => {
            let launch = launcher::prepare(
                template.render(&values),
                &stack,
                &group,
                &*l.launcher,
                &|n| l.members(&snapshot, n),
            );
            match l.launcher.launch(&launch, &dir) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(instance = %info.id, error = %e, "launch failed");
                    report(
                        store,
                        Change::ReportInstanceHealth {
                            instance: info.id.clone(),
                            health: InstanceHealth::Unhealthy,
                            cause: Some(Cause::LaunchFailed {
                                detail: format!("could not start: {e}"),
                            }),
                        },
                    )
                    .await;
                    report_terminated(store, &info.id, None).await;
                    release_address(&l, &info, &view).await;
                    return;
                }
            }
        }
    };
    // Its configuration is on disk by now (written at launch, or by the run that launched an
    // adopted instance); read off the runtime's threads.
    let command = template.render(&values).command;
    let config_dir = dir.clone();
    let capacity = tokio::task::spawn_blocking(move || {
        proxyfleet_group::capacity::client_cap(&command, &config_dir)
    })
    .await
    .ok()
    .flatten()
    .map(|cap| u32::try_from(cap).unwrap_or(u32::MAX));
    report(
        store,
        Change::ReportProcess {
            instance: info.id.clone(),
            process: Process {
                pid: process.pid,
                start_ticks: process.start_ticks,
            },
            capacity,
            // Kernel-enforced, or (without nftables) enforced by proxyfleet's own proxy.
            protected: l.launcher.kernel_firewall()
                || proxyfleet_group::firewall::runs_own_proxy(&template.command),
            adopted: was_adopted,
        },
    )
    .await;

    let addr = info.target_address();
    let mut lifecycle = info.lifecycle;
    loop {
        let current = state.borrow_and_update().clone();
        let Some(current) = current else {
            // No longer ours (Terminated elsewhere, or forgotten): never leave it running.
            tracing::warn!(instance = %info.id, "instance no longer assigned here: stopping it");
            process.stop(template.stop_timeout).await;
            release_address(&l, &info, &view).await;
            return;
        };
        if current.lifecycle >= Lifecycle::Terminating {
            if current.lifecycle == Lifecycle::Terminating {
                wait_drained(&l, &current, &mut state, view.clone(), &stop).await;
            }
            process.stop(template.stop_timeout).await;
            if current.lifecycle == Lifecycle::Terminating {
                report_terminated(store, &info.id, None).await;
            }
            tracing::info!(instance = %info.id, "instance stopped");
            release_address(&l, &info, &view).await;
            return;
        }
        lifecycle = lifecycle.max(current.lifecycle);
        let poll = tokio::time::sleep(POLL);
        tokio::select! {
            () = process.exited() => {
                let status = process.exit_status().unwrap_or_else(|| "exited".to_string());
                report(store, Change::ReportInstanceHealth {
                    instance: info.id.clone(),
                    health: InstanceHealth::Unhealthy,
                    cause: Some(Cause::ProcessExited { status }),
                }).await;
                // The controller terminates it; then it is reported Terminated.
                wait_terminating(&mut state, &stop).await;
                report_terminated(store, &info.id, None).await;
                release_address(&l, &info, &view).await;
                return;
            }
            r = state.changed() => if r.is_err() { return },
            () = poll, if lifecycle == Lifecycle::Pending => {
                if is_listening(addr) {
                    lifecycle = Lifecycle::InService;
                    tracing::info!(instance = %info.id, %addr, "instance in service");
                    report(store, Change::ReportLifecycle {
                        instance: info.id.clone(),
                        lifecycle: Lifecycle::InService,
                        cause: None,
                        at: UnixMillis::now(),
                    }).await;
                }
            }
            () = stop.cancelled() => {
                // The agent is stopping: the instance keeps serving (the next agent adopts
                // it), as `up`'s instances outlive a killed `up`.
                return;
            }
        }
    }
}

/// Until the controller marks the instance Terminating (or it is no longer ours).
async fn wait_terminating(state: &mut watch::Receiver<Option<Instance>>, stop: &CancellationToken) {
    loop {
        let done = state
            .borrow_and_update()
            .as_ref()
            .is_none_or(|i| i.lifecycle >= Lifecycle::Terminating);
        if done {
            return;
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// How long after its drain began an instance's targets must show no flow on any node
/// before the drain counts as done early: the nodes report a changed count within a second
/// ([`crate::nodes`]), so by then the state holds every node's count from after the drain
/// began.
const DRAIN_SETTLE: Duration = Duration::from_secs(2);

/// Until the instance's targets are removed, or every node reports no flow left to them (once
/// [`DRAIN_SETTLE`] has passed: the drain ends when the flows do, as `up`'s does), or their
/// deregistration delay is over.
async fn wait_drained(
    l: &HostInstances,
    instance: &Instance,
    state: &mut watch::Receiver<Option<Instance>>,
    mut view: watch::Receiver<View>,
    stop: &CancellationToken,
) {
    let began = tokio::time::Instant::now();
    let no_flows_left = |v: &View| {
        v.connected
            && v.snapshot
                .targets
                .values()
                .flat_map(|t| t.values())
                .filter(|t| t.instance.as_deref() == Some(instance.id.as_str()))
                .all(|t| {
                    t.state == proxyfleet_state::TargetHealth::Draining
                        && t.nodes.values().all(|n| n.active_flows == 0)
                })
    };
    let flows_ended = async {
        tokio::time::sleep_until(began + DRAIN_SETTLE).await;
        loop {
            if no_flows_left(&view.borrow_and_update()) {
                return;
            }
            if view.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let stack = l.stack.get();
    let delay = stack
        .groups
        .iter()
        .find(|g| g.name == instance.group)
        .map(|g| {
            g.target_groups
                .iter()
                .filter_map(|tg| stack.target_group(tg))
                .map(|tg| tg.deregistration_delay)
                .max()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = async { while state.changed().await.is_ok() {} } => {}
        () = flows_ended => tracing::debug!(instance = %instance.id, "drained: no flow left on any node"),
        () = stop.cancelled() => {}
    }
}

async fn report_terminated(store: &dyn StateStore, id: &str, cause: Option<Cause>) {
    report(
        store,
        Change::ReportLifecycle {
            instance: id.to_string(),
            lifecycle: Lifecycle::Terminated,
            cause,
            at: UnixMillis::now(),
        },
    )
    .await;
}

/// Removes a stopped instance's address from the host's interface (across hosts), unless
/// another instance of this host that is not Terminated has it now (an address is reused).
async fn release_address(l: &HostInstances, info: &Instance, view: &watch::Receiver<View>) {
    let Some(interface) = &l.interface else {
        return;
    };
    let reused = view.borrow().snapshot.live_instances().any(|i| {
        i.id != info.id && i.address == info.address && i.host.as_deref() == Some(&l.host)
    });
    if reused {
        return;
    }
    if let Err(e) = interface.remove(info.address).await {
        tracing::warn!(instance = %info.id, address = %info.address, error = %e, "cannot remove the stopped instance's address");
    }
}
