//! Parents (`cache_peer HOST parent PORT ...`) and the choice, per request, between them and
//! going direct, with Squid's rules:
//!
//! - `always_direct` allowing: direct only; else `never_direct` allowing: parents only;
//!   else a request that is not hierarchical (anything but GET without `Authorization`:
//!   CONNECT, POST, ...) goes direct while `nonhierarchical_direct` is on (the default);
//! - otherwise parents first, then direct (`prefer_direct on`: direct first);
//! - parents are tried in file order, `round-robin` ones taking turns, `default` ones last,
//!   each only if its `cache_peer_access` lines allow the request; a parent that cannot be
//!   connected to is skipped for the next one.
//!
//! Siblings are read and never used: Squid asks them only for cache hits (ICP, HTCP, cache
//! digests), and proxyfleet has no cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::acl::{AccessRules, Facts};
use crate::config::Location;

/// One `cache_peer ... parent` line.
#[derive(Debug)]
pub struct CachePeer {
    /// A name or an address; looked up when used.
    pub host: String,
    pub port: u16,
    /// `name=` (default: the host), what `cache_peer_access` lines name.
    pub name: String,
    /// `login=`: what the parent is shown as `Proxy-Authorization`.
    pub login: Option<PeerLogin>,
    /// `default`: a last resort, after the others.
    pub default: bool,
    /// `round-robin` (and the other balancing options): parents with it take turns.
    pub round_robin: bool,
    /// `originserver`: a web server (a reverse proxy's backend), sent requests in origin
    /// form (`GET /path`), and `login=` as `Authorization`.
    pub origin_server: bool,
    /// `forceddomain=NAME`: the `Host` an origin server is sent.
    pub forced_domain: Option<String>,
    /// `connect-timeout=` (default `connect_timeout`).
    pub connect_timeout: Option<Duration>,
    /// `cache_peer_access NAME allow|deny ...`; no lines: every request may use it.
    pub access: AccessRules,
    pub location: Location,
}

/// `login=` of a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerLogin {
    /// `login=user:password`: the value of `Proxy-Authorization` (`Basic ...`).
    Basic(String),
    /// `login=PASSTHRU`: the client's own `Proxy-Authorization`, passed on.
    PassThru,
}

/// Where one attempt at a request goes.
#[derive(Debug, Clone)]
pub enum Hop {
    Direct,
    /// With its `%Sh` code.
    Parent(Arc<CachePeer>, &'static str),
}

/// The configured parents and the choice rules.
#[derive(Debug, Default)]
pub struct Parents {
    pub peers: Vec<Arc<CachePeer>>,
    pub always_direct: AccessRules,
    pub never_direct: AccessRules,
    pub prefer_direct: bool,
    pub nonhierarchical_direct: bool,
    /// Turns among `round-robin` parents.
    next_turn: AtomicUsize,
}

impl Parents {
    pub fn new(
        peers: Vec<Arc<CachePeer>>,
        always_direct: AccessRules,
        never_direct: AccessRules,
        prefer_direct: bool,
        nonhierarchical_direct: bool,
    ) -> Parents {
        Parents {
            peers,
            always_direct,
            never_direct,
            prefer_direct,
            nonhierarchical_direct,
            next_turn: AtomicUsize::new(0),
        }
    }

    /// The hops to try for a request, in order; empty when `never_direct` (or an accel
    /// port without `allow-direct`: `no_direct`) forbids going direct and no parent may
    /// take it.
    pub fn route(&self, f: &Facts, hierarchical: bool, no_direct: bool) -> Vec<Hop> {
        let direct = if !self.always_direct.is_empty() && self.always_direct.allows(f) {
            Some(true)
        } else if no_direct || (!self.never_direct.is_empty() && self.never_direct.allows(f)) {
            Some(false)
        } else if !hierarchical && self.nonhierarchical_direct {
            Some(true)
        } else {
            None
        };
        if direct == Some(true) {
            return vec![Hop::Direct];
        }
        let parents = self.parents_for(f);
        match direct {
            Some(_) => parents,
            None if self.prefer_direct => std::iter::once(Hop::Direct).chain(parents).collect(),
            None => parents
                .into_iter()
                .chain(std::iter::once(Hop::Direct))
                .collect(),
        }
    }

    fn parents_for(&self, f: &Facts) -> Vec<Hop> {
        let usable: Vec<&Arc<CachePeer>> = self
            .peers
            .iter()
            .filter(|p| p.access.is_empty() || p.access.allows(f))
            .collect();
        let mut turns: Vec<&Arc<CachePeer>> = usable
            .iter()
            .copied()
            .filter(|p| p.round_robin && !p.default)
            .collect();
        if !turns.is_empty() {
            let at = self.next_turn.fetch_add(1, Ordering::Relaxed) % turns.len();
            turns.rotate_left(at);
        }
        let turns = turns
            .into_iter()
            .map(|p| Hop::Parent(Arc::clone(p), "ROUNDROBIN_PARENT"));
        let first_up = usable
            .iter()
            .filter(|p| !p.round_robin && !p.default)
            .map(|p| Hop::Parent(Arc::clone(p), "FIRSTUP_PARENT"));
        let defaults = usable
            .iter()
            .filter(|p| p.default)
            .map(|p| Hop::Parent(Arc::clone(p), "DEFAULT_PARENT"));
        turns.chain(first_up).chain(defaults).collect()
    }
}

/// Squid's `clientHierarchical`, without the cache's own conditions: a GET (or TRACE)
/// that carries no `Authorization` may go through the hierarchy.
pub fn is_hierarchical(method: &str, has_authorization: bool) -> bool {
    matches!(method, "GET" | "TRACE") && !has_authorization
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{AccessRule, AclList};

    fn peer(name: &str, default: bool, round_robin: bool) -> Arc<CachePeer> {
        Arc::new(CachePeer {
            host: name.into(),
            port: 3128,
            name: name.into(),
            login: None,
            default,
            round_robin,
            origin_server: false,
            forced_domain: None,
            connect_timeout: None,
            access: AccessRules::default(),
            location: Location {
                file: "t".into(),
                line: 1,
                column: 1,
            },
        })
    }

    fn allow_all() -> AccessRules {
        AccessRules {
            rules: vec![AccessRule {
                allow: true,
                acls: AclList::default(),
                location: Location {
                    file: "t".into(),
                    line: 1,
                    column: 1,
                },
            }],
        }
    }

    fn names(hops: &[Hop]) -> Vec<String> {
        hops.iter()
            .map(|h| match h {
                Hop::Direct => "DIRECT".to_string(),
                Hop::Parent(p, code) => format!("{}:{code}", p.name),
            })
            .collect()
    }

    #[test]
    fn squid_order_of_parents_and_direct() {
        let f = Facts::connection("127.0.0.1".parse().unwrap());
        let peers = vec![
            peer("fallback", true, false),
            peer("a", false, false),
            peer("b", false, false),
        ];
        let p = Parents::new(
            peers.clone(),
            AccessRules::default(),
            AccessRules::default(),
            false,
            true,
        );
        assert_eq!(
            names(&p.route(&f, true, false)),
            [
                "a:FIRSTUP_PARENT",
                "b:FIRSTUP_PARENT",
                "fallback:DEFAULT_PARENT",
                "DIRECT"
            ]
        );
        assert_eq!(
            names(&p.route(&f, false, false)),
            ["DIRECT"],
            "non-hierarchical"
        );
        let never = Parents::new(
            peers.clone(),
            AccessRules::default(),
            allow_all(),
            false,
            true,
        );
        assert_eq!(
            names(&never.route(&f, false, false)).len(),
            3,
            "never_direct: parents only"
        );
        let always = Parents::new(peers.clone(), allow_all(), allow_all(), false, true);
        assert_eq!(names(&always.route(&f, true, false)), ["DIRECT"]);
        let prefer = Parents::new(
            peers.clone(),
            AccessRules::default(),
            AccessRules::default(),
            true,
            true,
        );
        assert_eq!(names(&prefer.route(&f, true, false))[0], "DIRECT");
        let none = Parents::new(Vec::new(), AccessRules::default(), allow_all(), false, true);
        assert!(none.route(&f, true, false).is_empty(), "nowhere to go");
        // An accel port without allow-direct: parents only, even for a POST, unless
        // always_direct says otherwise (Squid checks always_direct first).
        assert_eq!(
            names(&p.route(&f, false, true)).len(),
            3,
            "accel: parents only"
        );
        let none = Parents::new(
            Vec::new(),
            AccessRules::default(),
            AccessRules::default(),
            false,
            true,
        );
        assert!(none.route(&f, true, true).is_empty(), "accel without peers");
        assert_eq!(
            names(&always.route(&f, true, true)),
            ["DIRECT"],
            "always_direct wins"
        );
    }

    #[test]
    fn round_robin_parents_take_turns() {
        let f = Facts::connection("127.0.0.1".parse().unwrap());
        let p = Parents::new(
            vec![peer("a", false, true), peer("b", false, true)],
            AccessRules::default(),
            allow_all(),
            false,
            true,
        );
        let first: Vec<_> = (0..4)
            .map(|_| names(&p.route(&f, true, false))[0].clone())
            .collect();
        assert_eq!(
            first,
            [
                "a:ROUNDROBIN_PARENT",
                "b:ROUNDROBIN_PARENT",
                "a:ROUNDROBIN_PARENT",
                "b:ROUNDROBIN_PARENT"
            ]
        );
    }
}
