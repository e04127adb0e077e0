//! ext2/3/4, read by our own layer.
//!
//! Its modules `inode`, `dir`, `blocks` and `superblock` read group
//! descriptors (after the superblock or per meta group with `meta_bg`),
//! inodes of any size (128-byte ones included), extents and ext2/ext3
//! block maps with holes, directories (linear and htree: a linear scan of
//! every block, index blocks hold no names; inline-data directories in
//! `i_block` and the `system.data` attribute; entries without a file type,
//! whose type comes from the inode), inline-data files, fast, slow and
//! inline symbolic links, and names as stored (casefold directories too:
//! lookups are exact). Every feature that does not change how these are
//! read is taken (`mmp`, `ea_inode`, `casefold`, `largedir`, `flex_bg`,
//! `64bit`, `metadata_csum_seed`); `compression`, `journal_dev`, `dirdata`
//! and unknown incompat bits are refused with
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) naming them,
//! encrypted files and directories one by one.
//!
//! Checksums (superblock, group descriptors with `metadata_csum` or
//! `gdt_csum`, inodes, directory leaf and index blocks, extent tree
//! blocks) are checked as each structure is read: a mismatch is a warning
//! ([`FileSystem::warnings`]) and the structure is used as found (the
//! kernel mounts a volume with a bad descriptor checksum read-only too);
//! [`FsOptions::strict`] refuses instead. Warnings met while reading are
//! added to those of the open: ask again after a walk.
//!
//! When the journal needs recovery, [`journal`] replays it in memory as
//! e2fsck would, and the reader reads the replayed volume (whose
//! superblock no longer asks for recovery); what was replayed or skipped
//! is in [`FileSystem::warnings`] too.
//!
//! Why our own layer and not the `ext4-view` crate (1.0): it refuses whole volumes for inline_data,
//! meta_bg, ea_inode, mmp, casefold, a missing `filetype` feature or one
//! bad descriptor checksum, hides inode numbers, link counts and ctime,
//! and fails on a hole that spans an indirect block.
//!
//! # Threads
//! [`ExtFs`] is `!Send` and `!Sync` (`RefCell` caches): use one per
//! thread, each opened on the shared `Arc<dyn BlockDevice>`.

use std::sync::Arc;

use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};
use crate::file_system::{
    encode_name, join, DirEntry, FileReader, FileSystem, FileType, Metadata, ReadDir, StoredRun,
    VisitFn, Visited,
};
use crate::options::FsOptions;
use crate::runs::{self, DataRun, RunReader};
use crate::FsKind;

pub(crate) mod blocks;
mod checksum;
mod dir;
mod inode;
pub mod journal;
mod superblock;
mod xattr;

use inode::{InodeTable, ENCRYPT_FL, INLINE_DATA_FL, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use superblock::{Superblock, SUPERBLOCK_OFFSET};

const FS: FsName = FsName::Ext;

/// An ext2/3/4 file system.
pub struct ExtFs {
    kind: FsKind,
    table: InodeTable,
    /// The journal replay the volume is read through, if it needed one.
    replayed: Option<Arc<journal::Replayed>>,
}

/// Bounds the group count before the descriptors are read (a 2 GiB
/// allocation from a 1 KiB fuzzed superblock was found by the `fs_ext`
/// fuzz target): the descriptors must fit in the device.
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
    // The high half of the block count whatever the 64bit feature says:
    // the bound holds for either reading of it.
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
        Self::open_with(device, kind, &FsOptions::default())
    }

    /// [`ExtFs::open`] with `options` (strict mode refuses bad checksums).
    pub fn open_with(
        device: Arc<dyn BlockDevice>,
        kind: FsKind,
        options: &FsOptions,
    ) -> Result<Self> {
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
        let mut raw = [0u8; 1024];
        device
            .read_at(&mut raw, SUPERBLOCK_OFFSET)
            .map_err(Error::Device)?;
        let sb = Superblock::parse(&raw)?;
        if sb.needs_recovery() {
            // The replay clears the flag; a volume still asking for it
            // would be read from stale metadata.
            return Err(
                Error::corrupt(FS, Some("/"), "the journal still needs recovery")
                    .at(SUPERBLOCK_OFFSET + 0x60),
            );
        }
        let table = InodeTable::open(device, sb, options.strict)?;
        Ok(ExtFs {
            kind,
            table,
            replayed,
        })
    }
}

/// Why a name read from a directory cannot be used, or `None`.
fn bad_name(raw: &[u8]) -> Option<&'static str> {
    if raw.is_empty() {
        Some("directory entry name is empty")
    } else if raw.contains(&0) {
        Some("directory entry name contains a null byte")
    } else if raw.contains(&b'/') {
        Some("directory entry name contains a path separator")
    } else {
        None
    }
}

/// The type a directory entry's `file_type` byte gives, if it gives one.
fn entry_type(ft: u8) -> Option<FileType> {
    match ft {
        1 => Some(FileType::File),
        2 => Some(FileType::Directory),
        3..=6 => Some(FileType::Special),
        7 => Some(FileType::Symlink),
        _ => None,
    }
}

/// The type of inode `i`.
fn inode_type(i: &inode::Inode) -> FileType {
    match i.mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFREG => FileType::File,
        S_IFLNK => FileType::Symlink,
        _ => FileType::Special,
    }
}

impl FileSystem for ExtFs {
    fn kind(&self) -> FsKind {
        self.kind
    }

    fn label(&self) -> Option<String> {
        let l = self.table.superblock().label();
        (!l.is_empty()).then_some(l)
    }

    fn serial(&self) -> Option<String> {
        Some(self.table.superblock().uuid())
    }

    fn case_sensitive(&self) -> bool {
        true
    }

    fn warnings(&self) -> Vec<String> {
        let mut out = self
            .replayed
            .as_ref()
            .map_or_else(Vec::new, |r| r.warnings().to_vec());
        out.extend(self.table.warnings());
        out
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let table = &self.table;
        let dir = table.lookup(path)?;
        let mut out = Vec::new();
        for (raw, entry) in table.entries(&dir, path)? {
            let name = encode_name(&raw);
            if let Some(what) = bad_name(&raw) {
                return Err(Error::corrupt(FS, Some(&join(path, &name)), what));
            }
            let file_type = match entry_type(entry.file_type) {
                Some(t) => t,
                None => inode_type(&table.inode(entry.inode, &join(path, &name))?),
            };
            out.push(DirEntry { name, file_type });
        }
        Ok(out.into())
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        let table = &self.table;
        Ok(inode_metadata(&table.lookup(path)?))
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        let table = &self.table;
        open_inode(table, &table.lookup(path)?, path)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let t = &self.table;
        Ok(encode_name(&t.link_target(&t.lookup(path)?, path)?))
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let table = &self.table;
        let dir = table.lookup(path)?;
        for (raw, entry) in table.entries(&dir, path)? {
            let name = encode_name(&raw);
            let entry = match bad_name(&raw) {
                Some(what) => Err(Error::corrupt(FS, Some(&join(path, &name)), what)),
                None => table.inode(entry.inode, &join(path, &name)),
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
        file_type: inode_type(i),
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
    if i.flags & ENCRYPT_FL != 0 {
        return Err(Error::unsupported(FS, Some(path), "encrypted file"));
    }
    if i.flags & INLINE_DATA_FL != 0 {
        return Ok(Box::new(std::io::Cursor::new(table.inline_data(i, path)?)));
    }
    let runs = byte_runs(&table.runs(i, path)?, table.block_size());
    Ok(Box::new(RunReader::new(
        table.device().clone(),
        runs,
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
        let path = join(self.dir, &self.name);
        Ok(encode_name(&self.table.link_target(&self.inode, &path)?))
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn stored_runs(&self) -> Option<Vec<StoredRun>> {
        let i = &self.inode;
        if i.mode & S_IFMT != S_IFREG || i.flags & (INLINE_DATA_FL | ENCRYPT_FL) != 0 {
            return None;
        }
        let runs = self.table.runs(i, "").ok()?;
        let out = runs::stored_runs(&byte_runs(&runs, self.table.block_size()), i.size)?;
        // Replayed blocks are not where the volume underneath stores them.
        let replayed = self.fs.replayed.as_ref();
        (!out
            .iter()
            .any(|r| replayed.is_some_and(|j| j.touches(r.at, r.len))))
        .then_some(out)
    }
}

/// Block runs in bytes (a volume offset that overflows stays out of
/// range, so that reading it fails rather than reads zeros).
pub(crate) fn byte_runs(runs: &[blocks::Run], block_size: u64) -> Vec<DataRun> {
    runs.iter()
        .map(|r| DataRun {
            file_offset: r.logical.saturating_mul(block_size),
            len: r.len.saturating_mul(block_size),
            at: r.physical.map(|p| p.saturating_mul(block_size)),
        })
        .collect()
}
