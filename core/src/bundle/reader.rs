//! Reading a bundle with positioned reads: open checks the frame (preamble,
//! footer, index) and decodes the header block; quanta blocks are read,
//! checksummed and decoded only when a quantum in them is asked for.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::format::{
    clusters_from_disk, decode_footer, decode_preamble, BlockKind, ClusterDisk, Codec,
    DecodedBlock, HeaderBlock, IndexEntry, PreambleError, QuantaBlock, BLOCK_HEADER_LEN,
    BUNDLE_FORMAT_VERSION, FOOTER_LEN, INDEX_ENTRY_LEN, PREAMBLE_LEN,
};
use super::{BundleError, BundleHeader, BundleQuantum, Cluster, DimensionRecords};
use crate::dataset::DatasetType;
use crate::pipeline::TaskDef;

type Result<T, E = BundleError> = std::result::Result<T, E>;

/// An open bundle. Cheap to open; `Send + Sync`, so worker threads can share
/// one (the last decoded quanta block is cached behind a mutex).
pub struct Bundle {
    path: PathBuf,
    file: File,
    file_size: u64,
    index: Vec<IndexEntry>,
    /// Positions in `index` of the quanta blocks, in quantum order.
    quanta_blocks: Range<usize>,
    n_quanta: u64,
    header: BundleHeader,
    tasks: Vec<TaskDef>,
    dataset_types: Vec<DatasetType>,
    cache: Mutex<Option<(usize, Arc<QuantaBlock<'static>>)>>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("path", &self.path)
            .field("file_size", &self.file_size)
            .field("n_quanta", &self.n_quanta)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Opens `path`, checking the preamble, footer, index and header block.
    /// Other blocks are checked when read, or all at once by [`Bundle::verify`].
    pub fn open(path: &Path) -> Result<Bundle> {
        let io = |what: &str, source| BundleError::Io {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        };
        let file = File::open(path).map_err(|e| io("opening", e))?;
        let file_size = file
            .metadata()
            .map_err(|e| io("reading metadata", e))?
            .len();
        let truncated = |expected: String| BundleError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: file_size,
        };
        let corrupt = |what: &str, detail: String| BundleError::Corrupt {
            path: path.to_path_buf(),
            what: what.to_string(),
            detail,
        };
        let min_size = PREAMBLE_LEN + FOOTER_LEN;

        // The preamble: magic first, so a file that is not a bundle says so
        // rather than "truncated".
        let mut pre = [0u8; PREAMBLE_LEN as usize];
        let have = file_size.min(PREAMBLE_LEN) as usize;
        file.read_exact_at(&mut pre[..have], 0)
            .map_err(|e| io("reading the preamble", e))?;
        let magic_len = have.min(8);
        if pre[..magic_len] != super::format::MAGIC[..magic_len] {
            return Err(BundleError::NotABundle {
                path: path.to_path_buf(),
                reason: "it does not start with the bundle magic".into(),
            });
        }
        if file_size < min_size {
            return Err(truncated(format!("at least {min_size}")));
        }
        let pre = match decode_preamble(&pre) {
            Ok(p) => p,
            Err(PreambleError::BadMagic) => {
                return Err(BundleError::NotABundle {
                    path: path.to_path_buf(),
                    reason: "it does not start with the bundle magic".into(),
                })
            }
            Err(PreambleError::Checksum) => {
                return Err(BundleError::Checksum {
                    path: path.to_path_buf(),
                    what: "preamble".into(),
                })
            }
        };
        if pre.version != BUNDLE_FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: pre.version,
                supported: BUNDLE_FORMAT_VERSION,
            });
        }
        if pre.flags != 0 {
            return Err(corrupt(
                "preamble",
                format!("unknown flags {:#x}", pre.flags),
            ));
        }
        if file_size < pre.file_len {
            return Err(truncated(pre.file_len.to_string()));
        }
        if file_size > pre.file_len {
            return Err(corrupt(
                "file",
                format!(
                    "it is {file_size} bytes but was written as {} bytes (trailing data)",
                    pre.file_len
                ),
            ));
        }

        let mut foot = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut foot, file_size - FOOTER_LEN)
            .map_err(|e| io("reading the footer", e))?;
        let footer = decode_footer(&foot).map_err(|d| corrupt("footer", d))?;
        let index_end = file_size - FOOTER_LEN;
        if footer.index_offset < PREAMBLE_LEN
            || footer.index_offset.checked_add(footer.index_len) != Some(index_end)
            || footer.index_len % INDEX_ENTRY_LEN != 0
        {
            return Err(corrupt(
                "footer",
                format!(
                    "index at {} with length {} does not fit the file ({file_size} bytes)",
                    footer.index_offset, footer.index_len
                ),
            ));
        }
        // Bounded by the real file size, checked just above.
        let mut raw_index = vec![0u8; footer.index_len as usize];
        file.read_exact_at(&mut raw_index, footer.index_offset)
            .map_err(|e| io("reading the index", e))?;
        if crate::hash::xxh3_64(&raw_index) != footer.index_sum {
            return Err(BundleError::Checksum {
                path: path.to_path_buf(),
                what: "index".into(),
            });
        }
        let index = raw_index
            .chunks_exact(INDEX_ENTRY_LEN as usize)
            .enumerate()
            .map(|(i, b)| {
                IndexEntry::decode(b).map_err(|d| corrupt(&format!("index entry {i}"), d))
            })
            .collect::<Result<Vec<_>>>()?;
        let (quanta_blocks, n_quanta) =
            check_layout(&index, footer.index_offset).map_err(|d| corrupt("index", d))?;

        let raw = read_block(&file, path, &index, 0)?;
        let what = index[0].describe(0);
        let hb: HeaderBlock = decode_postcard(&raw).map_err(|d| corrupt(&what, d))?;
        let header = hb.header.into_owned();
        let tasks = serde_json::from_str(&hb.tasks_json)
            .map_err(|e| corrupt(&what, format!("tasks: {e}")))?;
        let dataset_types = serde_json::from_str(&hb.dataset_types_json)
            .map_err(|e| corrupt(&what, format!("dataset types: {e}")))?;
        if header.format_version != BUNDLE_FORMAT_VERSION {
            return Err(corrupt(
                &what,
                format!(
                    "header says format version {}, preamble {}",
                    header.format_version, pre.version
                ),
            ));
        }
        if header.n_quanta != n_quanta {
            return Err(corrupt(
                &what,
                format!(
                    "header says {} quanta but the index holds {n_quanta}",
                    header.n_quanta
                ),
            ));
        }
        Ok(Bundle {
            path: path.to_path_buf(),
            file,
            file_size,
            index,
            quanta_blocks,
            n_quanta,
            header,
            tasks,
            dataset_types,
            cache: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    pub fn tasks(&self) -> &[TaskDef] {
        &self.tasks
    }

    pub fn dataset_types(&self) -> &[DatasetType] {
        &self.dataset_types
    }

    pub fn n_quanta(&self) -> usize {
        self.n_quanta as usize
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Number of quanta blocks (the unit of decoding).
    pub fn n_blocks(&self) -> usize {
        self.quanta_blocks.len()
    }

    pub fn clusters(&self) -> Result<Vec<Cluster>> {
        let pos = self.block_of_kind(BlockKind::Clusters);
        let raw = self.read_block(pos)?;
        let what = self.index[pos].describe(pos);
        let disk: Vec<ClusterDisk> = decode_postcard(&raw).map_err(|d| self.corrupt(&what, d))?;
        clusters_from_disk(disk, self.n_quanta).map_err(|d| self.corrupt(&what, d))
    }

    pub fn dimension_records(&self) -> Result<DimensionRecords> {
        let pos = self.block_of_kind(BlockKind::DimensionRecords);
        let raw = self.read_block(pos)?;
        serde_json::from_slice(&raw)
            .map_err(|e| self.corrupt(&self.index[pos].describe(pos), e.to_string()))
    }

    /// Quantum `index`, decoding only its block (the last block decoded is
    /// kept, so neighbouring look-ups are cheap).
    pub fn quantum(&self, index: u32) -> Result<BundleQuantum> {
        if u64::from(index) >= self.n_quanta {
            return Err(BundleError::QuantumOutOfRange {
                path: self.path.clone(),
                index: index.into(),
                n: self.n_quanta,
            });
        }
        let blocks = &self.index[self.quanta_blocks.clone()];
        let k =
            blocks.partition_point(|e| u64::from(e.first) + u64::from(e.count) <= u64::from(index));
        let pos = self.quanta_blocks.start + k;
        let block = self.quanta_block(pos)?;
        let entry = &self.index[pos];
        block
            .quantum((index - entry.first) as usize, index, self.tasks.len())
            .map_err(|d| self.corrupt(&entry.describe(pos), d))
    }

    /// Every quantum in order, block by block; stops after the first error.
    pub fn quanta(&self) -> impl Iterator<Item = Result<BundleQuantum>> + '_ {
        QuantaIter {
            bundle: self,
            pos: self.quanta_blocks.start,
            block: None,
            next_in_block: 0,
            failed: false,
        }
    }

    /// Every quanta block in order, each decoded and checked whole, for
    /// reading its quanta as borrowed views (see [`DecodedBlock`]); blocks
    /// are decoded as the iterator advances, and it stops after the first
    /// error.
    pub fn decoded_blocks(&self) -> impl Iterator<Item = Result<DecodedBlock>> + '_ {
        let mut failed = false;
        self.quanta_blocks.clone().map_while(move |pos| {
            if failed {
                return None;
            }
            let entry = &self.index[pos];
            let block = self.decode_quanta_block(pos).and_then(|block| {
                DecodedBlock::new(block, entry.first, self.tasks.len())
                    .map_err(|d| self.corrupt(&entry.describe(pos), d))
            });
            failed = block.is_err();
            Some(block)
        })
    }

    /// Reads and checks every block: checksums, decompression and decoding
    /// of every quantum, the clusters and the dimension records.
    pub fn verify(&self) -> Result<()> {
        for pos in 0..self.index.len() {
            match self.index[pos].kind {
                BlockKind::Header => {
                    self.read_block(pos)?;
                }
                BlockKind::DimensionRecords => {
                    self.dimension_records()?;
                }
                BlockKind::Clusters => {
                    self.clusters()?;
                }
                BlockKind::Quanta => {
                    let entry = self.index[pos];
                    let block = self.decode_quanta_block(pos)?;
                    for i in 0..entry.count {
                        block
                            .quantum(i as usize, entry.first + i, self.tasks.len())
                            .map_err(|d| self.corrupt(&entry.describe(pos), d))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// (offset, stored length) of block `pos`, for tests that damage it.
    #[cfg(test)]
    pub(super) fn block_span(&self, pos: usize) -> (u64, u64) {
        (self.index[pos].offset, self.index[pos].length)
    }

    /// Byte range of the blocks that open() does not read.
    #[cfg(test)]
    pub(super) fn lazy_span(&self) -> std::ops::Range<u64> {
        let last = self.index[self.index.len() - 1];
        self.index[1].offset..last.offset + last.length
    }

    fn corrupt(&self, what: &str, detail: String) -> BundleError {
        BundleError::Corrupt {
            path: self.path.clone(),
            what: what.to_string(),
            detail,
        }
    }

    fn block_of_kind(&self, kind: BlockKind) -> usize {
        // check_layout guarantees exactly one header, dimension-records and
        // clusters block, at fixed positions.
        match kind {
            BlockKind::Header => 0,
            BlockKind::DimensionRecords => 1,
            BlockKind::Clusters => self.index.len() - 1,
            BlockKind::Quanta => self.quanta_blocks.start,
        }
    }

    fn read_block(&self, pos: usize) -> Result<Vec<u8>> {
        read_block(&self.file, &self.path, &self.index, pos)
    }

    fn decode_quanta_block(&self, pos: usize) -> Result<QuantaBlock<'static>> {
        let raw = self.read_block(pos)?;
        let e = &self.index[pos];
        let block: QuantaBlock<'static> =
            decode_postcard(&raw).map_err(|d| self.corrupt(&e.describe(pos), d))?;
        if block.len() != e.count as usize {
            return Err(self.corrupt(
                &e.describe(pos),
                format!("holds {} quanta, the index says {}", block.len(), e.count),
            ));
        }
        Ok(block)
    }

    fn quanta_block(&self, pos: usize) -> Result<Arc<QuantaBlock<'static>>> {
        // A poisoned lock only means another thread panicked while holding
        // it; the cached value is still a fully decoded block or None.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, b)) = cache.as_ref() {
            if *p == pos {
                return Ok(Arc::clone(b));
            }
        }
        let block = Arc::new(self.decode_quanta_block(pos)?);
        *cache = Some((pos, Arc::clone(&block)));
        Ok(block)
    }
}

struct QuantaIter<'b> {
    bundle: &'b Bundle,
    pos: usize,
    block: Option<Arc<QuantaBlock<'static>>>,
    next_in_block: u32,
    failed: bool,
}

impl Iterator for QuantaIter<'_> {
    type Item = Result<BundleQuantum>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bundle.quanta_blocks.end {
            return None;
        }
        let entry = self.bundle.index[self.pos];
        let block = match &self.block {
            Some(b) => Arc::clone(b),
            None => match self.bundle.quanta_block(self.pos) {
                Ok(b) => {
                    self.block = Some(Arc::clone(&b));
                    b
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            },
        };
        let i = self.next_in_block;
        let item = block
            .quantum(i as usize, entry.first + i, self.bundle.tasks.len())
            .map_err(|d| self.bundle.corrupt(&entry.describe(self.pos), d));
        self.failed = item.is_err();
        self.next_in_block += 1;
        if self.next_in_block >= entry.count {
            self.pos += 1;
            self.block = None;
            self.next_in_block = 0;
        }
        Some(item)
    }
}

/// Decodes a whole postcard payload; trailing bytes are corruption.
fn decode_postcard<'de, T: serde::Deserialize<'de>>(raw: &'de [u8]) -> Result<T, String> {
    let (value, rest) =
        postcard::take_from_bytes(raw).map_err(|e| format!("cannot decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes after the payload", rest.len()));
    }
    Ok(value)
}

/// Checks that the blocks tile the file between the preamble and the index
/// in the fixed order header, dimension records, quanta (contiguous indices
/// from 0), clusters. Returns the quanta blocks' positions and the count.
fn check_layout(index: &[IndexEntry], index_offset: u64) -> Result<(Range<usize>, u64), String> {
    if index.len() < 3 {
        return Err(format!("{} blocks, at least 3 expected", index.len()));
    }
    let mut offset = PREAMBLE_LEN;
    let last = index.len() - 1;
    let mut next_quantum = 0u64;
    for (i, e) in index.iter().enumerate() {
        let expected = match i {
            0 => BlockKind::Header,
            1 => BlockKind::DimensionRecords,
            _ if i == last => BlockKind::Clusters,
            _ => BlockKind::Quanta,
        };
        if e.kind != expected {
            return Err(format!("block {i} is {:?}, expected {expected:?}", e.kind));
        }
        if e.offset != offset {
            return Err(format!(
                "block {i} starts at {}, expected {offset}",
                e.offset
            ));
        }
        offset = e
            .offset
            .checked_add(e.length)
            .filter(|end| *end <= index_offset)
            .ok_or_else(|| format!("block {i} runs past the index"))?;
        if e.kind == BlockKind::Quanta {
            if u64::from(e.first) != next_quantum || e.count == 0 {
                return Err(format!(
                    "block {i} holds quanta {}+{}, expected to start at {next_quantum}",
                    e.first, e.count
                ));
            }
            next_quantum += u64::from(e.count);
            if next_quantum > u64::from(u32::MAX) {
                return Err("more than 2^32 - 1 quanta".into());
            }
        } else if e.first != 0 || e.count != 0 {
            return Err(format!("block {i} ({:?}) has a quantum range", e.kind));
        }
    }
    if offset != index_offset {
        return Err(format!(
            "blocks end at {offset} but the index starts at {index_offset}"
        ));
    }
    Ok((2..last, next_quantum))
}

/// The decoded payload of block `pos`, after checking its checksum and that
/// its own header agrees with the index.
fn read_block(file: &File, path: &Path, index: &[IndexEntry], pos: usize) -> Result<Vec<u8>> {
    let e = index[pos];
    let what = e.describe(pos);
    let corrupt = |detail: String| BundleError::Corrupt {
        path: path.to_path_buf(),
        what: what.clone(),
        detail,
    };
    // check_layout keeps every block inside the (real) file, so this
    // allocation is bounded by the file size.
    let mut stored = vec![0u8; e.length as usize];
    file.read_exact_at(&mut stored, e.offset)
        .map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            what: format!("reading {what}"),
            source,
        })?;
    if crate::hash::xxh3_64(&stored) != e.checksum {
        return Err(BundleError::Checksum {
            path: path.to_path_buf(),
            what,
        });
    }
    if stored[..BLOCK_HEADER_LEN] != e.block_header() {
        return Err(corrupt("its header disagrees with the index".into()));
    }
    let payload = &stored[BLOCK_HEADER_LEN..];
    let raw = match e.codec {
        Codec::Raw => payload.to_vec(),
        // raw_len is capped at MAX_BLOCK_RAW when the index is decoded.
        Codec::Zstd => zstd::bulk::decompress(payload, e.raw_len as usize)
            .map_err(|err| corrupt(format!("decompression failed: {err}")))?,
    };
    if raw.len() != e.raw_len as usize {
        return Err(corrupt(format!(
            "decoded to {} bytes, expected {}",
            raw.len(),
            e.raw_len
        )));
    }
    Ok(raw)
}
