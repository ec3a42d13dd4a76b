//! Ingest, import and transfer sources resolved to canonical paths, with
//! what the datastore needs to link or record them (a handle on the
//! directory, identity, size and modification time), each directory
//! resolved once: `fs::canonicalize` of every file of a manifest or an
//! export reads every component of its path again.
//!
//! Owns: resolving source paths. Must not: write anything.

use std::fs;
use std::path::{Path, PathBuf};

use quanta_datastore::SourceFile;

/// Canonical forms of source directories with a handle on each, resolved
/// once per directory: a source's canonical path is then its directory's
/// and its name, with the symlinks of the name itself followed
/// (datastores of symlink ingests), looked up relative to the handle.
#[derive(Default)]
pub(crate) struct CanonicalDirs {
    dirs: std::collections::HashMap<PathBuf, CanonicalDir>,
    /// The directory of the last source: sources usually come a directory
    /// at a time, and comparing bytes is cheaper than hashing a path.
    last: Option<(PathBuf, CanonicalDir)>,
}

/// A source directory's canonical path and a handle on it.
type CanonicalDir = (PathBuf, std::sync::Arc<rustix::fd::OwnedFd>);

/// What [`CanonicalDirs::resolve`] found: the canonical path, a handle on
/// its directory, whether it is a regular file, its (device, inode), size
/// and modification time.
pub(crate) struct Resolved {
    pub(crate) path: PathBuf,
    dir: Option<std::sync::Arc<rustix::fd::OwnedFd>>,
    pub(crate) is_file: bool,
    pub(crate) id: (u64, u64),
    size: u64,
    mtime: (i64, i64),
}

impl Resolved {
    /// The source as the datastore takes it.
    pub(crate) fn source(&self) -> SourceFile<'_> {
        use rustix::fd::AsFd;
        SourceFile {
            path: &self.path,
            dir: self.dir.as_ref().map(|d| d.as_fd()),
            id: self.id,
            size: self.size,
            mtime: self.mtime,
        }
    }
}

impl CanonicalDirs {
    /// The canonical form of `dir` and a handle on it.
    fn canonical_dir(&mut self, dir: &Path) -> std::io::Result<&CanonicalDir> {
        let last = match self.last.take() {
            Some(last)
                if last.0.as_os_str().as_encoded_bytes() == dir.as_os_str().as_encoded_bytes() =>
            {
                last
            }
            _ => (dir.to_path_buf(), self.looked_up(dir)?),
        };
        Ok(&self.last.insert(last).1)
    }

    /// [`Self::canonical_dir`] through the map, resolving `dir` the first
    /// time.
    fn looked_up(&mut self, dir: &Path) -> std::io::Result<CanonicalDir> {
        if let Some(found) = self.dirs.get(dir) {
            return Ok(found.clone());
        }
        // Handles in use elsewhere stay open through their `Arc`s.
        if self.dirs.len() >= quanta_datastore::directory_handles_kept() {
            self.dirs.clear();
        }
        let real = fs::canonicalize(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            &real,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let found = (real, std::sync::Arc::new(fd));
        self.dirs.insert(dir.to_path_buf(), found.clone());
        Ok(found)
    }

    /// `path` with every symlink resolved.
    pub(crate) fn resolve(&mut self, path: &Path) -> std::io::Result<Resolved> {
        use rustix::fs::{statat, AtFlags, FileType};
        let mut path = path.to_path_buf();
        for _ in 0..40 {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                let real = fs::canonicalize(&path)?;
                let meta = fs::metadata(&real)?;
                use std::os::unix::fs::MetadataExt;
                return Ok(Resolved {
                    path: real,
                    dir: None,
                    is_file: meta.is_file(),
                    id: (meta.dev(), meta.ino()),
                    size: meta.size(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                });
            };
            let (real_dir, fd) = self.canonical_dir(dir)?;
            let st = statat(&**fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
            let file_type = FileType::from_raw_mode(st.st_mode);
            if file_type != FileType::Symlink {
                return Ok(Resolved {
                    path: real_dir.join(name),
                    dir: Some(fd.clone()),
                    is_file: file_type == FileType::RegularFile,
                    id: (st.st_dev, st.st_ino),
                    size: st.st_size as u64,
                    mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
                });
            }
            let target = rustix::fs::readlinkat(&**fd, name, Vec::new())?;
            let target: std::ffi::OsString =
                std::os::unix::ffi::OsStringExt::from_vec(target.into_bytes());
            path = real_dir.join(target);
        }
        Err(std::io::Error::other("too many levels of symbolic links"))
    }
}
