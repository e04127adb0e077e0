//! DOS/MBR partition tables: the four primary entries of sector 0, the
//! chain of extended boot records (EBRs) that holds logical partitions, the
//! disk signature, and the protective/hybrid MBR in front of a GPT.
//!
//! Layout (sector 0, and every EBR): boot code, the 32-bit disk signature
//! at 0x1B8, four 16-byte entries from 0x1BE, the `55 AA` boot signature at
//! 0x1FE. An entry is `status, CHS first, type, CHS last, LBA start (LE u32),
//! sector count (LE u32)`; LBAs count logical sectors of the device.
//!
//! In an EBR, entry 0 is the logical partition, relative to that EBR;
//! entry 1 links to the next EBR, relative to the start of the first
//! (outermost) extended partition. The walk is bounded by
//! [`MAX_LOGICAL_PARTITIONS`] and refuses a link back to an EBR it has seen.

use std::collections::HashSet;

use binrw::BinRead;
use diskimage_formats::bytes::{has_at, le_u32};
use diskimage_formats::layout::{self, Layout};
use diskimage_formats::BlockDevice;
use diskimage_fs::FsKind;

use super::{read_bytes, Partition, PartitionKind, PartitionTable};
use crate::error::{Detail, Error, Result, Scheme};

/// Offset of the disk signature in sector 0, bytes.
const DISK_SIGNATURE_OFFSET: usize = 0x1B8;
/// Offset of the first of the four partition entries, bytes.
const ENTRIES_OFFSET: usize = 0x1BE;
/// Size of one partition entry, bytes.
const ENTRY_SIZE: usize = 16;
/// Offset of the `55 AA` boot signature, bytes.
const BOOT_SIGNATURE_OFFSET: usize = 0x1FE;
/// Bytes of a table sector that are read.
const TABLE_LEN: usize = 512;
/// The partition type of a GPT's protective entry.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xEE;
/// Most logical partitions followed in one extended chain (Linux allows far
/// fewer in practice; a longer chain is refused as a limit).
pub const MAX_LOGICAL_PARTITIONS: usize = 256;

/// One 16-byte MBR/EBR entry, as stored (the CHS addresses are skipped:
/// LBAs are what every current system uses).
#[derive(BinRead, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[br(little)]
pub(crate) struct MbrEntry {
    /// Boot indicator: 0x80 active, 0x00 inactive.
    pub status: u8,
    /// Partition type (after the 3-byte CHS address of the first sector).
    #[br(pad_before = 3)]
    pub partition_type: u8,
    /// First sector, LBA (after the 3-byte CHS address of the last sector).
    #[br(pad_before = 3)]
    pub lba_start: u32,
    /// Number of sectors.
    pub num_sectors: u32,
}

impl Layout for MbrEntry {
    const SIZE: usize = ENTRY_SIZE;
    const NAME: &'static str = "MBR partition entry";
}

impl MbrEntry {
    /// Entry `index` (0..4) of a table sector; an empty entry when the
    /// sector is short.
    fn parse(sector: &[u8], index: usize) -> MbrEntry {
        layout::read_at(sector, ENTRIES_OFFSET + index * ENTRY_SIZE).unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.partition_type == 0 || self.num_sectors == 0
    }

    fn is_extended(&self) -> bool {
        is_extended(self.partition_type)
    }
}

/// Whether an MBR type code is an extended-partition container.
pub fn is_extended(code: u8) -> bool {
    matches!(code, 0x05 | 0x0F | 0x85)
}

/// Sector 0 of a disk read as an MBR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    /// The 32-bit disk signature (Windows matches volumes by it).
    pub disk_signature: u32,
    entries: [MbrEntry; 4],
}

impl Mbr {
    /// Whether an entry is a GPT protective partition (0xEE): the disk holds a GPT.
    pub fn protective(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.partition_type == TYPE_GPT_PROTECTIVE)
    }

    /// Whether the MBR is hybrid: a 0xEE entry next to other partitions.
    pub fn hybrid(&self) -> bool {
        self.protective()
            && self
                .entries
                .iter()
                .any(|e| !e.is_empty() && e.partition_type != TYPE_GPT_PROTECTIVE)
    }
}

/// Reads sector 0 as an MBR; `None` when it is not one (no `55 AA`, an
/// invalid boot indicator, or the boot sector of a file system that fills
/// the whole disk).
pub fn read_mbr(dev: &dyn BlockDevice) -> Result<Option<Mbr>> {
    if dev.size() < TABLE_LEN as u64 {
        return Ok(None);
    }
    let sector = read_bytes(dev, 0, TABLE_LEN, Scheme::Mbr)?;
    parse_mbr(&sector, dev)
}

fn parse_mbr(sector: &[u8], dev: &dyn BlockDevice) -> Result<Option<Mbr>> {
    if !has_at(sector, BOOT_SIGNATURE_OFFSET, &[0x55, 0xAA]) {
        return Ok(None);
    }
    let entries = [0, 1, 2, 3].map(|i| MbrEntry::parse(sector, i));
    if entries.iter().any(|e| e.status != 0 && e.status != 0x80) {
        return Ok(None);
    }
    // A FAT/NTFS/exFAT boot sector also ends in 55 AA: then the disk is
    // one whole-disk file system, not a partition table.
    let whole_fs = diskimage_fs::detect(dev)
        .map_err(|e| Error::from_device(Scheme::Mbr, e))?
        .map(|i| i.kind);
    if matches!(
        whole_fs,
        Some(
            FsKind::Ntfs
                | FsKind::ExFat
                | FsKind::Fat12
                | FsKind::Fat16
                | FsKind::Fat32
                | FsKind::BitLocker
                | FsKind::Refs
        )
    ) {
        return Ok(None);
    }
    Ok(Some(Mbr {
        disk_signature: le_u32(sector, DISK_SIGNATURE_OFFSET).unwrap_or(0),
        entries,
    }))
}

fn partition(
    number: u32,
    kind: PartitionKind,
    entry: &MbrEntry,
    start_lba: u64,
    sector: u64,
) -> Partition {
    Partition {
        number,
        offset: start_lba * sector,
        size: u64::from(entry.num_sectors) * sector,
        kind,
        type_code: format!("0x{:02x}", entry.partition_type),
        type_name: type_name(entry.partition_type),
        name: None,
        guid: None,
        attributes: None,
        bootable: entry.status == 0x80,
    }
}

/// Reads the partitions of an MBR disk: the primaries, then the logical
/// partitions of the first extended partition's chain.
pub fn read(dev: &dyn BlockDevice, mbr: &Mbr) -> Result<PartitionTable> {
    let sector = u64::from(dev.sector_size().max(1));
    let disk_sectors = dev.size() / sector;
    let mut table = PartitionTable {
        scheme: Some(Scheme::Mbr),
        disk_id: Some(format!("0x{:08x}", mbr.disk_signature)),
        ..PartitionTable::default()
    };
    let mut extended: Option<MbrEntry> = None;
    for (i, e) in mbr.entries.iter().enumerate() {
        if e.is_empty() {
            continue;
        }
        let number = i as u32 + 1;
        let end = u64::from(e.lba_start) + u64::from(e.num_sectors);
        if end > disk_sectors {
            table.warnings.push(format!(
                "MBR partition {number} ends at sector {end}, past the disk's {disk_sectors} sectors; skipped"
            ));
            continue;
        }
        let kind = if e.is_extended() {
            PartitionKind::Extended
        } else {
            PartitionKind::Primary
        };
        table
            .partitions
            .push(partition(number, kind, e, u64::from(e.lba_start), sector));
        if e.is_extended() {
            if extended.is_some() {
                table
                    .warnings
                    .push(format!("MBR partition {number} is a second extended partition; its chain is not followed"));
            } else {
                extended = Some(*e);
            }
        }
    }
    if let Some(ext) = extended {
        read_logicals(dev, &ext, sector, &mut table)?;
    }
    Ok(table)
}

/// Follows the EBR chain of the extended partition `ext`.
fn read_logicals(
    dev: &dyn BlockDevice,
    ext: &MbrEntry,
    sector: u64,
    table: &mut PartitionTable,
) -> Result<()> {
    let ext_start = u64::from(ext.lba_start);
    let ext_end = ext_start + u64::from(ext.num_sectors);
    let mut seen = HashSet::new();
    let mut ebr_lba = ext_start;
    let mut number = 5u32;
    loop {
        if seen.len() >= MAX_LOGICAL_PARTITIONS {
            return Err(Error::limit(
                Scheme::Mbr,
                "extended boot records in the logical chain",
                seen.len() as u64 + 1,
                MAX_LOGICAL_PARTITIONS as u64,
            )
            .at(ebr_lba * sector));
        }
        if !seen.insert(ebr_lba) {
            return Err(Error::corrupt(
                Scheme::Mbr,
                Detail::Invalid(format!(
                    "extended boot record chain loops back to the EBR at sector {ebr_lba}"
                )),
            )
            .at(ebr_lba * sector));
        }
        let ebr = read_bytes(dev, ebr_lba * sector, TABLE_LEN, Scheme::Mbr)?;
        if !has_at(&ebr, BOOT_SIGNATURE_OFFSET, &[0x55, 0xAA]) {
            return Err(Error::corrupt(
                Scheme::Mbr,
                Detail::BadSignature {
                    what: "extended boot record signature",
                    expected: "55 aa".into(),
                    found: diskimage_formats::error::hex_preview(
                        ebr.get(BOOT_SIGNATURE_OFFSET..).unwrap_or_default(),
                    ),
                },
            )
            .at(ebr_lba * sector + BOOT_SIGNATURE_OFFSET as u64));
        }
        let data = MbrEntry::parse(&ebr, 0);
        if !data.is_empty() {
            let start = ebr_lba + u64::from(data.lba_start);
            let end = start + u64::from(data.num_sectors);
            if end > ext_end {
                table.warnings.push(format!(
                    "logical partition {number} (sectors {start}..{end}) reaches past its extended partition (ends at {ext_end}); skipped"
                ));
            } else {
                table.partitions.push(partition(
                    number,
                    PartitionKind::Logical,
                    &data,
                    start,
                    sector,
                ));
            }
            number += 1;
        }
        let link = MbrEntry::parse(&ebr, 1);
        if link.is_empty() || !link.is_extended() {
            return Ok(());
        }
        let next = ext_start + u64::from(link.lba_start);
        if next >= ext_end || u64::from(link.lba_start) == 0 {
            return Err(Error::corrupt(
                Scheme::Mbr,
                Detail::BadValue {
                    field: "next EBR link (sectors from the extended partition start)",
                    value: u64::from(link.lba_start),
                    expected: format!(
                        "between 1 and {} (inside the extended partition)",
                        ext.num_sectors
                    ),
                },
            )
            .at(ebr_lba * sector + (ENTRIES_OFFSET + ENTRY_SIZE) as u64));
        }
        ebr_lba = next;
    }
}

/// The common name of an MBR partition type (as fdisk/sfdisk list them).
pub fn type_name(code: u8) -> &'static str {
    match code {
        0x00 => "Empty",
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Ext'd (LBA)",
        0x11 => "Hidden FAT12",
        0x12 => "Compaq diagnostics",
        0x14 => "Hidden FAT16 <32M",
        0x16 => "Hidden FAT16",
        0x17 => "Hidden HPFS/NTFS",
        0x1b => "Hidden W95 FAT32",
        0x1c => "Hidden W95 FAT32 (LBA)",
        0x1e => "Hidden W95 FAT16 (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x42 => "SFS",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x86 => "NTFS volume set",
        0x87 => "NTFS volume set",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa8 => "Darwin UFS",
        0xa9 => "NetBSD",
        0xaf => "HFS / HFS+",
        0xbf => "Solaris",
        0xda => "Non-FS data",
        0xde => "Dell Utility",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xfb => "VMware VMFS",
        0xfc => "VMware VMKCORE",
        0xfd => "Linux raid autodetect",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::ErrorKind;
    use diskimage_formats::MemoryDevice;

    fn entry(b: &mut [u8], base: usize, slot: usize, ty: u8, start: u32, count: u32) {
        let off = base + ENTRIES_OFFSET + slot * ENTRY_SIZE;
        b[off + 4] = ty;
        b[off + 8..off + 12].copy_from_slice(&start.to_le_bytes());
        b[off + 12..off + 16].copy_from_slice(&count.to_le_bytes());
    }

    #[test]
    fn entry_declaration_reads_sixteen_bytes_as_the_layout_says() {
        assert_eq!(layout::declared_len::<MbrEntry>(), Some(ENTRY_SIZE as u64));
        let mut b = vec![0u8; 512];
        b[ENTRIES_OFFSET + ENTRY_SIZE] = 0x80;
        entry(&mut b, 0, 1, 0x83, 2048, 4096);
        let e = MbrEntry::parse(&b, 1);
        assert_eq!(
            (e.status, e.partition_type, e.lba_start, e.num_sectors),
            (0x80, 0x83, 2048, 4096)
        );
        assert_eq!(MbrEntry::parse(&b[..100], 0), MbrEntry::default());
    }

    fn sig(b: &mut [u8], base: usize) {
        b[base + 510] = 0x55;
        b[base + 511] = 0xAA;
    }

    /// 1 MiB disk: primary 1 (0x83) at 8..+100, extended 2 at 200..+1000
    /// with two logicals (EBRs at 200 and 400).
    fn golden() -> Vec<u8> {
        let mut b = vec![0u8; 2048 * 512];
        b[DISK_SIGNATURE_OFFSET..DISK_SIGNATURE_OFFSET + 4]
            .copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        sig(&mut b, 0);
        entry(&mut b, 0, 0, 0x83, 8, 100);
        entry(&mut b, 0, 1, 0x05, 200, 1000);
        let e1 = 200 * 512;
        sig(&mut b, e1);
        entry(&mut b, e1, 0, 0x83, 2, 50);
        entry(&mut b, e1, 1, 0x05, 200, 100);
        let e2 = 400 * 512;
        sig(&mut b, e2);
        entry(&mut b, e2, 0, 0x07, 2, 60);
        b
    }

    fn table(b: Vec<u8>) -> Result<PartitionTable> {
        let d = MemoryDevice::new(b);
        let mbr = read_mbr(&d)?.expect("an MBR");
        read(&d, &mbr)
    }

    #[test]
    fn golden_table_has_primaries_extended_and_logicals() {
        let t = table(golden()).unwrap();
        assert_eq!(t.disk_id.as_deref(), Some("0x1234abcd"));
        let got: Vec<_> = t
            .partitions
            .iter()
            .map(|p| (p.number, p.kind, p.offset / 512, p.size / 512))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, PartitionKind::Primary, 8, 100),
                (2, PartitionKind::Extended, 200, 1000),
                (5, PartitionKind::Logical, 202, 50),
                (6, PartitionKind::Logical, 402, 60),
            ]
        );
        assert_eq!(t.partitions[3].type_name, "HPFS/NTFS/exFAT");
    }

    #[test]
    fn ebr_loop_is_corrupt() {
        let mut b = golden();
        // The second EBR links back to the first (offset 0 from the extended start).
        entry(&mut b, 400 * 512, 1, 0x05, 0, 100);
        // A zero link is refused as a bad value; a link back to 200 relative loops.
        let e = table(b.clone()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        entry(&mut b, 400 * 512, 1, 0x05, 200, 100);
        let e = table(b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("loops back"), "{e}");
    }

    #[test]
    fn missing_ebr_signature_is_corrupt() {
        let mut b = golden();
        b[400 * 512 + 510] = 0;
        let e = table(b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn no_signature_or_bad_status_is_no_mbr() {
        let mut b = golden();
        b[511] = 0;
        assert_eq!(read_mbr(&MemoryDevice::new(b)).unwrap(), None);
        let mut b = golden();
        b[ENTRIES_OFFSET] = 0x12;
        assert_eq!(read_mbr(&MemoryDevice::new(b)).unwrap(), None);
    }

    #[test]
    fn lbas_count_the_device_s_logical_sectors() {
        let mut b = vec![0u8; 64 * 4096];
        sig(&mut b, 0);
        entry(&mut b, 0, 0, 0x83, 8, 16);
        let d = MemoryDevice::new(b).with_sector_size(4096);
        let t = read(&d, &read_mbr(&d).unwrap().unwrap()).unwrap();
        assert_eq!(
            (t.partitions[0].offset, t.partitions[0].size),
            (8 * 4096, 16 * 4096)
        );
    }

    #[test]
    fn protective_and_hybrid() {
        let mut b = golden();
        entry(&mut b, 0, 3, 0xEE, 1, 100);
        let m = read_mbr(&MemoryDevice::new(b)).unwrap().unwrap();
        assert!(m.protective() && m.hybrid());
    }

    #[test]
    fn partition_past_the_disk_is_skipped_with_a_warning() {
        let mut b = golden();
        entry(&mut b, 0, 2, 0x83, 2000, 100);
        let t = table(b).unwrap();
        assert_eq!(t.partitions.len(), 4);
        assert_eq!(t.warnings.len(), 1);
    }
}
