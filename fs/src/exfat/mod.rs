//! exFAT, our own read-only reader, written from Microsoft's "exFAT file
//! system specification".
//!
//! # What is read
//! The main boot region (or the backup one when the main one fails its
//! checksum or range checks: [`ExFatFs::boot_region`] says which,
//! `boot_sector`); the active FAT (chains bounded by the data they must
//! hold, NoFatChain streams read as contiguous runs without the FAT,
//! `cluster_chain`); file directory entry sets with their SetChecksum
//! (`entry_set`); the up-case table for case-insensitive lookup
//! (`up_case`); the volume label and serial number (shown as `blkid`
//! prints it, `XXXX-XXXX`). The allocation bitmap is not needed to read
//! and is not read. Bytes past a file's ValidDataLength read as zeros
//! (`data`).
//!
//! # Times
//! Create, modify and access times in UTC: the stored local time less its
//! UTC offset when the offset is marked valid (else taken as UTC), with
//! the 10 ms increment of create and modify times (nanoseconds are a
//! multiple of 10 ms; access times have 2-second precision).
//!
//! # Names
//! UTF-16 names (up to 255 units), an unpaired surrogate shown as U+FFFD
//! (listed, not reachable by path). Lookups compare names through the
//! volume's up-case table.
//!
//! # Bounds
//! Directories are at most [`MAX_DIR_BYTES`] (the specification's own
//! limit) and `entry_set::MAX_DIR_FILES` files; chains at most
//! `cluster_chain::MAX_RUNS` runs and never longer than their data
//! needs; every cluster is checked against the heap. A damaged entry set
//! is an error for that entry alone ([`FileSystem::visit_dir`] passes it
//! on, [`FileSystem::read_dir`] returns it).

pub(crate) mod boot_sector;
pub(crate) mod cluster_chain;
pub(crate) mod data;
pub(crate) mod entry_set;
pub(crate) mod up_case;

pub use boot_sector::{BootRegion, BootSector};
pub use entry_set::attr;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};
use crate::file_system::{
    components, join, DirEntry, FileReader, FileSystem, FileType, Metadata, ReadDir, VisitFn,
    Visited,
};
use crate::FsKind;
use cluster_chain::{Run, Want};
use entry_set::{Directory, FileSet};
use up_case::UpCase;

pub(crate) const FS: FsName = FsName::ExFat;
/// Largest directory read, in bytes (the specification's limit, §6.2).
pub const MAX_DIR_BYTES: u64 = 256 << 20;
/// Directories kept parsed in memory.
const CACHE_DIRS: usize = 64;

/// A directory to read: the root, or a file set with the directory bit.
enum Node {
    Root,
    File(FileSet),
}

/// An exFAT file system.
pub struct ExFatFs {
    device: Arc<dyn BlockDevice>,
    boot: BootSector,
    region: BootRegion,
    label: Option<String>,
    up_case: UpCase,
    up_case_from_volume: bool,
    cache: RefCell<HashMap<(u32, u64), Rc<Directory>>>,
}

/// The volume label of the exFAT volume on `device`, read as detection
/// needs it (without opening the file system): the root directory's
/// label entry (type 0x83), its clusters read one at a time up to the
/// end-of-directory entry, at most [`MAX_DIR_BYTES`]. `Ok(None)` when the
/// root directory has no label entry or an empty one.
pub fn volume_label(device: &dyn BlockDevice) -> Result<Option<String>> {
    let (boot, _) = boot_sector::read(device)?;
    let cluster = boot.cluster_size();
    let most = (MAX_DIR_BYTES / cluster).min(u64::from(boot.cluster_count));
    let runs = cluster_chain::runs(
        device,
        &boot,
        boot.root_cluster,
        false,
        Want::UpTo(most),
        "/",
    )?;
    let mut buf = vec![0u8; usize::try_from(cluster).unwrap_or(0)];
    for r in &runs {
        for c in 0..r.count {
            let Some(n) = u32::try_from(c).ok().and_then(|c| r.first.checked_add(c)) else {
                return Ok(None);
            };
            device.read_at(&mut buf, boot.cluster_offset(n))?;
            for e in buf.chunks_exact(32) {
                match e.first() {
                    Some(0x00) => return Ok(None),
                    Some(0x83) => {
                        let l = entry_set::volume_label(e);
                        return Ok((!l.is_empty()).then_some(l));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(None)
}

impl ExFatFs {
    /// Opens the exFAT file system on `device`.
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Self> {
        let (boot, region) = boot_sector::read(device.as_ref())?;
        let mut fs = ExFatFs {
            device,
            boot,
            region,
            label: None,
            // Identity until the root directory says where the table is.
            up_case: UpCase::from_table(&[]),
            up_case_from_volume: false,
            cache: RefCell::new(HashMap::new()),
        };
        let root = fs.directory(&Node::Root, "/")?;
        fs.label = root.label.clone().filter(|l| !l.is_empty());
        match root.up_case.and_then(|t| fs.read_up_case(t)) {
            Some(table) => {
                fs.up_case = table;
                fs.up_case_from_volume = true;
            }
            None => fs.up_case = UpCase::fallback(),
        }
        Ok(fs)
    }

    /// Which boot region the volume was opened with (the backup one when
    /// the main one is damaged).
    pub fn boot_region(&self) -> BootRegion {
        self.region
    }

    /// The boot sector's fields.
    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }

    /// Whether names are compared through the volume's own up-case table
    /// (`false`: it is missing or fails its checksum, and Unicode's simple
    /// upper-case mapping is used instead).
    pub fn up_case_from_volume(&self) -> bool {
        self.up_case_from_volume
    }

    /// The FileAttributes of `path` (see [`entry_set::attr`]); the root
    /// directory has none stored and gives `DIRECTORY`.
    pub fn attributes(&self, path: &str) -> Result<u16> {
        Ok(match self.lookup(path)? {
            Node::Root => entry_set::attr::DIRECTORY,
            Node::File(f) => f.attributes,
        })
    }

    /// The stored up-case table, if it is there, of a sane size and
    /// matches its checksum.
    fn read_up_case(&self, t: entry_set::UpCaseEntry) -> Option<UpCase> {
        if t.data_length == 0 || t.data_length > up_case::MAX_TABLE_BYTES {
            return None;
        }
        let clusters = t.data_length.div_ceil(self.boot.cluster_size());
        let runs = cluster_chain::runs(
            self.device.as_ref(),
            &self.boot,
            t.first_cluster,
            false,
            Want::Exactly(clusters),
            "/",
        )
        .ok()?;
        let mut bytes = self.read_runs(&runs, t.data_length, "/").ok()?;
        bytes.truncate(usize::try_from(t.data_length).ok()?);
        (up_case::table_checksum(&bytes) == t.checksum).then(|| UpCase::from_table(&bytes))
    }

    /// Reads the first `len` bytes held by `runs`.
    fn read_runs(&self, runs: &[Run], len: u64, path: &str) -> Result<Vec<u8>> {
        let cluster = self.boot.cluster_size();
        let mut out = Vec::new();
        for r in runs {
            let have = out.len() as u64;
            if have >= len {
                break;
            }
            let n = r.count.saturating_mul(cluster).min(len - have);
            let at = self.boot.cluster_offset(r.first);
            if at.checked_add(n).is_none_or(|end| end > self.device.size()) {
                // Checked before the buffer grows: a hostile length costs
                // no memory past what the device holds.
                return Err(Error::corrupt(
                    FS,
                    Some(path),
                    format!(
                        "{n} bytes from cluster {} run past the end of the device",
                        r.first
                    ),
                )
                .at(at));
            }
            let start = out.len();
            out.resize(start + usize::try_from(n).unwrap_or(0), 0);
            let dst = out.get_mut(start..).unwrap_or_default();
            self.device
                .read_at(dst, self.boot.cluster_offset(r.first))?;
        }
        Ok(out)
    }

    /// The entries of directory `node` (at `path`), bounded, cached.
    fn directory(&self, node: &Node, path: &str) -> Result<Rc<Directory>> {
        let cluster = self.boot.cluster_size();
        let (key, runs, len) = match node {
            Node::Root => {
                let most = (MAX_DIR_BYTES / cluster).min(u64::from(self.boot.cluster_count));
                let first = self.boot.root_cluster;
                let key = (first, u64::MAX);
                if let Some(hit) = self.cache.borrow().get(&key) {
                    return Ok(hit.clone());
                }
                let runs = cluster_chain::runs(
                    self.device.as_ref(),
                    &self.boot,
                    first,
                    false,
                    Want::UpTo(most),
                    path,
                )?;
                let len = runs.iter().map(|r| r.count * cluster).sum();
                (key, runs, len)
            }
            Node::File(f) => {
                let key = (f.first_cluster, f.data_length);
                if let Some(hit) = self.cache.borrow().get(&key) {
                    return Ok(hit.clone());
                }
                if f.data_length > MAX_DIR_BYTES {
                    return Err(Error::limit(
                        FS,
                        Some(path),
                        format!(
                            "directory of {} bytes (limit {MAX_DIR_BYTES})",
                            f.data_length
                        ),
                    ));
                }
                if !f.allocated() {
                    return Ok(Rc::new(Directory::default()));
                }
                let runs = cluster_chain::runs(
                    self.device.as_ref(),
                    &self.boot,
                    f.first_cluster,
                    f.contiguous(),
                    Want::Exactly(f.data_length.div_ceil(cluster)),
                    path,
                )
                .map_err(|e| at_entry(e, f))?;
                (key, runs, f.data_length)
            }
        };
        let bytes = self.read_runs(&runs, len, path)?;
        let offset_of = |i: usize| {
            let mut left = i as u64;
            for r in &runs {
                let n = r.count * cluster;
                if left < n {
                    return self.boot.cluster_offset(r.first) + left;
                }
                left -= n;
            }
            0
        };
        let dir = Rc::new(entry_set::parse(
            &bytes,
            &offset_of,
            matches!(node, Node::Root),
            path,
        )?);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_DIRS {
            cache.clear();
        }
        cache.insert(key, dir.clone());
        Ok(dir)
    }

    /// The node at `path`.
    fn lookup(&self, path: &str) -> Result<Node> {
        let parts = components(path).ok_or_else(|| Error::not_found(FS, path))?;
        let mut node = Node::Root;
        for part in parts {
            if let Node::File(f) = &node {
                if !f.is_dir() {
                    return Err(Error::wrong_type(FS, path, "not a directory"));
                }
            }
            let dir = self.directory(&node, path)?;
            let want: Vec<u16> = part.encode_utf16().collect();
            let hit = dir
                .files
                .iter()
                .filter_map(|f| f.as_ref().ok())
                .find(|f| self.up_case.eq(&f.units, &want));
            node = Node::File(hit.ok_or_else(|| Error::not_found(FS, path))?.clone());
        }
        Ok(node)
    }

    /// The directory at `path`.
    fn dir_at(&self, path: &str) -> Result<Rc<Directory>> {
        let node = self.lookup(path)?;
        if let Node::File(f) = &node {
            if !f.is_dir() {
                return Err(Error::wrong_type(FS, path, "not a directory"));
            }
        }
        self.directory(&node, path)
    }

    fn metadata_of(&self, f: &FileSet) -> Metadata {
        let cluster = self.boot.cluster_size();
        let file_type = if f.is_dir() {
            FileType::Directory
        } else {
            FileType::File
        };
        let allocated = if f.allocated() {
            f.data_length.div_ceil(cluster).saturating_mul(cluster)
        } else {
            0
        };
        Metadata {
            file_type,
            size: f.data_length,
            allocated: Some(allocated),
            mode: None,
            uid: None,
            gid: None,
            nlink: Some(1),
            inode: None,
            created: f.created.to_timestamp(),
            modified: f.modified.to_timestamp(),
            accessed: f.accessed.to_timestamp(),
            changed: None,
        }
    }

    /// The data of file `f` (at `path`).
    fn open_file(&self, f: &FileSet, path: &str) -> Result<Box<dyn FileReader + '_>> {
        if f.is_dir() {
            return Err(Error::wrong_type(FS, path, "is a directory"));
        }
        let cluster = self.boot.cluster_size();
        let heap = u64::from(self.boot.cluster_count).saturating_mul(cluster);
        if f.data_length > heap {
            return Err(Error::corrupt(
                FS,
                Some(path),
                format!(
                    "DataLength {} is more than the cluster heap's {heap} bytes",
                    f.data_length
                ),
            )
            .at(f.offset + 32 + 24));
        }
        let runs = if f.allocated() {
            cluster_chain::runs(
                self.device.as_ref(),
                &self.boot,
                f.first_cluster,
                f.contiguous(),
                Want::Exactly(f.valid_length.div_ceil(cluster)),
                path,
            )
            .map_err(|e| at_entry(e, f))?
        } else {
            Vec::new()
        };
        let file = data::reader(
            self.device.clone(),
            &self.boot,
            &runs,
            f.data_length,
            f.valid_length,
            path,
        )
        .map_err(|e| at_entry(e, f))?;
        Ok(Box::new(file))
    }
}

/// Gives an error without an offset the offset of `f`'s stream extension.
fn at_entry(e: Error, f: &FileSet) -> Error {
    match e {
        Error::Corrupt { offset: None, .. } => e.at(f.offset + 32),
        e => e,
    }
}

fn no_links(path: &str) -> Error {
    Error::wrong_type(FS, path, "not a symbolic link (exFAT has none)")
}

impl FileSystem for ExFatFs {
    fn kind(&self) -> FsKind {
        FsKind::ExFat
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn serial(&self) -> Option<String> {
        let v = self.boot.serial;
        Some(format!("{:04X}-{:04X}", v >> 16, v & 0xffff))
    }

    fn case_sensitive(&self) -> bool {
        false
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let dir = self.dir_at(path)?;
        let mut out = Vec::with_capacity(dir.files.len());
        for f in &dir.files {
            match f {
                Ok(f) => out.push(DirEntry {
                    name: f.name.clone(),
                    file_type: if f.is_dir() {
                        FileType::Directory
                    } else {
                        FileType::File
                    },
                }),
                Err(bad) => return Err(bad.1.duplicate(FS)),
            }
        }
        Ok(out.into())
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        Ok(match self.lookup(path)? {
            Node::Root => Metadata::bare(FileType::Directory),
            Node::File(f) => self.metadata_of(&f),
        })
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        match self.lookup(path)? {
            Node::Root => Err(Error::wrong_type(FS, path, "is a directory")),
            Node::File(f) => self.open_file(&f, path),
        }
    }

    fn read_link(&self, path: &str) -> Result<String> {
        self.lookup(path)?;
        Err(no_links(path))
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let dir = self.dir_at(path)?;
        for entry in &dir.files {
            let flow = match entry {
                Ok(set) => f(Ok(&ExFatVisited {
                    fs: self,
                    set,
                    path: join(path, &set.name),
                })),
                Err(bad) => f(Err((bad.0.clone(), bad.1.duplicate(FS)))),
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// An entry met by [`ExFatFs::visit_dir`]: read from its entry set.
struct ExFatVisited<'a> {
    fs: &'a ExFatFs,
    set: &'a FileSet,
    path: String,
}

impl Visited for ExFatVisited<'_> {
    fn name(&self) -> &str {
        &self.set.name
    }
    fn metadata(&self) -> Result<Metadata> {
        Ok(self.fs.metadata_of(self.set))
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        if !stream.is_empty() {
            return Err(Error::not_found(FS, &format!("{}:{stream}", self.path)));
        }
        self.fs.open_file(self.set, &self.path)
    }
    fn read_link(&self) -> Result<String> {
        Err(no_links(&self.path))
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
