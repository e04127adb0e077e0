//! BSD disklabels (FreeBSD, NetBSD, OpenBSD, 386BSD): on the whole disk,
//! or inside an MBR slice of type 0xA5 (FreeBSD), 0xA6 (OpenBSD) or 0xA9
//! (NetBSD).
//!
//! Layout (`struct disklabel`, `sys/disklabel.h`), in the byte order of
//! the machine that wrote it (found from the magic):
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `d_magic` | 0x82564557 |
//! | 8, 24 | `d_typename[16]`, `d_packname[16]` | text |
//! | 40 | `d_secsize` | bytes per sector the offsets count |
//! | 60 | `d_secperunit` | sectors of the disk |
//! | 132 | `d_magic2` | 0x82564557 again |
//! | 136 | `d_checksum` | XOR of the label's 16-bit words is 0 |
//! | 138 | `d_npartitions` | entries that follow |
//! | 148 | `d_partitions[]` | 16 bytes each: `p_size`, `p_offset` (u32), `p_fsize` (u32), `p_fstype`, `p_frag` (u8), `p_cpg` (u16) |
//!
//! The label is at byte 0 of sector 1 (i386/amd64 FreeBSD, NetBSD,
//! OpenBSD; inside a slice, sector 1 of the slice) or at byte 64 of
//! sector 0 (Alpha, and GNU parted's `mklabel bsd`).
//!
//! Partition offsets count sectors from the start of the disk in NetBSD
//! and OpenBSD labels and in FreeBSD labels of old; a FreeBSD label whose
//! raw partition `c` starts at 0 inside a slice that does not (what
//! FreeBSD 5 and later write) counts from the slice's start instead, as
//! FreeBSD's GEOM reads it. (TSK's `mmls -t bsd -o SLICE` prints the
//! stored values as they are.)

use diskimage_formats::bytes::{be_u16, be_u32, has_at, le_u16, le_u32};
use diskimage_formats::BlockDevice;

use super::{read_bytes, Partition, PartitionKind};
use crate::error::{Detail, Error, Result, Scheme};

/// The disklabel magic, `d_magic` and `d_magic2`.
pub const DISKMAGIC: u32 = 0x8256_4557;
/// The MBR types of slices that hold a BSD disklabel.
pub const SLICE_TYPES: [u8; 3] = [0xA5, 0xA6, 0xA9];
/// Offset of `d_magic2`.
const MAGIC2_OFFSET: usize = 132;
/// Offset of `d_npartitions`.
const NPARTITIONS_OFFSET: usize = 138;
/// Offset of the first partition entry.
const PARTITIONS_OFFSET: usize = 148;
/// Bytes of one partition entry.
const PARTITION_LEN: usize = 16;
/// Offset of `d_secsize`.
const SECSIZE_OFFSET: usize = 40;
/// Index of the raw partition `c`.
const RAW_PART: usize = 2;
/// Where a label may be: (sector, byte offset in it).
const LOCATIONS: [(u64, usize); 2] = [(1, 0), (0, 64)];
/// Bytes read at a label's location: the label's whole sector.
const SECTOR_LEN: usize = 512;

/// The byte order a label was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        match self {
            Order::Little => le_u16(b, at),
            Order::Big => be_u16(b, at),
        }
        .unwrap_or(0)
    }
    fn u32(self, b: &[u8], at: usize) -> u32 {
        match self {
            Order::Little => le_u32(b, at),
            Order::Big => be_u32(b, at),
        }
        .unwrap_or(0)
    }
}

/// One `d_partitions` entry, raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BsdPartition {
    /// Slot (0 = `a`).
    pub slot: usize,
    /// `p_size`, sectors.
    pub size: u32,
    /// `p_offset`, sectors.
    pub offset: u32,
    /// `p_fstype`.
    pub fstype: u8,
}

/// A disklabel read from a sector, before its offsets are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disklabel {
    /// Byte offset of the label on the device.
    pub at: u64,
    /// `d_secsize` (the device's sector size when the label stores 0).
    pub sector_size: u64,
    /// `d_typename`, trimmed.
    pub type_name: String,
    /// Every entry of `d_partitions`, empty ones included.
    pub partitions: Vec<BsdPartition>,
    /// Whether `d_checksum` makes the label's words XOR to 0.
    pub checksum_ok: bool,
}

/// Parses a label from `sector` (the sector holding it) at byte `off`;
/// `None` when neither byte order gives the magic twice.
fn parse(sector: &[u8], off: usize, at: u64, device_sector: u64) -> Result<Option<Disklabel>> {
    let Some(label) = sector.get(off..) else {
        return Ok(None);
    };
    let order = if le_u32(label, 0) == Some(DISKMAGIC) {
        Order::Little
    } else if be_u32(label, 0) == Some(DISKMAGIC) {
        Order::Big
    } else {
        return Ok(None);
    };
    if order.u32(label, MAGIC2_OFFSET) != DISKMAGIC {
        return Err(Error::corrupt(
            Scheme::Bsd,
            Detail::BadSignature {
                what: "BSD disklabel d_magic2",
                expected: format!("{DISKMAGIC:#010x} (as d_magic)"),
                found: format!("{:#010x}", order.u32(label, MAGIC2_OFFSET)),
            },
        )
        .at(at + MAGIC2_OFFSET as u64));
    }
    let count = usize::from(order.u16(label, NPARTITIONS_OFFSET));
    let room = (label.len().saturating_sub(PARTITIONS_OFFSET)) / PARTITION_LEN;
    if count > room {
        return Err(Error::corrupt(
            Scheme::Bsd,
            Detail::BadValue {
                field: "d_npartitions",
                value: count as u64,
                expected: format!("at most {room} (the entries that fit in the label's sector)"),
            },
        )
        .at(at + NPARTITIONS_OFFSET as u64));
    }
    let secsize = u64::from(order.u32(label, SECSIZE_OFFSET));
    let sector_size = match secsize {
        0 => device_sector,
        s if s.is_power_of_two() && (512..=65536).contains(&s) => s,
        s => {
            return Err(Error::corrupt(
                Scheme::Bsd,
                Detail::BadValue {
                    field: "d_secsize",
                    value: s,
                    expected: "a power of two from 512 to 65536".into(),
                },
            )
            .at(at + SECSIZE_OFFSET as u64))
        }
    };
    let len = PARTITIONS_OFFSET + count * PARTITION_LEN;
    let words = label.get(..len).unwrap_or_default();
    // The XOR of the words is 0 in either byte order when it is 0 in one.
    let xor = words.chunks_exact(2).fold(0u16, |x, w| {
        x ^ u16::from_ne_bytes([
            w.first().copied().unwrap_or(0),
            w.get(1).copied().unwrap_or(0),
        ])
    });
    let partitions = (0..count)
        .map(|slot| {
            let e = PARTITIONS_OFFSET + slot * PARTITION_LEN;
            BsdPartition {
                slot,
                size: order.u32(label, e),
                offset: order.u32(label, e + 4),
                fstype: label.get(e + 12).copied().unwrap_or(0),
            }
        })
        .collect();
    let type_name = String::from_utf8_lossy(label.get(8..24).unwrap_or_default())
        .trim_end_matches(['\0', ' '])
        .to_owned();
    Ok(Some(Disklabel {
        at,
        sector_size,
        type_name,
        partitions,
        checksum_ok: xor == 0,
    }))
}

/// Looks for a label at the start of `dev`, or of the slice starting at
/// byte `base` of it: at sector 1, then at byte 64 of sector 0.
pub fn find(dev: &dyn BlockDevice, base: u64) -> Result<Option<Disklabel>> {
    let sector = u64::from(dev.sector_size().max(1));
    for (s, off) in LOCATIONS {
        let at = base.saturating_add(s * sector);
        if dev.size() < at.saturating_add(SECTOR_LEN as u64) {
            continue;
        }
        let bytes = read_bytes(dev, at, SECTOR_LEN, Scheme::Bsd)?;
        if !has_at(&bytes, off, &DISKMAGIC.to_le_bytes())
            && !has_at(&bytes, off, &DISKMAGIC.to_be_bytes())
        {
            continue;
        }
        if let Some(label) = parse(&bytes, off, at + off as u64, sector)? {
            return Ok(Some(label));
        }
    }
    Ok(None)
}

/// The partitions of `label`, placed on the disk: `slice` is the start of
/// the MBR slice holding it, in device sectors (0 for a whole-disk label),
/// and `slice_type` its MBR type (0 for none). Entries of size 0 are left
/// out; one reaching past the disk (`disk_bytes`) is skipped with a
/// warning, as the MBR reader does. Each is named by its letter, after
/// the slice number inside a slice (`s2a`, as FreeBSD names it).
pub fn partitions(
    label: &Disklabel,
    slice: u64,
    slice_type: u8,
    device_sector: u64,
    disk_bytes: u64,
    warnings: &mut Vec<String>,
) -> Vec<Partition> {
    partitions_in(
        label,
        slice,
        slice_type,
        None,
        device_sector,
        disk_bytes,
        warnings,
    )
}

/// [`partitions`] for the label of MBR slice number `slice_number`.
pub fn slice_partitions(
    label: &Disklabel,
    slice: u64,
    slice_type: u8,
    slice_number: u32,
    device_sector: u64,
    disk_bytes: u64,
    warnings: &mut Vec<String>,
) -> Vec<Partition> {
    partitions_in(
        label,
        slice,
        slice_type,
        Some(slice_number),
        device_sector,
        disk_bytes,
        warnings,
    )
}

fn partitions_in(
    label: &Disklabel,
    slice: u64,
    slice_type: u8,
    slice_number: Option<u32>,
    device_sector: u64,
    disk_bytes: u64,
    warnings: &mut Vec<String>,
) -> Vec<Partition> {
    let unit = label.sector_size;
    let slice_bytes = slice * device_sector;
    // A FreeBSD label counting from its slice (see the module comment).
    let relative = slice_type == 0xA5
        && slice > 0
        && label
            .partitions
            .get(RAW_PART)
            .is_some_and(|c| c.size > 0 && c.offset == 0);
    let base = if relative { slice_bytes } else { 0 };
    if !label.checksum_ok {
        warnings.push(format!(
            "BSD disklabel at byte {:#x}: d_checksum does not make the label's words XOR to 0; the label is read anyway",
            label.at
        ));
    }
    let mut out = Vec::new();
    for p in &label.partitions {
        if p.size == 0 {
            continue;
        }
        let offset = base + u64::from(p.offset) * unit;
        let size = u64::from(p.size) * unit;
        let letter = char::from(b'a' + (p.slot as u8).min(25));
        if offset + size > disk_bytes {
            warnings.push(format!(
                "BSD partition {letter} (bytes {offset}..{}) ends past the disk's {disk_bytes} bytes; skipped",
                offset + size
            ));
            continue;
        }
        out.push(Partition {
            number: p.slot as u32 + 1,
            offset,
            size,
            kind: PartitionKind::Bsd,
            type_code: format!("0x{:02x}", p.fstype),
            type_name: fstype_name(p.fstype),
            name: Some(match slice_number {
                Some(n) => format!("s{n}{letter}"),
                None => letter.to_string(),
            }),
            guid: None,
            attributes: None,
            bootable: false,
        });
    }
    out
}

/// The name of a `p_fstype` (FreeBSD's and NetBSD's `fstypenames`).
pub fn fstype_name(t: u8) -> &'static str {
    match t {
        0 => "unused",
        1 => "swap",
        2 => "Version 6",
        3 => "Version 7",
        4 => "System V",
        5 => "4.1BSD",
        6 => "Eighth Edition",
        7 => "4.2BSD",
        8 => "MSDOS",
        9 => "4.4LFS",
        10 => "unknown",
        11 => "HPFS",
        12 => "ISO9660",
        13 => "boot",
        14 => "vinum",
        15 => "raid",
        17 => "ext2fs",
        18 => "NTFS",
        19 => "RAID",
        21 => "jfs",
        27 => "ZFS",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::{ErrorKind, MemoryDevice};

    /// A little-endian label at sector 1 of a 1 MiB disk: a (4.2BSD)
    /// at 64+512, b (swap) at 576+256, c the whole disk.
    fn golden() -> Vec<u8> {
        let mut d = vec![0u8; 2048 * 512];
        let l = 512;
        d[l..l + 4].copy_from_slice(&DISKMAGIC.to_le_bytes());
        d[l + 8..l + 14].copy_from_slice(b"amnesi");
        d[l + 40..l + 44].copy_from_slice(&512u32.to_le_bytes());
        d[l + 132..l + 136].copy_from_slice(&DISKMAGIC.to_le_bytes());
        d[l + 138..l + 140].copy_from_slice(&3u16.to_le_bytes());
        for (i, (size, off, ty)) in [(512u32, 64u32, 7u8), (256, 576, 1), (2048, 0, 0)]
            .into_iter()
            .enumerate()
        {
            let e = l + 148 + i * 16;
            d[e..e + 4].copy_from_slice(&size.to_le_bytes());
            d[e + 4..e + 8].copy_from_slice(&off.to_le_bytes());
            d[e + 12] = ty;
        }
        fix_checksum(&mut d, l, 3);
        d
    }

    fn fix_checksum(d: &mut [u8], l: usize, n: usize) {
        d[l + 136..l + 138].fill(0);
        let x = d[l..l + 148 + n * 16]
            .chunks_exact(2)
            .fold(0u16, |x, w| x ^ u16::from_ne_bytes([w[0], w[1]]));
        d[l + 136..l + 138].copy_from_slice(&x.to_ne_bytes());
    }

    fn read(d: Vec<u8>) -> Result<(Vec<Partition>, Vec<String>)> {
        let dev = MemoryDevice::new(d);
        let label = find(&dev, 0)?.expect("a label");
        let mut w = Vec::new();
        let p = partitions(&label, 0, 0, 512, dev.size(), &mut w);
        Ok((p, w))
    }

    #[test]
    fn golden_label_lists_its_partitions() {
        let (p, w) = read(golden()).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let got: Vec<_> = p
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap(),
                    p.offset / 512,
                    p.size / 512,
                    p.type_name,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 64, 512, "4.2BSD"),
                ("b".into(), 576, 256, "swap"),
                ("c".into(), 0, 2048, "unused"),
            ]
        );
    }

    #[test]
    fn one_field_mutations() {
        let mut d = golden();
        d[512 + 148] ^= 1;
        let (_, w) = read(d).unwrap();
        assert!(w[0].contains("d_checksum"), "{w:?}");
        let mut d = golden();
        d[512 + 132] = 0;
        let e = read(d).unwrap_err();
        assert_eq!(
            (e.kind(), e.offset()),
            (ErrorKind::Corrupt, Some(512 + 132))
        );
        let mut d = golden();
        d[512 + 138..512 + 140].copy_from_slice(&200u16.to_le_bytes());
        let e = read(d).unwrap_err();
        assert!(e.to_string().contains("d_npartitions is 200"), "{e}");
        let mut d = golden();
        d[512 + 40..512 + 44].copy_from_slice(&3u32.to_le_bytes());
        assert!(read(d).unwrap_err().to_string().contains("d_secsize is 3"));
        let mut d = golden();
        d[512 + 148..512 + 152].copy_from_slice(&u32::MAX.to_le_bytes());
        fix_checksum(&mut d, 512, 3);
        let (p, w) = read(d).unwrap();
        assert_eq!((p.len(), w.len()), (2, 1));
    }

    #[test]
    fn big_endian_and_sector_0_offset_64_labels() {
        let g = golden();
        let mut d = vec![0u8; g.len()];
        // Same label, big-endian, at byte 64 of sector 0.
        let src = &g[512..512 + 148 + 3 * 16];
        let mut be = Vec::new();
        be.extend(DISKMAGIC.to_be_bytes());
        be.extend(&src[4..40]);
        be.extend(512u32.to_be_bytes());
        be.extend(&src[44..132]);
        be.extend(DISKMAGIC.to_be_bytes());
        be.extend([0, 0]);
        be.extend(3u16.to_be_bytes());
        be.extend(&src[140..148]);
        for i in 0..3 {
            let e = &src[148 + i * 16..];
            let size = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let off = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            be.extend(size.to_be_bytes());
            be.extend(off.to_be_bytes());
            be.extend([0, 0, 0, 0, e[12], 0, 0, 0]);
        }
        d[64..64 + be.len()].copy_from_slice(&be);
        fix_checksum(&mut d, 64, 3);
        let (p, _) = read(d).unwrap();
        assert_eq!((p[1].offset / 512, p[1].size / 512), (576, 256));
    }

    #[test]
    fn freebsd_relative_labels_count_from_the_slice() {
        let dev = MemoryDevice::new(golden());
        let label = find(&dev, 0).unwrap().unwrap();
        let mut w = Vec::new();
        let abs = partitions(&label, 100, 0xA9, 512, 1 << 40, &mut w);
        assert_eq!(abs[0].offset, 64 * 512);
        let rel = partitions(&label, 100, 0xA5, 512, 1 << 40, &mut w);
        assert_eq!(rel[0].offset, (100 + 64) * 512);
    }
}
