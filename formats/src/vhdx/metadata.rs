//! The metadata region ([MS-VHDX] 2.6): a 64 KiB table of items, then the
//! items — file parameters, virtual disk size, page 83 data (the virtual
//! disk ID), logical and physical sector size, and a differencing disk's
//! parent locator. An unknown item marked required is refused naming its GUID.

use binrw::BinRead;

use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::layout::{self, Layout};

use super::fields::{le_u32, le_u64, Guid};
use super::file_view::FileView;
use super::header::{KIB, MIB};
use super::parent_locator::{self, ParentLocator};
use super::region_table::Region;

/// Size of the metadata table at the start of the region.
pub(crate) const METADATA_TABLE_SIZE: u64 = 64 * KIB;
/// The most entries the table may hold.
pub(crate) const MAX_METADATA_ENTRIES: u16 = 2047;
/// The largest metadata item this reader loads (a parent locator is a few KiB).
pub(crate) const MAX_ITEM_LENGTH: u64 = MIB;
/// Smallest block size allowed ([MS-VHDX] 2.6.2.1).
pub(crate) const MIN_BLOCK_SIZE: u32 = 1 << 20;
/// Largest block size allowed.
pub(crate) const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest virtual disk size allowed: 64 TiB.
pub(crate) const MAX_VIRTUAL_DISK_SIZE: u64 = 64 << 40;
/// Table signature.
const SIGNATURE: &[u8; 8] = b"metadata";
/// Size of the table header.
const TABLE_HEADER_SIZE: usize = 32;
/// Size of one table entry.
const ENTRY_SIZE: usize = 32;
/// `IsRequired` flag bit of an entry.
const IS_REQUIRED: u32 = 1 << 2;
/// Offset of `EntryCount` in the table header.
const ENTRY_COUNT_AT: u64 = 10;
/// Offset of `Offset` in an entry.
const OFFSET_AT: u64 = 16;
/// Offset of `Length` in an entry.
const LENGTH_AT: u64 = 20;
/// Size of the file parameters item.
const FILE_PARAMETERS_SIZE: usize = 8;
/// `LeaveBlockAllocated` bit of the file parameters' flags.
const LEAVE_BLOCK_ALLOCATED: u32 = 1;
/// `HasParent` bit of the file parameters' flags.
const HAS_PARENT: u32 = 1 << 1;

/// The metadata table header ([MS-VHDX] 2.6.1.1).
#[derive(BinRead, Debug)]
#[br(little)]
struct MetadataTableHeader {
    /// Followed by a reserved u16.
    #[br(pad_after = 2)]
    signature: [u8; 8],
    /// Followed by five reserved u32s.
    #[br(pad_after = 20)]
    entry_count: u16,
}

impl Layout for MetadataTableHeader {
    const SIZE: usize = TABLE_HEADER_SIZE;
    const NAME: &'static str = "metadata table header";
}

/// A metadata table entry ([MS-VHDX] 2.6.1.2).
#[derive(BinRead, Debug)]
#[br(little)]
struct MetadataTableEntry {
    #[br(map = Guid)]
    item_id: Guid,
    /// Bytes from the start of the metadata region.
    offset: u32,
    length: u32,
    /// Bit 0 `IsUser`, bit 1 `IsVirtualDisk`, bit 2 `IsRequired`; the
    /// rest reserved. Followed by a reserved u32.
    #[br(pad_after = 4)]
    flags: u32,
}

impl Layout for MetadataTableEntry {
    const SIZE: usize = ENTRY_SIZE;
    const NAME: &'static str = "metadata table entry";
}

/// The file parameters item ([MS-VHDX] 2.6.2.1).
#[derive(BinRead, Debug)]
#[br(little)]
struct FileParameters {
    block_size: u32,
    /// Bit 0 `LeaveBlockAllocated`, bit 1 `HasParent`; the rest reserved.
    flags: u32,
}

impl Layout for FileParameters {
    const SIZE: usize = FILE_PARAMETERS_SIZE;
    const NAME: &'static str = "metadata item file parameters";
}

/// File parameters item.
pub(crate) const FILE_PARAMETERS: Guid = Guid::from_fields(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
/// Virtual disk size item.
pub(crate) const VIRTUAL_DISK_SIZE: Guid = Guid::from_fields(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// Page 83 data item (the virtual disk ID).
pub(crate) const PAGE_83_DATA: Guid = Guid::from_fields(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
/// Logical sector size item.
pub(crate) const LOGICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
/// Physical sector size item.
pub(crate) const PHYSICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
/// Parent locator item.
pub(crate) const PARENT_LOCATOR: Guid = Guid::from_fields(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

/// The metadata items this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metadata {
    /// `BlockSize` in bytes.
    pub(crate) block_size: u32,
    /// `LeaveBlockAllocated`: blocks are never freed (a fixed disk).
    pub(crate) leave_block_allocated: bool,
    /// `HasParent`: a differencing disk.
    pub(crate) has_parent: bool,
    /// `VirtualDiskSize` in bytes.
    pub(crate) virtual_disk_size: u64,
    /// The page 83 data: the virtual disk ID.
    pub(crate) virtual_disk_id: Guid,
    /// `LogicalSectorSize` (512 or 4096).
    pub(crate) logical_sector_size: u32,
    /// `PhysicalSectorSize` (512 or 4096).
    pub(crate) physical_sector_size: u32,
    /// The parent locator, for a differencing disk.
    pub(crate) parent_locator: Option<ParentLocator>,
}

fn corrupt(detail: Detail, at: u64) -> Error {
    Error::corrupt(Format::Vhdx, detail).at(at)
}

fn bad_value(field: &'static str, value: u64, expected: &str, at: u64) -> Error {
    Error::bad_value(Format::Vhdx, field, value, expected).at(at)
}

/// Reads and checks the metadata region.
pub(crate) fn read(view: &FileView, region: Region) -> Result<Metadata> {
    let base = region.file_offset;
    let table = view.read_vec(base, METADATA_TABLE_SIZE.min(region.length))?;
    let header = match layout::read::<MetadataTableHeader>(&table) {
        Ok(h) if h.signature == *SIGNATURE => h,
        _ => {
            return Err(corrupt(
                Detail::BadSignature {
                    what: "metadata table signature",
                    expected: "metadata".into(),
                    found: hex_preview(table.get(..8).unwrap_or_default()),
                },
                base,
            ))
        }
    };
    let count = header.entry_count;
    if count > MAX_METADATA_ENTRIES {
        return Err(bad_value(
            "EntryCount",
            count.into(),
            &format!("at most {MAX_METADATA_ENTRIES}"),
            base + ENTRY_COUNT_AT,
        ));
    }
    let mut items: Vec<(Guid, Vec<u8>, u64)> = Vec::new();
    for i in 0..usize::from(count) {
        let o = TABLE_HEADER_SIZE + i * ENTRY_SIZE;
        let entry_at = base + o as u64;
        let entry: MetadataTableEntry =
            layout::read_at(&table, o).map_err(|d| corrupt(d, entry_at))?;
        let id = entry.item_id;
        let offset = u64::from(entry.offset);
        let length = u64::from(entry.length);
        let flags = entry.flags;
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            PAGE_83_DATA,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ]
        .contains(&id);
        if !known {
            if flags & IS_REQUIRED != 0 {
                return Err(Error::unsupported(
                    Format::Vhdx,
                    format!(
                        "metadata item {{{id}}} is marked required and is not known to this reader"
                    ),
                )
                .at(entry_at));
            }
            continue;
        }
        if items.iter().any(|(g, _, _)| *g == id) {
            return Err(corrupt(
                Detail::Invalid(format!("metadata item {{{id}}} is listed twice")),
                entry_at,
            ));
        }
        Error::ensure_at_most(
            Format::Vhdx,
            "metadata item length",
            length,
            MAX_ITEM_LENGTH,
        )
        .map_err(|e| e.at(entry_at + LENGTH_AT))?;
        if length != 0 && (offset < METADATA_TABLE_SIZE || offset + length > region.length) {
            return Err(bad_value(
                "metadata item Offset",
                offset,
                &format!(
                    "at least 64 KiB, with the item inside the {} bytes of the region",
                    region.length
                ),
                entry_at + OFFSET_AT,
            ));
        }
        let data = view.read_vec(base + offset, length)?;
        items.push((id, data, base + offset));
    }
    let item = |id: Guid, name: &'static str, min_len: usize| -> Result<(&[u8], u64)> {
        match items.iter().find(|(g, _, _)| *g == id) {
            Some((_, d, at)) if d.len() >= min_len => Ok((d.as_slice(), *at)),
            Some((_, d, at)) => Err(corrupt(
                Detail::Truncated {
                    what: format!("metadata item {name}"),
                    needed: min_len as u64,
                    available: d.len() as u64,
                },
                *at,
            )),
            None => Err(corrupt(
                Detail::Invalid(format!("required metadata item {name} {{{id}}} is missing")),
                base,
            )),
        }
    };
    let (fp, fp_at) = item(FILE_PARAMETERS, "file parameters", FILE_PARAMETERS_SIZE)?;
    let FileParameters {
        block_size,
        flags: fp_flags,
    } = layout::read(fp).map_err(|d| corrupt(d, fp_at))?;
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(bad_value(
            "BlockSize",
            block_size.into(),
            "a power of two from 1 MiB to 256 MiB",
            fp_at,
        ));
    }
    let (ls, ls_at) = item(LOGICAL_SECTOR_SIZE, "logical sector size", 4)?;
    let logical_sector_size = le_u32(ls, 0);
    if logical_sector_size != 512 && logical_sector_size != 4096 {
        return Err(bad_value(
            "LogicalSectorSize",
            logical_sector_size.into(),
            "512 or 4096",
            ls_at,
        ));
    }
    let (ps, ps_at) = item(PHYSICAL_SECTOR_SIZE, "physical sector size", 4)?;
    let physical_sector_size = le_u32(ps, 0);
    if physical_sector_size != 512 && physical_sector_size != 4096 {
        return Err(bad_value(
            "PhysicalSectorSize",
            physical_sector_size.into(),
            "512 or 4096",
            ps_at,
        ));
    }
    let (vs, vs_at) = item(VIRTUAL_DISK_SIZE, "virtual disk size", 8)?;
    let virtual_disk_size = le_u64(vs, 0);
    Error::ensure_at_most(
        Format::Vhdx,
        "VirtualDiskSize",
        virtual_disk_size,
        MAX_VIRTUAL_DISK_SIZE,
    )
    .map_err(|e| e.at(vs_at))?;
    if virtual_disk_size % u64::from(logical_sector_size) != 0 {
        return Err(bad_value(
            "VirtualDiskSize",
            virtual_disk_size,
            &format!("a multiple of the {logical_sector_size}-byte logical sector"),
            vs_at,
        ));
    }
    let (p83, _) = item(PAGE_83_DATA, "page 83 data", 16)?;
    let has_parent = fp_flags & HAS_PARENT != 0;
    let parent_locator = match items.iter().find(|(g, _, _)| *g == PARENT_LOCATOR) {
        Some((_, d, at)) if has_parent => Some(parent_locator::parse(d, *at)?),
        _ if has_parent => {
            return Err(corrupt(
                Detail::Invalid("HasParent is set but the parent locator item is missing".into()),
                fp_at,
            ))
        }
        _ => None,
    };
    Ok(Metadata {
        block_size,
        leave_block_allocated: fp_flags & LEAVE_BLOCK_ALLOCATED != 0,
        has_parent,
        virtual_disk_size,
        virtual_disk_id: Guid::read_le(p83, 0),
        logical_sector_size,
        physical_sector_size,
        parent_locator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_file::ImageFile;
    use crate::ErrorKind;

    /// A metadata region at 1 MiB of a 2 MiB file with the five required items.
    fn golden() -> Vec<u8> {
        let mut f = vec![0u8; 2 * MIB as usize];
        let base = MIB as usize;
        f[base..base + 8].copy_from_slice(b"metadata");
        let items: [(Guid, Vec<u8>); 5] = [
            (
                FILE_PARAMETERS,
                [(32u32 << 20).to_le_bytes(), 0u32.to_le_bytes()].concat(),
            ),
            (VIRTUAL_DISK_SIZE, (1u64 << 30).to_le_bytes().to_vec()),
            (PAGE_83_DATA, vec![0x83; 16]),
            (LOGICAL_SECTOR_SIZE, 512u32.to_le_bytes().to_vec()),
            (PHYSICAL_SECTOR_SIZE, 4096u32.to_le_bytes().to_vec()),
        ];
        f[base + 10..base + 12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        for (i, (g, data)) in items.iter().enumerate() {
            let e = base + 32 + 32 * i;
            let off = 64 * 1024 + 64 * i;
            f[e..e + 16].copy_from_slice(&g.0);
            f[e + 16..e + 20].copy_from_slice(&(off as u32).to_le_bytes());
            f[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            f[e + 24..e + 28].copy_from_slice(&4u32.to_le_bytes());
            f[base + off..base + off + data.len()].copy_from_slice(data);
        }
        f
    }

    fn parse(f: Vec<u8>) -> Result<Metadata> {
        let view = FileView::new(ImageFile::from_bytes("m.vhdx", f));
        read(
            &view,
            Region {
                file_offset: MIB,
                length: MIB,
            },
        )
    }

    #[test]
    fn declarations_read_their_lengths() {
        assert_eq!(
            layout::declared_len::<MetadataTableHeader>(),
            Some(TABLE_HEADER_SIZE as u64)
        );
        assert_eq!(
            layout::declared_len::<MetadataTableEntry>(),
            Some(ENTRY_SIZE as u64)
        );
        assert_eq!(
            layout::declared_len::<FileParameters>(),
            Some(FILE_PARAMETERS_SIZE as u64)
        );
    }

    #[test]
    fn golden_metadata_parses() {
        let m = parse(golden()).unwrap();
        assert_eq!(m.block_size, 32 << 20);
        assert_eq!(m.virtual_disk_size, 1 << 30);
        assert_eq!(m.physical_sector_size, 4096);
        assert!(!m.has_parent && m.parent_locator.is_none());
    }

    #[test]
    fn one_field_mutations_give_the_exact_error() {
        let item = |i: usize| MIB as usize + 64 * 1024 + 64 * i;
        let entry = |i: usize| MIB as usize + 32 + 32 * i;
        // (byte, value, kind, message part)
        let cases: [(usize, u8, ErrorKind, &str); 9] = [
            (MIB as usize, b'x', ErrorKind::Corrupt, "signature"),
            (MIB as usize + 11, 0x08, ErrorKind::Corrupt, "EntryCount"),
            (item(0) + 2, 0x30, ErrorKind::Corrupt, "BlockSize"),
            (item(0) + 3, 0x00, ErrorKind::Corrupt, "BlockSize"),
            (
                item(0) + 4,
                0x02,
                ErrorKind::Corrupt,
                "parent locator item is missing",
            ),
            (
                item(1) + 6,
                0x01,
                ErrorKind::LimitExceeded,
                "VirtualDiskSize",
            ),
            (item(3) + 1, 0x04, ErrorKind::Corrupt, "LogicalSectorSize"),
            (entry(0), 0x00, ErrorKind::Unsupported, "marked required"),
            (entry(2) + 18, 0x20, ErrorKind::Corrupt, "Offset"),
        ];
        for (byte, value, kind, text) in cases {
            let mut f = golden();
            f[byte] = value;
            let e = parse(f).unwrap_err();
            assert_eq!(e.kind(), kind, "byte {byte:#x}: {e}");
            assert!(e.to_string().contains(text), "{e}");
        }
        let mut f = golden();
        f[item(0) + 2] = 0x30; // 3 MiB + 32 MiB is not a power of two
        f[item(0) + 3] = 0x00;
        assert!(parse(f).is_err());
    }
}
