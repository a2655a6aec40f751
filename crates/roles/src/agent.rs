//! One host's agent: announces the host and holds its liveness lease, runs the host's
//! load-balancer nodes and instances, and (if it may) campaigns for the controller role.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_lb::ProcessBudget;
use proxyfleet_stack::Stack;
use proxyfleet_state::{Change, Fence, Host, StateStore, UnixMillis};
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;
use crate::decide::Timings;
use crate::instances::HostInstances;
use crate::nodes::NodeSet;

/// How often a host renews its liveness lease at most; a quarter of the lease's ttl
/// ([`Timings::host_timeout`]) when that is shorter.
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
    /// The stack `apply` changes while the tier runs, shared by the agents of one process;
    /// `None`: this agent's own, made from `stack`.
    pub live_stack: Option<crate::LiveStack>,
    /// Instance directories live under `STATE_DIR/instances/`.
    pub state_dir: PathBuf,
    /// The `proxyfleet` binary (a template's `proxyfleet` argv[0]).
    pub self_exe: PathBuf,
    /// Whether this agent campaigns for the controller role.
    pub controller: bool,
    /// The controller's lease.
    pub lease: Duration,
    pub timings: Timings,
    /// The flows and splice pipes this host's nodes may use, together (shared with the other
    /// agents of the process, if any).
    pub budget: ProcessBudget,
    /// How the host's instances are launched and protected; `None`: this host's own
    /// ([`LocalLauncher`](proxyfleet_group::launcher::LocalLauncher) on `state_dir`).
    /// Agents that share a state directory in one process share one
    /// ([`SharedLauncher`](proxyfleet_group::launcher::SharedLauncher)).
    pub launcher: Option<Arc<dyn proxyfleet_group::launcher::Launcher>>,
    /// What the host serves while it cannot reach the store's majority (across hosts).
    pub when_isolated: crate::isolated::WhenIsolated,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("zone {0} is not in the stack")]
    UnknownZone(String),
    #[error(transparent)]
    Nodes(#[from] proxyfleet_lb::LbError),
    #[error("cannot answer for the DNS name on {listen}: {error}")]
    Dns {
        listen: std::net::SocketAddr,
        error: std::io::Error,
    },
}

/// A running agent.
pub struct Agent {
    pub nodes: Arc<NodeSet>,
    /// The agent's copy of the state, current while the store answers.
    pub view: tokio::sync::watch::Receiver<crate::view::View>,
    /// Its controller role, if it campaigns.
    controller: Option<Arc<Controller>>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    /// Ends the liveness lease's renewals: only after every other loop has ended, so that a
    /// stopping agent's planned hand-over of its node addresses is not cut short by its own
    /// fencing.
    keep_alive: CancellationToken,
    liveness: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The health-checked DNS name's server, while it runs.
    _dns: Option<crate::dns::DnsServer>,
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
        let keep_alive = CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        // Across hosts, this host's entry of the stack's `hosts:` says where its addresses go.
        let spec = config.stack.host(&config.host);
        let interface = spec
            .and_then(|h| h.interface.as_deref())
            .map(|name| Arc::new(crate::addresses::Interface::new(name)));
        if let Some(interface) = &interface {
            if let Err(e) = crate::handover::remove_stale().await {
                tracing::warn!(error = %e, "cannot look for hand-over tables a previous agent left");
            }
            if let Err(e) = install_return_routes(&config, interface.name(), &keep_alive).await {
                tracing::warn!(error = %e, "cannot install the return routing client-IP preservation needs across hosts: instances' replies to clients will not find their node");
            }
            if let Err(e) = interface.prefer_primary_in_arp() {
                tracing::warn!(interface = interface.name(), error = %e, "cannot set arp_announce = 2: a host handing a node address over may point clients back at itself");
            }
        }
        let clock = Arc::new(crate::holding::LeaseClock::new(config.timings.host_timeout));
        // The view outlives the loops (`stop`): a stopping host hands its node addresses
        // over by watching another host report holding them.
        let view = crate::view::follow(store.clone(), keep_alive.clone());
        let host = Host {
            id: config.host.clone(),
            address: config.address,
            zone: config.zone.clone(),
            last_heartbeat: UnixMillis::now(),
            nodes: Default::default(),
        };
        // Heartbeats first: an agent that stood in for this host's node hands it back once
        // it sees this host alive, and only then can the node be bound here.
        let writing_since = Arc::new(crate::controller::WritingSince::new(
            config.timings.host_timeout,
        ));
        let liveness = tokio::spawn(liveness(
            store.clone(),
            host,
            config.timings.host_timeout,
            view.clone(),
            writing_since.clone(),
            clock.clone(),
            keep_alive.clone(),
        ));
        let nodes = NodeSet::new(
            config.stack.clone(),
            config.host.clone(),
            config.zone.clone(),
            config.budget.clone(),
            store.clone(),
            view.clone(),
            stop.clone(),
            if interface.is_some() {
                keep_alive.clone()
            } else {
                stop.clone()
            },
            interface.clone(),
        );
        if interface.is_some() {
            // Not tracked: it runs as long as the liveness renewals (`keep_alive`), which
            // outlive the tracked tasks on shutdown.
            tokio::spawn(crate::holding::follow_elections(
                store.clone(),
                clock.clone(),
                config.timings.host_timeout,
                keep_alive.clone(),
            ));
            tasks.spawn(nodes.clone().hold(clock, config.when_isolated));
        } else {
            if let Err(e) = nodes.start_own(config.timings.host_timeout * 4).await {
                stop.cancel();
                keep_alive.cancel();
                return Err(e.into());
            }
            tasks.spawn(
                nodes
                    .clone()
                    .stand_in(config.timings, writing_since.clone()),
            );
        }
        let dns = match (&config.stack.dns, spec) {
            (Some(dns), Some(spec)) => {
                let listen = std::net::SocketAddr::new(spec.address, dns.port);
                let answer =
                    crate::dns::follow_answer(config.stack.clone(), view.clone(), stop.clone());
                match crate::dns::serve(listen, dns.name.clone(), answer, stop.clone()).await {
                    Ok(server) => {
                        tracing::info!(name = %dns.name, %listen, "answering for the DNS name");
                        Some(server)
                    }
                    Err(e) => {
                        stop.cancel();
                        keep_alive.cancel();
                        return Err(AgentError::Dns { listen, error: e });
                    }
                }
            }
            _ => None,
        };
        let live_stack = config
            .live_stack
            .clone()
            .unwrap_or_else(|| crate::LiveStack::new(config.stack.clone()));
        tasks.spawn(crate::live_stack::retune_nodes(
            live_stack.clone(),
            nodes.clone(),
            stop.clone(),
        ));
        let launcher = Arc::new(HostInstances {
            host: config.host.clone(),
            stack: live_stack.clone(),
            store: store.clone(),
            state_dir: config.state_dir.clone(),
            interface: interface.clone(),
            launcher: config.launcher.clone().unwrap_or_else(|| {
                Arc::new(proxyfleet_group::launcher::LocalLauncher::new(
                    &config.state_dir,
                    config.self_exe.clone(),
                ))
            }),
        });
        tasks.spawn(crate::instances::run(launcher, view.clone(), stop.clone()));
        let controller = config.controller.then(|| {
            Arc::new(Controller {
                candidate: config.host.clone(),
                stack: live_stack,
                store,
                lease: config.lease,
                timings: config.timings,
                writing_since,
                stopping: std::sync::atomic::AtomicBool::new(false),
            })
        });
        if let Some(controller) = &controller {
            tasks.spawn(crate::controller::run(
                controller.clone(),
                view.clone(),
                stop.clone(),
            ));
        }
        tasks.close();
        Ok(Agent {
            nodes,
            view,
            controller,
            stop,
            tasks,
            keep_alive,
            liveness: tokio::sync::Mutex::new(Some(liveness)),
            _dns: dns,
        })
    }

    /// From now on, while this agent leads, the controller winds the tier down instead of
    /// keeping it up: every instance drained and stopped, nothing launched
    /// ([`wind_down`](crate::decide::wind_down)). `false` for an agent that does not campaign.
    pub fn wind_down(&self) -> bool {
        match &self.controller {
            Some(c) => {
                c.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Stops the loops (resigning the leadership if held) and the nodes; instances keep
    /// running, for the next agent of this host to adopt.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
        self.keep_alive.cancel();
        if let Some(liveness) = self.liveness.lock().await.take() {
            let _ = liveness.await;
        }
    }
}

/// Across hosts, for a stack that preserves the client's address on the nodes' connections
/// (`transparent`): routes the instances' replies back to the node host that opened each
/// connection ([`crate::return_routes`]). Nothing for a stack that does not.
async fn install_return_routes(
    config: &AgentConfig,
    interface: &str,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    if !config
        .stack
        .target_groups
        .iter()
        .any(|g| g.preserve_client_ip)
    {
        return Ok(());
    }
    let v4 = crate::addresses::v4;
    let hosts: Vec<std::net::Ipv4Addr> = config
        .stack
        .hosts
        .iter()
        .filter_map(|h| v4(h.address))
        .collect();
    let others: Vec<crate::return_routes::OtherHost> = config
        .stack
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.id != config.host)
        .filter_map(|(i, h)| {
            Some(crate::return_routes::OtherHost {
                address: v4(h.address)?,
                index: i as u32,
            })
        })
        .collect();
    crate::return_routes::install(interface, &hosts, &others).await?;
    tokio::spawn(crate::return_routes::follow_neighbours(
        interface.to_string(),
        others,
        stop.clone(),
    ));
    tracing::info!("return routing for client-IP preservation installed");
    Ok(())
}

/// Holds the host's liveness lease (a new one whenever it lapsed: the tier may have written
/// the host off meanwhile) and renews it every [`HEARTBEAT`] or quarter of its ttl, and
/// announces the host (again whenever the state does not know it: a new cluster, or the host
/// was removed). An agent started while the store is unreachable serves with its nodes
/// meanwhile. Each renewal that goes through is this agent's evidence that the store takes
/// its writes ([`WritingSince`](crate::controller::WritingSince)).
async fn liveness(
    store: Arc<dyn StateStore>,
    host: Host,
    ttl: Duration,
    view: tokio::sync::watch::Receiver<crate::view::View>,
    writing: Arc<crate::controller::WritingSince>,
    clock: Arc<crate::holding::LeaseClock>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT.min(ttl / 4));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease: Option<proxyfleet_state::Liveness> = None;
    let mut failing = false;
    // The revision of this agent's last announcement: not repeated before the view has it.
    let mut announced = proxyfleet_state::Revision(0);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let sent = std::time::Instant::now();
        clock.sending(sent);
        let held = match &lease {
            Some(l) => store.renew_liveness(l).await,
            None => store.hold_liveness(&host.id, ttl).await.map(|l| {
                tracing::info!(host = %host.id, lease = l.lease, "liveness lease held");
                lease = Some(l);
            }),
        };
        match held {
            // The run of writes counts from when the renewal is known to have gone through
            // (one sent during an outage may only be taken when it ends); the lease clock
            // from when it was sent (the lease runs from no earlier than that).
            Ok(()) => {
                clock.renewed(sent);
                writing.wrote(UnixMillis::now());
                if failing {
                    tracing::info!("state store: liveness renewed again");
                }
                failing = false;
            }
            Err(proxyfleet_state::StoreError::LivenessLapsed { .. }) => {
                tracing::warn!(host = %host.id, "liveness lease lapsed (the host may have been written off): holding a new one");
                lease = None;
                clock.lapsed();
                writing.failed();
                continue;
            }
            Err(e) => {
                writing.failed();
                if !failing {
                    tracing::warn!(error = %e, "state store: liveness not renewed");
                }
                failing = true;
                continue;
            }
        }
        let known = {
            let v = view.borrow();
            !v.connected
                || v.revision < announced
                // What nodes it holds is reported apart (ReportNodes), not announced.
                || v.snapshot.hosts.get(&host.id).is_some_and(|h| {
                    *h == Host {
                        nodes: h.nodes.clone(),
                        ..host.clone()
                    }
                })
        };
        if !known {
            let change = Change::RegisterHost { host: host.clone() };
            match store.apply(Fence::Unfenced, vec![change]).await {
                Ok(revision) => {
                    announced = revision;
                    tracing::info!(host = %host.id, zone = %host.zone, "host announced");
                }
                Err(e) => tracing::warn!(error = %e, "state store: host not announced yet"),
            }
        }
    }
}
