//! A file's data blocks: the extent tree of ext4 or the block map of
//! ext2/ext3 (12 direct pointers, then single, double and triple
//! indirect), flattened into runs with holes; extent tree blocks'
//! checksums checked (a mismatch tolerated as the inode layer says). Every pointer is checked
//! against the volume and every walk is bounded by the volume's block
//! count, so a cycle or a corrupt tree ends with an error.

use diskimage_formats::bytes::{le_u16, le_u32};

use super::checksum::crc32c;
use super::dir::inode_seed;
use super::inode::{Inode, InodeTable, INLINE_DATA_FL};
use crate::error::{Detail, Error, FsName, Result};

const FS: FsName = FsName::Ext;
const EXTENTS_FL: u32 = 0x8_0000;
const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's limit on extent tree depth.
const MAX_EXTENT_DEPTH: u16 = 5;

fn corrupt(path: &str, what: impl Into<String>) -> Error {
    Error::corrupt(FS, Some(path), what)
}

/// A run of file blocks: `len` blocks from file block `logical`, at
/// volume block `physical` (`None`: reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub logical: u64,
    pub physical: Option<u64>,
    pub len: u64,
}

impl InodeTable {
    /// The runs of `inode`'s data blocks up to its size, sorted by file
    /// block; blocks not covered are holes.
    pub fn runs(&self, inode: &Inode, path: &str) -> Result<Vec<Run>> {
        if inode.flags & INLINE_DATA_FL != 0 {
            return Err(Error::unsupported(FS, Some(path), "inline data"));
        }
        let mut walk = Walk {
            table: self,
            path,
            nblocks: inode.size.div_ceil(self.sb.block_size),
            budget: self.sb.blocks_count,
            runs: Vec::new(),
            seed: self
                .sb
                .metadata_csum()
                .then(|| inode_seed(self.sb.csum_seed, inode.number, inode.generation)),
        };
        if inode.flags & EXTENTS_FL != 0 {
            walk.extent_node(&inode.block, inode.offset + 0x28, MAX_EXTENT_DEPTH + 1)?;
            walk.runs.sort_by_key(|r| r.logical);
        } else {
            walk.block_map(&inode.block, inode.offset + 0x28)?;
        }
        Ok(walk.runs)
    }
}

/// One walk over a file's block tree, bounded by the file's block count
/// and by the volume's (`budget`: blocks it may still map or read).
struct Walk<'a> {
    table: &'a InodeTable,
    path: &'a str,
    nblocks: u64,
    budget: u64,
    runs: Vec<Run>,
    /// The inode's checksum seed, with `metadata_csum`.
    seed: Option<u32>,
}

impl Walk<'_> {
    fn spend(&mut self, n: u64) -> Result<()> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            corrupt(
                self.path,
                "maps more blocks than the volume has (a cycle or a corrupt tree)",
            )
        })?;
        Ok(())
    }

    fn check_block(&self, block: u64, len: u64, at: u64) -> Result<()> {
        if block
            .checked_add(len)
            .is_none_or(|end| end > self.table.sb.blocks_count)
        {
            return Err(corrupt(
                self.path,
                format!(
                    "data blocks {block}+{len} past the end of the volume ({} blocks)",
                    self.table.sb.blocks_count
                ),
            )
            .at(at));
        }
        Ok(())
    }

    fn push(&mut self, logical: u64, physical: Option<u64>, len: u64) -> Result<()> {
        if logical >= self.nblocks || len == 0 {
            return Ok(());
        }
        let len = len.min(self.nblocks - logical);
        if physical.is_some() {
            self.spend(len)?;
        }
        if let Some(last) = self.runs.last_mut() {
            let contiguous = last.logical + last.len == logical
                && match (last.physical, physical) {
                    (Some(a), Some(b)) => a + last.len == b,
                    _ => false,
                };
            if contiguous {
                last.len += len;
                return Ok(());
            }
        }
        self.runs.push(Run {
            logical,
            physical,
            len,
        });
        Ok(())
    }

    fn read_block(&mut self, block: u64, at: u64) -> Result<Vec<u8>> {
        self.check_block(block, 1, at)?;
        self.spend(1)?;
        let mut buf = vec![0u8; usize::try_from(self.table.sb.block_size).unwrap_or(1024)];
        self.table
            .read(&mut buf, block * self.table.sb.block_size)?;
        Ok(buf)
    }

    /// ext2/ext3 block map: 12 direct pointers, then single, double and
    /// triple indirect; a zero pointer at any level is a hole.
    fn block_map(&mut self, root: &[u8; 60], at: u64) -> Result<()> {
        let per = self.table.sb.block_size / 4;
        let mut logical = 0u64;
        for i in 0..15usize {
            let level = i.saturating_sub(11) as u32; // 0 for direct, 1..=3
            let span = per.saturating_pow(level);
            let ptr = u64::from(le_u32(root, i * 4).unwrap_or(0));
            self.indirect(ptr, level, logical, at + i as u64 * 4)?;
            logical = logical.saturating_add(span);
            if logical >= self.nblocks {
                break;
            }
        }
        Ok(())
    }

    fn indirect(&mut self, ptr: u64, level: u32, logical: u64, at: u64) -> Result<()> {
        if ptr == 0 || logical >= self.nblocks {
            return Ok(()); // a hole (of the whole subtree)
        }
        if level == 0 {
            self.check_block(ptr, 1, at)?;
            return self.push(logical, Some(ptr), 1);
        }
        let block = self.read_block(ptr, at)?;
        let span = (self.table.sb.block_size / 4).saturating_pow(level - 1);
        let base = ptr * self.table.sb.block_size;
        for (i, chunk) in block.chunks_exact(4).enumerate() {
            let child = logical.saturating_add((i as u64).saturating_mul(span));
            if child >= self.nblocks {
                break;
            }
            let p = u64::from(le_u32(chunk, 0).unwrap_or(0));
            self.indirect(p, level - 1, child, base + i as u64 * 4)?;
        }
        Ok(())
    }

    /// Checks the checksum of an extent tree block (at `at`): the
    /// `ext4_extent_tail` after `eh_max` entries.
    fn check_extent_block(&self, block: &[u8], at: u64) -> Result<()> {
        let Some(seed) = self.seed else {
            return Ok(());
        };
        let tail = 12 + 12 * usize::from(le_u16(block, 4).unwrap_or(0));
        let detail = match (block.get(..tail), le_u32(block, tail)) {
            (Some(covered), Some(stored)) => {
                let computed = crc32c(seed, covered);
                if stored == computed {
                    return Ok(());
                }
                super::inode::checksum("extent block", stored.into(), computed.into())
            }
            _ => Detail::Invalid(format!(
                "extent block has no room for its checksum (eh_max {})",
                (tail - 12) / 12
            )),
        };
        self.table.tolerate(self.path, at, detail)
    }

    /// An extent tree node (the root in `i_block` or a tree block).
    fn extent_node(&mut self, node: &[u8], at: u64, max_depth: u16) -> Result<()> {
        let bad = |what: String| corrupt(self.path, what).at(at);
        if le_u16(node, 0) != Some(EXTENT_MAGIC) {
            return Err(bad("extent header magic".into()));
        }
        let entries = usize::from(le_u16(node, 2).unwrap_or(0));
        let depth = le_u16(node, 6).unwrap_or(0);
        if depth >= max_depth {
            return Err(bad(format!("extent tree depth {depth}")));
        }
        if 12 + entries * 12 > node.len() {
            return Err(bad(format!(
                "{entries} extents in a {}-byte node",
                node.len()
            )));
        }
        for e in 0..entries {
            let o = 12 + e * 12;
            let logical = u64::from(le_u32(node, o).unwrap_or(0));
            let entry_at = at + o as u64;
            if depth == 0 {
                let raw_len = u64::from(le_u16(node, o + 4).unwrap_or(0));
                let start = (u64::from(le_u16(node, o + 6).unwrap_or(0)) << 32)
                    | u64::from(le_u32(node, o + 8).unwrap_or(0));
                // Above 32768: an unwritten extent, read as zeros.
                let (len, written) = if raw_len > 32768 {
                    (raw_len - 32768, false)
                } else {
                    (raw_len, true)
                };
                self.check_block(start, len, entry_at)?;
                self.push(logical, written.then_some(start), len)?;
            } else {
                let child = (u64::from(le_u16(node, o + 8).unwrap_or(0)) << 32)
                    | u64::from(le_u32(node, o + 4).unwrap_or(0));
                let block = self.read_block(child, entry_at)?;
                let block_at = child * self.table.sb.block_size;
                self.check_extent_block(&block, block_at)?;
                self.extent_node(&block, block_at, depth)?;
            }
        }
        Ok(())
    }
}
