//! Import (and so transfer) of a disassembled composite
//! (`quanta_datastore::disassembled`): one dataset whose export entry is
//! its index, with the parts beside it. The index is read whole and
//! verified against the export's size and BLAKE3 (the extras; for a
//! transfer, the source registry's), which binds every part's checksum;
//! then each part is transferred by ingest's protocol
//! ([`Datastore::ingest_expected_at`]) and verified against its own size
//! and checksum from the index; last, the index is written at the
//! dataset's path here, naming the parts by this datastore's layout. A
//! part that is missing or altered fails the dataset (exit 1) naming its
//! type, data ID, RUN and the part's path; the parts this call placed are
//! removed. A killed run leaves parts (and maybe an index) nothing
//! registered refers to: the rerun keeps the verified ones and replaces
//! the rest, as for any imported file.

use std::fs;
use std::path::Path;

use quanta_core::fault::{self, kill_point};
use quanta_datastore::disassembled::Part;
use quanta_datastore::{
    Datastore, DatastoreError, IngestLock, LeftoverSweep, PartsIndex, Placement, StoredFileInfo,
};

use super::import::{ImportOptions, Planned};
use super::TransferError;
use crate::sources::CanonicalDirs;

/// Transfers the composite `p` whose index is the regular file `real`
/// (`p.source` with its symlinks resolved).
pub(super) fn transfer_disassembled(
    datastore: &Datastore,
    guard: &mut crate::repo_guard::RepoGuard,
    dirs: &mut CanonicalDirs,
    (lock, sweep): (&IngestLock, &LeftoverSweep),
    p: &Planned,
    real: &Path,
    options: ImportOptions,
) -> Result<(StoredFileInfo, Placement), TransferError> {
    let index = read_index(datastore, p, real)?;
    let rel_index = datastore.disassembled_path_for(&p.dataset_ref, p.storage_class)?;
    let mut placed: Vec<(StoredFileInfo, Placement)> = Vec::with_capacity(index.parts.len());
    let mut result = Ok(());
    for part in &index.parts {
        match transfer_part(
            datastore,
            guard,
            dirs,
            (lock, sweep),
            p,
            &rel_index,
            part,
            options,
        ) {
            Ok(done) => placed.push(done),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        kill_point(fault::INGEST_TRANSFERRED);
    }
    let written = result.and_then(|()| {
        let parts = index
            .parts
            .iter()
            .zip(&placed)
            .map(|(part, (info, _))| Part {
                component: part.component.clone(),
                file: info.path.rsplit('/').next().unwrap_or(&info.path).into(),
                formatter: info.formatter.clone(),
                size: info.size,
                checksum: info.checksum.clone(),
            })
            .collect();
        let here = PartsIndex {
            formatter: index.formatter.clone(),
            parts,
        };
        Ok(datastore.place_index(lock, sweep, &rel_index, &here)?)
    });
    match written {
        Ok(info) => {
            let all_there = placed.iter().all(|(_, w)| *w == Placement::AlreadyThere);
            let placement = if all_there {
                Placement::AlreadyThere
            } else {
                Placement::Written
            };
            Ok((info, placement))
        }
        Err(e) => {
            for (info, _) in &placed {
                if let Err(e) = datastore.remove(&info.path) {
                    tracing::warn!("could not remove {} after a failed import: {e}", info.path);
                }
            }
            Err(e)
        }
    }
}

/// The source index, checked against the export's size and checksum, and
/// its composite formatter against this datastore's for the dataset type.
fn read_index(
    datastore: &Datastore,
    p: &Planned,
    real: &Path,
) -> Result<PartsIndex, TransferError> {
    let r = &p.dataset_ref;
    let bad = |reason: String| TransferError::BadFile {
        path: p.source.clone(),
        reason: format!(
            "index of {} {} in RUN {}: {reason}",
            r.dataset_type, r.data_id, r.run
        ),
    };
    let bytes = fs::read(real).map_err(|e| bad(format!("cannot read: {e}")))?;
    let checksum = blake3::hash(&bytes).to_hex().to_string();
    if let Some((size, expected)) = &p.expected {
        if bytes.len() as u64 != *size || checksum != *expected {
            return Err(bad(format!(
                "has {} bytes with BLAKE3 {checksum}, the export says {size} bytes with BLAKE3 {expected}",
                bytes.len()
            )));
        }
    }
    let index = PartsIndex::parse(&p.source.to_string_lossy(), &bytes)
        .map_err(|e| bad(format!("not a disassembled composite's index: {e}")))?;
    let ours = datastore.formatters().for_storage_class(p.storage_class)?;
    if index.formatter != ours.name() || !ours.disassembles() {
        return Err(TransferError::Unmappable(format!(
            "{} {} in RUN {}: its index names composite formatter {}, this repo writes \
             storage class {} with {}, which {}; nothing was imported",
            r.dataset_type,
            r.data_id,
            r.run,
            index.formatter,
            p.storage_class,
            ours.name(),
            if ours.disassembles() {
                "differs"
            } else {
                "does not disassemble"
            }
        )));
    }
    Ok(index)
}

/// One part, from beside the source index to beside `rel_index`, verified
/// against the index's size and checksum.
#[allow(clippy::too_many_arguments)]
fn transfer_part(
    datastore: &Datastore,
    guard: &mut crate::repo_guard::RepoGuard,
    dirs: &mut CanonicalDirs,
    (lock, sweep): (&IngestLock, &LeftoverSweep),
    p: &Planned,
    rel_index: &str,
    part: &Part,
    options: ImportOptions,
) -> Result<(StoredFileInfo, Placement), TransferError> {
    let r = &p.dataset_ref;
    let source = p.source.with_file_name(&part.file);
    let bad = |reason: String| TransferError::BadFile {
        path: source.clone(),
        reason: format!(
            "part `{}` of {} {} in RUN {}: {reason}",
            part.component, r.dataset_type, r.data_id, r.run
        ),
    };
    let resolved = dirs
        .resolve(&source)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if let Some(reason) = guard.refusal_of(&resolved.path, Some(resolved.id)) {
        return Err(TransferError::Refused {
            path: source.clone(),
            reason: format!("is inside the destination repository ({reason})"),
        });
    }
    if !resolved.is_file {
        return Err(bad("not a regular file".into()));
    }
    let rel = datastore.part_path_for(rel_index, &part.component, &part.formatter)?;
    let what = format!("part `{}` of {r}", part.component);
    datastore
        .ingest_expected_at(
            lock,
            sweep,
            &resolved.source(),
            (&rel, &part.formatter),
            &what,
            options.transfer,
            Some((part.size, &part.checksum)),
            options.trust_source_checksums,
        )
        .map_err(|e| match e {
            DatastoreError::SizeMismatch {
                expected, actual, ..
            } => bad(format!(
                "has {actual} bytes, its index says {expected} bytes"
            )),
            DatastoreError::ChecksumMismatch {
                expected, actual, ..
            } => bad(format!(
                "has BLAKE3 {actual}, its index says BLAKE3 {expected}"
            )),
            other => other.into(),
        })
}
