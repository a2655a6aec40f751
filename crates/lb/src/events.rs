//! Health transitions as events: every node publishes each change of a target's health as it
//! happens, so a controller (in this process or, through the state store, on another host)
//! reacts to a verdict instead of polling every node's view.
//!
//! The channel is a bounded broadcast: a subscriber that falls more than [`CAPACITY`] events
//! behind is told how many it missed (`RecvError::Lagged`) and should read
//! [`Balancer::status`](crate::Balancer::status) once to catch up. A slow subscriber never
//! holds the data path back: publishing never waits.

use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::health::Health;

/// Events kept for a subscriber that has not read them yet.
pub const CAPACITY: usize = 4096;

/// One node's verdict on one target changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// The load balancer and the node's zone, as `LB/ZONE`.
    pub node: String,
    pub group: String,
    /// The target's id (`ADDRESS:PORT`).
    pub target: String,
    /// The target's own zone.
    pub target_zone: String,
    pub from: Health,
    pub to: Health,
    pub reason: String,
    /// Wall-clock time of the change (comparable across processes, unlike an `Instant`).
    pub at: SystemTime,
}

/// The sending side, shared by every node view of one balancer.
#[derive(Debug, Clone)]
pub struct HealthEvents(broadcast::Sender<HealthEvent>);

impl Default for HealthEvents {
    fn default() -> Self {
        HealthEvents(broadcast::channel(CAPACITY).0)
    }
}

impl HealthEvents {
    /// Publishes an event; with no subscriber it is simply dropped.
    pub fn publish(&self, event: HealthEvent) {
        let _ = self.0.send(event);
    }

    /// Every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.0.subscribe()
    }
}
