//! The shared vocabulary of quanta, from the Gen3 Butler design: the
//! [`DimensionUniverse`], [`DataId`]s, [`DatasetType`]s, [`DatasetRef`]s and
//! collection kinds, the [`storage_class`]es (components, read parameters),
//! the pipeline definitions, and the two formats that cross
//! process boundaries: the [`bundle`] (preflight → workers) and the
//! [`journal`] (workers → merge and status).
//!
//! Owns: types and their validation, and the byte formats that cross process
//! boundaries; also [`fault`], the kill points of the crash tests (inert
//! unless a test sets `QUANTA_TEST_KILL_AT` or `QUANTA_TEST_KILL_LOG`).
//! Must not: touch SQL, or the filesystem beyond reading and writing its own
//! formats (and the kill-point log a test asks for).

pub mod bundle;
pub mod data_id;
pub mod dataset;
pub mod dimensions;
pub mod error;
pub mod fault;
pub mod hash;
mod host;
pub mod journal;
pub mod pipeline;
pub mod status;
pub mod storage_class;
pub mod time;

pub use bundle::{
    write_bundle, write_bundle_from, BlockConnection, BlockQuantum, BlockRef, Bundle,
    BundleContents, BundleError, BundleHeader, BundleParts, BundleQuantum, BundleRef,
    BundleWriteOptions, Cluster, ConnectionView, DecodedBlock, EncodeViews, QuantaSource,
    QuantumView, ReplacedDataset, BUNDLE_FORMAT_VERSION,
};
pub use data_id::{DataId, DataIdValue};
pub use dataset::{
    validate_collection_name, validate_storage_class, CollectionType, DatasetRef, DatasetType,
    StorageClass,
};
pub use dimensions::{
    DimensionElement, DimensionGroup, DimensionUniverse, FieldSpec, FieldType, REGION_ID_COLUMN,
};
pub use error::CoreError;
pub use host::host_name;
pub use journal::{
    journal_dir_for, list_journals, read_journal, JournalContents, JournalError, JournalHeader,
    JournalRecord, JournalWriter, QuantumStatus, WrittenOutput,
};
pub use status::{fold_journals, CampaignProgress, JournalRecords, QuantumProgress, QuantumState};
pub use storage_class::{split_component, StorageClassDef, StorageClasses};
pub use time::now_rfc3339;
pub use uuid::Uuid;
