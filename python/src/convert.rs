//! Python objects ⇄ quanta's plain types: JSON values, data IDs, bind
//! values, collection lists and read parameters.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PySlice, PyString, PyTuple};
use quanta_core::{DataId, DataIdValue, DimensionUniverse};
use quanta_datastore::ReadParameters;
use quanta_registry::{Binds, SqlValue};
use serde_json::{Map, Number, Value};

use crate::errors::{quanta_error, IntoPyResult};

/// A JSON value as plain Python objects (dict, list, str, int, float,
/// bool, None).
pub fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// Any serializable value as plain Python objects, through its JSON form
/// (the form the CLI's `--json` prints).
pub fn serde_to_py<'py, T: serde::Serialize>(
    py: Python<'py>,
    v: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| quanta_error(e.to_string()))?;
    json_to_py(py, &value)
}

/// A Python object as JSON: dicts with string keys, lists and tuples,
/// str, int, float (finite), bool and None; numpy arrays and scalars
/// through their `tolist()`.
pub fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        let u: u64 = obj
            .extract()
            .map_err(|_| PyValueError::new_err(format!("{obj} does not fit a 64-bit integer")))?;
        return Ok(Value::from(u));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        return Number::from_f64(x).map(Value::Number).ok_or_else(|| {
            PyValueError::new_err(format!("{x} cannot be stored as JSON (not finite)"))
        });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_string()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!("JSON object keys must be str, got {k:?}"))
            })?;
            map.insert(key.to_str()?.to_string(), py_to_json(&v)?);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items: PyResult<Vec<Value>> = obj.try_iter()?.map(|item| py_to_json(&item?)).collect();
        return Ok(Value::Array(items?));
    }
    // numpy arrays and scalars (and anything else with the same idea).
    if obj.hasattr("tolist")? {
        let plain = obj.call_method0("tolist")?;
        if !plain.is(obj) {
            return py_to_json(&plain);
        }
    }
    Err(PyTypeError::new_err(format!(
        "cannot store a {} as JSON (use dict, list, str, int, float, bool or None)",
        obj.get_type().name()?
    )))
}

/// A data ID from a `k=v,k=v` string (parsed as the CLI's `--data-id`), a
/// mapping of dimension → value, or None, plus keyword arguments. String
/// values of integer dimensions are parsed as the CLI parses them.
pub fn data_id(
    obj: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
    universe: &DimensionUniverse,
) -> PyResult<DataId> {
    let mut id = match obj {
        None => DataId::empty(),
        Some(o) if o.is_none() => DataId::empty(),
        Some(o) => {
            if let Ok(s) = o.cast::<PyString>() {
                DataId::parse_cli(s.to_str()?, universe).py_err()?
            } else if let Ok(m) = o.cast::<PyMapping>() {
                let mut id = DataId::empty();
                for item in m.items()?.iter() {
                    let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
                    add_entry(&mut id, &k, &v, universe)?;
                }
                id
            } else {
                return Err(PyTypeError::new_err(format!(
                    "data_id: expected a dict or a \"k=v,k=v\" string, got {}",
                    o.get_type().name()?
                )));
            }
        }
    };
    if let Some(kwargs) = kwargs {
        for (k, v) in kwargs.iter() {
            add_entry(&mut id, &k, &v, universe)?;
        }
    }
    Ok(id)
}

fn add_entry(
    id: &mut DataId,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    universe: &DimensionUniverse,
) -> PyResult<()> {
    let key: String = key
        .extract()
        .map_err(|_| PyTypeError::new_err("data ID keys must be dimension names (str)"))?;
    let field_type = universe
        .dimension(&key)
        .py_err()?
        .key
        .as_ref()
        .map(|k| k.field_type)
        .unwrap_or(quanta_core::FieldType::String);
    if id.get(&key).is_some() {
        return Err(quanta_error(format!(
            "the data ID gives dimension `{key}` more than once"
        )));
    }
    let parsed = if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{key}: a data ID value is an int or a str, not a bool"
        )));
    } else if let Ok(i) = value.extract::<i64>() {
        DataIdValue::Int(i)
    } else if let Ok(s) = value.cast::<PyString>() {
        let text = s.to_str()?;
        if text.contains('\0') {
            return Err(quanta_error(format!(
                "{key}: the value contains a NUL character"
            )));
        }
        DataIdValue::parse_typed(text.trim(), field_type)
            .map_err(|e| quanta_error(format!("{key}: {e}")))?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{key}: a data ID value is an int or a str, got {}",
            value.get_type().name()?
        )));
    };
    id.insert(key, parsed);
    Ok(())
}

/// Bind values for `where=` placeholders (`:name`), typed by their Python
/// type: int, float, str, bytes, bool (as 0/1) or None.
pub fn binds(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Binds> {
    let mut out = Binds::new();
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(out);
    };
    let map = obj
        .cast::<PyMapping>()
        .map_err(|_| PyTypeError::new_err("bind: expected a dict of name → value"))?;
    for item in map.items()?.iter() {
        let (name, value): (String, Bound<'_, PyAny>) = item.extract()?;
        let v = if value.is_none() {
            SqlValue::Null
        } else if let Ok(b) = value.cast::<PyBool>() {
            SqlValue::Integer(i64::from(b.is_true()))
        } else if let Ok(i) = value.extract::<i64>() {
            SqlValue::Integer(i)
        } else if let Ok(f) = value.extract::<f64>() {
            SqlValue::Real(f)
        } else if let Ok(s) = value.extract::<String>() {
            SqlValue::Text(s)
        } else if let Ok(b) = value.extract::<Vec<u8>>() {
            SqlValue::Blob(b)
        } else {
            return Err(PyTypeError::new_err(format!(
                "bind {name}: expected int, float, str, bytes, bool or None, got {}",
                value.get_type().name()?
            )));
        };
        out.insert(name.trim().to_string(), v);
    }
    Ok(out)
}

/// A list of names from a str (one name, or several separated by commas,
/// as on the command line) or an iterable of str.
pub fn names(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s
            .to_str()?
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect());
    }
    let mut out = Vec::new();
    for item in obj
        .try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{what}: expected a str or a list of str")))?
    {
        let item = item?;
        out.push(
            item.extract::<String>()
                .map_err(|_| PyTypeError::new_err(format!("{what}: expected str items")))?,
        );
    }
    Ok(out)
}

/// Read parameters from a dict: `{"bbox": "x0,y0,x1,y1"}` or a 4-tuple,
/// `{"columns": ["x", "y"]}` or `"x,y"`, `{"rows": (start, end)}`, a
/// slice or `"start:end"`; validated as the CLI's `--parameters`.
pub fn read_parameters(obj: Option<&Bound<'_, PyAny>>) -> PyResult<ReadParameters> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(ReadParameters::new());
    };
    let map = obj
        .cast::<PyMapping>()
        .map_err(|_| PyTypeError::new_err("parameters: expected a dict of name → value"))?;
    let mut items = Vec::new();
    for item in map.items()?.iter() {
        let (name, value): (String, Bound<'_, PyAny>) = item.extract()?;
        let text = parameter_text(&name, &value)?;
        items.push(format!("{name}={text}"));
    }
    ReadParameters::parse(items.iter().map(String::as_str))
        .map_err(|e| quanta_error(format!("parameters: {e}")))
}

fn parameter_text(name: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_str()?.to_string());
    }
    if let Ok(slice) = value.cast::<PySlice>() {
        let start: Option<i64> = slice.getattr("start")?.extract()?;
        let stop: Option<i64> = slice.getattr("stop")?.extract()?;
        let step = slice.getattr("step")?;
        if !step.is_none() {
            return Err(PyValueError::new_err(format!(
                "parameter {name}: a slice with a step is not supported"
            )));
        }
        return match (start, stop) {
            (Some(a), Some(b)) => Ok(format!("{a}:{b}")),
            _ => Err(PyValueError::new_err(format!(
                "parameter {name}: give a slice with a start and a stop"
            ))),
        };
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(value.str()?.to_str()?.to_string());
    }
    let parts: Vec<String> = match value.try_iter() {
        Ok(iter) => iter
            .map(|item| Ok(item?.str()?.to_str()?.to_string()))
            .collect::<PyResult<_>>()?,
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "parameter {name}: expected a str, a sequence or a slice, got {}",
                value.get_type().name()?
            )))
        }
    };
    // `rows` is a range START:END; everything else a comma-separated list.
    let separator = if name == "rows" { ":" } else { "," };
    Ok(parts.join(separator))
}
