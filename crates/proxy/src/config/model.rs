//! The validated configuration: what the rest of the proxy reads. Built by `parse.rs` from
//! squid.conf text; every value here already has Squid's default applied.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::LogErrorPolicy;
use crate::acl::{AccessRules, AclList};
use crate::guard::DestinationGuard;

/// Where a directive came from, for error messages and start-up notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters, of the first character of the token the message is about.
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One `http_port` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPort {
    /// `http_port 3128` listens on every address: `0.0.0.0:3128` (and `[::]` is not added).
    pub addr: SocketAddr,
    /// `require-proxy-header`: every connection must start with a PROXY v1/v2 header.
    pub require_proxy_header: bool,
    /// `name=` (default: the address as written), for `myportname` ACLs.
    pub name: Arc<str>,
    /// `intercept` (old name `transparent`): connections the firewall redirected here.
    pub intercept: bool,
    /// `ssl-bump`: `ssl_bump` rules apply to its tunnels (peek, splice, terminate).
    pub ssl_bump: bool,
    /// An `https_port` (`intercept ssl-bump`): intercepted TLS, no HTTP request.
    pub tls: bool,
    /// `accel` (also implied by `vhost`): a reverse-proxy port ([`crate::accel`]).
    pub accel: Option<Accel>,
    pub location: Location,
}

/// The accelerator options of an `http_port ... accel` line (Squid's semantics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accel {
    /// `defaultsite=HOST[:PORT]`: the site of a request that has no `Host`.
    pub default_site: Option<String>,
    /// `vport` / `vport=N`: the port of the URL, instead of the one `Host` names.
    pub vport: Option<Vport>,
    /// `allow-direct`: requests may go to the origin named by the URL; without it they go
    /// only through `cache_peer`s, as if `never_direct allow all` (unless `always_direct`).
    pub allow_direct: bool,
}

/// `vport` (the port the request arrived on) or `vport=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vport {
    Listening,
    Fixed(u16),
}

/// `forwarded_for on|off|transparent|delete|truncate` (Squid's semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedFor {
    /// Append the client address to X-Forwarded-For (default).
    On,
    /// Append the word `unknown` instead of the address.
    Off,
    /// Leave the header exactly as received.
    Transparent,
    /// Remove the header.
    Delete,
    /// Replace the header with just the client address.
    Truncate,
}

/// One `access_log` line that logs (lines of `access_log none` produce no entry).
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// The file, with any `stdio:` or `daemon:` module prefix removed (for `udp://`, the
    /// text as written).
    pub path: PathBuf,
    /// `udp://HOST:PORT`: each line is one datagram to this address instead of a file.
    pub udp: Option<SocketAddr>,
    /// `syslog:FACILITY.PRIORITY`: each line goes to the system log with this PRI value.
    pub syslog: Option<u8>,
    /// `tcp://HOST:PORT`: lines go over one TCP connection to this address.
    pub tcp: Option<SocketAddr>,
    /// Only transactions matching all of these are logged (empty = all).
    pub acls: AclList,
    /// `None`: Squid's native `squid` format; otherwise a built-in or `logformat` one.
    pub format: Option<crate::log_format::LogFormat>,
    pub location: Location,
}

/// One `tcp_outgoing_address ADDR [[!]acl ...]` line.
#[derive(Debug, Clone)]
pub struct OutgoingAddress {
    pub addr: IpAddr,
    /// Used when all of these match (empty = always). First matching line of the right
    /// address family wins.
    pub acls: AclList,
}

/// `auth_param basic ...`: how `Proxy-Authorization: Basic` credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// `program` and `children`.
    pub helper: crate::helper::HelperSpec,
    /// `realm` (default Squid's "Squid proxy-caching web server").
    pub realm: String,
    /// `credentialsttl` (default 2 hours): how long accepted credentials are not asked again.
    pub credentials_ttl: Duration,
    /// `casesensitive` (default off: user names are lowercased before the helper sees them).
    pub case_sensitive: bool,
    /// Where `program` was given.
    pub location: Option<Location>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file that was parsed (for messages).
    pub file: PathBuf,
    pub http_ports: Vec<HttpPort>,
    pub http_access: Arc<AccessRules>,
    pub proxy_protocol_access: Arc<AccessRules>,
    /// `miss_access`: every request is a miss here, so it is a second `http_access`
    /// (403 ERR_FORWARDING_DENIED); no lines: allowed.
    pub miss_access: Arc<AccessRules>,
    /// `url_rewrite_program` and its companions, when a program is configured.
    pub url_rewrite: Option<crate::url_rewrite::UrlRewriteConfig>,
    /// `delay_pools` and their lines, in pool order.
    pub delay_pools: Vec<crate::delay::DelayPoolConfig>,
    /// `delay_initial_bucket_level` (default 50 percent).
    pub delay_initial_bucket_level: u8,
    /// `client_delay_pools` with their parameters, in pool order (pools without
    /// `client_delay_parameters` left out: they limit nothing).
    pub client_delay_pools: Vec<crate::delay::ClientPoolConfig>,
    /// `client_delay_initial_bucket_level` (default 50 percent).
    pub client_delay_initial_bucket_level: u8,
    /// `external_acl_type` lines.
    pub external_acl_types: Vec<crate::external_acl::ExternalAclType>,
    /// `deny_info`, by ACL name: the answer to a request denied by a line ending in it.
    pub deny_info: std::collections::HashMap<String, Arc<super::deny_info::DenyInfo>>,
    /// `on_unsupported_protocol`: allowing = tunnel the non-HTTP start of a redirected
    /// connection to its original destination (no lines: respond, with 400).
    pub on_unsupported_protocol: AccessRules,
    /// `follow_x_forwarded_for`: whose `X-Forwarded-For` is believed (no lines: nobody's).
    pub follow_x_forwarded_for: Arc<AccessRules>,
    /// `acl_uses_indirect_client` (default on): ACLs judge the believed client.
    pub acl_uses_indirect_client: bool,
    /// `log_uses_indirect_client` (default on): `%>a` is the believed client.
    pub log_uses_indirect_client: bool,
    /// Some `maxconn` ACL exists: connections are counted per client.
    pub uses_maxconn: bool,
    /// `http_upgrade_request_protocols`.
    pub upgrades: crate::upgrade::UpgradeRules,
    /// `ssl_bump` lines, used on `ssl-bump` ports.
    pub ssl_bump: crate::bump::SslBump,
    /// `cache_peer` parents, `always_direct`, `never_direct`, `prefer_direct`,
    /// `nonhierarchical_direct`: where each request goes.
    pub parents: Arc<crate::peers::Parents>,
    /// `http_reply_access`: with no lines, every reply is allowed (Squid's default).
    pub http_reply_access: Arc<AccessRules>,
    /// `request_header_access`, `request_header_replace`, `request_header_add`.
    pub request_headers: Arc<crate::header_rules::HeaderRules>,
    /// `reply_header_access`, `reply_header_replace`, `reply_header_add`.
    pub reply_headers: Arc<crate::header_rules::HeaderRules>,
    pub tcp_outgoing_address: Vec<OutgoingAddress>,
    /// Empty when logging is off (`access_log none` and no other line).
    /// With no access_log line at all: Squid's default, `/var/log/squid/access.log`.
    pub access_logs: Vec<AccessLog>,
    pub forwarded_for: ForwardedFor,
    pub via: bool,
    /// Default 64 KB.
    pub request_header_max_size: usize,
    /// Default 64 KB.
    pub reply_header_max_size: usize,
    /// Default 1 minute.
    pub connect_timeout: Duration,
    /// Default 15 minutes.
    pub read_timeout: Duration,
    /// Default 5 minutes.
    pub request_timeout: Duration,
    /// Default 2 minutes.
    pub client_idle_pconn_timeout: Duration,
    /// Default 1 day.
    pub client_lifetime: Duration,
    /// Default 30 seconds.
    pub shutdown_lifetime: Duration,
    /// Default: the machine's host name.
    pub visible_hostname: String,
    /// `pid_filename`: where the running proxy writes its pid (what `proxyfleet proxy -k`
    /// signals); `None` (the default, or `none`): no pid file.
    pub pid_filename: Option<std::path::PathBuf>,
    /// `dns_nameservers`: empty = the system's /etc/resolv.conf.
    pub dns_nameservers: Vec<IpAddr>,
    /// `max_filedescriptors` (default 16384). At most half of it is used for client
    /// connections: each client connection may need a second descriptor for its origin.
    pub max_filedescriptors: usize,
    /// `workers N`: threads serving connections. Squid's workers are processes; here they
    /// are the threads of one process. `workers 1` runs everything on one thread, which
    /// saves cross-thread wake-ups when several instances share few cores (a group). Not
    /// given: one thread per core.
    pub workers: Option<usize>,
    /// What no client may reach (the `to_protected` ACL), and whether `destination_guard on`
    /// applies it before `http_access`.
    pub destination_guard: Arc<DestinationGuard>,
    /// What the files themselves say (`destination_guard on|off`), `None` when silent: then
    /// the guard is on only when `proxyfleet up` asks for it.
    pub destination_guard_in_files: Option<bool>,
    /// `logfile_error_policy drop|refuse` (default drop): what happens when an access log
    /// line cannot be written.
    pub logfile_error_policy: LogErrorPolicy,
    /// `negative_dns_ttl` (default 1 minute): how long a failed lookup is remembered.
    pub negative_dns_ttl: Duration,
    /// `client_ip_max_connections N`: open connections per client address at most (the
    /// PROXY header's client where there is one); `None` (Squid's `-1`, the default): no cap.
    pub client_ip_max_connections: Option<usize>,
    /// `forward_max_tries` (default 25): the most destination addresses one request tries.
    pub forward_max_tries: usize,
    /// `connect_retries` (default 0): more tries of one address before the next.
    pub connect_retries: usize,
    /// `strip_query_terms` (default on): the access log shows URLs cut after their `?`.
    pub strip_query_terms: bool,
    /// `httpd_suppress_version_string` (default off): error pages, `Server` and `Via` name
    /// `proxyfleet` without its version.
    pub httpd_suppress_version_string: bool,
    /// `client_persistent_connections` (default on): off closes every client connection
    /// after its response.
    pub client_persistent_connections: bool,
    /// `server_persistent_connections` (default on): off uses each origin connection once.
    pub server_persistent_connections: bool,
    /// `server_idle_pconn_timeout` (old name `pconn_timeout`, default 1 minute): how long an
    /// idle origin connection is kept for reuse.
    pub server_idle_pconn_timeout: Duration,
    /// `positive_dns_ttl` (default 6 hours): the longest a resolved name is cached, whatever
    /// its record's TTL says.
    pub positive_dns_ttl: Duration,
    /// `debug_options ALL,N`: Squid's debug level, which sets the diagnostics' level when
    /// `RUST_LOG` does not ([`crate::config::debug_filter`]).
    pub debug_level: Option<u8>,
    /// `auth_param basic`, when a `program` is configured.
    pub basic_auth: Option<BasicAuth>,
    /// `auth_param digest`, when a `program` is configured.
    pub digest_auth: Option<crate::digest::DigestAuth>,
    /// Things start-up should warn about: a line accepted with a meaning the user may not
    /// expect (Squid's own warnings, and where proxyfleet differs).
    pub notes: Vec<(Location, String)>,
    /// Directives accepted without effect (cache and other Squid-only tuning), with where
    /// they were seen, so start-up can say once that they are ignored.
    pub ignored: Vec<(String, Location)>,
}

impl Config {
    /// What error pages, `Server` and `Via` call this proxy.
    pub fn product(&self) -> String {
        if self.httpd_suppress_version_string {
            "proxyfleet".to_string()
        } else {
            concat!("proxyfleet/", env!("CARGO_PKG_VERSION")).to_string()
        }
    }

    /// The most client connections served at once: half of `max_filedescriptors`, since each
    /// may need a second descriptor for its origin. A load balancer in front sends at most
    /// this many flows to the instance (its default `target_max_connections`).
    pub fn client_cap(&self) -> usize {
        (self.max_filedescriptors / 2).max(1)
    }
}
