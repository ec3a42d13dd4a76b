//! What a component or cut-out read costs next to a full read: a 4k×4k
//! `ExposureF` (image, mask and variance planes: 192 MiB) and a 4k×4k
//! `ImageF` (64 MiB) are written once, then read through
//! `Formatter::read` whole, by component, and with `bbox` (100×100). For
//! each read: the bytes the process read (`rchar` of `/proc/self/io`, every
//! `read` system call, page cache or not) and the wall time, median of
//! `--repeat` runs (files in the page cache after the first).
//!
//! `cargo run --release -p quanta-benches --example formats_io -- [--size N]
//! [--repeat R] [--dir DIR]`; figures in `benches/formats/README.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use quanta_datastore::{Formatter, ReadParameters};
use quanta_formats::fits::{
    Exposure, FitsExposureFormatter, FitsImageFormatter, Header, Image, Mask, TanWcs,
};

fn rchar() -> u64 {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn write_files(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let pixels: Vec<f32> = (0..n * n).map(|i| (i % 1000) as f32 * 0.25).collect();
    let image = Image::new(n, n, pixels).expect("image");
    let mask = Mask::new(n, n, (0..n * n).map(|i| (i % 3) as i32).collect()).expect("mask");
    let variance = Image::filled(n, n, 4.0).expect("variance");
    let wcs = TanWcs::new(
        (10.0, -5.0),
        (n as f64 / 2.0, n as f64 / 2.0),
        [[-5.6e-5, 0.0], [0.0, 5.6e-5]],
    )
    .expect("wcs");
    let metadata = Header {
        kind: Some("calexp".into()),
        exposure: Some(1),
        ..Header::default()
    };
    let mut plain = image.clone();
    plain.header.wcs = Some(wcs);
    let exposure = Exposure::new(image, mask, variance, Some(wcs), metadata).expect("exposure");
    let exp_path = dir.join("calexp.fits");
    let img_path = dir.join("image.fits");
    std::fs::write(
        &exp_path,
        FitsExposureFormatter::encode_exposure(&exposure).expect("encode"),
    )
    .expect("write");
    std::fs::write(
        &img_path,
        FitsImageFormatter::encode_image(&plain).expect("encode"),
    )
    .expect("write");
    (exp_path, img_path)
}

/// A read to measure: label, formatter, file, component, parameters.
type Case<'a> = (
    &'a str,
    &'a dyn Formatter,
    &'a Path,
    Option<&'a str>,
    &'a ReadParameters,
);

/// (median seconds, bytes read by the last run).
fn measure(
    f: &dyn Formatter,
    path: &Path,
    component: Option<&str>,
    params: &ReadParameters,
    repeat: usize,
) -> (f64, u64) {
    let mut times = Vec::with_capacity(repeat);
    let mut bytes = 0;
    for _ in 0..repeat {
        let before = rchar();
        let start = Instant::now();
        let obj = f.read(path, component, params).expect("read");
        times.push(start.elapsed().as_secs_f64());
        bytes = rchar() - before;
        drop(obj);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], bytes)
}

fn main() {
    let n: usize = arg("--size", "4096").parse().expect("--size N");
    let repeat: usize = arg("--repeat", "5").parse().expect("--repeat R");
    let base = arg("--dir", &std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base).expect("temporary directory");
    let (exp, img) = write_files(dir.path(), n);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "{n}x{n}: ExposureF file {} bytes, ImageF file {} bytes; median of {repeat} reads",
        size(&exp),
        size(&img)
    );
    let none = ReadParameters::new();
    let cut = ReadParameters::new().with("bbox", "2000,2000,2100,2100");
    let cases: [Case; 8] = [
        (
            "ExposureF full read",
            &FitsExposureFormatter,
            &exp,
            None,
            &none,
        ),
        (
            "ExposureF bbox 100x100 (all planes)",
            &FitsExposureFormatter,
            &exp,
            None,
            &cut,
        ),
        (
            "calexp.image",
            &FitsExposureFormatter,
            &exp,
            Some("image"),
            &none,
        ),
        (
            "calexp.image bbox 100x100",
            &FitsExposureFormatter,
            &exp,
            Some("image"),
            &cut,
        ),
        (
            "calexp.wcs",
            &FitsExposureFormatter,
            &exp,
            Some("wcs"),
            &none,
        ),
        (
            "calexp.metadata",
            &FitsExposureFormatter,
            &exp,
            Some("metadata"),
            &none,
        ),
        ("ImageF full read", &FitsImageFormatter, &img, None, &none),
        ("ImageF bbox 100x100", &FitsImageFormatter, &img, None, &cut),
    ];
    println!("| read | bytes read (rchar) | time (ms) |");
    println!("|---|---:|---:|");
    for (label, f, path, component, params) in cases {
        let (secs, bytes) = measure(f, path, component, params, repeat);
        println!("| {label} | {bytes} | {:.2} |", secs * 1e3);
    }
}
