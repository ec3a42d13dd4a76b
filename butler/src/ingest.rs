//! Ingest of existing files into a RUN, by a protocol that never destroys
//! the only copy of a file and that ends where an uninterrupted run would
//! have when rerun after a crash at any point (see [`Butler::ingest`]).
//! Items are read, checked, transferred and registered a chunk at a time
//! ([`CHUNK_ITEMS`]), so that an ingest of millions of files holds a few
//! hundred bytes per item of one chunk, not of them all.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use quanta_core::fault::{self, kill_point};
use quanta_core::{CollectionType, DataId, DatasetRef, DatasetType, DimensionUniverse, Uuid};
use quanta_datastore::{
    hash_file, is_direct_path, DatastoreError, IngestLock, LeftoverSweep, StoredFileInfo,
    TransferMode,
};
use quanta_registry::{BulkWrites, FoundDataset, NewDataset, OnConflict};
use rayon::prelude::*;

use crate::butler::{into_record, to_info, Butler};
use crate::error::ButlerError;
use crate::repo_guard::RepoGuard;
use crate::sources::{CanonicalDirs, DirListings, Identified, Resolved};
use crate::transfers::phase;

/// One file to ingest and the data ID it holds.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub path: PathBuf,
    pub data_id: DataId,
}

/// The items of an ingest, from the first each time they are asked for.
pub type ItemIter<'a> = Box<dyn Iterator<Item = Result<IngestItem, ButlerError>> + 'a>;

/// What an ingest reads its items from: it goes over them twice (checks
/// every item before it writes anything, then writes them), so a source
/// can read them afresh each time instead of holding them all
/// ([`crate::manifest::Manifest`] streams its file). Each pass reads them
/// on a thread of its own, a chunk ahead of the work.
pub trait IngestItems: Sync {
    fn items(&self) -> Result<ItemIter<'_>, ButlerError>;
}

impl IngestItems for Vec<IngestItem> {
    fn items(&self) -> Result<ItemIter<'_>, ButlerError> {
        Ok(Box::new(self.iter().cloned().map(Ok)))
    }
}

/// Items an ingest reads, checks, transfers and registers together.
const CHUNK_ITEMS: usize = 1 << 16;

/// Datasets an ingest registers per transaction by default: one
/// transaction of millions of rows outgrows the registry's page cache,
/// which then spills the same pages into the write-ahead log again and
/// again (10,000,000 raws in one transaction: 22 minutes, most of it
/// rewriting pages); many small ones each rewrite most of the (random)
/// UUID index.
pub const DEFAULT_INGEST_COMMIT: std::num::NonZeroUsize =
    std::num::NonZeroUsize::new(1_000_000).expect("not zero");

/// How an ingest runs.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    pub transfer: TransferMode,
    /// Datasets registered per transaction. A crash between two leaves
    /// the first registered with their files, which a rerun finds
    /// already ingested.
    pub commit_every: std::num::NonZeroUsize,
}

/// What an ingest did.
#[derive(Debug, Default)]
pub struct IngestSummary {
    /// Datasets registered by this ingest.
    pub ingested: usize,
    /// Items already registered in the RUN with a file equal to the source
    /// (by an earlier run of the same ingest, perhaps killed): skipped.
    pub already_ingested: usize,
    /// Move only: sources that could not be removed although their dataset
    /// is registered, with the reason. A rerun removes them.
    pub sources_not_removed: Vec<(PathBuf, String)>,
}

/// The UUID of an ingested dataset: derived from its dataset type, RUN and
/// data ID (like daf_butler's `DATAID_TYPE_RUN` mode), so that a rerun of
/// an ingest picks the same UUID and hence the same datastore path, where
/// it finds what a killed run left. A UUIDv8 over a BLAKE3 hash of an
/// unambiguous JSON encoding (daf_butler's UUIDv5 joins the values with
/// `,` and `=`, which values may contain).
pub fn ingest_dataset_id(dataset_type: &str, run: &str, data_id: &DataId) -> Uuid {
    // The hasher with its context already hashed: deriving the key costs
    // a BLAKE3 compression per dataset otherwise (a third of the hashing).
    static DERIVED: std::sync::OnceLock<blake3::Hasher> = std::sync::OnceLock::new();
    let mut hasher = DERIVED
        .get_or_init(|| blake3::Hasher::new_derive_key("quanta 2026 ingest dataset ID"))
        .clone();
    // The key: a JSON array of the three as strings (the data ID as its
    // JSON text), as `["raw","Cam/raw","{\"instrument\":\"Cam\",...}"]`.
    let mut key = Vec::with_capacity(64);
    // Serializing strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut key, &(dataset_type, run, data_id.to_json()));
    hasher.update(&key);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// An item of a chunk with its dataset and its source looked up: step 1
/// needs the source's kind and identity ([`Identified`]), step 2 what the
/// datastore needs to transfer it ([`Resolved`]).
struct Prepared<S> {
    item: IngestItem,
    dataset_ref: DatasetRef,
    source: std::io::Result<S>,
}

/// Where an ingest pass prepares its chunks ([`prepare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preparation {
    /// On every core, by the thread that runs `each`, while another reads
    /// the next chunk: step 1, whose `each` is light.
    Parallel,
    /// On the reading thread, one chunk ahead of `each`, at a lower
    /// priority: step 2, whose `each` is the registry's single-threaded
    /// insert. (Preparing there on every core slowed the insert more than
    /// it saved: 10^7 raws, insert 70 s alone, 100 s beside the pool;
    /// 78 s beside one thread.)
    Ahead,
}

/// A pass over the items: what it needs of their sources and where it
/// prepares its chunks.
trait SourcePass: Sync {
    type Source: Send;
    const PREPARATION: Preparation;
    fn look_up(&self, dirs: &mut CanonicalDirs, path: &Path) -> std::io::Result<Self::Source>;
}

/// Step 1: a source's kind and identity, from its directory's listing
/// where that answers (10^7 raws: a `stat` each was 17 of the step's 38
/// CPU seconds); step 2 `stat`s each source again anyway.
struct Checking(DirListings);

impl SourcePass for Checking {
    type Source = Identified;
    const PREPARATION: Preparation = Preparation::Parallel;
    fn look_up(&self, dirs: &mut CanonicalDirs, path: &Path) -> std::io::Result<Identified> {
        dirs.identify(path, &self.0)
    }
}

/// Step 2: what the datastore needs to transfer a source.
struct Writing;

impl SourcePass for Writing {
    type Source = Resolved;
    const PREPARATION: Preparation = Preparation::Ahead;
    fn look_up(&self, dirs: &mut CanonicalDirs, path: &Path) -> std::io::Result<Resolved> {
        dirs.resolve(path)
    }
}

/// Runs `each` on the items' chunks in order, each prepared ([`prepare`])
/// for `pass`, the next chunk read meanwhile on another thread. Stops at
/// the first error, which comes in the items' order.
fn for_each_chunk<P: SourcePass>(
    universe: &DimensionUniverse,
    target: &Target<'_>,
    items: &dyn IngestItems,
    pass: &P,
    mut each: impl FnMut(Vec<Prepared<P::Source>>) -> Result<(), ButlerError>,
) -> Result<(), ButlerError> {
    /// A chunk as the reading thread hands it on.
    enum Chunk<S> {
        Read(Vec<IngestItem>),
        Prepared(Vec<Prepared<S>>),
    }
    std::thread::scope(|scope| {
        // One chunk waits while the next is read: at most three in memory.
        let (send, receive) =
            std::sync::mpsc::sync_channel::<Result<Chunk<P::Source>, ButlerError>>(1);
        scope.spawn(move || {
            if P::PREPARATION == Preparation::Ahead {
                quanta_registry::lower_thread_priority();
            }
            let mut dirs = CanonicalDirs::default();
            let mut read_all = || -> Result<(), ButlerError> {
                let mut read = items.items()?;
                loop {
                    let chunk: Vec<IngestItem> =
                        read.by_ref().take(CHUNK_ITEMS).collect::<Result<_, _>>()?;
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    let chunk = match P::PREPARATION {
                        Preparation::Parallel => Chunk::Read(chunk),
                        Preparation::Ahead => Chunk::Prepared(
                            chunk
                                .into_iter()
                                .map(|item| prepare_item(universe, target, &mut dirs, pass, item))
                                .collect::<Result<_, _>>()?,
                        ),
                    };
                    if send.send(Ok(chunk)).is_err() {
                        // `each` failed: nothing waits for more.
                        return Ok(());
                    }
                }
            };
            if let Err(e) = read_all() {
                let _ = send.send(Err(e));
            }
        });
        for chunk in receive {
            each(match chunk? {
                Chunk::Read(items) => prepare(universe, target, pass, items)?,
                Chunk::Prepared(prepared) => prepared,
            })?;
        }
        Ok(())
    })
}

/// Prepares a chunk of items on every core ([`prepare_item`]).
fn prepare<P: SourcePass>(
    universe: &DimensionUniverse,
    target: &Target<'_>,
    pass: &P,
    chunk: Vec<IngestItem>,
) -> Result<Vec<Prepared<P::Source>>, ButlerError> {
    chunk
        .into_par_iter()
        .map_init(CanonicalDirs::default, |dirs, item| {
            prepare_item(universe, target, dirs, pass, item)
        })
        .collect()
}

/// Prepares an item: its data ID standardized (an error names the item's
/// file), its dataset UUID derived, its source looked up.
fn prepare_item<P: SourcePass>(
    universe: &DimensionUniverse,
    target: &Target<'_>,
    dirs: &mut CanonicalDirs,
    pass: &P,
    item: IngestItem,
) -> Result<Prepared<P::Source>, ButlerError> {
    let dt = &target.dataset_type;
    let data_id = item
        .data_id
        .standardize(&dt.dimensions, universe)
        .map_err(|e| ButlerError::Invalid(format!("{}: {e}", item.path.display())))?;
    let dataset_ref = DatasetRef {
        id: ingest_dataset_id(&dt.name, target.run, &data_id),
        dataset_type: dt.name.clone(),
        data_id,
        run: target.run.to_string(),
    };
    let source = pass.look_up(dirs, &item.path);
    Ok(Prepared {
        item,
        dataset_ref,
        source,
    })
}

/// What an ingest writes into, looked up once.
struct Target<'a> {
    run: &'a str,
    dataset_type: DatasetType,
    /// Whether the RUN holds datasets of the type already: a fresh RUN
    /// (the usual ingest) needs no lookup per item.
    run_has_some: bool,
}

/// What checking every item found (step 1), for writing them (step 2).
#[derive(Default)]
struct Checked {
    /// Items registered already with their file.
    already: HashSet<Uuid>,
    /// Of those, the ones whose source was still there (a move removes
    /// them).
    already_with_source: HashSet<Uuid>,
}

/// The state of step 1 between items.
struct ItemChecks {
    guard: RepoGuard,
    /// One source per directory: whether a directory is the repository's
    /// under another name is asked once the datastore directories this
    /// ingest writes into are all known.
    source_dirs: HashMap<PathBuf, PathBuf>,
    /// The directory of the last item's source, in `source_dirs`.
    last_source_dir: PathBuf,
    /// The datastore directory of the last item (items usually come a
    /// directory at a time).
    last_dest_dir: Option<String>,
    checked: Checked,
}

/// The transaction step 2 keeps open between commits.
#[derive(Default)]
struct OpenCommit {
    /// Datasets inserted since the last commit.
    rows: usize,
    /// Their files in the datastore (removed if the transaction fails;
    /// direct files are not the datastore's).
    files: Vec<String>,
    /// Move: their sources, and the sources of already-ingested items met
    /// since, removed once it commits.
    sources: Vec<PathBuf>,
}

impl Butler {
    /// Ingests existing files as datasets of one type into a RUN.
    ///
    /// The protocol (also in ARCHITECTURE.md, "Invariants"):
    /// 1. Under the datastore's ingest lock, every item is checked before
    ///    anything is written: data IDs (no two items with one data ID),
    ///    sources (regular files, not inside the repository, see
    ///    [`crate::repo_guard`]), and each item's (dataset type, data ID)
    ///    in the RUN. An item already registered there with a file equal to
    ///    its source (size and BLAKE3; in symlink mode a symlink must point
    ///    at the canonical source, in direct mode the registered direct
    ///    path must be it) is *already ingested* and skipped; with
    ///    different content it is a conflict and nothing is written. Every
    ///    dataset's UUID is derived from type, RUN and data ID
    ///    ([`ingest_dataset_id`]), so its datastore path is the one an
    ///    earlier run of this ingest used.
    /// 2. Then, a chunk at a time, the other items are transferred into
    ///    the datastore without touching their sources
    ///    ([`quanta_datastore::Datastore::ingest_expected`]: a move is a
    ///    hard link or a fsynced copy; `direct` makes nothing and records
    ///    the canonical source, which no removal ever deletes) and
    ///    inserted into an open transaction, committed every
    ///    `commit_every` datasets (a move fsyncs the new names' directories
    ///    first). A file already at a destination is not registered (step
    ///    1), so nothing refers to it: it is what a killed ingest left, and
    ///    is replaced. If a transfer or a registration fails, the files of
    ///    the datasets not committed are removed; sources were never
    ///    touched. Committed datasets have their files: a rerun finds them
    ///    already ingested (step 1).
    /// 3. Move only, after each commit (durable): the sources of the
    ///    datasets it registered and of the already-ingested items met
    ///    since are removed (a source given as a symlink: the link, not its
    ///    target). A rerun after a kill here finds those datasets
    ///    registered; a source it no longer finds counts as moved once its
    ///    registered file verifies.
    pub fn ingest(
        &mut self,
        run: &str,
        dataset_type: &str,
        items: &dyn IngestItems,
        options: IngestOptions,
    ) -> Result<IngestSummary, ButlerError> {
        let lock = self.datastore.lock_for_ingest()?;
        let target = Target {
            run,
            dataset_type: self.registry.dataset_type_required(dataset_type)?,
            run_has_some: {
                self.registry.collection_of_type(run, CollectionType::Run)?;
                self.registry.run_has_datasets_of_type(run, dataset_type)?
            },
        };
        let mut clock = std::time::Instant::now();
        let checked = self.check_items(&target, items, options.transfer)?;
        phase("ingest: check every item", &mut clock);
        // A move removes sources after each commit: its registration must
        // then outlive a power failure, not only a killed process.
        let durable = options.transfer == TransferMode::Move;
        self.registry.set_durable_commits(durable)?;
        // The commits' checkpoints on a thread of their own (10^7 raws:
        // commits 11.0 s -> 3.5 s, inserts 78 s -> 68 s).
        self.registry
            .set_bulk_writing(Some(BulkWrites::Scattered))?;
        let written = self.write_items(&lock, &target, items, &checked, options);
        phase("ingest: transfer and register", &mut clock);
        let ended = self.registry.set_bulk_writing(None);
        if let Err(e) = self.registry.set_durable_commits(false) {
            // Only later commits stay slower; this one's outcome stands.
            tracing::warn!("could not reset the registry's commit mode: {e}");
        }
        phase("ingest: last checkpoint", &mut clock);
        drop(lock);
        let (ingested, sources_not_removed) = written?;
        ended?;
        Ok(IngestSummary {
            ingested,
            already_ingested: checked.already.len(),
            sources_not_removed,
        })
    }

    /// Step 1: checks every item and finds those already ingested; writes
    /// nothing.
    fn check_items(
        &self,
        target: &Target<'_>,
        items: &dyn IngestItems,
        mode: TransferMode,
    ) -> Result<Checked, ButlerError> {
        let mut checks = ItemChecks {
            guard: RepoGuard::new(&self.root, self.datastore.root())?,
            source_dirs: HashMap::new(),
            last_source_dir: PathBuf::new(),
            last_dest_dir: None,
            checked: Checked::default(),
        };
        // Every dataset's UUID with its item's position: sorted at the
        // end, equal neighbours are two items with one data ID.
        let mut ids: Vec<(Uuid, u64)> = Vec::new();
        // The first item refused: reported once every item is read, unless
        // two items have one data ID (the manifest's own mistake first).
        let mut refused: Option<ButlerError> = None;
        for_each_chunk(
            self.universe(),
            target,
            items,
            &Checking(DirListings::default()),
            |chunk| {
                for p in chunk {
                    ids.push((p.dataset_ref.id, ids.len() as u64));
                    if refused.is_none() {
                        refused = self.check_item(target, &p, mode, &mut checks).err();
                    }
                }
                Ok(())
            },
        )?;
        self.refuse_duplicates(target, items, ids)?;
        if let Some(e) = refused {
            return Err(e);
        }
        for source in checks.source_dirs.values() {
            if let Some(reason) = checks.guard.directory_refusal(source) {
                return Err(ButlerError::SourceInRepository {
                    source_path: source.clone(),
                    reason,
                });
            }
        }
        Ok(checks.checked)
    }

    /// Step 1 for one item: its source, and whether it is ingested already.
    fn check_item(
        &self,
        target: &Target<'_>,
        p: &Prepared<Identified>,
        mode: TransferMode,
        checks: &mut ItemChecks,
    ) -> Result<(), ButlerError> {
        let dt = &target.dataset_type;
        let (item, dataset_ref) = (&p.item, &p.dataset_ref);
        if mode != TransferMode::Direct {
            // The directories this ingest writes into: a source reaching
            // one under another name is refused (each directory once).
            let dest = self
                .datastore
                .single_path_for(dataset_ref, &dt.storage_class)?;
            let dir = dest.rsplit_once('/').map_or("", |(dir, _)| dir);
            if checks.last_dest_dir.as_deref() != Some(dir) {
                let root = self.datastore.root();
                checks
                    .guard
                    .add_datastore_dirs(root, &self.datastore.owned_path(&dest)?);
                checks.last_dest_dir = Some(dir.to_string());
            }
        }
        let found = if target.run_has_some {
            let in_run = [target.run.to_string()];
            self.registry
                .find_dataset(&dt.name, &dataset_ref.data_id, &in_run, None)?
        } else {
            None
        };
        let bad_source = |reason: String| {
            ButlerError::Datastore(DatastoreError::BadIngestSource {
                source_path: item.path.clone(),
                dataset: dataset_ref.to_string(),
                reason,
            })
        };
        let source = match &p.source {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match found {
                // A move killed while removing sources: this one went.
                Some(found) if mode == TransferMode::Move => {
                    self.check_already_ingested(&found, item, None, mode)?;
                    checks.checked.already.insert(found.dataset_ref.id);
                    return Ok(());
                }
                _ => return Err(bad_source(e.to_string())),
            },
            Err(e) => return Err(bad_source(e.to_string())),
            Ok(source) if !source.is_file => return Err(bad_source("not a regular file".into())),
            Ok(source) => source,
        };
        if let Some(reason) = checks.guard.file_refusal(&source.path, Some(source.id)) {
            return Err(ButlerError::SourceInRepository {
                source_path: item.path.clone(),
                reason,
            });
        }
        if let Some(dir) = source.path.parent() {
            // Items usually come a directory at a time: bytes compared
            // first, the map (hashing the path) only at a new directory.
            let same_as_last = checks.last_source_dir.as_os_str().as_encoded_bytes()
                == dir.as_os_str().as_encoded_bytes();
            if !same_as_last {
                if !checks.source_dirs.contains_key(dir) {
                    checks
                        .source_dirs
                        .insert(dir.to_path_buf(), source.path.clone());
                }
                checks.last_source_dir = dir.to_path_buf();
            }
        }
        if let Some(found) = found {
            self.check_already_ingested(&found, item, Some(&source.path), mode)?;
            checks.checked.already.insert(found.dataset_ref.id);
            checks
                .checked
                .already_with_source
                .insert(found.dataset_ref.id);
        }
        Ok(())
    }

    /// Fails when two items have one data ID (one dataset UUID): `ids`
    /// holds each item's UUID and position. The items are read again up
    /// to the second of the first such pair, to name both files.
    fn refuse_duplicates(
        &self,
        target: &Target<'_>,
        items: &dyn IngestItems,
        mut ids: Vec<(Uuid, u64)>,
    ) -> Result<(), ButlerError> {
        ids.par_sort_unstable();
        let Some((first, second)) = ids
            .windows(2)
            .filter(|w| w[0].0 == w[1].0)
            .map(|w| (w[0].1, w[1].1))
            .min_by_key(|&(_, second)| second)
        else {
            return Ok(());
        };
        drop(ids);
        let mut first_path = PathBuf::new();
        for (position, item) in items.items()?.enumerate() {
            let item = item?;
            if position as u64 == first {
                first_path = item.path;
            } else if position as u64 == second {
                let dt = &target.dataset_type;
                return Err(ButlerError::DuplicateIngestItem {
                    dataset_type: dt.name.clone(),
                    data_id: item.data_id.standardize(&dt.dimensions, self.universe())?,
                    first: first_path,
                    second: item.path,
                });
            }
        }
        // Only if the items changed between two readings.
        Err(ButlerError::Invalid(format!(
            "two items have one data ID of {}, but the items changed before they could be named",
            target.dataset_type.name
        )))
    }

    /// Whether the dataset `found` (registered for the item's data ID) holds
    /// the item's file: its record has the source's size and BLAKE3, its
    /// file verifies, and in symlink mode a symlink points at the source.
    /// A move must also not remove a source the dataset's symlink needs.
    fn check_already_ingested(
        &self,
        found: &FoundDataset,
        item: &IngestItem,
        source: Option<&Path>,
        mode: TransferMode,
    ) -> Result<(), ButlerError> {
        let conflict = |stored: String, reason: String| ButlerError::IngestConflict {
            source_path: item.path.clone(),
            dataset: found.dataset_ref.to_string(),
            stored,
            reason,
        };
        let Some(record) = &found.stored else {
            return Err(conflict(
                "(none)".into(),
                "it is registered without a file".into(),
            ));
        };
        let abs = self.datastore.abs_path(&record.path)?;
        let stored = abs.display().to_string();
        if let Some(source) = source {
            // A hard link of the source holds its bytes: verifying the
            // registered file below reads them once instead of twice.
            let (size, checksum) = if same_file(source, &abs) {
                (record.size, record.checksum.clone())
            } else {
                hash_file(source)?
            };
            if size != record.size || checksum != record.checksum {
                return Err(conflict(
                    stored,
                    format!(
                        "the source has {size} bytes with BLAKE3 {checksum}, the registered file \
                         {} bytes with BLAKE3 {}",
                        record.size, record.checksum
                    ),
                ));
            }
            if is_direct_path(&record.path) {
                if mode == TransferMode::Move && abs == source {
                    return Err(conflict(
                        stored,
                        "the dataset is registered with the source itself as its direct file; \
                         moving the source would leave it without one"
                            .into(),
                    ));
                }
                if mode == TransferMode::Direct && abs != source {
                    return Err(conflict(
                        stored,
                        "the registered direct file is not the source".into(),
                    ));
                }
            } else if let Ok(target) = fs::read_link(&abs) {
                if mode == TransferMode::Move {
                    return Err(conflict(
                        stored,
                        format!(
                            "the registered file is a symlink to `{}`; moving the source \
                             would leave it dangling",
                            target.display()
                        ),
                    ));
                }
                if mode == TransferMode::Symlink && target != source {
                    return Err(conflict(
                        stored,
                        format!(
                            "the registered file is a symlink to `{}`, not to the source",
                            target.display()
                        ),
                    ));
                }
            }
        }
        self.datastore
            .verify(&to_info(record))
            .map_err(|e| conflict(stored, format!("the registered file does not verify: {e}")))
    }

    /// Step 2 (and 3 for a move): transfers and registers the items not
    /// already ingested, a chunk at a time, committing every
    /// `options.commit_every`. Returns how many it registered and the
    /// moved sources it could not remove.
    fn write_items(
        &mut self,
        lock: &IngestLock,
        target: &Target<'_>,
        items: &dyn IngestItems,
        checked: &Checked,
        options: IngestOptions,
    ) -> Result<(usize, Vec<(PathBuf, String)>), ButlerError> {
        let mode = options.transfer;
        let sweep = LeftoverSweep::default();
        let mut open = OpenCommit::default();
        let mut registered = 0;
        let mut not_removed = Vec::new();
        let mut first_commit = true;
        let universe = self.universe().clone();
        let result = for_each_chunk(&universe, target, items, &Writing, |chunk| {
            let mut new = Vec::with_capacity(chunk.len());
            for p in chunk {
                let id = p.dataset_ref.id;
                if !checked.already.contains(&id) {
                    new.push(p);
                } else if mode == TransferMode::Move && checked.already_with_source.contains(&id) {
                    open.sources.push(p.item.path);
                }
            }
            let mut rest = new.into_iter().peekable();
            while rest.peek().is_some() {
                let room = options.commit_every.get() - open.rows;
                let now: Vec<Prepared<Resolved>> = rest.by_ref().take(room).collect();
                let stored = self.transfer_items(lock, &sweep, target, &now, mode, &mut open)?;
                open.rows += now.len();
                // The items are done with: their data IDs move into the rows
                // (the registry's thread allocates nothing per item here).
                let mut datasets: Vec<NewDataset> = now
                    .into_iter()
                    .zip(stored)
                    .map(|(p, info)| {
                        if mode == TransferMode::Move {
                            // Removed after the commit that registers them.
                            open.sources.push(p.item.path);
                        }
                        NewDataset {
                            id: p.dataset_ref.id,
                            data_id: p.dataset_ref.data_id,
                            stored: Some(into_record(info)),
                        }
                    })
                    .collect();
                // In UUID order, the inserts into the UUID index go from one
                // page to the next instead of all over it (registering 10^6
                // raws beside 10^7: 8.6-9.2 s instead of 10.1-10.8 s). Not
                // in the registry for every caller: an import comes in data
                // ID order, which that index prefers (1M: 7.1 s, 9.8 s in
                // UUID order).
                datasets.sort_unstable_by_key(|d| d.id);
                self.registry.insert_datasets_uncommitted(
                    target.run,
                    &target.dataset_type.name,
                    &datasets,
                    OnConflict::Fail,
                )?;
                if open.rows == options.commit_every.get() {
                    registered +=
                        self.commit_ingested(&mut open, mode, &mut first_commit, &mut not_removed)?;
                }
            }
            Ok(())
        })
        .and_then(|()| {
            registered +=
                self.commit_ingested(&mut open, mode, &mut first_commit, &mut not_removed)?;
            Ok(())
        });
        if let Err(e) = result {
            let _ = self.registry.rollback_open();
            self.remove_transferred(&open.files);
            if registered > 0 {
                tracing::warn!(
                    "{registered} datasets were registered before the failure; rerunning the \
                     same ingest registers the rest"
                );
            }
            return Err(e);
        }
        Ok((registered, not_removed))
    }

    /// Transfers `items` (none already ingested) into the datastore,
    /// adding their files to `open`; on failure `open` holds what this
    /// call put in too.
    fn transfer_items(
        &self,
        lock: &IngestLock,
        sweep: &LeftoverSweep,
        target: &Target<'_>,
        items: &[Prepared<Resolved>],
        mode: TransferMode,
        open: &mut OpenCommit,
    ) -> Result<Vec<StoredFileInfo>, ButlerError> {
        // One after another: creating names in one directory from two
        // threads contends for the directory's lock in the kernel
        // (measured: slower than one thread).
        let mut stored = Vec::with_capacity(items.len());
        for p in items {
            let source = p.source.as_ref().map_err(|e| {
                ButlerError::Datastore(DatastoreError::BadIngestSource {
                    source_path: p.item.path.clone(),
                    dataset: p.dataset_ref.to_string(),
                    reason: e.to_string(),
                })
            })?;
            // No expected checksum: whatever a killed run left at the
            // destination is replaced (nothing registered refers to it).
            let (info, _) = self.datastore.ingest_expected(
                lock,
                sweep,
                &source.source(),
                &p.dataset_ref,
                &target.dataset_type.storage_class,
                mode,
                None,
                false,
            )?;
            if !is_direct_path(&info.path) {
                open.files.push(info.path.clone());
            }
            stored.push(info);
            kill_point(fault::INGEST_TRANSFERRED);
        }
        Ok(stored)
    }

    /// Commits the open transaction (a move fsyncs the directories of its
    /// new names first), then, for a move, removes the sources it made
    /// registered and those of the already-ingested items met since.
    /// Returns how many datasets it committed.
    fn commit_ingested(
        &mut self,
        open: &mut OpenCommit,
        mode: TransferMode,
        first_commit: &mut bool,
        not_removed: &mut Vec<(PathBuf, String)>,
    ) -> Result<usize, ButlerError> {
        if open.rows > 0 {
            if mode == TransferMode::Move {
                // The new names must be durable before any source goes.
                self.datastore
                    .sync_directories(open.files.iter().map(String::as_str))?;
            }
            if std::mem::take(first_commit) {
                kill_point(fault::INGEST_BEFORE_COMMIT);
            }
            self.registry.commit_open()?;
            kill_point(fault::INGEST_COMMITTED);
        }
        let committed = std::mem::take(&mut open.rows);
        open.files.clear();
        for source in open.sources.drain(..) {
            match fs::remove_file(&source) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => not_removed.push((source, e.to_string())),
            }
            kill_point(fault::INGEST_SOURCE_REMOVED);
        }
        Ok(committed)
    }

    fn remove_transferred(&self, paths: &[String]) {
        for path in paths {
            if let Err(e) = self.datastore.remove(path) {
                tracing::warn!("could not remove {path} after a failed ingest: {e}");
            }
        }
    }
}

/// Whether two paths name one file (device and inode, symlinks followed).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quanta_core::DataIdValue;

    fn data_id(pairs: &[(&str, DataIdValue)]) -> DataId {
        let mut d = DataId::empty();
        for (k, v) in pairs {
            d.insert(k, v.clone());
        }
        d
    }

    /// The UUIDs of datasets ingested by earlier versions: a rerun of their
    /// ingest must find them (the key was built as a `serde_json::Value`).
    #[test]
    fn ingest_ids_hash_the_key_earlier_versions_hashed() {
        let earlier = |dataset_type: &str, run: &str, data_id: &DataId| {
            let key = serde_json::Value::from(vec![
                dataset_type.to_string(),
                run.to_string(),
                data_id.to_json(),
            ])
            .to_string();
            let mut hasher = blake3::Hasher::new_derive_key("quanta 2026 ingest dataset ID");
            hasher.update(key.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
            uuid::Builder::from_custom_bytes(bytes).into_uuid()
        };
        let data_ids = [
            data_id(&[("instrument", "Cam".into()), ("detector", 1.into())]),
            data_id(&[
                ("instrument", "a\"b\\c\n\u{1}é漢".into()),
                ("exposure", (-7).into()),
            ]),
            data_id(&[]),
        ];
        for d in &data_ids {
            for (dataset_type, run) in [("raw", "Cam/raw"), ("t\"y", "r\\u\tn")] {
                assert_eq!(
                    ingest_dataset_id(dataset_type, run, d),
                    earlier(dataset_type, run, d),
                    "{dataset_type} {run} {d}"
                );
            }
        }
    }

    #[test]
    fn ingest_ids_are_stable_and_tell_apart_what_a_joined_text_would_not() {
        let a = data_id(&[("instrument", "Cam".into()), ("detector", 1.into())]);
        let id = ingest_dataset_id("raw", "Cam/raw", &a);
        assert_eq!(id, ingest_dataset_id("raw", "Cam/raw", &a.clone()));
        assert_eq!(id.get_version_num(), 8);
        assert_ne!(id, ingest_dataset_id("raw", "Cam/raw2", &a));
        assert_ne!(id, ingest_dataset_id("bias", "Cam/raw", &a));
        // Values holding the separators of `k=v,k=v` text.
        let b = data_id(&[("instrument", "Cam,detector=1".into())]);
        let c = data_id(&[("instrument", "Cam".into()), ("detector", "1".into())]);
        assert_ne!(
            ingest_dataset_id("raw", "r", &b),
            ingest_dataset_id("raw", "r", &c)
        );
        assert_ne!(
            ingest_dataset_id("raw", "r,x", &a),
            ingest_dataset_id("raw,r", "x", &a)
        );
    }
}
