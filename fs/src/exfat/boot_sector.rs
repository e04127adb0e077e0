//! The boot regions: the boot sector's fields (exFAT specification
//! §3.1), the boot checksum (§3.4), and the choice between the main boot
//! region (sectors 0–11) and its backup (sectors 12–23).
//!
//! A boot region is used only when its checksum sector matches the
//! checksum of its first 11 sectors and every field of its boot sector is
//! within its valid range (§3.1: "implementations shall verify their
//! contents"). The main region is tried first; when it fails, the backup;
//! when both fail, the main region's error is returned.

use binrw::BinRead;
use diskimage_formats::bytes::le_u32;
use diskimage_formats::layout::{self, Bytes, Layout};
use diskimage_formats::BlockDevice;

use super::FS;
use crate::error::{Detail, Error, Result};

/// Sectors in one boot region (boot sector, 8 extended boot sectors, OEM
/// parameters, reserved, boot checksum).
pub const BOOT_REGION_SECTORS: u64 = 12;
/// Sectors covered by the boot checksum.
const CHECKSUMMED_SECTORS: usize = 11;
/// Largest cluster count the specification allows (2^32 − 11).
pub const MAX_CLUSTER_COUNT: u32 = u32::MAX - 10;
/// Byte offsets in the boot sector left out of the boot checksum:
/// VolumeFlags (106, 107) and PercentInUse (112).
const UNCHECKED: [usize; 3] = [106, 107, 112];

/// Which boot region the volume was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootRegion {
    /// Sectors 0–11.
    Main,
    /// Sectors 12–23 (the main region failed its checks).
    Backup,
}

impl BootRegion {
    /// `main` or `backup`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootRegion::Main => "main",
            BootRegion::Backup => "backup",
        }
    }
}

diskimage_formats::display_as_str!(BootRegion);

/// The boot sector (§3.1), declared field by field in its on-disk order;
/// [`BootSector::parse`] checks every field that reading relies on.
#[derive(BinRead, Debug, Clone, PartialEq, Eq)]
#[br(little)]
pub struct BootSector {
    /// JumpBoot: `EB 76 90`.
    #[br(map = |b: Bytes<3>| b.0)]
    jump_boot: [u8; 3],
    /// FileSystemName: `"EXFAT   "`.
    #[br(map = |b: Bytes<8>| b.0)]
    file_system_name: [u8; 8],
    /// MustBeZero: bytes 11..64 (where a FAT BPB would be).
    #[br(map = |b: Bytes<53>| b.0)]
    must_be_zero: [u8; 53],
    /// PartitionOffset, in sectors (informational).
    pub partition_offset: u64,
    /// VolumeLength, in sectors.
    pub volume_length: u64,
    /// FatOffset, in sectors.
    pub fat_offset: u32,
    /// FatLength, in sectors.
    pub fat_length: u32,
    /// ClusterHeapOffset, in sectors.
    pub cluster_heap_offset: u32,
    /// ClusterCount.
    pub cluster_count: u32,
    /// FirstClusterOfRootDirectory.
    pub root_cluster: u32,
    /// VolumeSerialNumber.
    pub serial: u32,
    /// FileSystemRevision (major in the high byte).
    pub revision: u16,
    /// VolumeFlags (bit 0 ActiveFat, bit 1 VolumeDirty, bit 2 MediaFailure).
    pub volume_flags: u16,
    /// BytesPerSectorShift (9..=12).
    pub bytes_per_sector_shift: u8,
    /// SectorsPerClusterShift (0..=25 − BytesPerSectorShift).
    pub sectors_per_cluster_shift: u8,
    /// NumberOfFats (1, or 2 for TexFAT).
    pub number_of_fats: u8,
    /// BootSignature at 510, after DriveSelect, PercentInUse, Reserved and
    /// BootCode.
    #[br(pad_before = 1 + 1 + 7 + 390)]
    boot_signature: u16,
}

impl Layout for BootSector {
    const SIZE: usize = 512;
    const NAME: &'static str = "exFAT boot sector";
}

impl BootSector {
    /// Parses and range-checks the boot sector `b` (at byte `offset` on the
    /// volume).
    pub fn parse(b: &[u8], offset: u64) -> Result<Self> {
        let bad = |at: usize, what: String| Error::corrupt(FS, None, what).at(offset + at as u64);
        let s: BootSector = layout::read(b).map_err(|d| Error::damaged(FS, None, d).at(offset))?;
        if s.jump_boot != [0xEB, 0x76, 0x90] {
            return Err(bad(0, "JumpBoot is not EB 76 90".into()));
        }
        if &s.file_system_name != b"EXFAT   " {
            return Err(bad(3, "FileSystemName is not \"EXFAT   \"".into()));
        }
        if s.must_be_zero.iter().any(|&x| x != 0) {
            return Err(bad(11, "MustBeZero bytes 11..64 are not zero".into()));
        }
        if s.boot_signature != 0xAA55 {
            let detail = Detail::BadSignature {
                what: "BootSignature",
                expected: "0xaa55".into(),
                found: format!("{:#06x}", s.boot_signature),
            };
            return Err(Error::damaged(FS, None, detail).at(offset + 510));
        }
        let bps = s.bytes_per_sector_shift;
        if !(9..=12).contains(&bps) {
            return Err(bad(
                108,
                format!("BytesPerSectorShift is {bps}, expected 9..=12"),
            ));
        }
        let spc = s.sectors_per_cluster_shift;
        if u32::from(spc) > 25 - u32::from(bps) {
            return Err(bad(
                109,
                format!(
                    "SectorsPerClusterShift is {spc}, expected at most {}",
                    25 - bps
                ),
            ));
        }
        if s.revision >> 8 != 1 {
            return Err(Error::unsupported(
                FS,
                None,
                format!(
                    "file system revision {}.{:02} (only 1.x is read)",
                    s.revision >> 8,
                    s.revision & 0xff
                ),
            ));
        }
        if !(1..=2).contains(&s.number_of_fats) {
            return Err(bad(
                110,
                format!("NumberOfFats is {}, expected 1 or 2", s.number_of_fats),
            ));
        }
        if u64::from(s.fat_offset) < BOOT_REGION_SECTORS * 2 {
            return Err(bad(
                80,
                format!(
                    "FatOffset is {} sectors, expected at least 24",
                    s.fat_offset
                ),
            ));
        }
        if s.cluster_count > MAX_CLUSTER_COUNT {
            return Err(bad(
                92,
                format!("ClusterCount is {}, more than 2^32 - 11", s.cluster_count),
            ));
        }
        // The FAT holds an entry per cluster plus the two first ones.
        let fat_need = (u64::from(s.cluster_count) + 2) * 4;
        if u64::from(s.fat_length) << bps < fat_need {
            return Err(bad(
                84,
                format!(
                    "FatLength is {} sectors, too short for {} clusters",
                    s.fat_length, s.cluster_count
                ),
            ));
        }
        let fats_end =
            u64::from(s.fat_offset) + u64::from(s.fat_length) * u64::from(s.number_of_fats);
        if u64::from(s.cluster_heap_offset) < fats_end {
            return Err(bad(
                88,
                format!(
                    "ClusterHeapOffset is sector {}, inside the FAT region ending at {fats_end}",
                    s.cluster_heap_offset
                ),
            ));
        }
        let heap_end = u64::from(s.cluster_heap_offset)
            + (u64::from(s.cluster_count) << s.sectors_per_cluster_shift);
        if heap_end > s.volume_length {
            return Err(bad(
                72,
                format!(
                    "VolumeLength is {} sectors, the cluster heap ends at sector {heap_end}",
                    s.volume_length
                ),
            ));
        }
        if !(2..=u64::from(s.cluster_count) + 1).contains(&u64::from(s.root_cluster)) {
            return Err(bad(
                96,
                format!(
                    "FirstClusterOfRootDirectory is {}, outside clusters 2..={}",
                    s.root_cluster,
                    u64::from(s.cluster_count) + 1
                ),
            ));
        }
        Ok(s)
    }

    /// Bytes per sector.
    pub fn sector_size(&self) -> u64 {
        1 << self.bytes_per_sector_shift
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << (self.bytes_per_sector_shift + self.sectors_per_cluster_shift)
    }

    /// Byte offset of the active FAT (the second one when VolumeFlags'
    /// ActiveFat bit is set on a volume with two).
    pub fn active_fat_offset(&self) -> u64 {
        let second = self.number_of_fats == 2 && self.volume_flags & 1 != 0;
        (u64::from(self.fat_offset)
            + if second {
                u64::from(self.fat_length)
            } else {
                0
            })
            << self.bytes_per_sector_shift
    }

    /// Byte offset of the cluster heap (cluster 2).
    pub fn heap_offset(&self) -> u64 {
        u64::from(self.cluster_heap_offset) << self.bytes_per_sector_shift
    }

    /// Whether `cluster` lies in the cluster heap.
    pub fn is_heap_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && u64::from(cluster) <= u64::from(self.cluster_count) + 1
    }

    /// Byte offset of `cluster` (which must lie in the heap).
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.heap_offset() + u64::from(cluster.saturating_sub(2)) * self.cluster_size()
    }
}

/// The boot checksum of a boot region's first 11 sectors (§3.4):
/// rotate right by one, add the byte; VolumeFlags and PercentInUse of the
/// boot sector are left out.
pub fn boot_checksum(first_sectors: &[u8]) -> u32 {
    first_sectors
        .iter()
        .enumerate()
        .filter(|(i, _)| !UNCHECKED.contains(i))
        .fold(0u32, |sum, (_, &b)| {
            sum.rotate_right(1).wrapping_add(u32::from(b))
        })
}

/// Checks the boot region starting at byte `start` whose sectors are
/// `1 << shift` bytes, and parses its boot sector.
fn read_region(device: &dyn BlockDevice, start: u64, shift: u8) -> Result<BootSector> {
    let sector = 1usize << shift;
    let mut region = vec![0u8; sector * BOOT_REGION_SECTORS as usize];
    device.read_at(&mut region, start)?;
    let boot = BootSector::parse(&region, start)?;
    if boot.bytes_per_sector_shift != shift {
        return Err(Error::corrupt(
            FS,
            None,
            format!(
                "BytesPerSectorShift is {}, but this boot region was found with {shift}",
                boot.bytes_per_sector_shift
            ),
        )
        .at(start + 108));
    }
    let checked = region
        .get(..sector * CHECKSUMMED_SECTORS)
        .unwrap_or_default();
    let want = boot_checksum(checked);
    let sum_at = sector * CHECKSUMMED_SECTORS;
    let sums = region.get(sum_at..).unwrap_or_default();
    for (i, c) in sums.chunks_exact(4).enumerate() {
        let got = le_u32(c, 0).unwrap_or(0);
        if got != want {
            return Err(Error::damaged(
                FS,
                None,
                crate::error::Detail::Checksum {
                    what: "boot region",
                    stored: got.into(),
                    computed: want.into(),
                },
            )
            .at(start + (sum_at + i * 4) as u64));
        }
    }
    Ok(boot)
}

/// Reads the main boot region, or the backup one when the main one fails
/// its checks (the backup's sector size is found by trying each valid one).
pub fn read(device: &dyn BlockDevice) -> Result<(BootSector, BootRegion)> {
    let mut first = [0u8; 512];
    device.read_at(&mut first, 0)?;
    let shift = first.get(108).copied().unwrap_or(0);
    let main = if (9..=12).contains(&shift) {
        read_region(device, 0, shift)
    } else {
        BootSector::parse(&first, 0)
    };
    let main_err = match main {
        Ok(b) => return Ok((b, BootRegion::Main)),
        Err(e) => e,
    };
    for shift in 9..=12u8 {
        let start = BOOT_REGION_SECTORS << shift;
        if start + (BOOT_REGION_SECTORS << shift) > device.size() {
            break;
        }
        if let Ok(b) = read_region(device, start, shift) {
            return Ok((b, BootRegion::Backup));
        }
    }
    Err(main_err)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn declaration_reads_the_whole_sector() {
        assert_eq!(layout::declared_len::<BootSector>(), Some(512));
        let mut b = golden();
        b[510] = 0;
        let e = BootSector::parse(&b, 0x200).unwrap_err();
        assert!(
            matches!(e.detail(), Some(Detail::BadSignature { .. })),
            "{e}"
        );
        assert!(BootSector::parse(&b[..100], 0).is_err());
    }

    /// A minimal valid boot sector: 512-byte sectors, 4 KiB clusters,
    /// 64 clusters.
    pub(crate) fn golden() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..3].copy_from_slice(&[0xEB, 0x76, 0x90]);
        b[3..11].copy_from_slice(b"EXFAT   ");
        b[72..80].copy_from_slice(&1024u64.to_le_bytes());
        b[80..84].copy_from_slice(&24u32.to_le_bytes());
        b[84..88].copy_from_slice(&8u32.to_le_bytes());
        b[88..92].copy_from_slice(&32u32.to_le_bytes());
        b[92..96].copy_from_slice(&64u32.to_le_bytes());
        b[96..100].copy_from_slice(&4u32.to_le_bytes());
        b[100..104].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        b[104..106].copy_from_slice(&0x0100u16.to_le_bytes());
        b[108] = 9;
        b[109] = 3;
        b[110] = 1;
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn golden_parses() {
        let s = BootSector::parse(&golden(), 0).unwrap();
        assert_eq!(s.cluster_size(), 4096);
        assert_eq!(s.heap_offset(), 32 * 512);
        assert_eq!(s.cluster_offset(3), 32 * 512 + 4096);
        assert_eq!(s.active_fat_offset(), 24 * 512);
    }

    fn err(b: &[u8]) -> String {
        BootSector::parse(b, 0).unwrap_err().to_string()
    }

    #[test]
    fn one_field_mutations_are_named() {
        let mut b = golden();
        b[108] = 13;
        assert_eq!(
            err(&b),
            "exFAT: corrupt at 0x6c: BytesPerSectorShift is 13, expected 9..=12"
        );
        let mut b = golden();
        b[109] = 17;
        assert!(err(&b).contains("SectorsPerClusterShift is 17, expected at most 16"));
        let mut b = golden();
        b[92..96].copy_from_slice(&5000u32.to_le_bytes());
        assert!(err(&b).contains("FatLength is 8 sectors, too short for 5000 clusters"));
        let mut b = golden();
        b[96..100].copy_from_slice(&66u32.to_le_bytes());
        assert!(err(&b).contains("FirstClusterOfRootDirectory is 66, outside clusters 2..=65"));
        let mut b = golden();
        b[72..80].copy_from_slice(&100u64.to_le_bytes());
        assert!(err(&b).contains("VolumeLength is 100 sectors"));
        let mut b = golden();
        b[20] = 1;
        assert!(err(&b).contains("MustBeZero"));
        let mut b = golden();
        b[104..106].copy_from_slice(&0x0200u16.to_le_bytes());
        assert!(err(&b).contains("unsupported: file system revision 2.00"));
    }

    #[test]
    fn checksum_skips_flags_and_percent() {
        let mut region = vec![0u8; 512 * 11];
        region[..512].copy_from_slice(&golden());
        let sum = boot_checksum(&region);
        region[106] = 0xff;
        region[107] = 0xff;
        region[112] = 50;
        assert_eq!(boot_checksum(&region), sum);
        region[113] = 1;
        assert_ne!(boot_checksum(&region), sum);
        // Rotate-right-then-add, as §3.4 gives it.
        assert_eq!(boot_checksum(&[1, 0]), 0x8000_0000);
        assert_eq!(boot_checksum(&[1, 1]), 0x8000_0001);
    }
}
