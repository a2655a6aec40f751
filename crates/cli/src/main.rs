//! `proxyfleet`: the one binary of the fleet. Each subcommand lives in its own file; this
//! file parses the command line, sets up logging and maps failures to exit codes
//! (0 ok, 1 runtime failure, 2 bad configuration or usage).

mod activity;
mod agent;
mod agent_api;
mod agent_control;
mod apply;
mod check;
mod client;
mod down;
mod limits;
mod proxy;
mod refresh;
mod scale;
mod status;
mod terminate;
mod tier;
mod up;
mod up_roles;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "proxyfleet",
    version,
    about = "A highly available forward-proxy tier in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a forward proxy configured by a squid.conf file.
    Proxy(proxy::ProxyArgs),
    /// Bring a stack up: load balancers, target groups and (soon) self-healing groups.
    Up(up::UpArgs),
    /// Print the built-in stack file (what `up` runs without -f).
    Example,
    /// Show the running stack: load balancer nodes, targets, groups, instances.
    Status(status::StatusArgs),
    /// Show the groups' activity history (launches, terminations, failures), newest first.
    Activity(activity::ActivityArgs),
    /// Set a group's desired capacity.
    Scale(scale::ScaleArgs),
    /// Terminate an instance (its group replaces it unless --decrement-desired).
    Terminate(terminate::TerminateArgs),
    /// Stop the running `up`: deregister, drain and stop every instance.
    Down(down::DownArgs),
    /// Validate a stack file and explain what will not work, without starting anything.
    Check(check::CheckArgs),
    /// Replace a group's instances one at a time from the launch template in force.
    Refresh(refresh::RefreshArgs),
    /// Show what changing the running tier to a stack file takes, change by change.
    Diff(apply::DiffArgs),
    /// Change the running tier to a stack file, without dropping a request.
    Apply(apply::ApplyArgs),
    /// Run one host's share of the tier (its zone's nodes and instances) and stand for the
    /// controller role, on a shared state store.
    Agent(agent::AgentArgs),
}

/// A failure and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

/// Changes the diagnostics' filter once a configuration says what it wants (squid.conf's
/// `debug_options`); set only while `RUST_LOG` is unset, which always wins.
static DIAGNOSTICS_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

fn init_diagnostics() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    if !env_set {
        let _ = DIAGNOSTICS_FILTER.set(handle);
    }
}

/// Sets the diagnostics' level (`error`, `info`, `debug`, ...) unless `RUST_LOG` did.
pub fn set_diagnostics_level(level: &str) {
    if let Some(handle) = DIAGNOSTICS_FILTER.get() {
        let _ = handle.modify(|f| *f = tracing_subscriber::EnvFilter::new(level));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_diagnostics();
    let result = match cli.command {
        Command::Proxy(args) => proxy::run(args),
        Command::Up(args) => up::run(args),
        Command::Example => {
            print!("{}", proxyfleet_stack::BUILTIN);
            Ok(())
        }
        Command::Status(args) => status::run(args),
        Command::Activity(args) => activity::run(args),
        Command::Scale(args) => scale::run(args),
        Command::Terminate(args) => terminate::run(args),
        Command::Down(args) => down::run(args),
        Command::Check(args) => check::run(args),
        Command::Refresh(args) => refresh::run(args),
        Command::Diff(args) => apply::diff(args),
        Command::Apply(args) => apply::apply(args),
        Command::Agent(args) => agent::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("proxyfleet: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
