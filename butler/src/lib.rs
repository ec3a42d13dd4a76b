//! The Butler: a Registry and a Datastore behind get/put by dataset type and
//! data ID, as in the Gen3 design.
//!
//! Owns: the repository layout (registry database + datastore root), the
//! order of operations that keeps the two consistent (files are written
//! before they are registered, and removed again if registration fails),
//! and, later, merging worker journals back into the Registry. Must not:
//! write SQL (the registry does) or encode files (the datastore does).

mod butler;
mod error;

pub use butler::{Butler, IngestItem, DATASTORE_DIR, REGISTRY_FILE};
pub use error::ButlerError;
