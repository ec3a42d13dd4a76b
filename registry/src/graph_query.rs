//! The set-based queries preflight builds a quantum graph from.
//!
//! [`Registry::query_graph_rows`] runs ONE statement: the dimension tables of
//! the pipeline's dimensions joined together, the `--where` expression, and,
//! for each overall input dataset type, a join against its datasets in the
//! input collections (so only data IDs whose inputs exist come back, and each
//! row carries the input's UUID, RUN and file record). Find-first along the
//! search path is resolved in memory from a per-collection rank column.
//! [`Registry::query_prerequisite_candidates`] fetches every candidate of a
//! prerequisite (with calibration validity ranges) in one statement per
//! dataset type. Values are dictionary-encoded per column to keep a
//! million-row result small.
//!
//! Owns: these read-only queries. Must not: build SQL from user text (the
//! `--where` expression is compiled to parameters by [`crate::expr`]).

use foldhash::{HashMap, HashMapExt};

use quanta_core::{CollectionType, DataId, DataIdValue, DimensionGroup, Uuid};
use rusqlite::types::Value as SqlValue;

use crate::datasets::{data_id_from_stored, uuid_from_blob, DatastoreRecord};
use crate::error::{RegistryError, Result};
use crate::query::{Binds, QueryBuilder};
use crate::registry::Registry;
use crate::schema::quote;

/// "No value": a NULL implied dimension, or no dataset.
pub const NONE: u32 = u32::MAX;

/// An input dataset found by the graph query.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDataset {
    pub id: Uuid,
    pub dataset_type: String,
    /// The dataset's data ID (its type's dimensions, universe order).
    pub data_id: DataId,
    pub run: String,
    pub stored: Option<DatastoreRecord>,
}

/// The rows of a graph query, dictionary-encoded.
#[derive(Debug, Clone, Default)]
pub struct GraphRows {
    /// Dimension names of the value columns: the requested dimensions, then
    /// the implied dimensions the joins made known, in universe order.
    pub columns: Vec<String>,
    /// Distinct values of each column; `values` refer to them by index.
    pub dictionary: Vec<Vec<DataIdValue>>,
    /// Row-major `n_rows × columns.len()` value indices ([`NONE`] for NULL).
    pub values: Vec<u32>,
    /// The overall input dataset type names, in the order given.
    pub input_types: Vec<String>,
    /// Row-major `n_rows × input_types.len()` indices into `inputs[k]`.
    pub input_refs: Vec<u32>,
    /// Per input type, the distinct datasets the rows refer to.
    pub inputs: Vec<Vec<InputDataset>>,
}

impl GraphRows {
    pub fn n_rows(&self) -> usize {
        if self.columns.is_empty() {
            0
        } else {
            self.values.len() / self.columns.len()
        }
    }

    pub fn column(&self, dim: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == dim)
    }

    /// Value indices of row `r`.
    pub fn row(&self, r: usize) -> &[u32] {
        let n = self.columns.len();
        &self.values[r * n..(r + 1) * n]
    }

    /// Input dataset indices of row `r`.
    pub fn row_inputs(&self, r: usize) -> &[u32] {
        let n = self.input_types.len();
        &self.input_refs[r * n..(r + 1) * n]
    }

    pub fn value(&self, column: usize, index: u32) -> Option<&DataIdValue> {
        self.dictionary.get(column)?.get(index as usize)
    }
}

/// A candidate for a prerequisite input: found through collection `rank`
/// of the search path; calibrations carry their validity range `[begin,
/// end)` (MJD), other datasets match at any time.
#[derive(Debug, Clone, PartialEq)]
pub struct PrerequisiteCandidate {
    pub rank: usize,
    pub dataset: InputDataset,
    pub validity: Option<(f64, f64)>,
}

struct Interner {
    index: HashMap<DataIdValue, u32>,
    values: Vec<DataIdValue>,
}

impl Interner {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            values: Vec::new(),
        }
    }

    /// Borrows the column's value: no allocation per row for text keys.
    fn intern(&mut self, v: rusqlite::types::ValueRef<'_>) -> Result<u32> {
        use rusqlite::types::ValueRef;
        let v = match v {
            ValueRef::Null => return Ok(NONE),
            ValueRef::Integer(i) => DataIdValue::Int(i),
            ValueRef::Text(t) => DataIdValue::from(std::str::from_utf8(t).map_err(|e| {
                RegistryError::Invalid(format!("a dimension value is not UTF-8: {e}"))
            })?),
            other => {
                return Err(RegistryError::Invalid(format!(
                    "unexpected dimension value {other:?}"
                )))
            }
        };
        if let Some(&i) = self.index.get(&v) {
            return Ok(i);
        }
        let i = self.values.len() as u32;
        self.index.insert(v.clone(), i);
        self.values.push(v);
        Ok(i)
    }
}

impl Registry {
    /// The rows of the pipeline query: every data ID over `dimensions`
    /// (closed under `requires`) that has dimension records, satisfies
    /// `where_text`, and for which each of `input_types` has a dataset in
    /// `collections` (find-first along the search path; CALIBRATION
    /// collections are not searched for regular inputs).
    pub fn query_graph_rows(
        &self,
        dimensions: &DimensionGroup,
        where_text: &str,
        binds: &Binds,
        input_types: &[String],
        collections: &[String],
    ) -> Result<GraphRows> {
        let search_path: Vec<_> = self
            .resolve_search_path(collections)?
            .into_iter()
            .filter(|c| {
                matches!(
                    c.collection_type,
                    CollectionType::Run | CollectionType::Tagged
                )
            })
            .collect();
        let mut builder = QueryBuilder::new(&self.universe);
        for dim in dimensions.iter() {
            builder
                .dimension_value(dim)
                .map_err(RegistryError::Invalid)?;
        }
        builder.add_where(where_text, binds)?;
        let mut input_dims = Vec::new();
        for (k, name) in input_types.iter().enumerate() {
            let dt = self.dataset_type_required(name)?;
            let type_id = self.dataset_type_id(name)?;
            if !dt.dimensions.is_subset_of(dimensions) {
                return Err(RegistryError::Invalid(format!(
                    "input dataset type {dt} has dimensions outside the query's {dimensions}"
                )));
            }
            let dim_cols: Vec<String> = dt
                .dimensions
                .iter()
                .map(|d| format!("d.{q} AS {q}", q = quote(d)))
                .collect();
            let mut parts = Vec::new();
            for (rank, c) in search_path.iter().enumerate() {
                let mut cols = vec![
                    "d.id AS id".to_string(),
                    "d.run_id AS run_id".to_string(),
                    format!("{rank} AS rank"),
                ];
                cols.extend(dim_cols.iter().cloned());
                match c.collection_type {
                    CollectionType::Run => parts.push((
                        format!(
                            "SELECT {} FROM dataset AS d WHERE d.dataset_type_id = ? AND d.run_id = ?",
                            cols.join(", ")
                        ),
                        [type_id, c.id],
                    )),
                    _ => parts.push((
                        format!(
                            "SELECT {} FROM dataset_tags AS m JOIN dataset AS d ON d.id = m.dataset_id \
                             WHERE m.dataset_type_id = ? AND m.collection_id = ?",
                            cols.join(", ")
                        ),
                        [type_id, c.id],
                    )),
                }
            }
            if parts.is_empty() {
                // Nothing searchable: no input can exist, so no rows.
                parts.push((
                    "SELECT NULL AS id, NULL AS run_id, 0 AS rank WHERE 0".to_string(),
                    [0, 0],
                ));
            }
            let alias = format!("i{k}");
            let sub = parts
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            // The subquery's parameters must precede the WHERE's in the
            // final statement: FROM items come first.
            let mut sub_params: Vec<SqlValue> = Vec::new();
            for (_, p) in &parts {
                if search_path.is_empty() {
                    break;
                }
                sub_params.extend(p.iter().map(|&v| SqlValue::Integer(v)));
            }
            builder.from.push(format!(
                "({sub}) AS {alias} LEFT JOIN datastore_record AS r{k} ON r{k}.dataset_id = {alias}.id"
            ));
            input_dims.push((alias, dt, sub_params));
        }
        let mut from_params: Vec<SqlValue> = Vec::new();
        for (alias, dt, sub_params) in &input_dims {
            for d in dt.dimensions.iter() {
                let v = builder.values[d].clone();
                builder
                    .conditions
                    .push(format!("{alias}.{} = {v}", quote(d)));
            }
            from_params.extend(sub_params.iter().cloned());
        }
        // Columns: requested dimensions first, then implied ones the joins know.
        let mut columns: Vec<String> = dimensions.names.clone();
        for e in self.universe.dimensions() {
            if !columns.contains(&e.name) && builder.values.contains_key(&e.name) {
                columns.push(e.name.clone());
            }
        }
        let mut select: Vec<String> = columns.iter().map(|c| builder.values[c].clone()).collect();
        for k in 0..input_types.len() {
            select.push(format!("i{k}.id, i{k}.rank, i{k}.run_id, r{k}.path, r{k}.formatter, r{k}.size, r{k}.checksum"));
        }
        let sql = format!(
            "SELECT {} FROM {}{}",
            select.join(", "),
            builder.from.join(", "),
            builder.where_sql()
        );
        tracing::debug!(%sql, "query_graph_rows");
        let params: Vec<SqlValue> = from_params
            .into_iter()
            .chain(builder.params.iter().cloned())
            .collect();

        let run_names: HashMap<i64, String> = self
            .conn
            .prepare("SELECT id, name FROM collection WHERE type = 'RUN'")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let n_cols = columns.len();
        let n_in = input_types.len();
        let mut interners: Vec<Interner> = (0..n_cols).map(|_| Interner::new()).collect();
        let mut out = GraphRows {
            columns: columns.clone(),
            input_types: input_types.to_vec(),
            inputs: vec![Vec::new(); n_in],
            ..Default::default()
        };
        let mut dataset_ix: Vec<HashMap<Uuid, u32>> = vec![HashMap::new(); n_in];
        // Find-first: the best rank seen per row key and input.
        let mut row_of: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut ranks: Vec<usize> = Vec::new();
        let dedupe = search_path.len() > 1 && n_in > 0;
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut key = Vec::with_capacity(n_cols);
        while let Some(row) = rows.next()? {
            key.clear();
            for (c, interner) in interners.iter_mut().enumerate() {
                key.push(interner.intern(row.get_ref(c)?)?);
            }
            let existing = if dedupe {
                row_of.get(&key).copied()
            } else {
                None
            };
            let r = match existing {
                Some(r) => r,
                None => {
                    let r = out.values.len() / n_cols.max(1);
                    out.values.extend_from_slice(&key);
                    out.input_refs.resize(out.input_refs.len() + n_in, NONE);
                    ranks.resize(ranks.len() + n_in, usize::MAX);
                    if dedupe {
                        row_of.insert(key.clone(), r);
                    }
                    r
                }
            };
            for k in 0..n_in {
                let base = n_cols + k * 7;
                let rank: i64 = row.get(base + 1)?;
                let rank = rank as usize;
                if rank >= ranks[r * n_in + k] {
                    continue;
                }
                let id = uuid_from_blob(row.get(base)?)?;
                let ix = match dataset_ix[k].get(&id) {
                    Some(&i) => i,
                    None => {
                        let (_, dt, _) = &input_dims[k];
                        let mut data_id = DataId::empty();
                        for d in dt.dimensions.iter() {
                            let c = columns
                                .iter()
                                .position(|x| x == d)
                                .expect("input dims are columns");
                            let v = interners[c]
                                .values
                                .get(key[c] as usize)
                                .cloned()
                                .ok_or_else(|| {
                                    RegistryError::Invalid(format!("{} has a NULL {d}", dt.name))
                                })?;
                            data_id.insert(d, v);
                        }
                        let run_id: i64 = row.get(base + 2)?;
                        let path: Option<String> = row.get(base + 3)?;
                        let stored = match path {
                            Some(path) => Some(DatastoreRecord {
                                path,
                                formatter: row.get(base + 4)?,
                                size: row.get::<_, i64>(base + 5)? as u64,
                                checksum: row.get(base + 6)?,
                            }),
                            None => None,
                        };
                        let i = out.inputs[k].len() as u32;
                        out.inputs[k].push(InputDataset {
                            id,
                            dataset_type: dt.name.clone(),
                            data_id,
                            run: run_names.get(&run_id).cloned().unwrap_or_default(),
                            stored,
                        });
                        dataset_ix[k].insert(id, i);
                        i
                    }
                };
                out.input_refs[r * n_in + k] = ix;
                ranks[r * n_in + k] = rank;
            }
        }
        out.dictionary = interners.into_iter().map(|i| i.values).collect();
        Ok(out)
    }

    /// Every candidate for a prerequisite of type `dataset_type` in
    /// `collections`: datasets in RUN and TAGGED collections, and, for
    /// calibration types, certifications in CALIBRATION collections with
    /// their validity ranges. One statement per collection kind.
    pub fn query_prerequisite_candidates(
        &self,
        dataset_type: &str,
        collections: &[String],
    ) -> Result<Vec<PrerequisiteCandidate>> {
        let dt = self.dataset_type_required(dataset_type)?;
        let type_id = self.dataset_type_id(dataset_type)?;
        let dims_json = serde_json::to_string(&dt.dimensions.names).expect("names serialize");
        let mut out = Vec::new();
        for (rank, c) in self
            .resolve_search_path(collections)?
            .into_iter()
            .enumerate()
        {
            let (sql, calib) = match c.collection_type {
                CollectionType::Run => (
                    "SELECT d.id, d.data_id, run.name, r.path, r.formatter, r.size, r.checksum, NULL, NULL \
                     FROM dataset AS d JOIN collection AS run ON run.id = d.run_id \
                     LEFT JOIN datastore_record AS r ON r.dataset_id = d.id \
                     WHERE d.dataset_type_id = ?1 AND d.run_id = ?2",
                    false,
                ),
                CollectionType::Tagged => (
                    "SELECT d.id, d.data_id, run.name, r.path, r.formatter, r.size, r.checksum, NULL, NULL \
                     FROM dataset_tags AS m JOIN dataset AS d ON d.id = m.dataset_id \
                     JOIN collection AS run ON run.id = d.run_id \
                     LEFT JOIN datastore_record AS r ON r.dataset_id = d.id \
                     WHERE m.dataset_type_id = ?1 AND m.collection_id = ?2",
                    false,
                ),
                CollectionType::Calibration if dt.is_calibration => (
                    "SELECT d.id, d.data_id, run.name, r.path, r.formatter, r.size, r.checksum, m.valid_begin, m.valid_end \
                     FROM dataset_calibs AS m JOIN dataset AS d ON d.id = m.dataset_id \
                     JOIN collection AS run ON run.id = d.run_id \
                     LEFT JOIN datastore_record AS r ON r.dataset_id = d.id \
                     WHERE m.dataset_type_id = ?1 AND m.collection_id = ?2",
                    true,
                ),
                _ => continue,
            };
            let mut stmt = self.conn.prepare_cached(sql)?;
            let mut rows = stmt.query((type_id, c.id))?;
            while let Some(row) = rows.next()? {
                let path: Option<String> = row.get(3)?;
                let stored = match path {
                    Some(path) => Some(DatastoreRecord {
                        path,
                        formatter: row.get(4)?,
                        size: row.get::<_, i64>(5)? as u64,
                        checksum: row.get(6)?,
                    }),
                    None => None,
                };
                let values: String = row.get(1)?;
                out.push(PrerequisiteCandidate {
                    rank,
                    dataset: InputDataset {
                        id: uuid_from_blob(row.get(0)?)?,
                        dataset_type: dt.name.clone(),
                        data_id: data_id_from_stored(&dims_json, &values)?,
                        run: row.get(2)?,
                        stored,
                    },
                    validity: if calib {
                        Some((row.get(7)?, row.get(8)?))
                    } else {
                        None
                    },
                });
            }
        }
        Ok(out)
    }

    /// All records of a dimension element, as JSON objects keyed by the
    /// universe's field names (`instrument`, `id`, `physical_filter`, …).
    pub fn element_records(
        &self,
        element: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let e = self.universe.element(element).ok_or_else(|| {
            RegistryError::Invalid(format!("unknown dimension element `{element}`"))
        })?;
        if !e.has_records {
            return Ok(Vec::new());
        }
        let fields = e.record_fields(&self.universe);
        let cols: Vec<String> = fields.iter().map(|f| quote(&f.name)).collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), quote(element));
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut rec = serde_json::Map::new();
            for (i, f) in fields.iter().enumerate() {
                let v = crate::registry::sql_value_to_json(row.get_ref(i)?);
                let v = match (f.field_type, v) {
                    (quanta_core::FieldType::Bool, serde_json::Value::Number(n)) => {
                        serde_json::Value::Bool(n.as_i64().unwrap_or(0) != 0)
                    }
                    (_, v) => v,
                };
                rec.insert(f.name.clone(), v);
            }
            out.push(rec);
        }
        Ok(out)
    }
}
