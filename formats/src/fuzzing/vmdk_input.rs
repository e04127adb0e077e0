//! The input encoding of the `vmdk_structured` fuzz target: a recipe that
//! builds a consistent hosted sparse or streamOptimized extent, so that
//! mutations reach grain directories, grain tables, markers and grains
//! instead of stopping at the header checks, as most raw byte flips of a
//! real image do.
//!
//! The recipe is read a byte at a time (0 once it runs out):
//!
//! 1. flags: [`STREAM`], [`FOOTER_GD`], [`ZEROED_GTE`], [`REDUNDANT_GD`],
//!    [`DESCRIPTOR`], [`DAMAGED_GD`], [`NO_FOOTER`], [`PATCHES`];
//! 2. grain size `8 << (b % 5)` sectors (4 to 64 KiB), grain-table length
//!    `4 << (b % 8)` entries (4 to 512), and a grain count `1 + b % 48`;
//!    the capacity falls `b % grain` sectors short of the last grain;
//! 3. one byte per grain: its state (`b % 4`: absent, zeroed, data, damaged)
//!    and, for data, the fill pattern; a damaged grain points at a sector
//!    taken from the recipe (hosted sparse) or has a marker with a wrong LBA,
//!    a wrong size, or random bytes for its deflate stream (stream);
//! 4. with [`PATCHES`], what is left is `offset u32 LE, byte` records
//!    written over the finished file.
//!
//! [`expand_fuzz_input`] also returns the disk the recipe describes when
//! every part of it is well formed (no damaged grain, no damaged directory
//! without a redundant one, no patch): the target then checks that the
//! image opens and reads exactly that.

use std::path::PathBuf;
use std::sync::Arc;

use crate::block_device::BlockDevice;
use crate::context::MemoryFiles;
use crate::options::OpenOptions;
use crate::probe::open_in_memory;
use crate::vmdk::sparse_header::{
    COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_TEST, FLAG_ZEROED_GRAIN_GTE,
    GD_AT_END, SECTOR, SPARSE_MAGIC,
};

/// Flag bit: a streamOptimized extent (compressed grains, markers).
pub const STREAM: u8 = 1 << 0;
/// Flag bit (stream): the header's `gdOffset` is -1 and the footer's is used.
pub const FOOTER_GD: u8 = 1 << 1;
/// Flag bit (hosted sparse): grain-table entry 1 means a zeroed grain.
pub const ZEROED_GTE: u8 = 1 << 2;
/// Flag bit (hosted sparse): a redundant grain directory and tables.
pub const REDUNDANT_GD: u8 = 1 << 3;
/// Flag bit: an embedded descriptor naming the file itself.
pub const DESCRIPTOR: u8 = 1 << 4;
/// Flag bit (hosted sparse): the primary grain directory is zeroed.
pub const DAMAGED_GD: u8 = 1 << 5;
/// Flag bit (stream): the footer and end-of-stream marker are left out.
pub const NO_FOOTER: u8 = 1 << 6;
/// Flag bit: the rest of the recipe patches the finished file.
pub const PATCHES: u8 = 1 << 7;

/// Most grains a recipe makes.
pub const MAX_GRAINS: u8 = 48;

const SECTOR_BYTES: usize = SECTOR as usize;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// A file built from a recipe and, when it is well formed, its disk.
pub struct FuzzVmdk {
    /// The bytes of `disk.vmdk`.
    pub file: Vec<u8>,
    /// The virtual disk the file must read as, when the recipe left it
    /// well formed.
    pub expected: Option<Vec<u8>>,
}

struct Recipe<'a>(&'a [u8]);

impl Recipe<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

fn put(file: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if file.len() < at + bytes.len() {
        file.resize(at + bytes.len(), 0);
    }
    if let Some(dst) = file.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn pad_to_sector(file: &mut Vec<u8>) {
    file.resize(file.len().div_ceil(SECTOR_BYTES) * SECTOR_BYTES, 0);
}

fn sectors(file: &[u8]) -> u64 {
    (file.len() / SECTOR_BYTES) as u64
}

/// A zlib stream (RFC 1950) of stored deflate blocks holding `data`.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut chunks = data.chunks(0xFFFF).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

#[allow(clippy::too_many_arguments)]
fn header(
    version: u32,
    flags: u32,
    capacity: u64,
    grain: u64,
    descriptor: (u64, u64),
    gtes: u32,
    rgd: u64,
    gd: u64,
    overhead: u64,
) -> [u8; SECTOR_BYTES] {
    let mut h = [0u8; SECTOR_BYTES];
    h[0..4].copy_from_slice(&SPARSE_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&version.to_le_bytes());
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&grain.to_le_bytes());
    h[28..36].copy_from_slice(&descriptor.0.to_le_bytes());
    h[36..44].copy_from_slice(&descriptor.1.to_le_bytes());
    h[44..48].copy_from_slice(&gtes.to_le_bytes());
    h[48..56].copy_from_slice(&rgd.to_le_bytes());
    h[56..64].copy_from_slice(&gd.to_le_bytes());
    h[64..72].copy_from_slice(&overhead.to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    if flags & FLAG_COMPRESSED != 0 {
        h[77..79].copy_from_slice(&COMPRESSION_DEFLATE.to_le_bytes());
    }
    h
}

fn descriptor_text(stream: bool, capacity: u64) -> Vec<u8> {
    let create = if stream {
        "streamOptimized"
    } else {
        "monolithicSparse"
    };
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"{create}\"\n\n# Extent description\nRW {capacity} SPARSE \"disk.vmdk\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.adapterType = \"ide\"\n"
    )
    .into_bytes()
}

/// What one grain of the recipe holds.
enum GrainPlan {
    Absent,
    Zeroed,
    Data(u8),
    Damaged(u8, u32),
}

/// Builds the file (and, when well formed, the disk) a recipe describes
/// (see the module documentation).
pub fn expand_fuzz_input(data: &[u8]) -> FuzzVmdk {
    let mut r = Recipe(data);
    let flags = r.byte();
    let stream = flags & STREAM != 0;
    let grain = 8u64 << (r.byte() % 5);
    let gtes = 4u32 << (r.byte() % 8);
    let count = u64::from(1 + r.byte() % MAX_GRAINS);
    let short = u64::from(r.byte()) % grain;
    let capacity = count * grain - short;
    let grain_bytes = (grain * SECTOR) as usize;
    let plans: Vec<GrainPlan> = (0..count)
        .map(|_| {
            let b = r.byte();
            match b % 4 {
                0 => GrainPlan::Absent,
                1 => GrainPlan::Zeroed,
                2 => GrainPlan::Data(b),
                _ => GrainPlan::Damaged(b, r.u32()),
            }
        })
        .collect();
    let tables = count.div_ceil(u64::from(gtes)) as usize;
    let mut well_formed = true;
    let mut disk = vec![0u8; (capacity * SECTOR) as usize];
    let fill = |b: u8, index: u64| -> Vec<u8> {
        (0..grain_bytes)
            .map(|i| {
                b.wrapping_add((i / 256) as u8)
                    .wrapping_mul((index as u8) | 1)
            })
            .collect()
    };

    let mut file = vec![0u8; SECTOR_BYTES];
    let desc = if flags & DESCRIPTOR != 0 {
        let text = descriptor_text(stream, capacity);
        let at = file.len();
        put(&mut file, at, &text);
        pad_to_sector(&mut file);
        (1, sectors(&file) - 1)
    } else {
        (0, 0)
    };

    let mut gd = vec![0u32; tables];
    // Every grain table, one after the other: grain i's entry is gts[i].
    let mut gts = vec![0u32; tables * gtes as usize];
    let gd_sectors = (tables as u64 * 4).div_ceil(SECTOR);
    let table_sectors = (u64::from(gtes) * 4).div_ceil(SECTOR);
    let gd_sector;
    let mut rgd_sector = 0;
    let overhead;
    if stream {
        // Grains start at sector 2 at the earliest: a table entry of 1 is
        // read as "zeroed grain" (or refused without the header flag), never
        // as a grain at sector 1.
        file.resize(file.len().max(2 * SECTOR_BYTES), 0);
        overhead = sectors(&file);
        for (i, plan) in plans.iter().enumerate() {
            let i = i as u64;
            let at = file.len();
            let content = match plan {
                GrainPlan::Absent | GrainPlan::Zeroed => continue,
                GrainPlan::Data(b) | GrainPlan::Damaged(b, _) => fill(*b, i),
            };
            let mut lba = i * grain;
            let mut z = zlib_stored(&content);
            let mut size = z.len() as u32;
            if let GrainPlan::Damaged(b, v) = plan {
                well_formed = false;
                match (b / 4) % 3 {
                    0 => lba = u64::from(*v),
                    1 => size = *v,
                    _ => {
                        let n = z.len().min(64);
                        let key = v.to_le_bytes();
                        for (x, k) in z.iter_mut().take(n).skip(2).zip(key.iter().cycle()) {
                            *x ^= k;
                        }
                    }
                }
            }
            put(&mut file, at, &lba.to_le_bytes());
            put(&mut file, at + 8, &size.to_le_bytes());
            put(&mut file, at + 12, &z);
            pad_to_sector(&mut file);
            let start = (i * grain * SECTOR) as usize;
            copy_into(&mut disk, start, &content);
            if let Some(e) = gts.get_mut(i as usize) {
                *e = (at / SECTOR_BYTES) as u32;
            }
        }
        for (t, gt) in gts.chunks(gtes as usize).enumerate() {
            if gt.iter().all(|&e| e == 0) {
                continue;
            }
            marker(&mut file, table_sectors, MARKER_GT);
            let at = sectors(&file);
            if let Some(e) = gd.get_mut(t) {
                *e = at as u32;
            }
            put_table_at(&mut file, at, gt);
        }
        marker(&mut file, gd_sectors, MARKER_GD);
        gd_sector = sectors(&file);
        put_table_at(&mut file, gd_sector, &gd);
    } else {
        // Hosted sparse: directories, then tables, then grains.
        let copies = if flags & REDUNDANT_GD != 0 { 2 } else { 1 };
        let meta = sectors(&file);
        let meta_len = copies * (gd_sectors + tables as u64 * table_sectors);
        let grains_at = meta + meta_len;
        let mut next = grains_at;
        let mut payload = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let i = i as u64;
            let entry = match plan {
                GrainPlan::Absent => 0,
                GrainPlan::Zeroed => {
                    if flags & ZEROED_GTE == 0 {
                        // Entry 1 is then a grain at sector 1.
                        well_formed = false;
                    }
                    1
                }
                GrainPlan::Data(b) => {
                    let content = fill(*b, i);
                    let start = (i * grain * SECTOR) as usize;
                    copy_into(&mut disk, start, &content);
                    payload.extend_from_slice(&content);
                    let at = next;
                    next += grain;
                    at as u32
                }
                GrainPlan::Damaged(_, v) => {
                    well_formed = false;
                    *v
                }
            };
            if let Some(e) = gts.get_mut(i as usize) {
                *e = entry;
            }
        }
        // Each copy: its directory, then its tables; grains after both.
        let mut dir_ats = Vec::new();
        for c in 0..copies {
            let dir_at = meta + c * (gd_sectors + tables as u64 * table_sectors);
            let dir: Vec<u32> = (0..tables as u64)
                .map(|t| (dir_at + gd_sectors + t * table_sectors) as u32)
                .collect();
            put_table_at(&mut file, dir_at, &dir);
            for (gt, &gt_at) in gts.chunks(gtes as usize).zip(&dir) {
                put_table_at(&mut file, u64::from(gt_at), gt);
            }
            dir_ats.push(dir_at);
        }
        file.resize((grains_at * SECTOR) as usize, 0);
        file.extend_from_slice(&payload);
        // The redundant copy comes first, as VMware writes it.
        gd_sector = dir_ats.last().copied().unwrap_or(meta);
        if copies == 2 {
            rgd_sector = dir_ats.first().copied().unwrap_or(0);
        }
        if flags & DAMAGED_GD != 0 {
            // Tables past the end of the file: the redundant directory, if
            // any, must be used instead.
            put_table_at(&mut file, gd_sector, &vec![u32::MAX - 15; tables]);
            well_formed &= copies == 2;
        }
        overhead = grains_at;
    }

    let version = if stream { 3 } else { 1 };
    let hflags = if stream {
        FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS
    } else {
        FLAG_NEWLINE_TEST
            | if flags & ZEROED_GTE != 0 {
                FLAG_ZEROED_GRAIN_GTE
            } else {
                0
            }
    };
    let head_gd = if stream && flags & FOOTER_GD != 0 {
        GD_AT_END
    } else {
        gd_sector
    };
    let h = header(
        version, hflags, capacity, grain, desc, gtes, rgd_sector, head_gd, overhead,
    );
    put(&mut file, 0, &h);
    if stream && flags & NO_FOOTER == 0 {
        marker(&mut file, 1, MARKER_FOOTER);
        let footer = header(
            version, hflags, capacity, grain, desc, gtes, 0, gd_sector, overhead,
        );
        file.extend_from_slice(&footer);
        file.extend_from_slice(&[0u8; SECTOR_BYTES]);
    } else if stream && flags & FOOTER_GD != 0 {
        well_formed = false;
    }

    if flags & PATCHES != 0 {
        while r.0.len() >= 5 {
            let at = r.u32() as usize;
            let b = r.byte();
            if !file.is_empty() {
                let at = at % file.len();
                if let Some(x) = file.get_mut(at) {
                    *x = b;
                }
                well_formed = false;
            }
        }
    }
    FuzzVmdk {
        file,
        expected: well_formed.then_some(disk),
    }
}

/// A marker sector: `numSectors`, `size` 0, `type`, padding.
fn marker(file: &mut Vec<u8>, num_sectors: u64, kind: u32) {
    let mut m = [0u8; SECTOR_BYTES];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    file.extend_from_slice(&m);
}

/// Writes a table of u32 entries at `sector` (the end of the file, to
/// append) and pads the file to a whole sector.
fn put_table_at(file: &mut Vec<u8>, sector: u64, entries: &[u32]) {
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    put(file, (sector * SECTOR) as usize, &bytes);
    pad_to_sector(file);
}

/// The body of the `vmdk_structured` target: the recipe's file through
/// [`crate::fuzzing::exercise`], then, when the recipe was well formed, a
/// check that it opens and reads as the disk it describes.
///
/// # Panics
/// When a well-formed file does not open or reads differently from its
/// disk, or when the exercise finds a broken contract.
pub fn check_fuzz_input(data: &[u8]) {
    let made = expand_fuzz_input(data);
    crate::fuzzing::exercise("disk.vmdk", &made.file);
    let Some(disk) = made.expected else {
        return;
    };
    let name = PathBuf::from("disk.vmdk");
    let mem: MemoryFiles = [(name.clone(), Arc::from(made.file.as_slice()))]
        .into_iter()
        .collect();
    let img = open_in_memory(&name, &mem, &OpenOptions::default());
    assert!(img.is_ok(), "a well-formed recipe did not open: {img:?}");
    let Ok(img) = img else { return };
    assert_eq!(img.size(), disk.len() as u64, "virtual size");
    let mut got = vec![0u8; disk.len()];
    let read = img.read_at(&mut got, 0);
    assert!(read.is_ok(), "a well-formed recipe did not read: {read:?}");
    let first = got.iter().zip(&disk).position(|(a, b)| a != b);
    assert!(
        first.is_none(),
        "byte {first:?} reads otherwise than the recipe wrote"
    );
}

/// Copies `bytes` into `disk` from `start`, as far as the disk goes.
fn copy_into(disk: &mut [u8], start: usize, bytes: &[u8]) {
    if let Some(dst) = disk.get_mut(start..) {
        let n = dst.len().min(bytes.len());
        if let (Some(d), Some(b)) = (dst.get_mut(..n), bytes.get(..n)) {
            d.copy_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn stored_zlib_streams_inflate_with_flate2() {
        for len in [0usize, 1, 65535, 65536, 70000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(zlib_stored(&data).as_slice())
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{len} bytes");
        }
    }

    /// Recipes from a fixed pseudo-random sequence, without patches; every
    /// other one has no damaged grain.
    fn recipes(n: usize) -> impl Iterator<Item = Vec<u8>> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n).map(move |k| {
            let clean = k % 2 == 0;
            (0..80)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .enumerate()
                .map(|(i, b)| match i {
                    0 => b & !PATCHES,
                    // Every other recipe has no damaged grain.
                    5.. if clean && b % 4 == 3 => b ^ 1,
                    _ => b,
                })
                .collect()
        })
    }

    #[test]
    fn well_formed_recipes_of_both_kinds_open_and_read_as_their_disk() {
        let (mut stream, mut sparse) = (0, 0);
        for r in recipes(200) {
            let made = expand_fuzz_input(&r);
            if made.expected.is_some() {
                if r[0] & STREAM != 0 {
                    stream += 1;
                } else {
                    sparse += 1;
                }
            }
            check_fuzz_input(&r);
        }
        assert!(
            stream >= 20 && sparse >= 20,
            "{stream} stream, {sparse} sparse"
        );
    }

    #[test]
    fn a_damaged_primary_directory_falls_back_to_the_redundant_one() {
        let mut r = vec![REDUNDANT_GD | DAMAGED_GD | ZEROED_GTE, 0, 0, 5, 3];
        r.extend([2, 1, 6, 0, 10, 14]);
        let made = expand_fuzz_input(&r);
        let disk = made.expected.clone().expect("well formed");
        assert!(disk.iter().any(|&b| b != 0));
        check_fuzz_input(&r);
        r[0] &= !REDUNDANT_GD;
        assert!(expand_fuzz_input(&r).expected.is_none());
    }
}
