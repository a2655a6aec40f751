//! Wall-clock time as it crosses a process boundary: milliseconds since the Unix epoch.
//!
//! `Instant` means nothing in another process or after a restart, so no state type holds one;
//! a writer stamps its changes with [`UnixMillis::now`] and every reader sees the same value.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (a JSON integer).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub fn now() -> UnixMillis {
        UnixMillis::from(SystemTime::now())
    }

    /// This time plus `d` (saturating).
    pub fn after(self, d: Duration) -> UnixMillis {
        UnixMillis(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// This time less `d` (saturating at the epoch): when something that began `d` ago began.
    pub fn before(self, d: Duration) -> UnixMillis {
        UnixMillis(
            self.0
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// How long from `earlier` to this time; zero if `earlier` is later.
    pub fn since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Seconds since the epoch, the unit the group's status and activities use today.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl From<SystemTime> for UnixMillis {
    /// A time before the epoch (a badly set clock) counts as the epoch.
    fn from(t: SystemTime) -> UnixMillis {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl From<UnixMillis> for SystemTime {
    fn from(t: UnixMillis) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(t.0)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Where a store reads the time that leases expire by. The system clock in production; tests
/// move a [`ManualClock`] instead of sleeping past a lease.
#[cfg_attr(not(feature = "stores"), allow(dead_code))] // the stores' own
pub(crate) trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

#[cfg_attr(not(feature = "stores"), allow(dead_code))] // the stores' own
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis::now()
    }
}

/// A clock that moves only when told to.
#[cfg(test)]
pub(crate) struct ManualClock(std::sync::atomic::AtomicU64);

#[cfg(test)]
impl ManualClock {
    pub(crate) fn new(start: UnixMillis) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicU64::new(start.0))
    }

    pub(crate) fn advance(&self, d: Duration) {
        self.0
            .fetch_add(d.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_and_saturates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let m = UnixMillis::from(t);
        assert_eq!(m, UnixMillis(1_700_000_000_123));
        assert_eq!(SystemTime::from(m), t);
        assert_eq!(
            UnixMillis::from(UNIX_EPOCH - Duration::from_secs(1)),
            UnixMillis(0)
        );
        assert_eq!(
            UnixMillis(u64::MAX).after(Duration::from_secs(1)).0,
            u64::MAX
        );
        assert_eq!(UnixMillis(5).since(UnixMillis(9)), Duration::ZERO);
        assert_eq!(UnixMillis(1500).as_secs_f64(), 1.5);
    }
}
