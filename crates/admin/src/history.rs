//! The balancer's last five minutes: a ring of [`CAPACITY`] samples, one per
//! [`INTERVAL`], each holding every target's new flows per second and active flows.
//!
//! The balancer keeps only running totals (new flows since registration) and gauges (flows
//! open now); a rate needs two readings, so this ring keeps the previous totals and turns
//! each new reading into a per-second rate over the time that really passed between them
//! (a late tick must not show as a spike).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proxyfleet_state::report::BalancerStatus;

use crate::view::{HistoryView, SampleView, TargetSampleView};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Five minutes of samples.
pub const CAPACITY: usize = 300;

#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<SampleView>,
    /// Each target's (group, id) new-flow total at the previous sample.
    totals: HashMap<(String, String), u64>,
    /// When the previous sample was taken.
    previous: Option<Instant>,
}

impl History {
    /// Records the balancer as it is at `at` (`time`: the same instant, in seconds since the
    /// Unix epoch) and returns the new sample.
    pub fn record(&mut self, balancer: &BalancerStatus, at: Instant, time: f64) -> SampleView {
        let elapsed = self
            .previous
            .map(|p| at.saturating_duration_since(p).as_secs_f64());
        let mut totals = HashMap::with_capacity(balancer.targets.len());
        let targets = balancer
            .targets
            .iter()
            .map(|t| {
                let key = (t.group.clone(), t.id.clone());
                let rate = match elapsed {
                    // The first sample has nothing to compare with.
                    None => 0.0,
                    Some(e) if e <= 0.0 => 0.0,
                    Some(e) => {
                        // A target registered since the last sample started from zero; so
                        // did one whose counters were reset by a re-registration.
                        let before = self.totals.get(&key).copied().unwrap_or(0);
                        let delta = if t.new_flows >= before {
                            t.new_flows - before
                        } else {
                            t.new_flows
                        };
                        delta as f64 / e
                    }
                };
                totals.insert(key, t.new_flows);
                TargetSampleView {
                    group: t.group.clone(),
                    id: t.id.clone(),
                    new_flows_per_second: rate,
                    active_flows: t.active_flows,
                }
            })
            .collect();
        // Targets that left are forgotten, so the map is bounded by the registered targets.
        self.totals = totals;
        self.previous = Some(at);
        let sample = SampleView { time, targets };
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample.clone());
        sample
    }

    pub fn view(&self) -> HistoryView {
        HistoryView {
            interval_seconds: INTERVAL.as_secs_f64(),
            capacity: CAPACITY,
            samples: self.samples.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxyfleet_state::report::TargetStatus;

    fn balancer(targets: &[(&str, u64, u64)]) -> BalancerStatus {
        BalancerStatus {
            load_balancers: vec![],
            targets: targets
                .iter()
                .map(|(id, new_flows, active_flows)| TargetStatus {
                    group: "tg".into(),
                    id: id.to_string(),
                    zone: "a".into(),
                    draining: false,
                    health: vec![],
                    active_flows: *active_flows,
                    new_flows: *new_flows,
                    bytes_to_target: 0,
                    bytes_to_client: 0,
                    connect_failures: 0,
                    health_transitions: 0,
                    max_flows: None,
                    skipped_full: 0,
                    checks_not_run: 0,
                })
                .collect(),
        }
    }

    fn rates(s: &SampleView) -> Vec<(String, f64, u64)> {
        s.targets
            .iter()
            .map(|t| (t.id.clone(), t.new_flows_per_second, t.active_flows))
            .collect()
    }

    #[test]
    fn rates_are_per_second_over_the_time_that_passed() {
        let mut h = History::default();
        let t0 = Instant::now();
        let first = h.record(&balancer(&[("a", 100, 1)]), t0, 1000.0);
        assert_eq!(
            rates(&first),
            [("a".into(), 0.0, 1)],
            "no rate without a past"
        );
        let s = h.record(&balancer(&[("a", 110, 2)]), t0 + INTERVAL, 1001.0);
        assert_eq!(rates(&s), [("a".into(), 10.0, 2)]);
        // A late tick: 30 flows over 2 s is 15 per second, not 30.
        let s = h.record(
            &balancer(&[("a", 140, 0)]),
            t0 + Duration::from_secs(3),
            1003.0,
        );
        assert_eq!(rates(&s), [("a".into(), 15.0, 0)]);
    }

    #[test]
    fn new_and_reset_targets_count_from_zero() {
        let mut h = History::default();
        let t0 = Instant::now();
        h.record(&balancer(&[("a", 500, 0)]), t0, 0.0);
        let s = h.record(&balancer(&[("a", 4, 0), ("b", 7, 3)]), t0 + INTERVAL, 1.0);
        assert_eq!(rates(&s), [("a".into(), 4.0, 0), ("b".into(), 7.0, 3)]);
        // Gone, then back: its old total is forgotten.
        h.record(&balancer(&[("b", 8, 0)]), t0 + 2 * INTERVAL, 2.0);
        let s = h.record(
            &balancer(&[("a", 2, 0), ("b", 8, 0)]),
            t0 + 3 * INTERVAL,
            3.0,
        );
        assert_eq!(rates(&s), [("a".into(), 2.0, 0), ("b".into(), 0.0, 0)]);
    }

    #[test]
    fn keeps_the_last_five_minutes_oldest_first() {
        let mut h = History::default();
        let t0 = Instant::now();
        for i in 0..CAPACITY + 20 {
            h.record(
                &balancer(&[("a", i as u64, 0)]),
                t0 + INTERVAL * i as u32,
                i as f64,
            );
        }
        let v = h.view();
        assert_eq!(v.capacity, 300);
        assert_eq!(v.interval_seconds, 1.0);
        assert_eq!(v.samples.len(), CAPACITY);
        assert_eq!(v.samples[0].time, 20.0);
        assert_eq!(v.samples[CAPACITY - 1].time, (CAPACITY + 19) as f64);
        assert_eq!(v.samples[CAPACITY - 1].targets[0].new_flows_per_second, 1.0);
    }
}
