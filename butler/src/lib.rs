//! The Butler: a Registry and a Datastore behind get/put by dataset type and
//! data ID, as in the Gen3 design.
//!
//! Owns: the repository layout (datastore root + a SQLite registry file or
//! a configuration naming a PostgreSQL namespace, [`repo_config`]), the
//! order of operations that keeps the two consistent (files are written
//! before they are registered, and removed again if registration fails;
//! ingest's protocol, under which a source is removed only after its
//! dataset is registered and a killed ingest converges when rerun,
//! [`Butler::ingest`]), the rule that no command reads or writes the
//! repository's own files through a path given to it (`repo_guard`),
//! and merging worker journals back into the Registry ([`merge`]) with the
//! provenance queries over what was merged ([`provenance`]), the campaign
//! page's data filled from the registry or the journals ([`report_page`]), crash-safe
//! removal of RUNs, datasets, collections and tags ([`remove`]: mark in the
//! registry's trash, unlink, delete), export and import in the LSST
//! export format ([`transfers`]) and the check of registry against
//! datastore with its repair ([`check`]), and the repository as a task's
//! `quanta_limited_registry::LimitedButler` (`limited.rs`: a quantum run
//! against the full repository). Must not:
//! write SQL (the registry does) or encode files (the datastore does).

mod butler;
pub mod check;
mod error;
mod ingest;
mod limited;
mod manifest;
pub mod merge;
pub mod provenance;
pub mod remove;
pub mod repo_config;
mod repo_guard;
pub mod report_page;
mod sources;
pub mod transfers;

pub use butler::{Butler, DATASTORE_DIR, REGISTRY_FILE};
pub use check::{CheckOptions, CheckReport, FileProblem};
pub use error::ButlerError;
pub use ingest::{
    ingest_dataset_id, IngestItem, IngestItems, IngestOptions, IngestSummary, ItemIter,
    DEFAULT_INGEST_COMMIT,
};
pub use manifest::{parse_manifest, read_manifest, Manifest};
pub use merge::{
    MergeError, MergeOptions, MergeSummary, VerificationFailure, DEFAULT_BATCH_QUANTA,
};
pub use provenance::{
    campaign_status, provenance_graph, run_report, CampaignStatus, Direction, ProvenanceError,
    ProvenanceGraph, RunReport,
};
pub use remove::{DatasetSelection, PruneMode, RemovalSummary};
pub use repo_config::{
    check_postgres_url, default_namespace, registry_location, NewRegistry, REGISTRY_CONFIG_FILE,
};
pub use report_page::{campaign_report_page, run_report_page};
pub use transfers::{
    ExportOptions, ExportSummary, ExportTransfer, ImportOptions, ImportSummary, InMemoryExport,
    RetrieveSummary, RetrievedFile, TransferError, TransferSummary,
};
