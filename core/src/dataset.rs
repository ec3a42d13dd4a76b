//! Dataset types, resolved dataset references and collection kinds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::data_id::DataId;
use crate::dimensions::{is_safe_identifier, DimensionGroup};
use crate::error::CoreError;

/// A storage class names the in-memory type of a dataset and so which
/// formatter the datastore uses for it (`Json`, `Bytes`, later `Fits`, …).
pub type StorageClass = String;

/// `raw`, `{instrument, exposure, detector}`, `Json`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DatasetType {
    pub name: String,
    pub dimensions: DimensionGroup,
    pub storage_class: StorageClass,
    /// Calibration dataset types are looked up by validity range in
    /// CALIBRATION collections.
    #[serde(default)]
    pub is_calibration: bool,
}

impl DatasetType {
    /// Dataset type names follow LSST: letters, digits, `_` and `.`
    /// (components), starting with a letter.
    pub fn validate_name(name: &str) -> Result<(), CoreError> {
        let mut chars = name.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && name.len() <= 128;
        if ok {
            Ok(())
        } else {
            Err(CoreError::BadName(format!(
                "dataset type name `{name}`: use letters, digits, `_` and `.`, starting with a letter"
            )))
        }
    }
}

impl fmt::Display for DatasetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.name, self.dimensions, self.storage_class
        )
    }
}

/// A resolved dataset: its UUID, type, data ID and the RUN that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DatasetRef {
    pub id: Uuid,
    pub dataset_type: String,
    pub data_id: DataId,
    pub run: String,
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{} [{}] ({})",
            self.dataset_type, self.data_id, self.run, self.id
        )
    }
}

/// The four kinds of collection of the Gen3 design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CollectionType {
    /// Owns its datasets; every dataset is in exactly one RUN.
    Run,
    /// A labelled set of datasets from any runs.
    Tagged,
    /// An ordered search path of other collections.
    Chained,
    /// Datasets with validity time ranges (bias, flat, …).
    Calibration,
}

impl CollectionType {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionType::Run => "RUN",
            CollectionType::Tagged => "TAGGED",
            CollectionType::Chained => "CHAINED",
            CollectionType::Calibration => "CALIBRATION",
        }
    }
}

impl fmt::Display for CollectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CollectionType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s.to_ascii_uppercase().as_str() {
            "RUN" => Ok(CollectionType::Run),
            "TAGGED" => Ok(CollectionType::Tagged),
            "CHAINED" => Ok(CollectionType::Chained),
            "CALIBRATION" => Ok(CollectionType::Calibration),
            _ => Err(CoreError::BadName(format!(
                "collection type `{s}`: expected RUN, TAGGED, CHAINED or CALIBRATION"
            ))),
        }
    }
}

/// Collection names are path-like (`Cam/raw`, `u/alice/run1`): segments of
/// letters, digits, `_ - . +` separated by `/`, no empty or dot-only segment.
/// They appear in datastore paths, so this keeps them safe there too.
pub fn validate_collection_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
        });
    if ok {
        Ok(())
    } else {
        Err(CoreError::BadName(format!(
            "collection name `{name}`: use segments of letters, digits, `_-.+` separated by `/`"
        )))
    }
}

/// Storage class names are identifiers (`Json`, `Bytes`, `Fits`).
pub fn validate_storage_class(name: &str) -> Result<(), CoreError> {
    let lower = name.to_ascii_lowercase();
    if !name.is_empty() && is_safe_identifier(&lower) {
        Ok(())
    } else {
        Err(CoreError::BadName(format!("storage class `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_collection_name("Cam/raw").is_ok());
        assert!(validate_collection_name("u/alice/run-1.2").is_ok());
        for bad in ["", "/abs", "a//b", "a/../b", "a b", "x;drop"] {
            assert!(validate_collection_name(bad).is_err(), "{bad}");
        }
        assert!(DatasetType::validate_name("postISRCCD").is_ok());
        assert!(DatasetType::validate_name("../x").is_err());
        assert_eq!(
            "chained".parse::<CollectionType>().unwrap(),
            CollectionType::Chained
        );
    }
}
