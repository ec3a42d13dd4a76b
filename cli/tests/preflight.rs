//! `quanta preflight` and `quanta bundle show|dot` on temporary repos,
//! driving the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{fails_with, make_reference_repo, ok, run};
use quanta_core::{Bundle, BundleQuantum, DataIdValue};

const PIPELINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/pipelines/reference.yaml"
);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs preflight of `pipeline` from `Cam/raw` (plus `extra`) into RUN `out/run`.
fn preflight(repo: &Path, pipeline: &str, bundle: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "preflight",
        s(repo),
        "--pipeline",
        pipeline,
        "--input",
        "Cam/raw",
        "--output-run",
        "out/run",
        "--bundle",
        s(bundle),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn preflight_ok(repo: &Path, pipeline: &str, bundle: &Path, extra: &[&str]) -> String {
    let out = preflight(repo, pipeline, bundle, extra);
    assert!(
        out.status.success(),
        "preflight failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Quanta per task label, from `bundle show --json`.
fn counts(bundle: &Path) -> BTreeMap<String, u64> {
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["bundle", "show", s(bundle), "--json"])).unwrap();
    json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["label"].as_str().unwrap().to_string(),
                t["quanta"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn quanta_of(bundle: &Path, label: &str) -> Vec<(u32, BundleQuantum)> {
    let b = Bundle::open(bundle).unwrap();
    let task = b.tasks().iter().position(|t| t.label == label).unwrap() as u32;
    b.quanta()
        .enumerate()
        .map(|(i, q)| (i as u32, q.unwrap()))
        .filter(|(_, q)| q.task == task)
        .collect()
}

fn int(q: &BundleQuantum, dim: &str) -> i64 {
    q.data_id.get(dim).and_then(DataIdValue::as_int).unwrap()
}

#[test]
fn reference_10x10_counts_order_and_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 10, 10);
    let bundle = dir.path().join("b.qb");
    let out = preflight_ok(&repo, PIPELINE, &bundle, &["--output", "out/chain"]);
    assert!(out.contains("210 quanta"), "{out}");
    let c = counts(&bundle);
    assert_eq!(c["isr"], 100);
    assert_eq!(c["characterize"], 100);
    assert_eq!(c["summarize"], 10);

    let b = Bundle::open(&bundle).unwrap();
    b.verify().unwrap();
    let h = b.header();
    assert_eq!(h.output_run, "out/run");
    assert_eq!(h.input_collections, ["Cam/raw"]);
    assert!(Path::new(&h.datastore_root).is_absolute());
    // Topological order, every input of a produced type comes from upstream.
    let all: Vec<BundleQuantum> = b.quanta().map(Result::unwrap).collect();
    for (i, q) in all.iter().enumerate() {
        assert!(q.upstream.iter().all(|&u| (u as usize) < i));
        for (_, refs) in &q.inputs {
            for r in refs {
                if r.dataset_type == "raw" {
                    assert_eq!(r.run, "Cam/raw");
                    assert!(r.size.is_some() && r.checksum.is_some() && !r.path.is_empty());
                } else {
                    let producer = q.upstream.iter().find(|&&u| {
                        all[u as usize]
                            .outputs
                            .iter()
                            .any(|(_, o)| o.iter().any(|o| o.id == r.id))
                    });
                    assert!(
                        producer.is_some(),
                        "{} has no producer upstream",
                        r.dataset_type
                    );
                }
            }
        }
        for (_, refs) in &q.outputs {
            assert_eq!(refs[0].run, "out/run");
            assert!(refs[0].path.starts_with("out/run/"), "{}", refs[0].path);
            assert_eq!(refs[0].id.get_version_num(), 7);
        }
    }
    // One cluster per exposure, each holding its 21 quanta contiguously.
    let clusters = b.clusters().unwrap();
    assert_eq!(clusters.len(), 10);
    let names: BTreeSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains("exposure=3"), "{names:?}");
    for c in &clusters {
        assert_eq!(c.quanta.len(), 21);
        assert_eq!(
            c.quanta.last().unwrap() - c.quanta[0],
            20,
            "{} is not contiguous",
            c.name
        );
    }
    // Registered: output dataset types, the RUN and the chain [RUN, inputs].
    let cols: serde_json::Value =
        serde_json::from_str(&ok(&["collection", "list", s(&repo), "--json"])).unwrap();
    let chain = cols
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "out/chain")
        .unwrap();
    assert_eq!(chain["children"], serde_json::json!(["out/run", "Cam/raw"]));
    let types = ok(&["dataset-type", "list", s(&repo)]);
    assert!(
        types.contains("postISRCCD") && types.contains("icExp") && types.contains("expSummary"),
        "{types}"
    );

    let dot = ok(&["bundle", "dot", s(&bundle)]);
    assert!(
        dot.starts_with("digraph") && dot.contains("\"task:isr\" -> \"type:postISRCCD\""),
        "{dot}"
    );
    let dot = ok(&["bundle", "dot", s(&bundle), "--quanta"]);
    assert_eq!(dot.matches("[label=").count(), 210);
    assert_eq!(dot.matches(" -> ").count(), 100 + 100);
}

#[test]
fn where_clause_27_27_3_and_gathers_of_9() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 10, 10);
    let bundle = dir.path().join("b.qb");
    preflight_ok(
        &repo,
        PIPELINE,
        &bundle,
        &["--where", "exposure IN (2..4) AND detector != 3"],
    );
    let c = counts(&bundle);
    assert_eq!((c["isr"], c["characterize"], c["summarize"]), (27, 27, 3));
    let summaries = quanta_of(&bundle, "summarize");
    let exposures: BTreeSet<i64> = summaries.iter().map(|(_, q)| int(q, "exposure")).collect();
    assert_eq!(exposures, BTreeSet::from([2, 3, 4]));
    for (_, q) in &summaries {
        let (name, icexps) = &q.inputs[0];
        assert_eq!(name, "icexps");
        assert_eq!(icexps.len(), 9);
        assert!(icexps.iter().all(|r| r.dataset_type == "icExp"));
        let dets: BTreeSet<i64> = icexps
            .iter()
            .map(|r| {
                r.data_id
                    .get("detector")
                    .and_then(DataIdValue::as_int)
                    .unwrap()
            })
            .collect();
        assert!(!dets.contains(&3) && dets.len() == 9);
        assert_eq!(q.upstream.len(), 9);
    }
    // Bind parameters work too.
    let bundle2 = dir.path().join("b2.qb");
    preflight_ok(
        &repo,
        PIPELINE,
        &bundle2,
        &["--where", "exposure = :e", "--bind", "e=7"],
    );
    let c = counts(&bundle2);
    assert_eq!((c["isr"], c["characterize"], c["summarize"]), (10, 10, 1));
}

/// Writes a pipeline file and returns its path.
fn write_pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const CALIB_PIPELINE: &str = r#"description: isr with a bias
tasks:
  isr:
    class: examples.Isr
    dimensions: [instrument, exposure, detector]
    inputs:
      raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json}
    prerequisites:
      bias: {dataset_type: bias, dimensions: [instrument, detector], storage_class: Json, is_calibration: true}
    outputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
  summarize:
    class: examples.Summarize
    dimensions: [instrument, exposure]
    inputs:
      posts: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json, multiple: true}
    outputs:
      summary: {dataset_type: expSummary, dimensions: [instrument, exposure], storage_class: Json}
"#;

/// A repo of 4 exposures (MJD 60000 + e) × 3 detectors with biases for
/// detectors 0 and 1 only, each certified twice: [59000, 60002) from RUN
/// calib/old and [60002, 70000) from RUN calib/new.
fn make_calib_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    let r = s(&repo);
    ok(&["repo", "create", r]);
    let records = serde_json::json!({
        "instrument": [{"name": "Cam", "detector_max": 3}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "day_obs": [{"instrument": "Cam", "id": 20261126}],
        "group": (0..4).map(|e| serde_json::json!({"instrument": "Cam", "name": format!("g{e}")})).collect::<Vec<_>>(),
        "detector": (0..3).map(|d| serde_json::json!({"instrument": "Cam", "id": d})).collect::<Vec<_>>(),
        "exposure": (0..4).map(|e| serde_json::json!({
            "instrument": "Cam", "id": e, "physical_filter": "Cam-r", "day_obs": 20261126, "group": format!("g{e}"),
            "timespan_begin": 60000.0 + e as f64, "timespan_end": 60000.01 + e as f64})).collect::<Vec<_>>(),
    });
    let rec = dir.join("records.json");
    std::fs::write(&rec, records.to_string()).unwrap();
    ok(&["dimensions", "insert", r, s(&rec)]);
    ok(&[
        "dataset-type",
        "register",
        r,
        "raw",
        "--dimensions",
        "instrument,exposure,detector",
        "--storage-class",
        "Json",
    ]);
    ok(&[
        "dataset-type",
        "register",
        r,
        "bias",
        "--dimensions",
        "instrument,detector",
        "--storage-class",
        "Json",
        "--calibration",
    ]);
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut manifest = String::from("path,instrument,exposure,detector\n");
    for e in 0..4 {
        for d in 0..3 {
            std::fs::write(
                files.join(format!("raw_{e}_{d}.json")),
                format!("{{\"e\":{e},\"d\":{d}}}"),
            )
            .unwrap();
            manifest.push_str(&format!("files/raw_{e}_{d}.json,Cam,{e},{d}\n"));
        }
    }
    std::fs::write(dir.join("raw.csv"), manifest).unwrap();
    for run in ["Cam/raw", "calib/old", "calib/new"] {
        ok(&["collection", "create", r, run, "--type", "RUN"]);
    }
    ok(&[
        "ingest",
        r,
        "--run",
        "Cam/raw",
        "--dataset-type",
        "raw",
        "--manifest",
        s(&dir.join("raw.csv")),
    ]);
    ok(&[
        "collection",
        "create",
        r,
        "Cam/calib",
        "--type",
        "CALIBRATION",
    ]);
    for (run, begin, end) in [
        ("calib/old", "59000", "60002"),
        ("calib/new", "60002", "70000"),
    ] {
        let mut manifest = String::from("path,instrument,detector\n");
        for d in 0..2 {
            let name = format!("bias_{}_{d}.json", run.replace('/', "_"));
            std::fs::write(
                files.join(&name),
                format!("{{\"run\":\"{run}\",\"d\":{d}}}"),
            )
            .unwrap();
            manifest.push_str(&format!("files/{name},Cam,{d}\n"));
        }
        let m = dir.join(format!("{}.csv", run.replace('/', "_")));
        std::fs::write(&m, manifest).unwrap();
        ok(&[
            "ingest",
            r,
            "--run",
            run,
            "--dataset-type",
            "bias",
            "--manifest",
            s(&m),
        ]);
        let found: serde_json::Value = serde_json::from_str(&ok(&[
            "query-datasets",
            r,
            "--collections",
            run,
            "--dataset-type",
            "bias",
            "--json",
        ]))
        .unwrap();
        let mut args = vec![
            "collection".to_string(),
            "certify".into(),
            r.into(),
            "Cam/calib".into(),
        ];
        args.extend(["--begin".into(), begin.into(), "--end".into(), end.into()]);
        args.extend(
            found
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args);
    }
    repo
}

#[test]
fn calibration_prerequisites_by_exposure_time_and_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_calib_repo(dir.path());
    let pipeline = write_pipeline(dir.path(), "calib.yaml", CALIB_PIPELINE);
    let bundle = dir.path().join("b.qb");
    let out = run(&[
        "preflight",
        s(&repo),
        "--pipeline",
        s(&pipeline),
        "--input",
        "Cam/raw,Cam/calib",
        "--output-run",
        "out/run",
        "--bundle",
        s(&bundle),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Detector 2 has no bias: its isr quanta are pruned, with the reason.
    assert!(stdout.contains("pruned 4 quanta"), "{stdout}");
    assert!(stdout.contains("no prerequisite `bias`"), "{stdout}");
    let c = counts(&bundle);
    assert_eq!((c["isr"], c["summarize"]), (8, 4));
    let mut runs_used = BTreeSet::new();
    for (_, q) in quanta_of(&bundle, "isr") {
        let e = int(&q, "exposure");
        let (name, bias) = &q.prerequisites[0];
        assert_eq!(name, "bias");
        assert_eq!(bias.len(), 1);
        assert_eq!(bias[0].data_id.get("detector"), q.data_id.get("detector"));
        // Exposures 0 and 1 start before MJD 60002, 2 and 3 after.
        let expected = if e < 2 { "calib/old" } else { "calib/new" };
        assert_eq!(bias[0].run, expected, "exposure {e}");
        assert!(bias[0].checksum.is_some());
        runs_used.insert(bias[0].run.clone());
    }
    assert_eq!(runs_used.len(), 2, "both validity ranges are used");
    for (_, q) in quanta_of(&bundle, "summarize") {
        assert_eq!(
            q.inputs[0].1.len(),
            2,
            "the gather skips the pruned detector"
        );
    }
}

const BROKEN_BASE: &str = r#"tasks:
  isr:
    class: examples.Isr
    dimensions: [instrument, exposure, detector]
    inputs:
      raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
  summarize:
    class: examples.Summarize
    dimensions: [instrument, exposure]
    inputs:
      posts: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json, multiple: true}
    outputs:
      summary: {dataset_type: expSummary, dimensions: [instrument, exposure], storage_class: Json}
"#;

/// isr reads what summarize writes: a cycle.
fn cyclic() -> String {
    BROKEN_BASE.replace(
        "raw: {dataset_type: raw, dimensions: [instrument, exposure, detector]",
        "raw: {dataset_type: expSummary, dimensions: [instrument, exposure]",
    )
}

#[test]
fn validation_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 2);
    let bundle = dir.path().join("b.qb");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown dimension",
            BROKEN_BASE.replace("dimensions: [instrument, exposure]\n", "dimensions: [instrument, exposur]\n"),
            ":11: task `summarize`: dimensions: unknown dimension `exposur`",
        ),
        (
            "unreachable",
            BROKEN_BASE.replace("storage_class: Json, multiple: true}", "storage_class: Json}"),
            ":13: task `summarize`, inputs `posts`: dimensions",
        ),
        (
            "produced twice",
            format!(
                "{BROKEN_BASE}  isr2:\n    class: examples.Isr\n    dimensions: [instrument, exposure, detector]\n    outputs:\n      again: {{dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}}\n"
            ),
            ":20: task `isr2`, outputs `again`: dataset type `postISRCCD` is produced twice: also by task `isr` (outputs `post`, line 8)",
        ),
        (
            "cycle",
            cyclic(),
            "cycle: ",
        ),
    ];
    for (what, text, expected) in cases {
        let p = write_pipeline(dir.path(), "p.yaml", &text);
        let out = preflight(&repo, s(&p), &bundle, &[]);
        assert_eq!(out.status.code(), Some(2), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("p.yaml:"), "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected `{expected}` in {err}"
        );
    }
    // The cycle error names the tasks in order.
    let p = write_pipeline(dir.path(), "p.yaml", &cyclic());
    let err = String::from_utf8_lossy(&preflight(&repo, s(&p), &bundle, &[]).stderr).into_owned();
    assert!(
        err.contains("isr → summarize → isr") || err.contains("summarize → isr → summarize"),
        "{err}"
    );

    // A definition conflicting with the registry's, at the connection's line.
    ok(&[
        "dataset-type",
        "register",
        s(&repo),
        "postISRCCD",
        "--dimensions",
        "instrument,exposure",
        "--storage-class",
        "Json",
    ]);
    let p = write_pipeline(dir.path(), "p.yaml", BROKEN_BASE);
    let err = String::from_utf8_lossy(&preflight(&repo, s(&p), &bundle, &[]).stderr).into_owned();
    assert!(
        err.contains("p.yaml:8: task `isr`, outputs `post`"),
        "{err}"
    );
    assert!(
        err.contains("registry has postISRCCD {instrument, exposure}"),
        "{err}"
    );
    assert!(!bundle.exists(), "no bundle is written on error");
}

#[test]
fn existing_outputs_error_skip_existing_and_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 3, 2);
    let bundle = dir.path().join("b.qb");
    preflight_ok(&repo, PIPELINE, &bundle, &[]);
    // Pretend exposure 0's isr ran: its postISRCCD are in the output RUN.
    let mut manifest = String::from("path,instrument,exposure,detector\n");
    for d in 0..2 {
        let f = dir.path().join(format!("post_{d}.json"));
        std::fs::write(&f, "{}").unwrap();
        manifest.push_str(&format!("{},Cam,0,{d}\n", s(&f)));
    }
    std::fs::write(dir.path().join("post.csv"), manifest).unwrap();
    ok(&[
        "ingest",
        s(&repo),
        "--run",
        "out/run",
        "--dataset-type",
        "postISRCCD",
        "--manifest",
        s(&dir.path().join("post.csv")),
    ]);

    let err = fails_with(
        2,
        &[
            "preflight",
            s(&repo),
            "--pipeline",
            PIPELINE,
            "--input",
            "Cam/raw",
            "--output-run",
            "out/run",
            "--bundle",
            s(&bundle),
        ],
    );
    assert!(
        err.contains("already holds 2 output dataset(s)") && err.contains("postISRCCD"),
        "{err}"
    );

    preflight_ok(&repo, PIPELINE, &bundle, &["--skip-existing"]);
    let c = counts(&bundle);
    assert_eq!((c["isr"], c["characterize"], c["summarize"]), (4, 6, 3));
    for (_, q) in quanta_of(&bundle, "characterize") {
        let post = &q.inputs[0].1[0];
        if int(&q, "exposure") == 0 {
            assert_eq!(post.run, "out/run");
            assert!(
                post.checksum.is_some(),
                "an existing input carries its file record"
            );
            assert!(q.upstream.is_empty());
        } else {
            assert_eq!(q.upstream.len(), 1);
        }
    }
    assert!(Bundle::open(&bundle).unwrap().header().skip_existing);

    preflight_ok(&repo, PIPELINE, &bundle, &["--clobber"]);
    let c = counts(&bundle);
    assert_eq!((c["isr"], c["characterize"], c["summarize"]), (6, 6, 3));
    assert!(Bundle::open(&bundle).unwrap().header().clobber);
}

#[test]
fn damaged_bundles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 3, 3);
    let bundle = dir.path().join("b.qb");
    preflight_ok(&repo, PIPELINE, &bundle, &[]);
    ok(&["bundle", "show", s(&bundle)]);
    let bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    let damaged = dir.path().join("d.qb");
    // Positions spread over the whole file, plus both ends.
    let mut positions: BTreeSet<usize> = (0..n).step_by((n / 60).max(1)).collect();
    positions.extend([0, 1, 31, 32, n - 41, n - 40, n - 1]);
    for &pos in &positions {
        std::fs::write(&damaged, &bytes[..pos]).unwrap();
        let err = fails_with(2, &["bundle", "show", s(&damaged)]);
        assert!(
            err.contains("error:") && err.contains("d.qb"),
            "truncated at {pos}: {err}"
        );
        let mut flipped = bytes.clone();
        flipped[pos] ^= 0x5a;
        std::fs::write(&damaged, &flipped).unwrap();
        let err = fails_with(2, &["bundle", "show", s(&damaged)]);
        assert!(err.contains("d.qb"), "flipped at {pos}: {err}");
    }
}
