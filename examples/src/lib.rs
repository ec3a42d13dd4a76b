//! Example quanta tasks: the reference scatter/gather workload of
//! TARGET.md as Rust tasks (`examples.Isr`, `examples.Characterize`,
//! `examples.Summarize`), and [`reference`], which writes a reference
//! bundle (raw inputs in a datastore + quanta) without a Registry, for tests
//! and benchmarks.
//!
//! Every example task also takes two test hooks in its config:
//! `fail_on` (a data ID subset, or a list of them: the task fails on
//! matching quanta) and `sleep_ms` (sleep before working).

pub mod reference;
mod tasks;
pub mod workload;

pub use tasks::{register, task_registry, Characterize, Isr, Summarize};

use quanta_datastore::FormatterRegistry;

/// The built-in formatters plus those of the example pipelines' storage
/// classes: what a process running the example tasks must be able to read
/// and write.
pub fn formatters() -> FormatterRegistry {
    FormatterRegistry::default()
}

/// The reference pipeline (isr → characterize → summarize), embedded so that
/// `quanta demo` runs from any directory.
pub const REFERENCE_PIPELINE_YAML: &str = include_str!("../pipelines/reference.yaml");
