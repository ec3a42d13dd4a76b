//! Keeps commands from reading or writing the repository's own files through
//! a path given on the command line: an ingest source or a `get --output`
//! inside the repository could otherwise take a registered dataset's file
//! away or overwrite the registry database.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::butler::REGISTRY_FILE;
use crate::error::ButlerError;
use crate::repo_config::{is_registry_file_name, REGISTRY_CONFIG_FILE};

/// A file's identity: device and inode.
pub(crate) type FileId = (u64, u64);

#[cfg(unix)]
pub(crate) fn file_id(meta: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> FileId {
    (0, 0)
}

/// What counts as the repository: everything under its canonical root
/// directory, and also the same directories and registry files reached
/// under other names (a bind mount, a hard link), found by device and
/// inode. Checked directories are remembered, so checking many paths in a
/// few directories costs a few `stat`s.
pub(crate) struct RepoGuard {
    repo: PathBuf,
    canonical_root: PathBuf,
    /// The registry database and its `-wal`, `-shm` and `-journal` files,
    /// or the registry configuration naming a database on a server.
    registry_files: HashMap<FileId, PathBuf>,
    /// The repository root, the datastore root and the datastore
    /// directories added with [`RepoGuard::add_datastore_dirs`].
    repo_dirs: HashMap<FileId, PathBuf>,
    /// Canonical directories found outside the repository, with all their
    /// ancestors.
    outside_dirs: HashSet<PathBuf>,
    /// Datastore directories [`RepoGuard::add_datastore_dirs`] found
    /// missing (not yet made: a fresh RUN's), so as not to `stat` them
    /// again for every file that will go there.
    missing_dirs: HashSet<PathBuf>,
}

impl RepoGuard {
    pub(crate) fn new(repo: &Path, datastore_root: &Path) -> Result<Self, ButlerError> {
        let canonical_root = fs::canonicalize(repo).map_err(|e| ButlerError::Io {
            action: "resolve the repository directory",
            path: repo.to_path_buf(),
            source: e,
        })?;
        let mut guard = Self {
            repo: repo.to_path_buf(),
            canonical_root,
            registry_files: HashMap::new(),
            repo_dirs: HashMap::new(),
            outside_dirs: HashSet::new(),
            missing_dirs: HashSet::new(),
        };
        let sqlite_files = ["", "-wal", "-shm", "-journal"].map(|s| format!("{REGISTRY_FILE}{s}"));
        for name in sqlite_files
            .iter()
            .map(String::as_str)
            .chain([REGISTRY_CONFIG_FILE])
        {
            let path = repo.join(name);
            if let Ok(meta) = fs::metadata(&path) {
                guard.registry_files.insert(file_id(&meta), path);
            }
        }
        for dir in [repo, datastore_root] {
            if let Ok(meta) = fs::metadata(dir) {
                guard.repo_dirs.insert(file_id(&meta), dir.to_path_buf());
            }
        }
        Ok(guard)
    }

    /// Adds the existing directories from `datastore_root` down to the
    /// parent of `dest` (a path inside it), so that a path reaching one of
    /// them under another name is refused too. Call before [`Self::refusal`].
    pub(crate) fn add_datastore_dirs(&mut self, datastore_root: &Path, dest: &Path) {
        let mut dir = dest.parent();
        while let Some(d) = dir {
            if d == datastore_root || !d.starts_with(datastore_root) {
                break;
            }
            if !self.missing_dirs.contains(d) {
                match fs::metadata(d) {
                    Ok(meta) => {
                        if self
                            .repo_dirs
                            .insert(file_id(&meta), d.to_path_buf())
                            .is_some()
                        {
                            break; // its ancestors were added with it
                        }
                    }
                    Err(_) => {
                        self.missing_dirs.insert(d.to_path_buf());
                    }
                }
            }
            dir = d.parent();
        }
        self.outside_dirs.clear();
    }

    /// Why `canonical` (an absolute path with symlinks resolved; it need
    /// not exist) must not be read from or written to, or `None`.
    pub(crate) fn refusal(&mut self, canonical: &Path) -> Option<String> {
        self.refusal_of(canonical, None)
    }

    /// [`Self::refusal`] given the (device, inode) of `canonical` when the
    /// caller has it (saving a `stat`).
    pub(crate) fn refusal_of(
        &mut self,
        canonical: &Path,
        known_id: Option<FileId>,
    ) -> Option<String> {
        self.file_refusal(canonical, known_id)
            .or_else(|| self.directory_refusal(canonical))
    }

    /// The part of [`Self::refusal_of`] about the file itself: inside the
    /// repository by its path, or a registry file under another name.
    /// What its directory is ([`Self::directory_refusal`]) is checked
    /// apart: an ingest checks each source directory once, after it has
    /// added every datastore directory it writes into.
    pub(crate) fn file_refusal(
        &self,
        canonical: &Path,
        known_id: Option<FileId>,
    ) -> Option<String> {
        // Both canonical: a path inside the root starts with its bytes
        // (cheaper than comparing components, once per ingested file).
        let inside = canonical
            .as_os_str()
            .as_encoded_bytes()
            .starts_with(self.canonical_root.as_os_str().as_encoded_bytes())
            .then(|| canonical.strip_prefix(&self.canonical_root).ok());
        if let Some(Some(rel)) = inside {
            let what = match rel.components().next() {
                Some(c) if c.as_os_str().to_string_lossy().starts_with(REGISTRY_FILE) => {
                    "a file of the registry database"
                }
                Some(c) if is_registry_file_name(&c.as_os_str().to_string_lossy()) => {
                    "the configuration naming the registry database"
                }
                Some(c) if c.as_os_str() == crate::butler::DATASTORE_DIR => {
                    "in the repository's datastore"
                }
                _ => "inside the repository",
            };
            return Some(format!(
                "`{}` is {what} `{}`",
                canonical.display(),
                self.repo.display()
            ));
        }
        let id = known_id.or_else(|| fs::metadata(canonical).ok().map(|m| file_id(&m)));
        if let Some(id) = id {
            if let Some(db) = self.registry_files.get(&id) {
                return Some(format!(
                    "`{}` is the registry file `{}` under another name (a hard link)",
                    canonical.display(),
                    db.display()
                ));
            }
        }
        None
    }

    /// The part of [`Self::refusal_of`] about the directories holding
    /// `canonical`: one of them is a repository directory under another
    /// name (a bind mount).
    pub(crate) fn directory_refusal(&mut self, canonical: &Path) -> Option<String> {
        // Walk up until a directory known to be outside; remember the
        // walked ones only if none of them is a repository directory.
        let mut walked = Vec::new();
        for dir in canonical.ancestors().skip(1) {
            if self.outside_dirs.contains(dir) {
                break;
            }
            if let Ok(meta) = fs::metadata(dir) {
                if let Some(repo_dir) = self.repo_dirs.get(&file_id(&meta)) {
                    return Some(format!(
                        "`{}` is inside the repository `{}`: its directory `{}` is `{}` under \
                         another name (a bind mount?)",
                        canonical.display(),
                        self.repo.display(),
                        dir.display(),
                        repo_dir.display()
                    ));
                }
            }
            walked.push(dir.to_path_buf());
        }
        self.outside_dirs.extend(walked);
        None
    }
}
