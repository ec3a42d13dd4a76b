//! Regions: convex spherical polygons and circles, their JSON and blob
//! encodings, validation and exact overlap tests.

use crate::vector::UnitVector;

/// Why a region was refused. The registry prefixes it with the record's
/// element and key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    /// The JSON is not `{"polygon": [[ra, dec], ...]}` or
    /// `{"circle": {"center": [ra, dec], "radius": deg}}`; the text says what.
    #[error("{0}")]
    Json(String),
    /// A coordinate that is NaN, infinite, or out of range (|dec| > 90).
    #[error("{0}")]
    Coordinate(String),
    /// Fewer than 3 distinct vertices, collinear or repeated vertices, a
    /// polygon that is not convex (reflex vertex or self-intersection), or
    /// one larger than a hemisphere.
    #[error("{0}")]
    Polygon(String),
    /// A radius that is negative, NaN, or 180° or more.
    #[error("{0}")]
    Circle(String),
    /// A stored blob that does not decode (damaged registry).
    #[error("damaged region encoding: {0}")]
    Encoding(String),
}

/// A convex spherical polygon: vertices joined by great-circle arcs,
/// smaller than a hemisphere. Vertices are kept in the order given (so the
/// JSON printed back is the JSON read); either orientation is accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvexPolygon {
    vertices: Vec<UnitVector>,
}

/// A spherical cap: the points within `radius_deg` of `center`
/// (a radius of 0 is a point).
#[derive(Debug, Clone, PartialEq)]
pub struct Circle {
    pub center: UnitVector,
    pub radius_deg: f64,
}

/// A region of the sky.
#[derive(Debug, Clone, PartialEq)]
pub enum Region {
    Polygon(ConvexPolygon),
    Circle(Circle),
}

impl ConvexPolygon {
    /// Validates and builds a polygon from vertices (degrees).
    pub fn from_lonlat_deg(vertices: &[(f64, f64)]) -> Result<Self, RegionError> {
        todo!("{vertices:?}")
    }

    /// Validates and builds a polygon from unit vectors.
    pub fn new(vertices: Vec<UnitVector>) -> Result<Self, RegionError> {
        todo!("{vertices:?}")
    }

    pub fn vertices(&self) -> &[UnitVector] {
        &self.vertices
    }
}

impl Circle {
    /// Validates and builds a circle (center in degrees, radius in degrees).
    pub fn from_lonlat_deg(ra: f64, dec: f64, radius_deg: f64) -> Result<Self, RegionError> {
        todo!("{ra} {dec} {radius_deg}")
    }
}

impl Region {
    /// Parses `{"polygon": [[ra, dec], ...]}` or
    /// `{"circle": {"center": [ra, dec], "radius": deg}}` (degrees).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, RegionError> {
        todo!("{value}")
    }

    /// The same JSON shape, degrees rounded to 1e-10 so that what was read
    /// prints back unchanged.
    pub fn to_json(&self) -> serde_json::Value {
        todo!()
    }

    /// Compact encoding for the registry (a tag byte, then little-endian
    /// f64 unit vectors; a circle adds its radius).
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RegionError> {
        todo!("{bytes:?}")
    }

    /// Whether the two closed regions share at least one point (touching
    /// counts), exactly up to floating-point edge cases.
    pub fn overlaps(&self, other: &Region) -> bool {
        todo!("{other:?}")
    }

    /// Whether the closed region contains `point`.
    pub fn contains(&self, point: UnitVector) -> bool {
        todo!("{point:?}")
    }

    /// The nested-scheme HEALPix cells at `level` that the region may
    /// touch: a superset of the exact cover (never misses a cell the region
    /// overlaps), sorted and distinct. Computed with `cdshealpix`.
    pub fn healpix_pixels(&self, level: u8) -> Vec<u64> {
        todo!("{level}")
    }
}
