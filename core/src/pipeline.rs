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
    /// A Python task, `package.module:Class`: a subclass of
    /// `quanta.PipelineTask` run in a persistent interpreter per worker
    /// slot (`quanta-runtime`'s `python_task`), imported once per
    /// interpreter and called per quantum.
    Python(String),
}

impl TaskKind {
    /// How the kind is shown (`bundle show`, the campaign page): the Rust
    /// class, the command line, or `python: module:Class`.
    pub fn describe(&self) -> String {
        match self {
            TaskKind::Class(c) => c.clone(),
            TaskKind::Command(c) => c.join(" "),
            TaskKind::Python(t) => format!("python: {t}"),
        }
    }
}

/// Checks a Python task target, `package.module:Class`: dotted Python
/// identifiers, one colon, a class name. Returns what is wrong.
pub fn check_python_target(target: &str) -> Result<(), String> {
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
    };
    let Some((module, class)) = target.split_once(':') else {
        return Err(format!(
            "`{target}` is not `package.module:Class` (no `:` before the class name)"
        ));
    };
    if !module.split('.').all(ident) {
        return Err(format!(
            "`{module}` in `{target}` is not a dotted Python module name"
        ));
    }
    if !ident(class) {
        return Err(format!(
            "`{class}` in `{target}` is not a Python class name"
        ));
    }
    Ok(())
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

mod yaml;

pub use yaml::{ConnectionKind, LoadedPipeline, PipelineError};

impl Connection {
    /// The dataset type this connection reads or writes, its dimensions
    /// conformed against `universe`.
    pub fn dataset_type(
        &self,
        universe: &crate::DimensionUniverse,
    ) -> Result<crate::DatasetType, crate::CoreError> {
        Ok(crate::DatasetType {
            name: self.dataset_type.clone(),
            dimensions: universe.conform(&self.dimensions)?,
            storage_class: self.storage_class.clone(),
            is_calibration: self.is_calibration,
        })
    }
}

impl Connection {
    /// The dataset type stored: the parent of a component connection
    /// (`calexp` for `calexp.wcs`), else the connection's own.
    pub fn parent_dataset_type(&self) -> &str {
        crate::storage_class::split_component(&self.dataset_type).0
    }

    /// The component this connection reads (`wcs` for `calexp.wcs`).
    pub fn component(&self) -> Option<&str> {
        crate::storage_class::split_component(&self.dataset_type).1
    }
}

impl TaskDef {
    /// Every connection with its kind, in declaration order.
    pub fn connections(&self) -> impl Iterator<Item = (ConnectionKind, &Connection)> {
        self.inputs
            .iter()
            .map(|c| (ConnectionKind::Input, c))
            .chain(
                self.prerequisites
                    .iter()
                    .map(|c| (ConnectionKind::Prerequisite, c)),
            )
            .chain(self.outputs.iter().map(|c| (ConnectionKind::Output, c)))
            .chain(
                self.init_outputs
                    .iter()
                    .map(|c| (ConnectionKind::InitOutput, c)),
            )
    }
}

impl Pipeline {
    /// Dataset type names that some task's outputs or init-outputs produce.
    pub fn produced(&self) -> std::collections::BTreeSet<&str> {
        self.tasks
            .iter()
            .flat_map(|t| t.outputs.iter().chain(&t.init_outputs))
            .map(|c| c.dataset_type.as_str())
            .collect()
    }

    /// Dataset type names read as regular inputs but produced by no task:
    /// what the pipeline needs from the input collections. An input of a
    /// component (`calexp.wcs`) needs its parent (`calexp`).
    pub fn overall_inputs(&self) -> Vec<&str> {
        let produced = self.produced();
        let mut out: Vec<&str> = Vec::new();
        for t in &self.tasks {
            for c in &t.inputs {
                let parent = c.parent_dataset_type();
                if !produced.contains(parent) && !out.contains(&parent) {
                    out.push(parent);
                }
            }
        }
        out
    }

    /// A digest of the resolved pipeline (not of its text, so comments and
    /// layout do not change it).
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).expect("pipelines serialize to JSON");
        crate::hash::blake3_hex(json.as_bytes())
    }
}
