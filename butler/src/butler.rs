use std::path::{Path, PathBuf};

use quanta_core::{DataId, DatasetRef, DimensionUniverse, Uuid};
use quanta_datastore::{
    Datastore, DatastoreConfig, FormatterRegistry, InMemoryDataset, StoredFileInfo, TransferMode,
};
use quanta_registry::{DatastoreRecord, FoundDataset, NewDataset, OnConflict, Registry};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::ButlerError;

/// The registry database inside a repo directory.
pub const REGISTRY_FILE: &str = "registry.sqlite3";
/// The datastore root inside a repo directory.
pub const DATASTORE_DIR: &str = "datastore";
const DATASTORE_CONFIG_KEY: &str = "datastore_config";

/// One file to ingest and the data ID it holds.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub path: PathBuf,
    pub data_id: DataId,
}

/// A repository: a Registry and a Datastore under one directory.
pub struct Butler {
    root: PathBuf,
    registry: Registry,
    datastore: Datastore,
}

pub(crate) fn to_record(info: &StoredFileInfo) -> DatastoreRecord {
    DatastoreRecord {
        path: info.path.clone(),
        formatter: info.formatter.clone(),
        size: info.size,
        checksum: info.checksum.clone(),
    }
}

pub(crate) fn to_info(record: &DatastoreRecord) -> StoredFileInfo {
    StoredFileInfo {
        path: record.path.clone(),
        formatter: record.formatter.clone(),
        size: record.size,
        checksum: record.checksum.clone(),
    }
}

impl Butler {
    /// Creates a new repo at `root` (an empty or missing directory).
    pub fn create_repo(
        root: &Path,
        universe: &DimensionUniverse,
        datastore_config: DatastoreConfig,
    ) -> Result<Self, ButlerError> {
        let repo_err = |reason: String| ButlerError::Repo {
            repo: root.display().to_string(),
            reason,
        };
        if root.join(REGISTRY_FILE).exists() {
            return Err(repo_err("a repo already exists here".into()));
        }
        if root.is_file() {
            return Err(repo_err("is a file, not a directory".into()));
        }
        datastore_config.validate()?;
        std::fs::create_dir_all(root.join(DATASTORE_DIR))
            .map_err(|e| repo_err(format!("cannot create the repo directory: {e}")))?;
        let mut registry = Registry::create(&root.join(REGISTRY_FILE), universe)?;
        let config_json = serde_json::to_string(&datastore_config).expect("config serializes");
        registry.set_meta(DATASTORE_CONFIG_KEY, &config_json)?;
        let datastore = Datastore::new(root.join(DATASTORE_DIR), datastore_config)?;
        Ok(Self {
            root: root.to_path_buf(),
            registry,
            datastore,
        })
    }

    /// Opens an existing repo.
    pub fn open(root: &Path) -> Result<Self, ButlerError> {
        Self::open_with(root, false)
    }

    /// Opens an existing repo without write access to the registry.
    pub fn open_read_only(root: &Path) -> Result<Self, ButlerError> {
        Self::open_with(root, true)
    }

    fn open_with(root: &Path, read_only: bool) -> Result<Self, ButlerError> {
        let repo_err = |reason: String| ButlerError::Repo {
            repo: root.display().to_string(),
            reason,
        };
        if !root.exists() {
            return Err(repo_err("no such repo directory".into()));
        }
        if !root.is_dir() {
            return Err(repo_err(
                "not a repo directory (a repo is a directory holding registry.sqlite3 and datastore/)".into(),
            ));
        }
        let db = root.join(REGISTRY_FILE);
        if !db.exists() {
            return Err(repo_err(format!(
                "not a quanta repo: no {REGISTRY_FILE} (create one with `quanta repo create`)"
            )));
        }
        let registry = if read_only {
            Registry::open_read_only(&db)?
        } else {
            Registry::open(&db)?
        };
        let config: DatastoreConfig = match registry.meta(DATASTORE_CONFIG_KEY)? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| repo_err(format!("corrupt datastore configuration: {e}")))?,
            None => return Err(repo_err("no datastore configuration".into())),
        };
        let datastore = Datastore::new(root.join(DATASTORE_DIR), config)?;
        Ok(Self {
            root: root.to_path_buf(),
            registry,
            datastore,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Replaces the datastore's formatters: the binary decides which storage
    /// classes (beyond the built-in Json and Bytes) this process can read and
    /// write, e.g. the FITS formatters of `quanta-examples`.
    pub fn with_formatters(mut self, formatters: FormatterRegistry) -> Self {
        self.datastore = self.datastore.with_formatters(formatters);
        self
    }

    pub fn datastore(&self) -> &Datastore {
        &self.datastore
    }

    pub fn universe(&self) -> &DimensionUniverse {
        self.registry.universe()
    }

    /// Stores `obj` as a new dataset of `dataset_type` with `data_id` in RUN
    /// `run`. The file is written first, then registered; if registration
    /// fails the file is removed again.
    pub fn put(
        &mut self,
        obj: &InMemoryDataset,
        dataset_type: &str,
        data_id: &DataId,
        run: &str,
    ) -> Result<DatasetRef, ButlerError> {
        let (dataset_ref, storage_class) = self.new_ref(dataset_type, data_id, run)?;
        let info = self
            .datastore
            .write(&dataset_ref, &storage_class, obj, false)?;
        self.register(dataset_ref, info)
    }

    /// [`Butler::put`] for any serializable value of a `Json` dataset type,
    /// without an intermediate `serde_json::Value`.
    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        obj: &T,
        dataset_type: &str,
        data_id: &DataId,
        run: &str,
    ) -> Result<DatasetRef, ButlerError> {
        let (dataset_ref, storage_class) = self.new_ref(dataset_type, data_id, run)?;
        if storage_class != "Json" {
            return Err(ButlerError::Invalid(format!(
                "{dataset_type} has storage class {storage_class}, not Json"
            )));
        }
        let info = self.datastore.put_json(&dataset_ref, obj, false)?;
        self.register(dataset_ref, info)
    }

    /// Stores many `Json` datasets of one type into a RUN: every file is
    /// written, then all are registered in one transaction; if anything
    /// fails, the files written are removed again.
    pub fn put_json_many<T: Serialize>(
        &mut self,
        items: &[(DataId, T)],
        dataset_type: &str,
        run: &str,
    ) -> Result<Vec<DatasetRef>, ButlerError> {
        let mut refs = Vec::with_capacity(items.len());
        let mut new = Vec::with_capacity(items.len());
        let mut failure = None;
        for (data_id, obj) in items {
            let written =
                self.new_ref(dataset_type, data_id, run)
                    .and_then(|(r, storage_class)| {
                        if storage_class != "Json" {
                            return Err(ButlerError::Invalid(format!(
                                "{dataset_type} has storage class {storage_class}, not Json"
                            )));
                        }
                        let info = self.datastore.put_json(&r, obj, false)?;
                        Ok((r, info))
                    });
            match written {
                Ok((r, info)) => {
                    new.push(NewDataset {
                        id: r.id,
                        data_id: r.data_id.clone(),
                        stored: Some(to_record(&info)),
                    });
                    refs.push(r);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            match self
                .registry
                .insert_datasets(run, dataset_type, &new, OnConflict::Fail)
            {
                Ok(_) => return Ok(refs),
                Err(e) => failure = Some(e.into()),
            }
        }
        for written in &new {
            if let Some(stored) = &written.stored {
                let _ = self.datastore.remove(&stored.path);
            }
        }
        Err(failure.expect("set on every failure path"))
    }

    fn new_ref(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        run: &str,
    ) -> Result<(DatasetRef, String), ButlerError> {
        let dt = self.registry.dataset_type_required(dataset_type)?;
        self.registry
            .collection_of_type(run, quanta_core::CollectionType::Run)?;
        let data_id = data_id.standardize(&dt.dimensions, self.universe())?;
        Ok((
            DatasetRef {
                id: Uuid::now_v7(),
                dataset_type: dataset_type.to_string(),
                data_id,
                run: run.to_string(),
            },
            dt.storage_class,
        ))
    }

    fn register(
        &mut self,
        dataset_ref: DatasetRef,
        info: StoredFileInfo,
    ) -> Result<DatasetRef, ButlerError> {
        let new = NewDataset {
            id: dataset_ref.id,
            data_id: dataset_ref.data_id.clone(),
            stored: Some(to_record(&info)),
        };
        if let Err(e) = self.registry.insert_datasets(
            &dataset_ref.run,
            &dataset_ref.dataset_type,
            &[new],
            OnConflict::Fail,
        ) {
            let _ = self.datastore.remove(&info.path);
            return Err(e.into());
        }
        Ok(dataset_ref)
    }

    /// Finds a dataset by type and data ID, first match along `collections`.
    pub fn find(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
    ) -> Result<FoundDataset, ButlerError> {
        self.registry
            .find_dataset(dataset_type, data_id, collections, None)?
            .ok_or_else(|| ButlerError::NotFound {
                dataset_type: dataset_type.to_string(),
                data_id: data_id.clone(),
                collections: collections.to_vec(),
            })
    }

    fn stored(found: &FoundDataset) -> Result<StoredFileInfo, ButlerError> {
        found.stored.as_ref().map(to_info).ok_or_else(|| {
            ButlerError::Invalid(format!("{} has no stored file", found.dataset_ref))
        })
    }

    /// Reads a dataset back through its formatter.
    pub fn get(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
    ) -> Result<InMemoryDataset, ButlerError> {
        let found = self.find(dataset_type, data_id, collections)?;
        Ok(self.datastore.read(&Self::stored(&found)?)?)
    }

    /// Reads a `Json` dataset into any deserializable type.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
    ) -> Result<T, ButlerError> {
        let found = self.find(dataset_type, data_id, collections)?;
        Ok(self.datastore.get_json(&Self::stored(&found)?.path)?)
    }

    /// The exact stored bytes of a dataset.
    pub fn get_bytes(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
    ) -> Result<Vec<u8>, ButlerError> {
        let found = self.find(dataset_type, data_id, collections)?;
        Ok(self.datastore.read_bytes(&Self::stored(&found)?.path)?)
    }

    /// Ingests existing files as datasets of one type into a RUN. Data IDs
    /// are validated before any file is transferred; files are transferred,
    /// then registered in one transaction. If registration fails, transferred
    /// files are removed (copies, links) or moved back (moves).
    pub fn ingest(
        &mut self,
        run: &str,
        dataset_type: &str,
        items: &[IngestItem],
        mode: TransferMode,
    ) -> Result<Vec<DatasetRef>, ButlerError> {
        let dt = self.registry.dataset_type_required(dataset_type)?;
        self.registry
            .collection_of_type(run, quanta_core::CollectionType::Run)?;
        let mut refs = Vec::with_capacity(items.len());
        for item in items {
            let data_id = item
                .data_id
                .standardize(&dt.dimensions, self.universe())
                .map_err(|e| ButlerError::Invalid(format!("{}: {e}", item.path.display())))?;
            refs.push(DatasetRef {
                id: Uuid::now_v7(),
                dataset_type: dataset_type.to_string(),
                data_id,
                run: run.to_string(),
            });
        }
        let mut transferred: Vec<(usize, StoredFileInfo)> = Vec::with_capacity(items.len());
        let mut failure = None;
        for (i, (item, r)) in items.iter().zip(&refs).enumerate() {
            match self
                .datastore
                .ingest(&item.path, r, &dt.storage_class, mode, false)
            {
                Ok(info) => {
                    transferred.push((i, info));
                    quanta_core::fault::kill_point(quanta_core::fault::INGEST_TRANSFERRED);
                }
                Err(e) => {
                    failure = Some(ButlerError::from(e));
                    break;
                }
            }
        }
        if failure.is_none() {
            let new: Vec<NewDataset> = transferred
                .iter()
                .map(|(i, info)| NewDataset {
                    id: refs[*i].id,
                    data_id: refs[*i].data_id.clone(),
                    stored: Some(to_record(info)),
                })
                .collect();
            match self
                .registry
                .insert_datasets(run, dataset_type, &new, OnConflict::Fail)
            {
                Ok(_) => {
                    quanta_core::fault::kill_point(quanta_core::fault::INGEST_COMMITTED);
                    return Ok(refs);
                }
                Err(e) => failure = Some(e.into()),
            }
        }
        for (i, info) in &transferred {
            self.undo_transfer(&items[*i].path, info, mode);
        }
        Err(failure.expect("set on every failure path"))
    }

    fn undo_transfer(&self, source: &Path, info: &StoredFileInfo, mode: TransferMode) {
        let Ok(dest) = self.datastore.abs_path(&info.path) else {
            return;
        };
        let restored = if mode == TransferMode::Move && !source.exists() {
            std::fs::rename(&dest, source).is_ok()
        } else {
            false
        };
        if !restored {
            if let Err(e) = self.datastore.remove(&info.path) {
                tracing::warn!(
                    "could not remove {} after a failed ingest: {e}",
                    dest.display()
                );
            }
        }
    }
}
