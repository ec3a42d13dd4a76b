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

use quanta_core::{DataId, DataIdValue, DimensionGroup, Uuid};

use crate::collections::Membership;
use crate::database::{Database, ValueRef};
use crate::datasets::{data_id_from_stored, DatastoreRecord};
use crate::dialect::Parameters;
use crate::error::{RegistryError, Result};
use crate::query::{Binds, QueryBuilder};
use crate::registry::Registry;
use crate::schema::quote;
use crate::value::SqlValue;

/// Below this many datasets of the first input per part, the graph query is
/// not split across threads (opening a connection and a thread costs more).
const MIN_ROWS_PER_PART: i64 = 50_000;

/// Columns the graph statement selects per overall input: id, rank, run_id,
/// path, formatter, size, checksum.
const INPUT_COLUMNS: usize = 7;

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

/// A file record of an [`InputTable`]: its path and checksum are
/// `text[start..start + path_len]` and the `checksum_len` bytes after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputFile {
    pub start: u64,
    pub size: u64,
    pub path_len: u32,
    pub checksum_len: u32,
    /// An index into [`InputTable::formatters`].
    pub formatter: u32,
}

/// A borrowed file record of an [`InputTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputFileRef<'a> {
    pub path: &'a str,
    pub formatter: &'a str,
    pub size: u64,
    pub checksum: &'a str,
}

/// The distinct datasets of one overall input type that the rows refer to,
/// in columns (issue #23: ~60 bytes and the path and checksum text per
/// dataset, where an owned [`InputDataset`] took ~450 at survey scale).
/// A dataset's data ID is not stored: it is the values of a row that
/// refers to it ([`InputTable::rows`]) at the type's dimension columns
/// ([`InputTable::dimension_columns`]); see [`GraphRows::input_data_id`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputTable {
    /// The dataset type's dimensions, in universe order.
    pub dimensions: Vec<String>,
    /// Per dimension, the [`GraphRows`] column holding its value.
    pub dimension_columns: Vec<usize>,
    pub ids: Vec<Uuid>,
    /// Per dataset, an index into [`GraphRows::runs`].
    pub runs: Vec<u32>,
    /// Per dataset, a row that refers to it.
    pub rows: Vec<u32>,
    /// Per dataset, its file record, `None` when the datastore has none.
    pub files: Vec<Option<InputFile>>,
    /// The paths and checksums of `files`.
    pub text: String,
    /// The distinct formatters of `files`.
    pub formatters: Vec<String>,
}

impl InputTable {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The file record of dataset `i`.
    pub fn file(&self, i: usize) -> Option<InputFileRef<'_>> {
        let f = self.files[i]?;
        let path_end = f.start as usize + f.path_len as usize;
        Some(InputFileRef {
            path: &self.text[f.start as usize..path_end],
            formatter: &self.formatters[f.formatter as usize],
            size: f.size,
            checksum: &self.text[path_end..path_end + f.checksum_len as usize],
        })
    }

    fn push(
        &mut self,
        id: Uuid,
        run: u32,
        row: u32,
        file: Option<InputFileRef<'_>>,
    ) -> Result<u32> {
        let i = u32::try_from(self.ids.len())
            .ok()
            .filter(|&i| i != NONE)
            .ok_or_else(|| RegistryError::Invalid("more than 2^32 - 1 input datasets".into()))?;
        let file = match file {
            None => None,
            Some(f) => {
                let too_long =
                    || RegistryError::Invalid(format!("the file record of {id} is too long"));
                let record = InputFile {
                    start: self.text.len() as u64,
                    size: f.size,
                    path_len: u32::try_from(f.path.len()).map_err(|_| too_long())?,
                    checksum_len: u32::try_from(f.checksum.len()).map_err(|_| too_long())?,
                    formatter: self.formatter(f.formatter),
                };
                self.text.push_str(f.path);
                self.text.push_str(f.checksum);
                Some(record)
            }
        };
        self.ids.push(id);
        self.runs.push(run);
        self.rows.push(row);
        self.files.push(file);
        Ok(i)
    }

    /// The index of `formatter` (few distinct, most often the last).
    fn formatter(&mut self, formatter: &str) -> u32 {
        match self.formatters.iter().rposition(|f| f == formatter) {
            Some(i) => i as u32,
            None => {
                self.formatters.push(formatter.to_string());
                (self.formatters.len() - 1) as u32
            }
        }
    }

    /// Appends dataset `i` of `other`, whose rows are this table's rows
    /// from `row_offset` on.
    fn push_from(&mut self, other: &InputTable, i: usize, row_offset: u32) -> Result<u32> {
        self.push(
            other.ids[i],
            other.runs[i],
            other.rows[i] + row_offset,
            other.file(i),
        )
    }
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
    pub inputs: Vec<InputTable>,
    /// The RUN collections the input datasets are in ([`InputTable::runs`]).
    pub runs: Vec<String>,
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

    /// The data ID of dataset `i` of input `k`.
    pub fn input_data_id(&self, k: usize, i: usize) -> DataId {
        let table = &self.inputs[k];
        let row = self.row(table.rows[i] as usize);
        DataId::from_pairs(
            table
                .dimensions
                .iter()
                .zip(&table.dimension_columns)
                .filter_map(|(d, &c)| Some((d, self.value(c, row[c])?.clone()))),
        )
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
    fn intern(&mut self, v: ValueRef<'_>) -> Result<u32> {
        let v = match v {
            ValueRef::Null => return Ok(NONE),
            ValueRef::Integer(i) => DataIdValue::Int(i),
            ValueRef::Text(t) => DataIdValue::from(t),
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

/// The graph statement with its parameters and what its columns hold.
struct GraphStatement {
    sql: String,
    params: Parameters,
    /// The dimension columns, in select order: the query's dimensions, then
    /// the implied ones its joins know.
    columns: Vec<String>,
    /// Per input type: its subquery's alias, dataset type and its id.
    input_dims: Vec<(String, quanta_core::DatasetType, i64)>,
    /// The overlap tables the statement's spatial joins read.
    overlap_tables: Vec<String>,
    /// Whether the statement has a WHERE clause (a part's range is then
    /// added with AND).
    has_conditions: bool,
}

/// Turns the rows of the graph statement into [`GraphRows`]; shared by the
/// threads that read parts of it.
struct RowReader<'a> {
    columns: &'a [String],
    input_types: &'a [String],
    /// Per input: its dataset type, and for each of the type's dimensions
    /// the value column holding it.
    inputs: Vec<(&'a quanta_core::DatasetType, Vec<usize>)>,
    /// RUN collection ids and their index in `runs`.
    run_index: &'a HashMap<i64, u32>,
    runs: &'a [String],
    dedupe: bool,
}

impl RowReader<'_> {
    fn read(&self, db: &Database, sql: &str, params: &Parameters) -> Result<GraphRows> {
        let columns = self.columns;
        let n_cols = columns.len();
        let n_in = self.input_types.len();
        let mut interners: Vec<Interner> = (0..n_cols).map(|_| Interner::new()).collect();
        let mut out = GraphRows {
            columns: columns.to_vec(),
            input_types: self.input_types.to_vec(),
            inputs: self
                .inputs
                .iter()
                .map(|(dt, dim_columns)| InputTable {
                    dimensions: dt.dimensions.names.clone(),
                    dimension_columns: dim_columns.clone(),
                    ..Default::default()
                })
                .collect(),
            runs: self.runs.to_vec(),
            ..Default::default()
        };
        let mut dataset_ix: Vec<HashMap<Uuid, u32>> = vec![HashMap::new(); n_in];
        // Find-first: the best rank seen per row key and input.
        let mut row_of: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut ranks: Vec<usize> = Vec::new();
        let dedupe = self.dedupe;
        let mut key = Vec::with_capacity(n_cols);
        db.for_each_row(sql, &params.bound(), |row| {
            key.clear();
            for (c, interner) in interners.iter_mut().enumerate() {
                key.push(interner.intern(row.value(c)?)?);
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
                let base = n_cols + k * INPUT_COLUMNS;
                let rank: i64 = row.get(base + 1)?;
                let rank = rank as usize;
                if rank >= ranks[r * n_in + k] {
                    continue;
                }
                let id: Uuid = row.get(base)?;
                let ix = match dataset_ix[k].get(&id) {
                    Some(&i) => i,
                    None => {
                        let (dt, dim_columns) = &self.inputs[k];
                        if let Some(&c) = dim_columns.iter().find(|&&c| key[c] == NONE) {
                            return Err(RegistryError::Invalid(format!(
                                "{} has a NULL {}",
                                dt.name, columns[c]
                            )));
                        }
                        let run_id: i64 = row.get(base + 2)?;
                        let run = self.run_index.get(&run_id).copied().ok_or_else(|| {
                            RegistryError::Invalid(format!(
                                "input {id} of {} is in an unknown RUN (id {run_id})",
                                dt.name
                            ))
                        })?;
                        let path: Option<&str> = row.get_str(base + 3)?;
                        let file = match path {
                            Some(path) => Some(InputFileRef {
                                path,
                                formatter: row.get_str(base + 4)?.unwrap_or_default(),
                                size: row.get::<i64>(base + 5)? as u64,
                                checksum: row.get_str(base + 6)?.unwrap_or_default(),
                            }),
                            None => None,
                        };
                        let i = out.inputs[k].push(id, run, r as u32, file)?;
                        dataset_ix[k].insert(id, i);
                        i
                    }
                };
                out.input_refs[r * n_in + k] = ix;
                ranks[r * n_in + k] = rank;
            }
            Ok(true)
        })?;
        out.dictionary = interners.into_iter().map(|i| i.values).collect();
        Ok(out)
    }
}

/// A large single-collection query is split on a random byte of the
/// first input's UUID, each part read on its own read-only connection
/// in its own thread: SQLite runs one statement on one core, and at a
/// million quanta this statement is most of preflight's time.
fn read_graph_rows_in_parts(
    location: &crate::RegistryLocation,
    read: &RowReader<'_>,
    statement: &GraphStatement,
    parts: usize,
) -> Result<GraphRows> {
    let joiner = if statement.has_conditions {
        " AND"
    } else {
        " WHERE"
    };
    let partial: Vec<Result<GraphRows>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parts)
            .map(|p| {
                let (sql, params) = (&statement.sql, &statement.params);
                scope.spawn(move || -> Result<GraphRows> {
                    let lo = (256 * p / parts) as u8;
                    let hi = 256 * (p + 1) / parts;
                    // UUIDv7's last byte is random: parts of about
                    // equal size.
                    let last_byte = params.dialect().uuid_last_byte("i0.id");
                    let mut sql = format!("{sql}{joiner} {last_byte} >= ");
                    let mut params = params.clone();
                    params.push(&mut sql, SqlValue::Blob(vec![lo]));
                    if hi < 256 {
                        sql.push_str(&format!(" AND {last_byte} < "));
                        params.push(&mut sql, SqlValue::Blob(vec![hi as u8]));
                    }
                    let reader = Registry::open_at(location, true)?;
                    reader.db.read_for_scan()?;
                    read.read(&reader.db, &sql, &params)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RegistryError::Invalid(
                        "a graph query thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let partial = partial.into_iter().collect::<Result<Vec<_>>>()?;
    // Parts split on the first input's UUID hold disjoint sets of it.
    merge_graph_rows(partial, true)
}

/// Joins the parts of a split graph query: per-column dictionaries and
/// input tables are re-indexed into one (a dataset seen by two parts is kept
/// once), rows keep part order. `first_input_disjoint`: no dataset of the
/// first input is in two parts (they were split on it), so it is appended
/// without looking it up.
fn merge_graph_rows(parts: Vec<GraphRows>, first_input_disjoint: bool) -> Result<GraphRows> {
    let mut parts = parts.into_iter();
    let Some(mut out) = parts.next() else {
        return Ok(GraphRows::default());
    };
    let n_cols = out.columns.len();
    let n_in = out.input_types.len();
    let mut dictionary: Vec<HashMap<DataIdValue, u32>> = out
        .dictionary
        .iter()
        .map(|values| {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), i as u32))
                .collect()
        })
        .collect();
    let mut datasets: Vec<HashMap<Uuid, u32>> = out
        .inputs
        .iter()
        .enumerate()
        .map(|(k, table)| {
            if k == 0 && first_input_disjoint {
                return HashMap::new();
            }
            table
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, i as u32))
                .collect()
        })
        .collect();
    // Reserved at once: growing by doubling would copy the largest tables
    // of the query (millions of input datasets) and hold two copies.
    let parts: Vec<GraphRows> = parts.collect();
    out.values
        .reserve_exact(parts.iter().map(|p| p.values.len()).sum::<usize>());
    out.input_refs
        .reserve_exact(parts.iter().map(|p| p.input_refs.len()).sum::<usize>());
    for (k, table) in out.inputs.iter_mut().enumerate() {
        let more =
            |f: fn(&InputTable) -> usize| parts.iter().map(|p| f(&p.inputs[k])).sum::<usize>();
        let n = more(InputTable::len);
        table.ids.reserve_exact(n);
        table.runs.reserve_exact(n);
        table.rows.reserve_exact(n);
        table.files.reserve_exact(n);
        table.text.reserve_exact(more(|t| t.text.len()));
    }
    for part in parts {
        let value_map: Vec<Vec<u32>> = part
            .dictionary
            .into_iter()
            .enumerate()
            .map(|(c, values)| {
                values
                    .into_iter()
                    .map(|v| {
                        let next = out.dictionary[c].len() as u32;
                        *dictionary[c].entry(v.clone()).or_insert_with(|| {
                            out.dictionary[c].push(v);
                            next
                        })
                    })
                    .collect()
            })
            .collect();
        // The part's rows follow the ones merged so far.
        let row_offset = (out.values.len() / n_cols.max(1)) as u32;
        let input_map: Vec<Vec<u32>> = part
            .inputs
            .into_iter()
            .enumerate()
            .map(|(k, table)| {
                (0..table.len())
                    .map(|i| {
                        let merged = &mut out.inputs[k];
                        if k == 0 && first_input_disjoint {
                            return merged.push_from(&table, i, row_offset);
                        }
                        if let Some(&j) = datasets[k].get(&table.ids[i]) {
                            return Ok(j);
                        }
                        let j = merged.push_from(&table, i, row_offset)?;
                        datasets[k].insert(table.ids[i], j);
                        Ok(j)
                    })
                    .collect::<Result<Vec<u32>>>()
            })
            .collect::<Result<_>>()?;
        for row in part.values.chunks(n_cols.max(1)) {
            for (c, &v) in row.iter().enumerate() {
                out.values.push(if v == NONE {
                    NONE
                } else {
                    value_map[c][v as usize]
                });
            }
        }
        for refs in part.input_refs.chunks(n_in.max(1)) {
            for (k, &d) in refs.iter().enumerate() {
                out.input_refs.push(if d == NONE {
                    NONE
                } else {
                    input_map[k][d as usize]
                });
            }
        }
    }
    Ok(out)
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
        self.query_graph_rows_in_parts(
            dimensions,
            where_text,
            binds,
            input_types,
            collections,
            MIN_ROWS_PER_PART,
        )
    }

    /// [`Registry::query_graph_rows`], split into parts of at least
    /// `min_rows_per_part` datasets of the first input when that pays off.
    fn query_graph_rows_in_parts(
        &self,
        dimensions: &DimensionGroup,
        where_text: &str,
        binds: &Binds,
        input_types: &[String],
        collections: &[String],
        min_rows_per_part: i64,
    ) -> Result<GraphRows> {
        let search_path: Vec<_> = self
            .resolve_search_path(collections)?
            .into_iter()
            // Inputs are found without a time: certifications, which need
            // one, are prerequisites' (see `query_prerequisite_candidates`).
            .filter(|c| Membership::of(c.collection_type).is_some_and(|m| m.validity.is_none()))
            .collect();
        let statement =
            self.graph_statement(dimensions, where_text, binds, input_types, &search_path)?;
        let (run_ids, runs): (Vec<i64>, Vec<String>) = self
            .db
            .query_rows(
                "SELECT id, name FROM collection WHERE type = 'RUN' ORDER BY id",
                &[],
                |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)),
            )?
            .into_iter()
            .unzip();
        let run_index: HashMap<i64, u32> = run_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        let read = RowReader {
            columns: &statement.columns,
            input_types,
            inputs: statement
                .input_dims
                .iter()
                .map(|(_, dt, _)| {
                    // The query's dimensions include every input's (checked
                    // above), so each has a column.
                    let dim_columns = dt
                        .dimensions
                        .iter()
                        .map(|d| {
                            statement.columns.iter().position(|c| c == d).ok_or_else(|| {
                                RegistryError::Invalid(format!(
                                    "input dataset type {dt} has dimension {d} outside the query's columns"
                                ))
                            })
                        })
                        .collect::<Result<Vec<usize>>>()?;
                    Ok((dt, dim_columns))
                })
                .collect::<Result<_>>()?,
            run_index: &run_index,
            runs: &runs,
            // Find-first across several collections needs every candidate
            // of a row in one reader.
            dedupe: search_path.len() > 1 && !input_types.is_empty(),
        };

        // A spatial join fans each dataset out to the regions it overlaps:
        // the statement returns about as many rows as there are pairs.
        let fan_out = statement
            .overlap_tables
            .iter()
            .map(|t| {
                self.db
                    .query_row(&format!("SELECT count(*) FROM {}", quote(t)), &[], |r| {
                        r.get::<i64>(0)
                    })
            })
            .try_fold(None, |most: Option<usize>, n| {
                n.map(|n| Some(most.unwrap_or(0).max(n.unwrap_or(0) as usize)))
            })?;
        let parts = self.graph_query_parts(
            &search_path,
            &statement.input_dims,
            fan_out,
            min_rows_per_part,
        )?;
        // Parts are read on read-only connections of their own: to the
        // SQLite file, or to the server, whose backends then work in
        // parallel too.
        if parts > 1 {
            read_graph_rows_in_parts(self.location(), &read, &statement, parts)
        } else {
            read.read(&self.db, &statement.sql, &statement.params)
        }
    }

    /// The graph statement: the dimension tables and spatial joins of
    /// `dimensions`, the `--where` expression, and per input type a
    /// subquery of its datasets in the search path, joined on its
    /// dimensions.
    fn graph_statement(
        &self,
        dimensions: &DimensionGroup,
        where_text: &str,
        binds: &Binds,
        input_types: &[String],
        search_path: &[crate::collections::CollectionRecord],
    ) -> Result<GraphStatement> {
        let mut builder = QueryBuilder::new(&self.universe, self.dialect());
        self.add_spatial_joins(&mut builder, dimensions)?;
        builder
            .join_dimensions(dimensions)
            .and_then(|()| builder.join_implying(dimensions))
            .map_err(RegistryError::Invalid)?;
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
                let Some(membership) = Membership::of(c.collection_type) else {
                    continue;
                };
                let mut cols = vec![
                    "d.id AS id".to_string(),
                    "d.run_id AS run_id".to_string(),
                    format!("{rank} AS rank"),
                    "d.path AS path, d.formatter AS formatter, d.size AS size, d.checksum AS checksum"
                        .to_string(),
                ];
                cols.extend(dim_cols.iter().cloned());
                parts.push(format!(
                    "SELECT {} FROM {} WHERE {}",
                    cols.join(", "),
                    membership.from,
                    membership.conditions(&mut builder.params, type_id, c.id)
                ));
            }
            if parts.is_empty() {
                // Nothing searchable: no input can exist, so no rows.
                parts.push(
                    "SELECT NULL AS id, NULL AS run_id, 0 AS rank, NULL AS path, NULL AS formatter, \
                     NULL AS size, NULL AS checksum WHERE 1 = 0"
                        .to_string(),
                );
            }
            let alias = format!("i{k}");
            builder
                .from
                .push(format!("({}) AS {alias}", parts.join(" UNION ALL ")));
            input_dims.push((alias, dt, type_id));
        }
        for (alias, dt, _) in &input_dims {
            for d in dt.dimensions.iter() {
                let v = builder.values[d].clone();
                builder
                    .conditions
                    .push(format!("{alias}.{} = {v}", quote(d)));
            }
        }
        // Columns: requested dimensions first, then implied ones the joins know.
        let mut columns: Vec<String> = dimensions.names.clone();
        for e in self.universe.dimensions() {
            if !columns.contains(&e.name) && builder.values.contains_key(&e.name) {
                columns.push(e.name.clone());
            }
        }
        let mut select: Vec<String> = columns.iter().map(|c| builder.values[c].clone()).collect();
        // INPUT_COLUMNS per input, in the order RowReader reads them.
        for k in 0..input_types.len() {
            select.push(format!("i{k}.id, i{k}.rank, i{k}.run_id, i{k}.path, i{k}.formatter, i{k}.size, i{k}.checksum"));
        }
        let sql = format!(
            "SELECT {} FROM {}{}",
            select.join(", "),
            builder.sql_from(),
            builder.where_sql()
        );
        tracing::debug!(%sql, "query_graph_rows");
        Ok(GraphStatement {
            has_conditions: !builder.conditions.is_empty(),
            overlap_tables: builder.overlap_tables,
            sql,
            params: builder.params,
            columns,
            input_dims,
        })
    }

    /// How many parts to read the graph query in: one unless there is one
    /// collection to search, an input, several cores, and enough rows (the
    /// datasets of the first input, or `fan_out` rows when more) for
    /// threads to pay off.
    fn graph_query_parts(
        &self,
        search_path: &[crate::collections::CollectionRecord],
        input_dims: &[(String, quanta_core::DatasetType, i64)],
        fan_out: Option<usize>,
        min_rows_per_part: i64,
    ) -> Result<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // One collection: find-first never has to compare rows across parts.
        if search_path.len() != 1 || input_dims.is_empty() || cores < 2 {
            return Ok(1);
        }
        let (_, _, type_id) = &input_dims[0];
        let Some(membership) = Membership::of(search_path[0].collection_type) else {
            return Ok(1);
        };
        let mut params = Parameters::new(self.dialect());
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {}",
            membership.from,
            membership.conditions(&mut params, *type_id, search_path[0].id)
        );
        let n: i64 = self
            .db
            .query_row(&sql, &params.bound(), |r| r.get(0))?
            .unwrap_or(0);
        let n = n.max(fan_out.map_or(0, |rows| rows as i64));
        Ok((n / min_rows_per_part.max(1)).clamp(1, cores.min(8) as i64) as usize)
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
            let Some(membership) = Membership::of(c.collection_type) else {
                continue;
            };
            // A certification only qualifies a calibration type.
            if membership.validity.is_some() && !dt.is_calibration {
                continue;
            }
            let (begin, end) = membership.validity.unwrap_or(("NULL", "NULL"));
            let mut params = Parameters::new(self.dialect());
            let sql = format!(
                "SELECT d.id, d.data_id, run.name, d.path, d.formatter, d.size, d.checksum, {begin}, {end} \
                 FROM {} JOIN collection AS run ON run.id = d.run_id WHERE {}",
                membership.from,
                membership.conditions(&mut params, type_id, c.id)
            );
            let calib = membership.validity.is_some();
            self.db.for_each_row(&sql, &params.bound(), |row| {
                let path: Option<String> = row.get(3)?;
                let stored = match path {
                    Some(path) => Some(DatastoreRecord {
                        path,
                        formatter: row.get(4)?,
                        size: row.get::<i64>(5)? as u64,
                        checksum: row.get(6)?,
                    }),
                    None => None,
                };
                let values: String = row.get(1)?;
                out.push(PrerequisiteCandidate {
                    rank,
                    dataset: InputDataset {
                        id: row.get(0)?,
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
                Ok(true)
            })?;
        }
        Ok(out)
    }

    /// All records of a dimension element, as JSON objects keyed by the
    /// universe's field names (`instrument`, `id`, `physical_filter`, …).
    pub fn element_records(
        &self,
        element: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        self.element_records_where(element, |_| true)
    }

    /// The records of a dimension element that `keep` accepts, judged on
    /// their identifying values alone (the required dimensions' values in
    /// universe order, then the key's: the record's first fields): the
    /// other fields, regions above all, are only converted for the records
    /// kept.
    pub fn element_records_where(
        &self,
        element: &str,
        mut keep: impl FnMut(&[DataIdValue]) -> bool,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let e = self.universe.element(element).ok_or_else(|| {
            RegistryError::Invalid(format!("unknown dimension element `{element}`"))
        })?;
        if !e.has_records {
            return Ok(Vec::new());
        }
        let fields = e.record_fields(&self.universe);
        let n_identifying = e.required_closure.len() + usize::from(e.key.is_some());
        let cols: Vec<String> = fields.iter().map(|f| quote(&f.name)).collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), quote(element));
        let mut out = Vec::new();
        let mut identifying: Vec<DataIdValue> = Vec::with_capacity(n_identifying);
        self.db.for_each_row(&sql, &[], |row| {
            identifying.clear();
            for i in 0..n_identifying {
                identifying.push(match row.value(i)? {
                    ValueRef::Integer(n) => DataIdValue::Int(n),
                    ValueRef::Text(t) => DataIdValue::from(t),
                    other => {
                        return Err(RegistryError::Invalid(format!(
                            "a `{element}` key is {other:?}"
                        )))
                    }
                });
            }
            if !keep(&identifying) {
                return Ok(true);
            }
            let mut rec = serde_json::Map::new();
            for (i, f) in fields.iter().enumerate() {
                rec.insert(f.name.clone(), field_json(element, f, row.value(i)?)?);
            }
            out.push(rec);
            Ok(true)
        })?;
        Ok(out)
    }
}

/// One field of a dimension record as JSON: regions decoded to their JSON
/// form, booleans from SQLite's integers.
fn field_json(
    element: &str,
    field: &quanta_core::FieldSpec,
    value: ValueRef<'_>,
) -> Result<serde_json::Value> {
    Ok(match (field.field_type, value) {
        (quanta_core::FieldType::Region, ValueRef::Blob(blob)) => {
            quanta_spatial::Region::decode(blob)
                .map_err(|e| {
                    RegistryError::Invalid(format!("a `{element}` record's {}: {e}", field.name))
                })?
                .to_json()
        }
        (quanta_core::FieldType::Bool, ValueRef::Integer(n)) => serde_json::Value::Bool(n != 0),
        (_, v) => v.to_json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::{NewDataset, OnConflict};
    use quanta_core::{CollectionType, DatasetType, DimensionUniverse};

    /// 6 exposures x 8 detectors with a raw each, in RUN `raw`.
    fn registry(dir: &std::path::Path) -> Registry {
        let universe = DimensionUniverse::default_universe();
        let mut r = Registry::create(&dir.join("r.sqlite3"), &universe).unwrap();
        let detectors: Vec<String> = (0..8)
            .map(|d| format!(r#"{{"instrument": "Cam", "id": {d}, "full_name": "D{d}"}}"#))
            .collect();
        let exposures: Vec<String> = (0..6)
            .map(|e| {
                format!(
                    r#"{{"instrument": "Cam", "id": {e}, "physical_filter": "Cam-r", "day_obs": 20261126, "group": "g{e}"}}"#
                )
            })
            .collect();
        let groups: Vec<String> = (0..6)
            .map(|e| format!(r#"{{"instrument": "Cam", "name": "g{e}"}}"#))
            .collect();
        let records = crate::parse_records_json(
            &format!(
                r#"{{"instrument": [{{"name": "Cam", "detector_max": 8}}],
                    "physical_filter": [{{"instrument": "Cam", "name": "Cam-r", "band": "r"}}],
                    "day_obs": [{{"instrument": "Cam", "id": 20261126}}],
                    "group": [{}], "detector": [{}], "exposure": [{}]}}"#,
                groups.join(","),
                detectors.join(","),
                exposures.join(",")
            ),
            "test",
        )
        .unwrap();
        r.insert_dimension_records(&records).unwrap();
        r.register_collection("raw", CollectionType::Run, None)
            .unwrap();
        let dims = universe
            .conform(&["instrument", "exposure", "detector"])
            .unwrap();
        r.register_dataset_type(&DatasetType {
            name: "raw".into(),
            dimensions: dims,
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();
        let datasets: Vec<NewDataset> = (0..6)
            .flat_map(|e| (0..8).map(move |d| (e, d)))
            .map(|(e, d)| NewDataset {
                id: Uuid::new_v4(),
                data_id: DataId::from_pairs([
                    ("instrument", DataIdValue::from("Cam")),
                    ("exposure", DataIdValue::Int(e)),
                    ("detector", DataIdValue::Int(d)),
                ]),
                stored: Some(DatastoreRecord {
                    path: format!("raw/{e}/{d}.json"),
                    formatter: "Json".into(),
                    size: 10 + d as u64,
                    checksum: format!("{e}-{d}"),
                }),
            })
            .collect();
        r.insert_datasets("raw", "raw", &datasets, OnConflict::Fail)
            .unwrap();
        r
    }

    /// Every row as (data ID values, input dataset id, path), sorted; a
    /// NULL implied value is `None`.
    fn decoded(rows: &GraphRows) -> Vec<(Vec<Option<DataIdValue>>, Uuid, String)> {
        let mut out: Vec<_> = (0..rows.n_rows())
            .map(|r| {
                let values = rows
                    .row(r)
                    .iter()
                    .enumerate()
                    .map(|(c, &v)| rows.value(c, v).cloned())
                    .collect();
                let i = rows.row_inputs(r)[0] as usize;
                let table = &rows.inputs[0];
                let path = table.file(i).unwrap().path.to_string();
                (values, table.ids[i], path)
            })
            .collect();
        out.sort();
        out
    }

    /// The graph rows of the raws over (instrument, exposure, detector).
    fn raw_rows(r: &Registry, where_text: &str, min_rows_per_part: i64) -> GraphRows {
        let dims = r
            .universe()
            .conform(&["instrument", "exposure", "detector"])
            .unwrap();
        r.query_graph_rows_in_parts(
            &dims,
            where_text,
            &Binds::new(),
            &["raw".to_string()],
            &["raw".to_string()],
            min_rows_per_part,
        )
        .unwrap()
    }

    #[test]
    fn a_split_graph_query_returns_the_rows_of_the_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let query = |where_text: &str, min_rows: i64| raw_rows(&r, where_text, min_rows);
        for where_text in ["", "exposure IN (1..4) AND detector != 3"] {
            let whole = query(where_text, i64::MAX);
            // 1 row per part minimum: as many parts as the machine has
            // cores (at most 8), each on its own connection.
            let split = query(where_text, 1);
            assert_eq!(whole.columns, split.columns);
            assert_eq!(whole.n_rows(), split.n_rows(), "{where_text}");
            assert_eq!(split.inputs[0].len(), split.n_rows());
            assert_eq!(decoded(&whole), decoded(&split), "{where_text}");
        }
        assert_eq!(query("", i64::MAX).n_rows(), 48);
        assert_eq!(
            query("exposure IN (1..4) AND detector != 3", 1).n_rows(),
            28
        );
    }

    /// The compact input table gives back each dataset as registered: its
    /// data ID (from a row that refers to it), RUN and file record, in
    /// the whole query and in a split one (whose rows were renumbered).
    #[test]
    fn input_tables_give_back_the_registered_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        for min_rows in [i64::MAX, 1] {
            let rows = raw_rows(&r, "exposure IN (1..4)", min_rows);
            let table = &rows.inputs[0];
            assert_eq!(table.len(), rows.n_rows());
            for i in 0..table.len() {
                let found = r.dataset_by_id(&table.ids[i], None).unwrap().unwrap();
                assert_eq!(rows.input_data_id(0, i), found.dataset_ref.data_id);
                assert_eq!(rows.runs[table.runs[i] as usize], found.dataset_ref.run);
                let stored = found.stored.unwrap();
                let file = table.file(i).unwrap();
                assert_eq!(
                    (file.path, file.formatter, file.size, file.checksum),
                    (
                        stored.path.as_str(),
                        stored.formatter.as_str(),
                        stored.size,
                        stored.checksum.as_str()
                    )
                );
            }
        }
    }

    /// 3 visits x 4 detectors of 0.25° in a row along RA, a `calexp` each,
    /// and 4 patches of 0.6° tiling [0°, 1.2°]²: a spatial join in the
    /// graph query.
    fn spatial_registry(dir: &std::path::Path) -> Registry {
        let universe = DimensionUniverse::default_universe();
        let mut r = Registry::create(&dir.join("r.sqlite3"), &universe).unwrap();
        let square = |ra: f64, dec: f64, side: f64| serde_json::json!({"polygon": [[ra, dec], [ra + side, dec], [ra + side, dec + side], [ra, dec + side]]});
        let mut visit_detectors = Vec::new();
        for v in 0..3i64 {
            for d in 0..4i64 {
                let (ra, dec) = (0.1 + 0.27 * d as f64, 0.2 + 0.3 * v as f64);
                visit_detectors.push(serde_json::json!({"instrument": "Cam", "visit": v, "detector": d, "region": square(ra, dec, 0.25)}));
            }
        }
        let mut patches = Vec::new();
        for p in 0..4i64 {
            let (ra, dec) = (0.6 * (p % 2) as f64, 0.6 * (p / 2) as f64);
            patches.push(serde_json::json!({"skymap": "sky", "tract": 0, "id": p, "region": square(ra, dec, 0.6)}));
        }
        let records: crate::RecordSet = serde_json::from_value(serde_json::json!({
            "instrument": [{"name": "Cam"}],
            "physical_filter": [{"instrument": "Cam", "name": "r", "band": "r"}],
            "detector": (0..4).map(|d| serde_json::json!({"instrument": "Cam", "id": d})).collect::<Vec<_>>(),
            "visit": (0..3).map(|v| serde_json::json!({"instrument": "Cam", "id": v, "physical_filter": "r"})).collect::<Vec<_>>(),
            "visit_detector": visit_detectors,
            "skymap": [{"name": "sky"}],
            "tract": [{"skymap": "sky", "id": 0, "region": square(0.0, 0.0, 1.2)}],
            "patch": patches,
        }))
        .unwrap();
        r.insert_dimension_records(&records).unwrap();
        r.register_collection("calexp", CollectionType::Run, None)
            .unwrap();
        r.register_dataset_type(&DatasetType {
            name: "calexp".into(),
            dimensions: universe
                .conform(&["instrument", "visit", "detector"])
                .unwrap(),
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();
        let datasets: Vec<NewDataset> = (0..3)
            .flat_map(|v| (0..4).map(move |d| (v, d)))
            .map(|(v, d)| NewDataset {
                id: Uuid::new_v4(),
                data_id: DataId::from_pairs([
                    ("instrument", DataIdValue::from("Cam")),
                    ("visit", DataIdValue::Int(v)),
                    ("detector", DataIdValue::Int(d)),
                ]),
                stored: Some(DatastoreRecord {
                    path: format!("calexp/{v}/{d}.json"),
                    formatter: "Json".into(),
                    size: 10,
                    checksum: format!("{v}-{d}"),
                }),
            })
            .collect();
        r.insert_datasets("calexp", "calexp", &datasets, OnConflict::Fail)
            .unwrap();
        r
    }

    /// A spatial join fans each calexp out to the patches it overlaps; the
    /// query is split by that fan-out, each part on its own connection.
    #[test]
    fn a_split_spatial_graph_query_returns_the_rows_of_the_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let r = spatial_registry(dir.path());
        let dims = r
            .universe()
            .conform(&[
                "instrument",
                "visit",
                "detector",
                "skymap",
                "tract",
                "patch",
            ])
            .unwrap();
        let query = |min_rows: i64| {
            r.query_graph_rows_in_parts(
                &dims,
                "",
                &Binds::new(),
                &["calexp".to_string()],
                &["calexp".to_string()],
                min_rows,
            )
            .unwrap()
        };
        let (whole, split) = (query(i64::MAX), query(1));
        assert_eq!(decoded(&whole), decoded(&split));
        // Detector 1 straddles the patch column boundary (RA 0.6°) and
        // visit 1's detectors the row boundary (dec 0.6°).
        let names: Vec<String> = dims.iter().map(str::to_string).collect();
        let expected = r.query_data_ids(&names, "", &Binds::new()).unwrap().len();
        assert_eq!(whole.n_rows(), expected);
        assert!(
            expected > 12,
            "some detectors overlap two patches: {expected}"
        );
    }

    #[test]
    fn merging_parts_reindexes_shared_values_and_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let part = |where_text: &str| raw_rows(&r, where_text, i64::MAX);
        // Overlapping parts: exposure 2 is in both, and every part has the
        // instrument value; merged, each value and dataset appears once.
        let merged = merge_graph_rows(
            vec![part("exposure IN (1..2)"), part("exposure IN (2..3)")],
            false,
        )
        .unwrap();
        assert_eq!(merged.n_rows(), 32);
        assert_eq!(merged.inputs[0].len(), 24);
        let instrument = merged.column("instrument").unwrap();
        assert_eq!(merged.dictionary[instrument].len(), 1);
        let exposure = merged.column("exposure").unwrap();
        assert_eq!(merged.dictionary[exposure].len(), 3);
        let whole = part("exposure IN (1..3)");
        let mut a = decoded(&merged);
        a.dedup();
        assert_eq!(a, decoded(&whole));
    }
}
