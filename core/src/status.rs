//! Folding the journals of a bundle into one state per quantum: what resume
//! skips, what `quanta status` shows and what merge registers. No database:
//! this reads the bundle's journals only.
//!
//! Rules, applied per quantum index:
//! - any `Finished { status: Succeeded }` record makes the quantum
//!   succeeded (the first such record, in journal file order, is the one
//!   reported; a second success can only come from a rerun and wrote the
//!   same predicted paths);
//! - otherwise the `Finished` record with the highest attempt decides
//!   (failed, timed out, out of memory, blocked);
//! - a `Started` record whose attempt is newer than every `Finished` record
//!   makes the quantum running (or crashed: a journal cannot tell a live
//!   worker from a killed one; a rerun treats it as not done);
//! - no record at all: pending.
//!
//! The fold reads journals in parallel, each into its own partial fold, then
//! combines the partials in journal file order. Combining is exact: per
//! quantum the rules above keep the latest start of the highest attempt and
//! the first success (else the latest finish of the highest attempt), which
//! is the same whether the records are applied one by one or journal by
//! journal, so the result never depends on thread timing.
//!
//! Memory: each journal is read once through a bounded buffer, and a
//! quantum keeps only where its deciding `Finished` and latest `Started`
//! records are (journal, offset, length) and the few facts the rules need
//! (attempts, status), so the fold costs a few tens of bytes per quantum
//! whatever the journals' size. The fold reads of a record only those
//! facts; [`JournalRecords`] reads a whole record back from its journal
//! when asked.

use std::collections::BTreeMap;
use std::ops::Index;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::journal::{
    list_journals, FrameAt, FrameWindow, JournalError, JournalReader, JournalRecord, QuantumStatus,
};

/// The state of one quantum according to the journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantumState {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    OutOfMemory,
    Blocked,
}

impl QuantumState {
    pub fn as_str(self) -> &'static str {
        match self {
            QuantumState::Pending => "pending",
            QuantumState::Running => "running",
            QuantumState::Succeeded => "succeeded",
            QuantumState::Failed => "failed",
            QuantumState::TimedOut => "timed_out",
            QuantumState::OutOfMemory => "out_of_memory",
            QuantumState::Blocked => "blocked",
        }
    }

    /// Failed for good in a way that blocks downstream quanta.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            QuantumState::Failed | QuantumState::TimedOut | QuantumState::OutOfMemory
        )
    }
}

impl From<QuantumStatus> for QuantumState {
    fn from(s: QuantumStatus) -> Self {
        match s {
            QuantumStatus::Succeeded => QuantumState::Succeeded,
            QuantumStatus::Failed => QuantumState::Failed,
            QuantumStatus::TimedOut => QuantumState::TimedOut,
            QuantumStatus::OutOfMemory => QuantumState::OutOfMemory,
            QuantumStatus::Blocked => QuantumState::Blocked,
        }
    }
}

/// A record kept by location: the frame `frame` of `journal`, which the
/// fold checked (length, checksum, decoding) before keeping it.
#[derive(Clone, Debug)]
struct RecordAt {
    /// A thin pointer (an `Arc<Path>` is two words): 8 bytes a record.
    journal: Arc<PathBuf>,
    frame: FrameAt,
}

/// The deciding `Finished` record and what the rules read of it.
#[derive(Clone)]
struct Decider {
    at: RecordAt,
    attempt: u32,
    status: QuantumStatus,
}

/// What the journals say about one quantum.
#[derive(Clone)]
pub struct QuantumProgress {
    pub state: QuantumState,
    /// The highest attempt number seen in a `Started` record (the latest
    /// `Started` record's attempt; 0 without one).
    pub attempts: u32,
    /// The quantum UUID the records carry (checked against the bundle by
    /// callers that decode the quantum anyway).
    pub quantum_id: Uuid,
    finished: Option<Decider>,
    started: Option<RecordAt>,
}

impl QuantumProgress {
    /// The journal holding the deciding record, else the latest start.
    pub fn journal(&self) -> &Path {
        match (&self.finished, &self.started) {
            (Some(f), _) => &f.at.journal,
            (None, Some(s)) => &s.journal,
            // Every kept quantum has a record of one kind or the other.
            (None, None) => Path::new(""),
        }
    }

    /// The deciding `Finished` record, if any, read back from its journal
    /// (one read; many quanta are cheaper through one [`JournalRecords`]).
    pub fn finished(&self) -> Result<Option<JournalRecord>, JournalError> {
        JournalRecords::default().finished(self)
    }

    /// The latest `Started` record, if any, read back like
    /// [`QuantumProgress::finished`].
    pub fn started(&self) -> Result<Option<JournalRecord>, JournalError> {
        JournalRecords::default().started(self)
    }

    fn new(quantum_id: Uuid) -> QuantumProgress {
        QuantumProgress {
            state: QuantumState::Pending,
            attempts: 0,
            quantum_id,
            finished: None,
            started: None,
        }
    }
}

/// A record's kind and attempt, as the fold kept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Started(u32),
    Finished(u32),
}

/// How many journals [`JournalRecords`] keeps open: a campaign may have
/// thousands (one per batch job), more than a process may open at once.
const OPEN_JOURNALS: usize = 32;

/// Reads the records the fold kept back from their journals, each checked
/// again (frame, decoding, and the kind and attempt the fold kept). Keeps a few journals open
/// with a window of each, so that reading the records of many quanta in
/// bundle order costs about one read per window rather than one per record.
#[derive(Default)]
pub struct JournalRecords {
    /// Most recently used last.
    open: Vec<FrameWindow>,
}

impl JournalRecords {
    /// The deciding `Finished` record of `progress`, if any.
    pub fn finished(
        &mut self,
        progress: &QuantumProgress,
    ) -> Result<Option<JournalRecord>, JournalError> {
        match &progress.finished {
            Some(f) => self.read(&f.at, Kept::Finished(f.attempt)).map(Some),
            None => Ok(None),
        }
    }

    /// The latest `Started` record of `progress`, if any.
    pub fn started(
        &mut self,
        progress: &QuantumProgress,
    ) -> Result<Option<JournalRecord>, JournalError> {
        match &progress.started {
            // The kept start is the one of the highest attempt.
            Some(at) => self.read(at, Kept::Started(progress.attempts)).map(Some),
            None => Ok(None),
        }
    }

    /// The record at `at`, which must be the kind and attempt the fold
    /// kept there (its quantum UUID is not checked: the records of one
    /// quantum index may disagree on it, which callers report).
    fn read(&mut self, at: &RecordAt, kept: Kept) -> Result<JournalRecord, JournalError> {
        let window = self.window(&at.journal)?;
        let record = window.record(at.frame)?;
        let found = match record {
            JournalRecord::Started { attempt, .. } => Kept::Started(attempt),
            JournalRecord::Finished { attempt, .. } => Kept::Finished(attempt),
        };
        if found != kept {
            return Err(JournalError::Changed {
                path: at.journal.to_path_buf(),
                offset: at.frame.offset,
                detail: format!("{found:?} where {kept:?} was"),
            });
        }
        Ok(record)
    }

    fn window(&mut self, journal: &Arc<PathBuf>) -> Result<&mut FrameWindow, JournalError> {
        let found = self
            .open
            .iter()
            .rposition(|w| Arc::ptr_eq(w.path(), journal) || w.path() == journal);
        match found {
            Some(i) => {
                let window = self.open.remove(i);
                self.open.push(window);
            }
            None => {
                if self.open.len() >= OPEN_JOURNALS {
                    self.open.remove(0);
                }
                self.open.push(FrameWindow::open(Arc::clone(journal))?);
            }
        }
        Ok(self.open.last_mut().expect("a window was just pushed"))
    }
}

/// Equal when every field is, comparing the records themselves, not where
/// they were read (a record that cannot be read back compares as its
/// error's text).
impl PartialEq for QuantumProgress {
    fn eq(&self, other: &Self) -> bool {
        let text = |r: Result<Option<JournalRecord>, JournalError>| r.map_err(|e| e.to_string());
        self.state == other.state
            && self.attempts == other.attempts
            && self.quantum_id == other.quantum_id
            && self.journal() == other.journal()
            && text(self.finished()) == text(other.finished())
            && text(self.started()) == text(other.started())
    }
}

/// Shows the records read back.
impl std::fmt::Debug for QuantumProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantumProgress")
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("quantum_id", &self.quantum_id)
            .field("journal", &self.journal())
            .field("finished", &self.finished())
            .field("started", &self.started())
            .finish()
    }
}

// What a quantum costs (the table adds an 8-byte slot per quantum of the
// bundle); a merge of millions of quanta pays this for each.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<QuantumProgress>() <= 80);

/// Where a quantum's progress lives in [`QuantumTable::chunks`]: chunk + 1
/// in the high half, position in the low half; 0 when it has no records,
/// so the table of a bundle starts as zeroed memory the OS provides lazily.
type Slot = u64;

const ABSENT: Slot = 0;

fn slot(chunk: usize, pos: usize) -> Slot {
    // Chunks hold the quanta of a bundle, whose indices are u32: there are
    // fewer than u32::MAX of them, and `pos` is below BLOCK.
    ((chunk as u64 + 1) << 32) | pos as u64
}

fn unslot(slot: Slot) -> Option<(usize, usize)> {
    let chunk = (slot >> 32) as usize;
    (chunk > 0).then(|| (chunk - 1, (slot & u64::from(u32::MAX)) as usize))
}

/// Entries per block of [`Blocks`]: large enough that allocations are few,
/// small enough that a block is a modest allocation.
const BLOCK: usize = 4096;

/// Progress entries in blocks of [`BLOCK`], so that growing never moves the
/// entries already there (a growing `Vec` of them copies and touches fresh
/// memory at every doubling). Only the first block grows, so a small
/// journal costs little.
#[derive(Debug, Default)]
struct Blocks {
    blocks: Vec<Vec<QuantumProgress>>,
    len: usize,
}

impl Blocks {
    fn push(&mut self, entry: QuantumProgress) {
        match self.blocks.last_mut() {
            Some(last) if last.len() < BLOCK => last.push(entry),
            _ => {
                let mut block = if self.blocks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(BLOCK)
                };
                block.push(entry);
                self.blocks.push(block);
            }
        }
        self.len += 1;
    }

    fn get_mut(&mut self, pos: usize) -> &mut QuantumProgress {
        &mut self.blocks[pos / BLOCK][pos % BLOCK]
    }
}

/// Per-quantum progress by quantum index: a lookup of 8 bytes per quantum
/// of the bundle, and the progress itself only for quanta with records, in
/// the blocks the parallel fold of each journal produced (no per-quantum
/// allocation, no copy when combining). Iterates in index order, like the
/// map it replaces.
#[derive(Debug, Clone, Default)]
pub struct QuantumTable {
    slots: Vec<Slot>,
    chunks: Vec<Vec<QuantumProgress>>,
    len: usize,
}

impl QuantumTable {
    fn with_quanta(n_quanta: usize) -> Self {
        QuantumTable {
            slots: vec![ABSENT; n_quanta],
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn at(&self, slot: Slot) -> Option<&QuantumProgress> {
        let (chunk, pos) = unslot(slot)?;
        self.chunks.get(chunk).and_then(|c| c.get(pos))
    }

    /// The progress of quantum `index`; `None` if it has no records
    /// (pending) or is outside the bundle.
    pub fn get(&self, index: &u32) -> Option<&QuantumProgress> {
        let slot = *self.slots.get(*index as usize)?;
        self.at(slot)
    }

    pub fn contains_key(&self, index: &u32) -> bool {
        self.get(index).is_some()
    }

    /// The number of quanta with records.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Quanta with records and their progress, in index order.
    pub fn iter(&self) -> QuantumTableIter<'_> {
        QuantumTableIter {
            table: self,
            next: 0,
        }
    }

    /// The indices of quanta with records, in order.
    pub fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.iter().map(|(i, _)| i)
    }

    /// The progress of quanta with records, in index order.
    pub fn values(&self) -> impl Iterator<Item = &QuantumProgress> + '_ {
        self.iter().map(|(_, p)| p)
    }

    /// Adds one journal's partial fold (entry `k` is quantum `indices[k]`,
    /// each index once), combining entries of quanta already present, which
    /// come from earlier journals.
    fn absorb(&mut self, entries: Blocks, indices: Vec<u32>) {
        debug_assert_eq!(entries.len, indices.len());
        let seen_before = indices.iter().any(|&i| self.slots[i as usize] != ABSENT);
        if !seen_before {
            // The common case (each quantum run by one worker): the blocks
            // are kept as they are.
            let base = self.chunks.len();
            for (k, &index) in indices.iter().enumerate() {
                self.slots[index as usize] = slot(base + k / BLOCK, k % BLOCK);
            }
            self.len += entries.len;
            self.chunks.extend(entries.blocks);
            return;
        }
        // Reruns: entries of quanta seen before are combined into theirs
        // and the rest kept, in fresh blocks so none is left half empty.
        let mut kept = Blocks::default();
        let entries = entries.blocks.into_iter().flatten();
        for (entry, index) in entries.zip(indices) {
            let at = &mut self.slots[index as usize];
            if *at == ABSENT {
                *at = slot(self.chunks.len() + kept.len / BLOCK, kept.len % BLOCK);
                kept.push(entry);
            } else if let Some((chunk, pos)) = unslot(*at) {
                combine(&mut self.chunks[chunk][pos], entry);
            }
        }
        self.len += kept.len;
        self.chunks.extend(kept.blocks);
    }
}

impl PartialEq for QuantumTable {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Index<&u32> for QuantumTable {
    type Output = QuantumProgress;

    /// # Panics
    /// If quantum `index` has no records, like a map's index.
    fn index(&self, index: &u32) -> &QuantumProgress {
        match self.get(index) {
            Some(p) => p,
            None => panic!("quantum {index} has no journal records"),
        }
    }
}

impl<'a> IntoIterator for &'a QuantumTable {
    type Item = (u32, &'a QuantumProgress);
    type IntoIter = QuantumTableIter<'a>;

    fn into_iter(self) -> QuantumTableIter<'a> {
        self.iter()
    }
}

/// See [`QuantumTable::iter`].
#[derive(Debug, Clone)]
pub struct QuantumTableIter<'a> {
    table: &'a QuantumTable,
    next: usize,
}

impl<'a> Iterator for QuantumTableIter<'a> {
    type Item = (u32, &'a QuantumProgress);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(&slot) = self.table.slots.get(self.next) {
            let index = self.next as u32;
            self.next += 1;
            if let Some(p) = self.table.at(slot) {
                return Some((index, p));
            }
        }
        None
    }
}

/// The fold of every journal of one bundle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CampaignProgress {
    /// By quantum index; quanta without records are absent (pending).
    pub quanta: QuantumTable,
    /// Journals written for another bundle (path, their bundle id): ignored.
    pub foreign_journals: Vec<(PathBuf, Uuid)>,
    /// Records naming a quantum index the bundle does not have.
    pub unknown_quanta: Vec<(PathBuf, u32)>,
    /// Torn tails and other recoverable oddities, for the caller to log.
    pub warnings: Vec<String>,
    /// The journal files read.
    pub journals: Vec<PathBuf>,
}

impl CampaignProgress {
    pub fn state(&self, index: u32) -> QuantumState {
        self.quanta
            .get(&index)
            .map(|q| q.state)
            .unwrap_or(QuantumState::Pending)
    }

    pub fn is_succeeded(&self, index: u32) -> bool {
        self.state(index) == QuantumState::Succeeded
    }

    /// Counts per state over `n_quanta` quanta.
    pub fn counts(&self, n_quanta: usize) -> BTreeMap<QuantumState, usize> {
        let mut counts = BTreeMap::new();
        let known = self.quanta.len();
        for q in self.quanta.values() {
            *counts.entry(q.state).or_insert(0) += 1;
        }
        if n_quanta > known {
            *counts.entry(QuantumState::Pending).or_insert(0) += n_quanta - known;
        }
        counts
    }
}

/// One journal folded on its own.
struct JournalFold {
    path: PathBuf,
    bundle_id: Uuid,
    torn_tail: Option<String>,
    /// Entry `k` is the progress of quantum `indices[k]`, in order of
    /// first appearance.
    entries: Blocks,
    indices: Vec<u32>,
    /// Out-of-range quantum indices, in record order.
    unknown: Vec<u32>,
}

/// How much of a journal the fold holds at a time.
const FOLD_BUFFER_LEN: usize = 4 << 20;

/// Folds one journal. `position` has one entry per quantum of the bundle
/// (an index past its end is unknown) mapping a quantum index to its place
/// in `entries`; it is trusted only where `indices` confirms it, so it needs
/// no clearing between journals.
fn fold_one(
    path: PathBuf,
    bundle_id: Uuid,
    position: &mut [u32],
) -> Result<JournalFold, JournalError> {
    let mut reader = JournalReader::open_with_buffer(&path, FOLD_BUFFER_LEN)?;
    let journal_bundle = reader.header().bundle_id;
    let own = journal_bundle == bundle_id;
    let journal = Arc::new(path.clone());
    let mut entries = Blocks::default();
    let mut indices: Vec<u32> = Vec::new();
    let mut unknown = Vec::new();
    // A foreign journal is still read to the end: its torn tail is reported
    // like any other.
    while let Some(record) = reader.next_summary()? {
        if !own {
            continue;
        }
        let index = record.quantum;
        let Some(place) = position.get_mut(index as usize) else {
            unknown.push(index);
            continue;
        };
        let known = indices.get(*place as usize) == Some(&index);
        if !known {
            *place = indices.len() as u32;
            indices.push(index);
            entries.push(QuantumProgress::new(record.quantum_id));
        }
        let at = || RecordAt {
            journal: Arc::clone(&journal),
            frame: record.frame,
        };
        let entry = entries.get_mut(*place as usize);
        apply(entry, record.attempt, record.finished, at);
    }
    Ok(JournalFold {
        torn_tail: reader.torn_tail(),
        bundle_id: journal_bundle,
        path,
        entries,
        indices,
        unknown,
    })
}

/// Reads every journal in `dir` and folds them for the bundle `bundle_id`
/// with `n_quanta` quanta. A journal that cannot be read at all (not a
/// journal) is an error naming it (the first such in file order); torn
/// tails are warnings.
pub fn fold_journals(
    dir: &Path,
    bundle_id: Uuid,
    n_quanta: usize,
) -> Result<CampaignProgress, JournalError> {
    let paths = list_journals(dir)?;
    // Zeroed scratch is allocated lazily by the OS: a thread touches only
    // the pages of the quanta its journals name.
    let folds: Vec<Result<JournalFold, JournalError>> = paths
        .into_par_iter()
        .map_init(
            || vec![0u32; n_quanta],
            |position, path| fold_one(path, bundle_id, position),
        )
        .collect();
    let mut progress = CampaignProgress {
        quanta: QuantumTable::with_quanta(n_quanta),
        ..CampaignProgress::default()
    };
    for fold in folds {
        let fold = fold?;
        if let Some(warning) = &fold.torn_tail {
            progress
                .warnings
                .push(format!("{}: {warning}", fold.path.display()));
        }
        progress.journals.push(fold.path.clone());
        if fold.bundle_id != bundle_id {
            progress.foreign_journals.push((fold.path, fold.bundle_id));
            continue;
        }
        progress
            .unknown_quanta
            .extend(fold.unknown.iter().map(|&i| (fold.path.clone(), i)));
        progress.quanta.absorb(fold.entries, fold.indices);
    }
    Ok(progress)
}

/// Combines `later`, the fold of a later journal, into `earlier`: the same
/// as applying the later journal's records one by one, because only its
/// deciding records can change the outcome (see the module doc).
fn combine(earlier: &mut QuantumProgress, later: QuantumProgress) {
    let QuantumProgress {
        attempts,
        started,
        finished,
        ..
    } = later;
    if let Some(s) = started {
        // The kept start is the one of the highest attempt.
        apply(earlier, attempts, None, || s);
    }
    if let Some(f) = finished {
        apply(earlier, f.attempt, Some(f.status), || f.at);
    }
}

/// Applies one record to its quantum's progress: a `Finished` record with
/// `status` (a `Started` one without) of `attempt`. `at` gives where the
/// record is, called only if it is kept.
fn apply(
    entry: &mut QuantumProgress,
    attempt: u32,
    finished: Option<QuantumStatus>,
    at: impl FnOnce() -> RecordAt,
) {
    match finished {
        None => {
            // The kept start is the one of the highest attempt, so its
            // attempt is `attempts`.
            let newer = entry.started.is_none() || entry.attempts <= attempt;
            entry.attempts = entry.attempts.max(attempt);
            if newer {
                entry.started = Some(at());
            }
        }
        Some(status) => {
            let already_succeeded = entry.state == QuantumState::Succeeded;
            let decides = match &entry.finished {
                None => true,
                Some(_) if already_succeeded => false,
                Some(_) if status == QuantumStatus::Succeeded => true,
                Some(previous) => previous.attempt <= attempt,
            };
            if decides {
                entry.state = status.into();
                entry.finished = Some(Decider {
                    at: at(),
                    attempt,
                    status,
                });
            }
        }
    }
    // A start newer than the deciding finish means a rerun is under way (or
    // died); success is final whatever follows.
    if entry.state != QuantumState::Succeeded && entry.started.is_some() {
        let start = entry.attempts;
        match &entry.finished {
            Some(f) if start <= f.attempt => entry.state = f.status.into(),
            _ => entry.state = QuantumState::Running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{read_journal, JournalHeader, JournalWriter};
    use std::io::Write;

    fn started(q: u32, attempt: u32) -> JournalRecord {
        JournalRecord::Started {
            quantum: q,
            quantum_id: Uuid::nil(),
            attempt,
            host: "h".into(),
            pid: 1,
            time: "t".into(),
            batch_job: None,
        }
    }

    fn finished(q: u32, attempt: u32, status: QuantumStatus) -> JournalRecord {
        JournalRecord::Finished {
            quantum: q,
            quantum_id: Uuid::nil(),
            attempt,
            status,
            outputs: vec![],
            inputs_used: vec![],
            started: "t".into(),
            finished: "t".into(),
            wall_seconds: 0.0,
            cpu_seconds: 0.0,
            peak_rss_bytes: 0,
            exit_code: None,
            error: None,
            log_tail: vec![],
        }
    }

    fn journal(dir: &Path, name: &str, bundle: Uuid, records: &[JournalRecord]) -> PathBuf {
        let header = JournalHeader {
            bundle_id: bundle,
            worker: name.into(),
            host: "h".into(),
            pid: 1,
            started_at: "t".into(),
        };
        let path = dir.join(format!("{name}.journal"));
        let mut w = JournalWriter::create_unsynced(&path, &header).unwrap();
        for r in records {
            w.append(r).unwrap();
        }
        path
    }

    fn with_id(mut r: JournalRecord, id: Uuid) -> JournalRecord {
        match &mut r {
            JournalRecord::Started { quantum_id, .. }
            | JournalRecord::Finished { quantum_id, .. } => *quantum_id = id,
        }
        r
    }

    /// What the fold must say of one quantum.
    #[derive(Debug, Clone, PartialEq)]
    struct Expected {
        state: QuantumState,
        attempts: u32,
        quantum_id: Uuid,
        finished: Option<JournalRecord>,
        started: Option<JournalRecord>,
        journal: PathBuf,
    }

    #[derive(Debug, PartialEq)]
    struct Reference {
        quanta: BTreeMap<u32, Expected>,
        foreign_journals: Vec<(PathBuf, Uuid)>,
        unknown_quanta: Vec<(PathBuf, u32)>,
        warnings: Vec<String>,
        journals: Vec<PathBuf>,
    }

    /// The rules as they were written before the fold kept records by
    /// location: whole records, applied one at a time.
    fn reference_apply(entry: &mut Expected, record: JournalRecord, journal: &Path) {
        match &record {
            JournalRecord::Started { attempt, .. } => {
                entry.attempts = entry.attempts.max(*attempt);
                let newer = entry
                    .started
                    .as_ref()
                    .is_none_or(|s| s.attempt() <= *attempt);
                if newer {
                    entry.started = Some(record);
                    // The journal is the deciding finish's, else the
                    // latest start's.
                    if entry.finished.is_none() {
                        entry.journal = journal.to_path_buf();
                    }
                }
            }
            JournalRecord::Finished {
                status, attempt, ..
            } => {
                let already_succeeded = entry.state == QuantumState::Succeeded;
                let decides = match &entry.finished {
                    None => true,
                    Some(_) if already_succeeded => false,
                    Some(_) if *status == QuantumStatus::Succeeded => true,
                    Some(previous) => previous.attempt() <= *attempt,
                };
                if decides {
                    entry.state = (*status).into();
                    entry.finished = Some(record);
                    entry.journal = journal.to_path_buf();
                }
            }
        }
        if entry.state != QuantumState::Succeeded {
            let last_start = entry.started.as_ref().map(JournalRecord::attempt);
            let last_finish = entry.finished.as_ref().map(JournalRecord::attempt);
            if let Some(start) = last_start {
                if last_finish.is_none_or(|f| start > f) {
                    entry.state = QuantumState::Running;
                } else if let Some(JournalRecord::Finished { status, .. }) = &entry.finished {
                    entry.state = (*status).into();
                }
            }
        }
    }

    /// The fold as it was before it went parallel and kept records by
    /// location: every record of [`read_journal`] applied in journal order,
    /// one at a time. The fold must say the same, records included.
    fn reference_fold(dir: &Path, bundle_id: Uuid, n_quanta: usize) -> Reference {
        let mut r = Reference {
            quanta: BTreeMap::new(),
            foreign_journals: vec![],
            unknown_quanta: vec![],
            warnings: vec![],
            journals: vec![],
        };
        for path in list_journals(dir).unwrap() {
            let contents = read_journal(&path).unwrap();
            if let Some(warning) = &contents.torn_tail {
                r.warnings.push(format!("{}: {warning}", path.display()));
            }
            r.journals.push(path.clone());
            if contents.header.bundle_id != bundle_id {
                r.foreign_journals.push((path, contents.header.bundle_id));
                continue;
            }
            for record in contents.records {
                let index = record.quantum();
                if index as usize >= n_quanta {
                    r.unknown_quanta.push((path.clone(), index));
                    continue;
                }
                let entry = r.quanta.entry(index).or_insert_with(|| Expected {
                    state: QuantumState::Pending,
                    attempts: 0,
                    quantum_id: record.quantum_id(),
                    finished: None,
                    started: None,
                    journal: path.clone(),
                });
                reference_apply(entry, record, &path);
            }
        }
        r
    }

    /// `got` as a [`Reference`], its records decoded; checks on the way
    /// that lookups agree with iteration.
    fn decoded(got: &CampaignProgress) -> Reference {
        let mut quanta = BTreeMap::new();
        for (i, q) in &got.quanta {
            assert_eq!(
                got.quanta.get(&i).map(|p| p as *const _),
                Some(q as *const _)
            );
            let expected = Expected {
                state: q.state,
                attempts: q.attempts,
                quantum_id: q.quantum_id,
                finished: q.finished().unwrap(),
                started: q.started().unwrap(),
                journal: q.journal().to_path_buf(),
            };
            assert!(quanta.insert(i, expected).is_none(), "quantum {i} twice");
        }
        assert_eq!(quanta.len(), got.quanta.len());
        Reference {
            quanta,
            foreign_journals: got.foreign_journals.clone(),
            unknown_quanta: got.unknown_quanta.clone(),
            warnings: got.warnings.clone(),
            journals: got.journals.clone(),
        }
    }

    fn fold_with_threads(dir: &Path, bundle: Uuid, n: usize, threads: usize) -> CampaignProgress {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| fold_journals(dir, bundle, n))
            .unwrap()
    }

    /// A small deterministic generator (no rand dependency in core).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn fold_applies_the_precedence_rules() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Uuid::now_v7();
        use QuantumStatus::*;
        journal(
            dir.path(),
            "a",
            bundle,
            &[
                started(0, 1),
                finished(0, 1, Failed),
                started(0, 2),
                finished(0, 2, Succeeded),
                started(1, 1),
                finished(1, 1, Failed),
                finished(2, 0, Blocked),
                started(3, 1),
                started(9, 1),
            ],
        );
        // A later worker reran quantum 1 and 2; quantum 0 ran again and failed
        // (cannot undo its success).
        journal(
            dir.path(),
            "b",
            bundle,
            &[
                started(1, 2),
                finished(1, 2, Succeeded),
                started(2, 1),
                started(0, 3),
                finished(0, 3, Failed),
            ],
        );
        journal(dir.path(), "c", Uuid::now_v7(), &[started(4, 1)]);
        let p = fold_journals(dir.path(), bundle, 5).unwrap();
        assert_eq!(decoded(&p), reference_fold(dir.path(), bundle, 5));
        assert_eq!(p.state(0), QuantumState::Succeeded);
        assert_eq!(p.quanta[&0].attempts, 3);
        assert_eq!(p.state(1), QuantumState::Succeeded);
        assert_eq!(p.state(2), QuantumState::Running);
        assert_eq!(p.state(3), QuantumState::Running);
        assert_eq!(p.state(4), QuantumState::Pending);
        assert_eq!(p.foreign_journals.len(), 1);
        assert_eq!(p.unknown_quanta.len(), 1);
        let counts = p.counts(5);
        assert_eq!(counts[&QuantumState::Succeeded], 2);
        assert_eq!(counts[&QuantumState::Running], 2);
        assert_eq!(counts[&QuantumState::Pending], 1);
        // The deciding records and where they are.
        let a = dir.path().join("a.journal");
        let b = dir.path().join("b.journal");
        assert_eq!(
            p.quanta[&0].finished().unwrap(),
            Some(finished(0, 2, Succeeded))
        );
        assert_eq!(p.quanta[&0].journal(), a.as_path());
        assert_eq!(
            p.quanta[&1].finished().unwrap(),
            Some(finished(1, 2, Succeeded))
        );
        assert_eq!(p.quanta[&1].journal(), b.as_path());
        assert_eq!(p.quanta[&2].started().unwrap(), Some(started(2, 1)));
        assert_eq!(
            p.quanta[&2].finished().unwrap(),
            Some(finished(2, 0, Blocked))
        );
        assert_eq!(p.quanta[&3].finished().unwrap(), None);
        assert_eq!(
            p.quanta.keys().collect::<Vec<_>>(),
            vec![0, 1, 2, 3],
            "index order, pending quanta absent"
        );
        assert_eq!(p.quanta.len(), 4);
        assert!(p.quanta.get(&4).is_none() && p.quanta.get(&9).is_none());
        assert_eq!(p.unknown_quanta, vec![(a.clone(), 9)]);
        assert_eq!(p.journals, vec![a, b, dir.path().join("c.journal")]);
    }

    #[test]
    fn failures_and_reruns_across_journals() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Uuid::now_v7();
        use QuantumStatus::*;
        let a = journal(
            dir.path(),
            "a",
            bundle,
            &[
                // 0: failed, then succeeded in b.
                started(0, 1),
                finished(0, 1, Failed),
                // 1: timed out at attempt 2 here; b's older attempt 1
                // out-of-memory does not override it.
                started(1, 2),
                finished(1, 2, TimedOut),
                // 2: a success here stands against b's later failure.
                started(2, 1),
                finished(2, 1, Succeeded),
                // 3: failed here, restarted in b and not finished.
                started(3, 1),
                finished(3, 1, OutOfMemory),
            ],
        );
        let b = journal(
            dir.path(),
            "b",
            bundle,
            &[
                started(0, 2),
                finished(0, 2, Succeeded),
                started(1, 1),
                finished(1, 1, OutOfMemory),
                started(2, 2),
                finished(2, 2, Failed),
                started(3, 2),
            ],
        );
        let p = fold_journals(dir.path(), bundle, 4).unwrap();
        assert_eq!(decoded(&p), reference_fold(dir.path(), bundle, 4));
        let q = |i: u32| &p.quanta[&i];
        assert_eq!(
            (q(0).state, q(0).attempts, q(0).journal()),
            (QuantumState::Succeeded, 2, b.as_path())
        );
        assert_eq!(
            (q(1).state, q(1).attempts, q(1).journal()),
            (QuantumState::TimedOut, 2, a.as_path())
        );
        assert_eq!(q(1).started().unwrap(), Some(started(1, 2)));
        assert_eq!(
            (q(2).state, q(2).attempts, q(2).journal()),
            (QuantumState::Succeeded, 2, a.as_path())
        );
        assert_eq!(q(2).finished().unwrap(), Some(finished(2, 1, Succeeded)));
        assert_eq!(q(3).state, QuantumState::Running);
        // The deciding finish is in a, the latest start in b.
        assert_eq!(q(3).finished().unwrap(), Some(finished(3, 1, OutOfMemory)));
        assert_eq!(q(3).started().unwrap(), Some(started(3, 2)));
        assert_eq!(q(3).journal(), a.as_path());
        assert!(p.warnings.is_empty() && p.foreign_journals.is_empty());
    }

    #[test]
    fn torn_tails_warn_and_keep_the_records_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Uuid::now_v7();
        let a = journal(
            dir.path(),
            "a",
            bundle,
            &[started(0, 1), finished(0, 1, QuantumStatus::Succeeded)],
        );
        // A worker killed while writing quantum 1's finish.
        let c = journal(dir.path(), "c", Uuid::now_v7(), &[started(1, 1)]);
        for path in [&a, &c] {
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        }
        let p = fold_journals(dir.path(), bundle, 2).unwrap();
        assert_eq!(decoded(&p), reference_fold(dir.path(), bundle, 2));
        assert_eq!(p.state(0), QuantumState::Succeeded);
        assert_eq!(p.state(1), QuantumState::Pending);
        // The foreign journal's torn tail is reported too.
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("a.journal") && p.warnings[0].contains("torn tail"));
        assert!(p.warnings[1].contains("c.journal"));
        assert_eq!(p.foreign_journals.len(), 1);
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Uuid::now_v7();
        journal(dir.path(), "a", bundle, &[started(0, 1)]);
        std::fs::write(dir.path().join("b.journal"), b"garbage").unwrap();
        journal(dir.path(), "c", bundle, &[started(1, 1)]);
        let e = fold_journals(dir.path(), bundle, 2).unwrap_err();
        assert!(matches!(e, JournalError::NotAJournal { .. }), "{e}");
        assert!(e.to_string().contains("b.journal"), "{e}");
    }

    #[test]
    fn journals_larger_than_a_block() {
        use QuantumStatus::*;
        let dir = tempfile::tempdir().unwrap();
        let bundle = Uuid::now_v7();
        let n = 3 * BLOCK as u32;
        // a: the first two thirds failed; b: the last two thirds succeeded
        // in reverse order, so b's entries straddle blocks and half of them
        // combine into a's.
        let a: Vec<_> = (0..2 * BLOCK as u32)
            .flat_map(|q| [started(q, 1), finished(q, 1, Failed)])
            .collect();
        let b: Vec<_> = (BLOCK as u32..n)
            .rev()
            .flat_map(|q| [started(q, 2), finished(q, 2, Succeeded)])
            .collect();
        journal(dir.path(), "a", bundle, &a);
        journal(dir.path(), "b", bundle, &b);
        let expected = reference_fold(dir.path(), bundle, n as usize);
        for threads in [1, 2] {
            let p = fold_with_threads(dir.path(), bundle, n as usize, threads);
            assert_eq!(decoded(&p), expected);
            let counts = p.counts(n as usize);
            assert_eq!(counts[&QuantumState::Failed], BLOCK);
            assert_eq!(counts[&QuantumState::Succeeded], 2 * BLOCK);
            assert_eq!(p.quanta.len(), n as usize);
            assert_eq!(
                p.quanta.keys().collect::<Vec<_>>(),
                (0..n).collect::<Vec<_>>()
            );
            let last = &p.quanta[&(n - 1)];
            assert_eq!((last.state, last.attempts), (QuantumState::Succeeded, 2));
            assert!(last.journal().ends_with("b.journal"));
            let mid = &p.quanta[&(BLOCK as u32 + 7)];
            assert_eq!((mid.state, mid.attempts), (QuantumState::Succeeded, 2));
            assert!(mid.journal().ends_with("b.journal"));
            assert_eq!(p.quanta[&3].state, QuantumState::Failed);
        }
    }

    #[test]
    fn the_fold_is_the_same_whatever_the_thread_count() {
        use QuantumStatus::*;
        let statuses = [Succeeded, Failed, TimedOut, OutOfMemory, Blocked];
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let mut rng = Lcg(7);
        for scenario in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let bundle = Uuid::from_u128(99);
            let n_quanta = 1 + rng.below(8) as usize;
            let n_journals = 1 + rng.below(6);
            for j in 0..n_journals {
                let mut records = vec![];
                for _ in 0..rng.below(24) {
                    // Sometimes one past the bundle's quanta: unknown.
                    let q = rng.below(n_quanta as u64 + 1) as u32;
                    let attempt = rng.below(4) as u32;
                    let r = if rng.below(2) == 0 {
                        started(q, attempt)
                    } else {
                        finished(q, attempt, statuses[rng.below(5) as usize])
                    };
                    records.push(with_id(r, ids[rng.below(2) as usize]));
                }
                let owner = if rng.below(8) == 0 {
                    Uuid::from_u128(98)
                } else {
                    bundle
                };
                let path = journal(dir.path(), &format!("w{j}"), owner, &records);
                if rng.below(4) == 0 {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    f.write_all(&[7, 0, 0]).unwrap();
                }
            }
            let expected = reference_fold(dir.path(), bundle, n_quanta);
            let one_thread = fold_with_threads(dir.path(), bundle, n_quanta, 1);
            for threads in [1, 2, 3] {
                let got = fold_with_threads(dir.path(), bundle, n_quanta, threads);
                // Decoded records, deciding journals and all.
                assert_eq!(
                    decoded(&got),
                    expected,
                    "scenario {scenario}, {threads} threads"
                );
                assert_eq!(got, one_thread, "scenario {scenario}, {threads} threads");
                let mut counts = BTreeMap::new();
                for q in expected.quanta.values() {
                    *counts.entry(q.state).or_insert(0) += 1;
                }
                let pending = n_quanta - expected.quanta.len();
                if pending > 0 {
                    counts.insert(QuantumState::Pending, pending);
                }
                assert_eq!(got.counts(n_quanta), counts);
            }
        }
    }

    #[test]
    fn records_are_kept_by_location_and_read_back_from_their_journals() {
        use QuantumStatus::*;
        let dir = tempfile::tempdir().unwrap();
        let bundle = Uuid::now_v7();
        let a = journal(
            dir.path(),
            "a",
            bundle,
            &[started(0, 1), finished(0, 1, Failed), started(1, 1)],
        );
        let b = journal(
            dir.path(),
            "b",
            bundle,
            &[started(0, 2), finished(0, 2, Succeeded)],
        );
        for threads in [1, 2] {
            let p = fold_with_threads(dir.path(), bundle, 2, threads);
            let q0 = &p.quanta[&0];
            let (Some(s), Some(f)) = (&q0.started, &q0.finished) else {
                panic!("{q0:?}");
            };
            // Both of quantum 0's records are b's, one after the other.
            assert_eq!((&*s.journal, &*f.at.journal), (&b, &b));
            assert_eq!(s.frame.offset + u64::from(s.frame.len), f.at.frame.offset);
            let a1 = p.quanta[&1].started.as_ref().unwrap();
            assert_eq!(&*a1.journal, &a);
            assert_eq!(q0.started().unwrap(), Some(started(0, 2)));
            assert_eq!(q0.finished().unwrap(), Some(finished(0, 2, Succeeded)));
        }
        // The fold holds no journal bytes: records are read from the files
        // when asked for, and a file replaced since is noticed, not trusted.
        let p = fold_journals(dir.path(), bundle, 2).unwrap();
        std::fs::remove_file(&b).unwrap();
        journal(dir.path(), "b", bundle, &[started(1, 3), started(0, 3)]);
        match p.quanta[&0].started() {
            Err(JournalError::Changed { path, .. }) => assert_eq!(path, b),
            other => panic!("{other:?}"),
        }
        match p.quanta[&0].finished() {
            Err(JournalError::Changed { path, .. }) => assert_eq!(path, b),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&b).unwrap();
        assert!(matches!(
            p.quanta[&0].finished(),
            Err(JournalError::Io { .. })
        ));
        assert_eq!(p.quanta[&1].started().unwrap(), Some(started(1, 1)));
    }

    #[test]
    fn missing_directory_means_everything_pending() {
        let dir = tempfile::tempdir().unwrap();
        let p = fold_journals(&dir.path().join("none"), Uuid::nil(), 3).unwrap();
        assert_eq!(p.counts(3)[&QuantumState::Pending], 3);
    }
}
