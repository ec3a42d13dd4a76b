//! Registering datasets with their RUN membership and datastore records:
//! the registry's hot write path (ingest, merge). Reports datasets/second.
//!
//! `QUANTA_BENCH_DATASETS` sets the batch size (default 1,000,000).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use quanta_registry::OnConflict;

#[path = "support.rs"]
mod support;

use support::{datasets, fresh_registry};

fn n_datasets() -> usize {
    std::env::var("QUANTA_BENCH_DATASETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn bench_insert(c: &mut Criterion) {
    let n = n_datasets();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("registry");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("insert_datasets/{n}"), |b| {
        b.iter_batched(
            || (fresh_registry(dir.path(), n), datasets(n)),
            |(mut registry, new)| {
                let stats = registry
                    .insert_datasets("run", "calexp", &new, OnConflict::Fail)
                    .unwrap();
                assert_eq!(stats.inserted, n);
                registry
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_insert);
criterion_main!(benches);
