//! Regions in dimension records and spatial joins in queries, on a real
//! SQLite registry, with overlaps known by construction: detectors inside
//! one patch, straddling RA 0, touching a patch only at a corner or along
//! an edge, far from every patch, and at the north pole.

use std::collections::BTreeSet;

use quanta_core::{DataIdValue, DimensionUniverse};
use quanta_registry::{Binds, RecordSet, Registry};
use quanta_spatial::skymap::healpix_cell_polygon;
use quanta_spatial::{Circle, Region};
use serde_json::{json, Value};

/// A polygon with great-circle edges through the corners of
/// `[ra0, ra1] × [dec0, dec1]` (degrees), counter-clockwise.
fn square(ra0: f64, ra1: f64, dec0: f64, dec1: f64) -> Value {
    json!({"polygon": [[ra0, dec0], [ra1, dec0], [ra1, dec1], [ra0, dec1]]})
}

fn records(value: Value) -> RecordSet {
    serde_json::from_value(value).unwrap()
}

/// Patches 0–3 of tract 0 tile [359°, 1°] × [-1°, 1°] across RA 0 (2 × 2,
/// sharing edges); tract 1 is one patch around the north pole.
/// Detectors of visit 1: 1 inside patch 3, 2 straddling RA 0 (patches 2
/// and 3), 3 touching patch 3 at its corner (1°, 1°), 4 touching patch 3
/// along its edge RA = 1°. Visit 2 (detector 5) is far from every patch;
/// visit 3 (detector 6) is at the pole.
fn survey() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let universe = DimensionUniverse::default_universe();
    let mut registry = Registry::create(&dir.path().join("registry.sqlite3"), &universe).unwrap();
    let detectors: Vec<Value> = (1..=6)
        .map(|id| json!({"instrument": "Cam", "id": id}))
        .collect();
    let visit = |id: i64, region: Value| json!({"instrument": "Cam", "id": id, "physical_filter": "r", "region": region});
    let detector_regions = [
        (1, 1, square(0.2, 0.4, 0.2, 0.4)),
        (1, 2, square(359.8, 0.2, 0.2, 0.4)),
        (1, 3, square(1.0, 1.5, 1.0, 1.5)),
        (1, 4, square(1.0, 1.5, 0.2, 0.4)),
        (2, 5, square(10.0, 11.0, 10.0, 11.0)),
        (3, 6, square(45.0, 46.0, 89.5, 89.8)),
    ];
    let visit_detectors: Vec<Value> = detector_regions
        .iter()
        .map(|(v, d, region)| {
            json!({"instrument": "Cam", "visit": v, "detector": d, "region": region})
        })
        .collect();
    let patch = |tract: i64, id: i64, region: Value| json!({"skymap": "sky", "tract": tract, "id": id, "region": region});
    let pole = json!({"polygon": [[0, 89], [90, 89], [180, 89], [270, 89]]});
    registry
        .insert_dimension_records(&records(json!({
            "instrument": [{"name": "Cam"}],
            "physical_filter": [{"instrument": "Cam", "name": "r", "band": "r"}],
            "detector": detectors,
            "visit": [
                visit(1, square(359.0, 2.0, -0.5, 2.0)),
                visit(2, square(9.0, 12.0, 9.0, 12.0)),
                visit(3, json!({"circle": {"center": [0, 90], "radius": 2}})),
            ],
            "visit_detector": visit_detectors,
            "skymap": [{"name": "sky"}],
            "tract": [
                {"skymap": "sky", "id": 0, "region": square(359.0, 1.0, -1.0, 1.0)},
                {"skymap": "sky", "id": 1, "region": pole},
            ],
            "patch": [
                patch(0, 0, square(359.0, 0.0, -1.0, 0.0)),
                patch(0, 1, square(0.0, 1.0, -1.0, 0.0)),
                patch(0, 2, square(359.0, 0.0, 0.0, 1.0)),
                patch(0, 3, square(0.0, 1.0, 0.0, 1.0)),
                patch(1, 0, pole),
            ],
        })))
        .unwrap();
    (dir, registry)
}

/// The integer keys of `query_data_ids` rows, in the order of `keys`.
fn ids(registry: &Registry, dims: &[&str], keys: &[&str], where_text: &str) -> BTreeSet<Vec<i64>> {
    let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    registry
        .query_data_ids(&dims, where_text, &Binds::new())
        .unwrap()
        .into_iter()
        .map(|data_id| {
            keys.iter()
                .map(|k| match data_id.get(k) {
                    Some(DataIdValue::Int(i)) => *i,
                    other => panic!("{k}: {other:?}"),
                })
                .collect()
        })
        .collect()
}

fn set(rows: &[&[i64]]) -> BTreeSet<Vec<i64>> {
    rows.iter().map(|r| r.to_vec()).collect()
}

#[test]
fn detectors_join_the_patches_they_overlap() {
    let (_dir, registry) = survey();
    let rows = ids(
        &registry,
        &["visit", "detector", "patch"],
        &["visit", "detector", "tract", "patch"],
        "",
    );
    assert_eq!(
        rows,
        set(&[
            &[1, 1, 0, 3],
            &[1, 2, 0, 2],
            &[1, 2, 0, 3],
            &[1, 3, 0, 3],
            &[1, 4, 0, 3],
            &[3, 6, 1, 0],
        ])
    );
}

#[test]
fn visits_join_patches_and_tracts_without_detectors() {
    let (_dir, registry) = survey();
    let visit_patch = ids(
        &registry,
        &["visit", "patch"],
        &["visit", "tract", "patch"],
        "",
    );
    assert_eq!(
        visit_patch,
        set(&[&[1, 0, 0], &[1, 0, 1], &[1, 0, 2], &[1, 0, 3], &[3, 1, 0]])
    );
    let visit_tract = ids(&registry, &["visit", "tract"], &["visit", "tract"], "");
    assert_eq!(visit_tract, set(&[&[1, 0], &[3, 1]]));
    // A --where constraint combines with the spatial join.
    let one = ids(
        &registry,
        &["visit", "patch"],
        &["visit", "patch"],
        "patch = 1",
    );
    assert_eq!(one, set(&[&[1, 1]]));
}

#[test]
fn a_materialized_overlap_element_wins_where_it_has_records() {
    let (_dir, mut registry) = survey();
    registry
        .insert_dimension_records(&records(json!({
            "visit_patch_overlap": [
                {"instrument": "Cam", "visit": 2, "skymap": "sky", "tract": 0, "patch": 0}
            ]
        })))
        .unwrap();
    let visit_patch = ids(
        &registry,
        &["visit", "patch"],
        &["visit", "tract", "patch"],
        "",
    );
    assert_eq!(visit_patch, set(&[&[2, 0, 0]]));
    // It relates visits and patches only: detectors and tracts still join by region.
    let visit_tract = ids(&registry, &["visit", "tract"], &["visit", "tract"], "");
    assert_eq!(visit_tract, set(&[&[1, 0], &[3, 1]]));
}

#[test]
fn regions_print_back_as_they_were_written() {
    let (_dir, registry) = survey();
    let patches = registry.element_records("patch").unwrap();
    let p3 = patches
        .iter()
        .find(|p| p["tract"] == json!(0) && p["id"] == json!(3))
        .unwrap();
    assert_eq!(p3["region"], square(0.0, 1.0, 0.0, 1.0));
    let visits = registry.element_records("visit").unwrap();
    assert_eq!(
        visits[2]["region"],
        json!({"circle": {"center": [0.0, 90.0], "radius": 2.0}})
    );
}

#[test]
fn a_bad_region_is_refused_with_its_record_and_nothing_is_inserted() {
    let (_dir, mut registry) = survey();
    let bad = [
        (
            json!({"polygon": [[20, 0], [21, 0], [20.2, 0.2], [21, 1], [20, 1]]}),
            "convex",
        ),
        (json!({"polygon": [[20, 0], [21, 0]]}), "3"),
        (json!({"polygon": [[20, 0], [21, 0], [21, 95]]}), "90"),
        (
            json!({"circle": {"center": [20, 0], "radius": -1}}),
            "radius",
        ),
    ];
    for (region, reason) in bad {
        let err = registry
            .insert_dimension_records(&records(json!({
                "detector": [{"instrument": "Cam", "id": 7}],
                "visit": [
                    {"instrument": "Cam", "id": 9, "physical_filter": "r", "region": square(20.0, 21.0, 0.0, 1.0)},
                    {"instrument": "Cam", "id": 10, "physical_filter": "r", "region": region},
                ],
            })))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("visit record #2") && err.contains("\"id\":10") && err.contains("region"),
            "{err}"
        );
        assert!(err.to_lowercase().contains(reason), "{reason}: {err}");
        assert!(err.contains("nothing was inserted"), "{err}");
    }
    // Neither the detector nor the good visit (nor its sky pixels) went in.
    assert_eq!(registry.element_records("detector").unwrap().len(), 6);
    assert_eq!(registry.element_records("visit").unwrap().len(), 3);
    let near = ids(&registry, &["visit", "patch"], &["visit"], "");
    assert!(!near.contains(&vec![9]), "{near:?}");
}

/// Overlaps are kept at insert: a read-only registry reads them, and a
/// later insert relates its records to those already there, from either
/// side (new detectors against old patches, a new patch against old
/// detectors).
#[test]
fn joins_hold_from_a_read_only_registry_and_after_later_inserts() {
    let (dir, registry) = survey();
    let expected = ids(
        &registry,
        &["visit", "detector", "patch"],
        &["visit", "detector", "tract", "patch"],
        "",
    );
    drop(registry);
    let path = dir.path().join("registry.sqlite3");
    let reader = Registry::open_read_only(&path).unwrap();
    let dims = ["visit", "detector", "patch"];
    let keys = ["visit", "detector", "tract", "patch"];
    assert_eq!(ids(&reader, &dims, &keys, ""), expected);
    // Twice on one connection: the TEMP table is refilled, not appended to.
    assert_eq!(ids(&reader, &dims, &keys, ""), expected);
    drop(reader);

    let mut registry = Registry::open(&path).unwrap();
    registry
        .insert_dimension_records(&records(json!({
            "visit": [{"instrument": "Cam", "id": 4, "physical_filter": "r", "region": square(0.5, 0.9, 0.5, 0.9)}],
            "visit_detector": [{"instrument": "Cam", "visit": 4, "detector": 1, "region": square(0.5, 0.6, 0.5, 0.6)}],
        })))
        .unwrap();
    registry
        .insert_dimension_records(&records(json!({
            "patch": [{"skymap": "sky", "tract": 0, "id": 4, "region": square(0.25, 0.3, 0.25, 0.3)}],
        })))
        .unwrap();
    let mut with_new = expected;
    with_new.insert(vec![4, 1, 0, 3]);
    // Inside detector 1 of visit 1 only.
    with_new.insert(vec![1, 1, 0, 4]);
    assert_eq!(ids(&registry, &dims, &keys, ""), with_new);
}

/// The level-8 cell holding (ra, dec) (degrees).
fn cell_at(ra: f64, dec: f64, level: u8) -> u64 {
    let point = Region::Circle(Circle::from_lonlat_deg(ra, dec, 0.0).unwrap());
    point
        .healpix_pixels(level)
        .into_iter()
        .find(|&c| Region::Polygon(healpix_cell_polygon(level, c)).overlaps(&point))
        .expect("some cell holds the point")
}

/// `healpixN = i` keeps the data IDs whose regions (one per spatial
/// family in the query) all overlap HEALPix cell i of level N, at the
/// index level, coarser and finer; `!=` and `IN` too.
#[test]
fn healpix_cells_match_the_regions_that_overlap_them() {
    let (_dir, registry) = survey();
    let vd = |where_text: &str| {
        ids(
            &registry,
            &["visit", "detector"],
            &["visit", "detector"],
            where_text,
        )
    };
    // Inside detector 1 of visit 1; detector 2 (across RA 0) may reach
    // into the same cell: decided by the geometry, independently of SQL.
    let cell = cell_at(0.3, 0.3, 8);
    let polygon = Region::Polygon(healpix_cell_polygon(8, cell));
    let d2 = Region::from_json(&square(359.8, 0.2, 0.2, 0.4)).unwrap();
    let mut expected = set(&[&[1, 1]]);
    if d2.overlaps(&polygon) {
        expected.insert(vec![1, 2]);
    }
    assert_eq!(vd(&format!("healpix8 = {cell}")), expected);
    assert_eq!(vd(&format!("{cell} = healpix8")), expected);
    // Every visit_detector record (a sky pixel joins that element).
    let all = set(&[&[1, 1], &[1, 2], &[1, 3], &[1, 4], &[2, 5], &[3, 6]]);
    let rest: BTreeSet<_> = all.difference(&expected).cloned().collect();
    assert_eq!(vd(&format!("healpix8 != {cell}")), rest);
    // Coarser: the level-5 cell around it holds at least the same; finer:
    // the level-10 cell at the point is inside detector 1.
    let coarse = vd(&format!("healpix5 = {}", cell >> 6));
    assert!(coarse.is_superset(&expected), "{coarse:?}");
    assert!(!coarse.contains(&vec![2, 5]) && !coarse.contains(&vec![3, 6]));
    assert!(vd(&format!("healpix10 = {}", cell_at(0.3, 0.3, 10))).contains(&vec![1, 1]));
    // IN: either cell; visit 2's detector 5 is around (10.5°, 10.5°).
    let far = cell_at(10.5, 10.5, 8);
    let mut either = expected.clone();
    either.insert(vec![2, 5]);
    assert_eq!(vd(&format!("healpix8 IN ({cell}, {far})")), either);
    // With patches in the query, the patch must overlap the cell too.
    let vdp = ids(
        &registry,
        &["visit", "detector", "patch"],
        &["visit", "detector", "patch"],
        &format!("healpix8 = {cell} AND detector = 1"),
    );
    assert_eq!(vdp, set(&[&[1, 1, 3]]));
}

#[test]
fn healpix_misuse_is_refused_with_the_reason() {
    let (_dir, registry) = survey();
    let refused = |dims: &[&str], where_text: &str| {
        let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        registry
            .query_data_ids(&dims, where_text, &Binds::new())
            .unwrap_err()
            .to_string()
    };
    let vd = ["visit", "detector"];
    assert!(refused(&vd, "healpix8 > 5").contains("not ordered"));
    assert!(refused(&vd, "healpix8 = 'a'").contains("cell index"));
    assert!(refused(&vd, "healpix8 = 786432").contains("cells 0..786432"));
    assert!(refused(&vd, "healpix8 IN (1..4)").contains("ranges"));
    assert!(refused(&["instrument"], "healpix8 = 1").contains("have none"));
    // Deeper than regions are ever indexed: no such dimension.
    assert!(refused(&vd, "healpix25 = 1").contains("unknown dimension"));
}

/// A spatial join reads `visit` from `visit_detector` (its foreign key
/// proves the visit exists), yet the rows still carry what the visit
/// implies: data IDs are expanded the same whichever table a value came
/// from.
#[test]
fn graph_rows_of_a_spatial_join_carry_the_implied_dimensions() {
    let (_dir, registry) = survey();
    let dims = registry
        .universe()
        .conform(&["visit", "detector", "patch"])
        .unwrap();
    let rows = registry
        .query_graph_rows(&dims, "", &Binds::new(), &[], &[])
        .unwrap();
    assert_eq!(rows.n_rows(), 6);
    let c = rows
        .column("physical_filter")
        .expect("the visits' physical_filter is a column of the rows");
    for r in 0..rows.n_rows() {
        assert_eq!(
            rows.value(c, rows.row(r)[c]),
            Some(&quanta_core::DataIdValue::from("r"))
        );
    }
}
