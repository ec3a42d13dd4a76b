use std::path::{Path, PathBuf};

use quanta_core::{DataId, DatasetRef, DimensionUniverse, Uuid};
use quanta_datastore::{
    Datastore, DatastoreConfig, FormatterRegistry, InMemoryDataset, ReadParameters, StoredFileInfo,
};
use quanta_registry::{
    DatastoreRecord, FoundDataset, NewDataset, OnConflict, Registry, RegistryLocation,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::ButlerError;
use crate::repo_config::{
    check_postgres_url, registry_location, NewRegistry, REGISTRY_CONFIG_FILE,
};

/// The registry database inside a repo directory with a SQLite registry
/// (see [`crate::repo_config`] for one on a server).
pub const REGISTRY_FILE: &str = "registry.sqlite3";
/// The datastore root inside a repo directory.
pub const DATASTORE_DIR: &str = "datastore";
const DATASTORE_CONFIG_KEY: &str = "datastore_config";

/// A repository: a Registry and a Datastore under one directory.
pub struct Butler {
    pub(crate) root: PathBuf,
    pub(crate) registry: Registry,
    pub(crate) datastore: Datastore,
    /// The registry's writer lock, when this butler was given it
    /// ([`Butler::holding`]): released when the butler is dropped.
    writer_lock: Option<quanta_registry::WriterLock>,
}

pub(crate) fn to_record(info: &StoredFileInfo) -> DatastoreRecord {
    DatastoreRecord {
        path: info.path.clone(),
        formatter: info.formatter.clone(),
        size: info.size,
        checksum: info.checksum.clone(),
    }
}

pub(crate) fn into_record(info: StoredFileInfo) -> DatastoreRecord {
    DatastoreRecord {
        path: info.path,
        formatter: info.formatter,
        size: info.size,
        checksum: info.checksum,
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
    /// Creates a new repo at `root` (an empty or missing directory) with a
    /// SQLite registry.
    pub fn create_repo(
        root: &Path,
        universe: &DimensionUniverse,
        datastore_config: DatastoreConfig,
    ) -> Result<Self, ButlerError> {
        Self::create_repo_on(root, &NewRegistry::Sqlite, universe, datastore_config)
    }

    /// Creates a new repo at `root` (an empty or missing directory) whose
    /// registry is `registry`. On PostgreSQL the namespace is created
    /// first and `registry.yaml` written last (atomically), so an
    /// interrupted create leaves no repository directory that names a
    /// half-made registry; rerunning it reports the namespace it left.
    pub fn create_repo_on(
        root: &Path,
        registry: &NewRegistry,
        universe: &DimensionUniverse,
        datastore_config: DatastoreConfig,
    ) -> Result<Self, ButlerError> {
        let repo_err = |reason: String| ButlerError::Repo {
            repo: root.display().to_string(),
            reason,
        };
        if root.join(REGISTRY_FILE).exists() || root.join(REGISTRY_CONFIG_FILE).exists() {
            return Err(repo_err("a repo already exists here".into()));
        }
        if root.is_file() {
            return Err(repo_err("is a file, not a directory".into()));
        }
        if let NewRegistry::Postgres { url, .. } = registry {
            check_postgres_url(url).map_err(ButlerError::Invalid)?;
        }
        datastore_config.validate()?;
        std::fs::create_dir_all(root.join(DATASTORE_DIR))
            .map_err(|e| repo_err(format!("cannot create the repo directory: {e}")))?;
        let mut registry = match registry {
            NewRegistry::Sqlite => Registry::create(&root.join(REGISTRY_FILE), universe)?,
            NewRegistry::Postgres { url, namespace } => {
                create_postgres_registry(root, url, namespace, universe)?
            }
        };
        let config_json = serde_json::to_string(&datastore_config).expect("config serializes");
        registry.set_meta(DATASTORE_CONFIG_KEY, &config_json)?;
        if let RegistryLocation::Postgres { url, namespace } = registry.location() {
            crate::repo_config::write_registry_config(root, url, namespace)?;
        }
        let datastore = Datastore::new(root.join(DATASTORE_DIR), datastore_config)?;
        Ok(Self {
            root: root.to_path_buf(),
            registry,
            datastore,
            writer_lock: None,
        })
    }

    /// Takes the writer lock of the repo at `root` for a long writer
    /// (`command`, e.g. "merge"), waiting for the current holder if there
    /// is one (`on_wait` is told who it is first); see
    /// [`quanta_registry::WriterLock`] (a lock file beside a SQLite
    /// registry, an advisory lock on PostgreSQL). Held until dropped.
    pub fn lock_writer(
        root: &Path,
        command: &str,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<quanta_registry::WriterLock, ButlerError> {
        let location = registry_location(root)?;
        Ok(quanta_registry::WriterLock::acquire(
            &location, command, on_wait,
        )?)
    }

    /// Upgrades the registry of the repo at `root` to this quanta's schema
    /// version ([`Registry::migrate`]: one transaction, a no-op when it is
    /// there already), holding the writer lock so that no other writer
    /// runs meanwhile (`on_wait` is told whom it waits for).
    pub fn migrate_repo(
        root: &Path,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<quanta_registry::Migration, ButlerError> {
        let location = registry_location(root)?;
        let _lock = quanta_registry::WriterLock::acquire(&location, "migrate", on_wait)?;
        Ok(Registry::migrate(&location)?)
    }

    /// Keeps the registry's writer lock (from [`Butler::lock_writer`]) for
    /// as long as this butler lives.
    pub fn holding(mut self, lock: quanta_registry::WriterLock) -> Self {
        self.writer_lock = Some(lock);
        self
    }

    /// Whether this butler holds the registry's writer lock.
    pub fn holds_writer_lock(&self) -> bool {
        self.writer_lock.is_some()
    }

    /// Opens an existing repo.
    pub fn open(root: &Path) -> Result<Self, ButlerError> {
        Self::open_with(root, false)
    }

    /// Opens an existing repo without write access to the registry.
    pub fn open_read_only(root: &Path) -> Result<Self, ButlerError> {
        Self::open_with(root, true)
    }

    /// Opens the registry of the repo at `root`, whatever its backend
    /// ([`registry_location`] decides): every command and the Python
    /// package open a repository's registry through here.
    pub fn open_registry(root: &Path, read_only: bool) -> Result<Registry, ButlerError> {
        Ok(Registry::open_at(&registry_location(root)?, read_only)?)
    }

    fn open_with(root: &Path, read_only: bool) -> Result<Self, ButlerError> {
        let repo_err = |reason: String| ButlerError::Repo {
            repo: root.display().to_string(),
            reason,
        };
        let registry = Self::open_registry(root, read_only)?;
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
            writer_lock: None,
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
            let _ = self.datastore.remove_many(std::slice::from_ref(&info.path));
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

    /// Reads a dataset back through its formatter. `dataset_type` may name
    /// a component (`calexp.wcs`, see [`Butler::get_with`]).
    pub fn get(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
    ) -> Result<InMemoryDataset, ButlerError> {
        self.get_with(dataset_type, data_id, collections, &ReadParameters::new())
    }

    /// Resolves `dataset_type` (a registered type or `parent.component`)
    /// and checks `parameters` against the storage class of what is read:
    /// (the parent's definition, the component, the storage class read).
    pub fn resolve_read(
        &self,
        dataset_type: &str,
        parameters: &ReadParameters,
    ) -> Result<(quanta_core::DatasetType, Option<String>, String), ButlerError> {
        let (parent, component) = self.registry.resolve_dataset_type(dataset_type)?;
        let classes = quanta_core::StorageClasses::builtin();
        let read_class = match &component {
            Some(c) => classes
                .component_class(&parent.storage_class, c)?
                .to_string(),
            None => parent.storage_class.clone(),
        };
        classes.check_parameters(&read_class, parameters.names())?;
        Ok((parent, component, read_class))
    }

    /// Reads a dataset, or one component of it (`calexp.wcs`: the parent
    /// `calexp` is found and only its `wcs` is read), restricted by read
    /// `parameters` (`bbox=x0,y0,x1,y1` for images, `columns`/`rows` for
    /// catalogs; refused when the storage class read does not define them).
    /// A formatter that can reads only the part of the file asked for.
    pub fn get_with(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, ButlerError> {
        let (parent, component, _) = self.resolve_read(dataset_type, parameters)?;
        let found = self
            .registry
            .find_dataset(&parent.name, data_id, collections, None)?
            .ok_or_else(|| ButlerError::NotFound {
                dataset_type: dataset_type.to_string(),
                data_id: data_id.clone(),
                collections: collections.to_vec(),
            })?;
        let stored = Self::stored(&found)?;
        if component.is_none() && parameters.is_empty() {
            return Ok(self.datastore.read(&stored)?);
        }
        Ok(self
            .datastore
            .read_with(&stored, component.as_deref(), parameters)?)
    }

    /// Writes what [`Butler::get_with`] reads to `output`, encoded by the
    /// formatter of the storage class read (a `bbox` cut-out of an image
    /// is a FITS image file); without component or parameters, the stored
    /// bytes ([`Butler::get_to_file`]). Returns the bytes written.
    pub fn get_to_file_with(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
        parameters: &ReadParameters,
        output: &Path,
    ) -> Result<u64, ButlerError> {
        let (parent, component, read_class) = self.resolve_read(dataset_type, parameters)?;
        let disassembled = || -> Result<bool, ButlerError> {
            let found = self.find(&parent.name, data_id, collections)?;
            Ok(quanta_datastore::disassembled::is_index(
                &Self::stored(&found)?.path,
            ))
        };
        // A disassembled composite has no single file: it is assembled and
        // encoded like a component.
        if component.is_none() && parameters.is_empty() && !disassembled()? {
            return self.get_to_file(dataset_type, data_id, collections, output);
        }
        let target = self.output_target(output)?;
        let formatter = self.datastore.formatters().for_storage_class(&read_class)?;
        let obj = self.get_with(dataset_type, data_id, collections, parameters)?;
        let bytes =
            formatter
                .encode(&obj)
                .map_err(|source| quanta_datastore::DatastoreError::Encode {
                    what: format!("{dataset_type} {data_id}"),
                    formatter: formatter.name().to_string(),
                    path: output.display().to_string(),
                    source,
                })?;
        write_atomically(&target, &bytes)?;
        Ok(bytes.len() as u64)
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

    /// Writes the stored bytes of a dataset to `output` and returns their
    /// number. The write is atomic (a temporary file beside the output,
    /// fsynced, then renamed over it), so a failure leaves no partial file
    /// and the output as it was; a symlink as `output` is followed. An
    /// output inside the repository (its registry database, its datastore,
    /// or any path reaching them under another name) is refused.
    pub fn get_to_file(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
        output: &Path,
    ) -> Result<u64, ButlerError> {
        let target = self.output_target(output)?;
        let bytes = self.get_bytes(dataset_type, data_id, collections)?;
        write_atomically(&target, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// The file `output` names, with symlinks resolved, after checking that
    /// it lies outside the repository.
    fn output_target(&self, output: &Path) -> Result<PathBuf, ButlerError> {
        let io_err = |action, e| ButlerError::Io {
            action,
            path: output.to_path_buf(),
            source: e,
        };
        let target = if output.symlink_metadata().is_ok() {
            std::fs::canonicalize(output).map_err(|e| io_err("resolve", e))?
        } else {
            let name = output.file_name().ok_or_else(|| {
                ButlerError::Invalid(format!("`{}` does not name a file", output.display()))
            })?;
            let parent = match output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            std::fs::canonicalize(parent)
                .map_err(|e| io_err("resolve the directory of", e))?
                .join(name)
        };
        let mut guard = crate::repo_guard::RepoGuard::new(&self.root, self.datastore.root())?;
        if let Some(reason) = guard.refusal(&target) {
            return Err(ButlerError::OutputInRepository {
                output: output.to_path_buf(),
                reason,
            });
        }
        Ok(target)
    }
}

/// Writes `bytes` to a fresh temporary file in `target`'s directory, fsyncs
/// it and renames it over `target`; the temporary file is removed on error.
fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), ButlerError> {
    use std::io::Write;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.quanta-tmp-{}", std::process::id()));
    let io_err = |action, path: &Path, e| ButlerError::Io {
        action,
        path: path.to_path_buf(),
        source: e,
    };
    // A leftover of a killed `get` with the same pid is ours to replace.
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_err("create", &tmp, e))
        .and_then(|mut file| {
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_err("write", &tmp, e))
        })
        .and_then(|()| std::fs::rename(&tmp, target).map_err(|e| io_err("rename into", target, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A new registry in `namespace` of the PostgreSQL database `url`, for
/// the repo at `root`. A namespace that already holds a registry is
/// refused with what to do: it may be another repository's, or what an
/// interrupted `repo create` of this directory left before it wrote
/// `registry.yaml`.
fn create_postgres_registry(
    root: &Path,
    url: &str,
    namespace: &str,
    universe: &DimensionUniverse,
) -> Result<Registry, ButlerError> {
    match Registry::open_postgres(url, namespace, true) {
        Ok(existing) => {
            let id = existing
                .repository_id()
                .ok()
                .flatten()
                .map(|id| format!(" (repository id {id})"))
                .unwrap_or_default();
            Err(ButlerError::Repo {
                repo: root.display().to_string(),
                reason: format!(
                    "the namespace `{namespace}` of {url} already holds a registry{id}: another \
                     repository's, or one an interrupted `quanta repo create` left; choose \
                     another --namespace, or drop it (`DROP SCHEMA {namespace} CASCADE`) if no \
                     repository uses it"
                ),
            })
        }
        Err(quanta_registry::RegistryError::NotARegistry { .. }) => {
            // The URL and namespace were checked by the open above, so the
            // only input this refuses is a schema that exists without a
            // registry (what a create killed before its first commit leaves).
            Registry::create_postgres(url, namespace, universe).map_err(|e| match e {
                quanta_registry::RegistryError::Invalid(_) => ButlerError::Repo {
                    repo: root.display().to_string(),
                    reason: format!(
                        "the namespace `{namespace}` of {url} exists but holds no registry \
                         (an interrupted `quanta repo create` may have left it): choose another \
                         --namespace, or drop it (`DROP SCHEMA {namespace} CASCADE`) if nothing \
                         else uses it"
                    ),
                },
                e => e.into(),
            })
        }
        Err(e) => Err(e.into()),
    }
}
