//! The hosted sparse extent header (`KDMV`, "Virtual Disk Format 5.0",
//! section "Hosted Sparse Extent Header"), versions 1 to 3, little-endian,
//! 512 bytes at sector 0 — and, for a streamOptimized extent written with
//! `gdOffset = GD_AT_END`, again in the footer near the end of the file.

use binrw::BinRead;

use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::layout::{self, Layout};

/// `KDMV` read as a little-endian u32.
pub const SPARSE_MAGIC: u32 = 0x564d_444b;
/// Bytes in a sector.
pub const SECTOR: u64 = 512;
/// Size of the header on disk.
pub const HEADER_LEN: usize = 512;
/// `gdOffset` meaning "the grain directory is given by the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// Flag: the newline-detection bytes are valid.
pub const FLAG_NEWLINE_TEST: u32 = 1 << 0;
/// Flag: grain table entry 1 means "zeroed grain".
pub const FLAG_ZEROED_GRAIN_GTE: u32 = 1 << 2;
/// Flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag: metadata is preceded by markers (streamOptimized).
pub const FLAG_MARKERS: u32 = 1 << 17;
/// `compressAlgorithm` for deflate (RFC 1951 in an RFC 1950 zlib stream).
pub const COMPRESSION_DEFLATE: u16 = 1;
/// Largest accepted virtual size: 128 TiB in sectors (VMware's limit is 62 TiB).
pub const MAX_CAPACITY_SECTORS: u64 = (128u64 << 40) / SECTOR;
/// Largest accepted grain: 1 MiB in sectors (VMware writes 64 KiB).
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// Largest accepted `numGTEsPerGT` (VMware always writes 512).
pub const MAX_GTES_PER_GT: u32 = 65536;

/// The header as it lies on disk ("Virtual Disk Format 5.0", section
/// "Hosted Sparse Extent Header", `SparseExtentHeader`): offsets and sizes
/// in sectors.
#[derive(BinRead, Debug)]
#[br(little)]
struct SparseExtentHeader {
    magic_number: u32,
    version: u32,
    flags: u32,
    capacity: u64,
    grain_size: u64,
    descriptor_offset: u64,
    descriptor_size: u64,
    num_gtes_per_gt: u32,
    rgd_offset: u64,
    gd_offset: u64,
    over_head: u64,
    unclean_shutdown: u8,
    /// `singleEndLineChar`, `nonEndLineChar`, `doubleEndLineChar1`, `doubleEndLineChar2`.
    newline_chars: [u8; 4],
    /// Followed by 433 bytes of padding.
    #[br(pad_after = 433)]
    compress_algorithm: u16,
}

impl Layout for SparseExtentHeader {
    const SIZE: usize = HEADER_LEN;
    const NAME: &'static str = "sparse extent header";
}

/// A parsed and checked hosted sparse extent header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    /// Virtual size of the extent, in sectors.
    pub capacity: u64,
    /// Grain size, in sectors (a power of two).
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub num_gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub over_head: u64,
    pub unclean_shutdown: bool,
    /// `singleEndLineChar`, `nonEndLineChar`, `doubleEndLineChar1`, `doubleEndLineChar2`.
    pub newline_chars: [u8; 4],
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parses and checks the 512 header bytes (`bytes` may be longer).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: SparseExtentHeader =
            layout::read(bytes).map_err(|d| Error::corrupt(Format::Vmdk, d))?;
        if raw.magic_number != SPARSE_MAGIC {
            return Err(Error::corrupt(
                Format::Vmdk,
                Detail::BadSignature {
                    what: "sparse extent header magic",
                    expected: "KDMV".into(),
                    found: hex_preview(bytes.get(..4).unwrap_or_default()),
                },
            ));
        }
        let h = SparseHeader {
            version: raw.version,
            flags: raw.flags,
            capacity: raw.capacity,
            grain_size: raw.grain_size,
            descriptor_offset: raw.descriptor_offset,
            descriptor_size: raw.descriptor_size,
            num_gtes_per_gt: raw.num_gtes_per_gt,
            rgd_offset: raw.rgd_offset,
            gd_offset: raw.gd_offset,
            over_head: raw.over_head,
            unclean_shutdown: raw.unclean_shutdown != 0,
            newline_chars: raw.newline_chars,
            compress_algorithm: raw.compress_algorithm,
        };
        h.check()?;
        Ok(h)
    }

    fn check(&self) -> Result<()> {
        if !(1..=3).contains(&self.version) {
            return Err(Error::unsupported(
                Format::Vmdk,
                format!(
                    "sparse extent header version {} (versions 1 to 3 are read)",
                    self.version
                ),
            ));
        }
        Error::ensure_at_most(
            Format::Vmdk,
            "sparse extent capacity in sectors",
            self.capacity,
            MAX_CAPACITY_SECTORS,
        )?;
        if !self.grain_size.is_power_of_two() || self.grain_size > MAX_GRAIN_SECTORS {
            return Err(Error::bad_value(
                Format::Vmdk,
                "grainSize",
                self.grain_size,
                "a power of two of at most 2048 sectors",
            ));
        }
        if !self.num_gtes_per_gt.is_power_of_two() || self.num_gtes_per_gt > MAX_GTES_PER_GT {
            return Err(Error::bad_value(
                Format::Vmdk,
                "numGTEsPerGT",
                u64::from(self.num_gtes_per_gt),
                "a power of two of at most 65536",
            ));
        }
        if self.compressed() && self.compress_algorithm != COMPRESSION_DEFLATE {
            return Err(Error::unsupported(
                Format::Vmdk,
                format!(
                    "compressAlgorithm {} (only 1, deflate, is defined)",
                    self.compress_algorithm
                ),
            ));
        }
        Ok(())
    }

    /// Whether grains are deflate-compressed.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Whether grains and tables are preceded by markers.
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Whether a grain table entry of 1 means a zeroed grain.
    pub fn zeroed_grain_gte(&self) -> bool {
        self.flags & FLAG_ZEROED_GRAIN_GTE != 0
    }

    /// Whether the newline-detection bytes were mangled (the file went
    /// through a text-mode transfer): only meaningful with `FLAG_NEWLINE_TEST`.
    pub fn newline_bytes_mangled(&self) -> bool {
        self.flags & FLAG_NEWLINE_TEST != 0 && self.newline_chars != *b"\n \r\n"
    }

    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// Number of grains covering the capacity (the last may be partial).
    pub fn grain_count(&self) -> u64 {
        self.capacity.div_ceil(self.grain_size)
    }

    /// Number of grain directory entries (grain tables) the capacity needs.
    pub fn gd_entries(&self) -> u64 {
        self.grain_count().div_ceil(u64::from(self.num_gtes_per_gt))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ErrorKind;

    /// A monolithicSparse header as qemu-img writes it: 100 MiB, 64 KiB grains.
    pub(crate) fn golden() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        b[12..20].copy_from_slice(&204_800u64.to_le_bytes());
        b[20..28].copy_from_slice(&128u64.to_le_bytes());
        b[28..36].copy_from_slice(&1u64.to_le_bytes());
        b[36..44].copy_from_slice(&20u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b[48..56].copy_from_slice(&21u64.to_le_bytes());
        b[56..64].copy_from_slice(&30u64.to_le_bytes());
        b[64..72].copy_from_slice(&128u64.to_le_bytes());
        b[73..77].copy_from_slice(b"\n \r\n");
        b
    }

    #[test]
    fn declaration_reads_the_header_length() {
        assert_eq!(
            layout::declared_len::<SparseExtentHeader>(),
            Some(HEADER_LEN as u64)
        );
    }

    #[test]
    fn golden_header() {
        let h = SparseHeader::parse(&golden()).unwrap();
        assert_eq!(h.capacity, 204_800);
        assert_eq!(h.grain_bytes(), 65536);
        assert_eq!(h.grain_count(), 1600);
        assert_eq!(h.gd_entries(), 4);
        assert!(!h.compressed() && !h.newline_bytes_mangled());
    }

    fn mutate(at: usize, bytes: &[u8]) -> ErrorKind {
        let mut b = golden();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        SparseHeader::parse(&b).unwrap_err().kind()
    }

    #[test]
    fn one_field_mutations() {
        assert_eq!(mutate(0, b"KDMW"), ErrorKind::Corrupt);
        assert_eq!(mutate(4, &4u32.to_le_bytes()), ErrorKind::Unsupported);
        assert_eq!(
            mutate(12, &(1u64 << 60).to_le_bytes()),
            ErrorKind::LimitExceeded
        );
        assert_eq!(mutate(20, &3u64.to_le_bytes()), ErrorKind::Corrupt);
        assert_eq!(mutate(20, &4096u64.to_le_bytes()), ErrorKind::Corrupt);
        assert_eq!(mutate(44, &0u32.to_le_bytes()), ErrorKind::Corrupt);
        assert_eq!(
            mutate(8, &(FLAG_COMPRESSED | 1).to_le_bytes()),
            ErrorKind::Unsupported
        );
        let e = SparseHeader::parse(&golden()[..100]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(
            e.to_string(),
            "VMDK: corrupt: sparse extent header needs 512 bytes, only 100 are there"
        );
        let mut b = golden();
        b[75] = b'\n';
        assert!(SparseHeader::parse(&b).unwrap().newline_bytes_mangled());
    }
}
