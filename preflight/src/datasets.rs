//! The graph's datasets and data IDs in compact tables (issue #23): a
//! million-quantum graph held ~1.4 KB per quantum when every dataset was an
//! owned `BundleRef` (its type, run, data ID, path and checksum each their
//! own heap strings). Here a dataset is 36 bytes (UUID, four table indices,
//! its producer), a data ID a few `u32` words, dataset types and runs are
//! interned, and a predicted output's path is not stored at all: it is
//! rendered again from the datastore's template when its block is written
//! (preflight renders it once while building, so a template error still
//! fails the build before the registry is written). The `BundleRef`s of a
//! block are made for that block only ([`Datasets::bundle_ref`]).

use foldhash::HashMap;
use quanta_core::{BundleRef, DataId, DataIdValue, DatasetRef, Uuid};
use quanta_datastore::Datastore;
use quanta_registry::graph_query::{GraphRows, InputDataset, InputTable, NONE};
use quanta_registry::FoundDataset;

use crate::error::PreflightError;

/// Interned strings (dataset types, runs, storage classes).
#[derive(Debug)]
pub(crate) struct Names {
    index: HashMap<String, u32>,
    names: Vec<String>,
    /// The last two names interned (`u32::MAX`: none).
    recent: [u32; 2],
}

impl Default for Names {
    fn default() -> Self {
        Self {
            index: HashMap::default(),
            names: Vec::new(),
            recent: [u32::MAX; 2],
        }
    }
}

impl Names {
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        // Datasets come in long runs of one type and RUN: the last two
        // names asked for are checked before hashing.
        for &i in &self.recent {
            if self.names.get(i as usize).is_some_and(|n| n == s) {
                return i;
            }
        }
        let i = match self.index.get(s) {
            Some(&i) => i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(s.to_string());
                self.index.insert(s.to_string(), i);
                i
            }
        };
        self.recent = [i, self.recent[0]];
        i
    }

    pub(crate) fn get(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

/// Data IDs packed into one vector of words: a data ID is the offset of its
/// first word, the index of its key group (its dimension names, in order);
/// then one word per key, the index of its value in a table of distinct
/// values. Values of the graph rows' columns are translated once per
/// column, so a data ID made from a row costs no hashing.
#[derive(Debug, Default)]
pub(crate) struct DataIds {
    groups: Vec<Vec<String>>,
    value_index: HashMap<DataIdValue, u32>,
    values: Vec<DataIdValue>,
    /// Per graph-row column, the value index of each dictionary entry.
    columns: Vec<Vec<u32>>,
    words: Vec<u32>,
}

/// The data ID tables hold more than 2^32 words.
fn too_large() -> PreflightError {
    PreflightError::Invalid(
        "the quantum graph has more data IDs than preflight can index (2^32 words)".into(),
    )
}

impl DataIds {
    /// Tables that know the value dictionaries of `rows`.
    pub(crate) fn for_rows(rows: &GraphRows) -> Self {
        let mut ids = Self::default();
        ids.columns = rows
            .dictionary
            .iter()
            .map(|values| values.iter().map(|v| ids.value(v)).collect())
            .collect();
        ids
    }

    fn value(&mut self, v: &DataIdValue) -> u32 {
        if let Some(&i) = self.value_index.get(v) {
            return i;
        }
        let i = self.values.len() as u32;
        self.values.push(v.clone());
        self.value_index.insert(v.clone(), i);
        i
    }

    /// The index of the key group `keys()` (few distinct: a linear search).
    pub(crate) fn group<'k, I: Iterator<Item = &'k str>>(&mut self, keys: impl Fn() -> I) -> u32 {
        if let Some(i) = self
            .groups
            .iter()
            .position(|g| g.iter().map(String::as_str).eq(keys()))
        {
            return i as u32;
        }
        self.groups.push(keys().map(String::from).collect());
        (self.groups.len() - 1) as u32
    }

    fn start(&self) -> Result<u32, PreflightError> {
        u32::try_from(self.words.len())
            .ok()
            .filter(|&n| n < u32::MAX - 64)
            .ok_or_else(too_large)
    }

    pub(crate) fn push(&mut self, d: &DataId) -> Result<u32, PreflightError> {
        let at = self.start()?;
        let g = self.group(|| d.keys());
        self.words.push(g);
        for (_, v) in d.iter() {
            let v = self.value(v);
            self.words.push(v);
        }
        Ok(at)
    }

    /// The data ID of key group `group` whose values are row `row`'s in
    /// columns `cols` (none of them may be NULL: required dimensions, or
    /// outputs whose values the quantum was checked to have).
    pub(crate) fn push_row(
        &mut self,
        group: u32,
        row: &[u32],
        cols: &[usize],
    ) -> Result<u32, PreflightError> {
        let at = self.start()?;
        self.words.push(group);
        for &c in cols {
            let Some(&v) = self.columns[c].get(row[c] as usize) else {
                self.words.truncate(at as usize);
                return Err(PreflightError::Invalid(format!(
                    "a quantum's data ID has no value for graph column {c} (NULL)"
                )));
            };
            self.words.push(v);
        }
        Ok(at)
    }

    pub(crate) fn get(&self, at: u32) -> DataId {
        let at = at as usize;
        let keys = &self.groups[self.words[at] as usize];
        let values = &self.words[at + 1..at + 1 + keys.len()];
        DataId::from_pairs(
            keys.iter()
                .zip(values)
                .map(|(k, &v)| (k, self.values[v as usize].clone())),
        )
    }
}

/// Where a dataset's file is: `file` of [`Meta`].
const PREDICTED: u32 = 1 << 31;
const NO_FILE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Meta {
    dataset_type: u32,
    run: u32,
    data_id: u32,
    /// An index into [`Datasets::files`]; [`NO_FILE`]; or [`PREDICTED`] |
    /// the storage class (name index) a predicted output's path is rendered
    /// for.
    file: u32,
}

/// A registered dataset's file record: a path and checksum in one text
/// buffer, its size.
#[derive(Debug, Clone, Copy)]
struct File {
    start: u64,
    path_len: u32,
    checksum_len: u32,
    size: u64,
}

/// A dataset found in the registry, borrowed from the query's result.
#[derive(Clone, Copy)]
pub(crate) struct Found<'a> {
    pub id: Uuid,
    pub dataset_type: &'a str,
    pub data_id: &'a DataId,
    pub run: &'a str,
    /// (path, size, checksum), if the datastore has its file.
    pub stored: Option<(&'a str, u64, &'a str)>,
}

impl<'a> Found<'a> {
    pub(crate) fn of_input(d: &'a InputDataset) -> Self {
        Self {
            id: d.id,
            dataset_type: &d.dataset_type,
            data_id: &d.data_id,
            run: &d.run,
            stored: d
                .stored
                .as_ref()
                .map(|s| (s.path.as_str(), s.size, s.checksum.as_str())),
        }
    }

    pub(crate) fn of_found(f: &'a FoundDataset) -> Self {
        Self {
            id: f.dataset_ref.id,
            dataset_type: &f.dataset_ref.dataset_type,
            data_id: &f.dataset_ref.data_id,
            run: &f.dataset_ref.run,
            stored: f
                .stored
                .as_ref()
                .map(|s| (s.path.as_str(), s.size, s.checksum.as_str())),
        }
    }
}

/// Every dataset of the graph: inputs found in the registry and predicted
/// outputs, each with the quantum that produces it ([`NONE`] if none).
#[derive(Debug, Default)]
pub(crate) struct Datasets {
    ids: Vec<Uuid>,
    meta: Vec<Meta>,
    pub(crate) producer: Vec<u32>,
    pub(crate) names: Names,
    pub(crate) data_ids: DataIds,
    files: Vec<File>,
    text: String,
}

impl Datasets {
    pub(crate) fn new(data_ids: DataIds) -> Self {
        Self {
            data_ids,
            ..Self::default()
        }
    }

    /// Best effort: a bound too large to reserve leaves the tables to grow
    /// as they go. Reserving the bound at once avoids the copies (and the
    /// two live copies) of growing by doubling; the part never used is
    /// never touched, so never resident.
    pub(crate) fn try_reserve_exact(&mut self, additional: usize) {
        if self.ids.try_reserve_exact(additional).is_ok()
            && self.meta.try_reserve_exact(additional).is_ok()
        {
            let _ = self.producer.try_reserve_exact(additional);
        }
    }

    fn push(&mut self, id: Uuid, meta: Meta, producer: u32) -> Result<u32, PreflightError> {
        let d = u32::try_from(self.ids.len())
            .ok()
            .filter(|&d| d != NONE)
            .ok_or_else(|| {
                PreflightError::Invalid("the quantum graph has more than 2^32 - 1 datasets".into())
            })?;
        self.ids.push(id);
        self.meta.push(meta);
        self.producer.push(producer);
        Ok(d)
    }

    /// A dataset of the registry (an input, a prerequisite, an existing
    /// output that is kept).
    pub(crate) fn push_found(
        &mut self,
        f: Found<'_>,
        producer: u32,
    ) -> Result<u32, PreflightError> {
        let file = match f.stored {
            None => NO_FILE,
            Some((path, size, checksum)) => {
                let file = File {
                    start: self.text.len() as u64,
                    path_len: u32::try_from(path.len()).map_err(|_| too_large())?,
                    checksum_len: u32::try_from(checksum.len()).map_err(|_| too_large())?,
                    size,
                };
                self.text.push_str(path);
                self.text.push_str(checksum);
                self.push_file(file)?
            }
        };
        let meta = Meta {
            dataset_type: self.names.intern(f.dataset_type),
            run: self.names.intern(f.run),
            data_id: self.data_ids.push(f.data_id)?,
            file,
        };
        self.push(f.id, meta, producer)
    }

    /// The datasets of an overall input's table, in its order, with their
    /// data IDs taken from the rows that refer to them; the table's text
    /// (paths and checksums) is taken over, not copied, when it is the
    /// first. Returns their indices.
    pub(crate) fn push_inputs(
        &mut self,
        rows: &GraphRows,
        dataset_type: &str,
        mut table: InputTable,
    ) -> Result<Vec<u32>, PreflightError> {
        let dataset_type = self.names.intern(dataset_type);
        let group = self
            .data_ids
            .group(|| table.dimensions.iter().map(String::as_str));
        let text = std::mem::take(&mut table.text);
        let base = self.text.len() as u64;
        if self.text.is_empty() {
            self.text = text;
        } else {
            self.text.push_str(&text);
        }
        // RUN names interned when first used (the query knows every RUN
        // of the repository).
        let mut runs = vec![u32::MAX; rows.runs.len()];
        let _ = self.files.try_reserve_exact(table.len());
        (0..table.len())
            .map(|i| {
                let run = &mut runs[table.runs[i] as usize];
                if *run == u32::MAX {
                    *run = self.names.intern(&rows.runs[table.runs[i] as usize]);
                }
                let row = rows.row(table.rows[i] as usize);
                let file = match table.files[i] {
                    None => NO_FILE,
                    Some(f) => self.push_file(File {
                        start: base + f.start,
                        path_len: f.path_len,
                        checksum_len: f.checksum_len,
                        size: f.size,
                    })?,
                };
                let meta = Meta {
                    dataset_type,
                    run: *run,
                    data_id: self
                        .data_ids
                        .push_row(group, row, &table.dimension_columns)?,
                    file,
                };
                self.push(table.ids[i], meta, NONE)
            })
            .collect()
    }

    fn push_file(&mut self, file: File) -> Result<u32, PreflightError> {
        let i = u32::try_from(self.files.len())
            .ok()
            .filter(|&i| i < PREDICTED)
            .ok_or_else(too_large)?;
        self.files.push(file);
        Ok(i)
    }

    /// A predicted output: dataset type, run and storage class are name
    /// indices, the data ID an offset into [`Self::data_ids`].
    pub(crate) fn push_predicted(
        &mut self,
        id: Uuid,
        dataset_type: u32,
        run: u32,
        data_id: u32,
        storage_class: u32,
        producer: u32,
    ) -> Result<u32, PreflightError> {
        let meta = Meta {
            dataset_type,
            run,
            data_id,
            file: PREDICTED | storage_class,
        };
        self.push(id, meta, producer)
    }

    /// The ref of dataset `d` as the bundle stores it; a predicted output's
    /// path comes from `datastore`'s template.
    pub(crate) fn bundle_ref(&self, d: u32, datastore: &Datastore) -> Result<BundleRef, String> {
        let m = self.meta[d as usize];
        let dataset_ref = DatasetRef {
            id: self.ids[d as usize],
            dataset_type: self.names.get(m.dataset_type).to_string(),
            data_id: self.data_ids.get(m.data_id),
            run: self.names.get(m.run).to_string(),
        };
        let (path, size, checksum) = if m.file == NO_FILE {
            (String::new(), None, None)
        } else if m.file & PREDICTED != 0 {
            let storage_class = self.names.get(m.file & !PREDICTED);
            let path = datastore
                .path_for(&dataset_ref, storage_class)
                .map_err(|e| format!("the path of {}: {e}", dataset_ref.id))?;
            (path, None, None)
        } else {
            let f = self.files[m.file as usize];
            let path_end = f.start as usize + f.path_len as usize;
            let path = &self.text[f.start as usize..path_end];
            let checksum = &self.text[path_end..path_end + f.checksum_len as usize];
            (path.to_string(), Some(f.size), Some(checksum.to_string()))
        };
        Ok(BundleRef {
            id: dataset_ref.id,
            dataset_type: dataset_ref.dataset_type,
            data_id: dataset_ref.data_id,
            run: dataset_ref.run,
            path,
            size,
            checksum,
        })
    }

    /// Renumbers producers (quantum indices) through `new_index`.
    pub(crate) fn renumber_producers(&mut self, new_index: &[u32]) {
        for p in &mut self.producer {
            if *p != NONE {
                *p = new_index[*p as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ids_round_trip_in_key_order() {
        let mut ids = DataIds::default();
        let a = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("detector", 3.into()),
        ]);
        let b = DataId::from_pairs([
            ("detector", DataIdValue::Int(3)),
            ("instrument", "Cam".into()),
        ]);
        let (ia, ib) = (ids.push(&a).unwrap(), ids.push(&b).unwrap());
        assert_eq!(ids.get(ia), a);
        assert_eq!(ids.get(ib), b);
        assert_eq!(
            ids.get(ib).keys().collect::<Vec<_>>(),
            ["detector", "instrument"]
        );
        assert_eq!(
            ids.push(&DataId::empty()).map(|i| ids.get(i)).unwrap(),
            DataId::empty()
        );
    }

    #[test]
    fn found_datasets_keep_their_files() {
        let mut ds = Datasets::default();
        let data_id = DataId::from_pairs([("instrument", "Cam")]);
        let id = Uuid::new_v4();
        let d = ds
            .push_found(
                Found {
                    id,
                    dataset_type: "raw",
                    data_id: &data_id,
                    run: "Cam/raw",
                    stored: Some(("raw/a.json", 42, "abc")),
                },
                NONE,
            )
            .unwrap();
        let e = ds
            .push_found(
                Found {
                    id: Uuid::new_v4(),
                    dataset_type: "raw",
                    data_id: &data_id,
                    run: "Cam/raw",
                    stored: None,
                },
                7,
            )
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = Datastore::new(root.path(), Default::default()).unwrap();
        let r = ds.bundle_ref(d, &store).unwrap();
        assert_eq!(
            (r.id, r.dataset_type.as_str(), &r.data_id, r.run.as_str()),
            (id, "raw", &data_id, "Cam/raw")
        );
        assert_eq!(
            (r.path.as_str(), r.size, r.checksum.as_deref()),
            ("raw/a.json", Some(42), Some("abc"))
        );
        let r = ds.bundle_ref(e, &store).unwrap();
        assert_eq!((r.path.as_str(), r.size, r.checksum), ("", None, None));
        assert_eq!(ds.producer, [NONE, 7]);
    }

    #[test]
    fn names_are_interned_once() {
        let mut n = Names::default();
        let ids: Vec<u32> = ["raw", "run", "raw", "calexp", "run", "raw"]
            .iter()
            .map(|s| n.intern(s))
            .collect();
        assert_eq!(ids, [0, 1, 0, 2, 1, 0]);
        assert_eq!((n.get(0), n.get(1), n.get(2)), ("raw", "run", "calexp"));
    }
}
