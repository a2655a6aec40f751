//! proxyfleet's group controller: keeps N instances of a launch template alive across zones.
//!
//! - [`fleet`]: the controller — per group a reconcile loop that launches into the least
//!   populated zone at the lowest free address, scales in, and replaces unhealthy instances
//!   (one at a time for load-balancer health); it adopts survivors after a restart;
//! - [`instance`]: one task per instance — launch ([`process`]), Pending → InService once it
//!   listens (registered with its target groups), watched for exit and load-balancer health,
//!   then Terminating (deregister, drain, SIGTERM, SIGKILL) → Terminated; it registers with
//!   the instance's own [`capacity`] (a proxy's client cap);
//! - [`store`]: instances and the activity history in SQLite, in the state directory;
//! - [`scaling`]: the optional target-tracking policy on the balancer's flow counters;
//! - [`firewall`]: security groups as one nftables table;
//! - [`files`]: the modes of the state directory (0711), instance directories (0700) and
//!   state files (0600), whatever the umask;
//! - [`guard`]: the destination guard's settings for the proxies it launches;
//! - [`model`] and [`runtime`]: the data they share.

pub mod capacity;
pub mod files;
pub mod firewall;
pub mod fleet;
pub mod guard;
pub mod instance;
pub mod model;
pub mod process;
pub mod runtime;
pub mod scaling;
pub mod store;

pub use fleet::{Fleet, FleetError};
