//! The region JSON of dimension records:
//! `{"polygon": [[ra, dec], ...]}` and
//! `{"circle": {"center": [ra, dec], "radius": deg}}`, degrees.

use crate::region::{check_lonlat, check_radius, Circle, ConvexPolygon, Region, RegionError};
use crate::vector::UnitVector;
use serde_json::{json, Map, Value};

const SHAPES: &str =
    r#"{"polygon": [[ra, dec], ...]} or {"circle": {"center": [ra, dec], "radius": deg}}"#;

/// `value` as short text for an error message.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// A `[ra, dec]` pair of numbers; `what` names it in messages.
fn lonlat_pair(what: &str, value: &Value) -> Result<(f64, f64), RegionError> {
    match value.as_array().map(Vec::as_slice) {
        Some([ra, dec]) => match (ra.as_f64(), dec.as_f64()) {
            (Some(ra), Some(dec)) => Ok((ra, dec)),
            _ => Err(RegionError::Json(format!(
                "{what} must be [ra, dec] with two numbers (degrees), got {}",
                show(value)
            ))),
        },
        _ => Err(RegionError::Json(format!(
            "{what} must be [ra, dec] (two numbers, degrees), got {}",
            show(value)
        ))),
    }
}

fn polygon_from_json(value: &Value) -> Result<Region, RegionError> {
    let items = value.as_array().ok_or_else(|| {
        RegionError::Json(format!(
            "\"polygon\" must be a list of [ra, dec] vertices, got {}",
            show(value)
        ))
    })?;
    let vertices = items
        .iter()
        .enumerate()
        .map(|(i, v)| lonlat_pair(&format!("polygon vertex {}", i + 1), v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Region::Polygon(ConvexPolygon::from_lonlat_deg(&vertices)?))
}

fn circle_from_json(value: &Value) -> Result<Region, RegionError> {
    let expected = || {
        RegionError::Json(format!(
            "\"circle\" must be {{\"center\": [ra, dec], \"radius\": deg}}, got {}",
            show(value)
        ))
    };
    let fields = value.as_object().ok_or_else(expected)?;
    if fields.len() != 2 {
        return Err(expected());
    }
    let center = fields.get("center").ok_or_else(expected)?;
    let radius = fields.get("radius").ok_or_else(expected)?;
    let (ra, dec) = lonlat_pair("circle center", center)?;
    let radius = radius.as_f64().ok_or_else(|| {
        RegionError::Json(format!(
            "circle radius must be a number (degrees), got {}",
            show(radius)
        ))
    })?;
    let center = check_lonlat("circle center", ra, dec)?;
    check_radius(radius)?;
    Ok(Region::Circle(Circle {
        center,
        radius_deg: radius,
    }))
}

/// Degrees rounded to 1e-10 and printed as the shortest f64: what was read
/// prints back unchanged despite the trip through unit vectors.
fn round_deg(value: f64) -> f64 {
    let rounded = (value * 1e10).round() / 1e10;
    rounded + 0.0 // no "-0.0"
}

/// `[ra, dec]` with RA in [0, 360).
fn lonlat_json(v: UnitVector) -> Value {
    let (ra, dec) = v.to_lonlat_deg();
    let ra = round_deg(ra);
    json!([if ra >= 360.0 { 0.0 } else { ra }, round_deg(dec)])
}

impl Region {
    /// Parses `{"polygon": [[ra, dec], ...]}` or
    /// `{"circle": {"center": [ra, dec], "radius": deg}}` (degrees).
    pub fn from_json(value: &Value) -> Result<Self, RegionError> {
        let shape: Option<(&String, &Value)> = value
            .as_object()
            .filter(|m: &&Map<String, Value>| m.len() == 1)
            .and_then(|m| m.iter().next());
        match shape {
            Some((key, inner)) if key == "polygon" => polygon_from_json(inner),
            Some((key, inner)) if key == "circle" => circle_from_json(inner),
            Some((key, _)) => Err(RegionError::Json(format!(
                "unknown region kind {key:?}: a region is {SHAPES}"
            ))),
            None => Err(RegionError::Json(format!(
                "a region is {SHAPES}, got {}",
                show(value)
            ))),
        }
    }

    /// The same JSON shape, degrees rounded to 1e-10 so that what was read
    /// prints back unchanged (RA in [0, 360)).
    pub fn to_json(&self) -> Value {
        match self {
            Region::Polygon(p) => {
                let vertices: Vec<Value> = p.vertices().iter().map(|v| lonlat_json(*v)).collect();
                json!({ "polygon": vertices })
            }
            Region::Circle(c) => json!({
                "circle": { "center": lonlat_json(c.center), "radius": round_deg(c.radius_deg) }
            }),
        }
    }
}
