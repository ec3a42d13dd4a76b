//! A small layered layout of the pipeline graph (tasks and the dataset
//! types between them), in the manner of Sugiyama: layers by longest path
//! along the data flow, order within a layer by a few barycenter sweeps,
//! then coordinates from each node's text width. Pipelines have tens of
//! tasks, so nothing here needs to be clever about size.

use std::collections::BTreeMap;

use crate::model::TaskInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Task,
    DatasetType,
}

/// A node placed on the page: its centre and size, in SVG user units.
#[derive(Debug, Clone, PartialEq)]
pub struct LaidOutNode {
    pub kind: NodeKind,
    pub name: String,
    /// For a task, its index in the task list.
    pub task: Option<usize>,
    pub layer: usize,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// An edge between two nodes (indices into [`GraphLayout::nodes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaidOutEdge {
    pub from: usize,
    pub to: usize,
    pub prerequisite: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphLayout {
    pub nodes: Vec<LaidOutNode>,
    pub edges: Vec<LaidOutEdge>,
    pub width: f64,
    pub height: f64,
}

const LAYER_GAP: f64 = 84.0;
const NODE_GAP: f64 = 28.0;
const MARGIN: f64 = 16.0;
const CHAR_WIDTH: f64 = 7.4;
const TASK_HEIGHT: f64 = 50.0;
const TYPE_HEIGHT: f64 = 38.0;

/// Lays out the graph of `tasks`: a node per task and per dataset type,
/// edges from input types to tasks and from tasks to their outputs.
/// `lines` gives each node's text lines (for its width).
pub fn layout(tasks: &[TaskInfo], lines: impl Fn(NodeKind, &str) -> Vec<String>) -> GraphLayout {
    let mut nodes: Vec<LaidOutNode> = Vec::new();
    let mut type_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut edges: Vec<LaidOutEdge> = Vec::new();
    let new_node = |nodes: &mut Vec<LaidOutNode>, kind, name: &str, task| {
        nodes.push(LaidOutNode {
            kind,
            name: name.to_string(),
            task,
            layer: 0,
            x: 0.0,
            y: 0.0,
            width: 0.0,
            height: 0.0,
        });
        nodes.len() - 1
    };
    let task_nodes: Vec<usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| new_node(&mut nodes, NodeKind::Task, &t.label, Some(i)))
        .collect();
    let mut type_node = |nodes: &mut Vec<LaidOutNode>, name: &str| -> usize {
        if let Some(&i) = type_index.get(name) {
            return i;
        }
        let i = new_node(nodes, NodeKind::DatasetType, name, None);
        type_index.insert(name.to_string(), i);
        i
    };
    for (t, &tn) in tasks.iter().zip(&task_nodes) {
        for (names, prerequisite) in [(&t.inputs, false), (&t.prerequisites, true)] {
            for name in names {
                let d = type_node(&mut nodes, name);
                edges.push(LaidOutEdge {
                    from: d,
                    to: tn,
                    prerequisite,
                });
            }
        }
        for name in &t.outputs {
            let d = type_node(&mut nodes, name);
            edges.push(LaidOutEdge {
                from: tn,
                to: d,
                prerequisite: false,
            });
        }
    }
    edges.sort_by_key(|e| (e.from, e.to, e.prerequisite));
    edges.dedup_by_key(|e| (e.from, e.to));
    assign_layers(&mut nodes, &edges);
    let layers = order_layers(&nodes, &edges);
    place(&mut nodes, &layers, &lines)
        .map(|(width, height)| GraphLayout {
            nodes,
            edges,
            width,
            height,
        })
        .unwrap_or_else(|| GraphLayout {
            nodes: Vec::new(),
            edges: Vec::new(),
            width: 0.0,
            height: 0.0,
        })
}

/// Longest path from the sources, so every edge points down; a dataset
/// type nobody produces sits just above its first consumer. Bounded by the
/// node count, so a cycle (which a validated pipeline has not) cannot loop.
fn assign_layers(nodes: &mut [LaidOutNode], edges: &[LaidOutEdge]) {
    let n = nodes.len();
    let mut layer = vec![0usize; n];
    let mut has_in = vec![false; n];
    for e in edges {
        has_in[e.to] = true;
    }
    for _ in 0..=n {
        let mut changed = false;
        for e in edges {
            if layer[e.to] < layer[e.from] + 1 && layer[e.from] < n {
                layer[e.to] = layer[e.from] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Pull sources (overall inputs, prerequisites) down next to their
    // first consumer.
    let snapshot = layer.clone();
    for i in 0..n {
        if has_in[i] {
            continue;
        }
        if let Some(m) = edges
            .iter()
            .filter(|e| e.from == i)
            .map(|e| snapshot[e.to])
            .min()
        {
            layer[i] = m.saturating_sub(1);
        }
    }
    for (node, l) in nodes.iter_mut().zip(layer) {
        node.layer = l;
    }
}

/// Node indices per layer, ordered by barycenter sweeps (down, then up,
/// four times) from the order of appearance.
fn order_layers(nodes: &[LaidOutNode], edges: &[LaidOutEdge]) -> Vec<Vec<usize>> {
    let depth = nodes.iter().map(|n| n.layer + 1).max().unwrap_or(0);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, n) in nodes.iter().enumerate() {
        layers[n.layer].push(i);
    }
    let mut pos = vec![0f64; nodes.len()];
    let set_pos = |layers: &Vec<Vec<usize>>, pos: &mut Vec<f64>| {
        for layer in layers {
            for (k, &i) in layer.iter().enumerate() {
                pos[i] = k as f64;
            }
        }
    };
    set_pos(&layers, &mut pos);
    for sweep in 0..8 {
        let down = sweep % 2 == 0;
        let range: Vec<usize> = if down {
            (1..depth).collect()
        } else {
            (0..depth.saturating_sub(1)).rev().collect()
        };
        for l in range {
            let mut keyed: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|&i| {
                    let neighbours: Vec<f64> = edges
                        .iter()
                        .filter_map(|e| {
                            if down && e.to == i && nodes[e.from].layer < l {
                                Some(pos[e.from])
                            } else if !down && e.from == i && nodes[e.to].layer > l {
                                Some(pos[e.to])
                            } else {
                                None
                            }
                        })
                        .collect();
                    let key = if neighbours.is_empty() {
                        pos[i]
                    } else {
                        neighbours.iter().sum::<f64>() / neighbours.len() as f64
                    };
                    (key, i)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(pos[a.1].total_cmp(&pos[b.1])));
            layers[l] = keyed.into_iter().map(|(_, i)| i).collect();
            for (k, &i) in layers[l].iter().enumerate() {
                pos[i] = k as f64;
            }
        }
    }
    layers
}

/// Sizes from the text, then each layer packed left to right and centred
/// on the widest. Returns the drawing's size, `None` for an empty graph.
fn place(
    nodes: &mut [LaidOutNode],
    layers: &[Vec<usize>],
    lines: &impl Fn(NodeKind, &str) -> Vec<String>,
) -> Option<(f64, f64)> {
    if nodes.is_empty() {
        return None;
    }
    for n in nodes.iter_mut() {
        let text = lines(n.kind, &n.name);
        let longest = text.iter().map(|l| l.chars().count()).max().unwrap_or(4);
        n.width = (longest as f64 * CHAR_WIDTH + 24.0).max(90.0);
        n.height = match n.kind {
            NodeKind::Task => TASK_HEIGHT.max(16.0 * text.len() as f64 + 10.0),
            NodeKind::DatasetType => TYPE_HEIGHT.max(16.0 * text.len() as f64 + 6.0),
        };
    }
    let widths: Vec<f64> = layers
        .iter()
        .map(|layer| {
            layer.iter().map(|&i| nodes[i].width).sum::<f64>()
                + NODE_GAP * layer.len().saturating_sub(1) as f64
        })
        .collect();
    let widest = widths.iter().copied().fold(0.0, f64::max);
    let mut y = MARGIN;
    for (layer, layer_width) in layers.iter().zip(&widths) {
        let tallest = layer.iter().map(|&i| nodes[i].height).fold(0.0, f64::max);
        let mut x = MARGIN + (widest - layer_width) / 2.0;
        for &i in layer {
            nodes[i].x = x + nodes[i].width / 2.0;
            nodes[i].y = y + tallest / 2.0;
            x += nodes[i].width + NODE_GAP;
        }
        y += tallest + LAYER_GAP;
    }
    Some((widest + 2.0 * MARGIN, y - LAYER_GAP + MARGIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(label: &str, inputs: &[&str], prerequisites: &[&str], outputs: &[&str]) -> TaskInfo {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        TaskInfo {
            label: label.into(),
            inputs: v(inputs),
            prerequisites: v(prerequisites),
            outputs: v(outputs),
            ..TaskInfo::default()
        }
    }

    #[test]
    fn edges_point_down_and_nodes_do_not_overlap() {
        let tasks = vec![
            task("isr", &["raw"], &["bias", "flat"], &["postISRCCD"]),
            task("characterize", &["postISRCCD"], &[], &["icExp"]),
            task("summarize", &["icExp"], &[], &["expSummary"]),
            task("qa", &["raw", "icExp"], &[], &["qaPlot"]),
        ];
        let g = layout(&tasks, |_, name| {
            vec![name.to_string(), "1,000 quanta".into()]
        });
        assert_eq!(g.nodes.len(), 4 + 7);
        assert_eq!(g.edges.len(), 3 + 1 + 1 + 2 + 4);
        for e in &g.edges {
            assert!(g.nodes[e.from].layer < g.nodes[e.to].layer, "{e:?}");
            assert!(g.nodes[e.from].y < g.nodes[e.to].y);
        }
        let bias = g.nodes.iter().find(|n| n.name == "bias").unwrap();
        assert_eq!(bias.layer, 0, "a prerequisite sits above its consumer");
        for (i, a) in g.nodes.iter().enumerate() {
            assert!(a.x - a.width / 2.0 >= 0.0 && a.x + a.width / 2.0 <= g.width);
            for b in &g.nodes[i + 1..] {
                let apart_x = (a.x - b.x).abs() >= (a.width + b.width) / 2.0;
                let apart_y = (a.y - b.y).abs() >= (a.height + b.height) / 2.0;
                assert!(apart_x || apart_y, "{} overlaps {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn an_empty_pipeline_lays_out_to_nothing() {
        let g = layout(&[], |_, n| vec![n.to_string()]);
        assert!(g.nodes.is_empty());
        assert_eq!(g.width, 0.0);
    }
}
