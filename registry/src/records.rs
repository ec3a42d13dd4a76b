//! Dimension records: parsing the files users write (JSON keyed by element,
//! or CSV for one element) and inserting them all-or-nothing.

use std::collections::BTreeMap;

use quanta_core::{DimensionElement, DimensionUniverse, FieldSpec, FieldType, REGION_ID_COLUMN};
use quanta_spatial::Region;
use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::database::{Database, KeyedInsert, Param, Statement};
use crate::error::{ConstraintViolation, RegistryError, Result};
use crate::registry::Registry;
use crate::schema::{key_column, quote, skypix_overlap_table};
use crate::spatial_join::{record_overlaps, NewRegions, RegionsById};
use crate::value::SqlValue;

/// Records to insert, by element name. Each record is a JSON object with the
/// universe's field names.
pub type RecordSet = BTreeMap<String, Vec<Map<String, Value>>>;

/// Parses `{"instrument": [{...}], "detector": [...]}`.
pub fn parse_records_json(text: &str, source: &str) -> Result<RecordSet> {
    serde_json::from_str(text).map_err(|e| {
        RegistryError::Records(format!(
            "{source}: line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// Parses a CSV file with a header row of field names, all for `element`.
/// Values are typed by the element's field types; an empty cell is null.
pub fn parse_records_csv(
    text: &str,
    source: &str,
    element: &DimensionElement,
    universe: &quanta_core::DimensionUniverse,
) -> Result<RecordSet> {
    let fields = element.record_fields(universe);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| RegistryError::Records(format!("{source}: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut types = Vec::new();
    for (col, name) in header.iter().enumerate() {
        let spec = fields.iter().find(|f| &f.name == name).ok_or_else(|| {
            RegistryError::Records(format!(
                "{source}: line 1, column {}: `{name}` is not a field of `{}` (fields: {})",
                col + 1,
                element.name,
                field_names(&fields)
            ))
        })?;
        types.push(spec.field_type);
    }
    let mut records = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| RegistryError::Records(format!("{source}: line {line}: {e}")))?;
        let mut record = Map::new();
        for (col, cell) in row.iter().enumerate() {
            let value = if cell.is_empty() {
                Value::Null
            } else {
                parse_cell(cell, types[col]).map_err(|msg| {
                    RegistryError::Records(format!(
                        "{source}: line {line}, column {} (`{}`): {msg}",
                        col + 1,
                        header[col]
                    ))
                })?
            };
            record.insert(header[col].clone(), value);
        }
        records.push(record);
    }
    Ok(BTreeMap::from([(element.name.clone(), records)]))
}

fn parse_cell(cell: &str, t: FieldType) -> std::result::Result<Value, String> {
    match t {
        FieldType::Int => cell
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("`{cell}` is not an integer")),
        FieldType::Float => cell
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{cell}` is not a number")),
        FieldType::Bool => match cell.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("`{cell}` is not a boolean")),
        },
        FieldType::String => Ok(Value::String(cell.to_string())),
        // A region cell holds its JSON (`{"polygon": [[ra, dec], ...]}`).
        FieldType::Region => {
            serde_json::from_str(cell).map_err(|e| format!("a region must be JSON ({e}): `{cell}`"))
        }
    }
}

fn field_names(fields: &[FieldSpec]) -> String {
    fields
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A non-region field as an SQL value. Regions never come here: the insert
/// parses and pixelizes them once, in parallel, before its first row
/// ([`prepare_regions`]).
fn to_sql(value: &Value, spec: &FieldSpec) -> std::result::Result<SqlValue, String> {
    Ok(match (value, spec.field_type) {
        (Value::Null, _) => SqlValue::Null,
        (Value::Number(n), FieldType::Int) => SqlValue::Integer(
            n.as_i64()
                .ok_or_else(|| format!("`{n}` is not an integer"))?,
        ),
        (Value::Number(n), FieldType::Float) => {
            SqlValue::Real(n.as_f64().ok_or_else(|| format!("`{n}` is not a number"))?)
        }
        (Value::Bool(b), FieldType::Bool) => SqlValue::Integer(*b as i64),
        (Value::String(s), FieldType::String) => {
            if let Some(at) = s.find('\0') {
                return Err(format!(
                    "the value contains a NUL character (at byte {at}), which no name may hold"
                ));
            }
            SqlValue::Text(s.clone())
        }
        (other, t) => return Err(format!("expected {t:?}, got {other}")),
    })
}

/// A record's observation interval must not end before it begins.
fn check_timespan(record: &Map<String, Value>) -> std::result::Result<(), String> {
    let field = |name: &str| record.get(name).and_then(Value::as_f64);
    match (field("timespan_begin"), field("timespan_end")) {
        (Some(begin), Some(end)) if begin > end => Err(format!(
            "field `timespan_begin` ({begin}) is after field `timespan_end` ({end})"
        )),
        _ => Ok(()),
    }
}

/// Renders a record's identifying fields for error messages.
fn describe(element: &str, index: usize, record: &Map<String, Value>) -> String {
    format!(
        "{element} record #{} {}",
        index + 1,
        Value::Object(record.clone())
    )
}

impl Registry {
    /// Inserts dimension records, parents before children (universe order),
    /// all in one transaction: either every record is inserted or none is.
    /// A missing parent record, a duplicate or a bad region is reported
    /// with the record that caused it. Regions are also indexed by sky
    /// pixel (the element's skypix overlap table). Returns the number of
    /// records inserted.
    pub fn insert_dimension_records(&mut self, records: &RecordSet) -> Result<usize> {
        self.check_record_elements(records)?;
        let universe = self.universe.clone();
        let tx = self.db.transaction()?;
        let mut inserted = 0;
        for element in universe.elements() {
            if let Some(rows) = records.get(&element.name) {
                inserted += insert_element_records(&tx, &universe, element, rows, false)?;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// Checks that every element of `records` has records of its own in
    /// this universe.
    pub(crate) fn check_record_elements(&self, records: &RecordSet) -> Result<()> {
        for name in records.keys() {
            match self.universe.element(name) {
                Some(e) if e.has_records => {}
                Some(_) => {
                    return Err(RegistryError::Records(format!(
                        "`{name}` has no records of its own (its values come from the element that implies it)"
                    )))
                }
                None => {
                    return Err(RegistryError::Records(format!(
                        "`{name}` is not an element of this repo's dimension universe"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Inserts dimension records inside a transaction the caller opened,
    /// skipping records whose key already exists (as LSST's import does with
    /// `skip_existing=True`). Returns the number inserted.
    pub(crate) fn insert_dimension_records_skipping_existing(
        &self,
        records: &RecordSet,
    ) -> Result<usize> {
        self.check_record_elements(records)?;
        let mut inserted = 0;
        for element in self.universe.elements() {
            if let Some(rows) = records.get(&element.name) {
                inserted += insert_element_records(&self.db, &self.universe, element, rows, true)?;
            }
        }
        Ok(inserted)
    }
}

/// A record's region, parsed and pixelized before anything is written.
struct PreparedRegion {
    region: Region,
    blob: Vec<u8>,
    pixels: Vec<u64>,
}

/// Parses and pixelizes the regions of `rows` in parallel (the costly part
/// of inserting a survey's visit-detector or patch records); `None` for a
/// record without a region. The first bad region, in record order, is the
/// error.
fn prepare_regions(
    universe: &DimensionUniverse,
    element: &DimensionElement,
    rows: &[Map<String, Value>],
) -> Result<Vec<Option<PreparedRegion>>> {
    let Some(field) = element.region_field() else {
        return Ok(Vec::new());
    };
    let level = universe.skypix_level;
    rows.par_iter()
        .enumerate()
        .map(|(i, record)| match record.get(&field.name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => {
                let region = Region::from_json(value).map_err(|e| {
                    RegistryError::Records(format!(
                        "{}: field `{}`: {e}; nothing was inserted",
                        describe(&element.name, i, record),
                        field.name
                    ))
                })?;
                Ok(Some(PreparedRegion {
                    blob: region.encode(),
                    pixels: region.healpix_pixels(level),
                    region,
                }))
            }
        })
        .collect()
}

/// Inserts one element's records (and their skypix rows) inside the
/// caller's transaction; with `skip_existing`, a record whose key (or any
/// unique column) is already there is skipped. Returns the number inserted.
fn insert_element_records(
    tx: &Database,
    universe: &DimensionUniverse,
    element: &DimensionElement,
    rows: &[Map<String, Value>],
    skip_existing: bool,
) -> Result<usize> {
    let fields = element.record_fields(universe);
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}){}",
        quote(&element.name),
        fields
            .iter()
            .map(|f| quote(&f.name))
            .collect::<Vec<_>>()
            .join(", "),
        (1..=fields.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", "),
        if skip_existing {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        }
    );
    // A record with a region learns the `region_id` its insert assigned
    // (none when skipped as existing), which its skypix rows name.
    let mut stmt = match element.region_field() {
        Some(_) => RecordInsert::Keyed(tx.prepare_keyed_insert(&sql, REGION_ID_COLUMN)?),
        None => RecordInsert::Plain(tx.prepare(&sql)?),
    };
    let mut inserted = 0;
    let key_fields = element.required_closure.len() + usize::from(element.key.is_some());
    let mut regions = prepare_regions(universe, element, rows)?;
    let mut skypix = SkypixWriter::new(tx, element)?;
    for (i, record) in rows.iter().enumerate() {
        for name in record.keys() {
            if !fields.iter().any(|f| &f.name == name) {
                return Err(RegistryError::Records(format!(
                    "{}: `{name}` is not a field of `{}` (fields: {})",
                    describe(&element.name, i, record),
                    element.name,
                    field_names(&fields)
                )));
            }
        }
        let region = regions.get_mut(i).and_then(Option::take);
        let mut values = Vec::with_capacity(fields.len());
        for (j, spec) in fields.iter().enumerate() {
            let value = record.get(&spec.name).unwrap_or(&Value::Null);
            if j < key_fields && value.is_null() {
                return Err(RegistryError::Records(format!(
                    "{}: missing the key field `{}`",
                    describe(&element.name, i, record),
                    spec.name
                )));
            }
            if spec.field_type == FieldType::Region {
                values.push(match &region {
                    Some(r) => SqlValue::Blob(r.blob.clone()),
                    None => SqlValue::Null,
                });
                continue;
            }
            values.push(to_sql(value, spec).map_err(|msg| {
                RegistryError::Records(format!(
                    "{}: field `{}`: {msg}",
                    describe(&element.name, i, record),
                    spec.name
                ))
            })?);
        }
        check_timespan(record).map_err(|msg| {
            RegistryError::Records(format!(
                "{}: {msg}; nothing was inserted",
                describe(&element.name, i, record)
            ))
        })?;
        let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
        let written = match &mut stmt {
            RecordInsert::Plain(stmt) => stmt.execute(&params).map(|n| (n > 0, None)),
            RecordInsert::Keyed(stmt) => stmt.insert(&params).map(|id| (id.is_some(), id)),
        };
        match written {
            Ok((false, _)) => continue,
            Ok((true, region_id)) => {
                inserted += 1;
                if let (Some(writer), Some(region), Some(id)) = (skypix.as_mut(), region, region_id)
                {
                    writer.add(id, region);
                }
            }
            Err(e) => {
                let why = diagnose_insert_failure(tx, universe, element, record, &e);
                return Err(RegistryError::Records(format!(
                    "{}: {why}; nothing was inserted",
                    describe(&element.name, i, record)
                )));
            }
        }
    }
    if let Some(writer) = skypix {
        let new = writer.write(element)?;
        record_overlaps(tx, universe, &new)?;
    }
    Ok(inserted)
}

/// The insert of an element's records: one with a region learns the key
/// the database assigned it.
enum RecordInsert<'t> {
    Plain(Statement<'t>),
    Keyed(KeyedInsert<'t>),
}

/// Collects the sky pixels of an element's records and writes them into
/// its skypix overlap table in cell order (the table's key order), so the
/// B-tree grows by appends rather than by random inserts; then hands the
/// records' cells and regions on to the overlap tables.
struct SkypixWriter<'t> {
    stmt: Statement<'t>,
    /// (cell, the record's `region_id`).
    cells: Vec<(i64, i64)>,
    /// (`region_id`, region), in insert order (ids ascend).
    regions: Vec<(i64, Region)>,
}

impl<'t> SkypixWriter<'t> {
    /// `None` for an element without a region.
    fn new(tx: &'t Database, element: &DimensionElement) -> Result<Option<Self>> {
        if element.region_field().is_none() {
            return Ok(None);
        }
        let sql = format!(
            "INSERT INTO {} (skypix, region_id) VALUES (?1, ?2)",
            quote(&skypix_overlap_table(element)),
        );
        Ok(Some(Self {
            stmt: tx.prepare(&sql)?,
            cells: Vec::new(),
            regions: Vec::new(),
        }))
    }

    fn add(&mut self, region_id: i64, prepared: PreparedRegion) {
        // Levels are at most MAX_SKYPIX_LEVEL (24): indices < 2^52.
        self.cells
            .extend(prepared.pixels.iter().map(|&p| (p as i64, region_id)));
        self.regions.push((region_id, prepared.region));
    }

    fn write<'e>(mut self, element: &'e DimensionElement) -> Result<NewRegions<'e>> {
        self.cells.sort_unstable();
        for &(pixel, region_id) in &self.cells {
            self.stmt.execute(&[&pixel, &region_id])?;
        }
        Ok(NewRegions {
            element,
            cells: self.cells,
            regions: RegionsById(self.regions),
        })
    }
}

/// Turns a broken integrity rule into which parent is missing or which
/// key is duplicated.
fn diagnose_insert_failure(
    db: &Database,
    universe: &quanta_core::DimensionUniverse,
    element: &DimensionElement,
    record: &Map<String, Value>,
    err: &RegistryError,
) -> String {
    let text = err.to_string();
    if err.constraint() == Some(ConstraintViolation::Unique) {
        return "a record with the same key already exists".to_string();
    }
    if err.constraint() == Some(ConstraintViolation::ForeignKey) {
        for dim in element.required_closure.iter().chain(&element.implies) {
            let Some(target) = universe.element(dim) else {
                continue;
            };
            if !target.has_records {
                continue;
            }
            let Some(key) = key_column(target) else {
                continue;
            };
            let Some(value) = record.get(dim).filter(|v| !v.is_null()) else {
                continue;
            };
            let mut cond = vec![format!("{} = ?1", quote(key))];
            let mut params = vec![to_sql(
                value,
                &FieldSpec {
                    name: dim.clone(),
                    field_type: universe.key_type(dim),
                },
            )
            .unwrap_or(SqlValue::Null)];
            for r in &target.required_closure {
                cond.push(format!("{} = ?{}", quote(r), cond.len() + 1));
                params.push(
                    record
                        .get(r)
                        .and_then(|v| {
                            to_sql(
                                v,
                                &FieldSpec {
                                    name: r.clone(),
                                    field_type: universe.key_type(r),
                                },
                            )
                            .ok()
                        })
                        .unwrap_or(SqlValue::Null),
                );
            }
            let sql = format!("SELECT 1 FROM {} WHERE {}", quote(dim), cond.join(" AND "));
            let params: Vec<&dyn Param> = params.iter().map(|v| v as &dyn Param).collect();
            let exists = matches!(db.query_row(&sql, &params, |_| Ok(())), Ok(Some(())));
            if !exists {
                return format!(
                    "its {dim} `{value}` does not exist (insert the {dim} record first)"
                );
            }
        }
    }
    text
}
