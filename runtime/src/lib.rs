//! The quanta runtime: the task API and task registry, and the executors
//! that run a bundle's quanta on this machine (`quanta run`) or on a batch
//! node (`quanta worker`).
//!
//! Owns: [`PipelineTask`] and [`TaskContext`] (what a Rust task sees), the
//! [`TaskRegistry`] of task classes, the external-command task kind (JSON
//! manifest + child process), the Python task kind ([`python_task`]: a
//! persistent interpreter per worker slot, fed quanta over a pipe), scheduling with retries, timeouts,
//! fail-fast, blocking and resume ([`execute`]), and running a bundle on
//! a batch system ([`batch`]: the engine-neutral plan, state file, restart
//! policy and memory supervisor, and the [`batch::BatchEngine`] trait with
//! its Slurm, Grid Engine and HTCondor engines, looked up by name with
//! [`batch::engine`]; [`slurm`] is `batch::slurm`).
//!
//! Must not: talk to the SQL Registry. Workers see only the bundle, the
//! datastore and the journals, through `quanta-limited-registry`.

pub mod batch;
mod command;
mod error;
mod executor;
mod lock;
mod process_tree;
pub mod python_task;
mod schedule;
mod state;
mod task;

pub use batch::slurm;
pub use error::RuntimeError;
pub use executor::{
    execute, parse_quantum_list, ExecOptions, Progress, RunSummary, Selection, Unfinished,
};
pub use task::{PipelineTask, TaskConstructor, TaskContext, TaskError, TaskRegistry};
