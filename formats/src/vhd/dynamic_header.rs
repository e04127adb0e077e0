//! The VHD dynamic disk header: 1,024 big-endian bytes at the footer's
//! `data_offset` in dynamic and differencing disks ("Dynamic Disk Header
//! Format"): where the BAT is, how many entries it has, the block size, and
//! for a differencing disk the parent's identity and locator entries.

use crate::error::{hex_preview, Detail, Error, Format, Result};

use binrw::BinRead;

use super::footer::{ones_complement_checksum, SECTOR};
use crate::layout::{self, Bytes, Layout};

/// Bytes in the dynamic header.
pub const HEADER_LEN: usize = 1024;
/// The dynamic header's cookie.
pub const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// The largest block size accepted: 256 MiB (Windows and Virtual PC write
/// 2 MiB, some tools 512 KiB).
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Parent locator entries in the header.
pub const PARENT_LOCATOR_ENTRIES: usize = 8;
/// Bytes of the parent's Unicode (UTF-16 big-endian) name field.
pub const PARENT_NAME_LEN: usize = 512;

const CHECKSUM_OFFSET: usize = 36;

/// One parent locator entry as stored ("Parent Locator Entry").
#[derive(BinRead, Debug, Clone, Copy, PartialEq, Eq)]
#[br(big)]
pub(crate) struct ParentLocatorEntry {
    #[br(map = |b: Bytes<4>| b.0)]
    pub platform_code: [u8; 4],
    pub platform_data_space: u32,
    /// Then 4 reserved bytes.
    #[br(pad_after = 4)]
    pub platform_data_length: u32,
    pub platform_data_offset: u64,
}

/// The header as stored, field by field ("Dynamic Disk Header Format").
#[derive(BinRead)]
#[br(big)]
struct RawHeader {
    #[br(map = |b: Bytes<8>| b.0)]
    _cookie: [u8; 8],
    _data_offset: u64,
    table_offset: u64,
    header_version: u32,
    max_table_entries: u32,
    block_size: u32,
    checksum: u32,
    #[br(map = |b: Bytes<16>| b.0)]
    parent_unique_id: [u8; 16],
    /// Then 4 reserved bytes.
    #[br(pad_after = 4)]
    parent_time_stamp: u32,
    /// Read as one piece (binrw reads a byte array a byte at a time).
    #[br(count = PARENT_NAME_LEN)]
    parent_unicode_name: Vec<u8>,
    /// Then 256 reserved bytes.
    #[br(pad_after = 256)]
    parent_locators: [ParentLocatorEntry; PARENT_LOCATOR_ENTRIES],
}

impl Layout for RawHeader {
    const SIZE: usize = HEADER_LEN;
    const NAME: &'static str = "dynamic disk header";
}

/// A parsed dynamic header, fields named as the specification spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DynamicHeader {
    pub table_offset: u64,
    pub header_version: u32,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub checksum: u32,
    pub parent_unique_id: [u8; 16],
    pub parent_time_stamp: u32,
    /// The parent's name, decoded from UTF-16 big-endian up to the first NUL.
    pub parent_unicode_name: String,
    /// The entries whose platform code is not zero.
    pub parent_locators: Vec<ParentLocatorEntry>,
    pub computed_checksum: u32,
}

impl DynamicHeader {
    /// Parses the 1,024 header bytes. The checksum is not judged here.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::corrupt(
                Format::Vhd,
                Detail::Truncated {
                    what: "dynamic disk header".into(),
                    needed: HEADER_LEN as u64,
                    available: bytes.len() as u64,
                },
            ));
        }
        if bytes.get(..8) != Some(HEADER_COOKIE.as_slice()) {
            return Err(Error::corrupt(
                Format::Vhd,
                Detail::BadSignature {
                    what: "dynamic header cookie",
                    expected: "cxsparse".into(),
                    found: hex_preview(bytes.get(..8).unwrap_or_default()),
                },
            ));
        }
        let raw: RawHeader = layout::read(bytes).map_err(|d| Error::corrupt(Format::Vhd, d))?;
        let header_version = raw.header_version;
        if header_version >> 16 != 1 {
            return Err(Error::unsupported(
                Format::Vhd,
                format!(
                    "dynamic header version {header_version:#010x} (only major version 1 is read)"
                ),
            )
            .at(24));
        }
        let block_size = raw.block_size;
        if block_size == 0 || u64::from(block_size) % SECTOR != 0 || block_size > MAX_BLOCK_SIZE {
            return Err(Error::bad_value(
                Format::Vhd,
                "block size",
                u64::from(block_size),
                format!("a non-zero multiple of 512 up to {MAX_BLOCK_SIZE}"),
            )
            .at(32));
        }
        let head = bytes.get(..HEADER_LEN).unwrap_or_default();
        Ok(DynamicHeader {
            table_offset: raw.table_offset,
            header_version,
            max_table_entries: raw.max_table_entries,
            block_size,
            checksum: raw.checksum,
            parent_unique_id: raw.parent_unique_id,
            parent_time_stamp: raw.parent_time_stamp,
            parent_unicode_name: crate::bytes::utf16be_to_nul(&raw.parent_unicode_name),
            parent_locators: raw
                .parent_locators
                .into_iter()
                .filter(|e| e.platform_code != [0; 4])
                .collect(),
            computed_checksum: ones_complement_checksum(head, CHECKSUM_OFFSET),
        })
    }

    /// Whether the stored checksum matches the header's bytes.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.computed_checksum
    }

    /// The checksum mismatch as an error (to tolerate or refuse).
    pub fn checksum_error(&self) -> Error {
        Error::corrupt(
            Format::Vhd,
            Detail::Checksum {
                what: "dynamic header",
                stored: u64::from(self.checksum),
                computed: u64::from(self.computed_checksum),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_declaration_is_1024_bytes() {
        assert_eq!(layout::declared_len::<RawHeader>(), Some(HEADER_LEN as u64));
    }
    use crate::ErrorKind;

    /// A differencing disk's header: 5 entries of 2 MiB, parent `p.vhd`, one W2ru locator.
    fn golden() -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..8].copy_from_slice(b"cxsparse");
        h[8..16].copy_from_slice(&[0xff; 8]);
        h[16..24].copy_from_slice(&1536u64.to_be_bytes());
        h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        h[28..32].copy_from_slice(&5u32.to_be_bytes());
        h[32..36].copy_from_slice(&(2u32 << 20).to_be_bytes());
        h[40..56].copy_from_slice(&[9; 16]);
        for (i, c) in "p.vhd".encode_utf16().enumerate() {
            h[64 + 2 * i..66 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        h[576..580].copy_from_slice(b"W2ru");
        h[580..584].copy_from_slice(&512u32.to_be_bytes());
        h[584..588].copy_from_slice(&10u32.to_be_bytes());
        h[592..600].copy_from_slice(&2048u64.to_be_bytes());
        let c = ones_complement_checksum(&h, CHECKSUM_OFFSET);
        h[36..40].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn golden_header_parses() {
        let h = DynamicHeader::parse(&golden()).unwrap();
        assert!(h.checksum_ok());
        assert_eq!(h.table_offset, 1536);
        assert_eq!(h.max_table_entries, 5);
        assert_eq!(h.block_size, 2 << 20);
        assert_eq!(h.parent_unicode_name, "p.vhd");
        assert_eq!(h.parent_locators.len(), 1);
        assert_eq!(h.parent_locators[0].platform_code, *b"W2ru");
        assert_eq!(h.parent_locators[0].platform_data_offset, 2048);
    }

    #[test]
    fn one_field_mutations() {
        let mut g = golden();
        g[2] = b'X';
        assert_eq!(
            DynamicHeader::parse(&g).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let mut g = golden();
        g[27] = 2;
        assert_eq!(
            DynamicHeader::parse(&g).unwrap().header_version,
            0x0001_0002
        );
        g[25] = 2;
        assert_eq!(
            DynamicHeader::parse(&g).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        for bad in [0u32, 3 << 19 | 1, 512 << 20] {
            let mut g = golden();
            g[32..36].copy_from_slice(&bad.to_be_bytes());
            let e = DynamicHeader::parse(&g).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{bad}");
            assert!(e.to_string().contains("block size"), "{e}");
        }
        let mut g = golden();
        g[30] = 1;
        assert!(!DynamicHeader::parse(&g).unwrap().checksum_ok());
        assert_eq!(
            DynamicHeader::parse(&g[..1000]).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
