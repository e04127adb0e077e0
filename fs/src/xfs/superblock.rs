//! The XFS superblock (sector 0 of allocation group 0) and the geometry it
//! gives: block, sector, inode and directory block sizes, the allocation
//! groups, and the features that change how the volume is read.

use diskimage_formats::bytes::{be_u16, be_u32, be_u64};

use super::FS;
use crate::error::{Error, Result};

/// `XFSB`.
pub(crate) const MAGIC: &[u8; 4] = b"XFSB";
/// Where the v5 superblock keeps its CRC.
pub(crate) const CRC_AT: usize = 224;

/// v4 `features2`: directory entries carry the file type.
const V2_FTYPE: u32 = 0x200;
/// v5 incompatible features this reader reads through: ftype, sparse
/// inode chunks, meta_uuid, bigtime, needsrepair, nrext64, exchange-range
/// (a log feature), parent pointers (extended attributes, not read).
const INCOMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80;
const INCOMPAT_FTYPE: u32 = 0x1;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;

fn bad(what: impl Into<String>) -> Error {
    Error::corrupt(FS, Some("/"), what).at(0)
}

/// What the superblock says.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    /// 4 or 5.
    pub version: u16,
    pub block_size: u64,
    pub sector_size: u64,
    pub dblocks: u64,
    pub rblocks: u64,
    pub uuid: [u8; 16],
    pub root_ino: u64,
    pub ag_blocks: u64,
    pub ag_count: u64,
    pub ag_block_log: u32,
    pub inode_size: u64,
    pub inopb_log: u32,
    pub dir_block_size: u64,
    pub label: String,
    pub ftype: bool,
    pub incompat: u32,
}

impl Superblock {
    /// Parses the superblock sector `raw` (at least 512 bytes).
    pub fn parse(raw: &[u8]) -> Result<Self> {
        if raw.get(..4) != Some(MAGIC.as_slice()) {
            return Err(bad("no XFS superblock magic"));
        }
        let u16_at = |o| be_u16(raw, o).unwrap_or(0);
        let u32_at = |o| be_u32(raw, o).unwrap_or(0);
        let u64_at = |o| be_u64(raw, o).unwrap_or(0);
        let u8_at = |o: usize| u32::from(raw.get(o).copied().unwrap_or(0));
        let versionnum = u16_at(100);
        let version = versionnum & 0xF;
        if !(4..=5).contains(&version) {
            return Err(bad(format!("superblock version {version}")));
        }
        let block_size = u64::from(u32_at(4));
        let block_log = u8_at(120);
        if !(9..=16).contains(&block_log) || block_size != 1 << block_log {
            return Err(bad(format!(
                "block size {block_size} (log {block_log}) out of range"
            )));
        }
        let sector_size = u64::from(u16_at(102));
        if !sector_size.is_power_of_two() || !(512..=32768).contains(&sector_size) {
            return Err(bad(format!("sector size {sector_size} out of range")));
        }
        let inode_size = u64::from(u16_at(104));
        let inode_log = u8_at(122);
        if !(8..=11).contains(&inode_log) || inode_size != 1 << inode_log || inode_size > block_size
        {
            return Err(bad(format!("inode size {inode_size} out of range")));
        }
        if version == 5 && inode_size < 512 {
            return Err(bad(format!("v5 inode size {inode_size} below 512")));
        }
        let inopb_log = u8_at(123);
        if inopb_log != block_log - inode_log {
            return Err(bad(format!(
                "{inopb_log} inodes per block (log) for {block_size}-byte blocks of {inode_size}-byte inodes"
            )));
        }
        let ag_blocks = u64::from(u32_at(84));
        let ag_count = u64::from(u32_at(88));
        let ag_block_log = u8_at(124);
        if ag_blocks < 2
            || ag_count == 0
            || ag_block_log > 31
            || ag_blocks > 1 << ag_block_log
            || ag_blocks <= 1 << ag_block_log.saturating_sub(1)
        {
            return Err(bad(format!(
                "{ag_count} allocation groups of {ag_blocks} blocks (log {ag_block_log})"
            )));
        }
        let dblocks = u64_at(8);
        if dblocks == 0 || dblocks > ag_blocks.saturating_mul(ag_count) {
            return Err(bad(format!(
                "{dblocks} blocks do not fit {ag_count} groups of {ag_blocks}"
            )));
        }
        let dir_log = u8_at(192);
        let dir_block_size = block_size << dir_log.min(16);
        if dir_block_size > 65536 {
            return Err(bad(format!("directory block size {dir_block_size}")));
        }
        let features2 = u32_at(200);
        let incompat = if version == 5 { u32_at(216) } else { 0 };
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(Error::unsupported(
                FS,
                None,
                format!(
                    "incompatible features {:#x} (metadir, zoned or newer)",
                    incompat & !INCOMPAT_KNOWN
                ),
            ));
        }
        let ftype = if version == 5 {
            incompat & INCOMPAT_FTYPE != 0
        } else {
            versionnum & 0x8000 != 0 && features2 & V2_FTYPE != 0
        };
        let uuid = diskimage_formats::bytes::array::<16>(raw, 32).unwrap_or([0; 16]);
        let label = raw
            .get(108..120)
            .map(|l| {
                let end = l.iter().position(|&b| b == 0).unwrap_or(l.len());
                String::from_utf8_lossy(l.get(..end).unwrap_or_default()).into_owned()
            })
            .unwrap_or_default();
        Ok(Superblock {
            version,
            block_size,
            sector_size,
            dblocks,
            rblocks: u64_at(16),
            uuid,
            root_ino: u64_at(56),
            ag_blocks,
            ag_count,
            ag_block_log,
            inode_size,
            inopb_log,
            dir_block_size,
            label,
            ftype,
            incompat,
        })
    }

    /// Whether metadata carries CRCs (v5).
    pub fn crc(&self) -> bool {
        self.version == 5
    }

    /// Whether `xfs_repair` must run before the kernel mounts it.
    pub fn needs_repair(&self) -> bool {
        self.incompat & INCOMPAT_NEEDSREPAIR != 0
    }

    /// The byte offset of file-system block `fsb` (AG number in the high
    /// bits, block in the group in the low `ag_block_log` bits), if it
    /// lies inside a group and the data section; `count` blocks from it
    /// must stay in its group.
    pub fn block_offset(&self, fsb: u64, count: u64) -> Option<u64> {
        let ag = fsb >> self.ag_block_log;
        let agbno = fsb & ((1u64 << self.ag_block_log) - 1);
        if ag >= self.ag_count || agbno.checked_add(count)? > self.ag_blocks {
            return None;
        }
        let linear = ag.checked_mul(self.ag_blocks)?.checked_add(agbno)?;
        if linear.checked_add(count)? > self.dblocks {
            return None;
        }
        linear.checked_mul(self.block_size)
    }

    /// The byte offset of inode `ino`, if it lies inside a group.
    pub fn inode_offset(&self, ino: u64) -> Option<u64> {
        let per_block = 1u64 << self.inopb_log;
        let fsb = ino >> self.inopb_log;
        if fsb >> self.ag_block_log >= self.ag_count
            || ino >> (self.inopb_log + self.ag_block_log + 32) != 0
        {
            return None;
        }
        let block = self.block_offset(fsb, 1)?;
        block.checked_add((ino & (per_block - 1)) * self.inode_size)
    }
}
