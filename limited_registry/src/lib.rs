//! The limited registry of a quanta worker: everything a batch node needs to
//! run quanta, from a bundle alone.
//!
//! Owns: the [`LimitedButler`] trait every butler a task runs against
//! implements (get/put of resolved refs, existence, dimension records; the
//! full repository's `quanta_butler::Butler` implements it too), resolving
//! a quantum's input refs to datastore paths and checking they exist
//! ([`LimitedRegistry`]), the bundle-backed butler, restricted to the
//! outputs the bundle predicted ([`QuantumBackedButler`]), and recording provenance
//! (started/finished records, outputs with size and checksum, inputs used,
//! CPU, wall time, peak memory, log tail) into a worker's journal
//! ([`WorkerJournal`]).
//!
//! Must not: open a database. No SQL dependency is allowed in this crate;
//! everything comes from the bundle header (datastore root and
//! configuration, output RUN, clobber), its quanta, and its
//! dimension-records block (a task may read the records of its quantum's
//! data ID, e.g. a patch's region; decoded once per process).
//!
//! # Overwrite rule
//!
//! An output is written at the path the bundle predicted, atomically (temp
//! file + link/rename), so a reader never sees half a file. The path
//! belongs to exactly one quantum. An existing file there is replaced if
//! the bundle was made with `--clobber`, or if the caller says it is this
//! quantum's own leftover (a journal shows an earlier attempt of this
//! quantum that never succeeded — see `quanta-runtime`). Otherwise its
//! writer is unknown (the journal records of the attempt that wrote it were
//! lost or damaged, or someone put it there): it is moved aside into
//! `<root>/.quarantine/<bundle id>/<path>` with a warning naming it, never
//! deleted, and the output is written. A quantum is therefore never wedged
//! by a file at its own path; [`LimitedRegistryError::WouldOverwrite`] is
//! left only for a file that reappears after being moved aside.
//!
//! Callers hold the execution lock of the quanta they run (see
//! `quanta-runtime`), so nobody else writes these paths meanwhile.

mod butler;
mod error;
mod journal;
mod limited_butler;
mod log_tail;
mod usage;

pub use butler::{LimitedRegistry, QuantumBackedButler, QUARANTINE_DIR};
pub use error::LimitedRegistryError;
pub use journal::{QuantumOutcome, WorkerJournal};
pub use limited_butler::{record_matches, DimensionRecord, LimitedButler, ReadSpec};
pub use log_tail::{LogTail, LOG_TAIL_LINES};
pub use quanta_core::host_name;
pub use usage::{peak_rss_bytes, thread_cpu_seconds, ResourceUsage};
