//! Reading the squid.conf subset proxyfleet supports into a validated [`Config`].
//!
//! - `lex`: lines, continuations, comments and tokens with their positions;
//! - `parse`: the per-file driver (includes, directive dispatch) and the final assembly of
//!   [`Config`], Squid's defaults included;
//! - `directives`: argument parsing of the individual directives;
//! - `units`: Squid's `N unit` times and sizes;
//! - `model`: the validated result the rest of the proxy reads.
//!
//! Every error points at a file, line and column. Directives that only tune Squid features
//! proxyfleet does not have (the cache, SNMP, ...) are accepted and listed in
//! [`IGNORED_DIRECTIVES`]; anything else unknown is an error rather than silently dropped.

mod directives;
mod lex;
pub mod model;
mod parse;
mod units;

use std::path::{Path, PathBuf};

pub use model::{AccessLog, Config, ForwardedFor, HttpPort, Location, OutgoingAddress};

/// Directives accepted without effect, each with why it can be ignored (this list feeds the
/// README's directive table).
pub const IGNORED_DIRECTIVES: &[(&str, &str)] = &[
    ("cache", "proxyfleet does not cache"),
    ("cache_dir", "proxyfleet does not cache"),
    ("cache_mem", "proxyfleet does not cache"),
    ("maximum_object_size", "proxyfleet does not cache"),
    ("minimum_object_size", "proxyfleet does not cache"),
    ("maximum_object_size_in_memory", "proxyfleet does not cache"),
    ("refresh_pattern", "proxyfleet does not cache"),
    ("cache_replacement_policy", "proxyfleet does not cache"),
    ("memory_replacement_policy", "proxyfleet does not cache"),
    ("store_dir_select_algorithm", "proxyfleet does not cache"),
    ("cache_swap_low", "proxyfleet does not cache"),
    ("cache_swap_high", "proxyfleet does not cache"),
    ("cache_store_log", "proxyfleet does not cache"),
    ("coredump_dir", "core dumps follow the system's settings"),
    (
        "cache_effective_user",
        "proxyfleet runs as the user that starts it",
    ),
    (
        "cache_effective_group",
        "proxyfleet runs as the group that starts it",
    ),
    (
        "pid_filename",
        "no PID file: the supervisor tracks the process",
    ),
    ("cache_log", "diagnostics go to standard error"),
    ("logfile_rotate", "log rotation is left to logrotate"),
    ("netdb_filename", "no ICMP network database"),
    ("pinger_enable", "no ICMP pinger"),
    ("icp_port", "no ICP: there are no sibling caches"),
    ("htcp_port", "no HTCP: there are no sibling caches"),
    ("snmp_port", "no SNMP agent"),
    (
        "workers",
        "one multi-threaded process serves all connections",
    ),
    (
        "dns_v4_first",
        "address order comes from the resolver (Squid 5 ignores it too)",
    ),
    ("hosts_file", "/etc/hosts is always read"),
];

/// A configuration problem and where it is.
///
/// `Display` is `FILE:LINE:COLUMN: MESSAGE`. Problems with a whole file rather than a line
/// in it (the top-level file cannot be read, no `http_port` anywhere) have line and column 0
/// and display as `FILE: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", where_(.location))]
pub struct ConfigError {
    location: Location,
    message: String,
}

fn where_(l: &Location) -> String {
    if l.line == 0 {
        l.file.display().to_string()
    } else {
        l.to_string()
    }
}

impl ConfigError {
    pub fn new(location: Location, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location,
            message: message.into(),
        }
    }

    /// An error about a whole file.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError::new(
            Location {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
            },
            message,
        )
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Reads and validates the configuration at `path`, following its `include`s.
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    let text = parse::read_text(path)
        .map_err(|e| ConfigError::whole_file(path, format!("cannot read the file: {e}")))?;
    parse_str(&text, path)
}

/// Parses configuration text; `path` names it in messages, and relative `include`s and ACL
/// value files are looked up next to it.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut parser = parse::Parser::new(PathBuf::from(path));
    parser.parse_text(text, path, 0)?;
    parser.finish()
}
