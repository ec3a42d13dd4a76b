//! Spherical geometry of quanta: the regions dimension records carry
//! (`visit`, `visit_detector`, `tract`, `patch`), exact overlap tests
//! between them, their HEALPix pixelization (the coarse step of a spatial
//! join, computed by CDS's `cdshealpix`), and the geometry of skymaps
//! (tracts and patches as HEALPix cells or as tangent-plane grids).
//!
//! The meaning follows LSST's `sphgeom`: a polygon is the spherical convex
//! polygon whose vertices are joined by great-circle arcs; regions are
//! closed sets, so regions that only touch (a shared edge or corner) overlap.
//!
//! Owns: geometry, the region JSON and blob encodings, pixelization.
//! Must not: touch SQL, files or the dimension universe (the registry decides
//! which elements carry regions and stores what this crate encodes).

mod encoding;
mod geom;
mod json;
mod pixel;
mod region;
pub mod skymap;
mod vector;

pub use geom::OVERLAP_TOLERANCE_RAD;
pub use pixel::{healpix_range_at, HEALPIX_MAX_LEVEL};
pub use region::{Circle, ConvexPolygon, Region, RegionError};
pub use vector::UnitVector;
