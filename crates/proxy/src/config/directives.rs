//! Argument parsing for the scalar and listening directives, following Squid 5's syntax.
//!
//! Each function reads one [`Directive`] into the [`Parser`]'s state. Single-value
//! directives simply overwrite (the last line wins, as in Squid); list directives append.
//! ACL lines and the rules that use them are in `acl_lines`, `access_log` in `logging`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::lex::Token;
use super::model::{Accel, ForwardedFor, HttpPort, Vport};
use super::parse::{Directive, Parser, PendingRule, DEFAULT_MAX_FILEDESCRIPTORS};
use super::units::{self, UnitError};
use super::ConfigError;
use crate::access_log::LogErrorPolicy;

/// Port options for decrypting (certificates, their cache, TLS settings): read, not used.
const BUMP_ONLY_OPTIONS: &[&str] = &[
    "cert=",
    "key=",
    "tls-cert=",
    "tls-key=",
    "cafile=",
    "tls-cafile=",
    "capath=",
    "clientca=",
    "tls-clientca=",
    "crlfile=",
    "dhparams=",
    "tls-dh=",
    "options=",
    "tls-options=",
    "cipher=",
    "tls-cipher=",
    "sslflags=",
    "sslcontext=",
    "generate-host-certificates",
    "dynamic_cert_mem_cache_size=",
    "tls-min-version=",
    "version=",
];

/// `http_port` options that need `accel` before them.
const ACCEL_OPTIONS: &[&str] = &[
    "defaultsite=",
    "vport",
    "allow-direct",
    "protocol=",
    "ignore-cc",
    "act-as-origin",
];

/// One accelerator option (`o` is one of [`ACCEL_OPTIONS`]).
fn accel_option(accel: &mut Accel, o: &str) -> Result<(), String> {
    if let Some(site) = o.strip_prefix("defaultsite=") {
        if crate::intercept::host_of(site).is_none() {
            return Err(format!(
                "defaultsite: '{site}' is not a host name or HOST:PORT"
            ));
        }
        accel.default_site = Some(site.to_string());
    } else if o == "vport" {
        accel.vport = Some(Vport::Listening);
    } else if let Some(port) = o.strip_prefix("vport=") {
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("vport: '{port}' is not a port"))?;
        accel.vport = Some(Vport::Fixed(port));
    } else if o == "allow-direct" {
        accel.allow_direct = true;
    } else if let Some(protocol) = o.strip_prefix("protocol=") {
        if !matches!(protocol.to_ascii_lowercase().as_str(), "http" | "http/1.1") {
            return Err(format!(
                "protocol={protocol}: only http is accelerated here (a port where clients \
                 speak TLS to the proxy is not supported)"
            ));
        }
    } else if o != "ignore-cc" && o != "act-as-origin" {
        // ignore-cc and act-as-origin change what a cache does with what it stores: no
        // cache, no effect. Anything else starting like an option is not one.
        return Err(format!("unsupported option '{o}'"));
    }
    Ok(())
}

impl Parser {
    /// `http_port [ADDR:]PORT [require-proxy-header] [name=...]`.
    /// Also `https_port [ADDR:]PORT intercept ssl-bump [cert=...]`: intercepted TLS,
    /// peeked at and spliced (`ssl_bump`), never decrypted.
    pub(super) fn http_port(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let https = d.name.text == "https_port";
        let t = d.arg(0, "port (expected [ADDR:]PORT)")?;
        let addr = listen_addr(&t.text).map_err(|m| d.error(t, m))?;
        let mut require_proxy_header = false;
        let mut name: std::sync::Arc<str> = t.text.as_str().into();
        let mut intercept = false;
        let mut ssl_bump = false;
        let mut accel: Option<Accel> = None;
        for option in &d.args[1..] {
            match option.text.as_str() {
                "require-proxy-header" => require_proxy_header = true,
                "intercept" | "transparent" => intercept = true,
                "ssl-bump" => ssl_bump = true,
                o if o.starts_with("name=") => name = o["name=".len()..].into(),
                "accel" => {
                    accel.get_or_insert_with(Accel::default);
                }
                "vhost" => {
                    if accel.is_none() {
                        self.notes.push((
                            d.location_of(option),
                            "http_port: vhost implies accel (Squid: 'vhost option is \
                             deprecated. Use accel mode flag instead')"
                                .into(),
                        ));
                    }
                    accel.get_or_insert_with(Accel::default);
                }
                o if ACCEL_OPTIONS.iter().any(|p| o == *p || o.starts_with(p)) => {
                    let Some(accel) = accel.as_mut() else {
                        return Err(d.error(
                            option,
                            format!(
                                "'{o}' is an accelerator option: it needs 'accel' (or 'vhost') \
                                 before it on the line, as in Squid"
                            ),
                        ));
                    };
                    accel_option(accel, o).map_err(|m| d.error(option, m))?;
                }
                // What bumping (decrypting) would sign with: never used, as nothing is
                // decrypted.
                o if BUMP_ONLY_OPTIONS
                    .iter()
                    .any(|p| o == *p || o.starts_with(p)) => {}
                o => {
                    return Err(d.error(
                        option,
                        format!(
                            "unsupported option '{o}' (supported: require-proxy-header, \
                             intercept, transparent, ssl-bump, accel, vhost, vport, \
                             defaultsite=, allow-direct, name=...)"
                        ),
                    ))
                }
            }
        }
        if accel.is_some() && (intercept || ssl_bump || https) {
            return Err(d.error(
                d.name,
                "an accel port cannot also be intercept, ssl-bump or https_port (Squid: \
                 'Intercept mode requires its own interception port')",
            ));
        }
        if https && !(intercept && ssl_bump) {
            return Err(d.error(
                d.name,
                "https_port is supported only as 'intercept ssl-bump' (intercepted TLS, peeked \
                 at and spliced): a port where clients speak TLS to the proxy is not",
            ));
        }
        self.http_ports.push(HttpPort {
            addr,
            require_proxy_header,
            name,
            intercept,
            ssl_bump,
            tls: https,
            accel,
            location: d.location(),
        });
        Ok(())
    }

    /// `http_upgrade_request_protocols NAME allow|deny [!]acl...` (`OTHER`: the rest).
    pub(super) fn upgrade_protocols(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name = d.arg(0, "protocol name (e.g. WebSocket, or OTHER)")?;
        let rule = self.rule_after(d, 1)?;
        let key = name.text.to_ascii_lowercase();
        match self.upgrades.iter_mut().find(|(n, _)| *n == key) {
            Some((_, lines)) => lines.push(rule),
            None => self.upgrades.push((key, vec![rule])),
        }
        Ok(())
    }

    /// `ssl_bump ACTION [!]acl...`.
    pub(super) fn ssl_bump(&mut self, d: &Directive) -> Result<(), ConfigError> {
        use crate::bump::Action;
        let t = d.arg(0, "action (peek, stare, splice, terminate)")?;
        let action = match t.text.as_str() {
            "peek" => Action::Peek,
            "stare" => Action::Stare,
            "splice" | "none" | "deny" => Action::Splice,
            "terminate" => Action::Terminate,
            "bump" | "client-first" | "server-first" | "allow" => Action::Bump,
            other => return Err(d.error(t, format!("'{other}' is not an ssl_bump action"))),
        };
        let refs = self.acl_refs(d, &d.args[1..])?;
        self.ssl_bump.push((action, refs, d.location_of(t)));
        Ok(())
    }

    /// `tcp_outgoing_address ADDR [[!]acl...]`.
    pub(super) fn tcp_outgoing_address(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "IP address")?;
        let addr: IpAddr = t
            .text
            .parse()
            .map_err(|_| d.error(t, format!("'{}' is not an IP address", t.text)))?;
        let refs = self.acl_refs(d, &d.args[1..])?;
        self.outgoing.push((addr, refs));
        Ok(())
    }

    /// `forwarded_for on|off|transparent|delete|truncate` (case is ignored). Squid keeps the
    /// word as a string and treats any other word (`yes`, Squid 2's spellings) as `delete`:
    /// so does proxyfleet, with a note at start-up.
    pub(super) fn forwarded_for(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "'on', 'off', 'transparent', 'delete' or 'truncate'")?;
        d.no_more(1)?;
        self.forwarded_for = match t.text.to_ascii_lowercase().as_str() {
            "on" => ForwardedFor::On,
            "off" => ForwardedFor::Off,
            "transparent" => ForwardedFor::Transparent,
            "delete" => ForwardedFor::Delete,
            "truncate" => ForwardedFor::Truncate,
            _ => {
                self.notes.push((
                    d.location_of(t),
                    format!(
                        "forwarded_for '{}' is not on, off, transparent, delete or truncate: \
                         as in Squid, X-Forwarded-For is removed (delete)",
                        t.text
                    ),
                ));
                ForwardedFor::Delete
            }
        };
        Ok(())
    }

    /// `request_header_max_size` / `reply_header_max_size N [bytes|KB|MB|GB]`.
    pub(super) fn size(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let n = d.arg(0, "size (e.g. 64 KB)")?;
        let unit = d.args.get(1);
        d.no_more(2)?;
        let bytes = units::parse_size(&n.text, unit.map(|u| u.text.as_str()))
            .map_err(|e| unit_error(d, n, unit, e))?;
        match d.name.text.as_str() {
            "request_header_max_size" => self.request_header_max_size = bytes,
            _ => self.reply_header_max_size = bytes,
        }
        Ok(())
    }

    /// The timeouts: `N [unit]`.
    pub(super) fn time(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let n = d.arg(0, "time (e.g. 30 seconds)")?;
        let unit = d.args.get(1);
        d.no_more(2)?;
        let value = units::parse_time(&n.text, unit.map(|u| u.text.as_str()))
            .map_err(|e| unit_error(d, n, unit, e))?;
        *self.duration_mut(&d.name.text) = value;
        Ok(())
    }

    /// `visible_hostname NAME`: like Squid 5.7, only the first word counts (the rest is
    /// noted at start-up).
    pub(super) fn visible_hostname(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "host name")?;
        if let Some(extra) = d.args.get(1) {
            self.notes.push((
                d.location_of(extra),
                format!(
                    "visible_hostname takes one word: '{}' is used, the rest ignored (as \
                     Squid does)",
                    t.text
                ),
            ));
        }
        self.visible_hostname = Some(t.text.clone());
        Ok(())
    }

    /// `pid_filename PATH|none`: a relative path is taken from the configuration file's
    /// directory (as `include`s are).
    pub(super) fn pid_filename(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "file name or none")?;
        d.no_more(1)?;
        self.pid_filename = (t.text != "none").then(|| d.base_dir().join(&t.text));
        Ok(())
    }

    /// `dns_nameservers IP...`; several lines add up, as in Squid.
    pub(super) fn dns_nameservers(&mut self, d: &Directive) -> Result<(), ConfigError> {
        d.arg(0, "name server address")?;
        for t in d.args {
            let ip = t
                .text
                .parse()
                .map_err(|_| d.error(t, format!("'{}' is not an IP address", t.text)))?;
            self.dns_nameservers.push(ip);
        }
        Ok(())
    }

    /// `destination_guard on|off` (proxyfleet's own): refuse the protected destinations
    /// (`to_protected`) before `http_access`.
    pub(super) fn destination_guard(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "'on' or 'off'")?;
        d.no_more(1)?;
        self.destination_guard = Some(match t.text.as_str() {
            "on" => true,
            "off" => false,
            _ => return Err(d.error(t, format!("expected 'on' or 'off', found '{}'", t.text))),
        });
        Ok(())
    }

    /// `logfile_error_policy drop|refuse`.
    pub(super) fn logfile_error_policy(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "'drop' or 'refuse'")?;
        d.no_more(1)?;
        self.logfile_error_policy = match t.text.as_str() {
            "drop" => LogErrorPolicy::Drop,
            "refuse" => LogErrorPolicy::Refuse,
            _ => {
                return Err(d.error(
                    t,
                    format!("expected 'drop' or 'refuse', found '{}'", t.text),
                ))
            }
        };
        Ok(())
    }

    /// `destination_guard_allow CIDR...` / `destination_guard_deny CIDR...`; lines add up.
    pub(super) fn destination_guard_nets(&mut self, d: &Directive) -> Result<(), ConfigError> {
        d.arg(0, "address or CIDR")?;
        for t in d.args {
            let net = crate::guard::parse_net(&t.text)
                .ok_or_else(|| d.error(t, format!("'{}' is not an IP address or CIDR", t.text)))?;
            if d.name.text == "destination_guard_allow" {
                self.guard_allow.push(net);
            } else {
                self.guard_deny.push(net);
            }
        }
        Ok(())
    }

    /// `client_ip_max_connections N`; `-1` (Squid's default) means no limit.
    pub(super) fn client_ip_max_connections(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "number (or -1 for no limit)")?;
        d.no_more(1)?;
        self.client_ip_max_connections = match t.text.as_str() {
            "-1" => None,
            text => match text.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(d.error(
                        t,
                        format!("'{}' is not a positive whole number or -1", t.text),
                    ))
                }
            },
        };
        Ok(())
    }

    /// `forward_max_tries N` (default 25): how many of the destination's addresses one
    /// request may try to connect to.
    pub(super) fn forward_max_tries(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "number of tries")?;
        d.no_more(1)?;
        self.forward_max_tries = t
            .text
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| d.error(t, format!("'{}' is not a positive whole number", t.text)))?;
        Ok(())
    }

    /// `connect_retries N` (default 0, at most 10 as in Squid): how many more times a
    /// connection to one address is tried before the next one.
    pub(super) fn connect_retries(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "number of retries")?;
        d.no_more(1)?;
        self.connect_retries = t
            .text
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 10)
            .ok_or_else(|| d.error(t, format!("'{}' is not 0 to 10", t.text)))?;
        Ok(())
    }

    /// `on_unsupported_protocol tunnel|respond [!]acl...`: what Squid does with traffic that
    /// is not HTTP at the start of an intercepted connection: the first matching line
    /// decides, `respond` (an error page) when none does.
    pub(super) fn on_unsupported_protocol(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let action = d.arg(0, "'tunnel' or 'respond'")?;
        let tunnel = match action.text.as_str() {
            "tunnel" => true,
            "respond" => false,
            other => {
                return Err(d.error(
                    action,
                    format!("expected 'tunnel' or 'respond', found '{other}'"),
                ))
            }
        };
        let refs = self.acl_refs(d, &d.args[1..])?;
        self.unsupported_protocol.push(PendingRule {
            allow: tunnel,
            refs,
            location: d.location(),
        });
        Ok(())
    }

    /// `follow_x_forwarded_for allow|deny [!]acl...`: whose `X-Forwarded-For` is believed
    /// ([`crate::conn`]'s indirect client).
    pub(super) fn follow_x_forwarded_for(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let rule = self.rule_after(d, 0)?;
        self.follow_x_forwarded_for.push(rule);
        Ok(())
    }

    /// `max_filedescriptors N`; 0 means "the default", as in Squid.
    pub(super) fn max_filedescriptors(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "number")?;
        d.no_more(1)?;
        let n: usize = t.text.parse().map_err(|_| {
            d.error(
                t,
                format!("'{}' is not a non-negative whole number", t.text),
            )
        })?;
        self.max_filedescriptors = if n == 0 {
            DEFAULT_MAX_FILEDESCRIPTORS
        } else {
            n
        };
        Ok(())
    }

    /// `workers N` (1..=64): the threads that serve connections.
    pub(super) fn workers(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "number")?;
        d.no_more(1)?;
        match t.text.parse::<usize>() {
            Ok(n @ 1..=64) => {
                self.workers = Some(n);
                Ok(())
            }
            _ => Err(d.error(
                t,
                format!("'{}' is not a number of workers from 1 to 64", t.text),
            )),
        }
    }
}

/// `PORT`, `IPv4:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("'{text}' is not [IPv6]:PORT"))?;
        let ip = v6
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("'{v6}' is not an IPv6 address"))?;
        (Some(IpAddr::V6(ip)), port)
    } else if let Some((host, port)) = text.rsplit_once(':') {
        let ip = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => match host.parse::<Ipv4Addr>() {
                Ok(ip) => IpAddr::V4(ip),
                Err(_) if host.contains(':') => {
                    return Err(format!(
                        "'{text}': an IPv6 address needs brackets, as in [::1]:3128"
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "cannot listen on '{host}': only IP addresses and 'localhost' are \
                         accepted"
                    ))
                }
            },
        };
        (Some(ip), port)
    } else {
        (None, text)
    };
    // Port 0 (a proxyfleet extension): the kernel picks a free port, and the proxy prints
    // the address it bound. Tests use it to run many proxies side by side without races.
    let port = match port.parse::<u16>() {
        Ok(p) if !port.starts_with('+') => p,
        _ => return Err(format!("invalid port '{port}' (expected 0-65535)")),
    };
    Ok(SocketAddr::new(
        host.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        port,
    ))
}

/// Points a units error at the token at fault.
pub(super) fn unit_error(
    d: &Directive,
    n: &Token,
    unit: Option<&Token>,
    e: UnitError,
) -> ConfigError {
    match (e, unit) {
        (UnitError::Unit(m), Some(u)) => d.error(u, m),
        (UnitError::Unit(m) | UnitError::Number(m), _) => d.error(n, m),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use super::super::parse_str;
    use super::super::test_support::{assert_errors, parse, parse_err, parse_ok, Request};
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn http_port_forms() {
        let c = parse_ok(
            "http_port 3128\n\
             http_port 127.0.0.1:3129 require-proxy-header name=front\n\
             http_port [::1]:3130\n\
             http_port localhost:3131\n",
        );
        let ports: Vec<_> = c
            .http_ports
            .iter()
            .map(|p| (p.addr, p.require_proxy_header, p.location.line))
            .collect();
        assert_eq!(
            ports,
            [
                (addr("0.0.0.0:3128"), false, 1),
                (addr("127.0.0.1:3129"), true, 2),
                (addr("[::1]:3130"), false, 3),
                (addr("127.0.0.1:3131"), false, 4),
            ]
        );
    }

    #[test]
    fn http_port_errors() {
        let cases = [
            (
                "http_port",
                "1:10: http_port: missing port (expected [ADDR:]PORT)",
            ),
            (
                "http_port 127.0.0.1:70000",
                "1:11: http_port: invalid port '70000' (expected 0-65535)",
            ),
            (
                "http_port proxy.example:3128",
                "1:11: http_port: cannot listen on 'proxy.example': only IP addresses and \
                 'localhost' are accepted",
            ),
            (
                "http_port ::1:3128",
                "1:11: http_port: '::1:3128': an IPv6 address needs brackets, as in [::1]:3128",
            ),
            (
                "http_port 3128 tproxy",
                "1:16: http_port: unsupported option 'tproxy' (supported: \
                 require-proxy-header, intercept, transparent, ssl-bump, accel, vhost, vport, \
                 defaultsite=, allow-direct, name=...)",
            ),
            (
                "http_port 3128 defaultsite=a.test accel",
                "1:16: http_port: 'defaultsite=a.test' is an accelerator option: it needs \
                 'accel' (or 'vhost') before it on the line, as in Squid",
            ),
            (
                "http_port 3128 accel vport=x",
                "1:22: http_port: vport: 'x' is not a port",
            ),
            (
                "http_port 3128 accel intercept",
                "1:1: http_port: an accel port cannot also be intercept, ssl-bump or \
                 https_port (Squid: 'Intercept mode requires its own interception port')",
            ),
            (
                "http_port 3128 accel protocol=https",
                "1:22: http_port: protocol=https: only http is accelerated here (a port where \
                 clients speak TLS to the proxy is not supported)",
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn on_unsupported_protocol_lines() {
        let c = parse_ok("acl apps src 10.0.0.0/8\non_unsupported_protocol tunnel apps\non_unsupported_protocol respond all\n");
        assert_eq!(c.on_unsupported_protocol.rules.len(), 2);
        assert!(c.on_unsupported_protocol.rules[0].allow);
        assert!(
            c.notes
                .iter()
                .any(|(_, n)| n.contains("only connections to an http_port ... intercept")),
            "{:?}",
            c.notes
        );
        let c = parse_ok("http_port 3129 intercept\non_unsupported_protocol tunnel all\n");
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn accel_ports_as_squid_reads_them() {
        let c = parse_ok(
            "http_port 80 vhost vport=8080\n\
             http_port 81 accel defaultsite=www.test:8081 allow-direct ignore-cc\n\
             http_port 82\n",
        );
        assert_eq!(
            c.http_ports[0].accel,
            Some(Accel {
                default_site: None,
                vport: Some(Vport::Fixed(8080)),
                allow_direct: false
            })
        );
        assert!(
            c.notes[0].1.contains("vhost implies accel"),
            "{:?}",
            c.notes
        );
        let second = c.http_ports[1].accel.as_ref().unwrap();
        assert_eq!(second.default_site.as_deref(), Some("www.test:8081"));
        assert!(second.allow_direct);
        assert_eq!(c.http_ports[2].accel, None);
    }

    #[test]
    fn no_http_port_parses_with_a_note_as_in_squid() {
        let c = parse_str("via on\n", Path::new("/etc/test.conf")).unwrap();
        assert!(c.http_ports.is_empty());
        assert!(
            c.notes[0].1.contains("no http_port configured"),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn defaults_are_squids() {
        let c = parse_ok("");
        assert_eq!(c.forwarded_for, ForwardedFor::On);
        assert!(c.via);
        assert_eq!(c.request_header_max_size, 65_536);
        assert_eq!(c.reply_header_max_size, 65_536);
        assert_eq!(c.connect_timeout, Duration::from_secs(60));
        assert_eq!(c.read_timeout, Duration::from_secs(900));
        assert_eq!(c.request_timeout, Duration::from_secs(300));
        assert_eq!(c.client_idle_pconn_timeout, Duration::from_secs(120));
        assert_eq!(c.client_lifetime, Duration::from_secs(86_400));
        assert_eq!(c.shutdown_lifetime, Duration::from_secs(30));
        assert!(!c.visible_hostname.is_empty());
        assert!(c.dns_nameservers.is_empty());
        assert_eq!(c.max_filedescriptors, 16_384);
        assert!(c.tcp_outgoing_address.is_empty());
        assert!(c.ignored.is_empty());
        assert!(c.http_access.is_empty());
        assert!(c.proxy_protocol_access.is_empty());
        assert_eq!(c.access_logs.len(), 1);
        assert_eq!(
            c.access_logs[0].path,
            Path::new("/var/log/squid/access.log")
        );
        assert!(c.access_logs[0].acls.0.is_empty());
        // No http_access lines: everything is denied.
        let r = Request::get("127.0.0.1", "example.com", 80);
        assert!(!c.http_access.allows(&r.facts()));
    }

    #[test]
    fn tcp_outgoing_address_lines() {
        let c = parse_ok(
            "acl lan src 10.0.0.0/8\n\
             tcp_outgoing_address 192.0.2.1 lan !to_localhost\n\
             tcp_outgoing_address 2001:db8::1\n",
        );
        let out = &c.tcp_outgoing_address;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].addr, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert!(out[0].acls.needs_dst_ips());
        let r = Request::get("10.1.1.1", "192.0.2.80", 80);
        assert!(out[0].acls.matches(&r.facts()));
        let r = Request::get("10.1.1.1", "127.0.0.1", 80);
        assert!(!out[0].acls.matches(&r.facts()));
        assert!(out[1].acls.0.is_empty());
        assert_eq!(
            parse_err("tcp_outgoing_address eth0"),
            "/etc/test.conf:1:22: tcp_outgoing_address: 'eth0' is not an IP address"
        );
    }
    #[test]
    fn forwarded_for_and_via() {
        for (word, expected) in [
            ("on", ForwardedFor::On),
            ("off", ForwardedFor::Off),
            ("transparent", ForwardedFor::Transparent),
            ("delete", ForwardedFor::Delete),
            ("TRUNCATE", ForwardedFor::Truncate),
        ] {
            let c = parse_ok(&format!("forwarded_for delete\nforwarded_for {word}"));
            assert_eq!(c.forwarded_for, expected, "last line wins");
        }
        assert!(!parse_ok("via off").via);
        assert!(parse_ok("via off\nvia enable").via);
        let cases = [
            ("via", "1:4: via: missing 'on' or 'off'"),
            ("via yes", "1:5: via: expected 'on' or 'off', found 'yes'"),
            ("via on off", "1:8: via: unexpected extra argument 'off'"),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn sizes_and_times() {
        let c = parse_ok(
            "request_header_max_size 32 KB\n\
             reply_header_max_size 1 MB\n\
             connect_timeout 5 seconds\n\
             read_timeout 0.5 minutes\n\
             request_timeout 90\n\
             client_idle_pconn_timeout 250 msec\n\
             client_lifetime 2 hours\n\
             shutdown_lifetime 1 sec\n",
        );
        assert_eq!(c.request_header_max_size, 32 * 1024);
        assert_eq!(c.reply_header_max_size, 1024 * 1024);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.read_timeout, Duration::from_secs(30));
        assert_eq!(c.request_timeout, Duration::from_secs(90));
        assert_eq!(c.client_idle_pconn_timeout, Duration::from_millis(250));
        assert_eq!(c.client_lifetime, Duration::from_secs(7200));
        assert_eq!(c.shutdown_lifetime, Duration::from_secs(1));
        assert_eq!(
            parse_ok("request_header_max_size 1000").request_header_max_size,
            1000
        );
        let cases = [
            (
                "reply_header_max_size 1 TB",
                "1:25: reply_header_max_size: unknown size unit 'TB' (expected bytes, KB, MB or \
                 GB)",
            ),
            (
                "request_header_max_size big",
                "1:25: request_header_max_size: 'big' is not a size value (expected a \
                 non-negative number)",
            ),
            (
                "connect_timeout 5 parsecs",
                "1:19: connect_timeout: unknown time unit 'parsecs' (expected milliseconds, \
                 seconds, minutes, hours, days, weeks, fortnights, months, years or decades)",
            ),
            (
                "read_timeout",
                "1:13: read_timeout: missing time (e.g. 30 seconds)",
            ),
            (
                "connect_timeout 1 minute extra",
                "1:26: connect_timeout: unexpected extra argument 'extra'",
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn names_servers_and_descriptors() {
        let c = parse_ok(
            "visible_hostname proxy.example.com\n\
             dns_nameservers 192.0.2.53 2001:db8::53\n\
             dns_nameservers 192.0.2.54\n\
             max_filedescriptors 4096\n",
        );
        assert_eq!(c.visible_hostname, "proxy.example.com");
        assert_eq!(c.dns_nameservers.len(), 3);
        assert_eq!(
            c.dns_nameservers[2],
            "192.0.2.54".parse::<IpAddr>().unwrap()
        );
        assert_eq!(c.max_filedescriptors, 4096);
        assert_eq!(c.workers, None, "not given: one thread per core");
        assert_eq!(parse_ok("workers 1").workers, Some(1));
        assert_eq!(
            parse_ok("max_filedescriptors 0").max_filedescriptors,
            16_384
        );
        let cases = [
            (
                "visible_hostname",
                "1:17: visible_hostname: missing host name",
            ),
            (
                "dns_nameservers ns1.example",
                "1:17: dns_nameservers: 'ns1.example' is not an IP address",
            ),
            (
                "max_filedescriptors -1",
                "1:21: max_filedescriptors: '-1' is not a non-negative whole number",
            ),
            (
                "workers 0",
                "1:9: workers: '0' is not a number of workers from 1 to 64",
            ),
            (
                "dns_nameservers \"127.0.0.1\"",
                "1:17: dns_nameservers: quoted value \"127.0.0.1\" (only acl lines take \
                 \"/path\" value files)",
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn ignored_directives_never_fail() {
        let c = parse_ok(
            "cache_dir ufs /var/spool/squid 100 16 256\n\
             cache deny all\n\
             refresh_pattern \"unterminated (\n\
             pinger_enable\n\
             hosts_file /etc/hosts\n",
        );
        let names: Vec<_> = c
            .ignored
            .iter()
            .map(|(n, l)| (n.as_str(), l.line))
            .collect();
        assert_eq!(
            names,
            [
                ("cache_dir", 1),
                ("cache", 2),
                ("refresh_pattern", 3),
                ("pinger_enable", 4),
                ("hosts_file", 5),
            ]
        );
    }

    #[test]
    fn unknown_directive_points_at_it() {
        assert_eq!(
            parse_err("via on\n  foo_bar 1 2"),
            "/etc/test.conf:2:3: unknown directive 'foo_bar': proxyfleet does not support it \
             (see the README's directive table)"
        );
        assert!(
            parse("Via on").is_err(),
            "directive names are case-sensitive"
        );
    }
}
