//! `proxyfleet up [-f FILE] [--state-dir DIR] [--fleet]`: runs a stack in the foreground — its
//! load balancers, its self-healing groups, the admin API — until SIGINT, SIGTERM or `down`:
//! as the roles in one process (`crate::up_roles`), or with `--fleet` as the previous group
//! controller and balancer (this file's `serve`), kept for one release.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use proxyfleet_admin::ControlError;
use proxyfleet_group::{Fleet, FleetError};
use proxyfleet_lb::Balancer;
use proxyfleet_stack::budget::{self, DescriptorBudget};
use proxyfleet_state::report::{Activity, BalancerStatus, GroupStatus};
use proxyfleet_state::Lifecycle;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::Failure;

#[derive(Args)]
pub struct UpArgs {
    /// The stack file (default: the built-in stack, see `proxyfleet example`).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Where instances, the activity history and the admin API's address and token live.
    #[arg(long, default_value = crate::client::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Run the previous single-process group controller and balancer instead of the roles
    /// (kept for one release, e.g. to stop instances an older `up` left running).
    #[arg(long, env = "PROXYFLEET_UP_FLEET", value_parser = clap::builder::FalseyValueParser::new())]
    fleet: bool,
}

/// The admin API's view of the running stack.
struct Running {
    stack_text: String,
    balancer: Arc<Balancer>,
    fleet: Arc<Fleet>,
    stop: CancellationToken,
}

impl proxyfleet_admin::Control for Running {
    fn stack_text(&self) -> String {
        self.stack_text.clone()
    }
    fn balancer(&self) -> BalancerStatus {
        self.balancer.status()
    }
    fn groups(&self) -> Vec<GroupStatus> {
        self.fleet.groups()
    }
    fn activities(&self, group: Option<&str>, limit: usize) -> Vec<Activity> {
        self.fleet.activities(group, limit).unwrap_or_default()
    }
    fn scale(&self, group: &str, desired: u32) -> Result<(), ControlError> {
        self.fleet.scale(group, desired).map_err(control_error)
    }
    fn terminate(&self, instance: &str, decrement_desired: bool) -> Result<(), ControlError> {
        self.fleet
            .terminate(instance, decrement_desired)
            .map_err(control_error)
    }
    fn set_instance_health(&self, instance: &str, healthy: bool) -> Result<(), ControlError> {
        self.fleet
            .set_instance_health(instance, healthy)
            .map_err(control_error)
    }
    fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// The admin API's kind of refusal for a group controller's error (the kind decides the
/// status code, never the message's words).
fn control_error(e: FleetError) -> ControlError {
    match e {
        FleetError::NoSuchGroup(_) | FleetError::NoSuchInstance(_) => {
            ControlError::NotFound(e.to_string())
        }
        FleetError::OutOfRange { .. }
        | FleetError::Store(_)
        | FleetError::StateDir { .. }
        | FleetError::NoTemplate { .. } => ControlError::Refused(e.to_string()),
    }
}

pub fn run(args: UpArgs) -> Result<(), Failure> {
    let (stack, stack_text) = match &args.file {
        Some(path) => {
            let stack = proxyfleet_stack::load(path).map_err(|e| Failure {
                code: 2,
                error: anyhow::anyhow!("{e}"),
            })?;
            (stack, std::fs::read_to_string(path).unwrap_or_default())
        }
        None => (
            proxyfleet_stack::builtin(),
            proxyfleet_stack::BUILTIN.to_string(),
        ),
    };
    if let Some(etcd) = &stack.etcd {
        println!(
            "proxyfleet up: note: the stack names etcd ({} endpoints); up runs every role in              this process on its own SQLite store and does not use it (run `proxyfleet agent`              on each host for that)",
            etcd.endpoints.len()
        );
    }
    // Two descriptors per balanced flow; the instances inherit the raised limit too.
    let limit = crate::limits::raise_open_files(u64::MAX);
    let needed = DescriptorBudget::of(&stack);
    let limits = budget::limits(&needed, limit);
    if let Some(flows) = limits.flows {
        // Said on standard output too: it caps what the stack file asked for.
        println!(
            "proxyfleet up: warning: the stack needs {} file descriptors ({} for flows at every \
             node's max_connections, {} for health checks, {} reserved) but the open-file limit \
             is {limit}: at most {flows} flows at once across all nodes (more wait in the backlog); \
             health checks and the admin API keep their descriptors, and bulk flows are copied \
             rather than spliced",
            needed.total(),
            needed.flows,
            needed.checks,
            needed.reserved
        );
        tracing::warn!(
            needed = needed.total(),
            limit,
            flows,
            "flows capped by the open-file limit"
        );
    } else {
        tracing::debug!(limit, pipes = ?limits.pipes, "splice pipes that fit beside every flow");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.fleet {
        return runtime.block_on(serve(stack, stack_text, args.state_dir, limits));
    }
    runtime.block_on(async {
        make_state_dir(&args.state_dir)?;
        refuse_fleet_leftovers(&args.state_dir)?;
        crate::up_roles::serve(stack, stack_text, args.state_dir, limits).await
    })
}

/// 0711 (see group's `files`): it holds the admin token, the store and every instance's
/// access log. Another mode (0755 from an older proxyfleet, or by hand) is changed, and the
/// change said.
fn make_state_dir(state_dir: &std::path::Path) -> Result<(), Failure> {
    let loose = proxyfleet_group::files::state_dir(state_dir)
        .map_err(|e| anyhow::anyhow!("cannot create state directory: {e}"))?;
    if let Some(old) = loose {
        println!(
            "proxyfleet up: state directory {} was mode {old:04o}, now 0711",
            state_dir.display()
        );
    }
    Ok(())
}

/// A state directory whose instances the previous group controller (`up --fleet`, or an
/// `up` before the roles) left running: the roles would not know them and would launch over
/// their addresses. Refused, saying how to end them.
fn refuse_fleet_leftovers(state_dir: &std::path::Path) -> Result<(), Failure> {
    let db = state_dir.join("state.db");
    if !db.exists() {
        return Ok(());
    }
    let live = proxyfleet_group::store::Store::open(&db)
        .and_then(|s| s.live_instances())
        .map_err(|e| anyhow::anyhow!("{}: {e}", db.display()))?;
    if live.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = live.iter().map(|i| i.id.as_str()).collect();
    Err(Failure {
        code: 2,
        error: anyhow::anyhow!(
            "{}: {} instances of the previous group controller are still recorded as running              ({}); run `proxyfleet up --fleet --state-dir {}` once (it adopts them) and stop it              with `proxyfleet down`, then start `up` again",
            db.display(),
            live.len(),
            ids.join(", "),
            state_dir.display()
        ),
    })
}

async fn serve(
    stack: proxyfleet_stack::Stack,
    stack_text: String,
    state_dir: PathBuf,
    limits: proxyfleet_lb::Limits,
) -> Result<(), Failure> {
    make_state_dir(&state_dir)?;
    let state_dir = state_dir.canonicalize().unwrap_or(state_dir);
    // Signals are caught from the start: a stop during start-up must still take every
    // instance and the firewall table down.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let balancer = Arc::new(
        Balancer::start_limited(&stack.load_balancers, &stack.target_groups, limits).await?,
    );
    for (lb, zone, addr) in balancer.listen_addrs() {
        println!("proxyfleet up: load balancer {lb} node {zone} listening on {addr}");
    }
    let self_exe = std::env::current_exe()?;
    let groups = stack.groups.len();
    let fleet =
        Arc::new(Fleet::start(stack.clone(), balancer.clone(), &state_dir, self_exe).await?);
    let stop = CancellationToken::new();
    let running = Arc::new(Running {
        stack_text,
        balancer: balancer.clone(),
        fleet: fleet.clone(),
        stop: stop.clone(),
    });
    let running_for_progress = running.clone();
    // The API outlives the stop request: `status` keeps answering while instances drain, and
    // `down` returns only when everything is gone.
    let admin_stop = CancellationToken::new();
    let options = proxyfleet_admin::Options {
        read_requires_token: stack.admin.read_requires_token,
    };
    let admin = proxyfleet_admin::serve_with(
        running,
        &state_dir,
        options,
        admin_stop.clone().cancelled_owned(),
    )
    .await?;
    let socket = match &admin.socket {
        Ok(path) => format!(" and unix:{}", path.display()),
        Err(e) => {
            // The CLI then takes the TCP port, which other local clients can crowd.
            println!("proxyfleet up: warning: {e}; the CLI will use the TCP port");
            String::new()
        }
    };
    println!(
        "proxyfleet up: admin API on http://{}{socket} (token in {}); web console at http://{}/",
        admin.addr,
        state_dir.join("admin.token").display(),
        admin.addr
    );
    let progress = async {
        if groups > 0 {
            report_when_ready(&*running_for_progress, &stop).await;
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
    fleet.shutdown().await;
    balancer.shutdown().await;
    admin_stop.cancel();
    admin.wait().await;
    println!("proxyfleet up: stopped");
    Ok(())
}

/// Prints progress until every group has its desired instances in service, then the
/// addresses to use as `http_proxy`.
pub(crate) async fn report_when_ready(
    running: &dyn proxyfleet_admin::Control,
    stop: &CancellationToken,
) {
    let mut last = String::new();
    loop {
        let groups = running.groups();
        let balancer = running.balancer();
        let line = groups
            .iter()
            .map(|g| {
                let in_service = g
                    .instances
                    .iter()
                    .filter(|i| i.lifecycle == Lifecycle::InService)
                    .count();
                format!("group {}: {in_service}/{} in service", g.name, g.desired)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let healthy = balancer
            .targets
            .iter()
            .filter(|t| t.healthy_everywhere())
            .count();
        let line = format!("{line}; {healthy} healthy targets");
        if line != last {
            println!("proxyfleet up: {line}");
            last = line;
        }
        let ready = groups.iter().all(|g| {
            g.instances
                .iter()
                .filter(|i| i.lifecycle == Lifecycle::InService)
                .count()
                >= g.desired as usize
        }) && healthy >= groups.iter().map(|g| g.desired as usize).sum::<usize>();
        if ready {
            let proxies: Vec<String> = balancer
                .load_balancers
                .iter()
                .flat_map(|lb| &lb.nodes)
                .flat_map(|n| {
                    n.listeners
                        .iter()
                        .map(|(port, _)| format!("http://{}", SocketAddr::new(n.address, *port)))
                })
                .collect();
            println!(
                "proxyfleet up: ready; use http_proxy={}",
                proxies.join(" or ")
            );
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fleet_errors_map_by_kind_and_keep_their_message() {
        use super::{control_error, ControlError, FleetError};
        let missing = control_error(FleetError::NoSuchInstance("i-1".into()));
        assert_eq!(
            missing,
            ControlError::NotFound("no live instance 'i-1'".into())
        );
        let refused = control_error(FleetError::OutOfRange {
            group: "proxies".into(),
            desired: 9,
            min: 1,
            max: 4,
        });
        assert_eq!(
            refused,
            ControlError::Refused("group proxies: desired 9 is outside min 1 .. max 4".into())
        );
        // A refusal worded like a missing thing is still a refusal: the kind decides.
        let template = control_error(FleetError::NoTemplate {
            group: "no group".into(),
            template: "t".into(),
        });
        assert!(matches!(template, ControlError::Refused(_)));
    }

    #[test]
    fn the_descriptor_reserve_counts_every_admin_connection() {
        let admin =
            proxyfleet_admin::MAX_CONNECTIONS + proxyfleet_admin::server::SOCKET_LIMITS.connections;
        assert_eq!(
            proxyfleet_stack::budget::ADMIN_CONNECTIONS,
            admin as u64,
            "budget.rs reserves descriptors for the admin API's connection caps"
        );
    }
}
