//! HEALPix (nested scheme) helpers over `cdshealpix`.

/// The deepest level a region may be pixelized at (cdshealpix's limit is 29;
/// indices must also fit an SQLite INTEGER).
pub const HEALPIX_MAX_LEVEL: u8 = 24;

/// The cells at `fine_level` inside cell `index` of `level`
/// (`level <= fine_level`), as a half-open range of nested indices: the
/// form in which a `healpix<L> = i` constraint reaches a table indexed at a
/// finer level.
pub fn healpix_range_at(level: u8, index: u64, fine_level: u8) -> std::ops::Range<u64> {
    // A `fine_level` coarser than `level` (a caller's mistake) gives the cell itself.
    let shift = 2 * u32::from(fine_level.saturating_sub(level));
    (index << shift)..((index + 1) << shift)
}

use crate::geom::{self, CapRef, OVERLAP_TOLERANCE_RAD};
use crate::region::{Region, RegionRef};
use crate::vector::UnitVector;
use std::f64::consts::FRAC_PI_2;

/// The cap of a cell is a circle about its center with one radius per
/// depth: cdshealpix's bound on the center-to-farthest-vertex distance,
/// maximized over the sphere, widened because cell edges are curves that
/// may bulge slightly past the circle through the vertices (checked by the
/// `cell_caps_hold_cells` test). One radius per depth saves computing the
/// corners of every cell visited.
const CELL_CAP_MARGIN: f64 = 1.1;

/// [`cell_cap`]'s radius at each depth (radians).
fn cell_cap_radius(depth: u8) -> f64 {
    static RADII: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    RADII.get_or_init(|| (0..=29).map(largest_cell_radius).collect())[usize::from(depth)]
}

/// The largest center-to-vertex distance at `depth` over the sphere,
/// sampled inside each of cdshealpix's zones (its function debug-asserts
/// exactly on zone boundaries) and widened by [`CELL_CAP_MARGIN`].
fn largest_cell_radius(depth: u8) -> f64 {
    let mut largest: f64 = 0.0;
    for i in 1..90 {
        let lat = (f64::from(i) - 0.5).to_radians();
        for j in 0..=8 {
            let lon = f64::from(j) * std::f64::consts::FRAC_PI_8 / 2.0;
            largest = largest.max(cdshealpix::largest_center_to_vertex_distance(
                depth, lon, lat,
            ));
        }
    }
    largest * CELL_CAP_MARGIN
}

/// A cap holding HEALPix cell `index` at `depth` entirely.
fn cell_cap(depth: u8, index: u64) -> CapRef {
    let (lon, lat) = cdshealpix::nested::center(depth, index);
    CapRef {
        center: UnitVector::from_lonlat_rad(lon, lat),
        radius: cell_cap_radius(depth),
    }
}

/// [`tight_cell_cap`]'s widening of the farthest vertex's distance: cell
/// edges are curves whose points may lie slightly farther from the center
/// than the vertices (checked by the `cell_caps_hold_cells` test).
const TIGHT_CAP_MARGIN: f64 = 1.02;

/// The cap of cell `index` at `depth` from its own vertices: tighter than
/// [`cell_cap`] (whose one radius per depth fits the largest cell of the
/// sphere) at the cost of computing the four vertices.
fn tight_cell_cap(depth: u8, index: u64) -> CapRef {
    let (lon, lat) = cdshealpix::nested::center(depth, index);
    let center = UnitVector::from_lonlat_rad(lon, lat);
    let farthest = cdshealpix::nested::vertices(depth, index)
        .iter()
        .map(|&(lon, lat)| center.angle_to(UnitVector::from_lonlat_rad(lon, lat)))
        .fold(0.0, f64::max);
    CapRef {
        center,
        radius: farthest * TIGHT_CAP_MARGIN,
    }
}

/// Bounding caps wider than this (radians) start from the 12 base cells.
/// (Base cells are about 1 radian wide.)
const WHOLE_SKY_START_RAD: f64 = 0.1;

/// The deepest depth whose cells (about 1.02 / 2^depth radians across)
/// are still wider than a cap of `radius`: its cone coverage is a handful
/// of cells.
fn start_depth(radius: f64, level: u8) -> u8 {
    let ratio = 1.0233 / (2.0 * radius.max(1e-12));
    (ratio.log2().floor().max(0.0) as u8).min(level)
}

/// The coarse cells to refine from: the cell holding the bounding cap's
/// center and its neighbours (cdshealpix), at a depth whose cells are at
/// least 4 times the cap's radius wide (HEALPix cells are at least about
/// half their nominal size wide), so that the cap cannot reach past
/// the neighbours. (cdshealpix's cone coverage would do, but it
/// debug-asserts on some latitudes at zone boundaries.)
fn starting_cells(bound: CapRef, level: u8) -> (u8, Vec<u64>) {
    if bound.radius > WHOLE_SKY_START_RAD {
        return (0, (0..12).collect());
    }
    let depth = start_depth(bound.radius, level).saturating_sub(1);
    let (lon, lat) = bound.center.to_lonlat_rad();
    let lon = lon.rem_euclid(std::f64::consts::TAU);
    let center_cell = cdshealpix::nested::hash(depth, lon, lat);
    let cells = cdshealpix::nested::neighbours(depth, center_cell, true).values_vec();
    (depth, cells)
}

/// Whether the region may overlap the cap: exact for circles; for
/// polygons, whether the cap reaches into every edge's half-sphere, which
/// is implied by a real overlap (so the cover stays a superset) and costs
/// one dot product per edge; it only admits a few extra cells off corners.
fn overlaps_cap(region: RegionRef<'_>, cap: CapRef) -> bool {
    match region {
        RegionRef::Polygon(p) => {
            let slack = -(cap.radius + OVERLAP_TOLERANCE_RAD).min(FRAC_PI_2).sin();
            p.normals.iter().all(|n| n.dot(cap.center) >= slack)
        }
        RegionRef::Cap(_) => region.overlaps(RegionRef::Cap(cap)),
    }
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
        // The last test decides the row the index keeps: the cell's own
        // cap, tested exactly (no corner slack for polygons). About half
        // the cells the shared cap admits around a detector go here.
        if region.overlaps(RegionRef::Cap(tight_cell_cap(depth, index))) {
            out.push(index);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use cdshealpix::compass_point::Cardinal;

    /// Every point of a cell's boundary (sampled along its curved edges)
    /// lies in both its caps, for every cell up to level 5 and a sample
    /// deeper.
    #[test]
    fn cell_caps_hold_cells() {
        let mut cells: Vec<(u8, u64)> = (0..=5u8)
            .flat_map(|d| (0..12 * 4u64.pow(u32::from(d))).map(move |i| (d, i)))
            .collect();
        for d in [8u8, 12, 16, 20, 24] {
            let n = 12 * 4u64.pow(u32::from(d));
            cells.extend((0..2000u64).map(|k| (d, k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n)));
        }
        for (depth, index) in cells {
            let edge =
                cdshealpix::nested::path_along_cell_edge(depth, index, &Cardinal::S, true, 16);
            for cap in [cell_cap(depth, index), tight_cell_cap(depth, index)] {
                for &(lon, lat) in edge.iter() {
                    let p = UnitVector::from_lonlat_rad(lon, lat);
                    assert!(
                        geom::cap_contains(cap, p, 0.0),
                        "cell {depth}/{index}: boundary point outside its cap"
                    );
                }
            }
        }
    }
}
