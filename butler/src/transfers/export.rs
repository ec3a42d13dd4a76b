//! `Butler::export`: datasets of a query with everything they need (the
//! dimension records of their data IDs and what those imply, dataset types,
//! RUN, TAGGED, CALIBRATION and CHAINED collections, memberships), written
//! as an LSST export directory.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use quanta_core::{CollectionType, DataIdValue, Uuid};
use quanta_registry::{Binds, CollectionRecord, FoundDataset, Registry};
use rayon::prelude::*;
use serde_json::{Map, Value as Json};

use super::format::{
    CollectionEntry, DatasetEntry, DatasetTypeEntry, ExportDocument, Extras, FileEntry,
    EXPORT_FILE, EXTRAS_FILE,
};
use super::mapping::{
    composite_storage_class, lsst_formatter, lsst_storage_class, DISASSEMBLED_FORMATTER_PREFIX,
};
use super::{phase, TransferError};
use crate::Butler;
use quanta_datastore::disassembled::is_index;
use quanta_datastore::is_direct_path;

/// How the files reach the export directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportTransfer {
    Copy,
    /// Hard link (same filesystem).
    Link,
    /// Symbolic link to the datastore file.
    Symlink,
    /// Not at all: paths stay relative to the source datastore root.
    None,
}

impl std::str::FromStr for ExportTransfer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "copy" => Ok(Self::Copy),
            "link" | "hardlink" => Ok(Self::Link),
            "symlink" => Ok(Self::Symlink),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "transfer mode `{s}`: expected copy, link, symlink or none"
            )),
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub collections: Vec<String>,
    /// Every type when empty.
    pub dataset_types: Vec<String>,
    pub where_text: String,
    pub binds: Binds,
    pub transfer: ExportTransfer,
    /// Carry the provenance of the datasets (the quanta that produced
    /// them) in the extras.
    pub with_provenance: bool,
}

/// An export held in memory: what `export` writes, and what `transfer`
/// imports without writing it.
#[derive(Debug)]
pub struct InMemoryExport {
    pub doc: ExportDocument,
    pub extras: Extras,
    /// The exported datasets, each with its file.
    pub found: Vec<FoundDataset>,
    pub summary: ExportSummary,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExportSummary {
    pub datasets: usize,
    pub records: usize,
    pub collections: usize,
    /// Datasets left out because they have no file (an LSST export entry
    /// needs a path).
    pub without_file: usize,
    /// True when the files were not transferred (`none`).
    pub not_self_contained: bool,
}

impl Butler {
    /// Exports the datasets `options` selects into the directory `out`
    /// (created; one that already holds an `export.yaml` is refused). Files
    /// go first, then `quanta-extras.json`, then `export.yaml` through a
    /// temporary name: a killed export leaves no `export.yaml`, and a rerun
    /// writes over what it left.
    pub fn export(
        &self,
        out: &Path,
        options: &ExportOptions,
    ) -> Result<ExportSummary, TransferError> {
        if out.join(EXPORT_FILE).exists() {
            return Err(TransferError::Unmappable(format!(
                "`{}` already holds an export ({EXPORT_FILE}); choose a new directory",
                out.display()
            )));
        }
        let export = self.export_to_memory(options)?;
        let mut clock = std::time::Instant::now();
        fs::create_dir_all(out).map_err(|e| TransferError::io("create", out, e))?;
        self.transfer_out(&export.found, out, options.transfer)?;
        phase("export: transfer files", &mut clock);
        let extras_text = serde_json::to_string(&export.extras).expect("extras serialize");
        write_via_temp(&out.join(EXTRAS_FILE), extras_text.as_bytes())?;
        phase("export: write extras", &mut clock);
        write_yaml_via_temp(&out.join(EXPORT_FILE), &export.doc)?;
        phase("export: write export.yaml", &mut clock);
        Ok(export.summary)
    }

    /// The export of the datasets `options` selects as it would be
    /// written, without writing anything: the document, the extras (with
    /// `files_root` set to this datastore's root when `options.transfer`
    /// is `None`) and the datasets. `transfer` imports this directly.
    pub fn export_to_memory(
        &self,
        options: &ExportOptions,
    ) -> Result<InMemoryExport, TransferError> {
        let mut clock = std::time::Instant::now();
        let registry = &self.registry;
        let collections = expand_collections(registry, &options.collections)?;
        let (found, without_file) = self.datasets_with_files(options)?;
        phase("export: query datasets", &mut clock);
        let mut summary = ExportSummary {
            not_self_contained: options.transfer == ExportTransfer::None,
            without_file,
            ..Default::default()
        };
        let selected: foldhash::HashSet<Uuid> = found.iter().map(|f| f.dataset_ref.id).collect();
        let mut doc = ExportDocument {
            universe_version: i64::from(self.universe().version),
            universe_namespace: self.universe().namespace.clone(),
            ..Default::default()
        };
        let mut extras = Extras {
            format: Extras::FORMAT.into(),
            version: 1,
            files_root: (options.transfer == ExportTransfer::None)
                .then(|| self.datastore.root().display().to_string()),
            ..Default::default()
        };
        let (dimensions, record_fields) = needed_records(registry, &found)?;
        phase("export: dimension records", &mut clock);
        summary.records = dimensions.iter().map(|(_, r)| r.len()).sum();
        doc.dimensions = dimensions;
        extras.record_fields = record_fields;
        self.export_datasets(&found, &mut doc, &mut extras, options.transfer)?;
        phase("export: dataset entries", &mut clock);
        export_collections(registry, &collections, &found, &selected, &mut doc)?;
        phase("export: collections", &mut clock);
        if options.with_provenance {
            extras.provenance = Some(super::provenance::export_provenance(registry, &found)?);
        }
        summary.collections = doc.collections.len();
        summary.datasets = found.len();
        Ok(InMemoryExport {
            doc,
            extras,
            found,
            summary,
        })
    }

    /// The distinct datasets the query of `options` finds that have a
    /// file, in query order, and how many it found without one.
    pub(crate) fn datasets_with_files(
        &self,
        options: &ExportOptions,
    ) -> Result<(Vec<FoundDataset>, usize), TransferError> {
        let found = self.registry.query_datasets(
            &options.dataset_types,
            &options.collections,
            &options.where_text,
            &options.binds,
            false,
        )?;
        let mut seen = foldhash::HashSet::default();
        seen.reserve(found.len());
        let mut without_file = 0;
        let found = found
            .into_iter()
            .filter(|f| seen.insert(f.dataset_ref.id))
            .filter(|f| {
                let keep = f.stored.is_some();
                without_file += usize::from(!keep);
                keep
            })
            .collect();
        Ok((found, without_file))
    }

    /// Dataset types and dataset entries, grouped by (type, RUN) in query
    /// order; sizes and checksums into the extras. A direct file
    /// ([`is_direct_path`]) keeps its absolute path in an export without
    /// files; one with files gets its dataset's template path there, as
    /// LSST's export does.
    fn export_datasets(
        &self,
        found: &[FoundDataset],
        doc: &mut ExportDocument,
        extras: &mut Extras,
        mode: ExportTransfer,
    ) -> Result<(), TransferError> {
        let mut groups: HashMap<(String, String), usize> = HashMap::new();
        let mut last: Option<usize> = None;
        let mut direct = DirectDestinations::new(self);
        let mut last_formatter: Option<(&str, String)> = None;
        extras.files.reserve(found.len());
        for f in found {
            let r = &f.dataset_ref;
            let stored = f
                .stored
                .as_ref()
                .expect("datasets without a file were left out");
            let disassembled = is_index(&stored.path);
            if !doc.dataset_types.iter().any(|t| t.name == r.dataset_type) {
                let dt = self.registry.dataset_type_required(&r.dataset_type)?;
                let storage_class = lsst_storage_class(&dt.storage_class)
                    .or_else(|| {
                        disassembled
                            .then(|| composite_storage_class(&dt.storage_class))
                            .flatten()
                    })
                    .ok_or_else(|| {
                    TransferError::Unmappable(format!(
                        "dataset type {}: storage class {} has no LSST mapping (see ARCHITECTURE.md, \"Export and import\")",
                        dt.name, dt.storage_class
                    ))
                })?;
                doc.dataset_types.push(DatasetTypeEntry {
                    name: dt.name.clone(),
                    dimensions: dt.dimensions.names.clone(),
                    storage_class: storage_class.into(),
                    is_calibration: dt.is_calibration,
                });
            }
            let formatter = if disassembled {
                format!("{DISASSEMBLED_FORMATTER_PREFIX}{}", stored.formatter)
            } else {
                // Consecutive datasets nearly always share a formatter.
                match &last_formatter {
                    Some((ours, lsst)) if *ours == stored.formatter => lsst.clone(),
                    _ => {
                        let lsst = lsst_formatter(&stored.formatter)
                            .ok_or_else(|| {
                                TransferError::Unmappable(format!(
                                    "{r}: formatter {} has no LSST mapping",
                                    stored.formatter
                                ))
                            })?
                            .to_string();
                        last_formatter = Some((stored.formatter.as_str(), lsst.clone()));
                        lsst
                    }
                }
            };
            // Query order keeps a type's datasets of one RUN together: the
            // previous entry is nearly always the one (no key to build).
            let same = |i: &usize| {
                let d = &doc.datasets[*i];
                d.dataset_type == r.dataset_type && d.run == r.run
            };
            let index = match last.filter(same) {
                Some(index) => index,
                None => {
                    let key = (r.dataset_type.clone(), r.run.clone());
                    *groups.entry(key).or_insert_with(|| {
                        doc.datasets.push(DatasetEntry {
                            dataset_type: r.dataset_type.clone(),
                            run: r.run.clone(),
                            files: Vec::new(),
                            line: None,
                        });
                        doc.datasets.len() - 1
                    })
                }
            };
            last = Some(index);
            let path = if is_direct_path(&stored.path) && mode != ExportTransfer::None {
                direct.of(r)?
            } else {
                stored.path.clone()
            };
            doc.datasets[index].files.push(FileEntry {
                dataset_ids: vec![r.id],
                data_ids: vec![r.data_id.clone()],
                path,
                formatter: Some(formatter),
            });
            extras
                .files
                .insert(r.id, (stored.size, stored.checksum.clone()));
        }
        Ok(())
    }

    /// Puts the files at their datastore paths under `out` (a direct
    /// file at its dataset's template path), in parallel.
    fn transfer_out(
        &self,
        found: &[FoundDataset],
        out: &Path,
        mode: ExportTransfer,
    ) -> Result<(), TransferError> {
        if mode == ExportTransfer::None {
            return Ok(());
        }
        let datastore = &self.datastore;
        // Every file of each dataset: a disassembled composite's parts
        // beside its index, at their datastore paths.
        let mut rels = Vec::with_capacity(found.len());
        let mut direct = Vec::new();
        let mut destinations = DirectDestinations::new(self);
        for f in found {
            let stored = f.stored.as_ref().expect("stored");
            if is_index(&stored.path) {
                let info = crate::butler::to_info(stored);
                rels.extend(datastore.files_of(&info)?.into_iter().map(|i| i.path));
            } else if is_direct_path(&stored.path) {
                direct.push((stored.path.as_str(), destinations.of(&f.dataset_ref)?));
            } else {
                rels.push(stored.path.clone());
            }
        }
        transfer_direct_out(&direct, out, mode)?;
        if mode != ExportTransfer::Copy {
            // Sorted, a directory's files are consecutive: each worker
            // links them relative to its handles on the current directories.
            rels.par_sort_unstable();
            let symlink = mode == ExportTransfer::Symlink;
            return rels
                .par_iter()
                .try_for_each_init(LinkDirs::default, |dirs, rel| {
                    dirs.link(&datastore.abs_path(rel)?, &out.join(rel), symlink)
                });
        }
        rels.par_iter()
            .try_for_each(|rel| copy_via_temp(&datastore.abs_path(rel)?, &out.join(rel)))
    }
}

/// The direct files of an export with files, each (source, path under
/// `out`), one by one: a direct file is usually one of a few large raws,
/// not one of millions of small outputs.
fn transfer_direct_out(
    direct: &[(&str, String)],
    out: &Path,
    mode: ExportTransfer,
) -> Result<(), TransferError> {
    let mut dirs = LinkDirs::default();
    for (src, rel) in direct {
        let (src, dest) = (Path::new(src), out.join(rel));
        if mode == ExportTransfer::Copy {
            copy_via_temp(src, &dest)?;
        } else {
            dirs.link(src, &dest, mode == ExportTransfer::Symlink)?;
        }
    }
    Ok(())
}

/// Where a direct file (see [`is_direct_path`]) goes in an export with
/// files or a retrieve: its dataset's template path, as LSST's export
/// does; each dataset type's storage class looked up once.
pub(super) struct DirectDestinations<'a> {
    butler: &'a Butler,
    storage_classes: HashMap<String, String>,
}

impl<'a> DirectDestinations<'a> {
    pub(super) fn new(butler: &'a Butler) -> Self {
        Self {
            butler,
            storage_classes: HashMap::new(),
        }
    }

    pub(super) fn of(&mut self, r: &quanta_core::DatasetRef) -> Result<String, TransferError> {
        if !self.storage_classes.contains_key(&r.dataset_type) {
            let dt = self
                .butler
                .registry
                .dataset_type_required(&r.dataset_type)?;
            self.storage_classes
                .insert(r.dataset_type.clone(), dt.storage_class);
        }
        let storage_class = &self.storage_classes[&r.dataset_type];
        Ok(self.butler.datastore.single_path_for(r, storage_class)?)
    }
}

/// Copies `src` to a temporary name beside `dest`, then renames it into
/// place. The directory is created when the copy finds it missing, not
/// probed for every file.
fn copy_via_temp(src: &Path, dest: &Path) -> Result<(), TransferError> {
    let tmp = temp_name(dest);
    match fs::copy(src, &tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).map_err(|e| TransferError::io("create", dir, e))?;
            }
            fs::copy(src, &tmp).map(drop)
        }
        other => other.map(drop),
    }
    .map_err(|e| TransferError::io("write", dest, e))?;
    fs::rename(&tmp, dest).map_err(|e| TransferError::io("rename into", dest, e))
}

/// A worker's handles (`O_PATH`) on the source and destination
/// directories of the file it links, kept while the next file is in the
/// same ones: each link is made relative to them instead of walking two
/// full paths from `/` (export links a million files in a few thousand
/// directories).
#[derive(Default)]
struct LinkDirs {
    source: Option<(PathBuf, rustix::fd::OwnedFd)>,
    dest: Option<(PathBuf, rustix::fd::OwnedFd)>,
}

impl LinkDirs {
    /// Hard-links (or symlinks) the datastore file `src` at `dest`,
    /// replacing what a killed export left there.
    fn link(&mut self, src: &Path, dest: &Path, symlink: bool) -> Result<(), TransferError> {
        use rustix::fs::{linkat, symlinkat, unlinkat, AtFlags};
        let not_a_file = || TransferError::io("write", dest, std::io::Error::other("not a file"));
        let (Some(src_dir), Some(dest_dir)) = (src.parent(), dest.parent()) else {
            return Err(not_a_file());
        };
        let (Some(src_name), Some(name)) = (src.file_name(), dest.file_name()) else {
            return Err(not_a_file());
        };
        let from = if symlink {
            None
        } else {
            Some(
                handle(&mut self.source, src_dir, false)
                    .map_err(|e| TransferError::io("open", src_dir, e))?,
            )
        };
        let to = handle(&mut self.dest, dest_dir, true)
            .map_err(|e| TransferError::io("create", dest_dir, e))?;
        // Not following a symlink in the datastore (a symlink ingest's):
        // the export holds the symlink, as the datastore does.
        let make = || match from {
            Some(from) => linkat(from, src_name, to, name, AtFlags::empty()),
            None => symlinkat(src, to, name),
        };
        match make() {
            Err(rustix::io::Errno::EXIST) => {
                unlinkat(to, name, AtFlags::empty())
                    .map_err(|e| TransferError::io("replace", dest, e.into()))?;
                make()
            }
            other => other,
        }
        .map_err(|e| TransferError::io("write", dest, e.into()))
    }
}

/// The handle in `slot` when it is `dir`'s, else a new one on `dir`
/// (created first with `create`) put there.
fn handle<'a>(
    slot: &'a mut Option<(PathBuf, rustix::fd::OwnedFd)>,
    dir: &Path,
    create: bool,
) -> std::io::Result<&'a rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    if !matches!(slot, Some((held, _)) if held == dir) {
        if create {
            fs::create_dir_all(dir)?;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(dir, flags, Mode::empty())?;
        return Ok(&slot.insert((dir.to_path_buf(), fd)).1);
    }
    slot.as_ref()
        .map(|(_, fd)| fd)
        .ok_or_else(|| std::io::Error::other("no directory handle"))
}

fn temp_name(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.quanta-export-{}", std::process::id()))
}

fn write_via_temp(dest: &Path, bytes: &[u8]) -> Result<(), TransferError> {
    let tmp = temp_name(dest);
    fs::write(&tmp, bytes).map_err(|e| TransferError::io("write", &tmp, e))?;
    fs::rename(&tmp, dest).map_err(|e| TransferError::io("rename into", dest, e))
}

/// Streams the document into `dest` through a temporary name.
fn write_yaml_via_temp(dest: &Path, doc: &ExportDocument) -> Result<(), TransferError> {
    use std::io::Write;
    let tmp = temp_name(dest);
    let file = fs::File::create(&tmp).map_err(|e| TransferError::io("create", &tmp, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    doc.write_yaml(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| TransferError::io("write", &tmp, e))?;
    drop(out);
    fs::rename(&tmp, dest).map_err(|e| TransferError::io("rename into", dest, e))
}

/// The collections named and, through chains, every child; children
/// before the chains that hold them.
fn expand_collections(
    registry: &Registry,
    names: &[String],
) -> Result<Vec<CollectionRecord>, TransferError> {
    fn visit(
        registry: &Registry,
        name: &str,
        out: &mut Vec<CollectionRecord>,
        seen: &mut HashSet<String>,
    ) -> Result<(), TransferError> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let record = registry.collection(name)?;
        for child in &record.children {
            visit(registry, child, out, seen)?;
        }
        out.push(record);
        Ok(())
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for name in names {
        visit(registry, name, &mut out, &mut seen)?;
    }
    Ok(out)
}

/// Collection entries (the RUNs of the datasets first, then the named
/// collections and their children) and the memberships of the selected
/// datasets.
fn export_collections(
    registry: &Registry,
    collections: &[CollectionRecord],
    found: &[FoundDataset],
    selected: &foldhash::HashSet<Uuid>,
    doc: &mut ExportDocument,
) -> Result<(), TransferError> {
    let mut names = HashSet::new();
    let mut runs: Vec<&str> = found.iter().map(|f| f.dataset_ref.run.as_str()).collect();
    runs.sort_unstable();
    runs.dedup();
    for run in runs {
        let record = registry.collection(run)?;
        names.insert(run.to_string());
        doc.collections.push(entry_of(&record));
    }
    for record in collections {
        if names.insert(record.name.clone()) {
            doc.collections.push(entry_of(record));
        }
        match record.collection_type {
            CollectionType::Tagged => {
                let ids: Vec<Uuid> = registry
                    .tagged_dataset_ids(&record.name)?
                    .into_iter()
                    .filter(|id| selected.contains(id))
                    .collect();
                doc.tags.push((record.name.clone(), ids));
            }
            CollectionType::Calibration => {
                let mut by_range: Vec<((f64, f64), Vec<Uuid>)> = Vec::new();
                for (id, begin, end) in registry.calibration_ranges(&record.name)? {
                    if !selected.contains(&id) {
                        continue;
                    }
                    match by_range.iter_mut().find(|(r, _)| *r == (begin, end)) {
                        Some((_, ids)) => ids.push(id),
                        None => by_range.push(((begin, end), vec![id])),
                    }
                }
                doc.calibs.push((record.name.clone(), by_range));
            }
            _ => {}
        }
    }
    Ok(())
}

fn entry_of(record: &CollectionRecord) -> CollectionEntry {
    CollectionEntry {
        name: record.name.clone(),
        collection_type: record.collection_type,
        doc: record.doc.clone(),
        children: record.children.clone(),
    }
}

/// The values of `fields` in a record (an implied element's required
/// dimensions, then its key), or `None` where one is missing or null.
fn record_key(fields: &[&str], record: &Map<String, Json>) -> Option<Vec<DataIdValue>> {
    fields
        .iter()
        .map(|f| match record.get(*f)? {
            Json::Number(n) => n.as_i64().map(DataIdValue::Int),
            Json::String(s) => Some(DataIdValue::from(s.as_str())),
            _ => None,
        })
        .collect()
}

/// The records of every dimension the datasets' data IDs name, and of
/// every dimension those records imply, in universe order; fields LSST's
/// format has no room for (regions) go to the extras, and
/// `timespan_begin`/`timespan_end` become `datetime_begin`/`datetime_end`.
#[allow(clippy::type_complexity)]
fn needed_records(
    registry: &Registry,
    found: &[FoundDataset],
) -> Result<
    (
        Vec<(String, Vec<Map<String, Json>>)>,
        std::collections::BTreeMap<String, Vec<Map<String, Json>>>,
    ),
    TransferError,
> {
    let universe = registry.universe();
    let dims: Vec<_> = universe
        .dimensions()
        .filter(|e| e.has_records && e.key.is_some())
        .collect();
    // Per element: the identifying values (required dimensions, then the
    // key) of the records to export.
    // Consecutive datasets mostly share a record (the instrument, the
    // exposure): compared with the last key in place, it is not built or
    // hashed again.
    let mut per_element: Vec<(HashSet<Vec<DataIdValue>>, Option<Vec<DataIdValue>>)> =
        vec![Default::default(); dims.len()];
    // Where each element's values sit in a data ID (`None`: not all of
    // them are there): the same for every dataset of a type, whose data
    // IDs the query builds in its dimensions' order.
    let mut positions: Vec<Option<Vec<usize>>> = Vec::new();
    let mut positions_of: Option<&str> = None;
    for f in found {
        let data_id = &f.dataset_ref.data_id;
        if positions_of != Some(f.dataset_ref.dataset_type.as_str()) {
            positions = dims
                .iter()
                .map(|e| {
                    let fields = e.required_closure.iter().chain(std::iter::once(&e.name));
                    fields
                        .map(|d| data_id.keys().position(|k| k == d))
                        .collect()
                })
                .collect();
            positions_of = Some(&f.dataset_ref.dataset_type);
        }
        for (at, (keys, last)) in positions.iter().zip(&mut per_element) {
            let Some(at) = at else {
                continue;
            };
            let same_as_last = last.as_ref().is_some_and(|last| {
                at.iter()
                    .zip(last)
                    .all(|(i, v)| data_id.value_at(*i) == Some(v))
            });
            if same_as_last {
                continue;
            }
            let values: Vec<DataIdValue> = at
                .iter()
                .filter_map(|i| data_id.value_at(*i).cloned())
                .collect();
            keys.insert(values.clone());
            *last = Some(values);
        }
    }
    let mut wanted: HashMap<String, HashSet<Vec<DataIdValue>>> = dims
        .iter()
        .zip(per_element)
        .filter(|(_, (keys, _))| !keys.is_empty())
        .map(|(e, (keys, _))| (e.name.clone(), keys))
        .collect();
    let mut out = Vec::new();
    let mut extras = std::collections::BTreeMap::new();
    for e in dims.iter().rev() {
        let Some(keys) = wanted.get(&e.name).cloned() else {
            continue;
        };
        let records = registry.element_records_where(&e.name, |values| keys.contains(values))?;
        for rec in &records {
            for implied in &e.implies {
                let Some(ie) = universe.element(implied).filter(|x| x.has_records) else {
                    continue;
                };
                let mut fields: Vec<&str> =
                    ie.required_closure.iter().map(String::as_str).collect();
                fields.push(implied);
                if let Some(key) = record_key(&fields, rec) {
                    wanted.entry(implied.clone()).or_default().insert(key);
                }
            }
        }
        let region_fields: Vec<&str> = e
            .metadata
            .iter()
            .filter(|f| f.field_type == quanta_core::FieldType::Region)
            .map(|f| f.name.as_str())
            .collect();
        let mut lsst_records = Vec::with_capacity(records.len());
        let mut extra_records = Vec::new();
        for mut rec in records {
            let mut extra = Map::new();
            for f in &region_fields {
                if let Some(v) = rec.remove(*f) {
                    extra.insert(f.to_string(), v);
                }
            }
            for (ours, theirs) in [
                ("timespan_begin", "datetime_begin"),
                ("timespan_end", "datetime_end"),
            ] {
                if let Some(v) = rec.remove(ours) {
                    let v = if v.as_f64().is_some_and(f64::is_finite) {
                        v
                    } else {
                        Json::Null
                    };
                    rec.insert(theirs.into(), v);
                }
            }
            lsst_records.push(rec);
            extra_records.push(extra);
        }
        if !region_fields.is_empty() {
            extras.insert(e.name.clone(), extra_records);
        }
        out.push((e.name.clone(), lsst_records));
    }
    out.reverse();
    Ok((out, extras))
}
