//! Writing a bundle: validate the contents, lay out the blocks, and publish
//! the file atomically (temporary file in the same directory, fsync, rename),
//! so a reader never sees a half-written bundle under the final name.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use uuid::Uuid;

use super::format::{
    clusters_to_disk, encode_footer, encode_preamble, BlockKind, Codec, HeaderBlock, IndexEntry,
    QuantaBlockBuilder, BLOCK_HEADER_LEN, BUNDLE_FORMAT_VERSION, MAX_BLOCK_RAW, PREAMBLE_LEN,
    ZSTD_LEVEL,
};
use super::{
    BundleContents, BundleError, BundleParts, BundleQuantum, BundleRef, BundleWriteOptions,
    QuantaSource, QuantumView,
};

/// Writes `contents` to `path` (replacing any file there) and returns the
/// file's size in bytes. Nothing appears at `path` unless the whole bundle
/// was written and synced.
pub fn write_bundle(
    path: &Path,
    contents: &BundleContents,
    opts: &BundleWriteOptions,
) -> Result<u64, BundleError> {
    check_datasets_agree(path, &contents.quanta)?;
    write_bundle_from(path, contents.parts(), &contents.quanta[..], opts)
}

/// Writes the bundle of `parts` and the quanta of `quanta` to `path`, like
/// [`write_bundle`], without ever holding all quanta in their owned form:
/// blocks are built from borrowed [`QuantumView`]s, encoded and compressed
/// in parallel, and written in order. The [`QuantaSource`] contract (one
/// ref per dataset UUID) is the caller's to keep.
pub fn write_bundle_from<S: QuantaSource + ?Sized>(
    path: &Path,
    parts: BundleParts<'_>,
    quanta: &S,
    opts: &BundleWriteOptions,
) -> Result<u64, BundleError> {
    validate(path, &parts, quanta.n_quanta(), opts)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| BundleError::Invalid {
        path: path.to_path_buf(),
        detail: "the path has no file name".into(),
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |what: &str, source| BundleError::Io {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io(&format!("creating temporary file {}", tmp.display()), e))?;
    let mut guard = RemoveOnDrop(Some(tmp.clone()));
    let mut w = BlockWriter {
        path,
        out: BufWriter::new(file),
        offset: 0,
        index: Vec::new(),
        compress: opts.compress,
    };
    let size = w.write_all(&parts, quanta, opts)?;
    let file = w
        .out
        .into_inner()
        .map_err(|e| io("writing", e.into_error()))?;
    file.write_all_at(&encode_preamble(size), 0)
        .map_err(|e| io("writing the preamble", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .map_err(|e| io(&format!("renaming {} into place", tmp.display()), e))?;
    guard.0 = None; // published: nothing to clean up
                    // Make the rename itself durable; a directory that cannot be opened for
                    // syncing (some network filesystems) is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(size)
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Refuses contents that a reader would reject or misread, so that writing
/// then reading always gives back what was written. Per-quantum checks (task
/// index, topological order) are made as blocks are built.
fn validate(
    path: &Path,
    parts: &BundleParts<'_>,
    n: usize,
    opts: &BundleWriteOptions,
) -> Result<(), BundleError> {
    let invalid = |detail: String| {
        Err(BundleError::Invalid {
            path: path.to_path_buf(),
            detail,
        })
    };
    if opts.quanta_per_block == 0 {
        return invalid("quanta_per_block must be at least 1".into());
    }
    if parts.header.format_version != BUNDLE_FORMAT_VERSION {
        return invalid(format!(
            "header.format_version is {}, this writer writes version {BUNDLE_FORMAT_VERSION}",
            parts.header.format_version
        ));
    }
    if parts.header.n_quanta != n as u64 {
        return invalid(format!(
            "header.n_quanta is {} but there are {n} quanta",
            parts.header.n_quanta
        ));
    }
    if u32::try_from(n).is_err() {
        return invalid(format!(
            "{n} quanta is more than a bundle can index (2^32 - 1)"
        ));
    }
    for cl in parts.clusters {
        if let Some(&q) = cl.quanta.iter().find(|&&q| q as usize >= n) {
            return invalid(format!(
                "cluster `{}` lists quantum {q} but there are {n} quanta",
                cl.name
            ));
        }
    }
    Ok(())
}

/// Owned quanta may carry two different refs under one UUID; a block
/// stores a dataset once, so that would silently drop one of them.
fn check_datasets_agree(path: &Path, quanta: &[BundleQuantum]) -> Result<(), BundleError> {
    let mut seen: HashMap<Uuid, (&BundleRef, usize)> = HashMap::new();
    for (i, q) in quanta.iter().enumerate() {
        for (_, refs) in q.inputs.iter().chain(&q.prerequisites).chain(&q.outputs) {
            for r in refs {
                match seen.get(&r.id) {
                    Some((first, j)) if *first != r => {
                        return Err(BundleError::Invalid {
                            path: path.to_path_buf(),
                            detail: format!(
                                "dataset {} differs between quantum {j} and quantum {i}: {} `{}` vs {} `{}`",
                                r.id, first.data_id, first.path, r.data_id, r.path
                            ),
                        });
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(r.id, (r, i));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The most dataset refs a quanta block holds (unless one quantum alone has
/// more).
const REFS_PER_BLOCK: usize = 16_384;

struct BlockWriter<'p> {
    path: &'p Path,
    out: BufWriter<File>,
    offset: u64,
    index: Vec<IndexEntry>,
    compress: bool,
}

impl BlockWriter<'_> {
    fn io(&self, what: &str, source: std::io::Error) -> BundleError {
        BundleError::Io {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            source,
        }
    }

    fn invalid(&self, detail: String) -> BundleError {
        BundleError::Invalid {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), BundleError> {
        self.out
            .write_all(bytes)
            .map_err(|e| self.io("writing", e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn block(
        &mut self,
        kind: BlockKind,
        first: u32,
        count: u32,
        raw: &[u8],
    ) -> Result<(), BundleError> {
        let stored = compress_block(self.path, kind, raw, self.compress)?;
        self.put_block(kind, first, count, stored)
    }

    fn put_block(
        &mut self,
        kind: BlockKind,
        first: u32,
        count: u32,
        block: StoredBlock,
    ) -> Result<(), BundleError> {
        let mut entry = IndexEntry {
            kind,
            codec: block.codec,
            first,
            count,
            raw_len: block.raw_len,
            offset: self.offset,
            length: (BLOCK_HEADER_LEN + block.bytes.len()) as u64,
            checksum: 0,
        };
        let header = entry.block_header();
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&header);
        hasher.update(&block.bytes);
        entry.checksum = hasher.digest();
        self.put(&header)?;
        self.put(&block.bytes)?;
        self.index.push(entry);
        Ok(())
    }

    fn encode<T: serde::Serialize>(&self, what: &str, value: &T) -> Result<Vec<u8>, BundleError> {
        postcard::to_stdvec(value).map_err(|e| self.invalid(format!("encoding {what}: {e}")))
    }

    fn json<T: serde::Serialize>(&self, what: &str, value: &T) -> Result<String, BundleError> {
        serde_json::to_string(value)
            .map_err(|e| self.invalid(format!("encoding {what} as JSON: {e}")))
    }

    /// Writes everything after the preamble; returns the total file size.
    fn write_all<S: QuantaSource + ?Sized>(
        &mut self,
        parts: &BundleParts<'_>,
        quanta: &S,
        opts: &BundleWriteOptions,
    ) -> Result<u64, BundleError> {
        // The real preamble, which records the final length, is written last.
        self.put(&[0u8; PREAMBLE_LEN as usize])?;

        let header = HeaderBlock {
            header: Cow::Borrowed(parts.header),
            tasks_json: self.json("the tasks", &parts.tasks)?,
            dataset_types_json: self.json("the dataset types", &parts.dataset_types)?,
        };
        let raw = self.encode("the header", &header)?;
        self.block(BlockKind::Header, 0, 0, &raw)?;

        let raw = self.json("the dimension records", parts.dimension_records)?;
        self.block(BlockKind::DimensionRecords, 0, 0, raw.as_bytes())?;

        // Blocks are independent, so they are built, encoded and compressed
        // in parallel, a bounded number at a time (memory stays a few blocks
        // per thread however many quanta there are), and written in order.
        let ranges = block_ranges(quanta, opts.quanta_per_block);
        let n_tasks = parts.tasks.len();
        let in_flight = rayon::current_num_threads().max(1) * 4;
        for group in ranges.chunks(in_flight) {
            let stored: Vec<Result<StoredBlock, BundleError>> = group
                .par_iter()
                .map(|&(start, end)| {
                    let invalid = |detail: String| BundleError::Invalid {
                        path: self.path.to_path_buf(),
                        detail,
                    };
                    let raw = quanta
                        .with_views(start, end, &mut |views: &[QuantumView<'_>]| {
                            // Fits in u32: validate() checked the quantum count.
                            let mut b = QuantaBlockBuilder::new(start as u32);
                            for v in views {
                                b.push(v, n_tasks)?;
                            }
                            postcard::to_stdvec(&b.finish())
                                .map_err(|e| format!("encoding a quanta block: {e}"))
                        })
                        .map_err(invalid)?;
                    compress_block(self.path, BlockKind::Quanta, &raw, self.compress)
                })
                .collect();
            for (&(start, end), block) in group.iter().zip(stored) {
                self.put_block(
                    BlockKind::Quanta,
                    start as u32,
                    (end - start) as u32,
                    block?,
                )?;
            }
        }

        let raw = self.encode("the clusters", &clusters_to_disk(parts.clusters))?;
        self.block(BlockKind::Clusters, 0, 0, &raw)?;

        let mut index = Vec::with_capacity(self.index.len() * 40);
        for e in &self.index {
            e.encode(&mut index);
        }
        let index_offset = self.offset;
        let index_sum = crate::hash::xxh3_64(&index);
        self.put(&index)?;
        self.put(&encode_footer(index_offset, index.len() as u64, index_sum))?;
        self.out.flush().map_err(|e| self.io("writing", e))?;
        Ok(self.offset)
    }
}

/// Quanta `[start, end)` of each block. A block ends at `quanta_per_block`
/// quanta or at [`REFS_PER_BLOCK`] dataset refs, whichever comes first:
/// gathers (a quantum with hundreds of inputs) would otherwise make a block
/// so large that a worker reaching one quantum decodes hundreds of thousands
/// of refs.
fn block_ranges<S: QuantaSource + ?Sized>(
    quanta: &S,
    quanta_per_block: usize,
) -> Vec<(usize, usize)> {
    let n = quanta.n_quanta();
    let mut ranges = Vec::new();
    let mut start = 0usize;
    while start < n {
        let mut end = start;
        let mut refs = 0usize;
        while end < n && end - start < quanta_per_block {
            let k = quanta.n_refs(end);
            if end > start && refs + k > REFS_PER_BLOCK {
                break;
            }
            refs += k;
            end += 1;
        }
        ranges.push((start, end));
        start = end;
    }
    ranges
}

/// A block's payload as stored: compressed or not, and its raw length.
struct StoredBlock {
    codec: Codec,
    raw_len: u32,
    bytes: Vec<u8>,
}

fn compress_block(
    path: &Path,
    kind: BlockKind,
    raw: &[u8],
    compress: bool,
) -> Result<StoredBlock, BundleError> {
    let raw_len = u32::try_from(raw.len())
        .ok()
        .filter(|&l| l <= MAX_BLOCK_RAW)
        .ok_or_else(|| BundleError::Invalid {
            path: path.to_path_buf(),
            detail: format!(
                "a {kind:?} block would be {} bytes, over the limit of {MAX_BLOCK_RAW}; use fewer quanta per block",
                raw.len()
            ),
        })?;
    if compress {
        let c = zstd::bulk::compress(raw, ZSTD_LEVEL).map_err(|e| BundleError::Io {
            path: path.to_path_buf(),
            what: "compressing a block".into(),
            source: e,
        })?;
        // Incompressible payloads are stored raw; the codec is per block.
        if c.len() < raw.len() {
            return Ok(StoredBlock {
                codec: Codec::Zstd,
                raw_len,
                bytes: c,
            });
        }
    }
    Ok(StoredBlock {
        codec: Codec::Raw,
        raw_len,
        bytes: raw.to_vec(),
    })
}
