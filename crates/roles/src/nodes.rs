//! The agent's load-balancer nodes: those of its zone, bound on this host, their targets
//! following the shared state, their health verdicts written back to it.
//!
//! The data plane never waits for the control plane: the nodes serve with the last targets
//! the state gave them and keep checking them while the store is unreachable; verdicts made
//! meanwhile are written once it answers again (each node's latest verdict per target, not
//! every flap in between).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proxyfleet_lb::{Balancer, DesiredTarget, Health, HealthEvent, Limits};
use proxyfleet_stack::Stack;
use proxyfleet_state::{Change, Fence, Snapshot, StateStore, StoreError, TargetHealth, UnixMillis};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::view::View;

/// Starts this host's nodes (those of `zone`) and keeps them following the state.
pub async fn start(
    stack: &Stack,
    zone: &str,
    limits: Limits,
    store: Arc<dyn StateStore>,
    view: watch::Receiver<View>,
    stop: CancellationToken,
) -> Result<Arc<Balancer>, proxyfleet_lb::LbError> {
    let balancer = Arc::new(
        Balancer::start_nodes(
            &stack.load_balancers,
            &stack.target_groups,
            limits,
            |_, node| node.zone == zone,
        )
        .await?,
    );
    let (targets_tx, targets_rx) = watch::channel(BTreeSet::new());
    balancer.follow(targets_rx);
    tokio::spawn(feed_targets(view, targets_tx, stop.clone()));
    tokio::spawn(report_health(balancer.health_events(), store, stop));
    Ok(balancer)
}

/// The targets every group should have, from a snapshot: all but the draining ones.
pub fn desired_targets(snapshot: &Snapshot) -> BTreeSet<DesiredTarget> {
    snapshot
        .targets
        .values()
        .flat_map(|t| t.values())
        .filter(|t| t.state != TargetHealth::Draining)
        .map(|t| DesiredTarget {
            group: t.target_group.clone(),
            address: t.address,
            zone: t.zone.clone(),
            capacity: None,
        })
        .collect()
}

async fn feed_targets(
    mut view: watch::Receiver<View>,
    targets: watch::Sender<BTreeSet<DesiredTarget>>,
    stop: CancellationToken,
) {
    loop {
        {
            let v = view.borrow_and_update();
            // While disconnected the copy is the last one seen: keep it as it is.
            if v.connected {
                let wanted = desired_targets(&v.snapshot);
                targets.send_if_modified(|t| {
                    let changed = *t != wanted;
                    *t = wanted;
                    changed
                });
            }
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

fn target_health(h: Health) -> TargetHealth {
    match h {
        Health::Initial => TargetHealth::Initial,
        Health::Healthy => TargetHealth::Healthy,
        Health::Unhealthy => TargetHealth::Unhealthy,
        Health::Draining => TargetHealth::Draining,
        Health::Unused => TargetHealth::Unused,
    }
}

/// Writes each node's verdicts; what cannot be written yet is kept (the latest per node and
/// target) and written when the store answers again.
async fn report_health(
    mut events: broadcast::Receiver<HealthEvent>,
    store: Arc<dyn StateStore>,
    stop: CancellationToken,
) {
    let mut pending: BTreeMap<(String, String, SocketAddr), Change> = BTreeMap::new();
    let mut retry = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) => {
                    // Draining is the controller's to say; nodes report what they check.
                    if e.to == Health::Draining {
                        continue;
                    }
                    let Ok(address) = e.target.parse::<SocketAddr>() else { continue };
                    let change = Change::ReportTargetHealth {
                        target_group: e.group.clone(),
                        address,
                        node: e.node.clone(),
                        health: target_health(e.to),
                        reason: e.reason.clone(),
                        at: UnixMillis::from(e.at),
                    };
                    pending.insert((e.group, e.node, address), change);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "health events: fell behind; later verdicts still reported");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = retry.tick() => {}
            () = stop.cancelled() => return,
        }
        let keys: Vec<_> = pending.keys().cloned().collect();
        for key in keys {
            let change = pending[&key].clone();
            match store.apply(Fence::Unfenced, vec![change]).await {
                // Written, or refused because the target is gone: either way, done.
                Ok(_) | Err(StoreError::Refused { .. }) => {
                    pending.remove(&key);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "state store: health report kept for later");
                    break;
                }
            }
        }
    }
}
