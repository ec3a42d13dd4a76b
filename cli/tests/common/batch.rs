//! Shared by the tests of the real batch engines (slurm.rs, gridengine.rs):
//! the reference pipeline with task configs, its preflight into a bundle,
//! and reading back what a submission did (state file, `quanta status`,
//! the registry).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{make_reference_repo, ok};

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

pub fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

/// examples/pipelines/reference.yaml as JSON (which the YAML reader
/// takes), so tests can set task configs.
pub fn reference_pipeline() -> Value {
    let conn = |t: &str, dims: &[&str]| serde_json::json!({"dataset_type": t, "dimensions": dims, "storage_class": "Json"});
    let d3 = ["instrument", "exposure", "detector"];
    let mut multi = conn("icExp", &d3);
    multi["multiple"] = Value::Bool(true);
    serde_json::json!({
        "description": "reference workload, configured for a batch-engine test",
        "tasks": {
            "isr": {"class": "examples.Isr", "dimensions": d3,
                "inputs": {"raw": conn("raw", &d3)}, "outputs": {"post": conn("postISRCCD", &d3)}},
            "characterize": {"class": "examples.Characterize", "dimensions": d3,
                "inputs": {"post": conn("postISRCCD", &d3)}, "outputs": {"icexp": conn("icExp", &d3)}},
            "summarize": {"class": "examples.Summarize", "dimensions": ["instrument", "exposure"],
                "inputs": {"icexps": multi},
                "outputs": {"summary": conn("expSummary", &["instrument", "exposure"])}},
        }
    })
}

/// The reference pipeline with `configs` (task label → config object),
/// written to `dir/pipeline.yaml`.
pub fn pipeline(dir: &Path, configs: &BTreeMap<&str, Value>) -> PathBuf {
    let mut doc = reference_pipeline();
    for (label, config) in configs {
        doc["tasks"][*label]["config"] = config.clone();
    }
    let path = dir.join("pipeline.yaml");
    // JSON is YAML: the pipeline reader takes it as is.
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    path
}

/// A reference repo of `n_exp` × `n_det` (`dir/repo`) and its bundle
/// (`dir/campaign.qb`) into RUN `run`, clustered by `cluster_by`.
pub fn preflight_clustered(
    dir: &Path,
    n_exp: usize,
    n_det: usize,
    pipeline: &Path,
    cluster_by: &str,
    run: &str,
) -> (PathBuf, PathBuf) {
    let repo = make_reference_repo(dir, n_exp, n_det);
    let bundle = dir.join("campaign.qb");
    ok(&[
        "preflight",
        s(&repo),
        "--pipeline",
        s(pipeline),
        "--input",
        "Cam/raw",
        "--output-run",
        run,
        "--cluster-by",
        cluster_by,
        "--bundle",
        s(&bundle),
    ]);
    (repo, bundle)
}

/// `<bundle>.slurm.json`, the submission state of every engine.
pub fn state_path(bundle: &Path) -> PathBuf {
    let mut p = bundle.as_os_str().to_owned();
    p.push(".slurm.json");
    PathBuf::from(p)
}

pub fn state(bundle: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(state_path(bundle)).unwrap()).unwrap()
}

/// Every job id the submissions recorded (arrays and merge jobs).
pub fn job_ids(state: &Value) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for sub in state["submissions"].as_array().unwrap() {
        for a in sub["arrays"].as_array().unwrap() {
            ids.insert(a["job_id"].as_str().unwrap().parse().unwrap());
        }
        if let Some(m) = sub["merge_job"].as_str() {
            ids.insert(m.parse().unwrap());
        }
    }
    ids
}

/// The clusters submission `i` (0-based) submitted.
pub fn submitted_clusters(state: &Value, i: usize) -> BTreeSet<String> {
    state["submissions"][i]["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| {
            a["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
        })
        .collect()
}

/// The datasets of `dataset_type` in RUN `run`.
pub fn count(repo: &Path, run: &str, dataset_type: &str) -> usize {
    json(&[
        "query-datasets",
        s(repo),
        "--collections",
        run,
        "--dataset-type",
        dataset_type,
        "--json",
    ])
    .as_array()
    .unwrap()
    .len()
}

/// The batch section of `quanta status --json` per cluster (its key is
/// `slurm` for every engine).
pub fn batch_status(bundle: &Path) -> BTreeMap<String, Value> {
    let v = json(&["status", s(bundle), "--json"]);
    v["batch"]["clusters"]
        .as_array()
        .unwrap_or_else(|| panic!("no batch section in status: {v}"))
        .iter()
        .map(|c| (c["cluster"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

/// The name of the cluster of exposure `e` among the state's clusters.
pub fn cluster_of_exposure(state: &Value, e: usize) -> String {
    let names: Vec<&String> = state["clusters"].as_object().unwrap().keys().collect();
    names
        .iter()
        .find(|n| {
            n.split(|c: char| !(c.is_alphanumeric() || c == '='))
                .any(|part| part == format!("exposure={e}"))
        })
        .map(|n| n.to_string())
        .unwrap_or_else(|| panic!("no cluster for exposure {e} in {names:?}"))
}

/// The job logs (`*.out`) in the submission's work directory, for failure
/// messages.
pub fn job_logs(bundle: &Path) -> String {
    let dir = PathBuf::from(format!("{}.slurm", bundle.display()));
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "out") {
            out.push_str(&format!(
                "--- {}\n{}\n",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            ));
        }
    }
    out
}
