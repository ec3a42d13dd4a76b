//! Example quanta tasks: the reference scatter/gather workload of
//! TARGET.md as Rust tasks (`examples.Isr`, `examples.Characterize`,
//! `examples.Summarize`), [`reference`], which writes a reference
//! bundle (raw inputs in a datastore + quanta) without a Registry, for tests
//! and benchmarks, and [`fits`], a realistic pipeline on FITS images
//! (`examples.fits.*`) with its formatters and repo builder, and [`coadd`],
//! warps and coadds of a synthetic survey on a grid skymap
//! (`examples.coadd.*`).
//!
//! Every reference example task also takes two test hooks in its config:
//! `fail_on` (a data ID subset, or a list of them: the task fails on
//! matching quanta) and `sleep_ms` (sleep before working).

pub mod coadd;
pub mod fits;
pub mod reference;
mod tasks;
pub mod workload;

pub use tasks::{register, task_registry, Characterize, Isr, Summarize};

use std::sync::Arc;

use quanta_datastore::{Formatter, FormatterRegistry};

/// The built-in formatters plus those of the example pipelines' storage
/// classes: what a process running the example tasks must be able to read
/// and write.
pub fn formatters() -> FormatterRegistry {
    let mut registry = FormatterRegistry::default();
    for f in [
        Arc::new(fits::FitsImageFormatter) as Arc<dyn Formatter>,
        Arc::new(fits::FitsCatalogFormatter),
    ] {
        // Fixed names, storage classes and extensions, distinct from the
        // built-ins: the unit test below proves registration succeeds.
        if let Err(e) = registry.register(f) {
            unreachable!("the FITS formatters are valid and distinct: {e}");
        }
    }
    registry
}

/// The reference pipeline (isr → characterize → summarize), embedded so that
/// `quanta demo` runs from any directory.
pub const REFERENCE_PIPELINE_YAML: &str = include_str!("../pipelines/reference.yaml");

/// The FITS pipeline (isr → background → detect → summarize), embedded for
/// `quanta demo --pipeline fits`.
pub const FITS_PIPELINE_YAML: &str = include_str!("../pipelines/fits.yaml");

/// The coadd pipeline (makeWarp → assembleCoadd → detectCoadd), embedded
/// for `quanta demo --pipeline coadd`.
pub const COADD_PIPELINE_YAML: &str = include_str!("../pipelines/coadd.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatters_serve_the_fits_storage_classes() {
        let f = formatters();
        assert_eq!(
            f.storage_classes(),
            ["Bytes", "ImageF", "Json", "SourceCatalog"]
        );
        assert_eq!(
            f.for_storage_class(fits::IMAGE_STORAGE_CLASS)
                .unwrap()
                .name(),
            fits::FitsImageFormatter::NAME
        );
        let tasks = task_registry();
        for class in [
            "examples.fits.Isr",
            "examples.fits.Background",
            "examples.fits.Detect",
            "examples.fits.Summarize",
            "examples.coadd.MakeWarp",
            "examples.coadd.AssembleCoadd",
        ] {
            assert!(tasks.contains(class), "{class}");
        }
    }
}
