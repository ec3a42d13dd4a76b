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

    fn open_with_buffer(path: &Path, buffer_len: usize) -> Result<JournalReader, JournalError> {
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
            Ok(len) => match decode_record(src.payload(len)) {
                Ok(record) => {
                    src.consume(len);
                    return Ok(Some(record));
                }
                Err(detail) => detail,
            },
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

/// A journal file read whole, for a reader that keeps records by location
/// and decodes the few it needs later (the fold of a bundle's journals):
/// the bytes outlive the scan, unlike [`JournalReader`]'s buffer. Read with
/// `read`, not mapped: a worker may still append to the file or cut a torn
/// tail while it is being read, which must not change bytes already read.
pub(crate) struct WholeJournal {
    pub header: JournalHeader,
    pub bytes: Vec<u8>,
    /// Where the first record after the header starts.
    pub records_start: usize,
}

impl WholeJournal {
    /// Reads the file and its header; records are checked by
    /// [`RecordScan`]. A file whose first record is not a valid journal
    /// header is an error naming it, as with [`JournalReader::open`].
    pub fn read(path: &Path) -> Result<WholeJournal, JournalError> {
        let bytes = read_whole(path).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            what: "reading".into(),
            source,
        })?;
        let not_journal = |reason: String| JournalError::NotAJournal {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            return Err(not_journal("the file is empty".into()));
        }
        let (payload, records_start) =
            record_at(&bytes, 0).map_err(|d| not_journal(format!("first record: {d}")))?;
        let header = decode_header(path, payload)?;
        Ok(WholeJournal {
            header,
            bytes,
            records_start,
        })
    }
}

/// `std::fs::read`, into memory backed by ordinary pages where that is
/// cheaper (see [`prefer_small_pages`]).
fn read_whole(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::new();
    // One byte more than the size, so that reaching end of file needs no
    // second allocation.
    bytes
        .try_reserve_exact(
            usize::try_from(size)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        )
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
    prefer_small_pages(&bytes);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Asks Linux not to back a large, still untouched buffer with transparent
/// huge pages. A journal buffer is filled once by `read(2)` and then read
/// through about once, so huge pages save it little, while each 2 MiB fault
/// zeroes 2 MiB first; on a virtual machine whose host takes back memory
/// the guest frees, a fresh huge page cost about 3.5 ms per MiB here
/// against about 0.6 ms with 4 KiB pages (214 MB of journals: the fold,
/// which runs before anything else in a merge, took 0.7 s, most of it
/// zeroing pages). Advice only: a refusal changes nothing.
fn prefer_small_pages(buf: &Vec<u8>) {
    #[cfg(target_os = "linux")]
    {
        const MIN_BYTES: usize = 4 << 20;
        if buf.capacity() < MIN_BYTES {
            return;
        }
        let page = rustix::param::page_size();
        if !page.is_power_of_two() {
            return;
        }
        let start = (buf.as_ptr() as usize).next_multiple_of(page);
        let end = (buf.as_ptr() as usize + buf.capacity()) & !(page - 1);
        if end > start {
            // SAFETY: the range lies within `buf`'s allocation, which this
            // function's caller owns; MADV_NOHUGEPAGE changes only how the
            // kernel backs the range, never its contents.
            unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end - start,
                    libc::MADV_NOHUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// What the journal fold decides on, read from a record without building
/// its strings and lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordSummary {
    /// Where the record's frame starts in the journal's bytes (see
    /// [`decode_frame_at`]).
    pub offset: usize,
    pub quantum: u32,
    pub quantum_id: Uuid,
    pub attempt: u32,
    /// The status of a `Finished` record; `None` for `Started`.
    pub finished: Option<QuantumStatus>,
}

impl RecordSummary {
    fn of(offset: usize, record: &JournalRecord) -> RecordSummary {
        RecordSummary {
            offset,
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
fn summarize(offset: usize, payload: &[u8]) -> Result<RecordSummary, String> {
    let view = match postcard::take_from_bytes::<RecordView>(payload) {
        Ok((view, [])) => view,
        // The full decoder is the reference: its verdict and message stand
        // (and should the view ever disagree, the record is not lost).
        Ok(_) | Err(_) => return decode_record(payload).map(|r| RecordSummary::of(offset, &r)),
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
        offset,
        quantum,
        quantum_id,
        attempt,
        finished,
    })
}

/// Walks the records of a [`WholeJournal`]'s bytes, yielding exactly the
/// records [`read_journal`] returns, in file order, then reporting a torn or
/// damaged tail the same way ([`RecordScan::torn_tail`]).
pub(crate) struct RecordScan<'a> {
    bytes: &'a [u8],
    offset: usize,
    damage: Option<Damage>,
    done: bool,
}

impl<'a> RecordScan<'a> {
    /// Scans `bytes` from `start`, the end of the header.
    pub fn new(bytes: &'a [u8], start: usize) -> RecordScan<'a> {
        RecordScan {
            bytes,
            offset: start,
            damage: None,
            done: false,
        }
    }

    /// Once the scan is over: why the records ended before the end of the
    /// bytes, in [`JournalReader::torn_tail`]'s words.
    pub fn torn_tail(&self, path: &Path) -> Option<String> {
        self.damage.as_ref().map(|d| damage_warning(path, d))
    }
}

impl Iterator for RecordScan<'_> {
    type Item = RecordSummary;

    fn next(&mut self) -> Option<RecordSummary> {
        if self.done || self.offset >= self.bytes.len() {
            self.done = true;
            return None;
        }
        let detail = match record_at(self.bytes, self.offset) {
            Ok((payload, next)) => match summarize(self.offset, payload) {
                Ok(summary) => {
                    self.offset = next;
                    return Some(summary);
                }
                Err(detail) => detail,
            },
            Err(detail) => detail,
        };
        self.done = true;
        let rest = &self.bytes[self.offset..];
        self.damage = Some(Damage {
            offset: self.offset,
            detail,
            valid_after: first_valid_record(rest).map(|o| self.offset + o),
            file_len: self.bytes.len(),
        });
        None
    }
}

/// Decodes the record whose frame starts at `offset` in `bytes`, checking
/// its length and checksum again; `None` if there is no valid record there.
pub(crate) fn decode_frame_at(bytes: &[u8], offset: usize) -> Option<JournalRecord> {
    let rest = bytes.get(offset..)?;
    let (payload, _) = record_at(rest, 0).ok()?;
    decode_record(payload).ok()
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

    /// The `VmFlags` of the mapping that holds `addr`, from /proc/self/smaps.
    #[cfg(target_os = "linux")]
    fn vm_flags_at(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = lo <= addr && addr < hi;
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_journal_is_read_whole_into_memory_without_huge_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let content: Vec<u8> = (0..6 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let bytes = read_whole(&path).unwrap();
        assert!(bytes == content, "read_whole must return the file's bytes");
        // Well inside the buffer, past any partial first page.
        let middle = bytes.as_ptr() as usize + bytes.len() / 2;
        let flags = vm_flags_at(middle);
        assert!(
            flags.split_whitespace().any(|f| f == "nh"),
            "the buffer's mapping should be marked no-huge-pages, has flags {flags}"
        );
        // A small file: read as is, no advice needed.
        std::fs::write(&path, b"small").unwrap();
        assert_eq!(read_whole(&path).unwrap(), b"small");
    }

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

    /// Reads `path` as a [`WholeJournal`] and scans it, decoding each
    /// record from its offset and checking its summary against it.
    fn read_scanned(path: &Path) -> Result<JournalContents, JournalError> {
        let w = WholeJournal::read(path)?;
        let mut scan = RecordScan::new(&w.bytes, w.records_start);
        let mut records = vec![];
        for summary in scan.by_ref() {
            let r = decode_frame_at(&w.bytes, summary.offset).expect("a scanned record decodes");
            assert_eq!(summary, RecordSummary::of(summary.offset, &r));
            records.push(r);
        }
        Ok(JournalContents {
            header: w.header.clone(),
            records,
            torn_tail: scan.torn_tail(path),
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
            let s = summarize(7, &payload).unwrap();
            assert_eq!(summary, (s.quantum, s.attempt, s.finished));
            assert_eq!(s, RecordSummary::of(7, &r));
        }
        // A record cut short is refused with the full decoder's words.
        let payload = postcard::to_stdvec(&finished(5, QuantumStatus::Failed)).unwrap();
        let cut = &payload[..payload.len() - 3];
        assert_eq!(
            summarize(0, cut).unwrap_err(),
            decode_record(cut).unwrap_err()
        );
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(
            summarize(0, &longer).unwrap_err(),
            "1 unexpected bytes after a record"
        );
        // No record where there is no frame.
        assert_eq!(decode_frame_at(&payload, 0), None);
        assert_eq!(decode_frame_at(&payload, payload.len() + 5), None);
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
