//! [`LimitedButler`]: the butler a task runs against, as in daf_butler's
//! `LimitedButler`: get and put of resolved dataset refs, a dataset's
//! existence and the dimension records of a data ID. Nothing in it knows
//! where the refs came from, so a task runs unchanged against a bundle on a
//! batch node ([`crate::QuantumBackedButler`]) or against a full repository
//! (`quanta_butler::Butler`, `quanta run-quantum`).
//!
//! The task's view by connection name (which refs a connection has, its
//! storage class, the component it reads, the predicted output of a data
//! ID) is `quanta_runtime::TaskContext`'s; this trait sees refs only.

use quanta_core::{BundleRef, DataId, DataIdValue, WrittenOutput};
use quanta_datastore::{InMemoryDataset, ReadParameters};

use crate::error::LimitedRegistryError;

/// A dimension record: field name → value, as the registry returned it.
pub type DimensionRecord = serde_json::Map<String, serde_json::Value>;

/// How to read one dataset.
#[derive(Debug, Clone, Copy)]
pub struct ReadSpec<'a> {
    /// The connection reading it (named in errors).
    pub connection: &'a str,
    /// The storage class the connection declares.
    pub storage_class: &'a str,
    /// Only this component of the dataset (`wcs` of a `calexp`).
    pub component: Option<&'a str>,
    /// Read parameters (`bbox`, `columns`, `rows`), checked against the
    /// storage class of what is read.
    pub parameters: &'a ReadParameters,
}

impl ReadSpec<'_> {
    /// A whole-dataset read: no component, no parameters.
    pub fn is_whole(&self) -> bool {
        self.component.is_none() && self.parameters.is_empty()
    }
}

/// Get/put of resolved refs. Errors name the dataset and, where there is
/// one, the quantum.
pub trait LimitedButler {
    /// Reads the dataset `r` (the file its ref or its datastore record
    /// names) as `read` asks: whole, one component, or restricted by
    /// read parameters.
    fn get(
        &mut self,
        r: &BundleRef,
        read: &ReadSpec<'_>,
    ) -> Result<InMemoryDataset, LimitedRegistryError>;

    /// The exact stored bytes of `r` (a JSON dataset is decoded from them
    /// straight into the task's own type, with no intermediate value).
    fn get_bytes(&mut self, r: &BundleRef) -> Result<Vec<u8>, LimitedRegistryError>;

    /// Stores `obj` as the dataset `r`, encoded by the formatter of
    /// `storage_class`, and returns its file record.
    fn put(
        &mut self,
        obj: &InMemoryDataset,
        r: &BundleRef,
        storage_class: &str,
    ) -> Result<WrittenOutput, LimitedRegistryError>;

    /// Stores bytes already encoded by `formatter` as the dataset `r`.
    fn put_bytes(
        &mut self,
        bytes: &[u8],
        r: &BundleRef,
        formatter: &str,
    ) -> Result<WrittenOutput, LimitedRegistryError>;

    /// Whether the dataset `r` is stored (its file exists).
    fn stored(&self, r: &BundleRef) -> Result<bool, LimitedRegistryError>;

    /// The record of dimension `element` (`patch`, `visit`, …) for
    /// `data_id`; `None` when there is none.
    fn dimension_record(
        &self,
        element: &str,
        data_id: &DataId,
    ) -> Result<Option<DimensionRecord>, LimitedRegistryError>;

    /// Whether the attempt was cancelled (timed out); puts then fail.
    fn is_cancelled(&self) -> bool {
        false
    }
}

fn json_to_data_id_value(v: &serde_json::Value) -> Option<DataIdValue> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().map(DataIdValue::Int),
        serde_json::Value::String(s) => Some(DataIdValue::from(s.as_str())),
        _ => None,
    }
}

/// The key fields of dimension elements: every element of the default
/// universe names its key `id` or `name`.
pub(crate) const KEY_FIELDS: [&str; 2] = ["id", "name"];

/// The value of a record's key field (`id` or `name`).
pub(crate) fn record_key(rec: &DimensionRecord) -> Option<DataIdValue> {
    KEY_FIELDS
        .iter()
        .find_map(|k| rec.get(*k).and_then(json_to_data_id_value))
}

/// Whether `rec`, a record of `element`, is the one of `data_id`: its key
/// equals the data ID's value of `element`, and every other field named
/// like a dimension of the data ID (`skymap`, `tract` of a patch) agrees
/// with it. Every implementation of [`LimitedButler::dimension_record`]
/// picks records by this rule.
pub fn record_matches(rec: &DimensionRecord, element: &str, data_id: &DataId) -> bool {
    let Some(value) = data_id.get(element) else {
        return false;
    };
    record_key(rec).as_ref() == Some(value)
        && data_id
            .iter()
            .filter(|(dim, _)| *dim != element)
            .all(|(dim, v)| match rec.get(dim) {
                None => true,
                Some(field) => json_to_data_id_value(field).as_ref() == Some(v),
            })
}
