//! The limited registry of a quanta worker: everything a batch node needs to
//! run quanta, from a bundle alone.
//!
//! Owns: resolving a quantum's input refs to datastore paths and checking
//! they exist ([`LimitedRegistry`]), get/put for tasks restricted to the
//! outputs the bundle predicted ([`LimitedButler`]), and recording provenance
//! (started/finished records, outputs with size and checksum, inputs used,
//! CPU, wall time, peak memory, log tail) into a worker's journal
//! ([`WorkerJournal`]).
//!
//! Must not: open a database. No SQL dependency is allowed in this crate;
//! everything comes from the bundle header (datastore root and
//! configuration, output RUN, clobber) and its quanta.
//!
//! # Overwrite rule
//!
//! An output is written at the path the bundle predicted, atomically (temp
//! file + link/rename), so a reader never sees half a file. An existing file
//! at that path is replaced only if the bundle was made with `--clobber`, or
//! if the caller says the file is this quantum's own leftover (a journal
//! shows an earlier attempt of this quantum that never succeeded — see
//! `quanta-runtime`). Otherwise the write fails with
//! [`LimitedRegistryError::WouldOverwrite`] naming the file.

mod butler;
mod error;
mod journal;
mod log_tail;
mod usage;

pub use butler::{LimitedButler, LimitedRegistry};
pub use error::LimitedRegistryError;
pub use journal::{host_name, QuantumOutcome, WorkerJournal};
pub use log_tail::{LogTail, LOG_TAIL_LINES};
pub use usage::{peak_rss_bytes, thread_cpu_seconds, ResourceUsage};
