//! Turning `acl NAME TYPE VALUE...` values into a ready-to-evaluate [`Acl`].
//!
//! Several `acl` lines with one name add values, and an ACL may be referenced before its last
//! line is read, so values accumulate in an [`AclBuilder`] and the config parser builds the
//! final [`Acl`]s once the whole file is read. All per-value work (parsing addresses,
//! lowercasing, compiling regexes) happens here so that evaluation does none of it.

use std::sync::Arc;

use regex::{Regex, RegexSet};

use crate::guard::DestinationGuard;

use super::domain::DomainSet;
use super::ip::{self, IpSet};
use super::{Acl, Kind};

/// The ACL types proxyfleet supports, by their squid.conf names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclType {
    Src,
    Dst,
    DstDomain,
    DstDomRegex,
    Port,
    Method,
    Proto,
    /// `url_regex`: the whole URL (`host:port` for CONNECT).
    UrlRegex,
    /// `urlpath_regex`: the path and query, without scheme and host.
    UrlPathRegex,
    /// `proxy_auth REQUIRED|USER...`: who the client proved to be (`auth_param`).
    ProxyAuth,
    /// `proxy_auth_regex`: the same, user names matched by patterns.
    ProxyAuthRegex,
    /// `browser`: the request's User-Agent, by pattern.
    Browser,
    /// `referer_regex`: the request's Referer, by pattern.
    RefererRegex,
    /// `req_header NAME pattern...`: a request field, by pattern.
    ReqHeader,
    /// `rep_header NAME pattern...`: a reply field (reply rules only).
    RepHeader,
    /// `rep_mime_type`: the reply's Content-Type, by pattern (reply rules only).
    RepMimeType,
    /// `http_status N|N-M...`: the reply's status (reply rules only).
    HttpStatus,
    /// `myport`: the proxy port the client connected to.
    MyPort,
    /// `myportname`: that port's `name=`.
    MyPortName,
    /// `localip` (Squid 3's `myip`): the proxy address the client connected to.
    LocalIp,
    /// `has request|response|ALE`: which parts of the transaction exist.
    Has,
    /// `time [days] [h1:m1-h2:m2]`: the proxy's local time.
    Time,
    /// `external CLASS [args]`: what an `external_acl_type` helper answers.
    External,
    /// `at_step SslBump1|SslBump2|SslBump3`: the `ssl_bump` step.
    AtStep,
    /// `ssl::server_name`: the TLS server name (`dstdomain`'s syntax).
    ServerName,
    /// `ssl::server_name_regex`.
    ServerNameRegex,
    /// `maxconn N`: more than N connections open from the client's address.
    MaxConn,
    /// Only the built-in `manager` ACL has it (Squid 5 defines it with `url_regex`, which
    /// squid.conf files here cannot use).
    Manager,
    /// Only the built-in `to_protected` ACL: the destination guard's predicate.
    Protected,
}

impl AclType {
    /// The types an `acl` line may name, in the order error messages list them.
    pub const USABLE: &'static [AclType] = &[
        AclType::Src,
        AclType::Dst,
        AclType::DstDomain,
        AclType::DstDomRegex,
        AclType::Port,
        AclType::Method,
        AclType::Proto,
        AclType::UrlRegex,
        AclType::UrlPathRegex,
        AclType::ProxyAuth,
        AclType::ProxyAuthRegex,
        AclType::Browser,
        AclType::RefererRegex,
        AclType::ReqHeader,
        AclType::RepHeader,
        AclType::RepMimeType,
        AclType::HttpStatus,
        AclType::MyPort,
        AclType::MyPortName,
        AclType::LocalIp,
        AclType::Has,
        AclType::Time,
        AclType::External,
        AclType::AtStep,
        AclType::ServerName,
        AclType::ServerNameRegex,
        AclType::MaxConn,
    ];

    pub fn from_name(name: &str) -> Option<AclType> {
        // Squid 3's name for `localip`, still accepted by Squid 5.
        let name = if name == "myip" { "localip" } else { name };
        Self::USABLE.iter().copied().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            AclType::Src => "src",
            AclType::Dst => "dst",
            AclType::DstDomain => "dstdomain",
            AclType::DstDomRegex => "dstdom_regex",
            AclType::Port => "port",
            AclType::Method => "method",
            AclType::Proto => "proto",
            AclType::UrlRegex => "url_regex",
            AclType::UrlPathRegex => "urlpath_regex",
            AclType::ProxyAuth => "proxy_auth",
            AclType::ProxyAuthRegex => "proxy_auth_regex",
            AclType::Browser => "browser",
            AclType::RefererRegex => "referer_regex",
            AclType::ReqHeader => "req_header",
            AclType::RepHeader => "rep_header",
            AclType::RepMimeType => "rep_mime_type",
            AclType::HttpStatus => "http_status",
            AclType::MyPort => "myport",
            AclType::MyPortName => "myportname",
            AclType::LocalIp => "localip",
            AclType::Has => "has",
            AclType::Time => "time",
            AclType::External => "external",
            AclType::AtStep => "at_step",
            AclType::ServerName => "ssl::server_name",
            AclType::ServerNameRegex => "ssl::server_name_regex",
            AclType::MaxConn => "maxconn",
            AclType::Manager => "url_regex",
            AclType::Protected => "dst",
        }
    }

    /// Whether `opt` (a leading `-x` / `+x` flag) is accepted for this type, as in Squid 5.
    /// `-n` (no DNS lookups) is how proxyfleet always behaves, so it is accepted and changes
    /// nothing.
    pub fn accepts_flag(self, opt: &str) -> bool {
        match self {
            AclType::DstDomRegex => matches!(opt, "-i" | "+i" | "-n"),
            AclType::UrlRegex
            | AclType::UrlPathRegex
            | AclType::ProxyAuthRegex
            | AclType::Browser
            | AclType::RefererRegex
            | AclType::RepMimeType => matches!(opt, "-i" | "+i"),
            // Where the name comes from (the client's SNI, the server's certificate, their
            // agreement): here it is always the client's.
            AclType::ServerName => {
                matches!(
                    opt,
                    "--client-requested" | "--server-provided" | "--consensus"
                )
            }
            AclType::ServerNameRegex => matches!(
                opt,
                "-i" | "+i" | "--client-requested" | "--server-provided" | "--consensus"
            ),
            // Case-insensitive user names.
            AclType::ProxyAuth => opt == "-i",
            AclType::Dst | AclType::DstDomain => opt == "-n",
            _ => false,
        }
    }

    /// Whether `-i` / `+i` between values switch case sensitivity for the following values.
    pub fn is_regex(self) -> bool {
        matches!(
            self,
            AclType::DstDomRegex
                | AclType::UrlRegex
                | AclType::UrlPathRegex
                | AclType::ProxyAuthRegex
                | AclType::Browser
                | AclType::RefererRegex
                | AclType::ReqHeader
                | AclType::RepHeader
                | AclType::RepMimeType
                | AclType::ServerNameRegex
        )
    }

    /// Whether matching needs to know who the client is (`auth_param`).
    pub fn needs_login(self) -> bool {
        matches!(self, AclType::ProxyAuth | AclType::ProxyAuthRegex)
    }
}

/// The values of one ACL as they accumulate over its `acl` lines.
#[derive(Debug, Clone)]
pub struct AclBuilder {
    name: String,
    ty: AclType,
    values: Values,
}

#[derive(Debug, Clone)]
enum Values {
    Ip(IpSet),
    Domain(DomainSet),
    /// Patterns, each already wrapped for its case sensitivity.
    Regex(Vec<String>),
    Ports(Vec<(u16, u16)>),
    Words(Vec<Box<str>>),
    /// `proxy_auth`: `REQUIRED` (any user who logged in) or user names (lowercased when
    /// `-i` was given: then compared ignoring case).
    Users {
        required: bool,
        names: Vec<(Box<str>, bool)>,
    },
    /// `req_header` / `rep_header`: the field name (the first value), then patterns.
    Field {
        name: Option<Box<str>>,
        patterns: Vec<String>,
    },
    Times(Vec<super::TimeSpan>),
    /// `external`: the type (first value), whether it needs a login, the arguments.
    External {
        class: Option<(Box<str>, bool)>,
        args: Vec<String>,
    },
    Manager,
    Protected,
}

impl AclBuilder {
    pub fn new(name: &str, ty: AclType) -> AclBuilder {
        let values = match ty {
            AclType::Src | AclType::Dst => Values::Ip(IpSet::default()),
            AclType::DstDomain | AclType::ServerName => Values::Domain(DomainSet::default()),
            AclType::AtStep | AclType::MaxConn => Values::Words(Vec::new()),
            AclType::DstDomRegex
            | AclType::UrlRegex
            | AclType::UrlPathRegex
            | AclType::ProxyAuthRegex
            | AclType::Browser
            | AclType::RefererRegex
            | AclType::RepMimeType
            | AclType::ServerNameRegex => Values::Regex(Vec::new()),
            AclType::ReqHeader | AclType::RepHeader => Values::Field {
                name: None,
                patterns: Vec::new(),
            },
            AclType::LocalIp => Values::Ip(IpSet::default()),
            AclType::HttpStatus | AclType::MyPort => Values::Ports(Vec::new()),
            AclType::MyPortName | AclType::Has => Values::Words(Vec::new()),
            AclType::Time => Values::Times(Vec::new()),
            AclType::External => Values::External {
                class: None,
                args: Vec::new(),
            },
            AclType::ProxyAuth => Values::Users {
                required: false,
                names: Vec::new(),
            },
            AclType::Port => Values::Ports(Vec::new()),
            AclType::Method | AclType::Proto => Values::Words(Vec::new()),
            AclType::Manager => Values::Manager,
            AclType::Protected => Values::Protected,
        };
        AclBuilder {
            name: name.to_owned(),
            ty,
            values,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An `external` ACL's type (its first value), known to the caller, and whether that
    /// type needs the client's login (`%LOGIN`). False when already set: the values after
    /// the type are the ACL's arguments.
    pub fn set_external_class(&mut self, class: &str, needs_login: bool) -> bool {
        match &mut self.values {
            Values::External {
                class: c @ None, ..
            } => {
                *c = Some((class.into(), needs_login));
                true
            }
            _ => false,
        }
    }

    pub fn ty(&self) -> AclType {
        self.ty
    }

    /// Adds one value. `icase` only matters for regex types. The error describes the value's
    /// problem; the caller adds where it is.
    pub fn add(&mut self, value: &str, icase: bool) -> Result<(), String> {
        match &mut self.values {
            Values::Ip(set) => set.add(value),
            Values::Domain(set) => set.add(value),
            Values::Regex(patterns) => {
                patterns.push(checked_pattern(value, icase)?);
                Ok(())
            }
            Values::Field { name, patterns } => {
                match name {
                    None => *name = Some(value.to_ascii_lowercase().into()),
                    Some(_) => patterns.push(checked_pattern(value, icase)?),
                }
                Ok(())
            }
            Values::Times(spans) => super::time::add(spans, value),
            Values::External { class, args } => {
                match class {
                    None => return Err("external: set the type with set_external_class".into()),
                    Some(_) => args.push(value.to_string()),
                }
                Ok(())
            }
            Values::Ports(ranges) => {
                let range = parse_port_range(value)?;
                if self.ty == AclType::HttpStatus && (range.0 < 100 || range.1 > 999) {
                    return Err(format!("'{value}' is not an HTTP status code (100-999)"));
                }
                ranges.push(range);
                Ok(())
            }
            Values::Words(words) => {
                let word = match self.ty {
                    AclType::Proto => proto_value(value)?,
                    AclType::MaxConn => match value.parse::<usize>() {
                        Ok(_) if words.is_empty() => value.into(),
                        Ok(_) => return Err("maxconn takes one number".into()),
                        Err(_) => return Err(format!("'{value}' is not a number of connections")),
                    },
                    AclType::AtStep => match value {
                        "SslBump1" | "SslBump2" | "SslBump3" | "GeneratingCONNECT" => value.into(),
                        _ => {
                            return Err(format!(
                                "'{value}' is not an ssl_bump step (SslBump1, SslBump2, SslBump3)"
                            ))
                        }
                    },
                    AclType::Has => match value {
                        "request" | "response" | "ALE" => value.into(),
                        _ => {
                            return Err(format!(
                                "'{value}' is not a transaction part (request, response, ALE)"
                            ))
                        }
                    },
                    // Squid compares methods case-sensitively (RFC 9110 says they are).
                    _ => value.into(),
                };
                words.push(word);
                Ok(())
            }
            Values::Users { required, names } => {
                if value == "REQUIRED" {
                    *required = true;
                } else if icase {
                    names.push((value.to_lowercase().into(), true));
                } else {
                    names.push((value.into(), false));
                }
                Ok(())
            }
            Values::Manager => Err("the built-in 'manager' ACL takes no values".to_owned()),
            Values::Protected => Err("the built-in 'to_protected' ACL takes no values: use \
                 destination_guard_deny or destination_guard_allow"
                .to_owned()),
        }
    }

    /// `guard` is what the built-in `to_protected` matches.
    pub fn build(self, guard: &Arc<DestinationGuard>) -> Result<Acl, String> {
        let kind = match (self.ty, self.values) {
            (AclType::Src, Values::Ip(set)) => Kind::Src(set),
            (AclType::Dst, Values::Ip(set)) => Kind::Dst(set),
            (AclType::ServerName, Values::Domain(set)) => Kind::ServerName(set),
            (_, Values::Domain(set)) => Kind::DstDomain(set),
            (AclType::MaxConn, Values::Words(words)) => Kind::MaxConn(
                words
                    .first()
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| format!("acl '{}': maxconn needs a number", self.name))?,
            ),
            (AclType::AtStep, Values::Words(words)) => {
                Kind::AtStep(words.iter().fold(0, |m, w| {
                    match &**w {
                        "SslBump1" => m | 1 << 1,
                        "SslBump2" => m | 1 << 2,
                        "SslBump3" => m | 1 << 3,
                        // Squid's step for a CONNECT it makes itself to a parent: never here.
                        _ => m,
                    }
                }))
            }
            (ty, Values::Regex(patterns)) => {
                let set = RegexSet::new(&patterns)
                    .map_err(|e| format!("acl '{}': {}", self.name, regex_reason(&e)))?;
                let field = |reply, name: &str| Kind::Field {
                    reply,
                    name: name.into(),
                    set: set.clone(),
                };
                match ty {
                    AclType::UrlRegex => Kind::UrlRegex(set),
                    AclType::UrlPathRegex => Kind::UrlPathRegex(set),
                    AclType::ProxyAuthRegex => Kind::ProxyAuthRegex(set),
                    AclType::Browser => field(false, "user-agent"),
                    AclType::RefererRegex => field(false, "referer"),
                    AclType::RepMimeType => field(true, "content-type"),
                    AclType::ServerNameRegex => Kind::ServerNameRegex(set),
                    _ => Kind::DstDomRegex(set),
                }
            }
            (ty, Values::Field { name, patterns }) => {
                let name =
                    name.ok_or_else(|| format!("acl '{}': missing header name", self.name))?;
                if patterns.is_empty() {
                    return Err(format!(
                        "acl '{}': no pattern after the header name '{name}'",
                        self.name
                    ));
                }
                let set = RegexSet::new(&patterns)
                    .map_err(|e| format!("acl '{}': {}", self.name, regex_reason(&e)))?;
                Kind::Field {
                    reply: ty == AclType::RepHeader,
                    name,
                    set,
                }
            }
            (_, Values::Times(spans)) => Kind::Time(spans.into()),
            (_, Values::External { class, args }) => {
                let (class, needs_login) = class.ok_or_else(|| {
                    format!("acl '{}': missing external_acl_type name", self.name)
                })?;
                Kind::External {
                    class,
                    args: args.into(),
                    needs_login,
                }
            }
            (AclType::LocalIp, Values::Ip(set)) => Kind::LocalIp(set),
            (AclType::HttpStatus, Values::Ports(ranges)) => Kind::HttpStatus(ranges.into()),
            (AclType::MyPort, Values::Ports(ranges)) => Kind::MyPort(ranges.into()),
            (AclType::MyPortName, Values::Words(words)) => Kind::MyPortName(words.into()),
            (AclType::Has, Values::Words(words)) => Kind::Has(words.into()),
            (_, Values::Users { required, names }) => Kind::ProxyAuth {
                any: required,
                names: names.into(),
            },
            (_, Values::Ports(ranges)) => Kind::Port(ranges.into()),
            (AclType::Method, Values::Words(words)) => Kind::Method(words.into()),
            (_, Values::Words(words)) => Kind::Proto(words.into()),
            (_, Values::Manager) => Kind::Manager,
            (_, Values::Protected) => Kind::Protected(Arc::clone(guard)),
            (ty, values) => unreachable!("acl type {ty:?} built with {values:?}"),
        };
        Ok(Acl {
            name: self.name,
            kind,
        })
    }

    /// Squid 5's predefined ACLs. A user `acl` line with one of these names and the same type
    /// adds values to it.
    pub fn builtins() -> Vec<AclBuilder> {
        let ip = |name: &str, ty, values: &[&str]| AclBuilder {
            name: name.to_owned(),
            ty,
            values: Values::Ip(ip::builtin(values)),
        };
        vec![
            ip("all", AclType::Src, &["0.0.0.0/0", "::/0"]),
            ip("localhost", AclType::Src, &["127.0.0.1/32", "::1"]),
            ip(
                "to_localhost",
                AclType::Dst,
                &["127.0.0.0/8", "0.0.0.0/32", "::1/128", "::/128"],
            ),
            ip(
                "to_linklocal",
                AclType::Dst,
                &["169.254.0.0/16", "fe80::/10"],
            ),
            AclBuilder {
                name: "CONNECT".to_owned(),
                ty: AclType::Method,
                values: Values::Words(vec!["CONNECT".into()]),
            },
            AclBuilder::new("manager", AclType::Manager),
            AclBuilder::new("to_protected", AclType::Protected),
        ]
    }
}

/// A pattern wrapped for its case sensitivity, checked to compile.
fn checked_pattern(value: &str, icase: bool) -> Result<String, String> {
    let pattern = if icase {
        format!("(?i:{value})")
    } else {
        format!("(?:{value})")
    };
    Regex::new(&pattern).map_err(|e| {
        format!(
            "'{value}' is not a valid regular expression: {}",
            regex_reason(&e)
        )
    })?;
    Ok(pattern)
}

/// `N` or `N-M`, both within 0-65535.
fn parse_port_range(value: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| -> Result<u16, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "'{value}' is not a port or port range (expected N or N-M)"
            ));
        }
        s.parse()
            .map_err(|_| format!("'{value}': port numbers go up to 65535"))
    };
    let (lo, hi) = match value.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => {
            let p = port(value)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("'{value}': the range ends before it starts"));
    }
    Ok((lo, hi))
}

/// URL schemes compare case-insensitively. CONNECT requests have no scheme; Squid names
/// that `NONE` (up to 4) or `AUTHORITY_FORM` (5), so both stand for "no scheme" here.
fn proto_value(value: &str) -> Result<Box<str>, String> {
    let valid = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'));
    if value.is_empty() || !valid {
        return Err(format!("'{value}' is not a protocol (URL scheme) name"));
    }
    let lower = value.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "none" | "authority_form" => "".into(),
        _ => lower.into(),
    })
}

/// The regex crate's syntax errors span several lines (pattern, caret, reason); keep the
/// reason so the config error stays on one line.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or_default())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Facts;

    fn facts<'a>(host: &'a str, scheme: &'a str, method: &'a str, port: u16) -> Facts<'a> {
        Facts {
            client: "127.0.0.1".parse().unwrap(),
            method,
            scheme,
            host,
            port,
            path: "/",
            dst_ips: &[],
            ..Facts::connection(std::net::Ipv4Addr::UNSPECIFIED.into())
        }
    }

    fn acl(ty: AclType, values: &[(&str, bool)]) -> Acl {
        let mut b = AclBuilder::new("t", ty);
        for (v, icase) in values {
            b.add(v, *icase).unwrap();
        }
        b.build(&Arc::default()).unwrap()
    }

    #[test]
    fn type_names_round_trip() {
        for ty in AclType::USABLE {
            assert_eq!(AclType::from_name(ty.name()), Some(*ty));
        }
        assert_eq!(AclType::from_name("myip"), Some(AclType::LocalIp));
        assert_eq!(AclType::from_name("arp"), None);
        assert_eq!(AclType::from_name("SRC"), None);
    }

    #[test]
    fn regex_case_follows_the_flag_in_force() {
        let a = acl(
            AclType::DstDomRegex,
            &[(r"^www\.Example\.", true), (r"\.Org$", false)],
        );
        assert!(a.matches(&facts("www.example.com", "http", "GET", 80)));
        assert!(!a.matches(&facts("example.org", "http", "GET", 80)));
        assert!(a.matches(&facts("example.Org", "http", "GET", 80)));
        // Unknown host (connection-level checks) never matches a pattern, even `.*`.
        let any = acl(AclType::DstDomRegex, &[(".*", false)]);
        assert!(!any.matches(&facts("", "", "", 0)));
    }

    #[test]
    fn bad_regex_is_reported_on_one_line() {
        let mut b = AclBuilder::new("t", AclType::DstDomRegex);
        assert_eq!(
            b.add("(foo", false).unwrap_err(),
            "'(foo' is not a valid regular expression: unclosed group"
        );
    }

    #[test]
    fn ports_and_ranges() {
        let a = acl(AclType::Port, &[("80", false), ("1025-65535", false)]);
        assert!(a.matches(&facts("h", "http", "GET", 80)));
        assert!(a.matches(&facts("h", "http", "GET", 1025)));
        assert!(a.matches(&facts("h", "http", "GET", 65535)));
        assert!(!a.matches(&facts("h", "http", "GET", 443)));
        assert!(!a.matches(&facts("h", "http", "GET", 0)));
        let mut b = AclBuilder::new("t", AclType::Port);
        assert_eq!(
            b.add("80-70", false).unwrap_err(),
            "'80-70': the range ends before it starts"
        );
        assert_eq!(
            b.add("65536", false).unwrap_err(),
            "'65536': port numbers go up to 65535"
        );
        assert_eq!(
            b.add("http", false).unwrap_err(),
            "'http' is not a port or port range (expected N or N-M)"
        );
    }

    #[test]
    fn methods_are_case_sensitive() {
        let a = acl(AclType::Method, &[("GET", false)]);
        assert!(a.matches(&facts("h", "http", "GET", 80)));
        assert!(!a.matches(&facts("h", "http", "get", 80)));
    }

    #[test]
    fn proto_is_case_insensitive_and_none_means_connect() {
        let a = acl(AclType::Proto, &[("HTTP", false)]);
        assert!(a.matches(&facts("h", "http", "GET", 80)));
        assert!(!a.matches(&facts("h", "ftp", "GET", 21)));
        assert!(!a.matches(&facts("h", "", "CONNECT", 443)));
        let a = acl(AclType::Proto, &[("NONE", false)]);
        assert!(a.matches(&facts("h", "", "CONNECT", 443)));
        let a = acl(AclType::Proto, &[("authority_form", false)]);
        assert!(a.matches(&facts("h", "", "CONNECT", 443)));
        let mut b = AclBuilder::new("t", AclType::Proto);
        assert_eq!(
            b.add("ht tp", false).unwrap_err(),
            "'ht tp' is not a protocol (URL scheme) name"
        );
    }

    #[test]
    fn builtins_are_squid5s() {
        let built: Vec<Acl> = AclBuilder::builtins()
            .into_iter()
            .map(|b| b.build(&Arc::default()).unwrap())
            .collect();
        let names: Vec<&str> = built.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "all",
                "localhost",
                "to_localhost",
                "to_linklocal",
                "CONNECT",
                "manager",
                "to_protected"
            ],
            "Squid 5's, and proxyfleet's to_protected"
        );
        let manager = &built[5];
        let mut f = facts("h", "cache_object", "GET", 80);
        assert!(manager.matches(&f));
        f.scheme = "http";
        assert!(!manager.matches(&f));
        f.path = "/squid-internal-mgr/info";
        assert!(manager.matches(&f));
        assert_eq!(built[5].type_name(), "url_regex");
    }

    #[test]
    fn flags_per_type() {
        assert!(AclType::DstDomRegex.accepts_flag("-i"));
        assert!(AclType::DstDomain.accepts_flag("-n"));
        assert!(!AclType::DstDomain.accepts_flag("-i"));
        assert!(!AclType::Port.accepts_flag("-n"));
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;
    use crate::acl::Facts;
    use crate::http::head::Head;

    fn head(text: &str, request: bool) -> Head {
        let mut buf = bytes::BytesMut::from(text.as_bytes());
        if request {
            Head::parse_request(&mut buf, 65536).unwrap().unwrap()
        } else {
            Head::parse_response(&mut buf, 65536).unwrap().unwrap()
        }
    }

    fn acl(ty: AclType, values: &[&str], icase: bool) -> Acl {
        let mut b = AclBuilder::new("t", ty);
        for v in values {
            b.add(v, icase).unwrap();
        }
        b.build(&Arc::default()).unwrap()
    }

    #[test]
    fn request_and_reply_field_acls() {
        let req = head(
            "GET http://h/ HTTP/1.1\r\nUser-Agent: Wget/1.21\r\nReferer: http://ads.test/x\r\nX-Team: blue\r\n\r\n",
            true,
        );
        let rep = head(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/x-msdownload\r\nServer: Apache\r\n\r\n",
            false,
        );
        let f = Facts {
            request: Some(&req),
            ..Facts::connection("127.0.0.1".parse().unwrap())
        };
        let with_reply = Facts {
            reply: Some(&rep),
            ..f
        };
        assert!(acl(AclType::Browser, &["^wget"], true).matches(&f));
        assert!(!acl(AclType::Browser, &["^wget"], false).matches(&f));
        assert!(acl(AclType::RefererRegex, &["ads\\.test"], false).matches(&f));
        assert!(acl(AclType::ReqHeader, &["X-Team", "^blue$"], false).matches(&f));
        assert!(!acl(AclType::ReqHeader, &["X-Other", "."], false).matches(&f));
        let mime = acl(AclType::RepMimeType, &["^application/x-msdownload$"], false);
        assert!(!mime.matches(&f), "no reply yet");
        assert!(mime.matches(&with_reply));
        assert!(acl(AclType::RepHeader, &["Server", "apache"], true).matches(&with_reply));
        let status = acl(AclType::HttpStatus, &["400-499"], false);
        assert!(status.matches(&with_reply) && !status.matches(&f));
        let has = acl(AclType::Has, &["response"], false);
        assert!(has.matches(&with_reply) && !has.matches(&f));
        let mut b = AclBuilder::new("t", AclType::HttpStatus);
        assert!(b.add("99", false).is_err());
        let b = AclBuilder::new("t", AclType::ReqHeader);
        assert!(b
            .build(&Arc::default())
            .unwrap_err()
            .contains("missing header name"));
    }

    #[test]
    fn local_address_and_port_acls() {
        let f = Facts {
            local: Some("127.0.0.1:3128".parse().unwrap()),
            port_name: "inside",
            ..Facts::connection("127.0.0.1".parse().unwrap())
        };
        assert!(acl(AclType::MyPort, &["3128"], false).matches(&f));
        assert!(!acl(AclType::MyPort, &["8080"], false).matches(&f));
        assert!(acl(AclType::LocalIp, &["127.0.0.0/8"], false).matches(&f));
        assert!(acl(AclType::MyPortName, &["inside"], false).matches(&f));
        assert!(!acl(AclType::MyPortName, &["outside"], false).matches(&f));
    }
}
