//! FAT boot sectors: the type, the label and the serial number, decided
//! as the kernel, fsck.fat and blkid decide them.
//!
//! - **Type.** A BPB whose 16-bit FAT size is zero and 32-bit one is set
//!   is FAT32 whatever its cluster count (a 1.44 MB floppy formatted
//!   FAT32 has 2,804 clusters); otherwise the cluster count picks FAT12
//!   (under 4,085) or FAT16. A count past what the type's entries can
//!   address is not a FAT volume (blkid's rule).
//! - **Label.** The volume-label entry of the root directory (attribute
//!   `VOLUME_ID` without `DIRECTORY`, no first cluster, not deleted, not
//!   a long-name entry), as Windows and blkid show it. The boot sector's
//!   copy is what `blkid` calls `LABEL_FATBOOT`: it is not the label (it
//!   may be stale) and is not shown when the root directory has none.
//!   FAT32 root directories are followed through the FAT for at most
//!   [`MAX_ROOT_CLUSTERS`] clusters.
//! - **Serial.** FAT32's always; FAT12/16's when the extended boot
//!   signature (0x28 or 0x29) says the field is there.

use diskimage_formats::bytes::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use super::{fat_serial, label, FsInfo, FsKind};

/// Most clusters of a FAT32 root directory searched for the label
/// (blkid's bound).
pub const MAX_ROOT_CLUSTERS: u32 = 100;
/// Clusters from which a volume without a FAT32 BPB is FAT16.
const FAT16_MIN: u64 = 4085;
/// Most clusters a FAT16 volume has.
const FAT16_MAX: u64 = 0xFFF4;
/// Most clusters a FAT32 volume has.
const FAT32_MAX: u64 = 0x0FFF_FFF6;
/// Directory entry size.
const ENTRY: usize = 32;
/// Attribute bits of a directory entry.
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0F;

/// The BPB fields detection needs.
#[derive(Debug, Clone, Copy)]
struct Bpb {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved: u64,
    fats: u64,
    root_entries: u64,
    fat_size_16: u64,
    fat_size_32: u64,
    total_sectors: u64,
    root_cluster: u32,
}

impl Bpb {
    /// The BPB of boot sector `b`, if it is a plausible FAT BPB.
    fn parse(b: &[u8]) -> Option<Self> {
        // A FAT boot sector starts with a jump (EB xx 90 or E9 xx xx); an MBR does not.
        if !matches!(b.first(), Some(0xEB | 0xE9)) {
            return None;
        }
        let n16 = |o| le_u16(b, o).map(u64::from);
        let n32 = |o| le_u32(b, o).map(u64::from);
        let bpb = Bpb {
            bytes_per_sector: n16(11)?,
            sectors_per_cluster: u64::from(*b.get(13)?),
            reserved: n16(14)?,
            fats: u64::from(*b.get(16)?),
            root_entries: n16(17)?,
            fat_size_16: n16(22)?,
            fat_size_32: n32(36)?,
            total_sectors: match n16(19)? {
                0 => n32(32)?,
                n => n,
            },
            root_cluster: le_u32(b, 44)?,
        };
        let ok = matches!(bpb.bytes_per_sector, 512 | 1024 | 2048 | 4096)
            && bpb.sectors_per_cluster.is_power_of_two()
            && bpb.reserved != 0
            && bpb.fats != 0
            && bpb.fat_size() != 0;
        ok.then_some(bpb)
    }

    /// FAT32 by the BPB: no 16-bit FAT size, a 32-bit one.
    fn is_fat32(&self) -> bool {
        self.fat_size_16 == 0 && self.fat_size_32 != 0
    }

    /// Sectors of one FAT.
    fn fat_size(&self) -> u64 {
        if self.fat_size_16 != 0 {
            self.fat_size_16
        } else {
            self.fat_size_32
        }
    }

    /// Sectors before the root directory (FAT12/16) or the data area.
    fn root_start(&self) -> u64 {
        self.reserved + self.fats * self.fat_size()
    }

    /// Sectors of the FAT12/16 root directory.
    fn root_sectors(&self) -> u64 {
        (self.root_entries * ENTRY as u64).div_ceil(self.bytes_per_sector)
    }

    /// Clusters of the data area, if the BPB's sizes leave one.
    fn clusters(&self) -> Option<u64> {
        let meta = self.root_start() + self.root_sectors();
        Some(self.total_sectors.checked_sub(meta)? / self.sectors_per_cluster)
    }

    /// The FAT type, or `None` when the cluster count is more than the
    /// type's entries can address.
    fn kind(&self) -> Option<FsKind> {
        let clusters = self.clusters()?;
        if self.is_fat32() {
            (clusters <= FAT32_MAX).then_some(FsKind::Fat32)
        } else if clusters < FAT16_MIN {
            Some(FsKind::Fat12)
        } else {
            (clusters <= FAT16_MAX).then_some(FsKind::Fat16)
        }
    }
}

/// The FAT type of boot sector `b`, or `None` when it is not a FAT BPB.
#[cfg(test)]
fn kind(b: &[u8]) -> Option<FsKind> {
    Bpb::parse(b)?.kind()
}

/// What the FAT volume on `device` (boot sector `b`) is, or `None` when
/// `b` is not a FAT boot sector.
pub(super) fn info(device: &dyn BlockDevice, b: &[u8]) -> Option<FsInfo> {
    let bpb = Bpb::parse(b)?;
    let kind = bpb.kind()?;
    let (label, uuid) = if kind == FsKind::Fat32 {
        (fat32_root_label(device, &bpb), fat_serial(b, 67))
    } else {
        let has_serial = matches!(b.get(38), Some(0x28 | 0x29));
        (
            fat16_root_label(device, &bpb),
            has_serial.then(|| fat_serial(b, 39)).flatten(),
        )
    };
    Some(FsInfo { kind, label, uuid })
}

/// What a search of one directory chunk found.
enum Found {
    Label(Option<String>),
    /// An end-of-directory entry (a zero first byte).
    End,
    /// Neither: the label may be further on.
    NotHere,
}

/// The volume-label entry among the 32-byte entries of `dir`.
fn search(dir: &[u8]) -> Found {
    for e in dir.chunks_exact(ENTRY) {
        let first = e.first().copied().unwrap_or(0);
        let attr = e.get(11).copied().unwrap_or(0);
        let cluster = le_u16(e, 20).unwrap_or(0) | le_u16(e, 26).unwrap_or(0);
        if first == 0 {
            return Found::End;
        }
        if first == 0xE5 || cluster != 0 || attr & 0x3F == ATTR_LONG_NAME {
            continue;
        }
        if attr & (ATTR_VOLUME_ID | ATTR_DIRECTORY) == ATTR_VOLUME_ID {
            return Found::Label(label(e, 0, 11));
        }
    }
    Found::NotHere
}

/// The label entry of a FAT12/16 root directory (its fixed region; a
/// region past the end of the device is searched as far as it goes).
fn fat16_root_label(device: &dyn BlockDevice, bpb: &Bpb) -> Option<String> {
    let start = bpb.root_start().checked_mul(bpb.bytes_per_sector)?;
    // At most 65,535 entries: 2 MiB.
    let len = (bpb.root_entries * ENTRY as u64).min(device.size().checked_sub(start)?);
    let mut dir = vec![0u8; usize::try_from(len).ok()?];
    device.read_at(&mut dir, start).ok()?;
    match search(&dir) {
        Found::Label(l) => l,
        Found::End | Found::NotHere => None,
    }
}

/// The label entry of a FAT32 root directory, followed through the FAT
/// from its first cluster for at most [`MAX_ROOT_CLUSTERS`] clusters;
/// an unreadable cluster or FAT entry ends the search.
fn fat32_root_label(device: &dyn BlockDevice, bpb: &Bpb) -> Option<String> {
    let cluster_bytes = bpb.sectors_per_cluster.checked_mul(bpb.bytes_per_sector)?;
    let data_start = bpb.root_start().checked_mul(bpb.bytes_per_sector)?;
    let fat_start = bpb.reserved.checked_mul(bpb.bytes_per_sector)?;
    let fat_entries = bpb.fat_size_32.checked_mul(bpb.bytes_per_sector)? / 4;
    let mut buf = vec![0u8; usize::try_from(cluster_bytes).ok()?];
    let mut next = bpb.root_cluster;
    for _ in 0..MAX_ROOT_CLUSTERS {
        if next < 2 || u64::from(next) >= fat_entries {
            return None;
        }
        let at = data_start.checked_add((u64::from(next) - 2).checked_mul(cluster_bytes)?)?;
        device.read_at(&mut buf, at).ok()?;
        // An end entry ends this cluster's search only (as blkid does).
        if let Found::Label(l) = search(&buf) {
            return l;
        }
        let mut entry = [0u8; 4];
        device
            .read_at(&mut entry, fat_start.checked_add(u64::from(next) * 4)?)
            .ok()?;
        next = u32::from_le_bytes(entry) & 0x0FFF_FFFF;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    /// A FAT32-layout boot sector of `clusters` clusters of one sector.
    fn fat32_boot(clusters: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0xEB;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[14..16].copy_from_slice(&32u16.to_le_bytes());
        b[16] = 2;
        let fat = (clusters + 2).div_ceil(128);
        b[36..40].copy_from_slice(&fat.to_le_bytes());
        b[32..36].copy_from_slice(&(32 + 2 * fat + clusters).to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[67..71].copy_from_slice(&0x3232_0001u32.to_le_bytes());
        b[71..82].copy_from_slice(b"BOOT32     ");
        b
    }

    #[test]
    fn fat32_layout_is_fat32_whatever_the_cluster_count() {
        for clusters in [2_804, 70_000] {
            assert_eq!(kind(&fat32_boot(clusters)), Some(FsKind::Fat32));
        }
    }

    #[test]
    fn fat32_label_is_the_root_entry_not_the_boot_sector() {
        let mut img = fat32_boot(2_804);
        let fat = u64::from(le_u32(&img, 36).unwrap());
        img.resize(512 * (32 + 2 * fat as usize + 4), 0);
        let data = 512 * (32 + 2 * fat as usize);
        // Root cluster 2 holds a deleted label, then a long-name entry,
        // then the label; FAT entry 2 ends the chain.
        img[data..data + 11].copy_from_slice(b"\xE5LD        ");
        img[data + 11] = 0x08;
        img[data + 32] = b'A';
        img[data + 32 + 11] = 0x0F;
        img[data + 64..data + 75].copy_from_slice(b"ROOT32     ");
        img[data + 64 + 11] = 0x08;
        img[512 * 32 + 8..512 * 32 + 12].copy_from_slice(&0x0FFF_FFFFu32.to_le_bytes());
        let boot = img[..512].to_vec();
        let i = info(&MemoryDevice::new(img.clone()), &boot).unwrap();
        assert_eq!(i.kind, FsKind::Fat32);
        assert_eq!(i.label.as_deref(), Some("ROOT32"));
        assert_eq!(i.uuid.as_deref(), Some("3232-0001"));
        // No label entry: no label (the boot sector's copy is not one).
        img[data + 64] = 0xE5;
        let i = info(&MemoryDevice::new(img.clone()), &boot).unwrap();
        assert_eq!(i.label, None);
        // A root cluster past the FAT or past the device: no label, no error.
        let mut bad = boot.clone();
        bad[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(info(&MemoryDevice::new(img), &bad).unwrap().label, None);
        assert_eq!(
            info(&MemoryDevice::new(boot.clone()), &boot).unwrap().label,
            None
        );
    }

    #[test]
    fn a_root_chain_cycle_is_searched_a_bounded_number_of_times() {
        let mut img = fat32_boot(2_804);
        let fat = u64::from(le_u32(&img, 36).unwrap());
        img.resize(512 * (32 + 2 * fat as usize + 4), 0);
        let data = 512 * (32 + 2 * fat as usize);
        img[data] = b'F'; // an entry that is not a label in every cluster
        img[data + 11] = 0x20;
        img[data + 26] = 9;
        // Cluster 2 points to itself.
        img[512 * 32 + 8..512 * 32 + 12].copy_from_slice(&2u32.to_le_bytes());
        let boot = img[..512].to_vec();
        assert_eq!(info(&MemoryDevice::new(img), &boot).unwrap().label, None);
    }

    #[test]
    fn too_many_clusters_for_fat16_entries_is_not_fat() {
        let mut b = vec![0u8; 512];
        b[0] = 0xEB;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[14..16].copy_from_slice(&1u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&512u16.to_le_bytes());
        b[22..24].copy_from_slice(&256u16.to_le_bytes());
        b[32..36].copy_from_slice(&200_000u32.to_le_bytes());
        assert_eq!(kind(&b), None);
        b[32..36].copy_from_slice(&60_000u32.to_le_bytes());
        assert_eq!(kind(&b), Some(FsKind::Fat16));
    }
}
