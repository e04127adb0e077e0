//! A fork's block map: extent records in the inode, or a B+tree of them
//! (its root in the inode, `BMAP`/`BMA3` blocks below), flattened into
//! runs sorted by file block. Unwritten extents read as zeros; blocks no
//! extent maps are holes. Every block pointer is checked against the
//! volume, tree depth is bounded, every tree block is read at most once
//! and the records are bounded by the volume's block count, so a loop or
//! a corrupt tree ends with an error.

use std::collections::HashSet;

use diskimage_formats::bytes::{be_u16, be_u64};

use super::inode::{Format, Inode};
use super::{corrupt, XfsFs};
use crate::error::Result;
use crate::ext4::blocks::Run;

/// The deepest B+tree the kernel builds for a fork (`XFS_BM_MAXLEVELS`
/// with 64-bit extent counts is 10).
const MAX_LEVELS: u16 = 10;
/// `BMAP` (v4) and `BMA3` (v5) tree blocks.
const BMAP_MAGIC: &[u8; 4] = b"BMAP";
const BMA3_MAGIC: &[u8; 4] = b"BMA3";
/// Long-format tree block header: v4 and v5 sizes, v5 CRC offset.
const HDR_V4: usize = 24;
const HDR_V5: usize = 72;
const BLOCK_CRC_AT: usize = 64;

/// One extent record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// First file block.
    pub offset: u64,
    /// First file-system block (AG-encoded).
    pub block: u64,
    /// Length in blocks.
    pub count: u64,
    /// Allocated but never written: reads as zeros.
    pub unwritten: bool,
}

/// Decodes the 16-byte big-endian extent record at `rec`.
pub(crate) fn extent(rec: &[u8]) -> Option<Extent> {
    let l0 = be_u64(rec, 0)?;
    let l1 = be_u64(rec, 8)?;
    Some(Extent {
        unwritten: l0 >> 63 != 0,
        offset: (l0 >> 9) & ((1 << 54) - 1),
        block: ((l0 & 0x1FF) << 43) | (l1 >> 21),
        count: l1 & ((1 << 21) - 1),
    })
}

impl XfsFs {
    /// The extents of `inode`'s data fork in file order (`path` for
    /// errors), each checked against the volume.
    pub(crate) fn extents(&self, inode: &Inode, path: &str) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        match inode.format {
            Format::Extents => {
                let n = usize::try_from(inode.nextents).unwrap_or(usize::MAX);
                if n.saturating_mul(16) > inode.fork.len() {
                    return Err(corrupt(
                        path,
                        format!("{n} extents do not fit the inode's data fork"),
                    )
                    .at(inode.fork_at));
                }
                for (i, rec) in inode.fork.chunks_exact(16).take(n).enumerate() {
                    self.push_extent(&mut out, rec, path, inode.fork_at + 16 * i as u64)?;
                }
            }
            Format::Btree => {
                let mut walk = Walk {
                    seen: HashSet::new(),
                    budget: self.sb.dblocks,
                };
                let root = &inode.fork;
                let level = be_u16(root, 0).unwrap_or(0);
                let n = usize::from(be_u16(root, 2).unwrap_or(0));
                if level == 0 || level > MAX_LEVELS {
                    return Err(corrupt(path, format!("extent tree root of level {level}"))
                        .at(inode.fork_at));
                }
                let max = (root.len().saturating_sub(4)) / 16;
                if n == 0 || n > max {
                    return Err(corrupt(
                        path,
                        format!("extent tree root with {n} of at most {max} pointers"),
                    )
                    .at(inode.fork_at));
                }
                let ptrs = 4 + max * 8;
                for i in 0..n {
                    let ptr = be_u64(root, ptrs + i * 8).unwrap_or(0);
                    self.tree_block(&mut walk, &mut out, ptr, level - 1, path, inode.number)?;
                }
            }
            Format::Local | Format::Dev => {
                return Err(corrupt(path, "data fork has no block map").at(inode.fork_at))
            }
        }
        out.sort_by_key(|e| e.offset);
        for pair in out.windows(2) {
            if let [a, b] = pair {
                if a.offset + a.count > b.offset {
                    return Err(corrupt(
                        path,
                        format!(
                            "extents overlap at file block {} (a corrupt block map)",
                            b.offset
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn push_extent(&self, out: &mut Vec<Extent>, rec: &[u8], path: &str, at: u64) -> Result<()> {
        let e = extent(rec).ok_or_else(|| corrupt(path, "short extent record").at(at))?;
        if e.count == 0 {
            return Err(corrupt(path, "extent of zero blocks").at(at));
        }
        if self.sb.block_offset(e.block, e.count).is_none() {
            return Err(corrupt(
                path,
                format!(
                    "extent of {} blocks at block {:#x} lies outside the volume",
                    e.count, e.block
                ),
            )
            .at(at));
        }
        e.offset
            .checked_add(e.count)
            .filter(|&end| end <= 1 << 54)
            .ok_or_else(|| corrupt(path, "extent past the largest file offset").at(at))?;
        out.push(e);
        Ok(())
    }

    /// Reads tree block `ptr` expected at `level` and below.
    fn tree_block(
        &self,
        walk: &mut Walk,
        out: &mut Vec<Extent>,
        ptr: u64,
        level: u16,
        path: &str,
        owner: u64,
    ) -> Result<()> {
        let at = self.sb.block_offset(ptr, 1).ok_or_else(|| {
            corrupt(
                path,
                format!("extent tree pointer {ptr:#x} outside the volume"),
            )
        })?;
        if !walk.seen.insert(ptr) {
            return Err(corrupt(path, "extent tree visits a block twice (a loop)").at(at));
        }
        walk.budget = walk
            .budget
            .checked_sub(1)
            .ok_or_else(|| corrupt(path, "extent tree larger than the volume").at(at))?;
        let block = self.read_block(at)?;
        let (magic, hdr) = if self.sb.crc() {
            (BMA3_MAGIC, HDR_V5)
        } else {
            (BMAP_MAGIC, HDR_V4)
        };
        if block.get(..4) != Some(magic.as_slice()) {
            return Err(corrupt(path, "extent tree block without its magic").at(at));
        }
        if self.sb.crc() {
            self.check_crc(&block, BLOCK_CRC_AT, at, path, "extent tree block")?;
            if be_u64(&block, 56) != Some(owner) {
                self.tolerate(
                    path,
                    at,
                    diskimage_formats::Detail::Invalid(
                        "extent tree block owned by another inode".into(),
                    ),
                )?;
            }
        }
        let got = be_u16(&block, 4).unwrap_or(u16::MAX);
        if got != level {
            return Err(corrupt(
                path,
                format!("extent tree block of level {got} where level {level} belongs"),
            )
            .at(at));
        }
        let n = usize::from(be_u16(&block, 6).unwrap_or(0));
        let space = block.len().saturating_sub(hdr);
        if level == 0 {
            if n > space / 16 {
                return Err(corrupt(path, format!("extent tree leaf of {n} records")).at(at));
            }
            for i in 0..n {
                let off = hdr + i * 16;
                let rec = block.get(off..off + 16).unwrap_or_default();
                walk.budget = walk.budget.checked_sub(1).ok_or_else(|| {
                    corrupt(path, "more extents than the volume has blocks").at(at)
                })?;
                self.push_extent(out, rec, path, at + off as u64)?;
            }
        } else {
            let max = space / 16;
            if n == 0 || n > max {
                return Err(corrupt(path, format!("extent tree node of {n} pointers")).at(at));
            }
            for i in 0..n {
                let child = be_u64(&block, hdr + max * 8 + i * 8).unwrap_or(0);
                self.tree_block(walk, out, child, level - 1, path, owner)?;
            }
        }
        Ok(())
    }
}

/// The state of one tree walk: blocks read, and records or blocks it may
/// still read.
struct Walk {
    seen: HashSet<u64>,
    budget: u64,
}

/// The runs of the extents `ext` for a reader: blocks as linear volume
/// block numbers (`None` for unwritten extents: zeros).
pub(crate) fn runs(fs: &XfsFs, ext: &[Extent]) -> Vec<Run> {
    ext.iter()
        .map(|e| Run {
            logical: e.offset,
            physical: if e.unwritten {
                None
            } else {
                fs.sb
                    .block_offset(e.block, e.count)
                    .map(|b| b / fs.sb.block_size)
            },
            len: e.count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_record_fields() {
        // offset 5, a block number whose top 9 bits sit in the first
        // word, 7 blocks, unwritten.
        let block: u64 = (0x1A5 << 43) | 0x1234;
        let l0: u64 = (1 << 63) | (5 << 9) | (block >> 43);
        let l1: u64 = ((block & ((1 << 43) - 1)) << 21) | 7;
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&l0.to_be_bytes());
        rec[8..].copy_from_slice(&l1.to_be_bytes());
        assert_eq!(
            extent(&rec),
            Some(Extent {
                offset: 5,
                block,
                count: 7,
                unwritten: true
            })
        );
    }
}
