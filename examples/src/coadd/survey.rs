//! A small synthetic survey in a real repo: instrument `Cam` with a 3×3
//! focal plane, visits in bands g and r dithered around a field crossing
//! RA 0, visit and visit_detector regions through each visit's TAN WCS, a
//! grid skymap (one tract of 3×3 patches), and a `calexp` per (visit,
//! detector) in RUN `Cam/calexp` showing the same stars at fixed sky
//! positions with per-visit noise.

use std::path::Path;

use quanta_butler::{Butler, NewRegistry};
use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse};
use quanta_datastore::{DatastoreConfig, InMemoryDataset};
use quanta_registry::RecordSet;
use quanta_spatial::skymap::GridTract;
use quanta_spatial::{ConvexPolygon, UnitVector};
use serde_json::{json, Map, Value};

use crate::fits::synth::{InjectedSource, SplitMix64};
use crate::fits::workload::{FitsWorkloadError, NIGHT_MJD};
use crate::fits::{Image, TanWcs, IMAGE_STORAGE_CLASS};

/// The RUN holding the calexps.
pub const CALEXP_RUN: &str = "Cam/calexp";
/// The skymap's name.
pub const SKYMAP: &str = "grid";
/// Field centre: RA 0 (so footprints straddle 0/360), Dec +1.
pub const FIELD: (f64, f64) = (0.0, 1.0);
/// Detector size (pixels), gap between detectors (pixels), pixel scale.
pub const DETECTOR_PX: usize = 100;
const GAP_PX: usize = 4;
/// Pixel scale of the camera (degrees).
pub const PIXEL_SCALE: f64 = 2.0 / 3600.0;
/// Tract half-size (degrees) and patches per side.
const TRACT_HALF: f64 = 0.15;
pub const PATCHES: u32 = 3;

/// One star of the synthetic sky.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Star {
    pub ra: f64,
    pub dec: f64,
    /// Total flux in band r (ADU); band g is 0.7 of it.
    pub flux: f64,
}

/// The survey's size: visits per band (bands g and r).
#[derive(Debug, Clone, PartialEq)]
pub struct Survey {
    pub visits_per_band: usize,
    pub stars: usize,
    pub seed: u64,
}

impl Default for Survey {
    fn default() -> Self {
        Self {
            visits_per_band: 3,
            stars: 40,
            seed: 20261204,
        }
    }
}

/// Visit `v`: its band, pointing offset (degrees on the sky), rotation
/// (degrees), sky noise σ (ADU) and PSF σ (pixels).
pub struct VisitSpec {
    pub id: i64,
    pub band: &'static str,
    pub pointing: (f64, f64),
    pub rotation_deg: f64,
    pub sigma: f64,
    pub psf_sigma: f64,
}

const DITHERS: [(f64, f64); 6] = [
    (0.0, 0.0),
    (0.04, 0.03),
    (-0.04, -0.03),
    (0.03, -0.04),
    (-0.03, 0.04),
    (0.05, 0.0),
];

impl Survey {
    pub fn visits(&self) -> Vec<VisitSpec> {
        let n = self.visits_per_band;
        (0..2 * n)
            .map(|v| {
                let (dx, dy) = DITHERS[v % DITHERS.len()];
                let ra = (FIELD.0 + dx / FIELD.1.to_radians().cos()).rem_euclid(360.0);
                VisitSpec {
                    id: v as i64,
                    band: if v < n { "g" } else { "r" },
                    pointing: (ra, FIELD.1 + dy),
                    rotation_deg: 3.0 * (v as f64 - n as f64),
                    sigma: 12.0 + 2.0 * (v % 4) as f64,
                    psf_sigma: 1.3 + 0.1 * (v % 3) as f64,
                }
            })
            .collect()
    }

    /// Stars uniformly in the tract, at least 40″ apart.
    pub fn stars(&self) -> Vec<Star> {
        let mut rng = SplitMix64::new(self.seed);
        let wcs = field_plane();
        let mut out: Vec<(f64, f64, f64)> = Vec::new();
        let half = (TRACT_HALF - 0.01) / PIXEL_SCALE;
        let mut tries = 0;
        while out.len() < self.stars && tries < 100 * self.stars {
            tries += 1;
            let (x, y) = (
                (2.0 * rng.uniform() - 1.0) * half,
                (2.0 * rng.uniform() - 1.0) * half,
            );
            let flux = 3000.0 + 12000.0 * rng.uniform();
            if out.iter().all(|(a, b, _)| (a - x).hypot(b - y) > 20.0) {
                out.push((x, y, flux));
            }
        }
        out.into_iter()
            .map(|(x, y, flux)| {
                let (ra, dec) = wcs.pixel_to_sky(x, y);
                Star { ra, dec, flux }
            })
            .collect()
    }
}

/// A camera-scale TAN plane about the field centre (pixel 0 at the centre).
fn field_plane() -> TanWcs {
    match TanWcs::new(FIELD, (1.0, 1.0), [[-PIXEL_SCALE, 0.0], [0.0, PIXEL_SCALE]]) {
        Ok(w) => w,
        Err(e) => unreachable!("constant WCS is valid: {e}"),
    }
}

/// The WCS of `detector` (0..9, 3×3) in a visit.
pub fn detector_wcs(visit: &VisitSpec, detector: usize) -> TanWcs {
    let pitch = (DETECTOR_PX + GAP_PX) as f64;
    let (col, row) = ((detector % 3) as f64, (detector / 3) as f64);
    let centre = (DETECTOR_PX as f64 - 1.0) / 2.0;
    // Focal-plane centre in this detector's pixels, FITS 1-based.
    let crpix = (
        1.0 + centre + (1.0 - col) * pitch,
        1.0 + centre + (1.0 - row) * pitch,
    );
    let (c, s) = (
        visit.rotation_deg.to_radians().cos(),
        visit.rotation_deg.to_radians().sin(),
    );
    let k = PIXEL_SCALE;
    match TanWcs::new(visit.pointing, crpix, [[-k * c, k * s], [k * s, k * c]]) {
        Ok(w) => w,
        Err(e) => unreachable!("survey WCS is valid: {e}"),
    }
}

fn polygon_json(corners: &[(f64, f64)]) -> Value {
    json!({"polygon": corners.iter().map(|(r, d)| json!([r, d])).collect::<Vec<_>>()})
}

fn visit_outline(visit: &VisitSpec) -> [(f64, f64); 4] {
    // Corners of detectors 0, 2, 8, 6 are the focal plane's outer corners.
    let edge = DETECTOR_PX as f64 - 0.5;
    [
        (0, -0.5, -0.5),
        (2, edge, -0.5),
        (8, edge, edge),
        (6, -0.5, edge),
    ]
    .map(|(d, x, y)| detector_wcs(visit, d).pixel_to_sky(x, y))
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn ring(poly: &ConvexPolygon) -> Value {
    let corners: Vec<(f64, f64)> = poly.vertices().iter().map(|v| v.to_lonlat_deg()).collect();
    polygon_json(&corners)
}

/// The grid tract of the survey.
pub fn tract() -> Result<GridTract, FitsWorkloadError> {
    let h = TRACT_HALF;
    let c = FIELD.1.to_radians().cos();
    GridTract::from_corners(
        ((FIELD.0 - h / c).rem_euclid(360.0), FIELD.1 - h),
        ((FIELD.0 + h / c).rem_euclid(360.0), FIELD.1 + h),
        PATCHES,
        PATCHES,
    )
    .map_err(|e| FitsWorkloadError::Invalid(format!("the survey tract: {e}")))
}

/// Every dimension record of the survey.
pub fn survey_records(s: &Survey) -> Result<RecordSet, FitsWorkloadError> {
    let visits = s.visits();
    let mut r = RecordSet::new();
    r.insert(
        "instrument".into(),
        vec![obj(
            json!({"name": "Cam", "detector_max": 9, "visit_max": visits.len()}),
        )],
    );
    r.insert(
        "physical_filter".into(),
        ["g", "r"]
            .iter()
            .map(|b| obj(json!({"instrument": "Cam", "name": format!("Cam-{b}"), "band": b})))
            .collect(),
    );
    r.insert(
        "day_obs".into(),
        vec![obj(json!({"instrument": "Cam", "id": 20261126,
        "timespan_begin": NIGHT_MJD, "timespan_end": NIGHT_MJD + 1.0}))],
    );
    r.insert(
        "detector".into(),
        (0..9)
            .map(|d| obj(json!({"instrument": "Cam", "id": d, "full_name": format!("D{d:03}")})))
            .collect(),
    );
    let visit_rec = |v: &VisitSpec| {
        let begin = NIGHT_MJD + 0.125 + v.id as f64 / 1440.0;
        obj(
            json!({"instrument": "Cam", "id": v.id, "name": format!("v{}", v.id),
            "physical_filter": format!("Cam-{}", v.band), "day_obs": 20261126, "exposure_time": 30.0,
            "timespan_begin": begin, "timespan_end": begin + 30.0 / 86400.0,
            "region": polygon_json(&visit_outline(v))}),
        )
    };
    r.insert("visit".into(), visits.iter().map(visit_rec).collect());
    let vd = visits.iter().flat_map(|v| (0..9).map(move |d| (v, d))).map(|(v, d)| {
        let corners = detector_wcs(v, d).corners(DETECTOR_PX, DETECTOR_PX);
        obj(json!({"instrument": "Cam", "visit": v.id, "detector": d, "seeing": v.psf_sigma * 2.355 * 2.0,
            "region": polygon_json(&corners)}))
    });
    r.insert("visit_detector".into(), vd.collect());
    let t = tract()?;
    r.insert(
        "skymap".into(),
        vec![obj(json!({"name": SKYMAP, "tract_max": 1,
        "patch_nx_max": PATCHES, "patch_ny_max": PATCHES}))],
    );
    r.insert(
        "tract".into(),
        vec![obj(
            json!({"skymap": SKYMAP, "id": 0, "region": ring(&t.tract_polygon())}),
        )],
    );
    let patches = (0..PATCHES).flat_map(|j| (0..PATCHES).map(move |i| (i, j))).map(|(i, j)| {
        obj(json!({"skymap": SKYMAP, "tract": 0, "id": j * PATCHES + i, "cell_x": i, "cell_y": j,
            "region": ring(&t.patch_polygon(i, j))}))
    });
    r.insert("patch".into(), patches.collect());
    Ok(r)
}

/// The calexp of (visit, detector): background-subtracted stars (Gaussian
/// PSF) plus Gaussian noise of the visit's σ, with its WCS in the header.
pub fn calexp(
    s: &Survey,
    stars: &[Star],
    v: &VisitSpec,
    detector: usize,
) -> Result<Image, FitsWorkloadError> {
    let wcs = detector_wcs(v, detector);
    let n = DETECTOR_PX;
    let mut signal = vec![0.0f64; n * n];
    let scale = if v.band == "g" { 0.7 } else { 1.0 };
    for star in stars {
        let Some((x, y)) = wcs.vector_to_pixel(UnitVector::from_lonlat_deg(star.ra, star.dec))
        else {
            continue;
        };
        let src = InjectedSource {
            x,
            y,
            flux: star.flux * scale,
        };
        crate::fits::synth::add_psf(&mut signal, n, n, &src, v.psf_sigma);
    }
    let mut rng =
        SplitMix64::new(s.seed ^ ((v.id as u64) << 8 | detector as u64).wrapping_mul(0x9E37_79B9));
    let px = signal
        .iter()
        .map(|p| (p + v.sigma * rng.gaussian()) as f32)
        .collect();
    let mut image = Image::new(n, n, px).map_err(|e| FitsWorkloadError::Invalid(e.to_string()))?;
    image.header.kind = Some("calexp".into());
    image.header.visit = Some(v.id);
    image.header.detector = Some(detector as i64);
    image.header.sigma = Some(v.sigma);
    image.header.wcs = Some(wcs);
    Ok(image)
}

/// Creates the survey repo at `root`: records, dataset type `calexp`
/// (`ImageF`, `[instrument, visit, detector]`) and every calexp in
/// [`CALEXP_RUN`].
pub fn create_survey_repo(root: &Path, s: &Survey) -> Result<Butler, FitsWorkloadError> {
    create_survey_repo_on(root, &NewRegistry::Sqlite, s)
}

/// [`create_survey_repo`] with its registry on `registry` (e.g. a
/// PostgreSQL namespace).
pub fn create_survey_repo_on(
    root: &Path,
    registry: &NewRegistry,
    s: &Survey,
) -> Result<Butler, FitsWorkloadError> {
    if s.visits_per_band == 0 {
        return Err(FitsWorkloadError::Invalid(
            "need at least one visit per band".into(),
        ));
    }
    let records = survey_records(s)?;
    let mut butler = Butler::create_repo_on(
        root,
        registry,
        &DimensionUniverse::default_universe(),
        DatastoreConfig::default(),
    )?
    .with_formatters(quanta_formats::formatters());
    butler.registry_mut().insert_dimension_records(&records)?;
    let dimensions = butler
        .universe()
        .conform(&["instrument", "visit", "detector"])?;
    butler.registry_mut().register_dataset_type(&DatasetType {
        name: "calexp".into(),
        dimensions,
        storage_class: IMAGE_STORAGE_CLASS.into(),
        is_calibration: false,
    })?;
    butler
        .registry_mut()
        .register_collection(CALEXP_RUN, CollectionType::Run, None)?;
    let stars = s.stars();
    for v in s.visits() {
        for d in 0..9 {
            let image = calexp(s, &stars, &v, d)?;
            let id = DataId::from_pairs([
                ("instrument", DataIdValue::from("Cam")),
                ("visit", DataIdValue::Int(v.id)),
                ("detector", DataIdValue::Int(d as i64)),
            ]);
            butler.put(
                &InMemoryDataset::Other(Box::new(image)),
                "calexp",
                &id,
                CALEXP_RUN,
            )?;
        }
    }
    Ok(butler)
}
