//! The on-disk structures of an LVM2 physical volume: the label in one of
//! the first four 512-byte sectors, the PV header after it (UUID, data and
//! metadata areas), and each metadata area's header with its circular
//! buffer of text metadata.
//!
//! Label header (32 bytes): `LABELONE`, sector_xl (LE u64), crc_xl (LE
//! u32, over bytes 20..512 of the sector), offset_xl (LE u32, where the PV
//! header starts in the sector), type `LVM2 001`. PV header: pv_uuid (32
//! ASCII characters), device_size_xl (LE u64), then two lists of disk
//! locations (offset, size: LE u64 each) — data areas, then metadata areas
//! — each ended by an all-zero location. Metadata area header (512 bytes):
//! checksum_xl, magic ` LVM2 x[5A%r0N*>`, version, start, size, then raw
//! locations (offset, size, checksum, flags) ended by a zero offset. The
//! text of the current metadata sits at `start + offset`; when it passes
//! the end of the area it continues right after the 512-byte header.

use binrw::BinRead;
use diskimage_formats::bytes::has_at;
use diskimage_formats::layout::{self, Layout};
use diskimage_formats::BlockDevice;

use crate::error::{Detail, Error, Result, Scheme};
use crate::volume::read_bytes;

/// The unit LVM2 label and metadata offsets are counted in, bytes.
pub const LVM_SECTOR: u64 = 512;
/// The label may sit in any of this many first sectors.
const LABEL_SCAN_SECTORS: u64 = 4;
/// The label identifier.
const LABEL_ID: &[u8; 8] = b"LABELONE";
/// The label type of an LVM2 physical volume.
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// The metadata area header's magic.
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// Size of the metadata area header, bytes.
const MDA_HEADER_SIZE: u64 = 512;
/// The seed of LVM2's CRC-32 (the IEEE polynomial, no final inversion).
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// Bit 0 of a raw location's flags: this copy is to be ignored.
const RAW_LOCN_IGNORED: u32 = 1;
/// The largest metadata text read, bytes (real metadata is a few KiB; the
/// default area is 1 MiB).
pub const MAX_METADATA_TEXT: u64 = 4 << 20;
/// Most data or metadata areas read from one PV header.
const MAX_AREAS: usize = 8;
/// Size of the label header, bytes.
const LABEL_HEADER_SIZE: usize = 32;
/// Offset of `crc_xl` in the label header; the CRC covers the sector from `offset_xl` on.
const CRC_XL_AT: usize = 16;
/// Offset of `offset_xl` in the label header.
const OFFSET_XL_AT: usize = 20;
/// Size of the fixed start of the PV header (UUID and device size), bytes.
const PV_HEADER_SIZE: usize = 40;
/// Size of a disk location, bytes.
const DISK_LOCN_SIZE: usize = 16;
/// Size of the fixed start of the metadata area header (up to its first raw location), bytes.
const MDA_HEADER_FIXED_SIZE: usize = 40;
/// Size of a raw location, bytes.
const RAW_LOCN_SIZE: usize = 24;
/// Offset of `size` in the metadata area header.
const MDA_SIZE_AT: u64 = 32;

/// The label header (LVM2 `label_header`), at the start of its sector.
#[derive(BinRead, Debug)]
#[br(little)]
struct LabelHeader {
    /// `LABELONE`, checked on the bytes when the sectors are scanned;
    /// followed by `sector_xl`, the sector the label says it is in.
    #[br(pad_before = 16)]
    crc_xl: u32,
    /// Where the PV header starts in the sector, bytes. Followed by the
    /// label type, `LVM2 001`, checked with the identifier.
    #[br(pad_after = 8)]
    offset_xl: u32,
}

impl Layout for LabelHeader {
    const SIZE: usize = LABEL_HEADER_SIZE;
    const NAME: &'static str = "LVM2 label header";
}

/// The fixed start of the PV header (LVM2 `pv_header`), at `offset_xl`;
/// the lists of disk locations follow.
#[derive(BinRead, Debug)]
#[br(little)]
struct PvHeader {
    /// 32 ASCII letters and digits, without dashes.
    pv_uuid: [u8; 32],
    device_size_xl: u64,
}

impl Layout for PvHeader {
    const SIZE: usize = PV_HEADER_SIZE;
    const NAME: &'static str = "LVM2 PV header";
}

/// A disk location (LVM2 `disk_locn`): an entry of the PV header's area
/// lists, an all-zero one ending each list.
#[derive(BinRead, Debug)]
#[br(little)]
struct DiskLocnXl {
    offset: u64,
    size: u64,
}

impl Layout for DiskLocnXl {
    const SIZE: usize = DISK_LOCN_SIZE;
    const NAME: &'static str = "LVM2 disk location";
}

/// The fixed start of the metadata area header (LVM2 `mda_header`); the
/// raw locations follow.
#[derive(BinRead, Debug)]
#[br(little)]
struct MdaHeader {
    /// Over the rest of the 512-byte header.
    checksum_xl: u32,
    /// [`MDA_MAGIC`]; followed by `version` and `start` (the area's own offset).
    #[br(pad_after = 12)]
    magic: [u8; 16],
    size: u64,
}

impl Layout for MdaHeader {
    const SIZE: usize = MDA_HEADER_FIXED_SIZE;
    const NAME: &'static str = "LVM2 metadata area header";
}

/// A raw location (LVM2 `raw_locn`): where a copy of the metadata text is
/// in the area's circular buffer.
#[derive(BinRead, Debug)]
#[br(little)]
struct RawLocn {
    /// From the start of the area, bytes.
    offset: u64,
    size: u64,
    /// [`lvm_crc`] of the text.
    checksum: u32,
    /// Bit 0: this copy is to be ignored.
    flags: u32,
}

impl Layout for RawLocn {
    const SIZE: usize = RAW_LOCN_SIZE;
    const NAME: &'static str = "LVM2 raw location";
}

/// LVM2's checksum: CRC-32 (IEEE, reflected) seeded with `INITIAL_CRC`
/// and not inverted at the end.
pub fn lvm_crc(data: &[u8]) -> u32 {
    let mut crc = INITIAL_CRC;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    crc
}

/// A disk location of the PV header: `size` bytes from `offset` on the PV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLocn {
    /// Offset in bytes from the start of the PV.
    pub offset: u64,
    /// Size in bytes (0 for a data area: to the end of the device).
    pub size: u64,
}

/// A physical volume's label and header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector (512 bytes) holding the label.
    pub sector: u64,
    /// The PV UUID, 32 characters without dashes.
    pub pv_uuid: String,
    /// The device size the PV recorded, bytes.
    pub device_size: u64,
    /// The data areas.
    pub data_areas: Vec<DiskLocn>,
    /// The metadata areas.
    pub metadata_areas: Vec<DiskLocn>,
}

fn corrupt(detail: Detail, at: u64) -> Error {
    Error::corrupt(Scheme::Lvm2, detail).at(at)
}

/// Looks for a PV label in the first four sectors of `dev`; `Ok(None)` when
/// there is none.
pub fn read_label(dev: &dyn BlockDevice) -> Result<Option<PvLabel>> {
    let len = (LABEL_SCAN_SECTORS * LVM_SECTOR).min(dev.size());
    let head = read_bytes(dev, 0, len as usize, Scheme::Lvm2)?;
    for s in 0..LABEL_SCAN_SECTORS {
        let base = (s * LVM_SECTOR) as usize;
        let Some(sector) = head.get(base..base + LVM_SECTOR as usize) else {
            break;
        };
        if has_at(sector, 0, LABEL_ID) && has_at(sector, 24, LABEL_TYPE) {
            return parse_label(sector, s).map(Some);
        }
    }
    Ok(None)
}

/// Parses the label and PV header in `sector` (sector number `s`).
pub(crate) fn parse_label(sector: &[u8], s: u64) -> Result<PvLabel> {
    let at = s * LVM_SECTOR;
    let label: LabelHeader = layout::read(sector).map_err(|d| corrupt(d, at))?;
    let stored = label.crc_xl;
    let computed = lvm_crc(sector.get(OFFSET_XL_AT..).unwrap_or_default());
    if stored != computed {
        return Err(corrupt(
            Detail::Checksum {
                what: "LVM2 label",
                stored: u64::from(stored),
                computed: u64::from(computed),
            },
            at + CRC_XL_AT as u64,
        ));
    }
    let offset = label.offset_xl as usize;
    if !(LABEL_HEADER_SIZE..=LVM_SECTOR as usize - 48).contains(&offset) {
        return Err(corrupt(
            Detail::BadValue {
                field: "offset_xl",
                value: offset as u64,
                expected: "between 32 and 464".into(),
            },
            at + OFFSET_XL_AT as u64,
        ));
    }
    // 464 = 512 - 48: the PV header's 40 bytes and a first location fit.
    let pv: PvHeader = layout::read_at(sector, offset).map_err(|d| corrupt(d, at))?;
    if !pv.pv_uuid.iter().all(u8::is_ascii_alphanumeric) {
        return Err(corrupt(
            Detail::Invalid("PV UUID is not 32 ASCII letters and digits".into()),
            at + offset as u64,
        ));
    }
    let pv_uuid = String::from_utf8_lossy(&pv.pv_uuid).into_owned();
    let device_size = pv.device_size_xl;
    let mut pos = offset + PV_HEADER_SIZE;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            let Ok(DiskLocnXl {
                offset: o,
                size: sz,
            }) = layout::read_at(sector, pos)
            else {
                return Err(corrupt(
                    Detail::Invalid("PV header area list runs past the label sector".into()),
                    at + pos as u64,
                ));
            };
            pos += DISK_LOCN_SIZE;
            if o == 0 {
                break;
            }
            if list.len() >= MAX_AREAS {
                return Err(Error::limit(
                    Scheme::Lvm2,
                    "PV header areas",
                    list.len() as u64 + 1,
                    MAX_AREAS as u64,
                )
                .at(at + pos as u64));
            }
            list.push(DiskLocn {
                offset: o,
                size: sz,
            });
        }
    }
    let [data_areas, metadata_areas] = lists;
    Ok(PvLabel {
        sector: s,
        pv_uuid,
        device_size,
        data_areas,
        metadata_areas,
    })
}

/// Reads the current metadata text of the metadata area at `mda`; `Ok(None)`
/// when the area holds none (or its copy is marked ignored).
pub fn read_metadata_text(dev: &dyn BlockDevice, mda: DiskLocn) -> Result<Option<String>> {
    let at = mda.offset;
    if mda.size <= MDA_HEADER_SIZE || at.checked_add(mda.size).is_none_or(|e| e > dev.size()) {
        return Err(corrupt(
            Detail::OutOfRange {
                what: "PV (metadata area)",
                offset: at,
                len: mda.size,
                size: dev.size(),
            },
            at,
        ));
    }
    let h = read_bytes(dev, at, MDA_HEADER_SIZE as usize, Scheme::Lvm2)?;
    let mda: MdaHeader = layout::read(&h).map_err(|d| corrupt(d, at))?;
    let stored = mda.checksum_xl;
    let computed = lvm_crc(h.get(4..).unwrap_or_default());
    if stored != computed {
        return Err(corrupt(
            Detail::Checksum {
                what: "LVM2 metadata area header",
                stored: u64::from(stored),
                computed: u64::from(computed),
            },
            at,
        ));
    }
    if mda.magic != *MDA_MAGIC {
        return Err(corrupt(
            Detail::BadSignature {
                what: "LVM2 metadata area magic",
                expected: String::from_utf8_lossy(MDA_MAGIC).into_owned(),
                found: diskimage_formats::error::hex_preview(&mda.magic),
            },
            at + 4,
        ));
    }
    let area_size = mda.size;
    if area_size != mda.size {
        return Err(corrupt(
            Detail::BadValue {
                field: "mda_header size",
                value: area_size,
                expected: format!("{} (the PV header's metadata area size)", mda.size),
            },
            at + MDA_SIZE_AT,
        ));
    }
    // The first raw location is the committed metadata.
    let r = MDA_HEADER_FIXED_SIZE;
    let RawLocn {
        offset,
        size,
        checksum,
        flags,
    } = layout::read_at(&h, r).map_err(|d| corrupt(d, at + r as u64))?;
    if offset == 0 || size == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if size > MAX_METADATA_TEXT {
        return Err(
            Error::limit(Scheme::Lvm2, "metadata text bytes", size, MAX_METADATA_TEXT)
                .at(at + r as u64 + 8),
        );
    }
    let ring = area_size - MDA_HEADER_SIZE;
    if offset < MDA_HEADER_SIZE || offset >= area_size || size > ring {
        return Err(corrupt(
            Detail::BadValue {
                field: "raw_locn offset",
                value: offset,
                expected: format!(
                    "a text of at most {ring} bytes starting between 512 and {area_size}"
                ),
            },
            at + r as u64,
        ));
    }
    let first = size.min(area_size - offset);
    let mut text = read_bytes(dev, at + offset, first as usize, Scheme::Lvm2)?;
    if first < size {
        let rest = read_bytes(
            dev,
            at + MDA_HEADER_SIZE,
            (size - first) as usize,
            Scheme::Lvm2,
        )?;
        text.extend_from_slice(&rest);
    }
    let computed = lvm_crc(&text);
    if computed != checksum {
        return Err(corrupt(
            Detail::Checksum {
                what: "LVM2 metadata text",
                stored: u64::from(checksum),
                computed: u64::from(computed),
            },
            at + offset,
        ));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::{BlockDevice, ErrorKind};

    fn golden_sector() -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(LABEL_ID);
        s[8..16].copy_from_slice(&1u64.to_le_bytes());
        s[20..24].copy_from_slice(&32u32.to_le_bytes());
        s[24..32].copy_from_slice(LABEL_TYPE);
        s[32..64].copy_from_slice(b"abcdefABCDEF0123456789abcdefABCD");
        s[64..72].copy_from_slice(&(64u64 << 20).to_le_bytes());
        s[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes()); // data area
                                                                // zero terminator at 88..104, then one metadata area
        s[104..112].copy_from_slice(&4096u64.to_le_bytes());
        s[112..120].copy_from_slice(&(1_044_480u64).to_le_bytes());
        let crc = lvm_crc(&s[20..]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    }

    #[test]
    fn declarations_read_their_lengths() {
        assert_eq!(
            layout::declared_len::<LabelHeader>(),
            Some(LABEL_HEADER_SIZE as u64)
        );
        assert_eq!(
            layout::declared_len::<PvHeader>(),
            Some(PV_HEADER_SIZE as u64)
        );
        assert_eq!(
            layout::declared_len::<DiskLocnXl>(),
            Some(DISK_LOCN_SIZE as u64)
        );
        assert_eq!(
            layout::declared_len::<MdaHeader>(),
            Some(MDA_HEADER_FIXED_SIZE as u64)
        );
        assert_eq!(
            layout::declared_len::<RawLocn>(),
            Some(RAW_LOCN_SIZE as u64)
        );
    }

    #[test]
    fn golden_label() {
        let l = parse_label(&golden_sector(), 1).unwrap();
        assert_eq!(l.pv_uuid, "abcdefABCDEF0123456789abcdefABCD");
        assert_eq!(
            l.data_areas,
            vec![DiskLocn {
                offset: 1 << 20,
                size: 0
            }]
        );
        assert_eq!(
            l.metadata_areas,
            vec![DiskLocn {
                offset: 4096,
                size: 1_044_480
            }]
        );
    }

    #[test]
    fn mutated_label_fails_with_the_exact_kind() {
        let mut s = golden_sector();
        s[40] ^= 1;
        assert_eq!(parse_label(&s, 1).unwrap_err().kind(), ErrorKind::Corrupt);
        let mut s = golden_sector();
        s[20..24].copy_from_slice(&500u32.to_le_bytes());
        let crc = lvm_crc(&s[20..]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        let e = parse_label(&s, 1).unwrap_err();
        assert!(e.to_string().contains("offset_xl"), "{e}");
    }

    /// A 64 KiB device with a metadata area at 4 KiB of 8 KiB whose text
    /// starts `offset` bytes into the area (wrapping past its end).
    fn mda_device(text: &[u8], offset: u64) -> (diskimage_formats::MemoryDevice, DiskLocn) {
        let area = DiskLocn {
            offset: 4096,
            size: 8192,
        };
        let mut d = vec![0u8; 65536];
        let base = area.offset as usize;
        let h = &mut d[base..base + 512];
        h[4..20].copy_from_slice(MDA_MAGIC);
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&area.offset.to_le_bytes());
        h[32..40].copy_from_slice(&area.size.to_le_bytes());
        h[40..48].copy_from_slice(&offset.to_le_bytes());
        h[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        h[56..60].copy_from_slice(&lvm_crc(text).to_le_bytes());
        let crc = lvm_crc(&h[4..]);
        h[0..4].copy_from_slice(&crc.to_le_bytes());
        for (i, b) in text.iter().enumerate() {
            let mut pos = offset + i as u64;
            if pos >= area.size {
                pos = pos - area.size + MDA_HEADER_SIZE;
            }
            d[base + pos as usize] = *b;
        }
        (diskimage_formats::MemoryDevice::new(d), area)
    }

    #[test]
    fn metadata_text_is_read_and_wraps_around_the_circular_buffer() {
        let text = b"vg { seqno = 1 }\n".repeat(20);
        for offset in [512, 8192 - 100] {
            let (d, area) = mda_device(&text, offset);
            let got = read_metadata_text(&d, area).unwrap().unwrap();
            assert_eq!(got.as_bytes(), &text[..], "offset {offset}");
        }
    }

    #[test]
    fn mutated_metadata_area_fails_with_the_exact_kind() {
        let text = b"vg { seqno = 1 }".to_vec();
        let (d, area) = mda_device(&text, 512);
        let mut bytes = vec![0u8; 65536];
        d.read_at(&mut bytes, 0).unwrap();
        // Header checksum.
        let mut b = bytes.clone();
        b[4096 + 100] ^= 1;
        let e = read_metadata_text(&diskimage_formats::MemoryDevice::new(b), area).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        // Text checksum.
        let mut b = bytes.clone();
        b[4096 + 512] ^= 1;
        let e = read_metadata_text(&diskimage_formats::MemoryDevice::new(b), area).unwrap_err();
        assert!(e.to_string().contains("metadata text checksum"), "{e}");
        // A text larger than the limit (header checksum fixed up).
        let mut b = bytes.clone();
        b[4096 + 48..4096 + 56].copy_from_slice(&(MAX_METADATA_TEXT + 1).to_le_bytes());
        let crc = lvm_crc(&b[4096 + 4..4096 + 512]);
        b[4096..4096 + 4].copy_from_slice(&crc.to_le_bytes());
        let e = read_metadata_text(&diskimage_formats::MemoryDevice::new(b), area).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        // An area past the end of the device.
        let far = DiskLocn {
            offset: 65536 - 1024,
            size: 8192,
        };
        let e = read_metadata_text(&d, far).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn crc_matches_a_known_value() {
        // lvm_crc of no bytes is the seed.
        assert_eq!(lvm_crc(&[]), INITIAL_CRC);
    }
}
