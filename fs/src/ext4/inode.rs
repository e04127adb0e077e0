//! Inodes and the group descriptors that locate them: path to inode
//! number, the inode's full metadata (number, link count, ctime, crtime,
//! nanoseconds and epoch bits), its inline data, and the map of a file's
//! data blocks (extents or the block map of ext2/ext3, holes included).
//!
//! Group descriptors are read once, at open, wherever they lie (after the
//! superblock, or per meta group with `meta_bg`). Checksums of descriptors,
//! inodes and directory blocks (`metadata_csum`, or `gdt_csum`'s CRC-16)
//! are checked as each is read: a mismatch is a warning and the
//! structure is used as found, or with [`FsOptions::strict`](crate::FsOptions)
//! a [`Corrupt`](crate::ErrorKind::Corrupt) error.
//!
//! Every length is bounded by the volume: a pointer past the last block is
//! a [`Corrupt`](crate::ErrorKind::Corrupt) error naming the byte offset of
//! the pointer, and a file cannot map more data or indirect blocks than
//! the volume has.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use diskimage_formats::bytes::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use super::checksum::{crc16, crc32c};
use super::dir::{self, Names};
use super::superblock::Superblock;
use crate::error::{Detail, Error, FsName, Result};
use crate::file_system::{components, decode_name, Timestamp};

const FS: FsName = FsName::Ext;
const ROOT_INODE: u32 = 2;
pub(crate) const INLINE_DATA_FL: u32 = 0x1000_0000;
/// `i_flags`: an encrypted file, directory or link.
pub(crate) const ENCRYPT_FL: u32 = 0x800;
/// `i_flags`: this inode holds an extended attribute's value.
const EA_INODE_FL: u32 = 0x20_0000;
const HUGE_FILE_FL: u32 = 0x4_0000;
/// Warnings kept; later ones are counted, not stored.
const MAX_WARNINGS: usize = 256;
/// Bytes of `i_block` (the inline part of inline data, fast symlinks).
const I_BLOCK_LEN: usize = 60;
/// Longest symbolic link target read (the kernel's `PATH_MAX`).
const MAX_LINK_TARGET: u64 = 4096;

/// `S_IFMT` and the types we tell apart.
pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;

/// One inode as stored, with the fields we use decoded.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    /// Inode number.
    pub number: u32,
    /// `i_mode` (type and permission bits).
    pub mode: u32,
    /// Owner, with the high 16 bits.
    pub uid: u32,
    /// Group, with the high 16 bits.
    pub gid: u32,
    /// `i_size` (64 bits).
    pub size: u64,
    /// `i_links_count`.
    pub links: u16,
    /// Bytes allocated (`i_blocks`).
    pub allocated: u64,
    /// `i_blocks` as stored (512-byte units, or blocks with `HUGE_FILE_FL`).
    pub raw_blocks: u64,
    /// `i_file_acl`: the extended attribute block, 0 for none.
    pub file_acl: u64,
    /// `i_generation` (part of the checksum seeds).
    pub generation: u32,
    /// `i_flags`.
    pub flags: u32,
    /// Last access.
    pub atime: Timestamp,
    /// Last data modification.
    pub mtime: Timestamp,
    /// Last inode change.
    pub ctime: Timestamp,
    /// Birth time, where the inode is large enough to hold it.
    pub crtime: Option<Timestamp>,
    /// `i_block`: extent tree root, block map root, inline data or a fast
    /// symlink's target.
    pub block: [u8; 60],
    /// With `INLINE_DATA_FL`: the value of the `system.data` attribute
    /// (the inline data past `i_block`).
    pub inline_tail: Option<Vec<u8>>,
    /// Byte offset of the inode on the volume (for error messages).
    pub offset: u64,
}

impl Inode {
    /// Whether a symlink's target is in `i_block` (as the kernel's
    /// `ext4_inode_is_fast_symlink` decides: no data blocks beside an
    /// extended attribute block, and not inline data).
    pub fn is_fast_symlink(&self, block_size: u64) -> bool {
        if self.flags & EA_INODE_FL != 0 {
            return self.size > 0 && self.size < I_BLOCK_LEN as u64;
        }
        if self.flags & INLINE_DATA_FL != 0 {
            return false;
        }
        let ea_blocks = if self.file_acl != 0 {
            block_size / 512
        } else {
            0
        };
        self.raw_blocks.saturating_sub(ea_blocks) == 0
    }
}

/// A decoded ext time: seconds (signed 32 bits) plus, where the inode has
/// the `_extra` field, its two epoch bits and 30 bits of nanoseconds.
fn time(secs: u32, extra: Option<u32>) -> Timestamp {
    let base = i64::from(secs as i32);
    match extra {
        Some(x) => Timestamp {
            secs: base + (i64::from(x & 3) << 32),
            nanos: (x >> 2).min(999_999_999),
        },
        None => Timestamp {
            secs: base,
            nanos: 0,
        },
    }
}

/// Warnings met so far, each structure once.
#[derive(Default)]
struct Tolerated {
    list: Vec<String>,
    seen: HashSet<u64>,
    dropped: usize,
}

/// The superblock, the inode table of each group and the caches of one
/// open file system.
pub(crate) struct InodeTable {
    pub(super) device: Arc<dyn BlockDevice>,
    pub(super) sb: Superblock,
    pub(super) strict: bool,
    /// Inode table block by group, from the descriptors read at open
    /// (`None`: the descriptor could not be read; its error comes again
    /// when an inode of that group is needed).
    pub(super) tables: Vec<Option<u64>>,
    pub(super) dirs: RefCell<HashMap<u32, Rc<Names>>>,
    pub(super) cached_entries: RefCell<usize>,
    /// The inode-table block read last (its offset and bytes): a walk
    /// meets a directory's inodes in runs, several to a block, so most
    /// come from it without a read.
    pub(super) inode_block: RefCell<Option<(u64, Vec<u8>)>>,
    warnings: RefCell<Tolerated>,
}

/// The detail of a checksum that did not match.
pub(super) fn checksum(what: &'static str, stored: u64, computed: u64) -> Detail {
    Detail::Checksum {
        what,
        stored,
        computed,
    }
}

fn corrupt(path: &str, what: impl Into<String>) -> Error {
    Error::corrupt(FS, Some(path), what)
}

impl InodeTable {
    /// Opens the inode layer on the superblock `sb` (checked against the
    /// device's size by the caller): checks the superblock checksum and
    /// reads every group descriptor. `strict`: a bad checksum is an error.
    pub fn open(device: Arc<dyn BlockDevice>, sb: Superblock, strict: bool) -> Result<Self> {
        let mut table = InodeTable {
            device,
            sb,
            strict,
            tables: Vec::new(),
            dirs: RefCell::new(HashMap::new()),
            cached_entries: RefCell::new(0),
            inode_block: RefCell::new(None),
            warnings: RefCell::new(Tolerated::default()),
        };
        if let Some((stored, computed)) = table.sb.checksum_mismatch() {
            table.tolerate(
                "/",
                super::superblock::SUPERBLOCK_OFFSET + 0x3FC,
                checksum("superblock", stored.into(), computed.into()),
            )?;
        }
        table.tables = table.read_descriptors()?;
        Ok(table)
    }

    /// Reads every group descriptor, checking its checksum; each
    /// descriptor block is read once.
    fn read_descriptors(&self) -> Result<Vec<Option<u64>>> {
        let groups = self.sb.group_count();
        let mut out = Vec::with_capacity(usize::try_from(groups).unwrap_or(0));
        let mut held: Option<(u64, Option<Vec<u8>>)> = None;
        for g in 0..groups {
            let Some(at) = self.sb.descriptor_offset(g) else {
                out.push(None);
                continue;
            };
            let block = at - at % self.sb.block_size;
            if held.as_ref().is_none_or(|(b, _)| *b != block) {
                let mut buf = vec![0u8; usize::try_from(self.sb.block_size).unwrap_or(1024)];
                let ok = self.read(&mut buf, block).is_ok();
                held = Some((block, ok.then_some(buf)));
            }
            let within = usize::try_from(at - block).unwrap_or(0);
            let desc = held
                .as_ref()
                .and_then(|(_, b)| b.as_ref())
                .and_then(|b| b.get(within..within + self.desc_len()));
            let Some(desc) = desc else {
                out.push(None);
                continue;
            };
            self.check_descriptor(g, desc, at)?;
            out.push(Some(self.table_block(desc)));
        }
        Ok(out)
    }

    fn desc_len(&self) -> usize {
        usize::try_from(self.sb.desc_size).unwrap_or(32)
    }

    /// `bg_inode_table` of a descriptor (with its high half on 64bit).
    fn table_block(&self, desc: &[u8]) -> u64 {
        u64::from(le_u32(desc, 0x08).unwrap_or(0))
            | if self.sb.desc_size >= 64 {
                le_u32(desc, 0x28).map_or(0, |h| u64::from(h) << 32)
            } else {
                0
            }
    }

    /// Checks the checksum of group `g`'s descriptor `desc` (at `at`).
    fn check_descriptor(&self, g: u64, desc: &[u8], at: u64) -> Result<()> {
        const CSUM_AT: usize = 0x1E;
        let group = u32::try_from(g).unwrap_or(u32::MAX).to_le_bytes();
        let head = desc.get(..CSUM_AT).unwrap_or(&[]);
        let rest = desc.get(CSUM_AT + 2..).unwrap_or(&[]);
        let computed = if self.sb.metadata_csum() {
            let mut c = crc32c(self.sb.csum_seed, &group);
            c = crc32c(c, head);
            c = crc32c(c, &[0, 0]);
            c = crc32c(c, rest);
            (c & 0xFFFF) as u16
        } else if self.sb.gdt_csum() {
            let uuid = self.sb.uuid_bytes();
            let mut c = crc16(!0, &uuid);
            c = crc16(c, &group);
            c = crc16(c, head);
            if self.sb.desc_size >= 64 {
                c = crc16(c, rest);
            }
            c
        } else {
            return Ok(());
        };
        let stored = le_u16(desc, CSUM_AT).unwrap_or(0);
        if stored != computed {
            self.tolerate(
                "/",
                at + CSUM_AT as u64,
                checksum("group descriptor", stored.into(), computed.into()),
            )?;
        }
        Ok(())
    }

    /// Tolerates a bad checksum of the structure at `offset`: an error in
    /// strict mode, else a warning (once per structure).
    pub(super) fn tolerate(&self, path: &str, offset: u64, detail: Detail) -> Result<()> {
        if self.strict {
            return Err(Error::damaged(FS, Some(path), detail).at(offset));
        }
        let mut w = self.warnings.borrow_mut();
        if !w.seen.insert(offset) {
            return Ok(());
        }
        if w.list.len() >= MAX_WARNINGS {
            w.dropped += 1;
            return Ok(());
        }
        w.list.push(format!(
            "{FS} {path} at {offset:#x}: {detail}; used as found"
        ));
        Ok(())
    }

    /// The warnings so far (with a last one counting those not kept).
    pub fn warnings(&self) -> Vec<String> {
        let w = self.warnings.borrow();
        let mut out = w.list.clone();
        if w.dropped > 0 {
            out.push(format!("{FS}: {} more bad checksums not listed", w.dropped));
        }
        out
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.sb.block_size
    }

    /// The device the volume is on.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    pub(super) fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.device.read_at(buf, offset).map_err(Error::Device)
    }

    /// The first block of the inode table of `group`.
    fn inode_table(&self, group: u64, path: &str) -> Result<u64> {
        let desc_at = self.sb.descriptor_offset(group).unwrap_or(u64::MAX);
        let table = match self
            .tables
            .get(usize::try_from(group).unwrap_or(usize::MAX))
        {
            Some(Some(t)) => *t,
            Some(None) => {
                // Its descriptor was unreadable at open: read it for the error.
                let mut desc = vec![0u8; self.desc_len()];
                self.read(&mut desc, desc_at)?;
                self.table_block(&desc)
            }
            None => {
                return Err(corrupt(
                    path,
                    format!("group {group} past the {} groups", self.tables.len()),
                ))
            }
        };
        if table == 0 || table >= self.sb.blocks_count {
            return Err(corrupt(
                path,
                format!("inode table of group {group} at block {table}"),
            )
            .at(desc_at.saturating_add(8)));
        }
        Ok(table)
    }

    /// The raw inode at `offset`: from the inode-table block read last,
    /// or its block read whole (the inode alone when the block cannot be
    /// read, e.g. on a truncated volume). An inode never crosses a block:
    /// its size is a power of two no larger than a block, checked at open.
    fn inode_bytes(&self, offset: u64) -> Result<Vec<u8>> {
        let size = usize::try_from(self.sb.inode_size).unwrap_or(128);
        let bs = self.sb.block_size;
        let block = offset - offset % bs;
        let within = usize::try_from(offset - block).unwrap_or(0);
        let mut cached = self.inode_block.borrow_mut();
        if cached.as_ref().is_none_or(|(at, _)| *at != block) {
            let mut bytes = vec![0u8; usize::try_from(bs).unwrap_or(1024)];
            *cached = None;
            if self.read(&mut bytes, block).is_ok() {
                *cached = Some((block, bytes));
            }
        }
        match cached
            .as_ref()
            .and_then(|(_, b)| b.get(within..within.checked_add(size)?))
        {
            Some(raw) => Ok(raw.to_vec()),
            None => {
                let mut raw = vec![0u8; size];
                self.read(&mut raw, offset)?;
                Ok(raw)
            }
        }
    }

    /// Checks the `metadata_csum` checksum of inode `number` (`raw`, at
    /// `offset`), whose in-inode fields reach `128 + extra_isize`.
    fn check_inode(
        &self,
        number: u32,
        raw: &[u8],
        extra_isize: usize,
        offset: u64,
        path: &str,
    ) -> Result<()> {
        const LO: usize = 0x7C;
        const HI: usize = 0x82;
        if !self.sb.metadata_csum() || raw.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let generation = le_u32(raw, 0x64).unwrap_or(0);
        let seed = dir::inode_seed(self.sb.csum_seed, number, generation);
        let has_hi = raw.len() > 128 && extra_isize >= HI + 2 - 128;
        let mut c = crc32c(seed, raw.get(..LO).unwrap_or(&[]));
        c = crc32c(c, &[0, 0]);
        c = crc32c(c, raw.get(LO + 2..128).unwrap_or(&[]));
        if raw.len() > 128 {
            c = crc32c(c, raw.get(128..HI).unwrap_or(&[]));
            let from = if has_hi {
                c = crc32c(c, &[0, 0]);
                HI + 2
            } else {
                HI
            };
            c = crc32c(c, raw.get(from..).unwrap_or(&[]));
        }
        let lo = u32::from(le_u16(raw, LO).unwrap_or(0));
        let (stored, computed) = if has_hi {
            (lo | (u32::from(le_u16(raw, HI).unwrap_or(0)) << 16), c)
        } else {
            (lo, c & 0xFFFF)
        };
        if stored != computed {
            self.tolerate(
                path,
                offset + LO as u64,
                checksum("inode", stored.into(), computed.into()),
            )?;
        }
        Ok(())
    }

    /// Reads inode `number`.
    pub fn inode(&self, number: u32, path: &str) -> Result<Inode> {
        if number == 0 || number > self.sb.inodes_count {
            return Err(corrupt(
                path,
                format!("inode {number} outside 1..={}", self.sb.inodes_count),
            ));
        }
        let ipg = self.sb.inodes_per_group;
        let group = u64::from((number - 1) / ipg);
        let index = u64::from((number - 1) % ipg);
        let table = self.inode_table(group, path)?;
        let offset = table * self.sb.block_size + index * self.sb.inode_size;
        let raw = self.inode_bytes(offset)?;
        let u16_at = |o| u32::from(le_u16(&raw, o).unwrap_or(0));
        let u32_at = |o| le_u32(&raw, o).unwrap_or(0);
        let extra_isize = if raw.len() > 128 {
            usize::try_from(u16_at(0x80)).unwrap_or(0)
        } else {
            0
        };
        self.check_inode(number, &raw, extra_isize, offset, path)?;
        // A field of the large inode exists if i_extra_isize covers it.
        let extra =
            |o: usize| (o + 4 <= 128 + extra_isize && o + 4 <= raw.len()).then(|| u32_at(o));
        let flags = u32_at(0x20);
        let blocks = u64::from(u32_at(0x1C)) | (u64::from(u16_at(0x74)) << 32);
        let block = diskimage_formats::bytes::array::<60>(&raw, 0x28).unwrap_or([0; 60]);
        let inline_tail = if flags & INLINE_DATA_FL != 0 {
            Some(super::xattr::system_data(&raw, extra_isize).ok_or_else(|| {
                corrupt(
                    path,
                    format!("inode {number}: inline data without system.data"),
                )
                .at(offset)
            })?)
        } else {
            None
        };
        Ok(Inode {
            number,
            mode: u16_at(0x00),
            uid: u16_at(0x02) | (u16_at(0x78) << 16),
            gid: u16_at(0x18) | (u16_at(0x7A) << 16),
            size: u64::from(u32_at(0x04)) | (u64::from(u32_at(0x6C)) << 32),
            links: u16::try_from(u16_at(0x1A)).unwrap_or(0),
            allocated: if flags & HUGE_FILE_FL != 0 {
                blocks.saturating_mul(self.sb.block_size)
            } else {
                blocks.saturating_mul(512)
            },
            raw_blocks: blocks,
            file_acl: u64::from(u32_at(0x68)) | (u64::from(u16_at(0x76)) << 32),
            generation: u32_at(0x64),
            flags,
            atime: time(u32_at(0x08), extra(0x8C)),
            mtime: time(u32_at(0x10), extra(0x88)),
            ctime: time(u32_at(0x0C), extra(0x84)),
            crtime: extra(0x90).map(|c| time(c, extra(0x94))),
            block,
            inline_tail,
            offset,
        })
    }

    /// The inode `path` names, without following symbolic links.
    pub fn lookup(&self, path: &str) -> Result<Inode> {
        let parts = components(path).ok_or_else(|| Error::not_found(FS, path))?;
        let mut inode = self.inode(ROOT_INODE, path)?;
        // Each step goes one level down: the path length bounds the walk.
        for part in parts {
            if inode.mode & S_IFMT != S_IFDIR {
                return Err(Error::wrong_type(FS, path, "not a directory"));
            }
            let entries = self.directory(&inode, path)?;
            let entry = *entries
                .get(&decode_name(part))
                .ok_or_else(|| Error::not_found(FS, path))?;
            inode = self.inode(entry.inode, path)?;
        }
        Ok(inode)
    }

    /// The inline data of `inode` (`i_block`, then `system.data`), cut
    /// at its size.
    pub fn inline_data(&self, inode: &Inode, path: &str) -> Result<Vec<u8>> {
        let tail = inode.inline_tail.as_deref().unwrap_or(&[]);
        let mut data = inode.block.to_vec();
        data.extend_from_slice(tail);
        let size = usize::try_from(inode.size).unwrap_or(usize::MAX);
        if size > data.len() {
            return Err(corrupt(
                path,
                format!(
                    "inode {}: size {} past its {} bytes of inline data",
                    inode.number,
                    inode.size,
                    data.len()
                ),
            )
            .at(inode.offset));
        }
        data.truncate(size);
        Ok(data)
    }

    /// The target of symbolic link `inode`, as stored.
    pub fn link_target(&self, inode: &Inode, path: &str) -> Result<Vec<u8>> {
        if inode.mode & S_IFMT != S_IFLNK {
            return Err(Error::wrong_type(FS, path, "not a symbolic link"));
        }
        if inode.flags & ENCRYPT_FL != 0 {
            return Err(Error::unsupported(FS, Some(path), "encrypted file"));
        }
        if inode.size > MAX_LINK_TARGET {
            return Err(corrupt(
                path,
                format!("symbolic link target of {} bytes", inode.size),
            )
            .at(inode.offset));
        }
        if inode.flags & INLINE_DATA_FL != 0 {
            return self.inline_data(inode, path);
        }
        let len = usize::try_from(inode.size).unwrap_or(0);
        if inode.is_fast_symlink(self.sb.block_size) {
            return inode.block.get(..len).map(<[u8]>::to_vec).ok_or_else(|| {
                corrupt(path, format!("fast symbolic link of {} bytes", inode.size))
                    .at(inode.offset)
            });
        }
        let mut out = Vec::with_capacity(len);
        for run in self.runs(inode, path)? {
            let from = run.logical * self.sb.block_size;
            let Some(end) = (run.logical + run.len)
                .checked_mul(self.sb.block_size)
                .map(|e| e.min(inode.size))
            else {
                continue;
            };
            let mut buf = vec![0u8; usize::try_from(end.saturating_sub(from)).unwrap_or(0)];
            if let Some(p) = run.physical {
                self.read(&mut buf, p * self.sb.block_size)?;
            }
            out.resize(usize::try_from(from).unwrap_or(0), 0);
            out.extend_from_slice(&buf);
        }
        out.resize(len, 0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_time_epoch_and_nanos() {
        // 2038-01-19T03:14:08Z is 0x80000000: stored as i32 -2^31 with epoch 1.
        let t = time(0x8000_0000, Some(1 | (5 << 2)));
        assert_eq!(t.secs, 1i64 << 31);
        assert_eq!(t.nanos, 5);
        assert_eq!(time(0xFFFF_FFFF, None).secs, -1);
    }
}
