//! The report's data model: what the filler hands in ([`ReportMeta`],
//! [`TaskInfo`], one [`Observation`] per quantum) and the aggregated
//! [`Report`] the page is rendered from. The builder keeps a few bytes per
//! quantum (wall time, memory, the timeline interval); per-quantum text
//! (data IDs, errors, logs) is asked for only for the quanta the page names.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::text::truncate;

/// A quantum's state as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantumStatus {
    Succeeded,
    /// The task succeeded but some outputs did not verify at merge.
    Partial,
    Failed,
    TimedOut,
    OutOfMemory,
    Blocked,
    Running,
    Pending,
}

impl QuantumStatus {
    pub const ALL: [QuantumStatus; 8] = [
        QuantumStatus::Succeeded,
        QuantumStatus::Partial,
        QuantumStatus::Failed,
        QuantumStatus::TimedOut,
        QuantumStatus::OutOfMemory,
        QuantumStatus::Blocked,
        QuantumStatus::Running,
        QuantumStatus::Pending,
    ];

    /// The name the registry and the journals use (`timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            QuantumStatus::Succeeded => "succeeded",
            QuantumStatus::Partial => "partial",
            QuantumStatus::Failed => "failed",
            QuantumStatus::TimedOut => "timed_out",
            QuantumStatus::OutOfMemory => "out_of_memory",
            QuantumStatus::Blocked => "blocked",
            QuantumStatus::Running => "running",
            QuantumStatus::Pending => "pending",
        }
    }

    /// The status of a name as [`QuantumStatus::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<QuantumStatus> {
        QuantumStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Counted as failed: failed, timed out, out of memory, or partial.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            QuantumStatus::Failed
                | QuantumStatus::TimedOut
                | QuantumStatus::OutOfMemory
                | QuantumStatus::Partial
        )
    }
}

/// Quanta by state: the columns of the counts table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub quanta: u64,
    pub succeeded: u64,
    /// Failed, timed out, out of memory or partial.
    pub failed: u64,
    pub blocked: u64,
    pub pending: u64,
    pub running: u64,
}

impl Counts {
    pub fn add(&mut self, status: QuantumStatus) {
        self.quanta += 1;
        match status {
            QuantumStatus::Succeeded => self.succeeded += 1,
            QuantumStatus::Blocked => self.blocked += 1,
            QuantumStatus::Pending => self.pending += 1,
            QuantumStatus::Running => self.running += 1,
            _ => self.failed += 1,
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.quanta += o.quanta;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.blocked += o.blocked;
        self.pending += o.pending;
        self.running += o.running;
    }
}

/// A task of the pipeline: its label and the dataset types it connects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskInfo {
    pub label: String,
    /// The task class, or the command line of a command task.
    pub kind: String,
    pub dimensions: Vec<String>,
    pub inputs: Vec<String>,
    pub prerequisites: Vec<String>,
    pub outputs: Vec<String>,
}

/// What one bundle of the run recorded: software, configs, command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BundleInfo {
    pub bundle_id: String,
    pub quanta_version: String,
    pub created_at: String,
    pub created_by: String,
    pub command_line: Vec<String>,
    pub pipeline_yaml: String,
    /// (task label, config as JSON text), in pipeline order.
    pub task_configs: Vec<(String, String)>,
}

/// What the page is about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportMeta {
    /// The RUN collection.
    pub run: String,
    /// Where the data came from (`registry REPO` or `journals DIR`).
    pub source: String,
    /// True for a campaign still in progress (read from journals).
    pub live: bool,
    /// RFC 3339 time the page was made.
    pub generated_at: String,
    pub bundles: Vec<BundleInfo>,
    /// Oddities met while reading (torn journal tails, ...).
    pub warnings: Vec<String>,
}

/// One quantum, as the filler hands it in.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Index into the builder's tasks.
    pub task: usize,
    pub status: QuantumStatus,
    /// The worker or batch job that ran it (a timeline row group): quanta
    /// of one worker that overlap in time go to separate rows.
    pub worker: &'a str,
    pub host: Option<&'a str>,
    /// Milliseconds since the Unix epoch.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub wall_seconds: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub attempts: u32,
    pub error: Option<&'a str>,
    pub log_tail: &'a [String],
}

/// How much per-quantum detail the page keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bars drawn on the timeline; more quanta are sampled (every k-th in
    /// start order, failures kept first).
    pub timeline_bars: usize,
    /// Timeline rows drawn (the first ones by worker name).
    pub timeline_lanes: usize,
    /// Failures listed with reason and log tail; all are counted.
    pub failure_rows: usize,
    pub log_lines: usize,
    pub line_chars: usize,
    pub slowest: usize,
    pub histogram_bins: usize,
    /// Distinct failure reasons tallied (the rest count as "other").
    pub reasons: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeline_bars: 10_000,
            timeline_lanes: 200,
            failure_rows: 500,
            log_lines: 20,
            line_chars: 400,
            slowest: 25,
            histogram_bins: 24,
            reasons: 10_000,
        }
    }
}

/// The distribution of one metric of one task's quanta.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Bins are equal in log10 of the value (values spread over decades).
    pub log: bool,
    /// `counts.len() + 1` bin edges, in the metric's unit.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub n: u64,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// One task's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub info: TaskInfo,
    pub counts: Counts,
    /// Seconds.
    pub wall: Option<Histogram>,
    /// Bytes.
    pub memory: Option<Histogram>,
    pub total_wall_seconds: f64,
}

/// A quantum the page names (the slowest).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantumLine {
    pub task: String,
    pub data_id: String,
    pub quantum_id: String,
    pub status: QuantumStatus,
    pub wall_seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    pub host: String,
    pub worker: String,
}

/// A failed quantum with its reason and log tail.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureLine {
    pub task: String,
    pub data_id: String,
    pub quantum_id: String,
    pub status: QuantumStatus,
    pub attempts: u32,
    pub host: String,
    pub error: String,
    pub log_tail: Vec<String>,
}

/// Failures grouped by the first line of their error.
#[derive(Debug, Clone, PartialEq)]
pub struct ReasonLine {
    pub task: String,
    pub reason: String,
    pub count: u64,
}

/// One drawn bar of the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelineBar {
    pub lane: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub task: u32,
    pub status: QuantumStatus,
}

/// The timeline: rows (a worker, or one of its concurrent slots) and the
/// bars drawn on them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub t0_ms: i64,
    pub t1_ms: i64,
    /// Labels of the rows drawn.
    pub lanes: Vec<String>,
    /// Rows there are (more than `lanes` when cut at the limit).
    pub lanes_total: usize,
    pub bars: Vec<TimelineBar>,
    /// Quanta with a start time (candidates for the timeline).
    pub quanta_with_times: u64,
    /// Every k-th quantum in start order is drawn (1: all).
    pub stride: u64,
}

/// The aggregated report the page is rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub meta: ReportMeta,
    pub tasks: Vec<TaskReport>,
    pub totals: Counts,
    pub timeline: Timeline,
    /// Slowest first.
    pub slowest: Vec<QuantumLine>,
    pub failures: Vec<FailureLine>,
    /// Every failed quantum (at least `failures.len()`).
    pub failures_total: u64,
    /// Most frequent first.
    pub reasons: Vec<ReasonLine>,
    /// Failures whose reason was not tallied separately (over the limit).
    pub reasons_other: u64,
    pub limits: Limits,
}

#[derive(Clone, Copy)]
struct Interval {
    start_ms: i64,
    /// `i64::MIN` while running (ends at the timeline's end).
    end_ms: i64,
    worker: u32,
    task: u32,
    status: QuantumStatus,
}

#[derive(Default)]
struct TaskAcc {
    counts: Counts,
    walls: Vec<f32>,
    rss: Vec<u64>,
    total_wall: f64,
}

/// Aggregates quanta into a [`Report`] as they are handed in.
pub struct ReportBuilder {
    meta: ReportMeta,
    tasks: Vec<TaskInfo>,
    acc: Vec<TaskAcc>,
    limits: Limits,
    workers: HashMap<String, u32>,
    worker_names: Vec<String>,
    intervals: Vec<Interval>,
    /// (wall, sequence) of the slowest so far, smallest on top.
    slowest_heap: BinaryHeap<Reverse<(OrdF64, u64)>>,
    slowest: HashMap<u64, QuantumLine>,
    seq: u64,
    failures: Vec<FailureLine>,
    failures_total: u64,
    reasons: HashMap<(u32, String), u64>,
    reasons_other: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl ReportBuilder {
    pub fn new(meta: ReportMeta, tasks: Vec<TaskInfo>, limits: Limits) -> ReportBuilder {
        let acc = tasks.iter().map(|_| TaskAcc::default()).collect();
        ReportBuilder {
            meta,
            tasks,
            acc,
            limits,
            workers: HashMap::new(),
            worker_names: Vec::new(),
            intervals: Vec::new(),
            slowest_heap: BinaryHeap::new(),
            slowest: HashMap::new(),
            seq: 0,
            failures: Vec::new(),
            failures_total: 0,
            reasons: HashMap::new(),
            reasons_other: 0,
        }
    }

    /// The index of the task `label`, added (with no connections) when the
    /// filler met a quantum of a task it did not declare.
    pub fn task_index(&mut self, label: &str) -> usize {
        if let Some(i) = self.tasks.iter().position(|t| t.label == label) {
            return i;
        }
        self.tasks.push(TaskInfo {
            label: label.to_string(),
            ..TaskInfo::default()
        });
        self.acc.push(TaskAcc::default());
        self.tasks.len() - 1
    }

    /// Adds one quantum. `ids` gives its (data ID, quantum ID) as text; it
    /// is called only when the page names the quantum (a failure, or one of
    /// the slowest so far).
    pub fn add(&mut self, q: &Observation<'_>, ids: impl FnOnce() -> (String, String)) {
        let task = if q.task < self.tasks.len() {
            q.task
        } else {
            self.task_index("(unknown task)")
        };
        self.seq += 1;
        let acc = &mut self.acc[task];
        acc.counts.add(q.status);
        let ran = !matches!(
            q.status,
            QuantumStatus::Blocked | QuantumStatus::Pending | QuantumStatus::Running
        );
        if ran {
            if let Some(w) = q.wall_seconds.filter(|w| w.is_finite() && *w >= 0.0) {
                acc.walls.push(w as f32);
                acc.total_wall += w;
            }
            if let Some(r) = q.peak_rss_bytes.filter(|r| *r > 0) {
                acc.rss.push(r);
            }
        }
        let worker = self.worker_id(q.worker);
        let drawn = !matches!(q.status, QuantumStatus::Blocked | QuantumStatus::Pending);
        if let Some(start_ms) = q.start_ms.filter(|_| drawn) {
            let end_ms = match (q.end_ms, q.wall_seconds) {
                (Some(e), _) => e.max(start_ms),
                (None, Some(w)) if ran => start_ms + (w * 1000.0) as i64,
                _ => i64::MIN,
            };
            self.intervals.push(Interval {
                start_ms,
                end_ms,
                worker,
                task: task as u32,
                status: q.status,
            });
        }
        let mut ids = Some(ids);
        let mut get_ids = || ids.take().map(|f| f()).unwrap_or_default();
        let mut named: Option<(String, String)> = None;
        if q.status.is_failure() {
            named = Some(get_ids());
            self.add_failure(task, q, named.as_ref().map(|n| (&n.0, &n.1)));
        }
        if let Some(w) = q.wall_seconds.filter(|w| ran && w.is_finite()) {
            let full = self.slowest_heap.len() >= self.limits.slowest;
            let beats = self
                .slowest_heap
                .peek()
                .is_none_or(|Reverse((min, _))| w > min.0);
            if self.limits.slowest > 0 && (!full || beats) {
                let (data_id, quantum_id) = named.take().unwrap_or_else(get_ids);
                if full {
                    if let Some(Reverse((_, old))) = self.slowest_heap.pop() {
                        self.slowest.remove(&old);
                    }
                }
                self.slowest_heap.push(Reverse((OrdF64(w), self.seq)));
                self.slowest.insert(
                    self.seq,
                    QuantumLine {
                        task: self.tasks[task].label.clone(),
                        data_id,
                        quantum_id,
                        status: q.status,
                        wall_seconds: w,
                        peak_rss_bytes: q.peak_rss_bytes,
                        host: q.host.unwrap_or_default().to_string(),
                        worker: q.worker.to_string(),
                    },
                );
            }
        }
    }

    fn worker_id(&mut self, worker: &str) -> u32 {
        if let Some(&id) = self.workers.get(worker) {
            return id;
        }
        let id = self.worker_names.len() as u32;
        self.worker_names.push(worker.to_string());
        self.workers.insert(worker.to_string(), id);
        id
    }

    fn add_failure(&mut self, task: usize, q: &Observation<'_>, ids: Option<(&String, &String)>) {
        self.failures_total += 1;
        let error = q.error.unwrap_or("");
        let first_line = error.lines().next().unwrap_or("").trim();
        let reason = if first_line.is_empty() {
            format!("({})", q.status.as_str())
        } else {
            truncate(first_line, 200)
        };
        let key = (task as u32, reason);
        if let Some(n) = self.reasons.get_mut(&key) {
            *n += 1;
        } else if self.reasons.len() < self.limits.reasons {
            self.reasons.insert(key, 1);
        } else {
            self.reasons_other += 1;
        }
        if self.failures.len() >= self.limits.failure_rows {
            return;
        }
        let (data_id, quantum_id) = ids.map(|(d, q)| (d.clone(), q.clone())).unwrap_or_default();
        let skip = q.log_tail.len().saturating_sub(self.limits.log_lines);
        self.failures.push(FailureLine {
            task: self.tasks[task].label.clone(),
            data_id,
            quantum_id,
            status: q.status,
            attempts: q.attempts,
            host: q.host.unwrap_or_default().to_string(),
            error: truncate(error, self.limits.line_chars * 10),
            log_tail: q.log_tail[skip..]
                .iter()
                .map(|l| truncate(l, self.limits.line_chars))
                .collect(),
        });
    }

    /// The aggregated report.
    pub fn finish(self) -> Report {
        let bins = self.limits.histogram_bins.max(1);
        let mut totals = Counts::default();
        let mut tasks = Vec::with_capacity(self.tasks.len());
        for (info, acc) in self.tasks.into_iter().zip(self.acc) {
            totals.merge(&acc.counts);
            let walls: Vec<f64> = acc.walls.iter().map(|w| f64::from(*w)).collect();
            let rss: Vec<f64> = acc.rss.iter().map(|r| *r as f64).collect();
            tasks.push(TaskReport {
                info,
                counts: acc.counts,
                wall: histogram(walls, bins),
                memory: histogram(rss, bins),
                total_wall_seconds: acc.total_wall,
            });
        }
        let timeline = timeline(self.intervals, &self.worker_names, &self.limits);
        let mut slowest: Vec<QuantumLine> = self.slowest.into_values().collect();
        slowest.sort_by(|a, b| b.wall_seconds.total_cmp(&a.wall_seconds));
        let mut reasons: Vec<ReasonLine> = self
            .reasons
            .into_iter()
            .map(|((task, reason), count)| ReasonLine {
                task: tasks[task as usize].info.label.clone(),
                reason,
                count,
            })
            .collect();
        reasons.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.task.cmp(&b.task))
                .then_with(|| a.reason.cmp(&b.reason))
        });
        // Failures in pipeline order, then by data ID, whatever order the
        // filler read them in.
        let mut failures = self.failures;
        let rank = |label: &str| tasks.iter().position(|t| t.info.label == label);
        failures.sort_by(|a, b| {
            (rank(&a.task), &a.data_id, &a.quantum_id).cmp(&(
                rank(&b.task),
                &b.data_id,
                &b.quantum_id,
            ))
        });
        Report {
            meta: self.meta,
            tasks,
            totals,
            timeline,
            slowest,
            failures,
            failures_total: self.failures_total,
            reasons,
            reasons_other: self.reasons_other,
            limits: self.limits,
        }
    }
}

/// Equal-width bins over [min, max], in log10 when the values are all
/// positive and spread over more than two decades.
fn histogram(mut values: Vec<f64>, bins: usize) -> Option<Histogram> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mid = n / 2;
    let (_, median, _) = values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let median = *median;
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let log = min > 0.0 && max / min > 100.0;
    let f = |v: f64| if log { v.log10() } else { v };
    let (lo, hi) = (f(min), f(max));
    let bins = if hi > lo { bins } else { 1 };
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let mut counts = vec![0u64; bins];
    for v in &values {
        let b = (((f(*v) - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let edges = (0..=bins)
        .map(|i| {
            let e = lo + width * i as f64;
            if log {
                10f64.powf(e)
            } else {
                e
            }
        })
        .collect();
    values.clear();
    Some(Histogram {
        log,
        edges,
        counts,
        n: n as u64,
        min,
        median,
        max,
    })
}

/// Milliseconds of overlap tolerated between consecutive quanta of one
/// worker row (times are recorded to the millisecond, walls measured apart).
const OVERLAP_MS: i64 = 2;

/// Rows per worker (greedy interval partitioning: a quantum goes to the
/// first row of its worker free at its start), then the bars to draw.
fn timeline(mut intervals: Vec<Interval>, workers: &[String], limits: &Limits) -> Timeline {
    if intervals.is_empty() {
        return Timeline {
            stride: 1,
            ..Timeline::default()
        };
    }
    let t0 = intervals.iter().map(|i| i.start_ms).min().unwrap_or(0);
    let t1 = intervals
        .iter()
        .map(|i| i.end_ms.max(i.start_ms))
        .max()
        .unwrap_or(t0);
    for i in &mut intervals {
        if i.end_ms == i64::MIN {
            i.end_ms = t1;
        }
    }
    // Workers by name, each worker's quanta by start.
    let mut order: Vec<u32> = (0..workers.len() as u32).collect();
    order.sort_by(|a, b| workers[*a as usize].cmp(&workers[*b as usize]));
    let mut rank = vec![0u32; workers.len()];
    for (r, w) in order.iter().enumerate() {
        rank[*w as usize] = r as u32;
    }
    intervals.sort_unstable_by_key(|i| (rank[i.worker as usize], i.start_ms, i.end_ms));
    let mut lane_of: Vec<u32> = Vec::with_capacity(intervals.len());
    let mut labels: Vec<String> = Vec::new();
    let mut i = 0;
    while i < intervals.len() {
        let w = intervals[i].worker;
        let first_lane = labels.len() as u32;
        // (end, slot) of each row of this worker, earliest end on top.
        let mut free: BinaryHeap<Reverse<(i64, u32)>> = BinaryHeap::new();
        let mut slots = 0u32;
        while i < intervals.len() && intervals[i].worker == w {
            let iv = intervals[i];
            let slot = match free.peek() {
                Some(Reverse((end, slot))) if *end <= iv.start_ms + OVERLAP_MS => {
                    let s = *slot;
                    free.pop();
                    s
                }
                _ => {
                    slots += 1;
                    slots - 1
                }
            };
            free.push(Reverse((iv.end_ms, slot)));
            lane_of.push(first_lane + slot);
            i += 1;
        }
        let name = &workers[w as usize];
        for s in 0..slots {
            labels.push(if slots == 1 {
                name.clone()
            } else {
                format!("{name} #{}", s + 1)
            });
        }
    }
    let lanes_total = labels.len();
    labels.truncate(limits.timeline_lanes);
    let shown = labels.len() as u32;
    let mut candidates: Vec<(usize, u32)> = lane_of
        .iter()
        .enumerate()
        .filter(|(_, l)| **l < shown)
        .map(|(k, l)| (k, *l))
        .collect();
    candidates.sort_unstable_by_key(|(k, _)| intervals[*k].start_ms);
    let budget = limits.timeline_bars.max(1);
    let stride = candidates.len().div_ceil(budget).max(1) as u64;
    let bar = |(k, lane): (usize, u32)| {
        let iv = &intervals[k];
        TimelineBar {
            lane,
            start_ms: iv.start_ms,
            end_ms: iv.end_ms,
            task: iv.task,
            status: iv.status,
        }
    };
    let mut bars: Vec<TimelineBar> = Vec::new();
    if stride > 1 {
        // Failures first (up to a tenth of the budget), then every k-th.
        bars.extend(
            candidates
                .iter()
                .filter(|(k, _)| intervals[*k].status.is_failure())
                .take(budget / 10)
                .map(|c| bar(*c)),
        );
    }
    bars.extend(
        candidates
            .iter()
            .enumerate()
            .filter(|(n, (k, _))| {
                (*n as u64).is_multiple_of(stride)
                    && !(stride > 1 && intervals[*k].status.is_failure())
            })
            .map(|(_, c)| bar(*c)),
    );
    Timeline {
        t0_ms: t0,
        t1_ms: t1.max(t0 + 1),
        lanes: labels,
        lanes_total,
        bars,
        quanta_with_times: intervals.len() as u64,
        stride,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(
        task: usize,
        status: QuantumStatus,
        worker: &str,
        start: i64,
        wall: f64,
    ) -> Observation<'_> {
        Observation {
            task,
            status,
            worker,
            host: Some("h"),
            start_ms: Some(start),
            end_ms: Some(start + (wall * 1000.0) as i64),
            wall_seconds: Some(wall),
            peak_rss_bytes: Some(1 << 20),
            attempts: 1,
            error: None,
            log_tail: &[],
        }
    }

    fn tasks() -> Vec<TaskInfo> {
        ["a", "b"]
            .iter()
            .map(|l| TaskInfo {
                label: l.to_string(),
                ..TaskInfo::default()
            })
            .collect()
    }

    #[test]
    fn counts_and_names_only_what_the_page_shows() {
        let limits = Limits {
            slowest: 2,
            failure_rows: 1,
            ..Limits::default()
        };
        let mut b = ReportBuilder::new(ReportMeta::default(), tasks(), limits);
        let mut asked = 0;
        for (i, wall) in [1.0, 5.0, 3.0, 0.5].into_iter().enumerate() {
            b.add(
                &obs(0, QuantumStatus::Succeeded, "w", i as i64 * 10_000, wall),
                || {
                    asked += 1;
                    (format!("d{i}"), format!("q{i}"))
                },
            );
        }
        let log = vec!["x".to_string(); 30];
        for i in 0..3 {
            let mut o = obs(1, QuantumStatus::Failed, "w", 0, 0.1);
            o.error = Some("boom\nmore");
            o.log_tail = &log;
            b.add(&o, || (format!("f{i}"), String::new()));
        }
        b.add(&obs(1, QuantumStatus::Blocked, "w", 0, 0.0), || {
            panic!("not named")
        });
        let r = b.finish();
        assert_eq!(asked, 3, "the fourth quantum is not among the two slowest");
        assert_eq!(r.totals.quanta, 8);
        assert_eq!(r.tasks[0].counts.succeeded, 4);
        assert_eq!(r.tasks[1].counts.failed, 3);
        assert_eq!(r.tasks[1].counts.blocked, 1);
        let slow: Vec<&str> = r.slowest.iter().map(|q| q.data_id.as_str()).collect();
        assert_eq!(slow, ["d1", "d2"]);
        assert_eq!(r.failures_total, 3);
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].log_tail.len(), 20);
        assert_eq!(r.reasons[0].reason, "boom");
        assert_eq!(r.reasons[0].count, 3);
        let h = r.tasks[0].wall.as_ref().unwrap();
        assert_eq!(h.counts.iter().sum::<u64>(), 4);
        assert_eq!((h.min, h.max), (0.5, 5.0));
    }

    #[test]
    fn overlapping_quanta_of_one_worker_get_rows_of_their_own() {
        let mut b = ReportBuilder::new(ReportMeta::default(), tasks(), Limits::default());
        // Two at a time on w1, one after the other on w2.
        for (w, start) in [
            ("w1", 0),
            ("w1", 100),
            ("w1", 1000),
            ("w1", 1100),
            ("w2", 0),
            ("w2", 1000),
        ] {
            b.add(
                &obs(0, QuantumStatus::Succeeded, w, start, 0.9),
                Default::default,
            );
        }
        let t = b.finish().timeline;
        assert_eq!(t.lanes, ["w1 #1", "w1 #2", "w2"]);
        assert_eq!(t.bars.len(), 6);
        assert_eq!(t.stride, 1);
        assert_eq!((t.t0_ms, t.t1_ms), (0, 2000));
    }

    #[test]
    fn running_quanta_are_drawn_to_the_latest_time_and_blocked_ones_not_at_all() {
        let mut b = ReportBuilder::new(ReportMeta::default(), tasks(), Limits::default());
        b.add(
            &obs(0, QuantumStatus::Succeeded, "w", 0, 5.0),
            Default::default,
        );
        let mut running = obs(0, QuantumStatus::Running, "w", 1000, 0.0);
        (running.end_ms, running.wall_seconds) = (None, None);
        b.add(&running, || panic!("not named"));
        b.add(&obs(1, QuantumStatus::Blocked, "w", 0, 0.0), || {
            panic!("not named")
        });
        let r = b.finish();
        assert_eq!(r.totals.running, 1);
        let t = &r.timeline;
        assert_eq!(t.bars.len(), 2);
        let bar = t
            .bars
            .iter()
            .find(|b| b.status == QuantumStatus::Running)
            .unwrap();
        assert_eq!((bar.start_ms, bar.end_ms), (1000, 5000));
        assert_eq!(t.lanes.len(), 2, "it overlaps the first quantum");
        assert_eq!(
            r.tasks[0].wall.as_ref().unwrap().n,
            1,
            "only finished quanta have walls"
        );
    }

    #[test]
    fn large_timelines_are_sampled_keeping_failures() {
        let limits = Limits {
            timeline_bars: 100,
            ..Limits::default()
        };
        let mut b = ReportBuilder::new(ReportMeta::default(), tasks(), limits);
        for i in 0..10_000i64 {
            let status = if i % 1000 == 7 {
                QuantumStatus::Failed
            } else {
                QuantumStatus::Succeeded
            };
            b.add(&obs(0, status, "w", i * 10, 0.01), Default::default);
        }
        let t = b.finish().timeline;
        assert_eq!(t.stride, 100);
        assert_eq!(t.quanta_with_times, 10_000);
        let failed = t.bars.iter().filter(|b| b.status.is_failure()).count();
        assert_eq!(failed, 10);
        assert!(t.bars.len() <= 110, "{}", t.bars.len());
    }

    #[test]
    fn histograms_switch_to_log_bins_over_decades() {
        let h = histogram(vec![0.01, 0.1, 1.0, 10.0, 100.0], 4).unwrap();
        assert!(h.log);
        assert_eq!(h.counts, [1, 1, 1, 2]);
        assert_eq!(h.median, 1.0);
        let h = histogram(vec![2.0, 2.0], 10).unwrap();
        assert_eq!(h.counts, [2]);
    }
}
