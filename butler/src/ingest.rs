//! Ingest of existing files into a RUN, by a protocol that never destroys
//! the only copy of a file and that ends where an uninterrupted run would
//! have when rerun after a crash at any point (see [`Butler::ingest`]).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use quanta_core::fault::{self, kill_point};
use quanta_core::{CollectionType, DataId, DatasetRef, Uuid};
use quanta_datastore::{
    hash_file, is_direct_path, DatastoreError, IngestLock, LeftoverSweep, StoredFileInfo,
    TransferMode,
};
use quanta_registry::{FoundDataset, NewDataset, OnConflict};

use crate::butler::{to_info, to_record, Butler};
use crate::error::ButlerError;
use crate::repo_guard::RepoGuard;
use crate::sources::{CanonicalDirs, Resolved};

/// One file to ingest and the data ID it holds.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub path: PathBuf,
    pub data_id: DataId,
}

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
    pub ingested: Vec<DatasetRef>,
    /// Items already registered in the RUN with a file equal to the source
    /// (by an earlier run of the same ingest, perhaps killed): skipped.
    pub already_ingested: Vec<DatasetRef>,
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
}

/// An item to transfer and register.
struct NewItem<'a> {
    item: &'a IngestItem,
    /// The source with symlinks resolved, checked to be outside the repo.
    source: Resolved,
    dataset_ref: DatasetRef,
}

/// An item whose dataset is already registered with the same file.
struct AlreadyIngested<'a> {
    item: &'a IngestItem,
    dataset_ref: DatasetRef,
    /// False after a move whose source removal already happened.
    source_present: bool,
}

struct IngestPlan<'a> {
    storage_class: String,
    new: Vec<NewItem<'a>>,
    already: Vec<AlreadyIngested<'a>>,
}

impl Butler {
    /// Ingests existing files as datasets of one type into a RUN.
    ///
    /// The protocol (also in ARCHITECTURE.md, "Invariants"):
    /// 1. Under the datastore's ingest lock, everything is checked before
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
    /// 2. The other items are transferred into the datastore without
    ///    touching their sources
    ///    ([`quanta_datastore::Datastore::ingest_expected`]: a move is a
    ///    hard link or a fsynced copy; a move fsyncs the directories too;
    ///    `direct` makes nothing and records the canonical source, which
    ///    no removal ever deletes). A file already at a destination is not
    ///    registered (step 1), so nothing refers to it: it is what a killed
    ///    ingest left, and is replaced.
    /// 3. The datasets are registered, `commit_every` per transaction
    ///    (all in one unless there are more). If a transfer fails, only the
    ///    files put into the datastore are removed; if a registration
    ///    fails, only the files of the datasets not registered; sources
    ///    were never touched. Registered datasets have their files: a
    ///    rerun finds them already ingested (step 1).
    /// 4. Move only, after the commit is durable: the sources of the
    ///    registered and of the already-ingested items are removed (a
    ///    source given as a symlink: the link, not its target). A rerun
    ///    after a kill here finds every dataset registered; a source it no
    ///    longer finds counts as moved once its registered file verifies.
    pub fn ingest(
        &mut self,
        run: &str,
        dataset_type: &str,
        items: &[IngestItem],
        options: IngestOptions,
    ) -> Result<IngestSummary, ButlerError> {
        let mode = options.transfer;
        let lock = self.datastore.lock_for_ingest()?;
        let plan = self.plan_ingest(run, dataset_type, items, mode)?;
        let stored = self.transfer_planned(&lock, &plan, mode)?;
        if !stored.is_empty() {
            kill_point(fault::INGEST_BEFORE_COMMIT);
            self.register_transferred(run, dataset_type, &plan, &stored, options)?;
        }
        let sources_not_removed = if mode == TransferMode::Move {
            self.remove_moved_sources(&plan)
        } else {
            Vec::new()
        };
        drop(lock);
        Ok(IngestSummary {
            ingested: plan.new.into_iter().map(|n| n.dataset_ref).collect(),
            already_ingested: plan.already.into_iter().map(|a| a.dataset_ref).collect(),
            sources_not_removed,
        })
    }

    /// Step 3: registers the transferred datasets, `commit_every` per
    /// transaction; on a failure removes the files of the datasets not
    /// registered (those registered stay: a rerun finds them ingested).
    fn register_transferred(
        &mut self,
        run: &str,
        dataset_type: &str,
        plan: &IngestPlan<'_>,
        stored: &[StoredFileInfo],
        options: IngestOptions,
    ) -> Result<(), ButlerError> {
        // A move removes the sources next: its registration must then
        // outlive a power failure, not only a killed process.
        let durable = options.transfer == TransferMode::Move;
        let chunk = options.commit_every.get();
        // Not the registry's bulk writing: its smaller page cache suits
        // merge's appends, but an ingest's datasets have random UUIDs, so
        // every transaction dirties most of the UUID index, which then
        // spilled and was logged again and again (10^7 raws: 40 GB of log
        // writes before it was stopped). Each commit is checkpointed by
        // the writer as usual.
        let mut registered = 0;
        let mut result = self.registry.set_durable_commits(durable);
        if result.is_ok() {
            for (new, files) in plan.new.chunks(chunk).zip(stored.chunks(chunk)) {
                let datasets: Vec<NewDataset> = new
                    .iter()
                    .zip(files)
                    .map(|(n, info)| NewDataset {
                        id: n.dataset_ref.id,
                        data_id: n.dataset_ref.data_id.clone(),
                        stored: Some(to_record(info)),
                    })
                    .collect();
                result = self
                    .registry
                    .insert_datasets(run, dataset_type, &datasets, OnConflict::Fail)
                    .map(|_| ());
                if result.is_err() {
                    break;
                }
                registered += datasets.len();
                kill_point(fault::INGEST_COMMITTED);
            }
        }
        if let Err(e) = self.registry.set_durable_commits(false) {
            // Only later commits stay slower; this one's outcome stands.
            tracing::warn!("could not reset the registry's commit mode: {e}");
        }
        if let Err(e) = result {
            self.remove_transferred(&stored[registered..]);
            if registered > 0 {
                tracing::warn!(
                    "{registered} of {} datasets were registered before the failure; \
                     rerunning the same ingest registers the rest",
                    stored.len()
                );
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Step 1: checks every item and sorts it into new or already ingested;
    /// writes nothing.
    fn plan_ingest<'a>(
        &self,
        run: &str,
        dataset_type: &str,
        items: &'a [IngestItem],
        mode: TransferMode,
    ) -> Result<IngestPlan<'a>, ButlerError> {
        let dt = self.registry.dataset_type_required(dataset_type)?;
        self.registry.collection_of_type(run, CollectionType::Run)?;
        let mut refs = Vec::with_capacity(items.len());
        let mut seen: HashMap<String, &Path> = HashMap::with_capacity(items.len());
        for item in items {
            let data_id = item
                .data_id
                .standardize(&dt.dimensions, self.universe())
                .map_err(|e| ButlerError::Invalid(format!("{}: {e}", item.path.display())))?;
            if let Some(first) = seen.insert(data_id.canonical_key(), &item.path) {
                return Err(ButlerError::DuplicateIngestItem {
                    dataset_type: dataset_type.to_string(),
                    data_id,
                    first: first.to_path_buf(),
                    second: item.path.clone(),
                });
            }
            refs.push(DatasetRef {
                id: ingest_dataset_id(dataset_type, run, &data_id),
                dataset_type: dataset_type.to_string(),
                data_id,
                run: run.to_string(),
            });
        }
        let datastore_root = self.datastore.root().to_path_buf();
        let mut guard = RepoGuard::new(&self.root, &datastore_root)?;
        for r in &refs {
            let dest = self
                .datastore
                .owned_path(&self.datastore.single_path_for(r, &dt.storage_class)?)?;
            guard.add_datastore_dirs(&datastore_root, &dest);
        }
        let in_run = [run.to_string()];
        let mut plan = IngestPlan {
            storage_class: dt.storage_class.clone(),
            new: Vec::new(),
            already: Vec::new(),
        };
        // A fresh RUN (the usual ingest) needs no lookup per item.
        let run_has_some = self.registry.run_has_datasets_of_type(run, dataset_type)?;
        let mut sources = CanonicalDirs::default();
        for (item, dataset_ref) in items.iter().zip(refs) {
            let found = if run_has_some {
                self.registry
                    .find_dataset(dataset_type, &dataset_ref.data_id, &in_run, None)?
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
            match sources.resolve(&item.path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match found {
                    // A move killed while removing sources: this one went.
                    Some(found) if mode == TransferMode::Move => {
                        self.check_already_ingested(&found, item, None, mode)?;
                        plan.already.push(AlreadyIngested {
                            item,
                            dataset_ref: found.dataset_ref,
                            source_present: false,
                        });
                    }
                    _ => return Err(bad_source(e.to_string())),
                },
                Err(e) => return Err(bad_source(e.to_string())),
                Ok(source) if !source.is_file => {
                    return Err(bad_source("not a regular file".into()))
                }
                Ok(source) => {
                    if let Some(reason) = guard.refusal_of(&source.path, Some(source.id)) {
                        return Err(ButlerError::SourceInRepository {
                            source_path: item.path.clone(),
                            reason,
                        });
                    }
                    match found {
                        Some(found) => {
                            self.check_already_ingested(&found, item, Some(&source.path), mode)?;
                            plan.already.push(AlreadyIngested {
                                item,
                                dataset_ref: found.dataset_ref,
                                source_present: true,
                            });
                        }
                        None => plan.new.push(NewItem {
                            item,
                            source,
                            dataset_ref,
                        }),
                    }
                }
            }
        }
        Ok(plan)
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

    /// Step 2: transfers the new items; on failure removes what it put into
    /// the datastore (the sources were not touched).
    fn transfer_planned(
        &self,
        lock: &IngestLock,
        plan: &IngestPlan<'_>,
        mode: TransferMode,
    ) -> Result<Vec<StoredFileInfo>, ButlerError> {
        // One after another: creating names in one directory from two
        // threads contends for the directory's lock in the kernel
        // (measured: slower than one thread).
        let sweep = LeftoverSweep::default();
        let mut stored = Vec::with_capacity(plan.new.len());
        for n in &plan.new {
            // No expected checksum: whatever a killed run left at the
            // destination is replaced (nothing registered refers to it).
            match self.datastore.ingest_expected(
                lock,
                &sweep,
                &n.source.source(),
                &n.dataset_ref,
                &plan.storage_class,
                mode,
                None,
                false,
            ) {
                Ok((info, _)) => {
                    stored.push(info);
                    kill_point(fault::INGEST_TRANSFERRED);
                }
                Err(e) => {
                    self.remove_transferred(&stored);
                    return Err(e.into());
                }
            }
        }
        if mode == TransferMode::Move {
            // The new names must be durable before any source goes.
            if let Err(e) = self
                .datastore
                .sync_directories(stored.iter().map(|s| s.path.as_str()))
            {
                self.remove_transferred(&stored);
                return Err(e.into());
            }
        }
        Ok(stored)
    }

    fn remove_transferred(&self, stored: &[StoredFileInfo]) {
        // A direct file is the source itself: never the datastore's.
        for info in stored.iter().filter(|s| !is_direct_path(&s.path)) {
            if let Err(e) = self.datastore.remove(&info.path) {
                tracing::warn!("could not remove {} after a failed ingest: {e}", info.path);
            }
        }
    }

    /// Step 4 of a move: once the registration is durable (committed with
    /// [`quanta_registry::Registry::set_durable_commits`]), removes the
    /// sources of the registered and the already-ingested items. Returns the
    /// ones that could not be removed.
    fn remove_moved_sources(&self, plan: &IngestPlan<'_>) -> Vec<(PathBuf, String)> {
        let sources: Vec<&Path> = plan
            .new
            .iter()
            .map(|n| n.item.path.as_path())
            .chain(
                plan.already
                    .iter()
                    .filter(|a| a.source_present)
                    .map(|a| a.item.path.as_path()),
            )
            .collect();
        let mut not_removed = Vec::new();
        for source in sources {
            match fs::remove_file(source) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => not_removed.push((source.to_path_buf(), e.to_string())),
            }
            kill_point(fault::INGEST_SOURCE_REMOVED);
        }
        not_removed
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
