//! The POSIX datastore: dataset files under one root directory, written
//! atomically and never over an existing file unless asked, with size and
//! BLAKE3 checksum recorded for every file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quanta_core::DatasetRef;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::disassembled;
use crate::error::DatastoreError;
use crate::error::FormatterError;
use crate::formatter::{
    Formatter, FormatterRegistry, InMemoryDataset, JsonFormatter, ReadParameters,
};
use crate::template::{
    is_direct_path, validate_direct_path, validate_relative_path, FileTemplates, DEFAULT_TEMPLATE,
};
use crate::verify::{check_checksum, check_size, ExpectedFile};

/// Names of in-flight files start with this; one left behind belongs to a
/// writer that died and can be deleted once no writer is running. Template
/// paths never have a component starting with `.`, so it cannot clash.
pub const TEMP_FILE_PREFIX: &str = ".tmp-";

/// The start of the name of every temporary file written for `dest`, in
/// `dest`'s directory: [`TEMP_FILE_PREFIX`], then 16 hex digits of the
/// BLAKE3 hash of `dest`'s file name, then `-`. A temporary file thus names
/// its owner (fixed length, whatever the final name's length or
/// characters), so whoever owns `dest` — the one quantum that predicts it,
/// under its execution lock — can remove the leftovers of killed writers
/// without touching anyone else's.
pub fn temp_file_prefix(dest: &Path) -> String {
    let name = dest.file_name().unwrap_or_default();
    let hash = blake3::hash(name.as_encoded_bytes());
    format!("{TEMP_FILE_PREFIX}{}-", &hash.to_hex()[..16])
}

/// The directory under the root where files are moved aside rather than
/// deleted: a worker's unexplained file at its output path
/// (`<bundle id>/<path>`), `repo check --repair`'s orphans
/// (`repo-check/<path>`). Nothing under it is a dataset.
pub const QUARANTINE_DIR: &str = ".quarantine";

/// What [`Datastore::remove_many`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveStats {
    /// Files (or symlinks) unlinked.
    pub removed: u64,
    /// Files that were already gone.
    pub missing: u64,
    /// Direct files (see [`is_direct_path`]): not the datastore's, left
    /// where they are.
    pub left_in_place: u64,
    /// Directories left empty and removed.
    pub directories: u64,
}

/// Files of one directory unlinked through one directory handle, at most,
/// per task of [`Datastore::remove_many`] (several tasks share a large
/// directory).
const UNLINK_CHUNK: usize = 4096;

const WRITE_BUFFER_BYTES: usize = 64 * 1024;
const COPY_BUFFER_BYTES: usize = 1024 * 1024;

/// Datastore settings, stored in the repository configuration and in
/// bundles so that workers write where the Butler expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatastoreConfig {
    /// Template for dataset types without an override.
    pub default_template: String,
    /// Per-dataset-type templates (a component uses its parent's).
    pub templates: BTreeMap<String, String>,
    /// fsync each file and its directory before reporting it written. Off by
    /// default: with it every small file costs two disk flushes, and merge
    /// verifies sizes and checksums anyway, so a file lost or torn by a power
    /// failure is caught there and its quantum rerun.
    pub fsync: bool,
    /// Write composites (a storage class whose formatter disassembles, e.g.
    /// `ExposureF`) as one file per stored component plus an index; see
    /// [`crate::disassembled`]. Off by default: one file per dataset.
    pub disassemble: bool,
}

impl Default for DatastoreConfig {
    fn default() -> Self {
        Self {
            default_template: DEFAULT_TEMPLATE.to_string(),
            templates: BTreeMap::new(),
            fsync: false,
            disassemble: false,
        }
    }
}

impl DatastoreConfig {
    /// Parses every template, reporting the first invalid one.
    pub fn validate(&self) -> Result<(), DatastoreError> {
        FileTemplates::new(&self.default_template, &self.templates).map(|_| ())
    }
}

/// What the datastore knows about one written file; the Registry stores it
/// and merge verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredFileInfo {
    /// Relative to the datastore root, `/`-separated, with extension.
    pub path: String,
    /// Name of the formatter that reads the file back.
    pub formatter: String,
    pub size: u64,
    /// BLAKE3 of the file contents, lowercase hex.
    pub checksum: String,
}

impl StoredFileInfo {
    /// The size and checksum this file must have, for
    /// [`Datastore::verify_many`].
    pub fn expected(&self) -> ExpectedFile<'_> {
        ExpectedFile {
            path: &self.path,
            size: self.size,
            checksum: &self.checksum,
        }
    }
}

/// How [`Datastore::ingest`] brings an existing file into the datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferMode {
    /// Copy; the source stays.
    Copy,
    /// Move: transferred like `Auto` (a fsynced copy where a hard link is
    /// impossible), and the source is removed by the Butler only once the
    /// dataset is registered; [`Datastore::ingest`] itself never touches it.
    Move,
    /// Hard link (same filesystem only).
    Hardlink,
    /// Symbolic link to the absolute, canonical source path.
    Symlink,
    /// Hard link where possible, else copy.
    Auto,
    /// Direct (LSST's mode of that name): nothing is made in the
    /// datastore; the dataset's file record is the source's absolute,
    /// canonical path (a *direct path*, [`is_direct_path`]), read where
    /// it is and never removed with the dataset. For whole files only
    /// ([`Datastore::ingest_expected`]).
    Direct,
}

impl TransferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMode::Copy => "copy",
            TransferMode::Move => "move",
            TransferMode::Hardlink => "hardlink",
            TransferMode::Symlink => "symlink",
            TransferMode::Auto => "auto",
            TransferMode::Direct => "direct",
        }
    }
}

impl fmt::Display for TransferMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransferMode {
    type Err = DatastoreError;
    fn from_str(s: &str) -> Result<Self, DatastoreError> {
        match s.to_ascii_lowercase().as_str() {
            "copy" => Ok(TransferMode::Copy),
            "move" => Ok(TransferMode::Move),
            "link" | "hardlink" => Ok(TransferMode::Hardlink),
            "symlink" => Ok(TransferMode::Symlink),
            "auto" => Ok(TransferMode::Auto),
            "direct" => Ok(TransferMode::Direct),
            _ => Err(DatastoreError::BadTransferMode(s.to_string())),
        }
    }
}

/// A file datastore rooted at one directory. `Send + Sync`: share it between
/// threads behind an `Arc`.
#[derive(Debug)]
pub struct Datastore {
    root: PathBuf,
    config: DatastoreConfig,
    templates: FileTemplates,
    formatters: FormatterRegistry,
    /// Temporary names are `<temp_file_prefix(dest)><pid>-<token>-<counter>`:
    /// the random token keeps writers on different hosts sharing the root
    /// (same pid possible) apart without a random draw per file.
    pid: u32,
    tmp_token: String,
    tmp_counter: AtomicU64,
}

impl Datastore {
    /// A datastore at `root` (made absolute; not created until the first
    /// write) with the built-in formatters. Fails on invalid templates.
    pub fn new(root: impl Into<PathBuf>, config: DatastoreConfig) -> Result<Self, DatastoreError> {
        let root = root.into();
        let root =
            std::path::absolute(&root).map_err(|e| DatastoreError::io("resolve", &root, e))?;
        let templates = FileTemplates::new(&config.default_template, &config.templates)?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            root,
            config,
            templates,
            formatters: FormatterRegistry::default(),
            pid: std::process::id(),
            tmp_token: token[..12].to_string(),
            tmp_counter: AtomicU64::new(0),
        })
    }

    /// Replaces the formatter registry (e.g. one with FITS added).
    pub fn with_formatters(mut self, formatters: FormatterRegistry) -> Self {
        self.formatters = formatters;
        self
    }

    /// Adds one formatter to this datastore's registry.
    pub fn register_formatter(
        &mut self,
        formatter: Arc<dyn Formatter>,
    ) -> Result<(), DatastoreError> {
        self.formatters.register(formatter)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &DatastoreConfig {
        &self.config
    }

    pub fn formatters(&self) -> &FormatterRegistry {
        &self.formatters
    }

    pub fn templates(&self) -> &FileTemplates {
        &self.templates
    }

    /// The relative path (`/`-separated, with extension) where `r` is stored
    /// as `storage_class`.
    /// A disassembled composite's path is its index (`.parts.json`).
    pub fn path_for(&self, r: &DatasetRef, storage_class: &str) -> Result<String, DatastoreError> {
        let formatter = self.formatters.for_storage_class(storage_class)?;
        self.render_path(r, formatter.as_ref())
    }

    /// Whether datasets of `formatter` are written disassembled here.
    pub fn disassembles(&self, formatter: &dyn Formatter) -> bool {
        self.config.disassemble && formatter.disassembles()
    }

    /// The path of `r` as one file, even where composites are written
    /// disassembled: an ingested file stays the one file it is (an index
    /// path would hold it unreadable).
    pub fn single_path_for(
        &self,
        r: &DatasetRef,
        storage_class: &str,
    ) -> Result<String, DatastoreError> {
        let formatter = self.formatters.for_storage_class(storage_class)?;
        self.render_path_as(r, formatter.as_ref(), false)
    }

    fn render_path(
        &self,
        r: &DatasetRef,
        formatter: &dyn Formatter,
    ) -> Result<String, DatastoreError> {
        self.render_path_as(r, formatter, self.disassembles(formatter))
    }

    fn render_path_as(
        &self,
        r: &DatasetRef,
        formatter: &dyn Formatter,
        disassembled: bool,
    ) -> Result<String, DatastoreError> {
        let mut path = self.templates.for_dataset_type(&r.dataset_type).render(r)?;
        if disassembled {
            path.push_str(disassembled::DISASSEMBLED_SUFFIX);
        } else {
            path.push('.');
            path.push_str(formatter.extension());
        }
        validate_relative_path(&path)?;
        Ok(path)
    }

    /// The absolute path of a recorded file, to read it: a path relative
    /// to the root (checked to stay inside it), or a direct path
    /// ([`is_direct_path`]) as it is. Whatever writes or removes goes
    /// through [`Datastore::owned_path`] instead.
    pub fn abs_path(&self, path: &str) -> Result<PathBuf, DatastoreError> {
        if is_direct_path(path) {
            validate_direct_path(path)?;
            return Ok(PathBuf::from(path));
        }
        self.owned_path(path)
    }

    /// The absolute path of a file the datastore owns and so may write,
    /// replace or remove: relative to the root and inside it. A direct
    /// path is refused (`UnsafePath`): its file is not the datastore's.
    pub fn owned_path(&self, rel_path: &str) -> Result<PathBuf, DatastoreError> {
        validate_relative_path(rel_path)?;
        Ok(self.root.join(rel_path))
    }

    /// Writes `obj` as the file of `r`. Refuses to replace an existing file
    /// (`AlreadyExists`) unless `clobber`.
    pub fn write(
        &self,
        r: &DatasetRef,
        storage_class: &str,
        obj: &InMemoryDataset,
        clobber: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let formatter = self.formatters.for_storage_class(storage_class)?;
        let rel = self.render_path(r, formatter.as_ref())?;
        if self.disassembles(formatter.as_ref()) {
            return self.write_disassembled_at(&rel, formatter.as_ref(), obj, clobber);
        }
        self.write_with(&rel, formatter.name(), r, clobber, |out| {
            formatter
                .encode_to(obj, out)
                .map_err(|source| DatastoreError::Encode {
                    what: r.to_string(),
                    formatter: formatter.name().to_string(),
                    path: rel.clone(),
                    source,
                })
        })
    }

    /// Writes `value` as JSON for `r` (storage class `Json`), serializing
    /// straight to the file rather than through a `serde_json::Value`.
    pub fn put_json<T: Serialize + ?Sized>(
        &self,
        r: &DatasetRef,
        value: &T,
        clobber: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let formatter = self
            .formatters
            .for_storage_class(JsonFormatter::STORAGE_CLASS)?;
        let rel = self.render_path(r, formatter.as_ref())?;
        if formatter.name() != JsonFormatter::NAME {
            // Someone replaced the Json formatter: honour its encoding.
            let v = serde_json::to_value(value).map_err(|e| DatastoreError::Encode {
                what: r.to_string(),
                formatter: formatter.name().to_string(),
                path: rel.clone(),
                source: e.into(),
            })?;
            return self.write(
                r,
                JsonFormatter::STORAGE_CLASS,
                &InMemoryDataset::Json(v),
                clobber,
            );
        }
        self.write_with(&rel, formatter.name(), r, clobber, |out| {
            serde_json::to_writer(out, value).map_err(|e| DatastoreError::Encode {
                what: r.to_string(),
                formatter: JsonFormatter::NAME.to_string(),
                path: rel.clone(),
                source: e.into(),
            })
        })
    }

    /// Writes already-encoded bytes at a relative path, recording `formatter`
    /// as the one that reads them.
    pub fn write_bytes_at(
        &self,
        rel_path: &str,
        bytes: &[u8],
        formatter: &str,
        clobber: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        validate_relative_path(rel_path)?;
        self.write_with(rel_path, formatter, &"write_bytes_at", clobber, |out| {
            out.write_all(bytes)
                .map_err(|e| DatastoreError::io("write", rel_path, e))
        })
    }

    /// The atomic write: fill a temporary file beside the destination while
    /// hashing, optionally fsync, then move it into place. The destination
    /// path only ever holds a complete file.
    fn write_with(
        &self,
        rel: &str,
        formatter: &str,
        what: &dyn fmt::Display,
        clobber: bool,
        body: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> Result<(), DatastoreError>,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let dest = self.root.join(rel);
        let (tmp, file) = self.create_temp(&dest)?;
        let mut out = HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file));
        if let Err(e) = body(&mut out) {
            // A disk error surfaces through the formatter; name it as such.
            return Err(match out.io_error.take() {
                Some(io) => DatastoreError::io("write", tmp.path(), io),
                None => e,
            });
        }
        self.finish_write(out, tmp, &dest, rel, formatter, what, clobber, false)
    }

    /// The end of every atomic write: flush the temporary file, fsync it
    /// when the configuration (or the caller, `durable`) asks, and move it
    /// into place at `dest`.
    #[allow(clippy::too_many_arguments)]
    fn finish_write(
        &self,
        out: HashingWriter<BufWriter<File>>,
        tmp: TempFile,
        dest: &Path,
        rel: &str,
        formatter: &str,
        what: &dyn fmt::Display,
        clobber: bool,
        durable: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let HashingWriter {
            inner,
            hasher,
            size,
            ..
        } = out;
        let file = inner
            .into_inner()
            .map_err(|e| DatastoreError::io("write", tmp.path(), e.into_error()))?;
        if durable || self.config.fsync {
            file.sync_all()
                .map_err(|e| DatastoreError::io("fsync", tmp.path(), e))?;
        }
        drop(file);
        quanta_core::fault::kill_point(quanta_core::fault::DATASTORE_TEMP_WRITTEN);
        self.publish(tmp, dest, rel, what, clobber)?;
        Ok(StoredFileInfo {
            path: rel.to_string(),
            formatter: formatter.to_string(),
            size,
            checksum: hasher.finalize().to_hex().to_string(),
        })
    }

    /// A fresh temporary name beside `dest`, owned by `dest`: see
    /// [`temp_file_prefix`].
    fn temp_path(&self, dest: &Path) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        parent_of(dest).join(format!(
            "{}{}-{}-{n}",
            temp_file_prefix(dest),
            self.pid,
            self.tmp_token
        ))
    }

    /// Creates a fresh temporary file in the destination's directory. The
    /// directory is created only when the open fails for want of it, so a
    /// write into an existing directory costs no extra system call.
    fn create_temp(&self, dest: &Path) -> Result<(TempFile, File), DatastoreError> {
        let dir = parent_of(dest);
        let mut created_dir = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let path = self.temp_path(dest);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((TempFile(Some(path)), file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !created_dir => {
                    fs::create_dir_all(dir)
                        .map_err(|e| DatastoreError::io("create directory", dir, e))?;
                    created_dir = true;
                }
                // Only a leftover of a crashed writer with the same pid and
                // token could be in the way; take the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => continue,
                Err(e) => return Err(DatastoreError::io("create temporary file", path, e)),
            }
        }
    }

    /// Moves a finished temporary file to `dest`. Without `clobber` the
    /// hard link fails atomically if `dest` exists, so of two racing writers
    /// exactly one wins; on filesystems without hard links this falls back
    /// to check-then-rename, which has a small race window.
    fn publish(
        &self,
        tmp: TempFile,
        dest: &Path,
        rel: &str,
        what: &dyn fmt::Display,
        clobber: bool,
    ) -> Result<(), DatastoreError> {
        let already_exists = || DatastoreError::AlreadyExists {
            path: rel.to_string(),
            what: what.to_string(),
        };
        if clobber {
            fs::rename(tmp.path(), dest)
                .map_err(|e| DatastoreError::io("rename into place", dest, e))?;
            tmp.disarm();
        } else {
            match fs::hard_link(tmp.path(), dest) {
                Ok(()) => {
                    quanta_core::fault::kill_point(quanta_core::fault::DATASTORE_LINKED);
                    drop(tmp)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(already_exists()),
                Err(link_err) => {
                    tracing::debug!(path = %dest.display(), error = %link_err, "hard link failed; using rename");
                    if dest.symlink_metadata().is_ok() {
                        return Err(already_exists());
                    }
                    fs::rename(tmp.path(), dest)
                        .map_err(|e| DatastoreError::io("rename into place", dest, e))?;
                    tmp.disarm();
                }
            }
        }
        if self.config.fsync {
            sync_dir(parent_of(dest))?;
        }
        Ok(())
    }

    /// Writes `obj` disassembled (see [`crate::disassembled`]): each stored
    /// component to its own file by its storage class's formatter, then the
    /// index at `rel_index`, whose record is returned. The index follows
    /// `clobber`; parts are replaced (named from the dataset's own path,
    /// parts without their index can only be a killed write's leftovers).
    pub fn write_disassembled_at(
        &self,
        rel_index: &str,
        formatter: &dyn Formatter,
        obj: &InMemoryDataset,
        clobber: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        validate_relative_path(rel_index)?;
        if !clobber && self.root.join(rel_index).exists() {
            return Err(DatastoreError::AlreadyExists {
                path: rel_index.to_string(),
                what: "a disassembled composite's index".into(),
            });
        }
        let encode_err = |formatter: &str, path: &str, source| DatastoreError::Encode {
            what: format!("composite `{rel_index}`"),
            formatter: formatter.to_string(),
            path: path.to_string(),
            source,
        };
        let components = formatter
            .disassemble(obj)
            .map_err(|e| encode_err(formatter.name(), rel_index, e))?;
        let classes = quanta_core::StorageClasses::builtin();
        let mut parts = Vec::with_capacity(components.len());
        for (component, value) in components {
            let class = classes
                .component_class(formatter.storage_class(), &component)
                .map_err(|e| {
                    encode_err(
                        formatter.name(),
                        rel_index,
                        FormatterError::Other(e.to_string()),
                    )
                })?;
            let part_formatter = self.formatters.for_storage_class(class)?;
            let rel = disassembled::part_path(rel_index, &component, part_formatter.as_ref());
            let bytes = part_formatter
                .encode(&value)
                .map_err(|e| encode_err(part_formatter.name(), &rel, e))?;
            let info = self.write_bytes_at(&rel, &bytes, part_formatter.name(), true)?;
            parts.push(disassembled::Part {
                component,
                file: rel.rsplit('/').next().unwrap_or(&rel).to_string(),
                formatter: info.formatter,
                size: info.size,
                checksum: info.checksum,
            });
        }
        let index = disassembled::PartsIndex {
            formatter: formatter.name().to_string(),
            parts,
        };
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| encode_err(formatter.name(), rel_index, e.into()))?;
        self.write_bytes_at(rel_index, &bytes, formatter.name(), clobber)
    }

    /// The path of `r`'s index when stored disassembled as `storage_class`,
    /// whatever this datastore's `disassemble` setting: an imported
    /// disassembled composite stays the parts it is.
    pub fn disassembled_path_for(
        &self,
        r: &DatasetRef,
        storage_class: &str,
    ) -> Result<String, DatastoreError> {
        let formatter = self.formatters.for_storage_class(storage_class)?;
        self.render_path_as(r, formatter.as_ref(), true)
    }

    /// The path of component `component` written by the formatter named
    /// `formatter`, beside the index at `rel_index`.
    pub fn part_path_for(
        &self,
        rel_index: &str,
        component: &str,
        formatter: &str,
    ) -> Result<String, DatastoreError> {
        let f =
            self.formatters
                .by_name(formatter)
                .ok_or_else(|| DatastoreError::UnknownFormatter {
                    formatter: formatter.to_string(),
                    path: rel_index.to_string(),
                })?;
        let rel = disassembled::part_path(rel_index, component, f.as_ref());
        validate_relative_path(&rel)?;
        Ok(rel)
    }

    /// Writes the index of a disassembled composite whose parts are in
    /// place, by ingest's protocol (under its lock): through the fixed
    /// ingest temporary name (a killed run's is swept by the rerun's
    /// [`LeftoverSweep`]), then renamed over whatever a killed run left
    /// there (nothing registered refers to it). Last, as
    /// [`Datastore::write_disassembled_at`] writes it.
    pub fn place_index(
        &self,
        lock: &IngestLock,
        sweep: &LeftoverSweep,
        rel_index: &str,
        index: &disassembled::PartsIndex,
    ) -> Result<StoredFileInfo, DatastoreError> {
        if lock.root != self.root || !disassembled::is_index(rel_index) {
            return Err(DatastoreError::io(
                "place a disassembled composite's index",
                self.root.join(rel_index),
                io::Error::other("not an index path, or without the ingest lock"),
            ));
        }
        validate_relative_path(rel_index)?;
        let bytes = serde_json::to_vec(index).map_err(|e| DatastoreError::Encode {
            what: format!("composite `{rel_index}`"),
            formatter: index.formatter.clone(),
            path: rel_index.to_string(),
            source: e.into(),
        })?;
        let dest = self.root.join(rel_index);
        sweep.dir(parent_of(&dest))?;
        let tmp = TempFile(Some(ingest_temp_path(&dest)));
        let mut file = File::create(tmp.path())
            .map_err(|e| DatastoreError::io("create temporary file", tmp.path(), e))?;
        file.write_all(&bytes)
            .map_err(|e| DatastoreError::io("write", tmp.path(), e))?;
        if self.config.fsync {
            file.sync_all()
                .map_err(|e| DatastoreError::io("fsync", tmp.path(), e))?;
        }
        drop(file);
        fs::rename(tmp.path(), &dest).map_err(|e| DatastoreError::io("rename into", &dest, e))?;
        tmp.disarm();
        if self.config.fsync {
            sync_dir(parent_of(&dest))?;
        }
        Ok(StoredFileInfo {
            path: rel_index.to_string(),
            formatter: index.formatter.clone(),
            size: bytes.len() as u64,
            checksum: blake3::hash(&bytes).to_hex().to_string(),
        })
    }

    /// The paths the parts of a disassembled composite whose index is
    /// `rel_index` may have (every stored component of every composite
    /// storage class whose formatter here disassembles), whether written or
    /// not: what a killed writer's leftovers are named from.
    pub fn possible_part_paths(&self, rel_index: &str) -> Vec<String> {
        let classes = quanta_core::StorageClasses::builtin();
        let mut out = Vec::new();
        for sc in self.formatters.storage_classes() {
            let Ok(f) = self.formatters.for_storage_class(sc) else {
                continue;
            };
            let Some(def) = classes.get(sc).filter(|_| f.disassembles()) else {
                continue;
            };
            for (component, class) in &def.components {
                if let Ok(pf) = self.formatters.for_storage_class(class) {
                    out.push(disassembled::part_path(rel_index, component, pf.as_ref()));
                }
            }
        }
        out
    }

    /// The index of a disassembled composite at `rel_index`.
    pub fn parts_index(&self, rel_index: &str) -> Result<disassembled::PartsIndex, DatastoreError> {
        let bytes = self.read_bytes(rel_index)?;
        disassembled::PartsIndex::parse(rel_index, &bytes)
    }

    /// Every file of a dataset: its own, and for a disassembled composite
    /// the parts its index lists (read from the index).
    pub fn files_of(&self, info: &StoredFileInfo) -> Result<Vec<StoredFileInfo>, DatastoreError> {
        let mut out = vec![info.clone()];
        if disassembled::is_index(&info.path) {
            let index = self.parts_index(&info.path)?;
            out.extend(index.part_infos(&info.path).into_iter().map(|(_, i)| i));
        }
        Ok(out)
    }

    /// A part read whole, its size and checksum checked against the index.
    fn read_part(&self, part: &StoredFileInfo) -> Result<InMemoryDataset, DatastoreError> {
        self.read_verified(part)
    }

    /// Reads a disassembled composite: the index (checked against the
    /// dataset's record), then only the parts needed.
    fn read_disassembled(
        &self,
        info: &StoredFileInfo,
        component: Option<&str>,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, DatastoreError> {
        let bytes = self.read_bytes(&info.path)?;
        // An empty checksum: not known yet (a worker's input produced
        // upstream in the same bundle); the parts are still checked.
        if !info.checksum.is_empty() {
            let expected = info.expected();
            check_size(&expected, bytes.len() as u64)?;
            check_checksum(&expected, blake3::hash(&bytes).to_hex().as_str())?;
        }
        let index = disassembled::PartsIndex::parse(&info.path, &bytes)?;
        let parts = index.part_infos(&info.path);
        let classes = quanta_core::StorageClasses::builtin();
        let read_part = |part: &StoredFileInfo, component: Option<&str>| {
            let formatter = self.formatter_named(part)?;
            let class = formatter.storage_class();
            let accepted: Vec<&str> = parameters
                .names()
                .filter(|n| classes.check_parameters(class, [*n]).is_ok())
                .collect();
            if component.is_none() && accepted.is_empty() {
                return self.read_part(part);
            }
            let mut own = ReadParameters::new();
            for n in accepted {
                own = own.with(n, parameters.get(n).unwrap_or_default());
            }
            self.read_with(part, component, &own)
        };
        match component {
            Some(c) => {
                if let Some((_, part)) = parts.iter().find(|(name, _)| name == c) {
                    return read_part(part, None);
                }
                // A derived component: from the first part that has it.
                let mut last = None;
                for (_, part) in &parts {
                    match read_part(part, Some(c)) {
                        Ok(v) => return Ok(v),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| DatastoreError::Decode {
                    formatter: index.formatter.clone(),
                    path: info.path.clone(),
                    source: FormatterError::BadParameter(format!("no component `{c}`")),
                }))
            }
            None => {
                let composite = self.formatter_named(info)?;
                let mut values = Vec::with_capacity(parts.len());
                for (name, part) in &parts {
                    values.push((name.clone(), read_part(part, None)?));
                }
                composite
                    .assemble(values, parameters)
                    .map_err(|source| DatastoreError::Decode {
                        formatter: composite.name().to_string(),
                        path: info.path.clone(),
                        source,
                    })
            }
        }
    }

    /// Reads and decodes a file with the formatter recorded for it.
    pub fn read(&self, info: &StoredFileInfo) -> Result<InMemoryDataset, DatastoreError> {
        if disassembled::is_index(&info.path) {
            return self.read_disassembled(info, None, &ReadParameters::new());
        }
        let formatter = self.formatter_named(info)?;
        let bytes = self.read_bytes(&info.path)?;
        decode(formatter.as_ref(), &info.path, &bytes)
    }

    /// Reads `component` of a file (or all of it) restricted by
    /// `parameters`, through [`Formatter::read`]: a formatter that can
    /// reads only the part of the file asked for. Unverified, like
    /// [`Datastore::read`] (a checksum needs every byte).
    pub fn read_with(
        &self,
        info: &StoredFileInfo,
        component: Option<&str>,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, DatastoreError> {
        if disassembled::is_index(&info.path) {
            return self.read_disassembled(info, component, parameters);
        }
        let formatter = self.formatter_named(info)?;
        let abs = self.abs_path(&info.path)?;
        if !abs.exists() {
            return Err(DatastoreError::Missing {
                path: info.path.clone(),
            });
        }
        formatter
            .read(&abs, component, parameters)
            .map_err(|source| DatastoreError::Decode {
                formatter: formatter.name().to_string(),
                path: info.path.clone(),
                source,
            })
    }

    /// Like [`Datastore::read`], but first checks the size and checksum of
    /// the bytes read (no second read of the file).
    pub fn read_verified(&self, info: &StoredFileInfo) -> Result<InMemoryDataset, DatastoreError> {
        if disassembled::is_index(&info.path) {
            // Checks the index, and each part it reads.
            return self.read_disassembled(info, None, &ReadParameters::new());
        }
        let formatter = self.formatter_named(info)?;
        let bytes = self.read_bytes(&info.path)?;
        let expected = info.expected();
        check_size(&expected, bytes.len() as u64)?;
        check_checksum(&expected, blake3::hash(&bytes).to_hex().as_str())?;
        decode(formatter.as_ref(), &info.path, &bytes)
    }

    fn formatter_named(
        &self,
        info: &StoredFileInfo,
    ) -> Result<&Arc<dyn Formatter>, DatastoreError> {
        self.formatters
            .by_name(&info.formatter)
            .ok_or_else(|| DatastoreError::UnknownFormatter {
                formatter: info.formatter.clone(),
                path: info.path.clone(),
            })
    }

    /// The raw bytes of a file.
    pub fn read_bytes(&self, rel_path: &str) -> Result<Vec<u8>, DatastoreError> {
        let abs = self.abs_path(rel_path)?;
        fs::read(&abs).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => DatastoreError::Missing {
                path: rel_path.to_string(),
            },
            _ => DatastoreError::io("read", abs, e),
        })
    }

    /// A JSON file deserialized straight into `T`.
    pub fn get_json<T: DeserializeOwned>(&self, rel_path: &str) -> Result<T, DatastoreError> {
        let bytes = self.read_bytes(rel_path)?;
        serde_json::from_slice(&bytes).map_err(|e| DatastoreError::Decode {
            formatter: JsonFormatter::NAME.to_string(),
            path: rel_path.to_string(),
            source: e.into(),
        })
    }

    /// Size and BLAKE3 of a file in the datastore.
    pub fn checksum(&self, rel_path: &str) -> Result<(u64, String), DatastoreError> {
        let abs = self.abs_path(rel_path)?;
        hash_file(&abs).map_err(|e| match e {
            DatastoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                DatastoreError::Missing {
                    path: rel_path.to_string(),
                }
            }
            e => e,
        })
    }

    /// Takes the datastore's ingest lock, waiting while another process
    /// holds it. Ingests into one datastore are serialized so that, while the
    /// lock is held, a file at an ingest destination that the Registry does
    /// not know can only be the leftover of a killed ingest, and so that
    /// ingest's temporary names can be fixed per destination (a rerun then
    /// finds and removes a killed copy's temporary file). The lock is an
    /// advisory `flock` on the root directory, released when the returned
    /// guard is dropped or the process dies.
    pub fn lock_for_ingest(&self) -> Result<IngestLock, DatastoreError> {
        fs::create_dir_all(&self.root)
            .map_err(|e| DatastoreError::io("create directory", &self.root, e))?;
        let dir = File::open(&self.root)
            .map_err(|e| DatastoreError::io("open for locking", &self.root, e))?;
        let lock_err = |e: rustix::io::Errno| {
            DatastoreError::io("lock for ingest", &self.root, io::Error::from(e))
        };
        match rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                tracing::info!(root = %self.root.display(), "waiting for another ingest into this datastore");
                rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
                    .map_err(lock_err)?;
            }
            Err(e) => return Err(lock_err(e)),
        }
        Ok(IngestLock {
            _dir: dir,
            root: self.root.clone(),
        })
    }

    /// Brings an existing file in as the file of `r`, at the path the
    /// templates give, and records its size and checksum. The source is
    /// never modified, renamed or removed, whatever the mode: a
    /// [`TransferMode::Move`] transfers like [`TransferMode::Auto`] (a hard
    /// link where the filesystem allows, else a copy) and leaves removing
    /// the source to the caller, after the dataset is registered (see
    /// `Butler::ingest`). A copy is written to a temporary name beside the
    /// destination and moved into place, so the destination only ever holds
    /// a complete file; for a move the copy is fsynced before it is moved
    /// into place (the caller fsyncs the directories with
    /// [`Datastore::sync_directories`] before it removes any source),
    /// otherwise only with [`DatastoreConfig::fsync`].
    ///
    /// An existing file at the destination is refused (`AlreadyExists`)
    /// unless `replace`, which removes it first: the caller decides that it
    /// is a leftover nothing refers to. On an error nothing is left at the
    /// destination or at the temporary name.
    pub fn ingest(
        &self,
        lock: &IngestLock,
        src: &Path,
        r: &DatasetRef,
        storage_class: &str,
        mode: TransferMode,
        replace: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let formatter = self.formatters.for_storage_class(storage_class)?;
        let rel = self.render_path_as(r, formatter.as_ref(), false)?;
        self.ingest_at(lock, src, &rel, formatter.name(), r, mode, replace)
    }

    /// [`Datastore::ingest`] to the relative path `rel`, recording
    /// `formatter`; `what` names the dataset (or the part of one) in errors.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ingest_at(
        &self,
        lock: &IngestLock,
        src: &Path,
        rel: &str,
        formatter: &str,
        what: &dyn fmt::Display,
        mode: TransferMode,
        replace: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let bad_source = |reason: String| DatastoreError::BadIngestSource {
            source_path: src.to_path_buf(),
            dataset: what.to_string(),
            reason,
        };
        // Transfers read the file a symlink names: a hard link of the
        // symlink itself would store a link that may be relative.
        let real = fs::canonicalize(src).map_err(|e| bad_source(e.to_string()))?;
        match fs::metadata(&real) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(bad_source("not a regular file".into())),
            Err(e) => return Err(bad_source(e.to_string())),
        }
        self.ingest_real_at(lock, (src, &real), rel, formatter, what, mode, replace)
    }

    /// [`Datastore::ingest_at`] once the source is resolved: `src.1` is
    /// canonical and a regular file, `src.0` as the caller named it.
    #[allow(clippy::too_many_arguments)]
    fn ingest_real_at(
        &self,
        lock: &IngestLock,
        (src, real): (&Path, &Path),
        rel: &str,
        formatter: &str,
        what: &dyn fmt::Display,
        mode: TransferMode,
        replace: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        if lock.root != self.root {
            return Err(DatastoreError::io(
                "ingest without holding its lock",
                &self.root,
                io::Error::other(format!("the lock held is that of {}", lock.root.display())),
            ));
        }
        let rel = rel.to_string();
        let dest = self.root.join(&rel);
        let tmp_path = ingest_temp_path(&dest);
        remove_if_present(&tmp_path)?;
        if dest.symlink_metadata().is_ok() {
            if !replace {
                return Err(DatastoreError::AlreadyExists {
                    path: rel.clone(),
                    what: what.to_string(),
                });
            }
            remove_if_present(&dest)?;
        }
        let linked = |this: &Self| {
            let (size, checksum) = hash_file(&dest)?;
            if this.config.fsync {
                sync_dir(parent_of(&dest))?;
            }
            Ok(StoredFileInfo {
                path: rel.clone(),
                formatter: formatter.to_string(),
                size,
                checksum,
            })
        };
        let copy = |durable: bool| {
            self.copy_in(
                real,
                TempFile(Some(tmp_path.clone())),
                &rel,
                formatter,
                what,
                durable,
            )
        };
        let result = match mode {
            TransferMode::Copy => copy(self.config.fsync),
            TransferMode::Hardlink | TransferMode::Auto | TransferMode::Move => {
                match make_in_place(&dest, |at| fs::hard_link(real, at)) {
                    // The inode's data is the source's, as durable as it
                    // was; the new name is made durable with its directory.
                    Ok(()) => linked(self),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Err(DatastoreError::AlreadyExists {
                            path: rel.clone(),
                            what: what.to_string(),
                        })
                    }
                    Err(e) if mode == TransferMode::Hardlink => {
                        Err(DatastoreError::io("hard link into place", &dest, e))
                    }
                    // Typically another filesystem or no hard-link support.
                    Err(e) => {
                        tracing::debug!(src = %src.display(), error = %e, "cannot hard link; copying");
                        copy(mode == TransferMode::Move || self.config.fsync)
                    }
                }
            }
            TransferMode::Direct => Err(DatastoreError::DirectNotHere {
                what: what.to_string(),
            }),
            TransferMode::Symlink => match make_in_place(&dest, |at| symlink(real, at)) {
                Ok(()) => linked(self),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(DatastoreError::AlreadyExists {
                        path: rel.clone(),
                        what: what.to_string(),
                    })
                }
                Err(e) => Err(DatastoreError::io("symlink into place", &dest, e)),
            },
        };
        if result.is_err() {
            // Whatever this call put at the destination goes again (a link
            // made before hashing failed, say); the source is untouched.
            // AlreadyExists means another file is there: not ours to remove.
            if !matches!(result, Err(DatastoreError::AlreadyExists { .. })) {
                let _ = remove_if_present(&dest);
            }
        }
        result
    }

    /// fsyncs the directories holding `rel_paths` (each once), so that
    /// names linked or moved into them survive a power failure: a move
    /// calls this before it removes any source.
    pub fn sync_directories<'a>(
        &self,
        rel_paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), DatastoreError> {
        let mut done = std::collections::HashSet::new();
        for rel in rel_paths {
            let abs = self.owned_path(rel)?;
            let dir = parent_of(&abs).to_path_buf();
            if done.insert(dir.clone()) {
                sync_dir(&dir)?;
            }
        }
        Ok(())
    }

    /// Copies `src` into `tmp`, hashing on the way, fsyncs it when
    /// `durable` (or the configuration asks), then moves it to `rel`.
    fn copy_in(
        &self,
        src: &Path,
        tmp: TempFile,
        rel: &str,
        formatter: &str,
        what: &dyn fmt::Display,
        durable: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let dest = self.root.join(rel);
        let mut input =
            File::open(src).map_err(|e| DatastoreError::io("open ingest source", src, e))?;
        let file = match open_new(tmp.path()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = parent_of(tmp.path());
                fs::create_dir_all(dir)
                    .map_err(|e| DatastoreError::io("create directory", dir, e))?;
                open_new(tmp.path())
            }
            other => other,
        }
        .map_err(|e| DatastoreError::io("create temporary file", tmp.path(), e))?;
        let mut out = HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file));
        let mut buf = vec![0u8; COPY_BUFFER_BYTES];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DatastoreError::io("read ingest source", src, e)),
            };
            out.write_all(&buf[..n])
                .map_err(|e| DatastoreError::io("write copy of", src, e))?;
        }
        self.finish_write(out, tmp, &dest, rel, formatter, what, false, durable)
    }

    /// Whether a file (or symlink) exists at a relative path; `false` for a
    /// path that is not a safe relative path.
    pub fn exists(&self, rel_path: &str) -> bool {
        self.abs_path(rel_path)
            .map(|p| p.symlink_metadata().is_ok())
            .unwrap_or(false)
    }

    /// Removes many files, in parallel (a symlink is removed, never what
    /// it points to); files already gone are counted, not errors. Then
    /// removes the directories this left empty, up to the root. The first
    /// other error is returned once every file has been tried. Direct
    /// paths ([`is_direct_path`]) are skipped and counted: their files are
    /// not the datastore's to remove.
    ///
    /// Files are unlinked relative to a handle on their directory, opened
    /// once per run of up to [`UNLINK_CHUNK`] files of one directory:
    /// resolving each full path from the root cost a third of a
    /// million-file removal.
    pub fn remove_many(&self, paths: &[String]) -> Result<RemoveStats, DatastoreError> {
        let (direct, rel_paths): (Vec<&str>, Vec<&str>) = paths
            .iter()
            .map(String::as_str)
            .partition(|p| is_direct_path(p));
        // A disassembled composite's parts go first, its index last, so a
        // killed removal leaves an index a rerun finds (its missing parts
        // are counted as missing).
        let mut parts = Vec::new();
        for rel in rel_paths.iter().filter(|p| disassembled::is_index(p)) {
            match self.parts_index(rel) {
                Ok(index) => parts.extend(index.part_infos(rel).into_iter().map(|(_, i)| i.path)),
                Err(DatastoreError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let first = if parts.is_empty() {
            RemoveStats::default()
        } else {
            self.remove_flat(&parts.iter().map(String::as_str).collect::<Vec<_>>())?
        };
        let rest = self.remove_flat(&rel_paths)?;
        Ok(RemoveStats {
            removed: first.removed + rest.removed,
            missing: first.missing + rest.missing,
            left_in_place: direct.len() as u64,
            directories: first.directories + rest.directories,
        })
    }

    fn remove_flat(&self, rel_paths: &[&str]) -> Result<RemoveStats, DatastoreError> {
        use rayon::prelude::*;
        let mut entries: Vec<(&str, &str)> = Vec::with_capacity(rel_paths.len());
        for &rel in rel_paths {
            validate_relative_path(rel)?;
            entries.push(rel.rsplit_once('/').unwrap_or(("", rel)));
        }
        entries.sort_unstable();
        let mut chunks: Vec<&[(&str, &str)]> = Vec::new();
        let mut rest = entries.as_slice();
        while let Some(&(dir, _)) = rest.first() {
            let same = rest.partition_point(|(d, _)| *d == dir).min(UNLINK_CHUNK);
            let (chunk, tail) = rest.split_at(same);
            chunks.push(chunk);
            rest = tail;
        }
        let removed = AtomicU64::new(0);
        let missing = AtomicU64::new(0);
        let failures: Vec<DatastoreError> = chunks
            .par_iter()
            .filter_map(|chunk| {
                let (n_removed, n_missing, failure) = self.unlink_in_dir(chunk);
                removed.fetch_add(n_removed, Ordering::Relaxed);
                missing.fetch_add(n_missing, Ordering::Relaxed);
                failure
            })
            .collect();
        if let Some(e) = failures.into_iter().next() {
            return Err(e);
        }
        let mut dirs: Vec<&str> = chunks.iter().map(|c| c[0].0).collect();
        dirs.dedup();
        let dirs = dirs.into_iter().map(|dir| self.root.join(dir)).collect();
        let directories = self.remove_empty_dirs(dirs);
        Ok(RemoveStats {
            removed: removed.into_inner(),
            missing: missing.into_inner(),
            left_in_place: 0,
            directories,
        })
    }

    /// Unlinks `(dir, name)` entries of one directory: (removed, already
    /// gone, the first other error).
    fn unlink_in_dir(&self, chunk: &[(&str, &str)]) -> (u64, u64, Option<DatastoreError>) {
        use rustix::fs::{AtFlags, Mode, OFlags};
        let dir = self.root.join(chunk[0].0);
        let handle = match rustix::fs::open(
            &dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(handle) => handle,
            Err(rustix::io::Errno::NOENT) => return (0, chunk.len() as u64, None),
            Err(e) => {
                return (
                    0,
                    0,
                    Some(DatastoreError::io("open directory", &dir, e.into())),
                )
            }
        };
        let (mut removed, mut missing, mut failure) = (0, 0, None);
        for (_, name) in chunk {
            let outcome = rustix::fs::unlinkat(&handle, *name, AtFlags::empty());
            quanta_core::fault::kill_point(quanta_core::fault::REMOVE_UNLINKED);
            match outcome {
                Ok(()) => removed += 1,
                Err(rustix::io::Errno::NOENT) => missing += 1,
                Err(e) => {
                    failure.get_or_insert_with(|| {
                        DatastoreError::io("remove", dir.join(name), e.into())
                    });
                }
            }
        }
        (removed, missing, failure)
    }

    /// Removes each of `dirs` and its ancestors below the root that are
    /// empty, deepest first (so a parent is tried after all its children);
    /// returns how many went. Best effort: a directory a writer has just
    /// put a file into stays.
    fn remove_empty_dirs(&self, dirs: Vec<PathBuf>) -> u64 {
        let mut all = std::collections::HashSet::new();
        for dir in dirs {
            let mut at = Some(dir.as_path());
            while let Some(d) = at {
                if d == self.root || !d.starts_with(&self.root) || !all.insert(d.to_path_buf()) {
                    break;
                }
                at = d.parent();
            }
        }
        let mut all: Vec<PathBuf> = all.into_iter().collect();
        all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        all.iter().filter(|d| fs::remove_dir(d).is_ok()).count() as u64
    }

    /// Every file (or symlink, not followed) under the root, as relative
    /// `/`-separated paths, sorted; directories are walked, not listed.
    pub fn list_files(&self) -> Result<Vec<String>, DatastoreError> {
        let mut out = Vec::new();
        if self.root.symlink_metadata().is_err() {
            return Ok(out);
        }
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries =
                fs::read_dir(&dir).map_err(|e| DatastoreError::io("list directory", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| DatastoreError::io("list directory", &dir, e))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .map_err(|e| DatastoreError::io("stat", &path, e))?;
                if kind.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push(parts.join("/"));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Moves the file at `rel_path` to `<root>/.quarantine/<aside>/<rel_path>`
    /// (a rename, same filesystem), replacing what an earlier move left
    /// there; returns the new relative path.
    pub fn move_to_quarantine(
        &self,
        rel_path: &str,
        aside: &str,
    ) -> Result<String, DatastoreError> {
        let from = self.root.join(rel_path);
        let to_rel = format!("{QUARANTINE_DIR}/{aside}/{rel_path}");
        let to = self.root.join(&to_rel);
        let dir = parent_of(&to);
        fs::create_dir_all(dir).map_err(|e| DatastoreError::io("create directory", dir, e))?;
        fs::rename(&from, &to).map_err(|e| DatastoreError::io("move aside", &from, e))?;
        Ok(to_rel)
    }

    /// Removes a file; `Ok(false)` if it was not there.
    pub fn remove(&self, rel_path: &str) -> Result<bool, DatastoreError> {
        let abs = self.owned_path(rel_path)?;
        match fs::remove_file(&abs) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(DatastoreError::io("remove", abs, e)),
        }
    }
}

fn decode(
    formatter: &dyn Formatter,
    path: &str,
    bytes: &[u8],
) -> Result<InMemoryDataset, DatastoreError> {
    formatter
        .decode(bytes)
        .map_err(|source| DatastoreError::Decode {
            formatter: formatter.name().to_string(),
            path: path.to_string(),
            source,
        })
}

/// The state of one run of [`Datastore::ingest_expected`]: the
/// destination directories, each created if missing, swept of
/// killed-ingest leftovers (temporary copies) and opened once, so that
/// every file is then linked, checked and hashed relative to its
/// directory's handle instead of resolving its full path from the root
/// (a quarter of an import's time went to path lookups); and the
/// checksums of the source files this run has linked and hashed, so that
/// a file linked for several datasets is read once (see
/// [`Datastore::ingest_expected`]).
#[derive(Debug, Default)]
pub struct LeftoverSweep {
    dirs: std::sync::Mutex<DestinationDirs>,
    hashed: std::sync::Mutex<std::collections::HashMap<(u64, u64), (SourceVersion, String)>>,
}

/// How many directory handles a cache of them keeps open: an eighth of the
/// process's open-file limit (at least 4), so that an import or transfer
/// into more directories than the limit allows closes the handles it no
/// longer needs instead of failing with "too many open files".
pub fn directory_handles_kept() -> usize {
    static KEPT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *KEPT.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let limit = limit.and_then(|l| usize::try_from(l).ok()).unwrap_or(1024);
        (limit / 8).clamp(4, 4096)
    })
}

/// The destination directories of a [`LeftoverSweep`].
#[derive(Debug, Default)]
struct DestinationDirs {
    /// Swept once per run, whatever the handles kept.
    swept: std::collections::HashSet<PathBuf>,
    /// Open handles, at most [`directory_handles_kept`].
    open: std::collections::HashMap<PathBuf, Arc<rustix::fd::OwnedFd>>,
}

/// What identifies the content of a source file between two looks at it
/// in one run: its size and modification time. A write between them
/// changes the modification time; the file is then hashed again.
type SourceVersion = (u64, i64, i64);

/// At most this many hashed sources are remembered: a file linked for
/// several datasets is usually linked for them close together (an export
/// lists a RUN's datasets together), and a real export, one file per
/// dataset, must not hold a million checksums for nothing.
const HASHED_KEPT: usize = 1 << 16;

impl LeftoverSweep {
    /// The handle of `dir`, created and swept the first time. Only
    /// ingests, under the ingest lock the caller holds, make ingest
    /// temporary files: any found is a killed ingest's.
    fn dir(&self, dir: &Path) -> Result<Arc<rustix::fd::OwnedFd>, DatastoreError> {
        // Held while sweeping: a second worker must not sweep away the
        // temporary copy a first one is writing after its own sweep.
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = dirs.open.get(dir) {
            return Ok(fd.clone());
        }
        if !dirs.swept.contains(dir) {
            fs::create_dir_all(dir).map_err(|e| DatastoreError::io("create directory", dir, e))?;
            let entries = fs::read_dir(dir).map_err(|e| DatastoreError::io("list", dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| DatastoreError::io("list", dir, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TEMP_FILE_PREFIX) && name.ends_with("-ingest") {
                    remove_if_present(&entry.path())?;
                }
            }
            dirs.swept.insert(dir.to_path_buf());
        }
        // Handles in use elsewhere stay open through their `Arc`s.
        if dirs.open.len() >= directory_handles_kept() {
            dirs.open.clear();
        }
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| DatastoreError::io("open", dir, e.into()))?;
        let fd = Arc::new(fd);
        dirs.open.insert(dir.to_path_buf(), fd.clone());
        Ok(fd)
    }

    /// `src`'s size and checksum: the ones this run computed when the
    /// file has not changed since, else `hash()` of it (remembered when it
    /// read the size `src` was `stat`ed with).
    fn checksum_of(
        &self,
        src: &SourceFile,
        hash: impl FnOnce() -> Result<(u64, String), DatastoreError>,
    ) -> Result<(u64, String), DatastoreError> {
        if let Some(checksum) = self.hashed(src) {
            return Ok((src.size, checksum));
        }
        let (size, checksum) = hash()?;
        if size == src.size {
            self.remember_hashed(src, &checksum);
        }
        Ok((size, checksum))
    }

    /// The checksum this run computed for `src`'s file when it has not
    /// changed since.
    fn hashed(&self, src: &SourceFile) -> Option<String> {
        let hashed = self.hashed.lock().unwrap_or_else(|e| e.into_inner());
        match hashed.get(&src.id) {
            Some((version, checksum)) if *version == src.version() => Some(checksum.clone()),
            _ => None,
        }
    }

    fn remember_hashed(&self, src: &SourceFile, checksum: &str) {
        let mut hashed = self.hashed.lock().unwrap_or_else(|e| e.into_inner());
        if hashed.len() >= HASHED_KEPT {
            hashed.clear();
        }
        hashed.insert(src.id, (src.version(), checksum.to_string()));
    }
}

/// A source file of [`Datastore::ingest_expected`], resolved and `stat`ed
/// by the caller: a regular file, no symlink left in its path.
#[derive(Debug, Clone, Copy)]
pub struct SourceFile<'a> {
    /// Its canonical path.
    pub path: &'a Path,
    /// A handle on its directory (`O_PATH`), when the caller has one: the
    /// file is then linked relative to it, not by walking `path` from `/`.
    pub dir: Option<rustix::fd::BorrowedFd<'a>>,
    /// Device and inode.
    pub id: (u64, u64),
    /// Size in bytes.
    pub size: u64,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
}

impl SourceFile<'_> {
    fn version(&self) -> SourceVersion {
        (self.size, self.mtime.0, self.mtime.1)
    }
}

/// BLAKE3 of the file `name` in the directory `dir`.
fn hash_at(
    dir: &rustix::fd::OwnedFd,
    name: &Path,
    shown: &Path,
) -> Result<(u64, String), DatastoreError> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| DatastoreError::io("open", shown, e.into()))?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(File::from(fd))
        .map_err(|e| DatastoreError::io("read", shown, e))?;
    Ok((hasher.count(), hasher.finalize().to_hex().to_string()))
}

/// What [`Datastore::ingest_expected`] found or did at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The file was transferred.
    Written,
    /// The right file was already there (a killed run's): kept.
    AlreadyThere,
}

impl Datastore {
    /// [`Datastore::ingest`] for a source whose size and checksum are known
    /// (an import or transfer): `src` is the source resolved and `stat`ed,
    /// a regular file. A file already at the destination that has the
    /// expected size and checksum (hashed; with `trust`, a hard link or
    /// symlink to `src` of the expected size) is kept, so a rerun of a
    /// killed import costs what is left; any other file there is replaced.
    ///
    /// The transferred file is verified against `expected`: a copy by the
    /// checksum computed while copying, every byte of it. A hard link or
    /// symlink is the source's inode, so its bytes are the source's: it is
    /// verified by the source's checksum, computed by reading it once per
    /// run (a source linked for several datasets, unchanged in size and
    /// modification time since, is not read again: see [`LeftoverSweep`]),
    /// or with `trust` (the expected checksum comes from a registry that
    /// recorded this very file) by the source's size only, as `repo check
    /// --fast` does. A mismatch removes it and is an error. Without
    /// `expected` the file is hashed and recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest_expected(
        &self,
        lock: &IngestLock,
        sweep: &LeftoverSweep,
        src: &SourceFile,
        r: &DatasetRef,
        storage_class: &str,
        mode: TransferMode,
        expected: Option<(u64, &str)>,
        trust: bool,
    ) -> Result<(StoredFileInfo, Placement), DatastoreError> {
        let formatter = self.formatters.for_storage_class(storage_class)?;
        if mode == TransferMode::Direct {
            let stored = self.record_direct(sweep, src, formatter.name(), expected, trust)?;
            return Ok((stored, Placement::Written));
        }
        let rel = self.single_path_for(r, storage_class)?;
        let to = (rel.as_str(), formatter.name());
        self.ingest_expected_at(lock, sweep, src, to, r, mode, expected, trust)
    }

    /// The record [`Datastore::ingest_expected`] gives a whole file of `r`
    /// when it succeeds with `expected` = `(size, checksum)` in any mode
    /// but [`TransferMode::Direct`]: known before the file is placed, so
    /// an import can write its rows meanwhile.
    pub fn expected_record(
        &self,
        r: &DatasetRef,
        storage_class: &str,
        (size, checksum): (u64, &str),
    ) -> Result<StoredFileInfo, DatastoreError> {
        let formatter = self.formatters.for_storage_class(storage_class)?;
        Ok(StoredFileInfo {
            path: self.single_path_for(r, storage_class)?,
            formatter: formatter.name().to_string(),
            size,
            checksum: checksum.to_string(),
        })
    }

    /// The record of a [`TransferMode::Direct`] transfer: the source's
    /// canonical path as a direct path, its size, and its checksum (read
    /// once per run and inode as for a link, see [`LeftoverSweep`]; with
    /// `trust`, the expected one when the sizes agree). Nothing is made
    /// in the datastore.
    fn record_direct(
        &self,
        sweep: &LeftoverSweep,
        src: &SourceFile,
        formatter: &str,
        expected: Option<(u64, &str)>,
        trust: bool,
    ) -> Result<StoredFileInfo, DatastoreError> {
        let path = src
            .path
            .to_str()
            .ok_or_else(|| DatastoreError::UnsafePath {
                path: src.path.display().to_string(),
                reason: "a direct path must be UTF-8".into(),
            })?;
        validate_direct_path(path)?;
        let (size, checksum) = match expected {
            Some((size, checksum)) if trust && src.size == size => (size, checksum.to_string()),
            _ => sweep.checksum_of(src, || hash_file(src.path))?,
        };
        let stored = StoredFileInfo {
            path: path.to_string(),
            formatter: formatter.to_string(),
            size,
            checksum,
        };
        match mismatch(&stored, expected) {
            Some(e) => Err(e),
            None => Ok(stored),
        }
    }

    /// [`Datastore::ingest_expected`] to the relative path `to.0`,
    /// recording the formatter `to.1`; `what` names the dataset (or the
    /// part of one) in errors. A disassembled composite's parts come in
    /// through this, each against its own size and checksum.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest_expected_at(
        &self,
        lock: &IngestLock,
        sweep: &LeftoverSweep,
        src: &SourceFile,
        to: (&str, &str),
        what: &dyn fmt::Display,
        mode: TransferMode,
        expected: Option<(u64, &str)>,
        trust: bool,
    ) -> Result<(StoredFileInfo, Placement), DatastoreError> {
        use rustix::fs::{linkat, symlinkat, unlinkat, AtFlags, CWD};
        if mode == TransferMode::Direct {
            return Err(DatastoreError::DirectNotHere {
                what: what.to_string(),
            });
        }
        let (rel, formatter) = (to.0.to_string(), to.1);
        validate_relative_path(&rel)?;
        let dest = self.root.join(&rel);
        let dir = sweep.dir(parent_of(&dest))?;
        let name = Path::new(dest.file_name().unwrap_or_default());
        let info = |size: u64, checksum: String| StoredFileInfo {
            path: rel.clone(),
            formatter: formatter.to_string(),
            size,
            checksum,
        };
        let src_name = src.path.file_name().unwrap_or_default();
        let make = || match (mode, src.dir) {
            (TransferMode::Symlink, _) => symlinkat(src.path, &*dir, name),
            (_, Some(at)) => linkat(at, src_name, &*dir, name, AtFlags::empty()),
            (_, None) => linkat(CWD, src.path, &*dir, name, AtFlags::empty()),
        };
        let linking = matches!(
            mode,
            TransferMode::Hardlink | TransferMode::Auto | TransferMode::Symlink
        );
        let copy = || {
            let stored = self.ingest_at(lock, src.path, &rel, formatter, what, mode, true)?;
            self.check_expected(&dest, &stored, expected)?;
            Ok((stored, Placement::Written))
        };
        let made = if linking {
            make()
        } else {
            Err(rustix::io::Errno::EXIST)
        };
        match made {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                if let Some(kept) = self.kept(&dest, src, expected, trust, linking)? {
                    return Ok((info(kept.0, kept.1), Placement::AlreadyThere));
                }
                if !linking {
                    return copy();
                }
                match unlinkat(&*dir, name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(DatastoreError::io("remove", &dest, e.into())),
                }
                make().map_err(|e| DatastoreError::io("link into place", &dest, e.into()))?;
            }
            // Another filesystem: a copy.
            Err(_) if mode == TransferMode::Auto => return copy(),
            Err(e) => return Err(DatastoreError::io("link into place", &dest, e.into())),
        }
        let stored = match self.linked_checksum(sweep, &dir, name, &dest, src, expected, trust) {
            Ok((size, checksum)) => info(size, checksum),
            Err(e) => {
                let _ = unlinkat(&*dir, name, AtFlags::empty());
                return Err(e);
            }
        };
        self.check_expected(&dest, &stored, expected)?;
        if self.config.fsync {
            sync_dir(parent_of(&dest))?;
        }
        Ok((stored, Placement::Written))
    }

    /// The size and checksum of `name` in `dir`, a link (hard or
    /// symbolic) just made to `src`: its bytes are the source's. With
    /// `trust`, the expected checksum when the source has the expected
    /// size; otherwise the checksum this run computed for the unchanged
    /// source, or else the file hashed (and remembered).
    #[allow(clippy::too_many_arguments)]
    fn linked_checksum(
        &self,
        sweep: &LeftoverSweep,
        dir: &rustix::fd::OwnedFd,
        name: &Path,
        dest: &Path,
        src: &SourceFile,
        expected: Option<(u64, &str)>,
        trust: bool,
    ) -> Result<(u64, String), DatastoreError> {
        match expected {
            Some((size, checksum)) if trust => {
                if src.size == size {
                    return Ok((size, checksum.to_string()));
                }
                Err(DatastoreError::SizeMismatch {
                    path: src.path.display().to_string(),
                    actual: src.size,
                    expected: size,
                })
            }
            _ => sweep.checksum_of(src, || hash_at(dir, name, dest)),
        }
    }

    /// Removes `dest` and fails when `stored` is not `expected`.
    fn check_expected(
        &self,
        dest: &Path,
        stored: &StoredFileInfo,
        expected: Option<(u64, &str)>,
    ) -> Result<(), DatastoreError> {
        match mismatch(stored, expected) {
            None => Ok(()),
            Some(e) => {
                let _ = remove_if_present(dest);
                Err(e)
            }
        }
    }

    /// The (size, checksum) of the file already at `dest` when it is the
    /// expected one; `None` when it is not (or nothing says what to expect).
    fn kept(
        &self,
        dest: &Path,
        src: &SourceFile,
        expected: Option<(u64, &str)>,
        trust: bool,
        linking: bool,
    ) -> Result<Option<(u64, String)>, DatastoreError> {
        let Some((size, checksum)) = expected else {
            return Ok(None);
        };
        if trust && linking {
            let Ok(d) = fs::metadata(dest) else {
                return Ok(None);
            };
            use std::os::unix::fs::MetadataExt;
            let same = (d.dev(), d.ino()) == src.id && d.len() == size;
            return Ok(same.then(|| (size, checksum.to_string())));
        }
        match hash_file(dest) {
            Ok((s, c)) if s == size && c == checksum => Ok(Some((s, c))),
            _ => Ok(None),
        }
    }
}

/// How `stored` differs from what was `expected` (size first), if it does.
fn mismatch(stored: &StoredFileInfo, expected: Option<(u64, &str)>) -> Option<DatastoreError> {
    let (size, checksum) = expected?;
    if stored.size != size {
        return Some(DatastoreError::SizeMismatch {
            path: stored.path.clone(),
            actual: stored.size,
            expected: size,
        });
    }
    (stored.checksum != checksum).then(|| DatastoreError::ChecksumMismatch {
        path: stored.path.clone(),
        actual: stored.checksum.clone(),
        expected: checksum.to_string(),
    })
}

/// Streams a file through BLAKE3: size and hex digest (what a
/// [`StoredFileInfo`] records), e.g. to compare an ingest source with a
/// stored dataset.
pub fn hash_file(path: &Path) -> Result<(u64, String), DatastoreError> {
    let file = File::open(path).map_err(|e| DatastoreError::io("open", path, e))?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file)
        .map_err(|e| DatastoreError::io("read", path, e))?;
    Ok((hasher.count(), hasher.finalize().to_hex().to_string()))
}

/// Proof that this process holds a datastore's ingest lock
/// ([`Datastore::lock_for_ingest`]); [`Datastore::ingest`] asks for it.
#[derive(Debug)]
pub struct IngestLock {
    /// The locked root directory; closing it releases the `flock`.
    _dir: File,
    root: PathBuf,
}

/// The fixed temporary name of an ingest copy to `dest` (owned by `dest`,
/// like every temporary name: see [`temp_file_prefix`]): a rerun of a
/// killed ingest finds it and starts again. A fixed name is safe only
/// because ingests hold the ingest lock; other writers add their pid and a
/// counter, which never spell `ingest`.
pub fn ingest_temp_path(dest: &Path) -> PathBuf {
    parent_of(dest).join(format!("{}ingest", temp_file_prefix(dest)))
}

/// Removes a file or symlink; absent is fine.
fn remove_if_present(path: &Path) -> Result<(), DatastoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DatastoreError::io("remove", path, e)),
    }
}

/// Runs `make` (a link or symlink creation, atomic and failing if `dest`
/// exists) at `dest`, creating the parent directory when it is missing.
fn make_in_place(dest: &Path, make: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    match make(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(parent_of(dest))?;
            make(dest)
        }
        other => other,
    }
}

fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

fn parent_of(path: &Path) -> &Path {
    // Datastore paths are root-joined relative paths, so always have one.
    path.parent().unwrap_or(Path::new("."))
}

/// Makes a rename or link in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), DatastoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DatastoreError::io("fsync directory", dir, e))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlink ingest needs a Unix system",
    ))
}

/// A temporary file removed on drop unless disarmed, so that no error path
/// leaves it behind.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove temporary file");
                }
            }
        }
    }
}

/// Hashes and counts what goes through it; keeps the first write error so
/// that it can be reported as a disk error rather than a formatter error.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    size: u64,
    io_error: Option<io::Error>,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            size: 0,
            io_error: None,
        }
    }

    fn note<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            if self.io_error.is_none() {
                self.io_error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        }
        r
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        let n = self.note(r)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}
