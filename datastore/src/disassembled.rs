//! Disassembled composites: with [`crate::DatastoreConfig::disassemble`],
//! a dataset of a composite storage class (one whose formatter can split
//! it, [`Formatter::disassemble`]) is written as one file per stored
//! component, each by its own storage class's formatter, plus an index.
//!
//! Layout: the dataset's recorded path is the index,
//! `<template>.parts.json` ([`DISASSEMBLED_SUFFIX`]); component `c` is the
//! sibling file `<template>.<c>.<extension of c's formatter>`. The index
//! lists every part with its file name, formatter, size and BLAKE3 (each
//! part's own record), and is written last, so an index on disk means
//! every part it names was complete when it was written. The registry,
//! bundles and journals record the index (size and checksum), which binds
//! the parts' checksums; verification ([`crate::Datastore::verify_many`])
//! checks the index, then each part against it, and removal
//! ([`crate::Datastore::remove_many`]) removes the parts, then the index.
//! A path ending in `.parts.json` is always an index: no formatter may
//! use that extension.

use serde::{Deserialize, Serialize};

use crate::error::DatastoreError;
use crate::formatter::Formatter;
use crate::StoredFileInfo;

/// How the path of a disassembled composite's index ends.
pub const DISASSEMBLED_SUFFIX: &str = ".parts.json";

/// The index of a disassembled composite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsIndex {
    /// The composite's formatter (which assembles the parts).
    pub formatter: String,
    pub parts: Vec<Part>,
}

/// One stored component: its own file record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub component: String,
    /// The file name, in the index's directory.
    pub file: String,
    pub formatter: String,
    pub size: u64,
    /// BLAKE3, lowercase hex.
    pub checksum: String,
}

/// Whether a datastore path is a disassembled composite's index.
pub fn is_index(rel_path: &str) -> bool {
    rel_path.ends_with(DISASSEMBLED_SUFFIX)
}

/// The path stem parts are named from (`a/b/calexp_x` of
/// `a/b/calexp_x.parts.json`).
pub(crate) fn stem(index: &str) -> &str {
    index.strip_suffix(DISASSEMBLED_SUFFIX).unwrap_or(index)
}

/// The relative path of component `component` written by `formatter`.
pub(crate) fn part_path(index: &str, component: &str, formatter: &dyn Formatter) -> String {
    format!("{}.{component}.{}", stem(index), formatter.extension())
}

impl PartsIndex {
    /// Parses an index read from `rel_path`, refusing part file names that
    /// are not plain siblings named from the index (so an index cannot
    /// point outside its directory or at another dataset's files).
    pub fn parse(rel_path: &str, bytes: &[u8]) -> Result<Self, DatastoreError> {
        let index: PartsIndex =
            serde_json::from_slice(bytes).map_err(|e| DatastoreError::Decode {
                formatter: "disassembled composite index".into(),
                path: rel_path.to_string(),
                source: e.into(),
            })?;
        let base = stem(rel_path).rsplit('/').next().unwrap_or_default();
        for p in &index.parts {
            let ok = p.file.starts_with(&format!("{base}.{}.", p.component))
                && !p.file.contains('/')
                && !p.file.contains("..")
                && !p.file.ends_with(DISASSEMBLED_SUFFIX);
            if !ok {
                return Err(DatastoreError::UnsafePath {
                    path: p.file.clone(),
                    reason: format!("part of `{rel_path}` is not a sibling named from it"),
                });
            }
        }
        Ok(index)
    }

    /// The parts as file records, with paths relative to the root.
    pub fn part_infos(&self, index_path: &str) -> Vec<(String, StoredFileInfo)> {
        let dir = index_path.rsplit_once('/').map(|(d, _)| d);
        self.parts
            .iter()
            .map(|p| {
                let path = match dir {
                    Some(d) => format!("{d}/{}", p.file),
                    None => p.file.clone(),
                };
                (
                    p.component.clone(),
                    StoredFileInfo {
                        path,
                        formatter: p.formatter.clone(),
                        size: p.size,
                        checksum: p.checksum.clone(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(file: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "formatter": "F",
            "parts": [{"component": "image", "file": file, "formatter": "G", "size": 1, "checksum": "00"}]
        }))
        .unwrap()
    }

    #[test]
    fn an_index_names_only_its_own_siblings() {
        let rel = "run/calexp/calexp_1_x.parts.json";
        let ok = PartsIndex::parse(rel, &index("calexp_1_x.image.fits")).unwrap();
        assert_eq!(
            ok.part_infos(rel)[0].1.path,
            "run/calexp/calexp_1_x.image.fits"
        );
        for bad in [
            "../calexp_1_x.image.fits",
            "calexp_1_x.image/../../x.fits",
            "other.image.fits",
            "calexp_1_x.mask.fits",
            "calexp_1_x.image.parts.json",
        ] {
            assert!(PartsIndex::parse(rel, &index(bad)).is_err(), "{bad}");
        }
        assert!(PartsIndex::parse(rel, b"{").is_err());
        assert!(is_index(rel) && !is_index("run/x.json"));
    }
}
