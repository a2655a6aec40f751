//! ACLs and the access rule lists that use them, with Squid's semantics.
//!
//! - [`Facts`]: what is known about one transaction (or connection);
//! - [`Acl`]: one named ACL (`acl NAME TYPE VALUE...`), built by [`AclBuilder`];
//! - [`AclList`]: the ANDed, possibly negated ACL names on one directive line;
//! - [`AccessRules`]: `http_access`-style allow/deny lines, first match wins.
//!
//! Everything is precomputed when the configuration is read; evaluation allocates nothing.

mod build;
mod domain;
mod ip;
mod time;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use regex::RegexSet;

use crate::config::Location;
use crate::guard::DestinationGuard;
use crate::http::head::Head;

pub use build::{AclBuilder, AclType};

use domain::DomainSet;
use ip::IpSet;
pub use time::TimeSpan;

/// What ACLs are evaluated against: one transaction (or, for proxy_protocol_access, just a
/// connection).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Already normalized (IPv4-mapped IPv6 -> IPv4 done by caller).
    pub client: IpAddr,
    /// `""` when unknown (connection-level checks).
    pub method: &'a str,
    /// Lowercase URL scheme, `""` for CONNECT / unknown.
    pub scheme: &'a str,
    /// Lowercase host without brackets/port; `""` when unknown.
    pub host: &'a str,
    /// 0 when unknown.
    pub port: u16,
    /// URL path, `""` when unknown.
    pub path: &'a str,
    /// Resolved destination addresses (an IP-literal host's own address); empty when unknown.
    pub dst_ips: &'a [IpAddr],
    /// The URL as the client sent it (`host:port` for CONNECT); `""` when unknown.
    pub url: &'a str,
    /// Who the client proved to be, if it was asked.
    pub login: Login<'a>,
    /// The request head (`req_header`, `browser`, `referer_regex`, `has request`).
    pub request: Option<&'a Head>,
    /// The reply head, in `http_reply_access` and `reply_header_*` (`rep_header`,
    /// `rep_mime_type`, `http_status`); `None` before the reply.
    pub reply: Option<&'a Head>,
    /// The proxy address the client connected to (`myip`/`localip`, `myport`).
    pub local: Option<SocketAddr>,
    /// The `http_port`'s `name=` (default: its address as written) for `myportname`.
    pub port_name: &'a str,
    /// `external` ACLs' answers so far, by ACL name.
    pub external: &'a [(String, bool)],
    /// The server name the TLS client asked for, once peeked at (`ssl::server_name`).
    pub sni: Option<&'a str>,
    /// The `ssl_bump` step being judged (1 to 3), 0 outside `ssl_bump` (`at_step`).
    pub bump_step: u8,
    /// The client's open connections, this one included (`maxconn`); 0 when unknown.
    pub client_connections: usize,
    /// The `tag=` an external ACL's helper answered, if any (class 5 delay pools, `%et`).
    pub tag: Option<&'a str>,
}

/// What is known of the client's identity (`auth_param` and `proxy_auth` ACLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Login<'a> {
    /// No `proxy_auth` ACL was reached yet: the credentials were not checked.
    #[default]
    Unchecked,
    /// Credentials missing, wrong, or the helper could not say: Squid challenges (407).
    Failed,
    /// The helper accepted these credentials for this user name.
    User(&'a str),
}

impl Facts<'_> {
    /// What a connection-level check (`proxy_protocol_access`) knows: only the sender.
    pub fn connection(client: IpAddr) -> Facts<'static> {
        Facts {
            client,
            method: "",
            scheme: "",
            host: "",
            port: 0,
            path: "",
            dst_ips: &[],
            url: "",
            login: Login::Unchecked,
            request: None,
            reply: None,
            local: None,
            port_name: "",
            external: &[],
            sni: None,
            bump_step: 0,
            client_connections: 0,
            tag: None,
        }
    }
}

/// One named ACL.
pub struct Acl {
    pub name: String,
    kind: Kind,
}

enum Kind {
    Src(IpSet),
    Dst(IpSet),
    DstDomain(DomainSet),
    DstDomRegex(RegexSet),
    Port(Box<[(u16, u16)]>),
    Method(Box<[Box<str>]>),
    /// Lowercase schemes; `""` stands for CONNECT's missing scheme.
    Proto(Box<[Box<str>]>),
    UrlRegex(RegexSet),
    UrlPathRegex(RegexSet),
    /// `any`: `REQUIRED`; names with whether they compare ignoring case.
    ProxyAuth {
        any: bool,
        names: Box<[(Box<str>, bool)]>,
    },
    ProxyAuthRegex(RegexSet),
    /// A request field (or a reply field, with `reply`) by lowercase name, by pattern:
    /// `req_header`, `rep_header`, `browser`, `referer_regex`, `rep_mime_type`.
    Field {
        reply: bool,
        name: Box<str>,
        set: RegexSet,
    },
    HttpStatus(Box<[(u16, u16)]>),
    MyPort(Box<[(u16, u16)]>),
    MyPortName(Box<[Box<str>]>),
    LocalIp(IpSet),
    /// `request`, `response`, `ALE`.
    Has(Box<[Box<str>]>),
    Time(Box<[TimeSpan]>),
    /// `at_step SslBump1..3`: bit N set for step N.
    AtStep(u8),
    /// `maxconn N`: the client has more than N connections open.
    MaxConn(usize),
    /// `ssl::server_name`: the peeked server name, or before it the CONNECT host.
    ServerName(DomainSet),
    ServerNameRegex(RegexSet),
    External {
        class: Box<str>,
        args: Box<[String]>,
        needs_login: bool,
    },
    Manager,
    /// The built-in `to_protected`: any destination address the guard protects.
    Protected(Arc<DestinationGuard>),
    /// Internal: several ACLs ANDed, so that a whole list can be negated (used to express
    /// `access_log none A B` as `!(A B)` on the lines after it).
    AllOf(AclList),
}

impl Acl {
    /// An internal ACL matching when every ACL of `list` does.
    pub(crate) fn all_of(name: String, list: AclList) -> Acl {
        Acl {
            name,
            kind: Kind::AllOf(list),
        }
    }

    pub fn matches(&self, f: &Facts) -> bool {
        match &self.kind {
            Kind::Src(set) => set.contains(f.client),
            // No addresses known means no match, never "match anything".
            Kind::Dst(set) => f.dst_ips.iter().any(|ip| set.contains(*ip)),
            Kind::DstDomain(set) => set.contains(f.host),
            Kind::DstDomRegex(set) => !f.host.is_empty() && set.is_match(f.host),
            Kind::Port(ranges) => {
                f.port != 0 && ranges.iter().any(|&(lo, hi)| lo <= f.port && f.port <= hi)
            }
            Kind::Method(methods) => {
                !f.method.is_empty() && methods.iter().any(|m| **m == *f.method)
            }
            Kind::Proto(schemes) => schemes.iter().any(|s| **s == *f.scheme),
            Kind::UrlRegex(set) => !f.url.is_empty() && set.is_match(f.url),
            Kind::UrlPathRegex(set) => !f.path.is_empty() && set.is_match(f.path),
            Kind::ProxyAuth { any, names } => match f.login {
                Login::User(user) => {
                    // `-i` names are stored lowercased.
                    *any || names.iter().any(|(name, icase)| {
                        if *icase {
                            **name == *user.to_lowercase()
                        } else {
                            **name == *user
                        }
                    })
                }
                _ => false,
            },
            Kind::ProxyAuthRegex(set) => match f.login {
                Login::User(user) => set.is_match(user),
                _ => false,
            },
            Kind::Field { reply, name, set } => {
                let head = if *reply { f.reply } else { f.request };
                head.is_some_and(|h| {
                    h.values(name)
                        .any(|v| set.is_match(&String::from_utf8_lossy(v)))
                })
            }
            Kind::HttpStatus(ranges) => f.reply.is_some_and(|r| {
                ranges
                    .iter()
                    .any(|&(lo, hi)| lo <= r.status && r.status <= hi)
            }),
            Kind::MyPort(ranges) => f.local.is_some_and(|l| {
                ranges
                    .iter()
                    .any(|&(lo, hi)| lo <= l.port() && l.port() <= hi)
            }),
            Kind::MyPortName(names) => names.iter().any(|n| **n == *f.port_name),
            Kind::LocalIp(set) => f
                .local
                .is_some_and(|l| set.contains(crate::proxy_protocol::normalize(l.ip()))),
            Kind::Has(parts) => parts.iter().all(|p| match &**p {
                "request" | "ALE" => f.request.is_some(),
                _ => f.reply.is_some(),
            }),
            Kind::Time(spans) => time::now_within(spans),
            Kind::AtStep(steps) => f.bump_step != 0 && steps & (1 << f.bump_step) != 0,
            Kind::MaxConn(n) => f.client_connections > *n,
            Kind::ServerName(set) => set.contains(f.sni.unwrap_or(f.host)),
            Kind::ServerNameRegex(set) => {
                let name = f.sni.unwrap_or(f.host);
                !name.is_empty() && set.is_match(name)
            }
            // Not asked yet (a fast check, or one the slow check has not reached): no match.
            Kind::External { .. } => f
                .external
                .iter()
                .find(|(name, _)| *name == self.name)
                .is_some_and(|(_, matched)| *matched),
            // Squid 5: `url_regex -i ^cache_object:// +i ^[^:]+://[^/]+/squid-internal-mgr/`.
            Kind::Manager => {
                f.scheme == "cache_object" || f.path.starts_with("/squid-internal-mgr/")
            }
            Kind::Protected(guard) => f.dst_ips.iter().any(|ip| guard.protects(*ip).is_some()),
            Kind::AllOf(list) => list.matches(f),
        }
    }

    /// Whether evaluating this ACL needs the destination's resolved addresses, so callers
    /// resolve the host only when some rule can use the result.
    pub fn needs_dst_ips(&self) -> bool {
        match &self.kind {
            Kind::Dst(_) | Kind::Protected(_) => true,
            Kind::AllOf(list) => list.needs_dst_ips(),
            _ => false,
        }
    }

    /// Whether evaluating this ACL needs the client's identity (a `proxy_auth` type).
    pub fn needs_login(&self) -> bool {
        match &self.kind {
            Kind::ProxyAuth { .. } | Kind::ProxyAuthRegex(_) => true,
            Kind::External { needs_login, .. } => *needs_login,
            Kind::AllOf(list) => list.0.iter().any(|r| r.acl.needs_login()),
            _ => false,
        }
    }

    /// An `external` ACL's type and arguments.
    pub fn external_class(&self) -> Option<(&str, &[String])> {
        match &self.kind {
            Kind::External { class, args, .. } => Some((class, args)),
            _ => None,
        }
    }

    /// The squid.conf type name (`url_regex` for the built-in `manager`).
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Src(_) => AclType::Src.name(),
            Kind::Dst(_) => AclType::Dst.name(),
            Kind::DstDomain(_) => AclType::DstDomain.name(),
            Kind::DstDomRegex(_) => AclType::DstDomRegex.name(),
            Kind::Port(_) => AclType::Port.name(),
            Kind::Method(_) => AclType::Method.name(),
            Kind::Proto(_) => AclType::Proto.name(),
            Kind::UrlRegex(_) => AclType::UrlRegex.name(),
            Kind::UrlPathRegex(_) => AclType::UrlPathRegex.name(),
            Kind::ProxyAuth { .. } => AclType::ProxyAuth.name(),
            Kind::ProxyAuthRegex(_) => AclType::ProxyAuthRegex.name(),
            Kind::Field { reply: false, .. } => AclType::ReqHeader.name(),
            Kind::Field { reply: true, .. } => AclType::RepHeader.name(),
            Kind::HttpStatus(_) => AclType::HttpStatus.name(),
            Kind::MyPort(_) => AclType::MyPort.name(),
            Kind::MyPortName(_) => AclType::MyPortName.name(),
            Kind::LocalIp(_) => AclType::LocalIp.name(),
            Kind::Has(_) => AclType::Has.name(),
            Kind::Time(_) => AclType::Time.name(),
            Kind::External { .. } => AclType::External.name(),
            Kind::AtStep(_) => AclType::AtStep.name(),
            Kind::MaxConn(_) => AclType::MaxConn.name(),
            Kind::ServerName(_) => AclType::ServerName.name(),
            Kind::ServerNameRegex(_) => AclType::ServerNameRegex.name(),
            Kind::Manager => AclType::Manager.name(),
            Kind::Protected(_) => AclType::Protected.name(),
            Kind::AllOf(_) => "all-of",
        }
    }
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Acl");
        s.field("name", &self.name).field("type", &self.type_name());
        if let Kind::AllOf(list) = &self.kind {
            s.field("all_of", list);
        }
        s.finish()
    }
}

/// One ACL name on a directive line, possibly negated with `!`.
#[derive(Clone, Debug)]
pub struct AclRef {
    pub negate: bool,
    pub acl: Arc<Acl>,
}

impl AclRef {
    pub fn matches(&self, f: &Facts) -> bool {
        self.acl.matches(f) != self.negate
    }
}

/// An ANDed list of ACLs (used by access_log and tcp_outgoing_address lines). Empty matches
/// everything.
#[derive(Clone, Debug, Default)]
pub struct AclList(pub Vec<AclRef>);

impl AclList {
    pub fn matches(&self, f: &Facts) -> bool {
        self.0.iter().all(|r| r.matches(f))
    }

    pub fn needs_dst_ips(&self) -> bool {
        self.0.iter().any(|r| r.acl.needs_dst_ips())
    }
}

/// What [`AccessRules::check`] found.
/// `http_access`'s answer is reached without the destination's addresses when no line up
/// to the deciding one has a `dst` ACL, and the host is then never looked up (Squid's
/// behaviour too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Allow,
    Deny,
    /// Denied, asking for credentials: 407 with `Proxy-Authenticate`.
    Challenge,
    /// Resolve the destination, then check again.
    NeedsDst,
    /// Check the client's credentials, then check again.
    NeedsLogin,
    /// Ask an `external` ACL's helper ([`AccessRules::check_external`] says which), then
    /// check again.
    NeedsExternal,
}

/// One `http_access allow|deny ...` (or `proxy_protocol_access`) line.
#[derive(Clone, Debug)]
pub struct AccessRule {
    pub allow: bool,
    pub acls: AclList,
    pub location: Location,
}

/// The lines of one access directive, in file order.
#[derive(Clone, Debug, Default)]
pub struct AccessRules {
    pub rules: Vec<AccessRule>,
}

impl AccessRules {
    /// Squid's http_access semantics: lines in order, first line whose ACLs all match decides;
    /// when no line matches, the opposite of the last line's action; no lines at all = deny.
    pub fn allows(&self, f: &Facts) -> bool {
        self.decide(f).0
    }

    /// Same, but also returns the deciding line (None for the default) for debug logs.
    pub fn decide(&self, f: &Facts) -> (bool, Option<&AccessRule>) {
        if let Some(rule) = self.rules.iter().find(|r| r.acls.matches(f)) {
            return (rule.allow, Some(rule));
        }
        match self.rules.last() {
            Some(last) => (!last.allow, None),
            None => (false, None),
        }
    }

    /// Squid's evaluation with both things that may be missing: in order, stopping at the
    /// first `dst` ACL reached without addresses ([`Check::NeedsDst`]) and at the first
    /// `proxy_auth` ACL reached before the credentials were checked ([`Check::NeedsLogin`]).
    /// A `proxy_auth` ACL reached with failed credentials challenges at once, whatever its
    /// negation; a deny line whose last ACL is a `proxy_auth` one challenges too (Squid's
    /// `http_access deny !authenticated` asks for credentials again).
    pub fn check(&self, f: &Facts) -> Check {
        self.check_external(f).0
    }

    /// [`Self::check`], with the `external` ACL to ask when the answer is
    /// [`Check::NeedsExternal`].
    pub fn check_external(&self, f: &Facts) -> (Check, Option<&Acl>) {
        let done = |c| (c, None);
        'rules: for rule in &self.rules {
            for r in &rule.acls.0 {
                if f.dst_ips.is_empty() && r.acl.needs_dst_ips() {
                    return done(Check::NeedsDst);
                }
                if r.acl.needs_login() {
                    match f.login {
                        Login::Unchecked => return done(Check::NeedsLogin),
                        Login::Failed => return done(Check::Challenge),
                        Login::User(_) => {}
                    }
                }
                if r.acl.external_class().is_some()
                    && !f.external.iter().any(|(name, _)| *name == r.acl.name)
                {
                    return (Check::NeedsExternal, Some(&r.acl));
                }
                if !r.matches(f) {
                    continue 'rules;
                }
            }
            if rule.allow {
                return done(Check::Allow);
            }
            let last_is_login = rule.acls.0.last().is_some_and(|r| r.acl.needs_login());
            return done(if last_is_login {
                Check::Challenge
            } else {
                Check::Deny
            });
        }
        done(match self.rules.last() {
            Some(last) if !last.allow => Check::Allow,
            _ => Check::Deny,
        })
    }

    /// Whether any rule names a `proxy_auth` ACL.
    pub fn needs_login(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.acls.0.iter().any(|a| a.acl.needs_login()))
    }

    /// Whether any referenced ACL (built-ins such as `to_localhost` included) is a `dst` ACL.
    pub fn needs_dst_ips(&self) -> bool {
        self.rules.iter().any(|r| r.acls.needs_dst_ips())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_needed_only_when_a_dst_acl_is_reached() {
        let app = build("app", AclType::Src, &["127.20.0.0/16"]);
        let net = build("net", AclType::Dst, &["127.30.0.0/16"]);
        let rules = AccessRules {
            rules: vec![
                AccessRule {
                    allow: false,
                    acls: list(&[(true, &app)]),
                    location: loc(),
                },
                AccessRule {
                    allow: true,
                    acls: list(&[(false, &net)]),
                    location: loc(),
                },
            ],
        };
        let mut f = facts_from("127.99.0.1");
        assert_eq!(rules.check(&f), Check::Deny, "decided by the src line");
        f.client = "127.20.0.1".parse().unwrap();
        assert_eq!(rules.check(&f), Check::NeedsDst, "the dst line is reached");
        let ips = ["127.30.0.5".parse().unwrap()];
        f.dst_ips = &ips;
        assert_eq!(rules.check(&f), Check::Allow);
    }

    fn loc() -> Location {
        Location {
            file: "t.conf".into(),
            line: 1,
            column: 1,
        }
    }

    fn facts_from(client: &str) -> Facts<'static> {
        Facts {
            client: client.parse().unwrap(),
            method: "GET",
            scheme: "http",
            host: "h.test",
            port: 80,
            path: "/",
            dst_ips: &[],
            ..Facts::connection(std::net::Ipv4Addr::UNSPECIFIED.into())
        }
    }

    fn build(name: &str, ty: AclType, values: &[&str]) -> Arc<Acl> {
        let mut b = AclBuilder::new(name, ty);
        for v in values {
            b.add(v, false).unwrap();
        }
        Arc::new(b.build(&Arc::default()).unwrap())
    }

    fn list(refs: &[(bool, &Arc<Acl>)]) -> AclList {
        AclList(
            refs.iter()
                .map(|(negate, acl)| AclRef {
                    negate: *negate,
                    acl: Arc::clone(acl),
                })
                .collect(),
        )
    }

    fn rule(line: usize, allow: bool, acls: AclList) -> AccessRule {
        AccessRule {
            allow,
            acls,
            location: Location {
                file: "t.conf".into(),
                line,
                column: 1,
            },
        }
    }

    fn from(client: &str) -> Facts<'static> {
        Facts {
            client: client.parse().unwrap(),
            method: "GET",
            scheme: "http",
            host: "example.com",
            port: 80,
            path: "/",
            dst_ips: &[],
            ..Facts::connection(std::net::Ipv4Addr::UNSPECIFIED.into())
        }
    }

    #[test]
    fn first_matching_line_decides() {
        let lan = build("lan", AclType::Src, &["10.0.0.0/8"]);
        let bad = build("bad", AclType::Src, &["10.0.0.66"]);
        let rules = AccessRules {
            rules: vec![
                rule(1, false, list(&[(false, &bad)])),
                rule(2, true, list(&[(false, &lan)])),
            ],
        };
        let (allowed, by) = rules.decide(&from("10.0.0.66"));
        assert!(!allowed);
        assert_eq!(by.unwrap().location.line, 1);
        let (allowed, by) = rules.decide(&from("10.0.0.5"));
        assert!(allowed);
        assert_eq!(by.unwrap().location.line, 2);
    }

    #[test]
    fn no_match_means_opposite_of_last_line() {
        let lan = build("lan", AclType::Src, &["10.0.0.0/8"]);
        let allow_last = AccessRules {
            rules: vec![rule(1, true, list(&[(false, &lan)]))],
        };
        let (allowed, by) = allow_last.decide(&from("192.0.2.1"));
        assert!(!allowed);
        assert!(by.is_none());
        let deny_last = AccessRules {
            rules: vec![rule(1, false, list(&[(false, &lan)]))],
        };
        let (allowed, by) = deny_last.decide(&from("192.0.2.1"));
        assert!(allowed);
        assert!(by.is_none());
    }

    #[test]
    fn no_lines_deny() {
        let rules = AccessRules::default();
        assert!(rules.is_empty());
        assert!(!rules.allows(&from("127.0.0.1")));
    }

    #[test]
    fn negation_and_conjunction() {
        let lan = build("lan", AclType::Src, &["10.0.0.0/8"]);
        let safe = build("safe", AclType::Port, &["80", "443"]);
        // deny lan !safe; allow lan
        let rules = AccessRules {
            rules: vec![
                rule(1, false, list(&[(false, &lan), (true, &safe)])),
                rule(2, true, list(&[(false, &lan)])),
            ],
        };
        let mut f = from("10.1.1.1");
        assert!(rules.allows(&f));
        f.port = 8080;
        assert!(!rules.allows(&f));
        assert!(list(&[]).matches(&f), "an empty list matches everything");
    }

    #[test]
    fn dst_needs_addresses_and_does_not_match_without_them() {
        let to_lo = build("to_lo", AclType::Dst, &["127.0.0.0/8"]);
        let lan = build("lan", AclType::Src, &["10.0.0.0/8"]);
        let mut f = from("10.0.0.1");
        assert!(!to_lo.matches(&f));
        let ips = ["192.0.2.1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        f.dst_ips = &ips;
        assert!(to_lo.matches(&f), "any resolved address may match");

        let rules = AccessRules {
            rules: vec![rule(1, false, list(&[(true, &to_lo)]))],
        };
        assert!(rules.needs_dst_ips());
        let rules = AccessRules {
            rules: vec![rule(1, false, list(&[(false, &lan)]))],
        };
        assert!(!rules.needs_dst_ips());
    }

    #[test]
    fn all_of_negates_a_whole_list() {
        let lan = build("lan", AclType::Src, &["10.0.0.0/8"]);
        let get = build("get", AclType::Method, &["GET"]);
        let to_lo = build("to_lo", AclType::Dst, &["127.0.0.0/8"]);
        let both = Arc::new(Acl::all_of(
            "none".into(),
            list(&[(false, &lan), (false, &get), (true, &to_lo)]),
        ));
        let not_both = list(&[(true, &both)]);
        let mut f = from("10.0.0.1");
        assert!(!not_both.matches(&f));
        f.method = "POST";
        assert!(not_both.matches(&f));
        assert!(not_both.needs_dst_ips());
        assert!(format!("{:?}", both).contains("all_of"));
    }

    #[test]
    fn dstdomain_on_ip_literal_compares_text() {
        let d = build("d", AclType::DstDomain, &[".example.com", "192.0.2.7"]);
        let mut f = from("10.0.0.1");
        f.host = "www.example.com";
        assert!(d.matches(&f));
        f.host = "192.0.2.7";
        assert!(d.matches(&f));
        f.host = "192.0.2.8";
        assert!(!d.matches(&f));
    }
}
