//! Graphviz DOT renderings of the task graph (tasks and the dataset types
//! they pass) and of a bundle's quantum graph.

use std::collections::BTreeSet;
use std::fmt::Write;

use quanta_core::pipeline::TaskDef;
use quanta_core::{Bundle, BundleError};

/// DOT string literal: quotes and backslashes escaped, newlines as `\n`.
fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Tasks as boxes, dataset types as ellipses, edges along the data flow.
pub fn task_graph_dot(tasks: &[TaskDef]) -> String {
    let mut out = String::from("digraph pipeline {\n  rankdir=TB;\n");
    let mut types = BTreeSet::new();
    for t in tasks {
        let _ = writeln!(
            out,
            "  {} [shape=box, style=filled, fillcolor=lightblue, label={}];",
            lit(&format!("task:{}", t.label)),
            lit(&format!("{}\n{}", t.label, t.dimensions.join(", ")))
        );
        for (_, c) in t.connections() {
            types.insert((c.dataset_type.clone(), c.dimensions.join(", ")));
        }
    }
    for (name, dims) in &types {
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, label={}];",
            lit(&format!("type:{name}")),
            lit(&format!("{name}\n{dims}"))
        );
    }
    for t in tasks {
        let task = lit(&format!("task:{}", t.label));
        for c in &t.inputs {
            let style = if c.multiple { " [style=bold]" } else { "" };
            let _ = writeln!(
                out,
                "  {} -> {task}{style};",
                lit(&format!("type:{}", c.dataset_type))
            );
        }
        for c in &t.prerequisites {
            let _ = writeln!(
                out,
                "  {} -> {task} [style=dashed];",
                lit(&format!("type:{}", c.dataset_type))
            );
        }
        for c in t.outputs.iter().chain(&t.init_outputs) {
            let _ = writeln!(
                out,
                "  {task} -> {};",
                lit(&format!("type:{}", c.dataset_type))
            );
        }
    }
    out.push_str("}\n");
    out
}

/// One node per quantum (`task data ID`), edges from upstream quanta.
pub fn quantum_graph_dot(bundle: &Bundle) -> Result<String, BundleError> {
    let tasks = bundle.tasks();
    let mut out = String::from("digraph quanta {\n  rankdir=TB;\n  node [shape=box];\n");
    for (i, q) in bundle.quanta().enumerate() {
        let q = q?;
        let label = tasks
            .get(q.task as usize)
            .map(|t| t.label.as_str())
            .unwrap_or("?");
        let _ = writeln!(
            out,
            "  q{i} [label={}];",
            lit(&format!("{label}\n{}", q.data_id))
        );
        for u in q.upstream {
            let _ = writeln!(out, "  q{u} -> q{i};");
        }
    }
    out.push_str("}\n");
    Ok(out)
}
