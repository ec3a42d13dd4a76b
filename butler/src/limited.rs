//! The full repository as a [`LimitedButler`]: a task runs against it as it
//! runs against a bundle (`quanta run-quantum`, the way to debug one
//! quantum).
//!
//! Inputs are read through their registered datastore records, found by
//! the refs' UUIDs. Outputs are stored in the repository's datastore at the
//! refs' paths (their RUN's, as preflight resolved them), atomically and
//! checksummed; they are registered in their RUN afterwards, together with
//! the quantum's provenance, by the merge of the quantum's journal
//! ([`Butler::merge`]): the registry writes a dataset's producing quantum
//! when it inserts the dataset, so outputs and their quantum row go in one
//! transaction, and files are written before they are registered, as
//! everywhere in this crate.

use quanta_core::{BundleRef, DataId, WrittenOutput};
use quanta_datastore::{DatastoreError, InMemoryDataset, StoredFileInfo};
use quanta_limited_registry::{
    record_matches, DimensionRecord, LimitedButler, LimitedRegistryError, ReadSpec,
};

use crate::butler::{to_info, Butler};
use crate::error::ButlerError;

type Result<T, E = LimitedRegistryError> = std::result::Result<T, E>;

/// A butler failure as the trait reports it, naming the dataset.
fn repo_err(r: &BundleRef, e: impl Into<ButlerError>) -> LimitedRegistryError {
    LimitedRegistryError::Repository {
        dataset: format!("{} {} ({})", r.dataset_type, r.data_id, r.id),
        source: Box::new(e.into()),
    }
}

impl Butler {
    /// The registered file of `r`, found by its UUID.
    fn stored_file(&self, r: &BundleRef) -> Result<StoredFileInfo, ButlerError> {
        let found = self.registry.dataset_by_id(&r.id, None)?.ok_or_else(|| {
            ButlerError::Invalid(format!(
                "dataset {} ({} {}) is not registered in this repository",
                r.id, r.dataset_type, r.data_id
            ))
        })?;
        found.stored.as_ref().map(to_info).ok_or_else(|| {
            ButlerError::Invalid(format!("{} has no stored file", found.dataset_ref))
        })
    }

    /// Refuses to write over a registered dataset's file; a file there that
    /// no registered dataset of the RUN owns is the leftover of an
    /// interrupted run and is replaced.
    fn check_output_free(&self, r: &BundleRef) -> Result<bool, ButlerError> {
        let held = self.registry.find_dataset(
            &r.dataset_type,
            &r.data_id,
            std::slice::from_ref(&r.run),
            None,
        )?;
        if let Some(found) = held {
            return Err(ButlerError::Invalid(format!(
                "RUN {} already holds {} {} (dataset {}); refusing to overwrite it",
                r.run, r.dataset_type, r.data_id, found.dataset_ref.id
            )));
        }
        let leftover = self.datastore.exists(&r.path);
        if leftover {
            tracing::warn!(
                "`{}` is there but no dataset of RUN {} is registered with it (an interrupted run?); replacing it",
                r.path,
                r.run
            );
        }
        Ok(leftover)
    }

    fn store_bytes(&self, bytes: &[u8], r: &BundleRef, formatter: &str) -> Result<WrittenOutput> {
        let replace = self.check_output_free(r).map_err(|e| repo_err(r, e))?;
        let info = self
            .datastore
            .write_bytes_at(&r.path, bytes, formatter, replace)
            .map_err(|e| repo_err(r, e))?;
        Ok(written(r, info))
    }
}

fn written(r: &BundleRef, info: StoredFileInfo) -> WrittenOutput {
    WrittenOutput {
        dataset_id: r.id,
        path: info.path,
        size: info.size,
        checksum: info.checksum,
    }
}

impl LimitedButler for Butler {
    fn get(&mut self, r: &BundleRef, read: &ReadSpec<'_>) -> Result<InMemoryDataset> {
        let stored = self.stored_file(r).map_err(|e| repo_err(r, e))?;
        if read.is_whole() {
            return self.datastore.read(&stored).map_err(|e| repo_err(r, e));
        }
        // The parameters are checked against the storage class of what is
        // read, as `Butler::get_with` checks them.
        let parent = self
            .registry
            .dataset_type_required(&r.dataset_type)
            .map_err(|e| repo_err(r, e))?;
        let classes = quanta_core::StorageClasses::builtin();
        match read.component {
            Some(c) => classes.component_class(&parent.storage_class, c),
            None => Ok(parent.storage_class.as_str()),
        }
        .and_then(|class| classes.check_parameters(class, read.parameters.names()))
        .map_err(|e| repo_err(r, e))?;
        self.datastore
            .read_with(&stored, read.component, read.parameters)
            .map_err(|e| repo_err(r, e))
    }

    fn get_bytes(&mut self, r: &BundleRef) -> Result<Vec<u8>> {
        let stored = self.stored_file(r).map_err(|e| repo_err(r, e))?;
        self.datastore
            .read_bytes(&stored.path)
            .map_err(|e| repo_err(r, e))
    }

    fn put(
        &mut self,
        obj: &InMemoryDataset,
        r: &BundleRef,
        storage_class: &str,
    ) -> Result<WrittenOutput> {
        let formatter = self
            .datastore
            .formatters()
            .for_storage_class(storage_class)
            .map_err(|e| repo_err(r, e))?
            .clone();
        if quanta_datastore::disassembled::is_index(&r.path) {
            let replace = self.check_output_free(r).map_err(|e| repo_err(r, e))?;
            let info = self
                .datastore
                .write_disassembled_at(&r.path, formatter.as_ref(), obj, replace)
                .map_err(|e| repo_err(r, e))?;
            return Ok(written(r, info));
        }
        let bytes = formatter.encode(obj).map_err(|source| {
            repo_err(
                r,
                DatastoreError::Encode {
                    what: format!("{} {}", r.dataset_type, r.data_id),
                    formatter: formatter.name().to_string(),
                    path: r.path.clone(),
                    source,
                },
            )
        })?;
        self.store_bytes(&bytes, r, formatter.name())
    }

    fn put_bytes(&mut self, bytes: &[u8], r: &BundleRef, formatter: &str) -> Result<WrittenOutput> {
        self.store_bytes(bytes, r, formatter)
    }

    /// Registered with a file that exists, or (an output of this run, not
    /// registered yet) a file at its path.
    fn stored(&self, r: &BundleRef) -> Result<bool> {
        match self.registry.dataset_by_id(&r.id, None) {
            Ok(Some(found)) => Ok(found
                .stored
                .as_ref()
                .is_some_and(|s| self.datastore.exists(&s.path))),
            Ok(None) => Ok(self.datastore.exists(&r.path)),
            Err(e) => Err(repo_err(r, e)),
        }
    }

    fn dimension_record(&self, element: &str, data_id: &DataId) -> Result<Option<DimensionRecord>> {
        let Some(key) = data_id.get(element) else {
            return Ok(None);
        };
        // The record's identifying values end with its key: only records
        // with this key are converted, then matched on the rest.
        let records = self
            .registry
            .element_records_where(element, |values| values.last() == Some(key))
            .map_err(|e| LimitedRegistryError::Repository {
                dataset: format!("the {element} record of {data_id}"),
                source: Box::new(ButlerError::from(e)),
            })?;
        Ok(records
            .into_iter()
            .find(|rec| record_matches(rec, element, data_id)))
    }
}
