//! The region tables ([MS-VHDX] 2.2.3): where the BAT and the metadata
//! region are. Two copies (192 KiB and 256 KiB), each 64 KiB with a
//! CRC-32C; an unknown region marked required means the file uses a
//! feature this reader does not know, and it is refused naming the GUID.

use binrw::BinRead;

use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::image::{WarningKind, Warnings};
use crate::layout::{self, Layout};

use super::fields::Guid;
use super::file_view::FileView;
use super::header::{KIB, MIB};
use crate::crc32c;

/// Offset of region table 1.
pub(crate) const REGION_TABLE_1_OFFSET: u64 = 192 * KIB;
/// Offset of region table 2.
pub(crate) const REGION_TABLE_2_OFFSET: u64 = 256 * KIB;
/// Size of one region table, covered by its checksum.
pub(crate) const REGION_TABLE_SIZE: u64 = 64 * KIB;
/// The most entries a region table may hold.
pub(crate) const MAX_REGION_ENTRIES: u32 = 2047;
/// Size of the table header (signature, checksum, count, reserved).
const TABLE_HEADER_SIZE: usize = 16;
/// Size of one entry (GUID, offset, length, flags).
const ENTRY_SIZE: usize = 32;
/// The region table signature `regi`.
const SIGNATURE: &[u8; 4] = b"regi";
/// Offset of `EntryCount` in the table header.
const ENTRY_COUNT_AT: u64 = 8;
/// Offset of `FileOffset` in an entry.
const FILE_OFFSET_AT: u64 = 16;
/// Offset of `Length` in an entry.
const LENGTH_AT: u64 = 24;
/// `Required` bit of an entry's flags.
const REQUIRED: u32 = 1;

/// The region table header ([MS-VHDX] 2.2.3.1).
#[derive(BinRead, Debug)]
#[br(little)]
struct RegionTableHeader {
    signature: [u8; 4],
    checksum: u32,
    /// Followed by a reserved u32.
    #[br(pad_after = 4)]
    entry_count: u32,
}

impl Layout for RegionTableHeader {
    const SIZE: usize = TABLE_HEADER_SIZE;
    const NAME: &'static str = "region table header";
}

/// A region table entry ([MS-VHDX] 2.2.3.2).
#[derive(BinRead, Debug)]
#[br(little)]
struct RegionTableEntry {
    #[br(map = Guid)]
    guid: Guid,
    file_offset: u64,
    length: u32,
    /// Bit 0 `Required`; the other 31 bits are reserved.
    flags: u32,
}

impl Layout for RegionTableEntry {
    const SIZE: usize = ENTRY_SIZE;
    const NAME: &'static str = "region table entry";
}

/// The BAT region's GUID.
pub(crate) const BAT_GUID: Guid = Guid::from_fields(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
/// The metadata region's GUID.
pub(crate) const METADATA_GUID: Guid = Guid::from_fields(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);

/// One region: `length` bytes at `file_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    /// `FileOffset`, a multiple of 1 MiB.
    pub(crate) file_offset: u64,
    /// `Length`, a multiple of 1 MiB.
    pub(crate) length: u64,
}

/// The regions this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionTable {
    /// Which copy (1 or 2) they were read from.
    pub(crate) copy: u8,
    /// The block allocation table.
    pub(crate) bat: Region,
    /// The metadata region.
    pub(crate) metadata: Region,
}

/// Parses one 64 KiB region table read at file offset `at` of a file of `file_len` bytes.
pub(crate) fn parse(buf: &[u8], at: u64, copy: u8, file_len: u64) -> Result<RegionTable> {
    let corrupt =
        |detail: Detail, offset: u64| Err(Error::corrupt(Format::Vhdx, detail).at(offset));
    let header = match layout::read::<RegionTableHeader>(buf) {
        Ok(h) if h.signature == *SIGNATURE => h,
        _ => {
            return corrupt(
                Detail::BadSignature {
                    what: "region table signature",
                    expected: "regi".into(),
                    found: hex_preview(buf.get(..4).unwrap_or_default()),
                },
                at,
            )
        }
    };
    let stored = header.checksum;
    let computed = crc32c::checksum_with_hole(buf, 4);
    if stored != computed || buf.len() as u64 != REGION_TABLE_SIZE {
        return corrupt(
            Detail::Checksum {
                what: "region table",
                stored: stored.into(),
                computed: computed.into(),
            },
            at,
        );
    }
    let count = header.entry_count;
    if count > MAX_REGION_ENTRIES {
        return corrupt(
            Detail::BadValue {
                field: "EntryCount",
                value: count.into(),
                expected: format!("at most {MAX_REGION_ENTRIES}"),
            },
            at + ENTRY_COUNT_AT,
        );
    }
    let mut bat = None;
    let mut metadata = None;
    for i in 0..count as usize {
        let o = TABLE_HEADER_SIZE + i * ENTRY_SIZE;
        let entry_at = at + o as u64;
        let entry: RegionTableEntry =
            layout::read_at(buf, o).map_err(|d| Error::corrupt(Format::Vhdx, d).at(entry_at))?;
        let guid = entry.guid;
        let region = Region {
            file_offset: entry.file_offset,
            length: entry.length.into(),
        };
        let required = entry.flags & REQUIRED != 0;
        let slot = if guid == BAT_GUID {
            &mut bat
        } else if guid == METADATA_GUID {
            &mut metadata
        } else if required {
            return Err(Error::unsupported(
                Format::Vhdx,
                format!("region {{{guid}}} is marked required and is not known to this reader"),
            )
            .at(entry_at));
        } else {
            continue;
        };
        if slot.is_some() {
            return corrupt(
                Detail::Invalid(format!("region {{{guid}}} is listed twice")),
                entry_at,
            );
        }
        if region.file_offset % MIB != 0 || region.file_offset < MIB {
            return corrupt(
                Detail::BadValue {
                    field: "FileOffset",
                    value: region.file_offset,
                    expected: "a multiple of 1 MiB, at least 1 MiB".into(),
                },
                entry_at + FILE_OFFSET_AT,
            );
        }
        if region.length % MIB != 0 || region.length == 0 {
            return corrupt(
                Detail::BadValue {
                    field: "Length",
                    value: region.length,
                    expected: "a non-zero multiple of 1 MiB".into(),
                },
                entry_at + LENGTH_AT,
            );
        }
        if region
            .file_offset
            .checked_add(region.length)
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::out_of_range(
                Format::Vhdx,
                "file",
                region.file_offset,
                region.length,
                file_len,
            )
            .at(entry_at + FILE_OFFSET_AT));
        }
        *slot = Some(region);
    }
    match (bat, metadata) {
        (Some(bat), Some(metadata)) => Ok(RegionTable {
            copy,
            bat,
            metadata,
        }),
        (None, _) => corrupt(Detail::Invalid("no BAT region".into()), at),
        (_, None) => corrupt(Detail::Invalid("no metadata region".into()), at),
    }
}

/// Reads region table 1, or table 2 when table 1 is damaged (a tolerated
/// warning). Both damaged is an error naming table 1's fault.
pub(crate) fn read(view: &FileView, warnings: &mut Warnings) -> Result<RegionTable> {
    let read_one = |at: u64, copy: u8| -> Result<RegionTable> {
        let buf = view.read_vec(at, REGION_TABLE_SIZE)?;
        parse(&buf, at, copy, view.len())
    };
    let first = read_one(REGION_TABLE_1_OFFSET, 1);
    let e1 = match first {
        Ok(t) => return Ok(t),
        Err(e) if e.kind() == crate::ErrorKind::Unsupported => return Err(e),
        Err(e) => e,
    };
    match read_one(REGION_TABLE_2_OFFSET, 2) {
        Ok(t) => {
            warnings.tolerate(
                WarningKind::RedundantCopyUsed,
                Error::corrupt(
                    Format::Vhdx,
                    Detail::Invalid(format!(
                        "region table 1 is damaged ({}); region table 2 is used",
                        e1.detail()
                    )),
                )
                .at(REGION_TABLE_1_OFFSET)
                .in_file(view.file().path()),
            )?;
            Ok(t)
        }
        Err(e2) if e2.kind() == crate::ErrorKind::Unsupported => Err(e2),
        Err(e2) => Err(Error::corrupt(
            Format::Vhdx,
            Detail::Invalid(format!(
                "both region tables are damaged: table 1: {}; table 2: {}",
                e1.detail(),
                e2.detail()
            )),
        )
        .at(REGION_TABLE_1_OFFSET)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const FILE_LEN: u64 = 8 * MIB;

    pub(crate) fn golden() -> Vec<u8> {
        let mut b = vec![0u8; REGION_TABLE_SIZE as usize];
        b[..4].copy_from_slice(b"regi");
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        let entries = [(BAT_GUID, 2 * MIB), (METADATA_GUID, 3 * MIB)];
        for (i, (g, off)) in entries.iter().enumerate() {
            let o = 16 + 32 * i;
            b[o..o + 16].copy_from_slice(&g.0);
            b[o + 16..o + 24].copy_from_slice(&off.to_le_bytes());
            b[o + 24..o + 28].copy_from_slice(&(MIB as u32).to_le_bytes());
            b[o + 28..o + 32].copy_from_slice(&1u32.to_le_bytes());
        }
        seal(&mut b);
        b
    }

    fn seal(b: &mut [u8]) {
        let c = crc32c::checksum_with_hole(b, 4);
        b[4..8].copy_from_slice(&c.to_le_bytes());
    }

    #[test]
    fn declarations_read_their_lengths() {
        assert_eq!(
            layout::declared_len::<RegionTableHeader>(),
            Some(TABLE_HEADER_SIZE as u64)
        );
        assert_eq!(
            layout::declared_len::<RegionTableEntry>(),
            Some(ENTRY_SIZE as u64)
        );
    }

    #[test]
    fn golden_table_parses() {
        let t = parse(&golden(), REGION_TABLE_1_OFFSET, 1, FILE_LEN).unwrap();
        assert_eq!(t.bat.file_offset, 2 * MIB);
        assert_eq!(t.metadata.length, MIB);
    }

    #[test]
    fn one_field_mutations_give_the_exact_error() {
        // (byte, value, kind, message part)
        let cases: [(usize, u8, ErrorKind, &str); 6] = [
            (0, b'x', ErrorKind::Corrupt, "signature"),
            (9, 0x08, ErrorKind::Corrupt, "EntryCount"),
            (16, 0x99, ErrorKind::Unsupported, "marked required"),
            (16 + 17, 0x01, ErrorKind::Corrupt, "FileOffset"),
            (16 + 22, 0x01, ErrorKind::OutOfBounds, "outside"),
            (16 + 24, 0x01, ErrorKind::Corrupt, "Length"),
        ];
        for (byte, value, kind, text) in cases {
            let mut b = golden();
            b[byte] = value;
            seal(&mut b);
            let e = parse(&b, REGION_TABLE_1_OFFSET, 1, FILE_LEN).unwrap_err();
            assert_eq!(e.kind(), kind, "byte {byte}: {e}");
            assert!(e.to_string().contains(text), "{e}");
        }
        let mut b = golden();
        b[100] = 1;
        let e = parse(&b, REGION_TABLE_1_OFFSET, 1, FILE_LEN).unwrap_err();
        assert!(matches!(e.detail(), Detail::Checksum { .. }), "{e}");
    }

    #[test]
    fn unknown_optional_region_is_skipped_and_missing_bat_is_corrupt() {
        let mut b = golden();
        b[16] = 0x99;
        b[16 + 28] = 0;
        seal(&mut b);
        let e = parse(&b, REGION_TABLE_1_OFFSET, 1, FILE_LEN).unwrap_err();
        assert!(e.to_string().contains("no BAT region"), "{e}");
    }
}
