//! UDF (ECMA-167 / OSTA UDF 1.02 to 2.60), our own read-only reader.
//!
//! # What is read
//! The anchor at sector 256, N-256 or N-1 for 512-, 1,024-, 2,048- and
//! 4,096-byte sectors (`descriptor`); the main volume descriptor
//! sequence, else the reserve one: primary and logical volume
//! descriptors, partition descriptors and partition maps (`volume`):
//! type 1, sparable (sparing tables), virtual (the VAT found at the last
//! block, 1.50 and 2.00+ forms) and metadata partitions (2.50+: the
//! metadata file, else its mirror) (`partition`); the file set
//! descriptor and its root directory; file entries and extended file
//! entries, indirect entries and ICB strategies 4 and 4096 (`icb`);
//! short, long and extended allocation descriptors, embedded data and
//! continuation extents; extents allocated but not recorded, or not
//! allocated, read as zeros (`data`); File Identifier Descriptors
//! (`dir`) with OSTA compressed Unicode names, 8- and 16-bit (`name`);
//! timestamps with their time zone (`time`).
//!
//! # Metadata
//! The inode number is the entry's unique ID (the root's is 0), the link
//! count the entry's file link count, uid and gid as recorded (0xFFFFFFFF,
//! "not recorded", as none), the mode the permissions as Linux maps them
//! (read, write, execute of owner, group and other; setuid, setgid and
//! sticky from the ICB flags). `modified`, `accessed`, `changed` (the
//! attribute time) and, from extended file entries, `created`. Symbolic
//! links are their path components joined by `/` (a root component
//! makes the target absolute).
//!
//! # Checks
//! Descriptor tag checksums and CRCs are warnings
//! ([`FileSystem::warnings`]); strict mode
//! ([`FsOptions::strict`](crate::FsOptions)) refuses them.
//!
//! # Bounds
//! Directories are at most [`MAX_DIR_BYTES`], symbolic links
//! [`MAX_LINK_BYTES`], paths [`MAX_DEPTH`] deep; indirect entries,
//! allocation descriptors and their continuations are bounded
//! (`icb::MAX_INDIRECT`, `icb::MAX_ADS`, `icb::MAX_AEDS`) and never
//! followed twice; every recorded extent is checked against its
//! partition and the volume.

pub(crate) mod data;
pub(crate) mod descriptor;
pub(crate) mod dir;
pub(crate) mod icb;
pub(crate) mod name;
pub(crate) mod partition;
pub(crate) mod time;
pub(crate) mod volume;

pub use volume::Integrity;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};
use crate::file_system::{
    components, join, DirEntry, FileReader, FileSystem, FileType, Metadata, ReadDir, StoredRun,
    VisitFn, Visited,
};
use crate::{FsKind, FsOptions};
use descriptor::{ident, LbAddr};
use dir::Fid;
use icb::Entry;

pub(crate) const FS: FsName = FsName::Udf;
/// Largest directory read, in bytes.
pub const MAX_DIR_BYTES: u64 = 64 << 20;
/// Largest symbolic link read, in bytes.
pub const MAX_LINK_BYTES: u64 = 64 << 10;
/// Deepest path looked up.
pub const MAX_DEPTH: usize = 256;
/// Directories kept parsed in memory.
const CACHE_DIRS: usize = 64;
/// Most warnings kept.
const MAX_WARNINGS: usize = 64;

/// What was tolerated, and whether to tolerate it (strict mode).
#[derive(Debug, Default)]
pub struct Checks {
    strict: bool,
    warnings: RefCell<Vec<String>>,
}

impl Checks {
    /// A bad checksum or CRC at `offset`: an error in strict mode, else
    /// a warning.
    pub fn bad(&self, offset: u64, what: String) -> Result<()> {
        if self.strict {
            return Err(Error::corrupt(FS, None, what).at(offset));
        }
        self.note(format!("{what} (descriptor at {offset:#x})"));
        Ok(())
    }

    /// Records a warning (once; at most 64 are kept).
    pub fn note(&self, what: String) {
        let mut w = self.warnings.borrow_mut();
        if w.len() < MAX_WARNINGS && !w.contains(&what) {
            w.push(what);
        }
    }
}

/// One directory entry with its file entry (or the error reading it).
struct Child {
    fid: Fid,
    entry: std::result::Result<Rc<Entry>, Error>,
}

/// A UDF file system.
pub struct UdfFs {
    device: Arc<dyn BlockDevice>,
    parts: partition::Partitions,
    volume: volume::Volume,
    root: Rc<Entry>,
    checks: Checks,
    cache: RefCell<HashMap<u64, Rc<Vec<Child>>>>,
}

impl UdfFs {
    /// Opens the UDF file system on `device`.
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Self> {
        Self::open_with(device, &FsOptions::default())
    }

    /// [`UdfFs::open`] with `options` (strict mode refuses bad tags).
    pub fn open_with(device: Arc<dyn BlockDevice>, options: &FsOptions) -> Result<Self> {
        let checks = Checks {
            strict: options.strict,
            warnings: RefCell::new(Vec::new()),
        };
        let anchor = descriptor::find_anchor(device.as_ref(), &checks)?;
        let volume = volume::read(device.as_ref(), &anchor, &checks)?;
        let parts = partition::Partitions::load(device.as_ref(), &volume, &checks)?;
        let root_icb = read_fsd(device.as_ref(), &parts, &volume, &checks)?;
        let root = icb::read_entry(device.as_ref(), &parts, root_icb, &checks, "/")?;
        if root.file_type != 4 {
            return Err(Error::corrupt(
                FS,
                Some("/"),
                format!("root directory entry of file type {}", root.file_type),
            )
            .at(root.offset));
        }
        Ok(UdfFs {
            device,
            parts,
            volume,
            root: Rc::new(root),
            checks,
            cache: RefCell::new(HashMap::new()),
        })
    }

    /// The UDF revision of the volume, as udfinfo gives it: the minimum
    /// read revision the integrity descriptor records, else the logical
    /// volume's domain identifier suffix (0x0102, 0x0150, 0x0200, 0x0201,
    /// 0x0250, 0x0260).
    pub fn revision(&self) -> u16 {
        self.volume
            .integrity
            .map_or(self.volume.revision, |i| i.min_read)
    }

    /// What the logical volume integrity descriptor records (file and
    /// directory counts, revisions), if it reads.
    pub fn integrity(&self) -> Option<volume::Integrity> {
        self.volume.integrity
    }

    /// The logical block size.
    pub fn block_size(&self) -> u64 {
        self.volume.block
    }

    fn metadata_of(&self, e: &Entry) -> Metadata {
        let file_type = match e.file_type {
            4 => FileType::Directory,
            12 => FileType::Symlink,
            0 | 5 | 249 => FileType::File,
            _ => FileType::Special,
        };
        let unset = |v: u32| (v != u32::MAX).then_some(v);
        Metadata {
            file_type,
            size: if file_type == FileType::Special {
                0
            } else {
                e.size
            },
            allocated: Some(e.blocks.saturating_mul(self.volume.block)),
            mode: Some(e.mode()),
            uid: unset(e.uid),
            gid: unset(e.gid),
            nlink: Some(u64::from(e.links)),
            inode: Some(e.unique_id),
            created: e.created,
            modified: e.modified,
            accessed: e.accessed,
            changed: e.changed,
        }
    }

    /// The entries of directory `e` (at `path`), bounded, cached.
    fn children(&self, e: &Entry, path: &str) -> Result<Rc<Vec<Child>>> {
        if e.file_type != 4 {
            return Err(Error::wrong_type(FS, path, "not a directory"));
        }
        if let Some(hit) = self.cache.borrow().get(&e.offset) {
            return Ok(hit.clone());
        }
        if e.size > MAX_DIR_BYTES {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("directory of {} bytes (limit {MAX_DIR_BYTES})", e.size),
            ));
        }
        let dev = self.device.as_ref();
        let runs = data::runs(dev, &self.parts, e, path)?;
        let bytes = data::read(dev, e, &runs, path)?;
        let offset_of = |i: usize| {
            let i = i as u64;
            runs.iter()
                .find(|r| i >= r.file_offset && i - r.file_offset < r.len)
                .and_then(|r| r.at.map(|at| at + (i - r.file_offset)))
                .unwrap_or(e.offset)
        };
        let fids = dir::parse(&bytes, &offset_of, &self.checks, path)?;
        // Entries named twice (hard links, or a hostile directory naming
        // one entry many times) are read once.
        let mut read: HashMap<LbAddr, std::result::Result<Rc<Entry>, Error>> = HashMap::new();
        let list: Vec<Child> = fids
            .into_iter()
            .map(|fid| {
                let entry = match read.get(&fid.icb) {
                    Some(Ok(e)) => Ok(e.clone()),
                    Some(Err(e)) => Err(e.duplicate(FS)),
                    None => {
                        let at = join(path, &fid.name);
                        let got = icb::read_entry(dev, &self.parts, fid.icb, &self.checks, &at)
                            .map(Rc::new);
                        let entry = match &got {
                            Ok(e) => Ok(e.clone()),
                            Err(e) => Err(e.duplicate(FS)),
                        };
                        read.insert(fid.icb, got);
                        entry
                    }
                };
                Child { fid, entry }
            })
            .collect();
        let list = Rc::new(list);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_DIRS {
            cache.clear();
        }
        cache.insert(e.offset, list.clone());
        Ok(list)
    }

    fn lookup(&self, path: &str) -> Result<Rc<Entry>> {
        let comps = components(path).ok_or_else(|| Error::not_found(FS, path))?;
        if comps.len() > MAX_DEPTH {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("path deeper than {MAX_DEPTH}"),
            ));
        }
        let mut node = self.root.clone();
        let mut walked = String::from("/");
        for c in comps {
            let list = self.children(&node, &walked)?;
            let child = list
                .iter()
                .find(|ch| ch.fid.name == c)
                .ok_or_else(|| Error::not_found(FS, path))?;
            walked = join(&walked, c);
            node = match &child.entry {
                Ok(e) => e.clone(),
                Err(e) => return Err(e.duplicate(FS)),
            };
        }
        Ok(node)
    }

    fn open_entry(&self, e: &Entry, path: &str) -> Result<Box<dyn FileReader + '_>> {
        match self.metadata_of(e).file_type {
            FileType::File => {}
            FileType::Directory => return Err(Error::wrong_type(FS, path, "is a directory")),
            _ => return Err(Error::wrong_type(FS, path, "not a regular file")),
        }
        let runs = data::runs(self.device.as_ref(), &self.parts, e, path)?;
        data::open(self.device.clone(), e, runs, path)
    }

    fn link_of(&self, e: &Entry, path: &str) -> Result<String> {
        if e.file_type != 12 {
            return Err(Error::wrong_type(FS, path, "not a symbolic link"));
        }
        let b = icb::read_all(self.device.as_ref(), &self.parts, e, MAX_LINK_BYTES, path)?;
        symlink_target(&b).map_err(|what| Error::corrupt(FS, Some(path), what).at(e.offset))
    }

    fn stored_runs_of(&self, e: &Entry, path: &str) -> Option<Vec<StoredRun>> {
        if self.metadata_of(e).file_type != FileType::File {
            return None;
        }
        let runs = data::runs(self.device.as_ref(), &self.parts, e, path).ok()?;
        data::stored_runs(e, &runs)
    }
}

/// The label and UUID of the UDF volume on `device`, as blkid gives them
/// (the logical volume identifier; the UUID from the volume set
/// identifier), read as detection needs them: from the volume
/// descriptors alone, without opening the file system.
pub fn volume_identity(device: &dyn BlockDevice) -> Result<(Option<String>, Option<String>)> {
    let checks = Checks::default();
    let anchor = descriptor::find_anchor(device, &checks)?;
    let v = volume::read(device, &anchor, &checks)?;
    let uuid = v.volume_set.as_deref().and_then(uuid_of);
    Ok((v.label, uuid))
}

/// Reads the file set descriptor the logical volume points to and gives
/// its root directory's ICB.
fn read_fsd(
    device: &dyn BlockDevice,
    parts: &partition::Partitions,
    volume: &volume::Volume,
    checks: &Checks,
) -> Result<LbAddr> {
    let (offset, _) = parts.locate(volume.fsd.at, 1)?;
    let block = parts.block();
    if offset + block > device.size() {
        return Err(
            Error::corrupt(FS, None, "file set descriptor past the end of the volume").at(offset),
        );
    }
    let mut buf = vec![0u8; usize::try_from(block).unwrap_or(2048)];
    device.read_at(&mut buf, offset)?;
    descriptor::tag(&buf, offset, Some(ident::FSD), checks)?;
    Ok(descriptor::long_ad(&buf, 400).at)
}

/// The target of a symbolic link from its path components (ECMA-167
/// 4/14.16).
fn symlink_target(b: &[u8]) -> std::result::Result<String, String> {
    let mut parts: Vec<String> = Vec::new();
    let mut absolute = false;
    let mut pos = 0usize;
    while pos < b.len() {
        let kind = b.get(pos).copied().unwrap_or(0);
        let len = usize::from(b.get(pos + 1).copied().unwrap_or(0));
        let ident = b
            .get(pos + 4..pos + 4 + len)
            .ok_or_else(|| format!("path component at {pos} past the link's data"))?;
        pos += 4 + len;
        match kind {
            1 | 2 => {
                absolute = true;
                parts.clear();
            }
            3 => parts.push("..".into()),
            4 => parts.push(".".into()),
            5 => parts.push(name::decode(ident)),
            other => return Err(format!("path component of type {other}")),
        }
    }
    let joined = parts.join("/");
    Ok(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// blkid's UUID of a UDF volume, from the volume set identifier: its
/// first 16 characters in lower case when they are hex digits; else the
/// hex digits it starts with (at least 8) and the next bytes in hex.
fn uuid_of(volume_set: &str) -> Option<String> {
    let b: Vec<u8> = volume_set
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    let b16: Vec<u8> = b
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(16)
        .collect();
    let hex = b16.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    let lower = |s: &[u8]| {
        s.iter()
            .map(|c| char::from(c.to_ascii_lowercase()))
            .collect::<String>()
    };
    let as_hex = |s: &[u8]| s.iter().map(|c| format!("{c:02x}")).collect::<String>();
    Some(if hex < 8 {
        as_hex(b16.get(..8)?)
    } else if hex < 16 {
        lower(b16.get(..8)?) + &as_hex(b16.get(8..12)?)
    } else {
        lower(&b16)
    })
}

impl FileSystem for UdfFs {
    fn kind(&self) -> FsKind {
        FsKind::Udf
    }

    fn label(&self) -> Option<String> {
        self.volume.label.clone()
    }

    fn serial(&self) -> Option<String> {
        self.volume.volume_set.as_deref().and_then(uuid_of)
    }

    fn case_sensitive(&self) -> bool {
        true
    }

    fn warnings(&self) -> Vec<String> {
        self.checks.warnings.borrow().clone()
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let node = self.lookup(path)?;
        let list = self.children(&node, path)?;
        list.iter()
            .map(|c| match &c.entry {
                Ok(e) => Ok(DirEntry {
                    name: c.fid.name.clone(),
                    file_type: self.metadata_of(e).file_type,
                }),
                Err(e) => Err(e.duplicate(FS)),
            })
            .collect::<Result<Vec<_>>>()
            .map(ReadDir::from)
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        Ok(self.metadata_of(self.lookup(path)?.as_ref()))
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        let e = self.lookup(path)?;
        self.open_entry(&e, path)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let e = self.lookup(path)?;
        self.link_of(&e, path)
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let node = self.lookup(path)?;
        let list = self.children(&node, path)?;
        for c in list.iter() {
            let flow = match &c.entry {
                Ok(e) => f(Ok(&UdfVisited {
                    fs: self,
                    name: &c.fid.name,
                    entry: e,
                    path: join(path, &c.fid.name),
                })),
                Err(e) => f(Err((c.fid.name.clone(), e.duplicate(FS)))),
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// An entry met by [`UdfFs::visit_dir`]: read from its file entry.
struct UdfVisited<'a> {
    fs: &'a UdfFs,
    name: &'a str,
    entry: &'a Entry,
    path: String,
}

impl Visited for UdfVisited<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn metadata(&self) -> Result<Metadata> {
        Ok(self.fs.metadata_of(self.entry))
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        if !stream.is_empty() {
            return Err(Error::not_found(FS, &format!("{}:{stream}", self.path)));
        }
        self.fs.open_entry(self.entry, &self.path)
    }
    fn read_link(&self) -> Result<String> {
        self.fs.link_of(self.entry, &self.path)
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn stored_runs(&self) -> Option<Vec<StoredRun>> {
        self.fs.stored_runs_of(self.entry, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_components_join() {
        let mut b = Vec::new();
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend_from_slice(&[5, 4, 0, 0, 8, b'e', b't', b'c']);
        b.extend_from_slice(&[3, 0, 0, 0]);
        b.extend_from_slice(&[5, 2, 0, 0, 8, b'x']);
        assert_eq!(symlink_target(&b).unwrap(), "/etc/../x");
        assert!(symlink_target(&[5, 9, 0, 0, 8]).is_err());
        assert!(symlink_target(&[9, 0, 0, 0]).is_err());
    }

    #[test]
    fn uuid_follows_blkid() {
        assert_eq!(
            uuid_of("0123456789abcdefLinuxUDF").unwrap(),
            "0123456789abcdef"
        );
        assert_eq!(uuid_of("6B1629F4").unwrap(), "6b1629f400000000");
        assert_eq!(uuid_of("xyz").unwrap(), "78797a0000000000");
    }
}
