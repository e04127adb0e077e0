//! ext2/3/4 over the `ext4-view` crate.
//!
//! `ext4-view` reads extents and indirect blocks, htree directories, fast
//! and slow symlinks, 64bit and metadata_csum. It refuses a whole file system that uses inline_data,
//! meta_bg, largedir, ea_inode, a journal device or MMP: that is reported
//! as [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) with the
//! crate's reason as the source.
//!
//! It does not expose inode numbers, link counts, ctime or allocated block
//! counts, and it fails on holes that span a whole indirect block, so
//! `inode` (our own) resolves paths to inodes, gives the full metadata
//! and maps regular files' data (extents and block maps) for
//! [`ExtFs::open`]; `ext4-view` lists directories and reads symlinks.
//! When the journal needs recovery, [`journal`] (our own) replays it in
//! memory as e2fsck would, and both readers read the replayed volume
//! (whose superblock no longer asks for recovery); what was replayed or
//! skipped is in [`FileSystem::warnings`].
//!
//! # Threads
//! [`ExtFs`] is `!Send` and `!Sync` (the crate keeps an `Rc` inside): use
//! one per thread, each opened on the shared `Arc<dyn BlockDevice>`.

use std::sync::Arc;

use diskimage_formats::BlockDevice;
use ext4_view::{Ext4, Ext4Error, Ext4Read};

use crate::error::{BoxedError, Error, FsName, Result};
use crate::file_system::{
    components, decode_name, encode_name, join, visit_by_path, DirEntry, FileReader, FileSystem,
    FileType, Metadata, StoredRun, Timestamp, VisitFn, Visited,
};
use crate::FsKind;

mod inode;
pub mod journal;
mod reader;

use inode::{InodeTable, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

const FS: FsName = FsName::Ext;

/// The positional reader `ext4-view` reads the volume through.
struct DeviceRead(Arc<dyn BlockDevice>);

impl Ext4Read for DeviceRead {
    fn read(&mut self, start_byte: u64, dst: &mut [u8]) -> std::result::Result<(), BoxedError> {
        self.0
            .read_at(dst, start_byte)
            .map_err(|e| Box::new(e) as BoxedError)
    }
}

/// An ext2/3/4 file system.
pub struct ExtFs {
    fs: Ext4,
    kind: FsKind,
    /// Our own inode reader; `None` if the volume still asked for
    /// recovery, which [`journal::replay`] never leaves it doing.
    inodes: Option<InodeTable>,
    /// The journal replay the volume is read through, if it needed one.
    replayed: Option<Arc<journal::Replayed>>,
}

fn map_err(e: Ext4Error, path: &str) -> Error {
    match e {
        Ext4Error::NotFound => Error::not_found(FS, path),
        Ext4Error::NotADirectory => Error::wrong_type(FS, path, "not a directory"),
        Ext4Error::IsADirectory => Error::wrong_type(FS, path, "is a directory"),
        Ext4Error::NotASymlink => Error::wrong_type(FS, path, "not a symbolic link"),
        Ext4Error::IsASpecialFile => Error::wrong_type(FS, path, "is a special file"),
        Ext4Error::Io(inner) => match inner.downcast::<diskimage_formats::Error>() {
            Ok(dev) => Error::Device(*dev),
            Err(other) => Error::Corrupt {
                fs: FS,
                path: Some(path.to_string()),
                offset: None,
                what: "read failed".into(),
                source: Some(other),
            },
        },
        Ext4Error::Incompatible(i) => Error::Unsupported {
            fs: FS,
            path: None,
            what: format!("ext4-view does not read this file system: {i}"),
            source: None,
        },
        Ext4Error::Encrypted => Error::unsupported(FS, Some(path), "encrypted file"),
        Ext4Error::FileTooLarge | Ext4Error::PathTooLong | Ext4Error::TooManySymlinks => {
            Error::limit(FS, Some(path), e.to_string())
        }
        other => Error::Corrupt {
            fs: FS,
            path: Some(path.to_string()),
            offset: None,
            what: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// The byte path `ext4-view` resolves for one of our paths.
fn raw_path(path: &str) -> Result<Vec<u8>> {
    let parts = components(path).ok_or_else(|| Error::not_found(FS, path))?;
    let mut raw = Vec::with_capacity(path.len() + 1);
    for p in parts {
        raw.push(b'/');
        raw.extend_from_slice(&decode_name(p));
    }
    if raw.is_empty() {
        raw.push(b'/');
    }
    Ok(raw)
}

fn ts(t: ext4_view::Timestamp) -> Timestamp {
    Timestamp {
        secs: t.seconds(),
        nanos: t.nanoseconds(),
    }
}

fn file_type(t: ext4_view::FileType) -> FileType {
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_regular_file() {
        FileType::File
    } else {
        FileType::Special
    }
}

/// The mode with its `S_IFMT` type bits (the crate may return permissions only).
fn with_type_bits(mode: u32, t: ext4_view::FileType) -> u32 {
    const S_IFMT: u32 = 0o170_000;
    if mode & S_IFMT != 0 {
        return mode;
    }
    let ty = if t.is_dir() {
        0o040_000
    } else if t.is_symlink() {
        0o120_000
    } else if t.is_regular_file() {
        0o100_000
    } else if t.is_char_dev() {
        0o020_000
    } else if t.is_block_dev() {
        0o060_000
    } else if t.is_fifo() {
        0o010_000
    } else {
        0o140_000
    };
    mode | ty
}

/// Bounds what `ext4-view` 1.0 allocates from the superblock before it
/// does: it sizes its block-group table from the group count with no check
/// against the device (a 2 GiB allocation from a 1 KiB fuzzed superblock,
/// found by the `fs_ext` fuzz target). The descriptors must fit in the device.
fn check_group_table(device: &dyn BlockDevice) -> Result<()> {
    use diskimage_formats::bytes::{le_u16, le_u32};
    let bad = |what: String| Error::corrupt(FsName::Ext, Some("/"), what);
    let mut sb = [0u8; 1024];
    if device.size() < 2048 {
        return Err(bad(format!(
            "volume of {} bytes cannot hold a superblock",
            device.size()
        )));
    }
    device
        .read_at(&mut sb, 1024)
        .map_err(|e| bad(format!("superblock unreadable: {e}")))?;
    let field = |off| u64::from(le_u32(&sb, off).unwrap_or(0));
    let incompat = field(0x60);
    // ext4-view 1.0 takes the high half of the block count whatever the
    // 64bit feature says: bound what it will compute.
    let blocks = field(0x04) | (field(0x150) << 32);
    let first = field(0x14);
    let per_group = field(0x20);
    let log_block = field(0x18);
    let desc_size = match le_u16(&sb, 0xFE).unwrap_or(0) {
        d if incompat & 0x80 != 0 && d >= 32 => u64::from(d),
        _ => 32,
    };
    if per_group == 0 || log_block > 6 {
        return Err(bad(format!(
            "superblock: {per_group} blocks per group, block size 1024 << {log_block}"
        )));
    }
    let groups = blocks.saturating_sub(first).div_ceil(per_group);
    if groups.saturating_mul(desc_size) > device.size() {
        return Err(bad(format!(
            "superblock claims {groups} block groups, whose descriptors alone exceed the {}-byte volume",
            device.size()
        )));
    }
    Ok(())
}

impl ExtFs {
    /// Opens the ext2/3/4 file system on `device`; `kind` is what
    /// detection found (ext2, ext3 or ext4).
    pub fn open(device: Arc<dyn BlockDevice>, kind: FsKind) -> Result<Self> {
        check_group_table(device.as_ref())?;
        // A journal needing recovery: read the volume as its replay leaves it.
        let replayed = journal::replay(device.clone())?.map(Arc::new);
        let device = match &replayed {
            Some(r) => {
                check_group_table(r.as_ref())?;
                r.clone() as Arc<dyn BlockDevice>
            }
            None => device,
        };
        let inodes = InodeTable::open(device.clone())?;
        let fs = Ext4::load(Box::new(DeviceRead(device))).map_err(|e| map_err(e, "/"))?;
        Ok(ExtFs {
            fs,
            kind,
            inodes,
            replayed,
        })
    }

    fn with_path<T>(
        &self,
        path: &str,
        f: impl FnOnce(ext4_view::Path<'_>) -> std::result::Result<T, Ext4Error>,
    ) -> Result<T> {
        let raw = raw_path(path)?;
        let p = ext4_view::Path::try_from(raw.as_slice())
            .map_err(|e| Error::limit(FS, Some(path), format!("invalid ext path: {e}")))?;
        f(p).map_err(|e| map_err(e, path))
    }
}

impl FileSystem for ExtFs {
    fn kind(&self) -> FsKind {
        self.kind
    }

    fn label(&self) -> Option<String> {
        let l = self.fs.label().display().to_string();
        (!l.is_empty()).then_some(l)
    }

    fn serial(&self) -> Option<String> {
        Some(self.fs.uuid().to_string())
    }

    fn case_sensitive(&self) -> bool {
        true
    }

    fn warnings(&self) -> &[String] {
        self.replayed.as_ref().map_or(&[], |r| r.warnings())
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let iter = self.with_path(path, |p| self.fs.read_dir(p))?;
        let mut out = Vec::new();
        for entry in iter {
            let entry = entry.map_err(|e| map_err(e, path))?;
            let name = entry.file_name();
            let bytes = name.as_ref();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let ft = entry.file_type().map_err(|e| map_err(e, path))?;
            out.push(DirEntry {
                name: encode_name(bytes),
                file_type: file_type(ft),
            });
        }
        Ok(out)
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        let Some(table) = &self.inodes else {
            let m = self.with_path(path, |p| self.fs.symlink_metadata(p))?;
            return Ok(Metadata {
                file_type: file_type(m.file_type()),
                size: m.len(),
                allocated: None,
                mode: Some(with_type_bits(u32::from(m.mode()), m.file_type())),
                uid: Some(m.uid()),
                gid: Some(m.gid()),
                nlink: None,
                inode: None,
                created: m.created().map(ts),
                modified: Some(ts(m.modified())),
                accessed: Some(ts(m.accessed())),
                changed: None,
            });
        };
        Ok(inode_metadata(&table.lookup(path)?))
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        let Some(table) = &self.inodes else {
            // `Ext4::open` follows symlinks; the trait never does.
            let m = self.metadata(path)?;
            if m.file_type != FileType::File {
                return Err(Error::wrong_type(FS, path, "not a regular file"));
            }
            let file = self.with_path(path, |p| self.fs.open(p))?;
            return Ok(Box::new(file));
        };
        open_inode(table, &table.lookup(path)?, path)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let target = self.with_path(path, |p| self.fs.read_link(p))?;
        Ok(encode_name(target.as_ref()))
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let Some(table) = &self.inodes else {
            return visit_by_path(self, path, f);
        };
        let dir = table.lookup(path)?;
        for (raw, number) in table.entries(&dir, path)? {
            let name = encode_name(&raw);
            // What ext4-view's listing refuses (read_dir agrees).
            let bad = if raw.is_empty() {
                Some("directory entry name is empty")
            } else if raw.contains(&0) {
                Some("directory entry name contains a null byte")
            } else if raw.contains(&b'/') {
                Some("directory entry name contains a path separator")
            } else {
                None
            };
            let entry = match bad {
                Some(what) => Err(Error::corrupt(FS, Some(&join(path, &name)), what)),
                None => table.inode(number, &join(path, &name)),
            };
            let flow = match entry {
                Ok(inode) => f(Ok(&ExtVisited {
                    fs: self,
                    table,
                    dir: path,
                    name,
                    inode,
                })),
                Err(e) => f(Err((name, e))),
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// What [`FileSystem::metadata`] says of inode `i`.
fn inode_metadata(i: &inode::Inode) -> Metadata {
    Metadata {
        file_type: match i.mode & S_IFMT {
            S_IFDIR => FileType::Directory,
            S_IFREG => FileType::File,
            S_IFLNK => FileType::Symlink,
            _ => FileType::Special,
        },
        size: i.size,
        allocated: Some(i.allocated),
        mode: Some(i.mode),
        uid: Some(i.uid),
        gid: Some(i.gid),
        nlink: Some(u64::from(i.links)),
        inode: Some(u64::from(i.number)),
        created: i.crtime,
        modified: Some(i.mtime),
        accessed: Some(i.atime),
        changed: Some(i.ctime),
    }
}

/// The data of the regular file of inode `i` (at `path`, for errors).
fn open_inode(table: &InodeTable, i: &inode::Inode, path: &str) -> Result<Box<dyn FileReader>> {
    if i.mode & S_IFMT != S_IFREG {
        return Err(Error::wrong_type(FS, path, "not a regular file"));
    }
    let runs = table.runs(i, path)?;
    Ok(Box::new(reader::RunReader::new(
        table.device().clone(),
        runs,
        table.block_size(),
        i.size,
    )))
}

/// An entry met by [`ExtFs::visit_dir`], with its inode read once.
struct ExtVisited<'a> {
    fs: &'a ExtFs,
    table: &'a InodeTable,
    dir: &'a str,
    name: String,
    inode: inode::Inode,
}

impl Visited for ExtVisited<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Result<Metadata> {
        Ok(inode_metadata(&self.inode))
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        let path = join(self.dir, &self.name);
        if !stream.is_empty() {
            return Err(Error::not_found(FS, &format!("{path}:{stream}")));
        }
        open_inode(self.table, &self.inode, &path)
    }
    fn read_link(&self) -> Result<String> {
        self.fs.read_link(&join(self.dir, &self.name))
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn stored_runs(&self) -> Option<Vec<StoredRun>> {
        let i = &self.inode;
        if i.mode & S_IFMT != S_IFREG {
            return None;
        }
        let runs = self.table.runs(i, "").ok()?;
        let out = stored_runs(&runs, self.table.block_size(), i.size)?;
        // Replayed blocks are not where the volume underneath stores them.
        let replayed = self.fs.replayed.as_ref();
        (!out
            .iter()
            .any(|r| replayed.is_some_and(|j| j.touches(r.at, r.len))))
        .then_some(out)
    }
}

/// The runs of `size` bytes mapped block by block by `runs` (sorted by
/// file block), when they follow each other from block 0 and are all
/// stored; `None` on a hole, an unwritten extent or an overlap.
fn stored_runs(runs: &[inode::Run], block_size: u64, size: u64) -> Option<Vec<StoredRun>> {
    let mut out = Vec::new();
    let mut done = 0u64;
    for r in runs {
        if done >= size {
            break;
        }
        if r.logical.checked_mul(block_size)? != done {
            return None;
        }
        let len = r.len.checked_mul(block_size)?.min(size - done);
        if len == 0 {
            return None;
        }
        out.push(StoredRun {
            at: r.physical?.checked_mul(block_size)?,
            len,
        });
        done += len;
    }
    (done == size).then_some(out)
}
