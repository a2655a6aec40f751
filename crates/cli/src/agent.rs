//! `proxyfleet agent -f STACK --host ID --zone ZONE`: one host's share of the tier — that
//! zone's load-balancer nodes and the instances the controller assigns to the host — and,
//! unless `--no-controller`, a candidate for the controller role. Runs in the foreground until
//! SIGINT or SIGTERM; its instances keep serving after it stops, for the next agent of the
//! host to adopt.
//!
//! The state store: SQLite under the state directory (`roles.db`) when no etcd endpoint is
//! given, which serves one agent alone (the embedded store follows changes within one
//! process); every agent of a multi-agent tier shares an etcd cluster instead.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use proxyfleet_roles::decide::Timings;
use proxyfleet_roles::isolated::WhenIsolated;
use proxyfleet_roles::{Agent, AgentConfig};
use tokio::signal::unix::{signal, SignalKind};

use crate::Failure;

#[derive(Args)]
pub struct AgentArgs {
    /// The stack file (default: the built-in stack).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// This host's id, unique in the tier.
    #[arg(long)]
    host: String,
    /// The zone whose nodes and instances this host runs (default: the stack's `hosts:`
    /// entry for this host; required without one).
    #[arg(long)]
    zone: Option<String>,
    /// This host's address, as status shows it (default: the stack's `hosts:` entry for
    /// this host, else the zone's first node address).
    #[arg(long)]
    address: Option<IpAddr>,
    /// Where this host's instances live (and the SQLite store, without etcd).
    #[arg(long, default_value = ".proxyfleet-agent")]
    state_dir: PathBuf,
    /// Do not campaign for the controller role.
    #[arg(long)]
    no_controller: bool,
    /// The controller's lease: a leader that cannot renew within it is replaced.
    #[arg(long, default_value = "1s", value_parser = lease_duration)]
    lease: Duration,
    /// Serve a read-only view of the tier (`/api/tier`, `/api/activity`) on this address
    /// (e.g. 127.0.0.1:9128; port 0: any free port, printed at start).
    #[arg(long)]
    api: Option<std::net::SocketAddr>,
    /// The host's liveness lease: a host that does not renew it within this is lost, its
    /// node address taken over and its instances replaced (etcd counts whole seconds).
    #[arg(long, default_value = "1s", value_parser = lease_duration)]
    host_timeout: Duration,
    /// What this host serves while it cannot reach the etcd majority (across hosts): `serve`
    /// the node addresses nobody else on the segment answers for (asked by ARP probe, once
    /// any host that still reaches the majority has taken them over), or `fence`: nothing.
    #[arg(long, value_enum, default_value = "serve")]
    isolated: Isolated,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Isolated {
    Serve,
    Fence,
}

/// The shortest and longest lease an agent takes: renewals run every quarter of one, so a
/// lease much shorter than this is renewed in a busy loop (or, at zero, not at all).
const LEASE_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

/// A lease's length: a duration (`1s`, `500ms`) within [`LEASE_RANGE`].
fn lease_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let (min, max) = LEASE_RANGE;
    if d < min || d > max {
        return Err(format!(
            "{text} is outside {} .. {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

pub fn run(args: AgentArgs) -> Result<(), Failure> {
    let usage = |error: anyhow::Error| Failure { code: 2, error };
    let stack = match &args.file {
        Some(path) => proxyfleet_stack::load(path).map_err(|e| usage(anyhow::anyhow!("{e}")))?,
        None => proxyfleet_stack::builtin(),
    };
    let spec = stack.host(&args.host).cloned();
    if spec.is_none() && !stack.hosts.is_empty() {
        let hosts: Vec<&str> = stack.hosts.iter().map(|h| h.id.as_str()).collect();
        return Err(usage(anyhow::anyhow!(
            "--host {}: the stack's hosts section has no such host (it has: {})",
            args.host,
            hosts.join(", ")
        )));
    }
    let zone_name = match (&args.zone, &spec) {
        (Some(z), Some(h)) if *z != h.zone => {
            return Err(usage(anyhow::anyhow!(
                "--zone {z}: the stack puts host {} in zone {}",
                args.host,
                h.zone
            )))
        }
        (_, Some(h)) => h.zone.clone(),
        (Some(z), None) => z.clone(),
        (None, None) => {
            return Err(usage(anyhow::anyhow!(
                "--zone is needed: the stack has no hosts section naming host {}",
                args.host
            )))
        }
    };
    let Some(zone) = stack.zone(&zone_name) else {
        let zones: Vec<&str> = stack.zones.iter().map(|z| z.name.as_str()).collect();
        return Err(usage(anyhow::anyhow!(
            "--zone {zone_name}: the stack has no such zone (it has: {})",
            zones.join(", ")
        )));
    };
    let address = args
        .address
        .or(spec.as_ref().map(|h| h.address))
        .or_else(|| {
            stack
                .load_balancers
                .iter()
                .flat_map(|lb| &lb.nodes)
                .find(|n| n.zone == zone_name)
                .map(|n| n.address)
        })
        .unwrap_or(zone.subnet.network());
    let open_files = crate::limits::raise_open_files(u64::MAX);
    let needed = proxyfleet_stack::budget::DescriptorBudget::of(&stack);
    let limits = proxyfleet_stack::budget::limits(&needed, open_files);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        proxyfleet_group::files::state_dir(&args.state_dir)
            .map_err(|e| anyhow::anyhow!("cannot create state directory: {e}"))?;
        let state_dir = args.state_dir.canonicalize().unwrap_or(args.state_dir);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let store = crate::tier::open_store(&stack, &state_dir, true)?;
        let stack_text = match &args.file {
            Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
            None => proxyfleet_stack::BUILTIN.to_string(),
        };
        let admin_options = proxyfleet_admin::Options {
            read_requires_token: stack.admin.read_requires_token,
        };
        let api_stop = tokio_util::sync::CancellationToken::new();
        if let Some(addr) = args.api {
            let bound =
                crate::agent_api::serve(addr, stack.clone(), store.clone(), api_stop.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("--api {addr}: cannot listen: {e}"))?;
            println!("proxyfleet agent: api on http://{bound}/api/tier");
        }
        let timings = Timings {
            host_timeout: args.host_timeout,
            ..Timings::default()
        };
        let stack_for_api = stack.clone();
        let config = AgentConfig {
            host: args.host.clone(),
            zone: zone_name.clone(),
            address,
            stack,
            // Across hosts `apply` does not change a running tier yet.
            live_stack: None,
            state_dir: state_dir.clone(),
            self_exe: std::env::current_exe()?,
            controller: !args.no_controller,
            lease: args.lease,
            timings,
            budget: proxyfleet_lb::ProcessBudget::new(limits),
            launcher: None,
            when_isolated: match args.isolated {
                Isolated::Serve => WhenIsolated::Serve,
                Isolated::Fence => WhenIsolated::Fence,
            },
        };
        let agent = Agent::start(config, store.clone()).await?;
        // The admin API (what `status`, `activity`, `scale`, `terminate`, `down` and the
        // console talk to, through this state directory), answered from the shared state.
        let down = tokio_util::sync::CancellationToken::new();
        let recent = proxyfleet_roles::history::Recent::follow(store.clone(), api_stop.clone());
        let control = crate::agent_control::AgentControl::new(
            args.host.clone(),
            stack_for_api,
            stack_text,
            store,
            agent.view.clone(),
            vec![agent.nodes.clone()],
            [(args.host.clone(), state_dir.clone())].into(),
            recent,
            false,
            down.clone(),
            None,
        );
        let admin = proxyfleet_admin::serve_with(
            control,
            &state_dir,
            admin_options,
            api_stop.clone().cancelled_owned(),
        )
        .await?;
        println!(
            "proxyfleet agent: admin API on http://{} (token in {}); web console at http://{}/",
            admin.addr,
            state_dir.join(proxyfleet_admin::TOKEN_FILE).display(),
            admin.addr
        );
        for (lb, zone, addr) in agent.nodes.listen_addrs() {
            println!("proxyfleet agent: load balancer {lb} node {zone} listening on {addr}");
        }
        println!(
            "proxyfleet agent: host {} (zone {}) running",
            args.host, zone_name
        );
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            () = down.cancelled() => tracing::info!("down: stopping"),
        }
        agent.shutdown().await;
        api_stop.cancel();
        admin.wait().await;
        println!("proxyfleet agent: stopped (instances keep running)");
        Ok(())
    })
}
