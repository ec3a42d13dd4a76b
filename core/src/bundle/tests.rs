use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::*;
use crate::data_id::DataIdValue;
use crate::dimensions::DimensionGroup;
use crate::pipeline::{Connection, TaskKind};

const OUT_RUN: &str = "u/alice/run1";

fn conn(name: &str, dataset_type: &str, dims: &[&str], multiple: bool) -> Connection {
    Connection {
        name: name.into(),
        dataset_type: dataset_type.into(),
        dimensions: dims.iter().map(|d| d.to_string()).collect(),
        storage_class: "Json".into(),
        multiple,
        is_calibration: false,
    }
}

fn task(label: &str, dims: &[&str], inputs: Vec<Connection>, outputs: Vec<Connection>) -> TaskDef {
    TaskDef {
        label: label.into(),
        kind: TaskKind::Class(format!("examples.{label}")),
        dimensions: dims.iter().map(|d| d.to_string()).collect(),
        inputs,
        prerequisites: vec![],
        outputs,
        init_outputs: vec![],
        config: serde_json::json!({"threshold": 5.0, "label": label, "nested": {"list": [1, 2, 3]}}),
    }
}

fn dataset_type(name: &str, dims: &[&str]) -> DatasetType {
    DatasetType {
        name: name.into(),
        dimensions: DimensionGroup {
            names: dims.iter().map(|d| d.to_string()).collect(),
        },
        storage_class: "Json".into(),
        is_calibration: false,
    }
}

fn det_id(e: i64, d: i64) -> DataId {
    DataId::from_pairs([
        ("instrument", DataIdValue::from("Cam")),
        ("detector", DataIdValue::Int(d)),
        ("exposure", DataIdValue::Int(e)),
    ])
}

fn out_ref(dataset_type: &str, data_id: DataId, path: String) -> BundleRef {
    BundleRef {
        id: Uuid::new_v4(),
        dataset_type: dataset_type.into(),
        data_id,
        run: OUT_RUN.into(),
        path,
        size: None,
        checksum: None,
    }
}

/// The reference workload: per exposure × detector an `isr` quantum (one raw
/// input with a stored path, size and checksum; one output) and a
/// `characterize` quantum (consuming the isr output), and per exposure a
/// `summarize` gathering the detectors' icExp. Quanta are in task order,
/// which is topological.
fn reference(exposures: i64, detectors: i64) -> BundleContents {
    let exp_det = ["instrument", "detector", "exposure"];
    let tasks = vec![
        task(
            "isr",
            &exp_det,
            vec![conn("ccdExposure", "raw", &exp_det, false)],
            vec![conn("outputExposure", "postISRCCD", &exp_det, false)],
        ),
        task(
            "characterize",
            &exp_det,
            vec![conn("exposure", "postISRCCD", &exp_det, false)],
            vec![conn("characterized", "icExp", &exp_det, false)],
        ),
        task(
            "summarize",
            &["instrument", "exposure"],
            vec![conn("exposures", "icExp", &exp_det, true)],
            vec![conn(
                "summary",
                "expSummary",
                &["instrument", "exposure"],
                false,
            )],
        ),
    ];
    let dataset_types = vec![
        dataset_type("raw", &exp_det),
        dataset_type("postISRCCD", &exp_det),
        dataset_type("icExp", &exp_det),
        dataset_type("expSummary", &["instrument", "exposure"]),
    ];
    let mut quanta = Vec::new();
    let mut isr_out = Vec::new();
    for e in 0..exposures {
        for d in 0..detectors {
            let raw = BundleRef {
                id: Uuid::new_v4(),
                dataset_type: "raw".into(),
                data_id: det_id(e, d),
                run: "Cam/raw".into(),
                path: format!("Cam/raw/raw/{e}/raw_Cam_{e}_{d}.fits"),
                size: Some(16_777_216 + (e * 131 + d) as u64),
                checksum: Some(crate::hash::blake3_hex(format!("{e}/{d}").as_bytes())),
            };
            let out = out_ref(
                "postISRCCD",
                det_id(e, d),
                format!("{OUT_RUN}/postISRCCD/{e}/postISRCCD_Cam_{e}_{d}.json"),
            );
            isr_out.push(out.clone());
            quanta.push(BundleQuantum {
                id: Uuid::new_v4(),
                task: 0,
                data_id: det_id(e, d),
                inputs: vec![("ccdExposure".into(), vec![raw])],
                prerequisites: vec![],
                outputs: vec![("outputExposure".into(), vec![out])],
                upstream: vec![],
            });
        }
    }
    let n_isr = quanta.len() as u32;
    let mut ic_out = Vec::new();
    for (i, input) in isr_out.into_iter().enumerate() {
        let out = out_ref(
            "icExp",
            input.data_id.clone(),
            input.path.replace("postISRCCD", "icExp"),
        );
        ic_out.push((n_isr + i as u32, out.clone()));
        quanta.push(BundleQuantum {
            id: Uuid::new_v4(),
            task: 1,
            data_id: input.data_id.clone(),
            inputs: vec![("exposure".into(), vec![input])],
            prerequisites: vec![],
            outputs: vec![("characterized".into(), vec![out])],
            upstream: vec![i as u32],
        });
    }
    for e in 0..exposures {
        let exp_id = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("exposure", DataIdValue::Int(e)),
        ]);
        let members = &ic_out[(e * detectors) as usize..((e + 1) * detectors) as usize];
        quanta.push(BundleQuantum {
            id: Uuid::new_v4(),
            task: 2,
            data_id: exp_id.clone(),
            inputs: vec![(
                "exposures".into(),
                members.iter().map(|(_, r)| r.clone()).collect(),
            )],
            prerequisites: vec![],
            outputs: vec![(
                "summary".into(),
                vec![out_ref(
                    "expSummary",
                    exp_id,
                    format!("{OUT_RUN}/expSummary/expSummary_Cam_{e}.json"),
                )],
            )],
            upstream: members.iter().map(|(q, _)| *q).collect(),
        });
    }
    let n = quanta.len() as u32;
    let clusters = (0..exposures)
        .map(|e| Cluster {
            name: format!("exposure_{e}"),
            quanta: (0..n).filter(|q| *q as i64 % exposures == e).collect(),
        })
        .collect();
    let mut dimension_records = DimensionRecords::new();
    let rec = |pairs: serde_json::Value| match pairs {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("test records are objects"),
    };
    dimension_records.insert(
        "instrument".into(),
        vec![rec(
            serde_json::json!({"name": "Cam", "detector_max": detectors}),
        )],
    );
    dimension_records.insert(
        "detector".into(),
        (0..detectors).map(|d| rec(serde_json::json!({"instrument": "Cam", "id": d, "full_name": format!("R{d:02}")}))).collect(),
    );
    dimension_records.insert(
        "exposure".into(),
        (0..exposures)
            .map(|e| rec(serde_json::json!({"instrument": "Cam", "id": e, "exposure_time": 30.0})))
            .collect(),
    );
    BundleContents {
        header: BundleHeader {
            format_version: BUNDLE_FORMAT_VERSION,
            bundle_id: Uuid::new_v4(),
            universe_digest: "u".repeat(64),
            pipeline_digest: "p".repeat(64),
            pipeline_yaml: "description: reference\ntasks: [isr, characterize, summarize]\n".into(),
            input_collections: vec!["Cam/raw".into(), "Cam/calib".into()],
            output_run: OUT_RUN.into(),
            output_chain: Some("u/alice/chain".into()),
            datastore_root: "/data/repo".into(),
            datastore_config: r#"{"templates":{"default":"{run}/{datasetType}/{id}"}}"#.into(),
            clobber: false,
            skip_existing: true,
            created_at: crate::time::now_rfc3339(),
            created_by: "alice@head".into(),
            quanta_version: "0.1.0".into(),
            command_line: vec![
                "quanta".into(),
                "preflight".into(),
                "--where".into(),
                "exposure < 5".into(),
            ],
            n_quanta: n.into(),
            where_clause: "exposure < 5".into(),
            repository_id: Uuid::new_v4(),
            replaced: vec![crate::ReplacedDataset {
                by: Uuid::new_v4(),
                id: Uuid::new_v4(),
                path: "u/alice/run/calexp/old.json".into(),
            }],
        },
        tasks,
        dataset_types,
        dimension_records,
        clusters,
        quanta,
    }
}

fn assert_reads_back(path: &Path, c: &BundleContents) {
    let b = Bundle::open(path).unwrap();
    assert_eq!(b.header(), &c.header);
    assert_eq!(b.tasks(), c.tasks.as_slice());
    assert_eq!(b.dataset_types(), c.dataset_types.as_slice());
    assert_eq!(b.dimension_records().unwrap(), c.dimension_records);
    assert_eq!(b.clusters().unwrap(), c.clusters);
    assert_eq!(b.n_quanta(), c.quanta.len());
    b.verify().unwrap();
    let streamed: Vec<BundleQuantum> = b.quanta().collect::<Result<_, _>>().unwrap();
    assert!(streamed == c.quanta, "streamed quanta differ");
    // The borrowed views of whole blocks say the same.
    let mut viewed = 0;
    for block in b.decoded_blocks() {
        let block = block.unwrap();
        assert_eq!(block.first_index() as usize, viewed);
        for pos in 0..block.len() {
            let view = block.quantum(pos).unwrap();
            let owned = &c.quanta[viewed];
            let conns = |it: &mut dyn Iterator<Item = super::BlockConnection<'_>>| {
                it.map(|c| {
                    (
                        c.name.to_string(),
                        c.refs().map(|r| r.to_owned_ref()).collect(),
                    )
                })
                .collect::<Vec<(String, Vec<BundleRef>)>>()
            };
            assert_eq!(view.id, owned.id);
            assert_eq!(view.task, owned.task);
            assert_eq!(view.data_id, &owned.data_id);
            assert_eq!(conns(&mut view.inputs()), owned.inputs, "quantum {viewed}");
            assert_eq!(conns(&mut view.prerequisites()), owned.prerequisites);
            assert_eq!(conns(&mut view.outputs()), owned.outputs);
            viewed += 1;
        }
        assert!(block.quantum(block.len()).is_none());
    }
    assert_eq!(viewed, c.quanta.len());
    // Random access, from a fresh reader, out of order.
    let b = Bundle::open(path).unwrap();
    let n = c.quanta.len() as u32;
    for i in [n / 2, n - 1, 0, n / 2 + 1, n / 3] {
        assert_eq!(b.quantum(i).unwrap(), c.quanta[i as usize], "quantum {i}");
    }
    assert!(matches!(
        b.quantum(n),
        Err(BundleError::QuantumOutOfRange { .. })
    ));
}

#[test]
fn round_trip_across_blocks_compressed_and_not() {
    let c = reference(30, 100); // 6,030 quanta
    let dir = tempfile::tempdir().unwrap();
    for compress in [true, false] {
        let path = dir.path().join(format!("ref-{compress}.qb"));
        let opts = BundleWriteOptions {
            compress,
            quanta_per_block: 1000,
        };
        let size = write_bundle(&path, &c, &opts).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let b = Bundle::open(&path).unwrap();
        assert_eq!(b.n_blocks(), 7);
        assert_eq!(b.file_size(), size);
        assert_reads_back(&path, &c);
    }
    // Only the two bundles: the temporary files were renamed away.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn small_and_empty_bundles_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.qb");
    let c = reference(2, 3);
    write_bundle(
        &path,
        &c,
        &BundleWriteOptions {
            compress: true,
            quanta_per_block: 1,
        },
    )
    .unwrap();
    assert_reads_back(&path, &c);

    let mut empty = reference(0, 0);
    empty.dimension_records.clear();
    write_bundle(&path, &empty, &BundleWriteOptions::default()).unwrap();
    let b = Bundle::open(&path).unwrap();
    assert_eq!(b.n_quanta(), 0);
    assert_eq!(b.quanta().count(), 0);
    b.verify().unwrap();
    assert!(matches!(
        b.quantum(0),
        Err(BundleError::QuantumOutOfRange { .. })
    ));
}

/// Everything a reader can be asked, as one result: the first error.
fn read_everything(b: &Bundle) -> Result<(), BundleError> {
    for q in b.quanta() {
        q?;
    }
    for block in b.decoded_blocks() {
        block?;
    }
    for i in 0..b.n_quanta() as u32 {
        b.quantum(i)?;
    }
    b.clusters()?;
    b.dimension_records()?;
    Ok(())
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for compress in [true, false] {
        let good = dir.path().join("good.qb");
        let c = reference(1, 3); // 7 quanta in 4 quanta blocks
        write_bundle(
            &good,
            &c,
            &BundleWriteOptions {
                compress,
                quanta_per_block: 2,
            },
        )
        .unwrap();
        let full = std::fs::read(&good).unwrap();
        let lazy = Bundle::open(&good).unwrap().lazy_span();
        let bad = dir.path().join("bad.qb");

        // Damage one file in place: rewriting a whole file per case is slow
        // on ext4 (truncate-to-zero forces writeback).
        std::fs::write(&bad, &full).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
        for cut in (0..full.len()).rev() {
            f.set_len(cut as u64).unwrap();
            let err = Bundle::open(&bad).expect_err("a truncated bundle opened");
            let msg = err.to_string();
            assert!(
                matches!(err, BundleError::Truncated { .. }),
                "cut {cut}: {msg}"
            );
            assert!(
                msg.contains("bad.qb is truncated") && msg.contains(&format!("found {cut}")),
                "{msg}"
            );
        }

        f.write_all_at(&full, 0).unwrap();
        for pos in 0..full.len() {
            f.write_all_at(&[full[pos] ^ 0x10], pos as u64).unwrap();
            match Bundle::open(&bad) {
                Err(e) => {
                    assert!(
                        !lazy.contains(&(pos as u64)),
                        "pos {pos}: open read a lazy block"
                    );
                    assert!(e.to_string().contains("bad.qb"), "pos {pos}: {e}");
                }
                Ok(b) => {
                    // Only damage in the quanta, clusters and records blocks
                    // gets past open; reading those blocks must find it.
                    assert!(
                        lazy.contains(&(pos as u64)),
                        "pos {pos}: open missed damage"
                    );
                    let v = b.verify().expect_err("verify accepted a flipped byte");
                    let r = read_everything(&b).expect_err("reading accepted a flipped byte");
                    assert!(matches!(v, BundleError::Checksum { .. }), "pos {pos}: {v}");
                    assert_eq!(v.to_string(), r.to_string(), "pos {pos}");
                }
            }
            f.write_all_at(&full[pos..=pos], pos as u64).unwrap();
        }
    }
}

#[test]
fn errors_name_the_file_and_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("named.qb");
    let c = reference(3, 10); // 63 quanta
    write_bundle(
        &path,
        &c,
        &BundleWriteOptions {
            compress: true,
            quanta_per_block: 16,
        },
    )
    .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // Damage the middle of the third quanta block (quanta 32..47).
    let b = Bundle::open(&path).unwrap();
    let (offset, length) = b.block_span(4);
    drop(b);
    bytes[(offset + length / 2) as usize] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let b = Bundle::open(&path).unwrap();
    assert_eq!(b.quantum(31).unwrap(), c.quanta[31]);
    let msg = b.quantum(40).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "bundle {}: block 4 (quanta 32..47) checksum mismatch (the file is damaged)",
            path.display()
        )
    );
    assert_eq!(b.verify().unwrap_err().to_string(), msg);

    std::fs::write(
        &path,
        b"#!/bin/sh\necho this is not a bundle, but it is long enough to be one\n",
    )
    .unwrap();
    let err = Bundle::open(&path).unwrap_err();
    assert!(matches!(err, BundleError::NotABundle { .. }), "{err}");

    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"junk");
    std::fs::write(&path, &trailing).unwrap();
    assert!(Bundle::open(&path)
        .unwrap_err()
        .to_string()
        .contains("trailing data"));
}

#[test]
fn writer_refuses_inconsistent_contents_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.qb");
    let opts = BundleWriteOptions::default();
    let base = reference(2, 3);
    type Mutation = Box<dyn Fn(&mut BundleContents, &mut BundleWriteOptions)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "not before it",
            Box::new(|c, _| c.quanta[7].upstream.push(7)),
        ),
        ("names task 9", Box::new(|c, _| c.quanta[1].task = 9)),
        ("n_quanta", Box::new(|c, _| c.header.n_quanta += 1)),
        (
            "format_version",
            Box::new(|c, _| c.header.format_version = 99),
        ),
        ("cluster", Box::new(|c, _| c.clusters[0].quanta.push(1000))),
        ("quanta_per_block", Box::new(|_, o| o.quanta_per_block = 0)),
        (
            "differs between quantum",
            Box::new(|c, _| {
                // Quantum 6 (characterize) reads quantum 0's output; give it
                // another path under the same UUID.
                c.quanta[6].inputs[0].1[0].path = "elsewhere".into();
            }),
        ),
    ];
    for (needle, mutate) in cases {
        let mut c = base.clone();
        let mut o = opts.clone();
        mutate(&mut c, &mut o);
        let err = write_bundle(&path, &c, &o).unwrap_err();
        assert!(
            matches!(err, BundleError::Invalid { .. }) && err.to_string().contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{needle}: left a file"
        );
    }
}

#[test]
fn bundle_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Bundle>();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.qb");
    let c = reference(4, 25);
    write_bundle(
        &path,
        &c,
        &BundleWriteOptions {
            compress: true,
            quanta_per_block: 10,
        },
    )
    .unwrap();
    let b = Bundle::open(&path).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (b, c) = (&b, &c);
            s.spawn(move || {
                // Interleaved strides make the threads fight over the cache.
                for i in (t..c.quanta.len() as u32).step_by(7) {
                    assert_eq!(b.quantum(i).unwrap(), c.quanta[i as usize]);
                }
            });
        }
    });
}

/// The 100 exposures × 100 detectors reference graph (20,100 quanta); LSST's
/// `.qg` for it is 5.18 MB, 258 bytes per quantum.
#[test]
fn reference_graph_size_per_quantum() {
    let c = reference(100, 100);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.qb");
    let size = write_bundle(&path, &c, &BundleWriteOptions::default()).unwrap();
    let per = size as f64 / c.quanta.len() as f64;
    eprintln!(
        "reference bundle: {} quanta, {size} bytes, {per:.1} bytes/quantum (zstd)",
        c.quanta.len()
    );
    assert!(per < 258.0, "{per:.1} bytes per quantum");
    let b = Bundle::open(&path).unwrap();
    assert_eq!(b.quantum(20_050).unwrap(), c.quanta[20_050]);
    let raw = write_bundle(
        &path,
        &c,
        &BundleWriteOptions {
            compress: false,
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!(
        "reference bundle uncompressed: {raw} bytes, {:.1} bytes/quantum",
        raw as f64 / c.quanta.len() as f64
    );
}

/// Opening a million-quantum bundle reads only the frame and header; run
/// with `cargo test --release -- --ignored` to see the time.
#[test]
#[ignore = "builds a million quanta; run by hand"]
fn open_is_fast_on_a_million_quanta() {
    let c = reference(500, 1000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.qb");
    let size = write_bundle(&path, &c, &BundleWriteOptions::default()).unwrap();
    let t = Instant::now();
    let b = Bundle::open(&path).unwrap();
    let q = b.quantum(0).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(q, c.quanta[0]);
    eprintln!(
        "{} quanta, {size} bytes: open + quantum(0) in {elapsed:?}",
        b.n_quanta()
    );
}

/// A bundle of the previous format (before the header held the
/// repository's identity) is refused by its version, with what to do.
#[test]
fn a_bundle_of_the_previous_format_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.qb");
    write_bundle(&path, &reference(2, 2), &BundleWriteOptions::default()).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut preamble = [0u8; format::PREAMBLE_LEN as usize];
    file.read_exact_at(&mut preamble, 0).unwrap();
    preamble[8..12].copy_from_slice(&1u32.to_le_bytes());
    let sum = crate::hash::xxh3_64(&preamble[..24]);
    preamble[24..32].copy_from_slice(&sum.to_le_bytes());
    file.write_all_at(&preamble, 0).unwrap();
    let err = Bundle::open(&path).unwrap_err();
    assert!(
        matches!(err, BundleError::UnsupportedVersion { found: 1, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("format version 1") && text.contains("make the bundle again"),
        "{text}"
    );
}
