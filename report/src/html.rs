//! The page: one HTML document with its CSS, SVG and a few lines of script
//! inline.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::graph::{layout, NodeKind};
use crate::model::{Counts, Report, TaskReport};
use crate::plots::{histogram_svg, timeline_svg, PALETTE};
use crate::text::{bytes, duration, escape, push_escaped, push_num, thousands};

/// The page's version of its ids, classes and `data-*` attributes.
pub const PAGE_VERSION: u32 = 1;

const CSS: &str = r#"
:root{--ok:#2e7d32;--bad:#c62828;--wait:#9e9e9e;--block:#ef6c00;--run:#1565c0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222}
body{margin:0 auto;max-width:1180px;padding:0 16px 48px}
h1{font-size:1.5em;margin:18px 0 4px}h2{font-size:1.2em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
nav a{margin-right:12px}.meta{color:#555;margin:2px 0}
table{border-collapse:collapse;margin:6px 0;font-size:.92em}th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.totals span{display:inline-block;margin-right:18px;font-size:1.05em}.totals b{font-size:1.3em}
.c-ok{color:var(--ok)}.c-bad{color:var(--bad)}.c-block{color:var(--block)}.c-wait{color:var(--wait)}.c-run{color:var(--run)}
pre{background:#f7f7f7;border:1px solid #e0e0e0;padding:6px;overflow:auto;max-height:320px;font-size:.85em;margin:4px 0;white-space:pre-wrap;word-break:break-all}
.figs{display:flex;flex-wrap:wrap;gap:10px}.fig{border:1px solid #e4e4e4;padding:4px}.fig h3{font-size:.95em;margin:2px 4px}
.scroll{overflow-x:auto}
svg text{font-family:system-ui,sans-serif}svg .tick{font-size:10px;fill:#444}svg .caption{font-size:10px;fill:#666}
svg .axis{stroke:#888;stroke-width:1}svg .bar{fill:#5c7cbd}svg .lane{fill:#f4f4f4}
svg .t0{fill:#4e79a7}svg .t1{fill:#59a14f}svg .t2{fill:#9c755f}svg .t3{fill:#f28e2b}svg .t4{fill:#76b7b2}
svg .t5{fill:#b07aa1}svg .t6{fill:#edc948}svg .t7{fill:#ff9da7}svg .t8{fill:#8cd17d}svg .t9{fill:#bab0ac}
svg .f{fill:#d62728}svg .r{opacity:.5}
.sw0{background:#4e79a7}.sw1{background:#59a14f}.sw2{background:#9c755f}.sw3{background:#f28e2b}.sw4{background:#76b7b2}
.sw5{background:#b07aa1}.sw6{background:#edc948}.sw7{background:#ff9da7}.sw8{background:#8cd17d}.sw9{background:#bab0ac}.swf{background:#d62728}
.legend span{display:inline-block;margin-right:12px;font-size:.85em}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.node rect{stroke:#555;stroke-width:1.2}.node.task rect{fill:#e3ecf7}.node.task.ok rect{fill:#dcefdc}.node.task.bad rect{fill:#f9dcdc}
.node.dataset-type rect{fill:#fff;stroke:#888}.node text{font-size:12px;fill:#222}.node .name{font-weight:600}
.edge{fill:none;stroke:#777;stroke-width:1.2}.edge.prereq{stroke-dasharray:4 3}
.warn{color:#8a5a00}
"#;

/// After load, every `svg.plot` and graph node gets its measured size
/// (`data-rendered-width`, `data-rendered-height` from `getBBox()`), and
/// `body` the number of plots that rendered with a non-empty box
/// (`data-svg-rendered`) and of all plots (`data-svg-total`).
const SCRIPT: &str = r#"
window.addEventListener('load',function(){var ok=0,all=document.querySelectorAll('svg.plot');
all.forEach(function(s){var b=s.getBBox();s.setAttribute('data-rendered-width',Math.round(b.width));s.setAttribute('data-rendered-height',Math.round(b.height));if(b.width>0&&b.height>0)ok++;});
document.querySelectorAll('g.node').forEach(function(g){var b=g.getBBox();g.setAttribute('data-rendered-width',Math.round(b.width));});
document.body.setAttribute('data-svg-rendered',ok);document.body.setAttribute('data-svg-total',all.length);});
"#;

/// The page of `report`. Stable hooks for scripts and tests (page version
/// [`PAGE_VERSION`], on `body[data-report-version]`):
///
/// - `#totals` and each `#task-counts tr.task-row[data-task]`: `data-quanta`,
///   `data-succeeded`, `data-failed`, `data-blocked`, `data-pending`,
///   `data-running`;
/// - `#pipeline-graph` (`svg.plot`): `g.node.task[data-name]` with the same
///   counts, `g.node.dataset-type[data-name][data-written][data-predicted]`;
/// - `svg.histogram[data-task][data-metric=wall|memory][data-n]`;
/// - `#timeline-plot[data-bars][data-quanta][data-lanes][data-lanes-total][data-stride]`;
/// - `#slowest tr.slow-row[data-task][data-wall-seconds]`;
/// - `#failure-table[data-total][data-shown]`, its
///   `tr.failure-row[data-task][data-status][data-quantum]` with
///   `td.data-id`, `td.reason` and `pre.log-tail`; `#reasons tr.reason-row[data-count]`;
/// - `#provenance .bundle[data-bundle]` with `.software`, `.command-line`,
///   `.task-config[data-task]`, `.pipeline-yaml`.
pub fn render_html(report: &Report) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let run = &report.meta.run;
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(out, "<title>quanta report: {}</title>", escape(run));
    let _ = write!(out, "<style>{CSS}</style></head>");
    let _ = write!(
        out,
        "<body data-report-version=\"{PAGE_VERSION}\" data-run=\"{}\" data-live=\"{}\">",
        escape(run),
        report.meta.live
    );
    header(&mut out, report);
    counts_section(&mut out, report);
    graph_section(&mut out, report);
    distributions_section(&mut out, report);
    timeline_section(&mut out, report);
    slowest_section(&mut out, report);
    failures_section(&mut out, report);
    provenance_section(&mut out, report);
    let _ = writeln!(out, "<script>{SCRIPT}</script></body></html>");
    out
}

fn header(out: &mut String, report: &Report) {
    let m = &report.meta;
    let kind = if m.live {
        "campaign status"
    } else {
        "run report"
    };
    let _ = write!(out, "<header><h1>quanta {kind}: {}</h1>", escape(&m.run));
    let _ = write!(
        out,
        "<p class=\"meta\">from {} · generated {} · {} bundle(s)</p>",
        escape(&m.source),
        escape(&m.generated_at),
        m.bundles.len()
    );
    out.push_str("<nav><a href=\"#counts\">counts</a><a href=\"#graph\">pipeline</a><a href=\"#distributions\">distributions</a><a href=\"#timeline\">timeline</a><a href=\"#slowest\">slowest</a><a href=\"#failures\">failures</a><a href=\"#provenance\">provenance</a></nav>");
    for w in &m.warnings {
        let _ = write!(out, "<p class=\"warn\">warning: {}</p>", escape(w));
    }
    out.push_str("</header>");
}

fn count_attrs(c: &Counts) -> String {
    format!(
        "data-quanta=\"{}\" data-succeeded=\"{}\" data-failed=\"{}\" data-blocked=\"{}\" data-pending=\"{}\" data-running=\"{}\"",
        c.quanta, c.succeeded, c.failed, c.blocked, c.pending, c.running
    )
}

fn counts_section(out: &mut String, report: &Report) {
    let t = &report.totals;
    let _ = write!(
        out,
        "<section id=\"counts\"><h2>Quanta</h2><p id=\"totals\" class=\"totals\" {}>",
        count_attrs(t)
    );
    for (n, label, class) in [
        (t.quanta, "quanta", ""),
        (t.succeeded, "succeeded", "c-ok"),
        (t.failed, "failed", "c-bad"),
        (t.blocked, "blocked", "c-block"),
        (t.pending, "pending", "c-wait"),
        (t.running, "running", "c-run"),
    ] {
        let _ = write!(
            out,
            "<span class=\"{class}\"><b>{}</b> {label}</span>",
            thousands(n)
        );
    }
    out.push_str("</p><table id=\"task-counts\"><thead><tr><th>task</th><th>quanta</th><th>succeeded</th><th>failed</th><th>blocked</th><th>pending</th><th>running</th><th>wall median</th><th>wall max</th><th>wall total</th><th>peak memory max</th></tr></thead><tbody>");
    for task in &report.tasks {
        let c = &task.counts;
        let _ = write!(
            out,
            "<tr class=\"task-row\" data-task=\"{}\" {}><td>{}</td>",
            escape(&task.info.label),
            count_attrs(c),
            escape(&task.info.label)
        );
        for n in [
            c.quanta,
            c.succeeded,
            c.failed,
            c.blocked,
            c.pending,
            c.running,
        ] {
            let _ = write!(out, "<td class=\"n\">{}</td>", thousands(n));
        }
        let (med, max) = task
            .wall
            .as_ref()
            .map(|h| (duration(h.median), duration(h.max)))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let mem = task
            .memory
            .as_ref()
            .map(|h| bytes(h.max))
            .unwrap_or_else(|| "-".into());
        let _ = write!(
            out,
            "<td class=\"n\">{med}</td><td class=\"n\">{max}</td><td class=\"n\">{}</td><td class=\"n\">{mem}</td></tr>",
            duration(task.total_wall_seconds)
        );
    }
    out.push_str("</tbody></table></section>");
}

/// The lines of text in a graph node.
fn node_lines(
    kind: NodeKind,
    name: &str,
    tasks: &BTreeMap<&str, &TaskReport>,
    types: &BTreeMap<&str, (u64, u64)>,
) -> Vec<String> {
    match kind {
        NodeKind::Task => {
            let c = tasks.get(name).map(|t| t.counts).unwrap_or_default();
            let mut status = format!("✓ {}", thousands(c.succeeded));
            for (n, sign) in [
                (c.failed, "✗"),
                (c.blocked, "⊘"),
                (c.pending + c.running, "…"),
            ] {
                if n > 0 {
                    let _ = write!(status, "  {sign} {}", thousands(n));
                }
            }
            vec![
                name.to_string(),
                format!("{} quanta", thousands(c.quanta)),
                status,
            ]
        }
        NodeKind::DatasetType => match types.get(name) {
            Some((written, predicted)) => vec![
                name.to_string(),
                format!(
                    "{} / {} written",
                    thousands(*written),
                    thousands(*predicted)
                ),
            ],
            None => vec![name.to_string(), "input".to_string()],
        },
    }
}

fn graph_section(out: &mut String, report: &Report) {
    out.push_str("<section id=\"graph\"><h2>Pipeline</h2>");
    let infos: Vec<_> = report.tasks.iter().map(|t| t.info.clone()).collect();
    let by_label: BTreeMap<&str, &TaskReport> = report
        .tasks
        .iter()
        .map(|t| (t.info.label.as_str(), t))
        .collect();
    // Dataset type → (written, predicted): one per quantum of each producer.
    let mut types: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in &report.tasks {
        for o in &t.info.outputs {
            let e = types.entry(o.as_str()).or_insert((0, 0));
            e.0 += t.counts.succeeded;
            e.1 += t.counts.quanta;
        }
    }
    let g = layout(&infos, |kind, name| {
        node_lines(kind, name, &by_label, &types)
    });
    if g.nodes.is_empty() {
        out.push_str("<p>No tasks.</p></section>");
        return;
    }
    let _ = write!(
        out,
        "<div class=\"scroll\"><svg id=\"pipeline-graph\" class=\"plot graph\" data-nodes=\"{}\" data-edges=\"{}\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"pipeline graph\">",
        g.nodes.len(),
        g.edges.len(),
        g.width.ceil(),
        g.height.ceil(),
        g.width.ceil(),
        g.height.ceil()
    );
    out.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#777\"/></marker></defs>");
    for e in &g.edges {
        let (a, b) = (&g.nodes[e.from], &g.nodes[e.to]);
        let (x1, y1) = (a.x, a.y + a.height / 2.0);
        let (x2, y2) = (b.x, b.y - b.height / 2.0);
        let my = (y1 + y2) / 2.0;
        let class = if e.prerequisite {
            "edge prereq"
        } else {
            "edge"
        };
        let _ = write!(
            out,
            "<path class=\"{class}\" marker-end=\"url(#arrow)\" d=\"M"
        );
        for (i, v) in [x1, y1, x1, my, x2, my, x2, y2].into_iter().enumerate() {
            if i == 2 {
                out.push('C');
            } else if i > 0 {
                out.push(' ');
            }
            push_num(out, v);
        }
        out.push_str("\"/>");
    }
    for n in &g.nodes {
        let lines = node_lines(n.kind, &n.name, &by_label, &types);
        let (x0, y0) = (n.x - n.width / 2.0, n.y - n.height / 2.0);
        match n.kind {
            NodeKind::Task => {
                let c = by_label
                    .get(n.name.as_str())
                    .map(|t| t.counts)
                    .unwrap_or_default();
                let state = if c.failed > 0 {
                    "bad"
                } else if c.quanta > 0 && c.succeeded == c.quanta {
                    "ok"
                } else {
                    "wait"
                };
                let _ = write!(
                    out,
                    "<g class=\"node task {state}\" data-kind=\"task\" data-name=\"{}\" {}>",
                    escape(&n.name),
                    count_attrs(&c)
                );
            }
            NodeKind::DatasetType => {
                let (w, p) = types.get(n.name.as_str()).copied().unwrap_or((0, 0));
                let _ = write!(
                    out,
                    "<g class=\"node dataset-type\" data-kind=\"dataset-type\" data-name=\"{}\" data-written=\"{w}\" data-predicted=\"{p}\">",
                    escape(&n.name)
                );
            }
        }
        let rx = if n.kind == NodeKind::Task { 4.0 } else { 16.0 };
        let _ = write!(out, "<rect x=\"");
        push_num(out, x0);
        out.push_str("\" y=\"");
        push_num(out, y0);
        let _ = write!(out, "\" width=\"");
        push_num(out, n.width);
        out.push_str("\" height=\"");
        push_num(out, n.height);
        let _ = write!(out, "\" rx=\"{rx}\"/>");
        let top = n.y - (lines.len() as f64 - 1.0) * 8.0 + 4.0;
        for (i, line) in lines.iter().enumerate() {
            let class = if i == 0 { " class=\"name\"" } else { "" };
            out.push_str("<text");
            out.push_str(class);
            out.push_str(" x=\"");
            push_num(out, n.x);
            out.push_str("\" y=\"");
            push_num(out, top + 16.0 * i as f64);
            out.push_str("\" text-anchor=\"middle\">");
            push_escaped(out, line);
            out.push_str("</text>");
        }
        out.push_str("</g>");
    }
    out.push_str("</svg></div><p class=\"meta\">Tasks as boxes (✓ succeeded, ✗ failed, ⊘ blocked, … pending or running), dataset types as rounded boxes (outputs written / predicted), prerequisites dashed.</p></section>");
}

fn distributions_section(out: &mut String, report: &Report) {
    out.push_str("<section id=\"distributions\"><h2>Wall time and peak memory per task</h2>");
    let mut any = false;
    for t in &report.tasks {
        if t.wall.is_none() && t.memory.is_none() {
            continue;
        }
        any = true;
        let _ = write!(
            out,
            "<div class=\"task-dist\" data-task=\"{}\"><h3>{}</h3><div class=\"figs\">",
            escape(&t.info.label),
            escape(&t.info.label)
        );
        if let Some(h) = &t.wall {
            out.push_str("<div class=\"fig\"><h3>wall time</h3>");
            histogram_svg(out, h, &t.info.label, "wall", duration);
            out.push_str("</div>");
        }
        if let Some(h) = &t.memory {
            out.push_str("<div class=\"fig\"><h3>peak memory (RSS)</h3>");
            histogram_svg(out, h, &t.info.label, "memory", bytes);
            out.push_str("</div>");
        }
        out.push_str("</div></div>");
    }
    if !any {
        out.push_str("<p>No quantum has run yet.</p>");
    }
    out.push_str("</section>");
}

fn timeline_section(out: &mut String, report: &Report) {
    let t = &report.timeline;
    out.push_str("<section id=\"timeline\"><h2>Timeline</h2>");
    if t.bars.is_empty() {
        out.push_str("<p>No quantum has started yet.</p></section>");
        return;
    }
    let mut note = format!(
        "{} quanta with start times over {}, on {} row(s) (a worker or batch job; quanta it ran at once get rows of their own)",
        thousands(t.quanta_with_times),
        duration((t.t1_ms - t.t0_ms) as f64 / 1000.0),
        thousands(t.lanes_total as u64)
    );
    if t.lanes.len() < t.lanes_total {
        let _ = write!(note, "; the first {} rows drawn", t.lanes.len());
    }
    if t.stride > 1 {
        let _ = write!(
            note,
            "; sampled: 1 quantum in {} in start order, failures first ({} bars)",
            t.stride,
            thousands(t.bars.len() as u64)
        );
    }
    let _ = write!(
        out,
        "<p class=\"meta\">{}.</p><div class=\"legend\">",
        escape(&note)
    );
    for (i, task) in report.tasks.iter().enumerate() {
        let _ = write!(
            out,
            "<span><i class=\"sw{}\"></i>{}</span>",
            i % PALETTE,
            escape(&task.info.label)
        );
    }
    out.push_str("<span><i class=\"swf\"></i>failed</span></div><div class=\"scroll\">");
    let labels: Vec<&str> = report.tasks.iter().map(|t| t.info.label.as_str()).collect();
    timeline_svg(out, t, &labels);
    out.push_str("</div></section>");
}

fn slowest_section(out: &mut String, report: &Report) {
    out.push_str("<section id=\"slowest\"><h2>Slowest quanta</h2>");
    if report.slowest.is_empty() {
        out.push_str("<p>None has run yet.</p></section>");
        return;
    }
    out.push_str("<table><thead><tr><th>wall</th><th>task</th><th>data ID</th><th>status</th><th>peak memory</th><th>host</th><th>worker</th><th>quantum</th></tr></thead><tbody>");
    for q in &report.slowest {
        let _ = write!(
            out,
            "<tr class=\"slow-row\" data-task=\"{}\" data-wall-seconds=\"{}\"><td class=\"n\">{}</td><td>{}</td><td class=\"data-id\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&q.task),
            q.wall_seconds,
            duration(q.wall_seconds),
            escape(&q.task),
            escape(&q.data_id),
            q.status.as_str(),
            q.peak_rss_bytes.map(|b| bytes(b as f64)).unwrap_or_else(|| "-".into()),
            escape(&q.host),
            escape(&q.worker),
            escape(&q.quantum_id)
        );
    }
    out.push_str("</tbody></table></section>");
}

fn failures_section(out: &mut String, report: &Report) {
    out.push_str("<section id=\"failures\"><h2>Failures</h2>");
    if report.failures_total == 0 {
        out.push_str("<p id=\"no-failures\">No quantum failed.</p></section>");
        return;
    }
    let _ = write!(
        out,
        "<p class=\"meta\">{} failed quanta (failed, timed out, out of memory, or outputs that did not verify); blocked quanta downstream of them are counted above.</p>",
        thousands(report.failures_total)
    );
    out.push_str("<table id=\"reasons\"><thead><tr><th>count</th><th>task</th><th>reason (first line)</th></tr></thead><tbody>");
    for r in report.reasons.iter().take(50) {
        let _ = write!(
            out,
            "<tr class=\"reason-row\" data-count=\"{}\" data-task=\"{}\"><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            r.count,
            escape(&r.task),
            thousands(r.count),
            escape(&r.task),
            escape(&r.reason)
        );
    }
    if report.reasons.len() > 50 || report.reasons_other > 0 {
        let more: u64 =
            report.reasons.iter().skip(50).map(|r| r.count).sum::<u64>() + report.reasons_other;
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td></td><td>other reasons</td></tr>",
            thousands(more)
        );
    }
    out.push_str("</tbody></table>");
    let _ = write!(
        out,
        "<table id=\"failure-table\" data-total=\"{}\" data-shown=\"{}\"><thead><tr><th>task</th><th>data ID</th><th>status</th><th>attempts</th><th>host</th><th>reason and log tail</th></tr></thead><tbody>",
        report.failures_total,
        report.failures.len()
    );
    for f in &report.failures {
        let _ = write!(
            out,
            "<tr class=\"failure-row\" data-task=\"{}\" data-status=\"{}\" data-quantum=\"{}\"><td>{}</td><td class=\"data-id\">{}</td><td class=\"c-bad\">{}</td><td class=\"n\">{}</td><td>{}</td><td><div class=\"reason\">{}</div>",
            escape(&f.task),
            f.status.as_str(),
            escape(&f.quantum_id),
            escape(&f.task),
            escape(&f.data_id),
            f.status.as_str(),
            f.attempts,
            escape(&f.host),
            escape(&f.error)
        );
        if !f.log_tail.is_empty() {
            out.push_str("<pre class=\"log-tail\">");
            for (i, line) in f.log_tail.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                push_escaped(out, line);
            }
            out.push_str("</pre>");
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
    if (report.failures.len() as u64) < report.failures_total {
        let _ = write!(
            out,
            "<p class=\"meta\">The first {} failures are listed; <code>--json</code> gives every one.</p>",
            report.failures.len()
        );
    }
    out.push_str("</section>");
}

fn provenance_section(out: &mut String, report: &Report) {
    out.push_str("<section id=\"provenance\"><h2>Provenance</h2>");
    if report.meta.bundles.is_empty() {
        out.push_str("<p>No run provenance recorded.</p>");
    }
    for b in &report.meta.bundles {
        let _ = write!(
            out,
            "<div class=\"bundle\" data-bundle=\"{}\"><h3>bundle <code>{}</code></h3>",
            escape(&b.bundle_id),
            escape(&b.bundle_id)
        );
        let _ = write!(
            out,
            "<p class=\"software\">quanta {} · made {} by {}</p>",
            escape(&b.quanta_version),
            escape(&b.created_at),
            escape(&b.created_by)
        );
        out.push_str("<p>command line:</p><pre class=\"command-line\">");
        push_escaped(out, &shell_words(&b.command_line));
        out.push_str("</pre>");
        for (label, config) in &b.task_configs {
            let _ = write!(
                out,
                "<details class=\"task-config\" data-task=\"{}\"><summary>config of {}</summary><pre>{}</pre></details>",
                escape(label),
                escape(label),
                escape(config)
            );
        }
        let _ = write!(
            out,
            "<details><summary>pipeline</summary><pre class=\"pipeline-yaml\">{}</pre></details></div>",
            escape(&b.pipeline_yaml)
        );
    }
    out.push_str("</section>");
}

/// A command line as a shell would read it back: words with anything but
/// `[A-Za-z0-9_./=:,+-]` single-quoted.
fn shell_words(words: &[String]) -> String {
    let plain = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c))
    };
    words
        .iter()
        .map(|w| {
            if plain(w) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        BundleInfo, Limits, Observation, QuantumStatus, ReportBuilder, ReportMeta, TaskInfo,
    };

    const EVIL: &str =
        "<script>document.body.dataset.pwned=1</script><img src=x onerror=\"alert('x')\">&";

    fn report() -> Report {
        let meta = ReportMeta {
            run: format!("u/x/{EVIL}"),
            source: EVIL.into(),
            generated_at: "2026-12-05T00:00:00Z".into(),
            bundles: vec![BundleInfo {
                bundle_id: "b".into(),
                command_line: vec!["quanta".into(), "--where".into(), EVIL.into()],
                pipeline_yaml: format!("description: {EVIL}"),
                task_configs: vec![(EVIL.into(), format!("{{\"x\": \"{EVIL}\"}}"))],
                ..BundleInfo::default()
            }],
            warnings: vec![EVIL.into()],
            ..ReportMeta::default()
        };
        let tasks = vec![TaskInfo {
            label: EVIL.into(),
            inputs: vec![EVIL.into()],
            outputs: vec!["out".into()],
            ..TaskInfo::default()
        }];
        let mut b = ReportBuilder::new(meta, tasks, Limits::default());
        let log = vec![EVIL.to_string()];
        for (i, status) in [QuantumStatus::Succeeded, QuantumStatus::Failed]
            .into_iter()
            .enumerate()
        {
            let o = Observation {
                task: 0,
                status,
                worker: EVIL,
                host: Some(EVIL),
                start_ms: Some(1000 * i as i64),
                end_ms: Some(1000 * i as i64 + 500),
                wall_seconds: Some(0.5),
                peak_rss_bytes: Some(1 << 20),
                attempts: 1,
                error: Some(EVIL),
                log_tail: &log,
            };
            b.add(&o, || (EVIL.into(), EVIL.into()));
        }
        b.finish()
    }

    #[test]
    fn user_text_never_becomes_markup() {
        let page = render_html(&report());
        assert!(!page.contains("<img"), "an <img> got through");
        assert_eq!(
            page.matches("<script>").count(),
            1,
            "only the page's own script"
        );
        assert!(!page.contains("onerror=\"alert"));
        assert!(page.contains("&lt;script&gt;document.body.dataset.pwned=1&lt;/script&gt;"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no network"
        );
    }

    #[test]
    fn the_page_carries_its_counts_and_plots() {
        let page = render_html(&report());
        assert!(page.contains("id=\"totals\" class=\"totals\" data-quanta=\"2\" data-succeeded=\"1\" data-failed=\"1\""));
        assert_eq!(page.matches("class=\"failure-row\"").count(), 1);
        assert_eq!(page.matches("<svg class=\"plot histogram\"").count(), 2);
        assert!(page.contains("id=\"timeline-plot\""));
        assert!(page.contains("id=\"pipeline-graph\""));
    }

    #[test]
    fn command_lines_are_quoted_for_a_shell() {
        let words: Vec<String> = ["quanta", "--where", "a = 'b'", ""]
            .map(String::from)
            .to_vec();
        assert_eq!(shell_words(&words), "quanta --where 'a = '\\''b'\\''' ''");
    }
}
