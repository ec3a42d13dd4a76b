//! [`LimitedRegistry`] (a bundle plus its datastore) and
//! [`QuantumBackedButler`] (the [`LimitedButler`] of one attempt of one
//! quantum).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use quanta_core::bundle::{ConnectionRefs, DimensionRecords};
use quanta_core::pipeline::TaskDef;
use quanta_core::{Bundle, BundleQuantum, BundleRef, DataId, DataIdValue, WrittenOutput};
use quanta_datastore::{
    temp_file_prefix, Datastore, DatastoreConfig, DatastoreError, FormatterRegistry,
    InMemoryDataset,
};
use uuid::Uuid;

use crate::error::LimitedRegistryError as Error;
use crate::limited_butler::{record_key, record_matches, DimensionRecord, LimitedButler, ReadSpec};

type Result<T, E = Error> = std::result::Result<T, E>;

/// The directory under the datastore root where files found at a predicted
/// output path, written by no attempt the journals record, are moved (the
/// datastore's, shared with `repo check --repair`).
pub const QUARANTINE_DIR: &str = quanta_datastore::QUARANTINE_DIR;

/// A bundle and the datastore its header names: all a worker reads. Shared
/// between worker threads behind an `Arc`.
#[derive(Debug)]
pub struct LimitedRegistry {
    bundle: Arc<Bundle>,
    datastore: Datastore,
    tasks: Vec<Arc<TaskDef>>,
    /// The bundle's dimension-records block, decoded on first use and then
    /// kept for the process (tasks that never ask do not pay for it).
    records: OnceLock<RecordIndex>,
}

/// The bundle's dimension records by element, each element's records
/// indexed by the value of their key field (`id` or `name`).
#[derive(Debug, Default)]
struct RecordIndex {
    records: DimensionRecords,
    by_key: HashMap<String, HashMap<DataIdValue, Vec<usize>>>,
}

impl RecordIndex {
    fn new(records: DimensionRecords) -> Self {
        let mut by_key: HashMap<String, HashMap<DataIdValue, Vec<usize>>> = HashMap::new();
        for (element, recs) in &records {
            let index = by_key.entry(element.clone()).or_default();
            for (i, rec) in recs.iter().enumerate() {
                if let Some(key) = record_key(rec) {
                    index.entry(key).or_default().push(i);
                }
            }
        }
        Self { records, by_key }
    }

    /// The record of `element` for `data_id` (see [`record_matches`]).
    fn find(&self, element: &str, data_id: &DataId) -> Option<&DimensionRecord> {
        let value = data_id.get(element)?;
        let candidates = self.by_key.get(element)?.get(value)?;
        let records = self.records.get(element)?;
        candidates
            .iter()
            .map(|&i| &records[i])
            .find(|rec| record_matches(rec, element, data_id))
    }
}

impl LimitedRegistry {
    /// Opens the bundle at `path` (frame and header only; quanta are decoded
    /// when asked for).
    pub fn open(path: &Path) -> Result<Arc<Self>> {
        Self::from_bundle(Arc::new(Bundle::open(path)?), FormatterRegistry::default())
    }

    /// [`LimitedRegistry::open`] with the formatters of the storage classes
    /// this process's tasks read and write.
    pub fn open_with_formatters(path: &Path, formatters: FormatterRegistry) -> Result<Arc<Self>> {
        Self::from_bundle(Arc::new(Bundle::open(path)?), formatters)
    }

    /// The datastore comes from the bundle header: its absolute root and its
    /// configuration (templates only matter to preflight; fsync matters here).
    pub fn from_bundle(bundle: Arc<Bundle>, formatters: FormatterRegistry) -> Result<Arc<Self>> {
        let h = bundle.header();
        let bad = |detail: String| Error::DatastoreConfig {
            bundle: bundle.path().to_path_buf(),
            detail,
        };
        let config: DatastoreConfig = if h.datastore_config.trim().is_empty() {
            DatastoreConfig::default()
        } else {
            serde_json::from_str(&h.datastore_config).map_err(|e| bad(e.to_string()))?
        };
        if !Path::new(&h.datastore_root).is_absolute() {
            return Err(bad(format!(
                "the datastore root `{}` is not absolute",
                h.datastore_root
            )));
        }
        let datastore = Datastore::new(&h.datastore_root, config)
            .map_err(|e| bad(e.to_string()))?
            .with_formatters(formatters);
        let tasks = bundle.tasks().iter().cloned().map(Arc::new).collect();
        Ok(Arc::new(Self {
            bundle,
            datastore,
            tasks,
            records: OnceLock::new(),
        }))
    }

    /// The record of dimension `element` (`patch`, `visit`, …) for
    /// `data_id`, from the bundle's dimension-records block (decoded once
    /// per process). `None` when the bundle holds no such record: preflight
    /// writes the records of the dimensions its graph uses (and the
    /// elements they imply), not of join elements such as `visit_detector`.
    pub fn dimension_record(
        &self,
        element: &str,
        data_id: &DataId,
    ) -> Result<Option<&DimensionRecord>> {
        if self.records.get().is_none() {
            let index = RecordIndex::new(self.bundle.dimension_records()?);
            // Another thread may have won the race; both decoded the same block.
            let _ = self.records.set(index);
        }
        Ok(self
            .records
            .get()
            .and_then(|index| index.find(element, data_id)))
    }

    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.bundle
    }

    pub fn datastore(&self) -> &Datastore {
        &self.datastore
    }

    /// Whether the bundle was made with `--clobber`.
    pub fn clobber(&self) -> bool {
        self.bundle.header().clobber
    }

    /// The task of quantum `q`.
    pub fn task(&self, q: &BundleQuantum) -> &Arc<TaskDef> {
        // The bundle reader checks task indices when decoding a quantum.
        &self.tasks[q.task as usize]
    }

    pub fn tasks(&self) -> &[Arc<TaskDef>] {
        &self.tasks
    }

    /// Absolute path of a ref's file, to read it (an input's may be a
    /// direct file outside the datastore).
    pub fn abs_path(&self, r: &BundleRef) -> Result<PathBuf, DatastoreError> {
        self.datastore.abs_path(&r.path)
    }

    /// Absolute path an output of a quantum is written to: always inside
    /// the datastore.
    pub fn output_path(&self, r: &BundleRef) -> Result<PathBuf, DatastoreError> {
        self.datastore.owned_path(&r.path)
    }

    /// Checks that every input and prerequisite of quantum `index` exists;
    /// the first missing one is the error.
    pub fn check_inputs(&self, index: u32, q: &BundleQuantum) -> Result<()> {
        for r in q
            .inputs
            .iter()
            .chain(&q.prerequisites)
            .flat_map(|(_, refs)| refs)
        {
            if !self.datastore.exists(&r.path) {
                return Err(Error::MissingInput {
                    quantum: index,
                    task: self.task(q).label.clone(),
                    dataset_type: r.dataset_type.clone(),
                    data_id: r.data_id.to_string(),
                    path: r.path.clone(),
                });
            }
        }
        Ok(())
    }

    /// Moves the file at the datastore path `rel` (if any) to
    /// `<root>/.quarantine/<bundle id>/<rel>` (`.1`, `.2`, … appended when
    /// that is taken), returning where it went. The quarantine's first
    /// component starts with `.`, which no template path has, so it never
    /// clashes with a dataset's path.
    pub fn move_aside(&self, rel: &str) -> Result<Option<PathBuf>, String> {
        let src = self.datastore.owned_path(rel).map_err(|e| e.to_string())?;
        if src.symlink_metadata().is_err() {
            return Ok(None);
        }
        let base = self
            .datastore
            .root()
            .join(QUARANTINE_DIR)
            .join(self.bundle.header().bundle_id.to_string())
            .join(rel);
        if let Some(dir) = base.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        for n in 0..10_000u32 {
            let to = if n == 0 {
                base.clone()
            } else {
                let mut s = base.clone().into_os_string();
                s.push(format!(".{n}"));
                PathBuf::from(s)
            };
            if to.symlink_metadata().is_ok() {
                continue;
            }
            return match std::fs::rename(&src, &to) {
                Ok(()) => Ok(Some(to)),
                Err(e) => Err(format!("moving it to {}: {e}", to.display())),
            };
        }
        Err(format!("no free name for it under {}", base.display()))
    }

    /// Removes the temporary files that killed writers of `quanta`'s
    /// predicted outputs left beside them (named by
    /// [`quanta_datastore::temp_file_prefix`]), reading each directory once.
    /// Only for quanta whose execution lock the caller holds: nobody else
    /// can be writing them. Returns the files removed.
    pub fn remove_temp_leftovers<'a>(
        &self,
        quanta: impl IntoIterator<Item = &'a BundleQuantum>,
    ) -> Vec<PathBuf> {
        let mut by_dir: HashMap<PathBuf, HashSet<String>> = HashMap::new();
        for r in quanta
            .into_iter()
            .flat_map(|q| &q.outputs)
            .flat_map(|(_, refs)| refs)
        {
            // A disassembled composite's parts are written beside its index.
            let parts = if quanta_datastore::disassembled::is_index(&r.path) {
                self.datastore.possible_part_paths(&r.path)
            } else {
                Vec::new()
            };
            for path in std::iter::once(&r.path).chain(&parts) {
                if let Ok(dest) = self.datastore.owned_path(path) {
                    let prefix = temp_file_prefix(&dest);
                    if let Some(dir) = dest.parent() {
                        by_dir.entry(dir.to_path_buf()).or_default().insert(prefix);
                    }
                }
            }
        }
        let mut removed = Vec::new();
        for (dir, prefixes) in by_dir {
            let Some(len) = prefixes.iter().next().map(String::len) else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let owned = name
                    .to_str()
                    .and_then(|n| n.get(..len))
                    .is_some_and(|p| prefixes.contains(p));
                if owned && std::fs::remove_file(entry.path()).is_ok() {
                    removed.push(entry.path());
                }
            }
        }
        removed
    }

    /// Whether every predicted output of `q` is present.
    pub fn outputs_exist(&self, q: &BundleQuantum) -> bool {
        q.outputs
            .iter()
            .flat_map(|(_, refs)| refs)
            .all(|r| self.datastore.exists(&r.path))
    }

    /// A butler for one attempt of quantum `index`. `replace_existing` allows
    /// replacing files already at predicted output paths (the bundle's
    /// clobber flag is honoured in any case); see the crate docs.
    pub fn butler(
        self: &Arc<Self>,
        index: u32,
        quantum: BundleQuantum,
        replace_existing: bool,
    ) -> QuantumBackedButler {
        let task = Arc::clone(self.task(&quantum));
        QuantumBackedButler {
            registry: Arc::clone(self),
            replace: replace_existing || self.clobber(),
            index,
            quantum: Arc::new(quantum),
            task,
            written: Vec::new(),
            written_ids: HashSet::new(),
            inputs_used: Vec::new(),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Get/put for one attempt of one quantum, backed by a bundle (daf_butler's
/// `QuantumBackedButler`): inputs are read at the paths the bundle
/// resolved, outputs written only where it predicted them. Records what was
/// read and written for the journal.
pub struct QuantumBackedButler {
    registry: Arc<LimitedRegistry>,
    replace: bool,
    index: u32,
    quantum: Arc<BundleQuantum>,
    task: Arc<TaskDef>,
    written: Vec<WrittenOutput>,
    written_ids: HashSet<Uuid>,
    inputs_used: Vec<Uuid>,
    cancelled: Arc<AtomicBool>,
}

impl std::fmt::Debug for QuantumBackedButler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantumBackedButler")
            .field("quantum", &self.index)
            .field("task", &self.task.label)
            .finish_non_exhaustive()
    }
}

fn find<'a>(refs: &'a ConnectionRefs, name: &str) -> Option<&'a [BundleRef]> {
    refs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.as_slice())
}

impl QuantumBackedButler {
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The quantum (shared, so a task context can hold it while the butler
    /// is borrowed mutably).
    pub fn quantum(&self) -> &Arc<BundleQuantum> {
        &self.quantum
    }

    pub fn task(&self) -> &Arc<TaskDef> {
        &self.task
    }

    pub fn registry(&self) -> &Arc<LimitedRegistry> {
        &self.registry
    }

    pub fn data_id(&self) -> &DataId {
        &self.quantum.data_id
    }

    /// A flag that, once set, makes every later put fail: an attempt that
    /// timed out must not write after its retry started.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancelled)
    }

    fn unknown(&self, kind: &'static str, connection: &str, refs: &ConnectionRefs) -> Error {
        Error::UnknownConnection {
            quantum: self.index,
            task: self.task.label.clone(),
            kind,
            connection: connection.to_string(),
            known: refs
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The refs the bundle predicted for an output connection.
    pub fn output_refs(&self, connection: &str) -> Result<&[BundleRef]> {
        find(&self.quantum.outputs, connection)
            .ok_or_else(|| self.unknown("output", connection, &self.quantum.outputs))
    }

    fn ds_err(&self, source: DatastoreError) -> Error {
        Error::Datastore {
            quantum: self.index,
            task: self.task.label.clone(),
            source: Box::new(source),
        }
    }

    /// The storage class the bundle registered for `dataset_type`.
    fn registered_class(&self, dataset_type: &str) -> Option<&str> {
        self.registry
            .bundle
            .dataset_types()
            .iter()
            .find(|d| d.name == dataset_type)
            .map(|d| d.storage_class.as_str())
    }

    /// A component or a read with parameters: the file is the parent's, so
    /// the parent's storage class picks the formatter; the parameters are
    /// checked against the class of what is read.
    fn read_part(&mut self, r: &BundleRef, read: &ReadSpec<'_>) -> Result<InMemoryDataset> {
        let parent_class = self
            .registered_class(&r.dataset_type)
            .unwrap_or(read.storage_class)
            .to_string();
        let classes = quanta_core::StorageClasses::builtin();
        match read.component {
            Some(c) => classes.component_class(&parent_class, c),
            None => Ok(parent_class.as_str()),
        }
        .and_then(|class| classes.check_parameters(class, read.parameters.names()))
        .map_err(|e| Error::BadRead {
            quantum: self.index,
            task: self.task.label.clone(),
            connection: read.connection.to_string(),
            detail: e.to_string(),
        })?;
        let ds = self.registry.datastore();
        let formatter = ds
            .formatters()
            .for_storage_class(&parent_class)
            .map_err(|e| self.ds_err(e))?;
        let obj = if quanta_datastore::disassembled::is_index(&r.path) {
            let info = quanta_datastore::StoredFileInfo {
                path: r.path.clone(),
                formatter: formatter.name().to_string(),
                size: r.size.unwrap_or_default(),
                checksum: r.checksum.clone().unwrap_or_default(),
            };
            ds.read_with(&info, read.component, read.parameters)
                .map_err(|e| self.ds_err(e))?
        } else {
            let abs = ds.abs_path(&r.path).map_err(|e| self.ds_err(e))?;
            formatter
                .read(&abs, read.component, read.parameters)
                .map_err(|source| {
                    self.ds_err(DatastoreError::Decode {
                        formatter: formatter.name().to_string(),
                        path: r.path.clone(),
                        source,
                    })
                })?
        };
        // Provenance records the parent: the dataset whose file was read.
        self.inputs_used.push(r.id);
        Ok(obj)
    }

    fn read_whole(&mut self, r: &BundleRef, storage_class: &str) -> Result<InMemoryDataset> {
        let ds = self.registry.datastore();
        let formatter = ds
            .formatters()
            .for_storage_class(storage_class)
            .map_err(|e| self.ds_err(e))?;
        let bytes = ds.read_bytes(&r.path).map_err(|e| self.ds_err(e))?;
        let obj = formatter.decode(&bytes).map_err(|source| {
            self.ds_err(DatastoreError::Decode {
                formatter: formatter.name().to_string(),
                path: r.path.clone(),
                source,
            })
        })?;
        self.inputs_used.push(r.id);
        Ok(obj)
    }

    /// Refuses a put of a ref the bundle did not predict for this quantum,
    /// of a cancelled attempt, or of an output already written.
    fn before_write(&self, r: &BundleRef) -> Result<()> {
        let predicted = self
            .quantum
            .outputs
            .iter()
            .flat_map(|(_, refs)| refs)
            .any(|p| p.id == r.id && p.path == r.path);
        if !predicted {
            return Err(Error::UnpredictedOutput {
                quantum: self.index,
                task: self.task.label.clone(),
                connection: r.dataset_type.clone(),
                data_id: r.data_id.to_string(),
                predicted: self
                    .quantum
                    .outputs
                    .iter()
                    .flat_map(|(_, refs)| refs)
                    .map(|p| format!("{} {}", p.dataset_type, p.data_id))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        if self.is_cancelled() {
            return Err(Error::Cancelled {
                quantum: self.index,
                task: self.task.label.clone(),
                path: r.path.clone(),
            });
        }
        if self.written_ids.contains(&r.id) {
            return Err(Error::WrittenTwice {
                quantum: self.index,
                task: self.task.label.clone(),
                dataset: r.id,
                path: r.path.clone(),
            });
        }
        Ok(())
    }

    fn write_bytes(
        &mut self,
        r: &BundleRef,
        bytes: &[u8],
        formatter: &str,
    ) -> Result<WrittenOutput> {
        self.before_write(r)?;
        let ds = self.registry.datastore();
        let info = match ds.write_bytes_at(&r.path, bytes, formatter, self.replace) {
            Err(DatastoreError::AlreadyExists { .. }) => {
                // Written by no attempt the journals know of: see the crate
                // docs. Under the execution lock nobody else writes here.
                self.move_aside(r)?;
                ds.write_bytes_at(&r.path, bytes, formatter, false)
            }
            other => other,
        }
        .map_err(|e| self.map_write_err(r, e))?;
        Ok(self.record(r, info.size, info.checksum))
    }

    /// Moves the file at `r`'s path into quarantine (see
    /// [`LimitedRegistry::move_aside`]), logging where it went.
    fn move_aside(&self, r: &BundleRef) -> Result<()> {
        let moved = self
            .registry
            .move_aside(&r.path)
            .map_err(|detail| Error::MoveAside {
                quantum: self.index,
                task: self.task.label.clone(),
                path: r.path.clone(),
                detail,
            })?;
        if let Some(to) = moved {
            tracing::warn!(
                "quantum {} ({}): `{}` was already there, written by no attempt the journals record (lost or damaged journal records?); moved it to {} and writing it again",
                self.index,
                self.task.label,
                r.path,
                to.display()
            );
        }
        Ok(())
    }

    fn map_write_err(&self, r: &BundleRef, e: DatastoreError) -> Error {
        match e {
            DatastoreError::AlreadyExists { .. } => Error::WouldOverwrite {
                quantum: self.index,
                task: self.task.label.clone(),
                path: r.path.clone(),
            },
            e => self.ds_err(e),
        }
    }

    fn record(&mut self, r: &BundleRef, size: u64, checksum: String) -> WrittenOutput {
        let out = WrittenOutput {
            dataset_id: r.id,
            path: r.path.clone(),
            size,
            checksum,
        };
        self.written_ids.insert(r.id);
        self.written.push(out.clone());
        out
    }

    /// A composite predicted disassembled (its path is an index): the
    /// parts, then the index, under the overwrite rule of any put (for the
    /// index; parts without their index are this dataset's own leftovers).
    fn write_disassembled(
        &mut self,
        storage_class: &str,
        r: &BundleRef,
        obj: &InMemoryDataset,
    ) -> Result<WrittenOutput> {
        self.before_write(r)?;
        let ds = self.registry.datastore();
        let f = ds
            .formatters()
            .for_storage_class(storage_class)
            .map_err(|e| self.ds_err(e))?;
        let info = match ds.write_disassembled_at(&r.path, f.as_ref(), obj, self.replace) {
            Err(DatastoreError::AlreadyExists { .. }) => {
                self.move_aside(r)?;
                ds.write_disassembled_at(&r.path, f.as_ref(), obj, false)
            }
            other => other,
        }
        .map_err(|e| self.map_write_err(r, e))?;
        Ok(self.record(r, info.size, info.checksum))
    }

    fn encode(
        &self,
        storage_class: &str,
        r: &BundleRef,
        obj: &InMemoryDataset,
    ) -> Result<(Vec<u8>, String)> {
        let f = self
            .registry
            .datastore()
            .formatters()
            .for_storage_class(storage_class)
            .map_err(|e| self.ds_err(e))?;
        let bytes = f.encode(obj).map_err(|source| {
            self.ds_err(DatastoreError::Encode {
                what: format!("{} {}", r.dataset_type, r.data_id),
                formatter: f.name().to_string(),
                path: r.path.clone(),
                source,
            })
        })?;
        Ok((bytes, f.name().to_string()))
    }

    /// Moves a file an external command wrote (at a temporary path beside
    /// the final one) into place as the output `id` of `connection`, under
    /// the same overwrite rule as a put, and records its size and BLAKE3.
    /// The file is hashed before it is published, so the recorded checksum
    /// is of exactly the bytes that appear at the final path.
    pub fn adopt_file(&mut self, connection: &str, id: Uuid, file: &Path) -> Result<()> {
        let r = self
            .output_refs(connection)?
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| Error::UnpredictedOutput {
                quantum: self.index,
                task: self.task.label.clone(),
                connection: connection.to_string(),
                data_id: id.to_string(),
                predicted: String::new(),
            })?;
        self.before_write(&r)?;
        let adopt_err = |detail: String| Error::AdoptFile {
            quantum: self.index,
            task: self.task.label.clone(),
            connection: connection.to_string(),
            file: file.to_path_buf(),
            detail,
        };
        let meta = std::fs::symlink_metadata(file)
            .map_err(|e| adopt_err(format!("the command did not write it ({e})")))?;
        if !meta.is_file() {
            return Err(adopt_err("it is not a regular file".into()));
        }
        let (size, checksum) = hash_file(file).map_err(|e| adopt_err(e.to_string()))?;
        let dest = self.registry.output_path(&r).map_err(|e| self.ds_err(e))?;
        if self.replace {
            std::fs::rename(file, &dest)
                .map_err(|e| adopt_err(format!("moving it to {}: {e}", dest.display())))?;
        } else {
            // A hard link fails atomically when the destination exists.
            let mut linked = std::fs::hard_link(file, &dest);
            if matches!(&linked, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists) {
                // As in `write_bytes`: not ours by the journals, moved aside.
                self.move_aside(&r)?;
                linked = std::fs::hard_link(file, &dest);
            }
            match linked {
                Ok(()) => {
                    let _ = std::fs::remove_file(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::WouldOverwrite {
                        quantum: self.index,
                        task: self.task.label.clone(),
                        path: r.path.clone(),
                    })
                }
                Err(e) => return Err(adopt_err(format!("linking it to {}: {e}", dest.display()))),
            }
        }
        if self.registry.datastore().config().fsync {
            if let Ok(f) = std::fs::File::open(&dest) {
                let _ = f.sync_all();
            }
        }
        self.record(&r, size, checksum);
        Ok(())
    }

    /// Predicted outputs not written by this attempt.
    pub fn missing_outputs(&self) -> Vec<(String, BundleRef)> {
        self.quantum
            .outputs
            .iter()
            .flat_map(|(c, refs)| refs.iter().map(move |r| (c, r)))
            .filter(|(_, r)| !self.written_ids.contains(&r.id))
            .map(|(c, r)| (c.clone(), r.clone()))
            .collect()
    }

    pub fn written(&self) -> &[WrittenOutput] {
        &self.written
    }

    /// Ids of the inputs read, each once, in first-read order.
    pub fn inputs_used(&self) -> Vec<Uuid> {
        let mut seen = HashSet::new();
        self.inputs_used
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect()
    }

    /// Everything the journal needs from this attempt.
    pub fn into_records(self) -> (Vec<WrittenOutput>, Vec<Uuid>) {
        let used = self.inputs_used();
        (self.written, used)
    }
}

impl LimitedButler for QuantumBackedButler {
    fn get(&mut self, r: &BundleRef, read: &ReadSpec<'_>) -> Result<InMemoryDataset> {
        if read.is_whole() && !quanta_datastore::disassembled::is_index(&r.path) {
            return self.read_whole(r, read.storage_class);
        }
        self.read_part(r, read)
    }

    fn get_bytes(&mut self, r: &BundleRef) -> Result<Vec<u8>> {
        let bytes = self
            .registry
            .datastore()
            .read_bytes(&r.path)
            .map_err(|e| self.ds_err(e))?;
        self.inputs_used.push(r.id);
        Ok(bytes)
    }

    fn put(
        &mut self,
        obj: &InMemoryDataset,
        r: &BundleRef,
        storage_class: &str,
    ) -> Result<WrittenOutput> {
        if quanta_datastore::disassembled::is_index(&r.path) {
            return self.write_disassembled(storage_class, r, obj);
        }
        let (bytes, f) = self.encode(storage_class, r, obj)?;
        self.write_bytes(r, &bytes, &f)
    }

    fn put_bytes(&mut self, bytes: &[u8], r: &BundleRef, formatter: &str) -> Result<WrittenOutput> {
        self.write_bytes(r, bytes, formatter)
    }

    fn stored(&self, r: &BundleRef) -> Result<bool> {
        Ok(self.registry.datastore().exists(&r.path))
    }

    fn dimension_record(&self, element: &str, data_id: &DataId) -> Result<Option<DimensionRecord>> {
        Ok(self.registry.dimension_record(element, data_id)?.cloned())
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((hasher.count(), hasher.finalize().to_hex().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: serde_json::Value) -> DimensionRecord {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_record_is_found_by_its_key_and_the_dimensions_it_names() {
        let mut records = DimensionRecords::new();
        records.insert(
            "patch".into(),
            vec![
                rec(serde_json::json!({"skymap": "grid", "tract": 0, "id": 4, "cell_x": 1})),
                rec(serde_json::json!({"skymap": "grid", "tract": 1, "id": 4, "cell_x": 2})),
                rec(serde_json::json!({"skymap": "other", "tract": 1, "id": 4, "cell_x": 3})),
            ],
        );
        records.insert(
            "skymap".into(),
            vec![rec(serde_json::json!({"name": "grid", "tract_max": 2}))],
        );
        let index = RecordIndex::new(records);
        let id = DataId::from_pairs([
            ("skymap", DataIdValue::from("grid")),
            ("tract", DataIdValue::Int(1)),
            ("patch", DataIdValue::Int(4)),
            ("band", DataIdValue::from("r")),
        ]);
        let cell_x = |r: Option<&DimensionRecord>| r.and_then(|r| r.get("cell_x")).cloned();
        assert_eq!(cell_x(index.find("patch", &id)), Some(2.into()));
        assert_eq!(
            index.find("skymap", &id).and_then(|r| r.get("tract_max")),
            Some(&2.into())
        );
        // An element the data ID lacks, or a key no record has: none.
        assert!(index.find("visit", &id).is_none());
        let mut other = id.clone();
        other.insert("patch", 5);
        assert!(index.find("patch", &other).is_none());
        other.insert("patch", 4);
        other.insert("tract", 7);
        assert!(index.find("patch", &other).is_none());
    }
}
