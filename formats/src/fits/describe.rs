//! JSON forms of the FITS types: [`wcs_to_json`] / [`wcs_from_json`] and
//! [`header_to_json`] / [`header_from_json`] (the files of the `Wcs` and
//! `PropertyList` components of a disassembled exposure), and
//! [`describe`], the summary `quanta get` prints.

use quanta_datastore::InMemoryDataset;
use serde_json::{json, Map, Value};

use super::image::{ColumnData, ColumnTable, Exposure, Header, Image, Mask, SourceCatalog};
use super::wcs::TanWcs;

/// A TAN WCS as JSON: `{"ctype": ["RA---TAN", "DEC--TAN"], "crval": [ra,
/// dec], "crpix": [x, y], "cd": [[…], […]]}` (FITS conventions: degrees,
/// 1-based reference pixel).
pub fn wcs_to_json(wcs: &TanWcs) -> Value {
    json!({
        "ctype": ["RA---TAN", "DEC--TAN"],
        "crval": [wcs.crval.0, wcs.crval.1],
        "crpix": [wcs.crpix.0, wcs.crpix.1],
        "cd": [[wcs.cd[0][0], wcs.cd[0][1]], [wcs.cd[1][0], wcs.cd[1][1]]],
    })
}

/// The WCS of [`wcs_to_json`]'s JSON, validated.
pub fn wcs_from_json(v: &Value) -> Result<TanWcs, String> {
    let num = |v: &Value, what: &str| -> Result<f64, String> {
        v.as_f64()
            .ok_or_else(|| format!("WCS {what}: expected a number, got {v}"))
    };
    let pair = |key: &str| -> Result<(f64, f64), String> {
        match v.get(key).and_then(Value::as_array).map(Vec::as_slice) {
            Some([a, b]) => Ok((num(a, key)?, num(b, key)?)),
            _ => Err(format!("WCS {key}: expected an array of 2 numbers")),
        }
    };
    let ctype = v.get("ctype").and_then(Value::as_array);
    let tan = ctype.is_some_and(|c| {
        c.len() == 2 && c[0].as_str() == Some("RA---TAN") && c[1].as_str() == Some("DEC--TAN")
    });
    if !tan {
        return Err("WCS ctype: only [\"RA---TAN\", \"DEC--TAN\"] is supported".into());
    }
    let rows = match v.get("cd").and_then(Value::as_array).map(Vec::as_slice) {
        Some([r0, r1]) => [r0, r1],
        _ => return Err("WCS cd: expected a 2×2 array".into()),
    };
    let mut cd = [[0.0; 2]; 2];
    for (i, row) in rows.iter().enumerate() {
        match row.as_array().map(Vec::as_slice) {
            Some([a, b]) => cd[i] = [num(a, "cd")?, num(b, "cd")?],
            _ => return Err("WCS cd: expected a 2×2 array".into()),
        }
    }
    TanWcs::new(pair("crval")?, pair("crpix")?, cd).map_err(|e| e.to_string())
}

/// The header keys as a JSON object of FITS cards (`{"EXPID": 3, …}`),
/// without the WCS; absent keys are absent.
pub fn header_to_json(h: &Header) -> Value {
    let mut m = Map::new();
    if let Some(k) = &h.kind {
        m.insert("IMAGETYP".into(), json!(k));
    }
    for (key, v) in header_ints(h) {
        if let Some(v) = v {
            m.insert(key.into(), json!(v));
        }
    }
    for (key, v) in header_floats(h) {
        if let Some(v) = v {
            m.insert(key.into(), json!(v));
        }
    }
    Value::Object(m)
}

fn header_ints(h: &Header) -> [(&'static str, Option<i64>); 5] {
    [
        ("EXPID", h.exposure),
        ("DETECTOR", h.detector),
        ("NINJECT", h.injected_sources),
        ("VISIT", h.visit),
        ("NCOMBINE", h.combined),
    ]
}

fn header_floats(h: &Header) -> [(&'static str, Option<f64>); 3] {
    [
        ("BGMEDIAN", h.background),
        ("SKYSIGMA", h.sigma),
        ("DETTHRSH", h.threshold),
    ]
}

/// The header of [`header_to_json`]'s JSON; unknown keys are refused.
pub fn header_from_json(v: &Value) -> Result<Header, String> {
    let Some(m) = v.as_object() else {
        return Err("metadata: expected a JSON object of header keys".into());
    };
    let mut h = Header::default();
    for (key, value) in m {
        let int = || {
            value
                .as_i64()
                .ok_or_else(|| format!("metadata {key}: expected an integer"))
        };
        let float = || {
            value
                .as_f64()
                .ok_or_else(|| format!("metadata {key}: expected a number"))
        };
        match key.as_str() {
            "IMAGETYP" => {
                h.kind = Some(
                    value
                        .as_str()
                        .ok_or_else(|| format!("metadata {key}: expected a string"))?
                        .to_string(),
                )
            }
            "EXPID" => h.exposure = Some(int()?),
            "DETECTOR" => h.detector = Some(int()?),
            "NINJECT" => h.injected_sources = Some(int()?),
            "VISIT" => h.visit = Some(int()?),
            "NCOMBINE" => h.combined = Some(int()?),
            "BGMEDIAN" => h.background = Some(float()?),
            "SKYSIGMA" => h.sigma = Some(float()?),
            "DETTHRSH" => h.threshold = Some(float()?),
            other => return Err(format!("metadata: unknown header key `{other}`")),
        }
    }
    Ok(h)
}

fn image_summary(i: &Image) -> Value {
    json!({"width": i.width(), "height": i.height()})
}

fn mask_summary(m: &Mask) -> Value {
    json!({"width": m.width(), "height": m.height()})
}

/// A JSON summary of any dataset of this crate's types (shapes, WCS,
/// header keys, catalog sizes; column values for a column subset).
pub fn describe(obj: &InMemoryDataset) -> Option<Value> {
    let InMemoryDataset::Other(any) = obj else {
        return match obj {
            InMemoryDataset::Json(v) => Some(v.clone()),
            _ => None,
        };
    };
    if let Some(i) = any.downcast_ref::<Image>() {
        let mut v = image_summary(i);
        v["metadata"] = header_to_json(&i.header);
        if let Some(w) = &i.header.wcs {
            v["wcs"] = wcs_to_json(w);
        }
        return Some(v);
    }
    if let Some(m) = any.downcast_ref::<Mask>() {
        return Some(mask_summary(m));
    }
    if let Some(w) = any.downcast_ref::<TanWcs>() {
        return Some(wcs_to_json(w));
    }
    if let Some(h) = any.downcast_ref::<Header>() {
        return Some(header_to_json(h));
    }
    if let Some(e) = any.downcast_ref::<Exposure>() {
        return Some(json!({
            "image": image_summary(&e.image),
            "mask": mask_summary(&e.mask),
            "variance": image_summary(&e.variance),
            "wcs": e.wcs.as_ref().map(wcs_to_json),
            "metadata": header_to_json(&e.metadata),
        }));
    }
    if let Some(c) = any.downcast_ref::<SourceCatalog>() {
        return Some(json!({"rows": c.sources.len(), "metadata": header_to_json(&c.header)}));
    }
    if let Some(t) = any.downcast_ref::<ColumnTable>() {
        let mut m = Map::new();
        for (name, data) in &t.columns {
            let values = match data {
                ColumnData::F64(v) => json!(v),
                ColumnData::I64(v) => json!(v),
            };
            m.insert(name.clone(), values);
        }
        return Some(Value::Object(m));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wcs_and_header_round_trip_through_json() {
        let wcs = TanWcs::new((10.5, -3.25), (50.5, 60.5), [[-1e-4, 2e-6], [3e-6, 1e-4]]).unwrap();
        assert_eq!(wcs_from_json(&wcs_to_json(&wcs)).unwrap(), wcs);
        assert!(wcs_from_json(&json!({"ctype": ["RA---SIN", "DEC--SIN"]})).is_err());
        let h = Header {
            kind: Some("calexp".into()),
            exposure: Some(3),
            sigma: Some(1.5),
            ..Header::default()
        };
        assert_eq!(header_from_json(&header_to_json(&h)).unwrap(), h);
        assert!(header_from_json(&json!({"BOGUS": 1})).is_err());
    }
}
