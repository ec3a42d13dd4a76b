//! Skymaps as dimension records: the `skymap`, `tract` and `patch` records
//! (with regions) of a HEALPix or a grid skymap, ready for
//! [`Registry::insert_dimension_records`](crate::Registry::insert_dimension_records).
//!
//! Owns: turning skymap parameters into records. The geometry is
//! `quanta_spatial::skymap`'s.

use quanta_spatial::skymap::{healpix_cell_polygon, GridTract};
use quanta_spatial::{ConvexPolygon, Region};
use serde_json::{json, Map, Value};

use crate::error::{RegistryError, Result};
use crate::records::RecordSet;

/// At most this many patches per registration: a whole-sky HEALPix skymap
/// at a fine patch level is millions of records, which is rarely meant.
pub const MAX_PATCHES: u64 = 5_000_000;

/// How a skymap divides the sky.
#[derive(Debug, Clone, PartialEq)]
pub enum SkymapKind {
    /// Tracts are the HEALPix (nested) cells of `tract_level`; a tract's
    /// patches are its cells at `patch_level`, numbered by nested index
    /// within the tract. `tracts`: only these tracts (all when `None`).
    Healpix {
        tract_level: u8,
        patch_level: u8,
        tracts: Option<Vec<u64>>,
    },
    /// One tract per entry (ids 0, 1, …): a rectangle on its tangent plane
    /// cut into patches.
    Grid { tracts: Vec<GridTract> },
}

/// The records of skymap `name`.
pub fn skymap_records(name: &str, kind: &SkymapKind) -> Result<RecordSet> {
    match kind {
        SkymapKind::Healpix {
            tract_level,
            patch_level,
            tracts,
        } => healpix_records(name, *tract_level, *patch_level, tracts.as_deref()),
        SkymapKind::Grid { tracts } => Ok(grid_records(name, tracts)),
    }
}

fn bad(msg: String) -> RegistryError {
    RegistryError::Records(format!("skymap: {msg}"))
}

fn healpix_records(
    name: &str,
    tract_level: u8,
    patch_level: u8,
    only: Option<&[u64]>,
) -> Result<RecordSet> {
    if patch_level < tract_level || patch_level > quanta_spatial::HEALPIX_MAX_LEVEL {
        return Err(bad(format!(
            "the patch level ({patch_level}) must be at least the tract level ({tract_level}) and at most {}",
            quanta_spatial::HEALPIX_MAX_LEVEL
        )));
    }
    let n_tracts = 12u64 << (2 * u32::from(tract_level));
    let tracts: Vec<u64> = match only {
        Some(list) => {
            if let Some(t) = list.iter().find(|&&t| t >= n_tracts) {
                return Err(bad(format!(
                    "tract {t} does not exist at HEALPix level {tract_level} (0..{n_tracts})"
                )));
            }
            let mut list = list.to_vec();
            list.sort_unstable();
            list.dedup();
            list
        }
        None => (0..n_tracts).collect(),
    };
    let side = 1u64 << (patch_level - tract_level);
    let per_tract = side * side;
    let n_patches = per_tract.saturating_mul(tracts.len() as u64);
    if n_patches > MAX_PATCHES {
        return Err(bad(format!(
            "{n_patches} patches ({} tracts × {per_tract}) is more than {MAX_PATCHES}; choose a coarser patch level or list --tracts",
            tracts.len()
        )));
    }
    let mut tract_records = Vec::with_capacity(tracts.len());
    let mut patch_records = Vec::with_capacity(n_patches as usize);
    for &t in &tracts {
        tract_records.push(record(json!({
            "skymap": name,
            "id": t,
            "region": polygon_json(healpix_cell_polygon(tract_level, t)),
        })));
        let first = quanta_spatial::healpix_range_at(tract_level, t, patch_level).start;
        for p in 0..per_tract {
            patch_records.push(record(json!({
                "skymap": name,
                "tract": t,
                "id": p,
                "region": polygon_json(healpix_cell_polygon(patch_level, first + p)),
            })));
        }
    }
    Ok(skymap_record_set(
        name,
        n_tracts,
        side,
        side,
        tract_records,
        patch_records,
    ))
}

fn grid_records(name: &str, tracts: &[GridTract]) -> RecordSet {
    let mut tract_records = Vec::with_capacity(tracts.len());
    let mut patch_records = Vec::new();
    for (t, grid) in tracts.iter().enumerate() {
        tract_records.push(record(json!({
            "skymap": name,
            "id": t,
            "region": polygon_json(grid.tract_polygon()),
        })));
        for j in 0..grid.ny {
            for i in 0..grid.nx {
                patch_records.push(record(json!({
                    "skymap": name,
                    "tract": t,
                    "id": j * grid.nx + i,
                    "cell_x": i,
                    "cell_y": j,
                    "region": polygon_json(grid.patch_polygon(i, j)),
                })));
            }
        }
    }
    let nx = tracts.iter().map(|g| g.nx).max().unwrap_or(0);
    let ny = tracts.iter().map(|g| g.ny).max().unwrap_or(0);
    skymap_record_set(
        name,
        tracts.len() as u64,
        nx.into(),
        ny.into(),
        tract_records,
        patch_records,
    )
}

fn skymap_record_set(
    name: &str,
    tract_max: u64,
    patch_nx_max: u64,
    patch_ny_max: u64,
    tracts: Vec<Map<String, Value>>,
    patches: Vec<Map<String, Value>>,
) -> RecordSet {
    let skymap = record(json!({
        "name": name,
        "tract_max": tract_max,
        "patch_nx_max": patch_nx_max,
        "patch_ny_max": patch_ny_max,
    }));
    RecordSet::from([
        ("skymap".to_string(), vec![skymap]),
        ("tract".to_string(), tracts),
        ("patch".to_string(), patches),
    ])
}

fn polygon_json(polygon: ConvexPolygon) -> Value {
    Region::Polygon(polygon).to_json()
}

fn record(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healpix_skymap_has_every_child_cell_of_its_tracts() {
        let records = skymap_records(
            "hpx",
            &SkymapKind::Healpix {
                tract_level: 2,
                patch_level: 4,
                tracts: Some(vec![7, 3, 7]),
            },
        )
        .unwrap();
        assert_eq!(records["tract"].len(), 2);
        assert_eq!(records["patch"].len(), 2 * 16);
        assert_eq!(records["skymap"][0]["tract_max"], json!(192));
        assert_eq!(records["skymap"][0]["patch_nx_max"], json!(4));
        let err = skymap_records(
            "hpx",
            &SkymapKind::Healpix {
                tract_level: 2,
                patch_level: 1,
                tracts: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("patch level (1)"), "{err}");
        let err = skymap_records(
            "hpx",
            &SkymapKind::Healpix {
                tract_level: 1,
                patch_level: 2,
                tracts: Some(vec![48]),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tract 48 does not exist"), "{err}");
    }

    #[test]
    fn a_grid_skymap_numbers_patches_row_by_row() {
        let grid = GridTract::from_corners((359.0, -1.0), (1.0, 1.0), 3, 2).unwrap();
        let records = skymap_records("grid", &SkymapKind::Grid { tracts: vec![grid] }).unwrap();
        let patches = &records["patch"];
        assert_eq!(patches.len(), 6);
        assert_eq!(patches[4]["id"], json!(4));
        assert_eq!(patches[4]["cell_x"], json!(1));
        assert_eq!(patches[4]["cell_y"], json!(1));
    }
}
