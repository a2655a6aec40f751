//! The report of `bench/run`: HAProxy + Squid against proxyfleet, the whole forward-proxy tier.
//!
//! `bench/run` measures and writes every single run to `bench/out/results.json`
//! ([`results`]); this crate aggregates them ([`stats`]: medians and ratios) into one row per
//! metric ([`metrics`]), and renders the rows as `RESULTS.md` ([`markdown`]) and a chart of
//! the ratios, `results.svg` ([`chart`]). The `proxyfleet-bench-client` binary beside it is the
//! load generator for the two measurements wrk cannot do (idle connections, failover).

pub mod chart;
pub mod markdown;
pub mod metrics;
pub mod results;
pub mod stats;

#[cfg(test)]
mod tests;
