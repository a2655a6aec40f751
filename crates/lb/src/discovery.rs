//! A source of targets (pingora's `ServiceDiscovery` idea): a node told *which* targets its
//! groups should have, rather than called to register and deregister each one. An agent feeds
//! it from the state store's snapshot; anything else can feed it from a channel.
//!
//! [`Balancer::follow`](crate::Balancer::follow) keeps the registered set equal to the latest
//! desired set: new targets are registered (and checked), missing ones deregistered (drained,
//! then forgotten). When the source ends — its sender dropped, e.g. the control plane is
//! unreachable and its watcher gave up — the balancer keeps serving the last set it was given:
//! the data plane never waits for the control plane.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// One target a group should have.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredTarget {
    pub group: String,
    pub address: SocketAddr,
    pub zone: String,
    /// The most connections the target itself takes (see
    /// [`Balancer::register`](crate::Balancer::register)).
    pub capacity: Option<usize>,
}

impl DesiredTarget {
    /// The same target (group, address and zone), whatever its capacity.
    pub fn same_target(&self, other: &DesiredTarget) -> bool {
        self.group == other.group && self.address == other.address && self.zone == other.zone
    }
}

/// The latest desired set of targets, over every group the source speaks for.
pub type TargetSource = tokio::sync::watch::Receiver<BTreeSet<DesiredTarget>>;

/// What one pass of following changes: targets to register, to deregister, and whose
/// capacity changed. Pure, so the rule is tested without sockets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub register: Vec<DesiredTarget>,
    pub deregister: Vec<DesiredTarget>,
    /// Registered already; only their capacity changed: their cap follows in place.
    pub recap: Vec<DesiredTarget>,
}

/// From what the source last had registered (`current`) to what it wants now. A target whose
/// zone changed is deregistered and registered again; one whose capacity alone changed keeps
/// its registration (and its flows, its health) and takes the new cap.
pub fn delta(current: &BTreeSet<DesiredTarget>, wanted: &BTreeSet<DesiredTarget>) -> Delta {
    let mut d = Delta::default();
    for w in wanted.difference(current) {
        if current.iter().any(|c| c.same_target(w)) {
            d.recap.push(w.clone());
        } else {
            d.register.push(w.clone());
        }
    }
    d.deregister = current
        .difference(wanted)
        .filter(|c| !wanted.iter().any(|w| w.same_target(c)))
        .cloned()
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(group: &str, addr: &str) -> DesiredTarget {
        DesiredTarget {
            group: group.into(),
            address: addr.parse().unwrap(),
            zone: "a".into(),
            capacity: None,
        }
    }

    #[test]
    fn only_the_difference_moves() {
        let current: BTreeSet<_> = [t("g", "127.0.0.1:1"), t("g", "127.0.0.1:2")].into();
        let wanted: BTreeSet<_> = [t("g", "127.0.0.1:2"), t("h", "127.0.0.1:1")].into();
        let d = delta(&current, &wanted);
        assert_eq!(d.register, vec![t("h", "127.0.0.1:1")]);
        assert_eq!(d.deregister, vec![t("g", "127.0.0.1:1")]);
        assert_eq!(delta(&wanted, &wanted), Delta::default());
    }

    #[test]
    fn a_changed_capacity_keeps_the_registration_and_a_changed_zone_does_not() {
        let mut bigger = t("g", "127.0.0.1:1");
        bigger.capacity = Some(10);
        let d = delta(&[t("g", "127.0.0.1:1")].into(), &[bigger.clone()].into());
        assert_eq!(
            d,
            Delta {
                recap: vec![bigger],
                ..Delta::default()
            }
        );
        let mut moved = t("g", "127.0.0.1:1");
        moved.zone = "c".into();
        let d = delta(&[t("g", "127.0.0.1:1")].into(), &[moved.clone()].into());
        assert_eq!(d.register, vec![moved]);
        assert_eq!(d.deregister, vec![t("g", "127.0.0.1:1")]);
        assert!(d.recap.is_empty());
    }
}
