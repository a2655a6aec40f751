//! `ssl_bump` without decrypting: on an `ssl-bump` port, a CONNECT tunnel (or an intercepted
//! TLS connection on an `https_port ... intercept ssl-bump`) is judged in Squid's steps:
//! step 1 before any TLS byte, step 2 once the client's ClientHello has been peeked at (its
//! server name known to `ssl::server_name` ACLs), step 3 after that. At each step the first
//! `ssl_bump` line whose ACLs match decides: `peek`/`stare` go on to the next step,
//! `splice` tunnels the bytes as they are, `terminate` closes the connection; no line
//! matching splices (Squid's default). `bump` is refused when the configuration is read.

use crate::acl::{AclList, Facts};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Peek,
    /// Treated as `peek`: the server's certificate is never looked at here.
    Stare,
    Splice,
    Terminate,
    Bump,
}

/// The `ssl_bump` lines, in file order.
#[derive(Debug, Clone, Default)]
pub struct SslBump {
    pub rules: Vec<(Action, AclList)>,
}

impl SslBump {
    /// The action at the step `f.bump_step` says.
    pub fn decide(&self, f: &Facts) -> Action {
        self.rules
            .iter()
            .find(|(_, acls)| acls.matches(f))
            .map_or(Action::Splice, |(action, _)| *action)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
