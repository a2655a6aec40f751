//! The report from a sample `results.json` (the shape `bench/run` writes).

use crate::metrics::{rows, Cell, Row};
use crate::results::Results;

const SAMPLE: &str = include_str!("../testdata/sample-results.json");

fn sample() -> Results {
    serde_json::from_str(SAMPLE).expect("the sample parses")
}

fn row<'a>(rows: &'a [Row], short: &str) -> &'a Row {
    rows.iter().find(|r| r.short == short).expect(short)
}

#[test]
fn medians_ratios_and_goals_from_the_sample() {
    let r = sample();
    let rows = rows(&r);
    let ka = row(&rows, "keep-alive req/s");
    assert_eq!(ka.haproxy_squid, Cell::Num(12000.0));
    assert_eq!(ka.proxyfleet, Cell::Num(36000.0));
    assert_eq!(ka.ratio(), Some(3.0));
    assert_eq!(ka.goal_met(), Some(true));
    assert_eq!(ka.of_direct(crate::results::Side::Proxyfleet), Some(0.6));

    // HAProxy + ATS, the fast peer: 36000 / 24000 = 1.5 (its goal), p99 3 / 4 ms.
    assert_eq!(ka.haproxy_ats, Cell::Num(24000.0));
    assert_eq!(ka.ratio_ats(), Some(1.5));
    assert_eq!(ka.goal_ats_met(), Some(true));
    assert_eq!(row(&rows, "keep-alive p99").ratio_ats(), Some(0.75));
    assert_eq!(row(&rows, "keep-alive p99").goal_ats_met(), Some(false));
    // A side not measured in a mode has no figure there.
    assert_eq!(row(&rows, "new conn req/s").haproxy_ats, Cell::Missing);

    let p99 = row(&rows, "keep-alive p99");
    assert_eq!(p99.ratio(), Some(0.5));
    assert_eq!(p99.advantage(), Some(2.0));
    assert_eq!(p99.goal_met(), Some(true));

    // 100 MiB x 2 in 0.8 s vs 0.25 s; direct is the plain download for both bulk rows.
    let http = row(&rows, "HTTP bulk");
    assert!((http.haproxy_squid.num().unwrap() - 262.144).abs() < 1e-9);
    assert!((http.ratio().unwrap() - 3.2).abs() < 1e-9);
    let connect = row(&rows, "CONNECT bulk");
    assert_eq!(connect.direct, http.direct);

    // (90960 - 50000 + 2048) KiB over 2000 connections = 21.0 MiB per 1,000.
    let mem = row(&rows, "idle mem (partial)");
    assert!((mem.haproxy_squid.num().unwrap() - 21.0).abs() < 1e-9);
    assert!((mem.proxyfleet.num().unwrap() - 2.5).abs() < 1e-9);
    assert_eq!(mem.goal_met(), Some(true));

    // Efficiency: 72000 requests / 2 CPU-s.
    assert_eq!(row(&rows, "efficiency (ka)").proxyfleet, Cell::Num(36000.0));

    let failed = row(&rows, "failover: failed new");
    assert_eq!(failed.haproxy_squid, Cell::Num(8.0));
    assert_eq!(failed.proxyfleet, Cell::Num(0.0));
    assert_eq!(
        failed.ratio(),
        None,
        "counts of rare events are not compared"
    );
    assert_eq!(failed.goal_met(), Some(true));
    assert!(matches!(
        row(&rows, "failover: replacement").haproxy_squid,
        Cell::Text(_)
    ));
}

#[test]
fn markdown_has_the_table_goals_failover_and_setup() {
    let r = sample();
    let md = crate::markdown::render(&r, &rows(&r), "results.svg");
    assert!(md.contains("![ratios](results.svg)"));
    assert!(md.contains(
        "| keep-alive requests/s (50 connections) | req/s | 12000 | 24000 | 36000 | 3.00 | 1.50 | higher is better: proxyfleet | 60000 | 0.20 | 0.40 | 0.60 |"
    ));
    assert!(md.contains("against HAProxy + Squid: **met** (ratio 3.000; goal: ratio ≥ 3)"));
    assert!(md.contains("against HAProxy + ATS: **met** (ratio 1.500; goal: ratio ≥ 1.5)"));
    assert!(md.contains("keep-alive p99, worst round against HAProxy + ATS's worst: **not met**"));
    assert!(md.contains("none: the dead Squid stays down"));
    assert!(md.contains("| proxyfleet | 1 | i-4d7cd5172cf9 127.33.1.11 | 20000 | 10 | 0 | – |"));
    assert!(md.contains("| 8 (read 8) | 900.0 | 1800 |"));
    // A pipe in the CPU model must not break the table.
    assert!(md.contains("Test CPU \\| model"));
    assert!(md.contains("- command: `DURATION=2 RUNS=1 bench/run`"));
    assert!(md.contains("- squid: Squid Cache: Version 5.7"));
}

#[test]
fn chart_is_an_svg_with_both_panels() {
    let r = sample();
    let svg = crate::chart::render(&rows(&r), "test").expect("draws");
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("keep-alive req/s"));
    assert!(svg.contains("goal 3×"));
    assert!(svg.contains("share of direct"));
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn a_run_without_failover_or_idle_still_renders() {
    let mut r = sample();
    r.failover.clear();
    r.idle.clear();
    let rows = rows(&r);
    let md = crate::markdown::render(&r, &rows, "x.svg");
    assert!(md.contains("**not measured**"));
    assert!(crate::chart::render(&rows, "t").is_ok());
}
