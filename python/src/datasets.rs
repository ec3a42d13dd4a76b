//! In-memory datasets ⇄ Python objects.
//!
//! To Python: `Json` → plain objects; `Bytes` → `bytes`; the FITS formats'
//! types (`quanta-formats`) → numpy: an `ImageF` image is a
//! `quanta.ImageArray` (a float32 `ndarray` of shape (height, width) with
//! `.header`, the FITS cards, and `.wcs`), a mask an int32 `ndarray`, an
//! exposure a `quanta.Exposure` of those, a catalog a `quanta.Catalog`
//! (dict of column arrays, named as the FITS table's columns, with `.header`), a WCS or metadata component a
//! dict (the JSON `quanta get` prints).
//!
//! From Python (`put`): JSON-like objects for `Json`, `bytes` for `Bytes`,
//! a 2-D array (with optional `.header` and `.wcs`) for `ImageF`.
//!
//! Pixels are copied once into a `bytearray` that numpy then views (no
//! second copy): the compiled module does not link numpy's C API, so one
//! wheel serves every numpy version.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};
use quanta_datastore::InMemoryDataset;
use quanta_formats::fits::describe::{
    header_from_json, header_to_json, wcs_from_json, wcs_to_json,
};
use quanta_formats::fits::{
    ColumnData, ColumnTable, Exposure, Header, Image, Mask, SourceCatalog, TanWcs,
};

use crate::convert::{json_to_py, py_to_json};
use crate::errors::quanta_error;

/// Plain values that fit in a `bytearray` as native-endian bytes.
trait Pod: Copy {
    const SIZE: usize;
    const DTYPE: &'static str;
    fn write(self, out: &mut [u8]);
}

impl Pod for f32 {
    const SIZE: usize = 4;
    const DTYPE: &'static str = "float32";
    fn write(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_ne_bytes());
    }
}

impl Pod for f64 {
    const SIZE: usize = 8;
    const DTYPE: &'static str = "float64";
    fn write(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_ne_bytes());
    }
}

impl Pod for i32 {
    const SIZE: usize = 4;
    const DTYPE: &'static str = "int32";
    fn write(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_ne_bytes());
    }
}

impl Pod for i64 {
    const SIZE: usize = 8;
    const DTYPE: &'static str = "int64";
    fn write(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_ne_bytes());
    }
}

/// A writable numpy array of `values` with `shape` (C order).
fn ndarray<'py, T: Pod>(
    py: Python<'py>,
    values: &[T],
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let buffer = PyByteArray::new_with(py, values.len() * T::SIZE, |bytes| {
        for (chunk, v) in bytes.chunks_exact_mut(T::SIZE).zip(values) {
            v.write(chunk);
        }
        Ok(())
    })?;
    let numpy = py.import("numpy")?;
    let flat = numpy.call_method1("frombuffer", (buffer, T::DTYPE))?;
    flat.call_method1("reshape", (shape.to_vec(),))
}

fn types_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("quanta._types")
}

fn header_dict<'py>(py: Python<'py>, h: &Header) -> PyResult<Bound<'py, PyAny>> {
    json_to_py(py, &header_to_json(h))
}

fn wcs_dict<'py>(py: Python<'py>, wcs: Option<&TanWcs>) -> PyResult<Bound<'py, PyAny>> {
    match wcs {
        Some(w) => json_to_py(py, &wcs_to_json(w)),
        None => Ok(py.None().into_bound(py)),
    }
}

fn image_array<'py>(
    py: Python<'py>,
    image: &Image,
    header: &Header,
    wcs: Option<&TanWcs>,
) -> PyResult<Bound<'py, PyAny>> {
    let array = ndarray(py, image.pixels(), &[image.height(), image.width()])?;
    types_module(py)?.getattr("ImageArray")?.call_method1(
        "_wrap",
        (array, header_dict(py, header)?, wcs_dict(py, wcs)?),
    )
}

fn mask_array<'py>(py: Python<'py>, mask: &Mask) -> PyResult<Bound<'py, PyAny>> {
    ndarray(py, mask.bits(), &[mask.height(), mask.width()])
}

fn catalog<'py>(
    py: Python<'py>,
    columns: Vec<(&str, Bound<'py, PyAny>)>,
    header: Option<&Header>,
) -> PyResult<Bound<'py, PyAny>> {
    let dict = PyDict::new(py);
    for (name, values) in columns {
        dict.set_item(name, values)?;
    }
    let header = match header {
        Some(h) => header_dict(py, h)?,
        None => PyDict::new(py).into_any(),
    };
    types_module(py)?.getattr("Catalog")?.call1((dict, header))
}

fn source_catalog<'py>(py: Python<'py>, c: &SourceCatalog) -> PyResult<Bound<'py, PyAny>> {
    let f64_column = |f: fn(&quanta_formats::fits::Source) -> f64| -> PyResult<Bound<'py, PyAny>> {
        let values: Vec<f64> = c.sources.iter().map(f).collect();
        ndarray(py, &values, &[values.len()])
    };
    let npix: Vec<i64> = c.sources.iter().map(|s| s.npix).collect();
    let columns = vec![
        ("X", f64_column(|s| s.x)?),
        ("Y", f64_column(|s| s.y)?),
        ("FLUX", f64_column(|s| s.flux)?),
        ("PEAK", f64_column(|s| s.peak)?),
        ("NPIX", ndarray(py, &npix, &[npix.len()])?),
    ];
    catalog(py, columns, Some(&c.header))
}

fn column_table<'py>(py: Python<'py>, t: &ColumnTable) -> PyResult<Bound<'py, PyAny>> {
    let mut columns = Vec::with_capacity(t.columns.len());
    for (name, data) in &t.columns {
        let values = match data {
            ColumnData::F64(v) => ndarray(py, v, &[v.len()])?,
            ColumnData::I64(v) => ndarray(py, v, &[v.len()])?,
        };
        columns.push((name.as_str(), values));
    }
    catalog(py, columns, None)
}

/// A dataset read by the butler as a Python object (see the module doc).
pub fn to_python<'py>(py: Python<'py>, obj: &InMemoryDataset) -> PyResult<Bound<'py, PyAny>> {
    let any = match obj {
        InMemoryDataset::Json(v) => return json_to_py(py, v),
        InMemoryDataset::Bytes(b) => return Ok(PyBytes::new(py, b).into_any()),
        InMemoryDataset::Other(any) => any,
    };
    if let Some(i) = any.downcast_ref::<Image>() {
        return image_array(py, i, &i.header, i.header.wcs.as_ref());
    }
    if let Some(m) = any.downcast_ref::<Mask>() {
        return mask_array(py, m);
    }
    if let Some(e) = any.downcast_ref::<Exposure>() {
        let no_header = Header::default();
        let image = image_array(py, &e.image, &no_header, None)?;
        let variance = image_array(py, &e.variance, &no_header, None)?;
        return types_module(py)?.getattr("Exposure")?.call1((
            image,
            mask_array(py, &e.mask)?,
            variance,
            wcs_dict(py, e.wcs.as_ref())?,
            header_dict(py, &e.metadata)?,
        ));
    }
    if let Some(w) = any.downcast_ref::<TanWcs>() {
        return wcs_dict(py, Some(w));
    }
    if let Some(h) = any.downcast_ref::<Header>() {
        return header_dict(py, h);
    }
    if let Some(c) = any.downcast_ref::<SourceCatalog>() {
        return source_catalog(py, c);
    }
    if let Some(t) = any.downcast_ref::<ColumnTable>() {
        return column_table(py, t);
    }
    Err(quanta_error(
        "this dataset's in-memory type has no Python form in this package \
         (read its bytes with parameters=None into a file with the CLI's `get --output`)",
    ))
}

/// A Python object as the in-memory dataset of `storage_class`, for `put`.
pub fn from_python(obj: &Bound<'_, PyAny>, storage_class: &str) -> PyResult<InMemoryDataset> {
    match storage_class {
        "Json" => Ok(InMemoryDataset::Json(py_to_json(obj)?)),
        "Bytes" => {
            let bytes: Vec<u8> = obj.extract().map_err(|_| {
                PyTypeError::new_err("a Bytes dataset is put from bytes or bytearray")
            })?;
            Ok(InMemoryDataset::Bytes(bytes))
        }
        quanta_formats::fits::IMAGE_STORAGE_CLASS => {
            Ok(InMemoryDataset::Other(Box::new(image_from_python(obj)?)))
        }
        other => Err(quanta_error(format!(
            "put of storage class {other} is not supported from Python \
             (Json, Bytes and ImageF are)"
        ))),
    }
}

/// An `Image` from a 2-D array-like (converted to contiguous float32) with
/// optional `.header` (FITS cards, as `get` returns them) and `.wcs`.
fn image_from_python(obj: &Bound<'_, PyAny>) -> PyResult<Image> {
    let py = obj.py();
    let numpy = py.import("numpy")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", numpy.getattr("float32")?)?;
    let array = numpy.call_method("ascontiguousarray", (obj,), Some(&kwargs))?;
    let shape: Vec<usize> = array.getattr("shape")?.extract()?;
    let [height, width] = shape[..] else {
        return Err(PyValueError::new_err(format!(
            "an ImageF dataset is a 2-D array, got shape {shape:?}"
        )));
    };
    let raw = array.call_method0("tobytes")?;
    let bytes = raw.cast::<PyBytes>()?.as_bytes();
    let pixels: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut image = Image::new(width, height, pixels).map_err(|e| quanta_error(e.to_string()))?;
    if let Some(header) = attribute(obj, "header")? {
        image.header = header_from_json(&py_to_json(&header)?)
            .map_err(|e| quanta_error(format!("header: {e}")))?;
    }
    if let Some(wcs) = attribute(obj, "wcs")? {
        image.header.wcs =
            Some(wcs_from_json(&py_to_json(&wcs)?).map_err(|e| quanta_error(format!("wcs: {e}")))?);
    }
    Ok(image)
}

/// `obj.name` when present and not None.
fn attribute<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    if !obj.hasattr(name)? {
        return Ok(None);
    }
    let value = obj.getattr(name)?;
    Ok((!value.is_none()).then_some(value))
}
