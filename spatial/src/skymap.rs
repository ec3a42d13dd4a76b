//! Skymap geometry: tracts and patches as HEALPix cells, or as a
//! rectangular grid of patches on a tract's tangent plane (gnomonic
//! projection, so straight grid lines are great circles and every patch is
//! an exact convex polygon; neighbouring patches share their edges).

use crate::region::{ConvexPolygon, RegionError};
use crate::vector::UnitVector;

/// The convex polygon through the four corners of HEALPix cell `index` at
/// `level` (nested). Neighbouring cells share corners, so their polygons
/// share edges and tile the sphere.
pub fn healpix_cell_polygon(level: u8, index: u64) -> ConvexPolygon {
    todo!("{level} {index}")
}

/// A gnomonic (TAN) projection about `center`: `(x, y)` in degrees on the
/// tangent plane, x towards increasing RA, y towards the north.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TanProjection {
    pub center: UnitVector,
}

impl TanProjection {
    pub fn new(center: UnitVector) -> Self {
        Self { center }
    }

    /// Tangent-plane coordinates (degrees, i.e. tan(angle) in degrees of
    /// the standard coordinates), or `None` on or behind the horizon.
    pub fn project(&self, p: UnitVector) -> Option<(f64, f64)> {
        todo!("{p:?}")
    }

    pub fn unproject(&self, x: f64, y: f64) -> UnitVector {
        todo!("{x} {y}")
    }
}

/// One tract of a grid skymap: the rectangle between two corners on the
/// tangent plane at their midpoint, cut into `nx × ny` patches.
#[derive(Debug, Clone, PartialEq)]
pub struct GridTract {
    pub projection: TanProjection,
    /// Tangent-plane bounds (degrees): x0 < x1, y0 < y1.
    pub x: (f64, f64),
    pub y: (f64, f64),
    pub nx: u32,
    pub ny: u32,
}

impl GridTract {
    /// From two opposite corners (ra, dec in degrees) and the patch counts.
    pub fn from_corners(
        corner_a: (f64, f64),
        corner_b: (f64, f64),
        nx: u32,
        ny: u32,
    ) -> Result<Self, RegionError> {
        todo!("{corner_a:?} {corner_b:?} {nx} {ny}")
    }

    pub fn tract_polygon(&self) -> ConvexPolygon {
        todo!()
    }

    /// Patch `(i, j)` (`i < nx` along x, `j < ny` along y); patch id is
    /// `j * nx + i`.
    pub fn patch_polygon(&self, i: u32, j: u32) -> ConvexPolygon {
        todo!("{i} {j}")
    }
}
