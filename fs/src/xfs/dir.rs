//! Directories, read from their entries wherever they are stored:
//! short-form (in the inode), and the data blocks of block, leaf, node
//! and B+tree directories (`XD2B`/`XDB3` single blocks with their leaf at
//! the end, `XD2D`/`XDD3` data blocks). Leaf, node and free-index blocks
//! hold hashes and free-space summaries, no names: a listing reads the
//! data section (file offsets below 32 GiB) block by block, which every
//! format shares. Data blocks' CRCs (v5) are checked.

use diskimage_formats::bytes::{be_u16, be_u32, be_u64};

use super::inode::{Format, Inode};
use super::{corrupt, XfsFs};
use crate::error::{Error, Result};

/// Where the leaf section of a directory starts (file offset, bytes).
const LEAF_OFFSET: u64 = 1 << 35;
/// Where a v5 data block keeps its CRC.
const DATA_CRC_AT: usize = 4;

/// One directory entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The name's bytes.
    pub name: Vec<u8>,
    /// The inode number.
    pub ino: u64,
    /// The `ftype` byte, on volumes that store one.
    pub ftype: Option<u8>,
}

impl XfsFs {
    /// The entries of directory `dir` (at `path`), `.` and `..` left out.
    pub(crate) fn dir_entries(&self, dir: &Inode, path: &str) -> Result<Vec<Entry>> {
        let mut out = match dir.format {
            Format::Local => self.short_form(dir, path)?,
            Format::Extents | Format::Btree => self.data_blocks(dir, path)?,
            Format::Dev => {
                return Err(corrupt(path, "directory with a device fork").at(dir.fork_at))
            }
        };
        out.retain(|e| e.name != b"." && e.name != b"..");
        Ok(out)
    }

    /// A short-form directory: a header (count, 8-byte count, parent) and
    /// packed entries in the inode.
    fn short_form(&self, dir: &Inode, path: &str) -> Result<Vec<Entry>> {
        let size = usize::try_from(dir.size).unwrap_or(usize::MAX);
        let fork = dir.fork.get(..size).ok_or_else(|| {
            corrupt(
                path,
                format!("short-form directory of {size} bytes exceeds its fork"),
            )
            .at(dir.fork_at)
        })?;
        let bad =
            |what: &str, at: usize| corrupt(path, what.to_string()).at(dir.fork_at + at as u64);
        let count = usize::from(
            *fork
                .first()
                .ok_or_else(|| bad("empty short-form directory", 0))?,
        );
        let wide = fork.get(1).copied().unwrap_or(0) != 0;
        let ino_size = if wide { 8 } else { 4 };
        let mut p = 2 + ino_size;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(
                *fork
                    .get(p)
                    .ok_or_else(|| bad("entry past the directory", p))?,
            );
            let name_at = p + 3;
            let name = fork
                .get(name_at..name_at + len)
                .ok_or_else(|| bad("entry name past the directory", p))?;
            let mut q = name_at + len;
            let ftype = if self.sb.ftype {
                q += 1;
                Some(
                    *fork
                        .get(q - 1)
                        .ok_or_else(|| bad("entry past the directory", p))?,
                )
            } else {
                None
            };
            let ino = if wide {
                be_u64(fork, q)
            } else {
                be_u32(fork, q).map(u64::from)
            }
            .ok_or_else(|| bad("entry inode past the directory", p))?;
            if len == 0 {
                return Err(bad("entry with an empty name", p));
            }
            out.push(Entry {
                name: name.to_vec(),
                ino: ino & ((1 << 56) - 1),
                ftype,
            });
            p = q + ino_size;
        }
        Ok(out)
    }

    /// The entries of every data block of an extent-mapped directory.
    fn data_blocks(&self, dir: &Inode, path: &str) -> Result<Vec<Entry>> {
        let extents = self.extents(dir, path)?;
        let bs = self.sb.block_size;
        let dbs = self.sb.dir_block_size;
        let per = dbs / bs;
        let data_end = dir.size.min(LEAF_OFFSET).div_ceil(dbs);
        // At most the volume's worth of directory blocks is read.
        let mut budget = self.sb.dblocks;
        let mut out = Vec::new();
        let mut next = 0u64;
        for e in &extents {
            let last = (e.offset + e.count - 1) / per;
            for db in (e.offset / per).max(next)..=last {
                if db >= data_end {
                    return Ok(out);
                }
                budget = budget
                    .checked_sub(per)
                    .ok_or_else(|| corrupt(path, "directory larger than the volume"))?;
                if let Some((block, at)) = self.dir_block(&extents, db * per, per, path)? {
                    self.data_block(&block, at, path, &mut out)?;
                }
                next = db + 1;
            }
        }
        Ok(out)
    }

    /// The `per` blocks of one directory block from file block `first`,
    /// and the volume offset of its first block; `None` where unmapped.
    fn dir_block(
        &self,
        extents: &[super::bmap::Extent],
        first: u64,
        per: u64,
        path: &str,
    ) -> Result<Option<(Vec<u8>, u64)>> {
        let bs = self.sb.block_size;
        let mut out = Vec::with_capacity(usize::try_from(per * bs).unwrap_or(0));
        let mut at0 = None;
        for fb in first..first + per {
            let i = extents.partition_point(|e| e.offset + e.count <= fb);
            let Some(e) = extents.get(i).filter(|e| e.offset <= fb) else {
                if fb == first {
                    return Ok(None);
                }
                return Err(corrupt(
                    path,
                    format!("directory block {first} is partly unmapped"),
                ));
            };
            if e.unwritten {
                return Err(corrupt(path, "directory block in an unwritten extent"));
            }
            let at = self
                .sb
                .block_offset(e.block + (fb - e.offset), 1)
                .ok_or_else(|| corrupt(path, "directory block outside the volume"))?;
            at0.get_or_insert(at);
            out.extend_from_slice(&self.read_block(at)?);
        }
        Ok(at0.map(|a| (out, a)))
    }

    /// Appends the entries of one data-section block at volume offset `at`.
    fn data_block(&self, b: &[u8], at: u64, path: &str, out: &mut Vec<Entry>) -> Result<()> {
        let v5 = self.sb.crc();
        let magic = b.get(..4).unwrap_or_default();
        let (single, hdr) = match (magic, v5) {
            (b"XDB3", true) => (true, 64),
            (b"XDD3", true) => (false, 64),
            (b"XD2B", false) => (true, 16),
            (b"XD2D", false) => (false, 16),
            _ => {
                return Err(Error::corrupt(
                    super::FS,
                    Some(path),
                    "directory data block without its magic",
                )
                .at(at))
            }
        };
        if v5 {
            self.check_crc(b, DATA_CRC_AT, at, path, "directory block")?;
        }
        let len = b.len();
        let end = if single {
            let count = be_u32(b, len - 8).unwrap_or(u32::MAX) as usize;
            count
                .checked_mul(8)
                .and_then(|c| len.checked_sub(8 + c))
                .filter(|&e| e >= hdr)
                .ok_or_else(|| {
                    corrupt(path, format!("directory block tail counts {count} entries"))
                        .at(at + len as u64 - 8)
                })?
        } else {
            len
        };
        let bad = |what: String, p: usize| corrupt(path, what).at(at + p as u64);
        let mut p = hdr;
        while p < end {
            if be_u16(b, p) == Some(0xFFFF) {
                let size = usize::from(be_u16(b, p + 2).unwrap_or(0));
                if size < 8 || size % 8 != 0 || p + size > end {
                    return Err(bad(format!("free space entry of {size} bytes"), p));
                }
                p += size;
                continue;
            }
            let ino = be_u64(b, p).ok_or_else(|| bad("entry past the block".into(), p))?;
            let name_len = usize::from(b.get(p + 8).copied().unwrap_or(0));
            let extra = usize::from(self.sb.ftype);
            let size = (8 + 1 + name_len + extra + 2).next_multiple_of(8);
            if name_len == 0 || p + size > end {
                return Err(bad(
                    format!("directory entry with a {name_len}-byte name"),
                    p,
                ));
            }
            let name = b.get(p + 9..p + 9 + name_len).unwrap_or_default();
            out.push(Entry {
                name: name.to_vec(),
                ino,
                ftype: self
                    .sb
                    .ftype
                    .then(|| b.get(p + 9 + name_len).copied().unwrap_or(0)),
            });
            p += size;
        }
        Ok(())
    }
}
