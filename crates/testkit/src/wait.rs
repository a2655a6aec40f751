//! Polling with a deadline.

use std::time::{Duration, Instant};

/// Calls `probe` every few milliseconds until it returns `Some`, or panics with `what` after
/// `limit`.
pub fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Like [`until`], for a condition.
pub fn until_true(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) {
    until(what, limit, || probe().then_some(()))
}
