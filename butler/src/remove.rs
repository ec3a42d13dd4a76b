//! Removal of datasets, RUNs, collections and tags, crash-safe.
//!
//! # The protocol
//!
//! Whatever removes files goes through three steps (the registry's half is
//! `quanta_registry::removal`):
//!
//! 1. **mark**: one registry transaction records what goes in the trash
//!    (the RUNs being removed with all they own, or single datasets with
//!    `purge` or unstore). Nothing is deleted.
//! 2. **unlink**: every file of the trash is unlinked (files already gone
//!    count as done), then the directories this left empty.
//! 3. **delete**: one registry transaction deletes the trashed rows (an
//!    unstore clears the datastore record instead), the RUNs with their
//!    quanta and places in chains, and empties the trash.
//!
//! Killed before step 1 commits, nothing happened. Killed after, the trash
//! says what is left to do, and [`Butler::finish_removals`] (run by every
//! removal before it returns, and by `repo check --repair`) does steps 2
//! and 3 again from it: unlinking a file twice is harmless and step 3 is
//! one transaction. So a row points at a missing file only while it is in
//! the trash, and no file leaves the datastore while a row that is not in
//! the trash points at it; after a completed command neither is left over.
//!
//! Callers hold the registry's writer lock ([`Butler::lock_writer`]), so no
//! other writer runs between the steps.

use quanta_core::{CollectionType, Uuid};
use quanta_registry::{Binds, RemovalStats};
use serde::Serialize;

use crate::butler::Butler;
use crate::error::ButlerError;

/// What a prune does to the datasets it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneMode {
    /// Remove the file and its datastore record; the dataset stays
    /// registered, without a file.
    Unstore,
    /// Remove the dataset from the registry (every collection) with its
    /// file.
    Purge,
}

/// The datasets a prune or untag acts on: a dataset query as
/// `query-datasets` runs it.
#[derive(Debug, Clone, Copy)]
pub struct DatasetSelection<'a> {
    pub collections: &'a [String],
    /// Every type when empty.
    pub dataset_types: &'a [String],
    pub where_text: &'a str,
    pub binds: &'a Binds,
    /// Every match in every collection, not only the first along the
    /// search path for each type and data ID.
    pub find_all: bool,
}

/// What a removal did (including any interrupted removal it finished).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemovalSummary {
    /// Datasets the selection matched (prune only).
    pub matched: u64,
    /// RUN collections removed.
    pub runs: Vec<String>,
    pub datasets_removed: u64,
    pub datasets_unstored: u64,
    pub quanta_removed: u64,
    pub files_removed: u64,
    /// Files of trashed datasets that were already gone (a killed removal
    /// had unlinked them).
    pub files_already_gone: u64,
    /// Direct files of removed datasets (ingested with `--transfer
    /// direct`): outside the datastore, never removed.
    pub files_left_in_place: u64,
}

impl RemovalSummary {
    fn add(&mut self, files: quanta_datastore::RemoveStats, rows: RemovalStats) {
        self.runs.extend(rows.runs);
        self.datasets_removed += rows.datasets_removed;
        self.datasets_unstored += rows.datasets_unstored;
        self.quanta_removed += rows.quanta_removed;
        self.files_removed += files.removed;
        self.files_already_gone += files.missing;
        self.files_left_in_place += files.left_in_place;
    }

    fn absorb(&mut self, other: RemovalSummary) {
        self.matched += other.matched;
        self.runs.extend(other.runs);
        self.datasets_removed += other.datasets_removed;
        self.datasets_unstored += other.datasets_unstored;
        self.quanta_removed += other.quanta_removed;
        self.files_removed += other.files_removed;
        self.files_already_gone += other.files_already_gone;
        self.files_left_in_place += other.files_left_in_place;
    }
}

impl Butler {
    /// Removes RUN collections with every dataset they own (files, tags,
    /// calibration ranges), their quanta and run provenance. A RUN that a
    /// CHAINED collection names is refused unless `force`, which also
    /// removes it from the chain. Rerun after a kill, it finishes the
    /// removal (see the module documentation).
    pub fn remove_runs(
        &mut self,
        runs: &[String],
        force: bool,
    ) -> Result<RemovalSummary, ButlerError> {
        if runs.is_empty() {
            return Err(ButlerError::Invalid("no RUN to remove".into()));
        }
        self.registry.mark_runs_for_removal(runs, force)?;
        quanta_core::fault::kill_point(quanta_core::fault::REMOVE_MARKED);
        self.finish_removals()
    }

    /// Removes the datasets `selection` finds: their files, and with
    /// [`PruneMode::Purge`] their registry entries too (every collection).
    /// Rerun after a kill, it finishes what the killed run marked, then
    /// finds nothing more to do (a purge) or only datasets without files
    /// (an unstore, which skips those).
    pub fn prune_datasets(
        &mut self,
        selection: &DatasetSelection<'_>,
        mode: PruneMode,
    ) -> Result<RemovalSummary, ButlerError> {
        // An interrupted removal first: its datasets may match again.
        let mut summary = self.finish_removals()?;
        let ids = self.select(selection)?;
        summary.matched = ids.len() as u64;
        let marked = self
            .registry
            .mark_datasets_for_removal(&ids, mode == PruneMode::Purge)?;
        if marked == 0 {
            return Ok(summary);
        }
        quanta_core::fault::kill_point(quanta_core::fault::REMOVE_MARKED);
        summary.absorb(self.finish_removals()?);
        Ok(summary)
    }

    /// Removes a collection: a RUN with its datasets (as
    /// [`Butler::remove_runs`]); a TAGGED, CHAINED or CALIBRATION
    /// collection alone (its datasets stay). One that a CHAINED collection
    /// names is refused unless `force`, which also edits the chain.
    pub fn remove_collection(
        &mut self,
        name: &str,
        force: bool,
    ) -> Result<(CollectionType, RemovalSummary), ButlerError> {
        let record = self.registry.collection(name)?;
        if record.collection_type == CollectionType::Run {
            let summary = self.remove_runs(&[name.to_string()], force)?;
            return Ok((CollectionType::Run, summary));
        }
        let kind = self.registry.remove_collection(name, force)?;
        Ok((kind, RemovalSummary::default()))
    }

    /// Removes the datasets `selection` finds in TAGGED collection
    /// `tagged` from it (the datasets stay); returns how many. The
    /// selection's collections are ignored: it searches `tagged`.
    pub fn untag(
        &mut self,
        tagged: &str,
        selection: &DatasetSelection<'_>,
    ) -> Result<usize, ButlerError> {
        self.registry
            .collection_of_type(tagged, CollectionType::Tagged)?;
        let collections = [tagged.to_string()];
        let ids = self.select(&DatasetSelection {
            collections: &collections,
            find_all: true,
            ..*selection
        })?;
        Ok(self.registry.disassociate(tagged, &ids)?)
    }

    /// Steps 2 and 3 of the protocol for whatever the trash holds (an
    /// interrupted removal's, or the caller's just marked). Nothing to do
    /// is not an error.
    pub fn finish_removals(&mut self) -> Result<RemovalSummary, ButlerError> {
        let mut summary = RemovalSummary::default();
        if self.registry.pending_removals()?.is_empty() {
            return Ok(summary);
        }
        let started = std::time::Instant::now();
        let paths = self.registry.pending_removal_files()?;
        let listed = started.elapsed();
        let files = self.datastore.remove_many(&paths)?;
        let unlinked = started.elapsed();
        let rows = self.registry.complete_removals()?;
        tracing::info!(
            files = paths.len(),
            list_s = listed.as_secs_f64(),
            unlink_s = (unlinked - listed).as_secs_f64(),
            delete_s = (started.elapsed() - unlinked).as_secs_f64(),
            "removal finished"
        );
        summary.add(files, rows);
        Ok(summary)
    }

    /// The distinct UUIDs of the datasets a selection finds.
    fn select(&self, selection: &DatasetSelection<'_>) -> Result<Vec<Uuid>, ButlerError> {
        let found = self.registry.query_datasets(
            selection.dataset_types,
            selection.collections,
            selection.where_text,
            selection.binds,
            !selection.find_all,
        )?;
        let mut ids: Vec<Uuid> = found.iter().map(|f| f.dataset_ref.id).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}
