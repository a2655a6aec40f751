//! One host's agent: announces the host and keeps its heartbeat, runs the host's load-balancer
//! nodes and instances, and (if it may) campaigns for the controller role.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_lb::{Balancer, Limits};
use proxyfleet_stack::Stack;
use proxyfleet_state::{Change, Fence, Host, StateStore, UnixMillis};
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;
use crate::decide::Timings;
use crate::instances::Launcher;

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
    #[error("cannot announce the host to the state store: {0}")]
    Register(#[from] proxyfleet_state::StoreError),
}

/// A running agent.
pub struct Agent {
    pub balancer: Arc<Balancer>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Agent {
    /// Announces the host (waiting for the store), binds the zone's nodes, and starts every
    /// loop.
    pub async fn start(
        config: AgentConfig,
        store: Arc<dyn StateStore>,
    ) -> Result<Agent, AgentError> {
        if config.stack.zone(&config.zone).is_none() {
            return Err(AgentError::UnknownZone(config.zone));
        }
        let stop = CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let host = Host {
            id: config.host.clone(),
            address: config.address,
            zone: config.zone.clone(),
            last_heartbeat: UnixMillis::now(),
        };
        store
            .apply(Fence::Unfenced, vec![Change::RegisterHost { host }])
            .await?;
        let view = crate::view::follow(store.clone(), stop.clone());
        let balancer = crate::nodes::start(
            &config.stack,
            &config.zone,
            config.limits,
            store.clone(),
            view.clone(),
            stop.clone(),
        )
        .await?;
        tasks.spawn(heartbeat(store.clone(), config.host.clone(), stop.clone()));
        let launcher = Arc::new(Launcher {
            host: config.host.clone(),
            stack: config.stack.clone(),
            store: store.clone(),
            state_dir: config.state_dir.clone(),
            self_exe: config.self_exe.clone(),
        });
        tasks.spawn(crate::instances::run(launcher, view.clone(), stop.clone()));
        if config.controller {
            let controller = Arc::new(Controller {
                candidate: config.host.clone(),
                stack: config.stack.clone(),
                store,
                lease: config.lease,
                timings: config.timings,
            });
            tasks.spawn(crate::controller::run(controller, view, stop.clone()));
        }
        tasks.close();
        Ok(Agent {
            balancer,
            stop,
            tasks,
        })
    }

    /// Stops the loops (resigning the leadership if held) and the nodes; instances keep
    /// running, for the next agent of this host to adopt.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
        self.balancer.shutdown().await;
    }
}

async fn heartbeat(store: Arc<dyn StateStore>, host: String, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let beat = Change::Heartbeat {
            host: host.clone(),
            at: UnixMillis::now(),
        };
        match store.apply(Fence::Unfenced, vec![beat]).await {
            Ok(_) if failing => {
                tracing::info!("state store: heartbeats written again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "state store: heartbeat not written");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
