//! Argument parsing for each supported directive, following Squid 5's syntax.
//!
//! Each function reads one [`Directive`] into the [`Parser`]'s state. Single-value
//! directives simply overwrite (the last line wins, as in Squid); list directives append.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::lex::Token;
use super::model::{ForwardedFor, HttpPort, Location};
use super::parse::{
    read_text, AclSlot, Directive, Parser, PendingLog, PendingRef, PendingRule,
    DEFAULT_MAX_FILEDESCRIPTORS,
};
use super::units::{self, UnitError};
use super::ConfigError;
use crate::acl::{AclBuilder, AclType};

/// Squid's limit on ACL names (`ACL_NAME_SZ` minus the terminator).
const MAX_ACL_NAME: usize = 63;

/// Log formats Squid has built in; only `squid` is written by proxyfleet.
const SQUID_LOG_FORMATS: &[&str] = &[
    "squid",
    "common",
    "combined",
    "referrer",
    "useragent",
    "icap_squid",
];

impl Parser {
    /// `acl NAME TYPE [-i|+i|-n|--] VALUE...`, values possibly from `"/path"` files.
    pub(super) fn acl(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name_tok = d.arg(0, "acl name")?;
        let name = name_tok.text.as_str();
        if name_tok.quoted || name.len() > MAX_ACL_NAME {
            return Err(d.error(
                name_tok,
                format!(
                    "invalid acl name {} (at most {MAX_ACL_NAME} characters, unquoted)",
                    name_tok.raw()
                ),
            ));
        }
        let supported = || {
            AclType::USABLE
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let type_tok = d.arg(
            1,
            &format!("type of acl '{name}' (supported: {})", supported()),
        )?;
        if name == "manager" && type_tok.is("proto") {
            // The pre-3.2 `acl manager proto cache_object`: Squid 5 says "UPGRADE: ACL
            // 'manager' is now a built-in ACL" and ignores the line; so do we.
            self.ignored.push(("acl manager".to_owned(), d.location()));
            return Ok(());
        }
        let ty = AclType::from_name(&type_tok.text)
            .filter(|_| !type_tok.quoted)
            .ok_or_else(|| {
                d.error(
                    type_tok,
                    format!(
                        "unknown acl type {} (supported: {})",
                        type_tok.raw(),
                        supported()
                    ),
                )
            })?;
        let slot = self.acls.entry(name.to_owned()).or_insert_with(|| AclSlot {
            builder: AclBuilder::new(name, ty),
            defined_at: Some(d.location_of(name_tok)),
        });
        if slot.builder.ty() != ty {
            let existing = slot.builder.ty().name();
            let what = match &slot.defined_at {
                Some(at) => {
                    format!("acl '{name}' is already defined with type '{existing}' at {at}")
                }
                None => format!("acl '{name}' is a built-in acl of type '{existing}'"),
            };
            return Err(d.error(
                type_tok,
                format!("{what}; it cannot also be of type '{}'", ty.name()),
            ));
        }

        let mut values = &d.args[2..];
        let mut icase = false;
        while let Some(t) = values.first() {
            let is_flag = !t.quoted
                && t.text.len() > 1
                && (t.text.starts_with('-') || t.text.starts_with('+'));
            if !is_flag {
                break;
            }
            values = &values[1..];
            if t.text == "--" {
                break;
            }
            if !ty.accepts_flag(&t.text) {
                return Err(d.error(
                    t,
                    format!(
                        "option '{}' is not supported for acl type '{}'",
                        t.text,
                        ty.name()
                    ),
                ));
            }
            icase = match t.text.as_str() {
                "-i" => true,
                "+i" => false,
                _ => icase,
            };
        }
        for t in values {
            if t.quoted {
                add_file_values(d, t, &mut slot.builder, &mut icase)?;
            } else {
                add_value(&mut slot.builder, &t.text, &mut icase)
                    .map_err(|m| d.error(t, format!("acl '{name}': {m}")))?;
            }
        }
        if values.is_empty() && slot.defined_at.as_ref() == Some(&d.location_of(name_tok)) {
            // Squid only warns ("empty ACL"); such an ACL matches nothing.
            tracing::warn!(location = %d.location(), acl = name, "acl without values matches nothing");
        }
        Ok(())
    }

    /// `http_access` / `proxy_protocol_access allow|deny [!]acl...`.
    pub(super) fn access_rule(
        &mut self,
        d: &Directive,
        proxy_protocol: bool,
    ) -> Result<(), ConfigError> {
        let action = d.arg(0, "'allow' or 'deny'")?;
        let allow = match action.text.as_str() {
            "allow" => true,
            "deny" => false,
            _ => {
                return Err(d.error(
                    action,
                    format!("expected 'allow' or 'deny', found '{}'", action.text),
                ))
            }
        };
        if d.args.len() < 2 {
            // Squid skips such a line with a warning; a rule that silently does nothing is
            // more likely a mistake than intended.
            return Err(d.missing(&format!(
                "acl name after '{}' (use 'all' to match everything)",
                action.text
            )));
        }
        let refs = self.acl_refs(d, &d.args[1..])?;
        let rule = PendingRule {
            allow,
            refs,
            location: d.location(),
        };
        if proxy_protocol {
            self.proxy_protocol_access.push(rule);
        } else {
            self.http_access.push(rule);
        }
        Ok(())
    }

    /// `[!]name...`: every name must already be defined.
    fn acl_refs(&self, d: &Directive, tokens: &[Token]) -> Result<Vec<PendingRef>, ConfigError> {
        tokens
            .iter()
            .map(|t| {
                let (negate, name) = match t.text.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, t.text.as_str()),
                };
                if name.is_empty() {
                    return Err(d.error(t, "missing acl name after '!'"));
                }
                if !self.acls.contains_key(name) {
                    return Err(d.error(
                        t,
                        format!("unknown acl '{name}' (acls must be defined before they are used)"),
                    ));
                }
                Ok(PendingRef {
                    negate,
                    name: name.to_owned(),
                })
            })
            .collect()
    }

    /// `http_port [ADDR:]PORT [require-proxy-header] [name=...]`.
    pub(super) fn http_port(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "port (expected [ADDR:]PORT)")?;
        let addr = listen_addr(&t.text).map_err(|m| d.error(t, m))?;
        let mut require_proxy_header = false;
        for option in &d.args[1..] {
            match option.text.as_str() {
                "require-proxy-header" => require_proxy_header = true,
                // Only names the port in Squid's reports and ACLs proxyfleet does not have.
                o if o.starts_with("name=") => {}
                o => {
                    return Err(d.error(
                        option,
                        format!(
                            "unsupported option '{o}' (supported: require-proxy-header, name=...)"
                        ),
                    ))
                }
            }
        }
        self.http_ports.push(HttpPort {
            addr,
            require_proxy_header,
            location: d.location(),
        });
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

    /// `access_log none [acl...]` or `access_log [stdio:|daemon:]PATH [squid|option=...]
    /// [[!]acl...]`. Like Squid, a bare word after the path is a log format when it names
    /// one and otherwise the first ACL.
    pub(super) fn access_log(&mut self, d: &Directive) -> Result<(), ConfigError> {
        self.saw_access_log = true;
        let t = d.arg(0, "log file path or 'none'")?;
        if t.text == "none" {
            let refs = self.acl_refs(d, &d.args[1..])?;
            self.logs.push(PendingLog::None {
                refs,
                location: d.location(),
            });
            return Ok(());
        }
        let path = log_path(&t.text).map_err(|m| d.error(t, m))?;
        let mut rest = &d.args[1..];
        while let Some(next) = rest.first() {
            let format = match next.text.split_once('=') {
                Some(("logformat", format)) => format,
                Some(_) => return Err(d.error(next, format!("unsupported option '{}'", next.text))),
                None if SQUID_LOG_FORMATS.contains(&next.text.as_str()) => &next.text,
                None => break,
            };
            if format != "squid" {
                return Err(d.error(
                    next,
                    format!("log format '{format}' is not supported (only 'squid' is)"),
                ));
            }
            rest = &rest[1..];
        }
        let refs = self.acl_refs(d, rest).map_err(|e| {
            // A word that is neither: say both possibilities.
            match rest.first() {
                Some(first) if !self.is_acl_ref(&first.text) => d.error(
                    first,
                    format!(
                        "'{}' is neither a defined acl nor a supported log format (only \
                         'squid' is supported)",
                        first.text
                    ),
                ),
                _ => e,
            }
        })?;
        self.logs.push(PendingLog::File {
            path,
            refs,
            location: d.location(),
        });
        Ok(())
    }

    fn is_acl_ref(&self, text: &str) -> bool {
        let name = text.strip_prefix('!').unwrap_or(text);
        self.acls.contains_key(name)
    }

    /// `forwarded_for on|off|transparent|delete|truncate` (Squid ignores case here).
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
                return Err(d.error(
                    t,
                    format!(
                        "expected 'on', 'off', 'transparent', 'delete' or 'truncate', found '{}'",
                        t.text
                    ),
                ))
            }
        };
        Ok(())
    }

    /// `via on|off`; like Squid, also the deprecated `enable` / `disable`.
    pub(super) fn via(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "'on' or 'off'")?;
        d.no_more(1)?;
        self.via = match t.text.as_str() {
            "on" | "enable" => true,
            "off" | "disable" => false,
            _ => return Err(d.error(t, format!("expected 'on' or 'off', found '{}'", t.text))),
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

    pub(super) fn visible_hostname(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let t = d.arg(0, "host name")?;
        d.no_more(1)?;
        self.visible_hostname = Some(t.text.clone());
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
}

/// One ACL value; `-i` / `+i` between regex values switch case sensitivity for the
/// following ones, as in Squid.
fn add_value(builder: &mut AclBuilder, value: &str, icase: &mut bool) -> Result<(), String> {
    if builder.ty().is_regex() && (value == "-i" || value == "+i") {
        *icase = value == "-i";
        return Ok(());
    }
    builder.add(value, *icase)
}

/// `"/path"`: Squid reads the first word of each line as one value, skipping blank lines
/// and lines starting with `#`. Relative paths are relative to the configuration file.
fn add_file_values(
    d: &Directive,
    t: &Token,
    builder: &mut AclBuilder,
    icase: &mut bool,
) -> Result<(), ConfigError> {
    if t.unterminated {
        return Err(d.error(t, format!("missing closing quote in {}", t.raw())));
    }
    let path = d.base_dir().join(&t.text);
    let text = read_text(&path).map_err(|e| {
        d.error(
            t,
            format!(
                "acl '{}': cannot read value file '{}': {e}",
                builder.name(),
                path.display()
            ),
        )
    })?;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches([' ', '\t']);
        let Some(value) = trimmed.split([' ', '\t', '\r']).next() else {
            continue;
        };
        if value.is_empty() || value.starts_with('#') {
            continue;
        }
        add_value(builder, value, icase).map_err(|m| {
            let location = Location {
                file: path.clone(),
                line: index + 1,
                column: line.chars().count() - trimmed.chars().count() + 1,
            };
            ConfigError::new(location, format!("acl '{}': {m}", builder.name()))
        })?;
    }
    Ok(())
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
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 && !port.starts_with('+') => p,
        _ => return Err(format!("invalid port '{port}' (expected 1-65535)")),
    };
    Ok(SocketAddr::new(
        host.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        port,
    ))
}

/// The file of an `access_log` line, without its logging-module prefix.
fn log_path(text: &str) -> Result<PathBuf, String> {
    let path = match text.split_once(':') {
        Some(("stdio" | "daemon", path)) => path,
        Some((module @ ("syslog" | "tcp" | "udp"), _)) => {
            return Err(format!(
                "the '{module}' logging module is not supported (use a file path, optionally \
                 with stdio: or daemon:)"
            ))
        }
        _ => text,
    };
    if path.is_empty() {
        return Err(format!("'{text}' names no file"));
    }
    Ok(PathBuf::from(path))
}

/// Points a units error at the token at fault.
fn unit_error(d: &Directive, n: &Token, unit: Option<&Token>, e: UnitError) -> ConfigError {
    match (e, unit) {
        (UnitError::Unit(m), Some(u)) => d.error(u, m),
        (UnitError::Unit(m) | UnitError::Number(m), _) => d.error(n, m),
    }
}
