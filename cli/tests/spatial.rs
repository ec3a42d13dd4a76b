//! Spatial data units through the real binary: a grid skymap registered with
//! `quanta skymap register`, visits whose detectors are rectangles on the
//! same tangent plane as the tract (so which detector overlaps which patch
//! is plain interval arithmetic, an independent computation of the
//! overlaps), and a coadd-shaped preflight (makeWarp gathering the visit's
//! overlapping calexps, assembleCoadd gathering warps by band) whose quanta
//! and inputs must be exactly those overlaps.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{fails_with, ok};
use quanta_core::{Bundle, DataIdValue};
use quanta_spatial::skymap::TanProjection;
use quanta_spatial::UnitVector;
use serde_json::{json, Value};

/// The tract's opposite corners (RA, Dec in degrees): across RA 0.
const CORNER_A: (f64, f64) = (356.0, -3.0);
const CORNER_B: (f64, f64) = (4.0, 3.0);
const NX: u32 = 4;
const NY: u32 = 3;
/// Detector side on the tangent plane, and the 2 × 2 layout per visit.
const DETECTOR: f64 = 1.1;

const PIPELINE: &str = "\
description: warps and coadds
tasks:
  makeWarp:
    class: examples.coadd.MakeWarp
    dimensions: [instrument, visit, skymap, tract, patch]
    inputs:
      calexp: {dataset_type: calexp, dimensions: [instrument, visit, detector], storage_class: Json, multiple: true}
    outputs:
      warp: {dataset_type: warp, dimensions: [instrument, visit, skymap, tract, patch], storage_class: Json}
  assembleCoadd:
    class: examples.coadd.AssembleCoadd
    dimensions: [skymap, tract, patch, band]
    inputs:
      warps: {dataset_type: warp, dimensions: [instrument, visit, skymap, tract, patch], storage_class: Json, multiple: true}
    outputs:
      coadd: {dataset_type: coadd, dimensions: [skymap, tract, patch, band], storage_class: Json}
";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A closed rectangle on the tract's tangent plane.
#[derive(Clone, Copy, Debug)]
struct Rect {
    x: (f64, f64),
    y: (f64, f64),
}

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.x.0 <= o.x.1 && o.x.0 <= self.x.1 && self.y.0 <= o.y.1 && o.y.0 <= self.y.1
    }
}

struct Survey {
    projection: TanProjection,
    /// Patch id → its rectangle.
    patches: Vec<Rect>,
    /// (visit, detector) → rectangle; visit → band.
    detectors: BTreeMap<(i64, i64), Rect>,
    bands: BTreeMap<i64, &'static str>,
}

fn lonlat(p: UnitVector) -> Value {
    let (ra, dec) = p.to_lonlat_deg();
    json!([ra, dec])
}

fn polygon(projection: &TanProjection, r: &Rect) -> Value {
    let corners = [
        (r.x.0, r.y.0),
        (r.x.1, r.y.0),
        (r.x.1, r.y.1),
        (r.x.0, r.y.1),
    ];
    json!({"polygon": corners
        .iter()
        .map(|&(x, y)| lonlat(projection.unproject(x, y)))
        .collect::<Vec<_>>()})
}

/// The tract's patches from the projection of its corners, and eight
/// visits of 2 × 2 detectors at offsets that put no detector edge on a
/// patch edge.
fn survey() -> Survey {
    let centre = UnitVector::from_lonlat_deg(0.0, 0.0);
    let projection = TanProjection::new(centre);
    let a = UnitVector::from_lonlat_deg(CORNER_A.0, CORNER_A.1);
    let b = UnitVector::from_lonlat_deg(CORNER_B.0, CORNER_B.1);
    let (ax, ay) = projection.project(a).unwrap();
    let (bx, by) = projection.project(b).unwrap();
    let (x0, x1, y0, y1) = (ax.min(bx), ax.max(bx), ay.min(by), ay.max(by));
    let (w, h) = ((x1 - x0) / f64::from(NX), (y1 - y0) / f64::from(NY));
    let mut patches = Vec::new();
    for j in 0..NY {
        for i in 0..NX {
            patches.push(Rect {
                x: (x0 + w * f64::from(i), x0 + w * f64::from(i + 1)),
                y: (y0 + h * f64::from(j), y0 + h * f64::from(j + 1)),
            });
        }
    }
    let mut detectors = BTreeMap::new();
    let mut bands = BTreeMap::new();
    for v in 0..8i64 {
        let cx = -3.3 + 0.913 * v as f64;
        let cy = -2.2 + 0.577 * ((v * 3) % 8) as f64;
        bands.insert(v, if v % 2 == 0 { "r" } else { "g" });
        for d in 0..4i64 {
            let (i, j) = ((d % 2) as f64, (d / 2) as f64);
            let x = cx - DETECTOR + i * DETECTOR;
            let y = cy - DETECTOR + j * DETECTOR;
            detectors.insert(
                (v, d),
                Rect {
                    x: (x, x + DETECTOR),
                    y: (y, y + DETECTOR),
                },
            );
        }
    }
    Survey {
        projection,
        patches,
        detectors,
        bands,
    }
}

/// A repo with the survey's records, the grid skymap and one calexp per
/// (visit, detector) in RUN `Cam/calexp`.
fn make_repo(dir: &Path, survey: &Survey) -> std::path::PathBuf {
    let repo = dir.join("repo");
    ok(&["repo", "create", s(&repo)]);
    let visit_outline = |v: i64| {
        let rects: Vec<&Rect> = (0..4).map(|d| &survey.detectors[&(v, d)]).collect();
        let x = (rects[0].x.0, rects[3].x.1);
        let y = (rects[0].y.0, rects[3].y.1);
        polygon(&survey.projection, &Rect { x, y })
    };
    let records = json!({
        "instrument": [{"name": "Cam"}],
        "physical_filter": [
            {"instrument": "Cam", "name": "Cam-g", "band": "g"},
            {"instrument": "Cam", "name": "Cam-r", "band": "r"},
        ],
        "detector": (0..4).map(|d| json!({"instrument": "Cam", "id": d})).collect::<Vec<_>>(),
        "visit": survey.bands.iter().map(|(v, band)| json!({
            "instrument": "Cam", "id": v, "physical_filter": format!("Cam-{band}"),
            "region": visit_outline(*v),
        })).collect::<Vec<_>>(),
        "visit_detector": survey.detectors.iter().map(|((v, d), r)| json!({
            "instrument": "Cam", "visit": v, "detector": d,
            "region": polygon(&survey.projection, r),
        })).collect::<Vec<_>>(),
    });
    let records_file = dir.join("records.json");
    std::fs::write(&records_file, records.to_string()).unwrap();
    ok(&["dimensions", "insert", s(&repo), s(&records_file)]);
    let corners = format!(
        "{},{},{},{}",
        CORNER_A.0, CORNER_A.1, CORNER_B.0, CORNER_B.1
    );
    let out = ok(&[
        "skymap",
        "register",
        s(&repo),
        "sky",
        "--kind",
        "grid",
        "--corners",
        &corners,
        "--patches",
        &format!("{NX}x{NY}"),
    ]);
    assert!(out.contains("1 tracts, 12 patches"), "{out}");
    ok(&[
        "dataset-type",
        "register",
        s(&repo),
        "calexp",
        "--dimensions",
        "instrument,visit,detector",
        "--storage-class",
        "Json",
    ]);
    ok(&[
        "collection",
        "create",
        s(&repo),
        "Cam/calexp",
        "--type",
        "RUN",
    ]);
    let files = dir.join("calexp");
    std::fs::create_dir_all(&files).unwrap();
    let mut manifest = String::from("path,instrument,visit,detector\n");
    for (v, d) in survey.detectors.keys() {
        let name = format!("calexp_{v}_{d}.json");
        std::fs::write(
            files.join(&name),
            json!({"visit": v, "detector": d}).to_string(),
        )
        .unwrap();
        manifest.push_str(&format!("calexp/{name},Cam,{v},{d}\n"));
    }
    std::fs::write(dir.join("manifest.csv"), manifest).unwrap();
    ok(&[
        "ingest",
        s(&repo),
        "--run",
        "Cam/calexp",
        "--dataset-type",
        "calexp",
        "--manifest",
        s(&dir.join("manifest.csv")),
    ]);
    repo
}

fn int(v: Option<&DataIdValue>) -> i64 {
    v.and_then(DataIdValue::as_int).unwrap()
}

#[test]
fn coadd_preflight_has_exactly_the_overlapping_quanta_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let survey = survey();
    let repo = make_repo(dir.path(), &survey);

    // Expected, by interval arithmetic on the tangent plane.
    let mut warp_inputs: BTreeMap<(i64, i64), BTreeSet<i64>> = BTreeMap::new();
    for (&(v, d), rect) in &survey.detectors {
        for (p, patch) in survey.patches.iter().enumerate() {
            if rect.overlaps(patch) {
                warp_inputs.entry((v, p as i64)).or_default().insert(d);
            }
        }
    }
    let coadds: BTreeSet<(i64, &str)> = warp_inputs
        .keys()
        .map(|&(v, p)| (p, survey.bands[&v]))
        .collect();
    assert!(warp_inputs.len() > 20 && coadds.len() > 10, "a real test");

    // The registry's spatial join agrees pair by pair.
    let pairs: Vec<Value> = serde_json::from_str(&ok(&[
        "query-data-ids",
        s(&repo),
        "--dimensions",
        "visit,detector,patch",
        "--json",
    ]))
    .unwrap();
    let expected_pairs: usize = warp_inputs.values().map(BTreeSet::len).sum();
    assert_eq!(pairs.len(), expected_pairs);

    let pipeline = dir.path().join("coadd.yaml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let bundle = dir.path().join("coadd.qb");
    ok(&[
        "preflight",
        s(&repo),
        "--pipeline",
        s(&pipeline),
        "--input",
        "Cam/calexp",
        "--output-run",
        "u/coadd/run",
        "--bundle",
        s(&bundle),
    ]);
    let b = Bundle::open(&bundle).unwrap();
    let label_of: Vec<String> = b.tasks().iter().map(|t| t.label.clone()).collect();
    let mut warps: BTreeMap<(i64, i64), BTreeSet<i64>> = BTreeMap::new();
    let mut got_coadds: BTreeMap<(i64, String), usize> = BTreeMap::new();
    for q in b.quanta() {
        let q = q.unwrap();
        let id = &q.data_id;
        match label_of[q.task as usize].as_str() {
            "makeWarp" => {
                let detectors = q.inputs[0]
                    .1
                    .iter()
                    .map(|r| int(r.data_id.get("detector")))
                    .collect();
                warps.insert((int(id.get("visit")), int(id.get("patch"))), detectors);
            }
            "assembleCoadd" => {
                let band = id.get("band").unwrap().to_string();
                got_coadds.insert((int(id.get("patch")), band), q.inputs[0].1.len());
            }
            other => panic!("unexpected task {other}"),
        }
    }
    assert_eq!(warps, warp_inputs, "makeWarp quanta and their calexps");
    let expected_coadds: BTreeMap<(i64, String), usize> = coadds
        .iter()
        .map(|&(p, band)| {
            let n = warp_inputs
                .keys()
                .filter(|&&(v, q)| q == p && survey.bands[&v] == band)
                .count();
            ((p, band.to_string()), n)
        })
        .collect();
    assert_eq!(
        got_coadds, expected_coadds,
        "assembleCoadd quanta and their warps"
    );

    // The bundle carries the patches' regions for the tasks.
    let records = b.dimension_records().unwrap();
    assert!(records["patch"]
        .iter()
        .all(|p| p["region"]["polygon"].is_array()));
}

#[test]
fn where_spatial_predicates_and_bad_skymaps() {
    let dir = tempfile::tempdir().unwrap();
    let survey = survey();
    let repo = make_repo(dir.path(), &survey);
    // The point at the tract's centre is in the patches around it.
    let around_centre: Vec<Value> = serde_json::from_str(&ok(&[
        "query-data-ids",
        s(&repo),
        "--dimensions",
        "patch",
        "--where",
        "patch.region OVERLAPS POINT(0.01, 0.01)",
        "--json",
    ]))
    .unwrap();
    let expected = survey
        .patches
        .iter()
        .filter(|p| {
            let c = survey
                .projection
                .project(UnitVector::from_lonlat_deg(0.01, 0.01))
                .unwrap();
            p.x.0 <= c.0 && c.0 <= p.x.1 && p.y.0 <= c.1 && c.1 <= p.y.1
        })
        .count();
    assert_eq!(around_centre.len(), expected);
    assert_eq!(expected, 1);

    let err = fails_with(
        2,
        &[
            "skymap",
            "register",
            s(&repo),
            "bad",
            "--kind",
            "grid",
            "--corners",
            "1,2,3",
        ],
    );
    assert!(err.contains("RA0,DEC0,RA1,DEC1"), "{err}");
    let err = fails_with(
        2,
        &[
            "skymap",
            "register",
            s(&repo),
            "bad",
            "--kind",
            "healpix",
            "--tract-level",
            "3",
            "--patch-level",
            "2",
        ],
    );
    assert!(err.contains("patch level (2)"), "{err}");
    // The skymap already registered is refused whole, naming the record.
    let err = fails_with(
        2,
        &[
            "skymap",
            "register",
            s(&repo),
            "sky",
            "--kind",
            "grid",
            "--corners",
            "10,10,12,12",
        ],
    );
    assert!(err.contains("already exists"), "{err}");
}
