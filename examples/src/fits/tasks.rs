//! The FITS pipeline's tasks (`examples/pipelines/fits.yaml`):
//! `examples.fits.Isr` (raw − bias, ÷ flat), `examples.fits.Background`
//! (sky model subtracted), `examples.fits.Detect` (source catalog) and
//! `examples.fits.Summarize` (per exposure, as Json); and
//! `examples.fits.CutoutStats`, which reads only components of an
//! `ExposureF` (`calexp.wcs`, and `calexp.image` with a `bbox` read
//! parameter) and writes their summary as Json; `examples.fits.ScaleExposure`
//! writes an `ExposureF`.

use std::sync::Arc;

use quanta_datastore::InMemoryDataset;
use quanta_runtime::{PipelineTask, TaskContext, TaskError, TaskRegistry};
use serde_json::{json, Map, Value};

use quanta_datastore::ReadParameters;

use super::image::{BBox, Image, SourceCatalog};
use super::measure::{detect_sources, estimate_background, median, BackgroundConfig, DetectConfig};
use super::wcs::TanWcs;

/// The task config as an object, refusing keys the task does not know so
/// that a typo is an error before anything runs.
fn config_object<'a>(
    config: &'a Value,
    known: &[&str],
) -> Result<Option<&'a Map<String, Value>>, TaskError> {
    let obj = match config {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        other => {
            return Err(TaskError::Config(format!(
                "expected an object, got {other}"
            )))
        }
    };
    if let Some(key) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(TaskError::Config(format!(
            "unknown key `{key}` (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(Some(obj))
}

fn config_f64(obj: Option<&Map<String, Value>>, key: &str, default: f64) -> Result<f64, TaskError> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| TaskError::Config(format!("{key}: expected a number, got {v}"))),
    }
}

fn config_usize(
    obj: Option<&Map<String, Value>>,
    key: &str,
    default: usize,
) -> Result<usize, TaskError> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| TaskError::Config(format!("{key}: expected a count, got {v}"))),
    }
}

fn bad_input(connection: &str, detail: impl std::fmt::Display) -> TaskError {
    TaskError::BadInput {
        connection: connection.into(),
        detail: detail.to_string(),
    }
}

fn get_image(ctx: &mut TaskContext<'_>, connection: &str) -> Result<Image, TaskError> {
    let dataset = ctx.get(connection)?;
    let kind = dataset.kind();
    dataset.downcast::<Image>().map(|b| *b).ok_or_else(|| {
        bad_input(
            connection,
            format!("expected an ImageF dataset, got {kind}"),
        )
    })
}

fn put_other<T: std::any::Any + Send + Sync>(
    ctx: &mut TaskContext<'_>,
    connection: &str,
    value: T,
) -> Result<(), TaskError> {
    ctx.put(connection, &InMemoryDataset::Other(Box::new(value)))
}

/// Instrument signature removal: (raw − bias) ÷ flat, with the bias and
/// flat valid at the exposure's time (prerequisites from a CALIBRATION
/// collection).
#[derive(Debug)]
pub struct Isr;

impl PipelineTask for Isr {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let mut image = get_image(ctx, "raw")?;
        let bias = get_image(ctx, "bias")?;
        let flat = get_image(ctx, "flat")?;
        image
            .subtract(&bias)
            .map_err(|e| bad_input("bias", format!("{} − bias: {e}", ctx.data_id())))?;
        image
            .divide_by_flat(&flat)
            .map_err(|e| bad_input("flat", format!("{}: {e}", ctx.data_id())))?;
        image.header.kind = Some("postisr".into());
        put_other(ctx, "postisr", image)
    }
}

/// Sky background: sigma-clipped medians in a grid of cells, interpolated
/// and subtracted. The output keeps the median level in `BGMEDIAN`.
#[derive(Debug)]
pub struct Background {
    config: BackgroundConfig,
}

impl Background {
    fn from_config(config: &Value) -> Result<Self, TaskError> {
        let obj = config_object(config, &["cell_size", "clip_sigma", "clip_iterations"])?;
        let d = BackgroundConfig::default();
        let config = BackgroundConfig {
            cell_size: config_usize(obj, "cell_size", d.cell_size)?,
            clip_sigma: config_f64(obj, "clip_sigma", d.clip_sigma)?,
            clip_iterations: config_usize(obj, "clip_iterations", d.clip_iterations)?,
        };
        config
            .validate()
            .map_err(|e| TaskError::Config(e.to_string()))?;
        Ok(Self { config })
    }
}

impl PipelineTask for Background {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let mut image = get_image(ctx, "postisr")?;
        let bg = estimate_background(&image, &self.config)
            .map_err(|e| bad_input("postisr", format!("{}: {e}", ctx.data_id())))?;
        image
            .subtract(&bg.model)
            .map_err(|e| TaskError::Failed(format!("subtracting the background model: {e}")))?;
        let level = bg.median_level();
        ctx.log(format!(
            "background {}×{} cells, median {level:.2} ADU",
            bg.nx, bg.ny
        ));
        image.header.kind = Some("calexp".into());
        image.header.background = Some(level);
        put_other(ctx, "calexp", image)
    }
}

/// Source detection on the background-subtracted image: threshold at
/// k·σ (robust σ), connected footprints, centroid/flux/peak → catalog.
#[derive(Debug)]
pub struct Detect {
    config: DetectConfig,
}

impl Detect {
    fn from_config(config: &Value) -> Result<Self, TaskError> {
        let obj = config_object(config, &["threshold_sigma", "min_pixels"])?;
        let d = DetectConfig::default();
        let config = DetectConfig {
            threshold_sigma: config_f64(obj, "threshold_sigma", d.threshold_sigma)?,
            min_pixels: config_usize(obj, "min_pixels", d.min_pixels)?,
        };
        config
            .validate()
            .map_err(|e| TaskError::Config(e.to_string()))?;
        Ok(Self { config })
    }
}

impl PipelineTask for Detect {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let image = get_image(ctx, "calexp")?;
        let found = detect_sources(&image, &self.config)
            .map_err(|e| bad_input("calexp", format!("{}: {e}", ctx.data_id())))?;
        ctx.log(format!(
            "{} sources above {:.2} ADU (σ {:.2})",
            found.sources.len(),
            found.threshold,
            found.sigma
        ));
        let mut header = image.header;
        header.kind = Some("sources".into());
        header.sigma = Some(found.sigma);
        header.threshold = Some(found.threshold);
        put_other(
            ctx,
            "src",
            SourceCatalog {
                sources: found.sources,
                header,
            },
        )
    }
}

/// Per exposure: the catalogs of all its detectors → counts (detected and,
/// where the raw carried it, injected), median background and σ, as Json.
#[derive(Debug)]
pub struct Summarize;

impl PipelineTask for Summarize {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let refs = ctx.input_refs("srcs")?.to_vec();
        let catalogs = ctx.get_all("srcs")?;
        let mut rows = Vec::with_capacity(refs.len());
        for (r, dataset) in refs.iter().zip(catalogs) {
            let kind = dataset.kind();
            let catalog = dataset.downcast::<SourceCatalog>().ok_or_else(|| {
                bad_input(
                    "srcs",
                    format!("{}: expected a SourceCatalog, got {kind}", r.data_id),
                )
            })?;
            let detector = r
                .data_id
                .get("detector")
                .and_then(|d| d.as_int())
                .ok_or_else(|| {
                    bad_input("srcs", format!("{} has no integer detector", r.data_id))
                })?;
            rows.push((detector, *catalog));
        }
        rows.sort_by_key(|(d, _)| *d);
        let detected: usize = rows.iter().map(|(_, c)| c.sources.len()).sum();
        // The truth is summed only when every detector carried it.
        let injected: Option<i64> = rows
            .iter()
            .map(|(_, c)| c.header.injected_sources)
            .sum::<Option<i64>>();
        let mut backgrounds: Vec<f64> = rows
            .iter()
            .filter_map(|(_, c)| c.header.background)
            .collect();
        let mut sigmas: Vec<f64> = rows.iter().filter_map(|(_, c)| c.header.sigma).collect();
        let per_detector: Vec<Value> = rows
            .iter()
            .map(|(d, c)| {
                json!({
                    "detector": d,
                    "sources": c.sources.len(),
                    "injected": c.header.injected_sources,
                    "background": c.header.background,
                    "sigma": c.header.sigma,
                })
            })
            .collect();
        ctx.log(format!(
            "{} detectors, {detected} sources of {injected:?} injected",
            rows.len()
        ));
        let summary = json!({
            "exposure": ctx.data_id().get("exposure").and_then(|e| e.as_int()),
            "detectors": rows.len(),
            "sources": detected,
            "injected": injected,
            "median_background": median(&mut backgrounds),
            "median_sigma": median(&mut sigmas),
            "per_detector": per_detector,
        });
        ctx.put_json("summary", &summary)
    }
}

/// Registers the FITS tasks under `examples.fits.*`.
/// Reads the `wcs` input (a `Wcs` component) and the `bbox` cut-out of
/// the `image` input (an `ImageF`, e.g. `calexp.image`) through the task
/// context, and writes `stats` (Json): the cut-out's shape, pixel sum and
/// the WCS's reference values. Config: `bbox` (`x0,y0,x1,y1`).
#[derive(Debug)]
pub struct CutoutStats {
    bbox: String,
}

impl CutoutStats {
    fn from_config(config: &Value) -> Result<Self, TaskError> {
        let obj = config_object(config, &["bbox"])?;
        let bbox = match obj.and_then(|o| o.get("bbox")) {
            Some(Value::String(s)) => s.clone(),
            other => {
                return Err(TaskError::Config(format!(
                    "bbox: expected \"x0,y0,x1,y1\", got {other:?}"
                )))
            }
        };
        BBox::parse(&bbox).map_err(TaskError::Config)?;
        Ok(Self { bbox })
    }
}

impl PipelineTask for CutoutStats {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let wcs = ctx.get("wcs")?;
        let kind = wcs.kind();
        let wcs = wcs
            .downcast::<TanWcs>()
            .ok_or_else(|| bad_input("wcs", format!("expected a Wcs, got {kind}")))?;
        let params = ReadParameters::new().with("bbox", self.bbox.clone());
        let cut = ctx.get_with("image", &params)?;
        let kind = cut.kind();
        let cut = cut
            .downcast::<Image>()
            .ok_or_else(|| bad_input("image", format!("expected an ImageF, got {kind}")))?;
        let sum: f64 = cut.pixels().iter().map(|&p| f64::from(p)).sum();
        ctx.put_json(
            "stats",
            &json!({
                "width": cut.width(),
                "height": cut.height(),
                "sum": sum,
                "crval": [wcs.crval.0, wcs.crval.1],
                "crpix": [wcs.crpix.0, wcs.crpix.1],
            }),
        )
    }
}

/// Multiplies an exposure (`exposure`, an `ExposureF`) by `factor`
/// (image × factor, variance × factor², mask, WCS and metadata kept) and
/// writes it as `scaled`: a task whose output is a composite, written
/// disassembled where the datastore is set to.
#[derive(Debug)]
pub struct ScaleExposure {
    factor: f32,
}

impl ScaleExposure {
    fn from_config(config: &Value) -> Result<Self, TaskError> {
        let obj = config_object(config, &["factor"])?;
        let factor = config_f64(obj, "factor", 1.0)? as f32;
        if !factor.is_finite() {
            return Err(TaskError::Config(format!("factor: {factor} is not finite")));
        }
        Ok(Self { factor })
    }
}

impl PipelineTask for ScaleExposure {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let e = ctx.get("exposure")?;
        let kind = e.kind();
        let mut e = e
            .downcast::<super::Exposure>()
            .ok_or_else(|| bad_input("exposure", format!("expected an ExposureF, got {kind}")))?;
        for p in e.image.pixels_mut() {
            *p *= self.factor;
        }
        for p in e.variance.pixels_mut() {
            *p *= self.factor * self.factor;
        }
        put_other(ctx, "scaled", *e)
    }
}

pub fn register(reg: &mut TaskRegistry) {
    reg.register("examples.fits.ScaleExposure", |c| {
        Ok(Arc::new(ScaleExposure::from_config(c)?) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.fits.CutoutStats", |c| {
        Ok(Arc::new(CutoutStats::from_config(c)?) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.fits.Isr", |c| {
        config_object(c, &[])?;
        Ok(Arc::new(Isr) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.fits.Background", |c| {
        Ok(Arc::new(Background::from_config(c)?) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.fits.Detect", |c| {
        Ok(Arc::new(Detect::from_config(c)?) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.fits.Summarize", |c| {
        config_object(c, &[])?;
        Ok(Arc::new(Summarize) as Arc<dyn PipelineTask>)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_validated_when_tasks_are_made() {
        let mut reg = TaskRegistry::new();
        register(&mut reg);
        let ok = |class: &str, c: Value| reg.create(class, &c).unwrap().is_ok();
        assert!(ok("examples.fits.Isr", json!({})));
        assert!(ok("examples.fits.Isr", Value::Null));
        assert!(!ok("examples.fits.Isr", json!({"typo": 1})));
        assert!(ok(
            "examples.fits.Background",
            json!({"cell_size": 16, "clip_sigma": 2.5})
        ));
        assert!(!ok("examples.fits.Background", json!({"cell_size": 1})));
        assert!(!ok("examples.fits.Background", json!({"cell_size": "x"})));
        assert!(ok("examples.fits.Detect", json!({"threshold_sigma": 4})));
        assert!(!ok("examples.fits.Detect", json!({"threshold_sigma": -1})));
        assert!(!ok("examples.fits.Detect", json!({"min_pixels": 0})));
        assert!(!ok("examples.fits.Summarize", json!([1])));
    }
}
