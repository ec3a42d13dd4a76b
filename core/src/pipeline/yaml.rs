//! Parsing and validating pipeline YAML files.
//!
//! serde_yaml_ng reports line and column for syntax and shape errors, but its
//! deserialized values carry no positions, so semantic errors (an unknown
//! dimension, a dataset type produced twice, a cycle) take their line from a
//! [`SourceMap`]: an indentation scan of the text that records the line of
//! every block-style mapping key by its key path (`tasks.isr.inputs.raw`).
//! Pipelines are written in block style at the task and connection level (the
//! documented shape), which is what the scan needs; a key it cannot place
//! falls back to the line of its task, then to no line at all.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

use super::{Connection, Pipeline, TaskDef, TaskKind};
use crate::dataset::{validate_storage_class, DatasetType};
use crate::dimensions::{DimensionGroup, DimensionUniverse};

/// A pipeline error with the file and, where known, the line it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct PipelineError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// The four kinds of connection, named as in the YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    Input,
    Prerequisite,
    Output,
    InitOutput,
}

impl ConnectionKind {
    /// The YAML section holding connections of this kind.
    pub fn section(self) -> &'static str {
        match self {
            ConnectionKind::Input => "inputs",
            ConnectionKind::Prerequisite => "prerequisites",
            ConnectionKind::Output => "outputs",
            ConnectionKind::InitOutput => "init_outputs",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    description: String,
    tasks: serde_yaml_ng::Mapping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    class: Option<String>,
    command: Option<Vec<String>>,
    python: Option<String>,
    dimensions: Vec<String>,
    #[serde(default)]
    inputs: serde_yaml_ng::Mapping,
    #[serde(default, alias = "prerequisite_inputs")]
    prerequisites: serde_yaml_ng::Mapping,
    #[serde(default)]
    outputs: serde_yaml_ng::Mapping,
    #[serde(default)]
    init_outputs: serde_yaml_ng::Mapping,
    #[serde(default)]
    config: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionFile {
    dataset_type: String,
    #[serde(default)]
    dimensions: Vec<String>,
    storage_class: String,
    #[serde(default)]
    multiple: bool,
    #[serde(default)]
    is_calibration: bool,
}

/// Lines of block-style mapping keys, by key path.
#[derive(Debug, Clone, Default)]
struct SourceMap {
    lines: HashMap<Vec<String>, usize>,
}

impl SourceMap {
    fn scan(text: &str) -> Self {
        let mut lines = HashMap::new();
        let mut stack: Vec<(usize, String)> = Vec::new();
        // Inside a block scalar (`|`, `>`) every more-indented line is text.
        let mut scalar_indent: Option<usize> = None;
        for (no, raw) in text.lines().enumerate() {
            let content = raw.trim_start_matches(' ');
            let indent = raw.len() - content.len();
            let content = content.trim_end();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if let Some(si) = scalar_indent {
                if indent > si {
                    continue;
                }
                scalar_indent = None;
            }
            if content == "---" || content.starts_with("- ") || content == "-" {
                continue;
            }
            let Some(key) = mapping_key(content) else {
                continue;
            };
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            stack.push((indent, key));
            let path: Vec<String> = stack.iter().map(|(_, k)| k.clone()).collect();
            lines.entry(path).or_insert(no + 1);
            let value = content.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
            let value = value.split(" #").next().unwrap_or("").trim();
            if value.starts_with('|') || value.starts_with('>') {
                scalar_indent = Some(indent);
            }
        }
        Self { lines }
    }

    fn line(&self, path: &[&str]) -> Option<usize> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.lines.get(&key).copied()
    }
}

/// The key of a `key: value` or `key:` line, unquoted; `None` for other lines.
fn mapping_key(content: &str) -> Option<String> {
    let (key, rest) = if let Some(q) = content.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], &q[end + 1..])
    } else if let Some(q) = content.strip_prefix('\'') {
        let end = q.find('\'')?;
        (&q[..end], &q[end + 1..])
    } else {
        let end = content.find(':')?;
        let key = &content[..end];
        if key.contains([' ', '{', '[', ',']) {
            return None;
        }
        (key, &content[end..])
    };
    let rest = rest.trim_start();
    let after = rest.strip_prefix(':')?;
    (after.is_empty() || after.starts_with(' ')).then(|| key.to_string())
}

/// A pipeline loaded from YAML and validated against a universe, with what
/// is needed to point later errors (e.g. a registry conflict found at
/// preflight) at the right line.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    pub pipeline: Pipeline,
    /// The file name used in error messages.
    pub file: String,
    /// The YAML text as read.
    pub source: String,
    map: SourceMap,
}

impl LoadedPipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path, universe: &DimensionUniverse) -> Result<Self, PipelineError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError {
            file: file.clone(),
            line: None,
            message: format!("cannot read the pipeline: {e}"),
        })?;
        Self::parse(&text, &file, universe)
    }

    /// Parses and validates pipeline YAML; `file` names it in errors.
    pub fn parse(
        text: &str,
        file: &str,
        universe: &DimensionUniverse,
    ) -> Result<Self, PipelineError> {
        let map = SourceMap::scan(text);
        let mut loaded = Self {
            pipeline: Pipeline {
                description: String::new(),
                tasks: Vec::new(),
            },
            file: file.to_string(),
            source: text.to_string(),
            map,
        };
        let parsed: PipelineFile = serde_yaml_ng::from_str(text).map_err(|e| PipelineError {
            file: file.to_string(),
            line: e.location().map(|l| l.line()),
            message: strip_location(&e.to_string()),
        })?;
        loaded.pipeline.description = parsed.description;
        let mut tasks = Vec::new();
        for (label, body) in parsed.tasks {
            let label = label
                .as_str()
                .ok_or_else(|| {
                    loaded.error(
                        loaded.map.line(&["tasks"]),
                        "task labels must be strings".into(),
                    )
                })?
                .to_string();
            tasks.push(loaded.parse_task(&label, body)?);
        }
        if tasks.is_empty() {
            return Err(loaded.error(
                loaded.map.line(&["tasks"]),
                "the pipeline has no tasks".into(),
            ));
        }
        loaded.pipeline.tasks = tasks;
        loaded.validate(universe)?;
        Ok(loaded)
    }

    /// An error at `line` of this pipeline's file.
    pub fn error(&self, line: Option<usize>, message: String) -> PipelineError {
        PipelineError {
            file: self.file.clone(),
            line,
            message,
        }
    }

    /// The line of a task's label.
    pub fn task_line(&self, label: &str) -> Option<usize> {
        self.map.line(&["tasks", label])
    }

    /// The line of a connection's key, else of its section, else its task's.
    pub fn connection_line(&self, label: &str, kind: ConnectionKind, name: &str) -> Option<usize> {
        self.map
            .line(&["tasks", label, kind.section(), name])
            .or_else(|| self.map.line(&["tasks", label, kind.section()]))
            .or_else(|| self.task_line(label))
    }

    /// An error about one connection of one task, at its line.
    pub fn connection_error(
        &self,
        task: &TaskDef,
        kind: ConnectionKind,
        conn: &Connection,
        message: String,
    ) -> PipelineError {
        self.error(
            self.connection_line(&task.label, kind, &conn.name),
            format!(
                "task `{}`, {} `{}`: {message}",
                task.label,
                kind.section(),
                conn.name
            ),
        )
    }

    /// Every dataset type the pipeline uses, with the first connection that
    /// defines it (validation has checked that all agree).
    pub fn dataset_types(
        &self,
        universe: &DimensionUniverse,
    ) -> Vec<(DatasetType, &TaskDef, ConnectionKind, &Connection)> {
        let mut out: Vec<(DatasetType, &TaskDef, ConnectionKind, &Connection)> = Vec::new();
        for task in &self.pipeline.tasks {
            for (kind, conn) in task.connections() {
                if out.iter().any(|(dt, ..)| dt.name == conn.dataset_type) {
                    continue;
                }
                // Validated: the dimensions conform.
                if let Ok(dt) = conn.dataset_type(universe) {
                    out.push((dt, task, kind, conn));
                }
            }
        }
        out
    }

    fn parse_task(
        &self,
        label: &str,
        body: serde_yaml_ng::Value,
    ) -> Result<TaskDef, PipelineError> {
        let line = self.task_line(label);
        let at = |msg: String| self.error(line, format!("task `{label}`: {msg}"));
        if label.is_empty()
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(at("task labels use letters, digits, `_` and `-`".into()));
        }
        let t: TaskFile = serde_yaml_ng::from_value(body).map_err(|e| at(e.to_string()))?;
        let kind = match (t.class, t.command, t.python) {
            (Some(class), None, None) if !class.trim().is_empty() => TaskKind::Class(class),
            (None, Some(cmd), None) if !cmd.is_empty() => TaskKind::Command(cmd),
            (None, None, Some(target)) => {
                let target = target.trim().to_string();
                super::check_python_target(&target).map_err(|e| at(format!("python: {e}")))?;
                TaskKind::Python(target)
            }
            (class, command, python)
                if usize::from(class.is_some())
                    + usize::from(command.is_some())
                    + usize::from(python.is_some())
                    > 1 =>
            {
                return Err(at(
                    "give one of `class`, `command` and `python`, not several".into(),
                ))
            }
            _ => {
                return Err(at(
                    "needs a `class` (a registered Rust task), a non-empty `command` or `python: package.module:Class`".into(),
                ))
            }
        };
        let config = match t.config {
            None | Some(serde_yaml_ng::Value::Null) => {
                serde_json::Value::Object(Default::default())
            }
            Some(v) => {
                let json = serde_json::to_value(&v).map_err(|e| at(format!("config: {e}")))?;
                if !json.is_object() {
                    return Err(at("`config` must be a mapping".into()));
                }
                json
            }
        };
        let mut task = TaskDef {
            label: label.to_string(),
            kind,
            dimensions: t.dimensions,
            inputs: Vec::new(),
            prerequisites: Vec::new(),
            outputs: Vec::new(),
            init_outputs: Vec::new(),
            config,
        };
        let sections = [
            (ConnectionKind::Input, t.inputs),
            (ConnectionKind::Prerequisite, t.prerequisites),
            (ConnectionKind::Output, t.outputs),
            (ConnectionKind::InitOutput, t.init_outputs),
        ];
        let mut names: Vec<String> = Vec::new();
        for (kind, mapping) in sections {
            for (name, body) in mapping {
                let name = name.as_str().ok_or_else(|| {
                    at(format!(
                        "{}: connection names must be strings",
                        kind.section()
                    ))
                })?;
                let cline = self.connection_line(label, kind, name);
                let cat = |msg: String| {
                    self.error(
                        cline,
                        format!("task `{label}`, {} `{name}`: {msg}", kind.section()),
                    )
                };
                if names.iter().any(|n| n == name) {
                    return Err(cat("connection name used twice in the task".into()));
                }
                names.push(name.to_string());
                let c: ConnectionFile =
                    serde_yaml_ng::from_value(body).map_err(|e| cat(e.to_string()))?;
                let conn = Connection {
                    name: name.to_string(),
                    dataset_type: c.dataset_type,
                    dimensions: c.dimensions,
                    storage_class: c.storage_class,
                    multiple: c.multiple,
                    is_calibration: c.is_calibration,
                };
                match kind {
                    ConnectionKind::Input => task.inputs.push(conn),
                    ConnectionKind::Prerequisite => task.prerequisites.push(conn),
                    ConnectionKind::Output => task.outputs.push(conn),
                    ConnectionKind::InitOutput => task.init_outputs.push(conn),
                }
            }
        }
        Ok(task)
    }

    fn validate(&mut self, universe: &DimensionUniverse) -> Result<(), PipelineError> {
        // Definitions by dataset type name: (type, task label, kind, connection name).
        let mut defined: BTreeMap<String, (DatasetType, String, ConnectionKind, String)> =
            BTreeMap::new();
        let mut producer: BTreeMap<String, (String, ConnectionKind, String)> = BTreeMap::new();
        for task in &self.pipeline.tasks {
            let task_group = universe.conform(&task.dimensions).map_err(|e| {
                self.error(
                    self.map
                        .line(&["tasks", &task.label, "dimensions"])
                        .or(self.task_line(&task.label)),
                    format!("task `{}`: dimensions: {e}", task.label),
                )
            })?;
            let reachable = DimensionGroup {
                names: universe.implied_closure(&task_group),
            };
            for (kind, conn) in task.connections() {
                let err = |msg: String| self.connection_error(task, kind, conn, msg);
                DatasetType::validate_name(&conn.dataset_type).map_err(|e| err(e.to_string()))?;
                validate_storage_class(&conn.storage_class).map_err(|e| err(e.to_string()))?;
                let dt = conn
                    .dataset_type(universe)
                    .map_err(|e| err(format!("dimensions: {e}")))?;
                check_reachable(
                    universe,
                    kind,
                    conn,
                    &dt.dimensions,
                    &task_group,
                    &reachable,
                )
                .map_err(err)?;
                if let Some(component) = conn.component() {
                    if kind != ConnectionKind::Input {
                        return Err(err(format!(
                            "`{}` is component `{component}` of `{}`: a component can only be a task input (write or look up the parent)",
                            conn.dataset_type,
                            conn.parent_dataset_type()
                        )));
                    }
                }
                if conn.is_calibration && kind != ConnectionKind::Prerequisite {
                    return Err(err(
                        "calibrations (`is_calibration: true`) are looked up by time and must be prerequisites".into(),
                    ));
                }
                if let Some((first, flabel, fkind, fname)) = defined.get(&dt.name) {
                    if first != &dt {
                        return Err(err(format!(
                            "dataset type `{}` is {dt} here but {first} at line {} (task `{flabel}`, {} `{fname}`)",
                            dt.name,
                            self.connection_line(flabel, *fkind, fname).map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
                            fkind.section()
                        )));
                    }
                } else {
                    defined.insert(
                        dt.name.clone(),
                        (dt.clone(), task.label.clone(), kind, conn.name.clone()),
                    );
                }
                if matches!(kind, ConnectionKind::Output | ConnectionKind::InitOutput) {
                    if let Some((plabel, pkind, pname)) = producer.get(&dt.name) {
                        return Err(err(format!(
                            "dataset type `{}` is produced twice: also by task `{plabel}` ({} `{pname}`, line {})",
                            dt.name,
                            pkind.section(),
                            self.connection_line(plabel, *pkind, pname).map(|l| l.to_string()).unwrap_or_else(|| "?".into())
                        )));
                    }
                    producer.insert(
                        dt.name.clone(),
                        (task.label.clone(), kind, conn.name.clone()),
                    );
                }
            }
        }
        for task in &self.pipeline.tasks {
            for conn in &task.prerequisites {
                if let Some((plabel, ..)) = producer.get(&conn.dataset_type) {
                    return Err(self.connection_error(
                        task,
                        ConnectionKind::Prerequisite,
                        conn,
                        format!(
                            "prerequisite `{}` is produced by task `{plabel}`; prerequisites must already exist (make it an input)",
                            conn.dataset_type
                        ),
                    ));
                }
            }
        }
        self.sort_tasks(&producer)
    }

    /// Puts tasks in topological order (file order where free), or reports
    /// a cycle by name.
    fn sort_tasks(
        &mut self,
        producer: &BTreeMap<String, (String, ConnectionKind, String)>,
    ) -> Result<(), PipelineError> {
        let tasks = &self.pipeline.tasks;
        let index: HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.label.as_str(), i))
            .collect();
        // upstream[i]: tasks whose outputs task i reads.
        let upstream: Vec<Vec<usize>> = tasks
            .iter()
            .map(|t| {
                let mut ups: Vec<usize> = t
                    .inputs
                    .iter()
                    .filter_map(|c| producer.get(c.parent_dataset_type()))
                    .map(|(label, ..)| index[label.as_str()])
                    .collect();
                ups.sort_unstable();
                ups.dedup();
                ups
            })
            .collect();
        let mut done = vec![false; tasks.len()];
        let mut order = Vec::with_capacity(tasks.len());
        while order.len() < tasks.len() {
            let next = (0..tasks.len()).find(|&i| !done[i] && upstream[i].iter().all(|&u| done[u]));
            match next {
                Some(i) => {
                    done[i] = true;
                    order.push(i);
                }
                None => {
                    let start = (0..tasks.len()).find(|&i| !done[i]).unwrap_or(0);
                    let cycle = find_cycle(start, &upstream, &done);
                    let names: Vec<&str> = cycle.iter().map(|&i| tasks[i].label.as_str()).collect();
                    return Err(self.error(
                        self.task_line(names[0]),
                        format!("the pipeline has a cycle: {}", names.join(" → ")),
                    ));
                }
            }
        }
        let mut slots: Vec<Option<TaskDef>> = std::mem::take(&mut self.pipeline.tasks)
            .into_iter()
            .map(Some)
            .collect();
        self.pipeline.tasks = order.into_iter().filter_map(|i| slots[i].take()).collect();
        Ok(())
    }
}

/// A cycle among the tasks not yet ordered, as a closed list of task
/// indices in data-flow order (`a → b → a`). Every such task has an
/// unordered upstream, so following upstream links must revisit one.
fn find_cycle(start: usize, upstream: &[Vec<usize>], done: &[bool]) -> Vec<usize> {
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let Some(&next) = upstream[cur].iter().find(|&&u| !done[u]) else {
            return path;
        };
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.push(next);
            // Upstream links point against the data flow; reverse them.
            cycle.reverse();
            return cycle;
        }
        path.push(next);
        cur = next;
    }
}

/// Whether a connection's dimensions can be related to the task's quanta.
fn check_reachable(
    universe: &DimensionUniverse,
    kind: ConnectionKind,
    conn: &Connection,
    dims: &DimensionGroup,
    task: &DimensionGroup,
    reachable: &DimensionGroup,
) -> Result<(), String> {
    match kind {
        ConnectionKind::InitOutput => {
            if !dims.is_empty() {
                return Err(format!("init-outputs have no dimensions, not {dims}"));
            }
        }
        ConnectionKind::Input if conn.multiple => {
            // Gathered through a shared dimension, or through region
            // overlap (calexps of visits onto a patch's coadd).
            if !task.is_empty()
                && !dims.iter().any(|d| task.contains(d))
                && !dims.is_subset_of(reachable)
                && !universe.spatially_related(dims, reachable)
            {
                return Err(format!(
                    "dimensions {dims} are not reachable from the task's dimensions {task} (no dimension in common, and no regions that overlap)"
                ));
            }
        }
        _ => {
            if !dims.is_subset_of(reachable) {
                let missing: Vec<&str> = dims.iter().filter(|d| !reachable.contains(d)).collect();
                let hint = if kind == ConnectionKind::Input {
                    " (an input with more dimensions than its task must be `multiple: true`)"
                } else {
                    ""
                };
                return Err(format!(
                    "dimensions {dims} are not reachable from the task's dimensions {task}: {} not determined by them{hint}",
                    missing.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// serde_yaml_ng appends " at line L column C"; the location is already
/// shown as `file:line`.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = r#"description: scatter/gather reference workload
tasks:
  summarize:
    class: examples.Summarize
    dimensions: [instrument, exposure]
    inputs:
      icexps: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Json, multiple: true}
    outputs:
      summary: {dataset_type: expSummary, dimensions: [instrument, exposure], storage_class: Json}
    config: {}
  isr:
    class: examples.Isr                 # a registered Rust task
    dimensions: [instrument, exposure, detector]
    inputs:
      raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
  characterize:
    command: [python3, characterize.py, "{manifest}"]
    dimensions: [instrument, exposure, detector]
    inputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      icexp: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Json}
"#;

    fn parse(text: &str) -> Result<LoadedPipeline, PipelineError> {
        LoadedPipeline::parse(text, "p.yaml", &DimensionUniverse::default_universe())
    }

    #[test]
    fn reference_parses_in_topological_order() {
        let p = parse(REFERENCE).unwrap();
        let labels: Vec<&str> = p.pipeline.tasks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["isr", "characterize", "summarize"]);
        assert_eq!(p.pipeline.overall_inputs(), ["raw"]);
        assert!(matches!(&p.pipeline.tasks[1].kind, TaskKind::Command(c) if c[2] == "{manifest}"));
        assert!(p.pipeline.tasks[2].inputs[0].multiple);
        assert_eq!(p.task_line("isr"), Some(11));
        assert_eq!(
            p.connection_line("isr", ConnectionKind::Output, "post"),
            Some(17)
        );
        assert_eq!(p.pipeline.digest().len(), 64);
    }

    #[test]
    fn unknown_dimension_points_at_the_connection() {
        let text = REFERENCE.replace(
            "post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}\n  characterize",
            "post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detectr], storage_class: Json}\n  characterize",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(17), "{e}");
        assert!(e.to_string().contains("detectr"), "{e}");
        let e = parse(&REFERENCE.replace(
            "dimensions: [instrument, exposure]\n",
            "dimensions: [instrument, exposur]\n",
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(
            e.to_string()
                .starts_with("p.yaml:5: task `summarize`: dimensions: unknown dimension `exposur`"),
            "{e}"
        );
    }

    #[test]
    fn unreachable_dimensions_are_refused() {
        // A non-multiple input with more dimensions than the task.
        let text = REFERENCE.replace(
            "storage_class: Json, multiple: true}",
            "storage_class: Json}",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        assert!(
            e.message.contains("not reachable") && e.message.contains("multiple"),
            "{e}"
        );
        // An output on unrelated dimensions.
        let text = REFERENCE.replace(
            "summary: {dataset_type: expSummary, dimensions: [instrument, exposure]",
            "summary: {dataset_type: expSummary, dimensions: [skymap, tract]",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(9), "{e}");
        assert!(e.message.contains("skymap"), "{e}");
        // Implied dimensions are reachable: a flat per physical_filter.
        let text = REFERENCE.replace(
            "    outputs:\n      post:",
            "    prerequisites:\n      flat: {dataset_type: flat, dimensions: [instrument, physical_filter, detector], storage_class: Json}\n    outputs:\n      post:",
        );
        parse(&text).unwrap();
    }

    #[test]
    fn components_are_inputs_of_their_parent() {
        // A component input of an upstream output orders the tasks and is
        // no overall input; the parent of a component of an overall input is.
        let text = REFERENCE
            .replace(
                "post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}\n    outputs:\n      icexp",
                "post: {dataset_type: postISRCCD.wcs, dimensions: [instrument, exposure, detector], storage_class: Wcs}\n    outputs:\n      icexp",
            )
            .replace(
                "raw: {dataset_type: raw,",
                "raw: {dataset_type: raw.image,",
            );
        let p = parse(&text).unwrap();
        let labels: Vec<&str> = p.pipeline.tasks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["isr", "characterize", "summarize"]);
        assert_eq!(p.pipeline.overall_inputs(), ["raw"]);
        let c = &p.pipeline.tasks[1].inputs[0];
        assert_eq!(
            (c.parent_dataset_type(), c.component()),
            ("postISRCCD", Some("wcs"))
        );
        // Only inputs may be components.
        let text = REFERENCE.replace(
            "icexp: {dataset_type: icExp,",
            "icexp: {dataset_type: icExp.wcs,",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.message.contains("a component can only be a task input"),
            "{e}"
        );
        assert!(e.line.is_some());
    }

    #[test]
    fn produced_twice_cycles_and_conflicts() {
        let text = REFERENCE.replace(
            "icexp: {dataset_type: icExp,",
            "icexp: {dataset_type: postISRCCD,",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.message.contains("produced twice") || e.message.contains("cycle"),
            "{e}"
        );

        let text = REFERENCE.replace("raw: {dataset_type: raw,", "raw: {dataset_type: icExp,");
        let e = parse(&text).unwrap_err();
        assert!(
            e.message.contains("cycle: isr → characterize → isr")
                || e.message
                    .contains("cycle: characterize → isr → characterize"),
            "{e}"
        );
        assert!(e.line.is_some());

        let text = REFERENCE.replace(
            "icexp: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Json}",
            "icexp: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Bytes}",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.message.contains("dataset type `icExp`") && e.message.contains("Bytes"),
            "{e}"
        );
    }

    #[test]
    fn shape_errors_have_lines() {
        let e = parse("tasks:\n  a:\n    class: X\n    dimensions: [instrument]\n    bogus: 1\n")
            .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = parse("tasks:\n  a: [\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        let e = parse("tasks:\n  a:\n    dimensions: [instrument]\n").unwrap_err();
        assert!(e.message.contains("class"), "{e}");
        let e = parse("tasks: {}\n").unwrap_err();
        assert!(e.message.contains("no tasks"), "{e}");
    }

    #[test]
    fn calibrations_must_be_prerequisites() {
        let text = REFERENCE.replace(
            "raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json}",
            "raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json, is_calibration: true}",
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("prerequisites"), "{e}");
    }

    #[test]
    fn python_tasks_parse_and_bad_targets_are_refused() {
        let text = REFERENCE.replace(
            "command: [python3, characterize.py, \"{manifest}\"]",
            "python: reference_tasks.tasks:Characterize",
        );
        let p = parse(&text).unwrap();
        assert_eq!(
            p.pipeline.tasks[1].kind,
            TaskKind::Python("reference_tasks.tasks:Characterize".into())
        );
        assert_eq!(
            p.pipeline.tasks[1].kind.describe(),
            "python: reference_tasks.tasks:Characterize"
        );
        for bad in ["reference_tasks", "a..b:C", "a.b:", "1a:C", "a:C.D"] {
            let text = REFERENCE.replace(
                "command: [python3, characterize.py, \"{manifest}\"]",
                &format!("python: \"{bad}\""),
            );
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains("python:"), "{bad}: {e}");
            assert!(e.message.contains("characterize"), "{bad}: {e}");
        }
        let text = REFERENCE.replace(
            "command: [python3, characterize.py, \"{manifest}\"]",
            "command: [x]\n    python: a:B",
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("not several"), "{e}");
    }
}
