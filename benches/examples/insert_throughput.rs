//! One-shot measurement of dataset registration: wall and CPU seconds for
//! inserting N datasets (argument, default 1,000,000) with datastore
//! records. CPU time is reported because a loaded machine distorts wall time.
//!
//! `insert_throughput [N] [postgresql://URL]`: with a URL, into a fresh
//! namespace of that database (dropped at the end); the CPU time is then
//! the client's only.

use std::time::Instant;

use quanta_registry::OnConflict;

#[path = "../support.rs"]
mod support;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let url = std::env::args().nth(2);
    let dir = tempfile::tempdir().unwrap();
    let (mut registry, namespace) = match &url {
        Some(url) => {
            let (registry, namespace) = support::fresh_postgres_registry(url, n);
            (registry, Some(namespace))
        }
        None => (support::fresh_registry(dir.path(), n), None),
    };
    let new = support::datasets(n);
    let (cpu0, t0) = (support::cpu_seconds(), Instant::now());
    let stats = registry
        .insert_datasets("run", "calexp", &new, OnConflict::Fail)
        .unwrap();
    let (cpu, wall) = (support::cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    assert_eq!(stats.inserted, n);
    println!(
        "inserted {n} datasets: wall {wall:.2} s ({:.0}/s), cpu {cpu:.2} s ({:.0}/s of one core)",
        n as f64 / wall,
        n as f64 / cpu.max(1e-9)
    );
    drop(registry);
    if let (Some(url), Some(namespace)) = (url, namespace) {
        quanta_registry::Registry::drop_postgres(&url, &namespace).unwrap();
    }
}
