//! The quanta runtime: the task API and task registry, and the executors
//! that run a bundle's quanta on this machine (`quanta run`) or on a batch
//! node (`quanta worker`).
//!
//! Owns: [`PipelineTask`] and [`TaskContext`] (what a Rust task sees), the
//! [`TaskRegistry`] of task classes, the external-command task kind (JSON
//! manifest + child process), scheduling with retries, timeouts,
//! fail-fast, blocking and resume ([`execute`]).
//!
//! Must not: talk to the SQL Registry. Workers see only the bundle, the
//! datastore and the journals, through `quanta-limited-registry`.

mod command;
mod error;
mod executor;
mod lock;
mod process_tree;
mod schedule;
pub mod slurm;
mod state;
mod task;

pub use error::RuntimeError;
pub use executor::{
    execute, parse_quantum_list, ExecOptions, Progress, RunSummary, Selection, Unfinished,
};
pub use task::{PipelineTask, TaskConstructor, TaskContext, TaskError, TaskRegistry};
