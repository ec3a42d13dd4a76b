//! The POSIX file Datastore of quanta.
//!
//! Owns: where dataset files go ([`FileTemplate`]s, with path-safe encoding
//! of every value), how in-memory datasets become bytes ([`Formatter`]s by
//! storage class), and writing them atomically with size and BLAKE3 checksum
//! ([`Datastore`], [`StoredFileInfo`]), plus ingest of existing files (which
//! never modifies or removes a source; [`Datastore::lock_for_ingest`]
//! serializes ingests; [`Datastore::ingest_expected`] for imports, which
//! know each file's size and checksum and keep a killed run's verified
//! files) and verification ([`Datastore::verify_many`] for
//! merge's millions of files), removal of many files
//! ([`Datastore::remove_many`]) and listing the root for `repo check`.
//!
//! Composites may be written disassembled, one file per component plus
//! an index ([`disassembled`]), under a datastore setting.
//!
//! Must not: know collections, the Registry, or dimensions beyond filling
//! template fields from a data ID.

pub mod datastore;
pub mod disassembled;
pub mod error;
pub mod formatter;
pub mod template;
#[cfg(target_os = "linux")]
mod uring;
pub mod verify;

pub use datastore::{
    directory_handles_kept, hash_file, ingest_temp_path, temp_file_prefix, Datastore,
    DatastoreConfig, IngestLock, LeftoverSweep, Placement, RemoveStats, SourceFile, StoredFileInfo,
    TransferMode, QUARANTINE_DIR, TEMP_FILE_PREFIX,
};
pub use disassembled::{PartsIndex, DISASSEMBLED_SUFFIX};
pub use error::{DatastoreError, FormatterError};
pub use formatter::{
    BytesFormatter, Formatter, FormatterRegistry, InMemoryDataset, JsonFormatter, ReadParameters,
};
pub use template::{
    encode_path_component, encode_run, is_direct_path, validate_direct_path,
    validate_relative_path, FileTemplate, FileTemplates, DEFAULT_TEMPLATE,
};
pub use verify::ExpectedFile;
