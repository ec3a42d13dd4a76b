//! The Butler: a Registry and a Datastore behind get/put by dataset type and
//! data ID, as in the Gen3 design.
//!
//! Owns: the repository layout (registry database + datastore root), the
//! order of operations that keeps the two consistent (files are written
//! before they are registered, and removed again if registration fails),
//! and merging worker journals back into the Registry ([`merge`]) with the
//! provenance queries over what was merged ([`provenance`]). Must not:
//! write SQL (the registry does) or encode files (the datastore does).

mod butler;
mod error;
mod manifest;
pub mod merge;
pub mod provenance;

pub use butler::{Butler, IngestItem, DATASTORE_DIR, REGISTRY_FILE};
pub use error::ButlerError;
pub use manifest::{parse_manifest, read_manifest};
pub use merge::{
    MergeError, MergeOptions, MergeSummary, VerificationFailure, DEFAULT_BATCH_QUANTA,
};
pub use provenance::{
    campaign_status, provenance_graph, run_report, CampaignStatus, Direction, ProvenanceError,
    ProvenanceGraph, RunReport,
};
