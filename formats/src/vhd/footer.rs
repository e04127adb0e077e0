//! The VHD hard disk footer: 512 big-endian bytes at the end of every VHD
//! ("Virtual Hard Disk Image Format Specification", "Hard Disk Footer
//! Format"), mirrored at offset 0 of dynamic and differencing disks.
//!
//! Virtual PC versions before 2004 wrote a 511-byte footer (the last
//! reserved byte missing); `VhdFooter::parse` accepts 511 bytes.

use binrw::BinRead;

use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::layout::{self, Bytes, Layout};

/// Bytes in a footer as the specification lays it out.
pub const FOOTER_LEN: usize = 512;
/// Bytes in the short footer some old Virtual PC versions wrote.
pub const OLD_FOOTER_LEN: usize = 511;
/// The footer's cookie.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// `data_offset` of a fixed disk: no dynamic header.
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
pub const VHD_EPOCH_UNIX_SECONDS: i64 = 946_684_800;
/// Bytes in one VHD sector.
pub const SECTOR: u64 = 512;

/// Byte offset of the checksum field in the footer.
const CHECKSUM_OFFSET: usize = 64;

/// The kind of disk a footer describes ("Disk Type").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Type 2: the data precedes the footer, byte for byte.
    Fixed,
    /// Type 3: blocks allocated on demand through a BAT.
    Dynamic,
    /// Type 4: a dynamic disk whose absent sectors come from a parent.
    Differencing,
}

impl DiskType {
    /// The lower-case name `info` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// The cylinder/head/sector geometry of the footer ("Disk Geometry").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads per cylinder.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The size the geometry describes, in bytes (what qemu uses for
    /// images written by Virtual PC).
    pub fn size(self) -> u64 {
        u64::from(self.cylinders)
            * u64::from(self.heads)
            * u64::from(self.sectors_per_track)
            * SECTOR
    }
}

/// A parsed footer, fields named as the specification spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VhdFooter {
    pub features: u32,
    pub file_format_version: u32,
    pub data_offset: u64,
    pub time_stamp: u32,
    pub creator_application: [u8; 4],
    pub creator_version: u32,
    pub creator_host_os: [u8; 4],
    pub original_size: u64,
    pub current_size: u64,
    pub disk_geometry: Geometry,
    pub disk_type: DiskType,
    pub checksum: u32,
    pub unique_id: [u8; 16],
    pub saved_state: u8,
    /// The checksum computed over the footer's bytes.
    pub computed_checksum: u32,
}

/// The footer as stored, field by field ("Hard Disk Footer Format").
#[derive(BinRead)]
#[br(big)]
struct RawFooter {
    #[br(map = |b: Bytes<8>| b.0)]
    _cookie: [u8; 8],
    features: u32,
    file_format_version: u32,
    data_offset: u64,
    time_stamp: u32,
    #[br(map = |b: Bytes<4>| b.0)]
    creator_application: [u8; 4],
    creator_version: u32,
    #[br(map = |b: Bytes<4>| b.0)]
    creator_host_os: [u8; 4],
    original_size: u64,
    current_size: u64,
    cylinders: u16,
    heads: u8,
    sectors_per_track: u8,
    disk_type: u32,
    checksum: u32,
    #[br(map = |b: Bytes<16>| b.0)]
    unique_id: [u8; 16],
    /// Then 427 reserved bytes.
    #[br(pad_after = 427)]
    saved_state: u8,
}

impl Layout for RawFooter {
    const SIZE: usize = FOOTER_LEN;
    const NAME: &'static str = "footer";
}

/// The one's complement of the byte sum of `bytes`, the checksum field
/// (4 bytes at `checksum_at`) counted as zero — the footer and dynamic
/// header checksum of the specification.
pub(crate) fn ones_complement_checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_at..checksum_at + 4).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

impl VhdFooter {
    /// Whether `bytes` start with the footer cookie.
    pub fn has_cookie(bytes: &[u8]) -> bool {
        bytes.get(..8) == Some(FOOTER_COOKIE.as_slice())
    }

    /// Parses a 512-byte (or old 511-byte) footer. The checksum is not
    /// judged here: compare `checksum` with `computed_checksum`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < OLD_FOOTER_LEN {
            return Err(Error::corrupt(
                Format::Vhd,
                Detail::Truncated {
                    what: "footer".into(),
                    needed: FOOTER_LEN as u64,
                    available: bytes.len() as u64,
                },
            ));
        }
        if !Self::has_cookie(bytes) {
            return Err(Error::not_this_format(
                Format::Vhd,
                Detail::BadSignature {
                    what: "footer cookie",
                    expected: "conectix".into(),
                    found: hex_preview(bytes.get(..8).unwrap_or_default()),
                },
            ));
        }
        let mut full = [0u8; FOOTER_LEN];
        let n = bytes.len().min(FOOTER_LEN);
        if let (Some(dst), Some(src)) = (full.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        let raw: RawFooter = layout::read(&full).map_err(|d| Error::corrupt(Format::Vhd, d))?;
        let file_format_version = raw.file_format_version;
        if file_format_version >> 16 != 1 {
            return Err(Error::unsupported(
                Format::Vhd,
                format!("footer file format version {file_format_version:#010x} (only major version 1 is read)"),
            )
            .at(12));
        }
        let disk_type = match raw.disk_type {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            other => {
                return Err(Error::bad_value(
                    Format::Vhd,
                    "disk type",
                    u64::from(other),
                    "2 (fixed), 3 (dynamic) or 4 (differencing)",
                )
                .at(60))
            }
        };
        if disk_type != DiskType::Fixed && raw.data_offset == NO_DATA_OFFSET {
            return Err(Error::bad_value(
                Format::Vhd,
                "data offset",
                raw.data_offset,
                "the dynamic header's offset in a dynamic or differencing disk",
            )
            .at(16));
        }
        Ok(VhdFooter {
            features: raw.features,
            file_format_version,
            data_offset: raw.data_offset,
            time_stamp: raw.time_stamp,
            creator_application: raw.creator_application,
            creator_version: raw.creator_version,
            creator_host_os: raw.creator_host_os,
            original_size: raw.original_size,
            current_size: raw.current_size,
            disk_geometry: Geometry {
                cylinders: raw.cylinders,
                heads: raw.heads,
                sectors_per_track: raw.sectors_per_track,
            },
            disk_type,
            checksum: raw.checksum,
            unique_id: raw.unique_id,
            saved_state: raw.saved_state,
            computed_checksum: ones_complement_checksum(&full, CHECKSUM_OFFSET),
        })
    }

    /// Whether the stored checksum matches the footer's bytes.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.computed_checksum
    }

    /// The checksum mismatch as an error (to tolerate or refuse).
    pub fn checksum_error(&self) -> Error {
        Error::corrupt(
            Format::Vhd,
            Detail::Checksum {
                what: "footer",
                stored: u64::from(self.checksum),
                computed: u64::from(self.computed_checksum),
            },
        )
    }
}

/// The four-character code as text, trailing spaces and NULs dropped.
pub(crate) fn four_cc(code: [u8; 4]) -> String {
    code.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else if b == 0 {
                ' '
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// Who wrote the image, from the creator application code.
pub(crate) fn creator_name(code: [u8; 4]) -> Option<&'static str> {
    Some(match &code {
        b"vpc " => "Microsoft Virtual PC",
        b"vs  " => "Microsoft Virtual Server",
        b"win " => "Microsoft Windows",
        b"d2v " | b"d2v\0" => "Sysinternals Disk2vhd",
        b"qemu" | b"qem2" => "QEMU",
        b"tap\0" => "Xen blktap",
        b"CTXS" => "Citrix XenServer",
        b"vbox" => "Oracle VirtualBox",
        _ => return None,
    })
}

/// The host operating system, from the creator host OS code.
pub(crate) fn host_name(code: [u8; 4]) -> Option<&'static str> {
    Some(match &code {
        b"Wi2k" => "Windows",
        b"Mac " => "Macintosh",
        _ => return None,
    })
}

/// A VHD time stamp (seconds since 2000-01-01 UTC) as ISO 8601 UTC.
pub(crate) fn format_time_stamp(seconds: u32) -> String {
    crate::time::format_unix_utc(VHD_EPOCH_UNIX_SECONDS + i64::from(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_declaration_is_512_bytes() {
        assert_eq!(layout::declared_len::<RawFooter>(), Some(FOOTER_LEN as u64));
    }
    use crate::ErrorKind;

    /// A footer as Windows 10 writes it for a 10 MiB dynamic disk.
    pub(crate) fn golden() -> Vec<u8> {
        let mut f = vec![0u8; FOOTER_LEN];
        f[..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&512u64.to_be_bytes());
        f[24..28].copy_from_slice(&0x260c_f38fu32.to_be_bytes());
        f[28..32].copy_from_slice(b"win ");
        f[32..36].copy_from_slice(&0x000a_0000u32.to_be_bytes());
        f[36..40].copy_from_slice(b"Wi2k");
        f[40..48].copy_from_slice(&(10u64 << 20).to_be_bytes());
        f[48..56].copy_from_slice(&(10u64 << 20).to_be_bytes());
        f[56..60].copy_from_slice(&[0x01, 0x2d, 0x04, 0x11]);
        f[60..64].copy_from_slice(&3u32.to_be_bytes());
        f[68..84].copy_from_slice(&[7; 16]);
        let c = ones_complement_checksum(&f, CHECKSUM_OFFSET);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn golden_footer_parses() {
        let f = VhdFooter::parse(&golden()).unwrap();
        assert!(f.checksum_ok());
        assert_eq!(f.disk_type, DiskType::Dynamic);
        assert_eq!(f.current_size, 10 << 20);
        assert_eq!(f.disk_geometry.size(), 301 * 4 * 17 * 512);
        assert_eq!(four_cc(f.creator_application), "win");
        assert_eq!(f.data_offset, 512);
    }

    #[test]
    fn old_511_byte_footer_parses() {
        let g = golden();
        let f = VhdFooter::parse(&g[..511]).unwrap();
        assert!(f.checksum_ok());
    }

    #[test]
    fn one_field_mutations() {
        let mut g = golden();
        g[0] = b'C';
        assert_eq!(
            VhdFooter::parse(&g).unwrap_err().kind(),
            ErrorKind::NotThisFormat
        );
        let mut g = golden();
        g[63] = 7;
        assert_eq!(VhdFooter::parse(&g).unwrap_err().kind(), ErrorKind::Corrupt);
        let mut g = golden();
        g[12] = 2;
        assert_eq!(
            VhdFooter::parse(&g).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        let mut g = golden();
        g[16..24].copy_from_slice(&[0xff; 8]);
        assert_eq!(VhdFooter::parse(&g).unwrap_err().kind(), ErrorKind::Corrupt);
        let mut g = golden();
        g[100] = 1;
        assert!(!VhdFooter::parse(&g).unwrap().checksum_ok());
        assert_eq!(
            VhdFooter::parse(&g[..100]).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn time_stamps_and_ids_format() {
        assert_eq!(format_time_stamp(0), "2000-01-01T00:00:00Z");
        assert_eq!(format_time_stamp(0x260c_f38f), "2020-03-24T16:36:31Z");
        assert_eq!(
            crate::Guid::from_be_bytes([0x4b; 16]).to_string(),
            "4b4b4b4b-4b4b-4b4b-4b4b-4b4b4b4b4b4b"
        );
    }
}
