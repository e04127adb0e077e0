//! Identifying what a volume holds by its superblock or boot sector.
//!
//! One ordered probe over the volume's first 68 KiB ([`detect`]); where
//! the label lives further in, it is read from there, as blkid reads it:
//! FAT's in the root directory (`fat`), NTFS's in the `$Volume` record
//! (`ntfs`), exFAT's in the root directory
//! ([`exfat::volume_label`](crate::exfat::volume_label)), UDF's in the
//! logical volume descriptor
//! ([`udf::volume_identity`](crate::udf::volume_identity)). A label that
//! cannot be read leaves the label out; it never fails detection.

mod fat;
mod ntfs;

use diskimage_formats::{BlockDevice, Result};

/// What a volume holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsKind {
    /// NTFS (`NTFS    ` OEM id).
    Ntfs,
    /// ext2 (no journal, no ext4 features).
    Ext2,
    /// ext3 (journal, no ext4 features).
    Ext3,
    /// ext4 (extents, 64bit, flex_bg, metadata_csum, ...).
    Ext4,
    /// FAT12, by cluster count.
    Fat12,
    /// FAT16, by cluster count.
    Fat16,
    /// FAT32, by its BPB (no 16-bit FAT size), whatever its cluster count.
    Fat32,
    /// exFAT.
    ExFat,
    /// ISO 9660 (`CD001` at sector 16).
    Iso9660,
    /// UDF (`NSR02`/`NSR03` in the recognition sequence).
    Udf,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// ReFS.
    Refs,
    /// HFS+ or HFSX.
    HfsPlus,
    /// APFS container.
    Apfs,
    /// Linux swap.
    Swap,
    /// LVM2 physical volume.
    LvmPv,
    /// BitLocker-encrypted volume.
    BitLocker,
    /// LUKS-encrypted volume.
    Luks,
    /// An ext3/ext4 external journal device (`mke2fs -O journal_dev`):
    /// blkid's `jbd`. It holds a journal, no files.
    Jbd,
}

impl FsKind {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ntfs => "ntfs",
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::ExFat => "exfat",
            FsKind::Iso9660 => "iso9660",
            FsKind::Udf => "udf",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Refs => "refs",
            FsKind::HfsPlus => "hfsplus",
            FsKind::Apfs => "apfs",
            FsKind::Swap => "swap",
            FsKind::LvmPv => "lvm2-pv",
            FsKind::BitLocker => "bitlocker",
            FsKind::Luks => "luks",
            FsKind::Jbd => "jbd",
        }
    }
}

/// A detected file system with the identity its superblock records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// What the volume holds.
    pub kind: FsKind,
    /// The volume label, where the superblock holds one.
    pub label: Option<String>,
    /// The serial number or UUID, as the format's own tools print it.
    pub uuid: Option<String>,
}

/// Bytes read from the start of the volume: enough for every superblock
/// checked here (Btrfs's is at 64 KiB).
const PROBE_LEN: u64 = 0x10000 + 0x1000;

use diskimage_formats::bytes::{has_at as at, le_u16, le_u32};

fn u16le(b: &[u8], off: usize) -> u64 {
    le_u16(b, off).map_or(0, u64::from)
}

fn u32le(b: &[u8], off: usize) -> u64 {
    le_u32(b, off).map_or(0, u64::from)
}

fn label(b: &[u8], off: usize, len: usize) -> Option<String> {
    let raw = b.get(off..off + len)?;
    let s = String::from_utf8_lossy(raw)
        .trim_end_matches([' ', '\0'])
        .to_string();
    (!s.is_empty() && s != "NO NAME").then_some(s)
}

fn hex_rev(b: &[u8], off: usize, len: usize) -> Option<String> {
    let raw = b.get(off..off + len)?;
    Some(raw.iter().rev().map(|x| format!("{x:02X}")).collect())
}

fn uuid(b: &[u8], off: usize) -> Option<String> {
    let raw = diskimage_formats::bytes::array::<16>(b, off)?;
    Some(diskimage_formats::Guid::from_be_bytes(raw).to_string())
}

fn fat_serial(b: &[u8], off: usize) -> Option<String> {
    let v = u32le(b, off);
    Some(format!("{:04X}-{:04X}", v >> 16, v & 0xffff))
}

fn ext_kind(b: &[u8]) -> FsKind {
    const SB: usize = 1024;
    let compat = u32le(b, SB + 0x5C);
    let incompat = u32le(b, SB + 0x60);
    let ro_compat = u32le(b, SB + 0x64);
    // incompat journal_dev 0x8: an external journal, not a file system.
    if incompat & 0x8 != 0 {
        return FsKind::Jbd;
    }
    // incompat: extents 0x40, 64bit 0x80, flex_bg 0x200, inline_data 0x8000;
    // ro_compat: huge_file 0x8, gdt_csum 0x10, dir_nlink 0x20, extra_isize 0x40, metadata_csum 0x400.
    if incompat & (0x40 | 0x80 | 0x200 | 0x8000) != 0
        || ro_compat & (0x8 | 0x10 | 0x20 | 0x40 | 0x400) != 0
    {
        FsKind::Ext4
    } else if compat & 0x4 != 0 {
        FsKind::Ext3
    } else {
        FsKind::Ext2
    }
}

/// Identifies what `device` holds from its first 68 KiB, and reads the
/// label where the format keeps it further in (FAT and exFAT root
/// directories, NTFS's `$Volume`). `Ok(None)` means nothing known was found.
pub fn detect(device: &dyn BlockDevice) -> Result<Option<FsInfo>> {
    let n = usize::try_from(device.size().min(PROBE_LEN)).unwrap_or(0);
    let mut b = vec![0u8; n];
    device.read_at(&mut b, 0)?;
    let info = |kind, label, uuid| Some(FsInfo { kind, label, uuid });
    Ok(if at(&b, 3, b"NTFS    ") {
        info(FsKind::Ntfs, ntfs::label(device, &b), hex_rev(&b, 0x48, 8))
    } else if at(&b, 3, b"EXFAT   ") {
        let label = crate::exfat::volume_label(device).ok().flatten();
        info(FsKind::ExFat, label, fat_serial(&b, 100))
    } else if at(&b, 3, b"-FVE-FS-") {
        info(FsKind::BitLocker, None, None)
    } else if at(&b, 3, b"ReFS\0\0\0\0") {
        info(FsKind::Refs, None, None)
    } else if at(&b, 0, b"LUKS\xba\xbe") {
        // LUKS1 and LUKS2 keep the UUID as text at 168; LUKS2 a label at 24.
        info(
            FsKind::Luks,
            label(&b, 24, 48).filter(|_| u16le(&b, 6) == 2),
            label(&b, 168, 40),
        )
    } else if at(&b, 0, b"XFSB") {
        info(FsKind::Xfs, label(&b, 108, 12), uuid(&b, 32))
    } else if at(&b, 1080, &[0x53, 0xEF]) {
        info(
            ext_kind(&b),
            label(&b, 1024 + 120, 16),
            uuid(&b, 1024 + 104),
        )
    } else if at(&b, 0x10040, b"_BHRfS_M") {
        info(FsKind::Btrfs, label(&b, 0x1012B, 256), uuid(&b, 0x10020))
    } else if at(&b, 1024, b"H+") || at(&b, 1024, b"HX") {
        info(FsKind::HfsPlus, None, None)
    } else if at(&b, 32, b"NXSB") {
        info(FsKind::Apfs, None, None)
    } else if (0..4).any(|s| at(&b, s * 512, b"LABELONE") && at(&b, s * 512 + 24, b"LVM2 001")) {
        info(FsKind::LvmPv, None, None)
    } else if at(&b, 4086, b"SWAPSPACE2") || at(&b, 4086, b"SWAP-SPACE") {
        info(FsKind::Swap, label(&b, 1024 + 28, 16), uuid(&b, 1024 + 12))
    } else if let Some(fat) = fat::info(device, &b) {
        Some(fat)
    } else if at(&b, 0x8001, b"CD001") {
        info(FsKind::Iso9660, label(&b, 0x8000 + 40, 32), None)
    } else if (16..32).any(|s| at(&b, s * 2048 + 1, b"NSR02") || at(&b, s * 2048 + 1, b"NSR03")) {
        let (label, uuid) = crate::udf::volume_identity(device).unwrap_or((None, None));
        info(FsKind::Udf, label, uuid)
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    fn fat16_boot() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0] = 0xEB;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4;
        b[14..16].copy_from_slice(&4u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&512u16.to_le_bytes());
        b[22..24].copy_from_slice(&32u16.to_le_bytes());
        b[32..36].copy_from_slice(&40_000u32.to_le_bytes());
        b[38] = 0x29;
        b[39..43].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        b[43..54].copy_from_slice(b"BOOTLABEL  ");
        b[510] = 0x55;
        b[511] = 0xAA;
        // The root directory (after 4 reserved and 2 x 32 FAT sectors)
        // starts with the volume label entry.
        let root = (4 + 2 * 32) * 512;
        b.resize(root + 512 * 32, 0);
        b[root..root + 11].copy_from_slice(b"MYLABEL    ");
        b[root + 11] = 0x08;
        b
    }

    #[test]
    fn fat_type_comes_from_the_cluster_count() {
        let d = MemoryDevice::new(fat16_boot());
        let i = detect(&d).unwrap().unwrap();
        // (40000 - 4 reserved - 2 * 32 FAT - 32 root) / 4 = 9975 clusters: FAT16.
        assert_eq!(i.kind, FsKind::Fat16);
        assert_eq!(i.label.as_deref(), Some("MYLABEL"));
        assert_eq!(i.uuid.as_deref(), Some("1234-ABCD"));
        let mut b = fat16_boot();
        b[32..36].copy_from_slice(&10_000u32.to_le_bytes());
        let i = detect(&MemoryDevice::new(b)).unwrap().unwrap();
        assert_eq!(i.kind, FsKind::Fat12);
    }

    #[test]
    fn fat_label_and_serial_follow_blkid() {
        // No extended boot signature: no serial field.
        let mut b = fat16_boot();
        b[38] = 0;
        assert_eq!(detect(&MemoryDevice::new(b)).unwrap().unwrap().uuid, None);
        // No root label entry: no label (the boot sector's copy is not shown).
        let mut b = fat16_boot();
        b[(4 + 2 * 32) * 512] = 0xE5;
        assert_eq!(detect(&MemoryDevice::new(b)).unwrap().unwrap().label, None);
        // A root directory past the end of the device: still FAT16, no label.
        let mut b = fat16_boot();
        b.truncate(4096);
        let i = detect(&MemoryDevice::new(b)).unwrap().unwrap();
        assert_eq!((i.kind, i.label), (FsKind::Fat16, None));
    }

    #[test]
    fn journal_device_is_jbd_with_its_label_and_uuid() {
        let mut b = vec![0u8; 4096];
        b[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        b[1024 + 0x60] = 0x8; // incompat journal_dev
        b[1024 + 104..1024 + 120].copy_from_slice(&[0x11; 16]);
        b[1024 + 120..1024 + 130].copy_from_slice(b"extjournal");
        let i = detect(&MemoryDevice::new(b)).unwrap().unwrap();
        assert_eq!(i.kind, FsKind::Jbd);
        assert_eq!(i.label.as_deref(), Some("extjournal"));
        assert_eq!(
            i.uuid.as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
    }

    #[test]
    fn luks_wins_over_a_swap_signature_left_in_its_padding() {
        let mut b = vec![0u8; 8192];
        b[..6].copy_from_slice(b"LUKS\xba\xbe");
        b[7] = 1;
        b[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(
            detect(&MemoryDevice::new(b)).unwrap().unwrap().kind,
            FsKind::Luks
        );
    }

    #[test]
    fn nothing_known_is_none() {
        assert_eq!(detect(&MemoryDevice::new(vec![0u8; 100])).unwrap(), None);
        assert_eq!(detect(&MemoryDevice::new(Vec::new())).unwrap(), None);
    }
}
