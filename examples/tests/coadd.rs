//! The coadd example's survey: records, regions and calexps.
//! `survey_regions_nest_and_patches_tile_the_tract` needs the geometry of
//! quanta-spatial, and `the_survey_repo_holds_regions_and_calexps` the
//! registry's region storage (issue 17).

use quanta_examples::coadd::survey::{
    calexp, create_survey_repo, detector_wcs, survey_records, Survey, CALEXP_RUN, DETECTOR_PX,
};
use quanta_spatial::{Region, UnitVector};

#[test]
fn calexps_show_the_stars_where_their_wcs_puts_them() {
    let s = Survey::default();
    let stars = s.stars();
    assert_eq!(stars.len(), s.stars);
    // Stars straddle RA 0.
    assert!(stars.iter().any(|t| t.ra > 359.0) && stars.iter().any(|t| t.ra < 1.0));
    let visits = s.visits();
    let mut seen = 0;
    for v in &visits {
        for d in 0..9 {
            let image = calexp(&s, &stars, v, d).unwrap();
            let wcs = image.header.wcs.unwrap();
            assert_eq!(wcs, detector_wcs(v, d));
            for t in &stars {
                let (x, y) = wcs.sky_to_pixel(t.ra, t.dec).unwrap();
                let (ix, iy) = (x.round(), y.round());
                if ix < 3.0
                    || iy < 3.0
                    || ix > DETECTOR_PX as f64 - 4.0
                    || iy > DETECTOR_PX as f64 - 4.0
                {
                    continue;
                }
                let peak = image.get(ix as usize, iy as usize).unwrap();
                assert!(
                    peak > 5.0 * v.sigma as f32,
                    "star {t:?} visit {} det {d}: {peak}",
                    v.id
                );
                seen += 1;
            }
        }
    }
    assert!(seen > stars.len(), "{seen} star images");
}

fn region(rec: &serde_json::Map<String, serde_json::Value>) -> Region {
    Region::from_json(&rec["region"]).unwrap()
}

#[test]
fn survey_regions_nest_and_patches_tile_the_tract() {
    let records = survey_records(&Survey::default()).unwrap();
    let visits = &records["visit"];
    for vd in &records["visit_detector"] {
        let v = visits.iter().find(|v| v["id"] == vd["visit"]).unwrap();
        let (outer, inner) = (region(v), region(vd));
        assert!(outer.overlaps(&inner));
        if let Region::Polygon(p) = &inner {
            for corner in p.vertices() {
                assert!(outer.contains(*corner), "{vd:?}");
            }
        }
    }
    let tract = region(&records["tract"][0]);
    let patches: Vec<Region> = records["patch"].iter().map(region).collect();
    assert_eq!(patches.len(), 9);
    // Every patch corner is in the tract; a grid of points over the tract
    // each lies in at least one patch.
    for p in &patches {
        if let Region::Polygon(poly) = p {
            assert!(poly.vertices().iter().all(|c| tract.contains(*c)));
        }
    }
    for i in 0..20 {
        for j in 0..20 {
            let (ra, dec) = (
                -0.14 + 0.28 * i as f64 / 19.0,
                0.86 + 0.28 * j as f64 / 19.0,
            );
            let point = UnitVector::from_lonlat_deg(ra.rem_euclid(360.0), dec);
            assert!(tract.contains(point));
            assert!(patches.iter().any(|p| p.contains(point)), "{ra},{dec}");
        }
    }
}

#[test]
fn the_survey_repo_holds_regions_and_calexps() {
    let dir = tempfile::tempdir().unwrap();
    let s = Survey {
        visits_per_band: 1,
        ..Survey::default()
    };
    let butler = create_survey_repo(&dir.path().join("repo"), &s).unwrap();
    let found = butler
        .registry()
        .query_datasets(
            &[],
            &[CALEXP_RUN.to_string()],
            "",
            &Default::default(),
            true,
        )
        .unwrap();
    assert_eq!(found.len(), 18);
}

/// The pipeline loader accepts the coadd pipeline and makes its tasks.
/// Before issue 17's loader work it refuses the gather across the
/// observation and skymap families ("no dimension in common").
#[test]
fn the_coadd_pipeline_loads_and_its_tasks_are_made() {
    let universe = quanta_core::DimensionUniverse::default_universe();
    let loaded = quanta_core::pipeline::LoadedPipeline::parse(
        quanta_examples::COADD_PIPELINE_YAML,
        "coadd.yaml",
        &universe,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tasks = quanta_examples::task_registry();
    for t in &loaded.pipeline.tasks {
        let quanta_core::pipeline::TaskKind::Class(class) = &t.kind else {
            panic!("{} is not a Rust task", t.label);
        };
        tasks.create(class, &t.config).unwrap().unwrap();
    }
    assert_eq!(loaded.pipeline.tasks.len(), 3);
}
