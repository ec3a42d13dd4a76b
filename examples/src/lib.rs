//! Example quanta tasks: the reference scatter/gather workload of
//! TARGET.md as Rust tasks (`examples.Isr`, `examples.Characterize`,
//! `examples.Summarize`), [`reference`], which writes a reference
//! bundle (raw inputs in a datastore + quanta) without a Registry, for tests
//! and benchmarks, and [`fits`], a realistic pipeline on FITS images
//! (`examples.fits.*`) with its repo builder (its formats are
//! `quanta-formats`'), and [`coadd`],
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

/// The reference pipeline (isr → characterize → summarize), embedded so that
/// `quanta demo` runs from any directory.
pub const REFERENCE_PIPELINE_YAML: &str = include_str!("../pipelines/reference.yaml");

/// The reference pipeline with its three tasks in Python
/// (`python: reference_tasks:…`), for `quanta demo --python`.
pub const REFERENCE_PYTHON_PIPELINE_YAML: &str = include_str!("../pipelines/reference_python.yaml");

/// The Python module of those tasks (`examples/python/reference_tasks.py`),
/// written beside the demo's pipeline and put on the workers' PYTHONPATH.
pub const REFERENCE_PYTHON_TASKS: &str = include_str!("../python/reference_tasks.py");

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
    fn the_example_task_classes_are_registered() {
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
