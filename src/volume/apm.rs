//! Apple Partition Map (APM): Macintosh disks before GPT, hybrid CDs.
//!
//! Layout ("Inside Macintosh: Devices", chapter 3), big-endian:
//!
//! - Block 0, the Driver Descriptor Map: `sbSig` `"ER"` (0), `sbBlkSize`
//!   (u16 at 2, the block size in bytes), `sbBlkCount` (u32 at 4).
//! - Blocks 1.., one partition map entry per block: `pmSig` `"PM"` (0),
//!   `pmMapBlkCnt` (u32 at 4, entries in the map), `pmPyPartStart` (u32 at
//!   8, first block), `pmPartBlkCnt` (u32 at 12, blocks), `pmPartName`
//!   (32 bytes at 16), `pmParType` (32 bytes at 48, `Apple_HFS`, ...).
//!
//! Blocks are `sbBlkSize` bytes (512 on disks, 2,048 on some CDs); without
//! a driver descriptor map (a zeroed block 0) they are 512 bytes. Every
//! entry is listed but `Apple_Free` ones, which mark free space; the map's
//! own entry (`Apple_partition_map`) is listed as mmls and parted do.

use diskimage_formats::bytes::{be_u16, be_u32, has_at};
use diskimage_formats::BlockDevice;

use super::{read_bytes, Partition, PartitionKind, PartitionTable};
use crate::error::{Detail, Error, Result, Scheme};

/// Most map entries read (a map claiming more is refused as a limit).
pub const MAX_ENTRIES: u64 = 1024;
/// The partition type marking free space.
pub const FREE_TYPE: &str = "Apple_Free";
/// Bytes of an entry that are read.
const ENTRY_LEN: usize = 512;

/// Whether block 1 holds a partition map entry: the quick test.
pub fn looks_like_apm(dev: &dyn BlockDevice) -> Result<bool> {
    Ok(block_size(dev)?.is_some())
}

/// The map's block size: from the driver descriptor map, or 512 without
/// one; `None` when no `PM` entry is at block 1.
fn block_size(dev: &dyn BlockDevice) -> Result<Option<u64>> {
    if dev.size() < 2 * ENTRY_LEN as u64 {
        return Ok(None);
    }
    let b0 = read_bytes(dev, 0, ENTRY_LEN, Scheme::Apm)?;
    let bs = if has_at(&b0, 0, b"ER") {
        u64::from(be_u16(&b0, 2).unwrap_or(0))
    } else {
        512
    };
    // A DDM with a block size of 0 is written by some tools: 512.
    let bs = if bs == 0 { 512 } else { bs };
    if !bs.is_power_of_two() || !(512..=32768).contains(&bs) {
        if has_at(&b0, 0, b"ER") && probe_entry(dev, 512)? {
            return Err(Error::corrupt(
                Scheme::Apm,
                Detail::BadValue {
                    field: "sbBlkSize",
                    value: bs,
                    expected: "a power of two from 512 to 32768".into(),
                },
            )
            .at(2));
        }
        return Ok(None);
    }
    Ok(probe_entry(dev, bs)?.then_some(bs))
}

fn probe_entry(dev: &dyn BlockDevice, bs: u64) -> Result<bool> {
    if dev.size() < bs + ENTRY_LEN as u64 {
        return Ok(false);
    }
    Ok(has_at(&read_bytes(dev, bs, 2, Scheme::Apm)?, 0, b"PM"))
}

fn text(b: &[u8], at: usize) -> String {
    let raw = b.get(at..at + 32).unwrap_or_default();
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(raw.get(..end).unwrap_or_default())
        .trim_end()
        .to_owned()
}

/// Reads the map of `dev`; `None` when block 1 holds no `PM` entry.
pub fn read(dev: &dyn BlockDevice) -> Result<Option<PartitionTable>> {
    let Some(bs) = block_size(dev)? else {
        return Ok(None);
    };
    let first = read_bytes(dev, bs, ENTRY_LEN, Scheme::Apm)?;
    let count = u64::from(be_u32(&first, 4).unwrap_or(0));
    if count > MAX_ENTRIES {
        return Err(Error::limit(
            Scheme::Apm,
            "partition map entries (pmMapBlkCnt)",
            count,
            MAX_ENTRIES,
        )
        .at(bs + 4));
    }
    let mut table = PartitionTable {
        scheme: Some(Scheme::Apm),
        ..PartitionTable::default()
    };
    let disk = dev.size();
    for n in 1..=count.max(1) {
        let at = n * bs;
        if at + ENTRY_LEN as u64 > disk {
            table.warnings.push(format!(
                "Apple Partition Map: entry {n} of {count} at byte {at:#x} is past the end of the disk; the map ends there"
            ));
            break;
        }
        let e = read_bytes(dev, at, ENTRY_LEN, Scheme::Apm)?;
        if !has_at(&e, 0, b"PM") {
            table.warnings.push(format!(
                "Apple Partition Map: block {n} at byte {at:#x} holds no 'PM' entry although the map claims {count}; the map ends there"
            ));
            break;
        }
        let start = u64::from(be_u32(&e, 8).unwrap_or(0)) * bs;
        let size = u64::from(be_u32(&e, 12).unwrap_or(0)) * bs;
        let type_code = text(&e, 48);
        if type_code == FREE_TYPE || size == 0 {
            continue;
        }
        if start + size > disk {
            table.warnings.push(format!(
                "Apple Partition Map entry {n} (bytes {start}..{}) ends past the disk's {disk} bytes; skipped",
                start + size
            ));
            continue;
        }
        let name = text(&e, 16);
        table.partitions.push(Partition {
            number: n as u32,
            offset: start,
            size,
            kind: PartitionKind::Apm,
            type_name: type_name(&type_code),
            type_code,
            name: (!name.is_empty()).then_some(name),
            guid: None,
            attributes: None,
            bootable: false,
        });
    }
    Ok(Some(table))
}

/// A common name for an APM partition type.
pub fn type_name(code: &str) -> &'static str {
    match code {
        "Apple_partition_map" => "partition map",
        "Apple_Driver" | "Apple_Driver43" | "Apple_Driver_ATA" | "Apple_Driver_ATAPI"
        | "Apple_Driver_IOKit" => "Apple driver",
        "Apple_Patches" => "Apple patches",
        "Apple_HFS" => "HFS / HFS+",
        "Apple_HFSX" => "HFSX",
        "Apple_UNIX_SVR2" => "Apple UNIX (A/UX, Linux)",
        "Apple_Boot" | "Apple_Bootstrap" => "Apple boot",
        "Apple_PRODOS" => "ProDOS",
        "Apple_Void" => "void",
        "Apple_Scratch" => "scratch",
        "DOS_FAT_12" | "DOS_FAT_16" | "DOS_FAT_32" => "FAT",
        "Linux" => "Linux",
        "Linux_swap" | "Swap" => "Linux swap",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::{ErrorKind, MemoryDevice};

    fn entry(d: &mut [u8], at: usize, count: u32, start: u32, len: u32, name: &str, ty: &str) {
        d[at..at + 2].copy_from_slice(b"PM");
        d[at + 4..at + 8].copy_from_slice(&count.to_be_bytes());
        d[at + 8..at + 12].copy_from_slice(&start.to_be_bytes());
        d[at + 12..at + 16].copy_from_slice(&len.to_be_bytes());
        d[at + 16..at + 16 + name.len()].copy_from_slice(name.as_bytes());
        d[at + 48..at + 48 + ty.len()].copy_from_slice(ty.as_bytes());
    }

    /// A 1 MiB disk with 512-byte blocks: the map (3 entries), an HFS
    /// partition at 64+512 and free space.
    fn golden() -> Vec<u8> {
        let mut d = vec![0u8; 2048 * 512];
        d[..2].copy_from_slice(b"ER");
        d[2..4].copy_from_slice(&512u16.to_be_bytes());
        entry(&mut d, 512, 3, 1, 63, "Apple", "Apple_partition_map");
        entry(&mut d, 1024, 3, 64, 512, "disk", "Apple_HFS");
        entry(&mut d, 1536, 3, 576, 1472, "", "Apple_Free");
        d
    }

    #[test]
    fn golden_map_lists_entries_but_free_space() {
        let t = read(&MemoryDevice::new(golden())).unwrap().unwrap();
        let got: Vec<_> = t
            .partitions
            .iter()
            .map(|p| (p.number, p.offset / 512, p.size / 512, p.type_code.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, 1, 63, "Apple_partition_map"), (2, 64, 512, "Apple_HFS")]
        );
        assert_eq!(t.partitions[1].name.as_deref(), Some("disk"));
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn block_size_comes_from_the_ddm() {
        let mut d = vec![0u8; 512 * 2048];
        d[..2].copy_from_slice(b"ER");
        d[2..4].copy_from_slice(&2048u16.to_be_bytes());
        entry(&mut d, 2048, 2, 1, 2, "Apple", "Apple_partition_map");
        entry(&mut d, 4096, 2, 16, 32, "cd", "Apple_HFS");
        let t = read(&MemoryDevice::new(d)).unwrap().unwrap();
        assert_eq!(
            (t.partitions[1].offset, t.partitions[1].size),
            (16 * 2048, 32 * 2048)
        );
    }

    #[test]
    fn hostile_maps() {
        let mut d = golden();
        d[512 + 4..512 + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = read(&MemoryDevice::new(d)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        let mut d = golden();
        d[1536] = 0;
        let t = read(&MemoryDevice::new(d)).unwrap().unwrap();
        assert!(t.warnings[0].contains("no 'PM' entry"), "{:?}", t.warnings);
        let mut d = golden();
        d[1024 + 12..1024 + 16].copy_from_slice(&u32::MAX.to_be_bytes());
        let t = read(&MemoryDevice::new(d)).unwrap().unwrap();
        assert_eq!(t.partitions.len(), 1);
        let mut d = golden();
        d[2..4].copy_from_slice(&3u16.to_be_bytes());
        let e = read(&MemoryDevice::new(d)).unwrap_err();
        assert!(e.to_string().contains("sbBlkSize is 3"), "{e}");
        let mut d = golden();
        d[512] = 0;
        assert_eq!(read(&MemoryDevice::new(d)).unwrap(), None);
    }
}
