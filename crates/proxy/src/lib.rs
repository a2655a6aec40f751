//! proxyfleet's forward proxy: the program every instance of the fleet runs.
//!
//! Data flows through the modules in this order:
//! - [`config`] reads a squid.conf subset into a validated [`config::Config`];
//! - [`guard`] knows the destinations no client may reach (the proxy host, metadata, the
//!   tier itself), judged on the addresses actually dialed;
//! - [`acl`] holds the ACLs and the `http_access`-style rule lists evaluated per transaction;
//! - [`server`] owns start, stop and reloads, [`listeners`] the `http_port`s' sockets; each accepted socket becomes a
//!   [`conn::ClientConn`], which reads an optional [`proxy_protocol`] header and then requests;
//! - a request is parsed by [`http`], then either forwarded ([`forward`]: [`resolve`], an
//!   [`origin`] connection, one [`exchange`]), tunnelled ([`tunnel`], for CONNECT), answered
//!   as the health check, or refused with a Squid-style page from [`errors`];
//! - [`auth`] checks `Proxy-Authorization` with Squid's helpers ([`helper`]) when a
//!   `proxy_auth` ACL asks who the client is;
//! - every transaction ends as one [`access_log`] line in Squid's native format.

pub mod accel;
pub mod access_log;
pub mod acl;
pub mod auth;
pub mod bump;
pub mod config;
pub mod conn;
pub mod delay;
pub mod digest;
pub mod errors;
pub mod exchange;
pub mod expiring;
pub mod external_acl;
pub mod forward;
pub mod guard;
pub mod header_rules;
pub mod helper;
pub mod http;
pub mod intercept;
pub mod listeners;
pub mod log_format;
pub mod origin;
pub mod peers;
pub mod proxy_protocol;
pub mod resolve;
pub mod server;
pub mod sni;
pub mod tunnel;
pub mod upgrade;
pub mod url_rewrite;

pub use config::Config;
pub use listeners::PortChanges;
pub use server::{Proxy, ReloadError, Reloader, StartError, Stop};
