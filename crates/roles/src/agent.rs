//! One host's agent: announces the host and keeps its heartbeat, runs the host's load-balancer
//! nodes and instances, and (if it may) campaigns for the controller role.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_lb::Limits;
use proxyfleet_stack::Stack;
use proxyfleet_state::{Change, Fence, Host, StateStore, UnixMillis};
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;
use crate::decide::Timings;
use crate::instances::HostInstances;
use crate::nodes::NodeSet;

/// How often a host says it is alive; [`Timings::host_timeout`] is several of these.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// What an agent is started with.
pub struct AgentConfig {
    /// The host's id (unique in the tier).
    pub host: String,
    /// The zone whose nodes and instances this host runs.
    pub zone: String,
    /// The host's own address (shown in status).
    pub address: IpAddr,
    pub stack: Stack,
    /// Instance directories live under `STATE_DIR/instances/`.
    pub state_dir: PathBuf,
    /// The `proxyfleet` binary (a template's `proxyfleet` argv[0]).
    pub self_exe: PathBuf,
    /// Whether this agent campaigns for the controller role.
    pub controller: bool,
    /// The controller's lease.
    pub lease: Duration,
    pub timings: Timings,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("zone {0} is not in the stack")]
    UnknownZone(String),
    #[error(transparent)]
    Nodes(#[from] proxyfleet_lb::LbError),
}

/// A running agent.
pub struct Agent {
    pub nodes: Arc<NodeSet>,
    /// The agent's copy of the state, current while the store answers.
    pub view: tokio::sync::watch::Receiver<crate::view::View>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Agent {
    /// Binds the zone's nodes and starts every loop; the host is announced as soon as the
    /// store answers.
    pub async fn start(
        config: AgentConfig,
        store: Arc<dyn StateStore>,
    ) -> Result<Agent, AgentError> {
        if config.stack.zone(&config.zone).is_none() {
            return Err(AgentError::UnknownZone(config.zone));
        }
        let stop = CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let view = crate::view::follow(store.clone(), stop.clone());
        let host = Host {
            id: config.host.clone(),
            address: config.address,
            zone: config.zone.clone(),
            last_heartbeat: UnixMillis::now(),
        };
        // Heartbeats first: an agent that stood in for this host's node hands it back once
        // it sees this host alive, and only then can the node be bound here.
        let writing_since = Arc::new(crate::controller::WritingSince::new());
        tasks.spawn(heartbeat(
            store.clone(),
            host,
            writing_since.clone(),
            stop.clone(),
        ));
        let nodes = NodeSet::new(
            config.stack.clone(),
            config.host.clone(),
            config.zone.clone(),
            config.limits,
            store.clone(),
            view.clone(),
            stop.clone(),
        );
        if let Err(e) = nodes.start_own(config.timings.host_timeout * 4).await {
            stop.cancel();
            return Err(e.into());
        }
        tasks.spawn(nodes.clone().stand_in(config.timings));
        let launcher = Arc::new(HostInstances {
            host: config.host.clone(),
            stack: config.stack.clone(),
            store: store.clone(),
            state_dir: config.state_dir.clone(),
            launcher: Arc::new(proxyfleet_group::launcher::LocalLauncher::new(
                &config.state_dir,
                config.self_exe.clone(),
            )),
        });
        tasks.spawn(crate::instances::run(launcher, view.clone(), stop.clone()));
        if config.controller {
            let controller = Arc::new(Controller {
                candidate: config.host.clone(),
                stack: config.stack.clone(),
                store,
                lease: config.lease,
                timings: config.timings,
                writing_since,
            });
            tasks.spawn(crate::controller::run(
                controller,
                view.clone(),
                stop.clone(),
            ));
        }
        tasks.close();
        Ok(Agent {
            nodes,
            view,
            stop,
            tasks,
        })
    }

    /// Stops the loops (resigning the leadership if held) and the nodes; instances keep
    /// running, for the next agent of this host to adopt.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// Announces the host (again until the store takes it), then says it is alive every
/// [`HEARTBEAT`]. An agent started while the store is unreachable serves with its nodes
/// meanwhile.
async fn heartbeat(
    store: Arc<dyn StateStore>,
    host: Host,
    writing: Arc<crate::controller::WritingSince>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut registered = false;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let change = if registered {
            Change::Heartbeat {
                host: host.id.clone(),
                at: UnixMillis::now(),
            }
        } else {
            Change::RegisterHost {
                host: Host {
                    last_heartbeat: UnixMillis::now(),
                    ..host.clone()
                },
            }
        };
        let result = store.apply(Fence::Unfenced, vec![change]).await;
        match &result {
            // Counted from when the write is known to have gone through, not from when it
            // was sent: a write sent during an outage may only be taken when it ends.
            Ok(_) => writing.wrote(UnixMillis::now()),
            Err(_) => writing.failed(),
        }
        match result {
            Ok(_) => {
                if failing {
                    tracing::info!("state store: heartbeats written again");
                }
                if !registered {
                    tracing::info!(host = %host.id, zone = %host.zone, "host announced");
                }
                registered = true;
                failing = false;
            }
            // The store does not know the host (a new cluster, or the host was removed):
            // announce it again.
            Err(proxyfleet_state::StoreError::Refused { .. }) => registered = false,
            Err(e) if !failing => {
                tracing::warn!(error = %e, "state store: heartbeat not written");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
