//! proxyfleet's group controller: keeps N instances of a launch template alive across zones.
//!
//! A reconcile pass is a pure decision and its execution:
//!
//! - [`planner`]: pure, unit-tested without processes or sockets — [`planner::plan`] takes a
//!   [`planner::PlanInput`] (the group's bounds and zones, its instances with lifecycle and
//!   typed unhealthy cause, the addresses taken, the back-off, the scaling readings, all times
//!   wall-clock) and returns [`planner::Action`]s: launch in zone Z at address A, terminate X
//!   with cause C, set the desired capacity. It launches into the least populated zone at
//!   the lowest free address, scales in the newest of the most populated zone, and replaces
//!   unhealthy instances (one at a time for load-balancer health: the no-cascade rule);
//! - `executor`: per group, the reconcile loop — gathers the input from the running state,
//!   plans, and carries the actions out (an instance task per launch, a command per
//!   termination);
//! - [`fleet`]: the controller's face — starts the loops, adopts survivors after a restart,
//!   and answers the admin API (scale, terminate, set health, status, activity);
//! - [`instance`]: one task per instance — launch ([`process`]), Pending → InService once it
//!   listens (registered with its target groups), watched for exit and load-balancer health,
//!   then Terminating (deregister, drain, SIGTERM, SIGKILL) → Terminated; it registers with
//!   the instance's own [`capacity`] (a proxy's client cap);
//! - [`store`]: instances and the activity history in SQLite, in the state directory;
//! - [`scaling`]: the target-tracking policy's capacity rule and the balancer's flow counters
//!   it reads;
//! - [`launcher`]: the [`Launcher`](launcher::Launcher) trait that runs instances on the
//!   host that owns them (processes, and the kernel firewall), and the local one;
//! - [`firewall`]: security groups as one nftables table;
//! - [`files`]: the modes of the state directory (0711), instance directories (0700) and
//!   state files (0600), whatever the umask;
//! - [`guard`]: the destination guard's settings for the proxies it launches;
//! - [`model`] and [`runtime`]: the data they share.
//!
//! Causes are typed ([`proxyfleet_state::Cause`]): an instance's unhealthy reason, every
//! termination's cause, every recorded activity's cause. Decisions read the variant (is this
//! the load balancer's verdict?); the activity history reads its text
//! ([`Cause::activity_text`](proxyfleet_state::Cause::activity_text)).

pub mod capacity;
mod executor;
pub mod files;
pub mod firewall;
pub mod fleet;
pub mod guard;
pub mod instance;
pub mod launcher;
pub mod model;
pub mod planner;
pub mod process;
pub mod runtime;
pub mod scaling;
pub mod store;

pub use fleet::{Fleet, FleetError};
