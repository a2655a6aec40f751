//! Reading the squid.conf subset proxyfleet supports into a validated [`Config`].
//!
//! - `lex`: lines, continuations, comments and tokens with their positions;
//! - `parse`: the per-file driver (includes, directive dispatch) and the final assembly of
//!   [`Config`], Squid's defaults included;
//! - `acl_lines`, `logging`, `directives`: argument parsing of the individual directives
//!   (ACLs and access rules; `access_log`; everything else);
//! - `files`: where `include`s and ACL value files are read from (the real file system, or
//!   a confined directory for untrusted text);
//! - `read`: bounded reads: regular files only, size and line-length caps
//!   ([`MAX_CONFIG_FILE_BYTES`] a file, [`MAX_CONFIG_TOTAL_BYTES`] all of one configuration's
//!   files, [`MAX_CONFIG_LINE_BYTES`] a line of squid.conf or of an ACL value file, and
//!   [`MAX_STACK_FILE_BYTES`] for the stack crate's [`read_bounded`]);
//! - `units`: Squid's `N unit` times and sizes;
//! - `model`: the validated result the rest of the proxy reads.
//!
//! Every error points at a file, line and column. Directives that only tune Squid features
//! proxyfleet does not have (the cache, SNMP, ...) are accepted and listed in
//! [`IGNORED_DIRECTIVES`]; anything else unknown is an error rather than silently dropped.

mod acl_lines;
mod auth_lines;
mod delay_lines;
mod deny_info;
mod directives;
mod external_lines;
mod files;
mod header_lines;
mod lex;
mod logging;
pub mod model;
mod parse;
mod peer_lines;
mod read;
mod rewrite_lines;
#[cfg(test)]
mod test_support;
mod tuning;
mod units;

use std::path::{Path, PathBuf};

pub use deny_info::DenyInfo;
pub use model::{
    Accel, AccessLog, BasicAuth, Config, ForwardedFor, HttpPort, Location, OutgoingAddress, Vport,
};
pub use read::{
    read_bounded, MAX_CONFIG_FILE_BYTES, MAX_CONFIG_LINE_BYTES, MAX_CONFIG_TOTAL_BYTES,
    MAX_STACK_FILE_BYTES,
};
pub use tuning::debug_filter;

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
    ("cache_log", "diagnostics go to standard error"),
    (
        "logfile_rotate",
        "rotation is logrotate's job: SIGUSR1 reopens the log files",
    ),
    (
        "buffered_logs",
        "every access log line is written before its response's last byte; nothing is buffered",
    ),
    ("netdb_filename", "no ICMP network database"),
    ("pinger_enable", "no ICMP pinger"),
    ("icp_port", "no ICP: there are no sibling caches"),
    ("htcp_port", "no HTCP: there are no sibling caches"),
    ("snmp_port", "no SNMP agent"),
    (
        "dns_v4_first",
        "address order comes from the resolver (Squid 5 ignores it too)",
    ),
    ("hosts_file", "/etc/hosts is always read"),
    (
        "no_cache",
        "the old name of `cache`: proxyfleet does not cache",
    ),
    (
        "negative_ttl",
        "how long Squid caches error replies: proxyfleet does not cache",
    ),
    (
        "range_offset_limit",
        "proxyfleet does not cache: ranges are passed to the origin",
    ),
    (
        "quick_abort_min",
        "proxyfleet does not cache: a transfer its client abandons stops",
    ),
    (
        "quick_abort_max",
        "proxyfleet does not cache: a transfer its client abandons stops",
    ),
    (
        "quick_abort_pct",
        "proxyfleet does not cache: a transfer its client abandons stops",
    ),
    ("broken_vary_encoding", "proxyfleet does not cache"),
    ("collapsed_forwarding", "proxyfleet does not cache"),
    ("offline_mode", "proxyfleet does not cache"),
    ("store_avg_object_size", "proxyfleet does not cache"),
    ("store_objects_per_bucket", "proxyfleet does not cache"),
    ("memory_cache_mode", "proxyfleet does not cache"),
    ("memory_cache_shared", "proxyfleet does not cache"),
    ("reload_into_ims", "proxyfleet does not cache"),
    ("icp_access", "no ICP: there are no sibling caches"),
    ("htcp_access", "no HTCP: there are no sibling caches"),
    ("htcp_clr_access", "no HTCP: there are no sibling caches"),
    ("icp_hit_stale", "no ICP: there are no sibling caches"),
    ("log_icp_queries", "no ICP: there are no sibling caches"),
    ("snmp_access", "no SNMP agent"),
    ("snmp_incoming_address", "no SNMP agent"),
    ("snmp_outgoing_address", "no SNMP agent"),
    (
        "hierarchy_stoplist",
        "obsolete: Squid 5 reports it and goes on without it",
    ),
    (
        "pipeline_prefetch",
        "pipelined requests are read and answered one after another",
    ),
    (
        "client_db",
        "no per-client statistics table (the metrics count per instance)",
    ),
    (
        "ignore_unknown_nameservers",
        "answers are only ever taken from the name server that was asked",
    ),
    (
        "half_closed_clients",
        "not tunable: how half-closed connections are handled is fixed",
    ),
    (
        "memory_pools",
        "memory is not pooled the way Squid pools it",
    ),
    (
        "memory_pools_limit",
        "memory is not pooled the way Squid pools it",
    ),
    ("cache_mgr", "error pages name no administrator's address"),
    ("mail_from", "no mail is sent"),
    (
        "logfile_daemon",
        "access log lines are written by the proxy itself (a `daemon:` log is a file)",
    ),
    (
        "cachemgr_passwd",
        "no cache manager actions (only GET /metrics, from this host)",
    ),
    ("ident_lookup_access", "no ident (RFC 931) lookups are made"),
    ("mail_program", "no mail is sent"),
    (
        "error_directory",
        "error pages are proxyfleet's own (English, with Squid's X-Squid-Error codes)",
    ),
    (
        "error_default_language",
        "error pages are proxyfleet's own (English, with Squid's X-Squid-Error codes)",
    ),
    (
        "dns_retransmit_interval",
        "the resolver's own retry schedule (5 s a try, 2 tries) is used",
    ),
    (
        "dns_timeout",
        "the resolver's own retry schedule (5 s a try, 2 tries) is used",
    ),
    ("ipcache_size", "the resolver's cache sizes itself"),
    ("ipcache_low", "the resolver's cache sizes itself"),
    ("ipcache_high", "the resolver's cache sizes itself"),
    ("fqdncache_size", "no reverse lookups are made"),
    (
        "client_netmask",
        "the access log shows whole client addresses",
    ),
    ("umask", "log files are created 0640 whatever the umask"),
    ("max_open_disk_fds", "no disk cache"),
    (
        "retry_on_error",
        "an origin's error answer goes to the client as it is; a request is tried again only \
         on another address or parent when its connection fails",
    ),
    (
        "write_timeout",
        "writes are bounded by read_timeout: one idle bound serves both directions",
    ),
    (
        "sslproxy_cert_error",
        "no TLS is bumped, so no server certificate is checked by the proxy",
    ),
    (
        "unique_hostname",
        "no sibling caches share the visible_hostname: loops are found by it",
    ),
    (
        "url_rewrite_concurrency",
        "only used by url_rewrite_program, which proxyfleet refuses",
    ),
    (
        "icap_send_client_ip",
        "ICAP settings without effect while icap_enable is off",
    ),
    (
        "icap_send_client_username",
        "ICAP settings without effect while icap_enable is off",
    ),
    (
        "icap_preview_enable",
        "ICAP settings without effect while icap_enable is off",
    ),
    (
        "icap_preview_size",
        "ICAP settings without effect while icap_enable is off",
    ),
    (
        "icap_client_username_header",
        "ICAP settings without effect while icap_enable is off",
    ),
    (
        "icap_client_username_encode",
        "ICAP settings without effect while icap_enable is off",
    ),
];

/// Directives Squid 5.7 calls obsolete: it says "ERROR: Directive '...' is obsolete." and
/// goes on without them, and so does proxyfleet (a warning at start-up).
pub const OBSOLETE_DIRECTIVES: &[&str] = &[
    "header_access",
    "useragent_log",
    "referer_log",
    "referrer_log",
    "emulate_httpd_log",
    "log_fqdn",
    "log_ip_on_direct",
    "forward_log",
    "extension_methods",
    "ignore_expect_100",
    "dns_testnames",
    "ftp_list_width",
    "maximum_single_addr_tries",
    "httpd_accel_no_pmtu_disc",
    "dns_v4_fallback",
    "log_access",
    "log_icap",
    "cache_peer_domain",
    "ie_refresh",
    "sslproxy_flags",
    "sslproxy_options",
    "sslproxy_cipher",
    "sslproxy_cafile",
    "sslproxy_capath",
    "sslproxy_version",
    "sslproxy_client_certificate",
    "sslproxy_client_key",
];

/// Directives Debian's Squid 5.7 (built with GnuTLS, not OpenSSL) does not have: it says
/// "ERROR: '...' requires --with-openssl" (or `--enable-ssl-crtd`) and goes on without
/// them, and so does proxyfleet. (`ssl_bump` is one too there; here it is read, and
/// without an `ssl-bump` port it has no effect either.)
pub const OPENSSL_ONLY_DIRECTIVES: &[&str] = &[
    "sslproxy_cert_sign",
    "sslproxy_cert_adapt",
    "sslproxy_session_cache_size",
    "sslproxy_session_ttl",
    "sslproxy_foreign_intermediate_certs",
    "sslproxy_cert_sign_hash",
    "sslcrtd_program",
    "sslcrtd_children",
    "sslcrtvalidator_program",
    "sslcrtvalidator_children",
    "ssl_unclean_shutdown",
    "ssl_engine",
    "sslpassword_program",
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
    parse_with(text, path, files::Files::real())
}

fn parse_with(text: &str, path: &Path, files: files::Files) -> Result<Config, ConfigError> {
    files
        .count(text)
        .map_err(|e| ConfigError::whole_file(path, format!("cannot read the file: {e}")))?;
    let mut parser = parse::Parser::new(PathBuf::from(path), files);
    parser.parse_text(text, path, 0)?;
    parser.finish()
}

/// [`parse_str`] reading `include`s and ACL value files only below `root`: an absolute name
/// `/etc/x` means `ROOT/etc/x` and `..` is refused. For reading untrusted text (the fuzz
/// targets); `path` should be inside `root` so relative names stay there too.
#[doc(hidden)]
pub fn parse_str_confined(text: &str, path: &Path, root: &Path) -> Result<Config, ConfigError> {
    parse_with(text, path, files::Files::confined(root.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::test_support::{parse_ok, Request};
    use super::*;

    #[test]
    fn error_accessors_and_display() {
        let location = Location {
            file: "/etc/x.conf".into(),
            line: 12,
            column: 1,
        };
        let e = ConfigError::new(location.clone(), "unknown directive 'foo_bar'");
        assert_eq!(
            e.to_string(),
            "/etc/x.conf:12:1: unknown directive 'foo_bar'"
        );
        assert_eq!(e.location(), &location);
        assert_eq!(e.message(), "unknown directive 'foo_bar'");
        let e = ConfigError::whole_file(Path::new("/etc/x.conf"), "no http_port configured");
        assert_eq!(e.to_string(), "/etc/x.conf: no http_port configured");
    }

    #[test]
    fn every_ignored_directive_is_accepted_whatever_its_arguments() {
        let mut seen = HashSet::new();
        for (name, reason) in IGNORED_DIRECTIVES {
            assert!(seen.insert(*name), "{name} listed twice");
            assert!(!reason.is_empty());
            let c = parse_ok(&format!("{name} \"odd #args here"));
            assert_eq!(c.ignored.len(), 1, "{name}");
            assert_eq!(c.ignored[0].0, *name);
        }
    }

    /// Debian's stock file (`include /etc/squid/conf.d/*.conf`, whose debian.conf says
    /// `logfile_rotate 0`) must read without error and mean what Squid makes of it.
    #[test]
    fn debian_stock_squid_conf() {
        let path = Path::new("/etc/squid/squid.conf");
        if !path.exists() {
            eprintln!("note: {} does not exist; nothing to check", path.display());
            return;
        }
        let c = parse_file(path).unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<_> = c.http_ports.iter().map(|p| p.addr).collect();
        assert_eq!(ports, ["0.0.0.0:3128".parse().unwrap()]);
        assert!(!c.http_ports[0].require_proxy_header);

        let allowed = |r: Request| c.http_access.allows(&r.facts());
        assert!(allowed(Request::get("127.0.0.1", "127.30.0.10", 80)));
        assert!(!allowed(Request::get("127.20.0.5", "127.30.0.10", 80)));
        assert!(!allowed(Request::connect("127.0.0.1", "127.30.0.10", 8443)));
        assert!(allowed(Request::connect("127.0.0.1", "127.30.0.10", 443)));
        // deny !Safe_ports comes before allow localhost.
        assert!(!allowed(Request::get("127.0.0.1", "127.30.0.10", 25)));
        // The cache manager is for localhost only.
        let mut manager = Request::get("::1", "localhost", 3128);
        manager.path = "/squid-internal-mgr/info";
        assert!(allowed(manager));
        let mut manager = Request::get("10.0.0.1", "localhost", 3128);
        manager.scheme = "cache_object";
        assert!(!allowed(manager));

        assert!(!c.http_access.needs_dst_ips());
        assert_eq!(c.access_logs.len(), 1);
        assert_eq!(
            c.access_logs[0].path,
            Path::new("/var/log/squid/access.log")
        );
        let ignored: HashSet<_> = c.ignored.iter().map(|(n, _)| n.as_str()).collect();
        assert!(ignored.contains("logfile_rotate"), "conf.d was included");
        assert!(ignored.contains("refresh_pattern"));
    }
}
