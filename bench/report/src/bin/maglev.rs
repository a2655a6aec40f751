//! `proxyfleet-bench-maglev`: what the load balancer's Maglev table costs as a group grows
//! (bench/scale). For each target count it builds the table (what a node does when a target
//! is registered or deregistered) and resolves it against a health mask with one target out
//! (what a node does when a target's health changes), `--repeat` times each, and prints one
//! JSON line per count: median and worst times, the table's size in slots, and the bytes the
//! build and the resolved table hold — counted by this binary's allocator, not estimated.
//!
//! No peer has the same knob (HAProxy's `hash-type consistent` is a tree of points, rebuilt
//! differently), so these figures stand alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use proxyfleet_lb::maglev::Table;

/// The system allocator, counting the bytes live right now and the peak since a reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only counters are kept aside.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut counts = vec![10usize, 100, 1000];
    let mut repeat = 21usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().unwrap_or_default();
        match a.as_str() {
            "--targets" => {
                counts = value
                    .split(',')
                    .map(|n| n.parse().expect("--targets N,N,..."))
                    .collect()
            }
            "--repeat" => repeat = value.parse().expect("--repeat N"),
            _ => {
                eprintln!("usage: proxyfleet-bench-maglev [--targets 10,100,1000] [--repeat 21]");
                std::process::exit(2);
            }
        }
    }
    for n in counts {
        let keys: Vec<String> = (0..n)
            .map(|i| format!("127.61.{}.{}:8080", i / 250, i % 250 + 1))
            .collect();
        let mut eligible = vec![true; n];
        eligible[0] = false;
        let (mut build_us, mut resolve_us) = (Vec::new(), Vec::new());
        let (mut table_bytes, mut build_peak, mut resolved_bytes) = (0, 0, 0);
        let mut slots = 0;
        for _ in 0..repeat {
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let t0 = Instant::now();
            let table = Table::build(&keys);
            build_us.push(t0.elapsed().as_secs_f64() * 1e6);
            table_bytes = LIVE.load(Ordering::Relaxed) - before;
            build_peak = PEAK.load(Ordering::Relaxed) - before;
            slots = table.len();
            let mid = LIVE.load(Ordering::Relaxed);
            let t1 = Instant::now();
            let resolved = table.resolve(&eligible);
            resolve_us.push(t1.elapsed().as_secs_f64() * 1e6);
            resolved_bytes = LIVE.load(Ordering::Relaxed) - mid;
            std::hint::black_box(&resolved);
        }
        let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        println!(
            "{{\"targets\": {n}, \"slots\": {slots}, \"repeat\": {repeat}, \
             \"build_median_us\": {:.1}, \"build_worst_us\": {:.1}, \
             \"resolve_median_us\": {:.1}, \"resolve_worst_us\": {:.1}, \
             \"table_bytes\": {table_bytes}, \"build_peak_bytes\": {build_peak}, \
             \"resolved_bytes\": {resolved_bytes}}}",
            median(build_us.clone()),
            worst(&build_us),
            median(resolve_us.clone()),
            worst(&resolve_us),
        );
    }
}
