//! Replay of an ext3/ext4 (jbd2) journal that needs recovery, in memory
//! and read-only, following the rules of e2fsck's recovery (the recovery
//! code e2fsprogs shares with the kernel's jbd2).
//!
//! The journal is read through the journal inode's block map or extents
//! (`InodeTable`). The log is scanned from the journal superblock's
//! `s_start` and `s_sequence` in three passes:
//!
//! 1. **scan**: finds the last complete transaction. A transaction ends at
//!    its commit block; the log ends at a block without the journal magic,
//!    with another sequence number, or of an unknown type. With checksums
//!    (v1: a CRC-32 of the transaction's blocks in the commit block; v2/v3:
//!    CRC-32C of each descriptor, revoke and commit block), a commit block
//!    that fails ends the replay before its transaction. A descriptor or
//!    revoke block failing its checksum makes the next commit decide: an
//!    older commit time means stale blocks from an earlier use of the log
//!    (the replay ends there, without error); otherwise the journal is
//!    corrupt and nothing is replayed, as e2fsck does.
//! 2. **revoke**: collects revoke records with the newest transaction
//!    revoking each block.
//! 3. **replay**: each data block tagged in a descriptor is mapped to its
//!    file-system block, unless a revoke record of the same or a later
//!    transaction names it, or (checksum v2/v3) its data fails the tag's
//!    checksum: e2fsck skips that block and replays the others.
//!
//! Descriptor tags of 32 or 64-bit block numbers, the v2 (16-bit) and v3
//! (32-bit) tag checksums, escaped blocks (data that began with the
//! journal magic, stored with it zeroed) and tags with or without their
//! UUID are read; the log wraps from its last block to `s_first`.
//!
//! Nothing is copied and nothing is written: [`Replayed`] is a
//! [`BlockDevice`] over the volume with a map from file-system block to
//! the volume offset of its journal copy, and its superblock has the
//! needs_recovery flag cleared (its checksum redone when it was valid),
//! so readers see the volume as e2fsck leaves it after its replay. What
//! was replayed or skipped is told by [`Replayed::warnings`].
//!
//! Not read: an external journal device (not part of the volume: an
//! [`Unsupported`](crate::ErrorKind::Unsupported) error), fast commits
//! (also unsupported) and journal features this code does not know.
//! A journal whose superblock is unusable (bad magic, checksum, sizes) is
//! not replayed, as e2fsck clears such a journal: the volume is read as
//! it stands, with a warning.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use diskimage_formats::bytes::{be_u16, be_u32, be_u64, le_u32};
use diskimage_formats::{push_extent, BlockDevice, Extent, ExtentKind, FileRange};

use super::blocks::Run;
use super::inode::InodeTable;
use super::superblock::Superblock;
use crate::error::{Error, FsName, Result};

const FS: FsName = FsName::Ext;

/// Superblock fields (little-endian, offsets in the 1,024-byte superblock).
const SB_OFFSET: u64 = 1024;
const SB_SIZE: usize = 1024;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// jbd2 (big-endian) block header and types.
const JBD2_MAGIC: u32 = 0xC03B_3998;
const DESCRIPTOR: u32 = 1;
const COMMIT: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE: u32 = 5;

const COMPAT_CHECKSUM: u32 = 0x1;
const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const KNOWN_INCOMPAT: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;

const FLAG_ESCAPE: u16 = 0x1;
const FLAG_SAME_UUID: u16 = 0x2;
const FLAG_LAST_TAG: u16 = 0x8;

/// `h_chksum_type` of a v1 (CRC-32) commit block, and the journal
/// superblock's `s_checksum_type` for v2/v3 (CRC-32C).
const CRC32_CHKSUM: u8 = 1;
const CRC32_CHKSUM_SIZE: u8 = 4;
const CRC32C_CHKSUM: u8 = 4;

/// Skipped blocks named one by one in the warnings (the rest are counted).
const NAMED_SKIPS: usize = 16;

/// Most revoke records kept (each a distinct block): beyond this the
/// journal is refused rather than a table sized by the log.
const MAX_REVOKES: usize = 1 << 22;

/// Where the replayed content of a file-system block is: the volume
/// offset of its copy in the journal, and whether the copy is escaped
/// (its first four bytes stand for the journal magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Copy {
    at: u64,
    escaped: bool,
}

/// The volume as e2fsck leaves it after replaying its journal: the
/// volume underneath, replayed blocks read from their journal copies, the
/// superblock with needs_recovery cleared. Nothing is written anywhere.
pub struct Replayed {
    inner: Arc<dyn BlockDevice>,
    block_size: u64,
    blocks: BTreeMap<u64, Copy>,
    superblock: Box<[u8; SB_SIZE]>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Replayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayed")
            .field("block_size", &self.block_size)
            .field("blocks", &self.blocks.len())
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Replayed {
    /// What the replay did (transactions, blocks) and what it skipped or
    /// could not do, one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The file-system blocks read from the journal, in order.
    pub fn replayed_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.keys().copied()
    }

    /// Whether `len` bytes from `offset` differ from the volume
    /// underneath: they hold a replayed block or the superblock.
    pub fn touches(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        if len == 0 {
            return false;
        }
        if offset < SB_OFFSET + SB_SIZE as u64 && end > SB_OFFSET {
            return true;
        }
        let first = offset / self.block_size;
        let last = (end - 1) / self.block_size;
        self.blocks.range(first..=last).next().is_some()
    }
}

impl BlockDevice for Replayed {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> diskimage_formats::Result<()> {
        self.read_blocks(buf, offset)?;
        let end = offset.saturating_add(buf.len() as u64);
        // The superblock view over whatever the range holds of it.
        let sb_end = SB_OFFSET + SB_SIZE as u64;
        if offset < sb_end && end > SB_OFFSET {
            let from = offset.max(SB_OFFSET);
            let to = end.min(sb_end);
            let src = self
                .superblock
                .get((from - SB_OFFSET) as usize..(to - SB_OFFSET) as usize);
            let dst = buf.get_mut((from - offset) as usize..(to - offset) as usize);
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// The volume's map, with the replayed blocks and the superblock
    /// (held in memory) as data.
    fn map(&self, offset: u64, len: u64) -> diskimage_formats::Result<Vec<Extent>> {
        let mut out = Vec::new();
        for e in self.inner.map(offset, len)? {
            let (mut at, end) = (e.offset, e.end());
            if e.len == 0 {
                continue;
            }
            let first = at / self.block_size;
            let last = (end - 1) / self.block_size;
            let mut patched: Vec<(u64, u64)> = self
                .blocks
                .range(first..=last)
                .map(|(&b, _)| (b * self.block_size, (b + 1) * self.block_size))
                .collect();
            patched.push((SB_OFFSET, SB_OFFSET + SB_SIZE as u64));
            patched.sort_unstable();
            for (s, t) in patched {
                let (s, t) = (s.max(at), t.min(end));
                if s >= t {
                    continue;
                }
                push_extent(
                    &mut out,
                    Extent {
                        offset: at,
                        len: s - at,
                        kind: e.kind,
                    },
                );
                push_extent(
                    &mut out,
                    Extent {
                        offset: s,
                        len: t - s,
                        kind: ExtentKind::Data,
                    },
                );
                at = t;
            }
            push_extent(
                &mut out,
                Extent {
                    offset: at,
                    len: end - at,
                    kind: e.kind,
                },
            );
        }
        Ok(out)
    }

    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        if self.touches(offset, len) {
            return None;
        }
        self.inner.file_range(offset, len)
    }

    fn verbatim_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        if self.touches(offset, len) {
            return None;
        }
        self.inner.verbatim_range(offset, len)
    }
}

impl Replayed {
    /// The bytes at `offset` with the replayed blocks, without the
    /// superblock view.
    fn read_blocks(&self, buf: &mut [u8], offset: u64) -> diskimage_formats::Result<()> {
        self.inner.read_at(buf, offset)?;
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let end = offset.saturating_add(len);
        let first = offset / self.block_size;
        let last = (end - 1) / self.block_size;
        for (&block, copy) in self.blocks.range(first..=last) {
            let start = block * self.block_size;
            let from = start.max(offset);
            let to = (start + self.block_size).min(end);
            let within = from - start;
            let (Ok(a), Ok(b)) = (usize::try_from(from - offset), usize::try_from(to - offset))
            else {
                continue;
            };
            let Some(dst) = buf.get_mut(a..b) else {
                continue;
            };
            self.inner.read_at(dst, copy.at + within)?;
            if copy.escaped && within < 4 {
                let magic = JBD2_MAGIC.to_be_bytes();
                for (i, byte) in dst.iter_mut().enumerate() {
                    let pos = within + i as u64;
                    if pos >= 4 {
                        break;
                    }
                    *byte = magic.get(pos as usize).copied().unwrap_or(0);
                }
            }
        }
        Ok(())
    }
}

/// The big-endian CRC-32 table (polynomial 0x04C11DB7, MSB first) of v1
/// commit checksums.
const CRC32_BE_TABLE: [u32; 256] = crc_table_msb(0x04C1_1DB7);

#[allow(clippy::indexing_slicing)] // i < 256, checked at compile time
const fn crc_table_msb(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ poly
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// CRC-32C continued from `crc` without the customary inversions (how
/// ext4 and jbd2 chain it: seed, then each field).
fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    diskimage_formats::crc32c::raw(crc, bytes)
}

/// The big-endian CRC-32 continued from `crc`, without inversions.
fn crc32_be(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        let i = usize::from(((crc >> 24) as u8) ^ b);
        crc = CRC32_BE_TABLE.get(i).copied().unwrap_or(0) ^ (crc << 8);
    }
    crc
}

/// CRC-32C of `block` with the four bytes at `hole` read as zeros.
fn crc32c_with_hole(seed: u32, block: &[u8], hole: usize) -> u32 {
    let (before, rest) = block.split_at(hole.min(block.len()));
    let after = rest.get(4..).unwrap_or_default();
    let zeros = [0u8; 4];
    let c = crc32c(seed, before);
    let c = crc32c(c, zeros.get(..rest.len().min(4)).unwrap_or_default());
    crc32c(c, after)
}

/// `a` after `b` in the wrapping transaction-ID order.
fn tid_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The journal as read from its superblock, with the volume offsets of
/// its blocks.
struct Journal {
    device: Arc<dyn BlockDevice>,
    bs: u64,
    /// The journal inode's runs (logical = journal block).
    runs: Vec<Run>,
    first: u32,
    /// `s_maxlen`: the first block past the log.
    last: u32,
    start: u32,
    sequence: u32,
    compat: u32,
    incompat: u32,
    /// CRC-32C of the journal UUID: the seed of v2/v3 checksums.
    seed: u32,
}

/// Why replay stops short of what it could do, as a warning.
struct Skip(String);

impl Journal {
    fn csum_v2or3(&self) -> bool {
        self.incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0
    }

    fn tag_bytes(&self) -> usize {
        if self.incompat & INCOMPAT_CSUM_V3 != 0 {
            return 16;
        }
        let mut n = 12;
        if self.incompat & INCOMPAT_CSUM_V2 != 0 {
            n += 2;
        }
        if self.incompat & INCOMPAT_64BIT == 0 {
            n -= 4;
        }
        n
    }

    /// Bytes at the end of descriptor and revoke blocks for their checksum.
    fn tail(&self) -> usize {
        if self.csum_v2or3() {
            4
        } else {
            0
        }
    }

    /// The volume offset of journal block `n`.
    fn offset_of(&self, n: u32) -> std::result::Result<u64, Skip> {
        let n = u64::from(n);
        let i = self.runs.partition_point(|r| r.logical + r.len <= n);
        match self.runs.get(i) {
            Some(r) if r.logical <= n => match r.physical {
                Some(p) => Ok((p + (n - r.logical)) * self.bs),
                None => Err(Skip(format!(
                    "journal block {n} is a hole of the journal inode"
                ))),
            },
            _ => Err(Skip(format!(
                "journal block {n} is not mapped by the journal inode"
            ))),
        }
    }

    fn read(&self, n: u32) -> std::result::Result<Vec<u8>, Skip> {
        let at = self.offset_of(n)?;
        let mut buf = vec![0u8; self.bs as usize];
        self.device
            .read_at(&mut buf, at)
            .map_err(|e| Skip(format!("journal block {n} unreadable: {e}")))?;
        Ok(buf)
    }

    /// Whether descriptor or revoke block `b` carries a valid v2/v3 tail
    /// checksum (always true without v2/v3).
    fn block_tail_ok(&self, b: &[u8]) -> bool {
        if !self.csum_v2or3() {
            return true;
        }
        let hole = b.len().saturating_sub(4);
        be_u32(b, hole) == Some(crc32c_with_hole(self.seed, b, hole))
    }

    fn commit_ok(&self, b: &[u8]) -> bool {
        if !self.csum_v2or3() {
            return true;
        }
        be_u32(b, 16) == Some(crc32c_with_hole(self.seed, b, 16))
    }

    /// The tags of descriptor block `d`: (fs block, flags, tag offset).
    fn tags(&self, d: &[u8]) -> Vec<(u64, u16, usize)> {
        let tb = self.tag_bytes();
        let end = d.len().saturating_sub(self.tail());
        let mut out = Vec::new();
        let mut at = 12usize;
        while at + tb <= end {
            let flags = be_u16(d, at + 6).unwrap_or(0);
            let low = u64::from(be_u32(d, at).unwrap_or(0));
            let high = if self.incompat & INCOMPAT_64BIT != 0 {
                u64::from(be_u32(d, at + 8).unwrap_or(0))
            } else {
                0
            };
            out.push(((high << 32) | low, flags, at));
            at += tb;
            if flags & FLAG_SAME_UUID == 0 {
                at += 16;
            }
            if flags & FLAG_LAST_TAG != 0 {
                break;
            }
        }
        out
    }

    /// Whether `data` matches the checksum of its tag at `at` in `d`.
    fn tag_ok(&self, d: &[u8], at: usize, sequence: u32, data: &[u8]) -> bool {
        if !self.csum_v2or3() {
            return true;
        }
        let c = crc32c(crc32c(self.seed, &sequence.to_be_bytes()), data);
        if self.incompat & INCOMPAT_CSUM_V3 != 0 {
            be_u32(d, at + 12) == Some(c)
        } else {
            be_u16(d, at + 4) == Some(c as u16)
        }
    }
}

/// What the scan pass found.
struct Scan {
    /// The first transaction not replayed.
    end: u32,
    /// Why the log ends where it does, when not at a clean end.
    note: Option<String>,
}

/// One pass over the log from `s_start`; `end` bounds the revoke and
/// replay passes. Each pass reads at most the log's length of blocks.
enum Pass<'a> {
    Scan,
    Revoke(&'a mut HashMap<u64, u32>),
    Replay(&'a mut Replay),
}

/// What the replay pass gathers.
#[derive(Default)]
struct Replay {
    /// Revoked block -> newest transaction revoking it (the revoke pass).
    revokes: HashMap<u64, u32>,
    blocks: BTreeMap<u64, Copy>,
    replayed: u64,
    revoked: u64,
    bad_checksum: Vec<(u64, u32, u32)>,
    past_end: Vec<(u64, u32)>,
    unreadable: Vec<String>,
}

fn run_pass(
    j: &Journal,
    mut pass: Pass<'_>,
    end: Option<u32>,
    fs_blocks: u64,
) -> std::result::Result<Scan, Skip> {
    let mut next_id = j.sequence;
    let mut block = j.start;
    let log_len = u64::from(j.last - j.first);
    let mut consumed = 0u64;
    let mut crc32_sum = !0u32;
    let mut need_check_commit_time = false;
    let mut last_commit_time = 0u64;
    let mut scan_end: Option<u32> = None;
    let mut note = None;
    let is_scan = matches!(pass, Pass::Scan);
    let advance = |block: &mut u32, n: u64, consumed: &mut u64| -> bool {
        *consumed += n;
        let step = u32::try_from(n % log_len.max(1)).unwrap_or(0);
        let mut b = u64::from(*block) + u64::from(step);
        if b >= u64::from(j.last) {
            b -= log_len;
        }
        *block = u32::try_from(b).unwrap_or(j.first);
        *consumed <= log_len
    };
    loop {
        if let Some(e) = end {
            if !tid_gt(e, next_id) {
                break;
            }
        }
        if consumed >= log_len {
            note = Some(format!(
                "the log runs on past the journal's {log_len} blocks (a cycle): it ends at transaction {next_id}"
            ));
            break;
        }
        let this = block;
        let b = j.read(this)?;
        advance(&mut block, 1, &mut consumed);
        if be_u32(&b, 0) != Some(JBD2_MAGIC) {
            break;
        }
        let blocktype = be_u32(&b, 4).unwrap_or(0);
        if be_u32(&b, 8) != Some(next_id) {
            break;
        }
        match blocktype {
            DESCRIPTOR => {
                if !j.block_tail_ok(&b) {
                    if !is_scan {
                        return Err(Skip(format!(
                            "descriptor block at journal block {this} fails its checksum"
                        )));
                    }
                    need_check_commit_time = true;
                }
                let tags = j.tags(&b);
                match &mut pass {
                    Pass::Scan
                        if j.compat & COMPAT_CHECKSUM != 0
                            && !need_check_commit_time
                            && scan_end.is_none() =>
                    {
                        crc32_sum = crc32_be(crc32_sum, &b);
                        let mut unreadable = None;
                        for _ in &tags {
                            match j.read(block) {
                                Ok(data) => crc32_sum = crc32_be(crc32_sum, &data),
                                Err(Skip(why)) => {
                                    unreadable = Some(why);
                                    break;
                                }
                            }
                            advance(&mut block, 1, &mut consumed);
                        }
                        if let Some(why) = unreadable {
                            note = Some(format!(
                                "transaction {next_id}: {why}: the replay ends before it"
                            ));
                            break;
                        }
                    }
                    Pass::Scan | Pass::Revoke(_) => {
                        if !advance(&mut block, tags.len() as u64, &mut consumed) {
                            note = Some(format!(
                                "transaction {next_id} tags more blocks than the journal holds"
                            ));
                            break;
                        }
                    }
                    Pass::Replay(r) => {
                        for &(fs_block, flags, at) in &tags {
                            let io = block;
                            advance(&mut block, 1, &mut consumed);
                            let data = match j.read(io) {
                                Ok(d) => d,
                                Err(Skip(why)) => {
                                    r.unreadable.push(why);
                                    continue;
                                }
                            };
                            if r.revoked_in(fs_block, next_id) {
                                r.revoked += 1;
                                continue;
                            }
                            if !j.tag_ok(&b, at, next_id, &data) {
                                r.bad_checksum.push((fs_block, io, next_id));
                                continue;
                            }
                            if fs_block >= fs_blocks {
                                r.past_end.push((fs_block, next_id));
                                continue;
                            }
                            let copy = Copy {
                                at: j.offset_of(io)?,
                                escaped: flags & FLAG_ESCAPE != 0,
                            };
                            r.blocks.insert(fs_block, copy);
                            r.replayed += 1;
                        }
                    }
                }
            }
            COMMIT => {
                let commit_time = be_u64(&b, 48).unwrap_or(0);
                if need_check_commit_time {
                    if commit_time >= last_commit_time {
                        return Err(Skip(format!(
                            "transaction {next_id} has a descriptor or revoke block failing its checksum (e2fsck: journal checksum error)"
                        )));
                    }
                    note = Some(format!(
                        "transaction {next_id} fails a checksum and is older than the one before: stale log, the replay ends there"
                    ));
                    break;
                }
                if is_scan {
                    let mut bad = false;
                    if j.compat & COMPAT_CHECKSUM != 0 {
                        if scan_end.is_some() {
                            break;
                        }
                        let found = be_u32(&b, 16).unwrap_or(0);
                        let kind = b.get(12).copied().unwrap_or(0);
                        let size = b.get(13).copied().unwrap_or(0);
                        let ok = (found == crc32_sum
                            && kind == CRC32_CHKSUM
                            && size == CRC32_CHKSUM_SIZE)
                            || (kind == 0 && size == 0 && found == 0);
                        bad = !ok;
                        crc32_sum = !0;
                    }
                    if bad || !j.commit_ok(&b) {
                        if commit_time < last_commit_time {
                            note = Some(format!(
                                "the commit block of transaction {next_id} fails its checksum and is older than the one before: stale log, the replay ends there"
                            ));
                            break;
                        }
                        scan_end = Some(next_id);
                        note = Some(format!(
                            "the commit block of transaction {next_id} (journal block {this}) fails its checksum: the replay ends before it"
                        ));
                        if j.incompat & INCOMPAT_ASYNC_COMMIT == 0 {
                            break;
                        }
                    }
                    last_commit_time = commit_time;
                }
                next_id = next_id.wrapping_add(1);
            }
            REVOKE => {
                if is_scan && !j.block_tail_ok(&b) {
                    need_check_commit_time = true;
                }
                if let Pass::Revoke(table) = &mut pass {
                    scan_revokes(j, &b, next_id, table)
                        .map_err(|why| Skip(format!("journal block {this}: {why}")))?;
                }
            }
            _ => break,
        }
    }
    Ok(Scan {
        end: scan_end.unwrap_or(next_id),
        note,
    })
}

fn scan_revokes(
    j: &Journal,
    b: &[u8],
    sequence: u32,
    table: &mut HashMap<u64, u32>,
) -> std::result::Result<(), String> {
    let count = be_u32(b, 12).unwrap_or(0) as usize;
    if count > b.len().saturating_sub(j.tail()) {
        return Err(format!("revoke block claims {count} bytes"));
    }
    let wide = j.incompat & INCOMPAT_64BIT != 0;
    let len = if wide { 8 } else { 4 };
    let mut at = 16usize;
    while at + len <= count {
        let block = if wide {
            be_u64(b, at).unwrap_or(0)
        } else {
            u64::from(be_u32(b, at).unwrap_or(0))
        };
        at += len;
        let seq = table.entry(block).or_insert(sequence);
        if tid_gt(sequence, *seq) {
            *seq = sequence;
        }
        if table.len() > MAX_REVOKES {
            return Err(format!("more than {MAX_REVOKES} revoked blocks"));
        }
    }
    Ok(())
}

impl Replay {
    /// Whether a revoke record of transaction `sequence` or a later one
    /// names `block`.
    fn revoked_in(&self, block: u64, sequence: u32) -> bool {
        self.revokes
            .get(&block)
            .is_some_and(|&r| !tid_gt(sequence, r))
    }
}

/// The superblock `sb` with needs_recovery cleared, its checksum redone
/// when it had a valid one (metadata_csum).
fn cleared_superblock(sb: &[u8; SB_SIZE]) -> Box<[u8; SB_SIZE]> {
    let mut out = Box::new(*sb);
    let f = |o| le_u32(sb, o).unwrap_or(0);
    let csum = f(0x64) & RO_COMPAT_METADATA_CSUM != 0;
    let valid = csum && !crc32c(!0, sb.get(..0x3FC).unwrap_or_default()) == !f(0x3FC);
    let incompat = f(0x60) & !INCOMPAT_RECOVER;
    if let Some(d) = out.get_mut(0x60..0x64) {
        d.copy_from_slice(&incompat.to_le_bytes());
    }
    if valid {
        let c = crc32c(!0, out.get(..0x3FC).unwrap_or_default());
        if let Some(d) = out.get_mut(0x3FC..0x400) {
            d.copy_from_slice(&c.to_le_bytes());
        }
    }
    out
}

/// The volume `device` with its journal replayed, or `None` when its
/// superblock does not ask for recovery (a clean volume, read as it is).
///
/// An external journal, fast commits and unknown journal features are
/// [`Unsupported`](crate::ErrorKind::Unsupported). A journal that cannot
/// be replayed (its superblock or inode unusable, a checksum error e2fsck
/// also refuses) gives the volume as it stands, with needs_recovery
/// cleared and a warning saying why.
pub fn replay(device: Arc<dyn BlockDevice>) -> Result<Option<Replayed>> {
    let mut sb = [0u8; SB_SIZE];
    device.read_at(&mut sb, SB_OFFSET).map_err(Error::Device)?;
    let f = |o| le_u32(&sb, o).unwrap_or(0);
    if f(0x60) & INCOMPAT_RECOVER == 0 {
        return Ok(None);
    }
    let log = f(0x18);
    if log > 6 {
        return Err(
            Error::corrupt(FS, Some("/"), format!("block size 1024 << {log}")).at(SB_OFFSET + 0x18),
        );
    }
    let bs = 1024u64 << log;
    let blocks_count = u64::from(f(0x04))
        | if f(0x60) & 0x80 != 0 {
            u64::from(f(0x150)) << 32
        } else {
            0
        };
    let mut out = Replayed {
        inner: device.clone(),
        block_size: bs,
        blocks: BTreeMap::new(),
        superblock: cleared_superblock(&sb),
        warnings: Vec::new(),
    };
    if f(0x5C) & COMPAT_HAS_JOURNAL == 0 || f(0x60) & INCOMPAT_JOURNAL_DEV != 0 {
        out.warnings.push(
            "ext journal: needs_recovery is set but the volume has no journal; read as it stands (e2fsck clears the flag)".into(),
        );
        return Ok(Some(out));
    }
    let inum = f(0xE0);
    if inum == 0 {
        return Err(Error::unsupported(
            FS,
            None,
            format!(
                "the journal needing recovery is on an external device (device number {:#x}), not part of this volume",
                f(0xE4)
            ),
        ));
    }
    match load(device.clone(), &out, inum, bs) {
        Ok(j) => {
            if j.start == 0 {
                out.warnings.push(
                    "ext journal: needs_recovery is set but the journal is empty; nothing to replay".into(),
                );
                return Ok(Some(out));
            }
            let unknown = j.incompat & !KNOWN_INCOMPAT;
            if unknown != 0 {
                return Err(Error::unsupported(
                    FS,
                    None,
                    format!("the journal needing recovery has incompatible features {unknown:#x} this version does not know"),
                ));
            }
            if j.incompat & INCOMPAT_FAST_COMMIT != 0 {
                return Err(Error::unsupported(
                    FS,
                    None,
                    "the journal needing recovery uses fast commits, which are not replayed by this version",
                ));
            }
            match recover(&j, blocks_count) {
                Ok((replay, warnings)) => {
                    out.blocks = replay.blocks;
                    out.warnings = warnings;
                    // The superblock as replayed (the journal often logs
                    // it), then cleared.
                    let mut now = [0u8; SB_SIZE];
                    out.read_blocks(&mut now, SB_OFFSET)
                        .map_err(Error::Device)?;
                    out.superblock = cleared_superblock(&now);
                }
                Err(Skip(why)) => out.warnings.push(format!(
                    "ext journal: not replayed ({why}); the volume is read as it stands"
                )),
            }
        }
        Err(Skip(why)) => out.warnings.push(format!(
            "ext journal: not replayed ({why}); the volume is read as it stands (e2fsck clears such a journal)"
        )),
    }
    Ok(Some(out))
}

/// Reads the journal superblock through inode `inum`, checked as
/// e2fsck checks it before a replay.
fn load(
    device: Arc<dyn BlockDevice>,
    view: &Replayed,
    inum: u32,
    bs: u64,
) -> std::result::Result<Journal, Skip> {
    // Our inode layer over the volume with needs_recovery cleared (it
    // refuses a volume that needs recovery): the journal inode as stored.
    let plain: Arc<dyn BlockDevice> = Arc::new(Replayed {
        inner: device.clone(),
        block_size: bs,
        blocks: BTreeMap::new(),
        superblock: view.superblock.clone(),
        warnings: Vec::new(),
    });
    let sb =
        Superblock::parse(&view.superblock[..]).map_err(|e| Skip(format!("superblock: {e}")))?;
    let table =
        InodeTable::open(plain, sb, false).map_err(|e| Skip(format!("inode table: {e}")))?;
    let path = "<journal inode>";
    let inode = table
        .inode(inum, path)
        .map_err(|e| Skip(format!("journal inode {inum}: {e}")))?;
    let runs = table
        .runs(&inode, path)
        .map_err(|e| Skip(format!("journal inode {inum}: {e}")))?;
    let inode_blocks = inode.size / bs;
    let mut j = Journal {
        device,
        bs,
        runs,
        first: 0,
        last: 1,
        start: 0,
        sequence: 0,
        compat: 0,
        incompat: 0,
        seed: 0,
    };
    let jsb = j.read(0)?;
    let g = |o| be_u32(&jsb, o).unwrap_or(0);
    if g(0) != JBD2_MAGIC {
        return Err(Skip("journal superblock without the jbd2 magic".into()));
    }
    let version = g(4);
    if version != SUPERBLOCK_V1 && version != SUPERBLOCK_V2 {
        return Err(Skip(format!("journal superblock of block type {version}")));
    }
    if u64::from(g(0xC)) != bs {
        return Err(Skip(format!(
            "journal block size {} differs from the file system's {bs}",
            g(0xC)
        )));
    }
    let (maxlen, first) = (g(0x10), g(0x14));
    if u64::from(maxlen) > inode_blocks {
        return Err(Skip(format!(
            "journal of {maxlen} blocks in a journal inode of {inode_blocks}"
        )));
    }
    if first == 0 || first >= maxlen {
        return Err(Skip(format!(
            "journal log from block {first} in a journal of {maxlen} blocks"
        )));
    }
    j.first = first;
    j.last = maxlen;
    j.sequence = g(0x18);
    j.start = g(0x1C);
    if version == SUPERBLOCK_V2 {
        j.compat = g(0x24);
        j.incompat = g(0x28);
        if j.incompat & INCOMPAT_CSUM_V2 != 0 && j.incompat & INCOMPAT_CSUM_V3 != 0 {
            return Err(Skip("journal claims checksums v2 and v3".into()));
        }
        if j.csum_v2or3() {
            if j.compat & COMPAT_CHECKSUM != 0 {
                return Err(Skip("journal claims checksums v1 and v2/v3".into()));
            }
            if jsb.get(0x50).copied() != Some(CRC32C_CHKSUM) {
                return Err(Skip("journal checksum type is not CRC-32C".into()));
            }
            let sb = jsb.get(..1024).unwrap_or_default();
            if be_u32(&jsb, 0xFC) != Some(crc32c_with_hole(!0, sb, 0xFC)) {
                return Err(Skip("journal superblock fails its checksum".into()));
            }
        }
        j.seed = crc32c(!0, jsb.get(0x30..0x40).unwrap_or_default());
    }
    if j.start != 0 && (j.start < first || j.start >= maxlen) {
        return Err(Skip(format!(
            "journal log starts at block {} outside {first}..{maxlen}",
            j.start
        )));
    }
    Ok(j)
}

/// The three passes; the replayed blocks and the warnings telling them.
fn recover(j: &Journal, fs_blocks: u64) -> std::result::Result<(Replay, Vec<String>), Skip> {
    let scan = run_pass(j, Pass::Scan, None, fs_blocks)?;
    let mut revokes = HashMap::new();
    run_pass(j, Pass::Revoke(&mut revokes), Some(scan.end), fs_blocks)?;
    let mut replay = Replay {
        revokes,
        ..Replay::default()
    };
    run_pass(j, Pass::Replay(&mut replay), Some(scan.end), fs_blocks)?;
    let count = scan.end.wrapping_sub(j.sequence);
    let which = match count {
        0 => format!(
            "no transaction (the log ends at transaction {})",
            j.sequence
        ),
        1 => format!("1 transaction ({})", j.sequence),
        n => format!(
            "{n} transactions ({} to {})",
            j.sequence,
            scan.end.wrapping_sub(1)
        ),
    };
    let mut w = vec![format!(
        "ext journal: replayed {which} from journal block {}: {} block(s) logged, {} file-system block(s) read from the journal, {} revoked",
        j.start,
        replay.replayed + replay.revoked + replay.bad_checksum.len() as u64,
        replay.blocks.len(),
        replay.revoked
    )];
    if let Some(n) = scan.note {
        w.push(format!("ext journal: {n}"));
    }
    for (i, (b, io, t)) in replay.bad_checksum.iter().enumerate() {
        if i == NAMED_SKIPS {
            w.push(format!(
                "ext journal: and {} more block(s) skipped for a bad checksum",
                replay.bad_checksum.len() - NAMED_SKIPS
            ));
            break;
        }
        w.push(format!(
            "ext journal: skipped file-system block {b} of transaction {t} (journal block {io}): its data fails the tag checksum, as e2fsck skips it"
        ));
    }
    for (b, t) in replay.past_end.iter().take(NAMED_SKIPS) {
        w.push(format!(
            "ext journal: skipped file-system block {b} of transaction {t}: past the end of the volume"
        ));
    }
    for why in replay.unreadable.iter().take(NAMED_SKIPS) {
        w.push(format!("ext journal: skipped a block: {why}"));
    }
    Ok((replay, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_values() {
        // CRC-32C ("123456789" -> 0xE3069283 with the usual inversions).
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        // CRC-32/MPEG-2: the big-endian CRC-32 from !0 without a final
        // inversion, as jbd2's v1 commit checksum chains it.
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn transaction_ids_wrap() {
        assert!(tid_gt(1, 0));
        assert!(tid_gt(0, u32::MAX));
        assert!(!tid_gt(5, 5));
        assert!(!tid_gt(u32::MAX, 0));
    }

    #[test]
    fn tag_sizes_follow_the_features() {
        let mut j = Journal {
            device: Arc::new(diskimage_formats::MemoryDevice::new(vec![0; 4096])),
            bs: 1024,
            runs: Vec::new(),
            first: 1,
            last: 4,
            start: 0,
            sequence: 0,
            compat: 0,
            incompat: 0,
            seed: 0,
        };
        assert_eq!(j.tag_bytes(), 8);
        j.incompat = INCOMPAT_64BIT;
        assert_eq!(j.tag_bytes(), 12);
        j.incompat = INCOMPAT_CSUM_V2;
        assert_eq!(j.tag_bytes(), 10);
        j.incompat = INCOMPAT_CSUM_V2 | INCOMPAT_64BIT;
        assert_eq!(j.tag_bytes(), 14);
        j.incompat = INCOMPAT_CSUM_V3;
        assert_eq!(j.tag_bytes(), 16);
        // A descriptor: one tag with its UUID, one SAME_UUID + LAST_TAG.
        j.incompat = 0;
        let mut d = vec![0u8; 1024];
        d[12..16].copy_from_slice(&7u32.to_be_bytes());
        let second = 12 + 8 + 16;
        d[second..second + 4].copy_from_slice(&9u32.to_be_bytes());
        d[second + 6..second + 8]
            .copy_from_slice(&(FLAG_SAME_UUID | FLAG_LAST_TAG | FLAG_ESCAPE).to_be_bytes());
        let tags = j.tags(&d);
        assert_eq!(tags.len(), 2);
        assert_eq!((tags[0].0, tags[1].0), (7, 9));
        assert_eq!(tags[1].1 & FLAG_ESCAPE, FLAG_ESCAPE);
    }
}
