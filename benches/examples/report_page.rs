//! The campaign page of a 1,000,000-quantum run (`benches/report/README.md`).
//!
//! ```text
//! cargo run --release -p quanta-benches --example report_page [-- --quanta N] [--registry]
//! ```
//!
//! A synthetic reference-style campaign: 1,000 exposures × D detectors of
//! `isr` and `characterize` plus one `summarize` per exposure (D = 500 for
//! the default million), run by one batch job per exposure on 64 hosts
//! (two quanta at a time), walls spread over a decade, one quantum in a
//! thousand failed (with a 20-line log tail) and the summaries downstream
//! of them blocked.
//!
//! Without `--registry` the quanta go straight into the report builder
//! (the page's own cost: aggregation, rendering, writing). With
//! `--registry` they are first recorded in a real registry as merge
//! records them (untimed), then the page is made as `quanta report REPO RUN
//! --html` makes it: `run_report_page` reads every quantum back from SQLite,
//! then the page is rendered and written. Prints each stage's wall time and
//! the page's size.

use std::time::Instant;

use quanta_core::{DataId, DataIdValue, Uuid};
use quanta_registry::{NewQuantum, QuantumExecution, RunProvenance};
use quanta_report::{
    write_html, BundleInfo, Limits, Observation, QuantumStatus, ReportBuilder, ReportMeta, TaskInfo,
};

#[path = "../support.rs"]
mod support;

const EXPOSURES: u64 = 1000;
const T0_MS: i64 = 1_796_400_000_000;

struct Rng(u64);
impl Rng {
    /// SplitMix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One synthetic quantum.
struct Synth {
    task: usize,
    exposure: u64,
    detector: Option<u64>,
    status: QuantumStatus,
    job: String,
    host: String,
    start_ms: i64,
    wall: f64,
    rss: u64,
}

/// The campaign, exposure by exposure, each exposure's job running two
/// quanta at a time.
fn campaign(detectors: u64, mut emit: impl FnMut(&Synth)) {
    let mut rng = Rng(42);
    for e in 0..EXPOSURES {
        let job = format!("{}_{e}", 700_000 + e / 100);
        let host = format!("node{:02}", e % 64);
        // Each job starts when its host's previous job ends (~ 16 per host).
        let mut slots = [T0_MS + (e / 64) as i64 * 2_400_000; 2];
        let mut failed = false;
        for task in 0..2 {
            for d in 0..detectors {
                let base = if task == 0 { 2.0 } else { 5.0 };
                let wall = base * 10f64.powf(rng.unit());
                let slot = if slots[0] <= slots[1] { 0 } else { 1 };
                let start_ms = slots[slot];
                slots[slot] += (wall * 1000.0) as i64 + 5;
                let status = if task == 1 && rng.next().is_multiple_of(1000) {
                    failed = true;
                    QuantumStatus::Failed
                } else {
                    QuantumStatus::Succeeded
                };
                emit(&Synth {
                    task,
                    exposure: e,
                    detector: Some(d),
                    status,
                    job: job.clone(),
                    host: host.clone(),
                    start_ms,
                    wall,
                    rss: (200 << 20) + rng.next() % (600 << 20),
                });
            }
        }
        emit(&Synth {
            task: 2,
            exposure: e,
            detector: None,
            status: if failed {
                QuantumStatus::Blocked
            } else {
                QuantumStatus::Succeeded
            },
            job,
            host,
            start_ms: slots[0].max(slots[1]),
            wall: 1.0 + rng.unit(),
            rss: 100 << 20,
        });
    }
}

fn tasks() -> Vec<TaskInfo> {
    let t = |label: &str, inputs: &[&str], outputs: &[&str]| TaskInfo {
        label: label.into(),
        kind: format!("examples.{label}"),
        dimensions: vec!["instrument".into(), "exposure".into(), "detector".into()],
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        prerequisites: vec![],
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        t("isr", &["raw"], &["postISRCCD"]),
        t("characterize", &["postISRCCD"], &["icExp"]),
        t("summarize", &["icExp"], &["expSummary"]),
    ]
}

const PIPELINE: &str = "description: report bench
tasks:
  isr:
    class: examples.Isr
    dimensions: [instrument, exposure, detector]
    inputs:
      raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
  characterize:
    class: examples.Characterize
    dimensions: [instrument, exposure, detector]
    inputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      icexp: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Json}
  summarize:
    class: examples.Summarize
    dimensions: [instrument, exposure]
    inputs:
      icexps: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Json, multiple: true}
    outputs:
      summary: {dataset_type: expSummary, dimensions: [instrument, exposure], storage_class: Json}
";

fn log_tail() -> Vec<String> {
    (0..20)
        .map(|i| format!("characterize: step {i}: measuring sources on the image, background 231.4, sigma 16.9, {i} of 20"))
        .collect()
}

const ERROR: &str = "task failed: PSF fit did not converge after 50 iterations";

fn in_memory(detectors: u64, out: &std::path::Path) {
    let meta = ReportMeta {
        run: "u/bench/run".into(),
        source: "synthetic".into(),
        generated_at: quanta_core::now_rfc3339(),
        bundles: vec![BundleInfo {
            bundle_id: Uuid::now_v7().to_string(),
            pipeline_yaml: PIPELINE.into(),
            command_line: vec!["quanta".into(), "preflight".into()],
            ..BundleInfo::default()
        }],
        ..ReportMeta::default()
    };
    let log = log_tail();
    let t = Instant::now();
    let mut builder = ReportBuilder::new(meta, tasks(), Limits::default());
    let mut n = 0u64;
    campaign(detectors, |q| {
        n += 1;
        let obs = Observation {
            task: q.task,
            status: q.status,
            worker: &q.job,
            host: Some(&q.host),
            start_ms: (q.status != QuantumStatus::Blocked).then_some(q.start_ms),
            end_ms: (q.status != QuantumStatus::Blocked)
                .then(|| q.start_ms + (q.wall * 1000.0) as i64),
            wall_seconds: Some(q.wall),
            peak_rss_bytes: Some(q.rss),
            attempts: 1,
            error: q.status.is_failure().then_some(ERROR),
            log_tail: if q.status.is_failure() { &log } else { &[] },
        };
        builder.add(&obs, || {
            (
                match q.detector {
                    Some(d) => format!(
                        "{{instrument: 'Cam', exposure: {}, detector: {d}}}",
                        q.exposure
                    ),
                    None => format!("{{instrument: 'Cam', exposure: {}}}", q.exposure),
                },
                Uuid::now_v7().to_string(),
            )
        });
    });
    let added = t.elapsed().as_secs_f64();
    let report = builder.finish();
    let finished = t.elapsed().as_secs_f64();
    let size = write_html(&report, out).unwrap();
    let total = t.elapsed().as_secs_f64();
    println!(
        "in memory: {n} quanta ({} failed): add {added:.2} s, aggregate {:.2} s, render+write {:.2} s, total {total:.2} s; page {size} bytes ({:.2} MB), {} timeline bars",
        report.failures_total,
        finished - added,
        total - finished,
        size as f64 / 1e6,
        report.timeline.bars.len()
    );
}

fn record(registry: &mut quanta_registry::Registry, detectors: u64) -> u64 {
    let bundle = Uuid::now_v7();
    let log = log_tail();
    let labels = ["isr", "characterize", "summarize"];
    let mut batch: Vec<NewQuantum> = Vec::new();
    let mut n = 0u64;
    registry
        .set_bulk_writing(Some(quanta_registry::BulkWrites::Appending))
        .unwrap();
    let rfc = |ms: i64| {
        quanta_core::time::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
        )
    };
    let flush = |registry: &mut quanta_registry::Registry, batch: &mut Vec<NewQuantum>| {
        registry
            .record_quanta_uncommitted("run", bundle, batch)
            .unwrap();
        registry.commit_open().unwrap();
        batch.clear();
    };
    campaign(detectors, |q| {
        n += 1;
        let mut pairs = vec![
            ("instrument", DataIdValue::from("Cam")),
            ("exposure", DataIdValue::Int(q.exposure as i64)),
        ];
        if let Some(d) = q.detector {
            pairs.push(("detector", DataIdValue::Int(d as i64)));
        }
        let ran = q.status != QuantumStatus::Blocked;
        batch.push(NewQuantum {
            id: Uuid::now_v7(),
            task_label: labels[q.task].into(),
            data_id: DataId::from_pairs(pairs),
            execution: QuantumExecution {
                status: q.status.as_str().into(),
                attempts: u32::from(ran),
                host: ran.then(|| q.host.clone()),
                batch_job: ran.then(|| q.job.clone()),
                started: ran.then(|| rfc(q.start_ms)),
                finished: ran.then(|| rfc(q.start_ms + (q.wall * 1000.0) as i64)),
                wall_seconds: ran.then_some(q.wall),
                cpu_seconds: ran.then_some(q.wall * 0.9),
                peak_rss_bytes: ran.then_some(q.rss),
                exit_code: ran.then_some(i32::from(q.status.is_failure())),
                error: q.status.is_failure().then(|| ERROR.to_string()),
                log_tail: if q.status.is_failure() {
                    log.clone()
                } else {
                    vec![]
                },
            },
            inputs: vec![],
            outputs: vec![],
        });
        if batch.len() >= 50_000 {
            flush(registry, &mut batch);
        }
    });
    flush(registry, &mut batch);
    registry.set_bulk_writing(None).unwrap();
    registry
        .record_run_provenance(&RunProvenance {
            run: "run".into(),
            bundle_id: bundle,
            pipeline_yaml: PIPELINE.into(),
            task_configs: serde_json::json!([]),
            quanta_version: "bench".into(),
            command_line: vec!["quanta".into(), "preflight".into()],
            created_at: quanta_core::now_rfc3339(),
            created_by: "bench".into(),
        })
        .unwrap();
    n
}

fn from_registry(detectors: u64, out: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = support::fresh_registry(dir.path(), (EXPOSURES * detectors) as usize);
    let t = Instant::now();
    let n = record(&mut registry, detectors);
    println!(
        "recorded {n} quanta in {:.1} s (not part of the page's time)",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let report =
        quanta_butler::run_report_page(&registry, "run", "bench registry", Limits::default())
            .unwrap();
    let read = t.elapsed().as_secs_f64();
    let size = write_html(&report, out).unwrap();
    let total = t.elapsed().as_secs_f64();
    println!(
        "from the registry: {} quanta ({} failed, {} blocked): read + aggregate {read:.2} s, render+write {:.2} s, total {total:.2} s; page {size} bytes ({:.2} MB)",
        report.totals.quanta,
        report.totals.failed,
        report.totals.blocked,
        total - read,
        size as f64 / 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quanta: u64 = args
        .iter()
        .position(|a| a == "--quanta")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let detectors = (quanta / EXPOSURES / 2).max(1);
    let out = std::env::temp_dir().join(format!("quanta-report-bench-{}.html", std::process::id()));
    if args.iter().any(|a| a == "--registry") {
        from_registry(detectors, &out);
    } else {
        in_memory(detectors, &out);
    }
    println!("page: {}", out.display());
}
