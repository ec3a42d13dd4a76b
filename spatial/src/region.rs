//! Regions: convex spherical polygons and circles, their JSON and blob
//! encodings, validation and exact overlap tests.

use crate::geom::{self, CapRef, PolygonRef, OVERLAP_TOLERANCE_RAD};
use crate::vector::UnitVector;
use std::f64::consts::PI;

/// Consecutive vertices closer than this (radians) are the same point.
const SAME_POINT_RAD: f64 = 1e-10;
/// A turn whose sine is below this is no corner (the three vertices lie on
/// one great circle).
const COLLINEAR_SIN: f64 = 1e-9;

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
    /// Inward unit normals of the edges (`normals[i]` for the arc from
    /// vertex `i` to vertex `i + 1`), whatever the vertex orientation.
    normals: Vec<UnitVector>,
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

/// Checks one (ra, dec) in degrees; `what` names it in the message
/// (e.g. "vertex 3").
pub(crate) fn check_lonlat(what: &str, ra: f64, dec: f64) -> Result<UnitVector, RegionError> {
    let bad = |why: &str| RegionError::Coordinate(format!("{what} (ra {ra}, dec {dec}): {why}"));
    if !ra.is_finite() {
        return Err(bad("ra is not a finite number"));
    }
    if !dec.is_finite() {
        return Err(bad("dec is not a finite number"));
    }
    if dec.abs() > 90.0 {
        return Err(bad("dec is outside [-90, 90]"));
    }
    Ok(UnitVector::from_lonlat_deg(ra.rem_euclid(360.0), dec))
}

impl ConvexPolygon {
    /// Validates and builds a polygon from vertices (degrees). RA may be
    /// any finite value (taken modulo 360); vertex numbers in messages
    /// count from 1.
    pub fn from_lonlat_deg(vertices: &[(f64, f64)]) -> Result<Self, RegionError> {
        let vectors = vertices
            .iter()
            .enumerate()
            .map(|(i, &(ra, dec))| check_lonlat(&format!("vertex {}", i + 1), ra, dec))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(vectors)
    }

    /// Validates and builds a polygon from unit vectors (any finite,
    /// non-zero vectors: they are normalized). Refuses fewer than 3
    /// vertices, repeated or antipodal consecutive vertices, three
    /// consecutive vertices on one great circle, a reflex vertex, and a
    /// boundary that crosses itself or encloses more than a hemisphere.
    pub fn new(vertices: Vec<UnitVector>) -> Result<Self, RegionError> {
        let vertices = vertices
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.normalized().ok_or_else(|| {
                    RegionError::Coordinate(format!(
                        "vertex {} ({}, {}, {}) is not a finite non-zero vector",
                        i + 1,
                        v.x,
                        v.y,
                        v.z
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let normals = validate_convex(&vertices)?;
        Ok(Self { vertices, normals })
    }

    /// Builds a polygon known to be convex (HEALPix cells, grid patches)
    /// without the O(n²) checks; falls back to them when the orientation
    /// cannot even be found.
    pub(crate) fn trusted(vertices: Vec<UnitVector>) -> Option<Self> {
        let normals = inward_normals(&vertices)?;
        Some(Self { vertices, normals })
    }

    pub fn vertices(&self) -> &[UnitVector] {
        &self.vertices
    }

    /// Inward unit normals of the edges (`[i]` for the arc from vertex `i`
    /// to vertex `i + 1`): a point `p` is inside when every `n·p >= 0`.
    pub fn edge_normals(&self) -> &[UnitVector] {
        &self.normals
    }

    pub(crate) fn as_ref(&self) -> PolygonRef<'_> {
        PolygonRef {
            vertices: &self.vertices,
            normals: &self.normals,
        }
    }

    /// Whether the closed polygon contains `point` (within
    /// [`OVERLAP_TOLERANCE_RAD`](crate::OVERLAP_TOLERANCE_RAD)).
    pub fn contains(&self, point: UnitVector) -> bool {
        geom::polygon_contains(self.as_ref(), point, OVERLAP_TOLERANCE_RAD)
    }

    /// The smallest cap about the normalized vertex sum that holds the
    /// polygon (its farthest point may lie inside an edge).
    pub fn bounding_circle(&self) -> Circle {
        let sum = self.vertices.iter().fold(
            UnitVector {
                x: 0.0,
                y: 0.0,
                z: 0.0,
            },
            |s, v| s.plus(*v),
        );
        let center = sum.normalized().unwrap_or(self.vertices[0]);
        let anti = center.scale(-1.0);
        let n = self.vertices.len();
        let nearest_to_anti = (0..n)
            .map(|i| {
                let arc = (
                    self.vertices[i],
                    self.vertices[(i + 1) % n],
                    self.normals[i],
                );
                geom::point_arc_distance(anti, arc)
            })
            .fold(PI, f64::min);
        Circle {
            center,
            radius_deg: (PI - nearest_to_anti).to_degrees(),
        }
    }
}

/// The raw (orientation-dependent) unit normals of the edges, or `None`
/// when two consecutive vertices are equal or antipodal.
fn raw_normals(vertices: &[UnitVector]) -> Result<Vec<UnitVector>, (usize, usize)> {
    let n = vertices.len();
    (0..n)
        .map(|i| {
            let (a, b) = (vertices[i], vertices[(i + 1) % n]);
            let normal = a.cross(b).normalized();
            match normal {
                Some(normal) if a.angle_to(b) >= SAME_POINT_RAD => Ok(normal),
                _ => Err((i, (i + 1) % n)),
            }
        })
        .collect()
}

/// The sine of the turn at vertex `k` (positive: counter-clockwise seen
/// from outside the sphere).
fn turn_sine(vertices: &[UnitVector], raw: &[UnitVector], k: usize) -> f64 {
    let prev = (k + raw.len() - 1) % raw.len();
    raw[prev].cross(raw[k]).dot(vertices[k])
}

/// Inward normals without validation (orientation from the sum of the
/// turns); `None` if an edge is degenerate.
fn inward_normals(vertices: &[UnitVector]) -> Option<Vec<UnitVector>> {
    let zero = UnitVector {
        x: 0.0,
        y: 0.0,
        z: 0.0,
    };
    let mut normals = vec![zero; vertices.len()];
    inward_normals_into(vertices, &mut normals)?;
    Some(normals)
}

/// [`inward_normals`] into `out` (as long as `vertices`), allocation-free
/// for the decoding hot path.
pub(crate) fn inward_normals_into(vertices: &[UnitVector], out: &mut [UnitVector]) -> Option<()> {
    let n = vertices.len();
    if n < 3 || out.len() != n {
        return None;
    }
    for i in 0..n {
        out[i] = vertices[i].cross(vertices[(i + 1) % n]).normalized()?;
    }
    let total: f64 = (0..n).map(|k| turn_sine(vertices, out, k)).sum();
    if total < 0.0 {
        out.iter_mut().for_each(|v| *v = v.scale(-1.0));
    }
    Some(())
}

/// A polygon from already-checked parts (decoding).
pub(crate) fn polygon_from_parts(
    vertices: Vec<UnitVector>,
    normals: Vec<UnitVector>,
) -> ConvexPolygon {
    ConvexPolygon { vertices, normals }
}

/// All the polygon checks; returns the inward edge normals.
fn validate_convex(vertices: &[UnitVector]) -> Result<Vec<UnitVector>, RegionError> {
    let n = vertices.len();
    if n < 3 {
        return Err(RegionError::Polygon(format!(
            "a polygon needs at least 3 vertices, got {n}"
        )));
    }
    let raw = raw_normals(vertices).map_err(|(i, j)| degenerate_edge(vertices, i, j))?;
    let turns: Vec<f64> = (0..n).map(|k| turn_sine(vertices, &raw, k)).collect();
    if let Some(k) = turns.iter().position(|t| t.abs() < COLLINEAR_SIN) {
        let (prev, next) = ((k + n - 1) % n + 1, (k + 1) % n + 1);
        return Err(RegionError::Polygon(format!(
            "vertices {prev}, {} and {next} lie on one great circle: vertex {} is not a corner",
            k + 1,
            k + 1
        )));
    }
    let left = turns.iter().filter(|t| **t > 0.0).count();
    let sign = if 2 * left >= n { 1.0 } else { -1.0 };
    if let Some(k) = turns.iter().position(|t| t * sign < 0.0) {
        return Err(RegionError::Polygon(format!(
            "not convex at vertex {} (the boundary turns the other way there)",
            k + 1
        )));
    }
    let normals: Vec<UnitVector> = raw.into_iter().map(|v| v.scale(sign)).collect();
    check_no_crossing(vertices, &normals)?;
    Ok(normals)
}

/// The error for edge `i`–`j` whose ends are the same point or antipodes.
fn degenerate_edge(vertices: &[UnitVector], i: usize, j: usize) -> RegionError {
    let (a, b) = (i + 1, j + 1);
    if vertices[i].dot(vertices[j]) > 0.0 {
        let hint = if j == 0 {
            " (do not repeat the first vertex at the end)"
        } else {
            ""
        };
        RegionError::Polygon(format!("vertices {a} and {b} are the same point{hint}"))
    } else {
        RegionError::Polygon(format!(
            "vertices {a} and {b} are antipodal: the arc between them is undefined"
        ))
    }
}

/// With every turn the same way, the polygon is convex unless its
/// boundary winds around more than once; then some vertex lies outside
/// some edge.
fn check_no_crossing(vertices: &[UnitVector], normals: &[UnitVector]) -> Result<(), RegionError> {
    let n = vertices.len();
    for (i, normal) in normals.iter().enumerate() {
        let next = (i + 1) % n;
        let outside = (0..n).find(|&j| j != i && j != next && normal.dot(vertices[j]) <= 0.0);
        if let Some(j) = outside {
            return Err(RegionError::Polygon(format!(
                "not convex: vertex {} lies outside the edge from vertex {} to vertex {} \
                 (the boundary crosses itself or the polygon is larger than a hemisphere)",
                j + 1,
                i + 1,
                next + 1
            )));
        }
    }
    Ok(())
}

impl Circle {
    /// Validates and builds a circle (center in degrees, radius in degrees).
    pub fn from_lonlat_deg(ra: f64, dec: f64, radius_deg: f64) -> Result<Self, RegionError> {
        let center = check_lonlat("circle center", ra, dec)?;
        check_radius(radius_deg)?;
        Ok(Self { center, radius_deg })
    }

    /// Whether the closed cap contains `point` (within
    /// [`OVERLAP_TOLERANCE_RAD`](crate::OVERLAP_TOLERANCE_RAD)).
    pub fn contains(&self, point: UnitVector) -> bool {
        geom::cap_contains(self.as_ref(), point, OVERLAP_TOLERANCE_RAD)
    }

    pub(crate) fn as_ref(&self) -> CapRef {
        CapRef {
            center: self.center,
            radius: self.radius_deg.to_radians(),
        }
    }
}

/// A radius must be a finite number of degrees in [0, 180).
pub(crate) fn check_radius(radius_deg: f64) -> Result<(), RegionError> {
    if radius_deg.is_finite() && (0.0..180.0).contains(&radius_deg) {
        Ok(())
    } else {
        Err(RegionError::Circle(format!(
            "circle radius {radius_deg}: must be a number of degrees in [0, 180)"
        )))
    }
}

impl Region {
    /// A point (a circle of radius 0) at (ra, dec) in degrees.
    pub fn point(ra: f64, dec: f64) -> Result<Self, RegionError> {
        Circle::from_lonlat_deg(ra, dec, 0.0).map(Region::Circle)
    }

    /// A circle about (ra, dec) with a radius in degrees.
    pub fn circle(ra: f64, dec: f64, radius_deg: f64) -> Result<Self, RegionError> {
        Circle::from_lonlat_deg(ra, dec, radius_deg).map(Region::Circle)
    }

    /// A polygon from (ra, dec) vertices in degrees.
    pub fn polygon(vertices: &[(f64, f64)]) -> Result<Self, RegionError> {
        ConvexPolygon::from_lonlat_deg(vertices).map(Region::Polygon)
    }

    /// Whether the two closed regions share at least one point (touching
    /// counts), exactly up to floating-point edge cases: regions closer
    /// than [`OVERLAP_TOLERANCE_RAD`](crate::OVERLAP_TOLERANCE_RAD) count
    /// as touching.
    pub fn overlaps(&self, other: &Region) -> bool {
        self.as_ref().overlaps(other.as_ref())
    }

    /// Whether the closed region contains `point`.
    pub fn contains(&self, point: UnitVector) -> bool {
        match self {
            Region::Polygon(p) => p.contains(point),
            Region::Circle(c) => c.contains(point),
        }
    }

    /// A cap holding the whole region (the circle itself for a circle).
    pub fn bounding_circle(&self) -> Circle {
        match self {
            Region::Polygon(p) => p.bounding_circle(),
            Region::Circle(c) => c.clone(),
        }
    }

    pub(crate) fn as_ref(&self) -> RegionRef<'_> {
        match self {
            Region::Polygon(p) => RegionRef::Polygon(p.as_ref()),
            Region::Circle(c) => RegionRef::Cap(c.as_ref()),
        }
    }
}

/// A borrowed region, decoded or viewed in place.
#[derive(Clone, Copy)]
pub(crate) enum RegionRef<'a> {
    Polygon(PolygonRef<'a>),
    Cap(CapRef),
}

impl RegionRef<'_> {
    pub(crate) fn overlaps(self, other: RegionRef<'_>) -> bool {
        let tol = OVERLAP_TOLERANCE_RAD;
        match (self, other) {
            (RegionRef::Polygon(a), RegionRef::Polygon(b)) => geom::polygons_overlap(a, b, tol),
            (RegionRef::Polygon(p), RegionRef::Cap(c))
            | (RegionRef::Cap(c), RegionRef::Polygon(p)) => geom::polygon_cap_overlap(p, c, tol),
            (RegionRef::Cap(a), RegionRef::Cap(b)) => geom::caps_overlap(a, b, tol),
        }
    }
}
