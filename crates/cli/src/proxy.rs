//! `proxyfleet proxy -f FILE [--check]`: the forward proxy every instance runs.

use std::path::PathBuf;

use clap::Args;
use proxyfleet_proxy::config::{self, Config};
use proxyfleet_proxy::{Proxy, Stop};
use tokio::signal::unix::{signal, SignalKind};

use crate::Failure;

#[derive(Args)]
pub struct ProxyArgs {
    /// The squid.conf to read.
    #[arg(short = 'f', long = "config", default_value = "/etc/squid/squid.conf")]
    file: PathBuf,
    /// Validate the configuration and exit (Squid's `-k parse`).
    #[arg(long)]
    check: bool,
}

pub fn run(args: ProxyArgs) -> Result<(), Failure> {
    let config = config::parse_file(&args.file).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("{e}"),
    })?;
    if args.check {
        println!(
            "{}: configuration OK ({} http_port)",
            args.file.display(),
            config.http_ports.len()
        );
        return Ok(());
    }
    announce_ignored(&config);
    announce_guard(&config);
    let wanted = config.max_filedescriptors as u64;
    let now = crate::limits::raise_open_files(wanted);
    if now < wanted {
        tracing::warn!(
            max_filedescriptors = wanted,
            limit = now,
            "the open-file limit is below max_filedescriptors (the hard limit caps it)"
        );
    }
    // `workers 1`: one thread, no cross-thread wake-ups (for instances sharing few cores).
    let runtime = match config.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(serve(config, args.file))
}

/// Says at start-up whether the destination guard is on, and what it exempts and adds.
fn announce_guard(config: &Config) {
    let guard = &config.destination_guard;
    let nets = |nets: &[ipnet::IpNet]| {
        let list: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(" ")
        }
    };
    if guard.enabled {
        tracing::info!(
            allowed = %nets(guard.allowed()),
            denied = %nets(guard.denied()),
            "destination guard on: loopback, this host's addresses, link-local, metadata, 0.0.0.0/8, multicast and broadcast are refused"
        );
    } else {
        tracing::info!("destination guard off (destination_guard on enables it)");
    }
}

/// Says once, at start-up, which directives have no effect here.
fn announce_ignored(config: &Config) {
    if config.ignored.is_empty() {
        return;
    }
    let names: Vec<String> = config
        .ignored
        .iter()
        .map(|(name, at)| format!("{name} ({at})"))
        .collect();
    tracing::info!(
        "this proxy never caches; accepted without effect: {}",
        names.join(", ")
    );
}

async fn serve(config: Config, file: PathBuf) -> Result<(), Failure> {
    let proxy = Proxy::bind(config)?;
    for addr in proxy.local_addrs() {
        // Tests and the group controller wait for this line.
        println!("proxyfleet proxy: serving on {addr}");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: graceful stop"); Stop::Graceful }
            _ = int.recv() => { tracing::info!("SIGINT: fast stop"); Stop::Fast }
        }
    };
    // SIGUSR1 reopens the access logs (what `squid -k rotate` does), for logrotate.
    let reloader = proxy.reloader();
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let rotate = tokio::spawn({
        let reloader = reloader.clone();
        async move {
            while usr1.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening access logs");
                reloader.current().log.reopen();
            }
        }
    });
    // SIGHUP reads the configuration again (what `squid -k reconfigure` does): a good file
    // judges every request from now on, a bad one changes nothing.
    let mut hup = signal(SignalKind::hangup())?;
    let reload = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reconfigure(&reloader, &file);
        }
    });
    proxy.serve(stop).await;
    rotate.abort();
    reload.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Reads `file` again and puts it in force, or says why not (the old configuration serves
/// on).
fn reconfigure(reloader: &proxyfleet_proxy::Reloader, file: &std::path::Path) {
    let config = match config::parse_file(file) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded, the running one serves on: {e}");
            eprintln!(
                "proxyfleet proxy: configuration not reloaded, the running one serves on: {e}"
            );
            return;
        }
    };
    match reloader.reload(config) {
        Ok(()) => {
            tracing::info!(file = %file.display(), "SIGHUP: configuration reloaded");
            println!(
                "proxyfleet proxy: configuration reloaded from {}",
                file.display()
            );
        }
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded: {e}");
            eprintln!("proxyfleet proxy: configuration not reloaded: {e}");
        }
    }
}
