//! The composition root: which task classes and storage-class formatters
//! this binary knows. Every command opens repos and bundles through here so
//! that a dataset written by one command can be read by another.

use std::path::Path;
use std::sync::Arc;

use quanta_butler::{Butler, ButlerError};
use quanta_datastore::FormatterRegistry;
use quanta_limited_registry::{LimitedRegistry, LimitedRegistryError};
use quanta_runtime::TaskRegistry;

/// Every task class the `quanta` binary knows.
pub fn task_registry() -> TaskRegistry {
    quanta_examples::task_registry()
}

/// Every formatter the `quanta` binary knows: the product formats of
/// `quanta-formats` (example tasks bring none of their own).
pub fn formatters() -> FormatterRegistry {
    quanta_formats::formatters()
}

/// Opens a repo for writing. Every command that writes holds the
/// registry's writer lock while its butler lives, saying on stderr whom it
/// waits for, so that writers (a long `merge`, `preflight` or `ingest`, and
/// the short ones behind them) run one after the other instead of failing
/// each other with "database is locked".
pub fn open_butler(repo: &Path) -> Result<Butler, ButlerError> {
    let command = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "quanta".into());
    let lock = Butler::lock_writer(repo, &command, &mut |holder| {
        eprintln!(
            "waiting for {holder} to finish (registry writer lock of {})",
            repo.display()
        )
    })?;
    Ok(Butler::open(repo)?
        .with_formatters(formatters())
        .holding(lock))
}

pub fn open_butler_read_only(repo: &Path) -> Result<Butler, ButlerError> {
    Ok(Butler::open_read_only(repo)?.with_formatters(formatters()))
}

pub fn open_limited_registry(bundle: &Path) -> Result<Arc<LimitedRegistry>, LimitedRegistryError> {
    LimitedRegistry::open_with_formatters(bundle, formatters())
}
