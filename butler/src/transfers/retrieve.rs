//! `Butler::retrieve`: the files of a query's datasets copied out of the
//! datastore into a plain directory at their datastore-relative paths (the
//! file templates' layout). Every destination is checked before anything
//! is copied: a file already there with the dataset's size and checksum is
//! left alone (a rerun of a killed retrieve copies only what is missing), a
//! different one is refused. Each copy goes through a temporary name, is
//! verified against the registry's size and BLAKE3, then renamed into place.

use std::fs;
use std::path::{Path, PathBuf};

use quanta_datastore::{hash_file, is_direct_path};
use rayon::prelude::*;

use super::export::{DirectDestinations, ExportOptions};
use super::TransferError;
use crate::Butler;

/// One retrieved file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetrievedFile {
    pub id: quanta_core::Uuid,
    pub dataset_type: String,
    pub run: String,
    /// Relative to the destination directory.
    pub path: String,
    pub size: u64,
    /// False when an identical file was already there.
    pub copied: bool,
}

/// What a retrieve did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RetrieveSummary {
    pub files: Vec<RetrievedFile>,
    pub copied: usize,
    pub already_present: usize,
    /// Datasets the query found without a file.
    pub without_file: usize,
}

impl Butler {
    /// Copies the files of the datasets `options` selects into `dest`
    /// (created) at their datastore-relative paths; `options.transfer` is
    /// ignored. Refuses, before copying anything, a destination file that
    /// differs from the dataset's.
    pub fn retrieve(
        &self,
        dest: &Path,
        options: &ExportOptions,
    ) -> Result<RetrieveSummary, TransferError> {
        let (found, without_file) = self.datasets_with_files(options)?;
        // Every file of each dataset: a disassembled composite's index and
        // parts (see quanta_datastore::disassembled).
        // A direct file (outside the datastore) goes to its dataset's
        // template path.
        let mut entries = Vec::with_capacity(found.len());
        let mut direct = DirectDestinations::new(self);
        for f in &found {
            let stored = f.stored.as_ref().expect("datasets with files");
            for info in self.datastore.files_of(&crate::butler::to_info(stored))? {
                let rel = if is_direct_path(&info.path) {
                    direct.of(&f.dataset_ref)?
                } else {
                    info.path.clone()
                };
                entries.push((f, info, rel));
            }
        }
        let mut files = Vec::with_capacity(entries.len());
        for (f, stored, rel) in &entries {
            let target = dest.join(rel);
            let present = match fs::symlink_metadata(&target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(TransferError::io("inspect", &target, e)),
                Ok(_) => {
                    let (size, checksum) = hash_file(&target)?;
                    if size != stored.size || checksum != stored.checksum {
                        return Err(TransferError::Exists {
                            path: target,
                            reason: format!(
                                "{} bytes with BLAKE3 {checksum}, not dataset {}'s {} bytes with BLAKE3 {}",
                                size, f.dataset_ref.id, stored.size, stored.checksum
                            ),
                        });
                    }
                    true
                }
            };
            files.push(RetrievedFile {
                id: f.dataset_ref.id,
                dataset_type: f.dataset_ref.dataset_type.clone(),
                run: f.dataset_ref.run.clone(),
                path: rel.clone(),
                size: stored.size,
                copied: !present,
            });
        }
        let datastore = &self.datastore;
        entries
            .par_iter()
            .zip(&files)
            .filter(|(_, r)| r.copied)
            .try_for_each(|((_, stored, rel), _)| {
                retrieve_one(datastore, stored, &dest.join(rel))
            })?;
        let copied = files.iter().filter(|r| r.copied).count();
        Ok(RetrieveSummary {
            already_present: files.len() - copied,
            copied,
            files,
            without_file,
        })
    }
}

/// Copies `stored`'s file to `target`, verified.
fn retrieve_one(
    datastore: &quanta_datastore::Datastore,
    stored: &quanta_datastore::StoredFileInfo,
    target: &Path,
) -> Result<(), TransferError> {
    let src = datastore.abs_path(&stored.path)?;
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).map_err(|e| TransferError::io("create", dir, e))?;
    }
    let tmp = temp_name(target);
    fs::copy(&src, &tmp).map_err(|e| TransferError::io("copy", &src, e))?;
    let (size, checksum) = hash_file(&tmp)?;
    if size != stored.size || checksum != stored.checksum {
        let _ = fs::remove_file(&tmp);
        return Err(TransferError::BadFile {
                path: src,
                reason: format!(
                    "has {size} bytes with BLAKE3 {checksum}, the registry says {} bytes with BLAKE3 {} (run `quanta repo check`)",
                    stored.size, stored.checksum
                ),
            });
    }
    fs::rename(&tmp, target).map_err(|e| TransferError::io("rename into", target, e))
}

fn temp_name(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.quanta-retrieve-{}", std::process::id()))
}
