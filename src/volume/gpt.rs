//! GUID partition tables (UEFI specification, chapter 5.3): the header at
//! LBA 1 with its CRC32, the partition entry array with its CRC32, and the
//! backup header at the last LBA, used when the primary is damaged (a
//! warning says so).
//!
//! Sizes come from the device's logical sector size (512 or 4096 bytes).
//! The entry array (`NumberOfPartitionEntries × SizeOfPartitionEntry`) is
//! capped at [`MAX_ENTRY_ARRAY_BYTES`] and must lie inside the disk.

use binrw::BinRead;
use diskimage_formats::layout::{self, Layout};
use diskimage_formats::{BlockDevice, Guid};

use super::{read_bytes, Partition, PartitionKind, PartitionTable};
use crate::error::{Detail, Error, Result, Scheme};

/// The header signature, `EFI PART`.
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The smallest header size the specification allows, bytes (what
/// [`GptHeaderRaw`] declares).
const MIN_HEADER_SIZE: u32 = 92;
/// The smallest entry size the specification allows, bytes.
const MIN_ENTRY_SIZE: u32 = 128;
/// The largest entry array read: 1 MiB (the usual array is 16 KiB: 128 × 128).
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;
/// Offset of `HeaderSize` in the header.
const HEADER_SIZE_AT: u64 = 12;
/// Offset of `HeaderCRC32` in the header.
const HEADER_CRC32_AT: usize = 16;
/// Offset of `MyLBA` in the header.
const MY_LBA_AT: u64 = 24;
/// Offset of `PartitionEntryLBA` in the header.
const PARTITION_ENTRY_LBA_AT: u64 = 72;
/// Offset of `NumberOfPartitionEntries` in the header.
const NUMBER_OF_PARTITION_ENTRIES_AT: u64 = 80;
/// Offset of `SizeOfPartitionEntry` in the header.
const SIZE_OF_PARTITION_ENTRY_AT: u64 = 84;
/// Offset of `EndingLBA` in an entry.
const ENDING_LBA_AT: u64 = 40;

/// The GPT header as it lies on disk (UEFI 2.x, 5.3.2, table "GPT
/// Header"); the rest of its block is reserved.
#[derive(BinRead, Debug)]
#[br(little)]
struct GptHeaderRaw {
    signature: [u8; 8],
    /// Followed by `Revision`.
    #[br(pad_before = 4)]
    header_size: u32,
    /// Followed by a reserved u32.
    #[br(pad_after = 4)]
    header_crc32: u32,
    /// Followed by `AlternateLBA`, `FirstUsableLBA` and `LastUsableLBA`.
    #[br(pad_after = 24)]
    my_lba: u64,
    disk_guid: [u8; 16],
    partition_entry_lba: u64,
    number_of_partition_entries: u32,
    size_of_partition_entry: u32,
    partition_entry_array_crc32: u32,
}

impl Layout for GptHeaderRaw {
    const SIZE: usize = MIN_HEADER_SIZE as usize;
    const NAME: &'static str = "GPT header";
}

/// A GPT partition entry as it lies on disk (UEFI 2.x, 5.3.3, table "GPT
/// Partition Entry"); an entry of `SizeOfPartitionEntry` > 128 bytes has
/// reserved bytes after these.
#[derive(BinRead, Debug)]
#[br(little)]
struct GptPartitionEntry {
    partition_type_guid: [u8; 16],
    unique_partition_guid: [u8; 16],
    starting_lba: u64,
    ending_lba: u64,
    attributes: u64,
    /// UTF-16LE, NUL-terminated when shorter than 36 code units.
    partition_name: [u16; 36],
}

impl Layout for GptPartitionEntry {
    const SIZE: usize = MIN_ENTRY_SIZE as usize;
    const NAME: &'static str = "GPT partition entry";
}

/// The GPT header fields this reader uses (UEFI 2.x table 5-5), raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GptHeader {
    pub my_lba: u64,
    pub disk_guid: [u8; 16],
    pub partition_entry_lba: u64,
    pub number_of_partition_entries: u32,
    pub size_of_partition_entry: u32,
    pub partition_entry_array_crc32: u32,
}

fn corrupt(detail: Detail, at: u64) -> Error {
    Error::corrupt(Scheme::Gpt, detail).at(at)
}

/// Parses and checks the header in `sector`, read from byte `at`.
fn parse_header(sector: &[u8], at: u64) -> Result<GptHeader> {
    let raw = layout::read::<GptHeaderRaw>(sector)
        .ok()
        .filter(|raw| raw.signature == *SIGNATURE);
    let Some(raw) = raw else {
        return Err(corrupt(
            Detail::BadSignature {
                what: "GPT header signature",
                expected: "EFI PART".into(),
                found: diskimage_formats::error::hex_preview(sector.get(..8).unwrap_or_default()),
            },
            at,
        ));
    };
    let header_size = raw.header_size;
    if header_size < MIN_HEADER_SIZE || header_size as usize > sector.len() {
        return Err(corrupt(
            Detail::BadValue {
                field: "HeaderSize",
                value: u64::from(header_size),
                expected: format!("between {MIN_HEADER_SIZE} and {}", sector.len()),
            },
            at + HEADER_SIZE_AT,
        ));
    }
    let stored = raw.header_crc32;
    let mut copy = sector
        .get(..header_size as usize)
        .unwrap_or_default()
        .to_vec();
    if let Some(crc) = copy.get_mut(HEADER_CRC32_AT..HEADER_CRC32_AT + 4) {
        crc.fill(0);
    }
    let computed = crc32fast::hash(&copy);
    if stored != computed {
        return Err(corrupt(
            Detail::Checksum {
                what: "GPT header",
                stored: u64::from(stored),
                computed: u64::from(computed),
            },
            at + HEADER_CRC32_AT as u64,
        ));
    }
    Ok(GptHeader {
        my_lba: raw.my_lba,
        disk_guid: raw.disk_guid,
        partition_entry_lba: raw.partition_entry_lba,
        number_of_partition_entries: raw.number_of_partition_entries,
        size_of_partition_entry: raw.size_of_partition_entry,
        partition_entry_array_crc32: raw.partition_entry_array_crc32,
    })
}

/// Reads one header at `lba` and its entry array; every check applied.
fn read_copy(dev: &dyn BlockDevice, lba: u64) -> Result<(GptHeader, Vec<Partition>)> {
    let sector = u64::from(dev.sector_size().max(512));
    let at = lba * sector;
    let buf = read_bytes(dev, at, sector as usize, Scheme::Gpt)?;
    let h = parse_header(&buf, at)?;
    if h.my_lba != lba {
        return Err(corrupt(
            Detail::BadValue {
                field: "MyLBA",
                value: h.my_lba,
                expected: format!("{lba} (where the header is)"),
            },
            at + MY_LBA_AT,
        ));
    }
    let esize = h.size_of_partition_entry;
    if esize < MIN_ENTRY_SIZE || !esize.is_power_of_two() {
        return Err(corrupt(
            Detail::BadValue {
                field: "SizeOfPartitionEntry",
                value: u64::from(esize),
                expected: "128 × 2^n".into(),
            },
            at + SIZE_OF_PARTITION_ENTRY_AT,
        ));
    }
    let bytes = u64::from(h.number_of_partition_entries) * u64::from(esize);
    if bytes > MAX_ENTRY_ARRAY_BYTES {
        return Err(Error::limit(
            Scheme::Gpt,
            "partition entry array bytes (NumberOfPartitionEntries × SizeOfPartitionEntry)",
            bytes,
            MAX_ENTRY_ARRAY_BYTES,
        )
        .at(at + NUMBER_OF_PARTITION_ENTRIES_AT));
    }
    let array_at = h.partition_entry_lba.saturating_mul(sector);
    if array_at
        .checked_add(bytes)
        .is_none_or(|end| end > dev.size())
    {
        return Err(Error::new(
            diskimage_formats::ErrorKind::OutOfBounds,
            Scheme::Gpt,
            Detail::OutOfRange {
                what: "disk (GPT partition entry array)",
                offset: array_at,
                len: bytes,
                size: dev.size(),
            },
        )
        .at(at + PARTITION_ENTRY_LBA_AT));
    }
    // Capped above at MAX_ENTRY_ARRAY_BYTES.
    let array = read_bytes(dev, array_at, bytes as usize, Scheme::Gpt)?;
    let computed = crc32fast::hash(&array);
    if computed != h.partition_entry_array_crc32 {
        return Err(corrupt(
            Detail::Checksum {
                what: "GPT partition entry array",
                stored: u64::from(h.partition_entry_array_crc32),
                computed: u64::from(computed),
            },
            array_at,
        ));
    }
    let disk_sectors = dev.size() / sector;
    let mut parts = Vec::new();
    for (i, e) in array.chunks_exact(esize as usize).enumerate() {
        let entry_at = array_at + (i as u64) * u64::from(esize);
        // `esize` is at least the declared 128 bytes (checked above).
        let entry: GptPartitionEntry = layout::read(e).map_err(|d| corrupt(d, entry_at))?;
        let type_guid = entry.partition_type_guid;
        if type_guid == [0; 16] {
            continue;
        }
        let first = entry.starting_lba;
        let last = entry.ending_lba;
        // An entry may end past the disk's last LBA: an image cut short
        // (a partial acquisition) keeps its table. The disk set lists such
        // a partition with a warning; reads past the disk's end fail.
        let fits = last
            .checked_add(1)
            .and_then(|n| n.checked_mul(sector))
            .is_some();
        if last < first || !fits {
            return Err(corrupt(
                Detail::BadValue {
                    field: "EndingLBA",
                    value: last,
                    expected: format!(
                        "at least StartingLBA {first}, at a byte offset below 2^64 (the disk's last LBA is {})",
                        disk_sectors.saturating_sub(1)
                    ),
                },
                entry_at + ENDING_LBA_AT,
            ));
        }
        let name_units = &entry.partition_name;
        let name_len = name_units.iter().position(|&u| u == 0);
        let name = String::from_utf16_lossy(
            name_units
                .get(..name_len.unwrap_or(name_units.len()))
                .unwrap_or_default(),
        );
        let type_code = format!("{:X}", Guid(type_guid));
        parts.push(Partition {
            number: i as u32 + 1,
            offset: first * sector,
            size: (last - first + 1) * sector,
            kind: PartitionKind::Gpt,
            type_name: type_name(&type_code),
            type_code,
            name: (!name.is_empty()).then_some(name),
            guid: Some(format!("{:X}", Guid(entry.unique_partition_guid))),
            attributes: Some(entry.attributes),
            bootable: false,
        });
    }
    Ok((h, parts))
}

/// Reads the GPT of `dev`: the primary at LBA 1, or the backup at the last
/// LBA when the primary is damaged (with a warning). Fails with the
/// primary's error when neither copy is usable.
pub fn read(dev: &dyn BlockDevice) -> Result<PartitionTable> {
    let sector = u64::from(dev.sector_size().max(512));
    let last_lba = (dev.size() / sector).saturating_sub(1);
    let (header, partitions, warnings) = match read_copy(dev, 1) {
        Ok((h, p)) => (h, p, Vec::new()),
        Err(primary) => match read_copy(dev, last_lba) {
            Ok((h, p)) => (
                h,
                p,
                vec![format!(
                    "primary GPT header is damaged ({primary}); the backup header at LBA {last_lba} was used"
                )],
            ),
            Err(_) => return Err(primary),
        },
    };
    Ok(PartitionTable {
        scheme: Some(Scheme::Gpt),
        disk_id: Some(format!("{:X}", Guid(header.disk_guid))),
        partitions,
        warnings,
        unsupported: None,
    })
}

/// The common name of a GPT partition type GUID (upper case).
pub fn type_name(guid: &str) -> &'static str {
    match guid {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "024DEE41-33E7-11D3-9D69-0008C781F39F" => "MBR partition scheme",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3" => "Microsoft LDM metadata",
        "AF9B60A0-1431-4F62-BC68-3311714A69AD" => "Microsoft LDM data",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery environment",
        "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D" => "Microsoft Storage Spaces",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux root (x86)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "Linux root (ARM-64)",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC" => "Linux LUKS",
        "516E7CB4-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD data",
        "83BD6B9D-7F41-11DC-BE0B-001560B84F0F" => "FreeBSD boot",
        "516E7CB5-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD swap",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD UFS",
        "516E7CBA-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD ZFS",
        "48465300-0000-11AA-AA11-00306543ECAC" => "Apple HFS/HFS+",
        "7C3457EF-0000-11AA-AA11-00306543ECAC" => "Apple APFS",
        "AA31E02A-400F-11DB-9590-000C2911D1B8" => "VMware VMFS",
        "9D275380-40AD-11DB-BF97-000C2911D1B8" => "VMware kcore crash protection",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::{ErrorKind, MemoryDevice};

    const ESP: [u8; 16] = [
        0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9,
        0x3B,
    ];

    /// Writes a header at `lba` with entries at `entries_lba` (128 × 128 bytes).
    fn put_header(b: &mut [u8], ss: usize, lba: u64, entries_lba: u64, count: u32) {
        let entries = &b[entries_lba as usize * ss..entries_lba as usize * ss + 128 * 128];
        let ecrc = crc32fast::hash(entries);
        let h = &mut b[lba as usize * ss..lba as usize * ss + 92];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[16..20].fill(0);
        h[24..32].copy_from_slice(&lba.to_le_bytes());
        h[56..72].copy_from_slice(&[0xAB; 16]);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&ecrc.to_le_bytes());
        let crc = crc32fast::hash(h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    fn golden(ss: usize) -> Vec<u8> {
        let sectors = 4096;
        let mut b = vec![0u8; sectors * ss];
        let last = sectors as u64 - 1;
        for base in [2 * ss, (last as usize - 32) * ss] {
            let e = &mut b[base..base + 128];
            e[..16].copy_from_slice(&ESP);
            e[16..32].copy_from_slice(&[0x11; 16]);
            e[32..40].copy_from_slice(&64u64.to_le_bytes());
            e[40..48].copy_from_slice(&127u64.to_le_bytes());
            e[48..56].copy_from_slice(&1u64.to_le_bytes());
            for (i, c) in "EFI".encode_utf16().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
            }
        }
        put_header(&mut b, ss, 1, 2, 128);
        put_header(&mut b, ss, last, last - 32, 128);
        b
    }

    #[test]
    fn declarations_read_their_lengths() {
        assert_eq!(
            layout::declared_len::<GptHeaderRaw>(),
            Some(u64::from(MIN_HEADER_SIZE))
        );
        assert_eq!(
            layout::declared_len::<GptPartitionEntry>(),
            Some(u64::from(MIN_ENTRY_SIZE))
        );
    }

    #[test]
    fn golden_512_and_4096() {
        for ss in [512usize, 4096] {
            let d = MemoryDevice::new(golden(ss)).with_sector_size(ss as u32);
            let t = read(&d).unwrap();
            assert!(t.warnings.is_empty());
            let p = &t.partitions[0];
            assert_eq!(
                (p.number, p.offset, p.size),
                (1, 64 * ss as u64, 64 * ss as u64)
            );
            assert_eq!(p.type_name, "EFI System");
            assert_eq!(p.type_code, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
            assert_eq!(p.name.as_deref(), Some("EFI"));
            assert_eq!(p.attributes, Some(1));
        }
    }

    #[test]
    fn zeroed_primary_uses_the_backup_with_a_warning() {
        let mut b = golden(512);
        b[512..1024].fill(0);
        let t = read(&MemoryDevice::new(b)).unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert!(t.warnings[0].contains("backup"), "{:?}", t.warnings);
    }

    #[test]
    fn bad_crc_in_both_copies_is_corrupt() {
        let mut b = golden(512);
        b[512 + 16] ^= 1;
        let last = b.len() - 512;
        b[last + 16] ^= 1;
        let e = read(&MemoryDevice::new(b)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn four_billion_entries_is_a_limit() {
        let mut b = golden(512);
        let last = 4095;
        put_header(&mut b, 512, 1, 2, u32::MAX);
        put_header(&mut b, 512, last, last - 32, u32::MAX);
        let e = read(&MemoryDevice::new(b)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    }

    /// The golden disk with both headers changed by `f` (CRCs fixed up).
    fn mutate(f: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut b = golden(512);
        for lba in [1usize, 4095] {
            let h = &mut b[lba * 512..lba * 512 + 92];
            f(h);
            h[16..20].fill(0);
            let crc = crc32fast::hash(h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        b
    }

    #[test]
    fn one_field_mutations_give_the_exact_error_kind() {
        let kind = |b: Vec<u8>| read(&MemoryDevice::new(b)).unwrap_err().kind();
        // SizeOfPartitionEntry not 128 × 2^n.
        assert_eq!(
            kind(mutate(|h| h[84..88].copy_from_slice(&100u32.to_le_bytes()))),
            ErrorKind::Corrupt
        );
        // HeaderSize below 92.
        assert_eq!(
            kind(mutate(|h| h[12..16].copy_from_slice(&60u32.to_le_bytes()))),
            ErrorKind::Corrupt
        );
        // MyLBA not where the header is.
        assert_eq!(
            kind(mutate(|h| h[24..32].copy_from_slice(&7u64.to_le_bytes()))),
            ErrorKind::Corrupt
        );
        // The entry array past the end of the disk.
        assert_eq!(
            kind(mutate(|h| h[72..80].copy_from_slice(&4090u64.to_le_bytes()))),
            ErrorKind::OutOfBounds
        );
        // Entry array CRC.
        assert_eq!(kind(mutate(|h| h[88] ^= 1)), ErrorKind::Corrupt);
    }

    #[test]
    fn guid_text_is_mixed_endian_upper_case() {
        assert_eq!(
            format!("{:X}", Guid(ESP)),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
    }
}
