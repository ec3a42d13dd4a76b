//! quanta-spatial's hot paths: pixelizing detector-sized polygons at a
//! skypix level (done at insert for every region) and the exact overlap
//! refine of a spatial join (decoded and straight from the blobs).
//!
//! `QUANTA_BENCH_REGIONS` sets the number of polygons (default 250,000).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quanta_spatial::skymap::GridTract;
use quanta_spatial::Region;
use std::hint::black_box;

fn n_regions() -> usize {
    std::env::var("QUANTA_BENCH_REGIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000)
}

/// `n` polygons about 0.2° across: the patches of 2°×2° grid tracts
/// spread over the sky.
fn detector_polygons(n: usize) -> Vec<Region> {
    let mut out = Vec::with_capacity(n);
    for k in 0u32.. {
        let ra = (f64::from(k) * 7.3) % 360.0;
        let dec = (f64::from(k) * 3.7) % 160.0 - 80.0;
        let tract = GridTract::from_corners((ra, dec), (ra + 2.0, dec + 2.0), 10, 10).unwrap();
        for id in 0..tract.patch_count() {
            if out.len() == n {
                return out;
            }
            let (i, j) = tract.patch_indices(id);
            out.push(Region::Polygon(tract.patch_polygon(i, j)));
        }
    }
    out
}

fn bench_spatial(c: &mut Criterion) {
    let regions = detector_polygons(n_regions());
    let blobs: Vec<Vec<u8>> = regions.iter().map(Region::encode).collect();
    let mut group = c.benchmark_group("spatial");
    group.sample_size(10);
    group.throughput(Throughput::Elements(regions.len() as u64));
    group.bench_function(format!("healpix_pixels_level8/{}", regions.len()), |b| {
        b.iter(|| {
            regions
                .iter()
                .map(|r| r.healpix_pixels(8).len())
                .sum::<usize>()
        })
    });
    let pairs = regions.len().min(1000);
    group.throughput(Throughput::Elements((pairs * pairs) as u64));
    group.bench_function(format!("overlaps/{pairs}x{pairs}"), |b| {
        b.iter(|| {
            let r = &regions[..pairs];
            r.iter()
                .flat_map(|a| r.iter().map(move |b| a.overlaps(b)))
                .filter(|o| *o)
                .count()
        })
    });
    group.bench_function(format!("overlaps_encoded/{pairs}x{pairs}"), |b| {
        b.iter(|| {
            let r = &blobs[..pairs];
            r.iter()
                .flat_map(|a| r.iter().map(move |b| Region::overlaps_encoded(a, b)))
                .filter(|o| matches!(o, Ok(true)))
                .count()
        })
    });
    group.finish();
    black_box(&blobs);
}

criterion_group!(benches, bench_spatial);
criterion_main!(benches);
