//! The bundle's byte layout: fixed-size preamble, block headers, index
//! entries and footer, and the compact postcard payloads of quanta and
//! cluster blocks with their conversion to and from the API types.
//!
//! Decoding never trusts the file: every index into a table is checked, and
//! a failure is returned as a detail string that the reader turns into a
//! [`super::BundleError::Corrupt`] naming the block.

use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    BundleHeader, BundleQuantum, BundleRef, Cluster, ConnectionRefs, ConnectionView, QuantumView,
};
use crate::data_id::{DataId, DataIdValue};

/// The version this code writes and reads. Version 2 added the
/// repository's identity and the datasets a `--clobber` bundle replaces to
/// the header; version 1 bundles are refused (preflight again).
pub const BUNDLE_FORMAT_VERSION: u32 = 2;

pub(crate) const MAGIC: &[u8; 8] = b"QUANTAB\0";
pub(crate) const PREAMBLE_LEN: u64 = 32;
pub(crate) const FOOTER_LEN: u64 = 40;
pub(crate) const INDEX_ENTRY_LEN: u64 = 40;
pub(crate) const BLOCK_HEADER_LEN: usize = 16;
/// The largest decoded block payload accepted: bounds the allocation a
/// corrupt or hostile length could cause. The writer refuses larger blocks
/// (use fewer quanta per block).
pub(crate) const MAX_BLOCK_RAW: u32 = 256 << 20;
pub(crate) const ZSTD_LEVEL: i32 = 3;
const BLOCK_TAG: u8 = b'Q';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Header = 1,
    DimensionRecords = 2,
    Quanta = 3,
    Clusters = 4,
}

impl BlockKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => BlockKind::Header,
            2 => BlockKind::DimensionRecords,
            3 => BlockKind::Quanta,
            4 => BlockKind::Clusters,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The preamble layout is fixed for all format versions: the checksum is
/// verified before the version, so a flipped version byte reads as damage
/// rather than as an unknown version.
pub(crate) fn encode_preamble(file_len: u64) -> [u8; PREAMBLE_LEN as usize] {
    let mut p = [0u8; PREAMBLE_LEN as usize];
    p[..8].copy_from_slice(MAGIC);
    p[8..12].copy_from_slice(&BUNDLE_FORMAT_VERSION.to_le_bytes());
    // 12..16: flags, none defined.
    p[16..24].copy_from_slice(&file_len.to_le_bytes());
    let sum = crate::hash::xxh3_64(&p[..24]);
    p[24..32].copy_from_slice(&sum.to_le_bytes());
    p
}

/// The preamble's fields once its magic and checksum are known good.
pub(crate) struct Preamble {
    pub version: u32,
    pub flags: u32,
    pub file_len: u64,
}

pub(crate) enum PreambleError {
    BadMagic,
    Checksum,
}

pub(crate) fn decode_preamble(p: &[u8; PREAMBLE_LEN as usize]) -> Result<Preamble, PreambleError> {
    if &p[..8] != MAGIC {
        return Err(PreambleError::BadMagic);
    }
    if crate::hash::xxh3_64(&p[..24]) != le_u64(p, 24) {
        return Err(PreambleError::Checksum);
    }
    Ok(Preamble {
        version: le_u32(p, 8),
        flags: le_u32(p, 12),
        file_len: le_u64(p, 16),
    })
}

pub(crate) fn encode_footer(
    index_offset: u64,
    index_len: u64,
    index_sum: u64,
) -> [u8; FOOTER_LEN as usize] {
    let mut f = [0u8; FOOTER_LEN as usize];
    f[..8].copy_from_slice(&index_offset.to_le_bytes());
    f[8..16].copy_from_slice(&index_len.to_le_bytes());
    f[16..24].copy_from_slice(&index_sum.to_le_bytes());
    let sum = crate::hash::xxh3_64(&f[..24]);
    f[24..32].copy_from_slice(&sum.to_le_bytes());
    f[32..40].copy_from_slice(MAGIC);
    f
}

pub(crate) struct Footer {
    pub index_offset: u64,
    pub index_len: u64,
    pub index_sum: u64,
}

pub(crate) fn decode_footer(f: &[u8; FOOTER_LEN as usize]) -> Result<Footer, String> {
    if &f[32..40] != MAGIC {
        return Err("the footer magic is missing".into());
    }
    if crate::hash::xxh3_64(&f[..24]) != le_u64(f, 24) {
        return Err("the footer checksum does not match".into());
    }
    Ok(Footer {
        index_offset: le_u64(f, 0),
        index_len: le_u64(f, 8),
        index_sum: le_u64(f, 16),
    })
}

/// Where a block is and what it holds; the same fields (but offset, length
/// and checksum) are repeated in the block's own header and must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub kind: BlockKind,
    pub codec: Codec,
    pub first: u32,
    pub count: u32,
    pub raw_len: u32,
    pub offset: u64,
    /// Stored length, block header included.
    pub length: u64,
    /// xxh3-64 of the stored block, header included.
    pub checksum: u64,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.push(self.codec as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
    }

    /// `b` is exactly [`INDEX_ENTRY_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let kind =
            BlockKind::from_u8(b[0]).ok_or_else(|| format!("unknown block kind {}", b[0]))?;
        let codec = Codec::from_u8(b[1]).ok_or_else(|| format!("unknown codec {}", b[1]))?;
        if b[2] != 0 || b[3] != 0 {
            return Err("reserved bytes are not zero".into());
        }
        let e = IndexEntry {
            kind,
            codec,
            first: le_u32(b, 4),
            count: le_u32(b, 8),
            raw_len: le_u32(b, 12),
            offset: le_u64(b, 16),
            length: le_u64(b, 24),
            checksum: le_u64(b, 32),
        };
        if e.raw_len > MAX_BLOCK_RAW {
            return Err(format!(
                "decoded length {} exceeds the limit {MAX_BLOCK_RAW}",
                e.raw_len
            ));
        }
        if e.length < BLOCK_HEADER_LEN as u64 {
            return Err(format!(
                "stored length {} is shorter than a block header",
                e.length
            ));
        }
        Ok(e)
    }

    pub fn block_header(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut h = [0u8; BLOCK_HEADER_LEN];
        h[0] = BLOCK_TAG;
        h[1] = self.kind as u8;
        h[2] = self.codec as u8;
        h[4..8].copy_from_slice(&self.first.to_le_bytes());
        h[8..12].copy_from_slice(&self.count.to_le_bytes());
        h[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        h
    }

    /// "block 3 (quanta 3072..4095)": how errors name a block.
    pub fn describe(&self, block_no: usize) -> String {
        match self.kind {
            BlockKind::Header => format!("block {block_no} (header)"),
            BlockKind::DimensionRecords => format!("block {block_no} (dimension records)"),
            BlockKind::Clusters => format!("block {block_no} (clusters)"),
            BlockKind::Quanta => format!(
                "block {block_no} (quanta {}..{})",
                self.first,
                u64::from(self.first) + u64::from(self.count).max(1) - 1
            ),
        }
    }
}

/// The payload of the header block.
#[derive(Serialize, Deserialize)]
pub(crate) struct HeaderBlock<'a> {
    pub header: Cow<'a, BundleHeader>,
    pub tasks_json: String,
    pub dataset_types_json: String,
}

#[derive(Serialize, Deserialize, PartialEq, Eq, Hash, Clone)]
enum ValueDisk {
    Int(i64),
    /// Index into the block's strings.
    Str(u32),
}

#[derive(Serialize, Deserialize, PartialEq, Eq, Hash, Clone)]
struct DataIdDisk {
    /// Index into the block's key groups.
    keys: u32,
    values: Vec<ValueDisk>,
}

#[derive(Serialize, Deserialize)]
struct DatasetDisk<'a> {
    id: [u8; 16],
    dataset_type: u32,
    data_id: u32,
    run: u32,
    path: Cow<'a, str>,
    size: Option<u64>,
    checksum: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
struct ConnDisk {
    name: u32,
    datasets: Vec<u32>,
}

impl QuantumDisk {
    /// Checks what a quantum refers to outside its block: its task, among
    /// `n_tasks`, and its upstream quanta, which must come before `index`,
    /// its own bundle index.
    fn check_task_and_upstream(&self, index: u32, n_tasks: usize) -> Result<(), String> {
        if self.task as usize >= n_tasks {
            return Err(format!(
                "quantum {index} names task {} but there are {n_tasks} tasks",
                self.task
            ));
        }
        match self.upstream.iter().find(|&&d| d == 0 || d > index) {
            Some(&delta) => Err(format!(
                "quantum {index} lists upstream quantum {}, which is not before it",
                i64::from(index) - i64::from(delta)
            )),
            None => Ok(()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct QuantumDisk {
    id: [u8; 16],
    task: u32,
    data_id: u32,
    inputs: Vec<ConnDisk>,
    prerequisites: Vec<ConnDisk>,
    outputs: Vec<ConnDisk>,
    /// Own index minus the upstream index: always >= 1, and small numbers
    /// encode in one varint byte.
    upstream: Vec<u32>,
}

/// The payload of a quanta block: per-block tables, so each block decodes on
/// its own, and quanta that refer to them by index.
#[derive(Serialize, Deserialize)]
pub(crate) struct QuantaBlock<'a> {
    strings: Vec<Cow<'a, str>>,
    /// Dimension names (string indices) of each distinct data ID key set.
    key_groups: Vec<Vec<u32>>,
    data_ids: Vec<DataIdDisk>,
    datasets: Vec<DatasetDisk<'a>>,
    quanta: Vec<QuantumDisk>,
}

/// Builds one [`QuantaBlock`], deduplicating strings, key groups, data IDs
/// and datasets within the block.
pub(crate) struct QuantaBlockBuilder<'a> {
    block: QuantaBlock<'a>,
    first: u32,
    string_ix: HashMap<&'a str, u32>,
    group_ix: HashMap<Vec<u32>, u32>,
    data_id_ix: HashMap<&'a DataId, u32>,
    dataset_ix: HashMap<Uuid, u32>,
}

fn table_index(len: usize) -> Result<u32, String> {
    u32::try_from(len).map_err(|_| "a block table has more than 2^32 entries".to_string())
}

impl<'a> QuantaBlockBuilder<'a> {
    pub fn new(first: u32) -> Self {
        Self {
            block: QuantaBlock {
                strings: Vec::new(),
                key_groups: Vec::new(),
                data_ids: Vec::new(),
                datasets: Vec::new(),
                quanta: Vec::new(),
            },
            first,
            string_ix: HashMap::new(),
            group_ix: HashMap::new(),
            data_id_ix: HashMap::new(),
            dataset_ix: HashMap::new(),
        }
    }

    fn string(&mut self, s: &'a str) -> Result<u32, String> {
        if let Some(&i) = self.string_ix.get(s) {
            return Ok(i);
        }
        let i = table_index(self.block.strings.len())?;
        self.block.strings.push(Cow::Borrowed(s));
        self.string_ix.insert(s, i);
        Ok(i)
    }

    fn data_id(&mut self, d: &'a DataId) -> Result<u32, String> {
        if let Some(&i) = self.data_id_ix.get(d) {
            return Ok(i);
        }
        let mut keys = Vec::with_capacity(d.len());
        let mut values = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            keys.push(self.string(k)?);
            values.push(match v {
                DataIdValue::Int(n) => ValueDisk::Int(*n),
                DataIdValue::Str(s) => ValueDisk::Str(self.string(s)?),
            });
        }
        let keys = match self.group_ix.get(&keys) {
            Some(&g) => g,
            None => {
                let g = table_index(self.block.key_groups.len())?;
                self.group_ix.insert(keys.clone(), g);
                self.block.key_groups.push(keys);
                g
            }
        };
        let i = table_index(self.block.data_ids.len())?;
        self.block.data_ids.push(DataIdDisk { keys, values });
        self.data_id_ix.insert(d, i);
        Ok(i)
    }

    fn dataset(&mut self, r: &'a BundleRef) -> Result<u32, String> {
        // The writer has checked that one UUID always carries the same ref.
        if let Some(&i) = self.dataset_ix.get(&r.id) {
            return Ok(i);
        }
        let disk = DatasetDisk {
            id: *r.id.as_bytes(),
            dataset_type: self.string(&r.dataset_type)?,
            data_id: self.data_id(&r.data_id)?,
            run: self.string(&r.run)?,
            path: Cow::Borrowed(&r.path),
            size: r.size,
            checksum: r.checksum.as_deref().map(Cow::Borrowed),
        };
        let i = table_index(self.block.datasets.len())?;
        self.block.datasets.push(disk);
        self.dataset_ix.insert(r.id, i);
        Ok(i)
    }

    fn connections(&mut self, conns: &[ConnectionView<'a>]) -> Result<Vec<ConnDisk>, String> {
        let mut out = Vec::with_capacity(conns.len());
        for (name, refs) in conns {
            let name = self.string(name)?;
            let datasets = refs
                .iter()
                .map(|r| self.dataset(r))
                .collect::<Result<_, _>>()?;
            out.push(ConnDisk { name, datasets });
        }
        Ok(out)
    }

    /// Adds the next quantum, refusing a task index out of range or an
    /// upstream quantum that is not before it.
    pub fn push(&mut self, q: &QuantumView<'a>, n_tasks: usize) -> Result<(), String> {
        let own = self.first as usize + self.block.quanta.len();
        if q.task as usize >= n_tasks {
            return Err(format!(
                "quantum {own} names task {} but there are {n_tasks} tasks",
                q.task
            ));
        }
        if let Some(&u) = q.upstream.iter().find(|&&u| u as usize >= own) {
            return Err(format!(
                "quantum {own} lists upstream quantum {u}, which is not before it (quanta must be in topological order)"
            ));
        }
        let disk = QuantumDisk {
            id: *q.id.as_bytes(),
            task: q.task,
            data_id: self.data_id(q.data_id)?,
            inputs: self.connections(&q.inputs)?,
            prerequisites: self.connections(&q.prerequisites)?,
            outputs: self.connections(&q.outputs)?,
            upstream: q
                .upstream
                .iter()
                .map(|&u| (own - u as usize) as u32)
                .collect(),
        };
        self.block.quanta.push(disk);
        Ok(())
    }

    pub fn finish(self) -> QuantaBlock<'a> {
        self.block
    }
}

impl QuantaBlock<'_> {
    pub fn len(&self) -> usize {
        self.quanta.len()
    }

    fn string(&self, i: u32) -> Result<&str, String> {
        self.strings
            .get(i as usize)
            .map(|s| s.as_ref())
            .ok_or_else(|| {
                format!(
                    "string index {i} is out of range ({} strings)",
                    self.strings.len()
                )
            })
    }

    fn data_id(&self, i: u32) -> Result<DataId, String> {
        let d = self.data_ids.get(i as usize).ok_or_else(|| {
            format!(
                "data ID index {i} is out of range ({} data IDs)",
                self.data_ids.len()
            )
        })?;
        let keys = self.key_groups.get(d.keys as usize).ok_or_else(|| {
            format!(
                "key group index {} is out of range ({} groups)",
                d.keys,
                self.key_groups.len()
            )
        })?;
        if keys.len() != d.values.len() {
            return Err(format!(
                "data ID {i} has {} values for {} dimensions",
                d.values.len(),
                keys.len()
            ));
        }
        let mut pairs = Vec::with_capacity(keys.len());
        for (k, v) in keys.iter().zip(&d.values) {
            let value = match v {
                ValueDisk::Int(n) => DataIdValue::Int(*n),
                ValueDisk::Str(s) => DataIdValue::from(self.string(*s)?),
            };
            pairs.push((self.string(*k)?, value));
        }
        Ok(DataId::from_pairs(pairs))
    }

    fn dataset(&self, i: u32) -> Result<BundleRef, String> {
        let d = self.datasets.get(i as usize).ok_or_else(|| {
            format!(
                "dataset index {i} is out of range ({} datasets)",
                self.datasets.len()
            )
        })?;
        Ok(BundleRef {
            id: Uuid::from_bytes(d.id),
            dataset_type: self.string(d.dataset_type)?.to_string(),
            data_id: self.data_id(d.data_id)?,
            run: self.string(d.run)?.to_string(),
            path: d.path.to_string(),
            size: d.size,
            checksum: d.checksum.as_ref().map(|c| c.to_string()),
        })
    }

    fn connections(&self, conns: &[ConnDisk]) -> Result<ConnectionRefs, String> {
        conns
            .iter()
            .map(|c| {
                let refs = c
                    .datasets
                    .iter()
                    .map(|&d| self.dataset(d))
                    .collect::<Result<_, _>>()?;
                Ok((self.string(c.name)?.to_string(), refs))
            })
            .collect()
    }

    /// The quantum at `pos` in this block, whose bundle index is `index`.
    pub fn quantum(&self, pos: usize, index: u32, n_tasks: usize) -> Result<BundleQuantum, String> {
        let q = self
            .quanta
            .get(pos)
            .ok_or_else(|| format!("holds {} quanta, not {}", self.quanta.len(), pos + 1))?;
        q.check_task_and_upstream(index, n_tasks)?;
        // Checked: every delta is at least 1 and at most `index`.
        let upstream = q.upstream.iter().map(|&delta| index - delta).collect();
        Ok(BundleQuantum {
            id: Uuid::from_bytes(q.id),
            task: q.task,
            data_id: self.data_id(q.data_id)?,
            inputs: self.connections(&q.inputs)?,
            prerequisites: self.connections(&q.prerequisites)?,
            outputs: self.connections(&q.outputs)?,
            upstream,
        })
    }
}

/// A quanta block decoded and checked whole, whose quanta are read through
/// borrowed views ([`BlockQuantum`]): for a reader that looks at every
/// quantum once and keeps little of it (merge), where building an owned
/// [`BundleQuantum`] per quantum, with a copy of every string and data ID of
/// its refs, was most of the decoding's cost. Every index into the block's
/// tables is checked once, here, so reading a view cannot fail.
pub struct DecodedBlock {
    block: QuantaBlock<'static>,
    /// The block's data IDs, built once (a quantum's refs share them).
    data_ids: Vec<DataId>,
    first: u32,
}

impl DecodedBlock {
    /// Checks `block`, whose first quantum is bundle quantum `first`, for
    /// a bundle with `n_tasks` tasks.
    pub(crate) fn new(
        block: QuantaBlock<'static>,
        first: u32,
        n_tasks: usize,
    ) -> Result<Self, String> {
        let data_ids = (0..block.data_ids.len() as u32)
            .map(|i| block.data_id(i))
            .collect::<Result<Vec<_>, _>>()?;
        // Out-of-range indices are reported by the owned accessors, so that
        // both ways of reading a block name a corruption alike.
        for d in &block.datasets {
            block.string(d.dataset_type)?;
            block.string(d.run)?;
            if d.data_id as usize >= data_ids.len() {
                block.data_id(d.data_id)?;
            }
        }
        for pos in 0..block.quanta.len() {
            let index = first
                .checked_add(pos as u32)
                .ok_or("quantum indices overflow")?;
            // The same checks as building the owned quantum, same messages.
            let q = &block.quanta[pos];
            q.check_task_and_upstream(index, n_tasks)?;
            if q.data_id as usize >= data_ids.len() {
                block.data_id(q.data_id)?;
            }
            for c in q.inputs.iter().chain(&q.prerequisites).chain(&q.outputs) {
                block.string(c.name)?;
                if let Some(&bad) = c
                    .datasets
                    .iter()
                    .find(|&&d| d as usize >= block.datasets.len())
                {
                    block.dataset(bad)?;
                }
            }
        }
        Ok(Self {
            block,
            data_ids,
            first,
        })
    }

    pub fn len(&self) -> usize {
        self.block.quanta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.block.quanta.is_empty()
    }

    /// The bundle index of the block's first quantum.
    pub fn first_index(&self) -> u32 {
        self.first
    }

    /// The quantum at `pos` in the block (bundle index
    /// `first_index() + pos`), if there is one.
    pub fn quantum(&self, pos: usize) -> Option<BlockQuantum<'_>> {
        let q = self.block.quanta.get(pos)?;
        Some(BlockQuantum {
            id: Uuid::from_bytes(q.id),
            task: q.task,
            data_id: &self.data_ids[q.data_id as usize],
            disk: q,
            block: self,
        })
    }

    fn string(&self, i: u32) -> &str {
        &self.block.strings[i as usize]
    }

    fn dataset(&self, i: u32) -> BlockRef<'_> {
        let d = &self.block.datasets[i as usize];
        BlockRef {
            id: Uuid::from_bytes(d.id),
            dataset_type: self.string(d.dataset_type),
            data_id: &self.data_ids[d.data_id as usize],
            run: self.string(d.run),
            path: &d.path,
            size: d.size,
            checksum: d.checksum.as_deref(),
        }
    }
}

/// A quantum of a [`DecodedBlock`], borrowed: what a [`BundleQuantum`]
/// holds, without copies.
#[derive(Clone, Copy)]
pub struct BlockQuantum<'b> {
    pub id: Uuid,
    /// Index into the bundle's tasks.
    pub task: u32,
    pub data_id: &'b DataId,
    disk: &'b QuantumDisk,
    block: &'b DecodedBlock,
}

impl<'b> BlockQuantum<'b> {
    pub fn inputs(&self) -> impl Iterator<Item = BlockConnection<'b>> + 'b {
        self.connections(&self.disk.inputs)
    }

    pub fn prerequisites(&self) -> impl Iterator<Item = BlockConnection<'b>> + 'b {
        self.connections(&self.disk.prerequisites)
    }

    pub fn outputs(&self) -> impl Iterator<Item = BlockConnection<'b>> + 'b {
        self.connections(&self.disk.outputs)
    }

    fn connections(&self, conns: &'b [ConnDisk]) -> impl Iterator<Item = BlockConnection<'b>> + 'b {
        let block = self.block;
        conns.iter().map(move |c| BlockConnection {
            name: block.string(c.name),
            datasets: &c.datasets,
            block,
        })
    }
}

/// One connection of a [`BlockQuantum`] and its refs.
#[derive(Clone, Copy)]
pub struct BlockConnection<'b> {
    pub name: &'b str,
    datasets: &'b [u32],
    block: &'b DecodedBlock,
}

impl<'b> BlockConnection<'b> {
    pub fn refs(&self) -> impl Iterator<Item = BlockRef<'b>> + 'b {
        let block = self.block;
        self.datasets.iter().map(move |&d| block.dataset(d))
    }
}

/// A dataset ref of a [`BlockQuantum`], borrowed: a [`BundleRef`]'s fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockRef<'b> {
    pub id: Uuid,
    pub dataset_type: &'b str,
    pub data_id: &'b DataId,
    pub run: &'b str,
    /// Relative to the datastore root.
    pub path: &'b str,
    pub size: Option<u64>,
    pub checksum: Option<&'b str>,
}

impl BlockRef<'_> {
    pub fn to_owned_ref(&self) -> BundleRef {
        BundleRef {
            id: self.id,
            dataset_type: self.dataset_type.to_string(),
            data_id: self.data_id.clone(),
            run: self.run.to_string(),
            path: self.path.to_string(),
            size: self.size,
            checksum: self.checksum.map(str::to_string),
        }
    }
}

/// A cluster on disk: member indices as deltas from the previous member
/// (zigzag varints), so runs of consecutive quanta cost a byte each before
/// compression and almost nothing after.
#[derive(Serialize, Deserialize)]
pub(crate) struct ClusterDisk<'a> {
    name: Cow<'a, str>,
    deltas: Vec<i64>,
}

pub(crate) fn clusters_to_disk(clusters: &[Cluster]) -> Vec<ClusterDisk<'_>> {
    clusters
        .iter()
        .map(|c| {
            let mut prev = 0i64;
            let deltas = c
                .quanta
                .iter()
                .map(|&q| {
                    let d = i64::from(q) - prev;
                    prev = i64::from(q);
                    d
                })
                .collect();
            ClusterDisk {
                name: Cow::Borrowed(&c.name),
                deltas,
            }
        })
        .collect()
}

pub(crate) fn clusters_from_disk(
    disk: Vec<ClusterDisk<'_>>,
    n_quanta: u64,
) -> Result<Vec<Cluster>, String> {
    disk.into_iter()
        .map(|c| {
            let mut prev = 0i64;
            let mut quanta = Vec::with_capacity(c.deltas.len());
            for d in c.deltas {
                let q = prev
                    .checked_add(d)
                    .filter(|q| *q >= 0 && (*q as u64) < n_quanta)
                    .ok_or_else(|| {
                        format!("cluster `{}` lists a quantum outside 0..{n_quanta}", c.name)
                    })?;
                quanta.push(q as u32);
                prev = q;
            }
            Ok(Cluster {
                name: c.name.into_owned(),
                quanta,
            })
        })
        .collect()
}
