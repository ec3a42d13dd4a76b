//! The compact blob the registry stores: a tag byte, then little-endian
//! f64 unit vectors (x, y, z); a circle adds its radius in degrees.
//! Polygon: `[1] (x y z)*n` with n >= 3; circle: `[2] x y z radius_deg`.
//!
//! Decoding checks structure (tag, length, finite unit vectors, a radius
//! in range, non-degenerate edges) but not convexity: blobs come from
//! `encode` of validated regions, and decoding is on the spatial join's
//! hot path. A damaged blob gives an error or a wrong answer, never a
//! panic.

use crate::geom::{CapRef, PolygonRef};
use crate::region::{
    inward_normals_into, polygon_from_parts, Circle, Region, RegionError, RegionRef,
};
use crate::vector::UnitVector;

const TAG_POLYGON: u8 = 1;
const TAG_CIRCLE: u8 = 2;
const VECTOR_BYTES: usize = 24;
/// Polygons up to this many vertices are viewed on the stack by
/// [`Region::overlaps_encoded`].
const STACK_VERTICES: usize = 16;
const ZERO: UnitVector = UnitVector {
    x: 0.0,
    y: 0.0,
    z: 0.0,
};

fn damaged(why: impl Into<String>) -> RegionError {
    RegionError::Encoding(why.into())
}

fn read_f64(bytes: &[u8], at: usize) -> f64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    f64::from_le_bytes(raw)
}

/// The unit vector at `bytes[at..at + 24]` (the caller checked the length).
fn read_vector(bytes: &[u8], at: usize) -> Result<UnitVector, RegionError> {
    let v = UnitVector {
        x: read_f64(bytes, at),
        y: read_f64(bytes, at + 8),
        z: read_f64(bytes, at + 16),
    };
    if v.is_finite() && (v.dot(v) - 1.0).abs() <= 1e-9 {
        Ok(v)
    } else {
        Err(damaged(format!("not a unit vector at byte {at}")))
    }
}

fn write_vector(out: &mut Vec<u8>, v: UnitVector) {
    for c in [v.x, v.y, v.z] {
        out.extend_from_slice(&c.to_le_bytes());
    }
}

/// The number of polygon vertices in a polygon blob.
fn polygon_len(bytes: &[u8]) -> Result<usize, RegionError> {
    let body = bytes.len() - 1;
    if !body.is_multiple_of(VECTOR_BYTES) || body / VECTOR_BYTES < 3 {
        return Err(damaged(format!(
            "a polygon blob of {} bytes (expected 1 + 24 per vertex, at least 3 vertices)",
            bytes.len()
        )));
    }
    Ok(body / VECTOR_BYTES)
}

/// Reads the polygon's vertices into `out` (as long as the vertex count).
fn read_polygon(bytes: &[u8], out: &mut [UnitVector]) -> Result<(), RegionError> {
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = read_vector(bytes, 1 + i * VECTOR_BYTES)?;
    }
    Ok(())
}

fn read_circle(bytes: &[u8]) -> Result<CapRef, RegionError> {
    if bytes.len() != 1 + VECTOR_BYTES + 8 {
        return Err(damaged(format!(
            "a circle blob of {} bytes (expected 33)",
            bytes.len()
        )));
    }
    let center = read_vector(bytes, 1)?;
    let radius_deg = read_f64(bytes, 1 + VECTOR_BYTES);
    crate::region::check_radius(radius_deg).map_err(|e| damaged(e.to_string()))?;
    Ok(CapRef {
        center,
        radius: radius_deg.to_radians(),
    })
}

fn degenerate() -> RegionError {
    damaged("a polygon with a degenerate edge")
}

/// Room for a polygon viewed without allocating.
struct Scratch {
    vertices: [UnitVector; STACK_VERTICES],
    normals: [UnitVector; STACK_VERTICES],
}

impl Scratch {
    fn new() -> Self {
        Self {
            vertices: [ZERO; STACK_VERTICES],
            normals: [ZERO; STACK_VERTICES],
        }
    }
}

/// Views a blob as a region, in `scratch` when it fits, else in `heap`.
fn view<'a>(
    bytes: &[u8],
    scratch: &'a mut Scratch,
    heap: &'a mut Option<Region>,
) -> Result<RegionRef<'a>, RegionError> {
    match bytes.first() {
        Some(&TAG_POLYGON) => {
            let n = polygon_len(bytes)?;
            if n > STACK_VERTICES {
                return Ok(heap.insert(Region::decode(bytes)?).as_ref());
            }
            let (vertices, normals) = (&mut scratch.vertices[..n], &mut scratch.normals[..n]);
            read_polygon(bytes, vertices)?;
            inward_normals_into(vertices, normals).ok_or_else(degenerate)?;
            Ok(RegionRef::Polygon(PolygonRef { vertices, normals }))
        }
        Some(&TAG_CIRCLE) => Ok(RegionRef::Cap(read_circle(bytes)?)),
        _ => Err(unknown_tag(bytes)),
    }
}

fn unknown_tag(bytes: &[u8]) -> RegionError {
    match bytes.first() {
        None => damaged("an empty blob"),
        Some(tag) => damaged(format!("unknown region tag {tag}")),
    }
}

impl Region {
    /// Compact encoding for the registry (a tag byte, then little-endian
    /// f64 unit vectors; a circle adds its radius).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Region::Polygon(p) => {
                let mut out = Vec::with_capacity(1 + VECTOR_BYTES * p.vertices().len());
                out.push(TAG_POLYGON);
                p.vertices().iter().for_each(|v| write_vector(&mut out, *v));
                out
            }
            Region::Circle(c) => {
                let mut out = Vec::with_capacity(1 + VECTOR_BYTES + 8);
                out.push(TAG_CIRCLE);
                write_vector(&mut out, c.center);
                out.extend_from_slice(&c.radius_deg.to_le_bytes());
                out
            }
        }
    }

    /// The region [`Region::encode`] wrote; `RegionError::Encoding` for any
    /// other bytes (never a panic). Checks structure, not convexity.
    pub fn decode(bytes: &[u8]) -> Result<Self, RegionError> {
        match bytes.first() {
            Some(&TAG_POLYGON) => {
                let n = polygon_len(bytes)?;
                let mut vertices = vec![ZERO; n];
                read_polygon(bytes, &mut vertices)?;
                let mut normals = vec![ZERO; n];
                inward_normals_into(&vertices, &mut normals).ok_or_else(degenerate)?;
                Ok(Region::Polygon(polygon_from_parts(vertices, normals)))
            }
            Some(&TAG_CIRCLE) => {
                let cap = read_circle(bytes)?;
                let radius_deg = read_f64(bytes, 1 + VECTOR_BYTES);
                Ok(Region::Circle(Circle {
                    center: cap.center,
                    radius_deg,
                }))
            }
            _ => Err(unknown_tag(bytes)),
        }
    }

    /// `decode(a)?.overlaps(&decode(b)?)` without allocating (polygons of
    /// up to 16 vertices are viewed on the stack): the refine step of a
    /// spatial join calls it once per candidate pair.
    pub fn overlaps_encoded(a: &[u8], b: &[u8]) -> Result<bool, RegionError> {
        let (mut scratch_a, mut scratch_b) = (Scratch::new(), Scratch::new());
        let (mut heap_a, mut heap_b) = (None, None);
        let a = view(a, &mut scratch_a, &mut heap_a)?;
        let b = view(b, &mut scratch_b, &mut heap_b)?;
        Ok(a.overlaps(b))
    }
}
