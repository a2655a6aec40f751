//! An instance's own capacity, the default `target_max_connections` of its target: an
//! instance running `proxyfleet proxy` serves at most its client cap (half its
//! `max_filedescriptors`) at once, and a balancer sending it more would only fill its backlog
//! — and its health checks would queue behind them. Read from the configuration the instance
//! was started with, so it is what that process really applies. Another command has no known
//! capacity.

use std::path::{Path, PathBuf};

/// Where `proxyfleet proxy` reads its configuration without `-f` (as its CLI says).
const DEFAULT_CONFIG: &str = "/etc/squid/squid.conf";

/// The client cap of the instance whose rendered command is `command`, started in `dir`;
/// `None` for a command other than `proxyfleet proxy` or a configuration that does not read.
pub fn client_cap(command: &[String], dir: &Path) -> Option<usize> {
    let path = config_path(command)?;
    let path = if path.is_absolute() {
        path
    } else {
        dir.join(path)
    };
    match proxyfleet_proxy::config::parse_file(&path) {
        Ok(config) => Some(config.client_cap()),
        Err(e) => {
            tracing::debug!(error = %e, "instance configuration unreadable here: no target capacity");
            None
        }
    }
}

/// The `-f`/`--config` of a `proxyfleet proxy` command.
fn config_path(command: &[String]) -> Option<PathBuf> {
    if !crate::firewall::runs_own_proxy(command) {
        return None;
    }
    let mut args = command[2..].iter();
    let mut path = PathBuf::from(DEFAULT_CONFIG);
    while let Some(arg) = args.next() {
        if arg == "-f" || arg == "--config" {
            path = PathBuf::from(args.next()?);
        } else if let Some(p) = arg.strip_prefix("--config=") {
            path = PathBuf::from(p);
        } else if let Some(p) = arg.strip_prefix("-f").filter(|p| !p.is_empty()) {
            path = PathBuf::from(p.strip_prefix('=').unwrap_or(p));
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_config_path_of_a_proxy_command() {
        let p = |args: &[&str]| config_path(&cmd(args));
        assert_eq!(
            p(&["proxyfleet", "proxy", "-f", "/x/squid.conf"]),
            Some("/x/squid.conf".into())
        );
        assert_eq!(
            p(&["proxyfleet", "proxy", "--config=a.conf"]),
            Some("a.conf".into())
        );
        assert_eq!(
            p(&["proxyfleet", "proxy", "-fb.conf"]),
            Some("b.conf".into())
        );
        assert_eq!(p(&["proxyfleet", "proxy"]), Some(DEFAULT_CONFIG.into()));
        assert_eq!(p(&["squid", "-f", "/x/squid.conf"]), None);
    }

    #[test]
    fn the_cap_is_half_of_max_filedescriptors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("squid.conf"),
            "http_port 127.94.0.1:3128\nmax_filedescriptors 100\n",
        )
        .unwrap();
        let command = cmd(&["proxyfleet", "proxy", "-f", "squid.conf"]);
        assert_eq!(client_cap(&command, dir.path()), Some(50));
        std::fs::write(dir.path().join("squid.conf"), "http_port 127.94.0.1:3128\n").unwrap();
        assert_eq!(
            client_cap(&command, dir.path()),
            Some(8192),
            "Squid's default 16384"
        );
        std::fs::write(dir.path().join("squid.conf"), "no such directive\n").unwrap();
        assert_eq!(client_cap(&command, dir.path()), None);
    }
}
