//! `proxyfleet up`: the tier as the roles a multi-host tier runs — one agent per zone of the
//! stack (host `up-ZONE`, the zone's nodes and instances), the controller elected among them
//! — in this one process, on the embedded SQLite store in the state directory (`state.db`,
//! beside the tables of the previous group controller, `up --fleet`); no etcd. Presented as
//! `up` always was (see `AgentControl::as_up`).
//!
//! Stopping (SIGINT, SIGTERM, `down`) is `up`'s: the controller winds the tier down (every
//! instance deregistered, drained and stopped, nothing launched), the API answering
//! meanwhile; then the agents stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_roles::decide::Timings;
use proxyfleet_roles::{Agent, AgentConfig};
use proxyfleet_state::{Lifecycle, SqliteStore, StateStore};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::Failure;

/// The store's file in the state directory: the file `up`'s group controller keeps its own
/// tables in (their names do not meet), 0600 like it.
pub const STORE_FILE: &str = "state.db";

/// How long stopping waits for the instances on top of their drain and stop timeouts.
const STOP_SLACK: Duration = Duration::from_secs(10);

pub async fn serve(
    stack: proxyfleet_stack::Stack,
    stack_text: String,
    state_dir: PathBuf,
    limits: proxyfleet_lb::Limits,
) -> Result<(), Failure> {
    let state_dir = state_dir.canonicalize().unwrap_or(state_dir);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // 0711 and 0600 (see group's `files`): instance directories hold who visited what, the
    // store every instance's address; SQLite gives its -wal and -shm files the database's mode.
    proxyfleet_group::files::state_dir(&state_dir.join("instances"))
        .map_err(|e| anyhow::anyhow!("cannot create the instances' directory: {e}"))?;
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        let path = state_dir.join(name);
        if name == STORE_FILE || path.exists() {
            proxyfleet_group::files::private_file(&path, proxyfleet_group::files::STATE_FILE_MODE)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    let store: Arc<dyn StateStore> = Arc::new(
        SqliteStore::open(&state_dir.join(STORE_FILE))
            .map_err(|e| anyhow::anyhow!("cannot open the state store: {e}"))?,
    );
    let self_exe = std::env::current_exe()?;
    // The descriptor budget is the process's: every node's balancer draws on the same one.
    let budget = proxyfleet_lb::ProcessBudget::new(limits);
    // Every host of this process keeps its instances where `up` does (STATE/instances/ID),
    // protected through one firewall table named after the state directory, as `up`'s.
    let launcher = proxyfleet_group::launcher::SharedLauncher::new(&state_dir, self_exe.clone());
    let mut agents = Vec::new();
    let mut host_dirs = BTreeMap::new();
    // One stack every agent of this process follows: what `apply` changes.
    let live_stack = proxyfleet_roles::LiveStack::new(stack.clone());
    for (i, zone) in stack.zones.iter().enumerate() {
        let host = format!("up-{}", zone.name);
        let dir = state_dir.clone();
        let address = stack
            .load_balancers
            .iter()
            .flat_map(|lb| &lb.nodes)
            .find(|n| n.zone == zone.name)
            .map_or(zone.subnet.network(), |n| n.address);
        let config = AgentConfig {
            host: host.clone(),
            zone: zone.name.clone(),
            address,
            stack: stack.clone(),
            live_stack: Some(live_stack.clone()),
            state_dir: dir.clone(),
            self_exe: self_exe.clone(),
            // One candidate: in one process there is nothing to fail over to.
            controller: i == 0,
            lease: Duration::from_secs(1),
            timings: Timings::default(),
            budget: budget.clone(),
            launcher: Some(launcher.for_host(&host)),
            when_isolated: Default::default(),
        };
        agents.push(Agent::start(config, store.clone()).await?);
        host_dirs.insert(host, dir);
    }
    for agent in &agents {
        for (lb, zone, addr) in agent.nodes.listen_addrs() {
            println!("proxyfleet up: load balancer {lb} node {zone} listening on {addr}");
        }
    }
    let stop = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let recent = proxyfleet_roles::history::Recent::follow(store.clone(), admin_stop.clone());
    wait_taken_up(&agents[0], &recent).await;
    // `up` does not use the stack's etcd (the note at start says so): no member health to ask.
    let mut local_stack = stack.clone();
    local_stack.etcd = None;
    let control = crate::agent_control::AgentControl::new(
        "up".to_string(),
        local_stack,
        stack_text,
        store.clone(),
        agents[0].view.clone(),
        agents.iter().map(|a| a.nodes.clone()).collect(),
        host_dirs,
        recent,
        true,
        stop.clone(),
        Some(live_stack.clone()),
    );
    let options = proxyfleet_admin::Options {
        read_requires_token: stack.admin.read_requires_token,
    };
    let admin = proxyfleet_admin::serve_with(
        control.clone(),
        &state_dir,
        options,
        admin_stop.clone().cancelled_owned(),
    )
    .await?;
    println!(
        "proxyfleet up: admin API on http://{} (token in {}); web console at http://{}/",
        admin.addr,
        state_dir.join(proxyfleet_admin::TOKEN_FILE).display(),
        admin.addr
    );
    let progress = async {
        if !stack.groups.is_empty() {
            crate::up::report_when_ready(&*control, &stop).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = progress => {}
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
        () = stop.cancelled() => tracing::info!("down: stopping"),
    }
    println!("proxyfleet up: stopping: deregistering, draining and stopping instances");
    stop.cancel();
    agents[0].wind_down();
    let patience = stop_patience(&stack);
    let deadline = tokio::time::Instant::now() + patience;
    let mut view = agents[0].view.clone();
    loop {
        let running = view
            .borrow_and_update()
            .snapshot
            .instances
            .values()
            .filter(|i| i.lifecycle != Lifecycle::Terminated)
            .count();
        if running == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            println!(
                "proxyfleet up: warning: {running} instances still running after {patience:?}"
            );
            break;
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { break },
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    for agent in &agents {
        agent.shutdown().await;
    }
    launcher.release();
    admin_stop.cancel();
    admin.wait().await;
    println!("proxyfleet up: stopped");
    Ok(())
}

/// How long a restarted `up` waits for its agents to take up the instances an earlier run
/// left serving.
const TAKE_UP_WAIT: Duration = Duration::from_secs(10);

/// After a restart, until every instance the state has running here is adopted (or found
/// lost) — what `up`'s group controller does before it reports anything — so that what `up`
/// then reports (ready, the activity history) is about instances it runs.
async fn wait_taken_up(agent: &Agent, recent: &proxyfleet_roles::history::Recent) {
    // The first copy of the state that is current.
    let mut view = agent.view.clone();
    let deadline = tokio::time::Instant::now() + TAKE_UP_WAIT;
    let running: Vec<String> = loop {
        {
            let v = view.borrow_and_update();
            if v.connected {
                break v
                    .snapshot
                    .live_instances()
                    .filter(|i| i.process.is_some() && i.lifecycle == Lifecycle::InService)
                    .map(|i| i.id.clone())
                    .collect();
            }
        }
        if tokio::time::timeout_at(deadline, view.changed())
            .await
            .is_err()
        {
            return;
        }
    };
    loop {
        let adopted = recent.scaling_activities(None, usize::MAX);
        let current = agent.view.borrow().snapshot.clone();
        let pending = running.iter().filter(|id| {
            let taken = adopted.iter().any(|a| {
                a.description
                    .starts_with(&format!("Adopting instance {id} "))
            });
            let gone = current.instances.get(*id).is_none_or(|i| {
                i.lifecycle >= Lifecycle::Terminating
                    || i.health == proxyfleet_state::InstanceHealth::Unhealthy
            });
            !taken && !gone
        });
        if pending.count() == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long stopping waits for every instance: the longest deregistration delay and stop
/// timeout of the stack, and some slack.
fn stop_patience(stack: &proxyfleet_stack::Stack) -> Duration {
    let drain = stack
        .target_groups
        .iter()
        .map(|t| t.deregistration_delay)
        .max()
        .unwrap_or_default();
    let stop = stack
        .launch_templates
        .iter()
        .map(|t| t.stop_timeout)
        .max()
        .unwrap_or_default();
    drain + stop + STOP_SLACK
}
