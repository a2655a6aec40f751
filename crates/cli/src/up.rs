//! `proxyfleet up [-f FILE]`: runs a stack — its load balancers now; the self-healing groups
//! join them with the group controller.

use std::path::PathBuf;

use clap::Args;
use proxyfleet_lb::Balancer;
use tokio::signal::unix::{signal, SignalKind};

use crate::Failure;

#[derive(Args)]
pub struct UpArgs {
    /// The stack file (default: the built-in stack, see `proxyfleet example`).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
}

pub fn run(args: UpArgs) -> Result<(), Failure> {
    let stack = match &args.file {
        Some(path) => proxyfleet_stack::load(path).map_err(|e| Failure {
            code: 2,
            error: anyhow::anyhow!("{e}"),
        })?,
        None => proxyfleet_stack::builtin(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let balancer = Balancer::start(&stack.load_balancers, &stack.target_groups).await?;
        for (lb, zone, addr) in balancer.listen_addrs() {
            // Tests and scripts wait for these lines.
            println!("proxyfleet up: load balancer {lb} node {zone} listening on {addr}");
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        balancer.shutdown().await;
        Ok(())
    })
}
