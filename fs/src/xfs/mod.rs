//! XFS (v4 and v5), read by our own layer.
//!
//! Modules: [`superblock`](self) (geometry and features), `inode` (v1/v2/v3
//! cores, `bigtime` and `nrext64`), `bmap` (extent lists and extent
//! B+trees), `dir` (short-form, block, leaf, node and B+tree directories)
//! and symbolic links (inline and remote) here. Holes and unwritten
//! extents read as zeros. Extended attributes are not read (the
//! [`FileSystem`] trait has no place for them).
//!
//! On v5 volumes, the CRCs of the superblock, inodes, extent tree blocks,
//! directory data blocks and remote symlink blocks are checked as each is
//! read: a mismatch is a warning ([`FileSystem::warnings`]) and the
//! structure is used as found; [`FsOptions::strict`] refuses instead.
//!
//! Not read: files on a real-time device (the device is not part of the
//! volume: such files are refused one by one with
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)), volumes with
//! the `metadir` or `zoned` features or unknown incompatible ones (refused
//! at open), and the log: a volume not cleanly unmounted is read as its
//! metadata stands, without replay.
//!
//! # Threads
//! [`XfsFs`] is `!Send` and `!Sync` (`RefCell` caches): use one per
//! thread, each opened on the shared `Arc<dyn BlockDevice>`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use diskimage_formats::{BlockDevice, Guid};

use crate::error::{Error, FsName, Result};
use crate::ext4::blocks::Run;
use crate::ext4::byte_runs;
use crate::file_system::{
    components, decode_name, encode_name, join, DirEntry, FileReader, FileSystem, FileType,
    Metadata, ReadDir, StoredRun, VisitFn, Visited,
};
use crate::options::FsOptions;
use crate::runs::{self, RunReader};
use crate::FsKind;
use diskimage_formats::Detail;

mod bmap;
mod dir;
mod inode;
mod superblock;

use dir::Entry;
use inode::{Format, Inode, FLAG_REALTIME, S_IFDIR, S_IFLNK, S_IFREG};
use superblock::Superblock;

pub(crate) const FS: FsName = FsName::Xfs;
/// The longest symlink target XFS stores.
const MAX_LINK: u64 = 1024;
/// `XSLM`: a v5 remote symlink block, its header size and CRC offset.
const SYMLINK_MAGIC: &[u8; 4] = b"XSLM";
const SYMLINK_HDR: usize = 56;
const SYMLINK_CRC_AT: usize = 12;
/// Most warnings kept.
const MAX_WARNINGS: usize = 256;
/// Directories whose listings are kept, and most entries kept in all.
const DIR_CACHE: usize = 8;
const DIR_CACHE_ENTRIES: usize = 200_000;
/// Deepest path resolved.
const MAX_PATH_DEPTH: usize = 4096;

pub(crate) fn corrupt(path: &str, what: impl Into<String>) -> Error {
    Error::corrupt(FS, Some(path), what)
}

/// Warnings met so far, each structure once.
#[derive(Default)]
struct Tolerated {
    list: Vec<String>,
    seen: HashSet<u64>,
    dropped: usize,
}

/// An XFS file system.
pub struct XfsFs {
    device: Arc<dyn BlockDevice>,
    sb: Superblock,
    strict: bool,
    warnings: RefCell<Tolerated>,
    /// Listings of the directories read last, by inode number.
    dirs: RefCell<Vec<(u64, Rc<Vec<Entry>>)>>,
}

impl XfsFs {
    /// Opens the XFS file system on `device`.
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Self> {
        Self::open_with(device, &FsOptions::default())
    }

    /// [`XfsFs::open`] with `options` (strict mode refuses bad CRCs).
    pub fn open_with(device: Arc<dyn BlockDevice>, options: &FsOptions) -> Result<Self> {
        if device.size() < 512 {
            return Err(corrupt("/", "volume too small for a superblock"));
        }
        let mut head = vec![0u8; 512];
        device.read_at(&mut head, 0)?;
        let sb = Superblock::parse(&head)?;
        let fs = XfsFs {
            device,
            sb,
            strict: options.strict,
            warnings: RefCell::new(Tolerated::default()),
            dirs: RefCell::new(Vec::new()),
        };
        if fs.sb.crc() {
            let mut sector = vec![0u8; usize::try_from(fs.sb.sector_size).unwrap_or(512)];
            fs.device.read_at(&mut sector, 0)?;
            fs.check_crc(&sector, superblock::CRC_AT, 0, "/", "superblock")?;
        }
        if fs.sb.needs_repair() {
            fs.tolerate(
                "/",
                u64::MAX,
                Detail::Invalid("the superblock asks for xfs_repair (needsrepair)".into()),
            )?;
        }
        if fs.sb.rblocks > 0 {
            fs.tolerate(
                "/",
                u64::MAX - 1,
                Detail::Invalid(
                    "the volume has a real-time section on another device: its files are not read"
                        .into(),
                ),
            )?;
        }
        // The root must be a directory.
        let root = fs.inode(fs.sb.root_ino, "/")?;
        if root.kind() != S_IFDIR {
            return Err(corrupt("/", "the root inode is not a directory"));
        }
        Ok(fs)
    }

    /// Reads one file-system block at byte offset `at`.
    fn read_block(&self, at: u64) -> Result<Vec<u8>> {
        let mut b = vec![0u8; usize::try_from(self.sb.block_size).unwrap_or(4096)];
        self.device.read_at(&mut b, at)?;
        Ok(b)
    }

    /// Checks the little-endian CRC-32C at `crc_at` of `b` (read at `at`).
    fn check_crc(
        &self,
        b: &[u8],
        crc_at: usize,
        at: u64,
        path: &str,
        what: &'static str,
    ) -> Result<()> {
        let stored = diskimage_formats::bytes::le_u32(b, crc_at).unwrap_or(0);
        let computed = diskimage_formats::crc32c::checksum_with_hole(b, crc_at);
        if stored != computed {
            self.tolerate(
                path,
                at,
                Detail::Checksum {
                    what,
                    stored: u64::from(stored),
                    computed: u64::from(computed),
                },
            )?;
        }
        Ok(())
    }

    /// Tolerates a defect of the structure at `offset`: an error in
    /// strict mode, else a warning (once per structure).
    fn tolerate(&self, path: &str, offset: u64, what: Detail) -> Result<()> {
        if self.strict {
            return Err(Error::damaged(FS, Some(path), what).at(offset));
        }
        let mut w = self.warnings.borrow_mut();
        if !w.seen.insert(offset) {
            return Ok(());
        }
        if w.list.len() >= MAX_WARNINGS {
            w.dropped += 1;
            return Ok(());
        }
        w.list.push(if offset >= u64::MAX - 16 {
            format!("{FS} {path}: {what}")
        } else {
            format!("{FS} {path} at {offset:#x}: {what}; used as found")
        });
        Ok(())
    }

    /// Inode `ino` (met at `path`).
    fn inode(&self, ino: u64, path: &str) -> Result<Inode> {
        let at = self
            .sb
            .inode_offset(ino)
            .ok_or_else(|| corrupt(path, format!("inode number {ino} outside the volume")))?;
        let mut raw = vec![0u8; usize::try_from(self.sb.inode_size).unwrap_or(512)];
        self.device.read_at(&mut raw, at)?;
        if self.sb.crc() {
            self.check_crc(&raw, inode::CRC_AT, at, path, "inode")?;
        }
        Inode::parse(&raw, ino, at, self.sb.crc()).map_err(|e| corrupt(path, e).at(at))
    }

    /// The entries of directory inode `dir` (at `path`), cached.
    fn entries(&self, dir: &Inode, path: &str) -> Result<Rc<Vec<Entry>>> {
        if dir.kind() != S_IFDIR {
            return Err(Error::wrong_type(FS, path, "not a directory"));
        }
        if let Some((_, e)) = self.dirs.borrow().iter().find(|(n, _)| *n == dir.number) {
            return Ok(e.clone());
        }
        let list = Rc::new(self.dir_entries(dir, path)?);
        let mut cache = self.dirs.borrow_mut();
        if cache.len() >= DIR_CACHE {
            cache.remove(0);
        }
        while cache.iter().map(|(_, e)| e.len()).sum::<usize>() + list.len() > DIR_CACHE_ENTRIES
            && !cache.is_empty()
        {
            cache.remove(0);
        }
        if list.len() <= DIR_CACHE_ENTRIES {
            cache.push((dir.number, list.clone()));
        }
        Ok(list)
    }

    /// The inode at `path` (links not followed).
    fn lookup(&self, path: &str) -> Result<Inode> {
        let parts =
            components(path).ok_or_else(|| Error::unsupported(FS, Some(path), "'..' in a path"))?;
        if parts.len() > MAX_PATH_DEPTH {
            return Err(Error::limit(
                FS,
                Some(path),
                "path deeper than 4096 components",
            ));
        }
        let mut cur = self.inode(self.sb.root_ino, "/")?;
        let mut here = String::from("/");
        for part in parts {
            let want = decode_name(part);
            let entries = self.entries(&cur, &here)?;
            let entry = entries
                .iter()
                .find(|e| e.name == want)
                .ok_or_else(|| Error::not_found(FS, path))?;
            here = join(&here, part);
            cur = self.inode(entry.ino, &here)?;
        }
        Ok(cur)
    }

    /// The target of symlink inode `i` (at `path`).
    fn link_target(&self, i: &Inode, path: &str) -> Result<Vec<u8>> {
        if i.kind() != S_IFLNK {
            return Err(Error::wrong_type(FS, path, "not a symbolic link"));
        }
        if i.size == 0 || i.size > MAX_LINK {
            return Err(corrupt(path, format!("symbolic link of {} bytes", i.size)));
        }
        let size = usize::try_from(i.size).unwrap_or(0);
        if i.format == Format::Local {
            return i.fork.get(..size).map(<[u8]>::to_vec).ok_or_else(|| {
                corrupt(path, "inline symbolic link exceeds its fork").at(i.fork_at)
            });
        }
        let mut out = Vec::with_capacity(size);
        for e in self.extents(i, path)? {
            for k in 0..e.count {
                if out.len() >= size {
                    break;
                }
                let at = self
                    .sb
                    .block_offset(e.block + k, 1)
                    .ok_or_else(|| corrupt(path, "symbolic link block outside the volume"))?;
                let b = self.read_block(at)?;
                let data = if self.sb.crc() {
                    if b.get(..4) != Some(SYMLINK_MAGIC.as_slice()) {
                        return Err(
                            corrupt(path, "remote symbolic link block without its magic").at(at),
                        );
                    }
                    self.check_crc(&b, SYMLINK_CRC_AT, at, path, "symbolic link block")?;
                    b.get(SYMLINK_HDR..).unwrap_or_default()
                } else {
                    &b[..]
                };
                let take = data.len().min(size - out.len());
                out.extend_from_slice(data.get(..take).unwrap_or_default());
            }
        }
        if out.len() != size {
            return Err(corrupt(
                path,
                format!("symbolic link of {size} bytes maps {} bytes", out.len()),
            ));
        }
        Ok(out)
    }

    /// The runs of regular file `i`'s data (at `path`).
    fn file_runs(&self, i: &Inode, path: &str) -> Result<Vec<Run>> {
        if i.kind() != S_IFREG {
            return Err(Error::wrong_type(FS, path, "not a regular file"));
        }
        if i.flags & FLAG_REALTIME != 0 {
            return Err(Error::unsupported(
                FS,
                Some(path),
                "file data on the real-time device (not part of this volume)",
            ));
        }
        if i.size == 0 && i.format == Format::Extents && i.nextents == 0 {
            return Ok(Vec::new());
        }
        Ok(bmap::runs(self, &self.extents(i, path)?))
    }

    /// The data of regular file `i` (at `path`).
    fn open_inode(&self, i: &Inode, path: &str) -> Result<Box<dyn FileReader + '_>> {
        let runs = self.file_runs(i, path)?;
        let runs = byte_runs(&runs, self.sb.block_size);
        Ok(Box::new(RunReader::new(self.device.clone(), runs, i.size)))
    }
}

/// The type of a directory entry's `ftype` byte, if it gives one.
fn entry_type(ft: Option<u8>) -> Option<FileType> {
    match ft? {
        1 => Some(FileType::File),
        2 => Some(FileType::Directory),
        3..=6 => Some(FileType::Special),
        7 => Some(FileType::Symlink),
        _ => None,
    }
}

/// The type of inode `i`.
fn inode_type(i: &Inode) -> FileType {
    match i.kind() {
        S_IFDIR => FileType::Directory,
        S_IFREG => FileType::File,
        S_IFLNK => FileType::Symlink,
        _ => FileType::Special,
    }
}

/// Why a name read from a directory cannot be used, or `None`.
fn bad_name(raw: &[u8]) -> Option<&'static str> {
    if raw.contains(&0) {
        Some("directory entry name contains a null byte")
    } else if raw.contains(&b'/') {
        Some("directory entry name contains a path separator")
    } else {
        None
    }
}

/// What [`FileSystem::metadata`] says of inode `i`.
fn inode_metadata(i: &Inode, block_size: u64) -> Metadata {
    Metadata {
        file_type: inode_type(i),
        size: i.size,
        allocated: Some(i.nblocks.saturating_mul(block_size)),
        mode: Some(i.mode),
        uid: Some(i.uid),
        gid: Some(i.gid),
        nlink: Some(u64::from(i.nlink)),
        inode: Some(i.number),
        created: i.crtime,
        modified: Some(i.mtime),
        accessed: Some(i.atime),
        changed: Some(i.ctime),
    }
}

impl FileSystem for XfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Xfs
    }

    fn label(&self) -> Option<String> {
        Some(self.sb.label.clone()).filter(|l| !l.is_empty())
    }

    fn serial(&self) -> Option<String> {
        Some(Guid::from_be_bytes(self.sb.uuid).to_string())
    }

    fn case_sensitive(&self) -> bool {
        true
    }

    fn warnings(&self) -> Vec<String> {
        let w = self.warnings.borrow();
        let mut out = w.list.clone();
        if w.dropped > 0 {
            out.push(format!("{FS}: {} more warnings not listed", w.dropped));
        }
        out
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let dir = self.lookup(path)?;
        let mut out = Vec::new();
        for e in self.entries(&dir, path)?.iter() {
            let name = encode_name(&e.name);
            if let Some(what) = bad_name(&e.name) {
                return Err(corrupt(&join(path, &name), what));
            }
            let file_type = match entry_type(e.ftype) {
                Some(t) => t,
                None => inode_type(&self.inode(e.ino, &join(path, &name))?),
            };
            out.push(DirEntry { name, file_type });
        }
        Ok(out.into())
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        Ok(inode_metadata(&self.lookup(path)?, self.sb.block_size))
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        self.open_inode(&self.lookup(path)?, path)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        Ok(encode_name(&self.link_target(&self.lookup(path)?, path)?))
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let dir = self.lookup(path)?;
        for e in self.entries(&dir, path)?.iter() {
            let name = encode_name(&e.name);
            let inode = match bad_name(&e.name) {
                Some(what) => Err(corrupt(&join(path, &name), what)),
                None => self.inode(e.ino, &join(path, &name)),
            };
            let flow = match inode {
                Ok(inode) => f(Ok(&XfsVisited {
                    fs: self,
                    dir: path,
                    name,
                    inode,
                })),
                Err(err) => f(Err((name, err))),
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// An entry met by [`XfsFs::visit_dir`], with its inode read once.
struct XfsVisited<'a> {
    fs: &'a XfsFs,
    dir: &'a str,
    name: String,
    inode: Inode,
}

impl Visited for XfsVisited<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Result<Metadata> {
        Ok(inode_metadata(&self.inode, self.fs.sb.block_size))
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        let path = join(self.dir, &self.name);
        if !stream.is_empty() {
            return Err(Error::not_found(FS, &format!("{path}:{stream}")));
        }
        self.fs.open_inode(&self.inode, &path)
    }
    fn read_link(&self) -> Result<String> {
        let path = join(self.dir, &self.name);
        Ok(encode_name(&self.fs.link_target(&self.inode, &path)?))
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn stored_runs(&self) -> Option<Vec<StoredRun>> {
        let runs = self.fs.file_runs(&self.inode, "").ok()?;
        runs::stored_runs(&byte_runs(&runs, self.fs.sb.block_size), self.inode.size)
    }
}
