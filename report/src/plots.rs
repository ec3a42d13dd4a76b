//! Inline SVG plots: a histogram per task and metric, and the timeline.
//! Fills come from the page's CSS classes (`t0`..`t9` per task, `f` for
//! failures, `r` for running), which keeps a bar to a few dozen bytes.

use std::fmt::Write;

use crate::model::{Histogram, QuantumStatus, Timeline};
use crate::text::{duration, push_escaped, push_num, thousands, truncate};

/// Task colour classes cycle through this many.
pub(crate) const PALETTE: usize = 10;

/// Bars beyond this many get no hover title (bytes).
const TITLED_BARS: usize = 3000;

/// One histogram as an `<svg class="plot histogram">`; `unit` formats the
/// metric's values for the axis and the titles.
pub(crate) fn histogram_svg(
    out: &mut String,
    h: &Histogram,
    task: &str,
    metric: &str,
    unit: fn(f64) -> String,
) {
    const W: f64 = 320.0;
    const H: f64 = 150.0;
    const LEFT: f64 = 44.0;
    const RIGHT: f64 = 10.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 34.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let peak = h.counts.iter().copied().max().unwrap_or(0).max(1);
    let _ = write!(out, "<svg class=\"plot histogram\" data-task=\"");
    push_escaped(out, task);
    let _ = write!(
        out,
        "\" data-metric=\"{metric}\" data-n=\"{}\" data-log=\"{}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"",
        h.n, h.log
    );
    push_escaped(out, &format!("{metric} of {task}"));
    out.push_str("\">");
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\"/>",
        TOP + plot_h,
        LEFT + plot_w
    );
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\"/>",
        TOP + plot_h
    );
    let bw = plot_w / h.counts.len() as f64;
    for (i, &c) in h.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let bh = (c as f64 / peak as f64 * plot_h).max(1.0);
        out.push_str("<rect class=\"bar\" x=\"");
        push_num(out, LEFT + bw * i as f64 + 0.5);
        out.push_str("\" y=\"");
        push_num(out, TOP + plot_h - bh);
        out.push_str("\" width=\"");
        push_num(out, (bw - 1.0).max(0.5));
        out.push_str("\" height=\"");
        push_num(out, bh);
        out.push_str("\"><title>");
        let range = format!(
            "{} – {}: {} quanta",
            unit(h.edges[i]),
            unit(h.edges[i + 1]),
            thousands(c)
        );
        push_escaped(out, &range);
        out.push_str("</title></rect>");
    }
    let label_y = TOP + plot_h + 14.0;
    let last = h.edges.len() - 1;
    for (k, anchor, x) in [
        (0, "start", LEFT),
        (last / 2, "middle", LEFT + plot_w / 2.0),
        (last, "end", LEFT + plot_w),
    ] {
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{x}\" y=\"{label_y}\" text-anchor=\"{anchor}\">"
        );
        push_escaped(out, &unit(h.edges[k]));
        out.push_str("</text>");
    }
    let _ = write!(
        out,
        "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        LEFT - 4.0,
        TOP + 8.0,
        thousands(peak)
    );
    let caption = format!(
        "median {}{}",
        unit(h.median),
        if h.log { " · log bins" } else { "" }
    );
    let _ = write!(
        out,
        "<text class=\"caption\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">",
        LEFT + plot_w / 2.0,
        H - 4.0
    );
    push_escaped(out, &caption);
    out.push_str("</text></svg>");
}

/// The timeline as `<svg id="timeline-plot" class="plot timeline">`: a row
/// per worker slot, a bar per drawn quantum, time since the first start
/// on the axis. `task_labels` names the tasks for the titles.
pub(crate) fn timeline_svg(out: &mut String, t: &Timeline, task_labels: &[&str]) {
    const W: f64 = 1100.0;
    const LEFT: f64 = 170.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 6.0;
    const BOTTOM: f64 = 30.0;
    let lanes = t.lanes.len().max(1);
    let lane_h = (560.0 / lanes as f64).clamp(2.0, 16.0);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = lane_h * lanes as f64;
    let height = TOP + plot_h + BOTTOM;
    let span = (t.t1_ms - t.t0_ms).max(1) as f64;
    let x_of = |ms: i64| LEFT + (ms - t.t0_ms) as f64 / span * plot_w;
    let _ = write!(
        out,
        "<svg id=\"timeline-plot\" class=\"plot timeline\" data-bars=\"{}\" data-quanta=\"{}\" data-lanes=\"{}\" data-lanes-total=\"{}\" data-stride=\"{}\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"timeline of quanta per worker\">",
        t.bars.len(),
        t.quanta_with_times,
        t.lanes.len(),
        t.lanes_total,
        t.stride,
        height.ceil(),
        height.ceil()
    );
    let label_every = if lane_h >= 9.0 {
        1
    } else {
        (9.0 / lane_h).ceil() as usize
    };
    for (i, label) in t.lanes.iter().enumerate() {
        let y = TOP + lane_h * i as f64;
        if i % 2 == 1 {
            out.push_str("<rect class=\"lane\" x=\"0\" y=\"");
            push_num(out, y);
            let _ = write!(out, "\" width=\"{W}\" height=\"");
            push_num(out, lane_h);
            out.push_str("\"/>");
        }
        if i % label_every == 0 {
            out.push_str("<text class=\"tick\" x=\"4\" y=\"");
            push_num(out, y + lane_h.min(12.0) - 1.0);
            out.push_str("\">");
            push_escaped(out, &truncate(label, 26));
            out.push_str("</text>");
        }
    }
    let bar_h = (lane_h - 1.0).max(1.0);
    let titled = t.bars.len() <= TITLED_BARS;
    for b in &t.bars {
        let x0 = x_of(b.start_ms);
        let w = (x_of(b.end_ms) - x0).max(0.6);
        let class = match b.status {
            s if s.is_failure() => "f".to_string(),
            QuantumStatus::Running => format!("t{} r", b.task as usize % PALETTE),
            _ => format!("t{}", b.task as usize % PALETTE),
        };
        out.push_str("<rect x=\"");
        push_num(out, x0);
        out.push_str("\" y=\"");
        push_num(out, TOP + lane_h * b.lane as f64);
        out.push_str("\" width=\"");
        push_num(out, w);
        out.push_str("\" height=\"");
        push_num(out, bar_h);
        let _ = write!(out, "\" class=\"{class}\"");
        if titled {
            out.push_str("><title>");
            let label = task_labels.get(b.task as usize).copied().unwrap_or("?");
            let text = format!(
                "{label} · {} · {}",
                b.status.as_str(),
                duration((b.end_ms - b.start_ms) as f64 / 1000.0)
            );
            push_escaped(out, &text);
            out.push_str("</title></rect>");
        } else {
            out.push_str("/>");
        }
    }
    let axis_y = TOP + plot_h;
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\"/>",
        LEFT + plot_w
    );
    for k in 0..=5 {
        let frac = k as f64 / 5.0;
        let x = LEFT + frac * plot_w;
        let anchor = match k {
            0 => "start",
            5 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{x}\" y1=\"{axis_y}\" x2=\"{x}\" y2=\"{}\"/><text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"{anchor}\">+{}</text>",
            axis_y + 4.0,
            axis_y + 16.0,
            duration(frac * span / 1000.0)
        );
    }
    out.push_str("</svg>");
}
