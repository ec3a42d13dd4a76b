//! Skymap geometry: tracts and patches as HEALPix cells, or as a
//! rectangular grid of patches on a tract's tangent plane (gnomonic
//! projection, so straight grid lines are great circles and every patch is
//! an exact convex polygon; neighbouring patches share their edges).

use crate::region::{check_lonlat, ConvexPolygon, RegionError};
use crate::vector::UnitVector;

/// Tangent-plane extents (degrees) below this are no rectangle.
const MIN_EXTENT_DEG: f64 = 1e-9;

fn grid_error(message: String) -> RegionError {
    RegionError::Polygon(format!("grid tract: {message}"))
}

/// The convex polygon through the four corners of HEALPix cell `index` at
/// `level` (nested). Neighbouring cells share corners, so their polygons
/// share edges and tile the sphere.
///
/// Vertices are in cdshealpix's order (south, east, north, west), which is
/// counter-clockwise seen from outside the sphere. `level` is at most 29
/// and `index < 12 * 4^level` (caller's error otherwise, as in cdshealpix).
pub fn healpix_cell_polygon(level: u8, index: u64) -> ConvexPolygon {
    let corners = cdshealpix::nested::vertices(level, index)
        .map(|(lon, lat)| UnitVector::from_lonlat_rad(lon, lat))
        .to_vec();
    // HEALPix cells are convex quadrilaterals with distinct corners
    // (checked for every cell up to level 4 and random cells down to level
    // 24 in the tests), so the full validation is skipped.
    ConvexPolygon::trusted(corners.clone())
        .unwrap_or_else(|| ConvexPolygon::new(corners).expect("HEALPix cells are convex"))
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
        let w = p.dot(self.center);
        if w <= 1e-12 {
            return None;
        }
        let (east, north) = self.axes();
        Some((
            (p.dot(east) / w).to_degrees(),
            (p.dot(north) / w).to_degrees(),
        ))
    }

    /// The point of the sphere at tangent-plane `(x, y)` (degrees).
    pub fn unproject(&self, x: f64, y: f64) -> UnitVector {
        let (east, north) = self.axes();
        let p = self
            .center
            .plus(east.scale(x.to_radians()))
            .plus(north.scale(y.to_radians()));
        p.normalized().unwrap_or(self.center)
    }

    /// Unit vectors along +x (increasing RA) and +y (north) at the center;
    /// at a pole, where east is undefined, +x is towards RA 90°.
    fn axes(&self) -> (UnitVector, UnitVector) {
        let pole = UnitVector {
            x: 0.0,
            y: 0.0,
            z: 1.0,
        };
        let east = pole.cross(self.center).normalized().unwrap_or(UnitVector {
            x: 0.0,
            y: 1.0,
            z: 0.0,
        });
        (east, self.center.cross(east))
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
        let a = check_lonlat("corner 1", corner_a.0, corner_a.1)?;
        let b = check_lonlat("corner 2", corner_b.0, corner_b.1)?;
        if nx == 0 || ny == 0 {
            return Err(grid_error(format!(
                "a tract needs at least 1 x 1 patches, got {nx} x {ny}"
            )));
        }
        let apart = a.angle_to(b).to_degrees();
        if apart >= 90.0 {
            return Err(grid_error(format!(
                "corners {corner_a:?} and {corner_b:?} are {apart}° apart: a grid tract must be smaller than 90° corner to corner"
            )));
        }
        let center = a
            .plus(b)
            .normalized()
            .ok_or_else(|| grid_error("corners are antipodal".into()))?;
        let projection = TanProjection::new(center);
        let (xa, ya) = projection
            .project(a)
            .ok_or_else(|| grid_error("corner behind the tangent plane".into()))?;
        let (xb, yb) = projection
            .project(b)
            .ok_or_else(|| grid_error("corner behind the tangent plane".into()))?;
        let (x, y) = ((xa.min(xb), xa.max(xb)), (ya.min(yb), ya.max(yb)));
        if x.1 - x.0 < MIN_EXTENT_DEG || y.1 - y.0 < MIN_EXTENT_DEG {
            return Err(grid_error(format!(
                "corners {corner_a:?} and {corner_b:?} span no rectangle (tangent-plane width {:.3e}°, height {:.3e}°): give two opposite corners",
                x.1 - x.0,
                y.1 - y.0
            )));
        }
        Ok(Self {
            projection,
            x,
            y,
            nx,
            ny,
        })
    }

    /// The number of patches, `nx * ny`.
    pub fn patch_count(&self) -> u64 {
        u64::from(self.nx) * u64::from(self.ny)
    }

    /// The `(i, j)` of patch `id` (`id < nx * ny`).
    pub fn patch_indices(&self, id: u64) -> (u32, u32) {
        let nx = u64::from(self.nx.max(1));
        ((id % nx) as u32, (id / nx).min(u64::from(u32::MAX)) as u32)
    }

    /// The tract's rectangle.
    pub fn tract_polygon(&self) -> ConvexPolygon {
        self.rectangle(self.x, self.y)
    }

    /// Grid line `i` of `n` between `lo` and `hi`: one formula, so
    /// neighbouring patches get bit-identical shared vertices.
    fn grid_line(lo: f64, hi: f64, i: u32, n: u32) -> f64 {
        if i >= n {
            hi
        } else {
            lo + (hi - lo) * f64::from(i) / f64::from(n)
        }
    }

    /// The polygon of a tangent-plane rectangle (counter-clockwise).
    fn rectangle(&self, x: (f64, f64), y: (f64, f64)) -> ConvexPolygon {
        let corners = [(x.0, y.0), (x.1, y.0), (x.1, y.1), (x.0, y.1)]
            .map(|(x, y)| self.projection.unproject(x, y))
            .to_vec();
        // A non-empty rectangle in front of the tangent point projects to a
        // convex quadrilateral (gnomonic lines are great circles).
        ConvexPolygon::trusted(corners.clone())
            .unwrap_or_else(|| ConvexPolygon::new(corners).expect("grid rectangles are convex"))
    }

    /// Patch `(i, j)` (`i < nx` along x, `j < ny` along y); patch id is
    /// `j * nx + i`. Indices past the grid are clamped to its last patch.
    pub fn patch_polygon(&self, i: u32, j: u32) -> ConvexPolygon {
        let (i, j) = (
            i.min(self.nx.saturating_sub(1)),
            j.min(self.ny.saturating_sub(1)),
        );
        let x = (
            Self::grid_line(self.x.0, self.x.1, i, self.nx),
            Self::grid_line(self.x.0, self.x.1, i + 1, self.nx),
        );
        let y = (
            Self::grid_line(self.y.0, self.y.1, j, self.ny),
            Self::grid_line(self.y.0, self.y.1, j + 1, self.ny),
        );
        self.rectangle(x, y)
    }
}
