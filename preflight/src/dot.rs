//! Graphviz DOT and Mermaid renderings of the task graph (tasks and the
//! dataset types they pass) and of a bundle's quantum graph.

use std::collections::{BTreeMap, BTreeSet};
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

/// A Mermaid label in double quotes: Mermaid's entity codes for the
/// characters that would end the string or be read as markup, `<br/>` for
/// newlines.
fn mermaid_lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '&' => out.push_str("#amp;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '\n' => out.push_str("<br/>"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The task graph as a Mermaid flowchart (`pipetask build --show
/// pipeline-graph` style): tasks as boxes, dataset types as stadiums,
/// gathered inputs thick, prerequisites dotted. Node ids are generated
/// (`t0`, `d0`), so any label is safe.
pub fn task_graph_mermaid(tasks: &[TaskDef]) -> String {
    let mut out = String::from("flowchart TD\n");
    let mut types: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for t in tasks {
        for (_, c) in t.connections() {
            let n = types.len();
            types
                .entry(c.dataset_type.clone())
                .or_insert_with(|| (n, c.dimensions.join(", ")));
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        let label = format!("{}\n{}", t.label, t.dimensions.join(", "));
        let _ = writeln!(out, "  t{i}[{}]", mermaid_lit(&label));
    }
    let mut by_id: Vec<(&usize, &String, &String)> = types
        .iter()
        .map(|(name, (i, dims))| (i, name, dims))
        .collect();
    by_id.sort();
    for (i, name, dims) in by_id {
        let _ = writeln!(out, "  d{i}([{}])", mermaid_lit(&format!("{name}\n{dims}")));
    }
    let id = |name: &str| types.get(name).map(|(i, _)| *i).unwrap_or(0);
    for (i, t) in tasks.iter().enumerate() {
        for c in &t.inputs {
            let arrow = if c.multiple { "==>" } else { "-->" };
            let _ = writeln!(out, "  d{} {arrow} t{i}", id(&c.dataset_type));
        }
        for c in &t.prerequisites {
            let _ = writeln!(out, "  d{} -.-> t{i}", id(&c.dataset_type));
        }
        for c in t.outputs.iter().chain(&t.init_outputs) {
            let _ = writeln!(out, "  t{i} --> d{}", id(&c.dataset_type));
        }
    }
    out.push_str("  classDef task fill:#e3ecf7,stroke:#555\n");
    if !tasks.is_empty() {
        let ids: Vec<String> = (0..tasks.len()).map(|i| format!("t{i}")).collect();
        let _ = writeln!(out, "  class {} task", ids.join(","));
    }
    out
}

/// The quantum graph as a Mermaid flowchart: one node per quantum (`task
/// data ID`), edges from upstream quanta.
pub fn quantum_graph_mermaid(bundle: &Bundle) -> Result<String, BundleError> {
    let tasks = bundle.tasks();
    let mut out = String::from("flowchart TD\n");
    for (i, q) in bundle.quanta().enumerate() {
        let q = q?;
        let label = tasks
            .get(q.task as usize)
            .map(|t| t.label.as_str())
            .unwrap_or("?");
        let _ = writeln!(
            out,
            "  q{i}[{}]",
            mermaid_lit(&format!("{label}\n{}", q.data_id))
        );
        for u in q.upstream {
            let _ = writeln!(out, "  q{u} --> q{i}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mermaid_labels_cannot_break_out() {
        assert_eq!(
            mermaid_lit("a\"b<c>#&\nd"),
            "\"a#quot;b#lt;c#gt;#35;#amp;<br/>d\""
        );
    }
}
