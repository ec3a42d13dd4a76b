//! The measurement algorithms of the FITS pipeline, independent of the
//! task API: robust statistics (median, MAD σ), background estimation
//! (sigma-clipped medians in a grid of cells, bilinearly interpolated) and
//! source detection (threshold at k·σ, 8-connected footprints, centroid,
//! flux and peak per footprint).

use thiserror::Error;

use super::image::{Image, ImageError, Source};

/// MAD → σ for Gaussian noise.
const MAD_TO_SIGMA: f64 = 1.4826;

/// Why a measurement could not be made.
#[derive(Debug, Error, PartialEq)]
pub enum MeasureError {
    #[error("the image has no finite pixel")]
    NoFinitePixels,
    #[error("the robust noise σ of the image is {0}: cannot set a detection threshold")]
    NoNoise(f64),
    #[error("invalid {what}: {reason}")]
    Config { what: &'static str, reason: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The median of `values` (reordered in place); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (lower, mid, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        return Some(mid);
    }
    // Even count: average with the largest of the lower half.
    let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((below + mid) / 2.0)
}

/// Median and MAD-based σ of `values` (reordered in place).
pub fn median_and_sigma(values: &mut [f64]) -> Option<(f64, f64)> {
    let med = median(values)?;
    let mut dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&mut dev)?;
    Some((med, MAD_TO_SIGMA * mad))
}

/// Median of `values` after iteratively dropping those more than
/// `clip`·σ from the median, so sources in a cell do not bias it.
fn clipped_median(mut values: Vec<f64>, clip: f64, iterations: usize) -> Option<f64> {
    let mut med = median(&mut values)?;
    for _ in 0..iterations {
        let (m, sigma) = median_and_sigma(&mut values)?;
        med = m;
        if sigma <= 0.0 {
            break;
        }
        let before = values.len();
        values.retain(|v| (v - m).abs() <= clip * sigma);
        if values.len() == before || values.is_empty() {
            break;
        }
        med = median(&mut values)?;
    }
    Some(med)
}

/// Settings of [`estimate_background`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundConfig {
    /// Cell side (pixels); larger than a source footprint, smaller than the
    /// scale the sky varies on.
    pub cell_size: usize,
    /// Pixels farther than this many σ from a cell's median are dropped.
    pub clip_sigma: f64,
    pub clip_iterations: usize,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            cell_size: 32,
            clip_sigma: 3.0,
            clip_iterations: 5,
        }
    }
}

impl BackgroundConfig {
    pub fn validate(&self) -> Result<(), MeasureError> {
        if self.cell_size < 4 {
            return Err(MeasureError::Config {
                what: "cell_size",
                reason: format!("{} is below 4 pixels", self.cell_size),
            });
        }
        if !(self.clip_sigma.is_finite() && self.clip_sigma > 0.0) {
            return Err(MeasureError::Config {
                what: "clip_sigma",
                reason: format!("{} is not a finite positive number", self.clip_sigma),
            });
        }
        Ok(())
    }
}

/// A background model: one level per cell and the full-resolution model.
#[derive(Debug, Clone)]
pub struct Background {
    /// Cells across and down.
    pub nx: usize,
    pub ny: usize,
    /// Clipped median per cell, row-major.
    pub cells: Vec<f64>,
    /// The model at every pixel.
    pub model: Image,
}

impl Background {
    /// The median of the cell levels: one number for the summary.
    pub fn median_level(&self) -> f64 {
        let mut c = self.cells.clone();
        median(&mut c).unwrap_or(f64::NAN)
    }
}

/// Centres of the cells along one axis of `len` pixels.
fn cell_centres(len: usize, cell: usize) -> Vec<f64> {
    (0..len.div_ceil(cell))
        .map(|i| {
            let start = i * cell;
            let end = ((i + 1) * cell).min(len);
            (start + end) as f64 / 2.0 - 0.5
        })
        .collect()
}

/// For position `p`, the two neighbouring centres and the weight of the
/// second; constant beyond the outer centres.
fn bracket(centres: &[f64], p: f64) -> (usize, usize, f64) {
    let last = centres.len() - 1;
    if p <= centres[0] {
        return (0, 0, 0.0);
    }
    if p >= centres[last] {
        return (last, last, 0.0);
    }
    // centres are increasing, and p is strictly inside them.
    let i = centres.partition_point(|c| *c <= p) - 1;
    let t = (p - centres[i]) / (centres[i + 1] - centres[i]);
    (i, i + 1, t)
}

/// Estimates the sky: the sigma-clipped median of each cell, bilinearly
/// interpolated between cell centres. Non-finite pixels are ignored; a
/// cell without any takes the median of the other cells.
pub fn estimate_background(
    image: &Image,
    cfg: &BackgroundConfig,
) -> Result<Background, MeasureError> {
    cfg.validate()?;
    let (w, h) = (image.width(), image.height());
    let xs = cell_centres(w, cfg.cell_size);
    let ys = cell_centres(h, cfg.cell_size);
    let (nx, ny) = (xs.len(), ys.len());
    let mut cells: Vec<Option<f64>> = Vec::with_capacity(nx * ny);
    for j in 0..ny {
        for i in 0..nx {
            let mut values = Vec::with_capacity(cfg.cell_size * cfg.cell_size);
            for y in j * cfg.cell_size..((j + 1) * cfg.cell_size).min(h) {
                let row = &image.pixels()[y * w..(y + 1) * w];
                for v in &row[i * cfg.cell_size..((i + 1) * cfg.cell_size).min(w)] {
                    if v.is_finite() {
                        values.push(f64::from(*v));
                    }
                }
            }
            cells.push(clipped_median(values, cfg.clip_sigma, cfg.clip_iterations));
        }
    }
    let mut known: Vec<f64> = cells.iter().flatten().copied().collect();
    let fallback = median(&mut known).ok_or(MeasureError::NoFinitePixels)?;
    let cells: Vec<f64> = cells.into_iter().map(|c| c.unwrap_or(fallback)).collect();
    let mut model = Vec::with_capacity(w * h);
    let xb: Vec<_> = (0..w).map(|x| bracket(&xs, x as f64)).collect();
    for y in 0..h {
        let (j0, j1, ty) = bracket(&ys, y as f64);
        for &(i0, i1, tx) in &xb {
            let top = cells[j0 * nx + i0] * (1.0 - tx) + cells[j0 * nx + i1] * tx;
            let bottom = cells[j1 * nx + i0] * (1.0 - tx) + cells[j1 * nx + i1] * tx;
            model.push((top * (1.0 - ty) + bottom * ty) as f32);
        }
    }
    Ok(Background {
        nx,
        ny,
        cells,
        model: Image::new(w, h, model)?,
    })
}

/// Settings of [`detect_sources`].
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    /// Threshold in units of the image's robust σ.
    pub threshold_sigma: f64,
    /// Footprints with fewer pixels are dropped as noise.
    pub min_pixels: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            threshold_sigma: 5.0,
            min_pixels: 5,
        }
    }
}

impl DetectConfig {
    pub fn validate(&self) -> Result<(), MeasureError> {
        if !(self.threshold_sigma.is_finite() && self.threshold_sigma > 0.0) {
            return Err(MeasureError::Config {
                what: "threshold_sigma",
                reason: format!("{} is not a finite positive number", self.threshold_sigma),
            });
        }
        if self.min_pixels == 0 {
            return Err(MeasureError::Config {
                what: "min_pixels",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// What detection found and the numbers it used.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub sources: Vec<Source>,
    /// Median of the image (≈ 0 on a background-subtracted image).
    pub level: f64,
    /// Robust σ of the image (MAD).
    pub sigma: f64,
    /// Absolute threshold: level + k·σ.
    pub threshold: f64,
}

/// Detects sources on a background-subtracted image: pixels above
/// median + k·σ (σ from the MAD, which the few source pixels barely move),
/// grouped into 8-connected footprints of at least `min_pixels`. Per
/// footprint: the centroid weighted by the pixels' height above the median,
/// the flux (sum of pixel values) and the peak. Sources come in the order
/// of their first pixel, row by row.
pub fn detect_sources(image: &Image, cfg: &DetectConfig) -> Result<Detection, MeasureError> {
    cfg.validate()?;
    let mut finite: Vec<f64> = image
        .pixels()
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| f64::from(*v))
        .collect();
    let (level, sigma) = median_and_sigma(&mut finite).ok_or(MeasureError::NoFinitePixels)?;
    drop(finite);
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(MeasureError::NoNoise(sigma));
    }
    let threshold = level + cfg.threshold_sigma * sigma;
    let (w, h) = (image.width(), image.height());
    let px = image.pixels();
    // NaN compares false, so non-finite pixels are never part of a source.
    let above: Vec<bool> = px.iter().map(|v| f64::from(*v) > threshold).collect();
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    let mut sources = Vec::new();
    for start in 0..w * h {
        if !above[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut npix, mut flux, mut peak) = (0i64, 0.0f64, f64::NEG_INFINITY);
        let (mut wsum, mut wx, mut wy) = (0.0f64, 0.0f64, 0.0f64);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let v = f64::from(px[i]);
            npix += 1;
            flux += v;
            peak = peak.max(v);
            // Above threshold > level, so the weight is positive.
            let weight = v - level;
            wsum += weight;
            wx += weight * x as f64;
            wy += weight * y as f64;
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let n = ny * w + nx;
                    if above[n] && !seen[n] {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
        }
        if npix as usize >= cfg.min_pixels && wsum > 0.0 {
            sources.push(Source {
                x: wx / wsum,
                y: wy / wsum,
                flux,
                peak,
                npix,
            });
        }
    }
    Ok(Detection {
        sources,
        level,
        sigma,
        threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fits::synth::{master_bias, master_flat, raw_image, sky_at, SimConfig};

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        let (m, s) = median_and_sigma(&mut [1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert_eq!(m, 3.0);
        assert!((s - MAD_TO_SIGMA).abs() < 1e-12, "{s}");
    }

    #[test]
    fn background_follows_a_gradient_and_ignores_sources() {
        // A plane plus one very bright block: the model must follow the plane.
        let (w, h) = (96, 64);
        let plane = |x: usize, y: usize| 100.0 + 0.5 * x as f64 + 0.25 * y as f64;
        let mut px = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let bump = if (40..44).contains(&x) && (30..34).contains(&y) {
                    5000.0
                } else {
                    0.0
                };
                // A small deterministic ripple so the MAD is not zero.
                let ripple = if (x + y) % 2 == 0 { 1.0 } else { -1.0 };
                px.push((plane(x, y) + bump + ripple) as f32);
            }
        }
        let image = Image::new(w, h, px).unwrap();
        let bg = estimate_background(&image, &BackgroundConfig::default()).unwrap();
        assert_eq!((bg.nx, bg.ny), (3, 2));
        for (x, y) in [(16, 16), (48, 32), (42, 31), (79, 47)] {
            let got = f64::from(bg.model.get(x, y).unwrap());
            assert!(
                (got - plane(x, y)).abs() < 1.5,
                "({x}, {y}): model {got}, plane {}",
                plane(x, y)
            );
        }
        let bad = BackgroundConfig {
            cell_size: 2,
            ..Default::default()
        };
        assert!(estimate_background(&image, &bad).is_err());
        let nan = Image::filled(8, 8, f32::NAN).unwrap();
        assert_eq!(
            estimate_background(&nan, &BackgroundConfig::default()).unwrap_err(),
            MeasureError::NoFinitePixels
        );
    }

    #[test]
    fn detection_finds_every_injected_source_near_its_position() {
        // The whole chain on one synthetic image, outside the task API.
        let cfg = SimConfig {
            sources_per_image: 30,
            ..SimConfig::default()
        };
        let (exposure, detector) = (1, 2);
        let (mut image, truth) = raw_image(&cfg, exposure, detector).unwrap();
        image
            .subtract(&master_bias(&cfg, detector).unwrap())
            .unwrap();
        image
            .divide_by_flat(&master_flat(&cfg, detector).unwrap())
            .unwrap();
        let bg = estimate_background(&image, &BackgroundConfig::default()).unwrap();
        // The model recovers the simulated sky to within a few ADU.
        for (x, y) in [(5, 5), (128, 128), (250, 200)] {
            let got = f64::from(bg.model.get(x, y).unwrap());
            let sky = sky_at(&cfg, exposure, x as f64, y as f64);
            assert!((got - sky).abs() < 5.0, "({x}, {y}): {got} vs sky {sky}");
        }
        image.subtract(&bg.model).unwrap();
        let found = detect_sources(&image, &DetectConfig::default()).unwrap();
        let expected_sigma = (sky_at(&cfg, exposure, 128.0, 128.0) + 25.0).sqrt();
        assert!(
            (found.sigma / expected_sigma - 1.0).abs() < 0.2,
            "σ {} vs ~{expected_sigma}",
            found.sigma
        );
        assert_eq!(found.sources.len(), truth.len(), "{:?}", found.sources);
        for t in &truth {
            let nearest = found
                .sources
                .iter()
                .map(|s| ((s.x - t.x).hypot(s.y - t.y), s))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap();
            assert!(nearest.0 < 1.0, "{t:?}: nearest detection {:?}", nearest);
            // Isophotal flux misses the wings below threshold, but most of
            // the light is there.
            let ratio = nearest.1.flux / t.flux;
            assert!((0.6..1.1).contains(&ratio), "{t:?}: flux ratio {ratio}");
        }
    }

    #[test]
    fn pure_noise_has_no_detections_and_constant_images_are_refused() {
        let cfg = SimConfig {
            sources_per_image: 0,
            ..SimConfig::default()
        };
        let (mut image, _) = raw_image(&cfg, 0, 0).unwrap();
        image.subtract(&master_bias(&cfg, 0).unwrap()).unwrap();
        image
            .divide_by_flat(&master_flat(&cfg, 0).unwrap())
            .unwrap();
        let bg = estimate_background(&image, &BackgroundConfig::default()).unwrap();
        image.subtract(&bg.model).unwrap();
        let found = detect_sources(&image, &DetectConfig::default()).unwrap();
        assert!(found.sources.is_empty(), "{:?}", found.sources);
        // A 2-pixel threshold finds plenty of noise: the threshold matters.
        let low = DetectConfig {
            threshold_sigma: 2.0,
            min_pixels: 1,
        };
        assert!(detect_sources(&image, &low).unwrap().sources.len() > 10);
        let flat = Image::filled(16, 16, 3.0).unwrap();
        assert_eq!(
            detect_sources(&flat, &DetectConfig::default()).unwrap_err(),
            MeasureError::NoNoise(0.0)
        );
    }
}
