//! The exact predicates behind `Region::overlaps` and `Region::contains`,
//! written over slices so that decoded regions and zero-copy views of
//! encoded blobs share them.
//!
//! A polygon is given by its vertices and its inward unit edge normals
//! (`normals[i]` for the arc from vertex `i` to vertex `i + 1`): a point `p`
//! is inside edge `i` when `normals[i]·p >= 0`, and `normals[i]·p` is the
//! sine of its angular distance to that edge's great circle.

use crate::vector::UnitVector;
use std::f64::consts::PI;

/// Regions closer than this (radians, about 2e-7 arcsec) are treated as
/// touching, hence overlapping: it absorbs the rounding of vertices that
/// two regions share (e.g. neighbouring patches or HEALPix cells computed
/// separately) and of the 1e-10° JSON printing.
pub const OVERLAP_TOLERANCE_RAD: f64 = 1e-12;

/// A convex polygon as the predicates see it.
#[derive(Clone, Copy)]
pub(crate) struct PolygonRef<'a> {
    pub vertices: &'a [UnitVector],
    pub normals: &'a [UnitVector],
}

/// A cap: center and radius in radians.
#[derive(Clone, Copy)]
pub(crate) struct CapRef {
    pub center: UnitVector,
    pub radius: f64,
}

/// The squared chord of an angle (radians); 4 (the diameter squared) from
/// π on, so that comparisons with `chord2` mean "within that angle".
pub(crate) fn chord2_of_angle(angle: f64) -> f64 {
    if angle >= PI {
        4.0
    } else {
        let s = 2.0 * (0.5 * angle.max(0.0)).sin();
        s * s
    }
}

/// Whether the closed polygon contains `p`, `tolerance` radians outside
/// the boundary counting as on it.
pub(crate) fn polygon_contains(poly: PolygonRef<'_>, p: UnitVector, tolerance: f64) -> bool {
    let slack = -tolerance.sin();
    poly.normals.iter().all(|n| n.dot(p) >= slack)
}

/// Whether the closed cap contains `p` (with `tolerance`).
pub(crate) fn cap_contains(cap: CapRef, p: UnitVector, tolerance: f64) -> bool {
    cap.center.chord2(p) <= chord2_of_angle(cap.radius + tolerance)
}

/// Whether the two arcs cross at a point inside both (proper crossing).
/// Arcs that only touch (an endpoint on the other arc) are left to the
/// vertex-containment tests, which see them with a tolerance. `na` and `nb`
/// are normals of the arcs' great circles, of either sign.
fn arcs_cross(
    (a0, a1, na): (UnitVector, UnitVector, UnitVector),
    (b0, b1, nb): (UnitVector, UnitVector, UnitVector),
) -> bool {
    let (s0, s1) = (nb.dot(a0), nb.dot(a1));
    if s0 * s1 >= 0.0 {
        return false;
    }
    let (r0, r1) = (na.dot(b0), na.dot(b1));
    if r0 * r1 >= 0.0 {
        return false;
    }
    // Each arc (shorter than 180°) meets the other's great circle once;
    // the two meeting points are either the same point or antipodes.
    let on_a = a1.scale(s0).minus(a0.scale(s1)).scale((s0 - s1).signum());
    let on_b = b1.scale(r0).minus(b0.scale(r1)).scale((r0 - r1).signum());
    on_a.dot(on_b) > 0.0
}

/// The arcs of a polygon as (start, end, normal).
fn arcs<'a>(
    poly: PolygonRef<'a>,
) -> impl Iterator<Item = (UnitVector, UnitVector, UnitVector)> + 'a {
    let n = poly.vertices.len();
    (0..n).map(move |i| {
        (
            poly.vertices[i],
            poly.vertices[(i + 1) % n],
            poly.normals[i],
        )
    })
}

/// Exact overlap of two closed convex polygons: a vertex of one inside the
/// other, or two edges crossing.
pub(crate) fn polygons_overlap(a: PolygonRef<'_>, b: PolygonRef<'_>, tolerance: f64) -> bool {
    a.vertices
        .iter()
        .any(|&v| polygon_contains(b, v, tolerance))
        || b.vertices
            .iter()
            .any(|&v| polygon_contains(a, v, tolerance))
        || arcs(a).any(|ea| arcs(b).any(|eb| arcs_cross(ea, eb)))
}

/// The angular distance (radians) from `p` to the closed arc `a`–`b`
/// whose great circle has unit normal `n` (either sign).
pub(crate) fn point_arc_distance(
    p: UnitVector,
    (a, b, n): (UnitVector, UnitVector, UnitVector),
) -> f64 {
    let d = n.dot(p);
    let foot = p.minus(n.scale(d));
    // The foot of the perpendicular lies between a and b when it is on the
    // inner side of both end-point planes (the planes through n and a, b).
    let raw = a.cross(b);
    if a.cross(foot).dot(raw) >= 0.0 && foot.cross(b).dot(raw) >= 0.0 && foot.norm() > 0.0 {
        d.abs().atan2(foot.norm())
    } else {
        p.angle_to(a).min(p.angle_to(b))
    }
}

/// Exact overlap of a closed convex polygon and a closed cap: the center
/// inside the polygon, or the cap reaching a vertex or an edge.
pub(crate) fn polygon_cap_overlap(poly: PolygonRef<'_>, cap: CapRef, tolerance: f64) -> bool {
    if polygon_contains(poly, cap.center, tolerance) {
        return true;
    }
    let reach = cap.radius + tolerance;
    let reach2 = chord2_of_angle(reach);
    if poly.vertices.iter().any(|v| v.chord2(cap.center) <= reach2) {
        return true;
    }
    // Only an edge whose great circle is within reach can matter; its
    // nearest point must then also lie on the arc itself.
    let sin_reach = if reach >= PI / 2.0 { 1.0 } else { reach.sin() };
    arcs(poly).any(|arc| {
        let d = arc.2.dot(cap.center);
        d < 0.0 && -d <= sin_reach && point_arc_distance(cap.center, arc) <= reach
    })
}

/// Exact overlap of two closed caps.
pub(crate) fn caps_overlap(a: CapRef, b: CapRef, tolerance: f64) -> bool {
    a.center.chord2(b.center) <= chord2_of_angle(a.radius + b.radius + tolerance)
}

/// Whether the closed polygon contains the whole cap (used to take a
/// HEALPix cell and all its descendants at once).
pub(crate) fn polygon_contains_cap(poly: PolygonRef<'_>, cap: CapRef) -> bool {
    if cap.radius >= PI / 2.0 {
        return false;
    }
    let sin_r = cap.radius.sin();
    poly.normals.iter().all(|n| n.dot(cap.center) >= sin_r)
}

/// Whether cap `outer` contains the whole cap `inner`.
pub(crate) fn cap_contains_cap(outer: CapRef, inner: CapRef) -> bool {
    outer.center.angle_to(inner.center) + inner.radius <= outer.radius
}
