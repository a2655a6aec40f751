//! The parse driver: reads files (following `include`), dispatches each directive line to
//! its parser in `directives`, and assembles the final [`Config`] with Squid's defaults.
//!
//! ACLs are built only at the end: Squid lets later `acl` lines add values to an ACL that an
//! earlier `http_access` line already references, so references are checked when seen but
//! resolved to the finished [`Acl`]s after the last line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::files::Files;
use super::lex::{self, Token};
use super::model::{AccessLog, Config, ForwardedFor, HttpPort, Location, OutgoingAddress};
use super::read::{self, MAX_CONFIG_FILE_BYTES, MAX_CONFIG_LINE_BYTES};
use super::{ConfigError, IGNORED_DIRECTIVES};
use crate::access_log::LogErrorPolicy;
use crate::acl::{AccessRule, AccessRules, Acl, AclBuilder, AclList, AclRef};
use crate::guard::{self, DestinationGuard};
use crate::header_rules::{FieldAdd, HeaderRules};
use crate::peers::{CachePeer, Parents};

/// Squid's limit, which also stops a file that includes itself.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Squid's default when no `access_log` line exists.
const DEFAULT_ACCESS_LOG: &str = "/var/log/squid/access.log";

/// Squid's default is "whatever ulimit allows"; a fixed number keeps capacity predictable.
pub(super) const DEFAULT_MAX_FILEDESCRIPTORS: usize = 16_384;

/// One directive line, as handed to the directive parsers.
pub(super) struct Directive<'a> {
    pub file: &'a Path,
    pub name: &'a Token,
    pub args: &'a [Token],
    /// Where a missing argument would start.
    pub end: (usize, usize),
}

impl Directive<'_> {
    pub fn location_of(&self, t: &Token) -> Location {
        Location {
            file: self.file.to_path_buf(),
            line: t.line,
            column: t.column,
        }
    }

    pub fn location(&self) -> Location {
        self.location_of(self.name)
    }

    /// An error about token `t`, prefixed with the directive name.
    pub fn error(&self, t: &Token, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(
            self.location_of(t),
            format!("{}: {message}", self.name.text),
        )
    }

    /// An error about token `t` with the message as given.
    pub fn error_plain(&self, t: &Token, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.location_of(t), message)
    }

    /// An error about something missing at the end of the line.
    pub fn missing(&self, what: &str) -> ConfigError {
        let location = Location {
            file: self.file.to_path_buf(),
            line: self.end.0,
            column: self.end.1,
        };
        ConfigError::new(location, format!("{}: missing {what}", self.name.text))
    }

    pub fn arg(&self, index: usize, what: &str) -> Result<&Token, ConfigError> {
        self.args.get(index).ok_or_else(|| self.missing(what))
    }

    /// Fails on the first argument from `index` on.
    pub fn no_more(&self, index: usize) -> Result<(), ConfigError> {
        match self.args.get(index) {
            Some(t) => Err(self.error(t, format!("unexpected extra argument '{}'", t.raw()))),
            None => Ok(()),
        }
    }

    /// The directory relative paths on this line are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }
}

/// An ACL with the values read so far.
pub(super) struct AclSlot {
    pub builder: AclBuilder,
    /// Where it was first defined; `None` for the built-ins.
    pub defined_at: Option<Location>,
}

/// `[!]name` on a rule line; the name is known to exist.
pub(super) struct PendingRef {
    pub negate: bool,
    pub name: String,
}

pub(super) struct PendingRule {
    pub allow: bool,
    pub refs: Vec<PendingRef>,
    pub location: Location,
}

pub(super) enum PendingLog {
    /// `access_log none [acl...]`: transactions matching it are not logged by later lines.
    None {
        refs: Vec<PendingRef>,
        location: Location,
    },
    File {
        path: PathBuf,
        udp: Option<std::net::SocketAddr>,
        syslog: Option<u8>,
        tcp: Option<std::net::SocketAddr>,
        format: Option<crate::log_format::LogFormat>,
        refs: Vec<PendingRef>,
        location: Location,
    },
}

/// Everything read so far, defaults already in place.
pub(super) struct Parser {
    pub root: PathBuf,
    pub files: Files,
    pub acls: HashMap<String, AclSlot>,
    pub http_ports: Vec<HttpPort>,
    pub http_access: Vec<PendingRule>,
    pub proxy_protocol_access: Vec<PendingRule>,
    pub http_reply_access: Vec<PendingRule>,
    pub miss_access: Vec<PendingRule>,
    pub follow_x_forwarded_for: Vec<PendingRule>,
    pub acl_uses_indirect_client: bool,
    pub log_uses_indirect_client: bool,
    pub never_direct: Vec<PendingRule>,
    pub always_direct: Vec<PendingRule>,
    pub prefer_direct: bool,
    pub nonhierarchical_direct: bool,
    pub peers: Vec<super::peer_lines::PendingPeer>,
    pub deny_info: HashMap<String, Arc<super::deny_info::DenyInfo>>,
    pub url_rewrite_helper: crate::helper::HelperSpec,
    pub external_types: Vec<crate::external_acl::ExternalAclType>,
    pub delay_pools: Vec<super::delay_lines::PendingPool>,
    pub client_delay_pools: Vec<super::delay_lines::PendingClientPool>,
    pub client_delay_initial: u8,
    pub ssl_bump: Vec<(crate::bump::Action, Vec<PendingRef>, Location)>,
    pub upgrades: Vec<(String, Vec<PendingRule>)>,
    pub delay_initial: u8,
    pub url_rewrite_access: Vec<PendingRule>,
    pub url_rewrite_extras: Option<crate::log_format::LogFormat>,
    pub url_rewrite_host_header: bool,
    pub request_headers: super::header_lines::PendingHeaders,
    pub reply_headers: super::header_lines::PendingHeaders,
    pub outgoing: Vec<(IpAddr, Vec<PendingRef>)>,
    pub logs: Vec<PendingLog>,
    /// `logformat` lines by name (the built-in names are not here).
    pub log_formats: HashMap<String, crate::log_format::LogFormat>,
    pub saw_access_log: bool,
    pub forwarded_for: ForwardedFor,
    pub via: bool,
    pub request_header_max_size: usize,
    pub reply_header_max_size: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub request_timeout: Duration,
    pub client_idle_pconn_timeout: Duration,
    pub client_lifetime: Duration,
    pub shutdown_lifetime: Duration,
    pub visible_hostname: Option<String>,
    pub pid_filename: Option<std::path::PathBuf>,
    pub dns_nameservers: Vec<IpAddr>,
    pub max_filedescriptors: usize,
    pub workers: Option<usize>,
    /// `destination_guard`: `None` when the files do not say (then the environment may).
    pub destination_guard: Option<bool>,
    pub logfile_error_policy: LogErrorPolicy,
    pub guard_allow: Vec<ipnet::IpNet>,
    pub guard_deny: Vec<ipnet::IpNet>,
    pub negative_dns_ttl: Duration,
    pub client_ip_max_connections: Option<usize>,
    pub forward_max_tries: usize,
    pub connect_retries: usize,
    /// `on_unsupported_protocol` lines (allow = tunnel).
    pub unsupported_protocol: Vec<PendingRule>,
    pub strip_query_terms: bool,
    pub httpd_suppress_version_string: bool,
    pub client_persistent_connections: bool,
    pub server_persistent_connections: bool,
    pub server_idle_pconn_timeout: Duration,
    pub positive_dns_ttl: Duration,
    pub debug_level: Option<u8>,
    /// `auth_param basic`; configured once `argv` is set by a `program` line.
    pub basic_auth: super::model::BasicAuth,
    pub digest_auth: crate::digest::DigestAuth,
    pub ignored: Vec<(String, Location)>,
    pub notes: Vec<(Location, String)>,
}

impl Parser {
    pub fn new(root: PathBuf, files: Files) -> Parser {
        let acls = AclBuilder::builtins()
            .into_iter()
            .map(|builder| {
                let slot = AclSlot {
                    builder,
                    defined_at: None,
                };
                (slot.builder.name().to_owned(), slot)
            })
            .collect();
        Parser {
            root,
            files,
            acls,
            http_ports: Vec::new(),
            http_access: Vec::new(),
            proxy_protocol_access: Vec::new(),
            http_reply_access: Vec::new(),
            miss_access: Vec::new(),
            follow_x_forwarded_for: Vec::new(),
            acl_uses_indirect_client: true,
            log_uses_indirect_client: true,
            never_direct: Vec::new(),
            always_direct: Vec::new(),
            prefer_direct: false,
            nonhierarchical_direct: true,
            peers: Vec::new(),
            deny_info: HashMap::new(),
            url_rewrite_helper: super::rewrite_lines::default_helper(),
            external_types: Vec::new(),
            delay_pools: Vec::new(),
            client_delay_pools: Vec::new(),
            client_delay_initial: 50,
            ssl_bump: Vec::new(),
            upgrades: Vec::new(),
            delay_initial: 50,
            url_rewrite_access: Vec::new(),
            url_rewrite_extras: None,
            url_rewrite_host_header: true,
            request_headers: Default::default(),
            reply_headers: Default::default(),
            outgoing: Vec::new(),
            logs: Vec::new(),
            log_formats: HashMap::new(),
            saw_access_log: false,
            forwarded_for: ForwardedFor::On,
            via: true,
            request_header_max_size: 64 * 1024,
            reply_header_max_size: 64 * 1024,
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(15 * 60),
            request_timeout: Duration::from_secs(5 * 60),
            client_idle_pconn_timeout: Duration::from_secs(2 * 60),
            client_lifetime: Duration::from_secs(24 * 60 * 60),
            shutdown_lifetime: Duration::from_secs(30),
            visible_hostname: None,
            pid_filename: None,
            dns_nameservers: Vec::new(),
            max_filedescriptors: DEFAULT_MAX_FILEDESCRIPTORS,
            workers: None,
            destination_guard: None,
            logfile_error_policy: LogErrorPolicy::Drop,
            guard_allow: Vec::new(),
            guard_deny: Vec::new(),
            negative_dns_ttl: Duration::from_secs(60),
            client_ip_max_connections: None,
            forward_max_tries: 25,
            connect_retries: 0,
            unsupported_protocol: Vec::new(),
            strip_query_terms: true,
            httpd_suppress_version_string: false,
            client_persistent_connections: true,
            server_persistent_connections: true,
            server_idle_pconn_timeout: Duration::from_secs(60),
            positive_dns_ttl: Duration::from_secs(6 * 60 * 60),
            debug_level: None,
            basic_auth: super::auth_lines::default_basic(),
            digest_auth: super::auth_lines::default_digest(),
            ignored: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Parses one file's text; `depth` counts the includes that led here.
    pub fn parse_text(&mut self, text: &str, file: &Path, depth: usize) -> Result<(), ConfigError> {
        if let Some((line, column)) = lex::overlong_line(text, MAX_CONFIG_LINE_BYTES) {
            return Err(ConfigError::new(
                Location {
                    file: file.to_path_buf(),
                    line,
                    column,
                },
                format!(
                    "line longer than the {} limit (continuations included)",
                    read::describe(MAX_CONFIG_LINE_BYTES as u64)
                ),
            ));
        }
        for line in lex::lines(text) {
            let d = Directive {
                file,
                name: &line.tokens[0],
                args: &line.tokens[1..],
                end: line.end,
            };
            self.directive(&d, depth)?;
        }
        Ok(())
    }

    fn directive(&mut self, d: &Directive, depth: usize) -> Result<(), ConfigError> {
        let name = if d.name.quoted {
            ""
        } else {
            d.name.text.as_str()
        };
        if super::OBSOLETE_DIRECTIVES.contains(&name) {
            self.notes.push((
                d.location(),
                format!("directive '{name}' is obsolete: ignored, as Squid 5.7 ignores it"),
            ));
            return Ok(());
        }
        if super::OPENSSL_ONLY_DIRECTIVES.contains(&name) {
            self.notes.push((
                d.location(),
                format!(
                    "'{name}' requires an OpenSSL build of Squid: ignored, as Debian's Squid \
                     5.7 ignores it (no TLS is bumped)"
                ),
            ));
            return Ok(());
        }
        if IGNORED_DIRECTIVES.iter().any(|(n, _)| *n == name) {
            self.ignored.push((name.to_owned(), d.location()));
            return Ok(());
        }
        // Only ACL values may be quoted (Squid's "read the values from this file"), and
        // texts that are more than one word (a realm).
        if !matches!(
            name,
            "acl"
                | "auth_param"
                | "logformat"
                | "request_header_add"
                | "reply_header_add"
                | "visible_hostname"
                | "url_rewrite_extras"
        ) {
            if let Some(t) = d.args.iter().find(|t| t.quoted) {
                return Err(d.error(
                    t,
                    format!(
                        "quoted value {} (only acl lines take \"/path\" value files)",
                        t.raw()
                    ),
                ));
            }
        }
        match name {
            "include" => self.include(d, depth),
            "auth_param" => self.auth_param(d),
            "acl" => self.acl(d),
            "http_port" | "https_port" => self.http_port(d),
            "ssl_bump" => self.ssl_bump(d),
            "http_upgrade_request_protocols" => self.upgrade_protocols(d),
            "http_access" => self.access_rule(d, false),
            "proxy_protocol_access" => self.access_rule(d, true),
            "http_reply_access" | "miss_access" | "never_direct" | "always_direct" => {
                self.other_access_rule(d)
            }
            "prefer_direct"
            | "nonhierarchical_direct"
            | "acl_uses_indirect_client"
            | "log_uses_indirect_client"
            | "delay_pool_uses_indirect_client" => self.flag(d),
            "icap_enable" => self.icap_enable(d),
            "cache_peer" => self.cache_peer(d),
            "deny_info" => self.deny_info(d),
            "external_acl_type" => self.external_acl_type(d),
            "delay_pools"
            | "delay_class"
            | "delay_parameters"
            | "delay_access"
            | "delay_initial_bucket_level"
            | "client_delay_pools"
            | "client_delay_parameters"
            | "client_delay_access"
            | "client_delay_initial_bucket_level" => self.delay(d),
            "url_rewrite_program"
            | "redirect_program"
            | "url_rewrite_children"
            | "redirect_children"
            | "url_rewrite_access"
            | "redirect_access"
            | "url_rewrite_extras"
            | "url_rewrite_bypass"
            | "redirector_bypass"
            | "url_rewrite_host_header"
            | "redirect_rewrites_host_header" => self.url_rewrite(d),
            "cache_peer_access" => self.cache_peer_access(d),
            "reply_body_max_size" => self.reply_body_max_size(d),
            "request_header_access" | "reply_header_access" => self.header_access(d),
            "request_header_replace" | "reply_header_replace" => self.header_replace(d),
            "request_header_add" | "reply_header_add" => self.header_add(d),
            "tcp_outgoing_address" => self.tcp_outgoing_address(d),
            // Squid 2's name, still accepted by Squid 5.
            "access_log" | "cache_access_log" => self.access_log(d),
            "logformat" => self.logformat(d),
            "forwarded_for" => self.forwarded_for(d),
            "via"
            | "strip_query_terms"
            | "httpd_suppress_version_string"
            | "client_persistent_connections"
            | "server_persistent_connections" => self.flag(d),
            "debug_options" => self.debug_options(d),
            "request_header_max_size" | "reply_header_max_size" => self.size(d),
            "connect_timeout"
            | "read_timeout"
            | "request_timeout"
            | "client_idle_pconn_timeout"
            | "client_lifetime"
            | "shutdown_lifetime"
            | "negative_dns_ttl"
            | "positive_dns_ttl"
            | "pconn_timeout"
            | "server_idle_pconn_timeout" => self.time(d),
            "visible_hostname" => self.visible_hostname(d),
            "pid_filename" => self.pid_filename(d),
            "dns_nameservers" => self.dns_nameservers(d),
            "max_filedescriptors" => self.max_filedescriptors(d),
            "client_ip_max_connections" => self.client_ip_max_connections(d),
            "forward_max_tries" => self.forward_max_tries(d),
            "connect_retries" => self.connect_retries(d),
            "on_unsupported_protocol" => self.on_unsupported_protocol(d),
            "follow_x_forwarded_for" => self.follow_x_forwarded_for(d),
            "workers" => self.workers(d),
            "destination_guard" => self.destination_guard(d),
            "logfile_error_policy" => self.logfile_error_policy(d),
            "destination_guard_allow" | "destination_guard_deny" => self.destination_guard_nets(d),
            _ => Err(ConfigError::new(
                d.location(),
                format!(
                    "unknown directive '{}': proxyfleet does not support it (see the README's \
                     directive table)",
                    d.name.raw()
                ),
            )),
        }
    }

    pub fn duration_mut(&mut self, name: &str) -> &mut Duration {
        match name {
            "connect_timeout" => &mut self.connect_timeout,
            "read_timeout" => &mut self.read_timeout,
            "request_timeout" => &mut self.request_timeout,
            "client_idle_pconn_timeout" => &mut self.client_idle_pconn_timeout,
            "client_lifetime" => &mut self.client_lifetime,
            "shutdown_lifetime" => &mut self.shutdown_lifetime,
            "negative_dns_ttl" => &mut self.negative_dns_ttl,
            "positive_dns_ttl" => &mut self.positive_dns_ttl,
            // Squid 5's `pconn_timeout` is the old name of `server_idle_pconn_timeout`.
            "pconn_timeout" | "server_idle_pconn_timeout" => &mut self.server_idle_pconn_timeout,
            _ => unreachable!("not a time directive: {name}"),
        }
    }

    /// `include PATH-or-GLOB...`. Squid resolves relative names against its working
    /// directory; here they are relative to the including file's directory, which gives the
    /// same answer for the usual absolute paths and a predictable one otherwise. A pattern
    /// that matches nothing includes nothing (an empty conf.d is normal), while a plain path
    /// that does not exist is an error.
    fn include(&mut self, d: &Directive, depth: usize) -> Result<(), ConfigError> {
        d.arg(0, "file name or pattern")?;
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(ConfigError::new(
                d.location(),
                format!(
                    "include: includes nest more than {MAX_INCLUDE_DEPTH} levels deep (does a \
                     file include itself?)"
                ),
            ));
        }
        for t in d.args {
            let is_pattern = t.text.contains(['*', '?', '[']);
            let resolved = self
                .files
                .resolve(d.base_dir(), &t.text, is_pattern)
                .map_err(|m| d.error(t, m))?;
            let files = if is_pattern {
                let paths = glob::glob(&resolved.to_string_lossy())
                    .map_err(|e| d.error(t, format!("invalid pattern '{}': {e}", t.text)))?;
                paths
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| d.error(t, format!("cannot read '{}': {e}", t.text)))?
            } else {
                vec![resolved]
            };
            for path in files {
                let text = self
                    .files
                    .read(&path)
                    .map_err(|e| d.error(t, format!("cannot read '{}': {e}", path.display())))?;
                self.parse_text(&text, &path, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Builds the ACLs, resolves every reference and applies the remaining defaults.
    pub fn finish(mut self) -> Result<Config, ConfigError> {
        if self.http_ports.is_empty() {
            // Squid 5 has no default port either: `squid -k parse` accepts such a file, and
            // Squid then refuses to run ("No forward-proxy ports configured"). So do `--check`
            // and the proxy (`StartError::NoPorts`).
            self.notes.push((
                Location {
                    file: self.root.clone(),
                    line: 0,
                    column: 0,
                },
                "no http_port configured: the proxy will not start (as Squid 5.7 will not)".into(),
            ));
        }
        let tunnels = self.unsupported_protocol.iter().find(|r| r.allow);
        if let Some(at) = tunnels.map(|r| r.location.clone()) {
            if !self.http_ports.iter().any(|p| p.intercept && !p.tls) {
                self.notes.push((
                    at,
                    "on_unsupported_protocol tunnel: only connections to an http_port ... \
                     intercept are tunnelled (there is none): other ports answer 400"
                        .into(),
                ));
            }
        }
        let uses_maxconn = self
            .acls
            .values()
            .any(|slot| slot.builder.ty() == crate::acl::AclType::MaxConn);
        let destination_guard = Arc::new(self.guard());
        let mut acls = HashMap::with_capacity(self.acls.len());
        for (name, slot) in self.acls {
            let acl = slot.builder.build(&destination_guard).map_err(|message| {
                let location = slot.defined_at.unwrap_or_else(|| Location {
                    file: self.root.clone(),
                    line: 0,
                    column: 0,
                });
                ConfigError::new(location, message)
            })?;
            acls.insert(name, Arc::new(acl));
        }
        let resolve = |refs: Vec<PendingRef>| {
            AclList(
                refs.into_iter()
                    .map(|r| AclRef {
                        negate: r.negate,
                        acl: Arc::clone(&acls[&r.name]),
                    })
                    .collect(),
            )
        };
        let rules = |pending: Vec<PendingRule>| AccessRules {
            rules: pending
                .into_iter()
                .map(|p| AccessRule {
                    allow: p.allow,
                    acls: resolve(p.refs),
                    location: p.location,
                })
                .collect(),
        };
        let header_rules = |pending: super::header_lines::PendingHeaders| {
            let mut named: HashMap<String, AccessRules> = pending
                .access
                .into_iter()
                .map(|(name, lines)| (name, rules(lines)))
                .collect();
            HeaderRules {
                other: named.remove("other"),
                all: named.remove("all"),
                named,
                replace: pending.replace,
                add: pending
                    .add
                    .into_iter()
                    .map(|(name, value, refs)| FieldAdd {
                        name,
                        value,
                        acls: resolve(refs),
                    })
                    .collect(),
            }
        };
        let request_headers = Arc::new(header_rules(self.request_headers));
        let reply_headers = Arc::new(header_rules(self.reply_headers));
        let url_rewrite = (!self.url_rewrite_helper.argv.is_empty()).then(|| {
            crate::url_rewrite::UrlRewriteConfig {
                helper: self.url_rewrite_helper,
                access: rules(self.url_rewrite_access),
                extras: self.url_rewrite_extras.unwrap_or_else(|| {
                    crate::log_format::LogFormat::parse(crate::url_rewrite::DEFAULT_EXTRAS)
                        .expect("the default extras parse")
                }),
                rewrite_host_header: self.url_rewrite_host_header,
            }
        });
        // A client pool without client_delay_parameters is never used.
        let client_delay_pools = self
            .client_delay_pools
            .into_iter()
            .filter_map(|p| {
                Some(crate::delay::ClientPoolConfig {
                    rate: p.rate?,
                    access: rules(p.access),
                })
            })
            .collect();
        let delay_pools = self
            .delay_pools
            .into_iter()
            .map(|p| {
                // A pool without delay_class is never used (Squid's class 0).
                let class = p.class.unwrap_or(1);
                crate::delay::DelayPoolConfig {
                    class,
                    levels: p
                        .levels
                        .unwrap_or_else(|| vec![None; usize::from(class.min(4))]),
                    access: if p.class.is_some() {
                        rules(p.access)
                    } else {
                        AccessRules::default()
                    },
                }
            })
            .collect();
        let bump_ports = self.http_ports.iter().any(|p| p.ssl_bump);
        if let Some((_, _, at)) = self.ssl_bump.first() {
            if !bump_ports {
                self.notes.push((
                    at.clone(),
                    "ssl_bump lines have no effect: no http_port or https_port has ssl-bump (as \
                     in Squid)"
                        .into(),
                ));
            }
        }
        if bump_ports {
            if let Some((_, _, at)) = self
                .ssl_bump
                .iter()
                .find(|(a, _, _)| *a == crate::bump::Action::Bump)
            {
                return Err(ConfigError::new(
                    at.clone(),
                    "ssl_bump: bump (and client-first, server-first, allow) decrypts TLS, which \
                     proxyfleet does not do: peek, stare, splice and terminate are supported",
                ));
            }
        }
        let ssl_bump = crate::bump::SslBump {
            rules: std::mem::take(&mut self.ssl_bump)
                .into_iter()
                .map(|(action, refs, _)| (action, resolve(refs)))
                .collect(),
        };
        let upgrades = crate::upgrade::UpgradeRules {
            protocols: std::mem::take(&mut self.upgrades)
                .into_iter()
                .map(|(name, lines)| (name, rules(lines)))
                .collect(),
        };
        let http_reply_access = Arc::new(rules(self.http_reply_access));
        let miss_access = Arc::new(rules(self.miss_access));
        let follow_x_forwarded_for = Arc::new(rules(self.follow_x_forwarded_for));
        let on_unsupported_protocol = rules(self.unsupported_protocol);
        let peers = self
            .peers
            .into_iter()
            .filter(|p| p.parent)
            .map(|p| {
                Arc::new(CachePeer {
                    host: p.host,
                    port: p.port,
                    name: p.name,
                    login: p.login,
                    default: p.default,
                    round_robin: p.round_robin,
                    origin_server: p.origin_server,
                    forced_domain: p.forced_domain,
                    connect_timeout: p.connect_timeout,
                    access: rules(p.access),
                    location: p.location,
                })
            })
            .collect();
        let parents = Arc::new(Parents::new(
            peers,
            rules(self.always_direct),
            rules(self.never_direct),
            self.prefer_direct,
            self.nonhierarchical_direct,
        ));
        let http_access = Arc::new(rules(self.http_access));
        let proxy_protocol_access = Arc::new(rules(self.proxy_protocol_access));
        let tcp_outgoing_address = self
            .outgoing
            .into_iter()
            .map(|(addr, refs)| OutgoingAddress {
                addr,
                acls: resolve(refs),
            })
            .collect();
        let mut access_logs = Vec::new();
        // Squid stops at the first matching `access_log none` line, so each log line only
        // sees transactions that no earlier `none` line matched.
        let mut not_silenced: Vec<AclRef> = Vec::new();
        for log in self.logs {
            match log {
                PendingLog::None { refs, location } => {
                    let list = resolve(refs);
                    match list.0.len() {
                        // Nothing after an unconditional `none` can ever log.
                        0 => break,
                        1 => {
                            let mut only = list.0[0].clone();
                            only.negate = !only.negate;
                            not_silenced.push(only);
                        }
                        _ => not_silenced.push(AclRef {
                            negate: true,
                            acl: Arc::new(Acl::all_of(
                                format!("access_log none at {location}"),
                                list,
                            )),
                        }),
                    }
                }
                PendingLog::File {
                    path,
                    udp,
                    syslog,
                    tcp,
                    format,
                    refs,
                    location,
                } => {
                    let mut acls = resolve(refs);
                    acls.0.extend(not_silenced.iter().cloned());
                    access_logs.push(AccessLog {
                        path,
                        udp,
                        syslog,
                        tcp,
                        acls,
                        format,
                        location,
                    });
                }
            }
        }
        if !self.saw_access_log {
            access_logs.push(AccessLog {
                path: PathBuf::from(DEFAULT_ACCESS_LOG),
                udp: None,
                syslog: None,
                tcp: None,
                acls: AclList::default(),
                format: None,
                location: Location {
                    file: self.root.clone(),
                    line: 0,
                    column: 0,
                },
            });
        }
        Ok(Config {
            file: self.root,
            http_ports: self.http_ports,
            http_access,
            proxy_protocol_access,
            http_reply_access,
            miss_access,
            follow_x_forwarded_for,
            on_unsupported_protocol,
            acl_uses_indirect_client: self.acl_uses_indirect_client,
            log_uses_indirect_client: self.log_uses_indirect_client,
            deny_info: self.deny_info,
            ssl_bump,
            upgrades,
            uses_maxconn,
            external_acl_types: self.external_types,
            delay_pools,
            delay_initial_bucket_level: self.delay_initial,
            client_delay_pools,
            client_delay_initial_bucket_level: self.client_delay_initial,
            url_rewrite,
            parents,
            request_headers,
            reply_headers,
            tcp_outgoing_address,
            access_logs,
            forwarded_for: self.forwarded_for,
            via: self.via,
            request_header_max_size: self.request_header_max_size,
            reply_header_max_size: self.reply_header_max_size,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            request_timeout: self.request_timeout,
            client_idle_pconn_timeout: self.client_idle_pconn_timeout,
            client_lifetime: self.client_lifetime,
            shutdown_lifetime: self.shutdown_lifetime,
            visible_hostname: self.visible_hostname.unwrap_or_else(host_name),
            pid_filename: self.pid_filename,
            dns_nameservers: self.dns_nameservers,
            max_filedescriptors: self.max_filedescriptors,
            workers: self.workers,
            destination_guard,
            destination_guard_in_files: self.destination_guard,
            logfile_error_policy: self.logfile_error_policy,
            negative_dns_ttl: self.negative_dns_ttl,
            client_ip_max_connections: self.client_ip_max_connections,
            forward_max_tries: self.forward_max_tries,
            connect_retries: self.connect_retries,
            strip_query_terms: self.strip_query_terms,
            httpd_suppress_version_string: self.httpd_suppress_version_string,
            client_persistent_connections: self.client_persistent_connections,
            server_persistent_connections: self.server_persistent_connections,
            server_idle_pconn_timeout: self.server_idle_pconn_timeout,
            positive_dns_ttl: self.positive_dns_ttl,
            debug_level: self.debug_level,
            basic_auth: (!self.basic_auth.helper.argv.is_empty()).then_some(self.basic_auth),
            digest_auth: (!self.digest_auth.helper.argv.is_empty()).then_some(self.digest_auth),
            ignored: self.ignored,
            notes: self.notes,
        })
    }

    /// The destination guard of these files, completed by what `proxyfleet up` passes to the
    /// instances it launches ([`crate::guard::ENV_GUARD`] and friends): the environment turns
    /// the guard on unless a file says `destination_guard off`, and adds networks.
    fn guard(&self) -> DestinationGuard {
        let env_on = std::env::var(guard::ENV_GUARD).is_ok_and(|v| v.trim() == "on");
        let enabled = self.destination_guard.unwrap_or(env_on);
        let mut deny = self.guard_deny.clone();
        deny.extend(guard::nets_from_env(guard::ENV_DENY));
        let mut allow = self.guard_allow.clone();
        allow.extend(guard::nets_from_env(guard::ENV_ALLOW));
        DestinationGuard::new(enabled, deny, allow)
    }
}

/// Reads a configuration or ACL value file. Invalid UTF-8 is replaced rather than refused:
/// squid.conf is ASCII in practice and a stray Latin-1 comment should not stop the proxy.
/// Only regular files, and at most [`MAX_CONFIG_FILE_BYTES`] (see `read`).
pub(super) fn read_text(path: &Path) -> std::io::Result<String> {
    let bytes = read::read_bounded(path, MAX_CONFIG_FILE_BYTES)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Squid's `visible_hostname` default is the machine's name.
fn host_name() -> String {
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_owned();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Request, TempDir};
    use super::super::{parse_file, parse_str};
    use super::*;

    #[test]
    fn include_globs_relative_to_the_including_file() {
        let dir = TempDir::new("include-glob");
        dir.write("conf.d/10-a.conf", "http_access allow lan\nvia off\n");
        dir.write("conf.d/20-b.conf", "via on\nlogfile_rotate 0\n");
        dir.write("conf.d/notes.txt", "not a directive\n");
        dir.write("extra.conf", "forwarded_for delete\n");
        let extra = dir.0.join("extra.conf");
        let main = dir.write(
            "squid.conf",
            &format!(
                "acl lan src 10.0.0.0/8\n\
                 include conf.d/*.conf\n\
                 include empty.d/*.conf {}\n\
                 http_access deny all\n\
                 http_port 3128\n",
                extra.display()
            ),
        );
        let c = parse_file(&main).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.via, "20-b.conf comes after 10-a.conf");
        assert_eq!(c.forwarded_for, ForwardedFor::Delete);
        let rules = &c.http_access.rules;
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].location.file, dir.0.join("conf.d/10-a.conf"));
        assert_eq!(rules[0].location.line, 1);
        assert_eq!(rules[1].location.file, main);
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(c.ignored[0].1.file, dir.0.join("conf.d/20-b.conf"));
        assert_eq!(c.ignored[0].1.line, 2);
        let r = Request::get("10.0.0.9", "example.com", 80);
        assert!(c.http_access.allows(&r.facts()));
    }

    #[test]
    fn include_errors_point_at_the_right_file() {
        let dir = TempDir::new("include-errors");
        let main = dir.0.join("squid.conf");

        let e = parse_str("via on\ninclude missing.conf\nhttp_port 3128\n", &main).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2:9: include: cannot read '{}': No such file or directory (os error 2)",
                main.display(),
                dir.0.join("missing.conf").display()
            )
        );

        let bad = dir.write("conf.d/bad.conf", "via on\nbogus_directive yes\n");
        let e = parse_str("include conf.d/*.conf\nhttp_port 3128\n", &main).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2:1: unknown directive 'bogus_directive': proxyfleet does not support it \
                 (see the README's directive table)",
                bad.display()
            )
        );

        let e = parse_str("include\n", &main).unwrap_err();
        assert_eq!(e.message(), "include: missing file name or pattern");

        let e = parse_str("include a***.conf\n", &main).unwrap_err();
        assert!(
            e.message()
                .starts_with("include: invalid pattern 'a***.conf'"),
            "{e}"
        );
    }

    #[test]
    fn include_loops_stop_at_squids_depth_limit() {
        let dir = TempDir::new("include-loop");
        let looping = dir.write("loop.conf", "\n  include loop.conf\n");
        let e = parse_file(&looping).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2:3: include: includes nest more than 16 levels deep (does a file include \
                 itself?)",
                looping.display()
            )
        );
    }

    #[test]
    fn unreadable_top_level_file() {
        let e = parse_file(Path::new("/nonexistent/proxyfleet.conf")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nonexistent/proxyfleet.conf: cannot read the file: No such file or directory (os \
             error 2)"
        );
        assert_eq!(e.location().line, 0);
    }

    #[test]
    fn continuations_and_trailing_comments_end_to_end() {
        let text = "acl Safe_ports port 80\t\t# http\n\
                    acl Safe_ports port 21 \\\n    \
                    443 # https\n\
                    http_access deny !Safe_ports\n\
                    http_access allow all\n\
                    http_port 3128 # the only port\n";
        let c = parse_str(text, Path::new("/etc/test.conf")).unwrap();
        for (port, allowed) in [(80, true), (21, true), (443, true), (8080, false)] {
            let r = Request::get("192.0.2.1", "example.com", port);
            assert_eq!(c.http_access.allows(&r.facts()), allowed, "{port}");
        }
    }

    #[test]
    fn invalid_utf8_is_tolerated() {
        let dir = TempDir::new("latin1");
        let path = dir.0.join("squid.conf");
        std::fs::write(&path, b"# caf\xe9\nhttp_port 3128\n").unwrap();
        assert_eq!(parse_file(&path).unwrap().http_ports.len(), 1);
    }
}
