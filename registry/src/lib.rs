//! The full SQL Registry of quanta, on SQLite (rusqlite, bundled SQLite so
//! every machine runs the same version). Its users see quanta's own types
//! only ([`SqlValue`], [`RegistryError`] with a backend-neutral
//! [`DatabaseError`]); what only SQLite has lives in `sqlite/`, and the SQL
//! text that differs between backends is decided by [`Dialect`].
//!
//! Owns: the schema (generated from the [`DimensionUniverse`](quanta_core::DimensionUniverse)),
//! every insert (through methods, in batched transactions with prepared
//! statements; the bulk ones check foreign keys set-wise, see
//! `database/foreign_keys.rs` and `postgres/set_keys.rs`), collections and their search paths, the `--where` language
//! compiled to parameterised SQL, read-only SQL access (with a time limit),
//! the provenance tables, the repository's identity (`repository_id` in
//! `quanta_meta`) and the writer lock that serializes long writers
//! ([`WriterLock`]), and the registry's half of removal: the trash of the
//! crash-safe removal protocol and what provenance keeps of removed
//! datasets ([`removal`]). Must not: know file formats or touch dataset files (that is the
//! datastore's job), or build SQL from user text.

mod access;
pub mod collections;
mod database;
pub mod datasets;
pub mod dialect;
mod error;
pub mod expr;
pub mod graph_query;
mod migrate;
mod postgres;
pub mod provenance;
pub mod query;
pub mod records;
mod registry;
pub mod removal;
pub mod schema;
pub mod skymap;
mod spatial_join;
mod sqlite;
pub mod transfers;
mod value;
mod writer_lock;

pub use collections::CollectionRecord;
pub use datasets::{
    DatasetUse, DatastoreRecord, FoundDataset, InsertStats, NewDataset, OnConflict,
};
pub use dialect::Dialect;
pub use error::{ConstraintViolation, DatabaseError, DatabaseErrorKind, RegistryError, Result};
pub use migrate::{Migration, OLDEST_MIGRATABLE};
pub use provenance::{
    NewQuantum, QuantumBrief, QuantumExecution, QuantumInput, QuantumOutputDataset, QuantumRow,
    RecordStats, RejectedDataset, RunProvenance,
};
pub use query::Binds;
pub use records::{parse_records_csv, parse_records_json, RecordSet};
pub use registry::{lower_thread_priority, BulkWrites, Registry, RegistryLocation};
pub use removal::{DecertifyStats, PendingRemovals, RegisteredFile, RemovalStats, RemovedDataset};
pub use schema::SCHEMA_VERSION;
pub use transfers::{ImportBatch, ImportDatasets, ImportStats, ProvenanceBatch, ProvenanceQuantum};
pub use value::SqlValue;
pub use writer_lock::WriterLock;
