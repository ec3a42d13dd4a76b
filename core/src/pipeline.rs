//! Pipeline definitions: tasks, their dimensions and connections.
//!
//! These are the resolved, validated forms; parsing and validating the YAML
//! files users write lives beside them.

use serde::{Deserialize, Serialize};

/// How a task is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A Rust task registered under this class name (`examples.Isr`).
    Class(String),
    /// An external command; `{manifest}` in an argument is replaced by the
    /// path of the JSON manifest of the quantum's inputs and outputs.
    Command(Vec<String>),
}

/// One connection of a task: a named input, prerequisite, output or
/// init-output and the dataset type it reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub name: String,
    pub dataset_type: String,
    pub dimensions: Vec<String>,
    pub storage_class: String,
    /// A gather: all datasets matching the quantum's data ID, not just one.
    #[serde(default)]
    pub multiple: bool,
    #[serde(default)]
    pub is_calibration: bool,
}

/// A task of a pipeline, with everything preflight and the workers need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    pub label: String,
    pub kind: TaskKind,
    pub dimensions: Vec<String>,
    pub inputs: Vec<Connection>,
    pub prerequisites: Vec<Connection>,
    pub outputs: Vec<Connection>,
    pub init_outputs: Vec<Connection>,
    /// Task configuration, a JSON object.
    pub config: serde_json::Value,
}

/// A validated pipeline: tasks in a topological order (producers first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub description: String,
    pub tasks: Vec<TaskDef>,
}
