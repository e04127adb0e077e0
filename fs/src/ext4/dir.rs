//! ext directory entries: the linear format every directory block holds
//! (htree leaves are ordinary blocks; htree root and interior blocks hold
//! one entry-less record spanning the block, or `.` and `..` before the
//! index, so a linear scan meets every name once), the same records in an
//! inline-data directory, and the checksums `metadata_csum` keeps at the
//! end of each block (a leaf's tail entry, an index block's `dx_tail`).

use std::collections::HashMap;
use std::rc::Rc;

use diskimage_formats::bytes::{le_u16, le_u32};

use super::checksum::crc32c;
use super::inode::{Inode, InodeTable, ENCRYPT_FL, INLINE_DATA_FL, S_IFDIR, S_IFMT};
use crate::error::{Detail, Error, FsName, Result};

const FS: FsName = FsName::Ext;
/// Parsed directories kept for lookups (dropped all at once beyond this).
const DIR_CACHE_ENTRIES: usize = 1 << 20;

/// Bytes of the tail entry that holds a leaf block's checksum.
const LEAF_TAIL: usize = 12;
/// `det_reserved_ft` of the tail entry.
const TAIL_TYPE: u8 = 0xDE;
/// `i_flags`: the directory is an htree.
pub(crate) const INDEX_FL: u32 = 0x1000;

/// One directory entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// The name's bytes.
    pub name: Vec<u8>,
    /// The inode number (never 0: unused records are skipped).
    pub inode: u32,
    /// The `file_type` byte (0 where the file system has no `filetype`).
    pub file_type: u8,
}

/// Appends the entries of one run of records (a block, or one region of
/// an inline directory) to `out`. A record that does not fit ends the run:
/// what follows is not entries (the kernel stops there too).
pub(crate) fn parse_records(buf: &[u8], filetype: bool, out: &mut Vec<RawEntry>) {
    let mut at = 0usize;
    while let (Some(ino), Some(rec_len)) = (le_u32(buf, at), le_u16(buf, at + 4)) {
        let rec_len = usize::from(rec_len);
        let (name_len, ft) = if filetype {
            (
                usize::from(buf.get(at + 6).copied().unwrap_or(0)),
                buf.get(at + 7).copied().unwrap_or(0),
            )
        } else {
            (usize::from(le_u16(buf, at + 6).unwrap_or(0)), 0)
        };
        if rec_len < 8 || at + rec_len > buf.len() || 8 + name_len > rec_len {
            break;
        }
        if ino != 0 {
            if let Some(name) = buf.get(at + 8..at + 8 + name_len) {
                out.push(RawEntry {
                    name: name.to_vec(),
                    inode: ino,
                    file_type: ft,
                });
            }
        }
        at += rec_len;
    }
}

/// The seed of a directory's (or inode's) checksums: the volume seed
/// continued with the inode number and generation.
pub(crate) fn inode_seed(fs_seed: u32, number: u32, generation: u32) -> u32 {
    crc32c(
        crc32c(fs_seed, &number.to_le_bytes()),
        &generation.to_le_bytes(),
    )
}

/// The stored and computed checksum of a directory block, when they
/// differ (or the block has no room for one: `None` stored). `index_root`:
/// block 0 of an htree directory.
pub(crate) fn block_checksum_mismatch(
    block: &[u8],
    seed: u32,
    htree: bool,
    first: bool,
) -> Option<(Option<u32>, u32)> {
    let bs = block.len();
    // An htree root (block 0) or interior node: `.`/`..` or one empty
    // record spanning the block, then count and limit.
    let interior =
        htree && le_u32(block, 0) == Some(0) && usize::from(le_u16(block, 4).unwrap_or(0)) == bs;
    if htree && (first || interior) {
        let count_at = if first {
            // After `.` (12 bytes), the `..` header (12) and dx_root_info.
            0x18 + usize::from(block.get(0x1D).copied().unwrap_or(8))
        } else {
            8
        };
        let limit = usize::from(le_u16(block, count_at).unwrap_or(0));
        let count = usize::from(le_u16(block, count_at + 2).unwrap_or(0));
        let tail = count_at + limit * 8;
        if count > limit || tail + 8 > bs {
            return Some((None, 0));
        }
        let mut c = crc32c(seed, block.get(..count_at + count * 8)?);
        c = crc32c(c, block.get(tail..tail + 4)?);
        c = crc32c(c, &[0; 4]);
        let stored = le_u32(block, tail + 4)?;
        return (stored != c).then_some((Some(stored), c));
    }
    let t = bs.checked_sub(LEAF_TAIL)?;
    let is_tail = le_u32(block, t) == Some(0)
        && le_u16(block, t + 4) == Some(LEAF_TAIL as u16)
        && block.get(t + 6) == Some(&0)
        && block.get(t + 7) == Some(&TAIL_TYPE);
    if !is_tail {
        return Some((None, 0));
    }
    let c = crc32c(seed, block.get(..t)?);
    let stored = le_u32(block, t + 8)?;
    (stored != c).then_some((Some(stored), c))
}

/// One entry of a directory: the inode number and the entry's type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub inode: u32,
    pub file_type: u8,
}

/// A directory's names and their entries.
pub(super) type Names = HashMap<Vec<u8>, Entry>;

impl InodeTable {
    /// The entries of directory `dir` (without `.` and `..`), sorted by name.
    pub fn entries(&self, dir: &Inode, path: &str) -> Result<Vec<(Vec<u8>, Entry)>> {
        if dir.mode & S_IFMT != S_IFDIR {
            return Err(Error::wrong_type(FS, path, "not a directory"));
        }
        let names = self.directory(dir, path)?;
        let mut out: Vec<(Vec<u8>, Entry)> = names
            .iter()
            .filter(|(n, _)| n.as_slice() != b"." && n.as_slice() != b"..")
            .map(|(n, &e)| (n.clone(), e))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The name -> entry map of a directory: every record of every block
    /// (a linear scan: htree index blocks hold no names), or of the inline
    /// data; each block's checksum checked.
    pub(super) fn directory(&self, dir: &Inode, path: &str) -> Result<Rc<Names>> {
        if let Some(d) = self.dirs.borrow().get(&dir.number) {
            return Ok(d.clone());
        }
        if dir.flags & ENCRYPT_FL != 0 {
            return Err(Error::unsupported(FS, Some(path), "encrypted directory"));
        }
        let filetype = self.sb.filetype();
        let mut raw: Vec<RawEntry> = Vec::new();
        if dir.flags & INLINE_DATA_FL != 0 {
            // i_block: the parent's inode number, then records; then the
            // records of system.data.
            let parent = le_u32(&dir.block, 0).unwrap_or(0);
            if parent != 0 {
                raw.push(RawEntry {
                    name: b"..".to_vec(),
                    inode: parent,
                    file_type: 2,
                });
            }
            parse_records(dir.block.get(4..).unwrap_or(&[]), filetype, &mut raw);
            if let Some(tail) = &dir.inline_tail {
                parse_records(tail, filetype, &mut raw);
            }
        } else {
            let runs = self.runs(dir, path)?;
            let bs = usize::try_from(self.sb.block_size).unwrap_or(1024);
            let seed = inode_seed(self.sb.csum_seed, dir.number, dir.generation);
            let htree = dir.flags & INDEX_FL != 0;
            let mut block = vec![0u8; bs];
            for run in &runs {
                let Some(phys) = run.physical else { continue };
                for b in 0..run.len {
                    let at = (phys + b) * self.sb.block_size;
                    self.read(&mut block, at)?;
                    if self.sb.metadata_csum() {
                        let first = run.logical + b == 0;
                        if let Some((stored, computed)) =
                            block_checksum_mismatch(&block, seed, htree, first)
                        {
                            let detail = match stored {
                                Some(s) => super::inode::checksum(
                                    "directory block",
                                    s.into(),
                                    computed.into(),
                                ),
                                None => Detail::Invalid(format!(
                                    "directory block {} has no room for its checksum",
                                    run.logical + b
                                )),
                            };
                            self.tolerate(path, at, detail)?;
                        }
                    }
                    parse_records(&block, filetype, &mut raw);
                }
            }
        }
        let map: Names = raw
            .into_iter()
            .map(|e| {
                (
                    e.name,
                    Entry {
                        inode: e.inode,
                        file_type: e.file_type,
                    },
                )
            })
            .collect();
        let map = Rc::new(map);
        let mut cached = self.cached_entries.borrow_mut();
        let mut dirs = self.dirs.borrow_mut();
        if *cached + map.len() > DIR_CACHE_ENTRIES {
            dirs.clear();
            *cached = 0;
        }
        *cached += map.len();
        dirs.insert(dir.number, map.clone());
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ino: u32, rec_len: u16, name: &[u8], ft: u8) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&ino.to_le_bytes());
        r.extend_from_slice(&rec_len.to_le_bytes());
        r.push(name.len() as u8);
        r.push(ft);
        r.extend_from_slice(name);
        r.resize(usize::from(rec_len), 0);
        r
    }

    #[test]
    fn records_with_and_without_filetype() {
        let mut b = record(12, 12, b"a", 1);
        b.extend(record(0, 12, b"gone", 1));
        b.extend(record(13, 40, b"bcd", 2));
        let mut out = Vec::new();
        parse_records(&b, true, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].name.as_slice(), out[1].inode, out[1].file_type),
            (&b"bcd"[..], 13, 2)
        );
        // Without filetype the type byte is the high byte of a 16-bit length:
        // here 0x0103, longer than the record: the run ends.
        let mut out = Vec::new();
        parse_records(&b, false, &mut out);
        assert!(out.is_empty());
        // A record past the end stops the scan, no panic.
        let mut out = Vec::new();
        parse_records(&record(5, 200, b"x", 1)[..64], true, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn leaf_tail_checksum() {
        let mut b = record(12, 1012, b"a", 1);
        b.extend(record(0, 12, b"", TAIL_TYPE));
        b[1012 + 6] = 0;
        let c = crc32c(7, &b[..1012]);
        b[1020..1024].copy_from_slice(&c.to_le_bytes());
        assert_eq!(block_checksum_mismatch(&b, 7, false, false), None);
        b[9] ^= 1;
        assert!(block_checksum_mismatch(&b, 7, false, false).is_some());
        // No tail: no room for a checksum.
        let b = record(12, 1024, b"a", 1);
        assert_eq!(
            block_checksum_mismatch(&b, 7, false, false),
            Some((None, 0))
        );
    }
}
