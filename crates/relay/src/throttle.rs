//! At most one warning a second for an event that may repeat thousands of times a second (a
//! failing `accept`, flows refused because every target is full): each warning that is
//! written carries the count of events since the previous one, so nothing is hidden and the
//! log cannot flood.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts one kind of event and says when the next warning about it is due.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// Events not yet reported (this one included once [`Throttle::hit`] returns).
    pending: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::every(Duration::from_secs(1))
    }
}

impl Throttle {
    pub fn every(every: Duration) -> Throttle {
        Throttle {
            every,
            pending: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Counts one event. `Some(n)`: write the warning now, for `n` events (this one and those
    /// since the previous warning); `None`: one was written less than a period ago.
    pub fn hit(&self) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            return None;
        }
        *last = Some(now);
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_reported_then_one_report_a_period_with_the_count() {
        let t = Throttle::every(Duration::from_millis(200));
        assert_eq!(t.hit(), Some(1));
        for _ in 0..999 {
            assert_eq!(t.hit(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.hit(), Some(1000), "the 999 held back and this one");
        assert_eq!(t.hit(), None);
    }
}
