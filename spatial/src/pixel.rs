//! HEALPix (nested scheme) helpers over `cdshealpix`.

/// The deepest level a region may be pixelized at (cdshealpix's limit is 29;
/// indices must also fit an SQLite INTEGER).
pub const HEALPIX_MAX_LEVEL: u8 = 24;

/// The cells at `fine_level` inside cell `index` of `level`
/// (`level <= fine_level`), as a half-open range of nested indices: the
/// form in which a `healpix<L> = i` constraint reaches a table indexed at a
/// finer level.
pub fn healpix_range_at(level: u8, index: u64, fine_level: u8) -> std::ops::Range<u64> {
    let shift = 2 * u32::from(fine_level - level);
    (index << shift)..((index + 1) << shift)
}

use crate::geom::{self, CapRef};
use crate::region::{Region, RegionRef};
use crate::vector::UnitVector;

/// The cap of a cell is the circle about its center through its farthest
/// corner, widened: cell edges are curves that may bulge slightly past
/// that circle (checked by the `cell_caps_hold_cell_edges` test).
/// (cdshealpix's `largest_center_to_vertex_distance` would save the
/// corners but debug-asserts on latitudes at zone boundaries.)
const CELL_CAP_MARGIN: f64 = 1.1;

/// Bounding caps wider than this (radians) start from the 12 base cells.
/// (Base cells are about 1 radian wide.)
const WHOLE_SKY_START_RAD: f64 = 0.1;

/// A cap holding HEALPix cell `index` at `depth` entirely.
fn cell_cap(depth: u8, index: u64) -> CapRef {
    let (lon, lat) = cdshealpix::nested::center(depth, index);
    let center = UnitVector::from_lonlat_rad(lon, lat);
    let farthest = cdshealpix::nested::vertices(depth, index)
        .iter()
        .map(|&(lon, lat)| center.chord2(UnitVector::from_lonlat_rad(lon, lat)))
        .fold(0.0, f64::max);
    // chord² = 4 sin²(θ/2)
    let radius = 2.0 * (0.5 * farthest.sqrt()).min(1.0).asin();
    CapRef {
        center,
        radius: radius * CELL_CAP_MARGIN,
    }
}

/// The deepest depth whose cells (about 1.02 / 2^depth radians across)
/// are still wider than a cap of `radius`: its cone coverage is a handful
/// of cells.
fn start_depth(radius: f64, level: u8) -> u8 {
    let ratio = 1.0233 / (2.0 * radius.max(1e-12));
    (ratio.log2().floor().max(0.0) as u8).min(level)
}

/// The coarse cells to refine from: the cell holding the bounding cap's
/// center and its neighbours (cdshealpix), at a depth whose cells are at
/// least 8 times the cap's radius wide, so that the cap cannot reach past
/// the neighbours. (cdshealpix's cone coverage would do, but it
/// debug-asserts on some latitudes at zone boundaries.)
fn starting_cells(bound: CapRef, level: u8) -> (u8, Vec<u64>) {
    if bound.radius > WHOLE_SKY_START_RAD {
        return (0, (0..12).collect());
    }
    let depth = start_depth(bound.radius, level).saturating_sub(2);
    let (lon, lat) = bound.center.to_lonlat_rad();
    let lon = lon.rem_euclid(std::f64::consts::TAU);
    let center_cell = cdshealpix::nested::hash(depth, lon, lat);
    let cells = cdshealpix::nested::neighbours(depth, center_cell, true).values_vec();
    (depth, cells)
}

fn overlaps_cap(region: RegionRef<'_>, cap: CapRef) -> bool {
    region.overlaps(RegionRef::Cap(cap))
}

fn contains_cap(region: RegionRef<'_>, cap: CapRef) -> bool {
    match region {
        RegionRef::Polygon(p) => geom::polygon_contains_cap(p, cap),
        RegionRef::Cap(c) => geom::cap_contains_cap(c, cap),
    }
}

/// Appends the cells at `level` under cell `index` at `depth` whose caps
/// the region overlaps: cells whose cap misses the region are dropped with
/// all their descendants, cells whose cap the region contains are taken
/// whole.
fn refine(region: RegionRef<'_>, depth: u8, index: u64, level: u8, out: &mut Vec<u64>) {
    let cap = cell_cap(depth, index);
    if !overlaps_cap(region, cap) {
        return;
    }
    if depth == level {
        out.push(index);
    } else if contains_cap(region, cap) {
        out.extend(healpix_range_at(depth, index, level));
    } else {
        for child in 0..4 {
            refine(region, depth + 1, (index << 2) | child, level, out);
        }
    }
}

impl Region {
    /// The nested-scheme HEALPix cells at `level` that the region may
    /// touch: a superset of the exact cover (never misses a cell the region
    /// overlaps), sorted and distinct. Levels above [`HEALPIX_MAX_LEVEL`]
    /// are a caller's error and are treated as that level.
    ///
    /// cdshealpix's cone coverage of the bounding cap gives the coarse
    /// cells; each is then refined down to `level` by testing the region
    /// exactly against a cap that holds the cell (cdshealpix's center and
    /// center-to-vertex bound, widened). cdshealpix's own polygon coverage
    /// is not used: it treats cell edges as great-circle arcs and can miss
    /// cells a polygon only grazes.
    pub fn healpix_pixels(&self, level: u8) -> Vec<u64> {
        let level = level.min(HEALPIX_MAX_LEVEL);
        let bound = self.bounding_circle().as_ref();
        let (depth, cells) = starting_cells(bound, level);
        let mut out = Vec::new();
        for cell in cells {
            refine(self.as_ref(), depth, cell, level, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
