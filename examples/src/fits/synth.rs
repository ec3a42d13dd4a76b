//! Deterministic synthetic camera data: per detector a master bias (level
//! plus a fixed pattern) and a flat (vignetting plus pixel response); per
//! (exposure, detector) a raw image = bias + flat × (sky + point sources) +
//! Gaussian noise, with the injected sources returned as truth. Everything
//! is a pure function of the [`SimConfig`] (seed included) and the
//! exposure/detector numbers, so tests can regenerate the truth of any
//! image the pipeline processed.

use thiserror::Error;

use super::image::{Image, ImageError};

/// Smallest distance kept between injected sources (pixels): far enough
/// that their footprints above any sane threshold never touch.
pub const MIN_SEPARATION: f64 = 14.0;
/// Injected sources stay this far from the edges (pixels).
pub const EDGE_MARGIN: usize = 10;

/// Why synthetic data could not be made.
#[derive(Debug, Error)]
pub enum SimError {
    #[error(
        "{sources} sources do not fit {width}×{height} pixels at least {MIN_SEPARATION} px \
         apart and {EDGE_MARGIN} px from the edges; use fewer sources or larger images"
    )]
    TooCrowded {
        sources: usize,
        width: usize,
        height: usize,
    },
    #[error("invalid simulation setting {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The parameters of the simulated camera and sky.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub width: usize,
    pub height: usize,
    /// Point sources injected per raw image.
    pub sources_per_image: usize,
    pub seed: u64,
    /// Sky level at the image's low corner (ADU); it rises by 20 % across x
    /// and 10 % across y, so a constant background would be wrong.
    pub sky: f64,
    /// Read noise σ (ADU).
    pub read_noise: f64,
    /// Gaussian PSF σ (pixels).
    pub psf_sigma: f64,
    /// Total source flux is uniform in `[flux_min, flux_max]` (ADU).
    pub flux_min: f64,
    pub flux_max: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            width: 256,
            height: 256,
            sources_per_image: 25,
            seed: 20261126,
            sky: 200.0,
            read_noise: 5.0,
            psf_sigma: 1.5,
            // The faintest source peaks ~280 ADU over a ~15 ADU noise: far
            // above a 5σ threshold, so the truth is unambiguous.
            flux_min: 4000.0,
            flux_max: 20000.0,
        }
    }
}

impl SimConfig {
    fn validate(&self) -> Result<(), SimError> {
        let positive = [
            ("sky", self.sky),
            ("psf_sigma", self.psf_sigma),
            ("flux_min", self.flux_min),
        ];
        for (what, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(SimError::Invalid {
                    what,
                    reason: format!("{v} is not a finite positive number"),
                });
            }
        }
        if !(self.read_noise.is_finite() && self.read_noise >= 0.0) {
            return Err(SimError::Invalid {
                what: "read_noise",
                reason: format!("{} is not finite and ≥ 0", self.read_noise),
            });
        }
        if !(self.flux_max.is_finite() && self.flux_max >= self.flux_min) {
            return Err(SimError::Invalid {
                what: "flux_max",
                reason: format!("{} is below flux_min {}", self.flux_max, self.flux_min),
            });
        }
        Ok(())
    }
}

/// One injected point source (pixel coordinates as in [`Image`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InjectedSource {
    pub x: f64,
    pub y: f64,
    pub flux: f64,
}

/// SplitMix64: tiny, fast, and good enough for simulated noise; its output
/// is fixed by the seed on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
    spare: Option<f64>,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    /// A generator for one purpose of one image, independent of the others.
    fn for_stream(seed: u64, stream: u64, exposure: u64, detector: u64) -> Self {
        let mut g = Self::new(seed);
        for v in [stream, exposure, detector] {
            g.state ^= v.wrapping_mul(0xA076_1D64_78BD_642F);
            g.next_u64();
        }
        g
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller, keeping the second value).
    pub fn gaussian(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        // 1 − u is in (0, 1], so the log is finite.
        let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

const STREAM_BIAS: u64 = 1;
const STREAM_FLAT: u64 = 2;
const STREAM_SOURCES: u64 = 3;
const STREAM_NOISE: u64 = 4;

/// The bias level of a detector (ADU); detectors differ, so using the wrong
/// detector's bias shows.
pub fn bias_level(detector: usize) -> f64 {
    1000.0 + 7.0 * detector as f64
}

/// The master bias of `detector`: a level, a column pattern, a row ramp and
/// a fixed per-pixel offset (as a stack of many biases would show).
pub fn master_bias(cfg: &SimConfig, detector: usize) -> Result<Image, SimError> {
    cfg.validate()?;
    let mut rng = SplitMix64::for_stream(cfg.seed, STREAM_BIAS, 0, detector as u64);
    let level = bias_level(detector);
    let h = cfg.height as f64;
    let mut px = Vec::with_capacity(cfg.width * cfg.height);
    for y in 0..cfg.height {
        for x in 0..cfg.width {
            let columns = 4.0 * (std::f64::consts::TAU * x as f64 / 37.0).sin();
            let ramp = 6.0 * y as f64 / h;
            px.push((level + columns + ramp + 1.5 * rng.gaussian()) as f32);
        }
    }
    let mut image = Image::new(cfg.width, cfg.height, px)?;
    image.header.kind = Some("bias".into());
    image.header.detector = Some(detector as i64);
    Ok(image)
}

/// The master flat of `detector`, normalised to ~1: radial vignetting down
/// to ~0.85 in the corners and a 1 % pixel-to-pixel response.
pub fn master_flat(cfg: &SimConfig, detector: usize) -> Result<Image, SimError> {
    cfg.validate()?;
    let mut rng = SplitMix64::for_stream(cfg.seed, STREAM_FLAT, 0, detector as u64);
    let (cx, cy) = (cfg.width as f64 / 2.0, cfg.height as f64 / 2.0);
    let r2max = cx * cx + cy * cy;
    let mut px = Vec::with_capacity(cfg.width * cfg.height);
    for y in 0..cfg.height {
        for x in 0..cfg.width {
            let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            let vignette = 1.0 - 0.15 * (dx * dx + dy * dy) / r2max;
            let response = 1.0 + 0.01 * rng.gaussian();
            px.push((vignette * response).max(0.5) as f32);
        }
    }
    let mut image = Image::new(cfg.width, cfg.height, px)?;
    image.header.kind = Some("flat".into());
    image.header.detector = Some(detector as i64);
    Ok(image)
}

/// The sky level (ADU) at (x, y) of `exposure`: a per-exposure level with a
/// linear gradient.
pub fn sky_at(cfg: &SimConfig, exposure: usize, x: f64, y: f64) -> f64 {
    let level = cfg.sky * (1.0 + 0.1 * (exposure % 5) as f64);
    level * (1.0 + 0.2 * x / cfg.width as f64 + 0.1 * y / cfg.height as f64)
}

/// The sources injected into (exposure, detector): one per cell of a grid
/// covering the image inside the margins, in a random subset of cells,
/// jittered within the cell so that no two are closer than
/// [`MIN_SEPARATION`].
pub fn injected_sources(
    cfg: &SimConfig,
    exposure: usize,
    detector: usize,
) -> Result<Vec<InjectedSource>, SimError> {
    cfg.validate()?;
    let n = cfg.sources_per_image;
    if n == 0 {
        return Ok(Vec::new());
    }
    let crowded = || SimError::TooCrowded {
        sources: n,
        width: cfg.width,
        height: cfg.height,
    };
    let usable_w = cfg.width.checked_sub(2 * EDGE_MARGIN).ok_or_else(crowded)? as f64;
    let usable_h = cfg
        .height
        .checked_sub(2 * EDGE_MARGIN)
        .ok_or_else(crowded)? as f64;
    // The squarest grid with at least n cells for this aspect ratio.
    let cols = ((n as f64 * usable_w / usable_h.max(1.0)).sqrt().ceil() as usize).max(1);
    let rows = n.div_ceil(cols);
    let (cell_w, cell_h) = (usable_w / cols as f64, usable_h / rows as f64);
    // Jitter of ±cell/4 keeps neighbours at least half a cell apart.
    if cell_w / 2.0 < MIN_SEPARATION || cell_h / 2.0 < MIN_SEPARATION {
        return Err(crowded());
    }
    let mut rng =
        SplitMix64::for_stream(cfg.seed, STREAM_SOURCES, exposure as u64, detector as u64);
    // Fisher–Yates over the cells, keeping the first n.
    let mut cells: Vec<usize> = (0..cols * rows).collect();
    for i in (1..cells.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        cells.swap(i, j);
    }
    let mut out: Vec<InjectedSource> = cells[..n]
        .iter()
        .map(|&c| {
            let (i, j) = (c % cols, c / cols);
            let x = EDGE_MARGIN as f64 + (i as f64 + 0.5 + 0.5 * (rng.uniform() - 0.5)) * cell_w;
            let y = EDGE_MARGIN as f64 + (j as f64 + 0.5 + 0.5 * (rng.uniform() - 0.5)) * cell_h;
            let flux = cfg.flux_min + (cfg.flux_max - cfg.flux_min) * rng.uniform();
            InjectedSource { x, y, flux }
        })
        .collect();
    out.sort_by(|a, b| a.y.total_cmp(&b.y).then(a.x.total_cmp(&b.x)));
    Ok(out)
}

/// Adds a Gaussian PSF of total `flux` at (sx, sy) to `signal`, sampled at
/// pixel centres and normalised over its stamp so the flux is exact.
pub fn add_psf(signal: &mut [f64], width: usize, height: usize, s: &InjectedSource, sigma: f64) {
    let radius = (5.0 * sigma).ceil() as i64;
    let (cx, cy) = (s.x.round() as i64, s.y.round() as i64);
    let x0 = (cx - radius).max(0) as usize;
    let x1 = ((cx + radius).max(0) as usize).min(width - 1);
    let y0 = (cy - radius).max(0) as usize;
    let y1 = ((cy + radius).max(0) as usize).min(height - 1);
    let weight = |x: usize, y: usize| {
        let (dx, dy) = (x as f64 - s.x, y as f64 - s.y);
        (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp()
    };
    let mut total = 0.0;
    for y in y0..=y1 {
        for x in x0..=x1 {
            total += weight(x, y);
        }
    }
    if total <= 0.0 {
        return;
    }
    for y in y0..=y1 {
        for x in x0..=x1 {
            signal[y * width + x] += s.flux * weight(x, y) / total;
        }
    }
}

/// The raw image of (exposure, detector) and the sources injected into it.
/// Noise is Gaussian with the variance of photon noise on the signal (gain
/// 1) plus read noise.
pub fn raw_image(
    cfg: &SimConfig,
    exposure: usize,
    detector: usize,
) -> Result<(Image, Vec<InjectedSource>), SimError> {
    let sources = injected_sources(cfg, exposure, detector)?;
    let bias = master_bias(cfg, detector)?;
    let flat = master_flat(cfg, detector)?;
    let (w, h) = (cfg.width, cfg.height);
    let mut signal = vec![0.0f64; w * h];
    for y in 0..h {
        for x in 0..w {
            signal[y * w + x] = sky_at(cfg, exposure, x as f64, y as f64);
        }
    }
    for s in &sources {
        add_psf(&mut signal, w, h, s, cfg.psf_sigma);
    }
    let mut rng = SplitMix64::for_stream(cfg.seed, STREAM_NOISE, exposure as u64, detector as u64);
    let px: Vec<f32> = signal
        .iter()
        .zip(bias.pixels().iter().zip(flat.pixels()))
        .map(|(s, (b, f))| {
            let electrons = s * f64::from(*f);
            let sigma = (electrons.max(0.0) + cfg.read_noise * cfg.read_noise).sqrt();
            (f64::from(*b) + electrons + sigma * rng.gaussian()) as f32
        })
        .collect();
    let mut image = Image::new(w, h, px)?;
    image.header.kind = Some("raw".into());
    image.header.exposure = Some(exposure as i64);
    image.header.detector = Some(detector as i64);
    image.header.injected_sources = Some(sources.len() as i64);
    Ok((image, sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_roughly_normal() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<f64> = (0..20000).map(|_| a.gaussian()).collect();
        let ys: Vec<f64> = (0..20000).map(|_| b.gaussian()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert_ne!(SplitMix64::new(8).next_u64(), SplitMix64::new(7).next_u64());
    }

    #[test]
    fn sources_are_separated_inside_and_vary_by_image() {
        let cfg = SimConfig::default();
        let s = injected_sources(&cfg, 0, 0).unwrap();
        assert_eq!(s.len(), cfg.sources_per_image);
        for (i, a) in s.iter().enumerate() {
            let m = EDGE_MARGIN as f64;
            assert!(a.x >= m && a.x <= (cfg.width as f64 - m), "{a:?}");
            assert!(a.y >= m && a.y <= (cfg.height as f64 - m), "{a:?}");
            assert!(a.flux >= cfg.flux_min && a.flux <= cfg.flux_max);
            for b in &s[i + 1..] {
                let d = ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
                assert!(d >= MIN_SEPARATION, "{a:?} and {b:?} are {d} px apart");
            }
        }
        assert_ne!(s, injected_sources(&cfg, 1, 0).unwrap());
        assert_eq!(s, injected_sources(&cfg, 0, 0).unwrap());
        let crowded = SimConfig {
            sources_per_image: 400,
            ..cfg
        };
        assert!(matches!(
            injected_sources(&crowded, 0, 0),
            Err(SimError::TooCrowded { .. })
        ));
    }

    #[test]
    fn raw_is_bias_plus_flat_times_sky_plus_noise() {
        let cfg = SimConfig {
            width: 64,
            height: 48,
            sources_per_image: 0,
            ..SimConfig::default()
        };
        let (raw, truth) = raw_image(&cfg, 2, 1).unwrap();
        assert!(truth.is_empty());
        assert_eq!((raw.width(), raw.height()), (64, 48));
        assert_eq!(raw.header.injected_sources, Some(0));
        let bias = master_bias(&cfg, 1).unwrap();
        let flat = master_flat(&cfg, 1).unwrap();
        // (raw − bias)/flat − sky is pure noise: mean ~0, σ ~ sqrt(sky + rn²).
        let mut resid = Vec::new();
        for y in 0..cfg.height {
            for x in 0..cfg.width {
                let v = (raw.get(x, y).unwrap() - bias.get(x, y).unwrap()) as f64
                    / flat.get(x, y).unwrap() as f64;
                resid.push(v - sky_at(&cfg, 2, x as f64, y as f64));
            }
        }
        let n = resid.len() as f64;
        let mean = resid.iter().sum::<f64>() / n;
        let sd = (resid.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        let expected = (sky_at(&cfg, 2, 32.0, 24.0) + 25.0).sqrt();
        assert!(mean.abs() < 1.5, "mean residual {mean}");
        assert!((sd / expected - 1.0).abs() < 0.15, "σ {sd} vs {expected}");
    }
}
