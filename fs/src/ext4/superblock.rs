//! The ext superblock (1,024 bytes at byte 1,024 of the volume): the
//! fields this reader uses, the feature check, and where each group
//! descriptor lies (after the superblock, or with `meta_bg` in the first
//! block(s) of each meta group).

use diskimage_formats::bytes::{le_u16, le_u32};

use super::checksum::crc32c;
use crate::error::{Error, FsName, Result};

const FS: FsName = FsName::Ext;
/// Byte offset of the superblock on the volume.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xEF53;

// s_feature_compat
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
// s_feature_incompat
pub(crate) const INCOMPAT_COMPRESSION: u32 = 0x1;
pub(crate) const INCOMPAT_FILETYPE: u32 = 0x2;
pub(crate) const INCOMPAT_RECOVER: u32 = 0x4;
pub(crate) const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
pub(crate) const INCOMPAT_DIRDATA: u32 = 0x1000;
pub(crate) const INCOMPAT_CSUM_SEED: u32 = 0x2000;
// s_feature_ro_compat
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Every incompat feature by its bit and the name `mke2fs -O` uses.
const INCOMPAT_NAMES: [(u32, &str); 16] = [
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "largedir"),
    (0x8000, "inline_data"),
    (0x1_0000, "encrypt"),
    (0x2_0000, "casefold"),
];

/// What this reader cannot read: a compressed (e2compr) file system, an
/// external journal device (not a file system), Lustre's dirdata entries.
const INCOMPAT_REFUSED: u32 = INCOMPAT_COMPRESSION | INCOMPAT_JOURNAL_DEV | INCOMPAT_DIRDATA;

/// The superblock fields the reader uses.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    /// The 1,024 bytes as read (for the label and UUID).
    raw: Vec<u8>,
    pub block_size: u64,
    pub blocks_count: u64,
    pub inodes_count: u32,
    pub inodes_per_group: u32,
    pub blocks_per_group: u64,
    pub first_data_block: u64,
    pub inode_size: u64,
    pub desc_size: u64,
    pub first_meta_bg: u64,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    /// The seed of every `metadata_csum` checksum.
    pub csum_seed: u32,
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::corrupt(FS, Some("/"), what).at(SUPERBLOCK_OFFSET)
}

/// The names of the incompat feature bits in `bits` (unknown ones as hex).
pub(crate) fn incompat_names(bits: u32) -> String {
    let mut names: Vec<String> = INCOMPAT_NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let known = INCOMPAT_NAMES.iter().fold(0, |a, (b, _)| a | b);
    if bits & !known != 0 {
        names.push(format!("unknown 0x{:x}", bits & !known));
    }
    names.join(", ")
}

impl Superblock {
    /// Parses the 1,024 bytes of a superblock; refuses what this reader
    /// cannot read ([`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported),
    /// naming the features).
    pub fn parse(sb: &[u8]) -> Result<Self> {
        let f32 = |off| le_u32(sb, off).unwrap_or(0);
        let f16 = |off| le_u16(sb, off).unwrap_or(0);
        if f16(0x38) != MAGIC {
            let detail = crate::error::Detail::BadSignature {
                what: "superblock magic",
                expected: format!("{MAGIC:#06x}"),
                found: format!("{:#06x}", f16(0x38)),
            };
            return Err(Error::damaged(FS, Some("/"), detail).at(SUPERBLOCK_OFFSET));
        }
        let incompat = f32(0x60);
        let known = INCOMPAT_NAMES.iter().fold(0, |a, (b, _)| a | b);
        let refused = incompat & (INCOMPAT_REFUSED | !known);
        if refused != 0 {
            return Err(Error::unsupported(
                FS,
                None,
                format!("ext features {}", incompat_names(refused)),
            ));
        }
        let log = f32(0x18);
        if log > 6 {
            return Err(corrupt(format!("block size 1024 << {log}")));
        }
        let block_size = 1024u64 << log;
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count =
            u64::from(f32(0x04)) | if is64 { u64::from(f32(0x150)) << 32 } else { 0 };
        // Every block's byte offset then fits with room to spare (ext4's
        // own limit is 2^60 bytes).
        if blocks_count
            .checked_mul(block_size)
            .is_none_or(|b| b > u64::MAX / 2)
        {
            return Err(corrupt(format!(
                "{blocks_count} blocks of {block_size} bytes"
            )));
        }
        let inode_size = match f32(0x4C) {
            0 => 128,
            _ => u64::from(f16(0x58)),
        };
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return Err(corrupt(format!("inode size {inode_size}")));
        }
        let desc_size = match u64::from(f16(0xFE)) {
            d if is64 && d >= 64 => d,
            _ => 32,
        };
        if desc_size > block_size || !desc_size.is_power_of_two() {
            return Err(corrupt(format!("group descriptor size {desc_size}")));
        }
        let inodes_per_group = f32(0x28);
        if inodes_per_group == 0 {
            return Err(corrupt("0 inodes per group"));
        }
        let blocks_per_group = u64::from(f32(0x20));
        if blocks_per_group == 0 {
            return Err(corrupt("0 blocks per group"));
        }
        let uuid = sb.get(0x68..0x78).unwrap_or(&[]);
        let csum_seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
            f32(0x270)
        } else {
            crc32c(!0, uuid)
        };
        Ok(Superblock {
            raw: sb.to_vec(),
            block_size,
            blocks_count,
            inodes_count: f32(0x00),
            inodes_per_group,
            blocks_per_group,
            first_data_block: u64::from(f32(0x14)),
            inode_size,
            desc_size,
            first_meta_bg: u64::from(f32(0x104)),
            compat: f32(0x5C),
            incompat,
            ro_compat: f32(0x64),
            csum_seed,
        })
    }

    /// Whether `metadata_csum` checksums are kept.
    pub fn metadata_csum(&self) -> bool {
        self.ro_compat & RO_COMPAT_METADATA_CSUM != 0
    }

    /// Whether group descriptors carry the CRC-16 of `gdt_csum`.
    pub fn gdt_csum(&self) -> bool {
        self.ro_compat & RO_COMPAT_GDT_CSUM != 0
    }

    /// Whether directory entries carry a file type.
    pub fn filetype(&self) -> bool {
        self.incompat & INCOMPAT_FILETYPE != 0
    }

    /// Whether the journal needs recovery.
    pub fn needs_recovery(&self) -> bool {
        self.incompat & INCOMPAT_RECOVER != 0
    }

    /// The stored superblock checksum and the one computed, when they
    /// differ on a `metadata_csum` file system.
    pub fn checksum_mismatch(&self) -> Option<(u32, u32)> {
        if !self.metadata_csum() {
            return None;
        }
        let stored = le_u32(&self.raw, 0x3FC)?;
        let computed = crc32c(!0, self.raw.get(..0x3FC)?);
        (stored != computed).then_some((stored, computed))
    }

    /// The volume label (up to the first NUL).
    pub fn label(&self) -> String {
        let raw = self.raw.get(0x78..0x88).unwrap_or(&[]);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(raw.get(..end).unwrap_or(&[])).into_owned()
    }

    /// The 16 bytes of the UUID.
    pub fn uuid_bytes(&self) -> [u8; 16] {
        diskimage_formats::bytes::array::<16>(&self.raw, 0x68).unwrap_or([0; 16])
    }

    /// The UUID as `tune2fs -l` prints it.
    pub fn uuid(&self) -> String {
        diskimage_formats::Guid::from_be_bytes(self.uuid_bytes()).to_string()
    }

    /// The number of block groups.
    pub fn group_count(&self) -> u64 {
        self.blocks_count
            .saturating_sub(self.first_data_block)
            .div_ceil(self.blocks_per_group)
    }

    /// Whether group `g` holds a superblock backup (and so, without
    /// `meta_bg`, a copy of the descriptor table).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            let b = |o| u64::from(le_u32(&self.raw, o).unwrap_or(0));
            return g == b(0x24C) || g == b(0x250);
        }
        if g <= 1 || self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                p = p.saturating_mul(base);
            }
            p == g
        })
    }

    /// The byte offset of the descriptor of group `g` (as e2fsprogs'
    /// `ext2fs_descriptor_block_loc2` finds its block).
    pub fn descriptor_offset(&self, g: u64) -> Option<u64> {
        let per_block = self.block_size / self.desc_size;
        let index = g / per_block;
        // A 1 KiB-block volume whose first data block is 0 (bigalloc) keeps
        // block 1 for the superblock.
        let adjust = u64::from(index == 0 && self.block_size == 1024 && self.first_data_block == 0);
        let block = if self.incompat & INCOMPAT_META_BG == 0 || index < self.first_meta_bg {
            self.first_data_block + 1 + index + adjust
        } else {
            let first = index.checked_mul(per_block)?;
            self.first_data_block
                .checked_add(first.checked_mul(self.blocks_per_group)?)?
                + u64::from(self.has_super(first))
                + adjust
        };
        block
            .checked_mul(self.block_size)?
            .checked_add((g % per_block) * self.desc_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x00..0x04].copy_from_slice(&512u32.to_le_bytes()); // inodes
        sb[0x04..0x08].copy_from_slice(&8192u32.to_le_bytes()); // blocks
        sb[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // first data block
        sb[0x20..0x24].copy_from_slice(&256u32.to_le_bytes()); // blocks per group
        sb[0x28..0x2C].copy_from_slice(&16u32.to_le_bytes()); // inodes per group
        sb[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes()); // dynamic rev
        sb[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes()); // inode size
        sb[0x60..0x64].copy_from_slice(&(INCOMPAT_META_BG | INCOMPAT_64BIT).to_le_bytes());
        sb[0x64..0x68].copy_from_slice(&RO_COMPAT_SPARSE_SUPER.to_le_bytes());
        sb[0xFE..0x100].copy_from_slice(&64u16.to_le_bytes());
        sb
    }

    #[test]
    fn meta_bg_descriptor_locations() {
        // As dumpe2fs shows fixtures/ext/meta_bg.img: group 0's at block 2,
        // group 16's at 4097 (no backup there), group 17's at 4097 too.
        let s = Superblock::parse(&golden()).unwrap();
        assert_eq!(s.group_count(), 32);
        assert_eq!(s.descriptor_offset(0), Some(2 * 1024));
        assert_eq!(s.descriptor_offset(1), Some(2 * 1024 + 64));
        assert_eq!(s.descriptor_offset(16), Some(4097 * 1024));
        assert_eq!(s.descriptor_offset(17), Some(4097 * 1024 + 64));
    }

    #[test]
    fn refused_features_are_named() {
        let mut sb = golden();
        sb[0x60..0x64].copy_from_slice(&(0x4_0000u32 | INCOMPAT_JOURNAL_DEV).to_le_bytes());
        let e = Superblock::parse(&sb).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        assert!(
            e.to_string().contains("journal_dev, unknown 0x40000"),
            "{e}"
        );
        let mut sb = golden();
        sb[0x38] = 0;
        assert_eq!(
            Superblock::parse(&sb).unwrap_err().kind(),
            crate::ErrorKind::Corrupt
        );
    }

    #[test]
    fn backups_of_sparse_super() {
        let s = Superblock::parse(&golden()).unwrap();
        let with: Vec<u64> = (0..60).filter(|&g| s.has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
