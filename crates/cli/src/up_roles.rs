//! `proxyfleet up --roles` (or `PROXYFLEET_UP_ROLES=1`): the tier as the roles a multi-host
//! tier runs — one agent per zone of the stack (host `up-ZONE`, the zone's nodes and
//! instances), the controller elected among them — in this one process, on the embedded
//! SQLite store in the state directory (`tier.db`); no etcd. It is meant to become `up`'s
//! default once it passes every test `up` passes; until then `up` runs its own group controller
//! and balancer.
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

/// The store's file in the state directory.
pub const STORE_FILE: &str = "tier.db";

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
    let store: Arc<dyn StateStore> = Arc::new(
        SqliteStore::open(&state_dir.join(STORE_FILE))
            .map_err(|e| anyhow::anyhow!("cannot open the state store: {e}"))?,
    );
    let self_exe = std::env::current_exe()?;
    let mut agents = Vec::new();
    let mut host_dirs = BTreeMap::new();
    for (i, zone) in stack.zones.iter().enumerate() {
        let host = format!("up-{}", zone.name);
        let dir = state_dir.join("hosts").join(&zone.name);
        proxyfleet_group::files::state_dir(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
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
            state_dir: dir.clone(),
            self_exe: self_exe.clone(),
            // One candidate: in one process there is nothing to fail over to.
            controller: i == 0,
            lease: Duration::from_secs(1),
            timings: Timings::default(),
            limits,
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
        stop.clone(),
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
    admin_stop.cancel();
    admin.wait().await;
    println!("proxyfleet up: stopped");
    Ok(())
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
