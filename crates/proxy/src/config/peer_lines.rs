//! `cache_peer HOST parent|sibling HTTP_PORT ICP_PORT [OPTION...]`, `cache_peer_access NAME
//! allow|deny [!]acl...`, `always_direct` / `never_direct`, `prefer_direct`,
//! `nonhierarchical_direct` (the choice itself: [`crate::peers`]).

use std::time::Duration;

use base64::Engine as _;

use super::parse::{Directive, Parser, PendingRule};
use super::units;
use super::ConfigError;
use crate::config::Location;
use crate::peers::PeerLogin;

/// One `cache_peer` line as read.
pub(super) struct PendingPeer {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub parent: bool,
    pub login: Option<PeerLogin>,
    pub default: bool,
    pub round_robin: bool,
    pub origin_server: bool,
    pub forced_domain: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub access: Vec<PendingRule>,
    pub location: Location,
}

/// Options that change nothing here, with why: ICP/HTCP/digests (no sibling protocol),
/// cache behaviour (no cache), and health probes (a parent that cannot be connected to is
/// skipped at once, for each request).
const NO_EFFECT: &[&str] = &[
    "proxy-only",
    "no-query",
    "no-digest",
    "no-netdb-exchange",
    "no-delay",
    "closest-only",
    "background-ping",
    "allow-miss",
    "no-tproxy",
    "htcp",
    "htcp-oldsquid",
    "htcp-no-clr",
    "htcp-no-purge-clr",
    "htcp-only-clr",
    "htcp-forward-clr",
    "multicast-responder",
    "multicast-siblings",
];

const NO_EFFECT_WITH_VALUE: &[&str] = &[
    "weight=",
    "basetime=",
    "ttl=",
    "connect-fail-limit=",
    "max-conn=",
    "standby=",
    "monitorurl=",
    "monitorsize=",
    "monitorinterval=",
    "monitortimeout=",
    "digest-url=",
    "idle=",
];

impl Parser {
    pub(super) fn cache_peer(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let host = d.arg(0, "peer host name or address")?;
        let kind = d.arg(1, "peer type (parent or sibling)")?;
        let port_tok = d.arg(2, "peer HTTP port")?;
        let icp = d.arg(3, "peer ICP port (0 for none)")?;
        let parent = match kind.text.as_str() {
            "parent" => true,
            "sibling" => false,
            other => {
                return Err(d.error(
                    kind,
                    format!("peer type '{other}' is not supported (parent or sibling)"),
                ))
            }
        };
        let port = port_tok
            .text
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| d.error(port_tok, format!("'{}' is not a port", port_tok.text)))?;
        icp.text
            .parse::<u16>()
            .map_err(|_| d.error(icp, format!("'{}' is not a port", icp.text)))?;
        let mut peer = PendingPeer {
            host: host.text.to_ascii_lowercase(),
            port,
            name: host.text.clone(),
            parent,
            login: None,
            default: false,
            round_robin: false,
            origin_server: false,
            forced_domain: None,
            connect_timeout: None,
            access: Vec::new(),
            location: d.location(),
        };
        for t in &d.args[4..] {
            let o = t.text.as_str();
            match o {
                "default" => peer.default = true,
                "round-robin" | "weighted-round-robin" | "carp" | "sourcehash" | "userhash" => {
                    peer.round_robin = true
                }
                o if NO_EFFECT.contains(&o) => {}
                o if NO_EFFECT_WITH_VALUE.iter().any(|p| o.starts_with(p)) => {}
                o if o.starts_with("name=") => peer.name = o["name=".len()..].to_string(),
                o if o.starts_with("connect-timeout=") => {
                    let value = &o["connect-timeout=".len()..];
                    let time = units::parse_time(value, None).map_err(|_| {
                        d.error(
                            t,
                            format!("connect-timeout: '{value}' is not a time in seconds"),
                        )
                    })?;
                    peer.connect_timeout = Some(time);
                }
                o if o.starts_with("login=") => {
                    peer.login = Some(login(&o["login=".len()..]).map_err(|m| d.error(t, m))?)
                }
                "originserver" => peer.origin_server = true,
                o if o.starts_with("forceddomain=") => {
                    let domain = &o["forceddomain=".len()..];
                    if domain.is_empty() || domain.contains([':', '/', '[', ']', '@']) {
                        return Err(
                            d.error(t, format!("forceddomain: '{domain}' is not a host name"))
                        );
                    }
                    peer.forced_domain = Some(domain.to_string());
                }
                o if o == "ssl" || o == "tls" || o.starts_with("ssl") || o.starts_with("tls") => {
                    return Err(d.error(
                        t,
                        format!("'{o}': TLS to a parent is not supported (plain HTTP only)"),
                    ))
                }
                // Squid 5.7: "ERROR: Ignoring unknown cache_peer option", and goes on.
                o => self.notes.push((
                    d.location_of(t),
                    format!("unknown cache_peer option '{o}' ignored, as Squid does"),
                )),
            }
        }
        if self.peers.iter().any(|p| p.name == peer.name) {
            return Err(d.error(
                host,
                format!("a cache_peer named '{}' is already defined", peer.name),
            ));
        }
        if !parent {
            self.notes.push((
                d.location_of(kind),
                format!(
                    "cache_peer {} is a sibling: siblings are only asked for cache hits, and \
                     proxyfleet has no cache, so it is never used",
                    peer.name
                ),
            ));
        }
        self.peers.push(peer);
        Ok(())
    }

    /// `cache_peer_access NAME allow|deny [!]acl...`: NAME must be defined above.
    pub(super) fn cache_peer_access(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let name = d.arg(0, "cache_peer name")?;
        let Some(at) = self.peers.iter().position(|p| p.name == name.text) else {
            return Err(d.error(
                name,
                format!(
                    "no cache_peer named '{}' (peers must be defined before their access lines)",
                    name.text
                ),
            ));
        };
        let rule = self.rule_after(d, 1)?;
        self.peers[at].access.push(rule);
        Ok(())
    }
}

/// `login=user:password`, `login=PASSTHRU` or `login=PASS` (the client's own credentials
/// passed on: the same as PASSTHRU here, as the `user=`/`password=` an external ACL could
/// add are not kept). `NEGOTIATE` and `PROXYPASS` are refused: the parent would see no
/// credentials, or other ones than the file means.
fn login(value: &str) -> Result<PeerLogin, String> {
    match value {
        "PASSTHRU" | "PASS" => Ok(PeerLogin::PassThru),
        "PROXYPASS" => Err(
            "login=PROXYPASS is not supported (use login=PASSTHRU to pass the client's \
             Proxy-Authorization on, or login=user:password)"
                .into(),
        ),
        v if v.starts_with("NEGOTIATE") => {
            Err("login=NEGOTIATE (Kerberos to the parent) is not supported".into())
        }
        v if v.contains(':') => Ok(PeerLogin::Basic(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(v)
        ))),
        v => Err(format!("login='{v}' is not user:password or PASSTHRU")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_errors, parse_ok, Request};
    use crate::peers::{Hop, PeerLogin};

    #[test]
    fn parents_their_options_and_access_lines() {
        let c = parse_ok(
            "acl lan src 10.0.0.0/8\n\
             cache_peer up1.corp parent 8080 0 no-query default login=alice:s3cret name=up1\n\
             cache_peer 10.0.0.2 parent 3128 3130 no-digest weight=2 round-robin connect-timeout=3\n\
             cache_peer sib.corp sibling 3128 3130 proxy-only max-conn = 5\n\
             cache_peer_access up1 allow lan\n\
             cache_peer_access up1 deny all\n\
             never_direct allow all\n",
        );
        let p = &c.parents;
        assert_eq!(p.peers.len(), 2, "siblings are not used");
        assert_eq!(
            p.peers[0].login,
            Some(PeerLogin::Basic("Basic YWxpY2U6czNjcmV0".into()))
        );
        assert_eq!(
            p.peers[1].connect_timeout,
            Some(std::time::Duration::from_secs(3))
        );
        let hops = |r: &Request| -> Vec<String> {
            p.route(&r.facts(), true, false)
                .iter()
                .map(|h| match h {
                    Hop::Direct => "DIRECT".into(),
                    Hop::Parent(peer, _) => peer.name.clone(),
                })
                .collect()
        };
        assert_eq!(
            hops(&Request::get("10.1.1.1", "h", 80)),
            ["10.0.0.2", "up1"]
        );
        assert_eq!(hops(&Request::get("192.0.2.1", "h", 80)), ["10.0.0.2"]);
        assert!(c.notes.iter().any(|(_, n)| n.contains("is a sibling")));
        assert!(c
            .notes
            .iter()
            .any(|(_, n)| n.contains("option 'max-conn' ignored")));
    }

    #[test]
    fn peer_line_errors() {
        let cases = [
            (
                "cache_peer p multicast 3128 0",
                "1:14: cache_peer: peer type 'multicast' is not supported (parent or sibling)",
            ),
            (
                "cache_peer p parent x 0",
                "1:21: cache_peer: 'x' is not a port",
            ),
            (
                "cache_peer p parent 3128 0 originserver forceddomain=a:b:c",
                "1:41: cache_peer: forceddomain: 'a:b:c' is not a host name",
            ),
            (
                "cache_peer p parent 3128 0 tls",
                "1:28: cache_peer: 'tls': TLS to a parent is not supported (plain HTTP only)",
            ),
            (
                "cache_peer p parent 3128 0 login=PROXYPASS",
                "1:28: cache_peer: login=PROXYPASS is not supported (use login=PASSTHRU to pass \
                 the client's Proxy-Authorization on, or login=user:password)",
            ),
            (
                "cache_peer p parent 3128 0\ncache_peer p parent 3129 0",
                "2:12: cache_peer: a cache_peer named 'p' is already defined",
            ),
            (
                "cache_peer_access p allow all",
                "1:19: cache_peer_access: no cache_peer named 'p' (peers must be defined \
                 before their access lines)",
            ),
        ];
        assert_errors(&cases);
    }
}
