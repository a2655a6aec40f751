//! proxyfleet's shared state vocabulary: what the roles of the tier (agents, the controller,
//! the admin API) tell each other, and the store that keeps it.
//!
//! - [`model`]: the [`Snapshot`] — hosts, groups, instances, targets, the leadership — with
//!   ids and wall-clock times ([`UnixMillis`]), at a [`Revision`];
//! - [`cause`]: the typed [`Cause`] of a launch, a termination, an unhealthy verdict;
//! - [`change`]: the typed [`Change`]s, the [`Key`] each touches, who may write it ([`Fence`]);
//! - [`apply`]: the rules, [`Snapshot::apply`], pure: what a change does and when it is
//!   [`Refusal`]-ed; every store and every watcher applies changes with it;
//! - [`store`]: the [`StateStore`] trait — apply a batch atomically, snapshot, watch from a
//!   revision, campaign for the leadership whose term fences the controller's writes;
//! - [`sqlite`]: the embedded implementation, [`SqliteStore`], on one SQLite file; [`etcd`]:
//!   the one on etcd (both behind the default feature `stores`: the data path's crates use
//!   the vocabulary alone);
//! - [`report`]: what the running parts report of themselves (a balancer's counters, a
//!   group's instances and activities), the admin API's only input.
//!
//! Data flows one way: a writer sends a batch of changes; the store checks the fence and the
//! rules, logs the batch under the next revision and updates its snapshot; watchers read the
//! log from their revision on and apply the same changes to their own copy.
//!
//! # On etcd
//!
//! The trait is shaped so that an etcd v3 store is a translation (the `etcd-client` crate;
//! every key under one prefix, e.g. `/proxyfleet/`):
//!
//! - [`Revision`] is etcd's revision: one `apply` is one `Txn`, whose header revision it
//!   returns; the objects are the keys [`Key`] names (`hosts/ID`, `instances/ID`,
//!   `targets/GROUP/ADDR:PORT`, ...), their values the same JSON the SQLite store keeps.
//! - `apply`: read the keys the batch touches, check [`Snapshot::apply`]'s rules on them, then
//!   one `Txn` — `If` every read key's `mod_revision` is unchanged and, when fenced, the leader
//!   key's `create_revision` equals the term; `Then` the puts and deletes of the touched keys and
//!   one put per change under `log/KIND/`, at a key unique to the writer and its batch (so a
//!   watch yields the typed change, with its cause, rather than a bare key; the changes of one
//!   `Txn` share its revision and come in their order, etcd's sub-revision). A failed compare on the leader key is [`StoreError::Fenced`]; on
//!   another key, read again and retry.
//! - `snapshot`: one range `Get` of the prefix; the response header's revision is the
//!   snapshot's.
//! - `watch(kinds, from)`: `Watch` on `log/KIND/` with `start_revision = from`; every event of
//!   one `Txn` carries its revision. A compacted start is [`StoreError::Compacted`]. The log keys
//!   are put with a long lease, which is their retention. The client does not reconnect by
//!   itself: the caller re-watches from the last revision it saw.
//! - `campaign`: the election API's `Campaign` on a lease granted with `ttl`; the [`Term`] is
//!   the leader key's `create_revision`, which etcd never hands out twice, restarts included.
//!   `renew` is the lease's `KeepAlive`, `resign` is `Resign`, `leader` is `Leader`.
//!   A lapsed lease deletes the leader key, so a stale leader's fenced `Txn` fails its compare.
//! - [`Change::Heartbeat`] is a put of the host key, which is attached to the host's lease.

pub mod apply;
pub mod cause;
pub mod change;
#[cfg(feature = "stores")]
pub mod etcd;
pub mod model;
pub mod report;
#[cfg(feature = "stores")]
pub mod sqlite;
pub mod store;
mod time;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod roundtrip;

pub use apply::Refusal;
pub use cause::{Cause, UserRequest};
pub use change::{Change, Fence, Key, Kind, LeadershipEnd};
#[cfg(feature = "stores")]
pub use etcd::EtcdStore;
pub use model::{
    Ask, Group, Host, Instance, InstanceHealth, Leadership, Lifecycle, NodeHold, NodeView, Process,
    Refresh, Request, Revision, Snapshot, Target, TargetHealth, Term,
};
#[cfg(feature = "stores")]
pub use sqlite::SqliteStore;
pub use store::{Liveness, StateStore, StoreError, WatchStream};
pub use time::UnixMillis;
