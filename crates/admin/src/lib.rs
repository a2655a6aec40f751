//! proxyfleet's admin HTTP API, metrics and web console: what `status`, `activity`, `scale`,
//! `terminate` and `down` talk to, and what an operator opens in a browser.
//!
//! The API serves whatever implements [`Control`]: `up` implements it over the running
//! balancer and group controller, an agent over the shared state and its own nodes; tests
//! implement it with fixed data. What [`Control`] hands over are the shared state's reports
//! (`proxyfleet_state::report`): this crate depends on the stack and the state vocabulary
//! alone, never on the data path's crates (the balancer, the group controller).
//!
//! Modules, in the order a request meets them:
//!
//! - [`server`]: [`serve`] binds 127.0.0.1:0, publishes `STATE/admin.addr` and a fresh
//!   bearer token in `STATE/admin.token` (mode 0600), listens on `STATE/admin.sock` too
//!   (`socket`: mode 0600, the CLI's way in that no other user's clients can crowd), and
//!   runs until its shutdown future resolves.
//! - `accept`: per listener, the accept loop and a task per connection; hyper reads each
//!   head within [`server::HEAD_TIMEOUT`], and the router answers within
//!   [`server::REQUEST_TIMEOUT`] holding one of the listener's request permits.
//! - `pool`: per listener, the open connections ([`MAX_CONNECTIONS`] on TCP; at the cap
//!   the longest idle is closed for the next), the request permits ([`MAX_REQUESTS`]), and
//!   the reaper that closes connections gone quiet (idle ones after
//!   [`server::IDLE_TIMEOUT`]).
//! - `guard`: before any route, the Host check (DNS rebinding), the refusal of mutating
//!   calls from another `Origin`, preflights answered without CORS headers, the body limit
//!   ([`MAX_BODY`]).
//! - `api`: the routes. Reads are open to anyone who can reach the loopback address unless
//!   [`Options::read_requires_token`]; mutating calls and the stack file (environment
//!   values redacted) need `Authorization: Bearer TOKEN`.
//! - `console`: the web console at `GET /`: one page whose HTML, CSS and JavaScript are
//!   compiled in (`src/console/`), served with a strict Content-Security-Policy.
//! - `live`: once per second a sampler records the balancer into `history` (a ring of five
//!   minutes of per-target new flows per second and active flows, `GET /api/history`) and,
//!   while a console is open, publishes a tick (status, sample, newest activities) to every
//!   `GET /api/events` stream.
//! - [`view`]: the JSON the API speaks, built from [`Control`]'s snapshots. The same types
//!   deserialize on the client side, so the CLI and the server cannot drift apart.
//! - `metrics`: `GET /metrics`, a fresh Prometheus registry per scrape, filled from the
//!   same snapshots.
//! - [`client`]: a one-request-per-connection HTTP/1.1 client for the CLI and tests.
//! - `token`: token generation, constant-time comparison, private file writes.

mod accept;
mod api;
pub mod client;
mod console;
mod guard;
mod history;
mod live;
mod metrics;
mod pool;
pub mod server;
mod socket;
mod token;
pub mod view;

use proxyfleet_state::report::BalancerStatus;
use proxyfleet_state::report::{Activity, GroupStatus};

pub use guard::MAX_BODY;
pub use live::MAX_STREAMS;
pub use server::{
    serve, serve_with, AdminError, AdminHandle, Options, ADDR_FILE, MAX_CONNECTIONS, MAX_REQUESTS,
    SOCKET_FILE, TOKEN_FILE,
};

/// Why a [`Control`] call was refused: the kind decides the API's status, the message is
/// what the caller reads (`{"error": message}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The group or instance the call names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The call is refused as it stands, e.g. a desired capacity outside min..max (400).
    #[error("{0}")]
    Refused(String),
    /// The call was taken but not carried out in time: a tier of agents files it for the
    /// controller, and none has carried it out yet (504; it still will be).
    #[error("{0}")]
    Pending(String),
    /// What the call needs does not answer now, e.g. the tier's state store (503).
    #[error("{0}")]
    Unavailable(String),
}

/// What the admin API can ask of a running stack.
pub trait Control: Send + Sync + 'static {
    /// The stack file's text (or the built-in stack's). The API redacts its environment
    /// values before showing it.
    fn stack_text(&self) -> String;
    fn balancer(&self) -> BalancerStatus;
    fn groups(&self) -> Vec<GroupStatus>;
    /// Newest first.
    fn activities(&self, group: Option<&str>, limit: usize) -> Vec<Activity>;
    fn scale(&self, group: &str, desired: u32) -> Result<(), ControlError>;
    /// Terminates an instance; the group replaces it unless `decrement_desired`.
    fn terminate(&self, instance: &str, decrement_desired: bool) -> Result<(), ControlError>;
    /// Marks an instance healthy or unhealthy by hand (the cloud's SetInstanceHealth).
    fn set_instance_health(&self, instance: &str, healthy: bool) -> Result<(), ControlError>;
    /// Asks `up` to stop (what `proxyfleet down` does).
    fn shutdown(&self);
    /// Starts (or, `cancel`, cancels) an instance refresh of `group` (`proxyfleet refresh`).
    fn refresh(
        &self,
        _group: &str,
        _cancel: bool,
        _min_healthy_percentage: u32,
    ) -> Result<(), ControlError> {
        Err(ControlError::Refused(
            "this tier has no instance refresh".into(),
        ))
    }
    /// What changing the running tier to the stack in `text` takes (`proxyfleet diff`).
    fn plan(&self, _text: &str) -> Result<Vec<proxyfleet_stack::plan::Step>, ControlError> {
        Err(ControlError::Refused(
            "this tier does not change its stack while it runs".into(),
        ))
    }
    /// Changes the running tier to the stack in `text`, all or nothing (`proxyfleet apply`):
    /// the plan it carried out.
    fn apply(&self, _text: &str) -> Result<Vec<proxyfleet_stack::plan::Step>, ControlError> {
        Err(ControlError::Refused(
            "this tier does not change its stack while it runs".into(),
        ))
    }
    /// The tier of agents this API is part of; `None` for `up`.
    fn tier(&self) -> Option<view::TierView> {
        None
    }
}
