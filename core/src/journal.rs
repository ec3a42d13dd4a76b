//! Worker journals: one append-only file per worker recording, for each
//! quantum it runs, when it started and how it finished. Written by workers,
//! read by `merge` and `status`.
//!
//! Owns: the record types and the byte format. Must not: interpret records
//! (that is merge's and status's job) or touch SQL.
//!
//! # Format
//!
//! A sequence of records, each `payload length u32 LE | xxh3-64 of the
//! payload u64 LE | postcard payload`. The first record's payload is the
//! journal magic, format version and a [`JournalHeader`]; every later one is
//! a [`JournalRecord`].
//!
//! A record is written with one `write` call on a file opened for append, so
//! a killed worker leaves at most one torn record, at the end. Readers
//! ignore a torn or damaged tail with a warning. If damage is followed by
//! valid records (a disk or copy fault, not a kill), reading still stops at
//! the damage, with a warning saying valid records follow: after damage the
//! reader cannot know that a checksum-valid run of bytes is a record the
//! worker wrote rather than the inside of a damaged one, and a true prefix
//! of what the worker wrote is the only result merge can rely on — quanta
//! whose records are lost (after damage, or dropped whole, which no reader
//! can see) are simply not done and get run again: the files their lost
//! attempts wrote are moved aside by the limited registry's overwrite rule
//! (`quanta-limited-registry`), so such a quantum never stays failed.
//! [`JournalWriter::open_append`] truncates a torn tail before appending,
//! but refuses to append after mid-file damage, which would hide it.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// The journal format version this code writes and reads.
pub const JOURNAL_FORMAT_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"QJOURNL\0";
const RECORD_HEADER_LEN: usize = 12;
/// The largest record payload accepted: bounds what a corrupt length can
/// make a reader consider, and keeps log tails sane.
pub const MAX_RECORD_LEN: u32 = 64 << 20;

/// Who wrote a journal, for which bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHeader {
    pub bundle_id: Uuid,
    pub worker: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339 UTC.
    pub started_at: String,
}

/// How a quantum ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuantumStatus {
    Succeeded,
    Failed,
    TimedOut,
    OutOfMemory,
    /// An upstream quantum failed, so this one was never attempted.
    Blocked,
}

/// A dataset file a quantum wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenOutput {
    pub dataset_id: Uuid,
    /// Relative to the datastore root.
    pub path: String,
    pub size: u64,
    pub checksum: String,
}

/// One journal entry after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalRecord {
    Started {
        /// Index in the bundle.
        quantum: u32,
        quantum_id: Uuid,
        attempt: u32,
        host: String,
        pid: u32,
        /// RFC 3339 UTC.
        time: String,
        /// The batch system's job, e.g. a Slurm job id and array index.
        batch_job: Option<String>,
    },
    Finished {
        quantum: u32,
        quantum_id: Uuid,
        attempt: u32,
        status: QuantumStatus,
        outputs: Vec<WrittenOutput>,
        inputs_used: Vec<Uuid>,
        started: String,
        finished: String,
        wall_seconds: f64,
        cpu_seconds: f64,
        peak_rss_bytes: u64,
        exit_code: Option<i32>,
        error: Option<String>,
        log_tail: Vec<String>,
    },
}

impl JournalRecord {
    /// The quantum's index in the bundle.
    pub fn quantum(&self) -> u32 {
        match self {
            JournalRecord::Started { quantum, .. } | JournalRecord::Finished { quantum, .. } => {
                *quantum
            }
        }
    }

    pub fn quantum_id(&self) -> Uuid {
        match self {
            JournalRecord::Started { quantum_id, .. }
            | JournalRecord::Finished { quantum_id, .. } => *quantum_id,
        }
    }

    pub fn attempt(&self) -> u32 {
        match self {
            JournalRecord::Started { attempt, .. } | JournalRecord::Finished { attempt, .. } => {
                *attempt
            }
        }
    }
}

/// What [`read_journal`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalContents {
    pub header: JournalHeader,
    pub records: Vec<JournalRecord>,
    /// Set when the end of the file was not a whole valid record: the text
    /// says where and why, for the caller to log.
    pub torn_tail: Option<String>,
}

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("journal {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a quanta journal ({reason})")]
    NotAJournal { path: PathBuf, reason: String },
    #[error("journal {path} has format version {found}; this quanta reads version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("journal {path} already exists; resume it with open_append instead")]
    AlreadyExists { path: PathBuf },
    #[error("journal {path} is damaged at byte {offset} ({detail}) and valid records follow; refusing to append after the damage — move the file aside")]
    DamagedMiddle {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("journal {path}: a record of {len} bytes is over the limit of {MAX_RECORD_LEN}")]
    RecordTooLarge { path: PathBuf, len: usize },
    #[error("journal {path}: encoding a record: {detail}")]
    Encode { path: PathBuf, detail: String },
    #[error("journal {path}: an earlier append failed and the file could not be restored; it is no longer writable through this writer")]
    Poisoned { path: PathBuf },
    #[error("journal {path}: the record at byte {offset} is not the one read there before ({detail}); was the journal replaced while this command ran? Run it again")]
    Changed {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
}

#[derive(Serialize, Deserialize)]
struct HeaderPayload<'a> {
    magic: [u8; 8],
    format_version: u32,
    header: Cow<'a, JournalHeader>,
}

/// The leading fields of [`HeaderPayload`], stable across versions.
#[derive(Deserialize)]
struct HeaderPrefix {
    magic: [u8; 8],
    format_version: u32,
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crate::hash::xxh3_64(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// Why the bytes at some offset are not a whole valid record.
fn record_at(bytes: &[u8], off: usize) -> Result<(&[u8], usize), String> {
    let rest = &bytes[off..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err(format!(
            "a partial record header ({} of {RECORD_HEADER_LEN} bytes)",
            rest.len()
        ));
    }
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&rest[..4]);
    let len = u32::from_le_bytes(len4);
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(format!("an impossible record length {len}"));
    }
    let mut sum8 = [0u8; 8];
    sum8.copy_from_slice(&rest[4..12]);
    let end = RECORD_HEADER_LEN + len as usize;
    if rest.len() < end {
        return Err(format!(
            "a partial record ({} of {len} payload bytes)",
            rest.len() - RECORD_HEADER_LEN
        ));
    }
    let payload = &rest[RECORD_HEADER_LEN..end];
    if crate::hash::xxh3_64(payload) != u64::from_le_bytes(sum8) {
        return Err("a record checksum mismatch".into());
    }
    Ok((payload, off + end))
}

fn decode_record(payload: &[u8]) -> Result<JournalRecord, String> {
    match postcard::take_from_bytes::<JournalRecord>(payload) {
        Ok((r, [])) => Ok(r),
        Ok((_, rest)) => Err(format!("{} unexpected bytes after a record", rest.len())),
        Err(e) => Err(format!("an undecodable record ({e})")),
    }
}

/// The journal header in the first record's payload.
fn decode_header(path: &Path, payload: &[u8]) -> Result<JournalHeader, JournalError> {
    let not_journal = |reason: &str| JournalError::NotAJournal {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    // Magic and version first, so a newer journal is reported as such even
    // if its header no longer decodes as this version's.
    let prefix: HeaderPrefix = postcard::take_from_bytes(payload)
        .map(|(p, _)| p)
        .map_err(|_| not_journal("the first record is not a journal header"))?;
    if prefix.magic != MAGIC {
        return Err(not_journal("the first record lacks the journal magic"));
    }
    if prefix.format_version != JOURNAL_FORMAT_VERSION {
        return Err(JournalError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: prefix.format_version,
            supported: JOURNAL_FORMAT_VERSION,
        });
    }
    match postcard::take_from_bytes::<HeaderPayload>(payload) {
        Ok((h, [])) => Ok(h.header.into_owned()),
        Ok(_) | Err(_) => Err(not_journal("the journal header does not decode")),
    }
}

/// The offset of the first whole, decodable record in `rest` after its
/// first byte: whether damage at the start of `rest` is followed by
/// records.
fn first_valid_record(rest: &[u8]) -> Option<usize> {
    (1..rest.len()).find(|&o| record_at(rest, o).is_ok_and(|(p, _)| decode_record(p).is_ok()))
}

/// Where reading stopped before the end of a journal, and why.
struct Damage {
    offset: usize,
    detail: String,
    /// Offset of the first valid record after the damage, if any.
    valid_after: Option<usize>,
    /// The length of the whole file, read to the end to look for
    /// `valid_after`.
    file_len: usize,
}

/// How much of a journal [`JournalReader`] holds at a time; a larger record
/// grows the buffer to fit it.
const READ_BUFFER_LEN: usize = 1 << 20;

enum ReadState {
    Reading,
    /// Every record up to the end of the file was whole and valid.
    End,
    Damaged(Damage),
}

/// The bytes of a journal file behind a bounded buffer.
struct Source {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// `buf[start..end]` is read but not yet consumed.
    start: usize,
    end: usize,
    /// File offset of `buf[start]`: after the last whole valid record.
    offset: usize,
    eof: bool,
}

impl Source {
    fn not_journal(&self, reason: String) -> JournalError {
        JournalError::NotAJournal {
            path: self.path.clone(),
            reason,
        }
    }

    fn io_error(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            what: "reading".into(),
            source,
        }
    }

    /// Makes at least `want` unconsumed bytes available, unless the file
    /// ends first.
    fn fill(&mut self, want: usize) -> Result<(), JournalError> {
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.end < want {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    /// Whether the file ends at the current offset.
    fn at_end(&mut self) -> Result<bool, JournalError> {
        self.fill(1)?;
        Ok(self.end == self.start)
    }

    /// The length of the whole valid record at the current offset (its
    /// payload is [`Source::payload`]), or why there is none. [`record_at`]
    /// sees the rest of the file whenever a record is not whole in the
    /// buffer, so its verdicts and messages are those of a whole-file read.
    fn next_frame(&mut self) -> Result<Result<usize, String>, JournalError> {
        self.fill(RECORD_HEADER_LEN)?;
        let avail = &self.buf[self.start..self.end];
        if avail.len() >= RECORD_HEADER_LEN {
            let mut len4 = [0u8; 4];
            len4.copy_from_slice(&avail[..4]);
            let len = u32::from_le_bytes(len4);
            if len != 0 && len <= MAX_RECORD_LEN {
                self.fill(RECORD_HEADER_LEN + len as usize)?;
            }
        }
        Ok(record_at(&self.buf[self.start..self.end], 0).map(|(_, next)| next))
    }

    fn payload(&self, len: usize) -> &[u8] {
        &self.buf[self.start + RECORD_HEADER_LEN..self.start + len]
    }

    fn consume(&mut self, len: usize) {
        self.start += len;
        self.offset += len;
    }

    fn read_header(&mut self) -> Result<JournalHeader, JournalError> {
        if self.at_end()? {
            return Err(self.not_journal("the file is empty".into()));
        }
        let len = self
            .next_frame()?
            .map_err(|d| self.not_journal(format!("first record: {d}")))?;
        let header = decode_header(&self.path, self.payload(len))?;
        self.consume(len);
        Ok(header)
    }

    /// Reads the rest of the file to say whether valid records follow the
    /// damage at the current offset (rare, so holding the rest in memory is
    /// fine).
    fn damage(&mut self, detail: String) -> Result<Damage, JournalError> {
        let mut rest = std::mem::take(&mut self.buf);
        rest.truncate(self.end);
        rest.drain(..self.start);
        if !self.eof {
            self.file
                .read_to_end(&mut rest)
                .map_err(|e| self.io_error(e))?;
            self.eof = true;
        }
        self.start = 0;
        self.end = 0;
        let valid_after = first_valid_record(&rest).map(|o| self.offset + o);
        Ok(Damage {
            offset: self.offset,
            detail,
            valid_after,
            file_len: self.offset + rest.len(),
        })
    }
}

/// Reads a journal record by record from a bounded buffer, so a reader that
/// keeps only some of the records never holds the file or every record at
/// once. Yields exactly the records [`read_journal`] returns, in file order,
/// then reports a torn or damaged tail the same way.
pub struct JournalReader {
    source: Source,
    header: JournalHeader,
    state: ReadState,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field("path", &self.source.path)
            .field("offset", &self.source.offset)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl JournalReader {
    /// Opens a journal and reads its header. A file whose first record is
    /// not a valid journal header is an error naming it.
    pub fn open(path: &Path) -> Result<JournalReader, JournalError> {
        Self::open_with_buffer(path, READ_BUFFER_LEN)
    }

    pub(crate) fn open_with_buffer(
        path: &Path,
        buffer_len: usize,
    ) -> Result<JournalReader, JournalError> {
        let file = File::open(path).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            what: "reading".into(),
            source,
        })?;
        let mut source = Source {
            path: path.to_path_buf(),
            file,
            buf: vec![0; buffer_len.max(RECORD_HEADER_LEN)],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        };
        let header = source.read_header()?;
        Ok(JournalReader {
            source,
            header,
            state: ReadState::Reading,
        })
    }

    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.source.path
    }

    /// The next record, or `None` at the end of the valid records (see
    /// [`JournalReader::torn_tail`] for why they ended). Errors only when
    /// the file cannot be read.
    pub fn next_record(&mut self) -> Result<Option<JournalRecord>, JournalError> {
        self.next_with(|_, payload| decode_record(payload))
    }

    /// [`JournalReader::next_record`] for a reader that keeps records by
    /// location: what the fold decides on and where the record is, with
    /// the same checks and the same end.
    pub(crate) fn next_summary(&mut self) -> Result<Option<RecordSummary>, JournalError> {
        self.next_with(summarize)
    }

    /// The next whole valid record's frame, as `decode` makes it of its
    /// location and payload; a record `decode` refuses is damage.
    fn next_with<T>(
        &mut self,
        decode: impl FnOnce(FrameAt, &[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, JournalError> {
        if !matches!(self.state, ReadState::Reading) {
            return Ok(None);
        }
        let src = &mut self.source;
        if src.at_end()? {
            self.state = ReadState::End;
            src.buf = Vec::new();
            return Ok(None);
        }
        let detail = match src.next_frame()? {
            Ok(len) => {
                // A frame is at most a header and MAX_RECORD_LEN bytes.
                let frame = FrameAt {
                    offset: src.offset as u64,
                    len: len as u32,
                };
                match decode(frame, src.payload(len)) {
                    Ok(record) => {
                        src.consume(len);
                        return Ok(Some(record));
                    }
                    Err(detail) => detail,
                }
            }
            Err(detail) => detail,
        };
        self.state = ReadState::Damaged(src.damage(detail)?);
        Ok(None)
    }

    /// The file offset just past the last record read: where the valid
    /// prefix ends once [`JournalReader::next_record`] returned `None`.
    fn valid_end(&self) -> usize {
        self.source.offset
    }

    /// After [`JournalReader::next_record`] returned `None`: why the
    /// records ended before the end of the file, for the caller to log;
    /// `None` if the file ended on a whole record (or reading is not over).
    pub fn torn_tail(&self) -> Option<String> {
        match &self.state {
            ReadState::Damaged(d) => Some(damage_warning(&self.source.path, d)),
            ReadState::Reading | ReadState::End => None,
        }
    }

    /// Consumes the reader, giving its header.
    pub fn into_header(self) -> JournalHeader {
        self.header
    }
}

fn damage_warning(path: &Path, d: &Damage) -> String {
    let ignored = d.file_len - d.offset;
    match d.valid_after {
        None => format!(
            "journal {}: ignored a torn tail at byte {} ({}; {ignored} bytes)",
            path.display(),
            d.offset,
            d.detail
        ),
        Some(v) => format!(
            "journal {}: damaged at byte {} ({}); a valid record follows at byte {v} but reading stops at the damage ({ignored} bytes ignored)",
            path.display(),
            d.offset,
            d.detail
        ),
    }
}

/// Reads a whole journal. A torn or damaged tail is reported in
/// [`JournalContents::torn_tail`], never as an error; a file whose first
/// record is not a valid journal header is an error.
pub fn read_journal(path: &Path) -> Result<JournalContents, JournalError> {
    read_all(JournalReader::open(path)?)
}

fn read_all(mut reader: JournalReader) -> Result<JournalContents, JournalError> {
    let mut records = Vec::new();
    while let Some(r) = reader.next_record()? {
        records.push(r);
    }
    let torn_tail = reader.torn_tail();
    Ok(JournalContents {
        header: reader.into_header(),
        records,
        torn_tail,
    })
}

/// Where a valid record is in its journal file: the first byte of its
/// frame (length, checksum, payload) and the frame's length, enough to
/// read it back with one read ([`FrameWindow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameAt {
    pub offset: u64,
    pub len: u32,
}

/// What the journal fold decides on, read from a record without building
/// its strings and lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordSummary {
    pub frame: FrameAt,
    pub quantum: u32,
    pub quantum_id: Uuid,
    pub attempt: u32,
    /// The status of a `Finished` record; `None` for `Started`.
    pub finished: Option<QuantumStatus>,
}

impl RecordSummary {
    fn of(frame: FrameAt, record: &JournalRecord) -> RecordSummary {
        RecordSummary {
            frame,
            quantum: record.quantum(),
            quantum_id: record.quantum_id(),
            attempt: record.attempt(),
            finished: match record {
                JournalRecord::Started { .. } => None,
                JournalRecord::Finished { status, .. } => Some(*status),
            },
        }
    }
}

/// [`JournalRecord`] field for field, with strings borrowed from the
/// payload and lists walked but not kept, so checking that a record decodes
/// allocates nothing. postcard decodes both the same way (same wire types,
/// same UTF-8 and length checks), so a payload is valid for one exactly
/// when it is for the other; a field added to one and not the other leaves
/// bytes over or missing and every record fails to decode, which the tests
/// catch.
#[derive(Deserialize)]
#[allow(dead_code)] // the fields are there to be checked, not read
enum RecordView<'a> {
    Started {
        quantum: u32,
        quantum_id: Uuid,
        attempt: u32,
        host: &'a str,
        pid: u32,
        time: &'a str,
        #[serde(borrow)]
        batch_job: Option<&'a str>,
    },
    Finished {
        quantum: u32,
        quantum_id: Uuid,
        attempt: u32,
        status: QuantumStatus,
        #[serde(borrow)]
        outputs: Skipped<OutputView<'a>>,
        inputs_used: Skipped<Uuid>,
        started: &'a str,
        finished: &'a str,
        wall_seconds: f64,
        cpu_seconds: f64,
        peak_rss_bytes: u64,
        exit_code: Option<i32>,
        #[serde(borrow)]
        error: Option<&'a str>,
        #[serde(borrow)]
        log_tail: Skipped<&'a str>,
    },
}

/// [`WrittenOutput`] borrowed, see [`RecordView`].
#[derive(Deserialize)]
#[allow(dead_code)]
struct OutputView<'a> {
    dataset_id: Uuid,
    path: &'a str,
    size: u64,
    checksum: &'a str,
}

/// A sequence whose elements are decoded (and so checked) one by one and
/// dropped.
struct Skipped<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Skipped<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Walk<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Walk<T> {
            type Value = Skipped<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Skipped<T>, A::Error> {
                while seq.next_element::<T>()?.is_some() {}
                Ok(Skipped(std::marker::PhantomData))
            }
        }
        d.deserialize_seq(Walk(std::marker::PhantomData))
    }
}

/// The summary of a record payload, or why it is not a record (the same
/// verdict and message as [`decode_record`]).
fn summarize(frame: FrameAt, payload: &[u8]) -> Result<RecordSummary, String> {
    let view = match postcard::take_from_bytes::<RecordView>(payload) {
        Ok((view, [])) => view,
        // The full decoder is the reference: its verdict and message stand
        // (and should the view ever disagree, the record is not lost).
        Ok(_) | Err(_) => return decode_record(payload).map(|r| RecordSummary::of(frame, &r)),
    };
    let (quantum, quantum_id, attempt, finished) = match view {
        RecordView::Started {
            quantum,
            quantum_id,
            attempt,
            ..
        } => (quantum, quantum_id, attempt, None),
        RecordView::Finished {
            quantum,
            quantum_id,
            attempt,
            status,
            ..
        } => (quantum, quantum_id, attempt, Some(status)),
    };
    Ok(RecordSummary {
        frame,
        quantum,
        quantum_id,
        attempt,
        finished,
    })
}

/// How much [`FrameWindow`] reads past a record when records are asked for
/// in file order.
const READ_AHEAD_LEN: usize = 256 << 10;

/// One journal file opened to read back records an earlier scan found, by
/// location. Records asked for in about the order they were written (a
/// merge walks quanta in bundle order, and a worker ran them in about that
/// order) come from a window read ahead, one read per window; a record far
/// from the last one is read alone. Kept records lie before any torn tail,
/// and a worker only appends or cuts a torn tail, so their bytes do not
/// change under a reader; each is checked again (length, checksum,
/// decoding) all the same.
pub(crate) struct FrameWindow {
    path: Arc<PathBuf>,
    file: File,
    /// Bytes of the file from offset `start`.
    buf: Vec<u8>,
    start: u64,
}

impl FrameWindow {
    pub fn open(path: Arc<PathBuf>) -> Result<FrameWindow, JournalError> {
        let file = File::open(path.as_path()).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            what: "reading".into(),
            source,
        })?;
        Ok(FrameWindow {
            path,
            file,
            buf: Vec::new(),
            start: 0,
        })
    }

    pub fn path(&self) -> &Arc<PathBuf> {
        &self.path
    }

    /// The record whose frame is at `frame`.
    pub fn record(&mut self, frame: FrameAt) -> Result<JournalRecord, JournalError> {
        let path = Arc::clone(&self.path);
        let changed = |detail: String| JournalError::Changed {
            path: path.to_path_buf(),
            offset: frame.offset,
            detail,
        };
        let len = frame.len as usize;
        let window_end = self.start + self.buf.len() as u64;
        let inside = frame.offset >= self.start && frame.offset + len as u64 <= window_end;
        if !inside {
            let ahead =
                frame.offset >= self.start && frame.offset <= window_end + READ_AHEAD_LEN as u64;
            let want = if ahead { len.max(READ_AHEAD_LEN) } else { len };
            self.fill(frame.offset, want)?;
            if self.buf.len() < len {
                return Err(changed(format!(
                    "the file ends {} bytes into its {len}",
                    self.buf.len()
                )));
            }
        }
        let at = (frame.offset - self.start) as usize;
        let (payload, end) = record_at(&self.buf[at..at + len], 0).map_err(changed)?;
        if end != len {
            return Err(changed(format!("a frame of {end} bytes, not {len}")));
        }
        decode_record(payload).map_err(changed)
    }

    /// Reads up to `want` bytes from `offset` into the window (fewer at the
    /// end of the file).
    fn fill(&mut self, offset: u64, want: usize) -> Result<(), JournalError> {
        use std::os::unix::fs::FileExt;
        self.buf.resize(want, 0);
        self.start = offset;
        let mut read = 0;
        while read < want {
            match self
                .file
                .read_at(&mut self.buf[read..], offset + read as u64)
            {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.buf.clear();
                    return Err(JournalError::Io {
                        path: self.path.to_path_buf(),
                        what: "reading".into(),
                        source,
                    });
                }
            }
        }
        self.buf.truncate(read);
        Ok(())
    }
}

/// Appends records to one worker's journal. One writer per file at a time:
/// the format relies on a single appender (each worker has its own file).
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    header: JournalHeader,
    /// Length of the valid content; a failed append is cut back to it.
    end: u64,
    sync: bool,
    poisoned: bool,
    recovered: Option<String>,
}

impl JournalWriter {
    /// Creates a new journal holding only `header`. The file appears
    /// complete or not at all (written beside it, then renamed), so a worker
    /// killed during creation leaves no headerless journal. Refuses to
    /// replace an existing file.
    pub fn create(path: &Path, header: &JournalHeader) -> Result<JournalWriter, JournalError> {
        Self::create_with(path, header, true)
    }

    /// [`JournalWriter::create`] without the two fsyncs (file and
    /// directory). The file still appears complete or not at all to other
    /// processes; only a power failure can lose it. Workers use this when
    /// records are not synced either (the default): a batch job started per
    /// quantum would otherwise spend most of its time in these fsyncs.
    pub fn create_unsynced(
        path: &Path,
        header: &JournalHeader,
    ) -> Result<JournalWriter, JournalError> {
        Self::create_with(path, header, false)
    }

    fn create_with(
        path: &Path,
        header: &JournalHeader,
        durable: bool,
    ) -> Result<JournalWriter, JournalError> {
        let io = |what: &str, source| JournalError::Io {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        };
        if path.exists() {
            return Err(JournalError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        let payload = postcard::to_stdvec(&HeaderPayload {
            magic: MAGIC,
            format_version: JOURNAL_FORMAT_VERSION,
            header: Cow::Borrowed(header),
        })
        .map_err(|e| JournalError::Encode {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let buf = frame(&payload);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| io("creating a temporary file", e))?;
            f.write_all(&buf).map_err(|e| io("writing the header", e))?;
            if durable {
                f.sync_all().map_err(|e| io("syncing the header", e))?;
            }
            std::fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        if let Some(dir) = path
            .parent()
            .filter(|p| durable && !p.as_os_str().is_empty())
        {
            // Best effort: makes the new name durable where supported.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io("opening for append", e))?;
        Ok(JournalWriter {
            path: path.to_path_buf(),
            file,
            header: header.clone(),
            end: buf.len() as u64,
            sync: false,
            poisoned: false,
            recovered: None,
        })
    }

    /// Reopens an existing journal to append to it (a resumed worker). A
    /// torn tail is cut off first (see [`JournalWriter::recovered_tail`]);
    /// damage followed by valid records is refused.
    pub fn open_append(path: &Path) -> Result<JournalWriter, JournalError> {
        let io = |what: &str, source| JournalError::Io {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        };
        // Only the valid prefix matters here, not the records.
        let mut reader = JournalReader::open(path)?;
        while reader.next_record()?.is_some() {}
        let valid_end = reader.valid_end();
        let recovered = reader.torn_tail();
        let JournalReader { header, state, .. } = reader;
        let damage = match state {
            ReadState::Damaged(d) => Some(d),
            ReadState::Reading | ReadState::End => None,
        };
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io("opening for append", e))?;
        if let Some(d) = &damage {
            if d.valid_after.is_some() {
                return Err(JournalError::DamagedMiddle {
                    path: path.to_path_buf(),
                    offset: d.offset as u64,
                    detail: d.detail.clone(),
                });
            }
            file.set_len(valid_end as u64)
                .map_err(|e| io("truncating the torn tail", e))?;
            file.sync_all()
                .map_err(|e| io("syncing after truncating", e))?;
        }
        Ok(JournalWriter {
            path: path.to_path_buf(),
            file,
            header,
            end: valid_end as u64,
            sync: false,
            poisoned: false,
            recovered,
        })
    }

    /// With `sync`, every append is followed by `fdatasync`, so a record
    /// survives a machine crash, not only a killed process.
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The warning for a torn tail that [`JournalWriter::open_append`] cut
    /// off, for the caller to log.
    pub fn recovered_tail(&self) -> Option<&str> {
        self.recovered.as_deref()
    }

    /// Appends one record with a single write. If the write fails, the file
    /// is cut back to its last whole record so later appends stay readable.
    pub fn append(&mut self, rec: &JournalRecord) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned {
                path: self.path.clone(),
            });
        }
        let payload = postcard::to_stdvec(rec).map_err(|e| JournalError::Encode {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        if payload.len() > MAX_RECORD_LEN as usize {
            return Err(JournalError::RecordTooLarge {
                path: self.path.clone(),
                len: payload.len(),
            });
        }
        let buf = frame(&payload);
        let written = self.file.write_all(&buf).and_then(|()| {
            if self.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.end += buf.len() as u64;
                crate::fault::kill_point(crate::fault::JOURNAL_APPENDED);
                Ok(())
            }
            Err(source) => {
                if self.file.set_len(self.end).is_err() {
                    self.poisoned = true;
                }
                Err(JournalError::Io {
                    path: self.path.clone(),
                    what: "appending a record".into(),
                    source,
                })
            }
        }
    }
}

/// Where the journals of a bundle go by default: `<bundle path>.journals/`.
pub fn journal_dir_for(bundle_path: &Path) -> PathBuf {
    let mut s = bundle_path.as_os_str().to_owned();
    s.push(".journals");
    PathBuf::from(s)
}

/// The `*.journal` files in `dir`, sorted; none if `dir` does not exist.
pub fn list_journals(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let io = |source| JournalError::Io {
        path: dir.to_path_buf(),
        what: "listing journals".into(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let p = entry.path();
        let is_journal = p.extension().is_some_and(|e| e == "journal")
            && p.file_stem().is_some_and(|s| !s.is_empty());
        if is_journal && entry.file_type().map_err(io)?.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn header() -> JournalHeader {
        JournalHeader {
            bundle_id: Uuid::from_u128(0x1234),
            worker: "w-007".into(),
            host: "node12".into(),
            pid: 4242,
            started_at: "2024-05-01T12:00:00.000Z".into(),
        }
    }

    fn started(q: u32) -> JournalRecord {
        JournalRecord::Started {
            quantum: q,
            quantum_id: Uuid::from_u128(1000 + u128::from(q)),
            attempt: 1,
            host: "node12".into(),
            pid: 4242,
            time: crate::time::now_rfc3339(),
            batch_job: Some(format!("1234_{q}")),
        }
    }

    fn finished(q: u32, status: QuantumStatus) -> JournalRecord {
        JournalRecord::Finished {
            quantum: q,
            quantum_id: Uuid::from_u128(1000 + u128::from(q)),
            attempt: 1,
            status,
            outputs: vec![WrittenOutput {
                dataset_id: Uuid::from_u128(5000 + u128::from(q)),
                path: format!("run/calexp/{q}.json"),
                size: 1024 + u64::from(q),
                checksum: "ab".repeat(32),
            }],
            inputs_used: vec![Uuid::from_u128(7), Uuid::from_u128(8)],
            started: "2024-05-01T12:00:00.000Z".into(),
            finished: "2024-05-01T12:00:01.500Z".into(),
            wall_seconds: 1.5,
            cpu_seconds: 1.25,
            peak_rss_bytes: 123_456_789,
            exit_code: if status == QuantumStatus::Succeeded {
                Some(0)
            } else {
                Some(3)
            },
            error: (status != QuantumStatus::Succeeded).then(|| "boom".to_string()),
            log_tail: vec!["line 1".into(), "line 2 ✓".into()],
        }
    }

    /// Reads `path` by summaries, as the fold does, reading each record
    /// back from its location and checking its summary against it.
    fn read_scanned(path: &Path) -> Result<JournalContents, JournalError> {
        let mut reader = JournalReader::open(path)?;
        let mut window = FrameWindow::open(Arc::new(path.to_path_buf()))?;
        let mut records = vec![];
        while let Some(summary) = reader.next_summary()? {
            let r = window
                .record(summary.frame)
                .expect("a scanned record reads back");
            assert_eq!(summary, RecordSummary::of(summary.frame, &r));
            records.push(r);
        }
        Ok(JournalContents {
            torn_tail: reader.torn_tail(),
            header: reader.into_header(),
            records,
        })
    }

    /// Reads `path` with the default buffer, with buffers smaller than a
    /// record, so records straddle refills, and whole for a scan; all must
    /// agree, warnings and errors included.
    fn read_checked(path: &Path) -> Result<JournalContents, JournalError> {
        let whole = read_journal(path);
        let others = [1, 5, 13, 40].map(|len| {
            (
                len,
                JournalReader::open_with_buffer(path, len).and_then(read_all),
            )
        });
        let scanned = (0, read_scanned(path));
        for (len, other) in others.iter().chain([&scanned]) {
            match (&whole, other) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "buffer {len}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "buffer {len}"),
                _ => panic!("buffer {len} (0: scan): {whole:?} vs {other:?}"),
            }
        }
        whole
    }

    fn sample(dir: &Path) -> (PathBuf, Vec<JournalRecord>) {
        let path = dir.join("w-007.journal");
        let recs = vec![
            started(0),
            finished(0, QuantumStatus::Succeeded),
            started(1),
            finished(1, QuantumStatus::Failed),
            finished(2, QuantumStatus::Blocked),
        ];
        let mut w = JournalWriter::create(&path, &header()).unwrap();
        for r in &recs {
            w.append(r).unwrap();
        }
        (path, recs)
    }

    #[test]
    fn round_trip_every_record_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recs) = sample(dir.path());
        let c = read_checked(&path).unwrap();
        assert_eq!(c.header, header());
        assert_eq!(c.records, recs);
        assert_eq!(c.torn_tail, None);
        // Creating over an existing journal would lose records.
        assert!(matches!(
            JournalWriter::create(&path, &header()),
            Err(JournalError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn the_scan_reads_every_field_without_falling_back() {
        // Every field populated, lists non-empty: the borrowed view must
        // decode each kind of record on its own, consuming it exactly.
        let mut no_job = started(4);
        if let JournalRecord::Started { batch_job, .. } = &mut no_job {
            *batch_job = None;
        }
        let records = [
            started(3),
            finished(3, QuantumStatus::Failed),
            no_job,
            finished(4, QuantumStatus::Succeeded),
        ];
        for r in records {
            let payload = postcard::to_stdvec(&r).unwrap();
            let (view, rest) = postcard::take_from_bytes::<RecordView>(&payload).unwrap();
            assert!(rest.is_empty(), "{r:?}");
            let summary = match view {
                RecordView::Started {
                    quantum, attempt, ..
                } => (quantum, attempt, None),
                RecordView::Finished {
                    quantum,
                    attempt,
                    status,
                    ..
                } => (quantum, attempt, Some(status)),
            };
            let frame = FrameAt { offset: 7, len: 9 };
            let s = summarize(frame, &payload).unwrap();
            assert_eq!(summary, (s.quantum, s.attempt, s.finished));
            assert_eq!(s, RecordSummary::of(frame, &r));
        }
        // A record cut short is refused with the full decoder's words.
        let payload = postcard::to_stdvec(&finished(5, QuantumStatus::Failed)).unwrap();
        let cut = &payload[..payload.len() - 3];
        let frame = FrameAt { offset: 0, len: 0 };
        assert_eq!(
            summarize(frame, cut).unwrap_err(),
            decode_record(cut).unwrap_err()
        );
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(
            summarize(frame, &longer).unwrap_err(),
            "1 unexpected bytes after a record"
        );
    }

    #[test]
    fn records_read_back_by_location_in_any_order_are_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recs) = sample(dir.path());
        let mut reader = JournalReader::open(&path).unwrap();
        let mut frames = vec![];
        while let Some(summary) = reader.next_summary().unwrap() {
            frames.push(summary.frame);
        }
        assert_eq!(frames.len(), recs.len());
        // Backwards: every record is outside the window read for the last.
        let mut window = FrameWindow::open(Arc::new(path.clone())).unwrap();
        for (frame, r) in frames.iter().zip(&recs).rev() {
            assert_eq!(&window.record(*frame).unwrap(), r);
        }
        // Not where a frame starts, or past the end of the file: refused,
        // saying where.
        let shifted = FrameAt {
            offset: frames[1].offset + 1,
            len: frames[1].len,
        };
        let past_end = FrameAt {
            offset: std::fs::metadata(&path).unwrap().len() + 10,
            len: frames[1].len,
        };
        for frame in [shifted, past_end] {
            match window.record(frame) {
                Err(JournalError::Changed { offset, .. }) => assert_eq!(offset, frame.offset),
                other => panic!("{frame:?}: {other:?}"),
            }
        }
        // A kept record whose bytes changed since the scan.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = frames[frames.len() - 1];
        bytes[(last.offset + u64::from(last.len)) as usize - 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut window = FrameWindow::open(Arc::new(path.clone())).unwrap();
        assert_eq!(window.record(frames[0]).unwrap(), recs[0]);
        let err = window.record(last).unwrap_err().to_string();
        assert!(
            err.contains("checksum") && err.contains(&format!("byte {}", last.offset)),
            "{err}"
        );
    }

    #[test]
    fn truncation_at_every_byte_keeps_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recs) = sample(dir.path());
        let full = std::fs::read(&path).unwrap();
        // Record boundaries, to know how many records a cut keeps.
        let mut ends = vec![];
        let mut off = 0;
        while off < full.len() {
            let (_, next) = record_at(&full, off).unwrap();
            ends.push(next);
            off = next;
        }
        let header_end = ends[0];
        // Cut one file in place, longest first: rewriting a file per case is
        // slow on ext4.
        let cut_file = OpenOptions::new().write(true).open(&path).unwrap();
        for cut in (0..full.len()).rev() {
            cut_file.set_len(cut as u64).unwrap();
            let r = read_checked(&path);
            if cut < header_end {
                assert!(
                    matches!(r, Err(JournalError::NotAJournal { .. })),
                    "cut {cut}: {r:?}"
                );
                continue;
            }
            let c = r.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let whole = ends[1..].iter().filter(|&&e| e <= cut).count();
            assert_eq!(c.records, recs[..whole], "cut {cut}");
            let on_boundary = ends.contains(&cut);
            assert_eq!(
                c.torn_tail.is_some(),
                !on_boundary,
                "cut {cut}: {:?}",
                c.torn_tail
            );
            if let Some(w) = &c.torn_tail {
                assert!(w.contains("torn tail"), "{w}");
            }
        }
    }

    #[test]
    fn flipped_bytes_never_panic_and_keep_a_true_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recs) = sample(dir.path());
        let full = std::fs::read(&path).unwrap();
        let (_, header_end) = record_at(&full, 0).unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        for pos in 0..full.len() {
            f.write_all_at(&[full[pos] ^ 0x40], pos as u64).unwrap();
            let r = read_checked(&path);
            f.write_all_at(&full[pos..=pos], pos as u64).unwrap();
            match r {
                Err(JournalError::NotAJournal { .. }) => assert!(pos < header_end, "pos {pos}"),
                Err(e) => panic!("pos {pos}: unexpected error {e}"),
                Ok(c) => {
                    assert!(pos >= header_end, "pos {pos}: damaged header accepted");
                    assert!(c.records.len() < recs.len(), "pos {pos}: damage unnoticed");
                    assert_eq!(c.records, recs[..c.records.len()], "pos {pos}");
                    assert!(c.torn_tail.is_some(), "pos {pos}");
                }
            }
        }
    }

    #[test]
    fn damage_in_the_middle_is_reported_and_blocks_append() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recs) = sample(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let (_, h) = record_at(&bytes, 0).unwrap();
        let (_, r1) = record_at(&bytes, h).unwrap();
        bytes[r1 + RECORD_HEADER_LEN + 2] ^= 1; // payload of the second record
        std::fs::write(&path, &bytes).unwrap();
        let c = read_checked(&path).unwrap();
        assert_eq!(c.records, recs[..1]);
        let w = c.torn_tail.unwrap();
        assert!(
            w.contains("valid record follows") && w.contains(&format!("byte {r1}")),
            "{w}"
        );
        assert!(matches!(
            JournalWriter::open_append(&path),
            Err(JournalError::DamagedMiddle { .. })
        ));
    }

    #[test]
    fn resume_truncates_a_torn_tail_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut recs) = sample(dir.path());
        // A worker killed mid-record leaves part of one.
        let mut torn = frame(&postcard::to_stdvec(&started(9)).unwrap());
        torn.truncate(torn.len() / 2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn).unwrap();
        drop(f);
        assert!(read_journal(&path).unwrap().torn_tail.is_some());

        let mut w = JournalWriter::open_append(&path).unwrap().with_sync(true);
        assert!(w.recovered_tail().unwrap().contains("torn tail"));
        assert_eq!(w.header(), &header());
        for r in [started(5), finished(5, QuantumStatus::TimedOut)] {
            w.append(&r).unwrap();
            recs.push(r);
        }
        drop(w);
        // A third writer with nothing to recover.
        let mut w = JournalWriter::open_append(&path).unwrap();
        assert_eq!(w.recovered_tail(), None);
        let r = finished(6, QuantumStatus::OutOfMemory);
        w.append(&r).unwrap();
        recs.push(r);

        let c = read_journal(&path).unwrap();
        assert_eq!(c.records, recs);
        assert_eq!(c.torn_tail, None);
    }

    #[test]
    fn the_reader_streams_records_and_reports_the_tail_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recs) = sample(dir.path());
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0]).unwrap();
        drop(f);
        let mut r = JournalReader::open_with_buffer(&path, 16).unwrap();
        assert_eq!(r.header(), &header());
        let mut got = vec![];
        while let Some(rec) = r.next_record().unwrap() {
            // Nothing to report before the end is reached.
            assert_eq!(r.torn_tail(), None);
            got.push(rec);
        }
        assert_eq!(got, recs);
        let w = r.torn_tail().unwrap();
        assert!(w.contains("partial record header (3 of 12 bytes)"), "{w}");
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(
            got.iter()
                .map(|r| (r.quantum(), r.attempt()))
                .collect::<Vec<_>>(),
            vec![(0, 1), (0, 1), (1, 1), (1, 1), (2, 1)]
        );
        assert_eq!(got[3].quantum_id(), Uuid::from_u128(1001));
    }

    #[test]
    fn not_a_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.journal");
        for content in [
            &b""[..],
            b"hello world, this is not a journal",
            &frame(b"not a header"),
        ] {
            std::fs::write(&p, content).unwrap();
            let e = read_checked(&p).unwrap_err();
            assert!(matches!(e, JournalError::NotAJournal { .. }), "{e}");
            assert!(e.to_string().contains("x.journal"), "{e}");
            assert!(JournalWriter::open_append(&p).is_err());
        }
        assert!(matches!(
            read_journal(&dir.path().join("missing.journal")),
            Err(JournalError::Io { .. })
        ));
    }

    #[test]
    fn newer_versions_are_named() {
        #[derive(Serialize)]
        struct Future {
            magic: [u8; 8],
            format_version: u32,
            something_else: String,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("future.journal");
        let payload = postcard::to_stdvec(&Future {
            magic: MAGIC,
            format_version: 7,
            something_else: "x".into(),
        })
        .unwrap();
        std::fs::write(&p, frame(&payload)).unwrap();
        let e = read_checked(&p).unwrap_err();
        assert!(
            matches!(e, JournalError::UnsupportedVersion { found: 7, .. }),
            "{e}"
        );
    }

    #[test]
    fn journal_dir_and_listing() {
        assert_eq!(
            journal_dir_for(Path::new("/a/b/run.qb")),
            PathBuf::from("/a/b/run.qb.journals")
        );
        let dir = tempfile::tempdir().unwrap();
        let jd = journal_dir_for(&dir.path().join("run.qb"));
        assert!(list_journals(&jd).unwrap().is_empty());
        std::fs::create_dir(&jd).unwrap();
        for name in ["w2.journal", "w1.journal", "notes.txt", "w3.journal.tmp-1"] {
            std::fs::write(jd.join(name), b"").unwrap();
        }
        std::fs::create_dir(jd.join("d.journal")).unwrap();
        assert_eq!(
            list_journals(&jd).unwrap(),
            vec![jd.join("w1.journal"), jd.join("w2.journal")]
        );
    }
}
