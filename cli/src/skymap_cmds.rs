//! `quanta skymap register`: a skymap's skymap, tract and patch records,
//! with regions, from its parameters (`quanta_registry::skymap`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use quanta_registry::skymap::{skymap_records, SkymapKind};
use quanta_spatial::skymap::GridTract;

#[derive(Subcommand)]
pub enum SkymapCommand {
    /// Register a skymap: insert its skymap, tract and patch records (all or nothing).
    Register(RegisterArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Tracts and patches are HEALPix (nested) cells.
    Healpix,
    /// Each tract is a rectangle on its tangent plane cut into patches.
    Grid,
}

#[derive(Args)]
pub struct RegisterArgs {
    repo: PathBuf,
    /// The skymap's name.
    name: String,
    #[arg(long, value_enum)]
    kind: Kind,
    /// healpix: the HEALPix level of tracts.
    #[arg(long)]
    tract_level: Option<u8>,
    /// healpix: the HEALPix level of patches (at least the tract level).
    #[arg(long)]
    patch_level: Option<u8>,
    /// healpix: register only these tracts (nested indices at the tract level).
    #[arg(long, value_delimiter = ',')]
    tracts: Vec<u64>,
    /// grid: a tract's opposite corners `RA0,DEC0,RA1,DEC1` (degrees); repeat for more tracts (ids 0, 1, …).
    #[arg(long, allow_negative_numbers = true)]
    corners: Vec<String>,
    /// grid: patches per tract, `NXxNY`.
    #[arg(long)]
    patches: Option<String>,
}

pub fn skymap(cmd: SkymapCommand) -> Result<ExitCode> {
    let SkymapCommand::Register(a) = cmd;
    let kind = match a.kind {
        Kind::Healpix => healpix_kind(&a)?,
        Kind::Grid => grid_kind(&a)?,
    };
    let records = skymap_records(&a.name, &kind)?;
    let mut butler = crate::plugins::open_butler(&a.repo)?;
    let n = butler
        .registry_mut()
        .insert_dimension_records(&records)
        .with_context(|| format!("registering skymap `{}`", a.name))?;
    println!(
        "registered skymap `{}`: {} tracts, {} patches ({n} records)",
        a.name,
        records["tract"].len(),
        records["patch"].len()
    );
    Ok(ExitCode::SUCCESS)
}

fn healpix_kind(a: &RegisterArgs) -> Result<SkymapKind> {
    if !a.corners.is_empty() || a.patches.is_some() {
        bail!("--corners and --patches are for --kind grid");
    }
    let (Some(tract_level), Some(patch_level)) = (a.tract_level, a.patch_level) else {
        bail!("--kind healpix needs --tract-level and --patch-level");
    };
    Ok(SkymapKind::Healpix {
        tract_level,
        patch_level,
        tracts: (!a.tracts.is_empty()).then(|| a.tracts.clone()),
    })
}

fn grid_kind(a: &RegisterArgs) -> Result<SkymapKind> {
    if a.tract_level.is_some() || a.patch_level.is_some() || !a.tracts.is_empty() {
        bail!("--tract-level, --patch-level and --tracts are for --kind healpix");
    }
    if a.corners.is_empty() {
        bail!("--kind grid needs --corners RA0,DEC0,RA1,DEC1 (once per tract)");
    }
    let patches = a.patches.as_deref().unwrap_or("1x1");
    let (nx, ny) = patches
        .split_once(['x', 'X'])
        .and_then(|(x, y)| Some((x.trim().parse::<u32>().ok()?, y.trim().parse::<u32>().ok()?)))
        .with_context(|| format!("--patches `{patches}`: expected NXxNY, e.g. 4x4"))?;
    let tracts = a
        .corners
        .iter()
        .enumerate()
        .map(|(t, text)| {
            let numbers: Vec<f64> = text
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .ok()
                .filter(|v: &Vec<f64>| v.len() == 4)
                .with_context(|| {
                    format!("--corners `{text}` (tract {t}): expected RA0,DEC0,RA1,DEC1 in degrees")
                })?;
            GridTract::from_corners((numbers[0], numbers[1]), (numbers[2], numbers[3]), nx, ny)
                .with_context(|| format!("--corners `{text}` (tract {t})"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SkymapKind::Grid { tracts })
}
