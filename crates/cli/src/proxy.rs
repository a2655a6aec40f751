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
    /// Signal the proxy running with this configuration (found by its `pid_filename`), as
    /// `squid -k` does: reconfigure (SIGHUP: read the file again; a file that does not
    /// parse is not sent), rotate (SIGUSR1), shutdown (SIGTERM), interrupt (SIGINT), check
    /// (is it running?).
    #[arg(short = 'k', value_enum)]
    signal: Option<Signal>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Signal {
    Reconfigure,
    Rotate,
    Shutdown,
    Interrupt,
    Check,
}

pub fn run(args: ProxyArgs) -> Result<(), Failure> {
    let config = config::parse_file(&args.file).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("{e}"),
    })?;
    if let Some(k) = args.signal {
        return signal_running(&config, &args.file, k);
    }
    if let Some(level) = config.debug_level {
        crate::set_diagnostics_level(config::debug_filter(level));
    }
    for (at, note) in &config.notes {
        tracing::warn!("{at}: {note}");
    }
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
    let pid_file = config.pid_filename.clone();
    let proxy = Proxy::bind(config)?;
    // As Squid: a pid file that cannot be written is a warning (only `-k` needs it).
    let pid_file = pid_file.filter(|path| {
        match std::fs::write(path, format!("{}\n", std::process::id())) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write pid_filename: `proxyfleet proxy -k` will not find this proxy");
                false
            }
        }
    });
    // Every signal's handler is in place before the proxy says it serves: whoever waits for
    // that line may signal at once (a SIGHUP before its handler would end the process).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut hup = signal(SignalKind::hangup())?;
    for addr in proxy.local_addrs() {
        // Tests and the group controller wait for this line.
        println!("proxyfleet proxy: serving on {addr}");
    }
    let stop = async move {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: graceful stop"); Stop::Graceful }
            _ = int.recv() => { tracing::info!("SIGINT: fast stop"); Stop::Fast }
        }
    };
    // SIGUSR1 reopens the access logs (what `squid -k rotate` does), for logrotate.
    let reloader = proxy.reloader();
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
    let reload = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reconfigure(&reloader, &file);
        }
    });
    proxy.serve(stop).await;
    rotate.abort();
    reload.abort();
    // Only a pid file that still names this process (not a successor's).
    if let Some(path) = &pid_file {
        let ours =
            std::fs::read_to_string(path).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
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
        Ok(ports) => {
            for addr in ports.added {
                println!("proxyfleet proxy: serving on {addr}");
            }
            for addr in ports.removed {
                println!(
                    "proxyfleet proxy: no longer listening on {addr} (its connections finish)"
                );
            }
            tracing::info!(file = %file.display(), "SIGHUP: configuration reloaded");
            println!(
                "proxyfleet proxy: configuration reloaded from {}",
                file.display()
            );
        }
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded, the running one serves on: {e}");
            eprintln!(
                "proxyfleet proxy: configuration not reloaded, the running one serves on: {e}"
            );
        }
    }
}

/// `proxyfleet proxy -k SIGNAL`: the running proxy's pid from `pid_filename`, signalled.
fn signal_running(config: &Config, file: &std::path::Path, k: Signal) -> Result<(), Failure> {
    let fail = |code: u8, error: String| Failure {
        code,
        error: anyhow::anyhow!(error),
    };
    let Some(pid_file) = &config.pid_filename else {
        return Err(fail(
            2,
            format!(
                "{}: no pid_filename: cannot find the running proxy (set pid_filename, or signal its pid: SIGHUP reconfigures)",
                file.display()
            ),
        ));
    };
    let text = std::fs::read_to_string(pid_file).map_err(|e| {
        fail(
            1,
            format!("no running proxy: cannot read {}: {e}", pid_file.display()),
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| fail(1, format!("{}: not a pid: {text:?}", pid_file.display())))?;
    let (signal, what) = match k {
        Signal::Reconfigure => (libc::SIGHUP, "reconfigure"),
        Signal::Rotate => (libc::SIGUSR1, "rotate"),
        Signal::Shutdown => (libc::SIGTERM, "shutdown"),
        Signal::Interrupt => (libc::SIGINT, "interrupt"),
        Signal::Check => (0, "check"),
    };
    // SAFETY: kill(2) with a pid read from the proxy's own pid file and a plain signal number.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(fail(
            1,
            format!(
                "no running proxy as pid {pid} (from {}): {e}",
                pid_file.display()
            ),
        ));
    }
    println!("proxyfleet proxy: {what} sent to pid {pid}");
    Ok(())
}
