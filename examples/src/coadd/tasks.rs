//! `examples.coadd.MakeWarp` and `examples.coadd.AssembleCoadd`.

use std::sync::Arc;

use quanta_datastore::InMemoryDataset;
use quanta_runtime::{PipelineTask, TaskContext, TaskError, TaskRegistry};
use quanta_spatial::UnitVector;
use serde_json::Value;

use super::warp::{patch_grid, resample, stack};
use crate::fits::{Image, TanWcs};

fn bad_input(connection: &str, detail: impl std::fmt::Display) -> TaskError {
    TaskError::BadInput {
        connection: connection.into(),
        detail: detail.to_string(),
    }
}

/// The vertices of a `{"polygon": [[ra, dec], ...]}` region.
fn polygon_vertices(region: &Value) -> Result<Vec<UnitVector>, String> {
    let list = region
        .get("polygon")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("expected a polygon region, got {region}"))?;
    list.iter()
        .map(|p| match p.as_array().map(|a| a.as_slice()) {
            Some([ra, dec]) => match (ra.as_f64(), dec.as_f64()) {
                (Some(ra), Some(dec)) => Ok(UnitVector::from_lonlat_deg(ra, dec)),
                _ => Err(format!("vertex {p} is not [ra, dec]")),
            },
            _ => Err(format!("vertex {p} is not [ra, dec]")),
        })
        .collect()
}

fn images(ctx: &mut TaskContext<'_>, connection: &str) -> Result<Vec<Image>, TaskError> {
    let refs = ctx.input_refs(connection)?.to_vec();
    let datasets = ctx.get_all(connection)?;
    refs.iter()
        .zip(datasets)
        .map(|(r, d)| {
            let kind = d.kind();
            d.downcast::<Image>().map(|b| *b).ok_or_else(|| {
                bad_input(
                    connection,
                    format!("{}: expected ImageF, got {kind}", r.data_id),
                )
            })
        })
        .collect()
}

fn wcs_of(image: &Image, connection: &str) -> Result<TanWcs, TaskError> {
    image
        .header
        .wcs
        .ok_or_else(|| bad_input(connection, "an input image has no WCS in its header"))
}

/// Resamples the visit's calexps that overlap the patch onto the patch's
/// grid (TAN about the patch centre, `pixel_scale_arcsec` per pixel).
#[derive(Debug)]
pub struct MakeWarp {
    scale_deg: f64,
}

impl PipelineTask for MakeWarp {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let record = ctx
            .dimension_record("patch")?
            .ok_or_else(|| TaskError::Failed(format!("no patch record for {}", ctx.data_id())))?;
        let region = record.get("region").cloned().unwrap_or(Value::Null);
        let vertices = polygon_vertices(&region)
            .map_err(|e| TaskError::Failed(format!("patch of {}: {e}", ctx.data_id())))?;
        let (grid, nx, ny) = patch_grid(&vertices, self.scale_deg)
            .map_err(|e| TaskError::Failed(format!("patch grid: {e}")))?;
        let calexps = images(ctx, "calexps")?;
        let mut inputs = Vec::with_capacity(calexps.len());
        for c in &calexps {
            inputs.push((c, wcs_of(c, "calexps")?));
        }
        let mut warp = resample(&inputs, &grid, nx, ny)
            .map_err(|e| TaskError::Failed(format!("resampling: {e}")))?;
        let covered = warp.pixels().iter().filter(|v| v.is_finite()).count();
        ctx.log(format!(
            "{} calexps → {nx}×{ny} warp, {covered} pixels covered",
            calexps.len()
        ));
        let sigmas: Vec<f64> = calexps.iter().filter_map(|c| c.header.sigma).collect();
        warp.header.kind = Some("warp".into());
        warp.header.visit = calexps.first().and_then(|c| c.header.visit);
        warp.header.sigma =
            (!sigmas.is_empty()).then(|| sigmas.iter().sum::<f64>() / sigmas.len() as f64);
        warp.header.wcs = Some(grid);
        ctx.put("warp", &InMemoryDataset::Other(Box::new(warp)))
    }
}

/// Inverse-variance weighted mean of a patch's warps in one band.
#[derive(Debug)]
pub struct AssembleCoadd;

impl PipelineTask for AssembleCoadd {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let warps = images(ctx, "warps")?;
        let first_wcs = match warps.first() {
            Some(w) => wcs_of(w, "warps")?,
            None => return Err(bad_input("warps", "no warps")),
        };
        let mut weighted = Vec::with_capacity(warps.len());
        for w in &warps {
            if wcs_of(w, "warps")? != first_wcs {
                return Err(bad_input("warps", "the warps are on different grids"));
            }
            let sigma = w
                .header
                .sigma
                .filter(|s| s.is_finite() && *s > 0.0)
                .unwrap_or(1.0);
            weighted.push((w, sigma));
        }
        let mut coadd = stack(&weighted).map_err(|e| bad_input("warps", e))?;
        let inv: f64 = weighted.iter().map(|(_, s)| 1.0 / (s * s)).sum();
        ctx.log(format!("combined {} warps", warps.len()));
        coadd.header.kind = Some("coadd".into());
        coadd.header.combined = Some(warps.len() as i64);
        coadd.header.sigma = Some(1.0 / inv.sqrt());
        coadd.header.wcs = Some(first_wcs);
        ctx.put("coadd", &InMemoryDataset::Other(Box::new(coadd)))
    }
}

fn scale_from_config(config: &Value) -> Result<f64, TaskError> {
    let obj = match config {
        Value::Null => return Ok(2.0 / 3600.0),
        Value::Object(o) => o,
        other => {
            return Err(TaskError::Config(format!(
                "expected an object, got {other}"
            )))
        }
    };
    if let Some(k) = obj.keys().find(|k| *k != "pixel_scale_arcsec") {
        return Err(TaskError::Config(format!(
            "unknown key `{k}` (known: pixel_scale_arcsec)"
        )));
    }
    let arcsec = match obj.get("pixel_scale_arcsec") {
        None => 2.0,
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| {
                TaskError::Config(format!(
                    "pixel_scale_arcsec: expected a positive number, got {v}"
                ))
            })?,
    };
    Ok(arcsec / 3600.0)
}

/// Registers `examples.coadd.MakeWarp` and `examples.coadd.AssembleCoadd`.
pub fn register(reg: &mut TaskRegistry) {
    reg.register("examples.coadd.MakeWarp", |c| {
        Ok(Arc::new(MakeWarp {
            scale_deg: scale_from_config(c)?,
        }) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.coadd.AssembleCoadd", |c| {
        match c {
            Value::Null => {}
            Value::Object(o) if o.is_empty() => {}
            other => return Err(TaskError::Config(format!("takes no config, got {other}"))),
        }
        Ok(Arc::new(AssembleCoadd) as Arc<dyn PipelineTask>)
    });
}
