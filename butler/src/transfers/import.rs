//! `Butler::import`: an LSST export directory (written by quanta or by
//! `butler export`) into this repo, all or nothing, idempotent, by ingest's
//! protocol: under the datastore's ingest lock, everything is read and
//! mapped before anything is written; the files of datasets not yet
//! registered are transferred to their template paths (replacing what a
//! killed import left there: nothing registered refers to it) and
//! verified; then one registry transaction writes records, dataset types,
//! collections, datasets and memberships. A failure before the commit
//! removes the files this run put in; a rerun after a kill ends where an
//! uninterrupted run would.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use quanta_core::fault::{self, kill_point};
use quanta_core::{CollectionType, DatasetRef, DatasetType, DimensionUniverse};
use quanta_datastore::{
    DatastoreError, InMemoryDataset, IngestLock, LeftoverSweep, Placement, StoredFileInfo,
    TransferMode,
};
use quanta_registry::{ImportBatch, ImportDatasets, ImportStats, NewDataset, RecordSet};
use serde_json::{Map, Value as Json};

use super::format::{DatasetEntry, ExportDocument, Extras, FileEntry, EXPORT_FILE, EXTRAS_FILE};
use super::mapping::{
    composite_storage_class, quanta_formatter, quanta_storage_class, FileConversion,
    DISASSEMBLED_FORMATTER_PREFIX, MAPPINGS,
};
use super::{phase, TransferError};
use crate::butler::to_record;
use crate::sources::CanonicalDirs;
use crate::Butler;
use quanta_datastore::disassembled::is_index;
use quanta_datastore::is_direct_path;

/// How to import.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Copy, Hardlink, Symlink or Auto (hard link, else copy).
    pub transfer: TransferMode,
    /// The expected checksums come from a registry that recorded these
    /// very files (`transfer`): a hard link or symlink to the source is
    /// then checked by size, not hashed again. An import from a directory
    /// never trusts: every file is hashed and compared with the extras.
    pub trust_source_checksums: bool,
}

impl ImportOptions {
    /// An import that verifies every file.
    pub fn new(transfer: TransferMode) -> Self {
        Self {
            transfer,
            trust_source_checksums: false,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportSummary {
    #[serde(flatten)]
    pub stats: ImportStats,
    /// Files put into the datastore.
    pub files: usize,
    /// Files a killed earlier run had already put at their destination,
    /// found to be the right ones (size and checksum) and kept.
    pub files_present: usize,
    /// `element.field` of LSST record fields this universe does not have
    /// (with a value; null ones are dropped silently).
    pub dropped_fields: Vec<String>,
}

/// A dataset whose file is to be transferred.
pub(super) struct Planned {
    pub(super) dataset_ref: DatasetRef,
    pub(super) source: PathBuf,
    pub(super) storage_class: &'static str,
    pub(super) conversion: FileConversion,
    pub(super) expected: Option<(u64, String)>,
}

impl Butler {
    /// Imports the export in directory `dir` (see the module doc).
    pub fn import(
        &mut self,
        dir: &Path,
        options: ImportOptions,
    ) -> Result<ImportSummary, TransferError> {
        if options.transfer == TransferMode::Move {
            return Err(TransferError::Unmappable(
                "import does not move files; use copy, link, symlink or auto".into(),
            ));
        }
        let mut clock = std::time::Instant::now();
        let file = dir.join(EXPORT_FILE);
        let text = fs::read_to_string(&file).map_err(|e| TransferError::io("read", &file, e))?;
        let doc = ExportDocument::parse(&text, &file)?;
        drop(text);
        phase("import: parse export.yaml", &mut clock);
        let extras = read_extras(dir)?;
        phase("import: read extras", &mut clock);
        self.import_document(&doc, &extras, dir, options)
    }

    /// Imports an export held in memory whose relative file paths are
    /// under `dir` (or under `extras.files_root` when set): what `import`
    /// does after parsing, and what `transfer` does with
    /// [`Butler::export_to_memory`]'s output.
    pub fn import_document(
        &mut self,
        doc: &ExportDocument,
        extras: &Extras,
        dir: &Path,
        options: ImportOptions,
    ) -> Result<ImportSummary, TransferError> {
        if options.transfer == TransferMode::Move {
            return Err(TransferError::Unmappable(
                "import does not move files; use copy, link, symlink or auto".into(),
            ));
        }
        let mut clock = std::time::Instant::now();
        let universe = self.universe().clone();
        let mut summary = ImportSummary::default();
        let mut dropped = BTreeSet::new();
        let mut batch = ImportBatch {
            records: map_records(&universe, doc, extras, &mut dropped)?,
            dataset_types: map_dataset_types(&universe, doc)?,
            ..Default::default()
        };
        summary.dropped_fields = dropped.into_iter().collect();
        for name in &summary.dropped_fields {
            tracing::warn!("dropped LSST record field {name}: not in this repo's universe");
        }
        map_collections(doc, &mut batch);
        batch.provenance = extras.provenance.clone();
        let root = match &extras.files_root {
            Some(r) => PathBuf::from(r),
            None => dir.to_path_buf(),
        };
        phase("import: map records, types, collections", &mut clock);
        let lock = self.datastore.lock_for_ingest()?;
        let (plan, groups) = self.plan_import(doc, extras, &batch, &root)?;
        batch.datasets = groups;
        phase("import: plan", &mut clock);
        if let Some(records) = self.expected_records(&plan, options)? {
            attach_records(&mut batch, &plan, &records);
            self.place_and_register(&lock, &plan, &records, &batch, options, &mut summary)?;
            phase(
                "import: transfer files beside the registry transaction",
                &mut clock,
            );
            kill_point(fault::INGEST_COMMITTED);
            drop(lock);
            return Ok(summary);
        }
        let (stored, kept) = transfer_in(&self.root, &self.datastore, &lock, &plan, options)?;
        summary.files = stored.len() - kept;
        summary.files_present = kept;
        phase("import: transfer files", &mut clock);
        attach_records(&mut batch, &plan, &stored);
        phase("import: attach file records", &mut clock);
        kill_point(fault::INGEST_BEFORE_COMMIT);
        match self.registry.import_batch(&batch) {
            Ok(stats) => {
                summary.stats = stats;
                self.registry.refresh_statistics_or_warn();
            }
            Err(e) => {
                remove_imported(&self.datastore, &stored);
                return Err(e.into());
            }
        }
        phase("import: registry transaction", &mut clock);
        kill_point(fault::INGEST_COMMITTED);
        drop(lock);
        Ok(summary)
    }

    /// The file record every planned file will have, when all are known
    /// before placing them: whole files with the export's size and
    /// checksum, transferred into the datastore (not `direct`, whose
    /// record is the resolved source). `None` otherwise.
    fn expected_records(
        &self,
        plan: &[Planned],
        options: ImportOptions,
    ) -> Result<Option<Vec<StoredFileInfo>>, TransferError> {
        if plan.is_empty() || options.transfer == TransferMode::Direct {
            return Ok(None);
        }
        let mut records = Vec::with_capacity(plan.len());
        for p in plan {
            let (FileConversion::None, Some((size, checksum))) = (&p.conversion, &p.expected)
            else {
                return Ok(None);
            };
            records.push(self.datastore.expected_record(
                &p.dataset_ref,
                p.storage_class,
                (*size, checksum),
            )?);
        }
        Ok(Some(records))
    }

    /// Places the planned files on other threads while the registry
    /// writes `batch` (its file records `records`, known in advance), and
    /// commits once both are done and every file placed has its expected
    /// record: the transaction, single-threaded, no longer waits for the
    /// files. Fills `summary`'s counts. On any failure the transaction is
    /// rolled back and the files placed are removed, as a sequential
    /// import would.
    fn place_and_register(
        &mut self,
        lock: &IngestLock,
        plan: &[Planned],
        records: &[StoredFileInfo],
        batch: &ImportBatch,
        options: ImportOptions,
        summary: &mut ImportSummary,
    ) -> Result<(), TransferError> {
        let (root, datastore, registry) = (&self.root, &self.datastore, &mut self.registry);
        let (placed, written) = std::thread::scope(|scope| {
            let files = scope.spawn(|| transfer_in(root, datastore, lock, plan, options));
            let mut clock = std::time::Instant::now();
            let written = registry.import_batch_uncommitted(batch);
            phase(
                "import: registry rows written (beside the files)",
                &mut clock,
            );
            (files.join(), written)
        });
        let placed = placed.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let ((stored, kept), stats) = match (placed, written) {
            (Ok(placed), Ok(stats)) => (placed, stats),
            // transfer_in removed what it placed; the registry rolled back
            // its own failure.
            (Err(e), _) => {
                let _ = registry.rollback_open();
                return Err(e);
            }
            (Ok((stored, _)), Err(e)) => {
                remove_imported(datastore, &stored);
                return Err(e.into());
            }
        };
        let fail = |registry: &mut quanta_registry::Registry, e: TransferError| {
            let _ = registry.rollback_open();
            remove_imported(datastore, &stored);
            Err(e)
        };
        // What `ingest_expected` guarantees; checked, since the rows
        // written already say so.
        if let Some((got, want)) = stored.iter().zip(records).find(|(got, want)| got != want) {
            return fail(
                registry,
                TransferError::BadFile {
                    path: datastore.root().join(&got.path),
                    reason: format!("was placed as {got:?}, not as the expected {want:?}"),
                },
            );
        }
        kill_point(fault::INGEST_BEFORE_COMMIT);
        if let Err(e) = registry.commit_open() {
            return fail(registry, e.into());
        }
        registry.refresh_statistics_or_warn();
        summary.stats = stats;
        summary.files = stored.len() - kept;
        summary.files_present = kept;
        Ok(())
    }

    /// The datasets of every entry, by (type, RUN), and the files to
    /// transfer: those of datasets not registered yet. Refuses a data ID
    /// another dataset holds in the RUN before anything is written.
    fn plan_import(
        &self,
        doc: &ExportDocument,
        extras: &Extras,
        batch: &ImportBatch,
        root: &Path,
    ) -> Result<(Vec<Planned>, Vec<ImportDatasets>), TransferError> {
        use rayon::prelude::*;
        let ids: Vec<_> = doc
            .datasets
            .iter()
            .flat_map(|d| d.files.iter().flat_map(|f| f.dataset_ids.iter().copied()))
            .collect();
        let registered = self.registry.registered_dataset_ids(&ids)?;
        let mut plan = Vec::new();
        let mut groups = Vec::new();
        for entry in &doc.datasets {
            let dt = self.import_dataset_type(batch, entry)?;
            let file = FilePlanning {
                entry,
                dt: &dt,
                universe: self.universe(),
                registered: &registered,
                extras,
                root,
            };
            // Each file on its own (data ID, mapping, source path), in
            // parallel; the first error in the entry's order is reported.
            let planned: Vec<_> = entry.files.par_iter().map(|f| file.plan(f)).collect();
            let mut group = ImportDatasets {
                run: entry.run.clone(),
                dataset_type: dt.name.clone(),
                datasets: Vec::with_capacity(entry.files.len()),
            };
            let first_new = plan.len();
            for p in planned {
                let (dataset, new) = p?;
                group.datasets.push(dataset);
                plan.extend(new);
            }
            self.refuse_taken_data_ids(entry, &dt, &plan[first_new..])?;
            groups.push(group);
        }
        Ok((plan, groups))
    }

    /// Refuses an entry's new dataset whose data ID another dataset holds
    /// in its RUN (looked up only when the RUN has datasets of the type).
    fn refuse_taken_data_ids(
        &self,
        entry: &DatasetEntry,
        dt: &DatasetType,
        new: &[Planned],
    ) -> Result<(), TransferError> {
        let run_has_some = !new.is_empty()
            && self.registry.find_collection(&entry.run)?.is_some()
            && self.registry.dataset_type(&dt.name)?.is_some()
            && self
                .registry
                .run_has_datasets_of_type(&entry.run, &dt.name)?;
        if !run_has_some {
            return Ok(());
        }
        let in_run = [entry.run.clone()];
        for p in new {
            let r = &p.dataset_ref;
            if let Some(other) = self
                .registry
                .find_dataset(&dt.name, &r.data_id, &in_run, None)?
            {
                return Err(entry_error(
                    entry,
                    dt,
                    format!(
                        "{} is already registered as {}, not as the export's {}; nothing was imported",
                        r.data_id, other.dataset_ref.id, r.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The dataset type of an entry: from the export, else the repo's.
    fn import_dataset_type(
        &self,
        batch: &ImportBatch,
        entry: &DatasetEntry,
    ) -> Result<DatasetType, TransferError> {
        if let Some(dt) = batch
            .dataset_types
            .iter()
            .find(|t| t.name == entry.dataset_type)
        {
            return Ok(dt.clone());
        }
        self.registry.dataset_type(&entry.dataset_type)?.ok_or_else(|| TransferError::Format {
            file: EXPORT_FILE.into(),
            line: entry.line,
            reason: format!(
                "datasets of type {} but no dataset_type entry for it, and the repo does not know it",
                entry.dataset_type
            ),
        })
    }
}

/// What planning one file of an export entry needs; shared by the
/// threads that plan an entry's files.
struct FilePlanning<'a> {
    entry: &'a DatasetEntry,
    dt: &'a DatasetType,
    universe: &'a DimensionUniverse,
    registered: &'a HashSet<quanta_core::Uuid>,
    extras: &'a Extras,
    root: &'a Path,
}

impl FilePlanning<'_> {
    /// The file's dataset, and its transfer unless it is registered.
    fn plan(&self, f: &FileEntry) -> Result<(NewDataset, Option<Planned>), TransferError> {
        let (entry, dt) = (self.entry, self.dt);
        let at = |reason: String| entry_error(entry, dt, reason);
        if f.dataset_ids.len() != 1 {
            return Err(at(format!(
                "`{}` holds {} datasets; quanta stores one dataset per file",
                f.path,
                f.dataset_ids.len()
            )));
        }
        let id = f.dataset_ids[0];
        let data_id = f.data_ids[0]
            .standardize(&dt.dimensions, self.universe)
            .map_err(|e| at(format!("dataset {id}: {e}")))?;
        if self.registered.contains(&id) {
            let dataset = NewDataset {
                id,
                data_id,
                stored: None,
            };
            return Ok((dataset, None));
        }
        let (storage_class, conversion) = file_mapping(f.formatter.as_deref(), dt).map_err(at)?;
        let dataset = NewDataset {
            id,
            data_id: data_id.clone(),
            stored: None,
        };
        let path = Path::new(&f.path);
        let planned = Planned {
            dataset_ref: DatasetRef {
                id,
                dataset_type: dt.name.clone(),
                data_id,
                run: entry.run.clone(),
            },
            source: if path.is_absolute() {
                path.to_path_buf()
            } else {
                self.root.join(path)
            },
            storage_class,
            conversion,
            expected: self.extras.files.get(&id).cloned(),
        };
        Ok((dataset, Some(planned)))
    }
}

/// An error in an export's entry for `dt`, at the entry's line.
fn entry_error(entry: &DatasetEntry, dt: &DatasetType, reason: String) -> TransferError {
    TransferError::Format {
        file: EXPORT_FILE.into(),
        line: entry.line,
        reason: format!("{} in RUN {}: {reason}", dt.name, entry.run),
    }
}

/// Transfers (or converts) every planned file in parallel, verifying
/// it against the export's extras; on failure removes what it put in.
/// Returns the files and how many of them were already in place.
/// Takes the repository's root and datastore, not the butler: an
/// overlapped import writes the registry meanwhile.
fn transfer_in(
    repo: &Path,
    datastore: &quanta_datastore::Datastore,
    lock: &IngestLock,
    plan: &[Planned],
    options: ImportOptions,
) -> Result<(Vec<StoredFileInfo>, usize), TransferError> {
    use rayon::prelude::*;
    use std::sync::Mutex;
    let sweep = LeftoverSweep::default();
    // A guard and a directory cache per thread of the pool, not per rayon
    // job (`map_init` makes one per split: with the files of a directory
    // spread through the plan, a `realpath` per file). A slot already
    // held (a thread that took up another file while inside a parallel
    // call of its own) gets a fresh pair rather than waiting for itself.
    let new_state = || -> Result<_, TransferError> {
        let guard = crate::repo_guard::RepoGuard::new(repo, datastore.root())?;
        Ok((guard, CanonicalDirs::default()))
    };
    let per_thread = (0..rayon::current_num_threads())
        .map(|_| new_state().map(Mutex::new))
        .collect::<Result<Vec<_>, _>>()?;
    let results: Vec<Result<(StoredFileInfo, Placement), TransferError>> = plan
        .par_iter()
        .map(|p| {
            let thread = rayon::current_thread_index().unwrap_or(0) % per_thread.len();
            let mut held = per_thread[thread].try_lock().ok();
            let mut spare;
            let (guard, dirs) = match held.as_deref_mut() {
                Some(state) => state,
                None => {
                    spare = new_state()?;
                    &mut spare
                }
            };
            let placed = transfer_one(datastore, guard, dirs, lock, &sweep, p, options)?;
            kill_point(fault::INGEST_TRANSFERRED);
            Ok(placed)
        })
        .collect();
    let mut stored = Vec::with_capacity(plan.len());
    let mut kept = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok((info, placement)) => {
                kept += usize::from(placement == Placement::AlreadyThere);
                stored.push(info);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        remove_imported(datastore, &stored);
        return Err(e);
    }
    Ok((stored, kept))
}

/// Attaches the file records to the new datasets of `batch`: the plan
/// lists them (`records[i]` is `plan[i]`'s) in the order of the groups,
/// without the registered ones.
fn attach_records(batch: &mut ImportBatch, plan: &[Planned], records: &[StoredFileInfo]) {
    let mut files = plan.iter().zip(records).peekable();
    for group in &mut batch.datasets {
        for d in &mut group.datasets {
            if let Some((_, info)) = files.next_if(|(p, _)| p.dataset_ref.id == d.id) {
                d.stored = Some(to_record(info));
            }
        }
    }
}

/// Removes the files an import put in place (after it failed).
fn remove_imported(datastore: &quanta_datastore::Datastore, stored: &[StoredFileInfo]) {
    for info in stored {
        // A disassembled composite's parts go with its index; a direct
        // file is not the datastore's.
        let removed = if is_index(&info.path) {
            datastore
                .remove_many(std::slice::from_ref(&info.path))
                .map(drop)
        } else if is_direct_path(&info.path) {
            Ok(())
        } else {
            datastore.remove(&info.path).map(drop)
        };
        if let Err(e) = removed {
            tracing::warn!("could not remove {} after a failed import: {e}", info.path);
        }
    }
}

fn transfer_one(
    datastore: &quanta_datastore::Datastore,
    guard: &mut crate::repo_guard::RepoGuard,
    dirs: &mut CanonicalDirs,
    lock: &IngestLock,
    sweep: &LeftoverSweep,
    p: &Planned,
    options: ImportOptions,
) -> Result<(StoredFileInfo, Placement), TransferError> {
    let bad = |reason: String| TransferError::BadFile {
        path: p.source.clone(),
        reason,
    };
    let resolved = dirs
        .resolve(&p.source)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let real = &resolved.path;
    if let Some(reason) = guard.refusal_of(real, Some(resolved.id)) {
        return Err(TransferError::Refused {
            path: p.source.clone(),
            reason: format!("is inside the destination repository ({reason})"),
        });
    }
    if !resolved.is_file {
        return Err(bad("not a regular file".into()));
    }
    match p.conversion {
        FileConversion::None => {
            let expected = p.expected.as_ref().map(|(s, c)| (*s, c.as_str()));
            datastore
                .ingest_expected(
                    lock,
                    sweep,
                    &resolved.source(),
                    &p.dataset_ref,
                    p.storage_class,
                    options.transfer,
                    expected,
                    options.trust_source_checksums,
                )
                .map_err(|e| match e {
                    DatastoreError::SizeMismatch {
                        expected, actual, ..
                    } => bad(format!(
                        "has {actual} bytes, the export says {expected} bytes"
                    )),
                    DatastoreError::ChecksumMismatch {
                        expected, actual, ..
                    } => bad(format!(
                        "has BLAKE3 {actual}, the export says BLAKE3 {expected}"
                    )),
                    other => other.into(),
                })
        }
        FileConversion::Disassembled => super::disassembled::transfer_disassembled(
            datastore,
            guard,
            dirs,
            (lock, sweep),
            p,
            real,
            options,
        ),
        FileConversion::YamlToJson => {
            let bytes = fs::read(real).map_err(|e| bad(format!("cannot read: {e}")))?;
            let value: Json = serde_yaml_ng::from_slice(&bytes)
                .map_err(|e| bad(format!("not YAML that quanta can convert to JSON: {e}")))?;
            let info =
                datastore.write(&p.dataset_ref, "Json", &InMemoryDataset::Json(value), true)?;
            Ok((info, Placement::Written))
        }
    }
}

fn read_extras(dir: &Path) -> Result<Extras, TransferError> {
    let path = dir.join(EXTRAS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Extras::default()),
        Err(e) => return Err(TransferError::io("read", &path, e)),
    };
    let extras: Extras = serde_json::from_str(&text).map_err(|e| TransferError::Format {
        file: path.display().to_string(),
        line: Some(e.line()),
        reason: e.to_string(),
    })?;
    if extras.format != Extras::FORMAT {
        return Err(TransferError::Format {
            file: path.display().to_string(),
            line: None,
            reason: format!("format `{}` is not {}", extras.format, Extras::FORMAT),
        });
    }
    Ok(extras)
}

/// The quanta storage class and conversion for a file of `dt`.
fn file_mapping(
    formatter: Option<&str>,
    dt: &DatasetType,
) -> Result<(&'static str, FileConversion), String> {
    let (storage_class, conversion) = match formatter {
        Some(f) if f.starts_with(DISASSEMBLED_FORMATTER_PREFIX) => (
            composite_storage_class(&dt.storage_class).ok_or_else(|| {
                format!(
                    "formatter {f} is a disassembled composite's, but the dataset type's storage \
                     class {} is not a composite",
                    dt.storage_class
                )
            })?,
            FileConversion::Disassembled,
        ),
        Some(f) => quanta_formatter(f).ok_or_else(|| {
            format!(
                "formatter {f} has no quanta mapping (see ARCHITECTURE.md, \"Export and import\")"
            )
        })?,
        None => MAPPINGS
            .iter()
            .find(|m| m.quanta_storage_class == dt.storage_class)
            .map(|m| (m.quanta_storage_class, FileConversion::None))
            .ok_or_else(|| format!("no formatter given for storage class {}", dt.storage_class))?,
    };
    if storage_class != dt.storage_class {
        return Err(format!(
            "formatter {} writes storage class {storage_class}, but the dataset type's is {}",
            formatter.unwrap_or("(none)"),
            dt.storage_class
        ));
    }
    Ok((storage_class, conversion))
}

/// Dimension records in this universe's fields: LSST's `datetime_begin` /
/// `datetime_end` become `timespan_begin` / `timespan_end`, fields from the
/// extras (regions) are added back, fields the universe lacks are dropped
/// (named in `dropped` when they had a value). An unknown element is an
/// error.
fn map_records(
    universe: &DimensionUniverse,
    doc: &ExportDocument,
    extras: &Extras,
    dropped: &mut BTreeSet<String>,
) -> Result<RecordSet, TransferError> {
    let mut out: RecordSet = BTreeMap::new();
    for (element, records) in &doc.dimensions {
        let e =
            universe
                .element(element)
                .filter(|e| e.has_records)
                .ok_or_else(|| {
                    TransferError::Unmappable(format!(
                "dimension element `{element}` of the export ({} universe version {}) has no \
                 records in this repo's universe ({} version {}); nothing was imported",
                doc.universe_namespace, doc.universe_version, universe.namespace, universe.version
            ))
                })?;
        let fields: HashSet<String> = e
            .record_fields(universe)
            .into_iter()
            .map(|f| f.name)
            .collect();
        let extra = extras.record_fields.get(element);
        for (i, rec) in records.iter().enumerate() {
            let mut mapped = Map::new();
            for (k, v) in rec {
                let name = match k.as_str() {
                    "datetime_begin" => "timespan_begin",
                    "datetime_end" => "timespan_end",
                    other => other,
                };
                if fields.contains(name) {
                    mapped.insert(name.to_string(), v.clone());
                } else if !v.is_null() {
                    dropped.insert(format!("{element}.{k}"));
                }
            }
            if let Some(more) = extra.and_then(|x| x.get(i)) {
                mapped.extend(more.clone());
            }
            out.entry(element.clone()).or_default().push(mapped);
        }
    }
    Ok(out)
}

/// Dataset types with this universe's dimensions (LSST lists the implied
/// ones too, which are dropped) and quanta's storage class.
fn map_dataset_types(
    universe: &DimensionUniverse,
    doc: &ExportDocument,
) -> Result<Vec<DatasetType>, TransferError> {
    let mut out = Vec::new();
    for t in &doc.dataset_types {
        for d in &t.dimensions {
            if universe.element(d).is_none() {
                return Err(TransferError::Unmappable(format!(
                    "dataset type {}: dimension `{d}` is not in this repo's universe",
                    t.name
                )));
            }
        }
        let group = universe
            .conform(&t.dimensions)
            .map_err(|e| TransferError::Unmappable(format!("dataset type {}: {e}", t.name)))?;
        let implied: HashSet<String> = t
            .dimensions
            .iter()
            .filter_map(|d| universe.conform(&[d]).ok())
            .flat_map(|g| {
                let required: HashSet<String> = g.names.iter().cloned().collect();
                universe
                    .implied_closure(&g)
                    .into_iter()
                    .filter(move |n| !required.contains(n))
            })
            .collect();
        let kept: Vec<&String> = group
            .names
            .iter()
            .filter(|d| !implied.contains(*d))
            .collect();
        let storage_class = quanta_storage_class(&t.storage_class)
            .or_else(|| composite_storage_class(&t.storage_class))
            .ok_or_else(|| {
                TransferError::Unmappable(format!(
                "dataset type {}: storage class {} has no quanta mapping (see ARCHITECTURE.md, \
                 \"Export and import\"); nothing was imported",
                t.name, t.storage_class
            ))
            })?;
        out.push(DatasetType {
            name: t.name.clone(),
            dimensions: universe
                .conform(&kept)
                .map_err(|e| TransferError::Unmappable(format!("dataset type {}: {e}", t.name)))?,
            storage_class: storage_class.into(),
            is_calibration: t.is_calibration,
        });
    }
    Ok(out)
}

/// Collections, chains (a chain after the chains it holds) and
/// memberships.
fn map_collections(doc: &ExportDocument, batch: &mut ImportBatch) {
    let mut chains = Vec::new();
    for c in &doc.collections {
        if c.collection_type == CollectionType::Chained {
            chains.push((c.name.clone(), c.children.clone()));
        } else if !batch.collections.iter().any(|(n, _, _)| n == &c.name) {
            batch
                .collections
                .push((c.name.clone(), c.collection_type, c.doc.clone()));
        }
    }
    // Children chains first: repeatedly take the chains whose chained
    // children are placed (a cycle is left in order for the registry to refuse).
    let names: HashSet<String> = chains.iter().map(|(n, _)| n.clone()).collect();
    let mut placed: HashSet<String> = HashSet::new();
    while !chains.is_empty() {
        let ready = chains
            .iter()
            .position(|(_, children)| {
                children
                    .iter()
                    .all(|c| !names.contains(c) || placed.contains(c))
            })
            .unwrap_or(0);
        let chain = chains.remove(ready);
        placed.insert(chain.0.clone());
        batch.chains.push(chain);
    }
    batch.tags = doc.tags.clone();
    batch.calibs = doc
        .calibs
        .iter()
        .map(|(name, ranges)| {
            let flat = ranges
                .iter()
                .flat_map(|((b, e), ids)| ids.iter().map(move |id| (*id, *b, *e)))
                .collect();
            (name.clone(), flat)
        })
        .collect();
}
