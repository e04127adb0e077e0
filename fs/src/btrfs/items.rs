//! Keys and the items the reader parses: inode, inode ref, dir item/index,
//! root item, root ref, file extent.

use diskimage_formats::bytes::{le_u16, le_u32, le_u64};

use crate::file_system::Timestamp;

pub(crate) const INODE_ITEM: u8 = 1;
pub(crate) const DIR_ITEM: u8 = 84;
pub(crate) const DIR_INDEX: u8 = 96;
pub(crate) const EXTENT_DATA: u8 = 108;
pub(crate) const EXTENT_CSUM: u8 = 128;
pub(crate) const ROOT_ITEM: u8 = 132;
pub(crate) const ROOT_REF: u8 = 156;
pub(crate) const CHUNK_ITEM: u8 = 228;

/// The objectid of the csum items.
pub(crate) const EXTENT_CSUM_OBJECTID: u64 = -10i64 as u64;
/// The top-level subvolume (FS tree).
pub(crate) const FS_TREE: u64 = 5;
/// The checksum tree.
pub(crate) const CSUM_TREE: u64 = 7;
/// The chunk tree's objectid of its items.
pub(crate) const FIRST_CHUNK_TREE_OBJECTID: u64 = 256;
/// The inode the kernel shows for a subvolume it cannot reach from here
/// (a snapshot's placeholder for a subvolume nested in its source).
pub(crate) const EMPTY_SUBVOL_DIR: u64 = 2;

/// A B-tree key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub objectid: u64,
    pub ty: u8,
    pub offset: u64,
}

impl Key {
    /// A key.
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Self {
        Key {
            objectid,
            ty,
            offset,
        }
    }

    /// The 17-byte key at `at`.
    pub fn parse(b: &[u8], at: usize) -> Option<Self> {
        Some(Key {
            objectid: le_u64(b, at)?,
            ty: *b.get(at + 8)?,
            offset: le_u64(b, at + 9)?,
        })
    }
}

/// An inode item (160 bytes).
#[derive(Debug, Clone)]
pub(crate) struct InodeItem {
    pub size: u64,
    pub nbytes: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub flags: u64,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub mtime: Timestamp,
    pub otime: Timestamp,
}

/// `NODATASUM`: the file's data has no checksums.
pub(crate) const INODE_NODATASUM: u64 = 0x1;

fn time(b: &[u8], at: usize) -> Timestamp {
    Timestamp {
        secs: le_u64(b, at).unwrap_or(0) as i64,
        nanos: le_u32(b, at + 8).unwrap_or(0).min(999_999_999),
    }
}

impl InodeItem {
    /// Parses an inode item; `None` when it is shorter than 160 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 160 {
            return None;
        }
        Some(InodeItem {
            size: le_u64(b, 16)?,
            nbytes: le_u64(b, 24)?,
            nlink: le_u32(b, 40)?,
            uid: le_u32(b, 44)?,
            gid: le_u32(b, 48)?,
            mode: le_u32(b, 52)?,
            flags: le_u64(b, 64)?,
            atime: time(b, 112),
            ctime: time(b, 124),
            mtime: time(b, 136),
            otime: time(b, 148),
        })
    }
}

/// One entry of a dir item or dir index item.
#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    pub location: Key,
    pub ty: u8,
    pub name: Vec<u8>,
}

/// The entries packed in a dir item (a dir index item holds one); `Err`
/// when one runs past the item.
pub(crate) fn dir_entries(b: &[u8]) -> Result<Vec<DirEntry>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        let location = Key::parse(b, at).ok_or("dir item cut short")?;
        let data_len = usize::from(le_u16(b, at + 25).ok_or("dir item cut short")?);
        let name_len = usize::from(le_u16(b, at + 27).ok_or("dir item cut short")?);
        let ty = *b.get(at + 29).ok_or("dir item cut short")?;
        let name = b
            .get(at + 30..at + 30 + name_len)
            .ok_or_else(|| format!("dir entry name of {name_len} bytes past its item"))?
            .to_vec();
        out.push(DirEntry { location, ty, name });
        at += 30 + name_len + data_len;
        if at > b.len() {
            return Err("dir entry data past its item".into());
        }
    }
    Ok(out)
}

/// A root item: where a tree's root node is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RootItem {
    pub root_dirid: u64,
    pub bytenr: u64,
    pub level: u8,
}

impl RootItem {
    /// Parses a root item (at least 239 bytes).
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(RootItem {
            root_dirid: le_u64(b, 168)?,
            bytenr: le_u64(b, 176)?,
            level: *b.get(238)?,
        })
    }
}

/// A root ref (subvolume `key.offset` is in directory `dirid` of the tree
/// `key.objectid` under `name`).
#[derive(Debug, Clone)]
pub(crate) struct RootRef {
    pub dirid: u64,
    pub name: Vec<u8>,
}

impl RootRef {
    /// Parses a root ref.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let n = usize::from(le_u16(b, 16)?);
        Some(RootRef {
            dirid: le_u64(b, 0)?,
            name: b.get(18..18 + n)?.to_vec(),
        })
    }
}

/// A file extent item.
#[derive(Debug, Clone)]
pub(crate) struct FileExtent {
    pub ram_bytes: u64,
    pub compression: u8,
    pub encryption: u8,
    pub other_encoding: u16,
    pub kind: ExtentKind,
}

/// What a file extent item holds.
#[derive(Debug, Clone)]
pub(crate) enum ExtentKind {
    /// The data (compressed or not) inside the item.
    Inline(Vec<u8>),
    /// On-disk extent `disk_bytenr` of `disk_num_bytes` (0: a hole);
    /// the file sees `num_bytes` from `offset` into its decoded data.
    Regular {
        prealloc: bool,
        disk_bytenr: u64,
        disk_num_bytes: u64,
        offset: u64,
        num_bytes: u64,
    },
}

impl FileExtent {
    /// Parses a file extent item; `Err` says what is wrong.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        let short = || format!("file extent item of {} bytes", b.len());
        let ram_bytes = le_u64(b, 8).ok_or_else(short)?;
        let compression = *b.get(16).ok_or_else(short)?;
        let encryption = *b.get(17).ok_or_else(short)?;
        let other_encoding = le_u16(b, 18).ok_or_else(short)?;
        let ty = *b.get(20).ok_or_else(short)?;
        let kind = match ty {
            0 => ExtentKind::Inline(b.get(21..).unwrap_or_default().to_vec()),
            1 | 2 => ExtentKind::Regular {
                prealloc: ty == 2,
                disk_bytenr: le_u64(b, 21).ok_or_else(short)?,
                disk_num_bytes: le_u64(b, 29).ok_or_else(short)?,
                offset: le_u64(b, 37).ok_or_else(short)?,
                num_bytes: le_u64(b, 45).ok_or_else(short)?,
            },
            other => return Err(format!("file extent type {other}")),
        };
        Ok(FileExtent {
            ram_bytes,
            compression,
            encryption,
            other_encoding,
            kind,
        })
    }
}

/// The hash of a name in dir item keys: CRC-32C seeded with `~1`,
/// without the final inversion.
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    u64::from(diskimage_formats::crc32c::raw(!1, name))
}
