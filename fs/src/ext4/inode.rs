//! Our own small view of ext inodes: path to inode number, the inode's
//! full metadata (number, link count, ctime, crtime, nanoseconds and epoch
//! bits) and the map of a file's data blocks (extents or the block map of
//! ext2/ext3, holes included).
//!
//! `ext4-view` 1.0 exposes none of these: it hides inode numbers, link
//! counts and ctime, and it fails on a hole that spans a whole indirect
//! block (a zero pointer in `i_block[12..15]` or inside a double or triple
//! indirect block: it reads "block 0" and reports a corrupt block read).
//!
//! Every length is bounded by the volume: a pointer past the last block is
//! a [`Corrupt`](crate::ErrorKind::Corrupt) error naming the byte offset of
//! the pointer, and a file cannot map more data or indirect blocks than
//! the volume has.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use diskimage_formats::bytes::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};
use crate::file_system::{components, decode_name, Timestamp};

const FS: FsName = FsName::Ext;
const ROOT_INODE: u32 = 2;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_64BIT: u32 = 0x80;
const EXTENTS_FL: u32 = 0x8_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
const HUGE_FILE_FL: u32 = 0x4_0000;
const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's limit on extent tree depth.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Parsed directories kept for lookups (dropped all at once beyond this).
const DIR_CACHE_ENTRIES: usize = 1 << 20;

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
    /// `i_flags`.
    pub flags: u32,
    /// Access, data change, inode change and birth times.
    pub atime: Timestamp,
    /// Last data modification.
    pub mtime: Timestamp,
    /// Last inode change.
    pub ctime: Timestamp,
    /// Birth time, where the inode is large enough to hold it.
    pub crtime: Option<Timestamp>,
    /// `i_block`: extent tree root or block map root.
    pub block: [u8; 60],
    /// Byte offset of the inode on the volume (for error messages).
    pub offset: u64,
}

/// A run of file blocks: `len` blocks from file block `logical`, at
/// volume block `physical` (`None`: reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub logical: u64,
    pub physical: Option<u64>,
    pub len: u64,
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

/// A directory's names and their inode numbers.
type Names = HashMap<Vec<u8>, u32>;

/// The superblock fields and group-table location needed to find inodes.
pub(crate) struct InodeTable {
    device: Arc<dyn BlockDevice>,
    block_size: u64,
    blocks_count: u64,
    inodes_count: u32,
    inodes_per_group: u32,
    inode_size: u64,
    desc_size: u64,
    desc_table: u64,
    filetype: bool,
    dirs: RefCell<HashMap<u32, Rc<Names>>>,
    cached_entries: RefCell<usize>,
    /// Inode table block by group, as group descriptors are read (at most
    /// one entry per group: bounded by the volume, see `check_group_table`).
    tables: RefCell<HashMap<u64, u64>>,
    /// The inode-table block read last (its offset and bytes): a walk
    /// meets a directory's inodes in runs, several to a block, so most
    /// come from it without a read.
    inode_block: RefCell<Option<(u64, Vec<u8>)>>,
}

fn corrupt(path: &str, what: impl Into<String>) -> Error {
    Error::corrupt(FS, Some(path), what)
}

impl InodeTable {
    /// Reads the superblock; `None` when the journal needs recovery
    /// (the inode table on disk may then be stale: `ext4-view` replays the
    /// journal in memory and stays the only reader).
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Option<Self>> {
        let mut sb = [0u8; 1024];
        device.read_at(&mut sb, 1024).map_err(Error::Device)?;
        let f32 = |off| le_u32(&sb, off).unwrap_or(0);
        let incompat = f32(0x60);
        if incompat & INCOMPAT_RECOVER != 0 {
            return Ok(None);
        }
        let log = f32(0x18);
        if log > 6 {
            return Err(corrupt("/", format!("block size 1024 << {log}")));
        }
        let block_size = 1024u64 << log;
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count =
            u64::from(f32(0x04)) | if is64 { u64::from(f32(0x150)) << 32 } else { 0 };
        let inode_size = match f32(0x4C) {
            0 => 128,
            _ => u64::from(le_u16(&sb, 0x58).unwrap_or(0)),
        };
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return Err(corrupt("/", format!("inode size {inode_size}")));
        }
        let desc_size = match u64::from(le_u16(&sb, 0xFE).unwrap_or(0)) {
            d if is64 && d >= 64 => d,
            _ => 32,
        };
        let inodes_per_group = f32(0x28);
        if inodes_per_group == 0 {
            return Err(corrupt("/", "0 inodes per group"));
        }
        let first_data_block = u64::from(f32(0x14));
        Ok(Some(InodeTable {
            device,
            block_size,
            blocks_count,
            inodes_count: f32(0x00),
            inodes_per_group,
            inode_size,
            desc_size,
            desc_table: (first_data_block + 1) * block_size,
            filetype: incompat & INCOMPAT_FILETYPE != 0,
            dirs: RefCell::new(HashMap::new()),
            cached_entries: RefCell::new(0),
            tables: RefCell::new(HashMap::new()),
            inode_block: RefCell::new(None),
        }))
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The device the volume is on.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.device.read_at(buf, offset).map_err(Error::Device)
    }

    /// The first block of the inode table of `group` (from its group
    /// descriptor, read once).
    fn inode_table(&self, group: u64, path: &str) -> Result<u64> {
        if let Some(&t) = self.tables.borrow().get(&group) {
            return Ok(t);
        }
        let desc_at = self.desc_table + group * self.desc_size;
        let mut desc = vec![0u8; usize::try_from(self.desc_size).unwrap_or(32).min(64)];
        self.read(&mut desc, desc_at)?;
        let desc = desc.as_slice();
        let table = u64::from(le_u32(desc, 0x08).unwrap_or(0))
            | le_u32(desc, 0x28).map_or(0, |h| u64::from(h) << 32);
        if table == 0 || table >= self.blocks_count {
            return Err(corrupt(
                path,
                format!("inode table of group {group} at block {table}"),
            )
            .at(desc_at + 8));
        }
        self.tables.borrow_mut().insert(group, table);
        Ok(table)
    }

    /// The raw inode at `offset`: from the inode-table block read last,
    /// or its block read whole (the inode alone when the block cannot be
    /// read, e.g. on a truncated volume). An inode never crosses a block:
    /// its size is a power of two no larger than a block, checked at open.
    fn inode_bytes(&self, offset: u64) -> Result<Vec<u8>> {
        let size = usize::try_from(self.inode_size).unwrap_or(128);
        let block = offset - offset % self.block_size;
        let within = usize::try_from(offset - block).unwrap_or(0);
        let mut cached = self.inode_block.borrow_mut();
        if cached.as_ref().is_none_or(|(at, _)| *at != block) {
            let mut bytes = vec![0u8; usize::try_from(self.block_size).unwrap_or(1024)];
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

    /// Reads inode `number`.
    pub fn inode(&self, number: u32, path: &str) -> Result<Inode> {
        if number == 0 || number > self.inodes_count {
            return Err(corrupt(
                path,
                format!("inode {number} outside 1..={}", self.inodes_count),
            ));
        }
        let group = u64::from((number - 1) / self.inodes_per_group);
        let index = u64::from((number - 1) % self.inodes_per_group);
        let table = self.inode_table(group, path)?;
        let offset = table * self.block_size + index * self.inode_size;
        let raw = self.inode_bytes(offset)?;
        let u16_at = |o| u32::from(le_u16(&raw, o).unwrap_or(0));
        let u32_at = |o| le_u32(&raw, o).unwrap_or(0);
        let extra_isize = if raw.len() > 128 {
            usize::try_from(u16_at(0x80)).unwrap_or(0)
        } else {
            0
        };
        // A field of the large inode exists if i_extra_isize covers it.
        let extra =
            |o: usize| (o + 4 <= 128 + extra_isize && o + 4 <= raw.len()).then(|| u32_at(o));
        let flags = u32_at(0x20);
        let blocks = u64::from(u32_at(0x1C)) | (u64::from(u16_at(0x74)) << 32);
        let block = diskimage_formats::bytes::array::<60>(&raw, 0x28).unwrap_or([0; 60]);
        Ok(Inode {
            number,
            mode: u16_at(0x00),
            uid: u16_at(0x02) | (u16_at(0x78) << 16),
            gid: u16_at(0x18) | (u16_at(0x7A) << 16),
            size: u64::from(u32_at(0x04)) | (u64::from(u32_at(0x6C)) << 32),
            links: u16::try_from(u16_at(0x1A)).unwrap_or(0),
            allocated: if flags & HUGE_FILE_FL != 0 {
                blocks.saturating_mul(self.block_size)
            } else {
                blocks.saturating_mul(512)
            },
            flags,
            atime: time(u32_at(0x08), extra(0x8C)),
            mtime: time(u32_at(0x10), extra(0x88)),
            ctime: time(u32_at(0x0C), extra(0x84)),
            crtime: extra(0x90).map(|c| time(c, extra(0x94))),
            block,
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
            let number = *entries
                .get(&decode_name(part))
                .ok_or_else(|| Error::not_found(FS, path))?;
            inode = self.inode(number, path)?;
        }
        Ok(inode)
    }

    /// The entries of directory `dir` (without `.` and `..`) with their
    /// inode numbers, sorted by name.
    pub fn entries(&self, dir: &Inode, path: &str) -> Result<Vec<(Vec<u8>, u32)>> {
        if dir.mode & S_IFMT != S_IFDIR {
            return Err(Error::wrong_type(FS, path, "not a directory"));
        }
        let names = self.directory(dir, path)?;
        let mut out: Vec<(Vec<u8>, u32)> = names
            .iter()
            .filter(|(n, _)| n.as_slice() != b"." && n.as_slice() != b"..")
            .map(|(n, &i)| (n.clone(), i))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The name -> inode map of a directory (linear scan of every block:
    /// htree interior blocks hold only empty entries).
    fn directory(&self, dir: &Inode, path: &str) -> Result<Rc<Names>> {
        if let Some(d) = self.dirs.borrow().get(&dir.number) {
            return Ok(d.clone());
        }
        if dir.flags & INLINE_DATA_FL != 0 {
            return Err(Error::unsupported(FS, Some(path), "inline-data directory"));
        }
        let runs = self.runs(dir, path)?;
        let bs = usize::try_from(self.block_size).unwrap_or(1024);
        let mut block = vec![0u8; bs];
        let mut map = HashMap::new();
        for run in &runs {
            let Some(phys) = run.physical else { continue };
            for b in 0..run.len {
                self.read(&mut block, (phys + b) * self.block_size)?;
                let mut at = 0usize;
                while at + 8 <= bs {
                    let ino = le_u32(&block, at).unwrap_or(0);
                    let rec_len = usize::from(le_u16(&block, at + 4).unwrap_or(0));
                    let name_len = if self.filetype {
                        usize::from(block.get(at + 6).copied().unwrap_or(0))
                    } else {
                        usize::from(le_u16(&block, at + 6).unwrap_or(0))
                    };
                    if rec_len < 8 || at + rec_len > bs || 8 + name_len > rec_len {
                        break; // what is left of the block is not entries
                    }
                    if let (true, Some(name)) = (ino != 0, block.get(at + 8..at + 8 + name_len)) {
                        map.insert(name.to_vec(), ino);
                    }
                    at += rec_len;
                }
            }
        }
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

    /// The runs of `inode`'s data blocks up to its size, sorted by file
    /// block; blocks not covered are holes.
    pub fn runs(&self, inode: &Inode, path: &str) -> Result<Vec<Run>> {
        if inode.flags & INLINE_DATA_FL != 0 {
            return Err(Error::unsupported(FS, Some(path), "inline data"));
        }
        let mut walk = Walk {
            table: self,
            path,
            nblocks: inode.size.div_ceil(self.block_size),
            budget: self.blocks_count,
            runs: Vec::new(),
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
            .is_none_or(|end| end > self.table.blocks_count)
        {
            return Err(corrupt(
                self.path,
                format!(
                    "data blocks {block}+{len} past the end of the volume ({} blocks)",
                    self.table.blocks_count
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
        let mut buf = vec![0u8; usize::try_from(self.table.block_size).unwrap_or(1024)];
        self.table.read(&mut buf, block * self.table.block_size)?;
        Ok(buf)
    }

    /// ext2/ext3 block map: 12 direct pointers, then single, double and
    /// triple indirect; a zero pointer at any level is a hole.
    fn block_map(&mut self, root: &[u8; 60], at: u64) -> Result<()> {
        let per = self.table.block_size / 4;
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
        let span = (self.table.block_size / 4).saturating_pow(level - 1);
        let base = ptr * self.table.block_size;
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
                self.extent_node(&block, child * self.table.block_size, depth)?;
            }
        }
        Ok(())
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
