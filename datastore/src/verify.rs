//! Verification of datastore files against the size and BLAKE3 checksum
//! recorded for them: [`Datastore::verify`] for one file and
//! [`Datastore::verify_many`] for the millions that `quanta merge` checks.
//!
//! Owns: the system-call level of reading files back for verification.
//! Must not: write, create or remove anything, or look outside the root
//! (every path goes through [`validate_relative_path`] first) except at a
//! direct file's recorded absolute path ([`crate::template::is_direct_path`]).
//!
//! # Cost
//!
//! A file is opened relative to a handle on its directory (`openat` of one
//! name, not a walk from `/`); [`Datastore::verify_many`] keeps a few such
//! handles per worker and, where the input scatters a directory's files
//! over more directories than it keeps, visits a chunk of files in
//! directory order, so a directory is opened about once per run of its
//! files. A small file (up to 16 MiB, the
//! whole-read limit) is then read with a single `read(2)` of
//! `size + 1` bytes into a buffer reused across files, hashed, and closed:
//! three system calls, no `fstat`, no allocation. Files are opened with
//! `O_NOATIME` where permitted, which spares merge, reading each file for
//! the first time since it was written, an inode update per file.
//!
//! On Linux, [`Datastore::verify_many`] issues those three calls for files
//! up to 64 KiB through io_uring instead, a batch of 64 files per system
//! call (see `uring.rs`: about 12% less CPU per file). Only the outcome
//! "exactly the recorded bytes" is taken from the batch; every other file is
//! verified again on its own as described here, so errors read the same.
//! Where io_uring is unavailable, every file is verified on its own.
//!
//! # What the single read relies on
//!
//! For a regular file, `read(2)` returns fewer bytes than asked only at end
//! of file. (POSIX also allows a short read when a signal interrupts a read
//! that has transferred some data; Linux filesystems serve such reads whole
//! and only a fatal signal cuts them short.) So with `size + 1` bytes asked:
//! exactly `size` bytes back means the file held exactly `size` bytes when
//! read, `size + 1` that it is larger, fewer that it is smaller.
//!
//! Only the outcome "exactly `size` bytes, `size > 0`, right checksum" is
//! accepted without more ado. Everything else (short or long read, a read
//! error such as `EISDIR` from a directory, a wrong checksum, an empty file)
//! takes the slow path, which reproduces the stat-first check: `fstat`, not a
//! regular file → `Missing`, size differs → `SizeMismatch` with the size
//! `fstat` reports, and when `fstat` agrees with the recorded size the read
//! is continued to end of file, so a short read on an unusual filesystem
//! costs time but never gives a false report. Files are opened non-blocking,
//! so a FIFO where a file should be is reported instead of hanging.
//!
//! Empty files always take the `fstat` path: an empty read cannot tell an
//! empty regular file from a FIFO or `/dev/null`. The one case the fast
//! path judges differently from a stat-first check is a non-regular file
//! (a device reached through a symlink) whose first read yields exactly the
//! recorded non-empty bytes: it is accepted, since its content is what was
//! recorded, where a stat-first check would call it missing.
//!
//! Larger files are checked with `fstat` first (no point hashing gigabytes
//! of a file of the wrong size) and then streamed through BLAKE3.
//!
//! Symlinks are followed, for files and directories alike, as a path walk
//! would. A file replaced while it is verified is judged by whichever
//! version was opened.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::datastore::{Datastore, StoredFileInfo};
use crate::error::DatastoreError;
use crate::template::{is_direct_path, validate_relative_path};
#[cfg(target_os = "linux")]
use crate::uring::{Ring, RING_READ_LIMIT};

/// From now on, this process verifies every file with plain system calls,
/// never through io_uring: an escape hatch for a kernel or sandbox whose
/// io_uring misbehaves (where it is refused outright, that happens by
/// itself). Batches already running finish as they started.
pub fn disable_io_uring() {
    #[cfg(target_os = "linux")]
    crate::uring::disable();
}

/// Files up to this size are verified from a single read into memory.
pub(crate) const WHOLE_READ_LIMIT: u64 = 16 << 20;

/// Scratch buffers larger than this are freed after use rather than kept
/// for the next file, so that one large file does not pin memory in every
/// thread for the life of the process.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

/// Directory handles a [`Datastore::verify_many`] worker keeps open: enough
/// for input that interleaves a few directories, few enough that a linear
/// scan beats hashing.
const DIR_CACHE_SIZE: usize = 8;

/// Bounds on the files per [`Datastore::verify_many`] task.
const MIN_CHUNK_FILES: usize = 256;
const MAX_CHUNK_FILES: usize = 4096;

/// A chunk that would open a directory more than once per this many files,
/// taken in input order, is verified in directory order.
const SORT_BELOW_RUN_LENGTH: usize = 8;

/// What a file is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExpectedFile<'a> {
    /// Relative to the datastore root, `/`-separated.
    pub path: &'a str,
    pub size: u64,
    /// BLAKE3 of the contents, hex (compared ignoring case).
    pub checksum: &'a str,
}

impl<'a> From<&'a StoredFileInfo> for ExpectedFile<'a> {
    fn from(info: &'a StoredFileInfo) -> Self {
        info.expected()
    }
}

impl Datastore {
    /// Checks that the file exists with the recorded size and checksum
    /// (following a symlink to its target). A directory or other non-file
    /// at the path counts as missing.
    pub fn verify(&self, info: &StoredFileInfo) -> Result<(), DatastoreError> {
        let expected = info.expected();
        let abs = self.abs_path(expected.path)?;
        with_scratch(|buf| self.verify_at(rustix::fs::CWD, &abs, &expected, buf))
    }

    /// [`Datastore::verify`] for many files at once, in parallel; result `i`
    /// is that of `files[i]`, with the same error `verify` would give.
    ///
    /// Much cheaper per file than `verify` (see the module documentation),
    /// most of all when files of one directory come one after another; in a
    /// stretch of input where they do not, files are taken in directory
    /// order (results still land in input order).
    ///
    /// A disassembled composite's index (see [`crate::disassembled`]) that
    /// verifies is then read and each part it lists verified against it: a
    /// missing or altered part fails the index's entry.
    pub fn verify_many(&self, files: &[ExpectedFile<'_>]) -> Vec<Result<(), DatastoreError>> {
        let mut results = self.verify_flat(files);
        let indices: Vec<usize> = (0..files.len())
            .filter(|&i| results[i].is_ok() && crate::disassembled::is_index(files[i].path))
            .collect();
        if indices.is_empty() {
            return results;
        }
        let mut parts = Vec::new();
        let mut owner = Vec::new();
        for &i in &indices {
            match self.parts_index(files[i].path) {
                Ok(index) => {
                    for (_, info) in index.part_infos(files[i].path) {
                        parts.push(info);
                        owner.push(i);
                    }
                }
                Err(e) => results[i] = Err(e),
            }
        }
        let expected: Vec<ExpectedFile<'_>> = parts.iter().map(|p| p.expected()).collect();
        for (k, r) in self.verify_flat(&expected).into_iter().enumerate() {
            if let Err(e) = r {
                if results[owner[k]].is_ok() {
                    results[owner[k]] = Err(e);
                }
            }
        }
        results
    }

    fn verify_flat(&self, files: &[ExpectedFile<'_>]) -> Vec<Result<(), DatastoreError>> {
        let mut results: Vec<Result<(), DatastoreError>> = files.iter().map(|_| Ok(())).collect();
        // Several chunks per thread for load balance, each large enough to
        // amortize its directory opens.
        let chunk = (files.len() / (rayon::current_num_threads() * 8))
            .clamp(MIN_CHUNK_FILES, MAX_CHUNK_FILES);
        files
            .par_chunks(chunk)
            .zip(results.par_chunks_mut(chunk))
            .for_each_init(Worker::default, |worker, (files, out)| {
                self.verify_chunk(worker, files, out)
            });
        results
    }

    fn verify_chunk(
        &self,
        worker: &mut Worker,
        files: &[ExpectedFile<'_>],
        out: &mut [Result<(), DatastoreError>],
    ) {
        let mut order = std::mem::take(&mut worker.order);
        order.clear();
        order.extend(0..files.len());
        if dir_opens(files) > files.len() / SORT_BELOW_RUN_LENGTH {
            // Files of a directory scattered through the chunk: visit them
            // grouped, so each directory is opened about once per chunk.
            order.sort_by_cached_key(|&i| dir_of(files[i].path));
        }
        #[cfg(target_os = "linux")]
        let batched = with_ring(|ring| self.verify_batched(worker, ring, files, &order, out));
        #[cfg(not(target_os = "linux"))]
        let batched = false;
        if !batched {
            for &i in &order {
                out[i] = self.verify_with(worker, &files[i]);
            }
        }
        worker.order = order;
        if worker.buf.capacity() > SCRATCH_KEEP_BYTES {
            worker.buf = Vec::new();
        }
    }

    /// [`Datastore::verify_chunk`] through io_uring, in `order`: small files
    /// are opened and read a batch at a time and pass if they hold exactly
    /// the recorded bytes; anything else (a failed open or read, another
    /// size, a wrong checksum, an empty or large file) is judged again by the
    /// one-file path, which reports it as [`Datastore::verify`] would.
    #[cfg(target_os = "linux")]
    fn verify_batched(
        &self,
        worker: &mut Worker,
        ring: &mut Ring,
        files: &[ExpectedFile<'_>],
        order: &[usize],
        out: &mut [Result<(), DatastoreError>],
    ) {
        let mut batch = std::mem::take(&mut worker.batch);
        batch.clear();
        for &i in order {
            let file = &files[i];
            if !ring.is_usable() {
                // A batch failed: the rest go one by one.
                out[i] = self.verify_with(worker, file);
                continue;
            }
            let eligible = file.size > 0
                && file.size <= RING_READ_LIMIT
                && validate_relative_path(file.path).is_ok();
            let (dir, name) = split_dir(file.path);
            // A queued request names its directory by a handle of the cache:
            // whatever could make the cache close one (the one-file path, a
            // directory it does not hold) waits until the batch has run.
            let evicts = !worker.dirs.holds(dir) && worker.dirs.is_full();
            if !batch.is_empty() && (!eligible || evicts || ring.is_full()) {
                self.run_batch(worker, ring, files, &mut batch, out);
            }
            if !eligible {
                out[i] = self.verify_with(worker, file);
                continue;
            }
            match worker.dirs.get(self.root(), dir) {
                Ok(dir_fd) => {
                    ring.push(dir_fd, name, file.size);
                    batch.push(i);
                }
                // The directory could not be opened: the one-file path
                // reports it from the failure the cache now holds, closing
                // no handle.
                Err(_) => out[i] = self.verify_with(worker, file),
            }
        }
        self.run_batch(worker, ring, files, &mut batch, out);
        worker.batch = batch;
    }

    #[cfg(target_os = "linux")]
    fn run_batch(
        &self,
        worker: &mut Worker,
        ring: &mut Ring,
        files: &[ExpectedFile<'_>],
        batch: &mut Vec<usize>,
        out: &mut [Result<(), DatastoreError>],
    ) {
        if batch.is_empty() {
            return;
        }
        let ran = ring.run(verify_open_flags());
        for (k, &i) in batch.iter().enumerate() {
            let file = &files[i];
            let exact = ran.is_ok()
                && ring.outcome(k).is_ok_and(|bytes| {
                    bytes.len() as u64 == file.size && checksum_matches(bytes, file.checksum)
                });
            out[i] = if exact {
                Ok(())
            } else {
                self.verify_with(worker, file)
            };
        }
        ring.clear();
        batch.clear();
    }

    fn verify_with(
        &self,
        worker: &mut Worker,
        file: &ExpectedFile<'_>,
    ) -> Result<(), DatastoreError> {
        if is_direct_path(file.path) {
            // Outside the root: opened by its whole path, like `verify`.
            let abs = self.abs_path(file.path)?;
            return self.verify_at(rustix::fs::CWD, &abs, file, &mut worker.buf);
        }
        validate_relative_path(file.path)?;
        // Validation guarantees a non-empty last component.
        let (dir, name) = split_dir(file.path);
        let Worker { dirs, buf, .. } = worker;
        match dirs.get(self.root(), dir) {
            Ok(dir_fd) => self.verify_at(dir_fd, Path::new(name), file, buf),
            Err(e) => Err(open_error(file, self.root().join(file.path), e)),
        }
    }

    /// The check shared by [`Datastore::verify`] and
    /// [`Datastore::verify_many`]: `name` is opened relative to `dir`
    /// (an absolute path with `CWD` for a single file).
    fn verify_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &Path,
        expected: &ExpectedFile<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<(), DatastoreError> {
        let abs = || self.root().join(expected.path);
        let fd = open_for_verify(dir, name).map_err(|e| open_error(expected, abs(), e))?;
        if expected.size <= WHOLE_READ_LIMIT {
            verify_small(fd, expected, &abs, buf)
        } else {
            verify_large(fd, expected, &abs)
        }
    }
}

/// Opens a file to verify it, without updating its access time where the
/// system lets us: merge reads each file once right after it was written,
/// and under `relatime` that first read would otherwise dirty the inode:
/// an inode update per file, measured at 1–2.5 µs of kernel time per small
/// file on ext4, a quarter or more of the whole. `O_NOATIME` needs the
/// caller to own the file (or `CAP_FOWNER`); after one refusal it is not
/// asked for again in this process.
fn open_for_verify(dir: BorrowedFd<'_>, name: &Path) -> Result<OwnedFd, Errno> {
    let flags = verify_open_flags();
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Err(Errno::PERM) if flags.contains(OFlags::NOATIME) => {
            NOATIME_REFUSED.store(true, Ordering::Relaxed);
            rustix::fs::openat(dir, name, flags - OFlags::NOATIME, Mode::empty())
        }
        other => other,
    }
}

/// How files are opened for verification (see [`open_for_verify`]).
fn verify_open_flags() -> OFlags {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if !NOATIME_REFUSED.load(Ordering::Relaxed) {
        return flags | OFlags::NOATIME;
    }
    flags
}

/// Set once `O_NOATIME` has been refused (a file of another user).
#[cfg(any(target_os = "linux", target_os = "android"))]
static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);

/// A relative path's directory (`""` for a file at the root) and file name.
fn split_dir(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The directory part of a relative path (`""` for a file at the root).
fn dir_of(path: &str) -> &str {
    split_dir(path).0
}

/// How many directories verifying `files` in input order opens, with the
/// handles a [`DirCache`] keeps (replaced first in, first out, as it does):
/// input that alternates between a few directories (two output types of
/// each quantum) opens few, input that scatters many opens one per file.
fn dir_opens(files: &[ExpectedFile<'_>]) -> usize {
    let mut held: [&str; DIR_CACHE_SIZE] = [""; DIR_CACHE_SIZE];
    let (mut len, mut last, mut next_victim, mut opens) = (0, 0, 0, 0);
    for file in files {
        let dir = dir_of(file.path);
        if len > 0 && held[last] == dir {
            continue;
        }
        match held[..len].iter().position(|d| *d == dir) {
            Some(i) => last = i,
            None => {
                opens += 1;
                if len < DIR_CACHE_SIZE {
                    last = len;
                    len += 1;
                } else {
                    last = next_victim;
                    next_victim = (next_victim + 1) % DIR_CACHE_SIZE;
                }
                held[last] = dir;
            }
        }
    }
    opens
}

/// A file of at most [`WHOLE_READ_LIMIT`] bytes; see the module
/// documentation for why one read is enough on success.
fn verify_small(
    fd: OwnedFd,
    expected: &ExpectedFile<'_>,
    abs: &dyn Fn() -> PathBuf,
    buf: &mut Vec<u8>,
) -> Result<(), DatastoreError> {
    // At most WHOLE_READ_LIMIT + 1, which fits any usize we build for.
    let want = usize::try_from(expected.size)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if buf.len() < want {
        // The buffer only grows, so it is zeroed once, not per file.
        buf.resize(want, 0);
    }
    let buf = &mut buf[..want];
    let first = read_retrying(&fd, buf);
    if let Ok(n) = first {
        if n > 0 && n as u64 == expected.size && checksum_matches(&buf[..n], expected.checksum) {
            return Ok(());
        }
    }

    // Something is off, or the file is empty: find out what, as a stat-first
    // check would.
    let stat = inspect(&fd, expected, abs)?;
    check_size(expected, stat)?;
    let mut n = first.map_err(|e| DatastoreError::io("read", abs(), e.into()))?;
    // fstat agrees with the recorded size: the first read was short without
    // being at end of file, or the file changed since. Read on to the end.
    while n < want {
        match read_retrying(&fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(more) => n += more,
            Err(e) => return Err(DatastoreError::io("read", abs(), e.into())),
        }
    }
    check_size(expected, n as u64)?;
    check_checksum(expected, blake3::hash(&buf[..n]).to_hex().as_str())
}

/// A file larger than [`WHOLE_READ_LIMIT`]: size from `fstat` first, then
/// streamed through BLAKE3.
fn verify_large(
    fd: OwnedFd,
    expected: &ExpectedFile<'_>,
    abs: &dyn Fn() -> PathBuf,
) -> Result<(), DatastoreError> {
    let size = inspect(&fd, expected, abs)?;
    check_size(expected, size)?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(File::from(fd))
        .map_err(|e| DatastoreError::io("read", abs(), e))?;
    // The file may have changed between stat and read.
    check_size(expected, hasher.count())?;
    check_checksum(expected, hasher.finalize().to_hex().as_str())
}

/// The size of an open regular file; anything else at the path counts as
/// missing.
fn inspect(
    fd: &OwnedFd,
    expected: &ExpectedFile<'_>,
    abs: &dyn Fn() -> PathBuf,
) -> Result<u64, DatastoreError> {
    let stat = rustix::fs::fstat(fd).map_err(|e| DatastoreError::io("inspect", abs(), e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(missing(expected));
    }
    // A regular file's size is never negative.
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

fn read_retrying(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

fn checksum_matches(bytes: &[u8], expected: &str) -> bool {
    // The hex digest lives on the stack: no allocation on the hot path.
    blake3::hash(bytes)
        .to_hex()
        .as_str()
        .eq_ignore_ascii_case(expected)
}

fn missing(expected: &ExpectedFile<'_>) -> DatastoreError {
    DatastoreError::Missing {
        path: expected.path.to_string(),
    }
}

/// The error for a file (or its directory) that could not be opened, as
/// opening the whole path would report it.
fn open_error(expected: &ExpectedFile<'_>, abs: PathBuf, e: Errno) -> DatastoreError {
    if e == Errno::NOENT {
        missing(expected)
    } else {
        DatastoreError::io("open", abs, e.into())
    }
}

pub(crate) fn check_size(expected: &ExpectedFile<'_>, actual: u64) -> Result<(), DatastoreError> {
    if actual == expected.size {
        Ok(())
    } else {
        Err(DatastoreError::SizeMismatch {
            path: expected.path.to_string(),
            expected: expected.size,
            actual,
        })
    }
}

pub(crate) fn check_checksum(
    expected: &ExpectedFile<'_>,
    actual: &str,
) -> Result<(), DatastoreError> {
    if actual.eq_ignore_ascii_case(expected.checksum) {
        Ok(())
    } else {
        Err(DatastoreError::ChecksumMismatch {
            path: expected.path.to_string(),
            expected: expected.checksum.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// Runs `f` with this thread's scratch buffer. The buffer is taken out of
/// the thread-local rather than borrowed, so re-entry or a thread being torn
/// down just means a fresh buffer.
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }
    let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
    let out = f(&mut buf);
    if buf.capacity() <= SCRATCH_KEEP_BYTES {
        // Fails only while the thread exits; the buffer is then just freed.
        let _ = SCRATCH.try_with(|cell| cell.set(buf));
    }
    out
}

/// Runs `f` with this thread's io_uring ring, set up on first use; false,
/// without running it, where io_uring is unavailable. A ring whose batch
/// failed is dropped, not put back.
#[cfg(target_os = "linux")]
fn with_ring(f: impl FnOnce(&mut Ring)) -> bool {
    thread_local! {
        static RING: Cell<Option<Ring>> = const { Cell::new(None) };
    }
    // Taken out first, so that a ring made before io_uring was disabled is
    // dropped here rather than used.
    let held = RING.try_with(Cell::take).ok().flatten();
    if !crate::uring::available() {
        return false;
    }
    let Some(mut ring) = held.or_else(Ring::new) else {
        return false;
    };
    f(&mut ring);
    if ring.is_usable() {
        // Fails only while the thread exits; the ring is then just closed.
        let _ = RING.try_with(|cell| cell.set(Some(ring)));
    }
    true
}

/// Per-thread state of [`Datastore::verify_many`].
#[derive(Default)]
struct Worker {
    dirs: DirCache,
    buf: Vec<u8>,
    /// Scratch for the visiting order of a chunk.
    order: Vec<usize>,
    /// Scratch for the files of an io_uring batch (indices into the chunk).
    #[cfg(target_os = "linux")]
    batch: Vec<usize>,
}

/// Handles on recently used directories (relative to the root), opened
/// with `O_PATH` so that, as with a path walk, only search permission is
/// needed. A failed open is kept too: every file of a missing directory is
/// missing, without asking again.
#[derive(Default)]
struct DirCache {
    entries: Vec<(String, Result<OwnedFd, Errno>)>,
    /// The entry used last, tried first; the next to replace when full.
    last: usize,
    next_victim: usize,
}

impl DirCache {
    /// Whether `dir`'s handle (or failed open) is held.
    #[cfg(target_os = "linux")]
    fn holds(&self, dir: &str) -> bool {
        self.find(dir).is_some()
    }

    /// The entry of `dir`, the one used last tried first.
    fn find(&self, dir: &str) -> Option<usize> {
        match self.entries.get(self.last) {
            Some((d, _)) if d == dir => Some(self.last),
            _ => self.entries.iter().position(|(d, _)| d == dir),
        }
    }

    /// Whether getting a directory it does not hold closes one it does.
    #[cfg(target_os = "linux")]
    fn is_full(&self) -> bool {
        self.entries.len() >= DIR_CACHE_SIZE
    }

    fn get(&mut self, root: &Path, dir: &str) -> Result<BorrowedFd<'_>, Errno> {
        let index = match self.find(dir) {
            Some(i) => i,
            None => {
                let handle = open_dir(root, dir);
                if self.entries.len() < DIR_CACHE_SIZE {
                    self.entries.push((dir.to_string(), handle));
                    self.entries.len() - 1
                } else {
                    let i = self.next_victim;
                    self.next_victim = (i + 1) % DIR_CACHE_SIZE;
                    let entry = &mut self.entries[i];
                    entry.0.clear();
                    entry.0.push_str(dir);
                    // Dropping the old handle closes it.
                    entry.1 = handle;
                    i
                }
            }
        };
        self.last = index;
        match &self.entries[index].1 {
            Ok(fd) => Ok(fd.as_fd()),
            Err(e) => Err(*e),
        }
    }
}

fn open_dir(root: &Path, dir: &str) -> Result<OwnedFd, Errno> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let access = OFlags::PATH;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let access = OFlags::RDONLY;
    let path = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    rustix::fs::openat(
        rustix::fs::CWD,
        &path,
        access | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opens(paths: &[String]) -> usize {
        let files: Vec<ExpectedFile<'_>> = paths
            .iter()
            .map(|p| ExpectedFile {
                path: p,
                size: 1,
                checksum: "",
            })
            .collect();
        dir_opens(&files)
    }

    #[test]
    fn directory_opens_are_counted_as_the_handle_cache_would_open_them() {
        // Two output types per quantum: input alternates two directories.
        let alternating: Vec<String> = (0..100)
            .map(|i| format!("run/{}/{i}.json", ["a", "b"][i % 2]))
            .collect();
        assert_eq!(opens(&alternating), 2);
        // As many directories as handles, round robin: each opened once.
        let held: Vec<String> = (0..80)
            .map(|i| format!("d{}/{i}.json", i % DIR_CACHE_SIZE))
            .collect();
        assert_eq!(opens(&held), DIR_CACHE_SIZE);
        // One more than the cache holds, round robin: first in, first out
        // evicts each directory just before it comes back.
        let thrashing: Vec<String> = (0..90)
            .map(|i| format!("d{}/{i}.json", i % (DIR_CACHE_SIZE + 1)))
            .collect();
        assert_eq!(opens(&thrashing), 90);
        // Files at the root share the root's handle.
        let root: Vec<String> = (0..5).map(|i| format!("{i}.json")).collect();
        assert_eq!(opens(&root), 1);
        assert_eq!(opens(&[]), 0);
    }
}
