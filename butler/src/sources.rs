//! Ingest, import and transfer sources resolved to canonical paths, with
//! what the datastore needs to link or record them (a handle on the
//! directory, identity, size and modification time), each directory
//! resolved once: `fs::canonicalize` of every file of a manifest or an
//! export reads every component of its path again. A check that needs
//! only a source's kind and identity can read them from its directory's
//! listing instead of a `stat` per file ([`DirListings`]).
//!
//! Owns: resolving source paths. Must not: write anything.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::FileType;

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
    last: Option<LastDir>,
}

/// A source directory's canonical path and a handle on it.
type CanonicalDir = (PathBuf, Arc<rustix::fd::OwnedFd>);

/// [`CanonicalDirs`]' last directory: as given, canonical, and its
/// listing once [`CanonicalDirs::identify`] asked for it.
struct LastDir {
    given: PathBuf,
    canonical: CanonicalDir,
    listing: Option<Arc<DirListing>>,
}

/// What [`CanonicalDirs::identify`] found: the canonical path, whether it
/// is a regular file, and its (device, inode).
pub(crate) struct Identified {
    pub(crate) path: PathBuf,
    pub(crate) is_file: bool,
    pub(crate) id: (u64, u64),
}

impl From<Resolved> for Identified {
    fn from(resolved: Resolved) -> Self {
        Self {
            path: resolved.path,
            is_file: resolved.is_file,
            id: resolved.id,
        }
    }
}

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
        Ok(&self.last_dir(dir)?.canonical)
    }

    /// `dir` as the last directory, looked up unless it already is.
    fn last_dir(&mut self, dir: &Path) -> std::io::Result<&mut LastDir> {
        let last = match self.last.take() {
            Some(last)
                if last.given.as_os_str().as_encoded_bytes()
                    == dir.as_os_str().as_encoded_bytes() =>
            {
                last
            }
            _ => LastDir {
                given: dir.to_path_buf(),
                canonical: self.looked_up(dir)?,
                listing: None,
            },
        };
        Ok(self.last.insert(last))
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

    /// What a check needs of `path`: its canonical path, kind and
    /// identity, from its directory's listing in `listings` where that
    /// answers (a regular file or neither it nor a symlink), else as
    /// [`Self::resolve`] finds them.
    pub(crate) fn identify(
        &mut self,
        path: &Path,
        listings: &DirListings,
    ) -> std::io::Result<Identified> {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            let last = self.last_dir(dir)?;
            let (real_dir, fd) = &last.canonical;
            let listing = match &mut last.listing {
                Some(listing) => &**listing,
                slot @ None => &**slot.insert(listings.listing(real_dir, fd)?),
            };
            if let Some((ino, kind)) = listing.find(name, fd, listings) {
                let is_file = match kind {
                    FileType::RegularFile => Some(true),
                    // Followed, or of a kind the listing does not know.
                    FileType::Symlink | FileType::Unknown => None,
                    FileType::Directory
                    | FileType::Fifo
                    | FileType::Socket
                    | FileType::CharacterDevice
                    | FileType::BlockDevice => Some(false),
                };
                if let Some(is_file) = is_file {
                    return Ok(Identified {
                        path: real_dir.join(name),
                        is_file,
                        id: (listing.device, ino),
                    });
                }
            }
        }
        self.resolve(path).map(Identified::from)
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

/// Listings of source directories, shared by the threads that check an
/// ingest's items: a `stat` per file was half of the checking pass's time
/// (10^7 raws: 17 of its 38 CPU seconds), where reading a directory costs
/// a fraction of a microsecond per entry. A directory is listed once the
/// files looked up in it would have cost about as much as reading it
/// ([`LIST_AFTER_BYTES_PER_LOOKUP`]), so a manifest naming a few files of
/// a large directory still `stat`s them. A name the listing does not have
/// (made since, or missing) is looked up by `stat`, so the listing only
/// ever saves a `stat`, never decides that a file is missing.
///
/// The identity read from a listing is the directory's device and the
/// entry's inode: for a name that is a mount point it is that of the file
/// under it, a difference only a bind mount over a source could show. On
/// overlayfs, whose listings need not give the inodes `stat` does, nothing
/// is listed.
#[derive(Default)]
pub(crate) struct DirListings {
    dirs: Mutex<std::collections::HashMap<PathBuf, Arc<DirListing>>>,
    /// Entries held by the listings in `dirs`, against [`LISTED_ENTRIES_KEPT`].
    entries: AtomicUsize,
}

/// A directory is listed once its lookups times this reach its size in
/// bytes (`st_size`: the bytes of its entries on ext4 and XFS, about 20
/// per entry on tmpfs), so that listing costs no more than the `stat`s
/// it saves would have.
const LIST_AFTER_BYTES_PER_LOOKUP: u64 = 256;

/// Entries of one directory past which it is not listed (its files are
/// `stat`ed): 24 bytes each in memory, and its name.
const MAX_LISTED_ENTRIES: usize = 1 << 20;

/// Entries the listings kept hold together before they are dropped (a
/// manifest usually comes a directory at a time).
const LISTED_ENTRIES_KEPT: usize = 1 << 22;

/// One directory's listing, read once it pays ([`DirListings`]).
pub(crate) struct DirListing {
    device: u64,
    /// The directory's `st_size`.
    bytes: u64,
    lookups: AtomicU64,
    /// `None` if it had more than [`MAX_LISTED_ENTRIES`] entries or could
    /// not be read: its files are `stat`ed.
    names: OnceLock<Option<ListedNames>>,
}

/// A directory's entries sorted by name, the names in one buffer.
struct ListedNames {
    names: Vec<u8>,
    entries: Vec<ListedEntry>,
}

struct ListedEntry {
    name_at: u32,
    name_len: u32,
    ino: u64,
    kind: FileType,
}

impl ListedEntry {
    fn name<'n>(&self, names: &'n [u8]) -> &'n [u8] {
        &names[self.name_at as usize..][..self.name_len as usize]
    }
}

impl ListedNames {
    /// The entries of the directory open at `fd`, or `None` past `cap`.
    fn read(fd: &rustix::fd::OwnedFd, cap: usize) -> std::io::Result<Option<Self>> {
        let (mut names, mut entries) = (Vec::new(), Vec::<ListedEntry>::new());
        use rustix::fs::{Mode, OFlags};
        // Opened again for reading: `fd` is an `O_PATH` handle, which
        // `Dir::read_from` would copy the flags of.
        let readable = rustix::fs::openat(
            fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for entry in rustix::fs::Dir::new(readable)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if entries.len() == cap {
                return Ok(None);
            }
            let (Ok(name_at), Ok(name_len)) =
                (u32::try_from(names.len()), u32::try_from(name.len()))
            else {
                return Ok(None);
            };
            names.extend_from_slice(name);
            entries.push(ListedEntry {
                name_at,
                name_len,
                ino: entry.ino(),
                kind: entry.file_type(),
            });
        }
        entries.sort_unstable_by(|a, b| a.name(&names).cmp(b.name(&names)));
        Ok(Some(Self { names, entries }))
    }

    fn find(&self, name: &[u8]) -> Option<&ListedEntry> {
        self.entries
            .binary_search_by(|entry| entry.name(&self.names).cmp(name))
            .ok()
            .map(|at| &self.entries[at])
    }
}

impl DirListings {
    /// The listing of the directory `canonical`, open at `fd` (not read
    /// yet: [`DirListing::find`] reads it once it pays).
    fn listing(
        &self,
        canonical: &Path,
        fd: &rustix::fd::OwnedFd,
    ) -> std::io::Result<Arc<DirListing>> {
        let mut dirs = self
            .dirs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(listing) = dirs.get(canonical) {
            return Ok(listing.clone());
        }
        // Listings in use elsewhere stay alive through their `Arc`s.
        if self.entries.load(Ordering::Relaxed) >= LISTED_ENTRIES_KEPT {
            dirs.clear();
            self.entries.store(0, Ordering::Relaxed);
        }
        let st = rustix::fs::fstat(fd)?;
        let names = OnceLock::new();
        // overlayfs's `readdir` gives the inode numbers of its layers,
        // which are not always the ones its `stat` gives (without `xino`):
        // its files are `stat`ed.
        const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
        let overlay =
            rustix::fs::fstatfs(fd).map_or(true, |fs| fs.f_type as u64 == OVERLAYFS_SUPER_MAGIC);
        if overlay {
            let _ = names.set(None);
        }
        let listing = Arc::new(DirListing {
            device: st.st_dev,
            bytes: u64::try_from(st.st_size).unwrap_or(0),
            lookups: AtomicU64::new(0),
            names,
        });
        dirs.insert(canonical.to_path_buf(), listing.clone());
        Ok(listing)
    }
}

impl DirListing {
    /// The inode and kind of `name` if the directory is listed (reading
    /// it now if its lookups have come to pay for it) and has it.
    fn find(
        &self,
        name: &OsStr,
        fd: &rustix::fd::OwnedFd,
        listings: &DirListings,
    ) -> Option<(u64, FileType)> {
        let names = match self.names.get() {
            Some(names) => names.as_ref()?,
            None => {
                let lookups = self.lookups.fetch_add(1, Ordering::Relaxed) + 1;
                if lookups.saturating_mul(LIST_AFTER_BYTES_PER_LOOKUP) < self.bytes {
                    return None;
                }
                self.names
                    .get_or_init(|| {
                        // Unreadable: its files are `stat`ed, which says why.
                        let names = ListedNames::read(fd, MAX_LISTED_ENTRIES).ok().flatten();
                        if let Some(names) = &names {
                            listings
                                .entries
                                .fetch_add(names.entries.len(), Ordering::Relaxed);
                        }
                        names
                    })
                    .as_ref()?
            }
        };
        let entry = names.find(name.as_encoded_bytes())?;
        Some((entry.ino, entry.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `stat` (through [`CanonicalDirs::resolve`]) says of `path`:
    /// the fields a listing can answer, or the error's kind.
    fn by_stat(path: &Path) -> Result<(PathBuf, bool, (u64, u64)), std::io::ErrorKind> {
        CanonicalDirs::default()
            .resolve(path)
            .map(|r| (r.path, r.is_file, r.id))
            .map_err(|e| e.kind())
    }

    fn by_listing(
        dirs: &mut CanonicalDirs,
        listings: &DirListings,
        path: &Path,
    ) -> Result<(PathBuf, bool, (u64, u64)), std::io::ErrorKind> {
        dirs.identify(path, listings)
            .map(|i| (i.path, i.is_file, i.id))
            .map_err(|e| e.kind())
    }

    fn listed(listings: &DirListings, dir: &Path) -> bool {
        let canonical = fs::canonicalize(dir).unwrap();
        let dirs = listings.dirs.lock().unwrap();
        dirs.get(&canonical)
            .is_some_and(|listing| matches!(listing.names.get(), Some(Some(_))))
    }

    #[test]
    fn a_listed_directory_identifies_its_files_as_stat_does() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raw");
        fs::create_dir(&dir).unwrap();
        for i in 0..300 {
            fs::write(dir.join(format!("raw_{i}.fits")), b"x").unwrap();
        }
        fs::create_dir(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.join("raw_7.fits"), dir.join("link.fits")).unwrap();
        std::os::unix::fs::symlink(dir.join("gone.fits"), dir.join("dangling.fits")).unwrap();
        let (listings, mut dirs) = (DirListings::default(), CanonicalDirs::default());
        // Before the directory is listed: as many lookups as its bytes
        // pay for, each by `stat`.
        let first = dir.join("raw_0.fits");
        assert_eq!(by_listing(&mut dirs, &listings, &first), by_stat(&first));
        assert!(!listed(&listings, &dir), "listed after a single lookup");
        for i in 0..300 {
            let path = dir.join(format!("raw_{i}.fits"));
            assert_eq!(by_listing(&mut dirs, &listings, &path), by_stat(&path));
        }
        assert!(listed(&listings, &dir), "not listed after 300 lookups");
        // From the listing now, and through other threads' own caches.
        let mut other = CanonicalDirs::default();
        for name in [
            "raw_0.fits",
            "raw_299.fits",
            "sub",
            "link.fits",
            "dangling.fits",
            "missing.fits",
        ] {
            let path = dir.join(name);
            assert_eq!(
                by_listing(&mut other, &listings, &path),
                by_stat(&path),
                "{name}"
            );
        }
        assert_eq!(
            by_listing(&mut other, &listings, &dir.join("link.fits"))
                .unwrap()
                .0,
            fs::canonicalize(dir.join("raw_7.fits")).unwrap()
        );
        // A file made after the listing is found by `stat`.
        let late = dir.join("late.fits");
        fs::write(&late, b"y").unwrap();
        assert_eq!(by_listing(&mut other, &listings, &late), by_stat(&late));
        assert!(by_stat(&late).unwrap().1);
    }

    #[test]
    fn a_directory_too_large_for_its_lookups_is_not_listed() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..2000 {
            fs::write(
                tmp.path().join(format!("a_rather_long_name_{i:06}.fits")),
                b"x",
            )
            .unwrap();
        }
        let (listings, mut dirs) = (DirListings::default(), CanonicalDirs::default());
        for i in 0..8 {
            let path = tmp.path().join(format!("a_rather_long_name_{i:06}.fits"));
            assert_eq!(by_listing(&mut dirs, &listings, &path), by_stat(&path));
        }
        // Reading its 2,000 entries would cost more than 8 `stat`s.
        let bytes = fs::metadata(tmp.path()).unwrap().len();
        assert!(8 * LIST_AFTER_BYTES_PER_LOOKUP < bytes, "{bytes} bytes");
        assert!(!listed(&listings, tmp.path()));
    }
}
