//! The report's rows: one figure per side for each metric (the median over the rounds), the
//! ratios proxyfleet ÷ HAProxy + Squid and proxyfleet ÷ HAProxy + ATS, the direct (unproxied)
//! figure, and the goals against each peer.

use crate::results::{BulkMode, IdleMode, Results, Side, WrkMode, WrkRun};
use crate::stats::{median, ratio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A target from the issue, stated on a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// proxyfleet ÷ HAProxy + Squid at least this.
    RatioAtLeast(f64),
    /// proxyfleet ÷ HAProxy + Squid at most this.
    RatioAtMost(f64),
    /// proxyfleet's figure is 0.
    Zero,
}

/// One side's figure for a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Num(f64),
    /// A statement instead of a number (e.g. "none").
    Text(String),
    /// Not measured, or nothing to measure.
    Missing,
}

impl Cell {
    pub fn num(&self) -> Option<f64> {
        match self {
            Cell::Num(v) => Some(*v),
            _ => None,
        }
    }

    fn from(v: Option<f64>) -> Cell {
        v.map_or(Cell::Missing, Cell::Num)
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    /// For the chart's axis.
    pub short: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub decimals: usize,
    pub haproxy_squid: Cell,
    /// HAProxy + Apache Traffic Server (missing in runs without that side).
    pub haproxy_ats: Cell,
    pub proxyfleet: Cell,
    pub direct: Cell,
    pub goal: Option<Goal>,
    /// The goal against HAProxy + ATS, on [`Row::ratio_ats`].
    pub goal_ats: Option<Goal>,
    /// The ratio of the two sides means something (not for counts of rare events).
    pub comparable: bool,
}

impl Row {
    /// proxyfleet ÷ HAProxy + Squid.
    pub fn ratio(&self) -> Option<f64> {
        if !self.comparable {
            return None;
        }
        ratio(self.proxyfleet.num(), self.haproxy_squid.num())
    }

    /// proxyfleet ÷ HAProxy + ATS.
    pub fn ratio_ats(&self) -> Option<f64> {
        if !self.comparable {
            return None;
        }
        ratio(self.proxyfleet.num(), self.haproxy_ats.num())
    }

    /// [`Row::goal_met`] against HAProxy + ATS.
    pub fn goal_ats_met(&self) -> Option<bool> {
        goal_met(self.goal_ats?, self.ratio_ats(), &self.proxyfleet)
    }

    /// How many times better proxyfleet is (above 1: better, whichever way the metric goes).
    pub fn advantage(&self) -> Option<f64> {
        let r = self.ratio()?;
        match self.better {
            Better::Higher => Some(r),
            Better::Lower => (r > 0.0).then(|| 1.0 / r),
        }
    }

    /// A side's figure ÷ the direct figure.
    pub fn of_direct(&self, side: Side) -> Option<f64> {
        let v = match side {
            Side::HaproxySquid => self.haproxy_squid.num(),
            Side::HaproxyAts => self.haproxy_ats.num(),
            Side::Proxyfleet => self.proxyfleet.num(),
            Side::Direct => return None,
        };
        ratio(v, self.direct.num())
    }

    /// A side's figure as a share of the direct one, oriented so that 1 = as good as no proxy
    /// and less is worse (for "lower is better" metrics: direct ÷ side).
    pub fn closeness_to_direct(&self, side: Side) -> Option<f64> {
        let r = self.of_direct(side)?;
        match self.better {
            Better::Higher => Some(r),
            Better::Lower => (r > 0.0).then(|| 1.0 / r),
        }
    }

    /// `Some(true)` when the goal is met, `None` without a goal or a figure.
    pub fn goal_met(&self) -> Option<bool> {
        goal_met(self.goal?, self.ratio(), &self.proxyfleet)
    }

    /// The goal in words, as a threshold on the ratio column (or on proxyfleet's figure).
    pub fn goal_text(&self) -> Option<String> {
        self.goal.map(goal_text)
    }

    /// [`Row::goal_text`] against HAProxy + ATS.
    pub fn goal_ats_text(&self) -> Option<String> {
        self.goal_ats.map(goal_text)
    }

    /// The goal as a level of [`Row::advantage`], for the chart.
    pub fn goal_advantage(&self) -> Option<f64> {
        match self.goal? {
            Goal::RatioAtLeast(g) => Some(match self.better {
                Better::Higher => g,
                Better::Lower => 1.0 / g,
            }),
            Goal::RatioAtMost(g) => Some(match self.better {
                Better::Higher => g,
                Better::Lower => 1.0 / g,
            }),
            Goal::Zero => None,
        }
    }
}

fn goal_met(goal: Goal, ratio: Option<f64>, proxyfleet: &Cell) -> Option<bool> {
    match goal {
        Goal::RatioAtLeast(g) => Some(ratio? >= g),
        Goal::RatioAtMost(g) => Some(ratio? <= g),
        Goal::Zero => Some(proxyfleet.num()? == 0.0),
    }
}

fn goal_text(goal: Goal) -> String {
    match goal {
        Goal::RatioAtLeast(g) => format!("ratio ≥ {g}"),
        Goal::RatioAtMost(g) => format!("ratio ≤ {g}"),
        Goal::Zero => "proxyfleet: 0".to_string(),
    }
}

fn wrk_median(r: &Results, side: Side, mode: WrkMode, f: impl Fn(&WrkRun) -> f64) -> Option<f64> {
    median(
        r.wrk
            .iter()
            .filter(|w| w.side == side && w.mode == mode)
            .map(f),
    )
}

/// Requests per CPU-second of the side's processes, over all its runs of that mode.
fn wrk_efficiency(r: &Results, side: Side, mode: WrkMode) -> Option<f64> {
    let (req, cpu) = r
        .wrk
        .iter()
        .filter(|w| w.side == side && w.mode == mode)
        .fold((0u64, 0.0), |(q, c), w| (q + w.requests, c + w.side_cpu_s));
    (cpu > 0.0).then(|| req as f64 / cpu)
}

fn bulk_median(r: &Results, side: Side, mode: BulkMode) -> Option<f64> {
    median(
        r.bulk
            .iter()
            .filter(|b| b.side == side && b.mode == mode)
            .filter_map(|b| b.mb_per_s()),
    )
}

fn idle_median(r: &Results, side: Side, mode: IdleMode) -> Option<f64> {
    median(
        r.idle
            .iter()
            .filter(|i| i.side == side && i.mode == mode)
            .filter_map(|i| i.mib_per_1000()),
    )
}

fn failover_sum(r: &Results, side: Side, f: impl Fn(&crate::results::FailoverRun) -> u64) -> Cell {
    let runs: Vec<_> = r.failover.iter().filter(|f| f.side == side).collect();
    if runs.is_empty() {
        return Cell::Missing;
    }
    Cell::Num(runs.iter().map(|x| f(x)).sum::<u64>() as f64)
}

fn failover_median(
    r: &Results,
    side: Side,
    f: impl Fn(&crate::results::FailoverRun) -> Option<f64>,
) -> Option<f64> {
    median(r.failover.iter().filter(|x| x.side == side).filter_map(f))
}

/// Every row of the report, in order.
pub fn rows(r: &Results) -> Vec<Row> {
    let conns = r.settings.conns;
    let wrk_row = |metric: String,
                   short: &'static str,
                   unit: &'static str,
                   better: Better,
                   decimals: usize,
                   mode: WrkMode,
                   f: fn(&WrkRun) -> f64,
                   (goal, goal_ats): (Option<Goal>, Option<Goal>)| Row {
        metric,
        short,
        unit,
        better,
        decimals,
        haproxy_squid: Cell::from(wrk_median(r, Side::HaproxySquid, mode, f)),
        haproxy_ats: Cell::from(wrk_median(r, Side::HaproxyAts, mode, f)),
        proxyfleet: Cell::from(wrk_median(r, Side::Proxyfleet, mode, f)),
        direct: Cell::from(wrk_median(r, Side::Direct, mode, f)),
        goal,
        goal_ats,
        comparable: true,
    };
    let mut rows = vec![
        wrk_row(
            format!("keep-alive requests/s ({conns} connections)"),
            "keep-alive req/s",
            "req/s",
            Better::Higher,
            0,
            WrkMode::Keepalive,
            |w| w.rps,
            (Some(Goal::RatioAtLeast(3.0)), Some(Goal::RatioAtLeast(1.5))),
        ),
        wrk_row(
            format!("keep-alive p50 latency ({conns} connections)"),
            "keep-alive p50",
            "ms",
            Better::Lower,
            2,
            WrkMode::Keepalive,
            |w| w.p50_us / 1000.0,
            (None, None),
        ),
        wrk_row(
            format!("keep-alive p99 latency ({conns} connections)"),
            "keep-alive p99",
            "ms",
            Better::Lower,
            2,
            WrkMode::Keepalive,
            |w| w.p99_us / 1000.0,
            (Some(Goal::RatioAtMost(0.5)), Some(Goal::RatioAtMost(0.5))),
        ),
        wrk_row(
            format!("one request per connection: requests/s ({conns} concurrent)"),
            "new conn req/s",
            "req/s",
            Better::Higher,
            0,
            WrkMode::Close,
            |w| w.rps,
            (None, None),
        ),
        wrk_row(
            format!("one request per connection: p99 latency ({conns} concurrent)"),
            "new conn p99",
            "ms",
            Better::Lower,
            2,
            WrkMode::Close,
            |w| w.p99_us / 1000.0,
            (None, None),
        ),
    ];
    let direct_bulk = bulk_median(r, Side::Direct, BulkMode::Http);
    for (mode, metric, short) in [
        (
            BulkMode::Http,
            "plain-HTTP bulk download (100 MiB objects)",
            "HTTP bulk",
        ),
        (
            BulkMode::Connect,
            "CONNECT-tunnel bulk download (100 MiB objects)",
            "CONNECT bulk",
        ),
    ] {
        rows.push(Row {
            metric: metric.to_string(),
            short,
            unit: "MB/s",
            better: Better::Higher,
            decimals: 0,
            haproxy_squid: Cell::from(bulk_median(r, Side::HaproxySquid, mode)),
            haproxy_ats: Cell::from(bulk_median(r, Side::HaproxyAts, mode)),
            proxyfleet: Cell::from(bulk_median(r, Side::Proxyfleet, mode)),
            direct: Cell::from(direct_bulk),
            goal: Some(Goal::RatioAtLeast(1.0)),
            goal_ats: None,
            comparable: true,
        });
    }
    for (mode, metric, short) in [
        (
            IdleMode::Partial,
            "memory per 1,000 idle client connections (partial request sent)",
            "idle mem (partial)",
        ),
        (
            IdleMode::Silent,
            "memory per 1,000 idle client connections (nothing sent)",
            "idle mem (silent)",
        ),
    ] {
        rows.push(Row {
            metric: metric.to_string(),
            short,
            unit: "MiB",
            better: Better::Lower,
            decimals: 2,
            haproxy_squid: Cell::from(idle_median(r, Side::HaproxySquid, mode)),
            haproxy_ats: Cell::from(idle_median(r, Side::HaproxyAts, mode)),
            proxyfleet: Cell::from(idle_median(r, Side::Proxyfleet, mode)),
            direct: Cell::Missing,
            goal: Some(Goal::RatioAtMost(1.0)),
            goal_ats: None,
            comparable: true,
        });
    }
    for (mode, metric, short) in [
        (
            WrkMode::Keepalive,
            "keep-alive requests per CPU-second of the side's processes",
            "efficiency (ka)",
        ),
        (
            WrkMode::Close,
            "one request per connection: requests per CPU-second of the side's processes",
            "efficiency (new conn)",
        ),
    ] {
        rows.push(Row {
            metric: metric.to_string(),
            short,
            unit: "req/CPU-s",
            better: Better::Higher,
            decimals: 0,
            haproxy_squid: Cell::from(wrk_efficiency(r, Side::HaproxySquid, mode)),
            haproxy_ats: Cell::from(wrk_efficiency(r, Side::HaproxyAts, mode)),
            proxyfleet: Cell::from(wrk_efficiency(r, Side::Proxyfleet, mode)),
            direct: Cell::Missing,
            goal: (mode == WrkMode::Keepalive).then_some(Goal::RatioAtLeast(3.0)),
            goal_ats: None,
            comparable: true,
        });
    }
    let kills = r
        .failover
        .iter()
        .filter(|f| f.side == Side::Proxyfleet)
        .count();
    rows.push(Row {
        metric: format!(
            "failover: failed requests started after the kill (new connections; all {kills} kills)"
        ),
        short: "failover: failed new",
        unit: "requests",
        better: Better::Lower,
        decimals: 0,
        haproxy_squid: failover_sum(r, Side::HaproxySquid, |f| f.client.failed_after_kill),
        haproxy_ats: failover_sum(r, Side::HaproxyAts, |f| f.client.failed_after_kill),
        proxyfleet: failover_sum(r, Side::Proxyfleet, |f| f.client.failed_after_kill),
        direct: Cell::Missing,
        goal_ats: None,
        goal: Some(Goal::Zero),
        comparable: false,
    });
    rows.push(Row {
        metric: "failover: failed requests in flight at the kill (inside the killed proxy)"
            .to_string(),
        short: "failover: failed in flight",
        unit: "requests",
        better: Better::Lower,
        decimals: 0,
        haproxy_squid: failover_sum(r, Side::HaproxySquid, |f| f.client.failed_before_kill),
        haproxy_ats: failover_sum(r, Side::HaproxyAts, |f| f.client.failed_before_kill),
        proxyfleet: failover_sum(r, Side::Proxyfleet, |f| f.client.failed_before_kill),
        direct: Cell::Missing,
        goal_ats: None,
        goal: None,
        comparable: false,
    });
    let stall_ms = r.failover.first().map(|f| f.client.stall_ms).unwrap_or(500);
    rows.push(Row {
        metric: format!("failover: requests slower than {stall_ms} ms (all kills)"),
        short: "failover: stalled",
        unit: "requests",
        better: Better::Lower,
        decimals: 0,
        haproxy_squid: failover_sum(r, Side::HaproxySquid, |f| f.client.stalled),
        haproxy_ats: failover_sum(r, Side::HaproxyAts, |f| f.client.stalled),
        proxyfleet: failover_sum(r, Side::Proxyfleet, |f| f.client.stalled),
        direct: Cell::Missing,
        goal_ats: None,
        goal: None,
        comparable: false,
    });
    rows.push(Row {
        metric: "failover: time to detection (kill → balancer takes the proxy out)".to_string(),
        short: "failover: detection",
        unit: "s",
        better: Better::Lower,
        decimals: 2,
        haproxy_squid: Cell::from(failover_median(r, Side::HaproxySquid, |f| f.detect_s)),
        haproxy_ats: Cell::from(failover_median(r, Side::HaproxyAts, |f| f.detect_s)),
        proxyfleet: Cell::from(failover_median(r, Side::Proxyfleet, |f| f.detect_s)),
        direct: Cell::Missing,
        goal_ats: None,
        goal: None,
        comparable: false,
    });
    let no_replacement = |side: Side, what: &str| {
        if r.failover.iter().any(|f| f.side == side) {
            Cell::Text(format!("none: the dead {what} stays down"))
        } else {
            Cell::Missing
        }
    };
    rows.push(Row {
        metric: "failover: time until a replacement proxy serves (kill → healthy in the balancer)"
            .to_string(),
        short: "failover: replacement",
        unit: "s",
        better: Better::Lower,
        decimals: 2,
        haproxy_squid: no_replacement(Side::HaproxySquid, "Squid"),
        haproxy_ats: no_replacement(Side::HaproxyAts, "ATS"),
        goal_ats: None,
        proxyfleet: Cell::from(failover_median(r, Side::Proxyfleet, |f| {
            f.replacement_serving_s
        })),
        direct: Cell::Missing,
        goal: None,
        comparable: false,
    });
    rows
}
