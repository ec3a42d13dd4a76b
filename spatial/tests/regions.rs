//! Regions whose overlaps are known by construction, JSON, encoding,
//! refusals and the HEALPix cover's superset property.

use proptest::prelude::*;
use quanta_spatial::skymap::{healpix_cell_polygon, GridTract};
use quanta_spatial::{Region, RegionError, UnitVector};
use serde_json::json;

fn poly(v: &[(f64, f64)]) -> Region {
    Region::polygon(v).unwrap()
}

fn square(ra: f64, dec: f64, half: f64) -> Region {
    poly(&[
        (ra - half, dec - half),
        (ra + half, dec - half),
        (ra + half, dec + half),
        (ra - half, dec + half),
    ])
}

#[test]
fn grid_patches_touch_at_edges_and_corners_only() {
    let tract = GridTract::from_corners((10.0, -5.0), (14.0, -1.0), 4, 4).unwrap();
    let p = |i, j| Region::Polygon(tract.patch_polygon(i, j));
    assert!(p(1, 1).overlaps(&p(2, 1)), "edge neighbours");
    assert!(p(1, 1).overlaps(&p(2, 2)), "corner neighbours");
    assert!(!p(0, 0).overlaps(&p(2, 0)), "one patch apart");
    assert!(!p(0, 0).overlaps(&p(2, 2)));
    assert!(Region::Polygon(tract.tract_polygon()).overlaps(&p(3, 3)));
    // Across RA 0 and around a pole.
    let wrap = GridTract::from_corners((359.0, -1.0), (1.0, 1.0), 2, 2).unwrap();
    let (left, right) = (
        Region::Polygon(wrap.patch_polygon(0, 0)),
        Region::Polygon(wrap.patch_polygon(1, 0)),
    );
    assert!(left.overlaps(&right));
    assert!(left.contains(UnitVector::from_lonlat_deg(359.5, -0.5)));
    assert!(right.contains(UnitVector::from_lonlat_deg(0.5, -0.5)));
    let polar = GridTract::from_corners((45.0, 88.0), (225.0, 88.0), 2, 2).unwrap();
    assert!(Region::Polygon(polar.tract_polygon()).contains(UnitVector::from_lonlat_deg(0.0, 90.0)));
    let corner = UnitVector::from_lonlat_deg(0.0, 90.0);
    for id in 0..4 {
        let (i, j) = polar.patch_indices(id);
        assert!(
            Region::Polygon(polar.patch_polygon(i, j)).contains(corner),
            "patch {id} touches the pole"
        );
    }
}

#[test]
fn healpix_neighbour_cells_touch() {
    for (level, index) in [(8u8, 12345u64), (3, 0), (5, 4 * 1024 + 17), (10, 3_000_000)] {
        let cell = Region::Polygon(healpix_cell_polygon(level, index));
        let neighbours = cdshealpix::nested::neighbours(level, index, false);
        for n in neighbours.values_vec() {
            let other = Region::Polygon(healpix_cell_polygon(level, n));
            assert!(cell.overlaps(&other), "{level}/{index} and {n}");
        }
        let far = (index + 12 * 4u64.pow(level as u32) / 2) % (12 * 4u64.pow(level as u32));
        assert!(!cell.overlaps(&Region::Polygon(healpix_cell_polygon(level, far))));
    }
}

#[test]
fn healpix_cells_are_valid_polygons() {
    let mut cells: Vec<(u8, u64)> = (0..=4u8)
        .flat_map(|l| (0..12 * 4u64.pow(l as u32)).map(move |i| (l, i)))
        .collect();
    for level in [6u8, 8, 12, 16, 20, 24] {
        let n = 12 * 4u64.pow(level as u32);
        cells.extend((0..3000u64).map(|k| (level, k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n)));
    }
    {
        for (level, index) in cells {
            let cell = healpix_cell_polygon(level, index);
            quanta_spatial::ConvexPolygon::new(cell.vertices().to_vec())
                .unwrap_or_else(|e| panic!("{level}/{index}: {e}"));
        }
    }
}

#[test]
fn ra_wraps_at_zero() {
    let a = square(359.9, 0.0, 0.05); // 359.85..359.95
    let b = square(0.1, 0.0, 0.05); // 0.05..0.15
    let c = poly(&[
        (359.95, -0.05),
        (360.05, -0.05),
        (360.05, 0.05),
        (359.95, 0.05),
    ]);
    assert!(!a.overlaps(&b), "0.1° apart across RA 0");
    assert!(a.overlaps(&c), "touching edge at 359.95");
    assert!(b.overlaps(&c));
    assert!(
        b.contains(UnitVector::from_lonlat_deg(360.07, 0.0))
            && b.contains(UnitVector::from_lonlat_deg(0.06, 0.0))
    );
}

#[test]
fn polygon_around_the_pole() {
    let cap = poly(&[(0.0, 85.0), (90.0, 85.0), (180.0, 85.0), (270.0, 85.0)]);
    assert!(cap.contains(UnitVector::from_lonlat_deg(0.0, 90.0)));
    assert!(cap.overlaps(&Region::point(123.0, 89.0).unwrap()));
    assert!(
        !cap.overlaps(&Region::point(45.0, 84.0).unwrap()),
        "outside the 45° edge"
    );
    // The edge from (0, 85) to (90, 85) bulges to dec 86.48 at RA 45.
    let bulge = (85f64.to_radians().tan() / 45f64.to_radians().cos())
        .atan()
        .to_degrees();
    assert!(cap.overlaps(&Region::circle(45.0, 84.0, bulge - 84.0 + 1e-6).unwrap()));
    assert!(!cap.overlaps(&Region::circle(45.0, 84.0, bulge - 84.0 - 1e-6).unwrap()));
    assert!(!cap.overlaps(&square(45.0, 70.0, 1.0)));
}

#[test]
fn circles() {
    let a = Region::circle(10.0, 0.0, 1.0).unwrap();
    assert!(
        a.overlaps(&Region::circle(12.0, 0.0, 1.0).unwrap()),
        "touching"
    );
    assert!(!a.overlaps(&Region::circle(12.0, 0.0, 0.999).unwrap()));
    // A circle near a square's corner: the corner is sqrt(2) away.
    let s = square(0.0, 0.0, 1.0);
    assert!(!s.overlaps(&Region::circle(2.0, 2.0, 1.4).unwrap()));
    assert!(s.overlaps(&Region::circle(2.0, 2.0, 1.42).unwrap()));
    // Reaching an edge's interior, not a vertex.
    assert!(s.overlaps(&Region::circle(2.5, 0.0, 1.51).unwrap()));
    assert!(!s.overlaps(&Region::circle(2.5, 0.0, 1.49).unwrap()));
}

#[test]
fn crossing_polygons_without_contained_vertices() {
    let wide = poly(&[(-2.0, -0.5), (2.0, -0.5), (2.0, 0.5), (-2.0, 0.5)]);
    let tall = poly(&[(-0.5, -2.0), (0.5, -2.0), (0.5, 2.0), (-0.5, 2.0)]);
    assert!(wide.overlaps(&tall));
    let near_miss = square(0.0, 0.5 + 1e-6 + 0.5, 0.5);
    assert!(!square(0.0, 0.0, 0.5).overlaps(&near_miss));
}

#[test]
fn orientation_does_not_matter() {
    let ccw = square(20.0, 20.0, 1.0);
    let Region::Polygon(p) = &ccw else {
        unreachable!()
    };
    let mut v = p.vertices().to_vec();
    v.reverse();
    let cw = Region::Polygon(quanta_spatial::ConvexPolygon::new(v).unwrap());
    let inside = UnitVector::from_lonlat_deg(20.3, 19.8);
    assert!(ccw.contains(inside) && cw.contains(inside));
    assert!(!cw.contains(UnitVector::from_lonlat_deg(200.0, -20.0)));
}

#[test]
fn json_round_trips() {
    for text in [
        json!({"polygon": [[10.0, -45.25], [359.5, -45.25], [0.1, 30.0]]}),
        json!({"circle": {"center": [123.456, -89.5], "radius": 0.1}}),
        json!({"polygon": [[0.0, 90.0], [120.0, 80.0], [240.0, 80.0]]}),
    ] {
        let region = Region::from_json(&text).unwrap();
        assert_eq!(region.to_json(), text);
        assert_eq!(Region::decode(&region.encode()).unwrap(), region);
    }
    let wrapped = Region::from_json(&json!({"polygon": [[-10, 0], [10, 0], [0, 10]]})).unwrap();
    assert_eq!(
        wrapped.to_json(),
        json!({"polygon": [[350.0, 0.0], [10.0, 0.0], [0.0, 10.0]]})
    );
}

fn refusal(value: serde_json::Value) -> String {
    Region::from_json(&value).unwrap_err().to_string()
}

#[test]
fn refusals_say_what_is_wrong() {
    let cases = [
        (
            json!({"polygon": [[0, 0], [1, 0]]}),
            "at least 3 vertices, got 2",
        ),
        (
            json!({"polygon": [[0, 0], [1, 0], [10, 95]]}),
            "vertex 3 (ra 10, dec 95): dec is outside [-90, 90]",
        ),
        (
            json!({"polygon": [[0, 0], [1, 0], [1, 0], [0, 1]]}),
            "vertices 2 and 3 are the same point",
        ),
        (
            json!({"polygon": [[0, 0], [1, 0], [1, 1], [0, 0]]}),
            "do not repeat the first vertex",
        ),
        (
            json!({"polygon": [[0, 0], [1, 0], [2, 0], [1, 1]]}),
            "lie on one great circle: vertex 2",
        ),
        (
            json!({"polygon": [[0, 0], [2, 0], [2, 2], [1, 0.5], [0, 2]]}),
            "not convex at vertex 4",
        ),
        (
            json!({"polygon": [[0, 0], [2, 1], [0, 1], [2, 0]]}),
            "not convex",
        ),
        (
            json!({"polygon": [[0, 0], [72, 0.5], [144, 0], [216, 0.5], [288, 0]]}),
            "not convex",
        ),
        (
            json!({"polygon": [[0, 0], [1, 0], ["a", 1]]}),
            "polygon vertex 3 must be [ra, dec]",
        ),
        (
            json!({"polygon": {"a": 1}}),
            "must be a list of [ra, dec] vertices",
        ),
        (json!({"square": []}), "unknown region kind \"square\""),
        (json!([1, 2]), "a region is {\"polygon\""),
        (
            json!({"circle": {"center": [0, 0]}}),
            "\"circle\" must be {\"center\"",
        ),
        (
            json!({"circle": {"center": [0, 0], "radius": 180}}),
            "radius 180: must be",
        ),
        (
            json!({"circle": {"center": [0, 0], "radius": -1}}),
            "radius -1",
        ),
        (
            json!({"circle": {"center": [0, -91], "radius": 1}}),
            "circle center (ra 0, dec -91)",
        ),
    ];
    for (value, expected) in cases {
        let message = refusal(value.clone());
        assert!(
            message.contains(expected),
            "{value}: {message:?} lacks {expected:?}"
        );
    }
    let nan =
        quanta_spatial::ConvexPolygon::from_lonlat_deg(&[(0.0, 0.0), (f64::NAN, 1.0), (1.0, 0.0)]);
    assert!(
        matches!(nan, Err(RegionError::Coordinate(m)) if m.contains("vertex 2") && m.contains("ra is not a finite"))
    );
}

#[test]
fn grid_tract_refusals() {
    let err = |r: Result<GridTract, RegionError>| r.unwrap_err().to_string();
    assert!(
        err(GridTract::from_corners((1.0, 1.0), (1.0, 1.0), 2, 2)).contains("span no rectangle")
    );
    assert!(err(GridTract::from_corners((0.0, 0.0), (1.0, 1.0), 0, 2)).contains("at least 1 x 1"));
    assert!(
        err(GridTract::from_corners((0.0, 0.0), (100.0, 1.0), 2, 2)).contains("smaller than 90°")
    );
    assert!(
        err(GridTract::from_corners((0.0, 0.0), (0.0, 10.0), 2, 2)).contains("span no rectangle")
    );
}

#[test]
fn overlaps_encoded_agrees_with_decode() {
    let regions = [
        square(0.0, 0.0, 1.0),
        square(1.5, 0.0, 0.5),
        Region::circle(3.0, 0.0, 0.9).unwrap(),
    ];
    for a in &regions {
        for b in &regions {
            assert_eq!(
                Region::overlaps_encoded(&a.encode(), &b.encode()).unwrap(),
                a.overlaps(b)
            );
        }
    }
    assert!(matches!(
        Region::overlaps_encoded(&[], &regions[0].encode()),
        Err(RegionError::Encoding(_))
    ));
}

/// A random small convex polygon: `n` points on a circle about a center,
/// at increasing angles.
fn random_polygon() -> impl Strategy<Value = Region> {
    (
        0.0..360.0f64,
        -89.0..89.0f64,
        0.01..3.0f64,
        prop::collection::vec(0.0..1.0f64, 3..8),
    )
        .prop_map(|(ra, dec, r, mut fractions)| {
            fractions.sort_by(f64::total_cmp);
            let n = fractions.len() as f64;
            let center = UnitVector::from_lonlat_deg(ra, dec);
            let tract = quanta_spatial::skymap::TanProjection::new(center);
            let vertices: Vec<UnitVector> = fractions
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let a = (i as f64 + 0.8 * f) / n * std::f64::consts::TAU;
                    tract.unproject(r * a.cos(), r * a.sin())
                })
                .collect();
            quanta_spatial::ConvexPolygon::new(vertices)
                .map(Region::Polygon)
                .unwrap_or_else(|_| Region::circle(ra, dec, r).unwrap())
        })
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), tag in 0u8..4) {
        let mut bytes = bytes;
        if let Some(first) = bytes.first_mut() { *first = tag; }
        let _ = Region::decode(&bytes);
        let _ = Region::overlaps_encoded(&bytes, &bytes);
    }

    #[test]
    fn pixel_cover_holds_inner_points(region in random_polygon(), level in 4u8..13, seed in any::<u64>()) {
        let cover = region.healpix_pixels(level);
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        // Points inside: weighted sums of the vertices (or of the circle's
        // center and boundary points), including the vertices themselves.
        let anchors: Vec<UnitVector> = match &region {
            Region::Polygon(p) => p.vertices().to_vec(),
            Region::Circle(c) => {
                let (ra, dec) = c.center.to_lonlat_deg();
                let t = quanta_spatial::skymap::TanProjection::new(c.center);
                let r = c.radius_deg.to_radians().tan().to_degrees() * 0.999;
                (0..8).map(|k| { let a = k as f64 * 0.785; t.unproject(r * a.cos(), r * a.sin()) })
                    .chain([UnitVector::from_lonlat_deg(ra, dec)]).collect()
            }
        };
        for k in 0..300 {
            let p = if k < anchors.len() {
                anchors[k]
            } else {
                let sum = anchors.iter().fold(UnitVector { x: 0.0, y: 0.0, z: 0.0 }, |s, v| s.plus(v.scale(next().powi(3))));
                match sum.normalized() { Some(p) => p, None => continue }
            };
            prop_assert!(region.contains(p));
            let (lon, lat) = p.to_lonlat_rad();
            let cell = cdshealpix::nested::hash(level, lon.rem_euclid(std::f64::consts::TAU), lat);
            prop_assert!(cover.binary_search(&cell).is_ok(), "cell {} of an inner point missing", cell);
        }
    }

    #[test]
    fn touching_regions_share_a_cell(ra in 0.0..360.0f64, dec in -80.0..80.0f64, level in 5u8..10) {
        let tract = GridTract::from_corners((ra, dec), (ra + 2.0, dec + 2.0), 3, 3).unwrap();
        let a = Region::Polygon(tract.patch_polygon(1, 1)).healpix_pixels(level);
        for (i, j) in [(2, 1), (2, 2), (0, 0)] {
            let b = Region::Polygon(tract.patch_polygon(i, j)).healpix_pixels(level);
            prop_assert!(a.iter().any(|c| b.binary_search(c).is_ok()));
        }
    }
}

#[test]
fn cell_caps_hold_cell_edges() {
    // A HEALPix cell's own points (centre and along its curved edges) must
    // hash into the cover of its polygon's bounding... checked through the
    // cover of small circles at edge points of cells at several levels.
    for level in [0u8, 1, 3, 6, 9] {
        for index in [0u64, 5, 11].map(|i| i * 4u64.pow(level as u32) + 4u64.pow(level as u32) / 3)
        {
            let edge = cdshealpix::nested::path_along_cell_edge(
                level,
                index,
                &cdshealpix::compass_point::Cardinal::S,
                true,
                20,
            );
            for (lon, lat) in edge.iter() {
                let p = Region::point(lon.to_degrees(), lat.to_degrees()).unwrap();
                let cover = p.healpix_pixels(level);
                let cell = cdshealpix::nested::hash(level, *lon, *lat);
                assert!(cover.contains(&cell), "level {level} point {lon},{lat}");
            }
        }
    }
}

#[test]
fn tan_projection_round_trips_and_refuses_the_far_side() {
    use quanta_spatial::skymap::TanProjection;
    for (ra, dec) in [(0.0, 0.0), (200.0, -45.0), (10.0, 90.0)] {
        let t = TanProjection::new(UnitVector::from_lonlat_deg(ra, dec));
        let p = UnitVector::from_lonlat_deg(ra + 1.0, dec - 0.5);
        let (x, y) = t.project(p).unwrap();
        assert!(t.unproject(x, y).angle_to(p) < 1e-14);
        assert!(t
            .project(UnitVector::from_lonlat_deg(ra + 180.0, -dec))
            .is_none());
    }
    let t = TanProjection::new(UnitVector::from_lonlat_deg(30.0, 0.0));
    let (x, y) = t.project(UnitVector::from_lonlat_deg(31.0, 1.0)).unwrap();
    assert!(x > 0.0 && y > 0.0, "x towards increasing RA, y north");
}
