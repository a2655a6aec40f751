//! `http_upgrade_request_protocols NAME allow|deny [!]acl...`: which protocols a client may
//! switch a plain HTTP request to (`Upgrade: websocket`: WebSockets to `ws://` URLs through
//! the proxy). With no lines (Squid's default) `Upgrade` is removed, as a hop-by-hop field.
//! An offered protocol is judged by the lines of its name (before any `/version`, ignoring
//! case), else by `OTHER`'s; those allowed go to the origin as `Upgrade` with `Connection:
//! upgrade`, and its `101` turns the connection into a tunnel.

use crate::acl::{AccessRules, Facts};
use crate::http::head::{tokens, Head};

#[derive(Debug, Clone, Default)]
pub struct UpgradeRules {
    /// By lowercase protocol name (`other` for the rest), in file order.
    pub protocols: Vec<(String, AccessRules)>,
}

impl UpgradeRules {
    /// The `Upgrade` tokens of `head` (as the client wrote them) that may go to the origin.
    pub fn allowed(&self, head: &Head, f: &Facts) -> Vec<String> {
        if self.protocols.is_empty() {
            return Vec::new();
        }
        let rules_for = |name: &str| {
            self.protocols
                .iter()
                .find(|(n, _)| n == name)
                .or_else(|| self.protocols.iter().find(|(n, _)| n == "other"))
                .map(|(_, r)| r)
        };
        head.values("upgrade")
            .flat_map(tokens)
            .filter_map(|t| std::str::from_utf8(t).ok())
            .filter(|token| {
                let name = token.split('/').next().unwrap_or("").to_ascii_lowercase();
                rules_for(&name).is_some_and(|r| !r.is_empty() && r.allows(f))
            })
            .map(str::to_string)
            .collect()
    }
}
