//! Independent cross-check of `Region::overlaps` against LSST's
//! lsst.sphgeom on random convex polygons and circles (generated and
//! judged by `sphgeom_check.py`). Without lsst.sphgeom the test says why
//! and passes, unless QUANTA_REQUIRE_SPHGEOM=1 (CI), where it fails.

use quanta_spatial::{Circle, ConvexPolygon, Region, UnitVector};
use serde_json::Value;
use std::process::Command;

/// Pairs this close to touching (radians) are skipped: there the answer
/// depends on rounding in both libraries.
const NEAR_TOUCH_RAD: f64 = 1e-9;

fn sphgeom_output() -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sphgeom_check.py");
    let required = std::env::var("QUANTA_REQUIRE_SPHGEOM").as_deref() == Ok("1");
    let output = Command::new("python3").arg(script).arg("150").output();
    match output {
        Ok(out) if out.status.success() => Some(serde_json::from_slice(&out.stdout).unwrap()),
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => format!("cannot run python3: {e}"),
            };
            assert!(
                !required,
                "QUANTA_REQUIRE_SPHGEOM=1 but the sphgeom check failed: {why}"
            );
            eprintln!("skipping the lsst.sphgeom cross-check (pip install lsst-sphgeom): {why}");
            None
        }
    }
}

fn vector(v: &Value) -> UnitVector {
    let c: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    UnitVector {
        x: c[0],
        y: c[1],
        z: c[2],
    }
}

fn region(v: &Value) -> Region {
    if let Some(p) = v.get("polygon") {
        let vertices = p.as_array().unwrap().iter().map(vector).collect();
        Region::Polygon(ConvexPolygon::new(vertices).unwrap())
    } else {
        let c = &v["circle"];
        Region::Circle(Circle {
            center: vector(&c[0]),
            radius_deg: c[1].as_f64().unwrap(),
        })
    }
}

/// The region grown (`sign` = 1) or shrunk (-1) by about `NEAR_TOUCH_RAD`.
fn resized(r: &Region, sign: f64) -> Region {
    match r {
        Region::Circle(c) => Region::Circle(Circle {
            center: c.center,
            radius_deg: (c.radius_deg + sign * NEAR_TOUCH_RAD.to_degrees()).max(0.0),
        }),
        Region::Polygon(p) => {
            let bound = p.bounding_circle();
            let k = 1.0 + sign * NEAR_TOUCH_RAD / bound.radius_deg.to_radians();
            let c = bound.center;
            let moved = p
                .vertices()
                .iter()
                .map(|v| c.plus(v.minus(c).scale(k)).normalized().unwrap());
            Region::Polygon(ConvexPolygon::new(moved.collect()).unwrap())
        }
    }
}

#[test]
fn overlaps_agree_with_lsst_sphgeom() {
    let Some(truth) = sphgeom_output() else {
        return;
    };
    let regions: Vec<Region> = truth["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(region)
        .collect();
    let (mut checked, mut skipped, mut overlapping) = (0, 0, 0);
    let mut disagreements = Vec::new();
    for pair in truth["overlaps"].as_array().unwrap() {
        let (i, j) = (
            pair[0].as_u64().unwrap() as usize,
            pair[1].as_u64().unwrap() as usize,
        );
        let expected = pair[2].as_bool().unwrap();
        let (a, b) = (&regions[i], &regions[j]);
        if resized(a, 1.0).overlaps(&resized(b, 1.0))
            != resized(a, -1.0).overlaps(&resized(b, -1.0))
        {
            skipped += 1;
            continue;
        }
        checked += 1;
        overlapping += usize::from(expected);
        if a.overlaps(b) != expected {
            disagreements.push((i, j, expected));
        }
    }
    eprintln!("sphgeom cross-check: {checked} pairs agree-checked ({overlapping} overlapping), {skipped} near-touching skipped");
    assert!(
        disagreements.is_empty(),
        "quanta and sphgeom disagree on (i, j, sphgeom): {disagreements:?}"
    );
    assert!(
        overlapping > checked / 20 && overlapping < checked,
        "a test set with both answers"
    );
    cover_holds_sphgeom_interior(&regions, &truth["interior8"]);
}

/// Every level-8 cell sphgeom finds entirely inside a region is in the
/// region's cover (an independent lower bound for the superset property).
fn cover_holds_sphgeom_interior(regions: &[Region], interior: &Value) {
    let mut cells = 0;
    for (region, ranges) in regions.iter().zip(interior.as_array().unwrap()) {
        let cover = region.healpix_pixels(8);
        for range in ranges.as_array().unwrap() {
            let (begin, end) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
            for cell in begin..end {
                cells += 1;
                assert!(
                    cover.binary_search(&cell).is_ok(),
                    "cell {cell} inside {region:?} missing"
                );
            }
        }
    }
    eprintln!("sphgeom cross-check: {cells} interior level-8 cells all in quanta's covers");
    assert!(cells > 0);
}
