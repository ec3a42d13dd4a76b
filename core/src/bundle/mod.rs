//! The bundle: one file holding everything a worker needs to run quanta with
//! no database — header, task definitions, dataset types, the dimension
//! records used, every quantum with its resolved input and predicted output
//! refs and graph edges, and optional clusters for batch jobs.
//!
//! Owns: the in-memory bundle types, the byte format and its integrity
//! checks. Must not: touch SQL, or know how a bundle's contents are chosen
//! (that is preflight's job) or executed (the workers').
//!
//! # File layout (all integers little-endian)
//!
//! ```text
//! preamble  32 B   magic "QUANTAB\0" | format version u32 | flags u32 (0)
//!                  | file length u64 | xxh3-64 of the previous 24 bytes
//! blocks           header, dimension records, quanta 0.., clusters — each a
//!                  16 B block header (tag 'Q', kind, codec, 0, first quantum
//!                  u32, count u32, raw payload length u32) + payload
//!                  (postcard, zstd-compressed when codec = 1)
//! index            one 40 B entry per block: kind u8, codec u8, 0 u16,
//!                  first u32, count u32, raw length u32, offset u64,
//!                  stored length u64, xxh3-64 of the stored block u64
//! footer    40 B   index offset u64 | index length u64 | index xxh3-64
//!                  | xxh3-64 of the previous 24 bytes | magic
//! ```
//!
//! Every byte of the file is covered by a checksum, and the preamble records
//! the file length, so truncation at any byte or a flipped byte anywhere is
//! refused: at [`Bundle::open`] for the preamble, footer, index and header
//! block, and when a block is read (or by [`Bundle::verify`]) for the others.
//! [`Bundle::open`] reads only the preamble, footer, index and header block,
//! with positioned reads, so opening a million-quantum bundle is cheap.
//!
//! On disk, data IDs are not serde maps (postcard cannot decode the untagged
//! [`DataIdValue`](crate::DataIdValue)): each quanta block has its own string
//! table, table of dimension-key groups, table of data IDs and table of
//! datasets, and quanta refer to them by index. Configs, task definitions and
//! dimension records are stored as JSON text.

mod format;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::data_id::DataId;
use crate::dataset::DatasetType;
use crate::pipeline::TaskDef;

pub use format::{BlockConnection, BlockQuantum, BlockRef, DecodedBlock, BUNDLE_FORMAT_VERSION};
pub use reader::Bundle;
pub use writer::{write_bundle, write_bundle_from};

/// Dimension records used by the quanta: element name → records (field name
/// → value), as the registry returned them.
pub type DimensionRecords = BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>>;

/// A connection name and the refs bound to it.
pub type ConnectionRefs = Vec<(String, Vec<BundleRef>)>;

/// What a bundle was made from and for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// Must equal [`BUNDLE_FORMAT_VERSION`] when writing.
    pub format_version: u32,
    pub bundle_id: Uuid,
    pub universe_digest: String,
    pub pipeline_digest: String,
    pub pipeline_yaml: String,
    pub input_collections: Vec<String>,
    pub output_run: String,
    pub output_chain: Option<String>,
    /// Absolute path of the datastore root.
    pub datastore_root: String,
    /// Datastore configuration as JSON text, opaque to core.
    pub datastore_config: String,
    pub clobber: bool,
    pub skip_existing: bool,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// `user@host`.
    pub created_by: String,
    pub quanta_version: String,
    pub command_line: Vec<String>,
    /// Must equal the number of quanta when writing.
    pub n_quanta: u64,
    pub where_clause: String,
    /// The identity of the repository whose registry the graph was built
    /// from (its `repository_id`): merge refuses a bundle of another
    /// repository before writing anything.
    pub repository_id: Uuid,
    /// Registered datasets of the output RUN that quanta of this bundle
    /// replace (`--clobber`), sorted by the replacing dataset's UUID.
    pub replaced: Vec<ReplacedDataset>,
}

/// A dataset already registered in the output RUN that a quantum's output
/// replaces under `--clobber`: merge removes its row in the transaction that
/// registers the replacement, only while the row is still this UUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedDataset {
    /// The predicted output that replaces it.
    pub by: Uuid,
    /// The registered dataset it replaces.
    pub id: Uuid,
    /// Its file, relative to the datastore root (removed after the merge
    /// unregistered it, unless the replacement has the same path).
    pub path: String,
}

/// A named group of quanta run together by one batch job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    /// Quantum indices.
    pub quanta: Vec<u32>,
}

/// A resolved dataset as a worker needs it: enough to read an input or
/// write a predicted output without asking a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub id: Uuid,
    pub dataset_type: String,
    pub data_id: DataId,
    pub run: String,
    /// Relative to the datastore root.
    pub path: String,
    pub size: Option<u64>,
    pub checksum: Option<String>,
}

/// One quantum: a task applied to one data ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleQuantum {
    pub id: Uuid,
    /// Index into the bundle's tasks.
    pub task: u32,
    pub data_id: DataId,
    pub inputs: ConnectionRefs,
    pub prerequisites: ConnectionRefs,
    pub outputs: ConnectionRefs,
    /// Indices of the quanta whose outputs this one consumes, each smaller
    /// than this quantum's own index (quanta are in topological order).
    pub upstream: Vec<u32>,
}

/// Everything a bundle holds, in memory. Quantum `i` is `quanta[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleContents {
    pub header: BundleHeader,
    pub tasks: Vec<TaskDef>,
    pub dataset_types: Vec<DatasetType>,
    pub dimension_records: DimensionRecords,
    pub clusters: Vec<Cluster>,
    pub quanta: Vec<BundleQuantum>,
}

/// Everything of a bundle but its quanta, borrowed: what
/// [`write_bundle_from`] writes around the quanta of a [`QuantaSource`].
#[derive(Debug, Clone, Copy)]
pub struct BundleParts<'a> {
    pub header: &'a BundleHeader,
    pub tasks: &'a [TaskDef],
    pub dataset_types: &'a [DatasetType],
    pub dimension_records: &'a DimensionRecords,
    pub clusters: &'a [Cluster],
}

/// A connection name and the refs bound to it, borrowed.
pub type ConnectionView<'a> = (&'a str, Vec<&'a BundleRef>);

/// One quantum as the writer reads it: its refs are borrowed from wherever
/// the caller keeps its datasets (preflight: one table of all the graph's
/// datasets), so writing never copies them.
#[derive(Debug, Clone)]
pub struct QuantumView<'a> {
    pub id: Uuid,
    pub task: u32,
    pub data_id: &'a DataId,
    pub inputs: Vec<ConnectionView<'a>>,
    pub prerequisites: Vec<ConnectionView<'a>>,
    pub outputs: Vec<ConnectionView<'a>>,
    pub upstream: Vec<u32>,
}

impl QuantumView<'_> {
    /// Dataset refs over all connections (a ref listed twice counts twice).
    pub fn n_refs(&self) -> usize {
        self.inputs
            .iter()
            .chain(&self.prerequisites)
            .chain(&self.outputs)
            .map(|(_, r)| r.len())
            .sum()
    }
}

/// What [`QuantaSource::with_views`] calls with a block's quanta: it
/// encodes them (the block's raw payload) or says why it cannot.
pub type EncodeViews<'f> = dyn FnMut(&[QuantumView<'_>]) -> Result<Vec<u8>, String> + 'f;

/// The quanta of a bundle, in bundle order, for [`write_bundle_from`].
///
/// Contract: a dataset UUID always comes with the same ref (type, data ID,
/// run, path, size, checksum) wherever it appears. [`write_bundle`] checks
/// this for [`BundleContents`]; a source that hands out refs from a single
/// table of datasets keeps it by construction.
pub trait QuantaSource: Sync {
    fn n_quanta(&self) -> usize;
    /// Calls `f` once with quanta `[start, end)` (`start <= end <=
    /// n_quanta()`), and returns what it returns. A source may build the
    /// refs of those quanta for the call only (preflight keeps its datasets
    /// in a compact table and makes each block's refs as it is written), so
    /// the views do not outlive it; an error making them is returned as is.
    fn with_views(
        &self,
        start: usize,
        end: usize,
        f: &mut EncodeViews<'_>,
    ) -> Result<Vec<u8>, String>;
    /// The number of refs of quantum `index` over all its connections (a
    /// ref listed twice counts twice).
    fn n_refs(&self, index: usize) -> usize;
}

fn connection_view(conns: &ConnectionRefs) -> Vec<ConnectionView<'_>> {
    conns
        .iter()
        .map(|(name, refs)| (name.as_str(), refs.iter().collect()))
        .collect()
}

impl BundleQuantum {
    pub fn view(&self) -> QuantumView<'_> {
        QuantumView {
            id: self.id,
            task: self.task,
            data_id: &self.data_id,
            inputs: connection_view(&self.inputs),
            prerequisites: connection_view(&self.prerequisites),
            outputs: connection_view(&self.outputs),
            upstream: self.upstream.clone(),
        }
    }
}

impl QuantaSource for [BundleQuantum] {
    fn n_quanta(&self) -> usize {
        self.len()
    }
    fn with_views(
        &self,
        start: usize,
        end: usize,
        f: &mut EncodeViews<'_>,
    ) -> Result<Vec<u8>, String> {
        let views: Vec<QuantumView<'_>> = self[start..end].iter().map(|q| q.view()).collect();
        f(&views)
    }
    fn n_refs(&self, index: usize) -> usize {
        let q = &self[index];
        q.inputs
            .iter()
            .chain(&q.prerequisites)
            .chain(&q.outputs)
            .map(|(_, r)| r.len())
            .sum()
    }
}

impl BundleContents {
    pub fn parts(&self) -> BundleParts<'_> {
        BundleParts {
            header: &self.header,
            tasks: &self.tasks,
            dataset_types: &self.dataset_types,
            dimension_records: &self.dimension_records,
            clusters: &self.clusters,
        }
    }
}

/// How [`write_bundle`] lays the file out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleWriteOptions {
    /// zstd (level 3) per block; recorded per block, so readers need not be
    /// told.
    pub compress: bool,
    /// Quanta per block: the unit a reader decodes to reach one quantum.
    pub quanta_per_block: usize,
}

impl Default for BundleWriteOptions {
    fn default() -> Self {
        Self {
            compress: true,
            quanta_per_block: 1024,
        }
    }
}

/// Why a bundle could not be written or read. Every variant names the file.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a quanta bundle ({reason})")]
    NotABundle { path: PathBuf, reason: String },
    #[error("bundle {path} is truncated (expected {expected} bytes, found {found})")]
    Truncated {
        path: PathBuf,
        expected: String,
        found: u64,
    },
    #[error(
        "bundle {path} has format version {found}; this quanta reads version {supported} (make the bundle again with this quanta's preflight)"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("bundle {path}: {what} checksum mismatch (the file is damaged)")]
    Checksum { path: PathBuf, what: String },
    #[error("bundle {path}: {what} is corrupt: {detail}")]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("bundle {path}: quantum index {index} is out of range (the bundle has {n} quanta)")]
    QuantumOutOfRange { path: PathBuf, index: u64, n: u64 },
    /// The contents given to the writer are inconsistent; nothing was written.
    #[error("cannot write bundle {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}
